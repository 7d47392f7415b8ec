//! Credits that move with tasks: the escrow a submission makes, the payment
//! an accepted result earns the node owners, and the refund a failed or
//! expired task gets back.
//!
//! In scope: pricing a submission from the published table (what the
//! submitter declared, never what a node reports), the escrow statements
//! that ride in the submission's batch, settling a finished task (one
//! transfer and the task's `settlement` change in one batch, keyed by the
//! task id so it happens once), logging each transfer as a
//! `credit-transfer/v1` entry (after the batch; a failed append is retried
//! by the scheduled tick), and the tick's catch-up. Out of scope: the
//! credit routes (`credits`), issuance epochs (`epochs`), and the task
//! state machine itself (`tasks`).

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::{RequestContext, Services, Statement};
pub use edgecoder_proto::economy::{CREDIT_TRANSFER_V1, ISSUANCE_EPOCH_V1, TASK_COMPLETION_V1};
use serde_json::{Value as Json, json};

use crate::store::credits::{self as db, Created, Guard, NewTransfer};
use crate::store::tasks::{self as tasks_db, Stored};
use crate::{Error, Settings};

/// Who makes the economy's own transfers.
pub const SYSTEM: &str = "system:economy";
/// The account escrowed prices wait in.
pub const ESCROW: &str = "escrow";
/// The account fees go to.
pub const FEES: &str = "fees";
/// The account new credits come from.
pub const ISSUANCE: &str = "issuance";

/// What a submission costs, all replicas together, under the published
/// table: `None` where the table does not price the kind.
pub fn price(
    s: &Services,
    kind: &str,
    timeout_ms: i64,
    memory_mb: i64,
    replicas: i64,
) -> Result<i64, Error> {
    let table = &Settings::of(s)?.prices;
    let one = table
        .price(kind, timeout_ms, memory_mb)
        .ok_or(Error::OutsideSubset)?;
    Ok(one * replicas)
}

/// The escrow of a new task: the transfer statements (payer → escrow) and
/// the transfer's id. The caller puts them in the submission's batch before
/// the task's INSERT, which is made only if the transfer was.
pub fn escrow(s: &Services, task_id: &str, payer: &str, price: i64) -> (String, Vec<Statement>) {
    let id = s.new_id();
    let key = format!("escrow:{task_id}");
    let memo = format!("escrow for task {task_id}");
    let stmts = db::statements(&NewTransfer {
        id: &id,
        idempotency_key: &key,
        memo: Some(&memo),
        created_by: payer,
        now: s.clock.now_ms(),
        postings: vec![(payer, -price, Some("user")), (ESCROW, price, None)],
        guard: None,
    });
    (id, stmts)
}

/// Who a finished task's payment goes to: the owners of the nodes whose
/// agreeing results were accepted (one per replica), as accounts.
pub async fn payees(s: &Services, t: &Stored) -> Result<Vec<String>, Error> {
    // Once the completion is logged, whom it names is whom it pays.
    if let Some(logged) = t
        .payees
        .as_deref()
        .and_then(|p| serde_json::from_str::<Vec<String>>(p).ok())
    {
        return Ok(logged);
    }
    if t.replicas > 1 {
        let mut owners: Vec<String> = tasks_db::replies(s.sql.as_ref(), &t.id)
            .await?
            .into_iter()
            .map(|r| format!("user:{}", r.owner_id))
            .collect();
        owners.sort();
        owners.dedup();
        return Ok(owners);
    }
    let Some(node) = &t.completed_by else {
        return Ok(Vec::new());
    };
    Ok(crate::store::nodes::by_id(s.sql.as_ref(), node)
        .await?
        .map(|n| vec![format!("user:{}", n.owner_id)])
        .unwrap_or_default())
}

/// Settles a finished, priced task once: a completed task whose completion
/// is logged pays its payees (minus the fee), a failed one refunds its
/// payer. The transfer and the task's `settlement` are one batch guarded on
/// the task still being unsettled in that state, under the key
/// `settle:<task>`. Returns the transfer's id when this call made it.
pub async fn settle(
    s: &Services,
    ctx: &RequestContext,
    task_id: &str,
) -> Result<Option<String>, Error> {
    let Some(t) = tasks_db::task(s.sql.as_ref(), task_id).await? else {
        return Ok(None);
    };
    let (Some(price), Some(payer), None) = (t.price, t.payer.clone(), &t.settlement) else {
        return Ok(None);
    };
    let status = t.status.clone().unwrap_or_default();
    let (settlement, postings): (&str, Vec<(String, i64)>) = match status.as_str() {
        "completed" if t.ledger_index.is_some() => {
            let payees = payees(s, &t).await?;
            if payees.is_empty() {
                // A payee that cannot be named (its node row is gone):
                // the submitter gets the escrow back rather than nobody.
                ("refunded", vec![(payer.clone(), price)])
            } else {
                let (share, fee) = Settings::of(s)?.prices.split(price, payees.len());
                let mut p: Vec<(String, i64)> = payees.into_iter().map(|a| (a, share)).collect();
                p.retain(|(_, n)| *n != 0);
                if fee != 0 {
                    p.push((FEES.to_owned(), fee));
                }
                ("paid", p)
            }
        }
        "failed" => ("refunded", vec![(payer.clone(), price)]),
        _ => return Ok(None),
    };
    let id = s.new_id();
    let key = format!("settle:{task_id}");
    let memo = if settlement == "paid" {
        format!("payment for task {task_id}")
    } else {
        format!("refund of task {task_id}")
    };
    let mut legs: Vec<(&str, i64, Option<&'static str>)> = vec![(ESCROW, -price, None)];
    for (account, amount) in &postings {
        let kind = (account.as_str() != FEES).then_some("user");
        legs.push((account.as_str(), *amount, kind));
    }
    let transfer = NewTransfer {
        id: &id,
        idempotency_key: &key,
        memo: Some(&memo),
        created_by: SYSTEM,
        now: s.clock.now_ms(),
        postings: legs,
        guard: Some(Guard {
            sql: "EXISTS (SELECT 1 FROM mesh_tasks WHERE id = $1 AND settlement IS NULL AND status = $2)",
            params: vec![task_id.into(), status.as_str().into()],
        }),
    };
    let made = db::create(
        s.sql.as_ref(),
        &transfer,
        vec![tasks_db::mark_settled(task_id, settlement, &id)],
    )
    .await?;
    if made != Created::New {
        return Ok(None);
    }
    let details = json!({
        "transfer": id,
        "price": price,
        "postings": postings.iter().map(|(a, n)| json!({"account": a, "amount": n})).collect::<Vec<_>>(),
    });
    audit::note(
        s,
        ctx,
        SYSTEM,
        if settlement == "paid" {
            "mesh.credits.pay"
        } else {
            "mesh.credits.refund"
        },
        Some(task_id),
        Outcome::Success,
        details,
    )
    .await?;
    // The books are right already; the log entry follows, now or on the
    // next tick.
    let _ = log_transfer(s, &id).await;
    Ok(Some(id))
}

/// A transfer's `credit-transfer/v1` payload.
pub fn transfer_payload(t: &db::Transfer) -> Json {
    let postings: Vec<Json> = t
        .postings
        .iter()
        .map(|(account, amount)| json!({"account": account, "amount": amount}))
        .collect();
    json!({"transfer": t.id, "postings": postings, "memo": t.memo, "by": t.created_by})
}

/// Appends a committed transfer's log entry if it has none; its index.
pub async fn log_transfer(s: &Services, id: &str) -> Result<u64, Error> {
    let t = db::transfer(s.sql.as_ref(), id)
        .await?
        .ok_or(Error::TransferNotFound)?;
    if let Some(i) = t.ledger_index {
        return Ok(i);
    }
    let payload = transfer_payload(&t);
    let index = s
        .ledger
        .append(
            CREDIT_TRANSFER_V1,
            payload.to_string().as_bytes(),
            &format!("{CREDIT_TRANSFER_V1} {id}"),
        )
        .await?;
    db::set_ledger_index(s.sql.as_ref(), id, index).await?;
    Ok(index)
}

/// The scheduled catch-up: settles finished tasks a crash or a lost answer
/// left unsettled, and logs transfers whose append failed.
pub async fn tick(s: &Services) -> Result<Json, Error> {
    let ctx = s.new_context(None);
    // Completions whose append failed (a request's answer is not waited
    // for: a minute's quiet first).
    let mut recorded = 0;
    let quiet = s.clock.now_ms() - 60_000;
    for id in tasks_db::unlogged_finished(s.sql.as_ref(), quiet, 100).await? {
        // One that cannot be logged does not hold up the others.
        if crate::tasks::record(s, &ctx, SYSTEM, &id).await.is_ok() {
            recorded += 1;
        }
    }
    let mut settled = 0;
    for id in tasks_db::unsettled(s.sql.as_ref(), 200).await? {
        if settle(s, &ctx, &id).await?.is_some() {
            settled += 1;
        }
    }
    let mut logged = 0;
    for id in db::unlogged(s.sql.as_ref(), 500).await? {
        if log_transfer(s, &id).await.is_err() {
            break;
        }
        logged += 1;
    }
    let epochs = crate::epochs::tick(s, &ctx).await?;
    Ok(json!({"recorded": recorded, "settled": settled, "logged": logged, "epochs": epochs}))
}
