//! Merging layers: add, subtract, multiply, maximum, minimum, average (equal shapes,
//! size-1 axes broadcast), concatenate (equal shapes except on `axis`, whose sizes add
//! up symbolically) and dot (Keras's `batch_dot`).

use super::lower::{Call, LowerCx, expand, norm_axis};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, MERGES_MASK, Mask, NO_FACTS};
use crate::args::{ArgKind, Default, arg, int};
use crate::dim::{Dim, fmt_shape};
use crate::ir::{Func, Id, Op, ReduceOp, Result, Unary};

pub const ADD: LayerKind = LayerKind {
    name: "add",
    class: "Add",
    args: &[],
    arity: Arity::Range(2, usize::MAX),
    infer: elementwise,
    lower: lower_add,
    facts: MERGES_MASK,
};
pub const SUBTRACT: LayerKind = LayerKind {
    name: "subtract",
    class: "Subtract",
    args: &[],
    arity: Arity::Range(2, 2),
    infer: elementwise,
    lower: lower_subtract,
    facts: MERGES_MASK,
};
pub const MULTIPLY: LayerKind = LayerKind {
    name: "multiply",
    class: "Multiply",
    args: &[],
    arity: Arity::Range(2, usize::MAX),
    infer: elementwise,
    lower: lower_multiply,
    facts: MERGES_MASK,
};

pub const MAXIMUM: LayerKind = LayerKind {
    name: "maximum",
    class: "Maximum",
    args: &[],
    arity: Arity::Range(2, usize::MAX),
    infer: elementwise,
    lower: lower_maximum,
    facts: MERGES_MASK,
};
pub const MINIMUM: LayerKind = LayerKind {
    name: "minimum",
    class: "Minimum",
    args: &[],
    arity: Arity::Range(2, usize::MAX),
    infer: elementwise,
    lower: lower_minimum,
    facts: MERGES_MASK,
};
pub const AVERAGE: LayerKind = LayerKind {
    name: "average",
    class: "Average",
    args: &[],
    arity: Arity::Range(2, usize::MAX),
    infer: elementwise,
    lower: lower_average,
    facts: MERGES_MASK,
};

fn elementwise(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let mut out = cx.inputs[0].ty.shape.clone();
    for i in 1..cx.inputs.len() {
        let s = &cx.inputs[i].ty.shape;
        let mismatch = if s.len() != out.len() {
            true
        } else {
            let mut bad = false;
            for (o, d) in out.iter_mut().zip(s) {
                if o == d || d.as_const() == Some(1) {
                    continue;
                }
                if o.as_const() == Some(1) {
                    *o = d.clone();
                    continue;
                }
                bad = true;
            }
            bad
        };
        if mismatch {
            let (a, b) = (cx.inputs[0].name.to_string(), cx.inputs[i].name.to_string());
            let (sa, sb) = (fmt_shape(&cx.inputs[0].ty.shape), fmt_shape(s));
            return cx.shape_error(
                "E0504",
                format!("`{}` needs inputs of the same shape, but `{a}` is {sa} and `{b}` is {sb}", cx.kind.name),
                "make the shapes equal (a `dense` or `reshape` on one branch), or use `concatenate` to join them side by side",
            );
        }
    }
    Some(Inferred {
        output: TensorType::f32(out),
        params: Vec::new(),
    })
}

pub const CONCATENATE: LayerKind = LayerKind {
    name: "concatenate",
    class: "Concatenate",
    args: &[arg("axis", int(-64), Default::Int(-1))],
    arity: Arity::Range(2, usize::MAX),
    infer: concatenate,
    lower: lower_concatenate,
    facts: Facts {
        mask: Mask::Joins("axis"),
        ..NO_FACTS
    },
};

fn concatenate(cx: &mut Ctx) -> Option<Inferred> {
    let dtype = cx.inputs[0].ty.dtype;
    let rank = cx.inputs[0].ty.rank();
    let axis = cx.axis("axis", cx.args.int("axis"), rank)?;
    if axis == 0 {
        return cx.arg_error(
            "axis",
            "E0508",
            "`concatenate` cannot join along the batch axis (axis 0)".into(),
            "join along a feature axis, e.g. `axis: -1`",
        );
    }
    let mut out = cx.inputs[0].ty.shape.clone();
    for i in 1..cx.inputs.len() {
        let t = cx.inputs[i].ty;
        let ok = t.rank() == rank
            && t.dtype == dtype
            && (0..rank).all(|j| j == axis || t.shape[j] == out[j]);
        if !ok {
            let (a, b) = (cx.inputs[0].name.to_string(), cx.inputs[i].name.to_string());
            let (sa, sb) = (cx.inputs[0].ty.describe(), t.describe());
            return cx.shape_error(
                "E0505",
                format!("`concatenate` on axis {axis} needs inputs that agree on every other axis, but `{a}` is {sa} and `{b}` is {sb}"),
                "the sizes must match on all axes but the one being joined; check `axis` or reshape one input",
            );
        }
        out[axis] = match out[axis].add(&t.shape[axis]) {
            Ok(d) => d,
            Err(e) => return cx.overflow(e),
        };
    }
    let _: &Dim = &out[axis];
    Some(Inferred {
        output: TensorType::new(out, dtype),
        params: Vec::new(),
    })
}

/// Folds the inputs with `op`, broadcasting size-1 axes to the output shape.
fn fold(
    lw: &mut LowerCx,
    l: &Call,
    x: &[Id],
    op: fn(&mut Func, Id, Id) -> Result<Id>,
) -> Result<Id> {
    let shape = l.output.shape.clone();
    let mut acc = expand(lw, x[0], &shape)?;
    for &v in &x[1..] {
        let v = expand(lw, v, &shape)?;
        acc = op(&mut lw.f, acc, v)?;
    }
    Ok(acc)
}

fn lower_add(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    fold(lw, l, x, Func::add)
}

fn lower_subtract(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    fold(lw, l, x, Func::sub)
}

fn lower_multiply(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    fold(lw, l, x, Func::mul)
}

fn lower_maximum(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    fold(lw, l, x, Func::max)
}

fn lower_minimum(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    fold(lw, l, x, Func::min)
}

/// Keras's `Average`: the sum, divided by the number of inputs.
fn lower_average(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let sum = fold(lw, l, x, Func::add)?;
    let n = lw.f.scalar(x.len() as f64);
    lw.f.div(sum, n)
}

fn lower_concatenate(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let axis = norm_axis(l.args.int("axis"), l.output.rank());
    lw.f.push(Op::Concat { axis }, x)
}

pub const DOT: LayerKind = LayerKind {
    name: "dot",
    class: "Dot",
    args: &[
        arg("axes", ArgKind::Axes, Default::Required),
        arg("normalize", ArgKind::Bool, Default::Bool(false)),
    ],
    arity: Arity::Range(2, 2),
    infer: dot,
    lower: lower_dot,
    facts: NO_FACTS,
};

/// The two contracted axes, non-negative (Keras: an int is the same axis of both, a
/// negative one counted from the end of each).
fn dot_axes(axes: &[i64], ranks: [usize; 2]) -> [i64; 2] {
    let pick = |i: usize| if axes.len() == 1 { axes[0] } else { axes[i] };
    [0, 1].map(|i| {
        let a = pick(i);
        if a < 0 { a + ranks[i] as i64 } else { a }
    })
}

/// Keras's `Dot.compute_output_shape`: the first input's shape without its contracted
/// axis, then the second's without its batch and contracted axes; `[batch, 1]` when
/// that leaves only the batch axis.
fn dot(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let given = cx.args.ints("axes").to_vec();
    if given.len() > 2 {
        return cx.arg_error(
            "axes",
            "E0508",
            format!(
                "`dot` takes one axis or two (one per input), not {}",
                given.len()
            ),
            "write `axes: -1`, or `axes: [2, 1]` for the first and the second input",
        );
    }
    let (s1, s2) = (cx.inputs[0].ty.shape.clone(), cx.inputs[1].ty.shape.clone());
    if s1.len() < 2 || s2.len() < 2 {
        return cx.shape_error(
            "E0501",
            "`dot` needs two inputs of rank 2 or more (a batch axis and a feature axis)".into(),
            "declare the inputs with a batch axis, e.g. [batch, 8]",
        );
    }
    let [a0, a1] = dot_axes(&given, [s1.len(), s2.len()]);
    for (a, r) in [(a0, s1.len()), (a1, s2.len())] {
        if a <= 0 || a >= r as i64 {
            return cx.arg_error(
                "axes",
                "E0508",
                format!("`dot` cannot contract axis {a} of a rank-{r} input (axis 0 is the batch)"),
                "contract a feature axis: from 1 to the last (or negative from the end)",
            );
        }
    }
    let (a0, a1) = (a0 as usize, a1 as usize);
    if s1[a0] != s2[a1] || s1[0] != s2[0] {
        let (n1, n2) = (cx.inputs[0].name.to_string(), cx.inputs[1].name.to_string());
        return cx.shape_error(
            "E0504",
            format!(
                "`dot` contracts axis {a0} of `{n1}` ({}) with axis {a1} of `{n2}` ({}); they need equal sizes and the same batch",
                fmt_shape(&s1),
                fmt_shape(&s2)
            ),
            "check `axes`: it names the axis of each input that is summed over",
        );
    }
    let mut out: Vec<Dim> = s1
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != a0)
        .map(|(_, d)| d.clone())
        .collect();
    out.extend(
        s2.iter()
            .enumerate()
            .filter(|&(i, _)| i != 0 && i != a1)
            .map(|(_, d)| d.clone()),
    );
    if out.len() == 1 {
        out.push(Dim::konst(1));
    }
    Some(Inferred {
        output: TensorType::f32(out),
        params: Vec::new(),
    })
}

/// Keras's `normalize` (L2, order 2): `x · min(rsqrt(Σ x²), 1/ε)` along `axis`.
fn l2_normalize(lw: &mut LowerCx, x: Id, axis: usize) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let sq = lw.f.mul(x, x)?;
    let s = lw.f.reduce(ReduceOp::Sum, sq, vec![axis])?;
    let inv = lw.f.unary(Unary::Rsqrt, s)?;
    let cap = lw.f.scalar(1.0 / crate::catalog::EPSILON);
    let inv = lw.f.min(inv, cap)?;
    let kept: Vec<usize> = (0..shape.len()).filter(|&i| i != axis).collect();
    let ib = lw.f.broadcast(inv, &shape, &kept)?;
    lw.f.mul(x, ib)
}

/// `batch_dot` as a broadcast product summed over the contracted axis: each input's
/// contracted axis moved last, both broadcast to [batch, rest of x…, rest of y…, k].
fn lower_dot(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let (r1, r2) = (lw.f.ty(x[0]).rank(), lw.f.ty(x[1]).rank());
    let [a0, a1] = dot_axes(l.args.ints("axes"), [r1, r2]).map(|a| a as usize);
    let (mut u, mut v) = (x[0], x[1]);
    if l.args.bool("normalize") {
        u = l2_normalize(lw, u, a0)?;
        v = l2_normalize(lw, v, a1)?;
    }
    let last_of = |r: usize, a: usize| -> Vec<usize> {
        let mut p: Vec<usize> = (0..r).filter(|&i| i != a).collect();
        p.push(a);
        p
    };
    let u = lw.f.transpose(u, last_of(r1, a0))?;
    let v = lw.f.transpose(v, last_of(r2, a1))?;
    let (su, sv) = (lw.f.ty(u).shape.clone(), lw.f.ty(v).shape.clone());
    // [batch, u's rest…, v's rest…, k]
    let mut full = su[..r1 - 1].to_vec();
    full.extend(sv[1..r2 - 1].iter().cloned());
    full.push(su[r1 - 1].clone());
    let n = full.len();
    let du: Vec<usize> = (0..r1 - 1).chain([n - 1]).collect();
    let dv: Vec<usize> = [0].into_iter().chain(r1 - 1..n).collect();
    let ub = lw.f.broadcast(u, &full, &du)?;
    let vb = lw.f.broadcast(v, &full, &dv)?;
    let p = lw.f.mul(ub, vb)?;
    let s = lw.f.reduce(ReduceOp::Sum, p, vec![n - 1])?;
    lw.f.reshape(s, l.output.shape.clone())
}
