//! Helpers the runtime harnesses share: free ports, child processes that die
//! with the test, waiting for readiness, and locating workspace paths.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A tool path the harnesses need (`NODE22_BIN`, `WRANGLER_BIN`,
/// `EC_PYTHON`): from the environment when `scripts/test` set it,
/// otherwise from `scripts/setup-tools.sh --env`, which installs what is
/// missing (once per test binary), so a bare `cargo test` works too.
pub fn tool(name: &str) -> PathBuf {
    if let Some(v) = std::env::var_os(name) {
        return PathBuf::from(v);
    }
    static TOOLS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let tools = TOOLS.get_or_init(|| {
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/setup-tools.sh"))
            .arg("--env")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running scripts/setup-tools.sh: {e}"));
        assert!(out.status.success(), "scripts/setup-tools.sh --env failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    });
    tools
        .get(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("scripts/setup-tools.sh --env did not report {name}"))
}

/// Builds the workspace's binaries (the same package selection as `cargo
/// test`) and returns the `edgecoder` binary, built with the
/// `danger-test-routes` feature the suite needs (echo, ports, bench and
/// outbox routes).
pub fn edgecoder_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--bins",
            "--features",
            "edgecoder/danger-test-routes",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the binaries failed");
    target_dir().join("debug").join("edgecoder")
}

/// The release `edgecoder` binary, as the README's run command builds it
/// (no test routes).
pub fn release_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--release", "-p", "edgecoder"])
        .status()
        .expect("cargo build --release");
    assert!(status.success(), "building the release binary failed");
    target_dir().join("release").join("edgecoder")
}

/// Every test-only route, as each function's `testing` module mounts it.
pub const TEST_ROUTES: [(&str, &str); 9] = [
    ("POST", "/auth/_test/echo"),
    ("POST", "/auth/_test/ports"),
    ("GET", "/auth/_test/outbox"),
    ("POST", "/auth/_test/bench"),
    ("POST", "/mesh/_test/echo"),
    ("POST", "/mesh/_test/ports"),
    ("POST", "/mesh/_test/bench"),
    ("POST", "/ledger/_test/echo"),
    ("POST", "/ledger/_test/ports"),
];

/// A release deployment started with `insecure_test_routes=true` answers
/// 404 on every test route and lists none in `/openapi.json`.
pub fn assert_no_test_routes(base: &str) {
    let c = crate::Client::new(base);
    for (method, path) in TEST_ROUTES {
        let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
        let r = c
            .send(method, path, Some("application/json"), body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            r.status, 404,
            "{method} {path} is served by a release build"
        );
    }
    let doc = c
        .get("/openapi.json")
        .expect("openapi")
        .json()
        .expect("json");
    let listed: Vec<&String> = doc["paths"]
        .as_object()
        .map(|p| p.keys().filter(|k| k.contains("/_test/")).collect())
        .unwrap_or_default();
    assert!(listed.is_empty(), "openapi lists {listed:?}");
}

/// A release artefact contains none of the test vectors' bytes (the RS256
/// passkey and ID-token vectors of `functions/auth/testdata`) and none of the
/// test routes' paths.
pub fn assert_no_test_vectors(artefact: &Path) {
    let bytes =
        std::fs::read(artefact).unwrap_or_else(|e| panic!("reading {}: {e}", artefact.display()));
    let mut needles: Vec<String> = TEST_ROUTES.iter().map(|(_, p)| (*p).to_owned()).collect();
    for file in ["rs256.json", "id_token_rs256.json"] {
        let path = workspace_root().join("functions/auth/testdata").join(file);
        let text = std::fs::read_to_string(&path).expect("test vector");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        collect_long_strings(&v, &mut needles);
    }
    assert!(needles.len() > TEST_ROUTES.len(), "no vector strings found");
    for needle in &needles {
        let n = needle.as_bytes();
        assert!(
            !bytes.windows(n.len()).any(|w| w == n),
            "{} contains test-only bytes: {}…",
            artefact.display(),
            &needle[..needle.len().min(40)]
        );
    }
}

fn collect_long_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 32 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_long_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_long_strings(x, out)),
        _ => {}
    }
}

/// The `edgecoder-agent` binary (built with the others by [`edgecoder_binary`]).
pub fn agent_binary() -> PathBuf {
    edgecoder_binary();
    target_dir().join("debug").join("edgecoder-agent")
}

/// Starts `edgecoder serve` on a free port over `data_dir` in development
/// mode with the test routes, plus `extra_env`, and waits until it is live.
pub fn start_native(bin: &Path, data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
    start_native_at(bin, data_dir, extra_env, free_port())
}

/// [`start_native`] on a given port (a restart where clients expect it).
pub fn start_native_at(
    bin: &Path,
    data_dir: &Path,
    extra_env: &[(&str, &str)],
    port: u16,
) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(data_dir)
    .env_remove("EDGECODER_MODE")
    .env("EDGECODER_INSECURE_TEST_ROUTES", "true")
    .env("EDGECODER_LOG", "warn")
    // Signed requests must be addressed to this server (the suite checks
    // that one addressed elsewhere is misdirected).
    .env("EDGECODER_MESH_ORIGINS", format!("http://127.0.0.1:{port}"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut server = Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    if let Err(e) = server.wait_ready("/auth/health", Duration::from_secs(30)) {
        panic!("edgecoder did not start: {e}");
    }
    server
}

/// A fresh signing key as one line of base64 DER, from `edgecoder keygen`,
/// for runtimes whose settings cannot hold a PEM's newlines.
pub fn signing_key_base64() -> String {
    let out = Command::new(edgecoder_binary())
        .args(["keygen", "--base64"])
        .output()
        .expect("edgecoder keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A child process killed (with its process group) when dropped, whose output
/// is collected for failure messages.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    /// A scratch directory removed when the server is dropped.
    scratch: Option<PathBuf>,
    /// The base URL.
    pub base: String,
}

impl Server {
    /// Spawns `cmd` with piped output. `base` is where it will listen.
    pub fn spawn(mut cmd: Command, base: String) -> Server {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // Own process group, so wrangler's workerd children die with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Server {
            child,
            lines: rx,
            log: Vec::new(),
            scratch: None,
            base,
        }
    }

    /// Makes the server own `dir` (its data or persistence directory), so
    /// the directory goes when the server does and test runs leave no
    /// litter in the temp directory.
    pub fn owning(mut self, dir: PathBuf) -> Server {
        self.scratch = Some(dir);
        self
    }

    /// Output seen so far.
    pub fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    /// Waits for an output line starting with `prefix` and returns the rest
    /// of it.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    self.log.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("exited before {prefix}:\n{}", self.output()));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no {prefix} after {timeout:?}:\n{}", self.output()));
            }
        }
    }

    /// Waits until `path` answers 200, the process exits, or `timeout` passes.
    pub fn wait_ready(&mut self, path: &str, timeout: Duration) -> Result<(), String> {
        self.wait_status(path, 200, timeout)
    }

    /// Waits until `path` answers `status`, the process exits, or `timeout`
    /// passes.
    pub fn wait_status(
        &mut self,
        path: &str,
        status: u16,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let client = crate::Client::unchecked(&self.base);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "exited with {status} before ready:\n{}",
                    self.output()
                ));
            }
            if let Ok(r) = client.get(path)
                && r.status == status
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {timeout:?}:\n{}", self.output()));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().ok();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: wrangler leaves workerd running otherwise.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The bootstrap secret every conformance deployment is configured with.
pub const BOOTSTRAP_SECRET: &str = "conformance-bootstrap-secret-0123456789abcdef";
/// The service credential every conformance deployment is configured with.
/// The browser origin allowed to use cookie authentication.
pub const ALLOWED_ORIGIN: &str = "http://localhost:5173";
/// The issuer conformance deployments use (local, so cookies omit `Secure`).
pub const ISSUER: &str = "http://localhost:8080";

/// `wrangler` (the installed one, under Node 22) run from the workspace
/// root with local state in `persist`, telemetry off.
pub fn wrangler(persist: &Path) -> Command {
    let node = tool("NODE22_BIN");
    let path = format!(
        "{}:{}",
        node.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(tool("WRANGLER_BIN"));
    cmd.current_dir(workspace_root())
        .arg("--persist-to")
        .arg(persist)
        .env("PATH", path)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("WRANGLER_SEND_ERROR_REPORTS", "false")
        .env("CI", "true");
    cmd
}

/// The key of one job (`checkpoint`, `coordinator`) of a test deployment
/// whose access-token key is `signing_key` (both one line of base64 DER):
/// derived from it, so every harness and check can recompute it, and
/// distinct per job, as a deployment's keys must be.
pub fn job_key(signing_key: &str, job: &str) -> String {
    use p256::pkcs8::EncodePrivateKey;
    let seed = blake3::derive_key(
        &format!("edgecoder conformance {job} key v1"),
        signing_key.as_bytes(),
    );
    let secret = p256::SecretKey::from_slice(&seed).expect("a P-256 scalar");
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        secret.to_pkcs8_der().expect("pkcs8").as_bytes(),
    )
}

/// The service key of `caller` (`auth`, `mesh`) in a test deployment.
pub fn service_key(signing_key: &str, caller: &str) -> String {
    job_key(signing_key, &format!("{caller}-service"))
}

/// The `service_keys` setting of a test deployment: each caller's public key.
pub fn service_keys(signing_key: &str) -> String {
    use p256::pkcs8::EncodePublicKey;
    let public = |caller: &str| {
        let key = edgecoder_kernel::SigningKey::from_secret(&service_key(signing_key, caller))
            .expect("service key");
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            key.verifying_key()
                .to_public_key_der()
                .expect("spki")
                .as_bytes(),
        )
    };
    serde_json::json!({"auth": [public("auth")], "mesh": [public("mesh")]}).to_string()
}

/// The monitor credential the suite's deployments accept for the audit
/// export (its digest is in [`dev_settings`]).
pub const MONITOR_TOKEN: &str = "emt_the-suite-monitor-credential";

/// The settings (by their snake_case names) a conformance deployment runs
/// with; each harness passes them the way its runtime takes settings.
pub fn dev_settings(signing_key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("mode", "development".into()),
        ("insecure_test_routes", "true".into()),
        ("signing_key", signing_key.into()),
        ("checkpoint_key", job_key(signing_key, "checkpoint")),
        ("coordinator_key", job_key(signing_key, "coordinator")),
        ("issuer", ISSUER.into()),
        ("allowed_origins", ALLOWED_ORIGIN.into()),
        ("bootstrap_secret", BOOTSTRAP_SECRET.into()),
        // Each calling function's own key (Spin gives each component only
        // its own), and the callers' public keys every callee accepts.
        ("auth_service_key", service_key(signing_key, "auth")),
        ("mesh_service_key", service_key(signing_key, "mesh")),
        ("service_keys", service_keys(signing_key)),
        // Small enough that the suite can reach them quickly.
        (
            "mesh_node_rate_per_minute",
            MESH_RATE_PER_MINUTE.to_string(),
        ),
        ("mesh_lease_grace_ms", "0".into()),
        // The suite registers dozens of nodes from one address.
        ("mesh_register_per_minute", "100000".into()),
        ("mesh_max_attempts", "2".into()),
        // Epochs the suite can see end; closes come from the route only (no
        // scheduled work lands between a check's requests).
        ("economy_epoch_secs", "60".into()),
        ("mesh_federation_interval_secs", "3600".into()),
        // The suite signs up a few hundred accounts from one address.
        ("signup_per_ip_per_hour", "100000".into()),
        // The suite's monitor (a SIEM) follows the audit export with this.
        (
            "audit_monitor_tokens",
            format!("blake3:{}", blake3::hash(MONITOR_TOKEN.as_bytes()).to_hex()),
        ),
    ]
}

/// The client id the test OpenID Provider knows the deployment by (RS256
/// ID tokens, `client_secret_basic`).
pub const OIDC_CLIENT_ID: &str = "edgecoder-conformance";
/// A second client of the same provider: ES256 ID tokens,
/// `client_secret_post`.
pub const OIDC_ES_CLIENT_ID: &str = "edgecoder-conformance-es";
/// Both clients' secret.
pub const OIDC_CLIENT_SECRET: &str = "conformance-oidc-client-secret";
/// The native-app URL scheme conformance deployments register.
pub const APP_SCHEME: &str = "dev.edgecoder.conformance";

/// The test OpenID Provider (`tests/oidc/provider.mjs` under Node 22): one
/// process, one origin, serving the main issuer and, under `/decoy`, an
/// issuer that publishes other keys under the kids it signs with.
pub struct OpenIdProvider {
    /// The process (dies with this value).
    pub server: Server,
    /// The main issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
}

/// Starts the test OpenID Provider on a free loopback port.
pub fn start_openid_provider() -> OpenIdProvider {
    let node = tool("NODE22_BIN").join("node");
    let module = tool("OIDC_PROVIDER_MODULE");
    let redirects: Vec<String> = ["op", "op-es", "decoy", "op-userinfo", "github"]
        .iter()
        .map(|p| format!("{ISSUER}/auth/oauth/{p}/callback"))
        .collect();
    let mut cmd = Command::new(node);
    cmd.current_dir(workspace_root().join("tests/oidc"))
        .args(["provider.mjs", "0"])
        .env("OIDC_PROVIDER_MODULE", module)
        .env("OIDC_CLIENT_ID", OIDC_CLIENT_ID)
        .env("OIDC_CLIENT_SECRET", OIDC_CLIENT_SECRET)
        .env("OIDC_CLIENT2_ID", OIDC_ES_CLIENT_ID)
        .env("OIDC_CLIENT2_ALG", "ES256")
        .env("OIDC_CLIENT2_AUTH", "client_secret_post")
        .env("OIDC_REDIRECT_URIS", redirects.join(" "))
        .env("OIDC_SKIP_CONSENT", "1")
        .env(
            "OIDC_MOUNTS",
            r#"[{"path": "/decoy", "jwks_mode": "mismatch"}, {"path": "/userinfo", "id_token_claims": "minimal"}]"#,
        );
    let mut server = Server::spawn(cmd, String::new());
    let ready = server
        .wait_line("OIDC_READY ", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the test OpenID Provider did not start: {e}"));
    let info: serde_json::Value =
        serde_json::from_str(&ready).unwrap_or_else(|e| panic!("OIDC_READY {ready}: {e}"));
    let issuer = info["issuer"].as_str().unwrap_or_default().to_owned();
    server.base = issuer.clone();
    OpenIdProvider { server, issuer }
}

/// The OAuth settings a conformance deployment runs with: providers `op`
/// (RS256), `op-es` (ES256, `client_secret_post`), `decoy`, `op-userinfo`
/// (the email only in the UserInfo response), and `github`
/// (the provider process's GitHub stand-in), all on one origin.
pub fn oauth_settings(op: &OpenIdProvider) -> Vec<(&'static str, String)> {
    let providers = serde_json::json!([
        {"id": "op", "issuer": op.issuer, "client_id": OIDC_CLIENT_ID, "name": "Test OP"},
        {"id": "op-es", "issuer": op.issuer, "client_id": OIDC_ES_CLIENT_ID, "name": "Test OP (ES256)"},
        {"id": "decoy", "issuer": format!("{}/decoy", op.issuer), "client_id": OIDC_CLIENT_ID, "name": "Decoy OP"},
        {"id": "op-userinfo", "issuer": format!("{}/userinfo", op.issuer), "client_id": OIDC_CLIENT_ID, "name": "Test OP (email in UserInfo only)"},
        {"id": "github", "client_id": OIDC_CLIENT_ID,
         "web_base": format!("{}/github", op.issuer), "api_base": format!("{}/github/api", op.issuer)},
    ]);
    let secrets = serde_json::json!({
        "op": OIDC_CLIENT_SECRET, "op-es": OIDC_CLIENT_SECRET, "decoy": OIDC_CLIENT_SECRET,
        "op-userinfo": OIDC_CLIENT_SECRET,
        "github": OIDC_CLIENT_SECRET,
    });
    vec![
        ("oauth_providers", providers.to_string()),
        ("oauth_client_secrets", secrets.to_string()),
        ("oauth_app_schemes", APP_SCHEME.into()),
    ]
}

/// The per-node request budget the suite deploys with.
pub const MESH_RATE_PER_MINUTE: u32 = 40;

/// The environment-variable / Worker-binding name of a setting.
pub fn env_name(setting: &str) -> String {
    format!("EDGECODER_{}", setting.to_ascii_uppercase())
}

/// What the suite needs to know about a deployment started with
/// [`dev_settings`].
pub fn conformance_target(base: &str, signing_key: &str) -> crate::Target {
    crate::Target {
        base: base.to_owned(),
        signing_key: signing_key.to_owned(),
        checkpoint_key: job_key(signing_key, "checkpoint"),
        coordinator_key: job_key(signing_key, "coordinator"),
        issuer: ISSUER.to_owned(),
        bootstrap_secret: BOOTSTRAP_SECRET.to_owned(),
        allowed_origin: ALLOWED_ORIGIN.to_owned(),
        functions_over_http: false,
    }
}
