//! Column sums across the team (`jit::plan::columns`, `jit::codegen::nest::columns`): a
//! loop that sums over its outer axes and keeps an inner axis of a multiple of 32
//! (bias and layer-norm weight gradients) is planned as blocks of 32 columns, outermost,
//! so the team can split it, and each block keeps its sums in registers over all rows.
//! Shown here: which loops are blocked; that the results are bit for bit the sums in
//! row order (what the row-by-row nest computes), plain and as fused products, for
//! widths that are blocked and widths that are not, row counts from 1 to past the
//! parallel threshold, rank 2 and 3; and compiled against interpreted.

use kiln::dim::Dim;
use kiln::ir::{Func, ReduceOp, Type};
use kiln::jit::plan::{self, Kernel};
use kiln::runtime::{self, Backend};
use ndarray::{ArrayD, IxDyn};

use crate::common::Rng;

/// The sum over every axis but the last of `x` (times `y` when `product`),
/// `x: [batch, b, n]`, or `[batch, n]` when `b` is `None`.
fn column_sum(b: Option<usize>, n: usize, product: bool) -> Func {
    let mut f = Func::new("t");
    let shape: Vec<Dim> = std::iter::once(Dim::sym("batch"))
        .chain(b.map(|b| Dim::konst(b as i64)))
        .chain(std::iter::once(Dim::konst(n as i64)))
        .collect();
    let x = f.input("x", Type::f32(shape.clone()));
    let v = if product {
        let y = f.input("y", Type::f32(shape.clone()));
        f.mul(x, y).unwrap()
    } else {
        x
    };
    let axes: Vec<usize> = (0..shape.len() - 1).collect();
    let s = f.reduce(ReduceOp::Sum, v, axes).unwrap();
    f.output("s", s);
    f
}

fn data(rng: &mut Rng, shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.range(-2.0, 2.0) as f32).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// The sums in row order from zero, each term `x` or `x·y` (fused when the host has
/// FMA, as the generated code accumulates a product).
fn in_row_order(x: &ArrayD<f32>, y: Option<&ArrayD<f32>>, n: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    let fma = std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fma = false;
    let xs = x.as_slice().unwrap();
    let mut acc = vec![0.0f32; n];
    for (r, row) in xs.chunks(n).enumerate() {
        for (c, a) in acc.iter_mut().enumerate() {
            *a = match y {
                None => *a + row[c],
                Some(y) => {
                    let yv = y.as_slice().unwrap()[r * n + c];
                    if fma {
                        row[c].mul_add(yv, *a)
                    } else {
                        *a + row[c] * yv
                    }
                }
            };
        }
    }
    acc
}

#[test]
fn wide_column_sums_are_planned_in_blocks_of_32() {
    for (n, blocked) in [
        (64, true),
        (128, true),
        (96, true),
        (32, false),
        (100, false),
    ] {
        let p = plan::plan(&column_sum(None, n, false));
        let spaces: Vec<usize> = p
            .kernels
            .iter()
            .filter_map(|k| match k {
                Kernel::Loop(l) => Some(l.space.len()),
                _ => None,
            })
            .collect();
        let want = if blocked { 3 } else { 2 };
        assert_eq!(spaces, [want], "n = {n}");
    }
}

#[test]
fn blocked_column_sums_add_in_row_order() {
    let mut rng = Rng::new(11);
    let cases: &[(usize, Option<usize>, usize)] = &[
        (1, None, 64),
        (7, None, 128),
        (333, None, 96),
        (4096, None, 128),
        (5, Some(3), 64),
        (32, Some(33), 64),
        (3, Some(7), 100),
        (9, None, 32),
    ];
    for &(a, b, n) in cases {
        for product in [false, true] {
            let f = column_sum(b, n, product);
            let mut shape = vec![a];
            shape.extend(b);
            shape.push(n);
            let x = data(&mut rng, &shape);
            let y = data(&mut rng, &shape);
            let inputs: Vec<ArrayD<f32>> = if product {
                vec![x.clone(), y.clone()]
            } else {
                vec![x.clone()]
            };
            let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
            let jit = runtime::compile(&f, Backend::Jit).unwrap();
            let got = jit.run(&views).unwrap();
            let want = in_row_order(&x, product.then_some(&y), n);
            let got: Vec<u32> = got[0].iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "a {a} b {b:?} n {n} product {product}");
            crate::common::compare_jit(&format!("a{a} n{n}"), &f, &inputs);
        }
    }
}
