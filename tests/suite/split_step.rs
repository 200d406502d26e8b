//! The training step in two halves (`kiln::net::SplitStep`), the numerics of
//! data-parallel training: shards' gradients, each weighted by its examples and summed,
//! then one update, equal one process's step on the whole batch up to summation order;
//! and the same shards give the same bits every run.

use kiln::net::{SplitStep, rng_key};
use kiln::{Model, Net, Options};
use ndarray::{ArrayD, IxDyn};

const MLP: &str = "inputs:
  x: [batch, 6]
layers:
  - dense: {units: 8, activation: tanh}
  - dense: {units: 3}
train:
  targets: {y: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: {sgd: {learning_rate: 0.1, momentum: 0.9, global_clipnorm: 0.05}}
  metrics: [accuracy]
";

const BN: &str = "inputs:
  x: [batch, 6]
layers:
  - dense: {units: 8}
  - batch_normalization
  - dense: {units: 3}
train:
  targets: {y: {shape: [batch], dtype: i32}}
  loss: {sparse_categorical_crossentropy: {from_logits: true}}
  optimizer: sgd
";

fn net(src: &str) -> Net {
    Model::from_source(src, "t", "t.yaml")
        .unwrap()
        .compile(&Options {
            seed: Some(3),
            ..Options::default()
        })
        .unwrap()
}

/// Batch `b` of 32 examples: x `[32, 6]`, labels `[32]`.
fn batch(b: usize) -> (ArrayD<f32>, ArrayD<f32>) {
    let x = ArrayD::from_shape_fn(IxDyn(&[32, 6]), |i| {
        (((i[0] * 7 + i[1] * 13 + b * 31) % 23) as f32 / 11.0) - 1.0
    });
    let y = ArrayD::from_shape_fn(IxDyn(&[32]), |i| ((i[0] + b) % 3) as f32);
    (x, y)
}

fn rows(a: &ArrayD<f32>, r: std::ops::Range<usize>) -> ArrayD<f32> {
    a.slice_axis(ndarray::Axis(0), r.into()).to_owned()
}

/// Trains 6 steps with the batch cut into shards at `cuts` (one process per shard,
/// simulated), gradients summed in shard order; the weights.
fn sharded(src: &str, cuts: &[usize]) -> Vec<(String, Vec<f32>)> {
    let mut n = net(src);
    let split = SplitStep::new(&n).unwrap();
    n.start_learning_rate();
    for b in 0..6 {
        let (x, y) = batch(b);
        let mut sum: Vec<f32> = Vec::new();
        let mut updated: Vec<f32> = Vec::new();
        let mut examples = 0;
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(cuts.iter().copied())
            .chain([32])
            .collect();
        for w in bounds.windows(2) {
            let g = split
                .gradients(
                    &n,
                    &[rows(&x, w[0]..w[1])],
                    &[rows(&y, w[0]..w[1])],
                    None,
                    rng_key(0, b as u64),
                )
                .unwrap();
            assert!(g.output.loss.is_finite());
            if sum.is_empty() {
                sum = vec![0.0; g.grads.len()];
                updated = vec![0.0; g.updated.len()];
            }
            sum.iter_mut().zip(&g.grads).for_each(|(s, v)| *s += v);
            let k = (bounds.len() - 1) as f32;
            updated
                .iter_mut()
                .zip(&g.updated)
                .for_each(|(s, v)| *s += v / k);
            examples += g.examples;
        }
        let lr = n.learning_rate();
        split.apply(&mut n, &sum, examples, &updated, lr).unwrap();
    }
    assert_eq!(n.step(), 6);
    weights(&n)
}

fn weights(n: &Net) -> Vec<(String, Vec<f32>)> {
    n.weights()
        .iter()
        .map(|(k, w)| (k.to_string(), w.iter().copied().collect()))
        .collect()
}

/// The same 6 steps as one process's whole step.
fn whole(src: &str) -> Vec<(String, Vec<f32>)> {
    let mut n = net(src);
    n.start_learning_rate();
    for b in 0..6 {
        let (x, y) = batch(b);
        let lr = n.learning_rate();
        n.train_step(vec![x], vec![y], lr, rng_key(0, b as u64))
            .unwrap();
    }
    weights(&n)
}

/// The largest difference between two sets of weights, relative to the largest weight.
fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    let mut d = 0f32;
    let mut scale = 0f32;
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
        for (x, y) in va.iter().zip(vb) {
            d = d.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    d / scale.max(1.0)
}

#[test]
fn shards_summed_equal_the_whole_batch_step() {
    let one = whole(MLP);
    // One shard: the split step is the whole step, up to the order of operations.
    let d1 = max_diff(&one, &sharded(MLP, &[]));
    // Two equal shards, and three uneven ones (a final partial batch's shards).
    let d2 = max_diff(&one, &sharded(MLP, &[16]));
    let d3 = max_diff(&one, &sharded(MLP, &[5, 19]));
    for (k, d) in [(1, d1), (2, d2), (3, d3)] {
        eprintln!("K={k}: {d:e}");
        assert!(
            d < 1e-5,
            "K={k}: the weights differ by {d} from one process's"
        );
    }
    // The global clipping saw the sum: without it the weights differ far more.
    let unclipped = MLP.replace(", global_clipnorm: 0.05", "");
    assert!(max_diff(&one, &whole(&unclipped)) > 1e-3);
}

#[test]
fn a_fixed_sharding_gives_the_same_bits_every_run() {
    let a = sharded(MLP, &[16]);
    let b = sharded(MLP, &[16]);
    let bits = |w: &[(String, Vec<f32>)]| -> Vec<u32> {
        w.iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn batch_norm_statistics_come_back_from_the_gradient_half() {
    let d = max_diff(&whole(BN), &sharded(BN, &[]));
    assert!(d < 1e-5, "{d}");
}
