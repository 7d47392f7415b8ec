//! Conformance against workerd: the Worker built by `scripts/build-worker.sh`,
//! served by `wrangler dev` with local D1 and KV, after `wrangler d1
//! migrations apply --local`, exactly as an operator runs it. The suite runs
//! against the conformance build (`tests/wrangler.test.toml`: the same code
//! with the `danger-test-routes` feature); the release Worker of
//! `wrangler.toml` is checked to have no test routes at all.
//!
//! Uses the tools `scripts/setup-tools.sh` installs (wrangler, Node 22,
//! worker-build and its helpers); the harness installs them if needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, env_name, free_port, signing_key_base64,
    workspace_root,
};
use edgecoder_conformance::{Client, Deployment, trial};

/// The conformance Worker's configuration (test routes built in).
const TEST_CONFIG: &str = "tests/wrangler.test.toml";

/// `wrangler` with `config` (`wrangler.toml` is the release Worker).
fn wrangler_with(config: &str, args: &[&str], persist: &Path) -> Command {
    let mut cmd = edgecoder_conformance::harness::wrangler(persist);
    cmd.args(args).args(["--config", config]);
    cmd
}

fn persist_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgecoder-workerd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn apply_migrations(persist: &Path) {
    apply_migrations_with(TEST_CONFIG, persist);
}

fn apply_migrations_with(config: &str, persist: &Path) {
    let out = wrangler_with(
        config,
        &["d1", "migrations", "apply", "edgecoder", "--local"],
        persist,
    )
    .output()
    .expect("wrangler d1 migrations apply");
    assert!(
        out.status.success(),
        "migrations failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(persist: &Path, key: &str) -> Server {
    start_with(persist, key, Vec::new())
}

fn start_with(persist: &Path, key: &str, extra: Vec<(&'static str, String)>) -> Server {
    start_config(TEST_CONFIG, persist, key, extra)
}

fn start_config(
    config: &str,
    persist: &Path,
    key: &str,
    extra: Vec<(&'static str, String)>,
) -> Server {
    start_at(config, persist, key, extra, free_port())
}

/// `wrangler dev` on `port`, with the cron trigger reachable at
/// `/__scheduled` (`--test-scheduled`).
fn start_at(
    config: &str,
    persist: &Path,
    key: &str,
    extra: Vec<(&'static str, String)>,
    port: u16,
) -> Server {
    let mut args: Vec<String> = [
        "dev",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--show-interactive-dev-session=false",
        "--test-scheduled",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Signed requests must be addressed to this Worker.
    let origin = ("mesh_origins", format!("http://127.0.0.1:{port}"));
    for (k, v) in dev_settings(key).into_iter().chain([origin]).chain(extra) {
        args.push("--var".into());
        args.push(format!("{}:{v}", env_name(k)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = wrangler_with(config, &args, persist);
    cmd.arg("--log-level").arg("warn");
    let mut server = Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    // Includes wrangler's custom build (incremental) and workerd start.
    if let Err(e) = server.wait_ready("/auth/health", Duration::from_secs(300)) {
        panic!("wrangler dev did not start: {e}");
    }
    server.owning(persist.to_path_buf())
}

/// The release Worker (`wrangler.toml`, what `wrangler deploy` ships) has no
/// test routes, even with the setting on, and none of the test vectors'
/// bytes.
fn workerd_release_worker_has_no_test_routes() {
    let persist = persist_dir("release");
    apply_migrations_with("wrangler.toml", &persist);
    let server = start_config("wrangler.toml", &persist, &signing_key_base64(), Vec::new());
    edgecoder_conformance::harness::assert_no_test_vectors(
        &workspace_root().join("runtimes/cloudflare/build/index_bg.wasm"),
    );
    edgecoder_conformance::harness::assert_no_test_routes(&server.base);
}

/// The workerd deployment the suite runs against: the conformance Worker
/// under `wrangler dev` with migrated local D1 and KV, and the test OpenID
/// Provider.
fn deployment() -> Deployment {
    let persist = persist_dir("conformance");
    apply_migrations(&persist);
    let key = signing_key_base64();
    let op = edgecoder_conformance::harness::start_openid_provider();
    let server = start_with(
        &persist,
        &key,
        edgecoder_conformance::harness::oauth_settings(&op),
    );
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
                "workerd_release_worker_has_no_test_routes",
                workerd_release_worker_has_no_test_routes,
            ),
            trial(
                "workerd_ready_fails_with_pending_migrations",
                workerd_ready_fails_with_pending_migrations,
            ),
            trial(
                "workerd_federates_with_two_native_coordinators",
                workerd_federates_with_two_native_coordinators,
            ),
        ],
    )
}

fn workerd_ready_fails_with_pending_migrations() {
    // No `migrations apply`: SQL and KV work, the schema is behind.
    let persist = persist_dir("unmigrated");
    let server = start(&persist, &signing_key_base64());
    let client = Client::new(&server.base);
    let r = client.get("/mesh/health/ready").expect("ready");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json().expect("json");
    assert_eq!(v["status"], "fail");
    assert_eq!(v["checks"]["sql:roundtrip"][0]["status"], "pass");
    assert_eq!(v["checks"]["kv:roundtrip"][0]["status"], "pass");
    assert_eq!(v["checks"]["migrations:current"][0]["status"], "fail");
    let out = v["checks"]["migrations:current"][0]["output"]
        .as_str()
        .unwrap_or("");
    assert!(out.contains("0001_foundation.sql"), "{out}");
    // Liveness does not touch storage and stays up.
    assert_eq!(client.get("/mesh/health").expect("health").status, 200);
}

/// Three coordinators, this Worker under workerd and two native ones, each
/// witnessed by the other two, all peered: a ban on the Worker reaches both
/// native coordinators within a pull round and is enforced there, a ban on
/// a native one reaches the Worker (its push, or its cron trigger), a lift
/// follows, and the Worker's checkpoints carry both natives' cosignatures.
fn workerd_federates_with_two_native_coordinators() {
    use edgecoder_conformance::federation::{
        self as fed, Coordinator, ban, eventually, has_entry, peer, want,
    };
    use edgecoder_conformance::mesh::{active, heartbeat, server_telemetry};
    use edgecoder_tlog::checkpoint::{self, NoteKey};
    use serde_json::json;

    let root = fed::scratch("workerd-federation");
    let (pw, pa, pb) = (free_port(), free_port(), free_port());
    let persist = persist_dir("federation");
    apply_migrations(&persist);
    let key = signing_key_base64();
    let server = start_at(
        TEST_CONFIG,
        &persist,
        &key,
        fed::settings("w", pw, &[("a", pa), ("b", pb)]),
        pw,
    );
    let w = Coordinator::around(server, &key, persist);
    let a = Coordinator::start_with(&root.0, "a", pa, &[("w", pw), ("b", pb)]);
    let b = Coordinator::start_with(&root.0, "b", pb, &[("w", pw), ("a", pa)]);
    peer(&w, &a);
    peer(&w, &b);
    peer(&a, &b);
    let trust = |c: &Coordinator, of: &Coordinator| {
        let r = c.operator(
            "POST",
            "/mesh/peers/policy",
            &json!({"origin": of.origin(), "ban_policy": "trust", "reason": "federation test"}),
        );
        want(&r, 200, None, "policy");
    };
    trust(&a, &w);
    trust(&b, &w);
    trust(&w, &a);

    // Banned on the Worker, enforced on both native coordinators.
    let (_, at_a) = active(&a.ctx(), "wfed-a").expect("node at a");
    ban(&w, "add", &at_a.kid);
    eventually(60, "a applies w's ban", || {
        has_entry(&a, "add", &at_a.kid, w.origin()).then_some(())
    });
    let r = heartbeat(&a.ctx(), &at_a, &server_telemetry()).expect("hb");
    want(&r, 403, Some("node_blacklisted"), "enforced at a");
    eventually(60, "b applies w's ban", || {
        has_entry(&b, "add", &at_a.kid, w.origin()).then_some(())
    });

    // Banned on a native coordinator, enforced on the Worker: its push, or
    // the cron trigger's pull (fired here as wrangler would).
    let (_, at_w) = active(&w.ctx(), "wfed-w").expect("node at w");
    ban(&a, "add", &at_w.kid);
    let cron = Client::unchecked(w.origin());
    eventually(60, "w applies a's ban", || {
        let _ = cron.get("/__scheduled?cron=*+*+*+*+*");
        has_entry(&w, "add", &at_w.kid, a.origin()).then_some(())
    });
    let r = heartbeat(&w.ctx(), &at_w, &server_telemetry()).expect("hb");
    want(&r, 403, Some("node_blacklisted"), "enforced at w");

    // Lifted on the Worker: A follows.
    ban(&w, "lift", &at_a.kid);
    eventually(60, "a applies w's lift", || {
        has_entry(&a, "lift", &at_a.kid, w.origin()).then_some(())
    });
    let r = heartbeat(&a.ctx(), &at_a, &server_telemetry()).expect("hb");
    want(&r, 200, None, "lifted at a");

    // The Worker's log is witnessed by both native coordinators.
    let log_vkey = w
        .client
        .get("/ledger/keys")
        .expect("keys")
        .json()
        .expect("json")["vkeys"][0]
        .as_str()
        .expect("vkey")
        .to_owned();
    let mut trusted = vec![NoteKey::parse_vkey(&log_vkey).expect("log vkey")];
    for (t, p) in [("a", pa), ("b", pb)] {
        trusted.push(NoteKey::parse_vkey(&fed::witness_vkey(t, p)).expect("witness"));
    }
    let note = fed::sign_now(&w);
    let opened = checkpoint::open_cosigned(&note, &trusted).expect("open");
    assert_eq!(opened.cosigners.len(), 2, "{note}");
}
