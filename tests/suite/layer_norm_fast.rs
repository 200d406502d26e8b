//! Issue 11, layer normalization as one kernel (`jit::plan::norm`, `jit::norm`): the
//! chain the layer lowers to over the last axis is planned as one row-at-a-time kernel,
//! in inference and in the training step (which then stores the centred input, the
//! inverse deviation and the normalized input its backward pass reads). Shown here:
//! where the kernel is planned and where not (several axes, the object-file plan);
//! compiled against interpreted for every option (center, scale, rms_scaling, epsilon)
//! over row lengths that take the 16-lane path and the general one (1, 3, 16, 17, 64,
//! 100, 128) and row counts 1, 7 and 99, values and gradients; and the training step's
//! gradients against the interpreter with the stored values in use.

use crate::attention_fast::{inputs, with_gradients};
use crate::common::{Rng, compare_jit, model};

use kiln::ir::{Func, passes};
use kiln::jit::plan::{self, Kernel, NormPart};
use kiln::lower::{self, Mode};

fn forward(input: &str, layers: &str, mode: Mode) -> Func {
    let m = model(&format!("{{x: {input}}}"), layers);
    passes::optimize(&lower::forward(&m.graph, mode, "t").unwrap().f)
}

fn norms(p: &plan::Plan) -> Vec<&plan::NormKernel> {
    (p.kernels.iter())
        .filter_map(|k| match k {
            Kernel::Norm(n) => Some(n),
            _ => None,
        })
        .collect()
}

const OPTIONS: &[&str] = &[
    "{}",
    "{center: false}",
    "{scale: false}",
    "{center: false, scale: false}",
    "{rms_scaling: true}",
    "{epsilon: 0.5}",
];

#[test]
fn the_chain_becomes_one_kernel() {
    for opts in OPTIONS {
        let layer = format!("  - layer_normalization: {opts}");
        let f = forward("[batch, 5, 64]", &layer, Mode::Infer);
        let p = plan::plan(&f);
        let n = norms(&p);
        assert_eq!(n.len(), 1, "{opts}: {}", p.print());
        let loops = (p.kernels.iter()).filter(|k| matches!(k, Kernel::Loop(_)));
        assert_eq!(loops.count(), 0, "{opts}: {}", p.print());
        assert!(
            n[0].stores.is_empty(),
            "{opts}: inference stores nothing more"
        );
        assert_eq!(n[0].rms, opts.contains("rms"), "{opts}");
        // An object file has only generated code: the loop nests stay.
        assert!(norms(&plan::plan_generated(&f)).is_empty(), "{opts}");
    }
    // Several axes: the loop nests.
    let f = forward(
        "[batch, 5, 8]",
        "  - layer_normalization: {axis: [-1, -2]}",
        Mode::Infer,
    );
    assert!(norms(&plan::plan(&f)).is_empty());
}

#[test]
fn the_training_step_stores_what_its_backward_reads() {
    // A product before the normalization: its input gradient needs the chain's values.
    let src = "inputs: {x: [batch, 5, 8]}\nlayers:\n  - dense: {units: 64}\n  - layer_normalization: {}\n  - dense: {units: 3}\ntrain:\n  targets: {y: {shape: [batch, 5, 3]}}\n  loss: mse\n  optimizer: sgd\n";
    let g = kiln::Model::from_source(src, "t", "t.yaml").unwrap();
    let step = lower::train::build(&g.graph).unwrap();
    let p = plan::plan(&passes::optimize(&step.func));
    let n = norms(&p);
    assert_eq!(n.len(), 1, "{}", p.print());
    let parts: Vec<NormPart> = n[0].stores.iter().map(|s| s.0).collect();
    for want in [NormPart::Centred, NormPart::Inv, NormPart::Normalized] {
        assert!(parts.contains(&want), "{parts:?}");
    }
    // The whole step (forward, backward through the stored values, update) compiled
    // against interpreted.
    let mut rng = Rng::new(5);
    for (batch, seq) in [(1, 1), (4, 1), (3, 7)] {
        let ins = inputs(&step.func, &mut rng, batch, seq);
        compare_jit(&format!("step b={batch}"), &step.func, &ins);
    }
}

#[test]
fn compiled_matches_interpreted() {
    let mut rng = Rng::new(17);
    for n in [1usize, 3, 16, 17, 64, 100, 128] {
        for opts in OPTIONS {
            let layer = format!("  - layer_normalization: {opts}");
            let f = forward(&format!("[batch, seq, {n}]"), &layer, Mode::Infer);
            // One element: the graph passes fold the chain's divisions by 1 away.
            let want = usize::from(n > 1);
            assert_eq!(norms(&plan::plan(&f)).len(), want, "n {n} {opts}");
            for (batch, seq) in [(1, 1), (7, 1), (3, 33)] {
                let name = format!("n {n} {opts} batch {batch} seq {seq}");
                compare_jit(&name, &f, &inputs(&f, &mut rng, batch, seq));
                // Values and the gradients of every input and weight.
                let fg = passes::optimize(&with_gradients(&f));
                compare_jit(&name, &fg, &inputs(&fg, &mut rng, batch, seq));
            }
        }
    }
}
