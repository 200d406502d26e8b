//! Issue 11's routines that run in place on the plan's buffers across the thread team
//! instead of copying their operands into the reference implementation: embedding
//! gather, its scatter-add gradient (indices repeated, so rows collect several
//! updates) and max pooling's gradient (inputs with ties, broken as the reference
//! breaks them). The compiled forward pass and training step against the interpreter,
//! on random shapes and odd batches, small (one core) and large (split).

use crate::common::{Rng, compare_jit, concrete};
use kiln::ir::{Func, passes};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

/// Random inputs: token inputs (`tokens`) integers below `vocab`, float inputs small
/// integers (so that max pooling windows hold ties), the step's scalars.
fn inputs(f: &Func, rng: &mut Rng, batch: usize, seq: usize, vocab: f64) -> Vec<ArrayD<f32>> {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = concrete(&inp.ty, batch, seq);
            let a = match inp.name.as_str() {
                "rng_key" | "step" => ArrayD::from_elem(IxDyn(&[]), 3.0),
                "lr" => ArrayD::from_elem(IxDyn(&[]), 0.01),
                "tokens" => rng.array(&shape, 0.0, vocab).mapv(f64::floor),
                "x" => rng.array(&shape, -3.0, 3.0).mapv(f64::round),
                _ => rng.array(&shape, -0.9, 0.9),
            };
            a.mapv(|v| v as f32)
        })
        .collect()
}

/// The forward pass and a training step (MSE, SGD) of `layers` compiled against
/// interpreted at each (batch, seq).
fn check(inputs_decl: &str, layers: &str, sizes: &[(usize, usize)], vocab: f64) {
    let m = crate::common::model(inputs_decl, layers);
    let out = &m.graph.layers.last().unwrap().output;
    let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
    let src = format!(
        "inputs: {inputs_decl}\nlayers:\n{layers}\ntrain:\n  targets: {{t: [{}]}}\n  loss: mse\n  optimizer: sgd\n",
        shape.join(", ")
    );
    let mt = kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"));
    let step = lower::train::build(&mt.graph).unwrap();
    let mut rng = Rng::new(layers.len() as u64);
    for &(batch, seq) in sizes {
        let lw = lower::forward(&m.graph, Mode::Infer, "t").unwrap();
        let ins = inputs(&lw.f, &mut rng, batch, seq, vocab);
        compare_jit(
            &format!("{layers} b={batch}"),
            &passes::optimize(&lw.f),
            &ins,
        );
        let ins = inputs(&step.func, &mut rng, batch, seq, vocab);
        compare_jit(&format!("{layers} step b={batch}"), &step.func, &ins);
    }
}

#[test]
fn embedding_gather_and_scatter_add() {
    // Small tables: indices repeat many times; one core and several.
    for (vocab, dim) in [(5, 3), (7, 64), (300, 17)] {
        check(
            "{tokens: {shape: [batch, seq], dtype: i32}}",
            &format!("  - embedding: {{input_dim: {vocab}, output_dim: {dim}}}"),
            &[(1, 1), (3, 5), (67, 33)],
            vocab as f64,
        );
    }
    // Indices of rank 3, and the gradient reaching the table through a dense layer.
    check(
        "{tokens: {shape: [batch, 3, seq], dtype: i32}}",
        "  - embedding: {input_dim: 11, output_dim: 40}\n  - dense: {units: 3}",
        &[(2, 4), (41, 37)],
        11.0,
    );
}

#[test]
fn max_pool_gradient_with_ties() {
    for (inputs_decl, layer) in [
        (
            "{x: [batch, 9, 3]}",
            "  - max_pooling1d: {pool_size: 3, strides: 2}",
        ),
        (
            "{x: [batch, 7, 6, 5]}",
            "  - max_pooling2d: {pool_size: [2, 3], strides: 1, padding: same}",
        ),
        ("{x: [batch, 6, 5, 4]}", "  - max_pooling2d"),
        (
            "{x: [batch, 4, 5, 3, 2]}",
            "  - max_pooling3d: {pool_size: 2, strides: [1, 2, 1], padding: same}",
        ),
    ] {
        check(inputs_decl, layer, &[(1, 4), (5, 6), (33, 9)], 0.0);
    }
}
