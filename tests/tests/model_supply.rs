//! The GPU host's side of the model supply chain: the resolver that serves
//! only the release the coordinator assigned, after checking it against the
//! family's policy and every file's size and blake3 as it is read or
//! downloaded. Each attack a mirror or a publisher's slip could bring is
//! sent for real: files tampered, swapped, missing or added on disk; a
//! download truncated, oversized or redirected by an HTTPS origin (Python's
//! own TLS server, tests/interop/model_origin.py, with a CA made for the
//! run); envelopes signed by the wrong keys, too few keys, expired, or for
//! another model; sources outside the policy. Each is refused with its
//! code, leaves nothing loaded or cached, is counted in the host's metrics
//! and is what the next heartbeat reports.
//!
//! End to end, against the native runtime with two real `edgecoder-gpu-host`
//! processes: a signed release of the test model rolls out to both and
//! serves tasks; a second release whose graph does not match its manifest
//! is refused by the canary, the rollout halts and rolls back, the second
//! host never hears of it, and every transition is an entry `edgecoder
//! verify` proves included in the log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_conformance::Client;
use edgecoder_conformance::harness::{
    conformance_target, dev_settings, edgecoder_binary, env_name, job_key, signing_key_base64,
    start_native, tool, workspace_root,
};
use edgecoder_conformance::identity::Ctx;
use edgecoder_conformance::inference::{MODEL, kit};
use edgecoder_conformance::models::{
    manifest, point, policy_body, post_release, publish_release, publisher, put_policy, read,
};
use edgecoder_gpu_host::metrics::Metrics;
use edgecoder_gpu_host::models::{Manifest, Resolver};
use edgecoder_gpu_host::supply::{Fetcher, Supply};
use edgecoder_proto::model::{ManifestFile, ModelManifest, sign};
use edgecoder_proto::supply::{Assignment, Assignments, Failure, ModelState, SourcePolicy};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value as Json, json};

/// A scratch directory, removed when the test ends however it ends.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("edgecoder-supply-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    Scratch(d)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// An HTTPS origin serving `root` (see tests/interop/model_origin.py).
struct Origin {
    child: Child,
    port: u16,
    ca: PathBuf,
}

impl Origin {
    fn start(root: &Path) -> Origin {
        let ca = root.join("origin-ca.pem");
        let mut child = Command::new(tool("EC_PYTHON"))
            .arg(workspace_root().join("tests/interop/model_origin.py"))
            .arg("--root")
            .arg(root)
            .arg("--ca")
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python model origin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the origin's port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("model origin said {line:?}"));
        Origin { child, port, ca }
    }

    fn url(&self, mode: &str) -> String {
        format!("https://127.0.0.1:{}/{mode}", self.port)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release directory for `model` under `root`: a model configuration
/// (`manifest.json`) and a graph of arbitrary bytes (the resolver never
/// runs it). Its files as a manifest lists them.
fn release_dir(root: &Path, model: &str, graph: &[u8]) -> (PathBuf, Vec<ManifestFile>) {
    let (name, version) = model.split_once('@').expect("name@version");
    let dir = root.join(model);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("model.onnx"), graph).expect("write");
    let config = Manifest {
        name: name.into(),
        version: version.into(),
        format: "onnx".into(),
        file: "model.onnx".into(),
        size: graph.len() as u64,
        digest: format!("blake3:{}", blake3::hash(graph).to_hex()),
        tokenizer: "byte".into(),
        context_length: 64,
        vocab_size: 256,
        end_of_text: None,
        input: "input_ids".into(),
        output: "logits".into(),
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&config).expect("json"),
    )
    .expect("write");
    (
        dir.clone(),
        files_of(&dir, &["manifest.json", "model.onnx"]),
    )
}

fn files_of(dir: &Path, names: &[&str]) -> Vec<ManifestFile> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names
        .iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(n)).expect("read");
            ManifestFile {
                path: (*n).to_owned(),
                size: bytes.len() as u64,
                digest: format!("blake3:{}", blake3::hash(&bytes).to_hex()),
            }
        })
        .collect()
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 32]).expect("key")
}

fn policy(keys: &[&SigningKey], threshold: u32, origins: &[&str]) -> SourcePolicy {
    SourcePolicy {
        family: "tiny-byte".into(),
        keys: keys.iter().map(|k| point(k)).collect(),
        threshold,
        origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        max_bytes: 1 << 30,
        allowed: true,
        version: 1,
    }
}

fn assignment(
    model: &str,
    m: &ModelManifest,
    signers: &[&SigningKey],
    source: &str,
    policy: SourcePolicy,
) -> Assignment {
    Assignment {
        model: model.into(),
        release_digest: format!("blake3:{}", blake3::hash(&m.canonical()).to_hex()),
        envelope: sign(m, signers),
        source: source.into(),
        policy,
        rollout_id: None,
    }
}

fn file_manifest(model: &str, files: Vec<ManifestFile>, publisher: &SigningKey) -> ModelManifest {
    let (name, version) = model.split_once('@').expect("name@version");
    ModelManifest {
        name: name.into(),
        version: version.into(),
        format: "onnx".into(),
        files,
        created_at: now() - 60,
        expires_at: now() + 3600,
        publisher: edgecoder_proto::keys::key_id(publisher.verifying_key()),
    }
}

struct Host {
    supply: Supply,
    metrics: Arc<Metrics>,
    cache: PathBuf,
}

fn host(root: &Path, ca: Option<&Path>) -> Host {
    let cache = root.join("cache");
    let metrics = Arc::new(Metrics::default());
    let supply =
        Supply::new(&cache, Fetcher::new(ca).expect("fetcher"), metrics.clone()).expect("supply");
    Host {
        supply,
        metrics,
        cache,
    }
}

impl Host {
    fn take(&self, a: &Assignment) {
        self.supply.assign(&Assignments {
            policy_version: 1,
            assignments: vec![a.clone()],
        });
        self.supply.prepare();
    }

    /// Refused with `code`: reported as failed, nothing servable or
    /// loadable, counted, and no partial file left behind.
    fn refused(&self, a: &Assignment, code: &str) {
        self.take(a);
        let status = self.supply.status();
        assert_eq!(status.len(), 1, "{status:?}");
        assert_eq!(status[0].state, ModelState::Failed, "{status:?}");
        assert_eq!(
            status[0].failure.map(Failure::as_str),
            Some(code),
            "{status:?}"
        );
        assert!(self.supply.names().is_empty());
        assert!(!self.supply.serves(&a.model));
        assert!(self.supply.resolve(&a.model).is_err());
        let counted = format!(
            "edgecoder_model_verification_failures_total{{model=\"{}\",code=\"{code}\"}} 1",
            a.model
        );
        assert!(
            self.metrics.render().contains(&counted),
            "{counted} in:\n{}",
            self.metrics.render()
        );
        let partial: usize = std::fs::read_dir(self.cache.join("tmp"))
            .expect("tmp")
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).map_or(0, Iterator::count))
            .sum();
        assert_eq!(partial, 0, "a partial download was left in the cache");
    }

    fn cached(&self) -> usize {
        std::fs::read_dir(self.cache.join("blobs"))
            .expect("blobs")
            .count()
    }
}

const M: &str = "tiny-byte@1";

/// A signed release of `M` in `root`, served from `file://root/M`.
fn local_release(root: &Path) -> (PathBuf, ModelManifest, SigningKey, String) {
    let (dir, files) = release_dir(root, M, &[7u8; 4096]);
    let a = key(1);
    let m = file_manifest(M, files, &a);
    let source = format!("file://{}", dir.display());
    (dir, m, a, source)
}

fn local_policy(a: &SigningKey, root: &Path) -> SourcePolicy {
    policy(&[a], 1, &[&format!("file://{}", root.display())])
}

#[test]
fn a_good_local_release_is_verified_cached_by_digest_and_rehashed_on_load() {
    let root = scratch("good");
    let (_, m, a, source) = local_release(&root);
    let h = host(&root, None);
    h.take(&assignment(M, &m, &[&a], &source, local_policy(&a, &root)));
    assert_eq!(h.supply.names(), vec![M.to_owned()]);
    let v = h.supply.resolve(M).expect("resolves");
    assert_eq!(v.bytes, vec![7u8; 4096]);
    assert_eq!(h.cached(), 2);
    // The cached graph changes on disk: the load re-hashes it and refuses.
    let graph = &m
        .files
        .iter()
        .find(|f| f.path == "model.onnx")
        .expect("graph")
        .digest;
    let blob = h
        .cache
        .join("blobs")
        .join(graph.trim_start_matches("blake3:"));
    let mut bytes = std::fs::read(&blob).expect("blob");
    bytes[0] ^= 1;
    std::fs::write(&blob, &bytes).expect("write");
    assert!(h.supply.resolve(M).is_err());
    assert!(!blob.exists(), "a bad cached file is dropped");
    // A damaged cache says nothing against the release itself: it is
    // fetched and verified again.
    assert_eq!(h.supply.status()[0].state, ModelState::Pending);
    assert!(h.supply.names().is_empty());
    h.supply.prepare();
    assert_eq!(
        h.supply.resolve(M).expect("fetched again").bytes,
        vec![7u8; 4096]
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_tampered_file_one_byte_is_refused_with_digest_mismatch() {
    let root = scratch("tampered");
    let (dir, m, a, source) = local_release(&root);
    let mut bytes = std::fs::read(dir.join("model.onnx")).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(dir.join("model.onnx"), bytes).expect("write");
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&a], &source, local_policy(&a, &root)),
        "digest_mismatch",
    );
    // Only the untouched file made it into the cache.
    assert_eq!(h.cached(), 1);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_swapped_file_is_refused_with_digest_mismatch() {
    let root = scratch("swapped");
    let (dir, m, a, source) = local_release(&root);
    // Another release's graph of the same size in its place.
    std::fs::write(dir.join("model.onnx"), [9u8; 4096]).expect("write");
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&a], &source, local_policy(&a, &root)),
        "digest_mismatch",
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_missing_file_is_refused_with_digest_mismatch() {
    let root = scratch("missing");
    let (dir, m, a, source) = local_release(&root);
    std::fs::remove_file(dir.join("model.onnx")).expect("remove");
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&a], &source, local_policy(&a, &root)),
        "digest_mismatch",
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_extra_file_is_never_fetched_and_an_unsigned_graph_is_refused() {
    let root = scratch("extra");
    let (dir, m, a, source) = local_release(&root);
    std::fs::write(dir.join("extra.onnx"), [1u8; 64]).expect("write");
    let h = host(&root, None);
    h.take(&assignment(M, &m, &[&a], &source, local_policy(&a, &root)));
    assert_eq!(h.supply.names(), vec![M.to_owned()]);
    assert_eq!(h.cached(), 2, "only the signed files are fetched");
    // A configuration (signed) that points the host at a graph the
    // manifest does not list.
    let root2 = scratch("extra-graph");
    let (dir2, _) = release_dir(&root2, M, &[7u8; 4096]);
    std::fs::write(dir2.join("extra.onnx"), [1u8; 64]).expect("write");
    let mut config: Manifest =
        serde_json::from_slice(&std::fs::read(dir2.join("manifest.json")).expect("read"))
            .expect("config");
    config.file = "extra.onnx".into();
    config.size = 64;
    config.digest = format!("blake3:{}", blake3::hash(&[1u8; 64]).to_hex());
    std::fs::write(
        dir2.join("manifest.json"),
        serde_json::to_vec(&config).expect("json"),
    )
    .expect("write");
    let m2 = file_manifest(M, files_of(&dir2, &["manifest.json", "model.onnx"]), &a);
    let h2 = host(&root2, None);
    h2.refused(
        &assignment(
            M,
            &m2,
            &[&a],
            &format!("file://{}", dir2.display()),
            local_policy(&a, &root2),
        ),
        "model_not_approved",
    );
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&root2);
}

#[test]
fn a_manifest_signed_by_an_unapproved_key_is_refused() {
    let root = scratch("stranger");
    let (_, m, a, source) = local_release(&root);
    let stranger = key(9);
    let m = ModelManifest {
        publisher: edgecoder_proto::keys::key_id(stranger.verifying_key()),
        ..m
    };
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&stranger], &source, local_policy(&a, &root)),
        "signature_invalid",
    );
    assert_eq!(
        h.cached(),
        0,
        "nothing is fetched before the signatures hold"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_manifest_below_the_threshold_is_refused() {
    let root = scratch("threshold");
    let (_, m, a, source) = local_release(&root);
    let b = key(2);
    let two_of_two = policy(&[&a, &b], 2, &[&format!("file://{}", root.display())]);
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&a], &source, two_of_two.clone()),
        "signature_invalid",
    );
    // Both signatures: accepted.
    let h = host(&root.join("threshold-ok"), None);
    h.take(&assignment(M, &m, &[&a, &b], &source, two_of_two));
    assert_eq!(h.supply.names(), vec![M.to_owned()]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_expired_manifest_is_refused() {
    let root = scratch("expired");
    let (_, m, a, source) = local_release(&root);
    let m = ModelManifest {
        created_at: now() - 7200,
        expires_at: now() - 60,
        ..m
    };
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&a], &source, local_policy(&a, &root)),
        "manifest_expired",
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_valid_manifest_of_another_model_is_refused() {
    let root = scratch("renamed");
    let (_, m, a, source) = local_release(&root);
    // Validly signed, but the release of version 2, handed out as version 1.
    let m = ModelManifest {
        version: "2".into(),
        ..m
    };
    let h = host(&root, None);
    h.refused(
        &assignment(M, &m, &[&a], &source, local_policy(&a, &root)),
        "model_not_approved",
    );
    // And a family the policy does not allow.
    let h = host(&root.join("disallowed"), None);
    let mut p = local_policy(&a, &root);
    p.allowed = false;
    let (_, m, _, _) = local_release(&root);
    h.refused(&assignment(M, &m, &[&a], &source, p), "model_not_approved");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_source_outside_the_allowed_origins_is_refused() {
    let root = scratch("origin");
    let (_, m, a, source) = local_release(&root);
    let h = host(&root, None);
    let elsewhere = policy(&[&a], 1, &["file:///srv/other-mirror"]);
    h.refused(
        &assignment(M, &m, &[&a], &source, elsewhere),
        "source_not_allowed",
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_http_origin_is_refused() {
    let root = scratch("http");
    let (_, m, a, _) = local_release(&root);
    let h = host(&root, None);
    let plain = policy(&[&a], 1, &["http://127.0.0.1:9"]);
    h.refused(
        &assignment(M, &m, &[&a], "http://127.0.0.1:9/tiny-byte@1", plain),
        "source_not_allowed",
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn https_downloads_are_verified_and_a_truncated_oversized_or_redirected_one_is_discarded() {
    let root = scratch("https");
    let (_, m, a, _) = local_release(&root);
    let origin = Origin::start(&root);
    let https = |mode: &str| policy(&[&a], 1, &[&origin.url(mode)]);
    let case = |mode: &str, code: &str| {
        let h = host(&root.join(format!("https-{mode}")), Some(&origin.ca));
        h.refused(
            &assignment(
                M,
                &m,
                &[&a],
                &format!("{}/{M}", origin.url(mode)),
                https(mode),
            ),
            code,
        );
        assert_eq!(h.cached(), 0, "{mode}: nothing cached");
    };
    // A body cut short is a failed fetch (retried, never kept).
    case("truncate", "fetch_failed");
    case("oversize", "digest_mismatch");
    case("missing", "digest_mismatch");
    // A redirect (here to plain http) is not followed.
    case("redirect", "fetch_failed");
    // The good download, into a cache a second host then reuses: the
    // origin going away does not matter, the cached files are re-hashed.
    let shared = root.join("https-ok");
    let h = host(&shared, Some(&origin.ca));
    let good = assignment(
        M,
        &m,
        &[&a],
        &format!("{}/{M}", origin.url("ok")),
        https("ok"),
    );
    h.take(&good);
    assert_eq!(
        h.supply.names(),
        vec![M.to_owned()],
        "{:?}",
        h.supply.status()
    );
    assert_eq!(h.supply.resolve(M).expect("resolve").bytes, vec![7u8; 4096]);
    drop(origin);
    let again = host(&shared, None);
    again.take(&good);
    assert_eq!(again.supply.names(), vec![M.to_owned()]);
    // A host that does not trust the origin's CA cannot fetch from it.
    let origin = Origin::start(&root);
    let h = host(&root.join("https-untrusted"), None);
    h.refused(
        &assignment(
            M,
            &m,
            &[&a],
            &format!("{}/{M}", origin.url("ok")),
            policy(&[&a], 1, &[&origin.url("ok")]),
        ),
        "fetch_failed",
    );
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------- end to end

fn gpu_host(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(&kit().gpu_host)
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

fn ok(r: Result<edgecoder_conformance::Reply, String>, status: u16, what: &str) -> Json {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json().unwrap_or(Json::Null)
}

/// Copies the kit's model directory to `origin/<model>`, renamed.
fn copy_model(origin: &Path, model: &str) -> PathBuf {
    let (name, version) = model.split_once('@').expect("name@version");
    let from = kit().models.join(MODEL);
    let to = origin.join(model);
    std::fs::create_dir_all(&to).expect("dir");
    std::fs::copy(from.join("model.onnx"), to.join("model.onnx")).expect("copy");
    let mut config: Json =
        serde_json::from_slice(&std::fs::read(from.join("manifest.json")).expect("read"))
            .expect("config");
    config["name"] = json!(name);
    config["version"] = json!(version);
    std::fs::write(
        to.join("manifest.json"),
        serde_json::to_vec(&config).expect("json"),
    )
    .expect("write");
    to
}

#[test]
fn a_release_rolls_out_to_two_gpu_hosts_and_a_bad_one_stops_at_the_canary() {
    let kit = kit();
    let key = signing_key_base64();
    let mut env: Vec<(String, String)> = dev_settings(&key)
        .into_iter()
        .map(|(k, v)| (env_name(k), v))
        .collect();
    env.push((env_name("mesh_lease_grace_ms"), "30000".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = scratch("e2e");
    let server = start_native(&edgecoder_binary(), &data.join("server"), &env);
    let target = conformance_target(&server.base, &key);
    let client = Client::new(&server.base);
    let x = Ctx::new(&client, &target);
    let (_, admin) = x.admin().expect("admin");

    // The publisher's family policy: one key, a local origin.
    let family = "e2e-byte";
    let origin = data.join("origin");
    let publisher_key = publisher(family);
    let origin_url = format!("file://{}", origin.display());
    ok(
        put_policy(
            &x,
            &admin,
            family,
            &policy_body(&[&publisher_key], 1, &[&origin_url]),
        ),
        200,
        "policy",
    );
    let v1 = format!("{family}@1");
    let dir1 = copy_model(&origin, &v1);
    let m1 = manifest(
        &v1,
        files_of(&dir1, &["manifest.json", "model.onnx"]),
        &publisher_key,
    );
    let d1 = publish_release(
        &x,
        &admin,
        &m1,
        &[&publisher_key],
        &format!("{origin_url}/{v1}"),
    )
    .expect("publish v1");

    // Two GPU hosts offer the family; an operator approves them.
    let owner = x.account("supply-owner", true).expect("owner");
    let hosts: Vec<(String, PathBuf)> = (0..2)
        .map(|i| {
            let id = format!("gpu-supply-{i}-{}", std::process::id());
            let dir = data.join(&id);
            let v = ok(
                x.send(
                    "POST",
                    "/auth/nodes/enroll",
                    Some(&owner.access),
                    Some(&json!({"node_id": id, "kind": "gpu-host"})),
                    &[],
                ),
                201,
                "enroll",
            );
            let token = v["enrollment_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let (c, out) = gpu_host(&dir, &["init", "--node-id", &id]);
            assert_eq!(c, 0, "init: {out}");
            let (c, out) = gpu_host(
                &dir,
                &[
                    "register",
                    "--coordinator",
                    &server.base,
                    "--token",
                    &token,
                    "--family",
                    family,
                ],
            );
            assert_eq!(c, 0, "register: {out}");
            ok(
                x.send(
                    "POST",
                    &format!("/mesh/nodes/{id}/approve"),
                    Some(&admin),
                    Some(&json!({"reason": "e2e"})),
                    &[],
                ),
                200,
                "approve",
            );
            (id, dir)
        })
        .collect();
    let engine = [
        "--guest".to_owned(),
        kit.guest.to_string_lossy().into_owned(),
        "--onnxruntime".to_owned(),
        kit.onnxruntime.to_string_lossy().into_owned(),
    ];
    let round = |dir: &Path| {
        let mut args = vec!["run", "--once"];
        args.extend(engine.iter().map(String::as_str));
        let (c, out) = gpu_host(dir, &args);
        assert_eq!(c, 0, "round: {out}");
        out
    };
    for (_, dir) in &hosts {
        let out = round(dir);
        assert!(
            out.contains(&format!("model {v1}: release {d1} verified")),
            "{out}"
        );
    }

    // Tasks run on v1, on either host.
    let user = x.account("supply-user", true).expect("user");
    edgecoder_conformance::economy::fund(&x, &user.id, 100_000).expect("credits");
    for (_, dir) in &hosts {
        let v = ok(
            x.send("POST", "/mesh/inference", Some(&user.access), Some(&json!({"model": v1, "input": {"text": "fn main() {"}, "max_new_tokens": 8, "seed": 3})), &[]),
            201,
            "submit",
        );
        let id = v["task_id"].as_str().unwrap_or_default().to_owned();
        let out = round(dir);
        assert!(out.contains("reported (ok)"), "{out}");
        let got = ok(
            x.send(
                "GET",
                &format!("/mesh/inference/{id}"),
                Some(&user.access),
                None,
                &[],
            ),
            200,
            "read",
        );
        assert_eq!(got["status"], "completed", "{got}");
        assert_eq!(
            got["inference"]["model_manifest_digest"],
            d1.as_str(),
            "{got}"
        );
    }

    // v2: signed over the right files, then its graph is changed at the
    // origin (a compromised mirror).
    let v2 = format!("{family}@2");
    let dir2 = copy_model(&origin, &v2);
    // Its own graph (the hosts hold v1's bytes by digest already).
    let mut graph = std::fs::read(dir2.join("model.onnx")).expect("read");
    graph.push(0);
    std::fs::write(dir2.join("model.onnx"), &graph).expect("write");
    let m2 = manifest(
        &v2,
        files_of(&dir2, &["manifest.json", "model.onnx"]),
        &publisher_key,
    );
    let rel = ok(
        post_release(
            &x,
            &admin,
            &m2,
            &[&publisher_key],
            &format!("{origin_url}/{v2}"),
        ),
        201,
        "v2",
    );
    let d2 = rel["digest"].as_str().unwrap_or_default().to_owned();
    let mut graph = std::fs::read(dir2.join("model.onnx")).expect("read");
    let last = graph.len() - 1;
    graph[last] ^= 0xff;
    std::fs::write(dir2.join("model.onnx"), graph).expect("write");
    let started = ok(
        x.send(
            "POST",
            "/mesh/models/rollouts",
            Some(&admin),
            Some(&json!({"model": v2, "stages": [{"name": "canary", "hosts": 1}, {"name": "all", "percent": 100}],
                          "gates": {"min_stage_secs": 0, "min_verified_hosts": 1}, "reason": "e2e"})),
            &[],
        ),
        201,
        "start v2",
    );
    let rollout = started["id"].as_str().unwrap_or_default().to_owned();
    let canary = started["canary"][0].as_str().unwrap_or_default().to_owned();
    let (canary_dir, other_dir) = if hosts[0].0 == canary {
        (&hosts[0].1, &hosts[1].1)
    } else {
        (&hosts[1].1, &hosts[0].1)
    };
    // The canary fetches v2, finds the graph does not match, refuses it and
    // says so; the gate fails; the rollout halts and rolls back.
    let out = round(canary_dir);
    assert!(
        out.contains(&format!(
            "model {v2}: release {d2} refused (digest_mismatch)"
        )),
        "{out}"
    );
    let state = read(&x, &admin, &rollout).expect("rollout");
    assert_eq!(state["status"], "rolled_back", "{state}");
    let actions: Vec<&str> = state["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["start", "halt", "rollback"], "{state}");
    // The second host never hears of v2 and keeps serving v1.
    let out = round(other_dir);
    assert!(!out.contains(&v2), "{out}");
    let v = ok(
        x.send(
            "POST",
            "/mesh/inference",
            Some(&user.access),
            Some(&json!({"model": v1, "input": {"text": "x"}, "max_new_tokens": 4})),
            &[],
        ),
        201,
        "submit after rollback",
    );
    let out = round(other_dir);
    assert!(out.contains("reported (ok)"), "{out}");
    let id = v["task_id"].as_str().unwrap_or_default().to_owned();
    let got = ok(
        x.send(
            "GET",
            &format!("/mesh/inference/{id}"),
            Some(&user.access),
            None,
            &[],
        ),
        200,
        "read",
    );
    assert_eq!(got["inference"]["model"], v1.as_str());
    // v2 is not accepted for tasks at all.
    let r = x
        .send(
            "POST",
            "/mesh/inference",
            Some(&user.access),
            Some(&json!({"model": v2, "input": {"text": "x"}, "max_new_tokens": 4})),
            &[],
        )
        .expect("submit v2");
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));

    // Every transition is in the log, and `edgecoder verify` proves each
    // entry included under a signed checkpoint.
    ok(
        client.send_with(
            "POST",
            "/ledger/checkpoint",
            &[("authorization", &format!("Bearer {admin}"))],
            &[],
        ),
        200,
        "checkpoint",
    );
    let signer =
        edgecoder_kernel::SigningKey::from_secret(&job_key(&key, "checkpoint")).expect("key");
    let spki = STANDARD.encode(
        signer
            .verifying_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes(),
    );
    // The log's origin: the issuer's host and `/ledger` (dev settings).
    let log_origin = "localhost:8080/ledger";
    for e in state["history"].as_array().expect("history") {
        let index = e["ledger_index"]
            .as_u64()
            .expect("ledger index")
            .to_string();
        let out = Command::new(edgecoder_binary())
            .args([
                "verify",
                "--url",
                &server.base,
                "--key",
                &spki,
                "--origin",
                log_origin,
                "--entry",
                &index,
                "--state",
            ])
            .arg(data.join(format!("verify-{index}.json")))
            .output()
            .expect("edgecoder verify");
        assert!(
            out.status.success(),
            "verify entry {index}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(server);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&data);
}

/// `infer --release`: an operator checks a signed release on their own
/// machine through the very resolver the mesh uses.
#[test]
fn infer_verifies_a_signed_release_with_the_mesh_resolver() {
    let kit = kit();
    let root = scratch("infer-release");
    let dir = copy_model(&root, "local-byte@1");
    let private = root.join("publisher.pem");
    let run = |args: &[&str]| {
        let out = Command::new(edgecoder_binary())
            .args(args)
            .output()
            .expect("edgecoder");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    run(&["keygen", "--out", &private.to_string_lossy()]);
    let spki = run(&["keygen", "--public", &private.to_string_lossy()]);
    run(&[
        "model",
        "sign",
        "--dir",
        &dir.to_string_lossy(),
        "--name",
        "local-byte@1",
        "--key",
        &private.to_string_lossy(),
    ]);
    let infer = |key: &str| {
        Command::new(&kit.gpu_host)
            .args(["infer", "--guest"])
            .arg(&kit.guest)
            .arg("--onnxruntime")
            .arg(&kit.onnxruntime)
            .arg("--release")
            .arg(&dir)
            .args([
                "--publisher-key",
                key,
                "--model",
                "local-byte@1",
                "--prompt",
                "fn",
                "--max-new-tokens",
                "4",
            ])
            .output()
            .expect("edgecoder-gpu-host infer")
    };
    let out = infer(&spki);
    let line: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    assert!(
        out.status.success() && line["ok"] == true,
        "{line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        line["release_verify_ns"].as_u64().is_some() && line["graph_compile_ns"].as_u64().is_some(),
        "{line}"
    );
    // Another publisher's key: refused before anything loads.
    let stranger = root.join("stranger.pem");
    run(&["keygen", "--out", &stranger.to_string_lossy()]);
    let other = run(&["keygen", "--public", &stranger.to_string_lossy()]);
    let out = infer(&other);
    let line: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    assert!(
        !out.status.success() && line["code"] == "signature_invalid",
        "{line}"
    );
    // A graph changed after signing.
    let mut graph = std::fs::read(dir.join("model.onnx")).expect("read");
    graph[0] ^= 1;
    std::fs::write(dir.join("model.onnx"), graph).expect("write");
    let out = infer(&spki);
    let line: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    assert!(
        !out.status.success() && line["code"] == "digest_mismatch",
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A release verified while valid stops being served the moment its
/// manifest expires (short-lived manifests are how a publisher retires one).
#[test]
fn a_verified_release_stops_being_served_when_it_expires() {
    let root = scratch("expires");
    let (_, m, a, source) = local_release(&root);
    let m = ModelManifest {
        expires_at: now() + 2,
        ..m
    };
    let h = host(&root, None);
    h.take(&assignment(M, &m, &[&a], &source, local_policy(&a, &root)));
    assert_eq!(h.supply.names(), vec![M.to_owned()]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(h.supply.names().is_empty());
    assert!(!h.supply.serves(M));
    assert!(h.supply.resolve(M).is_err());
    assert_eq!(h.supply.status()[0].failure, Some(Failure::ManifestExpired));
    let _ = std::fs::remove_dir_all(&root);
}

/// A long-running host verifies on a thread of its own: the heartbeat that
/// brings an assignment returns at once, and the release is served once
/// verified.
#[test]
fn releases_are_verified_in_the_background_without_holding_the_heartbeat() {
    let root = scratch("background");
    let (_, m, a, source) = local_release(&root);
    let cache = root.join("cache");
    let metrics = Arc::new(Metrics::default());
    let supply = Arc::new(
        Supply::new(&cache, Fetcher::new(None).expect("fetcher"), metrics).expect("supply"),
    );
    let preparer = supply.spawn_preparer().expect("thread");
    supply.assign(&Assignments {
        policy_version: 1,
        assignments: vec![assignment(M, &m, &[&a], &source, local_policy(&a, &root))],
    });
    preparer.kick();
    let mut served = false;
    for _ in 0..200 {
        if supply.names() == vec![M.to_owned()] {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(served, "{:?}", supply.status());
    let _ = std::fs::remove_dir_all(&root);
}

/// A policy change reaches a verified release at once: a harmless one (an
/// origin added) keeps it serving without a new fetch, one that revokes
/// its publisher's key stops it on that very heartbeat.
#[test]
fn a_policy_change_is_applied_to_a_verified_release_at_once() {
    let root = scratch("policy-change");
    let (_, m, a, source) = local_release(&root);
    let h = host(&root, None);
    let first = assignment(M, &m, &[&a], &source, local_policy(&a, &root));
    h.take(&first);
    assert_eq!(h.supply.names(), vec![M.to_owned()]);
    let mut wider = first.clone();
    wider.policy.version = 2;
    wider
        .policy
        .origins
        .push("https://mirror.example.com".into());
    h.supply.assign(&Assignments {
        policy_version: 2,
        assignments: vec![wider.clone()],
    });
    assert_eq!(
        h.supply.names(),
        vec![M.to_owned()],
        "still served, no new fetch needed"
    );
    let mut revoked = wider;
    revoked.policy.version = 3;
    revoked.policy.keys = vec![point(&key(5))];
    h.supply.assign(&Assignments {
        policy_version: 3,
        assignments: vec![revoked],
    });
    assert!(h.supply.names().is_empty());
    assert_eq!(
        h.supply.status()[0].failure,
        Some(Failure::SignatureInvalid)
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// The cache keeps releases no longer assigned only up to its budget,
/// oldest first out; what is assigned is never removed.
#[test]
fn the_cache_drops_releases_no_longer_assigned_beyond_its_budget() {
    let root = scratch("collect");
    let (_, m1, a, source1) = local_release(&root);
    let (dir2, files2) = release_dir(&root.join("second"), "tiny-byte@2", &[9u8; 8192]);
    let m2 = file_manifest("tiny-byte@2", files2, &a);
    let source2 = format!("file://{}", dir2.display());
    let h = host(&root, None);
    h.take(&assignment(
        M,
        &m1,
        &[&a],
        &source1,
        local_policy(&a, &root),
    ));
    assert_eq!(h.cached(), 2);
    // Moved to v2 with room to keep v1: both stay.
    let v2 = assignment("tiny-byte@2", &m2, &[&a], &source2, local_policy(&a, &root));
    h.supply.keep_unassigned(1 << 20);
    h.take(&v2);
    assert_eq!(h.supply.names(), vec!["tiny-byte@2".to_owned()]);
    assert_eq!(h.cached(), 4);
    // No room: v1's files go, v2's stay and still serve.
    h.supply.keep_unassigned(0);
    h.supply.prepare();
    assert_eq!(h.cached(), 2);
    assert_eq!(
        h.supply.resolve("tiny-byte@2").expect("v2").bytes,
        vec![9u8; 8192]
    );
}
