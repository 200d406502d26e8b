//! Working buffers of the runtime kernels, recycled per thread.
//!
//! A training step of a recurrent layer needs a few MiB of working memory (the forward
//! trace, the pre-activation gradients) every step. Allocated afresh, buffers that size
//! come from glibc either out of its heap or as new `mmap`s, whose pages fault in (and
//! are zeroed by the kernel) on every step. Which of the two happens depends on glibc's
//! adaptive thresholds and so varies from one process to the next: the LSTM spec's
//! train step took 3.0 ms in some processes and 5.2–5.6 ms in others (BENCHMARKS.md,
//! "allocator"), and 7–11 ms with `MALLOC_MMAP_THRESHOLD_=131072`. Keeping the buffers
//! of the last steps on the thread makes every step reuse warm memory.

use std::cell::RefCell;

/// Buffers smaller than this go back to the allocator (glibc keeps them on its heap).
const MIN_BYTES: usize = 64 << 10;
/// The most memory a thread keeps for reuse.
const KEEP_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<f32>>,
    bytes: usize,
}

/// Each buffer starts at its own offset within a page (in 64-byte steps over 4 KiB):
/// buffers straight from `mmap` all start 16 bytes into a page, and a kernel walking
/// several of them with the same large power-of-two stride then maps every access to
/// the same few cache sets.
const PAGE_FLOATS: usize = 1024;

thread_local! {
    static FREE: RefCell<Free> = RefCell::new(Free::default());
    static COLOUR: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A buffer of `f32` that returns its memory to the thread's free list when dropped.
#[derive(Default)]
pub(in crate::jit) struct Buf {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.v);
        let bytes = 4 * v.capacity();
        if bytes < MIN_BYTES {
            return;
        }
        // During the thread's exit the list may be gone: the memory is then freed.
        let _ = FREE.try_with(|f| {
            if let Ok(mut f) = f.try_borrow_mut()
                && f.bytes + bytes <= KEEP_BYTES
            {
                f.bytes += bytes;
                f.bufs.push(v);
            }
        });
    }
}

impl Buf {
    /// `n` zeros, in a recycled buffer when the thread has one of a fitting size
    /// (capacity up to twice what is needed), else in new memory; an error if the
    /// system refuses it.
    pub fn zeros(n: usize) -> Result<Buf, String> {
        if 4 * n < MIN_BYTES {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| refused(n))?;
            v.resize(n, 0.0);
            return Ok(Buf { v, off: 0, len: n });
        }
        let need = n.checked_add(PAGE_FLOATS).ok_or_else(|| refused(n))?;
        let reused = FREE
            .try_with(|f| {
                let mut f = f.try_borrow_mut().ok()?;
                let fits = |v: &Vec<f32>| v.capacity() >= need && v.capacity() / 2 <= need;
                let i = (0..f.bufs.len())
                    .filter(|&i| fits(&f.bufs[i]))
                    .min_by_key(|&i| f.bufs[i].capacity())?;
                let v = f.bufs.swap_remove(i);
                f.bytes -= 4 * v.capacity();
                Some(v)
            })
            .ok()
            .flatten();
        let mut v = match reused {
            Some(mut v) => {
                v.clear();
                v
            }
            None => {
                let mut v = Vec::new();
                v.try_reserve_exact(need).map_err(|_| refused(n))?;
                v
            }
        };
        let colour = COLOUR
            .try_with(|c| {
                c.set(c.get().wrapping_add(1));
                c.get()
            })
            .unwrap_or(0);
        // The offset in floats from the page start: 64-byte steps, 23 apart (mod 64).
        let page = (v.as_ptr() as usize / 4) % PAGE_FLOATS;
        let want = (colour * 23 % 64) * 16;
        let off = (want + PAGE_FLOATS - page) % PAGE_FLOATS;
        v.resize(off + n, 0.0);
        Ok(Buf { v, off, len: n })
    }
}

fn refused(n: usize) -> String {
    format!("a runtime kernel needs {n} floats of working memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> usize {
        FREE.with(|f| f.borrow().bytes)
    }

    #[test]
    fn a_dropped_buffer_is_reused_zeroed() {
        let n = 1 << 16;
        let mut a = Buf::zeros(n).expect("memory");
        a.fill(3.0);
        let before = kept();
        drop(a);
        let freed = kept() - before;
        assert!(freed >= 4 * n, "the buffer went to the free list");
        let b = Buf::zeros(n - 5).expect("memory");
        assert_eq!(kept(), before, "the freed buffer is taken again");
        assert_eq!(b.len(), n - 5);
        assert!(b.iter().all(|&v| v == 0.0));
        // A much larger buffer than the request is not taken.
        drop(b);
        let c = Buf::zeros(n / 4).expect("memory");
        assert_eq!(kept(), before + freed);
        assert_eq!(c.len(), n / 4);
    }

    #[test]
    fn buffers_start_at_different_places_in_their_pages() {
        let bufs: Vec<Buf> = (0..8)
            .map(|_| Buf::zeros(1 << 18).expect("memory"))
            .collect();
        let mut starts: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize % 4096).collect();
        assert!(starts.iter().all(|s| s % 64 == 0), "{starts:?}");
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 8, "{starts:?}");
    }

    #[test]
    fn the_thread_keeps_a_bounded_amount() {
        let big = KEEP_BYTES / 4 / 3;
        let bufs: Vec<Buf> = (0..5).map(|_| Buf::zeros(big).expect("memory")).collect();
        drop(bufs);
        assert!(kept() <= KEEP_BYTES, "{}", kept());
    }
}
