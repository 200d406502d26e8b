//! kiln's own fork-join team: the threads that split large kernels and matrix products
//! across the machine's cores.
//!
//! A general-purpose pool (rayon, matrixmultiply's thread tree) parks its workers
//! between jobs and wakes them through the kernel, which costs tens of microseconds in
//! a virtual machine: more than many of a training step's loops take. This team keeps
//! its workers spinning for a short while after each job (like OpenMP runtimes do), so
//! the back-to-back jobs of one step reach a worker in well under a microsecond; after
//! [`spin_time`] without work a worker parks.
//!
//! A job is `parts` independent calls `f(part)`. Thread `i` of the team (the caller is
//! thread 0) first claims part `i`, so the same rows of a product or the same range of
//! a loop land on the same core from one kernel and one call to the next, and the data
//! stays in that core's cache. Then it claims any part left, so a sleeping worker
//! never delays a job: the caller just does more parts itself. One job runs at a time;
//! a second caller meanwhile (another thread running compiled code) runs its job
//! alone, sequentially.
//!
//! Claims go through one 64-bit word: `epoch << 32 | parts << 16 | claimed`, a bit per
//! part. A claim is a compare-exchange on the word of the job the claimer read its
//! function from, so a slow worker can never run a part of a job that has already
//! finished.
//!
//! A spinning worker that finds itself on the caller's core (the scheduler may put a
//! woken worker there and leave it, since both threads are always runnable) would run
//! only when the caller yields, so the caller did every part itself: a process stayed
//! in that state for its whole run about one time in four (specs/mlp.yaml's batch-1
//! forward 22 µs instead of 12). The caller records its core with each job; a worker
//! on that core moves itself off it (its affinity becomes the process's cores but
//! that one), at the cost of one system call, and only when it happens.
//!
//! `KILN_NUM_THREADS` sets the team's size (default: the cores this process may run
//! on); `KILN_SPIN_US` the spin time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::thread::Thread;
use std::time::{Duration, Instant};

thread_local! {
    /// This thread runs its jobs alone (see [`alone`]).
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every job this thread gives the team run by the thread itself, part
/// after part, when `yes` (`jit::adapt`: a step whose work does not pay for sharing).
pub fn alone<R>(yes: bool, f: impl FnOnce() -> R) -> R {
    if !yes {
        return f();
    }
    let before = ALONE.replace(true);
    let r = f();
    ALONE.set(before);
    r
}

/// A spinning worker offers its core to other threads every this many spins.
const YIELD_EVERY: u32 = 4096;

/// The most parts one job may have (the width of the `claimed` mask).
pub const MAX_PARTS: usize = 16;

struct Shared {
    /// `epoch << 32 | parts << 16 | claimed` of the current job.
    word: AtomicU64,
    /// The current job: a monomorphic trampoline and the closure it calls.
    func: AtomicUsize,
    ctx: AtomicUsize,
    /// Parts of the current job finished (by anyone).
    finished: AtomicUsize,
    /// A part of the current job panicked.
    panicked: AtomicBool,
    /// A caller owns the team (one job at a time).
    busy: AtomicBool,
    sleeping: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
    spin: Duration,
    /// The core the caller of the current job ran on when it posted it (`usize::MAX`
    /// when unknown).
    caller_cpu: AtomicUsize,
    /// The cores this process may run on (empty when unknown).
    cpus: Vec<usize>,
}

/// The process-wide team.
pub struct Team {
    size: usize,
    shared: &'static Shared,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// How long an idle worker spins before it parks.
pub fn spin_time() -> Duration {
    Duration::from_micros(env_usize("KILN_SPIN_US").unwrap_or(200) as u64)
}

/// The team (started on first use).
pub fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let want = env_usize("KILN_NUM_THREADS")
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .min(MAX_PARTS);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            word: AtomicU64::new(0),
            func: AtomicUsize::new(0),
            ctx: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            sleeping: (1..want).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
            spin: spin_time(),
            caller_cpu: AtomicUsize::new(usize::MAX),
            cpus: affinity::allowed(),
        }));
        let mut threads = Vec::new();
        for w in 1..want {
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-{w}"))
                .spawn(move || worker(shared, w - 1));
            match spawned {
                Ok(h) => threads.push(h.thread().clone()),
                // Fewer threads than asked for still work: parts are claimed, not
                // assigned.
                Err(_) => break,
            }
        }
        let size = threads.len() + 1;
        let _ = shared.threads.set(threads);
        Team { size, shared }
    })
}

fn pack(epoch: u64, parts: usize, claimed: u64) -> u64 {
    (epoch << 32) | ((parts as u64) << 16) | claimed
}

fn unpack(w: u64) -> (u64, usize, u64) {
    (w >> 32, ((w >> 16) & 0xffff) as usize, w & 0xffff)
}

/// Calls `f(ctx, part)`: the job's closure, behind a thin pointer.
type Trampoline = unsafe fn(usize, usize);

unsafe fn call<F: Fn(usize) + Sync>(ctx: usize, part: usize) {
    // SAFETY: `ctx` is the address of an `F` that the caller of `run` keeps alive until
    // every claimed part has finished (see `Team::run`).
    let f = unsafe { &*(ctx as *const F) };
    f(part)
}

/// Claims and runs parts of the job whose word was `w` until none is left, starting
/// with part `me`.
fn work(s: &Shared, mut w: u64, me: usize) {
    let (epoch, _, _) = unpack(w);
    loop {
        let (e, parts, claimed) = unpack(w);
        let all = (1u64 << parts) - 1;
        if e != epoch || claimed == all {
            return;
        }
        let next = if me < parts && claimed & (1 << me) == 0 {
            me
        } else {
            (!claimed & all).trailing_zeros() as usize
        };
        // Read the job before claiming: a successful claim proves the job had not
        // finished, so its closure was still alive when these were read.
        let func = s.func.load(Acquire);
        let ctx = s.ctx.load(Acquire);
        match s
            .word
            .compare_exchange_weak(w, w | (1 << next), AcqRel, Acquire)
        {
            Ok(_) => {
                // SAFETY: `func` was stored as a `Trampoline` for this job.
                let t: Trampoline = unsafe { std::mem::transmute(func) };
                // SAFETY: the closure lives until `finished` reaches `parts`.
                if catch_unwind(AssertUnwindSafe(|| unsafe { t(ctx, next) })).is_err() {
                    s.panicked.store(true, Release);
                }
                s.finished.fetch_add(1, Release);
                w = s.word.load(Acquire);
            }
            Err(now) => w = now,
        }
    }
}

fn worker(s: &'static Shared, me: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new job: spin, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let w = loop {
            let w = s.word.load(Acquire);
            if unpack(w).0 != seen {
                break w;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < s.spin {
                // Give the core away if another thread (the caller, say) is waiting
                // for it; returns at once when none is.
                if spins.is_multiple_of(YIELD_EVERY) {
                    std::thread::yield_now();
                }
                continue;
            }
            s.sleeping[me].store(true, SeqCst);
            if unpack(s.word.load(SeqCst)).0 == seen {
                std::thread::park();
            }
            s.sleeping[me].store(false, SeqCst);
        };
        seen = unpack(w).0;
        let cpu = affinity::current();
        if cpu != usize::MAX && cpu == s.caller_cpu.load(Relaxed) {
            affinity::avoid(&s.cpus, cpu);
        }
        work(s, w, me + 1);
    }
}

impl Team {
    /// Threads in the team, the caller included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f(0) … f(parts - 1)`, spread over the team, and returns once all have
    /// finished. Returns false if any part panicked (the others still ran).
    pub fn run<F: Fn(usize) + Sync>(&self, parts: usize, f: &F) -> bool {
        let s = self.shared;
        let alone = |f: &F| (0..parts).all(|p| catch_unwind(AssertUnwindSafe(|| f(p))).is_ok());
        if parts <= 1 || self.size == 1 || parts > MAX_PARTS || ALONE.get() {
            return alone(f);
        }
        if s.busy
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
        {
            return alone(f);
        }
        let call_f: Trampoline = call::<F>;
        s.func.store(call_f as usize, Release);
        s.ctx.store(f as *const F as usize, Release);
        s.finished.store(0, Relaxed);
        s.panicked.store(false, Relaxed);
        let (epoch, _, _) = unpack(s.word.load(Relaxed));
        // Epoch 0 is never used again: workers start out having seen it.
        let epoch = if epoch >= 0xffff_ffff { 1 } else { epoch + 1 };
        let w = pack(epoch, parts, 0);
        s.caller_cpu.store(affinity::current(), Relaxed);
        s.word.store(w, SeqCst);
        if let Some(threads) = s.threads.get() {
            for (flag, t) in s.sleeping.iter().zip(threads) {
                if flag.load(SeqCst) {
                    t.unpark();
                }
            }
        }
        work(s, w, 0);
        // Wait for the parts others claimed.
        let mut spins = 0u32;
        while s.finished.load(Acquire) < parts {
            spins = spins.wrapping_add(1);
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let ok = !s.panicked.load(Acquire);
        s.busy.store(false, Release);
        ok
    }
}

/// Which core a thread runs on, and moving a worker off one.
mod affinity {
    /// The core the calling thread runs on (`usize::MAX` when unknown).
    pub fn current() -> usize {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: no arguments; returns -1 on failure.
            let c = unsafe { libc::sched_getcpu() };
            if c >= 0 {
                return c as usize;
            }
        }
        usize::MAX
    }

    /// The cores the process may run on (empty when unknown).
    pub fn allowed() -> Vec<usize> {
        #[cfg(target_os = "linux")]
        // SAFETY: `set` is a plain bit set this function owns; the call fills it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                return (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect();
            }
        }
        Vec::new()
    }

    /// Lets the calling thread run on every core of `cpus` but `cpu` (nothing happens
    /// when that would leave none).
    pub fn avoid(cpus: &[usize], cpu: usize) {
        #[cfg(target_os = "linux")]
        // SAFETY: `set` is a plain bit set this function owns; the call reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let mut any = false;
            for &c in cpus.iter().filter(|&&c| c != cpu) {
                libc::CPU_SET(c, &mut set);
                any = true;
            }
            if any {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (cpus, cpu);
    }
}

/// Splits `0..n` into `parts` ranges whose inner boundaries are multiples of `grain`.
pub fn split(n: i64, parts: usize, part: usize, grain: i64) -> (i64, i64) {
    let grain = grain.max(1);
    let units = (n + grain - 1) / grain;
    let bound = |p: usize| ((units * p as i64 / parts as i64) * grain).min(n);
    (bound(part), bound(part + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    #[test]
    fn every_part_runs_once() {
        let t = team();
        for parts in [1usize, 2, 3, 7, 16, 40] {
            let hits: Vec<AtomicI64> = (0..parts).map(|_| AtomicI64::new(0)).collect();
            for _ in 0..200 {
                assert!(t.run(parts, &|p| {
                    hits[p].fetch_add(1, Relaxed);
                }));
            }
            for h in &hits {
                assert_eq!(h.load(Relaxed), 200);
            }
        }
    }

    #[test]
    fn a_panicking_part_is_reported_and_the_team_survives() {
        let t = team();
        let ran = AtomicI64::new(0);
        let ok = t.run(4, &|p| {
            ran.fetch_add(1, Relaxed);
            if p == 2 {
                panic!("part 2 fails");
            }
        });
        assert!(!ok);
        assert_eq!(ran.load(Relaxed), 4);
        assert!(t.run(3, &|_| {}));
    }

    #[test]
    fn concurrent_callers_each_get_their_results() {
        let handles: Vec<_> = (0..4)
            .map(|c| {
                std::thread::spawn(move || {
                    let sum = AtomicI64::new(0);
                    for _ in 0..500 {
                        team().run(5, &|p| {
                            sum.fetch_add((p as i64 + 1) * (c + 1), Relaxed);
                        });
                    }
                    sum.load(Relaxed)
                })
            })
            .collect();
        for (c, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), 500 * 15 * (c as i64 + 1));
        }
    }

    #[test]
    fn a_thread_that_avoids_its_core_leaves_it() {
        let cpus = affinity::allowed();
        if cpus.len() < 2 || affinity::current() == usize::MAX {
            return;
        }
        let moved = std::thread::spawn(move || {
            let here = affinity::current();
            affinity::avoid(&cpus, here);
            // The kernel moves the thread off a core it may no longer use at once.
            (here, affinity::current())
        })
        .join()
        .unwrap();
        assert_ne!(moved.0, moved.1, "still on core {}", moved.0);
    }

    #[test]
    fn split_covers_the_range_on_grain_boundaries() {
        for n in [0i64, 1, 15, 16, 17, 100, 256, 1000] {
            for parts in 1..5 {
                let mut at = 0;
                for p in 0..parts {
                    let (lo, hi) = split(n, parts, p, 16);
                    assert_eq!(lo, at);
                    assert!(hi >= lo);
                    assert!(hi == n || hi % 16 == 0);
                    at = hi;
                }
                assert_eq!(at, n);
            }
        }
    }
}
