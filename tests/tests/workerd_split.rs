//! Conformance against the split Workers layout under `wrangler dev`: each
//! function its own Worker with only its own D1 database and KV namespace,
//! a storage-less gateway Worker in front that hands each request to its
//! function's Worker through a Service Binding, and the functions calling
//! each other through Service Bindings with tokens signed by their own
//! service keys. One `wrangler dev` session runs all four (the gateway
//! first, so it serves the port).
//!
//! The configurations are written per run (absolute paths, the suite's
//! keys); `runtimes/cloudflare/split/` holds the deployable ones, which a
//! check here reads to confirm each Worker is bound to its own stores only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, env_name, free_port, service_key, signing_key_base64,
    workspace_root, wrangler,
};
use edgecoder_conformance::{Deployment, trial};

/// The functions, each with its own Worker and stores, and the Service
/// Bindings it calls the others through.
const FUNCTIONS: [(&str, &[&str]); 3] = [
    ("auth", &["LEDGER"]),
    ("mesh", &["AUTH", "LEDGER"]),
    ("ledger", &["AUTH"]),
];

fn worker_name(f: &str) -> String {
    format!("edgecoder-split-{f}")
}

/// Writes the four configurations into `dir`; returns their paths, the
/// gateway's first.
fn write_configs(dir: &Path, port: u16, settings: &[(&'static str, String)]) -> Vec<PathBuf> {
    let main = workspace_root().join("runtimes/cloudflare/build-test/index.js");
    let migrations = workspace_root().join("migrations");
    let vars = |function: &str, extra: Vec<(&str, String)>| {
        let mut t = toml::Table::new();
        let mut all: Vec<(&str, String)> = settings
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .filter(|(k, _)| !k.ends_with("_service_key"))
            .collect();
        all.push(("function", function.to_owned()));
        all.push(("mesh_origins", format!("http://127.0.0.1:{port}")));
        all.extend(extra);
        for (k, v) in all {
            t.insert(env_name(k), toml::Value::String(v));
        }
        toml::Value::Table(t)
    };
    let services = |bindings: &[&str]| {
        toml::Value::Array(
            bindings
                .iter()
                .map(|b| {
                    let mut t = toml::Table::new();
                    t.insert("binding".into(), toml::Value::String((*b).to_owned()));
                    t.insert(
                        "service".into(),
                        toml::Value::String(worker_name(&b.to_ascii_lowercase())),
                    );
                    toml::Value::Table(t)
                })
                .collect(),
        )
    };
    let base = |name: &str| {
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String(worker_name(name)));
        t.insert(
            "main".into(),
            toml::Value::String(main.display().to_string()),
        );
        t.insert(
            "compatibility_date".into(),
            toml::Value::String("2025-09-01".into()),
        );
        t
    };
    let mut paths = Vec::new();
    let mut gateway = base("gateway");
    gateway.insert("vars".into(), vars("gateway", Vec::new()));
    gateway.insert("services".into(), services(&["AUTH", "MESH", "LEDGER"]));
    let mut all = vec![("gateway".to_owned(), gateway)];
    for (i, (f, calls)) in FUNCTIONS.iter().enumerate() {
        let mut t = base(f);
        let mut extra = Vec::new();
        if matches!(*f, "auth" | "mesh") {
            let signing = settings
                .iter()
                .find(|(k, _)| *k == "signing_key")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            extra.push(("service_key", service_key(&signing, f)));
        }
        if calls.contains(&"LEDGER") {
            extra.push(("ledger_url", "https://ledger.internal".to_owned()));
        }
        if calls.contains(&"AUTH") {
            extra.push(("auth_url", "https://auth.internal".to_owned()));
        }
        t.insert("vars".into(), vars(f, extra));
        t.insert("services".into(), services(calls));
        let mut db = toml::Table::new();
        db.insert("binding".into(), toml::Value::String("DB".into()));
        db.insert(
            "database_name".into(),
            toml::Value::String(format!("edgecoder-{f}")),
        );
        db.insert(
            "database_id".into(),
            toml::Value::String(format!("00000000-0000-0000-0000-00000000000{}", i + 1)),
        );
        db.insert(
            "migrations_dir".into(),
            toml::Value::String(migrations.display().to_string()),
        );
        t.insert(
            "d1_databases".into(),
            toml::Value::Array(vec![toml::Value::Table(db)]),
        );
        let mut kv = toml::Table::new();
        kv.insert("binding".into(), toml::Value::String("KV".into()));
        kv.insert(
            "id".into(),
            toml::Value::String(format!("0000000000000000000000000000000{}", i + 1)),
        );
        t.insert(
            "kv_namespaces".into(),
            toml::Value::Array(vec![toml::Value::Table(kv)]),
        );
        all.push(((*f).to_owned(), t));
    }
    for (f, t) in all {
        let path = dir.join(format!("wrangler.{f}.toml"));
        std::fs::write(&path, toml::to_string(&t).expect("toml")).expect("write config");
        paths.push(path);
    }
    paths
}

fn deployment() -> Deployment {
    let status = Command::new("bash")
        .current_dir(workspace_root())
        .args(["scripts/build-worker.sh", "--test-routes"])
        .status()
        .expect("bash");
    assert!(
        status.success(),
        "scripts/build-worker.sh --test-routes failed"
    );
    let persist = std::env::temp_dir().join(format!("edgecoder-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&persist);
    std::fs::create_dir_all(&persist).expect("persist dir");
    let key = signing_key_base64();
    let op = edgecoder_conformance::harness::start_openid_provider();
    let port = free_port();
    let mut settings = dev_settings(&key);
    settings.extend(edgecoder_conformance::harness::oauth_settings(&op));
    let configs = write_configs(&persist, port, &settings);
    for (config, (f, _)) in configs.iter().skip(1).zip(FUNCTIONS) {
        let out = wrangler(&persist)
            .args([
                "d1",
                "migrations",
                "apply",
                &format!("edgecoder-{f}"),
                "--local",
                "--config",
            ])
            .arg(config)
            .output()
            .expect("wrangler d1 migrations apply");
        assert!(
            out.status.success(),
            "migrations of {f} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = wrangler(&persist);
    cmd.args([
        "dev",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--show-interactive-dev-session=false",
        "--log-level",
        "warn",
    ]);
    for c in &configs {
        cmd.arg("--config").arg(c);
    }
    let mut server = Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    if let Err(e) = server.wait_ready("/auth/health", Duration::from_secs(300)) {
        panic!("wrangler dev (split) did not start: {e}");
    }
    let server = server.owning(persist);
    Deployment {
        target: edgecoder_conformance::Target {
            functions_over_http: true,
            ..conformance_target(&server.base, &key)
        },
        keep: vec![Box::new(server), Box::new(op)],
    }
}

/// The deployable split configurations bind each function's Worker to its
/// own D1 database and KV namespace only, give the gateway none, and bind
/// each Worker to exactly the Workers it calls.
fn split_configs_grant_each_worker_only_its_own_stores() {
    let dir = workspace_root().join("runtimes/cloudflare/split");
    let read = |f: &str| -> toml::Table {
        toml::from_str(
            &std::fs::read_to_string(dir.join(format!("{f}.toml"))).expect("split config"),
        )
        .expect("toml")
    };
    let bindings = |t: &toml::Table| -> Vec<String> {
        let mut v: Vec<String> = t
            .get("services")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["binding"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    };
    let gateway = read("gateway");
    assert!(gateway.get("d1_databases").is_none() && gateway.get("kv_namespaces").is_none());
    assert_eq!(bindings(&gateway), ["AUTH", "LEDGER", "MESH"]);
    assert_eq!(
        gateway["vars"]["EDGECODER_FUNCTION"].as_str(),
        Some("gateway")
    );
    let mut databases = Vec::new();
    for (f, calls) in FUNCTIONS {
        let t = read(f);
        assert_eq!(t["vars"]["EDGECODER_FUNCTION"].as_str(), Some(f), "{f}");
        let db = t["d1_databases"].as_array().expect("d1");
        let kv = t["kv_namespaces"].as_array().expect("kv");
        assert_eq!(
            (db.len(), kv.len()),
            (1, 1),
            "{f}: one database, one namespace"
        );
        let name = db[0]["database_name"].as_str().expect("name").to_owned();
        assert_eq!(name, format!("edgecoder-{f}"), "{f}'s own database");
        databases.push(name);
        let mut want: Vec<String> = calls.iter().map(|c| (*c).to_owned()).collect();
        want.sort_unstable();
        assert_eq!(bindings(&t), want, "{f} calls only what it needs");
    }
    databases.dedup();
    assert_eq!(databases.len(), 3);
}

fn main() {
    edgecoder_conformance::main(
        deployment,
        vec![trial(
            "split_configs_grant_each_worker_only_its_own_stores",
            split_configs_grant_each_worker_only_its_own_stores,
        )],
    )
}
