//! What coordinators send each other to peer: the peering request and the
//! signed key rotation.
//!
//! In scope: the body of `POST /mesh/peers/hello` ([`Hello`]), the rotation
//! statement a coordinator publishes at `/mesh/identity` when it has
//! replaced its key ([`Rotation`], a DSSE envelope signed by the key it
//! replaces), and checking a rotation against the key a peer pinned.
//! Out of scope: storage and policy (the mesh function), the request
//! signatures themselves ([`crate::httpsig`]), and gossip.
//!
//! A peer's pinned key changes only through a rotation signed by that pinned
//! key for the same origin; one rotation is published at a time, so a peer
//! that missed two rotations must be re-pinned by its operator.

use p256::ecdsa::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::dsse::{Envelope, seal};
use crate::keys::{key_id, parse_public_key, public_key_b64url};

/// The DSSE payload type of a coordinator key rotation.
pub const ROTATION_TYPE: &str = "application/vnd.edgecoder.coordinator-rotation.v1+json";

/// A peering request or approval: "I, at `origin`, with this key, want to
/// peer with you" (signed, RFC 9421, by `public_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The sender's origin (`scheme://host[:port]`).
    pub origin: String,
    /// The sender's coordinator key, base64url SEC1.
    pub public_key: String,
}

/// "The coordinator at `origin` replaced key `previous_key_id` with `key` at
/// `at`": signed by the previous key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The coordinator's origin.
    pub origin: String,
    /// The replaced key's id.
    pub previous_key_id: String,
    /// The new key, base64url SEC1.
    pub key: String,
    /// The new key's id.
    pub key_id: String,
    /// Unix seconds when the new key took over.
    pub at: i64,
}

impl Rotation {
    /// The statement that `previous` hands `origin` over to `next`, signed by
    /// `previous`.
    pub fn sign(origin: &str, previous: &SigningKey, next: &VerifyingKey, at: i64) -> Envelope {
        let r = Rotation {
            origin: origin.to_owned(),
            previous_key_id: key_id(previous.verifying_key()),
            key: public_key_b64url(next),
            key_id: key_id(next),
            at,
        };
        let payload = serde_json::to_vec(&r).unwrap_or_default();
        seal(ROTATION_TYPE, &payload, &[previous])
    }

    /// The new key, if `env` is a rotation of `origin` signed by `pinned`
    /// (the key a peer holds for it) to a different, well-formed key.
    pub fn verify(
        env: &Envelope,
        origin: &str,
        pinned: &VerifyingKey,
    ) -> Result<VerifyingKey, Error> {
        let payload = env.open(ROTATION_TYPE, pinned)?;
        let r: Rotation = serde_json::from_slice(&payload)
            .map_err(|_| Error::Malformed("not a coordinator rotation"))?;
        if r.origin != origin {
            return Err(Error::Malformed("the rotation is another coordinator's"));
        }
        if r.previous_key_id != key_id(pinned) {
            return Err(Error::Invalid);
        }
        let next = parse_public_key(&r.key)?;
        if key_id(&next) != r.key_id || next == *pinned {
            return Err(Error::Malformed("the rotation names no new key"));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).expect("scalar")
    }

    #[test]
    fn a_rotation_holds_only_under_the_pinned_key_for_its_origin() {
        let (old, new) = (key(1), key(2));
        let env = Rotation::sign("https://a.example", &old, new.verifying_key(), 10);
        assert_eq!(
            Rotation::verify(&env, "https://a.example", old.verifying_key()),
            Ok(*new.verifying_key())
        );
        // Another coordinator's rotation, or one checked against another pin.
        assert!(Rotation::verify(&env, "https://b.example", old.verifying_key()).is_err());
        assert!(Rotation::verify(&env, "https://a.example", new.verifying_key()).is_err());
        // Self-signed by the new key: what an attacker holding only the new
        // key could make.
        let forged = Rotation::sign("https://a.example", &new, key(3).verifying_key(), 10);
        assert!(Rotation::verify(&forged, "https://a.example", old.verifying_key()).is_err());
    }
}
