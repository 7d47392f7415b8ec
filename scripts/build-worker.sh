#!/usr/bin/env bash
# Builds the Cloudflare Worker with worker-build, offline-safe: wasm-bindgen,
# wasm-opt and esbuild come from the tool cache, never from GitHub.
# Output: runtimes/cloudflare/build/index.js (+ the .wasm it imports), which
# wrangler.toml names as `main`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_setup_all >&2
ec_wasm_tools
cd runtimes/cloudflare
worker-build --profile worker-release >&2
# The profile keeps symbols so wasm-bindgen can read the target-features
# section; once bindgen has run, the name section is dead weight in the upload.
wasm-tools strip --delete name build/index_bg.wasm -o build/index_bg.wasm
wasm-tools validate build/index_bg.wasm
