//! Heartbeat telemetry from what Linux offers cheaply.
//!
//! In scope: CPU load (`/proc/loadavg` over the core count), memory
//! (`/proc/meminfo`), battery and mains power (`/sys/class/power_supply`), a
//! low-power profile (`/sys/firmware/acpi/platform_profile`) and thermal state
//! (the hottest `/sys/class/thermal` zone). Every reading has a default when
//! the file is missing (containers, other systems): the heartbeat must go out
//! regardless.
//!
//! Out of scope: sampling over time, per-process accounting, non-Linux
//! platforms (they send the defaults).

use std::path::Path;

use edgecoder_proto::mesh::{DeviceType, Sandbox, Thermal};

use crate::client::{Capabilities, Telemetry};

/// Zone temperatures (°C) from which the thermal state is `fair`, `serious`,
/// `critical`.
const THERMAL_STEPS_C: [f64; 3] = [70.0, 80.0, 90.0];

/// Telemetry read from the live system.
pub fn sample(device_type: DeviceType) -> Telemetry {
    sample_from(Path::new("/"), device_type, cpu_cores())
}

/// Telemetry read from a filesystem rooted at `root` (tests point it at a
/// fake tree).
pub fn sample_from(root: &Path, device_type: DeviceType, cores: u32) -> Telemetry {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    let (memory_total_mb, memory_available_mb) = read("proc/meminfo")
        .map(|m| parse_meminfo(&m))
        .unwrap_or((0, 0));
    let cpu_percent = read("proc/loadavg")
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |load| {
            (load / f64::from(cores.max(1)) * 100.0).clamp(0.0, 100.0)
        });
    let power = read_power(&root.join("sys/class/power_supply"));
    let low_power_mode = read("sys/firmware/acpi/platform_profile")
        .is_some_and(|p| matches!(p.trim(), "low-power" | "quiet"));
    Telemetry {
        cpu_percent,
        memory_used_mb: memory_total_mb.saturating_sub(memory_available_mb),
        memory_total_mb: Some(memory_total_mb),
        battery_percent: power.battery_percent,
        on_external_power: power.on_external_power,
        low_power_mode,
        thermal_state: thermal_state(&root.join("sys/class/thermal")),
        device_type,
        sandbox_ready: true,
        active_model: None,
        models: Vec::new(),
        accelerator: None,
        model_status: Vec::new(),
    }
}

/// What a registration declares.
pub fn capabilities() -> Capabilities {
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .map(|m| parse_meminfo(&m).0)
        .unwrap_or(0);
    Capabilities {
        sandbox: Sandbox::Wasmtime,
        // The coordinator's accepted ranges (1 to 4096 cores, up to 16 TiB).
        cpu_cores: cpu_cores().clamp(1, 4096),
        memory_mb: memory_mb.min(1 << 24),
        gpu: None,
        models: Vec::new(),
    }
}

/// Logical CPUs available to this process.
pub fn cpu_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// `(MemTotal, MemAvailable)` in MiB. Without `MemAvailable` (very old
/// kernels) free memory stands in.
fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total_kb = field("MemTotal").unwrap_or(0);
    let available_kb = field("MemAvailable")
        .or_else(|| field("MemFree"))
        .unwrap_or(0);
    (total_kb / 1024, available_kb / 1024)
}

struct Power {
    battery_percent: Option<f64>,
    on_external_power: bool,
}

fn read_power(dir: &Path) -> Power {
    let mut battery = None;
    let mut mains_online = false;
    let mut charging = false;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
            match read("type").as_deref().map(str::trim) {
                Some("Battery") => {
                    if let Some(c) = read("capacity").and_then(|c| c.trim().parse::<f64>().ok()) {
                        battery = Some(c.clamp(0.0, 100.0));
                    }
                    charging |=
                        read("status").is_some_and(|s| matches!(s.trim(), "Charging" | "Full"));
                }
                Some("Mains" | "USB" | "USB_C" | "USB_PD") => {
                    mains_online |= read("online").is_some_and(|o| o.trim() == "1");
                }
                _ => {}
            }
        }
    }
    Power {
        battery_percent: battery,
        // No battery means the device runs on external power.
        on_external_power: battery.is_none() || mains_online || charging,
    }
}

fn thermal_state(dir: &Path) -> Thermal {
    let hottest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("temp")).ok())
        // Millidegrees Celsius.
        .filter_map(|t| t.trim().parse::<i64>().ok())
        .map(|milli| milli as f64 / 1000.0)
        .fold(None, |max: Option<f64>, t| {
            Some(max.map_or(t, |m| m.max(t)))
        });
    match hottest {
        Some(t) if t >= THERMAL_STEPS_C[2] => Thermal::Critical,
        Some(t) if t >= THERMAL_STEPS_C[1] => Thermal::Serious,
        Some(t) if t >= THERMAL_STEPS_C[0] => Thermal::Fair,
        _ => Thermal::Nominal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn readings_come_from_the_files() {
        let mut suffix = [0u8; 8];
        crate::node::random_bytes(&mut suffix).expect("randomness");
        let root = std::env::temp_dir().join(format!(
            "edgecoder-telemetry-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        write(&root, "proc/loadavg", "1.00 0.50 0.25 1/100 42\n");
        write(
            &root,
            "proc/meminfo",
            "MemTotal:       8192000 kB\nMemFree:  100 kB\nMemAvailable:   2048000 kB\n",
        );
        write(&root, "sys/class/power_supply/BAT0/type", "Battery\n");
        write(&root, "sys/class/power_supply/BAT0/capacity", "57\n");
        write(&root, "sys/class/power_supply/BAT0/status", "Discharging\n");
        write(&root, "sys/class/power_supply/AC/type", "Mains\n");
        write(&root, "sys/class/power_supply/AC/online", "0\n");
        write(&root, "sys/class/thermal/thermal_zone0/temp", "45000\n");
        write(&root, "sys/class/thermal/thermal_zone1/temp", "82000\n");
        write(&root, "sys/firmware/acpi/platform_profile", "low-power\n");

        let t = sample_from(&root, DeviceType::Laptop, 4);
        assert!((t.cpu_percent - 25.0).abs() < 1e-9);
        assert_eq!((t.memory_total_mb, t.memory_used_mb), (Some(8000), 6000));
        assert_eq!(t.battery_percent, Some(57.0));
        assert!(!t.on_external_power);
        assert!(t.low_power_mode);
        assert_eq!(t.thermal_state, Thermal::Serious);
        assert_eq!(t.device_type, DeviceType::Laptop);
        assert!(t.sandbox_ready);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn missing_files_give_defaults() {
        let t = sample_from(
            Path::new("/nonexistent-edgecoder-root"),
            DeviceType::Server,
            2,
        );
        assert_eq!(t.cpu_percent, 0.0);
        assert_eq!(t.battery_percent, None);
        assert!(t.on_external_power);
        assert!(!t.low_power_mode);
        assert_eq!(t.thermal_state, Thermal::Nominal);
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["battery_percent"], serde_json::Value::Null);
        assert_eq!(json["active_model"], serde_json::Value::Null);
    }
}
