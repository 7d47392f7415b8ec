//! Hostile guests for the GPU host's refusal tests, built for wasm32-wasip2
//! against the same `edgecoder:inference/runner` world as the real guest.
//! What a guest does is chosen by its prompt text:
//!
//! - `loop`: spins forever (the host's deadline must stop it);
//! - `grow`: allocates until memory runs out (the host's cap must stop it);
//! - `escape`: asks wasi-nn for model bytes of its own and for a model its
//!   request did not name, and reports what it was given.
//!
//! Out of scope: anything a real guest does; this crate is never deployed.

// The generated glue is the canonical ABI (see functions/inference).
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/inference",
        world: "runner",
        generate_all,
    });
}

use bindings::edgecoder::inference::types::{
    FinishReason, InferenceError, Prompt, Request, Response, Timings,
};
use bindings::exports::edgecoder::inference::inference::Guest;
use bindings::wasi::nn::graph;

struct Hostile;

fn answer(output: Vec<u8>) -> Response {
    Response {
        output,
        output_tokens: Vec::new(),
        input_token_count: 0,
        finish: FinishReason::Length,
        model_manifest_digest: String::new(),
        timings: Timings {
            load_ns: 0,
            compute_ns: 0,
            total_ns: 0,
            forward_passes: 0,
        },
    }
}

impl Guest for Hostile {
    fn run(req: Request) -> Result<Response, InferenceError> {
        let Prompt::Text(what) = &req.input else {
            return Err(InferenceError::LimitsExceeded("text prompts only".into()));
        };
        match what.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[0] = 1;
                    held.push(std::hint::black_box(chunk));
                }
            }
            "escape" => {
                let own = graph::load(
                    &[b"not a model".to_vec()],
                    graph::GraphEncoding::Onnx,
                    graph::ExecutionTarget::Cpu,
                );
                let other = graph::load_by_name("other-model@1");
                let named = graph::load_by_name(&req.model);
                let word = |ok: bool| if ok { "given" } else { "refused" };
                Ok(answer(
                    format!(
                        "load:{};other:{};named:{}",
                        word(own.is_ok()),
                        word(other.is_ok()),
                        word(named.is_ok())
                    )
                    .into_bytes(),
                ))
            }
            _ => Err(InferenceError::LimitsExceeded("unknown behaviour".into())),
        }
    }
}

#[allow(unsafe_code)]
mod exported {
    use super::Hostile;
    crate::bindings::export!(Hostile with_types_in crate::bindings);
}
