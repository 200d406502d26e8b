//! multi_head_attention: `inputs: [query, value]` or `[query, value, key]` (one input
//! means self-attention), of any rank ≥ 3 (`[batch, ..., features]`), attending over
//! `attention_axes` (by default every axis between batch and features). Projections are
//! Keras's EinsumDense sub-layers with kernels `[d, heads, key_dim]` (and `gate` with
//! `use_gate`) and an output projection `[heads, value_dim, *output_shape]`. The
//! lowering groups the heads and the axes outside attention into one batch-like axis
//! and the attended axes into one, so every rank runs as the rank-3 case.

mod mask;

use super::lower::{Call, LowerCx, dropout, overflow};
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{Facts, Mask, NO_FACTS};
use crate::args::{ArgKind, Args, Default, FRACTION, Value, arg, int};
use crate::catalog::activations as activation;
use crate::catalog::{initializers, regularizers};
use crate::dim::{Dim, product};
use crate::ir::{Cmp, Id, Result};

pub const MULTI_HEAD_ATTENTION: LayerKind = LayerKind {
    name: "multi_head_attention",
    class: "MultiHeadAttention",
    args: &[
        arg("num_heads", int(1), Default::Required),
        arg("key_dim", int(1), Default::Required),
        arg("value_dim", int(1), Default::Null),
        arg("dropout", FRACTION, Default::Float(0.0)),
        arg("use_bias", ArgKind::Bool, Default::Bool(true)),
        arg("output_shape", ArgKind::Axes, Default::Null),
        arg("attention_axes", ArgKind::Axes, Default::Null),
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
        arg("use_gate", ArgKind::Bool, Default::Bool(false)),
        arg("seed", int(0), Default::Null),
        arg("use_causal_mask", ArgKind::Bool, Default::Bool(false)),
        // Keras's call arguments: the scores as a second output, an explicit mask.
        arg(
            "return_attention_scores",
            ArgKind::Bool,
            Default::Bool(false),
        ),
        arg("attention_mask", ArgKind::Tensor, Default::Null),
    ],
    arity: Arity::Range(1, 3),
    infer: mha,
    lower: lower_attention,
    facts: Facts {
        mask: Mask::ConsumesPasses,
        parts: attention_parts,
        ..NO_FACTS
    },
};

/// With `return_attention_scores`, Keras returns `(output, scores)`.
fn attention_parts(args: &Args) -> &'static [&'static str] {
    if args.bool("return_attention_scores") {
        &["output", "scores"]
    } else {
        &[]
    }
}

/// How many of a call's `total` inputs are query, value and key (an `attention_mask`
/// comes last).
fn regular(args: &Args, total: usize) -> usize {
    total - usize::from(args.opt_str("attention_mask").is_some())
}

/// Keras's attention scores `[B, others…, heads, query axes…, key axes…]` (`others` the
/// query's axes attention does not run over).
fn scores_shape(q: &[Dim], k: &[Dim], heads: Dim, axes: &[usize]) -> Vec<Dim> {
    let r = q.len();
    let mut s = vec![q[0].clone()];
    s.extend(
        (1..r - 1)
            .filter(|a| !axes.contains(a))
            .map(|a| q[a].clone()),
    );
    s.push(heads);
    s.extend(axes.iter().map(|&a| q[a].clone()));
    s.extend(axes.iter().map(|&a| k[a].clone()));
    s
}

/// The positions of query, value and key among `n` inputs (one input: self-attention;
/// two: the value is also the key).
fn roles(n: usize) -> [usize; 3] {
    let v = n.min(2) - 1;
    [0, v, if n == 3 { 2 } else { v }]
}

/// Keras's attention axes for inputs of rank `rank`: every axis between the batch and
/// the features by default; a negative axis counts from the end of the projected
/// `[batch, ..., heads, dim]` tensor (Keras's `(rank - 1) + axis`), so -2 is the last
/// axis before the features. Sorted (the result does not depend on their order).
fn attention_axes(args: &Args, rank: usize) -> Vec<i64> {
    let mut axes: Vec<i64> = match args.get("attention_axes") {
        Value::Ints(v) => v
            .iter()
            .map(|&a| if a < 0 { a + rank as i64 } else { a })
            .collect(),
        Value::Int(a) => vec![if *a < 0 { a + rank as i64 } else { *a }],
        _ => (1..rank as i64 - 1).collect(),
    };
    axes.sort_unstable();
    axes
}

/// The checked attention axes, or an error on `attention_axes`.
fn checked_axes(cx: &mut Ctx, rank: usize) -> Option<Vec<usize>> {
    let axes = attention_axes(cx.args, rank);
    let bad = axes.iter().find(|&&a| a < 1 || a > rank as i64 - 2);
    if let Some(a) = bad {
        cx.arg_error(
            "attention_axes",
            "E0508",
            format!("attention axis {a} is not between the batch and the features of a rank-{rank} query"),
            format!("attention runs over axes 1 to {} (or -{} to -2)", rank - 2, rank - 1),
        );
        return None;
    }
    if axes.windows(2).any(|w| w[0] == w[1]) {
        cx.arg_error(
            "attention_axes",
            "E0508",
            "`attention_axes` lists an axis twice".into(),
            "list each axis once",
        );
        return None;
    }
    Some(axes.into_iter().map(|a| a as usize).collect())
}

/// The input shapes Keras accepts: query, value and key of one rank ≥ 3, one batch,
/// value and key equal on every axis but the last, and key and query equal on every
/// axis attention does not run over.
fn check_inputs(cx: &mut Ctx) -> Option<Vec<usize>> {
    let n = cx.inputs.len();
    let [qi, vi, ki] = roles(n);
    let rank = cx.inputs[0].ty.rank();
    for (i, role) in ["query", "value", "key"].iter().enumerate().take(n) {
        let r = cx.inputs[i].ty.rank();
        if r < 3 || r != rank {
            let (name, ty) = (cx.inputs[i].name.to_string(), cx.inputs[i].ty.describe());
            let want = if i == 0 {
                "rank 3 or more".to_string()
            } else {
                format!("the query's rank ({rank})")
            };
            cx.shape_error(
                "E0501",
                format!("`multi_head_attention` expects a {role} of {want} [batch, ..., features], but `{name}` is {ty}"),
                "sequences are [batch, steps, features]; add an `embedding` or `reshape` first",
            );
            return None;
        }
    }
    let (q, v, k) = (
        cx.inputs[qi].ty.clone(),
        cx.inputs[vi].ty.clone(),
        cx.inputs[ki].ty.clone(),
    );
    if q.shape[0] != v.shape[0] || k.shape[0] != v.shape[0] {
        cx.shape_error(
            "E0511",
            format!("`multi_head_attention` needs the same batch size for query, value and key, but they are {}, {} and {}", q.shape[0], v.shape[0], k.shape[0]),
            "all inputs of one attention call must come from the same batch",
        );
        return None;
    }
    let (vname, kname) = (
        cx.inputs[vi].name.to_string(),
        cx.inputs[ki].name.to_string(),
    );
    if k.shape[1..rank - 1] != v.shape[1..rank - 1] {
        let qname = cx.inputs[0].name.to_string();
        let message = if rank == 3 {
            format!(
                "`multi_head_attention` needs key and value with the same number of steps, but the key `{kname}` has {} and the value `{vname}` has {}",
                k.shape[1], v.shape[1]
            )
        } else {
            format!(
                "`multi_head_attention` needs key and value equal on every axis but the last, but the key `{kname}` is {} and the value `{vname}` is {}",
                k.describe(),
                v.describe()
            )
        };
        cx.shape_error(
            "E0511",
            message,
            format!("key and value are usually the same tensor: pass `inputs: [{qname}, {vname}]` to use `{vname}` as both"),
        );
        return None;
    }
    let axes = checked_axes(cx, rank)?;
    if let Some(a) = (1..rank - 1).find(|a| !axes.contains(a) && q.shape[*a] != k.shape[*a]) {
        cx.shape_error(
            "E0511",
            format!(
                "`multi_head_attention` attends over axes {axes:?}, so query and key must be equal on axis {a}, but they are {} and {}",
                q.shape[a], k.shape[a]
            ),
            "list that axis in `attention_axes`, or give query and key the same size there",
        );
        return None;
    }
    Some(axes)
}

fn mha(cx: &mut Ctx) -> Option<Inferred> {
    // The explicit mask is checked against the scores once they are known.
    let mask_in = if regular(cx.args, cx.inputs.len()) < cx.inputs.len() {
        cx.inputs.pop()
    } else {
        None
    };
    cx.expect_float()?;
    let axes = check_inputs(cx)?;
    let [qi, vi, ki] = roles(cx.inputs.len());
    let (q, v, k) = (
        cx.inputs[qi].ty.clone(),
        cx.inputs[vi].ty.clone(),
        cx.inputs[ki].ty.clone(),
    );
    let dq = cx.known(q.last(), "query feature size")?;
    let dv = cx.known(v.last(), "value feature size")?;
    let dk = cx.known(k.last(), "key feature size")?;
    let heads = cx.args.int("num_heads");
    let kd = cx.args.int("key_dim");
    let vd = cx.args.opt_int("value_dim").unwrap_or(kd);
    let out = match cx.args.get("output_shape") {
        Value::Ints(o) => o.clone(),
        _ => vec![dq],
    };
    if out.iter().any(|&d| d < 1) {
        return cx.arg_error(
            "output_shape",
            "E0404",
            format!("`output_shape` sizes must be at least 1, but they are {out:?}"),
            "give the output's trailing sizes, e.g. `output_shape: 16` or `[4, 4]`",
        );
    }
    let bias = cx.args.bool("use_bias");
    let mut params = Vec::new();
    let mut project = |name: &str, d_in: i64, d_head: i64| {
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
    };
    // Keras builds (and lists) its sub-layers in this order.
    project("query", dq, kd);
    project("key", dk, kd);
    if cx.args.bool("use_gate") {
        project("gate", dq, vd);
    }
    project("value", dv, vd);
    let mut wo = vec![heads, vd];
    wo.extend(&out);
    params.push(cx.param("attention_output/kernel", wo, "kernel_initializer"));
    if bias {
        params.push(cx.param("attention_output/bias", out.clone(), "bias_initializer"));
    }
    let mut shape = q.shape[..q.rank() - 1].to_vec();
    shape.extend(out.iter().map(|&d| Dim::konst(d)));
    let scores = scores_shape(&q.shape, &k.shape, Dim::konst(heads), &axes);
    let keras_masks = input_mask_shapes(cx);
    let mut masks = keras_masks.clone();
    if cx.args.bool("use_causal_mask") {
        masks.push(mask::causal_shape(&q.shape, &v.shape));
    }
    if let Some(m) = mask_in {
        masks.push(m.ty.shape.clone());
        cx.inputs.push(m);
    }
    let full = match mask::keras_mask_shape(&masks, axes.len(), &scores) {
        Ok(full) => full,
        Err(why) => return mask_error(cx, &why, !keras_masks.is_empty()),
    };
    let output = TensorType::f32(shape);
    if cx.args.bool("return_attention_scores") {
        // Keras's Softmax gives the scores the mask it applied; the output keeps the
        // query's (Keras's default `compute_mask`, whatever `output_shape` makes it).
        let kept = cx.inputs[0].mask.clone();
        cx.part_masks = vec![kept, (!masks.is_empty()).then_some(full)];
    }
    if cx.args.bool("return_attention_scores") {
        cx.parts = vec![output.clone(), TensorType::f32(scores)];
    }
    Some(Inferred { output, params })
}

/// The Keras masks of query, value and key in the shapes Keras joins them: the
/// query's with an axis of 1 appended, the value's and a separate key's with an axis of
/// 1 before their last.
fn input_mask_shapes(cx: &Ctx) -> Vec<Vec<Dim>> {
    // Called while the explicit mask is out of `cx.inputs`.
    let n = cx.inputs.len();
    let [qi, vi, ki] = roles(n);
    let mut out = Vec::new();
    if let Some(m) = &cx.inputs[qi].mask {
        out.push(mask::query_shape(m));
    }
    let sources = if n == 3 { vec![vi, ki] } else { vec![vi] };
    for i in sources {
        if let Some(m) = &cx.inputs[i].mask {
            out.push(mask::value_shape(m));
        }
    }
    out
}

/// E0521 on the argument that brings the mask Keras cannot apply: `attention_mask`
/// when given, else the inputs' Keras masks (on the layer), else `use_causal_mask`.
fn mask_error(cx: &mut Ctx, why: &str, keras: bool) -> Option<Inferred> {
    let message = format!("`multi_head_attention` cannot apply its attention mask: {why}");
    let help = "Keras's mask is [batch, query steps, key steps] (more axes with `attention_axes`), joined with the inputs' Keras masks ([batch, query steps, 1] and [batch, 1, key steps]); `use_causal_mask` needs one attention axis whose sizes are those of axis 1";
    if cx.args.is_given("attention_mask") {
        cx.arg_error("attention_mask", "E0521", message, help)
    } else if keras {
        cx.shape_error(
            "E0521",
            format!("{message} (the inputs carry Keras masks)"),
            help,
        )
    } else {
        cx.arg_error("use_causal_mask", "E0521", message, help)
    }
}

/// One EinsumDense projection `[B, ..., D] × [D, H, K] + [H, K]` → `[B, ..., H, K]`.
fn project(lw: &mut LowerCx, l: &Call, x: Id, which: &str) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let r = shape.len();
    let d = shape[r - 1].clone();
    let k = l.param(lw, &format!("{which}/kernel"))?;
    let kshape = lw.f.ty(k).shape.clone();
    let (h, kd) = (kshape[1].clone(), kshape[2].clone());
    let hk = h.mul(&kd).map_err(overflow)?;
    let rows = product(&shape[..r - 1]).map_err(overflow)?;
    let x2 = lw.f.reshape(x, vec![rows, d.clone()])?;
    let k2 = lw.f.reshape(k, vec![d, hk])?;
    let mut y = lw.f.matmul(x2, k2, false, false)?;
    if l.args.bool("use_bias") {
        let bias = l.param(lw, &format!("{which}/bias"))?;
        let hk = lw.f.ty(y).last().clone();
        let b1 = lw.f.reshape(bias, vec![hk])?;
        y = lw.f.add(y, b1)?;
    }
    let mut out = shape[..r - 1].to_vec();
    out.extend([h, kd]);
    lw.f.reshape(y, out)
}

/// How a projected `[B, ..., H, K]` tensor was brought to `[B, M, T, K]` (M the heads
/// and the axes attention does not run over, T the attended positions): the
/// permutation and the shape before the merge, to undo it.
struct Grouped {
    perm: Vec<usize>,
    shape: Vec<Dim>,
}

/// `[B, ..., H, K]` → `[B, M, T, K]`: the axes outside attention and the heads first,
/// then the attended axes (in order), then the features.
fn group(lw: &mut LowerCx, x: Id, axes: &[usize]) -> Result<(Id, Grouped)> {
    let r = lw.f.ty(x).rank();
    let heads = r - 2;
    let others: Vec<usize> = (1..heads).filter(|a| !axes.contains(a)).collect();
    let mut perm = vec![0];
    perm.extend(&others);
    perm.push(heads);
    perm.extend(axes);
    perm.push(r - 1);
    let t = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        x
    } else {
        lw.f.transpose(x, perm.clone())?
    };
    let shape = lw.f.ty(t).shape.clone();
    let split = others.len() + 2;
    let merged = vec![
        shape[0].clone(),
        product(&shape[1..split]).map_err(overflow)?,
        product(&shape[split..r - 1]).map_err(overflow)?,
        shape[r - 1].clone(),
    ];
    let y = if merged == shape {
        t
    } else {
        lw.f.reshape(t, merged)?
    };
    Ok((y, Grouped { perm, shape }))
}

/// `[B, M, T, V]` → `[B, ..., H, V]`, undoing `group` (the features may differ).
fn ungroup(lw: &mut LowerCx, o: Id, g: &Grouped) -> Result<Id> {
    let mut shape = g.shape.clone();
    let last = shape.len() - 1;
    shape[last] = lw.f.ty(o).last().clone();
    let o = if lw.f.ty(o).shape == shape {
        o
    } else {
        lw.f.reshape(o, shape)?
    };
    let mut inv = vec![0; g.perm.len()];
    for (i, &p) in g.perm.iter().enumerate() {
        inv[p] = i;
    }
    if inv.iter().enumerate().all(|(i, &p)| i == p) {
        Ok(o)
    } else {
        lw.f.transpose(o, inv)
    }
}

/// Keras's MultiHeadAttention: scaled dot-product over the attended positions (jointly
/// over every attention axis), softmax, dropout on the attention probabilities in
/// training, Keras's sigmoid gate (`use_gate`), and the output projection.
fn lower_attention(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let n = regular(l.args, x.len());
    let [qi, vi, ki] = roles(n);
    let (q_in, v_in, k_in) = (x[qi], x[vi], x[ki]);
    let rank = lw.f.ty(q_in).rank();
    let axes: Vec<usize> = attention_axes(l.args, rank)
        .into_iter()
        .map(|a| a as usize)
        .collect();
    let key_dim = l.args.int("key_dim") as f64;
    let gate = if l.args.bool("use_gate") {
        let g = project(lw, l, q_in, "gate")?;
        Some(activation::apply(&mut lw.f, "sigmoid", g)?)
    } else {
        None
    };
    let q = project(lw, l, q_in, "query")?;
    let (q, grouped) = group(lw, q, &axes)?;
    let k = project(lw, l, k_in, "key")?;
    let (k, _) = group(lw, k, &axes)?;
    let v = project(lw, l, v_in, "value")?;
    let (v, _) = group(lw, v, &axes)?;
    let qs = lw.f.mul_c(q, 1.0 / key_dim.sqrt())?;
    let scores = lw.f.matmul(qs, k, false, true)?;
    let heads = lw.f.ty(l.param(lw, "query/kernel")?).shape[1].clone();
    let keras_scores = scores_shape(
        &lw.f.ty(q_in).shape.clone(),
        &lw.f.ty(k_in).shape.clone(),
        heads,
        &axes,
    );
    let joined = attention_mask(lw, l, x, n, &keras_scores)?;
    if l.args.bool("return_attention_scores") {
        // Keras's Softmax gives the scores the mask it applied; the output keeps the
        // query's (Keras's default `compute_mask`, whatever `output_shape` makes it).
        let kept = lw.masks[0];
        lw.part_masks = vec![kept, joined.map(|(m, _)| m)];
    }
    let mask = match joined {
        Some((_, m)) => {
            let s = lw.f.ty(scores).shape.clone();
            Some(lw.f.reshape(m, s)?)
        }
        None => None,
    };
    let probs = match mask {
        // Keras's masked softmax: a large negative score where masked, and zeros there
        // after — except where Keras calls its backend's `dot_product_attention` (rank-3
        // inputs, no dropout, no scores returned), which leaves a query that attends
        // to nothing attending to every position alike.
        Some(m) => {
            let zero = lw.f.scalar(0.0);
            let valid = lw.f.cmp(Cmp::Ne, m, zero)?;
            let low = lw.f.scalar(-1e9);
            let s = lw.f.select(valid, scores, low)?;
            let p = activation::softmax(&mut lw.f, s, 3)?;
            let fused = rank == 3
                && l.args.float("dropout") == 0.0
                && !l.args.bool("return_attention_scores");
            if fused {
                p
            } else {
                lw.f.select(valid, p, zero)?
            }
        }
        None => activation::softmax(&mut lw.f, scores, 3)?,
    };
    if l.args.bool("return_attention_scores") {
        // Keras returns the probabilities before dropout, in its own layout.
        let s = lw.f.reshape(probs, keras_scores)?;
        lw.parts_out = vec![s];
    }
    let probs = dropout(lw, probs, l.args.float("dropout"))?;
    let o = lw.f.matmul(probs, v, false, false)?; // [B, M, T, V]
    let mut o = ungroup(lw, o, &grouped)?; // [B, ..., H, V]
    if let Some(g) = gate {
        o = lw.f.mul(o, g)?;
    }
    let oshape = lw.f.ty(o).shape.clone();
    let r = oshape.len();
    let rows = product(&oshape[..r - 2]).map_err(overflow)?;
    let hv = oshape[r - 2].mul(&oshape[r - 1]).map_err(overflow)?;
    let o2 = lw.f.reshape(o, vec![rows, hv.clone()])?;
    let wo = l.param(lw, "attention_output/kernel")?;
    let wshape = lw.f.ty(wo).shape.clone();
    let dout = product(&wshape[2..]).map_err(overflow)?;
    let wo2 = lw.f.reshape(wo, vec![hv, dout.clone()])?;
    let mut y = lw.f.matmul(o2, wo2, false, false)?;
    if l.args.bool("use_bias") {
        let mut bo = l.param(lw, "attention_output/bias")?;
        if lw.f.ty(bo).rank() != 1 {
            bo = lw.f.reshape(bo, vec![dout])?;
        }
        y = lw.f.add(y, bo)?;
    }
    let y = lw.f.reshape(y, l.output.shape.clone())?;
    if !lw.parts_out.is_empty() {
        lw.parts_out.insert(0, y);
    }
    Ok(y)
}

/// Keras's attention mask in the layout of its scores (1 attends): the query's Keras
/// mask along the rows, the value's (and a separate key's) along the columns, the
/// causal mask with `use_causal_mask`, and an explicit `attention_mask` (the last of
/// `x`), joined as Keras joins them: `(the mask as Keras's Softmax gets it, the mask
/// brought to the scores)`. `None` without any.
fn attention_mask(
    lw: &mut LowerCx,
    l: &Call,
    x: &[Id],
    n: usize,
    scores: &[Dim],
) -> Result<Option<(Id, Id)>> {
    let masks = lw.masks.clone();
    let query = masks.first().copied().flatten();
    let value = if n > 1 { masks[1] } else { query };
    let key = if n > 2 { masks[2] } else { None };
    let q_shape = lw.f.ty(x[0]).shape.clone();
    let v_shape = lw.f.ty(x[roles(n)[1]]).shape.clone();
    let mut parts = Vec::new();
    if let Some(value) = query {
        let shape = mask::query_shape(&lw.f.ty(value).shape.clone());
        parts.push(mask::Part {
            value,
            shape,
            binary: true,
        });
    }
    for value in [value, key].into_iter().flatten() {
        let shape = mask::value_shape(&lw.f.ty(value).shape.clone());
        parts.push(mask::Part {
            value,
            shape,
            binary: true,
        });
    }
    if l.args.bool("use_causal_mask") {
        parts.push(mask::causal(
            &mut lw.f,
            mask::causal_shape(&q_shape, &v_shape),
        )?);
    }
    if n < x.len() {
        let shape = lw.f.ty(x[n]).shape.clone();
        parts.push(mask::Part {
            value: x[n],
            shape,
            binary: false,
        });
    }
    let axes = scores.len() - q_shape.len();
    mask::lower_mask(&mut lw.f, parts, axes, scores)
}
