//! Keras's `recurrent_dropout` on simple_rnn, lstm and gru (and through
//! `bidirectional`): with it, Keras's cells take their `implementation=1` path, where
//! each gate multiplies its input and its previous output by a mask of its own, drawn
//! once per sequence, in training only. The recurrent primitive takes both masks as
//! operands: its forward against a transcription of Keras's equations, its gradient
//! against finite differences (masks fixed), the lowering compiled against interpreted,
//! the masks' shapes and keep fractions, and inference (or rate 0) equal to no dropout
//! bit for bit.

use crate::common::Rng;
use crate::ir_prims::check;
use crate::wrappers_masking::check_layers;
use kiln::ir::{Cell, Func, Id, Op, RnnAttrs, Type, interp};
use kiln::lower::{self, Mode};
use ndarray::{ArrayD, IxDyn};

fn model(inputs: &str, layers: &str) -> kiln::Model {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n");
    kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

fn gates(cell: Cell) -> usize {
    match cell {
        Cell::Simple => 1,
        Cell::Lstm => 4,
        Cell::Gru => 3,
    }
}

/// A keep mask: each entry 0 (dropped) or 1/(1-rate), as inverted dropout gives.
fn keep(rng: &mut Rng, shape: &[usize], rate: f64) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        if rng.uniform() < rate {
            0.0
        } else {
            1.0 / (1.0 - rate)
        }
    })
}

struct Case {
    attrs: RnnAttrs,
    vals: Vec<ArrayD<f64>>,
}

/// A recurrent cell with keep masks (and a Keras mask when `masked`), random weights.
fn case(cell: Cell, reset_after: bool, (seq, back): (bool, bool), masked: bool, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let (b, t, i, u) = (3, 4, 3, 2);
    let g = gates(cell);
    let x = rng.array(&[b, t, i], -1.0, 1.0);
    let k = rng.array(&[i, g * u], -0.8, 0.8);
    let r = rng.array(&[u, g * u], -0.8, 0.8);
    let bias = if cell == Cell::Gru && reset_after {
        rng.array(&[2, g * u], -0.5, 0.5)
    } else {
        rng.array(&[g * u], -0.5, 0.5)
    };
    let mut vals = vec![x, k, r, bias];
    if masked {
        vals.push(ArrayD::from_shape_fn(IxDyn(&[b, t]), |ix| {
            if ix[0] == 0 && ix[1] == 1 || ix[0] == 2 && ix[1] == t - 1 {
                0.0
            } else {
                1.0
            }
        }));
    }
    vals.push(keep(&mut rng, &[b, g, i], 0.3));
    vals.push(keep(&mut rng, &[b, g, u], 0.5));
    let attrs = RnnAttrs {
        cell,
        units: u as i64,
        activation: "tanh".into(),
        recurrent_activation: "sigmoid".into(),
        return_sequences: seq,
        go_backwards: back,
        reset_after,
        use_bias: true,
        masked,
        zero_output: masked && back,
        dropout: true,
    };
    Case { attrs, vals }
}

fn cells() -> Vec<(Cell, bool)> {
    vec![
        (Cell::Simple, true),
        (Cell::Lstm, true),
        (Cell::Gru, true),
        (Cell::Gru, false),
    ]
}

/// The gradients with respect to the input, kernel, recurrent kernel and bias with
/// the keep masks fixed, against finite differences (and the optimized IR equal).
#[test]
fn keep_masks_differentiate() {
    let mut seed = 300;
    for (cell, ra) in cells() {
        for dirs in [(false, false), (true, false), (true, true)] {
            for masked in [false, true] {
                seed += 1;
                let c = case(cell, ra, dirs, masked, seed);
                let inputs: Vec<(ArrayD<f64>, bool)> = c
                    .vals
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), !c.attrs.is_constant(i)))
                    .collect();
                let name = format!("{cell:?} ra={ra} {dirs:?} masked={masked} dropout");
                check(&name, &inputs, |f, ids| {
                    f.push(Op::Rnn(c.attrs.clone()), ids)
                });
            }
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Keras 3.15's cells with `implementation=1` (`LSTMCell.call`, `GRUCell.call`,
/// `SimpleRNNCell.call`), transcribed step by step: gate `g` computes
/// `(x * dp_mask[g]) · kernel_g + (h * rec_dp_mask[g]) · recurrent_kernel_g`; the GRU's
/// `z * h_tm1` uses the undropped previous output; with reset_after false the
/// candidate's recurrent input is `(r * h_tm1 * rec_dp_mask[2]) · recurrent_kernel_h`.
#[test]
fn keep_masks_follow_keras_equations() {
    for (n, (cell, ra)) in cells().into_iter().enumerate() {
        let c = case(cell, ra, (true, false), false, 400 + n as u64);
        let [x, k, r, bias, xk, hk] = &c.vals[..] else {
            panic!("six operands")
        };
        let mut f = Func::new("rnn");
        let ids: Vec<Id> = c
            .vals
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let shape = a.shape().iter().map(|&d| (d as i64).into()).collect();
                f.input(&format!("a{i}"), Type::f32(shape))
            })
            .collect();
        let y = f.push(Op::Rnn(c.attrs.clone()), &ids).unwrap();
        f.output("y", y);
        let got = interp::eval::<f64>(&f, &c.vals).unwrap().remove(0);
        let (b, t, ni) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let (u, g) = (2, gates(cell));
        let two_rows = cell == Cell::Gru && ra;
        for bb in 0..b {
            let mut h = vec![0.0; u];
            let mut cs = vec![0.0; u];
            for s in 0..t {
                // Gate `gate`'s unit `j`: its input and recurrent pre-activations.
                let xg = |gate: usize, j: usize| {
                    let col = gate * u + j;
                    let v: f64 = (0..ni)
                        .map(|q| x[[bb, s, q]] * xk[[bb, gate, q]] * k[[q, col]])
                        .sum();
                    v + if two_rows {
                        bias[[0, col]]
                    } else {
                        bias[[col]]
                    }
                };
                let hg = |gate: usize, j: usize| {
                    let col = gate * u + j;
                    let v: f64 = (0..u).map(|q| h[q] * hk[[bb, gate, q]] * r[[q, col]]).sum();
                    v + if two_rows { bias[[1, col]] } else { 0.0 }
                };
                let hn: Vec<f64> = match cell {
                    Cell::Simple => (0..u).map(|j| (xg(0, j) + hg(0, j)).tanh()).collect(),
                    Cell::Lstm => (0..u)
                        .map(|j| {
                            let z = |gate| xg(gate, j) + hg(gate, j);
                            let (ig, fg, cg, og) =
                                (sigmoid(z(0)), sigmoid(z(1)), z(2).tanh(), sigmoid(z(3)));
                            cs[j] = fg * cs[j] + ig * cg;
                            og * cs[j].tanh()
                        })
                        .collect(),
                    Cell::Gru => {
                        let zs: Vec<f64> = (0..u).map(|j| sigmoid(xg(0, j) + hg(0, j))).collect();
                        let rs: Vec<f64> = (0..u).map(|j| sigmoid(xg(1, j) + hg(1, j))).collect();
                        (0..u)
                            .map(|j| {
                                let rec = if ra {
                                    rs[j] * hg(2, j)
                                } else {
                                    (0..u)
                                        .map(|q| rs[q] * h[q] * hk[[bb, 2, q]] * r[[q, 2 * u + j]])
                                        .sum()
                                };
                                let hh = (xg(2, j) + rec).tanh();
                                zs[j] * h[j] + (1.0 - zs[j]) * hh
                            })
                            .collect()
                    }
                };
                h = hn;
                for j in 0..u {
                    let d = (got[[bb, s, j]] - h[j]).abs();
                    assert!(
                        d < 1e-12,
                        "{cell:?} ra={ra} step {s}: {} vs {}",
                        got[[bb, s, j]],
                        h[j]
                    );
                }
            }
        }
        assert_eq!(g, xk.shape()[1]);
    }
}

/// Through the whole lowering: training draws the masks from the step's key (fixed
/// here), so the gradients are checked against finite differences in both modes, and
/// the forward functions and a whole training step compiled against interpreted.
#[test]
fn recurrent_dropout_lowers_differentiates_and_compiles() {
    let x = "{x: [batch, seq, 3]}";
    check_layers(x, "  - simple_rnn: {units: 2, recurrent_dropout: 0.4}");
    check_layers(
        x,
        "  - lstm: {units: 2, dropout: 0.3, recurrent_dropout: 0.4, return_sequences: true}",
    );
    check_layers(x, "  - gru: {units: 2, recurrent_dropout: 0.5}");
    check_layers(
        x,
        "  - gru: {units: 2, reset_after: false, dropout: 0.2, recurrent_dropout: 0.3}",
    );
    check_layers(
        x,
        "  - bidirectional: {layer: {lstm: {units: 2, recurrent_dropout: 0.3, return_sequences: true}}}",
    );
    // With a Keras mask: masked steps keep the (undropped) state.
    check_layers(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 4, output_dim: 3, mask_zero: true}\n  - gru: {units: 2, recurrent_dropout: 0.3, dropout: 0.2}",
    );
}

/// Runs `f` (interpreted, f32) on fixed inputs: the random key and step 7, the learning
/// rate 0.01, everything else from `rng`.
fn run(f: &Func, batch: usize, seq: usize, seed: u64) -> Vec<ArrayD<f32>> {
    let mut rng = Rng::new(seed);
    let vals: Vec<ArrayD<f32>> = f
        .inputs
        .iter()
        .map(|inp| {
            let shape = crate::common::concrete(&inp.ty, batch, seq);
            match inp.name.as_str() {
                "rng_key" | "step" => ArrayD::from_elem(IxDyn(&[]), 7.0),
                "lr" => ArrayD::from_elem(IxDyn(&[]), 0.01),
                _ => rng.array(&shape, -0.9, 0.9).mapv(|v| v as f32),
            }
        })
        .collect();
    interp::eval::<f32>(f, &vals).unwrap()
}

fn bits(a: &[ArrayD<f32>]) -> Vec<Vec<u32>> {
    a.iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// `recurrent_dropout: 0` is no dropout (a training step equal bit for bit), and at
/// inference a rate changes nothing.
#[test]
fn rate_zero_and_inference_are_no_dropout() {
    let x = "{x: [batch, seq, 3]}";
    let train = "\ntrain:\n  targets: {y: [batch, 2]}\n  loss: mse\n  optimizer: adam";
    for layer in ["simple_rnn", "lstm", "gru"] {
        let plain = model(
            x,
            &format!("  - {layer}: {{units: 2, dropout: 0.3}}{train}"),
        );
        let zero = model(
            x,
            &format!("  - {layer}: {{units: 2, dropout: 0.3, recurrent_dropout: 0.0}}{train}"),
        );
        let a = run(&lower::train::build(&plain.graph).unwrap().func, 4, 5, 1);
        let b = run(&lower::train::build(&zero.graph).unwrap().func, 4, 5, 1);
        assert_eq!(bits(&a), bits(&b), "{layer}: rate 0 changed the step");
        let half = model(
            x,
            &format!("  - {layer}: {{units: 2, dropout: 0.3, recurrent_dropout: 0.5}}"),
        );
        let a = run(
            &lower::forward(&plain.graph, Mode::Infer, "t").unwrap().f,
            4,
            5,
            2,
        );
        let b = run(
            &lower::forward(&half.graph, Mode::Infer, "t").unwrap().f,
            4,
            5,
            2,
        );
        assert_eq!(bits(&a), bits(&b), "{layer}: inference is not dropout-free");
    }
}

/// The masks training draws: `[batch, gates, features]` on the input and `[batch,
/// gates, units]` on the previous output, entries 0 or 1/(1-rate), dropped at the rate,
/// each gate's independent of the others' (as Keras draws `dropout_mask_count` masks);
/// with `dropout` 0 the input's is all ones.
#[test]
fn masks_have_keras_shapes_and_keep_fractions() {
    let (batch, rate, rec) = (2000usize, 0.4, 0.25);
    for (layer, g) in [("lstm", 4), ("gru", 3), ("simple_rnn", 1)] {
        for in_rate in [rate, 0.0] {
            let m = model(
                "{x: [batch, seq, 6]}",
                &format!("  - {layer}: {{units: 8, dropout: {in_rate}, recurrent_dropout: {rec}}}"),
            );
            let mut lw = lower::forward(&m.graph, Mode::Train, "t").unwrap();
            let node =
                lw.f.nodes
                    .iter()
                    .find(|n| matches!(n.op, Op::Rnn(_)))
                    .unwrap()
                    .clone();
            let Op::Rnn(attrs) = &node.op else {
                unreachable!()
            };
            let d = attrs.dropout_index().expect("keep masks in training");
            lw.f.outputs.clear();
            lw.f.output("xkeep", node.args[d]);
            lw.f.output("hkeep", node.args[d + 1]);
            let out = run(&lw.f, batch, 3, 3);
            assert_eq!(out[0].shape(), [batch, g, 6]);
            assert_eq!(out[1].shape(), [batch, g, 8]);
            for (k, (v, r)) in out.iter().zip([in_rate, rec]).enumerate() {
                let scale = (1.0 / (1.0 - r)) as f32;
                assert!(
                    v.iter().all(|&e| e == 0.0 || e == scale),
                    "{layer} mask {k}"
                );
                let n = v.len() as f64;
                let dropped = v.iter().filter(|&&e| e == 0.0).count() as f64 / n;
                // Five standard errors of a fraction of n draws.
                let se = (r * (1.0 - r) / n).sqrt();
                assert!(
                    (dropped - r).abs() <= 5.0 * se + 1e-12,
                    "{layer} mask {k}: {dropped}"
                );
                if g > 1 && r > 0.0 {
                    // Gates 0 and 1 agree as often as two independent draws do.
                    let same = (0..batch)
                        .flat_map(|b| (0..v.shape()[2]).map(move |j| (b, j)))
                        .filter(|&(b, j)| v[[b, 0, j]] == v[[b, 1, j]])
                        .count() as f64;
                    let m = (batch * v.shape()[2]) as f64;
                    let p = r * r + (1.0 - r) * (1.0 - r);
                    let se = (p * (1.0 - p) / m).sqrt();
                    assert!(
                        (same / m - p).abs() <= 5.0 * se,
                        "{layer}: gates not independent"
                    );
                }
            }
            let inference = lower::forward(&m.graph, Mode::Infer, "t").unwrap();
            assert!(
                !inference
                    .f
                    .nodes
                    .iter()
                    .any(|n| matches!(n.op, Op::Rng { .. }))
            );
        }
    }
}
