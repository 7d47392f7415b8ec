//! DSSE envelopes (github.com/secure-systems-lab/dsse, v1): a payload of a
//! named type and signatures over its pre-authentication encoding (PAE), so
//! that a signature over one payload type can never be read as another.
//!
//! In scope: PAE, the envelope's JSON shape, sealing with P-256 keys and
//! opening against one expected type and a set of keys. Signatures are ECDSA
//! P-256 SHA-256 over PAE, DER-encoded, as stock DSSE libraries make them;
//! `keyid` is our short key id ([`crate::keys::key_id`]). Out of scope: what
//! the payloads mean (model manifests in [`crate::model`], coordinator
//! rotations and gossip in [`crate::federation`]) and k-of-n policies.
//!
//! ```text
//! {"payloadType": T, "payload": b64(P), "signatures": [{"keyid": "<16 hex>", "sig": b64(DER)}]}
//! PAE(T, P) = "DSSEv1" SP len(T) SP T SP len(P) SP P
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::keys::key_id;

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signing key's id.
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the DER signature.
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 of the payload.
    pub payload: String,
    /// The payload's type.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Signatures over PAE(payloadType, payload).
    pub signatures: Vec<EnvelopeSignature>,
}

/// Signs `payload` as `payload_type` with every key in `keys`.
pub fn seal(payload_type: &str, payload: &[u8], keys: &[&SigningKey]) -> Envelope {
    let message = pae(payload_type, payload);
    let signatures = keys
        .iter()
        .map(|k| {
            let sig: DerSignature = k.sign(&message);
            EnvelopeSignature {
                keyid: key_id(k.verifying_key()),
                sig: STANDARD.encode(sig.as_bytes()),
            }
        })
        .collect();
    Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.to_owned(),
        signatures,
    }
}

impl Envelope {
    /// The payload, if the envelope is of `payload_type` and `key` signed it
    /// (a signature by another key id is skipped, one by this key id that
    /// does not verify refuses the envelope).
    pub fn open(&self, payload_type: &str, key: &VerifyingKey) -> Result<Vec<u8>, Error> {
        if self.payload_type != payload_type {
            return Err(Error::Malformed("unexpected payload type"));
        }
        let payload = STANDARD
            .decode(self.payload.as_bytes())
            .map_err(|_| Error::Malformed("the payload is not base64"))?;
        let message = pae(&self.payload_type, &payload);
        let kid = key_id(key);
        let mut verified = false;
        for s in self.signatures.iter().filter(|s| s.keyid == kid) {
            let ok = STANDARD
                .decode(s.sig.as_bytes())
                .ok()
                .and_then(|der| DerSignature::from_bytes(&der).ok())
                .is_some_and(|sig| key.verify(&message, &sig).is_ok());
            if !ok {
                return Err(Error::Invalid);
            }
            verified = true;
        }
        if verified {
            Ok(payload)
        } else {
            Err(Error::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).expect("scalar")
    }

    #[test]
    fn an_envelope_opens_only_as_its_type_and_under_its_key() {
        let k = key(7);
        let env = seal("application/x.a", b"payload", &[&k]);
        assert_eq!(
            env.open("application/x.a", k.verifying_key()).as_deref(),
            Ok(&b"payload"[..])
        );
        assert!(env.open("application/x.b", k.verifying_key()).is_err());
        assert!(env.open("application/x.a", key(8).verifying_key()).is_err());
        let mut swapped = env.clone();
        swapped.payload = STANDARD.encode(b"other");
        assert_eq!(
            swapped.open("application/x.a", k.verifying_key()),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn pae_is_the_spec_s_encoding() {
        // The DSSE protocol document's example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
