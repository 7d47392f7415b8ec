#!/usr/bin/env bash
# Builds the Spin component (spin-sdk 5.2, WASIp2) that spin.toml instantiates
# once per function: the release build, without test routes. The test
# command validates the artefact and its imports (tests/tests/spin.rs).
#
# `--test-routes` builds the conformance component instead (the
# `danger-test-routes` feature) in its own target directory,
# target/test-routes/wasm32-wasip2/wasm-release/edgecoder_spin.wasm, which the
# test host serves with `--source`; the release build is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_targets >&2
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
features=()
if [[ "${1:-}" == "--test-routes" ]]; then
  target_dir="$target_dir/test-routes"
  features=(--features danger-test-routes)
fi
CARGO_TARGET_DIR="$target_dir" cargo build -p edgecoder-spin --target wasm32-wasip2 --profile wasm-release "${features[@]}" >&2
