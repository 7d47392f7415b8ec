//! Model releases (`edgecoder model sign` / `verify`): a model directory's
//! manifest signed as a DSSE envelope with P-256, checked for k of n trusted
//! signatures, expiry, the model's name and every file's size and blake3
//! digest. Each refusal is sent as an attacker would make it, and the
//! envelopes interoperate with securesystemslib (Python), an implementation
//! we did not write, in both directions.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgecoder_conformance::harness::{edgecoder_binary, tool, workspace_root};
use p256::pkcs8::DecodePublicKey as _;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgecoder-release-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(edgecoder_binary())
        .args(args)
        .output()
        .expect("edgecoder");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A private key file and its public key file.
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let (ok, out) = run(&["keygen", "--out", &p(&private)]);
    assert!(ok, "keygen: {out}");
    let (ok, public) = run(&["keygen", "--public", &p(&private)]);
    assert!(ok, "keygen --public: {public}");
    let public_path = dir.join(format!("{name}.pub"));
    std::fs::write(&public_path, public.trim()).expect("write");
    (private, public_path)
}

/// A model directory: the graph, a tokenizer file and a config.
fn model_dir(root: &Path) -> PathBuf {
    let d = root.join("tiny-byte@1");
    std::fs::create_dir_all(d.join("tokenizer")).expect("dir");
    std::fs::write(d.join("model.onnx"), vec![7u8; 4096]).expect("write");
    std::fs::write(d.join("tokenizer/vocab.json"), br#"{"kind":"byte"}"#).expect("write");
    std::fs::write(d.join("config.json"), br#"{"context_length":64}"#).expect("write");
    d
}

fn sign(dir: &Path, keys: &[&Path], extra: &[&str]) {
    let mut args = vec![
        "model".to_owned(),
        "sign".into(),
        "--dir".into(),
        p(dir),
        "--name".into(),
        "tiny-byte@1".into(),
    ];
    for k in keys {
        args.push("--key".into());
        args.push(p(k));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = run(&args);
    assert!(ok, "sign: {out}");
}

fn verify(dir: &Path, keys: &[&Path], extra: &[&str]) -> (bool, String) {
    let mut args = vec!["model".to_owned(), "verify".into(), "--dir".into(), p(dir)];
    for k in keys {
        args.push("--key".into());
        args.push(p(k));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

fn refused(result: (bool, String), code: &str) {
    let (ok, out) = result;
    assert!(
        !ok && out.contains(&format!("refused: {code}")),
        "want {code}: {out}"
    );
}

#[test]
fn a_signed_release_verifies_and_names_its_signers() {
    let root = scratch("ok");
    let (a, a_pub) = keypair(&root, "a");
    let (b, b_pub) = keypair(&root, "b");
    let dir = model_dir(&root);
    sign(&dir, &[&a, &b], &[]);
    let (ok, out) = verify(
        &dir,
        &[&a_pub, &b_pub],
        &["--threshold", "2", "--name", "tiny-byte@1"],
    );
    assert!(ok && out.contains("verified tiny-byte@1 (3 files"), "{out}");
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("release.dsse.json")).expect("read"))
            .expect("json");
    assert_eq!(
        envelope["payloadType"],
        edgecoder_proto::model::PAYLOAD_TYPE
    );
    assert_eq!(envelope["signatures"].as_array().map(Vec::len), Some(2));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn tampered_swapped_extra_and_missing_files_are_refused() {
    let root = scratch("files");
    let (a, a_pub) = keypair(&root, "a");
    let dir = model_dir(&root);
    sign(&dir, &[&a], &[]);
    let graph = dir.join("model.onnx");
    let original = std::fs::read(&graph).expect("read");
    // One byte changed, same size.
    let mut tampered = original.clone();
    tampered[100] ^= 1;
    std::fs::write(&graph, &tampered).expect("write");
    refused(verify(&dir, &[&a_pub], &[]), "digest_mismatch");
    // Truncated, and grown past the listed size.
    std::fs::write(&graph, &original[..original.len() - 1]).expect("write");
    refused(verify(&dir, &[&a_pub], &[]), "digest_mismatch");
    let mut grown = original.clone();
    grown.extend_from_slice(&[0; 1024]);
    std::fs::write(&graph, &grown).expect("write");
    refused(verify(&dir, &[&a_pub], &[]), "digest_mismatch");
    // Two files swapped.
    std::fs::write(
        &graph,
        std::fs::read(dir.join("config.json")).expect("read"),
    )
    .expect("write");
    std::fs::write(dir.join("config.json"), &original).expect("write");
    refused(verify(&dir, &[&a_pub], &[]), "digest_mismatch");
    std::fs::write(dir.join("config.json"), br#"{"context_length":64}"#).expect("write");
    std::fs::write(&graph, &original).expect("write");
    assert!(verify(&dir, &[&a_pub], &[]).0, "restored");
    // A file the manifest does not list, then one it lists removed.
    std::fs::write(dir.join("tokenizer/merges.txt"), b"x").expect("write");
    refused(verify(&dir, &[&a_pub], &[]), "file_unexpected");
    std::fs::remove_file(dir.join("tokenizer/merges.txt")).expect("rm");
    std::fs::remove_file(dir.join("tokenizer/vocab.json")).expect("rm");
    refused(verify(&dir, &[&a_pub], &[]), "file_missing");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn unapproved_keys_thresholds_expiry_and_names_are_refused() {
    let root = scratch("policy");
    let (a, a_pub) = keypair(&root, "a");
    let (_, b_pub) = keypair(&root, "b");
    let (c, _) = keypair(&root, "c");
    let dir = model_dir(&root);
    // Signed by a key the verifier does not trust.
    sign(&dir, &[&c], &[]);
    refused(verify(&dir, &[&a_pub, &b_pub], &[]), "signature_invalid");
    // One trusted signature where two are required.
    sign(&dir, &[&a], &[]);
    refused(
        verify(&dir, &[&a_pub, &b_pub], &["--threshold", "2"]),
        "signature_invalid",
    );
    // A valid release of another model.
    refused(
        verify(&dir, &[&a_pub], &["--name", "tiny-byte@2"]),
        "model_not_approved",
    );
    // The payload edited after signing (a larger file size claimed).
    let path = dir.join("release.dsse.json");
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut manifest: serde_json::Value = serde_json::from_slice(
        &b64.decode(env["payload"].as_str().unwrap_or(""))
            .expect("b64"),
    )
    .expect("json");
    manifest["expires_at"] =
        serde_json::json!(manifest["expires_at"].as_i64().unwrap_or(0) + 86_400 * 365);
    env["payload"] = serde_json::json!(b64.encode(manifest.to_string()));
    std::fs::write(&path, env.to_string()).expect("write");
    refused(verify(&dir, &[&a_pub], &[]), "signature_invalid");
    // Expired: the release's own time says so (signed with a past window is
    // impossible from the CLI, so the proto's clock-driven check is used).
    let key = p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("key");
    let mut m = edgecoder_proto::model::ModelManifest {
        name: "tiny-byte".into(),
        version: "1".into(),
        format: "onnx".into(),
        files: vec![edgecoder_proto::model::ManifestFile {
            path: "model.onnx".into(),
            size: 1,
            digest: format!("blake3:{}", blake3::hash(b"x").to_hex()),
        }],
        created_at: 1,
        expires_at: 2,
        publisher: edgecoder_proto::keys::key_id(key.verifying_key()),
    };
    m.files.sort_by(|x, y| x.path.cmp(&y.path));
    let expired = serde_json::to_vec(&edgecoder_proto::model::sign(&m, &[&key])).expect("json");
    let policy = edgecoder_proto::model::SigningPolicy {
        keys: vec![*key.verifying_key()],
        threshold: 1,
    };
    assert_eq!(
        edgecoder_proto::model::verify(&expired, &policy, 1_000, None)
            .err()
            .map(|e| e.code()),
        Some("manifest_expired")
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn python(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("EC_PYTHON"))
        .arg(workspace_root().join("tests/interop/dsse.py"))
        .args(args)
        .output()
        .expect("python");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn dsse_envelopes_interoperate_with_securesystemslib() {
    let root = scratch("interop");
    let (a, a_pub) = keypair(&root, "a");
    let dir = model_dir(&root);
    sign(&dir, &[&a], &[]);
    // Ours, checked by securesystemslib.
    let pem = |path: &Path| {
        let text = std::fs::read_to_string(path).expect("read");
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
            .expect("spki");
        p256::ecdsa::VerifyingKey::from_public_key_der(&der).expect("key")
    };
    let a_key = pem(&a_pub);
    let a_pem_path = root.join("a.pub.pem");
    {
        use p256::pkcs8::EncodePublicKey as _;
        let text = a_key
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem");
        std::fs::write(&a_pem_path, text).expect("write");
    }
    let kid = edgecoder_proto::keys::key_id(&a_key);
    let envelope = dir.join("release.dsse.json");
    let (ok, out) = python(&["verify", &p(&envelope), &p(&a_pem_path), &kid, "1"]);
    assert!(
        ok && out.contains(edgecoder_proto::model::PAYLOAD_TYPE),
        "securesystemslib: {out}"
    );
    // A tampered envelope fails there too.
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&envelope).expect("read")).expect("json");
    env["payloadType"] = serde_json::json!("application/json");
    let bad = root.join("bad.json");
    std::fs::write(&bad, env.to_string()).expect("write");
    assert!(!python(&["verify", &p(&bad), &p(&a_pem_path), &kid, "1"]).0);

    // Theirs (a key and a signature made by securesystemslib over our
    // manifest), checked by us.
    let (py_priv, py_pub) = (root.join("py.pem"), root.join("py.pub.pem"));
    let (ok, out) = python(&["keygen", &p(&py_priv), &p(&py_pub)]);
    assert!(ok, "{out}");
    let py_key = p256::ecdsa::VerifyingKey::from_public_key_pem(
        &std::fs::read_to_string(&py_pub).expect("read"),
    )
    .expect("key");
    let py_kid = edgecoder_proto::keys::key_id(&py_key);
    // The manifest names its publisher: sign ours again under the Python key's id.
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&envelope).expect("read")).expect("json");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut manifest: edgecoder_proto::model::ModelManifest = serde_json::from_slice(
        &base64::Engine::decode(&b64, env["payload"].as_str().unwrap_or("")).expect("b64"),
    )
    .expect("manifest");
    manifest.publisher = py_kid.clone();
    let payload = root.join("payload.json");
    std::fs::write(&payload, manifest.canonical()).expect("write");
    let theirs = root.join("theirs.dsse.json");
    let (ok, out) = python(&[
        "sign",
        &p(&py_priv),
        &py_kid,
        edgecoder_proto::model::PAYLOAD_TYPE,
        &p(&payload),
        &p(&theirs),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = verify(
        &dir,
        &[&py_pub],
        &["--envelope", &p(&theirs), "--name", "tiny-byte@1"],
    );
    assert!(
        ok && out.contains("verified tiny-byte@1"),
        "ours on theirs: {out}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
