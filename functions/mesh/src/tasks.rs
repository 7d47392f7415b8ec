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
use edgecoder_kernel::http_types::{HeaderValue, StatusCode};
use edgecoder_kernel::{Request, Response, Rows, Services, Statement, Value};
use edgecoder_proto::mesh::{
    Blob, FailureCode, NoTaskReason, PolicyReason, PullResponse, Resources as TaskResources, Task,
    TaskKind, TaskResult,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::authn::{self, Bearer, Node};
use crate::nodes::node_policy;
use crate::policy::{self, TASK_KINDS};
use crate::{Error, rfc3339};

/// The ledger payload type of task completions.
pub const TASK_COMPLETION_V1: &str = "edgecoder.dev/task-completion/v1";
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

fn valid_digest(d: &str) -> bool {
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
}

/// Checks a blob against its digest; the statement that stores it.
async fn intake(s: &Services, b: &BlobRef, name: &str) -> Result<Option<Statement>, Error> {
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
            let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
            // Content-addressed: a second upload of the same digest is the
            // same bytes, so the first stays.
            Ok(Some(Statement::new(
                "INSERT INTO mesh_blobs (digest, bytes, size, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (digest) DO NOTHING",
                vec![
                    b.digest.as_str().into(),
                    Value::Blob(bytes),
                    Value::Integer(size),
                    Value::Integer(s.clock.now_ms()),
                ],
            )))
        }
        None => {
            let rows = s
                .sql
                .execute(Statement::new(
                    "SELECT 1 AS present FROM mesh_blobs WHERE digest = ?1",
                    vec![b.digest.as_str().into()],
                ))
                .await?;
            if rows.rows.is_empty() {
                return Err(Error::BlobUnknown);
            }
            Ok(None)
        }
    }
}

/// `POST /mesh/tasks`: a user with a verified email, or another function.
pub async fn submit(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    if let Bearer::User(c) = &caller
        && !c.email_verified
    {
        return Err(Error::Forbidden);
    }
    let body: Submit = req.json()?;
    authn::charge(
        s,
        &format!("submit:{}", caller.actor()),
        authn::SUBMIT_PER_MINUTE,
    )
    .await?;
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
    let priority = body.priority.unwrap_or(0);
    if !(-10..=10).contains(&priority) {
        return Err(invalid("priority must be -10 to 10."));
    }
    // Jumping the queue is for operators and other functions.
    if priority > 0 && matches!(&caller, Bearer::User(_)) && !caller.is_operator() {
        return Err(Error::Forbidden);
    }
    if let Some(t) = &body.tenant
        && (t.is_empty() || t.len() > 64 || t.chars().any(char::is_control))
    {
        return Err(invalid("tenant must be 1 to 64 printable characters."));
    }
    let mut stmts = Vec::new();
    for (b, name) in [(&body.module, "module"), (&body.input, "input")] {
        match intake(s, b, name).await {
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
    stmts.push(Statement::new(
        "INSERT INTO mesh_tasks (id, submitter, tenant, kind, module_digest, input_digest, timeout_ms, memory_mb, fuel, priority, status, attempts, max_attempts, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?12, ?12)",
        vec![
            id.as_str().into(),
            caller.actor().into(),
            body.tenant.clone().into(),
            body.kind.as_str().into(),
            body.module.digest.as_str().into(),
            body.input.digest.as_str().into(),
            Value::Integer(body.timeout_ms),
            Value::Integer(body.resources.memory_mb),
            Value::Integer(body.resources.fuel),
            Value::Integer(priority),
            Value::Integer(crate::Settings::of(s)?.max_attempts),
            Value::Integer(now),
        ],
    ));
    stmts.push(audit::statement_for(s, &req.ctx,
        &caller.actor(),
        "mesh.task.submit",
        Some(&id),
        Outcome::Success,
        json!({"module_digest": body.module.digest, "input_digest": body.input.digest, "timeout_ms": body.timeout_ms}),
    ));
    s.sql.batch(stmts).await?;
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &json!({
            "task_id": id,
            "status": "queued",
            "module_digest": body.module.digest,
            "input_digest": body.input.digest,
        }),
    ))
}

/// Returns expired leases to the queue, or fails their tasks once they have
/// had every attempt; each change is audited in the same batch.
pub async fn sweep(s: &Services, req: &Request) -> Result<(), Error> {
    let now = s.clock.now_ms();
    let rows = s
        .sql
        .execute(Statement::new(
            "UPDATE mesh_tasks SET \
               status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
               error_code = CASE WHEN attempts >= max_attempts THEN 'attempts_exhausted' ELSE error_code END, \
               lease_id = NULL, lease_node = NULL, lease_expires_at = NULL, updated_at = ?1 \
             WHERE status = 'leased' AND lease_expires_at <= ?1 \
             RETURNING id, status, lease_node, attempts",
            vec![Value::Integer(now)],
        ))
        .await?;
    // `RETURNING` shows the new values; the node that let its lease lapse is
    // gone from the row, so the audit names the task only.
    let events: Vec<Statement> = (0..rows.rows.len())
        .map(|i| {
            let failed = rows.get_str(i, "status") == Some("failed");
            audit::statement_for(s, &req.ctx,
                "system:scheduler",
                if failed {
                    "mesh.task.fail"
                } else {
                    "mesh.task.requeue"
                },
                rows.get_str(i, "id"),
                Outcome::Success,
                json!({"reason": if failed { "attempts_exhausted" } else { "lease_expired" }, "attempts": rows.get_i64(i, "attempts")}),
            )
        })
        .collect();
    if !events.is_empty() {
        s.sql.batch(events).await?;
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

async fn blobs(s: &Services, digests: &[&str]) -> Result<Rows, Error> {
    Ok(s.sql
        .execute(Statement::new(
            "SELECT digest, bytes FROM mesh_blobs WHERE digest IN (?1, ?2)",
            vec![digests[0].into(), digests[1].into()],
        ))
        .await?)
}

fn blob_b64(rows: &Rows, digest: &str) -> Option<String> {
    (0..rows.rows.len())
        .find(|&i| rows.get_str(i, "digest") == Some(digest))
        .and_then(|i| rows.get_blob(i, "bytes"))
        .map(|b| STANDARD.encode(b))
}

/// `POST /mesh/tasks/pull`: an active node; policy first, then a lease.
pub async fn pull(s: &Services, req: Request) -> Result<Response, Error> {
    let node: Node = authn::active_node(s, &req).await?;
    sweep(s, &req).await?;
    let (limits, p) = node_policy(s, &node).await?;
    let Some(limits) = limits else {
        return Ok(no_task(if p.reason == PolicyReason::NoSandbox {
            NoTaskReason::OutsideSubset
        } else {
            NoTaskReason::PowerDeferred
        }));
    };
    let now = s.clock.now_ms();
    // Two racing pulls may pick the same row; the outer status check lets
    // only one lease it, and the other tries the next row.
    for _ in 0..3 {
        let lease = s.new_id();
        let rows = s
            .sql
            .execute(Statement::new(
                "UPDATE mesh_tasks SET status = 'leased', lease_id = ?1, lease_node = ?2, \
                   lease_expires_at = ?3 + timeout_ms + ?4, attempts = attempts + 1, updated_at = ?3 \
                 WHERE id = (SELECT id FROM mesh_tasks WHERE status = 'queued' AND kind = 'wasm' \
                               AND timeout_ms <= ?5 AND memory_mb <= ?6 AND fuel <= ?7 \
                             ORDER BY priority DESC, created_at, id LIMIT 1) \
                   AND status = 'queued' \
                 RETURNING id, kind, module_digest, input_digest, timeout_ms, memory_mb, fuel, lease_expires_at, attempts",
                vec![
                    lease.as_str().into(),
                    node.node_id.as_str().into(),
                    Value::Integer(now),
                    Value::Integer(crate::Settings::of(s)?.lease_grace_ms),
                    Value::Integer(limits.timeout_ms),
                    Value::Integer(limits.memory_mb),
                    Value::Integer(limits.fuel),
                ],
            ))
            .await?;
        if rows.rows.is_empty() {
            let waiting = s
                .sql
                .execute(Statement::new(
                    "SELECT 1 AS waiting FROM mesh_tasks WHERE status = 'queued' \
                       AND timeout_ms <= ?1 AND memory_mb <= ?2 AND fuel <= ?3 LIMIT 1",
                    vec![
                        Value::Integer(limits.timeout_ms),
                        Value::Integer(limits.memory_mb),
                        Value::Integer(limits.fuel),
                    ],
                ))
                .await?;
            if waiting.rows.is_empty() {
                return Ok(no_task(NoTaskReason::NoWork));
            }
            continue;
        }
        let text = |c: &str| rows.get_str(0, c).unwrap_or_default().to_owned();
        let id = text("id");
        let (module, input) = (text("module_digest"), text("input_digest"));
        let stored = blobs(s, &[&module, &input]).await?;
        let expires = rows.get_i64(0, "lease_expires_at").unwrap_or_default();
        audit::note(s, &req.ctx,
            &node.actor(),
            "mesh.task.assign",
            Some(&id),
            Outcome::Success,
            json!({"lease_id": lease, "attempt": rows.get_i64(0, "attempts"), "lease_expires_at": expires}),
        )
        .await?;
        let unsigned = |c: &str| {
            rows.get_i64(0, c)
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0)
        };
        let task = Task {
            id,
            kind: TaskKind::Wasm,
            module: Some(Blob {
                bytes: blob_b64(&stored, &module).unwrap_or_default(),
                digest: module,
            }),
            input: Some(Blob {
                bytes: blob_b64(&stored, &input).unwrap_or_default(),
                digest: input,
            }),
            timeout_ms: unsigned("timeout_ms"),
            resources: TaskResources {
                memory_mb: unsigned("memory_mb"),
                fuel: unsigned("fuel"),
            },
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

fn capped(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|t| t.chars().take(MAX_LOG_CHARS).collect())
}

/// `POST /mesh/tasks/{id}/result`: only from the lease holder, before the
/// lease expires; the first valid result wins.
pub async fn result(s: &Services, req: Request) -> Result<Response, Error> {
    let node = authn::active_node(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    let body: TaskResult = req.json()?;
    let output = match (&body.ok, &body.output, &body.output_digest) {
        (true, Some(b64), Some(digest)) => {
            let bytes = STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| invalid("output must be base64."))?;
            if bytes.len() > MAX_OUTPUT_BYTES {
                return Err(invalid("output is larger than 1 MiB."));
            }
            if &digest_of(&bytes) != digest {
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
    let retry = body.error_code.is_some_and(FailureCode::is_retryable);
    let new_status = if body.ok { "completed" } else { "failed" };
    let summary = json!({
        "ok": body.ok,
        "output_digest": body.output_digest,
        "duration_ms": body.duration_ms,
        "error_code": body.error_code,
        "fuel_used": body.fuel_used,
        "stdout": capped(&body.stdout),
        "stderr": capped(&body.stderr),
        "node_id": node.node_id,
        "reported_at": rfc3339(now),
    });
    let rows = s
        .sql
        .execute(Statement::new(
            "UPDATE mesh_tasks SET \
               status = CASE WHEN ?6 = 1 AND attempts < max_attempts THEN 'queued' ELSE ?4 END, \
               error_code = ?5, result = ?7, output = ?8, completed_by = ?3, updated_at = ?9, \
               lease_id = CASE WHEN ?6 = 1 AND attempts < max_attempts THEN NULL ELSE lease_id END, \
               lease_node = CASE WHEN ?6 = 1 AND attempts < max_attempts THEN NULL ELSE lease_node END \
             WHERE id = ?1 AND status = 'leased' AND lease_id = ?2 AND lease_node = ?3 AND lease_expires_at > ?9 \
             RETURNING status, submitter, module_digest, input_digest",
            vec![
                id.as_str().into(),
                body.lease_id.as_str().into(),
                node.node_id.as_str().into(),
                new_status.into(),
                body.error_code.map(FailureCode::as_str).into(),
                Value::Integer(i64::from(retry)),
                summary.to_string().into(),
                output.into(),
                Value::Integer(now),
            ],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Err(audit::denied(
            s,
            &req.ctx,
            &node.actor(),
            "mesh.task.result",
            Some(&id),
            json!({"reason": "lease_invalid"}),
            Error::LeaseInvalid,
        )
        .await);
    }
    let status = rows.get_str(0, "status").unwrap_or_default().to_owned();
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
    let entry = json!({
        "task_id": id,
        "node_id": node.node_id,
        "submitter": rows.get_str(0, "submitter"),
        "module_digest": rows.get_str(0, "module_digest"),
        "input_digest": rows.get_str(0, "input_digest"),
        "ok": body.ok,
        "output_digest": body.output_digest,
        "error_code": body.error_code,
        "duration_ms": body.duration_ms,
        "fuel_used": body.fuel_used,
        "completed_at": rfc3339(now),
    });
    let index = match s
        .ledger
        .append(
            TASK_COMPLETION_V1,
            entry.to_string().as_bytes(),
            // Per lease: an append whose answer was lost followed by a
            // different node's result must not reuse the first entry.
            &format!("task-completion:{id}:{}", body.lease_id),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => {
            // Unrecorded completions must not stand: the lease holder may
            // report again while its lease lasts.
            s.sql
                .execute(Statement::new(
                    "UPDATE mesh_tasks SET status = 'leased', error_code = NULL, result = NULL, output = NULL, completed_by = NULL \
                     WHERE id = ?1 AND lease_id = ?2 AND status = ?3",
                    vec![id.as_str().into(), body.lease_id.as_str().into(), status.as_str().into()],
                ))
                .await?;
            return Err(e.into());
        }
    };
    s.sql
        .batch(vec![
            Statement::new(
                "UPDATE mesh_tasks SET ledger_index = ?2 WHERE id = ?1",
                vec![id.as_str().into(), Value::Integer(i64::try_from(index).unwrap_or(-1))],
            ),
            audit::statement_for(s, &req.ctx,
                &node.actor(),
                if body.ok {
                    "mesh.task.complete"
                } else {
                    "mesh.task.fail"
                },
                Some(&id),
                Outcome::Success,
                json!({"ledger_index": index, "error_code": body.error_code, "output_digest": body.output_digest}),
            ),
        ])
        .await?;
    Ok(ok_json(
        &json!({"task_id": id, "status": status, "ledger_index": index}),
    ))
}

/// `GET /mesh/tasks/{id}`: its submitter or an operator.
pub async fn get(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    sweep(s, &req).await?;
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT id, submitter, tenant, kind, module_digest, input_digest, timeout_ms, memory_mb, fuel, priority, \
               status, attempts, max_attempts, lease_expires_at, result, output, error_code, completed_by, ledger_index, \
               created_at, updated_at FROM mesh_tasks WHERE id = ?1",
            vec![id.as_str().into()],
        ))
        .await?;
    let visible =
        rows.get_str(0, "submitter") == Some(caller.actor().as_str()) || caller.is_operator();
    if rows.rows.is_empty() || !visible {
        return Err(Error::TaskNotFound);
    }
    let text = |c: &str| rows.get_str(0, c).map(str::to_owned);
    let result: Json = text("result")
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or(Json::Null);
    Ok(ok_json(&json!({
        "task_id": id,
        "status": text("status"),
        "kind": text("kind"),
        "submitter": text("submitter"),
        "tenant": text("tenant"),
        "module_digest": text("module_digest"),
        "input_digest": text("input_digest"),
        "timeout_ms": rows.get_i64(0, "timeout_ms"),
        "resources": {"memory_mb": rows.get_i64(0, "memory_mb"), "fuel": rows.get_i64(0, "fuel")},
        "priority": rows.get_i64(0, "priority"),
        "attempts": rows.get_i64(0, "attempts"),
        "max_attempts": rows.get_i64(0, "max_attempts"),
        "lease_expires_at": rows.get_i64(0, "lease_expires_at").map(rfc3339),
        "error_code": text("error_code"),
        "result": result,
        "output": rows.get_blob(0, "output").map(|b| STANDARD.encode(b)),
        "completed_by": text("completed_by"),
        "ledger_index": rows.get_i64(0, "ledger_index"),
        "created_at": rows.get_i64(0, "created_at").map(rfc3339),
        "updated_at": rows.get_i64(0, "updated_at").map(rfc3339),
    })))
}
