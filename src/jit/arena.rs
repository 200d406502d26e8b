//! The arena: every intermediate buffer's place, laid out per set of symbol values
//! (first fit by liveness, so buffers whose lifetimes do not overlap share memory).

use std::sync::Arc;

use super::JitKernel;
use super::plan::{BufKind, Plan};
use crate::exec::RunError;
use crate::ir::interp;

/// Concrete sizes and arena offsets for one set of symbol values.
pub(super) struct Layout {
    pub(super) sizes: Vec<i64>,
    /// Element offset of each arena buffer.
    pub(super) offsets: Vec<usize>,
    pub(super) arena_len: usize,
}

/// The kernel that first writes each buffer (its arena lifetime starts there).
pub(super) fn first_defs(plan: &Plan) -> Vec<usize> {
    let mut first_def = vec![usize::MAX; plan.bufs.len()];
    for (ki, k) in plan.kernels.iter().enumerate() {
        for b in super::plan::writes(k) {
            first_def[b] = first_def[b].min(ki);
        }
    }
    first_def
}

impl JitKernel {
    /// Evaluates the size table and lays out the arena (first fit, by liveness); cached
    /// per set of symbol values.
    pub(super) fn layout(&self, env: &interp::Env) -> Result<Arc<Layout>, RunError> {
        let key: Vec<i64> = {
            let mut k: Vec<(&String, &i64)> = env.iter().collect();
            k.sort();
            k.into_iter().map(|(_, v)| *v).collect()
        };
        if let Ok(cache) = self.layouts.lock()
            && let Some(l) = cache.get(&key)
        {
            return Ok(l.clone());
        }
        let mut sizes = Vec::with_capacity(self.plan.sizes.len());
        for d in &self.plan.sizes {
            sizes.push(
                d.eval(env)
                    .ok_or_else(|| RunError(format!("cannot evaluate size {d}")))?,
            );
        }
        let (offsets, arena_len) = self.first_fit(&sizes)?;
        let layout = Arc::new(Layout {
            sizes,
            offsets,
            arena_len,
        });
        if let Ok(mut cache) = self.layouts.lock()
            && cache.len() < 64
        {
            cache.insert(key, layout.clone());
        }
        Ok(layout)
    }

    /// Places the arena buffers in order of first definition, each at the lowest offset
    /// free of the buffers still live: `(offset per buffer, arena length)`.
    fn first_fit(&self, sizes: &[i64]) -> Result<(Vec<usize>, usize), RunError> {
        // (offset, len, free after kernel) blocks; first fit over kernel order.
        let mut offsets = vec![0usize; self.plan.bufs.len()];
        let mut order: Vec<usize> = (0..self.plan.bufs.len())
            .filter(|&b| matches!(self.plan.bufs[b], BufKind::Arena { .. }))
            .collect();
        order.sort_by_key(|&b| self.first_def[b]);
        let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, len, last_use)
        let mut arena_len = 0usize;
        for b in order {
            let BufKind::Arena { len } = self.plan.bufs[b] else {
                continue;
            };
            let n =
                usize::try_from(sizes[len]).map_err(|_| RunError("negative buffer size".into()))?;
            // Aligned, with room for a vector over-read; sizes past memory are an error.
            let too_big = || RunError(format!("a buffer of {n} values is too large to lay out"));
            let n = n
                .div_ceil(16)
                .checked_mul(16)
                .and_then(|n| n.checked_add(16))
                .ok_or_else(too_big)?;
            let start = self.first_def[b];
            live.retain(|&(_, _, last)| last >= start);
            live.sort();
            let mut at = 0usize;
            for &(o, l, _) in &live {
                if at + n <= o {
                    break;
                }
                at = at.max(o + l);
            }
            offsets[b] = at;
            arena_len = arena_len.max(at.checked_add(n).ok_or_else(too_big)?);
            live.push((at, n, self.plan.last_use[b]));
        }
        Ok((offsets, arena_len))
    }
}
