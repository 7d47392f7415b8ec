//! The mesh function's own settings, parsed and validated from the same
//! [`ConfigSource`] as the kernel's [`Config`]; the gateway loads them at
//! start and hands them to handlers through `Services` ([`Settings::of`]).
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `coordinator_key` | secret | — | this coordinator's identity key (P-256, PKCS#8 PEM or one-line base64 DER), published at `/mesh/identity`; required in production, and never the access-token `signing_key` nor the log's `checkpoint_key` |
//! | `previous_coordinator_key` | secret | — | the key `coordinator_key` replaced (rotation with overlap): it signs the rotation statement `/mesh/identity` publishes, which is how peers learn the new key |
//! | `previous_coordinator_key_retired_at` | var | — | Unix seconds when `coordinator_key` took over; required with `previous_coordinator_key` |
//! | `witness_key` | secret | derived from `coordinator_key` | the Ed25519 seed (base64, 32 bytes) this coordinator cosigns other logs' checkpoints with (c2sp.org/tlog-cosignature `cosignature/v1`, which is Ed25519 only); its verifier key is published at `/mesh/identity` |
//! | `mesh_federation_interval_secs` | var | `60` | each active peer's log is pulled at least this often (1–86400); a push asks for a pull at once |
//! | `mesh_reputation_half_life_hours` | var | `24` | how fast a node's reputation events fade (1–8760) |
//! | `mesh_reputation_throttle_below` | var | `30` | below this score (0–100) a node's pulls get work only with probability score / threshold |
//! | `mesh_reputation_suspend_below` | var | `10` | below this score (0–100, at most the throttle) a node is suspended pending an operator's review |
//! | `mesh_node_rate_per_minute` | var | `600` | signed requests one node may make per minute (1–100000); more get 429 |
//! | `mesh_register_per_minute` | var | `30` | node registrations per client address per minute (1–100000) |
//! | `mesh_max_attempts` | var | `3` | leases a task gets before it fails with `attempts_exhausted` (1–20) |
//! | `mesh_lease_grace_ms` | var | `30000` | a lease lasts the task's timeout plus this (0–600000) |
//! | `mesh_origins` | var | the `issuer` in production; any in development | comma-separated origins (`https://host[:port]`) node signatures must name in `@target-uri` / `@authority`: a request signed for another coordinator is refused (421 `misdirected_request`) even where the same key is registered |
//!
//! | `mesh_queue_ttl_secs` | var | `86400` | a task no node has taken this long after its submission fails with `queue_expired` and is refunded (60–2592000) |
//! | `economy_prices` | var | `{"fee_bps":500,"kinds":{"wasm":{"base":10,"per_second":1,"per_256_mib":1},"inference":{"base":20,"per_second":2,"per_256_mib":1}}}` | the published price table (`GET /mesh/credits/prices`): a task's price per replica is `base + per_second × ⌈timeout_ms / 1000⌉ + per_256_mib × ⌈memory_mb / 256⌉`, and `fee_bps` of each payment goes to `fees` |
//! | `economy_epoch_secs` | var | `86400` | issuance epochs' length (60–2678400 seconds), aligned to the Unix epoch (UTC) |
//! | `economy_epoch_pool` | var | `10000` | credits each epoch issues to the owners of the nodes whose work it accepted (1–2^40); coordinators that cosign each other's closes must agree on it and on `economy_epoch_secs` |
//! | `economy_close_quorum` | var | `1` | coordinators (this one and its active peers) whose signatures make an epoch's close final (1–64) |
//!
//! `mesh_origins` is what nodes are told to sign for, so it must be the
//! origin they reach: a mesh served from another host than the issuer lists
//! that host, and a native server behind a proxy needs `trusted_proxies` (the
//! last `X-Forwarded-Host` / `-Proto` values count, those the nearest trusted
//! proxy wrote); otherwise every signed request is answered 421.

use edgecoder_kernel::config::{Mode, Vars, is_origin};
use edgecoder_kernel::keys::KeySet;
use edgecoder_kernel::{Config, ConfigSource, Error, Services};
use edgecoder_proto::httpsig::Target;

/// The mesh function's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The coordinator's identity key and the one it replaced.
    pub coordinator_keys: KeySet,
    /// Signed requests per node per minute.
    pub node_rate_per_minute: i64,
    /// Registrations per client address per minute.
    pub register_per_minute: i64,
    /// Leases a task gets before it fails.
    pub max_attempts: i64,
    /// Time added to a task's timeout for its lease.
    pub lease_grace_ms: i64,
    /// Longest time between two pulls of a peer's log.
    pub federation_interval_secs: i64,
    /// Reputation events' half-life.
    pub reputation_half_life_ms: i64,
    /// The score below which pulls are thinned.
    pub reputation_throttle_below: i64,
    /// The score below which a node is suspended.
    pub reputation_suspend_below: i64,
    /// The origins (lowercase `scheme://authority`) signed requests must be
    /// addressed to; empty accepts any (development only).
    pub origins: Vec<String>,
    /// The rotation statement (signed by the previous key) peers re-pin
    /// with, when a previous key and an origin are configured.
    pub rotation: Option<edgecoder_proto::model::Envelope>,
    /// The witness: its key name (`host[:port]/mesh/witness`) and Ed25519
    /// key, when an origin and a key are configured.
    pub witness: Option<(String, ed25519_dalek::SigningKey)>,
    /// How long a task may wait in the queue.
    pub queue_ttl_ms: i64,
    /// The published price table.
    pub prices: edgecoder_proto::economy::PriceTable,
    /// Issuance epochs' length in seconds.
    pub epoch_secs: i64,
    /// Credits each epoch issues.
    pub epoch_pool: i64,
    /// Signatures that make a close final.
    pub close_quorum: i64,
}

/// `origin` as signatures name it (lowercase, default port dropped), if it
/// is an origin at all.
pub(crate) fn serialised(origin: &str) -> Option<String> {
    if !is_origin(origin) {
        return None;
    }
    Target::from_url("GET", &format!("{origin}/"))
        .ok()
        .map(|t| t.origin())
}

impl Settings {
    /// Loads and validates the mesh settings.
    pub fn load(src: &dyn ConfigSource, config: &Config) -> Result<Settings, Error> {
        let vars = Vars(src);
        let origins = match vars.var("mesh_origins") {
            Some(list) => {
                let refused = || {
                    Error::Config(
                        "mesh_origins must list https origins (scheme://host[:port], http only on localhost)"
                            .into(),
                    )
                };
                let origins = list
                    .split(',')
                    .map(|o| o.trim().trim_end_matches('/'))
                    .filter(|o| !o.is_empty())
                    .map(|o| serialised(o).ok_or_else(refused))
                    .collect::<Result<Vec<_>, _>>()?;
                if origins.is_empty() {
                    return Err(refused());
                }
                // Natively, without a trusted proxy, the authority is the
                // client's Host header: a loopback origin in production would
                // let anyone address a request "here".
                if config.mode == Mode::Production
                    && origins.iter().any(|o| !o.starts_with("https://"))
                {
                    return Err(Error::Config(
                        "mesh_origins must be https in production".into(),
                    ));
                }
                origins
            }
            None if config.mode == Mode::Production => {
                vec![
                    serialised(config.issuer.trim_end_matches('/')).ok_or_else(|| {
                        Error::Config("issuer is not an origin the mesh can serve".into())
                    })?,
                ]
            }
            None => Vec::new(),
        };
        let coordinator_keys = vars.key_set(
            "coordinator_key",
            "previous_coordinator_key",
            "previous_coordinator_key_retired_at",
        )?;
        if config.mode == Mode::Production && coordinator_keys.current.is_none() {
            return Err(Error::Config(
                "production mode requires the coordinator_key secret (the coordinator's identity key)"
                    .into(),
            ));
        }
        if let (Some(c), Some(a)) = (&coordinator_keys.current, &config.signing_key)
            && c.kid() == a.kid()
        {
            return Err(Error::Config(
                "coordinator_key must not be the access-token signing_key (one key per job)".into(),
            ));
        }
        let rotation = match (
            &coordinator_keys.current,
            &coordinator_keys.previous,
            vars.secret("previous_coordinator_key"),
            origins.first(),
        ) {
            (Some(current), Some((_, at)), Some(previous), Some(origin)) => {
                let previous =
                    edgecoder_kernel::SigningKey::from_secret(&previous).map_err(|_| {
                        Error::Config("previous_coordinator_key is not a P-256 private key".into())
                    })?;
                Some(edgecoder_proto::federation::Rotation::sign(
                    origin,
                    previous.ecdsa(),
                    current.ecdsa(),
                    *at,
                ))
            }
            _ => None,
        };
        let witness_seed = match vars.secret("witness_key") {
            Some(b64) => Some(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        Error::Config(
                            "witness_key must be 32 bytes of base64 (an Ed25519 seed)".into(),
                        )
                    })?,
            ),
            // One secret fewer to manage: a key of its own, derived so that
            // neither key reveals the other.
            None => coordinator_keys.current.as_ref().map(|k| {
                blake3::derive_key(
                    "edgecoder coordinator witness key v1",
                    &k.ecdsa().to_bytes()[..],
                )
            }),
        };
        let witness = match (witness_seed, origins.first()) {
            (Some(seed), Some(origin)) => Some((
                format!(
                    "{}/mesh/witness",
                    origin
                        .split_once("://")
                        .map_or(origin.as_str(), |(_, rest)| rest)
                ),
                ed25519_dalek::SigningKey::from_bytes(&seed),
            )),
            _ => None,
        };
        let throttle = vars.bounded("mesh_reputation_throttle_below", 30, 0, 100)?;
        let suspend = vars.bounded("mesh_reputation_suspend_below", 10, 0, 100)?;
        if suspend > throttle {
            return Err(Error::Config(
                "mesh_reputation_suspend_below must not be above mesh_reputation_throttle_below"
                    .into(),
            ));
        }
        let prices = match vars.var("economy_prices") {
            None => edgecoder_proto::economy::PriceTable::default(),
            Some(text) => {
                let table: edgecoder_proto::economy::PriceTable = serde_json::from_str(&text)
                    .map_err(|e| {
                        Error::Config(format!("economy_prices is not a price table: {e}"))
                    })?;
                table
                    .validate()
                    .map_err(|e| Error::Config(format!("economy_prices: {e}")))?;
                table
            }
        };
        Ok(Settings {
            prices,
            queue_ttl_ms: vars.bounded("mesh_queue_ttl_secs", 86_400, 60, 2_592_000)? * 1000,
            epoch_secs: vars.bounded("economy_epoch_secs", 86_400, 60, 2_678_400)?,
            epoch_pool: vars.bounded("economy_epoch_pool", 10_000, 1, 1 << 40)?,
            close_quorum: vars.bounded("economy_close_quorum", 1, 1, 64)?,
            coordinator_keys,
            rotation,
            witness,
            origins,
            node_rate_per_minute: vars.bounded("mesh_node_rate_per_minute", 600, 1, 100_000)?,
            register_per_minute: vars.bounded("mesh_register_per_minute", 30, 1, 100_000)?,
            max_attempts: vars.bounded("mesh_max_attempts", 3, 1, 20)?,
            lease_grace_ms: vars.bounded("mesh_lease_grace_ms", 30_000, 0, 600_000)?,
            federation_interval_secs: vars.bounded(
                "mesh_federation_interval_secs",
                60,
                1,
                86_400,
            )?,
            reputation_half_life_ms: vars.bounded(
                "mesh_reputation_half_life_hours",
                24,
                1,
                8760,
            )? * 3600
                * 1000,
            reputation_throttle_below: throttle,
            reputation_suspend_below: suspend,
        })
    }

    /// The origin this coordinator federates as (the first of
    /// `mesh_origins`), or `federation_not_configured`.
    pub fn origin(&self) -> Result<&str, crate::Error> {
        self.origins
            .first()
            .map(String::as_str)
            .ok_or(crate::Error::FederationUnconfigured)
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
        fn secret(&self, name: &str) -> Option<String> {
            (name == "coordinator_key" && self.0.contains_key("with_coordinator_key")).then(|| {
                struct Sevens;
                impl edgecoder_kernel::Rng for Sevens {
                    fn fill(&self, buf: &mut [u8]) {
                        buf.fill(7);
                    }
                }
                edgecoder_kernel::SigningKey::generate(&Sevens)
                    .to_pkcs8_base64()
                    .expect("key")
            })
        }
    }

    fn load(map: HashMap<&'static str, &'static str>) -> Result<Settings, Error> {
        let mut with_key = map.clone();
        with_key.insert("mode", "development");
        let config = Config::load(&Map(with_key)).expect("kernel config");
        Settings::load(&Map(map), &config)
    }

    #[test]
    fn origins_default_to_the_issuer_in_production_and_are_checked() {
        assert!(load(HashMap::new()).expect("dev").origins.is_empty());
        let mut production =
            Config::load(&Map(HashMap::from([("mode", "development")]))).expect("kernel config");
        production.mode = Mode::Production;
        production.issuer = "https://Edge.example".into();
        let err = Settings::load(&Map(HashMap::new()), &production).expect_err("no key");
        assert!(err.to_string().contains("coordinator_key"), "{err}");
        let keyed = Map(HashMap::from([("with_coordinator_key", "")]));
        let s = Settings::load(&keyed, &production).expect("production");
        assert_eq!(s.origins, ["https://edge.example"]);
        let loopback = Map(HashMap::from([
            ("mesh_origins", "http://localhost:8787"),
            ("with_coordinator_key", ""),
        ]));
        let err = Settings::load(&loopback, &production).expect_err("http in production");
        assert!(err.to_string().contains("mesh_origins"), "{err}");
        let s = load(HashMap::from([(
            "mesh_origins",
            "https://Mesh.example:443/, http://localhost:8787",
        )]))
        .expect("listed");
        assert_eq!(s.origins, ["https://mesh.example", "http://localhost:8787"]);
        for bad in ["http://mesh.example", "https://mesh.example/path", " , "] {
            let err = load(HashMap::from([("mesh_origins", bad)])).expect_err(bad);
            assert!(err.to_string().contains("mesh_origins"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_and_refusals_by_name() {
        let s = load(HashMap::new()).expect("defaults");
        assert_eq!((s.node_rate_per_minute, s.max_attempts), (600, 3));
        for (k, v) in [
            ("mesh_node_rate_per_minute", "0"),
            ("mesh_register_per_minute", "many"),
            ("mesh_max_attempts", "21"),
            ("mesh_lease_grace_ms", "-5"),
            ("economy_prices", "{\"fee_bps\": 20000, \"kinds\": {}}"),
            (
                "economy_prices",
                "{\"fee_bps\": 5, \"kinds\": {\"wasm\": {\"base\": 0, \"per_second\": 0, \"per_256_mib\": 0}}}",
            ),
            ("economy_epoch_secs", "59"),
            ("economy_close_quorum", "0"),
        ] {
            let err = load(HashMap::from([(k, v)])).expect_err("refused");
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
        }
    }
}
