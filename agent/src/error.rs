//! The crate's one error enum.
//!
//! In scope: every failure the agent's own code can hit (files, keys,
//! configuration, randomness, the coordinator's answers, the sandbox engine).
//! Out of scope: a task module's failures, which are not errors of the agent
//! but results to report ([`crate::sandbox::Outcome`]).

use edgecoder_proto::Error as SigError;

/// What went wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the agent was doing, with the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The node key is missing, malformed, unsafe to use or would be overwritten.
    #[error("node key: {0}")]
    Key(String),
    /// Local configuration (`agent.json`, command-line values) is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The platform gave no randomness.
    #[error("randomness unavailable: {0}")]
    Random(String),
    /// The coordinator could not be reached (connection refused, reset, timed out).
    #[error("cannot reach the coordinator: {0}")]
    Transport(String),
    /// The coordinator refused the request with a problem document.
    #[error("coordinator answered {status} {code}{}", detail_suffix(.detail))]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem's stable `code` (or `http_<status>` when it had none).
        code: String,
        /// The problem's `detail`, if any.
        detail: String,
    },
    /// The coordinator answered something this agent does not understand.
    #[error("unexpected answer from the coordinator: {0}")]
    Protocol(String),
    /// The wasmtime engine could not be set up.
    #[error("sandbox engine: {0}")]
    Engine(String),
    /// A request could not be signed.
    #[error("signing: {0}")]
    Sign(#[from] SigError),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl Error {
    /// Builds an [`Error::Io`] with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying later may succeed: the coordinator was unreachable,
    /// overloaded or failing (it may be restarting), as opposed to a refusal
    /// that will repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Problem { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// Whether the coordinator refused who we are: a bad or unknown signature
    /// (401) or a refusal other than "not approved yet" (403).
    pub fn is_auth_refusal(&self) -> bool {
        match self {
            Error::Problem { status: 401, .. } => true,
            Error::Problem {
                status: 403, code, ..
            } => code != crate::client::NODE_NOT_ACTIVE,
            _ => false,
        }
    }

    /// The problem code, for a refusal by the coordinator.
    pub fn problem_code(&self) -> Option<&str> {
        match self {
            Error::Problem { code, .. } => Some(code),
            _ => None,
        }
    }
}
