//! The x86-64 micro-kernels: a tile of C held in registers, one accumulator vector per
//! row and 16 (AVX-512) or 8 (AVX2) columns, summed along `k` with FMA. Partial tiles
//! use the same code with fewer rows (a const parameter) and masked column lanes.

use std::arch::x86_64::*;

use super::{KC, Tile};

/// The AVX-512 tile: rows × columns (two 16-lane vectors per row).
pub(super) const TILE_512: (usize, usize) = (8, 32);
/// The AVX2 tile: rows × columns (two 8-lane vectors per row).
pub(super) const TILE_256: (usize, usize) = (6, 16);

/// A `rows × cols` tile with AVX-512 (`rows`, `cols` within [`TILE_512`]).
///
/// # Safety
/// The CPU has AVX-512F and FMA; the tile lies inside A, B and C.
pub(super) unsafe fn tile_512(t: &Tile, rows: usize, cols: usize) {
    macro_rules! go {
        ($($r:literal)*) => {
            // SAFETY: the caller's contract.
            match (rows, cols > 16) {
                $(
                    ($r, false) => unsafe { t512::<$r, 1>(t, cols) },
                    ($r, true) => unsafe { t512::<$r, 2>(t, cols) },
                )*
                _ => unreachable!("a tile has at most {} rows", TILE_512.0),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8)
}

/// The lanes of vector `v` (16 lanes each) that hold one of `cols` columns.
fn mask16(cols: usize, v: usize) -> __mmask16 {
    let lanes = cols.saturating_sub(16 * v).min(16);
    ((1u32 << lanes) - 1) as __mmask16
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn t512<const R: usize, const V: usize>(t: &Tile, cols: usize) {
    let mut masks = [0 as __mmask16; V];
    for (v, m) in masks.iter_mut().enumerate() {
        *m = mask16(cols, v);
    }
    let mut p0 = 0;
    loop {
        let p1 = (p0 + KC).min(t.k);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in p0..p1 {
            // SAFETY (whole block): the caller's contract; masked-off lanes are not
            // read or written.
            unsafe {
                let bp = t.b.offset(p as isize * t.ldb);
                let mut bv = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    bv[v] = _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v));
                }
                let ap = t.a.offset(p as isize * t.csa);
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ap.offset(i as isize * t.rsa));
                    for v in 0..V {
                        row[v] = _mm512_fmadd_ps(x, bv[v], row[v]);
                    }
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for v in 0..V {
                // SAFETY: as above.
                unsafe {
                    let cp = t.c.offset(i as isize * t.ldc).add(16 * v);
                    let x = if p0 == 0 {
                        row[v]
                    } else {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], cp), row[v])
                    };
                    _mm512_mask_storeu_ps(cp, masks[v], x);
                }
            }
        }
        p0 = p1;
        if p0 >= t.k {
            break;
        }
    }
}

/// A `rows × cols` tile with AVX2 (`rows`, `cols` within [`TILE_256`]).
///
/// # Safety
/// The CPU has AVX2 and FMA; the tile lies inside A, B and C.
pub(super) unsafe fn tile_256(t: &Tile, rows: usize, cols: usize) {
    macro_rules! go {
        ($($r:literal)*) => {
            // SAFETY: the caller's contract.
            match (rows, cols > 8) {
                $(
                    ($r, false) => unsafe { t256::<$r, 1>(t, cols) },
                    ($r, true) => unsafe { t256::<$r, 2>(t, cols) },
                )*
                _ => unreachable!("a tile has at most {} rows", TILE_256.0),
            }
        };
    }
    go!(1 2 3 4 5 6)
}

/// The lane mask (all bits set in a lane that holds one of `cols` columns) of vector
/// `v` (8 lanes each).
#[target_feature(enable = "avx2")]
fn mask8(cols: usize, v: usize) -> __m256i {
    let lanes = cols.saturating_sub(8 * v).min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(lanes),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

#[target_feature(enable = "avx2,fma")]
unsafe fn t256<const R: usize, const V: usize>(t: &Tile, cols: usize) {
    let mut masks = [_mm256_setzero_si256(); V];
    for (v, m) in masks.iter_mut().enumerate() {
        *m = mask8(cols, v);
    }
    let full = cols == 8 * V;
    let mut p0 = 0;
    loop {
        let p1 = (p0 + KC).min(t.k);
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for p in p0..p1 {
            // SAFETY (whole block): the caller's contract; masked-off lanes are not
            // read or written.
            unsafe {
                let bp = t.b.offset(p as isize * t.ldb);
                let mut bv = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    bv[v] = if full {
                        _mm256_loadu_ps(bp.add(8 * v))
                    } else {
                        _mm256_maskload_ps(bp.add(8 * v), masks[v])
                    };
                }
                let ap = t.a.offset(p as isize * t.csa);
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*ap.offset(i as isize * t.rsa));
                    for v in 0..V {
                        row[v] = _mm256_fmadd_ps(x, bv[v], row[v]);
                    }
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for v in 0..V {
                // SAFETY: as above.
                unsafe {
                    let cp = t.c.offset(i as isize * t.ldc).add(8 * v);
                    let x = if p0 == 0 {
                        row[v]
                    } else {
                        _mm256_add_ps(_mm256_maskload_ps(cp, masks[v]), row[v])
                    };
                    _mm256_maskstore_ps(cp, masks[v], x);
                }
            }
        }
        p0 = p1;
        if p0 >= t.k {
            break;
        }
    }
}
