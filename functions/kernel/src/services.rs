//! The bundle of ports and configuration a handler receives.
//!
//! In scope: holding the runtime's port implementations, the validated
//! [`Config`] and each function's own settings ([`FunctionSettings`]). Out of
//! scope: constructing them (the gateway assembles them from the ports a
//! runtime provides, once per request on Workers and Spin, once per process
//! natively).

use std::any::Any;
use std::rc::Rc;
use std::sync::Arc;

use crate::{
    Clock, Config, Defer, IdentityClient, Kv, LedgerClient, Outbound, RequestContext, Rng,
    SignatureCheck, Sql,
};

/// Everything a handler may touch outside its request. Cloning shares the
/// ports (work deferred past the response owns a clone).
#[derive(Clone)]
pub struct Services {
    /// Relational storage.
    pub sql: Rc<dyn Sql>,
    /// Key-value storage.
    pub kv: Rc<dyn Kv>,
    /// Wall clock.
    pub clock: Rc<dyn Clock>,
    /// Randomness.
    pub rng: Rc<dyn Rng>,
    /// Outbound HTTP.
    pub outbound: Rc<dyn Outbound>,
    /// Work after the response.
    pub defer: Rc<dyn Defer>,
    /// The transparency log, for functions that record trust changes.
    pub ledger: Rc<dyn LedgerClient>,
    /// The identity function, for functions that serve users or enroll nodes.
    pub identity: Rc<dyn IdentityClient>,
    /// ECDSA P-256 signature checks.
    pub signatures: Rc<dyn SignatureCheck>,
    /// Validated settings every function shares.
    pub config: Config,
    /// Each function's own validated settings.
    pub settings: FunctionSettings,
}

/// Each function's own validated settings (`auth::Settings`,
/// `mesh::Settings`, `ledger::Settings`), loaded from the same
/// `ConfigSource` as [`Config`] and looked up by type, so a function reads
/// its settings without the kernel knowing them. Shared across a native
/// server's threads, hence `Arc`.
#[derive(Clone, Default)]
pub struct FunctionSettings(Vec<Arc<dyn Any + Send + Sync>>);

impl FunctionSettings {
    /// These settings and `value`.
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.0.push(Arc::new(value));
        self
    }

    /// The settings of type `T`, if loaded.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0
            .iter()
            .find_map(|v| (v.as_ref() as &dyn Any).downcast_ref::<T>())
    }
}

impl std::fmt::Debug for FunctionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The settings hold secrets; only their number is shown.
        f.debug_tuple("FunctionSettings")
            .field(&self.0.len())
            .finish()
    }
}

impl Services {
    /// A fresh random id (128 bits, hex).
    pub fn new_id(&self) -> String {
        crate::ports::random_hex(self.rng.as_ref(), 16)
    }

    /// A request context with a fresh request id.
    pub fn new_context(&self, client_ip: Option<std::net::IpAddr>) -> RequestContext {
        RequestContext {
            request_id: self.new_id(),
            client_ip,
            ..RequestContext::default()
        }
    }
}
