//! Lowering: a checked [`Graph`] becomes graph IR with Keras's numerics (DESIGN §2).
//!
//! `forward` lowers the model (inference or training form); `loss` and `optim` add the
//! loss, metrics and optimizer update; `train` assembles one whole training step as a
//! single function: (inputs, targets, params, state, step, lr, rng key) →
//! (loss, metrics, new params, new state).

pub mod eval;
pub mod layers;
pub mod train;

use std::collections::BTreeMap;

use crate::check::{Graph, Source};
use crate::ir::{Func, Id, Result, Type};

/// Whether the forward pass runs in training mode (dropout on, batch statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Infer,
    Train,
}

/// The state of lowering one model.
pub struct Lower<'g> {
    pub f: Func,
    pub graph: &'g Graph,
    pub mode: Mode,
    /// Parameter key (`dense_1/kernel`) → its input value, in layer order.
    pub params: BTreeMap<String, Id>,
    /// Parameter keys in layer order (trainable first within each layer, as declared).
    pub param_order: Vec<String>,
    /// New values of non-trainable parameters (batch-norm moving statistics).
    pub updates: Vec<(String, Id)>,
    /// The random key for dropout (training only).
    pub rng_key: Option<Id>,
    salt: u64,
    values: Vec<Option<Id>>,
    inputs: Vec<Id>,
}

impl<'g> Lower<'g> {
    /// A fresh random salt: each dropout draws its own numbers.
    pub fn next_salt(&mut self) -> u64 {
        self.salt += 1;
        self.salt
    }

    pub fn value(&self, s: Source) -> Id {
        match s {
            Source::Input(i) => self.inputs[i],
            Source::Layer(i) => self.values[i].expect("layers are lowered in order"),
        }
    }

    pub fn param(&self, layer: &str, name: &str) -> Result<Id> {
        self.params
            .get(&format!("{layer}/{name}"))
            .copied()
            .ok_or_else(|| crate::ir::IrError(format!("no parameter {layer}/{name}")))
    }
}

/// Lowers the model's forward pass. Inputs are declared in this order: model inputs,
/// then every parameter (layer order), then — in training mode — the random key.
pub fn forward<'g>(graph: &'g Graph, mode: Mode, name: &str) -> Result<Lower<'g>> {
    let mut f = Func::new(name);
    let mut inputs = Vec::new();
    for inp in &graph.inputs {
        inputs.push(f.input(&inp.name, inp.ty.clone()));
    }
    let mut params = BTreeMap::new();
    let mut param_order = Vec::new();
    for l in &graph.layers {
        for p in &l.params {
            let key = format!("{}/{}", l.name, p.name);
            let ty = Type::f32(p.shape.iter().map(|&d| d.into()).collect());
            params.insert(key.clone(), f.input(&key, ty));
            param_order.push(key);
        }
    }
    let rng_key = (mode == Mode::Train).then(|| f.input("rng_key", Type::f32(vec![])));
    let mut lw = Lower {
        f,
        graph,
        mode,
        params,
        param_order,
        updates: Vec::new(),
        rng_key,
        salt: 0,
        values: vec![None; graph.layers.len()],
        inputs,
    };
    for (i, l) in graph.layers.iter().enumerate() {
        let args: Vec<Id> = l.inputs.iter().map(|&s| lw.value(s)).collect();
        let v = layers::lower(&mut lw, l, &args)?;
        lw.values[i] = Some(v);
    }
    for &o in &graph.outputs {
        let id = lw.value(o);
        let name = graph.name_of(o).to_string();
        lw.f.output(&name, id);
    }
    Ok(lw)
}

/// The inference function: model inputs and parameters → model outputs.
pub fn predict_func(graph: &Graph) -> Result<Func> {
    Ok(forward(graph, Mode::Infer, "predict")?.f)
}
