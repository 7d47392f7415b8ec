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

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::Error;

/// Bumped whenever this table or the limits change meaning.
pub const POLICY_VERSION: i64 = 1;
/// Task kinds the coordinator schedules.
pub const TASK_KINDS: [&str; 1] = ["wasm"];
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
pub const HEARTBEAT_INTERVAL_SECS: i64 = 10;

/// Thermal pressure as the OS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// `POST /mesh/heartbeat` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// CPU use, 0–100.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_used_mb: u64,
    /// Memory installed.
    #[serde(default)]
    pub memory_total_mb: Option<u64>,
    /// Battery charge, 0–100; absent without a battery.
    #[serde(default)]
    pub battery_percent: Option<f64>,
    /// Plugged in.
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
    /// The loaded model, if any.
    #[serde(default)]
    pub active_model: Option<String>,
}

impl Telemetry {
    /// Range checks serde cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(edgecoder_kernel::Error::InvalidRequest(m.into()).into());
        if !(0.0..=100.0).contains(&self.cpu_percent) {
            return bad("cpu_percent must be 0 to 100.");
        }
        if self
            .battery_percent
            .is_some_and(|b| !(0.0..=100.0).contains(&b))
        {
            return bad("battery_percent must be 0 to 100.");
        }
        if self.active_model.as_ref().is_some_and(|m| m.len() > 128) {
            return bad("active_model is at most 128 characters.");
        }
        Ok(())
    }
}

/// How much work the power table allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Anything within the node's limits.
    Any,
    /// Small tasks only.
    Small,
    /// Nothing.
    None,
}

impl Work {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Any => "any",
            Work::Small => "small",
            Work::None => "none",
        }
    }
}

/// The power table's decision for the last telemetry.
pub fn power(t: Option<&Telemetry>) -> (Work, &'static str) {
    use DeviceType::*;
    let Some(t) = t else {
        return (Work::None, "no_telemetry");
    };
    if !t.sandbox_ready {
        return (Work::None, "sandbox_not_ready");
    }
    match t.thermal_state {
        Thermal::Serious => return (Work::None, "thermal_serious"),
        Thermal::Critical => return (Work::None, "thermal_critical"),
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
                return (Work::None, "low_power_mode");
            }
            if battery.is_some_and(|b| b < 20.0) {
                return (Work::None, "battery_low");
            }
        }
        Laptop => {
            if battery.is_some_and(|b| b < 15.0) {
                return (Work::None, "battery_low");
            }
        }
        Desktop | Server => {}
    }
    if t.device_type == Server {
        return (Work::Any, "unrestricted");
    }
    if t.cpu_percent >= 85.0 {
        return (Work::None, "device_busy");
    }
    match t.device_type {
        Phone | Tablet if !t.on_external_power => (Work::Small, "on_battery"),
        Laptop if battery.is_some_and(|b| b < 40.0) => (Work::Small, "battery_medium"),
        Laptop if t.low_power_mode => (Work::Small, "low_power_mode"),
        _ => (Work::Any, "ok"),
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

/// The node's policy: its limits, and the JSON it receives.
pub fn for_node(
    capabilities: &Json,
    telemetry: Option<&Telemetry>,
    blacklist_version: i64,
) -> (Option<Limits>, Json) {
    let sandboxed = capabilities["sandbox"].as_str() == Some("wasmtime");
    // A quarter of the device's memory, so a task cannot starve its owner.
    let device_mb = capabilities["memory_mb"].as_i64().unwrap_or(0);
    let memory_cap = (device_mb / 4).clamp(16, MAX_MEMORY_MB);
    let (mut work, mut reason) = power(telemetry);
    if !sandboxed {
        (work, reason) = (Work::None, "no_sandbox");
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
        Work::None => None,
    };
    let idle_only = telemetry.is_none_or(|t| t.device_type != DeviceType::Server);
    let kinds: &[&str] = if sandboxed { &TASK_KINDS } else { &[] };
    let shown = limits.unwrap_or(Limits {
        timeout_ms: 0,
        memory_mb: 0,
        fuel: 0,
    });
    let policy = json!({
        "allowed_task_kinds": kinds,
        "max_memory_mb": shown.memory_mb,
        "max_fuel": shown.fuel,
        "max_timeout_ms": shown.timeout_ms,
        "work": work.as_str(),
        "reason": reason,
        "idle_only": idle_only,
        "policy_version": POLICY_VERSION,
        "blacklist_version": blacklist_version,
    });
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
        }
    }

    #[test]
    fn the_power_table() {
        use DeviceType::*;
        let cases = [
            (t(Phone, Some(50.0), false), Work::Small, "on_battery"),
            (t(Phone, Some(19.0), false), Work::None, "battery_low"),
            (t(Phone, Some(19.0), true), Work::Any, "ok"),
            (t(Laptop, Some(14.0), false), Work::None, "battery_low"),
            (t(Laptop, Some(30.0), false), Work::Small, "battery_medium"),
            (t(Laptop, Some(30.0), true), Work::Any, "ok"),
            (t(Laptop, Some(90.0), false), Work::Any, "ok"),
            (t(Server, None, true), Work::Any, "unrestricted"),
        ];
        for (tel, work, reason) in cases {
            assert_eq!(power(Some(&tel)), (work, reason), "{tel:?}");
        }
        let mut phone = t(Phone, Some(90.0), true);
        phone.low_power_mode = true;
        assert_eq!(power(Some(&phone)), (Work::None, "low_power_mode"));
        let mut hot = t(Server, None, true);
        hot.thermal_state = Thermal::Critical;
        assert_eq!(power(Some(&hot)), (Work::None, "thermal_critical"));
        let mut busy = t(Desktop, None, true);
        busy.cpu_percent = 95.0;
        assert_eq!(power(Some(&busy)), (Work::None, "device_busy"));
        assert_eq!(power(None), (Work::None, "no_telemetry"));
    }

    #[test]
    fn nodes_without_a_sandbox_get_no_work() {
        let caps = json!({"sandbox": "none", "memory_mb": 8192});
        let (limits, policy) = for_node(&caps, Some(&t(DeviceType::Server, None, true)), 0);
        assert!(limits.is_none());
        assert_eq!(policy["reason"], "no_sandbox");
        assert_eq!(policy["allowed_task_kinds"], json!([]));
    }

    #[test]
    fn memory_is_a_quarter_of_the_device() {
        let caps = json!({"sandbox": "wasmtime", "memory_mb": 1024});
        let (limits, _) = for_node(&caps, Some(&t(DeviceType::Server, None, true)), 3);
        assert_eq!(limits.map(|l| l.memory_mb), Some(256));
    }
}
