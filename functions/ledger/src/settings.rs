//! The ledger function's own settings, parsed and validated from the same
//! [`ConfigSource`] as the kernel's `Config`; the gateway loads them at
//! start and hands them to handlers through `Services` ([`Settings::of`]).
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `checkpoint_key` | secret | — | the log's own P-256 key (PKCS#8 PEM or one-line base64 DER) that signs checkpoints, published at `/ledger/keys`; required in production, and never the access-token `signing_key` |
//! | `previous_checkpoint_key` | secret | — | the key `checkpoint_key` replaced (rotation with overlap; only its public half is used, to open older checkpoints) |
//! | `previous_checkpoint_key_retired_at` | var | — | Unix seconds when `checkpoint_key` took over; required with `previous_checkpoint_key` |
//!
//! Rotating `checkpoint_key`: keep `previous_checkpoint_key` until the log has
//! signed a checkpoint with the new key (the next append and checkpoint do).
//! The log opens its newest signed checkpoint with its own keys before it
//! signs another, so dropping the old key while the newest checkpoint is
//! still signed by it stops checkpoints (503 `history_rewritten`).
//! | `checkpoint_interval_ms` | var | `1000` | the ledger signs a new checkpoint at most this often on reads (0–3600000); `POST /ledger/checkpoint` signs at once |

use edgecoder_kernel::config::{Mode, Vars};
use edgecoder_kernel::keys::KeySet;
use edgecoder_kernel::{Config, ConfigSource, Error, Services};

/// The ledger function's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The checkpoint key and the one it replaced.
    pub checkpoint_keys: KeySet,
    /// Minimum time between two automatically signed checkpoints.
    pub checkpoint_interval_ms: i64,
}

impl Settings {
    /// Loads and validates the ledger settings.
    pub fn load(src: &dyn ConfigSource, config: &Config) -> Result<Settings, Error> {
        let checkpoint_keys = Vars(src).key_set(
            "checkpoint_key",
            "previous_checkpoint_key",
            "previous_checkpoint_key_retired_at",
        )?;
        if config.mode == Mode::Production && checkpoint_keys.current.is_none() {
            return Err(Error::Config(
                "production mode requires the checkpoint_key secret (the log's own key)".into(),
            ));
        }
        if let (Some(c), Some(a)) = (&checkpoint_keys.current, &config.signing_key)
            && c.kid() == a.kid()
        {
            return Err(Error::Config(
                "checkpoint_key must not be the access-token signing_key (one key per job)".into(),
            ));
        }
        Ok(Settings {
            checkpoint_keys,
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
            match name {
                "checkpoint_interval_ms" => Some(self.0.to_owned()),
                "mode" => Some("development".to_owned()),
                _ => None,
            }
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn load(src: &One) -> Result<Settings, Error> {
        Settings::load(src, &Config::load(src).expect("kernel config"))
    }

    #[test]
    fn the_interval_is_bounded() {
        assert_eq!(load(&One("0")).expect("ok").checkpoint_interval_ms, 0);
        for bad in ["-1", "soon", "3600001"] {
            let err = load(&One(bad)).expect_err("refused");
            assert!(
                err.to_string().contains("checkpoint_interval_ms"),
                "{bad}: {err}"
            );
        }
    }
}
