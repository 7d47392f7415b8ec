//! Federation benchmark (bench/README.md), on three native coordinators
//! (the given `edgecoder` binary, embedded SQLite), each witnessed by the
//! other two:
//!
//! - convergence: N bans written at A before it peers; then B and C, which
//!   trust A's bans, pull A's log at once (in parallel): wall time until
//!   both have applied all N, bytes each read from A, and what the pull did;
//! - push latency: with everyone peered, a ban at A until B enforces it
//!   (push, then B's verified pull), median of 20;
//! - cosigning: A signing a checkpoint and collecting B's and C's
//!   cosignatures (`POST /ledger/checkpoint`), against a coordinator with no
//!   witnesses, median of 30.
//!
//! `cargo run --release -p edgecoder-conformance --example federation_bench -- <edgecoder binary> [bans]`
//! (`bench/federation.sh` builds the binary and runs it.)

use std::path::Path;
use std::time::{Duration, Instant};

use edgecoder_conformance::federation::{Coordinator, ban, peer, scratch, want};
use edgecoder_conformance::harness::free_port;
use serde_json::{Value as Json, json};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn trust(c: &Coordinator, of: &Coordinator) {
    let r = c.operator(
        "POST",
        "/mesh/peers/policy",
        &json!({"origin": of.origin(), "ban_policy": "trust", "reason": "bench"}),
    );
    want(&r, 200, None, "policy");
}

/// `POST <origin>/mesh/federation/tick` as its operator (who gets each
/// peer's outcome), with a client that waits as long as it takes.
fn tick(origin: &str, token: &str) -> Json {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3600)))
        .build()
        .into();
    let mut resp = agent
        .post(format!("{origin}/mesh/federation/tick"))
        .header("authorization", &format!("Bearer {token}"))
        .send_empty()
        .expect("tick");
    let text = resp.body_mut().read_to_string().expect("body");
    serde_json::from_str(&text).expect("json")
}

/// `c`'s blacklist entries after seq `since` (paged).
fn entries_since(c: &Coordinator, mut since: i64) -> Vec<Json> {
    let mut out = Vec::new();
    loop {
        let r = c
            .ctx()
            .send(
                "GET",
                &format!("/mesh/blacklist?since={since}&limit=1000"),
                Some(&c.admin),
                None,
                &[],
            )
            .expect("blacklist");
        let page = want(&r, 200, None, "blacklist")["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(last) = page.last().and_then(|e| e["seq"].as_i64()) else {
            return out;
        };
        since = last;
        out.extend(page);
    }
}

fn checkpoint_ms(c: &Coordinator, rounds: usize) -> f64 {
    let mut times = Vec::new();
    for i in 0..rounds {
        // Something new to sign each time.
        ban(c, "add", &format!("{:016x}", 0xc0de_0000_u64 + i as u64));
        let t = Instant::now();
        let r = c
            .ctx()
            .send("POST", "/ledger/checkpoint", Some(&c.admin), None, &[])
            .expect("checkpoint");
        assert_eq!(r.status, 200);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(times)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = Path::new(
        args.get(1)
            .expect("usage: federation_bench <edgecoder binary> [bans]"),
    );
    let n: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let root = scratch("bench");
    let (pa, pb, pc, pd) = (free_port(), free_port(), free_port(), free_port());
    // Pulls only when asked (the tick route), so convergence is timed from
    // a known start.
    let quiet = [
        ("mesh_federation_interval_secs", "86400"),
        ("checkpoint_interval_ms", "0"),
    ];
    let a = Coordinator::start_bin(bin, &root.0, "a", pa, &[("b", pb), ("c", pc)], &quiet);
    let b = Coordinator::start_bin(bin, &root.0, "b", pb, &[("a", pa), ("c", pc)], &quiet);
    let c = Coordinator::start_bin(bin, &root.0, "c", pc, &[("a", pa), ("b", pb)], &quiet);
    let d = Coordinator::start_bin(bin, &root.0, "d", pd, &[], &quiet);

    let t = Instant::now();
    for i in 0..n {
        ban(&a, "add", &format!("{i:016x}"));
    }
    println!(
        "{n} bans written at A: {:.1} s ({:.2} ms each, logged)",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
    peer(&a, &b);
    peer(&a, &c);
    peer(&b, &c);
    trust(&b, &a);
    trust(&c, &a);

    let t = Instant::now();
    let (ob, oc) = (b.origin().to_owned(), c.origin().to_owned());
    let (tb, tc) = (b.admin.clone(), c.admin.clone());
    let (rb, rc) = std::thread::scope(|s| {
        let hb = s.spawn(|| tick(&ob, &tb));
        let hc = s.spawn(|| tick(&oc, &tc));
        (hb.join().expect("b"), hc.join().expect("c"))
    });
    let secs = t.elapsed().as_secs_f64();
    for (name, r) in [("B", &rb), ("C", &rc)] {
        let pulled = &r["pulled"];
        let from_a = pulled
            .as_array()
            .and_then(|v| v.iter().find(|p| p["peer"] == a.origin()))
            .cloned()
            .unwrap_or(Json::Null);
        println!("{name} pulled A: {from_a}");
    }
    let applied = |x: &Coordinator| {
        entries_since(x, 0)
            .iter()
            .filter(|e| e["origin"] == a.origin())
            .count()
    };
    println!(
        "convergence of {n} bans on B and C: {secs:.2} s (B holds {}, C holds {} of them)",
        applied(&b),
        applied(&c)
    );

    // Push latency, everyone peered.
    let mut latencies = Vec::new();
    let mut seen = entries_since(&b, 0)
        .last()
        .and_then(|e| e["seq"].as_i64())
        .unwrap_or(0);
    for i in 0..20u64 {
        let subject = format!("{:016x}", 0xfeed_0000_u64 + i);
        let t = Instant::now();
        ban(&a, "add", &subject);
        loop {
            let new = entries_since(&b, seen);
            if let Some(last) = new.last().and_then(|e| e["seq"].as_i64()) {
                seen = last;
            }
            if new.iter().any(|e| e["subject"] == subject.as_str()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                for (c, what) in [
                    (&a, "mesh.federation.push_failed"),
                    (&b, "mesh.federation.envelope_refused"),
                    (&b, "mesh.peer.rotated"),
                ] {
                    let r = c
                        .ctx()
                        .send(
                            "GET",
                            &format!("/mesh/audit?action={what}&limit=5"),
                            Some(&c.admin),
                            None,
                            &[],
                        )
                        .expect("audit");
                    eprintln!("{what}: {}", String::from_utf8_lossy(&r.body));
                }
                eprintln!("b's peers: {}", b.peers());
                panic!("no convergence");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "push to enforcement at B: median {:.0} ms over 20 bans",
        median(latencies)
    );

    println!(
        "checkpoint signed and cosigned by 2 witnesses: median {:.1} ms; with no witnesses: {:.1} ms",
        checkpoint_ms(&a, 30),
        checkpoint_ms(&d, 30)
    );
}
