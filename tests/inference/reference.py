"""Known answers for the inference guest, computed independently of it.

    python reference.py MODEL.onnx REQUEST.json

REQUEST is the guest's request record as JSON ({"model", "input": {"text"} or
{"tokens"}, "max_new_tokens", "temperature", "seed", "stop"}); prints
{"output_hex", "output_tokens", "finish"}. The decode loop follows the rules
written in functions/inference/src/decode.rs, here with Python onnxruntime
calling the same model directly. Context 64, byte tokenizer, no end-of-text
(the test model's manifest).
"""

import json
import math
import sys

import numpy as np
import onnxruntime as ort

CONTEXT = 64
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def next_f64(self) -> float:
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


def pick(logits, temperature, rng):
    if temperature == 0.0:
        best = 0
        for i, v in enumerate(logits):
            if v > logits[best]:
                best = i
        return best
    scaled = [float(v) / temperature for v in logits]
    top = max(scaled)
    weights = [math.exp(x - top) for x in scaled]
    total = 0.0
    for w in weights:
        total += w
    r = rng.next_f64() * total
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if acc > r:
            return i
    return max(i for i, w in enumerate(weights) if w > 0.0)


def run(session, req):
    prompt = req["input"]
    tokens = list(prompt["text"].encode()) if "text" in prompt else list(prompt["tokens"])
    temperature = float(np.float32(req["temperature"]))
    rng = SplitMix64(req["seed"])
    stops = [s.encode() for s in req.get("stop", []) if s]
    generated, output = [], b""
    while True:
        if len(generated) >= req["max_new_tokens"]:
            finish = "length"
            break
        if len(tokens) >= CONTEXT:
            finish = "context-full"
            break
        ids = np.array([tokens], dtype=np.float32)
        logits = session.run(["logits"], {"input_ids": ids})[0][0, -1, :]
        nxt = pick(list(logits), temperature, rng)
        tokens.append(nxt)
        generated.append(nxt)
        output += bytes([nxt])
        if any(output.endswith(s) for s in stops):
            finish = "stop"
            break
    return {"output_hex": output.hex(), "output_tokens": generated, "finish": finish}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    with open(sys.argv[2]) as f:
        print(json.dumps(run(session, json.load(f))))
