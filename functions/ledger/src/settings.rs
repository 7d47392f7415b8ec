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
//! | `checkpoint_ed25519_key` | secret | derived from `checkpoint_key` | the log's Ed25519 seed (base64, 32 bytes): checkpoints carry a second signature line with it (signed-note type `0x01`, the only log key type deployed C2SP witnesses accept); its verifier key is published at `/ledger/keys` |
//! | `log_origin` | var | the issuer's host + `/ledger` | the log's name: the checkpoint origin line and key name; distinct per deployment, since witnesses track logs by it |
//! | `log_witnesses` | var | `[]` | JSON array of `{"vkey": "<name>+<id>+<base64>", "url": "<submission prefix>"}`: the c2sp.org/tlog-witness witnesses asked to cosign each new checkpoint (`POST <url>/add-checkpoint`); their cosignatures are served with the checkpoint |
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
    /// The Ed25519 log key, when there is a checkpoint key.
    pub checkpoint_ed25519: Option<ed25519_dalek::SigningKey>,
    /// The log's origin line, if set (else the issuer's host + `/ledger`).
    pub log_origin: Option<String>,
    /// The witnesses asked to cosign.
    pub witnesses: Vec<Witness>,
}

/// A witness the log asks to cosign its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// Its key name.
    pub name: String,
    /// Its verifier key (`cosignature/v1`).
    pub vkey: String,
    /// Its submission prefix (`<url>/add-checkpoint`).
    pub url: String,
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
        let ed_seed = match Vars(src).secret("checkpoint_ed25519_key") {
            Some(b64) => Some(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        Error::Config(
                            "checkpoint_ed25519_key must be 32 bytes of base64 (an Ed25519 seed)"
                                .into(),
                        )
                    })?,
            ),
            None => checkpoint_keys.current.as_ref().map(|k| {
                blake3::derive_key(
                    "edgecoder checkpoint ed25519 key v1",
                    &k.ecdsa().to_bytes()[..],
                )
            }),
        };
        let log_origin = match Vars(src).var("log_origin") {
            Some(o)
                if !o.is_empty()
                    && o.len() <= 256
                    && !o
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '+') =>
            {
                Some(o)
            }
            Some(_) => {
                return Err(Error::Config(
                    "log_origin is a name without spaces or `+` (e.g. example.com/ledger)".into(),
                ));
            }
            None => None,
        };
        let witnesses = match Vars(src).var("log_witnesses") {
            None => Vec::new(),
            Some(json) => parse_witnesses(&json)?,
        };
        Ok(Settings {
            checkpoint_ed25519: ed_seed.map(|s| ed25519_dalek::SigningKey::from_bytes(&s)),
            log_origin,
            witnesses,
            checkpoint_keys,
            checkpoint_interval_ms: Vars(src).bounded(
                "checkpoint_interval_ms",
                1000,
                0,
                3_600_000,
            )?,
        })
    }

    /// The Ed25519 log key's verifier key under `name`.
    pub fn ed25519_vkey(&self, name: &str) -> Option<String> {
        self.checkpoint_ed25519.as_ref().and_then(|k| {
            edgecoder_tlog::checkpoint::NoteKey::Ed25519(k.verifying_key()).vkey(name)
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

fn parse_witnesses(json: &str) -> Result<Vec<Witness>, Error> {
    use edgecoder_tlog::checkpoint::NoteKey;
    let bad = |why: &str| Error::Config(format!("log_witnesses: {why}"));
    let list: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|_| bad("a JSON array of {vkey, url}"))?;
    list.iter()
        .map(|w| {
            let vkey = w["vkey"].as_str().ok_or_else(|| bad("each has a vkey"))?;
            let url = w["url"]
                .as_str()
                .map(|u| u.trim_end_matches('/'))
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .ok_or_else(|| bad("each has an http(s) url"))?;
            let key = NoteKey::parse_vkey(vkey).map_err(|_| bad("a vkey is malformed"))?;
            if !matches!(key.key, NoteKey::CosignatureV1(_)) {
                return Err(bad("a vkey is not a cosignature/v1 (type 0x04) key"));
            }
            Ok(Witness {
                name: key.name,
                vkey: vkey.to_owned(),
                url: url.to_owned(),
            })
        })
        .collect()
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
