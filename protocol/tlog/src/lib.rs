//! `edgecoder-tlog`: the transparency-log formats EdgeCoder's ledger speaks,
//! as the specifications define them, so that C2SP witnesses and monitors
//! written by others can check our log and our receipts.
//!
//! In scope:
//! - [`merkle`]: RFC 6962 / c2sp.org/merkle-tree hashing with SHA-256
//!   ([`merkle::Sha256`]), inclusion and consistency proofs (generic over the
//!   hash), and a frontier for recomputing heads;
//! - [`checkpoint`]: c2sp.org/tlog-checkpoint bodies in c2sp.org/signed-note
//!   envelopes, signed with ECDSA P-256 (signature type `0x02`);
//! - [`proof`]: c2sp.org/tlog-proof receipts.
//!
//! Out of scope, and the caller's job: storage of entries and subtree hashes,
//! deciding when to sign, key custody, the meaning of entries (the ledger's
//! envelope), and witness cosigning policy.
//!
//! The crate needs only `alloc` (the `std` feature adds `Nodes` for
//! `HashMap`), so it builds for wasm32-unknown-unknown, wasm32-wasip2 and the
//! browser without a platform crate.

#![no_std]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod checkpoint;
pub mod merkle;
pub mod proof;

/// Why a proof, note or receipt was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An index or size outside the tree.
    #[error("index or size out of range")]
    OutOfRange,
    /// A Merkle proof of the wrong length, or a hash of the wrong length.
    #[error("malformed proof")]
    MalformedProof,
    /// The recomputed root differs.
    #[error("root mismatch")]
    Mismatch,
    /// A complete subtree a proof needs is not stored.
    #[error("missing tree node")]
    MissingNode,
    /// Not a well-formed note, checkpoint or tlog-proof.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// No valid signature by the trusted key named as the checkpoint's
    /// origin.
    #[error("no signature by a trusted key for this origin")]
    Untrusted,
    /// A trusted key's signature does not verify.
    #[error("bad signature by {0}")]
    BadSignature(alloc::string::String),
    /// A key that cannot be encoded.
    #[error("key encoding: {0}")]
    Key(alloc::string::String),
}

#[cfg(test)]
mod fuzz;
