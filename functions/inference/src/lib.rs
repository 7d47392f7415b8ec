//! The inference guest: a wasm32-wasip2 component implementing the
//! `edgecoder:inference/runner` world (`wit/inference`).
//!
//! In scope: checking a request against the host's limits and the model's
//! context, tokenizing, the decode loop over wasi-nn (one forward pass per
//! generated token, logits of the last position), greedy decoding and seeded
//! sampling, stop sequences, and detokenizing. Reproducible execution: the
//! same request, model digest and seed give the same bytes out.
//!
//! Out of scope: what a model name means, reading model files and checking
//! their digests (the host's resolver, behind wasi-nn `load-by-name` and
//! `models.describe`), deadlines and memory caps (the host's store limits),
//! and anything about tasks or the mesh.
//!
//! ```text
//! host ── run(request) ──▶ guest ── describe(model) ─────────▶ host resolver
//!                                ── load-by-name(model) ─────▶ wasi-nn graph
//!                                ┌─ compute([1, n] ids) ─────▶ logits [1, n, vocab]
//!                                └─ pick(last row) ◀── loop until a finish reason
//!      ◀── response ─────────────
//! ```

// The generated glue is the canonical ABI: unsafe by nature, and written by
// wit-bindgen from the WIT files, not by hand.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/inference",
        world: "runner",
        generate_all,
    });
}

pub mod decode;
pub mod tokenizer;

use bindings::edgecoder::inference::models;
use bindings::edgecoder::inference::types::{
    FinishReason, InferenceError, Prompt, Request, Response, Timings, TokenizerKind,
};
use bindings::exports::edgecoder::inference::inference::Guest;
use bindings::wasi::nn::{graph, tensor};
use std::time::Instant;

use decode::{Choice, Sampler};
use tokenizer::Tokenizer;

struct Component;

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn backend(what: &str, e: &bindings::wasi::nn::errors::Error) -> InferenceError {
    InferenceError::BackendError(format!("{what}: {:?}: {}", e.code(), e.data()))
}

impl Guest for Component {
    fn run(req: Request) -> Result<Response, InferenceError> {
        let started = Instant::now();
        let limits = models::request_limits();
        let info = models::describe(&req.model)?;
        let tokenizer = match info.tokenizer {
            TokenizerKind::Byte => tokenizer::Byte,
        };
        let prompt = match &req.input {
            Prompt::Text(text) => {
                if text.len() > limits.max_input_bytes as usize {
                    return Err(InferenceError::InputTooLarge(format!(
                        "the prompt is {} bytes; at most {} are accepted",
                        text.len(),
                        limits.max_input_bytes
                    )));
                }
                tokenizer.encode(text)
            }
            Prompt::Tokens(ids) => {
                // Four bytes a token: the same budget as text.
                if ids.len().saturating_mul(4) > limits.max_input_bytes as usize {
                    return Err(InferenceError::InputTooLarge(format!(
                        "the prompt is {} tokens; at most {} are accepted",
                        ids.len(),
                        limits.max_input_bytes / 4
                    )));
                }
                if let Some(bad) = ids.iter().find(|&&t| t >= info.vocab_size) {
                    return Err(InferenceError::LimitsExceeded(format!(
                        "token {bad} is outside the model's vocabulary of {}",
                        info.vocab_size
                    )));
                }
                ids.clone()
            }
        };
        if req.max_new_tokens > limits.max_new_tokens {
            return Err(InferenceError::LimitsExceeded(format!(
                "max-new-tokens is {}; at most {} are allowed",
                req.max_new_tokens, limits.max_new_tokens
            )));
        }
        if prompt.is_empty() {
            return Err(InferenceError::LimitsExceeded(
                "a prompt needs at least one token".into(),
            ));
        }
        if prompt.len() > info.context_length as usize {
            return Err(InferenceError::LimitsExceeded(format!(
                "the prompt is {} tokens; the model's context is {}",
                prompt.len(),
                info.context_length
            )));
        }
        let sampler = Sampler::new(req.temperature, req.seed).map_err(|m| {
            InferenceError::LimitsExceeded(format!("temperature {}: {m}", req.temperature))
        })?;

        let graph = graph::load_by_name(&req.model).map_err(|e| match e.code() {
            bindings::wasi::nn::errors::ErrorCode::NotFound => {
                InferenceError::ModelNotFound(req.model.clone())
            }
            _ => backend("load-by-name", &e),
        })?;
        let context = graph
            .init_execution_context()
            .map_err(|e| backend("init-execution-context", &e))?;
        let load_ns = elapsed_ns(started);

        let input_token_count = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        let stops: Vec<&[u8]> = req
            .stop
            .iter()
            .map(String::as_bytes)
            .filter(|s| !s.is_empty())
            .collect();
        let mut decoder = decode::Decoder::new(
            prompt,
            decode::Params {
                max_new_tokens: req.max_new_tokens,
                context_length: info.context_length,
                end_of_text: info.end_of_text,
                stops: &stops,
            },
            sampler,
        );
        let mut compute_ns = 0u64;
        let mut passes = 0u32;
        let finish = loop {
            if let Some(finish) = decoder.finished() {
                break finish;
            }
            let ids = decoder.tokens();
            let n = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            let data: Vec<u8> = ids.iter().flat_map(|&t| (t as f32).to_le_bytes()).collect();
            let input = tensor::Tensor::new(&[1, n], tensor::TensorType::Fp32, &data);
            let pass = Instant::now();
            let outputs = context
                .compute(vec![(info.input_name.clone(), input)])
                .map_err(|e| backend("compute", &e))?;
            compute_ns = compute_ns.saturating_add(elapsed_ns(pass));
            passes += 1;
            let Some((_, logits)) = outputs
                .into_iter()
                .find(|(name, _)| *name == info.output_name)
            else {
                return Err(InferenceError::BackendError(format!(
                    "the graph has no output named {:?}",
                    info.output_name
                )));
            };
            // Logits of every position ([1, n, vocab]) or of the last only
            // ([1, 1, vocab], what a decode-loop export should give): the
            // next token is read from the last row either way.
            let vocab = info.vocab_size as usize;
            let bytes = logits.data();
            let row = vocab * 4;
            if logits.ty() != tensor::TensorType::Fp32
                || (bytes.len() != row && bytes.len() != ids.len() * row)
            {
                return Err(InferenceError::BackendError(format!(
                    "logits are {:?} of {} bytes; expected f32 [1, {}, {vocab}] or [1, 1, {vocab}]",
                    logits.ty(),
                    bytes.len(),
                    ids.len()
                )));
            }
            let last: Vec<f32> = bytes[bytes.len() - row..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            decoder.push(&last, &tokenizer);
        };
        let (output_tokens, output) = decoder.into_output();
        Ok(Response {
            input_token_count,
            output,
            output_tokens,
            finish: match finish {
                Choice::Length => FinishReason::Length,
                Choice::Stop => FinishReason::Stop,
                Choice::EndOfText => FinishReason::EndOfText,
                Choice::ContextFull => FinishReason::ContextFull,
            },
            model_manifest_digest: info.manifest_digest,
            timings: Timings {
                load_ns,
                compute_ns,
                total_ns: elapsed_ns(started),
                forward_passes: passes,
            },
        })
    }
}

// The exported entry points are canonical-ABI glue (see `bindings`).
#[allow(unsafe_code)]
mod exported {
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
