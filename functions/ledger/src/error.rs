//! The ledger function's one error enum and its problem+json mapping.

use edgecoder_kernel::Problem;
use edgecoder_kernel::http_types::{HeaderValue, StatusCode, header};

/// What can go wrong in the ledger function.
#[derive(Debug, thiserror::Error, strum::EnumIter, strum::EnumMessage)]
pub enum Error {
    /// A range or size that makes no sense for this log.
    #[error("invalid range: {0}")]
    InvalidRange(&'static str),
    /// An entry that cannot be appended as given.
    #[error("invalid entry: {0}")]
    InvalidEntry(&'static str),
    /// An envelope over the size cap.
    #[error("entry too large")]
    EntryTooLarge,
    /// No entry at that index.
    #[error("entry not found")]
    EntryNotFound,
    /// No credential, or not one that may append.
    #[error("ledger unauthorized")]
    Unauthorized,
    /// Too many concurrent writers; retry.
    #[error("ledger busy")]
    Busy,
    /// Stored data does not have the shape the log wrote (tampering or a bug).
    #[error("ledger storage inconsistent: {0}")]
    Corrupt(&'static str),
    /// Refused to sign a checkpoint whose root is not the log's root at that size.
    #[error("checkpoint root mismatch")]
    CheckpointMismatch,
    /// An idempotency key used before for another type or payload.
    #[error("idempotency key reused with another payload")]
    IdempotencyKeyReused,
    /// The stored history does not extend the newest signed checkpoint.
    #[error("history rewritten: {0}")]
    HistoryRewritten(String),
    /// Authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// No checkpoint has the cosignatures asked for.
    #[error("not cosigned")]
    NotCosigned,
    /// The stored log was built with a tree hash this version does not serve.
    #[error("log built with the {0} tree hash")]
    UnsupportedLog(String),
    /// A kernel error (storage, request shape, configuration).
    #[error(transparent)]
    Kernel(#[from] edgecoder_kernel::Error),
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        use StatusCode as S;
        let p = |status, code, title, detail: &str| {
            Problem::new(status, code, title).with_detail(detail)
        };
        match e {
            Error::InvalidRange(why) => p(S::BAD_REQUEST, "invalid_range", "Invalid range", why),
            Error::InvalidEntry(why) => p(S::BAD_REQUEST, "invalid_entry", "Invalid entry", why),
            Error::EntryTooLarge => p(
                S::PAYLOAD_TOO_LARGE,
                "entry_too_large",
                "Entry too large",
                "A log entry is at most 64 KiB including its envelope.",
            ),
            Error::EntryNotFound => p(
                S::NOT_FOUND,
                "entry_not_found",
                "Entry not found",
                "No entry at that index.",
            ),
            Error::Unauthorized => p(
                S::UNAUTHORIZED,
                "ledger_unauthorized",
                "Not allowed to append",
                "Appending needs the owning function's service token or the access token of a current system_admin.",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgecoder\""),
            ),
            Error::Busy => Problem::new(S::SERVICE_UNAVAILABLE, "ledger_busy", "Ledger busy")
                .with_detail("Too many concurrent appends; retry.")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            Error::Corrupt(what) => Problem {
                internal: Some(format!("ledger storage inconsistent: {what}")),
                ..Problem::new(
                    S::INTERNAL_SERVER_ERROR,
                    "ledger_inconsistent",
                    "Ledger storage inconsistent",
                )
            },
            Error::CheckpointMismatch => Problem {
                internal: Some("refused to sign a checkpoint with a foreign root".into()),
                ..Problem::new(S::CONFLICT, "checkpoint_mismatch", "Checkpoint mismatch")
            },
            Error::IdempotencyKeyReused => p(
                S::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "This idempotency key was used for a different request; use a new key for a new request.",
            ),
            Error::HistoryRewritten(why) => Problem {
                internal: Some(format!("refused to sign a checkpoint: {why}")),
                ..Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "history_rewritten",
                    "Log history rewritten",
                )
                .with_detail(
                    "The stored log is not consistent with a checkpoint it already signed; \
                     it signs nothing until an operator restores the signed history.",
                )
            },
            Error::Forbidden => p(
                S::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "Your roles do not allow this operation.",
            ),
            Error::NotCosigned => p(
                S::NOT_FOUND,
                "not_cosigned",
                "Not cosigned",
                "No checkpoint of this log has that many witness cosignatures yet.",
            ),
            Error::UnsupportedLog(hash) => Problem {
                internal: Some(format!("ledger_state.tree_hash is {hash}")),
                ..Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "log_version_unsupported",
                    "Log version unsupported",
                )
                .with_detail(format!(
                    "This log was built with the {hash} tree hash; this version builds and proves RFC 6962 SHA-256 trees only. Start a new database: there is no migration for a log's entries."
                ))
            },
            Error::Kernel(k) => k.into(),
        }
    }
}

/// The ledger's entries in the problem catalogue, one per variant.
pub fn problem_types() -> Vec<(&'static str, edgecoder_kernel::problems::Meaning)> {
    use edgecoder_kernel::problems::{Example, catalogue};
    use strum::{EnumMessage, IntoEnumIterator};
    catalogue(
        "ledger",
        Error::iter()
            // The kernel lists its own.
            .filter(|e| !matches!(e, Error::Kernel(_)))
            .map(|e| Example {
                doc: e.get_message().or_else(|| e.get_documentation()),
                error: e,
            }),
    )
}
