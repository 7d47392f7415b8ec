//! The EdgeCoder Cloudflare Worker: every function behind one Worker, over D1,
//! Workers KV and Worker secrets; or, with `EDGECODER_FUNCTION` set, one
//! function per Worker (each with only its own D1 and KV) behind a gateway
//! Worker that hands each request to its function's Worker through a
//! Service Binding (`AUTH`, `MESH`, `LEDGER`), and through which the
//! functions call each other (`https://<binding>.internal` URLs, signed with
//! each caller's own service key).
//!
//! In scope: the `fetch` entry point and the kernel's ports over the Workers
//! platform: `Sql` over the `DB` D1 binding (`batch` is D1's atomic batch), `Kv`
//! over the `KV` namespace, `Clock` from `Date.now()`, `Rng` from
//! `crypto.getRandomValues` (via getrandom), `ConfigSource` from
//! `EDGECODER_<NAME>` vars and secrets, `Outbound` over `fetch`. The client IP is
//! `CF-Connecting-IP`, which Cloudflare's edge sets and clients cannot forge.
//! Out of scope: function logic, and migrations, which operators apply with
//! `wrangler d1 migrations apply` (the readiness check reports pending ones).
//!
//! Numbers cross the JavaScript boundary as doubles: integers beyond ±2^53 are
//! refused as parameters (never silently rounded), and whole-number REAL
//! results read as integers (`Rows::get_f64` accepts both), so schemas keep
//! large or random identifiers as text. Column names come from D1's row
//! objects: a query must not repeat a column name or use an integer-like one,
//! and a query with no rows reports no columns.

#![cfg(target_arch = "wasm32")]

use std::rc::Rc;
use std::time::Duration;

use edgecoder_gateway::{Loaded, Ports, Selection};
use edgecoder_kernel::http_types::{HeaderMap, HeaderName, HeaderValue, Method};
use edgecoder_kernel::ports::{KV_LIST_MAX, validate_kv_key};
use edgecoder_kernel::router::{InternalError, problem_response};
use edgecoder_kernel::{
    Clock, Config, ConfigSource, Error, Kv, Outbound, OutboundRequest, OutboundResponse, Request,
    Rng, Rows, Sql, Statement, Value, async_trait,
};
use futures_util::StreamExt;
use js_sys::futures::JsFuture;
use js_sys::{Array, ArrayBuffer, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use worker::{D1Database, D1PreparedStatement, Env, KvStore, event};

const D1_BINDING: &str = "DB";
const KV_BINDING: &str = "KV";

struct D1(D1Database);

/// The largest integer a JavaScript double holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

fn js_param(v: &Value) -> Result<JsValue, Error> {
    Ok(match v {
        Value::Null => JsValue::NULL,
        // Doubles are what D1 takes; refusing what a double would round keeps
        // a silently different value out of the database.
        #[allow(clippy::cast_precision_loss)]
        Value::Integer(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => {
            JsValue::from_f64(*i as f64)
        }
        Value::Integer(_) => {
            return Err(Error::Storage(
                "integer parameter beyond ±2^53 cannot cross into D1".into(),
            ));
        }
        Value::Real(f) => JsValue::from_f64(*f),
        Value::Text(s) => JsValue::from_str(s),
        Value::Blob(b) => Uint8Array::from(b.as_slice()).buffer().into(),
    })
}

fn from_js(v: &JsValue) -> Value {
    if v.is_null() || v.is_undefined() {
        Value::Null
    } else if let Some(s) = v.as_string() {
        Value::Text(s)
    } else if let Some(f) = v.as_f64() {
        #[allow(clippy::cast_possible_truncation)]
        if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
            Value::Integer(f as i64)
        } else {
            Value::Real(f)
        }
    } else if let Some(b) = v.dyn_ref::<ArrayBuffer>() {
        Value::Blob(Uint8Array::new(b).to_vec())
    } else if let Some(b) = v.dyn_ref::<Uint8Array>() {
        Value::Blob(b.to_vec())
    } else if let Some(a) = v.dyn_ref::<Array>() {
        // D1 hands BLOB columns back as arrays of byte values.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Value::Blob(a.iter().map(|x| x.as_f64().unwrap_or(0.0) as u8).collect())
    } else {
        Value::Null
    }
}

fn prepare(db: &D1Database, stmt: &Statement) -> Result<D1PreparedStatement, Error> {
    let params: Vec<JsValue> = stmt.params.iter().map(js_param).collect::<Result<_, _>>()?;
    db.prepare(&stmt.sql).bind(&params).map_err(Error::storage)
}

fn js_error(e: &JsValue) -> Error {
    // D1 puts the SQLite message in `cause`; keep both for the log.
    let message = |v: &JsValue| {
        v.dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| v.as_string())
    };
    let outer = message(e).unwrap_or_else(|| "D1 error".into());
    let cause = Reflect::get(e, &JsValue::from_str("cause"))
        .ok()
        .and_then(|c| message(&c));
    edgecoder_kernel::ports::sql_error(match cause {
        Some(c) => format!("{outer}: {c}"),
        None => outer,
    })
}

// Calls a promise-returning method by name. The worker crate's typed D1 results
// go through serde, which blurs integers, reals and blobs; reading the
// JavaScript result object directly keeps each value's type.
async fn call(this: &JsValue, method: &str, args: &Array) -> Result<JsValue, Error> {
    let f: Function = Reflect::get(this, &JsValue::from_str(method))
        .map_err(|e| js_error(&e))?
        .dyn_into()
        .map_err(|_| Error::Storage(format!("D1 has no {method}()")))?;
    let promise: Promise = f
        .apply(this, args)
        .map_err(|e| js_error(&e))?
        .dyn_into()
        .map_err(|_| Error::Storage(format!("D1 {method}() returned no promise")))?;
    JsFuture::from(promise).await.map_err(|e| js_error(&e))
}

fn rows(result: &JsValue) -> Rows {
    let get = |obj: &JsValue, key: &str| {
        Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    };
    let mut out = Rows::default();
    let results = get(result, "results");
    if let Some(list) = results.dyn_ref::<Array>() {
        for (i, row) in list.iter().enumerate() {
            let Some(obj) = row.dyn_ref::<Object>() else {
                continue;
            };
            let entries = Object::entries(obj);
            let pair = |e: JsValue, n: u32| Reflect::get_u32(&e, n).unwrap_or(JsValue::UNDEFINED);
            if i == 0 {
                out.columns = entries
                    .iter()
                    .map(|e| pair(e, 0).as_string().unwrap_or_default())
                    .collect();
            }
            out.rows
                .push(entries.iter().map(|e| from_js(&pair(e, 1))).collect());
        }
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let changes = get(&get(result, "meta"), "changes").as_f64().unwrap_or(0.0) as u64;
    out.changes = changes;
    out
}

#[async_trait(?Send)]
impl Sql for D1 {
    async fn execute(&self, stmt: Statement) -> Result<Rows, Error> {
        let prepared = prepare(&self.0, &stmt)?;
        let result = call(prepared.inner().as_ref(), "all", &Array::new()).await?;
        Ok(rows(&result))
    }

    async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<Rows>, Error> {
        let list = Array::new();
        for s in &stmts {
            list.push(prepare(&self.0, s)?.inner().as_ref());
        }
        let results = call(self.0.as_ref(), "batch", &Array::of1(&list)).await?;
        let results: Array = results
            .dyn_into()
            .map_err(|_| Error::Storage("D1 batch() returned no array".into()))?;
        Ok(results.iter().map(|r| rows(&r)).collect())
    }
}

struct WorkersKv(KvStore);

#[async_trait(?Send)]
impl Kv for WorkersKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        validate_kv_key(key)?;
        self.0.get(key).bytes().await.map_err(Error::storage)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        validate_kv_key(key)?;
        let mut put = self.0.put_bytes(key, value).map_err(Error::storage)?;
        if let Some(ttl) = ttl {
            put = put.expiration_ttl(ttl.max(edgecoder_kernel::ports::KV_MIN_TTL).as_secs());
        }
        put.execute().await.map_err(Error::storage)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        validate_kv_key(key)?;
        self.0.delete(key).await.map_err(Error::storage)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        let limit = u64::try_from(limit.min(KV_LIST_MAX)).unwrap_or(0);
        let resp = self
            .0
            .list()
            .prefix(prefix.to_owned())
            .limit(limit)
            .execute()
            .await
            .map_err(Error::storage)?;
        Ok(resp.keys.into_iter().map(|k| k.name).collect())
    }
}

struct DateClock;

impl Clock for DateClock {
    fn now_ms(&self) -> i64 {
        #[allow(clippy::cast_possible_truncation)]
        let now = js_sys::Date::now() as i64;
        now
    }
}

struct CryptoRng;

impl Rng for CryptoRng {
    fn fill(&self, buf: &mut [u8]) {
        if let Err(e) = getrandom::fill(buf) {
            panic!("crypto.getRandomValues unavailable: {e}");
        }
    }
}

/// ECDSA P-256 checks by the platform's WebCrypto: native code, a fraction
/// of the CPU the same check costs compiled to wasm (see bench/README.md).
struct WebCryptoSignatures;

impl WebCryptoSignatures {
    async fn check(key_sec1: &[u8], message: &[u8], signature: &[u8]) -> Result<bool, JsValue> {
        let crypto: web_sys::Crypto =
            Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))?.dyn_into()?;
        let subtle = crypto.subtle();
        let params = web_sys::EcKeyImportParams::new("ECDSA");
        params.set_named_curve("P-256");
        let usages = Array::of1(&JsValue::from_str("verify"));
        let raw = Uint8Array::from(key_sec1);
        let key: web_sys::CryptoKey =
            JsFuture::from(subtle.import_key_with_object("raw", &raw, &params, false, &usages)?)
                .await?
                .dyn_into()?;
        let algorithm = web_sys::EcdsaParams::new_with_str("ECDSA", "SHA-256");
        let verdict =
            JsFuture::from(subtle.verify_with_object_and_u8_array_and_u8_array(
                &algorithm, &key, signature, message,
            )?)
            .await?;
        Ok(verdict.as_bool() == Some(true))
    }
}

#[async_trait(?Send)]
impl edgecoder_kernel::SignatureCheck for WebCryptoSignatures {
    async fn verify_p256(
        &self,
        key_sec1: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error> {
        // WebCrypto wants exactly r‖s; anything else is simply not a signature.
        if signature.len() != 64 {
            return Ok(false);
        }
        Self::check(key_sec1, message, signature)
            .await
            .map_err(|e| Error::Config(format!("WebCrypto unavailable: {e:?}")))
    }
}

struct WorkerConfig<'a>(&'a Env);

impl ConfigSource for WorkerConfig<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .var(&format!("EDGECODER_{}", name.to_ascii_uppercase()))
            .ok()
            .map(|v| v.to_string())
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.0
            .secret(&format!("EDGECODER_{}", name.to_ascii_uppercase()))
            .ok()
            .map(|v| v.to_string())
    }
}

/// Deferred work through `ctx.waitUntil`: the runtime keeps the isolate
/// alive for it after the response has gone.
struct WaitUntil(worker::Context);

impl edgecoder_kernel::Defer for WaitUntil {
    fn defer(&self, task: edgecoder_kernel::Deferred) {
        self.0.wait_until(task);
    }
}

/// Deferred work of a cron invocation.
struct ScheduleWaitUntil(worker::ScheduleContext);

impl edgecoder_kernel::Defer for ScheduleWaitUntil {
    fn defer(&self, task: edgecoder_kernel::Deferred) {
        self.0.wait_until(task);
    }
}

/// The cron trigger (`[triggers] crons` in wrangler.toml): the scheduled
/// work of the functions this Worker serves (the mesh's federation pulls),
/// with the same bindings a request gets. A split deployment's gateway
/// holds no storage and has none.
#[event(scheduled)]
async fn scheduled(_event: worker::ScheduledEvent, env: Env, ctx: worker::ScheduleContext) {
    let selection = match WorkerConfig(&env).var("function") {
        None => Ok(Selection::All),
        Some(name) => Selection::from_name(name.trim()),
    };
    let Ok(selection) = selection else {
        worker::console_error!("scheduled: unknown function selection");
        return;
    };
    if !selection.uses_storage() {
        return;
    }
    let loaded = match Loaded::load(&WorkerConfig(&env), selection) {
        Ok(l) => l,
        Err(e) => {
            worker::console_error!("scheduled: refusing to run: {e}");
            return;
        }
    };
    let (Ok(db), Ok(kv)) = (env.d1(D1_BINDING), env.kv(KV_BINDING)) else {
        worker::console_error!(
            "scheduled: the {D1_BINDING} and {KV_BINDING} bindings are required"
        );
        return;
    };
    let services = loaded.services(
        Ports {
            sql: Rc::new(D1(db)),
            kv: Rc::new(WorkersKv(kv)),
            clock: Rc::new(DateClock),
            rng: Rc::new(CryptoRng),
            outbound: Rc::new(Fetch(env.clone())),
            defer: Rc::new(ScheduleWaitUntil(ctx)),
            signatures: Rc::new(WebCryptoSignatures),
        },
        selection,
        None,
    );
    let outcome = edgecoder_gateway::scheduled(&services).await;
    worker::console_log!("scheduled work: {outcome}");
}

/// Outbound `fetch`; a URL `https://<name>.internal/...` goes to the Service
/// Binding `<NAME>` (another function's Worker in a split deployment), never
/// to the network.
struct Fetch(Env);

/// The Service Binding of `url`, if it names one (`https://ledger.internal`).
fn internal_binding(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let host = rest.split(['/', '?']).next()?;
    let name = host.strip_suffix(".internal")?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()))
        .then(|| name.to_ascii_uppercase())
}

/// Which function's Worker serves `path` in a split deployment.
fn binding_for(path: &str) -> Option<&'static str> {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if under("/auth") || path == "/.well-known/jwks.json" {
        Some("AUTH")
    } else if under("/mesh") {
        Some("MESH")
    } else if under("/ledger") {
        Some("LEDGER")
    } else {
        None
    }
}

#[async_trait(?Send)]
impl Outbound for Fetch {
    async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, Error> {
        let headers = worker::Headers::new();
        for (k, v) in &req.headers {
            headers
                .set(k, v)
                .map_err(|e| Error::Outbound(e.to_string()))?;
        }
        let mut init = worker::RequestInit::new();
        init.with_method(worker::Method::from(req.method.as_str().to_owned()))
            .with_headers(headers)
            .with_redirect(worker::RequestRedirect::Manual);
        if !req.body.is_empty() {
            init.with_body(Some(Uint8Array::from(req.body.as_slice()).into()));
        }
        let request = worker::Request::new_with_init(&req.url, &init)
            .map_err(|e| Error::Outbound(e.to_string()))?;
        let mut resp = match internal_binding(&req.url) {
            Some(name) => {
                let service = self.0.service(&name).map_err(|_| {
                    Error::Config(format!("no Service Binding {name} for {}", req.url))
                })?;
                service
                    .fetch_request(request)
                    .await
                    .map_err(|e| Error::Outbound(e.to_string()))?
            }
            None => worker::Fetch::Request(request)
                .send()
                .await
                .map_err(|e| Error::Outbound(e.to_string()))?,
        };
        let status = resp.status_code();
        let headers = resp.headers().entries().collect();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::Outbound(e.to_string()))?;
        Ok(OutboundResponse {
            status,
            headers,
            body,
        })
    }
}

fn to_worker(resp: edgecoder_kernel::Response) -> worker::Result<worker::Response> {
    let status = resp.status().as_u16();
    let headers = worker::Headers::new();
    for (name, value) in resp.headers() {
        if let Ok(v) = value.to_str() {
            headers.append(name.as_str(), v)?;
        }
    }
    // workerd gzips responses the client accepts gzip for, and on a 204 it
    // keeps `Content-Encoding: gzip` while dropping the (empty) gzip stream,
    // which clients then fail to decode: say there is no encoding.
    if status == 204 || status == 304 {
        headers.set("content-encoding", "identity")?;
    }
    let body = resp.into_body();
    let out = if body.is_empty() {
        worker::Response::empty()?
    } else {
        worker::Response::from_bytes(body)?
    };
    Ok(out.with_status(status).with_headers(headers))
}

type CachedRouter = Option<(bool, Selection, Rc<edgecoder_kernel::Router>)>;

thread_local! {
    // An isolate serves many requests with the same bindings and vars; build
    // the route table (and its OpenAPI document) once per isolate and shape.
    static ROUTER: std::cell::RefCell<CachedRouter> = const { std::cell::RefCell::new(None) };
}

fn cached_router(config: &Config, selection: Selection) -> Rc<edgecoder_kernel::Router> {
    ROUTER.with(|cell| {
        let mut cell = cell.borrow_mut();
        match &*cell {
            Some((test_routes, sel, router))
                if *test_routes == config.insecure_test_routes && *sel == selection =>
            {
                Rc::clone(router)
            }
            _ => {
                let router = Rc::new(edgecoder_gateway::router(selection, config));
                *cell = Some((config.insecure_test_routes, selection, Rc::clone(&router)));
                router
            }
        }
    })
}

/// One JSON line per request: Workers Logs indexes its fields, and the
/// native metrics' counts come from queries over them (README, "Logs,
/// metrics, audit"). Wall time: Workers reports CPU time itself.
fn log_request(
    ctx: &edgecoder_kernel::RequestContext,
    method: &str,
    route: Option<&str>,
    resp: &edgecoder_kernel::Response,
    started_ms: u64,
) {
    let latency_ms = worker::Date::now().as_millis().saturating_sub(started_ms) as f64;
    worker::console_log!(
        "{}",
        edgecoder_kernel::context::access_log(ctx, method, route, resp, latency_ms)
    );
}

/// A refusal before the router runs, logged like every other answer.
fn refuse(
    e: Error,
    path: &str,
    ctx: &edgecoder_kernel::RequestContext,
    method: &str,
    started_ms: u64,
) -> worker::Result<worker::Response> {
    let resp = problem_response(e, path, &ctx.request_id);
    log_request(ctx, method, None, &resp, started_ms);
    to_worker(resp)
}

/// The context of a refusal made before the request's context exists.
fn early(request_id: &str) -> edgecoder_kernel::RequestContext {
    edgecoder_kernel::RequestContext {
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

#[event(fetch)]
async fn fetch(
    mut req: worker::Request,
    env: Env,
    ctx: worker::Context,
) -> worker::Result<worker::Response> {
    let started_ms = worker::Date::now().as_millis();
    // The raw method string: the worker crate's enum maps unknown methods to GET.
    let raw_method = req.inner().method();
    let wait_until = WaitUntil(ctx);
    let client_ip = req
        .headers()
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok());
    let rng = CryptoRng;
    let request_id = edgecoder_kernel::ports::random_hex(&rng, 16);
    let url = req.url()?;
    let path = url.path().to_owned();

    let selection = match WorkerConfig(&env).var("function") {
        None => Ok(Selection::All),
        Some(name) => Selection::from_name(name.trim()),
    };
    let selection = match selection {
        Ok(s) => s,
        Err(e) => {
            worker::console_error!("refusing to serve: {e}");
            return refuse(e, &path, &early(&request_id), &raw_method, started_ms);
        }
    };
    // A split deployment's gateway hands each function's requests, as they
    // came (URL, headers, body), to that function's Worker.
    if selection == Selection::Gateway
        && let Some(name) = binding_for(&path)
    {
        return match env.service(name) {
            Ok(service) => service.fetch_request(req).await,
            Err(_) => {
                let e = Error::Config(format!("the {name} Service Binding is required"));
                worker::console_error!("refusing to serve: {e}");
                refuse(e, &path, &early(&request_id), &raw_method, started_ms)
            }
        };
    }
    let loaded = match Loaded::load(&WorkerConfig(&env), selection) {
        Ok(l) => l,
        Err(e) => {
            worker::console_error!("refusing to serve: {e}");
            return refuse(e, &path, &early(&request_id), &raw_method, started_ms);
        }
    };
    let (sql, kv): (Rc<dyn edgecoder_kernel::Sql>, Rc<dyn edgecoder_kernel::Kv>) =
        if selection.uses_storage() {
            match (env.d1(D1_BINDING), env.kv(KV_BINDING)) {
                (Ok(db), Ok(kv)) => (Rc::new(D1(db)), Rc::new(WorkersKv(kv))),
                _ => {
                    let e = Error::Config(format!(
                        "the {D1_BINDING} (D1) and {KV_BINDING} (KV) bindings are required"
                    ));
                    worker::console_error!("refusing to serve: {e}");
                    return refuse(e, &path, &early(&request_id), &raw_method, started_ms);
                }
            }
        } else {
            (
                Rc::new(edgecoder_kernel::ports::NoStorage),
                Rc::new(edgecoder_kernel::ports::NoStorage),
            )
        };
    // The URL the client addressed, as Cloudflare's edge received it: what
    // RFC 9421 derives `@scheme`, `@authority` and `@target-uri` from.
    let authority = url.host_str().map(|h| match url.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    });
    let mut ctx = edgecoder_kernel::RequestContext {
        request_id,
        client_ip,
        scheme: Some(url.scheme().to_owned()),
        authority,
        traceparent: None,
    };

    let mut headers = HeaderMap::new();
    for (k, v) in req.headers().entries() {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            headers.append(k, v);
        }
    }
    // The caller's `x-request-id` (else Cloudflare's `cf-ray`) and
    // `traceparent` follow the request.
    edgecoder_kernel::context::accept_inbound(&mut ctx, &headers);
    let services = Rc::new(loaded.services(
        Ports {
            sql,
            kv,
            clock: Rc::new(DateClock),
            rng: Rc::new(CryptoRng),
            outbound: Rc::new(Fetch(env.clone())),
            defer: Rc::new(wait_until),
            signatures: Rc::new(WebCryptoSignatures),
        },
        selection,
        Some(&ctx),
    ));
    let limit = services.config.max_body_bytes;
    let Ok(method) = Method::from_bytes(raw_method.as_bytes()) else {
        let e = Error::InvalidRequest("The request method is not a valid token.".into());
        // Not a token: not repeated into the log either.
        return refuse(e, &path, &ctx, "(invalid)", started_ms);
    };
    let path_and_query = match url.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    if edgecoder_kernel::http::declared_length_exceeds(&headers, limit) {
        return refuse(
            Error::PayloadTooLarge { limit },
            &path,
            &ctx,
            &raw_method,
            started_ms,
        );
    }
    // Read at most the cap + 1 bytes, whatever Content-Length said (or did
    // not say, for a chunked upload).
    let mut body = Vec::new();
    if let Ok(mut stream) = req.stream() {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    body.extend_from_slice(&bytes);
                    if body.len() > limit {
                        return refuse(
                            Error::PayloadTooLarge { limit },
                            &path,
                            &ctx,
                            &raw_method,
                            started_ms,
                        );
                    }
                }
                Err(_) => {
                    let e = Error::InvalidRequest("The request body could not be read.".into());
                    return refuse(e, &path, &ctx, &raw_method, started_ms);
                }
            }
        }
    }
    let log_ctx = ctx.clone();
    let mut kreq = Request::new(method.clone(), &path_and_query, ctx);
    kreq.headers = headers;
    kreq.body = body;
    let router = cached_router(&services.config, selection);
    let resp = router.handle(Rc::clone(&services), kreq).await;
    if let Some(InternalError(msg)) = resp.extensions().get::<InternalError>() {
        worker::console_error!("{} {path}: {msg}", resp.status());
    }
    log_request(
        &log_ctx,
        method.as_str(),
        router.template(&path),
        &resp,
        started_ms,
    );
    to_worker(resp)
}
