#!/usr/bin/env bash
# Inference benchmarks (bench/README.md): the GPU host (release build; guest
# component + wasi-nn + onnxruntime) against Python onnxruntime calling the
# same model directly, on this machine, in the same run; then cold start
# (host start: component compile + graph load) against warm requests.
#
#   bash bench/inference.sh [cpu|cuda]      (cuda: a `--features cuda` build)
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
host=target/release/edgecoder-gpu-host
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prompt="fn main() {"

# bench NAME CONTEXT WIDTH HIDDEN TOKENS REPEATS
bench() {
  local name="$1" context="$2" width="$3" hidden="$4" tokens="$5" repeats="$6"
  local dir="$work/$name"
  mkdir -p "$dir"
  "$EC_INFER_PYTHON" tests/inference/make_model.py "$dir/model.onnx" \
    --context "$context" --width "$width" --hidden "$hidden"
  "$host" models add --models "$dir/models" --name "$name@1" --onnx "$dir/model.onnx" \
    --context-length "$context" >/dev/null
  # Interleave the two sides so drift on the machine hits both alike.
  : > "$dir/host.jsonl"; : > "$dir/python.jsonl"
  for _ in 1 2 3; do
    "$host" infer --models "$dir/models" --guest "$guest" --onnxruntime "$ORT_DYLIB_PATH" \
      --device "$device" --model "$name@1" --prompt "$prompt" --max-new-tokens "$tokens" \
      --repeat "$repeats" >> "$dir/host.jsonl"
    "$EC_INFER_PYTHON" bench/inference_onnxruntime.py "$dir/model.onnx" "$context" "$prompt" \
      "$tokens" "$repeats" "$device" >> "$dir/python.jsonl"
  done
  echo "== $name: context $context, width $width, hidden $hidden, $tokens tokens, $device"
  "$EC_INFER_PYTHON" - "$dir/host.jsonl" "$dir/python.jsonl" "$repeats" <<'PY'
import json, statistics, sys
host = [json.loads(l) for l in open(sys.argv[1])]
py = [json.loads(l) for l in open(sys.argv[2])]
repeats = int(sys.argv[3])
# The first run of each host process is its cold start.
cold = [r for i, r in enumerate(host) if i % repeats == 0]
warm_host = [r for i, r in enumerate(host) if i % repeats != 0]
warm_py = [r for i, r in enumerate(py) if i % repeats != 0]
def per_token(runs, key):
    return statistics.median(r[key] / r["forward_passes"] / 1e6 for r in runs)
h_fwd, p_fwd = per_token(warm_host, "compute_ns"), per_token(warm_py, "compute_ns")
h_all = per_token(warm_host, "host_ns")
p_all = per_token(warm_py, "total_ns")
print(f"forward pass per token: host {h_fwd:.4f} ms, python onnxruntime {p_fwd:.4f} ms, overhead {100 * (h_fwd / p_fwd - 1):+.1f} %")
print(f"whole request per token: host {h_all:.4f} ms ({1000 / h_all:.0f} tokens/s), python {p_all:.4f} ms ({1000 / p_all:.0f} tokens/s)")
print(f"host start (onnxruntime load + component compile): median {statistics.median(r['host_start_ns'] for r in cold) / 1e6:.1f} ms over {len(cold)} starts")
print(f"cold first request (graph verify + load + run): median {statistics.median(r['host_ns'] for r in cold) / 1e6:.1f} ms")
print(f"warm request ({warm_host[0]['forward_passes']} tokens): median {statistics.median(r['host_ns'] for r in warm_host) / 1e6:.2f} ms")
PY
}

bench tiny-byte 64 32 64 48 30
bench wide-byte 256 512 2048 200 6
