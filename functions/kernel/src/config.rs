//! Typed configuration, loaded from the platform's settings and secret store.
//!
//! In scope: the settings every function needs (mode, body cap, proxies, the
//! signing keys, issuer and audience, browser origins, the service
//! credential), the production-mode rules for them (required secrets present,
//! nothing `insecure_*` enabled), the warnings a runtime logs at start, and
//! [`Vars`], the parsing helpers the functions' own settings use. Out of
//! scope: where settings come from (the [`ConfigSource`] port) and
//! function-specific settings: `auth::Settings`, `mesh::Settings` and
//! `ledger::Settings` parse their own from the same source, each with its
//! table in its crate's docs, and the gateway loads them together.
//!
//! Setting names are lowercase snake case because Spin variables must be; the
//! native runtime reads them as `EDGECODER_<NAME>` environment variables and the
//! Worker as `EDGECODER_<NAME>` vars and secrets.
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `mode` | var | `production` | `production` or `development` |
//! | `signing_key` | secret | — | the access-token key: P-256 PKCS#8 PEM (or one-line base64 DER); only the auth function signs with it (and requires it in production); one key per job, so it is neither the log's `checkpoint_key` nor the mesh's `coordinator_key` |
//! | `previous_signing_key` | secret | — | the key `signing_key` replaced, same format; only its public half is used |
//! | `previous_key_retired_at` | var | — | Unix seconds when `signing_key` took over; required with `previous_signing_key` |
//! | `issuer` | var | `http://localhost:8787` in development | the public https origin of the deployment: access tokens' `iss`, the base of emailed links; required in production |
//! | `audience` | var | `edgecoder` | access tokens' `aud` |
//! | `allowed_origins` | var | — | comma-separated browser origins allowed to make cookie-authenticated requests (CSRF defence); https, or http on localhost |
//! | `service_key` | secret | — | this component's own key for calling the other functions over HTTP (Spin components, split Workers): it signs a short-lived token per call ([`crate::service`]); one per caller, never shared |
//! | `service_keys` | var | — | JSON object from caller (`auth`, `mesh`) to the public keys (base64 SPKI, `edgecoder keygen --public`) a callee accepts from it; list two during a rotation |
//! | `max_body_bytes` | var | `262144` | request body cap (1 KiB to 16 MiB) |
//! | `trusted_proxies` | var | — | comma-separated IPs or CIDRs whose `X-Forwarded-*` headers are believed (native runtime) |
//! | `insecure_test_routes` | var | `false` | mounts the test routes in builds with the `danger-test-routes` feature; refused in production |
//! | `audit_monitor_tokens` | var | — | comma-separated `blake3:<hex>` digests of monitor credentials (`edgecoder monitor-token`): read-only bearer credentials for the audit export (`GET /{auth,mesh,ledger}/audit/events`) and nothing else |
//!
//! Key rotation: put the new key in `signing_key`, the old one in
//! `previous_signing_key` and the switch time in `previous_key_retired_at`.
//! The old public key stays published (JWKS) and trusted until every token it
//! signed has expired, then drops out by itself; remove the two settings at
//! leisure. Outside verifiers that cache the JWKS (up to 5 minutes) should
//! refetch it when they meet an unknown `kid`.

use ipnet::IpNet;

use crate::keys::KeySet;
use crate::{ConfigSource, Error, SigningKey};

/// Default request body cap in bytes (256 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// Whether this build contains the test routes (the `danger-test-routes`
/// feature, which only the test harnesses and benchmarks enable).
pub const TEST_ROUTES_BUILT: bool = cfg!(feature = "danger-test-routes");

/// The issuer a development deployment uses when none is set.
/// (`edgecoder serve` and `wrangler dev` both listen on 8787 by default, so
/// emailed links work out of the box.)
pub const DEV_ISSUER: &str = "http://localhost:8787";

/// The default access-token audience.
pub const DEFAULT_AUDIENCE: &str = "edgecoder";

/// The shortest accepted shared secret (`bootstrap_secret`).
pub const MIN_SHARED_SECRET_CHARS: usize = 32;

/// Whether `url` is https, or plain http to a loopback host (local use).
pub fn is_secure_or_local(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Whether `url` names one of Spin's addresses inside an app: a component
/// by id (`http://<id>.spin.internal`, service chaining: handed over in
/// memory) or the app itself (`http://self.alt`, a self request to its own
/// listener). Neither leaves the host, so plain http is right for them.
pub fn is_spin_internal(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    host == "self.alt"
        || host
            .strip_suffix(".spin.internal")
            .is_some_and(|id| !id.is_empty() && !id.contains(['.', ':', '@']))
}

/// Whether `origin` is a bare origin (`scheme://host[:port]`, no path).
pub fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && is_secure_or_local(origin)
}

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
    /// Whether the test routes (conformance echo and ports, benchmarks, the
    /// development outbox) are mounted: the `insecure_test_routes` setting,
    /// in a build made with the `danger-test-routes` feature. Release builds
    /// do not contain the routes at all, whatever the setting says.
    pub insecure_test_routes: bool,
    /// The function's signing key, when configured.
    pub signing_key: Option<SigningKey>,
    /// The key the signing key replaced, and when (Unix seconds).
    pub previous_key: Option<(p256::ecdsa::VerifyingKey, i64)>,
    /// Access tokens' `iss` and the base of links we send.
    pub issuer: String,
    /// Access tokens' `aud`.
    pub audience: String,
    /// Origins allowed to send cookie-authenticated state-changing requests.
    pub allowed_origins: Vec<String>,
    /// This component's key for calling the other functions.
    pub service_key: Option<SigningKey>,
    /// The callers' public keys, for the calls this component receives.
    pub service_keys: crate::service::ServiceKeys,
    /// blake3 digests of the monitor credentials that may read the audit
    /// export (`audit_monitor_tokens`).
    pub monitor_tokens: Vec<[u8; 32]>,
    /// Weakened settings in force, for the runtime to log at start.
    pub warnings: Vec<String>,
}

/// Reads settings from a [`ConfigSource`] the way every function's settings
/// do: values trimmed, empty meaning unset, and each refusal naming the
/// setting.
pub struct Vars<'a>(pub &'a dyn ConfigSource);

impl Vars<'_> {
    /// A variable, trimmed; `None` when unset or empty.
    pub fn var(&self, name: &str) -> Option<String> {
        self.0
            .var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A secret, trimmed; `None` when unset or empty.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.0
            .secret(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// An integer within `min..=max`, `default` when unset.
    pub fn bounded(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, Error> {
        match self.var(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| Error::Config(format!("{name} must be {min} to {max}"))),
        }
    }

    /// A boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`), `false`
    /// when unset.
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        match self.0.var(name) {
            Some(raw) => parse_bool(name, &raw),
            None => Ok(false),
        }
    }

    /// A URL one component uses to reach another: https, or http on
    /// localhost.
    pub fn service_url(&self, name: &str) -> Result<Option<String>, Error> {
        match self.var(name) {
            Some(u) if is_secure_or_local(&u) || is_spin_internal(&u) => {
                Ok(Some(u.trim_end_matches('/').to_owned()))
            }
            Some(_) => Err(Error::Config(format!(
                "{name} must be https (or http on localhost, or Spin's http://<component>.spin.internal or http://self.alt)"
            ))),
            None => Ok(None),
        }
    }

    /// The key set of one job: the secret `name` (PKCS#8 PEM or one-line
    /// base64 DER), the secret `previous_name` it replaced, and the var
    /// `retired_name` saying when (Unix seconds); the last two go together.
    pub fn key_set(
        &self,
        name: &str,
        previous_name: &str,
        retired_name: &str,
    ) -> Result<KeySet, Error> {
        let current = match self.secret(name) {
            Some(v) => Some(
                SigningKey::from_secret(&v)
                    .map_err(|_| Error::Config(format!("{name} is not a P-256 private key")))?,
            ),
            None => None,
        };
        let previous = match (self.secret(previous_name), self.var(retired_name)) {
            (None, None) => None,
            (Some(key), Some(at)) => {
                let key = SigningKey::from_secret(&key).map_err(|_| {
                    Error::Config(format!("{previous_name} is not a P-256 private key"))
                })?;
                let at = at
                    .parse::<i64>()
                    .map_err(|_| Error::Config(format!("{retired_name} must be Unix seconds")))?;
                Some((*key.verifying_key(), at))
            }
            _ => {
                return Err(Error::Config(format!(
                    "{previous_name} and {retired_name} go together"
                )));
            }
        };
        if let (Some(c), Some((p, _))) = (&current, &previous)
            && c.verifying_key() == p
        {
            return Err(Error::Config(format!(
                "{previous_name} is the same key as {name}"
            )));
        }
        Ok(KeySet { current, previous })
    }

    /// A shared secret of at least [`MIN_SHARED_SECRET_CHARS`] characters.
    pub fn shared_secret(&self, name: &str) -> Result<Option<String>, Error> {
        match self.secret(name) {
            Some(v) if v.chars().count() < MIN_SHARED_SECRET_CHARS => Err(Error::Config(format!(
                "{name} must be at least {MIN_SHARED_SECRET_CHARS} characters"
            ))),
            v => Ok(v),
        }
    }
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
        let insecure_test_routes = Vars(src).flag("insecure_test_routes")?;
        // The access-token key; the auth function requires it in production
        // (the other functions ask auth who a token belongs to and do not
        // hold it).
        let access_keys = Vars(src).key_set(
            "signing_key",
            "previous_signing_key",
            "previous_key_retired_at",
        )?;
        let (signing_key, previous_key) = (access_keys.current, access_keys.previous);
        let vars = Vars(src);
        let var = |name: &str| vars.var(name);
        let issuer = match var("issuer") {
            Some(v) => {
                let v = v.trim_end_matches('/').to_owned();
                if !is_origin(&v) {
                    return Err(Error::Config(
                        "issuer must be an https origin (or http on localhost)".into(),
                    ));
                }
                v
            }
            None if mode == Mode::Production => {
                return Err(Error::Config("production mode requires issuer".into()));
            }
            None => DEV_ISSUER.to_owned(),
        };
        let audience = var("audience").unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
        let mut allowed_origins = Vec::new();
        for o in var("allowed_origins").unwrap_or_default().split(',') {
            let o = o.trim().trim_end_matches('/');
            if o.is_empty() {
                continue;
            }
            if !is_origin(o) {
                return Err(Error::Config(
                    "allowed_origins must list https origins (or http on localhost)".into(),
                ));
            }
            allowed_origins.push(o.to_owned());
        }
        let service_key = match vars.secret("service_key") {
            Some(v) => Some(
                SigningKey::from_secret(&v)
                    .map_err(|_| Error::Config("service_key is not a P-256 private key".into()))?,
            ),
            None => None,
        };
        let service_keys = match vars.var("service_keys") {
            Some(v) => crate::service::ServiceKeys::parse(&v)?,
            None => crate::service::ServiceKeys::default(),
        };
        let monitor_tokens = parse_monitor_tokens(vars.var("audit_monitor_tokens").as_deref())?;

        let mut warnings = Vec::new();
        if mode == Mode::Production {
            if !issuer.starts_with("https://") {
                return Err(Error::Config("production issuer must be https".into()));
            }
            if insecure_test_routes {
                return Err(Error::Config(
                    "insecure_test_routes cannot be enabled in production mode".into(),
                ));
            }
        } else {
            warnings.push("mode=development: production checks are off".to_owned());
            if insecure_test_routes && TEST_ROUTES_BUILT {
                warnings.push(
                    "insecure_test_routes=true: conformance echo routes are mounted".to_owned(),
                );
            } else if insecure_test_routes {
                warnings.push(
                    "insecure_test_routes=true has no effect: this build has no test routes (built without the danger-test-routes feature)".to_owned(),
                );
            }
        }
        let insecure_test_routes = insecure_test_routes && TEST_ROUTES_BUILT;
        Ok(Config {
            mode,
            max_body_bytes,
            trusted_proxies,
            insecure_test_routes,
            signing_key,
            previous_key,
            issuer,
            audience,
            allowed_origins,
            service_key,
            service_keys,
            monitor_tokens,
            warnings,
        })
    }
}

/// `audit_monitor_tokens`: comma-separated `blake3:<64 hex>` digests of
/// monitor credentials (`edgecoder monitor-token` makes one). Only digests
/// are configured, so the setting is not a secret.
fn parse_monitor_tokens(v: Option<&str>) -> Result<Vec<[u8; 32]>, Error> {
    let mut out = Vec::new();
    for item in v.unwrap_or_default().split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let hex = item.strip_prefix("blake3:").unwrap_or("");
        let digest = blake3::Hash::from_hex(hex).map_err(|_| {
            Error::Config(
                "audit_monitor_tokens lists blake3:<64 hex> digests (edgecoder monitor-token)"
                    .into(),
            )
        })?;
        out.push(*digest.as_bytes());
    }
    Ok(out)
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

    #[test]
    fn spin_internal_addresses_are_the_app_and_its_components_only() {
        assert!(is_spin_internal("http://ledger.spin.internal"));
        assert!(is_spin_internal("http://self.alt"));
        // `self` is not Spin's name for the app in a URL: it is a host.
        assert!(!is_spin_internal("http://self"));
        assert!(!is_spin_internal("http://evil.com.spin.internal"));
        assert!(!is_spin_internal("http://.spin.internal"));
        assert!(!is_spin_internal("http://ledger.spin.internal.example.com"));
        assert!(!is_spin_internal("http://x@ledger.spin.internal"));
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
    fn production_is_the_default_and_requires_an_issuer() {
        let err = Config::load(&Map(HashMap::new())).expect_err("must refuse");
        assert!(err.to_string().contains("issuer"), "{err}");
    }

    fn production() -> Vec<(&'static str, String)> {
        vec![
            ("signing_key", pem()),
            ("issuer", "https://edge.example".to_owned()),
        ]
    }

    #[test]
    fn production_with_key_loads() {
        let cfg = Config::load(&Map(production().into_iter().collect())).expect("ok");
        assert_eq!(cfg.issuer, "https://edge.example");
        assert_eq!(cfg.mode, Mode::Production);
        assert!(cfg.warnings.is_empty());
        assert_eq!(cfg.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn production_refuses_insecure_test_routes() {
        let mut v = production();
        v.push(("insecure_test_routes", "true".to_owned()));
        assert!(Config::load(&Map(v.into_iter().collect())).is_err());
    }

    #[test]
    fn production_refuses_plain_http() {
        for (k, val) in [
            ("issuer", "http://edge.example"),
            ("issuer", "http://localhost:8080"),
        ] {
            let mut v = production();
            v.retain(|(n, _)| *n != k);
            v.push((k, val.to_owned()));
            assert!(
                Config::load(&Map(v.into_iter().collect())).is_err(),
                "{k}={val} must be refused in production"
            );
        }
    }

    #[test]
    fn origins_must_be_bare_and_secure() {
        for bad in [
            "https://a.example/path",
            "http://evil.example",
            "ftp://x",
            "*",
        ] {
            let src = Map(HashMap::from([
                ("mode", "development".to_owned()),
                ("allowed_origins", bad.to_owned()),
            ]));
            assert!(Config::load(&src).is_err(), "{bad} must be refused");
        }
        let src = Map(HashMap::from([
            ("mode", "development".to_owned()),
            (
                "allowed_origins",
                "https://portal.example, http://localhost:3000".to_owned(),
            ),
        ]));
        let cfg = Config::load(&src).expect("ok");
        assert_eq!(
            cfg.allowed_origins,
            ["https://portal.example", "http://localhost:3000"]
        );
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
        let mut v = production();
        v[0].1 = new;
        v.push(("previous_signing_key", old));
        v.push(("previous_key_retired_at", "1000".to_owned()));
        let src = Map(v.into_iter().collect());
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
        let mut v = production();
        v.push(("previous_signing_key", pem()));
        assert!(Config::load(&Map(v.into_iter().collect())).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for (k, v) in [
            ("mode", "staging"),
            ("max_body_bytes", "12"),
            ("trusted_proxies", "not-an-ip"),
            ("insecure_test_routes", "maybe"),
            ("service_keys", "{\"ledger\": []}"),
            ("issuer", "not a url"),
        ] {
            let src = Map(HashMap::from([
                ("mode", "development".to_owned()),
                (k, v.to_owned()),
            ]));
            assert!(Config::load(&src).is_err(), "{k}={v} must be refused");
        }
    }
}
