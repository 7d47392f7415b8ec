//! The `mesh` function (the coordinator), served under `/mesh/`.
//!
//! In scope: node identity (P-256 keys generated on the device,
//! registration with a one-time enrollment token and proof of possession,
//! signed key rotation), operator approval with step-up and ledger entries,
//! mesh authentication on every route (RFC 9421 request signatures with
//! per-key nonces in SQL, or access tokens for operator and submitter
//! routes), per-node rate limits, the heartbeat's server-authoritative
//! policy, and task scheduling with leases over frozen, content-addressed
//! inputs. Out of scope: peers, gossip and blacklist propagation
//! (federation; the blacklist version is already reported), running tasks
//! (the device agent, `agent/`), and the wire formats themselves
//! (`edgecoder-proto`: signatures, node ids, messages).
//!
//! Modules: [`authn`] (who is calling), [`nodes`], [`policy`], [`tasks`].
//! Like every function crate this one is pure logic over the kernel's ports.

pub mod authn;
mod error;
pub mod nodes;
pub mod policy;
mod settings;
pub mod store;
pub mod tasks;
#[cfg(feature = "danger-test-routes")]
mod testing;

use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::router::{Docs, ResponseDoc, endpoint, err, object, ok, response_doc};
use edgecoder_kernel::{Config, Request, Response, Router, Services, audit, health};
use edgecoder_proto::httpsig;
use serde_json::{Value as Json, json};

pub use edgecoder_kernel::http::rfc3339;
pub use error::Error;
pub use settings::Settings;

/// The function's name and path prefix.
pub const NAME: &str = "mesh";

/// The mesh function's OpenAPI tag.
const DOCS: Docs = Docs(NAME);

fn signed(mut v: Vec<ResponseDoc>) -> Vec<ResponseDoc> {
    v.push(err(
        401,
        "mesh_unauthorized / signature_invalid / signature_expired / content_digest_mismatch / unknown_key / replay_detected",
    ));
    v.push(err(429, "rate_limited (per node, with Retry-After)"));
    v
}
/// `GET /mesh/identity`: how to talk to this coordinator.
async fn identity(s: &Services, _req: Request) -> Result<Response, Error> {
    let key = s.config.signing_key.as_ref().map(|k| {
        let point = k.verifying_key().to_encoded_point(false);
        json!({
            "key_id": k.kid(),
            "public_key": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, point.as_bytes()),
        })
    });
    Ok(ok_json(&json!({
        "function": NAME,
        "issuer": s.config.issuer,
        "coordinator_key": key,
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
    use nodes::Decide;
    let node_id = json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{2,62}$"});
    let digest = json!({"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"});
    let blob = json!({"type": "object", "required": ["digest"], "properties": {"digest": digest, "bytes": {"type": "string", "contentEncoding": "base64"}}});
    let reason = object(&[], json!({"reason": {"type": "string", "maxLength": 500}}));
    let decision = |id: &str, summary: &'static str| {
        DOCS.op(
            id,
            summary,
            reason.clone(),
            vec![
                ok(200, "{node_id, status, previous_status, ledger_index}"),
                err(401, "mesh_unauthorized / invalid_token"),
                err(403, "forbidden / step_up_required"),
                err(404, "node_not_found"),
                err(409, "invalid_transition"),
            ],
        )
    };
    let r = health::routes(NAME, "/mesh/health", "/mesh/health/ready")
        .route(Method::GET, "/mesh/identity", endpoint(|s, r| async move { identity(&s, r).await }),
            DOCS.op("mesh_identity", "How to talk to this coordinator: its key, the signature profile, task kinds", None, vec![ok(200, "identity")]))
        .route(Method::POST, "/mesh/nodes/register", endpoint(|s, r| async move { nodes::register(&s, r).await }),
            DOCS.op("register_node", "Register a node: enrollment token, node id, kind, public key, capabilities; signed by the new key", object(&["enrollment_token", "node_id", "kind", "public_key", "os", "version", "capabilities"], json!({
                "enrollment_token": {"type": "string"}, "node_id": node_id, "kind": {"enum": ["agent", "coordinator"]},
                "public_key": {"type": "string", "description": "P-256 SEC1 point, base64url"}, "os": {"type": "string"}, "version": {"type": "string"},
                "capabilities": {"type": "object", "required": ["sandbox", "cpu_cores", "memory_mb"], "properties": {"sandbox": {"enum": ["wasmtime", "none"]}, "cpu_cores": {"type": "integer"}, "memory_mb": {"type": "integer"}, "gpu": {}, "models": {"type": "array", "items": {"type": "string"}}}}})),
                signed(vec![ok(201, "{node_id, kind, status: pending_approval, key_id, policy}"), err(400, "enrollment_token_invalid / invalid_node_id / invalid_public_key"), err(409, "node_already_registered / key_in_use")])))
        .route(Method::GET, "/mesh/nodes", endpoint(|s, r| async move { nodes::list(&s, r).await }),
            DOCS.op("list_nodes", "Nodes: every node for operators, your own otherwise (?status=)", None, vec![ok(200, "{nodes}"), err(401, "mesh_unauthorized / invalid_token")]))
        .route(Method::GET, "/mesh/nodes/{id}", endpoint(|s, r| async move { nodes::get(&s, r).await }),
            DOCS.op("get_node", "One node: to itself (signed), its owner or an operator", None, signed(vec![ok(200, "node"), err(404, "node_not_found")])))
        .route(Method::POST, "/mesh/nodes/{id}/keys/rotate", endpoint(|s, r| async move { nodes::rotate(&s, r).await }),
            DOCS.op("rotate_node_key", "Replace the node's key: signed by the current key, with a proof by the new one", object(&["new_public_key", "proof"], json!({"new_public_key": {"type": "string"}, "proof": {"type": "string", "description": "base64url r||s by the new key over edgecoder.dev/key-rotation/v1\\n{node_id}\\n{old key id}\\n{new key id}"}})),
                signed(vec![ok(200, "{node_id, key_id, previous_key_id}"), err(400, "key_proof_invalid / invalid_public_key"), err(409, "key_in_use")])))
        .route(Method::POST, "/mesh/nodes/{id}/approve", endpoint(|s, r| async move { nodes::decide(&s, r, Decide::Approve).await }),
            decision("approve_node", "Approve a node (coordinator_owner or system_admin, step-up); audited and logged in the ledger"))
        .route(Method::POST, "/mesh/nodes/{id}/reject", endpoint(|s, r| async move { nodes::decide(&s, r, Decide::Reject).await }),
            decision("reject_node", "Reject a node (operator, step-up); audited and logged in the ledger"))
        .route(Method::POST, "/mesh/nodes/{id}/suspend", endpoint(|s, r| async move { nodes::decide(&s, r, Decide::Suspend).await }),
            decision("suspend_node", "Suspend a node (operator, step-up); audited and logged in the ledger"))
        .route(Method::POST, "/mesh/heartbeat", endpoint(|s, r| async move { nodes::heartbeat(&s, r).await }),
            DOCS.op("heartbeat", "Telemetry in, the node's server-authoritative policy out (signed)", object(&["cpu_percent", "memory_used_mb", "on_external_power", "thermal_state", "device_type", "sandbox_ready"], json!({
                "cpu_percent": {"type": "number"}, "memory_used_mb": {"type": "integer"}, "memory_total_mb": {"type": "integer"}, "battery_percent": {"type": ["number", "null"]},
                "on_external_power": {"type": "boolean"}, "low_power_mode": {"type": "boolean"}, "thermal_state": {"enum": ["nominal", "fair", "serious", "critical"]},
                "device_type": {"enum": ["phone", "tablet", "laptop", "desktop", "server"]}, "sandbox_ready": {"type": "boolean"}, "active_model": {"type": ["string", "null"]}})),
                signed(vec![ok(200, "{node_id, status, policy, heartbeat_interval_secs}"), err(403, "node_not_active (rejected)")])))
        .route(Method::POST, "/mesh/tasks", endpoint(|s, r| async move { tasks::submit(&s, r).await }),
            DOCS.op("submit_task", "Submit a wasm task over frozen, content-addressed inputs (verified user or service)", object(&["kind", "module", "input", "timeout_ms", "resources"], json!({
                "kind": {"enum": ["wasm"]}, "module": blob, "input": blob, "timeout_ms": {"type": "integer"},
                "resources": {"type": "object", "required": ["memory_mb", "fuel"], "properties": {"memory_mb": {"type": "integer"}, "fuel": {"type": "integer"}}},
                "priority": {"type": "integer", "minimum": -10, "maximum": 10}, "tenant": {"type": "string"}})),
                vec![ok(201, "{task_id, status: queued}"), err(401, "mesh_unauthorized / invalid_token"), err(422, "outside_subset / limits_exceeded / digest_mismatch / blob_unknown")]))
        .route(Method::POST, "/mesh/tasks/pull", endpoint(|s, r| async move { tasks::pull(&s, r).await }),
            DOCS.op("pull_task", "Take a task under a lease, after the node's policy is checked (signed, active node)", None,
                signed(vec![ok(200, "{task, lease_id, lease_expires_at}"), response_doc(204, "no task; edgecoder-reason: no_work / power_deferred / outside_subset", None), err(403, "node_not_active")])))
        .route(Method::POST, "/mesh/tasks/{id}/result", endpoint(|s, r| async move { tasks::result(&s, r).await }),
            DOCS.op("report_result", "Report a result: the lease holder only, before the lease expires; the first valid result wins", object(&["lease_id", "ok", "duration_ms"], json!({
                "lease_id": {"type": "string"}, "ok": {"type": "boolean"}, "output_digest": digest, "output": {"type": "string", "contentEncoding": "base64"},
                "duration_ms": {"type": "integer"}, "error_code": {"enum": edgecoder_proto::mesh::FailureCode::ALL.map(|c| c.as_str())}, "fuel_used": {"type": "integer"}, "stdout": {"type": "string"}, "stderr": {"type": "string"}})),
                signed(vec![ok(200, "{task_id, status, ledger_index}"), err(403, "node_not_active"), err(409, "lease_invalid"), err(422, "digest_mismatch")])))
        .route(Method::GET, "/mesh/tasks/{id}", endpoint(|s, r| async move { tasks::get(&s, r).await }),
            DOCS.op("get_task", "A task and its result: its submitter or an operator", None, vec![ok(200, "task"), err(401, "mesh_unauthorized / invalid_token"), err(404, "task_not_found")]))
        .route(Method::GET, "/mesh/audit", endpoint(|s, r| async move { audit_query(&s, r).await }),
            DOCS.op("mesh_audit", "The mesh's audit events (operator, step-up): ?action=&request_id=&target=&limit=", None, vec![ok(200, "{events}"), err(403, "forbidden / step_up_required")]));
    #[cfg(feature = "danger-test-routes")]
    let r = testing::mount(r, config);
    #[cfg(not(feature = "danger-test-routes"))]
    let _ = config;
    r
}
