//! Issue 11, attention as one kernel: the JIT plans scaled dot-product attention
//! (scores, softmax, weighted values; causal masks included) as one fused kernel
//! (`jit::plan::attention`, `jit::attention`). Shown here: the plan has the kernel where
//! the graph has the pattern and not where it does not (dropout on the probabilities);
//! forward values and every gradient of the compiled code agree with the interpreter
//! over random shapes — sequence lengths from 1 up past the kernel's register blocks,
//! odd batch sizes, key and value lengths unlike the query's, causal masks — and one
//! compiled kernel serves every sequence length (the lengths are symbolic). The
//! backward pass is the autodiff of the same graph (no new gradient rule), which the
//! plan runs as a second fused kernel reading the row maxima and sums the forward
//! stores (tests/suite/attention_bwd.rs).

use crate::common;

use common::{Rng, compare_jit, concrete};
use kiln::ir::{Func, Id, ReduceOp, autodiff, passes};
use kiln::jit::plan::{self, Kernel, Stage};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

/// (inputs, layer): one `multi_head_attention` over symbolic lengths.
const CASES: &[(&str, &str)] = &[
    (
        "{x: [batch, seq, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 4, inputs: [x, x]}",
    ),
    (
        "{x: [batch, seq, 6]}",
        "multi_head_attention: {num_heads: 3, key_dim: 5, value_dim: 7, use_causal_mask: true, inputs: [x, x]}",
    ),
    (
        "{q: [batch, seq, 5], v: [batch, 3, 4]}",
        "multi_head_attention: {num_heads: 1, key_dim: 17, inputs: [q, v]}",
    ),
    (
        "{q: [batch, 2, 5], v: [batch, seq, 4], k: [batch, seq, 3]}",
        "multi_head_attention: {num_heads: 2, key_dim: 16, value_dim: 16, use_causal_mask: true, inputs: [q, v, k]}",
    ),
];

fn spec(inputs: &str, layer: &str) -> kiln::Model {
    common::model(inputs, &format!("  - {layer}"))
}

fn attention_kernels(f: &Func) -> Vec<plan::AttnKernel> {
    plan::plan(&passes::optimize(f))
        .kernels
        .into_iter()
        .filter_map(|k| match k {
            Kernel::Attention(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// Random f32 values for `f`'s inputs at a batch size and sequence length.
pub(crate) fn inputs(f: &Func, rng: &mut Rng, batch: usize, seq: usize) -> Vec<ArrayD<f32>> {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = concrete(&inp.ty, batch, seq);
            match inp.name.as_str() {
                "rng_key" | "step" => ArrayD::from_elem(IxDyn(&[]), 3.0),
                "lr" => ArrayD::from_elem(IxDyn(&[]), 0.01),
                _ => rng.array(&shape, -1.5, 1.5).mapv(|v| v as f32),
            }
        })
        .collect()
}

/// The forward function with the gradients of `sum(out · w)` with respect to every
/// input as further outputs (`w` a random input of the output's shape).
pub(crate) fn with_gradients(f: &Func) -> Func {
    let mut f = f.clone();
    let out = f.outputs[0].1;
    f.outputs.clear();
    let ty = f.ty(out).clone();
    let wrt: Vec<Id> = (0..f.inputs.len())
        .map(|i| {
            f.nodes
                .iter()
                .position(|n| n.op == kiln::ir::Op::Input(i))
                .expect("input node")
        })
        .collect();
    let w = f.input("__w", ty.clone());
    let prod = f.mul(out, w).unwrap();
    let loss = f
        .reduce(ReduceOp::Sum, prod, (0..ty.rank()).collect())
        .unwrap();
    let grads = autodiff::grad(&mut f, loss, &wrt).unwrap();
    f.output("out", out);
    for (k, g) in grads.into_iter().enumerate() {
        f.output(&format!("g{k}"), g);
    }
    f
}

#[test]
fn the_pattern_becomes_one_kernel() {
    for &(inputs, layer) in CASES {
        let m = spec(inputs, layer);
        let causal = layer.contains("use_causal_mask: true");
        let f = lower::predict_func(&m.graph).unwrap();
        let k = attention_kernels(&f);
        assert_eq!(k.len(), 1, "{layer}: one fused kernel in inference");
        assert_eq!(k[0].causal.is_some(), causal, "{layer}");
        // Inference reads nothing but the output: no score matrix is stored.
        assert!(k[0].stores.is_empty(), "{layer}: {:?}", k[0].stores);
        // With gradients the backward chain is a second fused kernel, which reads only
        // the row maxima and sums the forward kernel stores.
        let g = with_gradients(&f);
        let k = attention_kernels(&g);
        assert_eq!(k.len(), 2, "{layer}: forward and backward kernels");
        assert!(k[0].grad.is_none() && k[1].grad.is_some(), "{layer}");
        let stages: Vec<Stage> = k[0].stores.iter().map(|s| s.0).collect();
        assert_eq!(stages, [Stage::Max, Stage::Sum], "{layer}");
    }
    // Dropout on the probabilities in training is not the pattern: planned node by node.
    let m = spec(
        "{x: [batch, seq, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 4, dropout: 0.3, inputs: [x, x]}",
    );
    let train = lower::forward(&m.graph, Mode::Train, "t").unwrap();
    assert!(attention_kernels(&train.f).is_empty());
    let infer = lower::predict_func(&m.graph).unwrap();
    assert_eq!(attention_kernels(&infer).len(), 1);
}

/// Values and every gradient, compiled against interpreted, over lengths from 1 past
/// two register blocks (16 columns, 4 rows) and odd batch sizes.
#[test]
fn compiled_matches_interpreted() {
    let mut rng = Rng::new(11);
    for &(inputs_text, layer) in CASES {
        let m = spec(inputs_text, layer);
        let f = lower::predict_func(&m.graph).unwrap();
        let g = with_gradients(&f);
        for (batch, seq) in [(1, 1), (3, 2), (1, 5), (5, 17), (2, 33), (7, 4)] {
            let ins = inputs(&g, &mut rng, batch, seq);
            compare_jit(
                &format!("{layer} b={batch} seq={seq}"),
                &passes::optimize(&g),
                &ins,
            );
        }
    }
}

/// A whole training step of the bundled encoder block (embedding, attention, layer
/// norm, dense, Adam) and of its causal and dropout forms, compiled against
/// interpreted.
#[test]
fn encoder_training_step_matches() {
    let base = include_str!("../../specs/attention.yaml");
    let causal = base.replace("key_dim: 16,", "key_dim: 16, use_causal_mask: true,");
    let dropout = base.replace("key_dim: 16,", "key_dim: 16, dropout: 0.2,");
    assert!(causal != base && dropout != base);
    let mut rng = Rng::new(12);
    for (name, src) in [("plain", base), ("causal", &causal), ("dropout", &dropout)] {
        let m = kiln::Model::from_source(src, "a", "a.yaml").unwrap();
        let step = lower::train::build(&m.graph).unwrap();
        for (batch, seq) in [(1, 1), (3, 9), (2, 20)] {
            let ins: Vec<ArrayD<f32>> = step
                .func
                .inputs
                .iter()
                .map(|inp| {
                    let shape = concrete(&inp.ty, batch, seq);
                    match inp.name.as_str() {
                        "rng_key" | "step" => ArrayD::from_elem(IxDyn(&[]), 3.0),
                        "lr" => ArrayD::from_elem(IxDyn(&[]), 0.01),
                        "tokens" => ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                            (rng.uniform() * 5000.0).floor() as f32
                        }),
                        "label" => ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                            (rng.uniform() * 2.0).floor() as f32
                        }),
                        _ => rng.array(&shape, -0.5, 0.5).mapv(|v| v as f32),
                    }
                })
                .collect();
            compare_jit(
                &format!("{name} step b={batch} seq={seq}"),
                &step.func,
                &ins,
            );
        }
    }
}

/// One compiled kernel runs at every sequence length (sizes come from the symbol
/// table at run time), each run agreeing with the interpreter.
#[test]
fn one_kernel_serves_every_length() {
    use kiln::runtime::{self, Backend};
    let (inputs_text, layer) = CASES[1];
    let m = spec(inputs_text, layer);
    let g = passes::optimize(&with_gradients(&lower::predict_func(&m.graph).unwrap()));
    let jit = runtime::compile(&g, Backend::Jit).unwrap();
    let interp = runtime::compile(&g, Backend::Interp).unwrap();
    let mut rng = Rng::new(13);
    for seq in [1, 40, 3, 16, 64, 2] {
        let ins = inputs(&g, &mut rng, 3, seq);
        let views: Vec<_> = ins.iter().map(|a| a.view()).collect();
        let a = jit.run(&views).unwrap();
        let b = interp.run(&views).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.shape(), y.shape());
            for (p, q) in x.iter().zip(y.iter()) {
                assert!(
                    (p - q).abs() <= 2e-4 * q.abs().max(1.0),
                    "seq={seq}: jit {p} vs interp {q}"
                );
            }
        }
    }
}
