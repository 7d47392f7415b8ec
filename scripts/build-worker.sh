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
cd runtimes/cloudflare
worker-build --profile wasm-release >&2
