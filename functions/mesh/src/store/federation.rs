//! Gossip and propagation state: where this coordinator is in each peer's
//! log (`mesh_peer_sync`), envelopes seen (`mesh_gossip_seen`) and peers'
//! bans waiting for an operator (`mesh_ban_reviews`).

use edgecoder_kernel::{Sql, Statement, Value};
use serde_json::{Value as Json, json};

use crate::Error;

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Where the pull of a peer's log stands.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    /// The next index to read.
    pub next_index: u64,
    /// The frontier of the entries before it, as stored (JSON).
    pub frontier: String,
    /// A pull was asked for.
    pub due: bool,
    /// Last pull, completed or failed (ms).
    pub synced_at: Option<i64>,
    /// Why the last pull failed, if it did.
    pub last_error: Option<String>,
}

/// The pull state of `peer` (a fresh one if it never pulled).
pub async fn state(sql: &dyn Sql, peer: &str) -> Result<SyncState, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT next_index, frontier, due, synced_at, last_error FROM mesh_peer_sync WHERE peer = ?1",
            vec![peer.into()],
        ))
        .await?;
    Ok(match rows.get_i64(0, "next_index") {
        None => SyncState {
            frontier: "[]".into(),
            due: true,
            ..SyncState::default()
        },
        Some(n) => SyncState {
            next_index: u64::try_from(n).unwrap_or_default(),
            frontier: rows.get_str(0, "frontier").unwrap_or("[]").to_owned(),
            due: rows.get_i64(0, "due") == Some(1),
            synced_at: rows.get_i64(0, "synced_at"),
            last_error: rows.get_str(0, "last_error").map(str::to_owned),
        },
    })
}

/// Records a completed pull (or its failure, keeping the position).
pub async fn save(
    sql: &dyn Sql,
    peer: &str,
    next_index: u64,
    frontier: &str,
    now: i64,
    error: Option<&str>,
) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO mesh_peer_sync (peer, next_index, frontier, due, synced_at, last_error) \
         VALUES (?1, ?2, ?3, 0, ?4, ?5) \
         ON CONFLICT (peer) DO UPDATE SET next_index = excluded.next_index, frontier = excluded.frontier, \
           synced_at = excluded.synced_at, last_error = excluded.last_error",
        vec![
            peer.into(),
            int(next_index),
            frontier.into(),
            Value::Integer(now),
            error.map_or(Value::Null, Value::from),
        ],
    ))
    .await?;
    Ok(())
}

/// Takes the pull of `peer` until `until` (ms), unless another pull holds
/// it; taking it consumes a pending `due` (a push during the pull sets it
/// again). Whether it was taken.
pub async fn claim(sql: &dyn Sql, peer: &str, now: i64, until: i64) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "INSERT INTO mesh_peer_sync (peer, due, pulling_until) VALUES (?1, 0, ?3) \
             ON CONFLICT (peer) DO UPDATE SET due = 0, pulling_until = excluded.pulling_until \
               WHERE mesh_peer_sync.pulling_until IS NULL OR mesh_peer_sync.pulling_until < ?2 \
             RETURNING peer",
            vec![peer.into(), Value::Integer(now), Value::Integer(until)],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Lets go of the pull of `peer`.
pub async fn release(sql: &dyn Sql, peer: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_peer_sync SET pulling_until = NULL WHERE peer = ?1",
        vec![peer.into()],
    ))
    .await?;
    Ok(())
}

/// Forgets where the pull of `peer` stood (its log changed name).
pub async fn reset(sql: &dyn Sql, peer: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "DELETE FROM mesh_peer_sync WHERE peer = ?1",
        vec![peer.into()],
    ))
    .await?;
    Ok(())
}

/// Records a failed pull without moving its position.
pub async fn failed(sql: &dyn Sql, peer: &str, error: &str, now: i64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO mesh_peer_sync (peer, synced_at, last_error) VALUES (?1, ?2, ?3) \
         ON CONFLICT (peer) DO UPDATE SET synced_at = excluded.synced_at, last_error = excluded.last_error",
        vec![peer.into(), Value::Integer(now), error.into()],
    ))
    .await?;
    Ok(())
}

/// Asks for a pull of `peer` at the next tick.
pub async fn mark_due(sql: &dyn Sql, peer: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO mesh_peer_sync (peer, due) VALUES (?1, 1) \
         ON CONFLICT (peer) DO UPDATE SET due = 1",
        vec![peer.into()],
    ))
    .await?;
    Ok(())
}

/// Remembers an envelope digest until `expires_at` (forgetting expired
/// ones); `false` if it was seen already (a replay).
pub async fn first_sight(
    sql: &dyn Sql,
    digest: &str,
    peer: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, Error> {
    let done = sql
        .batch(vec![
            Statement::new(
                "DELETE FROM mesh_gossip_seen WHERE expires_at < ?1",
                vec![Value::Integer(now)],
            ),
            Statement::new(
                "INSERT INTO mesh_gossip_seen (digest, peer, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (digest) DO NOTHING RETURNING digest",
                vec![digest.into(), peer.into(), Value::Integer(expires_at)],
            ),
        ])
        .await?;
    Ok(done.get(1).is_some_and(|r| !r.rows.is_empty()))
}

/// Queues a peer's entry for an operator's decision (once per entry).
pub async fn queue_review(
    sql: &dyn Sql,
    peer: &str,
    source_index: u64,
    payload: &str,
    now: i64,
) -> Result<(), Error> {
    sql.execute(Statement::new(
        "INSERT INTO mesh_ban_reviews (peer, source_index, payload, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (peer, source_index) DO NOTHING",
        vec![peer.into(), int(source_index), payload.into(), Value::Integer(now)],
    ))
    .await?;
    Ok(())
}

/// A queued review.
#[derive(Debug, Clone)]
pub struct Review {
    /// Its id.
    pub id: i64,
    /// The peer.
    pub peer: String,
    /// The entry's index in the peer's log.
    pub source_index: u64,
    /// The peer's payload.
    pub payload: String,
    /// pending / accepted / rejected.
    pub status: String,
}

/// Review `id`.
pub async fn review(sql: &dyn Sql, id: i64) -> Result<Option<Review>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, peer, source_index, payload, status FROM mesh_ban_reviews WHERE id = ?1",
            vec![Value::Integer(id)],
        ))
        .await?;
    Ok(
        match (rows.get_str(0, "peer"), rows.get_str(0, "payload")) {
            (Some(peer), Some(payload)) => Some(Review {
                id,
                peer: peer.to_owned(),
                source_index: u64::try_from(rows.get_i64(0, "source_index").unwrap_or_default())
                    .unwrap_or_default(),
                payload: payload.to_owned(),
                status: rows.get_str(0, "status").unwrap_or("pending").to_owned(),
            }),
            _ => None,
        },
    )
}

/// Decides a pending review; `false` if it was decided already.
pub async fn decide(
    sql: &dyn Sql,
    id: i64,
    status: &str,
    by: &str,
    now: i64,
) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE mesh_ban_reviews SET status = ?2, decided_by = ?3, decided_at = ?4 \
             WHERE id = ?1 AND status = 'pending' RETURNING id",
            vec![
                Value::Integer(id),
                status.into(),
                by.into(),
                Value::Integer(now),
            ],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Reviews, newest first, optionally only pending ones.
pub async fn reviews(sql: &dyn Sql, pending_only: bool, limit: i64) -> Result<Vec<Json>, Error> {
    let filter = if pending_only {
        " WHERE status = 'pending'"
    } else {
        ""
    };
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT id, peer, source_index, payload, status, decided_by, created_at FROM mesh_ban_reviews{filter} \
                 ORDER BY id DESC LIMIT ?1"
            ),
            vec![Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            json!({
                "id": rows.get_i64(i, "id"),
                "peer": rows.get_str(i, "peer"),
                "source_index": rows.get_i64(i, "source_index"),
                "entry": serde_json::from_str::<Json>(rows.get_str(i, "payload").unwrap_or("null")).unwrap_or_default(),
                "status": rows.get_str(i, "status"),
                "decided_by": rows.get_str(i, "decided_by"),
                "created_at": crate::rfc3339(rows.get_i64(i, "created_at").unwrap_or_default()),
            })
        })
        .collect())
}

/// Puts a claimed review back to pending (its decision could not be applied).
pub async fn reopen(sql: &dyn Sql, id: i64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_ban_reviews SET status = 'pending', decided_by = NULL, decided_at = NULL WHERE id = ?1",
        vec![Value::Integer(id)],
    ))
    .await?;
    Ok(())
}
