//! Issue 15, spatial layers in full generality: the 3-D convolution, pooling, global
//! pooling, up-sampling, padding and cropping layers, and Keras's `data_format:
//! channels_first` on every layer that has it. Shapes, weight keys and parameter counts
//! against Keras's (the expected values are what Keras 3.15 builds for the same layer),
//! channels_first against channels_last on the transposed input, gradients against
//! finite differences and the JIT against the interpreter; values and one training step
//! against Keras itself are the `conv_3d` and `conv_channels_first` golden cases.

use crate::common;

use common::{Rng, failing_codes, fd_check, last_layer, model, stack_values as values};
use kiln::dim::fmt_shape;
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

/// The last layer's output shape, parameter count and `key shape` list.
fn built(input: &str, layer: &str) -> (String, i64, String) {
    last_layer(&model(&format!("{{x: {input}}}"), &format!("  - {layer}")))
}

/// The diagnostic codes of a one-layer spec that must fail.
fn codes(input: &str, layer: &str) -> Vec<&'static str> {
    failing_codes(&format!("inputs: {{x: {input}}}\nlayers:\n  - {layer}\n"))
}

/// One case a line: input | layer | Keras's output shape without the batch | Keras's
/// parameter count | Keras's weights, as Keras 3.15 builds the same layer on the same
/// input.
pub(crate) const KERAS_CASES: &str = "\
[batch, 5, 6, 7, 2] | conv3d: {filters: 4, kernel_size: 3} | 3, 4, 5, 4 | 220 | kernel [3, 3, 3, 2, 4], bias [4]
[batch, 5, 6, 7, 2] | conv3d: {filters: 3, kernel_size: [2, 3, 1], strides: [2, 1, 3], padding: same} | 3, 6, 3, 3 | 39 | kernel [2, 3, 1, 2, 3], bias [3]
[batch, 7, 6, 5, 2] | conv3d: {filters: 2, kernel_size: 2, dilation_rate: [3, 2, 1], use_bias: false} | 4, 4, 4, 2 | 32 | kernel [2, 2, 2, 2, 2]
[batch, 6, 6, 6, 4] | conv3d: {filters: 4, kernel_size: 1, groups: 2} | 6, 6, 6, 4 | 12 | kernel [1, 1, 1, 2, 4], bias [4]
[batch, 3, 4, 5, 2] | conv3d_transpose: {filters: 2, kernel_size: 3, strides: 2, padding: same} | 6, 8, 10, 2 | 110 | kernel [3, 3, 3, 2, 2], bias [2]
[batch, 3, 4, 5, 2] | conv3d_transpose: {filters: 3, kernel_size: [2, 3, 1], strides: [1, 2, 3], output_padding: [0, 1, 2]} | 4, 10, 15, 3 | 39 | kernel [2, 3, 1, 3, 2], bias [3]
[batch, 4, 5, 6, 2] | max_pooling3d | 2, 2, 3, 2 | 0 | 
[batch, 4, 5, 6, 2] | max_pooling3d: {pool_size: [1, 2, 3], strides: [1, 1, 2], padding: same} | 4, 5, 3, 2 | 0 | 
[batch, 4, 5, 6, 2] | average_pooling3d: {pool_size: [2, 3, 2], strides: 1, padding: same} | 4, 5, 6, 2 | 0 | 
[batch, 4, 5, 6, 2] | average_pooling3d: {pool_size: 2} | 2, 2, 3, 2 | 0 | 
[batch, 4, 5, 6, 2] | global_max_pooling3d | 2 | 0 | 
[batch, 4, 5, 6, 2] | global_average_pooling3d: {keepdims: true} | 1, 1, 1, 2 | 0 | 
[batch, 2, 3, 4, 2] | up_sampling3d | 4, 6, 8, 2 | 0 | 
[batch, 2, 3, 4, 2] | up_sampling3d: {size: [1, 2, 3]} | 2, 6, 12, 2 | 0 | 
[batch, 2, 3, 4, 2] | zero_padding3d | 4, 5, 6, 2 | 0 | 
[batch, 2, 3, 4, 2] | zero_padding3d: {padding: [[1, 0], [2, 1], [0, 3]]} | 3, 6, 7, 2 | 0 | 
[batch, 2, 3, 4, 2] | zero_padding3d: {padding: [1, 2, 3]} | 4, 7, 10, 2 | 0 | 
[batch, 4, 5, 6, 2] | cropping3d | 2, 3, 4, 2 | 0 | 
[batch, 4, 5, 6, 2] | cropping3d: {cropping: [[1, 0], [2, 1], [0, 1]]} | 3, 2, 5, 2 | 0 | 
[batch, 4, 5, 6, 2] | cropping3d: {cropping: [1, 2, 0]} | 2, 1, 6, 2 | 0 | 
[batch, 3, 7] | conv1d: {filters: 4, kernel_size: 3, data_format: channels_first} | 4, 5 | 40 | kernel [3, 3, 4], bias [4]
[batch, 3, 7] | conv1d: {filters: 2, kernel_size: 3, padding: causal, dilation_rate: 2, data_format: channels_first} | 2, 7 | 20 | kernel [3, 3, 2], bias [2]
[batch, 3, 8, 9] | conv2d: {filters: 4, kernel_size: 3, strides: 2, padding: same, data_format: channels_first} | 4, 4, 5 | 112 | kernel [3, 3, 3, 4], bias [4]
[batch, 2, 5, 6, 7] | conv3d: {filters: 3, kernel_size: [3, 2, 2], data_format: channels_first} | 3, 3, 5, 6 | 75 | kernel [3, 2, 2, 2, 3], bias [3]
[batch, 3, 7] | depthwise_conv1d: {kernel_size: 3, depth_multiplier: 2, data_format: channels_first} | 6, 5 | 24 | kernel [3, 3, 2], bias [6]
[batch, 3, 6, 5] | depthwise_conv2d: {kernel_size: 3, data_format: channels_first} | 3, 4, 3 | 30 | kernel [3, 3, 3, 1], bias [3]
[batch, 3, 7] | separable_conv1d: {filters: 5, kernel_size: 3, padding: same, data_format: channels_first} | 5, 7 | 29 | depthwise_kernel [3, 3, 1], pointwise_kernel [1, 3, 5], bias [5]
[batch, 3, 6, 5] | separable_conv2d: {filters: 4, kernel_size: 3, depth_multiplier: 2, data_format: channels_first} | 4, 4, 3 | 82 | depthwise_kernel [3, 3, 3, 2], pointwise_kernel [1, 1, 6, 4], bias [4]
[batch, 3, 7] | conv1d_transpose: {filters: 4, kernel_size: 3, strides: 2, data_format: channels_first} | 4, 15 | 40 | kernel [3, 4, 3], bias [4]
[batch, 3, 5, 6] | conv2d_transpose: {filters: 4, kernel_size: 3, strides: 2, padding: same, data_format: channels_first} | 4, 10, 12 | 112 | kernel [3, 3, 4, 3], bias [4]
[batch, 2, 3, 4, 5] | conv3d_transpose: {filters: 3, kernel_size: 2, strides: 2, data_format: channels_first} | 3, 6, 8, 10 | 51 | kernel [2, 2, 2, 3, 2], bias [3]
[batch, 3, 7] | max_pooling1d: {data_format: channels_first} | 3, 3 | 0 | 
[batch, 3, 7] | average_pooling1d: {pool_size: 3, strides: 2, padding: same, data_format: channels_first} | 3, 4 | 0 | 
[batch, 3, 6, 7] | max_pooling2d: {pool_size: [2, 3], data_format: channels_first} | 3, 3, 2 | 0 | 
[batch, 3, 6, 7] | average_pooling2d: {pool_size: 2, padding: same, data_format: channels_first} | 3, 3, 4 | 0 | 
[batch, 2, 4, 5, 6] | max_pooling3d: {data_format: channels_first} | 2, 2, 2, 3 | 0 | 
[batch, 2, 4, 5, 6] | average_pooling3d: {pool_size: [1, 2, 3], data_format: channels_first} | 2, 4, 2, 2 | 0 | 
[batch, 3, 7] | global_average_pooling1d: {data_format: channels_first} | 3 | 0 | 
[batch, 3, 7] | global_max_pooling1d: {data_format: channels_first, keepdims: true} | 3, 1 | 0 | 
[batch, 3, 6, 7] | global_average_pooling2d: {data_format: channels_first, keepdims: true} | 3, 1, 1 | 0 | 
[batch, 3, 6, 7] | global_max_pooling2d: {data_format: channels_first} | 3 | 0 | 
[batch, 2, 4, 5, 6] | global_average_pooling3d: {data_format: channels_first, keepdims: true} | 2, 1, 1, 1 | 0 | 
[batch, 2, 4, 5, 6] | global_max_pooling3d: {data_format: channels_first} | 2 | 0 | 
[batch, 3, 6, 7] | flatten: {data_format: channels_first} | 126 | 0 | 
[batch, 3, 6, 7] | up_sampling2d: {size: [2, 3], data_format: channels_first, interpolation: bilinear} | 3, 12, 21 | 0 | 
[batch, 2, 2, 3, 4] | up_sampling3d: {size: [2, 1, 3], data_format: channels_first} | 2, 4, 3, 12 | 0 | 
[batch, 3, 7] | zero_padding1d: {padding: [1, 2], data_format: channels_first} | 3, 10 | 0 | 
[batch, 3, 6, 7] | zero_padding2d: {padding: [[1, 2], [0, 3]], data_format: channels_first} | 3, 9, 10 | 0 | 
[batch, 2, 2, 3, 4] | zero_padding3d: {padding: [1, 0, 2], data_format: channels_first} | 2, 4, 3, 8 | 0 | 
[batch, 3, 6, 7] | cropping2d: {cropping: [[1, 2], [0, 3]], data_format: channels_first} | 3, 3, 4 | 0 | 
[batch, 2, 4, 5, 6] | cropping3d: {cropping: [[1, 0], [2, 1], [0, 1]], data_format: channels_first} | 2, 3, 2, 5 | 0 | ";

/// The cases of a `|`-separated table.
fn keras_cases() -> impl Iterator<Item = [&'static str; 5]> {
    KERAS_CASES.lines().map(|l| {
        let f: Vec<&str> = l.split(" | ").map(str::trim).collect();
        [f[0], f[1], f[2], f[3], f.get(4).copied().unwrap_or("")]
    })
}

#[test]
fn shapes_weights_and_counts_match_keras() {
    for [input, layer, shape, count, keys] in keras_cases() {
        let got = built(input, layer);
        let want = (
            format!("[batch, {shape}]"),
            count.parse().unwrap(),
            keys.to_string(),
        );
        assert_eq!(got, want, "{input} {layer}");
    }
}

#[test]
fn symbolic_lengths_keep_exact_forms() {
    let cases = [
        (
            "[batch, seq, 4, 5, 2]",
            "conv3d: {filters: 2, kernel_size: 3}",
            "[batch, seq - 2, 2, 3, 2]",
        ),
        (
            "[batch, seq, 4, 5, 2]",
            "max_pooling3d",
            "[batch, (seq - 2) // 2 + 1, 2, 2, 2]",
        ),
        (
            "[batch, 2, seq]",
            "conv1d: {filters: 3, kernel_size: 3, data_format: channels_first}",
            "[batch, 3, seq - 2]",
        ),
        (
            "[batch, 2, seq]",
            "up_sampling1d: {size: 3}",
            "[batch, 6, seq]",
        ),
        (
            "[batch, 2, seq, 3]",
            "zero_padding2d: {padding: [1, 2], data_format: channels_first}",
            "[batch, 2, seq + 2, 7]",
        ),
    ];
    for (input, layer, want) in cases {
        assert_eq!(built(input, layer).0, want, "{layer}");
    }
}

#[test]
fn refusals_are_diagnostics() {
    let vol = "[batch, 4, 5, 6, 2]";
    assert_eq!(
        codes("[batch, 5, 6, 2]", "conv3d: {filters: 2, kernel_size: 3}"),
        ["E0501"]
    );
    assert_eq!(
        codes(vol, "conv3d: {filters: 2, kernel_size: 5}"),
        ["E0503"]
    );
    assert_eq!(
        codes(
            vol,
            "conv3d: {filters: 2, kernel_size: 2, strides: 2, dilation_rate: 2}"
        ),
        ["E0514"]
    );
    assert_eq!(
        codes(vol, "conv3d: {filters: 2, kernel_size: [2, 2]}"),
        ["E0404"]
    );
    assert_eq!(codes(vol, "cropping3d: {cropping: [2, 1, 0]}"), ["E0404"]);
    assert_eq!(
        codes(vol, "cropping3d: {cropping: [[1, 1], 0, 1]}"),
        ["E0403"]
    );
    assert_eq!(codes(vol, "zero_padding3d: {padding: [1, 2]}"), ["E0403"]);
    assert_eq!(
        codes(vol, "up_sampling3d: {interpolation: bilinear}"),
        ["E0401"]
    );
    assert_eq!(
        codes(
            "[batch, 3, 7]",
            "conv1d: {filters: 2, kernel_size: 3, data_format: nchw}"
        ),
        ["E0405"]
    );
    // channels_first reads the channel axis at 1: a symbolic one cannot size a kernel.
    assert_eq!(
        codes(
            "[batch, seq, 7]",
            "conv1d: {filters: 2, kernel_size: 3, data_format: channels_first}"
        ),
        ["E0507"]
    );
    // Cropping1D has no data_format in Keras: said to be channels_last only.
    assert_eq!(
        codes("[batch, 3, 7]", "cropping1d: {data_format: channels_first}"),
        ["E0402"]
    );
}

/// The layers of issue 15 as small stacks, each ending in the layer under test.
const STACKS: &[(&str, &str)] = &[
    (
        "{x: [batch, 3, 4, 3, 2]}",
        "  - conv3d: {filters: 2, kernel_size: 2, padding: same, activation: tanh}",
    ),
    (
        "{x: [batch, 4, 3, 5, 2]}",
        "  - conv3d: {filters: 3, kernel_size: [2, 1, 3], strides: [2, 1, 2]}",
    ),
    (
        "{x: [batch, 2, 3, 2, 2]}",
        "  - conv3d_transpose: {filters: 2, kernel_size: 2, strides: 2, padding: same}",
    ),
    (
        "{x: [batch, 4, 4, 3, 2]}",
        "  - max_pooling3d: {pool_size: 2, padding: same}",
    ),
    (
        "{x: [batch, 4, 3, 4, 2]}",
        "  - average_pooling3d: {pool_size: [2, 1, 2], strides: 1, padding: same}",
    ),
    ("{x: [batch, 3, 2, 4, 2]}", "  - global_max_pooling3d"),
    (
        "{x: [batch, 3, 2, 4, 2]}",
        "  - global_average_pooling3d: {keepdims: true}",
    ),
    (
        "{x: [batch, 2, 3, 2, 2]}",
        "  - up_sampling3d: {size: [2, 1, 3]}\n  - zero_padding3d: {padding: [[1, 0], [0, 2], [1, 1]]}\n  - cropping3d: {cropping: [[0, 1], [1, 1], [2, 0]]}",
    ),
    (
        "{x: [batch, 2, 6, 5]}",
        "  - conv2d: {filters: 3, kernel_size: 3, padding: same, data_format: channels_first}\n  - max_pooling2d: {data_format: channels_first}\n  - flatten: {data_format: channels_first}\n  - dense: {units: 2}",
    ),
    (
        "{x: [batch, 3, seq]}",
        "  - conv1d: {filters: 2, kernel_size: 2, padding: causal, data_format: channels_first}\n  - global_average_pooling1d: {data_format: channels_first}",
    ),
    (
        "{x: [batch, 2, 3, 4]}",
        "  - up_sampling2d: {size: 2, interpolation: bilinear, data_format: channels_first}\n  - zero_padding2d: {padding: [[1, 0], [2, 1]], data_format: channels_first}\n  - cropping2d: {cropping: [[0, 2], [1, 1]], data_format: channels_first}",
    ),
    (
        "{x: [batch, 2, 4, 3, 4]}",
        "  - conv3d: {filters: 2, kernel_size: 2, data_format: channels_first}\n  - average_pooling3d: {pool_size: [1, 2, 2], padding: same, data_format: channels_first}",
    ),
    (
        "{x: [batch, 2, 5, 4]}",
        "  - depthwise_conv2d: {kernel_size: 2, depth_multiplier: 2, data_format: channels_first}\n  - global_max_pooling2d: {data_format: channels_first, keepdims: true}",
    ),
    (
        "{x: [batch, 3, 6]}",
        "  - separable_conv1d: {filters: 2, kernel_size: 3, strides: 2, data_format: channels_first}",
    ),
    (
        "{x: [batch, 2, 3, 3]}",
        "  - conv2d_transpose: {filters: 2, kernel_size: 3, strides: 2, data_format: channels_first}",
    ),
];

#[test]
fn gradients_match_finite_differences() {
    for &(inputs, layers) in STACKS {
        let m = model(inputs, layers);
        let mut rng = Rng::new(layers.len() as u64);
        let lw =
            lower::forward(&m.graph, Mode::Train, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
        let out = lw.f.outputs[0].1;
        let (vals, diff) = values(&lw.f, &mut rng, 2, 4);
        fd_check(layers, &lw.f, out, &vals, &diff, &mut rng);
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
        common::compiled_matches_interpreted(inputs, layers, (&shape, ""), &[(1, 3), (19, 5)]);
    }
}

/// A channels_first layer computes exactly its channels_last counterpart on the input
/// with the channel axis moved last, its output's channel axis moved back: the same
/// weights (Keras's layouts do not depend on `data_format`), the same values.
#[test]
fn channels_first_is_channels_last_transposed() {
    let cases = [
        (
            "[batch, 3, 6, 5]",
            "conv2d: {filters: 2, kernel_size: 3, strides: 2, padding: same, DF}",
        ),
        (
            "[batch, 2, 4, 3, 5]",
            "conv3d: {filters: 3, kernel_size: [2, 1, 2], DF}",
        ),
        (
            "[batch, 3, 7]",
            "separable_conv1d: {filters: 2, kernel_size: 3, depth_multiplier: 2, DF}",
        ),
        (
            "[batch, 2, 3, 4]",
            "conv2d_transpose: {filters: 3, kernel_size: 2, strides: 2, DF}",
        ),
        (
            "[batch, 3, 4, 5, 4]",
            "max_pooling3d: {pool_size: [1, 2, 2], DF}",
        ),
        (
            "[batch, 3, 7]",
            "average_pooling1d: {pool_size: 3, padding: same, DF}",
        ),
        (
            "[batch, 3, 4, 5]",
            "global_average_pooling2d: {keepdims: true, DF}",
        ),
        ("[batch, 3, 4, 5]", "flatten: {DF}"),
        (
            "[batch, 3, 4, 5]",
            "up_sampling2d: {size: [2, 1], interpolation: bilinear, DF}",
        ),
        (
            "[batch, 2, 2, 3, 4]",
            "zero_padding3d: {padding: [[1, 0], [0, 2], [1, 1]], DF}",
        ),
        (
            "[batch, 2, 4, 3, 4]",
            "cropping3d: {cropping: [[1, 0], [0, 1], [1, 2]], DF}",
        ),
    ];
    let opts = kiln::Options {
        backend: kiln::Backend::Interp,
        ..kiln::Options::default()
    };
    let mut rng = Rng::new(3);
    for (input, layer) in cases {
        let first = model(
            &format!("{{x: {input}}}"),
            &format!("  - {}", layer.replace("DF", "data_format: channels_first")),
        );
        let rank = first.graph.layers[0].output.rank();
        let dims: Vec<String> = input
            .trim_matches(['[', ']'])
            .split(", ")
            .map(String::from)
            .collect();
        let mut last_dims = vec![dims[0].clone()];
        last_dims.extend(dims[2..].iter().cloned());
        last_dims.push(dims[1].clone());
        let last = model(
            &format!("{{x: [{}]}}", last_dims.join(", ")),
            &format!("  - {}", layer.replace(", DF", "").replace("DF", "")),
        );
        let mut a = first.compile(&opts).unwrap();
        let b_net = last.compile(&opts).unwrap();
        // The same weights in both.
        a.set_weights(b_net.weights().clone()).unwrap();
        let mut shape: Vec<usize> = vec![2];
        shape.extend(dims[1..].iter().map(|d| d.parse::<usize>().unwrap()));
        let x = rng.array(&shape, -1.0, 1.0).mapv(|v| v as f32);
        let mut perm: Vec<usize> = vec![0];
        perm.extend(2..shape.len());
        perm.push(1);
        let xl = x
            .clone()
            .permuted_axes(perm)
            .as_standard_layout()
            .to_owned();
        let ya = a.predict(&[("x", x.view())]).unwrap();
        let yb = b_net.predict(&[("x", xl.view())]).unwrap();
        let yb = if yb.ndim() == rank && rank > 2 {
            let mut back = vec![0, rank - 1];
            back.extend(1..rank - 1);
            yb.permuted_axes(back).as_standard_layout().to_owned()
        } else {
            yb
        };
        assert_eq!(ya.shape(), yb.shape(), "{layer}");
        for (p, q) in ya.iter().zip(yb.iter()) {
            assert!(
                (p - q).abs() <= 1e-6 * q.abs().max(1.0),
                "{layer}: {p} vs {q}"
            );
        }
    }
}

/// Seeded images and labels for a bundled spec's first input and its label target.
fn labelled(rng: &mut Rng, shape: &[usize], classes: usize) -> (ArrayD<f32>, ArrayD<f32>) {
    let n = shape[0];
    let labels = ArrayD::from_shape_fn(IxDyn(&[n]), |i| (i[0] % classes) as f32);
    // Each class brightens its own band of the input, so the labels are learnable.
    let per: usize = shape[1..].iter().product();
    let x = ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let flat = (1..shape.len()).fold(0, |acc, a| acc * shape[a] + i[a]);
        let class = i[0] % classes;
        let band = usize::from(flat * classes / per == class);
        (band as f64 + 0.3 * rng.range(-1.0, 1.0)) as f32
    });
    (x, labels)
}

/// The bundled channels_first CNN and 3-D CNN check with Keras's parameter counts and
/// shapes (printed by Keras 3.15 for the same models), and a few training steps lower
/// their loss.
#[test]
fn bundled_channels_first_and_conv3d_specs_train() {
    let cases: [(&str, i64, &[&str], usize); 2] = [
        (
            "nchw_cnn",
            3962,
            &[
                "[batch, 8, 16, 16]",
                "[batch, 8, 8, 8]",
                "[batch, 16, 8, 8]",
                "[batch, 16, 4, 4]",
                "[batch, 256]",
                "[batch, 10]",
            ],
            10,
        ),
        (
            "video_conv3d",
            3764,
            &[
                "[batch, 6, 12, 12, 8]",
                "[batch, 6, 6, 6, 8]",
                "[batch, 4, 4, 4, 16]",
                "[batch, 16]",
                "[batch, 4]",
            ],
            4,
        ),
    ];
    for (name, params, shapes, classes) in cases {
        let path = format!("{}/specs/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let m = kiln::Model::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
        let total: i64 = m
            .graph
            .layers
            .iter()
            .flat_map(|l| l.params.iter().map(|p| p.count()))
            .sum();
        assert_eq!(total, params, "{name}: Keras's Total params");
        let got: Vec<String> = m
            .graph
            .layers
            .iter()
            .map(|l| fmt_shape(&l.output.shape))
            .collect();
        assert_eq!(got, shapes, "{name}");
        let input = &m.graph.inputs[0];
        let mut shape = vec![16];
        shape.extend(
            input.ty.shape[1..]
                .iter()
                .map(|d| d.as_const().unwrap() as usize),
        );
        let mut net = m.compile(&kiln::Options::default()).unwrap();
        let mut rng = Rng::new(9);
        let (x, y) = labelled(&mut rng, &shape, classes);
        let mut losses = Vec::new();
        for _ in 0..6 {
            let out = net
                .train_on_batch(&[(input.name.as_str(), x.view())], &[("label", y.view())])
                .unwrap();
            assert!(out.loss.is_finite(), "{name}: {losses:?}");
            losses.push(out.loss);
        }
        assert!(
            losses[5] < losses[0],
            "{name}: the loss did not fall: {losses:?}"
        );
    }
}
