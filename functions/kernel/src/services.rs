//! The bundle of ports and configuration a handler receives.
//!
//! In scope: holding the runtime's port implementations and the validated
//! [`Config`]. Out of scope: constructing them (the runtime does, once per
//! request on Workers and Spin, once per process natively).

use std::rc::Rc;

use crate::{
    Clock, Config, Defer, IdentityClient, Kv, LedgerClient, Outbound, RequestContext, Rng,
    SignatureCheck, Sql,
};

/// Everything a handler may touch outside its request.
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
    /// Validated settings.
    pub config: Config,
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
