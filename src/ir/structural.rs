//! Structural primitives — broadcast, reshape, transpose, slice, pad, concat: shape
//! rules, reference implementations and VJPs.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::real::Real;
use super::{Func, Id, Op, ReduceOp, Result, Type, err};
use crate::dim::{Dim, product};

/// Operand axis `i` maps to output axis `dims[i]` (increasing); sizes equal or 1.
pub fn check_broadcast(from: &Type, to: &Type, dims: &[usize]) -> Result<()> {
    if dims.len() != from.rank()
        || dims.windows(2).any(|w| w[0] >= w[1])
        || dims.iter().any(|&d| d >= to.rank())
    {
        return err(format!(
            "bad broadcast dims {dims:?} from {:?} to {:?}",
            from.shape, to.shape
        ));
    }
    for (i, &d) in dims.iter().enumerate() {
        if from.shape[i] != to.shape[d] && from.shape[i].as_const() != Some(1) {
            return err(format!(
                "cannot broadcast {} to {} on axis {d}",
                from.shape[i], to.shape[d]
            ));
        }
    }
    Ok(())
}

pub fn check_reshape(from: &Type, to: &Type) -> Result<()> {
    let a = product(&from.shape).map_err(|_| super::IrError("overflow".into()))?;
    let b = product(&to.shape).map_err(|_| super::IrError("overflow".into()))?;
    if a != b {
        return err(format!(
            "reshape from {:?} to {:?} changes the element count",
            from.shape, to.shape
        ));
    }
    Ok(())
}

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    let t = tys[0];
    match op {
        Op::Transpose { perm } => {
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..t.rank()).collect::<Vec<_>>() {
                return err(format!("bad permutation {perm:?}"));
            }
            Ok(Type::new(
                perm.iter().map(|&p| t.shape[p].clone()).collect(),
                t.dtype,
            ))
        }
        Op::Slice { axis, start, end } => {
            let mut s = t.shape.clone();
            let len = end
                .sub(start)
                .map_err(|_| super::IrError("overflow".into()))?;
            *s.get_mut(*axis)
                .ok_or_else(|| super::IrError("slice axis".into()))? = len;
            Ok(Type::new(s, t.dtype))
        }
        Op::Pad { axis, low, high } => {
            let mut s = t.shape.clone();
            let d = s
                .get_mut(*axis)
                .ok_or_else(|| super::IrError("pad axis".into()))?;
            *d = d
                .add(low)
                .and_then(|x| x.add(high))
                .map_err(|_| super::IrError("overflow".into()))?;
            Ok(Type::new(s, t.dtype))
        }
        Op::Concat { axis } => {
            if *axis >= t.rank() {
                return err(format!("concat on axis {axis} of rank {}", t.rank()));
            }
            let mut s = t.shape.clone();
            for o in &tys[1..] {
                if o.rank() != t.rank()
                    || (0..t.rank()).any(|i| i != *axis && o.shape[i] != t.shape[i])
                {
                    return err("concat of mismatched shapes");
                }
                s[*axis] = s[*axis]
                    .add(&o.shape[*axis])
                    .map_err(|_| super::IrError("overflow".into()))?;
            }
            Ok(Type::new(s, t.dtype))
        }
        Op::Broadcast { .. } | Op::Reshape => {
            err("broadcast and reshape take their type from the builder")
        }
        _ => err(format!("{op:?} is not structural")),
    }
}

fn dim(d: &Dim, env: &dyn Fn(&Dim) -> Result<i64>) -> Result<usize> {
    let v = env(d)?;
    usize::try_from(v).map_err(|_| super::IrError(format!("negative size {v}")))
}

pub fn eval<T: Real>(
    op: &Op,
    shape: &[usize],
    args: &[&ArrayD<T>],
    env: &dyn Fn(&Dim) -> Result<i64>,
) -> Result<ArrayD<T>> {
    let x = args[0];
    Ok(match op {
        Op::Broadcast { dims } => {
            let mut mid = vec![1usize; shape.len()];
            for (i, &d) in dims.iter().enumerate() {
                mid[d] = x.shape()[i];
            }
            let xs = x
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&mid))
                .map_err(|e| super::IrError(e.to_string()))?;
            xs.broadcast(IxDyn(shape))
                .ok_or_else(|| super::IrError(format!("cannot broadcast {mid:?} to {shape:?}")))?
                .to_owned()
        }
        Op::Reshape => x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(shape))
            .map_err(|e| super::IrError(e.to_string()))?,
        Op::Transpose { perm } => x
            .clone()
            .permuted_axes(IxDyn(perm))
            .as_standard_layout()
            .into_owned(),
        Op::Slice { axis, start, end } => {
            let (s, e) = (dim(start, env)?, dim(end, env)?);
            x.slice_axis(Axis(*axis), Slice::from(s..e)).to_owned()
        }
        Op::Pad { axis, low, .. } => {
            let lo = dim(low, env)?;
            let mut out = ArrayD::zeros(IxDyn(shape));
            let n = x.shape()[*axis];
            out.slice_axis_mut(Axis(*axis), Slice::from(lo..lo + n))
                .assign(x);
            out
        }
        Op::Concat { axis } => {
            let views: Vec<_> = args.iter().map(|a| a.view()).collect();
            ndarray::concatenate(Axis(*axis), &views).map_err(|e| super::IrError(e.to_string()))?
        }
        _ => return err(format!("{op:?} is not structural")),
    })
}

pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    let x = n.args[0];
    let xty = f.ty(x).clone();
    Ok(match &n.op {
        Op::Broadcast { dims } => {
            let out_rank = n.ty.rank();
            let new_axes: Vec<usize> = (0..out_rank).filter(|a| !dims.contains(a)).collect();
            let expanded: Vec<usize> = dims
                .iter()
                .enumerate()
                .filter(|&(i, &d)| {
                    xty.shape[i].as_const() == Some(1) && n.ty.shape[d].as_const() != Some(1)
                })
                .map(|(_, &d)| d)
                .collect();
            let mut axes = new_axes;
            axes.extend(expanded);
            axes.sort();
            let s = f.reduce(ReduceOp::Sum, g, axes)?;
            vec![Some(f.reshape(s, xty.shape.clone())?)]
        }
        Op::Reshape => vec![Some(f.reshape(g, xty.shape.clone())?)],
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(f.transpose(g, inv)?)]
        }
        Op::Slice { axis, start, end } => {
            let high = xty.shape[*axis]
                .sub(end)
                .map_err(|_| super::IrError("overflow".into()))?;
            vec![Some(f.push(
                Op::Pad {
                    axis: *axis,
                    low: start.clone(),
                    high,
                },
                &[g],
            )?)]
        }
        Op::Pad { axis, low, .. } => {
            let end = low
                .add(&xty.shape[*axis])
                .map_err(|_| super::IrError("overflow".into()))?;
            vec![Some(f.push(
                Op::Slice {
                    axis: *axis,
                    start: low.clone(),
                    end,
                },
                &[g],
            )?)]
        }
        Op::Concat { axis } => {
            let mut start = Dim::konst(0);
            let mut out = Vec::new();
            for &a in &n.args {
                let end = start
                    .add(&f.ty(a).shape[*axis])
                    .map_err(|_| super::IrError("overflow".into()))?;
                out.push(Some(f.push(
                    Op::Slice {
                        axis: *axis,
                        start: start.clone(),
                        end: end.clone(),
                    },
                    &[g],
                )?));
                start = end;
            }
            out
        }
        _ => return err(format!("{:?} is not structural", n.op)),
    })
}
