"""One peer framework, one model, one batch size, in its own process.

    python peers.py FRAMEWORK MODEL BATCH [SEQ]

FRAMEWORK is torch (PyTorch eager), jax (JAX jit) or keras (Keras 3 on JAX); MODEL is
mlp (specs/mlp.yaml), cnn (specs/cnn.yaml), lstm (specs/lstm.yaml) or attention
(specs/attention.yaml); SEQ is the sequence length of the token models. The models,
losses, metrics and optimizers mirror the kiln specs: the same layers and shapes;
for mlp, cnn and attention Adam (Keras defaults, lr 1e-3, eps 1e-7), sparse
categorical cross-entropy from logits, accuracy; for lstm RMSprop (lr 1e-3, rho 0.9,
eps 1e-7, each gradient clipped to norm 1 as Keras's `clipnorm` does), binary
cross-entropy from logits, accuracy. The token models run in PyTorch and Keras only
(the pure-JAX versions are not written).

Protocol (one JSON object per line on stdout, commands on stdin):
  start      -> {"ready": true, "compile_ms": first call of the train step or null,
                 "rss_after_import_mb": ...}
  "train N"  -> {"ms": [N per-step times]}   (3 untimed warm-up steps first)
  "forward N"-> {"ms": [N batch-size forward times]}  (3 warm-up calls first)
  "quit"     -> {"max_rss_mb": peak resident set of this process}

Timing is wall clock around one whole step, blocking until results are ready
(CPU tensors in PyTorch are synchronous; JAX results are waited on with
block_until_ready). Nothing here is used by kiln's tests or CI.
"""

import json
import os
import resource
import sys
import time

import numpy as np

FRAMEWORK, MODEL, BATCH = sys.argv[1], sys.argv[2], int(sys.argv[3])
SEQ = int(sys.argv[4]) if len(sys.argv) > 4 else 0
# Vocabulary sizes of the token specs.
VOCAB = {"lstm": 10000, "attention": 5000}
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
CLASSES = 10
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-7


def rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def data(batch):
    rng = np.random.default_rng(0)
    if MODEL in VOCAB:
        x = rng.integers(0, VOCAB[MODEL], size=(batch, SEQ)).astype(np.int32)
        if MODEL == "lstm":
            return x, rng.integers(0, 2, size=(batch, 1)).astype(np.float32)
        return x, rng.integers(0, 2, size=(batch,)).astype(np.int32)
    shape = (batch, 784) if MODEL == "mlp" else (batch, 8, 8, 1)
    x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, CLASSES, size=(batch,)).astype(np.int32)
    return x, y


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def timed(fn, n):
    for _ in range(3):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


# ---------------------------------------------------------------- PyTorch eager
def setup_torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if MODEL in VOCAB:
        return setup_torch_tokens(torch, nn, F)
    if MODEL == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, CLASSES),
        )
    else:
        # PyTorch's native layout is NCHW, so the input is given to it that way.
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.BatchNorm2d(32, eps=1e-3, momentum=0.01),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(32, CLASSES),
        )
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(B1, B2), eps=EPS)
    x, y = data(BATCH)
    if MODEL == "cnn":
        x = x.transpose(0, 3, 1, 2).copy()
    x = torch.from_numpy(x)
    y = torch.from_numpy(y).long()

    def train():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
        return loss, acc

    def forward():
        with torch.inference_mode():
            return model(x)

    return train, forward, None, {"train": model.train, "forward": model.eval}


class TorchLstm:
    """embedding 10000×64 → LSTM 64 (sequences) → GRU 32 (last state) → dense 1.
    PyTorch's GRU is Keras's `reset_after=True` form (Keras's default)."""

    def __init__(self, torch, nn):
        self.m = nn.ModuleDict({
            "emb": nn.Embedding(10000, 64), "lstm": nn.LSTM(64, 64, batch_first=True),
            "gru": nn.GRU(64, 32, batch_first=True), "out": nn.Linear(32, 1)})

    def __call__(self, x):
        h, _ = self.m["lstm"](self.m["emb"](x))
        _, last = self.m["gru"](h)
        return self.m["out"](last[0])


class TorchEncoder:
    """embedding 5000×64 → 4-head self-attention (key_dim 16) → add → layer norm →
    dense 128 relu → dense 64 → add → layer norm → mean over steps → dense 2."""

    def __init__(self, torch, nn):
        self.m = nn.ModuleDict({
            "emb": nn.Embedding(5000, 64), "attn": nn.MultiheadAttention(64, 4, batch_first=True),
            "norm1": nn.LayerNorm(64, eps=1e-3), "d1": nn.Linear(64, 128), "d2": nn.Linear(128, 64),
            "norm2": nn.LayerNorm(64, eps=1e-3), "out": nn.Linear(64, 2)})
        self.relu = torch.relu

    def __call__(self, x):
        m = self.m
        e = m["emb"](x)
        a, _ = m["attn"](e, e, e, need_weights=False)
        h = m["norm1"](e + a)
        f = m["d2"](self.relu(m["d1"](h)))
        return m["out"](m["norm2"](h + f).mean(dim=1))


def setup_torch_tokens(torch, nn, F):
    model = (TorchLstm if MODEL == "lstm" else TorchEncoder)(torch, nn)
    params = list(model.m.parameters())
    if MODEL == "lstm":
        opt = torch.optim.RMSprop(params, lr=LR, alpha=0.9, eps=EPS)
    else:
        opt = torch.optim.Adam(params, lr=LR, betas=(B1, B2), eps=EPS)
    x, y = data(BATCH)
    x = torch.from_numpy(x).long()
    y = torch.from_numpy(y) if MODEL == "lstm" else torch.from_numpy(y).long()

    def train():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        if MODEL == "lstm":
            loss = F.binary_cross_entropy_with_logits(logits, y)
        else:
            loss = F.cross_entropy(logits, y)
        loss.backward()
        if MODEL == "lstm":
            # Keras's clipnorm: each gradient clipped to norm 1 on its own.
            for p in params:
                torch.nn.utils.clip_grad_norm_([p], 1.0)
        opt.step()
        with torch.no_grad():
            if MODEL == "lstm":
                acc = ((logits > 0).float() == y).float().mean()
            else:
                acc = (logits.argmax(1) == y).float().mean()
        return loss, acc

    def forward():
        with torch.inference_mode():
            return model(x)

    return train, forward, None, {"train": model.m.train, "forward": model.m.eval}


# ---------------------------------------------------------------- JAX jit
def jax_model():
    import jax
    import jax.numpy as jnp
    from jax import lax

    def glorot(key, shape, fan_in, fan_out):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, jnp.float32, -lim, lim)

    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    if MODEL == "mlp":
        sizes = [784, 256, 256, CLASSES]
        params = {}
        for i in range(3):
            params[f"w{i}"] = glorot(keys[i], (sizes[i], sizes[i + 1]), sizes[i], sizes[i + 1])
            params[f"b{i}"] = jnp.zeros((sizes[i + 1],), jnp.float32)
        state = {}

        def apply(params, state, x, training, key):
            h = jax.nn.relu(x @ params["w0"] + params["b0"])
            h = jax.nn.relu(h @ params["w1"] + params["b1"])
            return h @ params["w2"] + params["b2"], state
    else:
        params = {
            "c0": glorot(keys[0], (3, 3, 1, 16), 9, 9 * 16),
            "c0b": jnp.zeros((16,), jnp.float32),
            "c1": glorot(keys[1], (3, 3, 16, 32), 9 * 16, 9 * 32),
            "c1b": jnp.zeros((32,), jnp.float32),
            "gamma": jnp.ones((32,), jnp.float32),
            "beta": jnp.zeros((32,), jnp.float32),
            "w": glorot(keys[2], (32, CLASSES), 32, CLASSES),
            "b": jnp.zeros((CLASSES,), jnp.float32),
        }
        state = {"mean": jnp.zeros((32,), jnp.float32), "var": jnp.ones((32,), jnp.float32)}
        dn = ("NHWC", "HWIO", "NHWC")

        def apply(params, state, x, training, key):
            h = lax.conv_general_dilated(x, params["c0"], (1, 1), "SAME", dimension_numbers=dn)
            h = jax.nn.relu(h + params["c0b"])
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            h = lax.conv_general_dilated(h, params["c1"], (1, 1), "SAME", dimension_numbers=dn)
            h = jax.nn.relu(h + params["c1b"])
            if training:
                mean = jnp.mean(h, axis=(0, 1, 2))
                var = jnp.var(h, axis=(0, 1, 2))
                state = {
                    "mean": 0.99 * state["mean"] + 0.01 * mean,
                    "var": 0.99 * state["var"] + 0.01 * var,
                }
            else:
                mean, var = state["mean"], state["var"]
            h = (h - mean) * lax.rsqrt(var + 1e-3) * params["gamma"] + params["beta"]
            h = jnp.mean(h, axis=(1, 2))
            if training:
                keep = jax.random.bernoulli(key, 0.8, h.shape)
                h = jnp.where(keep, h / 0.8, 0.0)
            return h @ params["w"] + params["b"], state

    return params, state, apply


def setup_jax():
    import jax
    import jax.numpy as jnp

    params, state, apply = jax_model()

    def loss_fn(params, state, x, y, key):
        logits, state = apply(params, state, x, True, key)
        logz = jax.nn.logsumexp(logits, axis=1)
        loss = jnp.mean(logz - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0])
        acc = jnp.mean((jnp.argmax(logits, axis=1) == y).astype(jnp.float32))
        return loss, (state, acc)

    def step(params, m, v, state, t, key, x, y):
        key, sub = jax.random.split(key)
        (loss, (state, acc)), g = jax.value_and_grad(loss_fn, has_aux=True)(
            params, state, x, y, sub)
        t = t + 1
        m = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, m, g)
        v = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * g * g, v, g)
        lr = LR * jnp.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        params = jax.tree.map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + EPS), params, m, v)
        return params, m, v, state, t, key, loss, acc

    x, y = data(BATCH)
    x, y = jnp.asarray(x), jnp.asarray(y)
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t = jnp.zeros((), jnp.float32)
    key = jax.random.PRNGKey(1)
    # Parameters and optimizer state are donated: updated in place, as kiln does.
    jstep = jax.jit(step, donate_argnums=(0, 1, 2, 3))
    carry = [params, m, v, state, t, key]

    def train():
        out = jstep(*carry, x, y)
        jax.block_until_ready(out)
        carry[:] = out[:6]
        return out

    # compile latency = the first call (tracing + XLA compilation + one run).
    s = time.perf_counter()
    train()
    compile_ms = (time.perf_counter() - s) * 1e3

    jfwd = jax.jit(lambda p, st, x: apply(p, st, x, False, None)[0])

    def forward():
        return jax.block_until_ready(jfwd(carry[0], carry[3], x))

    return train, forward, compile_ms, {}


# ---------------------------------------------------------------- Keras 3 on JAX
def setup_keras():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    if MODEL == "lstm":
        model = keras.Sequential([
            keras.Input((SEQ,), dtype="int32"),
            layers.Embedding(10000, 64),
            layers.LSTM(64, return_sequences=True),
            layers.GRU(32),
            layers.Dense(1),
        ])
    elif MODEL == "attention":
        tokens = keras.Input((SEQ,), dtype="int32")
        e = layers.Embedding(5000, 64)(tokens)
        a = layers.MultiHeadAttention(num_heads=4, key_dim=16)(e, e)
        h = layers.LayerNormalization()(layers.Add()([e, a]))
        f = layers.Dense(64)(layers.Dense(128, activation="relu")(h))
        h = layers.LayerNormalization()(layers.Add()([h, f]))
        out = layers.Dense(2)(layers.GlobalAveragePooling1D()(h))
        model = keras.Model(tokens, out)
    elif MODEL == "mlp":
        model = keras.Sequential([
            keras.Input((784,)),
            layers.Dense(256, activation="relu"),
            layers.Dense(256, activation="relu"),
            layers.Dense(CLASSES),
        ])
    else:
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(CLASSES),
        ])
    if MODEL == "lstm":
        optimizer = keras.optimizers.RMSprop(LR, clipnorm=1.0)
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
    else:
        optimizer = keras.optimizers.Adam(LR)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=True)
    x, y = data(BATCH)

    def train():
        return model.train_on_batch(x, y)

    s = time.perf_counter()
    train()
    compile_ms = (time.perf_counter() - s) * 1e3

    def forward():
        return model.predict_on_batch(x)

    return train, forward, compile_ms, {}


def main():
    if FRAMEWORK == "keras":
        os.environ["KERAS_BACKEND"] = "jax"
    setup = {"torch": setup_torch, "jax": setup_jax, "keras": setup_keras}[FRAMEWORK]
    rss0 = rss_mb()
    train, forward, compile_ms, modes = setup()
    emit({"ready": True, "compile_ms": compile_ms, "rss_after_setup_mb": rss_mb(),
          "rss_before_setup_mb": rss0})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] in modes:
            modes[cmd[0]]()
        if cmd[0] == "train":
            emit({"ms": timed(train, int(cmd[1]))})
        elif cmd[0] == "forward":
            emit({"ms": timed(forward, int(cmd[1]))})
        elif cmd[0] == "quit":
            emit({"max_rss_mb": rss_mb()})
            return


if __name__ == "__main__":
    main()
