//! Issue 15's last attention options: `return_attention_scores` (Keras's
//! `(output, scores)` as the parts `LAYER.output` and `LAYER.scores`), an explicit
//! `attention_mask` input joined with `use_causal_mask` and Keras's propagated masks as
//! `_compute_attention_mask` joins them, and `use_causal_mask` on inputs of rank above
//! 3 as Keras applies it (one attention axis). Shapes and refusals against what Keras
//! 3.15 does for the same call; gradients against finite differences; the JIT against
//! the interpreter. Values and one training step against Keras are the golden cases
//! `attention_scores`, `attention_scores_only`, `attention_scores_causal4d`,
//! `attention_mask` and `attention_mask_causal`.

use crate::common::{Rng, compare_jit, concrete, failing_codes, fd_check};
use kiln::ir::{Func, passes};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

fn model(src: &str) -> kiln::Model {
    kiln::Model::from_source(src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

fn spec(inputs: &str, layer: &str) -> String {
    format!("inputs: {inputs}\nlayers:\n  - {layer}\n")
}

/// The shapes of a layer's parts (empty for one output) and its output's.
fn shapes(inputs: &str, layer: &str) -> (String, Vec<String>) {
    let m = model(&spec(inputs, layer));
    let l = m.graph.layers.last().expect("a layer");
    let parts = l
        .parts
        .iter()
        .map(|p| format!("{} {}", p.name, kiln::dim::fmt_shape(&p.ty.shape)))
        .collect();
    (kiln::dim::fmt_shape(&l.output.shape), parts)
}

#[test]
fn scores_are_a_second_output_in_keras_layout() {
    // keras: MultiHeadAttention(2, 2)(q (3,4,8), v (3,6,8), return_attention_scores=True)
    // gives (3, 4, 8) and (3, 2, 4, 6).
    let (out, parts) = shapes(
        "{q: [batch, 4, 8], v: [batch, 6, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, return_attention_scores: true, inputs: [q, v], name: a}",
    );
    assert_eq!(out, "[batch, 4, 8]");
    assert_eq!(
        parts,
        ["a.output [batch, 4, 8]", "a.scores [batch, 2, 4, 6]"]
    );
    // attention_axes=(2,) on (3,5,3,6) and (3,5,4,6): (3, 5, 2, 3, 4).
    let (_, parts) = shapes(
        "{q: [batch, 5, 3, 6], v: [batch, 5, 4, 6]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, attention_axes: [2], return_attention_scores: true, inputs: [q, v], name: a}",
    );
    assert_eq!(parts[1], "a.scores [batch, 5, 2, 3, 4]");
    // attention_axes=(1, 2) on (3,5,3,6) and (3,2,4,6): (3, 2, 5, 3, 2, 4).
    let (_, parts) = shapes(
        "{q: [batch, 5, 3, 6], v: [batch, 2, 4, 6]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, attention_axes: [1, 2], return_attention_scores: true, inputs: [q, v], name: a}",
    );
    assert_eq!(parts[1], "a.scores [batch, 2, 5, 3, 2, 4]");
    // Without the flag, one output as before.
    let (_, parts) = shapes(
        "{q: [batch, 4, 8]}",
        "multi_head_attention: {num_heads: 2, key_dim: 2, inputs: [q]}",
    );
    assert!(parts.is_empty());
    // The bare name of a layer with several outputs is refused (E0709).
    let src = "inputs: {q: [batch, 4, 8]}\nlayers:\n  - multi_head_attention: {num_heads: 2, key_dim: 2, return_attention_scores: true, inputs: [q, q], name: a}\n  - dense: {units: 2, input: a}\n";
    assert_eq!(failing_codes(src), ["E0709"]);
}

/// Masks Keras accepts (each checked with Keras 3.15: the call succeeds) and the ones
/// it refuses, with the inputs they go with.
#[test]
fn attention_masks_as_keras_broadcasts_them() {
    let ok = [
        ("{q: [batch, 4, 8], v: [batch, 6, 8], m: [batch, 4, 6]}", ""),
        ("{q: [batch, 4, 8], v: [batch, 6, 8], m: [4, 6]}", ""),
        ("{q: [batch, 4, 8], v: [batch, 6, 8], m: [1, 4, 1]}", ""),
        (
            "{q: [batch, 4, 8], v: [batch, 6, 8], m: [batch, 2, 4, 6]}",
            "",
        ),
        (
            "{q: [batch, 4, 8], v: [batch, 6, 8], m: [batch, 1, 4, 6]}",
            "",
        ),
        (
            "{q: [batch, 4, 8], v: [batch, 6, 8], m: [batch, 4, 6]}",
            "use_causal_mask: true, ",
        ),
        (
            "{q: [batch, 5, 3, 6], v: [batch, 5, 4, 6], m: [batch, 5, 3, 4]}",
            "attention_axes: [2], ",
        ),
        (
            "{q: [batch, 5, 3, 6], v: [batch, 5, 4, 6], m: [batch, 3, 4]}",
            "attention_axes: [2], ",
        ),
        (
            "{q: [batch, 5, 3, 6], v: [batch, 2, 4, 6], m: [batch, 5, 3, 2, 4]}",
            "attention_axes: [1, 2], ",
        ),
        (
            "{q: [batch, 5, 3, 6], v: [batch, 2, 4, 6], m: {shape: [5, 3, 2, 4], dtype: i32}}",
            "",
        ),
    ];
    let layer = |args: &str| {
        format!(
            "multi_head_attention: {{num_heads: 2, key_dim: 2, {args}attention_mask: m, inputs: [q, v]}}"
        )
    };
    for (inputs, args) in ok {
        let m = model(&spec(inputs, &layer(args)));
        assert_eq!(m.graph.layers[0].inputs.len(), 3, "{inputs}");
    }
    let refused = [
        // Keras: "axis -3 is out of bounds for array of dimension 2".
        ("{q: [batch, 4, 8], v: [batch, 6, 8], m: [batch, 6]}", ""),
        // Keras: "The `mask` must be broadcastable to `inputs`".
        ("{q: [batch, 4, 8], v: [batch, 6, 8], m: [batch, 4, 5]}", ""),
        // Keras: "Incompatible shapes for broadcasting: (3, 5, 3, 2), (1, 5, 2)".
        (
            "{q: [batch, 5, 3, 6], v: [batch, 2, 3, 6], m: [batch, 5, 3, 2]}",
            "attention_axes: [1], use_causal_mask: true, ",
        ),
    ];
    for (inputs, args) in refused {
        assert_eq!(
            failing_codes(&spec(inputs, &layer(args))),
            ["E0521"],
            "{inputs} {args}"
        );
    }
    // A mask that names nothing is an unknown reference.
    assert_eq!(
        failing_codes(&spec(
            "{q: [batch, 4, 8]}",
            "multi_head_attention: {num_heads: 2, key_dim: 2, attention_mask: nope, inputs: [q, q]}"
        )),
        ["E0703"]
    );
    assert_eq!(
        failing_codes(&spec(
            "{q: [batch, 4, 8]}",
            "multi_head_attention: {num_heads: 2, key_dim: 2, attention_mask: [q], inputs: [q, q]}"
        )),
        ["E0403"]
    );
}

#[test]
fn causal_masks_above_rank_3_as_keras_applies_them() {
    let layer = |args: &str| {
        format!(
            "multi_head_attention: {{num_heads: 2, key_dim: 2, use_causal_mask: true, {args}inputs: [q, q]}}"
        )
    };
    // One attention axis: Keras's [1, T, S] mask (T, S the sizes of axis 1) fits the
    // scores when that is the attended axis, or when the sizes agree.
    model(&spec(
        "{q: [batch, 3, 4, 5]}",
        &layer("attention_axes: [1], "),
    ));
    model(&spec(
        "{q: [batch, 4, 4, 5]}",
        &layer("attention_axes: [2], "),
    ));
    // Keras fails on these: "(2, 3, 2, 4, 4)" and "(1, 1, 1, 3, 3)" do not broadcast,
    // and with two attention axes "axis -5 is out of bounds".
    assert_eq!(
        failing_codes(&spec(
            "{q: [batch, 3, 4, 5]}",
            &layer("attention_axes: [2], ")
        )),
        ["E0521"]
    );
    assert_eq!(
        failing_codes(&spec("{q: [batch, 3, 4, 5]}", &layer(""))),
        ["E0521"]
    );
}

/// Layers under test: each stack ends in attention with a mask or the scores.
const STACKS: &[(&str, &str)] = &[
    (
        "{q: [batch, seq, 4], v: [batch, 3, 5], m: [batch, seq, 3]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 2, attention_mask: m, inputs: [q, v]}",
    ),
    (
        "{q: [batch, seq, 4], m: [seq, seq]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 3, use_causal_mask: true, attention_mask: m, return_attention_scores: true, inputs: [q, q], name: a}\n  - add: {inputs: [a.output, q]}",
    ),
    (
        "{q: [batch, 3, 2, 4]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 2, attention_axes: [1], use_causal_mask: true, inputs: [q, q]}",
    ),
    (
        "{q: [batch, 3, 2, 4], m: [batch, 3, 2, 3, 2]}",
        "  - multi_head_attention: {num_heads: 1, key_dim: 2, attention_mask: m, return_attention_scores: true, inputs: [q, q], name: a}\n  - reshape: {target_shape: [36], input: a.scores}",
    ),
];

/// Random values: masks 0 or 1 (some rows all 0) and not differentiated, the rest
/// uniform in (-0.9, 0.9).
fn values(f: &Func, rng: &mut Rng, batch: usize, seq: usize) -> (Vec<ArrayD<f64>>, Vec<bool>) {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = concrete(&inp.ty, batch, seq);
            match inp.name.as_str() {
                "rng_key" | "step" => (ArrayD::from_elem(IxDyn(&[]), 3.0), false),
                "lr" => (ArrayD::from_elem(IxDyn(&[]), 0.01), false),
                "m" => {
                    let mut a = rng.array(&shape, -0.7, 1.0).mapv(|v| f64::from(v > 0.0));
                    // The first query attends to nothing.
                    let row = shape.last().copied().unwrap_or(1);
                    a.iter_mut().take(row).for_each(|v| *v = 0.0);
                    (a, false)
                }
                _ => (rng.array(&shape, -0.9, 0.9), true),
            }
        })
        .unzip()
}

#[test]
fn gradients_match_finite_differences() {
    for &(inputs, layers) in STACKS {
        let m = model(&format!("inputs: {inputs}\nlayers:\n{layers}\n"));
        let mut rng = Rng::new(layers.len() as u64);
        for mode in [Mode::Infer, Mode::Train] {
            let lw =
                lower::forward(&m.graph, mode, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
            for &(_, out) in &lw.f.outputs {
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
}

/// The forward pass and a whole training step (MSE on every output, Adam) compiled
/// against interpreted, at batch 1 and a batch that splits across cores.
#[test]
fn compiled_matches_interpreted() {
    for &(inputs, layers) in STACKS {
        let m = model(&format!("inputs: {inputs}\nlayers:\n{layers}\n"));
        let mut targets = Vec::new();
        for (i, o) in m.graph.outputs.iter().enumerate() {
            let shape: Vec<String> = m
                .graph
                .type_of(*o)
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect();
            targets.push(format!("t{i}: [{}]", shape.join(", ")));
        }
        let src = format!(
            "inputs: {inputs}\nlayers:\n{layers}\ntrain:\n  targets: {{{}}}\n  loss: mse\n  optimizer: adam\n",
            targets.join(", ")
        );
        let mt = model(&src);
        let step = lower::train::build(&mt.graph).unwrap();
        let mut rng = Rng::new(layers.len() as u64 + 1);
        for (batch, seq) in [(1, 2), (19, 5)] {
            let lw = lower::forward(&m.graph, Mode::Infer, "t").unwrap();
            let f32s = |f: &Func, rng: &mut Rng| -> Vec<ArrayD<f32>> {
                values(f, rng, batch, seq)
                    .0
                    .into_iter()
                    .map(|a| a.mapv(|v| v as f32))
                    .collect()
            };
            let ins = f32s(&lw.f, &mut rng);
            compare_jit(
                &format!("{layers} b={batch}"),
                &passes::optimize(&lw.f),
                &ins,
            );
            let ins = f32s(&step.func, &mut rng);
            compare_jit(&format!("{layers} train step b={batch}"), &step.func, &ins);
        }
    }
}
