//! Checkpoints: the c2sp.org/tlog-checkpoint body inside a c2sp.org/signed-note,
//! signed by the log with ECDSA P-256 (signed-note signature type `0x02`)
//! and, for witnesses that accept only Ed25519 log keys, Ed25519 (`0x01`),
//! and cosigned by witnesses (c2sp.org/tlog-cosignature `cosignature/v1`,
//! Ed25519 with a timestamp, type `0x04`).
//!
//! In scope: formatting and parsing the checkpoint body, signing it,
//! cosigning it, verifier keys (`vkey`s) for the Ed25519 types, and opening
//! a signed note against pinned keys, reporting which trusted witnesses
//! cosigned it. Out of scope: deciding when to sign or cosign (the log, the
//! witness) and key storage (the secret store). Signatures by unknown keys
//! are carried and ignored, as signed-note requires.
//!
//! ```text
//! edgecoder.example/ledger            origin: the log's name
//! 16000                               tree size, decimal
//! 7Wq3…=                              root hash, base64 (32 bytes)
//!                                     blank line ends the signed text
//! — edgecoder.example/ledger AAAA…    em dash, key name, base64(key ID ‖ DER ECDSA signature)
//! ```
//!
//! The key ID of a P-256 key is the first four bytes of SHA-256 of its DER
//! SubjectPublicKeyInfo (what signed-note specifies for type `0x02`); of an
//! Ed25519 key, SHA-256(name ‖ "\n" ‖ type ‖ key)[:4]. A note
//! is accepted when a signature line names a pinned key (name and ID) and
//! verifies; a pinned key's failing signature rejects the whole note;
//! signatures by unknown keys are ignored (they may be witnesses').

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

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

/// The signed-note key ID of an Ed25519 key of signature type `kind`
/// (`0x01` note signatures, `0x04` cosignature/v1):
/// SHA-256(name ‖ "\n" ‖ type ‖ key)[:4].
pub fn ed25519_key_id(name: &str, kind: u8, key: &ed25519_dalek::VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([kind]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The signed-note signature type of Ed25519 signatures.
pub const SIGNATURE_TYPE_ED25519: u8 = 0x01;
/// The signature type of c2sp.org/tlog-cosignature `cosignature/v1`.
pub const SIGNATURE_TYPE_COSIGNATURE_V1: u8 = 0x04;

/// A public key that signs notes, with the signature type it signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteKey {
    /// A log key, ECDSA P-256 (type `0x02`).
    EcdsaP256(VerifyingKey),
    /// A log key, Ed25519 (type `0x01`): what deployed witnesses accept.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// A witness key, `cosignature/v1` (Ed25519, type `0x04`).
    CosignatureV1(ed25519_dalek::VerifyingKey),
}

impl From<VerifyingKey> for NoteKey {
    fn from(k: VerifyingKey) -> NoteKey {
        NoteKey::EcdsaP256(k)
    }
}

impl NoteKey {
    /// The key ID signature lines by `name` carry.
    pub fn key_id(&self, name: &str) -> Result<[u8; 4], Error> {
        match self {
            NoteKey::EcdsaP256(k) => key_id(k),
            NoteKey::Ed25519(k) => Ok(ed25519_key_id(name, SIGNATURE_TYPE_ED25519, k)),
            NoteKey::CosignatureV1(k) => Ok(ed25519_key_id(name, SIGNATURE_TYPE_COSIGNATURE_V1, k)),
        }
    }

    /// The c2sp.org/signed-note verifier key (`name+hex id+base64(type ‖
    /// key)`) of an Ed25519 key; P-256 keys have no such encoding here.
    pub fn vkey(&self, name: &str) -> Option<String> {
        let (kind, k) = match self {
            NoteKey::EcdsaP256(_) => return None,
            NoteKey::Ed25519(k) => (SIGNATURE_TYPE_ED25519, k),
            NoteKey::CosignatureV1(k) => (SIGNATURE_TYPE_COSIGNATURE_V1, k),
        };
        let id = ed25519_key_id(name, kind, k);
        let mut raw = vec![kind];
        raw.extend_from_slice(k.as_bytes());
        Some(format!(
            "{name}+{:08x}+{}",
            u32::from_be_bytes(id),
            STANDARD.encode(raw)
        ))
    }

    /// Parses a verifier key of type `0x01` or `0x04`, checking its ID.
    pub fn parse_vkey(vkey: &str) -> Result<TrustedKey, Error> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Malformed("verifier key"));
        };
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| Error::Malformed("verifier key encoding"))?;
        if !valid_name(name) || id.len() != 8 || raw.len() != 33 {
            return Err(Error::Malformed("verifier key"));
        }
        let point: [u8; 32] = raw[1..]
            .try_into()
            .map_err(|_| Error::Malformed("verifier key"))?;
        let k = ed25519_dalek::VerifyingKey::from_bytes(&point)
            .map_err(|_| Error::Malformed("verifier key point"))?;
        let key = match raw[0] {
            SIGNATURE_TYPE_ED25519 => NoteKey::Ed25519(k),
            SIGNATURE_TYPE_COSIGNATURE_V1 => NoteKey::CosignatureV1(k),
            _ => return Err(Error::Malformed("verifier key type")),
        };
        let expected = u32::from_be_bytes(key.key_id(name)?);
        if u32::from_str_radix(id, 16).ok() != Some(expected) {
            return Err(Error::Malformed("verifier key ID"));
        }
        Ok(TrustedKey {
            name: name.to_owned(),
            key,
        })
    }

    /// Whether `sig` (the blob after the key ID) signs `text` by this key;
    /// a cosignature's timestamp with it.
    fn verify(&self, text: &str, sig: &[u8]) -> Option<Option<u64>> {
        match self {
            NoteKey::EcdsaP256(k) => Signature::from_der(sig)
                .ok()
                .filter(|s| k.verify(text.as_bytes(), s).is_ok())
                .map(|_| None),
            NoteKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .ok()
                .filter(|s| k.verify(text.as_bytes(), s).is_ok())
                .map(|_| None),
            NoteKey::CosignatureV1(k) => {
                if sig.len() != 72 {
                    return None;
                }
                let (time, sig) = sig.split_at(8);
                let time = u64::from_be_bytes(time.try_into().ok()?);
                if time > i64::MAX as u64 {
                    return None;
                }
                let s = ed25519_dalek::Signature::from_slice(sig).ok()?;
                k.verify(cosigned_message(text, time).as_bytes(), &s)
                    .ok()
                    .map(|()| Some(time))
            }
        }
    }
}

/// What a `cosignature/v1` signs: the header and timestamp lines, then the
/// note body.
fn cosigned_message(text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{text}")
}

/// A key a verifier trusts: its note name and public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Key name as it appears on signature lines.
    pub name: String,
    /// The public key.
    pub key: NoteKey,
}

/// A key that signs checkpoints as the log.
#[derive(Debug, Clone, Copy)]
pub enum NoteSigner<'a> {
    /// ECDSA P-256 (type `0x02`).
    EcdsaP256(&'a SigningKey),
    /// Ed25519 (type `0x01`).
    Ed25519(&'a ed25519_dalek::SigningKey),
}

fn signature_line(name: &str, id: [u8; 4], sig: &[u8]) -> String {
    let mut blob = id.to_vec();
    blob.extend_from_slice(sig);
    format!("{SIG_PREFIX}{name} {}\n", STANDARD.encode(blob))
}

/// Signs `checkpoint` as a signed note by `name`.
pub fn sign(checkpoint: &Checkpoint, name: &str, key: &SigningKey) -> Result<String, Error> {
    sign_with(checkpoint, name, &[NoteSigner::EcdsaP256(key)])
}

/// Signs `checkpoint` as a signed note by `name` with each key, one
/// signature line each (in the order given).
pub fn sign_with(
    checkpoint: &Checkpoint,
    name: &str,
    keys: &[NoteSigner<'_>],
) -> Result<String, Error> {
    if !valid_name(name) || !valid_name(&checkpoint.origin) || keys.is_empty() {
        return Err(Error::Malformed("key name or origin"));
    }
    let body = checkpoint.body();
    let mut note = format!("{body}\n");
    for k in keys {
        note.push_str(&match k {
            NoteSigner::EcdsaP256(k) => {
                let sig: Signature = k.sign(body.as_bytes());
                signature_line(name, key_id(k.verifying_key())?, sig.to_der().as_bytes())
            }
            NoteSigner::Ed25519(k) => signature_line(
                name,
                ed25519_key_id(name, SIGNATURE_TYPE_ED25519, &k.verifying_key()),
                &k.sign(body.as_bytes()).to_bytes(),
            ),
        });
    }
    Ok(note)
}

/// A `cosignature/v1` line (with its newline) by witness `name` over
/// `checkpoint` at `time` (POSIX seconds).
pub fn cosign(
    checkpoint: &Checkpoint,
    name: &str,
    key: &ed25519_dalek::SigningKey,
    time: u64,
) -> Result<String, Error> {
    if !valid_name(name) || time > i64::MAX as u64 {
        return Err(Error::Malformed("witness name or time"));
    }
    let sig = key.sign(cosigned_message(&checkpoint.body(), time).as_bytes());
    let mut blob = time.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    Ok(signature_line(
        name,
        ed25519_key_id(name, SIGNATURE_TYPE_COSIGNATURE_V1, &key.verifying_key()),
        &blob,
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

/// A checkpoint opened with [`open_cosigned`]: which trusted witnesses
/// cosigned it, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// (witness name, cosignature time) of each valid trusted cosignature.
    pub cosigners: Vec<(String, u64)>,
}

/// Opens a signed checkpoint: a trusted log key named as the checkpoint's
/// origin must have signed it, and no signature by a trusted key may fail.
/// Other trusted names (witnesses) are checked when present but never
/// stand in for the log's key, so a note whose origin line names one log
/// and whose signature line names another is refused.
pub fn open(note: &str, trusted: &[TrustedKey]) -> Result<Checkpoint, Error> {
    open_cosigned(note, trusted).map(|o| o.checkpoint)
}

/// [`open`], also reporting the trusted witnesses' valid cosignatures.
pub fn open_cosigned(note: &str, trusted: &[TrustedKey]) -> Result<Opened, Error> {
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
    let mut cosigners: Vec<(String, u64)> = Vec::new();
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
            if t.key.key_id(name)?.as_slice() != id {
                continue;
            }
            let Some(time) = t.key.verify(text, sig) else {
                return Err(Error::BadSignature(name.to_owned()));
            };
            match time {
                Some(time) => {
                    if !cosigners.iter().any(|(n, _)| n == name) {
                        cosigners.push((name.to_owned(), time));
                    }
                }
                None => by_log |= name == checkpoint.origin,
            }
        }
    }
    if by_log {
        Ok(Opened {
            checkpoint,
            cosigners,
        })
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
            key: (*k.verifying_key()).into(),
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
            key: (*w.verifying_key()).into(),
        });
        let by_witness = sign(&cp(), "witness.example/w1", &w).expect("sign");
        assert_eq!(open(&by_witness, &keys), Err(Error::Untrusted));
        let by_log = sign(&cp(), "edgecoder.example/ledger", &k).expect("sign");
        let extra = by_witness.lines().last().expect("line");
        assert_eq!(open(&format!("{by_log}{extra}\n"), &keys), Ok(cp()));
    }

    fn ed(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    fn vkey_of(name: &str, key: NoteKey) -> TrustedKey {
        let vkey = key.vkey(name).expect("vkey");
        NoteKey::parse_vkey(&vkey).expect("parse")
    }

    #[test]
    fn ed25519_log_signatures_and_witness_cosignatures_open_with_their_vkeys() {
        let (log, log_ed, witness) = (key(2), ed(3), ed(4));
        let name = "edgecoder.example/ledger";
        let note = sign_with(
            &cp(),
            name,
            &[NoteSigner::EcdsaP256(&log), NoteSigner::Ed25519(&log_ed)],
        )
        .expect("sign");
        // Either log key opens it alone (a witness that knows only the
        // Ed25519 key ignores the ECDSA line).
        let ed_only = vec![vkey_of(name, NoteKey::Ed25519(log_ed.verifying_key()))];
        assert_eq!(open(&note, &ed_only), Ok(cp()));
        assert_eq!(open(&note, &trusted(&log)), Ok(cp()));

        let w = "witness.example/w1";
        let line = cosign(&cp(), w, &witness, 1_679_315_147).expect("cosign");
        let cosigned = format!("{note}{line}");
        let mut keys = ed_only.clone();
        keys.push(vkey_of(w, NoteKey::CosignatureV1(witness.verifying_key())));
        let opened = open_cosigned(&cosigned, &keys).expect("open");
        assert_eq!(opened.cosigners, vec![(w.to_owned(), 1_679_315_147)]);
        // Without the log's own signature, a cosignature makes nothing.
        let alone = format!("{}\n{line}", cp().body());
        assert_eq!(open_cosigned(&alone, &keys), Err(Error::Untrusted));
        // The timestamp is signed: changing it breaks the cosignature.
        let (head, b64) = line.trim_end().rsplit_once(' ').expect("line");
        let mut blob = STANDARD.decode(b64).expect("b64");
        blob[11] ^= 1;
        let shifted = format!("{note}{head} {}\n", STANDARD.encode(&blob));
        assert!(matches!(
            open_cosigned(&shifted, &keys),
            Err(Error::BadSignature(_))
        ));
        // A cosignature over another tree head does not verify for this one.
        let other = Checkpoint {
            size: 16_001,
            ..cp()
        };
        let wrong = cosign(&other, w, &witness, 1).expect("cosign");
        assert!(open_cosigned(&format!("{note}{wrong}"), &keys).is_err());
    }

    #[test]
    fn azul_signed_note_verifies_our_ed25519_checkpoints_and_we_verify_its() {
        use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
        let name = "edgecoder.example/ledger";
        let log_ed = ed(5);
        let vkey = NoteKey::Ed25519(log_ed.verifying_key())
            .vkey(name)
            .expect("vkey");
        // Ours, checked by azul with the vkey we publish.
        let note = sign_with(
            &cp(),
            name,
            &[NoteSigner::EcdsaP256(&key(2)), NoteSigner::Ed25519(&log_ed)],
        )
        .expect("sign");
        let verifier = StandardVerifier::new(&vkey).expect("azul parses our vkey");
        let parsed = Note::from_bytes(note.as_bytes()).expect("azul parses our note");
        let (verified, unverified) = parsed
            .verify(&VerifierList::new(vec![alloc::boxed::Box::new(verifier)]))
            .expect("azul verifies our signature");
        assert_eq!((verified.len(), unverified.len()), (1, 1));

        // Azul's, checked by us: its signer key holds seed 6 (signed-note
        // private keys are the type byte and the Ed25519 seed).
        let mut raw = vec![SIGNATURE_TYPE_ED25519];
        raw.extend_from_slice(&[6u8; 32]);
        let other_vkey = NoteKey::Ed25519(ed(6).verifying_key())
            .vkey(name)
            .expect("vkey");
        let other_id = other_vkey.split('+').nth(1).expect("id");
        let skey = format!("PRIVATE+KEY+{name}+{other_id}+{}", STANDARD.encode(&raw));
        let signer = StandardSigner::new(&skey).expect("azul signer");
        let mut theirs = Note::new(cp().body().as_bytes(), &[]).expect("note");
        theirs.add_sigs(&[&signer]).expect("azul signs");
        let text = String::from_utf8(theirs.to_bytes()).expect("utf-8");
        let trusted = vec![NoteKey::parse_vkey(&other_vkey).expect("vkey")];
        assert_eq!(open(&text, &trusted), Ok(cp()));
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
