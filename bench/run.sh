#!/usr/bin/env bash
# Identity and mesh benchmarks: CPU per credential operation, per signed
# heartbeat and per request inside workerd (wrangler dev, the Worker's
# release profile with the bench routes built in) and natively (release
# binary, likewise), native throughput, and the agent's sandbox overhead. Prints the tables bench/README.md records.
# Run on an otherwise idle machine: `bash bench/run.sh`. The ledger's native
# SQLite figures come from `cargo run --release -p edgecoder --example ledger_bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_setup_all >&2

# The bench routes exist only in builds with the danger-test-routes feature.
cargo build --release --locked -p edgecoder --bin edgecoder --features danger-test-routes
cargo build --release --locked -p edgecoder-conformance --example auth_bench --example mesh_bench
bash scripts/build-worker.sh --test-routes >&2
BENCH=target/release/examples/auth_bench
MESH_BENCH=target/release/examples/mesh_bench
KEY="$(target/release/edgecoder keygen --base64)"
CHECKPOINT_KEY="$(target/release/edgecoder keygen --base64)"
COORDINATOR_KEY="$(target/release/edgecoder keygen --base64)"
export EDGECODER_BENCH_BOOTSTRAP_SECRET=bench-bootstrap-secret-0123456789abcdef01
SETTINGS=(mode=development insecure_test_routes=true "signing_key=$KEY" issuer=http://localhost:8080
  allowed_origins=http://localhost:5173 "checkpoint_key=$CHECKPOINT_KEY" "coordinator_key=$COORDINATOR_KEY"
  "bootstrap_secret=$EDGECODER_BENCH_BOOTSTRAP_SECRET" mesh_node_rate_per_minute=100000)
WORK="$(mktemp -d)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

wait_up() {
  for _ in $(seq 1 300); do
    curl -fsS "$1/auth/health" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server at $1 did not start" >&2
  return 1
}

echo "# native (release binary, embedded SQLite)"
env_args=()
for s in "${SETTINGS[@]}"; do
  name="${s%%=*}"; env_args+=("EDGECODER_${name^^}=${s#*=}")
done
env "${env_args[@]}" EDGECODER_LOG=warn target/release/edgecoder serve --listen 127.0.0.1:18787 \
  --data-dir "$WORK/native" >"$WORK/native.log" 2>&1 &
PIDS+=($!)
wait_up http://127.0.0.1:18787
"$BENCH" http://127.0.0.1:18787 cpu endpoints load ledger
"$MESH_BENCH" http://127.0.0.1:18787 cpu endpoints load

echo
echo "# workerd (wrangler dev, D1 + KV)"
export PATH="$NODE22_BIN:$PATH" WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false CI=true
"$WRANGLER_BIN" d1 migrations apply edgecoder --local --config tests/wrangler.test.toml \
  --persist-to "$WORK/workerd" >&2
var_args=()
for s in "${SETTINGS[@]}"; do
  name="${s%%=*}"; var_args+=(--var "EDGECODER_${name^^}:${s#*=}")
done
"$WRANGLER_BIN" dev --config tests/wrangler.test.toml --ip 127.0.0.1 --port 18788 --persist-to "$WORK/workerd" \
  --show-interactive-dev-session=false --log-level warn "${var_args[@]}" >"$WORK/workerd.log" 2>&1 &
PIDS+=($!)
wait_up http://127.0.0.1:18788
"$BENCH" http://127.0.0.1:18788 cpu endpoints ledger
"$MESH_BENCH" http://127.0.0.1:18788 cpu endpoints

echo
echo "# agent sandbox (release)"
cargo run --release --locked -p edgecoder-agent --example sandbox_bench
