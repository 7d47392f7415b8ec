//! The `auth` function, served under `/auth/` (and the issuer's
//! `/.well-known/jwks.json`).
//!
//! In scope: portal identity: accounts with Argon2id passwords, email
//! verification and password reset by one-time emailed tokens, sessions with
//! ES256 access tokens and rotating refresh tokens, passkeys (WebAuthn),
//! sign-in with OAuth 2.0 / OpenID Connect providers, roles with step-up,
//! node enrollment tokens, rate limits, the audit trail of all of it, and the
//! JWK Set; the function's own settings ([`settings`]).
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it. Access-token
//! verification lives in the kernel (`tokens`) so every function can check
//! tokens statelessly.
//!
//! Modules: [`api`] (handlers, each module with its `routes()`), [`session`]
//! (bearer authentication, sessions, cookies, audit helper), [`ceremony`]
//! (the WebAuthn ceremonies' start/finish API) over [`webauthn`] (its byte
//! formats), [`oidc`] and [`oauth_settings`], [`password`], [`ratelimit`]
//! (identity's rules over the kernel's limiter), [`mail`], [`secrets`],
//! [`client`] (what other functions ask: callers and enrollment redemption),
//! [`store`] (the handlers' typed storage, one module per resource).

pub mod api;
pub mod ceremony;
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
use edgecoder_kernel::router::{Docs, endpoint, err, handler, ok, response_doc};
use edgecoder_kernel::{
    Config, HandlerResult, Request, Response, Router, Services, Statement, health, tokens,
};
use serde_json::{Value as Json, json};

pub use error::{Error, problem_types};
pub use settings::Settings;

/// The function's name and path prefix.
pub const NAME: &str = "auth";

/// Where the issuer publishes its keys (RFC 8414 / OpenID discovery convention).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// `application/jwk-set+json` (RFC 7517 §8.5).
pub const JWK_SET_JSON: &str = "application/jwk-set+json";

/// The auth function's OpenAPI tag.
const DOCS: Docs = Docs(NAME);

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let jwks_doc = DOCS.op(
        "jwks",
        "Public keys that verify access tokens (ES256 JWK Set)",
        None,
        vec![response_doc(200, "the JWK Set", Some(JWK_SET_JSON))],
    );
    let capabilities_doc = DOCS.op(
        "capabilities",
        "Which sign-in methods this deployment offers (for the portal)",
        None,
        vec![
            ok(
                200,
                "{password, passkeys: {enabled, rp_id}, oauth_providers}",
            )
            .with_schema(schemas::capabilities()),
            err(404, "not_found"),
        ],
    );
    let r = health::routes(NAME, "/auth/health", "/auth/health/ready")
        .merge(edgecoder_kernel::audit::export_routes(
            NAME,
            "/auth/audit/events",
        ))
        .route(Method::GET, JWKS_PATH, handler(jwks), jwks_doc);
    let r = api::accounts::routes(r);
    let r = api::nodes::routes(api::admin::routes(api::sessions::routes(r))).route(
        Method::GET,
        "/auth/capabilities",
        endpoint(|s, r| async move { capabilities(&s, r).await }),
        capabilities_doc,
    );
    let r = api::oauth::routes(api::passkeys::routes(r));
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
