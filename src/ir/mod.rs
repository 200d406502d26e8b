//! The graph IR: SSA over a small set of primitives, with symbolic shapes.
//!
//! A [`Func`] is a list of nodes in topological order; node `%i` is the value the `i`th
//! node computes. Each primitive family lives in one file with its shape rule, its
//! reference implementation and its VJP (`elementwise`, `structural`, `reduce`,
//! `matmul`, `window`, `gather`, `rnn`); this file holds the types, the builder that
//! applies shape rules, and the textual form printed by `kiln ir`.

pub mod autodiff;
pub mod elementwise;
pub mod gather;
pub mod interp;
pub mod matmul;
pub mod parse;
pub mod passes;
pub mod real;
pub mod reduce;
pub mod rnn;
mod rnn_bptt;
pub mod structural;
pub mod window;

use std::fmt::{self, Write};

use crate::dim::{Dim, fmt_shape};
use crate::types::DType;

/// The type of a value: a symbolic shape and an element type.
pub type Type = crate::types::TensorType;

/// A value: the index of the node that computes it.
pub type Id = usize;

pub use elementwise::{Binary, Cmp, Unary};
pub use parse::{ParseError, parse};
pub use reduce::ReduceOp;
pub use rnn::{Cell, RnnAttrs};
pub use window::{ConvAttrs, Padding, PoolKind, WindowAttrs};

/// A primitive operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The function's `i`th input.
    Input(usize),
    /// A scalar constant.
    Const(f64),
    /// Indices along `axis` of the node's shape (for one-hot, masks).
    Iota {
        axis: usize,
    },
    /// The run-time value of a symbolic dimension, as a scalar.
    DimSize(Dim),
    /// Uniform random numbers in [0, 1) of the node's shape, from a counter-based
    /// generator keyed by the scalar argument (seed and step) and `salt`.
    Rng {
        salt: u64,
    },
    Unary(Unary),
    Binary(Binary),
    /// Elementwise comparison giving 1.0 or 0.0.
    Cmp(Cmp),
    /// `select(c, a, b)`: `a` where `c` is non-zero, else `b`.
    Select,
    Cast(DType),
    /// Operand axis `i` becomes output axis `dims[i]` (sizes equal, or 1 → expanded).
    Broadcast {
        dims: Vec<usize>,
    },
    /// Same elements, the node's shape.
    Reshape,
    Transpose {
        perm: Vec<usize>,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        axis: usize,
        start: Dim,
        end: Dim,
    },
    /// Zeros added before (`low`) and after (`high`) along `axis`.
    Pad {
        axis: usize,
        low: Dim,
        high: Dim,
    },
    Concat {
        axis: usize,
    },
    /// Reduction over `axes` (removed from the shape).
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    /// Batched matrix product over the last two axes; `ta`/`tb` transpose an operand.
    MatMul {
        ta: bool,
        tb: bool,
    },
    /// Convolution, channels last: (x, kernel).
    Conv(ConvAttrs),
    /// The gradient of a convolution with respect to its input: (dy, kernel).
    ConvInputGrad(ConvAttrs),
    /// The gradient of a convolution with respect to its kernel: (x, dy).
    ConvKernelGrad(ConvAttrs),
    /// Max or average pooling, channels last.
    Pool {
        kind: PoolKind,
        attrs: WindowAttrs,
    },
    /// The gradient of pooling: (x, dy).
    PoolGrad {
        kind: PoolKind,
        attrs: WindowAttrs,
    },
    /// Rows of a table: (table [n, d], indices [...]) → [..., d].
    Gather,
    /// The adjoint of gather: (indices [...], updates [..., d]) → [n, d].
    ScatterAdd,
    /// A recurrent layer over the time axis: (x, kernel, recurrent_kernel[, bias]).
    Rnn(RnnAttrs),
    /// The gradient of `Rnn` with respect to argument `wrt`: (x, kernel, rec[, bias], dy).
    RnnGrad {
        attrs: RnnAttrs,
        wrt: usize,
    },
}

/// One SSA node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<Id>,
    pub ty: Type,
}

/// What a function input is, for printing and for the runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub ty: Type,
}

/// A function in the graph IR.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Func {
    pub name: String,
    pub inputs: Vec<InputInfo>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<(String, Id)>,
}

/// Shape-rule failures. The checker rules out user errors before lowering, so one of
/// these means a bug in a lowering rule; it is still an error, never a panic.
#[derive(Clone, Debug, PartialEq)]
pub struct IrError(pub String);

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "internal IR error: {}", self.0)
    }
}
impl std::error::Error for IrError {}

pub type Result<T> = std::result::Result<T, IrError>;

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(IrError(msg.into()))
}

/// The shape rule of every primitive, dispatched to its family.
pub fn infer(f: &Func, op: &Op, args: &[Id]) -> Result<Type> {
    let tys: Vec<&Type> = args.iter().map(|&a| &f.nodes[a].ty).collect();
    match op {
        Op::Input(i) => f
            .inputs
            .get(*i)
            .map(|x| x.ty.clone())
            .ok_or_else(|| IrError(format!("no input {i}"))),
        Op::Const(_) | Op::DimSize(_) => Ok(Type::f32(vec![])),
        Op::Iota { .. } | Op::Rng { .. } => err("iota and rng take their type from the builder"),
        Op::Unary(_) | Op::Binary(_) | Op::Cmp(_) | Op::Select | Op::Cast(_) => {
            elementwise::shape(op, &tys)
        }
        Op::Broadcast { .. }
        | Op::Reshape
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => structural::shape(op, &tys),
        Op::Reduce { .. } => reduce::shape(op, &tys),
        Op::MatMul { .. } => matmul::shape(op, &tys),
        Op::Conv(_)
        | Op::ConvInputGrad(_)
        | Op::ConvKernelGrad(_)
        | Op::Pool { .. }
        | Op::PoolGrad { .. } => window::shape(op, &tys),
        Op::Gather | Op::ScatterAdd => gather::shape(op, &tys),
        Op::Rnn(_) | Op::RnnGrad { .. } => rnn::shape(op, &tys),
    }
}

impl Func {
    pub fn new(name: &str) -> Self {
        Func {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn ty(&self, id: Id) -> &Type {
        &self.nodes[id].ty
    }

    /// Declares an input and returns its value.
    pub fn input(&mut self, name: &str, ty: Type) -> Id {
        let i = self.inputs.len();
        self.inputs.push(InputInfo {
            name: name.to_string(),
            ty: ty.clone(),
        });
        self.nodes.push(Node {
            op: Op::Input(i),
            args: vec![],
            ty,
        });
        self.nodes.len() - 1
    }

    /// Appends a node whose type follows from its shape rule.
    pub fn push(&mut self, op: Op, args: &[Id]) -> Result<Id> {
        let ty = infer(self, &op, args)?;
        Ok(self.push_typed(op, args, ty))
    }

    /// Appends a node with an explicit type (leaves whose shape is a choice).
    pub fn push_typed(&mut self, op: Op, args: &[Id], ty: Type) -> Id {
        self.nodes.push(Node {
            op,
            args: args.to_vec(),
            ty,
        });
        self.nodes.len() - 1
    }

    pub fn output(&mut self, name: &str, id: Id) {
        self.outputs.push((name.to_string(), id));
    }

    // ---- builder helpers: elementwise ops broadcast scalars automatically ----

    pub fn scalar(&mut self, c: f64) -> Id {
        self.push_typed(Op::Const(c), &[], Type::f32(vec![]))
    }

    /// A scalar constant broadcast to `shape`.
    pub fn full(&mut self, c: f64, shape: &[Dim]) -> Result<Id> {
        let s = self.scalar(c);
        self.broadcast(s, shape, &[])
    }

    pub fn broadcast(&mut self, x: Id, shape: &[Dim], dims: &[usize]) -> Result<Id> {
        if dims.is_empty() && self.ty(x).rank() == 0 && shape.is_empty() {
            return Ok(x);
        }
        let ty = Type::f32(shape.to_vec());
        let ty = Type::new(ty.shape, self.ty(x).dtype);
        structural::check_broadcast(self.ty(x), &ty, dims)?;
        Ok(self.push_typed(
            Op::Broadcast {
                dims: dims.to_vec(),
            },
            &[x],
            ty,
        ))
    }

    /// Broadcasts `x` to the shape of `like`: scalars everywhere, lower-rank values
    /// along the trailing axes (numpy's rule).
    pub fn broadcast_like(&mut self, x: Id, like: Id) -> Result<Id> {
        let target = self.ty(like).shape.clone();
        let r = self.ty(x).rank();
        if self.ty(x).shape == target {
            return Ok(x);
        }
        if r > target.len() {
            return err(format!(
                "cannot broadcast rank {r} to rank {}",
                target.len()
            ));
        }
        let dims: Vec<usize> = (target.len() - r..target.len()).collect();
        self.broadcast(x, &target, &dims)
    }

    fn binary_op(&mut self, op: Binary, a: Id, b: Id) -> Result<Id> {
        let (ra, rb) = (self.ty(a).rank(), self.ty(b).rank());
        let (a, b) = if self.ty(a).shape == self.ty(b).shape {
            (a, b)
        } else if ra >= rb {
            (a, self.broadcast_like(b, a)?)
        } else {
            (self.broadcast_like(a, b)?, b)
        };
        self.push(Op::Binary(op), &[a, b])
    }

    pub fn add(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Add, a, b)
    }
    pub fn sub(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Sub, a, b)
    }
    pub fn mul(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Mul, a, b)
    }
    pub fn div(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Div, a, b)
    }
    pub fn max(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Max, a, b)
    }
    pub fn min(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Min, a, b)
    }
    pub fn pow(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary_op(Binary::Pow, a, b)
    }
    pub fn add_c(&mut self, a: Id, c: f64) -> Result<Id> {
        let s = self.scalar(c);
        self.add(a, s)
    }
    pub fn mul_c(&mut self, a: Id, c: f64) -> Result<Id> {
        let s = self.scalar(c);
        self.mul(a, s)
    }
    /// `c - a`.
    pub fn rsub_c(&mut self, c: f64, a: Id) -> Result<Id> {
        let s = self.scalar(c);
        self.sub(s, a)
    }
    pub fn unary(&mut self, op: Unary, a: Id) -> Result<Id> {
        self.push(Op::Unary(op), &[a])
    }
    pub fn cmp(&mut self, op: Cmp, a: Id, b: Id) -> Result<Id> {
        let (a, b) = if self.ty(a).rank() >= self.ty(b).rank() {
            (a, self.broadcast_like(b, a)?)
        } else {
            (self.broadcast_like(a, b)?, b)
        };
        self.push(Op::Cmp(op), &[a, b])
    }
    pub fn select(&mut self, c: Id, a: Id, b: Id) -> Result<Id> {
        let a = self.broadcast_like(a, c)?;
        let b = self.broadcast_like(b, c)?;
        self.push(Op::Select, &[c, a, b])
    }
    pub fn reshape(&mut self, x: Id, shape: Vec<Dim>) -> Result<Id> {
        if self.ty(x).shape == shape {
            return Ok(x);
        }
        let ty = Type::new(shape, self.ty(x).dtype);
        structural::check_reshape(self.ty(x), &ty)?;
        Ok(self.push_typed(Op::Reshape, &[x], ty))
    }
    pub fn transpose(&mut self, x: Id, perm: Vec<usize>) -> Result<Id> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.push(Op::Transpose { perm }, &[x])
    }
    pub fn reduce(&mut self, op: ReduceOp, x: Id, axes: Vec<usize>) -> Result<Id> {
        if axes.is_empty() {
            return Ok(x);
        }
        self.push(Op::Reduce { op, axes }, &[x])
    }
    /// Sum over `axes`, keeping them as size-1 axes.
    pub fn reduce_keep(&mut self, op: ReduceOp, x: Id, axes: &[usize]) -> Result<Id> {
        let shape = self.ty(x).shape.clone();
        let r = self.reduce(op, x, axes.to_vec())?;
        let kept: Vec<Dim> = shape
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::konst(1)
                } else {
                    d.clone()
                }
            })
            .collect();
        self.reshape(r, kept)
    }
    pub fn matmul(&mut self, a: Id, b: Id, ta: bool, tb: bool) -> Result<Id> {
        self.push(Op::MatMul { ta, tb }, &[a, b])
    }
    pub fn slice(&mut self, x: Id, axis: usize, start: i64, end: i64) -> Result<Id> {
        self.push(
            Op::Slice {
                axis,
                start: Dim::konst(start),
                end: Dim::konst(end),
            },
            &[x],
        )
    }
    pub fn dim_size(&mut self, d: &Dim) -> Id {
        match d.as_const() {
            Some(c) => self.scalar(c as f64),
            None => self.push_typed(Op::DimSize(d.clone()), &[], Type::f32(vec![])),
        }
    }

    /// The textual form printed by `kiln ir`.
    pub fn print(&self) -> String {
        let mut s = String::new();
        let ins: Vec<String> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| format!("    %in{i}: {} \"{}\"", fmt_type(&inp.ty), inp.name))
            .collect();
        let _ = writeln!(s, "func @{}(\n{}\n) {{", self.name, ins.join(",\n"));
        for (i, n) in self.nodes.iter().enumerate() {
            if let Op::Input(k) = n.op {
                let _ = writeln!(s, "  %{i} = input %in{k}");
                continue;
            }
            let args: Vec<String> = n.args.iter().map(|a| format!("%{a}")).collect();
            let call = if args.is_empty() {
                String::new()
            } else {
                format!("({})", args.join(", "))
            };
            let _ = writeln!(s, "  %{i} = {}{call} : {}", fmt_op(&n.op), fmt_type(&n.ty));
        }
        let outs: Vec<String> = self
            .outputs
            .iter()
            .map(|(n, id)| format!("\"{n}\" = %{id}"))
            .collect();
        let _ = writeln!(s, "  return {}\n}}", outs.join(", "));
        s
    }
}

pub fn fmt_type(t: &Type) -> String {
    format!("{}{}", t.dtype.name(), fmt_shape(&t.shape))
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The name of an op in the textual form (`reduce_sum`, `pool_max_grad`, `cmp_lt`); the
/// reader finds ops by this name, so printer and reader cannot disagree on it.
pub fn op_name(op: &Op) -> String {
    let lower = |d: &dyn fmt::Debug| format!("{d:?}").to_lowercase();
    match op {
        Op::Input(_) => "input".into(),
        Op::Const(_) => "const".into(),
        Op::Iota { .. } => "iota".into(),
        Op::DimSize(_) => "dim_size".into(),
        Op::Rng { .. } => "rng_uniform".into(),
        Op::Unary(u) => lower(u),
        Op::Binary(b) => lower(b),
        Op::Cmp(c) => format!("cmp_{}", lower(c)),
        Op::Select => "select".into(),
        Op::Cast(_) => "cast".into(),
        Op::Broadcast { .. } => "broadcast".into(),
        Op::Reshape => "reshape".into(),
        Op::Transpose { .. } => "transpose".into(),
        Op::Slice { .. } => "slice".into(),
        Op::Pad { .. } => "pad".into(),
        Op::Concat { .. } => "concat".into(),
        Op::Reduce { op, .. } => format!("reduce_{}", lower(op)),
        Op::MatMul { .. } => "matmul".into(),
        Op::Conv(_) => "conv".into(),
        Op::ConvInputGrad(_) => "conv_input_grad".into(),
        Op::ConvKernelGrad(_) => "conv_kernel_grad".into(),
        Op::Pool { kind, .. } => format!("pool_{}", lower(kind)),
        Op::PoolGrad { kind, .. } => format!("pool_{}_grad", lower(kind)),
        Op::Gather => "gather".into(),
        Op::ScatterAdd => "scatter_add".into(),
        Op::Rnn(_) => "rnn".into(),
        Op::RnnGrad { .. } => "rnn_grad".into(),
    }
}

/// An op as printed: its name, then its attributes in brackets (the reader in
/// `parse.rs` reads exactly these forms).
fn fmt_op(op: &Op) -> String {
    let name = op_name(op);
    match op {
        Op::Input(i) => format!("{name} {i}"),
        Op::Const(c) => format!("{name} {c:?}"),
        Op::Iota { axis } => format!("{name}[axis={axis}]"),
        Op::DimSize(d) => format!("{name}[{d}]"),
        Op::Rng { salt } => format!("{name}[salt={salt}]"),
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Cmp(_)
        | Op::Select
        | Op::Reshape
        | Op::Gather
        | Op::ScatterAdd => name,
        Op::Cast(t) => format!("{name}[{}]", t.name()),
        Op::Broadcast { dims } => format!("{name}[dims=({})]", list(dims)),
        Op::Transpose { perm } => format!("{name}[perm=({})]", list(perm)),
        Op::Slice { axis, start, end } => format!("{name}[axis={axis}, {start}..{end}]"),
        Op::Pad { axis, low, high } => format!("{name}[axis={axis}, low={low}, high={high}]"),
        Op::Concat { axis } => format!("{name}[axis={axis}]"),
        Op::Reduce { axes, .. } => format!("{name}[axes=({})]", list(axes)),
        Op::MatMul { ta, tb } => format!("{name}[ta={ta}, tb={tb}]"),
        Op::Conv(a) | Op::ConvInputGrad(a) | Op::ConvKernelGrad(a) => format!("{name}[{a}]"),
        Op::Pool { attrs, .. } | Op::PoolGrad { attrs, .. } => format!("{name}[{attrs}]"),
        Op::Rnn(a) => format!("{name}[{a}]"),
        Op::RnnGrad { attrs, wrt } => format!("{name}[{attrs}, wrt={wrt}]"),
    }
}
