//! Graph passes: dead-code elimination, common-subexpression elimination, constant
//! folding and algebraic simplification. Each pass keeps the function's meaning and
//! returns a new, renumbered function.

use std::collections::HashMap;

use super::{Binary, Func, Id, Node, Op, Unary};

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

/// Rebuilds `f` keeping the nodes `keep` says, with `remap` redirecting uses.
fn rebuild(f: &Func, keep: &[bool], remap: &[Id]) -> Func {
    let mut new_id = vec![usize::MAX; f.nodes.len()];
    let mut out = Func {
        name: f.name.clone(),
        inputs: f.inputs.clone(),
        nodes: Vec::new(),
        outputs: Vec::new(),
    };
    for (i, n) in f.nodes.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let args = n.args.iter().map(|&a| new_id[remap[a]]).collect();
        out.nodes.push(Node {
            op: n.op.clone(),
            args,
            ty: n.ty.clone(),
        });
        new_id[i] = out.nodes.len() - 1;
    }
    out.outputs = f
        .outputs
        .iter()
        .map(|(n, o)| (n.clone(), new_id[remap[*o]]))
        .collect();
    out
}

/// Removes nodes no output depends on.
pub fn dce(f: &Func) -> Func {
    let keep = live(f);
    let remap: Vec<Id> = (0..f.nodes.len()).collect();
    rebuild(f, &keep, &remap)
}

/// Merges nodes that compute the same op on the same arguments. Random numbers are
/// merged too only when their salt and key agree, which is when they are the same draw.
pub fn cse(f: &Func) -> Func {
    let mut seen: HashMap<String, Id> = HashMap::new();
    let mut remap: Vec<Id> = (0..f.nodes.len()).collect();
    let mut keep = vec![true; f.nodes.len()];
    for (i, n) in f.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input(_)) {
            continue;
        }
        let args: Vec<Id> = n.args.iter().map(|&a| remap[a]).collect();
        let key = format!("{:?}|{:?}|{:?}", n.op, args, n.ty);
        match seen.get(&key) {
            Some(&j) => {
                remap[i] = j;
                keep[i] = false;
            }
            None => {
                seen.insert(key, i);
            }
        }
    }
    dce(&rebuild(f, &keep, &remap))
}

fn const_of(f: &Func, id: Id) -> Option<f64> {
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
    let mut g = f.clone();
    let mut remap: Vec<Id> = (0..g.nodes.len()).collect();
    for i in 0..g.nodes.len() {
        let args: Vec<Id> = g.nodes[i].args.iter().map(|&a| remap[a]).collect();
        g.nodes[i].args = args.clone();
        let ty = g.nodes[i].ty.clone();
        let same_ty = |g: &Func, a: Id| g.nodes[a].ty == ty;
        match g.nodes[i].op.clone() {
            Op::Binary(b) => {
                let (x, y) = (args[0], args[1]);
                let (cx, cy) = (const_of(&g, x), const_of(&g, y));
                if ty.rank() == 0
                    && let (Some(a), Some(c)) = (cx, cy)
                {
                    let v = super::elementwise::binary::<f64>(b, a, c);
                    g.nodes[i] = Node {
                        op: Op::Const(v),
                        args: vec![],
                        ty,
                    };
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
                    && ty.rank() == 0
                {
                    let v = super::elementwise::unary::<f64>(u, c);
                    g.nodes[i] = Node {
                        op: Op::Const(v),
                        args: vec![],
                        ty,
                    };
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
                        g.nodes[i] = Node {
                            op: Op::Transpose { perm: composed },
                            args: vec![src],
                            ty,
                        };
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
    dce(&rebuild(&g, &keep, &remap))
}

/// The standard pipeline: simplify, CSE, simplify again, DCE.
pub fn optimize(f: &Func) -> Func {
    let f = simplify(f);
    let f = cse(&f);
    simplify(&f)
}
