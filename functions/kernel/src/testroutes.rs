//! Conformance-only routes, mounted when `insecure_test_routes` is on
//! (development mode only; production refuses the setting).
//!
//! In scope: `POST /<fn>/_test/echo`, a JSON route that exercises the request
//! pipeline (media type, size cap, syntax, shape) before later issues add real
//! JSON routes. It echoes only a validated `message` field; it reads no storage
//! and reveals nothing about the deployment.

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

/// The echo route at `path`.
pub fn routes(tag: &'static str, path: &'static str, operation_id: &'static str) -> Router {
    let mut responses = vec![
        response_doc(200, "the validated message", Some(JSON)),
        response_doc(400, "invalid_json or invalid_request", Some(PROBLEM_JSON)),
        response_doc(415, "unsupported_media_type", Some(PROBLEM_JSON)),
    ];
    responses.extend(common_problem_docs());
    Router::new().route(
        Method::POST,
        path,
        handler(echo),
        RouteDoc {
            operation_id,
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
