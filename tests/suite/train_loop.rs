//! Training through the library (`Model::compile`, `Net::fit`), on the interpreter:
//! small digits models reach a stated accuracy in seconds; a fit step of every
//! optimizer equals a direct evaluation of the training step; runs are deterministic;
//! a run interrupted mid-epoch and resumed from its checkpoint ends bit-identical to an
//! uninterrupted one; a diverging loss stops and rolls back.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln::fit::{Logs, Observer, Stop};
use kiln::ir::{interp, passes};
use kiln::runtime::Backend;
use kiln::{Dataset, FitOptions, Model, Net, Options};
use ndarray::{ArrayD, IxDyn};

fn digits() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits.npz")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-loop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn compile(src: &str) -> Net {
    let m = Model::from_source(src, "test", "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    m.compile(&Options {
        backend: Backend::Interp,
        ..Options::default()
    })
    .unwrap()
}

fn digits_spec(layers: &str, optimizer: &str, epochs: usize) -> String {
    format!(
        "name: small
inputs:
  image: [batch, 8, 8, 1]
layers:
{layers}
  - dense: {{units: 10, name: logits}}
train:
  targets: {{label: {{shape: [batch], dtype: i32}}}}
  loss: {{sparse_categorical_crossentropy: {{from_logits: true}}}}
  optimizer: {optimizer}
  metrics: [accuracy]
  batch_size: 32
  epochs: {epochs}
  seed: 0
  validation_split: 0.2
"
    )
}

fn same_bits(a: &kiln::weights::Weights, b: &kiln::weights::Weights) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, x), (kb, y))| {
            ka == kb
                && x.shape() == y.shape()
                && x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

#[test]
fn a_compiled_model_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Net>();
    let net = compile(&digits_spec("  - flatten", "adam", 1));
    let x = ArrayD::zeros(IxDyn(&[3, 8, 8, 1]));
    let outs: Vec<ArrayD<f32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| net.predict(&[("image", x.view())]).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0].shape(), &[3, 10]);
    // A wrong input is refused before anything runs, naming it.
    let bad = ArrayD::zeros(IxDyn(&[3, 64]));
    let e = net
        .predict(&[("image", bad.view())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`image` has shape [3, 64]"), "{e}");
    let e = net.predict(&[("x", x.view())]).unwrap_err().to_string();
    assert!(
        e.contains("`x` (shape [3, 8, 8, 1]) is not an input"),
        "{e}"
    );
}

#[test]
fn small_digits_models_learn_in_seconds() {
    // An MLP: 8 epochs of 45 steps; held-out accuracy (the last 20%) ≥ 0.95.
    let mut net = compile(&digits_spec(
        "  - flatten\n  - dense: {units: 32, activation: relu}",
        "{adam: {learning_rate: 0.003}}",
        8,
    ));
    let data = net.load_data(digits()).unwrap();
    let r = net.fit(&data, &FitOptions::default()).unwrap();
    let last = r.history.last().unwrap();
    let acc = last.get("val_accuracy").unwrap();
    assert!(acc >= 0.95, "MLP val_accuracy {acc}");
    assert!(last.get("loss").unwrap() < 0.2, "{last:?}");
    assert_eq!(r.steps, 8 * 45);
    assert_eq!(r.stop, Stop::Completed);

    // A small CNN with dropout: 5 epochs; ≥ 0.95.
    let mut net = compile(&digits_spec(
        "  - conv2d: {filters: 8, kernel_size: 3, padding: same, activation: relu}
  - max_pooling2d: {pool_size: 2}
  - conv2d: {filters: 16, kernel_size: 3, padding: same, activation: relu}
  - flatten
  - dropout: {rate: 0.1}",
        "{adam: {learning_rate: 0.003}}",
        5,
    ));
    let r = net.fit(&data, &FitOptions::default()).unwrap();
    let acc = r.history.last().unwrap().get("val_accuracy").unwrap();
    assert!(acc >= 0.95, "CNN val_accuracy {acc}");
    // evaluate() on the held-out part reproduces the last epoch's validation values.
    let (_, val) = data.split(0.2).unwrap();
    let e = net.evaluate(&val.unwrap(), None).unwrap();
    assert_eq!(
        e.get("accuracy"),
        r.history.last().unwrap().get("val_accuracy")
    );
    // predict() agrees with the accuracy.
    let (_, val) = data.split(0.2).unwrap();
    let val = val.unwrap();
    let logits = net.predict(&[("image", val.inputs[0].1.view())]).unwrap();
    assert_eq!(logits.shape(), &[360, 10]);
    let labels = &val.targets[0].1;
    let right = (0..360)
        .filter(|&i| {
            let row = logits.index_axis(ndarray::Axis(0), i);
            let best = (0..10)
                .max_by(|&a, &b| row[a].partial_cmp(&row[b]).unwrap())
                .unwrap();
            best as f32 == labels[i]
        })
        .count();
    assert_eq!(right as f64 / 360.0, e.get("accuracy").unwrap());
}

/// A tiny classifier with batch normalization and dropout, `n` examples.
fn tiny(optimizer: &str) -> (String, Vec<(String, ArrayD<f32>)>) {
    let spec = format!(
        "inputs:
  x: [batch, 5]
layers:
  - dense: {{units: 6, activation: tanh}}
  - batch_normalization
  - dropout: {{rate: 0.25}}
  - dense: {{units: 3}}
train:
  targets: {{y: {{shape: [batch], dtype: i32}}}}
  loss: {{sparse_categorical_crossentropy: {{from_logits: true}}}}
  optimizer: {optimizer}
  metrics: [accuracy]
  seed: 3
"
    );
    let n = 12;
    let x = ArrayD::from_shape_fn(IxDyn(&[n, 5]), |i| {
        ((i[0] * 7 + i[1] * 3) % 11) as f32 / 5.0 - 1.0
    });
    let y = ArrayD::from_shape_fn(IxDyn(&[n]), |i| (i[0] % 3) as f32);
    (spec, vec![("x".into(), x), ("y".into(), y)])
}

#[test]
fn a_fit_step_of_every_optimizer_equals_the_training_step_itself() {
    let opts = [
        "sgd",
        "{sgd: {learning_rate: 0.1, momentum: 0.9}}",
        "{sgd: {learning_rate: 0.1, momentum: 0.9, nesterov: true}}",
        "adam",
        "{adam: {learning_rate: 0.01, clipnorm: 0.5}}",
        "adamw",
        "rmsprop",
        "{rmsprop: {momentum: 0.5, centered: true, global_clipnorm: 1.0}}",
        "{adam: {learning_rate: {exponential_decay: {initial_learning_rate: 0.1, decay_steps: 1, decay_rate: 0.5}}}}",
    ];
    for opt in opts {
        let (spec, arrays) = tiny(opt);
        let mut net = compile(&spec);
        let graph = net.graph().clone();
        let w0 = net.weights().clone();
        let data = Dataset::from_arrays(&graph, arrays.clone()).unwrap();
        // Three steps: batches of 4, in order.
        let r = net
            .fit(
                &data,
                &FitOptions {
                    epochs: Some(1),
                    batch_size: Some(4),
                    shuffle: Some(false),
                    validation_split: Some(0.0),
                    ..FitOptions::default()
                },
            )
            .unwrap();
        assert_eq!(r.steps, 3);

        // The same three steps by hand: the training step's IR, run by the interpreter.
        let step = kiln::lower::train::build(&graph).unwrap();
        let f = passes::optimize(&step.func);
        let mut params: Vec<ArrayD<f32>> = w0.iter().map(|(_, a)| a.clone()).collect();
        let mut state: Vec<ArrayD<f32>> = step
            .layout
            .state
            .iter()
            .map(|k| {
                let p = k
                    .strip_prefix("optimizer/")
                    .unwrap()
                    .rsplit_once('/')
                    .unwrap()
                    .0;
                ArrayD::zeros(w0.get(p).unwrap().shape())
            })
            .collect();
        let lr_v = graph
            .train
            .as_ref()
            .unwrap()
            .decl
            .optimizer
            .args
            .get("learning_rate");
        for s in 0..3u64 {
            let rows = |a: &ArrayD<f32>| {
                a.slice_axis(
                    ndarray::Axis(0),
                    ((s as usize * 4)..(s as usize * 4 + 4)).into(),
                )
                .to_owned()
            };
            let mut inputs = vec![rows(&arrays[0].1)];
            inputs.extend(params.iter().cloned());
            inputs.push(ArrayD::from_elem(IxDyn(&[]), kiln::net::rng_key(3, s)));
            inputs.push(rows(&arrays[1].1));
            inputs.extend(state.iter().cloned());
            inputs.push(ArrayD::from_elem(IxDyn(&[]), s as f32));
            inputs.push(ArrayD::from_elem(
                IxDyn(&[]),
                kiln::catalog::schedules::lr_at(lr_v, s) as f32,
            ));
            let outs = interp::eval::<f32>(&f, &inputs).unwrap();
            let get = |name: &str| {
                let i = f.outputs.iter().position(|(n, _)| n == name).unwrap();
                outs[i].clone()
            };
            params = step
                .layout
                .params
                .iter()
                .map(|p| get(&format!("new/{p}")))
                .collect();
            state = step
                .layout
                .state
                .iter()
                .map(|k| get(&format!("new/{k}")))
                .collect();
        }
        for ((k, got), want) in net.weights().iter().zip(&params) {
            assert!(
                got.iter()
                    .zip(want.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{opt}: `{k}` differs from the direct evaluation"
            );
        }
        // And the weights did move.
        assert!(!same_bits(&w0, net.weights()), "{opt}: nothing changed");
    }
}

#[test]
fn same_seed_same_bits_other_seed_other_bits() {
    let (spec, arrays) = tiny("adam");
    let run = |seed: Option<u64>| {
        let m = Model::from_source(&spec, "t", "t.yaml").unwrap();
        let mut net = m
            .compile(&Options {
                backend: Backend::Interp,
                seed,
                ..Options::default()
            })
            .unwrap();
        let data = Dataset::from_arrays(net.graph(), arrays.clone()).unwrap();
        net.fit(
            &data,
            &FitOptions {
                epochs: Some(4),
                batch_size: Some(5),
                seed,
                ..FitOptions::default()
            },
        )
        .unwrap();
        net.weights().clone()
    };
    let a = run(None);
    let b = run(None);
    assert!(same_bits(&a, &b));
    let c = run(Some(99));
    assert!(!same_bits(&a, &c));
}

#[test]
fn native_code_training_is_deterministic_and_resumes_exactly() {
    let spec = digits_spec(
        "  - flatten
  - dense: {units: 32, activation: relu}
  - dropout: {rate: 0.2}",
        "adam",
        3,
    );
    let jit = || {
        Model::from_source(&spec, "t", "t.yaml")
            .unwrap()
            .compile(&Options::default())
            .unwrap()
    };
    let mut a = jit();
    let data = a.load_data(digits()).unwrap();
    let ra = a.fit(&data, &FitOptions::default()).unwrap();
    let mut b = jit();
    b.fit(&data, &FitOptions::default()).unwrap();
    assert!(same_bits(a.weights(), b.weights()));
    // The interpreter, the oracle, trains to nearly the same place.
    let mut i = compile(&spec);
    let ri = i.fit(&data, &FitOptions::default()).unwrap();
    let (lj, li) = (
        ra.history.last().unwrap().get("val_loss").unwrap(),
        ri.history.last().unwrap().get("val_loss").unwrap(),
    );
    assert!((lj - li).abs() < 1e-3 * li, "jit {lj}, interp {li}");

    let dir = temp_dir("jit-resume");
    let ckpt = dir.join("c.safetensors");
    let flag = Arc::new(AtomicBool::new(false));
    let mut c = jit();
    let mut obs = StopAfter {
        flag: flag.clone(),
        seen: 0,
        at: 50,
    };
    let opts = FitOptions {
        checkpoint: Some(ckpt.clone()),
        interrupt: Some(flag),
        ..FitOptions::default()
    };
    let r = c.fit_with(&data, &opts, &mut obs).unwrap();
    assert!(
        matches!(
            r.stop,
            Stop::Interrupted {
                epoch: 1,
                batch: 5,
                ..
            }
        ),
        "{:?}",
        r.stop
    );
    let mut d = jit();
    let resume = d.load_checkpoint(&ckpt).unwrap();
    d.fit(
        &data,
        &FitOptions {
            resume: Some(resume),
            ..FitOptions::default()
        },
    )
    .unwrap();
    assert!(same_bits(a.weights(), d.weights()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoint_and_csv_callbacks_write_what_keras_would() {
    let dir = temp_dir("callbacks");
    let best = dir.join("best.safetensors");
    let every = dir.join("ep{epoch:02d}-{val_loss:.3f}.safetensors");
    let log = dir.join("log.tsv");
    let spec = digits_spec(
        "  - flatten\n  - dense: {units: 16, activation: relu}",
        "{adam: {learning_rate: 0.01}}",
        4,
    )
    .replace(
        "  validation_split: 0.2\n",
        &format!(
            "  validation_split: 0.2
  callbacks:
    - model_checkpoint: {{filepath: '{}', monitor: val_accuracy, save_best_only: true}}
    - model_checkpoint: {{filepath: '{}'}}
    - csv_logger: {{filename: '{}', separator: \"\\t\"}}
    - terminate_on_nan
",
            best.display(),
            every.display(),
            log.display()
        ),
    );
    let mut net = compile(&spec);
    let data = net.load_data(digits()).unwrap();
    let r = net.fit(&data, &FitOptions::default()).unwrap();
    // The best checkpoint is the epoch with the highest val_accuracy (the first of
    // equals, as Keras's strict comparison keeps).
    let accs: Vec<f64> = r
        .history
        .iter()
        .map(|l| l.get("val_accuracy").unwrap())
        .collect();
    let best_epoch = (0..accs.len()).fold(0, |b, e| if accs[e] > accs[b] { e } else { b });
    let w = kiln::weights::load(&best).unwrap();
    assert_eq!(w.metadata["kiln.epoch"], (best_epoch + 1).to_string());
    // One file per epoch, named by the template.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ep"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 4);
    let l1 = r.history[0].get("val_loss").unwrap();
    assert_eq!(names[0], format!("ep01-{l1:.3}.safetensors"));
    // The CSV log: Keras's columns, tab-separated, epochs from 0.
    let csv = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "epoch\taccuracy\tloss\tval_accuracy\tval_loss");
    assert_eq!(rows.len(), 5);
    assert!(rows[4].starts_with("3\t"));
    let v: f64 = rows[4].split('\t').nth(3).unwrap().parse().unwrap();
    assert_eq!(v, accs[3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sets the interrupt flag after `at` batches in all.
struct StopAfter {
    flag: Arc<AtomicBool>,
    seen: usize,
    at: usize,
}

impl Observer for StopAfter {
    fn on_batch_end(&mut self, _done: usize, _steps: usize, _logs: &Logs) {
        self.seen += 1;
        if self.seen == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn resumed_mid_epoch_equals_uninterrupted() {
    let dir = temp_dir("resume");
    // Callbacks whose state matters: plateau lowering the learning rate, early stopping
    // keeping best weights; dropout and batch norm use the step's random key.
    let spec = digits_spec(
        "  - flatten
  - dense: {units: 16, activation: relu}
  - batch_normalization
  - dropout: {rate: 0.2}",
        "{adam: {learning_rate: 0.01}}",
        4,
    )
    .replace(
        "  validation_split: 0.2\n",
        "  validation_split: 0.2
  callbacks:
    - reduce_lr_on_plateau: {monitor: loss, patience: 1, factor: 0.5, min_delta: 0.5}
    - early_stopping: {monitor: val_loss, patience: 50, restore_best_weights: true}
",
    );
    let mut whole = compile(&spec);
    let data = whole.load_data(digits()).unwrap();
    let opts = FitOptions::default();
    let full = whole.fit(&data, &opts).unwrap();

    let ckpt = dir.join("ckpt.safetensors");
    let flag = Arc::new(AtomicBool::new(false));
    let mut first = compile(&spec);
    let mut obs = StopAfter {
        flag: flag.clone(),
        seen: 0,
        at: 45 + 17,
    };
    let r = first
        .fit_with(
            &data,
            &FitOptions {
                checkpoint: Some(ckpt.clone()),
                interrupt: Some(flag),
                ..FitOptions::default()
            },
            &mut obs,
        )
        .unwrap();
    assert_eq!(
        r.stop,
        Stop::Interrupted {
            epoch: 1,
            batch: 17,
            checkpoint: Some(ckpt.clone())
        }
    );
    let mut second = compile(&spec);
    let resume = second.load_checkpoint(&ckpt).unwrap();
    let resumed = second
        .fit(
            &data,
            &FitOptions {
                resume: Some(resume),
                ..opts.clone()
            },
        )
        .unwrap();
    assert!(same_bits(whole.weights(), second.weights()));
    assert_eq!(full.history, resumed.history);
    assert_eq!(full.steps, resumed.steps);
    // The plateau callback did lower the learning rate at least once.
    assert!(
        full.history
            .iter()
            .any(|l| l.get("learning_rate").is_some_and(|v| v < 0.01 - 1e-9)),
        "{:?}",
        full.history
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_loss_stops_and_rolls_back_to_the_last_good_epoch() {
    // The learning rate jumps to 1e30 after 20 steps (epoch 2 of 10 steps each).
    let (spec, _) = tiny("x");
    let spec = spec.replace(
        "optimizer: x",
        "optimizer: {sgd: {learning_rate: {piecewise_constant_decay: {boundaries: [19], values: [0.01, 1.0e30]}}}}",
    );
    let mut net = compile(&spec);
    let n = 40;
    let x = ArrayD::from_shape_fn(IxDyn(&[n, 5]), |i| (i[0] + i[1]) as f32 / 10.0);
    let y = ArrayD::from_shape_fn(IxDyn(&[n]), |i| (i[0] % 3) as f32);
    let data = Dataset::from_arrays(net.graph(), vec![("x".into(), x), ("y".into(), y)]).unwrap();
    let dir = temp_dir("nan");
    let ckpt = dir.join("c.safetensors");
    let opts = FitOptions {
        epochs: Some(6),
        batch_size: Some(4),
        checkpoint: Some(ckpt.clone()),
        ..FitOptions::default()
    };
    let r = net.fit(&data, &opts).unwrap();
    let Stop::NonFinite {
        epoch, good_epochs, ..
    } = r.stop
    else {
        panic!("expected a diverged run, got {:?}", r.stop)
    };
    assert_eq!(good_epochs, 2);
    assert!(epoch >= 2);
    assert_eq!(r.history.len(), 2);
    // The weights are those of the end of epoch 2, as in the checkpoint.
    assert!(
        net.weights()
            .iter()
            .all(|(_, a)| a.iter().all(|v| v.is_finite()))
    );
    let w = kiln::weights::load(&ckpt).unwrap();
    assert_eq!(w.metadata["kiln.epoch"], "2");
    for (k, a) in net.weights().iter() {
        assert_eq!(w.get(k).unwrap(), a, "{k}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
