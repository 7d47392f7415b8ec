#!/usr/bin/env bash
# What a large blacklist costs a heartbeat (bench/README.md): whole signed
# heartbeats on the native runtime (release binary, embedded SQLite) against
# an empty blacklist, then against 100,000 bans (node keys, node ids and
# owners, a third each) written straight into the data directory's SQLite
# file, as the ban routes would leave them. Enforcement is one indexed lookup
# per subject, so the two medians should match.
#
#   bash bench/blacklist.sh [bans]
set -euo pipefail
cd "$(dirname "$0")/.."
bans="${1:-100000}"
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_setup_all >&2
# The suite's client reads the development outbox through the test routes.
cargo build --release --locked -p edgecoder --bin edgecoder --features danger-test-routes >&2
cargo build --release --locked -p edgecoder-conformance --example mesh_bench >&2
KEY="$(target/release/edgecoder keygen --base64)"
CHECKPOINT_KEY="$(target/release/edgecoder keygen --base64)"
COORDINATOR_KEY="$(target/release/edgecoder keygen --base64)"
export EDGECODER_BENCH_BOOTSTRAP_SECRET=bench-bootstrap-secret-0123456789abcdef01
WORK="$(mktemp -d)"
PID=""
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# serve DATA_DIR
serve() {
  env EDGECODER_MODE=development EDGECODER_INSECURE_TEST_ROUTES=true EDGECODER_SIGNING_KEY="$KEY" EDGECODER_ISSUER=http://localhost:8080 \
    EDGECODER_ALLOWED_ORIGINS=http://localhost:5173 EDGECODER_CHECKPOINT_KEY="$CHECKPOINT_KEY" \
    EDGECODER_COORDINATOR_KEY="$COORDINATOR_KEY" EDGECODER_BOOTSTRAP_SECRET="$EDGECODER_BENCH_BOOTSTRAP_SECRET" \
    EDGECODER_MESH_NODE_RATE_PER_MINUTE=100000 EDGECODER_MESH_ORIGINS=http://127.0.0.1:18787 \
    EDGECODER_LOG=warn target/release/edgecoder serve --listen 127.0.0.1:18787 --data-dir "$1" &
  PID=$!
  for _ in $(seq 1 300); do
    curl -fsS http://127.0.0.1:18787/mesh/health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the server did not start" >&2
  exit 1
}

serve "$WORK/empty"
echo "== empty blacklist"
target/release/examples/mesh_bench http://127.0.0.1:18787 endpoints
kill "$PID"; wait "$PID" 2>/dev/null || true
# A second deployment (its own administrator), its schema made by a first
# start, then the bans written while it is stopped.
serve "$WORK/banned"
kill "$PID"; wait "$PID" 2>/dev/null || true
python3 - "$WORK/banned/edgecoder.sqlite" "$bans" <<'PY'
import hashlib, sqlite3, sys, time
db, n = sqlite3.connect(sys.argv[1]), int(sys.argv[2])
kinds = ["node_key", "node_id", "owner"]
now = int(time.time() * 1000)
def subject(i):
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return {"node_key": h[:16], "node_id": f"banned-{h[:20]}", "owner": h[:32]}[kinds[i % 3]]
with db:
    for i in range(n):
        k = kinds[i % 3]
        cur = db.execute(
            "INSERT INTO mesh_blacklist (action, subject_kind, subject, reason_code, reason, actor, origin, created_at) "
            "VALUES ('add', ?, ?, 'bench', 'bench', 'user:bench', 'local', ?)", (k, subject(i), now))
        db.execute("INSERT INTO mesh_bans (subject_kind, subject, seq) VALUES (?, ?, ?)", (k, subject(i), cur.lastrowid))
print(f"{n} bans written", file=sys.stderr)
PY
serve "$WORK/banned"
echo "== $bans bans in force"
target/release/examples/mesh_bench http://127.0.0.1:18787 endpoints
