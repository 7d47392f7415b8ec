//! Inference: the coordinator's side, checked on every runtime, and the kit
//! the GPU host's tests share (guest components, the test model, the model
//! directory, onnxruntime).
//!
//! In scope: intake of inference tasks (model, input and token limits),
//! scheduling only to approved GPU hosts that serve the model (never to a
//! wasm agent), results bound to the lease and the task's model, and the
//! whole path with the real `edgecoder-gpu-host` binary talking to the
//! deployment over HTTP: enroll, register, approve, heartbeat, pull, run the
//! guest on onnxruntime, report; the submitter reads the answer, which is
//! the known answer Python onnxruntime computes for the same model.
//!
//! Out of scope: the guest and host themselves (`tests/tests/inference.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value as Json, json};

use crate::expect_problem;
use crate::harness::{target_dir, tool, workspace_root};
use crate::identity::{Account, Ctx};
use crate::mesh::{Node, heartbeat, signed};

/// The test model's name in the kit's model directory.
pub const MODEL: &str = "tiny-byte@1";

/// What the inference tests need, built once per test binary.
#[derive(Debug, Clone)]
pub struct Kit {
    /// `edgecoder-gpu-host` (debug).
    pub gpu_host: PathBuf,
    /// The inference guest component.
    pub guest: PathBuf,
    /// The hostile test guests (`tests/inference-guests`).
    pub hostile_guest: PathBuf,
    /// The generated ONNX model.
    pub onnx: PathBuf,
    /// A model directory holding [`MODEL`].
    pub models: PathBuf,
    /// onnxruntime's library.
    pub onnxruntime: PathBuf,
    /// The Python with onnx and onnxruntime.
    pub python: PathBuf,
}

fn cargo(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(args)
        .status()
        .expect("cargo");
    assert!(status.success(), "cargo {args:?} failed");
}

/// Builds the guests and the host, writes the test model with the `onnx`
/// package and puts it in a model directory with `models add`.
pub fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        for p in ["edgecoder-inference", "edgecoder-test-guests"] {
            cargo(&[
                "build",
                "--quiet",
                "-p",
                p,
                "--target",
                "wasm32-wasip2",
                "--profile",
                "wasm-release",
            ]);
        }
        cargo(&["build", "--quiet", "-p", "edgecoder-gpu-host"]);
        let wasm = target_dir().join("wasm32-wasip2/wasm-release");
        let dir = target_dir().join(format!("inference-kit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("kit dir");
        let python = tool("EC_INFER_PYTHON");
        let onnx = dir.join("tiny-byte.onnx");
        let status = Command::new(&python)
            .arg(workspace_root().join("tests/inference/make_model.py"))
            .arg(&onnx)
            .status()
            .expect("python");
        assert!(status.success(), "make_model.py failed");
        let kit = Kit {
            gpu_host: target_dir().join("debug/edgecoder-gpu-host"),
            guest: wasm.join("edgecoder_inference.wasm"),
            hostile_guest: wasm.join("edgecoder_test_guests.wasm"),
            onnx,
            models: dir.join("models"),
            onnxruntime: tool("ORT_DYLIB_PATH"),
            python,
        };
        add_model(&kit, &kit.models, MODEL);
        kit
    })
}

/// Adds the test model to `models` under `name` with `models add`.
pub fn add_model(kit: &Kit, models: &Path, name: &str) {
    let out = Command::new(&kit.gpu_host)
        .args(["models", "add", "--name", name, "--models"])
        .arg(models)
        .arg("--onnx")
        .arg(&kit.onnx)
        .output()
        .expect("gpu host");
    assert!(
        out.status.success(),
        "models add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The known answer for `request` (the guest's request record as JSON):
/// Python onnxruntime running the same decode loop over the same model.
pub fn reference(kit: &Kit, request: &Json) -> Json {
    let path = std::env::temp_dir().join(format!(
        "edgecoder-ref-{}-{}.json",
        std::process::id(),
        blake3::hash(request.to_string().as_bytes()).to_hex()
    ));
    std::fs::write(&path, request.to_string()).expect("request file");
    let out = Command::new(&kit.python)
        .arg(workspace_root().join("tests/inference/reference.py"))
        .arg(&kit.onnx)
        .arg(&path)
        .output()
        .expect("python");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "reference.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

fn want(r: &crate::Reply, status: u16, what: &str) -> Result<Json, String> {
    if r.status != status {
        return Err(format!(
            "{what}: {} want {status}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    if r.body.is_empty() {
        return Ok(Json::Null);
    }
    r.json()
}

fn enroll_gpu_host(x: &Ctx, owner: &Account, node_id: &str) -> Result<String, String> {
    let r = x.send(
        "POST",
        "/auth/nodes/enroll",
        Some(&owner.access),
        Some(&json!({"node_id": node_id, "kind": "gpu-host"})),
        &[],
    )?;
    let v = want(&r, 201, "enroll gpu-host")?;
    Ok(v["enrollment_token"].as_str().unwrap_or("").to_owned())
}

/// An approved GPU host signed in-process, declaring and reporting `models`,
/// each published first (policy, signed release, complete rollout) and
/// reported verified.
fn gpu_node(x: &Ctx, tag: &str, models: &[&str]) -> Result<Node, String> {
    let digests: Vec<String> = models
        .iter()
        .map(|m| crate::models::publish(x, m))
        .collect::<Result<_, _>>()?;
    let owner = x.account(tag, true)?;
    let node = Node::new(x, tag);
    let token = enroll_gpu_host(x, &owner, &node.id)?;
    let body = json!({
        "enrollment_token": token, "node_id": node.id, "kind": "gpu-host",
        "public_key": node.public_key(), "os": "linux", "version": "suite",
        "capabilities": {"sandbox": "wasmtime", "cpu_cores": 8, "memory_mb": 65536,
                         "gpu": {"name": "suite", "memory_mb": 1}, "models": models},
    });
    let v = want(
        &signed(
            x,
            &node,
            "POST",
            "/mesh/nodes/register",
            Some(&body),
            &Default::default(),
        )?,
        201,
        "register gpu-host",
    )?;
    if v["kind"] != "gpu-host" {
        return Err(format!("registration answer {v}"));
    }
    let (_, admin) = x.admin()?;
    want(
        &x.send(
            "POST",
            &format!("/mesh/nodes/{}/approve", node.id),
            Some(&admin),
            Some(&json!({"reason": "suite"})),
            &[],
        )?,
        200,
        "approve gpu-host",
    )?;
    let verified: Vec<(&str, &str)> = models
        .iter()
        .zip(&digests)
        .map(|(m, d)| (*m, d.as_str()))
        .collect();
    let hb = want(
        &heartbeat(
            x,
            &node,
            &crate::models::verified_telemetry(&verified, 0, 0),
        )?,
        200,
        "heartbeat",
    )?;
    if hb["policy"]["allowed_task_kinds"] != json!(["inference"]) {
        return Err(format!("a gpu host's policy: {hb}"));
    }
    Ok(node)
}

fn submit(x: &Ctx, bearer: &str, body: &Json) -> Result<crate::Reply, String> {
    crate::economy::fund_bearer(x, bearer)?;
    x.send("POST", "/mesh/inference", Some(bearer), Some(body), &[])
}

fn prompt(model: &str, text: &str, max_new_tokens: u32) -> Json {
    json!({"model": model, "input": {"text": text}, "max_new_tokens": max_new_tokens, "seed": 7})
}

fn pull(x: &Ctx, node: &Node) -> Result<crate::Reply, String> {
    signed(
        x,
        node,
        "POST",
        "/mesh/tasks/pull",
        Some(&json!({})),
        &Default::default(),
    )
}

type InferenceCheck = fn(&Ctx) -> Result<(), String>;

/// Every inference check, by name.
pub fn checks() -> Vec<(&'static str, InferenceCheck)> {
    vec![
        (
            "inference_intake_checks_model_input_and_limits",
            inference_intake_checks_model_input_and_limits,
        ),
        (
            "inference_results_must_match_the_lease_and_model",
            inference_results_must_match_the_lease_and_model,
        ),
        (
            "gpu_host_serves_inference_and_agents_never_get_it",
            gpu_host_serves_inference_and_agents_never_get_it,
        ),
    ]
}

fn inference_intake_checks_model_input_and_limits(x: &Ctx) -> Result<(), String> {
    let served = "intake-byte@1";
    gpu_node(x, "inf-intake-host", &[served])?;
    let user = x.account("inf-intake", true)?;
    let t = &user.access;
    expect_problem(
        &x.send(
            "POST",
            "/mesh/inference",
            None,
            Some(&prompt(served, "hi", 4)),
            &[],
        )?,
        401,
        "mesh_unauthorized",
    )?;
    let unverified = x.account("inf-unverified", false)?;
    expect_problem(
        &submit(x, &unverified.access, &prompt(served, "hi", 4))?,
        403,
        "forbidden",
    )?;
    // A model no approved host serves, and names that could be paths.
    expect_problem(
        &submit(x, t, &prompt("absent-model@1", "hi", 4))?,
        422,
        "model_unknown",
    )?;
    for bad in ["../../etc@passwd", "tiny", "Tiny@1"] {
        expect_problem(
            &submit(x, t, &prompt(bad, "hi", 4))?,
            400,
            "invalid_request",
        )?;
    }
    let big = "a".repeat(edgecoder_proto::inference::MAX_INPUT_BYTES + 1);
    expect_problem(
        &submit(x, t, &prompt(served, &big, 4))?,
        422,
        "input_too_large",
    )?;
    let many = edgecoder_proto::inference::MAX_NEW_TOKENS + 1;
    expect_problem(
        &submit(x, t, &prompt(served, "hi", many))?,
        422,
        "limits_exceeded",
    )?;
    let mut hot = prompt(served, "hi", 4);
    hot["temperature"] = json!(1000.0);
    expect_problem(&submit(x, t, &hot)?, 400, "invalid_request")?;
    let mut stops = prompt(served, "hi", 4);
    stops["stop"] = json!(["a", "b", "c", "d", "e"]);
    expect_problem(&submit(x, t, &stops)?, 422, "limits_exceeded")?;
    let mut extra = prompt(served, "hi", 4);
    extra["path"] = json!("/models/x.onnx");
    expect_problem(&submit(x, t, &extra)?, 400, "invalid_request")?;
    expect_problem(
        &submit(x, t, &prompt(served, "", 4))?,
        400,
        "invalid_request",
    )?;
    // An inference task cannot come in through the wasm route.
    let via_tasks = json!({"kind": "inference", "model": served, "input": {"text": "hi"}});
    let r = x.send("POST", "/mesh/tasks", Some(t), Some(&via_tasks), &[])?;
    if r.status != 400 {
        return Err(format!("inference through /mesh/tasks: {}", r.status));
    }
    let v = want(&submit(x, t, &prompt(served, "hi", 4))?, 201, "submit")?;
    let id = v["task_id"].as_str().unwrap_or("");
    // The stored input is the request itself, content-addressed.
    let got = want(
        &x.send("GET", &format!("/mesh/inference/{id}"), Some(t), None, &[])?,
        200,
        "read",
    )?;
    if got["status"] != "queued" || got["model"] != served || got["request"]["max_new_tokens"] != 4
    {
        return Err(format!("stored task {got}"));
    }
    // Owner only: another user, even an operator, sees nothing.
    let other = x.account("inf-other", true)?;
    expect_problem(
        &x.send(
            "GET",
            &format!("/mesh/inference/{id}"),
            Some(&other.access),
            None,
            &[],
        )?,
        404,
        "task_not_found",
    )?;
    let (_, admin) = x.admin()?;
    expect_problem(
        &x.send(
            "GET",
            &format!("/mesh/inference/{id}"),
            Some(&admin),
            None,
            &[],
        )?,
        404,
        "task_not_found",
    )?;
    Ok(())
}

fn report(x: &Ctx, node: &Node, task_id: &str, body: &Json) -> Result<crate::Reply, String> {
    signed(
        x,
        node,
        "POST",
        &format!("/mesh/tasks/{task_id}/result"),
        Some(body),
        &Default::default(),
    )
}

fn inference_results_must_match_the_lease_and_model(x: &Ctx) -> Result<(), String> {
    let model = "result-byte@1";
    let host = gpu_node(x, "inf-result-host", &[model])?;
    let user = x.account("inf-result", true)?;
    let v = want(
        &submit(x, &user.access, &prompt(model, "hello", 3))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let p = want(&pull(x, &host)?, 200, "pull")?;
    if p["task"]["id"] != id.as_str()
        || p["task"]["kind"] != "inference"
        || p["task"]["model"] != model
    {
        return Err(format!("pulled {p}"));
    }
    let lease = p["lease_id"].as_str().unwrap_or("").to_owned();
    // The input is the frozen request.
    let bytes = STANDARD
        .decode(p["task"]["input"]["bytes"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    if p["task"]["input"]["digest"] != format!("blake3:{}", blake3::hash(&bytes).to_hex()) {
        return Err("the input does not match its digest".into());
    }
    // The input is the request with a nonce: its digest, which the ledger
    // publishes, is no plain hash of the prompt.
    let input: Json = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let req = &input["request"];
    if req["model"] != model
        || req["input"]["text"] != "hello"
        || input["nonce"].as_str().is_none_or(|n| n.len() != 32)
    {
        return Err(format!("input {input}"));
    }
    // Another user cannot name the prompt's blob in a task of their own (a
    // module that echoes its input would read the prompt back).
    let thief = x.account("inf-thief", true)?;
    let module = b"\0asm\x01\0\0\0";
    let steal = json!({
        "kind": "wasm",
        "module": {"digest": format!("blake3:{}", blake3::hash(module).to_hex()), "bytes": STANDARD.encode(module)},
        "input": {"digest": p["task"]["input"]["digest"]},
        "timeout_ms": 1000, "resources": {"memory_mb": 16, "fuel": 1000},
    });
    expect_problem(
        &x.send(
            "POST",
            "/mesh/tasks",
            Some(&thief.access),
            Some(&steal),
            &[],
        )?,
        422,
        "blob_unknown",
    )?;
    // Nor can an operator read it through the wasm task route.
    let (_, admin) = x.admin()?;
    expect_problem(
        &x.send("GET", &format!("/mesh/tasks/{id}"), Some(&admin), None, &[])?,
        404,
        "task_not_found",
    )?;
    let output = b"abc";
    let good = |m: &str| {
        json!({
            "lease_id": lease, "ok": true, "output": STANDARD.encode(output),
            "output_digest": format!("blake3:{}", blake3::hash(output).to_hex()),
            "duration_ms": 5,
            "inference": {"model": m, "model_manifest_digest": format!("blake3:{}", "ab".repeat(32)),
                          "seed": 7, "input_tokens": 5, "output_tokens": 3, "finish_reason": "length"},
        })
    };
    expect_problem(
        &report(x, &host, &id, &good("other-byte@1"))?,
        422,
        "result_mismatch",
    )?;
    let mut bare = good(model);
    bare.as_object_mut().map(|o| o.remove("inference"));
    expect_problem(&report(x, &host, &id, &bare)?, 422, "result_mismatch")?;
    // What it reports must fit the request: its seed, at most the tokens
    // asked for.
    let mut seed = good(model);
    seed["inference"]["seed"] = json!(8);
    expect_problem(&report(x, &host, &id, &seed)?, 422, "result_mismatch")?;
    let mut tokens = good(model);
    tokens["inference"]["output_tokens"] = json!(4);
    expect_problem(&report(x, &host, &id, &tokens)?, 422, "result_mismatch")?;
    let mut wrong = good(model);
    wrong["lease_id"] = json!("not-the-lease");
    expect_problem(&report(x, &host, &id, &wrong)?, 409, "lease_invalid")?;
    let done = want(&report(x, &host, &id, &good(model))?, 200, "report")?;
    if done["status"] != "completed" {
        return Err(format!("report answer {done}"));
    }
    let got = want(
        &x.send(
            "GET",
            &format!("/mesh/inference/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "read",
    )?;
    if got["output_text"] != "abc"
        || got["inference"]["model"] != model
        || got["completed_by"] != host.id.as_str()
    {
        return Err(format!("result {got}"));
    }
    // A host's failure carries no report and still lands: the code is kept
    // (a non-retryable one fails the task) and the ledger records it. (Another
    // host: the four refused reports above cost this one its reputation,
    // and with it most of its work.)
    let host = gpu_node(x, "inf-result-host2", &[model])?;
    let v = want(
        &submit(x, &user.access, &prompt(model, "again", 3))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let p = want(&pull(x, &host)?, 200, "pull")?;
    let lease = p["lease_id"].as_str().unwrap_or("").to_owned();
    let failure = json!({"lease_id": lease, "ok": false, "duration_ms": 2, "error_code": "input_too_large", "stderr": "too big"});
    let done = want(&report(x, &host, &id, &failure)?, 200, "failure report")?;
    if done["status"] != "failed" || done["ledger_index"].as_u64().is_none() {
        return Err(format!("failure answer {done}"));
    }
    let got = want(
        &x.send(
            "GET",
            &format!("/mesh/inference/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "read failure",
    )?;
    if got["status"] != "failed" || got["error_code"] != "input_too_large" {
        return Err(format!("failed task {got}"));
    }
    Ok(())
}

/// Publishes the kit's model directory as a signed release at a local
/// origin, rolled out to every host. Its release digest.
fn publish_kit_model(x: &Ctx) -> Result<String, String> {
    let kit = kit();
    let dir = kit.models.join(MODEL);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let files = names
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(dir.join(&path)).map_err(|e| e.to_string())?;
            Ok(edgecoder_proto::model::ManifestFile {
                path,
                size: bytes.len() as u64,
                digest: format!("blake3:{}", blake3::hash(&bytes).to_hex()),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let family = MODEL.split('@').next().unwrap_or(MODEL);
    let key = crate::models::publisher(family);
    let origin = format!("file://{}", kit.models.display());
    let (_, admin) = x.admin()?;
    let r = crate::models::put_policy(
        x,
        &admin,
        family,
        &crate::models::policy_body(&[&key], 1, &[&origin]),
    )?;
    want(&r, 200, "the kit model's policy")?;
    let m = crate::models::manifest(MODEL, files, &key);
    crate::models::publish_release(x, &admin, &m, &[&key], &format!("{origin}/{MODEL}"))
}

fn gpu_host(kit: &Kit, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(&kit.gpu_host)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("edgecoder-gpu-host");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn gpu_host_serves_inference_and_agents_never_get_it(x: &Ctx) -> Result<(), String> {
    let kit = kit();
    let base = x.target.base.clone();
    let owner = x.account("inf-e2e-owner", true)?;
    let node_id = format!("gpu-{}", &Node::new(x, "inf-e2e").id[2..]);
    let node_id: String = node_id.chars().take(60).collect();
    let token = enroll_gpu_host(x, &owner, &node_id)?;
    let dir = std::env::temp_dir().join(format!("edgecoder-gpu-{}-{node_id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out) = gpu_host(kit, &dir, &["init", "--node-id", &node_id]);
    if code != 0 {
        return Err(format!("init: {out}"));
    }
    let family = MODEL.split('@').next().unwrap_or(MODEL);
    let (code, out) = gpu_host(
        kit,
        &dir,
        &[
            "register",
            "--coordinator",
            &base,
            "--token",
            &token,
            "--family",
            family,
        ],
    );
    if code != 0 {
        return Err(format!("register: {out}"));
    }
    let release_digest = publish_kit_model(x)?;
    let engine: Vec<String> = vec![
        "--guest".into(),
        kit.guest.to_string_lossy().into_owned(),
        "--onnxruntime".into(),
        kit.onnxruntime.to_string_lossy().into_owned(),
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--once"];
        args.extend(engine.iter().map(String::as_str));
        args.extend(extra);
        gpu_host(kit, &dir, &args)
    };
    // Pending: a round heartbeats and takes nothing.
    let (code, out) = run(&[]);
    if code != 0 || !(out.contains("not active") || out.contains("node_not_active")) {
        return Err(format!("pending round: {out}"));
    }
    let (_, admin) = x.admin()?;
    want(
        &x.send(
            "POST",
            &format!("/mesh/nodes/{node_id}/approve"),
            Some(&admin),
            Some(&json!({"reason": "suite"})),
            &[],
        )?,
        200,
        "approve",
    )?;
    // Approved: its first heartbeat brings the assigned release, which it
    // verifies (signatures, every file's blake3) before it reports serving it.
    let (code, out) = run(&[]);
    if code != 0 || !out.contains("verified") {
        return Err(format!("first round: {out}"));
    }
    let view = want(
        &x.send(
            "GET",
            &format!("/mesh/nodes/{node_id}"),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "node",
    )?;
    if view["kind"] != "gpu-host" {
        return Err(format!("node view {view}"));
    }

    let user = x.account("inf-e2e-user", true)?;
    let request = json!({
        "model": MODEL, "input": {"text": "fn main() {"}, "max_new_tokens": 16,
        "temperature": 0.8, "seed": 7, "stop": [],
    });
    let v = want(&submit(x, &user.access, &request)?, 201, "submit")?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();

    // A wasm agent that pulls now gets nothing: inference is not its kind.
    let (_, agent) = crate::mesh::active(x, "inf-wasm-agent")?;
    let r = pull(x, &agent)?;
    if r.status == 200 && r.json()?["task"]["id"] == id.as_str() {
        return Err("a wasm agent was given an inference task".into());
    }

    let (code, out) = run(&[]);
    if code != 0 || !out.contains("reported (ok)") {
        return Err(format!("work round: {out}"));
    }
    let got = want(
        &x.send(
            "GET",
            &format!("/mesh/inference/{id}"),
            Some(&user.access),
            None,
            &[],
        )?,
        200,
        "read",
    )?;
    let expected = reference(kit, &request);
    let output = STANDARD
        .decode(got["output"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let hex: String = output.iter().map(|b| format!("{b:02x}")).collect();
    if got["status"] != "completed" || hex != expected["output_hex"] {
        return Err(format!("answer {got}; python onnxruntime says {expected}"));
    }
    let inf = &got["inference"];
    if inf["model"] != MODEL
        || inf["seed"] != 7
        || inf["output_tokens"] != 16
        || inf["input_tokens"] != 11
        || inf["finish_reason"] != expected["finish"]
    {
        return Err(format!("inference report {inf}"));
    }
    // The manifest digest the host resolved is the signed release's.
    let digest = release_digest;
    if inf["model_manifest_digest"] != digest.as_str() {
        return Err(format!(
            "manifest digest {} want {digest}",
            inf["model_manifest_digest"]
        ));
    }
    // The completion is in the ledger with the model and its digest.
    let index = got["ledger_index"].as_u64().ok_or("no ledger index")?;
    let (kind, payload) = crate::models::ledger_entry(x, index)?;
    if kind != "edgecoder.dev/task-completion/v1" {
        return Err(format!("ledger entry type {kind}"));
    }
    if payload["model"] != MODEL
        || payload["model_manifest_digest"] != digest.as_str()
        || payload["output_digest"] != format!("blake3:{}", blake3::hash(&output).to_hex())
    {
        return Err(format!("ledger payload {payload}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
