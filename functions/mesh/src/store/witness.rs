//! The `mesh_witnessed_logs` table: the logs this coordinator witnesses,
//! their trusted verifier keys and the latest checkpoint it cosigned.

use edgecoder_kernel::{Sql, Statement, Value};
use serde_json::{Value as Json, json};

use crate::Error;

/// A witnessed log.
#[derive(Debug, Clone)]
pub struct Log {
    /// The checkpoint origin line.
    pub origin: String,
    /// Signed-note verifier keys trusted for it.
    pub vkeys: Vec<String>,
    /// The peer whose ledger it is, if any.
    pub peer: Option<String>,
    /// Size of the latest cosigned checkpoint (0: none yet).
    pub size: u64,
    /// Its root.
    pub root: Option<Vec<u8>>,
}

fn size_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The log with this origin line.
pub async fn log(sql: &dyn Sql, origin: &str) -> Result<Option<Log>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT origin, vkeys, peer, size, root FROM mesh_witnessed_logs WHERE origin = ?1",
            vec![origin.into()],
        ))
        .await?;
    let Some(vkeys) = rows.get_str(0, "vkeys") else {
        return Ok(None);
    };
    Ok(Some(Log {
        origin: origin.to_owned(),
        vkeys: serde_json::from_str(vkeys).unwrap_or_default(),
        peer: rows.get_str(0, "peer").map(str::to_owned),
        size: size_of(rows.get_i64(0, "size").unwrap_or_default()),
        root: rows.get_blob(0, "root").map(<[u8]>::to_vec),
    }))
}

/// Adds a log to witness, or replaces the keys trusted for it (what it
/// cosigned stays: the next checkpoint must still be consistent with it).
pub async fn upsert(
    sql: &dyn Sql,
    origin: &str,
    vkeys: &[String],
    peer: Option<&str>,
    now: i64,
) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO mesh_witnessed_logs (origin, vkeys, peer, size, updated_at) VALUES (?1, ?2, ?3, 0, ?4) \
         ON CONFLICT (origin) DO UPDATE SET vkeys = excluded.vkeys, peer = excluded.peer, \
           updated_at = excluded.updated_at",
        vec![
            origin.into(),
            Json::from(vkeys.to_vec()).to_string().into(),
            peer.map_or(Value::Null, Value::from),
            Value::Integer(now),
        ],
    ))
    .await?;
    Ok(())
}

/// Records a newly cosigned checkpoint if the stored size is still `old`
/// (the check and the update are one statement, so two requests racing
/// cannot roll the size back); `false` if another request moved it first.
pub async fn advance(
    sql: &dyn Sql,
    origin: &str,
    old: u64,
    size: u64,
    root: &[u8],
    note: &str,
    now: i64,
) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE mesh_witnessed_logs SET size = ?3, root = ?4, note = ?5, updated_at = ?6 \
             WHERE origin = ?1 AND size = ?2 RETURNING origin",
            vec![
                origin.into(),
                int(old),
                int(size),
                root.to_vec().into(),
                note.into(),
                Value::Integer(now),
            ],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Every witnessed log, as operators see it.
pub async fn all(sql: &dyn Sql) -> Result<Vec<Json>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT origin, vkeys, peer, size, note, updated_at FROM mesh_witnessed_logs ORDER BY origin",
            vec![],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            json!({
                "origin": rows.get_str(i, "origin"),
                "vkeys": serde_json::from_str::<Json>(rows.get_str(i, "vkeys").unwrap_or("[]")).unwrap_or_default(),
                "peer": rows.get_str(i, "peer"),
                "size": rows.get_i64(i, "size"),
                "checkpoint": rows.get_str(i, "note"),
                "updated_at": crate::rfc3339(rows.get_i64(i, "updated_at").unwrap_or_default()),
            })
        })
        .collect())
}

/// The origin line of the log of `peer`, if this witness tracks it.
pub async fn origin_of_peer(sql: &dyn Sql, peer: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT origin FROM mesh_witnessed_logs WHERE peer = ?1 ORDER BY updated_at DESC LIMIT 1",
            vec![peer.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "origin").map(str::to_owned))
}

/// The logs of `peer` become operator-added ones (its log changed name).
pub async fn unpeer(sql: &dyn Sql, peer: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_witnessed_logs SET peer = NULL WHERE peer = ?1",
        vec![peer.into()],
    ))
    .await?;
    Ok(())
}
