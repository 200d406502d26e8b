//! Convolutions: conv1d/2d/3d, depthwise_conv1d/2d, separable_conv1d/2d (channels_last
//! or, through `layout`, channels_first),
//! and the window arithmetic they share with pooling and transposed convolutions, exact
//! on symbolic lengths. A depthwise convolution is a grouped convolution with one group
//! per input channel (its kernel reshaped to `[k..., 1, in * depth_multiplier]`), as
//! Keras computes it; a separable one is that followed by a 1×1 convolution.

use super::layout::{self, DATA_FORMAT, channels_first};
use super::lower::{Call, LowerCx};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, NO_FACTS};
use crate::args::{ArgKind, ArgSpec, Default, arg, int};
use crate::catalog::activations as activation;
use crate::catalog::{initializers, regularizers};
use crate::dim::Dim;
use crate::ir::{ConvAttrs, Id, Op, Padding, Result};
use crate::types::window_out;

const fn window(n: usize) -> ArgKind {
    ArgKind::IntTuple { n, min: 1 }
}

const fn conv_args(n: usize, paddings: &'static [&'static str]) -> [ArgSpec; 14] {
    [
        arg("filters", int(1), Default::Required),
        arg("kernel_size", window(n), Default::Required),
        arg("strides", window(n), Default::Int(1)),
        arg("padding", ArgKind::Choice(paddings), Default::Str("valid")),
        DATA_FORMAT,
        arg("dilation_rate", window(n), Default::Int(1)),
        arg("groups", int(1), Default::Int(1)),
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

const CONV1D_ARGS: [ArgSpec; 14] = conv_args(1, &["valid", "same", "causal"]);
const CONV2D_ARGS: [ArgSpec; 14] = conv_args(2, &["valid", "same"]);
const CONV3D_ARGS: [ArgSpec; 14] = conv_args(3, &["valid", "same"]);

const VALID_SAME: &[&str] = &["valid", "same"];

/// Keras's `DepthwiseConv1D/2D` arguments, in its order.
const fn depthwise_args(n: usize) -> [ArgSpec; 13] {
    [
        arg("kernel_size", window(n), Default::Required),
        arg("strides", window(n), Default::Int(1)),
        arg(
            "padding",
            ArgKind::Choice(VALID_SAME),
            Default::Str("valid"),
        ),
        arg("depth_multiplier", int(1), Default::Int(1)),
        DATA_FORMAT,
        arg("dilation_rate", window(n), Default::Int(1)),
        arg("activation", activation::ACTIVATION, Default::Str("linear")),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        arg(
            "depthwise_initializer",
            initializers::INITIALIZER,
            Default::Str("glorot_uniform"),
        ),
        arg(
            "bias_initializer",
            initializers::INITIALIZER,
            Default::Str("zeros"),
        ),
        regularizers::DEPTHWISE,
        regularizers::BIAS,
        regularizers::ACTIVITY,
    ]
}

/// Keras's `SeparableConv1D/2D` arguments, in its order.
const fn separable_args(n: usize) -> [ArgSpec; 16] {
    [
        arg("filters", int(1), Default::Required),
        arg("kernel_size", window(n), Default::Required),
        arg("strides", window(n), Default::Int(1)),
        arg(
            "padding",
            ArgKind::Choice(VALID_SAME),
            Default::Str("valid"),
        ),
        DATA_FORMAT,
        arg("dilation_rate", window(n), Default::Int(1)),
        arg("depth_multiplier", int(1), Default::Int(1)),
        arg("activation", activation::ACTIVATION, Default::Str("linear")),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        arg(
            "depthwise_initializer",
            initializers::INITIALIZER,
            Default::Str("glorot_uniform"),
        ),
        arg(
            "pointwise_initializer",
            initializers::INITIALIZER,
            Default::Str("glorot_uniform"),
        ),
        arg(
            "bias_initializer",
            initializers::INITIALIZER,
            Default::Str("zeros"),
        ),
        regularizers::DEPTHWISE,
        regularizers::POINTWISE,
        regularizers::BIAS,
        regularizers::ACTIVITY,
    ]
}

const DEPTHWISE1D_ARGS: [ArgSpec; 13] = depthwise_args(1);
const DEPTHWISE2D_ARGS: [ArgSpec; 13] = depthwise_args(2);
const SEPARABLE1D_ARGS: [ArgSpec; 16] = separable_args(1);
const SEPARABLE2D_ARGS: [ArgSpec; 16] = separable_args(2);

const fn spatial(n: usize) -> Facts {
    Facts {
        spatial: Some(n),
        ..NO_FACTS
    }
}

pub const CONV1D: LayerKind = LayerKind {
    name: "conv1d",
    class: "Conv1D",
    args: &CONV1D_ARGS,
    arity: Arity::One,
    infer: conv,
    lower: lower_conv,
    facts: spatial(1),
};

pub const CONV2D: LayerKind = LayerKind {
    name: "conv2d",
    class: "Conv2D",
    args: &CONV2D_ARGS,
    arity: Arity::One,
    infer: conv,
    lower: lower_conv,
    facts: spatial(2),
};

pub const CONV3D: LayerKind = LayerKind {
    name: "conv3d",
    class: "Conv3D",
    args: &CONV3D_ARGS,
    arity: Arity::One,
    infer: conv,
    lower: lower_conv,
    facts: spatial(3),
};

pub const DEPTHWISE_CONV1D: LayerKind = LayerKind {
    name: "depthwise_conv1d",
    class: "DepthwiseConv1D",
    args: &DEPTHWISE1D_ARGS,
    arity: Arity::One,
    infer: depthwise,
    lower: lower_depthwise,
    facts: spatial(1),
};

pub const DEPTHWISE_CONV2D: LayerKind = LayerKind {
    name: "depthwise_conv2d",
    class: "DepthwiseConv2D",
    args: &DEPTHWISE2D_ARGS,
    arity: Arity::One,
    infer: depthwise,
    lower: lower_depthwise,
    facts: spatial(2),
};

pub const SEPARABLE_CONV1D: LayerKind = LayerKind {
    name: "separable_conv1d",
    class: "SeparableConv1D",
    args: &SEPARABLE1D_ARGS,
    arity: Arity::One,
    infer: separable,
    lower: lower_separable,
    facts: spatial(1),
};

pub const SEPARABLE_CONV2D: LayerKind = LayerKind {
    name: "separable_conv2d",
    class: "SeparableConv2D",
    args: &SEPARABLE2D_ARGS,
    arity: Arity::One,
    infer: separable,
    lower: lower_separable,
    facts: spatial(2),
};

/// Integer tuple arguments are stored expanded (`3` → `[3, 3]`); a `null` default
/// (pooling strides) falls back to another argument.
pub(super) fn tuple(cx: &Ctx, name: &str, fallback: &str, n: usize) -> Vec<i64> {
    let v = cx.args.ints(name);
    if v.len() == n {
        return v.to_vec();
    }
    let f = cx.args.ints(fallback);
    if f.len() == n { f.to_vec() } else { vec![1; n] }
}

/// Checks that a window fits its input along every spatial axis and returns the
/// output's spatial lengths.
pub(super) fn spatial_out(
    cx: &mut Ctx,
    n: usize,
    k: &[i64],
    s: &[i64],
    d: &[i64],
    padding: &str,
    what: &str,
) -> Option<Vec<Dim>> {
    let shape = cx.input().shape.clone();
    let mut out = Vec::new();
    for i in 0..n {
        let len = &shape[1 + i];
        let o = match window_out(len, k[i], s[i], d[i], padding) {
            Ok(o) => o,
            Err(e) => {
                cx.overflow(e);
                return None;
            }
        };
        if let (Some(l), Some(v)) = (len.as_const(), o.as_const())
            && v <= 0
        {
            let eff = d[i] * (k[i] - 1) + 1;
            let window = k
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("×");
            let name = cx.inputs[0].name.to_string();
            let ty = cx.input().describe();
            let arg = if what == "pool" {
                "pool_size"
            } else {
                "kernel_size"
            };
            cx.arg_error(
                arg,
                "E0503",
                format!(
                    "the {window} window of `{}` does not fit: `{name}` is {ty}, only {l} long on axis {}, but the window spans {eff}",
                    cx.kind.name,
                    1 + i
                ),
                "use `padding: same`, a smaller window, or remove a pooling/strided layer before this one",
            );
            return None;
        }
        out.push(o);
    }
    Some(out)
}

/// Checks a spatial layer's input (f32, rank `spatial + 2`) and returns its number of
/// spatial axes.
pub(super) fn spatial_input(cx: &mut Ctx) -> Option<usize> {
    let n = cx.kind.facts.spatial?;
    cx.expect_float()?;
    let axes = ["steps", "height, width", "depth, height, width"][n.clamp(1, 3) - 1];
    let layout = if channels_first(cx.args) {
        format!("[batch, channels, {axes}]")
    } else {
        format!("[batch, {axes}, channels]")
    };
    cx.expect_rank(&[n + 2], &layout)?;
    Some(n)
}

/// A convolution's strides and dilation, refusing both above 1 as Keras does.
pub(super) fn strides_dilation(cx: &mut Ctx, n: usize) -> Option<(Vec<i64>, Vec<i64>)> {
    let s = tuple(cx, "strides", "strides", n);
    let d = tuple(cx, "dilation_rate", "dilation_rate", n);
    if s.iter().any(|&x| x > 1) && d.iter().any(|&x| x > 1) {
        cx.arg_error(
            "dilation_rate",
            "E0514",
            format!("`{}` cannot use `strides` > 1 together with `dilation_rate` > 1 (Keras forbids it too)", cx.kind.name),
            "use strides 1 with dilation, or dilation 1 with strides",
        );
        return None;
    }
    Some((s, d))
}

/// The output shape of a convolution's window over the input, with `channels` output
/// channels, and the kernel size.
fn conv_shape(cx: &mut Ctx, n: usize, channels: i64) -> Option<(Vec<Dim>, Vec<i64>)> {
    let k = tuple(cx, "kernel_size", "kernel_size", n);
    let (s, d) = strides_dilation(cx, n)?;
    let padding = cx.args.str("padding").to_string();
    let mut shape = vec![cx.input().shape[0].clone()];
    shape.extend(spatial_out(cx, n, &k, &s, &d, &padding, "conv")?);
    shape.push(channels.into());
    Some((shape, k))
}

fn conv(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, conv_last)
}

fn conv_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let channels = cx.known(&cx.input().last().clone(), "channel axis (the last axis)")?;
    let filters = cx.args.int("filters");
    let groups = cx.args.int("groups");
    if channels % groups != 0 || filters % groups != 0 {
        return cx.arg_error(
            "groups",
            "E0510",
            format!("`groups: {groups}` must divide both the input channels ({channels}) and `filters` ({filters})"),
            "pick a number of groups that divides both",
        );
    }
    let (shape, mut kshape) = conv_shape(cx, n, filters)?;
    kshape.push(channels / groups);
    kshape.push(filters);
    let mut params = vec![cx.param("kernel", kshape, "kernel_initializer")];
    if cx.args.bool("use_bias") {
        params.push(cx.param("bias", vec![filters], "bias_initializer"));
    }
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

/// The input channels and the depthwise output's channels (`in * depth_multiplier`).
fn depthwise_channels(cx: &mut Ctx) -> Option<(i64, i64)> {
    let channels = cx.known(&cx.input().last().clone(), "channel axis (the last axis)")?;
    let out = channels.checked_mul(cx.args.int("depth_multiplier"));
    match out {
        Some(o) if o <= crate::args::MAX_SIZE => Some((channels, o)),
        _ => {
            cx.overflow(crate::dim::Overflow);
            None
        }
    }
}

fn depthwise(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, depthwise_last)
}

fn depthwise_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let (channels, out) = depthwise_channels(cx)?;
    let (shape, mut kshape) = conv_shape(cx, n, out)?;
    kshape.push(channels);
    kshape.push(cx.args.int("depth_multiplier"));
    let mut params = vec![cx.param("kernel", kshape, "depthwise_initializer")];
    if cx.args.bool("use_bias") {
        params.push(cx.param("bias", vec![out], "bias_initializer"));
    }
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

fn separable(cx: &mut Ctx) -> Option<Inferred> {
    layout::infer(cx, separable_last)
}

fn separable_last(cx: &mut Ctx) -> Option<Inferred> {
    let n = spatial_input(cx)?;
    let (channels, mid) = depthwise_channels(cx)?;
    let filters = cx.args.int("filters");
    let (shape, mut kshape) = conv_shape(cx, n, filters)?;
    kshape.push(channels);
    kshape.push(cx.args.int("depth_multiplier"));
    let mut pshape = vec![1; n];
    pshape.push(mid);
    pshape.push(filters);
    let mut params = vec![
        cx.param("depthwise_kernel", kshape, "depthwise_initializer"),
        cx.param("pointwise_kernel", pshape, "pointwise_initializer"),
    ];
    if cx.args.bool("use_bias") {
        params.push(cx.param("bias", vec![filters], "bias_initializer"));
    }
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

/// The layer's bias (when `use_bias`) and activation on `y`.
pub(super) fn bias_activation(lw: &mut LowerCx, l: &Call, mut y: Id) -> Result<Id> {
    if l.args.bool("use_bias") {
        let b = l.param(lw, "bias")?;
        y = lw.f.add(y, b)?;
    }
    activation::apply(&mut lw.f, l.args.str("activation"), y)
}

/// The layer's strides, dilation and padding as a convolution's attributes.
fn conv_attrs(l: &Call, groups: i64) -> ConvAttrs {
    let a = l.args;
    ConvAttrs {
        strides: a.ints("strides").to_vec(),
        dilation: a.ints("dilation_rate").to_vec(),
        padding: Padding::parse(a.str("padding")),
        groups,
    }
}

fn lower_conv(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_conv_last)
}

fn lower_conv_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let k = l.param(lw, "kernel")?;
    let y =
        lw.f.push(Op::Conv(conv_attrs(l, l.args.int("groups"))), &[x[0], k])?;
    bias_activation(lw, l, y)
}

/// A depthwise convolution of `x` with `kernel` `[k..., in, m]`: the kernel as
/// `[k..., 1, in * m]` in a convolution with one group per input channel, so output
/// channel `c * m + j` is input channel `c` under filter `j` (Keras's order).
fn depthwise_conv(lw: &mut LowerCx, l: &Call, x: Id, kernel: Id) -> Result<Id> {
    let mut kshape = lw.f.ty(kernel).shape.clone();
    let r = kshape.len();
    let (c, m) = (kshape[r - 2].clone(), kshape[r - 1].clone());
    let groups = c
        .as_const()
        .ok_or_else(|| crate::ir::IrError("depthwise kernel of unknown channels".into()))?;
    kshape[r - 1] = c.mul(&m).map_err(super::lower::overflow)?;
    kshape[r - 2] = Dim::konst(1);
    let k = lw.f.reshape(kernel, kshape)?;
    lw.f.push(Op::Conv(conv_attrs(l, groups)), &[x, k])
}

fn lower_depthwise(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_depthwise_last)
}

fn lower_depthwise_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let k = l.param(lw, "kernel")?;
    let y = depthwise_conv(lw, l, x[0], k)?;
    bias_activation(lw, l, y)
}

fn lower_separable(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    layout::lower(lw, l, x, lower_separable_last)
}

fn lower_separable_last(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let dk = l.param(lw, "depthwise_kernel")?;
    let pk = l.param(lw, "pointwise_kernel")?;
    let mid = depthwise_conv(lw, l, x[0], dk)?;
    let n = lw.f.ty(pk).rank() - 2;
    let pointwise = ConvAttrs {
        strides: vec![1; n],
        dilation: vec![1; n],
        padding: Padding::Valid,
        groups: 1,
    };
    let y = lw.f.push(Op::Conv(pointwise), &[mid, pk])?;
    bias_activation(lw, l, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_arithmetic_matches_keras() {
        let c = |x: i64| Dim::konst(x);
        // valid: floor((in - (d*(k-1)+1)) / s) + 1
        assert_eq!(window_out(&c(8), 3, 1, 1, "valid").unwrap(), c(6));
        assert_eq!(window_out(&c(7), 4, 2, 1, "valid").unwrap(), c(2));
        assert_eq!(window_out(&c(8), 3, 1, 2, "valid").unwrap(), c(4));
        assert_eq!(window_out(&c(2), 3, 1, 1, "valid").unwrap(), c(0));
        // same / causal: ceil(in / s)
        assert_eq!(window_out(&c(7), 4, 2, 1, "same").unwrap(), c(4));
        assert_eq!(window_out(&c(8), 2, 2, 1, "same").unwrap(), c(4));
        assert_eq!(window_out(&c(9), 3, 1, 4, "causal").unwrap(), c(9));
        // symbolic: exact forms
        let s = Dim::sym("seq");
        assert_eq!(
            window_out(&s, 3, 1, 1, "valid").unwrap().to_string(),
            "seq - 2"
        );
        assert_eq!(
            window_out(&s, 3, 2, 1, "valid").unwrap().to_string(),
            "(seq - 3) // 2 + 1"
        );
        assert_eq!(
            window_out(&s, 2, 2, 1, "same").unwrap().to_string(),
            "(seq + 1) // 2"
        );
        assert_eq!(window_out(&s, 5, 1, 1, "same").unwrap(), s);
    }
}
