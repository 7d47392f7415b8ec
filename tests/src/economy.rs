//! Economy checks over HTTP on any runtime: the published prices, escrow at
//! submission (and the race for the last credits), payment once on
//! acceptance, refunds, replicas that must agree, the former minting paths
//! gone, transfers between users with receipts, and issuance epochs that
//! anyone recomputes from the log.
//!
//! Also the suite's way to give a user credits ([`fund`]): the suite's
//! admin holds the deployment's one bootstrap grant and sends from it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edgecoder_proto::economy::{self, Completion};
use edgecoder_tlog::proof::TlogProof;
use serde_json::{Value as Json, json};

use crate::identity::{Account, Ctx};
use crate::mesh::{Node, active, blob, pull, pull_task, report, want};
use crate::{Reply, expect_problem};

/// What the suite's admin is granted once per deployment.
const BOOTSTRAP: i64 = 1 << 40;
/// What [`fund_bearer`] tops an account up to.
const TOP_UP: i64 = 10_000;

/// Deployments (by base URL) whose bootstrap grant the suite has made.
static GRANTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes sure the suite's admin holds the bootstrap grant.
fn granted(x: &Ctx) -> Result<(String, String), String> {
    let (id, admin) = x.admin()?;
    let base = x.target.base.clone();
    let mut done = GRANTED.lock().unwrap_or_else(|e| e.into_inner());
    if !done.contains(&base) {
        let r = x.send(
            "POST",
            "/mesh/credits/bootstrap",
            Some(&admin),
            Some(&json!({"account": format!("user:{id}"), "amount": BOOTSTRAP})),
            &[],
        )?;
        if r.status != 201 && r.status != 200 {
            return Err(format!(
                "bootstrap grant: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        done.push(base);
    }
    Ok((id, admin))
}

/// Sends `amount` credits to user `user_id` from the suite's admin.
pub fn fund(x: &Ctx, user_id: &str, amount: i64) -> Result<(), String> {
    let (_, admin) = granted(x)?;
    let r = x.send(
        "POST",
        "/mesh/credits/transfers",
        Some(&admin),
        Some(&json!({"to": format!("user:{user_id}"), "amount": amount, "idempotency_key": x.email("fund")})),
        &[],
    )?;
    want(&r, 201, "fund")?;
    Ok(())
}

/// Tops up the account behind `bearer` when it is short of credits.
pub fn fund_bearer(x: &Ctx, bearer: &str) -> Result<(), String> {
    let me = x.send("GET", "/auth/me", Some(bearer), None, &[])?;
    let Some(id) = me
        .json()
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
    else {
        // Not a signed-in user: the submission is refused anyway.
        return Ok(());
    };
    let b = balance(x, bearer, &id)?;
    if b.available < TOP_UP / 2 {
        fund(x, &id, TOP_UP)?;
    }
    Ok(())
}

/// A balance as the account route reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Balance {
    available: i64,
    escrowed: i64,
    pending: i64,
}

fn balance(x: &Ctx, bearer: &str, user_id: &str) -> Result<Balance, String> {
    let v = want(
        &x.send(
            "GET",
            &format!("/mesh/credits/accounts/user:{user_id}"),
            Some(bearer),
            None,
            &[],
        )?,
        200,
        "balance",
    )?;
    let n = |k: &str| {
        v[k].as_i64()
            .ok_or_else(|| format!("balance without {k}: {v}"))
    };
    Ok(Balance {
        available: n("available")?,
        escrowed: n("escrowed")?,
        pending: n("pending")?,
    })
}

fn history(x: &Ctx, bearer: &str, user_id: &str) -> Result<Vec<Json>, String> {
    let v = want(
        &x.send(
            "GET",
            &format!("/mesh/credits/accounts/user:{user_id}/transfers?limit=200"),
            Some(bearer),
            None,
            &[],
        )?,
        200,
        "history",
    )?;
    Ok(v["postings"].as_array().cloned().unwrap_or_default())
}

/// The postings of `user_id`'s history whose memo is `memo`.
fn posted(x: &Ctx, bearer: &str, user_id: &str, memo: &str) -> Result<Vec<i64>, String> {
    Ok(history(x, bearer, user_id)?
        .iter()
        .filter(|p| p["memo"] == memo)
        .filter_map(|p| p["amount"].as_i64())
        .collect())
}

fn wasm(input: &[u8], timeout_ms: i64, replicas: i64) -> Json {
    json!({
        "kind": "wasm", "module": blob(b"\0asm\x01\0\0\0"), "input": blob(input),
        "timeout_ms": timeout_ms, "resources": {"memory_mb": 16, "fuel": 1_000_000},
        "replicas": replicas,
    })
}

/// Submits without topping up.
fn submit(x: &Ctx, bearer: &str, body: &Json) -> Result<Reply, String> {
    x.send("POST", "/mesh/tasks", Some(bearer), Some(body), &[])
}

/// The price of one `wasm(…, timeout_ms, 1)` replica, from the published
/// table.
fn price_of(x: &Ctx, timeout_ms: i64) -> Result<(i64, i64), String> {
    let v = want(&x.c.get("/mesh/credits/prices")?, 200, "prices")?;
    let p = &v["kinds"]["wasm"];
    let n = |k: &str| p[k].as_i64().unwrap_or_default();
    let price = n("base") + n("per_second") * ((timeout_ms + 999) / 1000) + n("per_256_mib");
    Ok((price, v["fee_bps"].as_i64().unwrap_or_default()))
}

type EconomyCheck = fn(&Ctx) -> Result<(), String>;

/// Every economy check, by name.
pub fn checks() -> Vec<(&'static str, EconomyCheck)> {
    vec![
        (
            "credits_prices_are_published_and_a_submission_escrows_its_price",
            credits_prices_are_published_and_a_submission_escrows_its_price,
        ),
        (
            "credits_two_submits_racing_for_the_last_credits_queue_exactly_one",
            credits_two_submits_racing_for_the_last_credits_queue_exactly_one,
        ),
        (
            "credits_an_accepted_result_pays_the_node_owner_once_minus_the_fee",
            credits_an_accepted_result_pays_the_node_owner_once_minus_the_fee,
        ),
        (
            "credits_an_expired_task_is_refunded",
            credits_an_expired_task_is_refunded,
        ),
        (
            "credits_replicas_pay_once_when_they_agree_and_refund_when_they_do_not",
            credits_replicas_pay_once_when_they_agree_and_refund_when_they_do_not,
        ),
        (
            "credits_every_former_minting_path_is_refused",
            credits_every_former_minting_path_is_refused,
        ),
        (
            "credits_users_move_only_their_own_credits_with_receipts",
            credits_users_move_only_their_own_credits_with_receipts,
        ),
        (
            "credits_epochs_recompute_from_the_log_and_are_final_with_their_quorum",
            credits_epochs_recompute_from_the_log_and_are_final_with_their_quorum,
        ),
    ]
}

/// Runs `task_id` to completion with `node`; the completion's log index.
fn finish(x: &Ctx, node: &Node, task_id: &str, output: &[u8]) -> Result<u64, String> {
    let got = pull_task(x, node, task_id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    let out = want(&report(x, node, task_id, &lease, output)?, 200, "report")?;
    out["ledger_index"]
        .as_u64()
        .ok_or_else(|| format!("no ledger index: {out}"))
}

fn credits_prices_are_published_and_a_submission_escrows_its_price(x: &Ctx) -> Result<(), String> {
    let v = want(&x.c.get("/mesh/credits/prices")?, 200, "prices")?;
    if v["kinds"]["wasm"]["base"].as_i64().is_none() || v["fee_bps"].as_i64().is_none() {
        return Err(format!("price table {v}"));
    }
    let (price, _) = price_of(x, 30_000)?;
    let (_, node) = active(x, "escrow-node")?;
    let user = x.account("escrow-user", true)?;
    // Contribute first: nothing to spend, nothing queued.
    expect_problem(
        &submit(x, &user.access, &wasm(b"free ride", 30_000, 1))?,
        409,
        "insufficient_credits",
    )?;
    if pull(x, &node)?.status != 204 {
        return Err("a refused submission was queued".into());
    }
    fund(x, &user.id, price + 5)?;
    let v = want(
        &submit(x, &user.access, &wasm(b"paid", 30_000, 1))?,
        201,
        "submit",
    )?;
    if v["price"] != price {
        return Err(format!("price {} want {price}", v["price"]));
    }
    let b = balance(x, &user.access, &user.id)?;
    if (b.available, b.escrowed, b.pending) != (5, price, 0) {
        return Err(format!("after submit: {b:?}"));
    }
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    finish(x, &node, &id, b"done")?;
    let b = balance(x, &user.access, &user.id)?;
    if (b.available, b.escrowed) != (5, 0) {
        return Err(format!("after payment: {b:?}"));
    }
    Ok(())
}

fn credits_two_submits_racing_for_the_last_credits_queue_exactly_one(
    x: &Ctx,
) -> Result<(), String> {
    let (price, _) = price_of(x, 20_000)?;
    let (_, node) = active(x, "race-node")?;
    let user = x.account("race-user", true)?;
    fund(x, &user.id, price + price / 2)?;
    let base = x.target.base.clone();
    let token = user.access.clone();
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let (base, token) = (base.clone(), token.clone());
            std::thread::spawn(move || {
                let c = crate::Client::new(&base);
                let body = serde_json::to_vec(&wasm(format!("race {i}").as_bytes(), 20_000, 1))
                    .unwrap_or_default();
                c.send_with(
                    "POST",
                    "/mesh/tasks",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &format!("Bearer {token}")),
                    ],
                    &body,
                )
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in racers {
        answers.push(r.join().map_err(|_| "a racer panicked")??);
    }
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    if statuses != [201, 409] {
        return Err(format!("racing submits answered {statuses:?}"));
    }
    let lost = answers.iter().find(|r| r.status == 409).ok_or("no loser")?;
    expect_problem(lost, 409, "insufficient_credits")?;
    let won = answers
        .iter()
        .find(|r| r.status == 201)
        .ok_or("no winner")?;
    let id = won.json()?["task_id"].as_str().unwrap_or("").to_owned();
    let b = balance(x, &user.access, &user.id)?;
    if (b.available, b.escrowed) != (price / 2, price) {
        return Err(format!("after the race: {b:?}"));
    }
    // Exactly one task was queued: the winner's.
    finish(x, &node, &id, b"won")?;
    if pull(x, &node)?.status != 204 {
        return Err("the losing submission was queued".into());
    }
    Ok(())
}

fn credits_an_accepted_result_pays_the_node_owner_once_minus_the_fee(
    x: &Ctx,
) -> Result<(), String> {
    let (price, fee_bps) = price_of(x, 30_000)?;
    let (owner, node) = active(x, "pay-node")?;
    let user = x.account("pay-user", true)?;
    fund(x, &user.id, 1000)?;
    let v = want(
        &submit(x, &user.access, &wasm(b"pay me", 30_000, 1))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &node, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    let first = want(&report(x, &node, &id, &lease, b"paid")?, 200, "report")?;
    // The same result again (an answer lost on the way) gets the same
    // answer, and another node's report is refused: no second payment.
    let again = want(&report(x, &node, &id, &lease, b"paid")?, 200, "resent")?;
    if again["ledger_index"] != first["ledger_index"] {
        return Err(format!("a resent result was logged again: {again}"));
    }
    let (_, other) = active(x, "pay-other")?;
    expect_problem(
        &report(x, &other, &id, &lease, b"paid")?,
        409,
        "lease_invalid",
    )?;
    let fee = price * fee_bps / 10_000;
    let memo = format!("payment for task {id}");
    let paid = posted(x, &owner.access, &owner.id, &memo)?;
    if paid != [price - fee] {
        return Err(format!(
            "owner postings for {memo}: {paid:?}, want [{}]",
            price - fee
        ));
    }
    let spent = posted(x, &user.access, &user.id, &format!("escrow for task {id}"))?;
    if spent != [-price] {
        return Err(format!("submitter's escrow postings {spent:?}"));
    }
    let b = balance(x, &user.access, &user.id)?;
    if (b.available, b.escrowed) != (1000 - price, 0) {
        return Err(format!("submitter after payment: {b:?}"));
    }
    // The payment is a logged transfer with a receipt.
    let h = history(x, &owner.access, &owner.id)?;
    let p = h
        .iter()
        .find(|p| p["memo"] == memo.as_str())
        .ok_or("no posting")?;
    let receipt = p["receipt"]
        .as_str()
        .ok_or_else(|| format!("no receipt: {p}"))?;
    let r = x.c.get(receipt)?;
    if r.status != 200 {
        return Err(format!("receipt {receipt}: {}", r.status));
    }
    let events = crate::mesh::mesh_audit(x, &id)?;
    if !events.iter().any(|e| e == "mesh.credits.pay:success") {
        return Err(format!("no payment audit event: {events:?}"));
    }
    Ok(())
}

fn credits_an_expired_task_is_refunded(x: &Ctx) -> Result<(), String> {
    let (price, _) = price_of(x, 1000)?;
    let (_, node) = active(x, "refund-node")?;
    let user = x.account("refund-user", true)?;
    fund(x, &user.id, 500)?;
    let v = want(
        &submit(x, &user.access, &wasm(b"never finished", 1000, 1))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    // The suite deploys with two attempts and no grace.
    for _ in 0..2 {
        pull_task(x, &node, &id)?;
        std::thread::sleep(std::time::Duration::from_millis(1300));
    }
    if pull(x, &node)?.status != 204 {
        return Err("the task is still offered".into());
    }
    let b = balance(x, &user.access, &user.id)?;
    if (b.available, b.escrowed) != (500, 0) {
        return Err(format!("after expiry: {b:?}"));
    }
    let back = posted(x, &user.access, &user.id, &format!("refund of task {id}"))?;
    if back != [price] {
        return Err(format!("refund postings {back:?}"));
    }
    Ok(())
}

fn credits_replicas_pay_once_when_they_agree_and_refund_when_they_do_not(
    x: &Ctx,
) -> Result<(), String> {
    let (price, fee_bps) = price_of(x, 30_000)?;
    let (owner1, node1) = active(x, "replica-one")?;
    let (owner2, node2) = active(x, "replica-two")?;
    let user = x.account("replica-user", true)?;
    fund(x, &user.id, 1000)?;
    let v = want(
        &submit(x, &user.access, &wasm(b"twice", 30_000, 2))?,
        201,
        "submit",
    )?;
    if v["price"] != 2 * price || v["replicas"] != 2 {
        return Err(format!("a replicated task's price: {v}"));
    }
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &node1, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    let first = want(&report(x, &node1, &id, &lease, b"same")?, 200, "replica 1")?;
    if first["status"] != "queued" || first["agreeing"] != 1 {
        return Err(format!("after one replica: {first}"));
    }
    // The same node (or owner) does not make the second opinion.
    if pull(x, &node1)?.status != 204 {
        return Err("a replica went back to the node that ran it".into());
    }
    let got = pull_task(x, &node2, &id)?;
    let lease2 = got["lease_id"].as_str().unwrap_or("").to_owned();
    let done = want(&report(x, &node2, &id, &lease2, b"same")?, 200, "replica 2")?;
    if done["status"] != "completed" {
        return Err(format!("after two agreeing replicas: {done}"));
    }
    let again = want(&report(x, &node2, &id, &lease2, b"same")?, 200, "resent")?;
    if again["ledger_index"] != done["ledger_index"] {
        return Err(format!("a resent replica was logged again: {again}"));
    }
    expect_problem(
        &report(x, &node1, &id, &lease2, b"same")?,
        409,
        "lease_invalid",
    )?;
    let (share, _) = economy::PriceTable {
        fee_bps,
        kinds: BTreeMap::new(),
    }
    .split(2 * price, 2);
    let memo = format!("payment for task {id}");
    for (o, who) in [(&owner1, "first"), (&owner2, "second")] {
        let paid = posted(x, &o.access, &o.id, &memo)?;
        if paid != [share] {
            return Err(format!(
                "the {who} replica's owner got {paid:?}, want [{share}]"
            ));
        }
    }
    // Two replicas that disagree: nobody is paid, the submitter is refunded.
    let v = want(
        &submit(x, &user.access, &wasm(b"argue", 30_000, 2))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let got = pull_task(x, &node2, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    want(&report(x, &node2, &id, &lease, b"yes")?, 200, "replica 1")?;
    let got = pull_task(x, &node1, &id)?;
    let lease = got["lease_id"].as_str().unwrap_or("").to_owned();
    let out = want(&report(x, &node1, &id, &lease, b"no")?, 200, "replica 2")?;
    if out["status"] != "failed" || out["error_code"] != "replica_disagreement" {
        return Err(format!("disagreeing replicas: {out}"));
    }
    let memo = format!("payment for task {id}");
    for o in [&owner1, &owner2] {
        if !posted(x, &o.access, &o.id, &memo)?.is_empty() {
            return Err("a disagreement paid a replica".into());
        }
    }
    let back = posted(x, &user.access, &user.id, &format!("refund of task {id}"))?;
    if back != [2 * price] {
        return Err(format!("refund of a disagreement: {back:?}"));
    }
    let b = balance(x, &user.access, &user.id)?;
    if (b.available, b.escrowed) != (1000 - 2 * price, 0) {
        return Err(format!("after both tasks: {b:?}"));
    }
    let (_, admin) = x.admin()?;
    let v = want(
        &x.send(
            "GET",
            &format!("/mesh/audit?target={id}&action=mesh.task.replica_disagreement"),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "audit",
    )?;
    let digests: Vec<&str> = v["events"][0]["details"]["replies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["output_digest"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let want_digests =
        [b"yes".as_slice(), b"no"].map(|o| format!("blake3:{}", blake3::hash(o).to_hex()));
    if want_digests.iter().any(|d| !digests.contains(&d.as_str())) {
        return Err(format!(
            "the disagreement's audit event lacks a digest: {v}"
        ));
    }
    Ok(())
}

fn credits_every_former_minting_path_is_refused(x: &Ctx) -> Result<(), String> {
    let (admin_id, admin) = granted(x)?;
    let grant = json!({
        "postings": [{"account": "issuance", "amount": -5}, {"account": format!("user:{admin_id}"), "amount": 5}],
        "idempotency_key": x.email("mint"),
    });
    // The admin route and the service credential's route are gone.
    let r = x.send("POST", "/ledger/transfers", Some(&admin), Some(&grant), &[])?;
    if r.status != 404 && r.status != 405 {
        return Err(format!("POST /ledger/transfers as an admin: {}", r.status));
    }
    let body = serde_json::to_vec(&grant).unwrap_or_default();
    for caller in ["auth", "mesh"] {
        let token = x
            .target
            .service_token(caller, "ledger", "POST", "/ledger/transfers", &body);
        let r = x.send("POST", "/ledger/transfers", Some(&token), Some(&grant), &[])?;
        if r.status != 404 && r.status != 405 {
            return Err(format!("POST /ledger/transfers as {caller}: {}", r.status));
        }
    }
    // Nobody appends a transfer or an epoch entry by hand.
    for t in [economy::CREDIT_TRANSFER_V1, economy::ISSUANCE_EPOCH_V1] {
        let append = json!({"payload_type": t, "payload": STANDARD.encode(b"{}"), "idempotency_key": x.email("forge")});
        let r = x.send("POST", "/ledger/entries", Some(&admin), Some(&append), &[])?;
        if r.status != 400 {
            return Err(format!("an admin appending {t}: {}", r.status));
        }
        let body = serde_json::to_vec(&append).unwrap_or_default();
        let token = x
            .target
            .service_token("auth", "ledger", "POST", "/ledger/entries", &body);
        expect_problem(
            &x.send("POST", "/ledger/entries", Some(&token), Some(&append), &[])?,
            403,
            "forbidden",
        )?;
    }
    // Users send only their own credits: not issuance's, not another's.
    let user = x.account("mint-user", true)?;
    for to in ["issuance", "fees", "escrow"] {
        expect_problem(
            &x.send(
                "POST",
                "/mesh/credits/transfers",
                Some(&user.access),
                Some(&json!({"to": to, "amount": 1, "idempotency_key": x.email("sys")})),
                &[],
            )?,
            400,
            "invalid_transfer",
        )?;
    }
    let r = x.send(
        "POST",
        "/mesh/credits/transfers",
        Some(&user.access),
        Some(&json!({"to": format!("user:{admin_id}"), "amount": -5, "idempotency_key": x.email("neg")})),
        &[],
    )?;
    expect_problem(&r, 400, "invalid_transfer")?;
    // The bootstrap grant: once, by a system_admin.
    expect_problem(
        &x.send(
            "POST",
            "/mesh/credits/bootstrap",
            Some(&user.access),
            Some(&json!({"account": format!("user:{}", user.id), "amount": 5})),
            &[],
        )?,
        403,
        "forbidden",
    )?;
    expect_problem(
        &x.send(
            "POST",
            "/mesh/credits/bootstrap",
            Some(&admin),
            Some(&json!({"account": format!("user:{}", user.id), "amount": 5})),
            &[],
        )?,
        409,
        "bootstrap_done",
    )?;
    let again = x.send(
        "POST",
        "/mesh/credits/bootstrap",
        Some(&admin),
        Some(&json!({"account": format!("user:{admin_id}"), "amount": BOOTSTRAP})),
        &[],
    )?;
    let v = want(&again, 200, "the same grant again")?;
    if v["duplicate"] != true {
        return Err(format!("a repeated grant: {v}"));
    }
    let supply = want(
        &x.send("GET", "/mesh/credits/supply", Some(&admin), None, &[])?,
        200,
        "supply",
    )?;
    if supply["balanced"] != true {
        return Err(format!("the books: {supply}"));
    }
    expect_problem(
        &x.send("GET", "/mesh/credits/supply", Some(&user.access), None, &[])?,
        403,
        "forbidden",
    )
}

fn trusted(x: &Ctx) -> Result<Vec<edgecoder_tlog::checkpoint::TrustedKey>, String> {
    let key = edgecoder_kernel::SigningKey::from_secret(&x.target.checkpoint_key)
        .map_err(|e| e.to_string())?;
    let origin = format!(
        "{}/ledger",
        x.target.issuer.split("://").nth(1).unwrap_or("")
    );
    Ok(vec![edgecoder_tlog::checkpoint::TrustedKey {
        name: origin,
        key: (*key.verifying_key()).into(),
    }])
}

/// Fetches and verifies a receipt; the entry's type and payload.
fn verified_receipt(x: &Ctx, path: &str) -> Result<(String, Json), String> {
    let r = x.c.get(path)?;
    if r.status != 200 || !r.media_type().starts_with("text/plain") {
        return Err(format!("receipt {path}: {} {}", r.status, r.media_type()));
    }
    let proof = TlogProof::parse(&String::from_utf8_lossy(&r.body))
        .map_err(|e| format!("not a tlog-proof: {e}"))?;
    let (_, entry) = proof
        .verify_extra(&trusted(x)?)
        .map_err(|e| format!("the receipt does not verify: {e}"))?;
    let envelope: Json = serde_json::from_slice(entry).map_err(|e| e.to_string())?;
    let payload = STANDARD
        .decode(envelope["payload"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    Ok((
        envelope["type"].as_str().unwrap_or("").to_owned(),
        serde_json::from_slice(&payload).map_err(|e| e.to_string())?,
    ))
}

fn send_credits(
    x: &Ctx,
    from: &Account,
    to: &str,
    amount: i64,
    key: &str,
) -> Result<Reply, String> {
    x.send(
        "POST",
        "/mesh/credits/transfers",
        Some(&from.access),
        Some(&json!({"to": format!("user:{to}"), "amount": amount, "idempotency_key": key, "memo": "suite"})),
        &[],
    )
}

fn credits_users_move_only_their_own_credits_with_receipts(x: &Ctx) -> Result<(), String> {
    let alice = x.account("credits-alice", true)?;
    let bob = x.account("credits-bob", true)?;
    fund(x, &alice.id, 100)?;
    let r = x.send(
        "POST",
        "/mesh/credits/transfers",
        None,
        Some(&json!({"to": format!("user:{}", bob.id), "amount": 1, "idempotency_key": "anon"})),
        &[],
    )?;
    if r.status != 401 {
        return Err(format!("an anonymous transfer: {}", r.status));
    }
    let key = x.email("send");
    let t = want(&send_credits(x, &alice, &bob.id, 30, &key)?, 201, "send")?;
    let again = want(&send_credits(x, &alice, &bob.id, 30, &key)?, 200, "resend")?;
    if again["id"] != t["id"] || again["duplicate"] != true {
        return Err(format!("a resent transfer made another: {again}"));
    }
    expect_problem(
        &send_credits(x, &alice, &bob.id, 31, &key)?,
        422,
        "idempotency_key_reused",
    )?;
    expect_problem(
        &send_credits(x, &alice, &bob.id, 71, &x.email("over"))?,
        409,
        "insufficient_credits",
    )?;
    let (a, b) = (
        balance(x, &alice.access, &alice.id)?,
        balance(x, &bob.access, &bob.id)?,
    );
    if (a.available, b.available) != (70, 30) {
        return Err(format!("after one transfer and refusals: {a:?} {b:?}"));
    }
    // A receipt proves the transfer offline.
    let receipt = t["receipt"]
        .as_str()
        .ok_or_else(|| format!("no receipt: {t}"))?;
    let (ptype, payload) = verified_receipt(x, receipt)?;
    if ptype != economy::CREDIT_TRANSFER_V1 || payload["transfer"] != t["id"] {
        return Err(format!("the receipt's entry: {ptype} {payload}"));
    }
    // Accounts and transfers are private: bob sees no account of alice's.
    expect_problem(
        &x.send(
            "GET",
            &format!("/mesh/credits/accounts/user:{}", alice.id),
            Some(&bob.access),
            None,
            &[],
        )?,
        404,
        "account_not_found",
    )?;
    let carol = x.account("credits-carol", true)?;
    let tid = t["id"].as_str().unwrap_or("");
    expect_problem(
        &x.send(
            "GET",
            &format!("/mesh/credits/transfers/{tid}"),
            Some(&carol.access),
            None,
            &[],
        )?,
        404,
        "transfer_not_found",
    )?;
    want(
        &x.send(
            "GET",
            &format!("/mesh/credits/transfers/{tid}"),
            Some(&bob.access),
            None,
            &[],
        )?,
        200,
        "a party reads the transfer",
    )?;
    Ok(())
}

/// Every `task-completion/v1` entry in the log (public pages).
fn logged_completions(x: &Ctx) -> Result<Vec<(u64, Completion)>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let v = want(
            &x.c.get(&format!("/ledger/entries?start={start}"))?,
            200,
            "entries",
        )?;
        let entries = v["entries"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            return Ok(out);
        }
        for e in entries {
            let index = e["index"].as_u64().ok_or("an entry without index")?;
            start = index + 1;
            let bytes = STANDARD
                .decode(e["entry"].as_str().unwrap_or(""))
                .map_err(|e| e.to_string())?;
            let env: Json = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if env["type"] == economy::TASK_COMPLETION_V1 && env["principal"] == "service:mesh" {
                let payload = STANDARD
                    .decode(env["payload"].as_str().unwrap_or(""))
                    .map_err(|e| e.to_string())?;
                out.push((
                    index,
                    serde_json::from_slice(&payload).map_err(|e| e.to_string())?,
                ));
            }
        }
    }
}

/// A new node owner's node runs one paid task of a new user's: the owner
/// and the completion's log index.
pub fn completed_task(x: &Ctx, tag: &str) -> Result<(Account, u64), String> {
    let (owner, node) = active(x, &format!("{tag}-node"))?;
    let user = x.account(&format!("{tag}-user"), true)?;
    fund(x, &user.id, 1000)?;
    let v = want(
        &submit(x, &user.access, &wasm(tag.as_bytes(), 30_000, 1))?,
        201,
        "submit",
    )?;
    let id = v["task_id"].as_str().unwrap_or("").to_owned();
    let index = finish(x, &node, &id, b"worked")?;
    Ok((owner, index))
}

/// Waits for the current epoch (a minute, as deployments under test are
/// configured) to end, then has the admin close what has ended.
pub fn close_after_this_epoch(x: &Ctx) -> Result<Json, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    let wait = 60_000 - (now % 60_000) + 500;
    std::thread::sleep(std::time::Duration::from_millis(
        u64::try_from(wait).unwrap_or(60_500),
    ));
    let (_, admin) = x.admin()?;
    want(
        &x.send(
            "POST",
            "/mesh/credits/epochs/close",
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "close",
    )
}

fn credits_epochs_recompute_from_the_log_and_are_final_with_their_quorum(
    x: &Ctx,
) -> Result<(), String> {
    let (owner, index) = completed_task(x, "epoch")?;
    close_after_this_epoch(x)?;
    let list = want(&x.c.get("/mesh/credits/epochs?limit=100")?, 200, "epochs")?;
    let i = i64::try_from(index).unwrap_or(i64::MAX);
    let holding: Vec<&Json> = list["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            (e["from_index"].as_i64().unwrap_or(0)..e["through_index"].as_i64().unwrap_or(0))
                .contains(&i)
        })
        .collect();
    let [e] = holding.as_slice() else {
        return Err(format!(
            "completion {index} is in {} epochs: {list}",
            holding.len()
        ));
    };
    let epoch = e["epoch"].as_u64().ok_or("an epoch without number")?;
    let e = want(
        &x.c.get(&format!("/mesh/credits/epochs/{epoch}"))?,
        200,
        "epoch",
    )?;
    if e["state"] != "final" {
        return Err(format!(
            "a close with this coordinator's signature (k = 1): {e}"
        ));
    }
    // The close is signed by this coordinator's key, over the exact payload.
    let coordinator = edgecoder_kernel::SigningKey::from_secret(&x.target.coordinator_key)
        .map_err(|e| e.to_string())?;
    let close: edgecoder_proto::dsse::Envelope =
        serde_json::from_value(e["close"].clone()).map_err(|e| e.to_string())?;
    close
        .open(economy::ISSUANCE_EPOCH_V1, coordinator.verifying_key())
        .map_err(|err| format!("the close's signature: {err}"))?;
    // Anyone recomputes the allocation from the log alone.
    let completions = logged_completions(x)?;
    let (from, through) = (
        e["from_index"].as_u64().unwrap_or(0),
        e["through_index"].as_u64().unwrap_or(0),
    );
    let pool = e["pool"].as_u64().unwrap_or(0);
    let rows = economy::allocate(pool, &economy::epoch_work(&completions, from, through));
    if e["allocation_digest"] != economy::allocation_digest(epoch, pool, &rows).as_str() {
        return Err(format!(
            "the logged allocation is not the recomputed one: {e}"
        ));
    }
    let mine = format!("user:{}", owner.id);
    let row = rows
        .iter()
        .find(|r| r.account == mine)
        .ok_or_else(|| format!("the worker's owner has no allocation: {rows:?}"))?;
    let listed = e["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["account"] == mine.as_str())
        .ok_or("no allocation row")?;
    if listed["amount"] != row.amount {
        return Err(format!("allocation {listed} want {}", row.amount));
    }
    // Final: credited, spendable, and provable by its credit entry.
    let issued = posted(
        x,
        &owner.access,
        &owner.id,
        &format!("issuance epoch {epoch}"),
    )?;
    if issued != [i64::try_from(row.amount).unwrap_or(-1)] {
        return Err(format!("issuance postings {issued:?}"));
    }
    if balance(x, &owner.access, &owner.id)?.pending != 0 {
        return Err("a final close still pending".into());
    }
    let credit = listed["ledger_index"].as_u64().ok_or("no credit entry")?;
    let (ptype, payload) = verified_receipt(x, &format!("/ledger/entries/{credit}/receipt"))?;
    if ptype != economy::ISSUANCE_EPOCH_V1 || payload["account"] != mine.as_str() {
        return Err(format!("the credit entry: {ptype} {payload}"));
    }
    let identity = want(&x.c.get("/mesh/identity")?, 200, "identity")?;
    let published = identity["coordinator_key"]["public_key"]
        .as_str()
        .unwrap_or("");
    let point = URL_SAFE_NO_PAD
        .decode(published)
        .map_err(|e| e.to_string())?;
    if point.as_slice()
        != coordinator
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
    {
        return Err("the close is signed by a key /mesh/identity does not publish".into());
    }
    Ok(())
}
