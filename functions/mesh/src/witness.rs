//! This coordinator as a c2sp.org/tlog-witness: it cosigns the checkpoints
//! of the logs it witnesses (its peers' ledgers, and any log an operator
//! adds by origin and verifier key), each only if it is consistent with the
//! last one it cosigned, so a log that shows different heads to different
//! witnesses, or rewinds, cannot collect cosignatures for both.
//!
//! In scope: `POST /mesh/witness/add-checkpoint` exactly as tlog-witness
//! defines it (the `old` line, at most 63 consistency proof lines, the
//! signed checkpoint; 404 unknown origin, 403 no trusted signature, 400 old
//! size above the checkpoint's, 409 with a `text/x.tlog.size` body when the
//! old size is not the one cosigned last, 422 a proof that does not verify,
//! 409 the same size with another root, 200 with `cosignature/v1` lines),
//! the atomic compare-and-set of the cosigned size, alerts (audit events)
//! for forks, failed proofs and rewinds, registering peers' ledgers
//! ([`witness_peer_log`]) and the operator routes. No request
//! authentication beyond the checkpoint's signature, as the protocol says:
//! an existing log can be cosigned by us with no other arrangement.
//! Out of scope: asking witnesses to cosign our own log (the ledger
//! function) and the key itself (settings: `witness_key`).

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, RequestContext, Response, Router, Services};
use edgecoder_tlog::checkpoint::{self, NoteKey, TrustedKey};
use edgecoder_tlog::merkle::{self, Sha256};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::store::peers::PeerStatus;
use crate::store::witness::{self as db, Log};
use crate::{DOCS, Error, Settings, authn};

/// Most consistency proof lines a request may carry (the protocol's cap).
pub const MAX_PROOF_LINES: usize = 63;
/// `add-checkpoint` requests per client address per minute.
pub const ADD_PER_MINUTE: i64 = 600;
/// The media type of a 409's size body.
pub const SIZE_MEDIA_TYPE: &str = "text/x.tlog.size";

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// An `add-checkpoint` request body, parsed.
#[derive(Debug)]
pub struct AddCheckpoint<'a> {
    /// The size of the checkpoint the client believes we cosigned last.
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Vec<u8>>,
    /// The signed checkpoint.
    pub note: &'a str,
}

/// Parses the body: `old N`, proof lines, an empty line, the checkpoint.
pub fn parse(body: &[u8]) -> Result<AddCheckpoint<'_>, Error> {
    let text = std::str::from_utf8(body).map_err(|_| invalid("the body is not UTF-8."))?;
    let (first, mut rest) = text
        .split_once('\n')
        .ok_or_else(|| invalid("the body starts with an old size line."))?;
    let old = first
        .strip_prefix("old ")
        .filter(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            invalid("the first line is `old <size>`, in decimal without leading zeros.")
        })?;
    let mut proof = Vec::new();
    loop {
        let (line, after) = rest
            .split_once('\n')
            .ok_or_else(|| invalid("an empty line must end the consistency proof."))?;
        rest = after;
        if line.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return Err(invalid("at most 63 consistency proof lines."));
        }
        let hash = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, line)
            .ok()
            .filter(|h| h.len() == 32)
            .ok_or_else(|| invalid("each proof line is one base64 SHA-256 hash."))?;
        proof.push(hash);
    }
    Ok(AddCheckpoint {
        old,
        proof,
        note: rest,
    })
}

fn trusted(log: &Log) -> Vec<TrustedKey> {
    log.vkeys
        .iter()
        .filter_map(|v| NoteKey::parse_vkey(v).ok())
        .filter(|t| t.name == log.origin)
        .collect()
}

async fn alert(
    s: &Services,
    ctx: &RequestContext,
    action: &str,
    origin: &str,
    details: Json,
) -> Result<(), Error> {
    audit::note(
        s,
        ctx,
        &format!("log:{origin}"),
        action,
        Some(origin),
        Outcome::Failure,
        details,
    )
    .await?;
    Ok(())
}

fn size_response(size: u64) -> Response {
    let mut resp = edgecoder_kernel::http_types::Response::new(format!("{size}\n").into_bytes());
    *resp.status_mut() = StatusCode::CONFLICT;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SIZE_MEDIA_TYPE),
    );
    resp
}

/// The log `origin` as this witness serves it now: an operator's, or an
/// active peer's.
pub async fn witnessed(s: &Services, origin: &str) -> Result<Option<Log>, Error> {
    let Some(log) = db::log(s.sql.as_ref(), origin).await? else {
        return Ok(None);
    };
    if let Some(peer) = &log.peer {
        let active = crate::store::peers::by_origin(s.sql.as_ref(), peer)
            .await?
            .is_some_and(|p| p.status() == PeerStatus::Active);
        if !active {
            return Ok(None);
        }
    }
    Ok(Some(log))
}

/// What a witness decision came to.
#[derive(Debug)]
pub enum Accepted {
    /// Cosigned: the `cosignature/v1` line (with its newline).
    Cosigned(String),
    /// The old size is not the one held: the size held.
    Stale(u64),
}

/// The tlog-witness rules for checkpoint `cp` of `log` (already opened
/// with the log's keys) claimed to extend the size `old` by `proof`: a
/// rewind, a fork or a failed proof is refused and alerted; otherwise it is
/// cosigned and becomes what this witness holds.
pub async fn accept(
    s: &Services,
    ctx: &RequestContext,
    log: &Log,
    old: u64,
    proof: &[Vec<u8>],
    note: &str,
    cp: &checkpoint::Checkpoint,
) -> Result<Accepted, Error> {
    let (name, key) = Settings::of(s)?
        .witness
        .clone()
        .ok_or(Error::FederationUnconfigured)?;
    // SQL holds sizes as signed 64-bit integers.
    if i64::try_from(cp.size).is_err() || i64::try_from(old).is_err() {
        return Err(invalid("sizes above 2^63 - 1 are not witnessed."));
    }
    if cp.size < log.size {
        // A correct log never asks for a head smaller than one it had
        // cosigned: it rolled back, or it shows another view here.
        alert(
            s,
            ctx,
            "mesh.witness.rewind",
            &log.origin,
            json!({"cosigned_size": log.size, "size": cp.size}),
        )
        .await?;
    }
    if old > cp.size {
        return Err(invalid("old is above the checkpoint's size."));
    }
    if old != log.size {
        return Ok(Accepted::Stale(log.size));
    }
    if old == cp.size {
        if !proof.is_empty() {
            return Err(invalid("a checkpoint of the size held takes no proof."));
        }
        // Two checkpoints the log signed for one size with two roots: the
        // one we cosigned is kept with its note, this one is the other.
        if log.root.as_deref() != Some(&cp.root[..]) {
            alert(s, ctx, "mesh.witness.fork", &log.origin,
                json!({"size": cp.size, "cosigned_root": log.root.as_deref().map(hex), "root": hex(&cp.root)})).await?;
            return Err(Error::CheckpointConflict);
        }
    } else {
        let consistent = if old == 0 {
            proof.is_empty()
        } else {
            let old_root = log.root.clone().unwrap_or_default();
            merkle::verify_consistency::<Sha256>(old, cp.size, proof, &old_root, &cp.root).is_ok()
        };
        if !consistent {
            alert(
                s,
                ctx,
                "mesh.witness.inconsistent",
                &log.origin,
                json!({"cosigned_size": log.size, "size": cp.size, "root": hex(&cp.root)}),
            )
            .await?;
            return Err(Error::InconsistentCheckpoint);
        }
    }
    let now = s.clock.now_ms();
    let time = u64::try_from(now.div_euclid(1000)).unwrap_or_default();
    let line = checkpoint::cosign(cp, &name, &key, time)
        .map_err(|_| invalid("the checkpoint cannot be cosigned."))?;
    let kept = format!("{note}{line}");
    if !db::advance(
        s.sql.as_ref(),
        &log.origin,
        old,
        cp.size,
        &cp.root,
        &kept,
        now,
    )
    .await?
    {
        // Another request moved the size between our read and this write.
        let current = db::log(s.sql.as_ref(), &log.origin)
            .await?
            .map_or(0, |l| l.size);
        return Ok(Accepted::Stale(current));
    }
    Ok(Accepted::Cosigned(line))
}

/// Opens `note` with the keys trusted for `log`.
pub fn open(log: &Log, note: &str) -> Result<checkpoint::Checkpoint, Error> {
    checkpoint::open(note, &trusted(log)).map_err(|_| Error::CheckpointUnverified)
}

/// `POST /mesh/witness/add-checkpoint`.
async fn add_checkpoint(s: &Services, req: Request) -> Result<Response, Error> {
    if Settings::of(s)?.witness.is_none() {
        return Err(Error::FederationUnconfigured);
    }
    // Open to any log client, as the protocol wants: a budget per address.
    if let Some(ip) = edgecoder_kernel::ratelimit::ip_subject(&req.ctx) {
        authn::charge(s, &format!("witness:{ip}"), ADD_PER_MINUTE).await?;
    }
    let body = parse(&req.body)?;
    let claimed = checkpoint::body_of(body.note)
        .map_err(|_| invalid("the checkpoint is not a signed note."))?;
    let log = witnessed(s, &claimed.origin)
        .await?
        .ok_or(Error::UnknownLog)?;
    let cp = open(&log, body.note)?;
    match accept(s, &req.ctx, &log, body.old, &body.proof, body.note, &cp).await? {
        Accepted::Stale(size) => Ok(size_response(size)),
        Accepted::Cosigned(line) => {
            // The witness's state moved: what it vouched for is on record.
            audit::note(
                s,
                &req.ctx,
                &format!("log:{}", log.origin),
                "mesh.witness.cosign",
                Some(&log.origin),
                audit::Outcome::Success,
                serde_json::json!({"size": cp.size}),
            )
            .await?;
            let mut resp = edgecoder_kernel::http_types::Response::new(line.into_bytes());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(resp)
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// This witness's verifier key (`name+id+base64(0x04 ‖ key)`), if it has one.
pub fn vkey(s: &Services) -> Result<Option<(String, String)>, Error> {
    Ok(Settings::of(s)?.witness.as_ref().and_then(|(name, key)| {
        NoteKey::CosignatureV1(key.verifying_key())
            .vkey(name)
            .map(|v| (name.clone(), v))
    }))
}

/// Starts witnessing the ledger of `peer` with the Ed25519 log keys its
/// `/ledger/keys` publishes. The log must be named under the peer's own
/// authority (`<host[:port]>/…`), so no peer can take another log's name.
/// `confirmed`: an operator is pinning the peer now, and a log key they
/// named (`pin`) must be among those published; otherwise (refresh) the log
/// and keys already held stay, a change is refused and audited, and a log
/// not pinned yet is not pinned: logs and their keys are pinned only when an
/// operator approves the peer.
pub async fn witness_peer_log(
    s: &Services,
    ctx: &RequestContext,
    peer: &str,
    confirmed: bool,
    pin: Option<&str>,
) -> Result<Vec<String>, Error> {
    let resp = s
        .outbound
        .send(edgecoder_kernel::OutboundRequest {
            method: Method::GET,
            url: format!("{peer}/ledger/keys"),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        })
        .await
        .map_err(|e| Error::PeerUnreachable(format!("{peer}/ledger/keys: {e}")))?;
    let doc: Json = serde_json::from_slice(&resp.body).unwrap_or(Json::Null);
    let origin = doc["origin"].as_str().unwrap_or_default();
    let vkeys: Vec<String> = doc["vkeys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter(|v| NoteKey::parse_vkey(v).is_ok_and(|t| t.name == origin))
        .map(str::to_owned)
        .collect();
    if resp.status != 200 || origin.is_empty() || vkeys.is_empty() {
        return Err(Error::PeerUnreachable(format!(
            "{peer}/ledger/keys publishes no Ed25519 log key"
        )));
    }
    let authority = peer.split_once("://").map_or(peer, |(_, a)| a);
    if !origin.starts_with(&format!("{authority}/")) {
        return Err(Error::PeerUnreachable(format!(
            "{peer}'s log is named {origin}, not under {authority}/"
        )));
    }
    if pin.is_some_and(|p| !vkeys.iter().any(|v| v == p)) {
        return Err(Error::PeerKeyMismatch);
    }
    let sql = s.sql.as_ref();
    let existing = db::log(sql, origin).await?;
    if !confirmed && existing.is_none() {
        // A log name first seen here is not trusted on first use: only an
        // operator approving the peer pins its log.
        return Err(Error::UnknownLog);
    }
    if let Some(e) = &existing {
        if e.peer.as_deref() != Some(peer) {
            // Another peer's, or an operator's, log of that name.
            return Err(Error::PeerKeyMismatch);
        }
        if !confirmed && e.vkeys != vkeys {
            alert(
                s,
                ctx,
                "mesh.witness.log_key_changed",
                origin,
                json!({"peer": peer, "held": e.vkeys, "published": vkeys}),
            )
            .await?;
            return Err(Error::PeerKeyMismatch);
        }
    }
    if confirmed {
        // A log under a new name: the old one stays witnessed as an
        // operator's, and the pull starts over on the new one.
        if db::origin_of_peer(sql, peer)
            .await?
            .is_some_and(|o| o != origin)
        {
            db::unpeer(sql, peer).await?;
            crate::store::federation::reset(sql, peer).await?;
        }
        db::upsert(sql, origin, &vkeys, Some(peer), s.clock.now_ms()).await?;
    }
    Ok(vkeys)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogBody {
    origin: String,
    vkeys: Vec<String>,
    reason: String,
}

/// `PUT /mesh/witness/logs`: witness a log by origin and verifier keys
/// (operator, step-up).
async fn put_log(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let body: LogBody = req.json()?;
    if body.reason.is_empty()
        || body.reason.len() > 500
        || body.reason.chars().any(char::is_control)
    {
        return Err(invalid("reason is 1 to 500 printable characters."));
    }
    if body.vkeys.is_empty() || body.vkeys.len() > 8 {
        return Err(invalid("vkeys lists 1 to 8 verifier keys."));
    }
    for v in &body.vkeys {
        let t = NoteKey::parse_vkey(v).map_err(|_| {
            invalid("each vkey is name+id+base64(0x01 ‖ Ed25519 key), with a matching id.")
        })?;
        if t.name != body.origin || !matches!(t.key, NoteKey::Ed25519(_)) {
            return Err(invalid(
                "each vkey is an Ed25519 log key (type 0x01) named as the origin.",
            ));
        }
    }
    if let Some(existing) = db::log(s.sql.as_ref(), &body.origin).await?
        && existing.peer.is_some()
    {
        return Err(Error::PeerKeyMismatch);
    }
    db::upsert(
        s.sql.as_ref(),
        &body.origin,
        &body.vkeys,
        None,
        s.clock.now_ms(),
    )
    .await?;
    audit::note(
        s,
        &req.ctx,
        &format!("user:{}", caller.user_id),
        "mesh.witness.log",
        Some(&body.origin),
        Outcome::Success,
        json!({"vkeys": body.vkeys, "reason": body.reason}),
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        JSON,
        &json!({"origin": body.origin, "vkeys": body.vkeys}),
    ))
}

/// `GET /mesh/witness/logs`: what this witness witnesses and has cosigned.
async fn list_logs(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let me = vkey(s)?;
    Ok(ok_json(&json!({
        "witness": me.map(|(name, vkey)| json!({"name": name, "vkey": vkey})),
        "logs": db::all(s.sql.as_ref()).await?,
    })))
}

fn docs() -> [RouteDoc; 3] {
    [
        DOCS.op(
            "witness_add_checkpoint",
            "c2sp.org/tlog-witness add-checkpoint: `old <size>`, up to 63 consistency proof lines, an empty line, the signed checkpoint; answers cosignature/v1 lines",
            None,
            vec![
                ok(200, "cosignature/v1 note signature lines"),
                err(400, "invalid_request: malformed body, or old above the checkpoint's size"),
                err(403, "checkpoint_unverified: no signature by a key trusted for the origin"),
                err(404, "unknown_log"),
                err(409, "text/x.tlog.size: the size cosigned last; or checkpoint_conflict: that size with another root"),
                err(422, "inconsistent_checkpoint: the consistency proof does not verify"),
                err(429, "rate_limited"),
            ],
        ),
        DOCS.op(
            "witness_put_log",
            "Witness a log by origin and Ed25519 verifier keys (operator, step-up)",
            object(
                &["origin", "vkeys", "reason"],
                json!({"origin": {"type": "string"}, "vkeys": {"type": "array", "items": {"type": "string"}},
                       "reason": {"type": "string", "maxLength": 500}}),
            ),
            vec![
                ok(200, "{origin, vkeys}"),
                err(400, "invalid_request"),
                err(401, "mesh_unauthorized / invalid_token"),
                err(403, "forbidden / step_up_required"),
                err(409, "peer_key_mismatch: a peer's ledger goes by that origin"),
            ],
        ),
        DOCS.op(
            "witness_list_logs",
            "This witness's verifier key and the logs it witnesses, with the checkpoint each last had cosigned (operator, step-up)",
            None,
            vec![
                ok(200, "{witness, logs}"),
                err(401, "mesh_unauthorized / invalid_token"),
                err(403, "forbidden / step_up_required"),
            ],
        ),
    ]
}

/// The witness routes.
pub fn routes(r: Router) -> Router {
    let [add, put, list] = docs();
    r.route(
        Method::POST,
        "/mesh/witness/add-checkpoint",
        endpoint(|s, r| async move { add_checkpoint(&s, r).await }),
        add,
    )
    .route(
        Method::PUT,
        "/mesh/witness/logs",
        endpoint(|s, r| async move { put_log(&s, r).await }),
        put,
    )
    .route(
        Method::GET,
        "/mesh/witness/logs",
        endpoint(|s, r| async move { list_logs(&s, r).await }),
        list,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_the_protocol_writes_them() {
        let h = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        let body = format!("old 20852014\n{h}\n{h}\n\nexample.com/log\n2\n{h}\n\n— sig\n");
        let p = parse(body.as_bytes()).expect("parse");
        assert_eq!(p.old, 20_852_014);
        assert_eq!(p.proof.len(), 2);
        assert!(p.note.starts_with("example.com/log\n"));
        let zero = format!("old 0\n\nexample.com/log\n2\n{h}\n\n— sig\n");
        assert_eq!(parse(zero.as_bytes()).expect("parse").old, 0);
        for bad in [
            "old 01\n\nx".to_owned(),
            "old -1\n\nx".to_owned(),
            "new 1\n\nx".to_owned(),
            format!("old 1\n{h}"),
            "old 1\nnot-base64!\n\nx".to_owned(),
            format!("old 1\n{}\n\nx", &h[..20]),
            format!("old 1\n{}\nx", format!("{h}\n").repeat(64)),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
