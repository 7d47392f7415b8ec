//! The `sessions` and `refresh_tokens` tables: sign-ins and their refresh
//! token families.
//!
//! In scope: rotating a refresh token, looking up a presented one that was
//! not exchanged (to tell reuse from a race), revoking sessions (one, one
//! family, all of a user's, all but the current one), the session list, and
//! recording a step-up. Out of scope: creating sessions and authenticating
//! access tokens against them (`crate::session`), and the token response.

use edgecoder_kernel::{Rows, Sql, Statement, Value};

use super::email_tokens::CONSUMED_IN_BATCH;
use crate::Error;
use crate::session::{Client, REFRESH_SLIDING_MS};

/// The statements exchanging the refresh token stored as `from` for the one
/// stored as `new`, for the atomic batch of a refresh (the handler appends
/// its audit statement). The new token is inserted only if `from` is still
/// unrotated and its `client` session live and unexpired; then `from` is
/// marked rotated, the session slides, and the last statement reads the
/// session back. [`rotated_session`] reads the batch's results.
pub fn rotate_refresh_token(from: &str, new: &str, now: i64, client: Client) -> Vec<Statement> {
    vec![
        Statement::new(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) \
             SELECT ?2, r.session_id, ?3 FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
             WHERE r.token_hash = ?1 AND r.rotated_at IS NULL AND s.revoked_at IS NULL \
               AND s.expires_at > ?3 AND s.client = ?4",
            vec![
                from.into(),
                new.into(),
                Value::Integer(now),
                client.as_str().into(),
            ],
        ),
        Statement::new(
            "UPDATE refresh_tokens SET rotated_at = ?3, replaced_by = ?2 WHERE token_hash = ?1 AND rotated_at IS NULL \
             AND EXISTS (SELECT 1 FROM refresh_tokens WHERE token_hash = ?2)",
            vec![from.into(), new.into(), Value::Integer(now)],
        ),
        Statement::new(
            "UPDATE sessions SET last_used_at = ?2, expires_at = ?3 \
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = ?1)",
            vec![
                new.into(),
                Value::Integer(now),
                Value::Integer(now + REFRESH_SLIDING_MS),
            ],
        ),
        Statement::new(
            "SELECT r.session_id, s.user_id FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
             WHERE r.token_hash = ?1",
            vec![new.into()],
        ),
    ]
}

/// The session whose token a batch starting with [`rotate_refresh_token`]'s
/// statements rotated; `None` if it rotated nothing.
pub fn rotated_session(results: &[Rows]) -> Option<String> {
    if results.first().map(|r| r.changes) != Some(1) {
        return None;
    }
    let rows = results.get(3)?;
    Some(rows.get_str(0, "session_id").unwrap_or_default().to_owned())
}

/// A presented refresh token that was not exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedToken {
    /// Its session (the token family).
    pub session_id: String,
    /// When it was rotated, if it was.
    pub rotated_at: Option<i64>,
    /// Its successor's hash, if rotated.
    pub replaced_by: Option<String>,
    /// The session's user.
    pub user_id: Option<String>,
    /// Whether the successor exists and has not been rotated itself.
    pub successor_unused: bool,
}

/// What is stored about the refresh token hashed as `token_hash`; `None` if
/// it is unknown.
pub async fn presented_token(
    sql: &dyn Sql,
    token_hash: &str,
) -> Result<Option<PresentedToken>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT r.session_id, r.rotated_at, r.replaced_by, s.user_id, \
               (SELECT rotated_at IS NULL FROM refresh_tokens WHERE token_hash = r.replaced_by) AS successor_unused \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = ?1",
            vec![token_hash.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "session_id").map(|sid| PresentedToken {
        session_id: sid.to_owned(),
        rotated_at: rows.get_i64(0, "rotated_at"),
        replaced_by: rows.get_str(0, "replaced_by").map(str::to_owned),
        user_id: rows.get_str(0, "user_id").map(str::to_owned),
        successor_unused: rows.get_i64(0, "successor_unused") == Some(1),
    }))
}

/// The statement revoking a whole session (its token family) because a
/// copy of a rotated refresh token was used.
pub fn revoke_family(session_id: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'refresh_token_reuse' \
         WHERE id = ?1 AND revoked_at IS NULL",
        vec![session_id.into(), Value::Integer(now)],
    )
}

/// The statement revoking one session at sign-out.
pub fn sign_out(session_id: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'logout' WHERE id = ?1 AND revoked_at IS NULL",
        vec![session_id.into(), Value::Integer(now)],
    )
}

/// The statement revoking every live session of a user at sign-out
/// everywhere; its change count is the number revoked.
pub fn sign_out_all(user_id: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'logout_all' WHERE user_id = ?1 AND revoked_at IS NULL",
        vec![user_id.into(), Value::Integer(now)],
    )
}

/// The statement revoking every live session of a user except
/// `current_session` after a password change; its change count is the
/// number revoked.
pub fn revoke_others_on_password_change(
    user_id: &str,
    current_session: &str,
    now: i64,
) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?3, revoked_reason = 'password_change' \
         WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
        vec![user_id.into(), current_session.into(), Value::Integer(now)],
    )
}

/// The statement revoking every live session of `user_id` after a password
/// reset, batched after [`super::email_tokens::consume`] and applied only if
/// that consumed the token; its change count is the number revoked.
pub fn revoke_all_on_reset(
    token_hash: &str,
    now: i64,
    request_id: &str,
    user_id: &str,
) -> Statement {
    Statement::new(
        format!(
            "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'password_reset' \
             WHERE user_id = ?4 AND revoked_at IS NULL AND {CONSUMED_IN_BATCH}"
        ),
        vec![
            token_hash.into(),
            Value::Integer(now),
            request_id.into(),
            user_id.into(),
        ],
    )
}

/// The statement revoking the sessions that began before the address was
/// verified by the token consumed in this batch (request `request_id`):
/// they were opened by someone who had not proven it. Its change count is
/// the number revoked.
pub fn revoke_before_verification(token_hash: &str, now: i64, request_id: &str) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'email_verified' \
         WHERE user_id = (SELECT user_id FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?3) \
           AND revoked_at IS NULL AND created_at < ?2",
        vec![token_hash.into(), Value::Integer(now), request_id.into()],
    )
}

/// The statement revoking every live session of `user_id` when the
/// address's proven owner claims an account that held an unproven password.
pub fn revoke_all_for_proven_owner(user_id: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'claimed_by_address_owner' \
         WHERE user_id = ?1 AND revoked_at IS NULL",
        vec![user_id.into(), Value::Integer(now)],
    )
}

/// Whether `session_id` is `user_id`'s and still live (not revoked, not
/// expired).
pub async fn is_live(
    sql: &dyn Sql,
    session_id: &str,
    user_id: &str,
    now: i64,
) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS live FROM sessions WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
            vec![session_id.into(), user_id.into(), Value::Integer(now)],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Revokes one of the user's own live sessions; whether it did.
pub async fn revoke_own(
    sql: &dyn Sql,
    session_id: &str,
    user_id: &str,
    now: i64,
) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "UPDATE sessions SET revoked_at = ?3, revoked_reason = 'revoked_by_user' \
             WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
            vec![session_id.into(), user_id.into(), Value::Integer(now)],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// One live session in the user's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// Session id.
    pub id: String,
    /// `browser` or `device`.
    pub client: Option<String>,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
    /// When its refresh token was last used (ms since the epoch).
    pub last_used_at: i64,
    /// The address it signed in from.
    pub client_ip: Option<String>,
    /// The user agent it signed in with.
    pub user_agent: Option<String>,
}

/// A user's live sessions, newest first (at most 200).
pub async fn live(sql: &dyn Sql, user_id: &str, now: i64) -> Result<Vec<LiveSession>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, client, created_at, last_used_at, client_ip, user_agent FROM sessions \
             WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 ORDER BY created_at DESC LIMIT 200",
            vec![user_id.into(), Value::Integer(now)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| LiveSession {
            id: rows.get_str(i, "id").unwrap_or_default().to_owned(),
            client: rows.get_str(i, "client").map(str::to_owned),
            created_at: rows.get_i64(i, "created_at").unwrap_or_default(),
            last_used_at: rows.get_i64(i, "last_used_at").unwrap_or_default(),
            client_ip: rows.get_str(i, "client_ip").map(str::to_owned),
            user_agent: rows.get_str(i, "user_agent").map(str::to_owned),
        })
        .collect())
}

/// The statement recording a step-up on a live session: the new
/// `auth_time` (Unix seconds), and `method` added to its `amr` once.
pub fn record_step_up(session_id: &str, auth_time_secs: i64, method: &str) -> Statement {
    Statement::new(
        "UPDATE sessions SET auth_time = ?2, \
         amr = CASE WHEN EXISTS (SELECT 1 FROM json_each(amr) WHERE value = ?3) THEN amr \
               ELSE json_insert(amr, '$[#]', ?3) END \
         WHERE id = ?1 AND revoked_at IS NULL",
        vec![
            session_id.into(),
            Value::Integer(auth_time_secs),
            method.into(),
        ],
    )
}
