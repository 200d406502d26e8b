//! Hostile inputs (issue 14, findings 1, 3 and 9): specs whose aliases, names or lists
//! would make kiln's work or output grow far past the size of the file, and data,
//! weights and spec paths that are devices or streams without end. Each case runs in a
//! thread and must finish within [`LIMIT`]; before the fixes they aborted, ran out of
//! memory, or ran for minutes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use kiln::diag::{self, Diagnostic};
use kiln::{Error, Model};

/// The time any one case may take.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` in a thread and returns its result, failing the test if it takes longer
/// than [`LIMIT`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what}: took more than {LIMIT:?}"))
}

/// The spec's diagnostics, or a failure if it checked clean.
fn spec_errors(text: String) -> (String, Vec<Diagnostic>) {
    let result = bounded("checking the spec", move || {
        let r = Model::from_source(&text, "m", "spec.yaml");
        (text, r)
    });
    match result {
        (text, Err(Error::Spec(e))) => (text, e.diagnostics),
        (_, Ok(_)) => panic!("the spec checked clean"),
        (_, Err(e)) => panic!("not a spec error: {e}"),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_long_string_behind_many_aliases_is_refused_by_its_expanded_bytes() {
    // 100 KB of text referenced by 100,000 aliases: a 0.5 MB spec that expanded to 10 GB.
    let mut text = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {{units: 1, name: &s \"{}\"}}\noutputs: [",
        "a".repeat(100_000)
    );
    text.push_str(&["*s"; 100_000].join(", "));
    text.push_str("]\n");
    assert!(text.len() < kiln::spec::MAX_SPEC_BYTES);
    let (_, diags) = spec_errors(text);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].code, "E0105");
    assert!(diags[0].message.contains("bytes"), "{}", diags[0].message);
}

#[test]
fn long_names_are_refused_and_their_diagnostics_stay_short() {
    // A 300 KB name, reused through aliases as layer names and references.
    let name = "n".repeat(300_000);
    let mut text =
        format!("inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {{units: 1, name: &n {name}}}\n");
    for _ in 0..20 {
        text.push_str("  - dense: {units: 1, name: *n, input: *n}\n");
    }
    let (text, diags) = spec_errors(text);
    let long = diags
        .iter()
        .find(|d| d.code == "E0208")
        .expect("the long name is refused");
    assert!(
        long.message.contains("300000 characters"),
        "{}",
        long.message
    );
    for d in &diags {
        let texts = std::iter::once(&d.message)
            .chain(d.help.iter())
            .chain(d.labels.iter().map(|l| &l.message));
        for t in texts {
            assert!(t.chars().count() <= diag::MAX_TEXT + 1, "{} chars", t.len());
        }
    }
    let shown = diag::render(
        &diag::Source {
            name: "spec.yaml",
            text: &text,
        },
        &diags,
        false,
    );
    // 32 MB before: every message quoted the name, and drew the line that holds it.
    assert!(
        shown.len() < 100_000,
        "{} bytes of diagnostics",
        shown.len()
    );
    assert!(shown.contains("names have at most 256"));

    // An input's name and a symbol too.
    // (An implicit YAML key is at most 1024 characters: the long one is explicit.)
    let text = format!(
        "inputs:\n  ? {name}\n  : [batch, 4]\n  y: [{name}, 4]\nlayers:\n  - dense: {{units: 1, input: y}}\n"
    );
    let (_, diags) = spec_errors(text);
    let long: Vec<&Diagnostic> = diags.iter().filter(|d| d.code == "E0208").collect();
    assert_eq!(long.len(), 2, "{diags:?}");
}

/// A spec whose one layer concatenates `n` inputs.
fn wide_concatenate(n: usize) -> String {
    let mut text = String::from("inputs:\n");
    for i in 0..n {
        text.push_str(&format!("  x{i}: [batch, 2]\n"));
    }
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    text.push_str(&format!(
        "layers:\n  - concatenate: {{inputs: [{}]}}\n  - dense: {{units: 1}}\n",
        names.join(", ")
    ));
    text
}

#[test]
fn the_summary_of_a_wide_concatenate_grows_linearly() {
    for n in [1_000, 10_000] {
        let text = wide_concatenate(n);
        let (table, line) = bounded("the summary", move || {
            let m = Model::from_source(&text, "wide", "wide.yaml").expect("the spec checks");
            (
                kiln::summary::render(&m.graph),
                kiln::summary::one_line(&m.graph),
            )
        });
        // One row and one rule per input and layer, each of bounded width: under 1 KB a
        // row (24 KB a row for 1,000 inputs before, all of them as wide as the list).
        let rows = n + 2;
        assert!(
            table.len() < 1000 * rows,
            "{n} inputs: {} bytes of summary",
            table.len()
        );
        let more = format!("… and {} more", kiln::types::group_digits((n - 8) as i64));
        assert!(table.contains(&format!("x0, x1, x2, x3, x4, x5, x6, x7, {more}")));
        assert!(line.contains(&more) && line.len() < 400, "{line}");
    }
}

#[test]
fn a_repeated_metric_is_refused() {
    let metrics = ["accuracy"; 50_000].join(", ");
    let text = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {{units: 3}}\ntrain:\n  targets: {{y: {{shape: [batch], dtype: i32}}}}\n  loss: {{sparse_categorical_crossentropy: {{from_logits: true}}}}\n  metrics: [{metrics}, acc]\n"
    );
    let (_, diags) = spec_errors(text);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].code, "E0613");
    assert!(
        diags[0].message.contains("50001 times"),
        "{}",
        diags[0].message
    );
}

/// Links `dir/name` to `target`.
fn link(dir: &Path, name: &str, target: &str) -> PathBuf {
    let p = dir.join(name);
    std::os::unix::fs::symlink(target, &p).unwrap();
    p
}

#[test]
fn devices_as_data_weights_and_specs_are_refused_after_a_few_bytes() {
    let dir = temp_dir("devices");
    for device in ["/dev/zero", "/dev/urandom"] {
        let stem = device.trim_start_matches("/dev/");
        for ext in ["npz", "npy", "csv"] {
            let p = link(&dir, &format!("{stem}.{ext}"), device);
            let e = bounded(&format!("{device} as .{ext}"), move || {
                kiln::data::read(&p).expect_err("a device is not data")
            });
            assert!(!e.io, "{device} as .{ext}: {e}");
        }
        let p = link(&dir, &format!("{stem}.safetensors"), device);
        let e = bounded(&format!("{device} as weights"), move || {
            kiln::weights::load(&p).expect_err("a device is not weights")
        });
        assert_eq!(e.exit_code(), 1, "{device} as weights: {e}");
        let p = link(&dir, &format!("{stem}.yaml"), device);
        let e = bounded(&format!("{device} as a spec"), move || {
            Model::from_path(&p).expect_err("a device is not a spec")
        });
        match e {
            Error::Spec(s) => {
                let d = &s.diagnostics[0];
                // /dev/zero is too large; /dev/urandom stops at its first bad byte.
                assert!(
                    (d.code == "E0106" && d.message.contains("more than")) || d.code == "E0107",
                    "{device} as a spec: {} {}",
                    d.code,
                    d.message
                );
            }
            other => panic!("{device} as a spec: {other}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A named pipe at `dir/name` that a thread fills with `head`, then zeros until the
/// reader goes away.
fn endless_fifo(dir: &Path, name: &str, head: Vec<u8>) -> PathBuf {
    let p = dir.join(name);
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let writer = p.clone();
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&writer) else {
            return;
        };
        if f.write_all(&head).is_err() {
            return;
        }
        let zeros = vec![b'0'; 1 << 16];
        // Ends when the reader closes the pipe (EPIPE: Rust ignores SIGPIPE).
        while f.write_all(&zeros).is_ok() {}
    });
    p
}

#[test]
fn streams_without_end_are_bounded_by_the_bytes_read() {
    let dir = temp_dir("streams");
    let limit = 1 << 20;
    let npy = kiln::data::npy::encode("<f4", &[1_000_000_000], &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("s.npy", npy),
        ("s.npz", b"PK\x03\x04".to_vec()),
        ("s.csv", b"a,b\n1,".to_vec()),
    ];
    for (name, head) in cases {
        let p = endless_fifo(&dir, name, head);
        let e = bounded(name, move || {
            kiln::data::read_limited(&p, limit).expect_err("more than the limit")
        });
        assert!(e.message.contains(&format!("{limit} bytes")), "{name}: {e}");
    }
    let header = br#"{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#;
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(header);
    let p = endless_fifo(&dir, "w.safetensors", head);
    let e = bounded("a weights stream", move || {
        kiln::weights::safetensors::read_file_limited(&p, limit).err()
    });
    let e = e.expect("more than the limit");
    assert!(e.to_string().contains("more than 1048576"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_npz_member_may_not_expand_past_the_data_limit() {
    let dir = temp_dir("npz");
    let path = dir.join("bomb.npz");
    let npy = kiln::data::npy::encode("<f4", &[1 << 20], &vec![0u8; 4 << 20]);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("image.npy", opts).unwrap();
    zip.write_all(&npy).unwrap();
    zip.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let e = kiln::data::read_limited(&path, 1 << 20).expect_err("the member is too large");
    assert!(e.message.contains("`image`"), "{e}");
    assert!(kiln::data::read_limited(&path, 8 << 20).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn byte_limits_are_read_from_the_environment() {
    use kiln::weights::safetensors::parse_bytes;
    assert_eq!(parse_bytes("1000"), Some(1000));
    assert_eq!(parse_bytes("512K"), Some(512 << 10));
    assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
    assert_eq!(parse_bytes("16 GB"), Some(16 << 30));
    assert_eq!(parse_bytes("1.5G"), None);
    assert_eq!(parse_bytes("lots"), None);
    assert_eq!(parse_bytes("99999999999T"), None);

    let dir = temp_dir("env");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/mlp.yaml");
    let w = dir.join("w.safetensors");
    let x = dir.join("x.npy");
    kiln::data::write(&x, &[("x".into(), ndarray::ArrayD::zeros(vec![2, 784]))]).unwrap();
    let kiln = |env: (&str, &str), args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env(env.0, env.1)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let y = dir.join("y.npy");
    let init = [
        "init".as_ref(),
        spec.as_os_str(),
        "--out".as_ref(),
        w.as_os_str(),
    ];
    assert_eq!(kiln(("KILN_MAX_DATA_BYTES", "1G"), &init).0, Some(0));
    let predict = [
        "predict".as_ref(),
        spec.as_os_str(),
        "--weights".as_ref(),
        w.as_os_str(),
        "--input".as_ref(),
        x.as_os_str(),
        "--output".as_ref(),
        y.as_os_str(),
    ];
    let (code, err) = kiln(("KILN_MAX_DATA_BYTES", "1000"), &predict);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("at most 1000 bytes") && err.contains("KILN_MAX_DATA_BYTES"),
        "{err}"
    );
    let (code, err) = kiln(("KILN_MAX_WEIGHTS_BYTES", "1000"), &predict);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("at most 1000 bytes"), "{err}");
    let (code, err) = kiln(("KILN_MAX_WEIGHTS_BYTES", "lots"), &predict);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("KILN_MAX_WEIGHTS_BYTES=`lots`"), "{err}");
    assert_eq!(kiln(("KILN_MAX_DATA_BYTES", "1G"), &predict).0, Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
