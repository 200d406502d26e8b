//! Per-kernel timing for `kiln bench --profile`: while it is on, every compiled call
//! times each step of its plan and adds it to a process-wide table, keyed by the
//! function's name (`predict`, `train_step`). Off, a call pays one relaxed load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::plan::Plan;

/// One kernel's share of a function's calls.
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// The kernel's index in the plan (`kiln ir --stage kernels`).
    pub kernel: usize,
    /// The kernel's first line in the plan's printed form.
    pub label: String,
    /// Mean wall time per call, in microseconds.
    pub mean_us: f64,
}

/// The kernels of one compiled function, in plan order.
#[derive(Clone, Debug)]
pub struct FuncProfile {
    pub func: String,
    pub calls: u64,
    pub kernels: Vec<KernelTime>,
}

struct Entry {
    func: String,
    calls: u64,
    nanos: Vec<u64>,
    labels: Vec<String>,
}

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Starts (or stops) timing the kernels of every compiled call.
pub fn set(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub(super) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Adds one call's step times (`nanos`, one per kernel of `plan`).
pub(super) fn record(plan: &Plan, nanos: &[u64]) {
    let Ok(mut table) = TABLE.lock() else { return };
    let name = &plan.func.name;
    let at = match table.iter().position(|e| &e.func == name) {
        Some(at) => at,
        None => {
            table.push(Entry {
                func: name.clone(),
                calls: 0,
                nanos: vec![0; nanos.len()],
                labels: (0..nanos.len()).map(|k| plan.kernel_line(k)).collect(),
            });
            table.len() - 1
        }
    };
    let e = &mut table[at];
    if e.nanos.len() != nanos.len() {
        // Another plan under the same name: its calls are not mixed in.
        return;
    }
    e.calls += 1;
    for (t, &n) in e.nanos.iter_mut().zip(nanos) {
        *t = t.saturating_add(n);
    }
}

/// The table so far, emptied.
pub fn take() -> Vec<FuncProfile> {
    let Ok(mut table) = TABLE.lock() else {
        return Vec::new();
    };
    std::mem::take(&mut *table)
        .into_iter()
        .map(|e| FuncProfile {
            kernels: e
                .nanos
                .iter()
                .zip(e.labels)
                .enumerate()
                .map(|(kernel, (&n, label))| KernelTime {
                    kernel,
                    label,
                    mean_us: n as f64 / e.calls.max(1) as f64 / 1e3,
                })
                .collect(),
            func: e.func,
            calls: e.calls,
        })
        .collect()
}
