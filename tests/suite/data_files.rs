//! Data files against a spec: every way data can be wrong gives an error that names
//! the file, the array, and what was expected against what was found — never a panic.
//! Also Keras's validation split and batching.

use std::path::{Path, PathBuf};

use kiln::data::{self, Content, DataError, Dataset, LoadOptions, npy, npz};
use kiln::{Graph, Model};
use ndarray::{ArrayD, IxDyn};

const SPEC: &str = "inputs:
  image: [batch, 8, 8, 1]
layers:
  - flatten
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: adam
";

fn graph(src: &str) -> Graph {
    Model::from_source(src, "t", "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32_npy(shape: &[usize], f: impl Fn(usize) -> f32) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let data: Vec<u8> = (0..n).flat_map(|i| f(i).to_le_bytes()).collect();
    npy::encode("<f4", shape, &data)
}

fn i32_npy(shape: &[usize], f: impl Fn(usize) -> i32) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let data: Vec<u8> = (0..n).flat_map(|i| f(i).to_le_bytes()).collect();
    npy::encode("<i4", shape, &data)
}

fn write_npz(dir: &Path, name: &str, members: &[(&str, Vec<u8>)]) -> PathBuf {
    let m: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, npz::pack(&m).unwrap()).unwrap();
    p
}

fn load(path: &Path, g: &Graph) -> Result<Dataset, DataError> {
    Dataset::load(
        path,
        g,
        &LoadOptions {
            targets: true,
            ..LoadOptions::default()
        },
    )
}

/// The error's text, checked to name the file.
fn error(path: &Path, g: &Graph) -> String {
    let e = load(path, g).expect_err("the data should be refused");
    let s = e.to_string();
    assert!(
        s.starts_with(&path.display().to_string()),
        "the error should name the file: {s}"
    );
    assert_eq!(e.exit_code(), 1, "{s}");
    s
}

#[test]
fn good_data_loads_and_splits_as_keras() {
    let g = graph(SPEC);
    let d = Dataset::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits.npz"),
        &g,
        &LoadOptions {
            targets: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(d.len(), 1797);
    assert_eq!(d.inputs[0].1.shape(), &[1797, 8, 8, 1]);
    let (train, val) = d.split(0.2).unwrap();
    let val = val.unwrap();
    // floor(1797 * 0.8) = 1437 for training, the last 360 for validation.
    assert_eq!((train.len(), val.len()), (1437, 360));
    assert_eq!(val.targets[0].1[0], d.targets[0].1[1437]);
    assert_eq!(data::num_batches(train.len(), 32), 45);
    let order: Vec<usize> = (0..train.len()).collect();
    assert_eq!(data::batch_indices(&order, 32, 44).len(), 1437 - 44 * 32);
    let (xs, ys) = train.gather(&[5, 0]).unwrap();
    assert_eq!(xs[0].shape(), &[2, 8, 8, 1]);
    assert_eq!(ys[0][0], d.targets[0].1[5]);
    // Pixel values were scaled to [0, 1].
    assert!(d.inputs[0].1.iter().all(|&v| (0.0..=1.0).contains(&v)));
}

#[test]
fn every_kind_of_bad_data_is_named() {
    let g = graph(SPEC);
    let dir = temp_dir("bad");
    let img = |n: usize| f32_npy(&[n, 8, 8, 1], |i| (i % 17) as f32 / 16.0);
    let lab = |n: usize| i32_npy(&[n], |i| (i % 10) as i32);

    // Wrong shape, with a reshape hint.
    let p = write_npz(
        &dir,
        "shape.npz",
        &[("image", f32_npy(&[6, 64], |_| 0.5)), ("label", lab(6))],
    );
    let s = error(&p, &g);
    assert!(s.contains("`image` has shape [6, 64]"), "{s}");
    assert!(s.contains("[batch, 8, 8, 1]"), "{s}");
    assert!(s.contains("reshape(6, 8, 8, 1)"), "{s}");
    let p = write_npz(
        &dir,
        "axis.npz",
        &[
            ("image", f32_npy(&[6, 8, 8, 3], |_| 0.5)),
            ("label", lab(6)),
        ],
    );
    let s = error(&p, &g);
    assert!(s.contains("axis 3 should be 1"), "{s}");

    // Wrong dtype, both ways.
    let p = write_npz(
        &dir,
        "dtype.npz",
        &[("image", img(6)), ("label", f32_npy(&[6], |i| i as f32))],
    );
    let s = error(&p, &g);
    assert!(s.contains("`label` is i32"), "{s}");
    assert!(s.contains("holds float32"), "{s}");
    let p = write_npz(
        &dir,
        "dtype2.npz",
        &[("image", i32_npy(&[6, 8, 8, 1], |_| 1)), ("label", lab(6))],
    );
    let s = error(&p, &g);
    assert!(
        s.contains("the input `image` is f32") && s.contains("int32"),
        "{s}"
    );

    // NaN and infinity.
    let p = write_npz(
        &dir,
        "nan.npz",
        &[
            (
                "image",
                f32_npy(&[6, 8, 8, 1], |i| if i == 70 { f32::NAN } else { 0.0 }),
            ),
            ("label", lab(6)),
        ],
    );
    let s = error(&p, &g);
    assert!(s.contains("1 NaN value"), "{s}");
    assert!(s.contains("[1, 0, 6, 0]") && s.contains("example 1"), "{s}");
    let p = write_npz(
        &dir,
        "inf.npz",
        &[
            (
                "image",
                f32_npy(&[6, 8, 8, 1], |i| {
                    if i % 100 == 3 { f32::INFINITY } else { 0.0 }
                }),
            ),
            ("label", lab(6)),
        ],
    );
    let s = error(&p, &g);
    assert!(s.contains("4 infinite values"), "{s}");

    // Labels out of range for the 10 classes.
    let p = write_npz(
        &dir,
        "labels.npz",
        &[
            ("image", img(6)),
            ("label", i32_npy(&[6], |i| if i == 4 { 10 } else { 1 })),
        ],
    );
    let s = error(&p, &g);
    assert!(s.contains("the label 10 at example 4"), "{s}");
    assert!(s.contains("10 classes"), "{s}");
    let p = write_npz(
        &dir,
        "negative.npz",
        &[("image", img(6)), ("label", i32_npy(&[6], |i| -(i as i32)))],
    );
    assert!(error(&p, &g).contains("the label -1 at example 1"));

    // Empty.
    let p = write_npz(&dir, "empty.npz", &[("image", img(0)), ("label", lab(0))]);
    assert!(error(&p, &g).contains("empty"));

    // A different number of examples per array.
    let p = write_npz(&dir, "count.npz", &[("image", img(6)), ("label", lab(5))]);
    let s = error(&p, &g);
    assert!(
        s.contains("`label` has 5 examples but `image` has 6"),
        "{s}"
    );

    // A missing array, with the names that are there.
    let p = write_npz(
        &dir,
        "missing.npz",
        &[("images", img(6)), ("label", lab(6))],
    );
    let s = error(&p, &g);
    assert!(s.contains("no array `image`"), "{s}");
    assert!(s.contains("`images` [6, 8, 8, 1]"), "{s}");
    assert!(s.contains("is `images` the input `image`?"), "{s}");

    // Corrupt files: garbage, a truncated archive, a bad member; never a panic.
    let good = std::fs::read(write_npz(
        &dir,
        "good.npz",
        &[("image", img(3)), ("label", lab(3))],
    ))
    .unwrap();
    assert!(load(&dir.join("good.npz"), &g).is_ok());
    for (i, cut) in [10, good.len() / 3, good.len() / 2, good.len() - 5]
        .iter()
        .enumerate()
    {
        let p = dir.join(format!("cut{i}.npz"));
        std::fs::write(&p, &good[..*cut]).unwrap();
        assert!(load(&p, &g).is_err());
    }
    let mut flipped = good.clone();
    for i in (0..flipped.len()).step_by(3) {
        flipped[i] = flipped[i].wrapping_add(41);
        let p = dir.join("flipped.npz");
        std::fs::write(&p, &flipped).unwrap();
        let _ = load(&p, &g);
    }
    let p = write_npz(
        &dir,
        "member.npz",
        &[("image", b"not npy".to_vec()), ("label", lab(3))],
    );
    let s = error(&p, &g);
    assert!(
        s.contains("the array `image`") && s.contains("not a .npy file"),
        "{s}"
    );

    // A missing file is an I/O error (exit code 2), a wrong extension a data error.
    let e = load(&dir.join("nope.npz"), &g).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    std::fs::write(dir.join("x.txt"), "hi").unwrap();
    assert!(error(&dir.join("x.txt"), &g).contains("not `.txt`"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn symbols_must_agree_across_arrays() {
    let g = graph(
        "inputs:
  a: [batch, seq, 1]
  b: [batch, seq, 2]
layers:
  - concatenate: {inputs: [a, b]}
  - dense: {units: 3}
train:
  targets: {y: [batch, seq, 3]}
  loss: mse
  optimizer: sgd
",
    );
    let ok = vec![
        ("a".to_string(), ArrayD::zeros(IxDyn(&[4, 7, 1]))),
        ("b".to_string(), ArrayD::zeros(IxDyn(&[4, 7, 2]))),
        ("y".to_string(), ArrayD::zeros(IxDyn(&[4, 7, 3]))),
    ];
    assert_eq!(Dataset::from_arrays(&g, ok.clone()).unwrap().len(), 4);
    let mut bad = ok.clone();
    bad[1].1 = ArrayD::zeros(IxDyn(&[4, 6, 2]));
    let e = Dataset::from_arrays(&g, bad).unwrap_err().to_string();
    assert!(e.contains("`seq` is 7 in `a` but 6 in `b`"), "{e}");
}

#[test]
fn validation_split_needs_both_parts() {
    let g = graph(SPEC);
    let d = Dataset::from_arrays(
        &g,
        vec![
            ("image".into(), ArrayD::zeros(IxDyn(&[3, 8, 8, 1]))),
            ("label".into(), ArrayD::zeros(IxDyn(&[3]))),
        ],
    )
    .unwrap();
    let (t, v) = d.split(0.5).unwrap();
    assert_eq!((t.len(), v.unwrap().len()), (1, 2));
    let one = d.slice(0, 1);
    let e = one.split(0.2).unwrap_err().to_string();
    assert!(
        e.contains("1 example,") && e.contains("training part would be empty"),
        "{e}"
    );
    // Labels handed in as f32 must be integers.
    let e = Dataset::from_arrays(
        &g,
        vec![
            ("image".into(), ArrayD::zeros(IxDyn(&[2, 8, 8, 1]))),
            ("label".into(), ArrayD::from_elem(IxDyn(&[2]), 1.5)),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds 1.5"), "{e}");
}

#[test]
fn csv_tables_feed_one_input_and_one_target() {
    let g = graph(
        "inputs:
  x: [batch, 2]
layers:
  - dense: {units: 1}
train:
  targets: {y: [batch, 1]}
  loss: mse
  optimizer: sgd
  data: {path: d.csv, target_column: out}
",
    );
    let dir = temp_dir("csv");
    let p = dir.join("d.csv");
    std::fs::write(&p, "a,out,b\n1,2,3\n4,5,6\n").unwrap();
    let d = load(&p, &g).unwrap();
    assert_eq!(d.inputs[0].1.as_slice().unwrap(), &[1.0, 3.0, 4.0, 6.0]);
    assert_eq!(d.targets[0].1.shape(), &[2, 1]);
    assert_eq!(d.targets[0].1.as_slice().unwrap(), &[2.0, 5.0]);
    std::fs::write(&p, "a,out,b\n1,2,3\n4,x,6\n").unwrap();
    let s = error(&p, &g);
    assert!(
        s.contains("line 3, column `out`: `x` is not a number"),
        "{s}"
    );
    std::fs::write(&p, "a,out,b,c\n1,2,3,4\n").unwrap();
    let s = error(&p, &g);
    assert!(
        s.contains("3 feature columns") && s.contains("[batch, 2]"),
        "{s}"
    );
    std::fs::write(&p, "a,target,b\n1,2,3\n").unwrap();
    let s = error(&p, &g);
    assert!(s.contains("no column `out`"), "{s}");
    // The library names the fix in its own terms (the spec), never a CLI flag; the
    // typed remedy is for the CLI to phrase.
    assert!(!s.contains("--"), "{s}");
    let e = load(&p, &g).unwrap_err();
    assert_eq!(
        e.remedy.as_deref(),
        Some(&kiln::types::Remedy::NameTargetColumn(None))
    );
    std::fs::write(&p, "a,out,b\n1,nan,3\n").unwrap();
    assert!(error(&p, &g).contains("finite"));
    std::fs::write(&p, "a,out,b\n").unwrap();
    assert!(error(&p, &g).contains("empty"));
    // The bundled regression data fits the bundled spec.
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("specs/diabetes.yaml");
    let m = Model::from_path(&spec).unwrap();
    let net = m.compile(&kiln::Options::default()).unwrap();
    let d = net.load_data(net.spec_data_path().unwrap()).unwrap();
    assert_eq!((d.len(), d.inputs[0].1.shape()[1]), (442, 10));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npy_reads_what_numpy_writes() {
    let dir = temp_dir("npy");
    // Every dtype numpy commonly writes, little and big endian.
    let cases: Vec<(&str, Vec<u8>, f32)> = vec![
        ("<f8", 2.5f64.to_le_bytes().to_vec(), 2.5),
        (">f4", 1.5f32.to_be_bytes().to_vec(), 1.5),
        ("<i8", (-3i64).to_le_bytes().to_vec(), -3.0),
        ("|u1", vec![200], 200.0),
        ("|b1", vec![1], 1.0),
        ("<u2", 700u16.to_le_bytes().to_vec(), 700.0),
    ];
    for (descr, bytes, want) in cases {
        let p = dir.join("a.npy");
        std::fs::write(&p, npy::encode(descr, &[1], &bytes)).unwrap();
        match data::read(&p).unwrap() {
            Content::Single(l) => assert_eq!(l.data[[0]], want, "{descr}"),
            _ => panic!("{descr}"),
        }
    }
    let p = dir.join("obj.npy");
    std::fs::write(&p, npy::encode("|O", &[1], &[0; 8])).unwrap();
    let e = data::read(&p).unwrap_err().to_string();
    assert!(e.contains("Python objects"), "{e}");
    // Written outputs read back.
    let a = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| i[0] as f32 - i[1] as f32);
    let p = dir.join("o.npy");
    data::write(&p, &[("y".into(), a.clone())]).unwrap();
    assert_eq!(data::read_array(&p).unwrap().data, a);
    let p = dir.join("o.npz");
    data::write(&p, &[("y".into(), a.clone()), ("z".into(), a.clone())]).unwrap();
    match data::read(&p).unwrap() {
        Content::Named(v) => assert_eq!(v.len(), 2),
        _ => panic!(),
    }
    let e = data::write(
        &dir.join("two.npy"),
        &[("y".into(), a.clone()), ("z".into(), a)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("2 outputs (y, z)"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every problem of a data file in one report, each with its help line: two missing
/// arrays, then (with them present) two arrays of the wrong shape, then a NaN and a
/// label out of range.
#[test]
fn data_problems_are_reported_all_at_once() {
    let g = graph(
        "inputs:
  a: [batch, 3]
  b: [batch, 2]
layers:
  - dense: {units: 4, input: a, name: da}
  - dense: {units: 4, input: b, name: db}
  - add: {inputs: [da, db]}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: adam
",
    );
    let arr = |shape: &[usize], v: f32| ArrayD::from_elem(IxDyn(shape), v);
    let load = |named: Vec<(&str, ArrayD<f32>)>| -> DataError {
        let named = named.into_iter().map(|(n, a)| (n.to_string(), a)).collect();
        Dataset::from_arrays(&g, named).expect_err("bad data")
    };
    let count = |e: &DataError| 1 + e.also.len();
    // Two arrays missing.
    let e = load(vec![("a", arr(&[4, 3], 0.0))]);
    assert_eq!(count(&e), 2, "{e}");
    let text = e.to_string();
    assert!(text.contains("`b`") && text.contains("`label`"), "{text}");
    assert_eq!(text.matches("help:").count(), 2, "{text}");
    // Two arrays of the wrong shape.
    let e = load(vec![
        ("a", arr(&[4, 5], 0.0)),
        ("b", arr(&[4], 0.0)),
        ("label", arr(&[4], 1.0)),
    ]);
    assert_eq!(count(&e), 2, "{e}");
    // A NaN in an input and a label out of range.
    let mut a = arr(&[4, 3], 0.0);
    a[[2, 1]] = f32::NAN;
    let e = load(vec![
        ("a", a),
        ("b", arr(&[4, 2], 0.0)),
        ("label", arr(&[4], 7.0)),
    ]);
    assert_eq!(count(&e), 2, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("NaN") && text.contains("out of range"),
        "{text}"
    );
}
