//! Back-propagation through time's per-slice step walk as generated code
//! (`codegen::rnn_grad`): one Cranelift function per layer shape and options, compiled
//! the first time and cached for the process beside the forward's (`generated.rs`),
//! chosen by the same switch and for the same activations (tanh and sigmoid). It
//! writes the same deltas as the Rust kernel's walk (`bwd::slice`), bit for bit; the
//! weight and input gradients then stay `bwd::weights`' products over all rows.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::super::codegen::rnn_grad_arg as arg;
use super::bwd::Deltas;
use super::fwd::Trace;
use super::generated::{self, GRAD_RUNS};
use super::{Layer, split_run, zeros};
use crate::ir::Cell;

/// The generated step walk for `l`'s gradient (compiled now if its shape is new), or
/// `None` when the Rust kernel runs it.
pub(super) fn function(l: &Layer) -> Result<Option<usize>, String> {
    if !generated::enabled() || l.d.u == 0 {
        return Ok(None);
    }
    let Some(spec) = generated::spec(l, true) else {
        return Ok(None);
    };
    generated::cached(&spec, true).map(Some)
}

/// Every batch slice of the team through the generated walk `f` (from
/// [`function`] for `l`), deltas into `p`'s buffers; `tr` is `l`'s forward trace and
/// `dy` the output gradient.
pub(super) fn walk(l: &Layer, f: usize, tr: &Trace, dy: &[f32], p: &Deltas) -> Result<(), String> {
    let failed = Mutex::new(None);
    split_run(l.d.b, 1, &|lo, hi| {
        // SAFETY: `f` is `function`'s for `l`; rows lo..hi are this part's alone.
        if let Err(e) = unsafe { run(l, f, tr, dy, p, (lo, hi)) }
            && let Ok(mut x) = failed.lock()
        {
            *x = Some(e);
        }
    })?;
    match failed.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Batch rows `lo..hi` through every step, last to first.
///
/// # Safety
/// `f` is the function [`function`] gave for `l`; the rows `lo..hi` of `p`'s delta
/// buffers belong to this part alone; `tr` fits `l` and `dy` has `l`'s output size.
unsafe fn run(
    l: &Layer,
    f: usize,
    tr: &Trace,
    dy: &[f32],
    p: &Deltas,
    (lo, hi): (usize, usize),
) -> Result<(), String> {
    let d = l.d;
    let (nb, t, u, n, g) = (hi - lo, d.t, d.u, d.n, d.g);
    let late = l.late_candidate();
    let mut dh = zeros(nb * u)?;
    let mut dc = zeros(if l.a.cell == Cell::Lstm { nb * u } else { 0 })?;
    let mut dhp = zeros(nb * u)?;
    let mut dzg = zeros(if late { nb * u } else { 0 })?;
    let mut drh = zeros(if late { nb * u } else { 0 })?;
    // Addresses only (never dereferenced unless the spec uses the buffer).
    let at = |p: *const f32, off: usize| p.wrapping_add(off) as i64;
    let ys = if l.a.return_sequences { t } else { 1 };
    let mut args = [0i64; arg::LEN];
    args[arg::DY] = at(dy.as_ptr(), lo * ys * u);
    args[arg::DZ] = at(p.dz.0, lo * t * n);
    args[arg::DR] = at(p.dr.0, lo * t * n);
    args[arg::UT] = p.ut.as_ptr() as i64;
    args[arg::A] = at(tr.a.as_ptr(), lo * t * n);
    args[arg::HP] = at(tr.hp.as_ptr(), lo * t * u);
    args[arg::CP] = at(tr.cp.as_ptr(), lo * t * u);
    args[arg::EX] = at(tr.ex.as_ptr(), lo * t * u);
    args[arg::MASK] = l.i.mask.map_or(0, |m| at(m.as_ptr(), lo * t));
    args[arg::HKEEP] = l.i.hkeep.map_or(0, |k| at(k.as_ptr(), lo * g * u));
    args[arg::DH] = dh.as_mut_ptr() as i64;
    args[arg::DC] = dc.as_mut_ptr() as i64;
    args[arg::DHP] = dhp.as_mut_ptr() as i64;
    args[arg::DZG] = dzg.as_mut_ptr() as i64;
    args[arg::DRH] = drh.as_mut_ptr() as i64;
    args[arg::NB] = nb as i64;
    args[arg::T] = t as i64;
    // SAFETY: `f` was compiled as `fn(args)` for this layer's spec; the table points at
    // buffers of the sizes that spec's code reads and writes (the caller's contract).
    let func: extern "C" fn(*const i64) = unsafe { std::mem::transmute(f) };
    func(args.as_ptr());
    GRAD_RUNS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
