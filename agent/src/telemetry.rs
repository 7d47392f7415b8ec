//! Heartbeat telemetry from what Linux offers cheaply.
//!
//! In scope: CPU load (`/proc/loadavg` over the core count), memory
//! (`/proc/meminfo`), battery and mains power (`/sys/class/power_supply`), a
//! low-power profile (`/sys/firmware/acpi/platform_profile`) and thermal state
//! (the hottest `/sys/class/thermal` zone). Every reading has a default when
//! the file is missing (containers, other systems): the heartbeat must go out
//! regardless.
//!
//! The device class is detected once (`init`) and saved: on Linux from the
//! SMBIOS chassis type, a battery, or a hypervisor or container (servers);
//! on macOS from the model name (`MacBook…` is a laptop).
//!
//! Out of scope: sampling over time, per-process accounting; other
//! platforms' readings (they send the defaults).

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

/// The device class and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The class.
    pub device_type: DeviceType,
    /// What it was read from, for the owner to check.
    pub reason: String,
}

/// Detects this machine's device class.
pub fn detect_device_type() -> Detected {
    if cfg!(target_os = "macos") {
        let model = std::process::Command::new("sysctl")
            .args(["-n", "hw.model"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        return detect_mac(&model);
    }
    detect_from(Path::new("/"))
}

/// On macOS, from `sysctl hw.model` (`MacBookPro18,1`, `Mac14,3`, ...).
pub fn detect_mac(model: &str) -> Detected {
    let device_type = if model.starts_with("MacBook") {
        DeviceType::Laptop
    } else {
        // Newer models are all `MacNN,N`; the laptop ones also have a
        // battery, which `pmset` would show, but a desktop's idle-only
        // policy is the safe side of that doubt.
        DeviceType::Desktop
    };
    Detected {
        device_type,
        reason: format!("macOS model {model:?}"),
    }
}

/// On Linux, from a filesystem rooted at `root` (tests point it at a fake
/// tree): a battery means a laptop whatever the chassis says; then the
/// SMBIOS chassis type; then a hypervisor's or a container's marks (a
/// server); anything else a desktop, whose policy takes work only when
/// idle, never a server's, which takes it always.
pub fn detect_from(root: &Path) -> Detected {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    if read_power(&root.join("sys/class/power_supply"))
        .battery_percent
        .is_some()
    {
        return Detected {
            device_type: DeviceType::Laptop,
            reason: "a battery in /sys/class/power_supply".into(),
        };
    }
    let chassis = read("sys/class/dmi/id/chassis_type").and_then(|c| c.parse::<u32>().ok());
    // SMBIOS 3.x, System Enclosure or Chassis Types.
    let by_chassis = chassis.and_then(|c| match c {
        8 | 9 | 10 | 14 | 31 | 32 => Some(DeviceType::Laptop),
        30 => Some(DeviceType::Tablet),
        11 => Some(DeviceType::Phone),
        17 | 23 | 25 | 28 | 29 => Some(DeviceType::Server),
        3..=7 | 13 | 15 | 16 | 24 | 34..=36 => Some(DeviceType::Desktop),
        _ => None,
    });
    if let (Some(device_type), Some(c)) = (by_chassis, chassis) {
        return Detected {
            device_type,
            reason: format!("SMBIOS chassis type {c}"),
        };
    }
    let vendor = read("sys/class/dmi/id/sys_vendor").unwrap_or_default();
    let product = read("sys/class/dmi/id/product_name").unwrap_or_default();
    let virtual_machine = [
        "QEMU",
        "Amazon EC2",
        "Google",
        "Xen",
        "DigitalOcean",
        "Hetzner",
        "VMware, Inc.",
        "OpenStack Foundation",
    ]
    .iter()
    .any(|v| vendor.starts_with(v))
        || product == "Virtual Machine"
        || root.join("sys/hypervisor/type").exists();
    if virtual_machine {
        return Detected {
            device_type: DeviceType::Server,
            reason: format!("a virtual machine ({vendor} {product})").replace(" )", ")"),
        };
    }
    if root.join(".dockerenv").exists() || root.join("run/.containerenv").exists() {
        return Detected {
            device_type: DeviceType::Server,
            reason: "a container".into(),
        };
    }
    Detected {
        device_type: DeviceType::Desktop,
        reason: "nothing conclusive (no battery, chassis or hypervisor found)".into(),
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

    fn fake_root(tag: &str) -> std::path::PathBuf {
        let mut suffix = [0u8; 8];
        crate::node::random_bytes(&mut suffix).expect("randomness");
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        std::env::temp_dir().join(format!("edgecoder-detect-{tag}-{hex}"))
    }

    // The default this agent once had: every device called itself a
    // server, which gives a laptop a server's always-on policy.
    #[test]
    fn a_laptop_is_detected_by_its_battery_or_chassis_not_called_a_server() {
        let root = fake_root("battery");
        write(&root, "sys/class/power_supply/BAT0/type", "Battery\n");
        write(&root, "sys/class/power_supply/BAT0/capacity", "80\n");
        write(&root, "sys/class/dmi/id/chassis_type", "3\n");
        assert_eq!(detect_from(&root).device_type, DeviceType::Laptop);
        let root = fake_root("notebook");
        write(&root, "sys/class/dmi/id/chassis_type", "10\n");
        let d = detect_from(&root);
        assert_eq!(d.device_type, DeviceType::Laptop);
        assert!(d.reason.contains("chassis type 10"), "{d:?}");
    }

    #[test]
    fn servers_desktops_and_the_undecided() {
        let root = fake_root("rack");
        write(&root, "sys/class/dmi/id/chassis_type", "23\n");
        assert_eq!(detect_from(&root).device_type, DeviceType::Server);
        let root = fake_root("tower");
        write(&root, "sys/class/dmi/id/chassis_type", "7\n");
        assert_eq!(detect_from(&root).device_type, DeviceType::Desktop);
        let root = fake_root("kvm");
        write(&root, "sys/class/dmi/id/chassis_type", "1\n");
        write(&root, "sys/class/dmi/id/sys_vendor", "QEMU\n");
        assert_eq!(detect_from(&root).device_type, DeviceType::Server);
        let root = fake_root("container");
        write(&root, ".dockerenv", "");
        assert_eq!(detect_from(&root).device_type, DeviceType::Server);
        // Nothing to go on: idle-only, never a server's always-on policy.
        let root = fake_root("empty");
        std::fs::create_dir_all(&root).expect("mkdir");
        assert_eq!(detect_from(&root).device_type, DeviceType::Desktop);
        assert_eq!(detect_mac("MacBookAir10,1").device_type, DeviceType::Laptop);
        assert_eq!(detect_mac("Mac14,3").device_type, DeviceType::Desktop);
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
