//! `kiln train` and `kiln eval` through the real binary, on the interpreter: Keras-like
//! epoch lines, the files written (weights, checkpoint, CSV log, PNG curves), exact
//! resumption (at an epoch, and after Ctrl-C), a one-step update equal to a direct
//! evaluation of the training step, and the failures: a diverging loss, bad data, an
//! unwritable or full output location. One test trains with the JIT under thread teams
//! of different sizes and compares the bits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn root(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The tensors of a safetensors file, bit for bit (metadata aside).
fn tensors(p: &Path) -> Vec<(String, Vec<u32>)> {
    kiln::weights::load(p)
        .unwrap()
        .iter()
        .map(|(k, a)| (k.to_string(), a.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// A small copy of the digits MLP spec, with its data path made absolute.
fn small_spec(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "name: small
inputs:
  image: [batch, 8, 8, 1]
layers:
  - flatten
  - dense: {{units: 16, activation: relu}}
  - dropout: {{rate: 0.1}}
  - dense: {{units: 10, name: logits}}
train:
  targets: {{label: {{shape: [batch], dtype: i32}}}}
  loss: {{sparse_categorical_crossentropy: {{from_logits: true}}}}
  optimizer: {{adam: {{learning_rate: 0.01}}}}
  metrics: [accuracy]
  batch_size: 64
  epochs: 4
  seed: 1
  data: {{path: {}, validation_split: 0.2}}
{extra}",
        root("data/digits.npz")
    );
    let p = dir.join("small.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn train_prints_keras_lines_and_writes_every_file() {
    let dir = temp_dir("files");
    let out = dir.join("w.safetensors");
    let log = dir.join("log.csv");
    let png = dir.join("curves.png");
    let o = kiln(&[
        "train",
        &root("specs/digits_mlp.yaml"),
        "--backend",
        "interp",
        "--epochs",
        "3",
        "--out",
        s(&out),
        "--log",
        s(&log),
        "--plot",
        s(&png),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(said.starts_with("training digits_mlp on "), "{said}");
    assert!(
        said.contains("1,437 examples, 360 held out for validation"),
        "{said}"
    );
    let lines: Vec<&str> = said.lines().filter(|l| l.starts_with("Epoch ")).collect();
    assert_eq!(lines.len(), 3, "{said}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with(&format!("Epoch {}/3  45/45 ━━━━━━━━━━━━━━━━━━━━ ", i + 1)),
            "{l}"
        );
        assert!(l.contains("/step - accuracy: 0."), "{l}");
        assert!(
            l.contains(" - loss: ") && l.contains(" - val_accuracy: "),
            "{l}"
        );
        assert!(l.contains(" - val_loss: "), "{l}");
    }
    assert!(
        said.contains(&format!("wrote the weights to {}", out.display())),
        "{said}"
    );
    let ckpt = dir.join("w.ckpt.safetensors");
    assert_eq!(
        entries(&dir),
        [
            "curves.png",
            "log.csv",
            "w.ckpt.safetensors",
            "w.safetensors"
        ]
    );
    let m = kiln::Model::from_path(root("specs/digits_mlp.yaml")).unwrap();
    kiln::weights::load_for(&m.graph, &out).unwrap();
    let c = kiln::weights::load(&ckpt).unwrap();
    assert_eq!(c.metadata["kiln.epoch"], "3");
    assert_eq!(c.metadata["kiln.step"], "135");
    assert!(c.contains_key("optimizer/dense/kernel/momentum"));
    let csv = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    assert_eq!(rows.len(), 4);
    assert!(rows[3].starts_with("2,"));
    let png_bytes = std::fs::read(&png).unwrap();
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");

    // eval on the spec's validation split reproduces the last epoch's val values.
    let last_val_acc = lines[2]
        .split(" - val_accuracy: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let o = kiln(&[
        "eval",
        &root("specs/digits_mlp.yaml"),
        "--weights",
        s(&out),
        "--backend",
        "interp",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(
        said.contains("on 360 examples of the validation split (0.2)"),
        "{said}"
    );
    assert!(
        said.contains(&format!("\naccuracy: {last_val_acc}\n")),
        "{said}"
    );
    assert!(said.contains("\nloss: "), "{said}");
    // A checkpoint evaluates the same as weights (its optimizer state is ignored).
    let o2 = kiln(&[
        "eval",
        &root("specs/digits_mlp.yaml"),
        "--weights",
        s(&ckpt),
        "--backend",
        "interp",
    ]);
    assert_eq!(o2.status.code(), Some(0));
    let tail = |o: &Output| {
        text(&o.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(tail(&o), tail(&o2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resumed_at_an_epoch_equals_uninterrupted_and_is_deterministic() {
    let dir = temp_dir("resume");
    let spec = small_spec(
        &dir,
        "  callbacks:\n    - reduce_lr_on_plateau: {monitor: val_loss, patience: 1, factor: 0.5, min_delta: 0.5}\n",
    );
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(format!("{name}.safetensors"));
        let mut args = vec!["train", s(&spec), "--backend", "interp", "--out", s(&out)];
        args.extend_from_slice(extra);
        let o = kiln(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        (out, text(&o.stdout))
    };
    let (full, full_text) = run("full", &[]);
    let (again, _) = run("again", &[]);
    assert_eq!(tensors(&full), tensors(&again), "same seed, same bits");
    let (other, _) = run("other", &["--seed", "2"]);
    assert_ne!(tensors(&full), tensors(&other));

    let (_, first_text) = run("part", &["--epochs", "2"]);
    let ckpt = dir.join("part.ckpt.safetensors");
    let (resumed, resumed_text) = run("resumed", &["--resume", s(&ckpt), "--epochs", "4"]);
    // A weights file given to --resume: the library says what it is, the CLI names the
    // flag that starts from it.
    let o = kiln(&[
        "train",
        s(&spec),
        "--resume",
        s(&full),
        "--out",
        s(&dir.join("x.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let said = text(&o.stderr);
    assert!(
        said.contains("not a checkpoint")
            && said.contains("on the command line, load it with `--init`"),
        "{said}"
    );
    assert!(resumed_text.contains("resuming"), "{resumed_text}");
    assert_eq!(tensors(&full), tensors(&resumed));
    // The epoch lines after the resume are the uninterrupted run's (time aside).
    let values = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("Epoch ") && l.contains("/step"))
            .map(|l| {
                let n = l.split('/').next().unwrap();
                format!("{n} {}", l.split("/step").nth(1).unwrap())
            })
            .collect()
    };
    let mut both = values(&first_text);
    both.extend(values(&resumed_text));
    assert_eq!(values(&full_text), both);
    // The plateau callback lowered the learning rate on the way.
    assert!(
        full_text.contains("ReduceLROnPlateau reducing learning rate to 0.005."),
        "{full_text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_writes_a_checkpoint_that_resumes_exactly() {
    let dir = temp_dir("ctrlc");
    let spec = small_spec(&dir, "").to_path_buf();
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("epochs: 4", "epochs: 300"),
    )
    .unwrap();
    let full = dir.join("full.safetensors");
    // 300 short epochs (no validation): the interrupt lands long before the end.
    let base = ["--backend", "interp", "--validation-split", "0"];
    let o = kiln(&[&["train", s(&spec), "--out", s(&full)][..], &base].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let out = dir.join("w.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", s(&spec), "--out", s(&out)])
        .args(base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let epoch = l.starts_with("Epoch 2/");
        seen.push(l);
        if epoch {
            break;
        }
    }
    let pid = child.id().to_string();
    let k = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(k.success());
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let said = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(said.contains("interrupted in epoch"), "{said}");
    assert!(said.contains("--resume"), "{said}");
    assert!(!out.exists(), "no weights file on an interrupted run");
    // The command printed works as printed, from anywhere: the checkpoint holds the
    // run's data, outputs and settings.
    let hint = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("continue with: kiln "))
        .expect("a resume command");
    let args: Vec<&str> = hint.split_whitespace().collect();
    assert!(
        args.contains(&"--resume") && !args.contains(&"--out"),
        "{hint}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(tensors(&full), tensors(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_cli_step_equals_the_training_step_evaluated_directly() {
    use kiln::ir::{interp, passes};
    use ndarray::{ArrayD, IxDyn};
    let dir = temp_dir("step");
    let spec = dir.join("s.yaml");
    std::fs::write(
        &spec,
        "inputs:
  x: [batch, 3]
layers:
  - dense: {units: 4, activation: relu}
  - dense: {units: 2}
train:
  targets: {y: [batch, 2]}
  loss: mse
  optimizer: {rmsprop: {learning_rate: 0.05, momentum: 0.9, centered: true}}
  seed: 5
",
    )
    .unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[6, 3]), |i| {
        (i[0] as f32 - 2.5) * (i[1] as f32 + 1.0) / 4.0
    });
    let y = ArrayD::from_shape_fn(IxDyn(&[6, 2]), |i| (i[0] + i[1]) as f32 / 6.0);
    let data = dir.join("d.npz");
    kiln::data::write(&data, &[("x".into(), x.clone()), ("y".into(), y.clone())]).unwrap();
    let out = dir.join("w.safetensors");
    let o = kiln(&[
        "train",
        s(&spec),
        "--data",
        s(&data),
        "--backend",
        "interp",
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--no-shuffle",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("Epoch 1/1  1/1 "));

    let m = kiln::Model::from_path(&spec).unwrap();
    let g = &m.graph;
    let w0 = kiln::weights::init(g, 5).unwrap();
    let step = kiln::lower::train::build(g).unwrap();
    let f = passes::optimize(&step.func);
    let mut inputs = vec![x];
    inputs.extend(w0.iter().map(|(_, a)| a.clone()));
    inputs.push(ArrayD::from_elem(IxDyn(&[]), kiln::net::rng_key(5, 0)));
    inputs.push(y);
    for k in &step.layout.state {
        let p = k
            .strip_prefix("optimizer/")
            .unwrap()
            .rsplit_once('/')
            .unwrap()
            .0;
        inputs.push(ArrayD::zeros(w0.get(p).unwrap().shape()));
    }
    inputs.push(ArrayD::from_elem(IxDyn(&[]), 0.0));
    inputs.push(ArrayD::from_elem(IxDyn(&[]), 0.05));
    let outs = interp::eval::<f32>(&f, &inputs).unwrap();
    let got = kiln::weights::load(&out).unwrap();
    for p in &step.layout.params {
        let i = f
            .outputs
            .iter()
            .position(|(n, _)| *n == format!("new/{p}"))
            .unwrap();
        let want: Vec<u32> = outs[i].iter().map(|v| v.to_bits()).collect();
        let have: Vec<u32> = got.get(p).unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(want, have, "{p}");
        assert_ne!(w0.get(p).unwrap(), &outs[i], "{p} moved");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("nan");
    // 23 steps per epoch; after 46 (two epochs) the learning rate becomes 1e30.
    let spec = small_spec(&dir, "");
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec).unwrap().replace(
            "optimizer: {adam: {learning_rate: 0.01}}",
            "optimizer: {sgd: {learning_rate: {piecewise_constant_decay: {boundaries: [45], values: [0.05, 1.0e30]}}}}",
        ),
    )
    .unwrap();
    let out = dir.join("w.safetensors");
    let o = kiln(&["train", s(&spec), "--backend", "interp", "--out", s(&out)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error: the loss became"), "{err}");
    assert!(err.contains("at epoch 3"), "{err}");
    assert!(
        err.contains("the last good checkpoint, after epoch 2, is kept in"),
        "{err}"
    );
    assert!(err.contains("lower the learning rate"), "{err}");
    assert!(!out.exists());
    let c = kiln::weights::load(dir.join("w.ckpt.safetensors")).unwrap();
    assert_eq!(c.metadata["kiln.epoch"], "2");
    assert!(c.iter().all(|(_, a)| a.iter().all(|v| v.is_finite())));
    assert_eq!(entries(&dir), ["small.yaml", "w.ckpt.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_data_and_missing_files_are_clear_errors() {
    let dir = temp_dir("data");
    let spec = root("specs/digits_mlp.yaml");
    // Wrong shape: exit 1, naming the file, the array, expected and found.
    let x = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[5, 64]));
    let y = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[5]));
    let bad = dir.join("bad.npz");
    kiln::data::write(&bad, &[("image".into(), x), ("label".into(), y)]).unwrap();
    let o = kiln(&["train", &spec, "--data", s(&bad), "--backend", "interp"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(s(&bad)), "{err}");
    assert!(
        err.contains("`image` has shape [5, 64]") && err.contains("[batch, 8, 8, 1]"),
        "{err}"
    );
    // Labels saved as floats: a dtype error.
    let x = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[5, 8, 8, 1]));
    let y = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[5]));
    kiln::data::write(&bad, &[("image".into(), x), ("label".into(), y)]).unwrap();
    let o = kiln(&["train", &spec, "--data", s(&bad), "--backend", "interp"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`label` is i32") && err.contains("float32"),
        "{err}"
    );
    // Garbage: exit 1, no panic.
    std::fs::write(&bad, b"PK\x03\x04 not really a zip").unwrap();
    let o = kiln(&["train", &spec, "--data", s(&bad), "--backend", "interp"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("panicked"));
    // A missing file: an I/O error, exit 2.
    let o = kiln(&["train", &spec, "--data", s(&dir.join("none.npz"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    // eval without a weights file: exit 2; with weights of another model: exit 1.
    let o = kiln(&["eval", &spec, "--weights", s(&dir.join("none.safetensors"))]);
    assert_eq!(o.status.code(), Some(2));
    let w = dir.join("cnn.safetensors");
    assert_eq!(
        kiln(&["init", &root("specs/digits_cnn.yaml"), "--out", s(&w)])
            .status
            .code(),
        Some(0)
    );
    let o = kiln(&["eval", &spec, "--weights", s(&w)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("is missing"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_regression_spec_trains_on_its_csv() {
    let dir = temp_dir("csv");
    let out = dir.join("d.safetensors");
    let o = kiln(&[
        "train",
        &root("specs/diabetes.yaml"),
        "--backend",
        "interp",
        "--epochs",
        "30",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(said.contains("353 examples, 89 held out"), "{said}");
    // Better than predicting the mean (the target's standard deviation is 77, so MSE
    // ~6000): a mean absolute error under 50 on held-out patients.
    let last = said
        .lines()
        .rfind(|l| l.contains("/step"))
        .unwrap()
        .to_string();
    let mae: f64 = last
        .split(" - val_mae: ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(mae < 50.0, "{last}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_or_full_output_is_a_clear_error_and_keeps_the_old_file() {
    let dir = temp_dir("unwritable");
    let spec = small_spec(&dir, "");
    // A folder that cannot exist (its parent is a file): refused before training.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = blocker.join("w.safetensors");
    let o = kiln(&["train", s(&spec), "--backend", "interp", "--out", s(&out)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot write there"), "{err}");
    assert!(
        !text(&o.stdout).contains("Epoch"),
        "refused before training"
    );

    // A full file system (a 40 KiB tmpfs, when this machine lets the test mount one):
    // the old weights stay as they were, and no temporary file is left.
    let mnt = dir.join("full");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40k", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("note: cannot mount a tmpfs here; the full-disk case is not exercised");
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Unmount(mnt.clone());
    let good = mnt.join("w.safetensors");
    let o = kiln(&[
        "train",
        s(&spec),
        "--backend",
        "interp",
        "--epochs",
        "1",
        "--out",
        s(&good),
        "--checkpoint",
        s(&dir.join("c.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let before = std::fs::read(&good).unwrap();
    // Fill the rest of the file system.
    let filler = vec![0u8; 1024];
    let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
    use std::io::Write;
    while f.write_all(&filler).is_ok() {}
    drop(f);
    let o = kiln(&[
        "train",
        s(&spec),
        "--backend",
        "interp",
        "--epochs",
        "1",
        "--seed",
        "9",
        "--out",
        s(&good),
        "--checkpoint",
        s(&dir.join("c.safetensors")),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(s(&good)) && err.contains("cannot write"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the old weights are intact"
    );
    assert_eq!(entries(&mnt), ["filler", "w.safetensors"]);
    drop(guard);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Compiled training gives the same bits whatever the size of kiln's thread team: a
/// split product, loop or pooling gradient computes every element exactly as the
/// unsplit one does. Three epochs of the digits CNN with 1, 2 and 3 threads.
#[test]
fn the_thread_count_does_not_change_the_trained_bits() {
    let dir = temp_dir("threads");
    let mut files = Vec::new();
    for t in ["1", "2", "3"] {
        let out = dir.join(format!("w{t}.safetensors"));
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "train",
                &root("specs/digits_cnn.yaml"),
                "--epochs",
                "3",
                "--backend",
                "jit",
                "--out",
                s(&out),
            ])
            .env("KILN_NUM_THREADS", t)
            .output()
            .unwrap();
        assert!(o.status.success(), "{t} threads: {}", text(&o.stderr));
        files.push(std::fs::read(&out).unwrap());
    }
    assert!(files[0] == files[1], "1 vs 2 threads differ");
    assert!(files[0] == files[2], "1 vs 3 threads differ");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kiln eval` without `--data` evaluates on the spec's `validation_data` file when it
/// names one (as training validated), and says so.
#[test]
fn eval_uses_the_specs_validation_data() {
    let dir = temp_dir("evalval");
    let spec = small_spec(&dir, "");
    // The validation file: the last 100 digits, under the spec's names.
    let all = kiln::data::read(Path::new(&root("data/digits.npz"))).unwrap();
    let kiln::data::Content::Named(arrays) = all else {
        panic!("digits.npz holds named arrays")
    };
    let tail: Vec<(String, ndarray::ArrayD<f32>)> = arrays
        .into_iter()
        .map(|(n, l)| {
            let len = l.data.shape()[0];
            let t = l.data.slice_axis(ndarray::Axis(0), (len - 100..len).into());
            (n, t.to_owned())
        })
        .collect();
    // Labels stay integers, as the spec declares them.
    let members: Vec<(String, Vec<u8>)> = tail
        .iter()
        .map(|(n, a)| {
            let bytes = if n == "label" {
                let ints: Vec<u8> = a.iter().flat_map(|v| (*v as i32).to_le_bytes()).collect();
                kiln::data::npy::encode("<i4", a.shape(), &ints)
            } else {
                kiln::data::npy::to_bytes(a)
            };
            (n.clone(), bytes)
        })
        .collect();
    std::fs::write(
        dir.join("val.npz"),
        kiln::data::npz::pack(&members).unwrap(),
    )
    .unwrap();
    let text_spec = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text_spec + "  validation_data: val.npz\n").unwrap();
    let w = dir.join("w.safetensors");
    let o = kiln(&["init", s(&spec), "--out", s(&w)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = kiln(&["eval", s(&spec), "--weights", s(&w), "--backend", "interp"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(out.contains("val.npz"), "{out}");
    let o2 = kiln(&[
        "eval",
        s(&spec),
        "--weights",
        s(&w),
        "--data",
        s(&dir.join("val.npz")),
        "--backend",
        "interp",
    ]);
    assert_eq!(o2.status.code(), Some(0), "{}", text(&o2.stderr));
    let numbers = |t: &str| t.lines().last().unwrap_or("").to_string();
    assert_eq!(numbers(&out), numbers(&text(&o2.stdout)));
    std::fs::remove_dir_all(&dir).unwrap();
}
