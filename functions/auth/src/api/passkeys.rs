//! Passkeys: the HTTP side of the WebAuthn ceremonies and managing one's
//! passkeys.
//!
//! In scope: who may run which ceremony (registration and step-up signed
//! in, with a challenge bound to the session; sign-in for anyone, rate
//! limited per address), keeping each ceremony's state as its challenge's
//! row (stored hashed, single use, five minutes, consumed by one `DELETE …
//! RETURNING`), the signature counter (a regression flags the credential as
//! possibly cloned, refused by default), sign-in options that are the same
//! whoever asks (passkeys are discoverable, so no credential list is ever
//! sent, and an email says nothing about its account),
//! sessions like password login (`amr` `["pop", "mfa"]`) and step-up by
//! passkey, and the audit records. Out of scope: the ceremonies' checks
//! ([`crate::ceremony`]) and the byte-level parsing (`crate::webauthn`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::api::{authed, token_response_docs};
use crate::ceremony::{
    self, AuthenticationResponse, AuthenticationResponseJson, Ceremony, Challenge, Descriptor,
    PasskeyAuthentication, PasskeyRegistration, RegistrationResponse, RegistrationResponseJson,
    RelyingParty, StoredPasskey, UserEntity,
};
use crate::ratelimit;
use crate::secrets::rfc3339;
use crate::session::{self, Client};
use crate::store;
use crate::store::passkeys::{NewChallenge, NewCredential};
use crate::{DOCS, Error, Settings, schemas};

/// What a passkey sign-in puts in `amr` (RFC 8176: proof of possession of a
/// key, with user verification making it multi-factor).
pub const AMR: [&str; 2] = ["pop", "mfa"];
/// Longest passkey name.
const MAX_NAME_CHARS: usize = 64;

/// This deployment as the relying party, or `passkeys_disabled`.
fn relying_party(s: &Services) -> Result<RelyingParty<'_>, Error> {
    let settings = Settings::of(s)?;
    if settings.passkey_rp_id.is_empty() || s.config.allowed_origins.is_empty() {
        return Err(Error::PasskeysDisabled);
    }
    Ok(RelyingParty {
        id: &settings.passkey_rp_id,
        name: &settings.passkey_rp_name,
        origins: &s.config.allowed_origins,
    })
}

fn random(s: &Services) -> [u8; 32] {
    let mut raw = [0u8; 32];
    s.rng.fill(&mut raw);
    raw
}

/// Keeps a ceremony's state: its challenge's row, bound to the session for
/// registration and step-up.
async fn keep(
    s: &Services,
    challenge: &Challenge,
    ceremony: Ceremony,
    session: Option<&session::Principal>,
) -> Result<(), Error> {
    let now = s.clock.now_ms();
    store::passkeys::put_challenge(
        s.sql.as_ref(),
        NewChallenge {
            challenge_hash: &challenge.storage_key(),
            ceremony: ceremony.as_str(),
            user_id: session.map(|p| p.user_id.as_str()),
            session_id: session.map(|p| p.session_id.as_str()),
            now,
            expires_at: now + ceremony::TIMEOUT_MS,
        },
    )
    .await?;
    Ok(())
}

/// Consumes the state of the ceremony `challenge` answers: it must be of
/// `ceremony`, live, issued in `session` (none for sign-in); returns the
/// user it was bound to.
async fn take(
    s: &Services,
    challenge: &Challenge,
    ceremony: Ceremony,
    session: Option<&str>,
) -> Result<Option<String>, Error> {
    let consumed = store::passkeys::take_challenge(
        s.sql.as_ref(),
        &challenge.storage_key(),
        ceremony.as_str(),
        s.clock.now_ms(),
        session,
    )
    .await?
    .ok_or(Error::PasskeyChallengeInvalid)?;
    Ok(consumed.user_id)
}

/// The user's opaque WebAuthn handle, made on first use.
async fn user_handle(s: &Services, user_id: &str) -> Result<String, Error> {
    let candidate = URL_SAFE_NO_PAD.encode(random(s));
    store::passkeys::user_handle(s.sql.as_ref(), user_id, &candidate)
        .await?
        .ok_or_else(|| edgecoder_kernel::Error::Storage("user handle".into()).into())
}

fn descriptors(list: Vec<store::passkeys::Descriptor>) -> Vec<Descriptor> {
    list.into_iter()
        .map(|d| Descriptor {
            id: d.id.unwrap_or_default(),
            transports: d
                .transports
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default(),
        })
        .collect()
}

/// `POST /auth/passkeys/register/options`: signed in, with step-up.
pub async fn register_options(s: &Services, req: Request) -> Result<Response, Error> {
    let rp = relying_party(s)?;
    let p = session::authenticate(s, &req).await?;
    p.require_step_up(s.clock.now_ms())?;
    // A passkey is a credential for the address's owner: none before the
    // address is proven (pre-hijacking would keep one past verification).
    if !p.email_verified {
        return Err(Error::EmailUnverified);
    }
    let handle = user_handle(s, &p.user_id).await?;
    let existing = store::passkeys::descriptors_of_user(s.sql.as_ref(), &p.user_id).await?;
    let name = store::users::display_name(s.sql.as_ref(), &p.user_id).await?;
    let challenge = Challenge::new(random(s));
    let user = UserEntity {
        handle: &handle,
        name: &p.email,
        display_name: name.as_deref().unwrap_or(&p.email),
    };
    let (options, _state) =
        ceremony::start_registration(&rp, &p.user_id, &user, &descriptors(existing), &challenge);
    keep(s, &challenge, Ceremony::Registration, Some(&p)).await?;
    Ok(ok_json(&options))
}

/// `POST /auth/passkeys/register/verify` body.
#[derive(Deserialize)]
pub struct RegisterVerify {
    credential: RegistrationResponseJson,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /auth/passkeys/register/verify`: signed in; the challenge must be
/// this user's registration challenge.
pub async fn register_verify(s: &Services, req: Request) -> Result<Response, Error> {
    let rp = relying_party(s)?;
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
    let finished = async {
        let response = RegistrationResponse::read(&rp, body.credential)?;
        let bound = take(
            s,
            response.challenge(),
            Ceremony::Registration,
            Some(&p.session_id),
        )
        .await?;
        let state = match bound {
            Some(user) if user == p.user_id => {
                PasskeyRegistration::resume(response.challenge().clone(), user)
            }
            _ => return Err(Error::PasskeyChallengeInvalid),
        };
        ceremony::finish_registration(&rp, state, response)
    }
    .await;
    let passkey = match finished {
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
    let now = s.clock.now_ms();
    let inserted = store::passkeys::insert_credential(
        s.sql.as_ref(),
        NewCredential {
            id: &passkey.id,
            user_id: &passkey.user_id,
            public_key: passkey.public_key_cbor.clone(),
            alg: passkey.alg,
            sign_count: i64::from(passkey.sign_count),
            backup_eligible: passkey.backup_eligible,
            backed_up: passkey.backed_up,
            transports: json!(passkey.transports).to_string(),
            aaguid: passkey.aaguid.clone(),
            name,
            created_at: now,
        },
    )
    .await?;
    let details = json!({
        "alg": passkey.alg,
        "aaguid": passkey.aaguid,
        "backup_eligible": passkey.backup_eligible,
        "reason": (!inserted).then_some("passkey_exists"),
    });
    let outcome = if inserted {
        Outcome::Success
    } else {
        Outcome::Denied
    };
    let action = "auth.passkey.register";
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        action,
        Some(&passkey.id),
        outcome,
        details,
    )
    .await?;
    if !inserted {
        return Err(Error::PasskeyExists);
    }
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &json!({"id": passkey.id, "name": name, "alg": passkey.alg, "created_at": rfc3339(now)}),
    ))
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
    let rp = relying_party(s)?;
    let p = session::authenticate(s, &req).await?;
    let existing = store::passkeys::descriptors_of_user(s.sql.as_ref(), &p.user_id).await?;
    let challenge = Challenge::new(random(s));
    let (options, _state) = ceremony::start_authentication(
        &rp,
        Ceremony::StepUp,
        Some(&p.user_id),
        &descriptors(existing),
        &challenge,
    );
    keep(s, &challenge, Ceremony::StepUp, Some(&p)).await?;
    Ok(ok_json(&options))
}

/// `POST /auth/passkeys/login/options` body.
#[derive(Deserialize, Default)]
pub struct LoginOptions {
    /// Accepted for older portals and ignored: see [`login_options`].
    #[serde(default, rename = "email")]
    _email: Option<String>,
}

/// `POST /auth/passkeys/login/options`: the same answer for every caller,
/// with or without an email. Registration requires discoverable credentials
/// (`residentKey: "required"`), so the authenticator finds the account's
/// passkey without a list; sending one (real ids for accounts with passkeys,
/// stand-ins for the rest) told which addresses have passkeys through the
/// count and transports of the list, however the stand-ins were made.
pub async fn login_options(s: &Services, req: Request) -> Result<Response, Error> {
    let rp = relying_party(s)?;
    limit_address(s, &req).await?;
    if !req.body.is_empty() {
        req.json::<LoginOptions>()?;
    }
    let challenge = Challenge::new(random(s));
    let (options, _state) =
        ceremony::start_authentication(&rp, Ceremony::Authentication, None, &[], &challenge);
    keep(s, &challenge, Ceremony::Authentication, None).await?;
    Ok(ok_json(&options))
}

/// `POST /auth/passkeys/login/verify` body.
#[derive(Deserialize)]
pub struct LoginVerify {
    credential: AuthenticationResponseJson,
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

/// Finishes a sign-in (`caller` none) or a step-up (the caller's session
/// must have been issued the challenge), then moves the credential's
/// counter forward.
pub async fn verify_assertion(
    s: &Services,
    req: &Request,
    json: &AuthenticationResponseJson,
    ceremony: Ceremony,
    caller: Option<&session::Principal>,
) -> Result<Asserted, Error> {
    let rp = relying_party(s)?;
    let response = AuthenticationResponse::read(&rp, ceremony, json)?;
    // Consumed first: a response is good for one try, whatever happens next.
    let session_id = caller.map(|p| p.session_id.as_str());
    let bound = take(s, response.challenge(), ceremony, session_id).await?;
    if bound.as_deref() != caller.map(|p| p.user_id.as_str()) {
        return Err(Error::PasskeyChallengeInvalid);
    }
    let state = PasskeyAuthentication::resume(response.challenge().clone(), ceremony, bound);
    let id = response.credential_id();
    let cred = store::passkeys::credential(s.sql.as_ref(), &id).await?;
    let stored = cred.as_ref().map(|c| StoredPasskey {
        user_id: &c.user_id,
        public_key_cbor: &c.public_key,
        backup_eligible: c.backup_eligible,
        user_handle: c.handle.as_deref(),
    });
    let assertion =
        ceremony::finish_authentication(&rp, state, response, stored, s.signatures.as_ref())
            .await?;
    let Some(cred) = cred else {
        return Err(Error::PasskeyAssertionInvalid);
    };
    // A flagged credential stays refused until its owner deletes it.
    let refuse = Settings::of(s)?.passkey_refuse_counter_regression;
    if cred.clone_suspected && refuse {
        return Err(Error::PasskeyCloneSuspected);
    }
    let stored_count = cred.sign_count;
    let received = i64::from(assertion.sign_count);
    let now = s.clock.now_ms();
    // The counter moves only forward, in one conditional UPDATE, so two
    // assertions with the same counter cannot both pass.
    let moved =
        store::passkeys::advance_counter(s.sql.as_ref(), &id, received, assertion.backed_up, now)
            .await?;
    // Authenticators without a counter send 0 every time (synced passkeys):
    // that is no regression.
    if !moved && received != 0 {
        let details = json!({
            "severity": "critical",
            "stored_count": stored_count,
            "received_count": received,
            "refused": refuse,
        });
        let outcome = if refuse {
            Outcome::Denied
        } else {
            Outcome::Success
        };
        let actor = format!("user:{}", assertion.user_id);
        let action = "auth.passkey.clone_suspected";
        s.sql
            .batch(vec![
                store::passkeys::flag_clone_suspected(&id, now),
                audit::statement_for(s, &req.ctx, &actor, action, Some(&id), outcome, details),
            ])
            .await?;
        if refuse {
            return Err(Error::PasskeyCloneSuspected);
        }
    }
    Ok(Asserted {
        credential_id: assertion.credential_id,
        user_id: assertion.user_id,
    })
}

/// `POST /auth/passkeys/login/verify`: a session like password login.
pub async fn login_verify(s: &Services, req: Request) -> Result<Response, Error> {
    relying_party(s)?;
    let body: LoginVerify = req.json()?;
    let client = Client::parse(body.client.as_deref())?;
    limit_address(s, &req).await?;
    let asserted =
        match verify_assertion(s, &req, &body.credential, Ceremony::Authentication, None).await {
            Ok(a) => a,
            Err(e) => {
                let claimed: String = body.credential.id().chars().take(1400).collect();
                audit::note(
                    s,
                    &req.ctx,
                    "anonymous",
                    "auth.passkey.login",
                    None,
                    Outcome::Failure,
                    json!({"reason": e.to_string(), "credential": claimed}),
                )
                .await?;
                return Err(e);
            }
        };
    let (mut stmts, sid, refresh) =
        session::create_session(s, &req, &asserted.user_id, client, &AMR, None);
    let details = json!({
        "session": sid,
        "client": client.as_str(),
        "method": "passkey",
        "credential": asserted.credential_id,
    });
    let actor = format!("user:{}", asserted.user_id);
    stmts.push(audit::statement_for(
        s,
        &req.ctx,
        &actor,
        "auth.login",
        Some(&asserted.user_id),
        Outcome::Success,
        details,
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

fn register_docs() -> (RouteDoc, RouteDoc) {
    let summary = "PublicKeyCredentialCreationOptionsJSON for a new passkey (signed in, step-up)";
    let options = ok(200, "creation options (challenge single-use, 5 min)")
        .with_schema(schemas::passkey_creation_options());
    let body = object(
        &["credential"],
        json!({"credential": {"type": "object"}, "name": {"type": "string", "maxLength": 64}}),
    );
    let refused = "passkey_* (the failed check) / passkey_challenge_invalid";
    (
        DOCS.op(
            "passkey_register_options",
            summary,
            object(&[], json!({})),
            authed(vec![
                options,
                err(403, "step_up_required / email_unverified"),
                err(404, "passkeys_disabled"),
            ]),
        ),
        DOCS.op(
            "passkey_register_verify",
            "Verify a RegistrationResponseJSON and store the passkey",
            body,
            authed(vec![
                ok(201, "{id, name, alg, created_at}").with_schema(schemas::passkey()),
                err(400, refused),
                err(409, "passkey_exists"),
            ]),
        ),
    )
}

fn login_docs() -> (RouteDoc, RouteDoc) {
    let summary = "PublicKeyCredentialRequestOptionsJSON for discoverable credentials: the same answer for every caller (an email is accepted and ignored)";
    let options = ok(200, "request options (challenge single-use, 5 min)")
        .with_schema(schemas::passkey_request_options());
    let verify =
        "Verify an AuthenticationResponseJSON; a session like password login (amr pop, mfa)";
    let body = object(
        &["credential"],
        json!({"credential": {"type": "object"}, "client": {"enum": ["browser", "device"]}}),
    );
    let refused = "passkey_unknown / passkey_user_mismatch / passkey_clone_suspected / passkey_backup_state_changed";
    let responses = token_response_docs()
        .into_iter()
        .chain([
            err(400, "passkey_* / passkey_challenge_invalid"),
            err(401, refused),
        ])
        .collect();
    (
        DOCS.op(
            "passkey_login_options",
            summary,
            object(&[], json!({"email": crate::api::accounts::email_schema()})),
            vec![options, err(404, "passkeys_disabled")],
        ),
        DOCS.op("passkey_login_verify", verify, body, responses),
    )
}

fn step_up_doc() -> RouteDoc {
    let summary =
        "Request options for POST /auth/step-up {passkey}: a challenge bound to the signed-in user";
    let options = ok(
        200,
        "request options (challenge single-use, 5 min, this user only)",
    )
    .with_schema(schemas::passkey_request_options());
    DOCS.op(
        "passkey_step_up_options",
        summary,
        object(&[], json!({})),
        authed(vec![options, err(404, "passkeys_disabled")]),
    )
}

fn manage_docs() -> [RouteDoc; 3] {
    let summary = "Delete one of the caller's passkeys (step-up; never the last way to sign in)";
    [
        DOCS.op(
            "passkeys",
            "The caller's passkeys",
            None,
            authed(vec![ok(200, "{passkeys}").with_schema(schemas::passkeys())]),
        ),
        DOCS.op(
            "passkey_rename",
            "Rename one of the caller's passkeys",
            object(
                &["name"],
                json!({"name": {"type": "string", "maxLength": 64}}),
            ),
            authed(vec![
                ok(200, "{id, name}").with_schema(schemas::passkey()),
                err(404, "passkey_not_found"),
            ]),
        ),
        DOCS.op(
            "passkey_delete",
            summary,
            None,
            authed(vec![
                ok(200, "{id, status: deleted}").with_schema(schemas::deleted()),
                err(403, "step_up_required"),
                err(404, "passkey_not_found"),
                err(409, "last_sign_in_method"),
            ]),
        ),
    ]
}

/// The passkey routes: the ceremonies and managing one's passkeys.
pub fn routes(r: Router) -> Router {
    let (register_options_doc, register_verify_doc) = register_docs();
    let (login_options_doc, login_verify_doc) = login_docs();
    let [list_doc, rename_doc, delete_doc] = manage_docs();
    r.route(
        Method::POST,
        "/auth/passkeys/register/options",
        endpoint(|s, r| async move { register_options(&s, r).await }),
        register_options_doc,
    )
    .route(
        Method::POST,
        "/auth/passkeys/register/verify",
        endpoint(|s, r| async move { register_verify(&s, r).await }),
        register_verify_doc,
    )
    .route(
        Method::POST,
        "/auth/passkeys/login/options",
        endpoint(|s, r| async move { login_options(&s, r).await }),
        login_options_doc,
    )
    .route(
        Method::POST,
        "/auth/passkeys/login/verify",
        endpoint(|s, r| async move { login_verify(&s, r).await }),
        login_verify_doc,
    )
    .route(
        Method::POST,
        "/auth/passkeys/step-up/options",
        endpoint(|s, r| async move { step_up_options(&s, r).await }),
        step_up_doc(),
    )
    .route(
        Method::GET,
        "/auth/passkeys",
        endpoint(|s, r| async move { list(&s, r).await }),
        list_doc,
    )
    .route(
        Method::PATCH,
        "/auth/passkeys/{id}",
        endpoint(|s, r| async move { rename(&s, r).await }),
        rename_doc,
    )
    .route(
        Method::DELETE,
        "/auth/passkeys/{id}",
        endpoint(|s, r| async move { delete(&s, r).await }),
        delete_doc,
    )
}
