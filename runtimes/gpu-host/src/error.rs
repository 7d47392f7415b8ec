//! The GPU host's one error type.

use thiserror::Error as ThisError;

/// What can go wrong in the host outside a request's own typed errors.
#[derive(Debug, ThisError)]
pub enum Error {
    /// A setting or argument is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A model directory entry is unusable.
    #[error("model: {0}")]
    Model(String),
    /// wasmtime could not compile or link the guest.
    #[error("guest: {0}")]
    Guest(String),
    /// The onnxruntime library is missing or unusable.
    #[error("onnxruntime: {0}")]
    Runtime(String),
    /// The mesh (node identity, signed requests).
    #[error(transparent)]
    Mesh(#[from] edgecoder_agent::Error),
}

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
