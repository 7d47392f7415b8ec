//! Architecture rules the build must keep (DESIGN principle 1): function code
//! never depends on a platform. Checked with `cargo tree` over every target
//! and every edge kind, so a dev-dependency or a wasm-only dependency counts.

use std::process::Command;

use edgecoder_conformance::harness::workspace_root;

const FUNCTION_CRATES: [&str; 5] = [
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

#[test]
fn function_crates_have_no_platform_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for krate in FUNCTION_CRATES {
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .args([
                "tree", "-p", krate, "--target", "all", "-e", "all", "--prefix", "none",
            ])
            .output()
            .expect("cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
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
