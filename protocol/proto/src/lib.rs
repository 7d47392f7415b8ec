//! `edgecoder-proto`: what crosses the wire between EdgeCoder nodes and
//! coordinators, so that an agent (ours, or one written elsewhere with a
//! stock RFC 9421 library) and a coordinator agree byte for byte.
//!
//! In scope:
//! - [`httpsig`]: RFC 9421 HTTP Message Signatures (`ecdsa-p256-sha256`) with
//!   RFC 9530 `Content-Digest`, signing and checking;
//! - [`keys`]: node key ids and the public key encoding;
//! - [`NodeId`]: the one validated node id;
//! - [`mesh`]: registration, telemetry, policy, tasks, leases, results and
//!   their failure codes, with the closed sets as enums;
//! - [`inference`]: the inference task payload and its limits;
//! - [`dsse`]: DSSE envelopes, sealed and opened with P-256 keys;
//! - [`model`]: signed model manifests (DSSE, P-256, k of n);
//! - [`federation`]: what coordinators send each other (key rotations, peering requests).
//!
//! Out of scope: storage, routes and decisions (the mesh function), running
//! tasks (the agent), and anything platform-specific: this crate builds for
//! wasm32-unknown-unknown and wasm32-wasip2 without a platform crate.

pub mod dsse;
pub mod economy;
pub mod federation;
pub mod httpsig;
pub mod inference;
pub mod keys;
pub mod mesh;
pub mod model;
pub mod node_id;
pub mod supply;

pub use node_id::NodeId;

/// Why a signed request, a node id or a key was refused; each maps to a
/// stable problem code ([`Error::code`]).
#[derive(
    Debug, Clone, PartialEq, Eq, Default, thiserror::Error, strum::EnumIter, strum::EnumMessage,
)]
pub enum Error {
    /// No signature headers.
    #[default]
    #[error("request is not signed")]
    Missing,
    /// Headers present but not parseable, or a required part missing.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// `created` outside the allowed skew, or past `expires`.
    #[error("signature expired or from the future")]
    Expired,
    /// The body does not match `Content-Digest`.
    #[error("content digest mismatch")]
    DigestMismatch,
    /// The signature does not verify.
    #[error("signature invalid")]
    Invalid,
    /// Not a node id (see [`NodeId`]).
    #[error("invalid node id")]
    InvalidNodeId,
    /// Not a P-256 public key in the expected encoding.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A model manifest past its expiry.
    #[error("manifest expired")]
    ManifestExpired,
    /// A model manifest that is well signed but may not be served (wrong
    /// model, bad shape, publisher not among the signers).
    #[error("model not approved: {0}")]
    NotApproved(&'static str),
}

impl Error {
    /// The problem `code` this refusal is reported with.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Missing => "mesh_unauthorized",
            Error::Malformed(_) | Error::Invalid => "signature_invalid",
            Error::Expired => "signature_expired",
            Error::DigestMismatch => "content_digest_mismatch",
            Error::InvalidNodeId => "invalid_node_id",
            Error::InvalidPublicKey => "invalid_public_key",
            Error::ManifestExpired => "manifest_expired",
            Error::NotApproved(_) => "model_not_approved",
        }
    }
}

#[cfg(test)]
mod fuzz;
