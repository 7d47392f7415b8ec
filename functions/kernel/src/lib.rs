//! The EdgeCoder function kernel: what every function (auth, mesh, ledger)
//! shares, and the only contract between function code and the runtimes.
//!
//! In scope:
//! - [`ports`]: the capabilities a runtime provides (`Sql`, `Kv`, `Clock`, `Rng`,
//!   `ConfigSource`, `Outbound`, `Defer`, `LedgerClient`, `IdentityClient`), as traits with no platform types;
//! - [`error`]: the crate's one error enum and RFC 9457 problem+json rendering;
//! - [`problems`]: the catalogue of problem codes, generated from the error
//!   enums, that every problem's `type` points into;
//! - [`config`]: the settings every function shares, production-mode
//!   refusals, and `Vars` for each function's own settings;
//! - [`context`] and [`http`]: request context (request id, client IP), requests,
//!   responses, the body cap and JSON decoding;
//! - [`router`]: the route table, dispatch, the OpenAPI document and the
//!   helpers each function's `routes()` uses (`endpoint`, `Docs`, `ok`, `err`);
//! - [`ratelimit`]: the one rate limiter (fixed windows in SQL, 429 with
//!   `Retry-After`), whose rules the functions name;
//! - [`health`], [`audit`], [`migrations`], [`keys`]: readiness, the audit sink
//!   (with `audit::denied`, which records a refusal and returns its error, and
//!   `audit::query`), the shared schema and the signing key;
//! - `testroutes`: conformance routes, only with the `danger-test-routes`
//!   feature.
//!
//! Wire formats are not here: request signatures, node ids and mesh messages
//! are `edgecoder-proto`'s, log formats `edgecoder-tlog`'s.
//!
//! Out of scope: any platform binding. This crate must never depend on `worker`,
//! `spin-sdk`, `rusqlite`, `hyper` or `wasmtime` (the test suite checks it).

pub mod audit;
pub mod config;
pub mod context;
pub mod error;
pub mod health;
pub mod http;
pub mod keys;
pub mod migrations;
pub mod ports;
pub mod problems;
pub mod ratelimit;
pub mod router;
pub mod service;
pub mod services;
#[cfg(feature = "danger-test-routes")]
pub mod testroutes;
pub mod tokens;

pub use config::{Config, Mode};
pub use context::RequestContext;
pub use error::{Error, Problem};
pub use http::{Request, Response};
pub use keys::SigningKey;
pub use ports::{
    Caller, Clock, CollectDeferred, ConfigSource, Defer, Deferred, Enrollment, IdentityClient, Kv,
    LedgerClient, Outbound, OutboundRequest, OutboundResponse, Rng, Rows, SignatureCheck,
    SoftwareSignatures, Sql, Statement, Value,
};
pub use router::{Handler, HandlerResult, RouteDoc, Router};
pub use services::{FunctionSettings, Services};

/// Re-exported so function crates and runtimes agree on one `http` version.
pub use ::http as http_types;
/// Re-exported so port implementations use the same `async_trait`.
pub use async_trait::async_trait;
