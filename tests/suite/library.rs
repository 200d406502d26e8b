//! Written as an outside crate would write it, with documented items only. The
//! library's one error type: spec errors are miette diagnostics with the spec's
//! text, I/O and data failures keep their cause as `source`, and every error maps to
//! the exit codes of DESIGN §3 in one place.

use std::error::Error as _;

use miette::Diagnostic as _;

#[test]
fn a_spec_error_is_a_miette_diagnostic_with_its_source() {
    let src = "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: -3}\n";
    let e = kiln::Model::from_source(src, "t", "t.yaml").unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let code = e.code().map(|c| c.to_string()).unwrap_or_default();
    assert!(code.starts_with('E'), "{code}");
    assert!(e.source_code().is_some());
    let labels: Vec<_> = e.labels().into_iter().flatten().collect();
    assert!(!labels.is_empty());
    // Every label points into the spec's text.
    assert!(labels.iter().all(|l| l.offset() + l.len() <= src.len()));
}

#[test]
fn io_and_data_errors_keep_their_cause() {
    let missing = std::env::temp_dir().join(format!("kiln-missing-{}.yaml", std::process::id()));
    let e = kiln::Model::from_path(&missing).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let cause = e.source().expect("the I/O error is the source");
    assert!(cause.downcast_ref::<std::io::Error>().is_some());

    let m = kiln::Model::from_source(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 2}\n",
        "t",
        "t.yaml",
    )
    .unwrap();
    let net = m.compile(&kiln::Options::default()).unwrap();
    let e = net.load_data(missing.with_extension("npz")).unwrap_err();
    assert!(matches!(e, kiln::Error::Data(_)), "{e:?}");
    assert!(e.source().is_some());
}

/// A custom loop of `Net::train_step` calls, with the fit loop's learning rate and
/// random keys, ends bit-identical to `fit` over the same batches: fit is built on the
/// same public step.
#[test]
fn a_custom_loop_of_train_steps_equals_fit() {
    let spec = "inputs:\n  x: [batch, 3]\nlayers:\n  - dense: {units: 4, activation: relu}\n  - dropout: {rate: 0.25}\n  - dense: {units: 2, name: out}\ntrain:\n  targets: {y: [batch, 2]}\n  loss: mse\n  optimizer: adam\n  batch_size: 4\n  seed: 7\n";
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap();
    let x = kiln::ndarray::ArrayD::from_shape_fn(vec![10, 3], |i| (i[0] * 3 + i[1]) as f32 / 30.0);
    let y = kiln::ndarray::ArrayD::from_shape_fn(vec![10, 2], |i| (i[0] + i[1]) as f32 / 10.0);
    let mut a = m.compile(&kiln::Options::default()).unwrap();
    let data =
        kiln::Dataset::from_arrays(a.graph(), vec![("x".into(), x), ("y".into(), y)]).unwrap();
    let opts = kiln::FitOptions {
        epochs: Some(1),
        shuffle: Some(false),
        ..kiln::FitOptions::default()
    };
    let report = a.fit(&data, &opts).unwrap();
    assert_eq!(report.steps, 3);

    let mut b = m.compile(&kiln::Options::default()).unwrap();
    for batch in [&[0usize, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]] {
        let (xs, ys) = data.gather(batch).unwrap();
        let key = kiln::net::rng_key(7, b.step());
        let out = b.train_step(xs, ys, 0.001, key).unwrap();
        assert!(out.loss.is_finite());
        assert_eq!(out.metrics.len(), 0);
    }
    assert_eq!(b.step(), 3);
    for ((ka, wa), (kb, wb)) in a.weights().iter().zip(b.weights().iter()) {
        assert_eq!(ka, kb);
        let same = wa
            .iter()
            .zip(wb.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{ka} differs");
    }
}

/// `train_on_batch` over batches in order, from a fresh model, ends bit-identical to
/// `fit` over the same data (one epoch, no shuffling), with a learning-rate schedule
/// and dropout: it uses the `Net`'s seed, step and schedule as `fit` does.
#[test]
fn train_on_batch_in_order_equals_fit() {
    let spec = "inputs:\n  x: [batch, 3]\nlayers:\n  - dense: {units: 4, activation: relu}\n  - dropout: {rate: 0.25}\n  - dense: {units: 2, name: out}\ntrain:\n  targets: {y: [batch, 2]}\n  loss: mse\n  metrics: [mae]\n  optimizer: {adam: {learning_rate: {exponential_decay: {initial_learning_rate: 0.01, decay_steps: 1, decay_rate: 0.5}}}}\n  batch_size: 4\n  seed: 7\n";
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap();
    let x = kiln::ndarray::ArrayD::from_shape_fn(vec![10, 3], |i| (i[0] * 3 + i[1]) as f32 / 30.0);
    let y = kiln::ndarray::ArrayD::from_shape_fn(vec![10, 2], |i| (i[0] + i[1]) as f32 / 10.0);
    let mut a = m.compile(&kiln::Options::default()).unwrap();
    let data = kiln::Dataset::from_arrays(
        a.graph(),
        vec![("x".into(), x.clone()), ("y".into(), y.clone())],
    )
    .unwrap();
    let opts = kiln::FitOptions {
        epochs: Some(1),
        shuffle: Some(false),
        ..kiln::FitOptions::default()
    };
    let report = a.fit(&data, &opts).unwrap();
    assert_eq!(report.steps, 3);

    let mut b = m.compile(&kiln::Options::default()).unwrap();
    assert_eq!(b.seed(), 7);
    for (lo, hi) in [(0usize, 4usize), (4, 8), (8, 10)] {
        let xs = x.slice(kiln::ndarray::s![lo..hi, ..]).into_dyn();
        let ys = y.slice(kiln::ndarray::s![lo..hi, ..]).into_dyn();
        let out = b.train_on_batch(&[("x", xs)], &[("y", ys)]).unwrap();
        assert!(out.loss.is_finite());
        assert_eq!(out.metrics.len(), 1);
    }
    assert_eq!(b.step(), 3);
    for ((ka, wa), (kb, wb)) in a.weights().iter().zip(b.weights().iter()) {
        assert_eq!(ka, kb);
        let same = wa
            .iter()
            .zip(wb.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{ka} differs");
    }
}

/// `train_on_batch` checks its arrays against the spec and leaves the model untouched
/// when they do not fit.
#[test]
fn train_on_batch_refuses_bad_arrays() {
    let spec = "inputs:\n  x: [batch, 3]\nlayers:\n  - dense: {units: 2}\ntrain:\n  targets: {y: [batch, 2]}\n  loss: mse\n  optimizer: sgd\n";
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap();
    let mut net = m.compile(&kiln::Options::default()).unwrap();
    let x = kiln::ndarray::ArrayD::<f32>::zeros(vec![4, 3]);
    let wrong = kiln::ndarray::ArrayD::<f32>::zeros(vec![4, 5]);
    let y = kiln::ndarray::ArrayD::<f32>::zeros(vec![4, 2]);
    let e = net
        .train_on_batch(&[("x", wrong.view())], &[("y", y.view())])
        .unwrap_err();
    assert!(e.to_string().contains('x'), "{e}");
    let e = net
        .train_on_batch(&[("x", x.view())], &[("z", y.view())])
        .unwrap_err();
    assert!(e.to_string().contains('z'), "{e}");
    assert_eq!(net.step(), 0);
    net.train_on_batch(&[("x", x.view())], &[("y", y.view())])
        .unwrap();
    assert_eq!(net.step(), 1);
}

/// Token ids predict as i32 arrays, the same bits as their f32 form; a 2-D f32 view
/// needs no `into_dyn`; an array of the wrong element type is refused by name.
#[test]
fn predict_typed_takes_i32_token_ids_and_any_dimension() {
    let spec = "inputs:\n  tokens: {shape: [batch, seq], dtype: i32}\nlayers:\n  - embedding: {input_dim: 20, output_dim: 3}\n  - global_average_pooling1d: {}\n  - dense: {units: 2}\n";
    let m = kiln::Model::from_source(spec, "t", "t.yaml").unwrap();
    let net = m.compile(&kiln::Options::default()).unwrap();
    let ids =
        kiln::ndarray::Array2::<i32>::from_shape_fn((2, 5), |(i, j)| (i * 7 + j * 3) as i32 % 20);
    let as_f32 = ids.mapv(|v| v as f32);
    let typed = net.predict_typed(&[("tokens", ids.view().into())]).unwrap();
    let plain = net
        .predict(&[("tokens", as_f32.view().into_dyn())])
        .unwrap();
    assert_eq!(typed.shape(), &[2, 2]);
    let same = typed
        .iter()
        .zip(plain.iter())
        .all(|(p, q)| p.to_bits() == q.to_bits());
    assert!(same, "{typed} vs {plain}");

    let e = net
        .predict_typed(&[("tokens", as_f32.view().into())])
        .unwrap_err();
    assert!(e.to_string().contains("tokens"), "{e}");
    let too_big = kiln::ndarray::Array2::<i32>::from_elem((1, 2), 20);
    assert!(
        net.predict_typed(&[("tokens", too_big.view().into())])
            .is_err()
    );

    let dense = kiln::Model::from_source(
        "inputs:\n  x: [batch, 3]\nlayers:\n  - dense: {units: 2}\n",
        "d",
        "d.yaml",
    )
    .unwrap()
    .compile(&kiln::Options::default())
    .unwrap();
    let x = kiln::ndarray::Array2::<f32>::from_shape_fn((4, 3), |(i, j)| (i + j) as f32);
    let typed = dense.predict_typed(&[("x", x.view().into())]).unwrap();
    let plain = dense.predict(&[("x", x.view().into_dyn())]).unwrap();
    assert_eq!(typed, plain);
    let ints = kiln::ndarray::Array2::<i32>::zeros((4, 3));
    let e = dense
        .predict_typed(&[("x", ints.view().into())])
        .unwrap_err();
    assert!(e.to_string().contains("f32"), "{e}");
}
