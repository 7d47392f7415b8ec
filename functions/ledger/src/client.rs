//! [`LedgerClient`] implementations: in-process over the shared database, and
//! over HTTP with the service credential (for Spin, where each component has
//! its own store).

use std::rc::Rc;

use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{
    Clock, Error, LedgerClient, Outbound, OutboundRequest, Rng, Sql, async_trait,
};

use crate::log::{self, NewEntry};

/// Appends straight into the log's tables (native, the Worker).
pub struct InProcess {
    /// The database holding the log.
    pub sql: Rc<dyn Sql>,
    /// Time source.
    pub clock: Rc<dyn Clock>,
    /// Randomness (writer tokens).
    pub rng: Rc<dyn Rng>,
}

#[async_trait(?Send)]
impl LedgerClient for InProcess {
    async fn append(&self, payload_type: &str, payload: &[u8], key: &str) -> Result<u64, Error> {
        let entry = NewEntry {
            payload_type: payload_type.to_owned(),
            payload: payload.to_vec(),
            principal: "service".into(),
            idempotency_key: key.to_owned(),
        };
        let done = log::append(
            self.sql.as_ref(),
            self.clock.as_ref(),
            self.rng.as_ref(),
            &[entry],
        )
        .await
        .map_err(|e| Error::Storage(format!("ledger append: {e}")))?;
        done.first()
            .map(|a| a.index)
            .ok_or_else(|| Error::Storage("ledger append returned nothing".into()))
    }
}

/// Appends through `POST {base}/ledger/entries` with the service credential.
pub struct Http {
    /// Where the ledger function is served (no trailing slash).
    pub base: String,
    /// The `service_token`.
    pub token: String,
    /// Outbound HTTP.
    pub outbound: Rc<dyn Outbound>,
}

#[async_trait(?Send)]
impl LedgerClient for Http {
    async fn append(&self, payload_type: &str, payload: &[u8], key: &str) -> Result<u64, Error> {
        use base64::Engine as _;
        let body = serde_json::json!({
            "payload_type": payload_type,
            "payload": base64::engine::general_purpose::STANDARD.encode(payload),
            "idempotency_key": key,
        });
        let resp = self
            .outbound
            .send(OutboundRequest {
                method: Method::POST,
                url: format!("{}/ledger/entries", self.base),
                headers: vec![
                    ("authorization".into(), format!("Bearer {}", self.token)),
                    ("content-type".into(), "application/json".into()),
                ],
                body: body.to_string().into_bytes(),
            })
            .await?;
        if resp.status != 200 && resp.status != 201 {
            return Err(Error::Outbound(format!("ledger answered {}", resp.status)));
        }
        serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["index"].as_u64())
            .ok_or_else(|| Error::Outbound("ledger answer without an index".into()))
    }
}

/// The client of a deployment that cannot reach the log: appends fail (503).
pub struct Unavailable(pub &'static str);

#[async_trait(?Send)]
impl LedgerClient for Unavailable {
    async fn append(&self, _: &str, _: &[u8], _: &str) -> Result<u64, Error> {
        Err(Error::Config(self.0.into()))
    }
}
