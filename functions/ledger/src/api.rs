//! HTTP handlers of the log: append, read, checkpoint, proofs and keys.
//!
//! Appending needs a service token of the function that owns the entry type
//! (auth: role changes; mesh: node approvals and task completions), or the
//! access token of a user who holds `system_admin` now (asked of the identity
//! function, never read from the token's claims), who may append anything
//! outside the functions' `edgecoder.dev` namespace. Reading is public, as a
//! transparency log's must be.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::http::{json_response, ok_json};
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, ok, response_doc};
use edgecoder_kernel::{Request, Response, Router, Services, SigningKey};
use p256::pkcs8::EncodePublicKey;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use edgecoder_tlog::checkpoint::{self, Checkpoint, TrustedKey};
use edgecoder_tlog::merkle::{self, Hash, Sha256};
use edgecoder_tlog::proof::TlogProof;

use crate::log::{self, NewEntry};
use crate::{DOCS, Error, b64, store};

/// Largest page of entries.
pub const MAX_PAGE: u64 = 1000;
/// `text/plain` for signed notes.
pub const NOTE_MEDIA_TYPE: &str = "text/plain; charset=utf-8";

/// Who is appending: another function, by the service token it signed
/// (`service:<function>`), or a user who holds `system_admin` now. Roles come
/// from the identity function (storage), not from the token's claims, so a
/// revoke or sign-out takes effect at once.
async fn appender(s: &Services, req: &Request) -> Result<String, Error> {
    let token = req.bearer().ok_or(Error::Unauthorized)?;
    let request =
        edgecoder_kernel::service::request_digest(req.method.as_str(), &req.path, &req.body);
    if let Some(caller) =
        s.config
            .service_keys
            .caller(token, crate::NAME, &request, s.clock.now_ms())
    {
        return Ok(format!("service:{caller}"));
    }
    admin(s, token).await
}

/// A user who holds `system_admin` now.
async fn admin(s: &Services, token: &str) -> Result<String, Error> {
    match s.identity.caller(token).await? {
        Some(c) if c.has_role("system_admin") => Ok(format!("user:{}", c.user_id)),
        _ => Err(Error::Unauthorized),
    }
}

/// The project's own namespace of entry types: every type under this domain
/// (or a subdomain) is written only by the functions, so an admin cannot
/// append a look-alike (`…/credit-transfer/v01`, `…/credits/v1`) that a
/// reader of the log could mistake for a record the functions made.
pub const PROJECT_DOMAIN: &str = "edgecoder.dev";

/// Which function writes which of the project's entry types, over the
/// service path: role changes come from auth, node approvals and task
/// completions from the mesh. A function's token appends its own types and
/// nothing else. Credits live with the tasks they pay for, in the mesh's
/// database, so the mesh writes their transfers and issuance epochs.
pub const APPENDED_BY: [(&str, &str); 11] = [
    ("auth", "edgecoder.dev/role-grant/v1"),
    ("auth", "edgecoder.dev/role-revoke/v1"),
    ("mesh", "edgecoder.dev/node-approval/v1"),
    ("mesh", "edgecoder.dev/task-completion/v1"),
    ("mesh", "edgecoder.dev/blacklist/v1"),
    ("mesh", "edgecoder.dev/model-policy/v1"),
    ("mesh", "edgecoder.dev/model-release/v1"),
    ("mesh", "edgecoder.dev/model-rollout/v1"),
    ("mesh", "edgecoder.dev/peer/v1"),
    ("mesh", "edgecoder.dev/credit-transfer/v1"),
    ("mesh", "edgecoder.dev/issuance-epoch/v1"),
];

/// The function that writes `payload_type`, if another function does.
pub fn owner_of(payload_type: &str) -> Option<&'static str> {
    APPENDED_BY
        .iter()
        .find(|(_, t)| *t == payload_type)
        .map(|(f, _)| *f)
}

/// Whether `payload_type` is in the project's namespace.
pub fn reserved_type(payload_type: &str) -> bool {
    let domain = payload_type.split('/').next().unwrap_or_default();
    domain == PROJECT_DOMAIN
        || domain
            .strip_suffix(PROJECT_DOMAIN)
            .is_some_and(|sub| sub.ends_with('.'))
}

/// `POST /ledger/entries` body.
#[derive(Deserialize)]
pub struct Append {
    payload_type: String,
    /// Base64 (standard alphabet).
    payload: String,
    idempotency_key: String,
}

/// `POST /ledger/entries`.
pub async fn append(s: &Services, req: Request) -> Result<Response, Error> {
    let principal = appender(s, &req).await?;
    let body: Append = req.json()?;
    let own_type = owner_of(&body.payload_type)
        .is_some_and(|owner| principal.strip_prefix("service:") == Some(owner));
    match (principal.starts_with("service:"), own_type) {
        (true, true) => {}
        (true, false) => return Err(Error::Forbidden),
        (false, _) if reserved_type(&body.payload_type) => {
            return Err(Error::InvalidEntry(
                "types under edgecoder.dev are reserved for the functions' own records",
            ));
        }
        (false, _) => {}
    }
    let payload = STANDARD
        .decode(body.payload.as_bytes())
        .map_err(|_| Error::InvalidEntry("payload must be base64"))?;
    let payload_type = body.payload_type.clone();
    let actor = principal.clone();
    let entry = NewEntry {
        payload_type: body.payload_type,
        payload,
        principal,
        idempotency_key: body.idempotency_key,
    };
    let done = log::append(s.sql.as_ref(), s.clock.as_ref(), s.rng.as_ref(), &[entry]).await?;
    let Some(a) = done.first() else {
        return Err(Error::Busy);
    };
    if !a.duplicate {
        edgecoder_kernel::audit::note(
            s,
            &req.ctx,
            &actor,
            "ledger.entry.append",
            Some(&a.index.to_string()),
            edgecoder_kernel::audit::Outcome::Success,
            json!({"payload_type": payload_type}),
        )
        .await?;
    }
    let status = if a.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(
        status,
        edgecoder_kernel::http::JSON,
        &json!({"index": a.index, "duplicate": a.duplicate}),
    ))
}

fn entry_json(e: &log::StoredEntry) -> Json {
    json!({
        "index": e.index,
        "entry": STANDARD.encode(&e.entry),
        "leaf_hash": STANDARD.encode(e.leaf_hash),
    })
}

fn index_param(req: &Request, name: &str) -> Result<Option<u64>, Error> {
    match req.query_param(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(Some)
            .ok_or(Error::InvalidRange(
                "indexes and sizes are non-negative integers",
            )),
    }
}

/// `GET /ledger/entries/{index}`.
pub async fn entry(s: &Services, req: Request) -> Result<Response, Error> {
    let index = req
        .param("index")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or(Error::InvalidRange("index must be a non-negative integer"))?;
    let found = log::entries(s.sql.as_ref(), index, index + 1).await?;
    let e = found.first().ok_or(Error::EntryNotFound)?;
    Ok(ok_json(&entry_json(e)))
}

/// `GET /ledger/entries?start=&end=`: `[start, end)`, at most 1000.
pub async fn page(s: &Services, req: Request) -> Result<Response, Error> {
    let (size, _) = log::head(s.sql.as_ref()).await?;
    let start = index_param(&req, "start")?.unwrap_or(0);
    let end = index_param(&req, "end")?.unwrap_or(size.min(start.saturating_add(MAX_PAGE)));
    if start > end {
        return Err(Error::InvalidRange("start must not exceed end"));
    }
    if end > size {
        return Err(Error::InvalidRange("end is beyond the tree size"));
    }
    if end - start > MAX_PAGE {
        return Err(Error::InvalidRange("at most 1000 entries per page"));
    }
    let found = log::entries(s.sql.as_ref(), start, end).await?;
    if u64::try_from(found.len()).ok() != Some(end - start) {
        return Err(Error::Corrupt("ledger_entries has gaps"));
    }
    Ok(ok_json(&json!({
        "tree_size": size,
        "entries": found.iter().map(entry_json).collect::<Vec<_>>(),
    })))
}

/// The log's origin (and checkpoint key name): `log_origin`, or the
/// issuer's host + `/ledger`.
pub fn origin(s: &Services) -> String {
    if let Ok(settings) = crate::Settings::of(s)
        && let Some(o) = &settings.log_origin
    {
        return o.clone();
    }
    let host = s
        .config
        .issuer
        .split("://")
        .nth(1)
        .unwrap_or("localhost")
        .trim_end_matches('/');
    format!("{host}/ledger")
}

fn signing_key(s: &Services) -> Result<&SigningKey, Error> {
    crate::Settings::of(s)?
        .checkpoint_keys
        .current
        .as_ref()
        .ok_or_else(|| {
            edgecoder_kernel::Error::Config("no checkpoint_key to sign checkpoints".into()).into()
        })
}

/// The log's own checkpoint keys, as a verifier of its notes holds them.
fn own_keys(s: &Services) -> Result<Vec<TrustedKey>, Error> {
    let name = origin(s);
    Ok(crate::Settings::of(s)?
        .checkpoint_keys
        .verifying_keys()
        .into_iter()
        .map(|key| TrustedKey {
            name: name.clone(),
            key: key.into(),
        })
        .collect())
}

/// Proves the head about to be signed consistent with the newest checkpoint
/// this log already signed, from storage alone. Someone with write access to
/// the database but not the key can truncate the entries and reset the head;
/// without this check the log would then sign the fork and hand its key's
/// authority to the rewritten history. A refusal is audited, and stays in
/// force until an operator restores the entries the signed checkpoint covers.
/// Out of reach here: an attacker who also deletes the newest checkpoint
/// rows; witnesses outside this database (peers cosigning, a verifier's
/// state file) catch that.
async fn consistent_with_signed(s: &Services, size: u64, root: &Hash) -> Result<(), Error> {
    let Some(latest) = store::latest_checkpoint(s.sql.as_ref()).await? else {
        return Ok(());
    };
    let why = match checkpoint::open(&latest.note, &own_keys(s)?) {
        Err(_) => Some("the newest stored checkpoint is not signed by this log's keys".to_owned()),
        // A genuine older note copied into a row that claims a larger size
        // would let a fork extend the older note instead.
        Ok(signed) if signed.size != latest.size => Some(format!(
            "the checkpoint row of size {} holds a note signing size {}",
            latest.size, signed.size
        )),
        Ok(signed) if signed.size > size => Some(format!(
            "the log was rewound: size {} was signed, the head is at {size}",
            signed.size
        )),
        Ok(signed) if signed.size == 0 => None,
        Ok(signed) => {
            let proof: Vec<Vec<u8>> = log::consistency_proof(s.sql.as_ref(), signed.size, size)
                .await?
                .iter()
                .map(|h| h.to_vec())
                .collect();
            merkle::verify_consistency::<Sha256>(signed.size, size, &proof, &signed.root, root)
                .err()
                .map(|_| {
                    format!(
                        "the stored tree of size {size} is not an extension of the signed checkpoint of size {}",
                        signed.size
                    )
                })
        }
    };
    let Some(why) = why else { return Ok(()) };
    let event = edgecoder_kernel::audit::AuditEvent {
        actor: "system:ledger".into(),
        action: "ledger.history_rewritten".into(),
        target: Some(origin(s)),
        outcome: edgecoder_kernel::audit::Outcome::Failure,
        details: json!({"head_size": size, "signed_size": latest.size, "reason": why}),
    };
    edgecoder_kernel::audit::record(s, None, &event).await?;
    Err(Error::HistoryRewritten(why))
}

/// Signs the checkpoint for `size` unless one exists; refuses a root that is
/// not the log's root at that size, so no size is ever signed with two roots,
/// and a head that does not extend the newest signed checkpoint.
pub async fn sign_checkpoint(s: &Services, size: u64, root: Hash) -> Result<String, Error> {
    if log::root_at(s.sql.as_ref(), size).await? != root {
        return Err(Error::CheckpointMismatch);
    }
    consistent_with_signed(s, size, &root).await?;
    let cp = Checkpoint {
        origin: origin(s),
        size,
        root,
    };
    let mut signers = vec![checkpoint::NoteSigner::EcdsaP256(signing_key(s)?.ecdsa())];
    if let Some(ed) = &crate::Settings::of(s)?.checkpoint_ed25519 {
        signers.push(checkpoint::NoteSigner::Ed25519(ed));
    }
    let note = checkpoint::sign_with(&cp, &cp.origin, &signers)
        .map_err(|_| Error::Corrupt("checkpoint signing"))?;
    let (stored_root, stored_note) =
        store::sign_once(s.sql.as_ref(), size, &root, note.clone(), s.clock.now_ms()).await?;
    if stored_root != root {
        return Err(Error::CheckpointMismatch);
    }
    if stored_note == note
        && let Some(round) = crate::witnesses::Round::of(s, own_keys(s)?)?
    {
        // A new head: the witnesses are asked after the response.
        let signed = note.clone();
        s.defer.defer(Box::pin(async move {
            round.run(&signed).await;
        }));
    }
    Ok(stored_note)
}

async fn current_checkpoint(s: &Services, force: bool) -> Result<String, Error> {
    let interval_ms = crate::Settings::of(s)?.checkpoint_interval_ms;
    let (size, root) = log::head(s.sql.as_ref()).await?;
    if let Some(latest) = store::latest_checkpoint(s.sql.as_ref()).await? {
        let fresh_enough = s.clock.now_ms() - latest.created_at < interval_ms;
        if latest.size == size || (fresh_enough && !force) {
            return Ok(latest.note);
        }
    }
    sign_checkpoint(s, size, root).await
}

fn note_response(status: StatusCode, note: String) -> Response {
    let mut resp = edgecoder_kernel::http_types::Response::new(note.into_bytes());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(NOTE_MEDIA_TYPE),
    );
    resp
}

/// `GET /ledger/checkpoint`: the latest signed checkpoint (a new one at most
/// once per `checkpoint_interval_ms`) with the witnesses' cosignatures kept
/// for it; with `?min_cosignatures=K`, the newest checkpoint that has at
/// least K (404 `not_cosigned` if none has).
pub async fn get_checkpoint(s: &Services, req: Request) -> Result<Response, Error> {
    let sql = s.sql.as_ref();
    let note = match req.query_param("min_cosignatures") {
        Some(k) => {
            let k = k
                .parse::<u64>()
                .ok()
                .filter(|k| (1..=32).contains(k))
                .ok_or(Error::InvalidRange("min_cosignatures is 1 to 32"))?;
            // More than the configured witnesses cannot be there: no scan.
            let witnesses = crate::Settings::of(s)?.witnesses.len();
            if usize::try_from(k).unwrap_or(usize::MAX) > witnesses {
                return Err(Error::NotCosigned);
            }
            store::newest_cosigned(sql, k)
                .await?
                .ok_or(Error::NotCosigned)?
                .1
        }
        None => current_checkpoint(s, false).await?,
    };
    Ok(note_response(
        StatusCode::OK,
        crate::witnesses::with_cosignatures(sql, note).await?,
    ))
}

/// `POST /ledger/checkpoint`: sign the current head now (a current
/// `system_admin`; no function needs to).
pub async fn post_checkpoint(s: &Services, req: Request) -> Result<Response, Error> {
    let actor = admin(s, req.bearer().ok_or(Error::Unauthorized)?).await?;
    let note = current_checkpoint(s, true).await?;
    let size = note.lines().nth(1).unwrap_or_default().to_owned();
    edgecoder_kernel::audit::note(
        s,
        &req.ctx,
        &actor,
        "ledger.checkpoint.sign",
        Some(&size),
        edgecoder_kernel::audit::Outcome::Success,
        json!({"size": size}),
    )
    .await?;
    // Asked now, so the answer carries what the witnesses said.
    if let Some(round) = crate::witnesses::Round::of(s, own_keys(s)?)? {
        round.run(&note).await;
    }
    Ok(note_response(
        StatusCode::OK,
        crate::witnesses::with_cosignatures(s.sql.as_ref(), note).await?,
    ))
}

fn hashes(v: &[Hash]) -> Vec<String> {
    v.iter().map(|h| STANDARD.encode(h)).collect()
}

/// `GET /ledger/proof/inclusion?index=&tree_size=`.
pub async fn inclusion(s: &Services, req: Request) -> Result<Response, Error> {
    let index = index_param(&req, "index")?.ok_or(Error::InvalidRange("index is required"))?;
    let (size, _) = log::head(s.sql.as_ref()).await?;
    let tree_size = index_param(&req, "tree_size")?.unwrap_or(size);
    if tree_size > size {
        return Err(Error::InvalidRange("tree_size is beyond the log"));
    }
    if index >= tree_size {
        return Err(Error::InvalidRange("index must be below tree_size"));
    }
    let proof = log::inclusion_proof(s.sql.as_ref(), index, tree_size).await?;
    let leaf = log::entries(s.sql.as_ref(), index, index + 1).await?;
    Ok(ok_json(&json!({
        "index": index,
        "tree_size": tree_size,
        "leaf_hash": leaf.first().map(|e| STANDARD.encode(e.leaf_hash)),
        "root": STANDARD.encode(log::root_at(s.sql.as_ref(), tree_size).await?),
        "proof": hashes(&proof),
    })))
}

/// `GET /ledger/proof/consistency?first=&second=`.
pub async fn consistency(s: &Services, req: Request) -> Result<Response, Error> {
    let first = index_param(&req, "first")?.ok_or(Error::InvalidRange("first is required"))?;
    let (size, _) = log::head(s.sql.as_ref()).await?;
    let second = index_param(&req, "second")?.unwrap_or(size);
    if first == 0 {
        return Err(Error::InvalidRange(
            "first must be at least 1: every tree extends the empty one",
        ));
    }
    if first > second {
        return Err(Error::InvalidRange("first must not exceed second"));
    }
    if second > size {
        return Err(Error::InvalidRange("second is beyond the log"));
    }
    let proof = log::consistency_proof(s.sql.as_ref(), first, second).await?;
    Ok(ok_json(&json!({
        "first": first,
        "second": second,
        "proof": hashes(&proof),
    })))
}

/// `GET /ledger/keys`: the checkpoint keys with ids and validity windows.
pub async fn keys(s: &Services, _req: Request) -> Result<Response, Error> {
    let name = origin(s);
    let describe = |key: &p256::ecdsa::VerifyingKey, until: Option<i64>| -> Result<Json, Error> {
        let der = key
            .to_public_key_der()
            .map_err(|_| Error::Corrupt("public key encoding"))?;
        let id = checkpoint::key_id(key).map_err(|_| Error::Corrupt("public key encoding"))?;
        Ok(json!({
            "name": name,
            "key_id": id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "algorithm": "ecdsa-p256-sha256",
            "signature_type": 2,
            "public_key": STANDARD.encode(der.as_bytes()),
            "valid_until": until,
        }))
    };
    let keys = &crate::Settings::of(s)?.checkpoint_keys;
    let mut out = Vec::new();
    if let Some(k) = &keys.current {
        out.push(describe(k.verifying_key(), None)?);
    }
    if let Some((k, retired)) = &keys.previous {
        out.push(describe(k, Some(*retired))?);
    }
    // The Ed25519 key's verifier key, in the form witnesses are configured
    // with (c2sp.org/signed-note vkeys).
    let vkeys: Vec<String> = crate::Settings::of(s)?
        .ed25519_vkey(&name)
        .into_iter()
        .collect();
    Ok(ok_json(
        &json!({ "origin": name, "keys": out, "vkeys": vkeys }),
    ))
}

/// `GET /ledger/entries/{index}/receipt`: a c2sp.org/tlog-proof whose
/// `extra` is the entry's exact bytes (a credit transfer's, an epoch's…),
/// with its inclusion proof and a signed checkpoint that covers it,
/// verifiable offline (`edgecoder verify --receipt`, or any tlog-proof
/// verifier given the entry's RFC 6962 leaf hash). Public, like the entries.
pub async fn receipt(s: &Services, req: Request) -> Result<Response, Error> {
    let index = req
        .param("index")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(Error::InvalidRange("index is a non-negative integer"))?;
    let (size, _) = log::head(s.sql.as_ref()).await?;
    if index >= size {
        return Err(Error::EntryNotFound);
    }
    let mut note = current_checkpoint(s, false).await?;
    let mut cp = checkpoint::body_of(&note).map_err(|_| Error::Corrupt("own checkpoint"))?;
    if cp.size <= index {
        note = current_checkpoint(s, true).await?;
        cp = checkpoint::body_of(&note).map_err(|_| Error::Corrupt("own checkpoint"))?;
    }
    let entry = log::entries(s.sql.as_ref(), index, index + 1)
        .await?
        .into_iter()
        .next()
        .ok_or(Error::Corrupt("entry missing"))?;
    let proof = TlogProof {
        extra: Some(entry.entry),
        index,
        hashes: log::inclusion_proof(s.sql.as_ref(), index, cp.size).await?,
        checkpoint: note,
    };
    Ok(note_response(StatusCode::OK, proof.to_text()))
}

fn object_with(properties: Json) -> Json {
    json!({"type": "object", "properties": properties})
}

fn append_doc() -> RouteDoc {
    let body = json!({
        "type": "object",
        "required": ["payload_type", "payload", "idempotency_key"],
        "properties": {
            "payload_type": {"type": "string", "pattern": "^[a-z0-9.-]+/[a-z0-9.-]+/v[0-9]+$"},
            "payload": b64(),
            "idempotency_key": {"type": "string", "maxLength": 200},
        },
    });
    let appended = |duplicate: bool| {
        object_with(json!({"index": {"type": "integer"}, "duplicate": {"const": duplicate}}))
    };
    DOCS.op(
        "ledger_append",
        "Append an entry (service credential or system_admin)",
        Some(body),
        vec![
            ok(201, "appended").with_schema(appended(false)),
            ok(
                200,
                "the idempotency key was used before: the earlier index",
            )
            .with_schema(appended(true)),
            err(400, "invalid_entry"),
            err(401, "ledger_unauthorized"),
            err(
                403,
                "forbidden (a function's token appends only its own types)",
            ),
            err(413, "entry_too_large"),
            err(422, "idempotency_key_reused"),
        ],
    )
}

fn entry_schema() -> Json {
    json!({
        "type": "object",
        "required": ["index", "entry", "leaf_hash"],
        "properties": {"index": {"type": "integer"}, "entry": b64(), "leaf_hash": b64()},
    })
}

fn proof_docs() -> (RouteDoc, RouteDoc) {
    let proof = json!({"type": "array", "items": b64()});
    let inclusion = object_with(json!({
        "index": {"type": "integer"},
        "tree_size": {"type": "integer"},
        "leaf_hash": b64(),
        "root": b64(),
        "proof": proof,
    }));
    let consistency = object_with(json!({
        "first": {"type": "integer"},
        "second": {"type": "integer"},
        "proof": proof,
    }));
    (
        DOCS.op(
            "ledger_inclusion_proof",
            "Inclusion proof (?index=&tree_size=)",
            None,
            vec![
                ok(200, "the proof").with_schema(inclusion),
                err(400, "invalid_range"),
            ],
        ),
        DOCS.op(
            "ledger_consistency_proof",
            "Consistency proof (?first=&second=)",
            None,
            vec![
                ok(200, "the proof").with_schema(consistency),
                err(400, "invalid_range"),
            ],
        ),
    )
}

fn keys_doc() -> RouteDoc {
    let key = object_with(json!({
        "name": {"type": "string"},
        "key_id": {"type": "string"},
        "algorithm": {"type": "string"},
        "signature_type": {"type": "integer"},
        "public_key": b64(),
        "valid_until": {"type": ["integer", "null"]},
    }));
    let keys = object_with(json!({
        "origin": {"type": "string"},
        "keys": {"type": "array", "items": key},
    }));
    DOCS.op(
        "ledger_keys",
        "Checkpoint keys with ids and validity windows",
        None,
        vec![ok(200, "the keys").with_schema(keys), err(404, "not_found")],
    )
}

/// The log's routes: entries, checkpoints, proofs and keys.
pub fn routes(r: Router) -> Router {
    let note = || response_doc(200, "C2SP signed checkpoint (text)", Some("text/plain"));
    let entries = object_with(json!({
        "tree_size": {"type": "integer"},
        "entries": {"type": "array", "items": entry_schema()},
    }));
    let page_doc = DOCS.op(
        "ledger_entries",
        "Entries [start, end), at most 1000: ?start=&end=",
        None,
        vec![
            ok(200, "a page").with_schema(entries),
            err(400, "invalid_range"),
        ],
    );
    let entry_doc = DOCS.op(
        "ledger_entry",
        "One entry: its exact bytes and leaf hash",
        None,
        vec![
            ok(200, "the entry").with_schema(entry_schema()),
            err(400, "invalid_range"),
            err(404, "entry_not_found"),
        ],
    );
    let checkpoint_doc = DOCS.op(
        "ledger_checkpoint",
        "The latest signed checkpoint with the witnesses' cosignatures kept for it; ?min_cosignatures=K: the newest with at least K",
        None,
        vec![
            note(),
            err(400, "invalid_range"),
            err(404, "not_found / not_cosigned"),
            err(503, "history_rewritten"),
        ],
    );
    let sign_doc = DOCS.op(
        "ledger_checkpoint_now",
        "Sign the current head now and ask the configured witnesses to cosign it (a system_admin)",
        None,
        vec![
            note(),
            err(401, "ledger_unauthorized"),
            err(503, "history_rewritten"),
        ],
    );
    let (inclusion_doc, consistency_doc) = proof_docs();
    r.route(
        Method::POST,
        "/ledger/entries",
        endpoint(|s, r| async move { append(&s, r).await }),
        append_doc(),
    )
    .route(
        Method::GET,
        "/ledger/entries",
        endpoint(|s, r| async move { page(&s, r).await }),
        page_doc,
    )
    .route(
        Method::GET,
        "/ledger/entries/{index}",
        endpoint(|s, r| async move { entry(&s, r).await }),
        entry_doc,
    )
    .route(
        Method::GET,
        "/ledger/entries/{index}/receipt",
        endpoint(|s, r| async move { receipt(&s, r).await }),
        DOCS.op(
            "ledger_entry_receipt",
            "A c2sp.org/tlog-proof of one entry: the entry (extra), its inclusion proof and a signed checkpoint covering it",
            None,
            vec![
                response_doc(200, "the receipt, c2sp.org/tlog-proof@v1 (text)", Some("text/plain")),
                err(400, "invalid_range"),
                err(404, "entry_not_found"),
                err(503, "history_rewritten"),
            ],
        ),
    )
    .route(
        Method::GET,
        "/ledger/checkpoint",
        endpoint(|s, r| async move { get_checkpoint(&s, r).await }),
        checkpoint_doc,
    )
    .route(
        Method::POST,
        "/ledger/checkpoint",
        endpoint(|s, r| async move { post_checkpoint(&s, r).await }),
        sign_doc,
    )
    .route(
        Method::GET,
        "/ledger/proof/inclusion",
        endpoint(|s, r| async move { inclusion(&s, r).await }),
        inclusion_doc,
    )
    .route(
        Method::GET,
        "/ledger/proof/consistency",
        endpoint(|s, r| async move { consistency(&s, r).await }),
        consistency_doc,
    )
    .route(
        Method::GET,
        "/ledger/keys",
        endpoint(|s, r| async move { keys(&s, r).await }),
        keys_doc(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_namespace_includes_subdomains_and_nothing_else() {
        for t in [
            "edgecoder.dev/credit-transfer/v1",
            "edgecoder.dev/credits/v1",
            "audit.edgecoder.dev/x/v1",
        ] {
            assert!(reserved_type(t), "{t}");
        }
        for t in [
            "example.org/x/v1",
            "notedgecoder.dev/x/v1",
            "edgecoder.devx/x/v1",
        ] {
            assert!(!reserved_type(t), "{t}");
        }
    }
}
