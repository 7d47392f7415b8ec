//! Access tokens: ES256 JWTs (RFC 7519 / RFC 7515), their JWK Set (RFC 7517),
//! and the stateless verifier every function uses.
//!
//! In scope: issuing a token with a [`SigningKey`] (`kid` in the header,
//! `typ: at+jwt`, `iat` and `exp` from the caller's clock), publishing public
//! keys as a JWK Set, and verifying a bearer token: **ES256 only** (`alg:
//! none`, HMAC and every other algorithm are refused before any key is
//! touched), `kid` must name a published key, signature, `exp` and `iat` with
//! a small leeway, `iss` and `aud` exact. Out of scope: sessions, refresh
//! tokens and revocation (the auth function), and key storage (the runtime's
//! secret store).
//!
//! ```text
//! header   {"alg":"ES256","typ":"at+jwt","kid":"<16 hex>"}
//! payload  {"iss","aud","sub","sid","jti","roles":[..],"auth_time","amr":[..],"iat","exp"}
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions, UntrustedToken};
use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::keys::key_id;
use crate::{Error, SigningKey};

/// Longest access-token lifetime the kernel will issue (15 minutes).
pub const MAX_ACCESS_TOKEN_SECS: i64 = 15 * 60;

/// Clock skew tolerated on `exp` and `iat`.
pub const LEEWAY_SECS: i64 = 30;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "ES256";

/// Longest token accepted for parsing; anything longer is refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of an access token besides `iat` and `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Token id.
    pub jti: String,
    /// Roles held when the token was issued.
    pub roles: Vec<String>,
    /// When the user last authenticated (seconds since the epoch).
    pub auth_time: i64,
    /// Authentication methods (RFC 8176), e.g. `pwd`.
    pub amr: Vec<String>,
}

/// A verified token: its claims plus `iat` and `exp` (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The claims.
    pub claims: AccessClaims,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Issues an access token valid for `lifetime_secs` (at most
/// [`MAX_ACCESS_TOKEN_SECS`]) from `now_ms`.
pub fn issue(
    key: &SigningKey,
    claims: AccessClaims,
    now_ms: i64,
    lifetime_secs: i64,
) -> Result<String, Error> {
    let lifetime = lifetime_secs.clamp(1, MAX_ACCESS_TOKEN_SECS);
    let header = Header::empty()
        .with_key_id(key.kid())
        .with_token_type("at+jwt");
    let mut full = Claims::new(claims);
    full.issued_at = Some(at(now_ms));
    full.expiration = Some(at(now_ms) + TimeDelta::seconds(lifetime));
    Es256
        .token(&header, &full, key.ecdsa())
        .map_err(|e| Error::Config(format!("cannot sign access token: {e}")))
}

/// Compares a presented shared secret (e.g. the `service_token`) with the
/// configured one in constant time (comparing fixed-size digests).
pub fn secret_matches(presented: &str, configured: Option<&str>) -> bool {
    match configured {
        Some(c) => blake3::hash(presented.as_bytes()) == blake3::hash(c.as_bytes()),
        None => false,
    }
}

/// A JWK (RFC 7518 §6.2) for a P-256 public key.
pub fn jwk(key: &VerifyingKey) -> Json {
    let point = key.to_encoded_point(false);
    let coord =
        |c: Option<&p256::FieldBytes>| c.map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default();
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": coord(point.x()),
        "y": coord(point.y()),
        "kid": key_id(key),
        "alg": ALGORITHM,
        "use": "sig",
    })
}

/// The JWK Set of `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a VerifyingKey>) -> Json {
    json!({ "keys": keys.into_iter().map(jwk).collect::<Vec<_>>() })
}

/// Verifies access tokens against a set of public keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: Vec<(String, VerifyingKey)>,
}

/// Why a token was refused; for logs, never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a compact JWS, too long, or not JSON where JSON belongs.
    Malformed,
    /// `alg` is not ES256.
    Algorithm,
    /// No `kid`, or one not in the key set.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// `exp` missing or past.
    Expired,
    /// `iat` missing or in the future.
    IssuedAt,
    /// `iss` or `aud` is not ours.
    Audience,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm not allowed",
            Refusal::UnknownKey => "unknown key id",
            Refusal::Signature => "bad signature",
            Refusal::Expired => "expired",
            Refusal::IssuedAt => "issued in the future",
            Refusal::Audience => "wrong issuer or audience",
        }
    }
}

impl Verifier {
    /// A verifier for tokens from `issuer` to `audience`, signed by any of `keys`.
    pub fn new<'a>(
        issuer: &str,
        audience: &str,
        keys: impl IntoIterator<Item = &'a VerifyingKey>,
    ) -> Self {
        Verifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: keys.into_iter().map(|k| (key_id(k), *k)).collect(),
        }
    }

    /// A verifier trusting the keys `config` publishes at `now_ms` (the
    /// signing key, and the previous one during its grace window).
    pub fn from_config(config: &crate::Config, now_ms: i64) -> Self {
        Self::new(
            &config.issuer,
            &config.audience,
            config.verification_keys(now_ms),
        )
    }

    /// Verifies `token` at `now_ms`; the error names the refusal for the log.
    pub fn check(&self, token: &str, now_ms: i64) -> Result<Verified, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed);
        }
        let untrusted = UntrustedToken::new(token).map_err(|_| Refusal::Malformed)?;
        // Decided on the header alone, before any key is chosen: `none`,
        // HS256 keyed with our public key, and every other algorithm.
        if untrusted.algorithm() != ALGORITHM {
            return Err(Refusal::Algorithm);
        }
        // Only access tokens (RFC 9068 `at+jwt`): never a service token or
        // an ID token, whatever key signed it.
        if untrusted.header().token_type.as_deref() != Some("at+jwt") {
            return Err(Refusal::Malformed);
        }
        let kid = untrusted
            .header()
            .key_id
            .as_deref()
            .ok_or(Refusal::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| key)
            .ok_or(Refusal::UnknownKey)?;
        let token = Es256
            .validator::<AccessClaims>(key)
            .validate(&untrusted)
            .map_err(|_| Refusal::Signature)?;
        let claims = token.claims();
        let options = TimeOptions::new(TimeDelta::seconds(LEEWAY_SECS), move || at(now_ms));
        claims
            .validate_expiration(&options)
            .map_err(|_| Refusal::Expired)?;
        let iat = claims.issued_at.ok_or(Refusal::IssuedAt)?;
        if iat > at(now_ms) + TimeDelta::seconds(LEEWAY_SECS) {
            return Err(Refusal::IssuedAt);
        }
        let exp = claims.expiration.ok_or(Refusal::Expired)?;
        let custom = &claims.custom;
        if custom.iss != self.issuer || custom.aud != self.audience {
            return Err(Refusal::Audience);
        }
        Ok(Verified {
            claims: custom.clone(),
            iat: iat.timestamp(),
            exp: exp.timestamp(),
        })
    }

    /// Verifies a bearer token for a request: any refusal is the kernel's 401
    /// `invalid_token`, with the reason kept for the operator's log.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Verified, Error> {
        self.check(token, now_ms)
            .map_err(|r| Error::InvalidToken(r.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seq(std::cell::Cell<u8>);
    impl crate::Rng for Seq {
        fn fill(&self, buf: &mut [u8]) {
            for b in buf {
                self.0.set(self.0.get().wrapping_mul(31).wrapping_add(7));
                *b = self.0.get();
            }
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::generate(&Seq(std::cell::Cell::new(seed)))
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://edge.example".into(),
            aud: "edgecoder".into(),
            sub: "user-1".into(),
            sid: "session-1".into(),
            jti: "token-1".into(),
            roles: vec!["user".into()],
            auth_time: NOW / 1000,
            amr: vec!["pwd".into()],
        }
    }

    fn verifier(k: &SigningKey) -> Verifier {
        Verifier::new("https://edge.example", "edgecoder", [k.verifying_key()])
    }

    fn b64(v: &Json) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

    fn payload(exp_offset_secs: i64) -> Json {
        let mut p = serde_json::to_value(claims()).expect("claims");
        p["iat"] = json!(NOW / 1000);
        p["exp"] = json!(NOW / 1000 + exp_offset_secs);
        p
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let k = key(1);
        let t = issue(&k, claims(), NOW, 900).expect("issue");
        let v = verifier(&k).check(&t, NOW + 1000).expect("valid");
        assert_eq!(v.claims, claims());
        assert_eq!(v.exp - v.iat, 900);
        let header: Json = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], k.kid());
        assert_eq!(header["typ"], "at+jwt");
    }

    #[test]
    fn lifetime_is_capped_at_fifteen_minutes() {
        let k = key(1);
        let t = issue(&k, claims(), NOW, 86_400).expect("issue");
        let v = verifier(&k).check(&t, NOW).expect("valid");
        assert_eq!(v.exp - v.iat, MAX_ACCESS_TOKEN_SECS);
    }

    #[test]
    fn attack_alg_none_is_refused() {
        let k = key(1);
        let header = json!({"alg": "none", "kid": k.kid()});
        let t = format!("{}.{}.", b64(&header), b64(&payload(600)));
        let got = verifier(&k).check(&t, NOW);
        assert!(
            matches!(got, Err(Refusal::Algorithm | Refusal::Malformed)),
            "{got:?}"
        );
    }

    #[test]
    fn attack_hs256_signed_with_the_public_key_is_refused() {
        use jwt_compact::alg::{Hs256, Hs256Key};
        let k = key(1);
        // The classic confusion: the public key, as published, used as an
        // HMAC secret.
        let public = k.verifying_key().to_encoded_point(false);
        let hmac_key = Hs256Key::new(public.as_bytes());
        let header = Header::empty().with_key_id(k.kid());
        let mut c = Claims::new(claims());
        c.issued_at = Some(at(NOW));
        c.expiration = Some(at(NOW + 600_000));
        let t = Hs256.token(&header, &c, &hmac_key).expect("hs256");
        assert_eq!(verifier(&k).check(&t, NOW), Err(Refusal::Algorithm));
    }

    #[test]
    fn attack_expired_token_is_refused() {
        let k = key(1);
        let t = issue(&k, claims(), NOW, 60).expect("issue");
        assert!(
            verifier(&k)
                .check(&t, NOW + 60_000 + LEEWAY_SECS * 1000 - 1000)
                .is_ok()
        );
        assert_eq!(
            verifier(&k).check(&t, NOW + 60_000 + LEEWAY_SECS * 1000 + 1000),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn attack_unknown_kid_is_refused() {
        let (k, other) = (key(1), key(2));
        let t = issue(&other, claims(), NOW, 600).expect("issue");
        assert_eq!(verifier(&k).check(&t, NOW), Err(Refusal::UnknownKey));
    }

    #[test]
    fn attack_known_kid_with_another_keys_signature_is_refused() {
        let (k, other) = (key(1), key(2));
        let header = Header::empty()
            .with_key_id(k.kid())
            .with_token_type("at+jwt");
        let mut c = Claims::new(claims());
        c.issued_at = Some(at(NOW));
        c.expiration = Some(at(NOW + 600_000));
        let t = Es256.token(&header, &c, other.ecdsa()).expect("sign");
        assert_eq!(verifier(&k).check(&t, NOW), Err(Refusal::Signature));
    }

    #[test]
    fn attack_a_token_of_another_type_is_refused() {
        let k = key(1);
        for typ in [None, Some("edgecoder-service+jwt"), Some("JWT")] {
            let mut header = Header::empty().with_key_id(k.kid());
            if let Some(t) = typ {
                header = header.with_token_type(t);
            }
            let mut c = Claims::new(claims());
            c.issued_at = Some(at(NOW));
            c.expiration = Some(at(NOW + 600_000));
            let t = Es256.token(&header, &c, k.ecdsa()).expect("sign");
            assert_eq!(
                verifier(&k).check(&t, NOW),
                Err(Refusal::Malformed),
                "{typ:?}"
            );
        }
    }

    #[test]
    fn attack_wrong_issuer_or_audience_is_refused() {
        let k = key(1);
        for (iss, aud) in [
            ("https://evil.example", "edgecoder"),
            ("https://edge.example", "other"),
        ] {
            let mut c = claims();
            c.iss = iss.into();
            c.aud = aud.into();
            let t = issue(&k, c, NOW, 600).expect("issue");
            assert_eq!(
                verifier(&k).check(&t, NOW),
                Err(Refusal::Audience),
                "{iss} {aud}"
            );
        }
    }

    #[test]
    fn attack_tampered_payload_is_refused() {
        let k = key(1);
        let t = issue(&k, claims(), NOW, 600).expect("issue");
        let parts: Vec<&str> = t.split('.').collect();
        let mut p: Json =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        p["roles"] = json!(["user", "system_admin"]);
        let forged = format!("{}.{}.{}", parts[0], b64(&p), parts[2]);
        assert_eq!(verifier(&k).check(&forged, NOW), Err(Refusal::Signature));
    }

    #[test]
    fn tokens_without_exp_or_from_the_future_are_refused() {
        let k = key(1);
        let header = Header::empty()
            .with_key_id(k.kid())
            .with_token_type("at+jwt");
        let mut no_exp = Claims::new(claims());
        no_exp.issued_at = Some(at(NOW));
        let t = Es256.token(&header, &no_exp, k.ecdsa()).expect("sign");
        assert_eq!(verifier(&k).check(&t, NOW), Err(Refusal::Expired));
        let future = issue(&k, claims(), NOW + 3_600_000, 600).expect("issue");
        assert_eq!(verifier(&k).check(&future, NOW), Err(Refusal::IssuedAt));
    }

    #[test]
    fn garbage_and_oversized_tokens_are_malformed() {
        let k = key(1);
        for t in ["", "abc", "a.b.c", "..", &"a".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verifier(&k).check(t, NOW).is_err(), "{t:.20}");
        }
        assert_eq!(
            verifier(&k).check(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn tokens_of_a_rotated_key_verify_until_they_expire() {
        struct Src(Vec<(&'static str, String)>);
        impl crate::ConfigSource for Src {
            fn var(&self, n: &str) -> Option<String> {
                self.0.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
            }
            fn secret(&self, n: &str) -> Option<String> {
                self.var(n)
            }
        }
        let (old, new) = (key(1), key(2));
        let switch_secs = NOW / 1000;
        let cfg = crate::Config::load(&Src(vec![
            ("signing_key", new.to_pkcs8_pem().expect("pem")),
            ("previous_signing_key", old.to_pkcs8_pem().expect("pem")),
            ("previous_key_retired_at", switch_secs.to_string()),
            ("issuer", "https://edge.example".to_owned()),
            ("mail_api_key", "re_test".to_owned()),
            ("mail_from", "no-reply@edge.example".to_owned()),
        ]))
        .expect("config");
        // Signed by the old key just before the switch, for the full lifetime.
        let t = issue(&old, claims(), NOW - 1000, MAX_ACCESS_TOKEN_SECS).expect("issue");
        let during = NOW + 10 * 60 * 1000;
        let v = Verifier::from_config(&cfg, during);
        assert!(v.check(&t, during).is_ok());
        let after = (switch_secs + MAX_ACCESS_TOKEN_SECS + LEEWAY_SECS) * 1000 + 1;
        let v = Verifier::from_config(&cfg, after);
        assert_eq!(v.check(&t, after), Err(Refusal::UnknownKey));
        let fresh = issue(&new, claims(), after, 60).expect("issue");
        assert!(v.check(&fresh, after).is_ok());
    }

    #[test]
    fn jwks_publishes_p256_coordinates_and_kid() {
        let k = key(1);
        let set = jwks([k.verifying_key()]);
        let j = &set["keys"][0];
        assert_eq!(j["kty"], "EC");
        assert_eq!(j["crv"], "P-256");
        assert_eq!(j["alg"], "ES256");
        assert_eq!(j["kid"], k.kid());
        let x = URL_SAFE_NO_PAD
            .decode(j["x"].as_str().expect("x"))
            .expect("b64");
        let y = URL_SAFE_NO_PAD
            .decode(j["y"].as_str().expect("y"))
            .expect("b64");
        let mut sec1 = vec![4u8];
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        let back = VerifyingKey::from_sec1_bytes(&sec1).expect("point");
        assert_eq!(&back, k.verifying_key());
    }
}
