//! The auth function's own settings, parsed and validated from the same
//! [`ConfigSource`] as the kernel's [`Config`]; the gateway loads them at
//! start and hands them to handlers through `Services` ([`Settings::of`]).
//! Production mode refuses what it must, naming the setting.
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `bootstrap_secret` | secret | — | one-time secret that makes the first `system_admin` (≥ 32 chars); useless once an admin exists |
//! | `mail_provider` | var | `outbox` in development, `resend` in production | `resend` (HTTP email API) or `outbox` (a table; development only, refused in production) |
//! | `mail_api_base` | var | `https://api.resend.com` | the email API's base URL; https in production |
//! | `mail_api_key` | secret | — | the email API's bearer key; required with `resend` (production without it: mail-sending routes answer 503) |
//! | `mail_from` | var | — | the sender address; required with `resend` |
//! | `passkey_rp_id` | var | the host of the first `allowed_origins` entry | the WebAuthn relying party id (a registrable domain the portal's origins share) |
//! | `passkey_rp_name` | var | `EdgeCoder` | the relying party name authenticators show |
//! | `passkey_counter_policy` | var | `refuse` | a passkey whose signature counter went backwards: `refuse` the sign-in, or only `warn` (both flag it and write a critical audit event) |
//! | `signup_per_ip_per_hour` | var | `100` | signups per client address per hour (1–100000; offices and campuses share one address, the per-email limit stops mailbombing) |
//! | `oauth_providers` | var | — | JSON array of sign-in providers (`google`, `microsoft`, `github`, or any OpenID Connect issuer); see [`crate::oauth_settings`] |
//! | `oauth_client_secrets` | secret | — | JSON object: provider id → client secret |
//! | `oauth_app_schemes` | var | — | comma-separated custom URL schemes of native apps (`com.example.app`) whose `return_to` receives a one-time code |

use edgecoder_kernel::config::{Vars, is_secure_or_local};
use edgecoder_kernel::{Config, ConfigSource, Error, Mode, Services};

use crate::oauth_settings::{self, OAuthSettings};

/// How outbound mail leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailSettings {
    /// Messages are stored in the `mail_outbox` table (development only).
    Outbox,
    /// No provider configured (production without `mail_api_key`): routes
    /// that must send mail answer 503 rather than drop it.
    Unconfigured,
    /// A Resend-compatible HTTP email API: `POST {base}/emails`.
    Http {
        /// API base URL without a trailing slash.
        base: String,
        /// Bearer key.
        key: String,
        /// Sender address.
        from: String,
    },
}

/// The auth function's validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The one-time first-admin secret, if provisioned.
    pub bootstrap_secret: Option<String>,
    /// How mail is delivered.
    pub mail: MailSettings,
    /// The WebAuthn relying party id (empty: passkeys are off).
    pub passkey_rp_id: String,
    /// The relying party name.
    pub passkey_rp_name: String,
    /// Whether a regressed signature counter refuses the sign-in.
    pub passkey_refuse_counter_regression: bool,
    /// OAuth / OpenID Connect sign-in providers.
    pub oauth: OAuthSettings,
    /// Signups per client address per hour.
    pub signup_per_ip_per_hour: i64,
    /// Weakened settings in force, for the runtime to log at start.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Loads and validates the auth settings; `config` supplies the mode and
    /// the allowed origins the passkey relying party defaults from.
    pub fn load(src: &dyn ConfigSource, config: &Config) -> Result<Settings, Error> {
        let vars = Vars(src);
        let mode = config.mode;
        if mode == Mode::Production && config.signing_key.is_none() {
            return Err(Error::Config(
                "production mode requires the signing_key secret (the access-token key)".into(),
            ));
        }
        let bootstrap_secret = vars.shared_secret("bootstrap_secret")?;
        let mail = match vars.var("mail_provider").as_deref() {
            Some("outbox") if mode == Mode::Production => {
                return Err(Error::Config(
                    "mail_provider=outbox is for development; production needs resend".into(),
                ));
            }
            Some("outbox") => MailSettings::Outbox,
            None if mode == Mode::Development => MailSettings::Outbox,
            None if vars.secret("mail_api_key").is_none() => MailSettings::Unconfigured,
            None | Some("resend") => {
                let base = vars
                    .var("mail_api_base")
                    .unwrap_or_else(|| "https://api.resend.com".to_owned())
                    .trim_end_matches('/')
                    .to_owned();
                let base_ok = match mode {
                    Mode::Production => base.starts_with("https://"),
                    Mode::Development => is_secure_or_local(&base),
                };
                if !base_ok {
                    return Err(Error::Config(
                        "mail_api_base must be https (http only to localhost in development)"
                            .into(),
                    ));
                }
                let key = vars.secret("mail_api_key").ok_or_else(|| {
                    Error::Config("mail_provider=resend needs mail_api_key".into())
                })?;
                let from = vars
                    .var("mail_from")
                    .filter(|f| f.contains('@'))
                    .ok_or_else(|| Error::Config("mail_provider=resend needs mail_from".into()))?;
                MailSettings::Http { base, key, from }
            }
            Some(_) => {
                return Err(Error::Config(
                    "mail_provider must be resend or outbox".into(),
                ));
            }
        };
        let passkey_rp_id = match vars.var("passkey_rp_id") {
            Some(id) => id.to_ascii_lowercase(),
            None => config
                .allowed_origins
                .first()
                .and_then(|o| o.split("://").nth(1))
                .map(|h| h.split(':').next().unwrap_or(h).to_owned())
                .unwrap_or_default(),
        };
        if passkey_rp_id.contains(['/', ':', ' ']) {
            return Err(Error::Config(
                "passkey_rp_id must be a domain (no scheme, port or path)".into(),
            ));
        }
        let passkey_rp_name = vars
            .var("passkey_rp_name")
            .unwrap_or_else(|| "EdgeCoder".into());
        let passkey_refuse_counter_regression = match vars.var("passkey_counter_policy").as_deref()
        {
            None | Some("refuse") => true,
            Some("warn") => false,
            Some(_) => {
                return Err(Error::Config(
                    "passkey_counter_policy must be refuse or warn".into(),
                ));
            }
        };
        let oauth = oauth_settings::parse(
            vars.var("oauth_providers").as_deref(),
            vars.secret("oauth_client_secrets").as_deref(),
            vars.var("oauth_app_schemes").as_deref(),
        )?;
        let signup_per_ip_per_hour = vars.bounded("signup_per_ip_per_hour", 100, 1, 100_000)?;
        let mut warnings = Vec::new();
        if mail == MailSettings::Outbox {
            warnings.push("mail_provider=outbox: mail is stored, not sent".to_owned());
        }
        if !passkey_refuse_counter_regression {
            warnings.push(
                "passkey_counter_policy=warn: a passkey whose counter went backwards (a possible clone) still signs in; it is only audited".to_owned(),
            );
        }
        Ok(Settings {
            bootstrap_secret,
            mail,
            passkey_rp_id,
            passkey_rp_name,
            passkey_refuse_counter_regression,
            oauth,
            signup_per_ip_per_hour,
            warnings,
        })
    }

    /// The settings the gateway loaded into `s`; a configuration error (503)
    /// where a runtime serves the auth routes without them.
    pub fn of(s: &Services) -> Result<&Settings, Error> {
        s.settings
            .get::<Settings>()
            .ok_or_else(|| Error::Config("the auth settings were not loaded".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, String>);
    impl ConfigSource for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn secret(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    struct Sevens;
    impl edgecoder_kernel::Rng for Sevens {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }

    fn load(mode: &str, extra: &[(&'static str, &str)]) -> Result<Settings, Error> {
        let mut m = HashMap::from([("mode", mode.to_owned())]);
        if mode == "production" {
            let key = edgecoder_kernel::SigningKey::generate(&Sevens);
            m.insert("signing_key", key.to_pkcs8_pem().expect("pem"));
            m.insert("issuer", "https://edge.example".to_owned());
            m.insert("allowed_origins", "https://portal.example".to_owned());
        }
        for (k, v) in extra {
            m.insert(k, (*v).to_owned());
        }
        let src = Map(m);
        let config = Config::load(&src)?;
        Settings::load(&src, &config)
    }

    #[test]
    fn production_needs_a_real_mail_provider_and_names_what_is_wrong() {
        let ok = load(
            "production",
            &[
                ("mail_api_key", "re_test"),
                ("mail_from", "EdgeCoder <no-reply@edge.example>"),
            ],
        )
        .expect("ok");
        assert!(matches!(ok.mail, MailSettings::Http { .. }));
        assert_eq!(ok.passkey_rp_id, "portal.example");
        assert!(ok.warnings.is_empty());
        assert_eq!(
            load("production", &[]).expect("ok").mail,
            MailSettings::Unconfigured
        );
        for (k, v, named) in [
            ("mail_provider", "outbox", "mail_provider"),
            ("mail_provider", "smtp", "mail_provider"),
            ("mail_api_base", "http://localhost:9", "mail_api_base"),
        ] {
            let err = load(
                "production",
                &[("mail_api_key", "k"), ("mail_from", "a@b"), (k, v)],
            )
            .expect_err("refused");
            assert!(err.to_string().contains(named), "{k}={v}: {err}");
        }
        let err = load("production", &[("mail_api_key", "k")]).expect_err("no sender");
        assert!(err.to_string().contains("mail_from"), "{err}");
        // Accepting possibly cloned passkeys is allowed, but never silently.
        let warn = load(
            "production",
            &[
                ("mail_api_key", "re_test"),
                ("mail_from", "a@b"),
                ("passkey_counter_policy", "warn"),
            ],
        )
        .expect("ok");
        assert!(!warn.passkey_refuse_counter_regression);
        assert!(
            warn.warnings
                .iter()
                .any(|w| w.contains("passkey_counter_policy=warn")),
            "{:?}",
            warn.warnings
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (k, v) in [
            ("bootstrap_secret", "short"),
            ("passkey_rp_id", "https://portal.example"),
            ("passkey_counter_policy", "ignore"),
            ("oauth_providers", "not json"),
        ] {
            let err = load("development", &[(k, v)]).expect_err("refused");
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
        }
        let dev = load("development", &[]).expect("ok");
        assert_eq!(dev.mail, MailSettings::Outbox);
        assert_eq!(dev.warnings.len(), 1);
    }
}
