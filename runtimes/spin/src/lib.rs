//! The EdgeCoder Spin component (spin-sdk 5.2, a WASIp2 `wasi:http` handler).
//!
//! In scope: the HTTP entry point and the kernel's ports over Spin: `Sql` over
//! `fermyon:spin/sqlite@2.0.0`, `Kv` over `fermyon:spin/key-value@2.0.0`,
//! `ConfigSource` over `fermyon:spin/variables@2.0.0`, `Clock` and `Rng` over WASI,
//! `Outbound` over `wasi:http/outgoing-handler`. Out of scope: function logic.
//!
//! One artefact, several components: `spin.toml` instantiates it once per
//! function with the variable `function` = `auth`, `mesh` or `ledger` and grants
//! each only its own SQLite database and KV store, both labelled with the
//! function's name; a fourth, storage-less `gateway` component serves
//! `/openapi.json` and the not-found fallback.
//!
//! Migrations: each function component applies the embedded migrations to its
//! own database before the first statement a request runs (idempotent,
//! recorded in `d1_migrations`, audited), so `spin deploy` needs no separate
//! step. Liveness touches no storage, so it neither opens nor migrates.
//!
//! Platform gaps bridged here: Spin's SQLite has no transactions API, so
//! `batch` runs `BEGIN IMMEDIATE` ... `COMMIT` on the component's own
//! connection (atomic on local SQLite; a remote libSQL backend must keep one
//! connection per component instance for the same guarantee); it reports no
//! change counts, so they come from `total_changes()` / `changes()`; Spin KV
//! has no expiry, so values carry an expiry header and expired keys read as
//! absent. The client address comes from `spin-client-addr`, which the Spin
//! host sets.

#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgecoder_gateway::{Loaded, Ports, Selection};
use edgecoder_kernel::http_types::{HeaderMap, HeaderName, HeaderValue, Method};
use edgecoder_kernel::ports::{KV_LIST_MAX, validate_kv_key};
use edgecoder_kernel::router::{InternalError, problem_response};
use edgecoder_kernel::{
    Clock, ConfigSource, Error, Kv, Outbound, OutboundRequest, OutboundResponse, Request, Rng,
    Rows, Services, Sql, Statement, Value, async_trait, migrations,
};
use futures::StreamExt;
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::{key_value, sqlite, variables};

/// One Spin SQLite connection; every statement also reads the connection's
/// running change total, because Spin's query result carries no change count.
struct RawSpinSql {
    conn: sqlite::Connection,
    total: Cell<i64>,
}

fn to_spin(v: &Value) -> sqlite::Value {
    match v {
        Value::Null => sqlite::Value::Null,
        Value::Integer(i) => sqlite::Value::Integer(*i),
        Value::Real(f) => sqlite::Value::Real(*f),
        Value::Text(s) => sqlite::Value::Text(s.clone()),
        Value::Blob(b) => sqlite::Value::Blob(b.clone()),
    }
}

fn from_spin(v: sqlite::Value) -> Value {
    match v {
        sqlite::Value::Null => Value::Null,
        sqlite::Value::Integer(i) => Value::Integer(i),
        sqlite::Value::Real(f) => Value::Real(f),
        sqlite::Value::Text(s) => Value::Text(s),
        sqlite::Value::Blob(b) => Value::Blob(b),
    }
}

fn totals(conn: &sqlite::Connection) -> Result<(i64, i64), Error> {
    let r = conn
        .execute("SELECT total_changes(), changes()", &[])
        .map_err(Error::storage)?;
    let cell = |i: usize| match r.rows.first().and_then(|row| row.values.get(i)) {
        Some(sqlite::Value::Integer(n)) => *n,
        _ => 0,
    };
    Ok((cell(0), cell(1)))
}

impl RawSpinSql {
    fn open(label: &str) -> Result<RawSpinSql, Error> {
        let conn = sqlite::Connection::open(label)
            .map_err(|e| Error::Config(format!("sqlite database {label:?}: {e}")))?;
        let (total, _) = totals(&conn)?;
        Ok(RawSpinSql {
            conn,
            total: Cell::new(total),
        })
    }

    fn run(&self, stmt: &Statement) -> Result<Rows, Error> {
        let params: Vec<sqlite::Value> = stmt.params.iter().map(to_spin).collect();
        let result = self
            .conn
            .execute(&stmt.sql, &params)
            .map_err(|e| edgecoder_kernel::ports::sql_error(e.to_string()))?;
        // `changes()` keeps the last DML's count across DDL and SELECTs; only
        // believe it when this statement moved the running total.
        let (total, last) = totals(&self.conn)?;
        let changes = if total == self.total.get() {
            0
        } else {
            u64::try_from(last).unwrap_or(0)
        };
        self.total.set(total);
        Ok(Rows {
            columns: result.columns,
            rows: result
                .rows
                .into_iter()
                .map(|r| r.values.into_iter().map(from_spin).collect())
                .collect(),
            changes,
        })
    }
}

#[async_trait(?Send)]
impl Sql for RawSpinSql {
    async fn execute(&self, stmt: Statement) -> Result<Rows, Error> {
        self.run(&stmt)
    }

    async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<Rows>, Error> {
        // Spin has no batch API; this is atomic because the component holds
        // its own connection for the whole request.
        self.conn
            .execute("BEGIN IMMEDIATE", &[])
            .map_err(Error::storage)?;
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            match self.run(stmt) {
                Ok(rows) => out.push(rows),
                Err(e) => {
                    let _ = self.conn.execute("ROLLBACK", &[]);
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.conn.execute("COMMIT", &[]) {
            let _ = self.conn.execute("ROLLBACK", &[]);
            return Err(Error::storage(e));
        }
        Ok(out)
    }
}

/// The function's database, opened on first use (so liveness never touches
/// it) and brought up to date with the embedded migrations before the first
/// statement of each instance runs.
struct SpinSql {
    label: &'static str,
    raw: OnceCell<RawSpinSql>,
    migrated: Cell<bool>,
}

impl SpinSql {
    async fn ready(&self) -> Result<&RawSpinSql, Error> {
        if self.raw.get().is_none() {
            let _ = self.raw.set(RawSpinSql::open(self.label)?);
        }
        let raw = self
            .raw
            .get()
            .ok_or_else(|| Error::Storage("sqlite connection unavailable".into()))?;
        if !self.migrated.get() {
            self.migrated.set(true);
            if !migrations::pending(raw).await?.is_empty() {
                let applied =
                    migrations::apply(raw, &WasiClock, &WasiRng, "system:spin-migrate").await?;
                eprintln!("{}: applied migrations {applied:?}", self.label);
            }
        }
        Ok(raw)
    }
}

#[async_trait(?Send)]
impl Sql for SpinSql {
    async fn execute(&self, stmt: Statement) -> Result<Rows, Error> {
        self.ready().await?.execute(stmt).await
    }

    async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<Rows>, Error> {
        self.ready().await?.batch(stmts).await
    }
}

/// Spin KV values are stored as `0x01 ‖ expires_at_ms (i64 BE, 0 = never) ‖ value`.
const KV_FORMAT: u8 = 1;

/// The function's key-value store, opened on first use.
struct SpinKv {
    label: &'static str,
    store: OnceCell<key_value::Store>,
    clock: WasiClock,
}

impl SpinKv {
    fn store(&self) -> Result<&key_value::Store, Error> {
        if self.store.get().is_none() {
            let store = key_value::Store::open(self.label)
                .map_err(|e| Error::Config(format!("key-value store {:?}: {e}", self.label)))?;
            let _ = self.store.set(store);
        }
        self.store
            .get()
            .ok_or_else(|| Error::Storage("key-value store unavailable".into()))
    }

    fn decode(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let (&format, rest) = raw.split_first()?;
        if format != KV_FORMAT || rest.len() < 8 {
            return None;
        }
        let (exp, value) = rest.split_at(8);
        let expires_at = i64::from_be_bytes(exp.try_into().ok()?);
        if expires_at != 0 && expires_at <= self.clock.now_ms() {
            return None;
        }
        Some(value.to_vec())
    }
}

#[async_trait(?Send)]
impl Kv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        validate_kv_key(key)?;
        let store = self.store()?;
        let Some(raw) = store.get(key).map_err(Error::storage)? else {
            return Ok(None);
        };
        match self.decode(&raw) {
            Some(v) => Ok(Some(v)),
            None => {
                // Sweep what has expired; leave anything we cannot read alone.
                if raw.first() == Some(&KV_FORMAT) && raw.len() >= 9 {
                    let _ = store.delete(key);
                }
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        validate_kv_key(key)?;
        let expires_at = ttl.map_or(0, |t| {
            let t = t.max(edgecoder_kernel::ports::KV_MIN_TTL);
            self.clock
                .now_ms()
                .saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
        });
        let mut raw = Vec::with_capacity(value.len() + 9);
        raw.push(KV_FORMAT);
        raw.extend_from_slice(&expires_at.to_be_bytes());
        raw.extend_from_slice(value);
        self.store()?.set(key, &raw).map_err(Error::storage)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        validate_kv_key(key)?;
        self.store()?.delete(key).map_err(Error::storage)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        // Spin lists every key of the store; each function's store is its own
        // and small, and expiry needs a read per candidate.
        let limit = limit.min(KV_LIST_MAX);
        let mut keys: Vec<String> = self
            .store()?
            .get_keys()
            .map_err(Error::storage)?
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        let mut live = Vec::new();
        for k in keys {
            if live.len() >= limit {
                break;
            }
            if self.get(&k).await?.is_some() {
                live.push(k);
            }
        }
        Ok(live)
    }
}

#[derive(Clone, Copy)]
struct WasiClock;

impl Clock for WasiClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

struct WasiRng;

impl Rng for WasiRng {
    fn fill(&self, buf: &mut [u8]) {
        if let Err(e) = getrandom::fill(buf) {
            panic!("wasi:random unavailable: {e}");
        }
    }
}

struct SpinConfig;

impl ConfigSource for SpinConfig {
    fn var(&self, name: &str) -> Option<String> {
        variables::get(name).ok()
    }

    fn secret(&self, name: &str) -> Option<String> {
        // Spin keeps secrets as variables marked `secret = true`, resolved from
        // the configured provider (environment, Vault, Azure Key Vault).
        variables::get(name).ok()
    }
}

struct SpinOutbound;

fn spin_method(m: &Method) -> spin_sdk::http::Method {
    use spin_sdk::http::Method as M;
    match *m {
        Method::GET => M::Get,
        Method::POST => M::Post,
        Method::PUT => M::Put,
        Method::DELETE => M::Delete,
        Method::PATCH => M::Patch,
        Method::HEAD => M::Head,
        Method::OPTIONS => M::Options,
        _ => M::Other(m.as_str().to_owned()),
    }
}

#[async_trait(?Send)]
impl Outbound for SpinOutbound {
    async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, Error> {
        let mut builder = spin_sdk::http::Request::builder();
        builder
            .method(spin_method(&req.method))
            .uri(req.url.clone());
        for (k, v) in &req.headers {
            builder.header(k.clone(), v.clone());
        }
        let request = builder.body(req.body).build();
        let resp: spin_sdk::http::Response = spin_sdk::http::send(request)
            .await
            .map_err(|e| Error::Outbound(e.to_string()))?;
        Ok(OutboundResponse {
            status: *resp.status(),
            headers: resp
                .headers()
                .filter_map(|(k, v)| Some((k.to_owned(), v.as_str()?.to_owned())))
                .collect(),
            body: resp.into_body(),
        })
    }
}

async fn respond(out: ResponseOutparam, resp: edgecoder_kernel::Response) {
    let entries: Vec<(String, Vec<u8>)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let status = resp.status().as_u16();
    let Ok(fields) = Fields::from_list(&entries) else {
        return;
    };
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let _ = out.set_with_body(response, resp.into_body()).await;
}

thread_local! {
    /// Work deferred by this request: Spin runs one request per component
    /// instance, so the instance's list is the request's. Run after the
    /// response body is complete.
    static DEFERRED: Rc<edgecoder_kernel::CollectDeferred> = Rc::default();
}

/// The component's services: its own stores (none for the gateway), the
/// gateway's wiring to the other components over HTTP.
fn services(
    selection: Selection,
    loaded: &Loaded,
    ctx: &edgecoder_kernel::RequestContext,
) -> Services {
    let (sql, kv): (Rc<dyn Sql>, Rc<dyn Kv>) = match selection {
        Selection::Only(f) => (
            Rc::new(SpinSql {
                label: f.name(),
                raw: OnceCell::new(),
                migrated: Cell::new(false),
            }),
            Rc::new(SpinKv {
                label: f.name(),
                store: OnceCell::new(),
                clock: WasiClock,
            }),
        ),
        // The gateway holds no stores; anything reaching for one is a bug.
        _ => (
            Rc::new(edgecoder_kernel::ports::NoStorage),
            Rc::new(edgecoder_kernel::ports::NoStorage),
        ),
    };
    loaded.services(
        Ports {
            sql,
            kv,
            clock: Rc::new(WasiClock),
            rng: Rc::new(WasiRng),
            outbound: Rc::new(SpinOutbound),
            defer: DEFERRED.with(Rc::clone),
            signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
        },
        selection,
        Some(ctx),
    )
}

async fn prepare(
    selection_name: Option<String>,
    ctx: &edgecoder_kernel::RequestContext,
) -> Result<(Selection, Rc<Services>), Error> {
    let selection = Selection::from_name(selection_name.as_deref().unwrap_or(""))?;
    let loaded = Loaded::load(&SpinConfig, selection)?;
    let services = services(selection, &loaded, ctx);
    Ok((selection, Rc::new(services)))
}

// The export macro expands to the component ABI glue, which is necessarily
// `unsafe`; the allowance is scoped to that expansion.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{IncomingRequest, ResponseOutparam};
    use spin_sdk::http_component;

    #[http_component]
    async fn handle(req: IncomingRequest, out: ResponseOutparam) {
        super::handle(req, out).await;
    }
}

/// One JSON line per request on stderr, which Spin hosts keep per
/// component: the same fields as the native log and Workers Logs.
fn log_request(
    ctx: &edgecoder_kernel::RequestContext,
    method: &str,
    route: Option<&str>,
    resp: &edgecoder_kernel::Response,
    started: std::time::Instant,
) {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "{}",
        edgecoder_kernel::context::access_log(ctx, method, route, resp, latency_ms)
    );
}

/// A refusal before the router runs, logged like every other answer.
async fn refuse(
    out: ResponseOutparam,
    e: Error,
    path: &str,
    ctx: &edgecoder_kernel::RequestContext,
    method: &str,
    started: std::time::Instant,
) {
    let resp = problem_response(e, path, &ctx.request_id);
    log_request(ctx, method, None, &resp, started);
    respond(out, resp).await;
}

async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let started = std::time::Instant::now();
    let rng = WasiRng;
    let request_id = edgecoder_kernel::ports::random_hex(&rng, 16);
    let path_and_query = req.path_with_query().unwrap_or_else(|| "/".into());
    let path = path_and_query.split('?').next().unwrap_or("/").to_owned();

    let mut headers = HeaderMap::new();
    for (k, v) in req.headers().entries() {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(&v),
        ) {
            headers.append(k, v);
        }
    }
    let client_addr = spin_header(&headers, "spin-client-addr")
        .and_then(|v| v.parse::<std::net::SocketAddr>().ok());
    // Spin hands a service-chained request (another component of this app
    // calling `http://<id>.spin.internal`) over in memory, from the client
    // address 0.0.0.0:0, which no network peer can have. It crossed no
    // network: it has no client address, and the https rule and the
    // addressed origin do not apply to it.
    let chained = client_addr.is_some_and(|a| a.ip().is_unspecified() && a.port() == 0);
    let client_ip = client_addr.map(|a| a.ip()).filter(|_| !chained);
    let method =
        Method::from_bytes(spin_method_str(&req.method()).as_bytes()).unwrap_or(Method::GET);
    let (scheme, authority) = if chained {
        (None, None)
    } else {
        addressed(&headers)
    };
    let mut ctx = edgecoder_kernel::RequestContext {
        request_id,
        client_ip,
        scheme,
        authority,
        traceparent: None,
    };
    edgecoder_kernel::context::accept_inbound(&mut ctx, &headers);
    let (selection, services) = match prepare(variables::get("function").ok(), &ctx).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("refusing to serve: {e}");
            return refuse(out, e, &path, &ctx, method.as_str(), started).await;
        }
    };

    let limit = services.config.max_body_bytes;
    if edgecoder_kernel::http::declared_length_exceeds(&headers, limit) {
        return refuse(
            out,
            Error::PayloadTooLarge { limit },
            &path,
            &ctx,
            method.as_str(),
            started,
        )
        .await;
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                body.extend_from_slice(&bytes);
                if body.len() > limit {
                    return refuse(
                        out,
                        Error::PayloadTooLarge { limit },
                        &path,
                        &ctx,
                        method.as_str(),
                        started,
                    )
                    .await;
                }
            }
            Err(_) => {
                let e = Error::InvalidRequest("The request body could not be read.".into());
                return refuse(out, e, &path, &ctx, method.as_str(), started).await;
            }
        }
    }
    let log_ctx = ctx.clone();
    let mut kreq = Request::new(method.clone(), &path_and_query, ctx);
    kreq.headers = headers;
    kreq.body = body;
    let router = edgecoder_gateway::router(selection, &services.config);
    let resp = router.handle(Rc::clone(&services), kreq).await;
    if let Some(InternalError(msg)) = resp.extensions().get::<InternalError>() {
        eprintln!("{} {path}: {msg}", resp.status());
    }
    log_request(
        &log_ctx,
        method.as_str(),
        router.template(&path),
        &resp,
        started,
    );
    respond(out, resp).await;
    for task in DEFERRED.with(|d| d.take()) {
        task.await;
    }
}

/// The scheme and authority the client addressed, from `spin-full-url`,
/// which the Spin host sets (replacing any the client sent) to the URL it
/// received: what RFC 9421 derives `@scheme`, `@authority` and
/// `@target-uri` from.
/// A header the Spin host sets: its last value. Spin adds its own after
/// the client's headers, so a client that sends `spin-client-addr` or
/// `spin-full-url` itself gets its value listed first, never last.
fn spin_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
}

fn addressed(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let Some(url) = spin_header(headers, "spin-full-url") else {
        return (None, None);
    };
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            (
                Some(scheme.to_ascii_lowercase()),
                (!authority.is_empty()).then(|| authority.to_owned()),
            )
        }
        None => (None, None),
    }
}

fn spin_method_str(m: &spin_sdk::http::Method) -> String {
    m.to_string()
}
