//! Ledger benchmarks on the native runtime's SQLite (a temporary file):
//! append throughput (one writer, and 8 writers each with its own connection
//! racing on the compare-and-set), inclusion and consistency proof times at
//! 10^4, 10^5 and 10^6 leaves, and `edgecoder verify --db` throughput against
//! the raw cost of hashing every entry.
//!
//! `cargo run --release -p edgecoder --example ledger_bench [max_leaves]`
//! (numbers are recorded in `bench/README.md`).

use std::time::Instant;

use edgecoder_kernel::Sql;
use edgecoder_ledger::log::{self, NewEntry};
use edgecoder_native::platform::{OsRng, SystemClock};
use edgecoder_native::sqlite::Db;
use edgecoder_tlog::merkle::{Hasher, Sha256};

const BATCH: usize = 100;

fn entries(tag: &str, from: usize, n: usize) -> Vec<NewEntry> {
    (from..from + n)
        .map(|i| NewEntry {
            payload_type: "edgecoder.dev/audit/v1".into(),
            payload: format!("{tag} entry {i} with a payload of typical size for an audit record")
                .into_bytes(),
            principal: "service".into(),
            idempotency_key: format!("{tag}-{i}"),
        })
        .collect()
}

fn median_us(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn grow(db: &Db, tag: &str, from: usize, to: usize) -> f64 {
    let started = Instant::now();
    let mut i = from;
    while i < to {
        let n = BATCH.min(to - i);
        log::append(db, &SystemClock, &OsRng, &entries(tag, i, n))
            .await
            .expect("append");
        i += n;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = (to - from) as f64 / started.elapsed().as_secs_f64();
    rate
}

async fn proofs(db: &Db, size: u64) {
    let mut inc = Vec::new();
    let mut con = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        log::inclusion_proof(db, index, size)
            .await
            .expect("inclusion");
        inc.push(t.elapsed().as_secs_f64() * 1e6);
        let first = 1 + x % (size - 1);
        let t = Instant::now();
        log::consistency_proof(db, first, size)
            .await
            .expect("consistency");
        con.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "| {size} | {:.0} µs | {:.0} µs |",
        median_us(inc),
        median_us(con)
    );
}

fn main() {
    let max: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgecoder.sqlite");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = Db::open(&path).expect("db");
    rt.block_on(async {
        edgecoder_kernel::migrations::apply(&db, &SystemClock, &OsRng, "system:bench")
            .await
            .expect("migrate");
    });

    println!("## Appends (batches of {BATCH})");
    let single = rt.block_on(grow(&db, "single", 0, 20_000));
    println!("one writer: {single:.0} appends/s");
    let writers = 8;
    let per = 2_500;
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let db = Db::open(&path).expect("db");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let mut i = 0;
                    while i < per {
                        log::append(
                            &db,
                            &SystemClock,
                            &OsRng,
                            &entries(&format!("w{w}"), i, BATCH),
                        )
                        .await
                        .expect("append");
                        i += BATCH;
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    #[allow(clippy::cast_precision_loss)]
    let eight = (writers * per) as f64 / started.elapsed().as_secs_f64();
    println!("{writers} writers (own connections, racing): {eight:.0} appends/s");

    println!("\n## Proofs (median of 200, includes the SQLite reads)");
    println!("| leaves | inclusion | consistency |\n|---|---|---|");
    let mut size = rt.block_on(async { log::head(&db).await.expect("head").0 });
    for target in [10_000u64, 100_000, 1_000_000] {
        if target > max as u64 {
            break;
        }
        if size < target {
            rt.block_on(grow(
                &db,
                "grow",
                usize::try_from(size).unwrap_or(0),
                usize::try_from(target).unwrap_or(0),
            ));
        }
        // Proofs at exactly `target` leaves (the tree may be larger already).
        rt.block_on(proofs(&db, target));
        size = size.max(target);
    }

    // Raw cost: recomputing the head in memory from the stored entry bytes
    // (every leaf hash and every interior hash), with no I/O.
    let raw = rt.block_on(async {
        let rows = db
            .execute(edgecoder_kernel::Statement::new(
                "SELECT entry FROM ledger_entries ORDER BY idx",
                vec![],
            ))
            .await
            .expect("entries");
        let started = Instant::now();
        let mut frontier = edgecoder_tlog::merkle::Frontier::new();
        for i in 0..rows.rows.len() {
            frontier.push::<Sha256>(Sha256::leaf(rows.get_blob(i, "entry").unwrap_or_default()));
        }
        std::hint::black_box(frontier.root::<Sha256>());
        #[allow(clippy::cast_precision_loss)]
        let rate = rows.rows.len() as f64 / started.elapsed().as_secs_f64();
        rate
    });
    println!("\nraw cost, head recomputed in memory from the entries: {raw:.0} entries/s");
    // A signed checkpoint of the whole log, for `edgecoder verify --db`.
    let key = edgecoder_kernel::SigningKey::generate(&OsRng);
    rt.block_on(async {
        let (size, root) = log::head(&db).await.expect("head");
        let cp = edgecoder_tlog::checkpoint::Checkpoint {
            origin: "bench.example/ledger".into(),
            size,
            root,
        };
        let note = edgecoder_tlog::checkpoint::sign(&cp, &cp.origin, key.ecdsa()).expect("sign");
        db.execute(edgecoder_kernel::Statement::new(
            "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, 0)",
            vec![
                i64::try_from(size).unwrap_or(0).into(),
                root.to_vec().into(),
                note.into(),
            ],
        ))
        .await
        .expect("checkpoint");
    });
    use base64::Engine as _;
    use p256::pkcs8::EncodePublicKey;
    let spki = base64::engine::general_purpose::STANDARD.encode(
        key.verifying_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes(),
    );
    println!(
        "verify with: edgecoder verify --db {} --key {spki} --origin bench.example/ledger --state /tmp/bench-verify.json",
        path.display()
    );
    // Keep the file for the verify run the bench script does next.
    std::mem::forget(dir);
}
