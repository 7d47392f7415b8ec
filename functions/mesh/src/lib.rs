//! The `mesh` function, served under `/mesh/`.
//!
//! In scope: The coordinator: node identity, signed requests, registration and approval, heartbeat policy, scheduling, peers and blacklist (issue 5 fills it in). For now: health, readiness and the shared request pipeline.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

use edgecoder_kernel::{Config, Router, health, testroutes};

/// The function's name and path prefix.
pub const NAME: &str = "mesh";

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let mut r = health::routes(NAME, "/mesh/health", "/mesh/health/ready");
    if config.insecure_test_routes {
        r = r.merge(testroutes::routes(
            NAME,
            "/mesh/_test/echo",
            "mesh_test_echo",
            "/mesh/_test/ports",
            "mesh_test_ports",
        ));
    }
    r
}
