//! Lowering: a checked [`Graph`] becomes graph IR with Keras's numerics (DESIGN §2).
//!
//! `forward` lowers the model (inference or training form); `loss` and `optim` add the
//! loss, metrics and optimizer update; `train` assembles one whole training step as a
//! single function: (inputs, targets, params, state, step, lr, rng key) →
//! (loss, metrics, new params, new state).

pub mod eval;
pub mod split;
pub mod train;

use std::collections::BTreeMap;

use crate::check::{Graph, Source};
use crate::ir::{Func, Id, Result, Type};
use crate::layers::{Call, LowerCx};

pub use crate::layers::Mode;

/// The state of lowering one model: the layers' context plus where each layer's value
/// is. Dereferences to the [`LowerCx`] every layer lowering sees.
pub struct Lower<'g> {
    pub cx: LowerCx,
    pub graph: &'g Graph,
    values: Vec<Option<Id>>,
    /// Each output of each layer that has several.
    parts: Vec<Vec<Id>>,
    /// Each layer's output mask (Keras's `_keras_mask`), if it carries one.
    masks: Vec<Option<Id>>,
    /// Each part's own mask, for a layer that gives its parts their own.
    part_masks: Vec<Vec<Option<Id>>>,
    inputs: Vec<Id>,
}

impl std::ops::Deref for Lower<'_> {
    type Target = LowerCx;
    fn deref(&self) -> &LowerCx {
        &self.cx
    }
}

impl std::ops::DerefMut for Lower<'_> {
    fn deref_mut(&mut self) -> &mut LowerCx {
        &mut self.cx
    }
}

impl Lower<'_> {
    pub fn value(&self, s: Source) -> Id {
        match s {
            Source::Input(i) => self.inputs[i],
            Source::Layer(i) => self.values[i].expect("layers are lowered in order"),
            Source::Part(i, p) => self.parts[i][p],
        }
    }

    /// The Keras mask of a value (`[batch, steps]`, 1 valid): model inputs have none.
    pub fn mask(&self, s: Source) -> Option<Id> {
        match s {
            Source::Input(_) => None,
            Source::Layer(i) => self.masks[i],
            Source::Part(i, p) => match self.part_masks[i].get(p) {
                Some(&m) => m,
                None => self.masks[i],
            },
        }
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
    let mut cx = LowerCx::new(f, mode, params, param_order);
    cx.rng_key = rng_key;
    let mut lw = Lower {
        cx,
        graph,
        values: vec![None; graph.layers.len()],
        parts: vec![Vec::new(); graph.layers.len()],
        masks: vec![None; graph.layers.len()],
        part_masks: vec![Vec::new(); graph.layers.len()],
        inputs,
    };
    for (i, l) in graph.layers.iter().enumerate() {
        let args: Vec<Id> = l.inputs.iter().map(|&s| lw.value(s)).collect();
        let call = Call {
            kind: l.kind,
            name: &l.name,
            args: &l.args,
            output: &l.output,
        };
        let in_masks: Vec<Option<Id>> = l.inputs.iter().map(|&s| lw.mask(s)).collect();
        lw.cx.masks = in_masks.clone();
        lw.cx.mask_out = None;
        lw.cx.parts_out.clear();
        lw.cx.part_masks.clear();
        let v = (l.kind.lower)(&mut lw.cx, &call, &args)?;
        lw.parts[i] = std::mem::take(&mut lw.cx.parts_out);
        lw.part_masks[i] = std::mem::take(&mut lw.cx.part_masks);
        if lw.parts[i].len() != l.parts.len() {
            return Err(crate::ir::IrError(format!(
                "`{}` gave {} outputs for its {} parts",
                l.name,
                lw.parts[i].len(),
                l.parts.len()
            )));
        }
        let ins = (args.as_slice(), in_masks.as_slice());
        lw.masks[i] = crate::layers::lower_mask(&mut lw.cx, l.kind, &l.args, ins, &l.output.shape)?;
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
    Ok(forward(graph, Mode::Infer, "predict")?.cx.f)
}
