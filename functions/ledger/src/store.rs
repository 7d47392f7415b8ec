//! Typed storage of credits and checkpoints over the `Sql` port: the only
//! place besides [`crate::log`] (the log's own entries and subtree hashes)
//! where the ledger writes SQL. Handlers (`api`, `credits`) call these and
//! never build statements.
//!
//! In scope: transfers with their postings and accounts (created in one
//! batch whose first statement is the balance guard), account balances and
//! posting pages, the signed-checkpoint table (a size is signed at most
//! once). Out of scope: who may do what (the handlers) and the JSON shapes.

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
    /// `service` or `user:<id>`.
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

/// Whether a transfer exists, and its log index if it has one.
pub async fn ledger_index(sql: &dyn Sql, id: &str) -> Result<Option<Option<u64>>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT ledger_index FROM credit_transfers WHERE id = ?1",
            vec![id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.get_i64(0, "ledger_index")
            .and_then(|i| u64::try_from(i).ok()),
    ))
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

/// A transfer to create.
#[derive(Debug, Clone)]
pub struct NewTransfer<'a> {
    /// Fresh id.
    pub id: &'a str,
    /// `<creator> <client key>`: a repeat returns the first transfer.
    pub idempotency_key: &'a str,
    /// Free text.
    pub memo: Option<&'a str>,
    /// `service` or `user:<id>`.
    pub created_by: &'a str,
    /// Milliseconds since the epoch.
    pub now: i64,
    /// `(account, amount, kind)`; accounts of kind `user` or `node` are
    /// created with their first transfer.
    pub postings: Vec<(&'a str, i64, Option<&'static str>)>,
}

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new transfer with this id.
    New(String),
    /// The idempotency key was used before: that transfer's id.
    Existing(String),
    /// A posting would take a protected account below zero (or past the
    /// largest safe integer); nothing was written.
    Overdraft,
}

/// Creates a transfer atomically: one batch whose first statement inserts
/// the transfer only if no protected account would go negative and the key
/// is new; every later statement applies only if it did.
pub async fn create(sql: &dyn Sql, t: &NewTransfer<'_>) -> Result<Created, Error> {
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
    let mut stmts = vec![Statement::new(
        format!(
            "INSERT INTO credit_transfers (id, idempotency_key, memo, created_by, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 \
             WHERE NOT EXISTS (SELECT 1 FROM credit_transfers WHERE idempotency_key = ?2) \
               AND NOT EXISTS (SELECT 1 FROM (VALUES {}) v LEFT JOIN credit_accounts a ON a.id = v.column1 \
                               WHERE (COALESCE(a.may_overdraw, 0) = 0 AND COALESCE(a.balance, 0) + v.column2 < 0) \
                                  OR abs(COALESCE(a.balance, 0) + v.column2) > 9007199254740991)",
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
        (Some(id), true) => Created::New(id),
        (Some(id), false) => Created::Existing(id),
        (None, _) => Created::Overdraft,
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

/// An account's kind and balance; `None` until its first transfer.
pub async fn account(sql: &dyn Sql, id: &str) -> Result<Option<(String, i64)>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT kind, balance FROM credit_accounts WHERE id = ?1",
            vec![id.into()],
        ))
        .await?;
    Ok(rows.get_i64(0, "balance").map(|balance| {
        (
            rows.get_str(0, "kind").unwrap_or_default().to_owned(),
            balance,
        )
    }))
}

/// The newest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size it signs.
    pub size: u64,
    /// The signed note, as served.
    pub note: String,
    /// When it was signed, ms.
    pub created_at: i64,
}

/// The newest signed checkpoint, if any.
pub async fn latest_checkpoint(sql: &dyn Sql) -> Result<Option<StoredCheckpoint>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT size, note, created_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1",
            vec![],
        ))
        .await?;
    let (Some(size), Some(note), Some(created_at)) = (
        rows.get_i64(0, "size").and_then(|v| u64::try_from(v).ok()),
        rows.get_str(0, "note"),
        rows.get_i64(0, "created_at"),
    ) else {
        return Ok(None);
    };
    Ok(Some(StoredCheckpoint {
        size,
        note: note.to_owned(),
        created_at,
    }))
}

/// Stores `note` as the checkpoint of `size` unless one is stored already;
/// returns the stored root and note (the earlier ones if it was).
pub async fn sign_once(
    sql: &dyn Sql,
    size: u64,
    root: &[u8],
    note: String,
    now: i64,
) -> Result<(Vec<u8>, String), Error> {
    let rows = sql
        .batch(vec![
            Statement::new(
                "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (size) DO NOTHING",
                vec![int(size), root.to_vec().into(), note.into(), Value::Integer(now)],
            ),
            Statement::new(
                "SELECT root, note FROM ledger_checkpoints WHERE size = ?1",
                vec![int(size)],
            ),
        ])
        .await?;
    let stored = rows.get(1).ok_or(Error::Corrupt("ledger_checkpoints"))?;
    match (stored.get_blob(0, "root"), stored.get_str(0, "note")) {
        (Some(r), Some(n)) => Ok((r.to_vec(), n.to_owned())),
        _ => Err(Error::Corrupt("ledger_checkpoints")),
    }
}

/// The size witness `name` last cosigned (0 if none).
pub async fn witness_size(sql: &dyn Sql, name: &str) -> Result<u64, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT size FROM ledger_witness_state WHERE witness = ?1",
            vec![name.into()],
        ))
        .await?;
    Ok(rows
        .get_i64(0, "size")
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or_default())
}

/// Records what witness `name` holds.
pub async fn set_witness_size(sql: &dyn Sql, name: &str, size: u64, now: i64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO ledger_witness_state (witness, size, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (witness) DO UPDATE SET size = excluded.size, updated_at = excluded.updated_at",
        vec![name.into(), int(size), Value::Integer(now)],
    ))
    .await?;
    Ok(())
}

/// Keeps a verified cosignature line of the checkpoint of `size`.
pub async fn add_cosignature(
    sql: &dyn Sql,
    size: u64,
    witness: &str,
    line: &str,
    time: u64,
) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO ledger_cosignatures (size, witness, line, time) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, time = excluded.time",
        vec![int(size), witness.into(), line.into(), int(time)],
    ))
    .await?;
    Ok(())
}

/// The cosignature lines kept for the checkpoint of `size`, by witness.
pub async fn cosignatures(sql: &dyn Sql, size: u64) -> Result<Vec<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT line FROM ledger_cosignatures WHERE size = ?1 ORDER BY witness",
            vec![int(size)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "line").map(str::to_owned))
        .collect())
}

/// The newest checkpoint with at least `min` cosignatures: its size and note.
pub async fn newest_cosigned(sql: &dyn Sql, min: u64) -> Result<Option<(u64, String)>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT c.size AS size, c.note AS note FROM ledger_checkpoints c \
             WHERE (SELECT count(*) FROM ledger_cosignatures s WHERE s.size = c.size) >= ?1 \
             ORDER BY c.size DESC LIMIT 1",
            vec![int(min)],
        ))
        .await?;
    Ok(
        match (
            rows.get_i64(0, "size").and_then(|v| u64::try_from(v).ok()),
            rows.get_str(0, "note"),
        ) {
            (Some(size), Some(note)) => Some((size, note.to_owned())),
            _ => None,
        },
    )
}
