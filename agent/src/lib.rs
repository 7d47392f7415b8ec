//! The EdgeCoder device agent as a library: what the `edgecoder-agent` binary
//! is made of, exposed so the workspace's end-to-end tests can drive the same
//! sandbox and the same signing client.
//!
//! In scope:
//! - [`sandbox`]: running a task module under fuel, deadline, memory and
//!   output limits with an explicit, minimal host interface;
//! - [`node`]: the node key (generated on the device, kept 0600) and local
//!   settings;
//! - [`client`]: signed requests to the mesh and the protocol's messages;
//! - [`telemetry`]: heartbeat readings from the device;
//! - [`runner`]: policy checks, task execution and the agent loop.
//!
//! Out of scope: the coordinator (the `edgecoder-mesh` function), approval of
//! nodes, and inference tasks (the GPU host).

pub mod client;
mod error;
pub mod node;
pub mod runner;
pub mod sandbox;
pub mod telemetry;

pub use error::Error;
