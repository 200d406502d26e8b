//! The memory budget (issue 14): before a command initializes weights or compiles, the
//! memory a model needs — its parameters, the optimizer's state and the values of the
//! function it runs — is estimated from the checked shapes at the batch size and
//! symbol values at hand, and refused when it exceeds the budget.
//!
//! The budget is [`limit`]: `--memory-limit`, else `KILN_MEMORY_LIMIT`, else
//! [`DEFAULT_FRACTION`] of the memory the system says is available.
//!
//! Activations are what the compiled function allocates: the function goes through the
//! graph passes and the JIT's planner (no code is generated), and the estimate is its
//! arena at these sizes — the buffers the plan materializes, placed by liveness as a
//! run places them, in-place updates of a training step accepted as compile accepts
//! them — plus the outputs a run copies out. Fused kernels count only what they store:
//! the attention kernel keeps no score matrix at inference, and in a training step only
//! the softmax pieces its backward pass reads. (The attention kernel's per-thread rows,
//! a few rows of scores, are not counted.) Where the planner cannot lay the function
//! out (sizes past memory), the bound from the IR as lowered is used: each value live
//! from its definition to its last use, the peak of the live bytes.

use std::collections::HashMap;
use std::fmt;

use crate::check::{Graph, Source};
use crate::ir::{Func, Id, IrError};
use crate::lower::{self, Mode};
use crate::weights::safetensors::{available_memory, parse_bytes};

/// The environment variable that sets the memory budget (`8G`, `512MiB`, bytes).
pub const ENV: &str = "KILN_MEMORY_LIMIT";

/// The share of the available memory the budget is when nothing sets it.
pub const DEFAULT_FRACTION: f64 = 0.75;

/// The budget when the system does not say how much memory is available.
pub const FALLBACK_LIMIT: u64 = 16 << 30;

/// Bytes per element: kiln holds every value as 32 bits.
const ELEMENT_BYTES: u128 = 4;

/// How many of the largest tensors a refusal names.
const SHOWN: usize = 3;

/// The memory budget in bytes: the flag's, else [`ENV`]'s, else [`DEFAULT_FRACTION`]
/// of the available memory. A malformed [`ENV`] is an error (a usage error).
pub fn limit(flag: Option<u64>) -> Result<u64, String> {
    if let Some(b) = flag {
        return Ok(b);
    }
    match std::env::var(ENV) {
        Ok(v) => parse_bytes(&v).ok_or_else(|| {
            format!("{ENV}={v:?} is not a number of bytes (write e.g. `8G`, `512MiB`, `1000000`)")
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{ENV} is not valid text")),
        Err(std::env::VarError::NotPresent) => {
            Ok(available_memory().map_or(FALLBACK_LIMIT, |m| (m as f64 * DEFAULT_FRACTION) as u64))
        }
    }
}

/// What a command will run, which decides what is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Only the parameters (`kiln init`).
    Init,
    /// Parameters and the inference function (`predict`, `eval`).
    Infer,
    /// Parameters, the optimizer's state and the training step (`train`, `bench`).
    Train,
}

/// One tensor of an estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// A weight's key, or what an intermediate value is.
    pub name: String,
    /// Whether `name` is a weight's key.
    pub weight: bool,
    /// Its shape at the batch size and symbol values of the estimate.
    pub shape: Vec<i64>,
    /// Its size in bytes.
    pub bytes: u128,
}

/// The memory a run needs, in bytes, and its largest tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The parameters.
    pub params: u128,
    /// The optimizer's state (its slots per parameter).
    pub optimizer: u128,
    /// The peak of intermediate values alive at once.
    pub activations: u128,
    /// The batch size the estimate is for.
    pub batch: usize,
    /// What was counted.
    pub work: Work,
    /// The largest tensors, largest first.
    pub largest: Vec<Tensor>,
}

impl Estimate {
    /// Everything counted, in bytes.
    pub fn total(&self) -> u128 {
        self.params
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
    }
}

/// The symbol values an estimate binds: `batch` to the batch size, each symbol in
/// `dims` to its value, any other symbol to 1.
pub fn env(batch: usize, dims: &HashMap<String, i64>) -> HashMap<String, i64> {
    let mut env = dims.clone();
    env.insert("batch".into(), batch as i64);
    env
}

fn bytes_of(shape: &[i64]) -> u128 {
    shape
        .iter()
        .fold(ELEMENT_BYTES, |b, &d| b.saturating_mul(d.max(0) as u128))
}

/// A symbolic shape at the given symbol values; a symbol not bound counts as 1.
fn concrete(shape: &[crate::dim::Dim], env: &HashMap<String, i64>) -> Vec<i64> {
    let mut env = env.clone();
    for d in shape {
        for s in d.symbols() {
            env.entry(s).or_insert(1);
        }
    }
    // `None` is an overflow: more than any budget.
    shape
        .iter()
        .map(|d| d.eval(&env).unwrap_or(i64::MAX))
        .collect()
}

/// Each layer's output node and name, in layer order: a node belongs to the first
/// layer whose output comes at or after it (layers are lowered in order; a layer with
/// several outputs ends at its last).
fn owners(graph: &Graph, lw: &lower::Lower) -> Vec<(Id, String)> {
    graph
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let last = match l.parts.len() {
                0 => Source::Layer(i),
                n => Source::Part(i, n - 1),
            };
            (lw.value(last), l.name.clone())
        })
        .collect()
}

/// The peak of live bytes over the function's values (see the module's comment), and
/// its largest value of at most `bound` bytes (a larger one is never materialized).
fn peak_live(
    f: &Func,
    owners: &[(Id, String)],
    env: &HashMap<String, i64>,
    bound: Option<u128>,
) -> (u128, Option<Tensor>) {
    let n = f.nodes.len();
    let mut last_use: Vec<usize> = (0..n).collect();
    for (i, node) in f.nodes.iter().enumerate() {
        for a in &node.args {
            last_use[*a] = last_use[*a].max(i);
        }
    }
    for (_, o) in &f.outputs {
        last_use[*o] = n;
    }
    let mut frees: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    for (i, &l) in last_use.iter().enumerate() {
        frees[l].push(i);
    }
    let sizes: Vec<(Vec<i64>, u128)> = f
        .nodes
        .iter()
        .map(|node| {
            let s = concrete(&node.ty.shape, env);
            let b = bytes_of(&s);
            (s, b)
        })
        .collect();
    let (mut live, mut peak) = (0u128, 0u128);
    for i in 0..n {
        live = live.saturating_add(sizes[i].1);
        peak = peak.max(live);
        for &j in &frees[i] {
            live = live.saturating_sub(sizes[j].1);
        }
    }
    let largest = sizes
        .into_iter()
        .enumerate()
        .filter(|(i, (_, b))| {
            !matches!(f.nodes[*i].op, crate::ir::Op::Input(_)) && bound.is_none_or(|m| *b <= m)
        })
        .max_by_key(|(_, (_, b))| *b)
        .map(|(i, (shape, bytes))| Tensor {
            name: match owners.iter().find(|(last, _)| *last >= i) {
                Some((_, layer)) => format!("a value inside layer `{layer}` (IR node %{i})"),
                None => format!("a value of the loss or the gradients (IR node %{i})"),
            },
            weight: false,
            shape,
            bytes,
        });
    (peak, largest)
}

/// The bytes the compiled `f` allocates at the symbol values `env` (see the module's
/// comment), with `donate` offered for in-place updates as a training step offers them;
/// `None` where the planner cannot lay it out.
fn planned(f: &Func, donate: &[(usize, usize)], env: &HashMap<String, i64>) -> Option<u128> {
    let f = crate::ir::passes::optimize(f);
    let (arena, outputs) = crate::jit::planned_memory(f, donate, env).ok()?;
    Some(arena.saturating_add(outputs).saturating_mul(ELEMENT_BYTES))
}

/// The activations of `f` (planned, else the IR's live peak) and the largest value the
/// IR names that fits in them (a larger one is a view or a fused value the compiled
/// code never materializes).
fn activations(
    f: &Func,
    owners: &[(Id, String)],
    donate: &[(usize, usize)],
    env: &HashMap<String, i64>,
) -> (u128, Option<Tensor>) {
    match planned(f, donate, env) {
        Some(bytes) => (bytes, peak_live(f, owners, env, Some(bytes)).1),
        None => peak_live(f, owners, env, None),
    }
}

/// Estimates the memory `work` needs for `graph` at batch size `batch`, other symbols
/// bound by `dims` (1 when absent). Lowers the function to count its values; nothing is
/// allocated by size.
pub fn estimate(
    graph: &Graph,
    work: Work,
    batch: usize,
    dims: &HashMap<String, i64>,
) -> Result<Estimate, IrError> {
    let env = env(batch, dims);
    let mut tensors = Vec::new();
    let (mut params, mut optimizer) = (0u128, 0u128);
    let slots = match (&graph.train, work) {
        (Some(t), Work::Train) => {
            let o = &t.decl.optimizer;
            (o.kind.slots)(&o.args).len() as u128
        }
        _ => 0,
    };
    for layer in &graph.layers {
        for p in &layer.params {
            let bytes = bytes_of(&p.shape);
            params = params.saturating_add(bytes);
            if p.trainable {
                optimizer = optimizer.saturating_add(bytes.saturating_mul(slots));
            }
            tensors.push(Tensor {
                name: format!("{}/{}", layer.name, p.name),
                weight: true,
                shape: p.shape.clone(),
                bytes,
            });
        }
    }
    let (activations, value) = match work {
        Work::Init => (0, None),
        Work::Train if graph.train.is_some() => {
            // The step lowers the forward pass first, so its nodes keep these ids.
            let owners = owners(graph, &lower::forward(graph, Mode::Train, "train_step")?);
            let f = lower::train::build(graph)?.func;
            // Parameters and optimizer state are updated in place, as `Net` compiles it.
            let donate = lower::train::carried(&f);
            activations(&f, &owners, &donate, &env)
        }
        Work::Infer | Work::Train => {
            let lw = lower::forward(graph, Mode::Infer, "predict")?;
            let owners = owners(graph, &lw);
            activations(&lw.cx.f, &owners, &[], &env)
        }
    };
    tensors.extend(value);
    tensors.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    tensors.truncate(SHOWN);
    Ok(Estimate {
        params,
        optimizer,
        activations,
        batch,
        work,
        largest: tensors,
    })
}

/// An estimate over the budget: the run is refused before anything is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// What the run would need.
    pub estimate: Estimate,
    /// The budget it exceeds, in bytes.
    pub limit: u64,
}

/// Estimates and compares with the budget `limit`.
pub fn check(
    graph: &Graph,
    work: Work,
    batch: usize,
    dims: &HashMap<String, i64>,
    limit: u64,
) -> Result<Result<Estimate, OverBudget>, IrError> {
    let estimate = estimate(graph, work, batch, dims)?;
    Ok(if estimate.total() > limit as u128 {
        Err(OverBudget { estimate, limit })
    } else {
        Ok(estimate)
    })
}

/// `3.4 GiB`, `512 B`: bytes in short form, in powers of 1024 as `--memory-limit`
/// and [`ENV`] read them.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 1024.0 {
        format!("{v:.3e} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn shape_text(s: &[i64]) -> String {
    let parts: Vec<String> = s.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.estimate;
        let parts = match e.work {
            Work::Init => format!("its parameters need about {}", human(e.params)),
            _ => format!(
                "the model needs about {} of memory at batch size {} (parameters {}, optimizer state {}, activations {})",
                human(e.total()),
                e.batch,
                human(e.params),
                human(e.optimizer),
                human(e.activations)
            ),
        };
        write!(
            f,
            "{parts}, over the memory budget of {}",
            human(self.limit as u128)
        )?;
        let parts: Vec<String> = e
            .largest
            .iter()
            .map(|t| {
                let name = if t.weight {
                    format!("`{}`", t.name)
                } else {
                    t.name.clone()
                };
                format!("{name} {} is {}", shape_text(&t.shape), human(t.bytes))
            })
            .collect();
        if !parts.is_empty() {
            write!(f, "; largest: {}", parts.join(", "))?;
        }
        write!(
            f,
            "\n  help: make the model or the batch smaller, or raise the budget (`Options::memory_limit`, or the environment variable {ENV})"
        )
    }
}

impl std::error::Error for OverBudget {}
