//! Products of one A as one call: attention's query, key and value projections (and
//! their weight gradients, taken against the one input) multiply the same `[m, k]`
//! view by different B. Merged, the call reads A once for all of them
//! (`jit::gemm::rows` keeps a block of A's rows in cache while it computes every
//! product's columns), each product keeping its own B, output and epilogue.

use super::*;

/// What products must share to merge: A's view (buffer, offset, strides), rows, `k`.
type Shared = (BufId, Slot, Vec<Slot>, Vec<Option<i64>>, Slot, Slot);

impl Builder<'_> {
    /// Folds each product without batch axes into another product of the same A:
    /// first every product into the earliest earlier one it can move up to (the
    /// projections of one input join the first), then each product left into the
    /// latest later one it can move down to (weight gradients join the last, whose
    /// operand is computed last). A product moves when nothing in between (the other
    /// call included) writes what it reads, and nothing there reads or writes what it
    /// writes: the order of every dependent pair is kept and no output aliases an
    /// operand of the call.
    pub(super) fn merge_products(&mut self) {
        let mut by_a: HashMap<Shared, Vec<usize>> = HashMap::new();
        for (i, k) in self.kernels.iter().enumerate() {
            if let Kernel::Gemm(g) = k
                && g.batch.is_empty()
            {
                let a = &g.a;
                let key = (
                    a.buf,
                    a.offset,
                    a.strides.clone(),
                    a.known.clone(),
                    g.m,
                    g.k,
                );
                by_a.entry(key).or_default().push(i);
            }
        }
        let mut groups: Vec<Vec<usize>> = by_a.into_values().filter(|v| v.len() > 1).collect();
        groups.sort();
        let mut removed = vec![false; self.kernels.len()];
        for down in [false, true] {
            for group in &groups {
                for (pos, &j) in group.iter().enumerate() {
                    let Kernel::Gemm(h) = &self.kernels[j] else {
                        continue;
                    };
                    if removed[j] || !h.also.is_empty() {
                        continue;
                    }
                    let fits = |i: &usize| !removed[*i] && self.joinable(j, *i, &removed);
                    let target = if down {
                        group[pos + 1..].iter().rev().copied().find(fits)
                    } else {
                        group[..pos].iter().copied().find(fits)
                    };
                    if let Some(i) = target {
                        self.merge_into(j, i);
                        removed[j] = true;
                    }
                }
            }
        }
        let mut k = 0;
        self.kernels.retain(|_| (!removed[k], k += 1).0);
    }

    /// Product `j` becomes one more product of kernel `i` (`j` left as a placeholder).
    fn merge_into(&mut self, j: usize, i: usize) {
        let Kernel::Gemm(h) = std::mem::replace(&mut self.kernels[j], Kernel::removed()) else {
            unreachable!("kernel {j} is a product")
        };
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

    /// Whether kernel `j` can run as part of kernel `i` (earlier or later): no kernel
    /// from `i` up to `j` (or from `j` down to `i`) conflicts with it.
    fn joinable(&self, j: usize, i: usize, removed: &[bool]) -> bool {
        let k = &self.kernels[j];
        let r: Vec<BufId> = reads(k).iter().map(|a| a.buf).collect();
        let w = writes(k);
        let between = if i < j { i..j } else { j + 1..i + 1 };
        between.filter(|&x| !removed[x]).all(|x| {
            let other = &self.kernels[x];
            let ow = writes(other);
            !ow.iter().any(|b| r.contains(b) || w.contains(b))
                && !reads(other).iter().any(|a| w.contains(&a.buf))
        })
    }
}
