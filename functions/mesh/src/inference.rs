//! Inference tasks, the portal's side: submit a prompt for a model, read the
//! answer. Scheduling, leases and results are the task machinery's
//! ([`crate::tasks`]); an inference task is a task of kind `inference` whose
//! frozen input is the request (`edgecoder_proto::inference`), leased only
//! to approved GPU hosts that serve its model.
//!
//! In scope: the typed payload and its checks at submission (a model some
//! approved GPU host serves now, the input and token limits), and the
//! submitter's view of the result. Out of scope: running models (the GPU
//! host) and the model catalogue (the model supply chain).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::audit;
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services};
use edgecoder_proto::inference::{
    InferenceInput, InferenceRequest, MAX_INPUT_BYTES, MAX_NEW_TOKENS, MAX_STOP_BYTES, MAX_STOPS,
    Prompt, Refusal,
};
use edgecoder_proto::mesh::TaskKind;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::tasks::{digest_of, queue_place};
use crate::{DOCS, Error, authn, policy, rfc3339, store};

/// Deadline of an inference task when the request names none.
pub const DEFAULT_TIMEOUT_MS: i64 = 60_000;
/// A GPU host serves a model for submissions while its last heartbeat is
/// this recent.
pub const SERVED_WITHIN_MS: i64 = 5 * 60 * 1000;

/// `POST /mesh/inference` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    model: String,
    input: Prompt,
    max_new_tokens: u32,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<i64>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    tenant: Option<String>,
}

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// `POST /mesh/inference`: a user with a verified email.
pub async fn submit(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::submitter(s, &req).await?;
    let body: Submit = req.json()?;
    authn::charge_submission(s, &caller).await?;
    let request = InferenceRequest {
        model: body.model,
        input: body.input,
        max_new_tokens: body.max_new_tokens,
        temperature: body.temperature,
        seed: body.seed,
        stop: body.stop,
    };
    request.check().map_err(|r| match r {
        Refusal::Invalid(m) => invalid(&m),
        Refusal::InputTooLarge(m) => Error::InputTooLarge(m),
        Refusal::LimitsExceeded(m) if m.starts_with("stop") => Error::LimitsExceeded("stop"),
        Refusal::LimitsExceeded(_) => Error::LimitsExceeded("max_new_tokens"),
    })?;
    let timeout_ms = body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms < 1 {
        return Err(invalid("timeout_ms must be positive."));
    }
    if timeout_ms > policy::MAX_TIMEOUT_MS {
        return Err(Error::LimitsExceeded("timeout_ms"));
    }
    let priority = queue_place(&caller, body.priority, body.tenant.as_deref())?;
    let now = s.clock.now_ms();
    if !crate::models::served(s, &request.model).await? {
        return Err(audit::denied(
            s,
            &req.ctx,
            &caller.actor(),
            "mesh.inference.submit",
            None,
            json!({"reason": "model_unknown", "model": request.model}),
            Error::ModelUnknown,
        )
        .await);
    }
    // The stored input is the request re-encoded from its parsed form, with
    // a nonce: its digest is published in the ledger, and must not be a
    // plain hash of the prompt. It is the submitter's blob: nobody else can
    // name it in a task of their own.
    let id = s.new_id();
    let submitter = caller.actor();
    let input = InferenceInput {
        nonce: s.new_id(),
        request,
    };
    let request = &input.request;
    let bytes = serde_json::to_vec(&input)
        .map_err(|e| edgecoder_kernel::Error::Storage(format!("encoding a request: {e}")))?;
    let input_digest = digest_of(&bytes);
    // Inference is not bit-for-bit reproducible across hosts: one replica.
    let price = crate::economy::price(s, TaskKind::Inference.as_str(), timeout_ms, 0, 1)?;
    let task = store::tasks::NewTask {
        id: &id,
        submitter: &submitter,
        tenant: body.tenant.as_deref(),
        kind: TaskKind::Inference,
        module_digest: None,
        input_digest: &input_digest,
        model: Some(&request.model),
        timeout_ms,
        // The GPU host applies its own memory cap; fuel is not
        // how inference is metered.
        memory_mb: 0,
        fuel: 0,
        priority,
        max_attempts: crate::Settings::of(s)?.max_attempts,
        now,
        replicas: 1,
        price,
        payer: &submitter,
        escrow_transfer: "",
    };
    let details = json!({"model": request.model, "input_digest": input_digest, "max_new_tokens": request.max_new_tokens});
    crate::tasks::queue(
        s,
        &req.ctx,
        vec![store::tasks::insert_blob(
            &input_digest,
            bytes,
            Some(&submitter),
            now,
        )],
        &task,
        "mesh.inference.submit",
        details,
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        JSON,
        &json!({
            "task_id": id,
            "status": "queued",
            "price": price,
            "model": request.model,
            "input_digest": input_digest,
        }),
    ))
}

/// `GET /mesh/inference/{id}`: its submitter only (prompts and answers are
/// the user's).
pub async fn get(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::bearer(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    crate::tasks::sweep(s, &req).await?;
    let Some(t) = store::tasks::task(s.sql.as_ref(), &id)
        .await?
        .filter(|t| t.submitter == caller.actor())
        .filter(|t| t.kind.as_deref() == Some(TaskKind::Inference.as_str()))
    else {
        return Err(Error::TaskNotFound);
    };
    let request: Json = match &t.input_digest {
        Some(d) => store::tasks::blobs(s.sql.as_ref(), [None, Some(d)])
            .await?
            .into_iter()
            .next()
            .and_then(|(_, b)| serde_json::from_slice::<InferenceInput>(&b).ok())
            .and_then(|i| serde_json::to_value(i.request).ok())
            .unwrap_or(Json::Null),
        None => Json::Null,
    };
    let result: Json = t
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Json::Null);
    Ok(ok_json(&json!({
        "task_id": id,
        "status": t.status,
        "model": t.model,
        "request": request,
        "input_digest": t.input_digest,
        "output_text": t.output.as_deref().map(String::from_utf8_lossy),
        "output": t.output.as_deref().map(|b| STANDARD.encode(b)),
        "output_digest": result.get("output_digest"),
        "inference": result.get("inference"),
        "error_code": t.error_code,
        "attempts": t.attempts,
        "completed_by": t.completed_by,
        "ledger_index": t.ledger_index,
        "created_at": t.created_at.map(rfc3339),
        "updated_at": t.updated_at.map(rfc3339),
    })))
}

fn submit_doc() -> RouteDoc {
    let input = json!({
        "oneOf": [
            object(&["text"], json!({"text": {"type": "string", "maxLength": MAX_INPUT_BYTES}})),
            object(&["tokens"], json!({"tokens": {"type": "array", "items": {"type": "integer", "minimum": 0}}})),
        ]
    });
    let body = object(
        &["model", "input", "max_new_tokens"],
        json!({
            "model": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*$"},
            "input": input,
            "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_NEW_TOKENS},
            "temperature": {"type": "number", "minimum": 0, "maximum": 100},
            "seed": {"type": "integer", "minimum": 0},
            "stop": {"type": "array", "maxItems": MAX_STOPS, "items": {"type": "string", "minLength": 1, "maxLength": MAX_STOP_BYTES}},
            "timeout_ms": {"type": "integer", "minimum": 1, "maximum": policy::MAX_TIMEOUT_MS},
            "priority": {"type": "integer", "minimum": -10, "maximum": 10},
            "tenant": {"type": "string"},
        }),
    );
    DOCS.op(
        "submit_inference",
        "Submit an inference task: a prompt for a model that an approved GPU host serves (verified user)",
        body,
        vec![
            ok(201, "{task_id, status: queued, price, model, input_digest}"),
            err(401, "mesh_unauthorized / invalid_token"),
            err(403, "forbidden (email unverified) / account_blacklisted"),
            err(409, "insufficient_credits: nothing was queued"),
            err(422, "model_unknown / input_too_large / limits_exceeded"),
        ],
    )
}

fn get_doc() -> RouteDoc {
    DOCS.op(
        "get_inference",
        "An inference task, its request and its answer: its submitter only",
        None,
        vec![
            ok(
                200,
                "{task_id, status, model, request, output_text, output, inference, error_code}",
            ),
            err(401, "mesh_unauthorized / invalid_token"),
            err(404, "task_not_found"),
        ],
    )
}

/// The inference routes.
pub fn routes(r: Router) -> Router {
    r.route(
        Method::POST,
        "/mesh/inference",
        endpoint(|s, r| async move { submit(&s, r).await }),
        submit_doc(),
    )
    .route(
        Method::GET,
        "/mesh/inference/{id}",
        endpoint(|s, r| async move { get(&s, r).await }),
        get_doc(),
    )
}
