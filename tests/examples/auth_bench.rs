//! Identity benchmarks against a running deployment (started with the
//! conformance settings, so `insecure_test_routes` mounts the bench route):
//!
//! - `cpu`: the CPU one credential operation costs *inside* the runtime. The
//!   bench route runs an operation N times in one request; the per-operation
//!   cost is (median wall time at N=k − median at N=1) / (k − 1), which cancels
//!   the request's own overhead. On an otherwise idle local server a
//!   CPU-bound request's wall time is its CPU time.
//! - `endpoints`: median wall time of whole requests (`/auth/me`, login,
//!   refresh), an upper bound on their CPU.
//! - `ledger`: median wall time of appends and proofs (as a `system_admin`
//!   made with `EDGECODER_BENCH_BOOTSTRAP_SECRET`).
//! - `load`: requests per second for `/auth/me` and login with C concurrent
//!   clients for D seconds.
//!
//! `cargo run --release -p edgecoder-conformance --example auth_bench -- <base-url> [cpu|endpoints|load]...`
//! (`bench/run.sh` starts the runtimes and runs it.)

use std::time::{Duration, Instant};

use edgecoder_conformance::Client;
use serde_json::{Value as Json, json};

const PASSWORD: &str = "correct horse battery staple";

fn post(c: &Client, path: &str, bearer: Option<&str>, body: &Json) -> (u16, Json) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    match c.send_with("POST", path, &headers, &bytes) {
        Ok(r) => (r.status, r.json().unwrap_or(Json::Null)),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
}

fn cpu(c: &Client) {
    println!("## CPU per operation inside the runtime (ms, median)");
    for (op, k, runs) in [
        ("token_issue", 201, 15),
        ("token_verify", 201, 15),
        ("argon2_hash", 5, 9),
        ("argon2_verify", 5, 9),
        ("passkey_es256", 201, 15),
        ("passkey_eddsa", 201, 15),
        ("passkey_rs256", 201, 15),
        ("id_token_es256", 201, 15),
        ("id_token_rs256", 201, 15),
    ] {
        let once = timed(runs, || {
            post(
                c,
                "/auth/_test/bench",
                None,
                &json!({"op": op, "iterations": 1}),
            );
        });
        let many = timed(runs, || {
            post(
                c,
                "/auth/_test/bench",
                None,
                &json!({"op": op, "iterations": k}),
            );
        });
        let per = (many - once) / f64::from(k - 1);
        println!("{op:<15} {per:>9.3} ms");
    }
}

struct Account {
    email: String,
    access: String,
    refresh: String,
}

fn account(c: &Client, tag: &str) -> Account {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let email = format!("bench-{tag}-{nanos}@example.com");
    let (s, _) = post(
        c,
        "/auth/signup",
        None,
        &json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(s, 202, "signup");
    let (s, v) = post(
        c,
        "/auth/login",
        None,
        &json!({"email": email, "password": PASSWORD, "client": "device"}),
    );
    assert_eq!(s, 200, "login {v}");
    Account {
        email,
        access: v["access_token"].as_str().unwrap_or("").to_owned(),
        refresh: v["refresh_token"].as_str().unwrap_or("").to_owned(),
    }
}

fn endpoints(c: &Client) {
    println!("## Whole requests (ms wall, median; an upper bound on CPU)");
    let mut a = account(c, "endpoints");
    let auth = format!("Bearer {}", a.access);
    let me = timed(101, || {
        let r = c.send_with("GET", "/auth/me", &[("authorization", &auth)], &[]);
        assert_eq!(r.map(|r| r.status).unwrap_or(0), 200);
    });
    println!("GET /auth/me           {me:>9.3} ms");
    let refresh = timed(51, || {
        let (s, v) = post(
            c,
            "/auth/token/refresh",
            None,
            &json!({"refresh_token": a.refresh}),
        );
        assert_eq!(s, 200);
        a.refresh = v["refresh_token"].as_str().unwrap_or("").to_owned();
    });
    println!("POST /auth/token/refresh {refresh:>7.3} ms");
    let health = timed(101, || {
        let _ = c.get("/auth/health");
    });
    println!("GET /auth/health       {health:>9.3} ms");
    let login = timed(9, || {
        let (s, _) = post(
            c,
            "/auth/login",
            None,
            &json!({"email": a.email, "password": PASSWORD, "client": "device"}),
        );
        assert_eq!(s, 200);
    });
    println!("POST /auth/login       {login:>9.3} ms");
}

fn load(base: &str) {
    let clients = 8;
    let secs = 10;
    println!("## Throughput, {clients} concurrent clients, {secs} s each (requests/s)");
    let c = Client::new(base);
    let a = account(&c, "load");
    for route in ["/auth/me", "/auth/login"] {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let base = base.to_owned();
                let token = a.access.clone();
                let email = a.email.clone();
                std::thread::spawn(move || {
                    let c = Client::new(&base);
                    let auth = format!("Bearer {token}");
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let ok = if route == "/auth/me" {
                            c.send_with("GET", route, &[("authorization", &auth)], &[])
                                .map(|r| r.status == 200)
                        } else {
                            let body =
                                json!({"email": email, "password": PASSWORD, "client": "device"});
                            c.send_with(
                                "POST",
                                route,
                                &[("content-type", "application/json")],
                                &serde_json::to_vec(&body).unwrap_or_default(),
                            )
                            .map(|r| r.status == 200)
                        };
                        if ok.unwrap_or(false) {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        #[allow(clippy::cast_precision_loss)]
        let rate = total as f64 / secs as f64;
        println!("{route:<14} {rate:>9.1} req/s");
    }
}

fn ledger(c: &Client, admin_token: &str) {
    println!("## Ledger requests (ms wall, median; an upper bound on CPU)");
    let auth = format!("Bearer {admin_token}");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut n = 0u32;
    let append = timed(101, || {
        n += 1;
        let body = json!({"payload_type": "example.org/audit/v1", "payload": "aGVsbG8=", "idempotency_key": format!("bench-{nanos}-{n}")});
        let r = c.send_with(
            "POST",
            "/ledger/entries",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            &serde_json::to_vec(&body).unwrap_or_default(),
        );
        assert_eq!(r.map(|r| r.status).unwrap_or(0), 201);
    });
    println!("POST /ledger/entries   {append:>9.3} ms");
    let size = n;
    let mut i = 0u32;
    let inclusion = timed(101, || {
        i = (i + 7) % size;
        let r = c.get(&format!(
            "/ledger/proof/inclusion?index={i}&tree_size={size}"
        ));
        assert_eq!(r.map(|r| r.status).unwrap_or(0), 200);
    });
    println!("GET inclusion proof    {inclusion:>9.3} ms");
    let consistency = timed(101, || {
        i = (i + 7) % (size - 1);
        let r = c.get(&format!(
            "/ledger/proof/consistency?first={}&second={size}",
            i + 1
        ));
        assert_eq!(r.map(|r| r.status).unwrap_or(0), 200);
    });
    println!("GET consistency proof  {consistency:>9.3} ms");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(base) = args.first() else {
        eprintln!("usage: auth_bench <base-url> [cpu|endpoints|load]...");
        std::process::exit(2);
    };
    let c = Client::new(base);
    let modes: Vec<&str> = if args.len() > 1 {
        args[1..].iter().map(String::as_str).collect()
    } else {
        vec!["cpu", "endpoints"]
    };
    for m in modes {
        match m {
            "cpu" => cpu(&c),
            "endpoints" => endpoints(&c),
            "load" => load(base),
            "ledger" => {
                let target = edgecoder_conformance::Target::bench(base);
                let admin = edgecoder_conformance::identity::Ctx::new(&c, &target)
                    .admin()
                    .unwrap_or_else(|e| panic!("admin: {e}"))
                    .1;
                ledger(&c, &admin);
            }
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        }
    }
}
