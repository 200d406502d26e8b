//! Keras masks: a flag per step (`[batch, steps]`, 1 valid, 0 masked) that travels with
//! a tensor from the layer that makes it (`embedding` with `mask_zero`, `masking`)
//! through the layers that pass it on, to the layers that use it (recurrent layers skip
//! masked steps, average pooling and attention leave them out, the loss weights by
//! it). Each layer kind says what it does with a mask in its facts ([`Mask`]); this
//! file turns those facts into the mask of each output, for the checker's summary
//! ([`mask_flow`]) and for the lowering ([`lower_mask`]).

use super::lower::{Call, LowerCx};
use super::{Arity, Ctx, Facts, Inferred, LayerKind, Mask, NO_FACTS};
use crate::args::{ArgKind, Args, Default, arg};
use crate::dim::Dim;
use crate::ir::{Cmp, Id, ReduceOp, Result};

pub const MASKING: LayerKind = LayerKind {
    name: "masking",
    class: "Masking",
    args: &[arg(
        "mask_value",
        ArgKind::Float {
            min: f64::MIN,
            max: f64::MAX,
            min_open: false,
            max_open: false,
        },
        Default::Float(0.0),
    )],
    arity: Arity::One,
    infer: masking,
    lower: lower_masking,
    facts: Facts {
        mask: Mask::Produces(None),
        ..NO_FACTS
    },
};

fn masking(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    cx.expect_rank(&[3], "[batch, steps, features]")?;
    Some(Inferred {
        output: cx.input().clone(),
        params: Vec::new(),
    })
}

/// Keras's Masking: a step is valid where any feature differs from `mask_value`;
/// masked steps are zeroed.
fn lower_masking(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let v = lw.f.scalar(l.args.float("mask_value"));
    let ne = lw.f.cmp(Cmp::Ne, x[0], v)?;
    let rank = lw.f.ty(x[0]).rank();
    let any = lw.f.reduce(ReduceOp::Max, ne, vec![rank - 1])?;
    lw.mask_out = Some(any);
    let keep = lw.f.reduce_keep(ReduceOp::Max, ne, &[rank - 1])?;
    let keep = lw.f.broadcast_like(keep, x[0])?;
    lw.f.mul(x[0], keep)
}

/// What a layer does with the masks of its inputs, for `kiln summary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskUse {
    /// No mask reaches it and it makes none.
    None,
    /// It makes a mask.
    Produces,
    /// It passes its input's mask on unchanged (or combines its inputs' masks).
    Propagates,
    /// It uses the mask; its output has none.
    Consumes,
    /// It uses the mask and passes it on.
    ConsumesPropagates,
    /// A mask reaches it, but it neither uses it nor passes it on (Keras warns).
    Drops,
}

impl MaskUse {
    /// The word `kiln summary` prints (empty for [`MaskUse::None`]).
    pub fn word(self) -> &'static str {
        match self {
            MaskUse::None => "",
            MaskUse::Produces => "produces",
            MaskUse::Propagates => "propagates",
            MaskUse::Consumes => "consumes",
            MaskUse::ConsumesPropagates => "consumes, propagates",
            MaskUse::Drops => "drops",
        }
    }
}

/// Whether a layer's output carries a mask, given which of its inputs do, and the
/// shapes of its first input and of its output.
pub fn output_masked(
    kind: &LayerKind,
    args: &Args,
    inputs: &[bool],
    in_shape: &[Dim],
    out_shape: &[Dim],
) -> bool {
    let first = inputs.first().copied().unwrap_or(false);
    match kind.facts.mask {
        Mask::Drops | Mask::Consumes => false,
        Mask::Propagates => first,
        // Keras 3's `Merge.compute_mask`: no mask unless every input has one.
        Mask::Merges => !inputs.is_empty() && inputs.iter().all(|&m| m),
        Mask::Joins(_) => inputs.iter().any(|&m| m),
        Mask::ConsumesKeeps => first && in_shape.len() == out_shape.len(),
        Mask::ConsumesPasses => first,
        Mask::KeepsUnchanged => first && in_shape == out_shape,
        Mask::Produces(None) => true,
        Mask::Produces(Some(flag)) => args.bool(flag),
    }
}

/// The shape of a layer's output mask, given its inputs' mask shapes (`None`: no
/// mask), the shape of its first input and its output type: the first input's mask
/// where it is passed on, `[batch, steps…]` (the output without its features) where
/// the layer makes or joins one.
pub fn output_mask_shape(
    kind: &LayerKind,
    args: &Args,
    inputs: &[Option<Vec<Dim>>],
    in_shape: &[Dim],
    out: &super::TensorType,
) -> Option<Vec<Dim>> {
    let present: Vec<bool> = inputs.iter().map(Option::is_some).collect();
    if !output_masked(kind, args, &present, in_shape, &out.shape) {
        return None;
    }
    match kind.facts.mask {
        Mask::Joins(axis) if inputs.iter().flatten().any(|m| m.len() == out.rank()) => {
            let masks: Vec<Vec<Dim>> = inputs.iter().flatten().cloned().collect();
            let mut full = joined_full_masks(&masks, args.int(axis), &out.shape)?;
            full.pop();
            Some(full)
        }
        Mask::Propagates
        | Mask::ConsumesKeeps
        | Mask::ConsumesPasses
        | Mask::KeepsUnchanged
        | Mask::Merges => inputs.first().cloned().flatten(),
        _ => Some(out.shape[..out.rank().saturating_sub(1)].to_vec()),
    }
}

/// What a layer does with masks (for the summary), and whether its output carries one.
pub fn mask_flow(
    kind: &LayerKind,
    args: &Args,
    inputs: &[bool],
    in_shape: &[Dim],
    out_shape: &[Dim],
) -> (MaskUse, bool) {
    let out = output_masked(kind, args, inputs, in_shape, out_shape);
    let any_in = inputs.iter().any(|&m| m);
    let used = match kind.facts.mask {
        Mask::Produces(_) if out => MaskUse::Produces,
        _ if !any_in => MaskUse::None,
        Mask::Drops | Mask::Produces(_) => MaskUse::Drops,
        Mask::Merges | Mask::KeepsUnchanged if !out => MaskUse::Drops,
        Mask::Propagates | Mask::Merges | Mask::KeepsUnchanged | Mask::Joins(_) => {
            MaskUse::Propagates
        }
        Mask::Consumes => MaskUse::Consumes,
        Mask::ConsumesKeeps | Mask::ConsumesPasses if out => MaskUse::ConsumesPropagates,
        Mask::ConsumesKeeps | Mask::ConsumesPasses => MaskUse::Consumes,
    };
    (used, out)
}

/// The mask of a lowered layer's output, from its inputs (`values`) and their masks
/// (`[batch, steps]`, 1 valid) and what the layer made (`LowerCx::mask_out`).
pub fn lower_mask(
    lw: &mut LowerCx,
    kind: &LayerKind,
    args: &Args,
    (values, inputs): (&[Id], &[Option<Id>]),
    out_shape: &[Dim],
) -> Result<Option<Id>> {
    let made = lw.mask_out.take();
    let present: Vec<bool> = inputs.iter().map(Option::is_some).collect();
    let in_shape = values
        .first()
        .map_or(Vec::new(), |&v| lw.f.ty(v).shape.clone());
    if !output_masked(kind, args, &present, &in_shape, out_shape) {
        return Ok(None);
    }
    match kind.facts.mask {
        Mask::Produces(_) => return Ok(made),
        Mask::Joins(axis) => return join_masks(lw, values, inputs, args.int(axis)).map(Some),
        _ => {}
    }
    if kind.facts.mask != Mask::Merges {
        // Propagated or kept: Keras's default `compute_mask` returns the first
        // argument's mask (attention: the query's).
        return Ok(inputs.first().copied().flatten());
    }
    // Merged (Keras 3's `Merge.compute_mask`): a step is valid where it is valid in
    // any input.
    let mut out: Option<Id> = None;
    for &m in inputs.iter().flatten() {
        out = Some(match out {
            None => m,
            Some(o) => lw.f.max(o, m)?,
        });
    }
    Ok(out)
}

/// Keras's `Concatenate.compute_mask` on masks as long as their inputs (attention
/// scores'): the masks joined along `axis` (the caller then drops the last axis, which
/// Keras reduces with `any`). `None` unless every mask has the output's rank, they
/// agree off `axis`, and the join fits the output `out` (each axis its size or 1;
/// else Keras's mask would not describe the output's entries, e.g. joined on the heads).
pub fn joined_full_masks(masks: &[Vec<Dim>], axis: i64, out: &[Dim]) -> Option<Vec<Dim>> {
    let rank = out.len();
    let axis = usize::try_from(if axis < 0 { axis + rank as i64 } else { axis }).ok()?;
    if axis >= rank || masks.iter().any(|m| m.len() != rank) {
        return None;
    }
    let mut full = masks.first()?.clone();
    for m in &masks[1..] {
        if (0..rank).any(|j| j != axis && m[j] != full[j]) {
            return None;
        }
        full[axis] = full[axis].add(&m[axis]).ok()?;
    }
    let one = Dim::konst(1);
    full.iter()
        .zip(out)
        .all(|(m, o)| m == o || *m == one)
        .then_some(full)
}

/// Keras's `Concatenate.compute_mask`: each input's mask (all valid where it has none)
/// joined along `axis`; joined on the last (feature) axis, a step is valid where it is
/// valid in any input.
fn join_masks(lw: &mut LowerCx, values: &[Id], masks: &[Option<Id>], axis: i64) -> Result<Id> {
    let rank = lw.f.ty(values[0]).rank();
    let axis = super::lower::norm_axis(axis, rank);
    if masks.iter().flatten().any(|&m| lw.f.ty(m).rank() == rank) {
        // Masks as long as their inputs (attention scores', checked to agree): joined
        // along `axis`, then Keras's `any` over the last axis.
        let full: Vec<Id> = masks.iter().flatten().copied().collect();
        let joined = lw.f.push(crate::ir::Op::Concat { axis }, &full)?;
        return lw.f.reduce(ReduceOp::Max, joined, vec![rank - 1]);
    }
    let mut full = Vec::new();
    for (&v, m) in values.iter().zip(masks) {
        let mut shape = lw.f.ty(v).shape.clone();
        shape.pop();
        full.push(match m {
            Some(m) => *m,
            None => lw.f.full(1.0, &shape)?,
        });
    }
    if axis + 1 == rank {
        let mut out = full[0];
        for &m in &full[1..] {
            out = lw.f.max(out, m)?;
        }
        return Ok(out);
    }
    lw.f.push(crate::ir::Op::Concat { axis }, &full)
}

/// The mask of the layer's first input, if it has one.
pub(super) fn input_mask(lw: &LowerCx) -> Option<Id> {
    lw.masks.first().copied().flatten()
}

/// A mask `[batch, steps]` spread over a value `[batch, steps, …]`.
pub(super) fn spread(lw: &mut LowerCx, mask: Id, like: Id) -> Result<Id> {
    let shape = lw.f.ty(like).shape.clone();
    lw.f.broadcast(mask, &shape, &[0, 1])
}

/// Keras's BatchNormalization moments with a mask: the mean and (biased) variance over
/// the valid steps, per channel on `axis`, each divided by the count plus Keras's
/// epsilon (1e-7).
pub(super) fn masked_moments(lw: &mut LowerCx, x: Id, mask: Id, axis: usize) -> Result<(Id, Id)> {
    let shape = lw.f.ty(x).shape.clone();
    let rank = shape.len();
    let reduce: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
    let mdims: Vec<usize> = (0..lw.f.ty(mask).rank()).collect();
    let m = lw.f.broadcast(mask, &shape, &mdims)?;
    let zero = lw.f.scalar(0.0);
    let valid = lw.f.cmp(Cmp::Ne, m, zero)?;
    let kept = lw.f.select(valid, x, zero)?;
    let sum = lw.f.reduce(ReduceOp::Sum, kept, reduce.clone())?;
    let weights = lw.f.reduce(ReduceOp::Sum, m, reduce.clone())?;
    let weights = lw.f.add_c(weights, 1e-7)?;
    let mean = lw.f.div(sum, weights)?;
    let mb = lw.f.broadcast(mean, &shape, &[axis])?;
    let d = lw.f.sub(x, mb)?;
    let d = lw.f.select(valid, d, zero)?;
    let d2 = lw.f.mul(d, d)?;
    let dist = lw.f.reduce(ReduceOp::Sum, d2, reduce)?;
    let var = lw.f.div(dist, weights)?;
    Ok((mean, var))
}

/// Keras's GlobalAveragePooling1D with a mask: the mean over the valid steps only.
pub(super) fn masked_mean_steps(lw: &mut LowerCx, x: Id, mask: Id) -> Result<Id> {
    let m = spread(lw, mask, x)?;
    let zero = lw.f.scalar(0.0);
    let valid = lw.f.cmp(Cmp::Ne, m, zero)?;
    let kept = lw.f.select(valid, x, zero)?;
    let s = lw.f.reduce(ReduceOp::Sum, kept, vec![1])?;
    let n = lw.f.reduce(ReduceOp::Sum, m, vec![1])?;
    lw.f.div(s, n)
}
