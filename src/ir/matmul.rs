//! Batched matrix product over the last two axes, with optional transposes: shape rule,
//! reference implementation (ndarray's GEMM per batch), VJP.

use ndarray::{ArrayD, Ix3, IxDyn, linalg::general_mat_mul, s};

use super::real::Real;
use super::{Func, Id, Op, Result, Type, err};

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    let Op::MatMul { ta, tb } = op else {
        return err("not a matmul");
    };
    let (a, b) = (tys[0], tys[1]);
    let r = a.rank();
    if r < 2 || b.rank() != r || a.shape[..r - 2] != b.shape[..r - 2] {
        return err(format!("matmul of {:?} and {:?}", a.shape, b.shape));
    }
    let (m, ka) = if *ta {
        (&a.shape[r - 1], &a.shape[r - 2])
    } else {
        (&a.shape[r - 2], &a.shape[r - 1])
    };
    let (kb, n) = if *tb {
        (&b.shape[r - 1], &b.shape[r - 2])
    } else {
        (&b.shape[r - 2], &b.shape[r - 1])
    };
    if ka != kb {
        return err(format!("matmul inner sizes {ka} and {kb} differ"));
    }
    let mut s = a.shape[..r - 2].to_vec();
    s.push(m.clone());
    s.push(n.clone());
    Ok(Type::f32(s))
}

fn as3<T: Real>(x: &ArrayD<T>) -> Result<ndarray::Array3<T>> {
    let r = x.ndim();
    let batch: usize = x.shape()[..r - 2].iter().product();
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[batch, x.shape()[r - 2], x.shape()[r - 1]]))
        .and_then(|a| a.into_dimensionality::<Ix3>())
        .map_err(|e| super::IrError(e.to_string()))
}

pub fn eval<T: Real>(op: &Op, shape: &[usize], args: &[&ArrayD<T>]) -> Result<ArrayD<T>> {
    let Op::MatMul { ta, tb } = op else {
        return err("not a matmul");
    };
    let (a, b) = (as3(args[0])?, as3(args[1])?);
    let r = shape.len();
    let (m, n) = (shape[r - 2], shape[r - 1]);
    let batch = a.shape()[0];
    let mut out = ndarray::Array3::<T>::zeros((batch, m, n));
    for i in 0..batch {
        let av = a.slice(s![i, .., ..]);
        let bv = b.slice(s![i, .., ..]);
        let av = if *ta { av.reversed_axes() } else { av };
        let bv = if *tb { bv.reversed_axes() } else { bv };
        general_mat_mul(
            T::one(),
            &av,
            &bv,
            T::zero(),
            &mut out.slice_mut(s![i, .., ..]),
        );
    }
    out.into_shape_with_order(IxDyn(shape))
        .map_err(|e| super::IrError(e.to_string()))
}

pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    let Op::MatMul { ta, tb } = n.op else {
        return err("not a matmul");
    };
    let (a, b) = (n.args[0], n.args[1]);
    let (da, db) = match (ta, tb) {
        (false, false) => (f.matmul(g, b, false, true)?, f.matmul(a, g, true, false)?),
        (false, true) => (f.matmul(g, b, false, false)?, f.matmul(g, a, true, false)?),
        (true, false) => (f.matmul(b, g, false, true)?, f.matmul(a, g, false, false)?),
        (true, true) => (f.matmul(b, g, true, true)?, f.matmul(g, a, true, true)?),
    };
    Ok(vec![Some(da), Some(db)])
}
