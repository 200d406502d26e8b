//! Issue 11, attention's backward pass as one kernel: when the training graph has the
//! autodiff chain of a fused attention forward, the plan replaces it with one backward
//! kernel (`jit::plan::attention`, `jit::attention::backward`). Shown here: the kernel
//! is planned where the chain is (the bundled encoder's training step names it) and
//! not where the forward is not fused (dropout on the probabilities, the object-file
//! plan); the compiled gradients of every input and weight agree with the interpreter
//! over random shapes (sequence length 1, odd batch sizes, query and key lengths
//! unlike each other, causal and not, one to four heads, head dims 1, 3, 16 and 17);
//! and they agree with central finite differences of the exact (f64) function.

use crate::attention_fast::{inputs, with_gradients};
use crate::common::{Rng, compare_jit, concrete};
use kiln::ir::{Func, interp, passes};
use kiln::jit::plan::{self, Kernel};
use kiln::lower;
use ndarray::ArrayD;

/// `(heads, key_dim, value_dim, causal, second input's length)` (`None`: self-attention
/// over `x`; `Some(n)`: keys and values from a `[batch, n, 5]` input).
const CASES: &[(usize, usize, usize, bool, Option<usize>)] = &[
    (1, 1, 1, false, None),
    (2, 3, 3, true, None),
    (4, 16, 16, false, None),
    (4, 16, 16, true, None),
    (1, 17, 17, false, Some(3)),
    (3, 17, 5, true, Some(7)),
    (2, 3, 16, false, Some(2)),
    (2, 16, 3, true, Some(20)),
];

fn func(
    &(heads, key_dim, value_dim, causal, other): &(usize, usize, usize, bool, Option<usize>),
) -> Func {
    let (ins, args) = match other {
        None => ("{x: [batch, seq, 6]}".to_string(), "[x, x]"),
        Some(n) => (
            format!("{{x: [batch, seq, 6], y: [batch, {n}, 5]}}"),
            "[x, y]",
        ),
    };
    let layer = format!(
        "  - multi_head_attention: {{num_heads: {heads}, key_dim: {key_dim}, value_dim: \
         {value_dim}, use_causal_mask: {causal}, inputs: {args}}}"
    );
    let m = crate::common::model(&ins, &layer);
    passes::optimize(&with_gradients(&lower::predict_func(&m.graph).unwrap()))
}

/// The attention kernels of `f`'s plan, `(backward?, causal?)`.
fn attention_kernels(p: &plan::Plan) -> Vec<(bool, bool)> {
    p.kernels
        .iter()
        .filter_map(|k| match k {
            Kernel::Attention(a) => Some((a.grad.is_some(), a.causal.is_some())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_backward_chain_becomes_one_kernel() {
    for case in CASES {
        let f = func(case);
        let k = attention_kernels(&plan::plan(&f));
        assert_eq!(k, [(false, case.3), (true, case.3)], "{case:?}");
        // The object-file plan fuses neither direction.
        assert!(attention_kernels(&plan::plan_generated(&f)).is_empty());
    }
    // The bundled encoder's training step: the printed plan names the kernel.
    let m = kiln::Model::from_source(include_str!("../../specs/attention.yaml"), "a", "a.yaml")
        .unwrap();
    let step = lower::train::build(&m.graph).unwrap();
    let text = plan::plan(&passes::optimize(&step.func)).print();
    assert_eq!(text.matches(": attention_grad %").count(), 1, "{text}");
    // Dropout on the probabilities: neither kernel, the graph's own nodes instead.
    let drop = include_str!("../../specs/attention.yaml")
        .replace("key_dim: 16,", "key_dim: 16, dropout: 0.2,");
    let m = kiln::Model::from_source(&drop, "a", "a.yaml").unwrap();
    let step = lower::train::build(&m.graph).unwrap();
    assert!(attention_kernels(&plan::plan(&passes::optimize(&step.func))).is_empty());
}

/// Values and the gradients of every input and weight, compiled (fused forward and
/// backward) against interpreted.
#[test]
fn gradients_match_the_interpreter() {
    let mut rng = Rng::new(21);
    for case in CASES {
        let f = func(case);
        for (batch, seq) in [(1, 1), (3, 1), (1, 2), (5, 5), (3, 17), (2, 33)] {
            let ins = inputs(&f, &mut rng, batch, seq);
            compare_jit(&format!("{case:?} b={batch} seq={seq}"), &f, &ins);
        }
    }
}

/// The compiled gradients against central finite differences of the function in f64
/// (interpreted), along random directions: `Σ_k ⟨g_k, u_k⟩` against
/// `(L(x + h·u) − L(x − h·u)) / 2h` where `L = Σ out·w`.
#[test]
fn gradients_match_finite_differences() {
    use kiln::runtime::{self, Backend};
    let mut rng = Rng::new(22);
    for case in CASES {
        let f = func(case);
        let jit = runtime::compile(&f, Backend::Jit).unwrap();
        let mut loss = f.clone();
        loss.outputs.truncate(1);
        let nin = f.inputs.len() - 1; // the last input is the weight `w` of the sum
        for (batch, seq) in [(1, 1), (3, 4), (2, 9)] {
            let ins = inputs(&f, &mut rng, batch, seq);
            let views: Vec<_> = ins.iter().map(|a| a.view()).collect();
            let out = jit.run(&views).unwrap();
            let x64: Vec<ArrayD<f64>> = ins.iter().map(|a| a.mapv(f64::from)).collect();
            let l = |xs: &[ArrayD<f64>]| -> f64 {
                let o = interp::eval::<f64>(&loss, xs).unwrap().remove(0);
                (&o * &xs[nin]).sum()
            };
            for _ in 0..3 {
                let dirs: Vec<ArrayD<f64>> = (0..nin)
                    .map(|k| rng.array(&concrete(&f.inputs[k].ty, batch, seq), -1.0, 1.0))
                    .collect();
                let (mut analytic, mut scale) = (0.0, 0.0);
                for (k, u) in dirs.iter().enumerate() {
                    let g = out[1 + k].mapv(f64::from);
                    analytic += (&g * u).sum();
                    scale += (g.mapv(f64::abs) * u.mapv(f64::abs)).sum();
                }
                let h = 1e-4;
                let shifted = |sign: f64| {
                    let mut xs = x64.clone();
                    for (k, u) in dirs.iter().enumerate() {
                        xs[k] = &xs[k] + &(u * (sign * h));
                    }
                    l(&xs)
                };
                let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * h);
                // f32 kernels against the f64 function: rounding of the order of f32's
                // epsilon per accumulated term, bounded by the terms' magnitudes.
                assert!(
                    (analytic - numeric).abs() <= 1e-4 * scale.max(1.0),
                    "{case:?} b={batch} seq={seq}: compiled {analytic} vs finite differences {numeric}"
                );
            }
        }
    }
}

/// Past a million scores per head the backward kernel takes the query rows in chunks
/// (its scratch bounded), the key and value gradients continuing one sum across them:
/// 520 query rows against 2,100 keys is two chunks, causal and not.
#[test]
fn long_key_sequences_run_in_chunks() {
    let mut rng = Rng::new(23);
    for causal in [false, true] {
        let case = (2, 3, 16, causal, Some(2100));
        let f = func(&case);
        let k = attention_kernels(&plan::plan(&f));
        assert!(k.contains(&(true, causal)), "{k:?}");
        let ins = inputs(&f, &mut rng, 1, 520);
        compare_jit(&format!("{case:?}"), &f, &ins);
    }
}
