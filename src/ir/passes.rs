//! Graph passes: dead-code elimination, common-subexpression elimination, constant
//! folding and algebraic simplification. Each pass keeps the function's meaning and
//! returns a new, renumbered function.

use std::collections::HashMap;

use super::{Binary, Func, Id, Op, Unary};

/// Which nodes some output depends on.
pub fn live(f: &Func) -> Vec<bool> {
    let mut live = vec![false; f.nodes.len()];
    for (_, o) in &f.outputs {
        live[*o] = true;
    }
    for i in (0..f.nodes.len()).rev() {
        if live[i] {
            for &a in &f.nodes[i].args {
                live[a] = true;
            }
        }
    }
    // Inputs stay: they are the function's signature.
    for (i, n) in f.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input(_)) {
            live[i] = true;
        }
    }
    live
}

/// Rebuilds `f` keeping the nodes `keep` says, with `remap` redirecting uses. Takes
/// the function by value: nodes move into the result (their types are not copied).
fn rebuild(f: Func, keep: &[bool], remap: &[Id]) -> Func {
    let mut new_id = vec![usize::MAX; f.nodes.len()];
    let mut nodes = Vec::with_capacity(keep.iter().filter(|&&k| k).count());
    for (i, mut n) in f.nodes.into_iter().enumerate() {
        if !keep[i] {
            continue;
        }
        for a in &mut n.args {
            *a = new_id[remap[*a]];
        }
        nodes.push(n);
        new_id[i] = nodes.len() - 1;
    }
    let outputs = f
        .outputs
        .into_iter()
        .map(|(n, o)| (n, new_id[remap[o]]))
        .collect();
    Func {
        name: f.name,
        inputs: f.inputs,
        nodes,
        outputs,
    }
}

/// Removes nodes no output depends on.
pub fn dce(f: &Func) -> Func {
    dce_owned(f.clone())
}

fn dce_owned(f: Func) -> Func {
    let keep = live(&f);
    let remap: Vec<Id> = (0..f.nodes.len()).collect();
    rebuild(f, &keep, &remap)
}

/// Merges nodes that compute the same op on the same arguments. Random numbers are
/// merged too only when their salt and key agree, which is when they are the same draw.
pub fn cse(f: &Func) -> Func {
    cse_owned(f.clone())
}

fn cse_owned(f: Func) -> Func {
    let mut remap: Vec<Id> = (0..f.nodes.len()).collect();
    let mut keep = vec![true; f.nodes.len()];
    {
        // The same op (by its printed form, so constants compare as printed) on the same
        // (merged) arguments, then the same type: types are compared, never hashed or
        // printed (a symbolic dim is a map; hashing every node's was most of the pass).
        let mut seen: HashMap<(String, Vec<Id>), Vec<Id>> = HashMap::new();
        for (i, n) in f.nodes.iter().enumerate() {
            if matches!(n.op, Op::Input(_)) {
                continue;
            }
            let args: Vec<Id> = n.args.iter().map(|&a| remap[a]).collect();
            let same = seen.entry((format!("{:?}", n.op), args)).or_default();
            match same.iter().find(|&&j| f.nodes[j].ty == n.ty) {
                Some(&j) => {
                    remap[i] = j;
                    keep[i] = false;
                }
                None => same.push(i),
            }
        }
    }
    dce_owned(rebuild(f, &keep, &remap))
}

/// The scalar node `id` holds when it is a constant or a broadcast of one.
pub fn const_of(f: &Func, id: Id) -> Option<f64> {
    match &f.nodes[id].op {
        Op::Const(c) => Some(*c),
        Op::Broadcast { .. } => const_of(f, f.nodes[id].args[0]),
        _ => None,
    }
}

/// Constant folding and algebraic simplification: scalar arithmetic on constants,
/// `x*1`, `x+0`, `x-0`, `x/1`, `--x`, transpose of a transpose, reshape chains,
/// reshape to the same shape.
pub fn simplify(f: &Func) -> Func {
    simplify_owned(f.clone())
}

fn simplify_owned(mut g: Func) -> Func {
    let mut remap: Vec<Id> = (0..g.nodes.len()).collect();
    for i in 0..g.nodes.len() {
        for a in &mut g.nodes[i].args {
            *a = remap[*a];
        }
        let args = &g.nodes[i].args;
        let same_ty = |g: &Func, a: Id| g.nodes[a].ty == g.nodes[i].ty;
        // Only the ops simplified below are copied (their attributes are small).
        let op = match &g.nodes[i].op {
            op @ (Op::Binary(_)
            | Op::Unary(_)
            | Op::Transpose { .. }
            | Op::Reshape
            | Op::Broadcast { .. }) => op.clone(),
            _ => continue,
        };
        let args = args.clone();
        let rank = g.nodes[i].ty.rank();
        match op {
            Op::Binary(b) => {
                let (x, y) = (args[0], args[1]);
                let (cx, cy) = (const_of(&g, x), const_of(&g, y));
                if rank == 0
                    && let (Some(a), Some(c)) = (cx, cy)
                {
                    let v = super::elementwise::binary::<f64>(b, a, c);
                    g.nodes[i].op = Op::Const(v);
                    g.nodes[i].args = vec![];
                    continue;
                }
                let pick = match (b, cx, cy) {
                    (Binary::Mul, _, Some(1.0))
                    | (Binary::Add | Binary::Sub, _, Some(0.0))
                    | (Binary::Div, _, Some(1.0)) => Some(x),
                    (Binary::Mul, Some(1.0), _) | (Binary::Add, Some(0.0), _) => Some(y),
                    _ => None,
                };
                if let Some(p) = pick
                    && same_ty(&g, p)
                {
                    remap[i] = p;
                }
            }
            Op::Unary(u) => {
                let x = args[0];
                if u == Unary::Neg
                    && let Op::Unary(Unary::Neg) = g.nodes[x].op
                {
                    remap[i] = g.nodes[x].args[0];
                } else if let Some(c) = const_of(&g, x)
                    && rank == 0
                {
                    let v = super::elementwise::unary::<f64>(u, c);
                    g.nodes[i].op = Op::Const(v);
                    g.nodes[i].args = vec![];
                }
            }
            Op::Transpose { perm } => {
                let x = args[0];
                if let Op::Transpose { perm: inner } = &g.nodes[x].op {
                    let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
                    let src = g.nodes[x].args[0];
                    if composed.iter().enumerate().all(|(k, &p)| k == p) {
                        remap[i] = src;
                    } else {
                        g.nodes[i].op = Op::Transpose { perm: composed };
                        g.nodes[i].args = vec![src];
                    }
                }
            }
            Op::Reshape => {
                let x = args[0];
                if same_ty(&g, x) {
                    remap[i] = x;
                } else if let Op::Reshape = g.nodes[x].op {
                    let src = g.nodes[x].args[0];
                    if same_ty(&g, src) {
                        remap[i] = src;
                    } else {
                        g.nodes[i].args = vec![src];
                    }
                }
            }
            Op::Broadcast { dims } => {
                // Broadcasting to the same shape with the identity mapping is a no-op.
                let x = args[0];
                if same_ty(&g, x) && dims.iter().enumerate().all(|(k, &d)| k == d) {
                    remap[i] = x;
                }
            }
            _ => {}
        }
    }
    let keep = vec![true; g.nodes.len()];
    dce_owned(rebuild(g, &keep, &remap))
}

/// The standard pipeline: simplify, CSE, simplify again, DCE.
pub fn optimize(f: &Func) -> Func {
    let f = simplify(f);
    let f = cse_owned(f);
    simplify_owned(f)
}
