//! Property tests of the checker.
//!
//! 1. Generated valid specs: random stacks and graphs over the layer catalog, written
//!    as YAML text, must check clean, and every layer's name, output shape and
//!    parameter count must be what an independent model of Keras predicts (the
//!    generator computes them from Keras's formulas, not from kiln's code).
//! 2. Mutated specs (generated ones and `specs/*.yaml`): lines deleted, duplicated,
//!    swapped or re-indented, numbers replaced by absurd ones, words replaced, bytes
//!    (invalid UTF-8 too) inserted, text truncated. Checking must never panic and must
//!    answer promptly; what it answers must be consistent (an error has labels inside
//!    the text, JSON parses, a valid model summarizes).

mod generator;
mod mutate;

use kiln::dim::fmt_shape;
use proptest::prelude::*;
use proptest::test_runner::Config;

use generator::{Generated, generate, generated, shape_text};

fn group(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn check_generated(g: &Generated) -> Result<(), TestCaseError> {
    let model = match kiln::Model::from_source(&g.yaml, "gen", "gen.yaml") {
        Ok(m) => m,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "a valid spec failed to check:\n{}\n{e}",
                g.yaml
            )));
        }
    };
    let graph = &model.graph;
    prop_assert!(model.warnings.iter().all(|w| !w.is_error()));
    prop_assert!(
        model.warnings.is_empty(),
        "unexpected warnings for\n{}\n{}",
        g.yaml,
        model.render_warnings(false)
    );
    prop_assert_eq!(graph.layers.len(), g.expect.len(), "{}", g.yaml);
    let (mut total, mut non) = (0, 0);
    for (l, e) in graph.layers.iter().zip(&g.expect) {
        prop_assert_eq!(&l.name, &e.name, "{}", g.yaml);
        prop_assert_eq!(
            fmt_shape(&l.output.shape),
            shape_text(&e.shape),
            "shape of `{}` in\n{}",
            e.name,
            g.yaml
        );
        let count: i64 = l.params.iter().map(|p| p.count()).sum();
        prop_assert_eq!(count, e.params, "parameters of `{}` in\n{}", e.name, g.yaml);
        let frozen: i64 = l
            .params
            .iter()
            .filter(|p| !p.trainable)
            .map(|p| p.count())
            .sum();
        prop_assert_eq!(
            frozen,
            e.non_trainable,
            "non-trainable parameters of `{}` in\n{}",
            e.name,
            g.yaml
        );
        total += e.params;
        non += e.non_trainable;
    }
    prop_assert_eq!(
        graph.param_counts(),
        (total, total - non, non),
        "{}",
        g.yaml
    );
    // The output is the last layer, with the predicted shape.
    let last = g.expect.last().unwrap();
    prop_assert_eq!(graph.outputs.len(), 1);
    prop_assert_eq!(graph.name_of(graph.outputs[0]), last.name.as_str());
    prop_assert_eq!(
        fmt_shape(&graph.type_of(graph.outputs[0]).shape),
        shape_text(&last.shape)
    );
    let summary = kiln::summary::render(graph);
    let want = format!(" Total params: {} (", group(total));
    prop_assert!(summary.contains(&want), "`{}` not in\n{}", want, summary);
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn generated_specs_check_clean_with_keras_shapes_and_counts(g in generated()) {
        check_generated(&g)?;
    }
}

/// The generator covers the catalog: over a fixed set of seeds, every layer type and
/// the interesting options appear.
#[test]
fn the_generator_covers_the_catalog() {
    let mut seen = String::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng as u32
    };
    for _ in 0..400 {
        let xs: Vec<u32> = (0..160).map(|_| next()).collect();
        let g = generate(xs, 12);
        seen.push_str(&g.yaml);
    }
    for word in [
        "dense",
        "conv1d",
        "conv2d",
        "max_pooling1d",
        "average_pooling2d",
        "global_max_pooling1d",
        "global_average_pooling2d",
        "batch_normalization",
        "layer_normalization",
        "flatten",
        "reshape",
        "-1",
        "permute",
        "dropout",
        "activation:",
        "embedding",
        "lstm",
        "gru",
        "simple_rnn",
        "return_sequences: true",
        "reset_after: false",
        "add",
        "subtract",
        "multiply",
        "concatenate",
        "multi_head_attention",
        "value_dim",
        "seq",
        "strides",
        "dilation_rate",
        "padding: same",
        "padding: causal",
        "keepdims",
        "use_bias: false",
        "meta",
        "inputs: [",
        "train:",
        "sparse_categorical_crossentropy",
    ] {
        assert!(seen.contains(word), "the generator never writes `{word}`");
    }
}
