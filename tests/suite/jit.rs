//! The JIT against the interpreter: forward and backward functions of every layer,
//! whole training steps, at sizes not divisible by 4, size 1, batch 1 and large
//! batches. Tolerance: both run in f32; the JIT's transcendental functions are
//! polynomial approximations with relative error ≤ 4e-7 (src/jit/mathfn.rs) and its
//! GEMM sums in a different order, so results agree to a few f32 ulps per operation.
//! We allow |jit − interp| ≤ 2e-4 · max(1, |interp|), which a real bug (a wrong
//! index, a missed element, a wrong stride) exceeds by orders of magnitude.

use crate::common;

use common::{Rng, concrete};
use kiln::ir::{Func, passes};
use kiln::lower::{self, Mode};
use kiln::runtime::{self, Backend};
use ndarray::{ArrayD, IxDyn};

fn random_inputs(
    f: &Func,
    m: Option<&kiln::Model>,
    rng: &mut Rng,
    batch: usize,
    seq: usize,
) -> Vec<ArrayD<f32>> {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = concrete(&inp.ty, batch, seq);
            let a = if inp.name == "rng_key" || inp.name == "step" {
                ArrayD::from_elem(IxDyn(&[]), 3.0)
            } else if inp.name == "lr" {
                ArrayD::from_elem(IxDyn(&[]), 0.01)
            } else if inp.ty.dtype.is_int() {
                let n = m
                    .map(|m| {
                        m.graph
                            .layers
                            .iter()
                            .filter(|l| l.kind.name == "embedding")
                            .map(|l| l.args.int("input_dim"))
                            .chain(m.graph.layers.last().map(|l| {
                                *l.output
                                    .shape
                                    .last()
                                    .and_then(|d| d.as_const())
                                    .get_or_insert(2)
                            }))
                            .min()
                            .unwrap_or(2)
                    })
                    .unwrap_or(2) as usize;
                ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.int(0, n - 1) as f64)
            } else if inp.name.ends_with("moving_variance") || inp.name.ends_with("velocity") {
                rng.array(&shape, 0.5, 1.5)
            } else {
                rng.array(&shape, -0.9, 0.9)
            };
            a.mapv(|v| v as f32)
        })
        .collect()
}

fn compare(name: &str, f: &Func, inputs: &[ArrayD<f32>]) {
    common::compare_jit(name, f, inputs)
}

fn model(inputs: &str, layers: &str, train: &str) -> kiln::Model {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n{train}");
    kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

/// Forward (inference and training forms) and, through a loss on the output, the
/// backward pass and optimizer update: one whole training step.
fn layer(inputs: &str, layers: &str) {
    let m = model(inputs, layers, "");
    let mut rng = Rng::new(layers.len() as u64 + 1);
    for (batch, seq) in [(1, 1), (3, 5), (37, 6)] {
        for mode in [Mode::Infer, Mode::Train] {
            let lw = lower::forward(&m.graph, mode, "t").unwrap();
            let mut f = lw.f.clone();
            for (k, v) in &lw.updates {
                f.output(k, *v);
            }
            let ins = random_inputs(&f, Some(&m), &mut rng, batch, seq);
            compare(
                &format!("{layers} {mode:?} b={batch}"),
                &passes::optimize(&f),
                &ins,
            );
        }
        // A training step with an MSE loss against a random target of the output's
        // shape exercises every VJP the layer needs.
        let out = &m.graph.layers.last().unwrap().output;
        let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
        let src = format!(
            "inputs: {inputs}\nlayers:\n{layers}\ntrain:\n  targets: {{target: [{}]}}\n  loss: mse\n  optimizer: adam\n",
            shape.join(", ")
        );
        let mt =
            kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"));
        let step = lower::train::build(&mt.graph).unwrap();
        let ins = random_inputs(&step.func, Some(&mt), &mut rng, batch, seq);
        compare(&format!("{layers} train step b={batch}"), &step.func, &ins);
    }
}

#[test]
fn dense_and_activations() {
    layer("{x: [batch, 5]}", "  - dense: {units: 7, activation: relu}");
    for act in kiln::catalog::activations::NAMES {
        layer(
            "{x: [batch, 6]}",
            &format!("  - dense: {{units: 5, activation: {act}}}"),
        );
    }
    layer("{x: [batch, seq, 5]}", "  - dense: {units: 3}\n  - softmax");
    layer(
        "{x: [batch, 9]}",
        "  - dropout: {rate: 0.3}\n  - dense: {units: 2}",
    );
}

#[test]
fn conv_pool_norm() {
    layer(
        "{x: [batch, 6, 5, 2]}",
        "  - conv2d: {filters: 3, kernel_size: 3, padding: same, activation: relu}\n  - max_pooling2d",
    );
    layer(
        "{x: [batch, seq, 3]}",
        "  - conv1d: {filters: 2, kernel_size: 2, padding: causal}\n  - global_average_pooling1d",
    );
    layer(
        "{x: [batch, 4, 4, 3]}",
        "  - batch_normalization\n  - average_pooling2d: {pool_size: 2, padding: same}\n  - flatten\n  - dense: {units: 2}",
    );
    layer(
        "{x: [batch, seq, 6]}",
        "  - layer_normalization\n  - global_max_pooling1d",
    );
}

/// Convolutions with known spatial sizes run as generated loops (padding, patch
/// gathering, the input gradient's scatter) around one matrix product each; the
/// plan must not fall back to the conv routine for them. Two stacked convolutions
/// make the training step compute the first one's input gradient too.
#[test]
fn convolutions_run_as_loops_and_products() {
    let cases = [
        ("{x: [batch, 7, 6, 3]}", "kernel_size: 3, strides: 2"),
        (
            "{x: [batch, 7, 6, 3]}",
            "kernel_size: 3, dilation_rate: 2, padding: same",
        ),
        ("{x: [batch, 5, 5, 4]}", "kernel_size: 1"),
        (
            "{x: [batch, 6, 7, 2]}",
            "kernel_size: [3, 1], strides: [2, 1], padding: same",
        ),
        (
            "{x: [batch, 4, 4, 5]}",
            "kernel_size: 2, strides: 2, padding: same",
        ),
    ];
    for (inputs, args) in cases {
        let layers = format!(
            "  - conv2d: {{filters: 5, {args}, activation: relu}}\n  - conv2d: {{filters: 3, kernel_size: 2, padding: same}}"
        );
        layer(inputs, &layers);
        assert_no_conv_routine(inputs, &layers);
    }
    for (inputs, args) in [
        ("{x: [batch, 9, 3]}", "kernel_size: 3, strides: 2"),
        (
            "{x: [batch, 9, 3]}",
            "kernel_size: 3, dilation_rate: 2, padding: causal",
        ),
        ("{x: [batch, 8, 2]}", "kernel_size: 4, padding: same"),
    ] {
        let layers = format!(
            "  - conv1d: {{filters: 4, {args}}}\n  - conv1d: {{filters: 2, kernel_size: 3, padding: same}}"
        );
        layer(inputs, &layers);
        assert_no_conv_routine(inputs, &layers);
    }
}

/// Pooling with known spatial sizes runs as generated loops (the max pool's gradient
/// stays a routine: it must pick each window's first maximum).
#[test]
fn pooling_runs_as_loops() {
    for pool in ["max", "average"] {
        for (inputs, args) in [
            ("{x: [batch, 7, 6, 3]}", "{pool_size: 2}"),
            (
                "{x: [batch, 7, 6, 3]}",
                "{pool_size: 3, strides: 2, padding: same}",
            ),
            (
                "{x: [batch, 5, 5, 4]}",
                "{pool_size: [3, 2], strides: 1, padding: same}",
            ),
            ("{x: [batch, 6, 7, 2]}", "{pool_size: 2, strides: [1, 2]}"),
        ] {
            // A dense layer first so the training step needs the pool's gradient.
            let layers = format!(
                "  - dense: {{units: 3}}\n  - {pool}_pooling2d: {args}\n  - flatten\n  - dense: {{units: 2}}"
            );
            layer(inputs, &layers);
            let plan = train_step_plan(inputs, &layers);
            assert!(!plan.contains("call pool "), "{layers}:\n{plan}");
            if pool == "average" {
                assert!(!plan.contains("call poolgrad"), "{layers}:\n{plan}");
            }
        }
        for args in [
            "{pool_size: 3, strides: 2}",
            "{pool_size: 2, padding: same}",
        ] {
            let layers = format!(
                "  - dense: {{units: 2}}\n  - {pool}_pooling1d: {args}\n  - flatten\n  - dense: {{units: 2}}"
            );
            layer("{x: [batch, 9, 3]}", &layers);
            let plan = train_step_plan("{x: [batch, 9, 3]}", &layers);
            assert!(!plan.contains("call pool "), "{layers}:\n{plan}");
        }
    }
}

/// Max pooling's gradient goes to each window's first maximum: inputs full of ties
/// (values from {0, 1, 2}) tell the routine from one that picks another maximum.
#[test]
fn max_pool_gradient_picks_the_first_maximum() {
    use kiln::dim::Dim;
    use kiln::ir::{Op, Padding, PoolKind, Type, WindowAttrs};
    let mut rng = Rng::new(31);
    for (shape, window, strides, padding) in [
        (
            vec![3usize, 6, 5, 4],
            vec![2i64, 2],
            vec![2i64, 2],
            Padding::Valid,
        ),
        (vec![5, 7, 7, 3], vec![3, 3], vec![2, 2], Padding::Same),
        (vec![2, 9, 2], vec![3], vec![1], Padding::Same),
    ] {
        let attrs = WindowAttrs {
            window: window.clone(),
            strides,
            padding,
        };
        let dims: Vec<Dim> = shape.iter().map(|&d| Dim::konst(d as i64)).collect();
        let mut f = Func::new("g");
        let x = f.input("x", Type::f32(dims));
        let y = f
            .push(
                Op::Pool {
                    kind: PoolKind::Max,
                    attrs: attrs.clone(),
                },
                &[x],
            )
            .unwrap();
        let ys: Vec<usize> = f
            .ty(y)
            .shape
            .iter()
            .map(|d| d.as_const().unwrap() as usize)
            .collect();
        let dy = f.input("dy", Type::f32(f.ty(y).shape.clone()));
        let dx = f
            .push(
                Op::PoolGrad {
                    kind: PoolKind::Max,
                    attrs,
                },
                &[x, dy],
            )
            .unwrap();
        f.output("dx", dx);
        let xs = rng.array(&shape, 0.0, 3.0).mapv(|v| v.floor() as f32);
        let dys = rng.array(&ys, -1.0, 1.0).mapv(|v| v as f32);
        compare(&format!("max pool grad {shape:?}"), &f, &[xs, dys]);
    }
}

/// The kernel plan of a training step (MSE against the last layer's output).
fn train_step_plan(inputs: &str, layers: &str) -> String {
    let m = model(inputs, layers, "");
    let out = &m.graph.layers.last().unwrap().output;
    let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
    let src = format!(
        "inputs: {inputs}\nlayers:\n{layers}\ntrain:\n  targets: {{target: [{}]}}\n  loss: mse\n  optimizer: sgd\n",
        shape.join(", ")
    );
    let mt = kiln::Model::from_source(&src, "t", "t.yaml").unwrap();
    let step = lower::train::build(&mt.graph).unwrap();
    kiln::jit::plan::plan(&step.func).print()
}

fn assert_no_conv_routine(inputs: &str, layers: &str) {
    let plan = train_step_plan(inputs, layers);
    assert!(!plan.contains("call conv"), "{layers}:\n{plan}");
    assert!(plan.matches("gemm").count() >= 5, "{layers}:\n{plan}");
}

#[test]
fn merges_reshapes_recurrent_attention() {
    layer(
        "{a: [batch, 5], b: [batch, 5]}",
        "  - add: {inputs: [a, b]}\n  - multiply: {inputs: [add, b]}",
    );
    layer(
        "{a: [batch, 2, 3], b: [batch, 4, 3]}",
        "  - concatenate: {inputs: [a, b], axis: 1}\n  - permute: {dims: [2, 1]}\n  - reshape: {target_shape: [-1]}",
    );
    layer(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 11, output_dim: 4}\n  - lstm: {units: 3}",
    );
    layer(
        "{x: [batch, seq, 3]}",
        "  - gru: {units: 5, return_sequences: true}\n  - simple_rnn: {units: 2}",
    );
    layer(
        "{x: [batch, seq, 8]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 4, inputs: [x, x]}",
    );
}

#[test]
fn whole_models_train_steps_match() {
    for spec in ["mlp", "cnn", "residual", "two_inputs", "lstm", "attention"] {
        let m = kiln::Model::from_path(format!("{}/specs/{spec}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let step = lower::train::build(&m.graph).unwrap();
        let mut rng = Rng::new(spec.len() as u64);
        // Batch 300 makes loops and products large enough to split across cores.
        let batches: &[usize] = if ["mlp", "cnn", "residual"].contains(&spec) {
            &[1, 5, 300]
        } else {
            &[1, 5]
        };
        for &batch in batches {
            let ins = random_inputs(&step.func, Some(&m), &mut rng, batch, 7);
            compare(&format!("{spec} step b={batch}"), &step.func, &ins);
        }
    }
}

/// Several training steps in a row, each backend feeding its own updated parameters
/// and optimizer state into its next step: the compiled trajectory stays within the
/// tolerance of the interpreted one (differences do not grow into a divergence).
#[test]
fn compiled_training_follows_the_interpreter_over_several_steps() {
    kiln::jit::set_verifier(true);
    for spec in ["mlp", "cnn", "residual"] {
        let m = kiln::Model::from_path(format!("{}/specs/{spec}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let step = lower::train::build(&m.graph).unwrap();
        let f = &step.func;
        let jit = runtime::compile(f, Backend::Jit).unwrap();
        let interp = runtime::compile(f, Backend::Interp).unwrap();
        let mut rng = Rng::new(9 + spec.len() as u64);
        let start = random_inputs(f, Some(&m), &mut rng, 6, 7);
        // Inputs that take an output's value for the next step.
        let carried = lower::train::carried(f);
        assert!(carried.len() >= 4, "{spec}: {carried:?}");
        let step_input = f.inputs.iter().position(|i| i.name == "step");
        let (mut a, mut b) = (start.clone(), start);
        for s in 0..5 {
            if let Some(k) = step_input {
                a[k] = ArrayD::from_elem(IxDyn(&[]), s as f32);
                b[k] = a[k].clone();
            }
            let va: Vec<_> = a.iter().map(|x| x.view()).collect();
            let vb: Vec<_> = b.iter().map(|x| x.view()).collect();
            let oa = jit.run(&va).unwrap();
            let ob = interp.run(&vb).unwrap();
            for (k, (x, y)) in oa.iter().zip(&ob).enumerate() {
                for (p, q) in x.iter().zip(y.iter()) {
                    assert!(
                        (p - q).abs() <= 2e-4 * q.abs().max(1.0),
                        "{spec} step {s}: {}: jit {p} vs interp {q}",
                        f.outputs[k].0
                    );
                }
            }
            for &(i, o) in &carried {
                a[i] = oa[o].clone();
                b[i] = ob[o].clone();
            }
        }
    }
}

/// The inline transcendental functions against f64 references on dense grids, with the
/// error bounds documented in src/jit/mathfn.rs (vector lanes and the scalar tail both:
/// 4099 points is not a multiple of 8).
#[test]
fn math_functions_meet_their_error_bounds() {
    use kiln::dim::Dim;
    use kiln::ir::{Type, Unary};
    type Case = (Unary, f64, f64, fn(f64) -> f64, f64, bool);
    let cases: [Case; 6] = [
        // (op, lo, hi, reference, bound, relative?)
        (Unary::Exp, -87.0, 88.0, f64::exp, 4e-7, true),
        (Unary::Log, 1e-30, 1e30, f64::ln, 4e-7, false),
        (Unary::Tanh, -12.0, 12.0, f64::tanh, 6e-7, false),
        (
            Unary::Sigmoid,
            -30.0,
            30.0,
            |x| 1.0 / (1.0 + (-x).exp()),
            3e-7,
            false,
        ),
        (Unary::Erf, -6.0, 6.0, libm::erf, 5e-7, false),
        (Unary::Log1p, -0.9, 50.0, f64::ln_1p, 1e-6, true),
    ];
    let n = 4099usize;
    for (op, lo, hi, reference, bound, relative) in cases {
        let mut f = Func::new("m");
        let x = f.input("x", Type::f32(vec![Dim::konst(n as i64)]));
        let y = f.unary(op, x).unwrap();
        f.output("y", y);
        // Log over many decades: a geometric grid; others: uniform.
        let xs: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / (n - 1) as f64;
                if op == Unary::Log {
                    (lo.ln() + t * (hi.ln() - lo.ln())).exp() as f32
                } else {
                    (lo + t * (hi - lo)) as f32
                }
            })
            .collect();
        let input = ArrayD::from_shape_vec(IxDyn(&[n]), xs.clone()).unwrap();
        let k = runtime::compile(&f, Backend::Jit).unwrap();
        let out = k.run(&[input.view()]).unwrap().remove(0);
        let mut worst = 0.0f64;
        for (xi, yi) in xs.iter().zip(out.iter()) {
            let want = reference(*xi as f64);
            let err = (*yi as f64 - want).abs();
            // The bound plus the rounding of the f32 result itself (half an ulp).
            let scale = if relative {
                want.abs()
            } else {
                1.0f64.max(if op == Unary::Log { want.abs() } else { 1.0 })
            };
            let e = err / scale;
            worst = worst.max(e);
            assert!(
                e <= bound + 6e-8,
                "{op:?}({xi}) = {yi}, reference {want}: error {e:e} > {bound:e}"
            );
        }
        assert!(worst > 0.0, "{op:?}: suspiciously exact");
    }
    // Special values of log: 0 → -inf, negative → NaN, inf → inf.
    let mut f = Func::new("m");
    let x = f.input("x", Type::f32(vec![Dim::konst(3)]));
    let y = f.unary(Unary::Log, x).unwrap();
    f.output("y", y);
    let k = runtime::compile(&f, Backend::Jit).unwrap();
    let input = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.0f32, -1.0, f32::INFINITY]).unwrap();
    let out = k.run(&[input.view()]).unwrap().remove(0);
    assert_eq!(out[0], f32::NEG_INFINITY);
    assert!(out[1].is_nan());
    assert_eq!(out[2], f32::INFINITY);
}

/// Random graphs from a generator: chains of elementwise ops with broadcasts, scalar
/// constants, reductions (kept and dropped axes), transposes, slices and matrix
/// products, with several outputs — compiled against interpreted.
#[test]
fn random_graphs_match_the_interpreter() {
    use kiln::dim::Dim;
    use kiln::ir::{Binary, Cmp, Id, Op, ReduceOp, Type, Unary};
    for seed in 0..40u64 {
        let mut rng = Rng::new(1000 + seed);
        let mut f = Func::new("g");
        let rank = rng.int(1, 3);
        let shape: Vec<usize> = (0..rank).map(|_| rng.int(1, 9)).collect();
        let dims: Vec<Dim> = shape.iter().map(|&d| Dim::konst(d as i64)).collect();
        let mut vals: Vec<Id> = vec![
            f.input("x0", Type::f32(dims.clone())),
            f.input("x1", Type::f32(dims.clone())),
        ];
        let mut inputs = vec![
            rng.array(&shape, -2.0, 2.0).mapv(|v| v as f32),
            rng.array(&shape, -2.0, 2.0).mapv(|v| v as f32),
        ];
        let full: Vec<Id> = vals.clone();
        for _ in 0..rng.int(3, 12) {
            let x = vals[rng.int(0, vals.len() - 1)];
            let xs = f.ty(x).shape.clone();
            let choice = rng.int(0, 8);
            let v = match choice {
                0 => {
                    let ops = [
                        Unary::Exp,
                        Unary::Tanh,
                        Unary::Sigmoid,
                        Unary::Abs,
                        Unary::Neg,
                        Unary::Erf,
                        Unary::Floor,
                    ];
                    let op = ops[rng.int(0, ops.len() - 1)];
                    let c = f.clamp_for_test(x);
                    f.unary(op, c).unwrap()
                }
                1 => {
                    // log / sqrt on a positive value
                    let a = f.unary(Unary::Abs, x).unwrap();
                    let p = f.add_c(a, 0.5).unwrap();
                    let op = [Unary::Log, Unary::Sqrt, Unary::Rsqrt, Unary::Log1p][rng.int(0, 3)];
                    f.unary(op, p).unwrap()
                }
                2 => {
                    // binary with another full-shape value of the same shape, if any
                    let same: Vec<Id> = vals
                        .iter()
                        .copied()
                        .filter(|&v| f.ty(v).shape == xs)
                        .collect();
                    let y = same[rng.int(0, same.len() - 1)];
                    let op = [
                        Binary::Add,
                        Binary::Sub,
                        Binary::Mul,
                        Binary::Max,
                        Binary::Min,
                    ][rng.int(0, 4)];
                    f.push(Op::Binary(op), &[x, y]).unwrap()
                }
                3 if !xs.is_empty() => {
                    // reduce some axes, keep them, broadcast back, combine
                    let axes: Vec<usize> = (0..xs.len()).filter(|_| rng.uniform() < 0.5).collect();
                    let axes = if axes.is_empty() {
                        vec![xs.len() - 1]
                    } else {
                        axes
                    };
                    let op = if rng.uniform() < 0.5 {
                        ReduceOp::Sum
                    } else {
                        ReduceOp::Max
                    };
                    let r = f.reduce_keep(op, x, &axes).unwrap();
                    let all: Vec<usize> = (0..xs.len()).collect();
                    let b = f.broadcast(r, &xs, &all).unwrap();
                    f.sub(x, b).unwrap()
                }
                4 if !xs.is_empty() => {
                    let axes: Vec<usize> = (0..xs.len()).filter(|_| rng.uniform() < 0.5).collect();
                    let axes = if axes.is_empty() { vec![0] } else { axes };
                    f.reduce(ReduceOp::Sum, x, axes).unwrap()
                }
                5 if xs.len() >= 2 => {
                    let mut perm: Vec<usize> = (0..xs.len()).collect();
                    perm.swap(0, xs.len() - 1);
                    let t = f.transpose(x, perm).unwrap();
                    f.unary(Unary::Tanh, t).unwrap()
                }
                6 if !xs.is_empty() && xs[0].as_const().unwrap_or(1) > 1 => {
                    let n = xs[0].as_const().unwrap();
                    f.slice(x, 0, 1, n).unwrap()
                }
                7 if xs.len() == 2 => {
                    let k = xs[1].clone();
                    let n = rng.int(1, 7);
                    let w = f.input(
                        &format!("w{}", inputs.len()),
                        Type::f32(vec![k.clone(), Dim::konst(n as i64)]),
                    );
                    inputs.push(
                        rng.array(&[k.as_const().unwrap() as usize, n], -1.0, 1.0)
                            .mapv(|v| v as f32),
                    );
                    f.matmul(x, w, false, false).unwrap()
                }
                _ => {
                    let c = f.scalar(rng.range(-1.0, 1.0));
                    let m = f.cmp(Cmp::Gt, x, c).unwrap();
                    let y = f.mul_c(x, 0.5).unwrap();
                    f.select(m, x, y).unwrap()
                }
            };
            vals.push(v);
        }
        // Outputs: the last value and one random earlier one.
        let last = *vals.last().unwrap();
        f.output("out", last);
        let other = vals[rng.int(full.len(), vals.len() - 1)];
        f.output("other", other);
        let f = passes::optimize(&f);
        compare(&format!("random graph {seed}:\n{}", f.print()), &f, &inputs);
    }
}

trait ClampForTest {
    fn clamp_for_test(&mut self, x: kiln::ir::Id) -> kiln::ir::Id;
}

impl ClampForTest for Func {
    /// Keeps exp's argument in a range where f32 results stay finite.
    fn clamp_for_test(&mut self, x: kiln::ir::Id) -> kiln::ir::Id {
        let lo = self.scalar(-20.0);
        let hi = self.scalar(20.0);
        let a = self.max(x, lo).unwrap();
        self.min(a, hi).unwrap()
    }
}

/// In-place updates: the training step writes new parameters and optimizer state into
/// the donated inputs' memory; the values equal those of an ordinary run, exactly.
#[test]
fn donated_parameters_and_state_update_in_place() {
    for spec in ["mlp", "cnn", "lstm"] {
        let m = kiln::Model::from_path(format!("{}/specs/{spec}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let step = lower::train::build(&m.graph).unwrap();
        let f = &step.func;
        let donate = lower::train::carried(f);
        let k = runtime::compile_donating(f, Backend::Jit, &donate).unwrap();
        // Every trainable parameter and every optimizer slot is updated in place (batch
        // norm's moving statistics too).
        assert_eq!(
            donate.len(),
            step.layout.params.len() + step.layout.state.len()
        );
        assert_eq!(
            k.donated(),
            &donate[..],
            "{spec}: accepted {:?} of {:?}",
            k.donated(),
            donate
        );
        let mut rng = Rng::new(77);
        let ins = random_inputs(f, Some(&m), &mut rng, 5, 6);
        let views: Vec<_> = ins.iter().map(|a| a.view()).collect();
        let plain = k.run(&views).unwrap();
        // `run` must leave the caller's inputs untouched even though the code writes.
        let again = k.run(&views).unwrap();
        assert_eq!(plain, again, "{spec}: run changed its inputs");
        let mut state = ins.clone();
        let outs = k.run_inplace(&mut state).unwrap();
        for (o, v) in outs.iter().enumerate() {
            match (v, donate.iter().find(|p| p.1 == o)) {
                (None, Some(&(i, _))) => {
                    assert_eq!(state[i], plain[o], "{spec}: in-place {}", f.outputs[o].0)
                }
                (Some(v), _) => assert_eq!(*v, plain[o], "{spec}: output {}", f.outputs[o].0),
                (None, None) => panic!("{spec}: output {o} missing"),
            }
        }
    }
}
