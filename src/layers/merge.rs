//! Merging layers: add, subtract, multiply (equal shapes, size-1 axes broadcast) and
//! concatenate (equal shapes except on `axis`, whose sizes add up symbolically).

use super::lower::{Call, LowerCx, expand, norm_axis};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, MERGES_MASK, Mask, NO_FACTS};
use crate::args::{Default, arg, int};
use crate::dim::{Dim, fmt_shape};
use crate::ir::{Func, Id, Op, Result};

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

fn lower_concatenate(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let axis = norm_axis(l.args.int("axis"), l.output.rank());
    lw.f.push(Op::Concat { axis }, x)
}
