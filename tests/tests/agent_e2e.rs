//! The device agent end to end against the native runtime: a user signs up
//! and enrolls a node; the real `edgecoder-agent` binary generates its key,
//! registers with the enrollment token and waits for approval; an operator
//! approves; a user submits a wasm task (compiled here from WAT); the agent
//! pulls it, runs it in its wasmtime sandbox and reports; the submitter
//! reads an output whose digest is blake3 of the expected bytes, and the
//! completion is in the ledger. Hostile modules fail with their reason and
//! the agent takes the next task.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_conformance::harness::{
    agent_binary, conformance_target, dev_settings, edgecoder_binary, env_name, free_port,
    signing_key_base64, start_native, start_native_at,
};
use edgecoder_conformance::identity::Ctx;
use edgecoder_conformance::mesh::enroll;
use edgecoder_conformance::{Client, Reply};
use serde_json::{Value as Json, json};

/// Reads the input, upper-cases ASCII letters, writes the output.
const UPPERCASE: &str = r#"
(module
  (import "edgecoder" "input_len" (func $input_len (result i32)))
  (import "edgecoder" "read_input" (func $read_input (param i32 i32) (result i32)))
  (import "edgecoder" "write_output" (func $write_output (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (local $n i32) (local $i i32) (local $c i32)
    (local.set $n (call $read_input (i32.const 0) (call $input_len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (local.get $i)))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (local.get $i) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write_output (i32.const 0) (local.get $n))))
"#;

const SPIN: &str = r#"(module (func (export "run") (loop $l (br $l))))"#;

fn blob(bytes: &[u8]) -> Json {
    json!({"digest": format!("blake3:{}", blake3::hash(bytes).to_hex()), "bytes": STANDARD.encode(bytes)})
}

fn agent(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(agent_binary())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("edgecoder-agent");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn ok(r: Result<Reply, String>, status: u16, what: &str) -> Json {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json().unwrap_or(Json::Null)
}

fn submit(x: &Ctx, token: &str, module: &[u8], input: &[u8], timeout_ms: i64) -> String {
    submit_with_fuel(x, token, module, input, timeout_ms, 50_000_000)
}

fn submit_with_fuel(
    x: &Ctx,
    token: &str,
    module: &[u8],
    input: &[u8],
    timeout_ms: i64,
    fuel: u64,
) -> String {
    let body = json!({
        "kind": "wasm", "module": blob(module), "input": blob(input),
        "timeout_ms": timeout_ms, "resources": {"memory_mb": 16, "fuel": fuel},
    });
    edgecoder_conformance::economy::fund_bearer(x, token).expect("credits");
    let v = ok(
        x.send("POST", "/mesh/tasks", Some(token), Some(&body), &[]),
        201,
        "submit",
    );
    v["task_id"].as_str().unwrap_or_default().to_owned()
}

fn task(x: &Ctx, token: &str, id: &str) -> Json {
    ok(
        x.send("GET", &format!("/mesh/tasks/{id}"), Some(token), None, &[]),
        200,
        "task",
    )
}

/// The suite's settings, with a lease grace (zero would let a lease lapse
/// while the agent reports).
fn settings(key: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = dev_settings(key)
        .into_iter()
        .map(|(k, v)| (env_name(k), v))
        .collect();
    env.push((env_name("mesh_lease_grace_ms"), "30000".into()));
    env
}

#[test]
fn agent_joins_runs_a_task_and_survives_hostile_ones() {
    let bin = edgecoder_binary();
    let key = signing_key_base64();
    let env = settings(&key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = std::env::temp_dir().join(format!("edgecoder-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = start_native(&bin, &data, &env);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);

    // A user enrolls a node id; the device generates its key and registers.
    let owner = x.account("e2e-owner", true).expect("owner");
    let node_id = format!("e2e-{}", std::process::id());
    let token = enroll(&x, &owner, &node_id).expect("enroll");
    let dir = data.join("agent");
    // A server: its policy takes work at any time (a detected laptop or
    // desktop would wait for idle and mains power).
    let (code, out) = agent(
        &dir,
        &["init", "--node-id", &node_id, "--device-type", "server"],
    );
    assert_eq!(code, 0, "init: {out}");
    assert!(out.contains("device type: server (given"), "{out}");
    let (code, out) = agent(
        &dir,
        &["register", "--coordinator", &server.base, "--token", &token],
    );
    assert_eq!(code, 0, "register: {out}");
    // Registering twice is refused: the token is spent and the id is taken.
    let (code, _) = agent(
        &dir,
        &["register", "--coordinator", &server.base, "--token", &token],
    );
    assert_ne!(code, 0, "a second registration must fail");

    // Dormant until approved: a round sends a heartbeat and takes no work.
    let user = x.account("e2e-user", true).expect("user");
    let first = submit(
        &x,
        &user.access,
        &wat::parse_str(UPPERCASE).expect("wat"),
        b"hello, edge",
        30_000,
    );
    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "pending round: {out}");
    assert_eq!(task(&x, &user.access, &first)["status"], "queued");

    let (_, admin) = x.admin().expect("admin");
    ok(
        x.send(
            "POST",
            &format!("/mesh/nodes/{node_id}/approve"),
            Some(&admin),
            None,
            &[],
        ),
        200,
        "approve",
    );
    let (code, out) = agent(&dir, &["status"]);
    assert!(code == 0 && out.contains("active"), "status: {out}");

    // Approved: the agent runs the task in its sandbox and reports.
    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "work round: {out}");
    let t = task(&x, &user.access, &first);
    let expected = format!("blake3:{}", blake3::hash(b"HELLO, EDGE").to_hex());
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["result"]["output_digest"], expected.as_str(), "{t}");
    assert_eq!(t["completed_by"], node_id.as_str());
    assert_eq!(
        STANDARD
            .decode(t["output"].as_str().unwrap_or(""))
            .ok()
            .as_deref(),
        Some(&b"HELLO, EDGE"[..])
    );
    let index = t["ledger_index"].as_u64().expect("ledger index");
    let e = ok(
        client.get(&format!("/ledger/entries/{index}")),
        200,
        "ledger entry",
    );
    let envelope: Json = serde_json::from_slice(
        &STANDARD
            .decode(e["entry"].as_str().unwrap_or(""))
            .unwrap_or_default(),
    )
    .expect("envelope");
    assert_eq!(envelope["type"], "edgecoder.dev/task-completion/v1");
    let payload: Json = serde_json::from_slice(
        &STANDARD
            .decode(envelope["payload"].as_str().unwrap_or(""))
            .unwrap_or_default(),
    )
    .expect("payload");
    assert_eq!(payload["task_id"], first.as_str());
    assert_eq!(payload["output_digest"], expected.as_str());

    // A module that never ends fails with its reason; the agent goes on.
    let hostile = submit(
        &x,
        &user.access,
        &wat::parse_str(SPIN).expect("wat"),
        b"",
        1_000,
    );
    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "hostile round: {out}");
    let t = task(&x, &user.access, &hostile);
    assert_eq!(t["status"], "failed", "{t}");
    let reason = t["error_code"].as_str().unwrap_or("");
    assert!(
        reason == "timeout" || reason == "fuel_exhausted",
        "reason {reason}"
    );
    let last = submit(
        &x,
        &user.access,
        &wat::parse_str(UPPERCASE).expect("wat"),
        b"again",
        30_000,
    );
    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "after the hostile task: {out}");
    assert_eq!(task(&x, &user.access, &last)["status"], "completed");

    // Banned: the agent learns it from its heartbeat and pulls nothing.
    ok(
        x.send(
            "POST",
            "/mesh/blacklist",
            Some(&admin),
            Some(&json!({"subject_kind": "node_id", "subject": node_id,
                          "reason_code": "e2e", "reason": "the test bans it"})),
            &[],
        ),
        201,
        "ban",
    );
    let queued = submit(
        &x,
        &user.access,
        &wat::parse_str(UPPERCASE).expect("wat"),
        b"never",
        30_000,
    );
    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "banned round: {out}");
    assert!(out.contains("node_blacklisted"), "{out}");
    assert_eq!(task(&x, &user.access, &queued)["status"], "queued");
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// Kills the agent when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agent_loop_survives_a_coordinator_restart() {
    let bin = edgecoder_binary();
    let key = signing_key_base64();
    let env = settings(&key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = std::env::temp_dir().join(format!("edgecoder-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = free_port();
    let server = start_native_at(&bin, &data.join("server"), &env, port);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let owner = x.account("restart-owner", true).expect("owner");
    let node_id = format!("restart-{}", std::process::id());
    let token = enroll(&x, &owner, &node_id).expect("enroll");
    let dir = data.join("agent");
    assert_eq!(
        agent(
            &dir,
            &["init", "--node-id", &node_id, "--device-type", "server"]
        )
        .0,
        0
    );
    let (code, out) = agent(
        &dir,
        &["register", "--coordinator", &server.base, "--token", &token],
    );
    assert_eq!(code, 0, "register: {out}");
    let (_, admin) = x.admin().expect("admin");
    ok(
        x.send(
            "POST",
            &format!("/mesh/nodes/{node_id}/approve"),
            Some(&admin),
            None,
            &[],
        ),
        200,
        "approve",
    );
    let user = x.account("restart-user", true).expect("user");
    let before = submit(
        &x,
        &user.access,
        &wat::parse_str(UPPERCASE).expect("wat"),
        b"before",
        30_000,
    );

    // The loop, as a device runs it.
    let log = std::fs::File::create(data.join("agent.log")).expect("log");
    let running = Running(
        Command::new(agent_binary())
            .args(["run", "--dir"])
            .arg(&dir)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("edgecoder-agent run"),
    );
    let wait_for = |x: &Ctx, id: &str, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            if task(x, &user.access, id)["status"] == "completed" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not completed; agent log:\n{}",
                std::fs::read_to_string(data.join("agent.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    wait_for(&x, &before, "before the restart");

    // The coordinator goes away and comes back on the same address and data.
    drop(server);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let server = start_native_at(&bin, &data.join("server"), &env, port);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let after = submit(
        &x,
        &user.access,
        &wat::parse_str(UPPERCASE).expect("wat"),
        b"after",
        30_000,
    );
    wait_for(&x, &after, "after the restart");
    let t = task(&x, &user.access, &after);
    assert_eq!(
        t["result"]["output_digest"],
        format!("blake3:{}", blake3::hash(b"AFTER").to_hex()).as_str()
    );
    drop(running);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

// SIGTERM mid-task: the agent halts the task, gives its lease back and
// exits 0 at once; the task is queued again at once, and the next pull
// leases it again.
#[test]
fn agent_stops_on_sigterm_mid_task_and_the_task_is_leased_again() {
    let bin = edgecoder_binary();
    let key = signing_key_base64();
    let env = settings(&key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = std::env::temp_dir().join(format!("edgecoder-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = start_native(&bin, &data.join("server"), &env);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let owner = x.account("sigterm-owner", true).expect("owner");
    let node_id = format!("sigterm-{}", std::process::id());
    let token = enroll(&x, &owner, &node_id).expect("enroll");
    let dir = data.join("agent");
    let (code, out) = agent(
        &dir,
        &["init", "--node-id", &node_id, "--device-type", "server"],
    );
    assert_eq!(code, 0, "init: {out}");
    let (code, out) = agent(
        &dir,
        &["register", "--coordinator", &server.base, "--token", &token],
    );
    assert_eq!(code, 0, "register: {out}");
    let (_, admin) = x.admin().expect("admin");
    ok(
        x.send(
            "POST",
            &format!("/mesh/nodes/{node_id}/approve"),
            Some(&admin),
            None,
            &[],
        ),
        200,
        "approve",
    );
    let user = x.account("sigterm-user", true).expect("user");
    // Spins until its 8 s deadline (the fuel would last longer): long
    // enough to be stopped in the middle.
    let id = submit_with_fuel(
        &x,
        &user.access,
        &wat::parse_str(SPIN).expect("wat"),
        b"",
        8_000,
        10_000_000_000,
    );

    let log_path = data.join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(agent_binary())
        .args(["run", "--dir"])
        .arg(&dir)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("edgecoder-agent run");
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while task(&x, &user.access, &id)["status"] != "leased" {
        assert!(
            std::time::Instant::now() < deadline,
            "never leased; agent log:\n{}",
            agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Let the module start spinning, then ask the agent to stop.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stopped_at = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stopped_at.elapsed() < std::time::Duration::from_secs(5),
            "the agent did not stop within 5 s of SIGTERM; log:\n{}",
            agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status:?}; log:\n{}", agent_log());
    let text = agent_log();
    assert!(
        text.contains(&format!("task {id}: released unfinished")),
        "{text}"
    );
    // Log lines start with an RFC 3339 UTC time.
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.len() > 24 && first.as_bytes()[4] == b'-' && first[..24].ends_with('Z'),
        "timestamped: {first}"
    );
    let t = task(&x, &user.access, &id);
    assert_eq!(t["status"], "queued", "given back at once: {t}");

    // The next pull leases it again (and, spinning, it runs out of time or
    // fuel this time): its second and last attempt.
    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "second round: {out}");
    assert!(out.contains(&format!("task {id}: running")), "{out}");
    let t = task(&x, &user.access, &id);
    assert_eq!(t["result"]["node_id"], node_id.as_str(), "{t}");
    assert!(
        t["error_code"] == "timeout" || t["error_code"] == "fuel_exhausted",
        "{t}"
    );
    assert_eq!(t["attempts"], 2, "{t}");
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

// The README's first task, as a new user runs it: `edgecoder task submit`
// with a `.wat` file and an input file (digests computed by the CLI), an
// agent runs it, `task status` and `task result` read it back.
#[test]
fn the_cli_submits_a_wat_task_an_agent_runs_and_its_result_reads_back() {
    let bin = edgecoder_binary();
    let key = signing_key_base64();
    let env = settings(&key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = std::env::temp_dir().join(format!("edgecoder-cli-task-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = start_native(&bin, &data.join("server"), &env);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let owner = x.account("cli-owner", true).expect("owner");
    let node_id = format!("cli-{}", std::process::id());
    let token = enroll(&x, &owner, &node_id).expect("enroll");
    let dir = data.join("agent");
    let (code, out) = agent(
        &dir,
        &["init", "--node-id", &node_id, "--device-type", "server"],
    );
    assert_eq!(code, 0, "init: {out}");
    let (code, out) = agent(
        &dir,
        &["register", "--coordinator", &server.base, "--token", &token],
    );
    assert_eq!(code, 0, "register: {out}");
    let (_, admin) = x.admin().expect("admin");
    ok(
        x.send(
            "POST",
            &format!("/mesh/nodes/{node_id}/approve"),
            Some(&admin),
            None,
            &[],
        ),
        200,
        "approve",
    );
    let user = x.account("cli-user", true).expect("user");
    edgecoder_conformance::economy::fund_bearer(&x, &user.access).expect("credits");
    std::fs::write(data.join("upper.wat"), UPPERCASE).expect("wat");
    std::fs::write(data.join("input.txt"), "hello from the cli").expect("input");
    let cli = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .args(["--url", &server.base])
            .env("EDGECODER_TOKEN", &user.access)
            .output()
            .expect("edgecoder");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let module = data.join("upper.wat");
    let input = data.join("input.txt");
    let (code, id, err) = cli(&[
        "task",
        "submit",
        "--module",
        module.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "submit: {err}");
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 32, "a task id: {id:?} {err}");
    let (code, status, err) = cli(&["task", "status", &id]);
    assert_eq!(code, 0, "status: {err}");
    let v: Json = serde_json::from_str(&status).expect("json");
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(
        v["input_digest"],
        format!("blake3:{}", blake3::hash(b"hello from the cli").to_hex()).as_str()
    );
    let (code, _, err) = cli(&["task", "result", &id]);
    assert_ne!(code, 0, "no result before it ran");
    assert!(err.contains("queued"), "{err}");

    let (code, out) = agent(&dir, &["run", "--once"]);
    assert_eq!(code, 0, "agent: {out}");
    let (code, out, err) = cli(&["task", "result", &id]);
    assert_eq!(code, 0, "result: {err}");
    assert_eq!(out, "HELLO FROM THE CLI");
    // Someone else's token reads nothing of it.
    let other = x.account("cli-other", true).expect("other");
    let out = Command::new(&bin)
        .args([
            "task",
            "status",
            &id,
            "--url",
            &server.base,
            "--token",
            &other.access,
        ])
        .output()
        .expect("edgecoder");
    assert!(!out.status.success());
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
