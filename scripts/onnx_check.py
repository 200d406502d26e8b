#!/usr/bin/env python3
"""Checks `kiln export --format onnx` against `kiln predict` with ONNX Runtime.

For each spec given (default: every bundled spec in specs/), this initializes weights
with `kiln init`, exports the model with `kiln export`, validates the file with
`onnx.checker` (full check, with shape inference), runs it in ONNX Runtime on random
inputs (two batch sizes, so symbolic dimensions are exercised) and compares with
`kiln predict` on the same inputs and weights.

The Rust tests do the same with tract (tests/suite/onnx_export.rs) and need no Python;
this script is for anyone who has ONNX Runtime:

    pip install onnx onnxruntime numpy
    cargo build --release
    python3 scripts/onnx_check.py [specs/NAME.yaml ...]
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target", "release", "kiln")


def run(*args):
    subprocess.run([KILN, *args], check=True, stdout=subprocess.DEVNULL)


def inputs_for(model, batch, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        t = inp.type.tensor_type
        shape = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:
                shape.append(batch if i == 0 else 7)
        if t.elem_type == onnx.TensorProto.FLOAT:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[inp.name] = rng.integers(0, 3, size=shape).astype(np.int32)
    return feeds


def check(spec, tmp):
    name = os.path.splitext(os.path.basename(spec))[0]
    w = os.path.join(tmp, name + ".safetensors")
    path = os.path.join(tmp, name + ".onnx")
    run("init", spec, "--out", w)
    run("export", spec, "--weights", w, "-o", path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, seed in [(1, 0), (3, 1)]:
        feeds = inputs_for(model, batch, seed)
        npz = os.path.join(tmp, name + "_in.npz")
        np.savez(npz, **feeds)
        out = os.path.join(tmp, name + "_out.npz")
        run("predict", spec, "--weights", w, "--input", npz, "--output", out)
        want = np.load(out)
        got = sess.run(None, feeds)
        for o, g in zip(sess.get_outputs(), got):
            k = want[o.name]
            np.testing.assert_allclose(g, k, rtol=1e-4, atol=1e-5, err_msg=f"{name}: {o.name}")
            worst = max(worst, float(np.max(np.abs(g - k))) if k.size else 0.0)
    print(f"{name}: ok (largest difference {worst:.2e})")


def main():
    specs = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            try:
                check(spec, tmp)
            except Exception as e:  # report every spec, then fail
                print(f"{os.path.basename(spec)}: FAILED: {e}")
                failed.append(spec)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
