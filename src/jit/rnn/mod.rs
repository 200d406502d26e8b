//! Recurrent layers (simple RNN, LSTM, GRU in both `reset_after` forms, with Keras's
//! masks and recurrent dropout's keep masks) as a tuned runtime kernel, forward and
//! back-propagation through time. The reference in `ir::rnn`/`ir::rnn_bptt` stays the
//! interpreter's oracle; this computes the same function (tests/suite/rnn_fast.rs).
//!
//! - The input projection of every timestep is one GEMM (`[batch·steps, features] ·
//!   kernel`); per step, the recurrent product `h·U` of the batch rows is a GEMM whose
//!   gates, nonlinearities (the polynomials of `math.rs`) and state update follow in
//!   one fused pass over the rows.
//! - Batch rows are independent through time, so the batch is split across the thread
//!   team once for the whole sequence (no synchronisation per step).
//! - The forward steps can run instead as Cranelift-generated code, one function per
//!   layer shape (`generated.rs`, `codegen/rnn_cell.rs`): same operations in the same
//!   order, so the same bits; selectable, not the default (slower on x86, see there).
//! - Back-propagation through time keeps the forward's trace, walks the steps backwards
//!   per batch slice (gate gradients fused, `dh·Uᵀ` a GEMM per step; or, chosen with
//!   the generated forward, that walk as one generated function per layer shape,
//!   `generated_grad.rs`, `codegen/rnn_grad.rs`, same bits), and then forms the
//!   kernel, recurrent kernel, bias and input gradients as products over all
//!   `batch·steps` rows at once, split across the team by columns or rows.

mod bwd;
mod call;
mod fwd;
mod generated;
mod generated_grad;
pub(super) mod math;
mod small;

use ndarray::ArrayViewD;

pub(super) use call::call;
pub use generated::{Stats as GeneratedStats, set_generated, stats as generated_stats};

use super::scratch::Buf;
use crate::ir::{Cell, RnnAttrs};

/// Sizes: batch, steps, features, units, gates, gate columns (`gates · units`).
#[derive(Clone, Copy, Debug)]
struct Dims {
    pub b: usize,
    pub t: usize,
    pub f: usize,
    pub u: usize,
    pub g: usize,
    pub n: usize,
}

/// The operands as contiguous slices.
struct Inputs<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub rk: &'a [f32],
    /// Input bias (zeros without one) and, for GRU with reset_after, recurrent bias.
    pub bi: Vec<f32>,
    pub br: Option<Vec<f32>>,
    pub mask: Option<&'a [f32]>,
    pub xkeep: Option<&'a [f32]>,
    pub hkeep: Option<&'a [f32]>,
}

/// A layer ready to run: attributes, sizes, operands, activations.
struct Layer<'a> {
    pub a: &'a RnnAttrs,
    pub d: Dims,
    pub i: Inputs<'a>,
    pub act: math::Act,
    pub ract: math::Act,
}

impl Layer<'_> {
    /// GRU with reset_after false: the candidate's recurrent product comes after the
    /// reset gate, `(r ⊙ h) · U_h`.
    pub fn late_candidate(&self) -> bool {
        self.a.cell == Cell::Gru && !self.a.reset_after
    }
    /// Gates whose recurrent product is taken together with the step's first GEMM.
    pub fn early_gates(&self) -> usize {
        if self.late_candidate() { 2 } else { self.d.g }
    }
    /// Whether step (b, t) is valid (no mask: always).
    pub fn valid(&self, b: usize, t: usize) -> bool {
        self.i.mask.is_none_or(|m| m[b * self.d.t + t] != 0.0)
    }
}

/// A pointer shared by the team's parts, each touching its own rows.
#[derive(Clone, Copy)]
struct Ptr(pub *mut f32);
// SAFETY: parts write disjoint rows (each function using it says which).
unsafe impl Send for Ptr {}
// SAFETY: as above.
unsafe impl Sync for Ptr {}

impl Ptr {
    pub fn of(v: &mut [f32]) -> Ptr {
        Ptr(v.as_mut_ptr())
    }
    /// # Safety
    /// `off..off + len` lies within the buffer and no other part uses it meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn rows(&self, off: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
}

/// A zeroed buffer (recycled on the thread), or an error if the system refuses the
/// memory.
fn zeros(n: usize) -> Result<Buf, String> {
    Buf::zeros(n)
}

/// `c = a·b + beta·c` with element strides (row, column) for each matrix; `k = 0`
/// leaves `beta·c`.
///
/// # Safety
/// Every pointer covers its matrix under its strides; `c` does not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    (m, k, n): (usize, usize, usize),
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    beta: f32,
    c: (*mut f32, isize, isize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m as isize {
            for j in 0..n as isize {
                // SAFETY: within c (caller's contract).
                unsafe {
                    let p = c.0.offset(i * c.1 + j * c.2);
                    *p = if beta == 0.0 { 0.0 } else { *p * beta };
                }
            }
        }
        return;
    }
    // SAFETY: the caller's contract.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, 1.0, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2,
        )
    }
}

/// Runs `f(part, lo, hi)` over `0..n` split into the team's parts (grain `grain`);
/// errors if a part panicked.
fn split_run(n: usize, grain: usize, f: &(dyn Fn(usize, usize) + Sync)) -> Result<(), String> {
    let t = super::team::team();
    let parts = t.size().min(n.div_ceil(grain.max(1))).max(1);
    let ok = t.run(parts, &|p| {
        let (lo, hi) = super::team::split(n as i64, parts, p, grain as i64);
        if lo < hi {
            f(lo as usize, hi as usize);
        }
    });
    if ok {
        Ok(())
    } else {
        Err("a panic inside a recurrent layer's kernel".into())
    }
}

fn flat<'a>(a: &ArrayViewD<'a, f32>) -> Result<&'a [f32], String> {
    a.to_slice()
        .ok_or_else(|| "a recurrent operand is not contiguous".to_string())
}

/// Checks the operands' shapes against the attributes and takes their slices.
fn layer<'a>(a: &'a RnnAttrs, args: &[ArrayViewD<'a, f32>]) -> Result<Layer<'a>, String> {
    let bad = |what: &str| format!("recurrent layer: {what}");
    let (x, w, rk) = match args {
        [x, w, rk, ..] => (x, w, rk),
        _ => return Err(bad("too few operands")),
    };
    let [b, t, f] = x.shape() else {
        return Err(bad("input must be [batch, steps, features]"));
    };
    let (b, t, f) = (*b, *t, *f);
    let u = usize::try_from(a.units).map_err(|_| bad("negative units"))?;
    let g = a.gates();
    let n = g * u;
    if w.shape() != [f, n] || rk.shape() != [u, n] {
        return Err(bad("kernel shapes do not match the units"));
    }
    let two_bias = a.cell == Cell::Gru && a.reset_after;
    let (bi, br) = if !a.use_bias {
        (vec![0.0; n], None)
    } else {
        let bias = args.get(3).ok_or_else(|| bad("missing bias"))?;
        let v = flat(bias)?;
        if two_bias && bias.shape() == [2, n] {
            (v[..n].to_vec(), Some(v[n..].to_vec()))
        } else if !two_bias && bias.shape() == [n] {
            (v.to_vec(), None)
        } else {
            return Err(bad("bias shape does not match the units"));
        }
    };
    let br = if two_bias && br.is_none() {
        Some(vec![0.0; n])
    } else {
        br
    };
    let operand = |i: Option<usize>, shape: &[usize]| -> Result<Option<&'a [f32]>, String> {
        match i {
            None => Ok(None),
            Some(i) => match args.get(i) {
                Some(m) if m.shape() == shape => Ok(Some(flat(m)?)),
                _ => Err(bad("mask or keep mask of the wrong shape")),
            },
        }
    };
    let mask = operand(a.mask_index(), &[b, t])?;
    let xkeep = operand(a.dropout_index(), &[b, g, f])?;
    let hkeep = operand(a.dropout_index().map(|i| i + 1), &[b, g, u])?;
    for name in [&a.activation, &a.recurrent_activation] {
        if !crate::ir::rnn::CELL_ACTIVATIONS.contains(&name.as_str()) {
            return Err(format!(
                "activation `{name}` is not supported inside a recurrent cell"
            ));
        }
    }
    Ok(Layer {
        a,
        d: Dims { b, t, f, u, g, n },
        i: Inputs {
            x: flat(x)?,
            w: flat(w)?,
            rk: flat(rk)?,
            bi,
            br,
            mask,
            xkeep,
            hkeep,
        },
        act: math::Act::new(&a.activation),
        ract: math::Act::new(&a.recurrent_activation),
    })
}

/// The layer's output (`[batch, steps, units]` or `[batch, units]`) into `out`, and
/// with `keep` the trace its gradient can use.
fn forward(
    a: &RnnAttrs,
    args: &[ArrayViewD<f32>],
    out: &mut [f32],
    keep: bool,
) -> Result<Option<fwd::Trace>, String> {
    let l = layer(a, args)?;
    let want = l.d.b * l.d.u * if a.return_sequences { l.d.t } else { 1 };
    if out.len() != want {
        return Err("recurrent layer: output size".into());
    }
    if l.d.t == 0 {
        // No step writes the output (every row's output is written otherwise).
        out.fill(0.0);
    }
    fwd::run(&l, out, keep)
}

/// All four gradients (input, kernel, recurrent kernel, bias) for the output gradient
/// `dy` (the last operand), flat in their natural layouts (the bias `[2, N]` for GRU
/// with reset_after, `[N]` otherwise).
/// `trace` is the forward pass's, if it kept one for the same operands.
fn grads(
    a: &RnnAttrs,
    args: &[ArrayViewD<f32>],
    trace: Option<fwd::Trace>,
) -> Result<Vec<Buf>, String> {
    let (dy, rest) = args
        .split_last()
        .ok_or_else(|| "recurrent gradient: no operands".to_string())?;
    let l = layer(a, rest)?;
    let d = l.d;
    let ys = if a.return_sequences {
        vec![d.b, d.t, d.u]
    } else {
        vec![d.b, d.u]
    };
    if dy.shape() != ys.as_slice() {
        return Err("recurrent gradient: output gradient shape".into());
    }
    let g = bwd::run(&l, flat(dy)?, trace)?;
    let db = if a.use_bias && l.i.br.is_some() {
        let mut v = zeros(2 * d.n)?;
        v[..d.n].copy_from_slice(&g.dbi);
        v[d.n..].copy_from_slice(&g.dbr);
        v
    } else {
        g.dbi
    };
    Ok(vec![g.dx, g.dw, g.du, db])
}
