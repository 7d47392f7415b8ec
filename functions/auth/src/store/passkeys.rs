//! The WebAuthn tables: `webauthn_credentials` (passkeys),
//! `webauthn_user_handles` (the opaque handle authenticators store for a
//! user) and `webauthn_challenges` (single-use ceremony challenges, stored
//! as hashes).
//!
//! In scope: storing and consuming challenges, the user handle made on first
//! use, storing a credential, reading one for an assertion, moving its
//! signature counter forward, flagging a suspected clone, and a user's
//! passkeys (list, rename, delete). Out of scope: the ceremonies' checks
//! (`api::passkeys`, `crate::webauthn`) and the audit trail.

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

/// A challenge to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChallenge<'a> {
    /// The challenge's hash.
    pub challenge_hash: &'a str,
    /// `registration`, `authentication` or `step_up`.
    pub ceremony: &'a str,
    /// The user it is bound to (registration, step-up).
    pub user_id: Option<&'a str>,
    /// The session the ceremony was started in.
    pub session_id: Option<&'a str>,
    /// Now (ms since the epoch).
    pub now: i64,
    /// When it expires (ms since the epoch).
    pub expires_at: i64,
}

/// Stores a challenge, dropping expired ones in the same batch.
pub async fn put_challenge(sql: &dyn Sql, c: NewChallenge<'_>) -> Result<(), Error> {
    sql.batch(vec![
        Statement::new(
            "DELETE FROM webauthn_challenges WHERE expires_at <= ?1",
            vec![Value::Integer(c.now)],
        ),
        Statement::new(
            "INSERT INTO webauthn_challenges (challenge_hash, ceremony, user_id, session_id, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?6, ?4, ?5)",
            vec![
                c.challenge_hash.into(),
                c.ceremony.into(),
                c.user_id.map(str::to_owned).into(),
                Value::Integer(c.now),
                Value::Integer(c.expires_at),
                c.session_id.map(str::to_owned).into(),
            ],
        ),
    ])
    .await?;
    Ok(())
}

/// A consumed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The user it was bound to (none for sign-in).
    pub user_id: Option<String>,
}

/// Consumes a live challenge of `ceremony` issued in `session_id` (none for
/// sign-in) with one `DELETE … RETURNING`, so two racing responses cannot
/// both use it; `None` if there is no such challenge.
pub async fn take_challenge(
    sql: &dyn Sql,
    challenge_hash: &str,
    ceremony: &str,
    now: i64,
    session_id: Option<&str>,
) -> Result<Option<Challenge>, Error> {
    let rows = sql
        .execute(Statement::new(
            "DELETE FROM webauthn_challenges WHERE challenge_hash = ?1 AND ceremony = ?2 AND expires_at > ?3 \
               AND session_id IS ?4 \
             RETURNING user_id",
            vec![
                challenge_hash.into(),
                ceremony.into(),
                Value::Integer(now),
                session_id.map(str::to_owned).into(),
            ],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Challenge {
        user_id: rows.get_str(0, "user_id").map(str::to_owned),
    }))
}

/// The user's WebAuthn handle, stored as `candidate` if they have none yet.
pub async fn user_handle(
    sql: &dyn Sql,
    user_id: &str,
    candidate: &str,
) -> Result<Option<String>, Error> {
    let rows = sql
        .batch(vec![
            Statement::new(
                "INSERT INTO webauthn_user_handles (user_id, handle) VALUES (?1, ?2) ON CONFLICT (user_id) DO NOTHING",
                vec![user_id.into(), candidate.into()],
            ),
            Statement::new(
                "SELECT handle FROM webauthn_user_handles WHERE user_id = ?1",
                vec![user_id.into()],
            ),
        ])
        .await?;
    Ok(rows
        .get(1)
        .and_then(|r| r.get_str(0, "handle"))
        .map(str::to_owned))
}

/// A credential as options list it (`excludeCredentials`,
/// `allowCredentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Credential id (base64url).
    pub id: Option<String>,
    /// Its transports, a JSON array.
    pub transports: Option<String>,
}

fn descriptors(rows: &edgecoder_kernel::Rows) -> Vec<Descriptor> {
    (0..rows.rows.len())
        .map(|i| Descriptor {
            id: rows.get_str(i, "id").map(str::to_owned),
            transports: rows.get_str(i, "transports").map(str::to_owned),
        })
        .collect()
}

/// A user's credentials, oldest first.
pub async fn descriptors_of_user(sql: &dyn Sql, user_id: &str) -> Result<Vec<Descriptor>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, transports FROM webauthn_credentials WHERE user_id = ?1 ORDER BY created_at",
            vec![user_id.into()],
        ))
        .await?;
    Ok(descriptors(&rows))
}

/// A newly registered credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential<'a> {
    /// Credential id (base64url).
    pub id: &'a str,
    /// Its owner.
    pub user_id: &'a str,
    /// The COSE_Key bytes as registered.
    pub public_key: Vec<u8>,
    /// The COSE algorithm.
    pub alg: i64,
    /// The signature counter at registration.
    pub sign_count: i64,
    /// The backup-eligible flag.
    pub backup_eligible: bool,
    /// The backed-up flag.
    pub backed_up: bool,
    /// Transports, a JSON array.
    pub transports: String,
    /// The authenticator's AAGUID.
    pub aaguid: String,
    /// The user's name for it.
    pub name: &'a str,
    /// Now (ms since the epoch).
    pub created_at: i64,
}

/// Stores a credential; `false` if its id is registered already.
pub async fn insert_credential(sql: &dyn Sql, c: NewCredential<'_>) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "INSERT INTO webauthn_credentials (id, user_id, public_key, alg, sign_count, backup_eligible, backed_up, transports, aaguid, name, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING",
            vec![
                c.id.into(),
                c.user_id.into(),
                Value::Blob(c.public_key),
                Value::Integer(c.alg),
                Value::Integer(c.sign_count),
                Value::Integer(i64::from(c.backup_eligible)),
                Value::Integer(i64::from(c.backed_up)),
                c.transports.into(),
                c.aaguid.into(),
                c.name.into(),
                Value::Integer(c.created_at),
            ],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// What an assertion is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// Its owner.
    pub user_id: String,
    /// The COSE_Key bytes.
    pub public_key: Vec<u8>,
    /// The stored signature counter.
    pub sign_count: i64,
    /// The backup-eligible flag at registration.
    pub backup_eligible: bool,
    /// Whether it is flagged as possibly cloned.
    pub clone_suspected: bool,
    /// The owner's user handle.
    pub handle: Option<String>,
}

/// The credential with this id; `None` if unknown.
pub async fn credential(sql: &dyn Sql, id: &str) -> Result<Option<StoredCredential>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT c.user_id, c.public_key, c.sign_count, c.backup_eligible, c.clone_suspected_at, h.handle \
             FROM webauthn_credentials c LEFT JOIN webauthn_user_handles h ON h.user_id = c.user_id WHERE c.id = ?1",
            vec![id.into()],
        ))
        .await?;
    let (Some(user_id), Some(public_key)) =
        (rows.get_str(0, "user_id"), rows.get_blob(0, "public_key"))
    else {
        return Ok(None);
    };
    Ok(Some(StoredCredential {
        user_id: user_id.to_owned(),
        public_key: public_key.to_vec(),
        sign_count: rows.get_i64(0, "sign_count").unwrap_or(0),
        backup_eligible: rows.get_i64(0, "backup_eligible") == Some(1),
        clone_suspected: rows.get_i64(0, "clone_suspected_at").is_some(),
        handle: rows.get_str(0, "handle").map(str::to_owned),
    }))
}

/// Records a use of a credential with counter `received`. The counter moves
/// only forward, in one conditional UPDATE, so two assertions with the same
/// counter cannot both pass (0 after 0 is an authenticator without a
/// counter). Whether it moved.
pub async fn advance_counter(
    sql: &dyn Sql,
    id: &str,
    received: i64,
    backed_up: bool,
    now: i64,
) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "UPDATE webauthn_credentials SET sign_count = ?2, backed_up = ?3, last_used_at = ?4 \
             WHERE id = ?1 AND (sign_count < ?2 OR (?2 = 0 AND sign_count = 0))",
            vec![
                id.into(),
                Value::Integer(received),
                Value::Integer(i64::from(backed_up)),
                Value::Integer(now),
            ],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// The statement flagging a credential as possibly cloned (kept from the
/// first time); a flagged credential stays refused until its owner deletes
/// it.
pub fn flag_clone_suspected(id: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE webauthn_credentials SET clone_suspected_at = COALESCE(clone_suspected_at, ?2) WHERE id = ?1",
        vec![id.into(), Value::Integer(now)],
    )
}

/// One of a user's passkeys as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    /// Credential id (base64url).
    pub id: Option<String>,
    /// The user's name for it.
    pub name: Option<String>,
    /// The COSE algorithm.
    pub alg: Option<i64>,
    /// The authenticator's AAGUID.
    pub aaguid: Option<String>,
    /// Transports, a JSON array.
    pub transports: Option<String>,
    /// The backup-eligible flag.
    pub backup_eligible: bool,
    /// The backed-up flag as last seen.
    pub backed_up: bool,
    /// When it was registered (ms since the epoch).
    pub created_at: Option<i64>,
    /// When it last signed in (ms since the epoch).
    pub last_used_at: Option<i64>,
    /// Whether it is flagged as possibly cloned.
    pub clone_suspected: bool,
}

/// A user's passkeys, oldest first.
pub async fn of_user(sql: &dyn Sql, user_id: &str) -> Result<Vec<Passkey>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, name, alg, aaguid, transports, backup_eligible, backed_up, created_at, last_used_at, clone_suspected_at \
             FROM webauthn_credentials WHERE user_id = ?1 ORDER BY created_at",
            vec![user_id.into()],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| Passkey {
            id: rows.get_str(i, "id").map(str::to_owned),
            name: rows.get_str(i, "name").map(str::to_owned),
            alg: rows.get_i64(i, "alg"),
            aaguid: rows.get_str(i, "aaguid").map(str::to_owned),
            transports: rows.get_str(i, "transports").map(str::to_owned),
            backup_eligible: rows.get_i64(i, "backup_eligible") == Some(1),
            backed_up: rows.get_i64(i, "backed_up") == Some(1),
            created_at: rows.get_i64(i, "created_at"),
            last_used_at: rows.get_i64(i, "last_used_at"),
            clone_suspected: rows.get_i64(i, "clone_suspected_at").is_some(),
        })
        .collect())
}

/// Renames one of the user's passkeys; whether it did.
pub async fn rename(sql: &dyn Sql, id: &str, user_id: &str, name: &str) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "UPDATE webauthn_credentials SET name = ?3 WHERE id = ?1 AND user_id = ?2",
            vec![id.into(), user_id.into(), name.into()],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// Deletes one of the user's passkeys, only if something else signs the
/// user in afterwards: a password, another passkey, or a link to one of
/// `configured_providers` (a JSON array of provider ids). Whether it did.
pub async fn delete_unless_last(
    sql: &dyn Sql,
    id: &str,
    user_id: &str,
    configured_providers: String,
) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "DELETE FROM webauthn_credentials WHERE id = ?1 AND user_id = ?2 AND ( \
               EXISTS (SELECT 1 FROM users WHERE id = ?2 AND password_hash IS NOT NULL) \
               OR EXISTS (SELECT 1 FROM oauth_links WHERE user_id = ?2 \
                          AND provider IN (SELECT value FROM json_each(?3))) \
               OR (SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = ?2) > 1)",
            vec![id.into(), user_id.into(), configured_providers.into()],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// Whether the user has a passkey with this id.
pub async fn owns(sql: &dyn Sql, id: &str, user_id: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS owned FROM webauthn_credentials WHERE id = ?1 AND user_id = ?2",
            vec![id.into(), user_id.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// The statement removing every passkey of `user_id` (the address's proven
/// owner claimed an account whose passkeys were registered under a password
/// that was never proven).
pub fn delete_all_of(user_id: &str) -> Statement {
    Statement::new(
        "DELETE FROM webauthn_credentials WHERE user_id = ?1",
        vec![user_id.into()],
    )
}

/// The statement removing the passkeys registered before the address was
/// verified by the token consumed in this batch (request `request_id`): they
/// were registered by someone who had not proven it.
pub fn delete_before_verification(token_hash: &str, now: i64, request_id: &str) -> Statement {
    Statement::new(
        "DELETE FROM webauthn_credentials \
         WHERE user_id = (SELECT user_id FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?3) \
           AND created_at < ?2",
        vec![token_hash.into(), Value::Integer(now), request_id.into()],
    )
}
