//! Running the native code: inputs validated, the frame filled (sizes, buffer
//! pointers into the inputs and a pooled arena), the entry called, outputs copied out;
//! donated inputs are written in place.

use ndarray::{ArrayD, ArrayViewD};

use super::JitKernel;
use super::arena::Layout;
use super::frame::{CALL_ERROR, CALL_ID, FrameLayout, gather};
use super::plan::BufKind;
use crate::exec::{Kernel, RunError, validate};
use crate::ir::{Func, interp};

impl Kernel for JitKernel {
    fn func(&self) -> &Func {
        &self.plan.func
    }

    fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        // Donated inputs are written to: run on private copies of them.
        let mut owned: Vec<Option<ArrayD<f32>>> = vec![None; inputs.len()];
        for &(i, _) in &self.donated {
            owned[i] = Some(inputs[i].as_standard_layout().into_owned());
        }
        let outs = self.execute(inputs, &mut owned)?;
        Ok(outs
            .into_iter()
            .enumerate()
            .map(|(o, v)| match v {
                Some(v) => v,
                None => {
                    let i = self
                        .donated
                        .iter()
                        .find(|p| p.1 == o)
                        .map(|p| p.0)
                        .unwrap_or(0);
                    owned[i].take().unwrap_or_default()
                }
            })
            .collect())
    }

    fn donated(&self) -> &[(usize, usize)] {
        &self.donated
    }

    fn run_inplace(
        &self,
        inputs: &mut [ArrayD<f32>],
    ) -> Result<Vec<Option<ArrayD<f32>>>, RunError> {
        let mut owned: Vec<Option<ArrayD<f32>>> = vec![None; inputs.len()];
        for &(i, _) in &self.donated {
            let a = std::mem::take(&mut inputs[i]);
            owned[i] = Some(if a.is_standard_layout() {
                a
            } else {
                a.as_standard_layout().into_owned()
            });
        }
        let result = {
            let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
            self.execute(&views, &mut owned)
        };
        // The donated arrays go back to the caller (updated on success).
        for &(i, _) in &self.donated {
            if let Some(a) = owned[i].take() {
                inputs[i] = a;
            }
        }
        result
    }
}

impl JitKernel {
    fn frame_layout(&self) -> FrameLayout {
        FrameLayout {
            sizes: self.plan.sizes.len(),
            bufs: self.plan.bufs.len(),
        }
    }

    /// Runs the native function. `owned[i]` replaces input `i` (donated inputs, which
    /// the code writes); outputs written into a donated input come back as `None`.
    fn execute(
        &self,
        inputs: &[ArrayViewD<f32>],
        owned: &mut [Option<ArrayD<f32>>],
    ) -> Result<Vec<Option<ArrayD<f32>>>, RunError> {
        let env = {
            let mut views: Vec<ArrayViewD<f32>> = inputs.to_vec();
            for (i, o) in owned.iter().enumerate() {
                if let Some(a) = o {
                    views[i] = a.view();
                }
            }
            validate(&self.plan.func, &views)?
        };
        let layout = self.layout(&env)?;
        // Read-only inputs (borrowed, made contiguous if needed) and writable donated
        // ones (owned, standard layout).
        let contiguous: Vec<_> = inputs.iter().map(|a| a.as_standard_layout()).collect();
        let mut ptrs: Vec<i64> = contiguous.iter().map(|a| a.as_ptr() as i64).collect();
        for (i, o) in owned.iter_mut().enumerate() {
            if let Some(a) = o {
                ptrs[i] = a.as_mut_ptr() as i64;
            }
        }
        let mut arena = self.take_arena(layout.arena_len.max(1))?;
        let mut frame = self.frame(&layout, &ptrs, &mut arena, &env);
        CALL_ERROR.with(|e| *e.borrow_mut() = None);
        CALL_ID.with(|c| c.set(c.get().wrapping_add(1)));
        self.steps.fill_locals(&mut frame);
        // The code writes donated inputs through the mutable pointers taken above.
        if super::profile::on() {
            // SAFETY: the frame holds this plan's evaluated sizes and valid buffer
            // pointers (inputs validated against the function, the arena laid out for
            // these sizes).
            let times = unsafe { self.steps.run_timed(&mut frame, &self._descs) };
            super::profile::record(&self.plan, &times);
        } else {
            // SAFETY: as for `run_timed` above.
            unsafe { self.steps.run(&mut frame, &self._descs) };
        }
        if let Some(e) = CALL_ERROR.with(|e| e.borrow_mut().take()) {
            return Err(RunError(e));
        }
        let outs = self.outputs(&frame, &layout.sizes)?;
        drop(contiguous);
        if let Ok(mut pool) = self.arenas.lock()
            && pool.len() < 4
        {
            pool.push(arena);
        }
        Ok(outs)
    }

    /// An arena of at least `need` elements, from the pool when one is there; memory
    /// the system refuses is an error, never an abort.
    fn take_arena(&self, need: usize) -> Result<Vec<f32>, RunError> {
        let mut arena = self
            .arenas
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        if arena.len() < need {
            arena = zeroed(need)?;
        }
        Ok(arena)
    }

    /// The frame for one call: the evaluated sizes, a pointer per buffer (the inputs'
    /// `ptrs` or places in `arena`), and the symbol environment.
    fn frame(
        &self,
        layout: &Layout,
        ptrs: &[i64],
        arena: &mut [f32],
        env: &interp::Env,
    ) -> Vec<i64> {
        let fl = self.frame_layout();
        let mut frame = vec![0i64; fl.len()];
        frame[..layout.sizes.len()].copy_from_slice(&layout.sizes);
        for (b, kind) in self.plan.bufs.iter().enumerate() {
            frame[fl.sizes + b] = match kind {
                BufKind::Input(i) => ptrs[*i],
                // SAFETY: offsets are within the arena (laid out above).
                BufKind::Arena { .. } => unsafe {
                    arena.as_mut_ptr().add(layout.offsets[b]) as i64
                },
            };
        }
        frame[fl.env_slot()] = env as *const interp::Env as i64;
        frame
    }

    /// Copies the outputs out of the buffers the frame points at (`None` for those
    /// written into a donated input).
    fn outputs(&self, frame: &[i64], sizes: &[i64]) -> Result<Vec<Option<ArrayD<f32>>>, RunError> {
        let fl = self.frame_layout();
        self.plan
            .outputs
            .iter()
            .enumerate()
            .map(|(o, (a, shape))| {
                if self.donated.iter().any(|p| p.1 == o) {
                    return Ok(None);
                }
                let shape: Vec<usize> = shape.iter().map(|&s| sizes[s] as usize).collect();
                let strides: Vec<i64> = a.strides.iter().map(|&s| sizes[s]).collect();
                let base = frame[fl.sizes + a.buf] as *const f32;
                // SAFETY: the output access lies within its buffer, alive until here.
                unsafe { gather(base, sizes[a.offset], &strides, &shape) }.map(Some)
            })
            .collect()
    }
}

/// `n` zeros, or an error when the memory cannot be had (never an abort).
pub(super) fn zeroed(n: usize) -> Result<Vec<f32>, RunError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| out_of_memory(n))?;
    huge_pages(v.as_mut_ptr() as usize, n * std::mem::size_of::<f32>());
    v.resize(n, 0.0);
    Ok(v)
}

/// The error of an allocation of `n` values the system refused.
pub(super) fn out_of_memory(n: usize) -> RunError {
    RunError(format!(
        "cannot allocate {n} values ({} bytes) for the compiled function: out of memory (lower the batch size or the model's sizes)",
        (n as u128) * 4
    ))
}

/// Asks the kernel to back a large arena with transparent huge pages before it is
/// first touched (on systems where they are enabled `madvise`-only).
fn huge_pages(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = addr.next_multiple_of(HUGE);
        let end = (addr + len) & !(HUGE - 1);
        if end > start {
            // SAFETY: the range lies inside an allocation this process owns; the
            // advice changes only how its pages are backed, never their contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}
