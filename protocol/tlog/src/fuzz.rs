//! Generated hostile inputs for every parser and verifier of untrusted input
//! in this crate: signed notes and checkpoint bodies, tlog-proof receipts,
//! and inclusion and consistency proofs with random sizes, indexes and hash
//! lists. A few hundred thousand seeded inputs each; none may panic, and
//! each is refused with an [`Error`] variant.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use std::collections::BTreeMap;

use edgecoder_fuzzgen::{Mutator, run};
use p256::ecdsa::SigningKey;

use crate::Error;
use crate::checkpoint::{self, Checkpoint, TrustedKey};
use crate::merkle::{
    Hash, Hasher as _, NodeId, Sha256, completed_by_append, consistency_ranges, inclusion_ranges,
    proof_hashes, range_hash, verify_consistency, verify_inclusion,
};
use crate::proof::TlogProof;

/// Inputs per parser.
const N: usize = 200_000;
const ORIGIN: &str = "edgecoder.example/ledger";

fn key(seed: u8) -> SigningKey {
    let mut b = [seed; 32];
    b[0] = 1;
    SigningKey::from_slice(&b).expect("key")
}

fn trusted() -> Vec<TrustedKey> {
    vec![TrustedKey {
        name: ORIGIN.into(),
        key: (*key(2).verifying_key()).into(),
    }]
}

fn tree(n: u64) -> BTreeMap<NodeId, Hash> {
    let mut nodes = BTreeMap::new();
    for i in 0..n {
        let leaf = Sha256::leaf(&i.to_be_bytes());
        for (id, h) in completed_by_append::<Sha256>(i, leaf, &nodes).expect("append") {
            nodes.insert(id, h);
        }
    }
    nodes
}

fn note(size: u64, nodes: &BTreeMap<NodeId, Hash>) -> String {
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: range_hash::<Sha256>(nodes, 0, size).expect("root"),
    };
    checkpoint::sign(&cp, ORIGIN, &key(2)).expect("sign")
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

#[test]
fn signed_notes_never_panic() {
    let nodes = tree(9);
    let signed = note(9, &nodes);
    let witness = checkpoint::sign(
        &Checkpoint {
            origin: ORIGIN.into(),
            size: 9,
            root: [0; 32],
        },
        "witness.example/w1",
        &key(7),
    )
    .expect("sign");
    let cosigned = alloc::format!("{signed}{}\n", witness.lines().last().unwrap_or(""));
    let keys = trusted();
    let mut n = 0u32;
    let corpus = vec![signed.into_bytes(), cosigned.into_bytes()];
    run("signed note", 11, N, corpus, |input| {
        let t = text(input);
        let _ = checkpoint::body_of(&t);
        let _ = Checkpoint::parse_body(&t);
        // A signature check costs ~0.1 ms: every eighth input goes all the
        // way through one.
        n += 1;
        if n.is_multiple_of(8) {
            match checkpoint::open(&t, &keys) {
                Ok(cp) => assert_eq!(cp.origin, ORIGIN),
                Err(e) => assert!(matches!(
                    e,
                    Error::Malformed(_) | Error::Untrusted | Error::BadSignature(_) | Error::Key(_)
                )),
            }
        }
    });
}

#[test]
fn tlog_proofs_never_panic() {
    let nodes = tree(13);
    let corpus: Vec<Vec<u8>> = [(0u64, 1u64), (5, 13), (12, 13)]
        .into_iter()
        .map(|(index, size)| {
            let ranges = inclusion_ranges(index, size).expect("ranges");
            TlogProof {
                extra: Some(index.to_be_bytes().to_vec()),
                index,
                hashes: proof_hashes::<Sha256>(&nodes, &ranges).expect("proof"),
                checkpoint: note(size, &nodes),
            }
            .to_text()
            .into_bytes()
        })
        .collect();
    let keys = trusted();
    let mut n = 0u32;
    run("tlog-proof", 12, N, corpus, |input| {
        if let Ok(p) = TlogProof::parse(&text(input)) {
            let _ = p.to_text();
            n += 1;
            if n.is_multiple_of(8) {
                let _ = p.verify_extra(&keys);
            }
        }
    });
}

#[test]
fn proofs_of_random_sizes_never_panic() {
    let mut m = Mutator::new(13, vec![vec![0u8; 32]]);
    let nodes = tree(40);
    let root = range_hash::<Sha256>(&nodes, 0, 40).expect("root");
    for _ in 0..N {
        let (a, b) = (m.number(), m.number());
        let hashes: Vec<Vec<u8>> = (0..(m.number() % 70))
            .map(|_| {
                let mut h = m.next_input();
                h.truncate(33);
                h
            })
            .collect();
        let leaf = m.next_input();
        let r1 = inclusion_ranges(a, b);
        let r2 = consistency_ranges(a, b);
        assert!(r1.is_ok() == (a < b), "inclusion ranges for {a}, {b}");
        assert!(
            r2.is_ok() == (a > 0 && a <= b),
            "consistency ranges for {a}, {b}"
        );
        if let (Ok(r), true) = (r1, b <= 40) {
            let _ = proof_hashes::<Sha256>(&nodes, &r);
        }
        let _ = verify_inclusion::<Sha256>(a, b, &leaf, &hashes, &root);
        let _ = verify_consistency::<Sha256>(a, b, &hashes, &leaf, &root);
        let _ = range_hash::<Sha256>(&nodes, a.min(b) % 41, b % 41);
    }
}
