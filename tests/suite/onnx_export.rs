//! `kiln export --format onnx` read back by another runtime: every bundled spec and every
//! Keras golden case (which between them use every layer family kiln has) is exported
//! with freshly initialized weights, loaded with tract (a Rust ONNX runtime), run on
//! random inputs at two batch sizes and sequence lengths, and compared with
//! `Net::predict`. Every case exports; what ONNX cannot express (a recurrent
//! activation ONNX lacks) is refused by name. `scripts/onnx_check.py` does the same
//! with ONNX Runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln::ndarray::{ArrayD, IxDyn};
use kiln::net::Input;
use kiln::types::DType;
use tract_onnx::prelude::*;

use crate::common::Rng;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["specs", "tests/golden/keras"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

enum Array {
    F32(ArrayD<f32>),
    I32(ArrayD<i32>),
}

/// Random inputs for the model at `batch` and every other symbol `seq`.
fn inputs(net: &kiln::Net, batch: i64, seq: i64, rng: &mut Rng) -> Vec<(String, Array)> {
    net.graph()
        .inputs
        .iter()
        .map(|i| {
            let env: HashMap<String, i64> =
                i.ty.shape
                    .iter()
                    .flat_map(|d| d.symbols())
                    .map(|s| {
                        let v = if s == "batch" { batch } else { seq };
                        (s, v)
                    })
                    .collect();
            let shape: Vec<usize> =
                i.ty.shape
                    .iter()
                    .map(|d| d.eval(&env).unwrap() as usize)
                    .collect();
            let a = match i.ty.dtype {
                DType::F32 => Array::F32(rng.array(&shape, -1.0, 1.0).mapv(|v| v as f32)),
                _ => Array::I32(ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                    rng.int(0, 2) as i32
                })),
            };
            (i.name.clone(), a)
        })
        .collect()
}

fn run_tract(bytes: &[u8], xs: &[(String, Array)]) -> TractResult<Vec<(Vec<usize>, Vec<f32>)>> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    let mut values: TVec<TValue> = tvec!();
    for (i, (_, a)) in xs.iter().enumerate() {
        let t = match a {
            Array::F32(a) => Tensor::from_shape(a.shape(), a.as_slice().unwrap())?,
            Array::I32(a) => Tensor::from_shape(a.shape(), a.as_slice().unwrap())?,
        };
        model.set_input_fact(i, InferenceFact::from(t.datum_type().fact(t.shape())))?;
        values.push(t.into());
    }
    // Typed, neither decluttered nor optimized: tract 0.22's optimized elementwise
    // kernel (`OptBinUnicast`) panics on some small broadcasts (attention at batch 1),
    // and its `PushSliceUp` and `Scan` declutter passes fail on slices that do not
    // start at 0; the plain typed model runs tract's reference kernels.
    let plan = model.into_typed()?.into_runnable()?;
    let outs = plan.run(values)?;
    outs.iter()
        .map(|t| {
            let t = t.cast_to::<f32>()?;
            Ok((t.shape().to_vec(), t.as_slice::<f32>()?.to_vec()))
        })
        .collect()
}

#[test]
fn every_case_exports_and_runs_the_same_in_tract() {
    let mut refused: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0;
    let mut rng = Rng::new(11);
    for path in cases() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let model = kiln::Model::from_path(&path).unwrap();
        let net = model.compile(&kiln::Options::default()).unwrap();
        let bytes = match net.to_onnx() {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("ONNX") && msg.contains(&format!("`{}`", net.graph().name)),
                    "{stem}: {msg}"
                );
                assert_eq!(e.exit_code(), 1, "{stem}");
                refused.push(stem);
                continue;
            }
        };
        for (batch, seq) in [(1, 7), (3, 6)] {
            let xs = inputs(&net, batch, seq, &mut rng);
            let typed: Vec<(&str, Input)> = xs
                .iter()
                .map(|(n, a)| {
                    let v = match a {
                        Array::F32(a) => Input::F32(a.view()),
                        Array::I32(a) => Input::I32(a.view()),
                    };
                    (n.as_str(), v)
                })
                .collect();
            let want = net.predict_all_typed(&typed).unwrap();
            let got = match run_tract(&bytes, &xs) {
                Ok(g) => g,
                Err(e) => {
                    failures.push(format!("{stem}: tract: {e:?}"));
                    continue;
                }
            };
            assert_eq!(got.len(), want.len(), "{stem}: outputs");
            for ((name, w), (shape, g)) in want.iter().zip(&got) {
                assert_eq!(w.shape(), shape.as_slice(), "{stem}: {name}: shape");
                let worst = w
                    .iter()
                    .zip(g)
                    .enumerate()
                    .find(|(_, (a, b))| (*a - *b).abs() > 1e-4 * a.abs() + 1e-5);
                if let Some((i, (a, b))) = worst {
                    failures.push(format!(
                        "{stem}: {name}[{i}] at batch {batch}, length {seq}: kiln {a}, tract {b}"
                    ));
                }
            }
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(checked >= 40, "only {checked} cases checked");
}

#[test]
fn the_file_is_standard_onnx_opset_17_with_named_symbolic_dims() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = kiln::Model::from_path(root.join("specs/lstm.yaml")).unwrap();
    let net = model.compile(&kiln::Options::default()).unwrap();
    let bytes = net.to_onnx().unwrap();
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .unwrap();
    assert_eq!(proto.opset_import[0].version, 17);
    let graph = proto.graph.unwrap();
    let input = &graph.input[0];
    assert_eq!(input.name, "tokens");
    let dims: Vec<String> = match &input.r#type.as_ref().unwrap().value {
        Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| format!("{:?}", d.value))
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(dims.len(), 2);
    assert!(
        dims[0].contains("batch") && dims[1].contains("seq"),
        "{dims:?}"
    );
    // Keras's weights are initializers, by their Keras names; the LSTM is ONNX's own.
    assert!(
        graph
            .initializer
            .iter()
            .any(|t| t.name.ends_with("lstm_cell/kernel"))
    );
    assert!(graph.node.iter().any(|n| n.op_type == "LSTM"));
    assert!(graph.node.iter().any(|n| n.op_type == "GRU"));
}

#[test]
fn kiln_export_writes_the_file_and_refuses_what_it_cannot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("kiln-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kiln = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .output()
            .unwrap()
    };
    let spec = root.join("specs/digits_cnn.yaml");
    let w = dir.join("w.safetensors");
    let out = dir.join("m.onnx");
    assert!(
        kiln(&[
            "init".as_ref(),
            spec.as_os_str(),
            "--out".as_ref(),
            w.as_os_str()
        ])
        .status
        .success()
    );
    let ok = kiln(&[
        "export".as_ref(),
        spec.as_os_str(),
        "--weights".as_ref(),
        w.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("opset 17"));
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);

    // Not an .onnx path: a usage error, nothing written.
    let txt = dir.join("m.txt");
    let bad = kiln(&[
        "export".as_ref(),
        spec.as_os_str(),
        "--weights".as_ref(),
        w.as_os_str(),
        "-o".as_ref(),
        txt.as_os_str(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".onnx"));
    assert!(!txt.exists());

    // A recurrent activation ONNX lacks: refused by name, exit 1, nothing written.
    let odd = dir.join("softsign.yaml");
    std::fs::write(
        &odd,
        "inputs: {x: [batch, 5, 3]}\nlayers:\n  - simple_rnn: {units: 2, activation: softsign}\n",
    )
    .unwrap();
    let ow = dir.join("softsign.safetensors");
    assert!(
        kiln(&[
            "init".as_ref(),
            odd.as_os_str(),
            "--out".as_ref(),
            ow.as_os_str()
        ])
        .status
        .success()
    );
    let refused = kiln(&[
        "export".as_ref(),
        odd.as_os_str(),
        "--weights".as_ref(),
        ow.as_os_str(),
        "-o".as_ref(),
        dir.join("softsign.onnx").as_os_str(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("softsign") && msg.contains("ONNX"), "{msg}");
    assert!(!dir.join("softsign.onnx").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
