//! Each layer of the catalog lowered to primitives with Keras's numerics. One function
//! per layer family; `lower` dispatches on the layer's type.

use super::{Lower, Mode};
use crate::args::Value;
use crate::catalog::activations::{self as activation, apply};
use crate::check::Layer;
use crate::dim::{Dim, product};
use crate::ir::{
    Cell, Cmp, ConvAttrs, Id, Op, Padding, PoolKind, ReduceOp, Result, RnnAttrs, Type, Unary,
    WindowAttrs, err,
};
use crate::spec::DType;

fn overflow<T>(_: T) -> crate::ir::IrError {
    crate::ir::IrError("size overflow".into())
}

/// Lowers one layer given its input values; returns its output value.
pub fn lower(lw: &mut Lower, l: &Layer, x: &[Id]) -> Result<Id> {
    let name = l.kind.name;
    let a = &l.args;
    match name {
        "dense" => {
            let y = dense(lw, l, x[0])?;
            apply(&mut lw.f, a.str("activation"), y)
        }
        "embedding" => {
            let table = lw.param(&l.name, "embeddings")?;
            let idx = lw.f.push(Op::Cast(DType::I32), &[x[0]])?;
            lw.f.push(Op::Gather, &[table, idx])
        }
        "dropout" => dropout(lw, x[0], a.float("rate")),
        "activation" => apply(&mut lw.f, a.str("activation"), x[0]),
        "relu" => {
            let max = match a.get("max_value") {
                Value::Float(v) => Some(*v),
                Value::Int(v) => Some(*v as f64),
                _ => None,
            };
            activation::relu_layer(
                &mut lw.f,
                x[0],
                max,
                a.float("negative_slope"),
                a.float("threshold"),
            )
        }
        "leaky_relu" => activation::leaky(&mut lw.f, x[0], a.float("negative_slope")),
        "elu" => activation::elu(&mut lw.f, x[0], a.float("alpha")),
        "sigmoid" | "tanh" | "silu" => apply(&mut lw.f, name, x[0]),
        "gelu" => activation::gelu(&mut lw.f, x[0], a.bool("approximate")),
        "softmax" => {
            let rank = lw.f.ty(x[0]).rank() as i64;
            let axis = a.int("axis");
            let axis = if axis < 0 { axis + rank } else { axis } as usize;
            activation::softmax(&mut lw.f, x[0], axis)
        }
        "conv1d" | "conv2d" => {
            let attrs = ConvAttrs {
                strides: a.ints("strides").to_vec(),
                dilation: a.ints("dilation_rate").to_vec(),
                padding: Padding::parse(a.str("padding")),
                groups: a.int("groups"),
            };
            let k = lw.param(&l.name, "kernel")?;
            let mut y = lw.f.push(Op::Conv(attrs), &[x[0], k])?;
            if a.bool("use_bias") {
                let b = lw.param(&l.name, "bias")?;
                y = lw.f.add(y, b)?;
            }
            apply(&mut lw.f, a.str("activation"), y)
        }
        "max_pooling1d" | "max_pooling2d" | "average_pooling1d" | "average_pooling2d" => {
            let window = a.ints("pool_size").to_vec();
            let strides = match a.get("strides") {
                Value::Ints(s) => s.clone(),
                _ => window.clone(),
            };
            let kind = if name.starts_with("max") {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let attrs = WindowAttrs {
                window,
                strides,
                padding: Padding::parse(a.str("padding")),
            };
            lw.f.push(Op::Pool { kind, attrs }, &[x[0]])
        }
        "global_average_pooling1d"
        | "global_average_pooling2d"
        | "global_max_pooling1d"
        | "global_max_pooling2d" => {
            let rank = lw.f.ty(x[0]).rank();
            let axes: Vec<usize> = (1..rank - 1).collect();
            let y = if name.contains("max") {
                lw.f.reduce(ReduceOp::Max, x[0], axes.clone())?
            } else {
                mean(lw, x[0], &axes)?
            };
            lw.f.reshape(y, l.output.shape.clone())
        }
        "batch_normalization" => batch_norm(lw, l, x[0]),
        "layer_normalization" => layer_norm(lw, l, x[0]),
        "flatten" | "reshape" => lw.f.reshape(x[0], l.output.shape.clone()),
        "permute" => {
            let mut perm = vec![0usize];
            perm.extend(a.ints("dims").iter().map(|&d| d as usize));
            lw.f.transpose(x[0], perm)
        }
        "add" | "subtract" | "multiply" => {
            let shape = l.output.shape.clone();
            let mut acc = expand(lw, x[0], &shape)?;
            for &v in &x[1..] {
                let v = expand(lw, v, &shape)?;
                acc = match name {
                    "add" => lw.f.add(acc, v)?,
                    "subtract" => lw.f.sub(acc, v)?,
                    _ => lw.f.mul(acc, v)?,
                };
            }
            Ok(acc)
        }
        "concatenate" => {
            let rank = l.output.rank() as i64;
            let axis = a.int("axis");
            let axis = if axis < 0 { axis + rank } else { axis } as usize;
            lw.f.push(Op::Concat { axis }, x)
        }
        "simple_rnn" | "lstm" | "gru" => rnn(lw, l, x[0]),
        "multi_head_attention" => attention(lw, l, x),
        other => err(format!("no lowering for layer {other}")),
    }
}

/// Expands size-1 axes to `shape` (merge layers broadcast them, as Keras).
fn expand(lw: &mut Lower, x: Id, shape: &[Dim]) -> Result<Id> {
    if lw.f.ty(x).shape == shape {
        return Ok(x);
    }
    let dims: Vec<usize> = (0..shape.len()).collect();
    lw.f.broadcast(x, shape, &dims)
}

/// Mean over `axes`, dividing by their (possibly symbolic) total size.
pub fn mean(lw: &mut Lower, x: Id, axes: &[usize]) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let n = product(axes.iter().map(|&i| &shape[i])).map_err(overflow)?;
    let s = lw.f.reduce(ReduceOp::Sum, x, axes.to_vec())?;
    let count = lw.f.dim_size(&n);
    lw.f.div(s, count)
}

/// Dense contracts the last axis; leading axes are flattened into one.
fn dense(lw: &mut Lower, l: &Layer, x: Id) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let r = shape.len();
    let lead = product(&shape[..r - 1]).map_err(overflow)?;
    let x2 = lw.f.reshape(x, vec![lead.clone(), shape[r - 1].clone()])?;
    let k = lw.param(&l.name, "kernel")?;
    let mut y = lw.f.matmul(x2, k, false, false)?;
    if l.args.bool("use_bias") {
        let b = lw.param(&l.name, "bias")?;
        y = lw.f.add(y, b)?;
    }
    let mut out = shape[..r - 1].to_vec();
    out.push(lw.f.ty(y).last().clone());
    lw.f.reshape(y, out)
}

/// Inverted dropout in training (a kept unit is scaled by 1/(1-rate)); identity at
/// inference.
fn dropout(lw: &mut Lower, x: Id, rate: f64) -> Result<Id> {
    if lw.mode == Mode::Infer || rate == 0.0 {
        return Ok(x);
    }
    let key = lw
        .rng_key
        .ok_or_else(|| crate::ir::IrError("dropout needs a random key".into()))?;
    let salt = lw.next_salt();
    let ty = Type::f32(lw.f.ty(x).shape.clone());
    let u = lw.f.push_typed(Op::Rng { salt }, &[key], ty);
    let th = lw.f.scalar(rate);
    let keep = lw.f.cmp(Cmp::Ge, u, th)?;
    let scaled = lw.f.mul_c(x, 1.0 / (1.0 - rate))?;
    let zero = lw.f.scalar(0.0);
    lw.f.select(keep, scaled, zero)
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

/// Batch normalization: batch mean and biased variance in training (and the moving
/// averages updated as Keras does); the moving statistics at inference.
fn batch_norm(lw: &mut Lower, l: &Layer, x: Id) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let rank = shape.len();
    let axis = norm_axis(l.args.int("axis"), rank);
    let reduce: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
    let eps = l.args.float("epsilon");
    let momentum = l.args.float("momentum");
    let mm = lw.param(&l.name, "moving_mean")?;
    let mv = lw.param(&l.name, "moving_variance")?;
    let (m, v) = if lw.mode == Mode::Train {
        let m = mean(lw, x, &reduce)?;
        let mb = lw.f.broadcast(m, &shape, &[axis])?;
        let d = lw.f.sub(x, mb)?;
        let d2 = lw.f.mul(d, d)?;
        let v = mean(lw, d2, &reduce)?;
        for (key, stat, batch) in [("moving_mean", mm, m), ("moving_variance", mv, v)] {
            let old = lw.f.mul_c(stat, momentum)?;
            let new = lw.f.mul_c(batch, 1.0 - momentum)?;
            let upd = lw.f.add(old, new)?;
            lw.updates.push((format!("{}/{key}", l.name), upd));
        }
        (m, v)
    } else {
        (mm, mv)
    };
    let ve = lw.f.add_c(v, eps)?;
    let inv = lw.f.unary(Unary::Rsqrt, ve)?;
    let mut scale = inv;
    if l.args.bool("scale") {
        let g = lw.param(&l.name, "gamma")?;
        scale = lw.f.mul(scale, g)?;
    }
    let mb = lw.f.broadcast(m, &shape, &[axis])?;
    let sb = lw.f.broadcast(scale, &shape, &[axis])?;
    let d = lw.f.sub(x, mb)?;
    let mut y = lw.f.mul(d, sb)?;
    if l.args.bool("center") {
        let b = lw.param(&l.name, "beta")?;
        let bb = lw.f.broadcast(b, &shape, &[axis])?;
        y = lw.f.add(y, bb)?;
    }
    Ok(y)
}

/// Layer normalization over `axis` (biased variance), gamma/beta on those axes.
fn layer_norm(lw: &mut Lower, l: &Layer, x: Id) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let rank = shape.len();
    let axes: Vec<usize> = l
        .args
        .ints("axis")
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect();
    let mut sorted = axes.clone();
    sorted.sort();
    let kept: Vec<usize> = (0..rank).filter(|i| !sorted.contains(i)).collect();
    let eps = l.args.float("epsilon");
    let m = mean(lw, x, &sorted)?;
    let mb = lw.f.broadcast(m, &shape, &kept)?;
    let d = lw.f.sub(x, mb)?;
    let d2 = lw.f.mul(d, d)?;
    let v = mean(lw, d2, &sorted)?;
    let ve = lw.f.add_c(v, eps)?;
    let inv = lw.f.unary(Unary::Rsqrt, ve)?;
    let ib = lw.f.broadcast(inv, &shape, &kept)?;
    let mut y = lw.f.mul(d, ib)?;
    // Weights have the normalized axes' sizes in the order `axis` lists them.
    let place = |lw: &mut Lower, w: Id| -> Result<Id> {
        let mut perm: Vec<usize> = (0..axes.len()).collect();
        perm.sort_by_key(|&i| axes[i]);
        let wt = lw.f.transpose(w, perm)?;
        lw.f.broadcast(wt, &shape, &sorted)
    };
    if l.args.bool("scale") {
        let g = lw.param(&l.name, "gamma")?;
        let gb = place(lw, g)?;
        y = lw.f.mul(y, gb)?;
    }
    if l.args.bool("center") {
        let b = lw.param(&l.name, "beta")?;
        let bb = place(lw, b)?;
        y = lw.f.add(y, bb)?;
    }
    Ok(y)
}

fn rnn(lw: &mut Lower, l: &Layer, x: Id) -> Result<Id> {
    let a = &l.args;
    let (cell, prefix) = match l.kind.name {
        "lstm" => (Cell::Lstm, "lstm_cell"),
        "gru" => (Cell::Gru, "gru_cell"),
        _ => (Cell::Simple, "simple_rnn_cell"),
    };
    let attrs = RnnAttrs {
        cell,
        units: a.int("units"),
        activation: a.str("activation").to_string(),
        recurrent_activation: a
            .opt_str("recurrent_activation")
            .unwrap_or("sigmoid")
            .to_string(),
        return_sequences: a.bool("return_sequences"),
        go_backwards: a.bool("go_backwards"),
        reset_after: cell == Cell::Gru && a.bool("reset_after"),
        use_bias: a.bool("use_bias"),
    };
    let mut args = vec![
        x,
        lw.param(&l.name, &format!("{prefix}/kernel"))?,
        lw.param(&l.name, &format!("{prefix}/recurrent_kernel"))?,
    ];
    if attrs.use_bias {
        args.push(lw.param(&l.name, &format!("{prefix}/bias"))?);
    }
    lw.f.push(Op::Rnn(attrs), &args)
}

/// One EinsumDense projection `[B, T, D] × [D, H, K] + [H, K]` → `[B, H, T, K]`.
fn project(lw: &mut Lower, l: &Layer, x: Id, which: &str) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let (b, t, d) = (shape[0].clone(), shape[1].clone(), shape[2].clone());
    let k = lw.param(&l.name, &format!("{which}/kernel"))?;
    let kshape = lw.f.ty(k).shape.clone();
    let (h, kd) = (kshape[1].clone(), kshape[2].clone());
    let hk = h.mul(&kd).map_err(overflow)?;
    let bt = b.mul(&t).map_err(overflow)?;
    let x2 = lw.f.reshape(x, vec![bt, d.clone()])?;
    let k2 = lw.f.reshape(k, vec![d, hk])?;
    let mut y = lw.f.matmul(x2, k2, false, false)?;
    if l.args.bool("use_bias") {
        let bias = lw.param(&l.name, &format!("{which}/bias"))?;
        let hk = lw.f.ty(y).last().clone();
        let b1 = lw.f.reshape(bias, vec![hk])?;
        y = lw.f.add(y, b1)?;
    }
    let y4 = lw.f.reshape(y, vec![b, t, h, kd])?;
    lw.f.transpose(y4, vec![0, 2, 1, 3])
}

/// Keras's MultiHeadAttention: scaled dot-product over the key axis, softmax, dropout
/// on the attention probabilities in training, and the output projection.
fn attention(lw: &mut Lower, l: &Layer, x: &[Id]) -> Result<Id> {
    let q_in = x[0];
    let v_in = if x.len() > 1 { x[1] } else { x[0] };
    let k_in = if x.len() > 2 { x[2] } else { v_in };
    let key_dim = l.args.int("key_dim") as f64;
    let q = project(lw, l, q_in, "query")?;
    let k = project(lw, l, k_in, "key")?;
    let v = project(lw, l, v_in, "value")?;
    let qs = lw.f.mul_c(q, 1.0 / key_dim.sqrt())?;
    let scores = lw.f.matmul(qs, k, false, true)?;
    let probs = activation::softmax(&mut lw.f, scores, 3)?;
    let probs = dropout(lw, probs, l.args.float("dropout"))?;
    let o = lw.f.matmul(probs, v, false, false)?; // [B, H, Tq, V]
    let o = lw.f.transpose(o, vec![0, 2, 1, 3])?; // [B, Tq, H, V]
    let oshape = lw.f.ty(o).shape.clone();
    let (b, t, h, vd) = (
        oshape[0].clone(),
        oshape[1].clone(),
        oshape[2].clone(),
        oshape[3].clone(),
    );
    let bt = b.mul(&t).map_err(overflow)?;
    let hv = h.mul(&vd).map_err(overflow)?;
    let o2 = lw.f.reshape(o, vec![bt, hv.clone()])?;
    let wo = lw.param(&l.name, "attention_output/kernel")?;
    let dout = lw.f.ty(wo).last().clone();
    let wo2 = lw.f.reshape(wo, vec![hv, dout.clone()])?;
    let mut y = lw.f.matmul(o2, wo2, false, false)?;
    if l.args.bool("use_bias") {
        let bo = lw.param(&l.name, "attention_output/bias")?;
        y = lw.f.add(y, bo)?;
    }
    lw.f.reshape(y, vec![b, t, dout])
}
