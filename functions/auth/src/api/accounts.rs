//! Accounts: sign-up, email verification, login, password change and reset.
//!
//! Every response that could reveal whether an email address is registered
//! (sign-up, resend, reset request, login failure) is the same for known and
//! unknown addresses, and costs the same Argon2id work.

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{json_response, ok_json};
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok, response_doc};
use edgecoder_kernel::{Request, Response, Router, Services};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::api::{authed, client_schema, token_response_docs, token_schema};
use crate::mail;
use crate::password::{self, Verification};
use crate::ratelimit::{self as rl, ip_subject};
use crate::secrets::{hash_token, new_token, well_formed};
use crate::session::{self, Client};
use crate::store;
use crate::store::email_tokens::Purpose;
use crate::{DOCS, Error, schemas};

/// Verification tokens live 24 hours.
pub const VERIFY_TOKEN_MS: i64 = 24 * 3600 * 1000;
/// Reset tokens live 30 minutes.
pub const RESET_TOKEN_MS: i64 = 30 * 60 * 1000;
/// Email-token prefix (verification and reset).
pub const EMAIL_TOKEN_PREFIX: &str = "evt_";
/// Longest display name.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

fn accepted() -> Response {
    json_response(
        StatusCode::ACCEPTED,
        edgecoder_kernel::http::JSON,
        &json!({"status": "verification_sent"}),
    )
}

fn accepted_status(status: &str) -> Response {
    json_response(
        StatusCode::ACCEPTED,
        edgecoder_kernel::http::JSON,
        &json!({ "status": status }),
    )
}

/// Counts one attempt against each rule (skipping per-address rules when the
/// address is unknown); the first refusal is audited and returned.
async fn limit(
    s: &Services,
    req: &Request,
    rules: &[(&rl::Rule, Option<&str>)],
) -> Result<(), Error> {
    for (rule, subject) in rules {
        let Some(subject) = subject else { continue };
        if let Err(e) = rl::attempt(s, rule, subject).await {
            return Err(audit::denied(
                s,
                &req.ctx,
                "anonymous",
                "auth.rate_limited",
                None,
                json!({"rule": rule.name}),
                e.into(),
            )
            .await);
        }
    }
    Ok(())
}

/// The login-failure accounting for one password attempt on `email`.
pub struct PasswordAttempt {
    ip: Option<String>,
    pair: String,
    email: String,
}

impl PasswordAttempt {
    /// Counts the attempt before any Argon2 work; refuses when a block rule is
    /// exhausted, or when the account is over its soft limit and this address
    /// has had its turn within the spacing.
    pub async fn begin(s: &Services, req: &Request, email: &str) -> Result<PasswordAttempt, Error> {
        let ip = ip_subject(&req.ctx);
        let pair = format!("{email}|{}", ip.as_deref().unwrap_or("unknown"));
        limit(
            s,
            req,
            &[
                (&rl::LOGIN_FAILURES_PER_IP, ip.as_deref()),
                (&rl::LOGIN_FAILURES_PER_ACCOUNT_IP, Some(&pair)),
            ],
        )
        .await?;
        if rl::over(s, &rl::LOGIN_FAILURES_PER_ACCOUNT, email).await?
            && let Err(e) = rl::claim_turn(s, &rl::LOGIN_FAILURES_PER_ACCOUNT, &pair).await
        {
            return Err(audit::denied(
                s,
                &req.ctx,
                "anonymous",
                "auth.rate_limited",
                None,
                json!({"rule": rl::LOGIN_FAILURES_PER_ACCOUNT.name}),
                e.into(),
            )
            .await);
        }
        Ok(PasswordAttempt {
            ip,
            pair,
            email: email.to_owned(),
        })
    }

    /// The password was wrong: the counts stay, and the account's soft count grows.
    pub async fn failed(&self, s: &Services) -> Result<(), Error> {
        Ok(rl::count(s, &rl::LOGIN_FAILURES_PER_ACCOUNT, &self.email).await?)
    }

    /// The password was right: give the attempt back.
    pub async fn succeeded(&self, s: &Services) -> Result<(), Error> {
        if let Some(ip) = &self.ip {
            rl::refund(s, &rl::LOGIN_FAILURES_PER_IP, ip).await?;
        }
        Ok(rl::clear(s, &rl::LOGIN_FAILURES_PER_ACCOUNT_IP, &self.pair).await?)
    }
}

/// `POST /auth/signup` body.
#[derive(Deserialize)]
pub struct Signup {
    email: String,
    password: String,
    display_name: Option<String>,
}

/// A trimmed display name: at most 100 characters, no control characters.
pub fn display_name(raw: Option<String>) -> Result<Option<String>, Error> {
    let Some(name) = raw.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(edgecoder_kernel::Error::InvalidRequest(format!(
            "display_name must be at most {MAX_DISPLAY_NAME_CHARS} characters without control characters."
        ))
        .into());
    }
    Ok(Some(name))
}

/// `POST /auth/signup`.
pub async fn signup(s: &Services, req: Request) -> Result<Response, Error> {
    mail::require(s)?;
    let body: Signup = req.json()?;
    let email = password::normalise_email(&body.email)?;
    password::check_policy(&body.password, &email)?;
    let name = display_name(body.display_name)?;
    let ip = ip_subject(&req.ctx);
    let per_ip = rl::Rule {
        limit: crate::Settings::of(s)?.signup_per_ip_per_hour,
        ..rl::SIGNUP_PER_IP
    };
    limit(
        s,
        &req,
        &[
            (&per_ip, ip.as_deref()),
            (&rl::SIGNUP_PER_EMAIL, Some(&email)),
        ],
    )
    .await?;
    // Hash before looking the address up, so both paths cost the same.
    let hash = password::hash(&body.password, s.rng.as_ref())?;
    let now = s.clock.now_ms();
    let id = s.new_id();
    let token = new_token(s.rng.as_ref(), EMAIL_TOKEN_PREFIX);
    // The INSERT does nothing for a registered address (and cannot race into
    // a duplicate); the token insert keys on the new id, so it follows suit.
    let results = s
        .sql
        .batch(vec![
            store::users::insert_with_password(&id, &email, hash, name, now),
            store::email_tokens::issue(
                &hash_token(&token),
                Purpose::VerifyEmail,
                &id,
                &email,
                s.clock.now_ms(),
                VERIFY_TOKEN_MS,
            ),
            // Committed with the account, or not at all.
            session::audit_when(
                s,
                &req,
                "'user:' || id",
                "auth.signup",
                "id",
                Outcome::Success,
                json!({}),
                "FROM users WHERE id = ?8",
                vec![id.as_str().into()],
            ),
        ])
        .await?;
    let created = results.first().is_some_and(|r| r.changes == 1);
    if created {
        mail::send(
            s,
            &req.ctx,
            &mail::verification(&s.config.issuer, &email, &token),
        )
        .await;
    } else {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.signup",
            None,
            Outcome::Denied,
            json!({"reason": "email_registered"}),
        )
        .await?;
        mail::send(
            s,
            &req.ctx,
            &mail::already_registered(&s.config.issuer, &email),
        )
        .await;
    }
    Ok(accepted())
}

/// `POST /auth/verify-email` body (JSON or an HTML form).
#[derive(Deserialize)]
pub struct TokenBody {
    token: String,
    /// The account's password, when it has one: presenting it with the
    /// token shows that whoever controls the address also chose the
    /// password (see [`consume_verification`]).
    #[serde(default)]
    password: Option<String>,
}

fn is_form(req: &Request) -> bool {
    req.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

const PAGE_CSP: &str =
    "default-src 'none'; form-action 'self'; frame-ancestors 'none'; style-src 'unsafe-inline'";

fn html(status: StatusCode, title: &str, inner: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\"><h1>{title}</h1>{inner}</body></html>"
    );
    let mut resp = http_response(status, page.into_bytes());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn http_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = edgecoder_kernel::http_types::Response::new(body);
    *resp.status_mut() = status;
    resp
}

/// `GET /auth/verify-email?token=` — the emailed link. Mail scanners and
/// browsers prefetch links, so this only shows a button that POSTs.
pub async fn verify_email_page(_s: &Services, req: Request) -> Result<Response, Error> {
    let token = req
        .query
        .as_deref()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|t| well_formed(t, EMAIL_TOKEN_PREFIX));
    // Only a token of our exact shape (base64url) is ever written into HTML.
    Ok(match token {
        Some(t) => html(
            StatusCode::OK,
            "Verify your email address",
            &format!(
                "<form method=\"post\" action=\"/auth/verify-email\">\
                 <input type=\"hidden\" name=\"token\" value=\"{t}\">\
                 <p><label for=\"password\">Your password, if you chose one when you signed up \
                 (it keeps the password working if you later sign in with Google, Microsoft or GitHub)</label>\
                 <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\"></p>\
                 <button type=\"submit\">Verify my email address</button></form>"
            ),
        ),
        None => html(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "<p>Open the link from the email exactly as it was sent, or ask for a new one.</p>",
        ),
    })
}

/// `POST /auth/verify-email`.
pub async fn verify_email(s: &Services, req: Request) -> Result<Response, Error> {
    let form = is_form(&req);
    let body = if form {
        let field = |name: &str| {
            form_urlencoded::parse(&req.body)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        TokenBody {
            token: field("token").unwrap_or_default(),
            password: field("password").filter(|p| !p.is_empty()),
        }
    } else {
        req.json::<TokenBody>()?
    };
    let outcome = consume_verification(s, &req, &body.token, body.password.as_deref()).await;
    match (outcome, form) {
        (Ok(()), false) => Ok(ok_json(&json!({"status": "verified"}))),
        (Ok(()), true) => Ok(html(
            StatusCode::OK,
            "Email verified",
            "<p>Your email address is verified. You can close this page.</p>",
        )),
        (Err(Error::TokenInvalid), true) => Ok(html(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "<p>It was already used or has expired. Ask for a new one.</p>",
        )),
        (Err(e), _) => Err(e),
    }
}

/// Verifies the address a token was mailed to. Whoever opens the link proves
/// the mailbox, not the credentials made before it (pre-hijacking: anyone can
/// sign up with someone else's address and sign in before verifying). So the
/// sessions begun before the verification are revoked, links made through a
/// provider that never verified the address go, and the password counts as
/// the owner's only if it is presented with the token; a password that was
/// not does not survive the owner claiming the account through a provider
/// (see `api::oauth`).
async fn consume_verification(
    s: &Services,
    req: &Request,
    token: &str,
    password: Option<&str>,
) -> Result<(), Error> {
    if !well_formed(token, EMAIL_TOKEN_PREFIX) {
        return Err(Error::TokenInvalid);
    }
    let now = s.clock.now_ms();
    let rid = req.ctx.request_id.as_str();
    let h = hash_token(token);
    let mut proof = None;
    if let Some(password) = password {
        let holder = store::email_tokens::verification_holder(s.sql.as_ref(), &h, now)
            .await?
            .ok_or(Error::TokenInvalid)?;
        // Counted like a login for the address: a token is no licence to
        // guess the password (or to burn Argon2 time) without limit.
        let email = store::users::email_of(s.sql.as_ref(), &holder)
            .await?
            .unwrap_or_default();
        let attempt = PasswordAttempt::begin(s, req, &email).await?;
        let stored = store::users::password_hash(s.sql.as_ref(), &holder).await?;
        let matches = match stored.as_deref() {
            Some(hash) => !matches!(
                password::verify(password, hash),
                password::Verification::Mismatch
            ),
            None => {
                password::verify_dummy(password);
                false
            }
        };
        if !matches {
            attempt.failed(s).await?;
            return Err(Error::InvalidCredentials);
        }
        attempt.succeeded(s).await?;
        proof = stored
            .map(|hash| store::users::prove_password_from_token(&h, now, rid, &holder, &hash));
    }
    let mut stmts = vec![
        store::email_tokens::consume(Purpose::VerifyEmail, &h, now, rid),
        // Only the address the token was sent to is verified.
        store::users::verify_from_token(&h, now, rid),
        store::sessions::revoke_before_verification(&h, now, rid),
        store::oauth::delete_unverified_links_on_verification(&h, rid),
        store::passkeys::delete_before_verification(&h, now, rid),
    ];
    stmts.extend(proof);
    let results = s
        .sql
        .batch(
            stmts
                .into_iter()
                .chain([
                    // Using one token cancels the user's other outstanding ones.
                    store::email_tokens::supersede_siblings(Purpose::VerifyEmail, &h, rid, now),
                    session::audit_when(
                        s,
                        req,
                        "'user:' || user_id",
                        "auth.email.verify",
                        "user_id",
                        Outcome::Success,
                        json!({}),
                        "FROM email_tokens WHERE token_hash = ?8 AND consumed_by = ?9",
                        vec![h.as_str().into(), rid.into()],
                    ),
                ])
                .collect(),
        )
        .await?;
    if results.first().map(|r| r.changes) != Some(1) {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.email.verify",
            None,
            Outcome::Failure,
            json!({}),
        )
        .await?;
        return Err(Error::TokenInvalid);
    }
    Ok(())
}

/// `{email}` bodies (resend, reset request).
#[derive(Deserialize)]
pub struct EmailBody {
    email: String,
}

/// A mailed one-time token on request (resend, reset): the same 202 whether
/// or not the address is eligible.
struct TokenMail {
    per_ip: rl::Rule,
    per_email: rl::Rule,
    /// Whether only accounts whose address is unverified are eligible.
    unverified_only: bool,
    purpose: Purpose,
    ttl_ms: i64,
    action: &'static str,
    compose: fn(&Services, &str, &str) -> mail::Mail,
    answer: &'static str,
}

const RESEND: TokenMail = TokenMail {
    per_ip: rl::RESEND_PER_IP,
    per_email: rl::RESEND_PER_EMAIL,
    unverified_only: true,
    purpose: Purpose::VerifyEmail,
    ttl_ms: VERIFY_TOKEN_MS,
    action: "auth.verification.resend",
    compose: |s, to, token| mail::verification(&s.config.issuer, to, token),
    answer: "verification_sent",
};

const RESET: TokenMail = TokenMail {
    per_ip: rl::RESET_PER_IP,
    per_email: rl::RESET_PER_EMAIL,
    unverified_only: false,
    purpose: Purpose::PasswordReset,
    ttl_ms: RESET_TOKEN_MS,
    action: "auth.password.reset.request",
    compose: |_, to, token| mail::password_reset(to, token),
    answer: "reset_sent",
};

async fn mail_token(s: &Services, req: Request, spec: &TokenMail) -> Result<Response, Error> {
    mail::require(s)?;
    let email = password::normalise_email(&req.json::<EmailBody>()?.email)?;
    let ip = ip_subject(&req.ctx);
    limit(
        s,
        &req,
        &[
            (&spec.per_ip, ip.as_deref()),
            (&spec.per_email, Some(&email)),
        ],
    )
    .await?;
    let eligible = if spec.unverified_only {
        store::users::unverified_id_by_email(s.sql.as_ref(), &email).await?
    } else {
        store::users::id_by_email(s.sql.as_ref(), &email).await?
    };
    // Earlier tokens stay valid (nobody can cancel a victim's link by asking
    // for more); using any one of them cancels the rest.
    if let Some(id) = eligible {
        let token = new_token(s.rng.as_ref(), EMAIL_TOKEN_PREFIX);
        s.sql
            .batch(vec![
                store::email_tokens::issue(
                    &hash_token(&token),
                    spec.purpose,
                    &id,
                    &email,
                    s.clock.now_ms(),
                    spec.ttl_ms,
                ),
                audit::statement_for(
                    s,
                    &req.ctx,
                    &format!("user:{id}"),
                    spec.action,
                    Some(&id),
                    Outcome::Success,
                    json!({}),
                ),
            ])
            .await?;
        mail::send(s, &req.ctx, &(spec.compose)(s, &email, &token)).await;
    } else {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            spec.action,
            None,
            Outcome::Denied,
            json!({}),
        )
        .await?;
    }
    Ok(accepted_status(spec.answer))
}

/// `POST /auth/resend-verification`.
pub async fn resend_verification(s: &Services, req: Request) -> Result<Response, Error> {
    mail_token(s, req, &RESEND).await
}

/// `POST /auth/login` body.
#[derive(Deserialize)]
pub struct Login {
    email: String,
    password: String,
    client: Option<String>,
}

/// `POST /auth/login`.
pub async fn login(s: &Services, req: Request) -> Result<Response, Error> {
    let body: Login = req.json()?;
    let client = Client::parse(body.client.as_deref())?;
    let email = password::normalise_email(&body.email)?;
    let attempt = PasswordAttempt::begin(s, &req, &email).await?;
    let found = store::users::credentials_by_email(s.sql.as_ref(), &email).await?;
    let (user, stored, unconfirmed) = match found {
        Some(c) => (Some(c.id), c.password_hash, c.password_unconfirmed),
        None => (None, None, false),
    };
    let verdict = match (&user, stored.as_deref()) {
        (Some(_), Some(stored)) => password::verify(&body.password, stored),
        _ => {
            password::verify_dummy(&body.password);
            Verification::Mismatch
        }
    };
    let Verification::Match { rehash } = verdict else {
        attempt.failed(s).await?;
        let actor = user
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |u| format!("user:{u}"));
        audit::note(
            s,
            &req.ctx,
            &actor,
            "auth.login",
            user.as_deref(),
            Outcome::Failure,
            json!({}),
        )
        .await?;
        return Err(Error::InvalidCredentials);
    };
    let user = user.unwrap_or_default();
    let verified_hash = stored.unwrap_or_default();
    attempt.succeeded(s).await?;
    // Pre-hijacking: a password chosen before the address was verified, and
    // never confirmed by whoever verified it, may be someone else's; the
    // address's owner re-confirms it (a reset, mailed to them) first.
    if unconfirmed {
        return Err(audit::denied(
            s,
            &req.ctx,
            &format!("user:{user}"),
            "auth.login",
            Some(&user),
            json!({"reason": "password_unconfirmed"}),
            Error::PasswordUnconfirmed,
        )
        .await);
    }
    // The session exists only if the hash just verified is still the stored
    // one, so a login racing a password reset cannot outlive it.
    let (mut stmts, sid, refresh) =
        session::create_session(s, &req, &user, client, &["pwd"], Some(&verified_hash));
    if rehash {
        stmts.push(store::users::rehash_password(
            &user,
            password::hash(&body.password, s.rng.as_ref())?,
            s.clock.now_ms(),
            &verified_hash,
        ));
    }
    stmts.push(audit::statement_for(
        s,
        &req.ctx,
        &format!("user:{user}"),
        "auth.login",
        Some(&user),
        Outcome::Success,
        json!({"session": sid, "client": client.as_str(), "rehashed": rehash}),
    ));
    let results = s.sql.batch(stmts).await?;
    if results.first().map(|r| r.changes) != Some(1) {
        return Err(Error::InvalidCredentials);
    }
    let access = session::access_token(s, &sid).await?;
    Ok(session::token_response(s, &access, Some(&refresh), client))
}

/// Verifies the signed-in user's password (step-up, password change), with the
/// login limits so a stolen access token cannot guess passwords at speed.
pub async fn check_password(
    s: &Services,
    req: &Request,
    user_id: &str,
    email: &str,
    candidate: &str,
) -> Result<(), Error> {
    let attempt = PasswordAttempt::begin(s, req, email).await?;
    let ok = match store::users::password_hash(s.sql.as_ref(), user_id).await? {
        Some(stored) => matches!(
            password::verify(candidate, &stored),
            Verification::Match { .. }
        ),
        None => {
            password::verify_dummy(candidate);
            false
        }
    };
    if !ok {
        attempt.failed(s).await?;
        return Err(Error::InvalidCredentials);
    }
    attempt.succeeded(s).await
}

/// `POST /auth/password/change` body.
#[derive(Deserialize)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /auth/password/change` (step-up): revokes every other session.
pub async fn change_password(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let body: PasswordChange = req.json()?;
    p.require_step_up(s.clock.now_ms())?;
    if let Err(e) = check_password(s, &req, &p.user_id, &p.email, &body.current_password).await {
        audit::note(
            s,
            &req.ctx,
            &p.actor(),
            "auth.password.change",
            Some(&p.user_id),
            Outcome::Failure,
            json!({}),
        )
        .await?;
        return Err(e);
    }
    password::check_policy(&body.new_password, &p.email)?;
    let hash = password::hash(&body.new_password, s.rng.as_ref())?;
    let now = s.clock.now_ms();
    let results = s
        .sql
        .batch(vec![
            store::users::set_password(&p.user_id, hash, now),
            store::sessions::revoke_others_on_password_change(&p.user_id, &p.session_id, now),
            // A reset code mailed before the change must not undo it.
            store::email_tokens::supersede_outstanding(
                &p.user_id,
                Purpose::PasswordReset,
                s.clock.now_ms(),
            ),
            audit::statement_for(
                s,
                &req.ctx,
                &p.actor(),
                "auth.password.change",
                Some(&p.user_id),
                Outcome::Success,
                json!({}),
            ),
        ])
        .await?;
    let revoked = results.get(1).map_or(0, |r| r.changes);
    Ok(ok_json(
        &json!({"status": "changed", "sessions_revoked": revoked}),
    ))
}

/// `POST /auth/password/reset/request`.
pub async fn reset_request(s: &Services, req: Request) -> Result<Response, Error> {
    mail_token(s, req, &RESET).await
}

/// `POST /auth/password/reset/confirm` body.
#[derive(Deserialize)]
pub struct ResetConfirm {
    token: String,
    new_password: String,
}

/// `POST /auth/password/reset/confirm`: single use; revokes every session.
pub async fn reset_confirm(s: &Services, req: Request) -> Result<Response, Error> {
    let body: ResetConfirm = req.json()?;
    if !well_formed(&body.token, EMAIL_TOKEN_PREFIX) {
        return Err(Error::TokenInvalid);
    }
    let now = s.clock.now_ms();
    let h = hash_token(&body.token);
    let holder = store::email_tokens::reset_holder(s.sql.as_ref(), &h, now).await?;
    let Some(store::email_tokens::ResetHolder {
        user_id: user,
        email,
    }) = holder
    else {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.password.reset",
            None,
            Outcome::Failure,
            json!({}),
        )
        .await?;
        return Err(Error::TokenInvalid);
    };
    // Policy first: a weak choice must not burn the token.
    password::check_policy(&body.new_password, &email)?;
    let hash = password::hash(&body.new_password, s.rng.as_ref())?;
    let rid = req.ctx.request_id.as_str();
    let results = s
        .sql
        .batch(vec![
            store::email_tokens::consume(Purpose::PasswordReset, &h, now, rid),
            // The reset proved control of the mailbox, so it also verifies it.
            store::users::reset_password(&h, now, rid, &user, hash),
            store::sessions::revoke_all_on_reset(&h, now, rid, &user),
            // Whoever proved the mailbox owns the account: a provider
            // link made on an address that provider never verified (someone
            // pre-registering this address through it) goes.
            store::oauth::delete_unverified_links_on_reset(&h, now, rid, &user),
            store::email_tokens::supersede_siblings(Purpose::PasswordReset, &h, rid, now),
            session::audit_when(
                s,
                &req,
                "'user:' || user_id",
                "auth.password.reset",
                "user_id",
                Outcome::Success,
                json!({}),
                "FROM email_tokens WHERE token_hash = ?8 AND consumed_by = ?9",
                vec![h.as_str().into(), rid.into()],
            ),
        ])
        .await?;
    if results.first().map(|r| r.changes) != Some(1) {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.password.reset",
            Some(&user),
            Outcome::Failure,
            json!({"reason": "token_raced"}),
        )
        .await?;
        return Err(Error::TokenInvalid);
    }
    let revoked = results.get(2).map_or(0, |r| r.changes);
    let unlinked = results.get(3).map_or(0, |r| r.changes);
    if unlinked > 0 {
        audit::note(
            s,
            &req.ctx,
            &format!("user:{user}"),
            "auth.oauth.unlink",
            Some(&user),
            Outcome::Success,
            json!({"reason": "password_reset", "links_removed": unlinked}),
        )
        .await?;
    }
    Ok(ok_json(
        &json!({"status": "reset", "sessions_revoked": revoked}),
    ))
}

/// The JSON Schema of an email address.
pub(crate) fn email_schema() -> Json {
    json!({"type": "string", "format": "email", "maxLength": 254})
}

/// The JSON Schema of a new password (the policy's length bounds).
pub(crate) fn password_schema() -> Json {
    json!({"type": "string", "minLength": 12, "maxLength": 256})
}

/// The account routes: sign-up, email verification, login, passwords.
pub fn routes(r: Router) -> Router {
    r.route(
        Method::POST,
        "/auth/signup",
        endpoint(|s, r| async move { signup(&s, r).await }),
        signup_doc(),
    )
    .route(
        Method::GET,
        "/auth/verify-email",
        endpoint(|s, r| async move { verify_email_page(&s, r).await }),
        verify_email_page_doc(),
    )
    .route(
        Method::POST,
        "/auth/verify-email",
        endpoint(|s, r| async move { verify_email(&s, r).await }),
        verify_email_doc(),
    )
    .route(
        Method::POST,
        "/auth/resend-verification",
        endpoint(|s, r| async move { resend_verification(&s, r).await }),
        resend_verification_doc(),
    )
    .route(
        Method::POST,
        "/auth/login",
        endpoint(|s, r| async move { login(&s, r).await }),
        login_doc(),
    )
    .route(
        Method::POST,
        "/auth/password/change",
        endpoint(|s, r| async move { change_password(&s, r).await }),
        password_change_doc(),
    )
    .route(
        Method::POST,
        "/auth/password/reset/request",
        endpoint(|s, r| async move { reset_request(&s, r).await }),
        password_reset_request_doc(),
    )
    .route(
        Method::POST,
        "/auth/password/reset/confirm",
        endpoint(|s, r| async move { reset_confirm(&s, r).await }),
        password_reset_confirm_doc(),
    )
}

fn signup_doc() -> RouteDoc {
    let body = object(
        &["email", "password"],
        json!({
            "email": email_schema(),
            "password": password_schema(),
            "display_name": {"type": "string", "maxLength": 100},
        }),
    );
    DOCS.op(
        "signup",
        "Create an account; always 202 {status: verification_sent}",
        body,
        vec![
            ok(202, "verification_sent (the same for registered addresses)")
                .with_schema(schemas::status()),
            err(400, "invalid_email / weak_password"),
            err(429, "rate_limited"),
        ],
    )
}

fn verify_email_page_doc() -> RouteDoc {
    let summary =
        "The emailed link: an HTML page whose button POSTs the token (prefetching does not verify)";
    DOCS.op(
        "verify_email_page",
        summary,
        None,
        vec![
            response_doc(
                200,
                "HTML page with a form that POSTs the token",
                Some("text/html"),
            ),
            response_doc(400, "HTML page: the link is malformed", Some("text/html")),
        ],
    )
}

fn verify_email_doc() -> RouteDoc {
    DOCS.op(
        "verify_email",
        "Consume a verification token (JSON or the page's form); with the account's password, that password counts as the address owner's",
        object(
            &["token"],
            json!({"token": token_schema(), "password": {"type": "string", "maxLength": 256}}),
        ),
        vec![
            ok(200, "{status: verified}").with_schema(schemas::status()),
            err(400, "token_invalid"),
            err(401, "invalid_credentials"),
            err(429, "rate_limited"),
        ],
    )
}

fn resend_verification_doc() -> RouteDoc {
    DOCS.op(
        "resend_verification",
        "Send a new verification email; always 202",
        object(&["email"], json!({"email": email_schema()})),
        vec![
            ok(202, "verification_sent").with_schema(schemas::status()),
            err(429, "rate_limited"),
        ],
    )
}

fn login_doc() -> RouteDoc {
    let body = object(
        &["email", "password"],
        json!({
            "email": email_schema(),
            "password": {"type": "string"},
            "client": client_schema(),
        }),
    );
    let mut responses = token_response_docs();
    responses.push(err(401, "invalid_credentials"));
    responses.push(err(403, "password_unconfirmed"));
    responses.push(err(429, "rate_limited"));
    DOCS.op("login", "Password sign-in", body, responses)
}

fn password_change_doc() -> RouteDoc {
    let body = object(
        &["current_password", "new_password"],
        json!({"current_password": {"type": "string"}, "new_password": password_schema()}),
    );
    DOCS.op(
        "password_change",
        "Change the password (step-up); revokes every other session",
        body,
        authed(vec![
            ok(200, "{status: changed, sessions_revoked}").with_schema(schemas::status()),
            err(400, "weak_password"),
            err(403, "step_up_required"),
        ]),
    )
}

fn password_reset_request_doc() -> RouteDoc {
    DOCS.op(
        "password_reset_request",
        "Email a reset code; always 202",
        object(&["email"], json!({"email": email_schema()})),
        vec![
            ok(202, "{status: reset_sent}").with_schema(schemas::status()),
            err(429, "rate_limited"),
        ],
    )
}

fn password_reset_confirm_doc() -> RouteDoc {
    DOCS.op(
        "password_reset_confirm",
        "Set a new password with a reset code; revokes every session",
        object(
            &["token", "new_password"],
            json!({"token": token_schema(), "new_password": password_schema()}),
        ),
        vec![
            ok(200, "{status: reset, sessions_revoked}").with_schema(schemas::status()),
            err(400, "token_invalid / weak_password"),
        ],
    )
}
