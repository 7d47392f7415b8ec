//! The mesh's wire types: what a node and a coordinator send each other,
//! one definition for both sides.
//!
//! In scope: registration, heartbeat telemetry and the policy answer, pulled
//! tasks and leases, results and their failure codes, and the closed sets in
//! them as enums (node kind and status, device type, thermal state, sandbox,
//! task kind, work, policy reason). Out of scope: how either side decides
//! (the coordinator's power table and scheduler, the agent's sandbox) and the
//! routes (`edgecoder-mesh`).
//!
//! What a node sends is read strictly (`deny_unknown_fields`); what a
//! coordinator answers is read leniently (unknown fields ignored; an enum
//! value a node does not know becomes `Unknown`, which it treats as the most
//! restrictive value), so coordinators can add to answers without breaking
//! deployed agents.
//!
//! ```text
//! node ── POST /mesh/nodes/register  {RegisterRequest} ──▶ coordinator
//!      ◀────────────────────────────  {RegisterResponse}
//!      ── POST /mesh/heartbeat       {Telemetry} ────────▶
//!      ◀────────────────────────────  {HeartbeatResponse{policy}}
//!      ── POST /mesh/tasks/pull      {} ─────────────────▶
//!      ◀──────────────────────────── 200 {PullResponse} | 204 edgecoder-reason: NoTaskReason
//!      ── POST /mesh/tasks/{id}/result {TaskResult} ─────▶
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A node's role in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A device agent that runs tasks.
    Agent,
    /// A peer coordinator.
    Coordinator,
    /// A GPU host that serves inference tasks.
    #[serde(rename = "gpu-host")]
    GpuHost,
}

impl NodeKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Agent => "agent",
            NodeKind::Coordinator => "coordinator",
            NodeKind::GpuHost => "gpu-host",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<NodeKind> {
        match s {
            "agent" => Some(NodeKind::Agent),
            "coordinator" => Some(NodeKind::Coordinator),
            "gpu-host" => Some(NodeKind::GpuHost),
            _ => None,
        }
    }
}

/// Where a node stands with its coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Registered, waiting for an operator.
    PendingApproval,
    /// Approved: may take work.
    Active,
    /// Refused by an operator; may not heartbeat.
    Rejected,
    /// Taken out of service by an operator.
    Suspended,
    /// A status this side does not know (an answer from a newer coordinator).
    #[serde(other)]
    Unknown,
}

impl NodeStatus {
    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::PendingApproval => "pending_approval",
            NodeStatus::Active => "active",
            NodeStatus::Rejected => "rejected",
            NodeStatus::Suspended => "suspended",
            NodeStatus::Unknown => "unknown",
        }
    }

    /// The status stored as `s`; anything else is [`NodeStatus::Unknown`].
    pub fn parse(s: &str) -> NodeStatus {
        match s {
            "pending_approval" => NodeStatus::PendingApproval,
            "active" => NodeStatus::Active,
            "rejected" => NodeStatus::Rejected,
            "suspended" => NodeStatus::Suspended,
            _ => NodeStatus::Unknown,
        }
    }
}

/// The sandbox a node runs tasks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sandbox {
    /// wasmtime, the agent's sandbox.
    Wasmtime,
    /// None: the node takes no tasks.
    None,
}

/// `{"capabilities"}` of a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// The sandbox.
    pub sandbox: Sandbox,
    /// Logical CPUs (1 to 4096).
    pub cpu_cores: u32,
    /// Installed memory, MiB (at most 16 TiB).
    pub memory_mb: u64,
    /// Accelerator description; none on agents.
    #[serde(default)]
    pub gpu: Option<Json>,
    /// Models the node can serve; none on agents.
    #[serde(default)]
    pub models: Vec<String>,
}

/// `POST /mesh/nodes/register` body, signed by the key it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The one-time enrollment token from the portal.
    pub enrollment_token: String,
    /// The node's id (checked against [`crate::NodeId`] by the coordinator,
    /// which answers `invalid_node_id`).
    pub node_id: String,
    /// The node's kind.
    pub kind: NodeKind,
    /// [`crate::keys::public_key_b64url`] of the node key.
    pub public_key: String,
    /// Operating system.
    pub os: String,
    /// Software version.
    pub version: String,
    /// What the device offers.
    pub capabilities: Capabilities,
}

/// `201` answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The node's id.
    pub node_id: String,
    /// The node's kind.
    #[serde(default = "default_kind")]
    pub kind: NodeKind,
    /// `pending_approval` until an operator approves it.
    pub status: NodeStatus,
    /// The key id the coordinator computed.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The initial policy.
    #[serde(default)]
    pub policy: Option<Policy>,
}

fn default_kind() -> NodeKind {
    NodeKind::Agent
}

/// Thermal pressure as the OS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Thermal {
    /// No pressure.
    Nominal,
    /// Slightly elevated.
    Fair,
    /// Throttling.
    Serious,
    /// Severe throttling.
    Critical,
}

/// What kind of device a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// Phone.
    Phone,
    /// Tablet.
    Tablet,
    /// Laptop.
    Laptop,
    /// Desktop.
    Desktop,
    /// Server.
    Server,
}

impl DeviceType {
    /// Every device type.
    pub const ALL: [DeviceType; 5] = [
        DeviceType::Phone,
        DeviceType::Tablet,
        DeviceType::Laptop,
        DeviceType::Desktop,
        DeviceType::Server,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Phone => "phone",
            DeviceType::Tablet => "tablet",
            DeviceType::Laptop => "laptop",
            DeviceType::Desktop => "desktop",
            DeviceType::Server => "server",
        }
    }

    /// The device type named `s`.
    pub fn parse(s: &str) -> Option<DeviceType> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// `POST /mesh/heartbeat` body: what the device is doing and can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// CPU use, 0–100.
    pub cpu_percent: f64,
    /// Memory in use, MiB.
    pub memory_used_mb: u64,
    /// Memory installed, MiB.
    #[serde(default)]
    pub memory_total_mb: Option<u64>,
    /// Battery charge, 0–100; absent without a battery.
    #[serde(default)]
    pub battery_percent: Option<f64>,
    /// Mains (or USB) power connected.
    pub on_external_power: bool,
    /// OS low-power mode.
    #[serde(default)]
    pub low_power_mode: bool,
    /// Thermal state.
    pub thermal_state: Thermal,
    /// Device type.
    pub device_type: DeviceType,
    /// Whether the sandbox initialised.
    pub sandbox_ready: bool,
    /// The loaded model, if any (at most 128 characters).
    #[serde(default)]
    pub active_model: Option<String>,
    /// Models the node can serve now (`name@version`; GPU hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The accelerator inference runs on (GPU hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<Accelerator>,
    /// Per release: verified or why not, and health (GPU hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_status: Vec<crate::supply::ModelStatus>,
}

/// An accelerator as a GPU host reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accelerator {
    /// Device name (`cpu` when inference runs on the CPU).
    pub name: String,
    /// Device memory, MiB.
    pub memory_mb: u64,
    /// The onnxruntime execution provider (`cpu`, `cuda`).
    pub provider: String,
}

/// Task kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A WebAssembly module run in the agent's sandbox.
    Wasm,
    /// A model run by a GPU host (`inference` payload in the input blob).
    Inference,
    /// A kind this side does not know; never run.
    #[serde(other)]
    Unknown,
}

impl TaskKind {
    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Wasm => "wasm",
            TaskKind::Inference => "inference",
            TaskKind::Unknown => "unknown",
        }
    }
}

/// How much work the coordinator's power table allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Anything within the node's limits.
    Any,
    /// Small tasks only.
    Small,
    /// Nothing.
    None,
    /// A value this side does not know: treated as [`Work::None`].
    #[serde(other)]
    Unknown,
}

impl Work {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Any => "any",
            Work::Small => "small",
            Work::None => "none",
            Work::Unknown => "unknown",
        }
    }
}

/// Why the policy is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyReason {
    /// No heartbeat yet.
    NoTelemetry,
    /// The sandbox is not up.
    SandboxNotReady,
    /// The node declared no sandbox.
    NoSandbox,
    /// Thermal state `serious`.
    ThermalSerious,
    /// Thermal state `critical`.
    ThermalCritical,
    /// OS low-power mode.
    LowPowerMode,
    /// Battery too low to work on battery.
    BatteryLow,
    /// A phone or tablet on battery.
    OnBattery,
    /// A laptop on battery with a medium charge.
    BatteryMedium,
    /// The device's own load is high.
    DeviceBusy,
    /// A server: no power restrictions.
    Unrestricted,
    /// Nothing restricts the node.
    Ok,
    /// The node is not `active`.
    NodeNotActive,
    /// A reason this side does not know.
    #[serde(other)]
    Unknown,
}

impl PolicyReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyReason::NoTelemetry => "no_telemetry",
            PolicyReason::SandboxNotReady => "sandbox_not_ready",
            PolicyReason::NoSandbox => "no_sandbox",
            PolicyReason::ThermalSerious => "thermal_serious",
            PolicyReason::ThermalCritical => "thermal_critical",
            PolicyReason::LowPowerMode => "low_power_mode",
            PolicyReason::BatteryLow => "battery_low",
            PolicyReason::OnBattery => "on_battery",
            PolicyReason::BatteryMedium => "battery_medium",
            PolicyReason::DeviceBusy => "device_busy",
            PolicyReason::Unrestricted => "unrestricted",
            PolicyReason::Ok => "ok",
            PolicyReason::NodeNotActive => "node_not_active",
            PolicyReason::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PolicyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The coordinator's policy for a node, decided on the coordinator. A field
/// a coordinator leaves out reads as its most restrictive value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Task kinds the node may run.
    #[serde(default)]
    pub allowed_task_kinds: Vec<TaskKind>,
    /// Most memory a task may ask for, MiB.
    #[serde(default)]
    pub max_memory_mb: u64,
    /// Most fuel a task may ask for.
    #[serde(default)]
    pub max_fuel: u64,
    /// Longest timeout a task may ask for, ms.
    #[serde(default)]
    pub max_timeout_ms: u64,
    /// How much work is allowed now.
    #[serde(default = "no_work")]
    pub work: Work,
    /// Why.
    #[serde(default = "unknown_reason")]
    pub reason: PolicyReason,
    /// Work only while the device's user is idle (every device but servers).
    #[serde(default = "yes")]
    pub idle_only: bool,
    /// Version of the policy table.
    #[serde(default)]
    pub policy_version: u64,
    /// Version of the blacklist the policy reflects.
    #[serde(default)]
    pub blacklist_version: u64,
}

fn no_work() -> Work {
    Work::None
}

fn unknown_reason() -> PolicyReason {
    PolicyReason::Unknown
}

fn yes() -> bool {
    true
}

impl Policy {
    /// Whether the coordinator asked for no work at all.
    pub fn wants_no_work(&self) -> bool {
        matches!(self.work, Work::None | Work::Unknown)
    }
}

/// `200` answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The node's id.
    pub node_id: String,
    /// The node's status at the coordinator.
    pub status: NodeStatus,
    /// The policy now in force.
    pub policy: Policy,
    /// When to send the next heartbeat.
    pub heartbeat_interval_secs: u64,
    /// The model policy and the releases assigned to the node (GPU hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<crate::supply::Assignments>,
}

/// Module or input bytes with their digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// `blake3:<hex>`.
    pub digest: String,
    /// Standard base64 of the bytes.
    pub bytes: String,
}

/// What a task may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory cap, MiB.
    pub memory_mb: u64,
    /// Fuel.
    pub fuel: u64,
}

/// A task as pulled: frozen, content-addressed inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Task kind.
    pub kind: TaskKind,
    /// The module (absent for kinds without one).
    #[serde(default)]
    pub module: Option<Blob>,
    /// The input.
    #[serde(default)]
    pub input: Option<Blob>,
    /// Wall-clock limit, ms.
    pub timeout_ms: u64,
    /// Memory and fuel limits.
    pub resources: Resources,
    /// The model an `inference` task runs (`name@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `200` answer to a pull: a task under a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// The task (kept raw so a node can still answer a task it cannot read,
    /// releasing the lease rather than letting it expire).
    pub task: Json,
    /// The lease to quote when reporting.
    pub lease_id: String,
    /// When the lease ends, RFC 3339.
    pub lease_expires_at: String,
    /// The policy version the lease was granted under.
    pub policy_version: u64,
}

/// Why a `204` pull carries no task (`edgecoder-reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoTaskReason {
    /// Nothing queued that fits.
    NoWork,
    /// The power table allows no work now.
    PowerDeferred,
    /// The node cannot run any queued kind.
    OutsideSubset,
    /// The node's reputation is low: it gets work less often.
    Reputation,
    /// A reason this side does not know.
    #[serde(other)]
    Unknown,
}

impl NoTaskReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            NoTaskReason::NoWork => "no_work",
            NoTaskReason::PowerDeferred => "power_deferred",
            NoTaskReason::OutsideSubset => "outside_subset",
            NoTaskReason::Reputation => "reputation",
            NoTaskReason::Unknown => "unknown",
        }
    }

    /// The reason a header value names.
    pub fn parse(s: &str) -> NoTaskReason {
        match s {
            "no_work" => NoTaskReason::NoWork,
            "power_deferred" => NoTaskReason::PowerDeferred,
            "outside_subset" => NoTaskReason::OutsideSubset,
            "reputation" => NoTaskReason::Reputation,
            _ => NoTaskReason::Unknown,
        }
    }
}

/// Why a task failed on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// A module or input did not hash to its digest.
    SnapshotDigestMismatch,
    /// The task is outside what the policy or the agent allows.
    OutsideSubset,
    /// Wall-clock limit reached.
    Timeout,
    /// Fuel budget used up.
    FuelExhausted,
    /// The memory cap was hit.
    MemoryExceeded,
    /// The module trapped.
    Trap,
    /// The module imports something the sandbox does not provide.
    LinkError,
    /// The output is over the cap.
    OutputTooLarge,
    /// The host has no model of the task's name.
    ModelNotFound,
    /// The host's copy of the model may not be served (digest mismatch).
    ModelNotApproved,
    /// The prompt is over the host's input limit.
    InputTooLarge,
    /// Tokens, context, time or memory over a limit of the host or model.
    LimitsExceeded,
    /// The inference backend failed.
    BackendError,
}

impl FailureCode {
    /// Every code.
    pub const ALL: [FailureCode; 13] = [
        FailureCode::SnapshotDigestMismatch,
        FailureCode::OutsideSubset,
        FailureCode::Timeout,
        FailureCode::FuelExhausted,
        FailureCode::MemoryExceeded,
        FailureCode::Trap,
        FailureCode::LinkError,
        FailureCode::OutputTooLarge,
        FailureCode::ModelNotFound,
        FailureCode::ModelNotApproved,
        FailureCode::InputTooLarge,
        FailureCode::LimitsExceeded,
        FailureCode::BackendError,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureCode::SnapshotDigestMismatch => "snapshot_digest_mismatch",
            FailureCode::OutsideSubset => "outside_subset",
            FailureCode::Timeout => "timeout",
            FailureCode::FuelExhausted => "fuel_exhausted",
            FailureCode::MemoryExceeded => "memory_exceeded",
            FailureCode::Trap => "trap",
            FailureCode::LinkError => "link_error",
            FailureCode::OutputTooLarge => "output_too_large",
            FailureCode::ModelNotFound => "model_not_found",
            FailureCode::ModelNotApproved => "model_not_approved",
            FailureCode::InputTooLarge => "input_too_large",
            FailureCode::LimitsExceeded => "limits_exceeded",
            FailureCode::BackendError => "backend_error",
        }
    }

    /// Failures that may be the device's or the transfer's rather than the
    /// module's, so the task is worth another attempt elsewhere.
    pub fn is_retryable(self) -> bool {
        // A host's own model copy or backend may be at fault; another host
        // that reports the model may serve it.
        matches!(
            self,
            FailureCode::SnapshotDigestMismatch
                | FailureCode::Timeout
                | FailureCode::ModelNotFound
                | FailureCode::ModelNotApproved
                | FailureCode::BackendError
        )
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /mesh/tasks/{id}/result` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    /// The lease this result answers.
    pub lease_id: String,
    /// Whether the run succeeded.
    pub ok: bool,
    /// `blake3:` digest of the output, on success.
    #[serde(default)]
    pub output_digest: Option<String>,
    /// Standard base64 of the output, on success.
    #[serde(default)]
    pub output: Option<String>,
    /// Run time, ms.
    pub duration_ms: u64,
    /// Why it failed, on failure.
    #[serde(default)]
    pub error_code: Option<FailureCode>,
    /// Fuel consumed.
    #[serde(default)]
    pub fuel_used: Option<u64>,
    /// Captured stdout (lossy UTF-8, capped).
    #[serde(default)]
    pub stdout: Option<String>,
    /// Captured stderr (lossy UTF-8, capped).
    #[serde(default)]
    pub stderr: Option<String>,
    /// What an `inference` task ran on (required for inference results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceReport>,
}

/// How a GPU host ran an inference task: bound into the result and the
/// ledger's completion record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceReport {
    /// The model name the host ran (`name@version`).
    pub model: String,
    /// `blake3:` digest of the manifest the name resolved to.
    pub model_manifest_digest: String,
    /// The sampler's seed.
    pub seed: u64,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// `length`, `stop`, `end-of-text` or `context-full`.
    pub finish_reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_use_their_wire_names() {
        for d in DeviceType::ALL {
            assert_eq!(serde_json::to_value(d).ok(), Some(Json::from(d.as_str())));
            assert_eq!(DeviceType::parse(d.as_str()), Some(d));
        }
        for c in FailureCode::ALL {
            assert_eq!(serde_json::to_value(c).ok(), Some(Json::from(c.as_str())));
        }
        for s in ["pending_approval", "active", "rejected", "suspended"] {
            assert_eq!(NodeStatus::parse(s).as_str(), s);
        }
        assert_eq!(
            serde_json::from_str::<Work>("\"turbo\"").ok(),
            Some(Work::Unknown)
        );
        assert_eq!(
            serde_json::from_str::<TaskKind>("\"quantum\"").ok(),
            Some(TaskKind::Unknown)
        );
        assert!(serde_json::from_str::<FailureCode>("\"exploded\"").is_err());
    }

    #[test]
    fn node_messages_are_strict_and_answers_lenient() {
        let t = r#"{"cpu_percent":1,"memory_used_mb":2,"on_external_power":true,"thermal_state":"nominal","device_type":"server","sandbox_ready":true,"extra":1}"#;
        assert!(serde_json::from_str::<Telemetry>(t).is_err());
        let p = r#"{"allowed_task_kinds":["wasm","gpu"],"max_memory_mb":1,"max_fuel":2,"max_timeout_ms":3,"work":"any","reason":"new_reason","policy_version":1,"blacklist_version":0,"later":true}"#;
        let p: Policy = serde_json::from_str(p).expect("lenient");
        assert_eq!(
            p.allowed_task_kinds,
            vec![TaskKind::Wasm, TaskKind::Unknown]
        );
        assert_eq!(p.reason, PolicyReason::Unknown);
        assert!(p.idle_only && !p.wants_no_work());
        let sparse: Policy = serde_json::from_str(r#"{"reason":"ok"}"#).expect("lenient");
        assert!(sparse.wants_no_work() && sparse.allowed_task_kinds.is_empty());
        assert_eq!(sparse.max_fuel, 0);
    }
}
