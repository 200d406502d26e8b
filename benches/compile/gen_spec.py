#!/usr/bin/env python3
"""Writes the specs whose compile time `benches/compile/run.py` measures.

    python3 benches/compile/gen_spec.py dense N     # N × dense 64 (Adam, MSE)
    python3 benches/compile/gen_spec.py attention N # specs/attention.yaml's block N times

The spec goes to stdout. `dense N` is issue 11's chain: an input of 64 features, N
`dense: {units: 64}` layers, mean squared error against a 64-wide target, Adam.
`attention N` repeats the encoder block of specs/attention.yaml (attention, add, layer
norm, dense 128 relu, dense 64, add, layer norm) N times between the embedding and the
pooled 2-way classifier.
"""
import sys


def dense_chain(n):
    lines = [
        f"# {n} dense layers of 64 units (benches/compile/gen_spec.py dense {n}).",
        f"name: dense_chain_{n}",
        "inputs:",
        "  x: [batch, 64]",
        "layers:",
    ]
    lines += ["  - dense: {units: 64}"] * (n - 1)
    lines += [
        "  - dense: {units: 64, name: out}",
        "outputs: [out]",
        "train:",
        "  targets: {y: {shape: [batch, 64]}}",
        "  loss: mean_squared_error",
        "  optimizer: adam",
    ]
    return "\n".join(lines) + "\n"


def attention_stack(n):
    lines = [
        f"# specs/attention.yaml's encoder block {n} times (benches/compile/gen_spec.py attention {n}).",
        f"name: encoder_stack_{n}",
        "inputs:",
        "  tokens: {shape: [batch, seq], dtype: i32}",
        "layers:",
        "  - embedding: {input_dim: 5000, output_dim: 64, name: embed}",
    ]
    prev = "embed"
    for i in range(n):
        lines += [
            f"  - multi_head_attention: {{num_heads: 4, key_dim: 16, inputs: [{prev}, {prev}], name: attn{i}}}",
            f"  - add: {{inputs: [{prev}, attn{i}]}}",
            f"  - layer_normalization: {{name: norm{i}a}}",
            "  - dense: {units: 128, activation: relu}",
            f"  - dense: {{units: 64, name: ffn{i}}}",
            f"  - add: {{inputs: [norm{i}a, ffn{i}]}}",
            f"  - layer_normalization: {{name: norm{i}b}}",
        ]
        prev = f"norm{i}b"
    lines += [
        "  - global_average_pooling1d",
        "  - dense: {units: 2, name: logits}",
        "outputs: [logits]",
        "train:",
        "  targets: {label: {shape: [batch], dtype: i32}}",
        "  loss: {sparse_categorical_crossentropy: {from_logits: true}}",
        "  optimizer: adam",
        "  metrics: [accuracy]",
    ]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("dense", "attention"):
        sys.exit(__doc__)
    n = int(sys.argv[2])
    if n < 1:
        sys.exit("N must be at least 1")
    sys.stdout.write(dense_chain(n) if sys.argv[1] == "dense" else attention_stack(n))


if __name__ == "__main__":
    main()
