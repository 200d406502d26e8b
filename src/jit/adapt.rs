//! Whether a compiled function's work is worth sharing with the team, learned from its
//! own timings while the program runs.
//!
//! Splitting kernels across cores pays when the cores exchange cache lines quickly. On
//! the shared machines kiln runs on, that cost changes with where the host puts the
//! virtual CPUs: on this 2-core VM a cache line's round trip between the two cores
//! (two threads ping-ponging an atomic) took 80–120 ns at some times and 320–340 ns at
//! others, for minutes at a time. In the slow state the attention spec's training
//! step (batch 32, length 32) took 4.2 ms with two threads, against 3.5 ms on one and
//! 2.1 ms with two in the fast state — its scatter-add and small optimizer loops 10×
//! slower than alone, each kernel's output crossing to the other core — while two
//! independent processes, one per core, each ran at full speed. No fixed threshold
//! serves both states, so each compiled function measures both forms now and then and
//! keeps the faster: of every [`PERIOD`] calls, the first [`EXPLORE`] alternate
//! between the team and the caller alone (every team job of the call run on the
//! calling thread, `team::alone`), each form's fastest call is kept, and the other
//! calls run the faster form (the team's unless the caller alone is faster by
//! [`MARGIN`]). The whole call takes one form: chosen per kernel, a kernel run alone
//! reads what the previous one left in the other core's cache, and the choices made
//! while every kernel alternated no longer hold (measured: 5.4 ms). Both forms compute
//! the same values bit for bit (no split changes a sum's order), so the choice changes
//! only the time. `KILN_ADAPT=0` keeps the team's form always.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Calls per cycle of exploration.
const PERIOD: u32 = 1024;
/// Calls explored per cycle (alternately the team and the caller alone).
const EXPLORE: u32 = 8;
/// The caller alone must beat the team by this factor to be chosen.
const MARGIN: f64 = 0.9;

/// One compiled function's learning state (shared by the threads that call it).
#[derive(Default)]
pub(super) struct Adapt {
    calls: AtomicU32,
    /// The fastest explored time of the team's form and of the caller alone.
    best: [AtomicU64; 2],
    alone: AtomicBool,
}

/// How to run one call of a step.
#[derive(Clone, Copy)]
pub(super) struct Choice {
    /// Run the step's team jobs on the calling thread.
    pub(super) alone: bool,
    /// Time the call and report it with [`Adapt::record`].
    pub(super) timed: bool,
}

impl Adapt {
    /// This call's form.
    pub(super) fn choose(&self) -> Choice {
        if !enabled() {
            return Choice {
                alone: false,
                timed: false,
            };
        }
        let phase = self.calls.fetch_add(1, Relaxed) % PERIOD;
        if phase == 0 {
            for b in &self.best {
                b.store(u64::MAX, Relaxed);
            }
        }
        if phase < EXPLORE {
            return Choice {
                alone: phase % 2 == 1,
                timed: true,
            };
        }
        Choice {
            alone: self.alone.load(Relaxed),
            timed: false,
        }
    }

    /// A timed call's duration (in ticks); after the last explored call, the choice.
    pub(super) fn record(&self, c: Choice, ticks: u64) {
        self.best[usize::from(c.alone)].fetch_min(ticks, Relaxed);
        let phase = self.calls.load(Relaxed).wrapping_sub(1) % PERIOD;
        if phase + 1 >= EXPLORE {
            let team = self.best[0].load(Relaxed) as f64;
            let alone = self.best[1].load(Relaxed) as f64;
            self.alone.store(alone < team * MARGIN, Relaxed);
        }
    }
}

/// Whether steps learn their form (`KILN_ADAPT=0`: always the team's).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KILN_ADAPT").map_or(true, |v| v != "0"))
}

/// A cheap, monotonic enough clock for comparing two forms of one step: the time-stamp
/// counter on x86-64 (invariant on the CPUs kiln targets), else nanoseconds.
pub(super) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` is available on every x86-64 CPU.
        unsafe { std::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explores both forms, keeps the faster, and explores again a period later.
    #[test]
    fn keeps_the_faster_form_and_explores_again() {
        let a = Adapt::default();
        // The caller alone is twice as fast.
        for _ in 0..EXPLORE {
            let c = a.choose();
            assert!(c.timed);
            a.record(c, if c.alone { 100 } else { 200 });
        }
        for _ in EXPLORE..PERIOD {
            let c = a.choose();
            assert!(c.alone && !c.timed);
        }
        // Now the team is faster.
        for _ in 0..EXPLORE {
            let c = a.choose();
            assert!(c.timed);
            a.record(c, if c.alone { 300 } else { 100 });
        }
        let c = a.choose();
        assert!(!c.alone && !c.timed);
        // Within the margin the team keeps the work.
        let b = Adapt::default();
        for _ in 0..EXPLORE {
            let c = b.choose();
            b.record(c, if c.alone { 95 } else { 100 });
        }
        assert!(!b.choose().alone);
    }
}
