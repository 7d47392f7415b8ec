//! The `auth` function, served under `/auth/` (and the issuer's
//! `/.well-known/jwks.json`).
//!
//! In scope: portal identity: accounts, sessions and keys, roles, node
//! enrollment (issues 3 and 6 fill it in). So far: health, readiness, the
//! shared request pipeline, and the JWK Set of the access-token signing key
//! (tokens and their verifier live in the kernel's `tokens` module so every
//! function can check them statelessly).
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

mod error;
pub mod password;

use std::rc::Rc;

use edgecoder_kernel::http::json_response;
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::router::{RouteDoc, handler, response_doc};
use edgecoder_kernel::{
    Config, HandlerResult, Request, Router, Services, health, testroutes, tokens,
};

pub use error::Error;

/// The function's name and path prefix.
pub const NAME: &str = "auth";

/// Where the issuer publishes its keys (RFC 8414 / OpenID discovery convention).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// `application/jwk-set+json` (RFC 7517 §8.5).
pub const JWK_SET_JSON: &str = "application/jwk-set+json";

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let mut r = health::routes(NAME, "/auth/health", "/auth/health/ready").route(
        Method::GET,
        JWKS_PATH,
        handler(jwks),
        RouteDoc {
            operation_id: "jwks".into(),
            summary: "Public keys that verify access tokens (ES256 JWK Set)",
            tag: NAME,
            request_schema: None,
            responses: vec![response_doc(200, "the JWK Set", Some(JWK_SET_JSON))],
        },
    );
    if config.insecure_test_routes {
        r = r.merge(testroutes::routes(
            NAME,
            "/auth/_test/echo",
            "auth_test_echo",
            "/auth/_test/ports",
            "auth_test_ports",
        ));
    }
    r
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
