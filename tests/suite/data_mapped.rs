//! Data read in place (`Dataset::open`): memory-mapped `.npy` files and stored `.npz`
//! members, compressed members streamed, sets of shards. Reading in place gives what
//! loading gives — the same values, order, fingerprint and trained bits — and keeps
//! training's resident memory far below the data's size.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln::data::{DataError, Dataset, LoadOptions, npy, npz};
use kiln::fit::FitOptions;
use kiln::{Graph, Model, Options};
use ndarray::ArrayD;

fn graph(src: &str) -> Graph {
    Model::from_source(src, "t", "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-mapped-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn digits() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits.npz")
}

fn opts(map_from: Option<u64>) -> LoadOptions {
    LoadOptions {
        targets: true,
        map_from,
        ..LoadOptions::default()
    }
}

fn load(path: &Path, g: &Graph) -> Dataset {
    Dataset::load(path, g, &opts(None)).unwrap_or_else(|e| panic!("{e}"))
}

/// Opened in place, whatever its size.
fn open(path: &Path, g: &Graph) -> Result<Dataset, DataError> {
    Dataset::open(path, g, &opts(Some(0)))
}

const DIGITS: &str = "inputs:
  image: [batch, 8, 8, 1]
layers:
  - flatten
  - dense: {units: 16, activation: relu}
  - dropout: {rate: 0.25}
  - dense: {units: 10}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: adam
  metrics: [accuracy]
  class_weight: {0: 2.0, 3: 0.5}
";

/// Everything a training run reads of a dataset, compared: size, shapes,
/// fingerprint, every example (in a shuffled order), the weights, the split.
fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.input_shapes(), b.input_shapes());
    assert_eq!(a.target_count(), b.target_count());
    assert_eq!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
    let order = kiln::data::permutation(a.len(), 3, 1);
    for idx in order.chunks(97) {
        let (ax, ay) = a.gather(idx).unwrap();
        let (bx, by) = b.gather(idx).unwrap();
        assert_eq!(ax, bx);
        assert_eq!(ay, by);
        assert_eq!(
            a.gather_weights(idx).unwrap(),
            b.gather_weights(idx).unwrap()
        );
    }
    assert!(b.gather(&[b.len()]).is_err());
    for (n, _) in a.input_shapes() {
        assert_eq!(
            a.input(&n).unwrap().map(|c| c.into_owned()),
            b.input(&n).unwrap().map(|c| c.into_owned())
        );
    }
    let (at, av) = a.split(0.3).unwrap();
    let (bt, bv) = b.split(0.3).unwrap();
    assert_eq!(at.fingerprint().unwrap(), bt.fingerprint().unwrap());
    assert_eq!(
        av.unwrap().fingerprint().unwrap(),
        bv.unwrap().fingerprint().unwrap()
    );
}

#[test]
fn compressed_archives_read_in_place_equal_loaded_ones() {
    // digits.npz is written by np.savez_compressed: its members are deflated.
    let g = graph(DIGITS);
    let (mut a, mut b) = (load(&digits(), &g), open(&digits(), &g).unwrap());
    assert!(!a.is_read_in_place() && b.is_read_in_place());
    assert!(b.inputs.is_empty());
    assert_same(&a, &b);
    let cw = [(0, 2.0), (3, 0.5)];
    a.set_class_weights(&cw).unwrap();
    b.set_class_weights(&cw).unwrap();
    assert_same(&a, &b);
}

/// Bytes of a `.npy` file of dtype `descr` holding `values` (converted by `enc`).
fn npy_of<T: Copy>(
    descr: &str,
    shape: &[usize],
    values: &[T],
    enc: impl Fn(T) -> Vec<u8>,
) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|&v| enc(v)).collect();
    npy::encode(descr, shape, &data)
}

/// A Fortran-order `.npy` file of f32 values given in C order.
fn fortran_npy(shape: [usize; 2], values: &[f32]) -> Vec<u8> {
    let mut data = Vec::new();
    for j in 0..shape[1] {
        for i in 0..shape[0] {
            data.extend_from_slice(&values[i * shape[1] + j].to_le_bytes());
        }
    }
    let mut c = npy::encode("<f4", &shape, &data);
    let (from, to) = (b"'fortran_order': False", b"'fortran_order': True ");
    let at = c.windows(from.len()).position(|w| w == from).unwrap();
    c[at..at + to.len()].copy_from_slice(to);
    c
}

const MIXED: &str = "inputs:
  a: {shape: [batch, 3], dtype: i32}
  b: [batch, 2]
  c: [batch, 4]
layers:
  - embedding: {input_dim: 256, output_dim: 2, input: a}
  - flatten: {name: fa}
  - concatenate: {inputs: [fa, b, c]}
  - dense: {units: 3}
train:
  targets:
    y: {shape: [batch], dtype: i32}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: sgd
  sample_weight: w
";

fn mixed_members(n: usize, salt: usize) -> Vec<(String, Vec<u8>)> {
    let a: Vec<u8> = (0..n * 3).map(|i| ((i * 7 + salt) % 256) as u8).collect();
    let b: Vec<f32> = (0..n * 2).map(|i| (i + salt) as f32 * 0.25 - 3.0).collect();
    let c: Vec<f32> = (0..n * 4)
        .map(|i| ((i * 13 + salt) % 17) as f32 / 7.0)
        .collect();
    let y: Vec<i64> = (0..n).map(|i| ((i + salt) % 3) as i64).collect();
    let w: Vec<u16> = (0..n)
        .map(|i| 0x3c00 + ((i + salt) % 5) as u16 * 0x100)
        .collect();
    vec![
        ("a".into(), npy::encode("|u1", &[n, 3], &a)),
        (
            "b".into(),
            npy_of(">f4", &[n, 2], &b, |v| v.to_be_bytes().to_vec()),
        ),
        ("c".into(), fortran_npy([n, 4], &c)),
        (
            "y".into(),
            npy_of("<i8", &[n], &y, |v| v.to_le_bytes().to_vec()),
        ),
        (
            "w".into(),
            npy_of("<f2", &[n], &w, |v| v.to_le_bytes().to_vec()),
        ),
    ]
}

#[test]
fn every_dtype_and_order_reads_in_place_as_loaded() {
    let dir = temp_dir("mixed");
    let g = graph(MIXED);
    let p = dir.join("m.npz");
    std::fs::write(&p, npz::pack(&mixed_members(50, 0)).unwrap()).unwrap();
    let (a, b) = (load(&p, &g), open(&p, &g).unwrap());
    assert_same(&a, &b);
    assert!(b.gather_weights(&[0, 1]).unwrap().is_some());
    // A single input in a .npy file.
    let one = graph(
        "inputs:\n  x: {shape: [batch, 3], dtype: i32}\nlayers:\n  - embedding: {input_dim: 256, output_dim: 2}\n",
    );
    let x = dir.join("x.npy");
    std::fs::write(&x, &mixed_members(40, 1)[0].1).unwrap();
    let o = LoadOptions {
        map_from: Some(0),
        ..LoadOptions::default()
    };
    let a = Dataset::load(&x, &one, &LoadOptions::default()).unwrap();
    let b = Dataset::open(&x, &one, &o).unwrap();
    assert!(b.is_read_in_place());
    assert_eq!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
    assert_eq!(a.gather(&[39, 0]).unwrap(), b.gather(&[39, 0]).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Trains on `data` for 3 epochs; the weights' bits.
fn trained(src: &str, data: &Dataset, split: f64) -> Vec<(String, Vec<u32>)> {
    let mut net = Model::from_source(src, "t", "t.yaml")
        .unwrap()
        .compile(&Options {
            seed: Some(1),
            ..Options::default()
        })
        .unwrap();
    let fit = FitOptions {
        epochs: Some(3),
        batch_size: Some(64),
        seed: Some(5),
        validation_split: Some(split),
        ..FitOptions::default()
    };
    let report = net.fit(data, &fit).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.history.len(), 3);
    net.weights()
        .iter()
        .map(|(k, w)| (k.to_string(), w.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn training_in_place_gives_the_bits_of_training_in_memory() {
    let g = graph(DIGITS);
    let (a, b) = (load(&digits(), &g), open(&digits(), &g).unwrap());
    assert_eq!(trained(DIGITS, &a, 0.2), trained(DIGITS, &b, 0.2));
}

/// Writes `digits.npz`'s examples as shards of `sizes` examples (stored, or deflated
/// when `deflate`), and all of them as one stored file; returns (folder, whole file).
fn shard_digits(dir: &Path, sizes: &[usize], deflate: bool) -> (PathBuf, PathBuf) {
    let g = graph(DIGITS);
    let d = load(&digits(), &g);
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let mut at = 0;
    let members = |lo: usize, hi: usize| {
        let idx: Vec<usize> = (lo..hi).collect();
        let (xs, ys) = d.gather(&idx).unwrap();
        let y: Vec<i32> = ys[0].iter().map(|&v| v as i32).collect();
        vec![
            ("image".to_string(), npy::to_bytes(&xs[0])),
            (
                "label".to_string(),
                npy_of("<i4", &[hi - lo], &y, |v| v.to_le_bytes().to_vec()),
            ),
        ]
    };
    for (k, &n) in sizes.iter().enumerate() {
        let p = shards.join(format!("part-{k:02}.npz"));
        write_zip(&p, &members(at, at + n), deflate);
        at += n;
    }
    let whole = dir.join("whole.npz");
    write_zip(&whole, &members(0, at), false);
    (shards, whole)
}

fn write_zip(path: &Path, members: &[(String, Vec<u8>)], deflate: bool) {
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(true);
    for (n, b) in members {
        w.start_file(format!("{n}.npy"), o).unwrap();
        w.write_all(b).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn shards_read_one_after_another_as_one_file() {
    let dir = temp_dir("shards");
    let g = graph(DIGITS);
    let (shards, whole) = shard_digits(&dir, &[700, 0, 600, 497], false);
    let one = load(&whole, &g);
    for set in [
        shards.clone(),
        shards.join("part-*.npz"),
        shards.join("part-0?.npz"),
    ] {
        let s = open(&set, &g).unwrap_or_else(|e| panic!("{}: {e}", set.display()));
        assert_same(&one, &s);
    }
    // Without a size threshold: a set is always read in place.
    let s = Dataset::open(&shards, &g, &opts(None)).unwrap();
    assert!(s.is_read_in_place());
    assert_eq!(trained(DIGITS, &one, 0.0), trained(DIGITS, &s, 0.0));
    // Deflated shards: streamed, the same examples.
    let dz = dir.join("deflated");
    std::fs::create_dir_all(&dz).unwrap();
    let (zshards, _) = shard_digits(&dz, &[1000, 797], true);
    assert_same(&one, &open(&zshards, &g).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_shards_are_named() {
    let dir = temp_dir("bad-shards");
    let g = graph(MIXED);
    let e = open(&dir.join("*.npz"), &g).unwrap_err().to_string();
    assert!(e.contains("no file matches"), "{e}");
    let e = open(&dir, &g).unwrap_err().to_string();
    assert!(e.contains("holds no .npz or .npy file"), "{e}");
    // A NaN in the second shard: that file, and the example within it.
    let s = dir.join("s");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("a.npz"), npz::pack(&mixed_members(20, 0)).unwrap()).unwrap();
    let mut m = mixed_members(30, 0);
    let b: Vec<f32> = (0..60)
        .map(|i| if i == 45 { f32::NAN } else { 1.0 })
        .collect();
    m[1].1 = npy_of("<f4", &[30, 2], &b, |v| v.to_le_bytes().to_vec());
    std::fs::write(s.join("b.npz"), npz::pack(&m).unwrap()).unwrap();
    let e = open(&s, &g).unwrap_err();
    println!("{e}");
    assert_eq!(e.file.as_deref(), Some(s.join("b.npz").as_path()));
    assert!(e.message.contains("[22, 1] (example 22)"), "{e}");
    // A shard whose examples have another size.
    let mut m = mixed_members(30, 0);
    m[1].1 = npy_of("<f4", &[30, 3], &[0f32; 90], |v| v.to_le_bytes().to_vec());
    std::fs::write(s.join("b.npz"), npz::pack(&m).unwrap()).unwrap();
    let e = open(&s, &g).unwrap_err().to_string();
    assert!(e.contains("axis 1 should be 2"), "{e}");
    // A .csv among the shards.
    std::fs::write(s.join("b.npz"), npz::pack(&mixed_members(30, 0)).unwrap()).unwrap();
    std::fs::write(s.join("c.csv"), "a,y\n1,0\n").unwrap();
    let e = open(&s.join("*"), &g).unwrap_err().to_string();
    assert!(e.contains("holds .npz or .npy files only"), "{e}");
    // A device among the shards: refused after a few bytes, as `data::read` does.
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("a.npz"), npz::pack(&mixed_members(20, 0)).unwrap()).unwrap();
    for device in ["/dev/zero", "/dev/urandom"] {
        let link = dev.join("b.npz");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(device, &link).unwrap();
        let e = open(&dev, &g).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(link.as_path()), "{e}");
        assert!(!e.io, "{device}: {e}");
    }
    // A stored member whose bytes were changed: its checksum.
    let p = dir.join("flipped.npz");
    let mut bytes = npz::pack(&mixed_members(20, 0)).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    assert!(open(&p, &g).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_truncated_while_read_in_place_is_an_error_not_a_crash() {
    let dir = temp_dir("truncated");
    let g = graph(MIXED);
    let p = dir.join("m.npz");
    std::fs::write(&p, npz::pack(&mixed_members(5000, 0)).unwrap()).unwrap();
    let d = open(&p, &g).unwrap();
    assert!(d.gather(&[4999]).is_ok());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = d.gather(&[4999]).unwrap_err();
    assert!(
        e.message.contains("changed while kiln was reading it"),
        "{e}"
    );
    assert!(e.io);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_large_compressed_member_is_streamed_through_a_temporary_file() {
    // 5,000 × 1,000 f32 = 20 MB deflated: more than kiln decompresses into memory.
    let dir = temp_dir("spill");
    let g = graph(
        "inputs:\n  x: [batch, 1000]\nlayers:\n  - dense: {units: 2}\ntrain:\n  targets: {y: {shape: [batch], dtype: i32}}\n  loss: {sparse_categorical_crossentropy: {from_logits: true}}\n  optimizer: sgd\n",
    );
    let n = 5000;
    let x = ArrayD::from_shape_fn(vec![n, 1000], |i| ((i[0] * 31 + i[1]) % 97) as f32);
    let y: Vec<i32> = (0..n).map(|i| (i % 2) as i32).collect();
    let p = dir.join("big.npz");
    write_zip(
        &p,
        &[
            ("x".into(), npy::to_bytes(&x)),
            (
                "y".into(),
                npy_of("<i4", &[n], &y, |v| v.to_le_bytes().to_vec()),
            ),
        ],
        true,
    );
    assert_same(&load(&p, &g), &open(&p, &g).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The peak resident size the memory test allows `kiln train` (its data is 6.7 times
/// as large; README states the bound).
const PEAK_BOUND: u64 = 64 << 20;

/// Streams a stored `.npz` of `x` `[n, 1024]` f32 and `y` `[n]` i32 to `path`,
/// never holding more than one row block in memory.
fn write_large_npz(path: &Path, n: usize) {
    let mut w = zip::ZipWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ));
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    w.start_file("x.npy", o).unwrap();
    let header = npy::encode("<f4", &[n, 1024], &[]);
    w.write_all(&header).unwrap();
    let mut block = Vec::with_capacity(1024 * 4 * 256);
    for r0 in (0..n).step_by(256) {
        block.clear();
        for r in r0..(r0 + 256).min(n) {
            for c in 0..1024 {
                let v = ((r * 1024 + c) % 1000) as f32 / 1000.0;
                block.extend_from_slice(&v.to_le_bytes());
            }
        }
        w.write_all(&block).unwrap();
    }
    w.start_file("y.npy", o).unwrap();
    let y: Vec<u8> = (0..n)
        .flat_map(|i| ((i % 4) as i32).to_le_bytes())
        .collect();
    w.write_all(&npy::encode("<i4", &[n], &y)).unwrap();
    w.finish().unwrap();
}

/// Runs `cmd` to its end; (exit status, peak resident bytes): the child's `VmHWM`,
/// read from /proc every few milliseconds once it runs kiln (before its exec, /proc
/// shows the forked copy of the test process). Not `ru_maxrss`: Linux carries the
/// pre-exec copy's high-water mark into it.
fn run_measured(cmd: &mut std::process::Command) -> (i32, u64) {
    let mut child = cmd.spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut hwm_kb = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status)
            && s.lines().any(|l| l == "Name:\tkiln")
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kb = line.split_whitespace().nth(1).and_then(|v| v.parse().ok());
            hwm_kb = hwm_kb.max(kb.unwrap_or(0));
        }
        if let Some(code) = child.try_wait().unwrap() {
            return (code.code().unwrap_or(-1), hwm_kb * 1024);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn training_on_data_several_times_the_memory_bound_stays_under_it() {
    // 110,000 × 1,024 f32 = 430 MiB of data; `kiln train` may peak at 64 MiB.
    let dir = temp_dir("large");
    let n = 110_000;
    let data = dir.join("large.npz");
    write_large_npz(&data, n);
    let size = std::fs::metadata(&data).unwrap().len();
    assert!(size > 4 * PEAK_BOUND, "{size}");
    let spec = dir.join("wide.yaml");
    std::fs::write(
        &spec,
        "inputs:\n  x: [batch, 1024]\nlayers:\n  - dense: {units: 16, activation: relu}\n  - dense: {units: 4}\ntrain:\n  targets: {y: {shape: [batch], dtype: i32}}\n  loss: {sparse_categorical_crossentropy: {from_logits: true}}\n  optimizer: adam\n  metrics: [accuracy]\n  batch_size: 256\n  epochs: 1\n  data: {path: large.npz, validation_split: 0.1}\n",
    )
    .unwrap();
    let out = std::fs::File::create(dir.join("out.txt")).unwrap();
    let (code, peak) = run_measured(
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("train")
            .arg(&spec)
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    );
    let text = std::fs::read_to_string(dir.join("out.txt")).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("99,000 examples, 11,000 held out"), "{text}");
    assert!(peak > 0, "VmHWM was never read");
    eprintln!(
        "kiln train: peak {} MiB on {} MiB of data",
        peak >> 20,
        size >> 20
    );
    assert!(text.contains("val_accuracy"), "{text}");
    assert!(dir.join("wide.safetensors").exists());
    assert!(
        peak < PEAK_BOUND,
        "kiln train peaked at {} MB on {} MB of data (bound {} MB)",
        peak >> 20,
        size >> 20,
        PEAK_BOUND >> 20
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
