//! Mesh checks: node registration under approval, signed requests
//! and each way a signature is refused, per-node rate limits, the heartbeat
//! policy, and task scheduling with leases, over HTTP on any runtime. The
//! suite plays the device agent itself (it signs with its own keys and
//! reports results it computed); the real agent and its sandbox are driven
//! end to end by the native runtime's tests.

use std::cell::Cell;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edgecoder_proto::httpsig::{self, Target};
use edgecoder_proto::keys::key_id;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use serde_json::{Value as Json, json};

use crate::harness::MESH_RATE_PER_MINUTE;
use crate::identity::{Account, Ctx, unix_now};
use crate::{Reply, expect_problem};

thread_local! {
    static SEED: Cell<u64> = const { Cell::new(0) };
}

/// A device: its id and the key it generated.
pub struct Node {
    /// Node id.
    pub id: String,
    /// Its key.
    pub key: SigningKey,
    /// The key's id.
    pub kid: String,
}

impl Node {
    /// A node with a fresh key.
    pub fn new(x: &Ctx, tag: &str) -> Node {
        let n = SEED.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = blake3::hash(format!("{nanos}-{n}-{tag}").as_bytes());
        let key = SigningKey::from_slice(seed.as_bytes()).expect("a 32-byte scalar");
        let kid = key_id(key.verifying_key());
        let email = x.email(tag);
        let local = email.split('@').next().unwrap_or(tag).to_ascii_lowercase();
        Node {
            id: format!("n-{}", &local[..local.len().min(50)]),
            key,
            kid,
        }
    }

    /// The public key as sent at registration.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_encoded_point(false).as_bytes())
    }
}

/// How to sign a request (the defaults sign it correctly).
#[derive(Default, Clone)]
pub struct Sig<'a> {
    created: Option<i64>,
    nonce: Option<String>,
    keyid: Option<&'a str>,
    /// Sign these bytes but send the request's.
    signed_body: Option<Vec<u8>>,
}

fn nonce() -> String {
    let n = SEED.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    blake3::hash(format!("nonce-{nanos}-{n}").as_bytes()).to_hex()[..32].to_owned()
}

/// The three signature headers for a request to the absolute `url`.
pub fn sign_headers(
    key: &SigningKey,
    kid: &str,
    method: &str,
    url: &str,
    body: &[u8],
    how: &Sig,
) -> Vec<(String, String)> {
    let created = how.created.unwrap_or_else(unix_now);
    let nonce = how.nonce.clone().unwrap_or_else(nonce);
    let keyid = how.keyid.unwrap_or(kid);
    let signed_body = how.signed_body.as_deref().unwrap_or(body);
    let target = Target::from_url(method, url).expect("an absolute URL");
    let h = httpsig::sign(key, keyid, &nonce, created, &target, signed_body).expect("sign");
    vec![
        ("content-digest".into(), h.content_digest),
        ("signature-input".into(), h.signature_input),
        ("signature".into(), h.signature),
    ]
}

/// The deployment's URL for `path`.
fn url(x: &Ctx, path: &str) -> String {
    format!("{}{path}", x.target.base)
}

/// Sends a request signed by `node` (as `how` says).
pub fn signed(
    x: &Ctx,
    node: &Node,
    method: &str,
    path: &str,
    body: Option<&Json>,
    how: &Sig,
) -> Result<Reply, String> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let hs = sign_headers(&node.key, &node.kid, method, &url(x, path), &bytes, how);
    let mut headers: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    x.c.send_with(method, path, &headers, &bytes)
}

fn ok_sig() -> Sig<'static> {
    Sig::default()
}

pub(crate) fn want(r: &Reply, status: u16, what: &str) -> Result<Json, String> {
    if r.status != status {
        return Err(format!(
            "{what}: {} want {status}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    if r.body.is_empty() {
        return Ok(Json::Null);
    }
    r.json()
}

/// An enrollment token for `node_id` from `owner`.
pub fn enroll(x: &Ctx, owner: &Account, node_id: &str) -> Result<String, String> {
    let r = x.send(
        "POST",
        "/auth/nodes/enroll",
        Some(&owner.access),
        Some(&json!({"node_id": node_id, "kind": "agent"})),
        &[],
    )?;
    let v = want(&r, 201, "enroll")?;
    Ok(v["enrollment_token"].as_str().unwrap_or("").to_owned())
}

/// The registration body of `node` with `token`.
pub fn registration(node: &Node, token: &str) -> Json {
    json!({
        "enrollment_token": token,
        "node_id": node.id,
        "kind": "agent",
        "public_key": node.public_key(),
        "os": "linux",
        "version": "suite",
        "capabilities": {"sandbox": "wasmtime", "cpu_cores": 2, "memory_mb": 4096, "gpu": null, "models": []},
    })
}

fn register(x: &Ctx, node: &Node, token: &str) -> Result<Reply, String> {
    signed(
        x,
        node,
        "POST",
        "/mesh/nodes/register",
        Some(&registration(node, token)),
        &ok_sig(),
    )
}

/// Telemetry of a plugged-in server.
pub fn server_telemetry() -> Json {
    json!({
        "cpu_percent": 5.0, "memory_used_mb": 512, "memory_total_mb": 4096, "battery_percent": null,
        "on_external_power": true, "low_power_mode": false, "thermal_state": "nominal",
        "device_type": "server", "sandbox_ready": true, "active_model": null,
    })
}

/// A signed heartbeat with telemetry `t`.
pub fn heartbeat(x: &Ctx, node: &Node, t: &Json) -> Result<Reply, String> {
    signed(x, node, "POST", "/mesh/heartbeat", Some(t), &ok_sig())
}

pub(crate) fn decide(x: &Ctx, bearer: &str, node_id: &str, what: &str) -> Result<Reply, String> {
    x.send(
        "POST",
        &format!("/mesh/nodes/{node_id}/{what}"),
        Some(bearer),
        Some(&json!({"reason": "suite"})),
        &[],
    )
}

/// A registered node of a fresh verified user (pending approval).
fn pending(x: &Ctx, tag: &str) -> Result<(Account, Node), String> {
    let owner = x.account(tag, true)?;
    let node = Node::new(x, tag);
    let token = enroll(x, &owner, &node.id)?;
    let v = want(&register(x, &node, &token)?, 201, "register")?;
    if v["status"] != "pending_approval" || v["key_id"] != node.kid.as_str() {
        return Err(format!("registration answer {v}"));
    }
    Ok((owner, node))
}

/// An approved node that has sent a server heartbeat.
pub fn active(x: &Ctx, tag: &str) -> Result<(Account, Node), String> {
    let (owner, node) = pending(x, tag)?;
    let (_, admin) = x.admin()?;
    want(&decide(x, &admin, &node.id, "approve")?, 200, "approve")?;
    want(&heartbeat(x, &node, &server_telemetry())?, 200, "heartbeat")?;
    Ok((owner, node))
}

pub(crate) fn blob(bytes: &[u8]) -> Json {
    json!({"digest": format!("blake3:{}", blake3::hash(bytes).to_hex()), "bytes": STANDARD.encode(bytes)})
}

/// A minimal module: the suite never runs it, the agent tests do.
const MODULE: &[u8] = b"\0asm\x01\0\0\0";

pub(crate) fn task(input: &[u8], timeout_ms: i64) -> Json {
    json!({
        "kind": "wasm", "module": blob(MODULE), "input": blob(input),
        "timeout_ms": timeout_ms, "resources": {"memory_mb": 16, "fuel": 1_000_000},
    })
}

/// Submits a task for `bearer`, who is given credits first when short of
/// them (every submission escrows its price).
pub(crate) fn submit(x: &Ctx, bearer: &str, body: &Json) -> Result<Reply, String> {
    crate::economy::fund_bearer(x, bearer)?;
    x.send("POST", "/mesh/tasks", Some(bearer), Some(body), &[])
}

pub(crate) fn pull(x: &Ctx, node: &Node) -> Result<Reply, String> {
    signed(
        x,
        node,
        "POST",
        "/mesh/tasks/pull",
        Some(&json!({})),
        &ok_sig(),
    )
}

pub(crate) fn report(
    x: &Ctx,
    node: &Node,
    task_id: &str,
    lease: &str,
    output: &[u8],
) -> Result<Reply, String> {
    signed(
        x,
        node,
        "POST",
        &format!("/mesh/tasks/{task_id}/result"),
        Some(&json!({
            "lease_id": lease, "ok": true, "output": STANDARD.encode(output),
            "output_digest": format!("blake3:{}", blake3::hash(output).to_hex()),
            "duration_ms": 3, "fuel_used": 100, "stdout": "", "stderr": "",
        })),
        &ok_sig(),
    )
}

/// Pulls until this check's task comes (earlier checks leave none queued).
pub(crate) fn pull_task(x: &Ctx, node: &Node, task_id: &str) -> Result<Json, String> {
    let v = want(&pull(x, node)?, 200, "pull")?;
    if v["task"]["id"] != task_id {
        return Err(format!("pulled {} want {task_id}", v["task"]["id"]));
    }
    Ok(v)
}

pub(crate) fn mesh_audit(x: &Ctx, target: &str) -> Result<Vec<String>, String> {
    let (_, admin) = x.admin()?;
    let v = want(
        &x.send(
            "GET",
            &format!("/mesh/audit?target={target}&limit=100"),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "mesh audit",
    )?;
    Ok(v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["action"].as_str().unwrap_or(""),
                        e["outcome"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The ledger entry at `index`: its payload type and payload.
pub fn ledger_entry(x: &Ctx, index: u64) -> Result<(String, Json), String> {
    let e = want(
        &x.c.get(&format!("/ledger/entries/{index}"))?,
        200,
        "ledger entry",
    )?;
    let bytes = STANDARD
        .decode(e["entry"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let envelope: Json = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let payload = STANDARD
        .decode(envelope["payload"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    Ok((
        envelope["type"].as_str().unwrap_or("").to_owned(),
        serde_json::from_slice(&payload).map_err(|e| e.to_string())?,
    ))
}

type MeshCheck = fn(&Ctx) -> Result<(), String>;

/// Every mesh check, by name.
pub fn checks() -> Vec<(&'static str, MeshCheck)> {
    vec![
        ("mesh_identity_is_public", mesh_identity_is_public),
        (
            "unsigned_mesh_request_is_refused",
            unsigned_mesh_request_is_refused,
        ),
        (
            "node_registers_pending_until_approved",
            node_registers_pending_until_approved,
        ),
        (
            "reregistering_a_node_with_a_new_key_is_refused",
            reregistering_a_node_with_a_new_key_is_refused,
        ),
        (
            "enrollment_token_reuse_or_other_node_is_refused",
            enrollment_token_reuse_or_other_node_is_refused,
        ),
        (
            "registration_needs_proof_of_possession",
            registration_needs_proof_of_possession,
        ),
        (
            "signature_by_unknown_key_is_refused",
            signature_by_unknown_key_is_refused,
        ),
        (
            "signature_for_another_authority_or_path_is_refused",
            signature_for_another_authority_or_path_is_refused,
        ),
        (
            "request_signed_for_another_coordinator_is_misdirected",
            request_signed_for_another_coordinator_is_misdirected,
        ),
        (
            "signature_structured_fields_are_parsed_per_rfc_9651",
            signature_structured_fields_are_parsed_per_rfc_9651,
        ),
        (
            "rfc9421_interoperates_with_an_independent_implementation",
            rfc9421_interoperates_with_an_independent_implementation,
        ),
        ("replayed_nonce_is_refused", replayed_nonce_is_refused),
        (
            "stale_or_future_created_is_refused",
            stale_or_future_created_is_refused,
        ),
        (
            "body_changed_after_signing_is_refused",
            body_changed_after_signing_is_refused,
        ),
        (
            "keyid_of_another_node_is_refused",
            keyid_of_another_node_is_refused,
        ),
        (
            "operator_routes_need_role_and_step_up",
            operator_routes_need_role_and_step_up,
        ),
        (
            "heartbeat_returns_server_policy",
            heartbeat_returns_server_policy,
        ),
        (
            "task_intake_checks_digests_subset_and_limits",
            task_intake_checks_digests_subset_and_limits,
        ),
        (
            "task_runs_under_a_lease_and_lands_in_the_ledger",
            task_runs_under_a_lease_and_lands_in_the_ledger,
        ),
        ("results_need_the_live_lease", results_need_the_live_lease),
        (
            "a_lease_is_released_only_by_its_holder_and_the_task_requeued",
            a_lease_is_released_only_by_its_holder_and_the_task_requeued,
        ),
        (
            "expired_leases_requeue_then_exhaust",
            expired_leases_requeue_then_exhaust,
        ),
        (
            "timeouts_requeue_and_module_faults_fail",
            timeouts_requeue_and_module_faults_fail,
        ),
        ("power_policy_defers_work", power_policy_defers_work),
        ("suspended_node_cannot_pull", suspended_node_cannot_pull),
        ("key_rotation_needs_both_keys", key_rotation_needs_both_keys),
        (
            "node_rate_limit_spares_other_nodes",
            node_rate_limit_spares_other_nodes,
        ),
        (
            "blacklist_changes_need_an_operator_with_step_up_and_are_logged",
            blacklist_changes_need_an_operator_with_step_up_and_are_logged,
        ),
        (
            "a_banned_node_is_refused_on_every_path_and_its_lease_released",
            a_banned_node_is_refused_on_every_path_and_its_lease_released,
        ),
        (
            "a_banned_owner_cannot_register_a_new_node_id_or_submit",
            a_banned_owner_cannot_register_a_new_node_id_or_submit,
        ),
        (
            "a_node_whose_results_keep_being_refused_loses_reputation_and_is_suspended_for_review",
            a_node_whose_results_keep_being_refused_loses_reputation_and_is_suspended_for_review,
        ),
        (
            "two_different_results_for_one_lease_ban_the_node_and_nobody_else_can_frame_it",
            two_different_results_for_one_lease_ban_the_node_and_nobody_else_can_frame_it,
        ),
    ]
}

fn mesh_identity_is_public(x: &Ctx) -> Result<(), String> {
    let v = want(&x.c.get("/mesh/identity")?, 200, "identity")?;
    if v["request_signatures"]["algorithm"] != "ecdsa-p256-sha256"
        || v["request_signatures"]["max_skew_secs"] != 60
    {
        return Err(format!("identity {v}"));
    }
    Ok(())
}

fn unsigned_mesh_request_is_refused(x: &Ctx) -> Result<(), String> {
    for (method, path) in [
        ("POST", "/mesh/heartbeat"),
        ("POST", "/mesh/tasks/pull"),
        ("POST", "/mesh/tasks"),
        ("GET", "/mesh/nodes"),
        ("GET", "/mesh/nodes/some-node"),
        ("POST", "/mesh/nodes/some-node/approve"),
        ("POST", "/mesh/tasks/abc/result"),
        ("GET", "/mesh/audit"),
    ] {
        let body = json!({});
        let r = x.send(method, path, None, (method == "POST").then_some(&body), &[])?;
        expect_problem(&r, 401, "mesh_unauthorized")
            .map_err(|e| format!("{method} {path}: {e}"))?;
    }
    Ok(())
}

fn node_registers_pending_until_approved(x: &Ctx) -> Result<(), String> {
    let (owner, node) = pending(x, "pending")?;
    // A pending node may heartbeat (to learn its status) but takes no work.
    let v = want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "pending heartbeat",
    )?;
    if v["status"] != "pending_approval" || v["policy"]["work"] != "none" {
        return Err(format!("pending heartbeat {v}"));
    }
    expect_problem(&pull(x, &node)?, 403, "node_not_active")
        .map_err(|e| format!("pending pull: {e}"))?;
    // The owner sees it; it is theirs.
    let mine = want(
        &x.send("GET", "/mesh/nodes", Some(&owner.access), None, &[])?,
        200,
        "own nodes",
    )?;
    let ids: Vec<&str> = mine["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["node_id"].as_str()).collect())
        .unwrap_or_default();
    if ids != [node.id.as_str()] {
        return Err(format!("owner sees {ids:?}"));
    }
    let (_, admin) = x.admin()?;
    let listed = want(
        &x.send(
            "GET",
            "/mesh/nodes?status=pending_approval",
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "operator list",
    )?;
    if !listed["nodes"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["node_id"] == node.id.as_str()))
    {
        return Err("operator list misses the pending node".into());
    }
    let v = want(&decide(x, &admin, &node.id, "approve")?, 200, "approve")?;
    if v["status"] != "active" {
        return Err(format!("approve answer {v}"));
    }
    let index = v["ledger_index"].as_u64().ok_or("no ledger index")?;
    let (ptype, payload) = ledger_entry(x, index)?;
    if ptype != "edgecoder.dev/node-approval/v1"
        || payload["node_id"] != node.id.as_str()
        || payload["decision"] != "approve"
    {
        return Err(format!("ledger entry {ptype} {payload}"));
    }
    let events = mesh_audit(x, &node.id)?;
    for want_event in ["mesh.node.register:success", "mesh.node.approve:success"] {
        if !events.iter().any(|e| e == want_event) {
            return Err(format!("audit misses {want_event}: {events:?}"));
        }
    }
    // Approving twice is not a transition.
    expect_problem(
        &decide(x, &admin, &node.id, "approve")?,
        409,
        "invalid_transition",
    )?;
    want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "active heartbeat",
    )?;
    let r = pull(x, &node)?;
    if r.status != 204 || r.header("edgecoder-reason") != Some("no_work") {
        return Err(format!(
            "idle pull: {} {:?}",
            r.status,
            r.header("edgecoder-reason")
        ));
    }
    Ok(())
}

fn reregistering_a_node_with_a_new_key_is_refused(x: &Ctx) -> Result<(), String> {
    let (owner, node) = pending(x, "rereg")?;
    let thief = Node {
        id: node.id.clone(),
        ..Node::new(x, "rereg-thief")
    };
    let token = enroll(x, &owner, &node.id)?;
    expect_problem(
        &register(x, &thief, &token)?,
        409,
        "node_already_registered",
    )?;
    // The original key still speaks for the node.
    want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "original key",
    )?;
    Ok(())
}

fn enrollment_token_reuse_or_other_node_is_refused(x: &Ctx) -> Result<(), String> {
    let owner = x.account("reuse", true)?;
    let a = Node::new(x, "reuse-a");
    let token = enroll(x, &owner, &a.id)?;
    // A token for node a does not register node b.
    let b = Node::new(x, "reuse-b");
    enroll(x, &owner, &b.id)?;
    expect_problem(&register(x, &b, &token)?, 400, "enrollment_token_invalid")
        .map_err(|e| format!("other node: {e}"))?;
    want(&register(x, &a, &token)?, 201, "first registration")?;
    // Used once: a second node with the same id is already registered, and a
    // node id re-enrolled elsewhere cannot reuse the spent token.
    let c = Node::new(x, "reuse-c");
    let again = Node {
        id: c.id.clone(),
        ..Node::new(x, "reuse-c2")
    };
    let spent = json!({"enrollment_token": token, "node_id": c.id});
    let mut body = registration(&again, &token);
    body["node_id"] = spent["node_id"].clone();
    let r = signed(
        x,
        &again,
        "POST",
        "/mesh/nodes/register",
        Some(&body),
        &ok_sig(),
    )?;
    expect_problem(&r, 400, "enrollment_token_invalid")
        .map_err(|e| format!("reused token: {e}"))?;
    let mut bad = registration(&again, "ect_not-a-real-token");
    bad["node_id"] = json!(again.id);
    expect_problem(
        &signed(
            x,
            &again,
            "POST",
            "/mesh/nodes/register",
            Some(&bad),
            &ok_sig(),
        )?,
        400,
        "enrollment_token_invalid",
    )?;
    Ok(())
}

fn registration_needs_proof_of_possession(x: &Ctx) -> Result<(), String> {
    let owner = x.account("pop", true)?;
    let node = Node::new(x, "pop");
    let token = enroll(x, &owner, &node.id)?;
    // Signed by some other key while claiming the registered key's id.
    let other = Node::new(x, "pop-other");
    let body = registration(&node, &token).to_string().into_bytes();
    let hs = sign_headers(
        &other.key,
        &node.kid,
        "POST",
        &url(x, "/mesh/nodes/register"),
        &body,
        &ok_sig(),
    );
    let mut headers: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let r =
        x.c.send_with("POST", "/mesh/nodes/register", &headers, &body)?;
    expect_problem(&r, 401, "signature_invalid")?;
    // Unsigned registration.
    let r = x.send(
        "POST",
        "/mesh/nodes/register",
        None,
        Some(&registration(&node, &token)),
        &[],
    )?;
    expect_problem(&r, 401, "mesh_unauthorized")?;
    // The token was not spent by the refusals.
    want(&register(x, &node, &token)?, 201, "proper registration")?;
    Ok(())
}

fn signature_by_unknown_key_is_refused(x: &Ctx) -> Result<(), String> {
    let stranger = Node::new(x, "stranger");
    expect_problem(
        &heartbeat(x, &stranger, &server_telemetry())?,
        401,
        "unknown_key",
    )
}

/// `@target-uri` is the absolute URI: a signature made for another
/// coordinator (authority), scheme or path does not verify here.
fn signature_for_another_authority_or_path_is_refused(x: &Ctx) -> Result<(), String> {
    let (_, node) = pending(x, "authority")?;
    let body = server_telemetry().to_string().into_bytes();
    let base = x.target.base.clone();
    let https = base.replacen("http://", "https://", 1);
    for signed_for in [
        "http://coordinator-b.example/mesh/heartbeat".to_owned(),
        format!("{https}/mesh/heartbeat"),
        format!("{base}/mesh/tasks/pull"),
        format!("{base}/mesh/heartbeat?x=1"),
    ] {
        let hs = sign_headers(&node.key, &node.kid, "POST", &signed_for, &body, &ok_sig());
        let mut headers: Vec<(&str, &str)> =
            hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers.push(("content-type", "application/json"));
        expect_problem(
            &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
            401,
            "signature_invalid",
        )
        .map_err(|e| format!("signed for {signed_for}: {e}"))?;
    }
    Ok(())
}

/// The same registered key, a request signed for another coordinator and
/// delivered here under that coordinator's name (`Host`): refused as
/// misdirected before any key is looked up, since this deployment serves
/// only its own origin (`mesh_origins`).
fn request_signed_for_another_coordinator_is_misdirected(x: &Ctx) -> Result<(), String> {
    let (_, node) = pending(x, "misdirected")?;
    let body = server_telemetry().to_string().into_bytes();
    let other = "coordinator-b.example";
    let hs = sign_headers(
        &node.key,
        &node.kid,
        "POST",
        &format!("http://{other}/mesh/heartbeat"),
        &body,
        &ok_sig(),
    );
    let mut headers: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    headers.push(("host", other));
    expect_problem(
        &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
        421,
        "misdirected_request",
    )
}

/// Optional whitespace after `;` and a second signature label are valid
/// Structured Fields; a signature that does not cover the target is not
/// accepted. (`Content-Digest` is covered as sent, so it is not respelled.)
fn signature_structured_fields_are_parsed_per_rfc_9651(x: &Ctx) -> Result<(), String> {
    let (_, node) = pending(x, "sfv")?;
    let body = server_telemetry().to_string().into_bytes();
    let hs = sign_headers(
        &node.key,
        &node.kid,
        "POST",
        &url(x, "/mesh/heartbeat"),
        &body,
        &ok_sig(),
    );
    let get = |name: &str| {
        hs.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let input = format!(
        "other=(\"@method\");created=1;keyid=\"x\", {}",
        get("signature-input").replace(';', "; ")
    );
    let signature = format!("other=:AAAA:, {}", get("signature"));
    let digest = get("content-digest");
    let headers = [
        ("content-type", "application/json"),
        ("signature-input", input.as_str()),
        ("signature", signature.as_str()),
        ("content-digest", digest.as_str()),
    ];
    want(
        &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
        200,
        "an RFC 9651 spelling of a good signature",
    )?;
    // Only the unrelated label: it covers neither the target nor the body.
    let headers = [
        ("content-type", "application/json"),
        (
            "signature-input",
            "other=(\"@method\");created=1;nonce=\"n\";keyid=\"x\"",
        ),
        ("signature", "other=:AAAA:"),
        ("content-digest", digest.as_str()),
    ];
    expect_problem(
        &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
        401,
        "signature_invalid",
    )
}

/// Runs `tests/interop/rfc9421.py` (Python's `http-message-signatures`, an
/// RFC 9421 implementation we did not write) on one JSON request.
fn python_rfc9421(request: &Json) -> Result<Json, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::harness::tool("EC_PYTHON"))
        .arg(crate::harness::workspace_root().join("tests/interop/rfc9421.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting python: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(request.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "rfc9421.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("rfc9421.py output: {e}"))
}

/// A node written with a stock RFC 9421 library talks to the coordinator,
/// and a stock verifier accepts what our own signer (the agent's) sends.
fn rfc9421_interoperates_with_an_independent_implementation(x: &Ctx) -> Result<(), String> {
    use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let (_, node) = pending(x, "interop")?;
    let body = server_telemetry().to_string().into_bytes();
    let heartbeat = url(x, "/mesh/heartbeat");
    let private = node
        .key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?
        .to_string();
    // The library adds `content-digest` itself when given the body.
    for (label, components) in [
        ("pyhms", vec!["@method", "@target-uri"]),
        (
            "py2",
            vec!["@method", "@authority", "@path", "@query", "content-type"],
        ),
    ] {
        let out = python_rfc9421(&json!({
            "op": "sign", "method": "POST", "url": heartbeat, "body_b64": STANDARD.encode(&body),
            "private_key_pem": private, "keyid": node.kid, "nonce": nonce(), "created": unix_now(),
            "label": label, "components": components,
        }))?;
        let h = &out["headers"];
        let field = |n: &str| h[n].as_str().unwrap_or_default().to_owned();
        let (input, sig, digest) = (
            field("signature-input"),
            field("signature"),
            field("content-digest"),
        );
        if !input.contains("\"content-digest\"") {
            return Err(format!("the library did not cover the digest: {input}"));
        }
        let headers = [
            ("content-type", "application/json"),
            ("signature-input", input.as_str()),
            ("signature", sig.as_str()),
            ("content-digest", digest.as_str()),
        ];
        want(
            &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
            200,
            &format!("a heartbeat signed by http-message-signatures ({input})"),
        )?;
    }
    // Our signer, checked by theirs: the whole request, and a tampered body.
    let public = node
        .key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    let hs = sign_headers(&node.key, &node.kid, "POST", &heartbeat, &body, &ok_sig());
    let headers: serde_json::Map<String, Json> =
        hs.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let verify = |b: &[u8]| {
        python_rfc9421(&json!({
            "op": "verify", "method": "POST", "url": heartbeat, "headers": headers,
            "body_b64": STANDARD.encode(b), "public_key_pem": public, "keyid": node.kid,
            "require": ["@method", "@target-uri", "content-digest"],
        }))
    };
    let out = verify(&body)?;
    if out["ok"] != true {
        return Err(format!(
            "http-message-signatures refused our signature: {out}"
        ));
    }
    let out = verify(b"{}")?;
    if out["ok"] != false {
        return Err(format!(
            "http-message-signatures accepted a swapped body: {out}"
        ));
    }
    Ok(())
}

fn replayed_nonce_is_refused(x: &Ctx) -> Result<(), String> {
    let (_, node) = pending(x, "replay")?;
    let body = server_telemetry().to_string().into_bytes();
    let hs = sign_headers(
        &node.key,
        &node.kid,
        "POST",
        &url(x, "/mesh/heartbeat"),
        &body,
        &ok_sig(),
    );
    let mut headers: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    want(
        &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
        200,
        "first",
    )?;
    expect_problem(
        &x.c.send_with("POST", "/mesh/heartbeat", &headers, &body)?,
        401,
        "replay_detected",
    )?;
    // The same nonce under a fresh signature is still a replay.
    let n = "fixed-nonce-for-replay".to_owned();
    let how = Sig {
        nonce: Some(n.clone()),
        ..Sig::default()
    };
    want(
        &signed(
            x,
            &node,
            "POST",
            "/mesh/heartbeat",
            Some(&server_telemetry()),
            &how,
        )?,
        200,
        "nonce first use",
    )?;
    let how = Sig {
        nonce: Some(n),
        created: Some(unix_now() - 1),
        ..Sig::default()
    };
    expect_problem(
        &signed(
            x,
            &node,
            "POST",
            "/mesh/heartbeat",
            Some(&server_telemetry()),
            &how,
        )?,
        401,
        "replay_detected",
    )
}

fn stale_or_future_created_is_refused(x: &Ctx) -> Result<(), String> {
    let (_, node) = pending(x, "skew")?;
    for created in [unix_now() - 300, unix_now() + 300] {
        let how = Sig {
            created: Some(created),
            ..Sig::default()
        };
        let r = signed(
            x,
            &node,
            "POST",
            "/mesh/heartbeat",
            Some(&server_telemetry()),
            &how,
        )?;
        expect_problem(&r, 401, "signature_expired")
            .map_err(|e| format!("created {created}: {e}"))?;
    }
    Ok(())
}

fn body_changed_after_signing_is_refused(x: &Ctx) -> Result<(), String> {
    let (_, node) = pending(x, "digest")?;
    let mut original = server_telemetry();
    original["cpu_percent"] = json!(1.0);
    let how = Sig {
        signed_body: Some(original.to_string().into_bytes()),
        ..Sig::default()
    };
    let r = signed(
        x,
        &node,
        "POST",
        "/mesh/heartbeat",
        Some(&server_telemetry()),
        &how,
    )?;
    expect_problem(&r, 401, "content_digest_mismatch")
}

fn keyid_of_another_node_is_refused(x: &Ctx) -> Result<(), String> {
    let (_, victim) = pending(x, "victim")?;
    let (_, me) = pending(x, "impostor")?;
    let how = Sig {
        keyid: Some(&victim.kid),
        ..Sig::default()
    };
    let r = signed(
        x,
        &me,
        "POST",
        "/mesh/heartbeat",
        Some(&server_telemetry()),
        &how,
    )?;
    expect_problem(&r, 401, "signature_invalid")
}

fn operator_routes_need_role_and_step_up(x: &Ctx) -> Result<(), String> {
    let (owner, node) = pending(x, "oproute")?;
    // The owner is not an operator.
    expect_problem(
        &decide(x, &owner.access, &node.id, "approve")?,
        403,
        "forbidden",
    )?;
    // An operator whose sign-in is old must step up first.
    let (admin_id, admin) = x.admin()?;
    let me = want(
        &x.send("GET", "/auth/me", Some(&admin), None, &[])?,
        200,
        "me",
    )?;
    let sid = me["session_id"].as_str().unwrap_or("");
    let stale = x.mint(
        &admin_id,
        sid,
        &json!({"auth_time": unix_now() - 3600, "roles": ["user", "system_admin"]}),
    )?;
    expect_problem(
        &decide(x, &stale, &node.id, "approve")?,
        403,
        "step_up_required",
    )?;
    expect_problem(
        &decide(x, "not-a-token", &node.id, "approve")?,
        401,
        "invalid_token",
    )?;
    // A signed node cannot approve itself either.
    let r = signed(
        x,
        &node,
        "POST",
        &format!("/mesh/nodes/{}/approve", node.id),
        Some(&json!({})),
        &ok_sig(),
    )?;
    expect_problem(&r, 401, "mesh_unauthorized")?;
    let still = want(
        &x.send(
            "GET",
            &format!("/mesh/nodes/{}", node.id),
            Some(&owner.access),
            None,
            &[],
        )?,
        200,
        "node",
    )?;
    if still["status"] != "pending_approval" {
        return Err(format!("status changed: {}", still["status"]));
    }
    let events = mesh_audit(x, &node.id)?;
    if !events.iter().any(|e| e == "mesh.node.approve:denied") {
        return Err(format!("no denied approval in audit: {events:?}"));
    }
    // Another user does not see the node.
    let other = x.account("oproute-other", true)?;
    expect_problem(
        &x.send(
            "GET",
            &format!("/mesh/nodes/{}", node.id),
            Some(&other.access),
            None,
            &[],
        )?,
        404,
        "node_not_found",
    )
}

fn heartbeat_returns_server_policy(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "policy")?;
    let v = want(&heartbeat(x, &node, &server_telemetry())?, 200, "heartbeat")?;
    let p = &v["policy"];
    if p["work"] != "any"
        || p["allowed_task_kinds"] != json!(["wasm"])
        || p["max_memory_mb"] != 512
        || p["policy_version"].as_i64().is_none()
        || p["blacklist_version"].as_i64().is_none()
    {
        return Err(format!("server policy {v}"));
    }
    let mut bad = server_telemetry();
    bad["cpu_percent"] = json!(250.0);
    expect_problem(&heartbeat(x, &node, &bad)?, 400, "invalid_request")?;
    let mut unknown = server_telemetry();
    unknown["device_type"] = json!("toaster");
    expect_problem(&heartbeat(x, &node, &unknown)?, 400, "invalid_request")
}

fn task_intake_checks_digests_subset_and_limits(x: &Ctx) -> Result<(), String> {
    let user = x.account("intake", true)?;
    let mut t = task(b"input", 1000);
    t["module"]["bytes"] = json!(STANDARD.encode(b"\0asm\x01\0\0\0tampered"));
    expect_problem(&submit(x, &user.access, &t)?, 422, "digest_mismatch")
        .map_err(|e| format!("module: {e}"))?;
    let mut t = task(b"input", 1000);
    t["input"]["digest"] = json!(format!("blake3:{}", blake3::hash(b"other").to_hex()));
    expect_problem(&submit(x, &user.access, &t)?, 422, "digest_mismatch")
        .map_err(|e| format!("input: {e}"))?;
    let mut t = task(b"input", 1000);
    t["kind"] = json!("shell");
    expect_problem(&submit(x, &user.access, &t)?, 422, "outside_subset")?;
    let mut t = task(b"input", 1000);
    t["resources"]["memory_mb"] = json!(100_000);
    expect_problem(&submit(x, &user.access, &t)?, 422, "limits_exceeded")?;
    expect_problem(
        &submit(x, &user.access, &task(b"input", 3_600_000))?,
        422,
        "limits_exceeded",
    )?;
    let mut t = task(b"input", 1000);
    t["input"] =
        json!({"digest": format!("blake3:{}", blake3::hash(b"never stored anywhere").to_hex())});
    expect_problem(&submit(x, &user.access, &t)?, 422, "blob_unknown")?;
    let mut t = task(b"input", 1000);
    t["priority"] = json!(5);
    expect_problem(&submit(x, &user.access, &t)?, 403, "forbidden")
        .map_err(|e| format!("priority: {e}"))?;
    let unverified = x.account("intake-unverified", false)?;
    expect_problem(
        &submit(x, &unverified.access, &task(b"input", 1000))?,
        403,
        "forbidden",
    )
}

fn task_runs_under_a_lease_and_lands_in_the_ledger(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "lease")?;
    let user = x.account("submitter", true)?;
    let v = want(
        &submit(x, &user.access, &task(b"hello mesh", 30_000))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &node, &id)?;
    let module = STANDARD
        .decode(got["task"]["module"]["bytes"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let input = STANDARD
        .decode(got["task"]["input"]["bytes"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    if module != MODULE || input != b"hello mesh" {
        return Err("the frozen inputs changed".into());
    }
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    let out = want(
        &report(x, &node, &id, &lease, b"HELLO MESH")?,
        200,
        "report",
    )?;
    let index = out["ledger_index"].as_u64().ok_or("no ledger index")?;
    // The first valid result wins; a second one is refused.
    expect_problem(
        &report(x, &node, &id, &lease, b"again")?,
        409,
        "lease_invalid",
    )?;
    let t = want(
        &x.send(
            "GET",
            &format!("/mesh/tasks/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "task",
    )?;
    let expected = format!("blake3:{}", blake3::hash(b"HELLO MESH").to_hex());
    if t["status"] != "completed"
        || t["result"]["output_digest"] != expected.as_str()
        || t["completed_by"] != node.id.as_str()
    {
        return Err(format!("task {t}"));
    }
    let (ptype, payload) = ledger_entry(x, index)?;
    if ptype != "edgecoder.dev/task-completion/v1"
        || payload["task_id"] != id.as_str()
        || payload["output_digest"] != expected.as_str()
    {
        return Err(format!("ledger {ptype} {payload}"));
    }
    // Someone else cannot read the task.
    let other = x.account("peeker", true)?;
    expect_problem(
        &x.send(
            "GET",
            &format!("/mesh/tasks/{id}"),
            Some(&other.access),
            None,
            &[],
        )?,
        404,
        "task_not_found",
    )?;
    let events = mesh_audit(x, &id)?;
    for e in [
        "mesh.task.submit:success",
        "mesh.task.assign:success",
        "mesh.task.complete:success",
    ] {
        if !events.iter().any(|x| x == e) {
            return Err(format!("audit misses {e}: {events:?}"));
        }
    }
    Ok(())
}

fn results_need_the_live_lease(x: &Ctx) -> Result<(), String> {
    let (_, holder) = active(x, "holder")?;
    let (_, other) = active(x, "nonholder")?;
    let user = x.account("lease-user", true)?;
    let v = want(
        &submit(x, &user.access, &task(b"short", 1000))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &holder, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    // Another node presenting the lease id.
    expect_problem(&report(x, &other, &id, &lease, b"x")?, 409, "lease_invalid")
        .map_err(|e| format!("non-holder: {e}"))?;
    // A made-up lease.
    expect_problem(
        &report(x, &holder, &id, "0123", b"x")?,
        409,
        "lease_invalid",
    )?;
    // After expiry (timeout 1 s, no grace in the suite's settings).
    std::thread::sleep(std::time::Duration::from_millis(1300));
    expect_problem(
        &report(x, &holder, &id, &lease, b"late")?,
        409,
        "lease_invalid",
    )
    .map_err(|e| format!("expired: {e}"))?;
    // Back in the queue; the other node takes and completes it.
    let again = pull_task(x, &other, &id)?;
    let lease2 = again["lease_id"].as_str().unwrap_or("").to_owned();
    want(
        &report(x, &other, &id, &lease2, b"x")?,
        200,
        "second attempt",
    )?;
    Ok(())
}

fn release(x: &Ctx, node: &Node, task_id: &str, lease: &str) -> Result<Reply, String> {
    signed(
        x,
        node,
        "POST",
        &format!("/mesh/tasks/{task_id}/release"),
        Some(&json!({ "lease_id": lease })),
        &ok_sig(),
    )
}

// An agent that stops gives its task back: only the holder of the live
// lease may, and the task is queued at once for another node.
fn a_lease_is_released_only_by_its_holder_and_the_task_requeued(x: &Ctx) -> Result<(), String> {
    let (_, holder) = active(x, "releaser")?;
    let (_, other) = active(x, "takeover")?;
    let user = x.account("release-user", true)?;
    let v = want(
        &submit(x, &user.access, &task(b"give back", 30_000))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &holder, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    expect_problem(&release(x, &other, &id, &lease)?, 409, "lease_invalid")
        .map_err(|e| format!("non-holder: {e}"))?;
    expect_problem(&release(x, &holder, &id, "0123")?, 409, "lease_invalid")
        .map_err(|e| format!("made-up lease: {e}"))?;
    let r = want(&release(x, &holder, &id, &lease)?, 200, "release")?;
    if r["status"] != "queued" {
        return Err(format!("release answered {r}"));
    }
    // Released once: the same lease cannot be released or reported again.
    expect_problem(&release(x, &holder, &id, &lease)?, 409, "lease_invalid")
        .map_err(|e| format!("second release: {e}"))?;
    expect_problem(
        &report(x, &holder, &id, &lease, b"x")?,
        409,
        "lease_invalid",
    )
    .map_err(|e| format!("report after release: {e}"))?;
    let t = want(
        &x.send(
            "GET",
            &format!("/mesh/tasks/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "task",
    )?;
    // Queued again at once; the attempt counts (a node cannot lease and
    // release a task forever).
    if t["status"] != "queued" || t["attempts"] != 1 {
        return Err(format!("want queued with its attempt counted: {t}"));
    }
    let again = pull_task(x, &other, &id)?;
    let lease2 = again["lease_id"].as_str().unwrap_or("").to_owned();
    want(&report(x, &other, &id, &lease2, b"x")?, 200, "taken over")?;
    let events = mesh_audit(x, &id)?;
    if !events.iter().any(|e| e == "mesh.task.release:success")
        || !events.iter().any(|e| e == "mesh.task.release:denied")
    {
        return Err(format!("release audit missing: {events:?}"));
    }
    Ok(())
}

fn expired_leases_requeue_then_exhaust(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "exhaust")?;
    let user = x.account("exhaust-user", true)?;
    let v = want(
        &submit(x, &user.access, &task(b"never done", 1000))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    // The suite deploys with mesh_max_attempts = 2.
    for _ in 0..2 {
        pull_task(x, &node, &id)?;
        std::thread::sleep(std::time::Duration::from_millis(1300));
    }
    let r = pull(x, &node)?;
    if r.status != 204 {
        return Err(format!("pull after exhaustion: {}", r.status));
    }
    let t = want(
        &x.send(
            "GET",
            &format!("/mesh/tasks/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "task",
    )?;
    if t["status"] != "failed" || t["error_code"] != "attempts_exhausted" || t["attempts"] != 2 {
        return Err(format!("task {t}"));
    }
    let events = mesh_audit(x, &id)?;
    for e in ["mesh.task.requeue:success", "mesh.task.fail:success"] {
        if !events.iter().any(|x| x == e) {
            return Err(format!("audit misses {e}: {events:?}"));
        }
    }
    Ok(())
}

fn failure(
    x: &Ctx,
    node: &Node,
    id: &str,
    lease: &str,
    code: &str,
    extra: &Json,
) -> Result<Reply, String> {
    let mut body = json!({"lease_id": lease, "ok": false, "duration_ms": 5, "error_code": code});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    signed(
        x,
        node,
        "POST",
        &format!("/mesh/tasks/{id}/result"),
        Some(&body),
        &ok_sig(),
    )
}

fn timeouts_requeue_and_module_faults_fail(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "faults")?;
    let user = x.account("faults-user", true)?;
    let v = want(
        &submit(x, &user.access, &task(b"slow", 30_000))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &node, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    // A failure cannot smuggle output (or arbitrary text) into the ledger.
    let smuggled = json!({"output_digest": "anything at all", "output": STANDARD.encode(b"x")});
    expect_problem(
        &failure(x, &node, &id, &lease, "trap", &smuggled)?,
        400,
        "invalid_request",
    )?;
    expect_problem(
        &failure(x, &node, &id, &lease, "made_up", &json!({}))?,
        400,
        "invalid_request",
    )?;
    // A timeout may be this device's slowness: the task goes back.
    let v = want(
        &failure(x, &node, &id, &lease, "timeout", &json!({}))?,
        200,
        "timeout",
    )?;
    if v["status"] != "queued" {
        return Err(format!("timeout answer {v}"));
    }
    // A trap is the module's own fault: the task fails, in the ledger.
    let again = pull_task(x, &node, &id)?;
    let lease = again["lease_id"].as_str().unwrap_or("").to_owned();
    let v = want(
        &failure(x, &node, &id, &lease, "trap", &json!({}))?,
        200,
        "trap",
    )?;
    if v["status"] != "failed" || v["ledger_index"].as_u64().is_none() {
        return Err(format!("trap answer {v}"));
    }
    let t = want(
        &x.send(
            "GET",
            &format!("/mesh/tasks/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "task",
    )?;
    if t["status"] != "failed" || t["error_code"] != "trap" {
        return Err(format!("task {t}"));
    }
    Ok(())
}

fn power_policy_defers_work(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "phone")?;
    let mut t = server_telemetry();
    t["device_type"] = json!("phone");
    t["on_external_power"] = json!(false);
    t["battery_percent"] = json!(12.0);
    let v = want(&heartbeat(x, &node, &t)?, 200, "phone heartbeat")?;
    if v["policy"]["work"] != "none" || v["policy"]["reason"] != "battery_low" {
        return Err(format!("phone policy {v}"));
    }
    let user = x.account("phone-user", true)?;
    let s = want(
        &submit(x, &user.access, &task(b"deferred", 1000))?,
        201,
        "submit",
    )?;
    let r = pull(x, &node)?;
    if r.status != 204 || r.header("edgecoder-reason") != Some("power_deferred") {
        return Err(format!(
            "phone pull {} {:?}",
            r.status,
            r.header("edgecoder-reason")
        ));
    }
    // Plugged in, it takes the task; a laptop at 30 % takes small ones only.
    t["on_external_power"] = json!(true);
    want(&heartbeat(x, &node, &t)?, 200, "plugged in")?;
    let id = s["task_id"].as_str().unwrap_or("");
    let got = pull_task(x, &node, id)?;
    want(
        &report(x, &node, id, got["lease_id"].as_str().unwrap_or(""), b"ok")?,
        200,
        "report",
    )?;
    t["device_type"] = json!("laptop");
    t["on_external_power"] = json!(false);
    t["battery_percent"] = json!(30.0);
    let v = want(&heartbeat(x, &node, &t)?, 200, "laptop heartbeat")?;
    if v["policy"]["work"] != "small" || v["policy"]["max_timeout_ms"] != 10_000 {
        return Err(format!("laptop policy {v}"));
    }
    let big = want(
        &submit(x, &user.access, &task(b"big", 60_000))?,
        201,
        "big task",
    )?;
    let r = pull(x, &node)?;
    if r.status != 204 {
        return Err(format!(
            "a big task went to a laptop on battery: {}",
            r.status
        ));
    }
    // Leave nothing queued for later checks: a server takes it.
    let (_, server) = active(x, "phone-server")?;
    let big_id = big["task_id"].as_str().unwrap_or("");
    let got = pull_task(x, &server, big_id)?;
    want(
        &report(
            x,
            &server,
            big_id,
            got["lease_id"].as_str().unwrap_or(""),
            b"ok",
        )?,
        200,
        "server report",
    )?;
    Ok(())
}

fn suspended_node_cannot_pull(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "suspend")?;
    let (_, admin) = x.admin()?;
    want(&decide(x, &admin, &node.id, "suspend")?, 200, "suspend")?;
    expect_problem(&pull(x, &node)?, 403, "node_not_active")?;
    // Nor swap its key while suspended.
    let fresh = Node {
        id: node.id.clone(),
        ..Node::new(x, "suspend-new")
    };
    let message = format!(
        "edgecoder.dev/key-rotation/v1\n{}\n{}\n{}",
        node.id, node.kid, fresh.kid
    );
    let proof: p256::ecdsa::Signature = fresh.key.sign(message.as_bytes());
    let body = json!({"new_public_key": fresh.public_key(), "proof": URL_SAFE_NO_PAD.encode(proof.to_bytes())});
    let r = signed(
        x,
        &node,
        "POST",
        &format!("/mesh/nodes/{}/keys/rotate", node.id),
        Some(&body),
        &ok_sig(),
    )?;
    expect_problem(&r, 403, "node_not_active")
        .map_err(|e| format!("rotate while suspended: {e}"))?;
    let v = want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "suspended heartbeat",
    )?;
    if v["status"] != "suspended" || v["policy"]["work"] != "none" {
        return Err(format!("suspended heartbeat {v}"));
    }
    want(&decide(x, &admin, &node.id, "reject")?, 200, "reject")?;
    expect_problem(
        &heartbeat(x, &node, &server_telemetry())?,
        403,
        "node_not_active",
    )
}

fn key_rotation_needs_both_keys(x: &Ctx) -> Result<(), String> {
    let (_, node) = active(x, "rotate")?;
    let fresh = Node {
        id: node.id.clone(),
        ..Node::new(x, "rotate-new")
    };
    let message = format!(
        "edgecoder.dev/key-rotation/v1\n{}\n{}\n{}",
        node.id, node.kid, fresh.kid
    );
    let path = format!("/mesh/nodes/{}/keys/rotate", node.id);
    // A proof by the wrong key.
    let bad: p256::ecdsa::Signature = node.key.sign(message.as_bytes());
    let r = signed(
        x,
        &node,
        "POST",
        &path,
        Some(
            &json!({"new_public_key": fresh.public_key(), "proof": URL_SAFE_NO_PAD.encode(bad.to_bytes())}),
        ),
        &ok_sig(),
    )?;
    expect_problem(&r, 400, "key_proof_invalid")?;
    let good: p256::ecdsa::Signature = fresh.key.sign(message.as_bytes());
    let body = json!({"new_public_key": fresh.public_key(), "proof": URL_SAFE_NO_PAD.encode(good.to_bytes())});
    // Signed by the new key alone: unknown to the coordinator.
    expect_problem(
        &signed(x, &fresh, "POST", &path, Some(&body), &ok_sig())?,
        401,
        "unknown_key",
    )?;
    let v = want(
        &signed(x, &node, "POST", &path, Some(&body), &ok_sig())?,
        200,
        "rotate",
    )?;
    if v["key_id"] != fresh.kid.as_str() {
        return Err(format!("rotation answer {v}"));
    }
    expect_problem(
        &heartbeat(x, &node, &server_telemetry())?,
        401,
        "unknown_key",
    )?;
    want(&heartbeat(x, &fresh, &server_telemetry())?, 200, "new key")?;
    Ok(())
}

fn node_rate_limit_spares_other_nodes(x: &Ctx) -> Result<(), String> {
    let (_, noisy) = pending(x, "noisy")?;
    let (_, quiet) = pending(x, "quiet")?;
    let mut limited = None;
    // Windows are fixed minutes: if one ends during the burst, the next
    // one needs its own limit + 1 requests.
    for _ in 0..2 * (MESH_RATE_PER_MINUTE + 1) {
        let r = heartbeat(x, &noisy, &server_telemetry())?;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        want(&r, 200, "heartbeat under the limit")?;
    }
    let r = limited.ok_or("never rate limited")?;
    expect_problem(&r, 429, "rate_limited")?;
    if r.header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_none_or(|s| s == 0 || s > 60)
    {
        return Err(format!("retry-after {:?}", r.header("retry-after")));
    }
    want(
        &heartbeat(x, &quiet, &server_telemetry())?,
        200,
        "the other node",
    )?;
    Ok(())
}

fn ban(x: &Ctx, bearer: &str, kind: &str, subject: &str, lift: bool) -> Result<Reply, String> {
    let path = if lift {
        "/mesh/blacklist/lift"
    } else {
        "/mesh/blacklist"
    };
    x.send(
        "POST",
        path,
        Some(bearer),
        Some(&json!({
            "subject_kind": kind, "subject": subject, "reason_code": "suite_abuse",
            "reason": "the suite says so",
            "evidence_digest": format!("blake3:{}", blake3::hash(subject.as_bytes()).to_hex()),
        })),
        &[],
    )
}

fn blacklist_changes_need_an_operator_with_step_up_and_are_logged(x: &Ctx) -> Result<(), String> {
    let (owner, node) = pending(x, "bl-ops")?;
    expect_problem(
        &ban(x, &owner.access, "node_id", &node.id, false)?,
        403,
        "forbidden",
    )
    .map_err(|e| format!("a user banning: {e}"))?;
    let (_, admin) = x.admin()?;
    for (what, body) in [
        (
            "an unknown subject kind",
            json!({"subject_kind": "planet", "subject": node.id, "reason_code": "x", "reason": "x"}),
        ),
        (
            "a bad node id",
            json!({"subject_kind": "node_id", "subject": "../x", "reason_code": "x", "reason": "x"}),
        ),
        (
            "a bad key id",
            json!({"subject_kind": "node_key", "subject": "zz", "reason_code": "x", "reason": "x"}),
        ),
        (
            "a bad reason code",
            json!({"subject_kind": "node_id", "subject": node.id, "reason_code": "Not A Code", "reason": "x"}),
        ),
        (
            "no reason",
            json!({"subject_kind": "node_id", "subject": node.id, "reason_code": "x", "reason": ""}),
        ),
        (
            "a bad evidence digest",
            json!({"subject_kind": "node_id", "subject": node.id, "reason_code": "x", "reason": "x", "evidence_digest": "md5:00"}),
        ),
    ] {
        expect_problem(
            &x.send("POST", "/mesh/blacklist", Some(&admin), Some(&body), &[])?,
            400,
            "invalid_request",
        )
        .map_err(|e| format!("{what}: {e}"))?;
    }
    let added = want(&ban(x, &admin, "node_id", &node.id, false)?, 201, "ban")?;
    let seq = added["seq"].as_i64().ok_or("no seq")?;
    let (kind, payload) = ledger_entry(x, added["ledger_index"].as_u64().ok_or("no index")?)?;
    if kind != "edgecoder.dev/blacklist/v1"
        || payload["action"] != "add"
        || payload["subject"] != node.id.as_str()
        || payload["reason_code"] != "suite_abuse"
        || !payload["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("user:"))
    {
        return Err(format!("ledger entry {kind} {payload}"));
    }
    expect_problem(
        &ban(x, &admin, "node_id", &node.id, false)?,
        409,
        "already_blacklisted",
    )
    .map_err(|e| format!("banned twice: {e}"))?;
    let listed = want(
        &x.send(
            "GET",
            &format!("/mesh/blacklist?since={}", seq - 1),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "list",
    )?;
    if listed["entries"][0]["subject"] != node.id.as_str()
        || listed["blacklist_version"].as_i64() < Some(seq)
    {
        return Err(format!("listed {listed}"));
    }
    let lifted = want(&ban(x, &admin, "node_id", &node.id, true)?, 200, "lift")?;
    if lifted["seq"].as_i64() <= Some(seq) {
        return Err(format!("a lift is an entry of its own: {lifted}"));
    }
    let (_, payload) = ledger_entry(x, lifted["ledger_index"].as_u64().ok_or("no index")?)?;
    if payload["action"] != "lift" {
        return Err(format!("lift entry {payload}"));
    }
    expect_problem(
        &ban(x, &admin, "node_id", &node.id, true)?,
        404,
        "not_blacklisted",
    )
    .map_err(|e| format!("lifted twice: {e}"))?;
    let events = mesh_audit(x, &node.id)?;
    for e in ["mesh.blacklist.add:success", "mesh.blacklist.lift:success"] {
        if !events.iter().any(|x| x == e) {
            return Err(format!("no {e} in {events:?}"));
        }
    }
    Ok(())
}

fn a_banned_node_is_refused_on_every_path_and_its_lease_released(x: &Ctx) -> Result<(), String> {
    let (owner, node) = active(x, "bl-node")?;
    let id = want(
        &submit(x, &owner.access, &task(b"banned", 30_000))?,
        201,
        "submit",
    )?["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let leased = pull_task(x, &node, &id)?;
    let lease = leased["lease_id"].as_str().unwrap_or_default().to_owned();
    let (_, admin) = x.admin()?;
    let added = want(
        &ban(x, &admin, "node_key", &node.kid, false)?,
        201,
        "ban the key",
    )?;
    if added["released_tasks"] != json!([id]) {
        return Err(format!("the banned node's lease is released: {added}"));
    }
    let seq = added["seq"].as_u64().ok_or("no seq")?;
    for (what, r) in [
        ("heartbeat", heartbeat(x, &node, &server_telemetry())?),
        ("pull", pull(x, &node)?),
        ("result", report(x, &node, &id, &lease, b"late")?),
        (
            "read itself",
            signed(
                x,
                &node,
                "GET",
                &format!("/mesh/nodes/{}", node.id),
                None,
                &ok_sig(),
            )?,
        ),
    ] {
        expect_problem(&r, 403, "node_blacklisted").map_err(|e| format!("{what}: {e}"))?;
    }
    let t = want(
        &x.send(
            "GET",
            &format!("/mesh/tasks/{id}"),
            Some(&owner.access),
            None,
            &[],
        )?,
        200,
        "task",
    )?;
    if t["status"] != "queued" {
        return Err(format!("the task is back in the queue: {t}"));
    }
    // Lifted: the node works again, and its heartbeat carries the version.
    let lifted = want(&ban(x, &admin, "node_key", &node.kid, true)?, 200, "lift")?;
    let hb = want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "heartbeat after the lift",
    )?;
    if hb["policy"]["blacklist_version"].as_u64() < lifted["seq"].as_u64()
        || hb["policy"]["blacklist_version"].as_u64() <= Some(seq)
    {
        return Err(format!("the heartbeat's blacklist version: {hb}"));
    }
    // Leave the queue as found: the node takes its task back and finishes it.
    let again = pull_task(x, &node, &id)?;
    let lease = again["lease_id"].as_str().unwrap_or_default().to_owned();
    want(&report(x, &node, &id, &lease, b"done")?, 200, "report")?;
    Ok(())
}

fn a_banned_owner_cannot_register_a_new_node_id_or_submit(x: &Ctx) -> Result<(), String> {
    let (owner, node) = active(x, "bl-owner")?;
    let (_, admin) = x.admin()?;
    let me = want(
        &x.send("GET", "/auth/me", Some(&owner.access), None, &[])?,
        200,
        "me",
    )?;
    let user_id = me["id"]
        .as_str()
        .or_else(|| me["user_id"].as_str())
        .or_else(|| me["user"]["id"].as_str())
        .ok_or(format!("no user id in {me}"))?
        .to_owned();
    // A token it got before the ban.
    let fresh = Node::new(x, "bl-owner-new");
    let token = enroll(x, &owner, &fresh.id)?;
    want(
        &ban(x, &admin, "owner", &user_id, false)?,
        201,
        "ban the owner",
    )?;
    // No new enrollment tokens…
    let later = Node::new(x, "bl-owner-later");
    expect_problem(
        &x.send(
            "POST",
            "/auth/nodes/enroll",
            Some(&owner.access),
            Some(&json!({"node_id": later.id, "kind": "agent"})),
            &[],
        )?,
        403,
        "account_blacklisted",
    )
    .map_err(|e| format!("a banned owner's enrollment: {e}"))?;
    // Every node it enrolled is refused…
    expect_problem(
        &heartbeat(x, &node, &server_telemetry())?,
        403,
        "node_blacklisted",
    )
    .map_err(|e| format!("the owner's node: {e}"))?;
    // …and it cannot come back under a new node id, even with a token it
    // got before.
    expect_problem(&register(x, &fresh, &token)?, 403, "node_blacklisted")
        .map_err(|e| format!("a new node id of a banned owner: {e}"))?;
    // Nor submit work.
    expect_problem(
        &submit(x, &owner.access, &task(b"x", 30_000))?,
        403,
        "account_blacklisted",
    )
    .map_err(|e| format!("a banned owner's submission: {e}"))?;
    // A ban on a node id holds before it is ever registered.
    let other = x.account("bl-owner-other", true)?;
    let squatter = Node::new(x, "bl-squat");
    want(
        &ban(x, &admin, "node_id", &squatter.id, false)?,
        201,
        "ban a node id",
    )?;
    let token = enroll(x, &other, &squatter.id)?;
    expect_problem(&register(x, &squatter, &token)?, 403, "node_blacklisted")
        .map_err(|e| format!("a banned node id: {e}"))?;
    want(
        &ban(x, &admin, "owner", &user_id, true)?,
        200,
        "lift the owner",
    )?;
    want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "after the lift",
    )?;
    enroll(x, &owner, &later.id).map_err(|e| format!("enrollment after the lift: {e}"))?;
    Ok(())
}

fn two_different_results_for_one_lease_ban_the_node_and_nobody_else_can_frame_it(
    x: &Ctx,
) -> Result<(), String> {
    let (owner, node) = active(x, "bl-equiv")?;
    let (_, other) = active(x, "bl-equiv-other")?;
    let id = want(
        &submit(x, &owner.access, &task(b"equiv", 30_000))?,
        201,
        "submit",
    )?["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let leased = pull_task(x, &node, &id)?;
    let lease = leased["lease_id"].as_str().unwrap_or_default().to_owned();
    let first = want(
        &report(x, &node, &id, &lease, b"first")?,
        200,
        "first result",
    )?;
    // The same result again (a retry after a lost answer) is no offence:
    // it gets the first answer.
    let again = want(
        &report(x, &node, &id, &lease, b"first")?,
        200,
        "a resent result",
    )?;
    if again["ledger_index"] != first["ledger_index"] {
        return Err(format!("a resent result was logged again: {again}"));
    }
    want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "after a resent result",
    )?;
    // Another node sending a different result under this lease frames
    // nobody: it is not the node's signature.
    expect_problem(
        &report(x, &other, &id, &lease, b"forged")?,
        409,
        "lease_invalid",
    )
    .map_err(|e| format!("a framing report: {e}"))?;
    want(
        &heartbeat(x, &node, &server_telemetry())?,
        200,
        "after a framing report",
    )?;
    want(
        &heartbeat(x, &other, &server_telemetry())?,
        200,
        "the framer is not banned either",
    )?;
    // The node itself signing a second, different result: banned.
    expect_problem(
        &report(x, &node, &id, &lease, b"second")?,
        409,
        "lease_invalid",
    )
    .map_err(|e| format!("a second result: {e}"))?;
    expect_problem(
        &heartbeat(x, &node, &server_telemetry())?,
        403,
        "node_blacklisted",
    )
    .map_err(|e| format!("after equivocating: {e}"))?;
    let (_, admin) = x.admin()?;
    let listed = want(
        &x.send("GET", "/mesh/blacklist?limit=1000", Some(&admin), None, &[])?,
        200,
        "list",
    )?;
    let entry = listed["entries"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .rev()
                .find(|e| e["subject"] == node.kid.as_str())
                .cloned()
        })
        .ok_or(format!("no ban on {}: {listed}", node.kid))?;
    if entry["reason_code"] != "equivocation"
        || entry["subject_kind"] != "node_key"
        || entry["actor"] != "coordinator"
        || !entry["evidence_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("blake3:"))
        || entry["ledger_index"].as_u64().is_none()
    {
        return Err(format!("the automatic ban {entry}"));
    }
    Ok(())
}

/// Reputation from verified outcomes: each result refused for its content
/// (here, output that does not hash to its digest) costs the lease holder
/// 10 of a neutral 50; operators see the score; below 10 the coordinator
/// suspends the node itself (a logged decision) pending review, and an
/// operator's approval starts it afresh. A stranger's bad signatures naming
/// the node cost it nothing.
fn a_node_whose_results_keep_being_refused_loses_reputation_and_is_suspended_for_review(
    x: &Ctx,
) -> Result<(), String> {
    let (owner, node) = active(x, "rep")?;
    let (_, admin) = x.admin()?;
    let reputation = |x: &Ctx| -> Result<Json, String> {
        let v = want(
            &x.send(
                "GET",
                &format!("/mesh/nodes/{}", node.id),
                Some(&admin),
                None,
                &[],
            )?,
            200,
            "node",
        )?;
        Ok(v)
    };
    let v = reputation(x)?;
    if v["reputation"]["score"] != json!(50.0) {
        return Err(format!("a new node's reputation: {v}"));
    }
    // Bad signatures naming its key are nobody's outcome.
    for _ in 0..3 {
        let r = signed(
            x,
            &node,
            "POST",
            "/mesh/heartbeat",
            Some(&server_telemetry()),
            &Sig {
                signed_body: Some(b"{}".to_vec()),
                ..Sig::default()
            },
        )?;
        if r.status != 401 {
            return Err(format!("a forged request: {}", r.status));
        }
    }
    let v = want(
        &submit(x, &owner.access, &task(b"rep", 30_000))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &node, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    let bad = |x: &Ctx| {
        signed(
            x,
            &node,
            "POST",
            &format!("/mesh/tasks/{id}/result"),
            Some(&json!({
                "lease_id": lease, "ok": true, "output": STANDARD.encode(b"what ran"),
                "output_digest": format!("blake3:{}", blake3::hash(b"something else").to_hex()),
                "duration_ms": 3, "fuel_used": 100, "stdout": "", "stderr": "",
            })),
            &ok_sig(),
        )
    };
    for _ in 0..3 {
        expect_problem(&bad(x)?, 422, "digest_mismatch")?;
    }
    let v = reputation(x)?;
    if v["reputation"]["score"] != json!(20.0)
        || v["reputation"]["events_30d"]["result_refused"] != 3
        || v["status"] != "active"
    {
        return Err(format!("after three refusals: {v}"));
    }
    for _ in 0..2 {
        expect_problem(&bad(x)?, 422, "digest_mismatch")?;
    }
    let v = reputation(x)?;
    if v["status"] != "suspended" || v["reputation"]["score"] != json!(0.0) {
        return Err(format!("after five refusals: {v}"));
    }
    let audit = mesh_audit(x, &node.id)?;
    if !audit.iter().any(|a| a.starts_with("mesh.node.suspend:")) {
        return Err(format!("no suspension in the audit: {audit:?}"));
    }
    // An operator's review brings it back with a fresh start: what led to
    // the suspension was judged in the review.
    want(
        &decide(x, &admin, &node.id, "approve")?,
        200,
        "approve after review",
    )?;
    let v = reputation(x)?;
    if v["status"] != "active" || v["reputation"]["score"] != json!(50.0) {
        return Err(format!("after the review: {v}"));
    }
    let r = pull(x, &node)?;
    if r.header("edgecoder-reason") == Some("reputation") {
        return Err("an approved node is still thinned".into());
    }
    Ok(())
}
