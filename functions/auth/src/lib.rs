//! The `auth` function, served under `/auth/`.
//!
//! In scope: Portal identity: accounts, sessions and keys, roles, node enrollment (issues 3 and 6 fill it in). For now: health, readiness and the shared request pipeline.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

use edgecoder_kernel::{Config, Router, health, testroutes};

/// The function's name and path prefix.
pub const NAME: &str = "auth";

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let mut r = health::routes(NAME, "/auth/health", "/auth/health/ready");
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
