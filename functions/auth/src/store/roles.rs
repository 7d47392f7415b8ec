//! The `user_roles` table: role grants and revocations.
//!
//! In scope: granting a role to a verified account, revoking one (never the
//! last `system_admin`), the first-admin bootstrap grant, undoing a grant the
//! transparency log refused, and reading a user's roles with whether their
//! address is verified. Out of scope: who may change roles and the
//! transparency log (the handlers), and the roles a session carries
//! (`crate::session`). `user` is implicit for everyone and never stored.

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

/// Roles from a `group_concat` list, the implicit `user` first.
pub(super) fn with_implicit_user(list: Option<&str>) -> Vec<String> {
    let mut roles = vec!["user".to_owned()];
    roles.extend(
        list.unwrap_or("")
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
    );
    roles
}

/// The statement granting `role` to a verified user; it changes nothing when
/// the user is unknown, unverified or already holds it. A statement because
/// it is run both alone and to restore a revocation the log refused.
pub fn grant(user_id: &str, role: &str, granted_by: &str, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO user_roles (user_id, role, granted_by, granted_at) \
         SELECT id, ?2, ?3, ?4 FROM users WHERE id = ?1 AND email_verified_at IS NOT NULL \
         ON CONFLICT (user_id, role) DO NOTHING",
        vec![
            user_id.into(),
            role.into(),
            granted_by.into(),
            Value::Integer(now),
        ],
    )
}

/// Removes a grant unconditionally (undoing one the transparency log could
/// not record).
pub async fn remove(sql: &dyn Sql, user_id: &str, role: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2",
        vec![user_id.into(), role.into()],
    ))
    .await?;
    Ok(())
}

/// Revokes `role` from `user_id` unless it is the last `system_admin`;
/// whether a grant was removed.
pub async fn revoke(sql: &dyn Sql, user_id: &str, role: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2 \
             AND (role <> 'system_admin' OR (SELECT count(*) FROM user_roles WHERE role = 'system_admin') > 1)",
            vec![user_id.into(), role.into()],
        ))
        .await?;
    Ok(rows.changes == 1)
}

/// Makes the verified `user_id` the first `system_admin`: one statement, so
/// the grant happens only while no admin exists. Whether it did.
pub async fn bootstrap_admin(sql: &dyn Sql, user_id: &str, now: i64) -> Result<bool, Error> {
    let results = sql
        .batch(vec![Statement::new(
            "INSERT INTO user_roles (user_id, role, granted_by, granted_at) \
             SELECT id, 'system_admin', 'system:bootstrap', ?2 FROM users \
             WHERE id = ?1 AND email_verified_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM user_roles WHERE role = 'system_admin') \
             ON CONFLICT (user_id, role) DO NOTHING",
            vec![user_id.into(), Value::Integer(now)],
        )])
        .await?;
    Ok(results.first().map(|r| r.changes) == Some(1))
}

/// Undoes [`bootstrap_admin`] (when the transparency log refused it).
pub async fn remove_bootstrap_admin(sql: &dyn Sql, user_id: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "DELETE FROM user_roles WHERE user_id = ?1 AND role = 'system_admin' AND granted_by = 'system:bootstrap'",
        vec![user_id.into()],
    ))
    .await?;
    Ok(())
}

/// A user's roles and whether their address is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    /// Whether the email address is verified.
    pub email_verified: bool,
    /// Roles, the implicit `user` first, then the stored ones.
    pub roles: Vec<String>,
}

/// A user's roles and verification; `None` for an unknown user.
pub async fn of_user(sql: &dyn Sql, user_id: &str) -> Result<Option<RoleState>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT u.email_verified_at, (SELECT group_concat(role) FROM user_roles WHERE user_id = u.id) AS roles \
             FROM users u WHERE u.id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(RoleState {
        email_verified: rows.get_i64(0, "email_verified_at").is_some(),
        roles: with_implicit_user(rows.get_str(0, "roles")),
    }))
}
