//! Credits: double-entry accounts and transfers, each recorded in SQL and as
//! a `credit-transfer/v1` entry in the transparency log.
//!
//! In scope: account naming (`user:<id>`, `node:<id>`, and the system
//! accounts `issuance` and `fees`), transfers whose postings sum to zero,
//! the no-overdraft rule (only `issuance` may go negative), idempotency keys,
//! and reading balances and postings. Out of scope: where credits come from
//! (task completions, issuance epochs: the mesh and economy issues) and
//! receipts (next).
//!
//! A transfer is one batch: the transfer row is inserted only if its key is
//! new and no posting would overdraw a protected account; every posting keys
//! on that row, so either all of them apply or none does.

use edgecoder_kernel::http::{json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, ok, response_doc};
use edgecoder_kernel::{Request, Response, Router, Services};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::{DOCS, Error, store};

/// The log entry type of a transfer.
pub const CREDIT_TRANSFER_V1: &str = "edgecoder.dev/credit-transfer/v1";
/// Most postings in one transfer.
pub const MAX_POSTINGS: usize = 16;
/// System accounts (created by the migration).
pub const SYSTEM_ACCOUNTS: [&str; 2] = ["issuance", "fees"];
/// Elevated operations need an authentication this recent (as in auth).
const STEP_UP_WINDOW_SECS: i64 = 10 * 60;

/// Who is calling.
enum Caller {
    Admin { sub: String, auth_time: i64 },
    User { sub: String },
}

/// The caller, with roles as the identity function holds them now (a
/// revoked session or role is refused at once, whatever the token claims).
/// No function moves credits over HTTP, so no service token is accepted.
async fn caller(s: &Services, req: &Request) -> Result<Caller, Error> {
    let token = req.bearer().ok_or(Error::Unauthorized)?;
    let c = s.identity.caller(token).await?.ok_or(Error::Unauthorized)?;
    if c.has_role("system_admin") {
        Ok(Caller::Admin {
            sub: c.user_id,
            auth_time: c.auth_time,
        })
    } else {
        Ok(Caller::User { sub: c.user_id })
    }
}

/// The kind of a valid account id, or `None`.
pub fn account_kind(id: &str) -> Option<&'static str> {
    if SYSTEM_ACCOUNTS.contains(&id) {
        return Some("system");
    }
    let (kind, rest) = id.split_once(':')?;
    let ok = !rest.is_empty()
        && rest.len() <= 128
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match (kind, ok) {
        ("user", true) => Some("user"),
        ("node", true) => Some("node"),
        _ => None,
    }
}

/// One leg of a transfer.
#[derive(Debug, Clone, Deserialize)]
pub struct Posting {
    account: String,
    amount: i64,
}

/// `POST /ledger/transfers` body.
#[derive(Deserialize)]
pub struct TransferBody {
    postings: Vec<Posting>,
    idempotency_key: String,
    memo: Option<String>,
}

fn check(body: &TransferBody) -> Result<(), Error> {
    let p = &body.postings;
    if p.len() < 2 || p.len() > MAX_POSTINGS {
        return Err(Error::InvalidTransfer("a transfer has 2 to 16 postings"));
    }
    if p.iter().any(|x| account_kind(&x.account).is_none()) {
        return Err(Error::InvalidTransfer(
            "accounts are user:<id>, node:<id>, issuance or fees",
        ));
    }
    if p.iter()
        .any(|x| x.amount == 0 || x.amount.unsigned_abs() > 1 << 50)
    {
        return Err(Error::InvalidTransfer(
            "amounts are non-zero and below 2^50",
        ));
    }
    let mut ids: Vec<&str> = p.iter().map(|x| x.account.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != p.len() {
        return Err(Error::InvalidTransfer("each account appears once"));
    }
    if p.iter().map(|x| i128::from(x.amount)).sum::<i128>() != 0 {
        return Err(Error::InvalidTransfer("postings must sum to zero"));
    }
    if body.idempotency_key.is_empty() || body.idempotency_key.len() > 200 {
        return Err(Error::InvalidTransfer(
            "idempotency_key must be 1 to 200 bytes",
        ));
    }
    if body.memo.as_ref().is_some_and(|m| m.chars().count() > 500) {
        return Err(Error::InvalidTransfer("memo is at most 500 characters"));
    }
    Ok(())
}

fn transfer_json(t: &store::Transfer) -> Json {
    let postings: Vec<Json> = t
        .postings
        .iter()
        .map(|(account, amount)| json!({"account": account, "amount": amount}))
        .collect();
    json!({
        "id": t.id,
        "postings": postings,
        "memo": t.memo,
        "created_by": t.created_by,
        "created_at": t.created_at,
        "ledger_index": t.ledger_index,
    })
}

async fn stored_transfer(s: &Services, id: &str) -> Result<store::Transfer, Error> {
    store::transfer(s.sql.as_ref(), id)
        .await?
        .ok_or(Error::Corrupt("credit transfer without postings"))
}

/// Logs a committed transfer whose log append has not happened yet.
pub async fn log_pending(s: &Services, id: &str) -> Result<u64, Error> {
    log_transfer(s, id).await
}

/// Refuses (as not found) callers who are neither services, admins, nor a
/// user party to the transfer.
pub async fn may_see_transfer(s: &Services, req: &Request, id: &str) -> Result<(), Error> {
    let sub = match caller(s, req).await? {
        Caller::Admin { .. } => return Ok(()),
        Caller::User { sub } => sub,
    };
    if !store::is_party(s.sql.as_ref(), id, &format!("user:{sub}")).await? {
        return Err(Error::TransferNotFound);
    }
    Ok(())
}

/// Logs a committed transfer that has no log entry yet; returns its index.
async fn log_transfer(s: &Services, id: &str) -> Result<u64, Error> {
    let t = transfer_json(&stored_transfer(s, id).await?);
    if let Some(i) = t["ledger_index"].as_u64() {
        return Ok(i);
    }
    let payload = json!({"transfer": id, "postings": t["postings"], "memo": t["memo"], "by": t["created_by"]});
    let index = s
        .ledger
        .append(
            CREDIT_TRANSFER_V1,
            payload.to_string().as_bytes(),
            &format!("{CREDIT_TRANSFER_V1} {id}"),
        )
        .await?;
    store::set_ledger_index(s.sql.as_ref(), id, index).await?;
    Ok(index)
}

/// `POST /ledger/transfers`: admins with step-up.
pub async fn create(s: &Services, req: Request) -> Result<Response, Error> {
    let by = match caller(s, &req).await? {
        Caller::Admin { sub, auth_time } => {
            if s.clock.now_ms() / 1000 - auth_time > STEP_UP_WINDOW_SECS {
                return Err(Error::StepUpRequired);
            }
            format!("user:{sub}")
        }
        Caller::User { .. } => return Err(Error::Forbidden),
    };
    let body: TransferBody = req.json()?;
    check(&body)?;
    let now = s.clock.now_ms();
    let id = s.new_id();
    let key = format!("{by} {}", body.idempotency_key);
    let new = store::NewTransfer {
        id: &id,
        idempotency_key: &key,
        memo: body.memo.as_deref(),
        created_by: &by,
        now,
        postings: body
            .postings
            .iter()
            .map(|p| {
                let kind = account_kind(&p.account).filter(|k| matches!(*k, "user" | "node"));
                (p.account.as_str(), p.amount, kind)
            })
            .collect(),
    };
    let (tid, created) = match store::create(s.sql.as_ref(), &new).await? {
        store::Created::New(id) => (id, true),
        store::Created::Existing(id) => (id, false),
        store::Created::Overdraft => return Err(Error::InsufficientCredits),
    };
    if !created {
        let first = stored_transfer(s, &tid).await?;
        let mut asked: Vec<(&str, i64)> = body
            .postings
            .iter()
            .map(|p| (p.account.as_str(), p.amount))
            .collect();
        asked.sort_unstable();
        let mut had: Vec<(&str, i64)> = first
            .postings
            .iter()
            .map(|(a, n)| (a.as_str(), *n))
            .collect();
        had.sort_unstable();
        if asked != had || first.memo != body.memo {
            return Err(Error::IdempotencyKeyReused);
        }
    }
    // A transfer committed earlier whose log append failed is logged now.
    log_transfer(s, &tid).await?;
    let mut t = transfer_json(&stored_transfer(s, &tid).await?);
    t["duplicate"] = json!(!created);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, edgecoder_kernel::http::JSON, &t))
}

fn may_read(c: &Caller, account: &str) -> bool {
    match c {
        Caller::Admin { .. } => true,
        Caller::User { sub } => account == format!("user:{sub}"),
    }
}

fn page_limit(req: &Request) -> Result<i64, Error> {
    match req.query_param("limit") {
        None => Ok(50),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or(Error::InvalidRange("limit must be 1 to 200")),
    }
}

async fn postings(
    s: &Services,
    account: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Json>, Error> {
    Ok(store::postings(s.sql.as_ref(), account, before, limit)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "transfer": p.transfer,
                "amount": p.amount,
                "created_at": p.created_at,
                "ledger_index": p.ledger_index,
                "memo": p.memo,
            })
        })
        .collect())
}

async fn readable_account(s: &Services, req: &Request) -> Result<(String, Json), Error> {
    let c = caller(s, req).await?;
    let account = req.param("id").unwrap_or_default().to_owned();
    // Someone else's account looks exactly like a missing one.
    if account_kind(&account).is_none() || !may_read(&c, &account) {
        return Err(Error::AccountNotFound);
    }
    let summary = match store::account(s.sql.as_ref(), &account).await? {
        Some((kind, balance)) => {
            json!({"id": account, "kind": kind, "balance": balance})
        }
        // An account nobody has paid yet: zero, not an error.
        None => json!({"id": account, "kind": account_kind(&account), "balance": 0}),
    };
    Ok((account, summary))
}

/// `GET /ledger/accounts/{id}`: balance and the latest postings.
pub async fn account(s: &Services, req: Request) -> Result<Response, Error> {
    let (id, mut summary) = readable_account(s, &req).await?;
    summary["recent"] = json!(postings(s, &id, None, 20).await?);
    Ok(ok_json(&summary))
}

/// `GET /ledger/accounts/{id}/transfers?limit=&before=`.
pub async fn account_transfers(s: &Services, req: Request) -> Result<Response, Error> {
    let (id, _) = readable_account(s, &req).await?;
    let limit = page_limit(&req)?;
    let before = match req.query_param("before") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| Error::InvalidRange("before is a time in ms"))?,
        ),
    };
    let items = postings(s, &id, before, limit).await?;
    let next = (i64::try_from(items.len()).ok() == Some(limit))
        .then(|| items.last().and_then(|p| p["created_at"].as_i64()))
        .flatten();
    Ok(ok_json(
        &json!({"id": id, "postings": items, "next_before": next}),
    ))
}

fn posting_schema() -> Json {
    let account =
        json!({"type": "string", "description": "user:<id>, node:<id>, issuance or fees"});
    json!({
        "type": "object",
        "required": ["account", "amount"],
        "properties": {"account": account, "amount": {"type": "integer"}},
    })
}

fn create_doc() -> RouteDoc {
    let body = json!({
        "type": "object",
        "required": ["postings", "idempotency_key"],
        "properties": {
            "postings": {"type": "array", "minItems": 2, "maxItems": 16, "items": posting_schema()},
            "idempotency_key": {"type": "string", "maxLength": 200},
            "memo": {"type": "string", "maxLength": 500},
        },
    });
    let transfer = json!({
        "type": "object",
        "required": ["id", "postings"],
        "properties": {
            "id": {"type": "string"},
            "postings": {"type": "array", "items": posting_schema()},
            "memo": {"type": ["string", "null"]},
            "created_by": {"type": "string"},
            "created_at": {"type": "integer"},
            "ledger_index": {"type": ["integer", "null"]},
            "duplicate": {"type": "boolean"},
        },
    });
    let summary = "A balanced transfer (services, or system_admin with step-up); also a credit-transfer/v1 log entry";
    DOCS.op(
        "ledger_transfer",
        summary,
        Some(body),
        vec![
            ok(201, "the transfer").with_schema(transfer.clone()),
            ok(200, "the idempotency key was used before: that transfer").with_schema(transfer),
            err(400, "invalid_transfer"),
            err(401, "ledger_unauthorized"),
            err(403, "forbidden / step_up_required"),
            err(409, "insufficient_credits"),
            err(422, "idempotency_key_reused"),
        ],
    )
}

fn account_docs() -> (RouteDoc, RouteDoc) {
    let account = json!({
        "type": "object",
        "required": ["id", "balance"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "balance": {"type": "integer"},
            "recent": {"type": "array"},
        },
    });
    let page = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "postings": {"type": "array"},
            "next_before": {"type": ["integer", "null"]},
        },
    });
    (
        DOCS.op(
            "ledger_account",
            "Balance and latest postings (the owner, admins, services)",
            None,
            vec![
                ok(200, "the account").with_schema(account),
                err(401, "ledger_unauthorized"),
                err(404, "account_not_found"),
            ],
        ),
        DOCS.op(
            "ledger_account_transfers",
            "Postings, newest first (?limit=&before=)",
            None,
            vec![
                ok(200, "a page").with_schema(page),
                err(400, "invalid_range"),
                err(401, "ledger_unauthorized"),
                err(404, "account_not_found"),
            ],
        ),
    )
}

/// The credit routes: transfers, their receipts and accounts.
pub fn routes(r: Router) -> Router {
    let summary = "A c2sp.org/tlog-proof of the transfer: its log entry (extra), inclusion proof and a signed checkpoint covering it (parties, admins, services)";
    let receipt = "the receipt, c2sp.org/tlog-proof@v1 (text)";
    let receipt_doc = DOCS.op(
        "ledger_transfer_receipt",
        summary,
        None,
        vec![
            response_doc(200, receipt, Some("text/plain")),
            err(401, "ledger_unauthorized"),
            err(404, "transfer_not_found"),
            err(503, "history_rewritten"),
        ],
    );
    let (account_doc, transfers_doc) = account_docs();
    r.route(
        Method::POST,
        "/ledger/transfers",
        endpoint(|s, r| async move { create(&s, r).await }),
        create_doc(),
    )
    .route(
        Method::GET,
        "/ledger/transfers/{id}/receipt",
        endpoint(|s, r| async move { crate::api::receipt(&s, r).await }),
        receipt_doc,
    )
    .route(
        Method::GET,
        "/ledger/accounts/{id}",
        endpoint(|s, r| async move { account(&s, r).await }),
        account_doc,
    )
    .route(
        Method::GET,
        "/ledger/accounts/{id}/transfers",
        endpoint(|s, r| async move { account_transfers(&s, r).await }),
        transfers_doc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(postings: &[(&str, i64)]) -> TransferBody {
        TransferBody {
            postings: postings
                .iter()
                .map(|(a, n)| Posting {
                    account: (*a).into(),
                    amount: *n,
                })
                .collect(),
            idempotency_key: "k".into(),
            memo: None,
        }
    }

    #[test]
    fn transfers_must_balance_and_name_real_accounts() {
        assert!(check(&body(&[("issuance", -5), ("user:abc", 5)])).is_ok());
        assert!(check(&body(&[("issuance", -5), ("user:abc", 4)])).is_err());
        assert!(check(&body(&[("issuance", -5)])).is_err());
        assert!(check(&body(&[("bank", -5), ("user:abc", 5)])).is_err());
        assert!(check(&body(&[("user:a", -5), ("user:a", 5)])).is_err());
        assert!(check(&body(&[("user:a", 0), ("user:b", 0)])).is_err());
        assert!(check(&body(&[("user:a", i64::MIN), ("user:b", i64::MAX)])).is_err());
        assert!(account_kind("node:gpu-1").is_some());
        assert!(account_kind("user:").is_none());
        assert!(account_kind("user:a b").is_none());
    }
}
