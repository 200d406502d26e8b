//! Runs a fused attention kernel (`plan::AttnKernel`): for each batch entry (each head),
//! eight query rows at a time, the rows' scores, softmax and weighted sum of values are
//! computed while they are in L1 — no score matrix goes through memory unless the
//! backward pass reads one of the softmax's pieces (then exactly those are stored).
//! The forward kernel holds a key column of the eight rows in one vector (`lanes.rs`:
//! AVX2 and FMA when the host has them, else plain), so the softmax's row maxima and
//! sums need no horizontal reductions; queries, keys and values are read in place.
//! Batch entries are spread over the team. `exp` is the same polynomial as the
//! generated code's (`mathfn.rs`). The backward kernel is in `backward.rs`; it
//! recomputes the forward's scores and exponentials bit for bit.

use super::frame::{Desc, DescKind, FrameLayout, access_parts, guarded};
use super::plan::{AttnKernel, Stage};
use super::team;

mod backward;
pub(super) mod lanes;

use lanes::Lanes;

/// Below this many multiply-adds the kernel runs on one thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// Runs the attention kernel of descriptor `desc` on the frame's buffers.
pub(super) extern "C" fn kiln_attention(frame: *mut i64, desc: *const Desc) {
    guarded(frame, desc, "attention", |d, frame| {
        let DescKind::Attention(a) = &d.kind else {
            return Err("bad attention descriptor".to_string());
        };
        Ok(Call::new(frame, d.fl, a).run())
    })
}

/// A `[batch…, rows, cols]` view: its buffer's address, offset and strides.
struct View {
    ptr: usize,
    off: i64,
    strides: Vec<i64>,
}

impl View {
    fn new(frame: &[i64], fl: FrameLayout, a: &super::plan::Access) -> View {
        let (p, off, strides) = access_parts(frame, fl, a);
        View {
            ptr: p as usize,
            off,
            strides,
        }
    }

    /// The offset of batch entry `bi` (row-major over `batch`).
    fn entry(&self, batch: &[usize], bi: usize) -> i64 {
        let mut rem = bi;
        let mut off = self.off;
        for d in (0..batch.len()).rev() {
            off += (rem % batch[d]) as i64 * self.strides[d];
            rem /= batch[d];
        }
        off
    }

    /// The row and column strides.
    fn inner(&self) -> (i64, i64) {
        let r = self.strides.len();
        (self.strides[r - 2], self.strides[r - 1])
    }
}

/// One run of the kernel, sizes and addresses read from the frame.
struct Call {
    batch: Vec<usize>,
    total: usize,
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
    q: View,
    /// The factor each query element is multiplied by as it is read.
    q_scale: Option<f32>,
    k: View,
    v: View,
    out: View,
    causal: Option<f32>,
    /// Each stage's contiguous buffer (0: not stored), indexed by `stage_index`.
    stores: [usize; 8],
    /// The backward kernel's further views (`None`: the forward kernel).
    grad: Option<backward::GradViews>,
}

fn stage_index(s: Stage) -> usize {
    match s {
        Stage::Scores => 0,
        Stage::Masked => 1,
        Stage::Max => 2,
        Stage::Shifted => 3,
        Stage::Exp => 4,
        Stage::Sum => 5,
        Stage::Probs => 6,
        Stage::MaskedProbs => 7,
    }
}

/// Per-part scratch: a block's queries transposed, its scores `[tk][N]` (key column
/// `j` of the block's `N` query rows in `st[j]`), and the values when they must be
/// packed.
struct Scratch {
    qt: Vec<f32>,
    st: Vec<f32>,
    v: Vec<f32>,
}

impl Call {
    fn new(frame: &[i64], fl: FrameLayout, a: &AttnKernel) -> Call {
        let size = |s: usize| frame[s].max(0) as usize;
        let batch: Vec<usize> = a.batch.iter().map(|&s| size(s)).collect();
        let mut stores = [0usize; 8];
        for &(st, buf) in &a.stores {
            stores[stage_index(st)] = frame[fl.sizes + buf] as usize;
        }
        Call {
            total: batch.iter().product(),
            batch,
            tq: size(a.tq),
            tk: size(a.tk),
            d: size(a.d),
            dv: size(a.dv),
            q: View::new(frame, fl, &a.q),
            q_scale: a.q_scale,
            k: View::new(frame, fl, &a.k),
            v: View::new(frame, fl, &a.v),
            out: View::new(frame, fl, &a.out),
            causal: a.causal,
            stores,
            grad: a.grad.as_ref().map(|g| backward::GradViews {
                g: View::new(frame, fl, &g.g),
                max: View::new(frame, fl, &g.max),
                sum: View::new(frame, fl, &g.sum),
                dk: View::new(frame, fl, &g.dk),
                dv: View::new(frame, fl, &g.dv),
            }),
        }
    }

    fn scratch(&self) -> Scratch {
        let packed = self.v.inner().1 != 1;
        Scratch {
            qt: vec![0.0; MAX_LANES * self.d],
            st: vec![0.0; MAX_LANES * self.tk],
            v: vec![0.0; if packed { self.tk * self.dv } else { 0 }],
        }
    }

    /// Every batch entry, spread over the team when large; false when a part panicked.
    fn run(&self) -> bool {
        let products = if self.grad.is_some() { 5 } else { 2 };
        let macs = self
            .total
            .saturating_mul(self.tq)
            .saturating_mul(self.tk)
            .saturating_mul(self.d.max(self.dv) * products);
        let t = team::team();
        let parts = self.total.min(team::MAX_PARTS);
        if t.size() == 1 || parts <= 1 || macs < PARALLEL_MIN_MACS {
            self.entries(0, self.total);
            return true;
        }
        t.run(parts, &|p| {
            let (lo, hi) = team::split(self.total as i64, parts, p, 1);
            self.entries(lo as usize, hi as usize);
        })
    }

    /// Batch entries `lo..hi`.
    fn entries(&self, lo: usize, hi: usize) {
        if let Some(g) = &self.grad {
            return backward::entries(self, g, lo, hi);
        }
        let mut s = self.scratch();
        (lo..hi).for_each(|bi| self.entry(bi, &mut s));
    }

    /// Batch entry `bi`: its blocks of query rows.
    fn entry(&self, bi: usize, s: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the host has AVX-512F, AVX2 and FMA.
            return unsafe { blocks_avx512(self, bi, s) };
        }
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the host has AVX2 and FMA.
            return unsafe { blocks_avx2(self, bi, s) };
        }
        blocks::<lanes::Scalar<Plain>, Plain, 8, 2, 4>(self, bi, s);
    }

    /// Batch entry `bi` of a `[rows, cols]` view, in place.
    fn mat(&self, v: &View, bi: usize) -> Mat {
        let (sr, sc) = v.inner();
        let off = v.entry(&self.batch, bi);
        Mat {
            // The offset lies within the view's buffer (plan invariant).
            p: (v.ptr as *mut f32).wrapping_offset(off as isize),
            sr: sr as isize,
            sc: sc as isize,
        }
    }

    /// Copies batch entry `bi` of a `[rows, cols]` view into `dst`, row-major or
    /// (`transpose`) column-major.
    fn pack(
        &self,
        v: &View,
        bi: usize,
        (rows, cols): (usize, usize),
        dst: &mut [f32],
        transpose: bool,
    ) {
        let base = v.entry(&self.batch, bi);
        let (sr, sc) = v.inner();
        let src = v.ptr as *const f32;
        for i in 0..rows {
            let row = base + i as i64 * sr;
            if sc == 1 && !transpose {
                // SAFETY: the view's row lies within its buffer (plan invariant).
                let s = unsafe { std::slice::from_raw_parts(src.offset(row as isize), cols) };
                dst[i * cols..(i + 1) * cols].copy_from_slice(s);
                continue;
            }
            for c in 0..cols {
                let at = if transpose {
                    c * rows + i
                } else {
                    i * cols + c
                };
                // SAFETY: the view lies within its buffer (plan invariant).
                dst[at] = unsafe { *src.offset((row + c as i64 * sc) as isize) };
            }
        }
    }

    /// Stores the block's `[tk][N]` values `st` as rows `i0..i0 + n` of batch entry
    /// `bi` of a `[batch…, tq, tk]` stage.
    fn store_rows<const N: usize>(
        &self,
        st: Stage,
        bi: usize,
        (i0, n): (usize, usize),
        x: &[[f32; N]],
    ) {
        let p = self.stores[stage_index(st)];
        if p != 0 {
            for l in 0..n {
                let at = (bi * self.tq + i0 + l) * self.tk;
                for (j, xj) in x.iter().enumerate() {
                    // SAFETY: the stage's buffer is a contiguous [batch…, tq, tk] arena
                    // region; this part alone writes entry `bi`'s rows.
                    unsafe { *(p as *mut f32).add(at + j) = xj[l] };
                }
            }
        }
    }

    /// Stores lanes `..n` of `x` as elements `i0..i0 + n` of batch entry `bi` of a
    /// `[batch…, tq]` stage.
    fn store_lanes<const N: usize>(
        &self,
        st: Stage,
        bi: usize,
        (i0, n): (usize, usize),
        x: &[f32; N],
    ) {
        let p = self.stores[stage_index(st)];
        if p != 0 {
            for (l, &x) in x[..n].iter().enumerate() {
                // SAFETY: the stage's buffer is a contiguous [batch…, tq] arena region.
                unsafe { *(p as *mut f32).add(bi * self.tq + i0 + l) = x };
            }
        }
    }
}

/// `a*b + c`: fused, or a product and a sum.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

struct Plain;
impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[cfg(target_arch = "x86_64")]
struct Fused;
#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn blocks_avx2(c: &Call, bi: usize, s: &mut Scratch) {
    blocks::<lanes::Avx2, Fused, 8, 2, 4>(c, bi, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn blocks_avx512(c: &Call, bi: usize, s: &mut Scratch) {
    blocks::<lanes::Avx512, Fused, 16, 1, 8>(c, bi, s)
}

/// Whether the host has AVX2 and FMA (the kernels' eight-lane vector builds; both
/// kernels have sixteen-lane AVX-512 builds too, see `avx512()` and `backward.rs`).
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether the host has AVX-512F too: the forward kernel's sixteen-lane build (a
/// third fewer cycles than its eight-lane AVX2 build on that machine).
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && avx2()
}

/// The most lanes a forward build uses (the scratch is sized for it).
const MAX_LANES: usize = 16;

/// `exp(x)` as `mathfn::exp` computes it without FMA (Cephes' polynomial, 2^n from the
/// exponent bits), in a form that vectorizes: the recurrent kernels' own. The plain
/// build's exponential.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    super::rnn::math::exp::<false>(x)
}

/// The same with the polynomial's steps as fused multiply-adds (as `mathfn::exp` on a
/// host with FMA): the AVX builds' exponential, forward and backward, so each build's
/// backward pass recomputes its forward's bits. Measured: the forward kernel 7% faster
/// than with separate products and sums (batch 32, length 128, AVX-512).
#[inline(always)]
fn exp_fused(x: f32) -> f32 {
    super::rnn::math::exp::<true>(x)
}

/// A `[rows, cols]` operand in memory: the address of element (0, 0) and the strides.
#[derive(Clone, Copy)]
struct Mat {
    p: *mut f32,
    sr: isize,
    sc: isize,
}

impl Mat {
    /// A row-major `[_, cols]` slice.
    fn of(x: &[f32], cols: usize) -> Mat {
        Mat {
            p: x.as_ptr() as *mut f32,
            sr: cols as isize,
            sc: 1,
        }
    }

    /// The address of element `(r, c)`.
    #[inline(always)]
    fn ptr(&self, r: usize, c: usize) -> *mut f32 {
        self.p
            .wrapping_offset(r as isize * self.sr + c as isize * self.sc)
    }

    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f32 {
        // SAFETY: callers index within the operand's rows and columns, which lie
        // within its buffer (plan invariant, or a slice of that size).
        unsafe { *self.ptr(r, c) }
    }

    /// Columns `c..c + N` of row `r` (contiguous columns: `sc == 1`).
    #[inline(always)]
    fn lanes<const N: usize>(&self, r: usize, c: usize) -> &[f32; N] {
        debug_assert_eq!(self.sc, 1);
        // SAFETY: as for `at`; the columns are contiguous.
        unsafe { &*(self.ptr(r, c) as *const [f32; N]) }
    }

    /// `lanes` of an output, to write.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn lanes_mut<const N: usize>(&self, r: usize, c: usize) -> &mut [f32; N] {
        debug_assert_eq!(self.sc, 1);
        // SAFETY: as for `lanes`; an output's rows are written by one part only, and
        // nothing reads them meanwhile.
        unsafe { &mut *(self.ptr(r, c) as *mut [f32; N]) }
    }
}

/// The blocks of `N` query rows of batch entry `bi`. Per block, the queries are
/// transposed (`qt[c]`: column `c` of the block's rows), and the scores, their
/// softmax and the weighted values are computed with a vector holding one key column
/// of the block's rows: the row maxima and sums are then lane-wise, with no
/// horizontal reduction. Each value is computed with the same operations in the same
/// order as row by row (products over `c` in order; sums of the exponentials in eight
/// partial sums by key index mod 8, added in order, then the remainder) — the bits
/// the backward kernel recomputes. Keys and values are read in place (values packed
/// when their columns are not contiguous). The weighted values take `RP` rows × `CV`
/// vectors (16 columns) at a time.
#[inline(always)]
fn blocks<L: Lanes<N>, M: MulAdd, const N: usize, const CV: usize, const RP: usize>(
    c: &Call,
    bi: usize,
    s: &mut Scratch,
) {
    let (tq, tk, d, dv) = (c.tq, c.tk, c.d, c.dv);
    let q = c.mat(&c.q, bi);
    let k = c.mat(&c.k, bi);
    let mut v = c.mat(&c.v, bi);
    if v.sc != 1 {
        c.pack(&c.v, bi, (tk, dv), &mut s.v, false);
        v = Mat::of(&s.v, dv);
    }
    let out = c.mat(&c.out, bi);
    let qt = &mut s.qt.as_chunks_mut::<N>().0[..d];
    let st = &mut s.st.as_chunks_mut::<N>().0[..tk];
    let mut i0 = 0;
    while i0 < tq {
        let n = N.min(tq - i0);
        for (ch, x) in qt.iter_mut().enumerate() {
            *x = std::array::from_fn(|l| if l < n { q.at(i0 + l, ch) } else { 0.0 });
            if let Some(scale) = c.q_scale {
                *x = x.map(|y| y * scale);
            }
        }
        block_scores::<L, N>(qt, k, st);
        block_softmax::<L, N>(c, bi, (i0, n), st);
        for h in (0..n).step_by(RP) {
            let rows = (i0 + h, RP.min(n - h));
            // Keys past the last row's own step have zero probability.
            let live = c.causal.map_or(tk, |_| (rows.0 + rows.1).min(tk));
            block_weighted::<L, M, N, CV, RP>(st, (h, live), v, dv, out, rows);
        }
        i0 += n;
    }
}

/// `st[j][l] = Σ_c qt[c][l] · k[j, c]`, eight key columns at a time in registers.
#[inline(always)]
fn block_scores<L: Lanes<N>, const N: usize>(qt: &[[f32; N]], k: Mat, st: &mut [[f32; N]]) {
    const JB: usize = 8;
    let tk = st.len();
    let mut j0 = 0;
    while j0 < tk {
        let nb = JB.min(tk - j0);
        if nb == JB {
            let mut acc = [L::splat(0.0); JB];
            for (ch, x) in qt.iter().enumerate() {
                let qv = L::load(x);
                for (jj, a) in acc.iter_mut().enumerate() {
                    *a = L::mul_add(qv, L::splat(k.at(j0 + jj, ch)), *a);
                }
            }
            for (jj, a) in acc.iter().enumerate() {
                L::store(*a, &mut st[j0 + jj]);
            }
        } else {
            for (j, sj) in st.iter_mut().enumerate().skip(j0) {
                let mut a = L::splat(0.0);
                for (ch, x) in qt.iter().enumerate() {
                    a = L::mul_add(L::load(x), L::splat(k.at(j, ch)), a);
                }
                L::store(a, sj);
            }
        }
        j0 += nb;
    }
}

/// The block's softmax in place (`st` holds the scores on entry, the masked
/// probabilities on exit), storing the stages asked for.
#[inline(always)]
fn block_softmax<L: Lanes<N>, const N: usize>(
    c: &Call,
    bi: usize,
    (i0, n): (usize, usize),
    st: &mut [[f32; N]],
) {
    let rows = (i0, n);
    c.store_rows(Stage::Scores, bi, rows, st);
    // Keys after a query's own step are masked (iota_row >= iota_col attends).
    if let Some(low) = c.causal {
        mask_block(st, i0, low);
        c.store_rows(Stage::Masked, bi, rows, st);
    }
    let mut mx = L::splat(f32::NEG_INFINITY);
    for x in st.iter() {
        mx = L::max(L::load(x), mx);
    }
    let mut m = [0.0; N];
    L::store(mx, &mut m);
    c.store_lanes(Stage::Max, bi, rows, &m);
    if c.stores[stage_index(Stage::Shifted)] != 0 {
        for x in st.iter_mut() {
            L::store(L::sub(L::load(x), mx), x);
        }
        c.store_rows(Stage::Shifted, bi, rows, st);
        // x − 0 is x: the exponentials below see the same values.
        mx = L::splat(0.0);
    }
    let tk = st.len();
    let full = tk / 8 * 8;
    let mut part = [L::splat(0.0); 8];
    for j8 in (0..full).step_by(8) {
        for (u, p) in part.iter_mut().enumerate() {
            let x = &mut st[j8 + u];
            let e = L::exp(L::sub(L::load(x), mx));
            L::store(e, x);
            *p = L::add(*p, e);
        }
    }
    let mut rest = L::splat(0.0);
    for x in st[full..].iter_mut() {
        let e = L::exp(L::sub(L::load(x), mx));
        L::store(e, x);
        rest = L::add(rest, e);
    }
    c.store_rows(Stage::Exp, bi, rows, st);
    let mut z = part[0];
    for p in &part[1..] {
        z = L::add(z, *p);
    }
    let z = L::add(z, rest);
    L::store(z, &mut m);
    c.store_lanes(Stage::Sum, bi, rows, &m);
    // One division per row: the probabilities are the exponentials times 1/z (within
    // an ulp of the graph's quotients).
    let rz = L::div(L::splat(1.0), z);
    for x in st.iter_mut() {
        L::store(L::mul(L::load(x), rz), x);
    }
    c.store_rows(Stage::Probs, bi, rows, st);
    if c.causal.is_some() {
        mask_block(st, i0, 0.0);
        c.store_rows(Stage::MaskedProbs, bi, rows, st);
    }
}

/// Sets `st[j][l]` to `x` where key `j` comes after query row `i0 + l`.
#[inline(always)]
fn mask_block<const N: usize>(st: &mut [[f32; N]], i0: usize, x: f32) {
    for (j, sj) in st.iter_mut().enumerate().skip(i0 + 1) {
        for (l, y) in sj.iter_mut().enumerate() {
            if j > i0 + l {
                *y = x;
            }
        }
    }
}

/// Output rows `i0..i0 + n` (`n` ≤ `RP`, lanes `h..h + n` of the block):
/// `o[i, c] = Σ_{j < live} st[j][l] · v[j, c]`, `RP` rows × 16 columns in registers,
/// products in key order.
#[inline(always)]
fn block_weighted<L: Lanes<N>, M: MulAdd, const N: usize, const CV: usize, const RP: usize>(
    st: &[[f32; N]],
    (h, live): (usize, usize),
    v: Mat,
    dv: usize,
    o: Mat,
    (i0, n): (usize, usize),
) {
    let mut c0 = 0;
    while c0 + CV * N <= dv {
        let mut acc = [[L::splat(0.0); CV]; RP];
        for (j, pj) in st[..live].iter().enumerate() {
            let vj: [L::V; CV] = std::array::from_fn(|u| L::load(v.lanes(j, c0 + u * N)));
            for (r, a) in acc.iter_mut().enumerate() {
                let p = L::splat(pj[(h + r) % N]);
                for (a, &vu) in a.iter_mut().zip(&vj) {
                    *a = L::mul_add(p, vu, *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(n) {
            for (u, &a) in a.iter().enumerate() {
                if o.sc == 1 {
                    L::store(a, o.lanes_mut(i0 + r, c0 + u * N));
                } else {
                    let mut x = [0.0; N];
                    L::store(a, &mut x);
                    for (l, &y) in x.iter().enumerate() {
                        // SAFETY: within the output (plan invariant), this part's rows.
                        unsafe { *o.ptr(i0 + r, c0 + u * N + l) = y };
                    }
                }
            }
        }
        c0 += CV * N;
    }
    for r in 0..n {
        for ch in c0..dv {
            let mut acc = 0.0f32;
            for (j, pj) in st[..live].iter().enumerate() {
                acc = M::mul_add(pj[h + r], v.at(j, ch), acc);
            }
            // SAFETY: within the output (plan invariant), this part's rows.
            unsafe { *o.ptr(i0 + r, ch) = acc };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic array in [-2, 2).
    fn data(n: usize, salt: u64) -> Vec<f32> {
        let mut st = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
        (0..n)
            .map(|_| {
                st = st
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (st >> 40) as f32 / (1u64 << 22) as f32 - 2.0
            })
            .collect()
    }

    fn view(p: &[f32], strides: Vec<i64>) -> View {
        View {
            ptr: p.as_ptr() as usize,
            off: 0,
            strides,
        }
    }

    /// Runs every build the host has on two entries of odd sizes (remainders of the
    /// 16-lane blocks, the 8 partial sums, the 8-key score blocks and the 16-column
    /// value blocks), with and without the causal mask, a query scale, keys and values
    /// strided as the heads of a projection, and the output transposed; compares each
    /// with a direct computation, and the vector builds with each other bit for bit.
    #[test]
    fn every_build_matches_a_direct_computation() {
        let (b, tq, tk, d, dv) = (2usize, 21usize, 19usize, 5usize, 19usize);
        let q = data(b * tq * d, 1);
        let k = data(b * tk * (d + 3), 2);
        let v = data(b * tk * (dv + 2), 3);
        for causal in [None, Some(-1e9f32)] {
            let mut outs = Vec::new();
            for build in 0..3 {
                #[cfg(target_arch = "x86_64")]
                if (build == 1 && !avx2()) || (build == 2 && !avx512()) {
                    continue;
                }
                #[cfg(not(target_arch = "x86_64"))]
                if build > 0 {
                    continue;
                }
                let out = vec![0.0f32; b * tq * dv];
                // [b, tq, dv] stored as [tq, b, dv], or (with the mask) as [dv, tq, b]:
                // contiguous and strided output columns.
                let (ob, oi, oc) = match causal {
                    None => (dv, b * dv, 1),
                    Some(_) => (1, b, tq * b),
                };
                let (mx, sum) = (vec![0.0f32; b * tq], vec![0.0f32; b * tq]);
                let mut stores = [0usize; 8];
                stores[stage_index(Stage::Max)] = mx.as_ptr() as usize;
                stores[stage_index(Stage::Sum)] = sum.as_ptr() as usize;
                let c = Call {
                    batch: vec![b],
                    total: b,
                    tq,
                    tk,
                    d,
                    dv,
                    q: view(&q, vec![(tq * d) as i64, d as i64, 1]),
                    q_scale: Some(0.5),
                    k: view(&k, vec![(tk * (d + 3)) as i64, (d + 3) as i64, 1]),
                    v: view(&v, vec![(tk * (dv + 2)) as i64, (dv + 2) as i64, 1]),
                    out: view(&out, vec![ob as i64, oi as i64, oc as i64]),
                    causal,
                    stores,
                    grad: None,
                };
                let mut s = c.scratch();
                for bi in 0..b {
                    match build {
                        0 => blocks::<lanes::Scalar<Plain>, Plain, 8, 2, 4>(&c, bi, &mut s),
                        // SAFETY: the host has the features (checked above).
                        #[cfg(target_arch = "x86_64")]
                        1 => unsafe { blocks_avx2(&c, bi, &mut s) },
                        #[cfg(target_arch = "x86_64")]
                        _ => unsafe { blocks_avx512(&c, bi, &mut s) },
                        #[cfg(not(target_arch = "x86_64"))]
                        _ => unreachable!(),
                    }
                }
                for bi in 0..b {
                    for i in 0..tq {
                        let live = causal.map_or(tk, |_| (i + 1).min(tk));
                        let sc: Vec<f64> = (0..tk)
                            .map(|j| {
                                (0..d)
                                    .map(|ch| {
                                        let qx = (q[(bi * tq + i) * d + ch] * 0.5) as f64;
                                        qx * k[(bi * tk + j) * (d + 3) + ch] as f64
                                    })
                                    .sum()
                            })
                            .collect();
                        let m = sc[..live].iter().fold(f64::MIN, |a, &x| a.max(x));
                        let z: f64 = sc[..live].iter().map(|x| (x - m).exp()).sum();
                        assert!((mx[bi * tq + i] as f64 - m).abs() < 1e-5, "max {build}");
                        assert!(
                            (sum[bi * tq + i] as f64 - z).abs() < 1e-5 * z,
                            "sum {build}"
                        );
                        for ch in 0..dv {
                            let want: f64 = (0..live)
                                .map(|j| {
                                    (sc[j] - m).exp() / z * v[(bi * tk + j) * (dv + 2) + ch] as f64
                                })
                                .sum();
                            let got = out[bi * ob + i * oi + ch * oc] as f64;
                            assert!((got - want).abs() < 1e-5, "build {build} {got} vs {want}");
                        }
                    }
                }
                outs.push((build, out));
            }
            for w in outs.windows(2) {
                if w[0].0 > 0 {
                    assert_eq!(w[0].1, w[1].1, "the vector builds differ");
                }
            }
        }
    }
}
