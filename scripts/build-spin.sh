#!/usr/bin/env bash
# Builds the Spin component (spin-sdk 5.2, WASIp2) that spin.toml instantiates
# once per function, and checks it is a valid component.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_targets >&2
ec_wasm_tools
cargo build -p edgecoder-spin --target wasm32-wasip2 --profile wasm-release >&2
wasm-tools validate --features all target/wasm32-wasip2/wasm-release/edgecoder_spin.wasm
