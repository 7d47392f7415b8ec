//! The relying-party checks of WebAuthn Level 3, in pure Rust (it runs in
//! wasm32 on Workers and Spin, where webauthn-rs and OpenSSL do not).
//!
//! In scope: parsing `clientDataJSON`, authenticator data and the CBOR
//! attestation object; COSE public keys for ES256 (-7), EdDSA (-8, Ed25519)
//! and RS256 (-257); signature checks (ES256 accepts high-S, as WebAuthn
//! authenticators may produce it); attestation statements `none` and
//! `packed` self attestation. Out of scope: challenges, origins and storage
//! (the ceremonies in `api::passkeys` decide those), and attestation trust
//! chains (`packed` with an `x5c` chain is refused until a trust store is
//! configured, rather than accepted unchecked).

use ciborium::Value as Cbor;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// User present.
pub const FLAG_UP: u8 = 0x01;
/// User verified.
pub const FLAG_UV: u8 = 0x04;
/// Backup eligible.
pub const FLAG_BE: u8 = 0x08;
/// Backed up.
pub const FLAG_BS: u8 = 0x10;
/// Attested credential data present.
pub const FLAG_AT: u8 = 0x40;
/// Extension data present.
pub const FLAG_ED: u8 = 0x80;

/// COSE algorithm ids we accept, in order of preference.
pub const ALGORITHMS: [i64; 3] = [ES256, EDDSA, RS256];
/// ECDSA P-256 with SHA-256.
pub const ES256: i64 = -7;
/// Ed25519.
pub const EDDSA: i64 = -8;
/// RSASSA-PKCS1-v1_5 with SHA-256.
pub const RS256: i64 = -257;

/// Longest credential id (WebAuthn L3 §5.8.3: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;

/// Why a WebAuthn response was refused (the check that failed).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    thiserror::Error,
    strum::EnumIter,
    strum::EnumMessage,
)]
pub enum Refusal {
    /// Bytes that do not parse as what the field must hold.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// `type` is not the ceremony's.
    #[default]
    #[error("wrong ceremony type")]
    Type,
    /// The origin is not an allowed one.
    #[error("origin not allowed")]
    Origin,
    /// `rpIdHash` is not SHA-256 of our RP id.
    #[error("rp id mismatch")]
    RpId,
    /// User presence not asserted.
    #[error("user not present")]
    UserPresence,
    /// User verification not performed.
    #[error("user not verified")]
    UserVerification,
    /// The key's algorithm is not one we accept.
    #[error("algorithm not allowed")]
    Algorithm,
    /// The signature does not verify.
    #[error("signature invalid")]
    Signature,
    /// An attestation format or statement we do not accept.
    #[error("attestation not accepted")]
    Attestation,
}

/// `clientDataJSON`, the fields we check.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientData {
    /// `webauthn.create` or `webauthn.get`.
    #[serde(rename = "type")]
    pub type_: String,
    /// base64url of the challenge.
    pub challenge: String,
    /// The caller's origin.
    pub origin: String,
    /// Whether the call came from a cross-origin iframe.
    #[serde(default, rename = "crossOrigin")]
    pub cross_origin: bool,
}

/// Parses `clientDataJSON`.
pub fn client_data(raw: &[u8]) -> Result<ClientData, Refusal> {
    serde_json::from_slice(raw).map_err(|_| Refusal::Malformed("clientDataJSON"))
}

/// A credential public key from its COSE form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoseKey {
    /// P-256, SEC1 uncompressed point.
    Es256(Vec<u8>),
    /// Ed25519 public key.
    EdDsa([u8; 32]),
    /// RSA modulus and exponent, big-endian.
    Rs256 {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

/// One CBOR item and nothing after it.
fn exactly_one(bytes: &[u8], what: &'static str) -> Result<Cbor, Refusal> {
    let mut reader = bytes;
    let v: Cbor = ciborium::de::from_reader(&mut reader).map_err(|_| Refusal::Malformed(what))?;
    if !reader.is_empty() {
        return Err(Refusal::Malformed(what));
    }
    Ok(v)
}

fn int(v: &Cbor) -> Option<i64> {
    v.as_integer().and_then(|i| i64::try_from(i).ok())
}

impl CoseKey {
    /// The COSE algorithm id.
    pub fn alg(&self) -> i64 {
        match self {
            CoseKey::Es256(_) => ES256,
            CoseKey::EdDsa(_) => EDDSA,
            CoseKey::Rs256 { .. } => RS256,
        }
    }

    /// Parses a COSE_Key (RFC 9052/9053) of one of the accepted kinds.
    pub fn from_cbor(bytes: &[u8]) -> Result<CoseKey, Refusal> {
        Self::from_value(&exactly_one(bytes, "COSE key")?)
    }

    fn from_value(v: &Cbor) -> Result<CoseKey, Refusal> {
        let bad = Refusal::Malformed("COSE key");
        let map = v.as_map().ok_or(bad)?;
        let get = |label: i64| {
            map.iter()
                .find(|(k, _)| int(k) == Some(label))
                .map(|(_, v)| v)
        };
        let kty = get(1).and_then(int).ok_or(bad)?;
        let alg = get(3).and_then(int).ok_or(bad)?;
        let bytes = |label: i64| get(label).and_then(Cbor::as_bytes).ok_or(bad);
        match (kty, alg) {
            // EC2, P-256 (crv 1).
            (2, ES256) => {
                if get(-1).and_then(int) != Some(1) {
                    return Err(Refusal::Algorithm);
                }
                let (x, y) = (bytes(-2)?, bytes(-3)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad);
                }
                let mut point = vec![4u8];
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| bad)?;
                Ok(CoseKey::Es256(point))
            }
            // OKP, Ed25519 (crv 6).
            (1, EDDSA) => {
                if get(-1).and_then(int) != Some(6) {
                    return Err(Refusal::Algorithm);
                }
                let x: [u8; 32] = bytes(-2)?.as_slice().try_into().map_err(|_| bad)?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| bad)?;
                // A small-order key accepts forged signatures under lax
                // verification; it is never a real passkey.
                if key.is_weak() {
                    return Err(bad);
                }
                Ok(CoseKey::EdDsa(x))
            }
            // RSA.
            (3, RS256) => {
                let (n, e) = (bytes(-1)?.clone(), bytes(-2)?.clone());
                // 2048 to 4096 bits (no leading zero byte padding a smaller
                // modulus), and the public exponent everybody uses.
                if !(256..=512).contains(&n.len()) || n[0] == 0 || e != [1, 0, 1] {
                    return Err(bad);
                }
                Ok(CoseKey::Rs256 { n, e })
            }
            _ => Err(Refusal::Algorithm),
        }
    }

    /// [`CoseKey::verify`], with ES256 through the runtime's signature port
    /// (WebCrypto on Workers costs a tenth of `p256` compiled to wasm).
    pub async fn verify_with(
        &self,
        signatures: &dyn edgecoder_kernel::SignatureCheck,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Refusal> {
        let CoseKey::Es256(point) = self else {
            return self.verify(message, signature);
        };
        let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| Refusal::Signature)?;
        // Authenticators may send high-S signatures, as valid as their
        // low-S twins; the port gets the normalised one.
        let sig = sig.normalize_s().unwrap_or(sig);
        match signatures
            .verify_p256(point, message, &sig.to_bytes())
            .await
        {
            Ok(true) => Ok(()),
            _ => Err(Refusal::Signature),
        }
    }

    /// Checks `signature` over `message` (WebAuthn signature formats: ES256
    /// DER, EdDSA raw 64 bytes, RS256 PKCS#1 v1.5).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Refusal> {
        match self {
            CoseKey::Es256(point) => {
                use p256::ecdsa::signature::Verifier as _;
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|_| Refusal::Signature)?;
                let sig =
                    p256::ecdsa::Signature::from_der(signature).map_err(|_| Refusal::Signature)?;
                // Authenticators may send high-S signatures, which are as
                // valid as their low-S twins.
                let sig = sig.normalize_s().unwrap_or(sig);
                key.verify(message, &sig).map_err(|_| Refusal::Signature)
            }
            CoseKey::EdDsa(x) => {
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(x).map_err(|_| Refusal::Signature)?;
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| Refusal::Signature)?;
                key.verify_strict(message, &sig)
                    .map_err(|_| Refusal::Signature)
            }
            CoseKey::Rs256 { n, e } => {
                use rsa::signature::Verifier as _;
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from_bytes_be(e),
                )
                .map_err(|_| Refusal::Signature)?;
                let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
                let sig = rsa::pkcs1v15::Signature::try_from(signature)
                    .map_err(|_| Refusal::Signature)?;
                key.verify(message, &sig).map_err(|_| Refusal::Signature)
            }
        }
    }
}

/// Attested credential data (registration only).
#[derive(Debug, Clone)]
pub struct Attested {
    /// The authenticator model.
    pub aaguid: [u8; 16],
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The public key.
    pub key: CoseKey,
    /// The public key's COSE bytes, as stored.
    pub key_cbor: Vec<u8>,
}

/// Authenticator data.
#[derive(Debug, Clone)]
pub struct AuthData {
    /// SHA-256 of the RP id.
    pub rp_id_hash: [u8; 32],
    /// Flags.
    pub flags: u8,
    /// Signature counter.
    pub sign_count: u32,
    /// Present when `AT` is set.
    pub attested: Option<Attested>,
}

impl AuthData {
    /// Parses authenticator data (WebAuthn L3 §6.1).
    pub fn parse(raw: &[u8]) -> Result<AuthData, Refusal> {
        let bad = Refusal::Malformed("authenticatorData");
        if raw.len() < 37 {
            return Err(bad);
        }
        let rp_id_hash: [u8; 32] = raw[..32].try_into().map_err(|_| bad)?;
        let flags = raw[32];
        let sign_count = u32::from_be_bytes(raw[33..37].try_into().map_err(|_| bad)?);
        let mut rest = &raw[37..];
        let attested = if flags & FLAG_AT != 0 {
            if rest.len() < 18 {
                return Err(bad);
            }
            let aaguid: [u8; 16] = rest[..16].try_into().map_err(|_| bad)?;
            let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            rest = &rest[18..];
            if len == 0 || len > MAX_CREDENTIAL_ID || rest.len() < len {
                return Err(bad);
            }
            let credential_id = rest[..len].to_vec();
            rest = &rest[len..];
            // The COSE key is followed by extensions (if ED): decode from a
            // reader and see how much it consumed.
            let mut reader = rest;
            let value: Cbor = ciborium::de::from_reader(&mut reader).map_err(|_| bad)?;
            let used = rest.len() - reader.len();
            let key_cbor = rest[..used].to_vec();
            let key = CoseKey::from_value(&value)?;
            rest = reader;
            Some(Attested {
                aaguid,
                credential_id,
                key,
                key_cbor,
            })
        } else {
            None
        };
        if flags & FLAG_ED != 0 {
            let mut reader = rest;
            let _: Cbor = ciborium::de::from_reader(&mut reader).map_err(|_| bad)?;
            rest = reader;
        }
        if !rest.is_empty() {
            return Err(bad);
        }
        Ok(AuthData {
            rp_id_hash,
            flags,
            sign_count,
            attested,
        })
    }

    /// Refuses unless user presence and user verification are both asserted.
    pub fn require_up_uv(&self) -> Result<(), Refusal> {
        if self.flags & FLAG_UP == 0 {
            return Err(Refusal::UserPresence);
        }
        if self.flags & FLAG_UV == 0 {
            return Err(Refusal::UserVerification);
        }
        Ok(())
    }

    /// Refuses unless `rpIdHash` is SHA-256 of `rp_id`.
    pub fn require_rp(&self, rp_id: &str) -> Result<(), Refusal> {
        if Sha256::digest(rp_id.as_bytes())[..] == self.rp_id_hash[..] {
            Ok(())
        } else {
            Err(Refusal::RpId)
        }
    }
}

/// A registration's attestation object.
#[derive(Debug, Clone)]
pub struct AttestationObject {
    /// Statement format.
    pub fmt: String,
    /// The statement.
    pub att_stmt: Cbor,
    /// Authenticator data bytes.
    pub auth_data: Vec<u8>,
}

impl AttestationObject {
    /// Parses the CBOR attestation object.
    pub fn parse(raw: &[u8]) -> Result<AttestationObject, Refusal> {
        let bad = Refusal::Malformed("attestationObject");
        let v = exactly_one(raw, "attestationObject")?;
        let map = v.as_map().ok_or(bad)?;
        let get = |name: &str| {
            map.iter()
                .find(|(k, _)| k.as_text() == Some(name))
                .map(|(_, v)| v.clone())
        };
        Ok(AttestationObject {
            fmt: get("fmt")
                .and_then(|f| f.as_text().map(str::to_owned))
                .ok_or(bad)?,
            att_stmt: get("attStmt").ok_or(bad)?,
            auth_data: get("authData")
                .and_then(|a| a.as_bytes().cloned())
                .ok_or(bad)?,
        })
    }

    /// Checks the statement: `none` (empty), or `packed` self attestation
    /// (signed by the credential key itself with its own algorithm).
    pub fn verify(&self, key: &CoseKey, client_data_hash: &[u8]) -> Result<(), Refusal> {
        let stmt = self.att_stmt.as_map().ok_or(Refusal::Attestation)?;
        match self.fmt.as_str() {
            "none" if stmt.is_empty() => Ok(()),
            "packed" => {
                let get = |name: &str| {
                    stmt.iter()
                        .find(|(k, _)| k.as_text() == Some(name))
                        .map(|(_, v)| v)
                };
                if get("x5c").is_some() || get("ecdaaKeyId").is_some() {
                    return Err(Refusal::Attestation);
                }
                if get("alg").and_then(int) != Some(key.alg()) {
                    return Err(Refusal::Attestation);
                }
                let sig = get("sig")
                    .and_then(Cbor::as_bytes)
                    .ok_or(Refusal::Attestation)?;
                let mut signed = self.auth_data.clone();
                signed.extend_from_slice(client_data_hash);
                key.verify(&signed, sig)
            }
            _ => Err(Refusal::Attestation),
        }
    }
}

/// Whether `origin` is one of `allowed`, and https (or `http://localhost`).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let secure = origin.starts_with("https://")
        || origin == "http://localhost"
        || origin.starts_with("http://localhost:");
    secure && allowed.iter().any(|a| a == origin)
}

/// A known-good RS256 signature (made by openssl with a throwaway key), for
/// tests and the CPU benchmark: (key, message, signature).
#[cfg(any(test, feature = "danger-test-routes"))]
pub fn rs256_vector() -> Option<(CoseKey, Vec<u8>, Vec<u8>)> {
    let v: serde_json::Value = serde_json::from_str(include_str!("../testdata/rs256.json")).ok()?;
    let hex = |k: &str| -> Option<Vec<u8>> {
        let s = v[k].as_str()?;
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    };
    Some((
        CoseKey::Rs256 {
            n: hex("n")?,
            e: hex("e")?,
        },
        v["message"].as_str()?.as_bytes().to_vec(),
        hex("signature")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rs256_signatures_verify() {
        let (key, message, sig) = rs256_vector().expect("vector");
        assert_eq!(key.alg(), RS256);
        key.verify(&message, &sig).expect("verify");
        assert_eq!(
            key.verify(b"another message", &sig),
            Err(Refusal::Signature)
        );
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(key.verify(&message, &bad), Err(Refusal::Signature));
    }
    use p256::ecdsa::signature::Signer as _;

    fn cose_es256(key: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
        let point = key.to_encoded_point(false);
        let map = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())),
            (Cbor::Integer(3.into()), Cbor::Integer((-7).into())),
            (Cbor::Integer((-1).into()), Cbor::Integer(1.into())),
            (
                Cbor::Integer((-2).into()),
                Cbor::Bytes(point.x().expect("x").to_vec()),
            ),
            (
                Cbor::Integer((-3).into()),
                Cbor::Bytes(point.y().expect("y").to_vec()),
            ),
        ]);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&map, &mut out).expect("cbor");
        out
    }

    fn auth_data(flags: u8, count: u32, attested: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let mut raw = Sha256::digest(b"localhost").to_vec();
        raw.push(flags);
        raw.extend_from_slice(&count.to_be_bytes());
        if let Some((id, key)) = attested {
            raw.extend_from_slice(&[0u8; 16]);
            raw.extend_from_slice(&u16::try_from(id.len()).expect("len").to_be_bytes());
            raw.extend_from_slice(id);
            raw.extend_from_slice(key);
        }
        raw
    }

    #[test]
    fn attested_data_and_es256_signatures_including_high_s() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).expect("key");
        let cose = cose_es256(sk.verifying_key());
        let raw = auth_data(FLAG_UP | FLAG_UV | FLAG_AT, 0, Some((b"cred-1", &cose)));
        let parsed = AuthData::parse(&raw).expect("parse");
        let att = parsed.attested.clone().expect("attested");
        assert_eq!(att.credential_id, b"cred-1");
        assert_eq!(att.key_cbor, cose);
        parsed.require_rp("localhost").expect("rp");
        assert_eq!(parsed.require_rp("evil.example"), Err(Refusal::RpId));
        let sig: p256::ecdsa::Signature = sk.sign(b"message");
        att.key
            .verify(b"message", sig.to_der().as_bytes())
            .expect("low S");
        // The same signature with s replaced by n - s.
        let high = {
            let (r, s) = sig.split_scalars();
            p256::ecdsa::Signature::from_scalars(r, -*s).expect("high S")
        };
        att.key
            .verify(b"message", high.to_der().as_bytes())
            .expect("high S");
        assert_eq!(
            att.key.verify(b"other", sig.to_der().as_bytes()),
            Err(Refusal::Signature)
        );
        // And through the signature port, as the service checks them.
        let sw = edgecoder_kernel::SoftwareSignatures;
        for good in [&sig, &high] {
            futures_executor::block_on(att.key.verify_with(
                &sw,
                b"message",
                good.to_der().as_bytes(),
            ))
            .expect("through the port");
        }
        assert_eq!(
            futures_executor::block_on(att.key.verify_with(
                &sw,
                b"other",
                high.to_der().as_bytes()
            )),
            Err(Refusal::Signature)
        );
    }

    #[test]
    fn flags_and_trailing_bytes_are_checked() {
        let up_only = AuthData::parse(&auth_data(FLAG_UP, 1, None)).expect("parse");
        assert_eq!(up_only.require_up_uv(), Err(Refusal::UserVerification));
        let uv_only = AuthData::parse(&auth_data(FLAG_UV, 1, None)).expect("parse");
        assert_eq!(uv_only.require_up_uv(), Err(Refusal::UserPresence));
        let mut trailing = auth_data(FLAG_UP | FLAG_UV, 1, None);
        trailing.push(0);
        assert!(AuthData::parse(&trailing).is_err());
        assert!(AuthData::parse(&[0u8; 36]).is_err());
    }

    #[test]
    fn ed25519_keys_verify_and_other_curves_are_refused() {
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let map = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(1.into())),
            (Cbor::Integer(3.into()), Cbor::Integer((-8).into())),
            (Cbor::Integer((-1).into()), Cbor::Integer(6.into())),
            (
                Cbor::Integer((-2).into()),
                Cbor::Bytes(sk.verifying_key().to_bytes().to_vec()),
            ),
        ]);
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&map, &mut cbor).expect("cbor");
        let key = CoseKey::from_cbor(&cbor).expect("key");
        key.verify(b"m", &sk.sign(b"m").to_bytes()).expect("verify");
        // EC2 on P-384 (crv 2) is not accepted.
        let p384 = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())),
            (Cbor::Integer(3.into()), Cbor::Integer((-7).into())),
            (Cbor::Integer((-1).into()), Cbor::Integer(2.into())),
        ]);
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&p384, &mut cbor).expect("cbor");
        assert_eq!(CoseKey::from_cbor(&cbor), Err(Refusal::Algorithm));
    }

    #[test]
    fn origins_must_be_listed_and_secure() {
        let allowed = vec![
            "https://portal.example".to_owned(),
            "http://localhost:5173".to_owned(),
        ];
        assert!(origin_allowed("https://portal.example", &allowed));
        assert!(origin_allowed("http://localhost:5173", &allowed));
        assert!(!origin_allowed("https://evil.example", &allowed));
        assert!(!origin_allowed(
            "http://portal.example",
            &["http://portal.example".to_owned()]
        ));
    }

    /// Generated hostile inputs for every WebAuthn parser (COSE keys,
    /// authenticator data, attestation objects, clientDataJSON) and the
    /// signature checks behind them: seeded mutations of valid ones. None may
    /// panic; each is refused with a [`Refusal`].
    #[test]
    fn webauthn_parsers_never_panic() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).expect("key");
        let cose = cose_es256(sk.verifying_key());
        let (rs_key, _, rs_sig) = rs256_vector().expect("vector");
        let rs_cose = {
            let CoseKey::Rs256 { n, e } = &rs_key else {
                panic!("an RSA key");
            };
            let map = Cbor::Map(vec![
                (Cbor::Integer(1.into()), Cbor::Integer(3.into())),
                (Cbor::Integer(3.into()), Cbor::Integer((-257).into())),
                (Cbor::Integer((-1).into()), Cbor::Bytes(n.clone())),
                (Cbor::Integer((-2).into()), Cbor::Bytes(e.clone())),
            ]);
            let mut out = Vec::new();
            ciborium::ser::into_writer(&map, &mut out).expect("cbor");
            out
        };
        let raw = auth_data(FLAG_UP | FLAG_UV | FLAG_AT, 7, Some((b"cred-1", &cose)));
        let attestation = {
            let map = Cbor::Map(vec![
                (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
                (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
                (Cbor::Text("authData".into()), Cbor::Bytes(raw.clone())),
            ]);
            let mut out = Vec::new();
            ciborium::ser::into_writer(&map, &mut out).expect("cbor");
            out
        };
        let client = br#"{"type":"webauthn.get","challenge":"AAAA","origin":"http://localhost:5173","crossOrigin":false}"#.to_vec();
        let signature: p256::ecdsa::Signature = sk.sign(b"m");
        let signature = signature.to_der().as_bytes().to_vec();
        let corpus = vec![cose, rs_cose, raw, attestation, client, signature, rs_sig];
        edgecoder_fuzzgen::run("webauthn", 21, 200_000, corpus, |input| {
            if let Ok(key) = CoseKey::from_cbor(input) {
                let _ = key.verify(b"message", input);
            }
            if let Ok(a) = AuthData::parse(input) {
                let _ = a.require_up_uv();
                let _ = a.require_rp("localhost");
            }
            if let Ok(o) = AttestationObject::parse(input)
                && let Ok(key) = CoseKey::from_cbor(&o.auth_data)
            {
                let _ = o.verify(&key, input);
            }
            let _ = client_data(input);
            let _ = rs_key.verify(b"message", input);
        });
    }
}
