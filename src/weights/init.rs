//! Keras 3's initializers (`keras/src/initializers/`), with kiln's own random streams:
//! the same distributions, bounds, fans and shapes as Keras; other numbers, since the
//! generator differs.
//!
//! Values are computed in f64 and rounded once to f32, and rounding is monotone, so the
//! bounds hold exactly in f32: uniform draws lie in `[f32(minval), f32(maxval))`,
//! truncated normals in `[f32(mean - 2·stddev), f32(mean + 2·stddev)]`.

use ndarray::{Array1, Array2, ArrayD, IxDyn, s};

use super::rng::Rng;
use crate::args::{self, INITIALIZERS, Value};

/// Keras's `0.87962566103423978`: the standard deviation of a standard normal truncated
/// to ±2, by which `variance_scaling` divides to keep the variance it asks for.
pub const TRUNCATED_STDDEV: f64 = 0.879_625_661_034_239_8;

/// Which fan `variance_scaling` divides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    FanIn,
    FanOut,
    FanAvg,
}

/// The distribution `variance_scaling` draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    TruncatedNormal,
    UntruncatedNormal,
    Uniform,
}

/// A Keras initializer with its arguments (the `seed` argument is kept apart: it chooses
/// the random stream, see [`super::rng::Rng::for_weight`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    Zeros,
    Ones,
    Constant(f64),
    RandomUniform {
        minval: f64,
        maxval: f64,
    },
    RandomNormal {
        mean: f64,
        stddev: f64,
    },
    /// Normal, redrawn while more than two standard deviations from the mean.
    TruncatedNormal {
        mean: f64,
        stddev: f64,
    },
    /// Also glorot_*, he_*, lecun_* (Keras defines them as this).
    VarianceScaling {
        scale: f64,
        mode: FanMode,
        distribution: Distribution,
    },
    Orthogonal {
        gain: f64,
    },
}

/// An argument of an initializer: the spec's value, else the schema's default (a
/// default initializer such as `glorot_uniform` carries no arguments at all).
fn arg(name: &str, args: &args::Args, key: &str) -> Value {
    match args.get(key) {
        Value::Null => {}
        v => return v.clone(),
    }
    let schema = INITIALIZERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or(&[]);
    match schema.iter().find(|a| a.name == key).map(|a| a.default) {
        Some(args::Default::Float(f)) => Value::Float(f),
        Some(args::Default::Int(i)) => Value::Int(i),
        Some(args::Default::Str(s)) => Value::Str(s.to_string()),
        _ => Value::Null,
    }
}

fn float(name: &str, args: &args::Args, key: &str) -> Result<f64, String> {
    match arg(name, args, key) {
        Value::Float(f) => Ok(f),
        Value::Int(i) => Ok(i as f64),
        other => Err(format!(
            "`{name}` needs a number for `{key}`, not {other:?}"
        )),
    }
}

impl Initializer {
    /// Reads a validated initializer value (`Value::Named(name, args)`, as the checker
    /// stores it in [`crate::layers::Param::init`]). Returns the initializer and its
    /// `seed` argument, if the spec gave one.
    pub fn from_value(v: &Value) -> Result<(Initializer, Option<u64>), String> {
        let empty = args::Args::default();
        let (name, a) = match v {
            Value::Named(n, a) => (n.as_str(), a.as_ref()),
            Value::Str(n) => (n.as_str(), &empty),
            other => return Err(format!("expected an initializer, found {other:?}")),
        };
        let name = match name {
            "uniform" => "random_uniform",
            "normal" => "random_normal",
            "zero" => "zeros",
            "one" => "ones",
            n => n,
        };
        let seed = match a.get("seed") {
            Value::Int(i) => Some(u64::try_from(*i).map_err(|_| format!("seed {i} is negative"))?),
            Value::Null => None,
            other => return Err(format!("`seed` must be an integer, not {other:?}")),
        };
        let vs = |scale, mode, distribution| Initializer::VarianceScaling {
            scale,
            mode,
            distribution,
        };
        use Distribution::*;
        use FanMode::*;
        let init = match name {
            "zeros" => Initializer::Zeros,
            "ones" => Initializer::Ones,
            "constant" => Initializer::Constant(float(name, a, "value")?),
            "random_uniform" => Initializer::RandomUniform {
                minval: float(name, a, "minval")?,
                maxval: float(name, a, "maxval")?,
            },
            "random_normal" => Initializer::RandomNormal {
                mean: float(name, a, "mean")?,
                stddev: float(name, a, "stddev")?,
            },
            "truncated_normal" => Initializer::TruncatedNormal {
                mean: float(name, a, "mean")?,
                stddev: float(name, a, "stddev")?,
            },
            "glorot_uniform" => vs(1.0, FanAvg, Uniform),
            "glorot_normal" => vs(1.0, FanAvg, TruncatedNormal),
            "he_uniform" => vs(2.0, FanIn, Uniform),
            "he_normal" => vs(2.0, FanIn, TruncatedNormal),
            "lecun_uniform" => vs(1.0, FanIn, Uniform),
            "lecun_normal" => vs(1.0, FanIn, TruncatedNormal),
            "variance_scaling" => {
                let mode = match arg(name, a, "mode") {
                    Value::Str(s) if s == "fan_in" => FanIn,
                    Value::Str(s) if s == "fan_out" => FanOut,
                    Value::Str(s) if s == "fan_avg" => FanAvg,
                    other => return Err(format!("unknown variance_scaling mode {other:?}")),
                };
                let distribution = match arg(name, a, "distribution") {
                    // Keras accepts "normal" as truncated_normal too.
                    Value::Str(s) if s == "truncated_normal" || s == "normal" => TruncatedNormal,
                    Value::Str(s) if s == "untruncated_normal" => UntruncatedNormal,
                    Value::Str(s) if s == "uniform" => Uniform,
                    other => {
                        return Err(format!("unknown variance_scaling distribution {other:?}"));
                    }
                };
                vs(float(name, a, "scale")?, mode, distribution)
            }
            "orthogonal" => Initializer::Orthogonal {
                gain: float(name, a, "gain")?,
            },
            other => return Err(format!("`{other}` is not an initializer kiln knows")),
        };
        Ok((init, seed))
    }

    /// Draws a tensor of `shape` from `rng`. Fails (rather than aborting) when the tensor
    /// does not fit in memory.
    pub fn sample(&self, shape: &[usize], rng: &mut Rng) -> Result<ArrayD<f32>, String> {
        let n = numel(shape)?;
        let data = match *self {
            Initializer::Zeros => filled(n, 0.0)?,
            Initializer::Ones => filled(n, 1.0)?,
            Initializer::Constant(c) => filled(n, c as f32)?,
            Initializer::RandomUniform { minval, maxval } => {
                draw(n, || uniform(rng, minval, maxval))?
            }
            Initializer::RandomNormal { mean, stddev } => {
                draw(n, || (mean + stddev * rng.normal()) as f32)?
            }
            Initializer::TruncatedNormal { mean, stddev } => {
                draw(n, || truncated_normal(rng, mean, stddev))?
            }
            Initializer::VarianceScaling {
                scale,
                mode,
                distribution,
            } => {
                let (fan_in, fan_out) = compute_fans(shape);
                let denom = match mode {
                    FanMode::FanIn => fan_in,
                    FanMode::FanOut => fan_out,
                    FanMode::FanAvg => (fan_in + fan_out) / 2.0,
                };
                let scale = scale / denom.max(1.0);
                match distribution {
                    Distribution::TruncatedNormal => {
                        let stddev = scale.sqrt() / TRUNCATED_STDDEV;
                        draw(n, || truncated_normal(rng, 0.0, stddev))?
                    }
                    Distribution::UntruncatedNormal => {
                        let stddev = scale.sqrt();
                        draw(n, || (stddev * rng.normal()) as f32)?
                    }
                    Distribution::Uniform => {
                        let limit = (3.0 * scale).sqrt();
                        draw(n, || uniform(rng, -limit, limit))?
                    }
                }
            }
            Initializer::Orthogonal { gain } => orthogonal(shape, gain, rng)?,
        };
        ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| e.to_string())
    }
}

/// Keras's `compute_fans`: `[in, out]` for a matrix; for rank > 2 (conv kernels
/// `[k…, in, out]`, attention kernels `[d_model, heads, key_dim]`) both fans are
/// multiplied by the receptive field `prod(shape[:-2])`; a vector's fans are its length.
pub fn compute_fans(shape: &[usize]) -> (f64, f64) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [a, b] => (*a as f64, *b as f64),
        [rest @ .., a, b] => {
            let receptive: f64 = rest.iter().map(|&d| d as f64).product();
            (*a as f64 * receptive, *b as f64 * receptive)
        }
    }
}

fn numel(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| "its size overflows".to_string())
}

fn alloc<T>(n: usize) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        format!(
            "{n} values ({} MiB) do not fit in memory",
            n.saturating_mul(std::mem::size_of::<T>()) >> 20
        )
    })?;
    Ok(v)
}

fn filled(n: usize, x: f32) -> Result<Vec<f32>, String> {
    let mut v = alloc(n)?;
    v.resize(n, x);
    Ok(v)
}

fn draw(n: usize, mut f: impl FnMut() -> f32) -> Result<Vec<f32>, String> {
    let mut v = alloc(n)?;
    v.extend((0..n).map(|_| f()));
    Ok(v)
}

/// Uniform in `[minval, maxval)`, rounded to f32 and kept below `f32(maxval)`.
fn uniform(rng: &mut Rng, minval: f64, maxval: f64) -> f32 {
    let u = rng.uniform();
    // A convex combination cannot overflow, unlike `minval + (maxval - minval) * u`.
    let v = (minval * (1.0 - u) + maxval * u) as f32;
    let (lo, hi) = (minval as f32, maxval as f32);
    if lo < hi && v >= hi {
        hi.next_down()
    } else {
        v
    }
}

/// Keras's truncated normal: standard normals more than 2 from 0 are redrawn.
fn truncated_normal(rng: &mut Rng, mean: f64, stddev: f64) -> f32 {
    loop {
        let z = rng.normal();
        if z.abs() <= 2.0 {
            return (mean + stddev * z) as f32;
        }
    }
}

/// Keras's `Orthogonal`: the shape flattened to `(prod(shape[:-1]), shape[-1])`; the
/// Q factor of a normal `(max, min)` matrix, each column's sign made that of R's
/// diagonal; transposed when there are fewer rows than columns; times `gain`.
fn orthogonal(shape: &[usize], gain: f64, rng: &mut Rng) -> Result<Vec<f32>, String> {
    let (rows, cols) = match shape {
        [] => (1, 1),
        [rest @ .., last] => (numel(rest)?, *last),
    };
    let (m, n) = (rows.max(cols), rows.min(cols));
    let mut normals: Vec<f64> = alloc(numel(&[m, n])?)?;
    normals.extend((0..m * n).map(|_| rng.normal()));
    let a = Array2::from_shape_vec((m, n), normals).map_err(|e| e.to_string())?;
    let q = householder_q(a)?;
    let q = if rows < cols { q.reversed_axes() } else { q };
    let mut out = alloc(rows * cols)?;
    out.extend(q.iter().map(|&x| (gain * x) as f32));
    Ok(out)
}

/// The thin Q factor (`m × n`, `m ≥ n`) of `a` by Householder reflections, with each
/// column multiplied by the sign of R's diagonal entry (so that R's diagonal is
/// non-negative: the unique QR, the one Keras's sign correction gives).
pub fn householder_q(mut r: Array2<f64>) -> Result<Array2<f64>, String> {
    let (m, n) = r.dim();
    if m < n {
        return Err(format!("QR needs rows ≥ columns, got {m} × {n}"));
    }
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
            // The column is already zero below the diagonal: no reflection.
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
        // Keras multiplies by sign(d), which is 0 for d = 0; a zero column would not be
        // orthogonal, so kiln keeps the column as it is there (probability zero anyway).
        if *d < 0.0 {
            q.column_mut(j).mapv_inplace(|x| -x);
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
