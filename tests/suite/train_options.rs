//! Training options as Keras's `compile` and `fit` take them (issue 10 item 6), against
//! Keras itself: the `train_*` cases of `tests/golden/keras/` hold what Keras's
//! `train_on_batch` logged (`log.NAME`: the loss, each output's loss, each metric) and,
//! for some, what its `evaluate` gave over several batches (`eval.NAME`: metrics kept
//! over every batch as over an epoch). `tests/suite/keras_golden.rs` checks the same
//! cases' loss and updated weights; here every logged value is checked, by name.

use std::path::{Path, PathBuf};

use kiln::data::{Dataset, npy, npz};
use kiln::ndarray::{ArrayD, ArrayViewD};
use kiln::{Backend, FitOptions, Logs, Options, Weights};

/// As `keras_golden.rs`: f32 results of two implementations (summation orders differ).
const RTOL: f64 = 2e-4;
const ATOL: f64 = 2e-5;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras")
}

/// The `train_*` cases.
fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.extension()? == "yaml" && stem.starts_with("train_")).then_some(stem)
        })
        .collect();
    names.sort();
    names
}

fn fixture(name: &str) -> Vec<(String, ArrayD<f32>)> {
    let bytes = std::fs::read(cases_dir().join(format!("{name}.npz"))).unwrap();
    npz::parse(&bytes, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, l)| (k, l.data))
        .collect()
}

fn group<'a>(fx: &'a [(String, ArrayD<f32>)], prefix: &str) -> Vec<(&'a str, &'a ArrayD<f32>)> {
    let p = format!("{prefix}.");
    fx.iter()
        .filter_map(|(k, a)| k.strip_prefix(&p).map(|k| (k, a)))
        .collect()
}

fn net_for(name: &str, fx: &[(String, ArrayD<f32>)], backend: Backend) -> kiln::Net {
    let model = kiln::Model::from_path(cases_dir().join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let mut net = model
        .compile(&Options {
            backend,
            ..Options::default()
        })
        .unwrap();
    let mut w = Weights::new();
    for (k, a) in group(fx, "w0") {
        w.insert(k, a.clone());
    }
    net.set_weights(w).unwrap();
    net
}

/// Every value Keras logged equals kiln's of the same name, and kiln logs nothing else.
fn compare(what: &str, got: &Logs, want: &[(&str, &ArrayD<f32>)], bad: &mut Vec<String>) {
    for (k, v) in want {
        let w = f64::from(v.iter().next().copied().unwrap_or(f32::NAN));
        match got.get(k) {
            Some(g) if (g - w).abs() <= ATOL + RTOL * w.abs() => {}
            Some(g) => bad.push(format!("{what} `{k}`: kiln {g}, Keras {w}")),
            None => bad.push(format!(
                "{what} `{k}`: kiln does not log it ({:?})",
                got.names()
            )),
        }
    }
    for n in got.names() {
        if !want.iter().any(|(k, _)| *k == n) {
            bad.push(format!("{what}: kiln logs `{n}`, Keras does not"));
        }
    }
}

fn views<'a>(g: &'a [(&'a str, &'a ArrayD<f32>)]) -> Vec<(&'a str, ArrayViewD<'a, f32>)> {
    g.iter().map(|(k, a)| (*k, a.view())).collect()
}

#[test]
fn one_training_step_logs_what_keras_logs() {
    let mut bad = Vec::new();
    let names = cases();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        let fx = fixture(name);
        let want = group(&fx, "log");
        assert!(!want.is_empty(), "{name}: no logs in the fixture");
        for backend in [Backend::Jit, Backend::Interp] {
            let mut net = net_for(name, &fx, backend);
            let (x, y) = (group(&fx, "x"), group(&fx, "y"));
            let step = net.train_on_batch(&views(&x), &views(&y)).unwrap();
            let n = x[0].1.shape()[0];
            let mut tally = net.tally().unwrap();
            tally.add(step.loss, &step.output_losses, &step.metric_states, n);
            let logs = net.tally_logs(&tally);
            compare(&format!("{name} ({backend:?})"), &logs, &want, &mut bad);
            // The batch's metrics as `train_on_batch` returns them, in the logs' order.
            let metric_names = kiln::settings::metric_names(net.graph());
            for (m, v) in metric_names.iter().zip(&step.metrics) {
                let l = logs.get(m).unwrap();
                assert!((f64::from(*v) - l).abs() < 1e-6, "{name}: {m} {v} vs {l}");
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The `evaluate_batch` of a case's header.
fn evaluate_batch(name: &str) -> Option<usize> {
    let text = std::fs::read_to_string(cases_dir().join(format!("{name}.yaml"))).unwrap();
    let first = text.lines().next()?;
    let at = first.find("evaluate_batch:")? + "evaluate_batch:".len();
    first[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Stateful metrics (`auc`, `precision`, `recall`) and mean metrics over several
/// batches equal Keras's `evaluate`, which keeps each metric's state over every batch
/// — not a mean of the batches' values.
#[test]
fn metrics_over_several_batches_equal_keras_evaluate() {
    let mut bad = Vec::new();
    let mut tried = 0;
    for name in cases() {
        let Some(bs) = evaluate_batch(&name) else {
            continue;
        };
        tried += 1;
        let fx = fixture(&name);
        let want = group(&fx, "eval");
        for backend in [Backend::Jit, Backend::Interp] {
            let net = net_for(&name, &fx, backend);
            let arrays = group(&fx, "x")
                .into_iter()
                .chain(group(&fx, "y"))
                .map(|(k, a)| (k.to_string(), a.clone()))
                .collect();
            let data = Dataset::from_arrays(net.graph(), arrays).unwrap();
            assert!(
                data.len() > bs,
                "{name}: one batch would not show the state"
            );
            let logs = net.evaluate(&data, Some(bs)).unwrap();
            compare(&format!("{name} ({backend:?})"), &logs, &want, &mut bad);
        }
    }
    assert!(tried >= 2);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The value a confusion metric reports over an epoch is not the mean of its batches'
/// values: the case above would catch a mean of batch values.
#[test]
fn the_epoch_auc_is_not_a_mean_of_batch_aucs() {
    let name = "train_epoch_binary";
    let fx = fixture(name);
    let net = net_for(name, &fx, Backend::Interp);
    let arrays: Vec<(String, ArrayD<f32>)> = group(&fx, "x")
        .into_iter()
        .chain(group(&fx, "y"))
        .map(|(k, a)| (k.to_string(), a.clone()))
        .collect();
    let data = Dataset::from_arrays(net.graph(), arrays).unwrap();
    let whole = net.evaluate(&data, Some(5)).unwrap().get("auc").unwrap();
    let mut mean = 0.0;
    let mut n = 0.0;
    for start in (0..data.len()).step_by(5) {
        let end = (start + 5).min(data.len());
        let part = data.slice(start, end);
        let v = net.evaluate(&part, Some(5)).unwrap().get("auc").unwrap();
        mean += v * (end - start) as f64;
        n += (end - start) as f64;
    }
    mean /= n;
    let keras = f64::from(
        group(&fx, "eval")
            .iter()
            .find(|(k, _)| *k == "auc")
            .unwrap()
            .1
            .iter()
            .next()
            .copied()
            .unwrap(),
    );
    assert!((whole - keras).abs() < 1e-5, "{whole} vs Keras {keras}");
    assert!(
        (mean - keras).abs() > 1e-3,
        "a mean of batch AUCs ({mean}) happens to equal Keras's {keras}"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-options-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32_npy(shape: &[usize], f: impl Fn(usize) -> f32) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let data: Vec<u8> = (0..n).flat_map(|i| f(i).to_le_bytes()).collect();
    npy::encode("<f4", shape, &data)
}

/// A deterministic value in [-1, 1) for index `i` of stream `s`.
fn val(s: usize, i: usize) -> f32 {
    let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (s as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn write_data(dir: &Path, file: &str, n: usize, seed: usize) {
    let members = vec![
        ("x".to_string(), f32_npy(&[n, 4], |i| val(seed, i))),
        ("ya".to_string(), f32_npy(&[n, 2], |i| val(seed + 1, i))),
        (
            "yb".to_string(),
            f32_npy(&[n, 1], |i| f32::from(val(seed + 2, i) > 0.0)),
        ),
        (
            "w".to_string(),
            f32_npy(&[n], |i| 0.5 + val(seed + 3, i).abs()),
        ),
    ];
    std::fs::write(dir.join(file), npz::pack(&members).unwrap()).unwrap();
}

/// A two-headed model trained by `fit` with its spec's `validation_data` file, sample
/// weights and per-output losses, weights and metrics: the history has Keras's names,
/// and the last epoch's validation values are those of evaluating the validation file.
#[test]
fn fit_logs_each_output_and_validates_on_the_spec_s_file() {
    let dir = temp_dir("fit");
    write_data(&dir, "train.npz", 40, 1);
    write_data(&dir, "val.npz", 12, 7);
    let spec = "\
inputs:
  x: [batch, 4]
layers:
  - dense: {units: 8, activation: relu, name: h}
  - dense: {units: 2, name: out_a, input: h}
  - dense: {units: 1, name: out_b, input: h}
outputs: [out_a, out_b]
train:
  targets: {ya: [batch, 2], yb: [batch, 1]}
  loss: {out_a: mse, out_b: {binary_crossentropy: {from_logits: true}}}
  loss_weights: {out_a: 1.0, out_b: 0.5}
  metrics: {out_a: [mae], out_b: [accuracy, auc]}
  sample_weight: w
  validation_data: val.npz
  validation_split: 0.5
  optimizer: {adam: {learning_rate: 0.01}}
  batch_size: 8
  epochs: 3
";
    std::fs::write(dir.join("two_heads.yaml"), spec).unwrap();
    let model = kiln::Model::from_path(dir.join("two_heads.yaml")).unwrap();
    let mut net = model.compile(&Options::default()).unwrap();
    let data = net.load_data(dir.join("train.npz")).unwrap();
    let report = net.fit(&data, &FitOptions::default()).unwrap();
    let last = report.history.last().unwrap();
    let mut names = last.names();
    names.sort();
    assert_eq!(
        names,
        [
            "loss",
            "out_a_loss",
            "out_a_mae",
            "out_b_accuracy",
            "out_b_auc",
            "out_b_loss",
            "val_loss",
            "val_out_a_loss",
            "val_out_a_mae",
            "val_out_b_accuracy",
            "val_out_b_auc",
            "val_out_b_loss"
        ]
    );
    // validation_data wins over validation_split (Keras): every example trained on.
    assert_eq!(report.steps, 3 * 5);
    let val = net.load_data(dir.join("val.npz")).unwrap();
    let v = net.evaluate(&val, Some(8)).unwrap();
    for (k, x) in v.iter() {
        assert_eq!(last.get(&format!("val_{k}")), Some(x), "val_{k}");
    }
    // The total is the outputs' losses times their weights (one batch: exact in f32).
    let one = val.slice(0, 8);
    let e = net.evaluate(&one, Some(8)).unwrap();
    let total = e.get("out_a_loss").unwrap() as f32 + 0.5 * e.get("out_b_loss").unwrap() as f32;
    assert!((e.get("loss").unwrap() as f32 - total).abs() <= 1e-6 * total.abs());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The weighted loss's gradient against finite differences, for every loss (the
/// weights are data, not differentiated), and its value against the formula: the
/// weighted values summed and divided by their count, not by the sum of the weights.
#[test]
fn weighted_losses_differentiate_and_divide_by_the_count() {
    use super::common::{Rng, fd_check};
    use kiln::dim::Dim;
    use kiln::ir::{Func, Type, interp};
    for loss in kiln::catalog::losses::LOSSES {
        let args = kiln::args::validate(loss.args, None, loss.name, 0..0, &mut Vec::new()).unwrap();
        let sparse = loss.targets == kiln::catalog::losses::Targets::SparseLabels;
        let mut f = Func::new("weighted");
        let pred = f.input("pred", Type::f32(vec![Dim::sym("batch"), 3.into()]));
        let tshape = if sparse {
            vec![Dim::sym("batch")]
        } else {
            vec![Dim::sym("batch"), 3.into()]
        };
        let tgt = f.input("target", Type::f32(tshape));
        let w = f.input("w", Type::f32(vec![Dim::sym("batch")]));
        let l = loss
            .lower_weighted(&mut f, &args, pred, tgt, Some(w))
            .unwrap();
        let plain = loss.lower(&mut f, &args, pred, tgt).unwrap();
        let mut rng = Rng::new(loss.name.len() as u64 + 3);
        let p = rng.array(&[5, 3], 0.05, 0.9);
        let t = if sparse {
            ArrayD::from_shape_vec(kiln::ndarray::IxDyn(&[5]), vec![0.0, 2.0, 1.0, 1.0, 0.0])
                .unwrap()
        } else {
            rng.array(&[5, 3], 0.0, 1.0)
                .mapv(|v| if v > 0.5 { 1.0 } else { 0.0 })
        };
        let wv = rng.array(&[5], 0.2, 3.0);
        f.outputs = vec![("l".into(), l), ("plain".into(), plain)];
        let outs = interp::eval::<f64>(&f, &[p.clone(), t.clone(), wv.clone()]).unwrap();
        // Each example's value: the unweighted loss of that example alone.
        let mut sum = 0.0;
        for i in 0..5 {
            let pi = p
                .slice(kiln::ndarray::s![i..i + 1, ..])
                .to_owned()
                .into_dyn();
            let ti = if sparse {
                t.slice(kiln::ndarray::s![i..i + 1]).to_owned().into_dyn()
            } else {
                t.slice(kiln::ndarray::s![i..i + 1, ..])
                    .to_owned()
                    .into_dyn()
            };
            let one = interp::eval::<f64>(
                &f,
                &[
                    pi,
                    ti,
                    wv.slice(kiln::ndarray::s![i..i + 1]).to_owned().into_dyn(),
                ],
            )
            .unwrap();
            sum += one[1][[]] * wv[[i]];
        }
        let want = sum / 5.0;
        let got = outs[0][[]];
        assert!(
            (got - want).abs() < 1e-12 * want.abs().max(1.0),
            "{}: {got} vs {want}",
            loss.name
        );
        fd_check(
            loss.name,
            &f,
            l,
            &[p, t, wv],
            &[true, false, false],
            &mut rng,
        );
    }
}

/// Metrics listed many times for several outputs, and many class weights, are checked
/// in time linear in the spec: each repetition reported once, each metric kept once.
#[test]
fn repeated_per_output_metrics_are_reported_once_and_kept_once() {
    let many = ["mae"; 30_000].join(", ");
    let classes: Vec<String> = (0..30_000).map(|c| format!("{c}: 1.5")).collect();
    let src = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {{units: 2, name: a}}\n  - dense: {{units: 3, name: b, input: x}}\noutputs: [a, b]\ntrain:\n  targets: {{ya: [batch, 2], yb: [batch, 3]}}\n  loss: [mse, mse]\n  metrics: {{a: [{many}], b: [{many}, rmse]}}\n  weighted_metrics: [[{many}], []]\n  class_weight: {{{}}}\n",
        classes.join(", ")
    );
    let err = match kiln::Model::from_source(&src, "t", "t.yaml") {
        Err(kiln::Error::Spec(e)) => e,
        other => panic!("{:?}", other.map(|_| ())),
    };
    let codes: Vec<&str> = err.diagnostics.iter().map(|d| d.code).collect();
    // Three lists repeat `mae` (reported once each); `rmse` is not a Keras metric name.
    assert_eq!(
        codes.iter().filter(|c| **c == "E0613").count(),
        3,
        "{codes:?}"
    );
    let fixed = src
        .replace(&format!("{many}, rmse"), "root_mean_squared_error")
        .replace(&format!("[{many}]"), "[mae]");
    let err = match kiln::Model::from_source(&fixed, "t", "t.yaml") {
        Err(kiln::Error::Spec(e)) => e,
        other => panic!("{:?}", other.map(|_| ())),
    };
    // Class weights with two outputs: Keras refuses them.
    let codes: Vec<&str> = err.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["E0633"]);
    let ok = kiln::Model::from_source(
        &fixed.replace(&format!("  class_weight: {{{}}}\n", classes.join(", ")), ""),
        "t",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let names: Vec<String> = ok.graph.train.as_ref().unwrap().log_names(&ok.graph);
    assert_eq!(
        names,
        [
            "loss",
            "a_loss",
            "b_loss",
            "a_mae",
            "b_root_mean_squared_error",
            "a_weighted_mae"
        ]
    );
}
