//! The black-box conformance suite: HTTP checks that every runtime must pass.
//!
//! In scope: the [`Suite`] of named checks against any base URL, run as one
//! test binary per runtime ([`main`]), and small process helpers the runtime
//! harnesses in `tests/tests/` share. The suite knows nothing about the
//! runtime it talks to; the harness starts one (native binary, `wrangler dev`,
//! the Spin component under wasmtime) and hands over its URL.
//!
//! The suite expects a development deployment with `insecure_test_routes` on
//! (the echo routes) and the default body cap. Every response is checked for
//! the invariants that hold everywhere: no 5xx, an `x-request-id`, and a
//! well-formed problem+json body on every 4xx.

pub mod economy;
pub mod federation;
pub mod harness;
pub mod identity;
pub mod inference;
pub mod ledger;
pub mod mesh;
pub mod models;
pub mod oauth;
pub mod passkeys;
pub mod wasm;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value as Json;

/// The body cap the suite assumes (the kernel's default).
pub const BODY_CAP: usize = 256 * 1024;

/// The functions every runtime serves.
pub const FUNCTIONS: [&str; 3] = ["auth", "mesh", "ledger"];

/// A response as the suite sees it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Json, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON: {e}"))
    }

    /// The media type without parameters.
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }
}

/// One answer, as the document check needs it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request's method.
    pub method: String,
    /// The request's path, without the query.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// Its media type, without parameters (empty: none).
    pub media_type: String,
    /// Its body, when it is JSON of a size worth keeping.
    pub body: Option<Json>,
}

/// Bodies up to this size are kept for the schema check.
const SEEN_BODY_MAX: usize = 256 * 1024;

/// A tiny HTTP client bound to a base URL.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    checked: bool,
    /// Every answer, for the document check.
    seen: std::sync::Mutex<Vec<Seen>>,
    /// Every (method, path, request id, status) answered, for the audit
    /// coverage check.
    requests: std::sync::Mutex<Vec<(String, String, String, u16)>>,
    /// Every problem code answered, for the catalogue check.
    codes: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8787`).
    pub fn new(base: &str) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_redirects(0)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            checked: true,
            seen: std::sync::Mutex::new(Vec::new()),
            requests: std::sync::Mutex::new(Vec::new()),
            codes: Default::default(),
        }
    }

    /// A client that does not enforce the suite's invariants (no 5xx, ...),
    /// for tests that expect a deliberately broken deployment.
    pub fn unchecked(base: &str) -> Client {
        Client {
            checked: false,
            ..Client::new(base)
        }
    }

    /// Sends a request.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, String> {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| vec![("content-type", ct)])
            .unwrap_or_default();
        self.send_with(method, path, &headers, body)
    }

    /// Sends a request with extra headers.
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
        let mut resp = self
            .agent
            .run(req)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(16 * 1024 * 1024)
                .read_to_vec()
                .map_err(|e| format!("{method} {path}: reading body: {e}"))?
        };
        let reply = Reply {
            status: resp.status().as_u16(),
            headers,
            body,
        };
        if let Some(id) = reply.header("x-request-id") {
            self.requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((
                    method.to_owned(),
                    path.split('?').next().unwrap_or("").to_owned(),
                    id.to_owned(),
                    reply.status,
                ));
        }
        if self.checked {
            invariants(method, path, &reply)?;
            self.record_code(&reply);
            let media_type = reply.media_type();
            let body = (media_type.ends_with("json") && reply.body.len() <= SEEN_BODY_MAX)
                .then(|| reply.json().ok())
                .flatten();
            self.seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Seen {
                    method: method.to_owned(),
                    path: path.split('?').next().unwrap_or("").to_owned(),
                    status: reply.status,
                    media_type,
                    body,
                });
        }
        Ok(reply)
    }

    /// Every answer this client has been given, so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every (method, path, request id, status) this client has been
    /// answered.
    pub fn requests(&self) -> Vec<(String, String, String, u16)> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// GET.
    pub fn get(&self, path: &str) -> Result<Reply, String> {
        self.send("GET", path, None, &[])
    }

    /// Sends `request_line`, `headers` and `body` exactly as given over a fresh
    /// socket (with `Host` and `Connection: close` added) and reads the whole
    /// answer: for what an HTTP library would tidy up (extension methods, dot
    /// segments, chunked uploads, bodies on HEAD).
    pub fn raw(
        &self,
        request_line: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        use std::io::{Read, Write};
        let authority = self
            .base
            .strip_prefix("http://")
            .ok_or("raw requests need an http:// base")?;
        let mut stream = std::net::TcpStream::connect(authority).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut head = format!("{request_line}\r\nhost: {authority}\r\nconnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        // A server may answer (413) before reading everything; what matters is
        // the answer, so a write cut short is not a failure.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("{request_line}: reading answer: {e}"))?;
        let reply = parse_raw(&raw).ok_or_else(|| format!("{request_line}: unparseable answer"))?;
        let (method, path) = request_line
            .split_once(' ')
            .map(|(m, rest)| (m, rest.split(' ').next().unwrap_or("")))
            .unwrap_or(("", ""));
        if self.checked {
            invariants(method, path, &reply)?;
            self.record_code(&reply);
        }
        Ok(reply)
    }

    fn record_code(&self, reply: &Reply) {
        if reply.media_type() != "application/problem+json" {
            return;
        }
        if let Some(code) = reply
            .json()
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
        {
            self.codes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(code);
        }
    }

    /// Every problem code this client has been answered.
    pub fn codes(&self) -> std::collections::BTreeSet<String> {
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What holds for every response of every runtime.
fn invariants(method: &str, path: &str, r: &Reply) -> Result<(), String> {
    let at = format!("{method} {path} -> {}", r.status);
    // The one 5xx a healthy deployment may answer: readiness reporting a
    // failed check, in its own format.
    let failed_readiness = r.status == 503
        && path.ends_with("/health/ready")
        && r.media_type() == "application/health+json";
    // And a sign-in provider's failure, reported as a gateway error.
    let provider_failure = r.status == 502
        && path.starts_with("/auth/oauth/")
        && r.media_type() == "application/problem+json";
    if r.status >= 500 && !failed_readiness && !provider_failure {
        return Err(format!(
            "{at}: server error: {}",
            String::from_utf8_lossy(&r.body)
        ));
    }
    if r.header("x-request-id").is_none_or(str::is_empty) {
        return Err(format!("{at}: no x-request-id"));
    }
    // The emailed verification link's page answers people in HTML.
    let html_page = path.starts_with("/auth/verify-email") && r.media_type() == "text/html";
    // c2sp.org/tlog-witness fixes this answer's shape: the size, as text.
    let witness_size = path == "/mesh/witness/add-checkpoint"
        && r.status == 409
        && r.media_type() == "text/x.tlog.size";
    if (400..500).contains(&r.status) && method != "HEAD" && !html_page && !witness_size {
        problem_shape(&at, r)?;
    }
    Ok(())
}

fn problem_shape(at: &str, r: &Reply) -> Result<(), String> {
    if r.media_type() != "application/problem+json" {
        return Err(format!(
            "{at}: content-type {:?}, want application/problem+json",
            r.media_type()
        ));
    }
    let v = r.json().map_err(|e| format!("{at}: {e}"))?;
    let code = v["code"].as_str().unwrap_or("");
    let snake = !code.is_empty()
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !snake {
        return Err(format!("{at}: code {code:?} is not snake_case"));
    }
    if v["status"].as_u64() != Some(u64::from(r.status)) {
        return Err(format!("{at}: body status {} != {}", v["status"], r.status));
    }
    if !v["title"].is_string() || !v["type"].is_string() {
        return Err(format!("{at}: problem lacks title or type"));
    }
    // The type names the code's entry in the deployment's catalogue page.
    if v["type"] != format!("/problems#{code}").as_str() {
        return Err(format!("{at}: type {} is not /problems#{code}", v["type"]));
    }
    Ok(())
}

/// Expects a problem response with `status` and `code`.
pub fn expect_problem(r: &Reply, status: u16, code: &str) -> Result<(), String> {
    if r.status != status {
        return Err(format!(
            "status {} want {status}; body {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let got = r.json()?;
    if got["code"] != code {
        return Err(format!("code {} want {code}", got["code"]));
    }
    Ok(())
}

type Check = fn(&Client) -> Result<(), String>;

/// Every check, by name.
pub fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("health_is_pass_health_json", health_is_pass_health_json),
        (
            "an_inbound_request_id_is_honoured_and_a_malformed_one_replaced",
            an_inbound_request_id_is_honoured_and_a_malformed_one_replaced,
        ),
        ("head_health_has_no_body", head_health_has_no_body),
        (
            "ready_checks_sql_kv_and_migrations",
            ready_checks_sql_kv_and_migrations,
        ),
        ("openapi_lists_every_route", openapi_lists_every_route),
        (
            "a_problem_type_resolves_to_its_catalogue_entry",
            a_problem_type_resolves_to_its_catalogue_entry,
        ),
        ("unknown_route_is_not_found", unknown_route_is_not_found),
        (
            "dot_segments_resolve_like_urls",
            dot_segments_resolve_like_urls,
        ),
        (
            "wrong_method_is_method_not_allowed",
            wrong_method_is_method_not_allowed,
        ),
        (
            "body_over_cap_is_payload_too_large",
            body_over_cap_is_payload_too_large,
        ),
        (
            "malformed_json_is_invalid_json",
            malformed_json_is_invalid_json,
        ),
        (
            "non_json_content_type_is_unsupported_media_type",
            non_json_content_type_is_unsupported_media_type,
        ),
        (
            "wrong_shape_is_invalid_request",
            wrong_shape_is_invalid_request,
        ),
        ("valid_json_round_trips", valid_json_round_trips),
        ("request_ids_are_unique", request_ids_are_unique),
        (
            "sql_and_kv_ports_keep_their_contract",
            sql_and_kv_ports_keep_their_contract,
        ),
        (
            "jwks_publishes_the_signing_key",
            jwks_publishes_the_signing_key,
        ),
        (
            "one_key_per_job_each_published_where_verifiers_look",
            one_key_per_job_each_published_where_verifiers_look,
        ),
    ]
}

/// A deployment under test and the secrets its harness configured.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL.
    pub base: String,
    /// The access-token signing key (base64 PKCS#8 DER).
    pub signing_key: String,
    /// The log's checkpoint key (one line of base64 DER).
    pub checkpoint_key: String,
    /// The coordinator's identity key (one line of base64 DER).
    pub coordinator_key: String,
    /// The configured `issuer`.
    pub issuer: String,
    /// The configured `bootstrap_secret`.
    pub bootstrap_secret: String,
    /// The one configured `allowed_origins` entry.
    pub allowed_origin: String,
    /// Whether the functions call each other over HTTP (a database each:
    /// the split Workers, Spin) rather than in-process.
    pub functions_over_http: bool,
}

impl Target {
    /// A benchmark's view of a deployment `bench/run.sh` started: only its
    /// base and the bootstrap secret (`EDGECODER_BENCH_BOOTSTRAP_SECRET`) to
    /// make an admin.
    pub fn bench(base: &str) -> Target {
        Target {
            base: base.to_owned(),
            signing_key: String::new(),
            checkpoint_key: String::new(),
            coordinator_key: String::new(),
            issuer: String::new(),
            bootstrap_secret: std::env::var("EDGECODER_BENCH_BOOTSTRAP_SECRET").unwrap_or_default(),
            allowed_origin: String::new(),
            functions_over_http: false,
        }
    }

    /// A service token of `caller` (`auth`, `mesh`) for one call to
    /// `callee`, bound to that request (`method`, `path`, exact `body`) and
    /// signed with the caller's key as the deployment registers it in
    /// `service_keys` (see [`harness::service_key`]).
    pub fn service_token(
        &self,
        caller: &str,
        callee: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> String {
        let key = edgecoder_kernel::SigningKey::from_secret(&harness::service_key(
            &self.signing_key,
            caller,
        ))
        .expect("service key");
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        let request = edgecoder_kernel::service::request_digest(method, path, body);
        edgecoder_kernel::service::mint(
            &key,
            caller,
            callee,
            &request,
            now,
            &format!("suite-{now}"),
        )
        .expect("mint")
    }
}

/// A deployment under test: its target and whatever keeps it running
/// (server processes, the test OpenID Provider), stopped when dropped.
pub struct Deployment {
    /// Where it is and how it is configured.
    pub target: Target,
    /// Held until the run ends.
    pub keep: Vec<Box<dyn std::any::Any + Send>>,
}

/// What the checks share for one run: the deployment and one [`identity::Ctx`]
/// (its admin, fresh-address counter and the audited requests the coverage
/// check reads).
struct Running {
    ctx: identity::Ctx<'static>,
    _deployment: Deployment,
}

type Start = Box<dyn Fn() -> Deployment + Send + Sync>;

/// A check that runs with the shared context.
type CtxCheck = fn(&identity::Ctx) -> Result<(), String>;

struct Shared {
    start: Start,
    running: Mutex<Option<Running>>,
}

/// The conformance suite as named trials (`core::…`, `identity::…`,
/// `ledger::…`, `mesh::…`, `passkeys::…`, `oauth::…`), all against one
/// deployment that is started by the first trial that runs and stopped by
/// [`Suite::finish`]; a filtered run starts it only if a check is selected.
pub struct Suite {
    shared: Arc<Shared>,
}

/// The check that must see every other check's requests; it only runs with
/// the whole suite.
pub const COVERAGE_CHECK: &str = "identity::every_mutating_route_emits_an_audit_event";

impl Suite {
    /// A suite whose deployment `start` brings up.
    pub fn new(start: impl Fn() -> Deployment + Send + Sync + 'static) -> Suite {
        Suite {
            shared: Arc::new(Shared {
                start: Box::new(start),
                running: Mutex::new(None),
            }),
        }
    }

    fn trial(
        &self,
        name: String,
        check: impl FnOnce(&identity::Ctx<'static>) -> Result<(), String> + Send + 'static,
    ) -> Trial {
        let shared = Arc::clone(&self.shared);
        let name_for_timing = name.clone();
        Trial::test(name, move || {
            // A check that panicked poisons nothing the next one relies on.
            let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            let r = running.get_or_insert_with(|| {
                let deployment = (shared.start)();
                let client: &'static Client =
                    Box::leak(Box::new(Client::new(&deployment.target.base)));
                let target: &'static Target = Box::leak(Box::new(deployment.target.clone()));
                Running {
                    ctx: identity::Ctx::new(client, target),
                    _deployment: deployment,
                }
            });
            // Slow checks are what a long test run is made of: name them.
            let started = std::time::Instant::now();
            let result = check(&r.ctx).map_err(Failed::from);
            let took = started.elapsed();
            if took > Duration::from_secs(5) {
                eprintln!(
                    "slow check: {name_for_timing} took {:.1} s",
                    took.as_secs_f64()
                );
            }
            result
        })
    }

    /// Every check as a trial, in the suite's order; the coverage check comes
    /// last and is skipped (ignored) when `args` select a subset.
    pub fn trials(&self, args: &Arguments) -> Vec<Trial> {
        let mut out = Vec::new();
        for (name, check) in checks() {
            out.push(self.trial(format!("core::{name}"), move |x| check(x.c)));
        }
        let mut id_checks = identity::checks();
        let coverage = id_checks.pop();
        let named = |module: &str, list: Vec<(&'static str, CtxCheck)>| {
            list.into_iter()
                .map(|(name, check)| (format!("{module}::{name}"), check))
                .collect::<Vec<_>>()
        };
        let all = named("identity", id_checks)
            .into_iter()
            .chain(named("ledger", ledger::checks()))
            .chain(named("mesh", mesh::checks()))
            .chain(named("economy", economy::checks()))
            .chain(named("inference", inference::checks()))
            .chain(named("models", models::checks()))
            .chain(named("passkeys", passkeys::checks()))
            .chain(named("oauth", oauth::checks()));
        for (name, check) in all {
            out.push(self.trial(name, move |x| check(x)));
        }
        if let Some((name, check)) = coverage {
            let subset = args.filter.is_some() || !args.skip.is_empty();
            out.push(
                self.trial(format!("identity::{name}"), move |x| check(x))
                    .with_ignored_flag(subset),
            );
        }
        // Last: every answer the suite saw is one the document promises,
        // and every problem code it saw is in the catalogue.
        out.push(self.trial(
            "core::every_response_the_suite_saw_is_in_the_openapi_document".to_owned(),
            |x| every_response_is_documented(x.c),
        ));
        out.push(self.trial(
            "core::every_problem_code_the_suite_saw_is_in_the_catalogue".to_owned(),
            |x| every_problem_code_is_catalogued(x.c),
        ));
        out
    }

    /// Stops the deployment (the test binary exits without running
    /// destructors).
    pub fn finish(self) {
        let mut running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        running.take();
    }
}

/// A runtime's test binary: `harness` trials (the runtime's own checks) and
/// the suite against the deployment `start` brings up, filterable by name
/// (`cargo test --test native -- mesh::replayed_nonce_is_refused`). Trials
/// run one at a time unless `--test-threads` says otherwise.
pub fn main(start: impl Fn() -> Deployment + Send + Sync + 'static, harness: Vec<Trial>) -> ! {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let suite = Suite::new(start);
    let mut trials = harness;
    trials.extend(suite.trials(&args));
    let conclusion = libtest_mimic::run(&args, trials);
    suite.finish();
    conclusion.exit()
}

/// A harness check (a plain function that panics on failure) as a trial.
pub fn trial(name: &str, check: fn()) -> Trial {
    Trial::test(name, move || {
        check();
        Ok(())
    })
}

/// The operation of `doc` that `method path` is an instance of: the path
/// template with the most literal segments that matches.
pub fn documented_operation<'a>(doc: &'a Json, method: &str, path: &str) -> Option<&'a Json> {
    let want: Vec<&str> = path.split('/').collect();
    let method = if method == "HEAD" { "get" } else { method };
    doc["paths"]
        .as_object()?
        .iter()
        .filter_map(|(template, item)| {
            let segs: Vec<&str> = template.split('/').collect();
            let matches = segs.len() == want.len()
                && segs
                    .iter()
                    .zip(&want)
                    .all(|(t, w)| t == w || (t.starts_with('{') && !w.is_empty()));
            let literal = segs.iter().filter(|t| !t.starts_with('{')).count();
            matches.then_some((literal, item))
        })
        .max_by_key(|(literal, _)| *literal)
        .and_then(|(_, item)| item.get(method.to_ascii_lowercase()))
}

/// Of `routes` (method, path template), those that no request `c` sent
/// left an audit event for, each read back through its function's export
/// (`GET /{function}/audit/events?request_id=`) with `bearer` (a
/// system_admin or a monitor credential). Each entry says whether the route
/// ever answered 2xx to `c`.
pub fn unaudited_routes(
    c: &Client,
    bearer: &str,
    routes: &[(String, String)],
) -> Result<Vec<String>, String> {
    let doc = c.get("/openapi.json")?.json()?;
    let template_of = |method: &str, path: &str| {
        let op = documented_operation(&doc, method, path)?;
        doc["paths"].as_object()?.iter().find_map(|(t, item)| {
            (item.get(method.to_ascii_lowercase())?["operationId"] == op["operationId"])
                .then(|| t.clone())
        })
    };
    let mut sent: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    let mut succeeded = std::collections::BTreeSet::new();
    for (method, path, id, status) in c.requests() {
        if let Some(template) = template_of(&method, &path) {
            if (200..300).contains(&status) {
                succeeded.insert((method.clone(), template.clone()));
            }
            sent.entry((method, template)).or_default().push(id);
        }
    }
    let mut missing = Vec::new();
    for (method, template) in routes {
        let function = template.split('/').nth(1).unwrap_or_default();
        let Some(ids) = sent.get(&(method.clone(), template.clone())) else {
            missing.push(format!("{method} {template} (never called)"));
            continue;
        };
        let mut covered = false;
        // The newest requests first, a few of them: a suite's later calls
        // are the ones that succeed most often.
        for id in ids.iter().rev().take(8) {
            let r = c.send_with(
                "GET",
                &format!("/{function}/audit/events?request_id={id}&limit=1"),
                &[("authorization", &format!("Bearer {bearer}"))],
                &[],
            )?;
            if r.status != 200 {
                return Err(format!(
                    "/{function}/audit/events: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            if !r.body.iter().all(u8::is_ascii_whitespace) {
                covered = true;
                break;
            }
        }
        if !covered {
            let how = if succeeded.contains(&(method.clone(), template.clone())) {
                "succeeded unaudited"
            } else {
                "never succeeded"
            };
            missing.push(format!("{method} {template} ({how})"));
        }
    }
    Ok(missing)
}

/// The OpenAPI document is the contract a portal team generates a client
/// from: every status the suite was answered on a documented operation of
/// the auth, mesh and ledger functions must be one that operation lists.
fn every_response_is_documented(c: &Client) -> Result<(), String> {
    let doc = c.get("/openapi.json")?.json()?;
    let problem_schema = doc["components"]["schemas"]["Problem"].clone();
    let mut outside = std::collections::BTreeSet::new();
    let mut invalid = std::collections::BTreeMap::new();
    let mut validators: std::collections::HashMap<String, jsonschema::Validator> =
        Default::default();
    for seen in c.seen() {
        let Seen {
            method,
            path,
            status,
            media_type,
            body,
        } = seen;
        let ours = ["/auth/", "/mesh/", "/ledger/", "/.well-known/", "/problems"]
            .iter()
            .any(|p| path.starts_with(p));
        if !ours {
            continue;
        }
        let Some(op) = documented_operation(&doc, &method, &path) else {
            // Unknown paths and methods: 404/405, not an operation's answer.
            continue;
        };
        let op_id = op["operationId"].as_str().unwrap_or(&path).to_owned();
        let Some(response) = op["responses"].get(status.to_string()) else {
            outside.insert(format!("{method} {op_id} -> {status}"));
            continue;
        };
        // The body against the schema the document gives for its media type.
        let Some(body) = body else { continue };
        if method == "HEAD" {
            continue;
        }
        let Some(schema) = response["content"].get(&media_type).map(|c| &c["schema"]) else {
            outside.insert(format!("{method} {op_id} -> {status} as {media_type}"));
            continue;
        };
        let key = format!("{op_id} {status} {media_type}");
        if !validators.contains_key(&key) {
            let mut schema = schema.clone();
            inline_problem_ref(&mut schema, &problem_schema);
            // Formats too (date-time, email, uri-reference): a generated
            // client may check them.
            let v = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| format!("{key}: the document's schema does not compile: {e}"))?;
            validators.insert(key.clone(), v);
        }
        if let Some(v) = validators.get(&key)
            && let Some(e) = v.iter_errors(&body).next()
        {
            invalid
                .entry(key)
                .or_insert_with(|| format!("{e} at {}", e.instance_path()));
        }
    }
    let mut problems = Vec::new();
    if !outside.is_empty() {
        problems.push(format!(
            "{} answers outside the document: {}",
            outside.len(),
            outside.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !invalid.is_empty() {
        problems.push(format!(
            "{} answers do not match their schema: {}",
            invalid.len(),
            invalid
                .into_iter()
                .map(|(k, e)| format!("{k}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Replaces the document's one reference (`#/components/schemas/Problem`)
/// with the schema it names, so each response schema compiles on its own.
fn inline_problem_ref(schema: &mut Json, problem: &Json) {
    match schema {
        Json::Object(map) => {
            if map.get("$ref").and_then(Json::as_str) == Some("#/components/schemas/Problem") {
                *schema = problem.clone();
                return;
            }
            for v in map.values_mut() {
                inline_problem_ref(v, problem);
            }
        }
        Json::Array(items) => {
            for v in items {
                inline_problem_ref(v, problem);
            }
        }
        _ => {}
    }
}

// A proxy's or caller's `x-request-id` follows the request as the prefix of
// its id (echoed, logged, in audit events; the rest is ours, so a repeated
// id never collides); one that is not safe to repeat is not used.
fn an_inbound_request_id_is_honoured_and_a_malformed_one_replaced(
    c: &Client,
) -> Result<(), String> {
    for f in FUNCTIONS {
        let path = format!("/{f}/health");
        let first = c.send_with("GET", &path, &[("x-request-id", "edge-test.42_a-b")], &[])?;
        let again = c.send_with("GET", &path, &[("x-request-id", "edge-test.42_a-b")], &[])?;
        let (Some(a), Some(b)) = (first.header("x-request-id"), again.header("x-request-id"))
        else {
            return Err(format!("{path}: no x-request-id"));
        };
        if !a.starts_with("edge-test.42_a-b.") || !b.starts_with("edge-test.42_a-b.") || a == b {
            return Err(format!("{path}: echoed {a:?} and {b:?}"));
        }
        let r = c.send_with("GET", &path, &[("x-request-id", "bad id<script>")], &[])?;
        match r.header("x-request-id") {
            Some(id) if id != "bad id<script>" && !id.is_empty() => {}
            other => return Err(format!("{path}: a malformed id came back as {other:?}")),
        }
    }
    Ok(())
}

fn health_is_pass_health_json(c: &Client) -> Result<(), String> {
    for f in FUNCTIONS {
        let r = c.get(&format!("/{f}/health"))?;
        if r.status != 200 || r.media_type() != "application/health+json" {
            return Err(format!("/{f}/health: {} {}", r.status, r.media_type()));
        }
        let v = r.json()?;
        if v["status"] != "pass" || v["serviceId"] != format!("edgecoder-{f}") {
            return Err(format!("/{f}/health body {v}"));
        }
    }
    Ok(())
}

fn head_health_has_no_body(c: &Client) -> Result<(), String> {
    let r = c.send("HEAD", "/auth/health", None, &[])?;
    if r.status != 200 {
        return Err(format!("HEAD /auth/health: {}", r.status));
    }
    // Over a raw socket, so a body sent after the headers would be seen.
    let raw = c.raw("HEAD /auth/health HTTP/1.1", &[], &[])?;
    if raw.status != 200 || !raw.body.is_empty() {
        return Err(format!(
            "raw HEAD: {} with {} body bytes",
            raw.status,
            raw.body.len()
        ));
    }
    Ok(())
}

fn ready_checks_sql_kv_and_migrations(c: &Client) -> Result<(), String> {
    for f in FUNCTIONS {
        let r = c.get(&format!("/{f}/health/ready"))?;
        let v = r.json()?;
        if r.status != 200 || v["status"] != "pass" || r.media_type() != "application/health+json" {
            return Err(format!("/{f}/health/ready: {} {v}", r.status));
        }
        for check in ["sql:roundtrip", "kv:roundtrip", "migrations:current"] {
            if v["checks"][check][0]["status"] != "pass" {
                return Err(format!(
                    "/{f}/health/ready: check {check} is {}",
                    v["checks"][check]
                ));
            }
        }
    }
    Ok(())
}

fn openapi_lists_every_route(c: &Client) -> Result<(), String> {
    let r = c.get("/openapi.json")?;
    if r.status != 200 || r.media_type() != "application/json" {
        return Err(format!("/openapi.json: {} {}", r.status, r.media_type()));
    }
    let v = r.json()?;
    if v["openapi"] != "3.1.0" {
        return Err(format!("openapi version {}", v["openapi"]));
    }
    for f in FUNCTIONS {
        for (path, method) in [
            (format!("/{f}/health"), "get"),
            (format!("/{f}/health/ready"), "get"),
            (format!("/{f}/_test/echo"), "post"),
            (format!("/{f}/_test/ports"), "post"),
        ] {
            if !v["paths"][&path][method].is_object() {
                return Err(format!("{method} {path} missing from /openapi.json"));
            }
        }
    }
    if !v["paths"]["/openapi.json"]["get"].is_object() {
        return Err("/openapi.json does not document itself".into());
    }
    Ok(())
}

fn dot_segments_resolve_like_urls(c: &Client) -> Result<(), String> {
    // Within one function: a traversal across functions is routed by the
    // platform before our code runs (Spin matches the raw path), so only
    // in-function segments resolve the same everywhere.
    for path in [
        "/auth/x/../health",
        "/ledger/./health",
        "/mesh/x/%2e%2e/health",
    ] {
        let r = c.raw(&format!("GET {path} HTTP/1.1"), &[], &[])?;
        if r.status != 200 {
            return Err(format!("GET {path}: {}", r.status));
        }
    }
    Ok(())
}

/// The codes the catalogue (`/problems.json`) lists.
fn catalogued_codes(c: &Client) -> Result<std::collections::BTreeSet<String>, String> {
    let r = c.get("/problems.json")?;
    if r.status != 200 || r.media_type() != "application/json" {
        return Err(format!("/problems.json: {} {}", r.status, r.media_type()));
    }
    Ok(r.json()?
        .as_array()
        .ok_or("/problems.json is not an array")?
        .iter()
        .filter_map(|t| t["code"].as_str().map(str::to_owned))
        .collect())
}

fn every_problem_code_is_catalogued(c: &Client) -> Result<(), String> {
    let listed = catalogued_codes(c)?;
    let seen = c.codes();
    // A suite run sees most codes; a filtered one at least a few.
    let missing: Vec<&String> = seen.iter().filter(|code| !listed.contains(*code)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "codes answered but not in the catalogue: {missing:?}"
        ))
    }
}

// A problem's `type` is a reference into the deployment's own catalogue
// page (RFC 9457 §3.1.1: a URI reference, resolved against the request's
// URL), which has a section for the code; the page runs and loads nothing.
fn a_problem_type_resolves_to_its_catalogue_entry(c: &Client) -> Result<(), String> {
    let r = c.get("/auth/nope")?;
    let problem = r.json()?;
    let type_ = problem["type"].as_str().ok_or("no type")?;
    let (page, fragment) = type_.split_once('#').ok_or("type has no fragment")?;
    if !page.starts_with('/') || fragment != "not_found" {
        return Err(format!("type {type_:?}"));
    }
    let r = c.get(page)?;
    if r.status != 200 || r.media_type() != "text/html" {
        return Err(format!("GET {page}: {} {}", r.status, r.media_type()));
    }
    let csp = r.header("content-security-policy").unwrap_or("");
    if !csp.contains("default-src 'none'") || !csp.contains("frame-ancestors 'none'") {
        return Err(format!("GET {page}: content-security-policy {csp:?}"));
    }
    let html = String::from_utf8_lossy(&r.body);
    for code in catalogued_codes(c)? {
        if !html.contains(&format!("<section id=\"{code}\">")) {
            return Err(format!("GET {page}: no section for {code}"));
        }
    }
    if !html.contains("<section id=\"not_found\">") {
        return Err(format!("GET {page}: no section for not_found"));
    }
    Ok(())
}

fn unknown_route_is_not_found(c: &Client) -> Result<(), String> {
    for path in ["/nope", "/auth/nope", "/mesh/health/extra", "/ledger/", "/"] {
        let r = c.get(path)?;
        expect_problem(&r, 404, "not_found").map_err(|e| format!("GET {path}: {e}"))?;
    }
    Ok(())
}

fn wrong_method_is_method_not_allowed(c: &Client) -> Result<(), String> {
    for f in FUNCTIONS {
        let r = c.send(
            "POST",
            &format!("/{f}/health"),
            Some("application/json"),
            b"{}",
        )?;
        expect_problem(&r, 405, "method_not_allowed")?;
        let allow = r.header("allow").unwrap_or("");
        if !allow.contains("GET") {
            return Err(format!("Allow header {allow:?} lacks GET"));
        }
        let r = c.send("DELETE", &format!("/{f}/_test/echo"), None, &[])?;
        expect_problem(&r, 405, "method_not_allowed")?;
        // An extension method must not be mistaken for GET.
        let r = c.raw(&format!("PROPFIND /{f}/health HTTP/1.1"), &[], &[])?;
        expect_problem(&r, 405, "method_not_allowed").map_err(|e| format!("PROPFIND: {e}"))?;
    }
    Ok(())
}

fn body_over_cap_is_payload_too_large(c: &Client) -> Result<(), String> {
    // Valid JSON, so nothing but its size can be the reason for refusal.
    let mut body = b"{\"message\":\"".to_vec();
    body.resize(BODY_CAP, b'a');
    body.extend_from_slice(b"\"}");
    for f in FUNCTIONS {
        // Over a raw socket: the server may answer from the declared length
        // and close before the upload ends, which an HTTP client reports as
        // a broken pipe instead of the answer.
        let length = body.len().to_string();
        let r = c.raw(
            &format!("POST /{f}/_test/echo HTTP/1.1"),
            &[
                ("content-type", "application/json"),
                ("content-length", &length),
            ],
            &body,
        )?;
        expect_problem(&r, 413, "payload_too_large").map_err(|e| format!("/{f}: {e}"))?;
        // Chunked, so no Content-Length announces the size: the cap must hold
        // while the body is read.
        let mut chunked = Vec::new();
        for part in body.chunks(16 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let r = c.raw(
            &format!("POST /{f}/_test/echo HTTP/1.1"),
            &[
                ("content-type", "application/json"),
                ("transfer-encoding", "chunked"),
            ],
            &chunked,
        )?;
        expect_problem(&r, 413, "payload_too_large").map_err(|e| format!("/{f} chunked: {e}"))?;
    }
    Ok(())
}

fn malformed_json_is_invalid_json(c: &Client) -> Result<(), String> {
    for body in [&b"{\"message\": "[..], b"{message: 1}", b"", b"\xff\xfe"] {
        let r = c.send("POST", "/auth/_test/echo", Some("application/json"), body)?;
        expect_problem(&r, 400, "invalid_json")?;
    }
    let r = c.send(
        "POST",
        "/ledger/_test/echo",
        Some("application/json"),
        b"[1,2",
    )?;
    expect_problem(&r, 400, "invalid_json")
}

fn non_json_content_type_is_unsupported_media_type(c: &Client) -> Result<(), String> {
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = c.send("POST", "/mesh/_test/echo", ct, b"{\"message\":\"hi\"}")?;
        expect_problem(&r, 415, "unsupported_media_type").map_err(|e| format!("{ct:?}: {e}"))?;
    }
    Ok(())
}

fn wrong_shape_is_invalid_request(c: &Client) -> Result<(), String> {
    for body in [
        &b"{\"message\": 12345}"[..],
        b"{}",
        b"{\"message\":\"hi\",\"extra\":true}",
        b"[]",
    ] {
        let r = c.send("POST", "/auth/_test/echo", Some("application/json"), body)?;
        expect_problem(&r, 400, "invalid_request")?;
        let detail = r.json()?["detail"].as_str().unwrap_or("").to_owned();
        if detail.contains("12345") || detail.contains("extra") {
            return Err(format!("detail echoes input: {detail}"));
        }
    }
    let long = format!("{{\"message\":\"{}\"}}", "x".repeat(2000));
    let r = c.send(
        "POST",
        "/auth/_test/echo",
        Some("application/json"),
        long.as_bytes(),
    )?;
    expect_problem(&r, 400, "invalid_request")
}

fn valid_json_round_trips(c: &Client) -> Result<(), String> {
    for f in FUNCTIONS {
        let r = c.send(
            "POST",
            &format!("/{f}/_test/echo"),
            Some("application/json; charset=utf-8"),
            "{\"message\":\"héllo <b>\"}".as_bytes(),
        )?;
        if r.status != 200
            || r.json()?["message"] != "héllo <b>"
            || r.media_type() != "application/json"
        {
            return Err(format!(
                "/{f}/_test/echo: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        if r.header("x-content-type-options") != Some("nosniff") {
            return Err("missing x-content-type-options: nosniff".into());
        }
    }
    Ok(())
}

fn request_ids_are_unique(c: &Client) -> Result<(), String> {
    let a = c.get("/auth/health")?;
    let b = c.get("/auth/health")?;
    let (a, b) = (a.header("x-request-id"), b.header("x-request-id"));
    if a == b {
        return Err(format!("request ids repeat: {a:?}"));
    }
    Ok(())
}

fn sql_and_kv_ports_keep_their_contract(c: &Client) -> Result<(), String> {
    for f in FUNCTIONS {
        let r = c.send("POST", &format!("/{f}/_test/ports"), None, &[])?;
        let v = r.json()?;
        if r.status != 200 || v["status"] != "pass" {
            return Err(format!("/{f}/_test/ports: {} {v}", r.status));
        }
        let checks = v["checks"].as_object().map_or(0, serde_json::Map::len);
        if checks < 9 {
            return Err(format!("/{f}/_test/ports ran only {checks} checks: {v}"));
        }
    }
    Ok(())
}

/// Parses an HTTP/1.1 response read to EOF (fixed length, chunked or
/// close-delimited body).
fn parse_raw(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[at..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(at..at + size)?);
            at += size + 2;
        }
        out
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// Access tokens, log checkpoints and the coordinator's identity each have
/// their own key: a key leaked from one job cannot sign for another. Each is
/// published where its verifiers look (JWKS, `/ledger/keys`,
/// `/mesh/identity`).
fn one_key_per_job_each_published_where_verifiers_look(c: &Client) -> Result<(), String> {
    let jwks = c.get("/.well-known/jwks.json")?.json()?;
    let access = jwks["keys"][0]["kid"].as_str().unwrap_or("").to_owned();
    let ledger = c.get("/ledger/keys")?.json()?;
    let checkpoint_spki = ledger["keys"][0]["public_key"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mesh = c.get("/mesh/identity")?.json()?;
    let coordinator = mesh["coordinator_key"]["key_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if access.is_empty() || checkpoint_spki.is_empty() || coordinator.is_empty() {
        return Err(format!("a key is not published: {jwks} {ledger} {mesh}"));
    }
    // Key ids of the same kind (blake3 of the point) for the checkpoint key.
    let spki = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &checkpoint_spki)
        .map_err(|e| e.to_string())?;
    let key = {
        use p256::pkcs8::DecodePublicKey;
        p256::ecdsa::VerifyingKey::from_public_key_der(&spki).map_err(|e| e.to_string())?
    };
    let checkpoint = edgecoder_proto::keys::key_id(&key);
    let mut ids = vec![access.clone(), checkpoint.clone(), coordinator.clone()];
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != 3 {
        return Err(format!(
            "keys are shared between jobs: access {access}, checkpoint {checkpoint}, coordinator {coordinator}"
        ));
    }
    Ok(())
}

fn jwks_publishes_the_signing_key(c: &Client) -> Result<(), String> {
    let r = c.get("/.well-known/jwks.json")?;
    if r.status != 200 || r.media_type() != "application/jwk-set+json" {
        return Err(format!("jwks: {} {}", r.status, r.media_type()));
    }
    if !r.header("cache-control").unwrap_or("").contains("max-age") {
        return Err("jwks is not cacheable".into());
    }
    let v = r.json()?;
    let keys = v["keys"].as_array().ok_or("no keys array")?;
    if keys.len() != 1 {
        return Err(format!("want exactly the signing key, got {}", keys.len()));
    }
    let k = &keys[0];
    let b64url_32 = |f: &str| {
        k[f].as_str()
            .is_some_and(|s| s.len() == 43 && !s.contains(['+', '/', '=']))
    };
    let kid_ok = k["kid"]
        .as_str()
        .is_some_and(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit()));
    if k["kty"] != "EC"
        || k["crv"] != "P-256"
        || k["alg"] != "ES256"
        || !b64url_32("x")
        || !b64url_32("y")
        || !kid_ok
    {
        return Err(format!("bad JWK {k}"));
    }
    if k.get("d").is_some() {
        return Err("the JWK Set leaks the private key".into());
    }
    Ok(())
}
