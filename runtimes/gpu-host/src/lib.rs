//! The EdgeCoder GPU host: inference on GPU (or CPU) machines through a
//! wasi-nn guest component described by WIT (`wit/inference`), served to the
//! mesh as a node that pulls `inference` tasks under leases.
//!
//! In scope:
//! - [`models`]: the local model directory and its digest checks, behind the
//!   [`models::Resolver`] seam;
//! - [`supply`]: the model supply chain's resolver: only the release the
//!   coordinator assigned, checked against the family's policy (signatures,
//!   expiry, origin, size) and every file's blake3 as it is fetched;
//! - [`host`]: wasmtime + wasmtime-wasi-nn (ONNX; CPU, or CUDA with the
//!   `cuda` feature), one compiled guest, graphs cached by name, per-request
//!   memory and time limits, typed errors;
//! - [`worker`]: the node's work (reusing the device agent's identity,
//!   registration, signed requests and loop);
//! - [`metrics`]: Prometheus metrics on a loopback address.
//!
//! Out of scope: the guest's decode loop (`functions/inference`), the
//! coordinator (`functions/mesh`), any inference port on the network (there
//! is none), rollout decisions (the coordinator).

mod error;
pub mod host;
pub mod metrics;
pub mod models;
pub mod supply;
pub mod worker;

pub use error::Error;
