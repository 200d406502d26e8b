//! Issue 15's audit, as assertions: every concrete case of the issue's text is held by a
//! test (the four attention cases in `attention_general`, the sorted normalization axes
//! in `norm_axes`, the 3-D layers and channels_first in `spatial_layouts`); here, that
//! the coverage is complete — every registered layer with a `data_format` argument has a
//! channels_first case checked against Keras's shape and count, and every feature the
//! issue lists has a Keras golden case (values and one training step against Keras,
//! `tests/suite/keras_golden.rs`) — and the issue's numbers once more in one place, on
//! the golden case that trains them against Keras (`attention_issue15`).

use std::path::Path;

use kiln::dim::fmt_shape;

/// The kinds whose channels_first form is shown elsewhere than the Keras case table,
/// and where: spatial dropout has no weights and is random in training.
const SHOWN_ELSEWHERE: &[(&str, &str)] = &[
    ("spatial_dropout1d", "tests/suite/spatial_dropout3d.rs"),
    ("spatial_dropout2d", "tests/suite/spatial_dropout3d.rs"),
    ("spatial_dropout3d", "tests/suite/spatial_dropout3d.rs"),
];

#[test]
fn every_layer_with_data_format_has_a_keras_checked_channels_first_case() {
    let table = crate::spatial_layouts::KERAS_CASES;
    let mut missing = Vec::new();
    let mut seen = 0;
    for kind in kiln::layers::REGISTRY {
        if !kind.args.iter().any(|a| a.name == "data_format") {
            continue;
        }
        seen += 1;
        let prefix = format!("| {}", kind.name);
        let covered = table.lines().any(|l| {
            l.contains("data_format: channels_first")
                && (l.contains(&format!("{prefix}:")) || l.contains(&format!("{prefix} |")))
        });
        let elsewhere = SHOWN_ELSEWHERE.iter().find(|(k, _)| *k == kind.name);
        match elsewhere {
            Some((_, file)) => {
                let text =
                    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
                        .expect("the file that shows it");
                assert!(
                    text.contains(kind.name) && text.contains("channels_first"),
                    "{file} does not show {}",
                    kind.name
                );
            }
            None if !covered => missing.push(kind.name),
            None => {}
        }
    }
    // Convolutions (1-D to 3-D, transposed, depthwise, separable), pooling and global
    // pooling (1-D to 3-D), flatten, up-sampling, padding, cropping, spatial dropout.
    assert!(seen >= 30, "only {seen} layers take data_format");
    assert!(
        missing.is_empty(),
        "no channels_first Keras case for {missing:?}"
    );
}

/// Each feature of the issue and a fragment of a golden case that uses it.
const GOLDEN: &[(&str, &str)] = &[
    (
        "rank-5 attention, query/value/key of other sizes",
        "inputs: [q5, v5, k5]",
    ),
    ("output_shape as a list", "output_shape: [3, 4]"),
    ("attention_axes", "attention_axes: [2]"),
    ("return_attention_scores", "return_attention_scores: true"),
    ("attention_mask", "attention_mask: m"),
    ("use_gate", "use_gate: true"),
    (
        "layer_normalization axes sorted",
        "layer_normalization: {axis: [-1, -2]",
    ),
    ("rms_scaling", "rms_scaling: true"),
    ("gamma_regularizer", "gamma_regularizer"),
    ("beta_regularizer", "beta_regularizer"),
    ("conv3d", "- conv3d:"),
    ("conv3d_transpose", "- conv3d_transpose:"),
    ("max_pooling3d", "- max_pooling3d:"),
    ("average_pooling3d", "- average_pooling3d:"),
    ("global_max_pooling3d", "- global_max_pooling3d"),
    ("global_average_pooling3d", "- global_average_pooling3d"),
    ("up_sampling3d", "- up_sampling3d:"),
    ("zero_padding3d", "- zero_padding3d:"),
    ("cropping3d", "- cropping3d:"),
    (
        "channels_first conv1d",
        "conv1d: {filters: 4, kernel_size: 3, padding: causal, dilation_rate: 2, activation: tanh, data_format: channels_first",
    ),
    (
        "channels_first conv2d",
        "conv2d: {filters: 3, kernel_size: 3, padding: same, activation: relu, data_format: channels_first",
    ),
    (
        "channels_first conv3d",
        "conv3d: {filters: 3, kernel_size: 2, padding: same, activation: relu, data_format: channels_first",
    ),
    (
        "channels_first depthwise_conv1d",
        "depthwise_conv1d: {kernel_size: 3, depth_multiplier: 2, data_format: channels_first",
    ),
    (
        "channels_first separable_conv1d",
        "separable_conv1d: {filters: 4, kernel_size: 2, padding: same, data_format: channels_first",
    ),
    (
        "channels_first global_average_pooling1d",
        "global_average_pooling1d: {data_format: channels_first",
    ),
    (
        "channels_first global_max_pooling2d",
        "global_max_pooling2d: {data_format: channels_first",
    ),
    (
        "channels_first global_average_pooling2d",
        "global_average_pooling2d: {data_format: channels_first",
    ),
    (
        "channels_first global_max_pooling3d",
        "global_max_pooling3d: {data_format: channels_first",
    ),
    (
        "channels_first flatten",
        "flatten: {data_format: channels_first",
    ),
];

#[test]
fn every_feature_of_the_issue_has_a_keras_golden_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras");
    let cases: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("the golden cases")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a case");
            (p.file_stem().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    for (feature, fragment) in GOLDEN {
        let case = cases.iter().find(|(_, text)| text.contains(fragment));
        let (name, _) = case.unwrap_or_else(|| panic!("no golden case shows {feature}"));
        assert!(
            dir.join(format!("{name}.npz")).exists(),
            "{name} (for {feature}) has no Keras fixture"
        );
    }
}

#[test]
fn the_issues_attention_numbers_on_its_golden_case() {
    let path = format!(
        "{}/tests/golden/keras/attention_issue15.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let m = kiln::Model::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(String, String, i64)> = m
        .graph
        .layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                fmt_shape(&l.output.shape),
                l.params.iter().map(|p| p.count()).sum(),
            )
        })
        .collect();
    let want = [
        ("rank5", "[batch, 4, 2, 3, 8]", 144),
        ("rank5_other", "[batch, 4, 2, 3, 8]", 124),
        ("shaped", "[batch, 4, 3, 4]", 168),
        ("shaped_key", "[batch, 4, 1, 5]", 113),
    ];
    let want: Vec<(String, String, i64)> = want
        .iter()
        .map(|&(n, s, c)| (n.to_string(), s.to_string(), c))
        .collect();
    assert_eq!(got, want);
}
