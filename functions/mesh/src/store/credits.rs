//! Credits in the coordinator's database: double-entry accounts, transfers
//! and postings, kept beside the tasks they pay for so that a transfer and
//! the task state change it belongs to are one batch.
//!
//! In scope: the statements of a transfer (inserted only if its key is new,
//! no protected account would go negative, and an optional guard on other
//! rows holds; every posting keys on that row), reading transfers, balances,
//! escrowed sums and posting pages, transfers still to be logged, and the
//! totals the conservation check reads. Out of scope: who may move what
//! (the handlers in `credits` and `economy`).

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A stored transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Transfer id.
    pub id: String,
    /// `(account, amount)`, ordered by account.
    pub postings: Vec<(String, i64)>,
    /// Free text.
    pub memo: Option<String>,
    /// Who made it (`user:<id>`, `system:economy`).
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Its log entry, once appended.
    pub ledger_index: Option<u64>,
}

/// A transfer and its postings; `None` if there is none.
pub async fn transfer(sql: &dyn Sql, id: &str) -> Result<Option<Transfer>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT t.id, t.memo, t.created_by, t.created_at, t.ledger_index, p.account_id, p.amount \
             FROM credit_transfers t JOIN credit_postings p ON p.transfer_id = t.id WHERE t.id = ?1 \
             ORDER BY p.account_id",
            vec![id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Transfer {
        id: id.to_owned(),
        postings: (0..rows.rows.len())
            .map(|i| {
                (
                    rows.get_str(i, "account_id").unwrap_or_default().to_owned(),
                    rows.get_i64(i, "amount").unwrap_or_default(),
                )
            })
            .collect(),
        memo: rows.get_str(0, "memo").map(str::to_owned),
        created_by: rows.get_str(0, "created_by").unwrap_or_default().to_owned(),
        created_at: rows.get_i64(0, "created_at").unwrap_or_default(),
        ledger_index: rows
            .get_i64(0, "ledger_index")
            .and_then(|i| u64::try_from(i).ok()),
    }))
}

/// The id of the transfer made under `key`, if any.
pub async fn by_key(sql: &dyn Sql, key: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM credit_transfers WHERE idempotency_key = ?1",
            vec![key.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "id").map(str::to_owned))
}

/// Whether `account` has a posting in transfer `id`.
pub async fn is_party(sql: &dyn Sql, id: &str, account: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS party FROM credit_postings WHERE transfer_id = ?1 AND account_id = ?2",
            vec![id.into(), account.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Records a transfer's log index, unless one is recorded already.
pub async fn set_ledger_index(sql: &dyn Sql, id: &str, index: u64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE credit_transfers SET ledger_index = ?2 WHERE id = ?1 AND ledger_index IS NULL",
        vec![id.into(), int(index)],
    ))
    .await?;
    Ok(())
}

/// Up to `limit` transfers whose log entry is still to be appended, oldest
/// first.
pub async fn unlogged(sql: &dyn Sql, limit: i64) -> Result<Vec<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM credit_transfers WHERE ledger_index IS NULL ORDER BY created_at, id LIMIT ?1",
            vec![Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "id").map(str::to_owned))
        .collect())
}

/// A condition on other rows the transfer needs, as SQL whose parameters
/// are written `$1`, `$2`, … (at most nine).
#[derive(Debug, Clone)]
pub struct Guard {
    /// A boolean SQL expression.
    pub sql: &'static str,
    /// Its parameters.
    pub params: Vec<Value>,
}

/// A transfer to create.
#[derive(Debug, Clone)]
pub struct NewTransfer<'a> {
    /// Fresh id.
    pub id: &'a str,
    /// A repeat of the key makes nothing new.
    pub idempotency_key: &'a str,
    /// Free text.
    pub memo: Option<&'a str>,
    /// `user:<id>` or `system:economy`.
    pub created_by: &'a str,
    /// Milliseconds since the epoch.
    pub now: i64,
    /// `(account, amount, kind)`; accounts of kind `user` or `node` are
    /// created with their first transfer.
    pub postings: Vec<(&'a str, i64, Option<&'static str>)>,
    /// What else must hold for the transfer to be made.
    pub guard: Option<Guard>,
}

/// The statements that make the transfer atomically when run in one batch:
/// the first inserts the transfer only if the key is new, no protected
/// account would go negative (or past 2^53) and the guard holds; every later
/// one applies only if it did. [`outcome`] reads the batch's results.
pub fn statements(t: &NewTransfer<'_>) -> Vec<Statement> {
    let mut params: Vec<Value> = vec![
        t.id.into(),
        t.idempotency_key.into(),
        t.memo.map(str::to_owned).into(),
        t.created_by.into(),
        Value::Integer(t.now),
    ];
    let mut tuples = Vec::new();
    for (account, amount, _) in &t.postings {
        tuples.push(format!("(?{}, ?{})", params.len() + 1, params.len() + 2));
        params.push((*account).into());
        params.push(Value::Integer(*amount));
    }
    let guard = match &t.guard {
        None => String::new(),
        Some(g) => {
            let base = params.len();
            let mut sql = g.sql.to_owned();
            for k in (1..=g.params.len()).rev() {
                sql = sql.replace(&format!("${k}"), &format!("?{}", base + k));
            }
            params.extend(g.params.iter().cloned());
            format!(" AND ({sql})")
        }
    };
    let mut stmts = vec![Statement::new(
        format!(
            "INSERT INTO credit_transfers (id, idempotency_key, memo, created_by, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 \
             WHERE NOT EXISTS (SELECT 1 FROM credit_transfers WHERE idempotency_key = ?2) \
               AND NOT EXISTS (SELECT 1 FROM (VALUES {}) v LEFT JOIN credit_accounts a ON a.id = v.column1 \
                               WHERE (COALESCE(a.may_overdraw, 0) = 0 AND COALESCE(a.balance, 0) + v.column2 < 0) \
                                  OR abs(COALESCE(a.balance, 0) + v.column2) > 9007199254740991){guard}",
            tuples.join(", ")
        ),
        params,
    )];
    // Accounts come into being with their first transfer, never without one.
    for (account, _, kind) in &t.postings {
        if let Some(kind) = kind {
            stmts.push(Statement::new(
                "INSERT INTO credit_accounts (id, kind, created_at) SELECT ?1, ?2, ?3 \
                 WHERE EXISTS (SELECT 1 FROM credit_transfers WHERE id = ?4) ON CONFLICT (id) DO NOTHING",
                vec![
                    (*account).into(),
                    (*kind).into(),
                    Value::Integer(t.now),
                    t.id.into(),
                ],
            ));
        }
    }
    for (account, amount, _) in &t.postings {
        stmts.push(Statement::new(
            "INSERT INTO credit_postings (transfer_id, account_id, amount, created_at) \
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM credit_transfers WHERE id = ?1)",
            vec![
                t.id.into(),
                (*account).into(),
                Value::Integer(*amount),
                Value::Integer(t.now),
            ],
        ));
        stmts.push(Statement::new(
            "UPDATE credit_accounts SET balance = balance + ?2 \
             WHERE id = ?1 AND EXISTS (SELECT 1 FROM credit_transfers WHERE id = ?3)",
            vec![(*account).into(), Value::Integer(*amount), t.id.into()],
        ));
    }
    stmts
}

/// What a transfer's statements did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The transfer was made.
    New,
    /// The key was used before: that transfer's id.
    Existing(String),
    /// Nothing was made: a balance would go negative, or the guard failed.
    Refused,
}

/// Runs a transfer alone, followed by `then` (statements that should apply
/// only with it), and says what happened.
pub async fn create(
    sql: &dyn Sql,
    t: &NewTransfer<'_>,
    then: Vec<Statement>,
) -> Result<Created, Error> {
    let mut stmts = statements(t);
    stmts.extend(then);
    stmts.push(Statement::new(
        "SELECT id FROM credit_transfers WHERE idempotency_key = ?1",
        vec![t.idempotency_key.into()],
    ));
    let results = sql.batch(stmts).await?;
    let created = results.first().is_some_and(|r| r.changes == 1);
    let existing = results
        .last()
        .and_then(|r| r.get_str(0, "id"))
        .map(str::to_owned);
    Ok(match (existing, created) {
        (Some(_), true) => Created::New,
        (Some(id), false) => Created::Existing(id),
        (None, _) => Created::Refused,
    })
}

/// One posting of an account, newest first in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// The transfer.
    pub transfer: String,
    /// Signed amount.
    pub amount: i64,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// The transfer's log entry, once appended.
    pub ledger_index: Option<i64>,
    /// The transfer's memo.
    pub memo: Option<String>,
}

/// `account`'s postings older than `before` (all if `None`), newest first.
pub async fn postings(
    sql: &dyn Sql,
    account: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Posting>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT p.transfer_id, p.amount, p.created_at, t.ledger_index, t.memo FROM credit_postings p \
             JOIN credit_transfers t ON t.id = p.transfer_id \
             WHERE p.account_id = ?1 AND (?2 IS NULL OR p.created_at < ?2) \
             ORDER BY p.created_at DESC, p.transfer_id LIMIT ?3",
            vec![account.into(), before.into(), Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| Posting {
            transfer: rows
                .get_str(i, "transfer_id")
                .unwrap_or_default()
                .to_owned(),
            amount: rows.get_i64(i, "amount").unwrap_or_default(),
            created_at: rows.get_i64(i, "created_at").unwrap_or_default(),
            ledger_index: rows.get_i64(i, "ledger_index"),
            memo: rows.get_str(i, "memo").map(str::to_owned),
        })
        .collect())
}

/// An account's balance, what it has in escrow for unsettled tasks, and
/// what closed epochs allocate to it that is not final yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    /// Spendable credits.
    pub available: i64,
    /// Held for its tasks until they are paid or refunded.
    pub escrowed: i64,
    /// Issued by closed epochs still waiting for their quorum.
    pub pending: i64,
}

/// `id`'s balance; `None` if it never had a transfer, escrow or allocation.
pub async fn balance(sql: &dyn Sql, id: &str) -> Result<Option<Balance>, Error> {
    let rows = sql
        .batch(vec![
            Statement::new(
                "SELECT balance FROM credit_accounts WHERE id = ?1",
                vec![id.into()],
            ),
            Statement::new(
                "SELECT COALESCE(SUM(price), 0) AS escrowed FROM mesh_tasks \
                 WHERE payer = ?1 AND price IS NOT NULL AND settlement IS NULL",
                vec![id.into()],
            ),
            Statement::new(
                "SELECT COALESCE(SUM(a.amount), 0) AS pending FROM econ_allocations a \
                 JOIN econ_epochs e ON e.epoch = a.epoch WHERE a.account = ?1 AND e.final = 0",
                vec![id.into()],
            ),
        ])
        .await?;
    let get = |i: usize, c: &str| rows.get(i).and_then(|r| r.get_i64(0, c));
    let Some(available) = get(0, "balance") else {
        return Ok(None);
    };
    Ok(Some(Balance {
        available,
        escrowed: get(1, "escrowed").unwrap_or_default(),
        pending: get(2, "pending").unwrap_or_default(),
    }))
}

/// The totals the conservation rule is about: every account's balance
/// summed (always zero in double entry), what `issuance` has issued, what
/// sits in `escrow`, and whether any balance that may not go negative has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supply {
    /// Sum of every balance (zero when the books balance).
    pub sum: i64,
    /// Credits ever issued (minus `issuance`'s balance).
    pub issued: i64,
    /// Credits held in escrow.
    pub escrow: i64,
    /// Credits the fee account holds.
    pub fees: i64,
    /// Sum of the escrowed prices of unsettled tasks (equals `escrow`).
    pub escrowed_tasks: i64,
    /// Accounts below zero that may not be.
    pub negative: i64,
}

/// The books' totals.
pub async fn supply(sql: &dyn Sql) -> Result<Supply, Error> {
    let rows = sql
        .batch(vec![
            Statement::new(
                "SELECT COALESCE(SUM(balance), 0) AS sum, \
                   COALESCE(SUM(CASE WHEN id = 'issuance' THEN -balance END), 0) AS issued, \
                   COALESCE(SUM(CASE WHEN id = 'escrow' THEN balance END), 0) AS escrow, \
                   COALESCE(SUM(CASE WHEN id = 'fees' THEN balance END), 0) AS fees, \
                   COALESCE(SUM(CASE WHEN may_overdraw = 0 AND balance < 0 THEN 1 END), 0) AS negative \
                 FROM credit_accounts",
                vec![],
            ),
            Statement::new(
                "SELECT COALESCE(SUM(price), 0) AS escrowed FROM mesh_tasks \
                 WHERE price IS NOT NULL AND settlement IS NULL",
                vec![],
            ),
        ])
        .await?;
    let get = |i: usize, c: &str| {
        rows.get(i)
            .and_then(|r| r.get_i64(0, c))
            .unwrap_or_default()
    };
    Ok(Supply {
        sum: get(0, "sum"),
        issued: get(0, "issued"),
        escrow: get(0, "escrow"),
        fees: get(0, "fees"),
        negative: get(0, "negative"),
        escrowed_tasks: get(1, "escrowed"),
    })
}
