//! Tasks: intake of frozen, content-addressed inputs; scheduling with leases
//! after the node's policy is checked; results from the lease holder only;
//! requeueing of expired leases and failure after the configured attempts.
//!
//! Out of scope: running tasks (the device agent's sandbox) and fetching
//! blobs from URLs (the coordinator makes no outbound calls for tasks: a
//! task names its bytes inline or a digest stored earlier).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok, response_doc};
use edgecoder_kernel::{Request, Response, Router, Services, Statement};
use edgecoder_proto::inference::InferenceInput;
use edgecoder_proto::mesh::{
    Blob, FailureCode, NoTaskReason, PolicyReason, PullResponse, Resources as TaskResources, Task,
    TaskKind, TaskResult,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::authn::{self, Node};
use crate::nodes::node_policy;
use crate::policy::{self, TASK_KINDS};
use crate::store;
use crate::{DOCS, Error, rfc3339, signed};

/// The ledger payload type of task completions.
pub use edgecoder_proto::economy::TASK_COMPLETION_V1;
/// Largest stored blob.
pub const MAX_BLOB_BYTES: usize = 1 << 20;
/// Largest reported output.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Longest captured stdout/stderr kept.
const MAX_LOG_CHARS: usize = 16 * 1024;
/// Why a 204 from `pull` carries no task.
pub const REASON_HEADER: &str = "edgecoder-reason";

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// `"blake3:" + hex` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

pub(crate) fn valid_digest(d: &str) -> bool {
    d.strip_prefix("blake3:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A content-addressed blob in a task.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    digest: String,
    /// Base64 (standard alphabet); omitted for a digest stored earlier.
    #[serde(default)]
    bytes: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// Task resources.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    memory_mb: i64,
    fuel: i64,
}

/// `POST /mesh/tasks` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    kind: TaskKind,
    module: BlobRef,
    input: BlobRef,
    timeout_ms: i64,
    resources: Resources,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    tenant: Option<String>,
    /// Agreeing results from distinct owners' nodes it needs (1 to 5).
    #[serde(default)]
    replicas: Option<i64>,
}

/// The replicas a submission asks for, checked.
pub(crate) fn replicas(asked: Option<i64>) -> Result<i64, Error> {
    let r = asked.unwrap_or(1);
    if !(1..=edgecoder_proto::economy::MAX_REPLICAS).contains(&r) {
        return Err(invalid("replicas must be 1 to 5."));
    }
    Ok(r)
}

/// Queues a task whose price is escrowed in the same batch: `stmts` (blob
/// inserts) run first, then the escrow transfer, then the task's INSERT,
/// which is made only if the escrow was. Refused with
/// `insufficient_credits` (and nothing queued) when the payer's available
/// credits do not cover the price; racing submissions are serialised by
/// the database, so the last credits go to exactly one of them.
pub(crate) async fn queue(
    s: &Services,
    ctx: &edgecoder_kernel::RequestContext,
    mut stmts: Vec<Statement>,
    task: &store::tasks::NewTask<'_>,
    action: &str,
    audit_details: Json,
) -> Result<(), Error> {
    let (transfer, escrow) = crate::economy::escrow(s, task.id, task.payer, task.price);
    stmts.extend(escrow);
    let at = stmts.len();
    stmts.push(store::tasks::insert_task(&store::tasks::NewTask {
        escrow_transfer: &transfer,
        ..*task
    }));
    let done = s.sql.batch(stmts).await?;
    if done.get(at).is_none_or(|r| r.changes != 1) {
        let details = json!({"reason": "insufficient_credits", "price": task.price});
        return Err(audit::denied(
            s,
            ctx,
            task.submitter,
            action,
            Some(task.id),
            details,
            Error::InsufficientCredits,
        )
        .await);
    }
    let mut details = audit_details;
    details["price"] = json!(task.price);
    details["replicas"] = json!(task.replicas);
    details["escrow_transfer"] = json!(transfer);
    audit::note(
        s,
        ctx,
        task.submitter,
        action,
        Some(task.id),
        Outcome::Success,
        details,
    )
    .await?;
    // The escrow is booked; its log entry follows now or on the next tick.
    let _ = crate::economy::log_transfer(s, &transfer).await;
    Ok(())
}

/// The priority a caller may ask for (-10 to 10; above 0 for operators and
/// other functions only), with the tenant's shape checked.
pub(crate) fn queue_place(
    caller: &authn::Bearer,
    priority: Option<i64>,
    tenant: Option<&str>,
) -> Result<i64, Error> {
    let priority = priority.unwrap_or(0);
    if !(-10..=10).contains(&priority) {
        return Err(invalid("priority must be -10 to 10."));
    }
    // Jumping the queue is for operators and other functions.
    if priority > 0 && !caller.is_operator() {
        return Err(Error::Forbidden);
    }
    if let Some(t) = tenant
        && (t.is_empty() || t.len() > 64 || t.chars().any(char::is_control))
    {
        return Err(invalid("tenant must be 1 to 64 printable characters."));
    }
    Ok(priority)
}

/// Checks a blob against its digest; the statement that stores it.
async fn intake(
    s: &Services,
    b: &BlobRef,
    name: &str,
    caller: &str,
) -> Result<Option<Statement>, Error> {
    if !valid_digest(&b.digest) {
        return Err(invalid(&format!(
            "{name}.digest must be \"blake3:\" and 64 lowercase hex digits."
        )));
    }
    if b.url.is_some() {
        return Err(invalid(&format!(
            "{name}.url is not fetched by this coordinator: send bytes, or a digest stored earlier."
        )));
    }
    match &b.bytes {
        Some(b64) => {
            let bytes = STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| invalid(&format!("{name}.bytes must be base64.")))?;
            if bytes.len() > MAX_BLOB_BYTES {
                return Err(invalid(&format!("{name}.bytes is larger than 1 MiB.")));
            }
            if digest_of(&bytes) != b.digest {
                return Err(Error::DigestMismatch);
            }
            Ok(Some(store::tasks::insert_blob(
                &b.digest,
                bytes,
                None,
                s.clock.now_ms(),
            )))
        }
        None => {
            // Another user's private blob (an inference prompt) is as
            // unknown as a digest never stored.
            if !store::tasks::blob_exists(s.sql.as_ref(), &b.digest, caller).await? {
                return Err(Error::BlobUnknown);
            }
            Ok(None)
        }
    }
}

/// `POST /mesh/tasks`: a user with a verified email.
pub async fn submit(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::submitter(s, &req).await?;
    let body: Submit = req.json()?;
    authn::charge_submission(s, &caller).await?;
    if body.kind == TaskKind::Inference {
        return Err(invalid(
            "inference tasks are submitted to POST /mesh/inference.",
        ));
    }
    if !TASK_KINDS.contains(&body.kind) {
        return Err(audit::denied(
            s,
            &req.ctx,
            &caller.actor(),
            "mesh.task.submit",
            None,
            json!({"reason": "outside_subset"}),
            Error::OutsideSubset,
        )
        .await);
    }
    for (v, max, name) in [
        (body.timeout_ms, policy::MAX_TIMEOUT_MS, "timeout_ms"),
        (body.resources.memory_mb, policy::MAX_MEMORY_MB, "memory_mb"),
        (body.resources.fuel, policy::MAX_FUEL, "fuel"),
    ] {
        if v < 1 {
            return Err(invalid(&format!("{name} must be positive.")));
        }
        if v > max {
            return Err(Error::LimitsExceeded(name));
        }
    }
    let priority = queue_place(&caller, body.priority, body.tenant.as_deref())?;
    let mut stmts = Vec::new();
    for (b, name) in [(&body.module, "module"), (&body.input, "input")] {
        match intake(s, b, name, &caller.actor()).await {
            Ok(st) => stmts.extend(st),
            Err(e) => {
                if matches!(e, Error::DigestMismatch) {
                    audit::note(
                        s,
                        &req.ctx,
                        &caller.actor(),
                        "mesh.task.submit",
                        None,
                        Outcome::Denied,
                        json!({"reason": "digest_mismatch", "blob": name}),
                    )
                    .await?;
                }
                return Err(e);
            }
        }
    }
    let id = s.new_id();
    let now = s.clock.now_ms();
    let submitter = caller.actor();
    let replicas = replicas(body.replicas)?;
    let price = crate::economy::price(
        s,
        body.kind.as_str(),
        body.timeout_ms,
        body.resources.memory_mb,
        replicas,
    )?;
    let task = store::tasks::NewTask {
        id: &id,
        submitter: &submitter,
        tenant: body.tenant.as_deref(),
        kind: body.kind,
        module_digest: Some(&body.module.digest),
        input_digest: &body.input.digest,
        model: None,
        timeout_ms: body.timeout_ms,
        memory_mb: body.resources.memory_mb,
        fuel: body.resources.fuel,
        priority,
        // Each agreeing replica uses a lease.
        max_attempts: crate::Settings::of(s)?.max_attempts + replicas - 1,
        now,
        replicas,
        price,
        payer: &submitter,
        escrow_transfer: "",
    };
    let details = json!({"module_digest": body.module.digest, "input_digest": body.input.digest, "timeout_ms": body.timeout_ms});
    queue(s, &req.ctx, stmts, &task, "mesh.task.submit", details).await?;
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &json!({
            "task_id": id,
            "status": "queued",
            "module_digest": body.module.digest,
            "input_digest": body.input.digest,
            "price": price,
            "replicas": replicas,
        }),
    ))
}

/// Returns expired leases to the queue, or fails their tasks once they have
/// had every attempt, then audits each change (in one batch after the
/// update: the rows changed are known only from its `RETURNING`).
pub async fn sweep(s: &Services, req: &Request) -> Result<(), Error> {
    let now = s.clock.now_ms();
    // The node that let its lease lapse is gone from the row, so the audit
    // names the task only.
    let swept = store::tasks::sweep(s.sql.as_ref(), now).await?;
    let lapsed: Vec<String> = swept.iter().filter_map(|t| t.lease_node.clone()).collect();
    let failed: Vec<String> = swept
        .iter()
        .filter(|t| t.failed)
        .map(|t| t.id.clone())
        .collect();
    let events: Vec<Statement> = swept
        .into_iter()
        .map(|t| {
            let (action, reason) = if t.failed {
                ("mesh.task.fail", "attempts_exhausted")
            } else {
                ("mesh.task.requeue", "lease_expired")
            };
            audit::statement_for(
                s,
                &req.ctx,
                "system:scheduler",
                action,
                Some(&t.id),
                Outcome::Success,
                json!({"reason": reason, "attempts": t.attempts}),
            )
        })
        .collect();
    if !events.is_empty() {
        s.sql.batch(events).await?;
    }
    for n in &lapsed {
        crate::reputation::note(s, &req.ctx, n, crate::reputation::Event::LeaseExpired).await;
    }
    // A task nobody could take within the queue's time to live fails too.
    let ttl = crate::Settings::of(s)?.queue_ttl_ms;
    let stale = store::tasks::expire_queued(s.sql.as_ref(), now, ttl).await?;
    for id in &stale {
        audit::note(
            s,
            &req.ctx,
            "system:scheduler",
            "mesh.task.fail",
            Some(id),
            Outcome::Success,
            json!({"reason": "queue_expired"}),
        )
        .await?;
    }
    // An expired task's escrow goes back to its submitter.
    for id in failed.iter().chain(&stale) {
        crate::economy::settle(s, &req.ctx, id).await?;
    }
    Ok(())
}

fn no_task(reason: NoTaskReason) -> Response {
    let mut resp = Response::new(Vec::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    resp
}

fn blob_b64(stored: &[(String, Vec<u8>)], digest: &str) -> String {
    stored
        .iter()
        .find(|(d, _)| d == digest)
        .map(|(_, b)| STANDARD.encode(b))
        .unwrap_or_default()
}

/// `POST /mesh/tasks/pull`: an active node; policy first, then a lease.
pub async fn pull(s: &Services, req: Request) -> Result<Response, Error> {
    let node: Node = authn::active_node(s, &req).await?;
    sweep(s, &req).await?;
    if !crate::reputation::grants(s, &node.node_id).await? {
        return Ok(no_task(NoTaskReason::Reputation));
    }
    let (limits, p) = node_policy(s, &node).await?;
    let Some(limits) = limits else {
        return Ok(no_task(if p.reason == PolicyReason::NoSandbox {
            NoTaskReason::OutsideSubset
        } else {
            NoTaskReason::PowerDeferred
        }));
    };
    let now = s.clock.now_ms();
    let kind = policy::task_kind_for(node.kind);
    let models = if kind == TaskKind::Inference {
        crate::models::servable(s, &node).await?
    } else {
        Vec::new()
    };
    let fit = store::tasks::Fit {
        kind,
        models: &models,
        limits: &limits,
        owner: &node.owner_id,
    };
    // Two racing pulls may pick the same row; the outer status check lets
    // only one lease it, and the other tries the next row.
    for _ in 0..3 {
        let lease = s.new_id();
        let sql = s.sql.as_ref();
        let grace = crate::Settings::of(s)?.lease_grace_ms;
        let Some(t) =
            store::tasks::lease_next(sql, &lease, &node.node_id, now, grace, &fit).await?
        else {
            if !store::tasks::any_waiting(sql, &fit).await? {
                return Ok(no_task(NoTaskReason::NoWork));
            }
            continue;
        };
        let stored =
            store::tasks::blobs(sql, [t.module_digest.as_deref(), Some(&t.input_digest)]).await?;
        let expires = t.lease_expires_at;
        audit::note(
            s,
            &req.ctx,
            &node.actor(),
            "mesh.task.assign",
            Some(&t.id),
            Outcome::Success,
            json!({"lease_id": lease, "attempt": t.attempt, "lease_expires_at": expires}),
        )
        .await?;
        let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
        let task = Task {
            id: t.id,
            kind,
            module: t.module_digest.map(|digest| Blob {
                bytes: blob_b64(&stored, &digest),
                digest,
            }),
            input: Some(Blob {
                bytes: blob_b64(&stored, &t.input_digest),
                digest: t.input_digest,
            }),
            timeout_ms: unsigned(t.timeout_ms),
            resources: TaskResources {
                memory_mb: unsigned(t.memory_mb),
                fuel: unsigned(t.fuel),
            },
            model: t.model,
        };
        return Ok(ok_json(&PullResponse {
            task: serde_json::to_value(&task).unwrap_or(Json::Null),
            lease_id: lease,
            lease_expires_at: rfc3339(expires),
            policy_version: p.policy_version,
        }));
    }
    Ok(no_task(NoTaskReason::NoWork))
}

/// Whether a report fits its task: an inference task's successful result
/// carries a report naming the task's model, with a manifest digest, the
/// request's seed and no more tokens than it asked for; a wasm task's
/// carries none.
async fn check_report(
    s: &Services,
    t: &store::tasks::Stored,
    body: &TaskResult,
) -> Result<(), Error> {
    let inference = t.kind.as_deref() == Some(TaskKind::Inference.as_str());
    if let (Some(r), true, Some(digest)) = (&body.inference, inference, &t.input_digest) {
        let stored = store::tasks::blobs(s.sql.as_ref(), [None, Some(digest)]).await?;
        let input = stored
            .into_iter()
            .next()
            .and_then(|(_, b)| serde_json::from_slice::<InferenceInput>(&b).ok())
            .ok_or_else(|| edgecoder_kernel::Error::Storage("an inference task's input".into()))?;
        let asked = input.request.max_new_tokens;
        if r.seed != input.request.seed
            || r.output_tokens > asked
            || (r.finish_reason == "length" && r.output_tokens != asked)
        {
            return Err(Error::ResultMismatch(
                "the report's seed or token counts do not fit the task's request",
            ));
        }
    }
    match (&body.inference, inference) {
        (Some(_), false) => Err(Error::ResultMismatch(
            "an inference report on a task that is not an inference task",
        )),
        (None, true) if body.ok => Err(Error::ResultMismatch(
            "a successful inference result carries its inference report",
        )),
        (Some(r), true) if Some(&r.model) != t.model.as_ref() => Err(Error::ResultMismatch(
            "the result names another model than the task declared",
        )),
        (Some(r), true)
            if !valid_digest(&r.model_manifest_digest)
                || !["length", "stop", "end-of-text", "context-full"]
                    .contains(&r.finish_reason.as_str()) =>
        {
            Err(invalid(
                "inference.model_manifest_digest must be a blake3 digest and finish_reason a known reason.",
            ))
        }
        _ => Ok(()),
    }
}

fn capped(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|t| t.chars().take(MAX_LOG_CHARS).collect())
}

/// Whether a report on a finished task is its node resending the result it
/// reported under the same lease (its answer may have been lost). A node
/// that signs two different results for one lease is banned: both
/// came under its own signature, checked here, so this is evidence the
/// coordinator verified itself (a resent identical result is not). Nobody
/// else's report about a node can lead here: only the node that reported
/// the stored result.
async fn equivocation(
    s: &Services,
    req: &Request,
    node: &Node,
    id: &str,
    body: &TaskResult,
) -> Result<bool, Error> {
    let Some(t) = store::tasks::task(s.sql.as_ref(), id).await? else {
        return Ok(false);
    };
    let finished = matches!(t.status.as_deref(), Some("completed" | "failed"));
    if !finished
        || t.lease_id.as_deref() != Some(body.lease_id.as_str())
        || t.completed_by.as_deref() != Some(node.node_id.as_str())
    {
        return Ok(false);
    }
    let first: Json = t
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Json::Null);
    let same = first["ok"] == json!(body.ok)
        && first["output_digest"] == json!(body.output_digest)
        && first["error_code"] == json!(body.error_code);
    if same {
        return Ok(true);
    }
    let mut evidence = blake3::Hasher::new();
    evidence.update(first.to_string().as_bytes());
    evidence.update(b"\0");
    evidence.update(&req.body);
    let digest = format!("blake3:{}", evidence.finalize().to_hex());
    let reason = format!(
        "signed two different results for lease {} of task {id}",
        body.lease_id
    );
    // The key is what signed both results; a node id is only a name, which
    // another coordinator may have given to another device.
    let ban = crate::blacklist::Ban {
        action: "add",
        kind: crate::store::blacklist::SubjectKind::NodeKey,
        subject: &node.key_id,
        reason_code: "equivocation",
        reason: &reason,
        evidence_digest: Some(&digest),
        actor: crate::models::COORDINATOR,
        origin: None,
    };
    match crate::blacklist::apply(s, &req.ctx, &ban).await {
        Ok(_) | Err(Error::AlreadyBlacklisted) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `POST /mesh/tasks/{id}/result`: only from the lease holder, before the
/// lease expires; the first valid result wins.
pub async fn result(s: &Services, req: Request) -> Result<Response, Error> {
    let node = authn::active_node(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    let body: TaskResult = req.json()?;
    // The report must be about what the task declared: an inference result
    // names the task's model (bound again, atomically, in the UPDATE). Only
    // the lease holder learns anything from these checks; anyone else gets
    // `lease_invalid` from the UPDATE, as for any task.
    let holder = store::tasks::task(s.sql.as_ref(), &id).await?.filter(|t| {
        t.lease_id.as_deref() == Some(body.lease_id.as_str())
            && t.lease_node.as_deref() == Some(node.node_id.as_str())
    });
    if let Some(t) = &holder
        && let Err(e) = check_report(s, t, &body).await
    {
        // Only what the report says counts against the node, not a fault
        // of ours (storage, a blob we cannot read).
        if matches!(e, Error::ResultMismatch(_)) {
            crate::reputation::note(
                s,
                &req.ctx,
                &node.node_id,
                crate::reputation::Event::ResultRefused,
            )
            .await;
        }
        return Err(e);
    }
    // A failure carries no report; it is about the task's own model.
    let model = match (&body.inference, body.ok) {
        (Some(i), _) => Some(i.model.clone()),
        (None, false) => holder.as_ref().and_then(|t| t.model.clone()),
        (None, true) => None,
    };
    let output = match (&body.ok, &body.output, &body.output_digest) {
        (true, Some(b64), Some(digest)) => {
            let bytes = STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| invalid("output must be base64."))?;
            if bytes.len() > MAX_OUTPUT_BYTES {
                return Err(invalid("output is larger than 1 MiB."));
            }
            if &digest_of(&bytes) != digest {
                if holder.is_some() {
                    crate::reputation::note(
                        s,
                        &req.ctx,
                        &node.node_id,
                        crate::reputation::Event::ResultRefused,
                    )
                    .await;
                }
                return Err(Error::DigestMismatch);
            }
            Some(bytes)
        }
        (true, _, _) => {
            return Err(invalid(
                "a successful result carries output and output_digest.",
            ));
        }
        (false, None, None) => {
            if body.error_code.is_none() {
                return Err(invalid("a failed result carries a known error_code."));
            }
            None
        }
        (false, _, _) => {
            return Err(invalid(
                "a failed result carries no output or output_digest.",
            ));
        }
    };
    let now = s.clock.now_ms();
    // A snapshot that did not match its digest on the device may be a
    // transfer fault, and a timeout may be a slow device: the task goes back
    // to the queue while attempts remain. The other failures are properties
    // of the module and would recur anywhere.
    let summary = json!({
        "ok": body.ok,
        "output_digest": body.output_digest,
        "duration_ms": body.duration_ms,
        "error_code": body.error_code,
        "fuel_used": body.fuel_used,
        "stdout": capped(&body.stdout),
        "stderr": capped(&body.stderr),
        "inference": body.inference,
        "node_id": node.node_id,
        "reported_at": rfc3339(now),
    });
    // A successful result of a replicated task waits for the others.
    if let Some(t) = holder.as_ref().filter(|t| body.ok && t.replicas > 1) {
        return replica_result(s, &req, &node, t, &body, summary, output).await;
    }
    let reported = store::tasks::report(
        s.sql.as_ref(),
        &store::tasks::Report {
            id: &id,
            lease_id: &body.lease_id,
            node_id: &node.node_id,
            ok: body.ok,
            error_code: body.error_code,
            summary: summary.to_string(),
            output,
            model: model.as_deref(),
            now,
        },
    )
    .await?;
    let Some(reported) = reported else {
        return refused(s, &req, &node, &id, &body).await;
    };
    let status = reported.status;
    if status == "queued" {
        audit::note(
            s,
            &req.ctx,
            &node.actor(),
            "mesh.task.requeue",
            Some(&id),
            Outcome::Success,
            json!({"reason": body.error_code}),
        )
        .await?;
        return Ok(ok_json(&json!({"task_id": id, "status": status})));
    }
    // The first valid result stands. If its completion cannot be logged
    // now, the node may resend it (and gets this answer once it is), and
    // the scheduled tick logs it anyway; nothing is paid before.
    let index = record(s, &req.ctx, &node.actor(), &id).await?;
    if body.ok {
        crate::reputation::note(
            s,
            &req.ctx,
            &node.node_id,
            crate::reputation::Event::Accepted,
        )
        .await;
    }
    Ok(ok_json(
        &json!({"task_id": id, "status": status, "ledger_index": index}),
    ))
}

/// The answer to a report that no live lease of this node's matches: the
/// same result resent by the node that reported it gets the first answer
/// (its completion logged now if it was not), anything else 409
/// `lease_invalid` (after the equivocation check).
async fn refused(
    s: &Services,
    req: &Request,
    node: &Node,
    id: &str,
    body: &TaskResult,
) -> Result<Response, Error> {
    if equivocation(s, req, node, id, body).await? {
        let index = record(s, &req.ctx, &node.actor(), id).await?;
        let status = store::tasks::task(s.sql.as_ref(), id)
            .await?
            .and_then(|t| t.status)
            .unwrap_or_default();
        return Ok(ok_json(
            &json!({"task_id": id, "status": status, "ledger_index": index}),
        ));
    }
    Err(audit::denied(
        s,
        &req.ctx,
        &node.actor(),
        "mesh.task.result",
        Some(id),
        json!({"reason": "lease_invalid"}),
        Error::LeaseInvalid,
    )
    .await)
}

/// A replicated task's successful result: held until the task has as many
/// agreeing results (from distinct owners' nodes) as it asked for; one that
/// disagrees with a result held ends the task unpaid.
async fn replica_result(
    s: &Services,
    req: &Request,
    node: &Node,
    t: &store::tasks::Stored,
    body: &TaskResult,
    summary: Json,
    output: Option<Vec<u8>>,
) -> Result<Response, Error> {
    let id = t.id.as_str();
    let now = s.clock.now_ms();
    let digest = body.output_digest.clone().unwrap_or_default();
    let Some(replies) = store::tasks::reply(
        s.sql.as_ref(),
        &store::tasks::ReplicaResult {
            id,
            lease_id: &body.lease_id,
            node_id: &node.node_id,
            owner_id: &node.owner_id,
            output_digest: &digest,
            now,
        },
    )
    .await?
    else {
        return refused(s, req, node, id, body).await;
    };
    let mut digests: Vec<&str> = replies.iter().map(|r| r.output_digest.as_str()).collect();
    digests.sort_unstable();
    digests.dedup();
    let agreed = digests.len() == 1;
    let held = i64::try_from(replies.len()).unwrap_or(i64::MAX);
    if agreed && held < t.replicas {
        audit::note(
            s,
            &req.ctx,
            &node.actor(),
            "mesh.task.replica",
            Some(id),
            Outcome::Success,
            json!({"output_digest": digest, "agreeing": held, "replicas": t.replicas}),
        )
        .await?;
        return Ok(ok_json(
            &json!({"task_id": id, "status": "queued", "agreeing": held, "replicas": t.replicas}),
        ));
    }
    let concluded = store::tasks::conclude(
        s.sql.as_ref(),
        &store::tasks::Conclude {
            id,
            agreed,
            node_id: &node.node_id,
            lease_id: &body.lease_id,
            summary: summary.to_string(),
            output: output.filter(|_| agreed),
            now,
        },
    )
    .await?;
    let Some(concluded) = concluded else {
        return Err(Error::LeaseInvalid);
    };
    if !agreed {
        let held: Vec<Json> = replies
            .iter()
            .map(|r| json!({"node_id": r.node_id, "output_digest": r.output_digest}))
            .collect();
        audit::note(
            s,
            &req.ctx,
            crate::models::COORDINATOR,
            "mesh.task.replica_disagreement",
            Some(id),
            Outcome::Denied,
            json!({"replies": held}),
        )
        .await?;
        // Nobody can tell which replica was wrong: each one's standing
        // records the disagreement.
        for r in &replies {
            crate::reputation::note(
                s,
                &req.ctx,
                &r.node_id,
                crate::reputation::Event::ReplicaDisagreement,
            )
            .await;
        }
    }
    // A completion that cannot be logged now stays unpaid and is logged by
    // the scheduled tick (`economy::tick`).
    let index = record(s, &req.ctx, &node.actor(), id).await?;
    if agreed {
        for r in &replies {
            crate::reputation::note(s, &req.ctx, &r.node_id, crate::reputation::Event::Accepted)
                .await;
        }
    }
    let mut answer = json!({"task_id": id, "status": concluded.status, "ledger_index": index});
    if !agreed {
        answer["error_code"] = json!("replica_disagreement");
    }
    Ok(ok_json(&answer))
}

/// A finished task's `task-completion/v1` payload, from what is stored
/// (so a retry writes the very bytes the first try did): what ran, the
/// result, the priced work accepted and whom it pays.
fn completion_entry(t: &store::tasks::Stored, payees: &[String], replies: &[Json]) -> Json {
    let r: Json = t
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Json::Null);
    let ok = r["ok"].as_bool().unwrap_or(false) && t.status.as_deref() == Some("completed");
    let mut entry = json!({
        "task_id": t.id,
        "node_id": r["node_id"],
        "submitter": t.submitter,
        "module_digest": t.module_digest,
        "input_digest": t.input_digest,
        "ok": ok,
        "output_digest": r["output_digest"],
        "error_code": t.error_code.as_deref().map_or(r["error_code"].clone(), |c| json!(c)),
        "duration_ms": r["duration_ms"],
        "fuel_used": r["fuel_used"],
    });
    // An inference completion also records what ran: the model, the
    // manifest its name resolved to, the seed and the token counts.
    if let (Some(model), Some(obj)) = (&t.model, entry.as_object_mut()) {
        obj.insert("model".into(), json!(model));
        let i = &r["inference"];
        if i.is_object() {
            for k in [
                "model_manifest_digest",
                "seed",
                "input_tokens",
                "output_tokens",
                "finish_reason",
            ] {
                obj.insert(k.into(), i[k].clone());
            }
        }
    }
    if let Some(obj) = entry.as_object_mut() {
        if let Some(price) = t.price {
            obj.insert("price".into(), json!(price));
            if ok {
                obj.insert("work".into(), json!(price));
                obj.insert("payees".into(), json!(payees));
            }
        }
        if t.replicas > 1 {
            obj.insert("replicas".into(), json!(replies));
        }
    }
    entry
}

/// Appends a finished task's completion entry (if it has none yet), records
/// its index with an audit event, and settles its escrow; the index.
pub(crate) async fn record(
    s: &Services,
    ctx: &edgecoder_kernel::RequestContext,
    actor: &str,
    id: &str,
) -> Result<u64, Error> {
    let t = store::tasks::task(s.sql.as_ref(), id)
        .await?
        .ok_or(Error::TaskNotFound)?;
    if let Some(i) = t.ledger_index.and_then(|i| u64::try_from(i).ok()) {
        // Settled now or by the tick: the completion stands either way.
        let _ = crate::economy::settle(s, ctx, id).await;
        return Ok(i);
    }
    let payees = crate::economy::payees(s, &t).await?;
    let replies: Vec<Json> = if t.replicas > 1 {
        store::tasks::replies(s.sql.as_ref(), id)
            .await?
            .into_iter()
            .map(|r| json!({"node_id": r.node_id, "output_digest": r.output_digest}))
            .collect()
    } else {
        Vec::new()
    };
    let entry = completion_entry(&t, &payees, &replies);
    // Per lease: an append whose answer was lost followed by a different
    // node's result must not reuse the first entry. A replicated task's
    // leases are spent before it ends, so it has one completion.
    let key = if t.replicas > 1 {
        format!("task-completion:{id}:replicas")
    } else {
        format!(
            "task-completion:{id}:{}",
            t.lease_id.as_deref().unwrap_or_default()
        )
    };
    let index = s
        .ledger
        .append(TASK_COMPLETION_V1, entry.to_string().as_bytes(), &key)
        .await?;
    let ok = entry["ok"].as_bool().unwrap_or(false);
    let paid: Vec<String> = if ok { payees.clone() } else { Vec::new() };
    s.sql
        .batch(vec![
            store::tasks::set_ledger_index(id, index),
            store::tasks::set_payees(id, &paid),
            audit::statement_for(
                s,
                ctx,
                actor,
                if ok { "mesh.task.complete" } else { "mesh.task.fail" },
                Some(id),
                Outcome::Success,
                json!({"ledger_index": index, "error_code": entry["error_code"], "output_digest": entry["output_digest"]}),
            ),
        ])
        .await?;
    let _ = crate::economy::settle(s, ctx, id).await;
    Ok(index)
}

/// `GET /mesh/tasks/{id}`: its submitter or an operator.
pub async fn get(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    sweep(s, &req).await?;
    // Prompts and answers are their submitter's: operators see wasm tasks
    // only.
    let visible = |t: &store::tasks::Stored| {
        t.submitter == caller.actor()
            || (caller.is_operator() && t.kind.as_deref() != Some(TaskKind::Inference.as_str()))
    };
    let Some(t) = store::tasks::task(s.sql.as_ref(), &id)
        .await?
        .filter(visible)
    else {
        return Err(Error::TaskNotFound);
    };
    let result: Json = t
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Json::Null);
    Ok(ok_json(&json!({
        "task_id": id,
        "status": t.status,
        "kind": t.kind,
        "submitter": t.submitter,
        "tenant": t.tenant,
        "module_digest": t.module_digest,
        "input_digest": t.input_digest,
        "model": t.model,
        "timeout_ms": t.timeout_ms,
        "resources": {"memory_mb": t.memory_mb, "fuel": t.fuel},
        "priority": t.priority,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "lease_expires_at": t.lease_expires_at.map(rfc3339),
        "error_code": t.error_code,
        "result": result,
        "output": t.output.map(|b| STANDARD.encode(b)),
        "completed_by": t.completed_by,
        "ledger_index": t.ledger_index,
        "created_at": t.created_at.map(rfc3339),
        "updated_at": t.updated_at.map(rfc3339),
    })))
}

pub(crate) fn digest_schema() -> Json {
    json!({"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"})
}

fn submit_doc() -> RouteDoc {
    let blob = object(
        &["digest"],
        json!({
            "digest": digest_schema(),
            "bytes": {"type": "string", "contentEncoding": "base64"},
        }),
    );
    let resources = object(
        &["memory_mb", "fuel"],
        json!({"memory_mb": {"type": "integer"}, "fuel": {"type": "integer"}}),
    );
    let body = object(
        &["kind", "module", "input", "timeout_ms", "resources"],
        json!({
            "kind": {"enum": ["wasm"]},
            "module": blob,
            "input": blob,
            "timeout_ms": {"type": "integer"},
            "resources": resources,
            "priority": {"type": "integer", "minimum": -10, "maximum": 10},
            "tenant": {"type": "string"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": edgecoder_proto::economy::MAX_REPLICAS},
        }),
    );
    DOCS.op(
        "submit_task",
        "Submit a wasm task over frozen, content-addressed inputs (verified user); its price (per the published table, times replicas) is escrowed from the submitter's available credits",
        body,
        vec![
            ok(201, "{task_id, status: queued, price, replicas}").with_schema(
                object(
                    &["task_id", "status", "module_digest", "input_digest", "price", "replicas"],
                    json!({
                        "task_id": {"type": "string"},
                        "status": {"const": "queued"},
                        "module_digest": digest_schema(),
                        "input_digest": digest_schema(),
                        "price": {"type": "integer", "minimum": 0},
                        "replicas": {"type": "integer", "minimum": 1},
                    }),
                )
                .unwrap_or_default(),
            ),
            err(400, "invalid_request"),
            err(401, "mesh_unauthorized / invalid_token"),
            err(403, "forbidden (email unverified) / account_blacklisted"),
            err(409, "insufficient_credits: nothing was queued"),
            err(
                422,
                "outside_subset / limits_exceeded / digest_mismatch / blob_unknown",
            ),
        ],
    )
}

fn pull_doc() -> RouteDoc {
    let none = "no task; edgecoder-reason: no_work / power_deferred / outside_subset";
    DOCS.op(
        "pull_task",
        "Take a task under a lease, after the node's policy is checked (signed, active node)",
        None,
        signed(vec![
            ok(200, "{task, lease_id, lease_expires_at}"),
            response_doc(204, none, None),
            err(403, "node_not_active"),
        ]),
    )
}

fn result_doc() -> RouteDoc {
    let codes = FailureCode::ALL.map(FailureCode::as_str);
    let body = object(
        &["lease_id", "ok", "duration_ms"],
        json!({
            "lease_id": {"type": "string"},
            "ok": {"type": "boolean"},
            "output_digest": digest_schema(),
            "output": {"type": "string", "contentEncoding": "base64"},
            "duration_ms": {"type": "integer"},
            "error_code": {"enum": codes},
            "fuel_used": {"type": "integer"},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "inference": object(
                &["model", "model_manifest_digest", "seed", "input_tokens", "output_tokens", "finish_reason"],
                json!({
                    "model": {"type": "string"},
                    "model_manifest_digest": digest_schema(),
                    "seed": {"type": "integer"},
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "finish_reason": {"enum": ["length", "stop", "end-of-text", "context-full"]},
                }),
            ),
        }),
    );
    let summary = "Report a result: the lease holder only, before the lease expires; the first valid result wins";
    DOCS.op(
        "report_result",
        summary,
        body,
        signed(vec![
            ok(200, "{task_id, status, ledger_index}"),
            err(403, "node_not_active"),
            err(409, "lease_invalid"),
            err(422, "digest_mismatch / result_mismatch"),
        ]),
    )
}

/// `POST /mesh/tasks/{id}/release {lease_id}`: the lease holder gives a
/// task back unfinished (an agent shutting down), so another node can take
/// it now rather than after the lease expires.
pub async fn release(s: &Services, req: Request) -> Result<Response, Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        lease_id: String,
    }
    let node = authn::active_node(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    let body: Body = req.json()?;
    let now = s.clock.now_ms();
    let Some(status) =
        store::tasks::release(s.sql.as_ref(), &id, &body.lease_id, &node.node_id, now).await?
    else {
        return Err(audit::denied(
            s,
            &req.ctx,
            &node.actor(),
            "mesh.task.release",
            Some(&id),
            json!({"reason": "lease_invalid"}),
            Error::LeaseInvalid,
        )
        .await);
    };
    audit::note(
        s,
        &req.ctx,
        &node.actor(),
        "mesh.task.release",
        Some(&id),
        Outcome::Success,
        json!({"lease_id": body.lease_id, "status": status}),
    )
    .await?;
    if status == "failed" {
        // Its last attempt given back: the submitter is refunded.
        crate::economy::settle(s, &req.ctx, &id).await?;
    }
    Ok(ok_json(&json!({"task_id": id, "status": status})))
}

fn release_doc() -> RouteDoc {
    DOCS.op(
        "release_task",
        "Give a leased task back unfinished: the lease holder only, before the lease expires; the task is queued again at once (the attempt counts; after the last one it fails, refunded)",
        object(&["lease_id"], json!({"lease_id": {"type": "string"}})),
        signed(vec![
            ok(200, "{task_id, status: queued / failed}"),
            err(403, "node_not_active"),
            err(409, "lease_invalid"),
        ]),
    )
}

/// The task routes.
pub fn routes(r: Router) -> Router {
    let get_doc = DOCS.op(
        "get_task",
        "A task and its result: its submitter or an operator",
        None,
        vec![
            ok(200, "task"),
            err(401, "mesh_unauthorized / invalid_token"),
            err(404, "task_not_found"),
        ],
    );
    r.route(
        Method::POST,
        "/mesh/tasks",
        endpoint(|s, r| async move { submit(&s, r).await }),
        submit_doc(),
    )
    .route(
        Method::POST,
        "/mesh/tasks/pull",
        endpoint(|s, r| async move { pull(&s, r).await }),
        pull_doc(),
    )
    .route(
        Method::POST,
        "/mesh/tasks/{id}/result",
        endpoint(|s, r| async move { result(&s, r).await }),
        result_doc(),
    )
    .route(
        Method::POST,
        "/mesh/tasks/{id}/release",
        endpoint(|s, r| async move { release(&s, r).await }),
        release_doc(),
    )
    .route(
        Method::GET,
        "/mesh/tasks/{id}",
        endpoint(|s, r| async move { get(&s, r).await }),
        get_doc,
    )
}
