"""Python onnxruntime over the test model, the baseline for the GPU host.

    python bench/inference_onnxruntime.py MODEL.onnx CONTEXT PROMPT MAX_NEW_TOKENS REPEATS [cpu|cuda]

Runs the same greedy decode loop as the guest (tests/inference/reference.py)
REPEATS times and prints one JSON line per run: forward passes, their total
time (session.run only) and the whole run's time, in nanoseconds.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, context, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    max_new, repeats = int(sys.argv[4]), int(sys.argv[5])
    device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    t0 = time.perf_counter_ns()
    session = ort.InferenceSession(model, providers=providers)
    load_ns = time.perf_counter_ns() - t0
    for _ in range(repeats):
        start = time.perf_counter_ns()
        tokens = list(prompt.encode())
        compute = 0
        passes = 0
        while passes < max_new and len(tokens) < context:
            ids = np.array([tokens], dtype=np.float32)
            before = time.perf_counter_ns()
            logits = session.run(["logits"], {"input_ids": ids})[0]
            compute += time.perf_counter_ns() - before
            passes += 1
            tokens.append(int(np.argmax(logits[0, -1, :])))
        print(json.dumps({
            "forward_passes": passes,
            "compute_ns": compute,
            "total_ns": time.perf_counter_ns() - start,
            "load_ns": load_ns,
        }))


if __name__ == "__main__":
    main()
