//! Every bundled spec trains to the same bits as recorded: a refactor that changes a
//! single trained weight of any bundled model fails here. Data is generated (seeded),
//! so the check covers the specs that ship without data too. `KILN_BLESS=1` rewrites
//! `tests/golden/train_bits.txt` (do that only for an intended numerical change, and
//! say why in the commit).

use std::path::{Path, PathBuf};

use kiln::{Dataset, FitOptions, Model, Net, Options};
use ndarray::{ArrayD, IxDyn};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A deterministic array for `ty`: symbols are 40 on the batch axis and 6 elsewhere;
/// integers alternate 0/1 (valid tokens and labels for every bundled spec), floats are
/// a fixed sequence in [0, 1) (targets rounded to 0/1 so every loss accepts them).
fn array(ty: &kiln::layers::TensorType, salt: u64, target: bool) -> ArrayD<f32> {
    let shape: Vec<usize> = ty
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.as_const()
                .map_or(if i == 0 { 40 } else { 6 }, |c| c as usize)
        })
        .collect();
    let n: usize = shape.iter().product();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    let data = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            if ty.dtype.is_int() || target {
                (u * 2.0).floor()
            } else {
                u
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= *b as u64;
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

fn trained_hash(spec: &Path) -> u64 {
    let model = Model::from_path(spec).unwrap_or_else(|e| panic!("{e}"));
    let mut net: Net = model
        .compile(&Options {
            seed: Some(0),
            ..Options::default()
        })
        .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let g = net.graph().clone();
    let train = g.train.as_ref().expect("bundled specs train");
    let mut arrays = Vec::new();
    for (k, i) in g.inputs.iter().enumerate() {
        arrays.push((i.name.clone(), array(&i.ty, k as u64, false)));
    }
    for (k, t) in train.targets.iter().enumerate() {
        arrays.push((t.name.clone(), array(&t.ty, 100 + k as u64, true)));
    }
    let data = Dataset::from_arrays(&g, arrays).unwrap_or_else(|e| panic!("{e}"));
    let opts = FitOptions {
        epochs: Some(2),
        batch_size: Some(16),
        seed: Some(0),
        ..FitOptions::default()
    };
    net.fit(&data, &opts)
        .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (key, w) in net.weights().iter() {
        fnv(&mut h, key.as_bytes());
        for v in w.iter() {
            fnv(&mut h, &v.to_bits().to_le_bytes());
        }
    }
    h
}

#[test]
fn bundled_specs_train_to_the_recorded_bits() {
    let specs = crate::common::bundled_spec_paths();
    let mut got = String::new();
    for s in &specs {
        let name = s.file_name().unwrap().to_string_lossy();
        got.push_str(&format!("{name} {:016x}\n", trained_hash(s)));
    }
    let golden = root().join("tests/golden/train_bits.txt");
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(got, want, "trained bits changed (KILN_BLESS=1 to record)");
}
