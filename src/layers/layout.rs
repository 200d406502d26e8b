//! Keras's `data_format`. Every spatial layer computes channels_last (the IR's window
//! primitives and the plan's loops are laid out for it); a `channels_first` layer
//! (`[batch, channels, spatial...]`, PyTorch's layout) moves the channel axis to the end
//! at its input and back at its output, in both its shape rule and its lowering. Its
//! weights are Keras's, which do not depend on the layout.

use super::lower::{Call, LowerCx};
use super::{Ctx, In, Inferred, TensorType};
use crate::args::{ArgKind, ArgSpec, Args, Default, arg};
use crate::ir::{Id, Result};

/// The `data_format` argument (Keras's `None` is its default, channels_last).
pub(super) const DATA_FORMAT: ArgSpec = arg(
    "data_format",
    ArgKind::Choice(&["channels_last", "channels_first"]),
    Default::Str("channels_last"),
);

/// Whether a layer with these arguments reads and writes `[batch, channels, ...]`.
pub(super) fn channels_first(args: &Args) -> bool {
    args.str("data_format") == "channels_first"
}

/// `[b, c, s...]` → `[b, s..., c]`: the permutation moving axis 1 to the end.
fn to_last(rank: usize) -> Vec<usize> {
    let mut p = vec![0];
    p.extend(2..rank);
    p.push(1);
    p
}

/// `[b, s..., c]` → `[b, c, s...]`.
fn to_first(rank: usize) -> Vec<usize> {
    let mut p = vec![0, rank - 1];
    p.extend(1..rank - 1);
    p
}

fn permuted(t: &TensorType, perm: &[usize]) -> TensorType {
    TensorType::new(perm.iter().map(|&a| t.shape[a].clone()).collect(), t.dtype)
}

/// Runs a channels_last shape rule `f` on a layer that may be channels_first: its input
/// seen with the channel axis last, its output's channel axis put back at 1 (when the
/// output keeps the input's rank). An input of rank below 3 goes to `f` as it is, which
/// reports its rank.
pub(super) fn infer(cx: &mut Ctx, f: fn(&mut Ctx) -> Option<Inferred>) -> Option<Inferred> {
    let rank = cx.input().rank();
    if !channels_first(cx.args) || rank < 3 {
        return f(cx);
    }
    let last = permuted(cx.input(), &to_last(rank));
    let mut inner = Ctx {
        layer: cx.layer,
        kind: cx.kind,
        span: cx.span.clone(),
        args: cx.args,
        inputs: vec![In {
            name: cx.inputs[0].name,
            ty: &last,
            origin: cx.inputs[0].origin.clone(),
            mask: cx.inputs[0].mask.clone(),
        }],
        diags: cx.diags,
        parts: Vec::new(),
        part_masks: Vec::new(),
    };
    let mut out = f(&mut inner)?;
    let r = out.output.rank();
    if r == rank {
        out.output = permuted(&out.output, &to_first(r));
    }
    Some(out)
}

/// Runs a channels_last lowering `f` on a layer that may be channels_first: a transpose
/// before it and, when the output keeps the input's rank, one after it.
pub(super) fn lower(
    lw: &mut LowerCx,
    l: &Call,
    x: &[Id],
    f: fn(&mut LowerCx, &Call, &[Id]) -> Result<Id>,
) -> Result<Id> {
    let rank = lw.f.ty(x[0]).rank();
    if !channels_first(l.args) || rank < 3 {
        return f(lw, l, x);
    }
    let xt = lw.f.transpose(x[0], to_last(rank))?;
    let r = l.output.rank();
    let output = if r == rank {
        permuted(l.output, &to_last(r))
    } else {
        l.output.clone()
    };
    let inner = Call {
        kind: l.kind,
        name: l.name,
        args: l.args,
        output: &output,
    };
    let y = f(lw, &inner, &[xt])?;
    if r == rank {
        lw.f.transpose(y, to_first(r))
    } else {
        Ok(y)
    }
}
