//! The route table every function builds, its dispatcher, and the OpenAPI 3.1
//! document generated from it.
//!
//! In scope: matching method and path (`{name}` parameters, via `matchit`), the
//! request-shape refusals that come before any handler (413, 404, 405), turning
//! handler [`Problem`]s into responses, the headers every response carries, and
//! OpenAPI generation. Because dispatch and documentation read the same table,
//! the document cannot list a route that is not served or miss one that is.
//! Out of scope: what handlers do, and how runtimes read requests off the wire.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use http::{HeaderValue, Method, header};
use serde_json::{Map, Value as Json, json};

use crate::{Error, Problem, Request, Response, Services};

/// What a handler returns.
pub type HandlerResult = Result<Response, Problem>;
/// A boxed, single-threaded handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult>>>;
/// A route handler.
pub type Handler = Rc<dyn Fn(Rc<Services>, Request) -> HandlerFuture>;

/// Wraps an `async fn(Rc<Services>, Request) -> HandlerResult` as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Rc<Services>, Request) -> Fut + 'static,
    Fut: Future<Output = HandlerResult> + 'static,
{
    Rc::new(move |s, r| Box::pin(f(s, r)))
}

/// Wraps an `async fn(Rc<Services>, Request) -> Result<Response, E>` whose
/// error becomes a problem (each function's `Error`) as a [`Handler`], so a
/// route table lists plain handler functions.
pub fn endpoint<F, Fut, E>(f: F) -> Handler
where
    F: Fn(Rc<Services>, Request) -> Fut + Copy + 'static,
    Fut: Future<Output = Result<Response, E>> + 'static,
    Problem: From<E>,
{
    handler(move |s, r| async move { f(s, r).await.map_err(Problem::from) })
}

/// The OpenAPI documentation of one function's routes, under its tag.
#[derive(Debug, Clone, Copy)]
pub struct Docs(pub &'static str);

impl Docs {
    /// An operation of this function.
    pub fn op(
        self,
        operation_id: &str,
        summary: &'static str,
        request_schema: Option<Json>,
        responses: Vec<ResponseDoc>,
    ) -> RouteDoc {
        RouteDoc {
            operation_id: operation_id.to_owned(),
            summary,
            tag: self.0,
            request_schema,
            responses,
        }
    }
}

/// A documented JSON success response.
pub fn ok(status: u16, what: &'static str) -> ResponseDoc {
    response_doc(status, what, Some(crate::http::JSON))
}

/// A documented problem+json refusal.
pub fn err(status: u16, what: &'static str) -> ResponseDoc {
    response_doc(status, what, Some(crate::error::PROBLEM_JSON))
}

/// A JSON object schema with `required` keys and `props`.
pub fn object(required: &[&str], props: Json) -> Option<Json> {
    Some(json!({"type": "object", "required": required, "properties": props}))
}

/// One documented response of an operation.
#[derive(Debug, Clone)]
pub struct ResponseDoc {
    /// Status code.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// Media type of the body, if any.
    pub media_type: Option<&'static str>,
    /// JSON Schema of the body, when more is known than "an object".
    pub schema: Option<Json>,
}

impl ResponseDoc {
    /// The same response with a body schema.
    #[must_use]
    pub fn with_schema(mut self, schema: Json) -> Self {
        self.schema = Some(schema);
        self
    }
}

/// OpenAPI facts about a route.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    /// Unique operation id.
    pub operation_id: String,
    /// One-line summary.
    pub summary: &'static str,
    /// Grouping tag (the function name).
    pub tag: &'static str,
    /// JSON Schema of a JSON request body, if the route takes one.
    pub request_schema: Option<Json>,
    /// Documented responses.
    pub responses: Vec<ResponseDoc>,
}

struct Route {
    method: Method,
    path: &'static str,
    handler: Handler,
    doc: RouteDoc,
}

/// A route table.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    // matchit pattern -> indices into `routes` of every method on that path.
    paths: Vec<(&'static str, Vec<usize>)>,
    // pattern -> index into `paths`.
    matcher: matchit::Router<usize>,
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Panics on a duplicate method and path, which is a
    /// programming error caught by every test that builds the router.
    #[must_use]
    pub fn route(
        mut self,
        method: Method,
        path: &'static str,
        handler: Handler,
        doc: RouteDoc,
    ) -> Self {
        let idx = self.routes.len();
        match self.paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, idxs)) => {
                assert!(
                    idxs.iter().all(|&i| self.routes[i].method != method),
                    "duplicate route {method} {path}"
                );
                idxs.push(idx);
            }
            None => {
                // Patterns are static strings from our own code; a conflict is a
                // bug that every test building the router catches.
                if let Err(e) = self.matcher.insert(path, self.paths.len()) {
                    panic!("route {path} conflicts: {e}");
                }
                self.paths.push((path, vec![idx]));
            }
        }
        self.routes.push(Route {
            method,
            path,
            handler,
            doc,
        });
        self
    }

    /// Adds every route of `other`.
    #[must_use]
    pub fn merge(mut self, other: Router) -> Self {
        for r in other.routes {
            self = self.route(r.method, r.path, r.handler, r.doc);
        }
        self
    }

    /// Every `(method, path)` served, in insertion order.
    pub fn endpoints(&self) -> Vec<(Method, &'static str)> {
        self.routes
            .iter()
            .map(|r| (r.method.clone(), r.path))
            .collect()
    }

    /// Dispatches a request: size cap, route match, method match, handler. Never
    /// panics on input and always returns a response; failures are problem+json.
    pub async fn handle(&self, services: Rc<Services>, mut req: Request) -> Response {
        let request_id = req.ctx.request_id.clone();
        let path = req.path.clone();
        // The deployment is served over https exactly when its issuer is;
        // then a request the platform saw arrive over plain http is never
        // acted on: a person's GET of a page is sent to the https address
        // (the issuer's, never the Host the client named), anything else
        // is refused, since its credentials already crossed the network in
        // the clear and a redirect would only invite a resend.
        let https = services.config.issuer.starts_with("https://");
        let plain_http = https && req.ctx.scheme.as_deref() == Some("http");
        let result = if plain_http {
            let wants_html = req
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"));
            if matches!(req.method, Method::GET | Method::HEAD) && wants_html {
                let mut to = format!("{}{}", services.config.issuer.trim_end_matches('/'), path);
                if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
                    to.push('?');
                    to.push_str(q);
                }
                let mut resp = crate::http_types::Response::new(Vec::new());
                *resp.status_mut() = crate::http_types::StatusCode::PERMANENT_REDIRECT;
                match HeaderValue::from_str(&to) {
                    Ok(v) => {
                        resp.headers_mut().insert(header::LOCATION, v);
                        Ok(resp)
                    }
                    Err(_) => Err(Error::HttpsRequired.into()),
                }
            } else {
                Err(Error::HttpsRequired.into())
            }
        } else {
            self.dispatch(services, &mut req).await
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(problem) => {
                let internal = problem.internal.clone();
                let mut resp = problem.into_response(Some(&path), Some(&request_id));
                if let Some(msg) = internal {
                    resp.extensions_mut().insert(InternalError(msg));
                }
                resp
            }
        };
        finish_headers(&mut resp, &request_id);
        if https {
            resp.headers_mut().insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            );
        }
        resp
    }

    async fn dispatch(&self, services: Rc<Services>, req: &mut Request) -> HandlerResult {
        let limit = services.config.max_body_bytes;
        if req.body.len() > limit || crate::http::declared_length_exceeds(&req.headers, limit) {
            return Err(Error::PayloadTooLarge { limit }.into());
        }
        let Ok(found) = self.matcher.at(&req.path) else {
            return Err(Error::NotFound.into());
        };
        let (_, idxs) = &self.paths[*found.value];
        req.params = found
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let wanted = if req.method == Method::HEAD {
            Method::GET
        } else {
            req.method.clone()
        };
        let Some(route) = idxs
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| r.method == wanted)
        else {
            let mut allow: Vec<Method> = idxs
                .iter()
                .map(|&i| self.routes[i].method.clone())
                .collect();
            if allow.contains(&Method::GET) {
                allow.push(Method::HEAD);
            }
            return Err(Error::MethodNotAllowed { allow }.into());
        };
        let is_head = req.method == Method::HEAD;
        let mut resp = (route.handler)(services, req.clone()).await?;
        if is_head {
            resp.body_mut().clear();
        }
        Ok(resp)
    }

    /// The route template `path` matches (`/mesh/tasks/{id}`), for metrics
    /// and logs that must not carry one series per id.
    pub fn template(&self, path: &str) -> Option<&'static str> {
        let found = self.matcher.at(path).ok()?;
        self.paths.get(*found.value).map(|(t, _)| *t)
    }

    /// The OpenAPI 3.1 document for this table.
    pub fn openapi(&self, title: &str, version: &str) -> Json {
        let mut paths = Map::new();
        for (path, idxs) in &self.paths {
            let mut item = Map::new();
            for &i in idxs {
                let r = &self.routes[i];
                item.insert(r.method.as_str().to_ascii_lowercase(), operation(r));
            }
            paths.insert((*path).to_owned(), Json::Object(item));
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": title,
                "version": version,
                "description": "EdgeCoder Edge: identity, mesh coordination and ledger functions. Errors are RFC 9457 problem details with a stable `code`."
            },
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "An ES256 access token from /auth/login (or refresh, OAuth, passkeys); what it may do is decided from current roles and sessions"
                    },
                    "refreshCookie": {
                        "type": "apiKey",
                        "in": "cookie",
                        "name": "edgecoder_refresh",
                        "description": "The browser's refresh token (HttpOnly, SameSite=Strict, Path=/auth/token); device clients send theirs in the body"
                    },
                    "httpMessageSignature": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "Signature",
                        "description": "An RFC 9421 HTTP message signature (Signature and Signature-Input, covering @method, @target-uri, content-digest (RFC 9530), created, nonce and keyid) by a node's or a peer coordinator's P-256 key"
                    },
                    "serviceCredential": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "EdgeCoder service token",
                        "description": "A short-lived token one function signs with its own service_key for a call to another (bound to the method, path and body)"
                    },
                    "monitorCredential": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "emt_ monitor token",
                        "description": "A read-only credential for the audit export (edgecoder monitor-token; only its digest is configured)"
                    }
                },
                "schemas": {
                    "Problem": {
                        "type": "object",
                        "required": ["type", "title", "status", "code"],
                        "properties": {
                            "type": {"type": "string", "format": "uri-reference", "description": "/problems#<code>: the code's entry in this deployment's catalogue page (a URI reference, RFC 9457 §3.1.1)"},
                            "title": {"type": "string"},
                            "status": {"type": "integer"},
                            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                            "detail": {"type": "string"},
                            "instance": {"type": "string"},
                            "request_id": {"type": "string"}
                        }
                    }
                }
            }
        })
    }
}

/// Query parameters an operation's summary documents as `?name=&other=`.
fn query_params(summary: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = summary;
    while let Some(i) = rest.find('?') {
        rest = &rest[i + 1..];
        loop {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() || !rest[name.len()..].starts_with('=') {
                break;
            }
            if !out.contains(&name) {
                out.push(name.clone());
            }
            rest = &rest[name.len() + 1..];
            // `?a=&b=`: the next name follows an `&`.
            match rest.strip_prefix('&') {
                Some(r) => rest = r,
                None => break,
            }
        }
    }
    out
}

/// Who may call an operation, as OpenAPI security requirements, from what
/// the operation documents it answers when the caller is not let in: a
/// signed-request refusal (`signature_invalid`) means an RFC 9421 signature
/// (a node or a peer coordinator), `invalid_token` or another 401 an access
/// token; the audit export also takes a monitor credential, the ledger's
/// append a function's service credential, the refresh route its cookie.
/// No 401 documented: public.
fn security(r: &Route) -> Json {
    let four01: Vec<&str> = r
        .doc
        .responses
        .iter()
        .filter(|d| d.status == 401)
        .map(|d| d.description)
        .collect();
    if r.path.ends_with("/audit/events") {
        return json!([{"monitorCredential": []}, {"bearerAuth": []}]);
    }
    if r.path == "/auth/token/refresh" {
        return json!([{"refreshCookie": []}, {}]);
    }
    if four01.iter().any(|d| d.contains("signature_invalid")) {
        return json!([{"httpMessageSignature": []}]);
    }
    if r.path == "/ledger/entries" && r.method == Method::POST {
        return json!([{"serviceCredential": []}, {"bearerAuth": []}]);
    }
    if four01.is_empty() {
        json!([])
    } else {
        json!([{"bearerAuth": []}])
    }
}

/// Routes whose success sets (or clears) the refresh cookie.
const SETS_COOKIE: [&str; 5] = [
    "/auth/login",
    "/auth/token/refresh",
    "/auth/logout",
    "/auth/oauth/{provider}/callback",
    "/auth/passkeys/login/verify",
];

fn operation(r: &Route) -> Json {
    let mut responses = Map::new();
    for d in &r.doc.responses {
        let mut resp = Map::new();
        resp.insert("description".into(), json!(d.description));
        let mut headers = Map::new();
        headers.insert(
            "x-request-id".into(),
            json!({"description": "The request's id (the caller's, when it sent a valid one), also in audit events and logs", "schema": {"type": "string"}}),
        );
        if d.status == 429 || d.status == 503 {
            headers.insert(
                "Retry-After".into(),
                json!({"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}),
            );
        }
        if (200..300).contains(&d.status) && SETS_COOKIE.contains(&r.path) {
            headers.insert(
                "Set-Cookie".into(),
                json!({"description": "The refresh token's HttpOnly, SameSite=Strict cookie (browser clients)", "schema": {"type": "string"}}),
            );
        }
        resp.insert("headers".into(), Json::Object(headers));
        if let Some(mt) = d.media_type {
            let schema = if mt == crate::error::PROBLEM_JSON {
                json!({"$ref": "#/components/schemas/Problem"})
            } else {
                d.schema
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object"}))
            };
            resp.insert("content".into(), json!({ mt: {"schema": schema} }));
        }
        responses.insert(d.status.to_string(), Json::Object(resp));
    }
    // What the router itself answers on any route (so a client generated
    // from the document expects it): a body over the cap, a request over
    // plain http to an https deployment, a deployment missing a setting; on
    // routes with a JSON body, a body that is not JSON of the right shape.
    let body = r.doc.request_schema.is_some();
    for (status, description, applies) in [
        (
            "400",
            "invalid_json / invalid_request: the body is not the JSON this route takes",
            body,
        ),
        (
            "403",
            "https_required: an https deployment acts on nothing sent over plain http",
            true,
        ),
        ("413", "payload_too_large: body over the cap", true),
        (
            "415",
            "unsupported_media_type: the body is not application/json",
            body,
        ),
        (
            "503",
            "service_misconfigured: the deployment lacks a setting this route needs",
            true,
        ),
    ] {
        if applies && !responses.contains_key(status) {
            responses.insert(
                status.into(),
                json!({
                    "description": description,
                    "content": {crate::error::PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }),
            );
        }
    }
    let mut op = Map::new();
    op.insert("operationId".into(), json!(r.doc.operation_id));
    op.insert("summary".into(), json!(r.doc.summary));
    op.insert("tags".into(), json!([r.doc.tag]));
    let mut params: Vec<Json> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(
        query_params(r.doc.summary)
            .into_iter()
            .map(|name| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}})),
    );
    op.insert("security".into(), security(r));
    if !params.is_empty() {
        op.insert("parameters".into(), Json::Array(params));
    }
    if let Some(schema) = &r.doc.request_schema {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
    }
    op.insert("responses".into(), Json::Object(responses));
    Json::Object(op)
}

/// A problem response outside a route (e.g. a body the runtime refused while
/// reading), with the same headers as routed responses.
pub fn problem_response(err: Error, path: &str, request_id: &str) -> Response {
    let mut resp = Problem::from(err).into_response(Some(path), Some(request_id));
    finish_headers(&mut resp, request_id);
    resp
}

/// Why a response is a 5xx, for the runtime's log only (never sent). Found in
/// the response's extensions.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

/// Headers on every response: the request id, no MIME sniffing, and no caching
/// unless a handler chose otherwise (API answers are per-caller).
fn finish_headers(resp: &mut Response, request_id: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // Links we email carry one-time tokens in the query; never leak them onward.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A documented response shorthand.
pub fn response_doc(
    status: u16,
    description: &'static str,
    media_type: Option<&'static str>,
) -> ResponseDoc {
    ResponseDoc {
        status,
        description,
        media_type,
        schema: None,
    }
}

/// The problem+json responses every route can produce, for documentation.
pub fn common_problem_docs() -> Vec<ResponseDoc> {
    let p = Some(crate::error::PROBLEM_JSON);
    vec![
        response_doc(404, "not_found: no such route", p),
        response_doc(
            405,
            "method_not_allowed: the path exists for other methods",
            p,
        ),
        response_doc(413, "payload_too_large: body over the cap", p),
    ]
}
