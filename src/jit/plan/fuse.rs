//! Passes over the finished kernel list: folding an elementwise loop into the product
//! or reduction it consumes (its epilogue), and dropping loop axes of extent 1.

use std::collections::HashSet;

use super::*;

/// What epilogue fusion looks up, kept current as kernels merge: each buffer's readers
/// (kernel indices), the function's output buffers, and the kernels fused away (left
/// in place until the pass ends, so indices stay stable).
struct Fusion {
    readers: HashMap<BufId, Vec<usize>>,
    outputs: HashSet<BufId>,
    removed: Vec<bool>,
}

impl Fusion {
    fn new(kernels: &[Kernel], outputs: &[(Access, Vec<Slot>)]) -> Fusion {
        let mut readers: HashMap<BufId, Vec<usize>> = HashMap::new();
        for (k, kern) in kernels.iter().enumerate() {
            for a in reads(kern) {
                let r = readers.entry(a.buf).or_default();
                if r.last() != Some(&k) {
                    r.push(k);
                }
            }
        }
        Fusion {
            readers,
            outputs: outputs.iter().map(|(a, _)| a.buf).collect(),
            removed: vec![false; kernels.len()],
        }
    }

    /// Kernel `j` (`kernel`) becomes part of kernel `i`: what it reads, `i` reads.
    fn merge(&mut self, kernel: &Kernel, j: usize, i: usize) {
        for a in reads(kernel) {
            if let Some(r) = self.readers.get_mut(&a.buf) {
                r.retain(|&k| k != j && k != i);
                let at = r.partition_point(|&k| k < i);
                r.insert(at, i);
            }
        }
        self.removed[j] = true;
    }
}

impl Builder<'_> {
    /// Folds an elementwise loop that consumes a matrix product element for element
    /// into the product as its epilogue (bias and activation after a dense layer): the
    /// loop must be the product's only reader, run over exactly `[m, n]`, store
    /// contiguously, read its other operands with unit or zero inner strides, and
    /// nothing between the two may write what the loop reads.
    ///
    /// Likewise a loop over a reduction's result that reads it element for element
    /// becomes the reduction's epilogue when the reduction runs along the innermost
    /// axis only (each output element is finished when its row is).
    pub(super) fn fuse_epilogues(&mut self, outputs: &[(Access, Vec<Slot>)]) {
        let mut f = Fusion::new(&self.kernels, outputs);
        for i in 0..self.kernels.len() {
            if f.removed[i] {
                continue;
            }
            let found = match &self.kernels[i] {
                Kernel::Gemm(_) => self.epilogue_for(i, &f),
                Kernel::Loop(_) => self.reduce_epilogue_for(i, &f),
                Kernel::Call(_) | Kernel::Attention(_) | Kernel::Norm(_) => None,
            };
            if let Some((j, acc)) = found {
                f.merge(&self.kernels[j], j, i);
                let Kernel::Loop(l) = std::mem::replace(&mut self.kernels[j], Kernel::removed())
                else {
                    unreachable!("epilogues are loop kernels")
                };
                let e = Some(Box::new(Epilogue { kernel: l, acc }));
                match &mut self.kernels[i] {
                    Kernel::Gemm(g) => g.epilogue = e,
                    Kernel::Loop(r) => r.epilogue = e,
                    Kernel::Call(_) | Kernel::Attention(_) | Kernel::Norm(_) => {}
                }
                if matches!(self.kernels[i], Kernel::Gemm(_)) {
                    self.extend_epilogue(i, &mut f, outputs);
                }
            }
        }
        let mut k = 0;
        self.kernels.retain(|_| (!f.removed[k], k += 1).0);
    }

    /// Folds into product `i`'s epilogue the loops that consume its value element for
    /// element and alone (an activation after the bias add whose input has a second
    /// use inside the expression, so the graph could not inline it): one loop over the
    /// product's rows instead of two. The intermediate buffer is then written by no one
    /// and takes no room.
    fn extend_epilogue(&mut self, i: usize, f: &mut Fusion, outputs: &[(Access, Vec<Slot>)]) {
        loop {
            let Kernel::Gemm(g) = &self.kernels[i] else {
                return;
            };
            let Some(e) = &g.epilogue else { return };
            let mid = e.kernel.sink_access().buf;
            if let Some(j) = self.sole_loop_reader(i, mid, f) {
                self.collapse_rows(j, i);
            }
            let Kernel::Gemm(g) = &self.kernels[i] else {
                return;
            };
            let Some(e) = &g.epilogue else { return };
            if outputs.iter().any(|(a, _)| a.buf == mid) {
                return;
            }
            let Some((j, acc)) = self.product_reader(i, mid, f) else {
                return;
            };
            let Kernel::Loop(then) = &self.kernels[j] else {
                return;
            };
            // A plain copy would leave the fed value as the result: not worth a case.
            // Nothing else the call writes may be read: a block's epilogue sees only
            // its own rows of those.
            let written = writes(&self.kernels[i]);
            let clash =
                (then.loads.iter().enumerate()).any(|(x, a)| x != acc && written.contains(&a.buf));
            if clash || then.expr.last() == Some(&Expr::Load(acc)) {
                return;
            }
            let joined = compose(&e.kernel, then, acc);
            // The product's load, where the joined loads put it.
            let product = &e.kernel.loads[e.acc];
            let Some(at) = joined.loads.iter().position(|l| l == product) else {
                return;
            };
            f.merge(&self.kernels[j], j, i);
            self.kernels[j] = Kernel::removed();
            if let Kernel::Gemm(g) = &mut self.kernels[i]
                && let Some(e) = &mut g.epilogue
            {
                e.kernel = joined;
                e.acc = at;
            }
            let zero = self.slot(&Dim::konst(0));
            if let BufKind::Arena { len } = &mut self.bufs[mid] {
                *len = zero;
            }
        }
    }

    /// The only reader of buffer `b`, if it is a loop kernel after `i` and `b` is not a
    /// function output.
    fn sole_loop_reader(&self, i: usize, b: BufId, f: &Fusion) -> Option<usize> {
        if f.outputs.contains(&b) {
            return None;
        }
        let [j] = f.readers.get(&b).map_or(&[][..], |r| &r[..]) else {
            return None;
        };
        match &self.kernels[*j] {
            Kernel::Loop(l) if *j > i && l.epilogue.is_none() => Some(*j),
            _ => None,
        }
    }

    /// Whether loop kernel `j` can move up to run as part of kernel `i`: nothing in
    /// between writes what it reads or where it stores.
    fn movable(&self, i: usize, j: usize, f: &Fusion) -> bool {
        let Kernel::Loop(l) = &self.kernels[j] else {
            return false;
        };
        // A kernel fused away runs as part of an earlier one, which is checked instead.
        (i + 1..j).filter(|&k| !f.removed[k]).all(|k| {
            writes(&self.kernels[k])
                .into_iter()
                .all(|w| w != l.sink_access().buf && l.loads.iter().all(|a| a.buf != w))
        })
    }

    fn reduce_epilogue_for(&self, i: usize, f: &Fusion) -> Option<(usize, usize)> {
        let Kernel::Loop(r) = &self.kernels[i] else {
            return None;
        };
        let Sink::Reduce(_, out) = &r.sink else {
            return None;
        };
        let rank = r.space.len();
        // Reduced along the innermost axis only.
        if rank == 0
            || out.known[rank - 1] != Some(0)
            || out.known[..rank - 1].contains(&Some(0))
            || r.epilogue.is_some()
        {
            return None;
        }
        let j = self.sole_loop_reader(i, out.buf, f)?;
        let Kernel::Loop(l) = &self.kernels[j] else {
            return None;
        };
        let accs: Vec<usize> = (0..l.loads.len())
            .filter(|&x| l.loads[x].buf == out.buf)
            .collect();
        let [acc] = accs[..] else { return None };
        let a = &l.loads[acc];
        let ok = l.space[..] == r.space[..rank - 1]
            && matches!(l.sink, Sink::Store(_))
            && a.offset == out.offset
            && a.strides[..] == out.strides[..rank - 1]
            && self.movable(i, j, f);
        ok.then_some((j, acc))
    }

    /// Rewrites loop `j` over `[a, b, …, n]` as the same loop over product `i`'s
    /// `[m, n]` when `m` is the product of the leading extents and every access walks
    /// the leading axes as one (each stride the next one's times its extent, or all of
    /// them 0): a dense layer's activation over `[batch, seq, units]`.
    fn collapse_rows(&mut self, j: usize, i: usize) {
        let (Kernel::Gemm(g), Kernel::Loop(l)) = (&self.kernels[i], &self.kernels[j]) else {
            return;
        };
        let r = l.space.len();
        if r < 3 || l.space[r - 1] != g.n || !l.also.is_empty() || l.epilogue.is_some() {
            return;
        }
        let lead: Vec<Dim> = l.space[..r - 1]
            .iter()
            .map(|&s| self.sizes[s].clone())
            .collect();
        if product(&lead).ok().as_ref() != Some(&self.sizes[g.m]) {
            return;
        }
        let m = g.m;
        let walks_as_one = |a: &Access| {
            let st: Vec<&Dim> = a.strides[..r - 1].iter().map(|&s| &self.sizes[s]).collect();
            st.iter().all(|d| d.as_const() == Some(0))
                || (0..r - 2).all(|k| st[k + 1].mul(&lead[k + 1]).ok().as_ref() == Some(st[k]))
        };
        let sink = l.sink_access();
        if !matches!(l.sink, Sink::Store(_))
            || !l.loads.iter().chain([sink]).all(walks_as_one)
            || l.expr
                .iter()
                .any(|e| matches!(e, Expr::Index(_) | Expr::Size(_)))
        {
            return;
        }
        let two = |a: &Access| Access {
            buf: a.buf,
            offset: a.offset,
            strides: a.strides[r - 2..].to_vec(),
            known: a.known[r - 2..].to_vec(),
        };
        let Kernel::Loop(l) = &mut self.kernels[j] else {
            return;
        };
        l.loads = l.loads.iter().map(two).collect();
        l.sink = Sink::Store(two(l.sink_access()));
        l.space = vec![m, l.space[r - 1]];
    }

    fn epilogue_for(&self, i: usize, f: &Fusion) -> Option<(usize, usize)> {
        let Kernel::Gemm(g) = &self.kernels[i] else {
            return None;
        };
        self.product_reader(i, g.c, f)
    }

    /// The loop that can run as (part of) product `i`'s epilogue reading buffer `c`
    /// (the product, or its epilogue's result), and which of its loads reads `c`.
    fn product_reader(&self, i: usize, c: BufId, f: &Fusion) -> Option<(usize, usize)> {
        let Kernel::Gemm(g) = &self.kernels[i] else {
            return None;
        };
        if !g.batch.is_empty() {
            return None;
        }
        let j = self.sole_loop_reader(i, c, f)?;
        let Kernel::Loop(l) = &self.kernels[j] else {
            return None;
        };
        let n = &self.sizes[g.n];
        let identity = |a: &Access| {
            self.sizes[a.offset].as_const() == Some(0)
                && a.strides.len() == 2
                && self.sizes[a.strides[0]] == *n
                && a.known[1] == Some(1)
        };
        let Sink::Store(sink) = &l.sink else {
            return None;
        };
        let accs: Vec<usize> = (0..l.loads.len())
            .filter(|&x| l.loads[x].buf == c)
            .collect();
        let [acc] = accs[..] else { return None };
        let ok = l.space == [g.m, g.n]
            && identity(sink)
            && identity(&l.loads[acc])
            && l.loads
                .iter()
                .all(|a| matches!(a.known[1], Some(0) | Some(1)))
            && l.expr
                .iter()
                .all(|e| !matches!(e, Expr::Index(_) | Expr::Size(_)))
            && self.movable(i, j, f);
        ok.then_some((j, acc))
    }

    /// Removes axes of extent 1 from loop nests (a 1-channel convolution's patch loop
    /// would otherwise run its innermost loop once per element).
    pub(super) fn drop_unit_axes(&mut self) {
        let sizes = &self.sizes;
        for k in &mut self.kernels {
            let Kernel::Loop(l) = k else { continue };
            if l.epilogue.is_some() {
                continue;
            }
            let unit: Vec<bool> = l
                .space
                .iter()
                .map(|&s| sizes[s].as_const() == Some(1))
                .collect();
            if !unit.contains(&true) {
                continue;
            }
            let keep = |a: &mut Access| {
                let mut d = 0;
                a.strides.retain(|_| (!unit[d], d += 1).0);
                let mut d = 0;
                a.known.retain(|_| (!unit[d], d += 1).0);
            };
            for a in &mut l.loads {
                keep(a);
            }
            match &mut l.sink {
                Sink::Store(a) | Sink::Reduce(_, a) => keep(a),
            }
            let renumber: Vec<usize> = (0..unit.len())
                .map(|d| unit[..d].iter().filter(|&&u| !u).count())
                .collect();
            for e in &mut l.expr {
                if let Expr::Index(ax) = *e {
                    *e = if unit[ax] {
                        Expr::Const(0.0)
                    } else {
                        Expr::Index(renumber[ax])
                    };
                }
            }
            let mut d = 0;
            l.space.retain(|_| (!unit[d], d += 1).0);
        }
    }
}

/// `first`'s value fed to `then` in place of its load `acc`: one loop with `first`'s
/// loads and expression, then `then`'s, storing where `then` stores.
fn compose(first: &LoopKernel, then: &LoopKernel, acc: usize) -> LoopKernel {
    let fed: Vec<Option<usize>> = (0..then.loads.len())
        .map(|x| (x == acc).then_some(first.expr.len() - 1))
        .collect();
    let j = super::stores::join(first, then, &fed);
    let mut nodes = first.nodes.clone();
    nodes.extend(&then.nodes);
    LoopKernel {
        space: then.space.clone(),
        loads: j.loads,
        expr: j.expr,
        sink: then.sink.clone(),
        nodes,
        epilogue: None,
        also: Vec::new(),
    }
}
