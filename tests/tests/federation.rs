//! Federation between real coordinators: native `edgecoder serve`
//! processes, each with its own data directory, keys and operators, peering
//! over HTTP.
//!
//! Peering needs both operators: one pins the other's key id (which the
//! other's `/mesh/identity` must serve), the other approves the request its
//! signed hello left; until both have, and while suspended or removed,
//! coordinator requests get 403 `peer_not_approved`, and those signed by a
//! key no peer is pinned to get 401 `unknown_peer`. A pinned key changes only
//! through a rotation signed by it: a coordinator restarted with a new key and
//! no signed rotation (or one signed by another key) is refused, one with a
//! rotation is re-pinned, and state survives restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgecoder_conformance::Client;
use edgecoder_conformance::harness::{
    Server, conformance_target, dev_settings, edgecoder_binary, env_name, job_key,
    signing_key_base64, start_native, start_native_at,
};
use edgecoder_conformance::identity::Ctx;
use edgecoder_conformance::mesh::{Sig, ledger_entry, sign_headers};
use edgecoder_conformance::{Reply, Target};
use edgecoder_proto::keys::{key_id, public_key_b64url};
use p256::ecdsa::SigningKey;
use serde_json::{Value as Json, json};

/// A scratch directory, removed when the test ends however it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("edgecoder-fed-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    Scratch(d)
}

/// One coordinator: its process, settings and operator.
struct Coordinator {
    server: Server,
    dir: PathBuf,
    env: Vec<(String, String)>,
    target: Target,
    client: Client,
    /// Its coordinator key as it runs now.
    key: SigningKey,
    admin: String,
}

fn p256_of(secret: &str) -> SigningKey {
    edgecoder_kernel::SigningKey::from_secret(secret)
        .expect("key")
        .ecdsa()
        .clone()
}

impl Coordinator {
    fn start(root: &Path, tag: &str) -> Coordinator {
        let signing = signing_key_base64();
        let env: Vec<(String, String)> = dev_settings(&signing)
            .into_iter()
            .map(|(k, v)| (env_name(k), v))
            .collect();
        let dir = root.join(tag);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = start_native(&edgecoder_binary(), &dir, &pairs);
        let target = conformance_target(&server.base, &signing);
        let client = Client::new(&server.base);
        let key = p256_of(&job_key(&signing, "coordinator"));
        let admin = Ctx::new(&client, &target).admin().expect("admin").1;
        Coordinator {
            server,
            dir,
            env,
            target,
            client,
            key,
            admin,
        }
    }

    /// Restarts on the same port and data directory with `changes` to its
    /// settings (the coordinator key, say).
    fn restart(&mut self, changes: &[(&str, String)], key: SigningKey) {
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
        self.server = start_native_at(&edgecoder_binary(), &self.dir, &pairs, port);
        self.key = key;
        // Step-up is time-bound: sign in afresh.
        self.client = Client::new(&self.server.base);
    }

    fn origin(&self) -> &str {
        &self.server.base
    }

    fn kid(&self) -> String {
        key_id(self.key.verifying_key())
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.client, &self.target)
    }

    fn operator(&self, method: &str, path: &str, body: &Json) -> Reply {
        self.ctx()
            .send(method, path, Some(&self.admin), Some(body), &[])
            .expect("request")
    }

    fn peers(&self) -> Json {
        let r = self
            .ctx()
            .send("GET", "/mesh/peers", Some(&self.admin), None, &[])
            .expect("peers");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().expect("json")
    }

    fn peer(&self, origin: &str) -> Json {
        self.peers()["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["origin"] == origin).cloned())
            .unwrap_or(Json::Null)
    }
}

/// `from`'s coordinator-signed request to `to` (signed with `key`).
fn as_peer(
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

fn send_signed(
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

fn code(r: &Reply) -> String {
    r.json()
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[track_caller]
fn want(r: &Reply, status: u16, code_wanted: Option<&str>, what: &str) -> Json {
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

const PULL: &str = "/mesh/federation/blacklist?since=0";

/// `a` pins `b` and `b` approves `a`: both active.
fn peer(a: &Coordinator, b: &Coordinator) {
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

#[test]
fn peering_needs_both_operators_and_only_active_peers_are_answered() {
    let root = scratch("peering");
    let a = Coordinator::start(&root.0, "a");
    let b = Coordinator::start(&root.0, "b");

    // Strangers: unsigned, and signed by a key no peer is pinned to.
    let r = b.client.get(PULL).expect("get");
    want(&r, 401, Some("mesh_unauthorized"), "unsigned");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        401,
        Some("unknown_peer"),
        "unknown key",
    );

    // A pin that the origin does not serve is refused.
    let r = a.operator(
        "POST",
        "/mesh/peers",
        &json!({"origin": b.origin(), "key_id": "00112233aabbccdd", "reason": "wrong pin"}),
    );
    want(&r, 409, Some("peer_key_mismatch"), "wrong pin");

    // A pins B; its signed hello leaves a pending request at B.
    let r = a.operator(
        "POST",
        "/mesh/peers",
        &json!({"origin": b.origin(), "key_id": b.kid(), "reason": "we federate"}),
    );
    let v = want(&r, 201, None, "a pins b");
    assert_eq!(v["status"], "awaiting_peer", "{v}");
    assert_eq!(v["hello"]["delivered"], true, "{v}");
    let added = v["ledger_index"].as_u64().expect("ledger index");
    let (kind, entry) = ledger_entry(&a.ctx(), added).expect("entry");
    assert_eq!(kind, "edgecoder.dev/peer/v1");
    assert_eq!(entry["action"], "added");
    assert_eq!(entry["key_id"], b.kid());
    let at_b = b.peer(a.origin());
    assert_eq!(at_b["status"], "pending", "{at_b}");
    assert_eq!(at_b["key_id"], a.kid());

    // Neither side answers the other before both approved.
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        403,
        Some("peer_not_approved"),
        "pending at b",
    );
    want(
        &as_peer(&a, &b.key, "GET", PULL, None),
        403,
        Some("peer_not_approved"),
        "awaiting at a",
    );

    // A stranger claiming A's origin with its own key cannot take its place.
    let mallory = SigningKey::from_slice(&[9u8; 32]).expect("key");
    let hello =
        json!({"origin": a.origin(), "public_key": public_key_b64url(mallory.verifying_key())});
    let r = as_peer(&b, &mallory, "POST", "/mesh/peers/hello", Some(&hello));
    // Pending requests are replaceable, but approval pins the key id the
    // operator gives, which is A's.
    assert!(r.status == 202, "{}", String::from_utf8_lossy(&r.body));
    // A hello signed by another key than the one it carries is refused.
    let r = as_peer(&b, &a.key, "POST", "/mesh/peers/hello", Some(&hello));
    want(
        &r,
        401,
        Some("signature_invalid"),
        "hello without possession",
    );

    // B's operator approves A with A's key id: both active.
    let r = b.operator(
        "POST",
        "/mesh/peers",
        &json!({"origin": a.origin(), "key_id": a.kid(), "reason": "we federate too"}),
    );
    let v = want(&r, 201, None, "b approves a");
    assert_eq!(v["hello"]["delivered"], true, "{v}");
    // Mallory's request did not count as A's approval; A's hello (sent again
    // by A's refresh) does.
    let r = a.operator(
        "POST",
        "/mesh/peers/refresh",
        &json!({"origin": b.origin()}),
    );
    want(&r, 200, None, "a refreshes b");
    assert_eq!(a.peer(b.origin())["status"], "active");
    assert_eq!(b.peer(a.origin())["status"], "active");
    assert_eq!(b.peer(a.origin())["key_id"], a.kid());

    // Active peers are answered; a replay is not.
    let url = format!("{}{PULL}", b.origin());
    let hs = sign_headers(&a.key, &a.kid(), "GET", &url, b"", &Sig::default());
    let v = want(
        &send_signed(&b, "GET", PULL, &hs, b""),
        200,
        None,
        "active pull",
    );
    assert_eq!(v["origin"], b.origin());
    want(
        &send_signed(&b, "GET", PULL, &hs, b""),
        401,
        Some("replay_detected"),
        "replayed",
    );
    want(
        &as_peer(&a, &b.key, "GET", PULL, None),
        200,
        None,
        "b pulls from a",
    );
    // Mallory is still nobody.
    want(
        &as_peer(&b, &mallory, "GET", PULL, None),
        401,
        Some("unknown_peer"),
        "mallory",
    );

    // Suspended: refused until resumed; removed: refused, and a hello from
    // the removed peer does not bring it back.
    let r = b.operator(
        "POST",
        "/mesh/peers/suspend",
        &json!({"origin": a.origin(), "reason": "incident"}),
    );
    let v = want(&r, 200, None, "suspend");
    let (_, entry) =
        ledger_entry(&b.ctx(), v["ledger_index"].as_u64().expect("index")).expect("entry");
    assert_eq!(entry["action"], "suspend");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        403,
        Some("peer_not_approved"),
        "suspended",
    );
    let r = b.operator(
        "POST",
        "/mesh/peers/resume",
        &json!({"origin": a.origin(), "reason": "resolved"}),
    );
    want(&r, 200, None, "resume");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        200,
        None,
        "resumed",
    );
    let r = b.operator(
        "POST",
        "/mesh/peers/remove",
        &json!({"origin": a.origin(), "reason": "parting"}),
    );
    want(&r, 200, None, "remove");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        403,
        Some("peer_not_approved"),
        "removed",
    );
    let own = json!({"origin": a.origin(), "public_key": public_key_b64url(a.key.verifying_key())});
    let r = as_peer(&b, &a.key, "POST", "/mesh/peers/hello", Some(&own));
    want(&r, 403, Some("peer_not_approved"), "removed peer's hello");

    // Every change was audited at B.
    let r = b
        .ctx()
        .send(
            "GET",
            "/mesh/audit?action=mesh.peer.remove",
            Some(&b.admin),
            None,
            &[],
        )
        .expect("audit");
    let events = want(&r, 200, None, "audit")["events"].clone();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");

    // Only operators with step-up may change peers.
    let user = b.ctx().account("fed-user", true).expect("user");
    let r = b
        .ctx()
        .send(
            "POST",
            "/mesh/peers",
            Some(&user.access),
            Some(&json!({"origin": a.origin(), "key_id": a.kid(), "reason": "x"})),
            &[],
        )
        .expect("request");
    want(&r, 403, Some("forbidden"), "a user");
}

#[test]
fn a_peer_key_changes_only_through_a_rotation_signed_by_the_pinned_key() {
    let root = scratch("rotation");
    let mut a = Coordinator::start(&root.0, "a");
    let b = Coordinator::start(&root.0, "b");
    peer(&a, &b);
    let old = a.key.clone();
    let old_secret = job_key(&a.target.signing_key, "coordinator");

    // A new key with no rotation: B keeps the pin, audits the mismatch, and
    // requests signed with the new key are from nobody.
    let new_secret = job_key(&a.target.signing_key, "coordinator-2");
    a.restart(
        &[("coordinator_key", new_secret.clone())],
        p256_of(&new_secret),
    );
    let r = b.operator(
        "POST",
        "/mesh/peers/refresh",
        &json!({"origin": a.origin()}),
    );
    want(&r, 409, Some("peer_key_mismatch"), "unsigned key change");
    assert_eq!(b.peer(a.origin())["key_id"], key_id(old.verifying_key()));
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        401,
        Some("unknown_peer"),
        "new key, unpinned",
    );

    // A rotation signed by a key that is not the pinned one is refused too.
    let stranger = job_key(&a.target.signing_key, "not-the-pinned-one");
    a.restart(
        &[
            ("previous_coordinator_key", stranger),
            ("previous_coordinator_key_retired_at", "1800000000".into()),
        ],
        p256_of(&new_secret),
    );
    let r = b.operator(
        "POST",
        "/mesh/peers/refresh",
        &json!({"origin": a.origin()}),
    );
    want(
        &r,
        409,
        Some("peer_key_mismatch"),
        "rotation by another key",
    );

    // Signed by the pinned key: B re-pins, logs it, and answers the new key
    // only.
    a.restart(
        &[("previous_coordinator_key", old_secret)],
        p256_of(&new_secret),
    );
    let r = b.operator(
        "POST",
        "/mesh/peers/refresh",
        &json!({"origin": a.origin()}),
    );
    let v = want(&r, 200, None, "signed rotation");
    assert_eq!(v["key_id"], a.kid(), "{v}");
    assert_eq!(v["status"], "active", "{v}");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        200,
        None,
        "new key",
    );
    want(
        &as_peer(&b, &old, "GET", PULL, None),
        401,
        Some("unknown_peer"),
        "old key",
    );
    let r = b
        .ctx()
        .send(
            "GET",
            "/mesh/audit?action=mesh.peer.rotated",
            Some(&b.admin),
            None,
            &[],
        )
        .expect("audit");
    let events = want(&r, 200, None, "audit")["events"].clone();
    let index = events[0]["details"]["ledger_index"]
        .as_u64()
        .expect("index");
    let (kind, entry) = ledger_entry(&b.ctx(), index).expect("entry");
    assert_eq!(kind, "edgecoder.dev/peer/v1");
    assert_eq!(entry["action"], "rotated");
    assert_eq!(
        entry["details"]["previous_key_id"],
        key_id(old.verifying_key())
    );

    // A's view of B survived A's restarts.
    assert_eq!(a.peer(b.origin())["status"], "active");
    want(
        &as_peer(&a, &b.key, "GET", PULL, None),
        200,
        None,
        "b pulls from restarted a",
    );
}
