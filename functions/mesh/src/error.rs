//! The mesh function's one error enum and its problem+json mapping.
//!
//! Authentication failures are specific on purpose (a node operator needs to
//! know whether its clock, its key or its body is wrong); none of them says
//! anything about another node.

use edgecoder_kernel::Problem;
use edgecoder_kernel::http_types::StatusCode;
use edgecoder_proto::Error as SigError;

/// What can go wrong in the mesh function.
#[derive(Debug, thiserror::Error, strum::EnumIter, strum::EnumMessage)]
pub enum Error {
    /// Neither a node signature nor an acceptable access token.
    #[error("mesh authentication required")]
    Unauthorized,
    /// A signed request that failed a signature check.
    #[error("signature refused: {0}")]
    Signature(SigError),
    /// The signature names an origin this coordinator does not serve.
    #[error("misdirected request")]
    Misdirected,
    /// `keyid` names no registered key.
    #[error("unknown key")]
    UnknownKey,
    /// The nonce was already used with this key inside the window.
    #[error("replay detected")]
    ReplayDetected,
    /// The node is not approved, or suspended, or rejected.
    #[error("node not active")]
    NodeNotActive,
    /// The access token is missing, invalid, or its session is gone.
    #[error("invalid access token")]
    InvalidToken,
    /// The caller lacks the role the route needs.
    #[error("forbidden")]
    Forbidden,
    /// The caller's last sign-in is older than the step-up window.
    #[error("step-up required")]
    StepUpRequired,
    /// A node id outside the enrollment pattern.
    #[error("invalid node id")]
    InvalidNodeId,
    /// The public key is not a P-256 SEC1 point in base64url.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// The enrollment token cannot be redeemed for this node id and kind.
    #[error("enrollment token invalid")]
    EnrollmentTokenInvalid,
    /// The node id is registered already.
    #[error("node already registered")]
    NodeAlreadyRegistered,
    /// The key is, or was, another registration's key.
    #[error("key in use")]
    KeyInUse,
    /// The rotation proof by the new key does not verify.
    #[error("key proof invalid")]
    KeyProofInvalid,
    /// No such node visible to the caller.
    #[error("node not found")]
    NodeNotFound,
    /// The node's status does not allow this decision.
    #[error("invalid transition")]
    InvalidTransition,
    /// Task bytes do not hash to their declared digest.
    #[error("digest mismatch")]
    DigestMismatch,
    /// A digest given without bytes that is not stored.
    #[error("blob unknown")]
    BlobUnknown,
    /// A task kind outside the policy's subset.
    #[error("outside subset")]
    OutsideSubset,
    /// Task limits above the policy's maximums.
    #[error("limits exceeded")]
    LimitsExceeded(&'static str),
    /// No such task visible to the caller.
    #[error("task not found")]
    TaskNotFound,
    /// The lease is unknown, another node's, expired, or already used.
    #[error("lease invalid")]
    LeaseInvalid,
    /// No active GPU host serves the model an inference task names.
    #[error("model unknown")]
    ModelUnknown,
    /// A result that does not match the task's declared kind or model.
    #[error("result mismatch")]
    ResultMismatch(&'static str),
    /// The prompt is over the input limit.
    #[error("input too large")]
    InputTooLarge(String),
    /// A release refused on registration: its signatures, expiry, name or
    /// source against the family's policy.
    #[error("release refused: {0}")]
    Release(edgecoder_proto::supply::Failure, String),
    /// No policy for the model family.
    #[error("model family unknown")]
    FamilyUnknown,
    /// A release of this name@version is registered already.
    #[error("release exists")]
    ReleaseExists,
    /// No such release.
    #[error("release not found")]
    ReleaseNotFound,
    /// No such rollout.
    #[error("rollout not found")]
    RolloutNotFound,
    /// The family has a rollout under way already.
    #[error("rollout in progress")]
    RolloutInProgress,
    /// The rollout's state does not allow this step.
    #[error("rollout state: {0}")]
    RolloutState(&'static str),
    /// A ban covers the node (its key, its id or its owner).
    #[error("node blacklisted")]
    NodeBlacklisted,
    /// A ban covers the calling account.
    #[error("account blacklisted")]
    AccountBlacklisted,
    /// The subject is banned already.
    #[error("already blacklisted")]
    AlreadyBlacklisted,
    /// No ban on the subject to lift.
    #[error("not blacklisted")]
    NotBlacklisted,
    /// An operator's advance that the stage's safety gate does not allow.
    #[error("gate not met: {0}")]
    GateNotMet(String),
    /// Federation needs this coordinator's origin (`mesh_origins`).
    #[error("federation not configured")]
    FederationUnconfigured,
    /// A coordinator request signed by a key no peer is pinned to.
    #[error("unknown peer")]
    UnknownPeer,
    /// A peer that is not active (not approved by both sides, suspended or
    /// removed).
    #[error("peer not approved")]
    PeerNotApproved,
    /// A key other than the one pinned for the peer, without a rotation
    /// signed by the pinned key.
    #[error("peer key mismatch")]
    PeerKeyMismatch,
    /// No such peer.
    #[error("peer not found")]
    PeerNotFound,
    /// The peer could not be reached or answered something unusable.
    #[error("peer unreachable: {0}")]
    PeerUnreachable(String),
    /// A ban covers the peer coordinator.
    #[error("peer blacklisted")]
    PeerBlacklisted,
    /// The peer changed between this request's read and its write.
    #[error("peer changed")]
    PeerChanged,
    /// Too many peering requests wait for the operator.
    #[error("too many pending peers")]
    TooManyPendingPeers,
    /// A checkpoint for a log this witness does not witness.
    #[error("unknown log")]
    UnknownLog,
    /// A checkpoint with no valid signature by a key trusted for its origin.
    #[error("checkpoint unverified")]
    CheckpointUnverified,
    /// A checkpoint of the size cosigned last, with another root.
    #[error("checkpoint conflict")]
    CheckpointConflict,
    /// A consistency proof that does not verify.
    #[error("inconsistent checkpoint")]
    InconsistentCheckpoint,
    /// A gossip envelope refused (its code says why).
    #[error("gossip envelope refused: {}", .0.code())]
    Gossip(edgecoder_proto::federation::GossipRefusal),
    /// A gossip envelope seen before, inside its TTL.
    #[error("envelope replayed")]
    EnvelopeReplayed,
    /// No such ban review.
    #[error("review not found")]
    ReviewNotFound,
    /// The account cannot pay (escrow or transfer).
    #[error("insufficient credits")]
    InsufficientCredits,
    /// A transfer that breaks a rule.
    #[error("invalid transfer: {0}")]
    InvalidTransfer(&'static str),
    /// The idempotency key was used before with another request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// No such account visible to the caller.
    #[error("account not found")]
    AccountNotFound,
    /// No such transfer visible to the caller.
    #[error("transfer not found")]
    TransferNotFound,
    /// The bootstrap grant was made already, with other terms.
    #[error("bootstrap grant made")]
    BootstrapDone,
    /// No such epoch.
    #[error("epoch not found")]
    EpochNotFound,
    /// A close of this epoch with another allocation exists.
    #[error("epoch close conflict")]
    EpochConflict,
    /// A kernel error (storage, request shape, configuration).
    #[error(transparent)]
    Kernel(#[from] edgecoder_kernel::Error),
}

impl From<SigError> for Error {
    fn from(e: SigError) -> Error {
        match e {
            SigError::InvalidNodeId => Error::InvalidNodeId,
            SigError::InvalidPublicKey => Error::InvalidPublicKey,
            other => Error::Signature(other),
        }
    }
}

fn problem(status: StatusCode, code: &'static str, title: &'static str, detail: &str) -> Problem {
    Problem::new(status, code, title).with_detail(detail)
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        use StatusCode as S;
        match e {
            Error::Unauthorized => problem(
                S::UNAUTHORIZED,
                "mesh_unauthorized",
                "Mesh authentication required",
                "Sign the request with an active node's key (RFC 9421 Signature-Input, Signature and Content-Digest) or send an access token with the right role.",
            ),
            Error::Signature(s) => problem(
                S::UNAUTHORIZED,
                s.code(),
                "Signature refused",
                &match s {
                    SigError::Missing => "The request is not signed.".to_owned(),
                    SigError::Malformed(why) => format!(
                        "The signature is not one this coordinator accepts ({why}): RFC 9421 Signature-Input and Signature covering @method, content-digest and @target-uri (or @authority with @path and @query), with created, nonce and keyid, alg ecdsa-p256-sha256 if given."
                    ),
                    SigError::Expired => {
                        "`created` is more than 60 seconds away from the server's clock, or `expires` has passed.".to_owned()
                    }
                    SigError::DigestMismatch => "Content-Digest does not match the body.".to_owned(),
                    SigError::Invalid | SigError::InvalidNodeId | SigError::InvalidPublicKey => {
                        "The signature does not verify with the key named by keyid.".to_owned()
                    }
                    // Model manifests are not request signatures; listed for
                    // completeness of the one error type.
                    SigError::ManifestExpired | SigError::NotApproved(_) => {
                        "The signature is not a request signature.".to_owned()
                    }
                },
            ),
            Error::Misdirected => problem(
                S::MISDIRECTED_REQUEST,
                "misdirected_request",
                "Misdirected request",
                "The request is signed for an origin this coordinator does not serve (mesh_origins); sign @target-uri with this coordinator's public origin.",
            ),
            Error::UnknownKey => problem(
                S::UNAUTHORIZED,
                "unknown_key",
                "Unknown key",
                "keyid names no registered node key.",
            ),
            Error::ReplayDetected => problem(
                S::UNAUTHORIZED,
                "replay_detected",
                "Replay detected",
                "This nonce was already used with this key.",
            ),
            Error::NodeNotActive => problem(
                S::FORBIDDEN,
                "node_not_active",
                "Node not active",
                "The node is pending approval, suspended or rejected.",
            ),
            Error::InvalidToken => problem(
                S::UNAUTHORIZED,
                "invalid_token",
                "Invalid access token",
                "The access token is invalid, expired or its session was signed out.",
            ),
            Error::Forbidden => problem(
                S::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "Your roles do not allow this operation.",
            ),
            Error::StepUpRequired => problem(
                S::FORBIDDEN,
                "step_up_required",
                "Step-up required",
                "This operation needs a recent sign-in. Call POST /auth/step-up and retry with the new token.",
            ),
            Error::InvalidNodeId => problem(
                S::BAD_REQUEST,
                "invalid_node_id",
                "Invalid node id",
                "Node ids match ^[a-z0-9][a-z0-9._-]{2,62}$ without `..`.",
            ),
            Error::InvalidPublicKey => problem(
                S::BAD_REQUEST,
                "invalid_public_key",
                "Invalid public key",
                "public_key must be a P-256 SEC1 point in base64url.",
            ),
            Error::EnrollmentTokenInvalid => problem(
                S::BAD_REQUEST,
                "enrollment_token_invalid",
                "Invalid enrollment token",
                "The enrollment token is unknown, used, expired, or for another node id or kind.",
            ),
            Error::NodeAlreadyRegistered => problem(
                S::CONFLICT,
                "node_already_registered",
                "Node already registered",
                "This node id is registered; its key changes only by a signed rotation.",
            ),
            Error::KeyInUse => problem(
                S::CONFLICT,
                "key_in_use",
                "Key in use",
                "This key belongs, or belonged, to a registration already.",
            ),
            Error::KeyProofInvalid => problem(
                S::BAD_REQUEST,
                "key_proof_invalid",
                "Key proof invalid",
                "The new key's proof does not verify.",
            ),
            Error::NodeNotFound => problem(
                S::NOT_FOUND,
                "node_not_found",
                "Node not found",
                "No such node.",
            ),
            Error::InvalidTransition => problem(
                S::CONFLICT,
                "invalid_transition",
                "Invalid transition",
                "The node's current status does not allow this decision.",
            ),
            Error::DigestMismatch => problem(
                S::UNPROCESSABLE_ENTITY,
                "digest_mismatch",
                "Digest mismatch",
                "The bytes do not hash (blake3) to the declared digest.",
            ),
            Error::BlobUnknown => problem(
                S::UNPROCESSABLE_ENTITY,
                "blob_unknown",
                "Unknown blob",
                "A digest was given without bytes and nothing with that digest is stored.",
            ),
            Error::OutsideSubset => problem(
                S::UNPROCESSABLE_ENTITY,
                "outside_subset",
                "Outside the allowed subset",
                "The mesh runs task kinds in its policy only (\"wasm\", \"inference\").",
            ),
            Error::LimitsExceeded(which) => problem(
                S::UNPROCESSABLE_ENTITY,
                "limits_exceeded",
                "Limits exceeded",
                match which {
                    "timeout_ms" => "timeout_ms is above the policy's maximum.",
                    "memory_mb" => "resources.memory_mb is above the policy's maximum.",
                    "fuel" => "resources.fuel is above the policy's maximum.",
                    "max_new_tokens" => "max_new_tokens is above the maximum.",
                    "stop" => "stop holds too many or too long sequences.",
                    _ => "The task asks for more than the policy allows.",
                },
            ),
            Error::TaskNotFound => problem(
                S::NOT_FOUND,
                "task_not_found",
                "Task not found",
                "No such task.",
            ),
            Error::LeaseInvalid => problem(
                S::CONFLICT,
                "lease_invalid",
                "Lease invalid",
                "The lease is not this node's, has expired, or was already used.",
            ),
            Error::ModelUnknown => problem(
                S::UNPROCESSABLE_ENTITY,
                "model_unknown",
                "Model unknown",
                "No approved GPU host serves this model now.",
            ),
            Error::ResultMismatch(why) => problem(
                S::UNPROCESSABLE_ENTITY,
                "result_mismatch",
                "Result does not match the task",
                why,
            ),
            Error::InputTooLarge(why) => problem(
                S::UNPROCESSABLE_ENTITY,
                "input_too_large",
                "Input too large",
                &why,
            ),
            Error::Release(failure, why) => problem(
                S::UNPROCESSABLE_ENTITY,
                failure.as_str(),
                "Release refused",
                &why,
            ),
            Error::FamilyUnknown => problem(
                S::NOT_FOUND,
                "model_family_unknown",
                "Model family unknown",
                "No source policy names this model family; an operator sets one with PUT /mesh/models/policies/{family}.",
            ),
            Error::ReleaseExists => problem(
                S::CONFLICT,
                "release_exists",
                "Release exists",
                "A release of this name@version is registered already; publish a new version instead.",
            ),
            Error::ReleaseNotFound => problem(
                S::NOT_FOUND,
                "release_not_found",
                "Release not found",
                "No release of this name@version is registered.",
            ),
            Error::RolloutNotFound => problem(
                S::NOT_FOUND,
                "rollout_not_found",
                "Rollout not found",
                "No such rollout.",
            ),
            Error::RolloutInProgress => problem(
                S::CONFLICT,
                "rollout_in_progress",
                "Rollout in progress",
                "This model family has a rollout under way; complete, roll back or wait for it first.",
            ),
            Error::RolloutState(why) => problem(
                S::CONFLICT,
                "invalid_transition",
                "Invalid transition",
                why,
            ),
            Error::NodeBlacklisted => problem(
                S::FORBIDDEN,
                "node_blacklisted",
                "Node blacklisted",
                "This node, its key or its owner is on the coordinator's blacklist.",
            ),
            Error::AccountBlacklisted => problem(
                S::FORBIDDEN,
                "account_blacklisted",
                "Account blacklisted",
                "This account is on the coordinator's blacklist.",
            ),
            Error::AlreadyBlacklisted => problem(
                S::CONFLICT,
                "already_blacklisted",
                "Already blacklisted",
                "A ban on this subject is in force already.",
            ),
            Error::NotBlacklisted => problem(
                S::NOT_FOUND,
                "not_blacklisted",
                "Not blacklisted",
                "No ban on this subject is in force.",
            ),
            Error::GateNotMet(why) => problem(
                S::CONFLICT,
                "gate_not_met",
                "Gate not met",
                &why,
            ),
            Error::FederationUnconfigured => problem(
                S::CONFLICT,
                "federation_not_configured",
                "Federation not configured",
                "Set mesh_origins: the first origin is the one this coordinator federates as.",
            ),
            Error::UnknownPeer => problem(
                S::UNAUTHORIZED,
                "unknown_peer",
                "Unknown peer",
                "The request is not signed by the key of a coordinator this one peers with.",
            ),
            Error::PeerNotApproved => problem(
                S::FORBIDDEN,
                "peer_not_approved",
                "Peer not approved",
                "Peering needs both coordinators' operators to approve, and is not suspended or removed.",
            ),
            Error::PeerKeyMismatch => problem(
                S::CONFLICT,
                "peer_key_mismatch",
                "Peer key mismatch",
                "The key differs from the one pinned for this peer; a pinned key changes only through a rotation signed by it.",
            ),
            Error::PeerNotFound => problem(
                S::NOT_FOUND,
                "peer_not_found",
                "Peer not found",
                "No peer with this origin.",
            ),
            Error::PeerUnreachable(why) => problem(
                S::BAD_GATEWAY,
                "peer_unreachable",
                "Peer unreachable",
                &why,
            ),
            Error::PeerBlacklisted => problem(
                S::FORBIDDEN,
                "peer_blacklisted",
                "Peer blacklisted",
                "This coordinator is on the blacklist here.",
            ),
            Error::PeerChanged => problem(
                S::CONFLICT,
                "peer_changed",
                "Peer changed",
                "Another change to this peer landed first; read it again and retry.",
            ),
            Error::TooManyPendingPeers => problem(
                S::TOO_MANY_REQUESTS,
                "too_many_pending_peers",
                "Too many pending peers",
                "Too many peering requests wait for an operator's decision; try again later.",
            ),
            Error::UnknownLog => problem(
                S::NOT_FOUND,
                "unknown_log",
                "Unknown log",
                "This witness does not witness a log with that origin.",
            ),
            Error::CheckpointUnverified => problem(
                S::FORBIDDEN,
                "checkpoint_unverified",
                "Checkpoint unverified",
                "No signature on the checkpoint verifies with a key this witness trusts for its origin.",
            ),
            Error::CheckpointConflict => problem(
                S::CONFLICT,
                "checkpoint_conflict",
                "Checkpoint conflict",
                "This witness cosigned another root at this size: the log shows two views.",
            ),
            Error::InconsistentCheckpoint => problem(
                S::UNPROCESSABLE_ENTITY,
                "inconsistent_checkpoint",
                "Inconsistent checkpoint",
                "The consistency proof does not prove the checkpoint extends the one this witness cosigned last.",
            ),
            Error::Gossip(r) => {
                use edgecoder_proto::federation::GossipRefusal as G;
                let (status, title, detail) = match r {
                    G::Malformed => (S::BAD_REQUEST, "Invalid envelope", "Send one DSSE envelope (JSON) of at most 16 KiB."),
                    G::UnknownType => (S::UNPROCESSABLE_ENTITY, "Unknown payload type", "This coordinator does not know that gossip payload type or version; it is refused, not ignored."),
                    G::BadSignature => (S::FORBIDDEN, "Envelope signature invalid", "The envelope is not signed by the sending peer's pinned key."),
                    G::Expired => (S::UNPROCESSABLE_ENTITY, "Envelope expired", "The envelope is past its TTL, asks for a TTL above an hour, or was made in the future."),
                    G::WrongOrigin => (S::FORBIDDEN, "Envelope origin mismatch", "A peer sends only its own announcements, under its own key."),
                };
                problem(status, r.code(), title, detail)
            }
            Error::EnvelopeReplayed => problem(
                S::CONFLICT,
                "envelope_replayed",
                "Envelope replayed",
                "This envelope was delivered before.",
            ),
            Error::ReviewNotFound => problem(
                S::NOT_FOUND,
                "review_not_found",
                "Review not found",
                "No such ban review.",
            ),
            Error::InsufficientCredits => problem(
                S::CONFLICT,
                "insufficient_credits",
                "Insufficient credits",
                "The account's available credits do not cover this; contribute compute first, or wait for pending credits to become final.",
            ),
            Error::InvalidTransfer(why) => problem(
                S::BAD_REQUEST,
                "invalid_transfer",
                "Invalid transfer",
                why,
            ),
            Error::IdempotencyKeyReused => problem(
                S::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "This idempotency key was used before with another request.",
            ),
            Error::AccountNotFound => problem(
                S::NOT_FOUND,
                "account_not_found",
                "Account not found",
                "No such account.",
            ),
            Error::TransferNotFound => problem(
                S::NOT_FOUND,
                "transfer_not_found",
                "Transfer not found",
                "No such transfer.",
            ),
            Error::BootstrapDone => problem(
                S::CONFLICT,
                "bootstrap_done",
                "Bootstrap grant made",
                "The one bootstrap grant of this deployment was made already, with other terms.",
            ),
            Error::EpochNotFound => problem(
                S::NOT_FOUND,
                "epoch_not_found",
                "Epoch not found",
                "No such closed epoch.",
            ),
            Error::EpochConflict => problem(
                S::CONFLICT,
                "epoch_conflict",
                "Epoch close conflict",
                "This epoch was closed already with another allocation; the second close is refused.",
            ),
            Error::Kernel(k) => k.into(),
        }
    }
}

/// The mesh's entries in the problem catalogue: one per variant, and a
/// variant that wraps a refusal enum once per refusal it can carry.
pub fn problem_types() -> Vec<(&'static str, edgecoder_kernel::problems::Meaning)> {
    use edgecoder_kernel::problems::{Example, catalogue};
    use edgecoder_proto::federation::GossipRefusal;
    use edgecoder_proto::supply::Failure;
    use strum::{EnumMessage, IntoEnumIterator};
    let examples = Error::iter().flat_map(|e| -> Vec<Example<Error>> {
        match e {
            Error::Signature(_) => SigError::iter()
                // Manifest refusals come from model manifests, never from a
                // request signature; a bad node id or key becomes its own
                // variant (`From<SigError>`), answered 400.
                .filter(|s| {
                    !matches!(
                        s,
                        SigError::ManifestExpired
                            | SigError::NotApproved(_)
                            | SigError::InvalidNodeId
                            | SigError::InvalidPublicKey
                    )
                })
                .map(|s| Example {
                    doc: s.get_documentation(),
                    error: Error::Signature(s),
                })
                .collect(),
            Error::Release(..) => Failure::iter()
                // Registration checks the manifest; fetching is a host's
                // (reported in its heartbeat), and `unknown` is only read.
                .filter(|f| !matches!(f, Failure::FetchFailed | Failure::Unknown))
                .map(|f| Example {
                    doc: f.get_documentation(),
                    error: Error::Release(f, String::new()),
                })
                .collect(),
            Error::Gossip(_) => GossipRefusal::iter()
                .map(|g| Example {
                    doc: g.get_documentation(),
                    error: Error::Gossip(g),
                })
                .collect(),
            // The kernel lists its own.
            Error::Kernel(_) => Vec::new(),
            e => vec![Example {
                doc: e.get_message().or_else(|| e.get_documentation()),
                error: e,
            }],
        }
    });
    catalogue("mesh", examples)
}
