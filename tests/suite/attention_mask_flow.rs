//! Keras masks around `multi_head_attention`, as Keras 3.15 moves them: the output
//! keeps the query's mask; the scores (`return_attention_scores`) carry the mask
//! Keras's Softmax applied (`_masked_softmax`'s expanded mask, 1 where it does not
//! vary), or none without any; the inputs' masks join `attention_mask` and the causal
//! mask for inputs of any rank, and a combination Keras refuses is a diagnostic
//! (E0521), never a lowering error; a layer or loss that cannot use the scores' mask
//! refuses it (E0522). Each expectation below was checked with Keras 3.15 (jax); the
//! values are in the golden cases `attention_keras_mask4d` and
//! `attention_scores_masked`.

use crate::common::{Rng, compare_jit, concrete, f32_inputs};
use kiln::check::Source;
use kiln::ir::passes;
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

fn model(src: &str) -> kiln::Model {
    kiln::Model::from_source(src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

/// The error codes of a spec that must fail to check (warnings about inputs a case
/// does not use left out).
fn failing_codes(src: &str) -> Vec<&'static str> {
    let mut codes = crate::common::failing_codes(src);
    codes.retain(|c| c.starts_with('E'));
    codes
}

fn shown(m: Option<&[kiln::dim::Dim]>) -> String {
    m.map_or("none".into(), kiln::dim::fmt_shape)
}

/// The mask shapes of the attention layer `mha`'s output and scores.
fn masks(inputs: &str, layers: &str) -> (String, String) {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n");
    let m = model(&src);
    let i = m
        .graph
        .layers
        .iter()
        .position(|l| l.name == "mha")
        .expect("a layer named mha");
    (
        shown(m.graph.mask_of(Source::Part(i, 0))),
        shown(m.graph.mask_of(Source::Part(i, 1))),
    )
}

const TOKENS: &str = "{t: {shape: [batch, 4], dtype: i32}, m: [batch, 4, 4]}";
const EMBED: &str =
    "  - embedding: {input_dim: 9, output_dim: 6, mask_zero: true, name: e, input: t}\n";
const PLAIN: &str = "  - embedding: {input_dim: 9, output_dim: 6, name: e, input: t}\n";

fn mha(args: &str) -> String {
    format!(
        "  - multi_head_attention: {{num_heads: 2, key_dim: 3, return_attention_scores: true, {args}inputs: [e, e], name: mha}}\n"
    )
}

#[test]
fn scores_carry_the_mask_keras_softmax_applied() {
    // keras: Embedding(mask_zero) -> MHA(e, e, return_attention_scores=True): the output
    // has the query's (2, 4) mask, the scores a (2, 1, 4, 4) one.
    assert_eq!(
        masks(TOKENS, &format!("{EMBED}{}", mha(""))),
        ("[batch, 4]".into(), "[batch, 1, 4, 4]".into())
    );
    // use_causal_mask alone: (1, 1, 4, 4) on the scores, none on the output.
    assert_eq!(
        masks(
            TOKENS,
            &format!("{PLAIN}{}", mha("use_causal_mask: true, "))
        ),
        ("none".into(), "[1, 1, 4, 4]".into())
    );
    // An attention_mask alone: (2, 1, 4, 4).
    assert_eq!(
        masks(TOKENS, &format!("{PLAIN}{}", mha("attention_mask: m, "))),
        ("none".into(), "[batch, 1, 4, 4]".into())
    );
    // No mask at all: none on either.
    assert_eq!(
        masks(TOKENS, &format!("{PLAIN}{}", mha(""))),
        ("none".into(), "none".into())
    );
    // Rank 4 with attention_axes=(1,) and the causal mask: (1, 1, 1, 4, 4).
    assert_eq!(
        masks(
            "{x: [batch, 4, 3, 6]}",
            "  - multi_head_attention: {num_heads: 2, key_dim: 3, attention_axes: [1], use_causal_mask: true, return_attention_scores: true, inputs: [x, x], name: mha}\n"
        ),
        ("none".into(), "[1, 1, 1, 4, 4]".into())
    );
    // A masked value alone still masks the scores; the output has none (the query's).
    assert_eq!(
        masks(
            "{t: {shape: [batch, 4], dtype: i32}, q: [batch, 3, 6]}",
            &format!(
                "{EMBED}  - multi_head_attention: {{num_heads: 2, key_dim: 3, return_attention_scores: true, inputs: [q, e], name: mha}}\n"
            )
        ),
        ("none".into(), "[batch, 1, 1, 4]".into())
    );
}

#[test]
fn scores_mask_values_equal_keras() {
    // keras: tokens [[1,2,3,0],[4,5,0,0]], use_causal_mask=True and an attention_mask
    // of ones but column 0 of example 1: the scores' mask, (2, 1, 4, 4), is
    // [[1,0,0,0],[1,1,0,0],[1,1,1,0],[0,0,0,0]] and [[0,0,0,0],[0,1,0,0],[0,0,0,0],[0,0,0,0]].
    let src = format!(
        "inputs: {TOKENS}\nlayers:\n{EMBED}{}",
        mha("use_causal_mask: true, attention_mask: m, ")
    );
    let m = model(&src);
    let mut lw = lower::forward(&m.graph, Mode::Infer, "p").expect("lowers");
    let mask = lw
        .mask(Source::Part(1, 1))
        .expect("the scores carry a mask");
    assert!(lw.mask(Source::Part(1, 0)).is_some());
    lw.cx.f.outputs.clear();
    lw.cx.f.output("mask", mask);
    let f = passes::optimize(&lw.cx.f);
    let mut am = ArrayD::<f32>::ones(IxDyn(&[2, 4, 4]));
    for r in 0..4 {
        am[[1, r, 0]] = 0.0;
    }
    let tokens = ArrayD::from_shape_vec(
        IxDyn(&[2, 4]),
        vec![1.0f32, 2.0, 3.0, 0.0, 4.0, 5.0, 0.0, 0.0],
    )
    .expect("shape");
    let inputs: Vec<ArrayD<f32>> = f
        .inputs
        .iter()
        .map(|i| match i.name.as_str() {
            "t" => tokens.clone(),
            "m" => am.clone(),
            _ => ArrayD::zeros(IxDyn(&concrete(&i.ty, 2, 4))),
        })
        .collect();
    let out = kiln::ir::interp::eval(&f, &inputs).expect("evaluates");
    let want: Vec<f32> = [
        [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    .iter()
    .flatten()
    .map(|&v| v as f32)
    .collect();
    assert_eq!(out[0].shape(), [2, 1, 4, 4]);
    assert_eq!(out[0].iter().copied().collect::<Vec<_>>(), want);
}

#[test]
fn what_keras_does_downstream_of_masked_scores() {
    let scores = |tail: &str| format!("inputs: {TOKENS}\nlayers:\n{EMBED}{}{tail}", mha(""));
    // Accepted by Keras: layers that pass the mask on, a merge of equal masks, and a
    // layer that drops it before a loss.
    model(&scores("  - dense: {units: 3, input: mha.scores}\n"));
    model(&scores("  - add: {inputs: [mha.scores, mha.scores]}\n"));
    model(&scores(
        "  - reshape: {target_shape: [32], input: mha.scores, name: s}\noutputs: [s]\ntrain:\n  targets: {y: [batch, 32]}\n  loss: mse\n  optimizer: adam\n",
    ));
    // keras: BatchNormalization "The mask provided should be one dimension less than the
    // inputs"; the loss "Incompatible shapes for broadcasting: (2, 2, 4), (2, 1, 4, 4)".
    assert_eq!(
        failing_codes(&scores("  - batch_normalization: {input: mha.scores}\n")),
        ["E0522"]
    );
    assert_eq!(
        failing_codes(&scores(
            "outputs: [mha.scores]\ntrain:\n  targets: {y: [batch, 2, 4, 4]}\n  loss: mse\n  optimizer: adam\n"
        )),
        ["E0522"]
    );
    // Through a dense layer the mask still reaches the loss.
    assert_eq!(
        failing_codes(&scores(
            "  - dense: {units: 3, input: mha.scores, name: d}\noutputs: [d]\ntrain:\n  targets: {y: [batch, 2, 4, 3]}\n  loss: mae\n  optimizer: adam\n"
        )),
        ["E0522"]
    );
    // A merge of a (batch, 1, 4, 4) and a (1, 1, 4, 4) mask, and concatenate on the
    // heads axis (keras gives a (2, 2, 4) mask for a (2, 4, 4, 4) output: no entry of
    // it is described, so kiln refuses).
    let two = format!(
        "inputs: {TOKENS}\nlayers:\n{EMBED}{}  - multi_head_attention: {{num_heads: 2, key_dim: 3, use_causal_mask: true, return_attention_scores: true, inputs: [m, m], name: c}}\n",
        mha("")
    );
    assert_eq!(
        failing_codes(&format!(
            "{two}  - add: {{inputs: [mha.scores, c.scores]}}\n"
        )),
        ["E0522"]
    );
    assert_eq!(
        failing_codes(&scores(
            "  - concatenate: {axis: 1, inputs: [mha.scores, mha.scores]}\n"
        )),
        ["E0522"]
    );
}

/// Keras masks on inputs above rank 3, each checked with Keras 3.15 at batch 7.
#[test]
fn keras_masks_above_rank_3_as_keras_joins_them() {
    let rank4 = |axes: &str, extra: &str| {
        format!(
            "inputs: {{t: {{shape: [batch, 3, 5], dtype: i32}}, m: [batch, 3, 5, 5], w: [batch, 5, 5]}}\nlayers:\n  - embedding: {{input_dim: 9, output_dim: 6, mask_zero: true, name: e, input: t}}\n  - multi_head_attention: {{num_heads: 2, key_dim: 3, {axes}{extra}inputs: [e, e]}}\n"
        )
    };
    // attention_axes=(2,): masks [7, 3, 5, 1] and [7, 3, 1, 5] fit scores [7, 3, 2, 5, 5],
    // with or without an attention_mask of (7, 3, 5, 5).
    model(&rank4("attention_axes: [2], ", ""));
    model(&rank4("attention_axes: [2], ", "attention_mask: m, "));
    // keras refuses: the default axes (1, 2) and attention_axes=(1,) (Softmax: "each
    // mask dimension must be 1 or match"), a (7, 5, 5) attention_mask (7 against the 3
    // of the joined (7, 3, 5, 5)), and the causal (1, 3, 3) against it.
    for (axes, extra) in [
        ("", ""),
        ("attention_axes: [1], ", ""),
        ("attention_axes: [2], ", "attention_mask: w, "),
        ("attention_axes: [2], ", "use_causal_mask: true, "),
    ] {
        assert_eq!(
            failing_codes(&rank4(axes, extra)),
            ["E0521"],
            "{axes}{extra}"
        );
    }
}

#[test]
fn masked_attention_above_rank_3_compiles_as_interpreted() {
    // keras accepts this one: the causal (1, 4, 4) broadcasts with the (7, 4, 4, 4) join.
    let src = "inputs: {t: {shape: [batch, 4, 4], dtype: i32}, m: [batch, 4, 4, 4]}\nlayers:\n  - embedding: {input_dim: 3, output_dim: 6, mask_zero: true, name: e, input: t}\n  - multi_head_attention: {num_heads: 2, key_dim: 3, attention_axes: [2], use_causal_mask: true, attention_mask: m, return_attention_scores: true, inputs: [e, e], name: mha}\noutputs: [mha.output, mha.scores]\n";
    let m = model(src);
    let f = passes::optimize(&lower::predict_func(&m.graph).expect("lowers"));
    let mut rng = Rng::new(5);
    for batch in [1, 3] {
        let mut inputs = f32_inputs(&f, &mut rng, batch, 5);
        // Token ids 0..3 (0 masked), mask entries 0 or 1.
        for (inp, a) in f.inputs.iter().zip(inputs.iter_mut()) {
            match inp.name.as_str() {
                "t" => a.mapv_inplace(|v| ((v + 0.9) * 1.6).floor()),
                "m" => a.mapv_inplace(|v| if v > -0.5 { 1.0 } else { 0.0 }),
                _ => {}
            }
        }
        compare_jit(
            &format!("masked rank-4 attention, batch {batch}"),
            &f,
            &inputs,
        );
    }
}

/// The mask of the layer named `name`, as the checker gives it.
fn mask_of(src: &str, name: &str) -> String {
    let m = model(src);
    let i = m
        .graph
        .layers
        .iter()
        .position(|l| l.name == name)
        .unwrap_or_else(|| panic!("a layer named {name}"));
    shown(m.graph.mask_of(Source::Layer(i)))
}

#[test]
fn attention_output_keeps_the_query_mask_whatever_output_shape_makes_it() {
    // keras: Masking -> MHA(q [2, 4, 8], v [2, 2, 8], output_shape=(3, 4)): the output
    // (2, 4, 3, 4) keeps the query's (2, 4) mask (MHA has Keras's default compute_mask).
    let spec = |scores: &str| {
        format!(
            "inputs: {{q: [batch, 4, 8], v: [batch, 2, 8]}}\nlayers:\n  - masking: {{input: q, name: mq}}\n  - masking: {{input: v, name: mv}}\n  - multi_head_attention: {{num_heads: 2, key_dim: 2, output_shape: [3, 4], {scores}inputs: [mq, mv], name: mha}}\n"
        )
    };
    assert_eq!(mask_of(&spec(""), "mha"), "[batch, 4]");
    let with_scores = spec("return_attention_scores: true, ");
    let m = model(&with_scores);
    assert_eq!(shown(m.graph.mask_of(Source::Part(2, 0))), "[batch, 4]");
    // The lowered mask is the query's, value for value.
    let mut lw = lower::forward(&m.graph, Mode::Infer, "p").expect("lowers");
    let kept = lw
        .mask(Source::Part(2, 0))
        .expect("the output keeps a mask");
    let query = lw.mask(Source::Layer(0)).expect("masking makes one");
    lw.cx.f.outputs.clear();
    lw.cx.f.output("kept", kept);
    lw.cx.f.output("query", query);
    let f = passes::optimize(&lw.cx.f);
    let mut rng = Rng::new(3);
    let mut inputs = f32_inputs(&f, &mut rng, 2, 4);
    for a in inputs.iter_mut() {
        // Zero the last steps of example 0 (masked by `masking`).
        let steps = a.shape()[1];
        for s in steps / 2..steps {
            a.index_axis_mut(ndarray::Axis(0), 0)
                .index_axis_mut(ndarray::Axis(0), s)
                .fill(0.0);
        }
    }
    let out = kiln::ir::interp::eval(&f, &inputs).expect("evaluates");
    assert_eq!(out[0].shape(), [2, 4]);
    assert_eq!(out[0], out[1]);
    assert_eq!(
        out[0].iter().copied().collect::<Vec<_>>(),
        [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    );
}

#[test]
fn reshape_keeps_the_mask_only_when_the_shape_is_unchanged() {
    // keras (jax): Masking -> Reshape((4, 3)) on (2, 4, 3) keeps the mask (jax returns
    // the very array, which keeps its mask), so GlobalAveragePooling1D averages the
    // valid steps only; Reshape((3, 4)), (12,) or (4, 3, 1) drops it.
    let spec = |target: &str| {
        format!(
            "inputs: {{x: [batch, 4, 3]}}\nlayers:\n  - masking: {{input: x}}\n  - reshape: {{target_shape: {target}, name: r}}\n"
        )
    };
    assert_eq!(mask_of(&spec("[4, 3]"), "r"), "[batch, 4]");
    assert_eq!(mask_of(&spec("[-1, 3]"), "r"), "[batch, 4]");
    for target in ["[3, 4]", "[12]", "[4, 3, 1]"] {
        assert_eq!(mask_of(&spec(target), "r"), "none", "{target}");
    }
    let pooled = |target: &str| {
        let src = format!(
            "{}  - global_average_pooling1d: {{name: g}}\noutputs: [g]\n",
            spec(target)
        );
        let m = model(&src);
        let f = passes::optimize(&lower::predict_func(&m.graph).expect("lowers"));
        let mut x = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 3]));
        for (k, v) in x.iter_mut().enumerate() {
            *v = 1.0 + k as f32;
        }
        // Steps 2 and 3 of example 0 are masked.
        for s in 2..4 {
            for c in 0..3 {
                x[[0, s, c]] = 0.0;
            }
        }
        let out = kiln::ir::interp::eval(&f, &[x.clone()]).expect("evaluates");
        compare_jit(&format!("reshape {target}"), &f, &[x]);
        out[0].clone()
    };
    let kept = pooled("[4, 3]");
    // Example 0: the mean of its two valid steps [1, 2, 3] and [4, 5, 6].
    assert_eq!(kept[[0, 0]], 2.5);
    assert_eq!(kept[[0, 2]], 4.5);
    // Example 1 has no masked step: the plain mean.
    assert_eq!(kept[[1, 0]], (13.0 + 16.0 + 19.0 + 22.0) / 4.0);
    // [3, 4] drops the mask: example 0 averages its three rows, zeros included.
    let dropped = pooled("[3, 4]");
    assert_eq!(dropped[[0, 0]], (1.0 + 5.0 + 0.0) / 3.0);
}

#[test]
fn concatenated_scores_carry_the_mask_keras_joins() {
    // keras: tokens [[1,2,3,0],[4,5,0,0]], Embedding(mask_zero) -> MHA(e, e,
    // return_attention_scores=True); Concatenate()([s, s]) gives (2, 2, 4, 8) with the
    // mask (2, 1, 4) [[1,1,1,0]], [[1,1,0,0]]; Concatenate(axis=2) gives (2, 2, 8, 4)
    // with (2, 1, 8) [[1,1,1,0,1,1,1,0]], [[1,1,0,0,1,1,0,0]].
    for (axis, shape, want) in [
        (-1, "[batch, 1, 4]", vec![1, 1, 1, 0, 1, 1, 0, 0]),
        (
            2,
            "[batch, 1, 8]",
            vec![1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0],
        ),
    ] {
        let src = format!(
            "inputs: {TOKENS}\nlayers:\n{EMBED}{}  - concatenate: {{axis: {axis}, inputs: [mha.scores, mha.scores], name: c}}\n",
            mha("")
        );
        assert_eq!(mask_of(&src, "c"), shape, "axis {axis}");
        let target = if axis == 2 {
            "[batch, 2, 8, 4]"
        } else {
            "[batch, 2, 4, 8]"
        };
        // Keras broadcasts the 1 on the heads where the mask is used; kiln's per-step
        // consumers do not, and refuse it.
        assert_eq!(
            failing_codes(&format!(
                "{src}  - global_average_pooling1d: {{input: c}}\n"
            )),
            ["E0522"]
        );
        assert_eq!(
            failing_codes(&format!(
                "{src}outputs: [c]\ntrain:\n  targets: {{y: {target}}}\n  loss: mse\n  optimizer: adam\n"
            )),
            ["E0522"],
            "axis {axis}"
        );
        let m = model(&src);
        let mut lw = lower::forward(&m.graph, Mode::Infer, "p").expect("lowers");
        let mask = lw.mask(Source::Layer(2)).expect("the join carries a mask");
        lw.cx.f.outputs.clear();
        lw.cx.f.output("mask", mask);
        let f = passes::optimize(&lw.cx.f);
        let tokens = ArrayD::from_shape_vec(
            IxDyn(&[2, 4]),
            vec![1.0f32, 2.0, 3.0, 0.0, 4.0, 5.0, 0.0, 0.0],
        )
        .expect("shape");
        let inputs: Vec<ArrayD<f32>> = f
            .inputs
            .iter()
            .map(|i| match i.name.as_str() {
                "t" => tokens.clone(),
                _ => ArrayD::zeros(IxDyn(&concrete(&i.ty, 2, 4))),
            })
            .collect();
        let out = kiln::ir::interp::eval(&f, &inputs).expect("evaluates");
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_eq!(
            out[0].iter().copied().collect::<Vec<_>>(),
            want,
            "axis {axis}"
        );
    }
}
