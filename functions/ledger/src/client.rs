//! [`LedgerClient`] implementations: in-process over the shared database, and
//! over HTTP with a service token signed by the calling function's own key
//! (for Spin, where each component has its own store).

use std::rc::Rc;

use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{
    Clock, Error, LedgerClient, Outbound, OutboundRequest, Rng, SigningKey, Sql, async_trait,
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
            // The same principal the HTTP path records for the function
            // that owns the type, so the log reads alike on every runtime.
            principal: crate::api::owner_of(payload_type)
                .map_or_else(|| "service".to_owned(), |f| format!("service:{f}")),
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

    async fn read(&self, start: u64, max: u64) -> Result<(u64, Vec<(u64, Vec<u8>)>), Error> {
        let fail = |e: crate::Error| Error::Storage(format!("ledger read: {e}"));
        let (size, _) = log::head(self.sql.as_ref()).await.map_err(fail)?;
        let end = size.min(start.saturating_add(max.min(crate::api::MAX_PAGE)));
        if start >= end {
            return Ok((size, Vec::new()));
        }
        let found = log::entries(self.sql.as_ref(), start, end)
            .await
            .map_err(fail)?;
        Ok((
            size,
            found.into_iter().map(|e| (e.index, e.entry)).collect(),
        ))
    }
}

/// Appends through `POST {base}/ledger/entries`, each call with a fresh
/// service token signed by the calling function's own key.
pub struct Http {
    /// Where the ledger function is served (no trailing slash).
    pub base: String,
    /// The calling function (`auth`, `mesh`).
    pub caller: &'static str,
    /// Its `service_key`.
    pub key: SigningKey,
    /// Time source (token lifetimes).
    pub clock: Rc<dyn Clock>,
    /// Randomness (token ids).
    pub rng: Rc<dyn Rng>,
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
        let body = body.to_string().into_bytes();
        let token = edgecoder_kernel::service::mint(
            &self.key,
            self.caller,
            crate::NAME,
            &edgecoder_kernel::service::request_digest("POST", "/ledger/entries", &body),
            self.clock.now_ms(),
            &edgecoder_kernel::ports::random_hex(self.rng.as_ref(), 16),
        )?;
        let resp = self
            .outbound
            .send(OutboundRequest {
                method: Method::POST,
                url: format!("{}/ledger/entries", self.base),
                headers: vec![
                    ("authorization".into(), format!("Bearer {token}")),
                    ("content-type".into(), "application/json".into()),
                ],
                body,
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

    async fn read(&self, start: u64, max: u64) -> Result<(u64, Vec<(u64, Vec<u8>)>), Error> {
        use base64::Engine as _;
        // The page route is public; a first call learns the size.
        let url = |end: Option<u64>| match end {
            Some(e) => format!("{}/ledger/entries?start={start}&end={e}", self.base),
            None => format!("{}/ledger/entries?start=0&end=0", self.base),
        };
        let get = |url: String| async move {
            let resp = self
                .outbound
                .send(OutboundRequest {
                    method: Method::GET,
                    url,
                    headers: vec![],
                    body: vec![],
                })
                .await?;
            if resp.status != 200 {
                return Err(Error::Outbound(format!("ledger answered {}", resp.status)));
            }
            serde_json::from_slice::<serde_json::Value>(&resp.body)
                .map_err(|_| Error::Outbound("ledger page is not JSON".into()))
        };
        let size = get(url(None)).await?["tree_size"]
            .as_u64()
            .ok_or_else(|| Error::Outbound("ledger page without tree_size".into()))?;
        let end = size.min(start.saturating_add(max.min(crate::api::MAX_PAGE)));
        if start >= end {
            return Ok((size, Vec::new()));
        }
        let page = get(url(Some(end))).await?;
        let mut out = Vec::new();
        for e in page["entries"].as_array().into_iter().flatten() {
            let (Some(index), Some(entry)) = (e["index"].as_u64(), e["entry"].as_str()) else {
                return Err(Error::Outbound(
                    "ledger entry without index or bytes".into(),
                ));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(entry)
                .map_err(|_| Error::Outbound("ledger entry is not base64".into()))?;
            out.push((index, bytes));
        }
        Ok((size, out))
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
