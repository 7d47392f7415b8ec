//! The `edgecoder` CLI as a new user meets it: commands that only read
//! never create a data directory or a key behind a mistyped path, and
//! `outbox --latest-link` prints the link a new account must open.

use std::process::Command;
use std::time::Duration;

use edgecoder_conformance::Client;
use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, edgecoder_binary, env_name, free_port,
    signing_key_base64,
};

fn edgecoder(args: &[&str]) -> (i32, String) {
    let out = Command::new(edgecoder_binary())
        .args(args)
        .env_remove("EDGECODER_DATA_DIR")
        .env_remove("EDGECODER_MODE")
        .output()
        .expect("edgecoder");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn read_only_commands_refuse_a_missing_data_directory_and_create_nothing() {
    let typo = std::env::temp_dir().join(format!("edgecoder-typo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&typo);
    let path = typo.to_str().expect("path");
    for args in [
        vec!["audit", "--data-dir", path],
        vec!["outbox", "--data-dir", path],
        vec!["outbox", "--latest-link", "--data-dir", path],
        vec![
            "admin",
            "grant",
            "--email",
            "a@example.com",
            "--data-dir",
            path,
        ],
    ] {
        let (code, out) = edgecoder(&args);
        assert_ne!(code, 0, "{args:?} must fail: {out}");
        assert!(
            out.contains(path) && out.contains("no EdgeCoder data directory"),
            "{args:?} must say where it looked: {out}"
        );
        assert!(!typo.exists(), "{args:?} created {path}");
    }
}

#[test]
fn admin_grant_lists_the_roles_it_accepts() {
    let (code, out) = edgecoder(&["admin", "grant", "--help"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("system_admin") && out.contains("coordinator_owner"),
        "{out}"
    );
    let (code, out) = edgecoder(&[
        "admin",
        "grant",
        "--email",
        "a@example.com",
        "--role",
        "root",
    ]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn outbox_latest_link_prints_the_verification_link_of_a_new_account() {
    let dir = std::env::temp_dir().join(format!("edgecoder-cli-outbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = signing_key_base64();
    let port = free_port();
    let mut cmd = Command::new(edgecoder_binary());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(&dir)
    .env_remove("EDGECODER_MODE")
    .env("EDGECODER_LOG", "warn");
    for (k, v) in dev_settings(&key) {
        cmd.env(env_name(k), v);
    }
    let mut server = Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    server
        .wait_ready("/auth/health", Duration::from_secs(30))
        .expect("edgecoder starts");
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let ctx = edgecoder_conformance::identity::Ctx::new(&client, &target);
    let r = ctx.signup("new-user@example.com").expect("signup");
    assert!(r.status < 300, "signup: {}", r.status);
    let token = ctx.mailed_token("new-user@example.com").expect("token");

    let (code, out) = edgecoder(&[
        "outbox",
        "--latest-link",
        "--data-dir",
        dir.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}");
    let link = out.trim();
    assert!(
        link.starts_with("http") && !link.contains(char::is_whitespace),
        "one link: {out}"
    );
    assert!(
        link.contains(&token),
        "the link carries the token {token}: {link}"
    );
    server.terminate(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_lists_every_setting_with_its_source_and_judges_production() {
    let dir = std::env::temp_dir().join(format!("edgecoder-cfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    let key = signing_key_base64();
    std::fs::write(dir.join("secrets/signing_key"), &key).expect("key");
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = Command::new(edgecoder_binary());
        cmd.args(["config", "check", "--data-dir"])
            .arg(&dir)
            .args(extra)
            .env_remove("EDGECODER_MODE")
            .env_remove("EDGECODER_DATA_DIR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("edgecoder");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&[("EDGECODER_ISSUER", "https://edge.example.com")], &[]);
    assert_eq!(code, 0, "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {out}"))
            .to_owned()
    };
    assert!(line("issuer").contains("environment EDGECODER_ISSUER"));
    assert!(
        line("signing_key").contains("file "),
        "{}",
        line("signing_key")
    );
    assert!(line("checkpoint_key").contains("unset"));
    assert!(line("economy_epoch_secs").contains("default"));
    assert!(out.contains("development: accepted"), "{out}");
    // Production needs the log's and the coordinator's keys too.
    assert!(out.contains("production: would refuse"), "{out}");
    let (code, out) = run(
        &[("EDGECODER_ISSUER", "https://edge.example.com")],
        &["--production"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("production: refused"), "{out}");
    // Nothing was created or changed.
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        1,
        "only secrets/ is there"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shell_completions_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out) = edgecoder(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {out}");
        assert!(
            out.contains("verify") && out.contains("monitor-token") && out.contains("task"),
            "{shell}"
        );
    }
}

// Logs a log shipper can read: JSON lines (never an escape code) when
// stderr is not a terminal, with the request's id (the caller's, when it
// sent one), its traceparent, route, status and latency.
#[test]
fn serve_logs_json_lines_with_request_id_traceparent_status_and_latency() {
    let dir = std::env::temp_dir().join(format!("edgecoder-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let port = free_port();
    let mut child = Command::new(edgecoder_binary())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env_remove("EDGECODER_MODE")
        .env_remove("EDGECODER_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve");
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get("/auth/health").is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client
        .send_with(
            "GET",
            "/ledger/checkpoint",
            &[("x-request-id", "log-check-1"), ("traceparent", trace)],
            &[],
        )
        .expect("request");
    let id = r.header("x-request-id").expect("id").to_owned();
    assert!(id.starts_with("log-check-1."), "{id}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.join("serve.log")).expect("log");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file:\n{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no line for the request:\n{text}"));
    assert_eq!(line["traceparent"], trace, "{line}");
    assert_eq!(line["path"], "/ledger/checkpoint", "{line}");
    assert!(line["status"].as_u64().is_some(), "{line}");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    assert!(line["timestamp"].as_str().is_some(), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

// Prometheus metrics of the native runtime, on a loopback listener: requests
// by route template and status, latency, auth failures by code, and gauges
// read from the database at each scrape.
#[test]
fn serve_exposes_prometheus_metrics_on_loopback_only() {
    let dir = std::env::temp_dir().join(format!("edgecoder-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out) = edgecoder(&[
        "serve",
        "--data-dir",
        dir.join("refused").to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "0.0.0.0:9",
    ]);
    assert_ne!(code, 0, "a public metrics address must be refused: {out}");
    assert!(out.contains("loopback"), "{out}");

    let port = free_port();
    let metrics_port = free_port();
    let mut child = Command::new(edgecoder_binary())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .env_remove("EDGECODER_MODE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get("/auth/health").is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..3 {
        let r = client.get("/auth/me").expect("me");
        assert_eq!(r.status, 401);
    }
    let r = client.get("/mesh/tasks/abc").expect("task");
    assert_eq!(r.status, 401);
    let scrape = Client::unchecked(&format!("http://127.0.0.1:{metrics_port}"));
    let r = scrape.get("/metrics").expect("metrics");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    for want in [
        r#"edgecoder_http_requests_total{method="GET",route="/auth/me",status="401"} 3"#,
        r#"edgecoder_http_requests_total{method="GET",route="/mesh/tasks/{id}",status="401"} 1"#,
        "edgecoder_http_request_duration_seconds_bucket{",
        r#"edgecoder_auth_failures_total{code="#,
        "edgecoder_ledger_size ",
        "edgecoder_ledger_checkpoint_age_seconds ",
        "edgecoder_mesh_queue_depth 0",
        "edgecoder_mesh_leases_expired 0",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
