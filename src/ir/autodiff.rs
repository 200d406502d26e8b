//! Reverse-mode automatic differentiation as a graph transformation: a short driver
//! over the primitives' VJP rules (each rule lives with its primitive).

use super::{Func, Id, Op, Result, err};

/// The VJP rule of a node, dispatched to its primitive family.
fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    match &f.nodes[node].op {
        Op::Unary(_) | Op::Binary(_) | Op::Cmp(_) | Op::Select | Op::Cast(_) | Op::Rng { .. } => {
            super::elementwise::vjp(f, node, g)
        }
        Op::Broadcast { .. }
        | Op::Reshape
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => super::structural::vjp(f, node, g),
        Op::Reduce { .. } => super::reduce::vjp(f, node, g),
        Op::MatMul { .. } => super::matmul::vjp(f, node, g),
        Op::Conv(_) | Op::ConvInputGrad(_) | Op::Pool { .. } => super::window::vjp(f, node, g),
        Op::Gather => super::gather::vjp(f, node, g),
        Op::Rnn(_) => super::rnn::vjp(f, node, g),
        Op::Input(_) | Op::Const(_) | Op::Iota { .. } | Op::DimSize(_) => Ok(vec![]),
        op => err(format!("{op:?} cannot be differentiated")),
    }
}

/// Appends to `f` the gradient of the scalar value `y` with respect to each of `wrt`,
/// and returns the gradient values (zeros where `y` does not depend on one).
pub fn grad(f: &mut Func, y: Id, wrt: &[Id]) -> Result<Vec<Id>> {
    if f.ty(y).rank() != 0 {
        return err("grad needs a scalar");
    }
    let n = f.nodes.len();
    // Nodes that depend on some `wrt`, and nodes `y` depends on: the ones to visit.
    let mut active = vec![false; n];
    for &w in wrt {
        active[w] = true;
    }
    for i in 0..n {
        if f.nodes[i].args.iter().any(|&a| active[a]) {
            active[i] = true;
        }
    }
    let mut needed = vec![false; n];
    needed[y] = true;
    for i in (0..n).rev() {
        if needed[i] {
            for &a in &f.nodes[i].args {
                needed[a] = true;
            }
        }
    }
    let mut adj: Vec<Option<Id>> = vec![None; n];
    adj[y] = Some(f.scalar(1.0));
    for i in (0..=y).rev() {
        let Some(g) = adj[i] else { continue };
        if !active[i] || !needed[i] || f.nodes[i].args.is_empty() {
            continue;
        }
        let cts = vjp(f, i, g)?;
        let args = f.nodes[i].args.clone();
        for (a, ct) in args.into_iter().zip(cts) {
            let Some(ct) = ct else { continue };
            if !active[a] {
                continue;
            }
            adj[a] = Some(match adj[a] {
                None => ct,
                Some(prev) => f.add(prev, ct)?,
            });
        }
    }
    wrt.iter()
        .map(|&w| match adj[w] {
            Some(g) => Ok(g),
            None => {
                let shape = f.ty(w).shape.clone();
                f.full(0.0, &shape)
            }
        })
        .collect()
}
