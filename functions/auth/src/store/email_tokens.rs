//! The `email_tokens` table: one-time tokens mailed for email verification
//! and password reset, stored as their hashes.
//!
//! In scope: issuing a token, consuming one (a conditional UPDATE that
//! records the consuming request, so later statements of the same batch can
//! key on it, see [`CONSUMED_IN_BATCH`]), superseding a user's other
//! outstanding tokens, and looking up a live reset token. Out of scope:
//! making and hashing tokens (`crate::secrets`), mailing them
//! (`crate::mail`), and what a consumed token changes (the statements of
//! [`super::users`], [`super::sessions`] and [`super::oauth`] batched after
//! it).

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Verifying the address it was sent to.
    VerifyEmail,
    /// Setting a new password.
    PasswordReset,
}

impl Purpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::PasswordReset => "password_reset",
        }
    }
}

/// The condition for statements batched after [`consume`]: the token `?1`
/// was consumed by request `?3`. Statements using it take the token hash,
/// the time and the request id as `?1`, `?2` and `?3`.
pub const CONSUMED_IN_BATCH: &str =
    "EXISTS (SELECT 1 FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?3)";

/// The statement storing a token of `purpose` sent to `email` for `user_id`;
/// it keys on the user existing, so it follows an account insert that did
/// nothing.
pub fn issue(
    token_hash: &str,
    purpose: Purpose,
    user_id: &str,
    email: &str,
    now: i64,
    ttl_ms: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO email_tokens (token_hash, purpose, user_id, email, created_at, expires_at) \
         SELECT ?1, ?2, id, ?4, ?5, ?6 FROM users WHERE id = ?3",
        vec![
            token_hash.into(),
            purpose.as_str().into(),
            user_id.into(),
            email.into(),
            Value::Integer(now),
            Value::Integer(now + ttl_ms),
        ],
    )
}

/// The statement consuming a live, unused token of `purpose` for request
/// `request_id`; it changes one row exactly when the token was good.
pub fn consume(purpose: Purpose, token_hash: &str, now: i64, request_id: &str) -> Statement {
    let sql = match purpose {
        Purpose::VerifyEmail => {
            "UPDATE email_tokens SET consumed_at = ?2, consumed_by = ?3 \
             WHERE token_hash = ?1 AND purpose = 'verify_email' AND consumed_at IS NULL AND expires_at > ?2"
        }
        Purpose::PasswordReset => {
            "UPDATE email_tokens SET consumed_at = ?2, consumed_by = ?3 \
             WHERE token_hash = ?1 AND purpose = 'password_reset' AND consumed_at IS NULL AND expires_at > ?2"
        }
    };
    Statement::new(
        sql,
        vec![token_hash.into(), Value::Integer(now), request_id.into()],
    )
}

/// The statement that, after a token of `purpose` is consumed by request
/// `request_id`, stops the user's other outstanding tokens of that purpose.
pub fn supersede_siblings(
    purpose: Purpose,
    token_hash: &str,
    request_id: &str,
    now: i64,
) -> Statement {
    Statement::new(
        "UPDATE email_tokens SET consumed_at = ?4, consumed_by = 'superseded' \
         WHERE purpose = ?1 AND consumed_at IS NULL \
           AND user_id IN (SELECT user_id FROM email_tokens WHERE token_hash = ?2 AND consumed_by = ?3)",
        vec![
            purpose.as_str().into(),
            token_hash.into(),
            request_id.into(),
            Value::Integer(now),
        ],
    )
}

/// The statement stopping every outstanding token of `purpose` of a user.
pub fn supersede_outstanding(user_id: &str, purpose: Purpose, now: i64) -> Statement {
    Statement::new(
        "UPDATE email_tokens SET consumed_at = ?3, consumed_by = 'superseded' \
         WHERE user_id = ?1 AND purpose = ?2 AND consumed_at IS NULL",
        vec![user_id.into(), purpose.as_str().into(), Value::Integer(now)],
    )
}

/// The holder of a live reset token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetHolder {
    /// The user the token was issued to.
    pub user_id: String,
    /// The user's current email address.
    pub email: String,
}

/// The user a live, unused verification token was sent for.
pub async fn verification_holder(
    sql: &dyn Sql,
    token_hash: &str,
    now: i64,
) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT user_id FROM email_tokens \
             WHERE token_hash = ?1 AND purpose = 'verify_email' AND consumed_at IS NULL AND expires_at > ?2",
            vec![token_hash.into(), Value::Integer(now)],
        ))
        .await?;
    Ok(rows.get_str(0, "user_id").map(str::to_owned))
}

/// The user of a live, unused password-reset token and their address.
pub async fn reset_holder(
    sql: &dyn Sql,
    token_hash: &str,
    now: i64,
) -> Result<Option<ResetHolder>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT t.user_id, u.email FROM email_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = ?1 AND t.purpose = 'password_reset' AND t.consumed_at IS NULL AND t.expires_at > ?2",
            vec![token_hash.into(), Value::Integer(now)],
        ))
        .await?;
    Ok(
        match (rows.get_str(0, "user_id"), rows.get_str(0, "email")) {
            (Some(user_id), Some(email)) => Some(ResetHolder {
                user_id: user_id.to_owned(),
                email: email.to_owned(),
            }),
            _ => None,
        },
    )
}
