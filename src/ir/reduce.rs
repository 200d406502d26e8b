//! Reductions (sum, max over a set of axes): shape rule, reference implementation, VJP.

use ndarray::{ArrayD, Axis};

use super::real::Real;
use super::{Cmp, Func, Id, Op, Result, Type, err};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

impl ReduceOp {
    /// Every reduction, for readers of the textual form.
    pub const ALL: [ReduceOp; 2] = [ReduceOp::Sum, ReduceOp::Max];
}

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    let Op::Reduce { axes, .. } = op else {
        return err("not a reduce");
    };
    let t = tys[0];
    if axes.iter().any(|&a| a >= t.rank()) || axes.windows(2).any(|w| w[0] >= w[1]) {
        return err(format!("bad reduce axes {axes:?} for rank {}", t.rank()));
    }
    let shape = t
        .shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect();
    Ok(Type::new(shape, t.dtype))
}

pub fn eval<T: Real>(op: &Op, args: &[&ArrayD<T>]) -> Result<ArrayD<T>> {
    let Op::Reduce { op, axes } = op else {
        return err("not a reduce");
    };
    let mut x = args[0].clone();
    for &a in axes.iter().rev() {
        x = match op {
            ReduceOp::Sum => x.sum_axis(Axis(a)),
            ReduceOp::Max => x.fold_axis(Axis(a), T::neg_infinity(), |&m, &v| {
                if v > m || v.is_nan() { v } else { m }
            }),
        };
    }
    Ok(x)
}

pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    let Op::Reduce { op, axes } = &n.op else {
        return err("not a reduce");
    };
    let x = n.args[0];
    let xshape = f.ty(x).shape.clone();
    let kept: Vec<usize> = (0..xshape.len()).filter(|i| !axes.contains(i)).collect();
    let gb = f.broadcast(g, &xshape, &kept)?;
    Ok(match op {
        ReduceOp::Sum => vec![Some(gb)],
        ReduceOp::Max => {
            // Ties share the gradient equally (as TensorFlow).
            let yb = f.broadcast(node, &xshape, &kept)?;
            let mask = f.cmp(Cmp::Eq, x, yb)?;
            let count = f.reduce(ReduceOp::Sum, mask, axes.clone())?;
            let cb = f.broadcast(count, &xshape, &kept)?;
            let share = f.div(mask, cb)?;
            vec![Some(f.mul(gb, share)?)]
        }
    })
}
