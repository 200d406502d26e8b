//! Convolutions, transposed convolutions and pooling: the IR's channels-last window
//! operations as ONNX's channels-first ones between two transposes, with Keras's
//! kernels `[k…, in, out]` transposed to ONNX's `[out, in, k…]`.

use super::{Emitter, Result, int, ints, refuse, string};
use crate::dim::Dim;
use crate::ir;

impl Emitter {
    /// Channels last → channels first, and back.
    fn channels_first(&mut self, x: &str, rank: usize) -> String {
        let mut perm = vec![0, rank as i64 - 1];
        perm.extend(1..rank as i64 - 1);
        self.transpose(x, &perm)
    }

    fn channels_last(&mut self, x: &str, rank: usize) -> String {
        let mut perm = vec![0];
        perm.extend(2..rank as i64);
        perm.push(1);
        self.transpose(x, &perm)
    }

    /// A convolution (`transposed`: the input gradient of one, Keras's transposed
    /// convolution) as ONNX's `Conv` or `ConvTranspose`.
    pub(super) fn conv(
        &mut self,
        a: &[&str],
        tys: &[&ir::Type],
        out: &ir::Type,
        c: &ir::ConvAttrs,
        transposed: bool,
    ) -> Result<String> {
        let rank = tys[0].rank();
        let n = rank - 2;
        let ksize: Vec<i64> = match tys[1].shape[..n]
            .iter()
            .map(Dim::as_const)
            .collect::<Option<Vec<i64>>>()
        {
            Some(k) => k,
            None => return refuse("a convolution kernel of symbolic size"),
        };
        let x = self.channels_first(a[0], rank);
        // Keras [k…, in, out] → ONNX [out, in, k…] (for ConvTranspose, [in, out, k…] of
        // the transposed convolution, which is the same permutation).
        let mut perm = vec![n as i64 + 1, n as i64];
        perm.extend(0..n as i64);
        let w = self.transpose(a[1], &perm);
        let mut attrs = vec![
            ints("kernel_shape", &ksize),
            ints("strides", &c.strides),
            ints("dilations", &c.dilation),
            int("group", c.groups),
        ];
        let span: Vec<i64> = (0..n).map(|i| (ksize[i] - 1) * c.dilation[i] + 1).collect();
        let y = if !transposed {
            match c.padding {
                ir::Padding::Valid => attrs.push(ints("pads", &vec![0; 2 * n])),
                // With stride 1 the padding does not depend on the input's size: write
                // it out (runtimes refuse SAME_UPPER with dilation).
                ir::Padding::Same if c.strides.iter().all(|&s| s == 1) => {
                    let mut pads: Vec<i64> = span.iter().map(|s| (s - 1) / 2).collect();
                    pads.extend(span.iter().map(|s| (s - 1) - (s - 1) / 2));
                    attrs.push(ints("pads", &pads));
                }
                ir::Padding::Same => attrs.push(string("auto_pad", "SAME_UPPER")),
                ir::Padding::Causal => {
                    let mut pads: Vec<i64> = span.iter().map(|s| s - 1).collect();
                    pads.extend(std::iter::repeat_n(0, n));
                    attrs.push(ints("pads", &pads));
                }
            }
            self.node("Conv", &[&x, &w], attrs)
        } else {
            let mut begin = Vec::with_capacity(n);
            let mut end = Vec::with_capacity(n);
            let mut extra = Vec::with_capacity(n);
            for (i, &k) in span.iter().enumerate() {
                let s = c.strides[i];
                let total = match c.padding {
                    ir::Padding::Valid => 0,
                    ir::Padding::Same => (k - s).max(0),
                    ir::Padding::Causal => {
                        return refuse("a transposed convolution with causal padding");
                    }
                };
                // ONNX: out = s·(in − 1) + output_padding + k − pads; the IR's type
                // gives `out`, which must exceed s·(in − 1) by a constant.
                let base = tys[0].shape[1 + i]
                    .add_const(-1)
                    .and_then(|d| d.scale(s))
                    .ok()
                    .and_then(|d| out.shape[1 + i].sub(&d).ok())
                    .and_then(|d| d.as_const());
                let Some(base) = base else {
                    return refuse(
                        "a transposed convolution whose output size ONNX cannot express",
                    );
                };
                let op = base - k + total;
                if op < 0 || (op >= s && op >= c.dilation[i]) {
                    return refuse(
                        "a transposed convolution whose output padding ONNX cannot express",
                    );
                }
                begin.push(total / 2);
                end.push(total - total / 2);
                extra.push(op);
            }
            begin.extend(end);
            attrs.push(ints("pads", &begin));
            attrs.push(ints("output_padding", &extra));
            self.node("ConvTranspose", &[&x, &w], attrs)
        };
        Ok(self.channels_last(&y, rank))
    }

    pub(super) fn pool(
        &mut self,
        x: &str,
        xt: &ir::Type,
        kind: ir::PoolKind,
        w: &ir::WindowAttrs,
    ) -> Result<String> {
        let rank = xt.rank();
        let n = rank - 2;
        let x = self.channels_first(x, rank);
        let mut attrs = vec![ints("kernel_shape", &w.window), ints("strides", &w.strides)];
        match w.padding {
            ir::Padding::Valid => attrs.push(ints("pads", &vec![0; 2 * n])),
            ir::Padding::Same => attrs.push(string("auto_pad", "SAME_UPPER")),
            ir::Padding::Causal => return refuse("pooling with causal padding"),
        }
        let y = match kind {
            ir::PoolKind::Max => self.node("MaxPool", &[&x], attrs),
            ir::PoolKind::Avg => {
                attrs.push(int("count_include_pad", 0));
                self.node("AveragePool", &[&x], attrs)
            }
        };
        Ok(self.channels_last(&y, rank))
    }
}
