//! Prometheus metrics, served on a local address only.
//!
//! In scope: requests and errors by code, latency and tokens/s per model,
//! graph loads; the text exposition on `GET /metrics` from a loopback
//! listener (`--metrics-listen`). Out of scope: anything reachable from the
//! network: the host exposes no inference port, and a metrics address that
//! is not loopback is refused (put a scraper on the machine, or a proxy in
//! front that the operator controls).
//!
//! Tokens/s per model is `rate(edgecoder_inference_tokens_generated_total)
//! / rate(edgecoder_inference_forward_seconds_total)`; the gauge
//! `edgecoder_inference_tokens_per_second` is the last request's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;
use crate::host::{InferenceError, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Requests {
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Errors {
    model: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Assigned {
    model: String,
    rollout: String,
}

type Seconds = fn() -> Histogram;

/// Latency bucket bounds of the health a heartbeat reports, ms: 1, 2, 4 …
const HEALTH_BUCKETS: usize = 20;

/// Per model: requests, errors, and latency counts per power-of-two bucket.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    buckets: [u64; HEALTH_BUCKETS + 1],
}

/// The host's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Requests, Counter>,
    errors: Family<Errors, Counter>,
    latency: Family<ModelLabel, Histogram, Seconds>,
    tokens: Family<ModelLabel, Counter>,
    forward: Family<ModelLabel, Counter<f64, AtomicU64>>,
    rate: Family<ModelLabel, Gauge<f64, AtomicU64>>,
    loads: Family<ModelLabel, Counter>,
    verify_failures: Family<Errors, Counter>,
    verify_seconds: Family<ModelLabel, Counter<f64, AtomicU64>>,
    fetch_seconds: Family<ModelLabel, Counter<f64, AtomicU64>>,
    supply_time: std::sync::Mutex<std::collections::HashMap<String, (Duration, Duration)>>,
    assigned: Family<Assigned, Gauge>,
    tallies: std::sync::Mutex<std::collections::HashMap<String, Tally>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The code an error is counted under (the WIT variant's name).
pub fn code(e: &InferenceError) -> &'static str {
    match e {
        InferenceError::ModelNotFound(_) => "model-not-found",
        InferenceError::ModelNotApproved(_) => "model-not-approved",
        InferenceError::InputTooLarge(_) => "input-too-large",
        InferenceError::LimitsExceeded(_) => "limits-exceeded",
        InferenceError::BackendError(_) => "backend-error",
    }
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Requests, Counter>::default();
        let errors = Family::<Errors, Counter>::default();
        let latency =
            Family::<ModelLabel, Histogram, Seconds>::new_with_constructor(seconds as Seconds);
        let tokens = Family::<ModelLabel, Counter>::default();
        let forward = Family::<ModelLabel, Counter<f64, AtomicU64>>::default();
        let rate = Family::<ModelLabel, Gauge<f64, AtomicU64>>::default();
        let loads = Family::<ModelLabel, Counter>::default();
        let verify_failures = Family::<Errors, Counter>::default();
        let verify_seconds = Family::<ModelLabel, Counter<f64, AtomicU64>>::default();
        let assigned = Family::<Assigned, Gauge>::default();
        let fetch_seconds = Family::<ModelLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "edgecoder_model_fetch_seconds",
            "Time releases took to become servable: fetch (or cache check) with verification",
            fetch_seconds.clone(),
        );
        registry.register(
            "edgecoder_model_verification_failures",
            "Releases refused by the resolver, by model version and code",
            verify_failures.clone(),
        );
        registry.register(
            "edgecoder_model_verify_seconds",
            "Time spent on release checks proper: signatures and blake3 (fetch, cache, load)",
            verify_seconds.clone(),
        );
        registry.register(
            "edgecoder_model_assigned",
            "1 for each model version the coordinator assigned to this host (rollout label: the rollout behind it)",
            assigned.clone(),
        );
        registry.register(
            "edgecoder_inference_requests",
            "Inference requests by model and outcome (ok, error)",
            requests.clone(),
        );
        registry.register(
            "edgecoder_inference_errors",
            "Failed inference requests by model and error code",
            errors.clone(),
        );
        registry.register(
            "edgecoder_inference_request_duration_seconds",
            "Wall time of inference requests in the host",
            latency.clone(),
        );
        registry.register(
            "edgecoder_inference_tokens_generated",
            "Tokens generated",
            tokens.clone(),
        );
        registry.register(
            "edgecoder_inference_forward_seconds",
            "Time spent in forward passes",
            forward.clone(),
        );
        registry.register(
            "edgecoder_inference_tokens_per_second",
            "Tokens per second of forward passes in the last request",
            rate.clone(),
        );
        registry.register(
            "edgecoder_inference_graph_loads",
            "Graphs loaded (verified and compiled by onnxruntime)",
            loads.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            latency,
            tokens,
            forward,
            rate,
            loads,
            verify_failures,
            verify_seconds,
            fetch_seconds,
            supply_time: std::sync::Mutex::new(std::collections::HashMap::new()),
            assigned,
            tallies: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a graph load.
    pub fn graph_loaded(&self, model: &str) {
        self.loads
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .inc();
    }

    /// Counts a refused release.
    pub fn verification_failed(&self, model: &str, code: &str) {
        self.verify_failures
            .get_or_create(&Errors {
                model: model.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// Time spent on a release's checks proper: signatures and hashing
    /// (while fetching, on a cached file, and on load).
    pub fn verify_work(&self, model: &str, took: Duration) {
        self.verify_seconds
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .inc_by(took.as_secs_f64());
        if let Ok(mut t) = self.supply_time.lock() {
            t.entry(model.to_owned()).or_default().0 += took;
        }
    }

    /// Time a release took to become servable (fetch or cache check, with
    /// its verification).
    pub fn fetched(&self, model: &str, took: Duration) {
        self.fetch_seconds
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .inc_by(took.as_secs_f64());
        if let Ok(mut t) = self.supply_time.lock() {
            t.entry(model.to_owned()).or_default().1 += took;
        }
    }

    /// (verification, fetch) time spent on `model` so far.
    pub fn supply_time(&self, model: &str) -> (Duration, Duration) {
        self.supply_time
            .lock()
            .ok()
            .and_then(|t| t.get(model).copied())
            .unwrap_or_default()
    }

    /// The current assignments (model version, rollout): the gauge is 1 for
    /// these and removed for any other.
    pub fn assignments(&self, now: &[(String, Option<String>)]) {
        self.assigned.clear();
        for (model, rollout) in now {
            self.assigned
                .get_or_create(&Assigned {
                    model: model.clone(),
                    rollout: rollout.clone().unwrap_or_default(),
                })
                .set(1);
        }
    }

    /// Requests, host-side errors (backend, trap, deadline) and p99 latency
    /// (ms, a bucket's upper bound) on `model` since the host started: what
    /// heartbeats report.
    pub fn health(&self, model: &str) -> (u64, u64, Option<u64>) {
        let Some(t) = self.tallies.lock().ok().and_then(|t| t.get(model).cloned()) else {
            return (0, 0, None);
        };
        let total: u64 = t.buckets.iter().sum();
        if total == 0 {
            return (t.requests, t.errors, None);
        }
        let want = total - total / 100;
        let mut seen = 0;
        let mut p99 = None;
        for (i, n) in t.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                p99 = Some(1u64 << i.min(62));
                break;
            }
        }
        (t.requests, t.errors, p99)
    }

    fn tally(&self, model: &str, o: &Outcome) {
        let ms = u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX);
        // Bucket i holds latencies up to 2^i ms.
        let bucket = (64 - ms.saturating_sub(1).leading_zeros()) as usize;
        if let Ok(mut t) = self.tallies.lock() {
            let e = t.entry(model.to_owned()).or_default();
            e.requests += 1;
            // The release's health: what went wrong in the host (the
            // backend, a trap, a deadline), not requests it refused.
            let host_side =
                matches!(o.result, Err(InferenceError::BackendError(_))) || o.interrupted;
            e.errors += u64::from(host_side);
            e.buckets[bucket.min(HEALTH_BUCKETS)] += 1;
        }
    }

    /// Records a finished request.
    pub fn observe(&self, model: &str, o: &Outcome) {
        self.tally(model, o);
        let label = ModelLabel {
            model: model.to_owned(),
        };
        let outcome = if o.result.is_ok() { "ok" } else { "error" };
        self.requests
            .get_or_create(&Requests {
                model: model.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&label)
            .observe(o.elapsed.as_secs_f64());
        match &o.result {
            Ok(r) => {
                let n = r.output_tokens.len() as u64;
                let secs = r.timings.compute_ns as f64 / 1e9;
                self.tokens.get_or_create(&label).inc_by(n);
                self.forward.get_or_create(&label).inc_by(secs);
                if secs > 0.0 {
                    self.rate.get_or_create(&label).set(n as f64 / secs);
                }
            }
            Err(e) => {
                self.errors
                    .get_or_create(&Errors {
                        model: model.to_owned(),
                        code: code(e).to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` (loopback only) from a background thread.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, Error> {
    if !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--metrics-listen {addr}: only a loopback address is served (the host exposes nothing to the network)"
        )));
    }
    let listener = TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("reading the metrics address", e))?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // A few scrapes at once; a client that holds a connection
                // open cannot stop the others.
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (metrics, done) = (metrics.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        answer(stream, &metrics);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .map_err(|e| Error::io("starting the metrics thread", e))?;
    Ok(bound)
}

/// Scrapes served at once.
const MAX_CONNECTIONS: usize = 8;
/// Longest a client may take to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);

/// Whether a `Host` header names this machine: a page elsewhere that
/// rebinds its DNS name to 127.0.0.1 still sends its own name.
fn local_host(head: &str) -> bool {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .is_some_and(|(_, v)| {
            let v = v.trim();
            let name = if let Some(rest) = v.strip_prefix('[') {
                rest.split(']').next().unwrap_or_default()
            } else {
                v.rsplit_once(':').map_or(v, |(h, _)| h)
            };
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(HEAD_DEADLINE));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The request head only: a scraper sends no body.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let left = HEAD_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, kind, body) = if !local_host(&text) {
        (
            "403 Forbidden",
            "text/plain",
            "a loopback Host is required\n".to_owned(),
        )
    } else if line.starts_with(b"GET /metrics ") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        )
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_owned())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
