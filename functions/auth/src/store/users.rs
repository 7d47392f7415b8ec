//! The `users` table: accounts, their passwords and profiles.
//!
//! In scope: creating accounts (with a password at sign-up, or federated from
//! an OAuth provider), looking them up by email or id, setting and rehashing
//! password hashes, marking email addresses verified, and the admin's user
//! list. Out of scope: hashing and policy (`crate::password`), the email
//! tokens that prove a mailbox ([`super::email_tokens`]), roles
//! ([`super::roles`]) and sessions ([`super::sessions`]).

use edgecoder_kernel::{Sql, Statement, Value};

use super::email_tokens::CONSUMED_IN_BATCH;
use super::roles::with_implicit_user;
use crate::Error;

/// The statement creating a password account. It does nothing for a
/// registered address (and cannot race into a duplicate), so its change
/// count says whether the account was created.
pub fn insert_with_password(
    id: &str,
    email: &str,
    password_hash: String,
    display_name: Option<String>,
    now: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO users (id, email, password_hash, display_name, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (email) DO NOTHING",
        vec![
            id.into(),
            email.into(),
            password_hash.into(),
            display_name.into(),
            Value::Integer(now),
        ],
    )
}

/// The statement creating an account for a new OAuth identity: no password,
/// verified (at `email_verified_at`) only if the provider said so. It does
/// nothing if the address is registered by then.
pub fn insert_federated(
    id: &str,
    email: &str,
    email_verified_at: Option<i64>,
    display_name: Option<String>,
    now: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO users (id, email, email_verified_at, password_hash, display_name, created_at, updated_at) \
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?5) ON CONFLICT DO NOTHING",
        vec![
            id.into(),
            email.into(),
            email_verified_at.into(),
            display_name.into(),
            Value::Integer(now),
        ],
    )
}

/// The statement deleting a just-created federated account that ended up
/// without a link: a concurrent sign-in of the same subject linked it first,
/// and no account without a way in is left behind.
pub fn delete_if_unlinked(user_id: &str) -> Statement {
    Statement::new(
        "DELETE FROM users WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM oauth_links WHERE user_id = ?1)",
        vec![user_id.into()],
    )
}

/// The statement verifying the address a verification token was sent to,
/// batched after [`super::email_tokens::consume`] by request `request_id`.
/// Only the address the token was sent to is verified.
pub fn verify_from_token(token_hash: &str, now: i64, request_id: &str) -> Statement {
    Statement::new(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, ?2), updated_at = ?2 \
         WHERE (id, email) IN (SELECT user_id, email FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?3)",
        vec![token_hash.into(), Value::Integer(now), request_id.into()],
    )
}

/// The statement recording that the verification consumed in this batch
/// (request `request_id`) also presented the account's password
/// (`verified_hash`, still the stored one): whoever controls the address
/// holds the password too.
pub fn prove_password_from_token(
    token_hash: &str,
    now: i64,
    request_id: &str,
    user_id: &str,
    verified_hash: &str,
) -> Statement {
    Statement::new(
        format!(
            "UPDATE users SET password_proven_at = ?2 \
             WHERE id = ?4 AND password_hash = ?5 AND {CONSUMED_IN_BATCH}"
        ),
        vec![
            token_hash.into(),
            Value::Integer(now),
            request_id.into(),
            user_id.into(),
            verified_hash.into(),
        ],
    )
}

/// Whether `user_id` has a password chosen by someone who had not proven
/// the address (set before verification and never confirmed since).
pub async fn has_unproven_password(sql: &dyn Sql, user_id: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS unproven FROM users WHERE id = ?1 AND password_hash IS NOT NULL AND password_proven_at IS NULL",
            vec![user_id.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// The statement removing `user_id`'s password if it is still unproven
/// (the address's proven owner claimed the account).
pub fn drop_unproven_password(user_id: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE users SET password_hash = NULL, updated_at = ?2 \
         WHERE id = ?1 AND password_hash IS NOT NULL AND password_proven_at IS NULL",
        vec![user_id.into(), Value::Integer(now)],
    )
}

/// The current address of `user_id`.
pub async fn email_of(sql: &dyn Sql, user_id: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT email FROM users WHERE id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "email").map(str::to_owned))
}

/// The statement replacing the password hash (a password change).
pub fn set_password(user_id: &str, password_hash: String, now: i64) -> Statement {
    Statement::new(
        "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
        vec![user_id.into(), password_hash.into(), Value::Integer(now)],
    )
}

/// The statement upgrading a password hash to current parameters, only
/// while `verified_hash` (the one just checked) is still the stored one.
pub fn rehash_password(
    user_id: &str,
    password_hash: String,
    now: i64,
    verified_hash: &str,
) -> Statement {
    Statement::new(
        "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1 AND password_hash = ?4",
        vec![
            user_id.into(),
            password_hash.into(),
            Value::Integer(now),
            verified_hash.into(),
        ],
    )
}

/// The statement setting the password of `user_id` after a reset, batched
/// after [`super::email_tokens::consume`] and applied only if that consumed
/// the token. The reset proved control of the mailbox, so it also verifies
/// it.
pub fn reset_password(
    token_hash: &str,
    now: i64,
    request_id: &str,
    user_id: &str,
    password_hash: String,
) -> Statement {
    Statement::new(
        format!(
            "UPDATE users SET password_hash = ?5, password_proven_at = ?2, \
               email_verified_at = COALESCE(email_verified_at, ?2), updated_at = ?2 \
             WHERE id = ?4 AND {CONSUMED_IN_BATCH}"
        ),
        vec![
            token_hash.into(),
            Value::Integer(now),
            request_id.into(),
            user_id.into(),
            password_hash.into(),
        ],
    )
}

/// The id of the account with this (normalised) email address.
pub async fn id_by_email(sql: &dyn Sql, email: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM users WHERE email = ?1",
            vec![email.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "id").map(str::to_owned))
}

/// The id of the account with this email address if the address is not
/// verified yet.
pub async fn unverified_id_by_email(sql: &dyn Sql, email: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM users WHERE email = ?1 AND email_verified_at IS NULL",
            vec![email.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "id").map(str::to_owned))
}

/// An account's password sign-in data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub id: String,
    /// Argon2id PHC string; `None` for accounts without a password.
    pub password_hash: Option<String>,
    /// The address is verified but the password was never shown to be its
    /// owner's (chosen before verification, not presented with it, not reset
    /// since): it needs re-confirmation before it signs in again.
    pub password_unconfirmed: bool,
}

/// The account with this email address and its password hash.
pub async fn credentials_by_email(
    sql: &dyn Sql,
    email: &str,
) -> Result<Option<Credentials>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, password_hash, \
               (email_verified_at IS NOT NULL AND password_proven_at IS NULL) AS unconfirmed \
             FROM users WHERE email = ?1",
            vec![email.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "id").map(|id| Credentials {
        id: id.to_owned(),
        password_hash: rows.get_str(0, "password_hash").map(str::to_owned),
        password_unconfirmed: rows.get_i64(0, "unconfirmed") == Some(1),
    }))
}

/// A user's password hash; `None` for an unknown user or one without a
/// password.
pub async fn password_hash(sql: &dyn Sql, user_id: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT password_hash FROM users WHERE id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "password_hash").map(str::to_owned))
}

/// An account found by email, with whether its address is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailOwner {
    /// User id.
    pub id: String,
    /// Whether the address is verified.
    pub email_verified: bool,
}

/// The account with this email address and whether the address is verified.
pub async fn owner_of_email(sql: &dyn Sql, email: &str) -> Result<Option<EmailOwner>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, email_verified_at FROM users WHERE email = ?1",
            vec![email.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "id").map(|id| EmailOwner {
        id: id.to_owned(),
        email_verified: rows.get_i64(0, "email_verified_at").is_some(),
    }))
}

/// What `/auth/me` shows besides the session's own data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The display name, if set.
    pub display_name: Option<String>,
    /// When the account was created (ms since the epoch).
    pub created_at: i64,
}

/// A user's profile; `None` for an unknown user.
pub async fn profile(sql: &dyn Sql, user_id: &str) -> Result<Option<Profile>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT display_name, created_at FROM users WHERE id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Profile {
        display_name: rows.get_str(0, "display_name").map(str::to_owned),
        created_at: rows.get_i64(0, "created_at").unwrap_or_default(),
    }))
}

/// A user's display name; `None` if unset or the user is unknown.
pub async fn display_name(sql: &dyn Sql, user_id: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT display_name FROM users WHERE id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "display_name").map(str::to_owned))
}

/// One account in the admin's user list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// User id.
    pub id: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// The display name, if set.
    pub display_name: Option<String>,
    /// Roles, the implicit `user` first, then the stored ones.
    pub roles: Vec<String>,
    /// When the account was created (ms since the epoch).
    pub created_at: i64,
}

/// Up to `limit` accounts with ids after `after`, ordered by id (keyset
/// pagination).
pub async fn page(sql: &dyn Sql, after: String, limit: i64) -> Result<Vec<Summary>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT u.id, u.email, u.email_verified_at, u.display_name, u.created_at, \
             (SELECT group_concat(role) FROM user_roles WHERE user_id = u.id) AS roles \
             FROM users u WHERE u.id > ?1 ORDER BY u.id LIMIT ?2",
            vec![after.into(), Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| Summary {
            id: rows.get_str(i, "id").map(str::to_owned),
            email: rows.get_str(i, "email").map(str::to_owned),
            email_verified: rows.get_i64(i, "email_verified_at").is_some(),
            display_name: rows.get_str(i, "display_name").map(str::to_owned),
            roles: with_implicit_user(rows.get_str(i, "roles")),
            created_at: rows.get_i64(i, "created_at").unwrap_or_default(),
        })
        .collect())
}
