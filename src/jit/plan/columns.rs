//! Column reductions across the team: a loop that sums over its outermost axis (a
//! bias's or layer norm's weight gradient, `[rows, n] → [n]`) cannot be split over
//! that axis, since every part would add into the same outputs. Its kept inner axis can:
//! the loop becomes `[n / w, rows…, w]`, blocks of `w` columns outermost, so each part
//! owns its columns' sums. Each output element still adds the same terms in the same
//! order (the rows, in turn), so the bits do not change.

use super::*;

/// Columns per block: two f32x4 vectors unrolled twice, four blocks for `n = 128`.
const BLOCK: i64 = 32;

impl Builder<'_> {
    /// Splits the inner axis of every loop that reduces over its outermost axis and
    /// keeps its inner axis of a known multiple of [`BLOCK`] (at least two blocks) into
    /// blocks, outermost (see the module's documentation).
    pub(super) fn block_column_reductions(&mut self) {
        let w = self.slot(&Dim::konst(BLOCK));
        for ki in 0..self.kernels.len() {
            let Kernel::Loop(l) = &self.kernels[ki] else {
                continue;
            };
            let Some(blocks) = self.column_blocks(l) else {
                continue;
            };
            let inner = l.space.len() - 1;
            let mut accesses: Vec<Access> = l.loads.clone();
            accesses.push(l.sink_access().clone());
            let blocks = self.slot(&Dim::konst(blocks));
            let outer: Vec<(Slot, Option<i64>)> = accesses
                .iter()
                .map(|a| {
                    let s = self.sizes[a.strides[inner]].clone();
                    let stride = s.mul(&Dim::konst(BLOCK)).unwrap_or(Dim::konst(i64::MAX));
                    (self.slot(&stride), a.known[inner].map(|k| k * BLOCK))
                })
                .collect();
            let Kernel::Loop(l) = &mut self.kernels[ki] else {
                unreachable!("kernel {ki} is a loop")
            };
            let prepend = |a: &mut Access, (s, k): (Slot, Option<i64>)| {
                a.strides.insert(0, s);
                a.known.insert(0, k);
            };
            for (a, &o) in l.loads.iter_mut().zip(&outer) {
                prepend(a, o);
            }
            match &mut l.sink {
                Sink::Reduce(_, a) | Sink::Store(a) => prepend(a, outer[outer.len() - 1]),
            }
            for e in &mut l.expr {
                if let Expr::Index(ax) = e {
                    *ax += 1;
                }
            }
            l.space[inner] = w;
            l.space.insert(0, blocks);
        }
    }

    /// The number of column blocks of loop `l`, when it qualifies.
    fn column_blocks(&self, l: &LoopKernel) -> Option<i64> {
        let Sink::Reduce(_, out) = &l.sink else {
            return None;
        };
        let inner = l.space.len().checked_sub(1).filter(|&i| i >= 1)?;
        let n = self.sizes[l.space[inner]].as_const()?;
        let uses_inner_index = l.expr.contains(&Expr::Index(inner));
        let qualifies = out.known[0] == Some(0)
            && out.known[inner] != Some(0)
            && l.epilogue.is_none()
            && l.also.is_empty()
            && !uses_inner_index
            && n % BLOCK == 0
            && n / BLOCK >= 2;
        qualifies.then_some(n / BLOCK)
    }
}
