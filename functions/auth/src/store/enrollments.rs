//! The `node_enrollments` table: one redeemable enrollment token per node
//! id, bound to its owner and kind, stored as its hash.
//!
//! In scope: enrolling (or re-enrolling) a node id, listing a user's
//! enrollments, finding a node's owner, deleting an enrollment, and redeeming
//! a token once. Out of scope: node id and kind rules, who may delete, the
//! audit trail (the handlers in `api::nodes`), and making and hashing tokens
//! (`crate::secrets`).

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

/// A new enrollment token for a node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEnrollment<'a> {
    /// The node id.
    pub node_id: &'a str,
    /// The enrolling user.
    pub owner_id: &'a str,
    /// `agent` or `coordinator`.
    pub kind: &'a str,
    /// Now (ms since the epoch).
    pub now: i64,
    /// The token's hash.
    pub token_hash: &'a str,
    /// When the token expires (ms since the epoch).
    pub expires_at: i64,
}

/// Enrollments one account may have waiting to be redeemed (unexpired).
pub const MAX_PENDING_PER_OWNER: i64 = 10;
/// Node ids one account may hold at all.
pub const MAX_NODES_PER_OWNER: i64 = 1000;

/// What [`enroll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolled {
    /// The token is stored.
    Stored,
    /// The node id is another user's.
    OwnedByAnother,
    /// The owner is at [`MAX_PENDING_PER_OWNER`] or [`MAX_NODES_PER_OWNER`].
    OwnerAtLimit,
}

/// Stores an enrollment token for a node id, replacing the stored one (the
/// old token dies). A node id belongs to the user who enrolled it; nobody
/// else can take it over, except an enrollment that was never redeemed and
/// whose token expired (so ids cannot be squatted by enrolling and walking
/// away). The caps per owner are part of the same statement, so concurrent
/// enrollments cannot overshoot them; re-enrolling a node id the owner
/// already holds does not count twice.
pub async fn enroll(sql: &dyn Sql, e: NewEnrollment<'_>) -> Result<Enrolled, Error> {
    let rows = sql
        .execute(Statement::new(
            "INSERT INTO node_enrollments (node_id, owner_id, kind, created_at, updated_at, token_hash, token_expires_at) \
             SELECT ?1, ?2, ?3, ?4, ?4, ?5, ?6 \
             WHERE (SELECT COUNT(*) FROM node_enrollments WHERE owner_id = ?2 AND node_id <> ?1 \
                      AND token_redeemed_at IS NULL AND token_expires_at > ?4) < ?7 \
               AND (SELECT COUNT(*) FROM node_enrollments WHERE owner_id = ?2 AND node_id <> ?1) < ?8 \
             ON CONFLICT (node_id) DO UPDATE SET owner_id = excluded.owner_id, kind = excluded.kind, updated_at = excluded.updated_at, \
               token_hash = excluded.token_hash, token_expires_at = excluded.token_expires_at, token_redeemed_at = NULL \
             WHERE node_enrollments.owner_id = excluded.owner_id \
                OR (node_enrollments.token_redeemed_at IS NULL AND node_enrollments.token_expires_at <= excluded.updated_at) \
             RETURNING node_id",
            vec![
                e.node_id.into(),
                e.owner_id.into(),
                e.kind.into(),
                Value::Integer(e.now),
                e.token_hash.into(),
                Value::Integer(e.expires_at),
                Value::Integer(MAX_PENDING_PER_OWNER),
                Value::Integer(MAX_NODES_PER_OWNER),
            ],
        ))
        .await?;
    if !rows.rows.is_empty() {
        return Ok(Enrolled::Stored);
    }
    Ok(match owner(sql, e.node_id).await? {
        Some(owner) if owner != e.owner_id => Enrolled::OwnedByAnother,
        _ => Enrolled::OwnerAtLimit,
    })
}

/// One of a user's enrollments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEnrollment {
    /// The node id.
    pub node_id: Option<String>,
    /// `agent` or `coordinator`.
    pub kind: Option<String>,
    /// When it was first enrolled (ms since the epoch).
    pub created_at: i64,
    /// When it last changed (ms since the epoch).
    pub updated_at: i64,
    /// When its current token expires (ms since the epoch).
    pub token_expires_at: i64,
    /// When its current token was redeemed, if it was.
    pub token_redeemed_at: Option<i64>,
}

/// A user's enrollments, oldest first (at most 1000).
pub async fn of_owner(sql: &dyn Sql, owner_id: &str) -> Result<Vec<NodeEnrollment>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT node_id, kind, created_at, updated_at, token_expires_at, token_redeemed_at \
             FROM node_enrollments WHERE owner_id = ?1 ORDER BY created_at LIMIT 1000",
            vec![owner_id.into()],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| NodeEnrollment {
            node_id: rows.get_str(i, "node_id").map(str::to_owned),
            kind: rows.get_str(i, "kind").map(str::to_owned),
            created_at: rows.get_i64(i, "created_at").unwrap_or_default(),
            updated_at: rows.get_i64(i, "updated_at").unwrap_or_default(),
            token_expires_at: rows.get_i64(i, "token_expires_at").unwrap_or_default(),
            token_redeemed_at: rows.get_i64(i, "token_redeemed_at"),
        })
        .collect())
}

/// The owner of a node id's enrollment; `None` if it is not enrolled.
pub async fn owner(sql: &dyn Sql, node_id: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT owner_id FROM node_enrollments WHERE node_id = ?1",
            vec![node_id.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "owner_id").map(str::to_owned))
}

/// Deletes a node id's enrollment if `owner_id` still owns it (its tokens
/// die with it); whether it did.
pub async fn delete(sql: &dyn Sql, node_id: &str, owner_id: &str) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "DELETE FROM node_enrollments WHERE node_id = ?1 AND owner_id = ?2",
            vec![node_id.into(), owner_id.into()],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// Redeems the token hashed as `token_hash` for exactly this node id and
/// kind, once: one conditional UPDATE, so two racing redemptions cannot both
/// win. The owner's id, or `None` if the token cannot be redeemed.
pub async fn redeem(
    sql: &dyn Sql,
    token_hash: &str,
    node_id: &str,
    kind: &str,
    now: i64,
) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE node_enrollments SET token_redeemed_at = ?4, updated_at = ?4 \
             WHERE token_hash = ?1 AND node_id = ?2 AND kind = ?3 \
               AND token_redeemed_at IS NULL AND token_expires_at > ?4 \
             RETURNING owner_id",
            vec![
                token_hash.into(),
                node_id.into(),
                kind.into(),
                Value::Integer(now),
            ],
        ))
        .await?;
    Ok(rows.get_str(0, "owner_id").map(str::to_owned))
}

/// Blocks (or unblocks) enrollment for `user_id`.
pub async fn set_block(sql: &dyn Sql, user_id: &str, blocked: bool, now: i64) -> Result<(), Error> {
    let stmt = if blocked {
        Statement::new(
            "INSERT INTO auth_enrollment_blocks (user_id, blocked_at) VALUES (?1, ?2) \
             ON CONFLICT (user_id) DO NOTHING",
            vec![user_id.into(), Value::Integer(now)],
        )
    } else {
        Statement::new(
            "DELETE FROM auth_enrollment_blocks WHERE user_id = ?1",
            vec![user_id.into()],
        )
    };
    sql.execute(stmt).await?;
    Ok(())
}

/// Whether enrollment is blocked for `user_id`.
pub async fn blocked(sql: &dyn Sql, user_id: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS b FROM auth_enrollment_blocks WHERE user_id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}
