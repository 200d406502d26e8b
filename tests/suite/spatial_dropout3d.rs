//! Issue 15's `spatial_dropout3d` (Keras's SpatialDropout3D: `rate`, `data_format`,
//! `seed`; whole channels of `[batch, d, h, w, channels]` dropped in training, kept
//! ones scaled by 1/(1-rate), the identity at inference) and `data_format` on
//! `spatial_dropout2d`/`3d`: shapes against Keras's, channels dropped whole in either
//! layout at Keras's rate, the JIT against the interpreter.

use crate::common::{compare_jit, model};
use kiln::dim::fmt_shape;
use kiln::ir::{interp, passes};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

/// The output of a one-layer model in training mode on `x` (random key `key`).
fn train_forward(input: &str, layer: &str, x: &ArrayD<f32>, key: f32) -> ArrayD<f32> {
    let m = model(&format!("{{x: {input}}}"), &format!("  - {layer}"));
    let lw = lower::forward(&m.graph, Mode::Train, "t").unwrap();
    let key = ArrayD::from_elem(IxDyn(&[]), key);
    let out = interp::eval::<f32>(&lw.f, &[x.clone(), key.clone()]).unwrap();
    // The compiled training forward draws the same.
    compare_jit(layer, &passes::optimize(&lw.f), &[x.clone(), key]);
    out.into_iter().next().unwrap()
}

#[test]
fn shapes_match_keras() {
    for (input, layer) in [
        ("[batch, 2, 3, 4, 5]", "spatial_dropout3d: {rate: 0.5}"),
        (
            "[batch, 2, 3, 4, 5]",
            "spatial_dropout3d: {rate: 0.5, data_format: channels_first, seed: 3}",
        ),
        (
            "[batch, 3, 4, 5]",
            "spatial_dropout2d: {rate: 0.5, data_format: channels_first}",
        ),
    ] {
        let m = model(&format!("{{x: {input}}}"), &format!("  - {layer}"));
        let l = &m.graph.layers[0];
        assert_eq!(fmt_shape(&l.output.shape), input, "{layer}");
        assert!(l.params.is_empty());
    }
    // Keras: "Input 0 of layer "spatial_dropout3d" is incompatible with the layer:
    // expected ndim=5, found ndim=4".
    let src = "inputs: {x: [batch, 3, 4, 5]}\nlayers:\n  - spatial_dropout3d: {rate: 0.5}\n";
    assert_eq!(crate::common::failing_codes(src), ["E0501"]);
}

/// Whether every channel of every example is dropped whole or kept whole (scaled by
/// 1/(1-rate)); the fraction dropped.
fn dropped_whole(y: &ArrayD<f32>, channel_axis: usize, rate: f32) -> f64 {
    let mut seen: std::collections::HashMap<(usize, usize), f32> = Default::default();
    for (idx, &v) in y.indexed_iter() {
        let first = *seen.entry((idx[0], idx[channel_axis])).or_insert(v);
        assert_eq!(v, first, "a channel split at {idx:?}");
    }
    let dropped = seen.values().filter(|&&v| v == 0.0).count();
    for &v in seen.values().filter(|&&v| v != 0.0) {
        assert!((v - 1.0 / (1.0 - rate)).abs() < 1e-6, "{v}");
    }
    dropped as f64 / seen.len() as f64
}

#[test]
fn whole_channels_drop_in_both_layouts() {
    let x = ArrayD::from_elem(IxDyn(&[200, 2, 3, 2, 25]), 1.0f32);
    let y = train_forward(
        "[batch, 2, 3, 2, 25]",
        "spatial_dropout3d: {rate: 0.3}",
        &x,
        5.0,
    );
    // 5,000 draws: standard error 0.0065; 5 of them.
    let frac = dropped_whole(&y, 4, 0.3);
    assert!((frac - 0.3).abs() < 0.033, "dropped {frac}");
    let x = ArrayD::from_elem(IxDyn(&[200, 25, 2, 3, 2]), 1.0f32);
    let y = train_forward(
        "[batch, 25, 2, 3, 2]",
        "spatial_dropout3d: {rate: 0.6, data_format: channels_first}",
        &x,
        6.0,
    );
    let frac = dropped_whole(&y, 1, 0.6);
    assert!((frac - 0.6).abs() < 0.035, "dropped {frac}");
    let x = ArrayD::from_elem(IxDyn(&[200, 25, 3, 2]), 1.0f32);
    let y = train_forward(
        "[batch, 25, 3, 2]",
        "spatial_dropout2d: {rate: 0.5, data_format: channels_first}",
        &x,
        7.0,
    );
    let frac = dropped_whole(&y, 1, 0.5);
    assert!((frac - 0.5).abs() < 0.036, "dropped {frac}");
    // At inference, the identity.
    let m = model(
        "{x: [batch, 2, 2, 2, 3]}",
        "  - spatial_dropout3d: {rate: 0.9}",
    );
    let lw = lower::forward(&m.graph, Mode::Infer, "t").unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 2, 2, 2, 3]), |i| i[4] as f32 + 0.5);
    let y = interp::eval::<f32>(&lw.f, std::slice::from_ref(&x)).unwrap();
    assert_eq!(y[0], x);
}
