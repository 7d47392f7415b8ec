//! Prometheus metrics of the native runtime, on a loopback listener only.
//!
//! In scope: requests by route template and status, latency per route, auth
//! failures by problem code (401/403), rate-limit refusals (429), and read
//! from the database at each scrape: the ledger's size and its newest
//! checkpoint's age, the task queue's depth and the leases that expired
//! (counted from the audit trail, so they survive restarts). The text
//! exposition on `GET /metrics` from `--metrics-listen`. Out of scope:
//! anything reachable from the network (a non-loopback address is refused:
//! put the scraper on the machine); Workers and Spin, which have no
//! listener of ours (README: the same counters from their logs).

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::sqlite::Db;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

type Latency = fn() -> Histogram;

fn latency() -> Histogram {
    // 0.25 ms to about 4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The registry and the request-path series.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, Latency>,
    auth_failures: Family<CodeLabel, Counter>,
    rate_limited: Family<RouteLabel, Counter>,
    ledger_size: Gauge,
    checkpoint_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    queue_depth: Gauge,
    leases_expired: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgecoder");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Histogram, Latency>::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "Time from the request's arrival to its answer, by route template",
            latency.clone(),
        );
        let auth_failures = Family::<CodeLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "401 and 403 answers, by problem code",
            auth_failures.clone(),
        );
        let rate_limited = Family::<RouteLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "429 answers, by route template",
            rate_limited.clone(),
        );
        let ledger_size = Gauge::default();
        registry.register(
            "ledger_size",
            "Entries in the transparency log",
            ledger_size.clone(),
        );
        let checkpoint_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "ledger_checkpoint_age_seconds",
            "Age of the newest signed checkpoint (-1 when none)",
            checkpoint_age.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "mesh_queue_depth",
            "Tasks queued, waiting for a node",
            queue_depth.clone(),
        );
        let leases_expired = Gauge::default();
        registry.register(
            "mesh_leases_expired",
            "Leases that expired and were swept, since the database began (from the audit trail)",
            leases_expired.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            auth_failures,
            rate_limited,
            ledger_size,
            checkpoint_age,
            queue_depth,
            leases_expired,
        }
    }
}

impl Metrics {
    /// Counts one answered request. `problem_code` is the answer's problem
    /// `code` when it is a problem.
    pub fn observe(
        &self,
        method: &str,
        route: Option<&str>,
        status: u16,
        seconds: f64,
        problem_code: Option<&str>,
    ) {
        let route = route.unwrap_or("unmatched").to_owned();
        // Any token is a method to hyper: only the standard ones get a
        // series of their own, so random methods cannot grow the registry.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.clone(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(seconds);
        if matches!(status, 401 | 403) {
            self.auth_failures
                .get_or_create(&CodeLabel {
                    code: problem_code.unwrap_or("unknown").to_owned(),
                })
                .inc();
        }
        if status == 429 {
            self.rate_limited.get_or_create(&RouteLabel { route }).inc();
        }
    }

    /// Reads the database-backed gauges and renders the exposition.
    pub fn render(&self, db: &Db, now_ms: i64) -> String {
        let one = |sql: &str| db.scalar_i64(sql).unwrap_or(None);
        self.ledger_size
            .set(one("SELECT count(*) FROM ledger_entries").unwrap_or(0));
        #[allow(clippy::cast_precision_loss)]
        self.checkpoint_age.set(
            one("SELECT max(created_at) FROM ledger_checkpoints")
                .map_or(-1.0, |t| (now_ms - t).max(0) as f64 / 1000.0),
        );
        self.queue_depth
            .set(one("SELECT count(*) FROM mesh_tasks WHERE status = 'queued'").unwrap_or(0));
        self.leases_expired.set(
            one("SELECT count(*) FROM audit_events WHERE action IN ('mesh.task.requeue', 'mesh.task.fail') \
                 AND json_extract(details, '$.reason') IN ('lease_expired', 'attempts_exhausted')")
                .unwrap_or(0),
        );
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `addr`, which must be a loopback address.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, db: Db) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("--metrics-listen must be a loopback address (127.0.0.1 or ::1), not {addr}");
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            let db = db.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /metrics ") {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    let db2 = db.clone();
                    let m = Arc::clone(&metrics);
                    let text = tokio::task::spawn_blocking(move || m.render(&db2, now))
                        .await
                        .unwrap_or_default();
                    ("200 OK", text)
                } else {
                    ("404 Not Found", "only GET /metrics\n".to_owned())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
