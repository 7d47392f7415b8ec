#!/usr/bin/env bash
# Builds the inference guest component (functions/inference, wasm32-wasip2,
# wit-bindgen against wit/inference) that `edgecoder-gpu-host --guest` runs,
# and checks it is a valid component exporting the runner world's interface.
#
#   target/wasm32-wasip2/wasm-release/edgecoder_inference.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_targets >&2
ec_wasm_tools
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -p edgecoder-inference --target wasm32-wasip2 --profile wasm-release >&2
guest="$target_dir/wasm32-wasip2/wasm-release/edgecoder_inference.wasm"
wasm-tools validate --features all "$guest"
wasm-tools component wit "$guest" | grep -q 'export edgecoder:inference/inference@0.1.0;'
echo "$guest"
