//! OAuth 2.0 / OpenID Connect sign-in settings: which providers a deployment
//! offers and how to reach them.
//!
//! In scope: parsing and validating `oauth_providers` (a JSON array, a
//! non-secret var), `oauth_client_secrets` (a JSON object from the secret
//! store) and `oauth_app_schemes` (custom URL schemes of native apps). Out of
//! scope: discovery, the flows and token validation (the auth function).
//!
//! ```json
//! [{"id": "google", "client_id": "…"},
//!  {"id": "microsoft", "client_id": "…", "tenant": "organizations"},
//!  {"id": "github", "client_id": "…"},
//!  {"id": "corp", "issuer": "https://id.corp.example", "client_id": "…", "name": "Corp SSO"}]
//! ```
//!
//! `google` and `microsoft` are OpenID Connect providers with known issuers
//! (`tenant` defaults to `common`); `github` is plain OAuth 2.0 with its user
//! and verified-emails APIs; any other id is a generic OpenID Connect issuer
//! and needs `issuer`. Every issuer is https (plain http only on loopback,
//! for local test providers). Each provider's client secret is the entry of
//! its id in `oauth_client_secrets`; a provider without one is a public
//! client (PKCE only).

use serde::Deserialize;

use edgecoder_kernel::Error;

/// How a provider authenticates users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect: discovery from `issuer`, an ID token validated against
    /// the issuer's JWKS.
    Oidc {
        /// The issuer identifier (no trailing slash unless the issuer has one).
        issuer: String,
        /// Microsoft's multi-tenant endpoints publish an issuer template with
        /// `{tenantid}`, filled from the token's `tid`.
        tenant_template: bool,
    },
    /// GitHub: OAuth 2.0, then the user and verified-emails APIs.
    GitHub {
        /// Where `/login/oauth/authorize` and `/login/oauth/access_token` live.
        web_base: String,
        /// The REST API base.
        api_base: String,
    },
}

/// One configured sign-in provider.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthProvider {
    /// The id in routes (`/auth/oauth/{id}/...`) and in stored links.
    pub id: String,
    /// The name the portal shows.
    pub name: String,
    /// Protocol and endpoints.
    pub kind: ProviderKind,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret, from the secret store; `None` for a public client.
    pub client_secret: Option<String>,
    /// Requested scopes, space-separated.
    pub scopes: String,
}

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl OAuthProvider {
    /// The OpenID Connect issuer, for OIDC providers.
    pub fn issuer(&self) -> Option<&str> {
        match &self.kind {
            ProviderKind::Oidc { issuer, .. } => Some(issuer),
            ProviderKind::GitHub { .. } => None,
        }
    }
}

/// The OAuth part of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthSettings {
    /// Providers, in the configured order.
    pub providers: Vec<OAuthProvider>,
    /// URL schemes (`com.example.app`) whose `return_to` gets a one-time code.
    pub app_schemes: Vec<String>,
}

impl OAuthSettings {
    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&OAuthProvider> {
        self.providers.iter().find(|p| p.id == id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    client_id: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    web_base: Option<String>,
    #[serde(default)]
    api_base: Option<String>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Config(format!("oauth_providers: {}", msg.into()))
}

fn id_ok(id: &str) -> bool {
    // `links` and `exchange` are route segments of their own.
    !matches!(id, "links" | "exchange")
        && (2..=32).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn base_url(raw: &str, what: &str) -> Result<String, Error> {
    let url = raw.trim();
    if !edgecoder_kernel::config::is_secure_or_local(url) || url.contains(['?', '#', ' ']) {
        return Err(bad(format!(
            "{what} must be an https URL (http only on loopback)"
        )));
    }
    Ok(url.to_owned())
}

fn scheme_ok(s: &str) -> bool {
    // RFC 3986 scheme syntax; at least one dot, as the platforms recommend
    // reverse-DNS names, which also keeps `http`, `javascript` etc. out.
    s.contains('.')
        && s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

/// Parses the three settings (each may be absent).
pub fn parse(
    providers: Option<&str>,
    secrets: Option<&str>,
    app_schemes: Option<&str>,
) -> Result<OAuthSettings, Error> {
    let raw: Vec<RawProvider> = match providers {
        None => Vec::new(),
        Some(json) => serde_json::from_str(json).map_err(|e| bad(e.to_string()))?,
    };
    let secrets: std::collections::HashMap<String, String> = match secrets {
        None => Default::default(),
        Some(json) => serde_json::from_str(json).map_err(|_| {
            Error::Config("oauth_client_secrets must be a JSON object of strings".into())
        })?,
    };
    let mut out = Vec::new();
    for p in raw {
        if !id_ok(&p.id) {
            return Err(bad(format!(
                "id {:?} must be 2-32 of a-z, 0-9 and -, starting with a letter",
                p.id
            )));
        }
        if out.iter().any(|o: &OAuthProvider| o.id == p.id) {
            return Err(bad(format!("id {:?} appears twice", p.id)));
        }
        if p.client_id.trim().is_empty() {
            return Err(bad(format!("{} needs client_id", p.id)));
        }
        let (kind, default_name, default_scopes) = match p.id.as_str() {
            "google" => (
                ProviderKind::Oidc {
                    issuer: "https://accounts.google.com".into(),
                    tenant_template: false,
                },
                "Google",
                "openid email profile",
            ),
            "microsoft" => {
                let tenant = p.tenant.as_deref().unwrap_or("common");
                // A domain name would resolve to a discovery document naming
                // the tenant's GUID issuer, which never matches: GUIDs only.
                let guid = tenant.len() == 36
                    && tenant.chars().enumerate().all(|(i, c)| {
                        if matches!(i, 8 | 13 | 18 | 23) {
                            c == '-'
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    });
                if !guid && !matches!(tenant, "common" | "organizations" | "consumers") {
                    return Err(bad(
                        "microsoft tenant must be common, organizations, consumers or a tenant GUID",
                    ));
                }
                (
                    ProviderKind::Oidc {
                        issuer: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                        tenant_template: matches!(tenant, "common" | "organizations" | "consumers"),
                    },
                    "Microsoft",
                    "openid email profile",
                )
            }
            "github" => (
                ProviderKind::GitHub {
                    web_base: base_url(
                        p.web_base.as_deref().unwrap_or("https://github.com"),
                        "web_base",
                    )?
                    .trim_end_matches('/')
                    .to_owned(),
                    api_base: base_url(
                        p.api_base.as_deref().unwrap_or("https://api.github.com"),
                        "api_base",
                    )?
                    .trim_end_matches('/')
                    .to_owned(),
                },
                "GitHub",
                "read:user user:email",
            ),
            _ => {
                let issuer = p
                    .issuer
                    .as_deref()
                    .ok_or_else(|| bad(format!("{} needs issuer", p.id)))?;
                (
                    ProviderKind::Oidc {
                        issuer: base_url(issuer, "issuer")?,
                        tenant_template: false,
                    },
                    "",
                    "openid email profile",
                )
            }
        };
        let scopes = match p.scopes {
            Some(list) => {
                if list
                    .iter()
                    .any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_graphic() && c != '"'))
                {
                    return Err(bad(format!("{}: scopes must be plain tokens", p.id)));
                }
                list.join(" ")
            }
            None => default_scopes.to_owned(),
        };
        if matches!(kind, ProviderKind::Oidc { .. }) && !scopes.split(' ').any(|s| s == "openid") {
            return Err(bad(format!(
                "{}: an OpenID provider needs scope openid",
                p.id
            )));
        }
        let name = p.name.unwrap_or_else(|| {
            if default_name.is_empty() {
                p.id.clone()
            } else {
                default_name.to_owned()
            }
        });
        out.push(OAuthProvider {
            client_secret: secrets
                .get(&p.id)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            id: p.id,
            name,
            kind,
            client_id: p.client_id.trim().to_owned(),
            scopes,
        });
    }
    if let Some(stray) = secrets.keys().find(|k| !out.iter().any(|p| &p.id == *k)) {
        return Err(Error::Config(format!(
            "oauth_client_secrets has an entry for {stray:?}, which is not in oauth_providers"
        )));
    }
    let mut schemes = Vec::new();
    for s in app_schemes.unwrap_or_default().split(',') {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            continue;
        }
        if !scheme_ok(&s) {
            return Err(Error::Config(format!(
                "oauth_app_schemes: {s:?} is not a reverse-DNS URL scheme"
            )));
        }
        schemes.push(s);
    }
    Ok(OAuthSettings {
        providers: out,
        app_schemes: schemes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_providers_fill_in_their_endpoints() {
        let s = parse(
            Some(
                r#"[{"id":"google","client_id":"g"},{"id":"microsoft","client_id":"m"},
                    {"id":"github","client_id":"h"},
                    {"id":"corp","client_id":"c","issuer":"https://id.corp.example","name":"Corp"}]"#,
            ),
            Some(r#"{"google":"g-secret-7f3a","corp":"cs"}"#),
            Some("com.edgecoder.app"),
        )
        .expect("valid");
        assert_eq!(
            s.provider("google").and_then(OAuthProvider::issuer),
            Some("https://accounts.google.com")
        );
        let ms = s.provider("microsoft").expect("microsoft");
        assert_eq!(
            ms.kind,
            ProviderKind::Oidc {
                issuer: "https://login.microsoftonline.com/common/v2.0".into(),
                tenant_template: true
            }
        );
        assert_eq!(ms.client_secret, None);
        assert!(matches!(
            s.provider("github").expect("github").kind,
            ProviderKind::GitHub { .. }
        ));
        assert_eq!(
            s.provider("corp").expect("corp").client_secret.as_deref(),
            Some("cs")
        );
        assert_eq!(s.app_schemes, vec!["com.edgecoder.app".to_owned()]);
        assert!(
            !format!("{s:?}").contains("g-secret-7f3a"),
            "secrets stay out of logs"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for (providers, secrets, schemes) in [
            (r#"[{"id":"corp","client_id":"c"}]"#, None, None),
            (
                r#"[{"id":"corp","client_id":"c","issuer":"http://id.corp.example"}]"#,
                None,
                None,
            ),
            (
                r#"[{"id":"Corp","client_id":"c","issuer":"https://x"}]"#,
                None,
                None,
            ),
            (r#"[{"id":"google","client_id":""}]"#, None, None),
            (
                r#"[{"id":"google","client_id":"a"},{"id":"google","client_id":"b"}]"#,
                None,
                None,
            ),
            (r#"[{"id":"google","client_id":"a","extra":1}]"#, None, None),
            (
                r#"[{"id":"google","client_id":"a"}]"#,
                Some(r#"{"github":"x"}"#),
                None,
            ),
            (
                r#"[{"id":"microsoft","client_id":"a","tenant":"contoso.com"}]"#,
                None,
                None,
            ),
            (
                r#"[{"id":"google","client_id":"a","scopes":["email"]}]"#,
                None,
                None,
            ),
            ("{}", None, None),
            ("[]", None, Some("javascript")),
            ("[]", None, Some("https")),
        ] {
            assert!(
                parse(Some(providers), secrets, schemes).is_err(),
                "{providers} {secrets:?} {schemes:?}"
            );
        }
        assert!(
            parse(
                Some(r#"[{"id":"local","client_id":"c","issuer":"http://127.0.0.1:9000"}]"#),
                None,
                None
            )
            .is_ok()
        );
    }
}
