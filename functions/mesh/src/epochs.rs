//! Issuance epochs: the only way new credits come into being after the
//! bootstrap grant.
//!
//! Epoch `n` is the UTC window `[n·L, (n+1)·L)` seconds (`L` =
//! `economy_epoch_secs`). Once it has ended, the coordinator closes it: it
//! reads the log's size `S`, and the epoch counts exactly the
//! `task-completion/v1` entries at indices `[F, S)`, where `F` is the previous
//! close's `S` (0 for the first). Which epoch a completion belongs to is thus
//! decided by the log index its acceptance was appended at, never by a clock
//! read twice. The pool (`economy_epoch_pool`) is split over the owners of the
//! nodes whose work was accepted, in proportion to the priced work, by the
//! largest-remainder rule (`edgecoder_proto::economy::allocate`).
//!
//! An epoch without accepted work is kept but not logged (it issues
//! nothing; the log shows a gap without work before the next close). Any other close is stored (one row
//! per epoch: a second, different close is refused and alerted), then logged as one `issuance-epoch/v1` close entry
//! (with the allocation table's digest) and one credit entry per account.
//! Its credits are pending until `economy_close_quorum` coordinators (this
//! one and its active peers, each with its coordinator key) have signed the
//! close entry (DSSE over the exact payload); then each credit is one
//! transfer out of `issuance`.
//!
//! In scope: closing, signing, taking peers' signatures, finalising, the
//! epoch routes, and the other side: recomputing a peer's closes from the
//! entries the federation pull proved in its log, signing those that match
//! and delivering the signature. Out of scope: offline recomputation
//! (`edgecoder verify --epochs`, over the same `edgecoder_proto::economy`
//! code) and reading peers' logs (`federation`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::router::{endpoint, err, object, ok};
use edgecoder_kernel::{Request, RequestContext, Response, Router, Services, Statement, Value};
use edgecoder_proto::dsse;
use edgecoder_proto::economy::{
    self, Completion, EpochEntry, ISSUANCE_EPOCH_V1, TASK_COMPLETION_V1, allocate,
    allocation_digest,
};
use serde_json::{Value as Json, json};

use crate::economy::{ISSUANCE, SYSTEM};
use crate::store::credits::{self as credits_db, NewTransfer};
use crate::{DOCS, Error, Settings, authn};

/// Epochs closed in one tick at most (a coordinator back from a long
/// outage catches up over several).
const CLOSES_PER_TICK: u64 = 16;
/// Allocations applied per batch when a close becomes final.
const APPLY_CHUNK: usize = 100;

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn uint(v: Option<i64>) -> u64 {
    v.and_then(|n| u64::try_from(n).ok()).unwrap_or_default()
}

/// The log entry `(type, payload)` of an envelope's bytes.
pub fn open_entry(entry: &[u8]) -> Option<(String, Vec<u8>)> {
    let v: Json = serde_json::from_slice(entry).ok()?;
    let t = v["type"].as_str()?.to_owned();
    let payload = STANDARD.decode(v["payload"].as_str()?).ok()?;
    Some((t, payload))
}

/// The completions at log indices `[from, through)`, read from the log.
async fn completions(
    s: &Services,
    from: u64,
    through: u64,
) -> Result<Vec<(u64, Completion)>, Error> {
    let mut out = Vec::new();
    let mut at = from;
    while at < through {
        let (_, page) = s.ledger.read(at, through - at).await?;
        if page.is_empty() {
            return Err(edgecoder_kernel::Error::Storage("the log ended early".into()).into());
        }
        for (index, entry) in page {
            at = index + 1;
            if index >= through {
                break;
            }
            if let Some((TASK_COMPLETION_V1, payload)) =
                open_entry(&entry).as_ref().map(|(t, p)| (t.as_str(), p))
                && let Ok(c) = serde_json::from_slice::<Completion>(payload)
            {
                out.push((index, c));
            }
        }
    }
    Ok(out)
}

/// A stored close.
#[derive(Debug, Clone)]
struct Stored {
    epoch: u64,
    through: u64,
    digest: String,
    payload: String,
    close_index: Option<u64>,
    quorum: i64,
    is_final: bool,
}

async fn stored(s: &Services, epoch: u64) -> Result<Option<Stored>, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT epoch, through_index, allocation_digest, close_payload, close_index, quorum, final \
             FROM econ_epochs WHERE epoch = ?1",
            vec![int(epoch)],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Stored {
        epoch,
        through: uint(rows.get_i64(0, "through_index")),
        digest: rows
            .get_str(0, "allocation_digest")
            .unwrap_or_default()
            .to_owned(),
        payload: rows
            .get_str(0, "close_payload")
            .unwrap_or_default()
            .to_owned(),
        close_index: rows
            .get_i64(0, "close_index")
            .and_then(|i| u64::try_from(i).ok()),
        quorum: rows.get_i64(0, "quorum").unwrap_or(1),
        is_final: rows.get_i64(0, "final") == Some(1),
    }))
}

/// The newest closed epoch and its `through_index`.
async fn last_closed(s: &Services) -> Result<Option<(u64, u64)>, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT epoch, through_index FROM econ_epochs ORDER BY epoch DESC LIMIT 1",
            vec![],
        ))
        .await?;
    Ok(rows
        .get_i64(0, "epoch")
        .map(|e| (uint(Some(e)), uint(rows.get_i64(0, "through_index")))))
}

/// Closes every epoch that has ended and is not closed, signs, logs and
/// finalises what it can; a summary for the tick's answer.
pub async fn tick(s: &Services, ctx: &RequestContext) -> Result<Json, Error> {
    let settings = Settings::of(s)?;
    let secs = u64::try_from(settings.epoch_secs).unwrap_or(86_400);
    let now_s = u64::try_from(s.clock.now_ms() / 1000).unwrap_or(0);
    let current = now_s / secs;
    let mut closed = Vec::new();
    for _ in 0..CLOSES_PER_TICK {
        let next = match last_closed(s).await? {
            Some((e, _)) => e + 1,
            // The first close is of the epoch that ended last.
            None => current.saturating_sub(1),
        };
        if next >= current {
            break;
        }
        match close(s, ctx, next).await {
            Ok(()) => closed.push(next),
            Err(Error::EpochConflict) => break,
            Err(e) => return Err(e),
        }
    }
    // Closes whose logging or finalising was cut short.
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT epoch FROM econ_epochs WHERE final = 0 ORDER BY epoch LIMIT 16",
            vec![],
        ))
        .await?;
    let mut finalised = Vec::new();
    for i in 0..rows.rows.len() {
        let epoch = uint(rows.get_i64(i, "epoch"));
        if advance(s, ctx, epoch).await? {
            finalised.push(epoch);
        }
    }
    let delivered = redeliver(s).await.unwrap_or(0);
    Ok(json!({"closed": closed, "final": finalised, "signatures_delivered": delivered}))
}

/// Closes epoch `epoch` (which has ended): computes its allocation from the
/// log, stores it (refusing a second, different close), then logs, signs and
/// finalises it as far as it can.
pub async fn close(s: &Services, ctx: &RequestContext, epoch: u64) -> Result<(), Error> {
    let from = match last_closed(s).await? {
        Some((e, through)) if e + 1 == epoch => through,
        Some((e, _)) if e >= epoch => {
            // Closed already: idempotent.
            advance(s, ctx, epoch).await?;
            return Ok(());
        }
        Some(_) => {
            return Err(
                edgecoder_kernel::Error::InvalidRequest("epochs close in order".into()).into(),
            );
        }
        None => 0,
    };
    let (through, _) = s.ledger.read(0, 0).await?;
    commit(s, ctx, epoch, from, through).await
}

/// Computes epoch `epoch`'s close over the log range `[from, through)` and
/// stores it, unless a close of that epoch is stored already: the same one
/// is idempotent, a different one (another scheduler that read another log
/// size) is refused with `epoch_conflict` and alerted.
pub async fn commit(
    s: &Services,
    ctx: &RequestContext,
    epoch: u64,
    from: u64,
    through: u64,
) -> Result<(), Error> {
    let settings = Settings::of(s)?;
    let secs = u64::try_from(settings.epoch_secs).unwrap_or(86_400);
    let pool = u64::try_from(settings.epoch_pool).unwrap_or(0);
    let entries = completions(s, from, through).await?;
    let work = economy::epoch_work(&entries, from, through);
    let rows = allocate(pool, &work);
    let digest = allocation_digest(epoch, pool, &rows);
    let total_work: u64 = rows.iter().map(|r| r.work).sum();
    let issued = if rows.is_empty() { 0 } else { pool };
    let entry = EpochEntry::Close {
        epoch,
        epoch_secs: secs,
        from_index: from,
        through_index: through,
        pool: issued,
        accounts: u64::try_from(rows.len()).unwrap_or(u64::MAX),
        total_work,
        allocation_digest: digest.clone(),
    };
    let payload = serde_json::to_string(&entry)
        .map_err(|e| edgecoder_kernel::Error::Storage(format!("close payload: {e}")))?;
    let now = s.clock.now_ms();
    // An epoch without accepted work issues nothing: it is kept (so it is
    // not computed again, and the next close starts at its boundary) but
    // not logged; a verifier sees a gap between two logged closes, and
    // checks that it holds no work.
    let empty = rows.is_empty();
    let mut stmts = vec![Statement::new(
        "INSERT INTO econ_epochs (epoch, epoch_secs, from_index, through_index, pool, total_work, accounts, \
           allocation_digest, close_payload, quorum, closed_at, final) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (epoch) DO NOTHING",
        vec![
            int(epoch),
            int(secs),
            int(from),
            int(through),
            int(issued),
            int(total_work),
            int(u64::try_from(rows.len()).unwrap_or(u64::MAX)),
            digest.as_str().into(),
            payload.as_str().into(),
            Value::Integer(settings.close_quorum),
            Value::Integer(now),
            Value::Integer(i64::from(empty)),
        ],
    )];
    for r in &rows {
        stmts.push(Statement::new(
            "INSERT INTO econ_allocations (epoch, account, work, amount, transfer_id) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS \
               (SELECT 1 FROM econ_epochs WHERE epoch = ?1 AND close_payload = ?6) \
             ON CONFLICT DO NOTHING",
            vec![
                int(epoch),
                r.account.as_str().into(),
                int(r.work),
                int(r.amount),
                s.new_id().into(),
                payload.as_str().into(),
            ],
        ));
    }
    s.sql.batch(stmts).await?;
    let Some(kept) = stored(s, epoch).await? else {
        return Err(edgecoder_kernel::Error::Storage("econ_epochs lost a close".into()).into());
    };
    if kept.payload != payload {
        // Another close of this epoch (a second scheduler, a different
        // log size) landed first: it stands, this one is refused.
        audit::note(
            s,
            ctx,
            SYSTEM,
            "mesh.epoch.conflict",
            Some(&epoch.to_string()),
            Outcome::Denied,
            json!({"kept": {"through_index": kept.through, "allocation_digest": kept.digest},
                   "refused": {"through_index": through, "allocation_digest": digest}}),
        )
        .await?;
        return Err(Error::EpochConflict);
    }
    if empty {
        return Ok(());
    }
    audit::note(
        s,
        ctx,
        SYSTEM,
        "mesh.epoch.close",
        Some(&epoch.to_string()),
        Outcome::Success,
        json!({"from_index": from, "through_index": through, "pool": issued, "accounts": rows.len(), "allocation_digest": digest}),
    )
    .await?;
    advance(s, ctx, epoch).await?;
    Ok(())
}

/// One allocation row as stored.
#[derive(Debug, Clone)]
struct Row {
    account: String,
    work: u64,
    amount: u64,
    transfer: String,
    ledger_index: Option<u64>,
}

async fn allocations(s: &Services, epoch: u64) -> Result<Vec<Row>, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT account, work, amount, transfer_id, ledger_index FROM econ_allocations \
             WHERE epoch = ?1 ORDER BY account",
            vec![int(epoch)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| Row {
            account: rows.get_str(i, "account").unwrap_or_default().to_owned(),
            work: uint(rows.get_i64(i, "work")),
            amount: uint(rows.get_i64(i, "amount")),
            transfer: rows
                .get_str(i, "transfer_id")
                .unwrap_or_default()
                .to_owned(),
            ledger_index: rows
                .get_i64(i, "ledger_index")
                .and_then(|x| u64::try_from(x).ok()),
        })
        .collect())
}

/// Takes a stored close as far as it goes: its entries logged, this
/// coordinator's signature, and (with the quorum) its credits applied.
/// `true` when this call made it final.
async fn advance(s: &Services, ctx: &RequestContext, epoch: u64) -> Result<bool, Error> {
    let Some(e) = stored(s, epoch).await? else {
        return Err(Error::EpochNotFound);
    };
    if e.is_final {
        return Ok(false);
    }
    let sql = s.sql.as_ref();
    if e.close_index.is_none() {
        let index = s
            .ledger
            .append(
                ISSUANCE_EPOCH_V1,
                e.payload.as_bytes(),
                &format!("issuance-epoch:{epoch}:close"),
            )
            .await?;
        sql.execute(Statement::new(
            "UPDATE econ_epochs SET close_index = ?2 WHERE epoch = ?1",
            vec![int(epoch), int(index)],
        ))
        .await?;
    }
    let rows = allocations(s, epoch).await?;
    for r in rows.iter().filter(|r| r.ledger_index.is_none()) {
        let credit = EpochEntry::Credit {
            epoch,
            transfer: r.transfer.clone(),
            account: r.account.clone(),
            work: r.work,
            amount: r.amount,
        };
        let payload = serde_json::to_vec(&credit)
            .map_err(|e| edgecoder_kernel::Error::Storage(format!("credit payload: {e}")))?;
        let index = s
            .ledger
            .append(
                ISSUANCE_EPOCH_V1,
                &payload,
                &format!("issuance-epoch:{epoch}:credit:{}", r.account),
            )
            .await?;
        sql.execute(Statement::new(
            "UPDATE econ_allocations SET ledger_index = ?3 WHERE epoch = ?1 AND account = ?2",
            vec![int(epoch), r.account.as_str().into(), int(index)],
        ))
        .await?;
    }
    sign_own(s, &e).await?;
    if counted(s, epoch).await? < usize::try_from(e.quorum).unwrap_or(usize::MAX) {
        return Ok(false);
    }
    let rows = allocations(s, epoch).await?;
    let now = s.clock.now_ms();
    for chunk in rows.chunks(APPLY_CHUNK) {
        let mut stmts = Vec::new();
        for r in chunk {
            let key = format!("issuance:{epoch}:{}", r.account);
            let memo = format!("issuance epoch {epoch}");
            let amount = i64::try_from(r.amount).unwrap_or(i64::MAX);
            stmts.extend(credits_db::statements(&NewTransfer {
                id: &r.transfer,
                idempotency_key: &key,
                memo: Some(&memo),
                created_by: SYSTEM,
                now,
                postings: vec![
                    (ISSUANCE, -amount, None),
                    (&r.account, amount, Some("user")),
                ],
                guard: None,
            }));
            // The credit entry is this transfer's log record.
            stmts.push(Statement::new(
                "UPDATE credit_transfers SET ledger_index = ?2 WHERE id = ?1 AND ledger_index IS NULL",
                vec![r.transfer.as_str().into(), r.ledger_index.map(int).into()],
            ));
        }
        sql.batch(stmts).await?;
    }
    let done = sql
        .execute(Statement::new(
            "UPDATE econ_epochs SET final = 1, finalized_at = ?2 WHERE epoch = ?1 AND final = 0",
            vec![int(epoch), Value::Integer(now)],
        ))
        .await?;
    if done.changes == 1 {
        audit::note(
            s,
            ctx,
            SYSTEM,
            "mesh.epoch.final",
            Some(&epoch.to_string()),
            Outcome::Success,
            json!({"allocation_digest": e.digest, "accounts": rows.len()}),
        )
        .await?;
    }
    Ok(done.changes == 1)
}

/// This coordinator's name in the quorum: its federation origin, or
/// `local` on a coordinator that does not federate.
fn own_origin(settings: &Settings) -> String {
    settings
        .origin()
        .map_or_else(|_| "local".to_owned(), str::to_owned)
}

async fn sign_own(s: &Services, e: &Stored) -> Result<(), Error> {
    let settings = Settings::of(s)?;
    let Some(key) = &settings.coordinator_keys.current else {
        // Without a coordinator key this coordinator cannot vouch for its
        // close: it stays pending (the readiness of such a deployment is
        // for development only).
        return Ok(());
    };
    let sealed = dsse::seal(ISSUANCE_EPOCH_V1, e.payload.as_bytes(), &[key.ecdsa()]);
    let Some(sig) = sealed.signatures.first() else {
        return Ok(());
    };
    s.sql
        .execute(Statement::new(
            "INSERT INTO econ_close_signatures (epoch, origin, key_id, signature, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (epoch, origin) DO UPDATE SET \
               key_id = excluded.key_id, signature = excluded.signature, created_at = excluded.created_at \
             WHERE key_id <> excluded.key_id",
            vec![
                int(e.epoch),
                own_origin(settings).into(),
                sig.keyid.as_str().into(),
                sig.sig.as_str().into(),
                Value::Integer(s.clock.now_ms()),
            ],
        ))
        .await?;
    Ok(())
}

/// The signatures that count toward the quorum now: this coordinator's by
/// its current key, and those of peers that are active, not banned, and
/// signed with the key pinned for them (a peer suspended, banned or re-keyed
/// since no longer counts).
async fn counted(s: &Services, epoch: u64) -> Result<usize, Error> {
    let settings = Settings::of(s)?;
    let own_kid = settings
        .coordinator_keys
        .current
        .as_ref()
        .map(|k| k.kid().to_owned());
    let me = own_origin(settings);
    let mut n = 0;
    for sig in signatures(s, epoch).await? {
        let (origin, kid) = (
            sig["origin"].as_str().unwrap_or_default(),
            sig["keyid"].as_str().unwrap_or_default(),
        );
        let ok = if origin == me {
            own_kid.as_deref() == Some(kid)
        } else {
            crate::store::peers::by_origin(s.sql.as_ref(), origin)
                .await?
                .is_some_and(|p| {
                    p.status() == crate::store::peers::PeerStatus::Active
                        && !p.banned
                        && p.key_id == kid
                })
        };
        n += usize::from(ok);
    }
    Ok(n)
}

async fn signatures(s: &Services, epoch: u64) -> Result<Vec<Json>, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT origin, key_id, signature FROM econ_close_signatures WHERE epoch = ?1 ORDER BY origin",
            vec![int(epoch)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            json!({
                "origin": rows.get_str(i, "origin"),
                "keyid": rows.get_str(i, "key_id"),
                "sig": rows.get_str(i, "signature"),
            })
        })
        .collect())
}

/// An epoch as the routes show it.
async fn epoch_json(s: &Services, epoch: u64, with_rows: bool) -> Result<Json, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT epoch, epoch_secs, from_index, through_index, pool, total_work, accounts, allocation_digest, \
               close_payload, close_index, quorum, final, closed_at, finalized_at FROM econ_epochs WHERE epoch = ?1",
            vec![int(epoch)],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Err(Error::EpochNotFound);
    }
    let g = |c: &str| rows.get_i64(0, c);
    let secs = g("epoch_secs").unwrap_or_default();
    let e = i64::try_from(epoch).unwrap_or(i64::MAX);
    let signatures = signatures(s, epoch).await?;
    let payload = rows.get_str(0, "close_payload").unwrap_or_default();
    let mut out = json!({
        "epoch": epoch,
        "state": if g("final") == Some(1) { "final" } else { "pending" },
        "starts_at": crate::rfc3339(e * secs * 1000),
        "ends_at": crate::rfc3339((e + 1) * secs * 1000),
        "from_index": g("from_index"),
        "through_index": g("through_index"),
        "pool": g("pool"),
        "total_work": g("total_work"),
        "accounts": g("accounts"),
        "allocation_digest": rows.get_str(0, "allocation_digest"),
        "close_index": g("close_index"),
        "quorum": g("quorum"),
        "close": {
            "payloadType": ISSUANCE_EPOCH_V1,
            "payload": STANDARD.encode(payload.as_bytes()),
            "signatures": signatures,
        },
        "closed_at": g("closed_at").map(crate::rfc3339),
        "finalized_at": g("finalized_at").map(crate::rfc3339),
    });
    if with_rows {
        let rows: Vec<Json> = allocations(s, epoch)
            .await?
            .into_iter()
            .map(|r| {
                json!({"account": r.account, "work": r.work, "amount": r.amount,
                       "transfer": r.transfer, "ledger_index": r.ledger_index})
            })
            .collect();
        out["allocations"] = json!(rows);
    }
    Ok(out)
}

/// `GET /mesh/credits/epochs?limit=`: the newest closes (public: the log
/// holds them anyway).
async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    let limit = match req.query_param("limit") {
        None => 20,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                Error::Kernel(edgecoder_kernel::Error::InvalidRequest(
                    "limit must be 1 to 100.".into(),
                ))
            })?,
    };
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT epoch FROM econ_epochs ORDER BY epoch DESC LIMIT ?1",
            vec![Value::Integer(limit)],
        ))
        .await?;
    let mut out = Vec::new();
    for i in 0..rows.rows.len() {
        out.push(epoch_json(s, uint(rows.get_i64(i, "epoch")), false).await?);
    }
    let settings = Settings::of(s)?;
    Ok(ok_json(&json!({
        "epoch_secs": settings.epoch_secs,
        "pool": settings.epoch_pool,
        "quorum": settings.close_quorum,
        "epochs": out,
    })))
}

fn epoch_param(req: &Request) -> Result<u64, Error> {
    req.param("epoch")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n < 1 << 40)
        .ok_or(Error::EpochNotFound)
}

/// `GET /mesh/credits/epochs/{epoch}`: one close with its allocation table.
async fn get(s: &Services, req: Request) -> Result<Response, Error> {
    Ok(ok_json(&epoch_json(s, epoch_param(&req)?, true).await?))
}

/// `POST /mesh/credits/epochs/close`: close the epochs that have ended now
/// (an operator with step-up; the scheduled tick does the same).
async fn close_now(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    Ok(ok_json(&tick(s, &req.ctx).await?))
}

/// `POST /mesh/credits/epochs/{epoch}/signatures`: an active peer's
/// signature over the close entry (DSSE, its pinned coordinator key). The
/// signature is the authentication: it must verify over the exact payload.
async fn cosign(s: &Services, req: Request) -> Result<Response, Error> {
    let epoch = epoch_param(&req)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        origin: String,
        keyid: String,
        sig: String,
    }
    // Budgeted by address: a budget by the origin named in the body would
    // let anyone spend a peer's before its signature is checked.
    let who = edgecoder_kernel::ratelimit::ip_subject(&req.ctx).unwrap_or_else(|| "unknown".into());
    authn::charge(s, &format!("epoch-cosign:{who}"), 60).await?;
    let body: Body = req.json()?;
    let e = stored(s, epoch).await?.ok_or(Error::EpochNotFound)?;
    let peer = crate::store::peers::by_origin(s.sql.as_ref(), &body.origin)
        .await?
        .filter(|p| p.status() == crate::store::peers::PeerStatus::Active && !p.banned)
        .ok_or(Error::UnknownPeer)?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&peer.public_key)
        .map_err(|_| edgecoder_kernel::Error::Storage("a peer's pinned key".into()))?;
    let envelope = dsse::Envelope {
        payload: STANDARD.encode(e.payload.as_bytes()),
        payload_type: ISSUANCE_EPOCH_V1.to_owned(),
        signatures: vec![dsse::EnvelopeSignature {
            keyid: body.keyid.clone(),
            sig: body.sig.clone(),
        }],
    };
    if body.keyid != peer.key_id || envelope.open(ISSUANCE_EPOCH_V1, &key).is_err() {
        return Err(Error::Signature(edgecoder_proto::Error::Invalid));
    }
    s.sql
        .execute(Statement::new(
            "INSERT INTO econ_close_signatures (epoch, origin, key_id, signature, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (epoch, origin) DO UPDATE SET \
               key_id = excluded.key_id, signature = excluded.signature, created_at = excluded.created_at \
             WHERE key_id <> excluded.key_id",
            vec![
                int(epoch),
                peer.origin.as_str().into(),
                body.keyid.as_str().into(),
                body.sig.as_str().into(),
                Value::Integer(s.clock.now_ms()),
            ],
        ))
        .await?;
    audit::note(
        s,
        &req.ctx,
        &format!("peer:{}", peer.origin),
        "mesh.epoch.cosign",
        Some(&epoch.to_string()),
        Outcome::Success,
        json!({"keyid": body.keyid}),
    )
    .await?;
    let made_final = advance(s, &req.ctx, epoch).await?;
    Ok(ok_json(
        &json!({"epoch": epoch, "final": made_final || stored(s, epoch).await?.is_some_and(|e| e.is_final)}),
    ))
}

/// What a peer's log says about the economy, as the federation pull reads
/// (and proves) it, a page starting at `start` at a time: its completions'
/// priced work, kept per payee (a task once, at its first accepted
/// completion) until a close covers them, and its closes, each checked here
/// and signed only if it is one this coordinator would have made: the
/// network's epoch length and pool, an epoch that has ended and follows the
/// last one checked, a range that starts where that one ended with no work
/// left out, and the allocation digest its completions give. A close that
/// fails is recorded and audited (`mesh.epoch.peer_mismatch`), never signed.
/// Cosigning vouches for the arithmetic over what the peer logged; it cannot
/// tell whether the peer's own completions were real.
pub async fn take_peer_entries(
    s: &Services,
    ctx: &RequestContext,
    origin: &str,
    start: u64,
    entries: &[(u64, String, Vec<u8>)],
) -> Result<usize, Error> {
    // Reading starts here: earlier work is unknown to this coordinator.
    s.sql
        .execute(Statement::new(
            "INSERT INTO econ_peer_state (origin, first_index) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            vec![origin.into(), int(start)],
        ))
        .await?;
    let mut stmts = Vec::new();
    for (index, t, payload) in entries {
        if t != TASK_COMPLETION_V1 {
            continue;
        }
        let Ok(c) = serde_json::from_slice::<Completion>(payload) else {
            continue;
        };
        // Work beyond any price this network could charge is not work.
        if c.work.is_some_and(|w| w > 1 << 40) {
            continue;
        }
        let task = c.task_id.clone();
        let shares = economy::epoch_work(&[(*index, c)], *index, index + 1);
        if shares.is_empty() {
            continue;
        }
        stmts.push(Statement::new(
            "INSERT INTO econ_peer_tasks (origin, task_id, idx) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            vec![origin.into(), task.as_str().into(), int(*index)],
        ));
        for (account, work) in shares {
            stmts.push(Statement::new(
                "INSERT INTO econ_peer_work (origin, idx, task_id, account, work) \
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS \
                   (SELECT 1 FROM econ_peer_tasks WHERE origin = ?1 AND task_id = ?3 AND idx = ?2) \
                 ON CONFLICT DO NOTHING",
                vec![
                    origin.into(),
                    int(*index),
                    task.as_str().into(),
                    account.into(),
                    int(work),
                ],
            ));
        }
    }
    for chunk in stmts.chunks(200) {
        s.sql.batch(chunk.to_vec()).await?;
    }
    let mut signed = 0;
    for (index, t, payload) in entries {
        if t != ISSUANCE_EPOCH_V1 {
            continue;
        }
        if let Ok(close @ EpochEntry::Close { .. }) = serde_json::from_slice::<EpochEntry>(payload)
        {
            // A close this coordinator cannot judge is refused, not a
            // reason to stop reading the peer's log.
            match check_peer_close(s, ctx, origin, *index, &close, payload).await {
                Ok(true) => signed += 1,
                Ok(false) => {}
                Err(e) => {
                    let _ = refuse(
                        s,
                        ctx,
                        origin,
                        *index,
                        &close,
                        "unverifiable",
                        &e.to_string(),
                    )
                    .await;
                }
            }
        }
    }
    Ok(signed)
}

/// Records (and audits) a peer's close that this coordinator will not sign.
async fn refuse(
    s: &Services,
    ctx: &RequestContext,
    origin: &str,
    index: u64,
    close: &EpochEntry,
    verdict: &str,
    why: &str,
) -> Result<(), Error> {
    let EpochEntry::Close {
        epoch,
        allocation_digest: digest,
        ..
    } = close
    else {
        return Ok(());
    };
    s.sql
        .execute(Statement::new(
            "INSERT INTO econ_peer_closes (origin, epoch, close_index, verdict, reason, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            vec![
                origin.into(),
                int(*epoch),
                int(index),
                verdict.into(),
                why.into(),
                Value::Integer(s.clock.now_ms()),
            ],
        ))
        .await?;
    audit::note(
        s,
        ctx,
        &format!("peer:{origin}"),
        "mesh.epoch.peer_mismatch",
        Some(&epoch.to_string()),
        Outcome::Denied,
        json!({"close_index": index, "logged_digest": digest, "verdict": verdict, "reason": why}),
    )
    .await?;
    Ok(())
}

/// Checks a peer's close against the work read from its log and the
/// network's terms, signs it when it holds, and delivers the signature;
/// whether it was signed.
async fn check_peer_close(
    s: &Services,
    ctx: &RequestContext,
    origin: &str,
    index: u64,
    close: &EpochEntry,
    payload: &[u8],
) -> Result<bool, Error> {
    let EpochEntry::Close {
        epoch,
        epoch_secs,
        from_index,
        through_index,
        pool,
        accounts,
        total_work,
        allocation_digest: digest,
    } = close
    else {
        return Ok(false);
    };
    let settings = Settings::of(s)?;
    let state = s
        .sql
        .execute(Statement::new(
            "SELECT first_index, last_epoch, last_through FROM econ_peer_state WHERE origin = ?1",
            vec![origin.into()],
        ))
        .await?;
    let first = uint(state.get_i64(0, "first_index"));
    let last_epoch = state
        .get_i64(0, "last_epoch")
        .and_then(|e| u64::try_from(e).ok());
    let boundary = state
        .get_i64(0, "last_through")
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(first);
    let now_s = u64::try_from(s.clock.now_ms() / 1000).unwrap_or(0);
    let terms = if u64::try_from(settings.epoch_secs).ok() != Some(*epoch_secs)
        || u64::try_from(settings.epoch_pool).ok() != Some(*pool)
    {
        Some("its epoch length or pool is not this network's")
    } else if epoch.saturating_add(1).saturating_mul(*epoch_secs) > now_s {
        Some("the epoch has not ended")
    } else if last_epoch.is_some_and(|l| *epoch <= l) {
        Some("the epoch does not follow the last one checked")
    } else if *from_index < boundary || through_index < from_index || *through_index > index {
        Some(
            "its range overlaps the last close, starts before this coordinator read the log, or does not end before the close",
        )
    } else {
        None
    };
    if let Some(why) = terms {
        refuse(s, ctx, origin, index, close, "mismatch", why).await?;
        return Ok(false);
    }
    let sum = |from: u64, to: u64| {
        Statement::new(
            "SELECT account, SUM(work) AS work FROM econ_peer_work \
             WHERE origin = ?1 AND idx >= ?2 AND idx < ?3 GROUP BY account",
            vec![origin.into(), int(from), int(to)],
        )
    };
    let got = s
        .sql
        .batch(vec![
            sum(boundary, *from_index),
            sum(*from_index, *through_index),
        ])
        .await?;
    let (Some(gap), Some(rows)) = (got.first(), got.get(1)) else {
        return Ok(false);
    };
    if !gap.rows.is_empty() {
        refuse(
            s,
            ctx,
            origin,
            index,
            close,
            "mismatch",
            "work before its range is in no epoch",
        )
        .await?;
        return Ok(false);
    }
    let work: std::collections::BTreeMap<String, u64> = (0..rows.rows.len())
        .map(|i| {
            (
                rows.get_str(i, "account").unwrap_or_default().to_owned(),
                uint(rows.get_i64(i, "work")),
            )
        })
        .collect();
    let table = allocate(*pool, &work);
    let recomputed = allocation_digest(*epoch, *pool, &table);
    let matches = recomputed == *digest
        && *accounts == u64::try_from(table.len()).unwrap_or(u64::MAX)
        && *total_work == table.iter().fold(0u64, |a, r| a.saturating_add(r.work));
    if !matches {
        refuse(
            s,
            ctx,
            origin,
            index,
            close,
            "mismatch",
            &format!("its completions give {recomputed}"),
        )
        .await?;
        return Ok(false);
    }
    let Some(key) = &settings.coordinator_keys.current else {
        return Ok(false);
    };
    let sealed = dsse::seal(ISSUANCE_EPOCH_V1, payload, &[key.ecdsa()])
        .signatures
        .into_iter()
        .next();
    let Some(sealed) = sealed else {
        return Ok(false);
    };
    s.sql
        .batch(vec![
            Statement::new(
                "INSERT INTO econ_peer_closes (origin, epoch, close_index, verdict, key_id, signature, created_at) \
                 VALUES (?1, ?2, ?3, 'signed', ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                vec![
                    origin.into(),
                    int(*epoch),
                    int(index),
                    sealed.keyid.as_str().into(),
                    sealed.sig.as_str().into(),
                    Value::Integer(s.clock.now_ms()),
                ],
            ),
            Statement::new(
                "UPDATE econ_peer_state SET last_epoch = ?2, last_through = ?3 WHERE origin = ?1",
                vec![origin.into(), int(*epoch), int(*through_index)],
            ),
            // Everything a later close could count starts at this one's end.
            Statement::new(
                "DELETE FROM econ_peer_work WHERE origin = ?1 AND idx < ?2",
                vec![origin.into(), int(*through_index)],
            ),
        ])
        .await?;
    let _ = deliver(s, origin, *epoch).await;
    Ok(true)
}

/// Sends this coordinator's signature over a peer's close to that peer.
async fn deliver(s: &Services, origin: &str, epoch: u64) -> Result<(), Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT key_id, signature FROM econ_peer_closes \
             WHERE origin = ?1 AND epoch = ?2 AND verdict = 'signed' AND delivered = 0",
            vec![origin.into(), int(epoch)],
        ))
        .await?;
    let (Some(keyid), Some(sig)) = (rows.get_str(0, "key_id"), rows.get_str(0, "signature")) else {
        return Ok(());
    };
    let me = Settings::of(s)?.origin()?.to_owned();
    let body = json!({"origin": me, "keyid": keyid, "sig": sig}).to_string();
    let resp = s
        .outbound
        .send(edgecoder_kernel::OutboundRequest {
            method: Method::POST,
            url: format!("{origin}/mesh/credits/epochs/{epoch}/signatures"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        })
        .await
        .map_err(|e| Error::PeerUnreachable(e.to_string()))?;
    if resp.status != 200 {
        return Err(Error::PeerUnreachable(format!(
            "{origin} took no signature for epoch {epoch}: {}",
            resp.status
        )));
    }
    s.sql
        .execute(Statement::new(
            "UPDATE econ_peer_closes SET delivered = 1 WHERE origin = ?1 AND epoch = ?2",
            vec![origin.into(), int(epoch)],
        ))
        .await?;
    Ok(())
}

/// Signatures over peers' closes that could not be delivered yet.
async fn redeliver(s: &Services) -> Result<usize, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT origin, epoch FROM econ_peer_closes WHERE verdict = 'signed' AND delivered = 0 \
             ORDER BY created_at LIMIT 16",
            vec![],
        ))
        .await?;
    let mut sent = 0;
    for i in 0..rows.rows.len() {
        let origin = rows.get_str(i, "origin").unwrap_or_default().to_owned();
        if deliver(s, &origin, uint(rows.get_i64(i, "epoch")))
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    Ok(sent)
}

/// The epoch routes.
pub fn routes(r: Router) -> Router {
    let epoch_schema = json!({"type": "object", "properties": {
        "epoch": {"type": "integer"}, "state": {"enum": ["pending", "final"]},
        "pool": {"type": "integer"}, "allocation_digest": {"type": "string"},
        "close": {"type": "object"}, "allocations": {"type": "array"},
    }});
    r.route(
        Method::GET,
        "/mesh/credits/epochs",
        endpoint(|s, r| async move { list(&s, r).await }),
        DOCS.op(
            "mesh_credit_epochs",
            "Issuance epochs, newest first, with state (pending until the quorum signed), pool, allocation digest and the close's signatures (public)",
            None,
            vec![ok(200, "{epoch_secs, pool, quorum, epochs}"), err(400, "invalid_request")],
        ),
    )
    .route(
        Method::GET,
        "/mesh/credits/epochs/{epoch}",
        endpoint(|s, r| async move { get(&s, r).await }),
        DOCS.op(
            "mesh_credit_epoch",
            "One closed epoch with its allocation table (public)",
            None,
            vec![
                ok(200, "the epoch").with_schema(epoch_schema),
                err(404, "epoch_not_found"),
            ],
        ),
    )
    .route(
        Method::POST,
        "/mesh/credits/epochs/close",
        endpoint(|s, r| async move { close_now(&s, r).await }),
        DOCS.op(
            "mesh_credit_epochs_close",
            "Close the epochs that have ended, now (operator with step-up; the schedule does it too)",
            None,
            vec![
                ok(200, "{closed, final}"),
                err(401, "invalid_token"),
                err(403, "forbidden / step_up_required"),
            ],
        ),
    )
    .route(
        Method::POST,
        "/mesh/credits/epochs/{epoch}/signatures",
        endpoint(|s, r| async move { cosign(&s, r).await }),
        DOCS.op(
            "mesh_credit_epoch_cosign",
            "An active peer coordinator's DSSE signature over the close entry, by its pinned key",
            object(
                &["origin", "keyid", "sig"],
                json!({"origin": {"type": "string"}, "keyid": {"type": "string"}, "sig": {"type": "string"}}),
            ),
            vec![
                ok(200, "{epoch, final}"),
                err(401, "unknown_peer / signature_invalid"),
                err(404, "epoch_not_found"),
            ],
        ),
    )
}
