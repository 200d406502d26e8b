use super::*;
use crate::rng::Rng;

/// The micro-kernels this CPU can run (the portable one always).
fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2") {
            v.push(Isa::Avx2);
        }
        if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx512f") {
            v.push(Isa::Avx512);
        }
    }
    v
}

fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_u32() as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32)
        .collect()
}

fn pick(rng: &mut Rng, xs: &[usize]) -> usize {
    xs[rng.next_u32() as usize % xs.len()]
}

/// `A` stored `m × k` (or transposed, `k × m`) and its view.
fn a_view(a: &[f32], m: usize, k: usize, transposed: bool) -> Mat {
    let (rs, cs) = if transposed { (1, m) } else { (k, 1) };
    Mat {
        ptr: a.as_ptr(),
        rs: rs as isize,
        cs: cs as isize,
    }
}

/// The product in f64, and for each element the sum of the terms' magnitudes (the
/// scale of its rounding error).
fn reference(a: Mat, b: Mat, m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut c, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                // SAFETY: the views address the test's buffers.
                let (x, y) = unsafe {
                    (
                        *a.ptr.offset(i as isize * a.rs + p as isize * a.cs) as f64,
                        *b.ptr.offset(p as isize * b.rs + j as isize * b.cs) as f64,
                    )
                };
                c[i * n + j] += x * y;
                mag[i * n + j] += (x * y).abs();
            }
        }
    }
    (c, mag)
}

#[test]
fn random_shapes_match_the_f64_reference_and_matrixmultiply_bit_for_bit() {
    let mut rng = Rng::new(7, 11);
    let ms = [1, 2, 3, 7, 8, 9, 17, 63, 64, 65, 130];
    let ks = [0, 1, 5, 16, 33, 255, 256, 257, 600];
    let ns = [1, 3, 8, 15, 16, 17, 31, 32, 33, 70];
    for case in 0..80 {
        let (m, k, n) = (
            pick(&mut rng, &ms),
            pick(&mut rng, &ks),
            pick(&mut rng, &ns),
        );
        let (ta, tb) = (case % 3 == 1, case % 4 == 2);
        let a = values(&mut rng, m * k);
        let b = values(&mut rng, k * n);
        let av = a_view(&a, m, k, ta);
        let bv = if tb {
            Mat {
                ptr: b.as_ptr(),
                rs: 1,
                cs: k as isize,
            }
        } else {
            Mat {
                ptr: b.as_ptr(),
                rs: n as isize,
                cs: 1,
            }
        };
        let (want, mag) = reference(av, bv, m, k, n);
        let mut mm = vec![0f32; m * n];
        // SAFETY: the views and the output cover the test's buffers.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                av.ptr,
                av.rs,
                av.cs,
                bv.ptr,
                bv.rs,
                bv.cs,
                0.0,
                mm.as_mut_ptr(),
                n as isize,
                1,
            )
        };
        for isa in isas() {
            let mut c = vec![f32::NAN; m * n];
            let mut buf = Vec::new();
            // SAFETY: as above.
            unsafe {
                let (b, ldb) = contiguous_b(bv, k, n, &mut buf);
                let g = Cols {
                    n,
                    b,
                    ldb,
                    c: c.as_mut_ptr(),
                };
                rows(isa, k, av, &[g], 0, m, &|_, _, _| {});
            }
            for e in 0..m * n {
                let tol = mag[e] * 2.0 * k as f64 * f32::EPSILON as f64 + 1e-30;
                assert!(
                    (c[e] as f64 - want[e]).abs() <= tol,
                    "{isa:?} m={m} k={k} n={n} ta={ta} tb={tb} element {e}: {} vs {}",
                    c[e],
                    want[e]
                );
            }
            if isa == super::isa() && isa != Isa::Portable {
                let same = c.iter().zip(&mm).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{isa:?} m={m} k={k} n={n}: bits differ from matrixmultiply"
                );
            }
        }
    }
}

#[test]
fn merged_groups_run_each_epilogue_once_per_row_block_over_finished_rows() {
    let mut rng = Rng::new(3, 5);
    let (m, k) = (2 * ROW_BLOCK + 13, 40);
    let widths = [64, 17, 1];
    let a = values(&mut rng, m * k);
    let bs: Vec<Vec<f32>> = widths.iter().map(|&n| values(&mut rng, k * n)).collect();
    let cs: Vec<std::cell::RefCell<Vec<f32>>> = widths
        .iter()
        .map(|&n| std::cell::RefCell::new(vec![f32::NAN; m * n]))
        .collect();
    for isa in isas() {
        let groups: Vec<Cols> = widths
            .iter()
            .zip(&bs)
            .zip(&cs)
            .map(|((&n, b), c)| Cols {
                n,
                b: b.as_ptr(),
                ldb: n as isize,
                c: c.borrow_mut().as_mut_ptr(),
            })
            .collect();
        let seen = std::cell::RefCell::new(vec![vec![0usize; m]; widths.len()]);
        // The "epilogue" adds 1 to each finished element of its group's rows.
        let done = |g: usize, lo: usize, hi: usize| {
            assert!(hi - lo <= ROW_BLOCK && lo < hi);
            let n = widths[g];
            let mut c = cs[g].borrow_mut();
            for i in lo..hi {
                seen.borrow_mut()[g][i] += 1;
                for x in &mut c[i * n..(i + 1) * n] {
                    *x += 1.0;
                }
            }
        };
        // Two parts, as two threads would split the rows.
        let half = m / 2;
        // SAFETY: the views and the outputs cover the test's buffers.
        unsafe {
            rows(isa, k, a_view(&a, m, k, false), &groups, 0, half, &done);
            rows(isa, k, a_view(&a, m, k, false), &groups, half, m, &done);
        }
        assert!(seen.borrow().iter().flatten().all(|&s| s == 1), "{isa:?}");
        for (g, &n) in widths.iter().enumerate() {
            let bv = Mat {
                ptr: bs[g].as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            let (want, mag) = reference(a_view(&a, m, k, false), bv, m, k, n);
            let c = cs[g].borrow();
            for e in 0..m * n {
                let tol = (mag[e] * 2.0 * k as f64 + 4.0) * f32::EPSILON as f64;
                assert!(
                    (c[e] as f64 - 1.0 - want[e]).abs() <= tol,
                    "{isa:?} group {g}"
                );
            }
        }
    }
}

#[test]
fn long_k_wide_b_and_few_rows_with_a_copied_b_go_to_matrixmultiply() {
    for isa in isas().into_iter().filter(|&i| i != Isa::Portable) {
        assert!(prefer(isa, 4096, 64, 64, true));
        assert!(prefer(isa, 4096, 64, 64, false));
        assert!(!prefer(isa, 128, 256, 256, false));
        assert!(prefer(isa, 128, 256, 256, true));
        assert!(!prefer(isa, 64, 4096, 64, true));
        assert!(!prefer(isa, 1024, 784, 256, true));
    }
    assert!(!prefer(Isa::Portable, 4096, 64, 64, true));
}
