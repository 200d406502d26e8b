//! The layer catalog. A layer is declared once: its Keras names, its argument schema
//! with Keras's defaults, and its shape rule (which also yields its parameters, with
//! Keras's shapes and keys). Adding a layer means one `LayerKind` value in one file and
//! one line in [`REGISTRY`].

mod attention;
mod conv;
mod conv_transpose;
mod core;
mod layout;
mod lower;
pub use lower::{Call, LowerCx, Mode};
mod masking;
pub use masking::{MaskUse, lower_mask, mask_flow, output_mask_shape, output_masked};
mod merge;
mod noise;
mod norm;
mod pool;
mod preprocess;
mod recurrent;
mod resample;
mod reshape;
mod wrappers;
pub use wrappers::{Held, held_layers, name_inner_layers};

use std::ops::Range;

use crate::args::{ArgSpec, Args, Value};
use crate::diag::Diagnostic;
use crate::dim::{Dim, Overflow};
use crate::ir::{Cell, Id, PoolKind};
pub use crate::types::{TensorType, group_digits};

/// A trainable or non-trainable weight of a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The key under the layer: `kernel`, `lstm_cell/recurrent_kernel`, `query/kernel`.
    pub name: String,
    pub shape: Vec<i64>,
    pub trainable: bool,
    /// The initializer (`Value::Named`), as Keras would use it.
    pub init: Value,
    /// The layer argument whose regularizer Keras gives this weight
    /// (`recurrent_regularizer` for `lstm_cell/recurrent_kernel`), empty for none.
    pub regularizer: String,
}

impl Param {
    pub fn count(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// What a shape rule produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Inferred {
    pub output: TensorType,
    pub params: Vec<Param>,
}

/// How many inputs a layer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    One,
    /// Between `min` and `max` inputs (merges, attention).
    Range(usize, usize),
}

/// A layer type.
pub struct LayerKind {
    /// Keras's class name in snake_case, as written in specs (`max_pooling2d`).
    pub name: &'static str,
    /// Keras's class name (`MaxPooling2D`), for summaries.
    pub class: &'static str,
    pub args: &'static [ArgSpec],
    pub arity: Arity,
    /// The shape rule: checks the inputs against the arguments, reports problems through
    /// the context, and returns the output type and parameters.
    pub infer: fn(&mut Ctx) -> Option<Inferred>,
    /// The lowering to graph IR with Keras's numerics: the layer's input values in,
    /// its output value out (parameters come from the context by key).
    pub lower: fn(&mut LowerCx, &Call, &[Id]) -> crate::ir::Result<Id>,
    /// What the rest of kiln may need to know about this kind, as data.
    pub facts: Facts,
}

/// Typed facts about a layer kind, so that no code outside the catalog entry has to
/// recognize the kind by its name.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// The number of spatial axes of a convolution, pooling or spatial dropout layer (1
    /// to 3).
    pub spatial: Option<usize>,
    /// Max or average, for pooling layers.
    pub pool: Option<PoolKind>,
    /// The recurrent cell, for recurrent layers.
    pub cell: Option<&'static CellFacts>,
    /// The layer looks its integer input up in a table (`embedding`): the input holds
    /// indices below the value of this argument (`input_dim`).
    pub looks_up: Option<&'static str>,
    /// Keras's `adapt`: weights computed from the training data before training.
    pub adapt: Option<&'static Adapt>,
    /// What the layer does with a Keras mask on its input (Keras's `supports_masking`
    /// and `compute_mask`).
    pub mask: Mask,
    /// The names of the outputs a layer with these arguments returns, in Keras's order
    /// (`bidirectional` with `merge_mode: None`: `forward`, `backward`); empty for a
    /// layer with one output. A spec picks one as `LAYER.PART` or `LAYER.INDEX`; the
    /// shape rule gives their types in [`Ctx::parts`].
    pub parts: fn(&Args) -> &'static [&'static str],
}

/// The parts of a layer with one output: none.
pub fn one_output(_: &Args) -> &'static [&'static str] {
    &[]
}

/// A layer whose non-trainable weights Keras computes from data (`adapt`), which `fit`
/// does before the first step while they are still the initial ones.
pub struct Adapt {
    /// Whether a layer with these arguments is adapted (not when its statistics are
    /// given as arguments).
    pub wanted: fn(&Args) -> bool,
    /// The adapted weights (key under the layer, value) from all the examples of the
    /// array reaching the layer (examples on the first axis).
    pub compute: fn(&Args, &ndarray::ArrayD<f32>) -> Vec<Adapted>,
}

/// One adapted weight: its key under the layer and its value.
pub type Adapted = (&'static str, ndarray::ArrayD<f32>);

impl std::fmt::Debug for Adapt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Adapt")
    }
}

/// What a layer does with a Keras mask (a flag per step, `[batch, steps]`) on its
/// inputs, as Keras's `supports_masking` and `compute_mask` decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Keras's `supports_masking` is false: the mask is not used and not passed on.
    Drops,
    /// The mask passes through unchanged (Keras's default `compute_mask`).
    Propagates,
    /// Keras 3's `Merge.compute_mask`: a mask only when every input has one, a step
    /// valid where it is valid in any input (add, multiply, maximum, …).
    Merges,
    /// The masks joined along the axis this argument names, as Keras's `Concatenate`
    /// joins them (an input without a mask counts as all valid; joined on the feature
    /// axis, a step is valid where it is valid in any input).
    Joins(&'static str),
    /// The layer uses the mask and its output has none (global average pooling).
    Consumes,
    /// The layer uses the mask; its output keeps it while it keeps the steps axis
    /// (a recurrent layer with `return_sequences`, attention).
    ConsumesKeeps,
    /// The layer uses the mask; its output keeps the first input's mask whatever its
    /// rank (Keras's default `compute_mask`: attention with an `output_shape` list).
    ConsumesPasses,
    /// The mask passes through when the output's shape is the input's, else it is
    /// dropped (Keras's `Reshape` has no `compute_mask`, but on jax an unchanged
    /// reshape returns the very array, which keeps its mask).
    KeepsUnchanged,
    /// The layer makes a mask: always (`None`), or when this boolean argument is true
    /// (`embedding`'s `mask_zero`).
    Produces(Option<&'static str>),
}

/// Whether a Keras mask is one per step of a value of `shape`: its shape without the
/// last axis.
pub fn steps_of(mask: &[Dim], shape: &[Dim]) -> bool {
    mask.len() + 1 == shape.len() && mask.iter().zip(shape).all(|(m, d)| m == d)
}

/// The facts of a kind that has none of the above.
pub const NO_FACTS: Facts = Facts {
    spatial: None,
    pool: None,
    cell: None,
    looks_up: None,
    adapt: None,
    mask: Mask::Drops,
    parts: one_output,
};

/// The facts of a kind that passes a mask on unchanged and has no others (dense,
/// dropout, activations, normalizations: Keras's `supports_masking`).
pub const PASSES_MASK: Facts = Facts {
    mask: Mask::Propagates,
    ..NO_FACTS
};

/// The facts of an element-wise merge: its output's mask combines its inputs' masks.
pub const MERGES_MASK: Facts = Facts {
    mask: Mask::Merges,
    ..NO_FACTS
};

/// A recurrent layer's cell, as Keras lays out its weights.
#[derive(Clone, Copy, Debug)]
pub struct CellFacts {
    pub cell: Cell,
    /// The sub-layer holding the weights (`lstm_cell`).
    pub prefix: &'static str,
    /// Gates side by side in the kernel's columns (LSTM 4, GRU 3, simple RNN 1).
    pub gates: i64,
    /// Keras's `unit_forget_bias`: the forget gate's slice of the bias starts at 1.
    pub unit_forget_bias: bool,
    /// GRU's `reset_after` gives a bias of two rows (input and recurrent).
    pub split_bias: bool,
}

/// Every layer kiln knows.
pub static REGISTRY: &[&LayerKind] = &[
    &core::DENSE,
    &core::EMBEDDING,
    &core::DROPOUT,
    &core::ACTIVATION,
    &core::RELU,
    &core::LEAKY_RELU,
    &core::ELU,
    &core::SIGMOID,
    &core::TANH,
    &core::SOFTMAX,
    &core::GELU,
    &core::SILU,
    &core::IDENTITY,
    &core::REPEAT_VECTOR,
    &noise::SPATIAL_DROPOUT1D,
    &noise::SPATIAL_DROPOUT2D,
    &noise::SPATIAL_DROPOUT3D,
    &noise::GAUSSIAN_NOISE,
    &noise::GAUSSIAN_DROPOUT,
    &preprocess::RESCALING,
    &preprocess::NORMALIZATION,
    &preprocess::POSITION_EMBEDDING,
    &conv::CONV1D,
    &conv::CONV2D,
    &conv::CONV3D,
    &conv::DEPTHWISE_CONV1D,
    &conv::DEPTHWISE_CONV2D,
    &conv::SEPARABLE_CONV1D,
    &conv::SEPARABLE_CONV2D,
    &conv_transpose::CONV1D_TRANSPOSE,
    &conv_transpose::CONV2D_TRANSPOSE,
    &conv_transpose::CONV3D_TRANSPOSE,
    &pool::MAX_POOLING1D,
    &pool::MAX_POOLING2D,
    &pool::AVERAGE_POOLING1D,
    &pool::AVERAGE_POOLING2D,
    &pool::GLOBAL_AVERAGE_POOLING1D,
    &pool::GLOBAL_AVERAGE_POOLING2D,
    &pool::GLOBAL_MAX_POOLING1D,
    &pool::GLOBAL_MAX_POOLING2D,
    &pool::MAX_POOLING3D,
    &pool::AVERAGE_POOLING3D,
    &pool::GLOBAL_AVERAGE_POOLING3D,
    &pool::GLOBAL_MAX_POOLING3D,
    &resample::UP_SAMPLING1D,
    &resample::UP_SAMPLING2D,
    &resample::ZERO_PADDING1D,
    &resample::ZERO_PADDING2D,
    &resample::CROPPING1D,
    &resample::CROPPING2D,
    &resample::UP_SAMPLING3D,
    &resample::ZERO_PADDING3D,
    &resample::CROPPING3D,
    &norm::BATCH_NORMALIZATION,
    &norm::LAYER_NORMALIZATION,
    &reshape::FLATTEN,
    &reshape::RESHAPE,
    &reshape::PERMUTE,
    &merge::ADD,
    &merge::SUBTRACT,
    &merge::MULTIPLY,
    &merge::CONCATENATE,
    &merge::MAXIMUM,
    &merge::MINIMUM,
    &merge::AVERAGE,
    &merge::DOT,
    &recurrent::SIMPLE_RNN,
    &recurrent::LSTM,
    &recurrent::GRU,
    &attention::MULTI_HEAD_ATTENTION,
    &wrappers::BIDIRECTIONAL,
    &wrappers::TIME_DISTRIBUTED,
    &masking::MASKING,
];

/// Looks a layer type up by its spec name.
pub fn lookup(name: &str) -> Option<&'static LayerKind> {
    REGISTRY.iter().copied().find(|k| k.name == name)
}

/// One input of a layer as its shape rule sees it.
pub struct In<'a> {
    /// The name of the layer or model input that produces it.
    pub name: &'a str,
    pub ty: &'a TensorType,
    /// Where the producer is declared in the spec.
    pub origin: Range<usize>,
    /// The shape of the Keras mask it carries (`[batch, steps…]` for a mask per step,
    /// the scores' rank for the mask on attention scores), if it carries one.
    pub mask: Option<Vec<Dim>>,
}

/// Everything a shape rule may look at, and where it reports problems.
pub struct Ctx<'a> {
    /// The layer's (given or automatic) name.
    pub layer: &'a str,
    pub kind: &'static LayerKind,
    /// The layer's type key in the spec: the anchor of layer-level diagnostics.
    pub span: Range<usize>,
    pub args: &'a Args,
    pub inputs: Vec<In<'a>>,
    pub diags: &'a mut Vec<Diagnostic>,
    /// The type of each output of a layer with several ([`Facts::parts`]), in order,
    /// set by its shape rule (whose `Inferred::output` is then the first's).
    pub parts: Vec<TensorType>,
    /// The shape of each part's Keras mask, when the shape rule decides them (attention
    /// scores carry their own); empty: every part carries the layer's output mask.
    pub part_masks: Vec<Option<Vec<Dim>>>,
}

impl Ctx<'_> {
    pub fn input(&self) -> &TensorType {
        self.inputs[0].ty
    }

    /// A shape error: primary label on this layer, secondary labels on where each input
    /// comes from, with its shape.
    pub fn shape_error(
        &mut self,
        code: &'static str,
        message: String,
        help: impl Into<String>,
    ) -> Option<Inferred> {
        let mut d = Diagnostic::error(code, message)
            .label(self.span.clone(), format!("this {}", self.kind.name));
        for i in &self.inputs {
            d = d.secondary(
                i.origin.clone(),
                format!("`{}` is {}", i.name, i.ty.describe()),
            );
        }
        self.diags.push(d.help(help));
        None
    }

    /// An error about one argument: primary label on its value (or on the layer if the
    /// argument took its default), secondary labels on the inputs.
    pub fn arg_error(
        &mut self,
        arg: &str,
        code: &'static str,
        message: String,
        help: impl Into<String>,
    ) -> Option<Inferred> {
        let (span, label) = match self.args.span(arg) {
            Some(s) => (s, format!("`{arg}` here")),
            None => (self.span.clone(), format!("`{arg}` takes its default here")),
        };
        let mut d = Diagnostic::error(code, message).label(span, label);
        for i in &self.inputs {
            d = d.secondary(
                i.origin.clone(),
                format!("`{}` is {}", i.name, i.ty.describe()),
            );
        }
        self.diags.push(d.help(help));
        None
    }

    /// Checks the first input's rank against the ones this layer accepts.
    pub fn expect_rank(&mut self, ranks: &[usize], layout: &str) -> Option<()> {
        let r = self.input().rank();
        if ranks.contains(&r) {
            return Some(());
        }
        let want = match ranks {
            [one] => format!("rank {one}"),
            [lo, .., hi] if hi - lo + 1 == ranks.len() => format!("rank {lo} to {hi}"),
            many => format!(
                "rank {}",
                many.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        };
        let ty = self.input().describe();
        let name = self.inputs[0].name.to_string();
        let help = rank_help(self.kind, self.input(), ranks);
        self.shape_error(
            "E0501",
            format!(
                "`{}` expects {want} input {layout}, but `{name}` is {ty} (rank {r})",
                self.kind.name
            ),
            help,
        )?;
        None
    }

    /// E0522 where an input's Keras mask reaches a layer that cannot use it as Keras
    /// would: the mask on attention scores (as many axes as its tensor) at a layer that
    /// uses masks per step (concatenate, global pooling), or masks of different shapes
    /// at a merge (which joins them element by element).
    pub fn expect_usable_masks(&mut self) -> Option<()> {
        // Per step: the input's shape without its last axis (a concatenation of scores
        // gives a mask with Keras's broadcast 1 on the heads, which these do not apply).
        let per_step = |i: &In| i.mask.as_ref().is_none_or(|m| steps_of(m, &i.ty.shape));
        let bad = match self.kind.facts.mask {
            Mask::Joins(axis) if self.joins_full_masks(axis) => None,
            Mask::Joins(_) | Mask::Consumes => self.inputs.iter().position(|i| !per_step(i)),
            Mask::Merges => {
                let first = self.inputs.iter().find_map(|i| i.mask.as_ref());
                self.inputs
                    .iter()
                    .position(|i| i.mask.is_some() && i.mask.as_ref() != first)
            }
            _ => None,
        };
        match bad {
            Some(k) => self.mask_error(k),
            None => Some(()),
        }
    }

    /// Whether every input carries a mask as long as itself (attention scores') that
    /// Keras's `Concatenate` joins into a mask of the output (`joined_full_masks`).
    fn joins_full_masks(&self, axis: &str) -> bool {
        let Some(masks) = self
            .inputs
            .iter()
            .map(|i| i.mask.clone())
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let rank = self.inputs[0].ty.rank();
        let a = self.args.int(axis);
        let Ok(ax) = usize::try_from(if a < 0 { a + rank as i64 } else { a }) else {
            return false;
        };
        let mut out = self.inputs[0].ty.shape.clone();
        for i in &self.inputs[1..] {
            match (out.get(ax), i.ty.shape.get(ax)) {
                (Some(o), Some(d)) => match o.add(d) {
                    Ok(sum) => out[ax] = sum,
                    Err(_) => return false,
                },
                _ => return false,
            }
        }
        masking::joined_full_masks(&masks, a, &out).is_some()
    }

    /// E0522 where the first input carries a Keras mask that is not one axis shorter
    /// than it (Keras's BatchNormalization refuses such a mask).
    pub fn expect_step_mask(&mut self) -> Option<()> {
        match &self.inputs[0].mask {
            Some(m) if !steps_of(m, &self.inputs[0].ty.shape) => self.mask_error(0),
            _ => Some(()),
        }
    }

    fn mask_error(&mut self, k: usize) -> Option<()> {
        let name = self.inputs[k].name.to_string();
        let shape = self.inputs[k]
            .mask
            .as_ref()
            .map(|m| {
                let d: Vec<String> = m.iter().map(Dim::to_string).collect();
                format!("[{}]", d.join(", "))
            })
            .unwrap_or_default();
        let ty = self.inputs[k].ty.describe();
        self.shape_error(
            "E0522",
            format!(
                "`{}` cannot use the Keras mask {shape} that `{name}` ({ty}) carries",
                self.kind.name
            ),
            "attention scores carry the attention mask (one axis per score axis), which only layers that pass masks on (dense, dropout, activations) accept; add a layer that drops masks (e.g. `reshape`) first",
        )?;
        None
    }

    /// Layers other than embedding compute on f32.
    pub fn expect_float(&mut self) -> Option<()> {
        for i in 0..self.inputs.len() {
            if self.inputs[i].ty.dtype.is_int() {
                let name = self.inputs[i].name.to_string();
                let ty = self.inputs[i].ty.describe();
                self.shape_error(
                    "E0502",
                    format!("`{}` computes on f32, but `{name}` is {ty}", self.kind.name),
                    "integer tensors are indices: feed them to an `embedding` layer first, or declare the input as f32",
                )?;
            }
        }
        Some(())
    }

    /// A size that must be known when the model is built (it fixes a weight's shape).
    pub fn known(&mut self, d: &Dim, what: &str) -> Option<i64> {
        if let Some(c) = d.as_const() {
            return Some(c);
        }
        let name = self.inputs[0].name.to_string();
        self.shape_error(
            "E0507",
            format!("`{}` needs a known {what}, but in `{name}` it is `{d}`", self.kind.name),
            "a weight's shape cannot depend on a symbol: give this axis a fixed size in the inputs, or remove the symbolic axis first with a global pooling layer (`flatten` keeps the symbol in its size)",
        )?;
        None
    }

    /// Resolves a (possibly negative) axis for an input of rank `rank`.
    pub fn axis(&mut self, arg: &str, axis: i64, rank: usize) -> Option<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r).contains(&a) {
            return Some(a as usize);
        }
        self.arg_error(
            arg,
            "E0508",
            format!("axis {axis} is out of range for a rank-{rank} input"),
            format!(
                "axes run from 0 to {} (or -{rank} to -1 from the end)",
                r - 1
            ),
        )?;
        None
    }

    /// Reports size arithmetic that overflowed (i64, or [`crate::dim::MAX_ATOMS`]).
    pub fn overflow(&mut self, _: Overflow) -> Option<Inferred> {
        self.shape_error(
            "E0513",
            format!(
                "the sizes in `{}` overflow: they pass 64-bit integers, or their formula grows past kiln's limit",
                self.layer
            ),
            "check the sizes of this layer and its inputs; a symbolic size put through very many strided layers, or multiplied by long sums, grows without bound",
        )
    }

    /// A weight with the layer's initializer argument `init_arg`.
    /// A trainable weight initialized by the argument `init_arg`; it is regularized by
    /// the argument Keras pairs with that initializer in its `add_weight` call
    /// (`kernel_initializer` → `kernel_regularizer`, `depthwise_initializer` →
    /// `depthwise_regularizer`), when the layer has it.
    pub fn param(&self, name: &str, shape: Vec<i64>, init_arg: &str) -> Param {
        let reg = init_arg.replace("_initializer", crate::catalog::regularizers::SUFFIX);
        let has = self.kind.args.iter().any(|a| a.name == reg);
        Param {
            name: name.to_string(),
            shape,
            trainable: true,
            init: self.args.get(init_arg).clone(),
            regularizer: if has { reg } else { String::new() },
        }
    }
}

fn rank_help(kind: &LayerKind, input: &TensorType, want: &[usize]) -> String {
    let got = input.rank();
    let spatial = kind.facts.spatial == Some(2) && want.contains(&4);
    let seq = (kind.facts.spatial == Some(1) || kind.facts.cell.is_some()) && want.contains(&3);
    match (got, spatial, seq) {
        (2, true, _) => {
            // A flat square image (784 = 28×28) can be given its axes back.
            let side = input.last().as_const().and_then(|n| {
                let s = (n as f64).sqrt().round() as i64;
                (s > 1 && s.checked_mul(s) == Some(n)).then_some(s)
            });
            let target = side.map_or("[h, w, c]".to_string(), |s| format!("[{s}, {s}, 1]"));
            format!("this input is flat, but images are [batch, height, width, channels]: add `- reshape: {{target_shape: {target}}}` before this layer, or move any `flatten` after the convolutions")
        }
        (3, true, _) => {
            let target = match (input.shape[1].as_const(), input.shape[2].as_const()) {
                (Some(h), Some(w)) => format!("[{h}, {w}, 1]"),
                _ => "[h, w, 1]".to_string(),
            };
            format!("add a channel axis: declare the input as [batch, h, w, 1], or add `- reshape: {{target_shape: {target}}}` before this layer")
        }
        (2, _, true) => "sequences are [batch, steps, features]: add `reshape: {target_shape: [steps, features]}` or an `embedding` before it".into(),
        (4, _, true) => "this input is an image; use the 2D layer, or reshape it to [batch, steps, features]".into(),
        (_, _, _) if got > 2 && want == [2] => "add `flatten` or a global pooling layer before it".into(),
        _ => "check the layers before this one".into(),
    }
}

impl std::fmt::Debug for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}
