//! Conformance against the Spin component: `edgecoder_spin.wasm` built for
//! wasm32-wasip2, instantiated per request by wasmtime 48 in
//! `edgecoder-spin-host`, routed and granted stores exactly as `spin.toml`
//! says, with `fermyon:spin` key-value, sqlite and variables over SQLite.
//!
//! The suite runs against the conformance build of the component (the
//! `danger-test-routes` feature, `scripts/build-spin.sh --test-routes`), which
//! the host serves in place of the release build with `--source`; the release
//! build itself is checked by `release_artefacts.rs`.
//!
//! Also checks the artefact itself, in process (`edgecoder_conformance::wasm`:
//! wasmparser and wit-component): it must be a valid component that imports
//! only the WASI and `fermyon:spin` interfaces it needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, free_port, signing_key_base64, target_dir,
    workspace_root,
};
use edgecoder_conformance::{Client, Deployment, trial, wasm};

fn cargo(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(args)
        .status()
        .expect("cargo");
    assert!(status.success(), "cargo {args:?} failed");
}

/// Builds (or confirms up to date) the conformance component and the host.
fn build() -> (PathBuf, PathBuf) {
    let status = Command::new("bash")
        .current_dir(workspace_root())
        .args(["scripts/build-spin.sh", "--test-routes"])
        .status()
        .expect("bash");
    assert!(
        status.success(),
        "scripts/build-spin.sh --test-routes failed"
    );
    // The same package selection as `cargo test`, so nothing is rebuilt.
    cargo(&["build", "--quiet", "--bins"]);
    (
        target_dir().join("test-routes/wasm32-wasip2/wasm-release/edgecoder_spin.wasm"),
        target_dir().join("debug/edgecoder-spin-host"),
    )
}

fn start(host: &Path, tag: &str, vars: &[&str]) -> Server {
    start_expecting(host, tag, vars, 200)
}

fn start_expecting(host: &Path, tag: &str, vars: &[&str], status: u16) -> Server {
    let (wasm, _) = build();
    start_serving(host, Some(&wasm), tag, vars, status)
}

/// Serves `spin.toml` with the component at `source` (`None`: the release
/// build the manifest names).
fn start_serving(
    host: &Path,
    source: Option<&Path>,
    tag: &str,
    vars: &[&str],
    status: u16,
) -> Server {
    serve(
        host,
        Path::new("spin.toml"),
        free_port(),
        source,
        tag,
        vars,
        status,
    )
}

/// Serves `manifest` on `port`.
fn serve(
    host: &Path,
    manifest: &Path,
    port: u16,
    source: Option<&Path>,
    tag: &str,
    vars: &[&str],
    status: u16,
) -> Server {
    let data = std::env::temp_dir().join(format!("edgecoder-spin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut cmd = Command::new(host);
    cmd.current_dir(workspace_root())
        .arg("--manifest")
        .arg(manifest)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data);
    if let Some(source) = source {
        cmd.arg("--source").arg(source);
    }
    // The components reach each other by the manifest's defaults (service
    // chaining), which the host resolves exactly as Spin does.
    // Signed requests must be addressed to this app.
    cmd.args(["--var", &format!("mesh_origins=http://127.0.0.1:{port}")]);
    for v in vars {
        cmd.args(["--var", v]);
    }
    let mut server = Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    if let Err(e) = server.wait_status("/openapi.json", status, Duration::from_secs(120)) {
        panic!("spin host did not start: {e}");
    }
    server.owning(data)
}

fn dev_vars(key: &str) -> Vec<String> {
    dev_settings(key)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The Spin deployment the suite runs against: the conformance component in
/// the test host, and the test OpenID Provider.
fn deployment() -> Deployment {
    let (_, host) = build();
    let key = signing_key_base64();
    let op = edgecoder_conformance::harness::start_openid_provider();
    let mut vars = dev_vars(&key);
    vars.extend(
        edgecoder_conformance::harness::oauth_settings(&op)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    // Spin lets the auth component reach the provider only if the manifest
    // allows its origin.
    vars.push(format!("oauth_outbound_host={}", op.issuer));
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let server = start(&host, "conformance", &vars);
    Deployment {
        target: edgecoder_conformance::Target {
            functions_over_http: true,
            ..conformance_target(&server.base, &key)
        },
        keep: vec![Box::new(server), Box::new(op)],
    }
}
fn main() {
    edgecoder_conformance::main(
        deployment,
        vec![
            trial(
                "spin_production_mode_without_signing_key_refuses_to_serve",
                spin_production_mode_without_signing_key_refuses_to_serve,
            ),
            trial(
                "spin_release_component_has_no_test_routes",
                spin_release_component_has_no_test_routes,
            ),
            trial(
                "spin_component_imports_only_what_it_needs",
                spin_component_imports_only_what_it_needs,
            ),
            trial(
                "spin_manifest_grants_each_function_only_its_own_stores",
                spin_manifest_grants_each_function_only_its_own_stores,
            ),
            trial(
                "a_clients_own_spin_headers_do_not_change_its_address_or_scheme",
                a_clients_own_spin_headers_do_not_change_its_address_or_scheme,
            ),
            trial(
                "the_fermyon_cloud_manifest_reaches_functions_through_the_app_origin",
                the_fermyon_cloud_manifest_reaches_functions_through_the_app_origin,
            ),
        ],
    )
}

/// Spin appends the headers it sets (`spin-client-addr`, `spin-full-url`)
/// after the client's own: a client that sends them, even claiming to be a
/// chained request (`0.0.0.0:0`), is still recorded at its real address.
fn a_clients_own_spin_headers_do_not_change_its_address_or_scheme() {
    let (_, host) = build();
    let key = signing_key_base64();
    let vars = dev_vars(&key);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let server = start(&host, "spoof", &vars);
    let client = Client::new(&server.base);
    for spoof in ["0.0.0.0:0", "203.0.113.9:1"] {
        let body = br#"{"email":"nobody@example.com","password":"not the password"}"#;
        let r = client
            .send_with(
                "POST",
                "/auth/login",
                &[
                    ("content-type", "application/json"),
                    ("spin-client-addr", spoof),
                    ("spin-full-url", "https://evil.example/auth/login"),
                ],
                body,
            )
            .expect("login");
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        let id = r.header("x-request-id").expect("request id").to_owned();
        let events = client
            .send_with(
                "GET",
                &format!("/auth/audit/events?request_id={id}"),
                &[(
                    "authorization",
                    &format!("Bearer {}", edgecoder_conformance::harness::MONITOR_TOKEN),
                )],
                &[],
            )
            .expect("export");
        assert_eq!(events.status, 200);
        let text = String::from_utf8_lossy(&events.body).into_owned();
        let event: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("an event")).expect("json");
        assert_eq!(event["client_ip"], "127.0.0.1", "spoofed {spoof}: {event}");
    }
}

fn spin_production_mode_without_signing_key_refuses_to_serve() {
    let (_, host) = build();
    let server = start_expecting(
        &host,
        "production",
        &[
            "mode=production",
            "signing_key=",
            "checkpoint_key=",
            "coordinator_key=",
            "auth_service_key=",
            "mesh_service_key=",
            "service_keys=",
        ],
        503,
    );
    let client = Client::unchecked(&server.base);
    for path in ["/auth/health", "/ledger/health/ready", "/mesh/_test/echo"] {
        let r = client.get(path).expect("request");
        // A 5xx here is the point: the deployment is broken, not the request.
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.json().expect("json")["code"], "service_misconfigured");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("signing_key"),
            "must not describe secrets to clients: {body}"
        );
    }
}

/// The release component (what `spin.toml` names and `spin deploy` ships)
/// has no test routes, even with the setting on, and none of the test
/// vectors' bytes.
fn spin_release_component_has_no_test_routes() {
    let status = Command::new("bash")
        .current_dir(workspace_root())
        .arg("scripts/build-spin.sh")
        .status()
        .expect("bash");
    assert!(status.success(), "scripts/build-spin.sh failed");
    let (_, host) = build();
    let release = target_dir().join("wasm32-wasip2/wasm-release/edgecoder_spin.wasm");
    edgecoder_conformance::harness::assert_no_test_vectors(&release);
    let key = signing_key_base64();
    let vars = dev_vars(&key);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let server = start_serving(&host, None, "release", &vars, 200);
    edgecoder_conformance::harness::assert_no_test_routes(&server.base);
}

fn spin_component_imports_only_what_it_needs() {
    let (wasm, _) = build();
    wasm::validate(&wasm, wasm::Features::All).unwrap_or_else(|e| panic!("{e}"));
    let imports = wasm::component_imports(&wasm).unwrap_or_else(|e| panic!("{e}"));
    let wit = wasm::component_wit(&wasm).unwrap_or_else(|e| panic!("{e}"));
    let allowed: BTreeSet<&str> = [
        "fermyon:spin/key-value",
        "fermyon:spin/sqlite",
        "fermyon:spin/variables",
        "wasi:http/types",
        "wasi:http/outgoing-handler",
        "wasi:io/poll",
        "wasi:io/error",
        "wasi:io/streams",
        "wasi:clocks/monotonic-clock",
        "wasi:clocks/wall-clock",
        "wasi:random/random",
        "wasi:random/insecure-seed",
        "wasi:cli/environment",
        "wasi:cli/exit",
        "wasi:cli/stdin",
        "wasi:cli/stdout",
        "wasi:cli/stderr",
        "wasi:cli/terminal-input",
        "wasi:cli/terminal-output",
        "wasi:cli/terminal-stdin",
        "wasi:cli/terminal-stdout",
        "wasi:cli/terminal-stderr",
    ]
    .into_iter()
    .collect();
    let extra: Vec<&String> = imports
        .iter()
        .filter(|i| !allowed.contains(i.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "unexpected imports (filesystem, sockets, other Spin APIs?): {extra:?}"
    );
    for needed in [
        "fermyon:spin/key-value",
        "fermyon:spin/sqlite",
        "fermyon:spin/variables",
    ] {
        assert!(imports.contains(needed), "{needed} missing: {imports:?}");
    }
    assert!(
        wit.contains("export wasi:http/incoming-handler@0.2"),
        "must export wasi:http/incoming-handler@0.2.x:\n{wit}"
    );
}

// Fermyon Cloud takes neither variable templates in allowed_outbound_hosts
// nor service chaining: `edgecoder spin-manifest fermyon-cloud` writes
// literal hosts and the app's own origin instead. Served by the host (which
// allows exactly the listed hosts, and resolves no chaining the manifest
// does not list), auth's role change still reaches the ledger, now over the
// network through the app's origin, and the log records it.
fn the_fermyon_cloud_manifest_reaches_functions_through_the_app_origin() {
    let (wasm, host) = build();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let dir = target_dir().join("spin-fermyon-cloud");
    std::fs::create_dir_all(&dir).expect("dir");
    let out = Command::new(target_dir().join("debug/edgecoder"))
        .current_dir(workspace_root())
        .args([
            "spin-manifest",
            "fermyon-cloud",
            "--insecure-loopback",
            "--origin",
            &origin,
        ])
        .output()
        .expect("edgecoder spin-manifest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let manifest: toml::Table = toml::from_str(&text).expect("toml");
    for (id, c) in manifest["component"].as_table().expect("components") {
        for h in c
            .get("allowed_outbound_hosts")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let h = h.as_str().unwrap_or_default();
            assert!(
                !h.contains("{{") && !h.contains(".spin.internal"),
                "{id}: {h}"
            );
        }
    }
    let path = dir.join("spin.toml");
    std::fs::write(&path, &text).expect("write");
    let key = signing_key_base64();
    let vars = dev_vars(&key);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let server = serve(&host, &path, port, Some(&wasm), "fermyon-cloud", &vars, 200);
    let client = Client::new(&server.base);
    let target = conformance_target(&server.base, &key);
    let x = edgecoder_conformance::identity::Ctx::new(&client, &target);
    let (_, admin) = x.admin().expect("admin");
    let user = x.account("cloud", true).expect("account");
    let r = x
        .send(
            "POST",
            &format!("/auth/admin/users/{}/roles", user.id),
            Some(&admin),
            Some(&serde_json::json!({"role": "coordinator_owner"})),
            &[],
        )
        .expect("grant");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let index = r.json().expect("json")["ledger_index"].as_u64();
    assert!(index.is_some(), "the grant was not logged: {r:?}");
}

fn spin_manifest_grants_each_function_only_its_own_stores() {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).expect("spin.toml");
    let manifest: toml::Table = toml::from_str(&text).expect("toml");
    let components = manifest["component"].as_table().expect("components");
    for f in ["auth", "mesh", "ledger"] {
        let c = components[f].as_table().expect("component");
        for key in ["sqlite_databases", "key_value_stores"] {
            let granted: Vec<&str> = c[key]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert_eq!(granted, vec![f], "{f}.{key}");
        }
        assert_eq!(c["variables"]["function"].as_str(), Some(f));
        // Auth calls the ledger (role changes), the email API and the sign-in
        // providers; the mesh calls auth (callers, enrollments) and the
        // ledger; the ledger calls auth (current roles of a caller).
        let outbound: Vec<&str> = c
            .get("allowed_outbound_hosts")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let want: Vec<&str> = match f {
            "auth" => vec![
                "http://ledger.spin.internal",
                "{{ mail_api_base }}",
                "https://accounts.google.com",
                "https://oauth2.googleapis.com",
                "https://www.googleapis.com",
                "https://openidconnect.googleapis.com",
                "https://login.microsoftonline.com",
                "https://github.com",
                "https://api.github.com",
                "{{ oauth_outbound_host }}",
            ],
            "mesh" => vec![
                "http://auth.spin.internal",
                "http://ledger.spin.internal",
                "{{ mesh_peer_hosts }}",
            ],
            "ledger" => vec!["http://auth.spin.internal", "{{ log_witness_hosts }}"],
            _ => vec![],
        };
        assert_eq!(outbound, want, "{f}.allowed_outbound_hosts");
    }
    // One key per job, and each component holds only the keys it uses: the
    // callers (auth, mesh) each their own service key, mapped from its own
    // variable, so neither can sign as the other.
    for (f, want) in [
        (
            "auth",
            vec![
                "previous_key_retired_at",
                "previous_signing_key",
                "service_key",
                "signing_key",
            ],
        ),
        (
            "mesh",
            vec![
                "coordinator_key",
                "previous_coordinator_key",
                "previous_coordinator_key_retired_at",
                "service_key",
                "witness_key",
            ],
        ),
        (
            "ledger",
            vec![
                "checkpoint_ed25519_key",
                "checkpoint_key",
                "previous_checkpoint_key",
                "previous_checkpoint_key_retired_at",
            ],
        ),
        ("gateway", vec![]),
    ] {
        let vars = components[f]["variables"].as_table().expect("variables");
        let mut keys: Vec<&str> = vars
            .keys()
            .map(String::as_str)
            .filter(|k| k.ends_with("_key") || k.contains("key_retired_at"))
            .filter(|k| *k != "mail_api_key")
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, want, "{f}'s keys");
    }
    for (f, var) in [("auth", "auth_service_key"), ("mesh", "mesh_service_key")] {
        assert_eq!(
            components[f]["variables"]["service_key"].as_str(),
            Some(format!("{{{{ {var} }}}}").as_str()),
            "{f}'s service_key"
        );
    }
    let gw = components["gateway"].as_table().expect("gateway");
    assert!(gw.get("sqlite_databases").is_none() && gw.get("key_value_stores").is_none());
    let routes: Vec<(String, String)> = manifest["trigger"]["http"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            (
                r["route"].as_str().unwrap_or("").to_owned(),
                r["component"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for f in ["auth", "mesh", "ledger"] {
        assert!(
            routes.contains(&(format!("/{f}/..."), f.to_owned())),
            "{routes:?}"
        );
    }
    assert!(routes.contains(&("/...".to_owned(), "gateway".to_owned())));
    assert!(routes.contains(&("/.well-known/jwks.json".to_owned(), "auth".to_owned())));
}
