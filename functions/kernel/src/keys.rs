//! The function's P-256 signing key: loading, generation and key ids.
//!
//! In scope: parsing a PKCS#8 PEM key from the secret store, generating one from
//! the [`Rng`] port for development, and the key id. Out of scope:
//! what gets signed (JWTs, checkpoints and envelopes belong to the functions that
//! issue them) and where the key is kept (the runtime's secret store).
//!
//! Key id: [`key_id`], the first 8 bytes of blake3 over the SEC1 compressed
//! public key, as hex. Short, stable, and derived from the public key alone so
//! any verifier can recompute it.

use p256::ecdsa;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use crate::{Error, Rng};

/// A P-256 signing key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    inner: ecdsa::SigningKey,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, even in debug output.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_inner(inner: ecdsa::SigningKey) -> Self {
        let kid = key_id(inner.verifying_key());
        SigningKey { inner, kid }
    }

    /// Parses a key as the secret stores hold it: PKCS#8 PEM, or the same DER
    /// as one line of standard base64 (for stores and command lines that do
    /// not keep newlines, such as `wrangler dev --var`).
    pub fn from_secret(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        if value.starts_with("-----BEGIN") {
            return Self::from_pkcs8_pem(value);
        }
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| {
                Error::Config("signing_key is neither PKCS#8 PEM nor base64 DER".into())
            })?;
        let inner = ecdsa::SigningKey::from_pkcs8_der(&der)
            .map_err(|_| Error::Config("signing_key is not a PKCS#8 P-256 private key".into()))?;
        Ok(Self::from_inner(inner))
    }

    /// The key as one line of base64 PKCS#8 DER (see [`SigningKey::from_secret`]).
    pub fn to_pkcs8_base64(&self) -> Result<String, Error> {
        use base64::Engine as _;
        let der = self
            .inner
            .to_pkcs8_der()
            .map_err(|_| Error::Config("cannot encode signing key".into()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let inner = ecdsa::SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| {
            Error::Config("signing_key is not a PKCS#8 PEM P-256 private key".into())
        })?;
        Ok(Self::from_inner(inner))
    }

    /// Generates a fresh key from platform randomness.
    pub fn generate(rng: &dyn Rng) -> Self {
        loop {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            // A random 32-byte string is a valid scalar except with negligible
            // probability (zero or >= the group order); draw again then.
            if let Ok(inner) = ecdsa::SigningKey::from_slice(&bytes) {
                return Self::from_inner(inner);
            }
        }
    }

    /// The key as PKCS#8 PEM, for the secret store.
    pub fn to_pkcs8_pem(&self) -> Result<String, Error> {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|_| Error::Config("cannot encode signing key".into()))
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    pub fn verifying_key(&self) -> &ecdsa::VerifyingKey {
        self.inner.verifying_key()
    }

    /// The underlying `p256` key, for signing code in the functions.
    pub fn ecdsa(&self) -> &ecdsa::SigningKey {
        &self.inner
    }
}

/// The key id of a public key: one definition for access-token keys and node
/// keys, `edgecoder-proto`'s.
pub use edgecoder_proto::keys::key_id;

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(std::cell::Cell<u8>);
    impl Rng for Counter {
        fn fill(&self, buf: &mut [u8]) {
            for b in buf {
                self.0.set(self.0.get().wrapping_add(1));
                *b = self.0.get();
            }
        }
    }

    #[test]
    fn pem_round_trip_keeps_kid() {
        let key = SigningKey::generate(&Counter(std::cell::Cell::new(0)));
        let pem = key.to_pkcs8_pem().expect("pem");
        let back = SigningKey::from_pkcs8_pem(&pem).expect("parse");
        assert_eq!(key.kid(), back.kid());
        let one_line = key.to_pkcs8_base64().expect("base64");
        assert!(!one_line.contains('\n'));
        assert_eq!(
            SigningKey::from_secret(&one_line).expect("parse").kid(),
            key.kid()
        );
        assert_eq!(
            SigningKey::from_secret(&pem).expect("parse").kid(),
            key.kid()
        );
        assert_eq!(key.kid().len(), 16);
        assert!(!format!("{key:?}").contains("inner"));
    }

    #[test]
    fn garbage_is_a_config_error() {
        assert!(matches!(
            SigningKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
            ),
            Err(Error::Config(_))
        ));
    }
}

/// The key of one job (access tokens, log checkpoints, the coordinator's
/// identity), with the key it replaced during a rotation's overlap: only the
/// old key's public half and when it was retired, so verifiers can still
/// check what it signed.
#[derive(Clone, Default)]
pub struct KeySet {
    /// The key that signs now.
    pub current: Option<SigningKey>,
    /// The key it replaced, and when (Unix seconds).
    pub previous: Option<(ecdsa::VerifyingKey, i64)>,
}

impl KeySet {
    /// Every public key a verifier should hold: the current one, then the
    /// previous one.
    pub fn verifying_keys(&self) -> Vec<ecdsa::VerifyingKey> {
        self.current
            .iter()
            .map(|k| *k.verifying_key())
            .chain(self.previous.iter().map(|(k, _)| *k))
            .collect()
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &KeySet) -> bool {
        self.current.as_ref().map(SigningKey::kid) == other.current.as_ref().map(SigningKey::kid)
            && self.previous == other.previous
    }
}

impl Eq for KeySet {}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field("previous_retired_at", &self.previous.map(|(_, at)| at))
            .finish()
    }
}
