//! Every primitive: the interpreter against a direct computation, and its VJP against
//! central finite differences in f64, over random shapes and values.
//!
//! Tolerance: |analytic − numeric| ≤ 1e-6 · max(1, |analytic|, |numeric|). With
//! h = 1e-6 in f64 the central difference's truncation error is O(h²) ≈ 1e-12 and its
//! rounding error O(ε/h) ≈ 1e-10, so a correct VJP passes with four orders of margin
//! while a wrong one (a missing term, a wrong sign) is off by O(1).

use crate::common::Rng;
use kiln::dim::Dim;
use kiln::ir::elementwise::rng_uniform;
use kiln::ir::{
    Binary, Cell, Cmp, ConvAttrs, Func, Id, Op, Padding, PoolKind, ReduceOp, RnnAttrs, Type, Unary,
    WindowAttrs, autodiff, interp, passes,
};
use ndarray::{ArrayD, IxDyn};

fn ty(a: &ArrayD<f64>) -> Type {
    Type::f32(a.shape().iter().map(|&d| Dim::konst(d as i64)).collect())
}

/// Builds `out = build(inputs)`, checks the optimized function computes the same, then
/// checks d(sum(out * w))/d(input) against finite differences for every input marked
/// differentiable. Returns the forward value for further checks.
pub(crate) fn check(
    name: &str,
    inputs: &[(ArrayD<f64>, bool)],
    build: impl Fn(&mut Func, &[Id]) -> kiln::ir::Result<Id>,
) -> ArrayD<f64> {
    let mut f = Func::new(name);
    let ids: Vec<Id> = inputs
        .iter()
        .enumerate()
        .map(|(i, (a, _))| f.input(&format!("x{i}"), ty(a)))
        .collect();
    let out = build(&mut f, &ids).unwrap_or_else(|e| panic!("{name}: {e}"));
    let out_ty = f.ty(out).clone();
    let w = f.input("w", out_ty.clone());
    let prod = f.mul(out, w).unwrap();
    let axes: Vec<usize> = (0..out_ty.rank()).collect();
    let loss = f.reduce(ReduceOp::Sum, prod, axes).unwrap();
    let diff: Vec<Id> = ids
        .iter()
        .zip(inputs)
        .filter(|(_, (_, d))| *d)
        .map(|(&i, _)| i)
        .collect();
    let mut lossf = f.clone();
    lossf.outputs = vec![("loss".into(), loss)];
    let grads = autodiff::grad(&mut f, loss, &diff).unwrap_or_else(|e| panic!("{name}: {e}"));
    f.output("out", out);
    for (k, g) in grads.iter().enumerate() {
        f.output(&format!("g{k}"), *g);
    }
    let mut rng = Rng::new(name.len() as u64 * 31 + 5);
    let shape: Vec<usize> = out_ty
        .shape
        .iter()
        .map(|d| d.as_const().unwrap() as usize)
        .collect();
    let wv = rng.array(&shape, -1.0, 1.0);
    let mut vals: Vec<ArrayD<f64>> = inputs.iter().map(|(a, _)| a.clone()).collect();
    vals.push(wv);
    let got = interp::eval::<f64>(&f, &vals).unwrap_or_else(|e| panic!("{name}: {e}"));
    // The optimized function computes the same values.
    let opt = passes::optimize(&f);
    let got_opt = interp::eval::<f64>(&opt, &vals).unwrap();
    for (a, b) in got.iter().zip(&got_opt) {
        let d = (a - b).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
        assert!(d <= 1e-12, "{name}: optimized IR differs by {d}");
    }
    let h = 1e-6;
    let mut gi = 0;
    for (k, (a, d)) in inputs.iter().enumerate() {
        if !*d {
            continue;
        }
        let analytic = &got[1 + gi];
        gi += 1;
        let n = a.len();
        let picks: Vec<usize> = if n <= 24 {
            (0..n).collect()
        } else {
            (0..24).map(|_| rng.int(0, n - 1)).collect()
        };
        for p in picks {
            let mut plus = vals.clone();
            let mut minus = vals.clone();
            plus[k].as_slice_mut().unwrap()[p] += h;
            minus[k].as_slice_mut().unwrap()[p] -= h;
            let lp = interp::eval::<f64>(&lossf, &plus).unwrap()[0].sum();
            let lm = interp::eval::<f64>(&lossf, &minus).unwrap()[0].sum();
            let numeric = (lp - lm) / (2.0 * h);
            let an = analytic.as_slice().unwrap()[p];
            let tol = 1e-6 * 1f64.max(an.abs()).max(numeric.abs());
            assert!(
                (an - numeric).abs() <= tol,
                "{name}: d/dx{k}[{p}] analytic {an} vs numeric {numeric}"
            );
        }
    }
    got[0].clone()
}

fn close(name: &str, a: &ArrayD<f64>, b: &ArrayD<f64>) {
    assert_eq!(a.shape(), b.shape(), "{name}: shapes");
    for (x, y) in a.iter().zip(b.iter()) {
        assert!(
            (x - y).abs() <= 1e-9 * 1f64.max(y.abs()),
            "{name}: {x} vs {y}"
        );
    }
}

fn random_shape(rng: &mut Rng, rank: usize) -> Vec<usize> {
    (0..rank).map(|_| rng.int(1, 5)).collect()
}

#[test]
fn unary_ops() {
    let mut rng = Rng::new(1);
    type Case = (Unary, f64, f64, fn(f64) -> f64);
    let ops: [Case; 10] = [
        (Unary::Neg, -2.0, 2.0, |x| -x),
        (Unary::Exp, -2.0, 2.0, f64::exp),
        (Unary::Log, 0.2, 3.0, f64::ln),
        (Unary::Log1p, -0.5, 3.0, f64::ln_1p),
        (Unary::Tanh, -2.0, 2.0, f64::tanh),
        (Unary::Sqrt, 0.2, 3.0, f64::sqrt),
        (Unary::Rsqrt, 0.2, 3.0, |x| 1.0 / x.sqrt()),
        (Unary::Abs, 0.1, 2.0, f64::abs),
        (Unary::Erf, -2.0, 2.0, libm::erf),
        (Unary::Sigmoid, -4.0, 4.0, |x| 1.0 / (1.0 + (-x).exp())),
    ];
    for (op, lo, hi, reference) in ops {
        for rank in 0..4 {
            let shape = random_shape(&mut rng, rank);
            let mut x = rng.array(&shape, lo, hi);
            if op == Unary::Abs {
                // Away from the kink at 0, on both sides.
                x.mapv_inplace(|v| {
                    if rng_uniform(3, 3, (v * 1e6) as u64) < 0.5 {
                        -v
                    } else {
                        v
                    }
                });
            }
            let y = check(&format!("{op:?}"), &[(x.clone(), true)], |f, i| {
                f.unary(op, i[0])
            });
            close(&format!("{op:?}"), &y, &x.mapv(reference));
        }
    }
}

#[test]
fn binary_compare_select() {
    let mut rng = Rng::new(2);
    type Case = (Binary, fn(f64, f64) -> f64);
    let ops: [Case; 7] = [
        (Binary::Add, |a, b| a + b),
        (Binary::Sub, |a, b| a - b),
        (Binary::Mul, |a, b| a * b),
        (Binary::Div, |a, b| a / b),
        (Binary::Max, f64::max),
        (Binary::Min, f64::min),
        (Binary::Pow, f64::powf),
    ];
    for (op, reference) in ops {
        for rank in 0..4 {
            let shape = random_shape(&mut rng, rank);
            let a = rng.array(&shape, 0.5, 2.0);
            let b = rng.array(&shape, 0.5, 2.0);
            let y = check(
                &format!("{op:?}"),
                &[(a.clone(), true), (b.clone(), true)],
                |f, i| f.push(Op::Binary(op), &[i[0], i[1]]),
            );
            let mut want = a.clone();
            ndarray::Zip::from(&mut want)
                .and(&b)
                .for_each(|x, &y| *x = reference(*x, y));
            close(&format!("{op:?}"), &y, &want);
        }
    }
    for c in [Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne] {
        let shape = random_shape(&mut rng, 2);
        let a = rng.array(&shape, -1.0, 1.0);
        let b = rng.array(&shape, -1.0, 1.0);
        let y = check("select", &[(a.clone(), true), (b.clone(), true)], |f, i| {
            let m = f.push(Op::Cmp(c), &[i[0], i[1]])?;
            f.push(Op::Select, &[m, i[0], i[1]])
        });
        let mut want = a.clone();
        ndarray::Zip::from(&mut want).and(&b).for_each(|x, &y| {
            let r = match c {
                Cmp::Lt => *x < y,
                Cmp::Le => *x <= y,
                Cmp::Gt => *x > y,
                Cmp::Ge => *x >= y,
                Cmp::Eq => *x == y,
                Cmp::Ne => *x != y,
            };
            *x = if r { *x } else { y };
        });
        close("select", &y, &want);
    }
}

#[test]
fn structural_ops() {
    let mut rng = Rng::new(3);
    for _ in 0..4 {
        // broadcast: new leading axis and a size-1 axis expanded
        let (m, n) = (rng.int(1, 4), rng.int(2, 4));
        let x = rng.array(&[m, 1], -1.0, 1.0);
        let to = [Dim::konst(3), Dim::konst(m as i64), Dim::konst(n as i64)];
        let y = check("broadcast", &[(x.clone(), true)], |f, i| {
            f.broadcast(i[0], &to, &[1, 2])
        });
        for a in 0..3 {
            for b in 0..m {
                for c in 0..n {
                    assert_eq!(y[[a, b, c]], x[[b, 0]]);
                }
            }
        }
        // reshape and transpose
        let x = rng.array(&[2, 3, 4], -1.0, 1.0);
        let y = check("reshape", &[(x.clone(), true)], |f, i| {
            f.reshape(i[0], vec![Dim::konst(6), Dim::konst(4)])
        });
        close(
            "reshape",
            &y,
            &x.clone().into_shape_with_order(IxDyn(&[6, 4])).unwrap(),
        );
        let y = check("transpose", &[(x.clone(), true)], |f, i| {
            f.transpose(i[0], vec![2, 0, 1])
        });
        close(
            "transpose",
            &y,
            &x.clone()
                .permuted_axes(IxDyn(&[2, 0, 1]))
                .as_standard_layout()
                .to_owned(),
        );
        // slice, pad, concat
        let y = check("slice", &[(x.clone(), true)], |f, i| f.slice(i[0], 2, 1, 3));
        close(
            "slice",
            &y,
            &x.slice(ndarray::s![.., .., 1..3]).to_owned().into_dyn(),
        );
        let y = check("pad", &[(x.clone(), true)], |f, i| {
            f.push(
                Op::Pad {
                    axis: 1,
                    low: Dim::konst(2),
                    high: Dim::konst(1),
                },
                &[i[0]],
            )
        });
        assert_eq!(y.shape(), &[2, 6, 4]);
        close(
            "pad",
            &y.slice(ndarray::s![.., 2..5, ..]).to_owned().into_dyn(),
            &x,
        );
        assert_eq!(
            y.slice(ndarray::s![.., 0..2, ..]).sum() + y.slice(ndarray::s![.., 5.., ..]).sum(),
            0.0
        );
        let z = rng.array(&[2, 5, 4], -1.0, 1.0);
        let y = check("concat", &[(x.clone(), true), (z.clone(), true)], |f, i| {
            f.push(Op::Concat { axis: 1 }, &[i[0], i[1]])
        });
        close(
            "concat",
            &y,
            &ndarray::concatenate(ndarray::Axis(1), &[x.view(), z.view()]).unwrap(),
        );
    }
}

#[test]
fn reductions() {
    let mut rng = Rng::new(4);
    for rank in 1..4 {
        let shape = random_shape(&mut rng, rank);
        let x = rng.array(&shape, -1.0, 1.0);
        let axes: Vec<usize> = (0..rank).filter(|_| rng.uniform() < 0.6).collect();
        let axes = if axes.is_empty() { vec![0] } else { axes };
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            let y = check(&format!("reduce {op:?}"), &[(x.clone(), true)], |f, i| {
                f.reduce(op, i[0], axes.clone())
            });
            let mut want = x.clone();
            for &a in axes.iter().rev() {
                want = match op {
                    ReduceOp::Sum => want.sum_axis(ndarray::Axis(a)),
                    ReduceOp::Max => {
                        want.fold_axis(ndarray::Axis(a), f64::NEG_INFINITY, |&m, &v| m.max(v))
                    }
                };
            }
            close("reduce", &y, &want);
        }
    }
}

#[test]
fn matmul_with_transposes_and_batches() {
    let mut rng = Rng::new(5);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for batch in [vec![], vec![2], vec![2, 3]] {
            let (m, k, n) = (rng.int(1, 5), rng.int(1, 5), rng.int(1, 5));
            let mut sa = batch.clone();
            sa.extend(if ta { [k, m] } else { [m, k] });
            let mut sb = batch.clone();
            sb.extend(if tb { [n, k] } else { [k, n] });
            let a = rng.array(&sa, -1.0, 1.0);
            let b = rng.array(&sb, -1.0, 1.0);
            let y = check("matmul", &[(a.clone(), true), (b.clone(), true)], |f, i| {
                f.matmul(i[0], i[1], ta, tb)
            });
            // Direct triple loop.
            let bs: usize = batch.iter().product();
            let a3 = a
                .clone()
                .into_shape_with_order(IxDyn(&[bs, sa[sa.len() - 2], sa[sa.len() - 1]]))
                .unwrap();
            let b3 = b
                .clone()
                .into_shape_with_order(IxDyn(&[bs, sb[sb.len() - 2], sb[sb.len() - 1]]))
                .unwrap();
            let y3 = y.clone().into_shape_with_order(IxDyn(&[bs, m, n])).unwrap();
            for p in 0..bs {
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0;
                        for q in 0..k {
                            let av = if ta { a3[[p, q, i]] } else { a3[[p, i, q]] };
                            let bv = if tb { b3[[p, j, q]] } else { b3[[p, q, j]] };
                            s += av * bv;
                        }
                        assert!((y3[[p, i, j]] - s).abs() < 1e-12);
                    }
                }
            }
        }
    }
}

/// An independent convolution: pad explicitly, then slide.
fn naive_conv2d(
    x: &ArrayD<f64>,
    k: &ArrayD<f64>,
    s: [usize; 2],
    d: [usize; 2],
    pad: [(usize, usize); 2],
    groups: usize,
) -> ArrayD<f64> {
    let (b, h, w, c) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (kh, kw, cg, fo) = (k.shape()[0], k.shape()[1], k.shape()[2], k.shape()[3]);
    let (hp, wp) = (h + pad[0].0 + pad[0].1, w + pad[1].0 + pad[1].1);
    let mut xp = ArrayD::<f64>::zeros(IxDyn(&[b, hp, wp, c]));
    for i0 in 0..b {
        for i1 in 0..h {
            for i2 in 0..w {
                for i3 in 0..c {
                    xp[[i0, i1 + pad[0].0, i2 + pad[1].0, i3]] = x[[i0, i1, i2, i3]];
                }
            }
        }
    }
    let oh = (hp - (d[0] * (kh - 1) + 1)) / s[0] + 1;
    let ow = (wp - (d[1] * (kw - 1) + 1)) / s[1] + 1;
    let fg = fo / groups;
    let mut y = ArrayD::<f64>::zeros(IxDyn(&[b, oh, ow, fo]));
    for i0 in 0..b {
        for o1 in 0..oh {
            for o2 in 0..ow {
                for f in 0..fo {
                    let g = f / fg;
                    let mut acc = 0.0;
                    for a in 0..kh {
                        for bb in 0..kw {
                            for ci in 0..cg {
                                acc += xp[[
                                    i0,
                                    o1 * s[0] + a * d[0],
                                    o2 * s[1] + bb * d[1],
                                    g * cg + ci,
                                ]] * k[[a, bb, ci, f]];
                            }
                        }
                    }
                    y[[i0, o1, o2, f]] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn conv_strides_dilation_padding_groups() {
    let mut rng = Rng::new(6);
    let cases = [
        (Padding::Valid, [1, 1], [1, 1], 1),
        (Padding::Same, [2, 2], [1, 1], 1),
        (Padding::Same, [1, 1], [2, 2], 1),
        (Padding::Valid, [2, 1], [1, 1], 2),
        (Padding::Same, [3, 2], [1, 1], 1),
    ];
    for (padding, s, d, groups) in cases {
        let (h, w) = (rng.int(4, 7), rng.int(4, 7));
        let (kh, kw) = (rng.int(1, 3), rng.int(1, 3));
        let c = 2 * groups;
        let fo = 2 * groups;
        let x = rng.array(&[2, h, w, c], -1.0, 1.0);
        let k = rng.array(&[kh, kw, c / groups, fo], -1.0, 1.0);
        let attrs = ConvAttrs {
            strides: s.iter().map(|&v| v as i64).collect(),
            dilation: d.iter().map(|&v| v as i64).collect(),
            padding,
            groups: groups as i64,
        };
        let y = check("conv2d", &[(x.clone(), true), (k.clone(), true)], |f, i| {
            f.push(Op::Conv(attrs.clone()), &[i[0], i[1]])
        });
        let pads = [
            padding.amounts(h as i64, kh as i64, s[0] as i64, d[0] as i64),
            padding.amounts(w as i64, kw as i64, s[1] as i64, d[1] as i64),
        ];
        let pads = [
            (pads[0].0 as usize, pads[0].1 as usize),
            (pads[1].0 as usize, pads[1].1 as usize),
        ];
        close("conv2d", &y, &naive_conv2d(&x, &k, s, d, pads, groups));
    }
    // conv1d, causal: the same as a 2-D conv of height 1 with left padding only.
    let (l, kk) = (7, 3);
    let x = rng.array(&[2, l, 3], -1.0, 1.0);
    let k = rng.array(&[kk, 3, 4], -1.0, 1.0);
    let attrs = ConvAttrs {
        strides: vec![1],
        dilation: vec![2],
        padding: Padding::Causal,
        groups: 1,
    };
    let y = check(
        "conv1d causal",
        &[(x.clone(), true), (k.clone(), true)],
        |f, i| f.push(Op::Conv(attrs.clone()), &[i[0], i[1]]),
    );
    let x4 = x
        .clone()
        .into_shape_with_order(IxDyn(&[2, 1, l, 3]))
        .unwrap();
    let k4 = k
        .clone()
        .into_shape_with_order(IxDyn(&[1, kk, 3, 4]))
        .unwrap();
    let want = naive_conv2d(&x4, &k4, [1, 1], [1, 2], [(0, 0), (4, 0)], 1)
        .into_shape_with_order(IxDyn(&[2, l, 4]))
        .unwrap();
    close("conv1d causal", &y, &want);
}

#[test]
fn pooling() {
    let mut rng = Rng::new(7);
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (padding, win, s) in [
            (Padding::Valid, [2, 2], [2, 2]),
            (Padding::Same, [3, 2], [2, 1]),
            (Padding::Same, [2, 2], [2, 2]),
        ] {
            let (h, w) = (rng.int(3, 6), rng.int(3, 6));
            let x = rng.array(&[2, h, w, 3], -1.0, 1.0);
            let attrs = WindowAttrs {
                window: win.to_vec(),
                strides: s.to_vec(),
                padding,
            };
            let y = check("pool", &[(x.clone(), true)], |f, i| {
                f.push(
                    Op::Pool {
                        kind,
                        attrs: attrs.clone(),
                    },
                    &[i[0]],
                )
            });
            // Direct: over in-bounds taps only (TF's rule for padded average pooling).
            let (lo_h, _) = padding.amounts(h as i64, win[0], s[0], 1);
            let (lo_w, _) = padding.amounts(w as i64, win[1], s[1], 1);
            for b in 0..2 {
                for oh in 0..y.shape()[1] {
                    for ow in 0..y.shape()[2] {
                        for c in 0..3 {
                            let mut vals = vec![];
                            for a in 0..win[0] {
                                for bb in 0..win[1] {
                                    let ih = oh as i64 * s[0] + a - lo_h;
                                    let iw = ow as i64 * s[1] + bb - lo_w;
                                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w
                                    {
                                        vals.push(x[[b, ih as usize, iw as usize, c]]);
                                    }
                                }
                            }
                            let want = match kind {
                                PoolKind::Max => {
                                    vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                                }
                                PoolKind::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                            };
                            assert!((y[[b, oh, ow, c]] - want).abs() < 1e-12);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gather_and_scatter() {
    let mut rng = Rng::new(8);
    let table = rng.array(&[6, 3], -1.0, 1.0);
    let idx = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.0, 5.0, 2.0, 2.0, 1.0, 0.0]).unwrap();
    let y = check(
        "gather",
        &[(table.clone(), true), (idx.clone(), false)],
        |f, i| f.push(Op::Gather, &[i[0], i[1]]),
    );
    for a in 0..2 {
        for b in 0..3 {
            let row = idx[[a, b]] as usize;
            for c in 0..3 {
                assert_eq!(y[[a, b, c]], table[[row, c]]);
            }
        }
    }
}

fn rnn_case(cell: Cell, reset_after: bool, return_sequences: bool, go_backwards: bool, seed: u64) {
    rnn_case_masked(
        cell,
        reset_after,
        (return_sequences, go_backwards),
        None,
        seed,
    )
}

/// A recurrent cell, with a Keras mask (`Some(zero_output)`) or without.
fn rnn_case_masked(
    cell: Cell,
    reset_after: bool,
    (return_sequences, go_backwards): (bool, bool),
    mask: Option<bool>,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let (b, t, i, u) = (2, 3, 3, 2);
    let g = match cell {
        Cell::Simple => 1,
        Cell::Lstm => 4,
        Cell::Gru => 3,
    };
    let x = rng.array(&[b, t, i], -1.0, 1.0);
    let k = rng.array(&[i, g * u], -0.8, 0.8);
    let r = rng.array(&[u, g * u], -0.8, 0.8);
    let bias = if cell == Cell::Gru && reset_after {
        rng.array(&[2, g * u], -0.5, 0.5)
    } else {
        rng.array(&[g * u], -0.5, 0.5)
    };
    let attrs = RnnAttrs {
        cell,
        units: u as i64,
        activation: "tanh".into(),
        recurrent_activation: "sigmoid".into(),
        return_sequences,
        go_backwards,
        reset_after,
        use_bias: true,
        masked: mask.is_some(),
        zero_output: mask == Some(true),
        dropout: false,
    };
    let mut args = vec![(x, true), (k, true), (r, true), (bias, true)];
    if mask.is_some() {
        // Each row masked at a different step (row 1 at its last), one row not at all.
        let m = ArrayD::from_shape_fn(IxDyn(&[b, t]), |ix| {
            if ix[0] == 0 && ix[1] == 1 || ix[0] == 1 && ix[1] == t - 1 {
                0.0
            } else {
                1.0
            }
        });
        args.push((m, false));
    }
    check(
        &format!(
            "{cell:?} ra={reset_after} seq={return_sequences} back={go_backwards} mask={mask:?}"
        ),
        &args,
        |f, ids| f.push(Op::Rnn(attrs.clone()), ids),
    );
}

#[test]
fn masked_recurrent_cells() {
    let mut seed = 40;
    for cell in [Cell::Simple, Cell::Lstm, Cell::Gru] {
        for reset_after in [true, false] {
            if cell != Cell::Gru && !reset_after {
                continue;
            }
            for dirs in [(false, false), (true, false), (true, true), (false, true)] {
                for zero in [false, true] {
                    seed += 1;
                    rnn_case_masked(cell, reset_after, dirs, Some(zero), seed);
                }
            }
        }
    }
}

#[test]
fn recurrent_cells() {
    let mut seed = 10;
    for cell in [Cell::Simple, Cell::Lstm, Cell::Gru] {
        for reset_after in [true, false] {
            if cell != Cell::Gru && !reset_after {
                continue;
            }
            for (seq, back) in [(false, false), (true, false), (true, true)] {
                seed += 1;
                rnn_case(cell, reset_after, seq, back, seed);
            }
        }
    }
}

#[test]
fn symbolic_shapes_bind_at_run_time() {
    // One function, two batch sizes.
    let mut f = Func::new("t");
    let x = f.input("x", Type::f32(vec![Dim::sym("batch"), Dim::konst(3)]));
    let n = f.dim_size(&Dim::sym("batch"));
    let s = f.reduce(ReduceOp::Sum, x, vec![0, 1]).unwrap();
    let m = f.div(s, n).unwrap();
    f.output("mean", m);
    for b in [1usize, 5] {
        let v = ArrayD::from_elem(IxDyn(&[b, 3]), 2.0);
        let out = interp::eval::<f64>(&f, &[v]).unwrap();
        assert_eq!(out[0].sum(), 6.0);
    }
    let bad = ArrayD::from_elem(IxDyn(&[2, 4]), 1.0);
    assert!(interp::eval::<f64>(&f, &[bad]).is_err());
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The recurrent cells' forward values against a direct, step-by-step transcription of
/// Keras's equations (LSTM gates i, f, c, o; GRU z, r, h with reset_after).
#[test]
fn recurrent_forward_matches_keras_equations() {
    let mut rng = Rng::new(42);
    let (b, t, i, u) = (2, 4, 3, 2);
    let x = rng.array(&[b, t, i], -1.0, 1.0);
    for (cell, g) in [(Cell::Simple, 1), (Cell::Lstm, 4), (Cell::Gru, 3)] {
        let k = rng.array(&[i, g * u], -0.8, 0.8);
        let r = rng.array(&[u, g * u], -0.8, 0.8);
        let bias = if cell == Cell::Gru {
            rng.array(&[2, g * u], -0.5, 0.5)
        } else {
            rng.array(&[g * u], -0.5, 0.5)
        };
        let attrs = RnnAttrs {
            cell,
            units: u as i64,
            activation: "tanh".into(),
            recurrent_activation: "sigmoid".into(),
            return_sequences: true,
            go_backwards: false,
            reset_after: true,
            use_bias: true,
            masked: false,
            zero_output: false,
            dropout: false,
        };
        let mut f = Func::new("rnn");
        let ids: Vec<Id> = [&x, &k, &r, &bias]
            .iter()
            .enumerate()
            .map(|(n, a)| f.input(&format!("a{n}"), ty(a)))
            .collect();
        let y = f.push(Op::Rnn(attrs), &ids).unwrap();
        f.output("y", y);
        let got = interp::eval::<f64>(&f, &[x.clone(), k.clone(), r.clone(), bias.clone()])
            .unwrap()
            .remove(0);
        for bb in 0..b {
            let mut h = vec![0.0; u];
            let mut c = vec![0.0; u];
            for s in 0..t {
                // xz = x W (+ input bias); hz = h U (+ recurrent bias for GRU).
                let mut xz = vec![0.0; g * u];
                let mut hz = vec![0.0; g * u];
                for j in 0..g * u {
                    xz[j] = (0..i).map(|q| x[[bb, s, q]] * k[[q, j]]).sum::<f64>();
                    hz[j] = (0..u).map(|q| h[q] * r[[q, j]]).sum::<f64>();
                    if cell == Cell::Gru {
                        xz[j] += bias[[0, j]];
                        hz[j] += bias[[1, j]];
                    } else {
                        xz[j] += bias[[j]];
                    }
                }
                let hn: Vec<f64> = match cell {
                    Cell::Simple => (0..u).map(|j| (xz[j] + hz[j]).tanh()).collect(),
                    Cell::Lstm => (0..u)
                        .map(|j| {
                            let z = |gate: usize| xz[gate * u + j] + hz[gate * u + j];
                            let (ig, fg, cg, og) =
                                (sigmoid(z(0)), sigmoid(z(1)), z(2).tanh(), sigmoid(z(3)));
                            c[j] = fg * c[j] + ig * cg;
                            og * c[j].tanh()
                        })
                        .collect(),
                    Cell::Gru => (0..u)
                        .map(|j| {
                            let zg = sigmoid(xz[j] + hz[j]);
                            let rg = sigmoid(xz[u + j] + hz[u + j]);
                            let hh = (xz[2 * u + j] + rg * hz[2 * u + j]).tanh();
                            zg * h[j] + (1.0 - zg) * hh
                        })
                        .collect(),
                };
                h = hn;
                for j in 0..u {
                    assert!(
                        (got[[bb, s, j]] - h[j]).abs() < 1e-12,
                        "{cell:?} step {s}: {} vs {}",
                        got[[bb, s, j]],
                        h[j]
                    );
                }
            }
        }
    }
}

/// The interpreter runs in f32 too, agreeing with f64 to f32 rounding.
#[test]
fn f32_and_f64_agree() {
    let m =
        kiln::Model::from_path(format!("{}/specs/cnn.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let f = kiln::lower::predict_func(&m.graph).unwrap();
    let mut rng = Rng::new(9);
    let vals: Vec<ArrayD<f64>> = f
        .inputs
        .iter()
        .map(|inp| {
            let shape: Vec<usize> = inp
                .ty
                .shape
                .iter()
                .map(|d| d.as_const().unwrap_or(3) as usize)
                .collect();
            if inp.name.ends_with("moving_variance") {
                rng.array(&shape, 0.5, 1.5)
            } else {
                rng.array(&shape, -0.5, 0.5)
            }
        })
        .collect();
    let v32: Vec<ArrayD<f32>> = vals.iter().map(|a| a.mapv(|v| v as f32)).collect();
    let y64 = interp::eval::<f64>(&f, &vals).unwrap().remove(0);
    let y32 = interp::eval::<f32>(&f, &v32).unwrap().remove(0);
    for (a, b) in y64.iter().zip(y32.iter()) {
        assert!(
            (a - *b as f64).abs() < 1e-5 * a.abs().max(1.0),
            "{a} vs {b}"
        );
    }
}
