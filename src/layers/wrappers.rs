//! Wrappers: layers that take a layer as an argument. `bidirectional` runs a recurrent
//! layer forward and a copy of it backward and merges the two; `time_distributed`
//! applies a layer to every step of a sequence. The wrapped layer is written as a
//! value, `layer: {lstm: {units: 64}}`, validated against its own schema; its own shape
//! rule and lowering do the work, under Keras's weight names
//! (`bidirectional/forward_lstm/lstm_cell/kernel`, `time_distributed/dense/kernel`).

use super::lower::{Call, LowerCx, overflow};
use super::{Arity, Ctx, Facts, In, Inferred, LayerKind, Mask, NO_FACTS, REGISTRY, TensorType};
use crate::args::{
    ArgKind, ArgSpec, Args, CatalogArg, Default, Value, arg, named, type_error, validate,
};
use crate::diag::{Diagnostic, did_you_mean};
use crate::ir::{Id, Result, Type};
use crate::types::DType;
use crate::yaml::{Kind, Node};

/// A recurrent layer as an argument value (`bidirectional`'s `layer`).
pub static RECURRENT_ARG: CatalogArg = CatalogArg {
    what: "layer",
    example: "{lstm: {units: 2}}",
    default: |s| Value::Named(s.to_string(), Box::default()),
    check: |spec, v, what, diags| check_layer(spec, v, what, diags, true),
};
/// Any one-input layer as an argument value (`time_distributed`'s `layer`).
pub static LAYER_ARG: CatalogArg = CatalogArg {
    what: "layer",
    example: "{dense: {units: 2}}",
    default: |s| Value::Named(s.to_string(), Box::default()),
    check: |spec, v, what, diags| check_layer(spec, v, what, diags, false),
};
const RECURRENT: ArgKind = ArgKind::Catalog(&RECURRENT_ARG);
const LAYER: ArgKind = ArgKind::Catalog(&LAYER_ARG);

pub const BIDIRECTIONAL: LayerKind = LayerKind {
    name: "bidirectional",
    class: "Bidirectional",
    args: &[
        arg("layer", RECURRENT, Default::Required),
        arg(
            "merge_mode",
            ArgKind::Choice(&["concat", "sum", "mul", "ave", "none"]),
            Default::Str("concat"),
        ),
        arg("backward_layer", RECURRENT, Default::Null),
    ],
    arity: Arity::One,
    infer: bidirectional,
    lower: lower_bidirectional,
    facts: Facts {
        mask: Mask::ConsumesKeeps,
        parts: bidirectional_parts,
        ..NO_FACTS
    },
};

/// `merge_mode: None` returns the forward and backward outputs unmerged, as Keras's
/// list `[forward, backward]`.
fn bidirectional_parts(args: &Args) -> &'static [&'static str] {
    if args.str("merge_mode") == "none" {
        &["forward", "backward"]
    } else {
        &[]
    }
}

pub const TIME_DISTRIBUTED: LayerKind = LayerKind {
    name: "time_distributed",
    class: "TimeDistributed",
    args: &[arg("layer", LAYER, Default::Required)],
    arity: Arity::One,
    infer: time_distributed,
    lower: lower_time_distributed,
    facts: Facts {
        mask: Mask::Propagates,
        ..NO_FACTS
    },
};

/// Checks a layer written as a value: `{lstm: {units: 64}}` or a bare name. The layer's
/// own arguments are validated against its schema.
fn check_layer(
    spec: &ArgSpec,
    v: &Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
    recurrent: bool,
) -> Option<Value> {
    let expected = if recurrent {
        "a recurrent layer such as `{lstm: {units: 64}}`"
    } else {
        "a layer such as `{dense: {units: 8}}`"
    };
    let Some((name, span, args)) = named(v) else {
        diags.push(type_error(spec, v, what, expected));
        return None;
    };
    let Some(kind) = super::lookup(name) else {
        let names = REGISTRY.iter().map(|k| k.name);
        let help = match did_you_mean(name, names.clone()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("kiln's layers: {}", names.collect::<Vec<_>>().join(", ")),
        };
        diags.push(
            Diagnostic::error("E0701", format!("`{name}` is not a layer type kiln knows"))
                .label(span, "unknown layer type")
                .help(help),
        );
        return None;
    };
    let fits = if recurrent {
        kind.facts.cell.is_some()
    } else {
        kind.arity == Arity::One
    };
    if !fits {
        let choices: Vec<&str> = REGISTRY
            .iter()
            .filter(|k| {
                if recurrent {
                    k.facts.cell.is_some()
                } else {
                    k.arity == Arity::One
                }
            })
            .map(|k| k.name)
            .collect();
        let rule = if recurrent {
            "a recurrent layer"
        } else {
            "a layer of one input"
        };
        diags.push(
            Diagnostic::error(
                "E0405",
                format!(
                    "`{}` of `{what}` must be {rule}, but `{name}` is not",
                    spec.name
                ),
            )
            .label(span, "not one of the choices")
            .help(format!("use one of: {}", choices.join(", "))),
        );
        return None;
    }
    // `name` names the wrapped layer (its weights' prefix), as in Keras.
    let (args, name) = split_name(args);
    let mut args = validate(kind.args, args.as_ref(), kind.name, span, diags)?;
    if let Some(n) = name {
        args.set("name", Value::Str(n));
    }
    Some(Value::Named(kind.name.to_string(), Box::new(args)))
}

/// A layer's arguments without a `name: WORD` entry, and that name.
fn split_name(args: Option<&Node>) -> (Option<Node>, Option<String>) {
    let Some(node) = args else {
        return (None, None);
    };
    let Kind::Map(entries) = &node.kind else {
        return (Some(node.clone()), None);
    };
    let name = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("name"))
        .and_then(|(_, v)| v.as_str().map(str::to_string));
    if name.is_none() {
        return (Some(node.clone()), None);
    }
    let rest = entries
        .iter()
        .filter(|(k, _)| k.as_str() != Some("name"))
        .cloned()
        .collect();
    let node = Node {
        kind: Kind::Map(rest),
        span: node.span.clone(),
    };
    (Some(node), name)
}

/// The layer held by argument `name`, with its arguments.
fn inner<'a>(args: &'a Args, name: &str) -> Option<(&'static LayerKind, &'a Args)> {
    match args.get(name) {
        Value::Named(n, a) => Some((super::lookup(n)?, a)),
        _ => None,
    }
}

/// A wrapped layer's own name: Keras's automatic name, which the checker gave it
/// ([`name_inner_layers`]), else its type.
fn own_name(kind: &LayerKind, args: &Args) -> String {
    args.opt_str("name").unwrap_or(kind.name).to_string()
}

/// Gives every layer held in `args` (and the layers they hold) Keras's automatic name,
/// drawn from `namer` in the order Keras creates them: the innermost first, the
/// forward layer before the backward one.
pub fn name_inner_layers(kind: &LayerKind, args: &mut Args, namer: &mut dyn FnMut(&str) -> String) {
    for spec in kind.args {
        let ArgKind::Catalog(c) = spec.kind else {
            continue;
        };
        if !std::ptr::eq(c, &RECURRENT_ARG) && !std::ptr::eq(c, &LAYER_ARG) {
            continue;
        }
        let Value::Named(n, a) = args.get(spec.name).clone() else {
            continue;
        };
        let Some(k) = super::lookup(&n) else { continue };
        let mut a = *a;
        name_inner_layers(k, &mut a, namer);
        // A layer named in the spec takes no automatic name (nor a count), as in Keras.
        if a.opt_str("name").is_none() {
            a.set("name", Value::Str(namer(k.name)));
        }
        args.set(spec.name, Value::Named(n, Box::new(a)));
    }
}

/// Runs a wrapped layer's shape rule on `input` (reported at the wrapper's argument).
fn infer_inner(
    cx: &mut Ctx,
    arg: &str,
    kind: &'static LayerKind,
    args: &Args,
    input: &TensorType,
) -> Option<Inferred> {
    let name = own_name(kind, args);
    let span = cx.args.span(arg).unwrap_or(cx.span.clone());
    let origin = cx.inputs[0].origin.clone();
    let mut icx = Ctx {
        layer: &name,
        kind,
        span,
        args,
        inputs: vec![In {
            name: cx.inputs[0].name,
            ty: input,
            origin,
            // Keras passes the wrapped layer no mask of its own.
            mask: None,
        }],
        diags: cx.diags,
        parts: Vec::new(),
        part_masks: Vec::new(),
    };
    (kind.infer)(&mut icx)
}

/// The inner layer's parameters under `prefix/`.
fn prefixed(prefix: &str, inf: &Inferred) -> impl Iterator<Item = super::Param> {
    inf.params.iter().map(move |p| super::Param {
        name: format!("{prefix}/{}", p.name),
        ..p.clone()
    })
}

/// The backward layer: `backward_layer` as written, or a copy of `layer` running the
/// other way; with the name its weights sit under.
fn backward(args: &Args) -> Option<(&'static LayerKind, Args, String)> {
    if let Some((k, a)) = inner(args, "backward_layer") {
        return Some((k, a.clone(), own_name(k, a)));
    }
    let (k, a) = inner(args, "layer")?;
    let mut b = a.clone();
    b.set("go_backwards", Value::Bool(!a.bool("go_backwards")));
    Some((k, b, format!("backward_{}", own_name(k, a))))
}

fn bidirectional(cx: &mut Ctx) -> Option<Inferred> {
    let (fk, fa) = inner(cx.args, "layer")?;
    let (bk, ba, bname) = backward(cx.args)?;
    if cx.args.is_given("backward_layer") {
        for (flag, same) in [("go_backwards", false), ("return_sequences", true)] {
            if (fa.bool(flag) == ba.bool(flag)) != same {
                let want = fa.bool(flag) == same;
                let why = if same {
                    "as `layer` has"
                } else {
                    "the opposite of `layer`'s"
                };
                return cx.arg_error(
                    "backward_layer",
                    "E0520",
                    format!(
                        "`backward_layer` of `bidirectional` must have `{flag}: {want}`, {why}"
                    ),
                    format!("give `backward_layer` `{flag}: {want}`"),
                );
            }
        }
    }
    let input = cx.input().clone();
    let fwd = infer_inner(cx, "layer", fk, fa, &input)?;
    let bwd_arg = if cx.args.is_given("backward_layer") {
        "backward_layer"
    } else {
        "layer"
    };
    let bwd = infer_inner(cx, bwd_arg, bk, &ba, &input)?;
    let (fo, bo) = (&fwd.output.shape, &bwd.output.shape);
    let mode = cx.args.str("merge_mode").to_string();
    let mut shape = fo.clone();
    if mode == "none" {
        cx.parts = vec![fwd.output.clone(), bwd.output.clone()];
    } else if mode == "concat" {
        let Ok(last) = fo[fo.len() - 1].add(&bo[bo.len() - 1]) else {
            return cx.overflow(crate::dim::Overflow);
        };
        *shape.last_mut()? = last;
    } else if fo != bo {
        return cx.arg_error(
            "merge_mode",
            "E0520",
            format!(
                "`merge_mode: {mode}` adds the forward and backward outputs element by element, but they are {} and {}",
                crate::dim::fmt_shape(fo),
                crate::dim::fmt_shape(bo)
            ),
            "give both layers the same `units`, or use `merge_mode: concat`",
        );
    }
    let fname = format!("forward_{}", own_name(fk, fa));
    let params = prefixed(&fname, &fwd)
        .chain(prefixed(&bname, &bwd))
        .collect();
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

/// Reverses the steps axis (1) of a `[batch, steps, features]` value: a gather of the
/// rows `steps-1, …, 0` of its time-major form.
fn reverse_steps(lw: &mut LowerCx, x: Id) -> Result<Id> {
    let shape = lw.f.ty(x).shape.clone();
    let (b, t, u) = (shape[0].clone(), shape[1].clone(), shape[2].clone());
    let tm = lw.f.transpose(x, vec![1, 0, 2])?;
    let bu = b.mul(&u).map_err(overflow)?;
    let rows = lw.f.reshape(tm, vec![t.clone(), bu])?;
    let iota = lw.f.push_typed(
        crate::ir::Op::Iota { axis: 0 },
        &[],
        Type::f32(vec![t.clone()]),
    );
    let n = lw.f.dim_size(&t);
    let last = lw.f.add_c(n, -1.0)?;
    let idx = lw.f.sub(last, iota)?;
    let idx = lw.f.push(crate::ir::Op::Cast(DType::I32), &[idx])?;
    let picked = lw.f.push(crate::ir::Op::Gather, &[rows, idx])?;
    let tm = lw.f.reshape(picked, vec![t, b, u])?;
    lw.f.transpose(tm, vec![1, 0, 2])
}

/// Lowers a wrapped layer under the parameter prefix `name` (`bidirectional/forward_lstm`).
fn lower_inner(
    lw: &mut LowerCx,
    kind: &'static LayerKind,
    name: &str,
    args: &Args,
    output: &TensorType,
    x: Id,
) -> Result<Id> {
    let call = Call {
        kind,
        name,
        args,
        output,
    };
    (kind.lower)(lw, &call, &[x])
}

fn lower_bidirectional(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let missing = || crate::ir::IrError("bidirectional without its layers".into());
    let (fk, fa) = inner(l.args, "layer").ok_or_else(missing)?;
    let (bk, ba, bname) = backward(l.args).ok_or_else(missing)?;
    let fname = format!("{}/forward_{}", l.name, own_name(fk, fa));
    // Keras's Bidirectional makes a masked step output zeros when it returns sequences.
    let zero = |a: &Args| {
        let mut a = a.clone();
        a.set(
            "zero_output_for_mask",
            Value::Bool(a.bool("return_sequences")),
        );
        a
    };
    let (fa, ba) = (zero(fa), zero(&ba));
    let y = lower_inner(lw, fk, &fname, &fa, l.output, x[0])?;
    let bname = format!("{}/{bname}", l.name);
    let y_rev = lower_inner(lw, bk, &bname, &ba, l.output, x[0])?;
    // Keras calls both layers (`__call__`): their activity regularizers apply.
    lw.inner_outputs.extend([(fname, y), (bname, y_rev)]);
    let y_rev = if lw.f.ty(y_rev).rank() == 3 {
        reverse_steps(lw, y_rev)?
    } else {
        y_rev
    };
    match l.args.str("merge_mode") {
        // Keras's list `[forward, backward]`, the backward output in the input's order.
        "none" => {
            lw.parts_out = vec![y, y_rev];
            Ok(y)
        }
        "sum" => lw.f.add(y, y_rev),
        "mul" => lw.f.mul(y, y_rev),
        "ave" => {
            let s = lw.f.add(y, y_rev)?;
            lw.f.mul_c(s, 0.5)
        }
        _ => {
            let axis = lw.f.ty(y).rank() - 1;
            lw.f.push(crate::ir::Op::Concat { axis }, &[y, y_rev])
        }
    }
}

/// A layer held by a wrapper, as Keras's `model.losses` sees it.
pub struct Held {
    pub kind: &'static LayerKind,
    pub args: Args,
    /// Its parameters' prefix inside the wrapper's (`forward_lstm`).
    pub prefix: String,
    /// Whether Keras calls it through `Layer.__call__`, which adds its activity
    /// regularizer (`Bidirectional`); `TimeDistributed` calls `layer.call`, which
    /// does not. Its weights' regularizers count either way.
    pub called: bool,
}

/// The layers `kind` holds in `args` (none unless it is a wrapper).
pub fn held_layers(kind: &LayerKind, args: &Args) -> Vec<Held> {
    let mut out = Vec::new();
    for spec in kind.args {
        let ArgKind::Catalog(c) = spec.kind else {
            continue;
        };
        if std::ptr::eq(c, &LAYER_ARG) {
            if let Some((k, a)) = inner(args, spec.name) {
                let prefix = own_name(k, a);
                let args = a.clone();
                out.push(Held {
                    kind: k,
                    args,
                    prefix,
                    called: false,
                });
            }
        } else if std::ptr::eq(c, &RECURRENT_ARG) && spec.name == "layer" {
            if let Some((k, a)) = inner(args, spec.name) {
                let prefix = format!("forward_{}", own_name(k, a));
                let args = a.clone();
                out.push(Held {
                    kind: k,
                    args,
                    prefix,
                    called: true,
                });
            }
            // `backward_layer` as written, or the copy of `layer`.
            if let Some((k, args, prefix)) = backward(args) {
                out.push(Held {
                    kind: k,
                    args,
                    prefix,
                    called: true,
                });
            }
        }
    }
    out
}

/// The input of one step: the sequence without its steps axis.
fn step_type(t: &TensorType) -> TensorType {
    let mut shape = vec![t.shape[0].clone()];
    shape.extend(t.shape[2..].iter().cloned());
    TensorType::new(shape, t.dtype)
}

fn time_distributed(cx: &mut Ctx) -> Option<Inferred> {
    let (k, a) = inner(cx.args, "layer")?;
    if cx.input().rank() < 3 {
        let (name, ty) = (cx.inputs[0].name.to_string(), cx.input().describe());
        return cx.shape_error(
            "E0501",
            format!("`time_distributed` applies its layer to each step of a sequence [batch, steps, …], but `{name}` is {ty}"),
            "apply the layer directly to a tensor without a steps axis",
        );
    }
    let step = step_type(cx.input());
    let inf = infer_inner(cx, "layer", k, a, &step)?;
    let mut shape = vec![cx.input().shape[0].clone(), cx.input().shape[1].clone()];
    shape.extend(inf.output.shape[1..].iter().cloned());
    let params = prefixed(&own_name(k, a), &inf).collect();
    Some(Inferred {
        output: TensorType::new(shape, inf.output.dtype),
        params,
    })
}

/// Keras's TimeDistributed: the steps folded into the batch, the layer applied once,
/// the steps unfolded.
fn lower_time_distributed(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let (k, a) = inner(l.args, "layer")
        .ok_or_else(|| crate::ir::IrError("time_distributed without its layer".into()))?;
    let shape = lw.f.ty(x[0]).shape.clone();
    let (b, t) = (shape[0].clone(), shape[1].clone());
    let bt = b.mul(&t).map_err(overflow)?;
    let mut folded = vec![bt.clone()];
    folded.extend(shape[2..].iter().cloned());
    let xf = lw.f.reshape(x[0], folded)?;
    let mut out = vec![bt];
    out.extend(l.output.shape[2..].iter().cloned());
    let out_ty = TensorType::new(out, l.output.dtype);
    let name = format!("{}/{}", l.name, own_name(k, a));
    // The steps are folded into the batch: a `[batch, steps]` mask does not apply to
    // the layer inside (Keras passes none to layers that do not take one).
    let masks = std::mem::take(&mut lw.masks);
    let y = lower_inner(lw, k, &name, a, &out_ty, xf);
    lw.masks = masks;
    let y = y?;
    let mut unfolded = vec![b, t];
    unfolded.extend(l.output.shape[2..].iter().cloned());
    lw.f.reshape(y, unfolded)
}
