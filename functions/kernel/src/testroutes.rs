//! Conformance-only routes, compiled only with the `danger-test-routes`
//! feature and mounted only when `insecure_test_routes` is on (development
//! mode only; production refuses the setting).
//!
//! In scope: `POST /<fn>/_test/echo`, a JSON route that exercises the request
//! pipeline (media type, size cap, syntax, shape) on every runtime (it
//! echoes only a validated `message` field), and
//! `POST /<fn>/_test/ports`, which runs the `Sql` and `Kv` port contract inside
//! the runtime (typed values, change counts, batch rollback, KV prefix listing
//! and deletion) and reports each check, so the same contract is verified on
//! rusqlite, D1 + Workers KV and Spin. Neither reveals anything about the
//! deployment beyond pass/fail.

use std::rc::Rc;

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::router::{RouteDoc, common_problem_docs, handler, response_doc};
use crate::{Error, HandlerResult, Request, Router, Services, error::PROBLEM_JSON, http::JSON};

/// Longest accepted `message`, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    message: String,
}

/// The echo route at `path` and the ports self-test at `ports_path`.
pub fn routes(
    tag: &'static str,
    path: &'static str,
    operation_id: &'static str,
    ports_path: &'static str,
    ports_operation_id: &'static str,
) -> Router {
    let mut responses = vec![
        response_doc(200, "the validated message", Some(JSON)),
        response_doc(400, "invalid_json or invalid_request", Some(PROBLEM_JSON)),
        response_doc(415, "unsupported_media_type", Some(PROBLEM_JSON)),
    ];
    responses.extend(common_problem_docs());
    Router::new()
        .route(
            Method::POST,
            path,
            handler(echo),
            RouteDoc {
                operation_id: operation_id.into(),
                summary: "Conformance echo (development only, insecure_test_routes)",
                tag,
                request_schema: Some(json!({
                    "type": "object",
                    "required": ["message"],
                    "additionalProperties": false,
                    "properties": {"message": {"type": "string", "maxLength": MAX_MESSAGE_CHARS}}
                })),
                responses,
            },
        )
        .route(
            Method::POST,
            ports_path,
            handler(ports),
            RouteDoc {
                operation_id: ports_operation_id.into(),
                summary: "Port contract self-test (development only, insecure_test_routes)",
                tag,
                request_schema: None,
                responses: vec![response_doc(
                    200,
                    "each check with pass or fail",
                    Some(JSON),
                )],
            },
        )
}

async fn echo(_s: Rc<Services>, req: Request) -> HandlerResult {
    let body: Echo = req.json()?;
    if body.message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(Error::InvalidRequest(format!(
            "message must be at most {MAX_MESSAGE_CHARS} characters"
        ))
        .into());
    }
    Ok(crate::http::ok_json(&body))
}

fn outcome(ok: bool, detail: String) -> serde_json::Value {
    if ok {
        json!({"status": "pass"})
    } else {
        json!({"status": "fail", "detail": detail})
    }
}

async fn ports(s: Rc<Services>, _req: Request) -> HandlerResult {
    use crate::{Statement, Value};
    let run = s.new_id();
    let mut checks = serde_json::Map::new();

    let setup = s
        .sql
        .execute(Statement::new(
            "CREATE TABLE IF NOT EXISTS _conformance_ports \
             (k TEXT PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)",
            vec![],
        ))
        .await;
    checks.insert(
        "sql:ddl".into(),
        outcome(setup.is_ok(), format!("{setup:?}")),
    );

    // Typed values survive a round trip with their types.
    let blob: Vec<u8> = vec![0, 1, 2, 254, 255];
    let insert = s
        .sql
        .execute(Statement::new(
            "INSERT INTO _conformance_ports (k, i, r, t, b, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            vec![
                Value::Text(run.clone()),
                Value::Integer(-9_007_199_254_740_991),
                Value::Real(1.5),
                Value::Text("héllo ✓".into()),
                Value::Blob(blob.clone()),
                Value::Null,
            ],
        ))
        .await;
    checks.insert(
        "sql:insert_changes".into(),
        outcome(
            matches!(&insert, Ok(r) if r.changes == 1),
            format!("{insert:?}"),
        ),
    );
    let read = s
        .sql
        .execute(Statement::new(
            "SELECT i, r, t, b, n FROM _conformance_ports WHERE k = ?1",
            vec![Value::Text(run.clone())],
        ))
        .await;
    let typed = match &read {
        Ok(rows) => {
            rows.get(0, "i") == Some(&Value::Integer(-9_007_199_254_740_991))
                && rows.get(0, "r") == Some(&Value::Real(1.5))
                && rows.get(0, "t") == Some(&Value::Text("héllo ✓".into()))
                && rows.get(0, "b") == Some(&Value::Blob(blob))
                && rows.get(0, "n") == Some(&Value::Null)
        }
        Err(_) => false,
    };
    checks.insert(
        "sql:typed_round_trip".into(),
        outcome(typed, format!("{read:?}")),
    );

    let update = s
        .sql
        .execute(Statement::new(
            "UPDATE _conformance_ports SET t = 'x' WHERE k = ?1 OR k = 'absent'",
            vec![Value::Text(run.clone())],
        ))
        .await;
    checks.insert(
        "sql:update_changes".into(),
        outcome(
            matches!(&update, Ok(r) if r.changes == 1),
            format!("{update:?}"),
        ),
    );

    // A batch whose second statement fails leaves no trace of the first.
    let other = format!("{run}-batch");
    let batch = s
        .sql
        .batch(vec![
            Statement::new(
                "INSERT INTO _conformance_ports (k, i) VALUES (?1, 1)",
                vec![Value::Text(other.clone())],
            ),
            Statement::new(
                "INSERT INTO _conformance_ports (k, i) VALUES (?1, 2)",
                vec![Value::Text(run.clone())],
            ),
        ])
        .await;
    let left = s
        .sql
        .execute(Statement::new(
            "SELECT count(*) AS c FROM _conformance_ports WHERE k = ?1",
            vec![Value::Text(other.clone())],
        ))
        .await;
    let rolled_back = batch.is_err() && matches!(&left, Ok(r) if r.get_i64(0, "c") == Some(0));
    // A duplicate key is reported as its own variant, in a batch and alone.
    let duplicate = s
        .sql
        .execute(Statement::new(
            "INSERT INTO _conformance_ports (k, i) VALUES (?1, 3)",
            vec![Value::Text(run.clone())],
        ))
        .await;
    checks.insert(
        "sql:unique_violation".into(),
        outcome(
            matches!(&batch, Err(Error::UniqueViolation(_)))
                && matches!(&duplicate, Err(Error::UniqueViolation(_))),
            format!("batch {batch:?}, alone {duplicate:?}"),
        ),
    );
    checks.insert(
        "sql:batch_rolls_back".into(),
        outcome(
            rolled_back,
            format!("batch {:?}, left {left:?}", batch.is_err()),
        ),
    );
    let ok_batch = s
        .sql
        .batch(vec![
            Statement::new(
                "INSERT INTO _conformance_ports (k, i) VALUES (?1, 1)",
                vec![Value::Text(other.clone())],
            ),
            Statement::new(
                "SELECT i FROM _conformance_ports WHERE k = ?1",
                vec![Value::Text(other.clone())],
            ),
        ])
        .await;
    let batch_ok = matches!(&ok_batch, Ok(r) if r.len() == 2 && r[0].changes == 1 && r[1].get_i64(0, "i") == Some(1));
    checks.insert(
        "sql:batch_commits".into(),
        outcome(batch_ok, format!("{ok_batch:?}")),
    );
    let _ = s
        .sql
        .execute(Statement::new(
            "DELETE FROM _conformance_ports WHERE k = ?1 OR k = ?2",
            vec![Value::Text(run.clone()), Value::Text(other)],
        ))
        .await;

    // KV: put, list by prefix (sorted, prefix-exact), delete.
    let prefix = format!("conformance/{run}/");
    let mut kv_ok = true;
    let mut kv_detail = String::new();
    for (k, v) in [("b", &b"2"[..]), ("a", b"\x00\xff"), ("c/d", b"3")] {
        if let Err(e) =
            s.kv.put(&format!("{prefix}{k}"), v, Some(crate::ports::KV_MIN_TTL))
                .await
        {
            kv_ok = false;
            kv_detail = format!("put: {e}");
        }
    }
    let _ =
        s.kv.put(
            &format!("conformance/{run}-other"),
            b"x",
            Some(crate::ports::KV_MIN_TTL),
        )
        .await;
    let listed = s.kv.list(&prefix, 100).await;
    let want: Vec<String> = ["a", "b", "c/d"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
    if !matches!(&listed, Ok(keys) if *keys == want) {
        kv_ok = false;
        kv_detail = format!("list {listed:?}");
    }
    checks.insert("kv:list_prefix".into(), outcome(kv_ok, kv_detail));
    let got = s.kv.get(&format!("{prefix}a")).await;
    checks.insert(
        "kv:bytes_round_trip".into(),
        outcome(
            matches!(&got, Ok(Some(v)) if v == b"\x00\xff"),
            format!("{got:?}"),
        ),
    );
    for k in ["a", "b", "c/d"] {
        let _ = s.kv.delete(&format!("{prefix}{k}")).await;
    }
    let _ = s.kv.delete(&format!("conformance/{run}-other")).await;
    let gone = s.kv.get(&format!("{prefix}a")).await;
    let after = s.kv.list(&prefix, 100).await;
    checks.insert(
        "kv:delete".into(),
        outcome(
            matches!(&gone, Ok(None)) && matches!(&after, Ok(k) if k.is_empty()),
            format!("{gone:?} {after:?}"),
        ),
    );

    let pass = checks.values().all(|c| c["status"] == "pass");
    Ok(crate::http::ok_json(&json!({
        "status": if pass { "pass" } else { "fail" },
        "checks": checks,
    })))
}
