#!/usr/bin/env python3
"""Time per epoch on the bundled digits: kiln beside the same models in PyTorch (eager)
and Keras 3 (JAX backend), on this machine, in one run. Not used by tests or CI.

    python3 scripts/compare_digits.py                 # both models, 20 epochs each
    python3 scripts/compare_digits.py --epochs 10 --models mlp --json out.json

The peers come from PyPI into the benchmark's own virtual environment under target/
(benches/compare/setup.sh creates it on first use; BENCH_VENV picks another place);
this script re-runs itself inside it. kiln is built in release mode first (KILN=path
uses an existing binary).

What is measured, the same way for all three: the two specs' models (specs/
digits_mlp.yaml, specs/digits_cnn.yaml) with the same layers, initial learning rate,
Adam, batch size 32 and data — the first 1,437 images for training, the last 360 held
out — each trained for the spec's epochs with the data shuffled every epoch. An epoch's
time is its training batches only (kiln's epoch line reports exactly that; for the
peers a timer around the batch loop / Keras's on_epoch_begin..on_epoch_end with no
validation inside fit). The table gives the median over epochs 2..N (epoch 1 holds the
JIT/XLA compilation) and the held-out accuracy after the last epoch.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("BENCH_VENV", os.path.join(ROOT, "target", "bench-venv"))


def ensure_peers():
    try:
        import keras  # noqa: F401
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        py = os.path.join(VENV, "bin", "python")
        if os.path.abspath(sys.executable) == os.path.abspath(py):
            raise
        subprocess.check_call(["bash", os.path.join(ROOT, "benches", "compare", "setup.sh")])
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


SPECS = {"mlp": "specs/digits_mlp.yaml", "cnn": "specs/digits_cnn.yaml"}
# The specs' settings (kept equal by hand: check them when a spec changes).
LR = {"mlp": 0.001, "cnn": 0.003}


def load_digits():
    import numpy as np

    d = np.load(os.path.join(ROOT, "data", "digits.npz"))
    x, y = d["image"], d["label"]
    at = int(len(y) * 0.8)  # Keras's validation_split 0.2: the last 20 %
    return x[:at], y[:at], x[at:], y[at:]


def parse_time(t):
    if t.endswith("ms"):
        return float(t[:-2]) / 1e3
    if t.endswith("s"):
        return float(t[:-1])
    raise ValueError(t)


def run_kiln(kiln, model, epochs, backend):
    out = tempfile.mkdtemp(prefix="kiln-compare-")
    try:
        cmd = [kiln, "train", os.path.join(ROOT, SPECS[model]), "--epochs", str(epochs),
               "--backend", backend, "--out", os.path.join(out, "w.safetensors")]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    times, acc = [], None
    for line in p.stdout.splitlines():
        m = re.match(r"Epoch \d+/\d+\s+\d+/\d+ \S+ (\S+) \S+/step(.*)", line)
        if m:
            times.append(parse_time(m.group(1)))
            a = re.search(r"val_accuracy: ([0-9.]+)", m.group(2))
            acc = float(a.group(1)) if a else None
    return times, acc


def run_torch(model, epochs, seed=0):
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count())
    xtr, ytr, xva, yva = load_digits()
    # channels first for torch's convolutions
    xtr_t = torch.from_numpy(np.ascontiguousarray(xtr.transpose(0, 3, 1, 2)))
    xva_t = torch.from_numpy(np.ascontiguousarray(xva.transpose(0, 3, 1, 2)))
    ytr_t, yva_t = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yva.astype(np.int64))
    if model == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    else:
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Dropout(0.2), nn.Linear(32 * 4 * 4, 10))
    opt = torch.optim.Adam(net.parameters(), lr=LR[model], eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(ytr)))
        net.train()
        t0 = time.perf_counter()
        for b in range(0, len(ytr), 32):
            idx = order[b:b + 32]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    net.eval()
    with torch.no_grad():
        acc = (net(xva_t).argmax(1) == yva_t).float().mean().item()
    return times, acc


def run_keras(model, epochs, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    xtr, ytr, xva, yva = load_digits()
    if model == "mlp":
        layers = [keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                  keras.layers.Dense(10)]
    else:
        layers = [keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                  keras.layers.MaxPooling2D(2),
                  keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                  keras.layers.Flatten(), keras.layers.Dropout(0.2), keras.layers.Dense(10)]
    net = keras.Sequential([keras.Input((8, 8, 1))] + layers)
    net.compile(optimizer=keras.optimizers.Adam(LR[model]),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    net.fit(xtr, ytr, batch_size=32, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    _, acc = net.evaluate(xva, yva, batch_size=32, verbose=0)
    return timer.times, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    ensure_peers()
    import jax
    import keras
    import torch

    kiln = os.environ.get("KILN")
    if not kiln:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        kiln = os.path.join(ROOT, "target", "release", "kiln")
    rows = []
    for model in args.models.split(","):
        runs = [
            ("kiln (jit)", lambda: run_kiln(kiln, model, args.epochs, "jit")),
            ("kiln (interp)", lambda: run_kiln(kiln, model, args.epochs, "interp")),
            ("PyTorch eager", lambda: run_torch(model, args.epochs)),
            ("Keras 3 (JAX)", lambda: run_keras(model, args.epochs)),
        ]
        for name, fn in runs:
            times, acc = fn()
            steady = times[1:] or times
            rows.append({
                "model": model, "framework": name,
                "epoch_ms": 1e3 * statistics.median(steady),
                "first_epoch_ms": 1e3 * times[0],
                "val_accuracy": acc, "epochs": len(times),
            })
            print(f"{model:4} {name:15} {rows[-1]['epoch_ms']:9.1f} ms/epoch "
                  f"(first {rows[-1]['first_epoch_ms']:.0f} ms)  val_accuracy {acc:.4f}",
                  file=sys.stderr)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
               f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
               f"jax {jax.__version__}, keras {keras.__version__}")
    print(f"\nDigits, batch 32, {args.epochs} epochs; median time per epoch over epochs "
          f"2..{args.epochs} (training batches only); {machine}\n")
    print("| model | framework | ms / epoch | first epoch (ms) | val accuracy |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['framework']} | {r['epoch_ms']:.1f} | "
              f"{r['first_epoch_ms']:.0f} | {r['val_accuracy']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
