//! The agent against a fake coordinator on a loopback socket: every request
//! must carry a signature that the protocol crate's RFC 9421 verifier accepts
//! for exactly the URL and body sent, and the runner must react to each answer as the
//! protocol says. Also drives the binary (`init`, `status`, `run --once`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_agent::client::{MeshClient, Pull};
use edgecoder_agent::node::{self, Node};
use edgecoder_agent::runner::{Runner, Step};
use edgecoder_agent::sandbox::{Sandbox, digest};
use edgecoder_proto::httpsig::{HeaderMap, Signed, Target};
use edgecoder_proto::mesh::{DeviceType, FailureCode, NoTaskReason};
use p256::ecdsa::VerifyingKey;
use serde_json::{Value, json};

/// One request as the fake coordinator saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
    /// Whether the signature verified for this method, target and body.
    verified: Result<(), String>,
    keyid: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body,
    }
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A coordinator that verifies signatures with `key` and answers with
/// `handler` (given the request and how many came before it).
fn fake_coordinator(key: VerifyingKey, handler: Box<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let request = read_request(&stream, &key);
            let Some(request) = request else { continue };
            let count = {
                let mut log = log.lock().expect("log");
                log.push(request.clone());
                log.len() - 1
            };
            write_reply(stream, &handler(&request, count));
        }
    });
    (url, seen)
}

fn read_request(stream: &TcpStream, key: &VerifyingKey) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    // The request as the coordinator derives it: the Host it was sent to,
    // the path and query as received.
    let mut map = HeaderMap::new();
    for (k, v) in &headers {
        if let (Ok(k), Ok(v)) = (
            k.parse::<edgecoder_proto::httpsig::HeaderName>(),
            v.parse::<edgecoder_proto::httpsig::HeaderValue>(),
        ) {
            map.append(k, v);
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    let checked = Signed::from_headers(&map).and_then(|signed| {
        let t = Target::new(
            &method,
            "http",
            &header("host").unwrap_or_default(),
            path,
            query,
        )?;
        signed
            .prepare(&t, &map, &body, edgecoder_agent::client::unix_now())?
            .verify(key)?;
        Ok(signed.params.keyid)
    });
    let (verified, keyid) = match checked {
        Ok(keyid) => (Ok(()), keyid),
        Err(e) => (Err(e.to_string()), String::new()),
    };
    Some(Seen {
        method,
        target,
        body,
        verified,
        keyid,
    })
}

fn write_reply(mut stream: TcpStream, r: &Reply) {
    let body = if r.status == 204 {
        Vec::new()
    } else {
        serde_json::to_vec(&r.body).expect("json")
    };
    let kind = if r.status >= 400 {
        "application/problem+json"
    } else {
        "application/json"
    };
    let mut head = format!(
        "HTTP/1.1 {} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n",
        r.status,
        body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn temp_dir(name: &str) -> PathBuf {
    let mut suffix = [0u8; 8];
    node::random_bytes(&mut suffix).expect("randomness");
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("edgecoder-agent-it-{name}-{hex}"))
}

fn new_node(name: &str) -> (Node, PathBuf) {
    let dir = temp_dir(name);
    let node = Node::init(&dir, Some("edge-node-1"), node::DEFAULT_KIND, false).expect("init");
    (node, dir)
}

const UPPERCASE: &str = r#"(module
    (import "edgecoder" "input_len" (func $len (result i32)))
    (import "edgecoder" "read_input" (func $read (param i32 i32) (result i32)))
    (import "edgecoder" "write_output" (func $write (param i32 i32)))
    (memory (export "memory") 1)
    (func (export "run")
        (local $n i32) (local $i i32) (local $c i32)
        (local.set $n (call $read (i32.const 0) (call $len)))
        (block $done (loop $next
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $c (i32.load8_u (local.get $i)))
            (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
                (then (i32.store8 (local.get $i) (i32.sub (local.get $c) (i32.const 32)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))
        (call $write (i32.const 0) (local.get $n))))"#;

fn policy(work: &str) -> Value {
    json!({
        "allowed_task_kinds": ["wasm"], "max_memory_mb": 512, "max_fuel": 10_000_000_000u64,
        "max_timeout_ms": 300_000, "work": work, "reason": "unrestricted",
        "policy_version": 1, "blacklist_version": 0, "idle_only": false
    })
}

fn heartbeat_answer(work: &str) -> Reply {
    reply(
        200,
        json!({"node_id": "edge-node-1", "status": "active", "policy": policy(work), "heartbeat_interval_secs": 10}),
    )
}

fn task_answer(module: &[u8], input: &[u8]) -> Reply {
    reply(
        200,
        json!({
            "task": {
                "id": "task-1", "kind": "wasm",
                "module": {"digest": digest(module), "bytes": STANDARD.encode(module)},
                "input": {"digest": digest(input), "bytes": STANDARD.encode(input)},
                "timeout_ms": 5000, "resources": {"memory_mb": 16, "fuel": 10_000_000}
            },
            "lease_id": "lease-1", "lease_expires_at": "2030-01-01T00:00:00Z", "policy_version": 1
        }),
    )
}

fn problem(status: u16, code: &str) -> Reply {
    reply(
        status,
        json!({"type": "about:blank", "title": "refused", "status": status, "code": code}),
    )
}

fn no_work() -> Reply {
    Reply {
        status: 204,
        headers: vec![("edgecoder-reason", "no_work".into())],
        body: Value::Null,
    }
}

/// Routes like the coordinator: heartbeat, pull (a task first, then none),
/// result.
fn coordinator(module: Vec<u8>, input: Vec<u8>) -> Box<Handler> {
    let pulls = Mutex::new(0u32);
    Box::new(
        move |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("POST", "/mesh/heartbeat") => heartbeat_answer("any"),
            ("POST", "/mesh/tasks/pull") => {
                let mut n = pulls.lock().expect("pulls");
                *n += 1;
                if *n == 1 {
                    task_answer(&module, &input)
                } else {
                    no_work()
                }
            }
            ("POST", "/mesh/tasks/task-1/result") => {
                reply(200, json!({"task_id": "task-1", "status": "completed"}))
            }
            ("GET", "/mesh/nodes/edge-node-1") => reply(
                200,
                json!({"node_id": "edge-node-1", "kind": "agent", "status": "active", "key_id": seen.keyid}),
            ),
            _ => problem(404, "not_found"),
        },
    )
}

fn runner(url: &str, node: &Node) -> Runner {
    let client = MeshClient::new(url, node.signing_key().clone()).expect("client");
    Runner::new(client, Sandbox::new().expect("sandbox"), DeviceType::Server)
}

#[test]
fn one_round_heartbeats_pulls_runs_and_reports_signed() {
    let (node, dir) = new_node("round");
    let module = wat::parse_str(UPPERCASE).expect("wat");
    let (url, seen) = fake_coordinator(
        *node.signing_key().verifying_key(),
        coordinator(module, b"edge mesh".to_vec()),
    );
    let mut r = runner(&url, &node);
    let step = r.once().expect("round");
    assert_eq!(
        step,
        Step::Worked {
            task_id: "task-1".into(),
            error_code: None
        }
    );
    assert_eq!(
        r.once().expect("round"),
        Step::Idle(Some(NoTaskReason::NoWork))
    );

    let seen = seen.lock().expect("log").clone();
    let targets: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("POST", "/mesh/heartbeat"),
            ("POST", "/mesh/tasks/pull"),
            ("POST", "/mesh/tasks/task-1/result"),
            ("POST", "/mesh/heartbeat"),
            ("POST", "/mesh/tasks/pull"),
        ]
    );
    for s in &seen {
        assert_eq!(s.verified, Ok(()), "{} {}", s.method, s.target);
        assert_eq!(s.keyid, node.key_id());
    }
    let telemetry = seen[0].json();
    for field in [
        "cpu_percent",
        "memory_used_mb",
        "memory_total_mb",
        "battery_percent",
        "on_external_power",
        "low_power_mode",
        "thermal_state",
        "device_type",
        "sandbox_ready",
        "active_model",
    ] {
        assert!(telemetry.get(field).is_some(), "telemetry.{field}");
    }
    assert_eq!(telemetry["device_type"], "server");
    assert_eq!(seen[1].json(), json!({}));
    let result = seen[2].json();
    assert_eq!(result["lease_id"], "lease-1");
    assert_eq!(result["ok"], true);
    assert_eq!(result["output"], STANDARD.encode(b"EDGE MESH"));
    assert_eq!(result["output_digest"], digest(b"EDGE MESH"));
    assert_eq!(result["error_code"], Value::Null);
    assert!(result["fuel_used"].as_u64().expect("fuel") > 0);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn hostile_tasks_are_reported_as_failures() {
    let (node, dir) = new_node("hostile");
    let module =
        wat::parse_str(r#"(module (func (export "run") (loop $l (br $l))))"#).expect("wat");
    let (url, seen) = fake_coordinator(
        *node.signing_key().verifying_key(),
        coordinator(module, Vec::new()),
    );
    // Little fuel is granted by the task: 10 M instructions of spinning.
    let step = runner(&url, &node).once().expect("round");
    assert_eq!(
        step,
        Step::Worked {
            task_id: "task-1".into(),
            error_code: Some(FailureCode::FuelExhausted)
        }
    );
    let result = seen.lock().expect("log")[2].json();
    assert_eq!(result["ok"], false);
    assert_eq!(result["error_code"], "fuel_exhausted");
    assert_eq!(result["output"], Value::Null);
    assert_eq!(result["output_digest"], Value::Null);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn no_work_policy_means_no_pull() {
    let (node, dir) = new_node("paused");
    let (url, seen) = fake_coordinator(
        *node.signing_key().verifying_key(),
        Box::new(|_, _| heartbeat_answer("none")),
    );
    assert!(matches!(
        runner(&url, &node).once().expect("round"),
        Step::Paused(_)
    ));
    assert_eq!(seen.lock().expect("log").len(), 1, "only the heartbeat");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn pull_answers_map_to_steps() {
    let (node, dir) = new_node("answers");
    let key = *node.signing_key().verifying_key();
    type PullReply = Box<dyn Fn() -> Reply + Send + Sync>;
    let cases: Vec<(PullReply, Result<Step, &str>)> = vec![
        (
            Box::new(|| Reply {
                status: 429,
                headers: vec![("retry-after", "7".into())],
                body: json!({"code": "rate_limited"}),
            }),
            Ok(Step::RetryAfter(Duration::from_secs(7))),
        ),
        (
            Box::new(|| problem(403, "node_not_active")),
            Ok(Step::NotActive),
        ),
        (
            Box::new(|| Reply {
                status: 204,
                headers: vec![("edgecoder-reason", "power_deferred".into())],
                body: Value::Null,
            }),
            Ok(Step::Idle(Some(NoTaskReason::PowerDeferred))),
        ),
        (Box::new(|| problem(401, "signature_invalid")), Err("auth")),
        (Box::new(|| problem(503, "unavailable")), Err("transient")),
    ];
    for (pull_reply, expected) in cases {
        let (url, _) = fake_coordinator(
            key,
            Box::new(move |seen, _| {
                if seen.target == "/mesh/heartbeat" {
                    heartbeat_answer("any")
                } else {
                    pull_reply()
                }
            }),
        );
        let got = runner(&url, &node).once();
        match (got, expected) {
            (Ok(step), Ok(want)) => assert_eq!(step, want),
            (Err(e), Err("auth")) => assert!(e.is_auth_refusal(), "{e}"),
            (Err(e), Err(_)) => assert!(e.is_transient(), "{e}"),
            (other, want) => panic!("got {other:?}, want {want:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn unreachable_coordinator_is_transient() {
    let (node, dir) = new_node("down");
    // Bind and drop: the port is (almost certainly) closed now.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let client = MeshClient::new(
        &format!("http://127.0.0.1:{port}"),
        node.signing_key().clone(),
    )
    .expect("client");
    let err = client.pull().expect_err("nothing listens");
    assert!(err.is_transient(), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn client_signs_gets_and_prefixed_targets() {
    let (node, dir) = new_node("get");
    let module = wat::parse_str(UPPERCASE).expect("wat");
    let (url, seen) = fake_coordinator(
        *node.signing_key().verifying_key(),
        coordinator(module, Vec::new()),
    );
    let client = MeshClient::new(&url, node.signing_key().clone()).expect("client");
    let view = client.node("edge-node-1").expect("node");
    assert_eq!(view["status"], "active");
    // A base URL with a path prefix signs the full path as sent.
    let prefixed =
        MeshClient::new(&format!("{url}/edge"), node.signing_key().clone()).expect("client");
    let err = prefixed.pull().expect_err("404 at the fake");
    assert_eq!(err.problem_code(), Some("not_found"));
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].body.is_empty());
    assert_eq!(seen[1].target, "/edge/mesh/tasks/pull");
    assert!(seen.iter().all(|s| s.verified.is_ok()));
    assert!(matches!(client.pull(), Ok(Pull::Task(_))));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn agent(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgecoder-agent"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("agent binary runs")
}

#[test]
fn binary_init_status_and_run_once() {
    let dir = temp_dir("bin");
    let out = agent(&dir, &["init", "--node-id", "edge-node-1"]);
    assert!(out.status.success(), "{out:?}");
    let again = agent(&dir, &["init", "--node-id", "edge-node-1"]);
    assert!(!again.status.success(), "init must not overwrite the key");

    let status = agent(&dir, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("edge-node-1") && text.contains("(not registered)"),
        "{text}"
    );

    let node = Node::load(&dir).expect("load");
    let module = wat::parse_str(UPPERCASE).expect("wat");
    let (url, seen) = fake_coordinator(
        *node.signing_key().verifying_key(),
        coordinator(module, b"bin".to_vec()),
    );
    let run = agent(&dir, &["run", "--once", "--coordinator", &url]);
    assert!(run.status.success(), "{run:?}");
    let result = seen.lock().expect("log")[2].json();
    assert_eq!(result["output"], STANDARD.encode(b"BIN"));

    // A coordinator that refuses the signature: exit code 3.
    let (url, _) = fake_coordinator(
        *node.signing_key().verifying_key(),
        Box::new(|_, _| problem(401, "signature_invalid")),
    );
    let refused = agent(&dir, &["run", "--once", "--coordinator", &url]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");

    // Offline status still shows local state.
    let mut node = Node::load(&dir).expect("load");
    node.set_coordinator("http://127.0.0.1:9").expect("save");
    let offline = agent(&dir, &["status"]);
    assert!(offline.status.success(), "{offline:?}");
    let text = String::from_utf8_lossy(&offline.stdout);
    assert!(text.contains("unreachable"), "{text}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
