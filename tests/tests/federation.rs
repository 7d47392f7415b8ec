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

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_conformance::federation::*;
use edgecoder_conformance::harness::{edgecoder_binary, free_port, job_key, start_native_at};
use edgecoder_conformance::mesh::{Sig, ledger_entry, sign_headers};
use edgecoder_proto::keys::{key_id, public_key_b64url};
use edgecoder_tlog::checkpoint::{self, Checkpoint, NoteKey, NoteSigner};
use edgecoder_tlog::merkle::{Hasher, Sha256};
use p256::ecdsa::SigningKey;
use serde_json::{Value as Json, json};

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

    // A peer coordinator on the blacklist: nothing from it is taken, it
    // cannot be re-added or ask again, until the ban is lifted.
    let peer_ban = |action: &str| {
        let path = if action == "add" {
            "/mesh/blacklist"
        } else {
            "/mesh/blacklist/lift"
        };
        b.operator(
            "POST",
            path,
            &json!({"subject_kind": "peer", "subject": a.origin(), "reason_code": "abuse", "reason": "peer test"}),
        )
    };
    want(&peer_ban("add"), 201, None, "ban a");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        403,
        Some("peer_blacklisted"),
        "banned peer",
    );
    let own = json!({"origin": a.origin(), "public_key": public_key_b64url(a.key.verifying_key())});
    want(
        &as_peer(&b, &a.key, "POST", "/mesh/peers/hello", Some(&own)),
        403,
        Some("peer_blacklisted"),
        "banned hello",
    );
    let r = b.operator(
        "POST",
        "/mesh/peers",
        &json!({"origin": a.origin(), "key_id": a.kid(), "reason": "again"}),
    );
    want(&r, 403, Some("peer_blacklisted"), "re-adding a banned peer");
    assert_eq!(b.peer(a.origin())["status"], "banned");
    want(&peer_ban("lift"), 200, None, "lift a");
    want(
        &as_peer(&b, &a.key, "GET", PULL, None),
        200,
        None,
        "lifted peer",
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
    assert_audited(
        &[&a, &b],
        &[
            ("POST", "/mesh/peers"),
            ("POST", "/mesh/peers/hello"),
            ("POST", "/mesh/peers/suspend"),
            ("POST", "/mesh/peers/resume"),
            ("POST", "/mesh/peers/remove"),
            ("POST", "/mesh/peers/refresh"),
        ],
    );
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

    // A's log key changes without an operator pinning it again: B keeps the
    // key it pinned, audits the change, and witnesses nothing under the new
    // one.
    let new_key = json!(new_secret);
    a.restart(
        &[("checkpoint_ed25519_key", seed("a", "another-log-key"))],
        p256_of(new_key.as_str().expect("secret")),
    );
    let r = b.operator(
        "POST",
        "/mesh/peers/refresh",
        &json!({"origin": a.origin()}),
    );
    want(&r, 200, None, "refresh after a log key change");
    assert_eq!(audits(&b, "mesh.witness.log_key_changed"), 1);

    // A's view of B survived A's restarts.
    assert_eq!(a.peer(b.origin())["status"], "active");
    want(
        &as_peer(&a, &b.key, "GET", PULL, None),
        200,
        None,
        "b pulls from restarted a",
    );
}

#[test]
fn peers_witness_each_others_logs_and_catch_a_fork_or_a_rewind() {
    let root = scratch("witness");
    let (pa, pb) = (free_port(), free_port());
    let a = Coordinator::start_with(&root.0, "a", pa, &[("b", pb)]);
    let b = Coordinator::start_with(&root.0, "b", pb, &[("a", pa)]);
    let (log_vkey, b_vkey) = published_keys(&a, &b);
    let a_log = format!("127.0.0.1:{pa}/ledger");
    assert_eq!(b_vkey, witness_vkey("b", pb));
    let trusted = vec![
        NoteKey::parse_vkey(&log_vkey).expect("log vkey"),
        NoteKey::parse_vkey(&b_vkey).expect("witness vkey"),
    ];

    // Before peering B does not witness A's log: nothing is cosigned.
    let note = sign_now(&a);
    let opened = checkpoint::open_cosigned(&note, &trusted).expect("open");
    assert!(opened.cosigners.is_empty(), "{note}");

    // Peered, each witnesses the other's ledger, and A's checkpoints come
    // back cosigned by B, the first from size 0, later ones with
    // consistency proofs.
    peer(&a, &b);
    let note = sign_now(&a);
    let opened = checkpoint::open_cosigned(&note, &trusted).expect("open");
    assert_eq!(opened.cosigners.len(), 1, "{note}");
    let r = a.operator(
        "POST",
        "/mesh/peers/suspend",
        &json!({"origin": b.origin(), "reason": "grow the log"}),
    );
    want(&r, 200, None, "suspend");
    let r = a.operator(
        "POST",
        "/mesh/peers/resume",
        &json!({"origin": b.origin(), "reason": "grow the log"}),
    );
    want(&r, 200, None, "resume");
    let note = sign_now(&a);
    let grown = checkpoint::open_cosigned(&note, &trusted).expect("open");
    assert!(grown.checkpoint.size > opened.checkpoint.size);
    assert_eq!(grown.cosigners.len(), 1, "{note}");
    let served =
        String::from_utf8(a.client.get("/ledger/checkpoint").expect("get").body).expect("utf-8");
    assert_eq!(served, note, "GET serves the cosignatures kept");
    let held = grown.checkpoint.size;

    // `edgecoder verify` counts the cosignatures of the witnesses it is given.
    let state = root.0.join("verify-state.json");
    let verify = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(edgecoder_binary());
        cmd.args([
            "verify",
            "--url",
            a.origin(),
            "--key",
            &log_vkey,
            "--origin",
            &a_log,
        ])
        .arg("--state")
        .arg(&state)
        .args(extra);
        cmd.output().expect("verify")
    };
    let out = verify(&["--witness", &b_vkey, "--min-cosignatures", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = witness_vkey("nobody", 1);
    let out = verify(&[
        "--witness",
        &b_vkey,
        "--witness",
        &other,
        "--min-cosignatures",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enough cosignatures"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A fork: another root at the size B cosigned.
    let forked = as_log("a", pa, held, [0xab; 32]);
    let r = add_checkpoint(&b, &format!("old {held}\n\n{forked}"));
    want(&r, 409, Some("checkpoint_conflict"), "fork");
    assert_eq!(audits(&b, "mesh.witness.fork"), 1);
    // A larger head without a proof from what B holds.
    let bogus = STANDARD.encode([0u8; 32]);
    let larger = as_log("a", pa, held + 5, [0xcd; 32]);
    let r = add_checkpoint(&b, &format!("old {held}\n{bogus}\n\n{larger}"));
    want(&r, 422, Some("inconsistent_checkpoint"), "inconsistent");
    assert_eq!(audits(&b, "mesh.witness.inconsistent"), 1);
    // A client that names another old size learns B's (the protocol's 409).
    let r = add_checkpoint(&b, &format!("old 1\n{bogus}\n\n{larger}"));
    assert_eq!(r.status, 409);
    assert_eq!(r.header("content-type"), Some("text/x.tlog.size"));
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{held}\n"));
    // A rewind: a smaller head than one B cosigned.
    let rewound = as_log("a", pa, 1, [0xef; 32]);
    let r = add_checkpoint(&b, &format!("old {held}\n\n{rewound}"));
    want(&r, 400, Some("invalid_request"), "rewind");
    assert_eq!(audits(&b, "mesh.witness.rewind"), 1);
    // Logs B does not witness, and signatures by keys it does not trust.
    let r = add_checkpoint(&b, &format!("old 0\n\n{}", as_log("zz", 1, 3, [1; 32])));
    want(&r, 404, Some("unknown_log"), "unknown log");
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let cp = Checkpoint {
        origin: a_log.clone(),
        size: held + 1,
        root: [2; 32],
    };
    let unsigned =
        checkpoint::sign_with(&cp, &a_log, &[NoteSigner::Ed25519(&stranger)]).expect("sign");
    let r = add_checkpoint(&b, &format!("old {held}\n\n{unsigned}"));
    want(
        &r,
        403,
        Some("checkpoint_unverified"),
        "untrusted signature",
    );
    let r = add_checkpoint(&b, "old x\n\n");
    want(&r, 400, Some("invalid_request"), "malformed");

    // None of that moved B: A's next real head is cosigned as before.
    let r = a.operator(
        "POST",
        "/mesh/peers/suspend",
        &json!({"origin": b.origin(), "reason": "grow again"}),
    );
    want(&r, 200, None, "suspend");
    let note = sign_now(&a);
    let after = checkpoint::open_cosigned(&note, &trusted).expect("open");
    assert!(after.checkpoint.size > held);
    assert_eq!(after.cosigners.len(), 1, "{note}");
}

#[test]
fn our_witness_cosigns_a_sigsum_log_and_sigsum_verifies_the_cosignature() {
    use sigsum::{Hash, PolicyBuilder, PublicKey, SigsumSignature};
    let root = scratch("sigsum");
    let w = Coordinator::start(&root.0, "w");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();

    // A one-leaf Sigsum log: a submitter's signed checksum, the log's key.
    let log_key = ed25519_dalek::SigningKey::from_bytes(&[21u8; 32]);
    let submitter = ed25519_dalek::SigningKey::from_bytes(&[22u8; 32]);
    let message = Hash::new(b"what the submitter signs");
    let checksum = Hash::new(message.as_ref());
    let leaf_sig = ed25519_dalek::Signer::sign(
        &submitter,
        &[b"sigsum.org/v1/tree-leaf\0".as_slice(), checksum.as_ref()].concat(),
    );
    let leaf_keyhash = Hash::new(submitter.verifying_key().as_bytes());
    let leaf = [
        checksum.as_ref(),
        &leaf_sig.to_bytes()[..],
        leaf_keyhash.as_ref(),
    ]
    .concat();
    let tree_root = Sha256::leaf(&leaf);
    let log_keyhash = Hash::new(log_key.verifying_key().as_bytes());
    let origin = format!("sigsum.org/v1/tree/{log_keyhash:x}");
    let head = Checkpoint {
        origin: origin.clone(),
        size: 1,
        root: tree_root,
    };
    let note =
        checkpoint::sign_with(&head, &origin, &[NoteSigner::Ed25519(&log_key)]).expect("sign");
    let log_vkey = NoteKey::Ed25519(log_key.verifying_key())
        .vkey(&origin)
        .expect("vkey");

    // The operator has our witness witness that log; it cosigns.
    let r = w.operator(
        "PUT",
        "/mesh/witness/logs",
        &json!({"origin": origin, "vkeys": [log_vkey], "reason": "witness a Sigsum log"}),
    );
    want(&r, 200, None, "witness the log");
    let r = add_checkpoint(&w, &format!("old 0\n\n{note}"));
    let line = String::from_utf8(want_text(&r)).expect("utf-8");
    let blob = STANDARD
        .decode(line.trim_end().rsplit_once(' ').expect("line").1)
        .expect("b64");
    assert_eq!(blob.len(), 4 + 8 + 64);
    let time = u64::from_be_bytes(blob[4..12].try_into().expect("8"));
    let witness_pub = {
        let id = w
            .client
            .get("/mesh/identity")
            .expect("identity")
            .json()
            .expect("json");
        let vkey = id["witness"]["vkey"].as_str().expect("vkey").to_owned();
        let raw = STANDARD
            .decode(vkey.splitn(3, '+').nth(2).expect("key"))
            .expect("b64");
        <[u8; 32]>::try_from(&raw[1..]).expect("32")
    };

    // Sigsum's verifier, with a policy that requires our witness.
    let log_sig = ed25519_dalek::Signer::sign(&log_key, head.body().as_bytes());
    let proof = format!(
        "version=2\nlog={log_keyhash:x}\nleaf={leaf_keyhash:x} {}\n\nsize=1\nroot_hash={}\nsignature={}\ncosignature={:x} {time} {}\n\nleaf_index=0\n",
        hex(&leaf_sig.to_bytes()),
        hex(&tree_root),
        hex(&log_sig.to_bytes()),
        Hash::new(witness_pub),
        hex(&blob[12..]),
    );
    let signature = SigsumSignature::from_ascii(&proof).expect("a Sigsum proof");
    let mut policy = PolicyBuilder::new();
    policy
        .add_log(PublicKey::from(log_key.verifying_key().to_bytes()), None)
        .expect("log");
    policy
        .add_witness("edgecoder".into(), PublicKey::from(witness_pub), None)
        .expect("witness");
    policy.set_quorum("edgecoder".into()).expect("quorum");
    let submitter_pub = PublicKey::from(submitter.verifying_key().to_bytes());
    sigsum::verify(
        &message,
        &signature,
        std::slice::from_ref(&submitter_pub),
        &policy.build(),
    )
    .expect("Sigsum accepts our witness's cosignature");

    // A cosignature over another head is refused by the same verifier.
    let mut bad = blob[12..].to_vec();
    bad[0] ^= 1;
    let forged = proof.replace(&hex(&blob[12..]), &hex(&bad));
    let signature = SigsumSignature::from_ascii(&forged).expect("parse");
    let mut policy = PolicyBuilder::new();
    policy
        .add_log(PublicKey::from(log_key.verifying_key().to_bytes()), None)
        .expect("log");
    policy
        .add_witness("edgecoder".into(), PublicKey::from(witness_pub), None)
        .expect("witness");
    policy.set_quorum("edgecoder".into()).expect("quorum");
    assert!(sigsum::verify(&message, &signature, &[submitter_pub], &policy.build()).is_err());
    assert_audited(
        &[&w],
        &[
            ("PUT", "/mesh/witness/logs"),
            ("POST", "/mesh/witness/add-checkpoint"),
        ],
    );
}

#[test]
fn a_ban_reaches_peers_by_their_policy_is_enforced_there_and_converges_without_its_push() {
    use edgecoder_conformance::mesh::{active, heartbeat, server_telemetry};
    let root = scratch("propagation");
    let (a, mut b, c) = three(&root.0);
    // B trusts A's bans; C reviews them (the default).
    let r = b.operator(
        "POST",
        "/mesh/peers/policy",
        &json!({"origin": a.origin(), "ban_policy": "trust", "reason": "A runs our abuse desk"}),
    );
    assert_eq!(want(&r, 200, None, "policy")["ban_policy"], "trust");

    // A node active at B; A bans its key.
    let (_, node) = active(&b.ctx(), "fed-node").expect("node at b");
    want(
        &heartbeat(&b.ctx(), &node, &server_telemetry()).expect("hb"),
        200,
        None,
        "before",
    );
    ban(&a, "add", &node.kid);
    eventually(20, "b applies a's ban", || {
        has_entry(&b, "add", &node.kid, a.origin()).then_some(())
    });
    let r = heartbeat(&b.ctx(), &node, &server_telemetry()).expect("hb");
    want(&r, 403, Some("node_blacklisted"), "enforced at b");
    // Applied there as B's own logged entry naming A and A's log index.
    let entry = blacklist(&b)
        .into_iter()
        .find(|e| e["subject"] == node.kid.as_str())
        .expect("entry");
    assert_eq!(entry["actor"], format!("peer:{}", a.origin()));
    let (kind, logged) =
        ledger_entry(&b.ctx(), entry["ledger_index"].as_u64().expect("index")).expect("entry");
    assert_eq!(kind, "edgecoder.dev/blacklist/v1");
    assert_eq!(logged["origin"], a.origin());
    assert!(logged["source_index"].as_u64().is_some());

    // C queued it for its operator, who accepts it.
    let review = eventually(20, "c queues a's ban", || {
        let r = c
            .ctx()
            .send(
                "GET",
                "/mesh/blacklist/reviews?pending=true",
                Some(&c.admin),
                None,
                &[],
            )
            .expect("reviews");
        want(&r, 200, None, "reviews")["reviews"]
            .as_array()
            .and_then(|v| {
                v.iter()
                    .find(|x| x["entry"]["subject"] == node.kid.as_str())
                    .cloned()
            })
    });
    assert!(!has_entry(&c, "add", &node.kid, a.origin()));
    let id = review["id"].as_i64().expect("id");
    let r = c.operator(
        "POST",
        &format!("/mesh/blacklist/reviews/{id}/accept"),
        &json!({}),
    );
    assert_eq!(want(&r, 200, None, "accept")["outcome"], "applied");
    assert!(has_entry(&c, "add", &node.kid, a.origin()));

    // A's ban on a node id or an owner is a name on A's side: B, though it
    // trusts A, does not apply it to whatever goes by that name here.
    let r = a.operator(
        "POST",
        "/mesh/blacklist",
        &json!({"subject_kind": "node_id", "subject": node.id, "reason_code": "abuse", "reason": "a name only"}),
    );
    want(&r, 201, None, "a node-id ban at a");
    // A lifts: B follows (it trusts A, and the ban in force is A's).
    ban(&a, "lift", &node.kid);
    eventually(20, "b applies a's lift", || {
        has_entry(&b, "lift", &node.kid, a.origin()).then_some(())
    });
    want(
        &heartbeat(&b.ctx(), &node, &server_telemetry()).expect("hb"),
        200,
        None,
        "lifted at b",
    );

    // B is down while A bans another key: the push is lost; B's state
    // survives its restart and its next pull brings the ban.
    let other = "0123456789abcdef";
    let port = b.origin().rsplit(':').next().expect("port").to_owned();
    b.server.terminate(Duration::from_secs(10));
    ban(&a, "add", other);
    let pairs: Vec<(&str, &str)> = b
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b.server = start_native_at(
        &edgecoder_binary(),
        &b.dir,
        &pairs,
        port.parse().expect("port"),
    );
    eventually(20, "b pulls what it missed", || {
        has_entry(&b, "add", other, a.origin()).then_some(())
    });
    // What B applied before its restart is still there.
    assert!(has_entry(&b, "lift", &node.kid, a.origin()));

    // C's operator turns the other ban down.
    let review = eventually(20, "c queues a's other ban", || {
        let r = c
            .ctx()
            .send(
                "GET",
                "/mesh/blacklist/reviews?pending=true",
                Some(&c.admin),
                None,
                &[],
            )
            .expect("reviews");
        want(&r, 200, None, "reviews")["reviews"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["entry"]["subject"] == other).cloned())
    });
    let id = review["id"].as_i64().expect("id");
    let r = c.operator(
        "POST",
        &format!("/mesh/blacklist/reviews/{id}/reject"),
        &json!({}),
    );
    want(&r, 200, None, "reject");
    assert!(!has_entry(&c, "add", other, a.origin()));
    assert_audited(
        &[&a, &b, &c],
        &[
            ("POST", "/mesh/peers/policy"),
            ("POST", "/mesh/blacklist/reviews/{id}/accept"),
            ("POST", "/mesh/blacklist/reviews/{id}/reject"),
        ],
    );
}

#[test]
fn gossip_is_refused_unsigned_forged_unknown_expired_replayed_misattributed_or_unlogged() {
    use edgecoder_proto::federation::{GOSSIP_BLACKLIST_V1, Gossip};
    let root = scratch("gossip");
    let (a, b, c) = three(&root.0);
    let r = b.operator(
        "POST",
        "/mesh/peers/policy",
        &json!({"origin": a.origin(), "ban_policy": "trust", "reason": "trust a"}),
    );
    want(&r, 200, None, "policy");
    let now = edgecoder_conformance::identity::unix_now();
    let gossip = |origin: &str, key: &SigningKey, created: i64, ttl: i64, index: u64| Gossip {
        origin: origin.to_owned(),
        key_id: key_id(key.verifying_key()),
        created,
        ttl,
        ledger_index: index,
        payload: STANDARD.encode(
            json!({"action": "add", "subject_kind": "node_key", "subject": "fedcba9876543210",
                   "reason_code": "framed", "reason": "not in any log", "origin": "local"})
            .to_string(),
        ),
    };
    let deliver = |from: &SigningKey, env: &Json| {
        as_peer(&b, from, "POST", "/mesh/federation/gossip", Some(env))
    };
    let env_json = |e: &edgecoder_proto::model::Envelope| serde_json::to_value(e).expect("json");

    // A well-formed envelope from A announcing a ban that is not in A's
    // log: accepted as a claim, never applied (the pull finds no such entry).
    let claim = env_json(&gossip(a.origin(), &a.key, now, 60, 1_000_000).seal(&a.key));
    want(&deliver(&a.key, &claim), 202, None, "a claim");
    // The same envelope again.
    want(
        &deliver(&a.key, &claim),
        409,
        Some("envelope_replayed"),
        "replayed",
    );
    // Unsigned, and signed by another key than A's.
    let mut unsigned = claim.clone();
    unsigned["signatures"] = json!([]);
    want(
        &deliver(&a.key, &unsigned),
        403,
        Some("envelope_signature_invalid"),
        "unsigned",
    );
    let forged = env_json(&gossip(a.origin(), &a.key, now, 60, 1).seal(&c.key));
    want(
        &deliver(&a.key, &forged),
        403,
        Some("envelope_signature_invalid"),
        "forged",
    );
    // An unknown payload type or version is refused, not ignored.
    let mut unknown = env_json(&gossip(a.origin(), &a.key, now, 60, 2).seal(&a.key));
    unknown["payloadType"] = json!(GOSSIP_BLACKLIST_V1.replace("v1", "v2"));
    want(
        &deliver(&a.key, &unknown),
        422,
        Some("unknown_payload_type"),
        "unknown type",
    );
    // Past its TTL, or asking for too long a one.
    let expired = env_json(&gossip(a.origin(), &a.key, now - 120, 60, 3).seal(&a.key));
    want(
        &deliver(&a.key, &expired),
        422,
        Some("envelope_expired"),
        "expired",
    );
    let long = env_json(&gossip(a.origin(), &a.key, now, 86_400, 4).seal(&a.key));
    want(
        &deliver(&a.key, &long),
        422,
        Some("envelope_expired"),
        "ttl above the cap",
    );
    // A speaking for C (framing): refused even though A is a peer.
    let framed = env_json(&gossip(c.origin(), &a.key, now, 60, 5).seal(&a.key));
    want(
        &deliver(&a.key, &framed),
        403,
        Some("envelope_origin_mismatch"),
        "framing",
    );
    // Strangers and unsigned requests.
    let stranger = SigningKey::from_slice(&[77u8; 32]).expect("key");
    want(
        &deliver(&stranger, &claim),
        401,
        Some("unknown_peer"),
        "stranger",
    );
    let r = b
        .client
        .send(
            "POST",
            "/mesh/federation/gossip",
            Some("application/json"),
            claim.to_string().as_bytes(),
        )
        .expect("post");
    want(&r, 401, Some("mesh_unauthorized"), "unsigned request");

    // After B's pulls of A, the claimed ban is nowhere.
    let r = b
        .client
        .send("POST", "/mesh/federation/tick", None, b"")
        .expect("tick");
    want(&r, 200, None, "tick");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !blacklist(&b)
            .iter()
            .any(|e| e["subject"] == "fedcba9876543210")
    );
    assert_eq!(audits(&b, "mesh.federation.envelope_refused"), 6);
    // An operator's tick is on record whether or not a pull was due (an
    // anonymous one only when it pulled something).
    let r = b.operator("POST", "/mesh/federation/tick", &json!({}));
    want(&r, 200, None, "an operator's tick");
    assert_audited(
        &[&a, &b, &c],
        &[
            ("POST", "/mesh/federation/gossip"),
            ("POST", "/mesh/federation/tick"),
        ],
    );
}

#[test]
fn an_epoch_close_is_final_once_a_peer_has_recomputed_it_from_the_log_and_signed_it() {
    use edgecoder_conformance::economy::{close_after_this_epoch, completed_task};
    let root = scratch("epochs");
    let (pa, pb) = (free_port(), free_port());
    // A needs two signatures on each close: its own and its peer's.
    let a = Coordinator::start_bin(
        &edgecoder_binary(),
        &root.0,
        "a",
        pa,
        &[("b", pb)],
        &[("economy_close_quorum", "2")],
    );
    let b = Coordinator::start_with(&root.0, "b", pb, &[("a", pa)]);
    peer(&a, &b);
    let x = a.ctx();
    let (owner, index) = completed_task(&x, "fed-epoch").expect("a task at a");
    close_after_this_epoch(&x).expect("close");
    let epoch = {
        let r = x
            .send("GET", "/mesh/credits/epochs", None, None, &[])
            .expect("epochs");
        let list = want(&r, 200, None, "epochs");
        list["epochs"]
            .as_array()
            .and_then(|v| {
                v.iter().find(|e| {
                    let (from, through) = (
                        e["from_index"].as_u64().unwrap_or(0),
                        e["through_index"].as_u64().unwrap_or(0),
                    );
                    (from..through).contains(&index)
                })
            })
            .and_then(|e| e["epoch"].as_u64())
            .expect("the epoch holding the completion")
    };
    // B pulls A's log, recomputes the close from the completions it proved
    // there, and signs it: A's close becomes final.
    let e = eventually(30, "b's signature makes a's close final", || {
        let r = x
            .send(
                "GET",
                &format!("/mesh/credits/epochs/{epoch}"),
                None,
                None,
                &[],
            )
            .expect("epoch");
        let e = want(&r, 200, None, "epoch");
        (e["state"] == "final").then_some(e)
    });
    let signers: Vec<(String, String)> = e["close"]["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .map(|s| {
            (
                s["origin"].as_str().unwrap_or_default().to_owned(),
                s["keyid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        signers.contains(&(b.origin().to_owned(), b.kid())),
        "{signers:?}"
    );
    assert_eq!(signers.len(), 2, "{signers:?}");
    // Final: the owner's issuance is credited, nothing is pending.
    let r = x
        .send(
            "GET",
            &format!("/mesh/credits/accounts/user:{}", owner.id),
            Some(&owner.access),
            None,
            &[],
        )
        .expect("balance");
    let balance = want(&r, 200, None, "balance");
    assert_eq!(balance["pending"], 0, "{balance}");
    assert_eq!(audits(&a, "mesh.epoch.cosign"), 1);
    // A signature that does not verify with the peer's pinned key, or from a
    // coordinator that is no peer, is refused.
    let forged = json!({"origin": b.origin(), "keyid": b.kid(), "sig": STANDARD.encode([7u8; 70])});
    let r = x
        .send(
            "POST",
            &format!("/mesh/credits/epochs/{epoch}/signatures"),
            None,
            Some(&forged),
            &[],
        )
        .expect("forged");
    want(&r, 401, Some("signature_invalid"), "a forged signature");
    let stranger = json!({"origin": "http://127.0.0.1:9", "keyid": b.kid(), "sig": "AAAA"});
    let r = x
        .send(
            "POST",
            &format!("/mesh/credits/epochs/{epoch}/signatures"),
            None,
            Some(&stranger),
            &[],
        )
        .expect("stranger");
    want(&r, 401, Some("unknown_peer"), "no peer");
    // B's genuine signature, delivered again (by anyone: it proves itself),
    // changes nothing and is on record like the first delivery.
    let genuine = e["close"]["signatures"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["origin"] == b.origin()).cloned())
        .expect("b's signature");
    let r = x
        .send(
            "POST",
            &format!("/mesh/credits/epochs/{epoch}/signatures"),
            None,
            Some(&json!({"origin": b.origin(), "keyid": genuine["keyid"], "sig": genuine["sig"]})),
            &[],
        )
        .expect("again");
    want(&r, 200, None, "the genuine signature again");
    assert_audited(
        &[&a],
        &[("POST", "/mesh/credits/epochs/{epoch}/signatures")],
    );
}
