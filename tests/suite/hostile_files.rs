//! Hostile paths through the real binary (issue 14, findings 4–6): an output that is one
//! of the run's inputs or another output is refused before anything runs (by path, by
//! hard link, through a symlink, as `./x` against `x`) and no file changes; a symlinked
//! output is written through, a device or a pipe refused; temporary files that a killed
//! run left behind are removed by the next write to their folder, a live one's kept.

#![cfg(unix)]

use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln::data;
use ndarray::{ArrayD, IxDyn};

const SPEC: &str = "name: tiny
inputs:
  x: [batch, 3]
layers:
  - dense: {units: 2, name: y_hat}
train:
  targets: {y: [batch, 2]}
  loss: mse
  optimizer: sgd
  batch_size: 4
  epochs: 1
  seed: 0
  data: {path: d.npz}
";

/// Runs kiln in `dir`.
fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run kiln")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn array(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| (i % 5) as f32 / 5.0).collect()).unwrap()
}

/// A folder with a spec `s.yaml`, its data `d.npz`, an input `x.npy` and weights
/// `w.safetensors`.
fn setup(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.yaml"), SPEC).unwrap();
    let d = [
        ("x".to_string(), array(&[8, 3])),
        ("y".into(), array(&[8, 2])),
    ];
    data::write(&dir.join("d.npz"), &d).unwrap();
    data::write(&dir.join("x.npy"), &[("x".into(), array(&[2, 3]))]).unwrap();
    let o = kiln(&dir, &["init", "s.yaml", "--out", "w.safetensors"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    dir
}

/// Every entry of a folder: its name, and its bytes or where it links to.
fn snapshot(dir: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if t.is_symlink() {
                let to = std::fs::read_link(e.path()).unwrap();
                (
                    name,
                    "link".into(),
                    to.to_string_lossy().as_bytes().to_vec(),
                )
            } else if t.is_file() {
                (name, "file".into(), std::fs::read(e.path()).unwrap())
            } else {
                (name, format!("{t:?}"), Vec::new())
            }
        })
        .collect();
    v.sort();
    v
}

/// Runs kiln in `dir`, expects exit 2 naming every fragment, and no file changed.
fn refused(dir: &Path, args: &[&str], fragments: &[&str]) {
    let before = snapshot(dir);
    let o = kiln(dir, args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}\n{err}");
    for f in fragments {
        assert!(err.contains(f), "{args:?}: `{f}` missing from:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(snapshot(dir) == before, "{args:?} changed a file");
}

#[test]
fn outputs_that_are_inputs_are_refused_and_nothing_changes() {
    let dir = setup("clobber");
    // A checkpoint to resume from, resumed into itself (allowed: that is what resuming
    // does), then the spec's and the checkpoint's roles kept apart.
    let train = ["train", "s.yaml", "--backend", "interp"];
    let with = |extra: &[&'static str]| -> Vec<&str> { [&train[..], extra].concat() };
    let o = kiln(
        &dir,
        &with(&["--out", "t.safetensors", "--checkpoint", "c"]),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = kiln(
        &dir,
        &with(&[
            "--out",
            "t.safetensors",
            "--checkpoint",
            "./c",
            "--resume",
            "c",
        ]),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::hard_link(dir.join("d.npz"), dir.join("hard")).unwrap();
    symlink("s.yaml", dir.join("spec-link")).unwrap();

    let data_msg = "--out d.npz is the same file as the data";
    refused(
        &dir,
        &with(&["--data", "d.npz", "--out", "d.npz"]),
        &[data_msg],
    );
    refused(&dir, &with(&["--out", "d.npz"]), &[data_msg]);
    refused(
        &dir,
        &with(&["--out", "./d.npz"]),
        &["--out ./d.npz", "the data"],
    );
    refused(&dir, &with(&["--out", "hard"]), &["--out hard", "the data"]);
    refused(
        &dir,
        &with(&["--out", "s.yaml"]),
        &["--out s.yaml", "the spec"],
    );
    refused(&dir, &with(&["--out", "spec-link"]), &["the spec s.yaml"]);
    refused(
        &dir,
        &with(&["--log", "s.yaml"]),
        &["--log s.yaml", "the spec"],
    );
    refused(
        &dir,
        &with(&["--plot", "d.npz"]),
        &["--plot d.npz", "the data"],
    );
    refused(
        &dir,
        &with(&["--out", "W", "--checkpoint", "W"]),
        &["--checkpoint W is the same file as --out W"],
    );
    refused(
        &dir,
        &with(&["--out", "W", "--log", "W.ckpt.safetensors"]),
        &["--log W.ckpt.safetensors", "--checkpoint"],
    );
    refused(
        &dir,
        &with(&["--init", "w.safetensors", "--out", "./w.safetensors"]),
        &["--init w.safetensors"],
    );
    refused(
        &dir,
        &with(&["--resume", "c", "--out", "c"]),
        &["--out c is the same file as --resume c"],
    );
    refused(&dir, &["init", "s.yaml", "--out", "s.yaml"], &["the spec"]);
    let predict = ["predict", "s.yaml", "--weights", "w.safetensors"];
    refused(
        &dir,
        &[&predict[..], &["--input", "x.npy", "--output", "x.npy"]].concat(),
        &["--output x.npy is the same file as --input x.npy"],
    );
    // The weights under another name with an output's extension (a hard link): the
    // same inode, refused by the guard rather than by the extension check.
    std::fs::hard_link(dir.join("w.safetensors"), dir.join("w_alias.npz")).unwrap();
    refused(
        &dir,
        &[
            &predict[..],
            &["--input", "x=x.npy", "--output", "./w_alias.npz"],
        ]
        .concat(),
        &["--output ./w_alias.npz", "--weights w.safetensors"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn symlinked_outputs_are_written_through_special_files_refused() {
    let dir = setup("special");
    std::fs::create_dir(dir.join("real")).unwrap();
    std::fs::write(dir.join("real/v.safetensors"), b"old").unwrap();
    symlink("real/v.safetensors", dir.join("link")).unwrap();
    let o = kiln(&dir, &["init", "s.yaml", "--out", "link"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        std::fs::symlink_metadata(dir.join("link"))
            .unwrap()
            .is_symlink()
    );
    let w = kiln::weights::load(dir.join("real/v.safetensors")).unwrap();
    assert_eq!(w.len(), 2);

    symlink("real/p.npy", dir.join("p-link.npy")).unwrap();
    let o = kiln(
        &dir,
        &[
            "predict",
            "s.yaml",
            "--weights",
            "link",
            "--input",
            "x.npy",
            "--output",
            "p-link.npy",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        std::fs::symlink_metadata(dir.join("p-link.npy"))
            .unwrap()
            .is_symlink()
    );
    assert!(matches!(
        data::read(&dir.join("real/p.npy")).unwrap(),
        data::Content::Single(l) if l.data.shape() == [2, 2]
    ));
    assert_eq!(
        snapshot(&dir.join("real"))
            .iter()
            .map(|e| e.0.as_str())
            .collect::<Vec<_>>(),
        ["p.npy", "v.safetensors"]
    );

    let fifo = dir.join("pipe");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    symlink("/dev/null", dir.join("null")).unwrap();
    let not_regular = "not a regular file";
    refused(
        &dir,
        &["init", "s.yaml", "--out", "pipe"],
        &["--out pipe", "a named pipe", not_regular],
    );
    refused(
        &dir,
        &["init", "s.yaml", "--out", "null"],
        &["--out null", "a character device", not_regular],
    );
    refused(
        &dir,
        &["init", "s.yaml", "--out", "real"],
        &["--out real", "a directory", not_regular],
    );
    refused(
        &dir,
        &["train", "s.yaml", "--backend", "interp", "--plot", "pipe"],
        &["--plot pipe", "a named pipe"],
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_runs_temporary_files_are_removed_by_the_next_write() {
    let dir = setup("temp");
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let stale = format!(".w.ckpt.safetensors.kiln-tmp.{dead}.4");
    let live = format!(".w.ckpt.safetensors.kiln-tmp.{me}.4");
    std::fs::write(dir.join(&stale), b"half a checkpoint").unwrap();
    std::fs::write(dir.join(&live), b"being written").unwrap();
    let o = kiln(&dir, &["init", "s.yaml", "--out", "w.safetensors"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let names: Vec<String> = snapshot(&dir).into_iter().map(|e| e.0).collect();
    assert!(!names.contains(&stale), "{names:?}");
    assert!(names.contains(&live), "{names:?}");
    // A run writes no temporary file that outlives it.
    std::fs::remove_file(dir.join(&live)).unwrap();
    let o = kiln(
        &dir,
        &["train", "s.yaml", "--backend", "interp", "--out", "t"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let names: Vec<String> = snapshot(&dir).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "d.npz",
            "s.yaml",
            "t",
            "t.ckpt.safetensors",
            "w.safetensors",
            "x.npy"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The files a spec's callbacks write are guarded like the command's own outputs: a
/// csv_logger or model_checkpoint aimed at the data, the spec or `--out` is refused
/// before training, and nothing changes.
#[test]
fn callback_files_in_the_spec_never_clobber_inputs() {
    let dir = setup("callbacks");
    let spec_with = |cb: &str| SPEC.to_string() + &format!("  callbacks: [{cb}]\n");
    let cases = [
        (
            "{csv_logger: {filename: d.npz}}",
            "the spec's csv_logger d.npz",
        ),
        ("{csv_logger: {filename: ./s2.yaml}}", "the spec"),
        (
            "{model_checkpoint: {filepath: o.safetensors, monitor: loss}}",
            "--out o.safetensors",
        ),
    ];
    for (cb, fragment) in cases {
        std::fs::write(dir.join("s2.yaml"), spec_with(cb)).unwrap();
        refused(
            &dir,
            &[
                "train",
                "s2.yaml",
                "--out",
                "o.safetensors",
                "--backend",
                "interp",
            ],
            &[fragment],
        );
    }
    // A log beside the data is fine.
    std::fs::write(
        dir.join("s2.yaml"),
        spec_with("{csv_logger: {filename: log.csv}}"),
    )
    .unwrap();
    let o = kiln(
        &dir,
        &[
            "train",
            "s2.yaml",
            "--out",
            "o.safetensors",
            "--backend",
            "interp",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(dir.join("log.csv").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
