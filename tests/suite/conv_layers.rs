//! The convolution family and the spatial resampling layers (issue 10 item 3):
//! transposed, depthwise and separable convolutions, dilation, up-sampling (nearest and
//! bilinear), zero padding and cropping. Shapes, weight keys and parameter counts
//! against Keras's (the expected values are what Keras 3.15 builds for the same layer),
//! gradients against finite differences, the JIT against the interpreter, and the
//! bundled convolutional autoencoder trained a few steps.

use crate::common;

use common::{
    Rng, compare_jit, failing_codes, fd_check, last_layer, model, stack_values as values,
};
use kiln::dim::fmt_shape;
use kiln::ir::{ConvAttrs, Func, Op, Padding, Type, passes};
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

/// (input, layer, Keras's output shape without the batch, Keras's parameter count,
/// Keras's weights).
const KERAS_CASES: &[(&str, &str, &str, i64, &str)] = &[
    (
        "[batch, 7, 3]",
        "conv1d_transpose: {filters: 4, kernel_size: 3}",
        "9, 4",
        40,
        "kernel [3, 4, 3], bias [4]",
    ),
    (
        "[batch, 7, 3]",
        "conv1d_transpose: {filters: 4, kernel_size: 3, strides: 2, padding: same}",
        "14, 4",
        40,
        "kernel [3, 4, 3], bias [4]",
    ),
    (
        "[batch, 7, 3]",
        "conv1d_transpose: {filters: 4, kernel_size: 2, strides: 3}",
        "21, 4",
        28,
        "kernel [2, 4, 3], bias [4]",
    ),
    (
        "[batch, 7, 3]",
        "conv1d_transpose: {filters: 4, kernel_size: 3, strides: 2, output_padding: 1}",
        "16, 4",
        40,
        "kernel [3, 4, 3], bias [4]",
    ),
    (
        "[batch, 7, 3]",
        "conv1d_transpose: {filters: 4, kernel_size: 4, strides: 2, padding: same, output_padding: 1}",
        "13, 4",
        52,
        "kernel [4, 4, 3], bias [4]",
    ),
    (
        "[batch, 7, 3]",
        "conv1d_transpose: {filters: 2, kernel_size: 3, dilation_rate: 2, padding: same, use_bias: false}",
        "7, 2",
        18,
        "kernel [3, 2, 3]",
    ),
    (
        "[batch, 5, 6, 3]",
        "conv2d_transpose: {filters: 4, kernel_size: 3, strides: 2, padding: same}",
        "10, 12, 4",
        112,
        "kernel [3, 3, 4, 3], bias [4]",
    ),
    (
        "[batch, 5, 6, 3]",
        "conv2d_transpose: {filters: 4, kernel_size: [2, 3], strides: [2, 1]}",
        "10, 8, 4",
        76,
        "kernel [2, 3, 4, 3], bias [4]",
    ),
    (
        "[batch, 5, 6, 3]",
        "conv2d_transpose: {filters: 2, kernel_size: 3, strides: 2, output_padding: [1, 0]}",
        "12, 13, 2",
        56,
        "kernel [3, 3, 2, 3], bias [2]",
    ),
    (
        "[batch, 7, 3]",
        "depthwise_conv1d: {kernel_size: 3, depth_multiplier: 2}",
        "5, 6",
        24,
        "kernel [3, 3, 2], bias [6]",
    ),
    (
        "[batch, 6, 5, 3]",
        "depthwise_conv2d: {kernel_size: 3, strides: 2, padding: same}",
        "3, 3, 3",
        30,
        "kernel [3, 3, 3, 1], bias [3]",
    ),
    (
        "[batch, 6, 5, 3]",
        "depthwise_conv2d: {kernel_size: [2, 3], dilation_rate: 2, depth_multiplier: 3, use_bias: false}",
        "4, 1, 9",
        54,
        "kernel [2, 3, 3, 3]",
    ),
    (
        "[batch, 7, 3]",
        "separable_conv1d: {filters: 5, kernel_size: 3, padding: same, depth_multiplier: 2}",
        "7, 5",
        53,
        "depthwise_kernel [3, 3, 2], pointwise_kernel [1, 6, 5], bias [5]",
    ),
    (
        "[batch, 6, 5, 3]",
        "separable_conv2d: {filters: 4, kernel_size: 3, strides: 2}",
        "2, 2, 4",
        43,
        "depthwise_kernel [3, 3, 3, 1], pointwise_kernel [1, 1, 3, 4], bias [4]",
    ),
    ("[batch, 7, 3]", "up_sampling1d: {size: 3}", "21, 3", 0, ""),
    (
        "[batch, 4, 5, 3]",
        "up_sampling2d: {size: [2, 3], interpolation: bilinear}",
        "8, 15, 3",
        0,
        "",
    ),
    (
        "[batch, 7, 3]",
        "zero_padding1d: {padding: [1, 2]}",
        "10, 3",
        0,
        "",
    ),
    (
        "[batch, 4, 5, 3]",
        "zero_padding2d: {padding: [[1, 2], [0, 3]]}",
        "7, 8, 3",
        0,
        "",
    ),
    (
        "[batch, 4, 5, 3]",
        "zero_padding2d: {padding: [1, 2]}",
        "6, 9, 3",
        0,
        "",
    ),
    (
        "[batch, 7, 3]",
        "cropping1d: {cropping: [1, 2]}",
        "4, 3",
        0,
        "",
    ),
    (
        "[batch, 6, 5, 3]",
        "cropping2d: {cropping: [[1, 2], [0, 3]]}",
        "3, 2, 3",
        0,
        "",
    ),
    (
        "[batch, 6, 5, 3]",
        "cropping2d: {cropping: [2, 1]}",
        "2, 3, 3",
        0,
        "",
    ),
    (
        "[batch, 9, 9, 2]",
        "conv2d: {filters: 3, kernel_size: 3, dilation_rate: [2, 3]}",
        "5, 3, 3",
        57,
        "kernel [3, 3, 2, 3], bias [3]",
    ),
];

#[test]
fn shapes_weights_and_counts_match_keras() {
    for &(input, layer, shape, count, keys) in KERAS_CASES {
        let got = built(input, layer);
        let want = (format!("[batch, {shape}]"), count, keys.to_string());
        assert_eq!(got, want, "{layer}");
    }
}

#[test]
fn defaults_are_keras_defaults() {
    // ZeroPadding1D(padding=1), ZeroPadding2D(padding=(1, 1)), Cropping1D((1, 1)),
    // Cropping2D(((0, 0), (0, 0))), UpSampling1D(2), UpSampling2D((2, 2)).
    let cases = [
        ("[batch, 7, 3]", "zero_padding1d", "[batch, 9, 3]"),
        ("[batch, 4, 5, 3]", "zero_padding2d", "[batch, 6, 7, 3]"),
        ("[batch, 7, 3]", "cropping1d", "[batch, 5, 3]"),
        ("[batch, 4, 5, 3]", "cropping2d", "[batch, 4, 5, 3]"),
        ("[batch, 7, 3]", "up_sampling1d", "[batch, 14, 3]"),
        ("[batch, 4, 5, 3]", "up_sampling2d", "[batch, 8, 10, 3]"),
        (
            "[batch, 4, 5, 3]",
            "zero_padding2d: {padding: 2}",
            "[batch, 8, 9, 3]",
        ),
    ];
    for (input, layer, want) in cases {
        assert_eq!(built(input, layer).0, want, "{layer}");
    }
}

#[test]
fn symbolic_lengths_keep_exact_forms() {
    let cases = [
        (
            "conv1d_transpose: {filters: 2, kernel_size: 3, strides: 2, padding: same}",
            "[batch, 2*seq, 2]",
        ),
        (
            "conv1d_transpose: {filters: 2, kernel_size: 5, strides: 2}",
            "[batch, 2*seq + 3, 2]",
        ),
        ("up_sampling1d: {size: 3}", "[batch, 3*seq, 3]"),
        ("cropping1d: {cropping: [1, 2]}", "[batch, seq - 3, 3]"),
        ("zero_padding1d: {padding: 2}", "[batch, seq + 4, 3]"),
        ("depthwise_conv1d: {kernel_size: 3}", "[batch, seq - 2, 3]"),
    ];
    for (layer, want) in cases {
        assert_eq!(built("[batch, seq, 3]", layer).0, want, "{layer}");
    }
}

#[test]
fn keras_refusals_are_diagnostics() {
    let img = "[batch, 6, 5, 3]";
    assert_eq!(
        codes(
            "[batch, 7, 3]",
            "conv1d_transpose: {filters: 2, kernel_size: 3, strides: 2, output_padding: 2}"
        ),
        ["E0404"]
    );
    assert_eq!(
        codes(
            img,
            "conv2d_transpose: {filters: 2, kernel_size: 3, strides: 2, dilation_rate: 2}"
        ),
        ["E0514"]
    );
    assert_eq!(
        codes(
            img,
            "depthwise_conv2d: {kernel_size: 3, strides: 2, dilation_rate: 2}"
        ),
        ["E0514"]
    );
    assert_eq!(
        codes(
            "[batch, 7, 3]",
            "depthwise_conv1d: {kernel_size: 3, padding: causal}"
        ),
        ["E0405"]
    );
    assert_eq!(
        codes(img, "up_sampling2d: {interpolation: bicubic}"),
        ["E0405"]
    );
    assert_eq!(codes(img, "cropping2d: {cropping: [[3, 3], 0]}"), ["E0403"]);
    assert_eq!(codes(img, "cropping2d: {cropping: [3, 1]}"), ["E0404"]);
    assert_eq!(
        codes("[batch, 7, 3]", "cropping1d: {cropping: 4}"),
        ["E0404"]
    );
    assert_eq!(
        codes("[batch, 7, 3]", "zero_padding1d: {padding: [1, 2, 3]}"),
        ["E0403"]
    );
    assert_eq!(
        codes("[batch, 7, 3]", "zero_padding1d: {padding: -1}"),
        ["E0404"]
    );
    assert_eq!(codes("[batch, 7, 3]", "up_sampling2d"), ["E0501"]);
    assert_eq!(
        codes(
            "[batch, 7, seq]",
            "separable_conv1d: {filters: 2, kernel_size: 3}"
        ),
        ["E0507"]
    );
}

/// The layers of this family as small stacks, each ending in the layer under test.
const STACKS: &[(&str, &str)] = &[
    (
        "{x: [batch, 5, 2]}",
        "  - conv1d_transpose: {filters: 3, kernel_size: 3, strides: 2, padding: same, activation: tanh}",
    ),
    (
        "{x: [batch, 4, 2]}",
        "  - conv1d_transpose: {filters: 2, kernel_size: 2, strides: 3, output_padding: 2}",
    ),
    (
        "{x: [batch, seq, 2]}",
        "  - conv1d_transpose: {filters: 2, kernel_size: 3, dilation_rate: 2, padding: same}",
    ),
    (
        "{x: [batch, 3, 4, 2]}",
        "  - conv2d_transpose: {filters: 2, kernel_size: 3, strides: 2, padding: same}",
    ),
    (
        "{x: [batch, 3, 3, 2]}",
        "  - conv2d_transpose: {filters: 3, kernel_size: [2, 4], strides: [2, 1], output_padding: [1, 0], padding: same}",
    ),
    (
        "{x: [batch, 6, 3]}",
        "  - depthwise_conv1d: {kernel_size: 3, depth_multiplier: 2, padding: same}",
    ),
    (
        "{x: [batch, 5, 6, 2]}",
        "  - depthwise_conv2d: {kernel_size: 2, dilation_rate: 2, activation: relu}",
    ),
    (
        "{x: [batch, 7, 2]}",
        "  - separable_conv1d: {filters: 3, kernel_size: 3, strides: 2}",
    ),
    // Large enough at batch 19 for the JIT to split its loops across cores.
    (
        "{x: [batch, 12, 11, 8]}",
        "  - depthwise_conv2d: {kernel_size: 3, padding: same, depth_multiplier: 2}\n  - depthwise_conv2d: {kernel_size: 2, strides: 2}",
    ),
    (
        "{x: [batch, 5, 5, 2]}",
        "  - separable_conv2d: {filters: 3, kernel_size: 3, padding: same, depth_multiplier: 2}",
    ),
    (
        "{x: [batch, 7, 7, 2]}",
        "  - conv2d: {filters: 2, kernel_size: 2, dilation_rate: [2, 3]}",
    ),
    ("{x: [batch, seq, 2]}", "  - up_sampling1d: {size: 3}"),
    ("{x: [batch, 3, 4, 2]}", "  - up_sampling2d: {size: [2, 3]}"),
    (
        "{x: [batch, 3, 4, 2]}",
        "  - up_sampling2d: {size: [3, 2], interpolation: bilinear}",
    ),
    (
        "{x: [batch, seq, 2]}",
        "  - up_sampling1d\n  - zero_padding1d: {padding: [2, 1]}\n  - cropping1d: {cropping: [1, 3]}",
    ),
    (
        "{x: [batch, 3, 4, 2]}",
        "  - zero_padding2d: {padding: [[1, 0], [2, 1]]}\n  - cropping2d: {cropping: [[0, 2], [1, 1]]}\n  - dense: {units: 2}",
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
            let (vals, diff) = values(&lw.f, &mut rng, 2, 4);
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

/// The transpose of a convolution's input gradient, straight on the primitive: its
/// gradients (a convolution and a kernel gradient) against finite differences, with
/// strides, dilation, every padding and groups.
#[test]
fn conv_input_grad_has_a_gradient() {
    let mut rng = Rng::new(11);
    let cases: [ConvCase; 4] = [
        (
            &[2, 7, 3],
            &[3, 3, 2],
            &[2, 3, 2],
            attrs(&[2], &[1], Padding::Valid, 1),
        ),
        (
            &[2, 6, 4],
            &[3, 2, 4],
            &[2, 6, 4],
            attrs(&[1], &[2], Padding::Same, 2),
        ),
        (
            &[1, 5, 4, 2],
            &[2, 3, 2, 3],
            &[1, 3, 2, 3],
            attrs(&[2, 2], &[1, 1], Padding::Same, 1),
        ),
        (
            &[2, 6, 2],
            &[2, 2, 2],
            &[2, 6, 2],
            attrs(&[1], &[1], Padding::Causal, 1),
        ),
    ];
    for (xs, ks, ys, a) in cases {
        let dims = |s: &[usize]| s.iter().map(|&v| kiln::dim::Dim::konst(v as i64)).collect();
        let mut f = Func::new("t");
        let dy = f.input("dy", Type::f32(dims(ys)));
        let k = f.input("k", Type::f32(dims(ks)));
        let dx = f.push_typed(Op::ConvInputGrad(a.clone()), &[dy, k], Type::f32(dims(xs)));
        f.output("dx", dx);
        let vals = vec![rng.array(ys, -1.0, 1.0), rng.array(ks, -1.0, 1.0)];
        fd_check(
            &format!("conv_input_grad {a}"),
            &f,
            dx,
            &vals,
            &[true, true],
            &mut rng,
        );
        let f32s: Vec<ArrayD<f32>> = vals.iter().map(|v| v.mapv(|x| x as f32)).collect();
        compare_jit(
            &format!("conv_input_grad {a}"),
            &passes::optimize(&f),
            &f32s,
        );
    }
}

/// (input gradient's shape, kernel shape, dy's shape, attributes).
type ConvCase = (
    &'static [usize],
    &'static [usize],
    &'static [usize],
    ConvAttrs,
);

fn attrs(strides: &[i64], dilation: &[i64], padding: Padding, groups: i64) -> ConvAttrs {
    ConvAttrs {
        strides: strides.to_vec(),
        dilation: dilation.to_vec(),
        padding,
        groups,
    }
}

/// The forward pass and a whole training step (MSE, Adam) compiled against
/// interpreted, at batch 1 and a batch that splits across cores.
#[test]
fn compiled_matches_interpreted() {
    for &(inputs, layers) in STACKS {
        let m = model(inputs, layers);
        let out = &m.graph.layers.last().unwrap().output;
        // A target is declared with sizes and names: pool a computed length away.
        let (shape, head) = if out.shape[1..].iter().all(|d| d.is_const()) {
            (out.shape.iter().map(|d| d.to_string()).collect(), "")
        } else {
            (
                vec!["batch".to_string(), out.last().to_string()],
                "\n  - global_average_pooling1d",
            )
        };
        common::compiled_matches_interpreted(inputs, layers, (&shape, head), &[(1, 1), (19, 5)]);
    }
}

/// Clean images (a bright disc at a random place on a dark ground) and noisy copies,
/// as keras.io's denoising example makes them: clean + 0.4 · noise, clipped to [0, 1].
fn discs(rng: &mut Rng, n: usize) -> (ArrayD<f32>, ArrayD<f32>) {
    let mut clean = ArrayD::zeros(IxDyn(&[n, 28, 28, 1]));
    for b in 0..n {
        let (cy, cx, r) = (
            rng.range(7.0, 21.0),
            rng.range(7.0, 21.0),
            rng.range(3.0, 7.0),
        );
        for y in 0..28 {
            for x in 0..28 {
                let d = ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2)).sqrt();
                clean[[b, y, x, 0]] = (r - d + 0.5).clamp(0.0, 1.0) as f32;
            }
        }
    }
    let noisy = clean.mapv(|v: f32| (v as f64 + 0.4 * rng.range(-1.0, 1.0)).clamp(0.0, 1.0) as f32);
    (noisy, clean)
}

/// specs/conv_autoencoder.yaml (keras.io's denoising autoencoder) checks with Keras's
/// parameter count and shapes, and a few training steps on generated images lower the
/// loss.
#[test]
fn conv_autoencoder_trains() {
    let path = format!("{}/specs/conv_autoencoder.yaml", env!("CARGO_MANIFEST_DIR"));
    let m = kiln::Model::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
    let total: i64 = m
        .graph
        .layers
        .iter()
        .flat_map(|l| l.params.iter().map(|p| p.count()))
        .sum();
    assert_eq!(total, 28_353, "Keras's summary: Total params: 28,353");
    let shapes: Vec<String> = m
        .graph
        .layers
        .iter()
        .map(|l| fmt_shape(&l.output.shape))
        .collect();
    assert_eq!(shapes[3], "[batch, 7, 7, 32]");
    assert_eq!(shapes[4], "[batch, 14, 14, 32]");
    assert_eq!(shapes[6], "[batch, 28, 28, 1]");
    let mut net = m.compile(&kiln::Options::default()).unwrap();
    let mut rng = Rng::new(5);
    let (noisy, clean) = discs(&mut rng, 16);
    let mut losses = Vec::new();
    for _ in 0..8 {
        let out = net
            .train_on_batch(&[("noisy", noisy.view())], &[("clean", clean.view())])
            .unwrap();
        assert!(out.loss.is_finite(), "{losses:?}");
        losses.push(out.loss);
    }
    assert!(losses[7] < losses[0], "the loss did not fall: {losses:?}");
}

/// A symbolic length that a layer cuts below zero at run time (inputs too short) is an
/// error, not a panic.
#[test]
fn lengths_cut_below_zero_at_run_time_are_errors() {
    for layer in [
        "cropping1d: {cropping: [2, 2]}",
        "conv1d: {filters: 2, kernel_size: 5}",
    ] {
        let m = model("{x: [batch, seq, 2]}", &format!("  - {layer}"));
        let net = m.compile(&kiln::Options::default()).unwrap();
        let x = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 2]));
        let got = net.predict(&[("x", x.view())]);
        assert!(got.is_err(), "{layer}: {got:?}");
    }
}

/// Depthwise and separable convolutions with known spatial sizes run as generated
/// loops in the JIT (forward and both gradients), not as the grouped-convolution
/// routine; `compiled_matches_interpreted` checks their values.
#[test]
fn depthwise_convolutions_run_as_loops() {
    for (inputs, layers) in STACKS {
        if !layers.contains("depthwise") && !layers.contains("separable") || inputs.contains("seq")
        {
            continue;
        }
        let m = model(inputs, layers);
        let out = &m.graph.layers.last().unwrap().output;
        let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
        let src = format!(
            "inputs: {inputs}\nlayers:\n{layers}\ntrain:\n  targets: {{target: [{}]}}\n  loss: mse\n  optimizer: sgd\n",
            shape.join(", ")
        );
        let mt = kiln::Model::from_source(&src, "t", "t.yaml").unwrap();
        let step = lower::train::build(&mt.graph).unwrap();
        let plan = kiln::jit::plan::plan(&step.func).print();
        assert!(!plan.contains("call conv"), "{layers}:\n{plan}");
    }
}
