#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, the host with the CUDA
# execution provider produces the same tokens as with the CPU provider for
# the test model, and prints the timings bench/README.md records.
#
#   EDGECODER_ONNXRUNTIME=onnxruntime-gpu bash scripts/gpu-check.sh
#
# Needs: nvidia-smi, the CUDA 12 / cuDNN 9 libraries onnxruntime-gpu 1.22
# loads, and PyPI (or a pip cache) for the onnxruntime-gpu wheel. The test
# `gpu_cuda_provider_matches_cpu_where_a_gpu_is_present` runs this script
# where a GPU is present and is skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGECODER_ONNXRUNTIME="${EDGECODER_ONNXRUNTIME:-onnxruntime-gpu}"
# shellcheck source=scripts/setup-tools.sh
. scripts/setup-tools.sh
ec_targets >&2
ec_inference_tools
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
guest="$(bash scripts/build-inference.sh | tail -n1)"
cargo build --release -p edgecoder-gpu-host --features cuda >&2
host=target/release/edgecoder-gpu-host
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$EC_INFER_PYTHON" tests/inference/make_model.py "$work/model.onnx"
"$host" models add --models "$work/models" --name tiny-byte@1 --onnx "$work/model.onnx" >/dev/null
run() {
  "$host" infer --models "$work/models" --guest "$guest" --onnxruntime "$ORT_DYLIB_PATH" \
    --model tiny-byte@1 --prompt "fn main() {" --max-new-tokens 48 --temperature 0.8 --seed 7 \
    --device "$1" --repeat 5
}
run cpu > "$work/cpu.jsonl"
run cuda > "$work/cuda.jsonl"
tokens() { "$EC_INFER_PYTHON" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["output_tokens"])' "$1"; }
echo "cpu:  $(tokens "$work/cpu.jsonl")"
echo "cuda: $(tokens "$work/cuda.jsonl")"
"$EC_INFER_PYTHON" - "$work/cpu.jsonl" "$work/cuda.jsonl" <<'PY'
import json, sys
for path in sys.argv[1:]:
    runs = [json.loads(l) for l in open(path)]
    warm = runs[1:]
    per_token = [r["compute_ns"] / r["forward_passes"] / 1e6 for r in warm]
    print(f"{path.rsplit('/', 1)[-1]}: cold {runs[0]['host_ns'] / 1e6:.1f} ms, "
          f"warm {sum(r['host_ns'] for r in warm) / len(warm) / 1e6:.1f} ms, "
          f"{sum(per_token) / len(per_token):.3f} ms/token")
PY
if [[ "$(tokens "$work/cpu.jsonl")" != "$(tokens "$work/cuda.jsonl")" ]]; then
  echo "the CUDA provider's tokens differ from the CPU provider's" >&2
  exit 1
fi
echo "gpu check: identical tokens on cuda and cpu"
