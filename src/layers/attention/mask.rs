//! Keras's attention mask (`MultiHeadAttention._compute_attention_mask` and
//! `_masked_softmax`), shape for shape: the query's Keras mask as `[B, T, 1]`, the
//! value's and the key's as `[B, 1, S]`, the causal mask as `[1, T, S]` (T and S the
//! sizes of axis 1 of query and value), joined by logical and with numpy's broadcasting
//! (aligned on the right) and with an explicit `attention_mask`; then ones inserted
//! before the `2n` attended axes (n attention axes) until the rank of Keras's scores
//! `[B, others…, heads, query axes…, key axes…]`, each axis then 1 or the scores'.
//! The shape rule checks the shapes with [`keras_mask_shape`]; the lowering builds the
//! same mask in IR with [`lower_mask`].

use crate::dim::Dim;
use crate::ir::{Cmp, Func, Id, IrError, Op, Result, Type};

fn one() -> Dim {
    Dim::konst(1)
}

/// numpy's broadcast of two shapes (aligned on the right), or `None` where an axis is
/// neither 1 nor equal.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let r = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| {
        let k = r - s.len();
        if i < k { one() } else { s[i - k].clone() }
    };
    (0..r)
        .map(|i| {
            let (x, y) = (at(a, i), at(b, i));
            if x == y || y == one() {
                Some(x)
            } else if x == one() {
                Some(y)
            } else {
                None
            }
        })
        .collect()
}

/// Keras's `_masked_softmax`: ones inserted at axis `-2n-1` until the mask has the
/// scores' rank; `None` where Keras's `expand_dims` fails (fewer than `2n` axes) or the
/// mask has more axes than the scores.
pub fn expanded(shape: &[Dim], n: usize, rank: usize) -> Option<Vec<Dim>> {
    let mut s = shape.to_vec();
    if s.len() > rank {
        return None;
    }
    while s.len() < rank {
        let at = s.len().checked_sub(2 * n)?;
        s.insert(at, one());
    }
    Some(s)
}

/// Whether a mask of Keras's scores' rank fits them (Keras's `Softmax`: each axis 1 or
/// the scores').
pub fn fits(mask: &[Dim], scores: &[Dim]) -> bool {
    mask.len() == scores.len() && mask.iter().zip(scores).all(|(m, s)| m == s || *m == one())
}

/// The shape Keras's combined mask takes before it meets the scores, from the shapes
/// of the masks it joins; an error message where Keras fails.
pub fn keras_mask_shape(
    masks: &[Vec<Dim>],
    n: usize,
    scores: &[Dim],
) -> std::result::Result<Vec<Dim>, String> {
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let mut joined: Vec<Dim> = Vec::new();
    for m in masks {
        joined = broadcast_shapes(&joined, m).ok_or_else(|| {
            format!(
                "the masks {} and {} do not broadcast together",
                describe(&joined),
                describe(m)
            )
        })?;
    }
    let full = expanded(&joined, n, scores.len()).ok_or_else(|| {
        format!(
            "Keras cannot bring a mask of shape {} to the scores' rank {} (it inserts axes before the last {} axes)",
            describe(&joined),
            scores.len(),
            2 * n
        )
    })?;
    if fits(&full, scores) {
        Ok(full)
    } else {
        Err(format!(
            "the mask, as {}, does not fit the attention scores {}",
            describe(&full),
            describe(scores)
        ))
    }
}

pub fn describe(s: &[Dim]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Keras's `expand_dims(query_mask, -1)`: the query's Keras mask with an axis of 1
/// appended.
pub fn query_shape(m: &[Dim]) -> Vec<Dim> {
    let mut s = m.to_vec();
    s.push(one());
    s
}

/// Keras's `expand_dims(value_mask, -2)`: an axis of 1 before the mask's last.
pub fn value_shape(m: &[Dim]) -> Vec<Dim> {
    let mut s = m.to_vec();
    s.insert(s.len().saturating_sub(1), one());
    s
}

/// Keras's causal mask `[1, T, S]`: 1 where the row is at or after the column.
pub fn causal_shape(q: &[Dim], v: &[Dim]) -> Vec<Dim> {
    vec![one(), q[1].clone(), v[1].clone()]
}

/// A mask of the given Keras shape brought to `target` (numpy broadcasting, aligned on
/// the right): its axes of size 1 that `target` widens are dropped, the rest broadcast.
fn expand_to(f: &mut Func, x: Id, shape: &[Dim], target: &[Dim]) -> Result<Id> {
    if shape == target {
        return Ok(x);
    }
    let k = target.len() - shape.len();
    let kept: Vec<usize> = (0..shape.len())
        .filter(|&i| shape[i] == target[k + i])
        .collect();
    let squeezed: Vec<Dim> = kept.iter().map(|&i| shape[i].clone()).collect();
    let x = f.reshape(x, squeezed)?;
    let dims: Vec<usize> = kept.iter().map(|&i| k + i).collect();
    f.broadcast(x, target, &dims)
}

/// One mask of the join: its value (1 attends, 0 not, any dtype) and Keras's shape
/// for it (the value's own shape with axes of size 1 where Keras has them).
pub struct Part {
    pub value: Id,
    pub shape: Vec<Dim>,
    /// Already f32 0/1 (Keras masks, the causal mask); else compared with 0 first.
    pub binary: bool,
}

/// The causal part: `[1, T, S]`, 1 where row ≥ column.
pub fn causal(f: &mut Func, shape: Vec<Dim>) -> Result<Part> {
    let square = vec![shape[1].clone(), shape[2].clone()];
    let rows = f.push_typed(Op::Iota { axis: 0 }, &[], Type::f32(square.clone()));
    let cols = f.push_typed(Op::Iota { axis: 1 }, &[], Type::f32(square));
    let value = f.cmp(Cmp::Ge, rows, cols)?;
    Ok(Part {
        value,
        shape,
        binary: true,
    })
}

/// The joined mask as f32 0/1, as Keras's Softmax gets it (Keras's shape, axes of 1
/// where no part has the scores' size) and brought to the scores' shape `scores` (`n`
/// attention axes); `None` without any part.
pub fn lower_mask(
    f: &mut Func,
    parts: Vec<Part>,
    n: usize,
    scores: &[Dim],
) -> Result<Option<(Id, Id)>> {
    let shapes: Vec<Vec<Dim>> = parts.iter().map(|p| p.shape.clone()).collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let full = keras_mask_shape(&shapes, n, scores).map_err(IrError)?;
    // The joined shape before the expansion: `full` without the inserted axes.
    let joined = shapes
        .iter()
        .try_fold(Vec::new(), |acc, s| broadcast_shapes(&acc, s))
        .ok_or_else(|| IrError("attention masks do not broadcast".into()))?;
    let zero = f.scalar(0.0);
    let mut out: Option<Id> = None;
    for p in parts {
        let v = if f.ty(p.value).dtype.is_int() {
            f.push(Op::Cast(crate::types::DType::F32), &[p.value])?
        } else {
            p.value
        };
        let v = f.reshape(v, p.shape.clone())?;
        let b = if p.binary {
            v
        } else {
            f.cmp(Cmp::Ne, v, zero)?
        };
        let b = expand_to(f, b, &p.shape, &joined)?;
        out = Some(match out {
            None => b,
            Some(o) => f.mul(o, b)?,
        });
    }
    let m = out.expect("at least one part");
    let m = f.reshape(m, full.clone())?;
    let wide = expand_to(f, m, &full, scores)?;
    Ok(Some((m, wide)))
}
