//! The JIT's recurrent kernel (src/jit/rnn/) against the interpreter's reference
//! (ir::rnn, ir::rnn_bptt): every cell (simple, LSTM, GRU with reset_after true and
//! false), go_backwards, return_sequences, Keras masks (with and without
//! zero_output), recurrent dropout's keep masks, activations off the polynomial path,
//! random sizes including one step and odd batches, one compiled function over
//! symbolic batch and length; values and all four gradients. The compiled gradient is
//! also checked against central differences of the compiled forward pass.
//! rnn_generated.rs runs these checks again on the generated steps.

use crate::common::{Rng, compare_jit};
use crate::wrappers_masking::check_layers;
use kiln::dim::Dim;
use kiln::ir::{Cell, Func, Id, Op, ReduceOp, RnnAttrs, Type, autodiff};
use kiln::runtime::{self, Backend};
use ndarray::{ArrayD, IxDyn};

pub(crate) struct Case {
    pub(crate) attrs: RnnAttrs,
    pub(crate) feats: usize,
}

impl Case {
    fn gates(&self) -> usize {
        self.attrs.gates()
    }
    fn units(&self) -> usize {
        self.attrs.units as usize
    }
    fn two_bias(&self) -> bool {
        self.attrs.cell == Cell::Gru && self.attrs.reset_after
    }

    /// y = rnn(x, …), loss = Σ y ⊙ w, outputs y and the gradients of every
    /// differentiable operand; batch and length symbolic.
    pub(crate) fn func(&self) -> Func {
        let (g, u, fi) = (self.gates(), self.units(), self.feats);
        let (b, t) = (Dim::sym("batch"), Dim::sym("seq"));
        let k = |v: usize| Dim::konst(v as i64);
        let mut shapes = vec![
            vec![b.clone(), t.clone(), k(fi)],
            vec![k(fi), k(g * u)],
            vec![k(u), k(g * u)],
        ];
        if self.attrs.use_bias {
            shapes.push(if self.two_bias() {
                vec![k(2), k(g * u)]
            } else {
                vec![k(g * u)]
            });
        }
        if self.attrs.masked {
            shapes.push(vec![b.clone(), t.clone()]);
        }
        if self.attrs.dropout {
            shapes.push(vec![b.clone(), k(g), k(fi)]);
            shapes.push(vec![b.clone(), k(g), k(u)]);
        }
        let mut f = Func::new("rnn");
        let ids: Vec<Id> = shapes
            .into_iter()
            .enumerate()
            .map(|(i, s)| f.input(&format!("a{i}"), Type::f32(s)))
            .collect();
        let y = f.push(Op::Rnn(self.attrs.clone()), &ids).unwrap();
        let wty = f.ty(y).clone();
        let w = f.input("w", wty.clone());
        let prod = f.mul(y, w).unwrap();
        let loss = f
            .reduce(ReduceOp::Sum, prod, (0..wty.rank()).collect())
            .unwrap();
        let wrt: Vec<Id> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.attrs.is_constant(*i))
            .map(|(_, &id)| id)
            .collect();
        let grads = autodiff::grad(&mut f, loss, &wrt).unwrap();
        f.output("y", y);
        f.output("loss", loss);
        for (i, g) in grads.into_iter().enumerate() {
            f.output(&format!("g{i}"), g);
        }
        f
    }

    /// Operand values for batch `b` and length `t` (masks with some steps off; keep
    /// masks 0 or 1/(1-rate)).
    pub(crate) fn values(&self, rng: &mut Rng, b: usize, t: usize) -> Vec<ArrayD<f32>> {
        let (g, u, fi) = (self.gates(), self.units(), self.feats);
        let arr = |rng: &mut Rng, s: &[usize], r: f64| rng.array(s, -r, r).mapv(|v| v as f32);
        let scale = 1.0 / (u as f64).sqrt();
        let mut v = vec![
            arr(rng, &[b, t, fi], 1.0),
            arr(rng, &[fi, g * u], 1.5 / (fi as f64).sqrt()),
            arr(rng, &[u, g * u], 1.5 * scale),
        ];
        if self.attrs.use_bias {
            let shape = if self.two_bias() {
                vec![2, g * u]
            } else {
                vec![g * u]
            };
            v.push(arr(rng, &shape, 0.5));
        }
        if self.attrs.masked {
            v.push(ArrayD::from_shape_fn(IxDyn(&[b, t]), |_| {
                f32::from(rng.uniform() > 0.3)
            }));
        }
        if self.attrs.dropout {
            for n in [fi, u] {
                v.push(ArrayD::from_shape_fn(IxDyn(&[b, g, n]), |_| {
                    if rng.uniform() < 0.3 { 0.0 } else { 1.0 / 0.7 }
                }));
            }
        }
        let yshape: Vec<usize> = if self.attrs.return_sequences {
            vec![b, t, u]
        } else {
            vec![b, u]
        };
        v.push(arr(rng, &yshape, 1.0));
        v
    }
}

pub(crate) fn attrs(cell: Cell, reset_after: bool, flags: [bool; 4], units: usize) -> RnnAttrs {
    let [seq, back, masked, dropout] = flags;
    RnnAttrs {
        cell,
        units: units as i64,
        activation: "tanh".into(),
        recurrent_activation: "sigmoid".into(),
        return_sequences: seq,
        go_backwards: back,
        reset_after,
        use_bias: true,
        masked,
        zero_output: masked && back,
        dropout,
    }
}

pub(crate) const CELLS: [(Cell, bool); 4] = [
    (Cell::Simple, false),
    (Cell::Lstm, false),
    (Cell::Gru, true),
    (Cell::Gru, false),
];

/// Every cell × return_sequences × go_backwards × mask × recurrent dropout, each
/// compiled once and run at one step and a random length, an odd batch and batch 1.
#[test]
pub(crate) fn every_variant_matches_the_interpreter() {
    let mut rng = Rng::new(11);
    let mut n = 0;
    for (cell, ra) in CELLS {
        for bits in 0..16u32 {
            let flags = [0, 1, 2, 3].map(|i| bits >> i & 1 == 1);
            let units = rng.int(1, 19);
            let c = Case {
                attrs: attrs(cell, ra, flags, units),
                feats: rng.int(1, 9),
            };
            let f = c.func();
            for (b, t) in [
                (1, 1),
                (rng.int(1, 4) * 2 + 1, rng.int(2, 9)),
                (1, rng.int(2, 6)),
            ] {
                let name = format!("{} b={b} t={t} f={}", c.attrs, c.feats);
                compare_jit(&name, &f, &c.values(&mut rng, b, t));
                n += 1;
            }
        }
    }
    assert_eq!(n, 4 * 16 * 3);
}

/// Sizes where the kernel's GEMMs and team split take their large-size paths
/// (batch split across threads, many columns), masks and dropout included.
#[test]
pub(crate) fn larger_layers_match_the_interpreter() {
    let mut rng = Rng::new(12);
    for (cell, ra) in CELLS {
        for flags in [[true, false, false, false], [false, true, true, true]] {
            let c = Case {
                attrs: attrs(cell, ra, flags, 33),
                feats: 24,
            };
            let name = format!("{} large", c.attrs);
            compare_jit(&name, &c.func(), &c.values(&mut rng, 37, 13));
        }
    }
}

/// Activations off the polynomial path (through the reference's scalar function),
/// no bias, and zero_output without go_backwards.
#[test]
pub(crate) fn other_activations_and_options_match() {
    let mut rng = Rng::new(13);
    for (cell, ra) in CELLS {
        for (act, ract) in [
            ("relu", "hard_sigmoid"),
            ("softsign", "sigmoid"),
            ("tanh", "linear"),
        ] {
            let mut a = attrs(cell, ra, [true, false, true, false], 5);
            a.activation = act.into();
            a.recurrent_activation = ract.into();
            a.use_bias = false;
            a.zero_output = true;
            let c = Case { attrs: a, feats: 3 };
            compare_jit(
                &format!("{}", c.attrs),
                &c.func(),
                &c.values(&mut rng, 3, 4),
            );
        }
    }
}

/// The compiled gradients against central differences of the compiled loss (f32, so
/// a step of 1e-2 and a tolerance of 5e-3 relative: rounding ~1e-5·|loss|/h and the
/// step's truncation ~h²·|f'''| both stay well below it).
#[test]
pub(crate) fn compiled_gradients_match_finite_differences() {
    let mut rng = Rng::new(14);
    for (cell, ra) in CELLS {
        for flags in [
            [true, false, false, false],
            [false, true, true, true],
            [true, true, true, false],
        ] {
            let c = Case {
                attrs: attrs(cell, ra, flags, 6),
                feats: 4,
            };
            let f = c.func();
            let jit = runtime::compile(&f, Backend::Jit).unwrap();
            let vals = c.values(&mut rng, 3, 5);
            let run = |v: &[ArrayD<f32>]| {
                let views: Vec<_> = v.iter().map(|a| a.view()).collect();
                jit.run(&views).unwrap()
            };
            let base = run(&vals);
            let diff: Vec<usize> = (0..vals.len() - 1)
                .filter(|&i| !c.attrs.is_constant(i))
                .collect();
            for (gi, &k) in diff.iter().enumerate() {
                let grad = &base[2 + gi];
                for _ in 0..6 {
                    let p = rng.int(0, vals[k].len() - 1);
                    let h = 1e-2f32;
                    let loss_at = |d: f32| {
                        let mut v = vals.clone();
                        v[k].as_slice_mut().unwrap()[p] += d;
                        f64::from(run(&v)[1].iter().next().copied().unwrap())
                    };
                    let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * f64::from(h));
                    let an = f64::from(grad.as_slice().unwrap()[p]);
                    let tol = 5e-3 * an.abs().max(numeric.abs()).max(1.0);
                    assert!(
                        (an - numeric).abs() <= tol,
                        "{}: d/d(a{k})[{p}] compiled {an} vs numeric {numeric}",
                        c.attrs
                    );
                }
            }
        }
    }
}

/// Bidirectional layers (the backward direction with go_backwards and zero_output
/// under a mask) with recurrent dropout, through the model lowering: forward, loss
/// and train step compiled against interpreted, gradients against finite differences.
#[test]
pub(crate) fn bidirectional_masked_dropout_compiles() {
    let x = "{t: {shape: [batch, seq], dtype: i32}}";
    let emb = "  - embedding: {input_dim: 9, output_dim: 5, mask_zero: true}\n";
    for layer in [
        "lstm: {units: 7, recurrent_dropout: 0.3, return_sequences: true}",
        "gru: {units: 6, recurrent_dropout: 0.2}",
        "gru: {units: 5, reset_after: false, return_sequences: true}",
        "simple_rnn: {units: 4, recurrent_dropout: 0.4}",
    ] {
        check_layers(
            x,
            &format!("{emb}  - bidirectional: {{layer: {{{layer}}}}}"),
        );
    }
}
