//! The `ledger` function, served under `/ledger/`: a transparency log.
//!
//! In scope: the append-only log's storage on SQL with gap-free
//! compare-and-set appends and O(log n) proofs ([`log`]), the HTTP routes,
//! checkpoints and c2sp.org/tlog-proof receipts of any entry ([`api`]), the
//! signed-checkpoint storage ([`store`]), the [`client`]s other functions
//! append through and read the log with, and the function's own settings
//! ([`Settings`]), and asking C2SP witnesses to cosign its checkpoints
//! ([`witnesses`]). Credits are not here: they live with the tasks they pay
//! for, in the mesh's database (`edgecoder_mesh::credits`), and reach the log
//! as entries the mesh appends.
//! The formats themselves (RFC 6962 SHA-256 trees and proofs, C2SP signed
//! checkpoints, tlog-proof) are `edgecoder-tlog`'s; the offline verifier is
//! the native runtime's `edgecoder verify`.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

pub mod api;
pub mod client;
mod error;
pub mod log;
mod settings;
pub mod store;
pub mod witnesses;

use edgecoder_kernel::router::Docs;
use edgecoder_kernel::{Config, Router, health};
use serde_json::{Value as Json, json};

pub use error::{Error, problem_types};
pub use settings::Settings;

/// The function's name and path prefix.
pub const NAME: &str = "ledger";

/// The ledger function's OpenAPI tag.
pub(crate) const DOCS: Docs = Docs(NAME);

/// The JSON Schema of a base64 string.
pub(crate) fn b64() -> Json {
    json!({"type": "string", "contentEncoding": "base64"})
}

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let r = health::routes(NAME, "/ledger/health", "/ledger/health/ready").merge(
        edgecoder_kernel::audit::export_routes(NAME, "/ledger/audit/events"),
    );
    let r = api::routes(r);
    // Conformance echo and ports routes: only in builds with
    // `danger-test-routes`, only with the setting on.
    #[cfg(feature = "danger-test-routes")]
    let r = if config.insecure_test_routes {
        r.merge(edgecoder_kernel::testroutes::routes(
            NAME,
            "/ledger/_test/echo",
            "ledger_test_echo",
            "/ledger/_test/ports",
            "ledger_test_ports",
        ))
    } else {
        r
    };
    #[cfg(not(feature = "danger-test-routes"))]
    let _ = config;
    r
}
