//! Learning-rate schedules (keras.optimizers.schedules), evaluated on the host at each
//! step and fed to the training step as a scalar (so callbacks such as
//! reduce-LR-on-plateau can change it too).

use crate::args::Value;

/// The learning rate at optimizer iteration `step` (0-based, as Keras's `iterations`).
pub fn lr_at(lr: &Value, step: u64) -> f64 {
    let Value::Named(name, a) = lr else {
        return match lr {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            _ => 0.001,
        };
    };
    let s = step as f64;
    let lr0 = a.float("initial_learning_rate");
    let ds = a.int("decay_steps").max(1) as f64;
    match name.as_str() {
        "exponential_decay" | "inverse_time_decay" => {
            let mut p = s / ds;
            if a.bool("staircase") {
                p = p.floor();
            }
            let rate = a.float("decay_rate");
            if name == "exponential_decay" {
                lr0 * rate.powf(p)
            } else {
                lr0 / (1.0 + rate * p)
            }
        }
        "polynomial_decay" => {
            let end = a.float("end_learning_rate");
            let (s, ds) = if a.bool("cycle") {
                let mult = if s == 0.0 { 1.0 } else { (s / ds).ceil() };
                (s, ds * mult)
            } else {
                (s.min(ds), ds)
            };
            (lr0 - end) * (1.0 - s / ds).powf(a.float("power")) + end
        }
        "cosine_decay" => {
            let alpha = a.float("alpha");
            let decay = |step: f64, from: f64| {
                let c = 0.5 * (1.0 + (std::f64::consts::PI * step / ds).cos());
                from * ((1.0 - alpha) * c + alpha)
            };
            match a.get("warmup_target") {
                Value::Float(target) => {
                    let ws = a.int("warmup_steps") as f64;
                    let s = s.min(ds + ws);
                    if s < ws {
                        (target - lr0) * (s / ws) + lr0
                    } else {
                        decay(s - ws, *target)
                    }
                }
                _ => decay(s.min(ds), lr0),
            }
        }
        "piecewise_constant_decay" => {
            let b = a.ints("boundaries");
            let vals = match a.get("values") {
                Value::Floats(v) => v.clone(),
                _ => vec![],
            };
            let i = b.iter().take_while(|&&x| s > x as f64).count();
            vals.get(i).copied().unwrap_or(0.0)
        }
        _ => 0.001,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn sched(src: &str) -> Value {
        let n = yaml::parse(src).unwrap();
        crate::spec::train::check_schedule(&n, &mut Vec::new()).unwrap()
    }

    #[test]
    fn schedules_follow_keras_formulas() {
        let e = sched(
            "{exponential_decay: {initial_learning_rate: 0.1, decay_steps: 10, decay_rate: 0.5}}",
        );
        assert!((lr_at(&e, 0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&e, 10) - 0.05).abs() < 1e-12);
        assert!((lr_at(&e, 5) - 0.1 * 0.5f64.powf(0.5)).abs() < 1e-12);
        let st = sched(
            "{exponential_decay: {initial_learning_rate: 0.1, decay_steps: 10, decay_rate: 0.5, staircase: true}}",
        );
        assert!((lr_at(&st, 19) - 0.05).abs() < 1e-12);
        let c = sched("{cosine_decay: {initial_learning_rate: 1.0, decay_steps: 100, alpha: 0.1}}");
        assert!((lr_at(&c, 50) - (0.9 * 0.5 + 0.1)).abs() < 1e-12);
        assert!((lr_at(&c, 500) - 0.1).abs() < 1e-12);
        let w = sched(
            "{cosine_decay: {initial_learning_rate: 0.0, decay_steps: 100, warmup_target: 1.0, warmup_steps: 10}}",
        );
        assert!((lr_at(&w, 5) - 0.5).abs() < 1e-12);
        assert!((lr_at(&w, 10) - 1.0).abs() < 1e-12);
        let p =
            sched("{piecewise_constant_decay: {boundaries: [10, 20], values: [1.0, 0.5, 0.1]}}");
        assert_eq!(
            (lr_at(&p, 10), lr_at(&p, 11), lr_at(&p, 21)),
            (1.0, 0.5, 0.1)
        );
        let poly = sched(
            "{polynomial_decay: {initial_learning_rate: 1.0, decay_steps: 10, end_learning_rate: 0.0, power: 2.0}}",
        );
        assert!((lr_at(&poly, 5) - 0.25).abs() < 1e-12);
        let inv = sched(
            "{inverse_time_decay: {initial_learning_rate: 1.0, decay_steps: 1, decay_rate: 0.5}}",
        );
        assert!((lr_at(&inv, 2) - 0.5).abs() < 1e-12);
    }
}
