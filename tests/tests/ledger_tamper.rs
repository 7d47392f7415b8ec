//! `edgecoder verify` against tampering: the native runtime's SQLite file is
//! edited as an attacker with write access would, and the offline verifier
//! must fail, naming what it found.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_conformance::Client;
use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, edgecoder_binary, env_name, free_port, job_key,
    signing_key_base64,
};
use p256::pkcs8::EncodePublicKey;

/// The origin of the fixture's log (its issuer's host and `/ledger`).
const ORIGIN: &str = "localhost:8080/ledger";

struct Fixture {
    server: Server,
    dir: PathBuf,
    key: String,
    spki: String,
    /// A stepped-up `system_admin`'s access token (appends, checkpoints).
    admin: String,
}

/// Serves the data directory `dir` with `key` on a fresh port.
fn serve(dir: &std::path::Path, key: &str) -> Server {
    let port = free_port();
    let mut cmd = Command::new(edgecoder_binary());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(dir)
    .env_remove("EDGECODER_MODE")
    .env("EDGECODER_LOG", "warn");
    for (k, v) in dev_settings(key) {
        cmd.env(env_name(k), v);
    }
    let mut server = Server::spawn(cmd, format!("http://127.0.0.1:{port}"));
    server
        .wait_ready("/ledger/health", Duration::from_secs(30))
        .expect("edgecoder starts");
    server
}

impl Fixture {
    fn new(tag: &str, entries: usize) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("edgecoder-tamper-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = signing_key_base64();
        let server = serve(&dir, &key);
        let signer =
            edgecoder_kernel::SigningKey::from_secret(&job_key(&key, "checkpoint")).expect("key");
        let spki = STANDARD.encode(
            signer
                .verifying_key()
                .to_public_key_der()
                .expect("spki")
                .as_bytes(),
        );
        let admin = {
            let target = conformance_target(&server.base, &key);
            let client = Client::new(&server.base);
            edgecoder_conformance::identity::Ctx::new(&client, &target)
                .admin()
                .expect("admin")
                .1
        };
        let f = Fixture {
            server,
            dir,
            key,
            spki,
            admin,
        };
        // Making the admin logged its role grant as entry 0: the log holds
        // `entries` entries in all.
        f.append("original", entries - 1);
        f.checkpoint();
        f
    }

    fn append(&self, tag: &str, n: usize) {
        let c = Client::new(&self.server.base);
        let auth = format!("Bearer {}", self.admin);
        for i in 0..n {
            let body = serde_json::json!({
                "payload_type": "example.org/audit/v1",
                "payload": STANDARD.encode(format!("{tag} {i}")),
                "idempotency_key": format!("{tag}-{i}"),
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
        }
    }

    /// Stops the server and starts it again on the same data.
    fn restart(&mut self) {
        self.server.terminate(Duration::from_secs(5));
        self.server = serve(&self.dir, &self.key);
    }

    /// `POST /ledger/checkpoint` as the service: the reply, or the client's
    /// account of a server error (status and body).
    fn try_checkpoint(&self) -> Result<u16, String> {
        Client::new(&self.server.base)
            .send_with(
                "POST",
                "/ledger/checkpoint",
                &[("authorization", &format!("Bearer {}", self.admin))],
                &[],
            )
            .map(|r| r.status)
    }

    fn checkpoint(&self) {
        let r = Client::new(&self.server.base)
            .send_with(
                "POST",
                "/ledger/checkpoint",
                &[("authorization", &format!("Bearer {}", self.admin))],
                &[],
            )
            .expect("checkpoint");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.dir.join("edgecoder.sqlite")).expect("open");
        c.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        c
    }

    fn state(&self) -> PathBuf {
        self.dir.join("verify-state.json")
    }

    /// Runs `edgecoder verify` with extra arguments; (success, stdout+stderr).
    fn verify(&self, args: &[&str]) -> (bool, String) {
        let (code, out) = self.verify_status(args);
        (code == 0, out)
    }

    /// [`Fixture::verify`] with the exit status.
    fn verify_status(&self, args: &[&str]) -> (i32, String) {
        let state = self.state();
        let mut full = vec!["--key", &self.spki, "--origin", ORIGIN];
        full.extend_from_slice(args);
        if !args.contains(&"--state") {
            full.push("--state");
            full.push(state.to_str().expect("path"));
        }
        run_verify(&full)
    }

    fn verify_db(&self) -> (bool, String) {
        let db = self.dir.join("edgecoder.sqlite");
        self.verify(&["--db", db.to_str().expect("path")])
    }
}

/// Runs `edgecoder verify ARGS`: (exit status, stdout+stderr).
fn run_verify(args: &[&str]) -> (i32, String) {
    let out = Command::new(edgecoder_binary())
        .arg("verify")
        .args(args)
        .output()
        .expect("edgecoder verify");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn must_fail(result: (bool, String), needle: &str) {
    assert!(!result.0, "verify passed but must fail: {}", result.1);
    assert!(
        result.1.contains(needle),
        "want {needle:?} in: {}",
        result.1
    );
}

#[test]
fn verify_accepts_an_untampered_log_by_url_and_by_db_and_checks_inclusion() {
    let f = Fixture::new("clean", 12);
    let (ok, out) = f.verify(&["--url", &f.server.base, "--entry", "7"]);
    assert!(ok, "{out}");
    assert!(out.contains("size 12"), "{out}");
    let (ok, out) = f.verify_db();
    assert!(ok, "{out}");
    let db = f.dir.join("edgecoder.sqlite");
    let (ok, out) = f.verify(&["--db", db.to_str().expect("path"), "--entry", "11"]);
    assert!(ok, "{out}");
    must_fail(
        f.verify(&["--url", &f.server.base, "--entry", "12"]),
        "beyond",
    );
}

#[test]
fn verify_names_the_index_of_a_changed_byte() {
    let f = Fixture::new("byte", 10);
    f.db()
        .execute(
            "UPDATE ledger_entries SET entry = CAST(replace(CAST(entry AS TEXT), 'audit', 'audiT') AS BLOB) WHERE idx = 6",
            [],
        )
        .expect("tamper");
    must_fail(f.verify_db(), "entry 6 was altered");
    must_fail(f.verify(&["--url", &f.server.base]), "entry 6");
}

#[test]
fn verify_fails_on_a_deleted_row() {
    let f = Fixture::new("delete", 10);
    f.db()
        .execute("DELETE FROM ledger_entries WHERE idx = 4", [])
        .expect("tamper");
    must_fail(f.verify_db(), "entry 4 is missing");
}

#[test]
fn verify_fails_on_swapped_rows() {
    let f = Fixture::new("swap", 10);
    let db = f.db();
    db.execute_batch(
        "UPDATE ledger_entries SET idx = -1 WHERE idx = 2;
         UPDATE ledger_entries SET idx = 2 WHERE idx = 5;
         UPDATE ledger_entries SET idx = 5 WHERE idx = -1;",
    )
    .expect("tamper");
    must_fail(f.verify_db(), "root mismatch");
}

#[test]
fn verify_detects_a_fork_after_truncation_on_the_next_run() {
    let f = Fixture::new("fork", 10);
    let (ok, out) = f.verify(&["--url", &f.server.base]);
    assert!(ok, "{out}");
    // Rewrite history: keep 5 entries, forget the rest and its checkpoints,
    // then let the log (which still holds the key) grow past the old size.
    let db = f.db();
    db.execute_batch(
        "DELETE FROM ledger_entries WHERE idx >= 5;
         DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > 5;
         DELETE FROM ledger_checkpoints;",
    )
    .expect("truncate");
    let root5: Vec<u8> = {
        let peaks: Vec<Vec<u8>> = [(2i64, 0i64), (0, 4)]
            .iter()
            .map(|(l, i)| {
                db.query_row(
                    "SELECT hash FROM ledger_nodes WHERE level = ?1 AND idx = ?2",
                    [l, i],
                    |r| r.get(0),
                )
                .expect("peak")
            })
            .collect();
        let mut h = blake3::Hasher::new();
        h.update(&[1]);
        h.update(&peaks[0]);
        h.update(&peaks[1]);
        h.finalize().as_bytes().to_vec()
    };
    db.execute(
        "UPDATE ledger_state SET size = 5, root = ?1 WHERE id = 1",
        [root5],
    )
    .expect("rewind head");
    f.append("forked", 7);
    f.checkpoint();
    must_fail(f.verify(&["--url", &f.server.base]), "fork");
}

/// Rewrites history as someone with write access to the database but not the
/// key would: the entries after the fifth and their subtrees are deleted and
/// the stored head reset, the signed checkpoints left in place.
fn truncate_to_five(db: &rusqlite::Connection) {
    db.execute_batch(
        "DELETE FROM ledger_entries WHERE idx >= 5;
         DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > 5;
         UPDATE ledger_state SET size = 5 WHERE id = 1;",
    )
    .expect("truncate");
}

#[test]
fn the_log_refuses_to_sign_a_rewritten_history() {
    let mut f = Fixture::new("rewrite", 10);
    truncate_to_five(&f.db());
    f.restart();
    // Appends go on (the log cannot tell a legitimate writer from this one),
    // but no checkpoint of the fork is ever signed.
    f.append("forked", 7);
    let refused = f.try_checkpoint().expect_err("the fork must not be signed");
    assert!(
        refused.contains("-> 503") && refused.contains("history_rewritten"),
        "{refused}"
    );
    let alerts: i64 = f
        .db()
        .query_row(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'ledger.history_rewritten' AND outcome = 'failure'",
            [],
            |r| r.get(0),
        )
        .expect("audit");
    assert!(alerts >= 1, "the refusal is audited");
    let signed: i64 = f
        .db()
        .query_row("SELECT MAX(size) FROM ledger_checkpoints", [], |r| r.get(0))
        .expect("checkpoints");
    assert_eq!(
        signed, 10,
        "nothing beyond the genuine checkpoint is signed"
    );
    must_fail(f.verify_db(), "root mismatch");
}

#[test]
fn verify_db_checks_every_stored_checkpoint_not_only_the_newest() {
    let f = Fixture::new("older", 5);
    f.append("later", 5);
    f.checkpoint();
    let (ok, out) = f.verify_db();
    assert!(ok, "{out}");
    // An older checkpoint, validly signed with the log's key, that the
    // entries contradict (as a log that signed a fork would have left).
    let key =
        edgecoder_kernel::SigningKey::from_secret(&job_key(&f.key, "checkpoint")).expect("key");
    let forged = edgecoder_tlog::checkpoint::sign(
        &edgecoder_tlog::checkpoint::Checkpoint {
            origin: ORIGIN.into(),
            size: 5,
            root: [7; 32],
        },
        ORIGIN,
        key.ecdsa(),
    )
    .expect("sign");
    f.db()
        .execute(
            "UPDATE ledger_checkpoints SET note = ?1, root = ?2 WHERE size = 5",
            rusqlite::params![forged, vec![7u8; 32]],
        )
        .expect("tamper");
    std::fs::remove_file(f.state()).expect("forget the verifier's state");
    must_fail(
        f.verify_db(),
        "the signed checkpoint of size 5 contradicts the entries",
    );
}

#[test]
fn verify_refuses_a_checkpoint_signed_by_another_key() {
    let f = Fixture::new("otherkey", 5);
    let other = edgecoder_kernel::SigningKey::from_secret(&signing_key_base64()).expect("key");
    let other_spki = STANDARD.encode(
        other
            .verifying_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes(),
    );
    let out = Command::new(edgecoder_binary())
        .args([
            "verify",
            "--url",
            &f.server.base,
            "--key",
            &other_spki,
            "--origin",
            ORIGIN,
            "--state",
        ])
        .arg(f.state())
        .output()
        .expect("verify");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checkpoint refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_fails_when_the_signed_root_does_not_match_the_entries() {
    let f = Fixture::new("root", 6);
    // A validly signed checkpoint (the attacker holds the key) for a root the
    // entries do not produce.
    let signer =
        edgecoder_kernel::SigningKey::from_secret(&job_key(&f.key, "checkpoint")).expect("key");
    let forged = edgecoder_tlog::checkpoint::Checkpoint {
        origin: ORIGIN.into(),
        size: 6,
        root: [9u8; 32],
    };
    let note =
        edgecoder_tlog::checkpoint::sign(&forged, &forged.origin, signer.ecdsa()).expect("sign");
    f.db()
        .execute(
            "UPDATE ledger_checkpoints SET note = ?1 WHERE size = 6",
            [note],
        )
        .expect("tamper");
    must_fail(f.verify_db(), "root mismatch");
}

#[test]
fn verify_detects_a_rewound_log() {
    let f = Fixture::new("rewind", 5);
    f.append("later", 3);
    f.checkpoint();
    let (ok, out) = f.verify_db();
    assert!(ok, "{out}");
    // Serve an older, genuine checkpoint: the verifier saw size 8 already.
    f.db()
        .execute("DELETE FROM ledger_checkpoints WHERE size = 8", [])
        .expect("tamper");
    must_fail(f.verify_db(), "log rewound");
}

#[test]
fn verify_checks_a_transfer_receipt_and_refuses_a_forged_one() {
    let f = Fixture::new("receipt", 3);
    let c = Client::new(&f.server.base);
    let auth = format!("Bearer {}", f.admin);
    // The deployment's one bootstrap grant: a logged credit transfer.
    let body = serde_json::json!({"account": "user:receipt-holder", "amount": 7});
    let r = c
        .send_with(
            "POST",
            "/mesh/credits/bootstrap",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            &serde_json::to_vec(&body).expect("json"),
        )
        .expect("grant");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let granted = r.json().expect("json");
    let id = granted["id"].as_str().expect("id").to_owned();
    let receipt = c
        .send_with(
            "GET",
            granted["receipt"].as_str().expect("a receipt"),
            &[],
            &[],
        )
        .expect("receipt");
    assert_eq!(
        receipt.status,
        200,
        "{}",
        String::from_utf8_lossy(&receipt.body)
    );
    let path = f.dir.join("receipt.tlog-proof");
    std::fs::write(&path, &receipt.body).expect("write");
    let run = |file: &std::path::Path| {
        let out = Command::new(edgecoder_binary())
            .args(["verify", "--key", &f.spki, "--origin", ORIGIN, "--receipt"])
            .arg(file)
            .output()
            .expect("verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(&path);
    assert!(ok, "{out}");
    assert!(out.contains(&id), "{out}");
    let text = String::from_utf8(receipt.body.clone()).expect("utf8");
    let proof = edgecoder_tlog::proof::TlogProof::parse(&text).expect("a tlog-proof");
    // Raise the amount inside the entry: no longer the entry the log signed.
    let entry = String::from_utf8(proof.extra.clone().expect("extra")).expect("utf8");
    let mut envelope: serde_json::Value = serde_json::from_str(&entry).expect("envelope");
    let payload = String::from_utf8(
        STANDARD
            .decode(envelope["payload"].as_str().expect("payload"))
            .expect("b64"),
    )
    .expect("utf8");
    envelope["payload"] = serde_json::json!(STANDARD.encode(payload.replace("7", "70")));
    let mut forged = proof.clone();
    forged.extra = Some(envelope.to_string().into_bytes());
    let bad = f.dir.join("forged.tlog-proof");
    std::fs::write(&bad, forged.to_text()).expect("write");
    must_fail(run(&bad), "not in the signed log");
    // The genuine entry claimed at another index.
    let mut moved = proof.clone();
    moved.index += 1;
    std::fs::write(&bad, moved.to_text()).expect("write");
    must_fail(run(&bad), "not in the signed log");
    // The JSON receipt of the blake3 era, or any other file, is not a proof.
    std::fs::write(&bad, r#"{"index": 0, "proof": [], "checkpoint": ""}"#).expect("write");
    must_fail(run(&bad), "not a tlog-proof");
}

#[test]
fn verify_needs_the_logs_origin_and_refuses_another() {
    let f = Fixture::new("needsorigin", 3);
    let run = |args: &[&str]| {
        let out = Command::new(edgecoder_binary())
            .args(["verify", "--url", &f.server.base, "--key", &f.spki])
            .args(args)
            .arg("--state")
            .arg(f.state())
            .output()
            .expect("verify");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A key alone would trust any log it signs, under whatever origin the
    // note claims.
    must_fail(run(&[]), "--key needs --origin");
    must_fail(
        run(&["--origin", "staging.example/ledger"]),
        "checkpoint refused",
    );
    let (ok, out) = run(&["--origin", ORIGIN]);
    assert!(ok, "{out}");
    // A trust file pinning two logs' keys: --origin names the one meant, and
    // a checkpoint of the other is refused though its key is trusted.
    let other = edgecoder_kernel::SigningKey::from_secret(&signing_key_base64()).expect("key");
    let other_spki = STANDARD.encode(
        other
            .verifying_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes(),
    );
    let trust = f.dir.join("trust.txt");
    std::fs::write(
        &trust,
        format!("{ORIGIN} {}\nstaging.example/ledger {other_spki}\n", f.spki),
    )
    .expect("trust file");
    let _ = std::fs::remove_file(f.state());
    let by_trust = |origin: &str| {
        let out = Command::new(edgecoder_binary())
            .args(["verify", "--url", &f.server.base, "--trust"])
            .arg(&trust)
            .args(["--origin", origin, "--state"])
            .arg(f.state())
            .output()
            .expect("verify");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    must_fail(by_trust("staging.example/ledger"), "checkpoint refused");
    let (ok, out) = by_trust(ORIGIN);
    assert!(ok, "{out}");
}

// Every development server names its log `localhost:<port>/ledger`; each
// has its own key, so the state keeps them apart instead of calling the
// second one a rewound first one. The same log (same key) is still held to
// what was verified before.
#[test]
fn verify_keeps_two_logs_of_one_origin_apart_by_their_keys() {
    let big = Fixture::new("twologs-a", 5);
    big.append("later", 4);
    big.checkpoint();
    let small = Fixture::new("twologs-b", 3);
    let state = big.dir.join("shared-state.json");
    let state = state.to_str().expect("path");
    let (code, out) = big.verify_status(&["--url", &big.server.base, "--state", state]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = small.verify_status(&["--url", &small.server.base, "--state", state]);
    assert_eq!(
        code, 0,
        "a second log of the same origin is not a rewind: {out}"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state).expect("state")).expect("json");
    assert_eq!(saved["logs"].as_array().map(Vec::len), Some(2), "{saved}");
    // The first log, rewound, is still caught under its own key.
    big.db()
        .execute("DELETE FROM ledger_checkpoints WHERE size = 9", [])
        .expect("tamper");
    let db = big.dir.join("edgecoder.sqlite");
    let (code, out) = big.verify_status(&["--db", db.to_str().expect("path"), "--state", state]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("log rewound"), "{out}");
}

// A tampered log, an unreachable one and a wrong command line each get
// their own exit status, and `--json` says which in one object.
#[test]
fn verify_exit_status_tells_tampered_from_unreachable_from_usage() {
    let f = Fixture::new("exit", 6);
    let (code, out) = f.verify_status(&["--url", &f.server.base, "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["status"], "verified");
    assert_eq!(v["size"], 6);
    assert_eq!(v["origin"], ORIGIN);

    f.db()
        .execute(
            "UPDATE ledger_entries SET entry = CAST(replace(CAST(entry AS TEXT), 'audit', 'audiT') AS BLOB) WHERE idx = 3",
            [],
        )
        .expect("tamper");
    let db = f.dir.join("edgecoder.sqlite");
    let (code, out) = f.verify_status(&["--db", db.to_str().expect("path"), "--json"]);
    assert_eq!(code, 1, "tampered: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["status"], "refused", "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("entry 3"), "{v}");

    // Nothing listens on this port.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, out) = f.verify_status(&["--url", &closed, "--json"]);
    assert_eq!(code, 3, "unreachable: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["status"], "unavailable", "{v}");
    let missing = f.dir.join("no-such.sqlite");
    let (code, out) = f.verify_status(&["--db", missing.to_str().expect("path")]);
    assert_eq!(code, 3, "missing file: {out}");

    let (code, out) = run_verify(&["--url", &f.server.base, "--key", &f.spki]);
    assert_eq!(code, 2, "--key without --origin: {out}");
    assert!(out.contains("--origin"), "{out}");
    let (code, out) = run_verify(&["--url", &f.server.base]);
    assert_eq!(code, 2, "no key: {out}");
    let (code, out) = run_verify(&["--no-such-flag"]);
    assert_eq!(code, 2, "clap's own usage error: {out}");
}

#[test]
fn a_blake3_log_is_refused_by_version_by_the_server_and_the_verifier() {
    let f = Fixture::new("version", 2);
    f.db()
        .execute(
            "UPDATE ledger_state SET tree_hash = 'blake3' WHERE id = 1",
            [],
        )
        .expect("tamper");
    must_fail(f.verify_db(), "blake3 tree hash");
    let r = Client::unchecked(&f.server.base)
        .get("/ledger/checkpoint")
        .expect("checkpoint");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let problem = r.json().expect("problem");
    assert_eq!(problem["code"], "log_version_unsupported");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("blake3"),
        "{problem}"
    );
}

/// The coordinator key a deployment under test signs epoch closes with, as
/// `/mesh/identity` publishes it.
fn coordinator_key(base: &str) -> String {
    let v = Client::new(base)
        .get("/mesh/identity")
        .expect("identity")
        .json()
        .expect("json");
    v["coordinator_key"]["public_key"]
        .as_str()
        .expect("a coordinator key")
        .to_owned()
}

/// Rewrites entry `index` with `edit` applied to its payload, then rebuilds
/// what an operator holding the log key would: leaf hashes, the root and one
/// freshly signed checkpoint over the rewritten history.
fn rewrite_payload(f: &Fixture, index: i64, edit: impl Fn(&mut serde_json::Value)) {
    use edgecoder_tlog::merkle::{Frontier, Hasher, Sha256};
    let db = f.db();
    let bytes: Vec<u8> = db
        .query_row(
            "SELECT entry FROM ledger_entries WHERE idx = ?1",
            [index],
            |r| r.get(0),
        )
        .expect("entry");
    let mut envelope: serde_json::Value = serde_json::from_slice(&bytes).expect("envelope");
    let mut payload: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(envelope["payload"].as_str().expect("payload"))
            .expect("b64"),
    )
    .expect("payload json");
    edit(&mut payload);
    envelope["payload"] = serde_json::json!(STANDARD.encode(payload.to_string()));
    let forged = envelope.to_string().into_bytes();
    let leaf = Sha256::leaf(&forged);
    db.execute(
        "UPDATE ledger_entries SET entry = ?2, leaf_hash = ?3 WHERE idx = ?1",
        rusqlite::params![index, forged, leaf.to_vec()],
    )
    .expect("rewrite");
    let mut frontier = Frontier::new();
    let mut stmt = db
        .prepare("SELECT entry FROM ledger_entries ORDER BY idx")
        .expect("entries");
    let rows = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("rows");
    for e in rows {
        frontier.push::<Sha256>(Sha256::leaf(&e.expect("row")));
    }
    let signer =
        edgecoder_kernel::SigningKey::from_secret(&job_key(&f.key, "checkpoint")).expect("key");
    let cp = edgecoder_tlog::checkpoint::Checkpoint {
        origin: ORIGIN.into(),
        size: frontier.size(),
        root: frontier.root::<Sha256>(),
    };
    let note = edgecoder_tlog::checkpoint::sign(&cp, &cp.origin, signer.ecdsa()).expect("sign");
    db.execute("DELETE FROM ledger_checkpoints", [])
        .expect("forget");
    db.execute(
        "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, 0)",
        rusqlite::params![
            i64::try_from(cp.size).expect("size"),
            cp.root.to_vec(),
            note
        ],
    )
    .expect("sign");
}

#[test]
fn verify_epochs_recomputes_every_allocation_and_catches_a_tampered_one() {
    let f = Fixture::new("epochs", 3);
    let client = Client::new(&f.server.base);
    let target = conformance_target(&f.server.base, &f.key);
    let admin_id = client
        .send_with(
            "GET",
            "/auth/me",
            &[("authorization", &format!("Bearer {}", f.admin))],
            &[],
        )
        .expect("me")
        .json()
        .expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let x =
        edgecoder_conformance::identity::Ctx::new(&client, &target).with_admin(&admin_id, &f.admin);
    let (a, _) = edgecoder_conformance::economy::completed_task(&x, "tamper-a").expect("task a");
    let (b, _) = edgecoder_conformance::economy::completed_task(&x, "tamper-b").expect("task b");
    edgecoder_conformance::economy::close_after_this_epoch(&x).expect("close");
    f.checkpoint();
    let key = coordinator_key(&f.server.base);
    let db = f.dir.join("edgecoder.sqlite");
    let db = db.to_str().expect("path");
    let run = |state: &str| {
        let out = Command::new(edgecoder_binary())
            .args(["verify", "--key", &f.spki, "--origin", ORIGIN, "--db", db])
            .args(["--epochs", "--coordinator-key", &key, "--state"])
            .arg(f.dir.join(state))
            .output()
            .expect("verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run("honest.json");
    assert!(ok, "{out}");
    assert!(out.contains("1 epochs recomputed"), "{out}");
    // The credit entries of the one close: a's and b's (half the pool each).
    let credit_of = |account: &str| -> i64 {
        let conn = f.db();
        let mut stmt = conn
            .prepare("SELECT idx, entry FROM ledger_entries WHERE payload_type = ?1 ORDER BY idx")
            .expect("query");
        let rows = stmt
            .query_map(["edgecoder.dev/issuance-epoch/v1"], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .expect("rows");
        for row in rows {
            let (idx, bytes) = row.expect("row");
            let env: serde_json::Value = serde_json::from_slice(&bytes).expect("envelope");
            let p: serde_json::Value = serde_json::from_slice(
                &STANDARD
                    .decode(env["payload"].as_str().expect("payload"))
                    .expect("b64"),
            )
            .expect("json");
            if p["kind"] == "credit" && p["account"] == account {
                return idx;
            }
        }
        panic!("no credit entry for {account}");
    };
    let (to_a, to_b) = (
        credit_of(&format!("user:{}", a.id)),
        credit_of(&format!("user:{}", b.id)),
    );
    // An operator who holds the log key moves one credit from b to a, and
    // re-signs the rewritten history: the log verifies, the epoch does not.
    rewrite_payload(&f, to_a, |p| {
        p["amount"] = serde_json::json!(p["amount"].as_u64().expect("amount") + 1)
    });
    rewrite_payload(&f, to_b, |p| {
        p["amount"] = serde_json::json!(p["amount"].as_u64().expect("amount") - 1)
    });
    let (ok, out) = Command::new(edgecoder_binary())
        .args([
            "verify", "--key", &f.spki, "--origin", ORIGIN, "--db", db, "--state",
        ])
        .arg(f.dir.join("plain.json"))
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .expect("verify");
    assert!(ok, "the rewritten log itself verifies: {out}");
    must_fail(run("tampered.json"), "differs from the recomputed one");
    // Also rewriting the close's digest to the forged table's does not help:
    // the log's completions give another one.
    let close: i64 = f
        .db()
        .query_row(
            "SELECT close_index FROM econ_epochs WHERE close_index IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("close index");
    let forged_rows: Vec<edgecoder_proto::economy::Allocation> = {
        let conn = f.db();
        let mut rows = Vec::new();
        for idx in [to_a, to_b] {
            let bytes: Vec<u8> = conn
                .query_row(
                    "SELECT entry FROM ledger_entries WHERE idx = ?1",
                    [idx],
                    |r| r.get(0),
                )
                .expect("entry");
            let env: serde_json::Value = serde_json::from_slice(&bytes).expect("envelope");
            let p: serde_json::Value = serde_json::from_slice(
                &STANDARD
                    .decode(env["payload"].as_str().expect("payload"))
                    .expect("b64"),
            )
            .expect("json");
            rows.push(edgecoder_proto::economy::Allocation {
                account: p["account"].as_str().expect("account").to_owned(),
                work: p["work"].as_u64().expect("work"),
                amount: p["amount"].as_u64().expect("amount"),
            });
        }
        rows.sort_by(|l, r| l.account.cmp(&r.account));
        rows
    };
    rewrite_payload(&f, close, |p| {
        let epoch = p["epoch"].as_u64().expect("epoch");
        let pool = p["pool"].as_u64().expect("pool");
        p["allocation_digest"] = serde_json::json!(edgecoder_proto::economy::allocation_digest(
            epoch,
            pool,
            &forged_rows
        ));
    });
    must_fail(
        run("digest.json"),
        "is not the one the log's completions give",
    );
}
