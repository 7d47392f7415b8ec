//! Architecture rules the build must keep (DESIGN principle 1): function and
//! protocol code never depends on a platform, and the device agent depends on
//! the protocol crate, not on the kernel or any function. Checked with `cargo
//! tree` over every target and every edge kind, so a dev-dependency or a
//! wasm-only dependency counts; the protocol crates are also built for both
//! wasm targets.

use std::process::Command;

use edgecoder_conformance::harness::workspace_root;

const FUNCTION_CRATES: [&str; 7] = [
    "edgecoder-tlog",
    "edgecoder-proto",
    "edgecoder-kernel",
    "edgecoder-auth",
    "edgecoder-mesh",
    "edgecoder-ledger",
    "edgecoder-gateway",
];

const PLATFORM_CRATES: [&str; 8] = [
    "worker",
    "worker-sys",
    "spin-sdk",
    "rusqlite",
    "libsqlite3-sys",
    "hyper",
    "wasmtime",
    "tokio",
];

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Every package in `krate`'s tree, with `edges` (`all`, or `normal`).
fn tree(krate: &str, edges: &str) -> Vec<String> {
    let out = cargo()
        .args([
            "tree", "-p", krate, "--target", "all", "-e", edges, "--prefix", "none",
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_agent_depends_on_the_protocol_not_on_the_kernel_or_functions() {
    let names = tree("edgecoder-agent", "normal");
    assert!(names.iter().any(|n| n == "edgecoder-proto"), "{names:?}");
    for banned in &FUNCTION_CRATES[2..] {
        assert!(
            !names.iter().any(|n| n == banned),
            "the agent depends on {banned}"
        );
    }
}

#[test]
fn protocol_crates_build_for_both_wasm_targets() {
    // Makes sure the setup ran (it adds the wasm targets).
    let _ = edgecoder_conformance::harness::tool("NODE22_BIN");
    for target in ["wasm32-unknown-unknown", "wasm32-wasip2"] {
        let status = cargo()
            .args([
                "build",
                "--quiet",
                "-p",
                "edgecoder-tlog",
                "-p",
                "edgecoder-proto",
                "--target",
                target,
            ])
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "the protocol crates do not build for {target}"
        );
    }
}

#[test]
fn function_crates_have_no_platform_dependencies() {
    for krate in FUNCTION_CRATES {
        let names = tree(krate, "all");
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let tree = names.join("\n");
        assert!(
            names.contains(&krate),
            "cargo tree printed nothing useful for {krate}"
        );
        for banned in PLATFORM_CRATES {
            assert!(
                !names.contains(&banned),
                "{krate} depends on {banned}:\n{tree}"
            );
        }
    }
}
