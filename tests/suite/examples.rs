//! The programs in `examples/` run clean: each exits 0 and prints its key line. `cargo
//! test` builds them next to this binary's folder (`target/<profile>/examples/`).

use std::path::PathBuf;
use std::process::Command;

/// The built example `name`, found from this test binary's place
/// (`target/<profile>/deps/suite-HASH` → `target/<profile>/examples/NAME`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --examples` with this profile)",
        path.display()
    );
    path
}

/// Runs an example from a folder other than the crate's, asserts it succeeded, and
/// returns what it printed.
fn run(name: &str) -> String {
    let out = Command::new(example(name))
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn predict_prints_the_predicted_classes() {
    let out = run("predict");
    assert!(out.contains("example 0: predicted "), "{out}");
    assert!(out.contains("predicted classes: "), "{out}");
}

#[test]
fn train_loop_trains_and_reports_val_accuracy() {
    let out = run("train_loop");
    assert!(out.contains("epoch 3/3: mean loss "), "{out}");
    let acc: f64 = out
        .lines()
        .find_map(|l| l.split("val accuracy ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `val accuracy` line:\n{out}"));
    assert!((0.5..=1.0).contains(&acc), "{out}");
}

#[test]
fn serve_answers_every_request_with_the_same_bits() {
    let out = run("serve");
    assert!(out.contains("latency histogram (µs):"), "{out}");
    assert!(out.contains("2000 requests on 8 threads"), "{out}");
    assert!(out.contains("p99 "), "{out}");
    assert!(out.contains("bit-identical"), "{out}");
}
