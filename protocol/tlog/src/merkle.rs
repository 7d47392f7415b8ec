//! Merkle tree hashing and proofs as RFC 6962 §2.1 (and RFC 9162 §2.1)
//! define them, generic over the hash function, with the SHA-256 instance
//! c2sp.org/merkle-tree and C2SP tlog-witness require ([`Sha256`]).
//!
//! In scope: leaf and interior hashing with domain separation
//! (`leaf = H(0x00 ‖ entry)`, `node = H(0x01 ‖ left ‖ right)`), the tree
//! head of any size, inclusion and consistency proofs (generation from stored
//! complete subtrees, and verification), and a leaf-by-leaf [`Frontier`] for
//! verifiers that recompute a head. Out of scope: storage (the caller supplies
//! complete subtree hashes through [`Nodes`]) and signing ([`crate::checkpoint`]).
//!
//! ```text
//!            root (size 6)                 complete subtrees are addressed as
//!           /            \                 (level, index): the 2^level leaves
//!      (2,0)              H(...)           starting at index·2^level
//!     /     \            /     \
//!  (1,0)   (1,1)      (1,2)   (the 4th..5th leaves)
//!  /  \    /  \       /  \
//! l0  l1  l2  l3     l4  l5
//! ```
//!
//! Any range the proof algorithms hash, `D[a:b]`, starts at a multiple of the
//! largest power of two not above `b − a`, so its hash is a right fold of at
//! most ⌈log₂ n⌉ stored complete subtrees: a proof needs O(log n) node reads,
//! fetched together ([`needed_nodes`]) before computing.

use alloc::vec;
use alloc::vec::Vec;

use sha2::Digest as _;

use crate::Error;

/// A 32-byte digest.
pub type Hash = [u8; 32];

/// A hash function with RFC 9162 domain separation.
pub trait Hasher {
    /// `H(0x00 ‖ data)`.
    fn leaf(data: &[u8]) -> Hash;
    /// `H(0x01 ‖ left ‖ right)`.
    fn node(left: &Hash, right: &Hash) -> Hash;
    /// `H()`, the head of the empty tree.
    fn empty() -> Hash;
}

/// Longest inclusion or consistency proof for any tree a `u64` can count
/// (one hash per level, plus the first tree's head in a consistency proof).
pub const MAX_PROOF_HASHES: usize = 65;

/// SHA-256, as RFC 6962 and c2sp.org/merkle-tree specify: what the log uses.
#[derive(Debug, Clone, Copy)]
pub struct Sha256;

impl Hasher for Sha256 {
    fn leaf(data: &[u8]) -> Hash {
        let mut h = sha2::Sha256::new();
        h.update([0x00]);
        h.update(data);
        h.finalize().into()
    }
    fn node(left: &Hash, right: &Hash) -> Hash {
        let mut h = sha2::Sha256::new();
        h.update([0x01]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }
    fn empty() -> Hash {
        sha2::Sha256::digest([]).into()
    }
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A complete subtree: the `2^level` leaves from `index · 2^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Height above the leaves.
    pub level: u32,
    /// Position among the subtrees of that level.
    pub index: u64,
}

/// The complete subtrees whose right fold is `MTH(D[start:end])`, left to
/// right (none for an empty or reversed range).
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut at = start;
    let mut left = end.saturating_sub(start);
    while left > 0 {
        let level = 63 - left.leading_zeros();
        out.push(NodeId {
            level,
            index: at >> level,
        });
        at += 1u64 << level;
        left -= 1u64 << level;
    }
    out
}

/// Stored complete subtree hashes.
pub trait Nodes {
    /// The hash of `id`, if stored.
    fn get(&self, id: NodeId) -> Option<Hash>;
}

#[cfg(feature = "std")]
impl Nodes for std::collections::HashMap<NodeId, Hash> {
    fn get(&self, id: NodeId) -> Option<Hash> {
        std::collections::HashMap::get(self, &id).copied()
    }
}

impl Nodes for alloc::collections::BTreeMap<NodeId, Hash> {
    fn get(&self, id: NodeId) -> Option<Hash> {
        alloc::collections::BTreeMap::get(self, &id).copied()
    }
}

/// `MTH(D[start:end])` from stored complete subtrees.
pub fn range_hash<H: Hasher>(nodes: &dyn Nodes, start: u64, end: u64) -> Result<Hash, Error> {
    if start > end {
        return Err(Error::OutOfRange);
    }
    if start == end {
        return Ok(H::empty());
    }
    let ids = range_nodes(start, end);
    let mut acc: Option<Hash> = None;
    for id in ids.iter().rev() {
        let h = nodes.get(*id).ok_or(Error::MissingNode)?;
        acc = Some(match acc {
            None => h,
            Some(right) => H::node(&h, &right),
        });
    }
    acc.ok_or(Error::MissingNode)
}

/// The ranges whose hashes form the inclusion proof of `index` in a tree of
/// `size` leaves (RFC 9162 §2.1.3.1 `PATH`), bottom first.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, Error> {
    if index >= size {
        return Err(Error::OutOfRange);
    }
    let mut out = Vec::new();
    let (mut start, mut end, mut m) = (0u64, size, index);
    // Walk down from the root, collecting siblings top first.
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            out.push((start + k, end));
            end = start + k;
        } else {
            out.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    out.reverse();
    Ok(out)
}

/// The ranges whose hashes form the consistency proof between sizes `first`
/// and `second` (RFC 9162 §2.1.4.1 `PROOF`), bottom first.
pub fn consistency_ranges(first: u64, second: u64) -> Result<Vec<(u64, u64)>, Error> {
    if first == 0 || first > second {
        return Err(Error::OutOfRange);
    }
    let mut out = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0u64, second, first, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                out.push((start, end));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            out.push((start + k, end));
            end = start + k;
        } else {
            out.push((start, start + k));
            start += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// Every stored node the given ranges need, deduplicated, for one fetch.
pub fn needed_nodes(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = ranges
        .iter()
        .flat_map(|&(a, b)| range_nodes(a, b))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Hashes the ranges of a proof.
pub fn proof_hashes<H: Hasher>(
    nodes: &dyn Nodes,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>, Error> {
    ranges
        .iter()
        .map(|&(a, b)| range_hash::<H>(nodes, a, b))
        .collect()
}

fn to_hash(bytes: &[u8]) -> Result<Hash, Error> {
    bytes.try_into().map_err(|_| Error::MalformedProof)
}

/// Verifies that `leaf_hash` is at `index` in the tree of `size` leaves with
/// head `root` (RFC 9162 §2.1.3.2). Hashes are byte slices so that a value
/// of the wrong length is refused, not truncated.
pub fn verify_inclusion<H: Hasher>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), Error> {
    if index >= size {
        return Err(Error::OutOfRange);
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(Error::MalformedProof);
    }
    let root = to_hash(root)?;
    let mut r = to_hash(leaf_hash)?;
    let (mut f, mut s) = (index, size - 1);
    for p in proof {
        let p = to_hash(p)?;
        if s == 0 {
            return Err(Error::MalformedProof);
        }
        if f & 1 == 1 || f == s {
            r = H::node(&p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = H::node(&r, &p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(Error::MalformedProof);
    }
    if r != root {
        return Err(Error::Mismatch);
    }
    Ok(())
}

/// Verifies that the tree of `second` leaves with head `root2` extends the
/// tree of `first` leaves with head `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency<H: Hasher>(
    first: u64,
    second: u64,
    proof: &[Vec<u8>],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), Error> {
    if second < first {
        return Err(Error::OutOfRange);
    }
    if first == 0 {
        // Every tree extends the empty one: such a "proof" proves nothing,
        // so it is refused rather than accepted vacuously.
        return Err(Error::OutOfRange);
    }
    if first == second {
        if !proof.is_empty() {
            return Err(Error::MalformedProof);
        }
        // Nothing is hashed: the heads must simply be the same bytes.
        return if root1 == root2 {
            Ok(())
        } else {
            Err(Error::Mismatch)
        };
    }
    if proof.is_empty() || proof.len() > MAX_PROOF_HASHES {
        return Err(Error::MalformedProof);
    }
    let root1 = to_hash(root1)?;
    let root2 = to_hash(root2)?;
    let mut path: Vec<Hash> = proof.iter().map(|p| to_hash(p)).collect::<Result<_, _>>()?;
    if first.is_power_of_two() {
        path.insert(0, root1);
    }
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(Error::MalformedProof);
        }
        if f & 1 == 1 || f == s {
            fr = H::node(c, &fr);
            sr = H::node(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = H::node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(Error::MalformedProof);
    }
    if fr != root1 || sr != root2 {
        return Err(Error::Mismatch);
    }
    Ok(())
}

/// The complete subtrees that appending leaf number `index` (0-based) with
/// hash `leaf` completes, given the stored right frontier, bottom first
/// (always includes the leaf itself at level 0).
pub fn completed_by_append<H: Hasher>(
    index: u64,
    leaf: Hash,
    frontier: &dyn Nodes,
) -> Result<Vec<(NodeId, Hash)>, Error> {
    let mut out = vec![(NodeId { level: 0, index }, leaf)];
    let (mut level, mut i, mut h) = (0u32, index, leaf);
    while i & 1 == 1 {
        let left = frontier
            .get(NodeId {
                level,
                index: i - 1,
            })
            .ok_or(Error::MissingNode)?;
        h = H::node(&left, &h);
        level += 1;
        i >>= 1;
        out.push((NodeId { level, index: i }, h));
    }
    Ok(out)
}

/// The nodes a writer must read before appending at `size`: the left
/// siblings that the new leaf's subtrees complete (the right frontier).
pub fn frontier_for_append(size: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let (mut level, mut i) = (0u32, size);
    while i & 1 == 1 {
        out.push(NodeId {
            level,
            index: i - 1,
        });
        level += 1;
        i >>= 1;
    }
    out
}

/// The right frontier of a tree being built leaf by leaf: O(log n) memory,
/// for verifiers that recompute a head from every entry.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// Complete subtrees of the current size, largest (leftmost) first.
    peaks: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push<H: Hasher>(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.peaks.last() {
            if level != node.0 {
                break;
            }
            self.peaks.pop();
            node = (level + 1, H::node(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The frontier's state: its size and its peaks (level, hash), largest
    /// first, for a verifier that resumes later.
    pub fn to_parts(&self) -> (u64, Vec<(u32, Hash)>) {
        (self.size, self.peaks.clone())
    }

    /// A frontier from [`Frontier::to_parts`]; refused unless the peaks are
    /// exactly the complete subtrees a tree of `size` leaves has.
    pub fn from_parts(size: u64, peaks: Vec<(u32, Hash)>) -> Result<Frontier, Error> {
        let levels: Vec<u32> = (0..64u32).rev().filter(|l| size >> l & 1 == 1).collect();
        if peaks.iter().map(|(l, _)| *l).collect::<Vec<_>>() != levels {
            return Err(Error::MalformedProof);
        }
        Ok(Frontier { peaks, size })
    }

    /// The head of the tree so far.
    pub fn root<H: Hasher>(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return H::empty();
        };
        for (_, left) in iter {
            acc = H::node(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::{String, ToString};
    use std::collections::HashMap;

    use super::*;

    fn b64(v: &serde_json::Value) -> Vec<u8> {
        use base64::Engine as _;
        // Undecodable vectors stand for garbage input: keep them as bytes.
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_else(|_| b"undecodable".to_vec())
    }

    fn proof(v: &serde_json::Value) -> Vec<Vec<u8>> {
        v.as_array()
            .map(|a| a.iter().map(b64).collect())
            .unwrap_or_default()
    }

    fn cases(kind: &str) -> Vec<(String, serde_json::Value)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/merkle-sha256")
            .join(kind);
        let mut out = Vec::new();
        let mut stack = std::vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("vectors present") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    let v =
                        serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
                    out.push((p.display().to_string(), v));
                }
            }
        }
        out
    }

    #[test]
    fn sha256_instance_passes_every_inclusion_vector() {
        let all = cases("inclusion");
        assert!(all.len() > 80, "only {} vectors", all.len());
        for (path, v) in all {
            let got = verify_inclusion::<Sha256>(
                v["leafIdx"].as_u64().unwrap_or(u64::MAX),
                v["treeSize"].as_u64().unwrap_or(0),
                &b64(&v["leafHash"]),
                &proof(&v["proof"]),
                &b64(&v["root"]),
            );
            assert_eq!(got.is_err(), v["wantErr"] == true, "{path}: {got:?}");
        }
    }

    #[test]
    fn sha256_instance_passes_every_consistency_vector() {
        let all = cases("consistency");
        assert!(all.len() > 80, "only {} vectors", all.len());
        for (path, v) in all {
            let got = verify_consistency::<Sha256>(
                v["size1"].as_u64().unwrap_or(0),
                v["size2"].as_u64().unwrap_or(0),
                &proof(&v["proof"]),
                &b64(&v["root1"]),
                &b64(&v["root2"]),
            );
            assert_eq!(got.is_err(), v["wantErr"] == true, "{path}: {got:?}");
        }
    }

    /// A tree built by appends, as the log builds it.
    fn tree<H: Hasher>(n: u64) -> HashMap<NodeId, Hash> {
        let mut nodes = HashMap::new();
        for i in 0..n {
            let leaf = H::leaf(format!("entry {i}").as_bytes());
            for (id, h) in completed_by_append::<H>(i, leaf, &nodes).expect("append") {
                nodes.insert(id, h);
            }
        }
        nodes
    }

    /// RFC 9162 `MTH` straight from the definition.
    fn reference_root<H: Hasher>(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => H::empty(),
            1 => leaves[0],
            n => {
                let k = usize::try_from(split(n as u64)).unwrap_or(1);
                H::node(
                    &reference_root::<H>(&leaves[..k]),
                    &reference_root::<H>(&leaves[k..]),
                )
            }
        }
    }

    fn generated_proofs_verify<H: Hasher>() {
        let n = 70u64;
        let nodes = tree::<H>(n);
        let leaves: Vec<Hash> = (0..n)
            .map(|i| H::leaf(format!("entry {i}").as_bytes()))
            .collect();
        for size in 1..=n {
            let root = range_hash::<H>(&nodes, 0, size).expect("root");
            assert_eq!(
                root,
                reference_root::<H>(&leaves[..usize::try_from(size).unwrap_or(0)])
            );
            for index in 0..size {
                let ranges = inclusion_ranges(index, size).expect("ranges");
                let p: Vec<Vec<u8>> = proof_hashes::<H>(&nodes, &ranges)
                    .expect("proof")
                    .into_iter()
                    .map(|h| h.to_vec())
                    .collect();
                let leaf = leaves[usize::try_from(index).unwrap_or(0)];
                verify_inclusion::<H>(index, size, &leaf, &p, &root).expect("inclusion");
                if index + 1 < size {
                    assert!(verify_inclusion::<H>(index + 1, size, &leaf, &p, &root).is_err());
                }
            }
            for first in 1..=size {
                let r1 = range_hash::<H>(&nodes, 0, first).expect("root1");
                let ranges = consistency_ranges(first, size).expect("ranges");
                let p: Vec<Vec<u8>> = proof_hashes::<H>(&nodes, &ranges)
                    .expect("proof")
                    .into_iter()
                    .map(|h| h.to_vec())
                    .collect();
                verify_consistency::<H>(first, size, &p, &r1, &root).expect("consistency");
                if first < size {
                    let forged = H::leaf(b"forged");
                    assert!(verify_consistency::<H>(first, size, &p, &forged, &root).is_err());
                }
            }
        }
    }

    #[test]
    fn generated_proofs_verify_with_sha256() {
        generated_proofs_verify::<Sha256>();
    }

    #[test]
    fn the_frontier_computes_every_head() {
        let mut f = Frontier::new();
        let mut leaves = Vec::new();
        assert_eq!(f.root::<Sha256>(), Sha256::empty());
        for i in 0..100u32 {
            let leaf = Sha256::leaf(&i.to_be_bytes());
            leaves.push(leaf);
            f.push::<Sha256>(leaf);
            assert_eq!(f.root::<Sha256>(), reference_root::<Sha256>(&leaves));
            // A frontier saved and resumed goes on as if never stopped.
            let (size, peaks) = f.to_parts();
            f = Frontier::from_parts(size, peaks).expect("resume");
        }
        assert_eq!(f.size(), 100);
        let (size, mut peaks) = f.to_parts();
        assert!(Frontier::from_parts(size + 1, peaks.clone()).is_err());
        peaks.pop();
        assert!(Frontier::from_parts(size, peaks).is_err());
    }

    #[test]
    fn proofs_need_logarithmically_many_nodes() {
        let size = 1_000_000u64;
        let inc = inclusion_ranges(123_457, size).expect("ranges");
        let con = consistency_ranges(777_777, size).expect("ranges");
        assert!(
            needed_nodes(&inc).len() <= 40,
            "{}",
            needed_nodes(&inc).len()
        );
        assert!(
            needed_nodes(&con).len() <= 60,
            "{}",
            needed_nodes(&con).len()
        );
        assert_eq!(frontier_for_append(0b1011).len(), 2);
    }
}
