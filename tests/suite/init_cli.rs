//! `kiln init` through the real binary: exit codes, the file it writes, and no file at
//! all when it cannot write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn spec(name: &str) -> String {
    format!("{}/specs/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-init-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn init_writes_weights_that_fit_the_model() {
    let dir = temp_dir("ok");
    let out = dir.join("w.safetensors");
    let o = kiln(&["init", &spec("cnn.yaml"), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(said.starts_with("wrote "), "{said}");
    assert!(said.contains("(seed 0)"), "{said}");

    let m = kiln::Model::from_path(spec("cnn.yaml")).unwrap();
    let w = kiln::weights::load_for(&m.graph, &out).unwrap();
    assert_eq!(w.metadata["kiln.seed"], "0");
    assert_eq!(w.metadata["kiln.model"], "digits_cnn");
    assert_eq!(w.get("conv2d/kernel").unwrap().shape(), &[3, 3, 1, 16]);

    // Same seed, same bytes; another seed, other bytes.
    let again = dir.join("again.safetensors");
    let o = kiln(&[
        "init",
        &spec("cnn.yaml"),
        "--out",
        again.to_str().unwrap(),
        "--seed",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let o = kiln(&[
        "init",
        &spec("cnn.yaml"),
        "--out",
        again.to_str().unwrap(),
        "--seed",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("(seed 1)"));
    assert_ne!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    assert_eq!(entries(&dir), ["again.safetensors", "w.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_to_an_unwritable_path_exits_2_and_creates_nothing() {
    let dir = temp_dir("unwritable");
    // A regular file where a directory should be: unwritable even for root.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    for out in [
        blocker.join("w.safetensors"),
        dir.join("missing/w.safetensors"),
    ] {
        let o = kiln(&["init", &spec("mlp.yaml"), "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!("{}: cannot write the file", out.display())),
            "{err}"
        );
        assert!(!out.exists());
    }
    assert_eq!(entries(&dir), ["file"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_with_a_wrong_spec_exits_1_and_writes_nothing() {
    let dir = temp_dir("badspec");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "inputs: {x: [batch, 4]}\nlayers:\n  - dense: {units: -1}\n",
    )
    .unwrap();
    let out = dir.join("w.safetensors");
    let o = kiln(&[
        "init",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(!out.exists());
    // A missing spec is an I/O error.
    let o = kiln(&[
        "init",
        "/nonexistent/spec.yaml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
