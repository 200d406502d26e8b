//! The forward pass: the input projection of all steps as one GEMM per batch slice,
//! then per step the recurrent GEMM and one fused pass over the rows (gates,
//! nonlinearities, state update, Keras's mask, output).

use super::super::scratch::Buf;
use super::math::ma;
use super::{Layer, Ptr, gemm, generated, small, split_run, zeros};
use crate::ir::Cell;

/// What back-propagation needs from the forward pass, every buffer `[batch, steps, …]`
/// indexed by the time step (not the processing order): `z` the pre-activations and
/// `a` the activations `[…, gates·units]`; `hp` (and for LSTM `cp`) the state each step
/// started from; LSTM's new cell state `cn` and `ex` = act(cn); GRU (reset_after)'s
/// recurrent candidate input `ex` = (h·U_h + b_h).
pub(super) struct Trace {
    pub z: Buf,
    pub a: Buf,
    pub hp: Buf,
    pub cp: Buf,
    pub cn: Buf,
    pub ex: Buf,
}

impl Trace {
    pub fn bytes(&self) -> usize {
        4 * [&self.z, &self.a, &self.hp, &self.cp, &self.cn, &self.ex]
            .iter()
            .map(|v| v.len())
            .sum::<usize>()
    }
    /// Whether the trace has the sizes of `l`'s.
    pub fn fits(&self, l: &Layer) -> bool {
        let rows = l.d.b * l.d.t;
        self.z.len() == rows * l.d.n
            && self.a.len() == rows * l.d.n
            && self.hp.len() == rows * l.d.u
    }
}

struct Ptrs {
    z: Ptr,
    a: Ptr,
    hp: Ptr,
    cp: Ptr,
    cn: Ptr,
    ex: Ptr,
    out: Ptr,
}

/// Runs the layer into `out` (every element written when there is a step); with `keep`, returns the
/// trace too.
pub(super) fn run(l: &Layer, out: &mut [f32], keep: bool) -> Result<Option<Trace>, String> {
    let d = l.d;
    let rows = d.b * d.t;
    let lstm = l.a.cell == Cell::Lstm;
    let with = |on: bool, n: usize| if on { zeros(n) } else { Ok(Buf::default()) };
    let mut tr = Trace {
        z: zeros(rows * d.n)?,
        a: with(keep, rows * d.n)?,
        hp: with(keep, rows * d.u)?,
        cp: with(keep && lstm, rows * d.u)?,
        cn: with(keep && lstm, rows * d.u)?,
        ex: with(keep && (lstm || l.i.br.is_some()), rows * d.u)?,
    };
    if rows > 0 {
        let p = Ptrs {
            z: Ptr::of(&mut tr.z),
            a: Ptr::of(&mut tr.a),
            hp: Ptr::of(&mut tr.hp),
            cp: Ptr::of(&mut tr.cp),
            cn: Ptr::of(&mut tr.cn),
            ex: Ptr::of(&mut tr.ex),
            out: Ptr::of(out),
        };
        match generated::function(l, keep)? {
            Some(f) => {
                let failed = std::sync::Mutex::new(None);
                split_run(d.b, 1, &|lo, hi| {
                    if let Err(e) = generated(l, &p, keep, f, (lo, hi))
                        && let Ok(mut x) = failed.lock()
                    {
                        *x = Some(e);
                    }
                })?;
                if let Some(e) = failed.into_inner().ok().flatten() {
                    return Err(e);
                }
            }
            None => split_run(d.b, 1, &|lo, hi| dispatch(l, &p, keep, lo, hi))?,
        }
    }
    Ok(keep.then_some(tr))
}

/// One batch slice through the generated function `f`: the projection, then all steps.
fn generated(
    l: &Layer,
    p: &Ptrs,
    keep: bool,
    f: usize,
    (lo, hi): (usize, usize),
) -> Result<(), String> {
    let d = l.d;
    // SAFETY: batch rows lo..hi of every [B, …] buffer belong to this part alone.
    let z = unsafe { p.z.rows(lo * d.t * d.n, (hi - lo) * d.t * d.n) };
    project(l, lo, hi, z);
    let bufs = generated::Bufs {
        out: p.out.0,
        a: p.a.0,
        hp: p.hp.0,
        cp: p.cp.0,
        cn: p.cn.0,
        ex: p.ex.0,
    };
    // SAFETY: `f` is `generated::function`'s for (l, keep); the rows are this part's and
    // the trace buffers have the layer's sizes when `keep`.
    unsafe { generated::run(l, f, keep, (lo, hi), z, &bufs) }
}

fn dispatch(l: &Layer, p: &Ptrs, keep: bool, lo: usize, hi: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the host has the features the function is compiled for.
        unsafe { slice_avx2(l, p, keep, lo, hi) };
        return;
    }
    slice::<false>(l, p, keep, lo, hi);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn slice_avx2(l: &Layer, p: &Ptrs, keep: bool, lo: usize, hi: usize) {
    slice::<true>(l, p, keep, lo, hi);
}

/// `z[rows] = (x ⊙ keep_g) · W_g + b` for the batch rows `lo..hi` (all their steps).
pub(super) fn project(l: &Layer, lo: usize, hi: usize, z: &mut [f32]) {
    let d = l.d;
    let (m, f, n) = ((hi - lo) * d.t, d.f as isize, d.n as isize);
    let x = &l.i.x[lo * d.t * d.f..hi * d.t * d.f];
    match l.i.xkeep {
        // SAFETY: x is [m, f], w [f, n], z [m, n], all row-major.
        None => unsafe {
            gemm(
                (m, d.f, d.n),
                (x.as_ptr(), f, 1),
                (l.i.w.as_ptr(), n, 1),
                0.0,
                (z.as_mut_ptr(), n, 1),
            )
        },
        Some(keep) => {
            let mut xs = vec![0.0f32; m * d.f];
            for g in 0..d.g {
                for (r, (dst, src)) in xs.chunks_mut(d.f).zip(x.chunks(d.f)).enumerate() {
                    let kr = &keep[((lo + r / d.t) * d.g + g) * d.f..][..d.f];
                    for ((o, &v), &k) in dst.iter_mut().zip(src).zip(kr) {
                        *o = v * k;
                    }
                }
                // SAFETY: xs is [m, f]; gate g's columns of w and z.
                unsafe {
                    gemm(
                        (m, d.f, d.u),
                        (xs.as_ptr(), f, 1),
                        (l.i.w.as_ptr().add(g * d.u), n, 1),
                        0.0,
                        (z.as_mut_ptr().add(g * d.u), n, 1),
                    )
                };
            }
        }
    }
    for row in z.chunks_mut(d.n) {
        for (v, &b) in row.iter_mut().zip(&l.i.bi) {
            *v += b;
        }
    }
}

/// `r[:, gates] = (h ⊙ keep_g) · U_g` for the rows of the slice starting at batch row
/// `lo`; `r` is `[rows, n]`, `h` `[rows, u]`.
#[inline(always)]
fn recurrent<const F: bool>(
    l: &Layer,
    lo: usize,
    h: &[f32],
    hs: &mut Vec<f32>,
    r: &mut [f32],
    gates: std::ops::Range<usize>,
) {
    let d = l.d;
    let nb = h.len() / d.u.max(1);
    let (u, n) = (d.u, d.n);
    match l.i.hkeep {
        // SAFETY: h is [nb, u], U [u, n], r [nb, n].
        None => unsafe {
            small::gemm::<F>(
                (nb, u, gates.len() * u),
                h.as_ptr(),
                u,
                l.i.rk.as_ptr().add(gates.start * u),
                n,
                r.as_mut_ptr().add(gates.start * u),
                n,
                false,
            )
        },
        Some(keep) => {
            hs.resize(h.len(), 0.0);
            for g in gates {
                scale_rows(hs, h, keep, (lo, d.g, g), u);
                // SAFETY: as above, gate g's columns.
                unsafe {
                    small::gemm::<F>(
                        (nb, u, u),
                        hs.as_ptr(),
                        u,
                        l.i.rk.as_ptr().add(g * u),
                        n,
                        r.as_mut_ptr().add(g * u),
                        n,
                        false,
                    )
                };
            }
        }
    }
}

/// `dst[i] = src[i] ⊙ keep[lo + i, g]` per row of width `w` (`keep` is `[B, G, w]`).
pub(super) fn scale_rows(
    dst: &mut [f32],
    src: &[f32],
    keep: &[f32],
    (lo, gates, g): (usize, usize, usize),
    w: usize,
) {
    for (i, (o, s)) in dst.chunks_mut(w).zip(src.chunks(w)).enumerate() {
        let k = &keep[((lo + i) * gates + g) * w..][..w];
        for ((o, &s), &k) in o.iter_mut().zip(s).zip(k) {
            *o = s * k;
        }
    }
}

/// The step's state update for one row, given the gate activations `a` (and LSTM's
/// new cell state): `hn`, `cn`, `ex` as the trace defines them.
#[inline(always)]
fn cell_row<const F: bool>(
    l: &Layer,
    (z, r, a): (&mut [f32], &[f32], &mut [f32]),
    h: &[f32],
    c: &[f32],
    (hn, cn, ex): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let u = l.d.u;
    match l.a.cell {
        Cell::Simple => {
            for (z, &r) in z.iter_mut().zip(r) {
                *z += r;
            }
            l.act.apply::<F>(z, a);
            hn.copy_from_slice(a);
        }
        Cell::Lstm => {
            for (z, &r) in z.iter_mut().zip(r) {
                *z += r;
            }
            l.ract.apply::<F>(&z[..2 * u], &mut a[..2 * u]);
            l.act.apply::<F>(&z[2 * u..3 * u], &mut a[2 * u..3 * u]);
            l.ract.apply::<F>(&z[3 * u..], &mut a[3 * u..]);
            let (i, rest) = a.split_at(u);
            let (f, rest) = rest.split_at(u);
            let (g, o) = rest.split_at(u);
            for j in 0..u {
                cn[j] = ma::<F>(f[j], c[j], i[j] * g[j]);
            }
            l.act.apply::<F>(cn, ex);
            for ((h, &o), &e) in hn.iter_mut().zip(o).zip(&*ex) {
                *h = o * e;
            }
        }
        Cell::Gru => {
            // reset_after (the late candidate runs in `gru_late`).
            // `layer` gives GRU with reset_after a recurrent bias (zeros without one).
            let br = l.i.br.as_deref().unwrap_or_default();
            for ((z, &r), &b) in z[..2 * u].iter_mut().zip(&r[..2 * u]).zip(br) {
                *z += r + b;
            }
            l.ract.apply::<F>(&z[..2 * u], &mut a[..2 * u]);
            let (rg, zh) = (&a[u..2 * u], &mut z[2 * u..]);
            for ((e, zh), (&r, (&b, &rg))) in ex
                .iter_mut()
                .zip(zh)
                .zip(r[2 * u..].iter().zip(br[2 * u..].iter().zip(rg)))
            {
                *e = r + b;
                *zh = ma::<F>(rg, *e, *zh);
            }
            gru_out::<F>(l, z, a, h, hn);
        }
    }
}

/// GRU's candidate activation and new output from the finished pre-activation.
#[inline(always)]
fn gru_out<const F: bool>(l: &Layer, z: &[f32], a: &mut [f32], h: &[f32], hn: &mut [f32]) {
    let u = l.d.u;
    l.act.apply::<F>(&z[2 * u..], &mut a[2 * u..]);
    let (zg, rest) = a.split_at(u);
    let hh = &rest[u..];
    for j in 0..u {
        hn[j] = ma::<F>(zg[j], h[j] - hh[j], hh[j]);
    }
}

/// One batch slice `lo..hi` through all steps.
#[inline(always)]
fn slice<const F: bool>(l: &Layer, p: &Ptrs, keep: bool, lo: usize, hi: usize) {
    let d = l.d;
    let (steps, n, u, nb) = (d.t, d.n, d.u, hi - lo);
    // SAFETY: batch rows lo..hi of every [B, …] buffer belong to this part alone.
    let z = unsafe { p.z.rows(lo * steps * n, nb * steps * n) };
    project(l, lo, hi, z);
    let late = l.late_candidate();
    let (mut h, mut c) = (vec![0.0f32; nb * u], vec![0.0f32; nb * u]);
    let (mut r, mut a) = (vec![0.0f32; nb * n], vec![0.0f32; nb * n]);
    let (mut hn, mut cn, mut ex) = (vec![0.0f32; u], vec![0.0f32; u], vec![0.0f32; u]);
    let mut hs = Vec::new();
    let mut v = if late {
        vec![0.0f32; nb * u]
    } else {
        Vec::new()
    };
    let early = 0..l.early_gates();
    for k in 0..steps {
        let t = if l.a.go_backwards { steps - 1 - k } else { k };
        recurrent::<F>(l, lo, &h, &mut hs, &mut r, early.clone());
        if late {
            gru_late::<F>(l, lo, (z, &mut r, &mut a), (&h, &mut v), t);
        }
        for i in 0..nb {
            let zrow = &mut z[(i * steps + t) * n..][..n];
            let (rrow, arow) = (&r[i * n..][..n], &mut a[i * n..][..n]);
            let (hi_, ci) = (&h[i * u..][..u], &c[i * u..][..u]);
            if late {
                gru_out::<F>(l, zrow, arow, hi_, &mut hn);
            } else {
                cell_row::<F>(l, (zrow, rrow, arow), hi_, ci, (&mut hn, &mut cn, &mut ex));
            }
            let row = lo + i;
            if keep {
                let at = row * steps + t;
                // SAFETY: row `row` is this part's.
                unsafe {
                    p.a.rows(at * n, n).copy_from_slice(arow);
                    p.hp.rows(at * u, u).copy_from_slice(hi_);
                    if l.a.cell == Cell::Lstm {
                        p.cp.rows(at * u, u).copy_from_slice(ci);
                        p.cn.rows(at * u, u).copy_from_slice(&cn);
                    }
                    if l.a.cell == Cell::Lstm || l.i.br.is_some() {
                        p.ex.rows(at * u, u).copy_from_slice(&ex);
                    }
                }
            }
            let valid = l.valid(row, t);
            if valid {
                h[i * u..][..u].copy_from_slice(&hn);
                if l.a.cell == Cell::Lstm {
                    c[i * u..][..u].copy_from_slice(&cn);
                }
            }
            let at = if l.a.return_sequences {
                Some((row * steps + k) * u)
            } else {
                (k == steps - 1).then_some(row * u)
            };
            if let Some(at) = at {
                // SAFETY: output rows of batch row `row` are this part's.
                let o = unsafe { p.out.rows(at, u) };
                if valid {
                    o.copy_from_slice(&hn);
                } else if !(l.a.zero_output && l.i.mask.is_some()) {
                    o.copy_from_slice(&h[i * u..][..u]);
                } else {
                    o.fill(0.0);
                }
            }
        }
    }
}

/// GRU with reset_after false, before the rows' pass: the update and reset gates of
/// every row, then the candidate's product `(r ⊙ h ⊙ keep_h) · U_h` into `r`'s
/// candidate columns, added to the candidate's pre-activation.
#[inline(always)]
fn gru_late<const F: bool>(
    l: &Layer,
    lo: usize,
    (z, r, a): (&mut [f32], &mut [f32], &mut [f32]),
    (h, v): (&[f32], &mut [f32]),
    t: usize,
) {
    let d = l.d;
    let (steps, n, u) = (d.t, d.n, d.u);
    let nb = h.len() / u.max(1);
    for i in 0..nb {
        let zrow = &mut z[(i * steps + t) * n..][..n];
        for (zz, &rr) in zrow[..2 * u].iter_mut().zip(&r[i * n..][..2 * u]) {
            *zz += rr;
        }
        let arow = &mut a[i * n..][..n];
        l.ract.apply::<F>(&zrow[..2 * u], &mut arow[..2 * u]);
        let vrow = &mut v[i * u..][..u];
        for ((o, &rg), &hh) in vrow.iter_mut().zip(&arow[u..2 * u]).zip(&h[i * u..][..u]) {
            *o = rg * hh;
        }
        if let Some(keep) = l.i.hkeep {
            let k = &keep[((lo + i) * d.g + 2) * u..][..u];
            for (o, &k) in vrow.iter_mut().zip(k) {
                *o *= k;
            }
        }
    }
    // SAFETY: v is [nb, u], U_h the candidate columns of U, r [nb, n].
    unsafe {
        small::gemm::<F>(
            (nb, u, u),
            v.as_ptr(),
            u,
            l.i.rk.as_ptr().add(2 * u),
            n,
            r.as_mut_ptr().add(2 * u),
            n,
            false,
        )
    };
    for i in 0..nb {
        let zrow = &mut z[(i * steps + t) * n + 2 * u..][..u];
        for (zz, &c) in zrow.iter_mut().zip(&r[i * n + 2 * u..][..u]) {
            *zz += c;
        }
    }
}
