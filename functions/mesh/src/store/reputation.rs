//! The `mesh_reputation_events` table: what each node did, as verified.

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

/// Most events read for one score (the newest).
const MAX_EVENTS: i64 = 1000;

/// Records an event; a `rate_limited` one at most once a minute per node,
/// so a node hammering the coordinator cannot make it write per request.
/// Whether it was recorded.
pub async fn record(sql: &dyn Sql, node_id: &str, kind: &str, now: i64) -> Result<bool, Error> {
    let rows = sql.execute(Statement::new(
        "INSERT INTO mesh_reputation_events (node_id, kind, at) \
         SELECT ?1, ?2, ?3 WHERE ?2 <> 'rate_limited' OR NOT EXISTS \
           (SELECT 1 FROM mesh_reputation_events WHERE node_id = ?1 AND kind = 'rate_limited' AND at > ?3 - 60000) \
         RETURNING id",
        vec![node_id.into(), kind.into(), Value::Integer(now)],
    ))
    .await?;
    Ok(!rows.rows.is_empty())
}

/// The node's events since `since` (ms), newest first: (kind, at).
pub async fn events(sql: &dyn Sql, node_id: &str, since: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT kind, at FROM mesh_reputation_events WHERE node_id = ?1 AND at >= ?2 \
             ORDER BY at DESC LIMIT ?3",
            vec![
                node_id.into(),
                Value::Integer(since),
                Value::Integer(MAX_EVENTS),
            ],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| Some((rows.get_str(i, "kind")?.to_owned(), rows.get_i64(i, "at")?)))
        .collect())
}

/// Forgets events older than `before` (ms).
pub async fn prune(sql: &dyn Sql, before: i64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "DELETE FROM mesh_reputation_events WHERE at < ?1",
        vec![Value::Integer(before)],
    ))
    .await?;
    Ok(())
}
