//! Every layer's shape rule and parameter count, against Keras's formulas, including
//! symbolic dims and padding/stride arithmetic.

use kiln::dim::fmt_shape;

/// Checks a one-layer model (several layers for merges) and returns
/// (output shape of the last layer, its parameter count, trainable count).
fn run(inputs: &str, layers: &str) -> (String, i64, i64) {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n");
    let m = match kiln::Model::from_source(&src, "t", "t.yaml") {
        Ok(m) => m,
        Err(e) => panic!("{src}\n{e}"),
    };
    let l = m.graph.layers.last().unwrap();
    let total: i64 = l.params.iter().map(|p| p.count()).sum();
    let trainable: i64 = l
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.count())
        .sum();
    (fmt_shape(&l.output.shape), total, trainable)
}

fn one(input: &str, layer: &str) -> (String, i64) {
    let (s, p, _) = run(&format!("{{x: {input}}}"), &format!("  - {layer}"));
    (s, p)
}

/// The diagnostic codes of a spec that must fail.
fn codes(input: &str, layer: &str) -> Vec<&'static str> {
    let src = format!("inputs: {{x: {input}}}\nlayers:\n  - {layer}\n");
    match kiln::Model::from_source(&src, "t", "t.yaml") {
        Ok(_) => panic!("{src} checked clean"),
        Err(kiln::Error::Spec(e)) => e.diagnostics.iter().map(|d| d.code).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn dense_contracts_the_last_axis_on_any_rank() {
    assert_eq!(
        one("[batch, 784]", "dense: {units: 256}"),
        ("[batch, 256]".into(), 784 * 256 + 256)
    );
    assert_eq!(
        one("[batch, seq, 16]", "dense: {units: 8, use_bias: false}"),
        ("[batch, seq, 8]".into(), 128)
    );
    assert_eq!(codes("[batch, seq]", "dense: {units: 8}"), ["E0507"]);
    assert_eq!(codes("[4]", "dense: {units: 8}"), ["E0501"]);
}

#[test]
fn embedding_appends_the_output_dim() {
    assert_eq!(
        one(
            "{shape: [batch, seq], dtype: i32}",
            "embedding: {input_dim: 1000, output_dim: 16}"
        ),
        ("[batch, seq, 16]".into(), 16_000)
    );
    assert_eq!(
        codes("[batch, seq]", "embedding: {input_dim: 10, output_dim: 4}"),
        ["E0502"]
    );
}

#[test]
fn shape_preserving_layers() {
    for l in [
        "dropout: {rate: 0.5}",
        "activation: {activation: tanh}",
        "relu",
        "leaky_relu",
        "elu",
        "sigmoid",
        "tanh",
        "softmax",
        "gelu: {approximate: true}",
        "silu",
    ] {
        assert_eq!(
            one("[batch, seq, 7]", l),
            ("[batch, seq, 7]".into(), 0),
            "{l}"
        );
    }
    assert_eq!(codes("[batch, 3]", "softmax: {axis: 2}"), ["E0508"]);
    assert_eq!(codes("{shape: [batch, 3], dtype: i32}", "relu"), ["E0502"]);
}

#[test]
fn conv2d_valid_same_strides_dilation() {
    // valid: 8 - 3 + 1 = 6; params 3*3*1*16 + 16
    assert_eq!(
        one("[batch, 8, 8, 1]", "conv2d: {filters: 16, kernel_size: 3}"),
        ("[batch, 6, 6, 16]".into(), 160)
    );
    assert_eq!(
        one(
            "[batch, 8, 8, 1]",
            "conv2d: {filters: 16, kernel_size: 3, padding: same}"
        )
        .0,
        "[batch, 8, 8, 16]"
    );
    // same with stride 2 on 7: ceil(7/2) = 4; valid 7, k 4, s 2: floor(3/2)+1 = 2
    assert_eq!(
        one(
            "[batch, 7, 7, 3]",
            "conv2d: {filters: 2, kernel_size: 4, strides: 2, padding: same}"
        )
        .0,
        "[batch, 4, 4, 2]"
    );
    assert_eq!(
        one(
            "[batch, 7, 9, 3]",
            "conv2d: {filters: 2, kernel_size: [4, 3], strides: 2}"
        ),
        ("[batch, 2, 4, 2]".into(), 4 * 3 * 3 * 2 + 2)
    );
    // dilation 2, k 3: effective 5; 9 - 5 + 1 = 5
    assert_eq!(
        one(
            "[batch, 9, 9, 1]",
            "conv2d: {filters: 1, kernel_size: 3, dilation_rate: 2}"
        )
        .0,
        "[batch, 5, 5, 1]"
    );
    // groups divide channels: kernel [3, 3, 4/2, 6]
    assert_eq!(
        one(
            "[batch, 5, 5, 4]",
            "conv2d: {filters: 6, kernel_size: 3, groups: 2}"
        )
        .1,
        3 * 3 * 2 * 6 + 6
    );
    // symbolic spatial dims stay exact
    assert_eq!(
        one(
            "[batch, h, w, 3]",
            "conv2d: {filters: 4, kernel_size: 3, strides: 2}"
        )
        .0,
        "[batch, (h - 3) // 2 + 1, (w - 3) // 2 + 1, 4]"
    );
    assert_eq!(
        codes("[batch, 2, 2, 1]", "conv2d: {filters: 1, kernel_size: 3}"),
        ["E0503"]
    );
    assert_eq!(
        codes("[batch, 64]", "conv2d: {filters: 1, kernel_size: 3}"),
        ["E0501"]
    );
    assert_eq!(
        codes(
            "[batch, 8, 8, 3]",
            "conv2d: {filters: 4, kernel_size: 3, strides: 2, dilation_rate: 2}"
        ),
        ["E0514"]
    );
    assert_eq!(
        codes(
            "[batch, 8, 8, 3]",
            "conv2d: {filters: 4, kernel_size: 3, groups: 2}"
        ),
        ["E0510"]
    );
    assert_eq!(
        codes("[batch, 8, 8, c]", "conv2d: {filters: 4, kernel_size: 3}"),
        ["E0507"]
    );
}

#[test]
fn conv1d_with_causal_padding() {
    assert_eq!(
        one(
            "[batch, seq, 8]",
            "conv1d: {filters: 4, kernel_size: 3, padding: causal, dilation_rate: 2}"
        ),
        ("[batch, seq, 4]".into(), 3 * 8 * 4 + 4)
    );
    assert_eq!(
        one(
            "[batch, 10, 8]",
            "conv1d: {filters: 4, kernel_size: 3, strides: 3}"
        )
        .0,
        "[batch, 3, 4]"
    );
    assert_eq!(
        one("[batch, seq, 8]", "conv1d: {filters: 4, kernel_size: 3}").0,
        "[batch, seq - 2, 4]"
    );
    assert_eq!(
        codes(
            "[batch, 8, 8, 1]",
            "conv2d: {filters: 1, kernel_size: 3, padding: causal}"
        ),
        ["E0405"]
    );
}

#[test]
fn pooling_strides_default_to_pool_size() {
    assert_eq!(
        one("[batch, 8, 8, 16]", "max_pooling2d"),
        ("[batch, 4, 4, 16]".into(), 0)
    );
    assert_eq!(
        one("[batch, 7, 7, 16]", "max_pooling2d: {pool_size: 2}").0,
        "[batch, 3, 3, 16]"
    );
    assert_eq!(
        one(
            "[batch, 7, 7, 16]",
            "average_pooling2d: {pool_size: 2, padding: same}"
        )
        .0,
        "[batch, 4, 4, 16]"
    );
    assert_eq!(
        one(
            "[batch, 7, 7, 16]",
            "average_pooling2d: {pool_size: 3, strides: 1}"
        )
        .0,
        "[batch, 5, 5, 16]"
    );
    assert_eq!(
        one("[batch, 10, 3]", "max_pooling1d: {pool_size: 3}").0,
        "[batch, 3, 3]"
    );
    assert_eq!(
        one("[batch, seq, 3]", "max_pooling1d").0,
        "[batch, (seq - 2) // 2 + 1, 3]"
    );
    assert_eq!(codes("[batch, 1, 1, 3]", "max_pooling2d"), ["E0503"]);
    // Keras's average pooling has no default pool size (max pooling's is 2).
    assert_eq!(codes("[batch, 4, 3]", "average_pooling1d"), ["E0406"]);
    assert_eq!(codes("[batch, 4, 4, 4, 3]", "average_pooling3d"), ["E0406"]);
}

#[test]
fn global_pooling_drops_or_keeps_spatial_axes() {
    assert_eq!(
        one("[batch, h, w, 5]", "global_average_pooling2d").0,
        "[batch, 5]"
    );
    assert_eq!(
        one("[batch, h, w, 5]", "global_max_pooling2d: {keepdims: true}").0,
        "[batch, 1, 1, 5]"
    );
    assert_eq!(
        one("[batch, seq, 5]", "global_max_pooling1d").0,
        "[batch, 5]"
    );
    assert_eq!(
        one(
            "[batch, seq, 5]",
            "global_average_pooling1d: {keepdims: true}"
        )
        .0,
        "[batch, 1, 5]"
    );
    assert_eq!(codes("[batch, 5]", "global_average_pooling1d"), ["E0501"]);
}

#[test]
fn normalization_params_match_keras() {
    // BN: gamma, beta trainable; moving mean/variance not.
    let (s, p, t) = run("{x: [batch, 4, 4, 32]}", "  - batch_normalization");
    assert_eq!((s.as_str(), p, t), ("[batch, 4, 4, 32]", 128, 64));
    assert_eq!(
        run(
            "{x: [batch, 6, 3]}",
            "  - batch_normalization: {axis: 1, center: false}"
        )
        .1,
        18
    );
    assert_eq!(
        one("[batch, seq, 64]", "layer_normalization"),
        ("[batch, seq, 64]".into(), 128)
    );
    assert_eq!(
        one("[batch, 3, 5]", "layer_normalization: {axis: [1, 2]}").1,
        30
    );
    assert_eq!(
        codes("[batch, 4]", "batch_normalization: {axis: 3}"),
        ["E0508"]
    );
    assert_eq!(codes("[batch, seq]", "layer_normalization"), ["E0507"]);
}

#[test]
fn reshaping() {
    assert_eq!(one("[batch, 8, 8, 1]", "flatten").0, "[batch, 64]");
    assert_eq!(one("[batch, seq, 4]", "flatten").0, "[batch, 4*seq]");
    assert_eq!(
        one("[batch, 64]", "reshape: {target_shape: [8, 8, 1]}").0,
        "[batch, 8, 8, 1]"
    );
    assert_eq!(
        one("[batch, 64]", "reshape: {target_shape: [-1, 4]}").0,
        "[batch, 16, 4]"
    );
    assert_eq!(
        one("[batch, seq, 4]", "reshape: {target_shape: [-1, 2]}").0,
        "[batch, 2*seq, 2]"
    );
    assert_eq!(
        codes("[batch, 64]", "reshape: {target_shape: [7, -1]}"),
        ["E0506"]
    );
    assert_eq!(
        codes("[batch, 64]", "reshape: {target_shape: [8, 7]}"),
        ["E0506"]
    );
    assert_eq!(
        codes("[batch, 64]", "reshape: {target_shape: [-1, -1]}"),
        ["E0506"]
    );
    assert_eq!(
        one("[batch, 2, 3, 4]", "permute: {dims: [3, 1, 2]}").0,
        "[batch, 4, 2, 3]"
    );
    assert_eq!(codes("[batch, 2, 3]", "permute: {dims: [1, 3]}"), ["E0509"]);
}

#[test]
fn merges() {
    let two = "{a: [batch, s, 8], b: [batch, t, 8]}";
    assert_eq!(
        run(two, "  - concatenate: {inputs: [a, b], axis: 1}").0,
        "[batch, s + t, 8]"
    );
    assert_eq!(
        run(
            "{a: [batch, 3], b: [batch, 5]}",
            "  - concatenate: {inputs: [a, b]}"
        )
        .0,
        "[batch, 8]"
    );
    assert_eq!(
        run(
            "{a: [batch, 3], b: [batch, 3]}",
            "  - add: {inputs: [a, b]}"
        )
        .0,
        "[batch, 3]"
    );
    assert_eq!(
        run(
            "{a: [batch, 3], b: [batch, 1]}",
            "  - multiply: {inputs: [a, b]}"
        )
        .0,
        "[batch, 3]"
    );
    assert_eq!(
        run(
            "{a: [batch, 3], b: [batch, 3], c: [batch, 3]}",
            "  - add: {inputs: [a, b, c]}"
        )
        .0,
        "[batch, 3]"
    );
    assert_eq!(
        run(
            "{a: [batch, 3], b: [batch, 3]}",
            "  - subtract: {inputs: [a, b]}"
        )
        .0,
        "[batch, 3]"
    );
    // Two different symbols are never assumed equal.
    let e = kiln::Model::from_source(
        "inputs: {a: [batch, s], b: [batch, t]}\nlayers:\n  - add: {inputs: [a, b]}\n",
        "t",
        "t",
    )
    .unwrap_err();
    let kiln::Error::Spec(e) = e else { panic!() };
    assert_eq!(e.diagnostics[0].code, "E0504");
}

#[test]
fn recurrent_params_match_keras() {
    let u = 64;
    let i = 32;
    assert_eq!(
        one("[batch, seq, 32]", "simple_rnn: {units: 64}"),
        ("[batch, 64]".into(), u * (i + u) + u)
    );
    assert_eq!(
        one(
            "[batch, seq, 32]",
            "lstm: {units: 64, return_sequences: true}"
        ),
        ("[batch, seq, 64]".into(), 4 * (u * (i + u) + u))
    );
    assert_eq!(
        one("[batch, seq, 32]", "gru: {units: 64}").1,
        3 * u * (i + u) + 6 * u
    );
    assert_eq!(
        one("[batch, seq, 32]", "gru: {units: 64, reset_after: false}").1,
        3 * (u * (i + u) + u)
    );
    assert_eq!(codes("[batch, 32]", "lstm: {units: 4}"), ["E0501"]);
}

#[test]
fn multi_head_attention_matches_keras() {
    // q, k, v kernels [d, h, k] + biases [h, k]; output [h, v, d] + [d].
    let (d, h, k) = (64, 4, 16);
    let want = 3 * (d * h * k + h * k) + h * k * d + d;
    assert_eq!(
        run(
            "{x: [batch, seq, 64]}",
            "  - multi_head_attention: {num_heads: 4, key_dim: 16, inputs: [x, x]}"
        )
        .1,
        want
    );
    // Cross attention with a different value width and output_shape.
    let (s, p, _) = run(
        "{q: [batch, tq, 8], v: [batch, tv, 12]}",
        "  - multi_head_attention: {num_heads: 2, key_dim: 4, value_dim: 3, output_shape: 5, inputs: [q, v]}",
    );
    assert_eq!(s, "[batch, tq, 5]");
    assert_eq!(
        p,
        (8 * 2 * 4 + 8) + (12 * 2 * 4 + 8) + (12 * 2 * 3 + 6) + (2 * 3 * 5 + 5)
    );
    let e = kiln::Model::from_source(
        "inputs: {q: [batch, tq, 8], v: [batch, tv, 8], k: [batch, tk, 8]}\nlayers:\n  - multi_head_attention: {num_heads: 2, key_dim: 4, inputs: [q, v, k]}\n",
        "t",
        "t",
    )
    .unwrap_err();
    let kiln::Error::Spec(e) = e else { panic!() };
    assert_eq!(e.diagnostics[0].code, "E0511");
}

#[test]
fn weight_keys_follow_keras() {
    let src = "inputs: {x: [batch, seq, 8]}\nlayers:\n  - lstm: {units: 4, return_sequences: true}\n  - multi_head_attention: {num_heads: 2, key_dim: 3, inputs: [lstm, lstm]}\n  - batch_normalization\n";
    let m = kiln::Model::from_source(src, "t", "t").unwrap();
    let keys: Vec<String> = m
        .graph
        .layers
        .iter()
        .flat_map(|l| {
            l.params
                .iter()
                .map(move |p| format!("{}/{} {:?}", l.name, p.name, p.shape))
        })
        .collect();
    assert_eq!(
        keys,
        [
            "lstm/lstm_cell/kernel [8, 16]",
            "lstm/lstm_cell/recurrent_kernel [4, 16]",
            "lstm/lstm_cell/bias [16]",
            "multi_head_attention/query/kernel [4, 2, 3]",
            "multi_head_attention/query/bias [2, 3]",
            "multi_head_attention/key/kernel [4, 2, 3]",
            "multi_head_attention/key/bias [2, 3]",
            "multi_head_attention/value/kernel [4, 2, 3]",
            "multi_head_attention/value/bias [2, 3]",
            "multi_head_attention/attention_output/kernel [2, 3, 4]",
            "multi_head_attention/attention_output/bias [4]",
            "batch_normalization/gamma [4]",
            "batch_normalization/beta [4]",
            "batch_normalization/moving_mean [4]",
            "batch_normalization/moving_variance [4]",
        ]
    );
}

#[test]
fn automatic_names_follow_keras_and_skip_taken_ones() {
    let src = "inputs: {x: [batch, 4]}\nlayers:\n  - dense: {units: 4}\n  - dense: {units: 4, name: dense_1}\n  - dense: {units: 4}\n  - relu\n";
    let m = kiln::Model::from_source(src, "t", "t").unwrap();
    let names: Vec<&str> = m.graph.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["dense", "dense_1", "dense_2", "relu"]);
}
