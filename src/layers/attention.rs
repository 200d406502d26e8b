//! multi_head_attention: `inputs: [query, value]` or `[query, value, key]` (one input
//! means self-attention). Projections are Keras's EinsumDense sub-layers with kernels
//! `[d_model, heads, key_dim]` and an output projection `[heads, value_dim, d_out]`.

use super::lower::{Call, LowerCx, dropout, overflow};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, Mask, NO_FACTS};
use crate::args::{ArgKind, Default, FRACTION, arg, int};
use crate::catalog::activations as activation;
use crate::catalog::{initializers, regularizers};
use crate::ir::{Cmp, Id, Op, Result, Type};

pub const MULTI_HEAD_ATTENTION: LayerKind = LayerKind {
    name: "multi_head_attention",
    class: "MultiHeadAttention",
    args: &[
        arg("num_heads", int(1), Default::Required),
        arg("key_dim", int(1), Default::Required),
        arg("value_dim", int(1), Default::Null),
        arg("dropout", FRACTION, Default::Float(0.0)),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        arg("output_shape", int(1), Default::Null),
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
        // On every projection's kernel and bias (Keras passes them to its EinsumDense
        // sub-layers).
        regularizers::KERNEL,
        regularizers::BIAS,
        arg("seed", int(0), Default::Null),
        arg("use_causal_mask", ArgKind::Bool, Default::Bool(false)),
    ],
    arity: Arity::Range(1, 3),
    infer: mha,
    lower: lower_attention,
    facts: Facts {
        mask: Mask::ConsumesKeeps,
        ..NO_FACTS
    },
};

fn mha(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    let n = cx.inputs.len();
    for (i, role) in ["query", "value", "key"].iter().enumerate().take(n) {
        if cx.inputs[i].ty.rank() != 3 {
            let (name, ty) = (cx.inputs[i].name.to_string(), cx.inputs[i].ty.describe());
            return cx.shape_error(
                "E0501",
                format!("`multi_head_attention` expects a rank-3 {role} [batch, steps, features], but `{name}` is {ty}"),
                "sequences are [batch, steps, features]; add an `embedding` or `reshape` first",
            );
        }
    }
    let q = cx.inputs[0].ty.clone();
    let v = cx.inputs[n.min(2) - 1].ty.clone();
    let k = cx.inputs[if n == 3 { 2 } else { n.min(2) - 1 }].ty.clone();
    if q.shape[0] != v.shape[0] || k.shape[0] != v.shape[0] {
        return cx.shape_error(
            "E0511",
            format!("`multi_head_attention` needs the same batch size for query, value and key, but they are {}, {} and {}", q.shape[0], v.shape[0], k.shape[0]),
            "all inputs of one attention call must come from the same batch",
        );
    }
    if k.shape[1] != v.shape[1] {
        let qname = cx.inputs[0].name.to_string();
        let vname = cx.inputs[n.min(2) - 1].name.to_string();
        let kname = cx.inputs[if n == 3 { 2 } else { n.min(2) - 1 }]
            .name
            .to_string();
        return cx.shape_error(
            "E0511",
            format!(
                "`multi_head_attention` needs key and value with the same number of steps, but the key `{kname}` has {} and the value `{vname}` has {}",
                k.shape[1], v.shape[1]
            ),
            format!("key and value are usually the same tensor: pass `inputs: [{qname}, {vname}]` to use `{vname}` as both"),
        );
    }
    let dq = cx.known(&q.shape[2], "query feature size")?;
    let dv = cx.known(&v.shape[2], "value feature size")?;
    let dk = cx.known(&k.shape[2], "key feature size")?;
    let heads = cx.args.int("num_heads");
    let kd = cx.args.int("key_dim");
    let vd = cx.args.opt_int("value_dim").unwrap_or(kd);
    let dout = cx.args.opt_int("output_shape").unwrap_or(dq);
    let bias = cx.args.bool("use_bias");
    let mut params = Vec::new();
    for (name, d_in, d_head) in [("query", dq, kd), ("key", dk, kd), ("value", dv, vd)] {
        params.push(cx.param(
            &format!("{name}/kernel"),
            vec![d_in, heads, d_head],
            "kernel_initializer",
        ));
        if bias {
            params.push(cx.param(
                &format!("{name}/bias"),
                vec![heads, d_head],
                "bias_initializer",
            ));
        }
    }
    params.push(cx.param(
        "attention_output/kernel",
        vec![heads, vd, dout],
        "kernel_initializer",
    ));
    if bias {
        params.push(cx.param("attention_output/bias", vec![dout], "bias_initializer"));
    }
    Some(Inferred {
        output: TensorType::f32(vec![q.shape[0].clone(), q.shape[1].clone(), dout.into()]),
        params,
    })
}

/// One EinsumDense projection `[B, T, D] × [D, H, K] + [H, K]` → `[B, H, T, K]`.
fn project(lw: &mut LowerCx, l: &Call, x: Id, which: &str) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let (b, t, d) = (shape[0].clone(), shape[1].clone(), shape[2].clone());
    let k = l.param(lw, &format!("{which}/kernel"))?;
    let kshape = lw.f.ty(k).shape.clone();
    let (h, kd) = (kshape[1].clone(), kshape[2].clone());
    let hk = h.mul(&kd).map_err(overflow)?;
    let bt = b.mul(&t).map_err(overflow)?;
    let x2 = lw.f.reshape(x, vec![bt, d.clone()])?;
    let k2 = lw.f.reshape(k, vec![d, hk])?;
    let mut y = lw.f.matmul(x2, k2, false, false)?;
    if l.args.bool("use_bias") {
        let bias = l.param(lw, &format!("{which}/bias"))?;
        let hk = lw.f.ty(y).last().clone();
        let b1 = lw.f.reshape(bias, vec![hk])?;
        y = lw.f.add(y, b1)?;
    }
    let y4 = lw.f.reshape(y, vec![b, t, h, kd])?;
    lw.f.transpose(y4, vec![0, 2, 1, 3])
}

/// Keras's MultiHeadAttention: scaled dot-product over the key axis, softmax, dropout
/// on the attention probabilities in training, and the output projection.
fn lower_attention(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let q_in = x[0];
    let v_in = if x.len() > 1 { x[1] } else { x[0] };
    let k_in = if x.len() > 2 { x[2] } else { v_in };
    let key_dim = l.args.int("key_dim") as f64;
    let q = project(lw, l, q_in, "query")?;
    let k = project(lw, l, k_in, "key")?;
    let v = project(lw, l, v_in, "value")?;
    let qs = lw.f.mul_c(q, 1.0 / key_dim.sqrt())?;
    let scores = lw.f.matmul(qs, k, false, true)?;
    let probs = match attention_mask(lw, l, x.len(), scores)? {
        // Keras's masked softmax: -1e9 where masked, and zeros there after.
        Some(m) => {
            let zero = lw.f.scalar(0.0);
            let valid = lw.f.cmp(Cmp::Ne, m, zero)?;
            let low = lw.f.scalar(-1e9);
            let s = lw.f.select(valid, scores, low)?;
            let p = activation::softmax(&mut lw.f, s, 3)?;
            lw.f.select(valid, p, zero)?
        }
        None => activation::softmax(&mut lw.f, scores, 3)?,
    };
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
    let wo = l.param(lw, "attention_output/kernel")?;
    let dout = lw.f.ty(wo).last().clone();
    let wo2 = lw.f.reshape(wo, vec![hv, dout.clone()])?;
    let mut y = lw.f.matmul(o2, wo2, false, false)?;
    if l.args.bool("use_bias") {
        let bo = l.param(lw, "attention_output/bias")?;
        y = lw.f.add(y, bo)?;
    }
    lw.f.reshape(y, vec![b, t, dout])
}

/// Keras's attention mask `[batch, heads, query steps, key steps]` (1 attends): the
/// query's mask along the rows, the value's (and a separate key's) along the columns,
/// and with `use_causal_mask` no step attends to a later one. `None` without any.
fn attention_mask(lw: &mut LowerCx, l: &Call, inputs: usize, scores: Id) -> Result<Option<Id>> {
    let shape = lw.f.ty(scores).shape.clone();
    let masks = lw.masks.clone();
    let query = masks.first().copied().flatten();
    let value = if inputs > 1 { masks[1] } else { query };
    let key = if inputs > 2 { masks[2] } else { None };
    let mut parts: Vec<(Id, [usize; 2])> = Vec::new();
    parts.extend(query.map(|m| (m, [0, 2])));
    parts.extend(value.map(|m| (m, [0, 3])));
    parts.extend(key.map(|m| (m, [0, 3])));
    if l.args.bool("use_causal_mask") {
        let square = vec![shape[2].clone(), shape[3].clone()];
        let rows =
            lw.f.push_typed(Op::Iota { axis: 0 }, &[], Type::f32(square.clone()));
        let cols =
            lw.f.push_typed(Op::Iota { axis: 1 }, &[], Type::f32(square));
        parts.push((lw.f.cmp(Cmp::Ge, rows, cols)?, [2, 3]));
    }
    let mut out: Option<Id> = None;
    for (m, dims) in parts {
        let b = lw.f.broadcast(m, &shape, &dims)?;
        out = Some(match out {
            None => b,
            Some(o) => lw.f.mul(o, b)?,
        });
    }
    Ok(out)
}
