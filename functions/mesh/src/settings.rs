//! The mesh function's own settings, parsed and validated from the same
//! [`ConfigSource`] as the kernel's [`Config`]; the gateway loads them at
//! start and hands them to handlers through `Services` ([`Settings::of`]).
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `mesh_node_rate_per_minute` | var | `600` | signed requests one node may make per minute (1–100000); more get 429 |
//! | `mesh_register_per_minute` | var | `30` | node registrations per client address per minute (1–100000) |
//! | `mesh_max_attempts` | var | `3` | leases a task gets before it fails with `attempts_exhausted` (1–20) |
//! | `mesh_lease_grace_ms` | var | `30000` | a lease lasts the task's timeout plus this (0–600000) |

use edgecoder_kernel::config::Vars;
use edgecoder_kernel::{ConfigSource, Error, Services};

/// The mesh function's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Signed requests per node per minute.
    pub node_rate_per_minute: i64,
    /// Registrations per client address per minute.
    pub register_per_minute: i64,
    /// Leases a task gets before it fails.
    pub max_attempts: i64,
    /// Time added to a task's timeout for its lease.
    pub lease_grace_ms: i64,
}

impl Settings {
    /// Loads and validates the mesh settings.
    pub fn load(src: &dyn ConfigSource) -> Result<Settings, Error> {
        let vars = Vars(src);
        Ok(Settings {
            node_rate_per_minute: vars.bounded("mesh_node_rate_per_minute", 600, 1, 100_000)?,
            register_per_minute: vars.bounded("mesh_register_per_minute", 30, 1, 100_000)?,
            max_attempts: vars.bounded("mesh_max_attempts", 3, 1, 20)?,
            lease_grace_ms: vars.bounded("mesh_lease_grace_ms", 30_000, 0, 600_000)?,
        })
    }

    /// The settings the gateway loaded into `s`; a configuration error (503)
    /// where a runtime serves the mesh routes without them.
    pub fn of(s: &Services) -> Result<&Settings, Error> {
        s.settings
            .get::<Settings>()
            .ok_or_else(|| Error::Config("the mesh settings were not loaded".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, &'static str>);
    impl ConfigSource for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn defaults_and_refusals_by_name() {
        let s = Settings::load(&Map(HashMap::new())).expect("defaults");
        assert_eq!((s.node_rate_per_minute, s.max_attempts), (600, 3));
        for (k, v) in [
            ("mesh_node_rate_per_minute", "0"),
            ("mesh_register_per_minute", "many"),
            ("mesh_max_attempts", "21"),
            ("mesh_lease_grace_ms", "-5"),
        ] {
            let err = Settings::load(&Map(HashMap::from([(k, v)]))).expect_err("refused");
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
        }
    }
}
