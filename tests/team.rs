//! Work split across kiln's thread team, against the interpreter: matrix products cut
//! into row or column blocks or by batch entry, small products cut by columns (with
//! their odd-width tails), and large loops cut along their outermost axis.
//!
//! This file is its own test binary so that it can fix the team's size before the team
//! starts (both tests set the same value): three threads, so that every split is uneven and some parts are stolen, on
//! any machine (two cores or one). Tolerance as in tests/jit.rs: f32 sums in a
//! different order agree to 2e-4 · max(1, |interp|).

#[path = "suite/common.rs"]
mod common;

use common::Rng;
use kiln::dim::Dim;
use kiln::ir::{Func, Type, Unary, passes};
use ndarray::ArrayD;

fn compare(name: &str, f: &Func, inputs: &[ArrayD<f32>]) {
    common::compare_jit(name, f, inputs)
}

fn konst(v: &[usize]) -> Vec<Dim> {
    v.iter().map(|&d| Dim::konst(d as i64)).collect()
}

#[test]
fn split_products_and_loops_match_the_interpreter() {
    // SAFETY: set before any thread of this process reads the environment (the team
    // starts on the first compiled call below), and this binary has only this test.
    unsafe { std::env::set_var("KILN_NUM_THREADS", "3") };
    let mut rng = Rng::new(4242);
    let mut cases = 0;
    for &batch in &[None, Some(1usize), Some(2), Some(5)] {
        for &m in &[1usize, 3, 4, 5, 37, 130] {
            for &k in &[1usize, 300] {
                for &n in &[1usize, 3, 10, 33, 257] {
                    for (ta, tb) in [(false, false), (true, false), (false, true)] {
                        // Keep the sweep fast: the larger batched cases only untransposed.
                        if batch.is_some() && (ta || tb) && m * n > 1000 {
                            continue;
                        }
                        let pre: Vec<usize> = batch.into_iter().collect();
                        let shape_of = |r: usize, c: usize, t: bool| {
                            let mut s = pre.clone();
                            s.extend(if t { [c, r] } else { [r, c] });
                            s
                        };
                        let (sa, sb) = (shape_of(m, k, ta), shape_of(k, n, tb));
                        let mut f = Func::new("p");
                        let a = f.input("a", Type::f32(konst(&sa)));
                        let b = f.input("b", Type::f32(konst(&sb)));
                        let c = f.matmul(a, b, ta, tb).unwrap();
                        f.output("c", c);
                        // A loop over the product (split when it is large) and a
                        // reduction keeping the outer axis.
                        let t = f.unary(Unary::Tanh, c).unwrap();
                        f.output("tanh", t);
                        let r = f.reduce(kiln::ir::ReduceOp::Sum, t, vec![pre.len() + 1]);
                        f.output("rows", r.unwrap());
                        let ins = vec![
                            rng.array(&sa, -0.9, 0.9).mapv(|v| v as f32),
                            rng.array(&sb, -0.9, 0.9).mapv(|v| v as f32),
                        ];
                        let name = format!("{pre:?} m={m} k={k} n={n} ta={ta} tb={tb}");
                        compare(&name, &passes::optimize(&f), &ins);
                        cases += 1;
                        if batch.is_none() {
                            // The same product with a fused epilogue: tanh(c·s + bias),
                            // `s` per row (a zero inner stride), `bias` per column.
                            let mut f = Func::new("e");
                            let a = f.input("a", Type::f32(konst(&sa)));
                            let b = f.input("b", Type::f32(konst(&sb)));
                            let s = f.input("s", Type::f32(konst(&[m])));
                            let bias = f.input("bias", Type::f32(konst(&[n])));
                            let c = f.matmul(a, b, ta, tb).unwrap();
                            let shape = konst(&[m, n]);
                            let sb_ = f.broadcast(s, &shape, &[0]).unwrap();
                            let bb = f.broadcast(bias, &shape, &[1]).unwrap();
                            let cs = f.mul(c, sb_).unwrap();
                            let y = f.add(cs, bb).unwrap();
                            let t = f.unary(Unary::Tanh, y).unwrap();
                            f.output("y", t);
                            let f = passes::optimize(&f);
                            let plan = kiln::jit::plan::plan(&f).print();
                            assert!(plan.contains("epilogue"), "{name}: not fused:\n{plan}");
                            let mut ins = ins.clone();
                            ins.push(rng.array(&[m], 0.5, 1.5).mapv(|v| v as f32));
                            ins.push(rng.array(&[n], -0.5, 0.5).mapv(|v| v as f32));
                            compare(&format!("{name} epilogue"), &f, &ins);
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 300, "{cases} cases");
}

/// A reduction along the innermost axis with a fused epilogue (`log(Σ exp x) · s`,
/// `s` one value per row): applied as each row finishes, on loops split across the
/// team or not.
#[test]
fn reductions_with_fused_epilogues_match_the_interpreter() {
    // SAFETY: as above (this is the binary's second test; both set the same value).
    unsafe { std::env::set_var("KILN_NUM_THREADS", "3") };
    let mut rng = Rng::new(99);
    for shape in [
        vec![1usize, 5],
        vec![3, 1],
        vec![130, 257],
        vec![2, 40000],
        vec![4, 3, 9],
        vec![7, 60, 50],
    ] {
        let r = shape.len();
        let mut f = Func::new("r");
        let x = f.input("x", Type::f32(konst(&shape)));
        let s = f.input("s", Type::f32(konst(&shape[..r - 1])));
        let e = f.unary(Unary::Exp, x).unwrap();
        let sum = f.reduce(kiln::ir::ReduceOp::Sum, e, vec![r - 1]).unwrap();
        let l = f.unary(Unary::Log, sum).unwrap();
        let y = f.mul(l, s).unwrap();
        f.output("y", y);
        let f = passes::optimize(&f);
        let plan = kiln::jit::plan::plan(&f).print();
        assert!(
            plan.contains("the reduced value"),
            "{shape:?}: not fused:\n{plan}"
        );
        let ins = vec![
            rng.array(&shape, -2.0, 2.0).mapv(|v| v as f32),
            rng.array(&shape[..r - 1], -1.0, 1.0).mapv(|v| v as f32),
        ];
        compare(&format!("reduce epilogue {shape:?}"), &f, &ins);
    }
}
