#!/usr/bin/env bash
# Model supply chain benchmark (bench/README.md): what verifying a signed
# release costs next to loading its graph (time inside signature checks and
# blake3, against fetch + read + onnxruntime's session build). For each size, a real ONNX model
# is made, signed with `edgecoder model sign`, and run once with
# `edgecoder-gpu-host infer --release`, which goes through the mesh's own
# resolver: signatures, every file streamed into the digest cache with
# blake3, the graph re-hashed on load; then onnxruntime builds the session.
#
#   bash bench/model_supply.sh [cpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_targets >&2
ec_inference_tools
guest="$(bash scripts/build-inference.sh | tail -n1)"
features=()
[[ "$device" == cuda ]] && features=(--features cuda)
cargo build --release -p edgecoder-gpu-host "${features[@]}" >&2
cargo build --release -p edgecoder >&2
host=target/release/edgecoder-gpu-host
edgecoder=target/release/edgecoder
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$edgecoder" keygen --out "$work/publisher.pem" 2>/dev/null
pub="$("$edgecoder" keygen --public "$work/publisher.pem")"

# bench NAME WIDTH HIDDEN
bench() {
  local name="$1" width="$2" hidden="$3"
  local dir="$work/$name"
  mkdir -p "$dir"
  "$EC_INFER_PYTHON" tests/inference/make_model.py "$dir/model.onnx" --context 64 --width "$width" --hidden "$hidden"
  "$host" models add --models "$dir/release" --name "$name@1" --onnx "$dir/model.onnx" --context-length 64 >/dev/null
  rm -f "$dir/model.onnx"
  "$edgecoder" model sign --dir "$dir/release/$name@1" --name "$name@1" --key "$work/publisher.pem" >/dev/null 2>&1
  local bytes
  bytes="$(du -b "$dir/release/$name@1/model.onnx" | cut -f1)"
  : > "$dir/runs.jsonl"
  for _ in 1 2 3; do
    # Cold page cache is not what this measures: the first read warms it.
    cat "$dir/release/$name@1/model.onnx" > /dev/null
    "$host" infer --release "$dir/release/$name@1" --publisher-key "$pub" --guest "$guest" \
      --onnxruntime "$ORT_DYLIB_PATH" --device "$device" --model "$name@1" --prompt "fn" \
      --max-new-tokens 1 >> "$dir/runs.jsonl"
  done
  "$EC_INFER_PYTHON" - "$dir/runs.jsonl" "$name" "$bytes" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
name, size = sys.argv[2], int(sys.argv[3])
med = lambda k: statistics.median(r[k] for r in runs) / 1e6
fetch, resolve, compile_ = med("release_fetch_ns"), med("resolve_ns"), med("graph_compile_ns")
checks = med("release_verify_ns")
total = fetch + resolve + compile_
print(f"== {name}: graph {size / 1e6:.0f} MB, {len(runs)} runs (medians)")
print(f"fetch into the cache (copy, blake3 as it streams, signatures): {fetch:.0f} ms; read + re-hash on load: {resolve:.0f} ms; onnxruntime session: {compile_:.0f} ms")
print(f"checks proper (signatures + every blake3 pass, fetch and load): {checks:.0f} ms = {2 * size / 1e6 / (checks / 1e3):.0f} MB/s over two passes")
print(f"verification share of load time: {100 * checks / total:.1f} % of {total:.0f} ms")
PY
}

bench supply-100m 2048 2048
bench supply-1g 4096 22400
