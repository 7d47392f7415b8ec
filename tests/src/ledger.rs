//! Ledger checks: appends under the service credential
//! only, idempotency, exact entry bytes, signed checkpoints that open with the
//! deployment's key, inclusion and consistency proofs that verify against
//! them, and the range errors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_tlog::checkpoint::{self, TrustedKey};
use edgecoder_tlog::merkle::{Hasher, Sha256, verify_consistency, verify_inclusion};
use serde_json::{Value as Json, json};

use crate::identity::Ctx;
use crate::{Reply, expect_problem};

fn append(x: &Ctx, bearer: Option<&str>, key: &str, payload: &[u8]) -> Result<Reply, String> {
    x.send(
        "POST",
        "/ledger/entries",
        bearer,
        Some(&json!({
            "payload_type": "example.org/audit/v1",
            "payload": STANDARD.encode(payload),
            "idempotency_key": key,
        })),
        &[],
    )
}

fn b64(v: &Json) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().unwrap_or(""))
        .unwrap_or_default()
}

fn trusted(x: &Ctx) -> Result<Vec<TrustedKey>, String> {
    let key = edgecoder_kernel::SigningKey::from_secret(&x.target.checkpoint_key)
        .map_err(|e| e.to_string())?;
    let origin = format!(
        "{}/ledger",
        x.target.issuer.split("://").nth(1).unwrap_or("")
    );
    Ok(vec![TrustedKey {
        name: origin,
        key: (*key.verifying_key()).into(),
    }])
}

fn checkpoint(x: &Ctx) -> Result<checkpoint::Checkpoint, String> {
    let (_, svc) = x.admin()?;
    let r = x.send("POST", "/ledger/checkpoint", Some(&svc), None, &[])?;
    if r.status != 200 || !r.media_type().starts_with("text/plain") {
        return Err(format!("checkpoint: {} {}", r.status, r.media_type()));
    }
    checkpoint::open(&String::from_utf8_lossy(&r.body), &trusted(x)?)
        .map_err(|e| format!("checkpoint does not open: {e}"))
}

type LedgerCheck = fn(&Ctx) -> Result<(), String>;

/// Every ledger check, by name.
pub fn checks() -> Vec<(&'static str, LedgerCheck)> {
    vec![
        (
            "ledger_append_refuses_anonymous_and_plain_users",
            ledger_append_refuses_anonymous_and_plain_users,
        ),
        (
            "ledger_appends_are_idempotent_and_keep_exact_bytes",
            ledger_appends_are_idempotent_and_keep_exact_bytes,
        ),
        (
            "ledger_checkpoint_is_signed_and_proofs_verify",
            ledger_checkpoint_is_signed_and_proofs_verify,
        ),
        (
            "ledger_root_is_rfc6962_sha256_recomputed_independently",
            ledger_root_is_rfc6962_sha256_recomputed_independently,
        ),
        (
            "ledger_bad_ranges_are_invalid_range",
            ledger_bad_ranges_are_invalid_range,
        ),
        (
            "ledger_authorises_on_current_roles_not_token_claims",
            ledger_authorises_on_current_roles_not_token_claims,
        ),
        (
            "ledger_reserves_the_project_namespace_and_refuses_look_alikes",
            ledger_reserves_the_project_namespace_and_refuses_look_alikes,
        ),
        (
            "ledger_refuses_an_idempotency_key_reused_with_another_payload",
            ledger_refuses_an_idempotency_key_reused_with_another_payload,
        ),
    ]
}

fn ledger_append_refuses_anonymous_and_plain_users(x: &Ctx) -> Result<(), String> {
    expect_problem(&append(x, None, "anon", b"x")?, 401, "ledger_unauthorized")?;
    expect_problem(
        &append(
            x,
            Some("not-the-service-token-000000000000000"),
            "wrong",
            b"x",
        )?,
        401,
        "ledger_unauthorized",
    )?;
    let user = x.account("ledger-user", true)?;
    expect_problem(
        &append(x, Some(&user.access), "user", b"x")?,
        401,
        "ledger_unauthorized",
    )?;
    let (_, svc) = x.admin()?;
    // Transfer entries come only from the mesh itself; role changes only
    // from the auth function.
    let (_, admin) = x.admin()?;
    for (who, t) in [
        (svc.as_str(), "edgecoder.dev/credit-transfer/v1"),
        (admin.as_str(), "edgecoder.dev/credit-transfer/v1"),
        (admin.as_str(), "edgecoder.dev/role-grant/v1"),
    ] {
        let r = x.send(
            "POST",
            "/ledger/entries",
            Some(who),
            Some(&json!({"payload_type": t, "payload": "e30=", "idempotency_key": x.email("reserved")})),
            &[],
        )?;
        expect_problem(&r, 400, "invalid_entry").map_err(|e| format!("{t}: {e}"))?;
    }
    let big = vec![b'a'; 70 * 1024];
    expect_problem(&append(x, Some(&svc), "big", &big)?, 413, "entry_too_large")?;
    let r = x.send(
        "POST",
        "/ledger/entries",
        Some(&svc),
        Some(&json!({"payload_type": "not a type", "payload": "", "idempotency_key": "k"})),
        &[],
    )?;
    expect_problem(&r, 400, "invalid_entry")
}

fn ledger_appends_are_idempotent_and_keep_exact_bytes(x: &Ctx) -> Result<(), String> {
    let (_, svc) = x.admin()?;
    let key = x.email("ledger-key");
    let first = append(x, Some(&svc), &key, b"hello ledger")?;
    if first.status != 201 {
        return Err(format!(
            "append: {} {}",
            first.status,
            String::from_utf8_lossy(&first.body)
        ));
    }
    let index = first.json()?["index"].as_u64().ok_or("no index")?;
    let again = append(x, Some(&svc), &key, b"hello ledger")?;
    let v = again.json()?;
    if again.status != 200 || v["index"].as_u64() != Some(index) || v["duplicate"] != true {
        return Err(format!(
            "duplicate key appended again: {} {v}",
            again.status
        ));
    }
    let e = x.c.get(&format!("/ledger/entries/{index}"))?.json()?;
    let bytes = b64(&e["entry"]);
    if Sha256::leaf(&bytes).to_vec() != b64(&e["leaf_hash"]) {
        return Err("leaf_hash is not SHA-256(0x00 || entry bytes)".into());
    }
    let envelope: Json = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if envelope["type"] != "example.org/audit/v1"
        || !envelope["principal"]
            .as_str()
            .is_some_and(|p| p.starts_with("user:"))
        || b64(&envelope["payload"]) != b"hello ledger"
    {
        return Err(format!("envelope {envelope}"));
    }
    expect_problem(
        &x.c.get("/ledger/entries/999999999")?,
        404,
        "entry_not_found",
    )
}

fn ledger_checkpoint_is_signed_and_proofs_verify(x: &Ctx) -> Result<(), String> {
    let (_, svc) = x.admin()?;
    for i in 0..5 {
        append(
            x,
            Some(&svc),
            &x.email(&format!("proof-{i}")),
            format!("entry {i}").as_bytes(),
        )?;
    }
    let first = checkpoint(x)?;
    for i in 0..3 {
        append(x, Some(&svc), &x.email(&format!("proof-more-{i}")), b"more")?;
    }
    let second = checkpoint(x)?;
    if second.size != first.size + 3 {
        return Err(format!("sizes {} then {}", first.size, second.size));
    }
    let page =
        x.c.get(&format!("/ledger/entries?start=0&end={}", second.size))?
            .json()?;
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    if entries.len() as u64 != second.size {
        return Err(format!(
            "page has {} entries for size {}",
            entries.len(),
            second.size
        ));
    }
    let leaves: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| Sha256::leaf(&b64(&e["entry"])).to_vec())
        .collect();
    for index in [0, first.size - 1, second.size - 1] {
        let p =
            x.c.get(&format!(
                "/ledger/proof/inclusion?index={index}&tree_size={}",
                second.size
            ))?
            .json()?;
        let proof: Vec<Vec<u8>> = p["proof"]
            .as_array()
            .map(|a| a.iter().map(b64).collect())
            .unwrap_or_default();
        let leaf = &leaves[usize::try_from(index).unwrap_or(0)];
        verify_inclusion::<Sha256>(index, second.size, leaf, &proof, &second.root)
            .map_err(|e| format!("inclusion of {index}: {e}"))?;
    }
    let p =
        x.c.get(&format!(
            "/ledger/proof/consistency?first={}&second={}",
            first.size, second.size
        ))?
        .json()?;
    let proof: Vec<Vec<u8>> = p["proof"]
        .as_array()
        .map(|a| a.iter().map(b64).collect())
        .unwrap_or_default();
    verify_consistency::<Sha256>(first.size, second.size, &proof, &first.root, &second.root)
        .map_err(|e| format!("consistency: {e}"))?;
    let keys = x.c.get("/ledger/keys")?.json()?;
    if keys["keys"][0]["algorithm"] != "ecdsa-p256-sha256"
        || keys["keys"][0]["name"] != json!(trusted(x)?[0].name)
    {
        return Err(format!("keys {keys}"));
    }
    // Anyone may read the latest checkpoint.
    let r = x.c.get("/ledger/checkpoint")?;
    checkpoint::open(&String::from_utf8_lossy(&r.body), &trusted(x)?)
        .map_err(|e| format!("GET checkpoint: {e}"))?;
    Ok(())
}

/// RFC 6962 §2.1 `MTH` straight from the definition, with `sha2` and
/// nothing of `edgecoder-tlog`: what any C2SP witness or monitor computes.
fn rfc6962_root(entries: &[Vec<u8>]) -> [u8; 32] {
    use sha2::Digest as _;
    match entries.len() {
        0 => sha2::Sha256::digest([]).into(),
        1 => {
            let mut h = sha2::Sha256::new();
            h.update([0u8]);
            h.update(&entries[0]);
            h.finalize().into()
        }
        n => {
            // The largest power of two smaller than n.
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut h = sha2::Sha256::new();
            h.update([1u8]);
            h.update(rfc6962_root(&entries[..k]));
            h.update(rfc6962_root(&entries[k..]));
            h.finalize().into()
        }
    }
}

fn ledger_root_is_rfc6962_sha256_recomputed_independently(x: &Ctx) -> Result<(), String> {
    let (_, svc) = x.admin()?;
    append(x, Some(&svc), &x.email("rfc6962"), b"witnessable")?;
    let cp = checkpoint(x)?;
    let mut entries = Vec::new();
    let mut start = 0;
    while start < cp.size {
        let end = cp.size.min(start + 1000);
        let page =
            x.c.get(&format!("/ledger/entries?start={start}&end={end}"))?
                .json()?;
        for e in page["entries"].as_array().into_iter().flatten() {
            entries.push(b64(&e["entry"]));
        }
        start = end;
    }
    if entries.len() as u64 != cp.size {
        return Err(format!("{} entries for size {}", entries.len(), cp.size));
    }
    let root = rfc6962_root(&entries);
    if root != cp.root {
        return Err(format!(
            "the signed root {} is not the RFC 6962 SHA-256 root {} of the {} entries",
            STANDARD.encode(cp.root),
            STANDARD.encode(root),
            cp.size
        ));
    }
    Ok(())
}

fn ledger_bad_ranges_are_invalid_range(x: &Ctx) -> Result<(), String> {
    for path in [
        "/ledger/entries?start=5&end=2",
        "/ledger/entries?start=0&end=999999999",
        "/ledger/entries?start=-1",
        "/ledger/proof/inclusion?index=999999999",
        "/ledger/proof/inclusion?index=0&tree_size=999999999",
        "/ledger/proof/inclusion",
        "/ledger/proof/consistency?first=0&second=1",
        "/ledger/proof/consistency?first=3&second=2",
        "/ledger/proof/consistency?first=1&second=999999999",
        "/ledger/entries/abc",
    ] {
        expect_problem(&x.c.get(path)?, 400, "invalid_range")
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// Grants `system_admin` to `user` with the suite's admin; returns a fresh,
/// stepped-up token of `user`'s (its claims name the role).
fn make_admin(x: &Ctx, user: &crate::identity::Account) -> Result<String, String> {
    let (_, admin) = x.admin()?;
    let r = x.send(
        "POST",
        &format!("/auth/admin/users/{}/roles", user.id),
        Some(&admin),
        Some(&json!({"role": "system_admin"})),
        &[],
    )?;
    if r.status != 200 {
        return Err(format!(
            "grant: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let r = x.send(
        "POST",
        "/auth/step-up",
        Some(&user.access),
        Some(&json!({"password": crate::identity::PASSWORD})),
        &[],
    )?;
    Ok(r.json()?["access_token"].as_str().unwrap_or("").to_owned())
}

/// A try at minting: the bootstrap grant, the only route out of
/// `issuance`, which the suite's admin made already.
fn mint(x: &Ctx, bearer: &str, to: &str) -> Result<Reply, String> {
    x.send(
        "POST",
        "/mesh/credits/bootstrap",
        Some(bearer),
        Some(&json!({"account": format!("user:{to}"), "amount": 5})),
        &[],
    )
}

fn ledger_authorises_on_current_roles_not_token_claims(x: &Ctx) -> Result<(), String> {
    // A validly signed token that claims system_admin for a user who does
    // not hold it.
    let b = x.account("ledger-roles", true)?;
    let me = x
        .send("GET", "/auth/me", Some(&b.access), None, &[])?
        .json()?;
    let claimed = x.mint(
        &b.id,
        me["session_id"].as_str().unwrap_or(""),
        &json!({"roles": ["user", "system_admin"]}),
    )?;
    expect_problem(
        &append(x, Some(&claimed), &x.email("claims"), b"x")?,
        401,
        "ledger_unauthorized",
    )
    .map_err(|e| format!("claimed role, append: {e}"))?;
    expect_problem(&mint(x, &claimed, &b.id)?, 403, "forbidden")
        .map_err(|e| format!("claimed role, mint: {e}"))?;

    // An admin whose role is revoked: the token still says system_admin.
    let (_, admin) = x.admin()?;
    let token = make_admin(x, &b)?;
    let r = append(x, Some(&token), &x.email("before-revoke"), b"x")?;
    if r.status != 201 {
        return Err(format!("admin append before revoke: {}", r.status));
    }
    let r = x.send(
        "DELETE",
        &format!("/auth/admin/users/{}/roles/system_admin", b.id),
        Some(&admin),
        None,
        &[],
    )?;
    if r.status != 200 {
        return Err(format!("revoke: {}", r.status));
    }
    expect_problem(
        &append(x, Some(&token), &x.email("after-revoke"), b"x")?,
        401,
        "ledger_unauthorized",
    )
    .map_err(|e| format!("revoked admin, append: {e}"))?;
    expect_problem(&mint(x, &token, &b.id)?, 403, "forbidden")
        .map_err(|e| format!("revoked admin, mint: {e}"))?;

    // An admin again, who signs out everywhere: the token is no one's.
    let token = make_admin(x, &b)?;
    let r = append(x, Some(&token), &x.email("before-logout"), b"x")?;
    if r.status != 201 {
        return Err(format!("admin append before logout-all: {}", r.status));
    }
    let r = x.send("POST", "/auth/logout-all", Some(&token), None, &[])?;
    if r.status != 200 {
        return Err(format!("logout-all: {}", r.status));
    }
    expect_problem(
        &append(x, Some(&token), &x.email("after-logout"), b"x")?,
        401,
        "ledger_unauthorized",
    )
    .map_err(|e| format!("signed-out admin, append: {e}"))?;
    expect_problem(&mint(x, &token, &b.id)?, 401, "invalid_token")
        .map_err(|e| format!("signed-out admin, mint: {e}"))
}

fn append_typed(x: &Ctx, bearer: &str, payload_type: &str, key: &str) -> Result<Reply, String> {
    x.send(
        "POST",
        "/ledger/entries",
        Some(bearer),
        Some(&json!({"payload_type": payload_type, "payload": "e30=", "idempotency_key": key})),
        &[],
    )
}

fn ledger_reserves_the_project_namespace_and_refuses_look_alikes(x: &Ctx) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    for t in [
        "edgecoder.dev/credit-transfer/v01",
        "edgecoder.dev/credit-transfer/v2",
        "edgecoder.dev/credits/v1",
        "edgecoder.dev/audit/v1",
        "edgecoder.dev/role-grant/v1",
        "ledger.edgecoder.dev/credit-transfer/v1",
        "example.org/note/v01",
        "example.org/note/v0",
    ] {
        expect_problem(
            &append_typed(x, &admin, t, &x.email("lookalike"))?,
            400,
            "invalid_entry",
        )
        .map_err(|e| format!("admin, {t}: {e}"))?;
    }
    // A function's token appends its own types, and nothing else.
    let as_auth = |payload_type: &str, key: &str| -> Result<Reply, String> {
        let body = json!({"payload_type": payload_type, "payload": "e30=", "idempotency_key": key});
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let token = x
            .target
            .service_token("auth", "ledger", "POST", "/ledger/entries", &bytes);
        x.send("POST", "/ledger/entries", Some(&token), Some(&body), &[])
    };
    for t in [
        "edgecoder.dev/credit-transfer/v01",
        "edgecoder.dev/node-approval/v1",
        "example.org/note/v1",
    ] {
        expect_problem(&as_auth(t, &x.email("auth-other"))?, 403, "forbidden")
            .map_err(|e| format!("auth's token, {t}: {e}"))?;
    }
    // A token is bound to its request: another body is not what it signed.
    let key = x.email("auth-bound");
    let body = json!({"payload_type": "edgecoder.dev/role-grant/v1", "payload": "e30=", "idempotency_key": key});
    let token = x.target.service_token(
        "auth",
        "ledger",
        "POST",
        "/ledger/entries",
        &serde_json::to_vec(&body).map_err(|e| e.to_string())?,
    );
    expect_problem(
        &append_typed(x, &token, "edgecoder.dev/role-revoke/v1", &key)?,
        401,
        "ledger_unauthorized",
    )
    .map_err(|e| format!("a token replayed on another body: {e}"))?;
    let r = as_auth("edgecoder.dev/role-grant/v1", &x.email("auth-own"))?;
    if r.status != 201 {
        return Err(format!("auth's token, its own role-grant: {}", r.status));
    }
    // The admin keeps everything outside the functions' namespace.
    let r = append_typed(x, &admin, "example.org/note/v1", &x.email("own"))?;
    if r.status != 201 {
        return Err(format!("admin, example.org/note/v1: {}", r.status));
    }
    Ok(())
}

fn ledger_refuses_an_idempotency_key_reused_with_another_payload(x: &Ctx) -> Result<(), String> {
    let (_, svc) = x.admin()?;
    let key = x.email("reuse");
    let first = append(x, Some(&svc), &key, b"first")?;
    if first.status != 201 {
        return Err(format!("first append: {}", first.status));
    }
    let again = append(x, Some(&svc), &key, b"first")?;
    if again.status != 200 || again.json()?["index"] != first.json()?["index"] {
        return Err(format!("same request again: {}", again.status));
    }
    expect_problem(
        &append(x, Some(&svc), &key, b"second")?,
        422,
        "idempotency_key_reused",
    )
    .map_err(|e| format!("other payload: {e}"))?;
    expect_problem(
        &append_typed(x, &svc, "example.org/other/v1", &key)?,
        422,
        "idempotency_key_reused",
    )
    .map_err(|e| format!("other type: {e}"))?;
    Ok(())
}
