//! The GPU host as a mesh node: the agent's loop (node key, registration,
//! heartbeats, leases, delivery; `edgecoder_agent::runner`) with inference
//! as its work.
//!
//! In scope: what a heartbeat reports (the models the host can serve, its
//! accelerator), checking a leased task before it runs (kind, policy, the
//! input blob's digest, the request's model against the task's), and the
//! result bound to the lease with output digest, model manifest digest, seed
//! and token counts. Out of scope: the loop itself (shared with the agent)
//! and running models ([`crate::host`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_agent::client::{Assignment, HeartbeatResponse, Policy, TaskResult};
use edgecoder_agent::runner::Worker;
use edgecoder_proto::inference::InferenceInput;
use edgecoder_proto::mesh::{
    Accelerator, Capabilities, DeviceType, FailureCode, InferenceReport, TaskKind, Telemetry,
};

use crate::host::{FinishReason, Host, InferenceError};
use crate::supply::{Preparer, Supply};

/// Characters of an error's detail reported (as the result's stderr).
const MAX_DETAIL_CHARS: usize = 2048;

/// The accelerator inference runs on, as the machine describes it.
pub fn detect_accelerator(provider: &str) -> Accelerator {
    if provider == "cuda"
        && let Ok(out) = std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=name,memory.total",
                "--format=csv,noheader,nounits",
            ])
            .output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some((name, mem)) = text.lines().next().and_then(|l| l.split_once(',')) {
            return Accelerator {
                name: name.trim().chars().take(128).collect(),
                memory_mb: mem.trim().parse().unwrap_or(0),
                provider: provider.to_owned(),
            };
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().chars().take(128).collect::<String>())
        })
        .unwrap_or_else(|| "cpu".into());
    let memory_mb = edgecoder_agent::telemetry::capabilities().memory_mb;
    Accelerator {
        name: cpu,
        memory_mb,
        provider: provider.to_owned(),
    }
}

/// The GPU host's worker.
pub struct InferenceWorker {
    host: Arc<Host>,
    accelerator: Accelerator,
    supply: Option<Arc<Supply>>,
    preparer: Option<Preparer>,
}

impl InferenceWorker {
    /// A worker running tasks on `host`, serving the releases `supply`
    /// verifies from each heartbeat's assignments (without one, a fixed
    /// local directory: tests of the loop only).
    pub fn new(host: Arc<Host>, accelerator: Accelerator, supply: Option<Arc<Supply>>) -> Self {
        Self {
            host,
            accelerator,
            supply,
            preparer: None,
        }
    }

    /// Verifies and fetches releases on a thread of their own rather than
    /// in the heartbeat (a long-running host; `--once` verifies in line).
    pub fn in_background(mut self) -> Result<Self, crate::Error> {
        if let Some(s) = &self.supply {
            self.preparer = Some(s.spawn_preparer()?);
        }
        Ok(self)
    }

    /// What the registration declares: the agent's readings plus the
    /// accelerator and the models on disk now.
    pub fn capabilities(&self) -> Capabilities {
        let mut c = edgecoder_agent::telemetry::capabilities();
        // Already at most MAX_ADVERTISED names (what the coordinator takes).
        c.gpu = serde_json::to_value(&self.accelerator).ok();
        c.models = self.host.models();
        c
    }
}

fn failed(lease_id: &str, code: FailureCode, detail: &str, started: Instant) -> TaskResult {
    TaskResult {
        lease_id: lease_id.to_owned(),
        ok: false,
        output_digest: None,
        output: None,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error_code: Some(code),
        fuel_used: None,
        stdout: None,
        stderr: Some(detail.chars().take(MAX_DETAIL_CHARS).collect()),
        inference: None,
    }
}

/// The failure code a typed error is reported under.
pub fn failure_code(e: &InferenceError) -> FailureCode {
    match e {
        InferenceError::ModelNotFound(_) => FailureCode::ModelNotFound,
        InferenceError::ModelNotApproved(_) => FailureCode::ModelNotApproved,
        InferenceError::InputTooLarge(_) => FailureCode::InputTooLarge,
        InferenceError::LimitsExceeded(_) => FailureCode::LimitsExceeded,
        InferenceError::BackendError(_) => FailureCode::BackendError,
    }
}

fn detail(e: &InferenceError) -> &str {
    match e {
        InferenceError::ModelNotFound(m)
        | InferenceError::ModelNotApproved(m)
        | InferenceError::InputTooLarge(m)
        | InferenceError::LimitsExceeded(m)
        | InferenceError::BackendError(m) => m,
    }
}

/// The finish reason's wire name (the WIT enum case).
pub fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop => "stop",
        FinishReason::EndOfText => "end-of-text",
        FinishReason::ContextFull => "context-full",
    }
}

impl Worker for InferenceWorker {
    fn telemetry(&self) -> Telemetry {
        let mut t = edgecoder_agent::telemetry::sample(DeviceType::Server);
        t.models = self.host.models();
        t.accelerator = Some(self.accelerator.clone());
        if let Some(s) = &self.supply {
            t.model_status = s.status();
        }
        t
    }

    fn answered(&self, answer: &HeartbeatResponse) {
        if let Some(s) = &self.supply {
            s.assign(&answer.models.clone().unwrap_or_default());
            match &self.preparer {
                Some(p) => p.kick(),
                None => s.prepare(),
            }
        }
    }

    fn execute(&self, a: &Assignment, policy: &Policy) -> TaskResult {
        let started = Instant::now();
        let lease = a.lease_id.as_str();
        let task = match &a.task {
            Ok(t) => t,
            Err(why) => {
                return failed(
                    lease,
                    FailureCode::OutsideSubset,
                    &format!("unreadable task: {why}"),
                    started,
                );
            }
        };
        if task.kind != TaskKind::Inference
            || !policy.allowed_task_kinds.contains(&TaskKind::Inference)
        {
            return failed(
                lease,
                FailureCode::OutsideSubset,
                "this node runs inference tasks only",
                started,
            );
        }
        let (Some(model), Some(input)) = (&task.model, &task.input) else {
            return failed(
                lease,
                FailureCode::OutsideSubset,
                "an inference task names a model and an input",
                started,
            );
        };
        let Ok(bytes) = STANDARD.decode(input.bytes.as_bytes()) else {
            return failed(
                lease,
                FailureCode::SnapshotDigestMismatch,
                "the input is not base64",
                started,
            );
        };
        if crate::models::digest(&bytes) != input.digest {
            return failed(
                lease,
                FailureCode::SnapshotDigestMismatch,
                "the input does not match its digest",
                started,
            );
        }
        let req = match serde_json::from_slice::<InferenceInput>(&bytes) {
            Ok(i) => i.request,
            Err(e) => {
                return failed(
                    lease,
                    FailureCode::OutsideSubset,
                    &format!("unreadable inference request: {e}"),
                    started,
                );
            }
        };
        if &req.model != model {
            return failed(
                lease,
                FailureCode::OutsideSubset,
                "the request names another model than the task",
                started,
            );
        }
        let deadline = Duration::from_millis(task.timeout_ms.max(1));
        let outcome = self.host.run_until(&req, deadline);
        match outcome.result {
            Ok(r) => TaskResult {
                lease_id: lease.to_owned(),
                ok: true,
                output_digest: Some(crate::models::digest(&r.output)),
                output: Some(STANDARD.encode(&r.output)),
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                error_code: None,
                fuel_used: None,
                stdout: None,
                stderr: None,
                inference: Some(InferenceReport {
                    model: req.model.clone(),
                    model_manifest_digest: r.model_manifest_digest.clone(),
                    seed: req.seed,
                    input_tokens: r.input_token_count,
                    output_tokens: u32::try_from(r.output_tokens.len()).unwrap_or(u32::MAX),
                    finish_reason: finish_name(r.finish).to_owned(),
                }),
            },
            // A deadline says as much about this host as about the task:
            // another host may finish it, so it is reported as a timeout.
            Err(e) if outcome.interrupted => {
                failed(lease, FailureCode::Timeout, detail(&e), started)
            }
            Err(e) => failed(lease, failure_code(&e), detail(&e), started),
        }
    }
}
