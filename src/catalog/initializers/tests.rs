//! The initializers against Keras's definitions and their distributions.

use super::*;
use ndarray::Array2;

fn stats(v: &ArrayD<f32>) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn rng() -> Rng {
    Rng::for_weight(0, "test/kernel", None)
}

fn named(name: &str) -> Initializer {
    Initializer::from_value(&Value::Named(name.into(), Box::default()))
        .unwrap()
        .0
}

#[test]
fn fans_follow_keras() {
    assert_eq!(compute_fans(&[]), (1.0, 1.0));
    assert_eq!(compute_fans(&[7]), (7.0, 7.0));
    assert_eq!(compute_fans(&[784, 256]), (784.0, 256.0));
    // conv2d [kh, kw, in, out]: receptive field 9.
    assert_eq!(compute_fans(&[3, 3, 16, 32]), (144.0, 288.0));
    // conv1d [k, in, out].
    assert_eq!(compute_fans(&[5, 8, 4]), (40.0, 20.0));
    // multi_head_attention query kernel [d_model, heads, key_dim]: Keras's rank > 2
    // rule treats d_model as the receptive field.
    assert_eq!(compute_fans(&[64, 4, 16]), (256.0, 1024.0));
}

#[test]
fn defaults_come_from_the_schema() {
    assert_eq!(
        named("random_uniform"),
        Initializer::RandomUniform {
            minval: -0.05,
            maxval: 0.05
        }
    );
    assert_eq!(
        named("truncated_normal"),
        Initializer::TruncatedNormal {
            mean: 0.0,
            stddev: 0.05
        }
    );
    assert_eq!(named("orthogonal"), Initializer::Orthogonal { gain: 1.0 });
    assert_eq!(named("constant"), Initializer::Constant(0.0));
    assert_eq!(
        named("variance_scaling"),
        Initializer::VarianceScaling {
            scale: 1.0,
            mode: FanMode::FanIn,
            distribution: Distribution::TruncatedNormal
        }
    );
    assert_eq!(named("uniform"), named("random_uniform"));
    assert!(Initializer::from_value(&Value::Named("nope".into(), Box::default())).is_err());
    assert!(Initializer::from_value(&Value::Int(3)).is_err());
}

#[test]
fn constant_initializers() {
    let z = Initializer::Zeros.sample(&[3, 4], &mut rng()).unwrap();
    assert!(z.iter().all(|&x| x == 0.0) && z.shape() == [3, 4]);
    let o = Initializer::Ones.sample(&[5], &mut rng()).unwrap();
    assert!(o.iter().all(|&x| x == 1.0));
    let c = Initializer::Constant(0.25)
        .sample(&[2, 2, 2], &mut rng())
        .unwrap();
    assert!(c.iter().all(|&x| x == 0.25));
    let s = Initializer::Ones.sample(&[], &mut rng()).unwrap();
    assert_eq!(s.len(), 1);
    let e = Initializer::Ones.sample(&[0, 3], &mut rng()).unwrap();
    assert_eq!(e.len(), 0);
}

// Statistics below use n = 100,000 or more draws. For a uniform on ±a the standard
// error of the mean is a/sqrt(3n) and of the standard deviation about
// a·sqrt(4/45/n)/(2·a/sqrt(3)); for a normal, σ/sqrt(n) and σ/sqrt(2n). Tolerances
// are five standard errors (the draws are seeded, so the tests are deterministic;
// five σ says a correct implementation passes for essentially every seed).

#[test]
fn uniform_bounds_and_moments() {
    let (lo, hi) = (-0.05, 0.05);
    let n = 200_000;
    let v = Initializer::RandomUniform {
        minval: lo,
        maxval: hi,
    }
    .sample(&[n], &mut rng())
    .unwrap();
    assert!(v.iter().all(|&x| x >= lo as f32 && x < hi as f32));
    let (mean, std) = stats(&v);
    let se_mean = hi / (3.0 * n as f64).sqrt();
    assert!(mean.abs() < 5.0 * se_mean, "mean {mean}");
    let want = hi / 3f64.sqrt();
    assert!(
        (std - want).abs() < 5.0 * want / (n as f64).sqrt(),
        "std {std}"
    );
    // The draws reach close to both ends.
    let max = v.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let min = v.iter().cloned().fold(f32::MAX, f32::min) as f64;
    assert!(hi - max < 1e-4 && min - lo < 1e-4);
    // Asymmetric ranges.
    let w = Initializer::RandomUniform {
        minval: 2.0,
        maxval: 3.0,
    }
    .sample(&[50_000], &mut rng())
    .unwrap();
    assert!(w.iter().all(|&x| (2.0..3.0).contains(&x)));
    assert!((stats(&w).0 - 2.5).abs() < 5.0 / (3.0f64 * 50_000.0).sqrt() * 0.5);
}

#[test]
fn uniform_never_reaches_maxval_even_when_rounding_would() {
    // A range of two f32 values: draws above 1 - 3e-8 round to 1.0 in f32; none
    // may equal it.
    let hi = 1.0f64;
    let lo = 1.0 - 1e-7;
    let v = Initializer::RandomUniform {
        minval: lo,
        maxval: hi,
    }
    .sample(&[10_000], &mut rng())
    .unwrap();
    assert!(v.iter().all(|&x| x < 1.0 && x >= (lo as f32)));
    assert!(v.iter().any(|&x| x == 1.0f32.next_down()));
    // Bounds equal in f32: the one value there is.
    let v = Initializer::RandomUniform {
        minval: 1.0 - 1e-9,
        maxval: 1.0,
    }
    .sample(&[10], &mut rng())
    .unwrap();
    assert!(v.iter().all(|&x| x == 1.0));
}

#[test]
fn normal_moments() {
    let n = 200_000;
    let v = Initializer::RandomNormal {
        mean: 1.0,
        stddev: 0.5,
    }
    .sample(&[400, 500], &mut rng())
    .unwrap();
    let (mean, std) = stats(&v);
    assert!((mean - 1.0).abs() < 5.0 * 0.5 / (n as f64).sqrt(), "{mean}");
    assert!(
        (std - 0.5).abs() < 5.0 * 0.5 / (2.0 * n as f64).sqrt(),
        "{std}"
    );
    // An untruncated normal does go beyond 2σ (4.6% of draws).
    let beyond = v.iter().filter(|&&x| (x as f64 - 1.0).abs() > 1.0).count();
    let frac = beyond as f64 / n as f64;
    assert!((frac - 0.0455).abs() < 0.003, "{frac}");
}

#[test]
fn truncated_normal_stays_within_two_stddev() {
    let (mean, stddev) = (0.5, 0.1);
    let n = 200_000;
    let v = Initializer::TruncatedNormal { mean, stddev }
        .sample(&[n], &mut rng())
        .unwrap();
    let (lo, hi) = ((mean - 2.0 * stddev) as f32, (mean + 2.0 * stddev) as f32);
    assert!(v.iter().all(|&x| x >= lo && x <= hi));
    let (m, s) = stats(&v);
    // A standard normal truncated at ±2 has standard deviation 0.8796.
    let want = stddev * TRUNCATED_STDDEV;
    assert!((m - mean).abs() < 5.0 * want / (n as f64).sqrt(), "{m}");
    assert!(
        (s - want).abs() < 5.0 * want / (2.0 * n as f64).sqrt(),
        "{s}"
    );
}

#[test]
fn glorot_uniform_limit_is_exact() {
    for shape in [vec![784, 256], vec![3, 3, 16, 32], vec![64, 4, 16]] {
        let (fi, fo) = compute_fans(&shape);
        let limit = (6.0 / (fi + fo)).sqrt();
        let v = named("glorot_uniform").sample(&shape, &mut rng()).unwrap();
        assert_eq!(v.shape(), shape.as_slice());
        let l = limit as f32;
        assert!(v.iter().all(|&x| x >= -l && x < l), "{shape:?}");
        let max = v.iter().fold(0f32, |a, &x| a.max(x.abs())) as f64;
        assert!(max > limit * 0.99, "{shape:?}: max {max}, limit {limit}");
        let (mean, std) = stats(&v);
        let n = v.len() as f64;
        assert!(mean.abs() < 5.0 * limit / (3.0 * n).sqrt());
        let want = limit / 3f64.sqrt();
        assert!(
            (std - want).abs() < 5.0 * want / n.sqrt(),
            "{std} vs {want}"
        );
    }
}

#[test]
fn he_lecun_and_glorot_normal_are_scaled_truncated_normals() {
    let shape = [512, 400];
    let (fi, fo) = compute_fans(&shape);
    for (name, var) in [
        ("he_normal", 2.0 / fi),
        ("lecun_normal", 1.0 / fi),
        ("glorot_normal", 2.0 / (fi + fo)),
    ] {
        let v = named(name).sample(&shape, &mut rng()).unwrap();
        let stddev = var.sqrt() / TRUNCATED_STDDEV;
        let bound = (2.0 * stddev) as f32;
        assert!(v.iter().all(|&x| x.abs() <= bound), "{name}");
        let (mean, std) = stats(&v);
        let n = v.len() as f64;
        // The truncation brings the standard deviation back to sqrt(var).
        assert!(
            mean.abs() < 5.0 * var.sqrt() / n.sqrt(),
            "{name} mean {mean}"
        );
        assert!(
            (std - var.sqrt()).abs() < 5.0 * var.sqrt() / (2.0 * n).sqrt(),
            "{name}: std {std}, want {}",
            var.sqrt()
        );
    }
    for (name, var) in [("he_uniform", 2.0 / fi), ("lecun_uniform", 1.0 / fi)] {
        let v = named(name).sample(&shape, &mut rng()).unwrap();
        let limit = (3.0 * var).sqrt() as f32;
        assert!(v.iter().all(|&x| x >= -limit && x < limit), "{name}");
        let std = stats(&v).1;
        assert!((std - var.sqrt()).abs() < 0.01 * var.sqrt(), "{name} {std}");
    }
}

#[test]
fn variance_scaling_modes() {
    let shape = [300, 100];
    let n = 30_000.0;
    for (mode, fan, dist) in [
        (FanMode::FanIn, 300.0, Distribution::UntruncatedNormal),
        (FanMode::FanOut, 100.0, Distribution::UntruncatedNormal),
        (FanMode::FanAvg, 200.0, Distribution::Uniform),
        (FanMode::FanOut, 100.0, Distribution::TruncatedNormal),
    ] {
        let init = Initializer::VarianceScaling {
            scale: 3.0,
            mode,
            distribution: dist,
        };
        let v = init.sample(&shape, &mut rng()).unwrap();
        let want = (3.0f64 / fan).sqrt();
        let std = stats(&v).1;
        assert!(
            (std - want).abs() < 5.0 * want / (2.0f64 * n).sqrt() * 1.2,
            "{mode:?} {dist:?}: {std} vs {want}"
        );
    }
    // Fans below 1 are taken as 1 (Keras's max(1, fan)).
    let v = Initializer::VarianceScaling {
        scale: 1.0,
        mode: FanMode::FanIn,
        distribution: Distribution::Uniform,
    }
    .sample(&[0, 5], &mut rng())
    .unwrap();
    assert_eq!(v.shape(), &[0, 5]);
}

fn max_identity_error(m: &Array2<f64>) -> f64 {
    let g = m.dot(&m.t());
    let mut worst: f64 = 0.0;
    for ((i, j), x) in g.indexed_iter() {
        let want = if i == j { 1.0 } else { 0.0 };
        worst = worst.max((x - want).abs());
    }
    worst
}

fn as_matrix(v: &ArrayD<f32>) -> Array2<f64> {
    let cols = *v.shape().last().unwrap();
    let rows = v.len() / cols;
    Array2::from_shape_vec((rows, cols), v.iter().map(|&x| x as f64).collect()).unwrap()
}

#[test]
fn orthogonal_is_orthonormal() {
    // An LSTM's recurrent kernel [u, 4u]: fewer rows than columns, so the rows are
    // orthonormal (Q Qᵀ = I).
    let v = named("orthogonal").sample(&[32, 128], &mut rng()).unwrap();
    let m = as_matrix(&v);
    assert!(max_identity_error(&m) < 1e-5);
    // Tall: the columns are orthonormal (Qᵀ Q = I).
    let v = named("orthogonal").sample(&[128, 32], &mut rng()).unwrap();
    let m = as_matrix(&v);
    assert!(max_identity_error(&m.t().to_owned()) < 1e-5);
    // Square, and a rank-3 shape flattened to (prod(shape[:-1]), shape[-1]).
    for shape in [vec![50, 50], vec![4, 5, 20]] {
        let v = named("orthogonal").sample(&shape, &mut rng()).unwrap();
        assert_eq!(v.shape(), shape.as_slice());
        let m = as_matrix(&v);
        assert!(max_identity_error(&m.t().to_owned()) < 1e-5, "{shape:?}");
    }
    // gain scales: Q Qᵀ = gain² I.
    let v = Initializer::Orthogonal { gain: 2.0 }
        .sample(&[16, 64], &mut rng())
        .unwrap();
    let m = as_matrix(&v) / 2.0;
    assert!(max_identity_error(&m) < 1e-5);
    // A vector (Keras refuses rank < 2; kiln gives a random unit vector).
    let v = named("orthogonal").sample(&[10], &mut rng()).unwrap();
    let norm: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6);
}

#[test]
fn householder_q_reconstructs_with_positive_r() {
    let mut r = rng();
    let a = Array2::from_shape_fn((7, 4), |_| r.normal());
    let q = householder_q(a.clone()).unwrap();
    // R = Qᵀ A must be upper triangular with a non-negative diagonal, and Q R = A.
    let rr = q.t().dot(&a);
    for ((i, j), x) in rr.indexed_iter() {
        if i > j {
            assert!(x.abs() < 1e-12);
        }
        if i == j {
            assert!(*x > 0.0);
        }
    }
    let back = q.dot(&rr);
    assert!((back - &a).iter().all(|d| d.abs() < 1e-12));
    // A zero column does not break it.
    let mut z = a.clone();
    z.column_mut(1).fill(0.0);
    assert!(householder_q(z).unwrap().iter().all(|x| x.is_finite()));
    assert!(householder_q(Array2::zeros((2, 3))).is_err());
}

#[test]
fn same_stream_same_bits_other_stream_other_bits() {
    let init = named("glorot_uniform");
    let a = init.sample(&[20, 30], &mut rng()).unwrap();
    let b = init.sample(&[20, 30], &mut rng()).unwrap();
    assert!(
        a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
    let c = init
        .sample(&[20, 30], &mut Rng::for_weight(1, "test/kernel", None))
        .unwrap();
    assert!(a.iter().zip(c.iter()).any(|(x, y)| x != y));
}

#[test]
fn huge_shapes_fail_cleanly() {
    assert!(
        Initializer::Zeros
            .sample(&[usize::MAX, 2], &mut rng())
            .is_err()
    );
    assert!(
        Initializer::Ones
            .sample(&[1 << 40, 1 << 20], &mut rng())
            .is_err()
    );
}

/// The Householder QR kiln used before faer, one reflection at a time (cubic, and slow
/// past a few hundred columns): the oracle the blocked QR must agree with up to rounding.
fn naive_householder_q(mut r: Array2<f64>) -> Array2<f64> {
    use ndarray::{Array1, s};
    let (m, n) = r.dim();
    let mut reflectors: Vec<Array1<f64>> = Vec::with_capacity(n);
    let mut diag = Vec::with_capacity(n);
    for k in 0..n {
        let x = r.slice(s![k.., k]);
        let norm = x.dot(&x).sqrt();
        let alpha = if x[0] >= 0.0 { -norm } else { norm };
        let mut v = x.to_owned();
        v[0] -= alpha;
        let vnorm = v.dot(&v).sqrt();
        if vnorm == 0.0 {
            diag.push(r[[k, k]]);
            reflectors.push(Array1::zeros(m - k));
            continue;
        }
        v /= vnorm;
        let mut block = r.slice_mut(s![k.., k..]);
        let w = v.dot(&block);
        for (i, mut row) in block.rows_mut().into_iter().enumerate() {
            row.scaled_add(-2.0 * v[i], &w);
        }
        diag.push(alpha);
        reflectors.push(v);
    }
    let mut q = Array2::<f64>::zeros((m, n));
    for i in 0..n {
        q[[i, i]] = 1.0;
    }
    for (k, v) in reflectors.iter().enumerate().rev() {
        let mut block = q.slice_mut(s![k.., ..]);
        let w = v.dot(&block);
        for (i, mut row) in block.rows_mut().into_iter().enumerate() {
            row.scaled_add(-2.0 * v[i], &w);
        }
    }
    for (j, d) in diag.iter().enumerate() {
        if *d < 0.0 {
            q.column_mut(j).mapv_inplace(|x| -x);
        }
    }
    q
}

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Tolerance of the blocked QR against the naive one: entries of Q are at most 1, and
/// two backward-stable QRs of these well-conditioned Gaussian matrices agree to a few
/// hundred ulps of 1 (f64 ulp 2.2e-16), far below f32's rounding (6e-8).
const QR_TOLERANCE: f64 = 1e-12;

/// Tolerance of the float32 CholeskyQR against the float64 Householder QR: f32's unit
/// roundoff (6e-8) times κ(A)² (κ ≈ 3 for tall Gaussian matrices, and the check refuses
/// much worse) times a modest factor for the Gram matrix's sums, about 1e-6 in absolute
/// terms (entries are at most 1, about 1/√m for tall A). Measured on the shapes below:
/// at most 1.9e-7 for tall A (8192 × 2048: 2.7e-8, entries ≤ 0.07), 5.7e-7 for the small
/// square ones that pass the check.
const F32_QR_TOLERANCE: f64 = 1e-6;

#[test]
fn blocked_q_equals_the_naive_q() {
    // Square, tall and the (max, min) matrices of wide shapes (3 × 5 → 5 × 3, 64 × 256 →
    // 256 × 64), sizes that cross faer's block sizes (4, 8, 32, 48, 64) and leave partial
    // blocks.
    let shapes = [
        (1, 1),
        (3, 3),
        (5, 3),
        (9, 1),
        (33, 33),
        (40, 7),
        (64, 64),
        (100, 37),
        (128, 128),
        (256, 64),
        (300, 130),
    ];
    for seed in [0, 1, 7, 12345] {
        for &(m, n) in &shapes {
            let mut r = Rng::new(seed, (m * 1000 + n) as u64);
            let a = Array2::from_shape_fn((m, n), |_| r.normal());
            let new = householder_q(a.clone()).unwrap();
            let old = naive_householder_q(a);
            let diff = max_abs_diff(&new, &old);
            assert!(diff <= QR_TOLERANCE, "seed {seed}, {m} × {n}: {diff:e}");
        }
    }
}

#[test]
fn orthogonal_samples_equal_the_naive_ones_up_to_rounding() {
    // The whole initializer (draw, QR, transpose for wide shapes, gain, f32) against the
    // same steps with the naive f64 QR: equal to within one f32 rounding of the f64 values
    // plus the float32 CholeskyQR's rounding (tall, square and wide shapes).
    for shape in [[3, 5], [5, 3], [64, 256], [256, 64], [96, 96]] {
        for seed in [0, 3, 99] {
            let gain = 1.5;
            let init = Initializer::Orthogonal { gain };
            let new = init.sample(&shape, &mut Rng::new(seed, 11)).unwrap();
            let (rows, cols) = (shape[0], shape[1]);
            let (m, n) = (rows.max(cols), rows.min(cols));
            let mut r = Rng::new(seed, 11);
            let a = Array2::from_shape_fn((m, n), |_| r.normal());
            let q = naive_householder_q(a);
            let q = if rows < cols { q.reversed_axes() } else { q };
            for (x, y) in new.iter().zip(q.iter()) {
                let want = gain * y;
                let err = (*x as f64 - want).abs();
                assert!(
                    err <= want.abs() * f32::EPSILON as f64 + gain * F32_QR_TOLERANCE,
                    "{shape:?}: {x} vs {want}"
                );
            }
        }
    }
}

#[test]
fn blocked_q_is_orthogonal_at_lstm_size() {
    // A 512-unit LSTM's recurrent kernel [512, 2048] is the transposed Q of a 2048 × 512
    // Gaussian: QᵀQ = I to f64 rounding, and the f32 sample's rows orthonormal.
    let mut r = Rng::new(5, 5);
    let a = Array2::from_shape_fn((2048, 512), |_| r.normal());
    let q = householder_q(a.clone()).unwrap();
    assert!(max_identity_error(&q.t().to_owned()) < 1e-13);
    // CholeskyQR gives the same Q there up to float32 rounding.
    let fast = cholesky(&a, 2).expect("a tall Gaussian is well-conditioned");
    assert!(max_abs_diff(&fast, &q) <= F32_QR_TOLERANCE);
    let v = named("orthogonal")
        .sample(&[512, 2048], &mut rng())
        .unwrap();
    assert!(max_identity_error(&as_matrix(&v)) < 1e-5);
}

/// CholeskyQR's Q of `a` (row-major in, as the initializer lays A out), or `None` when
/// it falls back.
fn cholesky(a: &Array2<f64>, threads: usize) -> Option<Array2<f64>> {
    let (m, n) = a.dim();
    let view = MatRef::from_row_major_slice(a.as_slice().unwrap(), m, n);
    let q = qr::cholesky_q(view, threads).unwrap()?;
    Some(Array2::from_shape_fn((m, n), |(i, j)| q[j * m + i] as f64))
}

#[test]
fn cholesky_q_equals_householder_q() {
    // Tall shapes (every one of kiln's recurrent kernels: [u, 3u], [u, 4u]) take
    // CholeskyQR, whose Q equals Householder's up to rounding; shapes across the panel
    // width (128) and with a partial last panel.
    let tall = [
        (2, 1),
        (9, 1),
        (12, 4),
        (40, 7),
        (96, 32),
        (300, 130),
        (520, 130),
        (1000, 300),
    ];
    for seed in [0, 1, 7] {
        for &(m, n) in &tall {
            let mut r = Rng::new(seed, (m * 1000 + n) as u64);
            let a = Array2::from_shape_fn((m, n), |_| r.normal());
            let fast = cholesky(&a, 3).unwrap_or_else(|| panic!("{m} × {n} fell back"));
            let diff = max_abs_diff(&fast, &householder_q(a).unwrap());
            assert!(diff <= F32_QR_TOLERANCE, "seed {seed}, {m} × {n}: {diff:e}");
        }
    }
    // Square ones are ill-conditioned: whichever way is taken, the Q is Householder's up
    // to rounding (CholeskyQR's float32 rounding only when it verified itself, else
    // Householder's own Q).
    for seed in [0, 1, 7] {
        for n in [1, 2, 3, 5, 8, 33, 64, 128, 200] {
            let mut r = Rng::new(seed, n as u64);
            let a = Array2::from_shape_fn((n, n), |_| r.normal());
            let view = MatRef::from_row_major_slice(a.as_slice().unwrap(), n, n);
            let q = qr::thin_q(view, 2).unwrap();
            let q = Array2::from_shape_fn((n, n), |(i, j)| q.at(j * n + i));
            let tolerance = match cholesky(&a, 2) {
                Some(_) => F32_QR_TOLERANCE,
                None => QR_TOLERANCE,
            };
            let diff = max_abs_diff(&q, &householder_q(a).unwrap());
            assert!(diff <= tolerance, "seed {seed}, {n} × {n}: {diff:e}");
        }
    }
}

#[test]
fn cholesky_q_refuses_what_it_cannot_do() {
    // A rank-deficient A: the Cholesky factorization fails, Householder's Q is used.
    let mut r = Rng::new(3, 3);
    let mut a = Array2::from_shape_fn((50, 10), |_| r.normal());
    a.column_mut(4).fill(0.0);
    assert!(cholesky(&a, 1).is_none());
    // Nearly dependent columns (κ ≈ 1e7): the factorization fails or its Q is not
    // orthonormal to float32 rounding, and the check sends it back.
    let mut b = Array2::from_shape_fn((50, 10), |_| r.normal());
    let c0 = b.column(0).to_owned();
    let c1 = b.column(1).to_owned() * 1e-7;
    b.column_mut(1).assign(&(&c0 + &c1));
    assert!(cholesky(&b, 1).is_none());
    let view = MatRef::from_row_major_slice(b.as_slice().unwrap(), 50, 10);
    let q = qr::thin_q(view, 1).unwrap();
    let q = Array2::from_shape_fn((50, 10), |(i, j)| q.at(j * 50 + i));
    assert!(max_identity_error(&q.t().to_owned()) < 1e-13);
    assert!(max_abs_diff(&q, &householder_q(b).unwrap()) <= QR_TOLERANCE);
}

#[test]
fn orthogonal_bits_do_not_depend_on_threads() {
    // Wide (an LSTM-like [u, 4u]) and tall, with several panels: the same bits on 1, 2,
    // 3 and 8 threads.
    for shape in [[300, 1200], [700, 260]] {
        let draw = |threads| orthogonal_with(&shape, 1.0, &mut Rng::new(9, 9), threads).unwrap();
        let one = draw(1);
        for threads in [2, 3, 8] {
            let other = draw(threads);
            assert!(
                one.iter()
                    .zip(&other)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{shape:?} on {threads} threads"
            );
        }
    }
}
