//! A compiled function chooses, from its own timings, between sharing its kernels with
//! the thread team and running them on the caller alone (`jit::adapt`): its first calls
//! alternate the two forms. Shown here: both forms give the same bits, for the
//! training steps of bundled specs whose kernels split in every way the team splits
//! (products by rows and columns, loops, column sums, attention by heads, layer
//! normalization by rows, recurrent layers by batch rows, gather and scatter-add).

use kiln::lower;
use kiln::runtime::{self, Backend};
use kiln::types::DType;
use ndarray::{ArrayD, IxDyn};

use crate::common::{Rng, concrete};

#[test]
fn the_team_and_the_caller_alone_give_the_same_bits() {
    let mut rng = Rng::new(21);
    for (spec, batch, seq) in [
        (include_str!("../../specs/attention.yaml"), 32, 32),
        (include_str!("../../specs/lstm.yaml"), 32, 12),
        (include_str!("../../specs/cnn.yaml"), 64, 1),
        (include_str!("../../specs/mlp.yaml"), 128, 1),
    ] {
        let m = kiln::Model::from_source(spec, "s", "s.yaml").unwrap();
        let f = lower::train::build(&m.graph).unwrap().func;
        let ins: Vec<ArrayD<f32>> = (f.inputs.iter())
            .map(|inp| {
                let shape = concrete(&inp.ty, batch, seq);
                match (inp.name.as_str(), inp.ty.dtype) {
                    ("rng_key" | "step", _) => ArrayD::from_elem(IxDyn(&[]), 3.0),
                    ("lr", _) => ArrayD::from_elem(IxDyn(&[]), 0.01),
                    (_, DType::I32) => ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                        (rng.uniform() * 2.0).floor() as f32
                    }),
                    _ => rng.array(&shape, -0.5, 0.5).mapv(|v| v as f32),
                }
            })
            .collect();
        let views: Vec<_> = ins.iter().map(|a| a.view()).collect();
        let k = runtime::compile(&f, Backend::Jit).unwrap();
        let first = k.run(&views).unwrap();
        // Calls 1 to 7 alternate the caller alone and the team.
        for call in 1..8 {
            let again = k.run(&views).unwrap();
            for (o, (a, b)) in first.iter().zip(&again).enumerate() {
                let same = a
                    .iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{}: call {call}, output {o} differs", m.graph.name);
            }
        }
    }
}
