//! The persisted audit-event sink (`audit_events` table).
//!
//! In scope: recording an event, optionally inside the same atomic batch as the
//! state change it describes ([`AuditEvent::statement`]), and reading events
//! back newest first. Out of scope: the transparency log (the ledger function),
//! which additionally records the trust-changing subset of these actions.
//!
//! Events carry who (`actor`), what (`action`, `target`), how it ended
//! (`outcome`), and where from (`request_id`, `client_ip`). `details` is JSON
//! written by our code; it must never contain secrets or raw credentials.

use serde::Serialize;
use serde_json::Value as Json;

use crate::{Error, RequestContext, Services, Sql, Statement, Value};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was attempted and failed.
    Failure,
    /// Policy refused it.
    Denied,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who acted, e.g. `user:<id>`, `node:<id>`, `system:migrate`.
    pub actor: String,
    /// What happened, a dotted verb such as `schema.migrate`.
    pub action: String,
    /// What it was about.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Structured details (no secrets).
    pub details: Json,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAuditEvent {
    /// Event id.
    pub id: String,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// Actor.
    pub actor: String,
    /// Action.
    pub action: String,
    /// Target.
    pub target: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Request id.
    pub request_id: Option<String>,
    /// Client address.
    pub client_ip: Option<String>,
    /// Details.
    pub details: Json,
}

impl AuditEvent {
    /// The INSERT for this event, to run alone or inside a batch with the change
    /// it describes (so the change and its record commit together).
    pub fn statement(&self, id: &str, time_ms: i64, ctx: Option<&RequestContext>) -> Statement {
        Statement::new(
            "INSERT INTO audit_events (id, time, actor, action, target, outcome, request_id, client_ip, details) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            vec![
                id.into(),
                time_ms.into(),
                self.actor.as_str().into(),
                self.action.as_str().into(),
                self.target.clone().into(),
                self.outcome.as_str().into(),
                ctx.map(|c| c.request_id.clone()).into(),
                ctx.and_then(|c| c.client_ip)
                    .map(|ip| ip.to_canonical().to_string())
                    .into(),
                self.details.to_string().into(),
            ],
        )
    }
}

/// The INSERT of an event of the request `ctx` describes: to run alone or
/// in the batch of the change it records.
pub fn statement_for(
    s: &Services,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    target: Option<&str>,
    outcome: Outcome,
    details: Json,
) -> Statement {
    AuditEvent {
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        outcome,
        details,
    }
    .statement(&s.new_id(), s.clock.now_ms(), Some(ctx))
}

/// Records an event of the request `ctx` describes, on its own.
pub async fn note(
    s: &Services,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    target: Option<&str>,
    outcome: Outcome,
    details: Json,
) -> Result<(), Error> {
    s.sql
        .execute(statement_for(
            s, ctx, actor, action, target, outcome, details,
        ))
        .await?;
    Ok(())
}

/// Refuse, record the refusal, return the error: records that `actor` was
/// denied `action` and gives `error` back for the handler to return. If the
/// event cannot be stored, that failure is returned instead, so a refusal
/// is never left unrecorded without anyone noticing.
pub async fn denied<E: From<Error>>(
    s: &Services,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    target: Option<&str>,
    details: Json,
    error: E,
) -> E {
    match note(s, ctx, actor, action, target, Outcome::Denied, details).await {
        Ok(()) => error,
        Err(e) => e.into(),
    }
}

/// Records one event on its own and returns its id.
pub async fn record(
    s: &Services,
    ctx: Option<&RequestContext>,
    event: &AuditEvent,
) -> Result<String, Error> {
    let id = s.new_id();
    s.sql
        .execute(event.statement(&id, s.clock.now_ms(), ctx))
        .await?;
    Ok(id)
}

/// Which events [`query`] reads; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events at or after this time (milliseconds since the epoch).
    pub since: Option<i64>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only actions of one function: `mesh.` reads `mesh.*`.
    pub action_prefix: Option<&'static str>,
    /// Only this target.
    pub target: Option<String>,
    /// Only events of this request.
    pub request_id: Option<String>,
    /// At most this many (clamped to 1..=1000).
    pub limit: usize,
}

/// The newest events matching `filter`, newest first.
pub async fn query(sql: &dyn Sql, filter: &Filter) -> Result<Vec<StoredAuditEvent>, Error> {
    let limit = i64::try_from(filter.limit.clamp(1, 1000)).unwrap_or(1000);
    let prefix = filter.action_prefix;
    let rows = sql
        .execute(Statement::new(
            "SELECT id, time, actor, action, target, outcome, request_id, client_ip, details \
             FROM audit_events WHERE (?1 IS NULL OR time >= ?1) AND (?2 IS NULL OR actor = ?2) \
               AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR substr(action, 1, length(?4)) = ?4) \
               AND (?5 IS NULL OR target = ?5) AND (?6 IS NULL OR request_id = ?6) \
             ORDER BY time DESC, id LIMIT ?7",
            vec![
                filter.since.into(),
                filter.actor.clone().into(),
                filter.action.clone().into(),
                prefix.into(),
                filter.target.clone().into(),
                filter.request_id.clone().into(),
                Value::Integer(limit),
            ],
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.rows.len());
    for i in 0..rows.rows.len() {
        let text = |c: &str| rows.get_str(i, c).map(str::to_owned);
        out.push(StoredAuditEvent {
            id: text("id").unwrap_or_default(),
            time: rows.get_i64(i, "time").unwrap_or_default(),
            actor: text("actor").unwrap_or_default(),
            action: text("action").unwrap_or_default(),
            target: text("target"),
            outcome: text("outcome").unwrap_or_default(),
            request_id: text("request_id"),
            client_ip: text("client_ip"),
            details: text("details")
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(Json::Null),
        });
    }
    Ok(out)
}

/// The content type of the export: one JSON event per line.
pub const NDJSON: &str = "application/x-ndjson";

/// The export's cursor header: pass it back as `?after=` for what follows.
pub const NEXT_CURSOR_HEADER: &str = "edgecoder-next-cursor";

/// `GET {path}`: the function's audit events as NDJSON, oldest first, after
/// a cursor, for a monitor (a SIEM) to follow the stream: `?after=` (the
/// previous page's `edgecoder-next-cursor`, default 0), `limit` (1 to
/// 1000, default 100), `action`, `target`, `request_id`. The cursor is the
/// row's insertion order, which only grows (events are never deleted), so a
/// follower misses nothing and sees nothing twice, whatever the clocks did.
///
/// Readable by a holder of a monitor credential (`audit_monitor_tokens`:
/// read-only, this route and nothing else, no person's session behind it)
/// or by a `system_admin` now (roles from storage).
///
/// Where the functions share a database (native, the single Worker) each
/// function's export is the deployment's whole stream; where each has its
/// own (Spin, split Workers) it is that function's.
pub fn export_routes(function: &'static str, path: &'static str) -> crate::Router {
    use crate::router::{RouteDoc, common_problem_docs, handler, response_doc};
    let mut responses = vec![
        response_doc(
            200,
            "events, one JSON object per line, each with its `cursor`; header edgecoder-next-cursor",
            Some(NDJSON),
        ),
        response_doc(
            400,
            "invalid_request: a bad query parameter",
            Some(crate::error::PROBLEM_JSON),
        ),
        response_doc(
            401,
            "invalid_token: no valid monitor credential or access token",
            Some(crate::error::PROBLEM_JSON),
        ),
        response_doc(
            403,
            "forbidden: not a system_admin",
            Some(crate::error::PROBLEM_JSON),
        ),
    ];
    responses.extend(
        common_problem_docs()
            .into_iter()
            .filter(|d| d.status == 405),
    );
    let doc = RouteDoc {
        operation_id: format!("{function}_audit_events"),
        summary: "Audit events as NDJSON after a cursor, oldest first (monitor credential or system_admin): ?after=&limit=&action=&target=&request_id=",
        tag: function,
        request_schema: None,
        responses,
    };
    crate::Router::new().route(
        http::Method::GET,
        path,
        handler(move |s, r| async move { export(&s, &r).await.map_err(Into::into) }),
        doc,
    )
}

/// Who may read the export: a monitor credential or a current
/// `system_admin`; the actor it is audited as otherwise.
async fn export_reader(s: &Services, req: &crate::Request) -> Result<String, Error> {
    let token = req
        .bearer()
        .ok_or(Error::InvalidToken("no bearer credential"))?;
    let digest = *blake3::hash(token.as_bytes()).as_bytes();
    // Compared in full and in constant time per entry: the digests are not
    // secret, but the token behind one is.
    if s.config
        .monitor_tokens
        .iter()
        .any(|d| constant_time_eq(d, &digest))
    {
        return Ok("monitor".into());
    }
    match s.identity.caller(token).await? {
        Some(c) if c.has_role("system_admin") => Ok(format!("user:{}", c.user_id)),
        Some(_) => Err(Error::Forbidden(
            "Only a system_admin or a monitor credential reads the audit stream.",
        )),
        None => Err(Error::InvalidToken(
            "not a monitor credential or live access token",
        )),
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn export(s: &Services, req: &crate::Request) -> Result<crate::Response, Error> {
    export_reader(s, req).await?;
    let bad = |what: &str| Error::InvalidRequest(what.to_owned());
    let after = match req.query_param("after") {
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| bad("after must be a cursor (a non-negative integer)."))?,
        None => 0,
    };
    let limit = match req.query_param("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| bad("limit must be 1 to 1000."))?,
        None => 100,
    };
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT rowid AS cursor, id, time, actor, action, target, outcome, request_id, client_ip, details \
             FROM audit_events WHERE rowid > ?1 AND (?2 IS NULL OR action = ?2) \
               AND (?3 IS NULL OR target = ?3) AND (?4 IS NULL OR request_id = ?4) \
             ORDER BY rowid LIMIT ?5",
            vec![
                Value::Integer(after),
                req.query_param("action").into(),
                req.query_param("target").into(),
                req.query_param("request_id").into(),
                Value::Integer(limit),
            ],
        ))
        .await?;
    let mut body = Vec::new();
    let mut next = after;
    for i in 0..rows.rows.len() {
        let text = |c: &str| rows.get_str(i, c).map(str::to_owned);
        let cursor = rows.get_i64(i, "cursor").unwrap_or_default();
        next = next.max(cursor);
        let line = serde_json::json!({
            "cursor": cursor,
            "id": text("id"),
            "time": crate::http::rfc3339(rows.get_i64(i, "time").unwrap_or_default()),
            "actor": text("actor"),
            "action": text("action"),
            "target": text("target"),
            "outcome": text("outcome"),
            "request_id": text("request_id"),
            "client_ip": text("client_ip"),
            "details": text("details")
                .and_then(|d| serde_json::from_str::<Json>(&d).ok())
                .unwrap_or(Json::Null),
        });
        serde_json::to_writer(&mut body, &line).map_err(|e| Error::Storage(e.to_string()))?;
        body.push(b'\n');
    }
    let mut resp = crate::Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(NDJSON),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&next.to_string()) {
        headers.insert(NEXT_CURSOR_HEADER, v);
    }
    Ok(resp)
}
