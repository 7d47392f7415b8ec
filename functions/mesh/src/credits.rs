//! The credit routes, under `/mesh/credits/`: the published price table,
//! balances (available, escrowed, pending) and histories with receipts,
//! transfers between users, the one bootstrap grant, and the books' totals.
//!
//! There is no route that takes credits out of `issuance` except the
//! bootstrap grant, made once per deployment by a system_admin with step-up
//! and logged like every transfer; everything else comes from epochs
//! (`epochs`). Users move only their own available credits. Owners read their
//! own account, operators (coordinator_owner, system_admin) read all; someone
//! else's account looks exactly like a missing one.
//!
//! Out of scope: escrow, payment and refund (`economy`, with the tasks).

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services};
use edgecoder_proto::economy::MAX_AMOUNT;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::economy::{ESCROW, FEES, ISSUANCE, log_transfer};
use crate::store::credits::{self as db, Created, NewTransfer};
use crate::{DOCS, Error, Settings, authn};

/// The idempotency key of the one bootstrap grant.
const BOOTSTRAP_KEY: &str = "bootstrap-grant";

/// The kind of a valid account id, or `None`.
pub fn account_kind(id: &str) -> Option<&'static str> {
    if [ISSUANCE, FEES, ESCROW].contains(&id) {
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
        _ => None,
    }
}

/// `GET /mesh/credits/prices` (public).
async fn prices(s: &Services) -> Result<Response, Error> {
    let settings = Settings::of(s)?;
    Ok(ok_json(&json!({
        "unit": "credit",
        "formula": "base + per_second * ceil(timeout_ms / 1000) + per_256_mib * ceil(memory_mb / 256), per replica",
        "fee_bps": settings.prices.fee_bps,
        "kinds": settings.prices.kinds,
        "max_replicas": edgecoder_proto::economy::MAX_REPLICAS,
    })))
}

/// The account in the path, if the caller may read it.
async fn readable(s: &Services, req: &Request) -> Result<String, Error> {
    let caller = authn::bearer(s, req).await?;
    let account = req.param("id").unwrap_or_default().to_owned();
    let own = account == caller.actor();
    if account_kind(&account).is_none() || !(own || caller.is_operator()) {
        return Err(Error::AccountNotFound);
    }
    Ok(account)
}

fn receipt_path(index: Option<i64>) -> Json {
    index.map_or(Json::Null, |i| {
        json!(format!("/ledger/entries/{i}/receipt"))
    })
}

/// `GET /mesh/credits/accounts/{id}`.
async fn account(s: &Services, req: Request) -> Result<Response, Error> {
    let id = readable(s, &req).await?;
    let b = db::balance(s.sql.as_ref(), &id).await?.unwrap_or_default();
    Ok(ok_json(&json!({
        "id": id,
        "kind": account_kind(&id),
        "balance": b.available,
        "available": b.available,
        "escrowed": b.escrowed,
        "pending": b.pending,
    })))
}

/// `GET /mesh/credits/accounts/{id}/transfers?limit=&before=`: postings,
/// newest first, each with its transfer's log index and receipt.
async fn history(s: &Services, req: Request) -> Result<Response, Error> {
    let id = readable(s, &req).await?;
    let bad = |m: &str| Error::Kernel(edgecoder_kernel::Error::InvalidRequest(m.to_owned()));
    let limit = match req.query_param("limit") {
        None => 50,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| bad("limit must be 1 to 200."))?,
    };
    let before = match req.query_param("before") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| bad("before is a time in milliseconds."))?,
        ),
    };
    let items: Vec<Json> = db::postings(s.sql.as_ref(), &id, before, limit)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "transfer": p.transfer,
                "amount": p.amount,
                "created_at": p.created_at,
                "memo": p.memo,
                "ledger_index": p.ledger_index,
                "receipt": receipt_path(p.ledger_index),
            })
        })
        .collect();
    let next = (i64::try_from(items.len()).ok() == Some(limit))
        .then(|| items.last().and_then(|p| p["created_at"].as_i64()))
        .flatten();
    Ok(ok_json(
        &json!({"id": id, "postings": items, "next_before": next}),
    ))
}

fn transfer_json(t: &db::Transfer) -> Json {
    let index = t.ledger_index.and_then(|i| i64::try_from(i).ok());
    json!({
        "id": t.id,
        "postings": t.postings.iter().map(|(a, n)| json!({"account": a, "amount": n})).collect::<Vec<_>>(),
        "memo": t.memo,
        "created_by": t.created_by,
        "created_at": t.created_at,
        "ledger_index": index,
        "receipt": receipt_path(index),
    })
}

/// `GET /mesh/credits/transfers/{id}`: its parties and operators.
async fn transfer(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    if !caller.is_operator() && !db::is_party(s.sql.as_ref(), &id, &caller.actor()).await? {
        return Err(Error::TransferNotFound);
    }
    let mut t = db::transfer(s.sql.as_ref(), &id)
        .await?
        .ok_or(Error::TransferNotFound)?;
    if t.ledger_index.is_none()
        && let Ok(i) = log_transfer(s, &id).await
    {
        t.ledger_index = Some(i);
    }
    Ok(ok_json(&transfer_json(&t)))
}

/// `POST /mesh/credits/transfers` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    to: String,
    amount: i64,
    idempotency_key: String,
    #[serde(default)]
    memo: Option<String>,
}

/// Makes `t` (or finds the one its key made) and answers with it; a key
/// reused with other postings or memo is refused.
async fn made(
    s: &Services,
    t: &NewTransfer<'_>,
    action: &str,
    req: &Request,
) -> Result<Response, Error> {
    let (id, created) = match db::create(s.sql.as_ref(), t, Vec::new()).await? {
        Created::New => (t.id.to_owned(), true),
        Created::Existing(id) => (id, false),
        Created::Refused => {
            return Err(audit::denied(
                s,
                &req.ctx,
                t.created_by,
                action,
                None,
                json!({"reason": "insufficient_credits"}),
                Error::InsufficientCredits,
            )
            .await);
        }
    };
    let first = db::transfer(s.sql.as_ref(), &id)
        .await?
        .ok_or(Error::TransferNotFound)?;
    if !created {
        let mut asked: Vec<(String, i64)> = t
            .postings
            .iter()
            .map(|(a, n, _)| ((*a).to_owned(), *n))
            .collect();
        asked.sort();
        if asked != first.postings || first.memo.as_deref() != t.memo {
            return Err(Error::IdempotencyKeyReused);
        }
    } else {
        audit::note(
            s,
            &req.ctx,
            t.created_by,
            action,
            Some(&id),
            Outcome::Success,
            json!({"postings": transfer_json(&first)["postings"]}),
        )
        .await?;
    }
    let mut body = transfer_json(&first);
    if let Ok(i) = log_transfer(s, &id).await {
        body["ledger_index"] = json!(i);
        body["receipt"] = receipt_path(i64::try_from(i).ok());
    }
    body["duplicate"] = json!(!created);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, JSON, &body))
}

fn check_key_and_memo(key: &str, memo: Option<&str>) -> Result<(), Error> {
    if key.is_empty() || key.len() > 200 {
        return Err(Error::InvalidTransfer(
            "idempotency_key must be 1 to 200 bytes",
        ));
    }
    if memo.is_some_and(|m| m.chars().count() > 500 || m.chars().any(char::is_control)) {
        return Err(Error::InvalidTransfer(
            "memo is at most 500 printable characters",
        ));
    }
    Ok(())
}

/// `POST /mesh/credits/transfers`: a user sends some of their own
/// available credits to another user.
async fn send(s: &Services, req: Request) -> Result<Response, Error> {
    // A verified user whose account is not banned.
    let caller = authn::submitter(s, &req).await?;
    let body: Send = req.json()?;
    let from = caller.actor();
    if account_kind(&body.to) != Some("user") || body.to == from {
        return Err(Error::InvalidTransfer(
            "to is another user's account, user:<id>",
        ));
    }
    if !(1..=MAX_AMOUNT).contains(&body.amount) {
        return Err(Error::InvalidTransfer("amount is 1 to 2^50"));
    }
    check_key_and_memo(&body.idempotency_key, body.memo.as_deref())?;
    let id = s.new_id();
    let key = format!("{from} {}", body.idempotency_key);
    let t = NewTransfer {
        id: &id,
        idempotency_key: &key,
        memo: body.memo.as_deref(),
        created_by: &from,
        now: s.clock.now_ms(),
        postings: vec![
            (&from, -body.amount, Some("user")),
            (&body.to, body.amount, Some("user")),
        ],
        guard: None,
    };
    made(s, &t, "mesh.credits.transfer", &req).await
}

/// `POST /mesh/credits/bootstrap` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    account: String,
    amount: i64,
}

/// `POST /mesh/credits/bootstrap`: the deployment's one grant out of
/// `issuance` (a system_admin with step-up). Repeating the same grant
/// answers with it; any other is refused.
async fn bootstrap(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    if !caller.has_role("system_admin") {
        return Err(Error::Forbidden);
    }
    let body: Bootstrap = req.json()?;
    if account_kind(&body.account) != Some("user") {
        return Err(Error::InvalidTransfer("account is a user's, user:<id>"));
    }
    if !(1..=MAX_AMOUNT).contains(&body.amount) {
        return Err(Error::InvalidTransfer("amount is 1 to 2^50"));
    }
    let by = format!("user:{}", caller.user_id);
    let memo = "bootstrap grant";
    let postings = vec![
        (ISSUANCE, -body.amount, None),
        (body.account.as_str(), body.amount, Some("user")),
    ];
    if let Some(existing) = db::by_key(s.sql.as_ref(), BOOTSTRAP_KEY).await? {
        let first = db::transfer(s.sql.as_ref(), &existing)
            .await?
            .ok_or(Error::TransferNotFound)?;
        let mut asked: Vec<(String, i64)> = postings
            .iter()
            .map(|(a, n, _)| ((*a).to_owned(), *n))
            .collect();
        asked.sort();
        if asked != first.postings {
            return Err(audit::denied(
                s,
                &req.ctx,
                &by,
                "mesh.credits.bootstrap",
                Some(&existing),
                json!({"reason": "bootstrap_done"}),
                Error::BootstrapDone,
            )
            .await);
        }
    }
    let id = s.new_id();
    let t = NewTransfer {
        id: &id,
        idempotency_key: BOOTSTRAP_KEY,
        memo: Some(memo),
        created_by: &by,
        now: s.clock.now_ms(),
        postings,
        guard: None,
    };
    match made(s, &t, "mesh.credits.bootstrap", &req).await {
        Err(Error::IdempotencyKeyReused) => Err(Error::BootstrapDone),
        other => other,
    }
}

/// `GET /mesh/credits/supply`: the books' totals (operators): every balance
/// sums to zero, what `issuance` has issued is what users, fees and escrow
/// hold, and no protected account is below zero.
async fn supply(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    if !caller.is_operator() {
        return Err(Error::Forbidden);
    }
    let t = db::supply(s.sql.as_ref()).await?;
    Ok(ok_json(&json!({
        "sum": t.sum,
        "issued": t.issued,
        "escrow": t.escrow,
        "escrowed_tasks": t.escrowed_tasks,
        "fees": t.fees,
        "negative_accounts": t.negative,
        "balanced": t.sum == 0 && t.negative == 0 && t.escrow == t.escrowed_tasks,
    })))
}

/// The credit routes.
pub fn routes(r: Router) -> Router {
    let account_schema = json!({"type": "object", "required": ["id", "available", "escrowed", "pending"], "properties": {
        "id": {"type": "string"}, "kind": {"type": "string"}, "balance": {"type": "integer"},
        "available": {"type": "integer"}, "escrowed": {"type": "integer"}, "pending": {"type": "integer"},
    }});
    let transfer_schema = json!({"type": "object", "required": ["id", "postings"], "properties": {
        "id": {"type": "string"}, "postings": {"type": "array"}, "memo": {"type": ["string", "null"]},
        "created_by": {"type": "string"}, "created_at": {"type": "integer"},
        "ledger_index": {"type": ["integer", "null"]}, "receipt": {"type": ["string", "null"]},
        "duplicate": {"type": "boolean"},
    }});
    let r = r
        .route(
            Method::GET,
            "/mesh/credits/prices",
            endpoint(|s, _r| async move { prices(&s).await }),
            DOCS.op(
                "mesh_credit_prices",
                "The published price table: what a task costs per replica, and the fee (public)",
                None,
                vec![ok(200, "{unit, formula, fee_bps, kinds, max_replicas}")],
            ),
        )
        .route(
            Method::GET,
            "/mesh/credits/accounts/{id}",
            endpoint(|s, r| async move { account(&s, r).await }),
            DOCS.op(
                "mesh_credit_account",
                "Balance: available, escrowed (for unsettled tasks) and pending (epochs awaiting their quorum); the owner or operators",
                None,
                vec![
                    ok(200, "the account").with_schema(account_schema),
                    err(401, "invalid_token"),
                    err(404, "account_not_found"),
                ],
            ),
        )
        .route(
            Method::GET,
            "/mesh/credits/accounts/{id}/transfers",
            endpoint(|s, r| async move { history(&s, r).await }),
            DOCS.op(
                "mesh_credit_history",
                "Postings, newest first (?limit=&before=), each with its log index and receipt (c2sp.org/tlog-proof at /ledger/entries/{index}/receipt)",
                None,
                vec![
                    ok(200, "{id, postings, next_before}"),
                    err(400, "invalid_request"),
                    err(401, "invalid_token"),
                    err(404, "account_not_found"),
                ],
            ),
        )
        .route(
            Method::POST,
            "/mesh/credits/transfers",
            endpoint(|s, r| async move { send(&s, r).await }),
            DOCS.op(
                "mesh_credit_send",
                "Send some of your own available credits to another user (a credit-transfer/v1 entry)",
                object(
                    &["to", "amount", "idempotency_key"],
                    json!({"to": {"type": "string"}, "amount": {"type": "integer", "minimum": 1},
                           "idempotency_key": {"type": "string", "maxLength": 200}, "memo": {"type": "string", "maxLength": 500}}),
                ),
                vec![
                    ok(201, "the transfer").with_schema(transfer_schema.clone()),
                    ok(200, "the idempotency key was used before: that transfer")
                        .with_schema(transfer_schema.clone()),
                    err(400, "invalid_transfer"),
                    err(401, "invalid_token"),
                    err(403, "forbidden (email unverified) / account_blacklisted"),
                    err(409, "insufficient_credits"),
                    err(422, "idempotency_key_reused"),
                ],
            ),
        )
        .route(
            Method::GET,
            "/mesh/credits/transfers/{id}",
            endpoint(|s, r| async move { transfer(&s, r).await }),
            DOCS.op(
                "mesh_credit_transfer",
                "One transfer with its log index and receipt (its parties, operators)",
                None,
                vec![
                    ok(200, "the transfer").with_schema(transfer_schema.clone()),
                    err(401, "invalid_token"),
                    err(404, "transfer_not_found"),
                ],
            ),
        )
        .route(
            Method::POST,
            "/mesh/credits/bootstrap",
            endpoint(|s, r| async move { bootstrap(&s, r).await }),
            DOCS.op(
                "mesh_credit_bootstrap",
                "The deployment's one bootstrap grant out of issuance (system_admin with step-up; logged)",
                object(
                    &["account", "amount"],
                    json!({"account": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}}),
                ),
                vec![
                    ok(201, "the grant").with_schema(transfer_schema.clone()),
                    ok(200, "the same grant, made before").with_schema(transfer_schema),
                    err(400, "invalid_transfer"),
                    err(401, "invalid_token"),
                    err(403, "forbidden / step_up_required"),
                    err(409, "bootstrap_done"),
                ],
            ),
        )
        .route(
            Method::GET,
            "/mesh/credits/supply",
            endpoint(|s, r| async move { supply(&s, r).await }),
            DOCS.op(
                "mesh_credit_supply",
                "The books' totals: sum of balances, issued, escrow, fees, accounts below zero (operators)",
                None,
                vec![
                    ok(200, "{sum, issued, escrow, escrowed_tasks, fees, negative_accounts, balanced}"),
                    err(401, "invalid_token"),
                    err(403, "forbidden"),
                ],
            ),
        );
    crate::epochs::routes(r)
}
