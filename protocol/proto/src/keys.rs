//! Node keys on the wire: key ids and the public key encoding.
//!
//! In scope: the key id every EdgeCoder verifier recomputes from a P-256
//! public key (the first 8 bytes of blake3 over the compressed SEC1 point,
//! as lowercase hex: short, stable, derived from the public key alone), and
//! the base64url (no padding) uncompressed SEC1 point registrations carry.
//! Out of scope: where keys are kept (the agent's key file, the secret
//! store) and the signed-note key ids of checkpoints (`edgecoder-tlog`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::VerifyingKey;

use crate::Error;

/// The key id of a public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let point = key.to_encoded_point(true);
    let digest = blake3::hash(point.as_bytes());
    digest.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The public key as registrations send it: base64url without padding of
/// the uncompressed SEC1 point (65 bytes).
pub fn public_key_b64url(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.to_encoded_point(false).as_bytes())
}

/// Parses a SEC1 P-256 point sent as base64url (padding tolerated).
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, Error> {
    if b64.len() > 200 {
        return Err(Error::InvalidPublicKey);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('=').as_bytes())
        .map_err(|_| Error::InvalidPublicKey)?;
    VerifyingKey::from_sec1_bytes(&raw).map_err(|_| Error::InvalidPublicKey)
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;

    use super::*;

    #[test]
    fn ids_and_encodings_round_trip() {
        let key = SigningKey::from_slice(&[7u8; 32]).expect("key");
        let public = *key.verifying_key();
        let id = key_id(&public);
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let b64 = public_key_b64url(&public);
        assert_eq!(parse_public_key(&b64), Ok(public));
        assert_eq!(parse_public_key(&format!("{b64}=")), Ok(public));
        assert_eq!(parse_public_key("AAAA"), Err(Error::InvalidPublicKey));
        assert_eq!(parse_public_key("!!"), Err(Error::InvalidPublicKey));
    }
}
