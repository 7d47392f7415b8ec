//! Node identity: registration with an enrollment token and proof of
//! possession, key rotation, operator decisions (approve, reject, suspend),
//! listing, and the heartbeat that returns the node's policy.
//!
//! Out of scope: issuing enrollment tokens (the auth function) and the
//! request-signature checks themselves ([`crate::authn`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services};
use edgecoder_proto::keys::key_id;
use edgecoder_proto::mesh::{
    Capabilities, HeartbeatResponse, NodeStatus, Policy, PolicyReason, RegisterRequest,
    RegisterResponse, Telemetry, Work,
};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::authn::{self, Bearer, Node};
use crate::{DOCS, Error, rfc3339, signed};
use crate::{policy, store};

/// The ledger payload type of approval decisions.
pub const NODE_APPROVAL_V1: &str = "edgecoder.dev/node-approval/v1";
/// What a rotation proof signs: this, node id, old key id, new key id.
pub const ROTATION_CONTEXT: &str = "edgecoder.dev/key-rotation/v1";

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

fn short_text(v: &str, name: &str, max: usize) -> Result<(), Error> {
    if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control()) {
        return Err(invalid(&format!(
            "{name} must be 1 to {max} printable characters."
        )));
    }
    Ok(())
}

/// Range checks on declared capabilities that serde cannot express.
fn validate_capabilities(c: &Capabilities) -> Result<(), Error> {
    if !(1..=4096).contains(&c.cpu_cores) || c.memory_mb > 1 << 24 {
        return Err(invalid(
            "capabilities.cpu_cores or memory_mb is out of range.",
        ));
    }
    if c.gpu.as_ref().is_some_and(|g| g.to_string().len() > 1024) {
        return Err(invalid("capabilities.gpu is at most 1 KiB of JSON."));
    }
    if c.models.len() > 32 {
        return Err(invalid("capabilities.models holds at most 32 names."));
    }
    if !c
        .models
        .iter()
        .all(|m| edgecoder_proto::inference::valid_model_name(m) || crate::models::valid_family(m))
    {
        return Err(invalid(
            "capabilities.models are model families (name) or releases (name@version).",
        ));
    }
    Ok(())
}

/// `POST /mesh/nodes/register`.
pub async fn register(s: &Services, req: Request) -> Result<Response, Error> {
    let body: RegisterRequest = req.json()?;
    authn::node_id(&body.node_id)?;
    short_text(&body.os, "os", 64)?;
    short_text(&body.version, "version", 64)?;
    validate_capabilities(&body.capabilities)?;
    let key = authn::parse_public_key(&body.public_key)?;
    // Proof of possession: the registration is signed by the key it carries.
    let kid = authn::signed_by_new_key(s, &req, &key).await?;
    // Not `node:<id>` until the registration succeeds: the caller has only
    // proved that it holds this key.
    let claimant = format!("key:{kid}");
    let actor = format!("node:{}", body.node_id);
    if authn::load_node(s, &body.node_id).await?.is_some() {
        return Err(audit::denied(
            s,
            &req.ctx,
            &claimant,
            "mesh.node.register",
            Some(&body.node_id),
            json!({"reason": "node_already_registered", "key_id": kid}),
            Error::NodeAlreadyRegistered,
        )
        .await);
    }
    if store::nodes::key_taken(s.sql.as_ref(), &kid).await? {
        return Err(Error::KeyInUse);
    }
    use crate::store::blacklist::SubjectKind as Ban;
    let refuse_banned = |subject: &str| {
        audit::denied(
            s,
            &req.ctx,
            &claimant,
            "mesh.node.register",
            Some(&body.node_id),
            json!({"reason": "node_blacklisted", "key_id": kid, "banned": subject}),
            Error::NodeBlacklisted,
        )
    };
    if crate::blacklist::covers(
        s,
        &[
            (Ban::NodeKey, kid.as_str()),
            (Ban::NodeId, body.node_id.as_str()),
        ],
    )
    .await?
    {
        return Err(refuse_banned("node").await);
    }
    let Some(enrolled) = s
        .identity
        .redeem_enrollment(&body.enrollment_token, &body.node_id, body.kind.as_str())
        .await?
    else {
        return Err(audit::denied(
            s,
            &req.ctx,
            &claimant,
            "mesh.node.register",
            Some(&body.node_id),
            json!({"reason": "enrollment_token_invalid", "key_id": kid}),
            Error::EnrollmentTokenInvalid,
        )
        .await);
    };
    // A banned owner does not come back under a new node id.
    if crate::blacklist::covers(s, &[(Ban::Owner, enrolled.owner_id.as_str())]).await? {
        return Err(refuse_banned("owner").await);
    }
    let now = s.clock.now_ms();
    let point = key.to_encoded_point(false);
    let done = s
        .sql
        .batch(vec![
            store::nodes::insert(&store::nodes::NewNode {
                node_id: &body.node_id,
                kind: body.kind,
                owner_id: &enrolled.owner_id,
                key_id: &kid,
                public_key: point.as_bytes(),
                os: &body.os,
                version: &body.version,
                capabilities: &body.capabilities,
                now,
            }),
            audit::statement_for(
                s,
                &req.ctx,
                &actor,
                "mesh.node.register",
                Some(&body.node_id),
                Outcome::Success,
                json!({"key_id": kid, "kind": body.kind, "owner": enrolled.owner_id}),
            ),
        ])
        .await;
    let inserted = match done {
        Ok(r) => r.first().is_some_and(|r| !r.rows.is_empty()),
        // A racing registration of the same key hits the UNIQUE key_id.
        Err(edgecoder_kernel::Error::UniqueViolation(_)) => false,
        Err(e) => return Err(e.into()),
    };
    if !inserted {
        return Err(Error::NodeAlreadyRegistered);
    }
    let (_, policy) = policy::for_node(
        body.kind,
        &body.capabilities,
        None,
        blacklist_version(s).await?,
    );
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &RegisterResponse {
            node_id: body.node_id,
            kind: body.kind,
            status: NodeStatus::PendingApproval,
            key_id: Some(kid),
            policy: Some(policy),
        },
    ))
}

/// `POST /mesh/nodes/{id}/keys/rotate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// SEC1 point, base64url.
    new_public_key: String,
    /// The new key's signature (r‖s, base64url) over
    /// `edgecoder.dev/key-rotation/v1\n{node_id}\n{old key id}\n{new key id}`.
    proof: String,
}

/// The bytes a rotation proof signs.
pub fn rotation_message(node_id: &str, old_kid: &str, new_kid: &str) -> String {
    format!("{ROTATION_CONTEXT}\n{node_id}\n{old_kid}\n{new_kid}")
}

/// `POST /mesh/nodes/{id}/keys/rotate`: signed by the current key.
pub async fn rotate(s: &Services, req: Request) -> Result<Response, Error> {
    let node = authn::signed_node(s, &req).await?;
    if req.param("id") != Some(node.node_id.as_str()) {
        return Err(Error::Forbidden);
    }
    // A suspended node keeps its key until an operator restores it, so a
    // blacklist keyed on it cannot be dodged.
    if !matches!(
        node.status,
        NodeStatus::Active | NodeStatus::PendingApproval
    ) {
        return Err(Error::NodeNotActive);
    }
    let body: Rotate = req.json()?;
    let new_key: VerifyingKey = authn::parse_public_key(&body.new_public_key)?;
    let new_kid = key_id(&new_key);
    let proof = URL_SAFE_NO_PAD
        .decode(body.proof.trim_end_matches('=').as_bytes())
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(Error::KeyProofInvalid)?;
    new_key
        .verify(
            rotation_message(&node.node_id, &node.key_id, &new_kid).as_bytes(),
            &proof,
        )
        .map_err(|_| Error::KeyProofInvalid)?;
    if store::nodes::key_taken(s.sql.as_ref(), &new_kid).await? {
        return Err(Error::KeyInUse);
    }
    let now = s.clock.now_ms();
    let point = new_key.to_encoded_point(false);
    let [retire, install] = store::nodes::replace_key(&node, &new_kid, point.as_bytes(), now);
    let done = s
        .sql
        .batch(vec![
            retire,
            install,
            audit::statement_for(
                s,
                &req.ctx,
                &node.actor(),
                "mesh.node.key_rotate",
                Some(&node.node_id),
                Outcome::Success,
                json!({"old_key_id": node.key_id, "new_key_id": new_kid}),
            ),
        ])
        .await;
    match done {
        Ok(_) => {}
        Err(edgecoder_kernel::Error::UniqueViolation(_)) => {
            return Err(Error::KeyInUse);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ok_json(
        &json!({"node_id": node.node_id, "key_id": new_kid, "previous_key_id": node.key_id}),
    ))
}

/// `POST /mesh/nodes/{id}/(approve|reject|suspend)` body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    reason: Option<String>,
}

/// An operator decision about a node.
#[derive(Debug, Clone, Copy)]
pub enum Decide {
    /// pending_approval or suspended → active.
    Approve,
    /// pending_approval or suspended → rejected.
    Reject,
    /// pending_approval or active → suspended.
    Suspend,
}

impl Decide {
    fn name(self) -> &'static str {
        match self {
            Decide::Approve => "approve",
            Decide::Reject => "reject",
            Decide::Suspend => "suspend",
        }
    }
    fn to(self) -> NodeStatus {
        match self {
            Decide::Approve => NodeStatus::Active,
            Decide::Reject => NodeStatus::Rejected,
            Decide::Suspend => NodeStatus::Suspended,
        }
    }
    fn from(self) -> &'static [NodeStatus] {
        match self {
            Decide::Approve | Decide::Reject => {
                &[NodeStatus::PendingApproval, NodeStatus::Suspended]
            }
            Decide::Suspend => &[NodeStatus::PendingApproval, NodeStatus::Active],
        }
    }
}

/// Operator decisions: step-up, then the change, then a ledger entry (the
/// change is undone when the ledger cannot take it), then the audit event.
pub async fn decide(s: &Services, req: Request, what: Decide) -> Result<Response, Error> {
    let id = req.param("id").unwrap_or_default().to_owned();
    let action = format!("mesh.node.{}", what.name());
    let caller = match authn::operator(s, &req).await {
        Ok(c) => c,
        Err(e) => {
            if let Ok(Bearer(c)) = authn::bearer(s, &req).await {
                audit::note(
                    s,
                    &req.ctx,
                    &format!("user:{}", c.user_id),
                    &action,
                    Some(&id),
                    Outcome::Denied,
                    json!({"reason": refusal(&e)}),
                )
                .await?;
            }
            return Err(e);
        }
    };
    let actor = format!("user:{}", caller.user_id);
    authn::node_id(&id)?;
    let body: Decision = if req.body.is_empty() {
        Decision::default()
    } else {
        req.json()?
    };
    if let Some(r) = &body.reason {
        short_text(r, "reason", 500)?;
    }
    let Some(node) = authn::load_node(s, &id).await? else {
        return Err(Error::NodeNotFound);
    };
    let index = apply_decision(s, &req.ctx, &node, what, &actor, body.reason.as_deref()).await?;
    Ok(ok_json(&json!({
        "node_id": id,
        "status": what.to(),
        "previous_status": node.status,
        "ledger_index": index,
    })))
}

/// A decision on `node` by `actor` (an operator, or the coordinator itself
/// on evidence it holds): the status change, then a ledger entry (the change
/// is undone when the ledger cannot take it), then the audit event. The
/// ledger index.
pub async fn apply_decision(
    s: &Services,
    ctx: &edgecoder_kernel::RequestContext,
    node: &Node,
    what: Decide,
    actor: &str,
    reason: Option<&str>,
) -> Result<u64, Error> {
    let id = node.node_id.clone();
    let action = format!("mesh.node.{}", what.name());
    if !what.from().contains(&node.status) {
        return Err(Error::InvalidTransition);
    }
    let now = s.clock.now_ms();
    // The previous decision, to put back if the ledger cannot take this one.
    let sql = s.sql.as_ref();
    let before = store::nodes::decision(sql, &id).await?;
    let decided = store::nodes::Decided {
        by: Some(actor.to_owned()),
        at: Some(now),
        reason: reason.map(str::to_owned),
    };
    if !store::nodes::set_status(sql, &id, node.status, what.to(), &decided).await? {
        return Err(Error::InvalidTransition);
    }
    let payload = json!({
        "node_id": id,
        "kind": node.kind,
        "key_id": node.key_id,
        "owner_id": node.owner_id,
        "decision": what.name(),
        "from": node.status,
        "to": what.to(),
        "actor": actor,
        "reason": reason,
        "decided_at": rfc3339(now),
    });
    let index = match s
        .ledger
        .append(
            NODE_APPROVAL_V1,
            payload.to_string().as_bytes(),
            &format!("node-approval:{id}:{now}:{}", what.name()),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => {
            store::nodes::undo_status(sql, &id, node.status, what.to(), now, &before).await?;
            audit::note(
                s,
                ctx,
                actor,
                &action,
                Some(&id),
                Outcome::Failure,
                json!({"reason": "ledger_unavailable"}),
            )
            .await?;
            return Err(e.into());
        }
    };
    audit::note(
        s,
        ctx,
        actor,
        &action,
        Some(&id),
        Outcome::Success,
        json!({"from": node.status, "to": what.to(), "ledger_index": index, "reason": reason}),
    )
    .await?;
    Ok(index)
}

/// The refusal an audit event names.
fn refusal(e: &Error) -> &'static str {
    match e {
        Error::Forbidden => "forbidden",
        Error::StepUpRequired => "step_up_required",
        _ => "unauthorized",
    }
}

/// `GET /mesh/nodes?status=`: operators see every node, users their own.
pub async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    let status = match req.query_param("status").as_deref() {
        None => None,
        Some(st) => match NodeStatus::parse(st) {
            NodeStatus::Unknown => {
                return Err(invalid(
                    "status must be pending_approval, active, rejected or suspended.",
                ));
            }
            known => Some(known),
        },
    };
    let owner = (!caller.is_operator()).then(|| caller.0.user_id.clone());
    let nodes = store::nodes::list(s.sql.as_ref(), status, owner.as_deref()).await?;
    Ok(ok_json(&json!({ "nodes": nodes })))
}

/// `GET /mesh/nodes/{id}`: the node itself (signed), its owner or an operator.
pub async fn get(s: &Services, req: Request) -> Result<Response, Error> {
    let id = req.param("id").unwrap_or_default().to_owned();
    let allowed_owner = if authn::is_signed(&req) {
        let node = authn::signed_node(s, &req).await?;
        if node.node_id != id {
            return Err(Error::NodeNotFound);
        }
        None
    } else {
        match authn::bearer(s, &req).await? {
            b if b.is_operator() => None,
            Bearer(c) => Some(c.user_id),
        }
    };
    let Some(node) = store::nodes::listed_by_id(s.sql.as_ref(), &id).await? else {
        return Err(Error::NodeNotFound);
    };
    if allowed_owner.is_some_and(|o| node.owner_id != o) {
        return Err(Error::NodeNotFound);
    }
    let mut out = serde_json::to_value(&node).unwrap_or(Json::Null);
    out["reputation"] = crate::reputation::of(s, &id).await?;
    Ok(ok_json(&out))
}

/// The blacklist version nodes should hold.
pub async fn blacklist_version(s: &Services) -> Result<u64, Error> {
    store::nodes::blacklist_version(s.sql.as_ref()).await
}

/// The policy of a node from its stored telemetry.
pub async fn node_policy(
    s: &Services,
    node: &Node,
) -> Result<(Option<policy::Limits>, Policy), Error> {
    let bl = blacklist_version(s).await?;
    let (limits, mut p) =
        policy::for_node(node.kind, &node.capabilities, node.telemetry.as_ref(), bl);
    if node.status != NodeStatus::Active {
        p.work = Work::None;
        p.reason = PolicyReason::NodeNotActive;
        return Ok((None, p));
    }
    Ok((limits, p))
}

/// `POST /mesh/heartbeat`: stores telemetry, answers the node's policy.
/// Pending and suspended nodes may heartbeat (to learn their status); a
/// rejected node may not.
pub async fn heartbeat(s: &Services, req: Request) -> Result<Response, Error> {
    let mut node = authn::signed_node(s, &req).await?;
    if node.status == NodeStatus::Rejected {
        return Err(Error::NodeNotActive);
    }
    let t: Telemetry = req.json()?;
    policy::validate_telemetry(&t)?;
    store::nodes::store_telemetry(s.sql.as_ref(), &node.node_id, &t, s.clock.now_ms()).await?;
    node.telemetry = Some(t);
    let (_, policy) = node_policy(s, &node).await?;
    let models = crate::models::heartbeat(s, &req.ctx, &node).await?;
    Ok(ok_json(&HeartbeatResponse {
        node_id: node.node_id,
        status: node.status,
        policy,
        heartbeat_interval_secs: policy::HEARTBEAT_INTERVAL_SECS,
        models,
    }))
}

/// The JSON Schema of a node id.
pub fn node_id_schema() -> Json {
    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{2,62}$"})
}

fn register_doc() -> RouteDoc {
    let capabilities = object(
        &["sandbox", "cpu_cores", "memory_mb"],
        json!({
            "sandbox": {"enum": ["wasmtime", "none"]},
            "cpu_cores": {"type": "integer"},
            "memory_mb": {"type": "integer"},
            "gpu": {},
            "models": {"type": "array", "items": {"type": "string"}},
        }),
    );
    let required = [
        "enrollment_token",
        "node_id",
        "kind",
        "public_key",
        "os",
        "version",
        "capabilities",
    ];
    let body = object(
        &required,
        json!({
            "enrollment_token": {"type": "string"},
            "node_id": node_id_schema(),
            "kind": {"enum": ["agent", "coordinator", "gpu-host"]},
            "public_key": {"type": "string", "description": "P-256 SEC1 point, base64url"},
            "os": {"type": "string"},
            "version": {"type": "string"},
            "capabilities": capabilities,
        }),
    );
    let summary = "Register a node: enrollment token, node id, kind, public key, capabilities; signed by the new key";
    DOCS.op(
        "register_node",
        summary,
        body,
        signed(vec![
            ok(
                201,
                "{node_id, kind, status: pending_approval, key_id, policy}",
            ),
            err(
                400,
                "enrollment_token_invalid / invalid_node_id / invalid_public_key",
            ),
            err(409, "node_already_registered / key_in_use"),
            err(
                403,
                "node_blacklisted: the key, the node id or the owner is banned",
            ),
        ]),
    )
}

fn rotate_doc() -> RouteDoc {
    let proof = "base64url r||s by the new key over \
                 edgecoder.dev/key-rotation/v1\\n{node_id}\\n{old key id}\\n{new key id}";
    let body = object(
        &["new_public_key", "proof"],
        json!({
            "new_public_key": {"type": "string"},
            "proof": {"type": "string", "description": proof},
        }),
    );
    DOCS.op(
        "rotate_node_key",
        "Replace the node's key: signed by the current key, with a proof by the new one",
        body,
        signed(vec![
            ok(200, "{node_id, key_id, previous_key_id}"),
            err(400, "key_proof_invalid / invalid_public_key"),
            err(409, "key_in_use"),
        ]),
    )
}

fn decision_doc(what: Decide) -> RouteDoc {
    let (id, summary) = match what {
        Decide::Approve => (
            "approve_node",
            "Approve a node (coordinator_owner or system_admin, step-up); audited and logged in the ledger",
        ),
        Decide::Reject => (
            "reject_node",
            "Reject a node (operator, step-up); audited and logged in the ledger",
        ),
        Decide::Suspend => (
            "suspend_node",
            "Suspend a node (operator, step-up); audited and logged in the ledger",
        ),
    };
    DOCS.op(
        id,
        summary,
        object(&[], json!({"reason": {"type": "string", "maxLength": 500}})),
        vec![
            ok(200, "{node_id, status, previous_status, ledger_index}"),
            err(401, "mesh_unauthorized / invalid_token"),
            err(403, "forbidden / step_up_required"),
            err(404, "node_not_found"),
            err(409, "invalid_transition"),
        ],
    )
}

fn heartbeat_doc() -> RouteDoc {
    let required = [
        "cpu_percent",
        "memory_used_mb",
        "on_external_power",
        "thermal_state",
        "device_type",
        "sandbox_ready",
    ];
    let body = object(
        &required,
        json!({
            "cpu_percent": {"type": "number"},
            "memory_used_mb": {"type": "integer"},
            "memory_total_mb": {"type": "integer"},
            "battery_percent": {"type": ["number", "null"]},
            "on_external_power": {"type": "boolean"},
            "low_power_mode": {"type": "boolean"},
            "thermal_state": {"enum": ["nominal", "fair", "serious", "critical"]},
            "device_type": {"enum": ["phone", "tablet", "laptop", "desktop", "server"]},
            "sandbox_ready": {"type": "boolean"},
            "active_model": {"type": ["string", "null"]},
        }),
    );
    DOCS.op(
        "heartbeat",
        "Telemetry in, the node's server-authoritative policy out (signed)",
        body,
        signed(vec![
            ok(200, "{node_id, status, policy, heartbeat_interval_secs}"),
            err(403, "node_not_active (rejected)"),
        ]),
    )
}

/// The node routes.
pub fn routes(r: Router) -> Router {
    let decision = |what: Decide| {
        let h = match what {
            Decide::Approve => endpoint(|s, r| async move { decide(&s, r, Decide::Approve).await }),
            Decide::Reject => endpoint(|s, r| async move { decide(&s, r, Decide::Reject).await }),
            Decide::Suspend => endpoint(|s, r| async move { decide(&s, r, Decide::Suspend).await }),
        };
        (h, decision_doc(what))
    };
    let (approve, approve_doc) = decision(Decide::Approve);
    let (reject, reject_doc) = decision(Decide::Reject);
    let (suspend, suspend_doc) = decision(Decide::Suspend);
    let list_doc = DOCS.op(
        "list_nodes",
        "Nodes: every node for operators, your own otherwise (?status=)",
        None,
        vec![
            ok(200, "{nodes}"),
            err(401, "mesh_unauthorized / invalid_token"),
        ],
    );
    let get_doc = DOCS.op(
        "get_node",
        "One node: to itself (signed), its owner or an operator",
        None,
        signed(vec![ok(200, "node"), err(404, "node_not_found")]),
    );
    r.route(
        Method::POST,
        "/mesh/nodes/register",
        endpoint(|s, r| async move { register(&s, r).await }),
        register_doc(),
    )
    .route(
        Method::GET,
        "/mesh/nodes",
        endpoint(|s, r| async move { list(&s, r).await }),
        list_doc,
    )
    .route(
        Method::GET,
        "/mesh/nodes/{id}",
        endpoint(|s, r| async move { get(&s, r).await }),
        get_doc,
    )
    .route(
        Method::POST,
        "/mesh/nodes/{id}/keys/rotate",
        endpoint(|s, r| async move { rotate(&s, r).await }),
        rotate_doc(),
    )
    .route(
        Method::POST,
        "/mesh/nodes/{id}/approve",
        approve,
        approve_doc,
    )
    .route(Method::POST, "/mesh/nodes/{id}/reject", reject, reject_doc)
    .route(
        Method::POST,
        "/mesh/nodes/{id}/suspend",
        suspend,
        suspend_doc,
    )
    .route(
        Method::POST,
        "/mesh/heartbeat",
        endpoint(|s, r| async move { heartbeat(&s, r).await }),
        heartbeat_doc(),
    )
}
