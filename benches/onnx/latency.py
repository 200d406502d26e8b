#!/usr/bin/env python3
"""Batch-1 inference latency: kiln in process (`kiln bench --json`, forward median)
against ONNX Runtime running the model `kiln export` wrote, interleaved rounds.

    pip install onnx onnxruntime numpy
    cargo build --release
    python3 benches/onnx/latency.py [specs/NAME.yaml ...] [--rounds 5]

Both sides use 2 threads (ONNX Runtime's intra-op pool; kiln's team), and every
symbolic size (a sequence's length too) is 1, as `kiln bench` sets them to the batch
size. Not run by the tests or CI.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILN = os.path.join(ROOT, "target", "release", "kiln")


def feeds_for(model, seq=1):
    # `kiln bench` gives every symbolic size the batch size; so does this, at 1.
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in model.graph.input:
        t = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else seq)
                 for i, d in enumerate(t.shape.dim)]
        if t.elem_type == onnx.TensorProto.FLOAT:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[inp.name] = rng.integers(1, 3, size=shape).astype(np.int32)
    return feeds


def ort_ms(sess, feeds, steps=200):
    for _ in range(20):
        sess.run(None, feeds)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def kiln_ms(spec, steps=200):
    out = subprocess.run([KILN, "bench", spec, "--batch-size", "1", "--json",
                          "--runs", str(steps)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["forward_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    specs = a.specs or [os.path.join(ROOT, "specs", s) for s in
                        ["digits_mlp.yaml", "digits_cnn.yaml", "lstm.yaml", "attention.yaml"]]
    env = dict(os.environ, KILN_NUM_THREADS="2")
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        print("| spec | kiln forward, B=1 (ms) | ONNX Runtime, B=1 (ms) | kiln / ORT |")
        print("|---|---:|---:|---:|")
        for spec in specs:
            name = os.path.splitext(os.path.basename(spec))[0]
            w = os.path.join(tmp, name + ".safetensors")
            path = os.path.join(tmp, name + ".onnx")
            subprocess.run([KILN, "init", spec, "--out", w], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([KILN, "export", spec, "--weights", w, "-o", path], check=True,
                           stdout=subprocess.DEVNULL)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            feeds = feeds_for(onnx.load(path))
            k, o = [], []
            for _ in range(a.rounds):
                k.append(kiln_ms(spec))
                o.append(ort_ms(sess, feeds))
            km, om = statistics.median(k), statistics.median(o)
            print(f"| {name} | {km:.4f} | {om:.4f} | {km / om:.2f}× |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
