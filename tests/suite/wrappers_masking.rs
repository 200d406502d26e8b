//! Wrappers (`bidirectional`, `time_distributed`) and Keras masks (`embedding` with
//! `mask_zero`, `masking`, through recurrent layers, pooling, attention and the loss):
//! shapes, parameter counts and weight names against Keras 3.15 (the numbers in the
//! comments are what Keras prints for the same model), gradients against finite
//! differences, compiled against interpreted, and masked values against what the
//! same layer computes on the unpadded sequence.

use crate::common;

use common::{Rng, compare_jit, concrete, fd_check};
use kiln::ir::{Func, interp, passes};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

fn model(src: &str) -> kiln::Model {
    kiln::Model::from_source(src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

fn spec(inputs: &str, layers: &str) -> String {
    format!("inputs: {inputs}\nlayers:\n{layers}\n")
}

/// The diagnostic codes of a spec that must fail.
fn codes(src: &str) -> Vec<&'static str> {
    match kiln::Model::from_source(src, "t", "t.yaml") {
        Ok(_) => panic!("{src} checked clean"),
        Err(kiln::Error::Spec(e)) => e.diagnostics.iter().map(|d| d.code).collect(),
        Err(e) => panic!("{e}"),
    }
}

/// Every parameter key (`layer/name`) with its shape, in order.
fn weights(m: &kiln::Model) -> Vec<(String, Vec<i64>)> {
    m.graph
        .layers
        .iter()
        .flat_map(|l| {
            l.params
                .iter()
                .map(move |p| (format!("{}/{}", l.name, p.name), p.shape.clone()))
        })
        .collect()
}

/// Values for a function's inputs: integer inputs as indices below `int_high` (0, the
/// padding index, included), the random key fixed, everything else uniform.
fn values(f: &Func, rng: &mut Rng, int_high: usize) -> (Vec<ArrayD<f64>>, Vec<bool>) {
    let mut vals = Vec::new();
    let mut diff = Vec::new();
    for inp in &f.inputs {
        let shape = concrete(&inp.ty, 3, 5);
        if inp.name == "rng_key" || inp.name == "step" {
            vals.push(ArrayD::from_elem(IxDyn(&[]), 7.0));
            diff.push(false);
        } else if inp.name == "lr" {
            vals.push(ArrayD::from_elem(IxDyn(&[]), 0.01));
            diff.push(false);
        } else if inp.ty.dtype.is_int() {
            vals.push(ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                rng.int(0, int_high - 1) as f64
            }));
            diff.push(false);
        } else if inp.name.ends_with("moving_variance") {
            vals.push(rng.array(&shape, 0.5, 1.5));
            diff.push(true);
        } else {
            vals.push(rng.array(&shape, -0.9, 0.9));
            diff.push(true);
        }
    }
    (vals, diff)
}

/// The layers' gradients against finite differences (inference and training forms),
/// and the forward functions and a whole training step (mse against a target of the
/// output's shape) compiled against interpreted.
pub(crate) fn check_layers(inputs: &str, layers: &str) {
    let m = model(&spec(inputs, layers));
    let mut rng = Rng::new(layers.len() as u64);
    for mode in [Mode::Infer, Mode::Train] {
        let lw = lower::forward(&m.graph, mode, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
        let out = lw.f.outputs[0].1;
        let (vals, diff) = values(&lw.f, &mut rng, 4);
        fd_check(
            &format!("{layers} ({mode:?})"),
            &lw.f,
            out,
            &vals,
            &diff,
            &mut rng,
        );
        let f32s: Vec<ArrayD<f32>> = vals.iter().map(|a| a.mapv(|v| v as f32)).collect();
        compare_jit(
            &format!("{layers} ({mode:?})"),
            &passes::optimize(&lw.f),
            &f32s,
        );
    }
    let out = &m.graph.layers.last().unwrap().output;
    let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
    let src = format!(
        "{}train:\n  targets: {{target: [{}]}}\n  loss: mse\n  optimizer: adam\n",
        spec(inputs, layers),
        shape.join(", ")
    );
    let mt = model(&src);
    let step = lower::train::build(&mt.graph).unwrap();
    let (vals, _) = values(&step.func, &mut rng, 4);
    let f32s: Vec<ArrayD<f32>> = vals.iter().map(|a| a.mapv(|v| v as f32)).collect();
    compare_jit(&format!("{layers} train step"), &step.func, &f32s);
    // The loss (masked where the output carries a mask) against finite differences.
    let eval = lower::eval::build(&mt.graph).unwrap();
    let loss = eval.func.outputs[0].1;
    let (vals, diff) = values(&eval.func, &mut rng, 4);
    fd_check(
        &format!("{layers} loss"),
        &eval.func,
        loss,
        &vals,
        &diff,
        &mut rng,
    );
}

#[test]
fn bidirectional_shapes_params_and_weight_names_are_keras() {
    // keras: Bidirectional(LSTM(4, return_sequences=True)) on (5, 3): (None, 5, 8), 256.
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        "  - bidirectional: {layer: {lstm: {units: 4, return_sequences: true}}}",
    ));
    let l = &m.graph.layers[0];
    assert_eq!(kiln::dim::fmt_shape(&l.output.shape), "[batch, 5, 8]");
    let w = weights(&m);
    let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bidirectional/forward_lstm/lstm_cell/kernel",
            "bidirectional/forward_lstm/lstm_cell/recurrent_kernel",
            "bidirectional/forward_lstm/lstm_cell/bias",
            "bidirectional/backward_lstm/lstm_cell/kernel",
            "bidirectional/backward_lstm/lstm_cell/recurrent_kernel",
            "bidirectional/backward_lstm/lstm_cell/bias",
        ]
    );
    assert_eq!(
        w.iter()
            .map(|(_, s)| s.iter().product::<i64>())
            .sum::<i64>(),
        256
    );
    assert_eq!(w[0].1, [3, 16]);
    // keras: Bidirectional(SimpleRNN(3, return_sequences=True), merge_mode="sum") on
    // (6, 4): (None, 6, 3), 48 parameters.
    let m = model(&spec(
        "{x: [batch, seq, 4]}",
        "  - bidirectional: {layer: {simple_rnn: {units: 3, return_sequences: true}}, merge_mode: sum}",
    ));
    assert_eq!(
        kiln::dim::fmt_shape(&m.graph.layers[0].output.shape),
        "[batch, seq, 3]"
    );
    assert_eq!(m.graph.param_counts().0, 48);
    // keras: a given backward layer keeps its own name (`lstm_1`): the forward layer's
    // copy is `forward_lstm`, and the layer written as `layer` took `lstm`.
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        "  - bidirectional: {layer: {lstm: {units: 4}}, backward_layer: {lstm: {units: 2, go_backwards: true}}}",
    ));
    let w = weights(&m);
    assert_eq!(w[3].0, "bidirectional/lstm_1/lstm_cell/kernel");
    assert_eq!(w[3].1, [3, 8]);
    assert_eq!(
        kiln::dim::fmt_shape(&m.graph.layers[0].output.shape),
        "[batch, 6]"
    );
}

#[test]
fn wrapped_layers_draw_keras_automatic_names() {
    // keras.io's IMDB bidirectional LSTM: 2,757,761 parameters, and the second wrapped
    // LSTM is `lstm_1` (Keras's counter counts the layers written inside wrappers).
    let src = std::fs::read_to_string("specs/imdb_bilstm.yaml").unwrap();
    let m = model(&src);
    assert_eq!(m.graph.param_counts().0, 2_757_761);
    let w = weights(&m);
    assert!(
        w.iter().any(
            |(n, s)| n == "bidirectional_1/forward_lstm_1/lstm_cell/kernel" && s == &[128, 256]
        )
    );
    assert!(
        w.iter()
            .any(|(n, _)| n == "bidirectional_1/backward_lstm_1/lstm_cell/bias")
    );
    // A top-level layer after a wrapped one of the same type continues the count.
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        "  - bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}}\n  - lstm: {units: 2}",
    ));
    assert_eq!(m.graph.layers[1].name, "lstm_1");
    // A wrapped layer may be named: its weights sit under that name, and it takes no
    // automatic name.
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        "  - bidirectional: {layer: {lstm: {units: 2, name: enc, return_sequences: true}}}\n  - lstm: {units: 2}",
    ));
    assert_eq!(
        weights(&m)[0].0,
        "bidirectional/forward_enc/lstm_cell/kernel"
    );
    assert_eq!(
        weights(&m)[3].0,
        "bidirectional/backward_enc/lstm_cell/kernel"
    );
    assert_eq!(m.graph.layers[1].name, "lstm");
}

#[test]
fn time_distributed_applies_its_layer_per_step() {
    // keras: TimeDistributed(Dense(6)) on (5, 3): (None, 5, 6), 24; weights
    // time_distributed/dense/kernel.
    let m = model(&spec(
        "{x: [batch, seq, 3]}",
        "  - time_distributed: {layer: {dense: {units: 6}}}",
    ));
    assert_eq!(
        kiln::dim::fmt_shape(&m.graph.layers[0].output.shape),
        "[batch, seq, 6]"
    );
    let w = weights(&m);
    assert_eq!(
        w[0],
        ("time_distributed/dense/kernel".to_string(), vec![3, 6])
    );
    assert_eq!(w[1].0, "time_distributed/dense/bias");
    // keras: TimeDistributed(Bidirectional(GRU(3, return_sequences=True))) on (2, 6, 4):
    // (None, 2, 6, 6), 162.
    let m = model(&spec(
        "{x: [batch, 2, 6, 4]}",
        "  - time_distributed: {layer: {bidirectional: {layer: {gru: {units: 3, return_sequences: true}}}}}",
    ));
    assert_eq!(
        kiln::dim::fmt_shape(&m.graph.layers[0].output.shape),
        "[batch, 2, 6, 6]"
    );
    assert_eq!(m.graph.param_counts().0, 162);
    assert_eq!(
        weights(&m)[0].0,
        "time_distributed/bidirectional/forward_gru/gru_cell/kernel"
    );
    // A wrapped conv2d sees one frame per step.
    let m = model(&spec(
        "{x: [batch, 4, 6, 6, 1]}",
        "  - time_distributed: {layer: {conv2d: {filters: 2, kernel_size: 3}}}",
    ));
    assert_eq!(
        kiln::dim::fmt_shape(&m.graph.layers[0].output.shape),
        "[batch, 4, 4, 4, 2]"
    );
}

#[test]
fn wrapper_mistakes_are_diagnosed() {
    let x = "{x: [batch, 5, 3]}";
    assert_eq!(
        codes(&spec(x, "  - bidirectional: {layer: {dense: {units: 2}}}")),
        ["E0405"]
    );
    assert_eq!(
        codes(&spec(x, "  - bidirectional: {layer: {lstn: {units: 2}}}")),
        ["E0701"]
    );
    assert_eq!(
        codes(&spec(x, "  - bidirectional: {layer: {lstm: {unit: 2}}}")),
        ["E0401"]
    );
    assert_eq!(codes(&spec(x, "  - bidirectional: {layer: 3}")), ["E0403"]);
    assert_eq!(
        codes(&spec(
            x,
            "  - bidirectional: {layer: {lstm: {units: 2}}, backward_layer: {lstm: {units: 2}}}"
        )),
        ["E0520"]
    );
    assert_eq!(
        codes(&spec(
            x,
            "  - bidirectional: {layer: {lstm: {units: 2}}, merge_mode: sum, backward_layer: {gru: {units: 3, go_backwards: true}}}"
        )),
        ["E0520"]
    );
    assert_eq!(
        codes(&spec(
            "{x: [batch, 3]}",
            "  - time_distributed: {layer: {dense: {units: 2}}}"
        )),
        ["E0501"]
    );
    assert_eq!(
        codes(&spec(
            x,
            "  - time_distributed: {layer: {lstm: {units: 2}}}"
        )),
        ["E0501"]
    );
}

#[test]
fn wrappers_differentiate_and_compile() {
    for merge in ["concat", "sum", "mul", "ave"] {
        check_layers(
            "{x: [batch, seq, 3]}",
            &format!(
                "  - bidirectional: {{layer: {{lstm: {{units: 2, return_sequences: true}}}}, merge_mode: {merge}}}"
            ),
        );
    }
    check_layers(
        "{x: [batch, seq, 3]}",
        "  - bidirectional: {layer: {gru: {units: 2}}}",
    );
    check_layers(
        "{x: [batch, seq, 3]}",
        "  - bidirectional: {layer: {simple_rnn: {units: 2}}, backward_layer: {gru: {units: 3, go_backwards: true}}}",
    );
    check_layers(
        "{x: [batch, seq, 3]}",
        "  - time_distributed: {layer: {dense: {units: 2, activation: tanh}}}",
    );
    check_layers(
        "{x: [batch, 2, seq, 3]}",
        "  - time_distributed: {layer: {lstm: {units: 2}}}",
    );
}

#[test]
fn masks_differentiate_and_compile() {
    let t = "{t: {shape: [batch, seq], dtype: i32}}";
    let emb = "  - embedding: {input_dim: 4, output_dim: 3, mask_zero: true}\n";
    for rnn in ["lstm", "gru", "simple_rnn"] {
        for seqs in [true, false] {
            check_layers(
                t,
                &format!("{emb}  - {rnn}: {{units: 2, return_sequences: {seqs}}}"),
            );
        }
        check_layers(
            t,
            &format!("{emb}  - {rnn}: {{units: 2, go_backwards: true, return_sequences: true}}"),
        );
    }
    check_layers(
        t,
        &format!("{emb}  - gru: {{units: 2, reset_after: false, return_sequences: true}}"),
    );
    check_layers(
        t,
        &format!(
            "{emb}  - bidirectional: {{layer: {{lstm: {{units: 2, return_sequences: true}}}}}}\n  - dense: {{units: 2}}"
        ),
    );
    check_layers(t, &format!("{emb}  - global_average_pooling1d"));
    // Batch statistics of the valid steps only (Keras's BatchNormalization with a mask).
    check_layers(
        t,
        &format!("{emb}  - batch_normalization\n  - lstm: {{units: 2}}"),
    );
    // Masks joined along the steps and along the features (Keras's Concatenate).
    check_layers(
        t,
        &format!(
            "{emb}  - concatenate: {{inputs: [embedding, embedding], axis: 1}}\n  - lstm: {{units: 2}}"
        ),
    );
    check_layers(
        t,
        &format!("{emb}  - multi_head_attention: {{num_heads: 2, key_dim: 2}}"),
    );
    check_layers(
        "{x: [batch, seq, 3]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 2, use_causal_mask: true}",
    );
    check_layers(
        "{x: [batch, seq, 3]}",
        "  - masking: {mask_value: 0.5}\n  - lstm: {units: 2, return_sequences: true}",
    );
}

/// Runs the model's inference function on `tokens` [batch, steps] (interpreted, f64).
fn predict(m: &kiln::Model, tokens: &[Vec<usize>], rng: &mut Rng) -> (ArrayD<f64>, Func) {
    let lw = lower::forward(&m.graph, Mode::Infer, "t").unwrap();
    let (mut vals, _) = values(&lw.f, rng, 4);
    let (b, s) = (tokens.len(), tokens[0].len());
    vals[0] = ArrayD::from_shape_fn(IxDyn(&[b, s]), |i| tokens[i[0]][i[1]] as f64);
    let out = interp::eval::<f64>(&lw.f, &vals).unwrap().remove(0);
    (out, lw.cx.f)
}

#[test]
fn masked_steps_keep_the_state_as_keras() {
    // Keras: a masked step keeps the state and repeats the previous output; so a
    // sequence padded with zeros after its tokens ends as the unpadded one, and
    // padding before them leaves the state at zero.
    for rnn in ["lstm", "gru", "simple_rnn"] {
        let layers = format!(
            "  - embedding: {{input_dim: 5, output_dim: 3, mask_zero: true}}\n  - {rnn}: {{units: 3, return_sequences: true}}"
        );
        let m = model(&spec("{t: {shape: [batch, seq], dtype: i32}}", &layers));
        let (y, _) = predict(
            &m,
            &[vec![1, 2, 3, 0, 0], vec![0, 0, 1, 2, 3]],
            &mut Rng::new(3),
        );
        for u in 0..3 {
            assert_eq!(
                y[[0, 3, u]],
                y[[0, 2, u]],
                "{rnn}: a masked step repeats the output"
            );
            assert_eq!(y[[0, 4, u]], y[[0, 2, u]], "{rnn}");
            assert_eq!(y[[1, 0, u]], 0.0, "{rnn}: leading padding outputs zeros");
            assert!(
                (y[[1, 4, u]] - y[[0, 2, u]]).abs() < 1e-12,
                "{rnn}: same tokens, same end"
            );
        }
    }
    // Inside `bidirectional` with return_sequences, masked steps output zeros, and the
    // backward layer starts at the last token, not at the padding.
    let layers = "  - embedding: {input_dim: 5, output_dim: 3, mask_zero: true}\n  - bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}}";
    let m = model(&spec("{t: {shape: [batch, seq], dtype: i32}}", layers));
    let (y, _) = predict(
        &m,
        &[vec![1, 2, 3, 0, 0], vec![1, 2, 3, 4, 4]],
        &mut Rng::new(4),
    );
    for u in 0..4 {
        assert_eq!(y[[0, 3, u]], 0.0);
        assert_eq!(y[[0, 4, u]], 0.0);
    }
    assert_ne!(
        y[[0, 0, 2]],
        y[[1, 0, 2]],
        "the backward pass saw the tokens after step 0"
    );
    let short = model(&spec("{t: {shape: [batch, seq], dtype: i32}}", layers));
    let (ys, _) = predict(&short, &[vec![1, 2, 3]], &mut Rng::new(4));
    for k in 0..3 {
        for u in 0..4 {
            assert!(
                (ys[[0, k, u]] - y[[0, k, u]]).abs() < 1e-12,
                "padding changes nothing"
            );
        }
    }
}

#[test]
fn masked_pooling_and_loss_leave_out_the_padding() {
    let layers = "  - embedding: {input_dim: 5, output_dim: 3, mask_zero: true}\n  - global_average_pooling1d";
    let m = model(&spec("{t: {shape: [batch, seq], dtype: i32}}", layers));
    let (y, _) = predict(
        &m,
        &[vec![1, 2, 0, 0, 0], vec![1, 2, 1, 2, 0]],
        &mut Rng::new(5),
    );
    for u in 0..3 {
        assert!(
            (y[[0, u]] - y[[1, u]]).abs() < 1e-12,
            "the mean over the valid steps"
        );
    }
    // The loss of a masked sequence output is the mean over the valid steps.
    let src = format!(
        "{}train:\n  targets: {{y: [batch, seq, 2]}}\n  loss: mse\n  optimizer: sgd\n  metrics: [mae]\n",
        spec(
            "{t: {shape: [batch, seq], dtype: i32}}",
            "  - embedding: {input_dim: 5, output_dim: 3, mask_zero: true}\n  - lstm: {units: 2, return_sequences: true}"
        )
    );
    let m = model(&src);
    let eval = lower::eval::build(&m.graph).unwrap();
    let pred = lower::predict_func(&m.graph).unwrap();
    let mut rng = Rng::new(6);
    let (mut vals, _) = values(&eval.func, &mut rng, 5);
    let tokens = [[1, 2, 0, 0, 0], [3, 4, 1, 2, 0], [0, 0, 0, 0, 0]];
    vals[0] = ArrayD::from_shape_fn(IxDyn(&[3, 5]), |i| tokens[i[0]][i[1]] as f64);
    let y = vals[eval.func.inputs.iter().position(|i| i.name == "y").unwrap()].clone();
    let outs = interp::eval::<f64>(&eval.func, &vals).unwrap();
    let loss = outs[0].clone();
    // A metric's outputs are its state over the batch: weighted total, then count.
    let state = |i: usize| {
        let at = eval
            .func
            .outputs
            .iter()
            .position(|(n, _)| n.starts_with("metric/") && n.ends_with(&format!("/{i}")))
            .unwrap();
        outs[at][[]]
    };
    let mae = state(0) / state(1);
    let n_pred = pred.inputs.len();
    let p = interp::eval::<f64>(&pred, &vals[..n_pred])
        .unwrap()
        .remove(0);
    let (mut sum, mut abs, mut valid) = (0.0, 0.0, 0.0);
    for b in 0..3 {
        for s in 0..5 {
            if tokens[b][s] != 0 {
                let err = |c: usize| p[[b, s, c]] - y[[b, s, c]];
                sum += (err(0).powi(2) + err(1).powi(2)) / 2.0;
                abs += (err(0).abs() + err(1).abs()) / 2.0;
                valid += 1.0;
            }
        }
    }
    assert!(
        (loss[[]] - sum / valid).abs() < 1e-12,
        "{} vs {}",
        loss[[]],
        sum / valid
    );
    // Metrics too (Keras's MeanMetricWrapper weights by the mask).
    assert!(
        (mae - abs / valid).abs() < 1e-12,
        "{mae} vs {}",
        abs / valid
    );
}

#[test]
fn summary_says_what_each_layer_does_with_the_mask() {
    let m = model(&spec(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 5, output_dim: 3, mask_zero: true}\n  - dense: {units: 4}\n  - lstm: {units: 2, return_sequences: true}\n  - lstm: {units: 2}\n  - dense: {units: 1}",
    ));
    let s = kiln::summary::render(&m.graph);
    assert!(
        s.contains(" Masks: embedding produces; dense propagates; lstm consumes, propagates; lstm_1 consumes\n"),
        "{s}"
    );
    let m = model(&spec(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 5, output_dim: 3, mask_zero: true}\n  - flatten",
    ));
    assert!(
        kiln::summary::render(&m.graph).contains(" Masks: embedding produces; flatten drops\n")
    );
    let m = model(&spec("{x: [batch, 3]}", "  - dense: {units: 1}"));
    assert!(!kiln::summary::render(&m.graph).contains("Masks"));
}

#[test]
fn recurrent_dropout_masks_inputs_once_per_sequence() {
    // Keras's `dropout` on a recurrent layer: one mask [batch, features] for the whole
    // sequence, in training only. The same input at every step is dropped the same way,
    // so a linear simple RNN without recurrence sees the same step input each time.
    let m = model(&spec(
        "{x: [batch, seq, 6]}",
        "  - simple_rnn: {units: 3, dropout: 0.5, activation: linear, return_sequences: true, use_bias: false}",
    ));
    let infer = lower::forward(&m.graph, Mode::Infer, "t").unwrap();
    assert!(
        !infer
            .f
            .nodes
            .iter()
            .any(|n| matches!(n.op, kiln::ir::Op::Rng { .. }))
    );
    let train = lower::forward(&m.graph, Mode::Train, "t").unwrap();
    let rngs: Vec<_> = train
        .f
        .nodes
        .iter()
        .filter(|n| matches!(n.op, kiln::ir::Op::Rng { .. }))
        .collect();
    assert_eq!(rngs.len(), 1);
    assert_eq!(kiln::dim::fmt_shape(&rngs[0].ty.shape), "[batch, 6]");
    check_layers("{x: [batch, seq, 3]}", "  - lstm: {units: 2, dropout: 0.3}");
}

/// keras.io's IMDB bidirectional LSTM, on generated reviews (padded with index 0, as
/// `pad_sequences` pads) whose label is whether a marker word occurs: a few steps of
/// Adam on one batch lower its loss, compiled and interpreted alike.
#[test]
fn imdb_bidirectional_lstm_trains() {
    use kiln::runtime::Backend;
    let src = std::fs::read_to_string("specs/imdb_bilstm.yaml").unwrap();
    let m = model(&src);
    let (batch, steps) = (8, 12);
    let mut rng = Rng::new(11);
    let mut tokens = ArrayD::<f32>::zeros(IxDyn(&[batch, steps]));
    let mut labels = ArrayD::<f32>::zeros(IxDyn(&[batch, 1]));
    for b in 0..batch {
        let len = rng.int(4, steps);
        for s in steps - len..steps {
            tokens[[b, s]] = rng.int(1, 19_999) as f32;
        }
        if b % 2 == 0 {
            tokens[[b, steps - 1]] = 7.0;
            labels[[b, 0]] = 1.0;
        }
    }
    let mut losses = Vec::new();
    for backend in [Backend::Jit, Backend::Interp] {
        let mut net = m
            .compile(&kiln::Options {
                backend,
                seed: Some(0),
                ..kiln::Options::default()
            })
            .unwrap();
        let mut run = Vec::new();
        for _ in 0..4 {
            let out = net
                .train_on_batch(&[("tokens", tokens.view())], &[("label", labels.view())])
                .unwrap();
            run.push(out.loss);
        }
        assert!(run.iter().all(|l| l.is_finite()), "{run:?}");
        assert!(run[3] < run[0], "the loss falls: {run:?}");
        losses.push(run);
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 2e-4 * b.abs().max(1.0), "{losses:?}");
    }
}

/// The bundled transformer classifier (keras.io's, with a padding mask) on reviews
/// padded at the end (Keras's `pad_sequences(padding="post")`) whose label is whether a
/// marker word occurs: a few steps of Adam on one batch lower its loss. (That its mask
/// flows as Keras's does is shown by the Keras golden case `seq_transformer`.)
#[test]
fn transformer_classifier_trains() {
    let src = std::fs::read_to_string("specs/transformer_classifier.yaml").unwrap();
    let m = model(&src);
    let (batch, steps) = (8, 200);
    let mut rng = Rng::new(5);
    let mut tokens = ArrayD::<f32>::zeros(IxDyn(&[batch, steps]));
    let mut labels = ArrayD::<f32>::zeros(IxDyn(&[batch]));
    for b in 0..batch {
        let len = rng.int(20, 60);
        for s in 0..len {
            tokens[[b, s]] = rng.int(1, 19_999) as f32;
        }
        if b % 2 == 0 {
            tokens[[b, 0]] = 7.0;
            labels[[b]] = 1.0;
        }
    }
    let mut net = m
        .compile(&kiln::Options {
            seed: Some(0),
            ..kiln::Options::default()
        })
        .unwrap();
    let before = net.predict(&[("tokens", tokens.view())]).unwrap();
    let mut run = Vec::new();
    for _ in 0..4 {
        let out = net
            .train_on_batch(&[("tokens", tokens.view())], &[("label", labels.view())])
            .unwrap();
        run.push(out.loss);
    }
    assert!(run.iter().all(|l| l.is_finite()), "{run:?}");
    assert!(run[3] < run[0], "the loss falls: {run:?}");
    assert!(before.iter().all(|p| p.is_finite()));
}
