//! `kiln bench`: compile latency (spec text → native training step), forward latency
//! and train-step time, as medians over repeated runs after warm-up. Inputs are
//! random; weights are freshly initialized. Timing lives here, never in tests.

use std::time::Instant;

use ndarray::{ArrayD, IxDyn};

use crate::ir::{Func, passes};
use crate::runtime::{Backend, RunError, compile};

/// Measured medians, in milliseconds.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub compile_ms: f64,
    pub forward_ms: f64,
    pub train_step_ms: Option<f64>,
    pub batch_size: usize,
    /// With `--profile`: each timed function's kernels (the forward pass, then the
    /// training step).
    pub profile: Vec<crate::jit::profile::FuncProfile>,
}

pub enum BenchError {
    Spec(crate::Error),
    Run(RunError),
}

impl From<RunError> for BenchError {
    fn from(e: RunError) -> Self {
        BenchError::Run(e)
    }
}

impl BenchResult {
    pub fn to_json(&self) -> String {
        let mut j = serde_json::json!({
            "compile_ms": self.compile_ms,
            "forward_ms": self.forward_ms,
            "train_step_ms": self.train_step_ms,
            "batch_size": self.batch_size,
        });
        if !self.profile.is_empty() {
            let p: serde_json::Map<String, serde_json::Value> = self
                .profile
                .iter()
                .map(|f| {
                    let ks: Vec<serde_json::Value> = f
                        .kernels
                        .iter()
                        .map(|k| serde_json::json!({"kernel": k.kernel, "us": k.mean_us, "label": k.label}))
                        .collect();
                    (f.func.clone(), serde_json::Value::Array(ks))
                })
                .collect();
            j["profile"] = serde_json::Value::Object(p);
        }
        j.to_string()
    }
    pub fn describe(&self) -> String {
        let step = match self.train_step_ms {
            Some(t) => format!("{t:.3} ms"),
            None => "— (no train section)".into(),
        };
        let mut s = format!(
            "batch size {}\ncompile (spec → native train step): {:.2} ms\nforward: {:.3} ms\ntrain step: {step}",
            self.batch_size, self.compile_ms, self.forward_ms
        );
        for f in &self.profile {
            s.push_str(&describe_profile(f));
        }
        s
    }
}

/// The kernels that take most of a function's time, largest first, until nine tenths
/// of it are listed (at most 15), then the rest summed.
fn describe_profile(f: &crate::jit::profile::FuncProfile) -> String {
    use std::fmt::Write;
    let total: f64 = f.kernels.iter().map(|k| k.mean_us).sum();
    let mut ks: Vec<_> = f.kernels.iter().collect();
    ks.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
    let mut s = format!(
        "\n\nwhere @{} spends its time ({} kernels, {:.1} µs per call, mean of {} calls):",
        f.func,
        f.kernels.len(),
        total,
        f.calls
    );
    let mut listed = 0.0;
    let mut shown = 0;
    for k in &ks {
        if shown == 15 || (shown > 0 && listed >= 0.9 * total) {
            break;
        }
        let label: String = k.label.chars().take(110).collect();
        let share = 100.0 * k.mean_us / total.max(f64::MIN_POSITIVE);
        let _ = write!(s, "\n  {:>9.1} µs {share:>5.1}%  {label}", k.mean_us);
        listed += k.mean_us;
        shown += 1;
    }
    if shown < ks.len() {
        let _ = write!(
            s,
            "\n  {:>9.1} µs {:>5.1}%  the other {} kernels",
            total - listed,
            100.0 * (total - listed) / total.max(f64::MIN_POSITIVE),
            ks.len() - shown
        );
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Every symbol of `f`'s inputs bound: the given sizes, the batch size for the rest.
pub fn bind_symbols(
    f: &Func,
    batch: usize,
    dims: &crate::ir::interp::Env,
) -> crate::ir::interp::Env {
    f.inputs
        .iter()
        .flat_map(|i| i.ty.shape.iter().flat_map(|d| d.symbols()))
        .map(|s| {
            let v = dims.get(&s).copied().unwrap_or(batch as i64);
            (s, v)
        })
        .collect()
}

/// Random values for a function's inputs; parameters from Keras's initializers.
fn inputs(
    f: &Func,
    weights: &crate::weights::Weights,
    batch: usize,
    dims: &crate::ir::interp::Env,
    classes: usize,
) -> Vec<ArrayD<f32>> {
    let env = bind_symbols(f, batch, dims);
    let mut k = 0u64;
    f.inputs
        .iter()
        .map(|inp| {
            if let Some(w) = weights.get(&inp.name) {
                return w.clone();
            }
            let shape: Vec<usize> = inp
                .ty
                .shape
                .iter()
                .map(|d| d.eval(&env).unwrap_or(1).max(0) as usize)
                .collect();
            match inp.name.as_str() {
                "step" | "rng_key" => ArrayD::from_elem(IxDyn(&[]), 1.0),
                "lr" => ArrayD::from_elem(IxDyn(&[]), 0.001),
                _ if inp.ty.dtype.is_int() => ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                    k += 1;
                    (crate::ir::elementwise::rng_uniform(7, 1, k) * classes as f64).floor() as f32
                }),
                _ => ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                    k += 1;
                    crate::ir::elementwise::rng_uniform(7, 2, k) as f32
                }),
            }
        })
        .collect()
}

fn time_runs(
    k: &dyn crate::runtime::Kernel,
    ins: &[ArrayD<f32>],
    runs: usize,
    profile: bool,
) -> Result<f64, RunError> {
    // In place where the kernel was compiled for it (the training step's parameters and
    // optimizer state), as training runs it.
    // Warm-up: eight calls, the compiled function's first choice between the team and
    // the caller alone included (`jit::adapt`), so the timed runs are the steady state.
    let mut ins = ins.to_vec();
    for _ in 0..8.min(runs) {
        k.run_inplace(&mut ins)?;
    }
    let mut t = Vec::with_capacity(runs);
    crate::jit::profile::set(profile);
    for _ in 0..runs {
        let s = Instant::now();
        let r = k.run_inplace(&mut ins);
        t.push(s.elapsed().as_secs_f64() * 1e3);
        if let Err(e) = r {
            crate::jit::profile::set(false);
            return Err(e);
        }
    }
    crate::jit::profile::set(false);
    Ok(median(t))
}

/// Benchmarks spec text at a batch size with the JIT backend; `dims` binds other
/// symbolic sizes (a sequence length), every symbol not in it takes the batch size.
pub fn run(
    text: &str,
    name: &str,
    file: &str,
    batch: usize,
    dims: &crate::ir::interp::Env,
    runs: usize,
    profile: bool,
) -> Result<BenchResult, BenchError> {
    // Compile latency: parse + check + lower + passes + codegen of the training step
    // (or the forward function when there is no train section). Median of 5.
    let mut compile_times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let s = Instant::now();
        let m = crate::Model::from_source(text, name, file).map_err(BenchError::Spec)?;
        let f = match &m.graph.train {
            Some(_) => crate::lower::train::build(&m.graph).map(|t| t.func),
            None => crate::lower::predict_func(&m.graph),
        }
        .map_err(|e| RunError(e.0))?;
        // Parameters and optimizer state update in place, as in training.
        let donate = crate::lower::train::carried(&f);
        let k = crate::runtime::compile_donating(&f, Backend::Jit, &donate)?;
        compile_times.push(s.elapsed().as_secs_f64() * 1e3);
        last = Some((m, k));
    }
    let (m, step_kernel) = last.expect("five compiles ran");
    // A weight too big for memory is the spec's fault (exit 1), as from `init` and `train`.
    let weights =
        crate::weights::init(&m.graph, 0).map_err(|e| BenchError::Spec(crate::Error::from(e)))?;
    let classes = m
        .graph
        .outputs
        .first()
        .and_then(|&o| m.graph.type_of(o).shape.last().and_then(|d| d.as_const()))
        .unwrap_or(2)
        .max(1) as usize;
    let predict =
        passes::optimize(&crate::lower::predict_func(&m.graph).map_err(|e| RunError(e.0))?);
    let fk = compile(&predict, Backend::Jit)?;
    let forward_ms = time_runs(
        &*fk,
        &inputs(fk.func(), &weights, batch, dims, classes),
        runs,
        profile,
    )?;
    let train_step_ms = match &m.graph.train {
        Some(_) => Some(time_runs(
            &*step_kernel,
            &inputs(step_kernel.func(), &weights, batch, dims, classes),
            runs,
            profile,
        )?),
        None => None,
    };
    Ok(BenchResult {
        compile_ms: median(compile_times),
        forward_ms,
        train_step_ms,
        batch_size: batch,
        profile: crate::jit::profile::take(),
    })
}
