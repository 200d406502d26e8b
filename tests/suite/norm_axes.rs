//! Issue 15, layer_normalization as Keras builds it: `axis` values sorted as written
//! (negative ones first), the weights' shape in that order and reshaped onto the
//! input's axes, and the deprecated `rms_scaling` Keras 3 still takes. Weights and
//! parameter counts against Keras's (what Keras 3.15 builds), gradients against finite
//! differences, the JIT against the interpreter; values and one training step against
//! Keras are the `norm_axes` golden case.

use crate::common;

use common::{Rng, compare_jit, concrete, fd_check};
use kiln::ir::passes;
use kiln::lower::{self, Mode};
use ndarray::ArrayD;

fn model(input: &str, layer: &str) -> kiln::Model {
    let src = format!("inputs: {{x: {input}}}\nlayers:\n  - {layer}\n");
    kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

/// (input, layer, Keras's parameter count, Keras's weights).
const KERAS_CASES: &[(&str, &str, i64, &str)] = &[
    (
        "[batch, 3, 4]",
        "layer_normalization: {axis: [-1, -2]}",
        24,
        "gamma [3, 4], beta [3, 4]",
    ),
    (
        "[batch, 3, 4]",
        "layer_normalization: {axis: [1, -1]}",
        24,
        "gamma [4, 3], beta [4, 3]",
    ),
    (
        "[batch, 3, 4, 5]",
        "layer_normalization: {axis: [3, 1]}",
        30,
        "gamma [3, 5], beta [3, 5]",
    ),
    (
        "[batch, 3, 4, 5]",
        "layer_normalization: {axis: [-1, 1, 2]}",
        120,
        "gamma [5, 3, 4], beta [5, 3, 4]",
    ),
    (
        "[batch, 3, 4]",
        "layer_normalization: {rms_scaling: true}",
        4,
        "gamma [4]",
    ),
    (
        "[batch, 3, 4]",
        "layer_normalization: {axis: [-2, -1], rms_scaling: true, center: true, scale: false}",
        12,
        "gamma [3, 4]",
    ),
];

#[test]
fn weights_and_counts_match_keras() {
    for &(input, layer, count, keys) in KERAS_CASES {
        let m = model(input, layer);
        let l = m.graph.layers.last().unwrap();
        let got: i64 = l.params.iter().map(|p| p.count()).sum();
        let names: Vec<String> = l
            .params
            .iter()
            .map(|p| format!("{} {:?}", p.name, p.shape))
            .collect();
        assert_eq!(
            (got, names.join(", ")),
            (count, keys.to_string()),
            "{layer}"
        );
        assert_eq!(l.output, m.graph.inputs[0].ty, "{layer}");
    }
}

/// Every case, with weights drawn at random (not Keras's ones and zeros, so a
/// misplaced weight shows): gradients against finite differences and the compiled
/// forward pass against the interpreted one.
#[test]
fn gradients_and_compiled_match() {
    let mut rng = Rng::new(4);
    for &(input, layer, _, _) in KERAS_CASES {
        let m = model(input, layer);
        let lw = lower::forward(&m.graph, Mode::Train, "t").unwrap();
        let out = lw.f.outputs[0].1;
        let vals: Vec<ArrayD<f64>> =
            lw.f.inputs
                .iter()
                .map(|i| rng.array(&concrete(&i.ty, 2, 1), -0.9, 0.9))
                .collect();
        let diff = vec![true; vals.len()];
        fd_check(layer, &lw.f, out, &vals, &diff, &mut rng);
        let f32s: Vec<ArrayD<f32>> =
            lw.f.inputs
                .iter()
                .map(|i| {
                    rng.array(&concrete(&i.ty, 19, 1), -0.9, 0.9)
                        .mapv(|v| v as f32)
                })
                .collect();
        compare_jit(layer, &passes::optimize(&lw.f), &f32s);
    }
}
