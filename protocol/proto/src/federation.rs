//! What coordinators send each other: the peering request, the signed key
//! rotation, and gossip envelopes.
//!
//! In scope: the body of `POST /mesh/peers/hello` ([`Hello`]), the rotation
//! statement a coordinator publishes at `/mesh/identity` when it has
//! replaced its key ([`Rotation`], a DSSE envelope signed by the key it
//! replaces), and checking a rotation against the key a peer pinned.
//! Gossip ([`Gossip`]) is a DSSE envelope whose payload type names the
//! message kind and version (unknown types are refused, not ignored), over
//! the exact payload bytes: the origin coordinator and its key id, a
//! creation time and a bounded TTL, and the ledger entry the message
//! announces (its index and exact payload), so a receiver can prove it is in
//! the origin's log before acting on it.
//! Out of scope: storage and policy (the mesh function) and the request
//! signatures themselves ([`crate::httpsig`]).
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
/// `at`": signed by the previous key (the handover) and by the new one (so
/// nobody can hand an origin over to a key they do not hold, e.g. another
/// coordinator's).
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
    /// both.
    pub fn sign(origin: &str, previous: &SigningKey, next: &SigningKey, at: i64) -> Envelope {
        let r = Rotation {
            origin: origin.to_owned(),
            previous_key_id: key_id(previous.verifying_key()),
            key: public_key_b64url(next.verifying_key()),
            key_id: key_id(next.verifying_key()),
            at,
        };
        let payload = serde_json::to_vec(&r).unwrap_or_default();
        seal(ROTATION_TYPE, &payload, &[previous, next])
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
        // Proof that whoever hands over to `next` holds it.
        if env.open(ROTATION_TYPE, &next)? != payload {
            return Err(Error::Invalid);
        }
        Ok(next)
    }
}

/// The DSSE payload type of a blacklist change announced by its origin.
pub const GOSSIP_BLACKLIST_V1: &str = "application/vnd.edgecoder.gossip.blacklist.v1+json";
/// Every gossip payload type this version understands.
pub const GOSSIP_TYPES: [&str; 1] = [GOSSIP_BLACKLIST_V1];
/// The ledger payload type a blacklist gossip announces.
pub const BLACKLIST_ENTRY_TYPE: &str = "edgecoder.dev/blacklist/v1";
/// Longest TTL an envelope may ask for.
pub const MAX_TTL_SECS: i64 = 3600;
/// Largest envelope accepted (JSON bytes).
pub const MAX_GOSSIP_BYTES: usize = 16 * 1024;
/// How far a creation time may be ahead of the receiver's clock.
pub const MAX_SKEW_SECS: i64 = 60;

/// A gossip message: what the origin logged, announced to its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gossip {
    /// The origin coordinator.
    pub origin: String,
    /// The key id it signed with.
    pub key_id: String,
    /// Unix seconds it was made.
    pub created: i64,
    /// Seconds after `created` it may still be delivered.
    pub ttl: i64,
    /// The origin's ledger index of the entry announced.
    pub ledger_index: u64,
    /// Base64 of the ledger entry's exact payload.
    pub payload: String,
}

/// Why an envelope was refused (each a stable code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumIter, strum::EnumMessage)]
pub enum GossipRefusal {
    /// Not an envelope, too large, or a payload that does not parse.
    #[default]
    Malformed,
    /// A payload type this version does not know.
    UnknownType,
    /// Not signed by the origin's pinned key.
    BadSignature,
    /// Past its TTL, a TTL above the cap, or created in the future.
    Expired,
    /// It names another origin or key than the peer that sent it.
    WrongOrigin,
}

impl GossipRefusal {
    /// The problem code.
    pub fn code(self) -> &'static str {
        match self {
            GossipRefusal::Malformed => "invalid_envelope",
            GossipRefusal::UnknownType => "unknown_payload_type",
            GossipRefusal::BadSignature => "envelope_signature_invalid",
            GossipRefusal::Expired => "envelope_expired",
            GossipRefusal::WrongOrigin => "envelope_origin_mismatch",
        }
    }
}

impl Gossip {
    /// Seals a blacklist announcement by `origin`.
    pub fn seal(&self, key: &SigningKey) -> Envelope {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        seal(GOSSIP_BLACKLIST_V1, &payload, &[key])
    }

    /// Opens an envelope from the peer at `origin` pinned to `pinned`, at
    /// `now` (Unix seconds); its digest (blake3 of type and payload) is the
    /// replay key.
    pub fn open(
        envelope: &[u8],
        origin: &str,
        pinned: &VerifyingKey,
        now: i64,
    ) -> Result<(Gossip, String), GossipRefusal> {
        if envelope.len() > MAX_GOSSIP_BYTES {
            return Err(GossipRefusal::Malformed);
        }
        let env: Envelope =
            serde_json::from_slice(envelope).map_err(|_| GossipRefusal::Malformed)?;
        if !GOSSIP_TYPES.contains(&env.payload_type.as_str()) {
            return Err(GossipRefusal::UnknownType);
        }
        let payload = env
            .open(&env.payload_type, pinned)
            .map_err(|_| GossipRefusal::BadSignature)?;
        let g: Gossip = serde_json::from_slice(&payload).map_err(|_| GossipRefusal::Malformed)?;
        if g.origin != origin || g.key_id != key_id(pinned) {
            return Err(GossipRefusal::WrongOrigin);
        }
        if g.ttl <= 0
            || g.ttl > MAX_TTL_SECS
            || g.created > now + MAX_SKEW_SECS
            || g.created.saturating_add(g.ttl) < now
        {
            return Err(GossipRefusal::Expired);
        }
        let mut h = blake3::Hasher::new();
        h.update(env.payload_type.as_bytes());
        h.update(&[0]);
        h.update(&payload);
        Ok((g, h.finalize().to_hex().to_string()))
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
        let env = Rotation::sign("https://a.example", &old, &new, 10);
        assert_eq!(
            Rotation::verify(&env, "https://a.example", old.verifying_key()),
            Ok(*new.verifying_key())
        );
        // Another coordinator's rotation, or one checked against another pin.
        assert!(Rotation::verify(&env, "https://b.example", old.verifying_key()).is_err());
        assert!(Rotation::verify(&env, "https://a.example", new.verifying_key()).is_err());
        // Self-signed by the new key: what an attacker holding only the new
        // key could make.
        let forged = Rotation::sign("https://a.example", &new, &key(3), 10);
        assert!(Rotation::verify(&forged, "https://a.example", old.verifying_key()).is_err());
        // Handed over to a key the signer does not hold (another
        // coordinator's): only the old key's signature is there.
        let mut unheld = Rotation::sign("https://a.example", &old, &key(4), 10);
        unheld.signatures.truncate(1);
        assert!(Rotation::verify(&unheld, "https://a.example", old.verifying_key()).is_err());
    }

    fn gossip(k: &SigningKey, created: i64, ttl: i64) -> Gossip {
        Gossip {
            origin: "https://a.example".into(),
            key_id: key_id(k.verifying_key()),
            created,
            ttl,
            ledger_index: 7,
            payload: "e30=".into(),
        }
    }

    #[test]
    fn gossip_opens_only_fresh_signed_and_of_a_known_type() {
        let k = key(1);
        let origin = "https://a.example";
        let bytes = |e: &Envelope| serde_json::to_vec(e).expect("json");
        let env = gossip(&k, 1000, 60).seal(&k);
        let (g, digest) =
            Gossip::open(&bytes(&env), origin, k.verifying_key(), 1030).expect("open");
        assert_eq!(g.ledger_index, 7);
        assert_eq!(digest.len(), 64);
        let refused =
            |e: &Envelope, now| Gossip::open(&bytes(e), origin, k.verifying_key(), now).err();
        assert_eq!(refused(&env, 1061), Some(GossipRefusal::Expired));
        assert_eq!(
            refused(&gossip(&k, 1000, 7200).seal(&k), 1000),
            Some(GossipRefusal::Expired)
        );
        assert_eq!(
            refused(&gossip(&k, 2000, 60).seal(&k), 1000),
            Some(GossipRefusal::Expired)
        );
        assert_eq!(
            refused(&gossip(&k, 1000, 60).seal(&key(2)), 1000),
            Some(GossipRefusal::BadSignature)
        );
        let mut unknown = env.clone();
        unknown.payload_type = "application/vnd.edgecoder.gossip.blacklist.v2+json".into();
        assert_eq!(refused(&unknown, 1000), Some(GossipRefusal::UnknownType));
        let mut unsigned = env.clone();
        unsigned.signatures.clear();
        assert_eq!(refused(&unsigned, 1000), Some(GossipRefusal::BadSignature));
        let mut other = gossip(&k, 1000, 60);
        other.origin = "https://c.example".into();
        assert_eq!(
            refused(&other.seal(&k), 1000),
            Some(GossipRefusal::WrongOrigin)
        );
    }
}
