//! HTTP message signatures in the shape of RFC 9421 with `ecdsa-p256-sha256`,
//! and `Content-Digest` (RFC 9530) over the raw body bytes.
//!
//! In scope: building the signature base, signing (device agents), and
//! checking a request (the mesh): the covered components must include
//! `@method`, `@target-uri` and `content-digest`; `created`, `nonce` and
//! `keyid` are required; `created` must be within ±[`MAX_SKEW_SECS`]; the
//! digest must match the body; the signature is r‖s over the base. Out of
//! scope: key lookup and nonce replay tracking (the caller's storage).
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=1700000000;nonce="n";keyid="k";alg="ecdsa-p256-sha256"
//! Signature: sig1=:<base64 of r‖s>:
//! base:
//!   "@method": POST
//!   "@target-uri": https://edge.example/mesh/heartbeat
//!   "content-digest": sha-256=:…:
//!   "@signature-params": ("@method" "@target-uri" "content-digest");created=…;nonce="n";keyid="k";alg="ecdsa-p256-sha256"
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The only algorithm accepted.
pub const ALG: &str = "ecdsa-p256-sha256";
/// Allowed clock skew for `created`.
pub const MAX_SKEW_SECS: i64 = 60;
/// Components every signature must cover.
pub const REQUIRED: [&str; 3] = ["@method", "@target-uri", "content-digest"];
/// Longest `Signature-Input` we parse.
const MAX_HEADER_BYTES: usize = 2048;

/// Why a signed request was refused; each maps to a stable problem code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No signature headers.
    #[error("request is not signed")]
    Missing,
    /// Headers present but not parseable, or a required part missing.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// `created` outside the allowed skew.
    #[error("signature expired or from the future")]
    Expired,
    /// The body does not match `Content-Digest`.
    #[error("content digest mismatch")]
    DigestMismatch,
    /// The signature does not verify.
    #[error("signature invalid")]
    Invalid,
}

impl SigError {
    /// The problem `code` this refusal is reported with.
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Missing => "mesh_unauthorized",
            SigError::Malformed(_) | SigError::Invalid => "signature_invalid",
            SigError::Expired => "signature_expired",
            SigError::DigestMismatch => "content_digest_mismatch",
        }
    }
}

/// The signature parameters of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Signature label (e.g. `sig1`).
    pub label: String,
    /// Covered components, in order.
    pub components: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Single-use value.
    pub nonce: String,
    /// The signing key's id.
    pub keyid: String,
    /// Optional expiry, Unix seconds (enforced when present).
    pub expires: Option<i64>,
    /// The serialised inner list with parameters, exactly as signed.
    serialized: String,
}

/// `sha-256=:<base64>:` for `body`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

fn sf_string(v: &str) -> Result<String, SigError> {
    let inner = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .ok_or(SigError::Malformed("string parameter"))?;
    if inner.contains(['"', '\\']) || inner.chars().any(|c| !(' '..='~').contains(&c)) {
        return Err(SigError::Malformed("string parameter"));
    }
    Ok(inner.to_owned())
}

/// Parses `Signature-Input` (one signature).
pub fn parse_input(header: &str) -> Result<Params, SigError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(SigError::Malformed("Signature-Input too long"));
    }
    let (label, rest) = header
        .split_once('=')
        .ok_or(SigError::Malformed("Signature-Input"))?;
    let label = label.trim();
    if label.is_empty()
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SigError::Malformed("signature label"));
    }
    let rest = rest.trim();
    let close = rest
        .find(')')
        .ok_or(SigError::Malformed("component list"))?;
    let list = rest
        .strip_prefix('(')
        .map(|r| &r[..close - 1])
        .ok_or(SigError::Malformed("component list"))?;
    let components = list
        .split_whitespace()
        .map(sf_string)
        .collect::<Result<Vec<_>, _>>()?;
    let (mut created, mut nonce, mut keyid, mut alg, mut expires) = (None, None, None, None, None);
    for param in rest[close + 1..].split(';').filter(|p| !p.is_empty()) {
        let (k, v) = param
            .split_once('=')
            .ok_or(SigError::Malformed("parameter"))?;
        match k {
            "created" => created = v.parse::<i64>().ok(),
            "nonce" => nonce = Some(sf_string(v)?),
            "keyid" => keyid = Some(sf_string(v)?),
            "alg" => alg = Some(sf_string(v)?),
            "expires" => {
                expires = Some(
                    v.parse::<i64>()
                        .map_err(|_| SigError::Malformed("expires"))?,
                );
            }
            "tag" => {}
            _ => return Err(SigError::Malformed("unknown parameter")),
        }
    }
    if alg.as_deref().is_some_and(|a| a != ALG) {
        return Err(SigError::Malformed("algorithm must be ecdsa-p256-sha256"));
    }
    if !REQUIRED.iter().all(|r| components.iter().any(|c| c == r)) {
        return Err(SigError::Malformed(
            "must cover @method, @target-uri and content-digest",
        ));
    }
    Ok(Params {
        label: label.to_owned(),
        components,
        created: created.ok_or(SigError::Malformed("created"))?,
        nonce: nonce
            .filter(|n| !n.is_empty())
            .ok_or(SigError::Malformed("nonce"))?,
        keyid: keyid
            .filter(|k| !k.is_empty())
            .ok_or(SigError::Malformed("keyid"))?,
        expires,
        serialized: rest.to_owned(),
    })
}

/// The signature base for `params` over the request's components.
pub fn base(
    params: &Params,
    method: &str,
    target_uri: &str,
    digest: &str,
) -> Result<String, SigError> {
    let mut out = String::new();
    for c in &params.components {
        let value = match c.as_str() {
            "@method" => method.to_ascii_uppercase(),
            "@target-uri" => target_uri.to_owned(),
            "content-digest" => digest.to_owned(),
            _ => {
                return Err(SigError::Malformed(
                    "only @method, @target-uri and content-digest may be covered",
                ));
            }
        };
        out.push_str(&format!("\"{c}\": {value}\n"));
    }
    out.push_str(&format!("\"@signature-params\": {}", params.serialized));
    Ok(out)
}

/// Headers a signer sends: (`Content-Digest`, `Signature-Input`, `Signature`).
pub fn sign(
    key: &SigningKey,
    keyid: &str,
    nonce: &str,
    created: i64,
    method: &str,
    target_uri: &str,
    body: &[u8],
) -> Result<(String, String, String), SigError> {
    let digest = content_digest(body);
    let input = format!(
        "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created={created};nonce=\"{nonce}\";keyid=\"{keyid}\";alg=\"{ALG}\""
    );
    let params = parse_input(&input)?;
    let sig: Signature = key.sign(base(&params, method, target_uri, &digest)?.as_bytes());
    let sig = format!("sig1=:{}:", STANDARD.encode(sig.to_bytes()));
    Ok((digest, input, sig))
}

/// What remains to check once the time window and the digest held: the
/// signature base and the signature (r‖s) over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The signature base.
    pub base: String,
    /// r‖s, 64 bytes.
    pub signature: Vec<u8>,
}

/// Checks everything but the signature itself: `created` (and `expires`)
/// against `now` (Unix seconds), `Content-Digest` against the raw body, and
/// the `Signature` header's shape; returns what the signature must cover.
/// The caller verifies [`Pending`] with the key named by `keyid`, in
/// software ([`verify`]) or with the platform's crypto.
pub fn prepare(
    params: &Params,
    signature_header: &str,
    digest_header: Option<&str>,
    method: &str,
    target_uri: &str,
    body: &[u8],
    now: i64,
) -> Result<Pending, SigError> {
    // Saturating: a hostile `created` near i64::MIN must not overflow.
    if now.saturating_sub(params.created).saturating_abs() > MAX_SKEW_SECS
        || params.expires.is_some_and(|e| now > e)
    {
        return Err(SigError::Expired);
    }
    let digest = digest_header.ok_or(SigError::Malformed("Content-Digest missing"))?;
    if digest.trim() != content_digest(body) {
        return Err(SigError::DigestMismatch);
    }
    let prefix = format!("{}=:", params.label);
    let b64 = signature_header
        .trim()
        .strip_prefix(&prefix)
        .and_then(|s| s.strip_suffix(':'))
        .ok_or(SigError::Malformed("Signature"))?;
    let signature = STANDARD
        .decode(b64)
        .map_err(|_| SigError::Malformed("Signature"))?;
    if signature.len() != 64 {
        return Err(SigError::Invalid);
    }
    Ok(Pending {
        base: base(params, method, target_uri, digest.trim())?,
        signature,
    })
}

/// Checks a request's signature with `key` (looked up by the caller from
/// [`parse_input`]'s `keyid`) in software. `now` is Unix seconds.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    params: &Params,
    signature_header: &str,
    digest_header: Option<&str>,
    method: &str,
    target_uri: &str,
    body: &[u8],
    now: i64,
    key: &VerifyingKey,
) -> Result<(), SigError> {
    let p = prepare(
        params,
        signature_header,
        digest_header,
        method,
        target_uri,
        body,
        now,
    )?;
    let sig = Signature::from_slice(&p.signature).map_err(|_| SigError::Invalid)?;
    key.verify(p.base.as_bytes(), &sig)
        .map_err(|_| SigError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        let mut b = [seed; 32];
        b[0] = 1;
        SigningKey::from_slice(&b).expect("key")
    }

    const URI: &str = "https://edge.example/mesh/heartbeat";
    const NOW: i64 = 1_800_000_000;

    fn signed(body: &[u8]) -> (String, String, String) {
        sign(&key(3), "node-1", "n-123", NOW, "POST", URI, body).expect("sign")
    }

    fn check(
        h: &(String, String, String),
        method: &str,
        uri: &str,
        body: &[u8],
        now: i64,
        k: &SigningKey,
    ) -> Result<(), SigError> {
        let params = parse_input(&h.1)?;
        verify(
            &params,
            &h.2,
            Some(&h.0),
            method,
            uri,
            body,
            now,
            k.verifying_key(),
        )
    }

    #[test]
    fn signed_requests_verify() {
        let h = signed(b"{\"cpu\":3}");
        assert_eq!(
            check(&h, "POST", URI, b"{\"cpu\":3}", NOW + 5, &key(3)),
            Ok(())
        );
        let p = parse_input(&h.1).expect("params");
        assert_eq!(
            (p.keyid.as_str(), p.nonce.as_str(), p.created),
            ("node-1", "n-123", NOW)
        );
    }

    #[test]
    fn each_tampering_has_its_refusal() {
        let body = b"{\"cpu\":3}";
        let h = signed(body);
        assert_eq!(
            check(&h, "POST", URI, b"{\"cpu\":4}", NOW, &key(3)),
            Err(SigError::DigestMismatch)
        );
        assert_eq!(
            check(&h, "PUT", URI, body, NOW, &key(3)),
            Err(SigError::Invalid)
        );
        assert_eq!(
            check(
                &h,
                "POST",
                "https://edge.example/mesh/other",
                body,
                NOW,
                &key(3)
            ),
            Err(SigError::Invalid)
        );
        assert_eq!(
            check(&h, "POST", URI, body, NOW, &key(4)),
            Err(SigError::Invalid)
        );
        assert_eq!(
            check(&h, "POST", URI, body, NOW + 61, &key(3)),
            Err(SigError::Expired)
        );
        assert_eq!(
            check(&h, "POST", URI, body, NOW - 61, &key(3)),
            Err(SigError::Expired)
        );
        // A body swapped together with its digest still fails the signature.
        let forged = (content_digest(b"{}"), h.1.clone(), h.2.clone());
        assert_eq!(
            check(&forged, "POST", URI, b"{}", NOW, &key(3)),
            Err(SigError::Invalid)
        );
        // Changed parameters are part of what was signed.
        let input = h.1.replace("n-123", "n-124");
        assert_eq!(
            check(
                &(h.0.clone(), input, h.2.clone()),
                "POST",
                URI,
                body,
                NOW,
                &key(3)
            ),
            Err(SigError::Invalid)
        );
    }

    #[test]
    fn inputs_must_cover_the_required_components() {
        for bad in [
            "sig1=(\"@method\" \"@target-uri\");created=1;nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=1;keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=1;nonce=\"n\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=1;nonce=\"n\";keyid=\"k\";alg=\"hmac-sha256\"",
            "no list at all",
        ] {
            assert!(parse_input(bad).is_err(), "{bad}");
        }
        assert_eq!(SigError::Expired.code(), "signature_expired");
        assert_eq!(SigError::DigestMismatch.code(), "content_digest_mismatch");
    }

    #[test]
    fn extreme_and_expired_times_are_refused_without_overflow() {
        let body = b"{}";
        let h = signed(body);
        let p = parse_input(&h.1).expect("params");
        let extreme = Params {
            created: i64::MIN,
            ..p.clone()
        };
        assert_eq!(
            verify(
                &extreme,
                &h.2,
                Some(&h.0),
                "POST",
                URI,
                body,
                NOW,
                key(3).verifying_key()
            ),
            Err(SigError::Expired)
        );
        let lapsed = Params {
            expires: Some(NOW - 1),
            ..p
        };
        assert_eq!(
            verify(
                &lapsed,
                &h.2,
                Some(&h.0),
                "POST",
                URI,
                body,
                NOW,
                key(3).verifying_key()
            ),
            Err(SigError::Expired)
        );
        assert!(parse_input(&h.1.replace(";alg=", ";expires=soon;alg=")).is_err());
    }
}
