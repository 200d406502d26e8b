//! `Gen`'s layer-emitting methods: one per layer family, each emitting a layer that
//! applies to the given tensor and predicting its shape and parameter count from
//! Keras's formulas.

use super::{ACTIVATIONS, Choices, D, Gen};

impl Gen {
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

    pub(super) fn conv1d(&mut self, i: usize) -> usize {
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

    pub(super) fn conv2d(&mut self, i: usize) -> usize {
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

    pub(super) fn pool(&mut self, i: usize) -> usize {
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
        // Keras's average pooling has no default pool size.
        let kind = *self.c.pick(&["max", "average"]);
        if kind == "average" || ps.iter().any(|&p| p != 2) || ps.len() != n || self.c.chance(50) {
            args.push(format!("pool_size: {}", list(&ps)));
        }
        if ss != ps {
            args.push(format!("strides: {}", list(&ss)));
        }
        if padding == "same" {
            args.push("padding: same".into());
        }
        // Max pooling's default pool size is 2; the default strides are the pool size.
        let ty = format!("{kind}_pooling{n}d");
        self.layer(&ty, args, &[i], out, 0, 0)
    }

    pub(super) fn global_pool(&mut self, i: usize) -> usize {
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

    pub(super) fn batch_norm(&mut self, i: usize) -> usize {
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

    pub(super) fn layer_norm(&mut self, i: usize) -> usize {
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

    pub(super) fn reshape(&mut self, i: usize) -> usize {
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

    pub(super) fn permute(&mut self, i: usize) -> usize {
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

    pub(super) fn rnn(&mut self, i: usize) -> usize {
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
    pub(super) fn merge(&mut self, i: usize) -> usize {
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
    pub(super) fn concat(&mut self, i: usize) -> usize {
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

    pub(super) fn attention(&mut self, i: usize) -> usize {
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
    pub(super) fn skip(&mut self, i: usize) -> usize {
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
    pub(super) fn second_input(&mut self, i: usize) -> usize {
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
}
