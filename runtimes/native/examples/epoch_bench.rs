//! Epoch-close benchmark on the native runtime's SQLite (a temporary file):
//! a log holding `tasks` accepted task completions spread over `nodes` node
//! owners, then the close of their epoch (reading the range back from the
//! log, the largest-remainder allocation, storing it, logging the close and
//! one credit entry per owner, this coordinator's signature and, with
//! k = 1, one issuance transfer per owner), then `edgecoder verify --db
//! --epochs` over the result, against `verify --db` alone.
//!
//! `cargo run --release -p edgecoder --example epoch_bench [tasks] [nodes]`
//! (numbers are recorded in `bench/README.md`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use edgecoder_gateway::Selection;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{
    Clock, CollectDeferred, Request, RequestContext, Services, Sql, Statement, migrations,
};
use edgecoder_ledger::log::{self, NewEntry};
use edgecoder_native::platform::{NativeConfig, OsRng, SystemClock, UreqOutbound};
use edgecoder_native::sqlite::{Db, SqliteKv};
use edgecoder_native::verify;

/// Epochs of a minute, starting on one.
const START_MS: i64 = 1_800_000_000_000;
const POOL: &str = "1000000";

struct BenchClock(Cell<i64>);
impl Clock for BenchClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

fn completions(from: usize, n: usize, nodes: usize) -> Vec<NewEntry> {
    (from..from + n)
        .map(|i| {
            let payload = serde_json::json!({
                "task_id": format!("t{i:08}"),
                "node_id": format!("n{:05}", i % nodes),
                "submitter": format!("user:s{:03}", i % 997),
                "ok": true,
                "output_digest": format!("blake3:{:064x}", i),
                "price": 41 + (i % 7),
                "work": 41 + (i % 7),
                "payees": [format!("user:o{:05}", i % nodes)],
            });
            NewEntry {
                payload_type: edgecoder_proto::economy::TASK_COMPLETION_V1.into(),
                payload: payload.to_string().into_bytes(),
                principal: "service:mesh".into(),
                idempotency_key: format!("task-completion:t{i:08}:lease"),
            }
        })
        .collect()
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgecoder.sqlite");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut cfg = NativeConfig::new(None);
    cfg.set("mode", "development");
    for (name, key) in ["signing_key", "coordinator_key", "checkpoint_key"]
        .iter()
        .map(|n| (*n, edgecoder_kernel::SigningKey::generate(&OsRng)))
    {
        cfg.set(name, key.to_pkcs8_base64().expect("key"));
    }
    cfg.set("economy_epoch_secs", "60");
    cfg.set("economy_epoch_pool", POOL);
    cfg.set("checkpoint_interval_ms", "0");
    let loaded = edgecoder_gateway::Loaded::load(&cfg, Selection::All).expect("settings");
    let db = Db::open(&path).expect("db");
    let kv = SqliteKv::open(&dir.path().join("kv.sqlite"), Arc::new(SystemClock)).expect("kv");
    let clock = Rc::new(BenchClock(Cell::new(START_MS)));
    let services = Rc::new(Services {
        sql: Rc::new(db.clone()),
        kv: Rc::new(kv.handle()),
        clock: clock.clone(),
        rng: Rc::new(OsRng),
        outbound: Rc::new(UreqOutbound::default()),
        defer: Rc::new(CollectDeferred::default()),
        ledger: Rc::new(edgecoder_ledger::client::InProcess {
            sql: Rc::new(db.clone()),
            clock: clock.clone(),
            rng: Rc::new(OsRng),
        }),
        signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
        identity: Rc::new(edgecoder_auth::client::InProcess {
            sql: Rc::new(db.clone()),
            clock: clock.clone(),
            config: loaded.config.clone(),
        }),
        config: loaded.config.clone(),
        settings: loaded.settings.clone(),
    });
    let router = edgecoder_gateway::router(Selection::All, &loaded.config);

    rt.block_on(async {
        migrations::apply(&db, clock.as_ref(), &OsRng, "system:bench")
            .await
            .expect("migrate");
        let t = Instant::now();
        let mut i = 0;
        while i < tasks {
            let n = log::MAX_BATCH.min(tasks - i);
            log::append(&db, clock.as_ref(), &OsRng, &completions(i, n, nodes))
                .await
                .expect("append");
            i += n;
        }
        println!("log of {tasks} completions over {nodes} owners written in {:.1} s", secs(t));
        let before = log::head(&db).await.expect("head").0;
        clock.0.set(START_MS + 60_000);
        let ctx = services.new_context(None);
        let epoch = u64::try_from(START_MS / 60_000).expect("epoch");
        let t = Instant::now();
        edgecoder_mesh::epochs::close(&services, &ctx, epoch)
            .await
            .expect("close");
        let closed = secs(t);
        let after = log::head(&db).await.expect("head").0;
        let rows = db
            .execute(Statement::new(
                "SELECT final, accounts, pool FROM econ_epochs WHERE epoch = ?1",
                vec![edgecoder_kernel::Value::Integer(i64::try_from(epoch).expect("epoch"))],
            ))
            .await
            .expect("epoch row");
        assert_eq!(rows.get_i64(0, "final"), Some(1), "the close is final");
        println!(
            "epoch close: {closed:.2} s, {} log entries written (1 close + {} credits), {} accounts, final with k = 1",
            after - before,
            after - before - 1,
            rows.get_i64(0, "accounts").unwrap_or_default()
        );
        let supply = edgecoder_mesh::store::credits::supply(&db).await.expect("supply");
        assert_eq!((supply.sum, supply.negative), (0, 0));
        assert_eq!(supply.issued.to_string(), POOL);

        // A signed checkpoint over everything, for the verifier.
        let mut req = Request::new(Method::GET, "/ledger/checkpoint", RequestContext::default());
        req.ctx.request_id = "bench".into();
        let resp = router.handle(services.clone(), req).await;
        assert_eq!(resp.status().as_u16(), 200, "checkpoint");
    });

    let keys = |name: &str| {
        let secret = cfg_secret(&cfg, name);
        edgecoder_kernel::SigningKey::from_secret(&secret).expect("key")
    };
    let checkpoint = keys("checkpoint_key");
    let coordinator = keys("coordinator_key");
    let origin = rt.block_on(async {
        let mut req = Request::new(Method::GET, "/ledger/keys", RequestContext::default());
        req.ctx.request_id = "bench".into();
        let resp = router.handle(services.clone(), req).await;
        let v: serde_json::Value = serde_json::from_slice(resp.body()).expect("keys");
        v["origin"].as_str().expect("origin").to_owned()
    });
    let run = |epochs: bool| {
        let t = Instant::now();
        let out = verify::run(&verify::Options {
            source: verify::Source::Db(path.clone()),
            trusted: vec![edgecoder_tlog::checkpoint::TrustedKey {
                name: origin.clone(),
                key: (*checkpoint.verifying_key()).into(),
            }],
            origin: Some(origin.clone()),
            state: dir.path().join(format!("state-{epochs}.json")),
            entry: None,
            witnesses: Vec::new(),
            min_cosignatures: 0,
            epochs,
            coordinators: vec![*coordinator.verifying_key()],
            quorum: usize::from(epochs),
        })
        .expect("verify");
        (secs(t), out)
    };
    let (plain, _) = run(false);
    let (with, out) = run(true);
    println!("verify --db: {plain:.2} s; verify --db --epochs: {with:.2} s");
    println!("{out}");
}

/// The secret a setting was given (the bench set it above).
fn cfg_secret(cfg: &NativeConfig, name: &str) -> String {
    use edgecoder_kernel::ConfigSource as _;
    cfg.secret(name).expect("set above")
}
