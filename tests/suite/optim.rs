//! Every optimizer: several training steps (through the whole train-step IR, run by the
//! interpreter in f64) equal a hand-written reference of Keras's formulas, including
//! clipping and weight decay. The model is linear with an MSE loss so the reference
//! gradient is exact: dL/dW = xᵀ·2(xW + b − y)/(B·U).

use kiln::catalog::schedules as schedule;
use kiln::ir::interp;
use kiln::lower::train;
use ndarray::{Array1, Array2, ArrayD, IxDyn};

const B: usize = 4;
const I: usize = 3;
const U: usize = 2;

struct Reference {
    w: Array2<f64>,
    b: Array1<f64>,
    /// Slots per variable, as flat vectors: (w slots, b slots).
    sw: Vec<Vec<f64>>,
    sb: Vec<Vec<f64>>,
}

fn grads(
    w: &Array2<f64>,
    b: &Array1<f64>,
    x: &Array2<f64>,
    y: &Array2<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let p = x.dot(w) + b;
    let d = (p - y) * (2.0 / (B * U) as f64);
    let gw = x.t().dot(&d);
    let gb = d.sum_axis(ndarray::Axis(0));
    (gw.iter().copied().collect(), gb.to_vec())
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// One Keras step on one variable.
fn keras_step(
    opt: &str,
    a: &kiln::args::Args,
    w: &mut [f64],
    g: &[f64],
    s: &mut Vec<f64>,
    t: f64,
    lr: f64,
) {
    let n = w.len();
    if s.is_empty() {
        *s = vec![0.0; 3 * n];
    }
    if let kiln::args::Value::Float(wd) = a.get("weight_decay") {
        for v in w.iter_mut() {
            *v -= *v * wd * lr;
        }
    }
    for i in 0..n {
        match opt {
            "sgd" => {
                let m = a.float("momentum");
                if m == 0.0 {
                    w[i] -= lr * g[i];
                } else {
                    s[i] = m * s[i] - lr * g[i];
                    w[i] += if a.bool("nesterov") {
                        m * s[i] - lr * g[i]
                    } else {
                        s[i]
                    };
                }
            }
            "adam" | "adamw" => {
                let (b1, b2, eps) = (a.float("beta_1"), a.float("beta_2"), a.float("epsilon"));
                s[i] += (g[i] - s[i]) * (1.0 - b1);
                s[n + i] += (g[i] * g[i] - s[n + i]) * (1.0 - b2);
                let alpha = lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
                w[i] -= s[i] * alpha / (s[n + i].sqrt() + eps);
            }
            "rmsprop" => {
                let (rho, mom, eps) = (a.float("rho"), a.float("momentum"), a.float("epsilon"));
                s[i] = rho * s[i] + (1.0 - rho) * g[i] * g[i];
                let den = if a.bool("centered") {
                    s[2 * n + i] = rho * s[2 * n + i] + (1.0 - rho) * g[i];
                    s[i] - s[2 * n + i] * s[2 * n + i] + eps
                } else {
                    s[i] + eps
                };
                let inc = lr * g[i] / den.sqrt();
                if mom > 0.0 {
                    s[n + i] = mom * s[n + i] + inc;
                    w[i] -= s[n + i];
                } else {
                    w[i] -= inc;
                }
            }
            _ => unreachable!(),
        }
    }
}

fn run(optimizer: &str) {
    let src = format!(
        "inputs: {{x: [batch, {I}]}}\nlayers:\n  - dense: {{units: {U}}}\ntrain:\n  targets: {{y: [batch, {U}]}}\n  loss: mse\n  optimizer: {optimizer}\n"
    );
    let m = kiln::Model::from_source(&src, "t", "t").unwrap_or_else(|e| panic!("{e}"));
    let step = train::build(&m.graph).unwrap();
    let opt = &m.graph.train.as_ref().unwrap().decl.optimizer;
    let f = &step.func;
    let x = Array2::from_shape_fn((B, I), |(i, j)| ((i * 3 + j) as f64 * 0.37).sin());
    let y = Array2::from_shape_fn((B, U), |(i, j)| ((i + 2 * j) as f64 * 0.51).cos());
    let mut r = Reference {
        w: Array2::from_shape_fn((I, U), |(i, j)| 0.1 * (i as f64) - 0.2 * (j as f64) + 0.05),
        b: Array1::from_vec(vec![0.1, -0.1]),
        sw: vec![vec![]],
        sb: vec![vec![]],
    };
    // Current values of the step's inputs, by name.
    let mut state: std::collections::HashMap<String, ArrayD<f64>> = Default::default();
    state.insert("x".into(), x.clone().into_dyn());
    state.insert("y".into(), y.clone().into_dyn());
    state.insert("dense/kernel".into(), r.w.clone().into_dyn());
    state.insert("dense/bias".into(), r.b.clone().into_dyn());
    for k in &step.layout.state {
        let shape = if k.contains("kernel") {
            vec![I, U]
        } else {
            vec![U]
        };
        state.insert(k.clone(), ArrayD::zeros(IxDyn(&shape)));
    }
    let lr_value = opt.args.get("learning_rate").clone();
    for it in 0..3u64 {
        let lr = schedule::lr_at(&lr_value, it);
        state.insert("step".into(), ArrayD::from_elem(IxDyn(&[]), it as f64));
        state.insert("lr".into(), ArrayD::from_elem(IxDyn(&[]), lr));
        state.insert("rng_key".into(), ArrayD::from_elem(IxDyn(&[]), 0.0));
        let ins: Vec<ArrayD<f64>> = f.inputs.iter().map(|i| state[&i.name].clone()).collect();
        let outs = interp::eval::<f64>(f, &ins).unwrap();
        for ((name, _), v) in f.outputs.iter().zip(outs) {
            if let Some(k) = name.strip_prefix("new/") {
                state.insert(k.to_string(), v);
            }
        }
        // The reference step.
        let (mut gw, mut gb) = grads(&r.w, &r.b, &x, &y);
        let a = &opt.args;
        if let kiln::args::Value::Float(c) = a.get("clipnorm") {
            for g in [&mut gw, &mut gb] {
                let n = norm(g);
                g.iter_mut().for_each(|v| *v = *v * c / n.max(*c));
            }
        } else if let kiln::args::Value::Float(c) = a.get("global_clipnorm") {
            let n = (norm(&gw).powi(2) + norm(&gb).powi(2)).sqrt();
            for g in [&mut gw, &mut gb] {
                g.iter_mut().for_each(|v| *v = *v * c / n.max(*c));
            }
        } else if let kiln::args::Value::Float(c) = a.get("clipvalue") {
            for g in [&mut gw, &mut gb] {
                g.iter_mut().for_each(|v| *v = v.clamp(-c, *c));
            }
        }
        let t = (it + 1) as f64;
        let mut wv: Vec<f64> = r.w.iter().copied().collect();
        keras_step(opt.kind.name, a, &mut wv, &gw, &mut r.sw[0], t, lr);
        r.w = Array2::from_shape_vec((I, U), wv).unwrap();
        let mut bv = r.b.to_vec();
        keras_step(opt.kind.name, a, &mut bv, &gb, &mut r.sb[0], t, lr);
        r.b = Array1::from_vec(bv);
        let got_w = &state["dense/kernel"];
        for (g, w) in got_w.iter().zip(r.w.iter()) {
            assert!(
                (g - w).abs() < 1e-12,
                "{optimizer} step {it}: kernel {g} vs reference {w}"
            );
        }
        for (g, w) in state["dense/bias"].iter().zip(r.b.iter()) {
            assert!(
                (g - w).abs() < 1e-12,
                "{optimizer} step {it}: bias {g} vs reference {w}"
            );
        }
    }
}

#[test]
fn sgd_variants() {
    run("sgd");
    run("{sgd: {learning_rate: 0.1, momentum: 0.9}}");
    run("{sgd: {learning_rate: 0.1, momentum: 0.9, nesterov: true}}");
    run("{sgd: {learning_rate: 0.1, clipvalue: 0.05}}");
}

#[test]
fn adam_and_adamw() {
    run("adam");
    run("{adam: {learning_rate: 0.01, beta_1: 0.8, clipnorm: 0.1}}");
    run("adamw");
    run("{adamw: {learning_rate: 0.05, weight_decay: 0.1, global_clipnorm: 0.2}}");
}

#[test]
fn rmsprop_variants() {
    run("rmsprop");
    run("{rmsprop: {learning_rate: 0.01, momentum: 0.5}}");
    run("{rmsprop: {learning_rate: 0.01, centered: true}}");
    run("{rmsprop: {learning_rate: 0.01, centered: true, momentum: 0.3}}");
}

#[test]
fn learning_rate_schedules_feed_the_step() {
    run(
        "{sgd: {learning_rate: {exponential_decay: {initial_learning_rate: 0.1, decay_steps: 1, decay_rate: 0.5}}}}",
    );
    run(
        "{adam: {learning_rate: {piecewise_constant_decay: {boundaries: [1], values: [0.1, 0.01]}}}}",
    );
}
