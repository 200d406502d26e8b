//! A product's epilogue takes the loops that consume its value element for element and
//! alone (`jit::plan::fuse`, `extend_epilogue`): the activation after a dense layer's
//! bias add when the graph could not inline it (relu and gelu read their input twice),
//! and a residual add after it, also when the loop runs over `[batch, seq, units]`
//! while the product runs over `batch·seq` rows. Shown here: where they fold and where
//! they must not (a value the training step reads again keeps its own store), and
//! compiled against interpreted at sizes that take the generated few-rows code (m ≤ 4),
//! one row block, and several blocks split across cores.

use crate::common;

use kiln::ir::passes;
use kiln::jit::plan::{self, Kernel};
use kiln::lower::{self, Mode};

/// The forward plan's kernels: (number of loop kernels, each product's epilogue node
/// count).
fn shape_of_plan(inputs: &str, layers: &str) -> (usize, Vec<usize>) {
    let m = common::model(inputs, layers);
    let f = passes::optimize(&lower::forward(&m.graph, Mode::Infer, "t").unwrap().f);
    let p = plan::plan(&f);
    let loops = p
        .kernels
        .iter()
        .filter(|k| matches!(k, Kernel::Loop(_)))
        .count();
    let epis = p
        .kernels
        .iter()
        .filter_map(|k| match k {
            Kernel::Gemm(g) => Some(g.epilogue.as_ref().map_or(0, |e| e.kernel.nodes.len())),
            _ => None,
        })
        .collect();
    (loops, epis)
}

const RELU_3D: (&str, &str) = (
    "{x: [batch, seq, 8]}",
    "  - dense: {units: 12, activation: relu}\n  - dense: {units: 1}",
);
const GELU_RESIDUAL: (&str, &str) = (
    "{x: [batch, seq, 8]}",
    "  - dense: {units: 8, activation: gelu, name: up}\n  - dense: {units: 8, name: down}\n  - add: {inputs: [up, down]}\n  - dense: {units: 1}",
);

#[test]
fn activations_and_residual_adds_join_the_product_epilogue() {
    // relu over [batch, seq, 12] folds into its product's epilogue: no loop is left.
    let (loops, epis) = shape_of_plan(RELU_3D.0, RELU_3D.1);
    assert_eq!(loops, 0, "{epis:?}");
    assert!(epis[0] >= 3, "bias add and relu: {epis:?}");
    // gelu after the first product, the residual add after the second.
    let (loops, epis) = shape_of_plan(GELU_RESIDUAL.0, GELU_RESIDUAL.1);
    assert_eq!(loops, 0, "{epis:?}");
    assert!(epis[0] > 3 && epis[1] >= 2, "{epis:?}");
}

#[test]
fn a_value_the_backward_reads_keeps_its_own_store() {
    // In the training step relu's input is read again by relu's gradient: the bias
    // add's result stays stored and relu stays a loop of its own.
    let (inputs, layers) = RELU_3D;
    let src = format!(
        "inputs: {inputs}\nlayers:\n{layers}\ntrain:\n  targets: {{target: [batch, seq, 1]}}\n  loss: mse\n  optimizer: sgd\n"
    );
    let m = kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let p = plan::plan(&lower::train::build(&m.graph).unwrap().func);
    let first = p.kernels.iter().find_map(|k| match k {
        Kernel::Gemm(g) => Some(g.epilogue.as_ref().map_or(0, |e| e.kernel.nodes.len())),
        _ => None,
    });
    assert_eq!(first, Some(1), "only the bias add\n{}", p.print());
    let (_, forward) = shape_of_plan(inputs, layers);
    assert!(forward[0] > 1, "{forward:?}");
}

#[test]
fn extended_epilogues_match_the_interpreter() {
    for (inputs, layers) in [RELU_3D, GELU_RESIDUAL] {
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
