//! Composition of the functions into what a runtime serves.
//!
//! In scope: choosing which functions a deployment serves ([`Selection`]),
//! loading every setting a deployment unit needs ([`Loaded`]: the kernel's
//! [`Config`] and each served function's own settings, failing with the
//! setting's name), assembling the [`Services`] handlers receive from the
//! ports a runtime provides ([`Loaded::services`]: which cross-function
//! clients are in-process and which go over HTTP), merging the functions'
//! routers, `GET /openapi.json`, the OpenAPI 3.1 document of every route
//! of every function, generated from the same route tables that dispatch,
//! and the problem catalogue (`GET /problems`, `GET /problems.json`: every
//! function's error enums, see `edgecoder_kernel::problems`), which every
//! problem's `type` points into. Unknown paths fall through to the kernel's
//! `not_found` problem.
//!
//! Out of scope: platform bindings (the runtimes implement the ports) and any
//! logic of the functions themselves.
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `ledger_url` | var | — | Spin only: where the other components reach the `ledger` component over HTTP (e.g. `https://edge.example.com`) |
//! | `auth_url` | var | — | Spin only: where the `mesh` and `ledger` components reach the `auth` component (access-token callers with their current roles, enrollment redemption) |
//!
//! Deployments: the native runtime and the Worker serve [`Selection::All`] on one
//! origin. On Spin each function is its own component ([`Selection::Only`]) with
//! only its own stores, and a storage-less `gateway` component
//! ([`Selection::Gateway`]) answers `/openapi.json`, `/problems` and every
//! other path.

use std::rc::Rc;

use edgecoder_kernel::config::Vars;
use edgecoder_kernel::http::{JSON, json_response};
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::problems::{self, ProblemType};
use edgecoder_kernel::router::{RouteDoc, handler, response_doc};
use edgecoder_kernel::{
    Clock, Config, ConfigSource, Defer, Error, FunctionSettings, IdentityClient, Kv, LedgerClient,
    Outbound, Rng, Router, Services, SignatureCheck, Sql,
};
use serde_json::Value as Json;

/// One of the functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Portal identity.
    Auth,
    /// Coordinator mesh.
    Mesh,
    /// Transparency log and credits.
    Ledger,
}

impl Function {
    /// All functions, in documentation order.
    pub const ALL: [Function; 3] = [Function::Auth, Function::Mesh, Function::Ledger];

    /// The function's name, also its path prefix and store names.
    pub fn name(self) -> &'static str {
        match self {
            Function::Auth => edgecoder_auth::NAME,
            Function::Mesh => edgecoder_mesh::NAME,
            Function::Ledger => edgecoder_ledger::NAME,
        }
    }

    /// Parses a function name.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    fn router(self, config: &Config) -> Router {
        match self {
            Function::Auth => edgecoder_auth::router(config),
            Function::Mesh => edgecoder_mesh::router(config),
            Function::Ledger => edgecoder_ledger::router(config),
        }
    }
}

/// What one deployment unit serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Every function plus `/openapi.json` (native, Workers).
    All,
    /// One function's routes only (a Spin function component).
    Only(Function),
    /// `/openapi.json` and the not-found fallback (the Spin gateway component).
    Gateway,
}

impl Selection {
    /// Parses `all`, `gateway` or a function name.
    pub fn from_name(name: &str) -> Result<Selection, Error> {
        match name {
            "all" => Ok(Selection::All),
            "gateway" => Ok(Selection::Gateway),
            other => Function::from_name(other)
                .map(Selection::Only)
                .ok_or_else(|| {
                    Error::Config("function must be all, gateway, auth, mesh or ledger".into())
                }),
        }
    }

    /// Whether this unit needs SQL and KV (the gateway does not).
    pub fn uses_storage(self) -> bool {
        !matches!(self, Selection::Gateway)
    }
}

/// What a runtime provides: its implementations of the kernel's ports.
pub struct Ports {
    /// The unit's relational store (a Spin component's own database).
    pub sql: Rc<dyn Sql>,
    /// The unit's key-value store.
    pub kv: Rc<dyn Kv>,
    /// Wall clock.
    pub clock: Rc<dyn Clock>,
    /// Randomness.
    pub rng: Rc<dyn Rng>,
    /// Outbound HTTP.
    pub outbound: Rc<dyn Outbound>,
    /// Work after the response.
    pub defer: Rc<dyn Defer>,
    /// ECDSA P-256 checks (WebCrypto on Workers, `p256` elsewhere).
    pub signatures: Rc<dyn SignatureCheck>,
}

/// Every setting a deployment unit needs, loaded and validated once.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What every function shares.
    pub config: Config,
    /// The served functions' own settings.
    pub settings: FunctionSettings,
    /// Where the ledger function is reached over HTTP, when it is another
    /// component.
    pub ledger_url: Option<String>,
    /// Where the auth function is reached over HTTP, when it is another
    /// component.
    pub auth_url: Option<String>,
    /// Weakened settings in force, for the runtime to log at start.
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Loads the kernel's settings and those of every function `selection`
    /// serves. In production mode a missing or invalid required setting is
    /// an error naming it: the unit must refuse to serve rather than run
    /// weakened.
    pub fn load(src: &dyn ConfigSource, selection: Selection) -> Result<Loaded, Error> {
        let config = Config::load(src)?;
        let mut settings = FunctionSettings::default();
        let mut warnings = config.warnings.clone();
        let serves =
            |f: Function| matches!(selection, Selection::All) || selection == Selection::Only(f);
        // Every served function's settings are checked before any error is
        // returned, so one start names every missing secret, not the first.
        let mut problems = Vec::new();
        let mut note = |e: Error| problems.push(e.to_string());
        if serves(Function::Auth) {
            match edgecoder_auth::Settings::load(src, &config) {
                Ok(auth) => {
                    warnings.extend(auth.warnings.iter().cloned());
                    settings = settings.with(auth);
                }
                Err(e) => note(e),
            }
        }
        if serves(Function::Mesh) {
            match edgecoder_mesh::Settings::load(src, &config) {
                Ok(mesh) => settings = settings.with(mesh),
                Err(e) => note(e),
            }
        }
        if serves(Function::Ledger) {
            match edgecoder_ledger::Settings::load(src, &config) {
                Ok(ledger) => settings = settings.with(ledger),
                Err(e) => note(e),
            }
        }
        // A component that owns one function reaches the others over HTTP:
        // in production, what it needs for that must be there at start.
        let vars = Vars(src);
        let ledger_url = vars.service_url("ledger_url")?;
        let auth_url = vars.service_url("auth_url")?;
        if config.mode == edgecoder_kernel::Mode::Production
            && let Selection::Only(f) = selection
        {
            let writes_log = matches!(f, Function::Auth | Function::Mesh);
            let asks_auth = matches!(f, Function::Mesh | Function::Ledger);
            if writes_log && ledger_url.is_none() {
                problems.push("production mode requires ledger_url for this component".into());
            }
            if writes_log && config.service_key.is_none() {
                problems.push(
                    "production mode requires the service_key secret for this component".into(),
                );
            }
            let callee = matches!(f, Function::Auth | Function::Ledger);
            if callee && config.service_keys.is_empty() {
                problems.push(
                    "production mode requires service_keys (the callers' public keys) for this component"
                        .into(),
                );
            }
            if asks_auth && auth_url.is_none() {
                problems.push("production mode requires auth_url for this component".into());
            }
        }
        if !problems.is_empty() {
            return Err(Error::Config(
                problems
                    .iter()
                    .map(|p| p.trim_start_matches("configuration error: "))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        Ok(Loaded {
            config,
            settings,
            ledger_url,
            auth_url,
            warnings,
        })
    }

    /// The services `selection`'s handlers receive over `ports`. Functions
    /// that share the unit's database reach each other in-process (native,
    /// the Worker: [`Selection::All`]); a Spin component that owns one
    /// function reaches the others over HTTP with tokens signed by its own
    /// `service_key` (`ledger_url`, `auth_url`), and a client that cannot be built answers
    /// every call with a configuration error naming what to set.
    ///
    /// `request` is the request the services answer, when there is one: the
    /// clients that call another function over HTTP then send its request id
    /// and trace along ([`edgecoder_kernel::context::Propagating`]).
    pub fn services(
        &self,
        ports: Ports,
        selection: Selection,
        request: Option<&edgecoder_kernel::RequestContext>,
    ) -> Services {
        let owns =
            |f: Function| matches!(selection, Selection::All) || selection == Selection::Only(f);
        // The name this component signs its calls as: the one function it
        // serves (a unit serving all calls in-process and signs nothing).
        let caller = match selection {
            Selection::Only(Function::Auth) => Some(edgecoder_auth::NAME),
            Selection::Only(Function::Mesh) => Some(edgecoder_mesh::NAME),
            _ => None,
        };
        let service = caller.zip(self.config.service_key.clone());
        let between_functions: Rc<dyn edgecoder_kernel::Outbound> = match request {
            Some(ctx) => Rc::new(edgecoder_kernel::context::Propagating::new(
                ports.outbound.clone(),
                ctx,
            )),
            None => ports.outbound.clone(),
        };
        let ledger: Rc<dyn LedgerClient> = match (&self.ledger_url, &service) {
            _ if owns(Function::Ledger) => Rc::new(edgecoder_ledger::client::InProcess {
                sql: ports.sql.clone(),
                clock: ports.clock.clone(),
                rng: ports.rng.clone(),
            }),
            (Some(url), Some((caller, key))) => Rc::new(edgecoder_ledger::client::Http {
                base: url.clone(),
                caller,
                key: key.clone(),
                clock: ports.clock.clone(),
                rng: ports.rng.clone(),
                outbound: between_functions.clone(),
            }),
            _ => Rc::new(edgecoder_ledger::client::Unavailable(
                "set ledger_url and this component's service_key so it can reach the ledger",
            )),
        };
        let identity: Rc<dyn IdentityClient> = match &self.auth_url {
            _ if owns(Function::Auth) => Rc::new(edgecoder_auth::client::InProcess {
                sql: ports.sql.clone(),
                clock: ports.clock.clone(),
                config: self.config.clone(),
            }),
            Some(url) => Rc::new(edgecoder_auth::client::Http {
                base: url.clone(),
                service: service.clone(),
                clock: ports.clock.clone(),
                rng: ports.rng.clone(),
                outbound: between_functions,
            }),
            None => Rc::new(edgecoder_auth::client::Unavailable(
                "set auth_url so this component can reach the auth function",
            )),
        };
        Services {
            sql: ports.sql,
            kv: ports.kv,
            clock: ports.clock,
            rng: ports.rng,
            outbound: ports.outbound,
            defer: ports.defer,
            signatures: ports.signatures,
            ledger,
            identity,
            config: self.config.clone(),
            settings: self.settings.clone(),
        }
    }
}

const OPENAPI_PATH: &str = "/openapi.json";

fn openapi_route(router: Router, doc: Rc<Json>) -> Router {
    router.route(
        Method::GET,
        OPENAPI_PATH,
        handler(move |_s, _r| {
            let doc = Rc::clone(&doc);
            async move { Ok(json_response(StatusCode::OK, JSON, doc.as_ref())) }
        }),
        RouteDoc {
            operation_id: "openapi".into(),
            summary: "This OpenAPI 3.1 document",
            tag: "meta",
            request_schema: None,
            responses: vec![response_doc(200, "the document", Some(JSON))],
        },
    )
}

/// Every problem code of every function, merged by code.
pub fn problem_catalogue() -> Vec<ProblemType> {
    let mut entries = problems::kernel();
    entries.extend(edgecoder_auth::problem_types());
    entries.extend(edgecoder_mesh::problem_types());
    entries.extend(edgecoder_ledger::problem_types());
    problems::merge(entries)
}

/// A page that runs nothing and loads nothing.
const CATALOGUE_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// `GET /problems` (the page every problem's `type` points into) and `GET
/// /problems.json` (the same entries, for a client mapping codes to
/// sentences).
fn catalogue_routes(router: Router) -> Router {
    let types = Rc::new(problem_catalogue());
    let page = Rc::new(problems::render_html(&types));
    router
        .route(
            Method::GET,
            problems::CATALOGUE_PATH,
            handler(move |_s, _r| {
                let page = Rc::clone(&page);
                async move {
                    let mut resp = edgecoder_kernel::http_types::Response::new(
                        page.as_bytes().to_vec(),
                    );
                    let h = resp.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    h.insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(CATALOGUE_CSP),
                    );
                    h.insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=3600"),
                    );
                    Ok(resp)
                }
            }),
            RouteDoc {
                operation_id: "problem_catalogue".into(),
                summary: "The problem codes: one HTML section per code, whose id is the fragment of every problem's `type`",
                tag: "meta",
                request_schema: None,
                responses: vec![response_doc(200, "the page", Some("text/html"))],
            },
        )
        .route(
            Method::GET,
            PROBLEMS_JSON_PATH,
            handler(move |_s, _r| {
                let types = Rc::clone(&types);
                async move { Ok(json_response(StatusCode::OK, JSON, types.as_ref())) }
            }),
            RouteDoc {
                operation_id: "problem_catalogue_json".into(),
                summary: "The problem codes as JSON: code, type, and each meaning's status, title, description and function",
                tag: "meta",
                request_schema: None,
                responses: vec![
                    response_doc(200, "the catalogue", Some(JSON)).with_schema(serde_json::json!({
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["code", "type", "meanings"],
                            "properties": {
                                "code": {"type": "string"},
                                "type": {"type": "string", "format": "uri-reference"},
                                "meanings": {"type": "array", "items": {
                                    "type": "object",
                                    "required": ["status", "title", "description", "function"],
                                    "properties": {
                                        "status": {"type": "integer"},
                                        "title": {"type": "string"},
                                        "description": {"type": "string"},
                                        "function": {"type": "string"},
                                    },
                                }},
                            },
                        },
                    })),
                ],
            },
        )
}

const PROBLEMS_JSON_PATH: &str = "/problems.json";

/// What the gateway itself serves: the OpenAPI document and the problem
/// catalogue.
fn meta_routes(router: Router, doc: Rc<Json>) -> Router {
    catalogue_routes(openapi_route(router, doc))
}

fn all_functions(config: &Config) -> Router {
    Function::ALL
        .into_iter()
        .fold(Router::new(), |r, f| r.merge(f.router(config)))
}

/// The OpenAPI document of the whole app under `config`.
pub fn openapi(config: &Config) -> Json {
    // Document the openapi route itself too: build the table once with a
    // placeholder document, then describe that table.
    let mut doc = meta_routes(all_functions(config), Rc::new(Json::Null))
        .openapi("EdgeCoder Edge", env!("CARGO_PKG_VERSION"));
    // The deployment's own origin: a generated client's base URL.
    doc["servers"] = serde_json::json!([{
        "url": config.issuer.trim_end_matches('/'),
        "description": "this deployment (its issuer)"
    }]);
    doc
}

/// How often the scheduled work ([`scheduled`]) should run, if the services
/// hold a function that has any (the mesh's federation pulls).
pub fn schedule_interval(services: &Services) -> Option<std::time::Duration> {
    let mesh = services.settings.get::<edgecoder_mesh::Settings>()?;
    let secs = u64::try_from(mesh.federation_interval_secs).ok()?;
    Some(std::time::Duration::from_secs(secs.max(1)))
}

/// The scheduled work of every function the services hold: a native
/// timer, a Workers cron trigger and Spin's `POST /mesh/federation/tick`
/// all end here. Failures are per peer and recorded there.
pub async fn scheduled(services: &Services) -> Json {
    if services
        .settings
        .get::<edgecoder_mesh::Settings>()
        .is_none()
    {
        return Json::Null;
    }
    match edgecoder_mesh::federation::tick(services).await {
        Ok(v) => v,
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

/// The router for a deployment unit.
pub fn router(selection: Selection, config: &Config) -> Router {
    match selection {
        Selection::All => meta_routes(all_functions(config), Rc::new(openapi(config))),
        Selection::Only(f) => f.router(config),
        Selection::Gateway => meta_routes(Router::new(), Rc::new(openapi(config))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecoder_kernel::ConfigSource;

    #[test]
    fn the_problem_catalogue_lists_every_function_s_codes_once_with_a_description() {
        let types = problem_catalogue();
        let codes: Vec<&str> = types.iter().map(|t| t.code).collect();
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]),
            "one entry per code, sorted: {codes:?}"
        );
        for t in &types {
            assert!(
                t.code.starts_with(|c: char| c.is_ascii_lowercase())
                    && t.code
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not snake_case",
                t.code
            );
            assert_eq!(t.type_, format!("/problems#{}", t.code));
            assert!(!t.meanings.is_empty());
            for m in &t.meanings {
                assert!(
                    !m.description.is_empty() && !m.title.is_empty(),
                    "{}: {m:?}",
                    t.code
                );
                assert!((400..600).contains(&m.status), "{}: {m:?}", t.code);
            }
        }
        // One from each function, from wrapped refusal enums, and the
        // runtime's own.
        for code in [
            "not_found",
            "weak_password",
            "passkey_origin_invalid",
            "signature_expired",
            "content_digest_mismatch",
            "source_not_allowed",
            "envelope_signature_invalid",
            "history_rewritten",
            "server_busy",
        ] {
            assert!(codes.contains(&code), "{code} missing from {codes:?}");
        }
        // Unreachable through a request signature: not listed as one.
        for (code, status) in [
            ("manifest_expired", 422),
            ("invalid_node_id", 400),
            ("invalid_public_key", 400),
        ] {
            let t = types
                .iter()
                .find(|t| t.code == code)
                .unwrap_or_else(|| panic!("{code} missing"));
            assert!(
                t.meanings.iter().all(|m| m.status == status),
                "{code}: {:?}",
                t.meanings
            );
        }
        // A server-side failure does not describe its internal causes.
        let internal = types
            .iter()
            .find(|t| t.code == "internal_error")
            .expect("internal_error");
        assert!(
            internal
                .meanings
                .iter()
                .all(|m| !m.description.contains("argon2") && !m.description.contains("KV key")),
            "{:?}",
            internal.meanings
        );
        let page = problems::render_html(&types);
        for code in &codes {
            assert!(page.contains(&format!("<section id=\"{code}\">")), "{code}");
        }
    }

    #[test]
    fn the_ledger_accepts_exactly_the_types_the_other_functions_append() {
        let mut written = vec![
            (
                edgecoder_auth::NAME,
                edgecoder_auth::api::admin::ROLE_GRANT_V1,
            ),
            (
                edgecoder_auth::NAME,
                edgecoder_auth::api::admin::ROLE_REVOKE_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::nodes::NODE_APPROVAL_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::tasks::TASK_COMPLETION_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::blacklist::BLACKLIST_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::models::MODEL_POLICY_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::models::MODEL_RELEASE_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::models::MODEL_ROLLOUT_V1,
            ),
            (edgecoder_mesh::NAME, edgecoder_mesh::peers::PEER_V1),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::economy::CREDIT_TRANSFER_V1,
            ),
            (
                edgecoder_mesh::NAME,
                edgecoder_mesh::economy::ISSUANCE_EPOCH_V1,
            ),
        ];
        written.sort_unstable();
        let mut accepted = edgecoder_ledger::api::APPENDED_BY.to_vec();
        accepted.sort_unstable();
        assert_eq!(written, accepted);
        assert!(
            written
                .iter()
                .all(|(_, t)| edgecoder_ledger::api::reserved_type(t))
        );
    }

    struct Dev;
    impl ConfigSource for Dev {
        fn var(&self, name: &str) -> Option<String> {
            (name == "mode").then(|| "development".into())
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    struct DevWithTestRoutes;
    impl ConfigSource for DevWithTestRoutes {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "mode" => Some("development".into()),
                "insecure_test_routes" => Some("true".into()),
                _ => None,
            }
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn every_function_route_is_under_its_prefix() {
        let cfg = Config::load(&DevWithTestRoutes).expect("config");
        for f in Function::ALL {
            for (_, path) in router(Selection::Only(f), &cfg).endpoints() {
                let own = path.starts_with(&format!("/{}/", f.name()));
                let issuer_metadata = f == Function::Auth && path.starts_with("/.well-known/");
                assert!(own || issuer_metadata, "{path}");
            }
        }
    }

    /// Built without `danger-test-routes` (as `cargo test` and every release
    /// artefact are), the setting mounts nothing; built with it, the setting
    /// mounts the echo and ports routes.
    #[test]
    fn test_routes_only_when_built_and_enabled() {
        let off = router(Selection::All, &Config::load(&Dev).expect("config")).endpoints();
        let on = router(
            Selection::All,
            &Config::load(&DevWithTestRoutes).expect("config"),
        )
        .endpoints();
        for f in Function::ALL {
            let name = f.name();
            for path in [
                format!("/{name}/_test/echo"),
                format!("/{name}/_test/ports"),
            ] {
                assert!(
                    !off.iter().any(|(_, p)| *p == path),
                    "{path} mounted by default"
                );
                let mounted = on.iter().any(|(m, p)| *p == path && *m == Method::POST);
                assert_eq!(
                    mounted,
                    cfg!(feature = "danger-test-routes"),
                    "{path} mounted: {mounted}"
                );
            }
            for path in [format!("/{name}/health"), format!("/{name}/health/ready")] {
                assert!(
                    off.iter().any(|(m, p)| *p == path && *m == Method::GET),
                    "{path} missing"
                );
            }
        }
    }

    #[test]
    fn openapi_lists_every_served_route() {
        let cfg = Config::load(&Dev).expect("config");
        let doc = openapi(&cfg);
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path) in router(Selection::All, &cfg).endpoints() {
            let op = &doc["paths"][path][method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path} missing from openapi");
            assert!(op["operationId"].is_string());
        }
    }

    // What a generated client needs beyond paths: where to send requests,
    // which credential each operation takes, its query parameters and the
    // headers that come back.
    #[test]
    fn openapi_declares_servers_security_parameters_and_headers() {
        let cfg = Config::load(&Dev).expect("config");
        let doc = openapi(&cfg);
        assert_eq!(doc["servers"][0]["url"], cfg.issuer.trim_end_matches('/'));
        for scheme in [
            "bearerAuth",
            "refreshCookie",
            "httpMessageSignature",
            "serviceCredential",
            "monitorCredential",
        ] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        let schemes = |v: &Json| -> Vec<String> {
            v["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_object()?.keys().next().cloned())
                .collect()
        };
        assert_eq!(
            schemes(&op("/mesh/tasks/pull", "post")),
            ["httpMessageSignature"]
        );
        assert_eq!(schemes(&op("/auth/me", "get")), ["bearerAuth"]);
        assert_eq!(
            schemes(&op("/auth/audit/events", "get")),
            ["monitorCredential", "bearerAuth"]
        );
        assert!(schemes(&op("/ledger/checkpoint", "get")).is_empty());
        let params: Vec<String> = op("/ledger/entries", "get")["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(params, ["start", "end"]);
        let login = op("/auth/login", "post");
        assert!(login["responses"]["200"]["headers"]["Set-Cookie"].is_object());
        assert!(login["responses"]["200"]["headers"]["x-request-id"].is_object());
        assert!(login["responses"]["429"]["headers"]["Retry-After"].is_object());
    }

    #[test]
    fn spin_units_partition_the_routes() {
        let cfg = Config::load(&Dev).expect("config");
        let mut parts: Vec<_> = Function::ALL
            .into_iter()
            .flat_map(|f| router(Selection::Only(f), &cfg).endpoints())
            .chain(router(Selection::Gateway, &cfg).endpoints())
            .collect();
        let mut all = router(Selection::All, &cfg).endpoints();
        parts.sort_by_key(|(m, p)| (p.to_string(), m.to_string()));
        all.sort_by_key(|(m, p)| (p.to_string(), m.to_string()));
        assert_eq!(parts, all);
    }

    #[test]
    fn selection_names() {
        assert_eq!(
            Selection::from_name("mesh").ok(),
            Some(Selection::Only(Function::Mesh))
        );
        assert!(Selection::from_name("../etc").is_err());
        assert!(!Selection::Gateway.uses_storage());
    }
}
