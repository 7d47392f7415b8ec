//! The HTTP/1.1 server: hyper on tokio, one request pipeline per thread.
//!
//! In scope: accepting connections (at most [`MAX_CONNECTIONS`] at once and
//! [`MAX_PER_CLIENT`] per client address, a short header timeout while more
//! than half the slots are taken, and a `503` for a connection over either
//! cap instead of a wait in the backlog, so one host cannot starve the
//! others), reading bodies up to the cap, the client address (socket peer;
//! `X-Forwarded-For` only from trusted proxies), handing requests to the
//! gateway router, logging, and graceful shutdown (stop accepting, let
//! in-flight requests finish, close idle keep-alives).
//! Out of scope: routing and everything a function does.
//!
//! Function futures are not `Send` (Workers and Spin are single-threaded), so
//! each connection runs on one thread of a pool of single-threaded executors
//! (`LocalPoolHandle`), each with its own router and `Services`.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use edgecoder_gateway::{Loaded, Ports, Selection};
use edgecoder_kernel::http::declared_length_exceeds;
use edgecoder_kernel::router::{InternalError, problem_response};
use edgecoder_kernel::{Error, Request, Router, Services};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::{LocalPoolHandle, TaskTracker};

use crate::platform::{OsRng, SystemClock, UreqOutbound};
use crate::sqlite::{Db, SqliteKv};

/// How much of an oversized body we read and discard before answering 413, so
/// the client sees the answer instead of a reset. Larger bodies are cut off.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections one client address (an IPv6 /64) may hold at once; trusted
/// proxies, which carry many clients, are not limited.
pub const MAX_PER_CLIENT: usize = 64;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// The header timeout of connections accepted while more than half the
/// slots are taken: idle connections then give their slot back quickly.
const HEADER_TIMEOUT_UNDER_PRESSURE: Duration = Duration::from_secs(2);

/// Counts the connections each client address holds.
#[derive(Default)]
struct Clients(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One client's connection slot, given back on drop.
struct ClientSlot {
    clients: Arc<Clients>,
    key: IpAddr,
}

impl Clients {
    /// Takes a slot for `key` unless it holds [`MAX_PER_CLIENT`] already.
    fn enter(self: &Arc<Self>, key: IpAddr) -> Option<ClientSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: Arc::clone(self),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .clients
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The address a connection counts against: the host for IPv4, the /64 for
/// IPv6 (one host's usual allocation).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Refusals being written at once; past this a connection over a cap is
/// closed without an answer, so a flood cannot hold file descriptors.
const MAX_REFUSALS: usize = 256;

fn refuse_bounded(
    tracker: &TaskTracker,
    refusals: &Arc<tokio::sync::Semaphore>,
    stream: tokio::net::TcpStream,
    why: &'static str,
) {
    match Arc::clone(refusals).try_acquire_owned() {
        Ok(permit) => {
            tracker.spawn(async move {
                refuse(stream, why).await;
                drop(permit);
            });
        }
        Err(_) => drop(stream),
    }
}

/// The answer to a connection over a cap: a complete `503` problem, then
/// close. Written with a deadline, so a client that does not read cannot
/// hold the task.
async fn refuse(mut stream: tokio::net::TcpStream, why: &'static str) {
    use tokio::io::AsyncWriteExt as _;
    let busy = edgecoder_kernel::problems::SERVER_BUSY;
    let body = serde_json::json!({
        "type": edgecoder_kernel::problems::type_uri(busy.code),
        "title": busy.title,
        "status": 503,
        "code": busy.code,
        "detail": why,
    })
    .to_string();
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every thread's pipeline is built from.
pub struct Shared {
    /// The shared SQL database.
    pub db: Db,
    /// The KV store.
    pub kv: SqliteKv,
    /// Every validated setting.
    pub loaded: Loaded,
    /// Request metrics (`--metrics-listen`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

thread_local! {
    static PIPELINE: RefCell<Option<(Rc<Router>, Rc<Services>)>> = const { RefCell::new(None) };
}

fn pipeline(shared: &Shared) -> (Rc<Router>, Rc<Services>) {
    PIPELINE.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                let services = shared.loaded.services(
                    Ports {
                        sql: Rc::new(shared.db.clone()),
                        kv: Rc::new(shared.kv.handle()),
                        clock: Rc::new(SystemClock),
                        rng: Rc::new(OsRng),
                        outbound: Rc::new(UreqOutbound::default()),
                        defer: Rc::new(crate::platform::SpawnLocal),
                        signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
                    },
                    Selection::All,
                    None,
                );
                let router = edgecoder_gateway::router(Selection::All, &services.config);
                (Rc::new(router), Rc::new(services))
            })
            .clone()
    })
}

/// Serves until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    threads: usize,
    shutdown: impl Future<Output = ()>,
) {
    let pool = LocalPoolHandle::new(threads.max(1));
    let tracker = TaskTracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(Clients::default());
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS));
    let proxies = shared.loaded.config.trusted_proxies.clone();
    // Scheduled work (federation pulls) on one of the request threads, with
    // the same services; it stops with the server.
    let timer_shared = Arc::clone(&shared);
    let mut timer_stop = stop_rx.clone();
    let timer = pool.spawn_pinned(move || async move {
        let (_, services) = pipeline(&timer_shared);
        let Some(every) = edgecoder_gateway::schedule_interval(&services) else {
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = timer_stop.changed() => return,
            }
            let outcome = edgecoder_gateway::scheduled(&services).await;
            tracing::debug!(%outcome, "scheduled work ran");
        }
    });
    tokio::pin!(shutdown);
    loop {
        // Accept whatever the load: a connection over a cap is answered and
        // closed at once rather than left in the backlog, where it would
        // queue behind whoever holds the slots.
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refuse_bounded(
                &tracker,
                &refusals,
                stream,
                "Every connection slot is taken; retry shortly.",
            );
            continue;
        };
        let client = if proxies
            .iter()
            .any(|n| n.contains(&peer.ip().to_canonical()))
        {
            None
        } else {
            match clients.enter(client_key(peer.ip())) {
                Some(slot) => Some(slot),
                None => {
                    drop(permit);
                    refuse_bounded(
                        &tracker,
                        &refusals,
                        stream,
                        "Too many connections from this address; close idle ones and retry.",
                    );
                    continue;
                }
            }
        };
        let header_timeout = if slots.available_permits() < MAX_CONNECTIONS / 2 {
            HEADER_TIMEOUT_UNDER_PRESSURE
        } else {
            HEADER_TIMEOUT
        };
        let shared = Arc::clone(&shared);
        let stop = stop_rx.clone();
        let handle =
            pool.spawn_pinned(move || connection(stream, peer, shared, stop, header_timeout));
        tracker.spawn(async move {
            let _ = handle.await;
            drop(client);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    timer.abort();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
) {
    let svc = service_fn(move |req| handle(req, peer, Arc::clone(&shared)));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn drain(mut body: Incoming, budget: usize) {
    let mut seen = 0usize;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > budget {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}

async fn handle(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (router, services) = pipeline(&shared);
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client_ip = edgecoder_kernel::context::client_ip_behind_proxies(
        peer.ip(),
        forwarded,
        &services.config.trusted_proxies,
    );
    let lines = |name: &str| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let host = req.headers().get("host").and_then(|v| v.to_str().ok());
    let (scheme, authority) = edgecoder_kernel::context::origin_behind_proxies(
        peer.ip(),
        host,
        &lines("x-forwarded-proto"),
        &lines("x-forwarded-host"),
        &services.config.trusted_proxies,
    );
    let started = std::time::Instant::now();
    let mut ctx = services.new_context(Some(client_ip));
    ctx.scheme = Some(scheme);
    ctx.authority = authority;
    edgecoder_kernel::context::accept_inbound(&mut ctx, req.headers());
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let limit = services.config.max_body_bytes;
    let method = parts.method.clone();

    let too_large = |ctx: &edgecoder_kernel::RequestContext| {
        let mut resp = problem_response(
            Error::PayloadTooLarge { limit },
            parts.uri.path(),
            &ctx.request_id,
        );
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        resp
    };

    let resp = if declared_length_exceeds(&parts.headers, limit) {
        drain(body, DRAIN_LIMIT).await;
        too_large(&ctx)
    } else {
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
            Err(_) => problem_response(Error::RequestTimeout, parts.uri.path(), &ctx.request_id),
            Ok(Ok(collected)) => {
                let mut kreq = Request::new(parts.method.clone(), &path_and_query, ctx.clone());
                kreq.headers = parts.headers.clone();
                kreq.body = collected.to_bytes().to_vec();
                router.handle(Rc::clone(&services), kreq).await
            }
            // The rest of the body is still unread; `Limited` consumed it, so
            // only the socket's remainder (if any) is lost on close.
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => too_large(&ctx),
            Ok(Err(_)) => {
                // The client went away or sent a broken chunked body.
                problem_response(
                    Error::InvalidRequest("The request body could not be read.".into()),
                    parts.uri.path(),
                    &ctx.request_id,
                )
            }
        }
    };

    let status = resp.status();
    let problem_code = edgecoder_kernel::context::problem_code(&resp);
    shared.metrics.observe(
        method.as_str(),
        router.template(parts.uri.path()),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
        problem_code.as_deref(),
    );
    if let Some(InternalError(msg)) = resp.extensions().get::<InternalError>()
        && status.is_server_error()
    {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::error!(request_id = %ctx.request_id, traceparent = ctx.traceparent.as_deref(), %method, path = %parts.uri.path(), status = status.as_u16(), latency_ms, cause = %msg, "request failed");
    } else {
        let cause = resp
            .extensions()
            .get::<InternalError>()
            .map(|InternalError(m)| m.as_str());
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(request_id = %ctx.request_id, traceparent = ctx.traceparent.as_deref(), %method, path = %parts.uri.path(), status = status.as_u16(), latency_ms, client_ip = %client_ip, cause, "request");
    }
    let (rparts, rbody) = resp.into_parts();
    Ok(hyper::Response::from_parts(
        rparts,
        Full::new(Bytes::from(rbody)),
    ))
}
