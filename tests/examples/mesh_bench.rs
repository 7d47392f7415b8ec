//! Mesh benchmarks against a running deployment started with
//! `insecure_test_routes` (the bench route and the development outbox) and
//! a bootstrap secret (to approve nodes):
//!
//! - `cpu`: the CPU a signed heartbeat costs *inside* the runtime: the bench
//!   route runs the signature check (and, for `heartbeat_cpu`, telemetry
//!   parsing, the policy decision and the answer's JSON) N times in one
//!   request; per operation = (median wall at N=k − median at N=1) / (k − 1).
//! - `endpoints`: median wall time of whole signed heartbeats (signature,
//!   nonce and rate-limit writes, telemetry update, policy), one client.
//! - `load`: signed heartbeats from C approved nodes (one client thread
//!   each) for D seconds: requests/s and the latency p50/p99.
//!
//! `EDGECODER_BENCH_BOOTSTRAP_SECRET=… cargo run --release -p edgecoder-conformance --example mesh_bench -- <base-url> [cpu|load]...`
//! (`bench/run.sh` starts the runtimes and runs it.)

use std::time::{Duration, Instant};

use edgecoder_conformance::identity::Ctx;
use edgecoder_conformance::mesh::{self, Node};
use edgecoder_conformance::{Client, Target};
use serde_json::{Value as Json, json};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_once(c: &Client, op: &str, n: u32) {
    let body = serde_json::to_vec(&json!({"op": op, "iterations": n})).unwrap_or_default();
    let r = c
        .send_with(
            "POST",
            "/mesh/_test/bench",
            &[("content-type", "application/json")],
            &body,
        )
        .map(|r| (r.status, r.json().unwrap_or(Json::Null)));
    match r {
        Ok((200, v)) if v["ok"] == true => {}
        other => panic!("bench {op}: {other:?}"),
    }
}

fn cpu(c: &Client) {
    println!("## CPU per signed heartbeat inside the runtime (ms, median)");
    for op in [
        "signature_verify",
        "signature_verify_software",
        "heartbeat_cpu",
    ] {
        let k = 201;
        let timed = |n: u32| {
            bench_once(c, op, n);
            median(
                (0..15)
                    .map(|_| {
                        let t = Instant::now();
                        bench_once(c, op, n);
                        t.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect(),
            )
        };
        let once = timed(1);
        let many = timed(k);
        println!("{op:<26} {:>9.3} ms", (many - once) / f64::from(k - 1));
    }
}

fn target(base: &str) -> Target {
    assert!(
        std::env::var("EDGECODER_BENCH_BOOTSTRAP_SECRET").is_ok(),
        "EDGECODER_BENCH_BOOTSTRAP_SECRET"
    );
    Target::bench(base)
}

fn endpoints(x: &Ctx) {
    println!("## Whole signed heartbeats (ms wall, median of 201, one client)");
    let (_, node) = mesh::active(x, "endpoints").unwrap_or_else(|e| panic!("node: {e}"));
    let telemetry = mesh::server_telemetry();
    let mut lat: Vec<f64> = (0..201)
        .map(|_| {
            let start = Instant::now();
            let r = mesh::heartbeat(x, &node, &telemetry).map(|r| r.status);
            assert_eq!(r, Ok(200), "heartbeat");
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!("POST /mesh/heartbeat       {:>9.3} ms", lat[lat.len() / 2]);
}

fn load(x: &Ctx, clients: usize, secs: u64) {
    println!("## Signed heartbeats: {clients} nodes, {secs} s");
    let nodes: Vec<Node> = (0..clients)
        .map(|i| {
            mesh::active(x, &format!("load{i}"))
                .map(|(_, n)| n)
                .unwrap_or_else(|e| panic!("node {i}: {e}"))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = nodes
        .into_iter()
        .map(|node| {
            let t = x.target.clone();
            std::thread::spawn(move || {
                let c = Client::new(&t.base);
                let x = Ctx::new(&c, &t);
                let telemetry = mesh::server_telemetry();
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let ok = mesh::heartbeat(&x, &node, &telemetry).is_ok_and(|r| r.status == 200);
                    if ok {
                        lat.push(start.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    all.sort_by(f64::total_cmp);
    if all.is_empty() {
        println!("no successful heartbeats");
        return;
    }
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    #[allow(clippy::cast_precision_loss)]
    let rate = all.len() as f64 / secs as f64;
    println!(
        "POST /mesh/heartbeat {rate:>9.1} req/s  p50 {:.3} ms  p99 {:.3} ms",
        pct(0.50),
        pct(0.99)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(base) = args.first() else {
        eprintln!("usage: mesh_bench <base-url> [cpu|endpoints|load]...");
        std::process::exit(2);
    };
    let modes: Vec<&str> = if args.len() > 1 {
        args[1..].iter().map(String::as_str).collect()
    } else {
        vec!["cpu"]
    };
    let c = Client::new(base);
    // One context for the run: it bootstraps the deployment's only admin.
    let t = modes.iter().any(|m| *m != "cpu").then(|| target(base));
    let x = t.as_ref().map(|t| Ctx::new(&c, t));
    for m in modes {
        match (m, &x) {
            ("cpu", _) => cpu(&c),
            ("endpoints", Some(x)) => endpoints(x),
            ("load", Some(x)) => load(x, 8, 10),
            (other, _) => panic!("unknown mode {other}"),
        }
    }
}
