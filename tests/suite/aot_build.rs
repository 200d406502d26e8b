//! `kiln build` (issue 13, item 3): bundled specs compiled ahead of time to an object
//! file, linked with a C program by the system `cc`, run, and compared with the
//! library (`Net::predict`, which `kiln predict` runs — and for one-input models
//! `kiln predict` itself — and `Net::train_step`, one step of `kiln train`).
//!
//! Tolerance: none, but for the specs with attention or layer normalization (which
//! run as Rust kernels in the process and as generated code in the object).
//! Predictions and one training step (loss, updated weights, and predictions after it)
//! are compared bit for bit. The object runs the JIT's own kernel functions; where the
//! JIT hands a product with many rows to matrixmultiply, the object runs the generated
//! few-rows code, and both sum each dot product in order over `k` in f32 (with FMA on
//! both or on neither, by the host's features), so the bits agree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::ndarray::{ArrayD, IxDyn};
use kiln::{Model, Net, Options};

use crate::common::Rng;

fn spec(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("specs")
        .join(format!("{name}.yaml"))
}

/// The system C compiler, or `None` (the test then says why it is skipped).
fn cc() -> Option<&'static str> {
    let ok = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some("cc")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-aot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

/// A C identifier for a tensor name (as the header writes its parameters).
fn c_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The C program: reads every input (then every target) from `in.bin`, writes the
/// predictions; with training, one step's loss, the weights after it and the
/// predictions with them.
fn main_c(
    prefix: &str,
    inputs: &[(String, usize)],
    outputs: &[(String, usize)],
    targets: &[(String, usize)],
    train: bool,
) -> String {
    // The program's own arrays, named apart from its other variables.
    let c_name = |s: &str| format!("t_{}", c_name(s));
    let mut c = format!("#include <stdio.h>\n#include <stdlib.h>\n#include \"{prefix}.h\"\n\n");
    let all: Vec<&(String, usize)> = inputs.iter().chain(targets).chain(outputs).collect();
    for (n, len) in &all {
        c += &format!("static float {}[{len}];\n", c_name(n));
    }
    c += &format!(
        "static float w[{prefix}_WEIGHTS_SIZE];\n\nint main(void) {{\n  FILE *in = fopen(\"in.bin\", \"rb\");\n  FILE *out = fopen(\"out.bin\", \"wb\");\n  if (!in || !out) return 2;\n"
    );
    for (n, len) in inputs.iter().chain(targets) {
        c += &format!(
            "  if (fread({}, 4, {len}, in) != {len}) return 3;\n",
            c_name(n)
        );
    }
    let ins: Vec<String> = inputs.iter().map(|(n, _)| c_name(n)).collect();
    let outs: Vec<String> = outputs.iter().map(|(n, _)| c_name(n)).collect();
    let mut pargs = ins.clone();
    pargs.extend(outs.iter().cloned());
    let predict = format!(
        "  if ({prefix}_predict({}) != 0) return 5;\n",
        pargs.join(", ")
    );
    let write_outs: String = outputs
        .iter()
        .map(|(n, len)| format!("  fwrite({}, 4, {len}, out);\n", c_name(n)))
        .collect();
    c += &predict;
    c += &write_outs;
    if train {
        let mut targs = ins.clone();
        targs.extend(targets.iter().map(|(n, _)| c_name(n)));
        c += &format!(
            "  float loss = -1.0f;\n  if ({prefix}_train_step({}, &loss) != 0) return 6;\n  fwrite(&loss, 4, 1, out);\n  {prefix}_get_weights(w);\n  fwrite(w, 4, {prefix}_WEIGHTS_SIZE, out);\n  if ({prefix}_step != 1) return 4;\n",
            targs.join(", ")
        );
        c += &predict;
        c += &write_outs;
    }
    c + "  fclose(out);\n  return 0;\n}\n"
}

fn concrete(ty: &kiln::types::TensorType, batch: usize, dims: &[(&str, i64)]) -> Vec<usize> {
    let mut env: HashMap<String, i64> = [("batch".to_string(), batch as i64)].into();
    env.extend(dims.iter().map(|&(k, v)| (k.to_string(), v)));
    ty.shape
        .iter()
        .map(|d| d.eval(&env).expect("fixed size") as usize)
        .collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The object's values against kiln's: the same bits, or (`bits` false) within
/// 1e-6 + 1e-5·|kiln's value|.
fn agree(bits: bool, a: &[f32], b: &[f32], what: &str) {
    if bits {
        same_bits(a, b, what);
        return;
    }
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-6 + 1e-5 * y.abs();
        assert!((x - y).abs() <= tol, "{what}[{i}]: object {x}, kiln {y}");
    }
}

fn same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}[{i}]: object {x}, kiln {y}"
        );
    }
}

/// `kiln build SPEC --weights W -o DIR/STEM.o --header DIR/STEM.h EXTRA…`, which must
/// succeed.
fn build(dir: &Path, spec: &Path, weights: &Path, stem: &str, extra: &[&str]) {
    let (obj, hdr) = (dir.join(format!("{stem}.o")), dir.join(format!("{stem}.h")));
    let mut args = vec![
        "build",
        spec.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        obj.to_str().unwrap(),
        "--header",
        hdr.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = kiln(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kiln init SPEC --out DIR/w.safetensors`; the weights' path.
fn init(dir: &Path, spec: &Path) -> PathBuf {
    let w = dir.join("w.safetensors");
    let out = kiln(&["init", spec.to_str().unwrap(), "--out", w.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w
}

/// Compiles and links in `dir` with `cc ARGS…`, which must succeed.
fn cc_in(cc: &str, dir: &Path, args: &[&str]) {
    let c = Command::new(cc)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&c.stderr)
    );
}

/// Builds `name` for `batch` rows, links and runs the C program, and checks it
/// against the library: bit for bit when `bits`, else within `agree`'s tolerance (attention
/// and layer normalization: in the process each runs as one kernel, in the object as
/// the generated products, softmax and loop nests, whose sums are in another order).
fn check_spec(name: &str, batch: usize, dims: &[(&str, i64)], train: bool, bits: bool) {
    let Some(cc) = cc() else {
        println!("skipped: no `cc` found on PATH to compile the C program");
        return;
    };
    let dir = temp_dir(name);
    let model = Model::from_path(spec(name)).unwrap();
    let mut net: Net = model.compile(&Options::default()).unwrap();
    let wpath = dir.join("w.safetensors");
    net.save_weights(&wpath).unwrap();
    let g = net.graph().clone();
    let prefix = c_name(&g.name);
    let b = batch.to_string();
    let path = spec(name);
    let mut extra = vec!["--batch", &b];
    if train {
        extra.push("--train");
    }
    let dim_args: Vec<String> = dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for d in &dim_args {
        extra.extend(["--dim", d.as_str()]);
    }
    build(&dir, &path, &wpath, &prefix, &extra);
    // Inputs and targets: seeded values (class ids for integer targets).
    let mut rng = Rng::new(7);
    let mut xs = Vec::new();
    let mut bin = Vec::new();
    let mut ins = Vec::new();
    for i in &g.inputs {
        let shape = concrete(&i.ty, batch, dims);
        // Token ids: whole numbers within every bundled vocabulary.
        let a = if i.ty.dtype == kiln::types::DType::I32 {
            rng.array(&shape, 0.0, 1.0)
                .mapv(|v| (v * 10.0).floor() as f32)
        } else {
            rng.array(&shape, -1.0, 1.0).mapv(|v| v as f32)
        };
        bin.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        ins.push((i.name.clone(), a.len()));
        xs.push(a);
    }
    let mut ys = Vec::new();
    let mut tgts = Vec::new();
    if train {
        let t = g.train.as_ref().unwrap();
        for tg in &t.targets {
            let shape = concrete(&tg.ty, batch, dims);
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.int(0, 9) as f32).collect();
            bin.extend(v.iter().flat_map(|v| v.to_le_bytes()));
            tgts.push((tg.name.clone(), n));
            ys.push(ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap());
        }
    }
    std::fs::write(dir.join("in.bin"), &bin).unwrap();
    let named: Vec<(&str, kiln::ndarray::ArrayViewD<f32>)> = g
        .inputs
        .iter()
        .zip(&xs)
        .map(|(i, a)| (i.name.as_str(), a.view()))
        .collect();
    let want = net.predict_all(&named).unwrap();
    let outs: Vec<(String, usize)> = want.iter().map(|(n, a)| (n.clone(), a.len())).collect();
    std::fs::write(
        dir.join("main.c"),
        main_c(&prefix, &ins, &outs, &tgts, train),
    )
    .unwrap();
    let exe = dir.join("main");
    cc_in(
        cc,
        &dir,
        &["-O2", "main.c", &format!("{prefix}.o"), "-lm", "-o", "main"],
    );
    let run = Command::new(&exe).current_dir(&dir).output().unwrap();
    assert!(run.status.success(), "the C program failed: {}", run.status);
    let got = floats(&std::fs::read(dir.join("out.bin")).unwrap());
    let mut at = 0;
    for (n, a) in &want {
        let v: Vec<f32> = a.iter().copied().collect();
        agree(
            bits,
            &got[at..at + a.len()],
            &v,
            &format!("{name}: output `{n}` against Net::predict"),
        );
        at += a.len();
    }
    // One input, one output: `kiln predict` itself gives the same bits.
    if g.inputs.len() == 1 && want.len() == 1 {
        against_cli(&dir, (&path, &wpath), &g, &xs[0], &got, bits, name);
    }
    if train {
        at = check_step(&mut net, (&xs, ys), &named, &got[at..], bits, name) + at;
    }
    assert_eq!(
        at,
        got.len(),
        "{name}: the C program wrote more than expected"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One training step of `net` on `(xs, ys)` against the object's loss, weights after
/// the step and predictions after it, read from `got`; how many values it read.
fn check_step(
    net: &mut Net,
    (xs, ys): (&[ArrayD<f32>], Vec<ArrayD<f32>>),
    named: &[(&str, kiln::ndarray::ArrayViewD<f32>)],
    got: &[f32],
    bits: bool,
    name: &str,
) -> usize {
    let mut at = 0;
    net.start_learning_rate();
    let lr = net.learning_rate();
    let key = kiln::net::rng_key(net.seed(), net.step());
    let step = net.train_step(xs.to_vec(), ys, lr, key).unwrap();
    let loss = got[at];
    at += 1;
    agree(bits, &[loss], &[step.loss], &format!("{name}: loss"));
    let wants: Vec<f32> = net
        .weights()
        .iter()
        .flat_map(|(_, a)| a.iter().copied())
        .collect();
    agree(
        bits,
        &got[at..at + wants.len()],
        &wants,
        &format!("{name}: weights after one step"),
    );
    at += wants.len();
    let after = net.predict_all(named).unwrap();
    for (n, a) in &after {
        let v: Vec<f32> = a.iter().copied().collect();
        agree(
            bits,
            &got[at..at + a.len()],
            &v,
            &format!("{name}: `{n}` after the step"),
        );
        at += a.len();
    }
    at
}

/// `kiln predict` of the one-input model on `x` with the weights `wpath`, against the
/// object's first outputs `got`.
fn against_cli(
    dir: &Path,
    (path, wpath): (&Path, &Path),
    g: &kiln::Graph,
    x: &ArrayD<f32>,
    got: &[f32],
    bits: bool,
    name: &str,
) {
    let (inp, outp) = (dir.join("x.npy"), dir.join("y.npy"));
    if g.inputs[0].ty.dtype == kiln::types::DType::I32 {
        let ids: Vec<u8> = x.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect();
        let bytes = kiln::data::npy::encode("<i4", x.shape(), &ids);
        std::fs::write(&inp, bytes).unwrap();
    } else {
        kiln::data::write(&inp, &[("x".into(), x.clone())]).unwrap();
    }
    let arg = format!("{}={}", g.inputs[0].name, inp.display());
    let p = kiln(&[
        "predict",
        path.to_str().unwrap(),
        "--weights",
        wpath.to_str().unwrap(),
        "--input",
        &arg,
        "--output",
        outp.to_str().unwrap(),
    ]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let cli = kiln::data::npy::parse(&std::fs::read(&outp).unwrap())
        .unwrap()
        .data;
    agree(
        bits,
        &got[..cli.len()],
        &cli.iter().copied().collect::<Vec<f32>>(),
        &format!("{name}: against `kiln predict`"),
    );
}

#[test]
fn digits_mlp_predicts_and_trains_from_c() {
    check_spec("digits_mlp", 4, &[], true, true);
}

#[test]
fn mlp_predicts_and_trains_from_c() {
    check_spec("mlp", 2, &[], true, true);
}

#[test]
fn cnn_predicts_from_c() {
    check_spec("cnn", 3, &[], false, true);
}

#[test]
fn residual_and_diabetes_predict_and_train_from_c() {
    // Layer normalization runs as one kernel in the process and as the generated loop
    // nests in the object, whose row sums are in another order: within tolerance.
    check_spec("residual", 1, &[], true, false);
    check_spec("diabetes", 4, &[], true, true);
}

/// Concatenation generated in the object (copy loops in the JIT's plan too).
#[test]
fn two_inputs_predicts_from_c() {
    check_spec("two_inputs", 3, &[], false, true);
}

/// 3-D convolutions and pooling: loops and products in the plan, as in 2-D.
#[test]
fn video_conv3d_predicts_from_c() {
    check_spec("video_conv3d", 3, &[], false, true);
}

/// Embedding lookups (gather) and their gradient (scatter-add), dropout's random
/// numbers, attention, a symbolic sequence length fixed at build time.
#[test]
fn attention_and_transformer_predict_and_train_from_c() {
    check_spec("attention", 2, &[("seq", 12)], true, false);
    check_spec("transformer_classifier", 2, &[], true, false);
}

/// What the object cannot run is refused (exit 1), naming the layer or primitive.
#[test]
fn refusals_name_what_cannot_be_compiled() {
    let dir = temp_dir("refuse");
    let cases = [
        ("lstm", false, "layer `lstm` (lstm)"),
        ("conv_autoencoder", true, "`pool_max_grad`"),
        ("attention", false, "`--dim NAME=VALUE`"),
        ("two_inputs", true, "constant learning rate"),
    ];
    for (name, train, says) in cases {
        let w = dir.join(format!("{name}.safetensors"));
        let init = kiln(&[
            "init",
            spec(name).to_str().unwrap(),
            "--out",
            w.to_str().unwrap(),
        ]);
        assert!(init.status.success());
        let obj = dir.join("m.o");
        let hdr = dir.join("m.h");
        let path = spec(name);
        let mut args = vec![
            "build",
            path.to_str().unwrap(),
            "--weights",
            w.to_str().unwrap(),
            "-o",
            obj.to_str().unwrap(),
            "--header",
            hdr.to_str().unwrap(),
        ];
        if train {
            args.push("--train");
        }
        let out = kiln(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        assert!(!obj.exists() && !hdr.exists(), "{name}: nothing is written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/embed_c/main.c` compiles against a `kiln build` of digits_mlp and runs:
/// it predicts, trains (the step counter advancing), saves the weights.
#[test]
fn embed_c_example_builds_and_runs() {
    let Some(cc) = cc() else {
        println!("skipped: no `cc` found on PATH to compile the C program");
        return;
    };
    let dir = temp_dir("embed_c");
    let path = spec("digits_mlp");
    let w = init(&dir, &path);
    build(&dir, &path, &w, "digits_mlp", &["--train"]);
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/embed_c/main.c");
    std::fs::copy(&main, dir.join("main.c")).unwrap();
    cc_in(
        cc,
        &dir,
        &["-O2", "main.c", "digits_mlp.o", "-lm", "-o", "digits"],
    );
    let run = Command::new(dir.join("digits"))
        .args(["3", "10"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}");
    for line in [
        "predicted class: ",
        "step 3: loss ",
        "wrote weights.f32 (4810 floats)",
        "predict latency: ",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    let saved = std::fs::read(dir.join("weights.f32")).unwrap();
    assert_eq!(saved.len(), 4810 * 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token id outside the embedding's table makes the function return 1 instead of
/// reading out of bounds; valid ids return 0.
#[test]
fn out_of_range_token_ids_return_one() {
    let Some(cc) = cc() else {
        println!("skipped: no `cc` found on PATH to compile the C program");
        return;
    };
    let dir = temp_dir("tokens");
    let path = spec("attention");
    let w = init(&dir, &path);
    build(&dir, &path, &w, "m", &["--dim", "seq=3"]);
    let main = "#include <stdio.h>\n#include \"m.h\"\nint main(void) {\n  float y[encoder_block_OUTPUT_LOGITS_SIZE];\n  float ok[3] = {1, 2, 3}, big[3] = {1, 1e6f, 3}, neg[3] = {-1, 2, 3};\n  printf(\"%d %d %d\\n\", encoder_block_predict(ok, y), encoder_block_predict(big, y),\n         encoder_block_predict(neg, y));\n  return 0;\n}\n";
    std::fs::write(dir.join("main.c"), main).unwrap();
    cc_in(cc, &dir, &["main.c", "m.o", "-lm", "-o", "main"]);
    let run = Command::new(dir.join("main")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "0 1 1\n");
    let _ = std::fs::remove_dir_all(&dir);
}
