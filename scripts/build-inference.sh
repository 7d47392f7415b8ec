#!/usr/bin/env bash
# Builds the inference guest component (functions/inference, wasm32-wasip2,
# wit-bindgen against wit/inference) that `edgecoder-gpu-host --guest` runs.
# The test command validates it and compares its WIT with wit/inference
# (tests/tests/inference.rs).
#
#   target/wasm32-wasip2/wasm-release/edgecoder_inference.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_targets >&2
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -p edgecoder-inference --target wasm32-wasip2 --profile wasm-release >&2
guest="$target_dir/wasm32-wasip2/wasm-release/edgecoder_inference.wasm"
echo "$guest"
