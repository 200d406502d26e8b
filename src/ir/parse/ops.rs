//! The ops of the textual form: one template of each kind (named by the printer),
//! how many arguments each takes, reading attributes, and checking a node's type.

use std::ops::RangeInclusive;

use super::{PResult, Parser};
use crate::dim::Dim;
use crate::ir::rnn::CELL_ACTIVATIONS;
use crate::ir::{
    Binary, Cell, Cmp, ConvAttrs, DType, Func, Id, Op, Padding, PoolKind, ReduceOp, RnnAttrs, Type,
    Unary, WindowAttrs, err, fmt_type, infer, op_name, structural,
};

/// One op of every kind, with placeholder attributes.
pub(super) fn templates() -> Vec<(String, Op)> {
    let zero = Dim::konst(0);
    let conv = ConvAttrs {
        strides: vec![],
        dilation: vec![],
        padding: Padding::Valid,
        groups: 1,
    };
    let window = WindowAttrs {
        window: vec![],
        strides: vec![],
        padding: Padding::Valid,
    };
    let rnn = RnnAttrs {
        cell: Cell::Simple,
        units: 0,
        activation: String::new(),
        recurrent_activation: String::new(),
        return_sequences: false,
        go_backwards: false,
        reset_after: false,
        use_bias: false,
        masked: false,
        zero_output: false,
        dropout: false,
    };
    let mut ops = vec![
        Op::Input(0),
        Op::Const(0.0),
        Op::Iota { axis: 0 },
        Op::DimSize(zero.clone()),
        Op::Rng { salt: 0 },
        Op::Select,
        Op::Cast(DType::F32),
        Op::Broadcast { dims: vec![] },
        Op::Reshape,
        Op::Transpose { perm: vec![] },
        Op::Slice {
            axis: 0,
            start: zero.clone(),
            end: zero.clone(),
        },
        Op::Pad {
            axis: 0,
            low: zero.clone(),
            high: zero,
        },
        Op::Concat { axis: 0 },
        Op::MatMul {
            ta: false,
            tb: false,
        },
        Op::Conv(conv.clone()),
        Op::ConvInputGrad(conv.clone()),
        Op::ConvKernelGrad(conv),
        Op::Gather,
        Op::ScatterAdd,
        Op::Rnn(rnn.clone()),
        Op::RnnGrad { attrs: rnn, wrt: 0 },
    ];
    ops.extend(Unary::ALL.map(Op::Unary));
    ops.extend(Binary::ALL.map(Op::Binary));
    ops.extend(Cmp::ALL.map(Op::Cmp));
    ops.extend(ReduceOp::ALL.map(|op| Op::Reduce { op, axes: vec![] }));
    for kind in PoolKind::ALL {
        let attrs = window.clone();
        ops.push(Op::Pool {
            kind,
            attrs: attrs.clone(),
        });
        ops.push(Op::PoolGrad { kind, attrs });
    }
    ops.into_iter().map(|op| (op_name(&op), op)).collect()
}

/// How many arguments an op takes.
fn arity(op: &Op) -> RangeInclusive<usize> {
    match op {
        Op::Input(_) | Op::Const(_) | Op::Iota { .. } | Op::DimSize(_) => 0..=0,
        Op::Rng { .. }
        | Op::Unary(_)
        | Op::Cast(_)
        | Op::Broadcast { .. }
        | Op::Reshape
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Reduce { .. }
        | Op::Pool { .. } => 1..=1,
        Op::Binary(_)
        | Op::Cmp(_)
        | Op::MatMul { .. }
        | Op::Conv(_)
        | Op::ConvInputGrad(_)
        | Op::ConvKernelGrad(_)
        | Op::PoolGrad { .. }
        | Op::Gather
        | Op::ScatterAdd => 2..=2,
        Op::Select => 3..=3,
        Op::Concat { .. } => 1..=usize::MAX,
        // (x, kernel, recurrent kernel[, bias]), and dy after them for the gradient.
        // A mask and two keep masks may follow.
        Op::Rnn(_) => 3..=7,
        Op::RnnGrad { .. } => 4..=8,
    }
}

impl Parser<'_> {
    fn padding(&mut self) -> PResult<Padding> {
        let w = self.peek_word();
        match Padding::ALL.into_iter().find(|p| p.name() == w) {
            Some(p) => self.keyword(w).map(|_| p),
            None => self.error_here("a padding (`valid`, `same`, `causal`)"),
        }
    }

    fn activation(&mut self) -> PResult<String> {
        let w = self.peek_word();
        if CELL_ACTIVATIONS.contains(&w) {
            self.keyword(w).map(|_| w.to_string())
        } else {
            self.error_here("a recurrent cell's activation")
        }
    }

    /// An op and its attributes, by its printed name.
    pub(super) fn op(&mut self, word: &str, pos: usize) -> PResult<Op> {
        let Some((_, template)) = self.templates.iter().find(|(n, _)| n == word) else {
            return self.error_at(pos, format!("unknown op `{word}`"));
        };
        Ok(match template.clone() {
            Op::Input(_) => return self.error_at(pos, "`input` takes an input (`input %in0`)"),
            Op::Const(_) => Op::Const(self.float()?),
            Op::Iota { .. } => Op::Iota {
                axis: self.bracketed(|p| p.key("axis").and_then(|_| p.usize()))?,
            },
            Op::DimSize(_) => Op::DimSize(self.bracketed(|p| p.dim(0))?),
            Op::Rng { .. } => Op::Rng {
                salt: self.bracketed(|p| p.key("salt").and_then(|_| p.number("a salt")))?,
            },
            Op::Cast(_) => Op::Cast(self.bracketed(|p| p.dtype())?),
            Op::Broadcast { .. } => Op::Broadcast {
                dims: self.bracketed(|p| p.axes("dims"))?,
            },
            Op::Transpose { .. } => Op::Transpose {
                perm: self.bracketed(|p| p.axes("perm"))?,
            },
            Op::Reduce { op, .. } => Op::Reduce {
                op,
                axes: self.bracketed(|p| p.axes("axes"))?,
            },
            Op::Concat { .. } => Op::Concat {
                axis: self.bracketed(|p| p.key("axis").and_then(|_| p.usize()))?,
            },
            Op::Slice { .. } => self.bracketed(|p| {
                p.key("axis")?;
                let axis = p.usize()?;
                p.expect(",")?;
                let start = p.dim(0)?;
                p.expect("..")?;
                let end = p.dim(0)?;
                Ok(Op::Slice { axis, start, end })
            })?,
            Op::Pad { .. } => self.bracketed(|p| {
                p.key("axis")?;
                let axis = p.usize()?;
                p.expect(",")?;
                p.key("low")?;
                let low = p.dim(0)?;
                p.expect(",")?;
                p.key("high")?;
                let high = p.dim(0)?;
                Ok(Op::Pad { axis, low, high })
            })?,
            Op::MatMul { .. } => self.bracketed(|p| {
                p.key("ta")?;
                let ta = p.bool()?;
                p.expect(",")?;
                p.key("tb")?;
                let tb = p.bool()?;
                Ok(Op::MatMul { ta, tb })
            })?,
            Op::Conv(_) => Op::Conv(self.bracketed(|p| p.conv_attrs())?),
            Op::ConvInputGrad(_) => Op::ConvInputGrad(self.bracketed(|p| p.conv_attrs())?),
            Op::ConvKernelGrad(_) => Op::ConvKernelGrad(self.bracketed(|p| p.conv_attrs())?),
            Op::Pool { kind, .. } => Op::Pool {
                kind,
                attrs: self.bracketed(|p| p.window_attrs())?,
            },
            Op::PoolGrad { kind, .. } => Op::PoolGrad {
                kind,
                attrs: self.bracketed(|p| p.window_attrs())?,
            },
            Op::Rnn(_) => Op::Rnn(self.bracketed(|p| p.rnn_attrs())?),
            Op::RnnGrad { .. } => self.bracketed(|p| {
                let attrs = p.rnn_attrs()?;
                p.expect(",")?;
                p.key("wrt")?;
                let wrt = p.usize()?;
                Ok(Op::RnnGrad { attrs, wrt })
            })?,
            op @ (Op::Unary(_)
            | Op::Binary(_)
            | Op::Cmp(_)
            | Op::Select
            | Op::Reshape
            | Op::Gather
            | Op::ScatterAdd) => op,
        })
    }

    /// `key=(0,1)`.
    fn axes(&mut self, key: &str) -> PResult<Vec<usize>> {
        self.key(key)?;
        self.list("(", ")", |p| p.usize())
    }

    /// `key=[1, 1]`.
    fn ints(&mut self, key: &str) -> PResult<Vec<i64>> {
        self.key(key)?;
        self.list("[", "]", |p| p.int())
    }

    /// `strides=[1, 1], dilation=[1, 1], padding=valid, groups=1`.
    fn conv_attrs(&mut self) -> PResult<ConvAttrs> {
        let strides = self.ints("strides")?;
        self.expect(",")?;
        let dilation = self.ints("dilation")?;
        self.expect(",")?;
        self.key("padding")?;
        let padding = self.padding()?;
        self.expect(",")?;
        self.key("groups")?;
        let groups = self.int()?;
        Ok(ConvAttrs {
            strides,
            dilation,
            padding,
            groups,
        })
    }

    /// `window=[2, 2], strides=[2, 2], padding=valid`.
    fn window_attrs(&mut self) -> PResult<WindowAttrs> {
        let window = self.ints("window")?;
        self.expect(",")?;
        let strides = self.ints("strides")?;
        self.expect(",")?;
        self.key("padding")?;
        let padding = self.padding()?;
        Ok(WindowAttrs {
            window,
            strides,
            padding,
        })
    }

    /// `Lstm, units=64, activation=tanh[, recurrent_activation=sigmoid][, reset_after=true],
    /// return_sequences=true, go_backwards=false`. What the printer leaves out takes the
    /// value the lowering gives it; `use_bias` follows from the argument count.
    fn rnn_attrs(&mut self) -> PResult<RnnAttrs> {
        let w = self.peek_word();
        let Some(cell) = Cell::ALL.into_iter().find(|c| format!("{c:?}") == w) else {
            return self.error_here("a recurrent cell (`Simple`, `Lstm`, `Gru`)");
        };
        self.keyword(w)?;
        self.expect(",")?;
        self.key("units")?;
        let units = self.int()?;
        self.expect(",")?;
        self.key("activation")?;
        let activation = self.activation()?;
        self.expect(",")?;
        let mut recurrent_activation = "sigmoid".to_string();
        if self.peek_word() == "recurrent_activation" {
            self.key("recurrent_activation")?;
            recurrent_activation = self.activation()?;
            self.expect(",")?;
        }
        let mut reset_after = false;
        if self.peek_word() == "reset_after" {
            self.key("reset_after")?;
            reset_after = self.bool()?;
            self.expect(",")?;
        }
        self.key("return_sequences")?;
        let return_sequences = self.bool()?;
        self.expect(",")?;
        self.key("go_backwards")?;
        let go_backwards = self.bool()?;
        let (mut masked, mut zero_output) = (false, false);
        let before = self.pos;
        if self.eat(",") && self.peek_word() == "masked" {
            self.key("masked")?;
            masked = self.bool()?;
            self.expect(",")?;
            self.key("zero_output")?;
            zero_output = self.bool()?;
        } else {
            self.pos = before;
        }
        let mut dropout = false;
        let before = self.pos;
        if self.eat(",") && self.peek_word() == "dropout" {
            self.key("dropout")?;
            dropout = self.bool()?;
        } else {
            self.pos = before;
        }
        Ok(RnnAttrs {
            cell,
            units,
            activation,
            recurrent_activation,
            return_sequences,
            go_backwards,
            reset_after,
            use_bias: false,
            masked,
            zero_output,
            dropout,
        })
    }

    /// The argument count, and the written type against the op's shape rule.
    pub(super) fn check(
        &self,
        f: &Func,
        op: &Op,
        args: &[Id],
        ty: &Type,
        op_pos: usize,
        ty_pos: usize,
    ) -> PResult<()> {
        let want = arity(op);
        if !want.contains(&args.len()) {
            let n = if want.start() == want.end() {
                want.start().to_string()
            } else if *want.end() == usize::MAX {
                format!("at least {}", want.start())
            } else {
                format!("{} to {}", want.start(), want.end())
            };
            let msg = format!("`{}` takes {n} arguments, not {}", op_name(op), args.len());
            return self.error_at(op_pos, msg);
        }
        let arg = |i: usize| f.ty(args[i]);
        let same_dtype = |from: &Type| match from.dtype == ty.dtype {
            true => Ok(()),
            false => err("the element type changes"),
        };
        let verdict = match op {
            // Ops whose type the builder chooses: the rule's own consistency checks.
            Op::Broadcast { dims } => {
                same_dtype(arg(0)).and_then(|_| structural::check_broadcast(arg(0), ty, dims))
            }
            Op::Reshape => same_dtype(arg(0)).and_then(|_| structural::check_reshape(arg(0), ty)),
            Op::Iota { axis } if *axis >= ty.rank() => err("iota axis out of range"),
            Op::ScatterAdd if ty.rank() != 2 => err("scatter_add gives a [rows, d] table"),
            Op::ConvInputGrad(_) | Op::ConvKernelGrad(_) if ty.rank() != arg(0).rank() => {
                err("a convolution gradient keeps its operands' rank")
            }
            Op::Iota { .. }
            | Op::Rng { .. }
            | Op::ScatterAdd
            | Op::ConvInputGrad(_)
            | Op::ConvKernelGrad(_) => Ok(()),
            _ => match infer(f, op, args) {
                Ok(t) if t == *ty => Ok(()),
                Ok(t) => {
                    let msg = format!("the shape rule gives {}, not this type", fmt_type(&t));
                    return self.error_at(ty_pos, msg);
                }
                Err(e) => Err(e),
            },
        };
        match verdict {
            Ok(()) => Ok(()),
            Err(e) => self.error_at(op_pos, format!("`{}`: {}", op_name(op), e.0)),
        }
    }
}
