//! Federation test helpers: real coordinators (native `edgecoder serve`
//! processes, each with its own data directory, keys, operator, log origin,
//! witness key and witnesses), peered over HTTP, and the requests one
//! coordinator signs for another. Used by `tests/tests/federation.rs` and
//! the federation benchmark (`examples/federation_bench.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_proto::keys::key_id;
use edgecoder_tlog::checkpoint::{self, Checkpoint, NoteKey, NoteSigner};
use p256::ecdsa::SigningKey;
use serde_json::{Value as Json, json};

use crate::harness::{
    Server, conformance_target, dev_settings, edgecoder_binary, env_name, free_port, job_key,
    signing_key_base64, start_native_at,
};
use crate::identity::Ctx;
use crate::mesh::{Sig, sign_headers};
use crate::{Client, Reply, Target};

/// A scratch directory, removed when the test ends however it ends.
pub struct Scratch(
    /// The directory.
    pub PathBuf,
);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch directory under the system's temporary directory.
pub fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("edgecoder-fed-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    Scratch(d)
}

/// One coordinator: its process, settings and operator.
pub struct Coordinator {
    /// The `edgecoder` binary it runs.
    pub bin: PathBuf,
    /// Its process.
    pub server: Server,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its settings, as environment variables.
    pub env: Vec<(String, String)>,
    /// What the suite knows of it.
    pub target: Target,
    /// A client of it.
    pub client: Client,
    /// Its coordinator key as it runs now.
    pub key: SigningKey,
    /// Its system_admin's access token (signed in at start).
    pub admin: String,
    /// That admin's user id.
    pub admin_id: String,
}

/// The P-256 key of a secret as settings hold it.
pub fn p256_of(secret: &str) -> SigningKey {
    edgecoder_kernel::SigningKey::from_secret(secret)
        .expect("key")
        .ecdsa()
        .clone()
}

/// The seed of a test key of `job` for coordinator `tag` (base64, 32 bytes).
pub fn seed(tag: &str, job: &str) -> String {
    STANDARD.encode(blake3::derive_key(
        "edgecoder federation test seed v1",
        format!("{tag}/{job}").as_bytes(),
    ))
}

/// The federation settings of test coordinator `tag` on `port`: pulls every
/// second, a checkpoint per read, its log named `127.0.0.1:<port>/ledger`,
/// its witness and Ed25519 log keys from [`seed`], and `witnesses` (tag,
/// port) asked to cosign its checkpoints.
pub fn settings(tag: &str, port: u16, witnesses: &[(&str, u16)]) -> Vec<(&'static str, String)> {
    let list: Vec<Json> = witnesses
        .iter()
        .map(|(t, p)| {
            json!({"vkey": witness_vkey(t, *p), "url": format!("http://127.0.0.1:{p}/mesh/witness")})
        })
        .collect();
    vec![
        ("mesh_origins", format!("http://127.0.0.1:{port}")),
        ("mesh_federation_interval_secs", "1".into()),
        ("checkpoint_interval_ms", "0".into()),
        ("log_origin", format!("127.0.0.1:{port}/ledger")),
        ("witness_key", seed(tag, "witness")),
        ("checkpoint_ed25519_key", seed(tag, "log")),
        ("log_witnesses", Json::from(list).to_string()),
    ]
}

/// The cosignature/v1 verifier key of coordinator `tag` at `port`.
pub fn witness_vkey(tag: &str, port: u16) -> String {
    let bytes: [u8; 32] = STANDARD
        .decode(seed(tag, "witness"))
        .expect("b64")
        .try_into()
        .expect("32");
    let key = ed25519_dalek::SigningKey::from_bytes(&bytes);
    NoteKey::CosignatureV1(key.verifying_key())
        .vkey(&format!("127.0.0.1:{port}/mesh/witness"))
        .expect("vkey")
}

impl Coordinator {
    /// Starts coordinator `tag` on a free port, with no witnesses.
    pub fn start(root: &Path, tag: &str) -> Coordinator {
        Coordinator::start_with(root, tag, free_port(), &[])
    }

    /// Starts coordinator `tag` on `port`: its log is `127.0.0.1:<port>/ledger`,
    /// its witness and Ed25519 log keys are the test's, and `witnesses`
    /// (tag, port) are asked to cosign its checkpoints.
    pub fn start_with(root: &Path, tag: &str, port: u16, witnesses: &[(&str, u16)]) -> Coordinator {
        Coordinator::start_bin(&edgecoder_binary(), root, tag, port, witnesses, &[])
    }

    /// [`Coordinator::start_with`] with another `edgecoder` binary (a
    /// release build for benchmarks) and extra settings.
    pub fn start_bin(
        bin: &Path,
        root: &Path,
        tag: &str,
        port: u16,
        witnesses: &[(&str, u16)],
        extra: &[(&str, &str)],
    ) -> Coordinator {
        let signing = signing_key_base64();
        let mut env: Vec<(String, String)> = dev_settings(&signing)
            .into_iter()
            .chain(settings(tag, port, witnesses))
            .map(|(k, v)| (env_name(k), v))
            .collect();
        for (k, v) in extra {
            let name = env_name(k);
            env.retain(|(n, _)| *n != name);
            env.push((name, (*v).to_owned()));
        }
        let dir = root.join(tag);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = start_native_at(bin, &dir, &pairs, port);
        let mut c = Coordinator::around(server, &signing, dir);
        c.bin = bin.to_owned();
        c.env = env;
        c
    }

    /// A coordinator already started (natively, or under `wrangler dev`)
    /// with [`dev_settings`] for `signing_key` and [`settings`]: its admin
    /// signs in.
    pub fn around(server: Server, signing_key: &str, dir: PathBuf) -> Coordinator {
        let target = conformance_target(&server.base, signing_key);
        let client = Client::new(&server.base);
        let key = p256_of(&job_key(signing_key, "coordinator"));
        let (admin_id, admin) = Ctx::new(&client, &target).admin().expect("admin");
        Coordinator {
            bin: PathBuf::new(),
            server,
            dir,
            env: Vec::new(),
            target,
            client,
            key,
            admin,
            admin_id,
        }
    }

    /// Restarts on the same port and data directory with `changes` to its
    /// settings (the coordinator key, say).
    pub fn restart(&mut self, changes: &[(&str, String)], key: SigningKey) {
        self.server.terminate(Duration::from_secs(10));
        for (name, value) in changes {
            let name = env_name(name);
            self.env.retain(|(k, _)| *k != name);
            self.env.push((name, value.clone()));
        }
        let port: u16 = self
            .server
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let pairs: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.server = start_native_at(&self.bin, &self.dir, &pairs, port);
        self.key = key;
        // Step-up is time-bound: sign in afresh.
        self.client = Client::new(&self.server.base);
    }

    /// Its origin (`http://127.0.0.1:<port>`).
    pub fn origin(&self) -> &str {
        &self.server.base
    }

    /// Its coordinator key's id.
    pub fn kid(&self) -> String {
        key_id(self.key.verifying_key())
    }

    /// A suite context on it, as its admin.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.client, &self.target).with_admin(&self.admin_id, &self.admin)
    }

    /// A request by its admin.
    pub fn operator(&self, method: &str, path: &str, body: &Json) -> Reply {
        self.ctx()
            .send(method, path, Some(&self.admin), Some(body), &[])
            .expect("request")
    }

    /// `GET /mesh/peers`.
    pub fn peers(&self) -> Json {
        let r = self
            .ctx()
            .send("GET", "/mesh/peers", Some(&self.admin), None, &[])
            .expect("peers");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().expect("json")
    }

    /// Its view of the peer at `origin`.
    pub fn peer(&self, origin: &str) -> Json {
        self.peers()["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["origin"] == origin).cloned())
            .unwrap_or(Json::Null)
    }
}

/// `from`'s coordinator-signed request to `to` (signed with `key`).
pub fn as_peer(
    to: &Coordinator,
    key: &SigningKey,
    method: &str,
    path: &str,
    body: Option<&Json>,
) -> Reply {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let url = format!("{}{path}", to.origin());
    let hs = sign_headers(
        key,
        &key_id(key.verifying_key()),
        method,
        &url,
        &bytes,
        &Sig::default(),
    );
    send_signed(to, method, path, &hs, &bytes)
}

/// Sends a request with signature headers `hs`.
pub fn send_signed(
    to: &Coordinator,
    method: &str,
    path: &str,
    hs: &[(String, String)],
    bytes: &[u8],
) -> Reply {
    let mut headers: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if !bytes.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    to.client
        .send_with(method, path, &headers, bytes)
        .expect("request")
}

/// Fails unless each of `routes` (method, path template) left an audit
/// event at one of `coordinators` for a request it was sent (the suite's
/// audit coverage check leaves these routes to the federation tests).
#[track_caller]
pub fn assert_audited(coordinators: &[&Coordinator], routes: &[(&str, &str)]) {
    let mut missing = Vec::new();
    for (method, template) in routes {
        let route = vec![((*method).to_owned(), (*template).to_owned())];
        let mut why = Vec::new();
        let covered = coordinators.iter().any(|c| {
            match crate::unaudited_routes(&c.client, &c.admin, &route) {
                Ok(m) if m.is_empty() => true,
                Ok(m) => {
                    why.extend(m);
                    false
                }
                Err(e) => {
                    why.push(e);
                    false
                }
            }
        });
        if !covered {
            missing.push(format!("{method} {template}: {}", why.join("; ")));
        }
    }
    assert!(
        missing.is_empty(),
        "no audit event from: {}",
        missing.join(", ")
    );
}

/// A problem's `code`.
pub fn code(r: &Reply) -> String {
    r.json()
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Asserts the status (and problem code), returning the JSON body.
#[track_caller]
pub fn want(r: &Reply, status: u16, code_wanted: Option<&str>, what: &str) -> Json {
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    if let Some(c) = code_wanted {
        assert_eq!(code(r), c, "{what}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
    }
    r.json().unwrap_or(Json::Null)
}

/// A route only active peers are answered on.
pub const PULL: &str = "/mesh/federation/blacklist?since=0";

/// `a` pins `b` and `b` approves `a`: both active.
pub fn peer(a: &Coordinator, b: &Coordinator) {
    let r = a.operator(
        "POST",
        "/mesh/peers",
        &json!({"origin": b.origin(), "key_id": b.kid(), "reason": "test federation"}),
    );
    want(&r, 201, None, "a pins b");
    let r = b.operator(
        "POST",
        "/mesh/peers",
        &json!({"origin": a.origin(), "key_id": a.kid(), "reason": "test federation"}),
    );
    let v = want(&r, 201, None, "b approves a");
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(a.peer(b.origin())["status"], "active");
}

/// A checkpoint of coordinator `tag`'s log signed with its Ed25519 log key:
/// the test plays the log itself, as one that forks or rewinds would.
pub fn as_log(tag: &str, port: u16, size: u64, root: [u8; 32]) -> String {
    let bytes: [u8; 32] = STANDARD
        .decode(seed(tag, "log"))
        .expect("b64")
        .try_into()
        .expect("32");
    let key = ed25519_dalek::SigningKey::from_bytes(&bytes);
    let origin = format!("127.0.0.1:{port}/ledger");
    checkpoint::sign_with(
        &Checkpoint {
            origin: origin.clone(),
            size,
            root,
        },
        &origin,
        &[NoteSigner::Ed25519(&key)],
    )
    .expect("sign")
}

/// `POST /mesh/witness/add-checkpoint` with `body`.
pub fn add_checkpoint(to: &Coordinator, body: &str) -> Reply {
    to.client
        .send(
            "POST",
            "/mesh/witness/add-checkpoint",
            Some("text/plain"),
            body.as_bytes(),
        )
        .expect("request")
}

/// How many audit events of `action` `c` holds.
pub fn audits(c: &Coordinator, action: &str) -> usize {
    let r = c
        .ctx()
        .send(
            "GET",
            &format!("/mesh/audit?action={action}"),
            Some(&c.admin),
            None,
            &[],
        )
        .expect("audit");
    want(&r, 200, None, "audit")["events"]
        .as_array()
        .map_or(0, Vec::len)
}

/// `c` signs its head now; the note as served, with cosignatures.
pub fn sign_now(c: &Coordinator) -> String {
    let r = c
        .ctx()
        .send("POST", "/ledger/checkpoint", Some(&c.admin), None, &[])
        .expect("checkpoint");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8(r.body).expect("utf-8")
}

/// The verifier keys of `c`'s log and `witness`'s witness, as published.
pub fn published_keys(c: &Coordinator, witness: &Coordinator) -> (String, String) {
    let keys = c
        .client
        .get("/ledger/keys")
        .expect("keys")
        .json()
        .expect("json");
    let log = keys["vkeys"][0].as_str().expect("vkey").to_owned();
    let id = witness
        .client
        .get("/mesh/identity")
        .expect("identity")
        .json()
        .expect("json");
    let w = id["witness"]["vkey"]
        .as_str()
        .expect("witness vkey")
        .to_owned();
    (log, w)
}

/// Asserts 200 and returns the body.
#[track_caller]
pub fn want_text(r: &Reply) -> Vec<u8> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.body.clone()
}

/// Polls `f` until it gives a value or `secs` pass.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The blacklist entries `c` holds.
pub fn blacklist(c: &Coordinator) -> Vec<Json> {
    let r = c
        .ctx()
        .send(
            "GET",
            "/mesh/blacklist?limit=1000",
            Some(&c.admin),
            None,
            &[],
        )
        .expect("blacklist");
    want(&r, 200, None, "blacklist")["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether `c` has an entry of `action` on `subject` that came from `from`.
pub fn has_entry(c: &Coordinator, action: &str, subject: &str, from: &str) -> bool {
    blacklist(c)
        .iter()
        .any(|e| e["action"] == action && e["subject"] == subject && e["origin"] == from)
}

/// `c`'s operator adds or lifts a ban on node key `subject`.
pub fn ban(c: &Coordinator, action: &str, subject: &str) -> Json {
    let path = if action == "add" {
        "/mesh/blacklist"
    } else {
        "/mesh/blacklist/lift"
    };
    let r = c.operator(
        "POST",
        path,
        &json!({"subject_kind": "node_key", "subject": subject, "reason_code": "abuse", "reason": "federation test"}),
    );
    want(&r, if action == "add" { 201 } else { 200 }, None, "ban")
}

/// Three coordinators, each witnessed by the other two, all peered.
pub fn three(root: &Path) -> (Coordinator, Coordinator, Coordinator) {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Coordinator::start_with(root, "a", pa, &[("b", pb), ("c", pc)]);
    let b = Coordinator::start_with(root, "b", pb, &[("a", pa), ("c", pc)]);
    let c = Coordinator::start_with(root, "c", pc, &[("a", pa), ("b", pb)]);
    peer(&a, &b);
    peer(&a, &c);
    peer(&b, &c);
    (a, b, c)
}
