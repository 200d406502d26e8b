//! The spec generator: an independent model of shapes and Keras parameter counts,
//! and `Gen`, which writes a random valid spec as YAML text and predicts every
//! layer's name, output shape and parameter count. The layer-emitting methods are
//! in `layers`.

mod layers;

use std::collections::HashMap;

use proptest::prelude::*;

// ---------------------------------------------------------------------------------
// An independent model of shapes and Keras parameter counts

/// A dimension as the generator tracks it: the batch symbol, the sequence symbol, or a
/// known size.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum D {
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

pub(super) fn shape_text(s: &[D]) -> String {
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
pub(super) struct Expect {
    pub(super) name: String,
    pub(super) shape: Vec<D>,
    pub(super) params: i64,
    pub(super) non_trainable: i64,
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
pub(super) struct Generated {
    pub(super) yaml: String,
    pub(super) expect: Vec<Expect>,
}

pub(super) fn generate(xs: Vec<u32>, steps: usize) -> Generated {
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

pub(super) fn generated() -> impl Strategy<Value = Generated> {
    (prop::collection::vec(any::<u32>(), 0..160), 1usize..14)
        .prop_map(|(xs, steps)| generate(xs, steps))
}
