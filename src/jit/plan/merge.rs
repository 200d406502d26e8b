//! Products of one A as one call: attention's query, key and value projections (and a
//! layer's weight gradients taken against one input) multiply the same `[m, k]` view by
//! different B. Merged, the call reads A once for all of them (`jit::gemm::rows` keeps
//! a block of A's rows in cache while it computes every product's columns), each
//! product keeping its own B, output and epilogue.

use super::*;

impl Builder<'_> {
    /// Folds each product into the first earlier product of the same A (same view,
    /// rows and `k`, no batch axes) when it can move up to it: nothing in between (the
    /// earlier call included) writes what it reads, and nothing there reads or writes
    /// what it writes — so no output aliases an operand of the call.
    pub(super) fn merge_products(&mut self) {
        let mut removed = vec![false; self.kernels.len()];
        for j in 0..self.kernels.len() {
            let Kernel::Gemm(h) = &self.kernels[j] else {
                continue;
            };
            if !h.batch.is_empty() || !h.also.is_empty() {
                continue;
            }
            let target = (0..j).find(|&i| {
                !removed[i]
                    && matches!(&self.kernels[i], Kernel::Gemm(g)
                        if g.batch.is_empty() && g.a == h.a && g.m == h.m && g.k == h.k)
                    && self.movable_to(j, i, &removed)
            });
            let Some(i) = target else { continue };
            let Kernel::Gemm(h) = std::mem::replace(&mut self.kernels[j], removed_kernel()) else {
                unreachable!("kernel {j} is a product")
            };
            removed[j] = true;
            let Kernel::Gemm(g) = &mut self.kernels[i] else {
                unreachable!("the target is a product")
            };
            g.also.push(GemmCols {
                node: h.node,
                b: h.b,
                c: h.c,
                n: h.n,
                small: h.small,
                epilogue: h.epilogue,
            });
        }
        let mut k = 0;
        self.kernels.retain(|_| (!removed[k], k += 1).0);
    }

    /// Whether kernel `j` can run as part of the earlier kernel `i`.
    fn movable_to(&self, j: usize, i: usize, removed: &[bool]) -> bool {
        let k = &self.kernels[j];
        let (r, w): (Vec<BufId>, Vec<BufId>) =
            (reads(k).iter().map(|a| a.buf).collect(), writes(k));
        (i..j).filter(|&x| !removed[x]).all(|x| {
            let between = &self.kernels[x];
            let bw = writes(between);
            let br: Vec<BufId> = reads(between).iter().map(|a| a.buf).collect();
            !bw.iter().any(|b| r.contains(b) || w.contains(b)) && !br.iter().any(|b| w.contains(b))
        })
    }
}

/// What stands in a merged kernel's place until the pass ends.
fn removed_kernel() -> Kernel {
    Kernel::Call(CallKernel {
        node: 0,
        args: Vec::new(),
        arg_shapes: Vec::new(),
        out: 0,
        out_shape: Vec::new(),
    })
}
