//! The OAuth tables: `oauth_states` (flows in progress, stored by the hash of
//! their `state`, single use, bound to the browser by the hash of a cookie
//! secret), `oauth_links` (a provider's subject to a user) and
//! `oauth_app_codes` (native apps' one-time codes, stored as hashes).
//!
//! In scope: storing and consuming states, app codes, and links (creating,
//! using, listing and removing them, and dropping unverified ones after a
//! password reset). Out of scope: the flow itself, account resolution rules
//! and the audit trail (`api::oauth`), and token checks (`crate::oidc`).

use edgecoder_kernel::{Sql, Statement, Value};

use super::email_tokens::CONSUMED_IN_BATCH;
use crate::Error;

/// A flow to remember until the provider redirects back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewState<'a> {
    /// The `state` parameter's hash.
    pub state_hash: &'a str,
    /// The hash of the browser cookie's secret.
    pub browser_hash: &'a str,
    /// The provider id.
    pub provider: &'a str,
    /// The PKCE verifier (RFC 7636), sent with the code.
    pub code_verifier: &'a str,
    /// The ID token nonce.
    pub nonce: &'a str,
    /// Where the flow ends, as stored.
    pub return_to: String,
    /// `sign_in` or `link`.
    pub purpose: &'a str,
    /// Who asked (linking).
    pub user_id: Option<&'a str>,
    /// The session that asked (linking).
    pub session_id: Option<&'a str>,
    /// A native app's own S256 challenge.
    pub app_challenge: Option<String>,
    /// Now (ms since the epoch).
    pub now: i64,
    /// When the flow expires (ms since the epoch).
    pub expires_at: i64,
}

/// Stores a flow's state, dropping expired ones in the same batch.
pub async fn put_state(sql: &dyn Sql, st: NewState<'_>) -> Result<(), Error> {
    sql.batch(vec![
        Statement::new(
            "DELETE FROM oauth_states WHERE expires_at <= ?1",
            vec![Value::Integer(st.now)],
        ),
        Statement::new(
            "INSERT INTO oauth_states (state_hash, browser_hash, provider, code_verifier, nonce, return_to, purpose, user_id, app_challenge, created_at, expires_at, session_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            vec![
                st.state_hash.into(),
                st.browser_hash.into(),
                st.provider.into(),
                st.code_verifier.into(),
                st.nonce.into(),
                st.return_to.into(),
                st.purpose.into(),
                st.user_id.map(str::to_owned).into(),
                st.app_challenge.into(),
                Value::Integer(st.now),
                Value::Integer(st.expires_at),
                st.session_id.map(str::to_owned).into(),
            ],
        ),
    ])
    .await?;
    Ok(())
}

/// A consumed flow state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The PKCE verifier.
    pub code_verifier: String,
    /// The ID token nonce.
    pub nonce: String,
    /// Where the flow ends, as stored.
    pub return_to: String,
    /// `sign_in` or `link`.
    pub purpose: String,
    /// Who asked (linking).
    pub user_id: Option<String>,
    /// The session that asked (linking).
    pub session_id: Option<String>,
    /// A native app's own S256 challenge.
    pub app_challenge: Option<String>,
}

/// Consumes a live state of `provider` started by the browser whose secret
/// hashes to `browser_hash`, in one `DELETE … RETURNING`: only the browser
/// that started the flow can use (and so use up) it. `None` if there is no
/// such state.
pub async fn take_state(
    sql: &dyn Sql,
    state_hash: &str,
    browser_hash: &str,
    provider: &str,
    now: i64,
) -> Result<Option<State>, Error> {
    let rows = sql
        .execute(Statement::new(
            "DELETE FROM oauth_states WHERE state_hash = ?1 AND browser_hash = ?2 AND provider = ?3 AND expires_at > ?4 \
             RETURNING code_verifier, nonce, return_to, purpose, user_id, app_challenge, session_id",
            vec![
                state_hash.into(),
                browser_hash.into(),
                provider.into(),
                Value::Integer(now),
            ],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    let get = |c: &str| rows.get_str(0, c).map(str::to_owned);
    Ok(Some(State {
        code_verifier: get("code_verifier").unwrap_or_default(),
        nonce: get("nonce").unwrap_or_default(),
        return_to: get("return_to").unwrap_or_default(),
        purpose: get("purpose").unwrap_or_default(),
        user_id: get("user_id"),
        session_id: get("session_id"),
        app_challenge: get("app_challenge"),
    }))
}

/// The statement dropping expired app codes (batched before a new one).
pub fn expire_app_codes(now: i64) -> Statement {
    Statement::new(
        "DELETE FROM oauth_app_codes WHERE expires_at <= ?1",
        vec![Value::Integer(now)],
    )
}

/// The statement storing a native app's one-time code for `user_id`, bound
/// to the app's own PKCE `challenge`.
pub fn insert_app_code(
    code_hash: &str,
    user_id: &str,
    challenge: &str,
    provider: &str,
    now: i64,
    expires_at: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO oauth_app_codes (code_hash, user_id, challenge, provider, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        vec![
            code_hash.into(),
            user_id.into(),
            challenge.into(),
            provider.into(),
            Value::Integer(now),
            Value::Integer(expires_at),
        ],
    )
}

/// A consumed app code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCode {
    /// The user it signs in.
    pub user_id: String,
    /// The app's S256 code challenge.
    pub challenge: String,
    /// The provider the user signed in with.
    pub provider: String,
}

/// Consumes a live app code, whatever the verifier will say (a guessed
/// verifier burns the code); `None` if unknown or expired.
pub async fn take_app_code(
    sql: &dyn Sql,
    code_hash: &str,
    now: i64,
) -> Result<Option<AppCode>, Error> {
    let rows = sql
        .execute(Statement::new(
            "DELETE FROM oauth_app_codes WHERE code_hash = ?1 AND expires_at > ?2 RETURNING user_id, challenge, provider",
            vec![code_hash.into(), Value::Integer(now)],
        ))
        .await?;
    let (Some(user_id), Some(challenge)) =
        (rows.get_str(0, "user_id"), rows.get_str(0, "challenge"))
    else {
        return Ok(None);
    };
    Ok(Some(AppCode {
        user_id: user_id.to_owned(),
        challenge: challenge.to_owned(),
        provider: rows.get_str(0, "provider").unwrap_or_default().to_owned(),
    }))
}

/// Marks the link of `subject` at `provider` used, recording the email the
/// provider reports now (if any); the linked user, `None` if not linked.
pub async fn touch_link(
    sql: &dyn Sql,
    provider: &str,
    subject: &str,
    now: i64,
    email: Option<&str>,
) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE oauth_links SET last_used_at = ?3, email = COALESCE(?4, email) \
             WHERE provider = ?1 AND subject = ?2 RETURNING user_id",
            vec![
                provider.into(),
                subject.into(),
                Value::Integer(now),
                email.map(str::to_owned).into(),
            ],
        ))
        .await?;
    Ok(rows.get_str(0, "user_id").map(str::to_owned))
}

/// The user `subject` at `provider` is linked to, if any.
pub async fn linked_user(
    sql: &dyn Sql,
    provider: &str,
    subject: &str,
) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT user_id FROM oauth_links WHERE provider = ?1 AND subject = ?2",
            vec![provider.into(), subject.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "user_id").map(str::to_owned))
}

/// A provider identity to link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLink<'a> {
    /// The provider id.
    pub provider: &'a str,
    /// The provider's stable user id.
    pub subject: &'a str,
    /// The email address the provider reported.
    pub email: Option<&'a str>,
    /// Whether the provider asserted it verified.
    pub email_verified: bool,
}

/// The statement linking an identity to an existing user. It changes nothing
/// when the subject is linked already or the user links another subject of
/// this provider.
pub fn insert_link(link: NewLink<'_>, user_id: &str, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO oauth_links (provider, subject, user_id, email, email_verified, created_at, last_used_at) \
         VALUES (?1, ?2, ?3, ?4, ?6, ?5, ?5) ON CONFLICT DO NOTHING",
        vec![
            link.provider.into(),
            link.subject.into(),
            user_id.into(),
            link.email.map(str::to_owned).into(),
            Value::Integer(now),
            Value::Integer(i64::from(link.email_verified)),
        ],
    )
}

/// The statement linking an identity to `user_id` from the session
/// `session_id`, only while that session lives (checked in the same
/// statement, so a sign-out everywhere during the provider round trip still
/// stops the link). It changes nothing when the subject is linked already
/// or the session is over.
pub fn insert_link_in_session(
    link: NewLink<'_>,
    user_id: &str,
    session_id: &str,
    now: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO oauth_links (provider, subject, user_id, email, email_verified, created_at, last_used_at) \
         SELECT ?1, ?2, ?3, ?4, ?6, ?5, ?5 \
         WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?7 AND user_id = ?3 AND revoked_at IS NULL AND expires_at > ?5) \
         ON CONFLICT DO NOTHING",
        vec![
            link.provider.into(),
            link.subject.into(),
            user_id.into(),
            link.email.map(str::to_owned).into(),
            Value::Integer(now),
            Value::Integer(i64::from(link.email_verified)),
            session_id.into(),
        ],
    )
}

/// The statement linking an identity to the account
/// [`super::users::insert_federated`] created in the same batch (created at
/// `now`, so an older account with that id is never linked). It changes
/// nothing when the subject is linked already.
pub fn insert_link_for_new_user(
    provider: &str,
    subject: &str,
    user_id: &str,
    email: &str,
    now: i64,
    email_verified: bool,
) -> Statement {
    Statement::new(
        "INSERT INTO oauth_links (provider, subject, user_id, email, email_verified, created_at, last_used_at) \
         SELECT ?1, ?2, id, ?4, ?6, ?5, ?5 FROM users WHERE id = ?3 AND created_at = ?5 \
         ON CONFLICT DO NOTHING",
        vec![
            provider.into(),
            subject.into(),
            user_id.into(),
            email.into(),
            Value::Integer(now),
            Value::Integer(i64::from(email_verified)),
        ],
    )
}

/// One of a user's links as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The provider id.
    pub provider: String,
    /// The email address the provider last reported.
    pub email: Option<String>,
    /// When it was linked (ms since the epoch).
    pub created_at: Option<i64>,
    /// When it last signed in (ms since the epoch).
    pub last_used_at: Option<i64>,
}

/// A user's links, oldest first.
pub async fn links_of(sql: &dyn Sql, user_id: &str) -> Result<Vec<Link>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT provider, email, created_at, last_used_at FROM oauth_links WHERE user_id = ?1 ORDER BY created_at",
            vec![user_id.into()],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| Link {
            provider: rows.get_str(i, "provider").unwrap_or_default().to_owned(),
            email: rows.get_str(i, "email").map(str::to_owned),
            created_at: rows.get_i64(i, "created_at"),
            last_used_at: rows.get_i64(i, "last_used_at"),
        })
        .collect())
}

/// Removes the user's link to `provider` (any provider id, configured or no
/// longer), only if something else signs the user in afterwards: a
/// password, a passkey, or a link to another of `configured_providers` (a
/// JSON array of provider ids). Whether it did.
pub async fn unlink_unless_last(
    sql: &dyn Sql,
    user_id: &str,
    provider: &str,
    configured_providers: String,
) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "DELETE FROM oauth_links WHERE user_id = ?1 AND provider = ?2 AND ( \
               EXISTS (SELECT 1 FROM users WHERE id = ?1 AND password_hash IS NOT NULL) \
               OR EXISTS (SELECT 1 FROM webauthn_credentials WHERE user_id = ?1) \
               OR EXISTS (SELECT 1 FROM oauth_links WHERE user_id = ?1 AND provider <> ?2 \
                          AND provider IN (SELECT value FROM json_each(?3))))",
            vec![user_id.into(), provider.into(), configured_providers.into()],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// Whether the user has a link to `provider`.
pub async fn is_linked(sql: &dyn Sql, user_id: &str, provider: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS linked FROM oauth_links WHERE user_id = ?1 AND provider = ?2",
            vec![user_id.into(), provider.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// The statement removing the links of `user_id` made on an address the
/// provider never verified, batched after [`super::email_tokens::consume`]
/// of a password reset and applied only if that consumed the token: whoever
/// proved the mailbox owns the account, so a link someone made by
/// pre-registering this address through a provider goes. Its change count is
/// the number removed.
pub fn delete_unverified_links_on_reset(
    token_hash: &str,
    now: i64,
    request_id: &str,
    user_id: &str,
) -> Statement {
    Statement::new(
        format!(
            "DELETE FROM oauth_links WHERE user_id = ?4 AND email_verified = 0 AND {CONSUMED_IN_BATCH}"
        ),
        vec![
            token_hash.into(),
            Value::Integer(now),
            request_id.into(),
            user_id.into(),
        ],
    )
}

/// The statement removing the links made on an address their provider never
/// verified, of the user whose address the token consumed in this batch
/// (request `request_id`) verifies: whoever proved the mailbox owns the
/// account, so a link someone made by signing in first with that unverified
/// address goes. Its change count is the number removed.
pub fn delete_unverified_links_on_verification(token_hash: &str, request_id: &str) -> Statement {
    Statement::new(
        "DELETE FROM oauth_links WHERE email_verified = 0 \
           AND user_id = (SELECT user_id FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?2)",
        vec![token_hash.into(), request_id.into()],
    )
}

/// The statement removing `user_id`'s links made on an unverified provider
/// address (the address's proven owner claimed the account).
pub fn delete_unverified_links_of(user_id: &str) -> Statement {
    Statement::new(
        "DELETE FROM oauth_links WHERE user_id = ?1 AND email_verified = 0",
        vec![user_id.into()],
    )
}
