//! The `auth` function, served under `/auth/` (and the issuer's
//! `/.well-known/jwks.json`).
//!
//! In scope: portal identity (issue 3): accounts with Argon2id passwords,
//! email verification and password reset by one-time emailed tokens, sessions
//! with ES256 access tokens and rotating refresh tokens, roles with step-up,
//! node enrollment tokens, SQL rate limits, the audit trail of all of it, and
//! the JWK Set. Passkeys and OAuth sign-in come with issue 6.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it. Access-token
//! verification lives in the kernel (`tokens`) so every function can check
//! tokens statelessly.
//!
//! Modules: [`api`] (handlers), [`session`] (bearer authentication, sessions,
//! cookies, audit helper), [`password`], [`ratelimit`], [`mail`], [`secrets`],
//! [`client`] (what other functions ask: callers and enrollment redemption),
//! [`store`] (the handlers' typed storage, one module per resource).

pub mod api;
pub mod client;
mod error;
pub mod mail;
pub mod oauth_settings;
pub mod oidc;
pub mod password;
pub mod ratelimit;
mod schemas;
pub mod secrets;
pub mod session;
pub mod settings;
pub mod store;
#[cfg(feature = "danger-test-routes")]
mod testing;
pub mod webauthn;

use std::rc::Rc;

use edgecoder_kernel::http::{json_response, ok_json};
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::router::{
    Docs, ResponseDoc, endpoint, err, handler, object, ok, response_doc,
};
use edgecoder_kernel::{
    Config, HandlerResult, Request, Response, Router, Services, Statement, health, tokens,
};
use serde_json::{Value as Json, json};

pub use error::Error;
pub use settings::Settings;

/// The function's name and path prefix.
pub const NAME: &str = "auth";

/// Where the issuer publishes its keys (RFC 8414 / OpenID discovery convention).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// `application/jwk-set+json` (RFC 7517 §8.5).
pub const JWK_SET_JSON: &str = "application/jwk-set+json";

/// The auth function's OpenAPI tag.
const DOCS: Docs = Docs(NAME);

fn authed(mut v: Vec<ResponseDoc>) -> Vec<ResponseDoc> {
    v.push(err(401, "authentication_required / invalid_token"));
    v
}

fn token_response_docs() -> Vec<ResponseDoc> {
    vec![
        ok(
            200,
            "OAuth 2.0 token response {access_token, token_type, expires_in, refresh_token (device clients)}",
        )
        .with_schema(schemas::token()),
    ]
}

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    use api::{
        accounts as a, admin as ad, nodes as n, oauth as oa, passkeys as pk, sessions as se,
    };
    let email = json!({"type": "string", "format": "email", "maxLength": 254});
    let pw = json!({"type": "string", "minLength": 12, "maxLength": 256});
    let token = json!({"type": "string"});
    let r = health::routes(NAME, "/auth/health", "/auth/health/ready")
        .route(Method::GET, JWKS_PATH, handler(jwks), DOCS.op("jwks", "Public keys that verify access tokens (ES256 JWK Set)", None, vec![response_doc(200, "the JWK Set", Some(JWK_SET_JSON))]))
        .route(Method::POST, "/auth/signup", endpoint(|s, r| async move { a::signup(&s, r).await }),
            DOCS.op("signup", "Create an account; always 202 {status: verification_sent}", object(&["email", "password"], json!({"email": email, "password": pw, "display_name": {"type": "string", "maxLength": 100}})),
                vec![ok(202, "verification_sent (the same for registered addresses)").with_schema(schemas::status()), err(400, "invalid_email / weak_password"), err(429, "rate_limited")]))
        .route(Method::GET, "/auth/verify-email", endpoint(|s, r| async move { a::verify_email_page(&s, r).await }),
            DOCS.op("verify_email_page", "The emailed link: an HTML page whose button POSTs the token (prefetching does not verify)", None, vec![response_doc(200, "HTML page with a form that POSTs the token", Some("text/html")), response_doc(400, "HTML page: the link is malformed", Some("text/html"))]))
        .route(Method::POST, "/auth/verify-email", endpoint(|s, r| async move { a::verify_email(&s, r).await }),
            DOCS.op("verify_email", "Consume a verification token (JSON or the page's form)", object(&["token"], json!({"token": token})),
                vec![ok(200, "{status: verified}").with_schema(schemas::status()), err(400, "token_invalid")]))
        .route(Method::POST, "/auth/resend-verification", endpoint(|s, r| async move { a::resend_verification(&s, r).await }),
            DOCS.op("resend_verification", "Send a new verification email; always 202", object(&["email"], json!({"email": email})),
                vec![ok(202, "verification_sent").with_schema(schemas::status()), err(429, "rate_limited")]))
        .route(Method::POST, "/auth/login", endpoint(|s, r| async move { a::login(&s, r).await }),
            DOCS.op("login", "Password sign-in", object(&["email", "password"], json!({"email": email, "password": {"type": "string"}, "client": {"enum": ["browser", "device"]}})),
                { let mut v = token_response_docs(); v.push(err(401, "invalid_credentials")); v.push(err(429, "rate_limited")); v }))
        .route(Method::POST, "/auth/password/change", endpoint(|s, r| async move { a::change_password(&s, r).await }),
            DOCS.op("password_change", "Change the password (step-up); revokes every other session", object(&["current_password", "new_password"], json!({"current_password": {"type": "string"}, "new_password": pw})),
                authed(vec![ok(200, "{status: changed, sessions_revoked}").with_schema(schemas::status()), err(400, "weak_password"), err(403, "step_up_required")])))
        .route(Method::POST, "/auth/password/reset/request", endpoint(|s, r| async move { a::reset_request(&s, r).await }),
            DOCS.op("password_reset_request", "Email a reset code; always 202", object(&["email"], json!({"email": email})),
                vec![ok(202, "{status: reset_sent}").with_schema(schemas::status()), err(429, "rate_limited")]))
        .route(Method::POST, "/auth/password/reset/confirm", endpoint(|s, r| async move { a::reset_confirm(&s, r).await }),
            DOCS.op("password_reset_confirm", "Set a new password with a reset code; revokes every session", object(&["token", "new_password"], json!({"token": token, "new_password": pw})),
                vec![ok(200, "{status: reset, sessions_revoked}").with_schema(schemas::status()), err(400, "token_invalid / weak_password")]))
        .route(Method::POST, "/auth/token/refresh", endpoint(|s, r| async move { se::refresh(&s, r).await }),
            DOCS.op("token_refresh", "Exchange a refresh token (body for devices, cookie + allowed Origin for browsers); rotates it", object(&[], json!({"refresh_token": token})),
                { let mut v = token_response_docs(); v.push(err(401, "invalid_refresh_token")); v.push(err(403, "csrf_rejected")); v }))
        .route(Method::POST, "/auth/logout", endpoint(|s, r| async move { se::logout(&s, r).await }),
            DOCS.op("logout", "Sign out this session", None, authed(vec![ok(200, "{status: signed_out}").with_schema(schemas::status())])))
        .route(Method::POST, "/auth/logout-all", endpoint(|s, r| async move { se::logout_all(&s, r).await }),
            DOCS.op("logout_all", "Sign out every session", None, authed(vec![ok(200, "{status: signed_out, sessions_revoked}").with_schema(schemas::status())])))
        .route(Method::GET, "/auth/sessions", endpoint(|s, r| async move { se::list(&s, r).await }),
            DOCS.op("sessions_list", "The caller's live sessions", None, authed(vec![ok(200, "{sessions: [...]}").with_schema(schemas::sessions())])))
        .route(Method::DELETE, "/auth/sessions/{id}", endpoint(|s, r| async move { se::revoke(&s, r).await }),
            DOCS.op("session_revoke", "Revoke one of the caller's sessions", None, authed(vec![ok(200, "{status: revoked}").with_schema(schemas::status()), err(404, "session_not_found")])))
        .route(Method::GET, "/auth/me", endpoint(|s, r| async move { se::me(&s, r).await }),
            DOCS.op("me", "The signed-in user", None, authed(vec![ok(200, "{id, email, email_verified, display_name, roles, created_at}").with_schema(schemas::me())])))
        .route(Method::POST, "/auth/step-up", endpoint(|s, r| async move { se::step_up(&s, r).await }),
            DOCS.op("step_up", "Re-authenticate; returns a token with a fresh auth_time", object(&["password"], json!({"password": {"type": "string"}})),
                authed({ let mut v = token_response_docs(); v.push(err(429, "rate_limited")); v })))
        .route(Method::GET, "/auth/admin/users", endpoint(|s, r| async move { ad::users(&s, r).await }),
            DOCS.op("admin_users", "Users, paginated (?limit=&after=); system_admin", None, authed(vec![ok(200, "{users, next}").with_schema(schemas::users()), err(403, "forbidden")])))
        .route(Method::POST, "/auth/admin/users/{id}/roles", endpoint(|s, r| async move { ad::grant(&s, r).await }),
            DOCS.op("admin_role_grant", "Grant a role to a verified user; system_admin with step-up", object(&["role"], json!({"role": {"enum": session::GRANTABLE_ROLES}})),
                authed(vec![ok(200, "{id, roles}").with_schema(schemas::user_roles()), err(400, "invalid_role"), err(403, "forbidden / step_up_required / email_unverified"), err(404, "user_not_found")])))
        .route(Method::DELETE, "/auth/admin/users/{id}/roles/{role}", endpoint(|s, r| async move { ad::revoke(&s, r).await }),
            DOCS.op("admin_role_revoke", "Revoke a role; system_admin with step-up", None,
                authed(vec![ok(200, "{id, roles}").with_schema(schemas::user_roles()), err(403, "forbidden / step_up_required"), err(409, "last_admin")])))
        .route(Method::GET, "/auth/admin/audit", endpoint(|s, r| async move { ad::audit_query(&s, r).await }),
            DOCS.op("admin_audit", "Audit events, newest first (?since=&actor=&action=&limit=); system_admin", None, authed(vec![ok(200, "{events}").with_schema(schemas::audit()), err(403, "forbidden")])))
        .route(Method::POST, "/auth/admin/bootstrap", endpoint(|s, r| async move { ad::bootstrap(&s, r).await }),
            DOCS.op("admin_bootstrap", "Become the first system_admin with the one-time bootstrap secret", object(&["secret"], json!({"secret": {"type": "string"}})),
                authed(vec![ok(200, "{id, roles}").with_schema(schemas::user_roles()), err(403, "bootstrap_refused / email_unverified")])))
        .route(Method::POST, "/auth/nodes/enroll", endpoint(|s, r| async move { n::enroll(&s, r).await }),
            DOCS.op("node_enroll", "Issue a one-time enrollment token for a node id (verified email)", object(&["node_id", "kind"], json!({"node_id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{2,62}$"}, "kind": {"enum": ["agent", "coordinator"]}})),
                authed(vec![ok(201, "{node_id, kind, enrollment_token, expires_at}").with_schema(schemas::enrollment()), err(400, "invalid_node_id"), err(403, "email_unverified"), err(409, "node_owned_by_another_user")])))
        .route(Method::GET, "/auth/nodes", endpoint(|s, r| async move { n::list(&s, r).await }),
            DOCS.op("nodes_list", "The caller's node enrollments", None, authed(vec![ok(200, "{nodes}").with_schema(schemas::nodes())])))
        .route(Method::DELETE, "/auth/nodes/{id}", endpoint(|s, r| async move { n::delete(&s, r).await }),
            DOCS.op("node_delete", "Delete an enrollment (owner, or system_admin with step-up); its tokens stop working", None,
                authed(vec![ok(200, "{status: deleted}").with_schema(schemas::status()), err(403, "step_up_required"), err(404, "node_not_found")])))
        .route(Method::POST, "/auth/nodes/redeem", endpoint(|s, r| async move { n::redeem_route(&s, r).await }),
            DOCS.op("node_redeem", "Redeem an enrollment token once (the mesh function, with the service credential)", object(&["enrollment_token", "node_id", "kind"], json!({"enrollment_token": token, "node_id": {"type": "string"}, "kind": {"enum": ["agent", "coordinator"]}})),
                vec![ok(200, "{node_id, kind, owner_id}").with_schema(schemas::redeemed()), err(400, "enrollment_token_invalid"), err(401, "service_unauthorized")]))
        .route(Method::GET, "/auth/capabilities", endpoint(|s, r| async move { capabilities(&s, r).await }),
            DOCS.op("capabilities", "Which sign-in methods this deployment offers (for the portal)", None, vec![ok(200, "{password, passkeys: {enabled, rp_id}, oauth_providers}").with_schema(schemas::capabilities()), err(404, "not_found")]))
        .route(Method::POST, "/auth/passkeys/register/options", endpoint(|s, r| async move { pk::register_options(&s, r).await }),
            DOCS.op("passkey_register_options", "PublicKeyCredentialCreationOptionsJSON for a new passkey (signed in, step-up)", object(&[], json!({})),
                authed(vec![ok(200, "creation options (challenge single-use, 5 min)").with_schema(schemas::passkey_creation_options()), err(403, "step_up_required"), err(404, "passkeys_disabled")])))
        .route(Method::POST, "/auth/passkeys/register/verify", endpoint(|s, r| async move { pk::register_verify(&s, r).await }),
            DOCS.op("passkey_register_verify", "Verify a RegistrationResponseJSON and store the passkey", object(&["credential"], json!({"credential": {"type": "object"}, "name": {"type": "string", "maxLength": 64}})),
                authed(vec![ok(201, "{id, name, alg, created_at}").with_schema(schemas::passkey()), err(400, "passkey_* (the failed check) / passkey_challenge_invalid"), err(409, "passkey_exists")])))
        .route(Method::POST, "/auth/passkeys/login/options", endpoint(|s, r| async move { pk::login_options(&s, r).await }),
            DOCS.op("passkey_login_options", "PublicKeyCredentialRequestOptionsJSON: discoverable without an email; the same shape for unknown emails", object(&[], json!({"email": email})),
                vec![ok(200, "request options (challenge single-use, 5 min)").with_schema(schemas::passkey_request_options()), err(404, "passkeys_disabled")]))
        .route(Method::POST, "/auth/passkeys/login/verify", endpoint(|s, r| async move { pk::login_verify(&s, r).await }),
            DOCS.op("passkey_login_verify", "Verify an AuthenticationResponseJSON; a session like password login (amr pop, mfa)", object(&["credential"], json!({"credential": {"type": "object"}, "client": {"enum": ["browser", "device"]}})),
                token_response_docs().into_iter().chain([err(400, "passkey_* / passkey_challenge_invalid"), err(401, "passkey_unknown / passkey_user_mismatch / passkey_clone_suspected / passkey_backup_state_changed")]).collect()))
        .route(Method::POST, "/auth/passkeys/step-up/options", endpoint(|s, r| async move { pk::step_up_options(&s, r).await }),
            DOCS.op("passkey_step_up_options", "Request options for POST /auth/step-up {passkey}: a challenge bound to the signed-in user", object(&[], json!({})),
                authed(vec![ok(200, "request options (challenge single-use, 5 min, this user only)").with_schema(schemas::passkey_request_options()), err(404, "passkeys_disabled")])))
        .route(Method::GET, "/auth/passkeys", endpoint(|s, r| async move { pk::list(&s, r).await }),
            DOCS.op("passkeys", "The caller's passkeys", None, authed(vec![ok(200, "{passkeys}").with_schema(schemas::passkeys())])))
        .route(Method::PATCH, "/auth/passkeys/{id}", endpoint(|s, r| async move { pk::rename(&s, r).await }),
            DOCS.op("passkey_rename", "Rename one of the caller's passkeys", object(&["name"], json!({"name": {"type": "string", "maxLength": 64}})),
                authed(vec![ok(200, "{id, name}").with_schema(schemas::passkey()), err(404, "passkey_not_found")])))
        .route(Method::DELETE, "/auth/passkeys/{id}", endpoint(|s, r| async move { pk::delete(&s, r).await }),
            DOCS.op("passkey_delete", "Delete one of the caller's passkeys (step-up; never the last way to sign in)", None,
                authed(vec![ok(200, "{id, status: deleted}").with_schema(schemas::deleted()), err(403, "step_up_required"), err(404, "passkey_not_found"), err(409, "last_sign_in_method")])))
        .route(Method::GET, "/auth/oauth/{provider}/start", endpoint(|s, r| async move { oa::start(&s, r).await }),
            DOCS.op("oauth_start", "302 to the provider (?return_to=: a relative path, an allowed origin's URL, or a native app's scheme with ?code_challenge=); sets the browser-binding cookie", None,
                vec![response_doc(302, "to the provider's authorization endpoint (code flow, PKCE S256, state, nonce)", None), err(400, "invalid_request (app return_to without code_challenge)"), err(404, "oauth_provider_unknown"), err(429, "rate_limited"), err(502, "oauth_provider_unavailable")]))
        .route(Method::GET, "/auth/oauth/{provider}/callback", endpoint(|s, r| async move { oa::callback(&s, r).await }),
            DOCS.op("oauth_callback", "The provider's redirect: checks the state and its browser, exchanges the code, validates the ID token, signs in (refresh cookie) or links, then 302 to return_to", None,
                vec![response_doc(302, "to return_to (?error= when the provider refused; ?code= for native apps; ?linked= after linking)", None),
                     err(400, "oauth_state_invalid / oauth_issuer_mismatch / oauth_email_missing"), err(401, "oauth_id_token_invalid"), err(404, "oauth_provider_unknown"),
                     err(409, "account_exists_sign_in_to_link / oauth_identity_linked_elsewhere / oauth_provider_already_linked"), err(429, "rate_limited"), err(502, "oauth_token_exchange_failed / oauth_provider_unavailable")]))
        .route(Method::POST, "/auth/oauth/{provider}/link/start", endpoint(|s, r| async move { oa::link_start(&s, r).await }),
            DOCS.op("oauth_link_start", "Start linking a provider to the signed-in account (step-up); returns the URL to send the browser to and sets the browser-binding cookie", object(&[], json!({"return_to": {"type": "string"}})),
                authed(vec![ok(200, "{authorization_url}").with_schema(schemas::oauth_link_start()), err(403, "step_up_required"), err(404, "oauth_provider_unknown"), err(502, "oauth_provider_unavailable")])))
        .route(Method::GET, "/auth/oauth/links", endpoint(|s, r| async move { oa::links(&s, r).await }),
            DOCS.op("oauth_links", "The caller's linked sign-in providers", None, authed(vec![ok(200, "{links}").with_schema(schemas::oauth_links())])))
        .route(Method::DELETE, "/auth/oauth/links/{provider}", endpoint(|s, r| async move { oa::unlink(&s, r).await }),
            DOCS.op("oauth_unlink", "Remove a linked provider (step-up; never the last way to sign in)", None,
                authed(vec![ok(200, "{provider, status: deleted}").with_schema(schemas::oauth_unlinked()), err(403, "step_up_required"), err(404, "oauth_link_not_found"), err(409, "last_sign_in_method")])))
        .route(Method::POST, "/auth/oauth/exchange", endpoint(|s, r| async move { oa::exchange(&s, r).await }),
            DOCS.op("oauth_exchange", "A native app trades its one-time code (60 s, single use) and PKCE code_verifier for a session", object(&["code", "code_verifier"], json!({"code": token, "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128}, "client": {"enum": ["browser", "device"]}})),
                token_response_docs().into_iter().chain([err(400, "oauth_code_invalid")]).collect()));
    #[cfg(feature = "danger-test-routes")]
    let r = testing::mount(r, config);
    #[cfg(not(feature = "danger-test-routes"))]
    let _ = config;
    r
}

/// `GET /auth/capabilities`: what the portal may offer.
async fn capabilities(s: &Services, _req: Request) -> Result<Response, Error> {
    let settings = Settings::of(s)?;
    let passkeys = !settings.passkey_rp_id.is_empty() && !s.config.allowed_origins.is_empty();
    Ok(ok_json(&json!({
        "password": true,
        "passkeys": {"enabled": passkeys, "rp_id": passkeys.then_some(&settings.passkey_rp_id)},
        "oauth_providers": api::oauth::capabilities(s),
    })))
}

async fn jwks(s: Rc<Services>, _req: Request) -> HandlerResult {
    let keys = s.config.verification_keys(s.clock.now_ms());
    let mut resp = json_response(StatusCode::OK, JWK_SET_JSON, &tokens::jwks(keys));
    // Verifiers cache the set; a rotated key must be published longer than
    // this before it signs (the rotation procedure says so).
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(resp)
}

/// The newest outbox messages, optionally for one recipient.
pub async fn outbox_messages(
    sql: &dyn edgecoder_kernel::Sql,
    to: Option<&str>,
    limit: i64,
) -> Result<Vec<Json>, edgecoder_kernel::Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, time, to_addr, subject, body FROM mail_outbox \
             WHERE (?1 IS NULL OR to_addr = ?1) ORDER BY time DESC, id LIMIT ?2",
            vec![to.map(str::to_owned).into(), limit.into()],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            json!({
                "id": rows.get_str(i, "id"),
                "time": secrets::rfc3339(rows.get_i64(i, "time").unwrap_or_default()),
                "to": rows.get_str(i, "to_addr"),
                "subject": rows.get_str(i, "subject"),
                "body": rows.get_str(i, "body"),
            })
        })
        .collect())
}
