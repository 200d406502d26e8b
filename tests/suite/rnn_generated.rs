//! Recurrent layers' forward steps and back-propagation through time as
//! Cranelift-generated code (src/jit/codegen/rnn_cell.rs, rnn_grad.rs; chosen per
//! thread with `kiln::jit::set_generated`): every check of rnn_fast.rs again on that
//! path (values and gradients against the interpreter, finite differences,
//! bidirectional layers through the model lowering), the same bits as the Rust kernel
//! (outputs and all four gradients), both generated paths actually taken, and one
//! compiled function per layer shape however many layers, calls and batch sizes use it.

use crate::common::Rng;
use crate::rnn_fast::{self, CELLS, Case, attrs};
use kiln::dim::Dim;
use kiln::ir::{Cell, Func, Op, Type};
use kiln::jit::{CellKind, generated_stats, set_generated};
use kiln::runtime::{self, Backend};
use ndarray::ArrayD;

/// This thread runs recurrent steps as generated code while it lives.
struct Generated;

impl Drop for Generated {
    fn drop(&mut self) {
        set_generated(None);
    }
}

fn generated() -> Generated {
    set_generated(Some(true));
    Generated
}

/// Runs `check` on the generated path and asserts it ran generated code, forward
/// steps and back-propagation's step walks.
fn on_generated(check: fn()) {
    let before = generated_stats();
    {
        let _g = generated();
        check();
    }
    let after = generated_stats();
    assert!(
        after.runs > before.runs,
        "no recurrent step ran as generated code"
    );
    assert!(
        after.grad_runs > before.grad_runs,
        "no back-propagation through time ran as generated code"
    );
}

#[test]
fn every_variant_matches_the_interpreter() {
    on_generated(rnn_fast::every_variant_matches_the_interpreter);
}

#[test]
fn larger_layers_match_the_interpreter() {
    on_generated(rnn_fast::larger_layers_match_the_interpreter);
}

#[test]
fn other_activations_and_options_match() {
    // Activations other than tanh/sigmoid stay on the Rust kernel; the mixed pairs
    // (tanh with linear) still check that choice.
    let _g = generated();
    rnn_fast::other_activations_and_options_match();
}

#[test]
fn compiled_gradients_match_finite_differences() {
    on_generated(rnn_fast::compiled_gradients_match_finite_differences);
}

#[test]
fn bidirectional_masked_dropout_compiles() {
    on_generated(rnn_fast::bidirectional_masked_dropout_compiles);
}

/// Every cell × return_sequences × go_backwards × mask (with and without zero_output,
/// in both directions) × recurrent dropout, units on and off the four-unit
/// blocks and the sixteen-column blocks, at one step and batch 1, an odd batch and a
/// random size: the generated forward steps and back-propagation give the Rust
/// kernel's bits exactly (same operations in the same order), outputs and the input,
/// kernel, recurrent kernel and bias gradients.
#[test]
fn same_bits_as_the_rust_kernel() {
    let mut rng = Rng::new(21);
    let before = generated_stats().grad_runs;
    for (cell, ra) in CELLS {
        for bits in 0..16u32 {
            let flags = [0, 1, 2, 3].map(|i| bits >> i & 1 == 1);
            for units in [1, 3, 4, 6, 16, 21] {
                let mut a = attrs(cell, ra, flags, units);
                // Masked: zero_output as `attrs` sets it (with go_backwards) for odd
                // units, the other way round for even ones.
                a.zero_output = a.masked && (a.zero_output != (units % 2 == 0));
                let c = Case {
                    attrs: a,
                    feats: rng.int(1, 7),
                };
                let f = c.func();
                let jit = runtime::compile(&f, Backend::Jit).unwrap();
                let sizes = [
                    (1, 1),
                    (rng.int(0, 2) * 2 + 3, rng.int(1, 7)),
                    (rng.int(1, 6), rng.int(1, 7)),
                ];
                for (b, t) in sizes {
                    let vals = c.values(&mut rng, b, t);
                    let views: Vec<_> = vals.iter().map(|a| a.view()).collect();
                    set_generated(Some(false));
                    let rust = jit.run(&views).unwrap();
                    let gen_out = {
                        let _g = generated();
                        jit.run(&views).unwrap()
                    };
                    set_generated(None);
                    for (k, (x, y)) in rust.iter().zip(&gen_out).enumerate() {
                        for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                            assert!(
                                p.to_bits() == q.to_bits(),
                                "{} b={b} t={t}: output {} [{i}]: rust {p} vs generated {q}",
                                c.attrs,
                                f.outputs[k].0
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(
        generated_stats().grad_runs > before,
        "no back-propagation through time ran as generated code"
    );
}

/// `y = lstm(x, …)` alone (no gradient, so no trace), batch and length symbolic.
fn lstm_forward(units: usize, feats: usize) -> Func {
    let a = attrs(Cell::Lstm, false, [true, false, false, false], units);
    let (b, t) = (Dim::sym("batch"), Dim::sym("seq"));
    let k = |v: usize| Dim::konst(v as i64);
    let mut f = Func::new("lstm");
    let x = f.input("x", Type::f32(vec![b, t, k(feats)]));
    let w = f.input("w", Type::f32(vec![k(feats), k(4 * units)]));
    let u = f.input("u", Type::f32(vec![k(units), k(4 * units)]));
    let bias = f.input("b", Type::f32(vec![k(4 * units)]));
    let y = f.push(Op::Rnn(a), &[x, w, u, bias]).unwrap();
    f.output("y", y);
    f
}

fn lstm_values(rng: &mut Rng, units: usize, feats: usize, b: usize) -> Vec<ArrayD<f32>> {
    let arr = |rng: &mut Rng, s: &[usize]| rng.array(s, -0.5, 0.5).mapv(|v| v as f32);
    vec![
        arr(rng, &[b, 4, feats]),
        arr(rng, &[feats, 4 * units]),
        arr(rng, &[units, 4 * units]),
        arr(rng, &[4 * units]),
    ]
}

/// Two separately compiled functions with the same LSTM shape (units 29: no other
/// test uses it), run at three batch sizes each: the generated path runs every time
/// and compiles one function for that shape.
#[test]
fn one_generated_function_per_layer_shape() {
    let (units, feats) = (29, 5);
    let mut rng = Rng::new(22);
    let _g = generated();
    let before = generated_stats().runs;
    let mut slices = 0;
    for _ in 0..2 {
        let jit = runtime::compile(&lstm_forward(units, feats), Backend::Jit).unwrap();
        for b in [1, 3, 8] {
            let vals = lstm_values(&mut rng, units, feats, b);
            let views: Vec<_> = vals.iter().map(|a| a.view()).collect();
            let y = jit.run(&views).unwrap();
            assert_eq!(y[0].shape(), &[b, 4, units]);
            slices += 1;
        }
    }
    let stats = generated_stats();
    assert!(
        stats.runs >= before + slices,
        "{} generated slices ran, want at least {slices} more than {before}",
        stats.runs
    );
    let shapes: Vec<_> = stats
        .compiled
        .iter()
        .filter(|s| s.units == units && s.kind == CellKind::Lstm)
        .collect();
    assert_eq!(shapes.len(), 1, "functions for the shape: {shapes:?}");
    assert!(!shapes[0].trace && shapes[0].return_sequences);
}

/// Two separately compiled training-style functions (loss and gradients) with the
/// same LSTM shape (units 27: no other test uses it), run at three batch sizes each:
/// back-propagation runs as generated code every time and compiles one step walk for
/// that shape.
#[test]
fn one_generated_grad_function_per_layer_shape() {
    let units = 27;
    let c = Case {
        attrs: attrs(Cell::Lstm, false, [false, true, false, true], units),
        feats: 3,
    };
    let mut rng = Rng::new(23);
    let _g = generated();
    let before = generated_stats().grad_runs;
    let mut calls = 0;
    for _ in 0..2 {
        let jit = runtime::compile(&c.func(), Backend::Jit).unwrap();
        for b in [1, 3, 8] {
            let vals = c.values(&mut rng, b, 4);
            let views: Vec<_> = vals.iter().map(|a| a.view()).collect();
            let out = jit.run(&views).unwrap();
            assert_eq!(out[2].shape(), &[b, 4, 3], "the input gradient");
            calls += 1;
        }
    }
    let stats = generated_stats();
    assert!(
        stats.grad_runs >= before + calls,
        "{} generated back-propagation slices ran, want at least {calls} more than {before}",
        stats.grad_runs
    );
    let shapes: Vec<_> = stats
        .compiled_grads
        .iter()
        .filter(|s| s.units == units && s.kind == CellKind::Lstm)
        .collect();
    assert_eq!(shapes.len(), 1, "step walks for the shape: {shapes:?}");
    assert!(shapes[0].go_backwards && shapes[0].hkeep && !shapes[0].return_sequences);
}
