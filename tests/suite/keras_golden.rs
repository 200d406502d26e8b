//! kiln against Keras 3 itself: every case in `tests/golden/keras/` is a spec and the
//! values Keras computed for it (written by `scripts/keras_golden.py`, which says how to
//! regenerate them). With Keras's initial weights loaded, kiln's inference output, the
//! loss of one training step and the weights after it equal Keras's, on both backends.

use std::path::{Path, PathBuf};

use kiln::ndarray::{ArrayD, ArrayViewD};
use kiln::{Backend, Options, Weights};

/// f32 results of two implementations agree to this much (relative, with an absolute
/// floor for values near zero): summation orders differ, the formulas do not.
const RTOL: f32 = 2e-4;
const ATOL: f32 = 2e-5;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras")
}

/// The case names: every `NAME.yaml` in the folder.
fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("tests/golden/keras exists")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

struct Fixture {
    arrays: Vec<(String, ArrayD<f32>)>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = cases_dir().join(format!("{name}.npz"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} — run `python3 scripts/keras_golden.py {name}` and commit it",
                path.display()
            )
        });
        let arrays = kiln::data::npz::parse(&bytes, u64::MAX)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .into_iter()
            .map(|(k, l)| (k, l.data))
            .collect();
        Fixture { arrays }
    }

    /// The arrays under `prefix.`, keyed by the rest of their name, in file order.
    fn group(&self, prefix: &str) -> Vec<(&str, &ArrayD<f32>)> {
        let p = format!("{prefix}.");
        self.arrays
            .iter()
            .filter_map(|(k, a)| k.strip_prefix(&p).map(|k| (k, a)))
            .collect()
    }

    fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.arrays.iter().find(|(k, _)| k == name).map(|(_, a)| a)
    }

    fn weights(&self, prefix: &str) -> Weights {
        let mut w = Weights::new();
        for (k, a) in self.group(prefix) {
            w.insert(k, a.clone());
        }
        w
    }
}

fn views<'a>(g: &'a [(&'a str, &'a ArrayD<f32>)]) -> Vec<(&'a str, ArrayViewD<'a, f32>)> {
    g.iter().map(|(k, a)| (*k, a.view())).collect()
}

/// Within the tolerance (false for NaN).
fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= ATOL + RTOL * want.abs()
}

/// Where `got` and `want` differ by more than the tolerance: the first index, both values.
fn mismatch(got: &ArrayD<f32>, want: &ArrayD<f32>) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!("shape {:?}, Keras {:?}", got.shape(), want.shape()));
    }
    let worst = got
        .iter()
        .zip(want.iter())
        .enumerate()
        .filter(|(_, (g, w))| !close(**g, **w))
        .max_by(|a, b| {
            let d = |(g, w): (&f32, &f32)| (g - w).abs();
            d(a.1).total_cmp(&d(b.1))
        })?;
    let (i, (g, w)) = worst;
    Some(format!("element {i}: kiln {g}, Keras {w}"))
}

/// Runs one case on one backend; returns what differs from Keras.
fn run(name: &str, fx: &Fixture, backend: Backend) -> Vec<String> {
    let spec = cases_dir().join(format!("{name}.yaml"));
    let model = kiln::Model::from_path(&spec).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let mut net = model
        .compile(&Options {
            backend,
            ..Options::default()
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    net.set_weights(fx.weights("w0"))
        .unwrap_or_else(|e| panic!("{name}: Keras's weights do not load: {e}"));
    let x = fx.group("x");
    let inputs = views(&x);
    let mut bad = Vec::new();
    let outs = net
        .predict_all(&inputs)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (out, got) in &outs {
        match fx.get(&format!("out.{out}")) {
            Some(want) => bad.extend(mismatch(got, want).map(|m| format!("output `{out}`: {m}"))),
            None => bad.push(format!("output `{out}` is not in the fixture")),
        }
    }
    let Some(loss) = fx.get("loss") else {
        return bad;
    };
    let y = fx.group("y");
    let step = net
        .train_on_batch(&inputs, &views(&y))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = loss.iter().next().copied().unwrap_or(f32::NAN);
    if !close(step.loss, want) {
        bad.push(format!("loss: kiln {}, Keras {want}", step.loss));
    }
    let after = fx.weights("w1");
    for (k, want) in after.iter() {
        match net.weights().get(k) {
            Some(got) => {
                bad.extend(mismatch(got, want).map(|m| format!("`{k}` after a step: {m}")))
            }
            None => bad.push(format!("kiln has no weight `{k}`")),
        }
    }
    bad
}

#[test]
fn every_case_equals_keras_on_both_backends() {
    let names = cases();
    assert!(!names.is_empty(), "no cases in tests/golden/keras");
    let mut failures = Vec::new();
    for name in &names {
        let fx = Fixture::load(name);
        assert!(
            !fx.group("w0").is_empty() || fx.get("loss").is_none(),
            "{name}: the fixture holds no weights"
        );
        for backend in [Backend::Jit, Backend::Interp] {
            for m in run(name, &fx, backend) {
                failures.push(format!("{name} ({backend:?}): {m}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The comparison sees a difference: a kernel off by 1e-3 changes the output and the
/// updated weights beyond the tolerance.
#[test]
fn a_perturbed_weight_is_caught() {
    let mut fx = Fixture::load("core_mlp");
    let (_, w) = fx
        .arrays
        .iter_mut()
        .find(|(k, _)| k == "w0.dense/kernel")
        .expect("core_mlp has dense/kernel");
    w.iter_mut().for_each(|v| *v += 1e-3);
    let bad = run("core_mlp", &fx, Backend::Jit);
    assert!(bad.iter().any(|m| m.starts_with("output")), "{bad:?}");
    assert!(bad.iter().any(|m| m.contains("after a step")), "{bad:?}");
}
