//! Gather (embedding lookup) and its adjoint, scatter-add: shape rules, reference
//! implementations, VJP.

use ndarray::{ArrayD, Axis, IxDyn};

use super::real::Real;
use super::{Func, Id, Op, Result, Type, err};

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    match op {
        Op::Gather => {
            let (table, idx) = (tys[0], tys[1]);
            if table.rank() != 2 {
                return err("gather needs a rank-2 table");
            }
            let mut s = idx.shape.clone();
            s.push(table.shape[1].clone());
            Ok(Type::f32(s))
        }
        _ => err("scatter_add takes its type from the builder"),
    }
}

fn index<T: Real>(v: T, n: usize) -> Result<usize> {
    let i = v.to_f64().unwrap_or(-1.0);
    if i < 0.0 || i >= n as f64 || i.fract() != 0.0 {
        return err(format!("index {i} is out of range for a table of {n} rows"));
    }
    Ok(i as usize)
}

pub fn eval<T: Real>(op: &Op, shape: &[usize], args: &[&ArrayD<T>]) -> Result<ArrayD<T>> {
    match op {
        Op::Gather => {
            let (table, idx) = (args[0], args[1]);
            let (n, d) = (table.shape()[0], table.shape()[1]);
            let mut out = Vec::with_capacity(idx.len() * d);
            for &i in idx.iter() {
                out.extend(table.index_axis(Axis(0), index(i, n)?).iter().copied());
            }
            ArrayD::from_shape_vec(IxDyn(shape), out).map_err(|e| super::IrError(e.to_string()))
        }
        Op::ScatterAdd => {
            let (idx, upd) = (args[0], args[1]);
            let (n, d) = (shape[0], shape[1]);
            let mut out = ArrayD::<T>::zeros(IxDyn(shape));
            let upd = upd.as_standard_layout();
            let flat = upd
                .as_slice()
                .ok_or_else(|| super::IrError("layout".into()))?;
            for (k, &i) in idx.iter().enumerate() {
                let row = index(i, n)?;
                for j in 0..d {
                    out[[row, j]] += flat[k * d + j];
                }
            }
            Ok(out)
        }
        _ => err(format!("{op:?} is not a gather")),
    }
}

pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    match n.op {
        Op::Gather => {
            let (table, idx) = (n.args[0], n.args[1]);
            let ty = f.ty(table).clone();
            Ok(vec![
                Some(f.push_typed(Op::ScatterAdd, &[idx, g], ty)),
                None,
            ])
        }
        _ => err("scatter_add has no vjp"),
    }
}
