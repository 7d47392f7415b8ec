//! The economy where time matters, driven in-process (see `inprocess`): epoch
//! boundaries decided by log index, closes that wait for their quorum,
//! conflicting closes, refunds of expired tasks, and conservation of credits
//! over randomised runs. The black-box suite checks the routes on every
//! runtime.

mod inprocess;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::Clock;
use edgecoder_kernel::http_types::Method;
use edgecoder_proto::economy::{self, Completion};
use inprocess::{Env, Node, blob, block_on};
use serde_json::{Value as Json, json};

/// The test clock starts exactly on a minute: epoch `START / 60_000`.
const START_MS: i64 = 1_800_000_000_000;

struct World {
    e: Env,
    /// The admin's token and when it signed in (tokens and step-up age
    /// with the test clock).
    signed_in: std::cell::RefCell<(i64, String)>,
}

impl World {
    async fn new(settings: &[(&str, &str)]) -> World {
        let mut all = vec![("economy_epoch_secs", "60"), ("economy_epoch_pool", "1000")];
        all.extend_from_slice(settings);
        let e = Env::with(&all).await;
        assert_eq!(e.clock.now_ms(), START_MS);
        let admin = e.user("admin@example.com", true).await;
        e.bootstrap(&admin, 1_000_000).await;
        let signed_in = std::cell::RefCell::new((START_MS, admin));
        World { e, signed_in }
    }

    /// The admin's token, signed in again once the last sign-in is older
    /// than the step-up window.
    async fn admin(&self) -> String {
        let (at, token) = self.signed_in.borrow().clone();
        if self.e.clock.now_ms() - at < 5 * 60_000 {
            return token;
        }
        let (s, v) = self
            .e
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": "admin@example.com", "password": inprocess::PASSWORD, "client": "device"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let token = v["access_token"].as_str().expect("token").to_owned();
        *self.signed_in.borrow_mut() = (self.e.clock.now_ms(), token.clone());
        token
    }

    /// A verified user funded with `credits` by the admin.
    async fn funded(&self, email: &str, credits: i64) -> (String, String) {
        let token = self.e.user(email, false).await;
        let id = self.e.user_id(&token).await;
        if credits > 0 {
            let (s, v) = self
                .e
                .call(
                    Method::POST,
                    "/mesh/credits/transfers",
                    Some(&self.admin().await),
                    Some(json!({"to": format!("user:{id}"), "amount": credits, "idempotency_key": email})),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        (token, format!("user:{id}"))
    }

    /// An approved node of a new owner; the owner's account.
    async fn worker(&self, name: &str) -> (Node, String) {
        let owner = self.e.user(&format!("{name}@example.com"), false).await;
        let account = format!("user:{}", self.e.user_id(&owner).await);
        let node = self.e.node(&owner, name).await;
        let (s, v) = self
            .e
            .call(
                Method::POST,
                &format!("/mesh/nodes/{name}/approve"),
                Some(&self.admin().await),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(self.e.heartbeat(&node).await.0, 200);
        (node, account)
    }

    async fn submit(&self, token: &str, input: &str, replicas: i64) -> (u16, Json) {
        let task = json!({"kind": "wasm", "module": blob(b"\0asm\x01\0\0\0"), "input": blob(input.as_bytes()),
            "timeout_ms": 10_000, "resources": {"memory_mb": 16, "fuel": 1000}, "replicas": replicas});
        self.e
            .call(Method::POST, "/mesh/tasks", Some(token), Some(task))
            .await
    }

    /// Pulls with `node`; the task id and lease, if it got one.
    async fn pull(&self, node: &Node) -> Option<(String, String)> {
        let (s, v) = self
            .e
            .send(
                self.e
                    .signed(node, Method::POST, "/mesh/tasks/pull", &json!({})),
            )
            .await;
        (s == 200).then(|| {
            (
                v["task"]["id"].as_str().unwrap_or_default().to_owned(),
                v["lease_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
    }

    async fn report(&self, node: &Node, task: &str, lease: &str, output: &[u8]) -> (u16, Json) {
        let result = json!({"lease_id": lease, "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(output), "output_digest": format!("blake3:{}", blake3::hash(output).to_hex())});
        self.e
            .send(self.e.signed(
                node,
                Method::POST,
                &format!("/mesh/tasks/{task}/result"),
                &result,
            ))
            .await
    }

    /// Submits one task and has `node` complete it; its completion's index.
    async fn complete(&self, token: &str, node: &Node, input: &str) -> u64 {
        let (s, v) = self.submit(token, input, 1).await;
        assert_eq!(s, 201, "{v}");
        let (task, lease) = self.pull(node).await.expect("a task");
        assert_eq!(task, v["task_id"].as_str().unwrap_or_default());
        let (s, v) = self.report(node, &task, &lease, b"out").await;
        assert_eq!(s, 200, "{v}");
        v["ledger_index"].as_u64().expect("index")
    }

    async fn close(&self) -> Json {
        let (s, v) = self
            .e
            .call(
                Method::POST,
                "/mesh/credits/epochs/close",
                Some(&self.admin().await),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn epochs(&self) -> Vec<Json> {
        let (s, v) = self
            .e
            .call(Method::GET, "/mesh/credits/epochs?limit=100", None, None)
            .await;
        assert_eq!(s, 200, "{v}");
        v["epochs"].as_array().cloned().unwrap_or_default()
    }

    async fn balance(&self, account: &str) -> Json {
        let (s, v) = self
            .e
            .call(
                Method::GET,
                &format!("/mesh/credits/accounts/{account}"),
                Some(&self.admin().await),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn supply(&self) -> Json {
        let (s, v) = self
            .e
            .call(
                Method::GET,
                "/mesh/credits/supply",
                Some(&self.admin().await),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Every completion in the log, by index.
    async fn completions(&self) -> Vec<(u64, Completion)> {
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let (s, v) = self
                .e
                .call(
                    Method::GET,
                    &format!("/ledger/entries?start={start}"),
                    None,
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                return out;
            }
            for e in entries {
                let index = e["index"].as_u64().expect("index");
                start = index + 1;
                let bytes = STANDARD
                    .decode(e["entry"].as_str().unwrap_or(""))
                    .expect("b64");
                let env: Json = serde_json::from_slice(&bytes).expect("envelope");
                if env["type"] == economy::TASK_COMPLETION_V1 {
                    let payload = STANDARD
                        .decode(env["payload"].as_str().unwrap_or(""))
                        .expect("b64");
                    out.push((index, serde_json::from_slice(&payload).expect("completion")));
                }
            }
        }
    }
}

fn int(v: &Json) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[test]
fn a_completion_at_an_epoch_boundary_counts_in_exactly_one_epoch() {
    block_on(async {
        let w = World::new(&[]).await;
        let (user, _) = w.funded("submitter@example.com", 10_000).await;
        let (a, account_a) = w.worker("node-a").await;
        let (b, account_b) = w.worker("node-b").await;
        let first = w.complete(&user, &a, "one").await;
        // The last millisecond of the first epoch, and the first of the
        // next: a clock would put these in different epochs; the log index
        // puts both in the first close, which has not run yet.
        w.e.advance_ms(59_999);
        let second = w.complete(&user, &b, "two").await;
        w.e.advance_ms(1);
        let third = w.complete(&user, &a, "three").await;
        let closed = w.close().await;
        assert_eq!(closed["closed"], json!([START_MS / 60_000]), "{closed}");
        // Accepted after the close: the next epoch's.
        let fourth = w.complete(&user, &b, "four").await;
        w.e.advance_ms(60_000);
        w.close().await;
        let epochs = w.epochs().await;
        let logged: Vec<&Json> = epochs.iter().filter(|e| int(&e["accounts"]) > 0).collect();
        assert_eq!(logged.len(), 2, "{epochs:?}");
        let completions = w.completions().await;
        for index in [first, second, third, fourth] {
            let holding = logged
                .iter()
                .filter(|e| {
                    (int(&e["from_index"])..int(&e["through_index"]))
                        .contains(&i64::try_from(index).unwrap_or(i64::MAX))
                })
                .count();
            assert_eq!(holding, 1, "completion {index} is in {holding} epochs");
        }
        // Each close is what the log's completions give, row for row.
        let mut credited: BTreeMap<String, i64> = BTreeMap::new();
        for e in &logged {
            let (from, through) = (int(&e["from_index"]), int(&e["through_index"]));
            let work = economy::epoch_work(
                &completions,
                u64::try_from(from).unwrap_or(0),
                u64::try_from(through).unwrap_or(0),
            );
            let rows = economy::allocate(1000, &work);
            let epoch = e["epoch"].as_u64().expect("epoch");
            assert_eq!(
                e["allocation_digest"],
                economy::allocation_digest(epoch, 1000, &rows).as_str()
            );
            assert_eq!(e["state"], "final", "k = 1: this coordinator's signature");
            for r in rows {
                *credited.entry(r.account).or_default() += i64::try_from(r.amount).unwrap_or(0);
            }
        }
        assert_eq!(credited.values().sum::<i64>(), 2000);
        // The first epoch: a has two tasks, b one, all priced alike; the
        // second: b's one.
        assert_eq!(
            (credited[&account_a], credited[&account_b]),
            (667, 333 + 1000)
        );
        let s = w.supply().await;
        assert_eq!(s["balanced"], true, "{s}");
        assert_eq!(int(&s["issued"]), 1_000_000 + 2000);
    });
}

#[test]
fn a_close_without_the_quorum_is_not_spendable() {
    block_on(async {
        let w = World::new(&[("economy_close_quorum", "2")]).await;
        let (user, _) = w.funded("submitter@example.com", 10_000).await;
        let (a, account_a) = w.worker("node-a").await;
        w.complete(&user, &a, "one").await;
        w.e.advance_ms(60_000);
        w.close().await;
        let epochs = w.epochs().await;
        let e = epochs
            .iter()
            .find(|e| int(&e["accounts"]) > 0)
            .expect("a close");
        assert_eq!(e["state"], "pending");
        assert_eq!(e["close"]["signatures"].as_array().map(Vec::len), Some(1));
        let b = w.balance(&account_a).await;
        assert_eq!(int(&b["pending"]), 1000, "{b}");
        let available = int(&b["available"]);
        // The payment for the task is spendable; the pending issuance is not.
        let owner = w.e.user("node-a@example.com", false).await;
        let (_, to) = w.funded("friend@example.com", 0).await;
        let (s, v) =
            w.e.call(
                Method::POST,
                "/mesh/credits/transfers",
                Some(&owner),
                Some(json!({"to": to, "amount": available + 1, "idempotency_key": "too-much"})),
            )
            .await;
        assert_eq!((s, v["code"].as_str()), (409, Some("insufficient_credits")));
        let (s, v) =
            w.e.call(
                Method::POST,
                "/mesh/credits/transfers",
                Some(&owner),
                Some(json!({"to": to, "amount": available, "idempotency_key": "all"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        // More closes do not make it final either.
        w.e.advance_ms(60_000);
        w.close().await;
        assert_eq!(int(&w.balance(&account_a).await["pending"]), 1000);
        assert_eq!(int(&w.supply().await["issued"]), 1_000_000);
    });
}

#[test]
fn a_conflicting_second_close_is_refused_and_alerted() {
    block_on(async {
        let w = World::new(&[]).await;
        let (user, _) = w.funded("submitter@example.com", 10_000).await;
        let (a, _) = w.worker("node-a").await;
        w.complete(&user, &a, "one").await;
        w.e.advance_ms(60_000);
        w.close().await;
        let epochs = w.epochs().await;
        let e = epochs
            .iter()
            .find(|e| int(&e["accounts"]) > 0)
            .expect("a close")
            .clone();
        let epoch = e["epoch"].as_u64().expect("epoch");
        let from = e["from_index"].as_u64().expect("from");
        let through = e["through_index"].as_u64().expect("through");
        // A second scheduler that read a longer log computes another close
        // of the same epoch: refused, and alerted.
        w.complete(&user, &a, "two").await;
        let ctx = w.e.services.new_context(None);
        let again = edgecoder_mesh::epochs::commit(&w.e.services, &ctx, epoch, from, through + 3)
            .await
            .expect_err("a second, different close");
        assert!(
            matches!(again, edgecoder_mesh::Error::EpochConflict),
            "{again}"
        );
        // The same close again is idempotent.
        edgecoder_mesh::epochs::commit(&w.e.services, &ctx, epoch, from, through)
            .await
            .expect("the same close");
        let (s, v) =
            w.e.call(
                Method::GET,
                "/mesh/audit?action=mesh.epoch.conflict",
                Some(&w.admin().await),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
        let kept = w.epochs().await;
        let now = kept
            .iter()
            .find(|x| x["epoch"] == e["epoch"])
            .expect("kept");
        assert_eq!(now["allocation_digest"], e["allocation_digest"]);
    });
}

#[test]
fn an_expired_task_is_refunded_once() {
    block_on(async {
        let w = World::new(&[]).await;
        let (user, account) = w.funded("submitter@example.com", 100).await;
        let (a, _) = w.worker("node-a").await;
        let (s, v) = w.submit(&user, "never", 1).await;
        assert_eq!(s, 201, "{v}");
        let price = int(&v["price"]);
        let b = w.balance(&account).await;
        assert_eq!(
            (int(&b["available"]), int(&b["escrowed"])),
            (100 - price, price)
        );
        // Three leases (the default attempts), each let lapse.
        for _ in 0..3 {
            assert!(w.pull(&a).await.is_some());
            w.e.advance_ms(16_000);
        }
        assert!(w.pull(&a).await.is_none());
        let b = w.balance(&account).await;
        assert_eq!((int(&b["available"]), int(&b["escrowed"])), (100, 0), "{b}");
        // Sweeps and ticks later do not refund it again.
        w.close().await;
        assert!(w.pull(&a).await.is_none());
        assert_eq!(int(&w.balance(&account).await["available"]), 100);
        assert_eq!(w.supply().await["balanced"], true);
    });
}

/// A small deterministic generator (the runs must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn conservation_holds_over_randomised_runs() {
    let mut exercised = [0i64; 4];
    for seed in [1u64, 7, 42] {
        let counts = block_on(async {
            let w = World::new(&[]).await;
            let mut rng = Lcg(seed);
            let mut users = Vec::new();
            for i in 0..3 {
                users.push(w.funded(&format!("user{i}@example.com"), 60 + 40 * i).await);
            }
            let mut nodes = Vec::new();
            for i in 0..3 {
                nodes.push(w.worker(&format!("node-{i}")).await.0);
            }
            for step in 0..60 {
                match rng.next(6) {
                    0 | 1 => {
                        let (token, _) = &users[usize::try_from(rng.next(3)).unwrap_or(0)];
                        let replicas = 1 + i64::try_from(rng.next(2)).unwrap_or(0);
                        let (s, v) = w.submit(token, &format!("s{seed}-{step}"), replicas).await;
                        assert!(
                            s == 201 || (s == 409 && v["code"] == "insufficient_credits"),
                            "{s} {v}"
                        );
                    }
                    2 | 3 => {
                        let node = &nodes[usize::try_from(rng.next(3)).unwrap_or(0)];
                        if let Some((task, lease)) = w.pull(node).await {
                            // Replicas sometimes disagree.
                            let out: &[u8] = if rng.next(4) == 0 { b"odd" } else { b"out" };
                            let (s, v) = w.report(node, &task, &lease, out).await;
                            assert_eq!(s, 200, "{v}");
                        }
                    }
                    4 => {
                        w.e.advance_ms(i64::try_from(5_000 + rng.next(20_000)).unwrap_or(0))
                    }
                    _ => {
                        w.e.advance_ms(60_000);
                        w.close().await;
                    }
                }
                let s = w.supply().await;
                assert_eq!(s["balanced"], true, "seed {seed} step {step}: {s}");
                assert_eq!(int(&s["negative_accounts"]), 0);
            }
            // Whatever is still running expires and is refunded; the last
            // epochs close.
            for _ in 0..4 {
                w.e.advance_ms(60_000);
                for node in &nodes {
                    let _ = w.pull(node).await;
                }
            }
            w.close().await;
            let s = w.supply().await;
            let pools: i64 = w
                .epochs()
                .await
                .iter()
                .filter(|e| e["state"] == "final")
                .map(|e| int(&e["pool"]))
                .sum();
            assert_eq!(s["balanced"], true, "{s}");
            assert_eq!(int(&s["issued"]), 1_000_000 + pools, "seed {seed}: {s}");
            let held: i64 = [
                w.balance("fees").await,
                w.balance("escrow").await,
                w.balance("issuance").await,
            ]
            .iter()
            .map(|b| int(&b["available"]))
            .sum();
            let mut everyone = held;
            let mut accounts: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
            for i in 0..3 {
                let t = w.e.user(&format!("node-{i}@example.com"), false).await;
                accounts.push(format!("user:{}", w.e.user_id(&t).await));
            }
            accounts.push(format!("user:{}", w.e.user_id(&w.admin().await).await));
            for a in &accounts {
                let b = w.balance(a).await;
                assert!(int(&b["available"]) >= 0, "{a}: {b}");
                everyone += int(&b["available"]);
            }
            // Nobody else holds credits: every account sums to zero.
            assert_eq!(everyone, 0, "seed {seed}");
            let mut counts = [int(&s["fees"]), pools, 0, 0];
            for (i, action) in ["mesh.task.replica_disagreement", "mesh.credits.refund"]
                .iter()
                .enumerate()
            {
                let (_, v) =
                    w.e.call(
                        Method::GET,
                        &format!("/mesh/audit?action={action}&limit=1000"),
                        Some(&w.admin().await),
                        None,
                    )
                    .await;
                counts[2 + i] =
                    i64::try_from(v["events"].as_array().map_or(0, Vec::len)).unwrap_or(0);
            }
            counts
        });
        for (total, n) in exercised.iter_mut().zip(counts) {
            *total += n;
        }
    }
    // The runs went through payments, issuance, disagreements and refunds.
    assert!(exercised.iter().all(|n| *n > 0), "{exercised:?}");
}

#[test]
fn a_task_nobody_takes_is_refunded_when_its_time_in_the_queue_ends() {
    block_on(async {
        let w = World::new(&[("mesh_queue_ttl_secs", "3600")]).await;
        let (user, account) = w.funded("submitter@example.com", 100).await;
        // Two replicas, and only one owner's node in the mesh: never runs.
        let (a, _) = w.worker("node-a").await;
        let (s, v) = w.submit(&user, "lonely", 2).await;
        assert_eq!(s, 201, "{v}");
        let (task, lease) = w.pull(&a).await.expect("the first replica");
        let (s, v) = w.report(&a, &task, &lease, b"out").await;
        assert_eq!((s, v["status"].as_str()), (200, Some("queued")), "{v}");
        assert!(
            w.pull(&a).await.is_none(),
            "no second opinion from one owner"
        );
        let b = w.balance(&account).await;
        assert!(int(&b["escrowed"]) > 0, "{b}");
        assert_eq!(int(&b["available"]) + int(&b["escrowed"]), 100, "{b}");
        w.e.advance_ms(3_600_001);
        assert!(w.pull(&a).await.is_none());
        let b = w.balance(&account).await;
        assert_eq!((int(&b["available"]), int(&b["escrowed"])), (100, 0), "{b}");
        let (s, t) =
            w.e.call(
                Method::GET,
                &format!("/mesh/tasks/{task}"),
                Some(&w.admin().await),
                None,
            )
            .await;
        assert_eq!(s, 200, "{t}");
        assert_eq!(
            (t["status"].as_str(), t["error_code"].as_str()),
            (Some("failed"), Some("queue_expired"))
        );
    });
}

#[test]
fn a_completion_the_ledger_could_not_record_is_logged_and_paid_by_the_tick() {
    block_on(async {
        let w = World::new(&[]).await;
        let (user, _) = w.funded("submitter@example.com", 100).await;
        let (a, owner) = w.worker("node-a").await;
        let (s, v) = w.submit(&user, "later", 1).await;
        assert_eq!(s, 201, "{v}");
        let (task, lease) = w.pull(&a).await.expect("task");
        w.e.ledger_down.set(true);
        let (s, _) = w.report(&a, &task, &lease, b"out").await;
        assert_eq!(s, 503);
        w.e.ledger_down.set(false);
        // Nothing is paid before the completion is in the log.
        assert_eq!(int(&w.balance(&owner).await["available"]), 0);
        // The node never comes back; the scheduled tick logs and pays.
        w.e.advance_ms(61_000);
        let (s, v) =
            w.e.call(Method::POST, "/mesh/federation/tick", None, None)
                .await;
        assert_eq!(s, 200, "{v}");
        let (s, t) =
            w.e.call(
                Method::GET,
                &format!("/mesh/tasks/{task}"),
                Some(&user),
                None,
            )
            .await;
        assert_eq!(s, 200, "{t}");
        assert_eq!(t["status"], "completed");
        assert!(t["ledger_index"].as_u64().is_some(), "{t}");
        let paid = int(&w.balance(&owner).await["available"]);
        assert!(paid > 0, "the owner was paid: {paid}");
        // The node resending its result now gets the first answer.
        let (s, v) = w.report(&a, &task, &lease, b"out").await;
        assert_eq!(
            (s, v["ledger_index"].clone()),
            (200, t["ledger_index"].clone()),
            "{v}"
        );
        assert_eq!(
            int(&w.balance(&owner).await["available"]),
            paid,
            "paid once"
        );
    });
}
