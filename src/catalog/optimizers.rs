//! Optimizers with Keras 3's formulas and order: gradient clipping (clipnorm per
//! variable, else global_clipnorm, else clipvalue), then weight decay
//! (`w -= w * weight_decay * lr`), then the optimizer's own rule — all as graph IR.

use super::{entry, find, schedules};
use crate::args::{
    ArgKind, ArgSpec, Args, Default, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, Value, arg, float_range,
};
use crate::ir::{Func, Id, ReduceOp, Result, Unary};

/// One variable being updated: its value, gradient (clipped), state slots (in the
/// optimizer's `slots` order), `t` = iterations + 1 and the learning rate.
#[derive(Clone, Copy, Debug)]
pub struct Var<'a> {
    pub w: Id,
    pub g: Id,
    pub state: &'a [Id],
    pub t: Id,
    pub lr: Id,
}

/// A variable's new value and new state slots.
pub type Updated = (Id, Vec<Id>);

/// An optimizer.
pub struct OptimizerKind {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Its own arguments, then the clipping and weight-decay ones every optimizer takes.
    pub args: &'static [ArgSpec],
    /// The state it keeps per variable (Keras's variable names), given its arguments.
    pub slots: fn(&Args) -> Vec<&'static str>,
    /// Its own rule (after clipping and weight decay): the new variable and new slots.
    pub rule: fn(&mut Func, &Args, Var) -> Result<Updated>,
}
entry!(OptimizerKind, Optimizer);

impl OptimizerKind {
    /// One variable's update: weight decay, then the rule.
    pub fn update(&self, f: &mut Func, args: &Args, var: Var) -> Result<Updated> {
        let mut var = var;
        if let Some(wd) = opt_float(args.get("weight_decay"))
            && wd > 0.0
        {
            let k = f.mul_c(var.lr, wd)?;
            let d = f.mul(var.w, k)?;
            var.w = f.sub(var.w, d)?;
        }
        (self.rule)(f, args, var)
    }
}

fn opt_float(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

fn sum_sq(f: &mut Func, g: Id) -> Result<Id> {
    let g2 = f.mul(g, g)?;
    let axes: Vec<usize> = (0..f.ty(g).rank()).collect();
    f.reduce(ReduceOp::Sum, g2, axes)
}

/// `g * c / max(norm, c)` (Keras's clip_by_norm / clip_by_global_norm).
fn scale_to(f: &mut Func, g: Id, norm: Id, c: f64) -> Result<Id> {
    let cc = f.scalar(c);
    let d = f.max(norm, cc)?;
    let s = f.div(cc, d)?;
    f.mul(g, s)
}

/// Applies the optimizer's clipping (`clipnorm`, `global_clipnorm`, `clipvalue`) to
/// all gradients.
pub fn clip(f: &mut Func, args: &Args, grads: &[Id]) -> Result<Vec<Id>> {
    if let Some(c) = opt_float(args.get("clipnorm")) {
        return grads
            .iter()
            .map(|&g| {
                let s = sum_sq(f, g)?;
                let n = f.unary(Unary::Sqrt, s)?;
                scale_to(f, g, n, c)
            })
            .collect();
    }
    if let Some(c) = opt_float(args.get("global_clipnorm")) {
        let mut total = f.scalar(0.0);
        for &g in grads {
            let s = sum_sq(f, g)?;
            total = f.add(total, s)?;
        }
        let n = f.unary(Unary::Sqrt, total)?;
        return grads.iter().map(|&g| scale_to(f, g, n, c)).collect();
    }
    if let Some(c) = opt_float(args.get("clipvalue")) {
        return grads
            .iter()
            .map(|&g| {
                let lo = f.scalar(-c);
                let hi = f.scalar(c);
                let x = f.max(g, lo)?;
                f.min(x, hi)
            })
            .collect();
    }
    Ok(grads.to_vec())
}

/// The arguments every optimizer takes: at most one clipping rule, and weight decay.
pub const CLIPPING: [&str; 3] = ["clipnorm", "clipvalue", "global_clipnorm"];
const CLIPNORM: ArgSpec = arg("clipnorm", POSITIVE_FLOAT, Default::Null);
const CLIPVALUE: ArgSpec = arg("clipvalue", POSITIVE_FLOAT, Default::Null);
const GLOBAL_CLIPNORM: ArgSpec = arg("global_clipnorm", POSITIVE_FLOAT, Default::Null);
const fn weight_decay(d: Default) -> ArgSpec {
    arg("weight_decay", NON_NEGATIVE_FLOAT, d)
}
const fn learning_rate(d: f64) -> ArgSpec {
    arg("learning_rate", schedules::LEARNING_RATE, Default::Float(d))
}
const BETA: ArgKind = ArgKind::Float {
    min: 0.0,
    max: 1.0,
    min_open: false,
    max_open: true,
};
const MOMENTUM: ArgSpec = arg("momentum", float_range(0.0, 1.0), Default::Float(0.0));
const EPSILON: ArgSpec = arg("epsilon", POSITIVE_FLOAT, Default::Float(1e-7));

fn sgd(f: &mut Func, a: &Args, v: Var) -> Result<Updated> {
    let momentum = a.float("momentum");
    let step = f.mul(v.g, v.lr)?;
    if momentum == 0.0 {
        return Ok((f.sub(v.w, step)?, vec![]));
    }
    let mm = f.mul_c(v.state[0], momentum)?;
    let m = f.sub(mm, step)?;
    let nw = if a.bool("nesterov") {
        let mm2 = f.mul_c(m, momentum)?;
        let inc = f.sub(mm2, step)?;
        f.add(v.w, inc)?
    } else {
        f.add(v.w, m)?
    };
    Ok((nw, vec![m]))
}

pub static SGD: OptimizerKind = OptimizerKind {
    name: "sgd",
    aliases: &[],
    args: &[
        learning_rate(0.01),
        MOMENTUM,
        arg("nesterov", ArgKind::Bool, Default::Bool(false)),
        CLIPNORM,
        CLIPVALUE,
        GLOBAL_CLIPNORM,
        weight_decay(Default::Null),
    ],
    slots: |a| {
        if a.float("momentum") != 0.0 {
            vec!["momentum"]
        } else {
            vec![]
        }
    },
    rule: sgd,
};

fn adam(f: &mut Func, a: &Args, v: Var) -> Result<Updated> {
    let (b1, b2, eps) = (a.float("beta_1"), a.float("beta_2"), a.float("epsilon"));
    let (m, vel) = (v.state[0], v.state[1]);
    let d = f.sub(v.g, m)?;
    let dm = f.mul_c(d, 1.0 - b1)?;
    let m = f.add(m, dm)?;
    let g2 = f.mul(v.g, v.g)?;
    let dv0 = f.sub(g2, vel)?;
    let dv = f.mul_c(dv0, 1.0 - b2)?;
    let vel = f.add(vel, dv)?;
    // alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)
    let cb1 = f.scalar(b1);
    let cb2 = f.scalar(b2);
    let p1 = f.pow(cb1, v.t)?;
    let p2 = f.pow(cb2, v.t)?;
    let c1 = f.rsub_c(1.0, p1)?;
    let c2 = f.rsub_c(1.0, p2)?;
    let s2 = f.unary(Unary::Sqrt, c2)?;
    let num = f.mul(v.lr, s2)?;
    let alpha = f.div(num, c1)?;
    let sv = f.unary(Unary::Sqrt, vel)?;
    let den = f.add_c(sv, eps)?;
    let ma = f.mul(m, alpha)?;
    let step = f.div(ma, den)?;
    Ok((f.sub(v.w, step)?, vec![m, vel]))
}

const ADAM_ARGS: [ArgSpec; 4] = [
    learning_rate(0.001),
    arg("beta_1", BETA, Default::Float(0.9)),
    arg("beta_2", BETA, Default::Float(0.999)),
    EPSILON,
];

pub static ADAM: OptimizerKind = OptimizerKind {
    name: "adam",
    aliases: &[],
    args: &[
        ADAM_ARGS[0],
        ADAM_ARGS[1],
        ADAM_ARGS[2],
        ADAM_ARGS[3],
        CLIPNORM,
        CLIPVALUE,
        GLOBAL_CLIPNORM,
        weight_decay(Default::Null),
    ],
    slots: |_| vec!["momentum", "velocity"],
    rule: adam,
};

/// Adam with decoupled weight decay on by default (Keras's AdamW: 0.004).
pub static ADAMW: OptimizerKind = OptimizerKind {
    name: "adamw",
    aliases: &[],
    args: &[
        ADAM_ARGS[0],
        ADAM_ARGS[1],
        ADAM_ARGS[2],
        ADAM_ARGS[3],
        CLIPNORM,
        CLIPVALUE,
        GLOBAL_CLIPNORM,
        weight_decay(Default::Float(0.004)),
    ],
    slots: |_| vec!["momentum", "velocity"],
    rule: adam,
};

fn rmsprop(f: &mut Func, a: &Args, v: Var) -> Result<Updated> {
    let (rho, momentum, eps) = (a.float("rho"), a.float("momentum"), a.float("epsilon"));
    // Slots, in order: velocity, momentum (if > 0), average_gradient (centered).
    let mut slot = v.state.iter().copied();
    let vel0 = slot
        .next()
        .ok_or_else(|| crate::ir::IrError("rmsprop state".into()))?;
    let mom0 = if momentum > 0.0 { slot.next() } else { None };
    let avg0 = if a.bool("centered") {
        slot.next()
    } else {
        None
    };
    let vr = f.mul_c(vel0, rho)?;
    let g2 = f.mul(v.g, v.g)?;
    let g2r = f.mul_c(g2, 1.0 - rho)?;
    let vel = f.add(vr, g2r)?;
    let mut new_state = vec![vel];
    let avg = match avg0 {
        Some(avg0) => {
            let ar = f.mul_c(avg0, rho)?;
            let gr = f.mul_c(v.g, 1.0 - rho)?;
            Some(f.add(ar, gr)?)
        }
        None => None,
    };
    let den = match avg {
        Some(avg) => {
            let a2 = f.mul(avg, avg)?;
            let d = f.sub(vel, a2)?;
            f.add_c(d, eps)?
        }
        None => f.add_c(vel, eps)?,
    };
    let sd = f.unary(Unary::Sqrt, den)?;
    let gl = f.mul(v.g, v.lr)?;
    let inc = f.div(gl, sd)?;
    let nw = match mom0 {
        Some(m0) => {
            let mm = f.mul_c(m0, momentum)?;
            let mom = f.add(mm, inc)?;
            new_state.push(mom);
            f.sub(v.w, mom)?
        }
        None => f.sub(v.w, inc)?,
    };
    new_state.extend(avg);
    Ok((nw, new_state))
}

pub static RMSPROP: OptimizerKind = OptimizerKind {
    name: "rmsprop",
    aliases: &[],
    args: &[
        learning_rate(0.001),
        arg("rho", BETA, Default::Float(0.9)),
        MOMENTUM,
        EPSILON,
        arg("centered", ArgKind::Bool, Default::Bool(false)),
        CLIPNORM,
        CLIPVALUE,
        GLOBAL_CLIPNORM,
        weight_decay(Default::Null),
    ],
    slots: |a| {
        let mut s = vec!["velocity"];
        if a.float("momentum") > 0.0 {
            s.push("momentum");
        }
        if a.bool("centered") {
            s.push("average_gradient");
        }
        s
    },
    rule: rmsprop,
};

/// Every optimizer, with Keras's argument names and defaults.
pub static OPTIMIZERS: &[&OptimizerKind] = &[&SGD, &ADAM, &ADAMW, &RMSPROP];

/// The optimizer Keras's `compile` uses when none is given.
pub static DEFAULT: &OptimizerKind = &RMSPROP;

/// The optimizer called `name` (or an alias), exactly as written.
pub fn lookup(name: &str) -> Option<&'static OptimizerKind> {
    find(OPTIMIZERS, name)
}
