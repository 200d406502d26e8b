//! Kernel functions that do not depend on where their kernel sits in the plan: each one
//! reads a *local frame* (the size-table values and buffer pointers of its own kernel,
//! renumbered from 0 in the order the kernel first mentions them), which the run copies
//! out of the whole frame before the kernels run. Two kernels that differ only in which
//! slots and buffers they use (the layers of a repeated block) then have the same local
//! form, and one compiled function serves both.

use std::collections::HashMap;

use super::plan::{Access, BufId, Epilogue, Expr, LoopKernel, Sink, Slot};

/// A kernel (and a small product's separate epilogue) in local form, with the frame
/// indices its local frame is copied from.
pub(super) struct Local {
    pub(super) kernel: LoopKernel,
    pub(super) epilogue: Option<Epilogue>,
    /// The local frame's slots: `sizes` size-table values, then one pointer per buffer.
    pub(super) sizes: usize,
    /// For each local slot, its index in the whole frame.
    pub(super) map: Vec<usize>,
}

/// The renumbering of one kernel's slots and buffers.
#[derive(Default)]
struct Renumber {
    slots: HashMap<Slot, usize>,
    slot_order: Vec<Slot>,
    bufs: HashMap<BufId, usize>,
    buf_order: Vec<BufId>,
}

impl Renumber {
    fn slot(&mut self, s: &mut Slot) {
        let n = self.slots.len();
        let l = *self.slots.entry(*s).or_insert_with(|| {
            self.slot_order.push(*s);
            n
        });
        *s = l;
    }
    fn buf(&mut self, b: &mut BufId) {
        let n = self.bufs.len();
        let l = *self.bufs.entry(*b).or_insert_with(|| {
            self.buf_order.push(*b);
            n
        });
        *b = l;
    }
    fn access(&mut self, a: &mut Access) {
        self.buf(&mut a.buf);
        self.slot(&mut a.offset);
        for s in &mut a.strides {
            self.slot(s);
        }
    }
    fn kernel(&mut self, k: &mut LoopKernel) {
        // Which IR nodes a kernel computes is for printing only; the code never sees it.
        k.nodes.clear();
        for s in &mut k.space {
            self.slot(s);
        }
        for a in &mut k.loads {
            self.access(a);
        }
        for e in &mut k.expr {
            if let Expr::Size(s) = e {
                self.slot(s);
            }
        }
        match &mut k.sink {
            Sink::Store(a) | Sink::Reduce(_, a) => self.access(a),
        }
        for s in &mut k.also {
            self.access(&mut s.access);
        }
        if let Some(e) = &mut k.epilogue {
            self.kernel(&mut e.kernel);
        }
    }
}

/// `k` (and a separate epilogue) in local form; `frame_sizes` is the number of
/// size-table slots in the whole frame (its buffer pointers follow them).
pub(super) fn localize(k: &LoopKernel, epilogue: Option<&Epilogue>, frame_sizes: usize) -> Local {
    let mut r = Renumber::default();
    let mut kernel = k.clone();
    r.kernel(&mut kernel);
    let epilogue = epilogue.map(|e| {
        let mut e = e.clone();
        r.kernel(&mut e.kernel);
        e
    });
    let sizes = r.slot_order.len();
    let map = r
        .slot_order
        .iter()
        .copied()
        .chain(r.buf_order.iter().map(|&b| frame_sizes + b))
        .collect();
    Local {
        kernel,
        epilogue,
        sizes,
        map,
    }
}

impl Local {
    /// What makes two local kernels the same function: everything the code generator
    /// reads (the kind of function, the local numbering, the known strides, the
    /// expressions with their constants' exact bits).
    pub(super) fn key(&self, kind: u8) -> String {
        let mut key = format!("{kind}:{}:", self.sizes);
        push_kernel(&mut key, &self.kernel);
        if let Some(e) = &self.epilogue {
            key.push_str(&format!("|epi{}:", e.acc));
            push_kernel(&mut key, &e.kernel);
        }
        key
    }
}

fn push_kernel(key: &mut String, k: &LoopKernel) {
    use std::fmt::Write;
    // Constants by their bits: `{:?}` of an f64 does not tell NaN payloads apart.
    let expr: Vec<String> = k
        .expr
        .iter()
        .map(|e| match e {
            Expr::Const(c) => format!("C{:x}", c.to_bits()),
            e => format!("{e:?}"),
        })
        .collect();
    let _ = write!(key, "{:?}/{:?}/{:?}/{:?}", k.space, k.loads, expr, k.sink);
    if !k.also.is_empty() {
        let _ = write!(key, "+{:?}", k.also);
    }
    if let Some(e) = &k.epilogue {
        let _ = write!(key, "[epi{}:", e.acc);
        push_kernel(key, &e.kernel);
        key.push(']');
    }
}
