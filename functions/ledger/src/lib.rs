//! The `ledger` function, served under `/ledger/`.
//!
//! In scope: The transparency log, checkpoints, proofs and credits (issue 4 fills it in). For now: health, readiness and the shared request pipeline.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

pub mod checkpoint;
pub mod merkle;

use edgecoder_kernel::{Config, Router, health, testroutes};

/// The function's name and path prefix.
pub const NAME: &str = "ledger";

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let mut r = health::routes(NAME, "/ledger/health", "/ledger/health/ready");
    if config.insecure_test_routes {
        r = r.merge(testroutes::routes(
            NAME,
            "/ledger/_test/echo",
            "ledger_test_echo",
            "/ledger/_test/ports",
            "ledger_test_ports",
        ));
    }
    r
}
