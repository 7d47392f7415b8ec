//! The server-authoritative node policy: what a node may run, decided on the
//! coordinator from the node's declared capabilities and its last heartbeat.
//!
//! In scope: telemetry validation, the power table, per-node resource limits
//! and the coordinator-wide task subset. Out of scope: the blacklist itself
//! (federation; only its version is reported here).
//!
//! Power table (first matching row wins; "small" means at most
//! [`SMALL_TIMEOUT_MS`], [`SMALL_MEMORY_MB`] and [`SMALL_FUEL`]):
//!
//! | device | condition | work | reason |
//! |---|---|---|---|
//! | any | no heartbeat yet | none | `no_telemetry` |
//! | any | sandbox not ready | none | `sandbox_not_ready` |
//! | any | thermal `serious` or `critical` | none | `thermal_serious` / `thermal_critical` |
//! | phone, tablet | low-power mode | none | `low_power_mode` |
//! | phone, tablet | battery < 20 % and not on external power | none | `battery_low` |
//! | phone, tablet | not on external power | small | `on_battery` |
//! | laptop | battery < 15 % and not on external power | none | `battery_low` |
//! | laptop | battery 15–40 % and not on external power, or low-power mode | small | `battery_medium` / `low_power_mode` |
//! | phone, tablet, laptop, desktop | CPU ≥ 85 % | none | `device_busy` |
//! | server | — | any | `unrestricted` |
//! | otherwise | — | any | `ok` |
//!
//! Every device but a server is `idle_only`: the agent runs work only while
//! its user is not using the machine.

use edgecoder_proto::mesh::{
    Capabilities, DeviceType, NodeKind, Policy, PolicyReason, Sandbox, TaskKind, Telemetry,
    Thermal, Work,
};

use crate::Error;

/// Bumped whenever this table or the limits change meaning.
pub const POLICY_VERSION: u64 = 1;
/// Task kinds the coordinator schedules.
pub const TASK_KINDS: [TaskKind; 2] = [TaskKind::Wasm, TaskKind::Inference];

/// The one task kind a node of `kind` runs: GPU hosts run models, every
/// other node runs wasm modules in its sandbox.
pub fn task_kind_for(kind: NodeKind) -> TaskKind {
    match kind {
        NodeKind::GpuHost => TaskKind::Inference,
        NodeKind::Agent | NodeKind::Coordinator => TaskKind::Wasm,
    }
}

/// Largest task timeout anyone may ask for.
pub const MAX_TIMEOUT_MS: i64 = 300_000;
/// Largest task memory anyone may ask for.
pub const MAX_MEMORY_MB: i64 = 512;
/// Largest fuel budget anyone may ask for.
pub const MAX_FUEL: i64 = 10_000_000_000;
/// "Small" task limits (devices on battery).
pub const SMALL_TIMEOUT_MS: i64 = 10_000;
/// "Small" task memory.
pub const SMALL_MEMORY_MB: i64 = 64;
/// "Small" task fuel.
pub const SMALL_FUEL: i64 = 1_000_000_000;
/// How often nodes should heartbeat.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 10;

/// Range checks serde cannot express.
pub fn validate_telemetry(t: &Telemetry) -> Result<(), Error> {
    let bad = |m: &str| Err(edgecoder_kernel::Error::InvalidRequest(m.into()).into());
    if !(0.0..=100.0).contains(&t.cpu_percent) {
        return bad("cpu_percent must be 0 to 100.");
    }
    if t.battery_percent
        .is_some_and(|b| !(0.0..=100.0).contains(&b))
    {
        return bad("battery_percent must be 0 to 100.");
    }
    if t.active_model.as_ref().is_some_and(|m| m.len() > 128) {
        return bad("active_model is at most 128 characters.");
    }
    if t.models.len() > 32
        || !t
            .models
            .iter()
            .all(|m| edgecoder_proto::inference::valid_model_name(m))
    {
        return bad("models holds at most 32 names of the form name@version.");
    }
    if t.model_status.len() > 32
        || !t.model_status.iter().all(|m| {
            let hex = m.release_digest.strip_prefix("blake3:").unwrap_or_default();
            edgecoder_proto::inference::valid_model_name(&m.model)
                && hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    {
        return bad(
            "model_status holds at most 32 reports on name@version releases (blake3: digests).",
        );
    }
    if let Some(a) = &t.accelerator {
        let printable = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
        };
        if !printable(&a.name, 128) || !printable(&a.provider, 16) {
            return bad("accelerator.name (128) and provider (16) must be printable text.");
        }
    }
    Ok(())
}

/// The power table's decision for the last telemetry.
pub fn power(t: Option<&Telemetry>) -> (Work, PolicyReason) {
    use DeviceType::*;
    use PolicyReason as R;
    let Some(t) = t else {
        return (Work::None, R::NoTelemetry);
    };
    if !t.sandbox_ready {
        return (Work::None, R::SandboxNotReady);
    }
    match t.thermal_state {
        Thermal::Serious => return (Work::None, R::ThermalSerious),
        Thermal::Critical => return (Work::None, R::ThermalCritical),
        _ => {}
    }
    let battery = if t.on_external_power {
        None
    } else {
        t.battery_percent
    };
    match t.device_type {
        Phone | Tablet => {
            if t.low_power_mode {
                return (Work::None, R::LowPowerMode);
            }
            if battery.is_some_and(|b| b < 20.0) {
                return (Work::None, R::BatteryLow);
            }
        }
        Laptop => {
            if battery.is_some_and(|b| b < 15.0) {
                return (Work::None, R::BatteryLow);
            }
        }
        Desktop | Server => {}
    }
    if t.device_type == Server {
        return (Work::Any, R::Unrestricted);
    }
    if t.cpu_percent >= 85.0 {
        return (Work::None, R::DeviceBusy);
    }
    match t.device_type {
        Phone | Tablet if !t.on_external_power => (Work::Small, R::OnBattery),
        Laptop if battery.is_some_and(|b| b < 40.0) => (Work::Small, R::BatteryMedium),
        Laptop if t.low_power_mode => (Work::Small, R::LowPowerMode),
        _ => (Work::Any, R::Ok),
    }
}

/// Resource limits a node may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest task timeout.
    pub timeout_ms: i64,
    /// Most memory.
    pub memory_mb: i64,
    /// Most fuel.
    pub fuel: i64,
}

/// The node's policy: its limits, and what it is told.
pub fn for_node(
    kind: NodeKind,
    capabilities: &Capabilities,
    telemetry: Option<&Telemetry>,
    blacklist_version: u64,
) -> (Option<Limits>, Policy) {
    let sandboxed = capabilities.sandbox == Sandbox::Wasmtime;
    // A quarter of the device's memory, so a task cannot starve its owner.
    let device_mb = i64::try_from(capabilities.memory_mb).unwrap_or(i64::MAX);
    let memory_cap = (device_mb / 4).clamp(16, MAX_MEMORY_MB);
    let (mut work, mut reason) = power(telemetry);
    if !sandboxed {
        (work, reason) = (Work::None, PolicyReason::NoSandbox);
    }
    let limits = match work {
        Work::Any => Some(Limits {
            timeout_ms: MAX_TIMEOUT_MS,
            memory_mb: memory_cap,
            fuel: MAX_FUEL,
        }),
        Work::Small => Some(Limits {
            timeout_ms: SMALL_TIMEOUT_MS,
            memory_mb: memory_cap.min(SMALL_MEMORY_MB),
            fuel: SMALL_FUEL,
        }),
        Work::None | Work::Unknown => None,
    };
    let idle_only = telemetry.is_none_or(|t| t.device_type != DeviceType::Server);
    let shown = limits.unwrap_or(Limits {
        timeout_ms: 0,
        memory_mb: 0,
        fuel: 0,
    });
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    let policy = Policy {
        allowed_task_kinds: if sandboxed {
            vec![task_kind_for(kind)]
        } else {
            Vec::new()
        },
        max_memory_mb: unsigned(shown.memory_mb),
        max_fuel: unsigned(shown.fuel),
        max_timeout_ms: unsigned(shown.timeout_ms),
        work,
        reason,
        idle_only,
        policy_version: POLICY_VERSION,
        blacklist_version,
    };
    (limits, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(device: DeviceType, battery: Option<f64>, power: bool) -> Telemetry {
        Telemetry {
            cpu_percent: 10.0,
            memory_used_mb: 100,
            memory_total_mb: Some(8000),
            battery_percent: battery,
            on_external_power: power,
            low_power_mode: false,
            thermal_state: Thermal::Nominal,
            device_type: device,
            sandbox_ready: true,
            active_model: None,
            models: Vec::new(),
            accelerator: None,
            model_status: Vec::new(),
        }
    }

    #[test]
    fn the_power_table() {
        use DeviceType::*;
        use PolicyReason as R;
        let cases = [
            (t(Phone, Some(50.0), false), Work::Small, R::OnBattery),
            (t(Phone, Some(19.0), false), Work::None, R::BatteryLow),
            (t(Phone, Some(19.0), true), Work::Any, R::Ok),
            (t(Laptop, Some(14.0), false), Work::None, R::BatteryLow),
            (t(Laptop, Some(30.0), false), Work::Small, R::BatteryMedium),
            (t(Laptop, Some(30.0), true), Work::Any, R::Ok),
            (t(Laptop, Some(90.0), false), Work::Any, R::Ok),
            (t(Server, None, true), Work::Any, R::Unrestricted),
        ];
        for (tel, work, reason) in cases {
            assert_eq!(power(Some(&tel)), (work, reason), "{tel:?}");
        }
        let mut phone = t(Phone, Some(90.0), true);
        phone.low_power_mode = true;
        assert_eq!(power(Some(&phone)), (Work::None, R::LowPowerMode));
        let mut hot = t(Server, None, true);
        hot.thermal_state = Thermal::Critical;
        assert_eq!(power(Some(&hot)), (Work::None, R::ThermalCritical));
        let mut busy = t(Desktop, None, true);
        busy.cpu_percent = 95.0;
        assert_eq!(power(Some(&busy)), (Work::None, R::DeviceBusy));
        assert_eq!(power(None), (Work::None, R::NoTelemetry));
    }

    fn caps(sandbox: Sandbox, memory_mb: u64) -> Capabilities {
        Capabilities {
            sandbox,
            cpu_cores: 2,
            memory_mb,
            gpu: None,
            models: Vec::new(),
        }
    }

    #[test]
    fn nodes_without_a_sandbox_get_no_work() {
        let caps = caps(Sandbox::None, 8192);
        let (limits, policy) = for_node(
            NodeKind::Agent,
            &caps,
            Some(&t(DeviceType::Server, None, true)),
            0,
        );
        assert!(limits.is_none());
        assert_eq!(policy.reason, PolicyReason::NoSandbox);
        assert!(policy.allowed_task_kinds.is_empty());
    }

    #[test]
    fn gpu_hosts_run_inference_on_approved_models_only() {
        let mut caps = caps(Sandbox::Wasmtime, 8192);
        caps.models = vec!["a@1".into(), "b@1".into()];
        let mut tel = t(DeviceType::Server, None, true);
        tel.models = vec!["b@1".into(), "c@1".into()];
        let (_, p) = for_node(NodeKind::GpuHost, &caps, Some(&tel), 0);
        assert_eq!(p.allowed_task_kinds, vec![TaskKind::Inference]);
        let (_, p) = for_node(NodeKind::Agent, &caps, Some(&tel), 0);
        assert_eq!(p.allowed_task_kinds, vec![TaskKind::Wasm]);
    }

    #[test]
    fn memory_is_a_quarter_of_the_device() {
        let caps = caps(Sandbox::Wasmtime, 1024);
        let (limits, _) = for_node(
            NodeKind::Agent,
            &caps,
            Some(&t(DeviceType::Server, None, true)),
            3,
        );
        assert_eq!(limits.map(|l| l.memory_mb), Some(256));
    }
}
