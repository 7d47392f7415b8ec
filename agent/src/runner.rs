//! The agent's work loop: heartbeat, pull, run in the sandbox, report.
//!
//! In scope: turning a pulled task into sandbox limits, enforcing the
//! coordinator's policy locally before anything runs (task kind, memory,
//! fuel and timeout ceilings; `work: none` means no pulling), building the
//! result body, and the pacing of the loop: heartbeats at the coordinator's
//! interval, idle backoff after `204` (up to 30 s, reset after work),
//! `Retry-After` after `429`, slow heartbeats while not yet approved, and
//! exponential backoff with jitter while the coordinator is unreachable. The
//! loop never exits on a transient error.
//!
//! Out of scope: signing and HTTP ([`crate::client`]), the sandbox itself
//! ([`crate::sandbox`]), telemetry readings ([`crate::telemetry`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Error;
use edgecoder_proto::mesh::{DeviceType, NoTaskReason, PolicyReason, TaskKind, Telemetry};

use crate::client::{
    Assignment, MeshClient, NODE_BLACKLISTED, NODE_NOT_ACTIVE, Policy, Pull, Task, TaskResult,
};
use crate::sandbox::{FailureReason, Limits, Outcome, Sandbox};

/// Heartbeat interval until the coordinator names one.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 10;
/// Longest wait between pulls when idle, and between retries when the
/// coordinator is unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest wait between heartbeats while the node awaits approval.
pub const NOT_ACTIVE_WAIT: Duration = Duration::from_secs(30);
/// Attempts at delivering one result while the coordinator is unreachable.
const REPORT_ATTEMPTS: u32 = 4;

/// Writes one short log line to stderr, prefixed with the program's name
/// (the agent and the GPU host share this loop).
pub fn log(message: impl std::fmt::Display) {
    let program = std::env::args_os()
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "edgecoder-agent".into());
    // UTC with milliseconds: lines from a device and from the coordinator's
    // logs can be put side by side.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    eprintln!("{now} {program}: {message}");
}

/// Ceilings the agent keeps whatever a coordinator's policy says (the
/// coordinator's own maximums): a hostile or broken coordinator cannot make
/// the device give a task more.
pub const CEILING_MEMORY_MB: u64 = 512;
/// Most fuel a task gets.
pub const CEILING_FUEL: u64 = 10_000_000_000;
/// Longest a task runs.
pub const CEILING_TIMEOUT_MS: u64 = 300_000;
/// Output reported: under the coordinator's default request cap (256 KiB)
/// once base64-encoded with the rest of the result.
pub const MAX_REPORTED_OUTPUT: usize = 128 * 1024;
/// Characters of stdout and stderr reported (what the coordinator keeps).
pub const MAX_REPORTED_LOG_CHARS: usize = 16 * 1024;

/// Why `task` may not run under `policy`, if it may not.
pub fn policy_refusal(task: &Task, policy: &Policy) -> Option<String> {
    if task.resources.memory_mb > CEILING_MEMORY_MB
        || task.resources.fuel > CEILING_FUEL
        || task.timeout_ms > CEILING_TIMEOUT_MS
    {
        return Some("task asks for more than this agent ever gives".to_owned());
    }
    if task.kind == TaskKind::Unknown {
        return Some("this agent does not know the task's kind".to_owned());
    }
    if !policy.allowed_task_kinds.contains(&task.kind) {
        return Some(format!("task kind {} is not allowed", task.kind.as_str()));
    }
    if task.kind != TaskKind::Wasm {
        return Some(format!(
            "this agent does not run {} tasks",
            task.kind.as_str()
        ));
    }
    let over = |asked: u64, max: u64| asked > max;
    if over(task.resources.memory_mb, policy.max_memory_mb) {
        return Some(format!(
            "task asks for {} MiB; the policy allows {}",
            task.resources.memory_mb, policy.max_memory_mb
        ));
    }
    if over(task.resources.fuel, policy.max_fuel) {
        return Some(format!(
            "task asks for {} fuel; the policy allows {}",
            task.resources.fuel, policy.max_fuel
        ));
    }
    if over(task.timeout_ms, policy.max_timeout_ms) {
        return Some(format!(
            "task asks for {} ms; the policy allows {}",
            task.timeout_ms, policy.max_timeout_ms
        ));
    }
    None
}

/// Runs `task` under `policy` in `sandbox`: the policy is checked first,
/// then the bytes are decoded and handed over with their digests.
pub fn run_task(sandbox: &Sandbox, task: &Task, policy: &Policy) -> Outcome {
    if let Some(why) = policy_refusal(task, policy) {
        return Outcome::refused(FailureReason::OutsideSubset, why);
    }
    let (Some(module), Some(input)) = (&task.module, &task.input) else {
        return Outcome::refused(FailureReason::OutsideSubset, "task has no module or input");
    };
    // Bytes that do not decode cannot match any digest.
    let Ok(module_bytes) = STANDARD.decode(&module.bytes) else {
        return Outcome::refused(
            FailureReason::SnapshotDigestMismatch,
            "module bytes are not base64",
        );
    };
    let Ok(input_bytes) = STANDARD.decode(&input.bytes) else {
        return Outcome::refused(
            FailureReason::SnapshotDigestMismatch,
            "input bytes are not base64",
        );
    };
    let mut limits = Limits::new(
        task.resources.memory_mb,
        task.resources.fuel,
        task.timeout_ms,
    );
    limits.max_output_bytes = MAX_REPORTED_OUTPUT;
    sandbox.run(
        &module_bytes,
        &module.digest,
        &input_bytes,
        &input.digest,
        &limits,
    )
}

/// The result body for `outcome` under `lease_id`.
pub fn task_result(lease_id: &str, outcome: &Outcome) -> TaskResult {
    TaskResult {
        lease_id: lease_id.to_owned(),
        ok: outcome.is_ok(),
        output_digest: outcome.output_digest.clone(),
        output: outcome.is_ok().then(|| STANDARD.encode(&outcome.output)),
        duration_ms: outcome.duration_ms,
        error_code: outcome.error_code(),
        fuel_used: Some(outcome.fuel_used),
        stdout: Some(
            outcome
                .stdout
                .lossy()
                .chars()
                .take(MAX_REPORTED_LOG_CHARS)
                .collect(),
        ),
        stderr: Some(
            outcome
                .stderr
                .lossy()
                .chars()
                .take(MAX_REPORTED_LOG_CHARS)
                .collect(),
        ),
        inference: None,
    }
}

/// Runs an assignment (a task that could not be read is refused as
/// `outside_subset`) and builds its result.
pub fn execute(sandbox: &Sandbox, assignment: &Assignment, policy: &Policy) -> TaskResult {
    let outcome = match &assignment.task {
        Ok(task) => run_task(sandbox, task, policy),
        Err(why) => Outcome::refused(
            FailureReason::OutsideSubset,
            format!("unreadable task: {why}"),
        ),
    };
    task_result(&assignment.lease_id, &outcome)
}

/// What one pull led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A task ran (or was refused) and its result was delivered.
    Worked {
        /// Task id.
        task_id: String,
        /// The reported failure, if it failed.
        error_code: Option<FailureReason>,
    },
    /// No work (`edgecoder-reason`, if given).
    Idle(Option<NoTaskReason>),
    /// Rate-limited: wait this long.
    RetryAfter(Duration),
    /// The node is not approved (or suspended).
    NotActive,
    /// The coordinator has banned this node (or its owner): nothing is
    /// pulled until an operator lifts the ban.
    Blacklisted,
    /// The policy asks for no work (why, once a heartbeat gave a policy);
    /// nothing was pulled.
    Paused(Option<PolicyReason>),
    /// The agent is stopping: the task it held (if any) went back to the
    /// coordinator unfinished, and nothing more is pulled.
    Stopped {
        /// The task whose lease was released.
        released: Option<String>,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Worked {
                task_id,
                error_code,
            } => write!(
                f,
                "task {task_id} reported ({})",
                error_code.map_or("ok", |c| c.as_str())
            ),
            Step::Idle(reason) => {
                write!(f, "no task ({})", reason.map_or("no_work", |r| r.as_str()))
            }
            Step::RetryAfter(d) => write!(f, "rate limited; retry after {d:?}"),
            Step::NotActive => f.write_str("node not active yet (awaiting approval)"),
            Step::Blacklisted => f.write_str(
                "banned by the coordinator (node_blacklisted): not pulling until the ban is lifted",
            ),
            Step::Paused(reason) => write!(
                f,
                "policy asks for no work ({})",
                reason.map_or("no policy yet", |r| r.as_str())
            ),
            Step::Stopped { released: Some(id) } => {
                write!(f, "stopped; task {id} released to the coordinator")
            }
            Step::Stopped { released: None } => f.write_str("stopped"),
        }
    }
}

/// Doubling delays with jitter, between a floor and [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
struct Backoff {
    next: Duration,
    floor: Duration,
}

impl Backoff {
    fn new(floor: Duration) -> Self {
        Backoff { next: floor, floor }
    }

    fn reset(&mut self) {
        self.next = self.floor;
    }

    /// The next delay: between half and all of the current step, so devices
    /// that lost the coordinator together do not return in lockstep.
    fn step(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        let mut b = [0u8; 1];
        let fraction = if crate::node::random_bytes(&mut b).is_ok() {
            0.5 + f64::from(b[0]) / 510.0
        } else {
            1.0
        };
        full.mul_f64(fraction)
    }
}

/// What a node does with the tasks it pulls: the part of the loop that
/// differs between a device agent (the wasmtime sandbox) and a GPU host
/// (the inference guest). Heartbeats, pulling, pacing and delivery are the
/// [`Runner`]'s and shared.
pub trait Worker {
    /// A heartbeat's readings.
    fn telemetry(&self) -> Telemetry;
    /// Runs (or refuses) a leased task under the policy; never fails: every
    /// outcome is a result to report.
    fn execute(&self, assignment: &Assignment, policy: &Policy) -> TaskResult;
    /// Sees each heartbeat's answer (a GPU host takes its model
    /// assignments from it) before anything is pulled.
    fn answered(&self, _answer: &crate::client::HeartbeatResponse) {}
}

/// The device agent's worker: task modules in the sandbox.
pub struct SandboxWorker {
    sandbox: Sandbox,
    device_type: DeviceType,
}

impl Worker for SandboxWorker {
    fn telemetry(&self) -> Telemetry {
        crate::telemetry::sample(self.device_type)
    }

    fn execute(&self, assignment: &Assignment, policy: &Policy) -> TaskResult {
        execute(&self.sandbox, assignment, policy)
    }
}

/// The loop for one node.
pub struct Runner<W: Worker = SandboxWorker> {
    client: MeshClient,
    worker: W,
    policy: Option<Policy>,
    heartbeat_interval: Duration,
    stop: Arc<AtomicBool>,
}

impl<W: Worker> std::fmt::Debug for Runner<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("client", &self.client)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Runner<SandboxWorker> {
    /// A device agent's runner, reporting `device_type` in its telemetry.
    /// Setting [`Runner::stop_flag`] also halts a task running in the
    /// sandbox.
    pub fn new(client: MeshClient, sandbox: Sandbox, device_type: DeviceType) -> Self {
        let halt = sandbox.halt_flag();
        let mut runner = Runner::with_worker(
            client,
            SandboxWorker {
                sandbox,
                device_type,
            },
        );
        runner.stop = halt;
        runner
    }
}

impl<W: Worker> Runner<W> {
    /// A runner handing tasks to `worker`.
    pub fn with_worker(client: MeshClient, worker: W) -> Self {
        Runner {
            client,
            worker,
            policy: None,
            heartbeat_interval: Duration::from_secs(DEFAULT_HEARTBEAT_SECS),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it (from a signal handler) to stop: a task in progress is given
    /// back to the coordinator (its lease released) instead of reported, and
    /// [`Runner::run_until_stopped`] returns.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// The policy from the last heartbeat.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Sends one heartbeat and keeps the policy and interval it returns.
    pub fn heartbeat(&mut self) -> Result<(), Error> {
        let telemetry = self.worker.telemetry();
        let answer = self.client.heartbeat(&telemetry)?;
        self.heartbeat_interval =
            Duration::from_secs(answer.heartbeat_interval_secs.clamp(1, 3600));
        if self.policy.as_ref() != Some(&answer.policy) {
            log(format_args!(
                "policy: work={} kinds={:?} ({})",
                answer.policy.work.as_str(),
                answer
                    .policy
                    .allowed_task_kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>(),
                answer.policy.reason
            ));
        }
        self.worker.answered(&answer);
        self.policy = Some(answer.policy);
        Ok(())
    }

    /// Pulls at most one task, runs it and reports. Needs a policy from a
    /// heartbeat first; without one nothing is pulled.
    pub fn pull_and_work(&mut self) -> Result<Step, Error> {
        if self.stopping() {
            return Ok(Step::Stopped { released: None });
        }
        let Some(policy) = self.policy.clone() else {
            return Ok(Step::Paused(None));
        };
        if policy.wants_no_work() {
            return Ok(Step::Paused(Some(policy.reason)));
        }
        let pulled = match self.client.pull() {
            Err(e) if e.problem_code() == Some(NODE_BLACKLISTED) => return Ok(Step::Blacklisted),
            other => other?,
        };
        match pulled {
            Pull::Task(assignment) => {
                log(format_args!("task {}: running", assignment.task_id));
                let result = self.worker.execute(&assignment, &policy);
                if self.stopping() {
                    // Whatever the run was cut to is not the task's result.
                    self.release(&assignment.task_id, &assignment.lease_id);
                    return Ok(Step::Stopped {
                        released: Some(assignment.task_id),
                    });
                }
                log(format_args!(
                    "task {}: {} in {} ms, fuel {}",
                    assignment.task_id,
                    result.error_code.map_or("ok", |c| c.as_str()),
                    result.duration_ms,
                    result.fuel_used.unwrap_or(0)
                ));
                self.deliver(&assignment.task_id, &result)?;
                Ok(Step::Worked {
                    task_id: assignment.task_id,
                    error_code: result.error_code,
                })
            }
            Pull::NoWork { reason } => Ok(Step::Idle(reason)),
            Pull::RetryAfter(d) => Ok(Step::RetryAfter(d)),
            Pull::NotActive => Ok(Step::NotActive),
        }
    }

    /// Reports a result, retrying while the coordinator is unreachable (the
    /// work is done; losing the result to a restart would waste it).
    fn deliver(&self, task_id: &str, result: &TaskResult) -> Result<(), Error> {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let mut attempt = 1;
        loop {
            match self.client.report(task_id, result) {
                Err(e) if e.is_transient() && attempt < REPORT_ATTEMPTS => {
                    log(format_args!(
                        "task {task_id}: report failed ({e}); retrying"
                    ));
                    std::thread::sleep(backoff.step());
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Gives a task back unfinished. A failure is logged, not returned: the
    /// lease then simply expires and the coordinator re-queues the task.
    fn release(&self, task_id: &str, lease_id: &str) {
        match self.client.release(task_id, lease_id) {
            Ok(()) => log(format_args!("task {task_id}: released unfinished")),
            Err(e) => log(format_args!(
                "task {task_id}: release failed ({e}); the lease will expire instead"
            )),
        }
    }

    /// One heartbeat and at most one pull/run/report.
    pub fn once(&mut self) -> Result<Step, Error> {
        match self.heartbeat() {
            Ok(()) => {}
            Err(e) if e.problem_code() == Some(NODE_NOT_ACTIVE) => return Ok(Step::NotActive),
            Err(e) if e.problem_code() == Some(NODE_BLACKLISTED) => return Ok(Step::Blacklisted),
            Err(e) => return Err(e),
        }
        self.pull_and_work()
    }

    /// Runs until [`Runner::stop_flag`] is set: then a task in progress
    /// is released, and it returns.
    pub fn run_until_stopped(&mut self) {
        let mut idle = Backoff::new(Duration::from_secs(1));
        let mut errors = Backoff::new(Duration::from_secs(1));
        let mut next_heartbeat = Instant::now();
        while !self.stopping() {
            if Instant::now() >= next_heartbeat {
                match self.heartbeat() {
                    Ok(()) => {
                        errors.reset();
                        next_heartbeat = Instant::now() + self.heartbeat_interval;
                    }
                    Err(e) if e.problem_code() == Some(NODE_NOT_ACTIVE) => {
                        log("node not active yet (awaiting approval)");
                        let wait = self.heartbeat_interval.max(NOT_ACTIVE_WAIT);
                        next_heartbeat = Instant::now() + wait;
                        self.pause(wait);
                        continue;
                    }
                    // Banned: no pulls; a slow heartbeat learns of a lift.
                    Err(e) if e.problem_code() == Some(NODE_BLACKLISTED) => {
                        log(Step::Blacklisted);
                        let wait = self.heartbeat_interval.max(NOT_ACTIVE_WAIT);
                        next_heartbeat = Instant::now() + wait;
                        self.pause(wait);
                        continue;
                    }
                    Err(e) => {
                        // Refusals are logged and retried too: an operator
                        // may fix the node's registration without a restart.
                        log(format_args!("heartbeat: {e}"));
                        self.pause(errors.step());
                        continue;
                    }
                }
            }
            let until_heartbeat = next_heartbeat.saturating_duration_since(Instant::now());
            let delay = match self.pull_and_work() {
                Ok(Step::Worked { .. }) => {
                    idle.reset();
                    errors.reset();
                    Duration::ZERO
                }
                Ok(Step::Idle(_)) => {
                    errors.reset();
                    idle.step().min(until_heartbeat)
                }
                // The coordinator asked for this wait; honour it in full.
                Ok(Step::RetryAfter(d)) => d,
                Ok(Step::NotActive) => {
                    log("node not active yet (awaiting approval)");
                    let wait = self.heartbeat_interval.max(NOT_ACTIVE_WAIT);
                    next_heartbeat = Instant::now() + wait;
                    wait
                }
                Ok(Step::Blacklisted) => {
                    log(Step::Blacklisted);
                    let wait = self.heartbeat_interval.max(NOT_ACTIVE_WAIT);
                    next_heartbeat = Instant::now() + wait;
                    wait
                }
                Ok(Step::Paused(_)) => until_heartbeat,
                Ok(step @ Step::Stopped { .. }) => {
                    log(step);
                    return;
                }
                Err(e) => {
                    log(format_args!("pull: {e}"));
                    if e.is_transient() {
                        // Back from an outage: heartbeat before pulling.
                        next_heartbeat = Instant::now();
                    }
                    errors.step()
                }
            };
            if !delay.is_zero() {
                self.pause(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Blob, Resources};

    fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({
            "allowed_task_kinds": ["wasm"],
            "max_memory_mb": 64, "max_fuel": 1_000_000, "max_timeout_ms": 5000,
            "work": "any"
        }))
        .expect("policy")
    }

    fn task(module: &[u8], input: &[u8]) -> Task {
        Task {
            id: "t1".into(),
            kind: TaskKind::Wasm,
            module: Some(Blob {
                digest: crate::sandbox::digest(module),
                bytes: STANDARD.encode(module),
            }),
            input: Some(Blob {
                digest: crate::sandbox::digest(input),
                bytes: STANDARD.encode(input),
            }),
            timeout_ms: 1000,
            resources: Resources {
                memory_mb: 16,
                fuel: 100_000,
            },
            model: None,
        }
    }

    const ECHO: &str = r#"(module
        (import "edgecoder" "read_input" (func $read (param i32 i32) (result i32)))
        (import "edgecoder" "write_output" (func $write (param i32 i32)))
        (memory (export "memory") 1)
        (func (export "run") (call $write (i32.const 0) (call $read (i32.const 0) (i32.const 1024)))))"#;

    #[test]
    fn tasks_run_and_results_carry_output() {
        let sandbox = Sandbox::new().expect("sandbox");
        let module = wat::parse_str(ECHO).expect("wat");
        let t = task(&module, b"hello");
        let outcome = run_task(&sandbox, &t, &policy());
        assert!(outcome.is_ok(), "{:?}", outcome.failure);
        let r = task_result("l1", &outcome);
        assert!(r.ok);
        assert_eq!(r.output.as_deref(), Some("aGVsbG8="));
        assert_eq!(r.output_digest, Some(crate::sandbox::digest(b"hello")));
        assert_eq!(r.error_code, None);
        let json = serde_json::to_value(&r).expect("json");
        for field in [
            "lease_id",
            "ok",
            "output_digest",
            "output",
            "duration_ms",
            "error_code",
            "fuel_used",
            "stdout",
            "stderr",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn policy_ceilings_refuse_before_running() {
        let sandbox = Sandbox::new().expect("sandbox");
        let module = wat::parse_str(ECHO).expect("wat");
        type Tweak = fn(&mut Task);
        let cases: [(&str, Tweak); 4] = [
            ("kind", |t| t.kind = TaskKind::Unknown),
            ("memory", |t| t.resources.memory_mb = 65),
            ("fuel", |t| t.resources.fuel = 1_000_001),
            ("timeout", |t| t.timeout_ms = 5001),
        ];
        for (name, change) in cases {
            let mut t = task(&module, b"x");
            change(&mut t);
            let outcome = run_task(&sandbox, &t, &policy());
            assert_eq!(
                outcome.error_code(),
                Some(FailureReason::OutsideSubset),
                "{name}"
            );
            assert!(!outcome.executed, "{name}");
            let r = task_result("l", &outcome);
            assert!(!r.ok);
            assert_eq!(r.output, None);
            assert_eq!(r.output_digest, None);
        }
        // A kind the coordinator allows that this agent does not know.
        let mut p = policy();
        p.allowed_task_kinds.push(TaskKind::Unknown);
        let mut t = task(&module, b"x");
        t.kind = TaskKind::Unknown;
        assert_eq!(
            run_task(&sandbox, &t, &p).error_code(),
            Some(FailureReason::OutsideSubset)
        );
    }

    #[test]
    fn undecodable_bytes_and_unreadable_tasks_are_refused() {
        let sandbox = Sandbox::new().expect("sandbox");
        let module = wat::parse_str(ECHO).expect("wat");
        let mut t = task(&module, b"x");
        if let Some(m) = t.module.as_mut() {
            m.bytes = "%%%".into();
        }
        assert_eq!(
            run_task(&sandbox, &t, &policy()).error_code(),
            Some(FailureReason::SnapshotDigestMismatch)
        );
        let a = Assignment {
            task_id: "t9".into(),
            lease_id: "l9".into(),
            lease_expires_at: None,
            task: Err("missing field".into()),
        };
        let r = execute(&sandbox, &a, &policy());
        assert_eq!(r.error_code, Some(FailureReason::OutsideSubset));
        assert_eq!(r.lease_id, "l9");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let first = b.step();
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..10 {
            assert!(b.step() <= MAX_BACKOFF);
        }
        assert_eq!(b.next, MAX_BACKOFF);
        b.reset();
        assert_eq!(b.next, Duration::from_secs(1));
    }
}
