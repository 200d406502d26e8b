//! Every layer and every loss through the whole lowering: gradients against finite
//! differences in f64 (inference and training forms), and forward values against
//! direct formulas where Keras's definition is simple to state.

use crate::common;

use common::{Rng, concrete, fd_check};
use kiln::ir::{Func, Type, interp};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

fn model(inputs: &str, layers: &str) -> kiln::Model {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n");
    kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

/// Random values for a lowered forward function's inputs: model inputs (integer ones
/// as valid indices), parameters (variances positive) and the random key.
fn values(
    f: &Func,
    m: &kiln::Model,
    rng: &mut Rng,
    batch: usize,
    seq: usize,
) -> (Vec<ArrayD<f64>>, Vec<bool>) {
    let mut vals = Vec::new();
    let mut diff = Vec::new();
    for inp in &f.inputs {
        let shape = concrete(&inp.ty, batch, seq);
        if inp.name == "rng_key" {
            vals.push(ArrayD::from_elem(IxDyn(&[]), 12345.0));
            diff.push(false);
        } else if inp.ty.dtype.is_int() {
            // Integer input: indices below the smallest embedding's input_dim.
            let n = m
                .graph
                .layers
                .iter()
                .filter(|l| l.kind.name == "embedding")
                .map(|l| l.args.int("input_dim"))
                .min()
                .unwrap_or(5) as usize;
            vals.push(ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                rng.int(0, n - 1) as f64
            }));
            diff.push(false);
        } else if inp.name.ends_with("variance") {
            vals.push(rng.array(&shape, 0.5, 1.5));
            diff.push(true);
        } else {
            vals.push(rng.array(&shape, -0.9, 0.9));
            diff.push(true);
        }
    }
    (vals, diff)
}

fn grad_check_layer(inputs: &str, layers: &str) {
    let m = model(inputs, layers);
    let mut rng = Rng::new(layers.len() as u64);
    for mode in [Mode::Infer, Mode::Train] {
        let lw = lower::forward(&m.graph, mode, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
        let out = lw.f.outputs[0].1;
        let (vals, diff) = values(&lw.f, &m, &mut rng, 3, 4);
        fd_check(
            &format!("{layers} ({mode:?})"),
            &lw.f,
            out,
            &vals,
            &diff,
            &mut rng,
        );
        // Batch-norm's moving statistics are outputs of training mode: check them too.
        for (key, upd) in &lw.updates {
            fd_check(
                &format!("{layers} update {key}"),
                &lw.f,
                *upd,
                &vals,
                &diff,
                &mut rng,
            );
        }
    }
}

#[test]
fn core_layers() {
    grad_check_layer("{x: [batch, 5]}", "  - dense: {units: 3, activation: tanh}");
    grad_check_layer("{x: [batch, seq, 5]}", "  - dense: {units: 2}");
    grad_check_layer(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 7, output_dim: 3}",
    );
    grad_check_layer("{x: [batch, 6]}", "  - dropout: {rate: 0.4}");
}

#[test]
fn activations() {
    for act in kiln::catalog::activations::NAMES {
        grad_check_layer(
            "{x: [batch, 4]}",
            &format!("  - dense: {{units: 3, activation: {act}}}"),
        );
    }
    for l in [
        "relu",
        "relu: {max_value: 0.5, negative_slope: 0.1, threshold: -0.2}",
        "leaky_relu",
        "elu: {alpha: 0.7}",
        "sigmoid",
        "tanh",
        "softmax",
        "gelu",
        "gelu: {approximate: true}",
        "silu",
    ] {
        grad_check_layer(
            "{x: [batch, 5]}",
            &format!("  - dense: {{units: 4}}\n  - {l}"),
        );
    }
}

#[test]
fn conv_and_pooling_layers() {
    grad_check_layer(
        "{x: [batch, 5, 5, 2]}",
        "  - conv2d: {filters: 3, kernel_size: 3, padding: same, activation: relu}",
    );
    grad_check_layer(
        "{x: [batch, 6, 5, 2]}",
        "  - conv2d: {filters: 2, kernel_size: [2, 3], strides: 2}",
    );
    grad_check_layer(
        "{x: [batch, seq, 3]}",
        "  - conv1d: {filters: 2, kernel_size: 2, padding: causal, dilation_rate: 2}",
    );
    for p in [
        "max_pooling2d",
        "average_pooling2d: {padding: same, pool_size: 3, strides: 2}",
    ] {
        grad_check_layer("{x: [batch, 5, 5, 2]}", &format!("  - {p}"));
    }
    for p in [
        "max_pooling1d",
        "average_pooling1d: {pool_size: 3, strides: 1}",
    ] {
        grad_check_layer("{x: [batch, 6, 2]}", &format!("  - {p}"));
    }
    for p in [
        "global_average_pooling2d",
        "global_max_pooling2d: {keepdims: true}",
    ] {
        grad_check_layer("{x: [batch, 3, 4, 2]}", &format!("  - {p}"));
    }
    for p in ["global_average_pooling1d", "global_max_pooling1d"] {
        grad_check_layer("{x: [batch, seq, 2]}", &format!("  - {p}"));
    }
}

#[test]
fn normalization_layers() {
    grad_check_layer("{x: [batch, 3, 4]}", "  - batch_normalization");
    grad_check_layer(
        "{x: [batch, 3, 4]}",
        "  - batch_normalization: {axis: 1, center: false}",
    );
    grad_check_layer("{x: [batch, seq, 4]}", "  - layer_normalization");
    grad_check_layer(
        "{x: [batch, 3, 4]}",
        "  - layer_normalization: {axis: [2, 1]}",
    );
}

#[test]
fn reshaping_and_merging_layers() {
    grad_check_layer(
        "{x: [batch, 2, 3]}",
        "  - flatten\n  - reshape: {target_shape: [3, -1]}\n  - permute: {dims: [2, 1]}",
    );
    for m in ["add", "subtract", "multiply"] {
        grad_check_layer(
            "{a: [batch, 3], b: [batch, 1]}",
            &format!("  - {m}: {{inputs: [a, b]}}"),
        );
    }
    grad_check_layer(
        "{a: [batch, 2, 3], b: [batch, 4, 3]}",
        "  - concatenate: {inputs: [a, b], axis: 1}",
    );
}

#[test]
fn recurrent_and_attention_layers() {
    grad_check_layer(
        "{x: [batch, seq, 3]}",
        "  - simple_rnn: {units: 2, return_sequences: true}",
    );
    grad_check_layer("{x: [batch, seq, 3]}", "  - lstm: {units: 2}");
    grad_check_layer(
        "{x: [batch, seq, 3]}",
        "  - gru: {units: 2, go_backwards: true, return_sequences: true}",
    );
    grad_check_layer(
        "{x: [batch, seq, 3]}",
        "  - gru: {units: 2, reset_after: false}",
    );
    grad_check_layer(
        "{x: [batch, seq, 4]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 3, inputs: [x, x], dropout: 0.3}",
    );
    grad_check_layer(
        "{q: [batch, 2, 4], v: [batch, seq, 5]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 2, value_dim: 3, output_shape: 3, inputs: [q, v]}",
    );
}

/// One forward value against a direct formula: dense + softmax, and batch norm's
/// inference and training forms.
#[test]
fn forward_values_match_keras_formulas() {
    let m = model(
        "{x: [batch, 2]}",
        "  - dense: {units: 2, activation: softmax}",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 2.0]).unwrap();
    let k = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    let b = ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.0, 0.0]).unwrap();
    let y = interp::eval::<f64>(&f, &[x, k, b]).unwrap();
    let e = (1.0f64.exp(), 2.0f64.exp());
    assert!((y[0][[0, 0]] - e.0 / (e.0 + e.1)).abs() < 1e-12);

    let m = model(
        "{x: [batch, 1]}",
        "  - batch_normalization: {momentum: 0.9, epsilon: 0.001}",
    );
    let lw = lower::forward(&m.graph, Mode::Train, "t").unwrap();
    let mut f = lw.f.clone();
    for (k, v) in &lw.updates {
        f.output(k, *v);
    }
    let x = ArrayD::from_shape_vec(IxDyn(&[4, 1]), vec![1.0, 2.0, 3.0, 6.0]).unwrap();
    let one = ArrayD::from_elem(IxDyn(&[1]), 1.0);
    let zero = ArrayD::from_elem(IxDyn(&[1]), 0.0);
    let key = ArrayD::from_elem(IxDyn(&[]), 0.0);
    let out = interp::eval::<f64>(&f, &[x, one.clone(), zero.clone(), zero, one, key]).unwrap();
    let (mean, var) = (3.0, (4.0 + 1.0 + 0.0 + 9.0) / 4.0); // biased variance
    assert!((out[0][[3, 0]] - (6.0 - mean) / (var + 0.001f64).sqrt()).abs() < 1e-12);
    assert!(
        (out[1][[0]] - (0.0 * 0.9 + mean * 0.1)).abs() < 1e-12,
        "moving mean"
    );
    assert!(
        (out[2][[0]] - (1.0 * 0.9 + var * 0.1)).abs() < 1e-12,
        "moving variance"
    );
}

/// Losses: value against Keras's formula on a small case, gradient against finite
/// differences.
#[test]
fn losses() {
    let cases: &[(&str, &str, &str)] = &[
        ("mse", "{y: [batch, 3]}", ""),
        ("mae", "{y: [batch, 3]}", ""),
        ("{huber: {delta: 0.3}}", "{y: [batch, 3]}", ""),
        ("binary_crossentropy", "{y: [batch, 3]}", "sigmoid"),
        (
            "{binary_crossentropy: {from_logits: true, label_smoothing: 0.1}}",
            "{y: [batch, 3]}",
            "",
        ),
        ("categorical_crossentropy", "{y: [batch, 3]}", "softmax"),
        (
            "{categorical_crossentropy: {from_logits: true, label_smoothing: 0.2}}",
            "{y: [batch, 3]}",
            "",
        ),
        (
            "{sparse_categorical_crossentropy: {from_logits: true}}",
            "{y: {shape: [batch], dtype: i32}}",
            "",
        ),
        (
            "sparse_categorical_crossentropy",
            "{y: {shape: [batch], dtype: i32}}",
            "softmax",
        ),
    ];
    for (loss, targets, act) in cases {
        let act = if act.is_empty() {
            String::new()
        } else {
            format!(", activation: {act}")
        };
        let src = format!(
            "inputs: {{x: [batch, 4]}}\nlayers:\n  - dense: {{units: 3{act}}}\ntrain:\n  targets: {targets}\n  loss: {loss}\n  optimizer: sgd\n"
        );
        let m = kiln::Model::from_source(&src, "t", "t").unwrap_or_else(|e| panic!("{e}"));
        let train = m.graph.train.as_ref().unwrap();
        let decl = &train.targets[0].loss;
        let mut f = Func::new("loss");
        let pred = f.input(
            "pred",
            Type::f32(vec![kiln::dim::Dim::sym("batch"), 3.into()]),
        );
        let tgt = f.input("target", train.targets[0].ty.clone());
        let l = decl.kind.lower(&mut f, &decl.args, pred, tgt).unwrap();
        let mut rng = Rng::new(loss.len() as u64);
        let p = if act.contains("softmax") || act.contains("sigmoid") {
            rng.array(&[4, 3], 0.05, 0.9)
        } else {
            rng.array(&[4, 3], -2.0, 2.0)
        };
        let t = if targets.contains("i32") {
            ArrayD::from_shape_vec(IxDyn(&[4]), vec![0.0, 2.0, 1.0, 2.0]).unwrap()
        } else if loss.contains("crossentropy") {
            rng.array(&[4, 3], 0.0, 1.0)
                .mapv(|v| if v > 0.5 { 1.0 } else { 0.0 })
        } else {
            rng.array(&[4, 3], -1.0, 1.0)
        };
        // The value against a direct formula.
        f.output("loss", l);
        let got = interp::eval::<f64>(&f, &[p.clone(), t.clone()]).unwrap()[0][[]];
        let want = reference_loss(decl.kind.name, &decl.args, &p, &t);
        assert!(
            (got - want).abs() < 1e-12 * want.abs().max(1.0),
            "{loss}: {got} vs {want}"
        );
        fd_check(loss, &f, l, &[p, t], &[true, false], &mut rng);
    }
}

fn reference_loss(name: &str, a: &kiln::args::Args, p: &ArrayD<f64>, t: &ArrayD<f64>) -> f64 {
    let (b, c) = (p.shape()[0], p.shape()[1]);
    let eps = 1e-7;
    let mut total = 0.0;
    for i in 0..b {
        let row: Vec<f64> = (0..c).map(|j| p[[i, j]]).collect();
        let tr: Vec<f64> = if name == "sparse_categorical_crossentropy" {
            (0..c)
                .map(|j| if t[[i]] as usize == j { 1.0 } else { 0.0 })
                .collect()
        } else {
            (0..c).map(|j| t[[i, j]]).collect()
        };
        let s = a.float("label_smoothing");
        let logits = a.bool("from_logits");
        total += match name {
            "mean_squared_error" => {
                (0..c).map(|j| (row[j] - tr[j]).powi(2)).sum::<f64>() / c as f64
            }
            "mean_absolute_error" => (0..c).map(|j| (row[j] - tr[j]).abs()).sum::<f64>() / c as f64,
            "huber" => {
                let d = a.float("delta");
                (0..c)
                    .map(|j| {
                        let e = (row[j] - tr[j]).abs();
                        if e <= d {
                            0.5 * e * e
                        } else {
                            d * e - 0.5 * d * d
                        }
                    })
                    .sum::<f64>()
                    / c as f64
            }
            "binary_crossentropy" => {
                (0..c)
                    .map(|j| {
                        let t = tr[j] * (1.0 - s) + 0.5 * s;
                        let p = if logits {
                            1.0 / (1.0 + (-row[j]).exp())
                        } else {
                            row[j].clamp(eps, 1.0 - eps)
                        };
                        -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
                    })
                    .sum::<f64>()
                    / c as f64
            }
            _ => {
                let probs: Vec<f64> = if logits {
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
                    row.iter().map(|v| (v - m).exp() / z).collect()
                } else {
                    let z: f64 = row.iter().sum();
                    row.iter().map(|v| (v / z).clamp(eps, 1.0 - eps)).collect()
                };
                let s = if name == "categorical_crossentropy" {
                    s
                } else {
                    0.0
                };
                -(0..c)
                    .map(|j| (tr[j] * (1.0 - s) + s / c as f64) * probs[j].ln())
                    .sum::<f64>()
            }
        };
    }
    total / b as f64
}

/// Candidate values for a required argument, from its kind alone.
fn candidates(kind: &kiln::args::ArgKind) -> Vec<String> {
    use kiln::args::ArgKind;
    match kind {
        // A small count, or a size that covers every test input's axes.
        ArgKind::Int { min, .. } => vec![(*min).max(2).to_string(), 16.to_string()],
        ArgKind::IntTuple { min, .. } => vec![(*min).max(2).to_string()],
        // A permutation of the non-batch axes, or a target shape of every element.
        ArgKind::IntList { .. } => vec!["[2, 1]".into(), "[12]".into(), "[-1]".into()],
        ArgKind::Float { min, max, .. } => vec![((min.max(0.0) + max.min(1.0)) / 2.0).to_string()],
        // A value from a catalog (an activation name): the kind's own example.
        ArgKind::Catalog(c) => vec![c.example.to_string()],
        ArgKind::Axes => vec!["-1".into()],
        _ => Vec::new(),
    }
}

/// The registry walked entry by entry: every layer kind, with only its required
/// arguments (each from its kind) and an input chosen from its typed facts, checks,
/// lowers in both modes, and its gradients match finite differences. A new layer is
/// covered without touching this test.
#[test]
fn every_registered_layer_checks_lowers_and_differentiates() {
    use kiln::args::Default;
    use kiln::layers::{Arity, REGISTRY};
    for kind in REGISTRY {
        let facts = &kind.facts;
        let input = if facts.looks_up.is_some() {
            "{x: {shape: [batch, 5], dtype: i32}}"
        } else if facts.spatial == Some(2) {
            "{x: [batch, 6, 6, 2]}"
        } else if facts.spatial == Some(3) {
            "{x: [batch, 4, 5, 4, 2]}"
        } else if facts.spatial == Some(1) || facts.cell.is_some() {
            "{x: [batch, 5, 3]}"
        } else {
            "{x: [batch, 4, 3]}"
        };
        let required: Vec<(&str, Vec<String>)> = kind
            .args
            .iter()
            .filter(|a| matches!(a.default, Default::Required))
            .map(|a| (a.name, candidates(&a.kind)))
            .collect();
        let wiring = match kind.arity {
            Arity::Range(min, _) if min > 1 => {
                format!(", inputs: [{}]", vec!["x"; min].join(", "))
            }
            _ => String::new(),
        };
        // Every combination of candidate values, until one checks.
        let mut choice = vec![0usize; required.len()];
        let (input, layer) = loop {
            let args: Vec<String> = required
                .iter()
                .zip(&choice)
                .filter_map(|((n, c), &i)| c.get(i).map(|v| format!("{n}: {v}")))
                .collect();
            let mut all = args.join(", ");
            all.push_str(&wiring);
            let layer = format!("  - {}: {{{}}}", kind.name, all.trim_start_matches(", "));
            // The input from the facts, else a flat one (layers on [batch, features]).
            let checks = |input: &str| {
                let src = format!("inputs: {input}\nlayers:\n{layer}\n");
                kiln::Model::from_source(&src, "t", "t.yaml").is_ok()
            };
            if let Some(input) = [input, "{x: [batch, 4]}"].into_iter().find(|i| checks(i)) {
                break (input, layer);
            }
            let Some(k) = (0..choice.len()).find(|&k| choice[k] + 1 < required[k].1.len()) else {
                panic!(
                    "no arguments for `{}` check on {input}: {required:?}",
                    kind.name
                );
            };
            choice[k] += 1;
            for c in choice.iter_mut().take(k) {
                *c = 0;
            }
        };
        grad_check_layer(input, &layer);
    }
}
