//! `kiln export --format onnx`: a model's inference function as a standard ONNX model
//! (opset 17), weights included as initializers.
//!
//! The export works on the graph IR after the graph passes, not on layers: every layer
//! lowers to the IR's small set of primitives, so every layer kind whose inference
//! function uses only primitives with an ONNX form exports, with no per-layer code.
//! Convolutions and pooling (channels last in the IR) become ONNX's channels-first
//! `Conv`/`ConvTranspose`/`MaxPool`/`AveragePool` between two transposes, with Keras's
//! kernels transposed to ONNX's layout by `Transpose` nodes; recurrent layers become
//! ONNX's `LSTM`/`GRU`/`RNN` with Keras's gate order converted; attention is the
//! products and the softmax it lowers to. Symbolic dimensions stay named dims of the
//! inputs and outputs, and sizes computed from them (a `Reshape`'s target, an
//! `Expand`'s shape) are computed at run time from the inputs' shapes.
//!
//! What has no ONNX form (random numbers at inference, a masked recurrent layer, a
//! recurrent activation ONNX lacks) is refused with an [`ExportError`] naming it.

mod proto;
mod rnn;
mod window;

use std::collections::HashMap;
use std::fmt;

use prost::Message;

use crate::dim::{Atom, Dim};
use crate::ir::{self, Binary, Cmp, Func, Op, Unary};
use crate::types::DType;
use crate::weights::Weights;
use proto::{
    AttributeProto, DimValue, DimensionProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
    attribute_type, data_type,
};

/// The ONNX operator set the export targets.
pub const OPSET: i64 = 17;
/// The ONNX IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 8;

/// Why a model could not be exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportError(pub String);

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExportError {}

type Result<T> = std::result::Result<T, ExportError>;

fn refuse<T>(what: impl Into<String>) -> Result<T> {
    Err(ExportError(what.into()))
}

/// The ONNX model (serialized protobuf) of `func`, an inference function (as
/// [`crate::lower::predict_func`] gives), with `weights` as initializers for the
/// function's inputs they name; the other inputs are the model's inputs.
pub fn export(func: &Func, weights: &Weights, name: &str) -> Result<Vec<u8>> {
    let f = ir::passes::optimize(func);
    let mut e = Emitter::default();
    let mut graph = GraphProto {
        name: name.to_string(),
        ..GraphProto::default()
    };
    for info in &f.inputs {
        match weights.get(&info.name) {
            Some(w) => e
                .inits
                .push(tensor_f32(&info.name, w.shape(), w.iter().copied())),
            None => graph.input.push(value_info(&info.name, &info.ty)?),
        }
    }
    e.bind_symbols(&f);
    let mut names: Vec<String> = Vec::with_capacity(f.nodes.len());
    for node in &f.nodes {
        let args: Vec<&str> = node.args.iter().map(|a| names[*a].as_str()).collect();
        let arg_tys: Vec<&ir::Type> = node.args.iter().map(|a| &f.nodes[*a].ty).collect();
        let out = e.op(&f, node, &args, &arg_tys)?;
        names.push(out);
    }
    for (out, id) in &f.outputs {
        e.push("Identity", &[&names[*id]], vec![], out);
        graph.output.push(value_info(out, &f.nodes[*id].ty)?);
    }
    // Weights the inference function does not read (a normalization's `count`) are
    // left out.
    let mut used = std::collections::HashSet::new();
    uses(&e.nodes, &mut used);
    let inits = e
        .inits
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    graph.node = e.nodes;
    graph.initializer = inits;
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "kiln".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{name}, exported by kiln"),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
    };
    Ok(model.encode_to_vec())
}

/// Every name the nodes read, those of loop bodies included.
fn uses<'a>(nodes: &'a [NodeProto], out: &mut std::collections::HashSet<&'a str>) {
    for n in nodes {
        out.extend(n.input.iter().map(String::as_str));
        for a in &n.attribute {
            if let Some(g) = &a.g {
                uses(&g.node, out);
            }
        }
    }
}

fn elem_type(d: DType) -> i32 {
    match d {
        DType::F32 => data_type::FLOAT,
        DType::I32 => data_type::INT32,
        DType::I64 => data_type::INT64,
    }
}

fn value_info(name: &str, ty: &ir::Type) -> Result<ValueInfoProto> {
    let dim = ty
        .shape
        .iter()
        .map(|d| DimensionProto {
            value: Some(match d.as_const() {
                Some(c) => DimValue::Value(c),
                None => DimValue::Param(d.to_string()),
            }),
        })
        .collect();
    Ok(ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: elem_type(ty.dtype),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    })
}

fn tensor_f32(name: &str, shape: &[usize], values: impl Iterator<Item = f32>) -> TensorProto {
    TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        name: name.to_string(),
        raw_data: values.flat_map(f32::to_le_bytes).collect(),
    }
}

fn tensor_i64(name: &str, shape: &[usize], values: &[i64]) -> TensorProto {
    TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: data_type::INT64,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: attribute_type::INTS,
        ..AttributeProto::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: attribute_type::INT,
        ..AttributeProto::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: v,
        r#type: attribute_type::FLOAT,
        ..AttributeProto::default()
    }
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        t: Some(t),
        r#type: attribute_type::TENSOR,
        ..AttributeProto::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: attribute_type::STRING,
        ..AttributeProto::default()
    }
}

fn strings(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        r#type: attribute_type::STRINGS,
        ..AttributeProto::default()
    }
}

/// The graph being written: nodes, initializers, and the run-time values of symbolic
/// dimensions.
#[derive(Default)]
struct Emitter {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
    /// A symbol's value as an `int64[1]` tensor, taken from an input's shape.
    symbols: HashMap<String, String>,
    /// Dims already computed, by their text.
    dims: HashMap<String, String>,
}

impl Emitter {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("kiln/{hint}_{}", self.counter)
    }

    /// A node with one output named `out`.
    fn push(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>, out: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
        });
    }

    /// A node with one fresh output, whose name it returns.
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.push(op, inputs, attribute, &out);
        out
    }

    /// A node with several fresh outputs.
    fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        n: usize,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(&op.to_lowercase())).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
        });
        outs
    }

    fn const_i64(&mut self, shape: &[usize], v: &[i64]) -> String {
        let name = self.fresh("const");
        self.inits.push(tensor_i64(&name, shape, v));
        name
    }

    fn const_f32(&mut self, shape: &[usize], v: &[f32]) -> String {
        let name = self.fresh("const");
        self.inits.push(tensor_f32(&name, shape, v.iter().copied()));
        name
    }

    fn ints1(&mut self, v: &[i64]) -> String {
        self.const_i64(&[v.len()], v)
    }

    fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[x], vec![ints("perm", perm)])
    }

    /// Elements `start..end` of `x` along `axis`.
    fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let s = self.ints1(&[start]);
        let e = self.ints1(&[end]);
        let a = self.ints1(&[axis]);
        self.node("Slice", &[x, &s, &e, &a], vec![])
    }

    /// `x` in reverse order along `axis`.
    fn reverse(&mut self, x: &str, axis: i64) -> String {
        let s = self.ints1(&[-1]);
        let e = self.ints1(&[i64::MIN]);
        let a = self.ints1(&[axis]);
        let step = self.ints1(&[-1]);
        self.node("Slice", &[x, &s, &e, &a, &step], vec![])
    }

    fn cast(&mut self, x: &str, to: i32) -> String {
        self.node("Cast", &[x], vec![int("to", i64::from(to))])
    }

    /// Every symbol of the model's inputs, read from the shape of the first input that
    /// has it on an axis of its own.
    fn bind_symbols(&mut self, f: &Func) {
        for info in &f.inputs {
            let mut shape = None;
            for (axis, d) in info.ty.shape.iter().enumerate() {
                let Some(s) = d.as_sym() else { continue };
                if self.symbols.contains_key(s) {
                    continue;
                }
                let sh = match &shape {
                    Some(sh) => sh,
                    None => shape.insert(self.node("Shape", &[&info.name], vec![])),
                }
                .clone();
                let idx = self.ints1(&[axis as i64]);
                let v = self.node("Gather", &[&sh, &idx], vec![int("axis", 0)]);
                self.symbols.insert(s.to_string(), v);
            }
        }
    }

    /// A dimension's run-time value as an `int64[1]` tensor.
    fn dim(&mut self, d: &Dim) -> Result<String> {
        if let Some(c) = d.as_const() {
            return Ok(self.ints1(&[c]));
        }
        let key = d.to_string();
        if let Some(v) = self.dims.get(&key) {
            return Ok(v.clone());
        }
        let mut total: Option<String> = None;
        for (atoms, c) in d.terms() {
            let mut term = (c != 1 || atoms.is_empty()).then(|| self.ints1(&[c]));
            for a in atoms {
                let v = match a {
                    Atom::Sym(s) => match self.symbols.get(s) {
                        Some(v) => v.clone(),
                        None => {
                            return refuse(format!(
                                "the size `{s}` is not the size of an axis of an input, so ONNX cannot compute it"
                            ));
                        }
                    },
                    Atom::FloorDiv(inner, k) => {
                        let n = self.dim(inner)?;
                        let k = self.ints1(&[*k]);
                        self.node("Div", &[&n, &k], vec![])
                    }
                };
                term = Some(match term {
                    Some(t) => self.node("Mul", &[&t, &v], vec![]),
                    None => v,
                });
            }
            let term = term.expect("a term has a coefficient or an atom");
            total = Some(match total {
                Some(t) => self.node("Add", &[&t, &term], vec![]),
                None => term,
            });
        }
        let v = total.unwrap_or_else(|| self.ints1(&[0]));
        self.dims.insert(key, v.clone());
        Ok(v)
    }

    /// A shape as an `int64[rank]` tensor: a constant when every size is known.
    fn shape(&mut self, dims: &[Dim]) -> Result<String> {
        if let Some(v) = dims.iter().map(Dim::as_const).collect::<Option<Vec<i64>>>() {
            return Ok(self.ints1(&v));
        }
        let parts = dims
            .iter()
            .map(|d| self.dim(d))
            .collect::<Result<Vec<String>>>()?;
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(self.node("Concat", &refs, vec![int("axis", 0)]))
    }

    fn op(&mut self, f: &Func, node: &ir::Node, a: &[&str], tys: &[&ir::Type]) -> Result<String> {
        let ty = &node.ty;
        Ok(match &node.op {
            Op::Input(i) => f.inputs[*i].name.clone(),
            Op::Const(v) => self.scalar(*v, ty.dtype),
            Op::Iota { axis } => self.iota(ty, *axis)?,
            Op::DimSize(d) => {
                let v = self.dim(d)?;
                let v = self.cast(&v, elem_type(ty.dtype));
                let empty = self.const_i64(&[0], &[]);
                self.node("Reshape", &[&v, &empty], vec![])
            }
            Op::Rng { .. } => {
                return refuse(
                    "random numbers at inference (a noise layer that stays random when predicting) have no ONNX form kiln writes",
                );
            }
            Op::Unary(u) => self.unary(*u, a[0]),
            Op::Binary(b) => {
                let name = match b {
                    Binary::Add => "Add",
                    Binary::Sub => "Sub",
                    Binary::Mul => "Mul",
                    Binary::Div => "Div",
                    Binary::Max => "Max",
                    Binary::Min => "Min",
                    Binary::Pow => "Pow",
                };
                self.node(name, &[a[0], a[1]], vec![])
            }
            Op::Cmp(c) => {
                let b = match c {
                    Cmp::Lt => self.node("Less", &[a[0], a[1]], vec![]),
                    Cmp::Le => self.node("LessOrEqual", &[a[0], a[1]], vec![]),
                    Cmp::Gt => self.node("Greater", &[a[0], a[1]], vec![]),
                    Cmp::Ge => self.node("GreaterOrEqual", &[a[0], a[1]], vec![]),
                    Cmp::Eq => self.node("Equal", &[a[0], a[1]], vec![]),
                    Cmp::Ne => {
                        let e = self.node("Equal", &[a[0], a[1]], vec![]);
                        self.node("Not", &[&e], vec![])
                    }
                };
                self.cast(&b, elem_type(ty.dtype))
            }
            Op::Select => {
                let c = self.cast(a[0], data_type::BOOL);
                self.node("Where", &[&c, a[1], a[2]], vec![])
            }
            Op::Cast(d) => self.cast(a[0], elem_type(*d)),
            Op::Broadcast { dims } => self.broadcast(a[0], dims, &ty.shape)?,
            Op::Reshape => {
                let s = self.shape(&ty.shape)?;
                self.node("Reshape", &[a[0], &s], vec![])
            }
            Op::Transpose { perm } => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.transpose(a[0], &perm)
            }
            Op::Slice { axis, start, end } => {
                let s = self.dim(start)?;
                let e = self.dim(end)?;
                let ax = self.ints1(&[*axis as i64]);
                self.node("Slice", &[a[0], &s, &e, &ax], vec![])
            }
            Op::Pad { axis, low, high } => {
                let r = tys[0].rank();
                let mut parts = Vec::with_capacity(2 * r);
                for side in [low, high] {
                    for i in 0..r {
                        parts.push(if i == *axis {
                            side.clone()
                        } else {
                            Dim::konst(0)
                        });
                    }
                }
                let pads = self.shape(&parts)?;
                let zero = self.scalar(0.0, ty.dtype);
                self.node("Pad", &[a[0], &pads, &zero], vec![])
            }
            Op::Concat { axis } => self.node("Concat", a, vec![int("axis", *axis as i64)]),
            Op::Reduce { op, axes } => self.reduce(a[0], *op, axes),
            Op::MatMul { ta, tb } => {
                let x = if *ta {
                    self.swap_last(a[0], tys[0].rank())
                } else {
                    a[0].to_string()
                };
                let y = if *tb {
                    self.swap_last(a[1], tys[1].rank())
                } else {
                    a[1].to_string()
                };
                self.node("MatMul", &[&x, &y], vec![])
            }
            Op::Conv(c) => self.conv(a, tys, ty, c, false)?,
            Op::ConvInputGrad(c) => self.conv(a, tys, ty, c, true)?,
            Op::Pool { kind, attrs } => self.pool(a[0], tys[0], *kind, attrs)?,
            Op::Gather => {
                let idx = self.cast(a[1], data_type::INT64);
                self.node("Gather", &[a[0], &idx], vec![int("axis", 0)])
            }
            Op::Rnn(attrs) => rnn::emit(self, a, attrs)?,
            Op::ConvKernelGrad(_) | Op::PoolGrad { .. } | Op::ScatterAdd | Op::RnnGrad { .. } => {
                return refuse(format!(
                    "the gradient operation `{}` is not part of an inference function",
                    ir::op_name(&node.op)
                ));
            }
        })
    }

    /// 0, 1, …, n−1 along `axis`, in the node's shape: a constant when n is known, else
    /// the running sum of n ones, minus one (a `Range` over a size read from a shape is
    /// typed apart from int64 by tract).
    fn iota(&mut self, ty: &ir::Type, axis: usize) -> Result<String> {
        let r = match ty.shape[axis].as_const() {
            Some(n) => {
                let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
                self.const_f32(&[n as usize], &v)
            }
            None => {
                let n = self.dim(&ty.shape[axis])?;
                let one = tensor_f32("", &[1], [1.0f32].into_iter());
                let ones = self.node("ConstantOfShape", &[&n], vec![tensor_attr("value", one)]);
                let zero = self.const_i64(&[], &[0]);
                let sums = self.node("CumSum", &[&ones, &zero], vec![]);
                let one = self.const_f32(&[], &[1.0]);
                self.node("Sub", &[&sums, &one], vec![])
            }
        };
        let r = if ty.dtype == DType::F32 {
            r
        } else {
            self.cast(&r, elem_type(ty.dtype))
        };
        let mut view = vec![1i64; ty.rank()];
        view[axis] = -1;
        let view = self.ints1(&view);
        let r = self.node("Reshape", &[&r, &view], vec![]);
        let s = self.shape(&ty.shape)?;
        Ok(self.node("Expand", &[&r, &s], vec![]))
    }

    /// A scalar of the given type.
    fn scalar(&mut self, v: f64, d: DType) -> String {
        match d {
            DType::F32 => self.const_f32(&[], &[v as f32]),
            DType::I64 => self.const_i64(&[], &[v as i64]),
            DType::I32 => {
                let c = self.const_i64(&[], &[v as i64]);
                self.cast(&c, data_type::INT32)
            }
        }
    }

    /// A reduction over `axes`, which leave the shape (none: the value itself).
    fn reduce(&mut self, x: &str, op: ir::ReduceOp, axes: &[usize]) -> String {
        if axes.is_empty() {
            return self.node("Identity", &[x], vec![]);
        }
        let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        match op {
            ir::ReduceOp::Sum => {
                let ax = self.ints1(&axes);
                self.node("ReduceSum", &[x, &ax], vec![int("keepdims", 0)])
            }
            ir::ReduceOp::Max => self.node(
                "ReduceMax",
                &[x],
                vec![ints("axes", &axes), int("keepdims", 0)],
            ),
        }
    }

    fn unary(&mut self, u: Unary, x: &str) -> String {
        let name = match u {
            Unary::Neg => "Neg",
            Unary::Exp => "Exp",
            Unary::Log => "Log",
            Unary::Tanh => "Tanh",
            Unary::Sqrt => "Sqrt",
            Unary::Abs => "Abs",
            Unary::Sign => "Sign",
            Unary::Erf => "Erf",
            Unary::Sigmoid => "Sigmoid",
            Unary::Floor => "Floor",
            Unary::Log1p => {
                let one = self.const_f32(&[], &[1.0]);
                let y = self.node("Add", &[x, &one], vec![]);
                return self.node("Log", &[&y], vec![]);
            }
            Unary::Rsqrt => {
                let y = self.node("Sqrt", &[x], vec![]);
                return self.node("Reciprocal", &[&y], vec![]);
            }
        };
        self.node(name, &[x], vec![])
    }

    /// Operand axis `i` becomes output axis `dims[i]`: order the operand's axes as the
    /// output's, insert the missing axes with size 1, and expand.
    fn broadcast(&mut self, x: &str, dims: &[usize], out: &[Dim]) -> Result<String> {
        let mut order: Vec<usize> = (0..dims.len()).collect();
        order.sort_by_key(|&i| dims[i]);
        let mut x = x.to_string();
        if order.iter().enumerate().any(|(i, &o)| i != o) {
            let perm: Vec<i64> = order.iter().map(|&o| o as i64).collect();
            x = self.transpose(&x, &perm);
        }
        let missing: Vec<i64> = (0..out.len())
            .filter(|i| !dims.contains(i))
            .map(|i| i as i64)
            .collect();
        if !missing.is_empty() {
            let ax = self.ints1(&missing);
            x = self.node("Unsqueeze", &[&x, &ax], vec![]);
        }
        let s = self.shape(out)?;
        Ok(self.node("Expand", &[&x, &s], vec![]))
    }

    fn swap_last(&mut self, x: &str, rank: usize) -> String {
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        perm.swap(rank - 1, rank - 2);
        self.transpose(x, &perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dim_polynomial_is_computed_from_the_inputs_shapes() {
        let mut e = Emitter::default();
        e.symbols.insert("b".into(), "B".into());
        e.symbols.insert("t".into(), "T".into());
        let d = Dim::sym("b")
            .mul(&Dim::sym("t"))
            .unwrap()
            .scale(3)
            .unwrap()
            .add_const(2)
            .unwrap();
        let v = e.dim(&d).unwrap();
        assert!(v.starts_with("kiln/"));
        // Computed once, then reused.
        let nodes = e.nodes.len();
        assert_eq!(e.dim(&d).unwrap(), v);
        assert_eq!(e.nodes.len(), nodes);
        let ops: Vec<&str> = e.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops.iter().filter(|o| **o == "Mul").count(), 2, "{ops:?}");
        assert_eq!(ops.iter().filter(|o| **o == "Add").count(), 1, "{ops:?}");
        let unknown = Dim::sym("s");
        assert!(e.dim(&unknown).unwrap_err().0.contains("`s`"));
    }
}
