//! `kiln predict` through the real binary: outputs as .npy or .npz, and every kind of
//! bad input refused with exit code 1, naming the input and expected against found.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln::data::{self, npy};
use ndarray::{ArrayD, IxDyn};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-predict-{name}-{}", std::process::id()));
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

fn save(p: &Path, shape: &[usize]) {
    let n: usize = shape.iter().product();
    let a = ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| (i % 7) as f32 / 7.0).collect())
        .unwrap();
    data::write(p, &[("a".into(), a)]).unwrap();
}

/// Runs predict and expects exit 1 with every fragment in stderr.
fn refused(args: &[&str], fragments: &[&str]) {
    let o = kiln(args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}\n{err}");
    for f in fragments {
        assert!(err.contains(f), "`{f}` missing from:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn predict_writes_outputs_and_refuses_bad_inputs() {
    let dir = temp_dir("two");
    let spec = format!("{}/specs/two_inputs.yaml", env!("CARGO_MANIFEST_DIR"));
    let w = dir.join("w.safetensors");
    assert_eq!(
        kiln(&["init", &spec, "--out", s(&w)]).status.code(),
        Some(0)
    );
    let image = dir.join("image.npy");
    let meta = dir.join("meta.npy");
    save(&image, &[4, 16, 16, 3]);
    save(&meta, &[4, 5]);
    let out = dir.join("p.npy");
    let base = ["predict", &spec, "--weights", s(&w), "--output", s(&out)];
    let with = |extra: &[String]| -> Vec<String> {
        base.iter()
            .map(|x| x.to_string())
            .chain(extra.iter().cloned())
            .collect()
    };
    let run = |args: &[String]| kiln(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let named = [
        "--input".to_string(),
        format!("image={}", image.display()),
        "--input".to_string(),
        format!("meta={}", meta.display()),
    ];
    for backend in ["interp", "jit"] {
        let mut a = with(&named);
        a.extend(["--backend".to_string(), backend.to_string()]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("prob [4, 1]"),
            "{}",
            text(&o.stdout)
        );
        let p = data::read_array(&out).unwrap();
        assert_eq!(p.data.shape(), &[4, 1]);
        assert!(p.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // Unnamed files are matched by their stem.
    let o = run(&with(&[
        "--input".into(),
        s(&image).into(),
        "--input".into(),
        s(&meta).into(),
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let arg = |n: &str, p: &Path| vec!["--input".to_string(), format!("{n}={}", p.display())];
    let check = |inputs: Vec<String>, fragments: &[&str]| {
        let a = with(&inputs);
        refused(&a.iter().map(String::as_str).collect::<Vec<_>>(), fragments);
    };
    // Wrong shape.
    let bad = dir.join("bad.npy");
    save(&bad, &[4, 16, 16, 1]);
    check(
        [arg("image", &bad), arg("meta", &meta)].concat(),
        &[
            s(&bad),
            "`image` has shape [4, 16, 16, 1]",
            "[batch, 16, 16, 3]",
            "axis 3 should be 3",
        ],
    );
    // Wrong dtype.
    let ints = dir.join("ints.npy");
    let data: Vec<u8> = (0..20i64).flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&ints, npy::encode("<i8", &[4, 5], &data)).unwrap();
    check(
        [arg("image", &image), arg("meta", &ints)].concat(),
        &[s(&ints), "the input `meta` is f32", "int64"],
    );
    // Inconsistent symbolic dims.
    let meta3 = dir.join("meta3.npy");
    save(&meta3, &[3, 5]);
    check(
        [arg("image", &image), arg("meta", &meta3)].concat(),
        &["`batch` is 4 in `image` but 3 in `meta`"],
    );
    // Missing and extra inputs.
    check(
        arg("image", &image),
        &[
            "the model's input `meta` [batch, 5] is missing",
            "give an array named `meta`",
            "on the command line, give it with `--input meta=FILE.npy`",
        ],
    );
    check(
        [
            arg("image", &image),
            arg("meta", &meta),
            arg("metta", &meta),
        ]
        .concat(),
        &[
            "`metta` (shape [4, 5]) is not an input",
            "did you mean `meta`?",
        ],
    );
    // A corrupt .npy.
    let corrupt = dir.join("corrupt.npy");
    let good = std::fs::read(&meta).unwrap();
    std::fs::write(&corrupt, &good[..good.len() - 9]).unwrap();
    check(
        [arg("image", &image), arg("meta", &corrupt)].concat(),
        &[s(&corrupt), "cut short"],
    );
    std::fs::write(&corrupt, b"garbage").unwrap();
    check(
        [arg("image", &image), arg("meta", &corrupt)].concat(),
        &[s(&corrupt), "not a .npy file"],
    );
    // An unnamed file that matches no input, with two inputs to choose from.
    let other = dir.join("other.npy");
    save(&other, &[4, 5]);
    check(
        vec!["--input".into(), s(&other).into()],
        &["say which this is: --input NAME="],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn several_outputs_go_to_an_npz() {
    let dir = temp_dir("multi");
    let spec = dir.join("m.yaml");
    std::fs::write(
        &spec,
        "inputs:
  x: [batch, 3]
layers:
  - dense: {units: 4, name: h}
  - dense: {units: 2, name: y}
outputs: [h, y]
",
    )
    .unwrap();
    let w = dir.join("w.safetensors");
    assert_eq!(
        kiln(&["init", s(&spec), "--out", s(&w)]).status.code(),
        Some(0)
    );
    let x = dir.join("x.npy");
    save(&x, &[5, 3]);
    let npz = dir.join("o.npz");
    let o = kiln(&[
        "predict",
        s(&spec),
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--output",
        s(&npz),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    match data::read(&npz).unwrap() {
        data::Content::Named(v) => {
            let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["h", "y"]);
            assert_eq!(v[0].1.data.shape(), &[5, 4]);
            assert_eq!(v[1].1.data.shape(), &[5, 2]);
        }
        _ => panic!("expected an archive"),
    }
    refused(
        &[
            "predict",
            s(&spec),
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--output",
            s(&dir.join("o.npy")),
        ],
        &["2 outputs (h, y)", ".npz"],
    );
    assert!(!dir.join("o.npy").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A .csv feeds `predict` as it feeds `train` and `eval`: the feature columns go to the
/// single input (the target column, when the table still has it, is left out), and the
/// predictions equal those from the same features as a .npy array.
#[test]
fn predict_reads_csv_like_train() {
    let dir = temp_dir("csv");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = root.join("specs/diabetes.yaml");
    let w = dir.join("w.safetensors");
    let o = kiln(&["init", s(&spec), "--out", s(&w)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Three rows of the bundled CSV, with its `progression` column, and without it.
    let full = std::fs::read_to_string(root.join("data/diabetes.csv")).unwrap();
    let rows: Vec<&str> = full.lines().take(4).collect();
    let with_target = dir.join("rows.csv");
    std::fs::write(&with_target, rows.join("\n") + "\n").unwrap();
    let features: Vec<String> = rows
        .iter()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect();
    let without = dir.join("features.csv");
    std::fs::write(&without, features.join("\n") + "\n").unwrap();
    let values: Vec<f32> = features[1..]
        .iter()
        .flat_map(|l| l.split(',').map(|v| v.parse::<f32>().unwrap()))
        .collect();
    let npy_in = dir.join("x.npy");
    let x = ArrayD::from_shape_vec(IxDyn(&[3, 10]), values).unwrap();
    data::write(&npy_in, &[("x".into(), x)]).unwrap();
    let mut outs = Vec::new();
    for (i, input) in [&with_target, &without, &npy_in].into_iter().enumerate() {
        let out = dir.join(format!("p{i}.npy"));
        let o = kiln(&[
            "predict",
            s(&spec),
            "--weights",
            s(&w),
            "--input",
            s(input),
            "--output",
            s(&out),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let got = npy::parse(&std::fs::read(&out).unwrap()).unwrap().data;
        assert_eq!(got.shape(), &[3, 1]);
        outs.push(got);
    }
    assert_eq!(outs[0], outs[2]);
    assert_eq!(outs[1], outs[2]);
    std::fs::remove_dir_all(&dir).unwrap();
}
