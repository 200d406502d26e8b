//! Back-propagation through time: the forward pass again with its trace, the steps
//! walked backwards per batch slice (gate gradients fused per row, `dz·Uᵀ` a GEMM per
//! step; or that walk as generated code, `generated_grad.rs`), then the weight and
//! input gradients as products over all rows at once.

use super::super::scratch::Buf;
use super::fwd::{self, Trace};
use super::math::ma;
use super::{Layer, Ptr, gemm, generated_grad, small, split_run, zeros};
use crate::ir::Cell;

/// The gradients, flat: input `[B, T, F]`, kernel `[F, N]`, recurrent kernel `[U, N]`,
/// input bias `[N]` and (GRU with reset_after) recurrent bias `[N]`.
pub(super) struct Grads {
    pub dx: Buf,
    pub dw: Buf,
    pub du: Buf,
    pub dbi: Buf,
    pub dbr: Buf,
}

/// The pre-activation gradients of every step, `[B, T, N]` by time step: `dz` for the
/// input projection, `dr` for the recurrent one (the same buffer except for GRU with
/// reset_after, whose candidate sees `r ⊙ (h·U_h + b_h)`).
pub(super) struct Deltas {
    pub dz: Ptr,
    pub dr: Ptr,
    /// The recurrent kernel transposed, `[N, U]`.
    pub ut: Vec<f32>,
}

/// The gradients for the output gradient `dy`, from the forward pass's trace (run
/// again when not given).
pub(super) fn run(l: &Layer, dy: &[f32], trace: Option<Trace>) -> Result<Grads, String> {
    let d = l.d;
    let rows = d.b * d.t;
    let tr = match trace {
        Some(tr) if tr.fits(l) => tr,
        _ => {
            let mut out = zeros(d.b * d.u * if l.a.return_sequences { d.t } else { 1 })?;
            fwd::run(l, &mut out, true)?.ok_or("recurrent layer: no trace")?
        }
    };
    let mut dz = zeros(rows * d.n)?;
    let own_dr = l.i.br.is_some();
    let mut dr = if own_dr {
        zeros(rows * d.n)?
    } else {
        Buf::default()
    };
    if rows > 0 {
        let p = Deltas {
            dz: Ptr::of(&mut dz),
            dr: if own_dr {
                Ptr::of(&mut dr)
            } else {
                Ptr::of(&mut dz)
            },
            ut: transpose(l.i.rk, d.u, d.n),
        };
        match generated_grad::function(l)? {
            Some(f) => generated_grad::walk(l, f, &tr, dy, &p)?,
            None => split_run(d.b, 1, &|lo, hi| dispatch(l, &tr, dy, &p, (lo, hi)))?,
        }
    }
    let dr: &[f32] = if own_dr { &dr } else { &dz };
    weights(l, &tr, &dz, dr)
}

/// `m` (`[rows, cols]`) transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for (i, row) in m.chunks(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

fn dispatch(l: &Layer, tr: &Trace, dy: &[f32], p: &Deltas, rows: (usize, usize)) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the host has the features the function is compiled for.
        unsafe { slice_avx2(l, tr, dy, p, rows) };
        return;
    }
    slice::<false>(l, tr, dy, p, rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn slice_avx2(l: &Layer, tr: &Trace, dy: &[f32], p: &Deltas, rows: (usize, usize)) {
    slice::<true>(l, tr, dy, p, rows);
}

/// Per-slice state: the gradients flowing into the current step's output (`dh`) and
/// cell state (`dc`), and the next `dh` being formed (`dhp`).
struct State {
    dh: Vec<f32>,
    dc: Vec<f32>,
    dhp: Vec<f32>,
    tmp: Vec<f32>,
    /// GRU (reset_after false): the update gate's output gradient, then `da_h·U_hᵀ`.
    dzg: Vec<f32>,
    drh: Vec<f32>,
}

/// One batch slice through all steps, last to first.
#[inline(always)]
fn slice<const F: bool>(l: &Layer, tr: &Trace, dy: &[f32], p: &Deltas, (lo, hi): (usize, usize)) {
    let d = l.d;
    let (steps, u, nb) = (d.t, d.u, hi - lo);
    let late = l.late_candidate();
    let mut s = State {
        dh: vec![0.0; nb * u],
        dc: vec![0.0; nb * u],
        dhp: vec![0.0; nb * u],
        tmp: vec![0.0; nb * u],
        dzg: vec![0.0; if late { nb * u } else { 0 }],
        drh: vec![0.0; if late { nb * u } else { 0 }],
    };
    for k in (0..steps).rev() {
        let t = if l.a.go_backwards { steps - 1 - k } else { k };
        for i in 0..nb {
            let row = lo + i;
            let share = if l.a.return_sequences {
                Some(&dy[(row * steps + k) * u..][..u])
            } else {
                (k == steps - 1).then(|| &dy[row * u..][..u])
            };
            let valid = l.valid(row, t);
            if let Some(g) = share
                && (valid || !(l.a.zero_output && l.i.mask.is_some()))
            {
                for (a, &b) in s.dh[i * u..][..u].iter_mut().zip(g) {
                    *a += b;
                }
            }
            s.dhp[i * u..][..u].fill(0.0);
            if valid {
                // SAFETY: batch row `row`'s deltas are this part's alone.
                let (dz, dr) = unsafe { rows_of(p, l, row * steps + t) };
                gate_row::<F>(l, tr, (row * steps + t, i), &mut s, (dz, dr));
            }
        }
        if late {
            late_candidate::<F>(l, tr, p, (lo, t), &mut s);
        }
        back_product::<F>(l, p, (lo, t), &mut s);
        for i in 0..nb {
            if l.valid(lo + i, t) {
                s.dh[i * u..][..u].copy_from_slice(&s.dhp[i * u..][..u]);
            }
        }
    }
}

/// The delta rows of step `at` (dz, and dr when it is a buffer of its own).
///
/// # Safety
/// No other part uses row `at` meanwhile.
#[allow(clippy::type_complexity)]
unsafe fn rows_of<'a>(p: &Deltas, l: &Layer, at: usize) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    let n = l.d.n;
    // SAFETY: the caller's contract; dz and dr are distinct buffers when `br` is set.
    unsafe {
        let dz = std::slice::from_raw_parts_mut(p.dz.0.add(at * n), n);
        let dr =
            l.i.br
                .is_some()
                .then(|| std::slice::from_raw_parts_mut(p.dr.0.add(at * n), n));
        (dz, dr)
    }
}

/// A valid row's gate gradients at trace row `at` (slice row `i`): writes its deltas
/// and the part of the next `dh` that does not go through `U`.
#[inline(always)]
fn gate_row<const F: bool>(
    l: &Layer,
    tr: &Trace,
    (at, i): (usize, usize),
    s: &mut State,
    (dz, dr): (&mut [f32], Option<&mut [f32]>),
) {
    let (u, n) = (l.d.u, l.d.n);
    let z = &tr.z[at * n..][..n];
    let a = &tr.a[at * n..][..n];
    let dh = &s.dh[i * u..][..u];
    match l.a.cell {
        Cell::Simple => l.act.grad_slice(z, a, dh, dz),
        Cell::Lstm => {
            let (cp, cn, ex) = (
                &tr.cp[at * u..][..u],
                &tr.cn[at * u..][..u],
                &tr.ex[at * u..][..u],
            );
            let dc = &mut s.dc[i * u..][..u];
            let (ig, fg, gg, og) = (&a[..u], &a[u..2 * u], &a[2 * u..3 * u], &a[3 * u..]);
            for j in 0..u {
                let dct = dc[j] + l.act.grad(cn[j], ex[j], dh[j] * og[j]);
                dz[j] = dct * gg[j];
                dz[u + j] = dct * cp[j];
                dz[2 * u + j] = dct * ig[j];
                dz[3 * u + j] = dh[j] * ex[j];
                dc[j] = dct * fg[j];
            }
            for (q, act) in [&l.ract, &l.ract, &l.act, &l.ract].into_iter().enumerate() {
                let g = &mut dz[q * u..][..u];
                for ((g, &z), &a) in g.iter_mut().zip(&z[q * u..][..u]).zip(&a[q * u..][..u]) {
                    *g = act.grad(z, a, *g);
                }
            }
        }
        Cell::Gru => {
            let hp = &tr.hp[at * u..][..u];
            let (zg, rg, hh) = (&a[..u], &a[u..2 * u], &a[2 * u..]);
            let dhp = &mut s.dhp[i * u..][..u];
            for j in 0..u {
                dhp[j] = dh[j] * zg[j];
                let dhh = dh[j] - dh[j] * zg[j];
                dz[2 * u + j] = l.act.grad(z[2 * u + j], hh[j], dhh);
            }
            if let Some(dr) = dr {
                // reset_after: the candidate's recurrent input was r ⊙ ex.
                let ex = &tr.ex[at * u..][..u];
                for j in 0..u {
                    let dzg = dh[j] * (hp[j] - hh[j]);
                    let da = dz[2 * u + j];
                    dz[j] = l.ract.grad(z[j], zg[j], dzg);
                    dz[u + j] = l.ract.grad(z[u + j], rg[j], da * ex[j]);
                    dr[j] = dz[j];
                    dr[u + j] = dz[u + j];
                    dr[2 * u + j] = da * rg[j];
                }
            } else {
                let dzg = &mut s.dzg[i * u..][..u];
                for j in 0..u {
                    dzg[j] = dh[j] * (hp[j] - hh[j]);
                }
            }
        }
    }
}

/// GRU with reset_after false, once the candidate's deltas of every row are known:
/// `drh = da_h · U_hᵀ`, then the reset and update gates' deltas and the candidate's
/// path into the next `dh`, `drh ⊙ r ⊙ keep_h`.
#[inline(always)]
fn late_candidate<const F: bool>(
    l: &Layer,
    tr: &Trace,
    p: &Deltas,
    (lo, t): (usize, usize),
    s: &mut State,
) {
    let d = l.d;
    let (steps, u, n) = (d.t, d.u, d.n);
    let nb = s.dh.len() / u.max(1);
    // SAFETY: the slice's delta rows at step t ([nb] rows T·N apart), U_h's columns.
    unsafe {
        small::gemm::<F>(
            (nb, u, u),
            p.dz.0.add((lo * steps + t) * n + 2 * u),
            steps * n,
            p.ut.as_ptr().add(2 * u * u),
            u,
            s.drh.as_mut_ptr(),
            u,
            false,
        )
    };
    for i in 0..nb {
        let row = lo + i;
        if !l.valid(row, t) {
            continue;
        }
        let at = row * steps + t;
        let (z, a, hp) = (
            &tr.z[at * n..][..n],
            &tr.a[at * n..][..n],
            &tr.hp[at * u..][..u],
        );
        // SAFETY: batch row `row`'s deltas are this part's alone.
        let (dz, _) = unsafe { rows_of(p, l, at) };
        let keep = l.i.hkeep.map(|k| &k[(row * d.g + 2) * u..][..u]);
        let (drh, dzg, dhp) = (
            &s.drh[i * u..][..u],
            &s.dzg[i * u..][..u],
            &mut s.dhp[i * u..][..u],
        );
        for j in 0..u {
            let k = keep.map_or(1.0, |k| k[j]);
            let rg = a[u + j];
            dz[j] = l.ract.grad(z[j], a[j], dzg[j]);
            dz[u + j] = l.ract.grad(z[u + j], rg, drh[j] * hp[j] * k);
            dhp[j] = ma::<F>(drh[j] * rg, k, dhp[j]);
        }
    }
}

/// `dhp += Σ_g (dr_g · U_gᵀ) ⊙ keep_g` over the gates whose recurrent product takes
/// `h` directly (all but GRU's late candidate).
#[inline(always)]
fn back_product<const F: bool>(l: &Layer, p: &Deltas, (lo, t): (usize, usize), s: &mut State) {
    let d = l.d;
    let (steps, u, n) = (d.t, d.u, d.n);
    let nb = s.dh.len() / u.max(1);
    // SAFETY: within the dr buffer (rows lo.., step t, gate g's columns).
    let a = |g: usize| unsafe { p.dr.0.add((lo * steps + t) * n + g * u) } as *const f32;
    let ng = l.early_gates();
    match l.i.hkeep {
        // SAFETY: dr rows [nb, ng·u] T·N apart; Uᵀ [n, u]; dhp [nb, u].
        None => unsafe {
            small::gemm::<F>(
                (nb, ng * u, u),
                a(0),
                steps * n,
                p.ut.as_ptr(),
                u,
                s.dhp.as_mut_ptr(),
                u,
                true,
            )
        },
        Some(keep) => {
            for g in 0..ng {
                // SAFETY: as above, gate g alone into tmp.
                unsafe {
                    small::gemm::<F>(
                        (nb, u, u),
                        a(g),
                        steps * n,
                        p.ut.as_ptr().add(g * u * u),
                        u,
                        s.tmp.as_mut_ptr(),
                        u,
                        false,
                    )
                };
                for (i, (o, &v)) in s.dhp.iter_mut().zip(&s.tmp).enumerate() {
                    *o += v * keep[((lo + i / u) * d.g + g) * u + i % u];
                }
            }
        }
    }
}

/// The kernel, recurrent kernel and bias gradients as products over all `B·T` rows
/// (split across the team by columns, or by gate under keep masks), then the input
/// gradient (split by rows).
fn weights(l: &Layer, tr: &Trace, dz: &[f32], dr: &[f32]) -> Result<Grads, String> {
    let d = l.d;
    let m = d.b * d.t;
    let mut g = Grads {
        dx: zeros(m * d.f)?,
        dw: zeros(d.f * d.n)?,
        du: zeros(d.u * d.n)?,
        dbi: zeros(d.n)?,
        dbr: zeros(if l.i.br.is_some() { d.n } else { 0 })?,
    };
    let (pw, pu, pbi, pbr) = (
        Ptr::of(&mut g.dw),
        Ptr::of(&mut g.du),
        Ptr::of(&mut g.dbi),
        Ptr::of(&mut g.dbr),
    );
    let by_gate = l.i.xkeep.is_some() || l.i.hkeep.is_some() || l.late_candidate();
    let cols = |c0: usize, c1: usize| {
        // SAFETY: each part owns the columns c0..c1 of dw, du and the biases.
        unsafe {
            product_t(l, (l.i.x, d.f), None, (dz, c0, c1), pw);
            product_t(l, (&tr.hp, d.u), None, (dr, c0, c1), pu);
            colsum(dz, (c0, c1), d.n, pbi);
            if l.i.br.is_some() {
                colsum(dr, (c0, c1), d.n, pbr);
            }
        }
    };
    if by_gate {
        split_run(d.g, 1, &|g0, g1| {
            for gate in g0..g1 {
                let (c0, c1) = (gate * d.u, (gate + 1) * d.u);
                let xs = l.i.xkeep.map(|k| scaled(l, (l.i.x, d.f), k, gate, None));
                let late = l.late_candidate() && gate == 2;
                let ones: Vec<f32>;
                let hs = if l.i.hkeep.is_some() || late {
                    let k = match l.i.hkeep {
                        Some(k) => k,
                        None => {
                            ones = vec![1.0f32; d.b * d.g * d.u];
                            &ones
                        }
                    };
                    Some(scaled(l, (&tr.hp, d.u), k, gate, late.then_some(tr)))
                } else {
                    None
                };
                // SAFETY: each part owns its gates' columns.
                unsafe {
                    product_t(l, (l.i.x, d.f), xs.as_deref(), (dz, c0, c1), pw);
                    product_t(l, (&tr.hp, d.u), hs.as_deref(), (dr, c0, c1), pu);
                    colsum(dz, (c0, c1), d.n, pbi);
                    if l.i.br.is_some() {
                        colsum(dr, (c0, c1), d.n, pbr);
                    }
                }
            }
        })?;
    } else {
        split_run(d.n, 16, &cols)?;
    }
    let px = Ptr::of(&mut g.dx);
    split_run(m, 8, &|r0, r1| input_grad(l, dz, (r0, r1), px))?;
    Ok(g)
}

/// `v ⊙ keep_g` per row (`v` is `[B·T, w]`, keep `[B, G, w]`), times GRU's reset gate
/// from the trace when `r` is given.
fn scaled(
    l: &Layer,
    (v, w): (&[f32], usize),
    keep: &[f32],
    g: usize,
    r: Option<&Trace>,
) -> Vec<f32> {
    let d = l.d;
    let mut out = vec![0.0f32; v.len()];
    for (row, (o, s)) in out.chunks_mut(w).zip(v.chunks(w)).enumerate() {
        let k = &keep[((row / d.t.max(1)) * d.g + g) * w..][..w];
        for ((o, &s), &k) in o.iter_mut().zip(s).zip(k) {
            *o = s * k;
        }
        if let Some(tr) = r {
            let rg = &tr.a[row * d.n + d.u..][..d.u];
            for (o, &r) in o.iter_mut().zip(rg) {
                *o *= r;
            }
        }
    }
    out
}

/// `dst[:, c0..c1] = vᵀ · delta[:, c0..c1]` over all `B·T` rows (`v` is `[B·T, w]`,
/// or its scaled copy `vs`).
///
/// # Safety
/// The caller owns columns `c0..c1` of `dst` (`[w, N]`).
unsafe fn product_t(
    l: &Layer,
    (v, w): (&[f32], usize),
    vs: Option<&[f32]>,
    (delta, c0, c1): (&[f32], usize, usize),
    dst: Ptr,
) {
    let (m, n) = (l.d.b * l.d.t, l.d.n);
    let v = vs.unwrap_or(v);
    // SAFETY: v is [m, w] read transposed, delta [m, n], dst [w, n].
    unsafe {
        gemm(
            (w, m, c1 - c0),
            (v.as_ptr(), 1, w as isize),
            (delta.as_ptr().add(c0), n as isize, 1),
            0.0,
            (dst.0.add(c0), n as isize, 1),
        )
    }
}

/// `dst[c] = Σ_rows m[row, c]` for `c` in `c0..c1`.
///
/// # Safety
/// The caller owns `dst[c0..c1]`.
unsafe fn colsum(m: &[f32], (c0, c1): (usize, usize), n: usize, dst: Ptr) {
    // SAFETY: the caller's contract.
    let out = unsafe { dst.rows(c0, c1 - c0) };
    out.fill(0.0);
    for row in m.chunks(n) {
        for (o, &v) in out.iter_mut().zip(&row[c0..c1]) {
            *o += v;
        }
    }
}

/// `dx[r0..r1] = Σ_g (dz_g · W_gᵀ) ⊙ keep_g` (one product without keep masks).
fn input_grad(l: &Layer, dz: &[f32], (r0, r1): (usize, usize), dx: Ptr) {
    let d = l.d;
    let (f, n, rows) = (d.f, d.n, r1 - r0);
    // SAFETY: rows r0..r1 of dx are this part's.
    let out = unsafe { dx.rows(r0 * f, rows * f) };
    let a = |g: usize| (dz[r0 * n + g * d.u..].as_ptr(), n as isize, 1);
    match l.i.xkeep {
        // SAFETY: dz rows [rows, n]; Wᵀ by strides; out [rows, f].
        None => unsafe {
            gemm(
                (rows, n, f),
                a(0),
                (l.i.w.as_ptr(), 1, n as isize),
                0.0,
                (out.as_mut_ptr(), f as isize, 1),
            )
        },
        Some(keep) => {
            let mut tmp = vec![0.0f32; rows * f];
            for g in 0..d.g {
                // SAFETY: as above, gate g's columns.
                unsafe {
                    gemm(
                        (rows, d.u, f),
                        a(g),
                        (l.i.w.as_ptr().add(g * d.u), 1, n as isize),
                        0.0,
                        (tmp.as_mut_ptr(), f as isize, 1),
                    )
                };
                for (i, (o, t)) in out.chunks_mut(f).zip(tmp.chunks(f)).enumerate() {
                    let k = &keep[(((r0 + i) / d.t) * d.g + g) * f..][..f];
                    for ((o, &t), &k) in o.iter_mut().zip(t).zip(k) {
                        *o += t * k;
                    }
                }
            }
        }
    }
}
