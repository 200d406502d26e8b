//! Issue 15, multi_head_attention in full generality: inputs of any rank ≥ 3,
//! `attention_axes`, query, key and value of different feature sizes, `output_shape` as
//! an int or a list, `use_gate`. Shapes, weight keys and parameter counts against
//! Keras's (what Keras 3.15 builds for the same call), gradients against finite
//! differences, the JIT against the interpreter; values and one training step against
//! Keras are the `attention_axes` and `attention_gate` golden cases.

use crate::common;

use common::{Rng, failing_codes, fd_check, last_layer, model, stack_values as values};
use kiln::lower::{self, Mode};

/// The last layer's output shape, parameter count and `key shape` list.
fn built(inputs: &str, layer: &str) -> (String, i64, String) {
    last_layer(&model(inputs, &format!("  - {layer}")))
}

/// The diagnostic codes of a one-layer spec that must fail.
fn codes(inputs: &str, layer: &str) -> Vec<&'static str> {
    failing_codes(&format!("inputs: {inputs}\nlayers:\n  - {layer}\n"))
}

/// (inputs, layer, Keras's output shape without the batch, Keras's parameter count,
/// Keras's weights): the four cases first, then attention axes and the gate.
const KERAS_CASES: &[(&str, &str, &str, i64, &str)] = &[
    (
        "{q: [batch, 4, 2, 3, 8], v: [batch, 4, 2, 3, 7], k: [batch, 4, 2, 3, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, value_dim: 2, inputs: [q, v, k]}",
        "4, 2, 3, 8",
        144,
        "query/kernel [8, 2, 2], query/bias [2, 2], key/kernel [8, 2, 2], key/bias [2, 2], value/kernel [7, 2, 2], value/bias [2, 2], attention_output/kernel [2, 2, 8], attention_output/bias [8]",
    ),
    (
        "{q: [batch, 4, 2, 3, 8], v: [batch, 1, 1, 5, 8], k: [batch, 1, 1, 5, 2]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, value_dim: 2, inputs: [q, v, k]}",
        "4, 2, 3, 8",
        124,
        "query/kernel [8, 2, 2], query/bias [2, 2], key/kernel [2, 2, 2], key/bias [2, 2], value/kernel [8, 2, 2], value/bias [2, 2], attention_output/kernel [2, 2, 8], attention_output/bias [8]",
    ),
    (
        "{q: [batch, 4, 8], v: [batch, 2, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, output_shape: [3, 4], inputs: [q, v]}",
        "4, 3, 4",
        168,
        "query/kernel [8, 2, 2], query/bias [2, 2], key/kernel [8, 2, 2], key/bias [2, 2], value/kernel [8, 2, 2], value/bias [2, 2], attention_output/kernel [2, 2, 3, 4], attention_output/bias [3, 4]",
    ),
    (
        "{q: [batch, 4, 8], v: [batch, 2, 8], k: [batch, 2, 3]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, output_shape: [1, 5], inputs: [q, v, k]}",
        "4, 1, 5",
        113,
        "query/kernel [8, 2, 2], query/bias [2, 2], key/kernel [3, 2, 2], key/bias [2, 2], value/kernel [8, 2, 2], value/bias [2, 2], attention_output/kernel [2, 2, 1, 5], attention_output/bias [1, 5]",
    ),
    (
        "{q: [batch, 4, 8], v: [batch, 2, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, output_shape: 6, inputs: [q, v]}",
        "4, 6",
        138,
        "query/kernel [8, 2, 2], query/bias [2, 2], key/kernel [8, 2, 2], key/bias [2, 2], value/kernel [8, 2, 2], value/bias [2, 2], attention_output/kernel [2, 2, 6], attention_output/bias [6]",
    ),
    (
        "{q: [batch, 5, 3, 6], v: [batch, 5, 4, 6]}",
        "multi_head_attention: {num_heads: 3, key_dim: 2, attention_axes: [2], inputs: [q, v]}",
        "5, 3, 6",
        168,
        "query/kernel [6, 3, 2], query/bias [3, 2], key/kernel [6, 3, 2], key/bias [3, 2], value/kernel [6, 3, 2], value/bias [3, 2], attention_output/kernel [3, 2, 6], attention_output/bias [6]",
    ),
    (
        "{q: [batch, 5, 3, 6], v: [batch, 2, 3, 6]}",
        "multi_head_attention: {num_heads: 3, key_dim: 2, attention_axes: -3, inputs: [q, v]}",
        "5, 3, 6",
        168,
        "query/kernel [6, 3, 2], query/bias [3, 2], key/kernel [6, 3, 2], key/bias [3, 2], value/kernel [6, 3, 2], value/bias [3, 2], attention_output/kernel [3, 2, 6], attention_output/bias [6]",
    ),
    (
        "{q: [batch, 5, 3, 6], v: [batch, 2, 4, 6]}",
        "multi_head_attention: {num_heads: 2, key_dim: 3, value_dim: 4, attention_axes: [1, 2], inputs: [q, v]}",
        "5, 3, 6",
        194,
        "query/kernel [6, 2, 3], query/bias [2, 3], key/kernel [6, 2, 3], key/bias [2, 3], value/kernel [6, 2, 4], value/bias [2, 4], attention_output/kernel [2, 4, 6], attention_output/bias [6]",
    ),
    (
        "{q: [batch, 4, 8], v: [batch, 2, 6]}",
        "multi_head_attention: {num_heads: 2, key_dim: 3, value_dim: 5, use_gate: true, inputs: [q, v]}",
        "4, 8",
        344,
        "query/kernel [8, 2, 3], query/bias [2, 3], key/kernel [6, 2, 3], key/bias [2, 3], gate/kernel [8, 2, 5], gate/bias [2, 5], value/kernel [6, 2, 5], value/bias [2, 5], attention_output/kernel [2, 5, 8], attention_output/bias [8]",
    ),
    (
        "{q: [batch, 3, 2, 8], v: [batch, 3, 2, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 4, use_gate: true, use_bias: false, output_shape: [2, 2], inputs: [q, v]}",
        "3, 2, 2, 2",
        288,
        "query/kernel [8, 2, 4], key/kernel [8, 2, 4], gate/kernel [8, 2, 4], value/kernel [8, 2, 4], attention_output/kernel [2, 4, 2, 2]",
    ),
];

#[test]
fn shapes_weights_and_counts_match_keras() {
    for &(inputs, layer, shape, count, keys) in KERAS_CASES {
        let got = built(inputs, layer);
        let want = (format!("[batch, {shape}]"), count, keys.to_string());
        assert_eq!(got, want, "{inputs} {layer}");
    }
}

#[test]
fn refusals_are_diagnostics() {
    let qv = "{q: [batch, 4, 3, 8], v: [batch, 2, 3, 8]}";
    let mha = |args: &str| {
        format!("multi_head_attention: {{num_heads: 2, key_dim: 2, {args}inputs: [q, v]}}")
    };
    // Query and key must agree on an axis attention does not run over.
    assert_eq!(codes(qv, &mha("attention_axes: [2], ")), ["E0511"]);
    assert_eq!(codes(qv, &mha("attention_axes: [3], ")), ["E0508"]);
    assert_eq!(codes(qv, &mha("attention_axes: [0], ")), ["E0508"]);
    assert_eq!(codes(qv, &mha("attention_axes: [2, -2], ")), ["E0508"]);
    assert_eq!(codes(qv, &mha("output_shape: [2, 0], ")), ["E0404"]);
    // Keras's causal mask needs one attention axis (see attention_masks.rs).
    assert_eq!(codes(qv, &mha("use_causal_mask: true, ")), ["E0521"]);
    assert_eq!(codes(qv, &mha("attention_mask: q, ")), ["E0521"]);
    assert_eq!(
        codes("{q: [batch, 4, 3, 8], v: [batch, 4, 8]}", &mha("")),
        ["E0501"]
    );
    assert_eq!(codes("{q: [batch, 8], v: [batch, 8]}", &mha("")), ["E0501"]);
    assert_eq!(
        codes(
            "{q: [batch, 4, 8], v: [batch, 2, 8], k: [batch, 3, 8]}",
            "multi_head_attention: {num_heads: 2, key_dim: 2, inputs: [q, v, k]}"
        ),
        ["E0511"]
    );
}

/// Attention over several ranks, axes and options, each ending in the layer under test.
const STACKS: &[(&str, &str)] = &[
    (
        "{q: [batch, 3, 2, 4], v: [batch, 2, 3, 3]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 2, inputs: [q, v]}",
    ),
    (
        "{q: [batch, 3, 2, 4], v: [batch, 3, 4, 3]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 3, value_dim: 2, attention_axes: [2], inputs: [q, v]}",
    ),
    (
        "{q: [batch, 2, 2, 3, 4], v: [batch, 2, 1, 3, 5], k: [batch, 2, 1, 3, 2]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 2, attention_axes: [-3, 1], output_shape: [2, 3], inputs: [q, v, k]}",
    ),
    (
        "{q: [batch, seq, 4], v: [batch, 3, 5]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 3, value_dim: 2, use_gate: true, output_shape: [2, 2], inputs: [q, v]}",
    ),
    (
        "{q: [batch, 2, 3, 4]}",
        "  - multi_head_attention: {num_heads: 1, key_dim: 2, use_gate: true, use_bias: false, dropout: 0.3, inputs: [q]}",
    ),
];

#[test]
fn gradients_match_finite_differences() {
    for &(inputs, layers) in STACKS {
        let m = model(inputs, layers);
        let mut rng = Rng::new(layers.len() as u64);
        for mode in [Mode::Infer, Mode::Train] {
            let lw =
                lower::forward(&m.graph, mode, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
            let out = lw.f.outputs[0].1;
            let (vals, diff) = values(&lw.f, &mut rng, 2, 3);
            fd_check(
                &format!("{layers} ({mode:?})"),
                &lw.f,
                out,
                &vals,
                &diff,
                &mut rng,
            );
        }
    }
}

/// The forward pass and a whole training step (MSE, Adam) compiled against
/// interpreted, at batch 1 and a batch that splits across cores.
#[test]
fn compiled_matches_interpreted() {
    for &(inputs, layers) in STACKS {
        let m = model(inputs, layers);
        let out = &m.graph.layers.last().unwrap().output;
        let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
        common::compiled_matches_interpreted(inputs, layers, (&shape, ""), &[(1, 2), (19, 5)]);
    }
}
