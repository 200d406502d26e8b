//! Shared test support: a seeded generator, the finite-difference gradient check and
//! the compiled-vs-interpreted comparison.
#![allow(dead_code)]

use kiln::dim::Dim;
use kiln::ir::elementwise::rng_uniform;
use kiln::ir::{Func, Id, ReduceOp, Type, autodiff, interp, passes};
use ndarray::{ArrayD, IxDyn};

pub struct Rng(pub u64, pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed, 0)
    }
    pub fn uniform(&mut self) -> f64 {
        self.1 += 1;
        rng_uniform(self.0, 7, self.1)
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.uniform() * (hi - lo + 1) as f64) as usize
    }
    pub fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
        ArrayD::from_shape_fn(IxDyn(shape), |_| self.range(lo, hi))
    }
}

pub fn concrete(t: &Type, batch: usize, seq: usize) -> Vec<usize> {
    let env = [
        ("batch".to_string(), batch as i64),
        ("seq".to_string(), seq as i64),
    ]
    .into_iter()
    .collect();
    t.shape
        .iter()
        .map(|d: &Dim| d.eval(&env).expect("bound") as usize)
        .collect()
}

/// Checks d(sum(out * w))/d(value) against central finite differences for the inputs
/// marked in `diff` (see tests/ir_prims.rs for the tolerance's justification), and
/// that the optimized function computes the same values. `f`'s existing outputs are
/// ignored; `out` is the value under test.
pub fn fd_check(name: &str, f: &Func, out: Id, vals: &[ArrayD<f64>], diff: &[bool], rng: &mut Rng) {
    let mut base = f.clone();
    base.outputs = vec![("out".into(), out)];
    let out_shape: Vec<usize> = interp::eval::<f64>(&base, vals)
        .unwrap_or_else(|e| panic!("{name}: {e}"))[0]
        .shape()
        .to_vec();
    let mut f = f.clone();
    f.outputs.clear();
    let out_ty = f.ty(out).clone();
    let w = f.input("__w", out_ty.clone());
    let prod = f.mul(out, w).unwrap();
    let axes: Vec<usize> = (0..out_ty.rank()).collect();
    let loss = f.reduce(ReduceOp::Sum, prod, axes).unwrap();
    let wrt: Vec<Id> = (0..vals.len())
        .filter(|&i| diff[i])
        .map(|i| input_node(&f, i))
        .collect();
    let mut lossf = f.clone();
    lossf.outputs = vec![("loss".into(), loss)];
    let grads = autodiff::grad(&mut f, loss, &wrt).unwrap_or_else(|e| panic!("{name}: {e}"));
    f.output("out", out);
    for (k, g) in grads.iter().enumerate() {
        f.output(&format!("g{k}"), *g);
    }
    let wv = rng.array(&out_shape, -1.0, 1.0);
    let mut all = vals.to_vec();
    all.push(wv);
    let got = interp::eval::<f64>(&f, &all).unwrap_or_else(|e| panic!("{name}: {e}"));
    let opt = passes::optimize(&f);
    let got_opt =
        interp::eval::<f64>(&opt, &all).unwrap_or_else(|e| panic!("{name} (optimized): {e}"));
    for (a, b) in got.iter().zip(&got_opt) {
        let d = (a - b).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
        assert!(d <= 1e-11, "{name}: optimized IR differs by {d}");
    }
    let h = 1e-6;
    let mut gi = 0;
    for k in 0..vals.len() {
        if !diff[k] {
            continue;
        }
        let analytic = &got[1 + gi];
        gi += 1;
        let n = all[k].len();
        let picks: Vec<usize> = if n <= 12 {
            (0..n).collect()
        } else {
            (0..12).map(|_| rng.int(0, n - 1)).collect()
        };
        for p in picks {
            let mut plus = all.clone();
            let mut minus = all.clone();
            plus[k].as_slice_mut().unwrap()[p] += h;
            minus[k].as_slice_mut().unwrap()[p] -= h;
            let lp = interp::eval::<f64>(&lossf, &plus).unwrap()[0].sum();
            let lm = interp::eval::<f64>(&lossf, &minus).unwrap()[0].sum();
            let numeric = (lp - lm) / (2.0 * h);
            let an = analytic.as_slice().unwrap()[p];
            let tol = 1e-6 * 1f64.max(an.abs()).max(numeric.abs());
            assert!(
                (an - numeric).abs() <= tol,
                "{name}: d/d({})[{p}] analytic {an} vs numeric {numeric}",
                f.inputs[k].name
            );
        }
    }
}

fn input_node(f: &Func, i: usize) -> Id {
    f.nodes
        .iter()
        .position(|n| n.op == kiln::ir::Op::Input(i))
        .expect("input node")
}

/// Runs `f` compiled (with Cranelift's verifier on) and interpreted on the same inputs
/// and asserts every output agrees to 2e-4 · max(1, |interp|) (tests/jit.rs justifies
/// the tolerance), and that a second compiled run gives the same bits: which thread ran
/// which part of a split kernel must not change the result.
pub fn compare_jit(name: &str, f: &Func, inputs: &[ArrayD<f32>]) {
    use kiln::runtime::{self, Backend};
    kiln::jit::set_verifier(true);
    let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
    let jit = runtime::compile(f, Backend::Jit).unwrap_or_else(|e| panic!("{name}: {e}"));
    let interp = runtime::compile(f, Backend::Interp).unwrap();
    let a = jit
        .run(&views)
        .unwrap_or_else(|e| panic!("{name}: jit: {e}"));
    let b = interp
        .run(&views)
        .unwrap_or_else(|e| panic!("{name}: interp: {e}"));
    assert_eq!(a.len(), b.len());
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.shape(), y.shape(), "{name}: output {k} shape");
        for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
            let tol = 2e-4 * q.abs().max(1.0);
            assert!(
                (p - q).abs() <= tol || (p.is_nan() && q.is_nan()),
                "{name}: output {} [{i}]: jit {p} vs interp {q}",
                f.outputs[k].0
            );
        }
    }
    let again = jit.run(&views).unwrap();
    let same = a.iter().zip(&again).all(|(x, y)| {
        x.iter()
            .zip(y.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits() || p.is_nan() && q.is_nan())
    });
    assert!(same, "{name}: a second run differs");
}

/// Limits the address space of the process `c` will start to `bytes` (so that an
/// allocation beyond it fails instead of swapping the machine).
pub fn limit_address_space(c: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A model from `inputs:` text and `layers:` lines; a spec that does not check panics
/// with its diagnostics.
pub fn model(inputs: &str, layers: &str) -> kiln::Model {
    let src = format!("inputs: {inputs}\nlayers:\n{layers}\n");
    kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

/// The last layer's output shape, parameter count and `key shape` list.
pub fn last_layer(m: &kiln::Model) -> (String, i64, String) {
    let l = m.graph.layers.last().expect("a layer");
    let count = l.params.iter().map(|p| p.count()).sum();
    let keys: Vec<String> = l
        .params
        .iter()
        .map(|p| format!("{} {:?}", p.name, p.shape))
        .collect();
    (
        kiln::dim::fmt_shape(&l.output.shape),
        count,
        keys.join(", "),
    )
}

/// The diagnostic codes of a spec that must fail to check.
pub fn failing_codes(src: &str) -> Vec<&'static str> {
    match kiln::Model::from_source(src, "t", "t.yaml") {
        Ok(_) => panic!("{src} checked clean"),
        Err(kiln::Error::Spec(e)) => e.diagnostics.iter().map(|d| d.code).collect(),
        Err(e) => panic!("{e}"),
    }
}

/// Random values for a function's inputs, every one differentiable but the random key.
pub fn stack_values(
    f: &Func,
    rng: &mut Rng,
    batch: usize,
    seq: usize,
) -> (Vec<ArrayD<f64>>, Vec<bool>) {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = concrete(&inp.ty, batch, seq);
            if inp.name == "rng_key" {
                (ArrayD::from_elem(IxDyn(&[]), 7.0), false)
            } else {
                (rng.array(&shape, -0.9, 0.9), true)
            }
        })
        .unzip()
}

/// Random f32 values for a compiled function's inputs (a step's key, counter and rate
/// fixed).
pub fn f32_inputs(f: &Func, rng: &mut Rng, batch: usize, seq: usize) -> Vec<ArrayD<f32>> {
    f.inputs
        .iter()
        .map(|inp| {
            let shape = concrete(&inp.ty, batch, seq);
            let a = match inp.name.as_str() {
                "rng_key" | "step" => ArrayD::from_elem(IxDyn(&[]), 3.0),
                "lr" => ArrayD::from_elem(IxDyn(&[]), 0.01),
                _ => rng.array(&shape, -0.9, 0.9),
            };
            a.mapv(|v| v as f32)
        })
        .collect()
}

/// The forward pass of `inputs`/`layers` and a whole training step (MSE, Adam, a target
/// of shape `target` after the extra layers `head`) compiled against interpreted, at
/// each `(batch, seq)`.
pub fn compiled_matches_interpreted(
    inputs: &str,
    layers: &str,
    (target, head): (&[String], &str),
    sizes: &[(usize, usize)],
) {
    let m = model(inputs, layers);
    let mut rng = Rng::new(layers.len() as u64 + 1);
    let src = format!(
        "inputs: {inputs}\nlayers:\n{layers}{head}\ntrain:\n  targets: {{target: [{}]}}\n  loss: mse\n  optimizer: adam\n",
        target.join(", ")
    );
    let mt = kiln::Model::from_source(&src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"));
    let step = kiln::lower::train::build(&mt.graph).unwrap();
    for &(batch, seq) in sizes {
        let lw = kiln::lower::forward(&m.graph, kiln::lower::Mode::Infer, "t").unwrap();
        let ins = f32_inputs(&lw.f, &mut rng, batch, seq);
        compare_jit(
            &format!("{layers} b={batch}"),
            &passes::optimize(&lw.f),
            &ins,
        );
        let ins = f32_inputs(&step.func, &mut rng, batch, seq);
        compare_jit(&format!("{layers} train step b={batch}"), &step.func, &ins);
    }
}

/// The bundled specs (`specs/*.yaml`), sorted by path.
pub fn bundled_spec_paths() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut specs: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 10, "bundled specs: {specs:?}");
    specs
}
