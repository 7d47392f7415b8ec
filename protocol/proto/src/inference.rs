//! The `inference` task payload: what a user asks a model to do, as the
//! coordinator stores it (the task's frozen, content-addressed input) and a
//! GPU host reads it. The field names follow the `edgecoder:inference`
//! WIT `request` record (`wit/inference`), in snake case.
//!
//! In scope: the request, its limits and their checks, and model names.
//! Out of scope: running it (the GPU host and its guest component) and what a
//! model name resolves to (the host's model directory).

use serde::{Deserialize, Serialize};

/// Longest prompt, bytes of text (a token prompt counts four bytes a token).
pub const MAX_INPUT_BYTES: usize = 16 * 1024;
/// Most tokens a task may ask for.
pub const MAX_NEW_TOKENS: u32 = 512;
/// Most stop sequences.
pub const MAX_STOPS: usize = 4;
/// Longest stop sequence, bytes.
pub const MAX_STOP_BYTES: usize = 32;
/// Hottest sampling temperature.
pub const MAX_TEMPERATURE: f32 = 100.0;
/// Longest model name (`name@version`).
pub const MAX_MODEL_NAME: usize = 100;

/// What to run the model on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Prompt {
    /// UTF-8 text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// One inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// `name@version`.
    pub model: String,
    /// The prompt.
    pub input: Prompt,
    /// Most tokens to generate (1 to [`MAX_NEW_TOKENS`]).
    pub max_new_tokens: u32,
    /// 0 for greedy decoding.
    #[serde(default)]
    pub temperature: f32,
    /// The sampler's seed.
    #[serde(default)]
    pub seed: u64,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// An inference task's stored input: the request and a random nonce. The
/// nonce keeps the input's digest, which the ledger publishes, from being a
/// hash of the prompt alone that anyone could test guesses against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceInput {
    /// 128 random bits, hex.
    pub nonce: String,
    /// The request.
    pub request: InferenceRequest,
}

/// Why a request is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed (a bad model name, an empty prompt, a bad temperature).
    Invalid(String),
    /// The prompt is over [`MAX_INPUT_BYTES`].
    InputTooLarge(String),
    /// A limit is exceeded (tokens, stops).
    LimitsExceeded(String),
}

/// Whether `s` is `name@version`: a name of lowercase letters, digits and
/// `._-` starting with a letter or digit, and a version of letters, digits
/// and `._-`. Nothing that could name a path.
pub fn valid_model_name(s: &str) -> bool {
    let Some((name, version)) = s.split_once('@') else {
        return false;
    };
    let part = |p: &str, lower: bool| {
        !p.is_empty()
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.bytes().all(|b| {
                b.is_ascii_digit()
                    || b.is_ascii_lowercase()
                    || (!lower && b.is_ascii_uppercase())
                    || matches!(b, b'.' | b'_' | b'-')
            })
    };
    s.len() <= MAX_MODEL_NAME && part(name, true) && part(version, false) && !version.contains("..")
}

impl InferenceRequest {
    /// Bytes of the prompt as the limits count them.
    pub fn input_bytes(&self) -> usize {
        match &self.input {
            Prompt::Text(t) => t.len(),
            Prompt::Tokens(ids) => ids.len().saturating_mul(4),
        }
    }

    /// The checks every side applies before running a request.
    pub fn check(&self) -> Result<(), Refusal> {
        if !valid_model_name(&self.model) {
            return Err(Refusal::Invalid(
                "model must be name@version (lowercase letters, digits, . _ -).".into(),
            ));
        }
        let empty = match &self.input {
            Prompt::Text(t) => t.is_empty(),
            Prompt::Tokens(ids) => ids.is_empty(),
        };
        if empty {
            return Err(Refusal::Invalid("input must not be empty.".into()));
        }
        if self.input_bytes() > MAX_INPUT_BYTES {
            return Err(Refusal::InputTooLarge(format!(
                "input is {} bytes; at most {MAX_INPUT_BYTES} are accepted.",
                self.input_bytes()
            )));
        }
        if self.max_new_tokens == 0 {
            return Err(Refusal::Invalid("max_new_tokens must be positive.".into()));
        }
        if self.max_new_tokens > MAX_NEW_TOKENS {
            return Err(Refusal::LimitsExceeded(format!(
                "max_new_tokens is at most {MAX_NEW_TOKENS}."
            )));
        }
        if !self.temperature.is_finite()
            || self.temperature < 0.0
            || self.temperature > MAX_TEMPERATURE
        {
            return Err(Refusal::Invalid(
                "temperature must be 0 (greedy) to 100.".into(),
            ));
        }
        if self.stop.len() > MAX_STOPS
            || self
                .stop
                .iter()
                .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return Err(Refusal::LimitsExceeded(format!(
                "stop holds at most {MAX_STOPS} sequences of 1 to {MAX_STOP_BYTES} bytes."
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> InferenceRequest {
        InferenceRequest {
            model: "tiny-byte@1".into(),
            input: Prompt::Text("fn main".into()),
            max_new_tokens: 8,
            temperature: 0.0,
            seed: 1,
            stop: vec![],
        }
    }

    #[test]
    fn model_names_cannot_name_paths() {
        for ok in ["tiny-byte@1", "llama.3@8b-q4", "m@V1.2"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in [
            "tiny", "@1", "tiny@", "../x@1", "x@../1", "x@1/2", "X@1", "x@1@2", "x@..", "x @1",
        ] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(req().check(), Ok(()));
        let mut r = req();
        r.input = Prompt::Text("a".repeat(MAX_INPUT_BYTES + 1));
        assert!(matches!(r.check(), Err(Refusal::InputTooLarge(_))));
        let mut r = req();
        r.max_new_tokens = MAX_NEW_TOKENS + 1;
        assert!(matches!(r.check(), Err(Refusal::LimitsExceeded(_))));
        let mut r = req();
        r.temperature = f32::NAN;
        assert!(matches!(r.check(), Err(Refusal::Invalid(_))));
        let mut r = req();
        r.input = Prompt::Tokens(vec![]);
        assert!(matches!(r.check(), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn the_wire_form_is_strict() {
        let j = r#"{"model":"tiny-byte@1","input":{"text":"hi"},"max_new_tokens":4}"#;
        let r: InferenceRequest = serde_json::from_str(j).expect("parses");
        assert_eq!(r.input, Prompt::Text("hi".into()));
        let extra = r#"{"model":"m@1","input":{"text":"hi"},"max_new_tokens":4,"path":"/etc"}"#;
        assert!(serde_json::from_str::<InferenceRequest>(extra).is_err());
    }
}
