//! Multi-store loop fusion (`jit::plan::stores`): an elementwise loop whose stored
//! value a later loop over the same space reads element for element runs inside that
//! loop as one more store. Shown here: the plan has the merged nests (Adam's three
//! updates of one weight as one loop); compiled against interpreted on random
//! elementwise graphs whose values have several uses, at odd and symbolic sizes (large
//! enough to run split across cores); in-place (donated) updates equal ordinary runs
//! bit for bit, and a read that would see an element its own nest already overwrote
//! keeps its input out of place.

use crate::common::{self, Rng};
use kiln::dim::Dim;
use kiln::ir::{Binary, Cmp, Func, Id, Op, Type, Unary, passes};
use kiln::jit::plan::{self, Kernel};
use kiln::runtime::{self, Backend};
use ndarray::{ArrayD, IxDyn};

/// The number of extra stores of each loop kernel of `f`'s plan, in kernel order.
fn extra_stores(f: &Func) -> Vec<usize> {
    plan::plan(&passes::optimize(f))
        .kernels
        .iter()
        .filter_map(|k| match k {
            Kernel::Loop(l) => Some(l.also.len()),
            _ => None,
        })
        .collect()
}

/// Adam's update of one weight of shape `shape` (inputs p, m, v, g and the bias-corrected
/// rate as a scalar): outputs the new p, m and v, as the optimizer lowers it.
fn adam(shape: &[Dim]) -> Func {
    let mut f = Func::new("adam");
    let ty = Type::f32(shape.to_vec());
    let p = f.input("p", ty.clone());
    let m = f.input("m", ty.clone());
    let v = f.input("v", ty.clone());
    let g = f.input("g", ty);
    let lr = f.input("lr", Type::f32(vec![]));
    // m' = m + (g - m)(1 - b1), v' = v + (g² - v)(1 - b2)
    let d = f.sub(g, m).unwrap();
    let d = f.mul_c(d, 0.1).unwrap();
    let m2 = f.add(m, d).unwrap();
    let g2 = f.mul(g, g).unwrap();
    let e = f.sub(g2, v).unwrap();
    let e = f.mul_c(e, 0.001).unwrap();
    let v2 = f.add(v, e).unwrap();
    // p' = p - lr m' / (sqrt(v') + eps)
    let lrb = f.broadcast(lr, shape, &[]).unwrap();
    let step = f.mul(m2, lrb).unwrap();
    let s = f.unary(Unary::Sqrt, v2).unwrap();
    let s = f.add_c(s, 1e-7).unwrap();
    let q = f.div(step, s).unwrap();
    let p2 = f.sub(p, q).unwrap();
    f.output("p", p2);
    f.output("m", m2);
    f.output("v", v2);
    f
}

fn inputs_of(f: &Func, rng: &mut Rng, batch: usize) -> Vec<ArrayD<f32>> {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = common::concrete(&inp.ty, batch, 1);
            let (lo, hi) = if inp.name == "v" {
                (0.0, 2.0)
            } else {
                (-1.5, 1.5)
            };
            rng.array(&shape, lo, hi).mapv(|x| x as f32)
        })
        .collect()
}

/// Runs `f` with `donate` offered, both through `run` and in place, and checks every
/// value (in place: the donated input) equals the run of `f` compiled without
/// donation, bit for bit, and the interpreter's to the JIT suite's tolerance.
fn check_in_place(name: &str, f: &Func, donate: &[(usize, usize)], ins: &[ArrayD<f32>]) {
    common::compare_jit(name, f, ins);
    let views: Vec<_> = ins.iter().map(|a| a.view()).collect();
    let plain = runtime::compile(f, Backend::Jit)
        .unwrap()
        .run(&views)
        .unwrap();
    let k = runtime::compile_donating(f, Backend::Jit, donate).unwrap();
    let again = k.run(&views).unwrap();
    for (o, (a, b)) in again.iter().zip(&plain).enumerate() {
        assert!(same_bits(a, b), "{name}: output {o} run with donation");
    }
    let mut state = ins.to_vec();
    let outs = k.run_inplace(&mut state).unwrap();
    for (o, v) in outs.iter().enumerate() {
        let got = match (v, k.donated().iter().find(|p| p.1 == o)) {
            (None, Some(&(i, _))) => &state[i],
            (Some(v), _) => v,
            (None, None) => panic!("{name}: output {o} missing"),
        };
        assert!(
            same_bits(got, &plain[o]),
            "{name}: output {} in place",
            f.outputs[o].0
        );
    }
}

fn same_bits(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn adam_updates_one_weight_in_one_loop() {
    let shapes: [Vec<Dim>; 3] = [
        vec![Dim::konst(5000), Dim::konst(64)],
        vec![Dim::konst(7), Dim::konst(3), Dim::konst(13)],
        vec![Dim::sym("batch"), Dim::konst(37)],
    ];
    let mut rng = Rng::new(11);
    for shape in shapes {
        let f = adam(&shape);
        // One loop computes m', v' and p' and stores all three.
        assert_eq!(extra_stores(&f), vec![2], "{shape:?}");
        for batch in [1, 5, 443] {
            let ins = inputs_of(&f, &mut rng, batch);
            let donate = [(0, 0), (1, 1), (2, 2)];
            let name = format!("adam {shape:?} batch {batch}");
            check_in_place(&name, &f, &donate, &ins);
            let k = runtime::compile_donating(&f, Backend::Jit, &donate).unwrap();
            assert_eq!(k.donated(), &donate[..], "{name}: all three in place");
        }
    }
}

#[test]
fn a_read_of_another_element_keeps_its_input_out_of_place() {
    // m' = m + p^T g (a stored value with a second use), p' = p - m': merged, the
    // nest reads p across the diagonal while storing p'. Writing p' into p's memory
    // would let later elements read new values, so that donation is refused; m' still
    // goes in place (read at its own element only).
    for n in [3, 9, 130] {
        let mut f = Func::new("t");
        let ty = Type::f32(vec![Dim::konst(n), Dim::konst(n)]);
        let p = f.input("p", ty.clone());
        let m = f.input("m", ty.clone());
        let g = f.input("g", ty);
        let pt = f.transpose(p, vec![1, 0]).unwrap();
        let t = f.mul(pt, g).unwrap();
        let m2 = f.add(m, t).unwrap();
        let p2 = f.sub(p, m2).unwrap();
        f.output("p", p2);
        f.output("m", m2);
        assert_eq!(extra_stores(&f), vec![1], "n={n}");
        let mut rng = Rng::new(n as u64);
        let ins = inputs_of(&f, &mut rng, 1);
        let donate = [(0, 0), (1, 1)];
        check_in_place(&format!("transposed n={n}"), &f, &donate, &ins);
        let k = runtime::compile_donating(&f, Backend::Jit, &donate).unwrap();
        assert_eq!(k.donated(), &[(1, 1)], "n={n}");
    }
}

#[test]
fn loops_merge_only_when_each_element_reads_its_own() {
    // A stored value read transposed, or broadcast along an axis, is not read element
    // for element: its loop stays separate.
    let mut f = Func::new("t");
    let ty = Type::f32(vec![Dim::konst(6), Dim::konst(6)]);
    let x = f.input("x", ty.clone());
    let e = f.unary(Unary::Exp, x).unwrap();
    let et = f.transpose(e, vec![1, 0]).unwrap();
    let y = f.add(et, x).unwrap();
    f.output("y", y);
    f.output("e", e);
    assert_eq!(extra_stores(&f), vec![0, 0]);
    let mut rng = Rng::new(3);
    let ins = inputs_of(&f, &mut rng, 1);
    common::compare_jit("transposed read", &passes::optimize(&f), &ins);
}

/// A random elementwise graph over `[batch, n]` whose values have several uses: each
/// new value combines earlier ones (unary, binary, compare and select, a row
/// reduction broadcast back, a row vector broadcast down), and a few become outputs.
fn random_graph(rng: &mut Rng, n: i64) -> Func {
    let shape = vec![Dim::sym("batch"), Dim::konst(n)];
    let mut f = Func::new("r");
    let mut vals: Vec<Id> = (0..3)
        .map(|i| f.input(&format!("x{i}"), Type::f32(shape.clone())))
        .collect();
    let row = f.input("row", Type::f32(vec![Dim::konst(n)]));
    let rowb = f.broadcast(row, &shape, &[1]).unwrap();
    vals.push(rowb);
    for _ in 0..rng.int(4, 14) {
        // Recent values more often: chains with shared intermediates.
        let pick = |rng: &mut Rng, vals: &[Id]| {
            let lo = vals.len().saturating_sub(4);
            let i = if rng.uniform() < 0.7 {
                rng.int(lo, vals.len() - 1)
            } else {
                rng.int(0, vals.len() - 1)
            };
            vals[i.min(vals.len() - 1)]
        };
        let x = pick(rng, &vals);
        let y = pick(rng, &vals);
        let v = match rng.int(0, 5) {
            0 => {
                let op = [Unary::Tanh, Unary::Sigmoid, Unary::Abs, Unary::Neg][rng.int(0, 3)];
                f.unary(op, x).unwrap()
            }
            1 | 2 => {
                let op = [Binary::Add, Binary::Sub, Binary::Mul, Binary::Max][rng.int(0, 3)];
                f.push(Op::Binary(op), &[x, y]).unwrap()
            }
            3 => {
                let a = f.unary(Unary::Abs, x).unwrap();
                let a = f.add_c(a, 0.5).unwrap();
                let s = f.unary(Unary::Sqrt, a).unwrap();
                f.div(y, s).unwrap()
            }
            4 => {
                let c = f.cmp(Cmp::Gt, x, y).unwrap();
                let h = f.mul_c(y, 0.5).unwrap();
                f.select(c, x, h).unwrap()
            }
            _ => {
                let r = f.reduce_keep(kiln::ir::ReduceOp::Sum, x, &[1]).unwrap();
                let b = f.broadcast(r, &shape, &[0, 1]).unwrap();
                let b = f.mul_c(b, 0.1).unwrap();
                f.add(y, b).unwrap()
            }
        };
        vals.push(v);
    }
    let last = *vals.last().unwrap();
    f.output("out", last);
    for k in 0..rng.int(1, 3) {
        let v = vals[rng.int(4, vals.len() - 1)];
        f.output(&format!("o{k}"), v);
    }
    f
}

#[test]
fn random_graphs_with_shared_values_match_the_interpreter() {
    let mut merged = 0;
    for seed in 0..40u64 {
        let mut rng = Rng::new(500 + seed);
        let n = [1, 3, 17, 61][rng.int(0, 3)];
        let f = random_graph(&mut rng, n);
        merged += extra_stores(&f).iter().sum::<usize>();
        let f = passes::optimize(&f);
        for batch in [1, 7, 301] {
            let ins: Vec<ArrayD<f32>> = f
                .inputs
                .iter()
                .map(|inp| {
                    let shape = common::concrete(&inp.ty, batch, 1);
                    rng.array(&shape, -2.0, 2.0).mapv(|x| x as f32)
                })
                .collect();
            common::compare_jit(
                &format!("random graph {seed} batch {batch}:\n{}", f.print()),
                &f,
                &ins,
            );
        }
    }
    assert!(merged >= 20, "only {merged} extra stores over 40 graphs");
}

#[test]
fn bundled_models_update_each_weight_and_its_slots_in_one_loop_in_place() {
    for spec in ["mlp", "cnn", "lstm", "attention"] {
        let m = kiln::Model::from_path(format!("{}/specs/{spec}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let step = kiln::lower::train::build(&m.graph).unwrap();
        let f = &step.func;
        let text = plan::plan(&passes::optimize(f)).print();
        // Each weight's new optimizer slots (Adam's two moments, RMSprop's one) are
        // stored by the loop that updates the weight.
        let merged = text.matches("also store").count();
        assert!(
            merged >= step.layout.params.len(),
            "{spec}: {merged} extra stores for {} weights",
            step.layout.params.len()
        );
        let donate = kiln::lower::train::carried(f);
        let k = runtime::compile_donating(f, Backend::Jit, &donate).unwrap();
        assert_eq!(k.donated(), &donate[..], "{spec}: all updates in place");
        let mut rng = Rng::new(5);
        let ins: Vec<ArrayD<f32>> = common::f32_inputs(f, &mut rng, 3, 5)
            .into_iter()
            .zip(&f.inputs)
            .map(|(a, inp)| {
                if inp.ty.dtype.is_int() {
                    ArrayD::from_elem(IxDyn(a.shape()), 1.0)
                } else {
                    // Second moments are never negative.
                    a.mapv(f32::abs)
                }
            })
            .collect();
        check_in_place(spec, f, &donate, &ins);
    }
}
