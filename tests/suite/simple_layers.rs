//! The simple layers, in-model preprocessing and regularizers of issue 10: shape rules
//! and parameter counts against Keras's, gradients against finite differences,
//! compiled against interpreted, forward values against Keras's formulas, the noise
//! layers' distributions, regularization in the loss, and `adapt` at the start of fit.

use crate::common::{Rng, compare_jit, concrete, fd_check, model};
use kiln::dim::fmt_shape;
use kiln::ir::{Func, interp};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

/// (output shape of the last layer, its parameter count, its trainable count).
fn run(inputs: &str, layers: &str) -> (String, i64, i64) {
    let m = model(inputs, layers);
    let l = m.graph.layers.last().unwrap();
    let total: i64 = l.params.iter().map(|p| p.count()).sum();
    let trainable: i64 = l
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.count())
        .sum();
    (fmt_shape(&l.output.shape), total, trainable)
}

fn one(input: &str, layer: &str) -> (String, i64) {
    let (s, p, _) = run(&format!("{{x: {input}}}"), &format!("  - {layer}"));
    (s, p)
}

/// The diagnostic codes of a spec that must fail.
fn codes(inputs: &str, layers: &str) -> Vec<&'static str> {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n");
    match kiln::Model::from_source(&src, "t", "t.yaml") {
        Ok(_) => panic!("{src} checked clean"),
        Err(kiln::Error::Spec(e)) => e.diagnostics.iter().map(|d| d.code).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn shapes_and_parameter_counts_match_keras() {
    // Shape-preserving, no weights.
    for l in [
        "identity",
        "gaussian_noise: {stddev: 0.1}",
        "gaussian_dropout: {rate: 0.2}",
        "spatial_dropout1d: {rate: 0.3}",
        "rescaling: {scale: 0.5, offset: 1}",
    ] {
        assert_eq!(
            one("[batch, seq, 7]", l),
            ("[batch, seq, 7]".into(), 0),
            "{l}"
        );
    }
    assert_eq!(
        one("[batch, 5, 6, 3]", "spatial_dropout2d: {rate: 0.5}"),
        ("[batch, 5, 6, 3]".into(), 0)
    );
    // Identity passes integers through; rescaling casts them to f32.
    let m = model("{t: {shape: [batch, 4], dtype: i32}}", "  - identity");
    assert!(m.graph.layers[0].output.dtype.is_int());
    let m = model(
        "{t: {shape: [batch, 4], dtype: i32}}",
        "  - rescaling: {scale: 0.1}",
    );
    assert!(!m.graph.layers[0].output.dtype.is_int());
    assert_eq!(
        one("[batch, 5]", "repeat_vector: {n: 3}"),
        ("[batch, 3, 5]".into(), 0)
    );
    // Normalization: mean and variance on the kept axes, count a scalar; none trainable.
    assert_eq!(
        run("{x: [batch, 4]}", "  - normalization"),
        ("[batch, 4]".into(), 9, 0)
    );
    assert_eq!(
        run("{x: [batch, 3, 4, 5]}", "  - normalization: {axis: [2, 1]}"),
        ("[batch, 3, 4, 5]".into(), 12 + 12 + 1, 0)
    );
    let m = model("{x: [batch, 3, 4]}", "  - normalization: {axis: [-1, 1]}");
    let names: Vec<_> = m.graph.layers[0]
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("mean", vec![3, 4]),
            ("variance", vec![3, 4]),
            ("count", vec![])
        ]
    );
    assert_eq!(
        one(
            "[batch, 3]",
            "normalization: {mean: [1, 2, 3], variance: [1, 4, 9]}"
        ),
        ("[batch, 3]".into(), 0)
    );
    assert_eq!(
        one("[batch, 3]", "normalization: {mean: 2, variance: 4}"),
        ("[batch, 3]".into(), 0)
    );
    // keras_hub's PositionEmbedding: embeddings [sequence_length, features].
    assert_eq!(
        run(
            "{x: [batch, 10, 8]}",
            "  - position_embedding: {sequence_length: 16}"
        ),
        ("[batch, 10, 8]".into(), 128, 128)
    );
    assert_eq!(
        one(
            "[batch, seq, 8]",
            "position_embedding: {sequence_length: 16}"
        ),
        ("[batch, seq, 8]".into(), 128)
    );
}

#[test]
fn merges_match_keras_shapes() {
    let two = "{a: [batch, 5, 4], b: [batch, 5, 4]}";
    for l in ["maximum", "minimum", "average"] {
        assert_eq!(
            run(two, &format!("  - {l}: {{inputs: [a, b]}}")),
            ("[batch, 5, 4]".into(), 0, 0)
        );
    }
    assert_eq!(
        run(
            "{a: [batch, 5, 4], b: [batch, 1, 4], c: [batch, 5, 4]}",
            "  - average: {inputs: [a, b, c]}"
        )
        .0,
        "[batch, 5, 4]"
    );
    // Dot, as Keras's compute_output_shape.
    let dot =
        |inputs: &str, args: &str| run(inputs, &format!("  - dot: {{inputs: [a, b], {args}}}")).0;
    assert_eq!(
        dot("{a: [batch, 4], b: [batch, 4]}", "axes: 1"),
        "[batch, 1]"
    );
    assert_eq!(
        dot("{a: [batch, 5, 4], b: [batch, 6, 4]}", "axes: 2"),
        "[batch, 5, 6]"
    );
    assert_eq!(
        dot("{a: [batch, 5, 4], b: [batch, 6, 4]}", "axes: -1"),
        "[batch, 5, 6]"
    );
    assert_eq!(
        dot("{a: [batch, 5, 4], b: [batch, 5, 6]}", "axes: [1, 1]"),
        "[batch, 4, 6]"
    );
    assert_eq!(
        dot("{a: [batch, 4], b: [batch, 4, 6]}", "axes: [1, 1]"),
        "[batch, 6]"
    );
    assert_eq!(
        dot(
            "{a: [batch, 2, 3, 4], b: [batch, 4, 5]}",
            "axes: [3, 1], normalize: true"
        ),
        "[batch, 2, 3, 5]"
    );
}

#[test]
fn bad_uses_get_diagnostics() {
    let x = "{x: [batch, 4]}";
    assert_eq!(codes(x, "  - spatial_dropout1d: {rate: 0.2}"), ["E0501"]);
    assert_eq!(
        codes("{x: [batch, 4, 3]}", "  - spatial_dropout2d: {rate: 0.2}"),
        ["E0501"]
    );
    assert_eq!(codes(x, "  - gaussian_noise: {stddev: 1.5}"), ["E0404"]);
    assert_eq!(codes(x, "  - gaussian_dropout: {rate: 1.0}"), ["E0404"]);
    assert_eq!(
        codes("{x: [batch, 2, 4]}", "  - repeat_vector: {n: 2}"),
        ["E0501"]
    );
    assert_eq!(codes(x, "  - repeat_vector: {n: 0}"), ["E0404"]);
    assert_eq!(
        codes(
            "{a: [batch, 4], b: [batch, 3]}",
            "  - maximum: {inputs: [a, b]}"
        ),
        ["E0504"]
    );
    assert_eq!(
        codes(
            "{a: [batch, 4], b: [batch, 3]}",
            "  - dot: {inputs: [a, b], axes: 1}"
        ),
        ["E0504"]
    );
    assert_eq!(
        codes(
            "{a: [batch, 4], b: [batch, 4]}",
            "  - dot: {inputs: [a, b], axes: 0}"
        ),
        ["E0508"]
    );
    assert_eq!(
        codes(
            "{a: [batch, 4], b: [batch, 4]}",
            "  - dot: {inputs: [a, b], axes: [1, 1, 1]}"
        ),
        ["E0508"]
    );
    assert_eq!(codes(x, "  - normalization: {mean: [1, 2]}"), ["E0603"]);
    assert_eq!(
        codes(x, "  - normalization: {mean: [1, 2], variance: [1, 1]}"),
        ["E0404"]
    );
    assert_eq!(
        codes(x, "  - normalization: {mean: [1, 2, 3, x], variance: 1}"),
        ["E0403"]
    );
    assert_eq!(codes(x, "  - normalization: {axis: 0}"), ["E0508"]);
    assert_eq!(codes("{x: [batch, seq]}", "  - normalization"), ["E0507"]);
    assert_eq!(
        codes(
            "{x: [batch, 20, 8]}",
            "  - position_embedding: {sequence_length: 16}"
        ),
        ["E0404"]
    );
    assert_eq!(
        codes(
            "{x: [batch, 8]}",
            "  - position_embedding: {sequence_length: 16}"
        ),
        ["E0501"]
    );
    assert_eq!(
        codes(x, "  - dense: {units: 2, kernel_regularizer: l3}"),
        ["E0602"]
    );
    assert_eq!(
        codes(
            x,
            "  - dense: {units: 2, kernel_regularizer: {l2: {l1: 0.1}}}"
        ),
        ["E0401"]
    );
    assert_eq!(
        codes(x, "  - dense: {units: 2, bias_regularizer: {l2: {l2: -1}}}"),
        ["E0404"]
    );
}

/// Random values for a forward function's inputs (the random key fixed, so training
/// mode's noise is a constant of the function).
fn values(f: &Func, rng: &mut Rng) -> (Vec<ArrayD<f64>>, Vec<bool>) {
    let mut vals = Vec::new();
    let mut diff = Vec::new();
    for inp in &f.inputs {
        let shape = concrete(&inp.ty, 3, 4);
        if inp.name == "rng_key" {
            vals.push(ArrayD::from_elem(IxDyn(&[]), 12345.0));
            diff.push(false);
        } else if inp.name.ends_with("/variance") || inp.name.ends_with("/count") {
            vals.push(rng.array(&shape, 0.5, 1.5));
            diff.push(!inp.name.ends_with("/count"));
        } else {
            vals.push(rng.array(&shape, -0.9, 0.9));
            diff.push(true);
        }
    }
    (vals, diff)
}

/// Finite differences of every input in both modes, and the compiled forward against
/// the interpreter.
fn check_layer(inputs: &str, layers: &str) {
    let m = model(inputs, layers);
    let mut rng = Rng::new(layers.len() as u64 + 1);
    for mode in [Mode::Infer, Mode::Train] {
        let lw = lower::forward(&m.graph, mode, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
        let out = lw.f.outputs[0].1;
        let (vals, diff) = values(&lw.f, &mut rng);
        fd_check(
            &format!("{layers} ({mode:?})"),
            &lw.f,
            out,
            &vals,
            &diff,
            &mut rng,
        );
        let f32s: Vec<ArrayD<f32>> = vals.iter().map(|a| a.mapv(|v| v as f32)).collect();
        compare_jit(&format!("{layers} ({mode:?})"), &lw.f, &f32s);
    }
}

#[test]
fn gradients_and_compiled_forward() {
    for (inputs, layers) in [
        ("{x: [batch, 5]}", "  - identity"),
        ("{x: [batch, 5]}", "  - repeat_vector: {n: 3}"),
        ("{x: [batch, seq, 5]}", "  - spatial_dropout1d: {rate: 0.4}"),
        (
            "{x: [batch, 3, 4, 5]}",
            "  - spatial_dropout2d: {rate: 0.4}",
        ),
        ("{x: [batch, 6]}", "  - gaussian_noise: {stddev: 0.3}"),
        ("{x: [batch, 6]}", "  - gaussian_dropout: {rate: 0.3}"),
        (
            "{x: [batch, 6]}",
            "  - rescaling: {scale: 0.25, offset: -1}",
        ),
        ("{x: [batch, 6]}", "  - normalization"),
        (
            "{x: [batch, 3, 4]}",
            "  - normalization: {axis: [1, 2], invert: true}",
        ),
        (
            "{x: [batch, 3]}",
            "  - normalization: {mean: [0.5, -1, 2], variance: [1, 4, 0.25]}",
        ),
        (
            "{x: [batch, seq, 5]}",
            "  - position_embedding: {sequence_length: 6}",
        ),
        (
            "{x: [batch, 4, 5]}",
            "  - position_embedding: {sequence_length: 6}",
        ),
        (
            "{a: [batch, 5], b: [batch, 5]}",
            "  - maximum: {inputs: [a, b]}",
        ),
        (
            "{a: [batch, 5], b: [batch, 1]}",
            "  - minimum: {inputs: [a, b]}",
        ),
        (
            "{a: [batch, 5], b: [batch, 5], c: [batch, 5]}",
            "  - average: {inputs: [a, b, c]}",
        ),
        (
            "{a: [batch, 4], b: [batch, 4]}",
            "  - dot: {inputs: [a, b], axes: 1}",
        ),
        (
            "{a: [batch, 3, 4], b: [batch, 5, 4]}",
            "  - dot: {inputs: [a, b], axes: 2, normalize: true}",
        ),
        (
            "{a: [batch, 2, 3, 4], b: [batch, 4, 5]}",
            "  - dot: {inputs: [a, b], axes: [3, 1]}",
        ),
        (
            "{a: [batch, 4], b: [batch, 4, 2]}",
            "  - dot: {inputs: [a, b], axes: [1, 1]}",
        ),
    ] {
        check_layer(inputs, layers);
    }
}

/// Runs a forward function with the interpreter (f64).
fn eval(f: &Func, vals: &[ArrayD<f64>]) -> Vec<ArrayD<f64>> {
    interp::eval::<f64>(f, vals).unwrap()
}

fn arr(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
}

#[test]
fn forward_values_follow_keras_formulas() {
    // Dot with normalize: cosine similarity; a zero vector's norm is capped (1/ε), not NaN.
    let m = model(
        "{a: [batch, 2], b: [batch, 2]}",
        "  - dot: {inputs: [a, b], axes: -1, normalize: true}",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let out = eval(
        &f,
        &[
            arr(&[2, 2], &[3.0, 4.0, 0.0, 0.0]),
            arr(&[2, 2], &[4.0, 3.0, 1.0, 2.0]),
        ],
    );
    assert!((out[0][[0, 0]] - 24.0 / 25.0).abs() < 1e-12);
    assert_eq!(out[0][[1, 0]], 0.0);
    // Average divides the sum by the number of inputs.
    let m = model(
        "{a: [batch, 1], b: [batch, 1], c: [batch, 1]}",
        "  - average: {inputs: [a, b, c]}",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let out = eval(
        &f,
        &[
            arr(&[1, 1], &[1.0]),
            arr(&[1, 1], &[2.0]),
            arr(&[1, 1], &[6.0]),
        ],
    );
    assert_eq!(out[0][[0, 0]], 3.0);
    // Normalization: (x - mean) / max(sqrt(var), 1e-7); a zero variance gives 1e-7.
    let m = model(
        "{x: [batch, 3]}",
        "  - normalization: {mean: [1, 2, 3], variance: [4, 0, 0.25]}",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let out = eval(&f, &[arr(&[1, 3], &[5.0, 2.0, 4.0])]);
    assert_eq!(out[0].iter().copied().collect::<Vec<_>>(), [2.0, 0.0, 2.0]);
    let m = model(
        "{x: [batch, 2]}",
        "  - normalization: {mean: 1, variance: 4, invert: true}",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let out = eval(&f, &[arr(&[1, 2], &[0.5, -1.0])]);
    assert_eq!(out[0].iter().copied().collect::<Vec<_>>(), [2.0, -1.0]);
    // Position embedding: the first `seq` rows, the same for every example.
    let m = model(
        "{x: [batch, 2, 2]}",
        "  - position_embedding: {sequence_length: 3}",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let table = arr(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = eval(&f, &[ArrayD::zeros(IxDyn(&[2, 2, 2])), table]);
    assert_eq!(
        out[0].iter().copied().collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]
    );
    // Repeat vector.
    let m = model("{x: [batch, 2]}", "  - repeat_vector: {n: 2}");
    let f = lower::predict_func(&m.graph).unwrap();
    let out = eval(&f, &[arr(&[1, 2], &[7.0, 8.0])]);
    assert_eq!(
        out[0].iter().copied().collect::<Vec<_>>(),
        [7.0, 8.0, 7.0, 8.0]
    );
    // Random layers are the identity at inference.
    for l in [
        "gaussian_noise: {stddev: 0.5}",
        "gaussian_dropout: {rate: 0.5}",
        "spatial_dropout1d: {rate: 0.5}",
    ] {
        let m = model("{x: [batch, 2, 2]}", &format!("  - {l}"));
        let f = lower::predict_func(&m.graph).unwrap();
        let x = arr(&[1, 2, 2], &[1.0, -2.0, 3.0, 4.0]);
        assert_eq!(eval(&f, std::slice::from_ref(&x))[0], x, "{l}");
    }
}

/// The training-mode output of a one-layer model on `x`, interpreted in f32 as the
/// step runs it.
fn train_forward(input: &str, layer: &str, x: ArrayD<f32>, key: f32) -> ArrayD<f32> {
    let m = model(&format!("{{x: {input}}}"), &format!("  - {layer}"));
    let lw = lower::forward(&m.graph, Mode::Train, "t").unwrap();
    let out = interp::eval::<f32>(&lw.f, &[x, ArrayD::from_elem(IxDyn(&[]), key)]).unwrap();
    out.into_iter().next().unwrap()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
}

#[test]
fn gaussian_noise_is_normal_with_its_stddev() {
    let n = 200_000;
    let x = ArrayD::from_elem(IxDyn(&[n, 1]), 2.0f32);
    let y = train_forward("[batch, 1]", "gaussian_noise: {stddev: 0.5}", x, 3.0);
    let z: Vec<f64> = y.iter().map(|&v| (f64::from(v) - 2.0) / 0.5).collect();
    let (m, v) = mean_var(&z);
    // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032; 5 of them.
    assert!(m.abs() < 0.011, "mean {m}");
    assert!((v - 1.0).abs() < 0.016, "variance {v}");
    // The normal's tail masses: P(|z| > 1.96) = 0.05, P(|z| > 3) = 0.0027.
    let frac = |t: f64| z.iter().filter(|&&s| s.abs() > t).count() as f64 / n as f64;
    assert!((frac(1.96) - 0.05).abs() < 0.0025, "{}", frac(1.96));
    assert!((frac(3.0) - 0.0027).abs() < 0.0006, "{}", frac(3.0));
    // Kurtosis 3 (a uniform sum would be lighter-tailed).
    let k = z.iter().map(|s| s.powi(4)).sum::<f64>() / n as f64;
    assert!((k - 3.0).abs() < 0.1, "kurtosis {k}");
    assert!(z.iter().all(|s| s.is_finite()));
}

#[test]
fn gaussian_dropout_multiplies_by_one_plus_noise() {
    let n = 200_000;
    let x = ArrayD::from_elem(IxDyn(&[n, 1]), 3.0f32);
    let y = train_forward("[batch, 1]", "gaussian_dropout: {rate: 0.2}", x, 5.0);
    let r: Vec<f64> = y.iter().map(|&v| f64::from(v) / 3.0).collect();
    let (m, v) = mean_var(&r);
    // N(1, rate/(1-rate) = 0.25): standard errors 0.0011 and 0.0008.
    assert!((m - 1.0).abs() < 0.006, "mean {m}");
    assert!((v - 0.25).abs() < 0.005, "variance {v}");
}

#[test]
fn spatial_dropout_drops_whole_channels() {
    let (b, t, c) = (400, 6, 50);
    let x = ArrayD::from_elem(IxDyn(&[b, t, c]), 1.0f32);
    let y = train_forward("[batch, seq, 50]", "spatial_dropout1d: {rate: 0.3}", x, 9.0);
    let mut dropped = 0usize;
    for i in 0..b {
        for k in 0..c {
            let first = y[[i, 0, k]];
            // A channel is dropped at every step or kept (scaled by 1/(1-rate)) at every step.
            assert!((0..t).all(|s| y[[i, s, k]] == first));
            if first == 0.0 {
                dropped += 1;
            } else {
                assert!((first - 1.0 / 0.7).abs() < 1e-6);
            }
        }
    }
    let frac = dropped as f64 / (b * c) as f64;
    // 20,000 draws: standard error 0.0032.
    assert!((frac - 0.3).abs() < 0.016, "dropped {frac}");
    let x = ArrayD::from_elem(IxDyn(&[100, 3, 3, 20]), 1.0f32);
    let y = train_forward(
        "[batch, 3, 3, 20]",
        "spatial_dropout2d: {rate: 0.5}",
        x,
        2.0,
    );
    for i in 0..100 {
        for k in 0..20 {
            let first = y[[i, 0, 0, k]];
            assert!((0..3).all(|h| (0..3).all(|w| y[[i, h, w, k]] == first)));
        }
    }
}

fn net(spec: &str) -> kiln::Net {
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap_or_else(|e| panic!("{spec}\n{e}"));
    m.compile(&kiln::Options::default()).unwrap()
}

fn data(n: &kiln::Net, arrays: Vec<(&str, ArrayD<f32>)>) -> kiln::Dataset {
    let arrays = arrays
        .into_iter()
        .map(|(k, a)| (k.to_string(), a))
        .collect();
    kiln::Dataset::from_arrays(n.graph(), arrays).unwrap()
}

/// Keras 3 (checked with `model.evaluate`): a dense of ones on inputs of ones with
/// `kernel_regularizer: L2(1.0)` and `activity_regularizer: L1(0.5)`, targets zero:
/// mse 9 + l2 3·1 + activity 0.5·Σ|3|·4 / batch 4 = 13.5, in evaluation and in the
/// training step's loss.
#[test]
fn regularizers_add_to_the_loss_as_in_keras() {
    let spec = "inputs:\n  x: [batch, 3]\nlayers:\n  - dense: {units: 1, kernel_initializer: ones, kernel_regularizer: {l2: {l2: 1.0}}, activity_regularizer: {l1: {l1: 0.5}}}\ntrain:\n  targets: {y: [batch, 1]}\n  loss: mse\n  optimizer: sgd\n";
    let mut n = net(spec);
    let d = data(
        &n,
        vec![
            ("x", ArrayD::from_elem(IxDyn(&[4, 3]), 1.0)),
            ("y", ArrayD::zeros(IxDyn(&[4, 1]))),
        ],
    );
    let logs = n.evaluate(&d, Some(4)).unwrap();
    assert!((logs.get("loss").unwrap() - 13.5).abs() < 1e-5, "{logs:?}");
    let x = ArrayD::from_elem(IxDyn(&[4, 3]), 1.0f32);
    let y = ArrayD::<f32>::zeros(IxDyn(&[4, 1]));
    let out = n
        .train_on_batch(&[("x", x.view())], &[("y", y.view())])
        .unwrap();
    assert!((out.loss - 13.5).abs() < 1e-5, "{}", out.loss);
    // The step's gradient has the penalty's: d/dk (mse) = 2·3·1 = 6 per weight, + 2·k
    // from l2, + 0.5 (sign of the output, divided by the batch, summed over it) from
    // the activity term: k = 1 - 0.01·(6 + 2 + 0.5).
    let k = n.weights().get("dense/kernel").unwrap();
    for &v in k.iter() {
        assert!((v - (1.0 - 0.01 * 8.5)).abs() < 1e-6, "{v}");
    }
    // Keras's `l1_l2` string builds L1L2() with both factors 0: no penalty at all.
    let plain = net(&spec.replace(
        "kernel_regularizer: {l2: {l2: 1.0}}, activity_regularizer: {l1: {l1: 0.5}}",
        "kernel_regularizer: l1_l2, bias_regularizer: l1l2",
    ));
    let logs = plain.evaluate(&d, Some(4)).unwrap();
    assert!((logs.get("loss").unwrap() - 9.0).abs() < 1e-5, "{logs:?}");
}

const ADAPT_SPEC: &str = "inputs:\n  x: [batch, 2, 3]\nlayers:\n  - normalization: {name: norm}\n  - flatten\n  - dense: {units: 1}\ntrain:\n  targets: {y: [batch, 1]}\n  loss: mse\n  optimizer: sgd\n  epochs: 1\n  batch_size: 4\n";

/// Examples whose features have known means and variances per position.
fn adapt_data(n: &kiln::Net) -> (kiln::Dataset, ArrayD<f32>) {
    let x = ArrayD::from_shape_fn(IxDyn(&[10, 2, 3]), |i| {
        (i[0] as f32 - 4.5) * (i[2] as f32 + 1.0) + i[1] as f32 * 10.0
    });
    let y = ArrayD::zeros(IxDyn(&[10, 1]));
    (data(n, vec![("x", x.clone()), ("y", y)]), x)
}

#[test]
fn fit_adapts_normalization_on_its_input() {
    let mut n = net(ADAPT_SPEC);
    let (d, x) = adapt_data(&n);
    n.fit(&d, &kiln::FitOptions::default()).unwrap();
    // axis -1: a mean and a (biased) variance per feature over the examples and steps.
    let mean = n.weights().get("norm/mean").unwrap().clone();
    let var = n.weights().get("norm/variance").unwrap().clone();
    assert_eq!(mean.shape(), [3]);
    for c in 0..3 {
        let v: Vec<f64> = x
            .index_axis(ndarray::Axis(2), c)
            .iter()
            .map(|&a| f64::from(a))
            .collect();
        let (m, s) = mean_var(&v);
        assert!(
            (f64::from(mean[[c]]) - m).abs() < 1e-5,
            "{c}: {} vs {m}",
            mean[[c]]
        );
        assert!(
            (f64::from(var[[c]]) - s).abs() < 1e-4 * s,
            "{c}: {} vs {s}",
            var[[c]]
        );
    }
    // Keras never counts: `count` stays 0.
    assert_eq!(
        n.weights()
            .get("norm/count")
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [0.0]
    );
    // Statistics that are no longer the initial ones are kept by a later fit.
    let mut w = n.weights().clone();
    w.insert("norm/mean", ArrayD::from_elem(IxDyn(&[3]), 7.0));
    n.set_weights(w).unwrap();
    n.fit(&d, &kiln::FitOptions::default()).unwrap();
    assert!(
        n.weights()
            .get("norm/mean")
            .unwrap()
            .iter()
            .all(|&m| m == 7.0)
    );
}

#[test]
fn fit_adapts_on_the_same_numbers_as_keras() {
    // The Keras fixture adapted `norm` (axis -1) and `vnorm` (axis null) on its inputs.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras");
    let bytes = std::fs::read(dir.join("simple_preprocess.npz")).unwrap();
    let arrays = kiln::data::npz::parse(&bytes, u64::MAX).unwrap();
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).unwrap().1.data.clone();
    let m = kiln::Model::from_path(dir.join("simple_preprocess.yaml")).unwrap();
    let mut n = m.compile(&kiln::Options::default()).unwrap();
    let d = data(
        &n,
        vec![("x", get("x.x")), ("v", get("x.v")), ("y", get("y.y"))],
    );
    let opts = kiln::FitOptions {
        epochs: Some(1),
        ..kiln::FitOptions::default()
    };
    n.fit(&d, &opts).unwrap();
    for key in ["norm/mean", "norm/variance", "vnorm/mean", "vnorm/variance"] {
        let (got, want) = (n.weights().get(key).unwrap(), get(&format!("w0.{key}")));
        assert_eq!(got.shape(), want.shape(), "{key}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(
                (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "{key}: kiln {g}, Keras {w}"
            );
        }
    }
}

/// A `normalization` whose input earlier layers compute (`rescaling` → `dense`, and one
/// on a concatenation that holds another adapted layer's output) adapts on that input
/// over the training data: the same statistics as Keras adapting on the preprocessed
/// array (the fixture `simple_adapt_computed`, from Keras's initial weights).
#[test]
fn normalization_deeper_in_the_model_adapts_on_its_computed_input() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras");
    let bytes = std::fs::read(dir.join("simple_adapt_computed.npz")).unwrap();
    let arrays = kiln::data::npz::parse(&bytes, u64::MAX).unwrap();
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).unwrap().1.data.clone();
    let m = kiln::Model::from_path(dir.join("simple_adapt_computed.yaml")).unwrap();
    let mut n = m.compile(&kiln::Options::default()).unwrap();
    // Keras's initial weights for every layer but the adapting ones.
    let adapting = ["norm/", "vnorm/", "joint/"];
    let mut w = n.weights().clone();
    let keys: Vec<String> = w.keys().map(str::to_string).collect();
    for key in keys {
        if !adapting.iter().any(|p| key.starts_with(p)) {
            w.insert(&key, get(&format!("w0.{key}")));
        }
    }
    n.set_weights(w).unwrap();
    let d = data(
        &n,
        vec![("x", get("x.x")), ("v", get("x.v")), ("y", get("y.y"))],
    );
    let opts = kiln::FitOptions {
        epochs: Some(1),
        ..kiln::FitOptions::default()
    };
    n.fit(&d, &opts).unwrap();
    for layer in adapting {
        for stat in ["mean", "variance"] {
            let key = format!("{layer}{stat}");
            let (got, want) = (n.weights().get(&key).unwrap(), get(&format!("w0.{key}")));
            assert_eq!(got.shape(), want.shape(), "{key}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                    "{key}: kiln {g}, Keras {w}"
                );
            }
        }
    }
}

/// The loss with every kind of regularizer (weights and activity) differentiates as
/// finite differences say, and compiles to what the interpreter computes.
#[test]
fn regularized_loss_gradients() {
    let spec = "inputs:\n  x: [batch, 4, 3]\nlayers:\n  - conv1d: {filters: 2, kernel_size: 2, kernel_regularizer: l1, bias_regularizer: {l2: {l2: 0.3}}, activity_regularizer: {l1_l2: {l1: 0.02, l2: 0.05}}}\n  - layer_normalization: {gamma_regularizer: l2, beta_regularizer: {l1: {l1: 0.1}}}\n  - flatten\n  - dense: {units: 2, kernel_regularizer: {l1_l2: {l1: 0.01, l2: 0.02}}, activity_regularizer: l1}\ntrain:\n  targets: {y: [batch, 2]}\n  loss: mse\n  optimizer: sgd\n";
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap();
    let e = kiln::lower::eval::build(&m.graph).unwrap();
    let loss = e.func.outputs[0].1;
    let mut rng = Rng::new(11);
    let (vals, diff) = values(&e.func, &mut rng);
    fd_check("regularized loss", &e.func, loss, &vals, &diff, &mut rng);
    let f32s: Vec<ArrayD<f32>> = vals.iter().map(|a| a.mapv(|v| v as f32)).collect();
    compare_jit("regularized loss", &e.func, &f32s);
}
