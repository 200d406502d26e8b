//! Passes over the finished kernel list: folding an elementwise loop into the product
//! or reduction it consumes (its epilogue), and dropping loop axes of extent 1.

use super::*;

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
        let mut i = 0;
        while i < self.kernels.len() {
            let found = match &self.kernels[i] {
                Kernel::Gemm(_) => self.epilogue_for(i, outputs),
                Kernel::Loop(_) => self.reduce_epilogue_for(i, outputs),
                Kernel::Call(_) => None,
            };
            if let Some((j, acc)) = found {
                let Kernel::Loop(l) = self.kernels.remove(j) else {
                    unreachable!("epilogues are loop kernels")
                };
                let e = Some(Box::new(Epilogue { kernel: l, acc }));
                match &mut self.kernels[i] {
                    Kernel::Gemm(g) => g.epilogue = e,
                    Kernel::Loop(r) => r.epilogue = e,
                    Kernel::Call(_) => {}
                }
            }
            i += 1;
        }
    }

    /// The only reader of buffer `b`, if it is a loop kernel after `i` and `b` is not a
    /// function output.
    pub(super) fn sole_loop_reader(
        &self,
        i: usize,
        b: BufId,
        outputs: &[(Access, Vec<Slot>)],
    ) -> Option<usize> {
        if outputs.iter().any(|(a, _)| a.buf == b) {
            return None;
        }
        let readers: Vec<usize> = (0..self.kernels.len())
            .filter(|&k| reads(&self.kernels[k]).iter().any(|a| a.buf == b))
            .collect();
        let [j] = readers[..] else { return None };
        match &self.kernels[j] {
            Kernel::Loop(l) if j > i && l.epilogue.is_none() => Some(j),
            _ => None,
        }
    }

    /// Whether loop kernel `j` can move up to run as part of kernel `i`: nothing in
    /// between writes what it reads or where it stores.
    pub(super) fn movable(&self, i: usize, j: usize) -> bool {
        let Kernel::Loop(l) = &self.kernels[j] else {
            return false;
        };
        self.kernels[i + 1..j].iter().all(|k| {
            writes(k)
                .into_iter()
                .all(|w| w != l.sink_access().buf && l.loads.iter().all(|a| a.buf != w))
        })
    }

    pub(super) fn reduce_epilogue_for(
        &self,
        i: usize,
        outputs: &[(Access, Vec<Slot>)],
    ) -> Option<(usize, usize)> {
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
        let j = self.sole_loop_reader(i, out.buf, outputs)?;
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
            && self.movable(i, j);
        ok.then_some((j, acc))
    }

    pub(super) fn epilogue_for(
        &self,
        i: usize,
        outputs: &[(Access, Vec<Slot>)],
    ) -> Option<(usize, usize)> {
        let Kernel::Gemm(g) = &self.kernels[i] else {
            return None;
        };
        if !g.batch.is_empty() {
            return None;
        }
        let j = self.sole_loop_reader(i, g.c, outputs)?;
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
            .filter(|&x| l.loads[x].buf == g.c)
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
            && self.movable(i, j);
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
