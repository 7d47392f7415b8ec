//! Liveness and readiness, in the `application/health+json` format
//! (draft-inadarei-api-health-check).
//!
//! In scope: `GET /<fn>/health` (answers without touching storage, so it stays
//! up while a database is down) and `GET /<fn>/health/ready` (a SQL round trip,
//! a KV write/read/delete round trip, and no pending migrations; 503 naming the
//! failed check otherwise). Out of scope: deeper dependency checks (email
//! provider, peers), which belong to the functions that use them.
//!
//! Check outputs are fixed phrases or migration names, never driver messages.
//!
//! Readiness is unauthenticated and writes to KV, which is metered on Workers,
//! so each instance reuses its last answer for [`READY_CACHE_MS`]: a flood of
//! probes costs one round trip per instance per interval.

use std::rc::Rc;

use http::{Method, StatusCode};
use serde_json::{Value as Json, json};

use crate::http::{HEALTH_JSON, json_response};
use crate::router::{RouteDoc, common_problem_docs, handler, response_doc};
use crate::{HandlerResult, Request, Router, Services, Statement, migrations, ports};

/// The two health routes of a function mounted at `/{name}`.
pub fn routes(name: &'static str, live_path: &'static str, ready_path: &'static str) -> Router {
    let live_doc = RouteDoc {
        operation_id: format!("{name}_health"),
        summary: "Liveness: the function is up (no storage touched)",
        tag: name,
        request_schema: None,
        responses: vec![response_doc(200, "pass", Some(HEALTH_JSON))],
    };
    let mut ready_responses = vec![
        response_doc(
            200,
            "pass: SQL, KV and migrations all good",
            Some(HEALTH_JSON),
        ),
        response_doc(503, "fail: the failed checks say which", Some(HEALTH_JSON)),
    ];
    ready_responses.extend(
        common_problem_docs()
            .into_iter()
            .filter(|d| d.status == 405),
    );
    let ready_doc = RouteDoc {
        operation_id: format!("{name}_health_ready"),
        summary: "Readiness: SQL round trip, KV round trip, migrations current",
        tag: name,
        request_schema: None,
        responses: ready_responses,
    };
    Router::new()
        .route(
            Method::GET,
            live_path,
            handler(move |s, r| live(name, s, r)),
            live_doc,
        )
        .route(
            Method::GET,
            ready_path,
            handler(move |s, r| ready(name, s, r)),
            ready_doc,
        )
}

fn service_id(name: &str) -> String {
    format!("edgecoder-{name}")
}

async fn live(name: &'static str, _s: Rc<Services>, _r: Request) -> HandlerResult {
    Ok(json_response(
        StatusCode::OK,
        HEALTH_JSON,
        &json!({
            "status": "pass",
            "version": env!("CARGO_PKG_VERSION"),
            "serviceId": service_id(name),
            "description": format!("EdgeCoder {name} function"),
        }),
    ))
}

fn check(ok: bool, output: &str) -> Json {
    if ok {
        json!([{ "status": "pass" }])
    } else {
        json!([{ "status": "fail", "output": output }])
    }
}

/// How long an instance reuses its last readiness answer.
pub const READY_CACHE_MS: i64 = 5_000;

thread_local! {
    // function name -> (computed at, status, body)
    static LAST_READY: std::cell::RefCell<Vec<(&'static str, i64, StatusCode, Json)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

async fn ready(name: &'static str, s: Rc<Services>, _r: Request) -> HandlerResult {
    let now = s.clock.now_ms();
    let cached = LAST_READY.with(|c| {
        c.borrow()
            .iter()
            .find(|(n, at, _, _)| *n == name && (0..READY_CACHE_MS).contains(&(now - at)))
            .map(|(_, _, status, body)| (*status, body.clone()))
    });
    if let Some((status, body)) = cached {
        return Ok(json_response(status, HEALTH_JSON, &body));
    }
    let (status, body) = check_ready(name, &s).await;
    LAST_READY.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|(n, _, _, _)| *n != name);
        c.push((name, now, status, body.clone()));
    });
    Ok(json_response(status, HEALTH_JSON, &body))
}

async fn check_ready(name: &'static str, s: &Services) -> (StatusCode, Json) {
    let sql_ok = s
        .sql
        .execute(Statement::new("SELECT 1 AS one", vec![]))
        .await
        .map(|rows| rows.get_i64(0, "one") == Some(1))
        .unwrap_or(false);

    let kv_ok = kv_round_trip(s).await;

    let (mig_ok, mig_out) = match migrations::pending(s.sql.as_ref()).await {
        Ok(p) if p.is_empty() => (true, String::new()),
        Ok(p) => (
            false,
            format!(
                "pending migrations: {}",
                p.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            ),
        ),
        Err(_) => (false, "cannot read d1_migrations".to_owned()),
    };

    let pass = sql_ok && kv_ok && mig_ok;
    let body = json!({
        "status": if pass { "pass" } else { "fail" },
        "version": env!("CARGO_PKG_VERSION"),
        "serviceId": service_id(name),
        "checks": {
            "sql:roundtrip": check(sql_ok, "SELECT 1 failed"),
            "kv:roundtrip": check(kv_ok, "KV write/read/delete failed"),
            "migrations:current": check(mig_ok, &mig_out),
        }
    });
    let status = if pass {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn kv_round_trip(s: &Services) -> bool {
    let key = format!("health/ready/{}", s.new_id());
    let value = s.new_id();
    if s.kv
        .put(&key, value.as_bytes(), Some(ports::KV_MIN_TTL))
        .await
        .is_err()
    {
        return false;
    }
    let read_back = matches!(s.kv.get(&key).await, Ok(Some(v)) if v == value.as_bytes());
    // Delete even after a bad read so probes leave nothing behind; the TTL is
    // the backstop.
    let deleted = s.kv.delete(&key).await.is_ok();
    read_back && deleted
}
