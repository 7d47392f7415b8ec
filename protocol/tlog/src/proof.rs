//! Receipts: c2sp.org/tlog-proof, an offline-verifiable proof that an entry is
//! in the log, made of the entry's index, its RFC 6962 inclusion proof and
//! the signed checkpoint the proof leads to.
//!
//! In scope: writing and parsing the text format (with size caps checked
//! before decoding), and verifying a proof for a leaf hash against pinned log
//! keys. Out of scope: computing the leaf hash from application data (the
//! caller's job; for the ledger, `extra` carries the entry's exact bytes,
//! which are *not* authenticated until their hash is proven included) and
//! witness policy (cosignatures are carried and ignored).
//!
//! ```text
//! c2sp.org/tlog-proof@v1                  header
//! extra eyJ2IjoxLCJ0eXBlIjoi…             optional: base64 opaque data
//! index 7                                 decimal, no leading zeros
//! 2n0Z…=                                  inclusion proof, one base64
//! Yc4t…=                                  SHA-256 hash per line, leaf side first
//!                                         blank line
//! edgecoder.example/ledger                the checkpoint, verbatim,
//! 8                                       with its signature lines
//! …
//! ```

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Error;
use crate::checkpoint::{self, Checkpoint, TrustedKey};
use crate::merkle::{self, Hash, Hasher as _, MAX_PROOF_HASHES, Sha256};

/// The first line of every proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest proof accepted: a checkpoint note, 65 hashes and the extra data.
pub const MAX_PROOF_BYTES: usize = checkpoint::MAX_NOTE_BYTES + 8 * 1024 + MAX_EXTRA_BYTES * 4 / 3;
/// Largest `extra` accepted, decoded (a ledger entry envelope is at most 64 KiB).
pub const MAX_EXTRA_BYTES: usize = 96 * 1024;

/// A parsed c2sp.org/tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated extra data.
    pub extra: Option<Vec<u8>>,
    /// The entry's zero-based index.
    pub index: u64,
    /// The inclusion proof, leaf side first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// The text form.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(64 + 45 * self.hashes.len() + self.checkpoint.len());
        out.push_str(HEADER);
        out.push('\n');
        if let Some(extra) = &self.extra {
            out.push_str("extra ");
            out.push_str(&STANDARD.encode(extra));
            out.push('\n');
        }
        out.push_str("index ");
        out.push_str(&alloc::format!("{}", self.index));
        out.push('\n');
        for h in &self.hashes {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses the text form; checks shape only (see [`TlogProof::verify`]).
    pub fn parse(text: &str) -> Result<TlogProof, Error> {
        if text.len() > MAX_PROOF_BYTES {
            return Err(Error::Malformed("tlog-proof too large"));
        }
        let mut rest = text
            .strip_prefix(HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(Error::Malformed("tlog-proof header"))?;
        let mut next_line = |what: &'static str| -> Result<&str, Error> {
            let (line, after) = rest.split_once('\n').ok_or(Error::Malformed(what))?;
            rest = after;
            Ok(line)
        };
        let mut line = next_line("tlog-proof index")?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            if b64.len() > MAX_EXTRA_BYTES.div_ceil(3) * 4 {
                return Err(Error::Malformed("tlog-proof extra too large"));
            }
            extra = Some(
                STANDARD
                    .decode(b64)
                    .map_err(|_| Error::Malformed("tlog-proof extra encoding"))?,
            );
            line = next_line("tlog-proof index")?;
        }
        let index = line
            .strip_prefix("index ")
            .filter(|n| {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && (n.len() == 1 || !n.starts_with('0'))
            })
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(Error::Malformed("tlog-proof index"))?;
        let mut hashes = Vec::new();
        loop {
            let line = next_line("tlog-proof ends before the checkpoint")?;
            if line.is_empty() {
                break;
            }
            if hashes.len() == MAX_PROOF_HASHES {
                return Err(Error::Malformed("tlog-proof has too many hashes"));
            }
            // A SHA-256 hash is 44 base64 characters; refuse before decoding.
            let hash = Some(line)
                .filter(|l| l.len() == 44)
                .and_then(|l| STANDARD.decode(l).ok())
                .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
                .ok_or(Error::Malformed("tlog-proof hash"))?;
            hashes.push(hash);
        }
        if rest.is_empty() {
            return Err(Error::Malformed("tlog-proof without a checkpoint"));
        }
        Ok(TlogProof {
            extra,
            index,
            hashes,
            checkpoint: rest.to_owned(),
        })
    }

    /// Verifies that `leaf_hash` is entry [`TlogProof::index`] of the tree the
    /// checkpoint signs, with the checkpoint signed by a trusted log key
    /// (steps 2 and 4 of the specification's verification; step 1, the leaf
    /// hash, is the caller's, and witness policy is out of scope).
    pub fn verify(&self, leaf_hash: &Hash, trusted: &[TrustedKey]) -> Result<Checkpoint, Error> {
        let cp = checkpoint::open(&self.checkpoint, trusted)?;
        let hashes: Vec<Vec<u8>> = self.hashes.iter().map(|h| h.to_vec()).collect();
        merkle::verify_inclusion::<Sha256>(self.index, cp.size, leaf_hash, &hashes, &cp.root)?;
        Ok(cp)
    }

    /// [`TlogProof::verify`] for the entry carried in `extra`: its RFC 6962
    /// leaf hash is what must be included. Returns the checkpoint and the
    /// now-authenticated entry bytes.
    pub fn verify_extra(&self, trusted: &[TrustedKey]) -> Result<(Checkpoint, &[u8]), Error> {
        let entry = self
            .extra
            .as_deref()
            .ok_or(Error::Malformed("tlog-proof without the entry in extra"))?;
        let cp = self.verify(&Sha256::leaf(entry), trusted)?;
        Ok((cp, entry))
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;
    use alloc::vec;

    use p256::ecdsa::SigningKey;

    use super::*;
    use crate::merkle::{NodeId, completed_by_append, inclusion_ranges, proof_hashes, range_hash};

    fn key() -> SigningKey {
        let mut b = [5u8; 32];
        b[0] = 1;
        SigningKey::from_slice(&b).expect("key")
    }

    fn log(n: u64) -> (BTreeMap<NodeId, Hash>, Vec<Vec<u8>>) {
        let mut nodes = BTreeMap::new();
        let mut entries = Vec::new();
        for i in 0..n {
            let e = alloc::format!("entry {i}").into_bytes();
            for (id, h) in
                completed_by_append::<Sha256>(i, Sha256::leaf(&e), &nodes).expect("append")
            {
                nodes.insert(id, h);
            }
            entries.push(e);
        }
        (nodes, entries)
    }

    fn proof_for(index: u64, n: u64) -> TlogProof {
        let (nodes, entries) = log(n);
        let cp = Checkpoint {
            origin: "edgecoder.example/ledger".into(),
            size: n,
            root: range_hash::<Sha256>(&nodes, 0, n).expect("root"),
        };
        let note = checkpoint::sign(&cp, &cp.origin, &key()).expect("sign");
        let ranges = inclusion_ranges(index, n).expect("ranges");
        TlogProof {
            extra: Some(entries[usize::try_from(index).expect("index")].clone()),
            index,
            hashes: proof_hashes::<Sha256>(&nodes, &ranges).expect("proof"),
            checkpoint: note,
        }
    }

    fn trusted() -> Vec<TrustedKey> {
        vec![TrustedKey {
            name: "edgecoder.example/ledger".into(),
            key: (*key().verifying_key()).into(),
        }]
    }

    #[test]
    fn a_proof_round_trips_and_verifies() {
        for (index, n) in [(0, 1), (3, 7), (6, 7), (100, 129)] {
            let p = proof_for(index, n);
            let text = p.to_text();
            assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
            let parsed = TlogProof::parse(&text).expect("parse");
            assert_eq!(parsed, p);
            let (cp, entry) = parsed.verify_extra(&trusted()).expect("verify");
            assert_eq!(cp.size, n);
            assert_eq!(entry, alloc::format!("entry {index}").as_bytes());
        }
    }

    #[test]
    fn the_specification_example_layout_parses() {
        let text = "c2sp.org/tlog-proof@v1\nindex 0\n\nexample.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} example.com/log AAAAAQ==\n";
        let p = TlogProof::parse(text).expect("parse");
        assert_eq!((p.index, p.hashes.len(), p.extra.is_none()), (0, 0, true));
        assert_eq!(p.to_text(), text);
    }

    #[test]
    fn another_entry_index_or_key_is_refused() {
        let p = proof_for(3, 7);
        let mut other = p.clone();
        other.extra = Some(b"entry 4".to_vec());
        assert_eq!(
            other.verify_extra(&trusted()).map(|_| ()),
            Err(Error::Mismatch)
        );
        let mut moved = p.clone();
        moved.index = 4;
        assert!(moved.verify_extra(&trusted()).is_err());
        let mut stranger = SigningKey::from_slice(&[9u8; 32]).expect("key");
        stranger = SigningKey::from_slice(&stranger.to_bytes()).expect("key");
        let foreign = vec![TrustedKey {
            name: "edgecoder.example/ledger".into(),
            key: (*stranger.verifying_key()).into(),
        }];
        assert_eq!(p.verify_extra(&foreign).map(|_| ()), Err(Error::Untrusted));
        assert!(p.clone().verify(&[0u8; 32], &trusted()).is_err());
    }

    #[test]
    fn malformed_proofs_are_refused_by_name() {
        let good = proof_for(3, 7).to_text();
        for (bad, why) in [
            ("", "header"),
            ("c2sp.org/tlog-proof@v2\nindex 0\n\ncp\n", "header"),
            ("c2sp.org/tlog-proof@v1\nindex 01\n\ncp\n", "index"),
            ("c2sp.org/tlog-proof@v1\nindex -1\n\ncp\n", "index"),
            (
                "c2sp.org/tlog-proof@v1\nindex 18446744073709551616\n\ncp\n",
                "index",
            ),
            ("c2sp.org/tlog-proof@v1\nextra !!\nindex 0\n\ncp\n", "extra"),
            ("c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\ncp\n", "hash"),
            ("c2sp.org/tlog-proof@v1\nindex 0\n\n", "checkpoint"),
            ("c2sp.org/tlog-proof@v1\nindex 0\n", "checkpoint"),
        ] {
            match TlogProof::parse(bad) {
                Err(Error::Malformed(m)) => assert!(m.contains(why), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let many = good.replacen(
            "index 3\n",
            &alloc::format!(
                "index 3\n{}",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(66)
            ),
            1,
        );
        assert!(matches!(TlogProof::parse(&many), Err(Error::Malformed(_))));
    }
}
