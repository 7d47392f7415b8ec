//! The OpenID Connect relying party's checks: provider metadata (OpenID
//! Connect Discovery 1.0), JWK Sets, and ID-token validation (OpenID Connect
//! Core 1.0 §3.1.3.7).
//!
//! In scope: fetching and caching (in KV, one hour) the discovery document and
//! the JWK Set, refetching the set once a minute at most when a token names an
//! unknown `kid` (key rotation), and validating an ID token: compact JWS with
//! `alg` RS256 or ES256 only (never `none`, never HMAC), the key chosen by
//! `kid` and key type, `iss`, `aud` (and `azp` when present or when there are
//! several audiences), `exp`, `iat`, `nbf`, and `nonce`. Out of scope: the
//! authorization-code flow and what a validated identity signs in to
//! (`api::oauth`).
//!
//! Why not a JWT crate: ES256 must go through the [`SignatureCheck`] port
//! (WebCrypto on Workers is a tenth of the CPU of `p256` in wasm), and RS256
//! uses the `rsa` crate the passkey code already needs; what is left is a
//! split and two base64 decodes.
//!
//! [`SignatureCheck`]: edgecoder_kernel::SignatureCheck

use crate::oauth_settings::OAuthProvider;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{OutboundRequest, Services, SignatureCheck};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::Sha256;

use crate::Error;

/// Clock skew tolerated between us and the provider.
pub const LEEWAY_SECS: i64 = 60;
/// How long discovery documents and JWK Sets are cached.
const CACHE_SECS: u64 = 3600;
/// The longest ID token accepted.
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// The largest metadata or key set read from a provider.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The parts of a provider's metadata the relying party uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discovery {
    /// The issuer identifier (Microsoft's multi-tenant one has `{tenantid}`).
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The provider's signing keys.
    pub jwks_uri: String,
    /// How the client may authenticate at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Whether the provider sends `iss` with the authorization response
    /// (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Where claims the ID token left out can be asked for (OIDC Core
    /// §5.3), with the access token.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// A key from a JWK Set that can check an accepted algorithm.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// Key id.
    pub kid: Option<String>,
    /// The key.
    pub key: JwkKey,
}

/// Key material.
#[derive(Debug, Clone)]
pub enum JwkKey {
    /// RSA (RS256): modulus and exponent, big-endian.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Exponent.
        e: Vec<u8>,
    },
    /// P-256 (ES256): the uncompressed SEC1 point.
    P256(Vec<u8>),
}

/// What a token is checked against.
pub struct Expected<'a> {
    /// The issuer from discovery.
    pub issuer: &'a str,
    /// Whether `issuer` is a template with `{tenantid}` (Microsoft).
    pub tenant_template: bool,
    /// Our client id: must be an audience.
    pub client_id: &'a str,
    /// The nonce we sent.
    pub nonce: &'a str,
    /// Now, in Unix seconds.
    pub now_secs: i64,
}

/// The validated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's stable subject identifier.
    pub subject: String,
    /// The email address, lowercased, if the provider shared one.
    pub email: Option<String>,
    /// Whether the provider asserts it verified that address (absent: no).
    pub email_verified: bool,
    /// A display name, if shared.
    pub name: Option<String>,
}

fn b64(s: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .map_err(|_| Error::IdTokenInvalid("malformed"))
}

fn kv_key(kind: &str, provider: &OAuthProvider, url: &str) -> String {
    // The URL is part of the key, so a changed setting never meets a stale
    // entry.
    let h = blake3::hash(url.as_bytes()).to_hex();
    format!("oauth:{kind}:{}:{}", provider.id, &h[..16])
}

/// Fills the address from the UserInfo endpoint when the ID token left it
/// out, as OIDC Core §5.4 allows (`email` is a UserInfo claim; some providers
/// put it only there). The response counts only if its `sub` is exactly the
/// ID token's (§5.3.4); a signed or encrypted UserInfo response is not
/// accepted (it would need its own validation), nor is one over the size cap.
pub async fn with_userinfo(
    s: &Services,
    disco: &Discovery,
    access_token: Option<&str>,
    id: Identity,
) -> Result<Identity, Error> {
    let (None, Some(url), Some(token)) = (&id.email, &disco.userinfo_endpoint, access_token) else {
        return Ok(id);
    };
    if token.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Ok(id);
    }
    let info = get_json(
        s,
        url,
        vec![("authorization".to_owned(), format!("Bearer {token}"))],
    )
    .await?;
    if info.get("sub").and_then(Json::as_str) != Some(id.subject.as_str()) {
        return Err(Error::IdTokenInvalid(
            "the userinfo response is about another subject",
        ));
    }
    let email = info
        .get("email")
        .and_then(Json::as_str)
        .and_then(normalise_email);
    let email_verified = matches!(info.get("email_verified"), Some(Json::Bool(true)))
        || info.get("email_verified").and_then(Json::as_str) == Some("true");
    Ok(Identity {
        email_verified: email.is_some() && email_verified,
        email,
        name: id.name.or_else(|| {
            info.get("name")
                .and_then(Json::as_str)
                .and_then(display_name)
        }),
        subject: id.subject,
    })
}

/// GETs a JSON document from a provider.
pub async fn get_json(
    s: &Services,
    url: &str,
    headers: Vec<(String, String)>,
) -> Result<Json, Error> {
    let unavailable = |why: String| Error::OAuthProviderUnavailable(format!("{url}: {why}"));
    let mut all = vec![("accept".to_owned(), "application/json".to_owned())];
    all.extend(headers);
    let resp = s
        .outbound
        .send(OutboundRequest {
            method: Method::GET,
            url: url.to_owned(),
            headers: all,
            body: Vec::new(),
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if !(200..300).contains(&resp.status) {
        return Err(unavailable(format!("status {}", resp.status)));
    }
    if resp.body.len() > MAX_DOCUMENT_BYTES {
        return Err(unavailable("document too large".into()));
    }
    serde_json::from_slice(&resp.body).map_err(|_| unavailable("not JSON".into()))
}

/// An endpoint from discovery: https, or plain http only when the issuer
/// itself is a loopback test provider (an https issuer's document cannot
/// point us at local services).
fn endpoint_ok(issuer: &str, url: &str) -> bool {
    // `https://<name>.internal` reaches another function's Worker through a
    // Service Binding: never a provider's endpoint.
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?', ':']).next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.ends_with(".internal") {
        return false;
    }
    let scheme_ok = if issuer.starts_with("https://") {
        url.starts_with("https://")
    } else {
        edgecoder_kernel::config::is_secure_or_local(url)
    };
    scheme_ok && !url.contains('#')
}

/// The provider's metadata, from cache or its well-known URL, checked: the
/// issuer must be the configured one (Discovery §4.3) and every endpoint
/// https.
pub async fn discovery(
    s: &Services,
    provider: &OAuthProvider,
    issuer: &str,
    tenant_template: bool,
) -> Result<Discovery, Error> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let key = kv_key("discovery", provider, &url);
    if let Some(cached) = s.kv.get(&key).await?
        && let Ok(d) = serde_json::from_slice::<Discovery>(&cached)
    {
        return Ok(d);
    }
    let doc = get_json(s, &url, Vec::new()).await?;
    let d: Discovery = serde_json::from_value(doc).map_err(|_| {
        Error::OAuthProviderUnavailable(format!("{url}: missing required metadata"))
    })?;
    let issuer_ok = d.issuer == issuer
        || (tenant_template
            && d.issuer.contains("{tenantid}")
            && d.issuer.starts_with("https://login.microsoftonline.com/"));
    if !issuer_ok {
        return Err(Error::OAuthProviderUnavailable(format!(
            "{url}: metadata names issuer {:?}",
            d.issuer
        )));
    }
    if ![&d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri]
        .into_iter()
        .chain(d.userinfo_endpoint.as_ref())
        .all(|u| endpoint_ok(issuer, u))
    {
        return Err(Error::OAuthProviderUnavailable(format!(
            "{url}: an endpoint is not https"
        )));
    }
    if let Ok(bytes) = serde_json::to_vec(&d) {
        s.kv.put(
            &key,
            &bytes,
            Some(std::time::Duration::from_secs(CACHE_SECS)),
        )
        .await?;
    }
    Ok(d)
}

/// Parses a JWK Set, keeping the keys usable for RS256 or ES256 signatures.
pub fn parse_jwks(doc: &Json) -> Vec<Jwk> {
    let Some(keys) = doc.get("keys").and_then(Json::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in keys {
        let field = |name: &str| k.get(name).and_then(Json::as_str);
        if field("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let bytes = |name: &str| field(name).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        let key = match (field("kty"), field("alg")) {
            (Some("RSA"), None | Some("RS256")) => match (bytes("n"), bytes("e")) {
                (Some(n), Some(e)) => JwkKey::Rsa { n, e },
                _ => continue,
            },
            (Some("EC"), None | Some("ES256")) if field("crv") == Some("P-256") => {
                match (bytes("x"), bytes("y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4u8];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        JwkKey::P256(point)
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        out.push(Jwk {
            kid: field("kid").map(str::to_owned),
            key,
        });
    }
    out
}

/// The provider's keys: cached, or fetched when `refresh` (a token named a
/// `kid` the cached set lacks; at most once a minute per provider).
pub async fn jwks(
    s: &Services,
    provider: &OAuthProvider,
    jwks_uri: &str,
    refresh: bool,
) -> Result<Vec<Jwk>, Error> {
    let key = kv_key("jwks", provider, jwks_uri);
    let cached = s.kv.get(&key).await?;
    if let Some(bytes) = &cached {
        let fresh_enough = if refresh {
            let marker = kv_key("jwks-refetch", provider, jwks_uri);
            if s.kv.get(&marker).await?.is_some() {
                true
            } else {
                s.kv.put(&marker, b"1", Some(std::time::Duration::from_secs(60)))
                    .await?;
                false
            }
        } else {
            true
        };
        if fresh_enough && let Ok(doc) = serde_json::from_slice::<Json>(bytes) {
            return Ok(parse_jwks(&doc));
        }
    }
    let doc = get_json(s, jwks_uri, Vec::new()).await?;
    if let Ok(bytes) = serde_json::to_vec(&doc) {
        s.kv.put(
            &key,
            &bytes,
            Some(std::time::Duration::from_secs(CACHE_SECS)),
        )
        .await?;
    }
    Ok(parse_jwks(&doc))
}

/// The header fields that pick the key.
#[derive(Debug)]
pub struct Header {
    /// `RS256` or `ES256`.
    pub alg: String,
    /// Key id.
    pub kid: Option<String>,
}

/// A split, decoded compact JWS.
pub struct Jws {
    /// Its protected header.
    pub header: Header,
    /// The decoded payload.
    pub claims: Json,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS (no checks beyond well-formedness and
/// the algorithm allow-list).
pub fn parse(token: &str) -> Result<Jws, Error> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err(Error::IdTokenInvalid("too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::IdTokenInvalid("malformed"));
    };
    let header: Json =
        serde_json::from_slice(&b64(h)?).map_err(|_| Error::IdTokenInvalid("malformed"))?;
    if header.get("crit").is_some() {
        return Err(Error::IdTokenInvalid("unsupported critical header"));
    }
    let alg = header.get("alg").and_then(Json::as_str).unwrap_or_default();
    if !matches!(alg, "RS256" | "ES256") {
        return Err(Error::IdTokenInvalid("algorithm not RS256 or ES256"));
    }
    let claims: Json =
        serde_json::from_slice(&b64(p)?).map_err(|_| Error::IdTokenInvalid("malformed"))?;
    if !claims.is_object() {
        return Err(Error::IdTokenInvalid("malformed"));
    }
    Ok(Jws {
        header: Header {
            alg: alg.to_owned(),
            kid: header.get("kid").and_then(Json::as_str).map(str::to_owned),
        },
        claims,
        signing_input: format!("{h}.{p}").into_bytes(),
        signature: b64(sig)?,
    })
}

impl Jws {
    /// The key in `keys` that should have signed this: by `kid`, else the
    /// only key of the right type. `None` means "unknown key" (refetch).
    pub fn pick<'k>(&self, keys: &'k [Jwk]) -> Option<&'k Jwk> {
        let fits = |k: &&Jwk| {
            matches!(
                (&k.key, self.header.alg.as_str()),
                (JwkKey::Rsa { .. }, "RS256") | (JwkKey::P256(_), "ES256")
            )
        };
        match &self.header.kid {
            Some(kid) => keys
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut candidates = keys.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
    }

    /// Checks the signature with `key`.
    pub async fn verify_signature(
        &self,
        signatures: &dyn SignatureCheck,
        key: &Jwk,
    ) -> Result<(), Error> {
        let ok = match &key.key {
            JwkKey::P256(point) => {
                // JWS ES256 signatures are r ‖ s (RFC 7518 §3.4), what the
                // port takes.
                self.signature.len() == 64
                    && signatures
                        .verify_p256(point, &self.signing_input, &self.signature)
                        .await?
            }
            JwkKey::Rsa { n, e } => rsa_verify(n, e, &self.signing_input, &self.signature),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::IdTokenInvalid("signature does not verify"))
        }
    }
}

fn rsa_verify(n: &[u8], e: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use rsa::signature::Verifier as _;
    let n = rsa::BigUint::from_bytes_be(n);
    // Providers use 2048-bit keys or more; smaller ones are forgeable.
    if n.bits() < 2048 || n.bits() > 8192 {
        return false;
    }
    let Ok(key) = rsa::RsaPublicKey::new(n, rsa::BigUint::from_bytes_be(e)) else {
        return false;
    };
    let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature) else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}

/// Checks the claims of a token whose signature already verified.
pub fn check_claims(claims: &Json, want: &Expected<'_>) -> Result<Identity, Error> {
    let str_claim = |name: &str| claims.get(name).and_then(Json::as_str);
    let num_claim = |name: &str| claims.get(name).and_then(Json::as_i64);

    let iss = str_claim("iss").ok_or(Error::IdTokenInvalid("iss missing"))?;
    let iss_ok = if want.tenant_template {
        let tid = str_claim("tid").unwrap_or_default();
        !tid.is_empty()
            && tid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && iss == want.issuer.replace("{tenantid}", tid)
    } else {
        iss == want.issuer
    };
    if !iss_ok {
        return Err(Error::IdTokenInvalid("iss is not the provider"));
    }

    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Json::String(a)) => vec![a.as_str()],
        Some(Json::Array(list)) => list.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&want.client_id) {
        return Err(Error::IdTokenInvalid("aud is not this client"));
    }
    match str_claim("azp") {
        Some(azp) if azp != want.client_id => {
            return Err(Error::IdTokenInvalid("azp is not this client"));
        }
        None if audiences.len() > 1 => {
            return Err(Error::IdTokenInvalid("several audiences and no azp"));
        }
        _ => {}
    }

    let exp = num_claim("exp").ok_or(Error::IdTokenInvalid("exp missing"))?;
    if want.now_secs > exp.saturating_add(LEEWAY_SECS) {
        return Err(Error::IdTokenInvalid("expired"));
    }
    let iat = num_claim("iat").ok_or(Error::IdTokenInvalid("iat missing"))?;
    if iat > want.now_secs.saturating_add(LEEWAY_SECS) {
        return Err(Error::IdTokenInvalid("issued in the future"));
    }
    if let Some(nbf) = num_claim("nbf")
        && nbf > want.now_secs.saturating_add(LEEWAY_SECS)
    {
        return Err(Error::IdTokenInvalid("not yet valid"));
    }

    let nonce = str_claim("nonce").ok_or(Error::IdTokenInvalid("nonce missing"))?;
    if !crate::secrets::matches_secret(nonce, Some(want.nonce)) {
        return Err(Error::IdTokenInvalid("nonce does not match"));
    }

    let subject = str_claim("sub")
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(Error::IdTokenInvalid("sub missing"))?
        .to_owned();
    Ok(Identity {
        subject,
        email: str_claim("email").and_then(normalise_email),
        // Some providers send the string "true".
        email_verified: matches!(claims.get("email_verified"), Some(Json::Bool(true)))
            || str_claim("email_verified") == Some("true"),
        name: str_claim("name").and_then(display_name),
    })
}

/// A provider's email in the form local accounts use; `None` when it is not
/// an address we would accept at signup.
pub fn normalise_email(raw: &str) -> Option<String> {
    crate::password::normalise_email(raw).ok()
}

/// A provider's display name as signup would take it (trimmed, at most
/// 100 characters, no control characters), else none.
pub fn display_name(raw: &str) -> Option<String> {
    let cut: String = raw.chars().take(100).collect();
    crate::api::accounts::display_name(Some(cut)).ok().flatten()
}

/// Validates `id_token` from `provider` (signature by its keys, then the
/// claims).
pub async fn validate(
    s: &Services,
    provider: &OAuthProvider,
    disco: &Discovery,
    id_token: &str,
    want: &Expected<'_>,
) -> Result<Identity, Error> {
    let jws = parse(id_token)?;
    let mut keys = jwks(s, provider, &disco.jwks_uri, false).await?;
    if jws.pick(&keys).is_none() {
        keys = jwks(s, provider, &disco.jwks_uri, true).await?;
    }
    validate_with(s.signatures.as_ref(), &jws, &keys, want).await
}

/// Validates a parsed token against `keys` (nothing fetched): the key, the
/// signature, then the claims.
pub async fn validate_with(
    signatures: &dyn SignatureCheck,
    jws: &Jws,
    keys: &[Jwk],
    want: &Expected<'_>,
) -> Result<Identity, Error> {
    let key = jws.pick(keys).ok_or(Error::IdTokenInvalid(
        "signed by a key the provider does not publish",
    ))?;
    jws.verify_signature(signatures, key).await?;
    check_claims(&jws.claims, want)
}

/// An RS256 ID token and its key set, made once with Node's crypto (for the
/// validation benchmark and tests).
#[cfg(any(test, feature = "danger-test-routes"))]
pub struct Vector {
    /// The compact JWS.
    pub id_token: String,
    /// The issuer's keys.
    pub keys: Vec<Jwk>,
    /// Its `iss`.
    pub issuer: String,
    /// Its `aud`.
    pub client_id: String,
    /// Its `nonce`.
    pub nonce: String,
    /// Unix seconds at which it is valid.
    pub now: i64,
}

#[cfg(any(test, feature = "danger-test-routes"))]
impl Vector {
    /// What the token is valid against.
    pub fn expected(&self) -> Expected<'_> {
        Expected {
            issuer: &self.issuer,
            tenant_template: false,
            client_id: &self.client_id,
            nonce: &self.nonce,
            now_secs: self.now,
        }
    }
}

/// The RS256 vector from `testdata/id_token_rs256.json`.
#[cfg(any(test, feature = "danger-test-routes"))]
pub fn rs256_vector() -> Option<Vector> {
    let v: Json = serde_json::from_str(include_str!("../testdata/id_token_rs256.json")).ok()?;
    let text = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_owned);
    Some(Vector {
        id_token: text("id_token")?,
        keys: parse_jwks(v.get("jwks")?),
        issuer: text("issuer")?,
        client_id: text("client_id")?,
        nonce: text("nonce")?,
        now: v.get("now").and_then(Json::as_i64)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn want(now: i64) -> Expected<'static> {
        Expected {
            issuer: "https://op.example",
            tenant_template: false,
            client_id: "client",
            nonce: "n-0123456789",
            now_secs: now,
        }
    }

    fn good() -> Json {
        json!({"iss": "https://op.example", "aud": "client", "exp": 2000, "iat": 1000,
               "nonce": "n-0123456789", "sub": "u1", "email": "A@Example.com", "email_verified": true})
    }

    #[test]
    fn good_claims_give_the_identity() {
        let id = check_claims(&good(), &want(1500)).expect("valid");
        assert_eq!(id.subject, "u1");
        assert_eq!(id.email.as_deref(), Some("a@example.com"));
        assert!(id.email_verified);
    }

    #[test]
    fn each_bad_claim_is_refused() {
        let cases: Vec<(&str, Json)> = vec![
            ("iss", json!("https://evil.example")),
            ("aud", json!("other")),
            ("aud", json!(["client", "other"])),
            ("azp", json!("other")),
            ("exp", json!(1400)),
            ("iat", json!(1600)),
            ("nbf", json!(1600)),
            ("nonce", json!("n-other")),
            ("sub", json!("")),
        ];
        for (name, value) in cases {
            let mut c = good();
            c[name] = value.clone();
            assert!(check_claims(&c, &want(1500)).is_err(), "{name} = {value}");
        }
        for missing in ["iss", "aud", "exp", "iat", "nonce", "sub"] {
            let mut c = good();
            c.as_object_mut().map(|o| o.remove(missing));
            assert!(check_claims(&c, &want(1500)).is_err(), "without {missing}");
        }
    }

    #[test]
    fn leeway_is_sixty_seconds_and_no_more() {
        assert!(check_claims(&good(), &want(2060)).is_ok());
        assert!(check_claims(&good(), &want(2061)).is_err());
    }

    #[test]
    fn unverified_or_stringly_flags() {
        let mut c = good();
        c["email_verified"] = json!(false);
        assert!(!check_claims(&c, &want(1500)).expect("valid").email_verified);
        c["email_verified"] = json!("true");
        assert!(check_claims(&c, &want(1500)).expect("valid").email_verified);
        c.as_object_mut().map(|o| o.remove("email_verified"));
        assert!(!check_claims(&c, &want(1500)).expect("valid").email_verified);
    }

    #[test]
    fn microsoft_tenant_templates_fill_in_tid() {
        let mut w = want(1500);
        w.issuer = "https://login.microsoftonline.com/{tenantid}/v2.0";
        w.tenant_template = true;
        let mut c = good();
        c["iss"] =
            json!("https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0");
        c["tid"] = json!("9188040d-6c67-4c5b-b112-36a304b66dad");
        assert!(check_claims(&c, &w).is_ok());
        c["tid"] = json!("another-tenant");
        assert!(check_claims(&c, &w).is_err());
    }

    fn jws(header: Json, claims: &Json) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        )
    }

    #[test]
    fn only_rs256_and_es256_are_accepted() {
        for alg in ["none", "HS256", "RS512", "PS256", "EdDSA"] {
            assert!(parse(&jws(json!({"alg": alg}), &good())).is_err(), "{alg}");
        }
        assert!(parse(&jws(json!({"alg": "ES256", "crit": ["x"]}), &good())).is_err());
        assert!(parse(&jws(json!({"alg": "ES256"}), &good())).is_ok());
        assert!(parse("a.b").is_err());
        assert!(parse("a.b.c.d").is_err());
    }

    #[test]
    fn keys_are_picked_by_kid_and_type() {
        let point = {
            let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
            sk.verifying_key().to_encoded_point(false)
        };
        let set = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1",
             "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
             "y": URL_SAFE_NO_PAD.encode(point.y().expect("y"))},
            {"kty": "RSA", "kid": "rsa1", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "AQAB"}
        ]});
        let keys = parse_jwks(&set);
        assert_eq!(keys.len(), 2);
        let es = parse(&jws(json!({"alg": "ES256", "kid": "ec1"}), &good())).expect("jws");
        assert_eq!(es.pick(&keys).and_then(|k| k.kid.as_deref()), Some("ec1"));
        let wrong_type = parse(&jws(json!({"alg": "RS256", "kid": "ec1"}), &good())).expect("jws");
        assert!(wrong_type.pick(&keys).is_none());
        let no_kid = parse(&jws(json!({"alg": "ES256"}), &good())).expect("jws");
        assert_eq!(
            no_kid.pick(&keys).and_then(|k| k.kid.as_deref()),
            Some("ec1")
        );
        let unknown = parse(&jws(json!({"alg": "ES256", "kid": "gone"}), &good())).expect("jws");
        assert!(unknown.pick(&keys).is_none());
    }

    #[test]
    fn the_rs256_vector_verifies_and_a_tampered_copy_does_not() {
        let v = rs256_vector().expect("vector");
        let sw = edgecoder_kernel::SoftwareSignatures;
        let run = |token: &str| {
            futures_executor::block_on(async {
                let jws = parse(token)?;
                validate_with(&sw, &jws, &v.keys, &v.expected()).await
            })
        };
        assert_eq!(
            run(&v.id_token).expect("valid").email.as_deref(),
            Some("bench@example.com")
        );
        let mut parts: Vec<String> = v.id_token.split('.').map(str::to_owned).collect();
        let mut claims: Json =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
        claims["sub"] = json!("someone-else");
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert!(matches!(
            run(&parts.join(".")),
            Err(Error::IdTokenInvalid("signature does not verify"))
        ));
    }

    #[test]
    fn es256_tokens_verify_through_the_signature_port() {
        use p256::ecdsa::signature::Signer as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).expect("key");
        let point = sk.verifying_key().to_encoded_point(false);
        let keys = vec![Jwk {
            kid: Some("k".into()),
            key: JwkKey::P256(point.as_bytes().to_vec()),
        }];
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "k"}).to_string()),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        let sw = edgecoder_kernel::SoftwareSignatures;
        let jws = parse(&token).expect("jws");
        assert!(futures_executor::block_on(validate_with(&sw, &jws, &keys, &want(1500))).is_ok());
        // The same token checked with another key of the same kid fails.
        let other = p256::ecdsa::SigningKey::from_slice(&[4u8; 32]).expect("key");
        let decoy = vec![Jwk {
            kid: Some("k".into()),
            key: JwkKey::P256(
                other
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
            ),
        }];
        assert!(futures_executor::block_on(validate_with(&sw, &jws, &decoy, &want(1500))).is_err());
    }

    #[test]
    fn small_rsa_keys_never_verify() {
        assert!(!rsa_verify(&[0xff; 128], &[1, 0, 1], b"m", &[0; 128]));
    }

    /// Generated hostile ID tokens and key sets: seeded mutations of the
    /// RS256 vector. None may panic; each is refused with an [`Error`].
    #[test]
    fn id_token_and_jwks_parsers_never_panic() {
        let v = rs256_vector().expect("vector");
        let jwks = include_bytes!("../testdata/id_token_rs256.json").to_vec();
        let corpus = vec![v.id_token.clone().into_bytes(), jwks];
        edgecoder_fuzzgen::run("id token", 22, 200_000, corpus, |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(jws) = parse(&text) {
                let sw = edgecoder_kernel::SoftwareSignatures;
                let _ =
                    futures_executor::block_on(validate_with(&sw, &jws, &v.keys, &v.expected()));
                let _ = check_claims(&jws.claims, &v.expected());
            }
            if let Ok(doc) = serde_json::from_slice::<Json>(input) {
                let _ = parse_jwks(&doc);
                let _ = parse_jwks(&doc["jwks"]);
            }
        });
    }
}
