use super::*;
use crate::Model;
use crate::layers::REGISTRY;
use ndarray::IxDyn;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A model using every layer type in the catalog, with Keras's keys and shapes for
/// each weight written out by hand.
const EVERY_LAYER: &str = r#"
name: every_layer
inputs:
  image: [batch, 8, 8, 3]
  seq: [batch, 10, 6]
  tokens: {shape: [batch, 10], dtype: i32}
  volume: [batch, 4, 6, 6, 2]
layers:
  - conv2d: {filters: 4, kernel_size: 3, padding: same, input: image}
  - up_sampling2d
  - conv2d_transpose: {filters: 4, kernel_size: 3}
  - depthwise_conv2d: {kernel_size: 3}
  - separable_conv2d: {filters: 4, kernel_size: 3}
  - cropping2d: {cropping: 4}
  - zero_padding2d: {padding: 1}
  - batch_normalization
  - max_pooling2d: {pool_size: 2}
  - average_pooling2d: {pool_size: 2}
  - global_max_pooling2d: {input: batch_normalization}
  - global_average_pooling2d: {input: average_pooling2d}
  - add: {inputs: [global_max_pooling2d, global_average_pooling2d]}
  - flatten: {input: average_pooling2d}
  - reshape: {target_shape: [4, 4]}
  - permute: {dims: [2, 1]}
  - flatten: {name: flat2}
  - conv1d: {filters: 5, kernel_size: 2, input: seq}
  - up_sampling1d
  - conv1d_transpose: {filters: 5, kernel_size: 3}
  - depthwise_conv1d: {kernel_size: 3}
  - separable_conv1d: {filters: 5, kernel_size: 3}
  - cropping1d: {cropping: 4}
  - zero_padding1d: {padding: [1, 0]}
  - max_pooling1d: {pool_size: 2}
  - average_pooling1d: {pool_size: 2}
  - global_average_pooling1d: {input: conv1d}
  - global_max_pooling1d: {input: conv1d}
  - subtract: {inputs: [global_average_pooling1d, global_max_pooling1d]}
  - multiply: {inputs: [subtract, subtract]}
  - embedding: {input_dim: 50, output_dim: 8, input: tokens}
  - simple_rnn: {units: 3, return_sequences: true}
  - lstm: {units: 4, return_sequences: true}
  - gru: {units: 5, return_sequences: true}
  - multi_head_attention: {num_heads: 2, key_dim: 3}
  - layer_normalization
  - global_average_pooling1d: {name: pooled_seq}
  - global_max_pooling1d: {input: average_pooling1d, name: pooled_conv}
  - identity: {input: seq}
  - spatial_dropout1d: {rate: 0.1}
  - gaussian_noise: {stddev: 0.1}
  - gaussian_dropout: {rate: 0.1}
  - normalization
  - position_embedding: {sequence_length: 12}
  - maximum: {inputs: [normalization, position_embedding]}
  - minimum: {inputs: [normalization, position_embedding]}
  - average: {inputs: [maximum, minimum]}
  - rescaling: {scale: 0.5}
  - dot: {inputs: [rescaling, rescaling], axes: 2}
  - global_average_pooling1d: {name: pooled_dot}
  - repeat_vector: {n: 2}
  - flatten: {name: flat_rep}
  - spatial_dropout2d: {rate: 0.1, input: image}
  - global_average_pooling2d: {name: pooled_sd}
  - masking: {input: seq}
  - time_distributed: {layer: {layer_normalization: {}}}
  - bidirectional: {layer: {lstm: {units: 2}}}
  - conv3d: {filters: 2, kernel_size: 2, input: volume}
  - spatial_dropout3d: {rate: 0.1}
  - up_sampling3d
  - conv3d_transpose: {filters: 2, kernel_size: 2}
  - cropping3d
  - zero_padding3d
  - max_pooling3d
  - average_pooling3d: {pool_size: 2}
  - global_max_pooling3d: {input: conv3d}
  - global_average_pooling3d: {input: average_pooling3d, name: pooled_vol}
  - concatenate: {inputs: [add, multiply, pooled_seq, pooled_conv, flat2, flat_rep, pooled_sd, bidirectional, global_max_pooling3d, pooled_vol]}
  - dense: {units: 6}
  - dropout: {rate: 0.1}
  - activation: {activation: relu}
  - relu
  - leaky_relu
  - elu
  - sigmoid
  - tanh
  - softmax
  - gelu
  - silu
  - dense: {units: 2, name: logits}
train:
  targets: {label: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: adam
  seed: 42
"#;

/// Keras 3's variable paths and shapes for [`EVERY_LAYER`].
const KERAS_WEIGHTS: &[(&str, &[usize])] = &[
    ("conv2d/kernel", &[3, 3, 3, 4]),
    ("conv2d/bias", &[4]),
    ("conv2d_transpose/kernel", &[3, 3, 4, 4]),
    ("conv2d_transpose/bias", &[4]),
    ("depthwise_conv2d/kernel", &[3, 3, 4, 1]),
    ("depthwise_conv2d/bias", &[4]),
    ("separable_conv2d/depthwise_kernel", &[3, 3, 4, 1]),
    ("separable_conv2d/pointwise_kernel", &[1, 1, 4, 4]),
    ("separable_conv2d/bias", &[4]),
    ("batch_normalization/gamma", &[4]),
    ("batch_normalization/beta", &[4]),
    ("batch_normalization/moving_mean", &[4]),
    ("batch_normalization/moving_variance", &[4]),
    ("conv1d/kernel", &[2, 6, 5]),
    ("conv1d/bias", &[5]),
    ("conv1d_transpose/kernel", &[3, 5, 5]),
    ("conv1d_transpose/bias", &[5]),
    ("depthwise_conv1d/kernel", &[3, 5, 1]),
    ("depthwise_conv1d/bias", &[5]),
    ("separable_conv1d/depthwise_kernel", &[3, 5, 1]),
    ("separable_conv1d/pointwise_kernel", &[1, 5, 5]),
    ("separable_conv1d/bias", &[5]),
    ("embedding/embeddings", &[50, 8]),
    ("simple_rnn/simple_rnn_cell/kernel", &[8, 3]),
    ("simple_rnn/simple_rnn_cell/recurrent_kernel", &[3, 3]),
    ("simple_rnn/simple_rnn_cell/bias", &[3]),
    ("lstm/lstm_cell/kernel", &[3, 16]),
    ("lstm/lstm_cell/recurrent_kernel", &[4, 16]),
    ("lstm/lstm_cell/bias", &[16]),
    ("gru/gru_cell/kernel", &[4, 15]),
    ("gru/gru_cell/recurrent_kernel", &[5, 15]),
    ("gru/gru_cell/bias", &[2, 15]),
    ("multi_head_attention/query/kernel", &[5, 2, 3]),
    ("multi_head_attention/query/bias", &[2, 3]),
    ("multi_head_attention/key/kernel", &[5, 2, 3]),
    ("multi_head_attention/key/bias", &[2, 3]),
    ("multi_head_attention/value/kernel", &[5, 2, 3]),
    ("multi_head_attention/value/bias", &[2, 3]),
    ("multi_head_attention/attention_output/kernel", &[2, 3, 5]),
    ("multi_head_attention/attention_output/bias", &[5]),
    ("layer_normalization/gamma", &[5]),
    ("layer_normalization/beta", &[5]),
    ("normalization/mean", &[6]),
    ("normalization/variance", &[6]),
    ("normalization/count", &[]),
    ("position_embedding/embeddings", &[12, 6]),
    ("time_distributed/layer_normalization_1/gamma", &[6]),
    ("time_distributed/layer_normalization_1/beta", &[6]),
    ("bidirectional/forward_lstm_1/lstm_cell/kernel", &[6, 8]),
    (
        "bidirectional/forward_lstm_1/lstm_cell/recurrent_kernel",
        &[2, 8],
    ),
    ("bidirectional/forward_lstm_1/lstm_cell/bias", &[8]),
    ("bidirectional/backward_lstm_1/lstm_cell/kernel", &[6, 8]),
    (
        "bidirectional/backward_lstm_1/lstm_cell/recurrent_kernel",
        &[2, 8],
    ),
    ("bidirectional/backward_lstm_1/lstm_cell/bias", &[8]),
    ("conv3d/kernel", &[2, 2, 2, 2, 2]),
    ("conv3d/bias", &[2]),
    ("conv3d_transpose/kernel", &[2, 2, 2, 2, 2]),
    ("conv3d_transpose/bias", &[2]),
    ("dense/kernel", &[66, 6]),
    ("dense/bias", &[6]),
    ("logits/kernel", &[6, 2]),
    ("logits/bias", &[2]),
];

fn model(src: &str) -> Graph {
    match Model::from_source(src, "test", "test.yaml") {
        Ok(m) => m.graph,
        Err(e) => panic!("{e}"),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kiln-weights-{name}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_test_model_uses_every_layer_type() {
    let g = model(EVERY_LAYER);
    for kind in REGISTRY {
        assert!(
            g.layers.iter().any(|l| l.kind.name == kind.name),
            "EVERY_LAYER lacks `{}`: add it (and its Keras weights) to this test",
            kind.name
        );
    }
}

#[test]
fn init_has_keras_keys_and_shapes_and_round_trips_bit_identically() {
    let g = model(EVERY_LAYER);
    let w = init(&g, default_seed(&g)).unwrap();
    let got: Vec<(&str, &[usize])> = w.iter().map(|(k, a)| (k, a.shape())).collect();
    assert_eq!(got, KERAS_WEIGHTS);
    assert_eq!(check_against(&g, &w), Ok(()));
    assert_eq!(w.metadata[META_SEED], "42");
    assert_eq!(w.metadata[META_MODEL], "every_layer");

    let dir = temp_dir("roundtrip");
    let path = dir.join("w.safetensors");
    save(&path, &w).unwrap();
    let back = load(&path).unwrap();
    assert!(back.bit_identical(&w));
    assert!(load_for(&g, &path).unwrap().bit_identical(&w));
    // Saving again gives the same bytes.
    let first = fs::read(&path).unwrap();
    save(&path, &back).unwrap();
    assert_eq!(fs::read(&path).unwrap(), first);
    assert_eq!(files_in(&dir), ["w.safetensors"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_values_follow_keras_defaults() {
    let g = model(EVERY_LAYER);
    let w = init(&g, 0).unwrap();
    let all = |k: &str, x: f32| w.get(k).unwrap().iter().all(|&v| v == x);
    for k in [
        "conv2d/bias",
        "batch_normalization/beta",
        "batch_normalization/moving_mean",
        "gru/gru_cell/bias",
        "multi_head_attention/query/bias",
        "dense/bias",
    ] {
        assert!(all(k, 0.0), "{k} is not zeros");
    }
    for k in [
        "batch_normalization/gamma",
        "batch_normalization/moving_variance",
        "layer_normalization/gamma",
    ] {
        assert!(all(k, 1.0), "{k} is not ones");
    }
    // Embeddings: U(-0.05, 0.05).
    let e = w.get("embedding/embeddings").unwrap();
    assert!(e.iter().all(|&x| (-0.05..0.05).contains(&x)));
    assert!(e.iter().any(|&x| x != 0.0));
    // glorot_uniform with conv fans: fan_in 27, fan_out 36.
    let limit = (6.0f64 / (27.0 + 36.0)).sqrt() as f32;
    let k = w.get("conv2d/kernel").unwrap();
    assert!(k.iter().all(|&x| x >= -limit && x < limit));
    // Recurrent kernels are orthogonal: [u, 4u] has orthonormal rows.
    let r = w.get("lstm/lstm_cell/recurrent_kernel").unwrap();
    let r = r.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let g2 = r.dot(&r.t());
    for ((i, j), x) in g2.indexed_iter() {
        let want = if i == j { 1.0 } else { 0.0 };
        assert!((x - want).abs() < 1e-5);
    }
    // unit_forget_bias: the f gate's slice [u, 2u) is ones, the rest zeros.
    let b = w.get("lstm/lstm_cell/bias").unwrap();
    let b: Vec<f32> = b.iter().copied().collect();
    assert_eq!(&b[..4], &[0.0; 4]);
    assert_eq!(&b[4..8], &[1.0; 4]);
    assert_eq!(&b[8..], &[0.0; 8]);
}

#[test]
fn unit_forget_bias_false_and_custom_bias_initializers() {
    let g = model(
        "inputs: {x: [batch, 5, 3]}\nlayers:\n  - lstm: {units: 2, unit_forget_bias: false}\n  - lstm: {units: 2, input: x, bias_initializer: {constant: {value: 0.5}}}\n  - lstm: {units: 2, input: x, use_bias: false}\n",
    );
    let w = init(&g, 0).unwrap();
    assert!(
        w.get("lstm/lstm_cell/bias")
            .unwrap()
            .iter()
            .all(|&x| x == 0.0)
    );
    let b: Vec<f32> = w
        .get("lstm_1/lstm_cell/bias")
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(b, [0.5, 0.5, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]);
    assert!(!w.contains_key("lstm_2/lstm_cell/bias"));
}

#[test]
fn same_seed_same_bits_different_seed_different_values() {
    let g = model(EVERY_LAYER);
    let a = init(&g, 7).unwrap();
    let b = init(&g, 7).unwrap();
    assert!(a.bit_identical(&b));
    let c = init(&g, 8).unwrap();
    for (k, x) in a.iter() {
        let random = k.ends_with("kernel") || k.ends_with("embeddings");
        assert_eq!(x != c.get(k).unwrap(), random, "{k}");
    }
    // Two weights of the same shape and initializer never share values.
    assert_ne!(
        a.get("multi_head_attention/query/kernel"),
        a.get("multi_head_attention/key/kernel")
    );
}

#[test]
fn a_weight_does_not_depend_on_the_rest_of_the_model() {
    let one = model("inputs: {x: [batch, 4]}\nlayers:\n  - dense: {units: 3}\n");
    let two = model(
        "inputs: {x: [batch, 4]}\nlayers:\n  - dense: {units: 9, name: other}\n  - dense: {units: 3, input: x, name: dense}\n",
    );
    let a = init(&one, 1).unwrap();
    let b = init(&two, 1).unwrap();
    assert_eq!(a.get("dense/kernel"), b.get("dense/kernel"));
}

#[test]
fn an_initializer_seed_pins_the_weight_whatever_the_global_seed() {
    let g = model(
        "inputs: {x: [batch, 4]}\nlayers:\n  - dense: {units: 3, kernel_initializer: {glorot_normal: {seed: 5}}}\n  - dense: {units: 3}\n",
    );
    let a = init(&g, 1).unwrap();
    let b = init(&g, 2).unwrap();
    assert_eq!(a.get("dense/kernel"), b.get("dense/kernel"));
    assert_ne!(a.get("dense_1/kernel"), b.get("dense_1/kernel"));
}

#[test]
fn every_shipped_spec_initializes_and_checks() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let m = Model::from_path(&p).unwrap();
        let w = init(&m.graph, 0).unwrap();
        assert_eq!(check_against(&m.graph, &w), Ok(()), "{}", p.display());
        let (total, _, _) = m.graph.param_counts();
        assert_eq!(w.count() as i64, total, "{}", p.display());
    }
}

fn dense_model() -> Graph {
    model("inputs: {x: [batch, 784]}\nlayers:\n  - dense: {units: 256}\n  - dense: {units: 10}\n")
}

#[test]
fn check_against_reports_missing_extra_and_wrong_shapes() {
    let g = dense_model();
    let mut w = init(&g, 0).unwrap();
    w.insert("dense/kernel", ArrayD::zeros(IxDyn(&[784, 128])));
    w.remove("dense_1/bias");
    let k = w.remove("dense_1/kernel").unwrap();
    w.insert("dense_2/kernel", k);
    w.insert("junk", ArrayD::zeros(IxDyn(&[1])));
    let problems = check_against(&g, &w).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        [
            "`dense/kernel` has shape [784, 128], but the model expects [784, 256]",
            "`dense_1/kernel` is missing (the model expects a weight of shape [256, 10])",
            "`dense_1/bias` is missing (the model expects a weight of shape [10])",
            "`dense_2/kernel` (shape [256, 10]) is not a weight of this model; did you mean `dense_1/kernel`?",
            "`junk` (shape [1]) is not a weight of this model",
        ]
    );
    // Through a file, every line names the file.
    let dir = temp_dir("mismatch");
    let path = dir.join("weights.safetensors");
    save(&path, &w).unwrap();
    let e = load_for(&g, &path).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let shown = e.to_string();
    assert!(shown.starts_with(&format!(
        "{}: `dense/kernel` has shape [784, 128], but the model expects [784, 256]",
        path.display()
    )));
    assert_eq!(shown.lines().count(), 5);
    assert!(
        shown
            .lines()
            .all(|l| l.starts_with(&path.display().to_string()))
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// Writes raw bytes and loads them, returning the error's text and key.
fn load_bytes(bytes: &[u8]) -> (String, Option<String>) {
    let dir = temp_dir("bad");
    let path = dir.join("weights.safetensors");
    fs::write(&path, bytes).unwrap();
    let e = load(&path).unwrap_err();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(e.exit_code(), 1, "{e}");
    let key = match &e {
        WeightsError::Format { key, .. } => key.clone(),
        other => panic!("{other}"),
    };
    (e.to_string(), key)
}

fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn bad_files_give_clear_errors_naming_file_and_key() {
    let g = dense_model();
    let good = safetensors::to_bytes(&init(&g, 0).unwrap()).unwrap();
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("0-byte file", vec![], None, "the file is empty"),
        (
            "truncated file",
            good[..good.len() - 10].to_vec(),
            Some("dense_1/bias"),
            "past the end of the data section",
        ),
        (
            "header length larger than the file",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
                b
            },
            None,
            "the header claims",
        ),
        (
            "non-JSON header",
            raw("{not json}", &[]),
            None,
            "not valid JSON",
        ),
        (
            "F16",
            raw(
                r#"{"dense/kernel":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Some("dense/kernel"),
            "`dense/kernel` is F16 (f16), but kiln weights are F32 only",
        ),
        (
            "I32",
            raw(
                r#"{"dense/bias":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Some("dense/bias"),
            "`dense/bias` is I32 (i32), but kiln weights are F32 only",
        ),
        (
            "offsets past the end",
            raw(
                r#"{"dense/bias":{"dtype":"F32","shape":[10],"data_offsets":[0,40]}}"#,
                &[0; 8],
            ),
            Some("dense/bias"),
            "past the end",
        ),
        (
            "shape product differs from the byte length",
            raw(
                r#"{"dense/bias":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            Some("dense/bias"),
            "`dense/bias` has shape [3] (12 bytes of F32), but its data_offsets [0, 8] cover 8 bytes",
        ),
        (
            "overflowing shape",
            raw(
                r#"{"dense/kernel":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            Some("dense/kernel"),
            "overflows 64 bits",
        ),
    ];
    for (what, bytes, key, words) in cases {
        let (text, k) = load_bytes(&bytes);
        assert!(
            text.starts_with(&std::env::temp_dir().display().to_string())
                && text.contains("weights.safetensors: "),
            "{what}: {text}"
        );
        assert!(text.contains(words), "{what}: {text:?} lacks {words:?}");
        assert_eq!(k.as_deref(), key, "{what}: {text}");
    }
}

#[test]
fn loading_a_missing_file_is_an_io_error() {
    let e = load("/nonexistent/kiln/weights.safetensors").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/kiln/weights.safetensors: cannot read the file: ")
    );
}

#[test]
fn a_failed_save_leaves_the_old_file_and_no_temp_file() {
    let dir = temp_dir("atomic");
    let path = dir.join("w.safetensors");
    let g = dense_model();
    let w = init(&g, 0).unwrap();
    save(&path, &w).unwrap();
    let before = fs::read(&path).unwrap();

    // The writer fails half way.
    let e = write_atomic(&path, |out| {
        out.write_all(b"half a file")?;
        Err(io::Error::other("disk full"))
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "disk full");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(files_in(&dir), ["w.safetensors"]);

    // Weights that cannot be written (a reserved key) are refused before any write.
    let mut bad = w.clone();
    bad.insert("__metadata__", ArrayD::zeros(IxDyn(&[1])));
    let e = save(&path, &bad).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(files_in(&dir), ["w.safetensors"]);

    // The rename fails: the target is a directory.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    let e = save(&sub, &w).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("cannot write the file"), "{e}");
    assert!(sub.is_dir());
    assert_eq!(files_in(&dir), ["sub", "w.safetensors"]);

    // The directory does not exist, or is a file.
    for p in [
        dir.join("no/such/dir/w.safetensors"),
        path.join("w.safetensors"),
    ] {
        let e = save(&p, &w).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!p.exists());
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(files_in(&dir), ["sub", "w.safetensors"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weights_map_keeps_order_and_replaces_in_place() {
    let mut w = Weights::new();
    assert!(w.is_empty());
    w.insert("b", ArrayD::zeros(IxDyn(&[1])));
    w.insert("a", ArrayD::zeros(IxDyn(&[2])));
    w.insert("c", ArrayD::zeros(IxDyn(&[3])));
    assert!(w.insert("b", ArrayD::ones(IxDyn(&[4]))).is_some());
    assert_eq!(w.keys().collect::<Vec<_>>(), ["b", "a", "c"]);
    assert_eq!(w.get("b").unwrap().shape(), &[4]);
    assert_eq!(w.remove("a").unwrap().shape(), &[2]);
    assert_eq!(w.keys().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(w.get("c").unwrap().shape(), &[3]);
    w.get_mut("c").unwrap().fill(2.0);
    assert_eq!(w.get("c").unwrap().sum(), 6.0);
    assert_eq!(w.count(), 7);
    assert_eq!(describe(&w), "2 weights, 7 values");
}
