//! The `mesh` function (the coordinator), served under `/mesh/`.
//!
//! In scope: node identity (P-256 keys generated on the device,
//! registration with a one-time enrollment token and proof of possession,
//! signed key rotation), operator approval with step-up and ledger entries,
//! mesh authentication on every route (RFC 9421 request signatures with
//! per-key nonces in SQL, or access tokens for operator and submitter
//! routes), per-node rate limits, the heartbeat's server-authoritative
//! policy, the blacklist (bans on node keys, node ids and owner accounts,
//! enforced on every path; [`blacklist`]), task scheduling with leases over frozen, content-addressed
//! inputs, and inference tasks (leased only to approved GPU hosts that serve
//! the task's model), and the model supply chain (source policies, signed
//! releases, staged rollouts with health gates: [`models`], [`rollout`]).
//! Peering with other coordinators under operator policy, with
//! coordinator-to-coordinator requests signed like node requests
//! ([`peers`], [`authn::signed_peer`]), and witnessing peers' (and other)
//! logs as a c2sp.org/tlog-witness ([`witness`]), and gossip with blacklist
//! propagation under each peer's ban policy ([`federation`]), and node
//! reputation from verified outcomes ([`reputation`]), and the credit
//! economy: escrow at submission, payment on acceptance, refunds
//! ([`economy`]), the credit routes ([`credits`]) and issuance epochs closed
//! by a quorum of coordinators ([`epochs`]).
//! Out of scope: running tasks
//! (the device agent, `agent/`), and the wire formats themselves
//! (`edgecoder-proto`: signatures, node ids, messages).
//!
//! Modules: [`authn`] (who is calling), [`nodes`], [`tasks`] and [`inference`] (handlers,
//! each with its `routes()`), [`policy`], [`store`] (every statement the
//! mesh runs, typed), and its own settings ([`Settings`]). Like every
//! function crate this one is pure logic over the kernel's ports.

pub mod authn;
pub mod blacklist;
pub mod credits;
pub mod economy;
pub mod epochs;
mod error;
pub mod federation;
pub mod inference;
pub mod models;
pub mod nodes;
pub mod peers;
pub mod policy;
pub mod reputation;
pub mod rollout;
mod settings;
pub mod store;
pub mod tasks;
#[cfg(feature = "danger-test-routes")]
mod testing;
pub mod witness;

use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::router::{Docs, ResponseDoc, endpoint, err, ok};
use edgecoder_kernel::{Config, Request, Response, Router, Services, audit, health};
use edgecoder_proto::httpsig;
use serde_json::{Value as Json, json};

pub use edgecoder_kernel::http::rfc3339;
pub use error::{Error, problem_types};
pub use settings::Settings;

/// The function's name and path prefix.
pub const NAME: &str = "mesh";

/// The mesh function's OpenAPI tag.
pub(crate) const DOCS: Docs = Docs(NAME);

/// `v` and the refusals every signed route can answer.
pub(crate) fn signed(mut v: Vec<ResponseDoc>) -> Vec<ResponseDoc> {
    v.push(err(
        401,
        "mesh_unauthorized / signature_invalid / signature_expired / content_digest_mismatch / unknown_key / unknown_peer / replay_detected",
    ));
    v.push(err(
        421,
        "misdirected_request: signed for another coordinator's origin",
    ));
    v.push(err(429, "rate_limited (per node, with Retry-After)"));
    if !v.iter().any(|d| d.status == 403) {
        v.push(err(
            403,
            "node_blacklisted: the node, its key or its owner is banned",
        ));
    }
    v
}
/// `GET /mesh/identity`: how to talk to this coordinator.
async fn identity(s: &Services, _req: Request) -> Result<Response, Error> {
    let describe = |k: &p256::ecdsa::VerifyingKey, retired_at: Option<i64>| {
        let point = k.to_encoded_point(false);
        json!({
            "key_id": edgecoder_kernel::keys::key_id(k),
            "public_key": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, point.as_bytes()),
            "retired_at": retired_at,
        })
    };
    let settings = Settings::of(s)?;
    let keys = &settings.coordinator_keys;
    let key = keys
        .current
        .as_ref()
        .map(|k| describe(k.verifying_key(), None));
    let previous: Vec<Json> = keys
        .previous
        .iter()
        .map(|(k, at)| describe(k, Some(*at)))
        .collect();
    Ok(ok_json(&json!({
        "function": NAME,
        "issuer": s.config.issuer,
        "origin": settings.origins.first(),
        "coordinator_key": key,
        "rotation": settings.rotation,
        "witness": witness::vkey(s)?.map(|(name, vkey)| json!({"name": name, "vkey": vkey, "add_checkpoint": "/mesh/witness/add-checkpoint"})),
        "previous_coordinator_keys": previous,
        "request_signatures": {
            "standard": "RFC 9421",
            "algorithm": httpsig::ALG,
            "covered_components": [["@method", "@target-uri", "content-digest"], ["@method", "@authority", "@path", "@query", "content-digest"]],
            "required_parameters": ["created", "nonce", "keyid"],
            "content_digest": "RFC 9530, sha-256 required, over the raw body",
            "max_skew_secs": httpsig::MAX_SKEW_SECS,
        },
        "task_kinds": policy::TASK_KINDS,
        "policy_version": policy::POLICY_VERSION,
    })))
}

/// `GET /mesh/audit?action=&request_id=&limit=`: operators read the mesh's
/// audit trail (on Spin it lives in the mesh component's own database).
async fn audit_query(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let limit = req
        .query_param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let filter = audit::Filter {
        action: req.query_param("action"),
        action_prefix: Some("mesh."),
        target: req.query_param("target"),
        request_id: req.query_param("request_id"),
        limit,
        ..audit::Filter::default()
    };
    let events: Vec<Json> = audit::query(s.sql.as_ref(), &filter)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "time": rfc3339(e.time),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
                "request_id": e.request_id,
                "details": e.details,
            })
        })
        .collect();
    Ok(ok_json(&json!({ "events": events })))
}

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let identity_doc = DOCS.op(
        "mesh_identity",
        "How to talk to this coordinator: its key, the signature profile, task kinds",
        None,
        vec![ok(200, "identity")],
    );
    let audit_doc = DOCS.op(
        "mesh_audit",
        "The mesh's audit events (operator, step-up): ?action=&request_id=&target=&limit=",
        None,
        vec![
            ok(200, "{events}"),
            err(400, "invalid_request: a bad query parameter"),
            err(401, "mesh_unauthorized / invalid_token"),
            err(403, "forbidden / step_up_required"),
        ],
    );
    let r = health::routes(NAME, "/mesh/health", "/mesh/health/ready")
        .merge(edgecoder_kernel::audit::export_routes(
            NAME,
            "/mesh/audit/events",
        ))
        .route(
            Method::GET,
            "/mesh/identity",
            endpoint(|s, r| async move { identity(&s, r).await }),
            identity_doc,
        );
    let r = nodes::routes(r);
    let r = tasks::routes(r);
    let r = inference::routes(r);
    let r = models::routes(r);
    let r = blacklist::routes(r);
    let r = peers::routes(r);
    let r = federation::routes(r);
    let r = credits::routes(r);
    let r = witness::routes(r).route(
        Method::GET,
        "/mesh/audit",
        endpoint(|s, r| async move { audit_query(&s, r).await }),
        audit_doc,
    );
    #[cfg(feature = "danger-test-routes")]
    let r = testing::mount(r, config);
    #[cfg(not(feature = "danger-test-routes"))]
    let _ = config;
    r
}
