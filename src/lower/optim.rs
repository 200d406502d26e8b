//! Optimizer updates as graph IR, with Keras 3's formulas and order: gradient clipping
//! (clipnorm per variable, else global_clipnorm, else clipvalue), then weight decay
//! (`w -= w * weight_decay * lr`), then the optimizer's own rule.

use crate::args::Value;
use crate::ir::{Func, Id, ReduceOp, Result, Unary, err};
use crate::spec::train::Named;

/// The state slots an optimizer keeps per variable (Keras's variable names).
pub fn slots(opt: &Named) -> Vec<&'static str> {
    let a = &opt.args;
    match opt.name.as_str() {
        "sgd" if a.float("momentum") != 0.0 => vec!["momentum"],
        "adam" | "adamw" => vec!["momentum", "velocity"],
        "rmsprop" => {
            let mut s = vec!["velocity"];
            if a.float("momentum") > 0.0 {
                s.push("momentum");
            }
            if a.bool("centered") {
                s.push("average_gradient");
            }
            s
        }
        _ => vec![],
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

/// Applies clipping to all gradients.
pub fn clip(f: &mut Func, opt: &Named, grads: &[Id]) -> Result<Vec<Id>> {
    let a = &opt.args;
    if let Some(c) = opt_float(a.get("clipnorm")) {
        return grads
            .iter()
            .map(|&g| {
                let s = sum_sq(f, g)?;
                let n = f.unary(Unary::Sqrt, s)?;
                scale_to(f, g, n, c)
            })
            .collect();
    }
    if let Some(c) = opt_float(a.get("global_clipnorm")) {
        let mut total = f.scalar(0.0);
        for &g in grads {
            let s = sum_sq(f, g)?;
            total = f.add(total, s)?;
        }
        let n = f.unary(Unary::Sqrt, total)?;
        return grads.iter().map(|&g| scale_to(f, g, n, c)).collect();
    }
    if let Some(c) = opt_float(a.get("clipvalue")) {
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

/// One variable's update. `state` holds the current slot values in `slots` order;
/// returns the new variable and the new slot values. `t` is iterations + 1.
pub fn update(
    f: &mut Func,
    opt: &Named,
    w: Id,
    g: Id,
    state: &[Id],
    t: Id,
    lr: Id,
) -> Result<(Id, Vec<Id>)> {
    let a = &opt.args;
    let mut w = w;
    if let Some(wd) = opt_float(a.get("weight_decay"))
        && wd > 0.0
    {
        let k = f.mul_c(lr, wd)?;
        let d = f.mul(w, k)?;
        w = f.sub(w, d)?;
    }
    match opt.name.as_str() {
        "sgd" => {
            let momentum = a.float("momentum");
            let step = f.mul(g, lr)?;
            if momentum == 0.0 {
                return Ok((f.sub(w, step)?, vec![]));
            }
            let mm = f.mul_c(state[0], momentum)?;
            let m = f.sub(mm, step)?;
            let nw = if a.bool("nesterov") {
                let mm2 = f.mul_c(m, momentum)?;
                let inc = f.sub(mm2, step)?;
                f.add(w, inc)?
            } else {
                f.add(w, m)?
            };
            Ok((nw, vec![m]))
        }
        "adam" | "adamw" => {
            let (b1, b2, eps) = (a.float("beta_1"), a.float("beta_2"), a.float("epsilon"));
            let (m, v) = (state[0], state[1]);
            let d = f.sub(g, m)?;
            let dm = f.mul_c(d, 1.0 - b1)?;
            let m = f.add(m, dm)?;
            let g2 = f.mul(g, g)?;
            let dv0 = f.sub(g2, v)?;
            let dv = f.mul_c(dv0, 1.0 - b2)?;
            let v = f.add(v, dv)?;
            // alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)
            let cb1 = f.scalar(b1);
            let cb2 = f.scalar(b2);
            let p1 = f.pow(cb1, t)?;
            let p2 = f.pow(cb2, t)?;
            let c1 = f.rsub_c(1.0, p1)?;
            let c2 = f.rsub_c(1.0, p2)?;
            let s2 = f.unary(Unary::Sqrt, c2)?;
            let num = f.mul(lr, s2)?;
            let alpha = f.div(num, c1)?;
            let sv = f.unary(Unary::Sqrt, v)?;
            let den = f.add_c(sv, eps)?;
            let ma = f.mul(m, alpha)?;
            let step = f.div(ma, den)?;
            Ok((f.sub(w, step)?, vec![m, v]))
        }
        "rmsprop" => {
            let (rho, momentum, eps) = (a.float("rho"), a.float("momentum"), a.float("epsilon"));
            // Slots, in order: velocity, momentum (if > 0), average_gradient (centered).
            let mut slot = state.iter().copied();
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
            let g2 = f.mul(g, g)?;
            let g2r = f.mul_c(g2, 1.0 - rho)?;
            let vel = f.add(vr, g2r)?;
            let mut new_state = vec![vel];
            let avg = match avg0 {
                Some(avg0) => {
                    let ar = f.mul_c(avg0, rho)?;
                    let gr = f.mul_c(g, 1.0 - rho)?;
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
            let gl = f.mul(g, lr)?;
            let inc = f.div(gl, sd)?;
            let nw = match mom0 {
                Some(m0) => {
                    let mm = f.mul_c(m0, momentum)?;
                    let mom = f.add(mm, inc)?;
                    new_state.push(mom);
                    f.sub(w, mom)?
                }
                None => f.sub(w, inc)?,
            };
            new_state.extend(avg);
            Ok((nw, new_state))
        }
        other => err(format!("unknown optimizer {other}")),
    }
}
