#!/usr/bin/env bash
# Federation costs (bench/README.md): convergence of N bans across three
# native coordinators (release binary, embedded SQLite, each witnessed by
# the other two), bytes read per pull, push-to-enforcement latency, and what
# witness cosignatures add to signing a checkpoint.
#
#   bash bench/federation.sh [bans]
set -euo pipefail
cd "$(dirname "$0")/.."
bans="${1:-10000}"
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_setup_all >&2
# The harness signs its operators up through the development outbox.
cargo build --release --locked -p edgecoder --bin edgecoder --features danger-test-routes >&2
cargo build --release --locked -p edgecoder-conformance --example federation_bench >&2
ulimit -n 20000 2>/dev/null || true
target/release/examples/federation_bench target/release/edgecoder "$bans"
