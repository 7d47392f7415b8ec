//! Checkpoints: the c2sp.org/tlog-checkpoint body inside a c2sp.org/signed-note,
//! signed with ECDSA P-256 (signed-note signature type `0x02`).
//!
//! In scope: formatting and parsing the checkpoint body, signing it, and
//! opening a signed note against pinned keys. Out of scope: deciding when to
//! sign (the log), key storage (the secret store) and witness cosignatures
//! (c2sp.org/tlog-cosignature: a later federation step; such lines are
//! carried and ignored here, as signed-note requires for unknown keys).
//!
//! ```text
//! edgecoder.example/ledger            origin: the log's name
//! 16000                               tree size, decimal
//! 7Wq3…=                              root hash, base64 (32 bytes)
//!                                     blank line ends the signed text
//! — edgecoder.example/ledger AAAA…    em dash, key name, base64(key ID ‖ DER ECDSA signature)
//! ```
//!
//! The key ID is the first four bytes of SHA-256 of the public key's DER
//! SubjectPublicKeyInfo (what signed-note specifies for type `0x02`). A note
//! is accepted when a signature line names a pinned key (name and ID) and
//! verifies; a pinned key's failing signature rejects the whole note;
//! signatures by unknown keys are ignored (they may be witnesses').

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::merkle::Hash;

/// Longest note we parse (the body is three short lines; signatures are few).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Most signature lines we look at.
pub const MAX_SIGNATURES: usize = 32;
/// The signature line prefix: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// The signed-note signature type of ECDSA signatures.
pub const SIGNATURE_TYPE_ECDSA: u8 = 0x02;

/// A tree head: origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (first line).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Merkle tree head.
    pub root: Hash,
}

impl Checkpoint {
    /// The signed text: three lines, each ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint body (extension lines after the root are
    /// tolerated and ignored, as the format allows).
    pub fn parse_body(text: &str) -> Result<Checkpoint, Error> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| valid_name(o))
            .ok_or(Error::Malformed("origin"))?;
        let size = lines
            .next()
            .filter(|s| {
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s.len() == 1 || !s.starts_with('0'))
            })
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Error::Malformed("tree size"))?;
        let root = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| <Hash>::try_from(r.as_slice()).ok())
            .ok_or(Error::Malformed("root hash"))?;
        if !text.ends_with('\n') {
            return Err(Error::Malformed("body must end in a newline"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// Key names and origins: non-empty, no spaces, no `+`, no control characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// The signed-note key ID of a P-256 key (SHA-256 of its SPKI DER, first 4 bytes).
pub fn key_id(key: &VerifyingKey) -> Result<[u8; 4], Error> {
    let der = key
        .to_public_key_der()
        .map_err(|e| Error::Key(e.to_string()))?;
    let digest = Sha256::digest(der.as_bytes());
    Ok([digest[0], digest[1], digest[2], digest[3]])
}

/// A key a verifier trusts: its note name and public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Key name as it appears on signature lines.
    pub name: String,
    /// The public key.
    pub key: VerifyingKey,
}

/// Signs `checkpoint` as a signed note by `name`.
pub fn sign(checkpoint: &Checkpoint, name: &str, key: &SigningKey) -> Result<String, Error> {
    if !valid_name(name) || !valid_name(&checkpoint.origin) {
        return Err(Error::Malformed("key name or origin"));
    }
    let body = checkpoint.body();
    let sig: Signature = key.sign(body.as_bytes());
    let mut blob = key_id(key.verifying_key())?.to_vec();
    blob.extend_from_slice(sig.to_der().as_bytes());
    Ok(format!(
        "{body}\n{SIG_PREFIX}{name} {}\n",
        STANDARD.encode(blob)
    ))
}

/// The checkpoint a note carries, without checking signatures: only for
/// notes this log signed itself (e.g. to read the size of its own latest).
pub fn body_of(note: &str) -> Result<Checkpoint, Error> {
    let split = note
        .rfind("\n\n")
        .ok_or(Error::Malformed("no signature block"))?;
    Checkpoint::parse_body(&note[..=split])
}

/// Opens a signed checkpoint: a trusted key named as the checkpoint's origin
/// (the log's own key) must have signed it, and no signature by a trusted
/// key may fail. Other trusted names (witnesses) are checked when present but
/// never stand in for the log's key, so a note whose origin line names one
/// log and whose signature line names another is refused.
pub fn open(note: &str, trusted: &[TrustedKey]) -> Result<Checkpoint, Error> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(Error::Malformed("note too large"));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::Malformed("control character"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(Error::Malformed("no signature block"))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    if !sigs.ends_with('\n') {
        return Err(Error::Malformed("signature block must end in a newline"));
    }
    let checkpoint = Checkpoint::parse_body(text)?;
    let mut by_log = false;
    let mut lines = 0usize;
    for line in sigs.strip_suffix('\n').unwrap_or(sigs).split('\n') {
        lines += 1;
        if lines > MAX_SIGNATURES {
            return Err(Error::Malformed("too many signatures"));
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(Error::Malformed("signature line"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(Error::Malformed("signature line"))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| Error::Malformed("signature encoding"))?;
        if blob.len() < 5 || !valid_name(name) {
            return Err(Error::Malformed("signature line"));
        }
        let (id, sig) = blob.split_at(4);
        for t in trusted.iter().filter(|t| t.name == name) {
            if key_id(&t.key)?.as_slice() != id {
                continue;
            }
            let ok = Signature::from_der(sig)
                .ok()
                .is_some_and(|s| t.key.verify(text.as_bytes(), &s).is_ok());
            if !ok {
                return Err(Error::BadSignature(name.to_owned()));
            }
            by_log |= name == checkpoint.origin;
        }
    }
    if by_log {
        Ok(checkpoint)
    } else {
        Err(Error::Untrusted)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        SigningKey::from_slice(&bytes).expect("key")
    }

    fn cp() -> Checkpoint {
        Checkpoint {
            origin: "edgecoder.example/ledger".into(),
            size: 16_000,
            root: [7u8; 32],
        }
    }

    fn trusted(k: &SigningKey) -> Vec<TrustedKey> {
        vec![TrustedKey {
            name: "edgecoder.example/ledger".into(),
            key: *k.verifying_key(),
        }]
    }

    #[test]
    fn signed_checkpoints_open_with_the_pinned_key() {
        let k = key(2);
        let note = sign(&cp(), "edgecoder.example/ledger", &k).expect("sign");
        assert!(note.starts_with("edgecoder.example/ledger\n16000\nBwcH"));
        assert!(note.contains("\n\n\u{2014} edgecoder.example/ledger "));
        assert_eq!(open(&note, &trusted(&k)), Ok(cp()));
    }

    #[test]
    fn another_key_or_tampering_is_refused() {
        let k = key(2);
        let note = sign(&cp(), "edgecoder.example/ledger", &k).expect("sign");
        assert_eq!(open(&note, &trusted(&key(3))), Err(Error::Untrusted));
        let tampered = note.replacen("16000", "16001", 1);
        assert!(matches!(
            open(&tampered, &trusted(&k)),
            Err(Error::BadSignature(_))
        ));
        let other_root = note.replacen("BwcH", "CAcH", 1);
        assert!(open(&other_root, &trusted(&k)).is_err());
        // Same key ID and name, signature by another key.
        let forged = sign(&cp(), "edgecoder.example/ledger", &key(3)).expect("sign");
        let mut lines: Vec<&str> = forged.lines().collect();
        let good: Vec<&str> = note.lines().collect();
        let (_, forged_sig) = lines[4].rsplit_once(' ').expect("sig");
        let forged_blob = STANDARD.decode(forged_sig).expect("b64");
        let (_, good_sig) = good[4].rsplit_once(' ').expect("sig");
        let mut blob = STANDARD.decode(good_sig).expect("b64")[..4].to_vec();
        blob.extend_from_slice(&forged_blob[4..]);
        let line = format!(
            "\u{2014} edgecoder.example/ledger {}",
            STANDARD.encode(blob)
        );
        lines[4] = &line;
        let spliced = format!("{}\n", lines.join("\n"));
        assert!(matches!(
            open(&spliced, &trusted(&k)),
            Err(Error::BadSignature(_))
        ));
    }

    #[test]
    fn unknown_cosigners_are_ignored() {
        let k = key(2);
        let note = sign(&cp(), "edgecoder.example/ledger", &k).expect("sign");
        let witness = sign(&cp(), "witness.example/w1", &key(9)).expect("sign");
        let extra = witness.lines().last().expect("line");
        let both = format!("{note}{extra}\n");
        assert_eq!(open(&both, &trusted(&k)), Ok(cp()));
    }

    #[test]
    fn the_log_key_must_sign_under_the_checkpoints_origin() {
        let k = key(2);
        // The same key, pinned for one log, signing another log's origin
        // under the pinned name (staging and production sharing a key).
        let staging = Checkpoint {
            origin: "staging.example/ledger".into(),
            ..cp()
        };
        let note = sign(&staging, "edgecoder.example/ledger", &k).expect("sign");
        assert_eq!(open(&note, &trusted(&k)), Err(Error::Untrusted));
        // A trusted witness's cosignature alone does not make a checkpoint.
        let w = key(9);
        let mut keys = trusted(&k);
        keys.push(TrustedKey {
            name: "witness.example/w1".into(),
            key: *w.verifying_key(),
        });
        let by_witness = sign(&cp(), "witness.example/w1", &w).expect("sign");
        assert_eq!(open(&by_witness, &keys), Err(Error::Untrusted));
        let by_log = sign(&cp(), "edgecoder.example/ledger", &k).expect("sign");
        let extra = by_witness.lines().last().expect("line");
        assert_eq!(open(&format!("{by_log}{extra}\n"), &keys), Ok(cp()));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            "origin\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "origin\n01\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "origin\n1\nBwcH\n",
            "has space\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "origin\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
        assert!(open("no signatures\n", &[]).is_err());
    }
}
