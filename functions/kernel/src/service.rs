//! Credentials between functions: who is calling, proven per call, and
//! nothing more.
//!
//! In scope: the short-lived token a function presents when it calls another
//! over HTTP (a Spin component, a Worker behind a Service Binding), signed
//! with the caller's own service key, and the callee's check of it against
//! the callers' public keys (`service_keys`). Out of scope: what a caller
//! may do, which each callee decides from the caller's name alone (the
//! ledger lets `auth` append role changes and `mesh` node approvals and task
//! completions; auth lets `mesh` redeem enrollments); the token carries no
//! scope a callee would have to trust.
//!
//! ```text
//! header   {"alg":"ES256","typ":"edgecoder-service+jwt","kid":"<16 hex>"}
//! payload  {"iss":"<caller>","aud":"<callee>","req":"<digest>","jti","iat","exp"}
//! ```
//!
//! `req` is [`request_digest`] of the one request the token is for (method,
//! path, body): a token seen in a log or a proxy replays only that request,
//! and every call a function makes over this path is idempotent.
//!
//! A token lives at most [`MAX_SERVICE_TOKEN_SECS`] and names its one
//! audience, so a token captured in one callee's logs cannot be replayed
//! against another, and a leaked key of one function signs only as that
//! function: its `iss` must be the caller the key is registered for.
//! Rotation: list the new public key beside the old one in `service_keys`,
//! move the caller to the new private key, then drop the old public key.

use chrono::{DateTime, TimeDelta, Utc};
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions, UntrustedToken};
use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::keys::key_id;
use crate::tokens::{ALGORITHM, LEEWAY_SECS, MAX_TOKEN_BYTES};
use crate::{Error, SigningKey};

/// The `typ` of a service token: never an access token's `at+jwt`.
pub const SERVICE_TOKEN_TYPE: &str = "edgecoder-service+jwt";

/// Longest lifetime a callee accepts.
pub const MAX_SERVICE_TOKEN_SECS: i64 = 120;

/// The lifetime callers give their tokens (one call, with room for skew).
pub const SERVICE_TOKEN_SECS: i64 = 60;

/// The functions that call others, by the name they sign as.
pub const CALLERS: [&str; 2] = ["auth", "mesh"];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceClaims {
    iss: String,
    aud: String,
    req: String,
    jti: String,
}

/// The digest a token binds: blake3 over the method, the path (no query) and
/// the exact body bytes.
pub fn request_digest(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().to_hex().to_string()
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A token for one call from `caller` to `callee` at `now_ms`, for the
/// request whose [`request_digest`] is `request`.
pub fn mint(
    key: &SigningKey,
    caller: &str,
    callee: &str,
    request: &str,
    now_ms: i64,
    jti: &str,
) -> Result<String, Error> {
    let header = Header::empty()
        .with_key_id(key.kid())
        .with_token_type(SERVICE_TOKEN_TYPE);
    let mut claims = Claims::new(ServiceClaims {
        iss: caller.to_owned(),
        aud: callee.to_owned(),
        req: request.to_owned(),
        jti: jti.to_owned(),
    });
    claims.issued_at = Some(at(now_ms));
    claims.expiration = Some(at(now_ms) + TimeDelta::seconds(SERVICE_TOKEN_SECS));
    Es256
        .token(&header, &claims, key.ecdsa())
        .map_err(|e| Error::Config(format!("cannot sign a service token: {e}")))
}

/// The callers' public keys, each registered for one caller: the
/// `service_keys` setting, a JSON object from caller name to a list of
/// public keys (base64 SPKI DER, as `edgecoder keygen --public` prints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceKeys(Vec<(String, String, VerifyingKey)>);

impl ServiceKeys {
    /// Parses the setting; every key must belong to a known caller, and a
    /// key may serve one caller only.
    pub fn parse(text: &str) -> Result<ServiceKeys, Error> {
        use base64::Engine as _;
        use p256::pkcs8::DecodePublicKey as _;
        let bad = |why: &str| Error::Config(format!("service_keys: {why}"));
        let map: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(text)
            .map_err(|_| bad("want a JSON object from caller to a list of public keys"))?;
        let mut out: Vec<(String, String, VerifyingKey)> = Vec::new();
        for (caller, keys) in map {
            if !CALLERS.contains(&caller.as_str()) {
                return Err(bad(&format!("unknown caller {caller:?}")));
            }
            for k in keys {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .map_err(|_| bad("a key is not base64"))?;
                let key = VerifyingKey::from_public_key_der(&der)
                    .map_err(|_| bad("a key is not a P-256 public key (SPKI DER)"))?;
                let kid = key_id(&key);
                if out.iter().any(|(_, id, _)| *id == kid) {
                    return Err(bad("one key is listed twice (a key serves one caller)"));
                }
                out.push((caller.clone(), kid, key));
            }
        }
        Ok(ServiceKeys(out))
    }

    /// Whether no caller is registered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller a bearer `token` proves, if it is a valid service token
    /// for `callee` at `now_ms`: ES256 only, `typ` a service token's, `kid`
    /// registered, signature, `iss` the caller that key is registered for,
    /// `aud` exactly `callee`, `iat`/`exp` within the leeway and at most
    /// [`MAX_SERVICE_TOKEN_SECS`] apart, `req` the digest of this `request`.
    /// `None` for anything else, including every access token.
    pub fn caller(&self, token: &str, callee: &str, request: &str, now_ms: i64) -> Option<String> {
        if self.0.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let untrusted = UntrustedToken::new(token).ok()?;
        if untrusted.algorithm() != ALGORITHM
            || untrusted.header().token_type.as_deref() != Some(SERVICE_TOKEN_TYPE)
        {
            return None;
        }
        let kid = untrusted.header().key_id.as_deref()?;
        let (caller, _, key) = self.0.iter().find(|(_, id, _)| id == kid)?;
        let verified = Es256
            .validator::<ServiceClaims>(key)
            .validate(&untrusted)
            .ok()?;
        let claims = verified.claims();
        let options = TimeOptions::new(TimeDelta::seconds(LEEWAY_SECS), move || at(now_ms));
        claims.validate_expiration(&options).ok()?;
        let (iat, exp) = (claims.issued_at?, claims.expiration?);
        if iat > at(now_ms) + TimeDelta::seconds(LEEWAY_SECS)
            || exp - iat > TimeDelta::seconds(MAX_SERVICE_TOKEN_SECS)
        {
            return None;
        }
        (claims.custom.iss == *caller
            && claims.custom.aud == callee
            && claims.custom.req == request)
            .then(|| caller.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey as _;

    struct Fill(u8);
    impl crate::Rng for Fill {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(self.0);
        }
    }

    fn spki(k: &SigningKey) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(
            k.verifying_key()
                .to_public_key_der()
                .expect("spki")
                .as_bytes(),
        )
    }

    #[test]
    fn a_token_proves_its_caller_to_its_one_audience_only() {
        let (auth, mesh) = (
            SigningKey::generate(&Fill(3)),
            SigningKey::generate(&Fill(5)),
        );
        let keys = ServiceKeys::parse(&format!(
            r#"{{"auth": ["{}"], "mesh": ["{}"]}}"#,
            spki(&auth),
            spki(&mesh)
        ))
        .expect("keys");
        let now = 1_800_000_000_000;
        let req = request_digest("POST", "/ledger/entries", b"{}");
        let t = mint(&auth, "auth", "ledger", &req, now, "j1").expect("mint");
        assert_eq!(
            keys.caller(&t, "ledger", &req, now).as_deref(),
            Some("auth")
        );
        assert_eq!(keys.caller(&t, "auth", &req, now), None, "another audience");
        assert_eq!(
            keys.caller(&t, "ledger", &req, now + 120_000),
            None,
            "expired"
        );
        let other = request_digest("POST", "/ledger/entries", b"{\"x\":1}");
        assert_eq!(
            keys.caller(&t, "ledger", &other, now),
            None,
            "another request"
        );
        // Mesh's key cannot sign as auth.
        let forged = mint(&mesh, "auth", "ledger", &req, now, "j2").expect("mint");
        assert_eq!(keys.caller(&forged, "ledger", &req, now), None);
        // A key nobody registered proves nothing.
        let stranger = SigningKey::generate(&Fill(9));
        let t = mint(&stranger, "auth", "ledger", &req, now, "j3").expect("mint");
        assert_eq!(keys.caller(&t, "ledger", &req, now), None);
        // An access token signed with a registered key is not a service token.
        let claims = crate::tokens::AccessClaims {
            iss: "auth".into(),
            aud: "ledger".into(),
            sub: "u".into(),
            sid: "s".into(),
            jti: "j".into(),
            roles: vec![],
            auth_time: 0,
            amr: vec![],
        };
        let access = crate::tokens::issue(&auth, claims, now, 60).expect("issue");
        assert_eq!(keys.caller(&access, "ledger", &req, now), None);
        for bad in [r#"{"ledger": []}"#, r#"{"auth": ["not base64!"]}"#, "[]"] {
            assert!(ServiceKeys::parse(bad).is_err(), "{bad}");
        }
    }
}
