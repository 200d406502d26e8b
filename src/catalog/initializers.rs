//! Keras 3's initializers (`keras/src/initializers/`), each one entry (name, aliases,
//! schema, and how its arguments make an [`Initializer`]), with kiln's own random streams:
//! the same distributions, bounds, fans and shapes as Keras; other numbers, since the
//! generator differs.
//!
//! Values are computed in f64 and rounded once to f32, and rounding is monotone, so the
//! bounds hold exactly in f32: uniform draws lie in `[f32(minval), f32(maxval))`,
//! truncated normals in `[f32(mean - 2·stddev), f32(mean + 2·stddev)]`.

use std::ops::Range;

use faer::MatRef;
use ndarray::{ArrayD, IxDyn};

use super::{entry, find, names};
use crate::args::{
    ArgKind, ArgSpec, Args, CatalogArg, Default, POSITIVE_FLOAT, Value, arg, float_range, int,
    named, type_error, validate,
};
use crate::diag::{Diagnostic, did_you_mean};
use crate::rng::Rng;
use crate::yaml::Node;

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
/// the random stream, see [`Rng::for_weight`]).
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

/// An initializer of the catalog.
pub struct InitializerKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static [ArgSpec],
    /// The sampler its arguments (defaults filled in, `seed` aside) describe.
    pub build: fn(&Args) -> Result<Initializer, String>,
}
entry!(InitializerKind, Initializer);

impl InitializerKind {
    /// The sampler for validated arguments, and their `seed`, if given. Arguments the
    /// spec left out take the schema's defaults (a default initializer such as
    /// `glorot_uniform` carries no arguments at all).
    pub fn sampler(&self, args: &Args) -> Result<(Initializer, Option<u64>), String> {
        let seed = match args.get("seed") {
            Value::Int(i) => Some(u64::try_from(*i).map_err(|_| format!("seed {i} is negative"))?),
            Value::Null => None,
            other => return Err(format!("`seed` must be an integer, not {other:?}")),
        };
        let mut a = args.clone();
        for spec in self.args {
            if !matches!(a.get(spec.name), Value::Null) {
                continue;
            }
            match spec.default {
                Default::Float(f) => a.set(spec.name, Value::Float(f)),
                Default::Int(i) => a.set(spec.name, Value::Int(i)),
                Default::Str(s) => a.set(spec.name, Value::Str(s.to_string())),
                _ => {}
            }
        }
        let init = (self.build)(&a).map_err(|e| format!("`{}` needs {e}", self.name))?;
        Ok((init, seed))
    }
}

fn float(a: &Args, key: &str) -> Result<f64, String> {
    match a.get(key) {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        other => Err(format!("a number for `{key}`, not {other:?}")),
    }
}

const SEED: ArgSpec = arg("seed", int(0), Default::Null);
const ANY: ArgKind = float_range(f64::MIN, f64::MAX);

/// An entry with no arguments but the seed, defined as a variance scaling.
macro_rules! scaling {
    ($id:ident, $name:literal, $scale:expr, $mode:ident, $dist:ident) => {
        pub static $id: InitializerKind = InitializerKind {
            name: $name,
            aliases: &[],
            args: &[SEED],
            build: |_| {
                Ok(Initializer::VarianceScaling {
                    scale: $scale,
                    mode: FanMode::$mode,
                    distribution: Distribution::$dist,
                })
            },
        };
    };
}

pub static ZEROS: InitializerKind = InitializerKind {
    name: "zeros",
    aliases: &["zero"],
    args: &[],
    build: |_| Ok(Initializer::Zeros),
};
pub static ONES: InitializerKind = InitializerKind {
    name: "ones",
    aliases: &["one"],
    args: &[],
    build: |_| Ok(Initializer::Ones),
};
pub static CONSTANT: InitializerKind = InitializerKind {
    name: "constant",
    aliases: &[],
    args: &[arg("value", ANY, Default::Float(0.0))],
    build: |a| Ok(Initializer::Constant(float(a, "value")?)),
};
scaling!(GLOROT_UNIFORM, "glorot_uniform", 1.0, FanAvg, Uniform);
scaling!(GLOROT_NORMAL, "glorot_normal", 1.0, FanAvg, TruncatedNormal);
scaling!(HE_UNIFORM, "he_uniform", 2.0, FanIn, Uniform);
scaling!(HE_NORMAL, "he_normal", 2.0, FanIn, TruncatedNormal);
scaling!(LECUN_UNIFORM, "lecun_uniform", 1.0, FanIn, Uniform);
scaling!(LECUN_NORMAL, "lecun_normal", 1.0, FanIn, TruncatedNormal);
pub static ORTHOGONAL: InitializerKind = InitializerKind {
    name: "orthogonal",
    aliases: &[],
    args: &[arg("gain", POSITIVE_FLOAT, Default::Float(1.0)), SEED],
    build: |a| {
        Ok(Initializer::Orthogonal {
            gain: float(a, "gain")?,
        })
    },
};
pub static RANDOM_UNIFORM: InitializerKind = InitializerKind {
    name: "random_uniform",
    aliases: &["uniform"],
    args: &[
        arg("minval", ANY, Default::Float(-0.05)),
        arg("maxval", ANY, Default::Float(0.05)),
        SEED,
    ],
    build: |a| {
        Ok(Initializer::RandomUniform {
            minval: float(a, "minval")?,
            maxval: float(a, "maxval")?,
        })
    },
};
const NORMAL_ARGS: &[ArgSpec] = &[
    arg("mean", ANY, Default::Float(0.0)),
    arg("stddev", POSITIVE_FLOAT, Default::Float(0.05)),
    SEED,
];
pub static RANDOM_NORMAL: InitializerKind = InitializerKind {
    name: "random_normal",
    aliases: &["normal"],
    args: NORMAL_ARGS,
    build: |a| {
        Ok(Initializer::RandomNormal {
            mean: float(a, "mean")?,
            stddev: float(a, "stddev")?,
        })
    },
};
pub static TRUNCATED_NORMAL: InitializerKind = InitializerKind {
    name: "truncated_normal",
    aliases: &[],
    args: NORMAL_ARGS,
    build: |a| {
        Ok(Initializer::TruncatedNormal {
            mean: float(a, "mean")?,
            stddev: float(a, "stddev")?,
        })
    },
};
pub static VARIANCE_SCALING: InitializerKind = InitializerKind {
    name: "variance_scaling",
    aliases: &[],
    args: &[
        arg("scale", POSITIVE_FLOAT, Default::Float(1.0)),
        arg(
            "mode",
            ArgKind::Choice(&["fan_in", "fan_out", "fan_avg"]),
            Default::Str("fan_in"),
        ),
        arg(
            "distribution",
            ArgKind::Choice(&["truncated_normal", "untruncated_normal", "uniform"]),
            Default::Str("truncated_normal"),
        ),
        SEED,
    ],
    build: |a| {
        let mode = match a.str("mode") {
            "fan_in" => FanMode::FanIn,
            "fan_out" => FanMode::FanOut,
            "fan_avg" => FanMode::FanAvg,
            other => return Err(format!("a variance_scaling mode, not {other:?}")),
        };
        let distribution = match a.str("distribution") {
            // Keras accepts "normal" as truncated_normal too.
            "truncated_normal" | "normal" => Distribution::TruncatedNormal,
            "untruncated_normal" => Distribution::UntruncatedNormal,
            "uniform" => Distribution::Uniform,
            other => return Err(format!("a variance_scaling distribution, not {other:?}")),
        };
        Ok(Initializer::VarianceScaling {
            scale: float(a, "scale")?,
            mode,
            distribution,
        })
    },
};

/// Every initializer, with Keras's arguments.
pub static INITIALIZERS: &[&InitializerKind] = &[
    &ZEROS,
    &ONES,
    &CONSTANT,
    &GLOROT_UNIFORM,
    &GLOROT_NORMAL,
    &HE_UNIFORM,
    &HE_NORMAL,
    &LECUN_UNIFORM,
    &LECUN_NORMAL,
    &ORTHOGONAL,
    &RANDOM_UNIFORM,
    &RANDOM_NORMAL,
    &TRUNCATED_NORMAL,
    &VARIANCE_SCALING,
];

/// The initializer called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static InitializerKind> {
    find(INITIALIZERS, name)
}

/// The kind of an `…_initializer:` argument: an initializer name (any case), or
/// `{name: {arguments}}` validated against the initializer's schema.
pub static ARG: CatalogArg = CatalogArg {
    what: "initializer",
    example: "…",
    default: |s| Value::Named(s.to_string(), Box::default()),
    check: check_initializer,
};
/// [`ARG`] as a schema kind.
pub const INITIALIZER: ArgKind = ArgKind::Catalog(&ARG);

fn check_initializer(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let Some((name, name_span, args)) = named(v) else {
        diags.push(type_error(
            spec,
            v,
            what,
            "an initializer name or `{name: {arguments}}`",
        ));
        return None;
    };
    let canonical = name.to_lowercase();
    let Some(kind) = lookup(&canonical) else {
        diags.push(
            crate::diag::keras::not_yet(
                crate::diag::keras::Family::Initializer,
                name,
                name_span.clone(),
                names(INITIALIZERS),
            )
            .unwrap_or_else(|| unknown_initializer(name, &canonical, name_span)),
        );
        return None;
    };
    let a = validate(kind.args, args, kind.name, name_span, diags)?;
    Some(Value::Named(kind.name.to_string(), Box::new(a)))
}

/// E0408, suggesting the closest name, or Keras's name for PyTorch's.
fn unknown_initializer(name: &str, canonical: &str, span: Range<usize>) -> Diagnostic {
    let names = names(INITIALIZERS);
    Diagnostic::error(
        "E0408",
        format!("`{name}` is not an initializer kiln knows"),
    )
    .label(span, "unknown initializer")
    .help(match did_you_mean(name, names.clone()) {
        Some(c) => format!("did you mean `{c}`?"),
        // PyTorch's names for the same initializers.
        None if canonical.contains("xavier") || canonical.contains("kaiming") => {
            let family = if canonical.contains("xavier") {
                "glorot"
            } else {
                "he"
            };
            let dist = if canonical.contains("normal") {
                "normal"
            } else {
                "uniform"
            };
            format!(
                "Keras calls {} initialization `{family}_…`: did you mean `{family}_{dist}`?",
                if family == "glorot" {
                    "Xavier"
                } else {
                    "Kaiming"
                }
            )
        }
        None => format!(
            "known initializers: {}",
            names.collect::<Vec<_>>().join(", ")
        ),
    })
}

impl Initializer {
    /// Reads a validated initializer value (`Value::Named(name, args)`, as the checker
    /// stores it in a layer parameter's `init`). Returns the initializer and its `seed`
    /// argument, if the spec gave one.
    pub fn from_value(v: &Value) -> Result<(Initializer, Option<u64>), String> {
        let empty = Args::default();
        let (name, a) = match v {
            Value::Named(n, a) => (n.as_str(), a.as_ref()),
            Value::Str(n) => (n.as_str(), &empty),
            other => return Err(format!("expected an initializer, found {other:?}")),
        };
        let kind =
            lookup(name).ok_or_else(|| format!("`{name}` is not an initializer kiln knows"))?;
        kind.sampler(a)
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
    orthogonal_with(shape, gain, rng, qr::threads())
}

/// [`orthogonal`] with the QR's products on up to `threads` threads (the same bits for
/// any number).
fn orthogonal_with(
    shape: &[usize],
    gain: f64,
    rng: &mut Rng,
    threads: usize,
) -> Result<Vec<f32>, String> {
    let (rows, cols) = match shape {
        [] => (1, 1),
        [rest @ .., last] => (numel(rest)?, *last),
    };
    let (m, n) = (rows.max(cols), rows.min(cols));
    // The normals fill A row by row, as Keras's (m, n) draw, rounded to float32 for
    // CholeskyQR as they are drawn.
    let again = rng.clone();
    let mut a32: Vec<f32> = alloc(numel(&[m, n])?)?;
    a32.resize(m * n, 0.0);
    rng.fill_normal_as(&mut a32, threads, |z| z as f32);
    let q = match qr::cholesky_q32(a32, m, n, threads)? {
        Some(q) => qr::ThinQ::Single(q),
        None => {
            // Too ill-conditioned for CholeskyQR: the same normals again, in float64,
            // for Householder (square matrices; the stream ends where it did).
            let mut again = again;
            let mut normals: Vec<f64> = alloc(m * n)?;
            normals.resize(m * n, 0.0);
            again.fill_normal(&mut normals, threads);
            let a = MatRef::from_row_major_slice(&normals, m, n);
            qr::ThinQ::Double(qr::householder(a)?)
        }
    };
    // Q is column-major: as it lies, it is Qᵀ row by row (the wide case).
    let q = match (q, rows < cols) {
        (qr::ThinQ::Single(mut q), true) => {
            // Float32 and in order already: scaled in place, the arithmetic below.
            q.iter_mut()
                .for_each(|x| *x = (gain * f64::from(*x)) as f32);
            return Ok(q);
        }
        (q, _) => q,
    };
    let mut out = alloc(rows * cols)?;
    if rows < cols {
        out.extend((0..m * n).map(|k| (gain * q.at(k)) as f32));
    } else {
        out.extend((0..m * n).map(|k| (gain * q.at((k % n) * m + k / n)) as f32));
    }
    Ok(out)
}

mod qr;
pub use qr::householder_q;

#[cfg(test)]
mod tests;
