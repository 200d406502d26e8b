//! The memory budget's estimate (issue 11) against what a compiled run really
//! allocates: the bundled attention spec at sequence length 1024, where the score matrix
//! `[batch, heads, 1024, 1024]` would dwarf everything else if it were counted. The
//! estimate comes from the planner (`kiln::jit::planned_memory`); the measurement from
//! this binary's global allocator, which counts the bytes live at the peak of a run.
//!
//! Its own test binary, with one test: the counting allocator sees every allocation of
//! the process, so nothing else may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln::budget::{self, Work};
use ndarray::{ArrayD, IxDyn};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            let now = LIVE.fetch_add(new, Ordering::SeqCst) + new;
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bytes allocated at the peak of `run`, above what was live before it.
fn peak_of(run: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    run();
    PEAK.load(Ordering::SeqCst) - before
}

/// How far the estimate may be from the measured peak, either way: the estimate leaves
/// out the attention kernel's per-thread rows and the run's bookkeeping, and counts
/// the arena's alignment padding.
const FACTOR: f64 = 1.5;

#[test]
fn attention_estimate_is_the_compiled_runs_memory_at_seq_1024() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(root.join("specs/attention.yaml")).expect("bundled spec");
    let model = kiln::Model::from_source(&src, "attention", "specs/attention.yaml")
        .expect("the spec checks");
    let (batch, seq) = (2usize, 1024usize);
    let dims = HashMap::from([("seq".to_string(), seq as i64)]);
    let est = budget::estimate(&model.graph, Work::Infer, batch, &dims).expect("estimates");

    let net = model.compile(&kiln::Options::default()).expect("compiles");
    let tokens = ArrayD::from_shape_fn(IxDyn(&[batch, seq]), |i| ((i[1] * 7 + i[0]) % 5000) as f32);
    // A first run at another size starts the thread team and its buffers.
    let warm = ArrayD::from_elem(IxDyn(&[1, 8]), 1.0f32);
    net.predict(&[("tokens", warm.view())]).expect("runs");
    let measured = peak_of(|| {
        net.predict(&[("tokens", tokens.view())]).expect("runs");
    });

    // The score matrix alone: [batch, heads 4, seq, seq] f32, which the fused kernel
    // never writes at inference.
    let scores = (batch * 4 * seq * seq * 4) as u128;
    let a = est.activations;
    eprintln!(
        "seq {seq}, batch {batch}: estimate {} B, measured peak {measured} B, a score matrix {scores} B",
        a
    );
    assert!(
        a < scores / 4,
        "the estimate {a} counts the score matrix ({scores})"
    );
    let ratio = a as f64 / measured as f64;
    assert!(
        (1.0 / FACTOR..=FACTOR).contains(&ratio),
        "estimate {a} B against a measured peak of {measured} B (ratio {ratio:.2})"
    );

    // A training step's fused attention backward recomputes the scores from the row
    // maxima and sums the forward stores, so the step keeps no score matrix either
    // (its other activations at this length come to about a quarter of one).
    let train = budget::estimate(&model.graph, Work::Train, batch, &dims).expect("estimates");
    assert!(
        train.activations < scores / 2,
        "the training estimate {} counts the score matrix ({scores})",
        train.activations
    );
}
