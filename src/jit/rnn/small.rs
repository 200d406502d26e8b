//! The per-step recurrent products: few rows (a batch slice) times a row-major matrix
//! already in the layout a micro-kernel wants (`U`, or `Uᵀ` transposed once per call),
//! so unlike a general GEMM nothing is packed per step. Four rows by sixteen columns
//! of accumulators, the column tail and row tail by narrower copies of the same loop.

use super::math::ma;

/// `c[m, n] (+)= a[m, k] · b[k, n]`, row strides `lda`, `ldb`, `ldc` (unit column
/// strides); `add` accumulates into `c`, otherwise overwrites it.
///
/// # Safety
/// The three matrices lie within their buffers under these strides; `c` aliases neither.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm<const F: bool>(
    (m, k, n): (usize, usize, usize),
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let mut i = 0;
    // SAFETY: each block stays within rows i.. of a and c (caller's contract).
    unsafe {
        while i + 4 <= m {
            rows::<F, 4>(k, n, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc, add);
            i += 4;
        }
        while i < m {
            rows::<F, 1>(k, n, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc, add);
            i += 1;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const F: bool, const R: usize>(
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let mut j = 0;
    // SAFETY: columns j..j+W of b and c, rows 0..R of a and c (caller's contract).
    unsafe {
        while j + 16 <= n {
            block::<F, R, 16>(k, a, lda, b.add(j), ldb, c.add(j), ldc, add);
            j += 16;
        }
        while j + 4 <= n {
            block::<F, R, 4>(k, a, lda, b.add(j), ldb, c.add(j), ldc, add);
            j += 4;
        }
        while j < n {
            block::<F, R, 1>(k, a, lda, b.add(j), ldb, c.add(j), ldc, add);
            j += 1;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const F: bool, const R: usize, const W: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let mut acc = [[0.0f32; W]; R];
    for q in 0..k {
        // SAFETY: row q of b holds W columns from here (caller's contract).
        let bq: [f32; W] = unsafe { std::ptr::read_unaligned(b.add(q * ldb) as *const [f32; W]) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row r of a holds column q.
            let av = unsafe { *a.add(r * lda + q) };
            for (s, &bv) in acc.iter_mut().zip(&bq) {
                *s = ma::<F>(av, bv, *s);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of c holds W columns from here.
        let out = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), W) };
        for (o, &s) in out.iter_mut().zip(acc) {
            *o = if add { *o + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_a_plain_product() {
        for (m, k, n) in [(1, 1, 1), (5, 7, 37), (9, 64, 256), (4, 3, 16), (3, 0, 5)] {
            let a: Vec<f32> = (0..m * (k + 2))
                .map(|i| ((i * 7 % 13) as f32) - 6.0)
                .collect();
            let b: Vec<f32> = (0..k * (n + 3))
                .map(|i| ((i * 5 % 11) as f32) * 0.5)
                .collect();
            for add in [false, true] {
                let mut c = vec![1.0f32; m * (n + 1)];
                // SAFETY: strides within the buffers above.
                unsafe {
                    super::gemm::<false>(
                        (m, k, n),
                        a.as_ptr(),
                        k + 2,
                        b.as_ptr(),
                        n + 3,
                        c.as_mut_ptr(),
                        n + 1,
                        add,
                    )
                };
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k)
                            .map(|q| a[i * (k + 2) + q] * b[q * (n + 3) + j])
                            .sum::<f32>()
                            + if add { 1.0 } else { 0.0 };
                        assert_eq!(c[i * (n + 1) + j], want, "{m}x{k}x{n} at {i},{j}");
                    }
                    assert_eq!(c[i * (n + 1) + n], 1.0);
                }
            }
        }
    }
}
