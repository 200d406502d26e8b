//! Property tests of the checker.
//!
//! 1. Generated valid specs: random stacks and graphs over the layer catalog, written
//!    as YAML text, must check clean, and every layer's name, output shape and
//!    parameter count must be what an independent model of Keras predicts (the
//!    generator computes them from Keras's formulas, not from kiln's code).
//! 2. Mutated specs (generated ones and `specs/*.yaml`): lines deleted, duplicated,
//!    swapped or re-indented, numbers replaced by absurd ones, words replaced, bytes
//!    (invalid UTF-8 too) inserted, text truncated. Checking must never panic and must
//!    answer promptly; what it answers must be consistent (an error has labels inside
//!    the text, JSON parses, a valid model summarizes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use kiln::dim::fmt_shape;
use proptest::prelude::*;
use proptest::test_runner::Config;

// ---------------------------------------------------------------------------------
// An independent model of shapes and Keras parameter counts

/// A dimension as the generator tracks it: the batch symbol, the sequence symbol, or a
/// known size.
#[derive(Clone, Debug, PartialEq)]
enum D {
    Batch,
    Seq,
    N(i64),
}

impl D {
    fn known(&self) -> Option<i64> {
        match self {
            D::N(n) => Some(*n),
            _ => None,
        }
    }
    fn yaml(&self) -> String {
        match self {
            D::Batch => "batch".into(),
            D::Seq => "seq".into(),
            D::N(n) => n.to_string(),
        }
    }
}

fn shape_text(s: &[D]) -> String {
    format!("[{}]", s.iter().map(D::yaml).collect::<Vec<_>>().join(", "))
}

/// A tensor the generator can feed to a layer.
#[derive(Clone, Debug)]
struct T {
    name: String,
    shape: Vec<D>,
    int: bool,
}

/// What the generator predicts for one layer.
#[derive(Clone, Debug)]
struct Expect {
    name: String,
    shape: Vec<D>,
    params: i64,
    non_trainable: i64,
}

/// A source of choices: the proptest-drawn numbers, consumed in order (then zeros,
/// which always pick the simplest option — so shrinking simplifies the spec).
struct Choices {
    xs: Vec<u32>,
    at: usize,
}

impl Choices {
    fn next(&mut self) -> u32 {
        let x = self.xs.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        x
    }
    /// A number in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() as i64).rem_euclid(hi - lo + 1)
    }
    fn pick<'a, X>(&mut self, xs: &'a [X]) -> &'a X {
        &xs[self.next() as usize % xs.len()]
    }
    /// True with probability `pct`%.
    fn chance(&mut self, pct: u32) -> bool {
        self.next() % 100 < pct
    }
}

/// Builds a valid spec step by step, tracking every tensor's shape.
struct Gen {
    c: Choices,
    inputs: Vec<(String, String)>,
    lines: Vec<String>,
    tensors: Vec<T>,
    /// The tensor the next layer takes by default (the previous layer's output).
    prev: Option<usize>,
    /// The tensor the stack continues from.
    cur: usize,
    expect: Vec<Expect>,
    auto: HashMap<String, usize>,
    explicit: usize,
    /// Whether the first layer names its input (a second model input needs that).
    first_explicit: bool,
    train: Option<String>,
}

const ACTIVATIONS: &[&str] = &[
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "gelu",
    "silu",
    "elu",
    "selu",
    "swish",
    "softplus",
    "leaky_relu",
];

impl Gen {
    fn new(xs: Vec<u32>) -> Gen {
        Gen {
            c: Choices { xs, at: 0 },
            inputs: Vec::new(),
            lines: Vec::new(),
            tensors: Vec::new(),
            prev: None,
            cur: 0,
            expect: Vec::new(),
            auto: HashMap::new(),
            explicit: 0,
            first_explicit: false,
            train: None,
        }
    }

    fn input(&mut self, name: &str, shape: Vec<D>, int: bool) -> usize {
        let decl = if int {
            format!(
                "{{shape: {}, dtype: {}}}",
                shape_text(&shape),
                self.c.pick(&["i32", "int64", "i64"])
            )
        } else if self.c.chance(30) {
            format!("{{shape: {}}}", shape_text(&shape))
        } else {
            shape_text(&shape)
        };
        self.inputs.push((name.to_string(), decl));
        self.tensors.push(T {
            name: name.to_string(),
            shape,
            int,
        });
        self.tensors.len() - 1
    }

    /// Emits one layer taking `ins` (tensor indices); returns its tensor.
    fn layer(
        &mut self,
        ty: &str,
        args: Vec<String>,
        ins: &[usize],
        shape: Vec<D>,
        params: i64,
        non_trainable: i64,
    ) -> usize {
        // Keras's automatic names unless the generator names it; explicit names never
        // collide with automatic ones.
        let named = self.c.chance(25);
        let name = if named {
            self.explicit += 1;
            format!("n{}", self.explicit)
        } else {
            let k = self.auto.entry(ty.to_string()).or_insert(0);
            let n = if *k == 0 {
                ty.to_string()
            } else {
                format!("{ty}_{k}")
            };
            *k += 1;
            n
        };
        let mut args = args;
        if named {
            args.push(format!("name: {name}"));
        }
        // The previous layer's output is implicit; anything else is named.
        let implicit = ins.len() == 1 && self.prev == Some(ins[0]) && !self.c.chance(20);
        if self.expect.is_empty() {
            self.first_explicit = !implicit;
        }
        if !implicit {
            let names: Vec<&str> = ins.iter().map(|&i| self.tensors[i].name.as_str()).collect();
            if names.len() == 1 && self.c.chance(50) {
                args.push(format!("input: {}", names[0]));
            } else {
                args.push(format!("inputs: [{}]", names.join(", ")));
            }
        }
        let line = if args.is_empty() {
            if self.c.chance(50) {
                format!("  - {ty}")
            } else {
                format!("  - {ty}:")
            }
        } else if self.c.chance(15) {
            // Block style for the arguments.
            let mut s = format!("  - {ty}:");
            for a in &args {
                s.push_str(&format!("\n      {a}"));
            }
            s
        } else {
            format!("  - {ty}: {{{}}}", args.join(", "))
        };
        self.lines.push(line);
        self.expect.push(Expect {
            name: name.clone(),
            shape: shape.clone(),
            params,
            non_trainable,
        });
        self.tensors.push(T {
            name,
            shape,
            int: false,
        });
        let t = self.tensors.len() - 1;
        self.prev = Some(t);
        t
    }

    fn t(&self, i: usize) -> &T {
        &self.tensors[i]
    }

    /// A dense layer on tensor `i`.
    fn dense(&mut self, i: usize, units: i64) -> usize {
        self.dense_with(i, units, true)
    }

    /// A dense layer, with a random activation if `activation`.
    fn dense_with(&mut self, i: usize, units: i64, activation: bool) -> usize {
        let fan_in = self
            .t(i)
            .shape
            .last()
            .and_then(D::known)
            .expect("dense needs a known last axis");
        let bias = !self.c.chance(15);
        let mut args = vec![format!("units: {units}")];
        if !bias {
            args.push("use_bias: false".into());
        }
        if activation && self.c.chance(30) {
            args.push(format!("activation: {}", self.c.pick(ACTIVATIONS)));
        }
        if self.c.chance(10) {
            args.push(format!(
                "kernel_initializer: {}",
                self.c.pick(&[
                    "he_normal",
                    "zeros",
                    "{random_normal: {stddev: 0.1}}",
                    "orthogonal"
                ])
            ));
        }
        let mut shape = self.t(i).shape.clone();
        *shape.last_mut().unwrap() = D::N(units);
        let params = fan_in * units + if bias { units } else { 0 };
        self.layer("dense", args, &[i], shape, params, 0)
    }

    fn all_known_after_batch(&self, i: usize) -> bool {
        self.t(i).shape[1..].iter().all(|d| d.known().is_some())
    }

    fn last_known(&self, i: usize) -> Option<i64> {
        self.t(i).shape.last().and_then(D::known)
    }

    /// One step of the stack from the current tensor. Returns false if the chosen
    /// layer does not apply here (the caller then adds a shape-keeping layer).
    fn step(&mut self) -> bool {
        let i = self.cur;
        let rank = self.t(i).shape.len();
        let which = self.c.next() % 18;
        let out = match which {
            0 | 1 => {
                if self.last_known(i).is_none() {
                    return false;
                }
                let u = self.c.range(1, 24);
                self.dense(i, u)
            }
            2 => self.conv1d(i),
            3 => self.conv2d(i),
            4 => self.pool(i),
            5 => self.global_pool(i),
            6 => self.batch_norm(i),
            7 => self.layer_norm(i),
            8 => {
                if rank < 2 || !self.all_known_after_batch(i) {
                    return false;
                }
                let n: i64 = self.t(i).shape[1..].iter().filter_map(D::known).product();
                let shape = vec![D::Batch, D::N(n)];
                self.layer("flatten", vec![], &[i], shape, 0, 0)
            }
            9 => self.reshape(i),
            10 => self.permute(i),
            11 => self.rnn(i),
            12 => self.merge(i),
            13 => self.concat(i),
            14 => self.attention(i),
            15 => self.skip(i),
            16 => self.second_input(i),
            _ => {
                self.keep_shape(i);
                return true;
            }
        };
        match out {
            usize::MAX => false,
            t => {
                self.cur = t;
                true
            }
        }
    }

    /// Dropout or an activation: always applies, keeps the shape.
    fn keep_shape(&mut self, i: usize) {
        let shape = self.t(i).shape.clone();
        let t = match self.c.next() % 10 {
            0 => {
                let rate = self.c.pick(&["0.0", "0.1", "0.5", "0.9", "0"]).to_string();
                self.layer("dropout", vec![format!("rate: {rate}")], &[i], shape, 0, 0)
            }
            1 => {
                let a = self.c.pick(ACTIVATIONS).to_string();
                self.layer(
                    "activation",
                    vec![format!("activation: {a}")],
                    &[i],
                    shape,
                    0,
                    0,
                )
            }
            2 => self.layer(
                "leaky_relu",
                vec!["negative_slope: 0.2".into()],
                &[i],
                shape,
                0,
                0,
            ),
            3 => {
                let axis = -self.c.range(1, (shape.len() - 1).max(1) as i64);
                self.layer("softmax", vec![format!("axis: {axis}")], &[i], shape, 0, 0)
            }
            4 => self.layer("relu", vec!["max_value: 6.0".into()], &[i], shape, 0, 0),
            n => {
                let ty = ["relu", "elu", "sigmoid", "tanh", "gelu", "silu"][n as usize - 4];
                self.layer(ty, vec![], &[i], shape, 0, 0)
            }
        };
        self.cur = t;
    }

    /// Window output length along one axis, from Keras's formulas.
    fn window(len: i64, k: i64, s: i64, d: i64, padding: &str) -> i64 {
        match padding {
            // floor((len - 1) / s) + 1
            "same" | "causal" => (len - 1) / s + 1,
            _ => (len - (d * (k - 1) + 1)) / s + 1,
        }
    }

    /// Kernel, stride, dilation and padding that fit an axis of length `len`
    /// (`None`: a symbolic length, which only stride-1 `same`/`causal` keeps intact).
    fn window_args(
        &mut self,
        len: Option<i64>,
        paddings: &[&'static str],
    ) -> (i64, i64, i64, &'static str) {
        let k = self.c.range(1, 5);
        let Some(len) = len else {
            let d = if self.c.chance(30) {
                self.c.range(1, 3)
            } else {
                1
            };
            let p = *self.c.pick(&paddings[1..]);
            return (k, 1, d, p);
        };
        let padding = *self.c.pick(paddings);
        let strided = self.c.chance(40);
        let (mut s, mut d) = (1, 1);
        if strided {
            s = self.c.range(1, 3);
        } else if self.c.chance(30) {
            d = self.c.range(1, 3);
        }
        if padding == "valid" && d * (k - 1) + 1 > len {
            // Shrink the window to fit.
            d = 1;
            let k = k.min(len);
            return (k, s, d, padding);
        }
        (k, s, d, padding)
    }

    fn conv1d(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() != 3 || shape[2].known().is_none() {
            return usize::MAX;
        }
        let c_in = shape[2].known().unwrap();
        let (k, s, d, padding) = self.window_args(shape[1].known(), &["valid", "same", "causal"]);
        let f = self.c.range(1, 16);
        let len = match shape[1].known() {
            Some(l) => D::N(Self::window(l, k, s, d, padding)),
            None => shape[1].clone(),
        };
        let bias = !self.c.chance(15);
        let mut args = vec![
            format!("filters: {f}"),
            format!(
                "kernel_size: {}",
                if self.c.chance(30) {
                    format!("[{k}]")
                } else {
                    k.to_string()
                }
            ),
        ];
        if s != 1 || self.c.chance(20) {
            args.push(format!("strides: {s}"));
        }
        if d != 1 || self.c.chance(20) {
            args.push(format!("dilation_rate: {d}"));
        }
        if padding != "valid" || self.c.chance(20) {
            args.push(format!("padding: {padding}"));
        }
        if !bias {
            args.push("use_bias: false".into());
        }
        let params = k * c_in * f + if bias { f } else { 0 };
        self.layer(
            "conv1d",
            args,
            &[i],
            vec![shape[0].clone(), len, D::N(f)],
            params,
            0,
        )
    }

    fn conv2d(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() != 4 || !self.all_known_after_batch(i) {
            return usize::MAX;
        }
        let (h, w, c_in) = (
            shape[1].known().unwrap(),
            shape[2].known().unwrap(),
            shape[3].known().unwrap(),
        );
        let padding = *self.c.pick(&["valid", "same"]);
        let (kh, sh, dh, _) =
            self.window_args(Some(if padding == "same" { 99 } else { h }), &[padding]);
        let (kw, sw, dw, _) =
            self.window_args(Some(if padding == "same" { 99 } else { w }), &[padding]);
        // Keras forbids strides > 1 together with dilation > 1.
        let (sh, sw) = if dh > 1 || dw > 1 { (1, 1) } else { (sh, sw) };
        let f = self.c.range(1, 12);
        let pair = |a: i64, b: i64, c: &mut Choices| {
            if a == b && c.chance(60) {
                a.to_string()
            } else {
                format!("[{a}, {b}]")
            }
        };
        let mut args = vec![
            format!("filters: {f}"),
            format!("kernel_size: {}", pair(kh, kw, &mut self.c)),
        ];
        if (sh, sw) != (1, 1) || self.c.chance(20) {
            args.push(format!("strides: {}", pair(sh, sw, &mut self.c)));
        }
        if (dh, dw) != (1, 1) {
            args.push(format!("dilation_rate: {}", pair(dh, dw, &mut self.c)));
        }
        if padding != "valid" || self.c.chance(20) {
            args.push(format!("padding: {padding}"));
        }
        if self.c.chance(20) {
            args.push(format!("activation: {}", self.c.pick(ACTIVATIONS)));
        }
        let out = vec![
            shape[0].clone(),
            D::N(Self::window(h, kh, sh, dh, padding)),
            D::N(Self::window(w, kw, sw, dw, padding)),
            D::N(f),
        ];
        let params = kh * kw * c_in * f + f;
        self.layer("conv2d", args, &[i], out, params, 0)
    }

    fn pool(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        let n = match shape.len() {
            3 => 1,
            4 => 2,
            _ => return usize::MAX,
        };
        if !self.all_known_after_batch(i) {
            return usize::MAX;
        }
        let padding = *self.c.pick(&["valid", "same"]);
        let mut out = vec![shape[0].clone()];
        let mut ps = Vec::new();
        let mut ss = Vec::new();
        for dim in &shape[1..=n] {
            let len = dim.known().unwrap();
            let p = if padding == "valid" {
                self.c.range(1, len.min(4))
            } else {
                self.c.range(1, 4)
            };
            let s = if self.c.chance(50) {
                p
            } else {
                self.c.range(1, 3)
            };
            ps.push(p);
            ss.push(s);
            out.push(D::N(Self::window(len, p, s, 1, padding)));
        }
        out.push(shape[n + 1].clone());
        let list = |v: &[i64]| {
            if v.len() == 1 {
                v[0].to_string()
            } else {
                format!(
                    "[{}]",
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        let mut args = Vec::new();
        if ps.iter().any(|&p| p != 2) || ps.len() != n || self.c.chance(50) {
            args.push(format!("pool_size: {}", list(&ps)));
        }
        if ss != ps {
            args.push(format!("strides: {}", list(&ss)));
        }
        if padding == "same" {
            args.push("padding: same".into());
        }
        // The default pool size is 2 and the default strides are the pool size.
        let ty = format!("{}_pooling{n}d", self.c.pick(&["max", "average"]));
        self.layer(&ty, args, &[i], out, 0, 0)
    }

    fn global_pool(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        let n = match shape.len() {
            3 => 1,
            4 => 2,
            _ => return usize::MAX,
        };
        let keep = self.c.chance(25);
        let mut out = vec![shape[0].clone()];
        if keep {
            out.extend(std::iter::repeat_n(D::N(1), n));
        }
        out.push(shape[n + 1].clone());
        let args = if keep {
            vec!["keepdims: true".to_string()]
        } else {
            vec![]
        };
        let ty = format!("global_{}_pooling{n}d", self.c.pick(&["max", "average"]));
        self.layer(&ty, args, &[i], out, 0, 0)
    }

    fn batch_norm(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        let rank = shape.len() as i64;
        let known: Vec<i64> = (1..rank)
            .filter(|&a| shape[a as usize].known().is_some())
            .collect();
        if known.is_empty() {
            return usize::MAX;
        }
        let mut args = Vec::new();
        let axis = if self.c.chance(60) && shape[rank as usize - 1].known().is_some() {
            rank - 1
        } else {
            let a = *self.c.pick(&known);
            args.push(format!(
                "axis: {}",
                if self.c.chance(50) { a } else { a - rank }
            ));
            a
        };
        let ch = shape[axis as usize].known().unwrap();
        let (center, scale) = (!self.c.chance(15), !self.c.chance(15));
        if !center {
            args.push("center: false".into());
        }
        if !scale {
            args.push("scale: false".into());
        }
        if self.c.chance(20) {
            args.push("momentum: 0.9".into());
        }
        // gamma, beta (trainable), moving mean and variance (not).
        let trainable = ch * (center as i64 + scale as i64);
        self.layer(
            "batch_normalization",
            args,
            &[i],
            shape,
            trainable + 2 * ch,
            2 * ch,
        )
    }

    fn layer_norm(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        let Some(ch) = self.last_known(i) else {
            return usize::MAX;
        };
        let (center, scale) = (!self.c.chance(15), !self.c.chance(15));
        let mut args = Vec::new();
        if !center {
            args.push("center: false".into());
        }
        if !scale {
            args.push("scale: false".into());
        }
        if self.c.chance(20) {
            args.push("epsilon: 0.00001".into());
        }
        let params = ch * (center as i64 + scale as i64);
        self.layer("layer_normalization", args, &[i], shape, params, 0)
    }

    fn reshape(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() < 2 || !self.all_known_after_batch(i) {
            return usize::MAX;
        }
        let total: i64 = shape[1..].iter().filter_map(D::known).product();
        let divisors: Vec<i64> = (1..=total.min(12)).filter(|d| total % d == 0).collect();
        let a = *self.c.pick(&divisors);
        let rest = total / a;
        let (target, out): (String, Vec<i64>) = match self.c.next() % 5 {
            0 => ("[-1]".into(), vec![total]),
            1 => (format!("[{a}, -1]"), vec![a, rest]),
            2 => (format!("[-1, {a}]"), vec![rest, a]),
            3 => (format!("[{a}, {rest}]"), vec![a, rest]),
            _ => {
                let b_divs: Vec<i64> = (1..=rest.min(6)).filter(|d| rest % d == 0).collect();
                let b = *self.c.pick(&b_divs);
                (format!("[{a}, -1, {b}]"), vec![a, rest / b, b])
            }
        };
        let mut s = vec![shape[0].clone()];
        s.extend(out.into_iter().map(D::N));
        self.layer(
            "reshape",
            vec![format!("target_shape: {target}")],
            &[i],
            s,
            0,
            0,
        )
    }

    fn permute(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() < 3 {
            return usize::MAX;
        }
        let mut dims: Vec<usize> = (1..shape.len()).collect();
        for j in (1..dims.len()).rev() {
            let k = self.c.next() as usize % (j + 1);
            dims.swap(j, k);
        }
        let mut out = vec![shape[0].clone()];
        out.extend(dims.iter().map(|&d| shape[d].clone()));
        let list = dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        self.layer("permute", vec![format!("dims: [{list}]")], &[i], out, 0, 0)
    }

    fn rnn(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() != 3 {
            return usize::MAX;
        }
        let Some(fin) = shape[2].known() else {
            return usize::MAX;
        };
        let u = self.c.range(1, 12);
        let seqs = self.c.chance(50);
        let bias = !self.c.chance(15);
        let ty = *self.c.pick(&["lstm", "gru", "simple_rnn"]);
        let mut args = vec![format!("units: {u}")];
        if seqs || self.c.chance(20) {
            args.push(format!("return_sequences: {seqs}"));
        }
        if !bias {
            args.push("use_bias: false".into());
        }
        let mut reset_after = true;
        if ty == "gru" && self.c.chance(30) {
            reset_after = false;
            args.push("reset_after: false".into());
        }
        let kernels = u * (fin + u);
        let params = match ty {
            // 4 gates: kernel [in, 4u], recurrent kernel [u, 4u], bias [4u].
            "lstm" => 4 * kernels + if bias { 4 * u } else { 0 },
            // 3 gates; reset_after keeps separate input and recurrent biases [2, 3u].
            "gru" => {
                3 * kernels
                    + if !bias {
                        0
                    } else if reset_after {
                        6 * u
                    } else {
                        3 * u
                    }
            }
            _ => kernels + if bias { u } else { 0 },
        };
        let out = if seqs {
            vec![shape[0].clone(), shape[1].clone(), D::N(u)]
        } else {
            vec![shape[0].clone(), D::N(u)]
        };
        self.layer(ty, args, &[i], out, params, 0)
    }

    /// Two or three dense branches from the current tensor, merged elementwise.
    fn merge(&mut self, i: usize) -> usize {
        if self.t(i).shape.len() < 2 || self.last_known(i).is_none() {
            return usize::MAX;
        }
        let ty = *self.c.pick(&["add", "subtract", "multiply"]);
        let n = if ty == "subtract" {
            2
        } else {
            self.c.range(2, 3) as usize
        };
        let u = self.c.range(1, 16);
        let mut branches = Vec::new();
        for _ in 0..n {
            branches.push(self.dense(i, u));
        }
        let shape = self.t(branches[0]).shape.clone();
        self.layer(ty, vec![], &branches, shape, 0, 0)
    }

    /// Dense branches joined on the last axis, or the tensor with itself on axis 1.
    fn concat(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() < 2 || self.last_known(i).is_none() {
            return usize::MAX;
        }
        if shape.len() >= 3 && self.c.chance(30) {
            let Some(len) = shape[1].known() else {
                return usize::MAX;
            };
            let mut out = shape.clone();
            out[1] = D::N(2 * len);
            return self.layer("concatenate", vec!["axis: 1".into()], &[i, i], out, 0, 0);
        }
        let (u1, u2) = (self.c.range(1, 12), self.c.range(1, 12));
        let a = self.dense(i, u1);
        let b = self.dense(i, u2);
        let mut out = shape;
        *out.last_mut().unwrap() = D::N(u1 + u2);
        let axis = if self.c.chance(50) {
            vec![]
        } else {
            vec![format!(
                "axis: {}",
                if self.c.chance(50) {
                    -1
                } else {
                    out.len() as i64 - 1
                }
            )]
        };
        self.layer("concatenate", axis, &[a, b], out, 0, 0)
    }

    fn attention(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() != 3 {
            return usize::MAX;
        }
        let Some(dq) = shape[2].known() else {
            return usize::MAX;
        };
        let h = self.c.range(1, 4);
        let kd = self.c.range(1, 8);
        let mut args = vec![format!("num_heads: {h}"), format!("key_dim: {kd}")];
        let vd = if self.c.chance(30) {
            let v = self.c.range(1, 8);
            args.push(format!("value_dim: {v}"));
            v
        } else {
            kd
        };
        let dout = if self.c.chance(30) {
            let o = self.c.range(1, 16);
            args.push(format!("output_shape: {o}"));
            o
        } else {
            dq
        };
        let bias = !self.c.chance(15);
        if !bias {
            args.push("use_bias: false".into());
        }
        // Self-attention, or cross-attention to a projection of the same sequence.
        let (ins, dv): (Vec<usize>, i64) = match self.c.next() % 3 {
            0 => (vec![i], dq),
            1 => (vec![i, i], dq),
            _ => {
                let units = self.c.range(1, 12);
                let v = self.dense(i, units);
                if self.c.chance(50) {
                    (vec![i, v], units)
                } else {
                    (vec![i, v, v], units)
                }
            }
        };
        let b = |n: i64| if bias { n } else { 0 };
        // query [dq, h, kd] + [h, kd]; key [dv, h, kd] + [h, kd]; value [dv, h, vd] +
        // [h, vd]; output [h, vd, dout] + [dout].
        let params = dq * h * kd
            + b(h * kd)
            + dv * h * kd
            + b(h * kd)
            + dv * h * vd
            + b(h * vd)
            + h * vd * dout
            + b(dout);
        let out = vec![shape[0].clone(), shape[1].clone(), D::N(dout)];
        self.layer("multi_head_attention", args, &ins, out, params, 0)
    }

    /// A residual connection to an earlier tensor of the same shape.
    fn skip(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        let earlier: Vec<usize> = (0..i)
            .filter(|&j| !self.t(j).int && self.t(j).shape == shape)
            .collect();
        if earlier.is_empty() {
            return usize::MAX;
        }
        let j = *self.c.pick(&earlier);
        let ins = if self.c.chance(50) { [j, i] } else { [i, j] };
        self.layer("add", vec![], &ins, shape, 0, 0)
    }

    /// A second model input, projected and concatenated to a rank-2 stack.
    fn second_input(&mut self, i: usize) -> usize {
        let shape = self.t(i).shape.clone();
        if shape.len() != 2
            || self.last_known(i).is_none()
            || !self.first_explicit
            || self.inputs.iter().any(|(n, _)| n == "meta")
        {
            return usize::MAX;
        }
        let m = self.c.range(1, 8);
        let meta = self.input("meta", vec![D::Batch, D::N(m)], false);
        let u = self.c.range(1, 8);
        let p = self.dense(meta, u);
        let d = shape[1].known().unwrap();
        self.layer(
            "concatenate",
            vec![],
            &[i, p],
            vec![D::Batch, D::N(d + u)],
            0,
            0,
        )
    }

    /// The whole spec as YAML text.
    fn yaml(&self) -> String {
        let mut s = String::new();
        if !self.inputs.is_empty() {
            s.push_str("inputs:\n");
            for (n, d) in &self.inputs {
                s.push_str(&format!("  {n}: {d}\n"));
            }
        }
        s.push_str("layers:\n");
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        if let Some(t) = &self.train {
            s.push_str(t);
        }
        s
    }
}

/// A random valid spec and what checking it must give.
#[derive(Clone, Debug)]
struct Generated {
    yaml: String,
    expect: Vec<Expect>,
}

fn generate(xs: Vec<u32>, steps: usize) -> Generated {
    let mut g = Gen::new(xs);
    let seq = |g: &mut Gen| {
        if g.c.chance(40) {
            D::Seq
        } else {
            D::N(g.c.range(1, 12))
        }
    };
    let start = match g.c.next() % 4 {
        0 => {
            let f = g.c.range(1, 32);
            g.input("x", vec![D::Batch, D::N(f)], false)
        }
        1 => {
            let s = seq(&mut g);
            let f = g.c.range(1, 16);
            g.input("x", vec![D::Batch, s, D::N(f)], false)
        }
        2 => {
            let (h, w, c) = (g.c.range(1, 12), g.c.range(1, 12), g.c.range(1, 4));
            g.input("image", vec![D::Batch, D::N(h), D::N(w), D::N(c)], false)
        }
        _ => {
            let s = seq(&mut g);
            let tok = g.input("tokens", vec![D::Batch, s.clone()], true);
            g.prev = Some(tok);
            let (n, d) = (g.c.range(1, 1000), g.c.range(1, 16));
            let args = vec![format!("input_dim: {n}"), format!("output_dim: {d}")];
            g.layer(
                "embedding",
                args,
                &[tok],
                vec![D::Batch, s, D::N(d)],
                n * d,
                0,
            )
        }
    };
    g.prev = Some(start);
    g.cur = start;
    // A model input is only the previous output for the first layer.
    for _ in 0..steps {
        if !g.step() {
            let i = g.cur;
            g.keep_shape(i);
        }
    }
    if g.expect.is_empty() {
        let i = g.cur;
        g.keep_shape(i);
    }
    // Sometimes a train section whose targets fit the output.
    let out = g.t(g.cur).shape.clone();
    if g.c.chance(40) {
        if out.len() == 2 && out[1].known().is_some_and(|k| k >= 2) && g.c.chance(50) {
            let i = g.cur;
            let k = out[1].known().unwrap();
            // A linear last layer gives logits.
            g.dense_with(i, k, false);
            g.train = Some("train:\n  targets: {label: {shape: [batch], dtype: i32}}\n  loss: {sparse_categorical_crossentropy: {from_logits: true}}\n  optimizer: adam\n  metrics: [accuracy]\n".into());
        } else {
            g.train = Some(format!(
                "train:\n  targets: {{y: {}}}\n  loss: mse\n  optimizer: {{sgd: {{learning_rate: 0.01}}}}\n",
                shape_text(&out)
            ));
        }
    }
    Generated {
        yaml: g.yaml(),
        expect: g.expect,
    }
}

fn generated() -> impl Strategy<Value = Generated> {
    (prop::collection::vec(any::<u32>(), 0..160), 1usize..14)
        .prop_map(|(xs, steps)| generate(xs, steps))
}

fn group(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn check_generated(g: &Generated) -> Result<(), TestCaseError> {
    let model = match kiln::Model::from_source(&g.yaml, "gen", "gen.yaml") {
        Ok(m) => m,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "a valid spec failed to check:\n{}\n{e}",
                g.yaml
            )));
        }
    };
    let graph = &model.graph;
    prop_assert!(model.warnings.iter().all(|w| !w.is_error()));
    prop_assert!(
        model.warnings.is_empty(),
        "unexpected warnings for\n{}\n{}",
        g.yaml,
        model.render_warnings(false)
    );
    prop_assert_eq!(graph.layers.len(), g.expect.len(), "{}", g.yaml);
    let (mut total, mut non) = (0, 0);
    for (l, e) in graph.layers.iter().zip(&g.expect) {
        prop_assert_eq!(&l.name, &e.name, "{}", g.yaml);
        prop_assert_eq!(
            fmt_shape(&l.output.shape),
            shape_text(&e.shape),
            "shape of `{}` in\n{}",
            e.name,
            g.yaml
        );
        let count: i64 = l.params.iter().map(|p| p.count()).sum();
        prop_assert_eq!(count, e.params, "parameters of `{}` in\n{}", e.name, g.yaml);
        let frozen: i64 = l
            .params
            .iter()
            .filter(|p| !p.trainable)
            .map(|p| p.count())
            .sum();
        prop_assert_eq!(
            frozen,
            e.non_trainable,
            "non-trainable parameters of `{}` in\n{}",
            e.name,
            g.yaml
        );
        total += e.params;
        non += e.non_trainable;
    }
    prop_assert_eq!(
        graph.param_counts(),
        (total, total - non, non),
        "{}",
        g.yaml
    );
    // The output is the last layer, with the predicted shape.
    let last = g.expect.last().unwrap();
    prop_assert_eq!(graph.outputs.len(), 1);
    prop_assert_eq!(graph.name_of(graph.outputs[0]), last.name.as_str());
    prop_assert_eq!(
        fmt_shape(&graph.type_of(graph.outputs[0]).shape),
        shape_text(&last.shape)
    );
    let summary = kiln::summary::render(graph);
    let want = format!(" Total params: {} (", group(total));
    prop_assert!(summary.contains(&want), "`{}` not in\n{}", want, summary);
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn generated_specs_check_clean_with_keras_shapes_and_counts(g in generated()) {
        check_generated(&g)?;
    }
}

/// The generator covers the catalog: over a fixed set of seeds, every layer type and
/// the interesting options appear.
#[test]
fn the_generator_covers_the_catalog() {
    let mut seen = String::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng as u32
    };
    for _ in 0..400 {
        let xs: Vec<u32> = (0..160).map(|_| next()).collect();
        let g = generate(xs, 12);
        seen.push_str(&g.yaml);
    }
    for word in [
        "dense",
        "conv1d",
        "conv2d",
        "max_pooling1d",
        "average_pooling2d",
        "global_max_pooling1d",
        "global_average_pooling2d",
        "batch_normalization",
        "layer_normalization",
        "flatten",
        "reshape",
        "-1",
        "permute",
        "dropout",
        "activation:",
        "embedding",
        "lstm",
        "gru",
        "simple_rnn",
        "return_sequences: true",
        "reset_after: false",
        "add",
        "subtract",
        "multiply",
        "concatenate",
        "multi_head_attention",
        "value_dim",
        "seq",
        "strides",
        "dilation_rate",
        "padding: same",
        "padding: causal",
        "keepdims",
        "use_bias: false",
        "meta",
        "inputs: [",
        "train:",
        "sparse_categorical_crossentropy",
    ] {
        assert!(seen.contains(word), "the generator never writes `{word}`");
    }
}

// ---------------------------------------------------------------------------------
// Mutations

/// Numbers that break things: zero, negatives, overflow, floats where ints go.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e40",
    "99999999999",
    "2147483647",
    "2147483648",
    "-2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "99999999999999999999999",
    "1.5",
    ".nan",
    ".inf",
    "-.inf",
    "0x7fffffffffffffff",
    "0o777",
    "1e-400",
    "00",
    "-0",
    "+3",
    "1_000",
];

/// Words a mutation may put in place of another.
const WORDS: &[&str] = &[
    "dense",
    "conv2d",
    "conv1d",
    "flatten",
    "reshape",
    "permute",
    "lstm",
    "gru",
    "simple_rnn",
    "embedding",
    "add",
    "concatenate",
    "multi_head_attention",
    "batch_normalization",
    "layer_normalization",
    "dropout",
    "softmax",
    "global_average_pooling1d",
    "max_pooling2d",
    "units",
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "dilation_rate",
    "pool_size",
    "axis",
    "target_shape",
    "dims",
    "input",
    "inputs",
    "outputs",
    "layers",
    "name",
    "train",
    "targets",
    "loss",
    "optimizer",
    "metrics",
    "callbacks",
    "data",
    "batch",
    "seq",
    "same",
    "valid",
    "causal",
    "true",
    "false",
    "null",
    "~",
    "[]",
    "{}",
    "[batch]",
    "{units: 3}",
    "x",
    "image",
    "tokens",
    "logits",
    "dtype",
    "i32",
    "f32",
    "shape",
    "num_heads",
    "key_dim",
    "return_sequences",
    "rate",
    "&a",
    "*a",
    "!!str",
    "!!int",
    "|",
    ">",
    "'",
    "\"",
    "? ",
    "- ",
    ": ",
    "#",
    "%YAML 1.2",
    "---",
    "...",
    "@",
    "`",
    "\t",
    "",
    "É",
    "☕",
    "𝕏",
    "\u{feff}",
    "\u{0}",
];

/// Bytes to insert: invalid UTF-8, control bytes, partial multi-byte characters.
const BYTES: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xe2\x98",
    b"\xf0\x9f\x98",
    b"\x80",
    b"\x00",
    b"\r",
    b"\r\n",
    b"\t",
    b"\x1b[31m",
    b"\xef\xbb\xbf",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"{",
    b"[",
    b"]",
    b"}",
    b":",
    b",",
    b"-",
    b"&",
    b"*",
    b"!",
    b"'",
    b"\"",
    b"\\",
    b"\n",
    b"  ",
];

#[derive(Clone, Debug)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    MoveLine(usize, usize),
    Indent(usize, usize),
    Dedent(usize),
    Number(usize, usize),
    Word(usize, usize),
    Truncate(usize),
    Insert(usize, usize),
    ReplaceByte(usize, usize),
    /// Empties a flow list or mapping: `[batch, 4]` → `[]`.
    EmptyFlow(usize),
    /// Deletes a word or number.
    DropToken(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = 1usize << 20;
    prop_oneof![
        (0..n).prop_map(Mutation::DeleteLine),
        (0..n).prop_map(Mutation::DuplicateLine),
        (0..n, 0..n).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (0..n, 0..n).prop_map(|(a, b)| Mutation::MoveLine(a, b)),
        (0..n, 1usize..5).prop_map(|(a, b)| Mutation::Indent(a, b)),
        (0..n).prop_map(Mutation::Dedent),
        (0..n, 0..NUMBERS.len()).prop_map(|(a, b)| Mutation::Number(a, b)),
        (0..n, 0..WORDS.len()).prop_map(|(a, b)| Mutation::Word(a, b)),
        (0..n).prop_map(Mutation::Truncate),
        (0..n, 0..BYTES.len()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (0..n, 0..BYTES.len()).prop_map(|(a, b)| Mutation::ReplaceByte(a, b)),
        (0..n).prop_map(Mutation::EmptyFlow),
        (0..n).prop_map(Mutation::DropToken),
    ]
}

fn split_lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
}

fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b'\n')
}

/// Byte ranges of tokens matching `is_start`/`is_cont` (numbers or words).
fn tokens(
    b: &[u8],
    is_start: impl Fn(u8) -> bool,
    is_cont: impl Fn(u8) -> bool,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_start(b[i]) && (i == 0 || !is_cont(b[i - 1])) {
            let s = i;
            i += 1;
            while i < b.len() && is_cont(b[i]) {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(src: &[u8], m: &Mutation) -> Vec<u8> {
    let mut lines = split_lines(src);
    let n = lines.len().max(1);
    match *m {
        Mutation::DeleteLine(a) => {
            if !lines.is_empty() {
                lines.remove(a % n);
            }
            join_lines(&lines)
        }
        Mutation::DuplicateLine(a) => {
            let l = lines[a % n].clone();
            lines.insert(a % n, l);
            join_lines(&lines)
        }
        Mutation::SwapLines(a, b) => {
            lines.swap(a % n, b % n);
            join_lines(&lines)
        }
        Mutation::MoveLine(a, b) => {
            let l = lines.remove(a % n);
            lines.insert(b % lines.len().max(1), l);
            join_lines(&lines)
        }
        Mutation::Indent(a, k) => {
            let l = &mut lines[a % n];
            l.splice(0..0, std::iter::repeat_n(b' ', k));
            join_lines(&lines)
        }
        Mutation::Dedent(a) => {
            let l = &mut lines[a % n];
            let k = l.iter().take_while(|&&c| c == b' ').count().min(2);
            l.drain(..k);
            join_lines(&lines)
        }
        Mutation::Number(a, v) => {
            let nums = tokens(
                src,
                |c| c.is_ascii_digit() || c == b'-',
                |c| c.is_ascii_digit() || c == b'.',
            );
            if nums.is_empty() {
                return src.to_vec();
            }
            let (s, e) = nums[a % nums.len()];
            [&src[..s], NUMBERS[v].as_bytes(), &src[e..]].concat()
        }
        Mutation::Word(a, v) => {
            let words = tokens(
                src,
                |c| c.is_ascii_alphabetic() || c == b'_',
                |c| c.is_ascii_alphanumeric() || c == b'_',
            );
            if words.is_empty() {
                return src.to_vec();
            }
            let (s, e) = words[a % words.len()];
            [&src[..s], WORDS[v].as_bytes(), &src[e..]].concat()
        }
        Mutation::Truncate(a) => src[..a % (src.len() + 1)].to_vec(),
        Mutation::Insert(a, v) => {
            let at = a % (src.len() + 1);
            [&src[..at], BYTES[v], &src[at..]].concat()
        }
        Mutation::EmptyFlow(a) => {
            let opens: Vec<usize> = (0..src.len())
                .filter(|&i| src[i] == b'[' || src[i] == b'{')
                .collect();
            if opens.is_empty() {
                return src.to_vec();
            }
            let s = opens[a % opens.len()];
            let close = if src[s] == b'[' { b']' } else { b'}' };
            let mut depth = 0;
            for (i, &c) in src.iter().enumerate().skip(s) {
                if c == src[s] {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                    if depth == 0 {
                        return [&src[..s + 1], &src[i..]].concat();
                    }
                }
            }
            src.to_vec()
        }
        Mutation::DropToken(a) => {
            let toks = tokens(
                src,
                |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-',
                |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.',
            );
            if toks.is_empty() {
                return src.to_vec();
            }
            let (s, e) = toks[a % toks.len()];
            [&src[..s], &src[e..]].concat()
        }
        Mutation::ReplaceByte(a, v) => {
            if src.is_empty() {
                return BYTES[v].to_vec();
            }
            let at = a % src.len();
            [&src[..at], BYTES[v], &src[at + 1..]].concat()
        }
    }
}

/// Longest a check of a mutated spec may take. They take milliseconds; a hang is the
/// thing being tested for.
const CHECK_DEADLINE: Duration = Duration::from_secs(20);

fn temp_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "kiln-props-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Checks `bytes` as a file, on a thread of its own (a panic there, or no answer by
/// the deadline, fails the test), and checks that the answer is consistent.
fn check_mutant(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let path = temp_path();
    std::fs::write(&path, &bytes).expect("write a temp spec");
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::Builder::new()
        .name("check".into())
        .spawn(move || {
            let r = kiln::Model::from_path(&p);
            let out = match r {
                Ok(m) => {
                    let summary = kiln::summary::render(&m.graph);
                    let line = kiln::summary::one_line(&m.graph);
                    let warnings = m.render_warnings(false);
                    Ok((summary, line, warnings))
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(out);
        })
        .expect("spawn a checking thread");
    let answer = rx.recv_timeout(CHECK_DEADLINE);
    let _ = std::fs::remove_file(&path);
    let shown = String::from_utf8_lossy(&bytes).into_owned();
    let answer = match answer {
        Ok(a) => a,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(TestCaseError::fail(format!(
                "checking took more than {CHECK_DEADLINE:?}:\n{shown}"
            )));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(TestCaseError::fail(format!("checking panicked:\n{shown}")));
        }
    };
    match answer {
        Ok((summary, line, _)) => {
            prop_assert!(summary.contains("Total params:"));
            prop_assert!(line.starts_with("ok: "));
        }
        Err(other) if !matches!(other, kiln::Error::Spec(_)) => {
            return Err(TestCaseError::fail(format!(
                "an existing file failed other than as a spec error ({other}):\n{shown}"
            )));
        }
        Err(e) => {
            let kiln::Error::Spec(e) = e else {
                unreachable!("handled above")
            };
            prop_assert!(
                e.diagnostics.iter().any(|d| d.is_error()),
                "rejected without an error:\n{shown}"
            );
            for d in &e.diagnostics {
                prop_assert!(d.code.len() == 5, "code {:?}", d.code);
                prop_assert!(!d.message.is_empty());
                for l in &d.labels {
                    prop_assert!(
                        l.span.start <= l.span.end && l.span.end <= e.source.len(),
                        "{} label {:?} outside the {}-byte text:\n{shown}",
                        d.code,
                        l.span,
                        e.source.len()
                    );
                    prop_assert!(
                        e.source.is_char_boundary(l.span.start)
                            && e.source.is_char_boundary(l.span.end),
                        "{} label {:?} splits a character:\n{shown}",
                        d.code,
                        l.span
                    );
                }
            }
            let rendered = e.render(false);
            for d in &e.diagnostics {
                prop_assert!(rendered.contains(d.code), "{} not rendered", d.code);
            }
            let json: serde_json::Value = match serde_json::from_str(&e.to_json()) {
                Ok(v) => v,
                Err(err) => {
                    return Err(TestCaseError::fail(format!(
                        "invalid JSON ({err}) for:\n{shown}"
                    )));
                }
            };
            prop_assert_eq!(&json["valid"], false);
            prop_assert_eq!(
                json["diagnostics"].as_array().map(Vec::len),
                Some(e.diagnostics.len())
            );
        }
    }
    Ok(())
}

fn shipped_specs() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut specs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("specs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("read a spec"),
            )
        })
        .collect();
    specs.sort();
    specs
}

proptest! {
    #![proptest_config(Config { cases: 1500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn mutated_shipped_specs_never_crash(which in any::<usize>(), ms in prop::collection::vec(mutation(), 1..12)) {
        let specs = shipped_specs();
        let (_, src) = &specs[which % specs.len()];
        let mut bytes = src.clone();
        for m in &ms {
            bytes = apply(&bytes, m);
        }
        check_mutant(bytes)?;
    }

    #[test]
    fn mutated_generated_specs_never_crash(g in generated(), ms in prop::collection::vec(mutation(), 1..12)) {
        let mut bytes = g.yaml.into_bytes();
        for m in &ms {
            bytes = apply(&bytes, m);
        }
        check_mutant(bytes)?;
    }
}

proptest! {
    #![proptest_config(Config { cases: 500, failure_persistence: None, ..Config::default() })]

    /// Arbitrary bytes, and arbitrary text, are not specs; they must still be answered.
    #[test]
    fn random_bytes_never_crash(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_mutant(bytes)?;
    }

    #[test]
    fn random_yaml_ish_text_never_crashes(parts in prop::collection::vec(prop::sample::select(WORDS.iter().chain(NUMBERS).copied().chain(["\n", "\n  ", "\n    - ", ": ", ", ", "[", "]", "{", "}"]).collect::<Vec<&str>>()), 0..80)) {
        check_mutant(parts.concat().into_bytes())?;
    }
}

/// The shipped specs themselves pass through the same consistency checks.
#[test]
fn shipped_specs_check_clean() {
    for (name, bytes) in shipped_specs() {
        let m = kiln::Model::from_source(std::str::from_utf8(&bytes).expect("UTF-8"), "s", &name);
        assert!(
            m.is_ok(),
            "{name}: {}",
            m.err().map(|e| e.to_string()).unwrap_or_default()
        );
        check_mutant(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
