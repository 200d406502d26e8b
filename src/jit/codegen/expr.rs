//! Fused expressions in CLIF: one node at a time, in scalar or f32x4 form; the
//! operations themselves are written once for both (`compute`).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::{Gen, flags};
use crate::ir::{Binary, Cmp, ReduceOp, Unary};
use crate::jit::mathfn::Math;
use crate::jit::plan::{Expr, LoopKernel};

impl Gen<'_> {
    /// vector mode `j` is the inner index of lane 0 and loads read 4 lanes at `row`.
    pub(super) fn expr_all(
        &mut self,
        k: &LoopKernel,
        vals: &mut [Option<Value>],
        idx: &[Value],
        j: Option<Value>,
        row: &[Value],
        vector: bool,
    ) -> Value {
        for e in 0..k.expr.len() {
            if vals[e].is_some() {
                continue;
            }
            let v = if vector {
                self.expr_vector(&k.expr[e], vals, j.expect("vector index"), row)
            } else {
                self.expr_scalar(&k.expr[e], vals, idx, &[], row)
            };
            vals[e] = Some(v);
        }
        vals[k.expr.len() - 1].expect("result")
    }

    pub(super) fn expr_tail(
        &mut self,
        k: &LoopKernel,
        vals: &mut [Option<Value>],
        idx: &[Value],
        i: Value,
        ptrs: &[Value],
    ) -> Value {
        let mut full = idx.to_vec();
        full.push(i);
        for e in 0..k.expr.len() {
            if vals[e].is_some() {
                continue;
            }
            let v = self.expr_scalar(&k.expr[e], vals, &full, ptrs, &[]);
            vals[e] = Some(v);
        }
        vals[k.expr.len() - 1].expect("result")
    }

    /// One expression node in scalar form. `ptrs` are per-element pointers (tail) or
    /// empty, in which case loads read at `row` (row-invariant loads).
    pub(super) fn expr_scalar(
        &mut self,
        e: &Expr,
        vals: &[Option<Value>],
        idx: &[Value],
        ptrs: &[Value],
        row: &[Value],
    ) -> Value {
        let fma = self.fma;
        let mut m = Math {
            b: &mut self.b,
            ty: types::F32,
            fma,
        };
        let get = |i: usize| vals[i].expect("operand computed");
        match e {
            Expr::Load(l) => {
                let p = if ptrs.is_empty() { row[*l] } else { ptrs[*l] };
                m.b.ins().load(types::F32, flags(), p, 0)
            }
            Expr::Const(c) => m.c(*c as f32),
            Expr::Size(s) => {
                let v = m.b.ins().load(
                    types::I64,
                    super::frame_flags(),
                    self.frame,
                    (*s * 8) as i32,
                );
                m.b.ins().fcvt_from_sint(types::F32, v)
            }
            Expr::Index(axis) => {
                let i = idx[*axis];
                m.b.ins().fcvt_from_sint(types::F32, i)
            }
            _ => compute(&mut m, e, &get),
        }
    }

    pub(super) fn expr_vector(
        &mut self,
        e: &Expr,
        vals: &[Option<Value>],
        j: Value,
        row: &[Value],
    ) -> Value {
        let fma = self.fma;
        let mut m = Math {
            b: &mut self.b,
            ty: types::F32X4,
            fma,
        };
        let get = |i: usize| vals[i].expect("operand computed");
        match e {
            Expr::Load(l) => {
                let off = m.b.ins().ishl_imm_u(j, 2);
                let p = m.b.ins().iadd(row[*l], off);
                m.b.ins().load(types::F32X4, flags(), p, 0)
            }
            Expr::Index(_) => {
                // Only the inner axis varies here: lanes j, j+1, j+2, j+3.
                let j32 = m.b.ins().ireduce(types::I32, j);
                let s = m.b.ins().splat(types::I32X4, j32);
                let lanes = lane_ids(m.b);
                let v = m.b.ins().iadd(s, lanes);
                m.b.ins().fcvt_from_sint(types::F32X4, v)
            }
            Expr::Const(_) | Expr::Size(_) => unreachable!("invariant values are hoisted"),
            _ => compute(&mut m, e, &get),
        }
    }
}

/// The operations on already computed operands, the same for scalars and vectors.
pub(super) fn compute(m: &mut Math, e: &Expr, get: &dyn Fn(usize) -> Value) -> Value {
    match e {
        Expr::Unary(u, a) => unary(m, *u, get(*a)),
        Expr::Binary(op, a, b) => binary(m, *op, get(*a), get(*b)),
        Expr::Cmp(c, a, b) => {
            let mask = m.mask(float_cc(*c), get(*a), get(*b));
            m.mask_to_float(mask)
        }
        Expr::Select(c, a, b) => {
            let zero = m.c(0.0);
            let mask = m.mask(FloatCC::NotEqual, get(*c), zero);
            m.pick(mask, get(*a), get(*b))
        }
        Expr::Trunc(a) => m.b.ins().trunc(get(*a)),
        Expr::Load(_) | Expr::Const(_) | Expr::Size(_) | Expr::Index(_) => {
            unreachable!("leaves are handled by the caller")
        }
    }
}

fn lane_ids(b: &mut FunctionBuilder) -> Value {
    let z = b.ins().iconst(types::I32, 0);
    let v = b.ins().splat(types::I32X4, z);
    let mut v = v;
    for lane in 1..4u8 {
        let c = b.ins().iconst(types::I32, lane as i64);
        v = b.ins().insertlane(v, c, lane);
    }
    v
}

pub(super) fn combine(b: &mut FunctionBuilder, op: ReduceOp, a: Value, x: Value) -> Value {
    match op {
        ReduceOp::Sum => b.ins().fadd(a, x),
        ReduceOp::Max => b.ins().fmax(a, x),
    }
}

fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::NotEqual,
    }
}

fn unary(m: &mut Math, u: Unary, a: Value) -> Value {
    match u {
        Unary::Neg => m.b.ins().fneg(a),
        Unary::Exp => m.exp(a),
        Unary::Log => m.log(a),
        Unary::Log1p => m.log1p(a),
        Unary::Tanh => m.tanh(a),
        Unary::Sqrt => m.b.ins().sqrt(a),
        Unary::Rsqrt => {
            let s = m.b.ins().sqrt(a);
            let one = m.c(1.0);
            m.b.ins().fdiv(one, s)
        }
        Unary::Abs => m.b.ins().fabs(a),
        Unary::Sign => m.sign(a),
        Unary::Erf => m.erf(a),
        Unary::Sigmoid => m.sigmoid(a),
        Unary::Floor => m.b.ins().floor(a),
    }
}

fn binary(m: &mut Math, op: Binary, a: Value, b: Value) -> Value {
    match op {
        Binary::Add => m.b.ins().fadd(a, b),
        Binary::Sub => m.b.ins().fsub(a, b),
        Binary::Mul => m.b.ins().fmul(a, b),
        Binary::Div => m.b.ins().fdiv(a, b),
        Binary::Max => m.b.ins().fmax(a, b),
        Binary::Min => m.b.ins().fmin(a, b),
        Binary::Pow => {
            let l = m.log(a);
            let t = m.b.ins().fmul(b, l);
            m.exp(t)
        }
    }
}
