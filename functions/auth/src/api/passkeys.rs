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
use edgecoder_kernel::{Request, Response, Services};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::Settings;
use crate::ratelimit;
use crate::secrets::rfc3339;
use crate::session::{self, Client};
use crate::store;
use crate::store::passkeys::{Descriptor, NewChallenge, NewCredential};
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
    store::passkeys::put_challenge(
        s.sql.as_ref(),
        NewChallenge {
            challenge_hash: &challenge_hash(&challenge),
            ceremony,
            user_id: session.map(|p| p.user_id.as_str()),
            session_id: session.map(|p| p.session_id.as_str()),
            now,
            expires_at: now + CHALLENGE_MS,
        },
    )
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
    let consumed = store::passkeys::take_challenge(
        s.sql.as_ref(),
        &challenge_hash(challenge_b64),
        ceremony,
        s.clock.now_ms(),
        session,
    )
    .await?
    .ok_or(Error::PasskeyChallengeInvalid)?;
    Ok(consumed.user_id)
}

/// The user's opaque WebAuthn handle, made on first use.
async fn user_handle(s: &Services, user_id: &str) -> Result<String, Error> {
    let mut raw = [0u8; 32];
    s.rng.fill(&mut raw);
    store::passkeys::user_handle(s.sql.as_ref(), user_id, &b64(&raw))
        .await?
        .ok_or_else(|| edgecoder_kernel::Error::Storage("user handle".into()).into())
}

fn descriptors(list: &[Descriptor]) -> Vec<Json> {
    list.iter()
        .map(|d| {
            let transports: Json = d
                .transports
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(json!([]));
            json!({"type": "public-key", "id": d.id, "transports": transports})
        })
        .collect()
}

/// `POST /auth/passkeys/register/options`: signed in, with step-up.
pub async fn register_options(s: &Services, req: Request) -> Result<Response, Error> {
    enabled(s)?;
    let p = session::authenticate(s, &req).await?;
    p.require_step_up(s.clock.now_ms())?;
    let handle = user_handle(s, &p.user_id).await?;
    let existing = store::passkeys::descriptors_of_user(s.sql.as_ref(), &p.user_id).await?;
    let name = store::users::display_name(s.sql.as_ref(), &p.user_id).await?;
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
            "displayName": name.as_deref().unwrap_or(&p.email),
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
    let inserted = store::passkeys::insert_credential(
        s.sql.as_ref(),
        NewCredential {
            id: &id,
            user_id: &p.user_id,
            public_key: attested.key_cbor.clone(),
            alg: attested.key.alg(),
            sign_count: i64::from(auth.sign_count),
            backup_eligible: auth.flags & FLAG_BE != 0,
            backed_up: auth.flags & FLAG_BS != 0,
            transports: json!(transports).to_string(),
            aaguid: uuid(&attested.aaguid),
            name,
            created_at: now,
        },
    )
    .await?;
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
    let existing = store::passkeys::descriptors_of_user(s.sql.as_ref(), &p.user_id).await?;
    let challenge = new_challenge(s, "step_up", Some(&p)).await?;
    Ok(ok_json(&json!({
        "challenge": challenge,
        "timeout": CHALLENGE_MS,
        "rpId": Settings::of(s)?.passkey_rp_id,
        "allowCredentials": descriptors(&existing),
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
            let found = store::passkeys::descriptors_by_email(s.sql.as_ref(), &email).await?;
            if found.is_empty() {
                fake_ids(s, &email)
            } else {
                descriptors(&found)
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
    let Some(cred) = store::passkeys::credential(s.sql.as_ref(), &id).await? else {
        let _ = CoseKey::Es256(DUMMY_POINT.to_vec())
            .verify_with(s.signatures.as_ref(), &signed, &signature)
            .await;
        return Err(Error::PasskeyAssertionInvalid);
    };
    let user_id = cred.user_id;
    let key = CoseKey::from_cbor(&cred.public_key)?;
    key.verify_with(s.signatures.as_ref(), &signed, &signature)
        .await
        .map_err(|_| Error::PasskeyAssertionInvalid)?;
    if let Some(h) = &c.response.user_handle
        && !h.is_empty()
        && Some(h.trim_end_matches('=')) != cred.handle.as_deref()
    {
        return Err(Error::PasskeyUserMismatch);
    }
    if expected_user.is_some_and(|u| u != user_id) {
        return Err(Error::PasskeyUserMismatch);
    }
    if (auth.flags & FLAG_BE != 0) != cred.backup_eligible {
        return Err(Error::PasskeyBackupStateChanged);
    }
    // A flagged credential stays refused until its owner deletes it.
    if cred.clone_suspected && Settings::of(s)?.passkey_refuse_counter_regression {
        return Err(Error::PasskeyCloneSuspected);
    }
    let stored = cred.sign_count;
    let received = i64::from(auth.sign_count);
    let now = s.clock.now_ms();
    // The counter moves only forward, in one conditional UPDATE, so two
    // assertions with the same counter cannot both pass.
    let moved = store::passkeys::advance_counter(
        s.sql.as_ref(),
        &id,
        received,
        auth.flags & FLAG_BS != 0,
        now,
    )
    .await?;
    // Authenticators without a counter send 0 every time (synced passkeys):
    // that is no regression.
    if !moved && received != 0 {
        let refuse = Settings::of(s)?.passkey_refuse_counter_regression;
        s.sql
            .batch(vec![
                store::passkeys::flag_clone_suspected(&id, now),
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
    let items: Vec<Json> = store::passkeys::of_user(s.sql.as_ref(), &p.user_id)
        .await?
        .into_iter()
        .map(|k| {
            json!({
                "id": k.id,
                "name": k.name,
                "alg": k.alg,
                "aaguid": k.aaguid,
                "transports": k.transports.and_then(|t| serde_json::from_str::<Json>(&t).ok()),
                "backup_eligible": k.backup_eligible,
                "backed_up": k.backed_up,
                "created_at": k.created_at.map(rfc3339),
                "last_used_at": k.last_used_at.map(rfc3339),
                "clone_suspected": k.clone_suspected,
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
    if !store::passkeys::rename(s.sql.as_ref(), &id, &p.user_id, name).await? {
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
    let deleted = store::passkeys::delete_unless_last(
        s.sql.as_ref(),
        &id,
        &p.user_id,
        crate::api::oauth::configured_ids(s),
    )
    .await?;
    if deleted {
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
    if store::passkeys::owns(s.sql.as_ref(), &id, &p.user_id).await? {
        Err(Error::LastSignInMethod)
    } else {
        Err(Error::PasskeyNotFound)
    }
}
