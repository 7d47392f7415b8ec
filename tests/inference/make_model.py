"""Writes the project's test model: a tiny decoder-only transformer over bytes.

    python make_model.py OUT.onnx [--context C --width W --hidden H]

Vocabulary 256 (one token per byte), context 64, width 32 by default (the
benchmarks also build wider ones); one causal self-attention block and one
MLP block, each residual, then a linear head over the last position.
Input `input_ids`: float32 [1, n] (wasi-nn's ONNX backend passes f32 tensors
only; the graph casts to int64 itself). Output `logits`: float32 [1, 1, 256],
the next token's logits (a decode loop needs no others, and copying all n
positions out of the backend on every step would cost more than the step).
Weights come from a fixed seed, so every run writes the same bytes: the model
is made here rather than downloaded from any model hub.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, SEED = 256, 20261207


def build(CONTEXT=64, WIDTH=32, HIDDEN=64) -> onnx.ModelProto:
    rng = np.random.RandomState(SEED)

    def w(name, *shape, scale=1.0):
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(data, name)

    causal = np.triu(np.full((CONTEXT, CONTEXT), -1e9, dtype=np.float32), k=1)
    inits = [
        w("tok_emb", VOCAB, WIDTH),
        w("pos_emb", CONTEXT, WIDTH, scale=0.5),
        w("wq", WIDTH, WIDTH, scale=WIDTH ** -0.5),
        w("wk", WIDTH, WIDTH, scale=WIDTH ** -0.5),
        w("wv", WIDTH, WIDTH, scale=WIDTH ** -0.5),
        w("wo", WIDTH, WIDTH, scale=WIDTH ** -0.5),
        w("w1", WIDTH, HIDDEN, scale=WIDTH ** -0.5),
        w("b1", HIDDEN, scale=0.1),
        w("w2", HIDDEN, WIDTH, scale=HIDDEN ** -0.5),
        w("head", WIDTH, VOCAB, scale=1.5 * WIDTH ** -0.5),
        numpy_helper.from_array(causal, "causal_mask"),
        numpy_helper.from_array(np.array([WIDTH ** -0.5], dtype=np.float32), "attn_scale"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "zeros2"),
        numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "axes01"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last"),
    ]
    n = helper.make_node
    nodes = [
        n("Cast", ["input_ids"], ["ids"], to=TensorProto.INT64),
        n("Gather", ["tok_emb", "ids"], ["tok"]),
        n("Shape", ["input_ids"], ["shape"]),
        n("Slice", ["shape", "one", "two"], ["len"]),
        n("Slice", ["pos_emb", "zero", "len", "zero"], ["pos"]),
        n("Add", ["tok", "pos"], ["x0"]),
        # causal self-attention, one head
        n("MatMul", ["x0", "wq"], ["q"]),
        n("MatMul", ["x0", "wk"], ["k"]),
        n("MatMul", ["x0", "wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["scores_raw"]),
        n("Mul", ["scores_raw", "attn_scale"], ["scores_scaled"]),
        n("Concat", ["len", "len"], ["len2"], axis=0),
        n("Slice", ["causal_mask", "zeros2", "len2", "axes01"], ["mask"]),
        n("Add", ["scores_scaled", "mask"], ["scores"]),
        n("Softmax", ["scores"], ["attn"], axis=-1),
        n("MatMul", ["attn", "v"], ["mixed"]),
        n("MatMul", ["mixed", "wo"], ["attn_out"]),
        n("Add", ["x0", "attn_out"], ["x1"]),
        # MLP
        n("MatMul", ["x1", "w1"], ["h_raw"]),
        n("Add", ["h_raw", "b1"], ["h_bias"]),
        n("Relu", ["h_bias"], ["h"]),
        n("MatMul", ["h", "w2"], ["mlp_out"]),
        n("Add", ["x1", "mlp_out"], ["x2"]),
        n("Gather", ["x2", "last"], ["x_last"], axis=1),
        n("MatMul", ["x_last", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "edgecoder-tiny-byte",
        [helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, VOCAB])],
        inits,
    )
    model = helper.make_model(
        graph,
        producer_name="edgecoder tests/inference/make_model.py",
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (1, 7):
        sys.exit(__doc__)
    sizes = dict(zip(args[1::2], map(int, args[2::2])))
    model = build(
        CONTEXT=sizes.get("--context", 64),
        WIDTH=sizes.get("--width", 32),
        HIDDEN=sizes.get("--hidden", 64),
    )
    onnx.save_model(model, args[0])
