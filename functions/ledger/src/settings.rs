//! The ledger function's own settings, parsed and validated from the same
//! [`ConfigSource`] as the kernel's `Config`; the gateway loads them at
//! start and hands them to handlers through `Services` ([`Settings::of`]).
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `checkpoint_interval_ms` | var | `1000` | the ledger signs a new checkpoint at most this often on reads (0–3600000); `POST /ledger/checkpoint` signs at once |

use edgecoder_kernel::config::Vars;
use edgecoder_kernel::{ConfigSource, Error, Services};

/// The ledger function's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Minimum time between two automatically signed checkpoints.
    pub checkpoint_interval_ms: i64,
}

impl Settings {
    /// Loads and validates the ledger settings.
    pub fn load(src: &dyn ConfigSource) -> Result<Settings, Error> {
        Ok(Settings {
            checkpoint_interval_ms: Vars(src).bounded(
                "checkpoint_interval_ms",
                1000,
                0,
                3_600_000,
            )?,
        })
    }

    /// The settings the gateway loaded into `s`; a configuration error (503)
    /// where a runtime serves the ledger routes without them.
    pub fn of(s: &Services) -> Result<&Settings, Error> {
        s.settings
            .get::<Settings>()
            .ok_or_else(|| Error::Config("the ledger settings were not loaded".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str);
    impl ConfigSource for One {
        fn var(&self, name: &str) -> Option<String> {
            (name == "checkpoint_interval_ms").then(|| self.0.to_owned())
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn the_interval_is_bounded() {
        assert_eq!(
            Settings::load(&One("0"))
                .expect("ok")
                .checkpoint_interval_ms,
            0
        );
        for bad in ["-1", "soon", "3600001"] {
            let err = Settings::load(&One(bad)).expect_err("refused");
            assert!(
                err.to_string().contains("checkpoint_interval_ms"),
                "{bad}: {err}"
            );
        }
    }
}
