//! The `ledger` function, served under `/ledger/`: a transparency log.
//!
//! In scope: the append-only log's storage on SQL with gap-free
//! compare-and-set appends and O(log n) proofs ([`log`]), the HTTP routes,
//! checkpoints and c2sp.org/tlog-proof receipts ([`api`]), double-entry
//! credits ([`credits`]) and the [`client`]s other functions append through.
//! The formats themselves (RFC 6962 SHA-256 trees and proofs, C2SP signed
//! checkpoints, tlog-proof) are `edgecoder-tlog`'s; the offline verifier is
//! the native runtime's `edgecoder verify`.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

pub mod api;
pub mod client;
pub mod credits;
mod error;
pub mod log;
mod settings;
pub mod store;

use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::router::{Docs, endpoint, err, ok, response_doc};
use edgecoder_kernel::{Config, Router, health};
use serde_json::{Value as Json, json};

pub use error::Error;
pub use settings::Settings;

/// The function's name and path prefix.
pub const NAME: &str = "ledger";

/// The ledger function's OpenAPI tag.
const DOCS: Docs = Docs(NAME);

fn b64() -> Json {
    json!({"type": "string", "contentEncoding": "base64"})
}

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let entry = json!({"type": "object", "required": ["index", "entry", "leaf_hash"], "properties": {
        "index": {"type": "integer"}, "entry": b64(), "leaf_hash": b64()}});
    let note = || response_doc(200, "C2SP signed checkpoint (text)", Some("text/plain"));
    let mut r = health::routes(NAME, "/ledger/health", "/ledger/health/ready")
        .route(Method::POST, "/ledger/entries", endpoint(|s, r| async move { api::append(&s, r).await }),
            DOCS.op("ledger_append", "Append an entry (service credential or system_admin)",
                Some(json!({"type": "object", "required": ["payload_type", "payload", "idempotency_key"], "properties": {
                    "payload_type": {"type": "string", "pattern": "^[a-z0-9.-]+/[a-z0-9.-]+/v[0-9]+$"},
                    "payload": b64(), "idempotency_key": {"type": "string", "maxLength": 200}}})),
                vec![
                    ok(201, "appended").with_schema(json!({"type": "object", "properties": {"index": {"type": "integer"}, "duplicate": {"const": false}}})),
                    ok(200, "the idempotency key was used before: the earlier index").with_schema(json!({"type": "object", "properties": {"index": {"type": "integer"}, "duplicate": {"const": true}}})),
                    err(400, "invalid_entry"), err(401, "ledger_unauthorized"), err(413, "entry_too_large"),
                ]))
        .route(Method::GET, "/ledger/entries", endpoint(|s, r| async move { api::page(&s, r).await }),
            DOCS.op("ledger_entries", "Entries [start, end), at most 1000", None, vec![
                ok(200, "a page").with_schema(json!({"type": "object", "properties": {"tree_size": {"type": "integer"}, "entries": {"type": "array", "items": entry.clone()}}})),
                err(400, "invalid_range"),
            ]))
        .route(Method::GET, "/ledger/entries/{index}", endpoint(|s, r| async move { api::entry(&s, r).await }),
            DOCS.op("ledger_entry", "One entry: its exact bytes and leaf hash", None, vec![
                ok(200, "the entry").with_schema(entry), err(400, "invalid_range"), err(404, "entry_not_found"),
            ]))
        .route(Method::GET, "/ledger/checkpoint", endpoint(|s, r| async move { api::get_checkpoint(&s, r).await }),
            DOCS.op("ledger_checkpoint", "The latest signed checkpoint", None, vec![note(), err(404, "not_found")]))
        .route(Method::POST, "/ledger/checkpoint", endpoint(|s, r| async move { api::post_checkpoint(&s, r).await }),
            DOCS.op("ledger_checkpoint_now", "Sign the current head now (appenders only)", None, vec![note(), err(401, "ledger_unauthorized")]))
        .route(Method::GET, "/ledger/proof/inclusion", endpoint(|s, r| async move { api::inclusion(&s, r).await }),
            DOCS.op("ledger_inclusion_proof", "Inclusion proof (?index=&tree_size=)", None, vec![
                ok(200, "the proof").with_schema(json!({"type": "object", "properties": {"index": {"type": "integer"}, "tree_size": {"type": "integer"}, "leaf_hash": b64(), "root": b64(), "proof": {"type": "array", "items": b64()}}})),
                err(400, "invalid_range"),
            ]))
        .route(Method::GET, "/ledger/proof/consistency", endpoint(|s, r| async move { api::consistency(&s, r).await }),
            DOCS.op("ledger_consistency_proof", "Consistency proof (?first=&second=)", None, vec![
                ok(200, "the proof").with_schema(json!({"type": "object", "properties": {"first": {"type": "integer"}, "second": {"type": "integer"}, "proof": {"type": "array", "items": b64()}}})),
                err(400, "invalid_range"),
            ]))
        .route(Method::GET, "/ledger/keys", endpoint(|s, r| async move { api::keys(&s, r).await }),
            DOCS.op("ledger_keys", "Checkpoint keys with ids and validity windows", None, vec![
                ok(200, "the keys").with_schema(json!({"type": "object", "properties": {"origin": {"type": "string"}, "keys": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "key_id": {"type": "string"}, "algorithm": {"type": "string"}, "signature_type": {"type": "integer"},
                    "public_key": b64(), "valid_until": {"type": ["integer", "null"]}}}}}})),
                err(404, "not_found"),
            ]));
    let posting = json!({"type": "object", "required": ["account", "amount"], "properties": {
        "account": {"type": "string", "description": "user:<id>, node:<id>, issuance or fees"}, "amount": {"type": "integer"}}});
    let transfer = json!({"type": "object", "required": ["id", "postings"], "properties": {
        "id": {"type": "string"}, "postings": {"type": "array", "items": posting.clone()}, "memo": {"type": ["string", "null"]},
        "created_by": {"type": "string"}, "created_at": {"type": "integer"}, "ledger_index": {"type": ["integer", "null"]}, "duplicate": {"type": "boolean"}}});
    let account = json!({"type": "object", "required": ["id", "balance"], "properties": {
        "id": {"type": "string"}, "kind": {"type": "string"}, "balance": {"type": "integer"}, "recent": {"type": "array"}}});
    r = r
        .route(Method::POST, "/ledger/transfers", endpoint(|s, r| async move { credits::create(&s, r).await }),
            DOCS.op("ledger_transfer", "A balanced transfer (services, or system_admin with step-up); also a credit-transfer/v1 log entry",
                Some(json!({"type": "object", "required": ["postings", "idempotency_key"], "properties": {
                    "postings": {"type": "array", "minItems": 2, "maxItems": 16, "items": posting},
                    "idempotency_key": {"type": "string", "maxLength": 200}, "memo": {"type": "string", "maxLength": 500}}})),
                vec![
                    ok(201, "the transfer").with_schema(transfer.clone()),
                    ok(200, "the idempotency key was used before: that transfer").with_schema(transfer),
                    err(400, "invalid_transfer"), err(401, "ledger_unauthorized"), err(403, "forbidden / step_up_required"),
                    err(409, "insufficient_credits"),
                ]))
        .route(Method::GET, "/ledger/transfers/{id}/receipt", endpoint(|s, r| async move { api::receipt(&s, r).await }),
            DOCS.op("ledger_transfer_receipt", "A c2sp.org/tlog-proof of the transfer: its log entry (extra), inclusion proof and a signed checkpoint covering it (parties, admins, services)", None, vec![
                response_doc(200, "the receipt, c2sp.org/tlog-proof@v1 (text)", Some("text/plain")),
                err(401, "ledger_unauthorized"), err(404, "transfer_not_found"),
            ]))
        .route(Method::GET, "/ledger/accounts/{id}", endpoint(|s, r| async move { credits::account(&s, r).await }),
            DOCS.op("ledger_account", "Balance and latest postings (the owner, admins, services)", None, vec![
                ok(200, "the account").with_schema(account), err(401, "ledger_unauthorized"), err(404, "account_not_found"),
            ]))
        .route(Method::GET, "/ledger/accounts/{id}/transfers", endpoint(|s, r| async move { credits::account_transfers(&s, r).await }),
            DOCS.op("ledger_account_transfers", "Postings, newest first (?limit=&before=)", None, vec![
                ok(200, "a page").with_schema(json!({"type": "object", "properties": {"id": {"type": "string"}, "postings": {"type": "array"}, "next_before": {"type": ["integer", "null"]}}})),
                err(400, "invalid_range"), err(401, "ledger_unauthorized"), err(404, "account_not_found"),
            ]));
    #[cfg(feature = "danger-test-routes")]
    if config.insecure_test_routes {
        // Conformance echo and ports routes: only in builds with
        // `danger-test-routes`, only with the setting on.
        r = r.merge(edgecoder_kernel::testroutes::routes(
            NAME,
            "/ledger/_test/echo",
            "ledger_test_echo",
            "/ledger/_test/ports",
            "ledger_test_ports",
        ));
    }
    #[cfg(not(feature = "danger-test-routes"))]
    let _ = config;
    r
}
