//! The regularizer arguments Keras gives recurrent layers, multi_head_attention, the
//! depthwise and separable convolutions, and the layers a wrapper holds: each adds to
//! the loss exactly the penalty of the weights Keras applies it to (its Keras golden
//! cases `seq_regularizers` and `conv_regularizers` show the numbers against Keras),
//! and the regularized loss differentiates and compiles.

use crate::common::{Rng, compare_jit, concrete, fd_check};
use kiln::ir::Func;
use ndarray::{ArrayD, IxDyn};

fn net(spec: &str) -> kiln::Net {
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap_or_else(|e| panic!("{spec}\n{e}"));
    m.compile(&kiln::Options::default()).unwrap()
}

fn spec(input: &str, layer: &str) -> String {
    format!(
        "inputs:\n  x: {input}\nlayers:\n  - {layer}\n  - flatten\n  - dense: {{units: 1, name: out}}\ntrain:\n  targets: {{y: [batch, 1]}}\n  loss: mse\n  optimizer: sgd\n"
    )
}

/// The evaluated loss of `layer` on fixed data.
fn loss(input: &str, layer: &str, shape: &[usize]) -> (f64, kiln::Net) {
    let n = net(&spec(input, layer));
    let mut rng = Rng::new(3);
    let x = rng.array(shape, -1.0, 1.0).mapv(|v| v as f32);
    let y = ArrayD::<f32>::zeros(IxDyn(&[shape[0], 1]));
    let arrays = vec![("x".to_string(), x), ("y".to_string(), y)];
    let d = kiln::Dataset::from_arrays(n.graph(), arrays).unwrap();
    let logs = n.evaluate(&d, Some(shape[0])).unwrap();
    (logs.get("loss").unwrap(), n)
}

/// `0.5 · Σ w²` over the weights whose keys end with one of `suffixes`.
fn half_l2(n: &kiln::Net, suffixes: &[&str]) -> f64 {
    let picked: Vec<(&str, &ArrayD<f32>)> = n
        .weights()
        .iter()
        .filter(|(k, _)| suffixes.iter().any(|s| k.ends_with(s)))
        .collect();
    assert!(!picked.is_empty(), "no weight ends with {suffixes:?}");
    picked
        .iter()
        .map(|(_, w)| 0.5 * w.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .sum()
}

/// Each argument regularizes exactly the weights Keras gives it: the loss with
/// `ARG: {l2: {l2: 0.5}}` is the loss without it plus 0.5·Σw² of those weights (and of
/// no other: a recurrent layer's `kernel_regularizer` leaves its `recurrent_kernel`
/// alone, a wrapper's backward copy carries its layer's regularizers).
#[test]
fn each_argument_penalizes_its_keras_weights() {
    let seq = "[batch, 4, 3]";
    let img = "[batch, 5, 5, 2]";
    let reg = "{l2: {l2: 0.5}}";
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            seq,
            "lstm: {units: 2, return_sequences: true, ARG}",
            "recurrent_regularizer",
            vec!["lstm_cell/recurrent_kernel"],
        ),
        (
            seq,
            "lstm: {units: 2, return_sequences: true, ARG}",
            "kernel_regularizer",
            vec!["lstm_cell/kernel"],
        ),
        (
            seq,
            "gru: {units: 2, return_sequences: true, bias_initializer: ones, ARG}",
            "bias_regularizer",
            vec!["gru_cell/bias"],
        ),
        (
            seq,
            "simple_rnn: {units: 2, return_sequences: true, ARG}",
            "recurrent_regularizer",
            vec!["simple_rnn_cell/recurrent_kernel"],
        ),
        (
            seq,
            "multi_head_attention: {num_heads: 2, key_dim: 2, ARG}",
            "kernel_regularizer",
            vec![
                "query/kernel",
                "key/kernel",
                "value/kernel",
                "attention_output/kernel",
            ],
        ),
        (
            seq,
            "multi_head_attention: {num_heads: 2, key_dim: 2, bias_initializer: ones, ARG}",
            "bias_regularizer",
            vec![
                "query/bias",
                "key/bias",
                "value/bias",
                "attention_output/bias",
            ],
        ),
        (
            seq,
            "depthwise_conv1d: {kernel_size: 2, ARG}",
            "depthwise_regularizer",
            vec!["depthwise_conv1d/kernel"],
        ),
        (
            seq,
            "separable_conv1d: {filters: 2, kernel_size: 2, ARG}",
            "pointwise_regularizer",
            vec!["pointwise_kernel"],
        ),
        (
            img,
            "separable_conv2d: {filters: 2, kernel_size: 2, ARG}",
            "depthwise_regularizer",
            vec!["depthwise_kernel"],
        ),
        (
            img,
            "depthwise_conv2d: {kernel_size: 2, ARG}",
            "depthwise_regularizer",
            vec!["depthwise_conv2d/kernel"],
        ),
        (
            seq,
            "bidirectional: {layer: {gru: {units: 2, return_sequences: true, ARG}}}",
            "recurrent_regularizer",
            vec![
                "forward_gru/gru_cell/recurrent_kernel",
                "backward_gru/gru_cell/recurrent_kernel",
            ],
        ),
        (
            seq,
            "bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}, backward_layer: {lstm: {units: 2, return_sequences: true, go_backwards: true, ARG}}}",
            "kernel_regularizer",
            vec!["/lstm_1/lstm_cell/kernel"],
        ),
        (
            seq,
            "time_distributed: {layer: {dense: {units: 2, ARG}}}",
            "kernel_regularizer",
            vec!["time_distributed/dense/kernel"],
        ),
    ];
    for (input, layer, arg, weights) in cases {
        let shape: &[usize] = if input == seq {
            &[5, 4, 3]
        } else {
            &[5, 5, 5, 2]
        };
        let plain = layer.replace(", ARG}", "}");
        let with = layer.replace("ARG", &format!("{arg}: {reg}"));
        let (l0, _) = loss(input, &plain, shape);
        let (l1, n) = loss(input, &with, shape);
        let want = half_l2(&n, &weights);
        assert!(want > 0.0, "{with}");
        let got = l1 - l0;
        assert!(
            (got - want).abs() <= 1e-5 * want.max(1.0),
            "{with}: the penalty is {got}, 0.5·Σw² of {weights:?} is {want}"
        );
    }
}

/// Keras applies a bidirectional's layers' activity regularizers to each direction's
/// output (`__call__`), and none of the layer inside `time_distributed` (which calls
/// `layer.call`): the first adds to the loss, the second does not.
#[test]
fn activity_inside_wrappers_is_keras_s() {
    let input = "[batch, 4, 3]";
    let shape = [5usize, 4, 3];
    let reg = "activity_regularizer: {l1: {l1: 0.5}}";
    let (l0, _) = loss(input, "bidirectional: {layer: {gru: {units: 2}}}", &shape);
    let (l1, _) = loss(
        input,
        &format!("bidirectional: {{layer: {{gru: {{units: 2, {reg}}}}}}}"),
        &shape,
    );
    assert!(l1 > l0 + 1e-3, "{l1} vs {l0}");
    let (l0, _) = loss(
        input,
        "time_distributed: {layer: {dense: {units: 2}}}",
        &shape,
    );
    let (l1, _) = loss(
        input,
        &format!("time_distributed: {{layer: {{dense: {{units: 2, {reg}}}}}}}"),
        &shape,
    );
    assert_eq!(l0.to_bits(), l1.to_bits());
}

fn values(f: &Func, rng: &mut Rng) -> (Vec<ArrayD<f64>>, Vec<bool>) {
    let mut vals = Vec::new();
    let mut diff = Vec::new();
    for inp in &f.inputs {
        let shape = concrete(&inp.ty, 3, 4);
        vals.push(rng.array(&shape, -0.9, 0.9));
        diff.push(true);
    }
    (vals, diff)
}

/// The loss with the new regularizer arguments differentiates as finite differences
/// say, and compiles to what the interpreter computes.
#[test]
fn regularized_loss_gradients() {
    let spec = "inputs:\n  x: [batch, 4, 3]\nlayers:\n  - lstm: {units: 2, return_sequences: true, kernel_regularizer: l1, recurrent_regularizer: {l2: {l2: 0.3}}, bias_regularizer: {l1_l2: {l1: 0.1, l2: 0.2}}, activity_regularizer: l2}\n  - multi_head_attention: {num_heads: 2, key_dim: 2, kernel_regularizer: l2, bias_regularizer: l1}\n  - separable_conv1d: {filters: 2, kernel_size: 2, depthwise_regularizer: l1, pointwise_regularizer: l2}\n  - bidirectional: {layer: {gru: {units: 2, recurrent_regularizer: l2, activity_regularizer: l1}}}\n  - dense: {units: 2}\ntrain:\n  targets: {y: [batch, 2]}\n  loss: mse\n  optimizer: sgd\n";
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap();
    let e = kiln::lower::eval::build(&m.graph).unwrap();
    let loss = e.func.outputs[0].1;
    let mut rng = Rng::new(12);
    let (vals, diff) = values(&e.func, &mut rng);
    fd_check("regularized loss", &e.func, loss, &vals, &diff, &mut rng);
    let f32s: Vec<ArrayD<f32>> = vals.iter().map(|a| a.mapv(|v| v as f32)).collect();
    compare_jit("regularized loss", &e.func, &f32s);
}
