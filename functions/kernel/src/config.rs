//! Typed configuration, loaded from the platform's settings and secret store.
//!
//! In scope: parsing and validating every kernel setting, the production-mode
//! rules (required secrets present, nothing `insecure_*` enabled) and the list of
//! warnings a runtime logs at start. Out of scope: where settings come from (the
//! [`ConfigSource`] port) and function-specific settings (each function reads its
//! own through the same port).
//!
//! Setting names are lowercase snake case because Spin variables must be; the
//! native runtime reads them as `EDGECODER_<NAME>` environment variables and the
//! Worker as `EDGECODER_<NAME>` vars and secrets.
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `mode` | var | `production` | `production` or `development` |
//! | `signing_key` | secret | — | P-256 PKCS#8 PEM (or one-line base64 DER); required in production |
//! | `previous_signing_key` | secret | — | the key `signing_key` replaced, same format; only its public half is used |
//! | `previous_key_retired_at` | var | — | Unix seconds when `signing_key` took over; required with `previous_signing_key` |
//!
//! Key rotation: put the new key in `signing_key`, the old one in
//! `previous_signing_key` and the switch time in `previous_key_retired_at`.
//! The old public key stays published (JWKS) and trusted until every token it
//! signed has expired, then drops out by itself; remove the two settings at
//! leisure. Outside verifiers that cache the JWKS (up to 5 minutes) should
//! refetch it when they meet an unknown `kid`.

use ipnet::IpNet;

use crate::{ConfigSource, Error, SigningKey};

/// Default request body cap in bytes (256 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// Deployment mode. Production is the default: anything weaker must be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real deployment: required secrets enforced, insecure settings refused.
    Production,
    /// Local development and tests.
    Development,
}

impl Mode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Production => "production",
            Mode::Development => "development",
        }
    }
}

/// The kernel's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deployment mode.
    pub mode: Mode,
    /// Request body cap in bytes.
    pub max_body_bytes: usize,
    /// Proxies whose `X-Forwarded-For` is believed (native runtime only).
    pub trusted_proxies: Vec<IpNet>,
    /// Whether the conformance echo routes are mounted.
    pub insecure_test_routes: bool,
    /// The function's signing key, when configured.
    pub signing_key: Option<SigningKey>,
    /// The key the signing key replaced, and when (Unix seconds).
    pub previous_key: Option<(p256::ecdsa::VerifyingKey, i64)>,
    /// Weakened settings in force, for the runtime to log at start.
    pub warnings: Vec<String>,
}

fn parse_bool(name: &str, raw: &str) -> Result<bool, Error> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(Error::Config(format!("{name} must be true or false"))),
    }
}

impl Config {
    /// Loads and validates settings. In production mode a missing or invalid
    /// required secret, or any `insecure_*` setting, is an error: the function
    /// must refuse to serve rather than run weakened.
    pub fn load(src: &dyn ConfigSource) -> Result<Config, Error> {
        let mode = match src.var("mode").as_deref().map(str::trim) {
            None | Some("") | Some("production") => Mode::Production,
            Some("development") => Mode::Development,
            Some(_) => {
                return Err(Error::Config(
                    "mode must be production or development".into(),
                ));
            }
        };
        let max_body_bytes = match src.var("max_body_bytes") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1024..=16 * 1024 * 1024).contains(n))
                .ok_or_else(|| {
                    Error::Config("max_body_bytes must be an integer from 1024 to 16777216".into())
                })?,
        };
        let mut trusted_proxies = Vec::new();
        for item in src.var("trusted_proxies").unwrap_or_default().split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| Error::Config("trusted_proxies must list IPs or CIDRs".into()))?;
            trusted_proxies.push(net);
        }
        let insecure_test_routes = match src.var("insecure_test_routes") {
            Some(raw) => parse_bool("insecure_test_routes", &raw)?,
            None => false,
        };
        let signing_key = match src.secret("signing_key") {
            Some(v) if !v.trim().is_empty() => Some(SigningKey::from_secret(&v)?),
            _ => None,
        };

        let previous_key = match (
            src.secret("previous_signing_key")
                .filter(|v| !v.trim().is_empty()),
            src.var("previous_key_retired_at")
                .filter(|v| !v.trim().is_empty()),
        ) {
            (None, None) => None,
            (Some(key), Some(at)) => {
                let key = SigningKey::from_secret(&key).map_err(|_| {
                    Error::Config("previous_signing_key is not a P-256 private key".into())
                })?;
                let at = at.trim().parse::<i64>().map_err(|_| {
                    Error::Config("previous_key_retired_at must be Unix seconds".into())
                })?;
                Some((*key.verifying_key(), at))
            }
            _ => {
                return Err(Error::Config(
                    "previous_signing_key and previous_key_retired_at go together".into(),
                ));
            }
        };

        let mut warnings = Vec::new();
        if mode == Mode::Production {
            if signing_key.is_none() {
                return Err(Error::Config(
                    "production mode requires the signing_key secret".into(),
                ));
            }
            if insecure_test_routes {
                return Err(Error::Config(
                    "insecure_test_routes cannot be enabled in production mode".into(),
                ));
            }
        } else {
            warnings.push("mode=development: production checks are off".to_owned());
            if insecure_test_routes {
                warnings.push(
                    "insecure_test_routes=true: conformance echo routes are mounted".to_owned(),
                );
            }
        }
        Ok(Config {
            mode,
            max_body_bytes,
            trusted_proxies,
            insecure_test_routes,
            signing_key,
            previous_key,
            warnings,
        })
    }
}

impl Config {
    /// The public keys that verify access tokens at `now_ms`: the signing
    /// key, and the previous one while tokens it signed may still be alive.
    pub fn verification_keys(&self, now_ms: i64) -> Vec<&p256::ecdsa::VerifyingKey> {
        let mut keys: Vec<&p256::ecdsa::VerifyingKey> = self
            .signing_key
            .iter()
            .map(SigningKey::verifying_key)
            .collect();
        if let Some((key, retired_at)) = &self.previous_key {
            let last_valid_ms =
                (retired_at + crate::tokens::MAX_ACCESS_TOKEN_SECS + crate::tokens::LEEWAY_SECS)
                    .saturating_mul(1000);
            if now_ms <= last_valid_ms {
                keys.push(key);
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, String>);
    impl ConfigSource for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn secret(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn pem() -> String {
        struct R;
        impl crate::Rng for R {
            fn fill(&self, buf: &mut [u8]) {
                buf.fill(7);
            }
        }
        SigningKey::generate(&R).to_pkcs8_pem().expect("pem")
    }

    #[test]
    fn production_is_the_default_and_requires_the_signing_key() {
        let err = Config::load(&Map(HashMap::new())).expect_err("must refuse");
        assert!(err.to_string().contains("signing_key"));
    }

    #[test]
    fn production_with_key_loads() {
        let cfg = Config::load(&Map(HashMap::from([("signing_key", pem())]))).expect("ok");
        assert_eq!(cfg.mode, Mode::Production);
        assert!(cfg.warnings.is_empty());
        assert_eq!(cfg.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn production_refuses_insecure_test_routes() {
        let src = Map(HashMap::from([
            ("signing_key", pem()),
            ("insecure_test_routes", "true".to_owned()),
        ]));
        assert!(Config::load(&src).is_err());
    }

    #[test]
    fn development_warns_about_insecure_settings() {
        let src = Map(HashMap::from([
            ("mode", "development".to_owned()),
            ("insecure_test_routes", "true".to_owned()),
            ("trusted_proxies", "10.0.0.0/8, 127.0.0.1".to_owned()),
        ]));
        let cfg = Config::load(&src).expect("ok");
        assert_eq!(cfg.warnings.len(), 2);
        assert_eq!(cfg.trusted_proxies.len(), 2);
    }

    #[test]
    fn previous_key_is_trusted_until_its_tokens_have_expired() {
        let old = pem();
        let new = {
            struct R;
            impl crate::Rng for R {
                fn fill(&self, buf: &mut [u8]) {
                    buf.fill(9);
                }
            }
            SigningKey::generate(&R).to_pkcs8_pem().expect("pem")
        };
        let src = Map(HashMap::from([
            ("signing_key", new),
            ("previous_signing_key", old),
            ("previous_key_retired_at", "1000".to_owned()),
        ]));
        let cfg = Config::load(&src).expect("ok");
        let window_end_ms = (1000 + 15 * 60 + 30) * 1000;
        assert_eq!(cfg.verification_keys(window_end_ms).len(), 2);
        assert_eq!(cfg.verification_keys(window_end_ms + 1).len(), 1);
        assert_eq!(
            cfg.verification_keys(window_end_ms + 1)[0],
            cfg.signing_key.as_ref().expect("key").verifying_key()
        );
    }

    #[test]
    fn previous_key_without_its_retirement_time_is_refused() {
        let src = Map(HashMap::from([
            ("signing_key", pem()),
            ("previous_signing_key", pem()),
        ]));
        assert!(Config::load(&src).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for (k, v) in [
            ("mode", "staging"),
            ("max_body_bytes", "12"),
            ("trusted_proxies", "not-an-ip"),
            ("insecure_test_routes", "maybe"),
        ] {
            let src = Map(HashMap::from([
                ("mode", "development".to_owned()),
                (k, v.to_owned()),
            ]));
            assert!(Config::load(&src).is_err(), "{k}={v} must be refused");
        }
    }
}
