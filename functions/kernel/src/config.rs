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
//! | `max_body_bytes` | var | 262144 | request body cap, applied before parsing |
//! | `trusted_proxies` | var | empty | comma-separated IPs/CIDRs allowed to set `X-Forwarded-For` (native only) |
//! | `insecure_test_routes` | var | false | mounts the conformance echo route; refused in production |

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
            warnings,
        })
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
