//! Convolution and pooling (channels_last): conv1d/2d, max/average pooling 1d/2d and
//! global pooling. The window arithmetic is shared and exact on symbolic lengths.

use super::lower::{Call, LowerCx, mean};
use super::masking::{input_mask, masked_mean_steps};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, Mask, NO_FACTS};
use crate::args::Value;
use crate::args::{ArgKind, ArgSpec, Default, arg, int};
use crate::catalog::activations as activation;
use crate::catalog::initializers;
use crate::dim::Dim;
use crate::ir::{ConvAttrs, Id, Op, Padding, PoolKind, ReduceOp, Result, WindowAttrs};
use crate::types::window_out;

const fn conv_args(n: usize, paddings: &'static [&'static str]) -> [ArgSpec; 10] {
    [
        arg("filters", int(1), Default::Required),
        arg(
            "kernel_size",
            ArgKind::IntTuple { n, min: 1 },
            Default::Required,
        ),
        arg("strides", ArgKind::IntTuple { n, min: 1 }, Default::Int(1)),
        arg("padding", ArgKind::Choice(paddings), Default::Str("valid")),
        arg(
            "dilation_rate",
            ArgKind::IntTuple { n, min: 1 },
            Default::Int(1),
        ),
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
    ]
}

const CONV1D_ARGS: [ArgSpec; 10] = conv_args(1, &["valid", "same", "causal"]);
const CONV2D_ARGS: [ArgSpec; 10] = conv_args(2, &["valid", "same"]);

pub const CONV1D: LayerKind = LayerKind {
    name: "conv1d",
    class: "Conv1D",
    args: &CONV1D_ARGS,
    arity: Arity::One,
    infer: conv,
    lower: lower_conv,
    facts: Facts {
        spatial: Some(1),
        ..NO_FACTS
    },
};

pub const CONV2D: LayerKind = LayerKind {
    name: "conv2d",
    class: "Conv2D",
    args: &CONV2D_ARGS,
    arity: Arity::One,
    infer: conv,
    lower: lower_conv,
    facts: Facts {
        spatial: Some(2),
        ..NO_FACTS
    },
};

/// Integer tuple arguments are stored expanded (`3` → `[3, 3]`); a `null` default
/// (pooling strides) falls back to another argument.
fn tuple(cx: &Ctx, name: &str, fallback: &str, n: usize) -> Vec<i64> {
    let v = cx.args.ints(name);
    if v.len() == n {
        return v.to_vec();
    }
    let f = cx.args.ints(fallback);
    if f.len() == n { f.to_vec() } else { vec![1; n] }
}

/// Checks that a window fits its input along every spatial axis and returns the
/// output's spatial lengths.
fn spatial_out(
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

fn conv(cx: &mut Ctx) -> Option<Inferred> {
    let n = cx.kind.facts.spatial?;
    cx.expect_float()?;
    let layout = if n == 1 {
        "[batch, steps, channels]"
    } else {
        "[batch, height, width, channels]"
    };
    cx.expect_rank(&[n + 2], layout)?;
    let k = tuple(cx, "kernel_size", "kernel_size", n);
    let s = tuple(cx, "strides", "strides", n);
    let d = tuple(cx, "dilation_rate", "dilation_rate", n);
    if s.iter().any(|&x| x > 1) && d.iter().any(|&x| x > 1) {
        return cx.arg_error(
            "dilation_rate",
            "E0514",
            format!("`{}` cannot use `strides` > 1 together with `dilation_rate` > 1 (Keras forbids it too)", cx.kind.name),
            "use strides 1 with dilation, or dilation 1 with strides",
        );
    }
    let padding = cx.args.str("padding").to_string();
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
    let mut shape = vec![cx.input().shape[0].clone()];
    shape.extend(spatial_out(cx, n, &k, &s, &d, &padding, "conv")?);
    shape.push(filters.into());
    let mut kshape = k.clone();
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

const fn pool_args(n: usize) -> [ArgSpec; 3] {
    [
        arg(
            "pool_size",
            ArgKind::IntTuple { n, min: 1 },
            Default::Int(2),
        ),
        arg("strides", ArgKind::IntTuple { n, min: 1 }, Default::Null),
        arg(
            "padding",
            ArgKind::Choice(&["valid", "same"]),
            Default::Str("valid"),
        ),
    ]
}
const POOL1D_ARGS: [ArgSpec; 3] = pool_args(1);
const POOL2D_ARGS: [ArgSpec; 3] = pool_args(2);

pub const MAX_POOLING1D: LayerKind = LayerKind {
    name: "max_pooling1d",
    class: "MaxPooling1D",
    args: &POOL1D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const MAX_POOLING2D: LayerKind = LayerKind {
    name: "max_pooling2d",
    class: "MaxPooling2D",
    args: &POOL2D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const AVERAGE_POOLING1D: LayerKind = LayerKind {
    name: "average_pooling1d",
    class: "AveragePooling1D",
    args: &POOL1D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};
pub const AVERAGE_POOLING2D: LayerKind = LayerKind {
    name: "average_pooling2d",
    class: "AveragePooling2D",
    args: &POOL2D_ARGS,
    arity: Arity::One,
    infer: pool,
    lower: lower_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};

fn pool(cx: &mut Ctx) -> Option<Inferred> {
    let n = cx.kind.facts.spatial?;
    cx.expect_float()?;
    let layout = if n == 1 {
        "[batch, steps, channels]"
    } else {
        "[batch, height, width, channels]"
    };
    cx.expect_rank(&[n + 2], layout)?;
    let k = tuple(cx, "pool_size", "pool_size", n);
    // Keras: strides default to pool_size.
    let s = tuple(cx, "strides", "pool_size", n);
    let padding = cx.args.str("padding").to_string();
    let mut shape = vec![cx.input().shape[0].clone()];
    shape.extend(spatial_out(cx, n, &k, &s, &vec![1; n], &padding, "pool")?);
    shape.push(cx.input().last().clone());
    Some(Inferred {
        output: TensorType::f32(shape),
        params: Vec::new(),
    })
}

const GLOBAL_ARGS: &[ArgSpec] = &[arg("keepdims", ArgKind::Bool, Default::Bool(false))];

pub const GLOBAL_AVERAGE_POOLING1D: LayerKind = LayerKind {
    name: "global_average_pooling1d",
    class: "GlobalAveragePooling1D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Avg),
        mask: Mask::Consumes,
        ..NO_FACTS
    },
};
pub const GLOBAL_AVERAGE_POOLING2D: LayerKind = LayerKind {
    name: "global_average_pooling2d",
    class: "GlobalAveragePooling2D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Avg),
        ..NO_FACTS
    },
};
pub const GLOBAL_MAX_POOLING1D: LayerKind = LayerKind {
    name: "global_max_pooling1d",
    class: "GlobalMaxPooling1D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(1),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};
pub const GLOBAL_MAX_POOLING2D: LayerKind = LayerKind {
    name: "global_max_pooling2d",
    class: "GlobalMaxPooling2D",
    args: GLOBAL_ARGS,
    arity: Arity::One,
    infer: global_pool,
    lower: lower_global_pool,
    facts: Facts {
        spatial: Some(2),
        pool: Some(PoolKind::Max),
        ..NO_FACTS
    },
};

fn global_pool(cx: &mut Ctx) -> Option<Inferred> {
    let n = cx.kind.facts.spatial?;
    cx.expect_float()?;
    let layout = if n == 1 {
        "[batch, steps, channels]"
    } else {
        "[batch, height, width, channels]"
    };
    cx.expect_rank(&[n + 2], layout)?;
    let inp = cx.input();
    let mut shape = vec![inp.shape[0].clone()];
    if cx.args.bool("keepdims") {
        shape.extend(std::iter::repeat_n(Dim::konst(1), n));
    }
    shape.push(inp.last().clone());
    Some(Inferred {
        output: TensorType::f32(shape),
        params: Vec::new(),
    })
}

fn lower_conv(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let a = l.args;
    let attrs = ConvAttrs {
        strides: a.ints("strides").to_vec(),
        dilation: a.ints("dilation_rate").to_vec(),
        padding: Padding::parse(a.str("padding")),
        groups: a.int("groups"),
    };
    let k = l.param(lw, "kernel")?;
    let mut y = lw.f.push(Op::Conv(attrs), &[x[0], k])?;
    if a.bool("use_bias") {
        let b = l.param(lw, "bias")?;
        y = lw.f.add(y, b)?;
    }
    activation::apply(&mut lw.f, a.str("activation"), y)
}

fn pool_kind(l: &Call) -> Result<PoolKind> {
    l.kind
        .facts
        .pool
        .ok_or_else(|| crate::ir::IrError(format!("`{}` has no pooling kind", l.kind.name)))
}

fn lower_pool(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let a = l.args;
    let window = a.ints("pool_size").to_vec();
    let strides = match a.get("strides") {
        Value::Ints(s) => s.clone(),
        _ => window.clone(),
    };
    let attrs = WindowAttrs {
        window,
        strides,
        padding: Padding::parse(a.str("padding")),
    };
    let kind = pool_kind(l)?;
    lw.f.push(Op::Pool { kind, attrs }, &[x[0]])
}

fn lower_global_pool(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let rank = lw.f.ty(x[0]).rank();
    let axes: Vec<usize> = (1..rank - 1).collect();
    let y = match pool_kind(l)? {
        PoolKind::Max => lw.f.reduce(ReduceOp::Max, x[0], axes)?,
        PoolKind::Avg => match input_mask(lw) {
            Some(m) if l.kind.facts.mask == Mask::Consumes => masked_mean_steps(lw, x[0], m)?,
            _ => mean(lw, x[0], &axes)?,
        },
    };
    lw.f.reshape(y, l.output.shape.clone())
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
