//! The catalog walked registry by registry: every loss, metric, optimizer, schedule,
//! initializer, activation and callback parses from a spec with its defaults (and by
//! each alias), lowers, and behaves — losses' gradients against finite differences,
//! metrics against direct formulas, optimizers through whole training steps,
//! schedules and initializers producing values, callbacks running and keeping state.
//! A new entry is covered here without touching this file.

use crate::common;

use std::path::PathBuf;

use common::{Rng, fd_check};
use kiln::args::{ArgKind, ArgSpec, Default, Value};
use kiln::catalog::callbacks::{self, CALLBACKS, Callback, Host, Snapshot};
use kiln::catalog::initializers::{self, INITIALIZERS, Initializer};
use kiln::catalog::losses::{LOSSES, LossKind, Targets};
use kiln::catalog::metrics::METRICS;
use kiln::catalog::optimizers::OPTIMIZERS;
use kiln::catalog::schedules::{SCHEDULES, lr_at};
use kiln::catalog::{Entry, activations};
use kiln::check::Graph;
use kiln::ir::{Func, Type, interp};
use ndarray::{ArrayD, IxDyn};

/// Checks a spec, failing with its diagnostics.
fn check(src: &str) -> Graph {
    let (g, diags) = kiln::check::check(src, "t");
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.code, d.message))
        .collect();
    g.unwrap_or_else(|| panic!("{src}\n{errors:?}"))
}

/// A value for an argument without a default, from its kind alone.
fn example(a: &ArgSpec) -> String {
    match a.kind {
        ArgKind::Int { min, .. } => min.max(10).to_string(),
        ArgKind::Float { .. } => "0.5".into(),
        ArgKind::IntList { .. } => "[10, 20]".into(),
        ArgKind::FloatList => "[0.1, 0.05, 0.01]".into(),
        ArgKind::Str => std::env::temp_dir()
            .join(format!("kiln-catalog-{}-{}", std::process::id(), a.name))
            .display()
            .to_string(),
        // A file name with the first extension the argument accepts.
        ArgKind::File { extensions } => std::env::temp_dir()
            .join(format!(
                "kiln-catalog-{}-{}{}",
                std::process::id(),
                a.name,
                extensions.first().copied().unwrap_or("")
            ))
            .display()
            .to_string(),
        k => panic!("no example for {k:?}"),
    }
}

/// `name` or `{name: {required arguments}}`: the entry with every default.
fn with_defaults(name: &str, args: &[ArgSpec]) -> String {
    let required: Vec<String> = args
        .iter()
        .filter(|a| matches!(a.default, Default::Required))
        .map(|a| format!("{}: {}", a.name, example(a)))
        .collect();
    if required.is_empty() {
        name.to_string()
    } else {
        format!("{{{name}: {{{}}}}}", required.join(", "))
    }
}

/// Every name an entry is written by.
fn spellings<K: Entry>(k: &K) -> Vec<&'static str> {
    std::iter::once(k.name())
        .chain(k.aliases().iter().copied())
        .collect()
}

/// A small model whose output suits `loss`, and its `targets:`.
fn model_for(loss: &LossKind) -> (&'static str, &'static str) {
    match (loss.targets, loss.cross_entropy) {
        (Targets::SparseLabels, _) => ("softmax", "{y: {shape: [batch], dtype: i32}}"),
        (Targets::Dense { ints_ok: true }, true) => ("sigmoid", "{y: [batch, 3]}"),
        (_, true) => ("softmax", "{y: [batch, 3]}"),
        (_, false) => ("linear", "{y: [batch, 3]}"),
    }
}

fn train_spec(activation: &str, targets: &str, rest: &str) -> String {
    format!(
        "inputs: {{x: [batch, 4]}}\nlayers:\n  - dense: {{units: 3, activation: {activation}}}\ntrain:\n  targets: {targets}\n{rest}"
    )
}

/// Predictions and targets for a loss or metric on a `[4, 3]` output.
fn data_for(targets: Targets, activation: &str, rng: &mut Rng) -> (ArrayD<f64>, ArrayD<f64>) {
    let p = if activation == "linear" {
        rng.array(&[4, 3], -2.0, 2.0)
    } else {
        rng.array(&[4, 3], 0.05, 0.9)
    };
    let t = match targets {
        Targets::SparseLabels => {
            ArrayD::from_shape_vec(IxDyn(&[4]), vec![0.0, 2.0, 1.0, 2.0]).unwrap()
        }
        Targets::Dense { .. } if activation == "linear" => rng.array(&[4, 3], -1.0, 1.0),
        Targets::Dense { .. } => rng
            .array(&[4, 3], 0.0, 1.0)
            .mapv(|v| if v > 0.5 { 1.0 } else { 0.0 }),
    };
    (p, t)
}

/// A function of (pred, target) for the graph's output and first target.
fn pred_target(g: &Graph) -> (Func, kiln::ir::Id, kiln::ir::Id) {
    let train = g.train.as_ref().unwrap();
    let mut f = Func::new("t");
    let pred = f.input(
        "pred",
        Type::f32(vec![kiln::dim::Dim::sym("batch"), 3.into()]),
    );
    let tgt = f.input("target", train.targets[0].ty.clone());
    (f, pred, tgt)
}

#[test]
fn every_loss_parses_lowers_and_differentiates() {
    for loss in LOSSES {
        let (act, targets) = model_for(loss);
        for name in spellings(*loss) {
            let g = check(&train_spec(
                act,
                targets,
                &format!("  loss: {}\n", with_defaults(name, loss.args)),
            ));
            let decl = g.train.as_ref().unwrap().decl.loss.clone().unwrap();
            assert_eq!(decl.kind, *loss, "{name}");
            kiln::lower::train::build(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let g = check(&train_spec(
            act,
            targets,
            &format!("  loss: {}\n", loss.name),
        ));
        let decl = g.train.as_ref().unwrap().decl.loss.clone().unwrap();
        let (mut f, pred, tgt) = pred_target(&g);
        let l = decl.kind.lower(&mut f, &decl.args, pred, tgt).unwrap();
        f.output("loss", l);
        let mut rng = Rng::new(loss.name.len() as u64);
        let (p, t) = data_for(loss.targets, act, &mut rng);
        let v = interp::eval::<f64>(&f, &[p.clone(), t.clone()]).unwrap()[0][[]];
        assert!(v.is_finite(), "{}: {v}", loss.name);
        fd_check(loss.name, &f, l, &[p, t], &[true, false], &mut rng);
    }
}

/// Keras's metric formulas, directly.
fn reference_metric(name: &str, p: &ArrayD<f64>, t: &ArrayD<f64>) -> f64 {
    let rows: Vec<Vec<f64>> = p
        .outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    let argmax = |r: &[f64]| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b });
    let per: Vec<f64> = match name {
        "mae" => p.iter().zip(t.iter()).map(|(a, b)| (a - b).abs()).collect(),
        "mse" => p
            .iter()
            .zip(t.iter())
            .map(|(a, b)| (a - b) * (a - b))
            .collect(),
        "binary_accuracy" => p
            .iter()
            .zip(t.iter())
            .map(|(a, b)| f64::from((*a > 0.5) as u8 as f64 == *b))
            .collect(),
        "sparse_categorical_accuracy" => rows
            .iter()
            .zip(t.iter())
            .map(|(r, l)| f64::from(argmax(r) as f64 == *l))
            .collect(),
        "categorical_accuracy" => {
            let trows: Vec<Vec<f64>> = t
                .outer_iter()
                .map(|r| r.iter().copied().collect())
                .collect();
            rows.iter()
                .zip(&trows)
                .map(|(r, tr)| f64::from(argmax(r) == argmax(tr)))
                .collect()
        }
        other => panic!("no reference for {other}"),
    };
    per.iter().sum::<f64>() / per.len() as f64
}

#[test]
fn every_metric_parses_resolves_and_lowers() {
    for metric in METRICS {
        let mut tried = 0;
        for loss in LOSSES {
            let (act, targets) = model_for(loss);
            let sparse = loss.targets == Targets::SparseLabels;
            if metric.resolve.is_none() && metric.sparse_labels != sparse {
                // Labels of the other form: not a pairing Keras accepts.
                continue;
            }
            tried += 1;
            for name in spellings(*metric) {
                let rest = format!("  loss: {}\n  metrics: [{name}]\n", loss.name);
                let g = check(&train_spec(act, targets, &rest));
                let train = g.train.as_ref().unwrap();
                // The checker's resolution agrees with the entry's.
                let out = g.type_of(g.outputs[0]);
                let resolved = metric.resolved(loss, out, &train.targets[0].ty);
                assert_eq!(
                    train.metrics,
                    vec![resolved.name.to_string()],
                    "{name} with {}",
                    loss.name
                );
                kiln::lower::train::build(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let g = check(&train_spec(
                act,
                targets,
                &format!("  loss: {}\n", loss.name),
            ));
            let (mut f, pred, tgt) = pred_target(&g);
            let resolved = metric.resolved(loss, f.ty(pred), f.ty(tgt));
            let m = metric.lower(&mut f, pred, tgt).unwrap();
            f.output("m", m);
            let mut rng = Rng::new(7);
            let (p, t) = data_for(loss.targets, act, &mut rng);
            let got = interp::eval::<f64>(&f, &[p.clone(), t.clone()]).unwrap()[0][[]];
            // `accuracy` lowered alone picks by shapes, which agrees with every loss here.
            let want = reference_metric(resolved.name, &p, &t);
            assert!(
                (got - want).abs() < 1e-12,
                "{} with {}: {got} vs {want}",
                metric.name,
                loss.name
            );
        }
        assert!(tried > 0, "{} fits no loss", metric.name);
    }
}

#[test]
fn every_optimizer_parses_and_trains() {
    for opt in OPTIMIZERS {
        for name in spellings(*opt) {
            let rest = format!(
                "  loss: mse\n  optimizer: {}\n",
                with_defaults(name, opt.args)
            );
            let g = check(&train_spec("linear", "{y: [batch, 3]}", &rest));
            let decl = &g.train.as_ref().unwrap().decl.optimizer;
            assert_eq!(decl.kind, *opt, "{name}");
            let step = kiln::lower::train::build(&g).unwrap();
            let slots = (opt.slots)(&decl.args);
            // Two trainable parameters (kernel, bias), each with its slots.
            assert_eq!(step.layout.state.len(), 2 * slots.len(), "{name}");
            // One step from zero state moves every parameter against its gradient.
            let f = &step.func;
            let mut rng = Rng::new(3);
            let lr = lr_at(decl.args.get("learning_rate"), 0);
            let ins: Vec<ArrayD<f64>> = f
                .inputs
                .iter()
                .map(|i| {
                    let shape = common::concrete(&i.ty, 4, 1);
                    match i.name.as_str() {
                        "step" | "rng_key" => ArrayD::zeros(IxDyn(&[])),
                        "lr" => ArrayD::from_elem(IxDyn(&[]), lr),
                        n if n.starts_with("optimizer/") => ArrayD::zeros(IxDyn(&shape)),
                        _ => rng.array(&shape, -1.0, 1.0),
                    }
                })
                .collect();
            let outs = interp::eval::<f64>(f, &ins).unwrap();
            for (k, key) in step.layout.params.iter().enumerate() {
                let at = |n: &str| f.outputs.iter().position(|(o, _)| o == n).unwrap();
                let before = &ins[f.inputs.iter().position(|i| &i.name == key).unwrap()];
                let after = &outs[at(&format!("new/{key}"))];
                assert!(after.iter().all(|v| v.is_finite()), "{name} {key}");
                assert!(before != after, "{name}: {key} did not move (param {k})");
            }
        }
    }
}

#[test]
fn every_schedule_parses_with_defaults_and_gives_rates() {
    for s in SCHEDULES {
        for name in spellings(*s) {
            let lr = with_defaults(name, s.args);
            let rest = format!("  loss: mse\n  optimizer: {{sgd: {{learning_rate: {lr}}}}}\n");
            let g = check(&train_spec("linear", "{y: [batch, 3]}", &rest));
            let v = g
                .train
                .as_ref()
                .unwrap()
                .decl
                .optimizer
                .args
                .get("learning_rate")
                .clone();
            let Value::Named(n, _) = &v else {
                panic!("{name}: {v:?}")
            };
            assert_eq!(n, s.name);
            for step in [0, 1, 5, 10, 15, 25, 1000] {
                let r = lr_at(&v, step);
                assert!(r.is_finite() && r >= 0.0, "{name} at {step}: {r}");
            }
        }
    }
}

fn sched(src: &str) -> Value {
    let n = kiln::yaml::parse(src).unwrap();
    kiln::catalog::schedules::check_schedule(&n, &mut Vec::new()).unwrap()
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
    let p = sched("{piecewise_constant_decay: {boundaries: [10, 20], values: [1.0, 0.5, 0.1]}}");
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

#[test]
fn every_initializer_parses_with_defaults_and_samples() {
    for init in INITIALIZERS {
        for name in spellings(*init) {
            let src = format!(
                "inputs: {{x: [batch, 4]}}\nlayers:\n  - dense: {{units: 3, kernel_initializer: {}}}\n",
                with_defaults(name, init.args)
            );
            let g = check(&src);
            let kernel = &g.layers[0].params[0];
            let (i, seed) = Initializer::from_value(&kernel.init).unwrap();
            assert_eq!(seed, None);
            let (direct, _) = init.sampler(&kiln::args::Args::default()).unwrap();
            assert_eq!(i, direct, "{name}");
            let mut rng = kiln::rng::Rng::for_weight(0, "dense/kernel", None);
            let v = i.sample(&[4, 3], &mut rng).unwrap();
            assert_eq!(v.shape(), [4, 3]);
            assert!(v.iter().all(|x| x.is_finite()), "{name}");
        }
    }
}

#[test]
fn every_activation_parses_lowers_and_differentiates() {
    for act in activations::ACTIVATIONS {
        for name in spellings(*act) {
            let src = format!(
                "inputs: {{x: [batch, 4]}}\nlayers:\n  - dense: {{units: 3, activation: {name}}}\n"
            );
            check(&src);
            assert!(kiln::catalog::activations::NAMES.contains(&name));
        }
        let mut f = Func::new(act.name);
        let x = f.input("x", Type::f32(vec![4.into(), 3.into()]));
        let y = (act.lower)(&mut f, x).unwrap();
        let mut rng = Rng::new(act.name.len() as u64);
        fd_check(
            act.name,
            &f,
            y,
            &[rng.array(&[4, 3], -2.0, 2.0)],
            &[true],
            &mut rng,
        );
    }
}

/// A training loop of one model, as the callbacks see it.
#[derive(Default)]
struct FakeLoop {
    logs: Vec<(String, f64)>,
    lr: f32,
    stopped: bool,
    saved: Vec<PathBuf>,
    messages: Vec<String>,
}

impl Host for FakeLoop {
    fn log(&self, name: &str) -> Option<f64> {
        self.logs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
    fn set_log(&mut self, name: &str, v: f64) {
        self.logs.retain(|(n, _)| n != name);
        self.logs.push((name.to_string(), v));
    }
    fn log_names(&self) -> Vec<String> {
        self.logs.iter().map(|(n, _)| n.clone()).collect()
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn stop(&mut self) {
        self.stopped = true;
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.lr)
    }
    fn checkpoint_path(&self, template: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(template))
    }
    fn save(&mut self, path: PathBuf) {
        self.saved.push(path);
    }
    fn message(&mut self, m: String) {
        self.messages.push(m);
    }
}

#[test]
fn every_callback_parses_with_defaults_runs_and_keeps_its_state() {
    for cb in CALLBACKS {
        for name in spellings(*cb) {
            let rest = format!(
                "  loss: mse\n  validation_split: 0.2\n  callbacks: [{}]\n",
                with_defaults(name, cb.args)
            );
            let g = check(&train_spec("linear", "{y: [batch, 3]}", &rest));
            let decl = g.train.as_ref().unwrap().decl.callbacks[0].clone();
            assert_eq!(decl.kind, *cb, "{name}");
            let mut cbs = vec![(cb.build)(&decl.args)];
            let mut host = FakeLoop {
                lr: 0.01,
                ..FakeLoop::default()
            };
            for (epoch, v) in [1.0, 0.5, 0.6, 0.7, 0.8].into_iter().enumerate() {
                host.set_log("loss", v);
                host.set_log("val_loss", v);
                callbacks::on_epoch_end(&mut cbs, epoch, &mut host);
            }
            assert!(host.lr.is_finite() && host.lr > 0.0, "{name}");
            // The state a checkpoint keeps restores into a fresh callback.
            let saved = Callback::save_states(&cbs);
            let mut fresh = vec![(cb.build)(&decl.args)];
            assert!(Callback::load_states(&mut fresh, &saved), "{name}");
            assert_eq!(Callback::save_states(&fresh), saved, "{name}");
        }
    }
}

#[test]
fn layers_default_to_catalog_entries() {
    let mut seen = 0;
    for layer in kiln::layers::REGISTRY {
        for a in layer.args {
            let Default::Str(name) = a.default else {
                continue;
            };
            match a.kind {
                ArgKind::Catalog(c) if std::ptr::eq(c, &initializers::ARG) => {
                    let init = initializers::lookup(name);
                    assert!(init.is_some(), "{}.{}: {name}", layer.name, a.name);
                    seen += 1;
                }
                ArgKind::Catalog(c) if std::ptr::eq(c, &activations::ARG) => {
                    assert!(
                        activations::lookup(name).is_some(),
                        "{}.{}: {name}",
                        layer.name,
                        a.name
                    );
                    seen += 1;
                }
                _ => {}
            }
        }
    }
    assert!(seen > 0);
}
