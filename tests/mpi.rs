//! Data-parallel training under mpirun (issue 12), with two processes on this machine:
//! K=2 equals K=1 within a stated tolerance, a fixed K gives the same bits every run,
//! a checkpoint written at K=2 resumes at K=1 and at K=2, and a failing process ends
//! the whole job with a message, a non-zero exit code and the last checkpoint intact.
//!
//! Built only with `--features mpi` (Cargo.toml's `[[test]] mpi`), run by `.ci/run`;
//! needs `mpirun` (Debian's `openmpi-bin`). Every run of mpirun has a timeout, so a
//! hang fails the test instead of stopping CI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::data::{npy, npz};
use kiln::{Model, Options};
use ndarray::{ArrayD, Axis};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A validation split (validation sharded and summed); no layer whose training output
/// depends on the batch or draws at random, so that K=1 and K=2 compute the same
/// function. 1,437 training examples in batches of 100: the last batch (37) is partial
/// and splits 18/19.
const SPEC: &str = "name: digits_dp
inputs:
  image: [batch, 8, 8, 1]
layers:
  - flatten
  - dense: {units: 32, activation: relu}
  - dense: {units: 10, name: logits}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: {sgd: {learning_rate: 0.05, momentum: 0.9}}
  metrics: [accuracy]
  batch_size: 100
  epochs: 2
  seed: 0
  data: {path: digits.npz, validation_split: 0.2}
";

/// Batch normalization (each process normalizes its share by the share's statistics,
/// as data-parallel training without synchronized batch normalization does; moving
/// statistics averaged over the processes) and dropout (a stream per process).
const SPEC_BN: &str = "name: digits_bn
inputs:
  image: [batch, 8, 8, 1]
layers:
  - flatten
  - dense: {units: 32, activation: relu}
  - batch_normalization
  - dropout: {rate: 0.2}
  - dense: {units: 10, name: logits}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: adam
  metrics: [accuracy]
  batch_size: 100
  epochs: 2
  seed: 0
  data: {path: digits.npz, validation_split: 0.2}
";

/// K=2 against K=1: the largest difference of any weight, relative to the larger of
/// 1 and the weight's magnitude, after 30 steps (two epochs). Only the summation order
/// of the gradients (two half-batch sums added, against one sum) and of batch
/// normalization's statistics differs.
const TOLERANCE: f32 = 1e-4;

fn dir(name: &str) -> PathBuf {
    dir_with(name, SPEC)
}

fn dir_with(name: &str, spec: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("data/digits.npz"), d.join("digits.npz")).unwrap();
    std::fs::write(d.join("spec.yaml"), spec).unwrap();
    d
}

/// `mpirun -n k kiln train ARGS` (k = 0: kiln alone, no mpirun), one thread per process.
fn command(k: usize, dir: &Path, args: &[&str]) -> Command {
    let mut c = if k == 0 {
        Command::new(KILN)
    } else {
        let mut c = Command::new("mpirun");
        c.args([
            "--oversubscribe",
            "-n",
            &k.to_string(),
            "-x",
            "KILN_NUM_THREADS",
            KILN,
        ]);
        c
    };
    c.arg("train")
        .arg("spec.yaml")
        .args(args)
        .current_dir(dir)
        .env("KILN_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child` at most `secs` seconds, killing it (a hang) after.
fn wait(mut child: Child, secs: u64) -> Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no end after {secs} s (a hang):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn train(k: usize, dir: &Path, args: &[&str]) -> Output {
    let out = wait(command(k, dir, args).spawn().unwrap(), 180);
    assert!(
        out.status.success(),
        "mpirun -n {k} kiln train {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn weights(p: &Path) -> Vec<(String, ArrayD<f32>)> {
    kiln::weights::load(p)
        .unwrap()
        .iter()
        .map(|(k, w)| (k.to_string(), w.clone()))
        .collect()
}

/// The largest difference of any weight, relative to max(1, |weight|).
fn max_rel_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(
        a.iter().map(|w| &w.0).collect::<Vec<_>>(),
        b.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let mut worst = 0.0f32;
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() / p.abs().max(1.0));
        }
    }
    worst
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn two_processes_equal_one() {
    let d = dir("equal");
    train(0, &d, &["--out", "one.safetensors", "--log", "one.csv"]);
    train(2, &d, &["--out", "two.safetensors", "--log", "two.csv"]);
    let diff = max_rel_diff(&d.join("one.safetensors"), &d.join("two.safetensors"));
    assert!(diff < TOLERANCE, "K=2 differs from K=1 by {diff}");
    // The logs (loss, accuracy, validation sharded and summed) agree as closely.
    let csv = |n: &str| -> Vec<Vec<f64>> {
        std::fs::read_to_string(d.join(n))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let (l1, l2) = (csv("one.csv"), csv("two.csv"));
    assert_eq!(l1.len(), 2);
    assert_eq!(l1.len(), l2.len());
    for (a, b) in l1.iter().flatten().zip(l2.iter().flatten()) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{l1:?} vs {l2:?}");
    }
}

#[test]
fn a_fixed_number_of_processes_repeats_bit_for_bit() {
    let d = dir_with("bits", SPEC_BN);
    let two = train(2, &d, &["--out", "two.safetensors", "--log", "two.csv"]);
    let stdout = String::from_utf8_lossy(&two.stdout);
    // Rank 0 alone speaks: one announcement, one "wrote the weights".
    assert_eq!(stdout.matches("training digits_bn").count(), 1, "{stdout}");
    assert!(stdout.contains("2 processes"), "{stdout}");
    assert_eq!(stdout.matches("wrote the weights").count(), 1, "{stdout}");
    train(2, &d, &["--out", "again.safetensors", "--log", "again.csv"]);
    assert_eq!(
        bytes(&d.join("two.safetensors")),
        bytes(&d.join("again.safetensors")),
        "two runs with K=2 differ"
    );
    assert_eq!(bytes(&d.join("two.csv")), bytes(&d.join("again.csv")));
    // Dropout draws another stream on rank 1 and batch normalization sees half
    // batches: one process trains other weights.
    train(0, &d, &["--out", "one.safetensors"]);
    assert!(max_rel_diff(&d.join("one.safetensors"), &d.join("two.safetensors")) > 0.0);
}

#[test]
fn a_global_batch_that_does_not_divide_is_refused() {
    let d = dir("divide");
    let out = wait(
        command(2, &d, &["--batch-size", "33"]).spawn().unwrap(),
        120,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 does not divide 33"), "{err}");
}

#[test]
fn a_checkpoint_of_two_processes_resumes_on_one_and_on_two() {
    let d = dir("resume");
    // Four epochs straight, at K=2.
    train(2, &d, &["--epochs", "4", "--out", "full.safetensors"]);
    // Two epochs at K=2, then resumed for the other two at K=2 and at K=1.
    train(
        2,
        &d,
        &["--out", "half.safetensors", "--checkpoint", "half.ckpt"],
    );
    std::fs::copy(d.join("half.ckpt"), d.join("half1.ckpt")).unwrap();
    let ckpt = Model::from_path(d.join("spec.yaml"))
        .unwrap()
        .compile(&Options::default())
        .unwrap()
        .load_checkpoint(d.join("half.ckpt"))
        .unwrap();
    assert_eq!(ckpt.meta.epoch, 2);
    train(
        2,
        &d,
        &[
            "--resume",
            "half.ckpt",
            "--epochs",
            "4",
            "--out",
            "res2.safetensors",
        ],
    );
    assert_eq!(
        bytes(&d.join("full.safetensors")),
        bytes(&d.join("res2.safetensors")),
        "K=2 resumed at K=2 differs from an uninterrupted run"
    );
    train(
        0,
        &d,
        &[
            "--resume",
            "half1.ckpt",
            "--epochs",
            "4",
            "--out",
            "res1.safetensors",
        ],
    );
    let diff = max_rel_diff(&d.join("full.safetensors"), &d.join("res1.safetensors"));
    assert!(diff < TOLERANCE, "K=2 resumed at K=1 differs by {diff}");
}

/// Waits until `p` exists (a first checkpoint) while `child` runs, at most 120 s.
fn wait_for(p: &Path, child: Child) -> Child {
    let t0 = Instant::now();
    let mut child = child;
    while !p.exists() {
        if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no {}:\n{}\n{}",
                p.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The checkpoint left by a failed job loads and is whole.
fn checkpoint_intact(d: &Path, ckpt: &Path) {
    let mut net = Model::from_path(d.join("spec.yaml"))
        .unwrap()
        .compile(&Options::default())
        .unwrap();
    let r = net.load_checkpoint(ckpt).unwrap();
    assert!(r.meta.epoch >= 1);
}

/// Shards of the digits (four `.npz` files), for a spec reading `shards/*.npz`.
fn shards(d: &Path) {
    let data = kiln::data::read(&d.join("digits.npz")).unwrap();
    let arrays: Vec<(String, ArrayD<f32>)> = match data {
        kiln::data::Content::Named(a) => a.into_iter().map(|(k, l)| (k, l.data)).collect(),
        _ => panic!("digits.npz holds named arrays"),
    };
    std::fs::create_dir_all(d.join("shards")).unwrap();
    let n = arrays[0].1.shape()[0];
    for s in 0..4 {
        let (a, b) = (s * n / 4, (s + 1) * n / 4);
        let members: Vec<(String, Vec<u8>)> = arrays
            .iter()
            .map(|(k, v)| {
                let v = v.slice_axis(Axis(0), (a..b).into()).to_owned();
                let bytes = if k == "label" {
                    let y: Vec<u8> = v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect();
                    npy::encode("<i4", v.shape(), &y)
                } else {
                    npy::to_bytes(&v)
                };
                (k.clone(), bytes)
            })
            .collect();
        std::fs::write(
            d.join(format!("shards/{s}.npz")),
            npz::pack(&members).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn a_failing_process_ends_the_job_and_keeps_the_checkpoint() {
    // Bad data on one shard: the shard is cut short while the job runs.
    let d = dir("fail");
    shards(&d);
    let ckpt = d.join("run.ckpt");
    let child = command(
        2,
        &d,
        &[
            "--data",
            "shards/*.npz",
            "--epochs",
            "100000",
            "--checkpoint",
            "run.ckpt",
        ],
    )
    .spawn()
    .unwrap();
    let child = wait_for(&ckpt, child);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("shards/3.npz"))
        .unwrap();
    f.set_len(1000).unwrap();
    let out = wait(child, 120);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("error on rank"), "{err}");
    assert!(err.contains("3.npz"), "{err}");
    checkpoint_intact(&d, &ckpt);

    // A process killed: mpirun ends the others.
    let d = dir("kill");
    let ckpt = d.join("run.ckpt");
    let child = command(2, &d, &["--epochs", "100000", "--checkpoint", "run.ckpt"])
        .spawn()
        .unwrap();
    let child = wait_for(&ckpt, child);
    let ranks = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&ranks.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(!pids.is_empty(), "no rank processes under mpirun");
    Command::new("kill")
        .args(["-9", &pids[pids.len() - 1]])
        .status()
        .unwrap();
    let out = wait(child, 120);
    assert!(!out.status.success());
    checkpoint_intact(&d, &ckpt);
}
