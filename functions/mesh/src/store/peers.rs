//! The `mesh_peers` table: the coordinators this one peers with, each pinned
//! to one key, with both sides' approvals and the operator's suspensions.

use edgecoder_kernel::{Sql, Statement, Value};
use serde::Serialize;

use crate::Error;

/// Where a peering stands, derived from the stored flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// The peer asked; our operator has not approved it.
    Pending,
    /// Our operator approved; the peer has not (yet) approved us.
    AwaitingPeer,
    /// Both sides approved: the only status anything is exchanged in.
    Active,
    /// Our operator suspended it (nothing is exchanged until resumed).
    Suspended,
    /// Our operator removed it (history only).
    Removed,
    /// On the blacklist (subject kind `peer`).
    Banned,
}

/// A peer as stored.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `scheme://host[:port]`.
    pub origin: String,
    /// The pinned key's id.
    pub key_id: String,
    /// The pinned key's SEC1 point.
    pub public_key: Vec<u8>,
    /// Our operator approved it.
    pub local_approved: bool,
    /// It approved us (a request signed with the pinned key).
    pub remote_approved: bool,
    /// Suspended by our operator.
    pub suspended: bool,
    /// Removed by our operator.
    pub removed: bool,
    /// Last authenticated request from it (ms).
    pub last_seen_at: Option<i64>,
    /// What its bans do here: `trust` (applied), `review` (queued for an
    /// operator), `ignore`.
    pub ban_policy: String,
    /// The stored row's version (0: not stored yet); a save expects it.
    pub version: i64,
    /// A ban on its origin is in force.
    pub banned: bool,
}

impl Peer {
    /// The status the flags add up to.
    pub fn status(&self) -> PeerStatus {
        if self.banned {
            PeerStatus::Banned
        } else if self.removed {
            PeerStatus::Removed
        } else if self.suspended {
            PeerStatus::Suspended
        } else {
            match (self.local_approved, self.remote_approved) {
                (true, true) => PeerStatus::Active,
                (true, false) => PeerStatus::AwaitingPeer,
                _ => PeerStatus::Pending,
            }
        }
    }
}

const COLUMNS: &str = "origin, key_id, public_key, local_approved, remote_approved, suspended, removed, last_seen_at, ban_policy, version, \
     EXISTS (SELECT 1 FROM mesh_bans b WHERE b.subject_kind = 'peer' AND b.subject = mesh_peers.origin) AS banned";

fn peer_at(rows: &edgecoder_kernel::Rows, i: usize) -> Option<Peer> {
    Some(Peer {
        origin: rows.get_str(i, "origin")?.to_owned(),
        key_id: rows.get_str(i, "key_id")?.to_owned(),
        public_key: rows.get_blob(i, "public_key")?.to_vec(),
        local_approved: rows.get_i64(i, "local_approved")? == 1,
        remote_approved: rows.get_i64(i, "remote_approved")? == 1,
        suspended: rows.get_i64(i, "suspended")? == 1,
        removed: rows.get_i64(i, "removed")? == 1,
        last_seen_at: rows.get_i64(i, "last_seen_at"),
        ban_policy: rows.get_str(i, "ban_policy")?.to_owned(),
        version: rows.get_i64(i, "version")?,
        banned: rows.get_i64(i, "banned") == Some(1),
    })
}

/// The peer at `origin`.
pub async fn by_origin(sql: &dyn Sql, origin: &str) -> Result<Option<Peer>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {COLUMNS} FROM mesh_peers WHERE origin = ?1"),
            vec![origin.into()],
        ))
        .await?;
    Ok(peer_at(&rows, 0))
}

/// The peer pinned to key `key_id`.
pub async fn by_key(sql: &dyn Sql, key_id: &str) -> Result<Option<Peer>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {COLUMNS} FROM mesh_peers WHERE key_id = ?1"),
            vec![key_id.into()],
        ))
        .await?;
    Ok(peer_at(&rows, 0))
}

/// Every peer, by origin.
pub async fn all(sql: &dyn Sql) -> Result<Vec<Peer>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {COLUMNS} FROM mesh_peers ORDER BY origin"),
            vec![],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| peer_at(&rows, i))
        .collect())
}

/// The active peers (both approved, neither suspended nor removed).
pub async fn active(sql: &dyn Sql) -> Result<Vec<Peer>, Error> {
    Ok(all(sql)
        .await?
        .into_iter()
        .filter(|p| p.status() == PeerStatus::Active)
        .collect())
}

/// How many peers wait for our operator (requests from strangers are capped).
pub async fn pending_count(sql: &dyn Sql) -> Result<i64, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT count(*) AS n FROM mesh_peers WHERE local_approved = 0 AND removed = 0",
            vec![],
        ))
        .await?;
    Ok(rows.get_i64(0, "n").unwrap_or_default())
}

/// Writes `p` as it now stands if the stored row is still the version it
/// was read at (`p.version`; 0: no row yet). `false` if another change got
/// there first, so a stale read can never undo a removal or a suspension.
pub async fn save(sql: &dyn Sql, p: &Peer, now: i64) -> Result<bool, Error> {
    let flag = |b: bool| Value::Integer(i64::from(b));
    let params = vec![
        p.origin.as_str().into(),
        p.key_id.as_str().into(),
        p.public_key.clone().into(),
        flag(p.local_approved),
        flag(p.remote_approved),
        flag(p.suspended),
        flag(p.removed),
        Value::Integer(now),
        p.last_seen_at.map_or(Value::Null, Value::Integer),
        p.ban_policy.as_str().into(),
        Value::Integer(p.version),
    ];
    let stmt = if p.version == 0 {
        Statement::new(
            "INSERT INTO mesh_peers (origin, key_id, public_key, local_approved, remote_approved, suspended, removed, \
               created_at, updated_at, last_seen_at, ban_policy, version) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, 1 + ?11) \
             ON CONFLICT (origin) DO NOTHING RETURNING origin",
            params,
        )
    } else {
        Statement::new(
            "UPDATE mesh_peers SET key_id = ?2, public_key = ?3, local_approved = ?4, remote_approved = ?5, \
               suspended = ?6, removed = ?7, updated_at = ?8, last_seen_at = ?9, ban_policy = ?10, \
               version = version + 1 \
             WHERE origin = ?1 AND version = ?11 RETURNING origin",
            params,
        )
    };
    let rows = sql.execute(stmt).await?;
    Ok(!rows.rows.is_empty())
}

/// Takes back a save the ledger could not record: the row as it was
/// (`before`), or no row, if nothing changed it since (`saved_version`).
pub async fn restore(
    sql: &dyn Sql,
    origin: &str,
    before: Option<&Peer>,
    saved_version: i64,
    now: i64,
) -> Result<(), Error> {
    match before {
        Some(b) => {
            let back = Peer {
                version: saved_version,
                ..b.clone()
            };
            save(sql, &back, now).await?;
        }
        None => {
            sql.execute(Statement::new(
                "DELETE FROM mesh_peers WHERE origin = ?1 AND version = ?2",
                vec![origin.into(), Value::Integer(saved_version)],
            ))
            .await?;
        }
    }
    Ok(())
}

/// Forgets pending requests (never approved here) older than `before` ms.
pub async fn expire_pending(sql: &dyn Sql, before: i64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "DELETE FROM mesh_peers WHERE local_approved = 0 AND removed = 0 AND updated_at < ?1",
        vec![Value::Integer(before)],
    ))
    .await?;
    Ok(())
}

/// Notes an authenticated request from the peer at `origin`.
pub async fn seen(sql: &dyn Sql, origin: &str, now: i64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_peers SET last_seen_at = ?2 WHERE origin = ?1",
        vec![origin.into(), Value::Integer(now)],
    ))
    .await?;
    Ok(())
}
