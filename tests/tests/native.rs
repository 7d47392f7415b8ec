//! Conformance against the native runtime: the real `edgecoder` binary over
//! embedded SQLite in a temporary data directory, plus what only the native
//! runtime promises (data kept across restarts, graceful shutdown, production
//! mode refusing to start without its secrets, owner-only files).
//!
//! A test binary of named trials (`harness = false`): every suite check is
//! its own test against one server, e.g.
//! `cargo test -p edgecoder-conformance --test native -- mesh::replayed_nonce_is_refused`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, edgecoder_binary, env_name, free_port,
    signing_key_base64, start_native,
};
use edgecoder_conformance::{Client, Deployment, trial};
use edgecoder_kernel::migrations::MIGRATIONS;

fn binary() -> PathBuf {
    // Build (or confirm up to date) the binary under test; a stale binary would
    // make this suite test old code.
    edgecoder_binary()
}

fn start(bin: &Path, data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
    start_native(bin, data_dir, extra_env)
}

fn migrate_events(bin: &Path, data_dir: &Path) -> usize {
    let out = Command::new(bin)
        .args(["audit", "--action", "schema.migrate", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("edgecoder audit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The native deployment the suite runs against: the `edgecoder` binary
/// (with test routes) over embedded SQLite, and the test OpenID Provider.
fn deployment() -> Deployment {
    let bin = binary();
    let dir = tempfile_dir("conformance");
    let key = signing_key_base64();
    let op = edgecoder_conformance::harness::start_openid_provider();
    let env: Vec<(String, String)> = dev_settings(&key)
        .into_iter()
        .chain(edgecoder_conformance::harness::oauth_settings(&op))
        .map(|(k, v)| (env_name(k), v))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = start(&bin, &dir, &env).owning(dir.clone());
    Deployment {
        target: conformance_target(&server.base, &key),
        keep: vec![Box::new(server), Box::new(op)],
    }
}

fn main() {
    edgecoder_conformance::main(
        deployment,
        vec![
            trial(
                "native_state_survives_restart_and_shutdown_is_graceful",
                native_state_survives_restart_and_shutdown_is_graceful,
            ),
            trial(
                "native_release_binary_has_no_test_routes",
                native_release_binary_has_no_test_routes,
            ),
            trial("native_files_are_owner_only", native_files_are_owner_only),
            trial(
                "native_production_mode_refuses_to_start_without_signing_key",
                native_production_mode_refuses_to_start_without_signing_key,
            ),
            trial(
                "native_production_mode_refuses_insecure_test_routes",
                native_production_mode_refuses_insecure_test_routes,
            ),
            trial(
                "native_migrate_applies_once_and_is_idempotent",
                native_migrate_applies_once_and_is_idempotent,
            ),
            trial(
                "native_ledger_appends_are_gap_free_under_eight_concurrent_writers",
                native_ledger_appends_are_gap_free_under_eight_concurrent_writers,
            ),
            trial(
                "registrations_are_rate_limited_per_address",
                registrations_are_rate_limited_per_address,
            ),
            trial(
                "signatures_for_an_origin_this_coordinator_does_not_serve_are_refused",
                signatures_for_an_origin_this_coordinator_does_not_serve_are_refused,
            ),
            trial(
                "idle_connections_from_one_host_do_not_starve_the_others",
                idle_connections_from_one_host_do_not_starve_the_others,
            ),
            trial(
                "an_https_deployment_never_serves_plain_http",
                an_https_deployment_never_serves_plain_http,
            ),
        ],
    )
}

fn native_state_survives_restart_and_shutdown_is_graceful() {
    let bin = binary();
    let dir = tempfile_dir("restart");
    let mut first = start(&bin, &dir, &[("EDGECODER_LOG", "info")]);
    let key_before = std::fs::read(dir.join("secrets/signing_key")).expect("dev key written");
    let status = first
        .terminate(Duration::from_secs(15))
        .expect("exit status");
    assert!(
        status.success(),
        "SIGTERM must shut down cleanly, got {status}: {}",
        first.output()
    );
    assert!(
        first.output().contains("shutting down"),
        "{}",
        first.output()
    );

    let second = start(&bin, &dir, &[]);
    // Same key, migrations applied once (recorded in the audit log once), ready.
    assert_eq!(
        std::fs::read(dir.join("secrets/signing_key")).expect("key"),
        key_before
    );
    assert_eq!(migrate_events(&bin, &dir), MIGRATIONS.len());
    let r = Client::new(&second.base)
        .get("/ledger/health/ready")
        .expect("ready");
    assert_eq!(r.status, 200);
}

/// The release binary (the README's `cargo run --release -p edgecoder`) has
/// no test routes, even with the setting on, and none of the test vectors'
/// bytes.
fn native_release_binary_has_no_test_routes() {
    let bin = edgecoder_conformance::harness::release_binary();
    edgecoder_conformance::harness::assert_no_test_vectors(&bin);
    let dir = tempfile_dir("release");
    let server = start(&bin, &dir, &[]).owning(dir.clone());
    edgecoder_conformance::harness::assert_no_test_routes(&server.base);
}

fn native_files_are_owner_only() {
    let bin = binary();
    let dir = tempfile_dir("perms");
    // An operator created the directories beforehand with a loose umask.
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    for d in [&dir, &dir.join("secrets")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let _server = start(&bin, &dir, &[]);
    for rel in [
        "",
        "secrets",
        "secrets/signing_key",
        "edgecoder.sqlite",
        "kv.sqlite",
    ] {
        let mode = std::fs::metadata(dir.join(rel))
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        let want = if rel.is_empty() || rel == "secrets" {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, want, "{rel:?} has mode {mode:o}");
    }
}

/// Production fails fast, naming each key a served function needs and is
/// missing, one per job, and invents none.
fn native_production_mode_refuses_to_start_without_signing_key() {
    let bin = binary();
    let dir = tempfile_dir("production");
    let serve = |dir: &Path| {
        let out = Command::new(&bin)
            .args([
                "serve",
                "--mode",
                "production",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .env_remove("EDGECODER_SIGNING_KEY")
            .env_remove("EDGECODER_CHECKPOINT_KEY")
            .env_remove("EDGECODER_COORDINATOR_KEY")
            .env("EDGECODER_ISSUER", "https://edge.example")
            .output()
            .expect("run");
        assert!(!out.status.success(), "must refuse to start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Each start names every key still missing, and only those.
    let all = ["signing_key", "checkpoint_key", "coordinator_key"];
    for added in 0..all.len() {
        let stderr = serve(&dir);
        for (i, name) in all.iter().enumerate() {
            let named = stderr.contains(&format!("the {name} secret"));
            assert_eq!(named, i >= added, "{name} named: {stderr}");
            if i >= added {
                assert!(
                    !dir.join("secrets").join(name).exists(),
                    "production must not invent keys"
                );
            }
        }
        {
            let name = all[added];
            std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
            let made = Command::new(&bin)
                .args(["keygen", "--out"])
                .arg(dir.join("secrets").join(name))
                .status()
                .expect("keygen");
            assert!(made.success());
        }
    }
}

fn native_production_mode_refuses_insecure_test_routes() {
    let bin = binary();
    let dir = tempfile_dir("production-insecure");
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    let key = Command::new(&bin)
        .args(["keygen", "--out"])
        .arg(dir.join("secrets/signing_key"))
        .status()
        .expect("keygen");
    assert!(key.success());
    let out = Command::new(&bin)
        .args([
            "serve",
            "--mode",
            "production",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("EDGECODER_INSECURE_TEST_ROUTES", "true")
        .env("EDGECODER_ISSUER", "https://edge.example")
        .output()
        .expect("run");
    assert!(!out.status.success(), "must refuse to start");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("insecure_test_routes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!(
        "edgecoder-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&base);
    base
}

fn native_migrate_applies_once_and_is_idempotent() {
    let bin = binary();
    let dir = tempfile_dir("migrate");
    let run = || {
        let out = Command::new(&bin)
            .args(["migrate", "--data-dir"])
            .arg(&dir)
            .env_remove("EDGECODER_MODE")
            .output()
            .expect("edgecoder migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run().contains("applied 0001_foundation.sql"));
    assert!(run().contains("up to date"));
    assert_eq!(migrate_events(&bin, &dir), MIGRATIONS.len());
}

fn native_ledger_appends_are_gap_free_under_eight_concurrent_writers() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use edgecoder_tlog::merkle::{Hasher, Sha256};

    let bin = binary();
    let dir = tempfile_dir("ledger-concurrency");
    let key = signing_key_base64();
    let env: Vec<(String, String)> = dev_settings(&key)
        .into_iter()
        .map(|(k, v)| (env_name(k), v))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = start(&bin, &dir, &env);
    let target = conformance_target(&server.base, &key);
    let admin = {
        let client = Client::new(&server.base);
        let x = edgecoder_conformance::identity::Ctx::new(&client, &target);
        x.admin().expect("admin").1
    };
    let (writers, each) = (8usize, 2000usize);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let base = server.base.clone();
            let auth = format!("Bearer {admin}");
            std::thread::spawn(move || {
                let c = Client::new(&base);
                let mut indexes = Vec::with_capacity(each);
                for i in 0..each {
                    let body = serde_json::json!({
                        "payload_type": "example.org/audit/v1",
                        "payload": STANDARD.encode(format!("writer {w} entry {i}")),
                        "idempotency_key": format!("w{w}-{i}"),
                    });
                    let r = c
                        .send_with(
                            "POST",
                            "/ledger/entries",
                            &[
                                ("content-type", "application/json"),
                                ("authorization", &auth),
                            ],
                            &serde_json::to_vec(&body).expect("json"),
                        )
                        .expect("append");
                    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                    indexes.push(r.json().expect("json")["index"].as_u64().expect("index"));
                }
                indexes
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer"))
        .collect();
    all.sort_unstable();
    // The admin's role grant is entry 0; the writers' entries follow it.
    let total = (writers * each) as u64 + 1;
    assert_eq!(
        all,
        (1..total).collect::<Vec<_>>(),
        "gaps or duplicate indexes"
    );
    // The root over every stored entry equals the signed head.
    let c = Client::new(&server.base);
    let mut leaves = Vec::new();
    let mut start = 0u64;
    while start < total {
        let end = (start + 1000).min(total);
        let page = c
            .get(&format!("/ledger/entries?start={start}&end={end}"))
            .expect("page")
            .json()
            .expect("json");
        for e in page["entries"].as_array().expect("entries") {
            let bytes = STANDARD
                .decode(e["entry"].as_str().expect("entry"))
                .expect("b64");
            leaves.push(Sha256::leaf(&bytes));
        }
        start = end;
    }
    let mut nodes = std::collections::HashMap::new();
    for (i, leaf) in leaves.iter().enumerate() {
        for (id, h) in
            edgecoder_tlog::merkle::completed_by_append::<Sha256>(i as u64, *leaf, &nodes)
                .expect("append")
        {
            nodes.insert(id, h);
        }
    }
    let root = edgecoder_tlog::merkle::range_hash::<Sha256>(&nodes, 0, total).expect("root");
    let r = c.get("/ledger/checkpoint").expect("checkpoint");
    let note = String::from_utf8_lossy(&r.body).into_owned();
    let signer = edgecoder_kernel::SigningKey::from_secret(
        &edgecoder_conformance::harness::job_key(&key, "checkpoint"),
    )
    .expect("key");
    let cp = edgecoder_tlog::checkpoint::open(
        &note,
        &[edgecoder_tlog::checkpoint::TrustedKey {
            name: "localhost:8080/ledger".into(),
            key: (*signer.verifying_key()).into(),
        }],
    )
    .expect("checkpoint opens");
    assert_eq!(cp.size, total);
    assert_eq!(cp.root, root, "recomputed root differs from the signed one");
}

fn registrations_are_rate_limited_per_address() {
    use edgecoder_conformance::identity::Ctx;
    use edgecoder_conformance::mesh::{Node, Sig, enroll, registration, signed};
    let bin = binary();
    let dir = tempfile_dir("register-limit");
    let key = signing_key_base64();
    let mut env: Vec<(String, String)> = dev_settings(&key)
        .into_iter()
        .map(|(k, v)| (env_name(k), v))
        .collect();
    env.push((env_name("mesh_register_per_minute"), "2".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = start(&bin, &dir, &env);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let owner = x.account("limit", true).expect("account");
    let mut statuses = Vec::new();
    for i in 0..5 {
        let node = Node::new(&x, &format!("limit{i}"));
        let token = enroll(&x, &owner, &node.id).expect("enroll");
        let r = signed(
            &x,
            &node,
            "POST",
            "/mesh/nodes/register",
            Some(&registration(&node, &token)),
            &Sig::default(),
        )
        .expect("register");
        statuses.push(r.status);
    }
    // Five in a row span at most two fixed windows of two each.
    assert!(statuses.contains(&429), "{statuses:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mesh_origins`: a coordinator serving `https://mesh.example` behind a
/// trusted proxy refuses requests signed for any other origin (another
/// coordinator where the same key is registered, or its raw address), and
/// accepts those signed for its own.
fn signatures_for_an_origin_this_coordinator_does_not_serve_are_refused() {
    use edgecoder_conformance::expect_problem;
    use edgecoder_conformance::identity::Ctx;
    use edgecoder_conformance::mesh::{
        Node, Sig, enroll, registration, server_telemetry, sign_headers, signed,
    };
    let bin = binary();
    let dir = tempfile_dir("origins");
    let key = signing_key_base64();
    let mut env: Vec<(String, String)> = dev_settings(&key)
        .into_iter()
        .map(|(k, v)| (env_name(k), v))
        .collect();
    env.push((env_name("mesh_origins"), "https://mesh.example".into()));
    env.push((env_name("trusted_proxies"), "127.0.0.1/32,::1/128".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = start(&bin, &dir, &env);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let owner = x.account("origins", true).expect("account");
    let node = Node::new(&x, "origins");
    let token = enroll(&x, &owner, &node.id).expect("enroll");
    let body = registration(&node, &token);
    // Signed for the address it was sent to, which is not the served origin.
    let raw = signed(
        &x,
        &node,
        "POST",
        "/mesh/nodes/register",
        Some(&body),
        &Sig::default(),
    )
    .expect("register");
    expect_problem(&raw, 421, "misdirected_request").expect("raw address refused");
    let send = |path: &str, origin_host: &str, signed_for: &str, body: &[u8]| {
        let hs = sign_headers(
            &node.key,
            &node.kid,
            "POST",
            &format!("{signed_for}{path}"),
            body,
            &Sig::default(),
        );
        let mut headers: Vec<(&str, &str)> =
            hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers.push(("content-type", "application/json"));
        headers.push(("x-forwarded-proto", "https"));
        headers.push(("x-forwarded-host", origin_host));
        client
            .send_with("POST", path, &headers, body)
            .expect("send")
    };
    let reg = body.to_string().into_bytes();
    let r = send(
        "/mesh/nodes/register",
        "mesh.example",
        "https://mesh.example",
        &reg,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The same registered key, a request signed for another coordinator and
    // delivered here with that coordinator's name.
    let hb = server_telemetry().to_string().into_bytes();
    let other = send(
        "/mesh/heartbeat",
        "coordinator-b.example",
        "https://coordinator-b.example",
        &hb,
    );
    expect_problem(&other, 421, "misdirected_request").expect("other origin refused");
    let here = send(
        "/mesh/heartbeat",
        "mesh.example",
        "https://mesh.example",
        &hb,
    );
    assert_eq!(here.status, 200, "{}", String::from_utf8_lossy(&here.body));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET `path` over a fresh connection from the local address `from`
/// (127.0.0.0/8 is all loopback, so each is another client to the server);
/// the status line, or the error.
fn get_from(from: std::net::Ipv4Addr, port: u16, path: &str) -> Result<String, String> {
    get_from_with(from, port, path, &[])
}

/// [`get_from`] with extra header lines.
fn get_from_with(
    from: std::net::Ipv4Addr,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<String, String> {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    socket
        .bind(&std::net::SocketAddr::from((from, 0)).into())
        .map_err(|e| e.to_string())?;
    socket
        .connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
            Duration::from_secs(2),
        )
        .map_err(|e| e.to_string())?;
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    stream.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// One host opening ~1,100 connections and sending nothing used to hold
/// every slot until the header timeout, so health probes timed out for
/// everyone. Now a host holds at most its share: the rest of its
/// connections get an immediate 503, and other hosts are served at once.
fn idle_connections_from_one_host_do_not_starve_the_others() {
    use std::io::Read;
    let bin = binary();
    let dir = tempfile_dir("idle");
    let server = start(&bin, &dir, &[]);
    let port: u16 = server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    // Another host is served promptly, several times over.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let answer = get_from(std::net::Ipv4Addr::new(127, 0, 0, 2), port, "/auth/health")
            .expect("another host is served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // The idle host's excess connections were answered, not queued.
    let mut busy = 0;
    for c in idle.iter_mut().rev().take(20) {
        c.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 503") && out.contains("server_busy") {
            busy += 1;
        }
    }
    assert_eq!(
        busy, 20,
        "connections over the per-host cap get 503 server_busy"
    );
    drop(idle);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A deployment whose public origin is https acts on nothing that reached it
/// over plain http: API calls get 403 `https_required`, a person's GET of a
/// page is redirected to the issuer's https address (never to the Host the
/// client named), and the same requests through the trusted proxy that
/// terminated TLS are served.
fn an_https_deployment_never_serves_plain_http() {
    use edgecoder_conformance::expect_problem;
    let bin = binary();
    let dir = tempfile_dir("https-only");
    let key = signing_key_base64();
    let port = edgecoder_conformance::harness::free_port();
    let mut cmd = Command::new(&bin);
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
    cmd.env(env_name("issuer"), "https://edge.example")
        .env(env_name("allowed_origins"), "https://edge.example")
        .env(env_name("trusted_proxies"), "127.0.0.2/32");
    let mut server =
        edgecoder_conformance::harness::Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    server
        .wait_status("/auth/health", 403, Duration::from_secs(30))
        .expect("edgecoder starts");
    let c = Client::new(&server.base);
    let login = c
        .send_with(
            "POST",
            "/auth/login",
            &[("content-type", "application/json")],
            br#"{"email":"someone@example.com","password":"correct horse battery staple"}"#,
        )
        .expect("login");
    expect_problem(&login, 403, "https_required").expect("credentials over http refused");
    expect_problem(
        &c.get("/auth/health").expect("health"),
        403,
        "https_required",
    )
    .expect("health over http refused");
    let page = c
        .send_with(
            "GET",
            "/auth/verify-email?token=evt_x",
            &[("accept", "text/html"), ("host", "evil.example")],
            &[],
        )
        .expect("page");
    assert_eq!(page.status, 308);
    assert_eq!(
        page.header("location"),
        Some("https://edge.example/auth/verify-email?token=evt_x")
    );
    // The proxy that terminated TLS says so, and is believed.
    let answer = get_from_with(
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        port,
        "/auth/health",
        &[("x-forwarded-proto", "https")],
    )
    .expect("through the proxy");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{answer}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
