#!/usr/bin/env bash
# Builds the Cloudflare Worker: runtimes/cloudflare/build/index.js and the
# .wasm it imports, which wrangler.toml names as `main`. `wrangler deploy`
# runs this ([build] in wrangler.toml), so it is the deploy build and stays
# lean: it needs bash, the Rust toolchain that rust-toolchain.toml pins (plus
# its wasm32-unknown-unknown target) and worker-build at the version below,
# installed once into ${EDGECODER_TOOLS:-~/.cache/edgecoder-tools}. Nothing
# test-only and nothing tied to one OS or CPU: it works the same on Linux and
# macOS, x86_64 and arm64 (on Windows, from WSL or Git Bash).
#
# worker-build fetches wasm-bindgen (at the lockfile's version), esbuild and
# wasm-opt for the platform it runs on, unless WASM_BINDGEN_BIN, ESBUILD_BIN
# and WASM_OPT_BIN name local copies. The test command sets them from its
# tool cache, because the machines it runs on cannot reach GitHub.
#
# `--test-routes` builds the conformance Worker instead: the same code with
# the `danger-test-routes` feature, in its own target directory and into
# runtimes/cloudflare/build-test/ (tests/wrangler.test.toml), so the release
# build is never replaced by it.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKER_BUILD_VERSION=0.8.7
tools="${EDGECODER_TOOLS:-$HOME/.cache/edgecoder-tools}"
log() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown >&2
fi
root="$tools/worker-build-$WORKER_BUILD_VERSION"
if [[ ! -x "$root/bin/worker-build" ]]; then
  log "cargo install worker-build $WORKER_BUILD_VERSION (once, ~4 min; cached in $root)"
  cargo install worker-build --version "=$WORKER_BUILD_VERSION" --locked --root "$root" >&2
fi
export PATH="$root/bin:$PATH"

out=build
features=()
if [[ "${1:-}" == "--test-routes" ]]; then
  # The conformance build runs on machines that cannot reach GitHub (the
  # harnesses' `wrangler dev`, also outside scripts/test): it takes
  # wasm-bindgen, wasm-opt and esbuild from the test toolchain's cache.
  # shellcheck source=scripts/setup-tools.sh
  . scripts/setup-tools.sh
  ec_setup_all >&2
  out=build-test
  features=(--features danger-test-routes)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/test-routes"
fi
cd runtimes/cloudflare
log "worker-build into runtimes/cloudflare/$out"
worker-build --profile worker-release --out-dir "$out" . "${features[@]}" >&2
# worker-build keeps the name section (wasm-opt --debuginfo); nothing reads
# it at run time, and it is a fifth of the upload.
node ../../scripts/strip-wasm-names.mjs "$out/index_bg.wasm"
