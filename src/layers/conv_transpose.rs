//! Transposed convolutions: conv1d/2d/3d_transpose (channels_last, or channels_first
//! through `layout`), with
//! Keras's kernel layout `[k..., filters, in_channels]`, output lengths and padding.
//!
//! A transposed convolution is the input gradient of the convolution whose kernel it
//! holds, so it lowers onto `ConvInputGrad` (a GEMM and a scatter, no multiplications by
//! inserted zeros): with `valid` padding into the full length `(len - 1) * s + eff`
//! (`eff` the dilated kernel's extent), then cut to Keras's window. Keras (jax) pads the
//! stride-dilated input by `left` before the flipped kernel, so its output starts
//! `eff - 1 - left` elements into the full one; its length is Keras's
//! `deconv_output_length`. Past the full length (valid padding with a large
//! `output_padding`, or a stride above the kernel) the output is zeros plus the bias.

use super::conv::{bias_activation, spatial_input, strides_dilation, tuple};
use super::layout::{self, DATA_FORMAT};
use super::lower::{Call, LowerCx, overflow};
use super::{Arity, Ctx, Facts, Inferred, LayerKind, NO_FACTS, TensorType};
use crate::args::{ArgKind, ArgSpec, Default, arg, int};
use crate::catalog::activations as activation;
use crate::catalog::{initializers, regularizers};
use crate::dim::{Dim, Overflow};
use crate::ir::{ConvAttrs, Id, Op, Padding, Result, Type};

const fn transpose_args(n: usize) -> [ArgSpec; 14] {
    let window = ArgKind::IntTuple { n, min: 1 };
    [
        arg("filters", int(1), Default::Required),
        arg("kernel_size", window, Default::Required),
        arg("strides", window, Default::Int(1)),
        arg(
            "padding",
            ArgKind::Choice(&["valid", "same"]),
            Default::Str("valid"),
        ),
        arg(
            "output_padding",
            ArgKind::IntTuple { n, min: 0 },
            Default::Null,
        ),
        DATA_FORMAT,
        arg("dilation_rate", window, Default::Int(1)),
        arg("activation", activation::ACTIVATION, Default::Str("linear")),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        arg(
            "kernel_initializer",
            initializers::INITIALIZER,
            Default::Str("glorot_uniform"),
        ),
        arg(
            "bias_initializer",
            initializers::INITIALIZER,
            Default::Str("zeros"),
        ),
        regularizers::KERNEL,
        regularizers::BIAS,
        regularizers::ACTIVITY,
    ]
}

const TRANSPOSE1D_ARGS: [ArgSpec; 14] = transpose_args(1);
const TRANSPOSE2D_ARGS: [ArgSpec; 14] = transpose_args(2);
const TRANSPOSE3D_ARGS: [ArgSpec; 14] = transpose_args(3);

pub const CONV1D_TRANSPOSE: LayerKind = LayerKind {
    name: "conv1d_transpose",
    class: "Conv1DTranspose",
    args: &TRANSPOSE1D_ARGS,
    arity: Arity::One,
    infer: transpose,
    lower: lower_transpose,
    facts: Facts {
        spatial: Some(1),
        ..NO_FACTS
    },
};

pub const CONV2D_TRANSPOSE: LayerKind = LayerKind {
    name: "conv2d_transpose",
    class: "Conv2DTranspose",
    args: &TRANSPOSE2D_ARGS,
    arity: Arity::One,
    infer: transpose,
    lower: lower_transpose,
    facts: Facts {
        spatial: Some(2),
        ..NO_FACTS
    },
};

pub const CONV3D_TRANSPOSE: LayerKind = LayerKind {
    name: "conv3d_transpose",
    class: "Conv3DTranspose",
    args: &TRANSPOSE3D_ARGS,
    arity: Arity::One,
    infer: transpose,
    lower: lower_transpose,
    facts: Facts {
        spatial: Some(3),
        ..NO_FACTS
    },
};

/// One spatial axis of a transposed convolution: the output is `(len - 1) * s + extra`
/// long and starts `lo` elements into the full length `(len - 1) * s + eff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    eff: i64,
    extra: i64,
    lo: i64,
}

impl Axis {
    /// Keras's geometry (`deconv_output_length` and the jax padding it computes) for
    /// kernel `k`, stride `s`, dilation `d`, `output_padding` `op`.
    fn new(
        k: i64,
        s: i64,
        d: i64,
        op: Option<i64>,
        same: bool,
    ) -> std::result::Result<Axis, Overflow> {
        let eff = d
            .checked_mul(k - 1)
            .and_then(|v| v.checked_add(1))
            .filter(|&v| v < i64::MAX / 4)
            .ok_or(Overflow)?;
        let extra = match (op, same) {
            (None, false) => eff.max(s),
            (None, true) => s,
            (Some(p), false) => eff + p,
            (Some(p), true) => eff % 2 + p,
        };
        let left = if same {
            let pad_len = op.map_or(s + eff - 2, |p| eff + eff % 2 - 2 + p);
            (pad_len / 2 + pad_len % 2).min(eff - 1)
        } else {
            eff - 1
        };
        Ok(Axis {
            eff,
            extra,
            lo: eff - 1 - left,
        })
    }

    /// `(len - 1) * s + c`.
    fn length(len: &Dim, s: i64, c: i64) -> std::result::Result<Dim, Overflow> {
        len.add_const(-1)?.scale(s)?.add_const(c)
    }
}

/// The geometry of every spatial axis from the layer's arguments.
fn axes(
    k: &[i64],
    s: &[i64],
    d: &[i64],
    op: &[i64],
    same: bool,
) -> std::result::Result<Vec<Axis>, Overflow> {
    (0..k.len())
        .map(|i| Axis::new(k[i], s[i], d[i], op.get(i).copied(), same))
        .collect()
}

fn transpose(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, transpose_last)
}

fn transpose_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let channels = cx.known(&cx.input().last().clone(), "channel axis (the last axis)")?;
    let filters = cx.args.int("filters");
    let k = tuple(cx, "kernel_size", "kernel_size", n);
    let (s, d) = strides_dilation(cx, n)?;
    let op = cx.args.ints("output_padding").to_vec();
    if let Some(i) = (0..op.len()).find(|&i| op[i] >= s[i]) {
        cx.arg_error(
            "output_padding",
            "E0404",
            format!(
                "`output_padding` must be below `strides` on every axis (as Keras requires), but on axis {} it is {} with a stride of {}",
                i + 1,
                op[i],
                s[i]
            ),
            "use an output_padding smaller than the stride, or leave it out (null) for Keras's default",
        );
        return None;
    }
    let same = cx.args.str("padding") == "same";
    let geo = match axes(&k, &s, &d, &op, same) {
        Ok(g) => g,
        Err(e) => return cx.overflow(e),
    };
    let mut shape = vec![cx.input().shape[0].clone()];
    for i in 0..n {
        match Axis::length(&cx.input().shape[1 + i], s[i], geo[i].extra) {
            Ok(len) => shape.push(len),
            Err(e) => return cx.overflow(e),
        }
    }
    shape.push(filters.into());
    let mut kshape = k;
    kshape.push(filters);
    kshape.push(channels);
    let mut params = vec![cx.param("kernel", kshape, "kernel_initializer")];
    if cx.args.bool("use_bias") {
        params.push(cx.param("bias", vec![filters], "bias_initializer"));
    }
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

fn lower_transpose(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_transpose_last)
}

fn lower_transpose_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let a = l.args;
    let kernel = l.param(lw, "kernel")?;
    let ks = lw.f.ty(kernel).shape.clone();
    let xs = lw.f.ty(x[0]).shape.clone();
    let n = xs.len() - 2;
    let k: Vec<i64> = ks[..n].iter().map(|v| v.as_const().unwrap_or(1)).collect();
    let (s, d) = (a.ints("strides").to_vec(), a.ints("dilation_rate").to_vec());
    let geo = axes(
        &k,
        &s,
        &d,
        a.ints("output_padding"),
        a.str("padding") == "same",
    )
    .map_err(overflow)?;
    let mut full = vec![xs[0].clone()];
    for i in 0..n {
        full.push(Axis::length(&xs[1 + i], s[i], geo[i].eff).map_err(overflow)?);
    }
    full.push(ks[n].clone());
    let attrs = ConvAttrs {
        strides: s.clone(),
        dilation: d,
        padding: Padding::Valid,
        groups: 1,
    };
    let mut y = lw.f.push_typed(
        Op::ConvInputGrad(attrs),
        &[x[0], kernel],
        Type::f32(full.clone()),
    );
    for (i, g) in geo.iter().enumerate() {
        // Elements of the full length past the output's end (negative: zeros to add).
        let tail = g.eff - g.lo - g.extra;
        if g.lo > 0 || tail > 0 {
            let end = full[1 + i].add_const(-tail.max(0)).map_err(overflow)?;
            let op = Op::Slice {
                axis: 1 + i,
                start: Dim::konst(g.lo),
                end,
            };
            y = lw.f.push(op, &[y])?;
        }
        if tail < 0 {
            let op = Op::Pad {
                axis: 1 + i,
                low: Dim::konst(0),
                high: Dim::konst(-tail),
            };
            y = lw.f.push(op, &[y])?;
        }
    }
    bias_activation(lw, l, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keras's `deconv_output_length` and its jax padding, written out as Keras
    /// computes them, against [`Axis`] for every small case.
    #[test]
    fn geometry_matches_keras_formulas() {
        for k in 1..6 {
            for s in 1..4 {
                for d in 1..3 {
                    for op in [None, Some(0), Some(1), Some(2)] {
                        if op.is_some_and(|p| p >= s) || (s > 1 && d > 1) {
                            continue;
                        }
                        for same in [false, true] {
                            let eff = (k - 1) * d + 1;
                            let g = Axis::new(k, s, d, op, same).unwrap();
                            for len in 1..6i64 {
                                let keras_len = match op {
                                    None if same => len * s,
                                    None => len * s + (eff - s).max(0),
                                    Some(p) => {
                                        let pad = if same { eff / 2 } else { 0 };
                                        (len - 1) * s + eff - 2 * pad + p
                                    }
                                };
                                assert_eq!((len - 1) * s + g.extra, keras_len);
                                // jax: dilated input padded by (left, right), valid
                                // window of extent eff, stride 1.
                                let (left, right) = if same {
                                    let pl = match op {
                                        None => s + eff - 2,
                                        Some(p) => eff + eff % 2 - 2 + p,
                                    };
                                    let l = (pl / 2 + pl % 2).min(eff - 1);
                                    (l, pl - l)
                                } else {
                                    let p = op.unwrap_or((eff.max(s)) - eff);
                                    (eff - 1, eff - 1 + p)
                                };
                                let jax_len = (len - 1) * s + 1 + left + right - eff + 1;
                                assert_eq!(jax_len, keras_len);
                                assert_eq!(g.lo, eff - 1 - left);
                            }
                        }
                    }
                }
            }
        }
    }
}
