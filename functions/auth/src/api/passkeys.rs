//! Passkeys (WebAuthn Level 3, JSON serialisation with base64url): the
//! registration and authentication ceremonies, and managing one's passkeys.
//!
//! In scope: challenges (32 random bytes, single use, 5 minutes, bound to
//! the ceremony and, for registration, to the user; stored hashed and
//! consumed by one `DELETE … RETURNING`), origin and RP id checks, UP and UV,
//! the signature counter (a regression flags the credential as possibly
//! cloned, refused by default), the backup-eligible flag (must not change),
//! sign-in options that look the same for unknown emails (fake credential
//! ids derived from a server secret), sessions like password login (`amr`
//! `["pop", "mfa"]`) and step-up by passkey. Out of scope: the byte-level
//! checks (`crate::webauthn`) and attestation trust chains.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::StatusCode;
use edgecoder_kernel::{Request, Response, Services, Statement, Value};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::Settings;
use crate::ratelimit;
use crate::secrets::rfc3339;
use crate::session::{self, Client};
use crate::webauthn::{
    self, ALGORITHMS, AttestationObject, AuthData, CoseKey, FLAG_BE, FLAG_BS, Refusal,
};

/// Challenges live five minutes.
pub const CHALLENGE_MS: i64 = 5 * 60 * 1000;
/// What a passkey sign-in puts in `amr` (RFC 8176: proof of possession of a
/// key, with user verification making it multi-factor).
pub const AMR: [&str; 2] = ["pop", "mfa"];
/// Longest passkey name.
const MAX_NAME_CHARS: usize = 64;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str, what: &'static str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| Error::Passkey(Refusal::Malformed(what)))
}

fn challenge_hash(challenge_b64: &str) -> String {
    blake3::hash(challenge_b64.as_bytes()).to_hex().to_string()
}

fn enabled(s: &Services) -> Result<(), Error> {
    if Settings::of(s)?.passkey_rp_id.is_empty() || s.config.allowed_origins.is_empty() {
        return Err(Error::PasskeysDisabled);
    }
    Ok(())
}

/// A fresh challenge for `ceremony`, stored, bound to a user's session for
/// registration and step-up; returns its base64url.
async fn new_challenge(
    s: &Services,
    ceremony: &str,
    session: Option<&session::Principal>,
) -> Result<String, Error> {
    let mut raw = [0u8; 32];
    s.rng.fill(&mut raw);
    let challenge = b64(&raw);
    let now = s.clock.now_ms();
    s.sql
        .batch(vec![
            Statement::new(
                "DELETE FROM webauthn_challenges WHERE expires_at <= ?1",
                vec![Value::Integer(now)],
            ),
            Statement::new(
                "INSERT INTO webauthn_challenges (challenge_hash, ceremony, user_id, session_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?6, ?4, ?5)",
                vec![
                    challenge_hash(&challenge).into(),
                    ceremony.into(),
                    session.map(|p| p.user_id.clone()).into(),
                    Value::Integer(now),
                    Value::Integer(now + CHALLENGE_MS),
                    session.map(|p| p.session_id.clone()).into(),
                ],
            ),
        ])
        .await?;
    Ok(challenge)
}

/// Consumes a challenge of `ceremony` issued to `session` (none for
/// sign-in); returns the user it was bound to.
async fn consume_challenge(
    s: &Services,
    challenge_b64: &str,
    ceremony: &str,
    session: Option<&str>,
) -> Result<Option<String>, Error> {
    let rows = s
        .sql
        .execute(Statement::new(
            "DELETE FROM webauthn_challenges WHERE challenge_hash = ?1 AND ceremony = ?2 AND expires_at > ?3 \
               AND session_id IS ?4 \
             RETURNING user_id",
            vec![
                challenge_hash(challenge_b64).into(),
                ceremony.into(),
                Value::Integer(s.clock.now_ms()),
                session.map(str::to_owned).into(),
            ],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Err(Error::PasskeyChallengeInvalid);
    }
    Ok(rows.get_str(0, "user_id").map(str::to_owned))
}

/// The user's opaque WebAuthn handle, made on first use.
async fn user_handle(s: &Services, user_id: &str) -> Result<String, Error> {
    let mut raw = [0u8; 32];
    s.rng.fill(&mut raw);
    let rows = s
        .sql
        .batch(vec![
            Statement::new(
                "INSERT INTO webauthn_user_handles (user_id, handle) VALUES (?1, ?2) ON CONFLICT (user_id) DO NOTHING",
                vec![user_id.into(), b64(&raw).into()],
            ),
            Statement::new(
                "SELECT handle FROM webauthn_user_handles WHERE user_id = ?1",
                vec![user_id.into()],
            ),
        ])
        .await?;
    rows.get(1)
        .and_then(|r| r.get_str(0, "handle"))
        .map(str::to_owned)
        .ok_or_else(|| edgecoder_kernel::Error::Storage("user handle".into()).into())
}

fn descriptors(rows: &edgecoder_kernel::Rows) -> Vec<Json> {
    (0..rows.rows.len())
        .map(|i| {
            let transports: Json = rows
                .get_str(i, "transports")
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(json!([]));
            json!({"type": "public-key", "id": rows.get_str(i, "id"), "transports": transports})
        })
        .collect()
}

/// `POST /auth/passkeys/register/options`: signed in, with step-up.
pub async fn register_options(s: &Services, req: Request) -> Result<Response, Error> {
    enabled(s)?;
    let p = session::authenticate(s, &req).await?;
    p.require_step_up(s.clock.now_ms())?;
    let handle = user_handle(s, &p.user_id).await?;
    let existing = s
        .sql
        .execute(Statement::new(
            "SELECT id, transports FROM webauthn_credentials WHERE user_id = ?1 ORDER BY created_at",
            vec![p.user_id.as_str().into()],
        ))
        .await?;
    let name = s
        .sql
        .execute(Statement::new(
            "SELECT display_name FROM users WHERE id = ?1",
            vec![p.user_id.as_str().into()],
        ))
        .await?;
    let challenge = new_challenge(s, "registration", Some(&p)).await?;
    let params: Vec<Json> = ALGORITHMS
        .iter()
        .map(|alg| json!({"type": "public-key", "alg": alg}))
        .collect();
    Ok(ok_json(&json!({
        "rp": {"id": Settings::of(s)?.passkey_rp_id, "name": Settings::of(s)?.passkey_rp_name},
        "user": {
            "id": handle,
            "name": p.email,
            "displayName": name.get_str(0, "display_name").unwrap_or(&p.email),
        },
        "challenge": challenge,
        "pubKeyCredParams": params,
        "timeout": CHALLENGE_MS,
        "excludeCredentials": descriptors(&existing),
        "authenticatorSelection": {
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": "required",
        },
        "attestation": "none",
    })))
}

/// `RegistrationResponseJSON.response`.
#[derive(Deserialize)]
struct AttestationResponse {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "attestationObject")]
    attestation_object: String,
    #[serde(default)]
    transports: Vec<String>,
}

/// `RegistrationResponseJSON`.
#[derive(Deserialize)]
struct RegistrationJson {
    id: String,
    #[serde(rename = "rawId")]
    raw_id: String,
    #[serde(rename = "type")]
    type_: String,
    response: AttestationResponse,
}

/// `POST /auth/passkeys/register/verify` body.
#[derive(Deserialize)]
pub struct RegisterVerify {
    credential: RegistrationJson,
    #[serde(default)]
    name: Option<String>,
}

/// The client data checks every ceremony shares.
fn check_client_data(
    s: &Services,
    raw: &[u8],
    ceremony_type: &str,
) -> Result<webauthn::ClientData, Error> {
    let cd = webauthn::client_data(raw)?;
    if cd.type_ != ceremony_type {
        return Err(Refusal::Type.into());
    }
    if cd.cross_origin || !webauthn::origin_allowed(&cd.origin, &s.config.allowed_origins) {
        return Err(Refusal::Origin.into());
    }
    Ok(cd)
}

/// `POST /auth/passkeys/register/verify`: signed in; the challenge must be
/// this user's registration challenge.
pub async fn register_verify(s: &Services, req: Request) -> Result<Response, Error> {
    enabled(s)?;
    let p = session::authenticate(s, &req).await?;
    let body: RegisterVerify = req.json()?;
    // Checked before the challenge is spent on a ceremony that would fail.
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("Passkey");
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(edgecoder_kernel::Error::InvalidRequest(
            "name must be 1 to 64 printable characters.".into(),
        )
        .into());
    }
    let result = register_checks(s, &p, &body).await;
    let (id, attested, auth) = match result {
        Ok(v) => v,
        Err(e) => {
            audit::note(
                s,
                &req.ctx,
                &p.actor(),
                "auth.passkey.register",
                None,
                Outcome::Failure,
                json!({"reason": e.to_string()}),
            )
            .await?;
            return Err(e);
        }
    };
    let transports: Vec<&String> = body
        .credential
        .response
        .transports
        .iter()
        .filter(|t| {
            matches!(
                t.as_str(),
                "usb" | "nfc" | "ble" | "smart-card" | "hybrid" | "internal"
            )
        })
        .take(6)
        .collect();
    let now = s.clock.now_ms();
    let inserted = s
        .sql
        .execute(Statement::new(
            "INSERT INTO webauthn_credentials (id, user_id, public_key, alg, sign_count, backup_eligible, backed_up, transports, aaguid, name, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING",
            vec![
                id.as_str().into(),
                p.user_id.as_str().into(),
                Value::Blob(attested.key_cbor.clone()),
                Value::Integer(attested.key.alg()),
                Value::Integer(i64::from(auth.sign_count)),
                Value::Integer(i64::from(auth.flags & FLAG_BE != 0)),
                Value::Integer(i64::from(auth.flags & FLAG_BS != 0)),
                json!(transports).to_string().into(),
                uuid(&attested.aaguid).into(),
                name.into(),
                Value::Integer(now),
            ],
        ))
        .await?
        .changes
        == 1;
    audit::note(s, &req.ctx,
        &p.actor(),
        "auth.passkey.register",
        Some(&id),
        if inserted { Outcome::Success } else { Outcome::Denied },
        json!({"alg": attested.key.alg(), "aaguid": uuid(&attested.aaguid), "backup_eligible": auth.flags & FLAG_BE != 0, "reason": (!inserted).then_some("passkey_exists")}),
    )
    .await?;
    if !inserted {
        return Err(Error::PasskeyExists);
    }
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &json!({"id": id, "name": name, "alg": attested.key.alg(), "created_at": rfc3339(now)}),
    ))
}

async fn register_checks(
    s: &Services,
    p: &session::Principal,
    body: &RegisterVerify,
) -> Result<(String, webauthn::Attested, AuthData), Error> {
    let c = &body.credential;
    if c.type_ != "public-key" || c.id != c.raw_id {
        return Err(Refusal::Malformed("credential").into());
    }
    let raw_id = unb64(&c.raw_id, "rawId")?;
    let client_data_raw = unb64(&c.response.client_data_json, "clientDataJSON")?;
    let cd = check_client_data(s, &client_data_raw, "webauthn.create")?;
    let bound = consume_challenge(s, &cd.challenge, "registration", Some(&p.session_id)).await?;
    if bound.as_deref() != Some(p.user_id.as_str()) {
        return Err(Error::PasskeyChallengeInvalid);
    }
    let att =
        AttestationObject::parse(&unb64(&c.response.attestation_object, "attestationObject")?)?;
    let auth = AuthData::parse(&att.auth_data)?;
    auth.require_rp(&Settings::of(s)?.passkey_rp_id)?;
    auth.require_up_uv()?;
    if auth.flags & FLAG_BS != 0 && auth.flags & FLAG_BE == 0 {
        return Err(Refusal::Malformed("authenticatorData flags").into());
    }
    let attested = auth
        .attested
        .clone()
        .ok_or(Refusal::Malformed("attested credential data"))?;
    if attested.credential_id != raw_id {
        return Err(Refusal::Malformed("credential id").into());
    }
    if !ALGORITHMS.contains(&attested.key.alg()) {
        return Err(Refusal::Algorithm.into());
    }
    att.verify(&attested.key, &Sha256::digest(&client_data_raw))?;
    Ok((b64(&raw_id), attested, auth))
}

fn uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

async fn limit_address(s: &Services, req: &Request) -> Result<(), Error> {
    if let Some(ip) = ratelimit::ip_subject(&req.ctx) {
        ratelimit::attempt(s, &ratelimit::PASSKEY_PER_IP, &ip).await?;
    }
    Ok(())
}

/// `POST /auth/passkeys/step-up/options`: a challenge only this signed-in
/// user can answer, for `POST /auth/step-up {passkey}`.
pub async fn step_up_options(s: &Services, req: Request) -> Result<Response, Error> {
    enabled(s)?;
    let p = session::authenticate(s, &req).await?;
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT id, transports FROM webauthn_credentials WHERE user_id = ?1 ORDER BY created_at",
            vec![p.user_id.as_str().into()],
        ))
        .await?;
    let challenge = new_challenge(s, "step_up", Some(&p)).await?;
    Ok(ok_json(&json!({
        "challenge": challenge,
        "timeout": CHALLENGE_MS,
        "rpId": Settings::of(s)?.passkey_rp_id,
        "allowCredentials": descriptors(&rows),
        "userVerification": "required",
    })))
}

/// `POST /auth/passkeys/login/options` body.
#[derive(Deserialize, Default)]
pub struct LoginOptions {
    #[serde(default)]
    email: Option<String>,
}

/// Credential ids that stand in for an account that has none: derived from
/// a server secret, so the same email always gets the same answer.
fn fake_ids(s: &Services, email: &str) -> Vec<Json> {
    let secret = s
        .config
        .signing_key
        .as_ref()
        .and_then(|k| k.to_pkcs8_base64().ok())
        .unwrap_or_default();
    let key = blake3::derive_key(
        "edgecoder.dev passkey fake credential ids v1",
        secret.as_bytes(),
    );
    let seed = blake3::keyed_hash(&key, email.as_bytes());
    let count = 1 + usize::from(seed.as_bytes()[0] % 2);
    // Real ids come in the lengths authenticators use (16 to 64 bytes), so
    // the fakes take one of those per id rather than one tell-tale length.
    const LENGTHS: [usize; 4] = [16, 20, 32, 64];
    (0..count)
        .map(|i| {
            let mut xof = blake3::Hasher::new_keyed(&key)
                .update(format!("{email}\n{i}").as_bytes())
                .finalize_xof();
            let mut id = [0u8; 65];
            xof.fill(&mut id);
            let len = LENGTHS[usize::from(id[64] % 4)];
            json!({"type": "public-key", "id": b64(&id[..len]), "transports": ["internal", "hybrid"]})
        })
        .collect()
}

/// `POST /auth/passkeys/login/options`: discoverable with no email; with an
/// email, its credentials, or fakes that look the same.
pub async fn login_options(s: &Services, req: Request) -> Result<Response, Error> {
    enabled(s)?;
    limit_address(s, &req).await?;
    let body: LoginOptions = if req.body.is_empty() {
        LoginOptions::default()
    } else {
        req.json()?
    };
    let allow = match body.email.as_deref().map(|e| e.trim().to_ascii_lowercase()) {
        None => Vec::new(),
        Some(email) => {
            let rows = s
                .sql
                .execute(Statement::new(
                    "SELECT c.id, c.transports FROM webauthn_credentials c JOIN users u ON u.id = c.user_id \
                     WHERE u.email = ?1 ORDER BY c.created_at",
                    vec![email.as_str().into()],
                ))
                .await?;
            if rows.rows.is_empty() {
                fake_ids(s, &email)
            } else {
                descriptors(&rows)
            }
        }
    };
    let challenge = new_challenge(s, "authentication", None).await?;
    Ok(ok_json(&json!({
        "challenge": challenge,
        "timeout": CHALLENGE_MS,
        "rpId": Settings::of(s)?.passkey_rp_id,
        "allowCredentials": allow,
        "userVerification": "required",
    })))
}

/// `AuthenticationResponseJSON.response`.
#[derive(Deserialize)]
struct AssertionResponse {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
    #[serde(default, rename = "userHandle")]
    user_handle: Option<String>,
}

/// `AuthenticationResponseJSON`.
#[derive(Deserialize)]
pub struct AssertionJson {
    id: String,
    #[serde(rename = "rawId")]
    raw_id: String,
    #[serde(rename = "type")]
    type_: String,
    response: AssertionResponse,
}

/// `POST /auth/passkeys/login/verify` body.
#[derive(Deserialize)]
pub struct LoginVerify {
    credential: AssertionJson,
    #[serde(default)]
    client: Option<String>,
}

/// A verified assertion: the credential and its owner.
pub struct Asserted {
    /// Credential id (base64url).
    pub credential_id: String,
    /// Its owner.
    pub user_id: String,
}

/// A fixed P-256 key (the curve's base point, private half 1, whose
/// signatures nobody here makes), checked against when the credential is
/// unknown so both answers cost the same.
const DUMMY_POINT: [u8; 65] = [
    0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2,
    0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e,
    0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51,
    0xf5,
];

/// Every check of an assertion answering a challenge of `ceremony` (for
/// step-up, issued to the caller's session), then the counter update. The answer for
/// an unknown credential is the one for a bad signature, at the same cost,
/// so assertions cannot probe which credential ids exist.
pub async fn verify_assertion(
    s: &Services,
    req: &Request,
    c: &AssertionJson,
    ceremony: &str,
    caller: Option<&session::Principal>,
) -> Result<Asserted, Error> {
    let expected_user = caller.map(|p| p.user_id.as_str());
    if c.type_ != "public-key" || c.id != c.raw_id {
        return Err(Refusal::Malformed("credential").into());
    }
    let raw_id = unb64(&c.raw_id, "rawId")?;
    let client_data_raw = unb64(&c.response.client_data_json, "clientDataJSON")?;
    let cd = check_client_data(s, &client_data_raw, "webauthn.get")?;
    // Consumed first: a response is good for one try, whatever happens next.
    let bound = consume_challenge(
        s,
        &cd.challenge,
        ceremony,
        caller.map(|p| p.session_id.as_str()),
    )
    .await?;
    if bound.as_deref() != expected_user {
        return Err(Error::PasskeyChallengeInvalid);
    }
    let auth_raw = unb64(&c.response.authenticator_data, "authenticatorData")?;
    let auth = AuthData::parse(&auth_raw)?;
    auth.require_rp(&Settings::of(s)?.passkey_rp_id)?;
    auth.require_up_uv()?;
    if auth.attested.is_some() || (auth.flags & FLAG_BS != 0 && auth.flags & FLAG_BE == 0) {
        return Err(Refusal::Malformed("authenticatorData flags").into());
    }
    let signature = unb64(&c.response.signature, "signature")?;
    let mut signed = auth_raw.clone();
    signed.extend_from_slice(&Sha256::digest(&client_data_raw));
    let id = b64(&raw_id);
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT c.user_id, c.public_key, c.sign_count, c.backup_eligible, c.clone_suspected_at, h.handle \
             FROM webauthn_credentials c LEFT JOIN webauthn_user_handles h ON h.user_id = c.user_id WHERE c.id = ?1",
            vec![id.as_str().into()],
        ))
        .await?;
    let (Some(user_id), Some(key_cbor)) =
        (rows.get_str(0, "user_id"), rows.get_blob(0, "public_key"))
    else {
        let _ = CoseKey::Es256(DUMMY_POINT.to_vec())
            .verify_with(s.signatures.as_ref(), &signed, &signature)
            .await;
        return Err(Error::PasskeyAssertionInvalid);
    };
    let user_id = user_id.to_owned();
    let key = CoseKey::from_cbor(key_cbor)?;
    key.verify_with(s.signatures.as_ref(), &signed, &signature)
        .await
        .map_err(|_| Error::PasskeyAssertionInvalid)?;
    if let Some(h) = &c.response.user_handle
        && !h.is_empty()
        && Some(h.trim_end_matches('=')) != rows.get_str(0, "handle")
    {
        return Err(Error::PasskeyUserMismatch);
    }
    if expected_user.is_some_and(|u| u != user_id) {
        return Err(Error::PasskeyUserMismatch);
    }
    if (auth.flags & FLAG_BE != 0) != (rows.get_i64(0, "backup_eligible") == Some(1)) {
        return Err(Error::PasskeyBackupStateChanged);
    }
    // A flagged credential stays refused until its owner deletes it.
    if rows.get_i64(0, "clone_suspected_at").is_some()
        && Settings::of(s)?.passkey_refuse_counter_regression
    {
        return Err(Error::PasskeyCloneSuspected);
    }
    let stored = rows.get_i64(0, "sign_count").unwrap_or(0);
    let received = i64::from(auth.sign_count);
    let now = s.clock.now_ms();
    // The counter moves only forward, in one conditional UPDATE, so two
    // assertions with the same counter cannot both pass.
    let moved = s
        .sql
        .execute(Statement::new(
            "UPDATE webauthn_credentials SET sign_count = ?2, backed_up = ?3, last_used_at = ?4 \
             WHERE id = ?1 AND (sign_count < ?2 OR (?2 = 0 AND sign_count = 0))",
            vec![
                id.as_str().into(),
                Value::Integer(received),
                Value::Integer(i64::from(auth.flags & FLAG_BS != 0)),
                Value::Integer(now),
            ],
        ))
        .await?
        .changes
        == 1;
    // Authenticators without a counter send 0 every time (synced passkeys):
    // that is no regression.
    if !moved && received != 0 {
        let refuse = Settings::of(s)?.passkey_refuse_counter_regression;
        s.sql
            .batch(vec![
                Statement::new(
                    "UPDATE webauthn_credentials SET clone_suspected_at = COALESCE(clone_suspected_at, ?2) WHERE id = ?1",
                    vec![id.as_str().into(), Value::Integer(now)],
                ),
                audit::statement_for(s, &req.ctx, &format!("user:{user_id}"), "auth.passkey.clone_suspected", Some(&id),
                    if refuse { Outcome::Denied } else { Outcome::Success },
                    json!({"severity": "critical", "stored_count": stored, "received_count": received, "refused": refuse})),
            ])
            .await?;
        if refuse {
            return Err(Error::PasskeyCloneSuspected);
        }
    }
    Ok(Asserted {
        credential_id: id,
        user_id,
    })
}

/// `POST /auth/passkeys/login/verify`: a session like password login.
pub async fn login_verify(s: &Services, req: Request) -> Result<Response, Error> {
    enabled(s)?;
    let body: LoginVerify = req.json()?;
    let client = Client::parse(body.client.as_deref())?;
    limit_address(s, &req).await?;
    let asserted = match verify_assertion(s, &req, &body.credential, "authentication", None).await {
        Ok(a) => a,
        Err(e) => {
            audit::note(s, &req.ctx,
                "anonymous",
                "auth.passkey.login",
                None,
                Outcome::Failure,
                json!({"reason": e.to_string(), "credential": body.credential.id.chars().take(1400).collect::<String>()}),
            )
            .await?;
            return Err(e);
        }
    };
    let (mut stmts, sid, refresh) =
        session::create_session(s, &req, &asserted.user_id, client, &AMR, None);
    stmts.push(audit::statement_for(s, &req.ctx,
        &format!("user:{}", asserted.user_id),
        "auth.login",
        Some(&asserted.user_id),
        Outcome::Success,
        json!({"session": sid, "client": client.as_str(), "method": "passkey", "credential": asserted.credential_id}),
    ));
    let results = s.sql.batch(stmts).await?;
    if results.first().map(|r| r.changes) != Some(1) {
        return Err(Error::PasskeyAssertionInvalid);
    }
    let access = session::access_token(s, &sid).await?;
    Ok(session::token_response(s, &access, Some(&refresh), client))
}

/// `GET /auth/passkeys`: the caller's passkeys.
pub async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT id, name, alg, aaguid, transports, backup_eligible, backed_up, created_at, last_used_at, clone_suspected_at \
             FROM webauthn_credentials WHERE user_id = ?1 ORDER BY created_at",
            vec![p.user_id.as_str().into()],
        ))
        .await?;
    let items: Vec<Json> = (0..rows.rows.len())
        .map(|i| {
            json!({
                "id": rows.get_str(i, "id"),
                "name": rows.get_str(i, "name"),
                "alg": rows.get_i64(i, "alg"),
                "aaguid": rows.get_str(i, "aaguid"),
                "transports": rows.get_str(i, "transports").and_then(|t| serde_json::from_str::<Json>(t).ok()),
                "backup_eligible": rows.get_i64(i, "backup_eligible") == Some(1),
                "backed_up": rows.get_i64(i, "backed_up") == Some(1),
                "created_at": rows.get_i64(i, "created_at").map(rfc3339),
                "last_used_at": rows.get_i64(i, "last_used_at").map(rfc3339),
                "clone_suspected": rows.get_i64(i, "clone_suspected_at").is_some(),
            })
        })
        .collect();
    Ok(ok_json(&json!({ "passkeys": items })))
}

/// `PATCH /auth/passkeys/{id}` body.
#[derive(Deserialize)]
pub struct Rename {
    name: String,
}

/// `PATCH /auth/passkeys/{id}`: rename one's own passkey.
pub async fn rename(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    let body: Rename = req.json()?;
    let name = body.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(edgecoder_kernel::Error::InvalidRequest(
            "name must be 1 to 64 printable characters.".into(),
        )
        .into());
    }
    let changed = s
        .sql
        .execute(Statement::new(
            "UPDATE webauthn_credentials SET name = ?3 WHERE id = ?1 AND user_id = ?2",
            vec![id.as_str().into(), p.user_id.as_str().into(), name.into()],
        ))
        .await?
        .changes;
    if changed != 1 {
        return Err(Error::PasskeyNotFound);
    }
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        "auth.passkey.rename",
        Some(&id),
        Outcome::Success,
        json!({}),
    )
    .await?;
    Ok(ok_json(&json!({"id": id, "name": name})))
}

/// `DELETE /auth/passkeys/{id}`: step-up; never the last way to sign in.
pub async fn delete(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    p.require_step_up(s.clock.now_ms())?;
    let id = req.param("id").unwrap_or_default().to_owned();
    // Deleted only if something else signs the user in afterwards: a
    // password, another passkey, or a linked provider.
    let changed = s
        .sql
        .execute(Statement::new(
            "DELETE FROM webauthn_credentials WHERE id = ?1 AND user_id = ?2 AND ( \
               EXISTS (SELECT 1 FROM users WHERE id = ?2 AND password_hash IS NOT NULL) \
               OR EXISTS (SELECT 1 FROM oauth_links WHERE user_id = ?2 \
                          AND provider IN (SELECT value FROM json_each(?3))) \
               OR (SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = ?2) > 1)",
            vec![
                id.as_str().into(),
                p.user_id.as_str().into(),
                crate::api::oauth::configured_ids(s).into(),
            ],
        ))
        .await?
        .changes;
    if changed == 1 {
        audit::note(
            s,
            &req.ctx,
            &p.actor(),
            "auth.passkey.delete",
            Some(&id),
            Outcome::Success,
            json!({}),
        )
        .await?;
        return Ok(ok_json(&json!({"id": id, "status": "deleted"})));
    }
    let owned = s
        .sql
        .execute(Statement::new(
            "SELECT 1 AS owned FROM webauthn_credentials WHERE id = ?1 AND user_id = ?2",
            vec![id.as_str().into(), p.user_id.as_str().into()],
        ))
        .await?;
    if owned.rows.is_empty() {
        Err(Error::PasskeyNotFound)
    } else {
        Err(Error::LastSignInMethod)
    }
}
