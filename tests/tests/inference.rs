//! The inference guest under the GPU host, in process, on real onnxruntime
//! (the PyPI wheel's library) with the project's own test model.
//!
//! - Known answers: the guest's output for fixed prompts and seeds equals
//!   what Python onnxruntime computes over the same model with the same
//!   decode loop (`tests/inference/reference.py`), greedy and sampled, with
//!   stop sequences and a full context; the same request twice gives the
//!   same bytes.
//! - Refusals, each a typed error with the host still serving afterwards:
//!   an unknown model, a model file that differs from its manifest, a prompt
//!   over the input limit, too many tokens, a guest that loops (deadline), a
//!   guest that grows its memory past the cap, and a guest reaching for
//!   model bytes of its own or a model its request did not name.
//! - The WIT contract: the vendored wasi-nn WIT is the one wasmtime-wasi-nn
//!   ships, and the built guest's world is the one in `wit/inference`.
//! - Metrics: counted and served on loopback only.
//! - The GPU check (CUDA provider against CPU) runs where a GPU is present
//!   (`scripts/gpu-check.sh`) and is skipped cleanly otherwise.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edgecoder_conformance::harness::workspace_root;
use edgecoder_conformance::inference::{Kit, MODEL, add_model, kit, reference};
use edgecoder_gpu_host::host::{Device, Host, HostLimits, InferenceError, init_onnxruntime};
use edgecoder_gpu_host::metrics::{self, Metrics};
use edgecoder_gpu_host::models::ModelDir;
use edgecoder_gpu_host::worker::finish_name;
use edgecoder_proto::inference::{InferenceRequest, Prompt};
use serde_json::{Value as Json, json};

fn ready() -> &'static Kit {
    static INIT: OnceLock<()> = OnceLock::new();
    let kit = kit();
    INIT.get_or_init(|| init_onnxruntime(&kit.onnxruntime).expect("onnxruntime"));
    kit
}

fn host_with(guest: &Path, models: &Path, limits: HostLimits) -> (Host, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let host = Host::new(
        guest,
        Box::new(ModelDir::open(models).expect("models")),
        Device::Cpu,
        limits,
        metrics.clone(),
    )
    .expect("host");
    (host, metrics)
}

fn host() -> (Host, Arc<Metrics>) {
    let kit = ready();
    host_with(&kit.guest, &kit.models, HostLimits::default())
}

fn request(j: &Json) -> InferenceRequest {
    serde_json::from_value(j.clone()).expect("request")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgecoder-inf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[test]
fn known_answers_match_python_onnxruntime() {
    let (host, _) = host();
    let kit = ready();
    let cases = [
        json!({"model": MODEL, "input": {"text": "fn main() {"}, "max_new_tokens": 24, "temperature": 0.0, "seed": 0, "stop": []}),
        json!({"model": MODEL, "input": {"text": "fn main() {"}, "max_new_tokens": 24, "temperature": 0.8, "seed": 7, "stop": []}),
        json!({"model": MODEL, "input": {"tokens": [1, 2, 3, 250]}, "max_new_tokens": 32, "temperature": 1.3, "seed": 42, "stop": []}),
        // The greedy answer above starts cf 7f 7c: a stop sequence ends it there.
        json!({"model": MODEL, "input": {"text": "fn main() {"}, "max_new_tokens": 24, "temperature": 0.0, "seed": 0, "stop": ["\u{7f}|"]}),
        // 60 prompt bytes in a 64-token context: four tokens, then full.
        json!({"model": MODEL, "input": {"text": "x".repeat(60)}, "max_new_tokens": 16, "temperature": 0.5, "seed": 3, "stop": []}),
    ];
    let mut finishes = Vec::new();
    for case in cases {
        let got = host.run(&request(&case)).result.expect("runs");
        let want = reference(kit, &case);
        assert_eq!(hex(&got.output), want["output_hex"], "{case}");
        assert_eq!(json!(got.output_tokens), want["output_tokens"], "{case}");
        assert_eq!(finish_name(got.finish), want["finish"], "{case}");
        assert_eq!(
            got.timings.forward_passes as usize,
            got.output_tokens.len(),
            "{case}"
        );
        finishes.push(finish_name(got.finish));
    }
    assert_eq!(
        finishes,
        ["length", "length", "length", "stop", "context-full"]
    );
}

#[test]
fn the_same_request_twice_gives_identical_bytes() {
    let (host, _) = host();
    let r = request(
        &json!({"model": MODEL, "input": {"text": "let x ="}, "max_new_tokens": 20, "temperature": 0.9, "seed": 11}),
    );
    let a = host.run(&r);
    let b = host.run(&r);
    assert!(
        a.loaded_graph && !b.loaded_graph,
        "one graph load, then the cache"
    );
    let (a, b) = (a.result.expect("first"), b.result.expect("second"));
    assert_eq!(a.output, b.output);
    assert_eq!(a.output_tokens, b.output_tokens);
    assert_eq!(a.model_manifest_digest, b.model_manifest_digest);
    let mut other_seed = r.clone();
    other_seed.seed = 12;
    let c = host.run(&other_seed).result.expect("third");
    assert_ne!(a.output_tokens, c.output_tokens, "the seed drives sampling");
}

fn still_serves(host: &Host) {
    let r = request(&json!({"model": MODEL, "input": {"text": "ok"}, "max_new_tokens": 2}));
    assert!(host.run(&r).result.is_ok(), "the host must keep serving");
}

#[test]
fn unknown_models_and_bad_limits_are_typed_refusals() {
    let (host, _) = host();
    let unknown =
        request(&json!({"model": "absent@1", "input": {"text": "hi"}, "max_new_tokens": 2}));
    assert!(matches!(
        host.run(&unknown).result,
        Err(InferenceError::ModelNotFound(_))
    ));
    still_serves(&host);
    let big = InferenceRequest {
        model: MODEL.into(),
        input: Prompt::Text("a".repeat(edgecoder_proto::inference::MAX_INPUT_BYTES + 1)),
        max_new_tokens: 2,
        temperature: 0.0,
        seed: 0,
        stop: vec![],
    };
    assert!(matches!(
        host.run(&big).result,
        Err(InferenceError::InputTooLarge(_))
    ));
    let many = request(&json!({"model": MODEL, "input": {"text": "hi"}, "max_new_tokens": 100000}));
    assert!(matches!(
        host.run(&many).result,
        Err(InferenceError::LimitsExceeded(_))
    ));
    // Over the model's context before any token is generated.
    let long =
        request(&json!({"model": MODEL, "input": {"text": "y".repeat(65)}, "max_new_tokens": 2}));
    assert!(matches!(
        host.run(&long).result,
        Err(InferenceError::LimitsExceeded(_))
    ));
    let token =
        request(&json!({"model": MODEL, "input": {"tokens": [1, 256]}, "max_new_tokens": 2}));
    assert!(matches!(
        host.run(&token).result,
        Err(InferenceError::LimitsExceeded(_))
    ));
    still_serves(&host);
}

#[test]
fn a_model_file_that_differs_from_its_manifest_is_refused() {
    let kit = ready();
    let models = scratch("tampered");
    add_model(kit, &models, "tampered@1");
    let file = models.join("tampered@1/model.onnx");
    let mut bytes = std::fs::read(&file).expect("model");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write");
    add_model(kit, &models, MODEL);
    let (host, metrics) = host_with(&kit.guest, &models, HostLimits::default());
    assert_eq!(
        host.models(),
        vec!["tampered@1".to_owned(), MODEL.to_owned()]
    );
    let r = request(&json!({"model": "tampered@1", "input": {"text": "hi"}, "max_new_tokens": 2}));
    match host.run(&r).result {
        Err(InferenceError::ModelNotApproved(m)) => assert!(m.contains("digest"), "{m}"),
        other => panic!("a tampered model must be refused: {other:?}"),
    }
    still_serves(&host);
    // It is no longer advertised to the coordinator (no task is sent to a
    // host that would refuse it again).
    assert_eq!(host.models(), vec![MODEL.to_owned()]);
    let text = metrics.render();
    assert!(
        text.contains(
            "edgecoder_inference_errors_total{model=\"tampered@1\",code=\"model-not-approved\"} 1"
        ),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&models);
}

#[test]
fn a_guest_that_loops_is_stopped_at_its_deadline() {
    let kit = ready();
    let limits = HostLimits {
        deadline: Duration::from_millis(300),
        ..HostLimits::default()
    };
    let (host, _) = host_with(&kit.hostile_guest, &kit.models, limits);
    let r = request(&json!({"model": MODEL, "input": {"text": "loop"}, "max_new_tokens": 2}));
    let o = host.run(&r);
    match o.result {
        Err(InferenceError::LimitsExceeded(m)) => assert!(m.contains("deadline"), "{m}"),
        other => panic!("a looping guest must hit the deadline: {other:?}"),
    }
    assert!(
        o.interrupted,
        "reported as interrupted (a timeout to the mesh)"
    );
    assert!(
        o.elapsed < Duration::from_secs(5),
        "stopped near its deadline: {:?}",
        o.elapsed
    );
    // The next request gets a fresh store and its own deadline.
    let again = host.run(&r);
    assert!(matches!(
        again.result,
        Err(InferenceError::LimitsExceeded(_))
    ));
}

#[test]
fn a_guest_that_grows_memory_past_the_cap_is_stopped() {
    let kit = ready();
    let limits = HostLimits {
        memory_bytes: 32 << 20,
        ..HostLimits::default()
    };
    let (host, _) = host_with(&kit.hostile_guest, &kit.models, limits);
    let r = request(&json!({"model": MODEL, "input": {"text": "grow"}, "max_new_tokens": 2}));
    match host.run(&r).result {
        Err(InferenceError::LimitsExceeded(m)) => assert!(m.contains("memory"), "{m}"),
        other => panic!("a growing guest must hit the memory cap: {other:?}"),
    }
    let escape =
        request(&json!({"model": MODEL, "input": {"text": "escape"}, "max_new_tokens": 2}));
    assert!(
        host.run(&escape).result.is_ok(),
        "the host serves after a memory refusal"
    );
}

#[test]
fn a_guest_gets_only_the_model_its_request_names() {
    let kit = ready();
    let (host, _) = host_with(&kit.hostile_guest, &kit.models, HostLimits::default());
    let r = request(&json!({"model": MODEL, "input": {"text": "escape"}, "max_new_tokens": 2}));
    let out = host.run(&r).result.expect("the escape guest answers");
    assert_eq!(
        String::from_utf8_lossy(&out.output),
        "load:refused;other:refused;named:given",
        "graph bytes of its own and other models must be refused"
    );
}

#[test]
fn the_vendored_wasi_nn_wit_is_the_one_wasmtime_wasi_nn_ships() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .expect("cargo metadata");
    let meta: Json = serde_json::from_slice(&out.stdout).expect("metadata");
    let manifest = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "wasmtime-wasi-nn"))
        .and_then(|p| p["manifest_path"].as_str())
        .expect("wasmtime-wasi-nn in the lockfile");
    let shipped = Path::new(manifest)
        .with_file_name("wit")
        .join("wasi-nn.wit");
    let ours = workspace_root().join("wit/inference/deps/wasi-nn/wasi-nn.wit");
    assert_eq!(
        std::fs::read_to_string(&ours).expect("ours"),
        std::fs::read_to_string(&shipped).expect("shipped"),
        "wit/inference/deps/wasi-nn drifted from {}",
        shipped.display()
    );
}

fn component_wit(path: &Path) -> String {
    edgecoder_conformance::wasm::component_wit(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The items (types, functions, uses) of `interface name { ... }` in
/// rendered WIT, without comments, blank lines or indentation (a package's
/// interfaces render nested in a component's WIT and at top level in a
/// package's), as a set: a component lists types in the order it uses them.
fn interface(wit: &str, name: &str) -> std::collections::BTreeSet<Vec<String>> {
    let lines: Vec<&str> = wit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect();
    let start = lines
        .iter()
        .position(|l| *l == format!("interface {name} {{"))
        .unwrap_or_else(|| panic!("no interface {name} in:\n{wit}"));
    let mut depth = 1i32;
    let mut items = std::collections::BTreeSet::new();
    let mut item = Vec::new();
    for l in &lines[start + 1..] {
        depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
        if depth == 0 {
            break;
        }
        item.push(
            match l.strip_prefix("use ").and_then(|u| u.split_once(".{")) {
                // `use types.{a, b};` names in any order.
                Some((from, names)) => {
                    let mut names: Vec<&str> = names.trim_end_matches("};").split(", ").collect();
                    names.sort_unstable();
                    format!("use {from}.{{{}}};", names.join(", "))
                }
                None => (*l).to_owned(),
            },
        );
        if depth == 1 {
            items.insert(std::mem::take(&mut item));
        }
    }
    items
}

#[test]
fn the_built_guest_has_the_world_in_the_wit_files() {
    let kit = ready();
    edgecoder_conformance::wasm::validate(&kit.guest, edgecoder_conformance::wasm::Features::All)
        .unwrap_or_else(|e| panic!("{e}"));
    let guest = component_wit(&kit.guest);
    let source = component_wit(&workspace_root().join("wit/inference"));
    // Our package only: wasi:nn has an interface called `inference` too. A
    // component renders it as a nested package; the source renders it at
    // top level with its dependencies nested after it.
    let ours_in_guest = guest
        .split_once("package edgecoder:inference@0.1.0 {")
        .map(|(_, rest)| rest)
        .expect("the guest carries the edgecoder:inference package");
    let ours_in_source = source.split("\npackage wasi:").next().unwrap_or_default();
    // Every interface of the package, as compiled into the guest, is the
    // one the WIT files declare (the host's bindings come from the same
    // files at build time and are checked by instantiation).
    for name in ["types", "models", "inference"] {
        assert_eq!(
            interface(ours_in_guest, name),
            interface(ours_in_source, name),
            "interface {name} drifted"
        );
    }
    let lines: Vec<&str> = guest.lines().map(str::trim).collect();
    for line in [
        "export edgecoder:inference/inference@0.1.0;",
        "import edgecoder:inference/models@0.1.0;",
        "import wasi:nn/graph@0.2.0-rc-2024-10-28;",
        "import wasi:nn/inference@0.2.0-rc-2024-10-28;",
    ] {
        assert!(lines.contains(&line), "the guest lacks `{line}`:\n{guest}");
    }
    // Nothing beyond what the host grants: no files, sockets or HTTP.
    for banned in ["wasi:filesystem", "wasi:sockets", "wasi:http"] {
        assert!(!guest.contains(banned), "the guest imports {banned}");
    }
}

#[test]
fn metrics_count_requests_and_are_served_on_loopback_only() {
    let (host, metrics) = host();
    let r = request(&json!({"model": MODEL, "input": {"text": "m"}, "max_new_tokens": 3}));
    assert!(host.run(&r).result.is_ok());
    let unknown =
        request(&json!({"model": "absent@1", "input": {"text": "m"}, "max_new_tokens": 3}));
    assert!(host.run(&unknown).result.is_err());
    assert!(metrics::serve("0.0.0.0:0".parse().expect("addr"), metrics.clone()).is_err());
    let addr =
        metrics::serve("127.0.0.1:0".parse().expect("addr"), metrics.clone()).expect("serve");
    let get = |head: &str| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(head.as_bytes()).expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        text
    };
    // A page elsewhere rebinding its name to 127.0.0.1 sends its own Host.
    let rebound = get("GET /metrics HTTP/1.1\r\nhost: attacker.example:9464\r\n\r\n");
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    // A client holding a connection open does not stop a scrape.
    let _idle = std::net::TcpStream::connect(addr).expect("connect");
    let text = get(&format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\n\r\n"));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        format!("edgecoder_inference_requests_total{{model=\"{MODEL}\",outcome=\"ok\"}} 1"),
        "edgecoder_inference_errors_total{model=\"absent@1\",code=\"model-not-found\"} 1"
            .to_owned(),
        format!("edgecoder_inference_tokens_generated_total{{model=\"{MODEL}\"}} 3"),
        format!("edgecoder_inference_graph_loads_total{{model=\"{MODEL}\"}} 1"),
        format!("edgecoder_inference_request_duration_seconds_count{{model=\"{MODEL}\"}} 1"),
    ] {
        assert!(text.contains(&line), "missing {line}:\n{text}");
    }
    assert!(
        text.contains("edgecoder_inference_tokens_per_second{"),
        "{text}"
    );
    let other = get("GET /infer HTTP/1.1\r\nhost: localhost\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn gpu_cuda_provider_matches_cpu_where_a_gpu_is_present() {
    let has_gpu = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_gpu {
        eprintln!("skipped: no NVIDIA GPU here (run scripts/gpu-check.sh on a GPU machine)");
        return;
    }
    let status = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/gpu-check.sh"))
        .status()
        .expect("gpu-check");
    assert!(status.success(), "scripts/gpu-check.sh failed");
}
