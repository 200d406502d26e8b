#!/usr/bin/env python3
"""Golden values from Keras 3 for kiln's tests (DESIGN §7: equal to Keras means shown
against Keras). The tests read the committed fixtures and need no Python.

A case is a kiln spec `tests/golden/keras/NAME.yaml` with a `train:` section. Its first
line may set how the case is run:

    # keras-golden: {batch: 4, dims: {seq: 5}, int_high: 20, train: true, seed: 1}

The spec's training options go to Keras as `compile` and `fit` take them: per-output
`loss`, `loss_weights`, `metrics` (with arguments) and `weighted_metrics`; a
`sample_weight` array is drawn and stored as a target array of that name, and
`class_weight` is passed to `train_on_batch`.

This script builds the same model in Keras from the spec (layer names are Keras class
names in snake_case, arguments are Keras's own), draws inputs and targets, and writes
`tests/golden/keras/NAME.npz` with

    x.INPUT    the inputs            y.TARGET   the targets
    w0.KEY     Keras's initial weights, keyed as kiln keys them (DESIGN §2)
    out.NAME   Keras's inference output for each model output
    loss       the loss of one `train_on_batch` (before its update)   [if train]
    log.NAME   every value that `train_on_batch` logged (per-output losses, metrics)
    eval.NAME  `evaluate` before the step in batches of `evaluate_batch` [if set]
    w1.KEY     the weights after that step                            [if train]

Regenerate (Keras 3 with the JAX backend, from PyPI):

    pip install keras jax pyyaml
    python3 scripts/keras_golden.py            # every case
    python3 scripts/keras_golden.py NAME ...   # some cases

Every `normalization` without `mean` and `variance` is adapted on the case's inputs
first (as kiln's fit does). `position_embedding` is keras_hub's layer
(`pip install --no-deps keras-hub` is enough).

A reference `LAYER.PART` (`bi.backward`, `bi.1`) is one element of the list a layer
with several outputs returns (`PARTS` names them per Keras class).

`train: false` compares the inference output only (for layers whose training mode is
random, such as dropout or gaussian_noise, whose random numbers differ from Keras's).
"""

import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "..", "tests", "golden", "keras")

# Spec names that Keras's own snake_case does not produce from the class name.
LAYER_ALIASES = {"leaky_relu": "LeakyReLU", "relu": "ReLU", "p_relu": "PReLU"}

# Arguments that kiln reads as connections or names, not as layer arguments.
CONNECTIONS = ("input", "inputs")


def snake(name):
    """Keras's own class-name → snake_case rule (keras.src.utils.naming)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def classes(module):
    out = {}
    for attr in dir(module):
        obj = getattr(module, attr)
        if isinstance(obj, type):
            out.setdefault(snake(attr), obj)
            out.setdefault(attr.lower(), obj)
    return out


LAYERS = classes(keras.layers)
for alias, cls in LAYER_ALIASES.items():
    LAYERS[alias] = getattr(keras.layers, cls)


def keras_hub_layers():
    """keras_hub's layers that kiln has (`position_embedding`), if keras_hub is installed.

    Its modules are loaded without running `keras_hub/__init__.py`, which needs
    tokenizer packages these layers do not use (`pip install --no-deps keras-hub`).
    """
    import importlib.util
    import types

    found = importlib.util.find_spec("keras_hub")
    if found is None:
        return {}
    root = os.path.dirname(found.origin)
    for name, path in (("keras_hub", root), ("keras_hub.src", os.path.join(root, "src"))):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
    from keras_hub.src.layers.modeling.position_embedding import PositionEmbedding

    return {"position_embedding": PositionEmbedding}


LAYERS.update(keras_hub_layers())
LOSSES = classes(keras.losses)
OPTIMIZERS = classes(keras.optimizers)
SCHEDULES = classes(keras.optimizers.schedules)
INITIALIZERS = classes(keras.initializers)
REGULARIZERS = classes(keras.regularizers)
METRICS = classes(keras.metrics)


def entry(value):
    """A catalog value as kiln writes it: `name` or `{name: {args}}`."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        return name, dict(args or {})
    raise ValueError(f"not a catalog entry: {value!r}")


def from_catalog(value, table, what, convert=None):
    name, args = entry(value)
    if name not in table and not args:
        return name  # an alias Keras resolves itself (`mse`, `acc`)
    if name not in table:
        raise ValueError(f"Keras has no {what} `{name}`")
    if convert:
        args = {k: convert(k, v) for k, v in args.items()}
    return table[name](**args)


def schedule_or_number(value):
    if isinstance(value, (int, float)):
        return value
    return from_catalog(value, SCHEDULES, "learning-rate schedule")


def optimizer_arg(key, value):
    return schedule_or_number(value) if key == "learning_rate" else value


def layer_arg(key, value):
    """One layer argument, converted to what Keras's constructor takes."""
    if key.endswith("_initializer"):
        name, args = entry(value)
        return INITIALIZERS[name](**args) if args else name
    if key.endswith("_regularizer"):
        # Built from the class, as Keras's string identifiers are (`l1_l2` is the
        # class's exported name; Keras's only string for it is `l1l2`).
        name, args = entry(value)
        return REGULARIZERS[name](**args)
    if key in ("layer", "backward_layer"):
        return build_layer(value)
    if key == "activation" and isinstance(value, dict):
        name, args = entry(value)
        fn = getattr(keras.activations, name)
        return lambda x: fn(x, **args)
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


# Arguments kiln writes on the layer that Keras takes when the layer is called.
CALL_ARGUMENTS = ("use_causal_mask", "return_attention_scores", "attention_mask")


def build_layer(item):
    """A layer entry (`kind` or `{kind: {args}}`) as a Keras layer, and its inputs."""
    kind, args = entry(item)
    if kind not in LAYERS:
        raise ValueError(f"Keras has no layer `{kind}`")
    kwargs = {
        k: layer_arg(k, v)
        for k, v in args.items()
        if k not in CONNECTIONS and k not in CALL_ARGUMENTS
    }
    return LAYERS[kind](**kwargs)


def call_arguments(item, tensors=None, layers=None):
    """The arguments of a layer entry that Keras takes at call time (a tensor argument,
    `attention_mask`, named as kiln names it: an input, a layer, `LAYER.PART`)."""
    _, args = entry(item)
    out = {k: v for k, v in args.items() if k in CALL_ARGUMENTS}
    if "attention_mask" in out:
        out["attention_mask"] = tensor_of(tensors, layers, out["attention_mask"])
    return out


def connections(item):
    _, args = entry(item)
    if "inputs" in args:
        return list(args["inputs"])
    if "input" in args:
        return [args["input"]]
    return None


def is_merge(layer):
    from keras.src.layers.merging.base_merge import Merge

    return isinstance(layer, Merge)


def input_decl(decl):
    if isinstance(decl, list):
        return decl, "f32"
    return decl["shape"], decl.get("dtype", "f32")


def concrete(shape, opts):
    dims = opts.get("dims", {})
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        elif d == "batch":
            out.append(opts.get("batch", 4))
        else:
            out.append(dims.get(d, 5))
    return out


# The outputs of a layer that returns several (Keras's list), as kiln names them
# (`bi.backward`, or by position `bi.1`).
PARTS = {
    "Bidirectional": ("forward", "backward"),
    "MultiHeadAttention": ("output", "scores"),
}


def tensor_of(tensors, layers, ref):
    """The tensor a kiln reference names: a layer or input, or `LAYER.PART`, one element
    of the list a layer with several outputs returns."""
    if "." not in ref:
        return tensors[ref]
    name, part = ref.split(".", 1)
    names = PARTS[type(layers[name]).__name__]
    return tensors[name][int(part) if part.isdigit() else names.index(part)]


def build_model(spec):
    """The spec as a Keras functional model; returns (model, input names)."""
    tensors = {}
    names = []
    model_inputs = []
    for name, decl in spec["inputs"].items():
        shape, dtype = input_decl(decl)
        keras_shape = [d if isinstance(d, int) else None for d in shape[1:]]
        t = keras.Input(shape=keras_shape, name=name, dtype="int32" if dtype != "f32" else "float32")
        tensors[name] = t
        names.append(name)
        model_inputs.append(t)
    last = model_inputs[0]
    layers = {}
    for item in spec["layers"]:
        layer = build_layer(item)
        srcs = connections(item)
        args = [tensor_of(tensors, layers, s) for s in srcs] if srcs else [last]
        if is_merge(layer):
            out = layer(args)
        else:
            out = layer(*args, **call_arguments(item, tensors, layers))
        tensors[layer.name] = out
        layers[layer.name] = layer
        last = out
    outs = spec.get("outputs") or [layer.name]
    model = keras.Model(
        model_inputs, [tensor_of(tensors, layers, o) for o in outs], name=spec.get("name", "m")
    )
    return model, names, outs


def draw_inputs(spec, rng, opts):
    xs = {}
    for name, decl in spec["inputs"].items():
        shape, dtype = input_decl(decl)
        shape = concrete(shape, opts)
        if dtype == "f32":
            xs[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            xs[name] = rng.integers(0, opts.get("int_high", 10), size=shape).astype(np.int32)
    return xs


def zero_some_steps(xs, rng, fraction):
    """Masks for `masking` layers: whole steps of float sequences set to zeros (the
    header's `zero_steps: FRACTION`); integer inputs get their zeros from `int_high`."""
    for name, x in xs.items():
        if x.dtype == np.float32 and x.ndim == 3:
            steps = rng.random(x.shape[:2]) < fraction
            x[steps] = 0.0


def zero_first_rows(xs, names):
    """Attention masks (`attention_mask: m`) with a query that attends to nothing: the
    header's `zero_rows: [m]` zeros the first row of every example of those inputs."""
    for name in names:
        xs[name][:, 0, ...] = 0


def draw_targets(spec, model, rng, opts):
    train = spec["train"]
    ys = {}
    for (name, decl), out, out_name in zip(
        train["targets"].items(), model.outputs, model.output_names
    ):
        loss_name, _ = entry(loss_for_output(train["loss"], out_name, model.output_names))
        shape, dtype = input_decl(decl)
        shape = concrete(shape, opts)
        classes_ = out.shape[-1]
        if loss_name == "sparse_categorical_crossentropy":
            ys[name] = rng.integers(0, classes_, size=shape).astype(
                np.float32 if dtype == "f32" else np.int32
            )
        elif loss_name == "categorical_crossentropy":
            labels = rng.integers(0, classes_, size=shape[:-1])
            ys[name] = np.eye(classes_, dtype=np.float32)[labels]
        elif loss_name == "binary_crossentropy":
            ys[name] = rng.integers(0, 2, size=shape).astype(np.float32)
        else:
            ys[name] = rng.standard_normal(shape).astype(np.float32)
    return ys


def weights(model):
    """Every model variable keyed as kiln keys it: its Keras path without the model."""
    out = {}
    for v in model.weights:
        path = v.path
        if "seed_generator" in path:
            continue
        out[path] = np.asarray(v.numpy(), dtype=np.float32)
    return out


def adapt(model, input_names, xs):
    """Keras's `adapt` on the case's inputs for every `Normalization` without `mean`
    and `variance`, as kiln's fit does before its first step, in layer order. A layer
    on a model input adapts on that input; one whose input earlier layers compute
    adapts on that input computed over the case's inputs (inference mode), as a Keras
    user adapts on the preprocessed array."""
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Normalization) or layer.input_mean is not None:
            continue
        at = [i for i, t in enumerate(model.inputs) if t is layer.input]
        if at:
            layer.adapt(xs[input_names[at[0]]])
        else:
            layer.adapt(adapt_input(model, layer, input_names, xs))


def adapt_input(model, layer, input_names, xs):
    """The value of `layer`'s input over the case's inputs, by the layers before it."""
    sub = keras.Model(model.inputs, layer.input)
    return np.asarray(sub([xs[n] for n in input_names], training=False))


def compile_model(model, spec):
    train = spec["train"]
    opt = from_catalog(train["optimizer"], OPTIMIZERS, "optimizer", optimizer_arg)
    model.compile(optimizer=opt, **compile_options(train, model.output_names))


# Training options per output and per example (loss dicts and lists, loss_weights,
# metrics with arguments, sample_weight, class_weight), as Keras's compile/fit take them.


def is_one_loss(loss):
    """A loss written once for every output: a name or `{loss_name: {args}}`."""
    if isinstance(loss, str):
        return True
    if isinstance(loss, dict) and len(loss) == 1:
        (name, _), = loss.items()
        return name in LOSSES or name in ("mse", "mae")
    return False


def loss_for_output(loss, out_name, out_names):
    """The loss (as the spec writes it) of the output `out_name`."""
    if is_one_loss(loss):
        return loss
    if isinstance(loss, list):
        return loss[out_names.index(out_name)]
    return loss[out_name]


def metric(value):
    """A metric as the spec writes it (`name` or `{name: {args}}`) as a Keras metric."""
    name, args = entry(value)
    if not args:
        return name
    return METRICS[name](**args)


def metric_lists(value):
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: [metric(m) for m in (v if isinstance(v, list) else [v])] for k, v in value.items()}
    if isinstance(value, list):
        return [[metric(x) for x in m] if isinstance(m, list) else metric(m) for m in value]
    return [metric(value)]


def compile_options(train, out_names):
    """`compile`'s loss, loss_weights, metrics and weighted_metrics from the spec."""
    loss = train["loss"]
    if is_one_loss(loss):
        keras_loss = from_catalog(loss, LOSSES, "loss")
    elif isinstance(loss, list):
        keras_loss = [from_catalog(l, LOSSES, "loss") for l in loss]
    else:
        keras_loss = {k: from_catalog(v, LOSSES, "loss") for k, v in loss.items()}
    out = {"loss": keras_loss}
    if "loss_weights" in train:
        out["loss_weights"] = train["loss_weights"]
    for key in ("metrics", "weighted_metrics"):
        if key in train:
            out[key] = metric_lists(train[key])
    return out


def fit_weights(train, rng, opts):
    """`train_on_batch`'s sample_weight (drawn, stored as a target array named as the
    spec names it) or class_weight; returns (kwargs, arrays to store)."""
    if "sample_weight" in train:
        w = rng.uniform(0.25, 2.0, size=[opts.get("batch", 4)]).astype(np.float32)
        return {"sample_weight": w}, {f"y.{train['sample_weight']}": w}
    if "class_weight" in train:
        return {"class_weight": {int(k): float(v) for k, v in train["class_weight"].items()}}, {}
    return {}, {}


def evaluate_logs(model, xs, ys, input_names, spec, kwargs, opts):
    """With `evaluate_batch: B` in the header: Keras's `evaluate` of the initial model
    in batches of B (metrics kept over every batch, as over an epoch), as `eval.NAME`."""
    if "evaluate_batch" not in opts:
        return {}
    y = [ys[k] for k in spec["train"]["targets"]]
    logs = model.evaluate(
        [xs[n] for n in input_names],
        y if len(y) > 1 else y[0],
        batch_size=opts["evaluate_batch"],
        sample_weight=kwargs.get("sample_weight"),
        return_dict=True,
        verbose=0,
    )
    return {f"eval.{k}": np.asarray(v, dtype=np.float32) for k, v in logs.items()}


def header(text):
    first = text.splitlines()[0] if text else ""
    m = re.match(r"#\s*keras-golden:\s*(.*)$", first)
    return yaml.safe_load(m.group(1)) if m else {}


def run_case(name):
    path = os.path.join(CASES, name + ".yaml")
    with open(path) as f:
        text = f.read()
    opts = header(text) or {}
    spec = yaml.safe_load(text)
    seed = opts.get("seed", 0)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model, input_names, output_names = build_model(spec)
    rng = np.random.default_rng(seed)
    xs = draw_inputs(spec, rng, opts)
    if opts.get("zero_steps"):
        zero_some_steps(xs, rng, opts["zero_steps"])
    if opts.get("zero_rows"):
        zero_first_rows(xs, opts["zero_rows"])
    ys = draw_targets(spec, model, rng, opts)
    adapt(model, input_names, xs)
    arrays = {f"x.{k}": v for k, v in xs.items()}
    arrays.update({f"y.{k}": v for k, v in ys.items()})
    arrays.update({f"w0.{k}": v for k, v in weights(model).items()})
    outs = model([xs[n] for n in input_names], training=False)
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    for n, o in zip(output_names, outs):
        arrays[f"out.{n}"] = np.asarray(o, dtype=np.float32)
    if opts.get("train", True):
        compile_model(model, spec)
        y = [ys[k] for k in spec["train"]["targets"]]
        kwargs, extra = fit_weights(spec["train"], rng, opts)
        arrays.update(extra)
        arrays.update(evaluate_logs(model, xs, ys, input_names, spec, kwargs, opts))
        logs = model.train_on_batch(
            [xs[n] for n in input_names], y if len(y) > 1 else y[0], return_dict=True, **kwargs
        )
        arrays["loss"] = np.asarray(logs["loss"], dtype=np.float32)
        arrays.update({f"log.{k}": np.asarray(v, dtype=np.float32) for k, v in logs.items()})
        arrays.update({f"w1.{k}": v for k, v in weights(model).items()})
    np.savez(os.path.join(CASES, name + ".npz"), **arrays)
    print(f"{name}: {len(arrays)} arrays")


def main(argv):
    names = argv or sorted(f[:-5] for f in os.listdir(CASES) if f.endswith(".yaml"))
    for n in names:
        run_case(n)


if __name__ == "__main__":
    main(sys.argv[1:])
