//! What a layer's lowering sees: the function being built, the model's parameters by
//! key, the mode, and the few helpers several layer families share. The driver that
//! walks a checked graph (`crate::lower`) builds a [`LowerCx`] and calls each layer
//! kind's own `lower` function with it.

use std::collections::BTreeMap;

use super::{LayerKind, TensorType};
use crate::args::Args;
use crate::dim::{Dim, product};
use crate::ir::{Cmp, Func, Id, IrError, Op, ReduceOp, Result, Type};

/// Whether the forward pass runs in training mode (dropout on, batch statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Infer,
    Train,
}

/// The state of lowering one model's layers.
pub struct LowerCx {
    pub f: Func,
    pub mode: Mode,
    /// Parameter key (`dense_1/kernel`) → its input value, in layer order.
    pub params: BTreeMap<String, Id>,
    /// Parameter keys in layer order (trainable first within each layer, as declared).
    pub param_order: Vec<String>,
    /// New values of non-trainable parameters (batch-norm moving statistics).
    pub updates: Vec<(String, Id)>,
    /// The random key for dropout (training only).
    pub rng_key: Option<Id>,
    /// The Keras masks (`[batch, steps]`, 1 valid) of the inputs of the layer being
    /// lowered, one per input; set by the driver before each layer.
    pub masks: Vec<Option<Id>>,
    /// The mask a layer that makes one (`Mask::Produces`) gives its output.
    pub mask_out: Option<Id>,
    /// The outputs of layers held by a wrapper (`bidirectional`'s forward and backward
    /// layers), keyed by their parameter prefix (`bidirectional/forward_lstm`): the
    /// values their activity regularizers apply to.
    pub inner_outputs: Vec<(String, Id)>,
    /// Each output of a layer with several ([`super::Facts::parts`]), in order; the
    /// layer's lowering returns the first. Emptied by the driver before each layer.
    pub parts_out: Vec<Id>,
    /// The Keras mask of each part, when the layer gives its parts their own
    /// (attention scores); empty: each part carries the layer's output mask.
    pub part_masks: Vec<Option<Id>>,
    salt: u64,
}

impl LowerCx {
    /// A context around `f`, whose parameters are already declared as inputs.
    pub fn new(f: Func, mode: Mode, params: BTreeMap<String, Id>, order: Vec<String>) -> Self {
        LowerCx {
            f,
            mode,
            params,
            param_order: order,
            updates: Vec::new(),
            rng_key: None,
            masks: Vec::new(),
            mask_out: None,
            inner_outputs: Vec::new(),
            parts_out: Vec::new(),
            part_masks: Vec::new(),
            salt: 0,
        }
    }

    /// A fresh random salt: each dropout draws its own numbers.
    pub fn next_salt(&mut self) -> u64 {
        self.salt += 1;
        self.salt
    }

    /// The value of parameter `name` of `layer` (`lstm`, `lstm_cell/kernel`).
    pub fn param(&self, layer: &str, name: &str) -> Result<Id> {
        self.params
            .get(&format!("{layer}/{name}"))
            .copied()
            .ok_or_else(|| IrError(format!("no parameter {layer}/{name}")))
    }
}

/// One layer as its lowering sees it: its kind, name, validated arguments and checked
/// output type.
pub struct Call<'a> {
    pub kind: &'static LayerKind,
    pub name: &'a str,
    pub args: &'a Args,
    pub output: &'a TensorType,
}

impl Call<'_> {
    /// This layer's parameter `name`.
    pub fn param(&self, lw: &LowerCx, name: &str) -> Result<Id> {
        lw.param(self.name, name)
    }
}

pub(super) fn overflow<T>(_: T) -> IrError {
    IrError("size overflow".into())
}

/// Expands size-1 axes to `shape` (merge layers broadcast them, as Keras).
pub(super) fn expand(lw: &mut LowerCx, x: Id, shape: &[Dim]) -> Result<Id> {
    if lw.f.ty(x).shape == shape {
        return Ok(x);
    }
    let dims: Vec<usize> = (0..shape.len()).collect();
    lw.f.broadcast(x, shape, &dims)
}

/// Mean over `axes`, dividing by their (possibly symbolic) total size.
pub(super) fn mean(lw: &mut LowerCx, x: Id, axes: &[usize]) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let n = product(axes.iter().map(|&i| &shape[i])).map_err(overflow)?;
    let s = lw.f.reduce(ReduceOp::Sum, x, axes.to_vec())?;
    let count = lw.f.dim_size(&n);
    lw.f.div(s, count)
}

/// Inverted dropout in training (a kept unit is scaled by 1/(1-rate)); identity at
/// inference.
pub(super) fn dropout(lw: &mut LowerCx, x: Id, rate: f64) -> Result<Id> {
    if lw.mode == Mode::Infer || rate == 0.0 {
        return Ok(x);
    }
    let key = lw
        .rng_key
        .ok_or_else(|| IrError("dropout needs a random key".into()))?;
    let salt = lw.next_salt();
    let ty = Type::f32(lw.f.ty(x).shape.clone());
    let u = lw.f.push_typed(Op::Rng { salt }, &[key], ty);
    let th = lw.f.scalar(rate);
    let keep = lw.f.cmp(Cmp::Ge, u, th)?;
    let scaled = lw.f.mul_c(x, 1.0 / (1.0 - rate))?;
    let zero = lw.f.scalar(0.0);
    lw.f.select(keep, scaled, zero)
}

/// A possibly negative axis of a rank-`rank` tensor, made non-negative (the checker
/// has already proven it in range).
pub(super) fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}
