//! `edgecoder task`: submit work to a deployment and read it back, for a
//! person at a terminal (the portal does the same over the same routes).
//!
//! In scope: a wasm task from a `.wat` or `.wasm` file and an input file (the
//! blake3 digests computed here, the bytes sent inline), an inference task
//! from a prompt, a task's status and its result. Out of scope: signing in
//! (pass an access token, from `POST /auth/login`) and running tasks (agents
//! and GPU hosts do).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value as Json, json};

/// What a wasm task asks for.
pub struct Wasm<'a> {
    /// The module: WebAssembly text (`.wat`) or binary.
    pub module: &'a Path,
    /// The input bytes' file.
    pub input: &'a Path,
    /// Wall-clock limit.
    pub timeout_ms: u64,
    /// Memory limit.
    pub memory_mb: u64,
    /// Instruction budget.
    pub fuel: u64,
    /// Nodes of distinct owners that must agree.
    pub replicas: u32,
}

/// The blake3 digest as the mesh writes it.
pub fn digest(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// The module's binary: `.wat` text is compiled here.
pub fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| {
            anyhow!(
                "{} is neither a wasm binary nor valid WAT: {e}",
                path.display()
            )
        })
}

/// The `POST /mesh/tasks` body for `w`.
pub fn wasm_body(w: &Wasm<'_>) -> Result<Json> {
    let module = module_bytes(w.module)?;
    let input = std::fs::read(w.input).with_context(|| format!("reading {}", w.input.display()))?;
    Ok(json!({
        "kind": "wasm",
        "module": {"digest": digest(&module), "bytes": STANDARD.encode(&module)},
        "input": {"digest": digest(&input), "bytes": STANDARD.encode(&input)},
        "timeout_ms": w.timeout_ms,
        "resources": {"memory_mb": w.memory_mb, "fuel": w.fuel},
        "replicas": w.replicas,
    }))
}

/// A deployment, as one person.
pub struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    /// `base` (e.g. `http://127.0.0.1:8787`) with an access token; the
    /// token goes over https only, or plain http to this machine.
    pub fn new(base: &str, token: &str) -> Result<Api> {
        if !edgecoder_kernel::config::is_secure_or_local(base) {
            bail!("{base}: an access token is sent over https only (or http to localhost)");
        }
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Json>) -> Result<(u16, Json)> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let mut resp = match body {
            Some(b) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes()),
            None if method == "GET" => self.agent.get(&url).header("authorization", &auth).call(),
            None => bail!("{method} without a body"),
        }
        .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(8 * 1024 * 1024)
            .read_to_string()
            .with_context(|| format!("reading {url}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Json::String(text));
        Ok((status, json))
    }

    fn expect(&self, method: &str, path: &str, body: Option<&Json>, want: u16) -> Result<Json> {
        let (status, v) = self.call(method, path, body)?;
        if status == want {
            return Ok(v);
        }
        // A problem: its code and what it says, as people read it.
        match (
            v["code"].as_str(),
            v["detail"].as_str().or(v["title"].as_str()),
        ) {
            (Some(code), Some(detail)) => bail!("{method} {path}: {status} {code}: {detail}"),
            _ => bail!("{method} {path}: {status} {v}"),
        }
    }

    /// Submits a wasm task; the answer (`task_id`, `price`, ...).
    pub fn submit(&self, w: &Wasm<'_>) -> Result<Json> {
        self.expect("POST", "/mesh/tasks", Some(&wasm_body(w)?), 201)
    }

    /// Submits an inference task; the answer (`task_id`, ...).
    pub fn infer(&self, model: &str, prompt: &str, max_new_tokens: u32) -> Result<Json> {
        let body =
            json!({"model": model, "input": {"text": prompt}, "max_new_tokens": max_new_tokens});
        self.expect("POST", "/mesh/inference", Some(&body), 201)
    }

    /// A task (wasm or inference) as its submitter sees it.
    pub fn task(&self, id: &str) -> Result<Json> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("{id:?} is not a task id");
        }
        let (status, v) = self.call("GET", &format!("/mesh/tasks/{id}"), None)?;
        if status == 200 {
            return Ok(v);
        }
        // Inference tasks are read from their own route.
        self.expect("GET", &format!("/mesh/inference/{id}"), None, 200)
            .map_err(|e| {
                if status == 404 {
                    anyhow!("task {id} not found")
                } else {
                    e
                }
            })
    }
}

/// The output of a finished task: its bytes (wasm) or text (inference).
pub fn output(task: &Json) -> Result<Vec<u8>> {
    if let Some(text) = task["output_text"].as_str() {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(b64) = task["output"].as_str() {
        return STANDARD
            .decode(b64)
            .map_err(|e| anyhow!("the output is not base64: {e}"));
    }
    match task["status"].as_str() {
        Some("completed") => bail!("the task completed without output"),
        Some(s @ ("failed" | "cancelled")) => bail!(
            "the task {s}: {}",
            task["error_code"].as_str().unwrap_or("no error code")
        ),
        Some(s) => bail!("the task is {s}; no result yet"),
        None => bail!("not a task: {task}"),
    }
}
