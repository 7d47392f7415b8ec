#!/usr/bin/env bash
# Builds the Cloudflare Worker with worker-build, offline-safe: wasm-bindgen,
# wasm-opt and esbuild come from the tool cache, never from GitHub.
# Output: runtimes/cloudflare/build/index.js (+ the .wasm it imports), which
# wrangler.toml names as `main`: the release Worker, without test routes.
#
# `--test-routes` builds the conformance Worker instead: the same code with
# the `danger-test-routes` feature, in its own target directory and into
# runtimes/cloudflare/build-test/ (tests/wrangler.test.toml), so the release
# build is never replaced by it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_setup_all >&2
ec_wasm_tools
out=build
features=()
if [[ "${1:-}" == "--test-routes" ]]; then
  out=build-test
  features=(--features danger-test-routes)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/test-routes"
fi
cd runtimes/cloudflare
worker-build --profile worker-release --out-dir "$out" . "${features[@]}" >&2
# The profile keeps symbols so wasm-bindgen can read the target-features
# section; once bindgen has run, the name section is dead weight in the upload.
wasm-tools strip --delete name "$out/index_bg.wasm" -o "$out/index_bg.wasm"
wasm-tools validate "$out/index_bg.wasm"
