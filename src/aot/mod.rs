//! `kiln build`: a compiled model as a relocatable object file with C-ABI functions
//! (`NAME_predict`, with training `NAME_train_step`), its weights (and optimizer
//! state) embedded as data, and a C header documenting every function, shape and
//! buffer (`header.rs`).
//!
//! The code is the JIT's own kernel functions (`jit::object`) for sizes fixed at build
//! time (`--batch`, `--dim NAME=V`), run in order by a generated entry function on one
//! thread; the random numbers of dropout, concatenation, gather and scatter-add, which
//! the JIT runs as runtime routines, are generated as loops. What would still call
//! back into kiln's runtime (recurrent cells, grouped convolutions, max pooling's
//! gradient, products without a generated form) is refused, naming the layer or the
//! primitive. The step of `NAME_train_step` is the
//! one `kiln train` runs (same function, same dropout key from `(seed, step)`, the
//! step counter kept in the object), with a constant learning rate.

mod header;

use std::collections::HashMap;

use crate::error::Error;
use crate::ir::Func;
use crate::jit::object::{self, DataRef, Dst, Entry, ObjError, ObjectCode, Src};
use crate::lower;
use crate::net::Net;

/// The domain of `net::rng_key`'s hash (checked against it by [`check_rng_key`]).
const RNG_KEY_DOMAIN: u64 = 0x6b69_6c6e_2f64_726f;

/// The generated code's dropout key (the hash continued from `h` over the step's
/// word, as `jit::object` emits it) must be `net::rng_key`'s: checked on a few steps.
fn check_rng_key(seed: u64, h: u64) -> Result<(), Error> {
    for step in [0u64, 1, 2, 1000, u64::MAX] {
        let x = object::mix64(h ^ step).wrapping_add(0x9E37_79B9_7F4A_7C15);
        let key = (object::mix64(x) >> 40) as f32;
        if key.to_bits() != crate::net::rng_key(seed, step).to_bits() {
            return Err(Error::internal(
                "kiln build: the dropout key's hash differs from the runtime's",
            ));
        }
    }
    Ok(())
}

/// What `kiln build` is asked for.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The batch size the functions are built for.
    pub batch: i64,
    /// Values of the spec's other symbolic dimensions.
    pub dims: Vec<(String, i64)>,
    /// Also export the training step.
    pub train: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            batch: 1,
            dims: Vec::new(),
            train: false,
        }
    }
}

/// An object file and its header.
#[derive(Clone, Debug)]
pub struct Built {
    /// The relocatable object file (the host's format: ELF on Linux).
    pub object: Vec<u8>,
    /// The C header.
    pub header: String,
    /// The prefix of every exported symbol (the model's name as a C identifier).
    pub prefix: String,
}

/// A tensor the header documents: its name, its shape, and where it lives.
#[derive(Clone, Debug)]
pub(crate) struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    /// Element offset in its data object (weights and optimizer state).
    pub offset: usize,
}

impl Tensor {
    fn len(&self) -> usize {
        self.shape.iter().product::<i64>().max(0) as usize
    }
}

/// What the header needs to know.
#[derive(Clone, Debug, Default)]
pub(crate) struct Api {
    pub prefix: String,
    pub model: String,
    pub batch: i64,
    pub dims: Vec<(String, i64)>,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    pub weights: Vec<Tensor>,
    pub train: Option<TrainApi>,
    pub arena_bytes: usize,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct TrainApi {
    pub targets: Vec<Tensor>,
    pub state: Vec<Tensor>,
    pub lr: f32,
    pub step: u64,
    pub seed: u64,
}

/// The model's name as a C identifier.
fn c_ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "model_");
    }
    s
}

fn internal(e: crate::exec::RunError) -> Error {
    Error::internal(format!("kiln build: {e}"))
}

/// Refuses layers whose computation runs through a runtime routine, by name.
fn refuse_layers(net: &Net) -> Result<(), Error> {
    for l in &net.graph().layers {
        let f = &l.kind.facts;
        if f.cell.is_some() {
            return Err(Error::Invalid(format!(
                "kiln build cannot compile layer `{}` ({}) ahead of time: recurrent layers run through kiln's runtime routines; use `kiln export --format onnx` for this model",
                l.name, l.kind.name
            )));
        }
    }
    Ok(())
}

/// The shape of a function input with the symbol values of `env`.
fn shape_of(f: &Func, i: usize, env: &HashMap<String, i64>) -> Result<Vec<i64>, Error> {
    f.inputs[i]
        .ty
        .shape
        .iter()
        .map(|d| {
            d.eval(env).ok_or_else(|| {
                Error::Invalid(format!(
                    "the size `{d}` of `{}` is not fixed: give each symbolic dimension a value with `--dim NAME=VALUE` (the batch with `--batch`)",
                    f.inputs[i].name
                ))
            })
        })
        .collect()
}

fn refused(e: ObjError, what: &str) -> Error {
    match e {
        ObjError::Unsupported(op) => Error::Invalid(format!(
            "kiln build cannot compile {what} ahead of time: it needs the primitive `{op}`, which only kiln's runtime provides (recurrent cells, grouped or 3-D convolutions, max pooling's gradient, …); `kiln export --format onnx` covers every layer's inference"
        )),
        ObjError::Failed(e) => internal(e),
    }
}

/// Builds the object file and header for `net` with its current weights (and
/// optimizer state, zero when it has none).
pub fn build(net: &Net, opts: &BuildOptions) -> Result<Built, Error> {
    if opts.batch < 1 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    refuse_layers(net)?;
    let graph = net.graph();
    let prefix = c_ident(&graph.name);
    let mut env: HashMap<String, i64> = HashMap::new();
    env.insert("batch".into(), opts.batch);
    for (k, v) in &opts.dims {
        env.insert(k.clone(), *v);
    }
    let mut oc = ObjectCode::new(&prefix, &format!("{prefix}__")).map_err(internal)?;
    // Weights, in the model's order, as one exported array.
    let mut weights = Vec::new();
    let mut bytes = Vec::new();
    let mut at = 0usize;
    for (k, a) in net.weights().iter() {
        let t = Tensor {
            name: k.to_string(),
            shape: a.shape().iter().map(|&d| d as i64).collect(),
            offset: at,
        };
        at += t.len();
        bytes.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        weights.push(t);
    }
    let wdata = oc
        .data(&format!("{prefix}_weights"), true, true, Some(bytes), 0)
        .map_err(internal)?;
    oc.copy_fn(&format!("{prefix}_get_weights"), wdata, at, false)
        .map_err(internal)?;
    oc.copy_fn(&format!("{prefix}_set_weights"), wdata, at, true)
        .map_err(internal)?;
    let woff: HashMap<&str, usize> = weights
        .iter()
        .map(|t| (t.name.as_str(), t.offset))
        .collect();
    let mut api = Api {
        prefix: prefix.clone(),
        model: graph.name.clone(),
        batch: opts.batch,
        dims: opts.dims.clone(),
        weights: weights.clone(),
        ..Api::default()
    };
    // Inference.
    let f = crate::ir::passes::optimize(&lower::predict_func(graph)?);
    let mut inputs = Vec::new();
    for (i, inp) in f.inputs.iter().enumerate() {
        if let Some(&o) = woff.get(inp.name.as_str()) {
            inputs.push(Src::Data(wdata, o));
        } else {
            inputs.push(Src::Arg(api.inputs.len()));
            api.inputs.push(Tensor {
                name: inp.name.clone(),
                shape: shape_of(&f, i, &env)?,
                offset: 0,
            });
        }
    }
    let out_env = |f: &Func, o: usize| -> Result<Vec<i64>, Error> {
        let id = f.outputs[o].1;
        f.nodes[id]
            .ty
            .shape
            .iter()
            .map(|d| {
                d.eval(&env)
                    .ok_or_else(|| Error::internal(format!("size {d}")))
            })
            .collect()
    };
    let mut outputs = Vec::new();
    for (o, (name, _)) in f.outputs.iter().enumerate() {
        outputs.push(Some(Dst::Arg(api.inputs.len() + o)));
        api.outputs.push(Tensor {
            name: name.clone(),
            shape: out_env(&f, o)?,
            offset: 0,
        });
    }
    let e = Entry {
        symbol: format!("{prefix}_predict"),
        func: &f,
        env: &env,
        args: api.inputs.len() + api.outputs.len(),
        inputs,
        outputs,
        bump: None,
    };
    let info = oc
        .entry(&e)
        .map_err(|e| refused(e, "the model's inference"))?;
    api.arena_bytes = info.arena_bytes;
    if opts.train {
        let t = train_entry(net, &mut oc, &env, &prefix, wdata, &woff)?;
        api.arena_bytes += t.1;
        api.train = Some(t.0);
    }
    let object = oc.finish().map_err(internal)?;
    Ok(Built {
        object,
        header: header::header(&api),
        prefix,
    })
}

/// Adds `NAME_train_step` and the optimizer state's data: the header's part and the
/// step's arena bytes.
fn train_entry(
    net: &Net,
    oc: &mut ObjectCode,
    env: &HashMap<String, i64>,
    prefix: &str,
    wdata: DataRef,
    woff: &HashMap<&str, usize>,
) -> Result<(TrainApi, usize), Error> {
    let graph = net.graph();
    if graph.train.is_none() {
        return Err(Error::Invalid(format!(
            "--train: the spec of `{}` has no `train` section",
            graph.name
        )));
    }
    if net.learning_rate_is_schedule() {
        return Err(Error::Invalid(
            "kiln build --train needs a constant learning rate: the optimizer's `learning_rate` is a schedule, which the object cannot compute".into(),
        ));
    }
    let step = lower::train::build(graph)?;
    let l = &step.layout;
    if l.sample_weight {
        return Err(Error::Invalid(
            "kiln build --train does not support `sample_weight` or `class_weight`".into(),
        ));
    }
    let f = crate::ir::passes::optimize(&step.func);
    let bound = l.bind(&f)?;
    let n_args = l.model_inputs.len() + l.targets.len();
    // The rate `kiln train` starts from: the Net's current one, else the spec's.
    let lr = match (net.optimizer_state().lr, &graph.train) {
        (Some(lr), _) => lr,
        (None, Some(t)) => {
            crate::catalog::schedules::lr_at(t.decl.optimizer.args.get("learning_rate"), 0) as f32
        }
        (None, None) => net.learning_rate(),
    };
    let mut api = TrainApi {
        lr,
        step: net.step(),
        seed: net.seed(),
        ..TrainApi::default()
    };
    let (sdata, soff) = state_data(net, oc, prefix, &f, &l.state, env, &mut api)?;
    let counter = oc
        .data(
            &format!("{prefix}_step"),
            true,
            true,
            Some(api.step.to_le_bytes().to_vec()),
            0,
        )
        .map_err(internal)?;
    let lr = oc
        .data(
            &format!("{prefix}_lr"),
            true,
            true,
            Some(api.lr.to_le_bytes().to_vec()),
            0,
        )
        .map_err(internal)?;
    let h = object::rng_key_state(RNG_KEY_DOMAIN, api.seed);
    check_rng_key(api.seed, h)?;
    let mut inputs = Vec::new();
    for (i, inp) in f.inputs.iter().enumerate() {
        let name = inp.name.as_str();
        let src = if let Some(p) = l.model_inputs.iter().position(|n| n == name) {
            Src::Arg(p)
        } else if let Some(p) = l.targets.iter().position(|n| n == name) {
            api.targets.push(Tensor {
                name: name.to_string(),
                shape: shape_of(&f, i, env)?,
                offset: 0,
            });
            Src::Arg(l.model_inputs.len() + p)
        } else if let Some(&o) = woff.get(name) {
            Src::Data(wdata, o)
        } else if let Some(&o) = soff.get(name) {
            Src::Data(sdata, o)
        } else {
            match name {
                "rng_key" => Src::RngKey { counter, h },
                "step" => Src::StepF32(counter),
                "lr" => Src::Data(lr, 0),
                _ => return Err(Error::internal(format!("unknown step input `{name}`"))),
            }
        };
        inputs.push(src);
    }
    let mut outputs = vec![None; f.outputs.len()];
    outputs[bound.loss] = Some(Dst::Arg(n_args));
    for (k, &o) in l.params.iter().zip(&bound.new_params) {
        outputs[o] = Some(Dst::Data(wdata, woff[k.as_str()]));
    }
    for (k, &o) in l.state.iter().zip(&bound.new_state) {
        outputs[o] = Some(Dst::Data(sdata, soff[k]));
    }
    let e = Entry {
        symbol: format!("{prefix}_train_step"),
        func: &f,
        env,
        args: n_args + 1,
        inputs,
        outputs,
        bump: Some(counter),
    };
    let info = oc
        .entry(&e)
        .map_err(|e| refused(e, "the model's training step (--train)"))?;
    Ok((api, info.arena_bytes))
}

/// The optimizer state as a mutable data section `PREFIX_opt_state`: the Net's, else
/// zeros of the step's input shapes; each slot's offset, listed in `api.state`.
fn state_data(
    net: &Net,
    oc: &mut ObjectCode,
    prefix: &str,
    f: &crate::ir::Func,
    state: &[String],
    env: &HashMap<String, i64>,
    api: &mut TrainApi,
) -> Result<(DataRef, HashMap<String, usize>), Error> {
    let mut bytes = Vec::new();
    let mut soff = HashMap::new();
    let mut at = 0usize;
    for k in state {
        let i = f
            .inputs
            .iter()
            .position(|x| &x.name == k)
            .ok_or_else(|| Error::internal(format!("no step input `{k}`")))?;
        let shape = shape_of(f, i, env)?;
        let t = Tensor {
            name: k.clone(),
            shape,
            offset: at,
        };
        match net.optimizer_state().slots.get(k) {
            Some(a) if a.len() == t.len() => bytes.extend(a.iter().flat_map(|v| v.to_le_bytes())),
            _ => bytes.extend(std::iter::repeat_n(0u8, t.len() * 4)),
        }
        soff.insert(k.clone(), at);
        at += t.len();
        api.state.push(t);
    }
    let sdata = oc
        .data(&format!("{prefix}_opt_state"), true, true, Some(bytes), 0)
        .map_err(internal)?;
    Ok((sdata, soff))
}
