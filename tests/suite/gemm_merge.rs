//! kiln's own product routine (`jit::gemm`) and the merge of products of one A into one
//! call (`jit::plan::merge`). Shown here: attention's query, key and value projections
//! plan as one product call (and not where the projections read different inputs); a
//! training step's weight gradients against one input merge likewise; a product whose
//! B depends on another product of its A stays apart; compiled values
//! and gradients of the merged plans agree with the interpreter at sizes that take the
//! generated few-rows code (m ≤ 4), one row block, and several row blocks split across
//! cores; a dense stack whose products take kiln's routine agrees too.

use crate::common;

use kiln::ir::passes;
use kiln::jit::plan::{self, Kernel};
use kiln::lower::{self, Mode};

/// For each product call of the forward pass (or of the training step when `step`):
/// how many products it runs.
fn product_calls(inputs: &str, layers: &str, step: bool) -> Vec<usize> {
    let f = if step {
        let src = format!(
            "inputs: {inputs}\nlayers:\n{layers}\ntrain:\n  targets: {{target: [batch, seq, 1]}}\n  loss: mse\n  optimizer: sgd\n"
        );
        let m = kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        lower::train::build(&m.graph).unwrap().func
    } else {
        let m = common::model(inputs, layers);
        passes::optimize(&lower::forward(&m.graph, Mode::Infer, "t").unwrap().f)
    };
    plan::plan(&f)
        .kernels
        .iter()
        .filter_map(|k| match k {
            Kernel::Gemm(g) => Some(1 + g.also.len()),
            _ => None,
        })
        .collect()
}

const SELF_ATTENTION: (&str, &str) = (
    "{x: [batch, seq, 8]}",
    "  - multi_head_attention: {num_heads: 2, key_dim: 4, inputs: [x, x]}\n  - dense: {units: 1}",
);
const CROSS_ATTENTION: (&str, &str) = (
    "{q: [batch, seq, 8], v: [batch, seq, 8]}",
    "  - multi_head_attention: {num_heads: 2, key_dim: 4, inputs: [q, v]}\n  - dense: {units: 1}",
);

#[test]
fn self_attention_projects_query_key_and_value_in_one_call() {
    let (inputs, layers) = SELF_ATTENTION;
    let calls = product_calls(inputs, layers, false);
    assert!(calls.contains(&3), "forward products {calls:?}");
    // The step's weight gradients of the three projections share their A (the input,
    // transposed) as well.
    let step = product_calls(inputs, layers, true);
    assert!(step.contains(&3), "step products {step:?}");
}

#[test]
fn cross_attention_merges_only_key_and_value() {
    let (inputs, layers) = CROSS_ATTENTION;
    let calls = product_calls(inputs, layers, false);
    assert!(calls.contains(&2), "{calls:?}");
    assert!(!calls.contains(&3), "{calls:?}");
}

#[test]
fn merged_plans_match_the_interpreter() {
    for (inputs, layers) in [SELF_ATTENTION, CROSS_ATTENTION] {
        let target = ["batch".to_string(), "seq".to_string(), "1".to_string()];
        // m = batch·seq: 2 (generated code), 45 (one row block), 333 (split).
        common::compiled_matches_interpreted(
            inputs,
            layers,
            (&target, ""),
            &[(1, 2), (5, 9), (9, 37)],
        );
    }
}

#[test]
fn dense_products_of_every_width_match_the_interpreter() {
    // Widths around the micro-kernel's 32 columns and 8 rows, with a bias/activation
    // epilogue on each; batch sizes around the row tiles and blocks.
    let layers = "  - dense: {units: 33, activation: relu}\n  - dense: {units: 1}\n  - dense: {units: 17, activation: tanh}\n  - dense: {units: 70}\n  - dense: {units: 5}";
    common::compiled_matches_interpreted(
        "{x: [batch, 7]}",
        layers,
        (&["batch".to_string(), "5".to_string()], ""),
        &[(3, 1), (9, 1), (130, 1)],
    );
}

#[test]
fn a_product_whose_b_depends_on_another_product_of_its_a_stays_apart() {
    use kiln::dim::Dim;
    use kiln::ir::{Func, Type};
    let mut f = Func::new("t");
    let x = f.input("x", Type::f32(vec![Dim::sym("batch"), 16.into()]));
    let w1 = f.input("w1", Type::f32(vec![16.into(), 16.into()]));
    let w3 = f.input("w3", Type::f32(vec![16.into(), 8.into()]));
    let y1 = f.matmul(x, w1, false, false).unwrap();
    // B of the next product of x is computed from x·w1: it cannot join that call.
    let b2 = f.matmul(y1, y1, true, false).unwrap();
    let y2 = f.matmul(x, b2, false, false).unwrap();
    let y3 = f.matmul(x, w3, false, false).unwrap();
    f.output("y2", y2);
    f.output("y3", y3);
    let calls: Vec<usize> = plan::plan(&f)
        .kernels
        .iter()
        .filter_map(|k| match k {
            Kernel::Gemm(g) => Some(1 + g.also.len()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, [2, 1, 1], "x·w1 with x·w3, then y1ᵀ·y1, then x·b2");
    let mut rng = common::Rng::new(9);
    for batch in [3, 40, 300] {
        let ins: Vec<_> = [vec![batch, 16], vec![16, 16], vec![16, 8]]
            .iter()
            .map(|s| rng.array(s, -1.0, 1.0).mapv(|v| v as f32))
            .collect();
        common::compare_jit(&format!("b={batch}"), &f, &ins);
    }
}
