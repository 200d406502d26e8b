//! The real `kiln` binary on real files: exit codes (0 ok, 1 the spec is wrong, 2 usage
//! or I/O), the codes of the diagnostics it prints, the JSON form, the summary table, and
//! hostile inputs — bytes that are not UTF-8, huge files, deep nesting, alias bombs,
//! absurd numbers, and specs built to make checking slow — each of which must give a
//! diagnostic quickly, never a panic, a hang or runaway memory.

mod hostile;
mod slow;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest any single run may take (debug build, a loaded 2-core machine). Every case
/// here finishes in well under a second or two; the hostile ones used to take minutes.
const DEADLINE: Duration = Duration::from_secs(30);

/// A file in a private temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kiln-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write a temp file");
        TempFile(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// The stream the CLI prints diagnostics on, for readable assertion messages.
    fn show(&self) -> String {
        let cut = |s: &str| s.chars().take(3000).collect::<String>();
        format!(
            "exit {} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.elapsed,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
    fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "{}", self.show());
        assert!(!self.stderr.contains("panicked"), "{}", self.show());
        self
    }
    fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "expected `{needle}` on stderr\n{}",
            self.show()
        );
        self
    }
    fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "expected `{needle}` on stdout\n{}",
            self.show()
        );
        self
    }
    fn within(&self, limit: Duration) -> &Run {
        assert!(
            self.elapsed < limit,
            "took {:?} (limit {limit:?})\n{}",
            self.elapsed,
            self.show()
        );
        self
    }
}

/// Runs the binary with `args`, draining its output as it comes, and kills it (failing
/// the test) if it runs past [`DEADLINE`].
fn kiln_cmd(mut cmd: Command) -> Run {
    cmd.env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn kiln");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for kiln") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kiln {:?} did not finish within {DEADLINE:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Run {
        // A signal (no exit code) is never an acceptable outcome.
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed,
    }
}

fn kiln(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args);
    kiln_cmd(cmd)
}

/// `kiln check` on a file holding `bytes`.
fn check_bytes(bytes: &[u8]) -> Run {
    let f = TempFile::new("spec.yaml", bytes);
    kiln(&["check", f.arg()])
}

fn check_text(text: &str) -> Run {
    check_bytes(text.as_bytes())
}

/// `kiln check --format json` on a file holding `text`, parsed.
fn check_json(text: &[u8]) -> (Run, serde_json::Value) {
    let f = TempFile::new("spec.yaml", text);
    let run = kiln(&["check", f.arg(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--format json printed invalid JSON ({e})\n{}", run.show()));
    assert_eq!(v["file"], f.arg(), "{}", run.show());
    (run, v)
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

const MLP: &str = "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 8, activation: relu}\n  - dense: {units: 2}\n";

// ---------------------------------------------------------------------------------
// Exit codes and the one-line summary

#[test]
fn every_shipped_spec_checks_clean_with_a_one_line_summary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("specs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 5, "specs/ holds the example models");
    for spec in &specs {
        let run = kiln(&["check", spec.to_str().unwrap()]);
        run.expect(0);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line for a valid spec\n{}", run.show());
        assert!(lines[0].starts_with("ok: "), "{}", run.show());
        assert!(
            lines[0].contains(" params; ") && lines[0].contains(" → "),
            "{}",
            run.show()
        );
        assert!(!run.stderr.contains("error"), "{}", run.show());
    }
}

#[test]
fn the_cnn_summary_line_has_keras_counts() {
    // conv2d 3·3·1·16+16 = 160, conv2d 3·3·16·32+32 = 4,640, batch norm 4·32 = 128,
    // dense 32·10+10 = 330: 5,258 in all.
    let run = kiln(&["check", &repo("specs/cnn.yaml")]);
    run.expect(0);
    assert_eq!(
        run.stdout.trim_end(),
        "ok: digits_cnn — 7 layers, 5,258 params; image [batch, 8, 8, 1] → logits [batch, 10]"
    );
}

#[test]
fn summary_prints_the_table_and_totals() {
    let run = kiln(&["summary", &repo("specs/cnn.yaml")]);
    run.expect(0)
        .stdout_has("Model: \"digits_cnn\"")
        .stdout_has("Layer (type)")
        .stdout_has("Output Shape")
        .stdout_has("conv2d (Conv2D)")
        .stdout_has("(batch, 8, 8, 16)")
        .stdout_has("conv2d_1 (Conv2D)")
        .stdout_has("batch_normalization (BatchNormalization)")
        .stdout_has("logits (Dense)")
        .stdout_has("(batch, 10)")
        .stdout_has("Total params: 5,258 (20.54 KB)")
        .stdout_has("Trainable params: 5,194 (20.29 KB)")
        .stdout_has("Non-trainable params: 64 (256.00 B)");
    let row = run
        .stdout
        .lines()
        .find(|l| l.contains("conv2d_1 (Conv2D)"))
        .expect("a conv2d_1 row");
    assert!(
        row.contains("4,640") && row.contains("max_pooling2d"),
        "{row}"
    );
}

#[test]
fn summary_of_a_broken_spec_exits_1_with_its_diagnostics() {
    let f = TempFile::new(
        "bad.yaml",
        b"inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 0}\n",
    );
    kiln(&["summary", f.arg()]).expect(1).stderr_has("E0404");
}

#[test]
fn a_missing_file_is_exit_2() {
    let dir = TempFile::new("present.yaml", b"");
    let missing = dir.path().with_file_name("absent.yaml");
    let run = kiln(&["check", missing.to_str().unwrap()]);
    run.expect(2).stderr_has("absent.yaml");
    assert!(run.stdout.is_empty(), "{}", run.show());
    kiln(&["summary", missing.to_str().unwrap()]).expect(2);
    kiln(&["check", missing.to_str().unwrap(), "--format", "json"]).expect(2);
}

#[test]
fn a_directory_is_exit_2() {
    let f = TempFile::new("x.yaml", b"");
    let dir = f.path().parent().unwrap().to_str().unwrap().to_string();
    kiln(&["check", &dir]).expect(2);
}

#[test]
fn bad_usage_is_exit_2() {
    let spec = repo("specs/mlp.yaml");
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["check"][..],
        &["check", &spec, "--format", "xml"][..],
        &["check", &spec, "--no-such-flag"][..],
        &["check", &spec, &spec][..],
        &["summary"][..],
    ] {
        let run = kiln(args);
        run.expect(2);
        assert!(
            !run.stderr.is_empty(),
            "usage errors say why\n{}",
            run.show()
        );
    }
    kiln(&["--help"]).expect(0).stdout_has("check");
    kiln(&["check", "--help"]).expect(0);
}

// ---------------------------------------------------------------------------------
// JSON

#[test]
fn json_output_has_every_field_with_one_based_positions() {
    let spec = b"inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 1e40}\n  - dense: {units: 2, activation: relux}\n";
    let (run, v) = check_json(spec);
    run.expect(1);
    assert_eq!(v["valid"], false);
    let diags = v["diagnostics"].as_array().expect("a diagnostics array");
    assert_eq!(diags.len(), 2, "{v}");
    for d in diags {
        for field in [
            "code", "severity", "message", "line", "column", "labels", "help",
        ] {
            assert!(d.get(field).is_some(), "`{field}` missing in {d}");
        }
        assert_eq!(d["severity"], "error");
        assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
        assert!(d["help"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
        let labels = d["labels"].as_array().expect("labels");
        let primary: Vec<_> = labels.iter().filter(|l| l["primary"] == true).collect();
        assert_eq!(primary.len(), 1, "{d}");
        for l in labels {
            for field in ["line", "column", "length", "message", "primary"] {
                assert!(l.get(field).is_some(), "`{field}` missing in label {l}");
            }
        }
        assert_eq!(d["line"], primary[0]["line"]);
        assert_eq!(d["column"], primary[0]["column"]);
    }
    // `1e40` is on line 4 at column 20, four characters long; `relux` on line 5.
    assert_eq!(diags[0]["code"], "E0403");
    assert_eq!(
        (diags[0]["line"].as_u64(), diags[0]["column"].as_u64()),
        (Some(4), Some(20))
    );
    assert_eq!(diags[0]["labels"][0]["length"], 4);
    assert_eq!(diags[1]["code"], "E0407");
    let text = std::str::from_utf8(spec).unwrap();
    let line5 = text.lines().nth(4).unwrap();
    let col = line5.find("relux").unwrap() as u64 + 1;
    assert_eq!(
        (diags[1]["line"].as_u64(), diags[1]["column"].as_u64()),
        (Some(5), Some(col))
    );
    assert_eq!(diags[1]["labels"][0]["length"], 5);
    assert!(diags[1]["help"].as_str().unwrap().contains("relu"), "{v}");
}

#[test]
fn json_columns_count_characters_not_bytes() {
    let text = "name: \"ñandú ☕\"\ninputs:\n  x: [batch, 4]\nlayers:\n  - dense: {kernel_initializer: {constant: {value: 1}}, name: \"café☕\", units: 0}\n";
    let (run, v) = check_json(text.as_bytes());
    run.expect(1);
    let d = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "E0404");
    let d = d.unwrap_or_else(|| panic!("no E0404 in {v}"));
    let line = text.lines().nth(4).unwrap();
    let col = line[..line.find("0}").unwrap()].chars().count() as u64 + 1;
    assert_ne!(
        col as usize,
        line.find("0}").unwrap() + 1,
        "the line has multi-byte characters before the error"
    );
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(5), Some(col)),
        "{v}"
    );
}

#[test]
fn json_for_a_valid_spec_is_valid_with_no_errors() {
    let (run, v) = check_json(MLP.as_bytes());
    run.expect(0);
    assert_eq!(v["valid"], true);
    assert!(
        v["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["severity"] == "warning"),
        "{v}"
    );
    // A warning is reported but leaves the spec valid.
    let unused = "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 3, name: side}\n  - dense: {units: 2, input: x}\n";
    let (run, v) = check_json(unused.as_bytes());
    run.expect(0);
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"][0]["code"], "W0701", "{v}");
    assert_eq!(v["diagnostics"][0]["severity"], "warning");
    assert_eq!(v["diagnostics"][0]["line"], 4);
}

#[test]
fn json_is_printed_for_hostile_input_too() {
    for bytes in [
        &b""[..],
        &b"\xff"[..],
        &b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["[..],
        &b"inputs: {x: [batch, 4]}\nlayers: [{dense: {units: 1e40}}]\n\xc3"[..],
    ] {
        let (run, v) = check_json(bytes);
        run.expect(1);
        assert_eq!(v["valid"], false);
        let d = &v["diagnostics"][0];
        assert!(
            d["code"].as_str().is_some_and(|c| c.starts_with('E')),
            "{v}"
        );
    }
}

/// A reader that stops early (`kiln ir … | head -1`) ends kiln quietly, as it does
/// `cat`: no panic message about a broken pipe.
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "ir",
            &format!("{}/specs/cnn.yaml", env!("CARGO_MANIFEST_DIR")),
            "--stage",
            "clif",
            "--step",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("function"), "{first}");
    // The reader is gone now; kiln has far more to print.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(status.code(), Some(101), "{err}");
}

/// `kiln explain CODE` prints a code's page (however the code is written) and refuses
/// codes kiln does not have as a usage error.
#[test]
fn explain_prints_a_page_and_refuses_unknown_codes() {
    let run = kiln(&["explain", "E0504"]);
    run.expect(0)
        .stdout_has("E0504: ")
        .stdout_has("A spec with this mistake:")
        .stdout_has("The same spec, fixed:");
    assert_eq!(kiln(&["explain", "e0504"]).expect(0).stdout, run.stdout);
    kiln(&["explain", "W0701"]).expect(0).stdout_has("W0701: ");
    kiln(&["explain", "E0999"])
        .expect(2)
        .stderr_has("no such code `E0999`; codes look like E0504");
    kiln(&["explain"]).expect(2);
}

/// The number in a plan's first line, `plan @NAME (N kernels, …)`.
fn kernels_in(plan: &str) -> usize {
    let head = plan.lines().next().unwrap_or_default();
    let n = head.split('(').nth(1).and_then(|r| r.split(' ').next());
    n.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no kernel count in {head:?}"))
}

#[test]
fn bench_profile_times_every_kernel_of_both_plans() {
    let spec = repo("specs/attention.yaml");
    let predict = kiln(&["ir", &spec, "--stage", "kernels"]);
    let step = kiln(&["ir", &spec, "--stage", "kernels", "--step"]);
    let args = ["bench", &spec, "--runs", "2", "--batch-size", "3"];
    let (run, json) = {
        let mut a = args.to_vec();
        a.extend(["--profile", "--json", "--dim", "seq=5"]);
        let r = kiln(&a);
        r.expect(0);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("bench --json");
        (r, v)
    };
    for (func, plan) in [("predict", &predict), ("train_step", &step)] {
        let ks = json["profile"][func]
            .as_array()
            .unwrap_or_else(|| panic!("no profile of {func}\n{}", run.show()));
        assert_eq!(ks.len(), kernels_in(&plan.expect(0).stdout), "{func}");
        for (i, k) in ks.iter().enumerate() {
            assert_eq!(k["kernel"], i);
            let label = k["label"].as_str().unwrap_or_default();
            assert!(label.starts_with(&format!("k{i}: ")), "{label}");
            assert!(plan.stdout.contains(label), "{label} is a line of the plan");
            assert!(k["us"].as_f64().is_some_and(|us| us >= 0.0));
        }
        let total: f64 = ks.iter().filter_map(|k| k["us"].as_f64()).sum();
        assert!(total > 0.0, "{func} took no time");
    }
    kiln(&[&args[..], &["--profile"]].concat())
        .expect(0)
        .stdout_has("where @predict spends its time")
        .stdout_has("where @train_step spends its time")
        .stdout_has(": attention %");
    // Without the flag, no profile.
    let plain = kiln(&[&args[..], &["--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&plain.expect(0).stdout).expect("json");
    assert!(v.get("profile").is_none());
}
