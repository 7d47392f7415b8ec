//! The model supply chain at the coordinator, checked on every runtime:
//! source policies (step-up, ledger, audit), releases checked against them
//! on the way in, staged rollouts (sticky canary, gates that advance, halt
//! and roll back, every transition in the ledger), and tasks only for the
//! versions a host is assigned and has verified.
//!
//! Out of scope: the GPU host's resolver (`tests/tests/model_supply.rs`
//! runs it against files on disk and over https).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_proto::keys::key_id;
use edgecoder_proto::model::{ManifestFile, ModelManifest, sign};
use p256::ecdsa::SigningKey;
use serde_json::{Value as Json, json};

use crate::expect_problem;
use crate::identity::Ctx;
use crate::mesh::{Node, heartbeat, server_telemetry, signed};

/// The origin in-process hosts' releases name (never fetched by the suite).
pub const SUITE_ORIGIN: &str = "file:///srv/edgecoder-suite/models";

fn want(r: &crate::Reply, status: u16, what: &str) -> Result<Json, String> {
    if r.status != status {
        return Err(format!(
            "{what}: {} want {status}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    if r.body.is_empty() {
        return Ok(Json::Null);
    }
    r.json()
}

/// A family name unique to this run.
pub fn family(x: &Ctx, tag: &str) -> String {
    let email = x.email(tag);
    let local: String = email
        .split('@')
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    local.chars().take(40).collect()
}

/// A publisher key made from `seed`.
pub fn publisher(seed: &str) -> SigningKey {
    let h = blake3::hash(format!("edgecoder-suite-publisher/{seed}").as_bytes());
    SigningKey::from_slice(h.as_bytes()).expect("a 32-byte scalar")
}

/// SEC1 point, base64url, as policies list keys.
pub fn point(k: &SigningKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(k.verifying_key().to_encoded_point(false).as_bytes())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// A manifest of `model` over `files`, by `publisher`, valid for a day.
pub fn manifest(model: &str, files: Vec<ManifestFile>, publisher: &SigningKey) -> ModelManifest {
    let (name, version) = model.split_once('@').unwrap_or((model, "1"));
    ModelManifest {
        name: name.to_owned(),
        version: version.to_owned(),
        format: "onnx".into(),
        files,
        created_at: now_secs() - 60,
        expires_at: now_secs() + 86_400,
        publisher: key_id(publisher.verifying_key()),
    }
}

/// One made-up file (the suite's hosts never fetch it).
pub fn fake_files(model: &str) -> Vec<ManifestFile> {
    vec![ManifestFile {
        path: "model.onnx".into(),
        size: 1024,
        digest: format!("blake3:{}", blake3::hash(model.as_bytes()).to_hex()),
    }]
}

/// `PUT /mesh/models/policies/{family}`.
pub fn put_policy(
    x: &Ctx,
    bearer: &str,
    family: &str,
    body: &Json,
) -> Result<crate::Reply, String> {
    x.send(
        "PUT",
        &format!("/mesh/models/policies/{family}"),
        Some(bearer),
        Some(body),
        &[],
    )
}

/// A policy body: these keys, this threshold, the suite's origin.
pub fn policy_body(keys: &[&SigningKey], threshold: u32, origins: &[&str]) -> Json {
    json!({
        "keys": keys.iter().map(|k| point(k)).collect::<Vec<_>>(),
        "threshold": threshold,
        "origins": origins,
        "max_bytes": 1 << 30,
        "allowed": true,
        "reason": "suite",
    })
}

/// `POST /mesh/models/releases`.
pub fn post_release(
    x: &Ctx,
    bearer: &str,
    m: &ModelManifest,
    keys: &[&SigningKey],
    source: &str,
) -> Result<crate::Reply, String> {
    let envelope = serde_json::to_value(sign(m, keys)).map_err(|e| e.to_string())?;
    x.send(
        "POST",
        "/mesh/models/releases",
        Some(bearer),
        Some(&json!({"envelope": envelope, "source": source})),
        &[],
    )
}

/// A rollout's stages: one 100 % stage.
pub fn all_at_once() -> Json {
    json!([{"name": "all", "percent": 100}])
}

/// Gates that pass as soon as `verified` hosts verified the release.
pub fn quick_gates(verified: u32) -> Json {
    json!({"min_stage_secs": 0, "min_verified_hosts": verified, "min_requests": 0})
}

/// Starts a rollout; its JSON.
pub fn start(
    x: &Ctx,
    bearer: &str,
    model: &str,
    stages: &Json,
    gates: &Json,
) -> Result<Json, String> {
    want(
        &x.send(
            "POST",
            "/mesh/models/rollouts",
            Some(bearer),
            Some(&json!({"model": model, "stages": stages, "gates": gates, "reason": "suite"})),
            &[],
        )?,
        201,
        &format!("start rollout of {model}"),
    )
}

/// Reads (and so judges) a rollout.
pub fn read(x: &Ctx, bearer: &str, id: &str) -> Result<Json, String> {
    want(
        &x.send(
            "GET",
            &format!("/mesh/models/rollouts/{id}"),
            Some(bearer),
            None,
            &[],
        )?,
        200,
        "read rollout",
    )
}

/// Publishes `model` as the family's current version: a policy for the
/// family (if none), a signed release at the suite's origin, and a rollout
/// to every host at once, read until complete. Its release digest.
pub fn publish(x: &Ctx, model: &str) -> Result<String, String> {
    let (_, admin) = x.admin()?;
    let fam = model.split('@').next().unwrap_or(model);
    let key = publisher(fam);
    let r = x.send("GET", "/mesh/models/policies", Some(&admin), None, &[])?;
    let listed = want(&r, 200, "policies")?;
    let known = listed["policies"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["family"] == fam));
    if !known {
        want(
            &put_policy(x, &admin, fam, &policy_body(&[&key], 1, &[SUITE_ORIGIN]))?,
            200,
            "policy",
        )?;
    }
    let m = manifest(model, fake_files(model), &key);
    publish_release(x, &admin, &m, &[&key], &format!("{SUITE_ORIGIN}/{model}"))
}

/// Registers a release (or finds it registered by an earlier run against
/// the same database) and rolls it out to every host at once. Its digest.
pub fn publish_release(
    x: &Ctx,
    admin: &str,
    m: &ModelManifest,
    keys: &[&SigningKey],
    source: &str,
) -> Result<String, String> {
    let model = m.model();
    let r = post_release(x, admin, m, keys, source)?;
    let digest = if r.status == 409 {
        let listed = want(
            &x.send(
                "GET",
                &format!("/mesh/models/releases?family={}", m.name),
                Some(admin),
                None,
                &[],
            )?,
            200,
            "releases",
        )?;
        listed["releases"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["model"] == model.as_str()))
            .and_then(|r| r["digest"].as_str())
            .unwrap_or_default()
            .to_owned()
    } else {
        want(&r, 201, "release")?["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let r = x.send(
        "POST",
        "/mesh/models/rollouts",
        Some(admin),
        Some(&json!({"model": model, "stages": all_at_once(), "gates": quick_gates(0), "reason": "suite"})),
        &[],
    )?;
    if r.status == 409 {
        // Already the current version (an earlier run).
        return Ok(digest);
    }
    let started = want(&r, 201, &format!("start rollout of {model}"))?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let done = read(x, admin, &id)?;
    if done["status"] != "complete" {
        return Err(format!("publishing {model}: {done}"));
    }
    Ok(digest)
}

/// A GPU host's telemetry reporting `models` verified (by digest) and
/// serving them, with `requests`/`errors` on each.
pub fn verified_telemetry(models: &[(&str, &str)], requests: u64, errors: u64) -> Json {
    let mut t = server_telemetry();
    t["models"] = json!(models.iter().map(|(m, _)| *m).collect::<Vec<_>>());
    t["accelerator"] = json!({"name": "suite cpu", "memory_mb": 4096, "provider": "cpu"});
    t["model_status"] = json!(
        models
            .iter()
            .map(
                |(m, d)| json!({"model": m, "release_digest": d, "state": "verified",
                             "requests": requests, "errors": errors, "p99_ms": 16})
            )
            .collect::<Vec<_>>()
    );
    t
}

/// A GPU host's telemetry reporting that it refused `model` with `code`.
pub fn refused_telemetry(model: &str, digest: &str, code: &str) -> Json {
    let mut t = server_telemetry();
    t["accelerator"] = json!({"name": "suite cpu", "memory_mb": 4096, "provider": "cpu"});
    t["model_status"] =
        json!([{"model": model, "release_digest": digest, "state": "failed", "failure": code}]);
    t
}

/// The assigned model versions in a heartbeat's answer.
fn assigned(hb: &Json) -> Vec<String> {
    hb["models"]["assignments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["model"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn beat(x: &Ctx, node: &Node, t: &Json) -> Result<Json, String> {
    want(&heartbeat(x, node, t)?, 200, "heartbeat")
}

/// An approved GPU host declaring `families`.
pub fn gpu_host(x: &Ctx, tag: &str, families: &[&str]) -> Result<Node, String> {
    let owner = x.account(tag, true)?;
    let node = Node::new(x, tag);
    let r = x.send(
        "POST",
        "/auth/nodes/enroll",
        Some(&owner.access),
        Some(&json!({"node_id": node.id, "kind": "gpu-host"})),
        &[],
    )?;
    let token = want(&r, 201, "enroll")?["enrollment_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = json!({
        "enrollment_token": token, "node_id": node.id, "kind": "gpu-host",
        "public_key": node.public_key(), "os": "linux", "version": "suite",
        "capabilities": {"sandbox": "wasmtime", "cpu_cores": 8, "memory_mb": 65536,
                         "gpu": {"name": "suite", "memory_mb": 1}, "models": families},
    });
    want(
        &signed(
            x,
            &node,
            "POST",
            "/mesh/nodes/register",
            Some(&body),
            &Default::default(),
        )?,
        201,
        "register",
    )?;
    let (_, admin) = x.admin()?;
    want(
        &x.send(
            "POST",
            &format!("/mesh/nodes/{}/approve", node.id),
            Some(&admin),
            Some(&json!({"reason": "suite"})),
            &[],
        )?,
        200,
        "approve",
    )?;
    Ok(node)
}

type Check = fn(&Ctx) -> Result<(), String>;

/// Every model supply check, by name.
pub fn checks() -> Vec<(&'static str, Check)> {
    vec![
        (
            "model_policy_changes_need_an_operator_with_step_up_and_are_logged",
            model_policy_changes_need_an_operator_with_step_up_and_are_logged,
        ),
        (
            "releases_are_refused_unless_the_family_policy_accepts_them",
            releases_are_refused_unless_the_family_policy_accepts_them,
        ),
        (
            "rollout_advances_through_its_stages_on_healthy_gates",
            rollout_advances_through_its_stages_on_healthy_gates,
        ),
        (
            "a_failing_gate_halts_and_rolls_back_and_only_assigned_versions_get_tasks",
            a_failing_gate_halts_and_rolls_back_and_only_assigned_versions_get_tasks,
        ),
    ]
}

pub use crate::mesh::ledger_entry;

fn model_policy_changes_need_an_operator_with_step_up_and_are_logged(
    x: &Ctx,
) -> Result<(), String> {
    let fam = family(x, "pol");
    let key = publisher(&fam);
    let body = policy_body(&[&key], 1, &["https://models.example.com/edgecoder"]);
    // A signed-in user who does not operate the coordinator.
    let user = x.account("pol-user", true)?;
    expect_problem(&put_policy(x, &user.access, &fam, &body)?, 403, "forbidden")
        .map_err(|e| format!("a user's policy change: {e}"))?;
    expect_problem(
        &x.send(
            "PUT",
            &format!("/mesh/models/policies/{fam}"),
            None,
            Some(&body),
            &[],
        )?,
        401,
        "mesh_unauthorized",
    )
    .map_err(|e| format!("no token: {e}"))?;
    let (_, admin) = x.admin()?;
    let bad = |mut b: Json, k: &str, v: Json| {
        b[k] = v;
        b
    };
    for (what, b, status, code) in [
        (
            "threshold above keys",
            bad(body.clone(), "threshold", json!(2)),
            400,
            "invalid_request",
        ),
        (
            "threshold 0",
            bad(body.clone(), "threshold", json!(0)),
            400,
            "invalid_request",
        ),
        (
            "no keys",
            bad(body.clone(), "keys", json!([])),
            400,
            "invalid_request",
        ),
        (
            "a bad key",
            bad(body.clone(), "keys", json!(["AAAA"])),
            400,
            "invalid_public_key",
        ),
        (
            "an http origin",
            bad(
                body.clone(),
                "origins",
                json!(["http://models.example.com"]),
            ),
            422,
            "source_not_allowed",
        ),
        (
            "no reason",
            bad(body.clone(), "reason", Json::Null),
            400,
            "invalid_request",
        ),
        (
            "an unknown field",
            bad(body.clone(), "url_prefix", json!("https://")),
            400,
            "invalid_request",
        ),
    ] {
        expect_problem(&put_policy(x, &admin, &fam, &b)?, status, code)
            .map_err(|e| format!("{what}: {e}"))?;
    }
    expect_problem(
        &put_policy(x, &admin, "Bad..Family", &body)?,
        400,
        "invalid_request",
    )
    .map_err(|e| format!("a bad family name: {e}"))?;
    let v = want(&put_policy(x, &admin, &fam, &body)?, 200, "policy")?;
    let index = v["ledger_index"].as_u64().ok_or("no ledger index")?;
    let version = v["policy"]["version"].as_u64().ok_or("no version")?;
    let (kind, payload) = ledger_entry(x, index)?;
    if kind != "edgecoder.dev/model-policy/v1"
        || payload["family"] != fam.as_str()
        || payload["reason"] != "suite"
        || !payload["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("user:"))
        || payload["key_ids"] != json!([key_id(key.verifying_key())])
        || payload["version"] != version
    {
        return Err(format!("ledger entry {kind} {payload}"));
    }
    // A second change gets a higher version, and names the one it replaced.
    let v2 = want(
        &put_policy(x, &admin, &fam, &bad(body.clone(), "allowed", json!(false)))?,
        200,
        "second change",
    )?;
    let (_, p2) = ledger_entry(x, v2["ledger_index"].as_u64().ok_or("no index")?)?;
    if p2["previous_version"] != version
        || p2["version"].as_u64() <= Some(version)
        || p2["allowed"] != false
    {
        return Err(format!("second entry {p2}"));
    }
    let listed = want(
        &x.send("GET", "/mesh/models/policies", Some(&admin), None, &[])?,
        200,
        "list",
    )?;
    let mine = listed["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["family"] == fam.as_str()).cloned())
        .ok_or("policy not listed")?;
    if mine["allowed"] != false || mine["updated_by"] != payload["actor"] {
        return Err(format!("listed policy {mine}"));
    }
    // A key as `edgecoder keygen --public` prints it (base64 SPKI) is the
    // same key, stored as its point.
    let spki = {
        use p256::pkcs8::EncodePublicKey as _;
        let der = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| e.to_string())?;
        STANDARD.encode(der.as_bytes())
    };
    let v3 = want(
        &put_policy(x, &admin, &fam, &bad(body.clone(), "keys", json!([spki])))?,
        200,
        "an SPKI key",
    )?;
    if v3["policy"]["keys"] != json!([point(&key)]) {
        return Err(format!("an SPKI key is stored as its point: {v3}"));
    }
    expect_problem(
        &x.send(
            "GET",
            "/mesh/models/policies",
            Some(&user.access),
            None,
            &[],
        )?,
        403,
        "forbidden",
    )
    .map_err(|e| format!("a user reading policies: {e}"))?;
    let audit = want(
        &x.send(
            "GET",
            "/mesh/audit?action=mesh.model.policy",
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "audit",
    )?;
    let found = audit["events"].as_array().is_some_and(|e| {
        e.iter()
            .any(|e| e["target"] == fam.as_str() && e["outcome"] == "success")
    });
    if !found {
        return Err(format!("no audit event for {fam}: {audit}"));
    }
    Ok(())
}

fn releases_are_refused_unless_the_family_policy_accepts_them(x: &Ctx) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    let fam = family(x, "rel");
    let (a, b, stranger) = (
        publisher(&format!("{fam}-a")),
        publisher(&format!("{fam}-b")),
        publisher(&format!("{fam}-x")),
    );
    let origin = "https://models.example.com/edgecoder";
    want(
        &put_policy(x, &admin, &fam, &policy_body(&[&a, &b], 2, &[origin]))?,
        200,
        "policy",
    )?;
    let model = format!("{fam}@1");
    let source = format!("{origin}/{model}");
    let m = manifest(&model, fake_files(&model), &a);
    let cases: Vec<(&str, crate::Reply, u16, &str)> = vec![
        (
            "signed by a key the policy does not list",
            post_release(
                x,
                &admin,
                &manifest(&model, fake_files(&model), &stranger),
                &[&stranger],
                &source,
            )?,
            422,
            "signature_invalid",
        ),
        (
            "one signature where two are required",
            post_release(x, &admin, &m, &[&a], &source)?,
            422,
            "signature_invalid",
        ),
        (
            "expired",
            post_release(
                x,
                &admin,
                &ModelManifest {
                    created_at: now_secs() - 7200,
                    expires_at: now_secs() - 3600,
                    ..m.clone()
                },
                &[&a, &b],
                &source,
            )?,
            422,
            "manifest_expired",
        ),
        (
            "an origin the policy does not list",
            post_release(
                x,
                &admin,
                &m,
                &[&a, &b],
                &format!("https://mirror.example.net/{model}"),
            )?,
            422,
            "source_not_allowed",
        ),
        (
            "an http origin",
            post_release(
                x,
                &admin,
                &m,
                &[&a, &b],
                &format!("http://models.example.com/edgecoder/{model}"),
            )?,
            422,
            "source_not_allowed",
        ),
        (
            "a path that climbs out of the origin",
            post_release(
                x,
                &admin,
                &m,
                &[&a, &b],
                &format!("{origin}/../other/{model}"),
            )?,
            422,
            "source_not_allowed",
        ),
        (
            "a family without a policy",
            post_release(
                x,
                &admin,
                &manifest(&format!("{fam}-none@1"), fake_files("x"), &a),
                &[&a, &b],
                &source,
            )?,
            404,
            "model_family_unknown",
        ),
        (
            "larger than the policy allows",
            post_release(
                x,
                &admin,
                &manifest(
                    &model,
                    vec![ManifestFile {
                        path: "model.onnx".into(),
                        size: 2 << 30,
                        digest: format!("blake3:{}", "0".repeat(64)),
                    }],
                    &a,
                ),
                &[&a, &b],
                &source,
            )?,
            422,
            "model_not_approved",
        ),
    ];
    for (what, r, status, code) in cases {
        expect_problem(&r, status, code).map_err(|e| format!("{what}: {e}"))?;
    }
    // A payload swapped under valid signatures.
    let mut env = serde_json::to_value(sign(&m, &[&a, &b])).map_err(|e| e.to_string())?;
    let other = ModelManifest {
        version: "2".into(),
        ..m.clone()
    };
    env["payload"] = json!(STANDARD.encode(other.canonical()));
    expect_problem(
        &x.send(
            "POST",
            "/mesh/models/releases",
            Some(&admin),
            Some(&json!({"envelope": env, "source": source})),
            &[],
        )?,
        422,
        "signature_invalid",
    )
    .map_err(|e| format!("a swapped payload: {e}"))?;
    // Another family's release signed by this family's keys is not this
    // family's: its own policy (here: none) decides.
    let user = x.account("rel-user", true)?;
    expect_problem(
        &post_release(x, &user.access, &m, &[&a, &b], &source)?,
        403,
        "forbidden",
    )
    .map_err(|e| format!("a user registering a release: {e}"))?;
    let v = want(
        &post_release(x, &admin, &m, &[&a, &b], &source)?,
        201,
        "a good release",
    )?;
    if v["model"] != model.as_str() || v["signers"].as_array().map(Vec::len) != Some(2) {
        return Err(format!("release {v}"));
    }
    // The registration is on the record: identity, signers, files, source.
    let (kind, payload) = ledger_entry(x, v["ledger_index"].as_u64().ok_or("no ledger index")?)?;
    if kind != "edgecoder.dev/model-release/v1"
        || payload["digest"] != v["digest"]
        || payload["source"] != source.as_str()
        || payload["files"] != json!(m.files)
    {
        return Err(format!("release entry {kind} {payload}"));
    }
    expect_problem(
        &post_release(x, &admin, &m, &[&a, &b], &source)?,
        409,
        "release_exists",
    )
    .map_err(|e| format!("registered twice: {e}"))?;
    // A family that is not allowed takes no release at all.
    let mut off = policy_body(&[&a], 1, &[origin]);
    off["allowed"] = json!(false);
    let fam2 = family(x, "rel-off");
    want(
        &put_policy(x, &admin, &fam2, &off)?,
        200,
        "disallowed policy",
    )?;
    let m2 = manifest(&format!("{fam2}@1"), fake_files("y"), &a);
    expect_problem(
        &post_release(x, &admin, &m2, &[&a], &format!("{origin}/{fam2}"))?,
        422,
        "model_not_approved",
    )
    .map_err(|e| format!("a disallowed family: {e}"))?;
    let listed = want(
        &x.send(
            "GET",
            &format!("/mesh/models/releases?family={fam}"),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "releases",
    )?;
    if listed["releases"].as_array().map(Vec::len) != Some(1) {
        return Err(format!("releases {listed}"));
    }
    Ok(())
}

fn rollout_advances_through_its_stages_on_healthy_gates(x: &Ctx) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    let fam = family(x, "roll");
    let v1 = format!("{fam}@1");
    let d1 = publish(x, &v1)?;
    let hosts: Vec<Node> = (0..3)
        .map(|i| gpu_host(x, &format!("roll-h{i}"), &[&fam]))
        .collect::<Result<_, _>>()?;
    for h in &hosts {
        let hb = beat(x, h, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
        if assigned(&hb) != [v1.clone()] {
            return Err(format!("before the rollout: {hb}"));
        }
        if hb["models"]["assignments"][0]["policy"]["family"] != fam.as_str() {
            return Err(format!("the policy rides with the assignment: {hb}"));
        }
    }
    // A host approved for exactly v1 (a pin): no rollout moves it.
    let pinned = gpu_host(x, "roll-pinned", &[&v1])?;
    let hb = beat(x, &pinned, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
    if assigned(&hb) != [v1.clone()] {
        return Err(format!("a host pinned to the current v1: {hb}"));
    }
    let key = publisher(&fam);
    let v2 = format!("{fam}@2");
    let rel = want(
        &post_release(
            x,
            &admin,
            &manifest(&v2, fake_files(&v2), &key),
            &[&key],
            &format!("{SUITE_ORIGIN}/{v2}"),
        )?,
        201,
        "v2",
    )?;
    let d2 = rel["digest"].as_str().unwrap_or_default().to_owned();
    let stages = json!([{"name": "canary", "hosts": 1}, {"name": "half", "percent": 50}, {"name": "all", "percent": 100}]);
    let r = start(x, &admin, &v2, &stages, &quick_gates(1))?;
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    let canary: Vec<String> =
        serde_json::from_value(r["canary"].clone()).map_err(|e| e.to_string())?;
    if canary.len() != 1 || r["previous"] != v1.as_str() || r["history"][0]["action"] != "start" {
        return Err(format!("started {r}"));
    }
    expect_problem(
        &x.send(
            "POST",
            "/mesh/models/rollouts",
            Some(&admin),
            Some(&json!({"model": v2, "stages": stages, "reason": "again"})),
            &[],
        )?,
        409,
        "rollout_in_progress",
    )
    .map_err(|e| format!("a second rollout of the family: {e}"))?;
    // Canary: exactly the pinned host is told to serve v2, and stays so
    // across heartbeats (sticky); the others keep v1.
    for _ in 0..2 {
        for h in &hosts {
            let hb = beat(x, h, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
            let want_model = if canary.contains(&h.id) { &v2 } else { &v1 };
            if assigned(&hb) != [want_model.clone()] {
                return Err(format!("canary stage, {}: {hb}", h.id));
            }
        }
    }
    // Nobody verified v2 yet: the gate waits.
    let state = read(x, &admin, &id)?;
    if state["stage"] != 0 || state["verdict"]["gate"] != "wait" {
        return Err(format!("unverified canary {state}"));
    }
    // An operator cannot push past the verified-hosts gate either.
    expect_problem(
        &x.send(
            "POST",
            &format!("/mesh/models/rollouts/{id}/advance"),
            Some(&admin),
            Some(&json!({"reason": "hurry"})),
            &[],
        )?,
        409,
        "gate_not_met",
    )
    .map_err(|e| format!("advancing an unverified canary: {e}"))?;
    // The canary verifies v2: its heartbeat judges the gate and the rollout
    // moves on; then every stage until all hosts are on v2.
    for round in 0..6 {
        for h in &hosts {
            let hb = beat(x, h, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
            let on = assigned(&hb);
            if on == [v2.clone()] {
                beat(x, h, &verified_telemetry(&[(&v2, &d2)], 10, 0))?;
            }
        }
        let s = read(x, &admin, &id)?;
        if s["status"] == "complete" {
            break;
        }
        if round == 5 {
            return Err(format!("the rollout did not complete: {s}"));
        }
    }
    for h in &hosts {
        let hb = beat(x, h, &verified_telemetry(&[(&v2, &d2)], 10, 0))?;
        if assigned(&hb) != [v2.clone()] {
            return Err(format!("after completion, {}: {hb}", h.id));
        }
    }
    // Its approval never covered v2: once v1 is no longer the family's
    // version it is given nothing, rather than a way around the rollout.
    let hb = beat(x, &pinned, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
    if !assigned(&hb).is_empty() {
        return Err(format!("a host pinned to v1 was moved: {hb}"));
    }
    let done = read(x, &admin, &id)?;
    let history = done["history"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = history
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    if actions != ["start", "advance", "advance", "complete"] {
        return Err(format!("history {actions:?}: {done}"));
    }
    for e in &history {
        let index = e["ledger_index"]
            .as_u64()
            .ok_or(format!("an event without a ledger index: {e}"))?;
        let (kind, payload) = ledger_entry(x, index)?;
        if kind != "edgecoder.dev/model-rollout/v1"
            || payload["rollout_id"] != id.as_str()
            || payload["action"] != e["action"]
        {
            return Err(format!("ledger entry {index}: {kind} {payload}"));
        }
    }
    // Finished rollouts take no more steps.
    expect_problem(
        &x.send(
            "POST",
            &format!("/mesh/models/rollouts/{id}/rollback"),
            Some(&admin),
            None,
            &[],
        )?,
        409,
        "invalid_transition",
    )
    .map_err(|e| format!("rolling back a completed rollout: {e}"))?;
    let list = want(
        &x.send(
            "GET",
            &format!("/mesh/models/rollouts?family={fam}"),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "list",
    )?;
    if list["rollouts"].as_array().map(Vec::len) != Some(2) {
        return Err(format!("rollouts {list}"));
    }
    Ok(())
}

fn a_failing_gate_halts_and_rolls_back_and_only_assigned_versions_get_tasks(
    x: &Ctx,
) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    let fam = family(x, "bad");
    let v1 = format!("{fam}@1");
    let d1 = publish(x, &v1)?;
    let hosts: Vec<Node> = (0..2)
        .map(|i| gpu_host(x, &format!("bad-h{i}"), &[&fam]))
        .collect::<Result<_, _>>()?;
    for h in &hosts {
        beat(x, h, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
    }
    let key = publisher(&fam);
    // v2: the canary host refuses it (a file does not match its digest).
    let v2 = format!("{fam}@2");
    let rel = want(
        &post_release(
            x,
            &admin,
            &manifest(&v2, fake_files(&v2), &key),
            &[&key],
            &format!("{SUITE_ORIGIN}/{v2}"),
        )?,
        201,
        "v2",
    )?;
    let d2 = rel["digest"].as_str().unwrap_or_default().to_owned();
    let stages = json!([{"name": "canary", "hosts": 1}, {"name": "all", "percent": 100}]);
    let r = start(x, &admin, &v2, &stages, &quick_gates(1))?;
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    let canary = r["canary"][0].as_str().unwrap_or_default().to_owned();
    let (c, other) = if hosts[0].id == canary {
        (&hosts[0], &hosts[1])
    } else {
        (&hosts[1], &hosts[0])
    };
    let hb = beat(x, c, &refused_telemetry(&v2, &d2, "digest_mismatch"))?;
    // The refusal judged the gate on that very heartbeat: halted, rolled
    // back, and the canary is back on v1.
    if assigned(&hb) != [v1.clone()] {
        return Err(format!("the canary after its refusal: {hb}"));
    }
    let s = read(x, &admin, &id)?;
    let actions: Vec<&str> = s["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    if s["status"] != "rolled_back" || actions != ["start", "halt", "rollback"] {
        return Err(format!("after a refusal: {s}"));
    }
    if !s["history"][1]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("digest_mismatch"))
    {
        return Err(format!("the halt names the refusal: {}", s["history"][1]));
    }
    // v2 never reached the other host.
    let hb = beat(x, other, &verified_telemetry(&[(&v1, &d1)], 0, 0))?;
    if assigned(&hb) != [v1.clone()] {
        return Err(format!("the other host: {hb}"));
    }
    let audit = want(
        &x.send(
            "GET",
            "/mesh/audit?action=mesh.model.verify",
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "audit",
    )?;
    let refused = audit["events"].as_array().is_some_and(|e| {
        e.iter().any(|e| {
            e["target"] == v2.as_str()
                && e["outcome"] == "failure"
                && e["details"]["failure"] == "digest_mismatch"
        })
    });
    if !refused {
        return Err(format!("the refusal is not audited: {audit}"));
    }
    // Only assigned, verified versions get tasks: a host that claims to
    // serve v2 anyway is not given v2 work, and v2 is not accepted.
    let user = x.account("bad-user", true)?;
    crate::economy::fund(x, &user.id, 10_000)?;
    beat(x, c, &verified_telemetry(&[(&v2, &d2), (&v1, &d1)], 0, 0))?;
    expect_problem(
        &x.send(
            "POST",
            "/mesh/inference",
            Some(&user.access),
            Some(&json!({"model": v2, "input": {"text": "x"}, "max_new_tokens": 2})),
            &[],
        )?,
        422,
        "model_unknown",
    )
    .map_err(|e| format!("a task for a rolled-back version: {e}"))?;
    let t = want(
        &x.send(
            "POST",
            "/mesh/inference",
            Some(&user.access),
            Some(&json!({"model": v1, "input": {"text": "x"}, "max_new_tokens": 2})),
            &[],
        )?,
        201,
        "a task for the assigned version",
    )?;
    if t["task_id"].as_str().is_none() {
        return Err(format!("submission {t}"));
    }
    // v3: healthy verification, but errors above the gate's rate.
    let v3 = format!("{fam}@3");
    let rel = want(
        &post_release(
            x,
            &admin,
            &manifest(&v3, fake_files(&v3), &key),
            &[&key],
            &format!("{SUITE_ORIGIN}/{v3}"),
        )?,
        201,
        "v3",
    )?;
    let d3 = rel["digest"].as_str().unwrap_or_default().to_owned();
    let gates = json!({"min_stage_secs": 3600, "min_verified_hosts": 1, "min_requests": 20, "max_error_rate": 0.1});
    let r = start(x, &admin, &v3, &stages, &gates)?;
    let id3 = r["id"].as_str().unwrap_or_default().to_owned();
    let canary = r["canary"][0].as_str().unwrap_or_default().to_owned();
    let c = hosts.iter().find(|h| h.id == canary).ok_or("no canary")?;
    // A host outside the stage cannot speak for it: its "refusal" of a
    // release it was never assigned is not even kept.
    let outsider = hosts
        .iter()
        .find(|h| h.id != canary)
        .ok_or("no other host")?;
    beat(x, outsider, &refused_telemetry(&v3, &d3, "digest_mismatch"))?;
    if read(x, &admin, &id3)?["status"] != "active" {
        return Err("a host outside the stage failed its gate".into());
    }
    // Too few requests to judge: it waits.
    beat(x, c, &verified_telemetry(&[(&v3, &d3)], 5, 4))?;
    if read(x, &admin, &id3)?["status"] != "active" {
        return Err("judged on too few requests".into());
    }
    beat(x, c, &verified_telemetry(&[(&v3, &d3)], 40, 12))?;
    let s = read(x, &admin, &id3)?;
    if s["status"] != "rolled_back" {
        return Err(format!("an error rate of 30 %: {s}"));
    }
    // A halt by hand, then a rollback by hand, on v4.
    let v4 = format!("{fam}@4");
    want(
        &post_release(
            x,
            &admin,
            &manifest(&v4, fake_files(&v4), &key),
            &[&key],
            &format!("{SUITE_ORIGIN}/{v4}"),
        )?,
        201,
        "v4",
    )?;
    let r = start(x, &admin, &v4, &stages, &gates)?;
    let id4 = r["id"].as_str().unwrap_or_default().to_owned();
    let step = |what: &str| {
        x.send(
            "POST",
            &format!("/mesh/models/rollouts/{id4}/{what}"),
            Some(&admin),
            Some(&json!({"reason": "operator"})),
            &[],
        )
    };
    let user_try = x.send(
        "POST",
        &format!("/mesh/models/rollouts/{id4}/halt"),
        Some(&user.access),
        None,
        &[],
    )?;
    expect_problem(&user_try, 403, "forbidden").map_err(|e| format!("a user halting: {e}"))?;
    if want(&step("halt")?, 200, "halt")?["status"] != "halted" {
        return Err("halt".into());
    }
    expect_problem(&step("halt")?, 409, "invalid_transition")
        .map_err(|e| format!("halting twice: {e}"))?;
    let back = want(&step("rollback")?, 200, "rollback")?;
    if back["status"] != "rolled_back" || back["history"][2]["actor"] == "coordinator" {
        return Err(format!("rolled back by hand {back}"));
    }
    expect_problem(
        &x.send("GET", "/mesh/models/rollouts/nope", Some(&admin), None, &[])?,
        404,
        "rollout_not_found",
    )
    .map_err(|e| format!("an unknown rollout: {e}"))?;
    Ok(())
}
