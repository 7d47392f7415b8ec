//! Measures the sandbox's per-run overhead: digest checks, instantiation,
//! calling a trivial entry point and tearing the store down (the module is
//! compiled once and cached, as for repeated tasks).
//!
//! `cargo run --release -p edgecoder-agent --example sandbox_bench [N]`

use std::time::Instant;

use edgecoder_agent::sandbox::{Limits, Sandbox, digest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1000,
    };
    let module = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run")))"#)?;
    let (module_digest, input_digest) = (digest(&module), digest(b""));
    let limits = Limits::new(16, 1_000_000, 1_000);
    let sandbox = Sandbox::new()?;

    let first = Instant::now();
    let outcome = sandbox.run(&module, &module_digest, b"", &input_digest, &limits);
    let first = first.elapsed();
    if let Some(f) = outcome.failure {
        return Err(format!("trivial module failed: {} ({})", f.reason, f.detail).into());
    }

    let mut micros: Vec<f64> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let outcome = sandbox.run(&module, &module_digest, b"", &input_digest, &limits);
        micros.push(t.elapsed().as_secs_f64() * 1e6);
        if !outcome.is_ok() {
            return Err("trivial module failed".into());
        }
    }
    micros.sort_by(f64::total_cmp);
    let median = micros.get(micros.len() / 2).copied().unwrap_or(f64::NAN);
    let p99 = micros
        .get(micros.len() * 99 / 100)
        .copied()
        .unwrap_or(f64::NAN);
    println!(
        "first run (compile + instantiate + run): {:.0} us",
        first.as_secs_f64() * 1e6
    );
    println!("median instantiate + run over {runs} runs: {median:.1} us (p99 {p99:.1} us)");
    Ok(())
}
