//! Typed storage of checkpoints over the `Sql` port: the only place besides
//! [`crate::log`] (the log's own entries and subtree hashes) where the ledger
//! writes SQL. Handlers (`api`, `witnesses`) call these and never build
//! statements.
//!
//! In scope: the signed-checkpoint table (a size is signed at most once) and
//! witnesses' state and cosignatures. Out of scope: who may do what (the
//! handlers) and the JSON shapes.

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
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
