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

    /// Places the arena buffers (see [`first_fit`]).
    fn first_fit(&self, sizes: &[i64]) -> Result<(Vec<usize>, usize), RunError> {
        first_fit(&self.plan, &self.first_def, sizes)
    }
}

/// Places the arena buffers of `plan` in order of first definition (`first_def`, from
/// [`first_defs`]), each at the lowest offset free of the buffers still live, at the
/// evaluated size table `sizes`: `(offset per buffer, arena length)`. The AOT object
/// lays out its arena with it too.
pub(super) fn first_fit(
    plan: &Plan,
    first_def: &[usize],
    sizes: &[i64],
) -> Result<(Vec<usize>, usize), RunError> {
    // (offset, len, free after kernel) blocks; first fit over kernel order.
    let mut offsets = vec![0usize; plan.bufs.len()];
    let mut order: Vec<usize> = (0..plan.bufs.len())
        .filter(|&b| matches!(plan.bufs[b], BufKind::Arena { .. }))
        .collect();
    order.sort_by_key(|&b| first_def[b]);
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, len, last_use)
    let mut arena_len = 0usize;
    for b in order {
        let BufKind::Arena { len } = plan.bufs[b] else {
            continue;
        };
        let n = usize::try_from(sizes[len]).map_err(|_| RunError("negative buffer size".into()))?;
        // Aligned, with room for a vector over-read; sizes past memory are an error.
        let too_big = || RunError(format!("a buffer of {n} values is too large to lay out"));
        let n = n
            .div_ceil(16)
            .checked_mul(16)
            .and_then(|n| n.checked_add(16))
            .ok_or_else(too_big)?;
        let start = first_def[b];
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
        live.push((at, n, plan.last_use[b]));
    }
    Ok((offsets, arena_len))
}

/// What running `f` compiled allocates besides its inputs, in f32 elements, at the
/// symbol values `env` (a symbol it does not bind counts as 1): `(arena, outputs copied
/// out)`, from the same plan, in-place updates (`donate`, offered as to
/// [`super::compile_donating`]) and arena layout a compiled run uses — without
/// generating any code. `f` should already have been through the graph passes.
pub fn planned_memory(
    f: crate::ir::Func,
    donate: &[(usize, usize)],
    env: &interp::Env,
) -> Result<(u128, u128), RunError> {
    let mut plan = super::plan::plan_owned(f);
    let donated = plan.donate(donate);
    let mut env = env.clone();
    for d in &plan.sizes {
        for s in d.symbols() {
            env.entry(s).or_insert(1);
        }
    }
    let mut sizes = Vec::with_capacity(plan.sizes.len());
    for d in &plan.sizes {
        sizes.push(
            d.eval(&env)
                .ok_or_else(|| RunError(format!("cannot evaluate size {d}")))?,
        );
    }
    let (_, arena) = first_fit(&plan, &first_defs(&plan), &sizes)?;
    let outputs = plan
        .outputs
        .iter()
        .enumerate()
        .filter(|(o, _)| !donated.iter().any(|p| p.1 == *o))
        .map(|(_, (_, shape))| {
            shape
                .iter()
                .fold(1u128, |n, &s| n.saturating_mul(sizes[s].max(0) as u128))
        })
        .fold(0u128, u128::saturating_add);
    Ok((arena as u128, outputs))
}
