//! Reshaping: flatten, reshape (one `-1` allowed) and permute (Keras's 1-based dims).
//! The batch axis is never touched.

use super::NO_FACTS;
use super::layout::{self, DATA_FORMAT};
use super::lower::{Call, LowerCx};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use crate::args::{ArgKind, Default, MAX_SIZE, arg};
use crate::dim::{Dim, fmt_shape, product};
use crate::ir::{Id, Result};

pub const FLATTEN: LayerKind = LayerKind {
    name: "flatten",
    class: "Flatten",
    args: &[DATA_FORMAT],
    arity: Arity::One,
    infer: flatten,
    lower: lower_flatten,
    facts: NO_FACTS,
};

/// The reshaping layers keep axis 0 (the batch) and rearrange the rest, so they need
/// one: a rank-0 input (`x: []`) has none.
fn expect_batch_axis(cx: &mut Ctx) -> Option<()> {
    if cx.input().rank() >= 1 {
        return Some(());
    }
    cx.shape_error(
        "E0501",
        format!("`{}` needs an input with a batch axis", cx.kind.name),
        "declare the input as [batch, …]",
    );
    None
}

fn flatten(cx: &mut Ctx) -> Option<Inferred> {
    expect_batch_axis(cx)?;
    let inp = cx.input().clone();
    let rest = match product(&inp.shape[1..]) {
        Ok(p) => p,
        Err(e) => return cx.overflow(e),
    };
    Some(Inferred {
        output: TensorType::new(vec![inp.shape[0].clone(), rest], inp.dtype),
        params: Vec::new(),
    })
}

/// Keras's `Flatten` moves a channels_first input's channel axis last before flattening.
fn lower_flatten(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_reshape)
}

pub const RESHAPE: LayerKind = LayerKind {
    name: "reshape",
    class: "Reshape",
    args: &[arg(
        "target_shape",
        ArgKind::IntList {
            min: -1,
            max: MAX_SIZE,
        },
        Default::Required,
    )],
    arity: Arity::One,
    infer: reshape,
    lower: lower_reshape,
    facts: super::Facts {
        mask: super::Mask::KeepsUnchanged,
        ..NO_FACTS
    },
};

fn reshape(cx: &mut Ctx) -> Option<Inferred> {
    expect_batch_axis(cx)?;
    let inp = cx.input().clone();
    let target = cx.args.ints("target_shape").to_vec();
    if target.contains(&0) {
        return cx.arg_error(
            "target_shape",
            "E0506",
            "`target_shape` sizes must be positive (or one -1)".into(),
            "replace the 0",
        );
    }
    if target.iter().filter(|&&t| t == -1).count() > 1 {
        return cx.arg_error(
            "target_shape",
            "E0506",
            "`target_shape` may contain at most one -1".into(),
            "give every size but one",
        );
    }
    let have = match product(&inp.shape[1..]) {
        Ok(p) => p,
        Err(e) => return cx.overflow(e),
    };
    let known: i64 = match target
        .iter()
        .filter(|&&t| t > 0)
        .try_fold(1i64, |a, &t| a.checked_mul(t))
    {
        Some(k) => k,
        None => return cx.overflow(crate::dim::Overflow),
    };
    let shown = fmt_shape(&target.iter().map(|&t| Dim::konst(t)).collect::<Vec<_>>());
    let mut shape = vec![inp.shape[0].clone()];
    if let Some(pos) = target.iter().position(|&t| t == -1) {
        let Some(missing) = have.exact_div(known) else {
            return cx.arg_error(
                "target_shape",
                "E0506",
                format!("`reshape` cannot fill the -1 in {shown}: {have} elements per example do not divide by {known}"),
                "choose sizes whose product divides the number of elements",
            );
        };
        for (i, &t) in target.iter().enumerate() {
            shape.push(if i == pos { missing.clone() } else { t.into() });
        }
    } else {
        if have != Dim::konst(known) {
            return cx.arg_error(
                "target_shape",
                "E0506",
                format!("`reshape` to {shown} needs {known} elements per example, but the input has {have}"),
                "the product of `target_shape` must equal the product of the input's non-batch sizes; use -1 for one size to let kiln compute it",
            );
        }
        shape.extend(target.iter().map(|&t| Dim::konst(t)));
    }
    Some(Inferred {
        output: TensorType::new(shape, inp.dtype),
        params: Vec::new(),
    })
}

pub const PERMUTE: LayerKind = LayerKind {
    name: "permute",
    class: "Permute",
    args: &[arg(
        "dims",
        ArgKind::IntList { min: 1, max: 64 },
        Default::Required,
    )],
    arity: Arity::One,
    infer: permute,
    lower: lower_permute,
    facts: NO_FACTS,
};

fn permute(cx: &mut Ctx) -> Option<Inferred> {
    expect_batch_axis(cx)?;
    let inp = cx.input().clone();
    let dims = cx.args.ints("dims").to_vec();
    let n = inp.rank().saturating_sub(1);
    let mut sorted = dims.clone();
    sorted.sort();
    if sorted != (1..=n as i64).collect::<Vec<_>>() {
        let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        return cx.arg_error(
            "dims",
            "E0509",
            format!(
                "`dims` must be a permutation of {} (the non-batch axes, counted from 1), but it is {:?}",
                want.join(", "),
                dims
            ),
            format!("for this rank-{} input, e.g. `dims: [{}]`", inp.rank(), want.iter().rev().cloned().collect::<Vec<_>>().join(", ")),
        );
    }
    let mut shape = vec![inp.shape[0].clone()];
    shape.extend(dims.iter().map(|&d| inp.shape[d as usize].clone()));
    Some(Inferred {
        output: TensorType::new(shape, inp.dtype),
        params: Vec::new(),
    })
}

/// `flatten` and `reshape`: the checked output shape, elements in order.
fn lower_reshape(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    lw.f.reshape(x[0], l.output.shape.clone())
}

fn lower_permute(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let mut perm = vec![0usize];
    perm.extend(l.args.ints("dims").iter().map(|&d| d as usize));
    lw.f.transpose(x[0], perm)
}
