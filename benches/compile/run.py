#!/usr/bin/env python3
"""Compile time against model size: kiln's spec → native training step, and JAX's
first call of the same training step (trace, XLA compile, one run) in a fresh process.

    python3 benches/compile/run.py --kiln target/release/kiln --dense 25,50,100,200,1000
    python3 benches/compile/run.py --kiln target/release/kiln --attention 1,12 --peers keras
    python3 benches/compile/run.py ... --peers jax,keras --json target/compile.json

kiln's number is `kiln bench --json`'s `compile_ms` (the median of 5 in-process
compiles: parse, check, lower, autodiff, graph passes, plan, Cranelift), its memory the
peak resident set of that whole `kiln bench` process (`ru_maxrss` from wait4), which
also runs the forward pass and a few training steps at batch 32. The specs come from
`gen_spec.py`. Peers (python3 with jax and keras installed; 2 threads like kiln):

- `jax`: the dense chain as pure functions (Glorot kernels, zero biases, MSE, Adam
  written out) under `jax.jit`; the first call of the step, timed to
  `block_until_ready`.
- `keras`: the same model built with Keras 3 on JAX (functional API; the attention
  stack as specs/attention.yaml's layers), `compile(jit_compile=True)`; the first
  `train_on_batch`.

Never run by tests or CI. Run on a quiet machine; the script records the load average
before each measurement.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_spec  # noqa: E402

PEER_ENV = {
    "KERAS_BACKEND": "jax",
    "JAX_PLATFORMS": "cpu",
    "OMP_NUM_THREADS": "2",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true",
    "CUDA_VISIBLE_DEVICES": "",
}

PEER = r'''
import sys, time, json, os
kind, fw, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
batch, seq = 32, 32
import numpy as np
rng = np.random.default_rng(0)
if fw == "jax":
    import jax, jax.numpy as jnp
    t0 = time.perf_counter()
    def init(key):
        ps = []
        for k in jax.random.split(key, n):
            lim = (6.0 / 128) ** 0.5
            ps.append((jax.random.uniform(k, (64, 64), minval=-lim, maxval=lim), jnp.zeros(64)))
        return ps
    params = init(jax.random.PRNGKey(0))
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    def loss_fn(ps, x, y):
        for w, b in ps:
            x = x @ w + b
        return jnp.mean((x - y) ** 2)
    @jax.jit
    def step(ps, m, v, t, x, y):
        l, g = jax.value_and_grad(loss_fn)(ps, x, y)
        b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-7
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        a = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        ps = jax.tree_util.tree_map(lambda p, m, v: p - a * m / (jnp.sqrt(v) + eps), ps, m, v)
        return ps, m, v, l
    x = jnp.asarray(rng.standard_normal((batch, 64), dtype=np.float32))
    y = jnp.asarray(rng.standard_normal((batch, 64), dtype=np.float32))
    jax.block_until_ready((params, x, y))
    s = time.perf_counter()
    out = step(params, m, v, 1.0, x, y)
    jax.block_until_ready(out)
    first = (time.perf_counter() - s) * 1e3
else:
    import keras
    from keras import layers
    if kind == "dense":
        inp = keras.Input((64,))
        h = inp
        for _ in range(n):
            h = layers.Dense(64)(h)
        model = keras.Model(inp, h)
        model.compile(optimizer="adam", loss="mean_squared_error", jit_compile=True)
        x = rng.standard_normal((batch, 64), dtype=np.float32)
        y = rng.standard_normal((batch, 64), dtype=np.float32)
    else:
        inp = keras.Input((None,), dtype="int32")
        h = layers.Embedding(5000, 64)(inp)
        for _ in range(n):
            a = layers.MultiHeadAttention(num_heads=4, key_dim=16)(h, h)
            h1 = layers.LayerNormalization()(layers.Add()([h, a]))
            f = layers.Dense(64)(layers.Dense(128, activation="relu")(h1))
            h = layers.LayerNormalization()(layers.Add()([h1, f]))
        out = layers.Dense(2)(layers.GlobalAveragePooling1D()(h))
        model = keras.Model(inp, out)
        model.compile(optimizer="adam", jit_compile=True, metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = rng.integers(0, 5000, (batch, seq)).astype(np.int32)
        y = rng.integers(0, 2, (batch,)).astype(np.int32)
    s = time.perf_counter()
    model.train_on_batch(x, y)
    first = (time.perf_counter() - s) * 1e3
print(json.dumps({"first_call_ms": first}))
'''


def reap(p):
    """Waits for `p`; its peak RSS in MiB (wait4's ru_maxrss is in KiB)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss / 1024.0


def kiln_case(kiln, kind, n, tmp):
    spec = os.path.join(tmp, f"{kind}{n}.yaml")
    with open(spec, "w") as f:
        f.write(gen_spec.dense_chain(n) if kind == "dense" else gen_spec.attention_stack(n))
    p = subprocess.Popen([kiln, "bench", spec, "--runs", "3", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()
    rss = reap(p)
    if p.returncode != 0:
        raise RuntimeError(f"kiln bench failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])["compile_ms"], rss


def peer_case(fw, kind, n):
    env = dict(os.environ, **PEER_ENV)
    p = subprocess.Popen([sys.executable, "-c", PEER, kind, fw, str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.stdout.read(), p.stderr.read()
    rss = reap(p)
    if p.returncode != 0:
        raise RuntimeError(f"{fw} failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])["first_call_ms"], rss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.path.join(HERE, "..", "..", "target", "release", "kiln"))
    ap.add_argument("--dense", default="25,50,100,200,1000")
    ap.add_argument("--attention", default="1,12")
    ap.add_argument("--peers", default="", help="comma-separated: jax, keras")
    ap.add_argument("--peer-max", type=int, default=200,
                    help="largest dense N the peers run (their first call grows fast)")
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    cases = [("dense", int(n)) for n in a.dense.split(",") if n] + \
            [("attention", int(n)) for n in a.attention.split(",") if n]
    peers = [p for p in a.peers.split(",") if p]
    results = []
    print("| model | kiln compile (ms) | kiln peak RSS (MiB) | " +
          " | ".join(f"{p} first call (ms) | {p} peak RSS (MiB)" for p in peers) + " | load |")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, n in cases:
            load = os.getloadavg()[0]
            ms, rss = kiln_case(a.kiln, kind, n, tmp)
            row = {"model": f"{kind} {n}", "kiln_ms": ms, "kiln_rss_mib": rss, "load": load}
            for p in peers:
                if p == "jax" and kind != "dense" or kind == "dense" and n > a.peer_max:
                    row[p] = None
                    continue
                row[p] = peer_case(p, kind, n)
            results.append(row)
            cells = [f"{kind} × {n}", f"{ms:,.1f}", f"{rss:,.0f}"]
            for p in peers:
                cells += [f"{row[p][0]:,.0f}", f"{row[p][1]:,.0f}"] if row[p] else ["—", "—"]
            print("| " + " | ".join(cells) + f" | {load:.1f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
