//! Accounts: sign-up, email verification, login, password change and reset.
//!
//! Every response that could reveal whether an email address is registered
//! (sign-up, resend, reset request, login failure) is the same for known and
//! unknown addresses, and costs the same Argon2id work.

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{json_response, ok_json};
use edgecoder_kernel::http_types::{HeaderValue, StatusCode, header};
use edgecoder_kernel::{Request, Response, Services, Statement, Value};
use serde::Deserialize;
use serde_json::json;

use crate::Error;
use crate::mail;
use crate::password::{self, Verification};
use crate::ratelimit::{self as rl, ip_subject};
use crate::secrets::{hash_token, new_token, well_formed};
use crate::session::{self, Client};

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

fn email_token_statement(
    s: &Services,
    purpose: &str,
    user_id: &str,
    email: &str,
    token: &str,
    ttl_ms: i64,
) -> Statement {
    let now = s.clock.now_ms();
    Statement::new(
        "INSERT INTO email_tokens (token_hash, purpose, user_id, email, created_at, expires_at) \
         SELECT ?1, ?2, id, ?4, ?5, ?6 FROM users WHERE id = ?3",
        vec![
            hash_token(token).into(),
            purpose.into(),
            user_id.into(),
            email.into(),
            Value::Integer(now),
            Value::Integer(now + ttl_ms),
        ],
    )
}

/// Older unused tokens of a purpose stop working when a new one is sent.
/// After a token of `purpose` is consumed by request `rid`, the user's other
/// outstanding tokens of that purpose stop working.
fn supersede_siblings(purpose: &str, token_hash: &str, rid: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE email_tokens SET consumed_at = ?4, consumed_by = 'superseded' \
         WHERE purpose = ?1 AND consumed_at IS NULL \
           AND user_id IN (SELECT user_id FROM email_tokens WHERE token_hash = ?2 AND consumed_by = ?3)",
        vec![
            purpose.into(),
            token_hash.into(),
            rid.into(),
            Value::Integer(now),
        ],
    )
}

fn supersede_tokens(s: &Services, purpose: &str, user_id: &str) -> Statement {
    Statement::new(
        "UPDATE email_tokens SET consumed_at = ?3, consumed_by = 'superseded' \
         WHERE user_id = ?1 AND purpose = ?2 AND consumed_at IS NULL",
        vec![
            user_id.into(),
            purpose.into(),
            Value::Integer(s.clock.now_ms()),
        ],
    )
}

/// `POST /auth/signup`.
pub async fn signup(s: &Services, req: Request) -> Result<Response, Error> {
    mail::require(s)?;
    let body: Signup = req.json()?;
    let email = password::normalise_email(&body.email)?;
    password::check_policy(&body.password, &email)?;
    let name = display_name(body.display_name)?;
    let ip = ip_subject(&req.ctx);
    limit(
        s,
        &req,
        &[
            (&rl::SIGNUP_PER_IP, ip.as_deref()),
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
            Statement::new(
                "INSERT INTO users (id, email, password_hash, display_name, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (email) DO NOTHING",
                vec![
                    id.as_str().into(),
                    email.as_str().into(),
                    hash.into(),
                    name.into(),
                    Value::Integer(now),
                ],
            ),
            email_token_statement(s, "verify_email", &id, &email, &token, VERIFY_TOKEN_MS),
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
    let token = if form {
        form_urlencoded::parse(&req.body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        req.json::<TokenBody>()?.token
    };
    let outcome = consume_verification(s, &req, &token).await;
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

async fn consume_verification(s: &Services, req: &Request, token: &str) -> Result<(), Error> {
    if !well_formed(token, EMAIL_TOKEN_PREFIX) {
        return Err(Error::TokenInvalid);
    }
    let now = s.clock.now_ms();
    let rid = req.ctx.request_id.as_str();
    let h = hash_token(token);
    let results = s
        .sql
        .batch(vec![
            Statement::new(
                "UPDATE email_tokens SET consumed_at = ?2, consumed_by = ?3 \
                 WHERE token_hash = ?1 AND purpose = 'verify_email' AND consumed_at IS NULL AND expires_at > ?2",
                vec![h.as_str().into(), Value::Integer(now), rid.into()],
            ),
            // Only the address the token was sent to is verified.
            Statement::new(
                "UPDATE users SET email_verified_at = COALESCE(email_verified_at, ?2), updated_at = ?2 \
                 WHERE (id, email) IN (SELECT user_id, email FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?3)",
                vec![h.as_str().into(), Value::Integer(now), rid.into()],
            ),
            supersede_siblings("verify_email", &h, rid, now),
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
    /// Selects `id` of an eligible account for `?1` (the email).
    eligible_sql: &'static str,
    purpose: &'static str,
    ttl_ms: i64,
    action: &'static str,
    compose: fn(&Services, &str, &str) -> mail::Mail,
    answer: &'static str,
}

const RESEND: TokenMail = TokenMail {
    per_ip: rl::RESEND_PER_IP,
    per_email: rl::RESEND_PER_EMAIL,
    eligible_sql: "SELECT id FROM users WHERE email = ?1 AND email_verified_at IS NULL",
    purpose: "verify_email",
    ttl_ms: VERIFY_TOKEN_MS,
    action: "auth.verification.resend",
    compose: |s, to, token| mail::verification(&s.config.issuer, to, token),
    answer: "verification_sent",
};

const RESET: TokenMail = TokenMail {
    per_ip: rl::RESET_PER_IP,
    per_email: rl::RESET_PER_EMAIL,
    eligible_sql: "SELECT id FROM users WHERE email = ?1",
    purpose: "password_reset",
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
    let rows = s
        .sql
        .execute(Statement::new(
            spec.eligible_sql,
            vec![email.as_str().into()],
        ))
        .await?;
    // Earlier tokens stay valid (nobody can cancel a victim's link by asking
    // for more); using any one of them cancels the rest.
    if let Some(id) = rows.get_str(0, "id").map(str::to_owned) {
        let token = new_token(s.rng.as_ref(), EMAIL_TOKEN_PREFIX);
        s.sql
            .batch(vec![
                email_token_statement(s, spec.purpose, &id, &email, &token, spec.ttl_ms),
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
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT id, password_hash FROM users WHERE email = ?1",
            vec![email.as_str().into()],
        ))
        .await?;
    let user = rows.get_str(0, "id").map(str::to_owned);
    let verdict = match (&user, rows.get_str(0, "password_hash")) {
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
    let verified_hash = rows
        .get_str(0, "password_hash")
        .unwrap_or_default()
        .to_owned();
    attempt.succeeded(s).await?;
    // The session exists only if the hash just verified is still the stored
    // one, so a login racing a password reset cannot outlive it.
    let (mut stmts, sid, refresh) =
        session::create_session(s, &req, &user, client, &["pwd"], Some(&verified_hash));
    if rehash {
        stmts.push(Statement::new(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1 AND password_hash = ?4",
            vec![
                user.as_str().into(),
                password::hash(&body.password, s.rng.as_ref())?.into(),
                Value::Integer(s.clock.now_ms()),
                verified_hash.as_str().into(),
            ],
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
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT password_hash FROM users WHERE id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    let ok = match rows.get_str(0, "password_hash") {
        Some(stored) => matches!(
            password::verify(candidate, stored),
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
            Statement::new(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                vec![p.user_id.as_str().into(), hash.into(), Value::Integer(now)],
            ),
            Statement::new(
                "UPDATE sessions SET revoked_at = ?3, revoked_reason = 'password_change' \
                 WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
                vec![
                    p.user_id.as_str().into(),
                    p.session_id.as_str().into(),
                    Value::Integer(now),
                ],
            ),
            // A reset code mailed before the change must not undo it.
            supersede_tokens(s, "password_reset", &p.user_id),
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
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT t.user_id, u.email FROM email_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = ?1 AND t.purpose = 'password_reset' AND t.consumed_at IS NULL AND t.expires_at > ?2",
            vec![h.as_str().into(), Value::Integer(now)],
        ))
        .await?;
    let (Some(user), Some(email)) = (rows.get_str(0, "user_id"), rows.get_str(0, "email")) else {
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
    let (user, email) = (user.to_owned(), email.to_owned());
    // Policy first: a weak choice must not burn the token.
    password::check_policy(&body.new_password, &email)?;
    let hash = password::hash(&body.new_password, s.rng.as_ref())?;
    let rid = req.ctx.request_id.as_str();
    let consumed = "EXISTS (SELECT 1 FROM email_tokens WHERE token_hash = ?1 AND consumed_by = ?3)";
    let results = s
        .sql
        .batch(vec![
            Statement::new(
                "UPDATE email_tokens SET consumed_at = ?2, consumed_by = ?3 \
                 WHERE token_hash = ?1 AND purpose = 'password_reset' AND consumed_at IS NULL AND expires_at > ?2",
                vec![h.as_str().into(), Value::Integer(now), rid.into()],
            ),
            // The reset proved control of the mailbox, so it also verifies it.
            Statement::new(
                format!(
                    "UPDATE users SET password_hash = ?5, email_verified_at = COALESCE(email_verified_at, ?2), updated_at = ?2 \
                     WHERE id = ?4 AND {consumed}"
                ),
                vec![h.as_str().into(), Value::Integer(now), rid.into(), user.as_str().into(), hash.into()],
            ),
            Statement::new(
                format!(
                    "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'password_reset' \
                     WHERE user_id = ?4 AND revoked_at IS NULL AND {consumed}"
                ),
                vec![h.as_str().into(), Value::Integer(now), rid.into(), user.as_str().into()],
            ),
            // Whoever proved the mailbox owns the account: a provider
            // link made on an address that provider never verified (someone
            // pre-registering this address through it) goes.
            Statement::new(
                format!(
                    "DELETE FROM oauth_links WHERE user_id = ?4 AND email_verified = 0 AND {consumed}"
                ),
                vec![h.as_str().into(), Value::Integer(now), rid.into(), user.as_str().into()],
            ),
            supersede_siblings("password_reset", &h, rid, now),
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
