//! Windowed primitives in the plan: convolutions (forward and both gradients) as loops
//! that pad and gather patches around one GEMM, with the input gradient a scatter loop
//! into a padded buffer; depthwise convolutions (one group per input channel) and
//! pooling as windowed reduction loops (their input gradients scatters). Applies when
//! there is one group (or one per channel) and every size but the batch is known;
//! otherwise (and for max pooling's gradient) the node stays a runtime routine.

use super::*;

/// A window's sizes (1-D lifted to 2-D with a height of 1): input `hw`, output `ohw`,
/// kernel or pool window `k`, strides, dilation, padding before (`lo`) and the padded
/// extent the windows reach; channels `ch` and output channels `f`.
struct WinGeo {
    rank: usize,
    batch: Dim,
    hw: [i64; 2],
    ohw: [i64; 2],
    k: [i64; 2],
    st: [i64; 2],
    dl: [i64; 2],
    lo: [i64; 2],
    padded: [i64; 2],
    ch: i64,
    f: i64,
}

impl WinGeo {
    fn needs_pad(&self) -> bool {
        self.padded != self.hw || self.lo != [0, 0]
    }
    fn padded_shape(&self) -> Vec<Dim> {
        let k = Dim::konst;
        vec![
            self.batch.clone(),
            k(self.padded[0]),
            k(self.padded[1]),
            k(self.ch),
        ]
    }
    /// `[batch, oh, ow, kh, kw, c]`.
    fn window_shape(&self) -> Vec<Dim> {
        let k = Dim::konst;
        vec![
            self.batch.clone(),
            k(self.ohw[0]),
            k(self.ohw[1]),
            k(self.k[0]),
            k(self.k[1]),
            k(self.ch),
        ]
    }
    /// Where the unpadded input starts in the padded layout.
    fn interior_offset(&self) -> Dim {
        Dim::konst((self.lo[0] * self.padded[1] + self.lo[1]) * self.ch)
    }
    fn rows(&self) -> Dim {
        self.batch
            .mul(&Dim::konst(self.ohw[0] * self.ohw[1]))
            .unwrap_or_else(|_| Dim::konst(i64::MAX))
    }
    fn cols(&self) -> i64 {
        self.k[0] * self.k[1] * self.ch
    }
}

impl Access {
    /// The same 2-D view with its axes swapped.
    fn transposed(mut self) -> Access {
        self.strides.swap(0, 1);
        self.known.swap(0, 1);
        self
    }
}

impl Builder<'_> {
    /// Whether node `id` runs as generated loops here (else a runtime routine).
    pub(super) fn windowed(&self, id: Id) -> bool {
        self.win_geo(id).is_some()
    }

    /// The geometry of a windowed node when it can run as generated loops: one group
    /// (or one per input channel, depthwise), and every size but the batch known. Convolutions (forward or either gradient)
    /// and pooling (forward, and the average's gradient).
    fn win_geo(&self, id: Id) -> Option<WinGeo> {
        let n = &self.f.nodes[id];
        let shape = |i: usize| &self.f.nodes[n.args[i]].ty.shape;
        let c = |d: &Dim| d.as_const();
        let (xs, ys, k, st, dl, padding, f): (_, _, Vec<i64>, _, _, _, _) = match &n.op {
            Op::Conv(a) | Op::ConvInputGrad(a) | Op::ConvKernelGrad(a) => {
                let (xs, ks, ys) = match &n.op {
                    Op::Conv(_) => (shape(0), shape(1), &n.ty.shape),
                    Op::ConvInputGrad(_) => (&n.ty.shape, shape(1), shape(0)),
                    _ => (shape(0), &n.ty.shape, shape(1)),
                };
                let r = ks.len();
                if r != xs.len() || r < 3 {
                    return None;
                }
                // One group, or depthwise: one group per input channel.
                let (cin, kin) = (c(xs.last()?)?, c(&ks[r - 2])?);
                let one = a.groups == 1 && kin == cin;
                let depthwise = a.groups > 1 && a.groups == cin && kin == 1;
                if !(one || depthwise) {
                    return None;
                }
                let k = ks[..r - 2].iter().map(c).collect::<Option<_>>()?;
                let f = c(&ks[r - 1])?;
                (xs, ys, k, &a.strides, a.dilation.clone(), a.padding, f)
            }
            Op::Pool { attrs, .. } | Op::PoolGrad { attrs, .. } => {
                let ys = match &n.op {
                    Op::Pool { .. } => &n.ty.shape,
                    _ => shape(1),
                };
                let ones = vec![1; attrs.window.len()];
                let ch = c(shape(0).last()?)?;
                (
                    shape(0),
                    ys,
                    attrs.window.clone(),
                    &attrs.strides,
                    ones,
                    attrs.padding,
                    ch,
                )
            }
            _ => return None,
        };
        let rank = xs.len();
        if !(rank == 3 || rank == 4) || ys.len() != rank || k.len() != rank - 2 {
            return None;
        }
        // Lift 1-D to 2-D with a height of 1.
        let sp = |v: &[Dim]| -> Option<[i64; 2]> {
            Some(if rank == 3 {
                [1, c(&v[1])?]
            } else {
                [c(&v[1])?, c(&v[2])?]
            })
        };
        let (hw, ohw) = (sp(xs)?, sp(ys)?);
        let lift = |v: &[i64]| {
            if v.len() == 1 {
                [1, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let (k2, st, dl) = (lift(&k), lift(st), lift(&dl));
        let ch = c(&xs[rank - 1])?;
        if c(&ys[rank - 1])? != f {
            return None;
        }
        let mut lo = [0i64; 2];
        let mut padded = [0i64; 2];
        for a in 0..2 {
            let (l, h) = if rank == 3 && a == 0 {
                (0, 0)
            } else {
                padding.amounts(hw[a], k2[a], st[a], dl[a])
            };
            lo[a] = l;
            let reach = (ohw[a] - 1) * st[a] + (k2[a] - 1) * dl[a] + 1;
            padded[a] = (hw[a] + l + h).max(reach);
        }
        Some(WinGeo {
            rank,
            batch: xs[0].clone(),
            hw,
            ohw,
            k: k2,
            st,
            dl,
            lo,
            padded,
            ch,
            f,
        })
    }

    /// The window's view, as `[batch, oh, ow, kh, kw, c]`, of a `[batch, h, w, c]`
    /// layout with strides `s`.
    fn window_strides(g: &WinGeo, s: &[Dim]) -> Vec<Dim> {
        let sc = |d: &Dim, m: i64| d.scale(m).unwrap_or_else(|_| Dim::konst(i64::MAX));
        vec![
            s[0].clone(),
            sc(&s[1], g.st[0]),
            sc(&s[2], g.st[1]),
            sc(&s[1], g.dl[0]),
            sc(&s[2], g.dl[1]),
            s[3].clone(),
        ]
    }

    /// The node `x` (the window's input) as `(buffer, offset, [batch, hp, wp, c]
    /// strides)` that every window reads in bounds: `x` itself without padding, else a
    /// copy into a buffer filled with `fill`.
    fn padded_source(&mut self, g: &WinGeo, x: Id, fill: f64) -> (BufId, Dim, Vec<Dim>) {
        let k = Dim::konst;
        let xa = self.mem(x);
        let (off, s) = self.dims_of(&xa);
        // A height-1 axis for 1-D.
        let s4 = if g.rank == 3 {
            vec![s[0].clone(), k(0), s[1].clone(), s[2].clone()]
        } else {
            s
        };
        if !g.needs_pad() {
            return (xa.buf, off, s4);
        }
        let pshape = g.padded_shape();
        let prm = row_major(&pshape);
        let pb = self.new_arena(&pshape);
        let all = self.contiguous(pb, &pshape);
        self.push_loop(&pshape, |space| LoopKernel {
            space,
            loads: vec![],
            expr: vec![Expr::Const(fill)],
            sink: Sink::Store(all),
            nodes: vec![],
            epilogue: None,
        });
        let ishape = vec![g.batch.clone(), k(g.hw[0]), k(g.hw[1]), k(g.ch)];
        let interior = self.access(pb, &g.interior_offset(), &prm);
        let src = self.access(xa.buf, &off, &s4);
        self.copy_loop(&ishape, src, interior, vec![]);
        (pb, k(0), prm)
    }

    /// A new zero-filled padded buffer that `body` scatters into (a sum over every
    /// window tap: a reduction sink, so it starts from zeros; each batch entry writes
    /// only its own part, so the loop splits across cores by batch). Returns the view
    /// of its interior, which is the gradient with respect to the window's input.
    fn scatter(&mut self, g: &WinGeo, id: Id, loads: Vec<Access>, expr: Vec<Expr>) -> Val {
        let pshape = g.padded_shape();
        let prm = row_major(&pshape);
        let dxp = self.new_arena(&pshape);
        let sink = self.access(dxp, &Dim::konst(0), &Self::window_strides(g, &prm));
        self.push_loop(&g.window_shape(), |space| LoopKernel {
            space,
            loads,
            expr,
            sink: Sink::Reduce(ReduceOp::Sum, sink),
            nodes: vec![id],
            epilogue: None,
        });
        let mut s = prm;
        if g.rank == 3 {
            s.remove(1);
        }
        Val::Mem(self.access(dxp, &g.interior_offset(), &s))
    }

    /// Gathers the patch matrix `[batch·oh·ow, kh·kw·c]` of node `x`.
    fn patches(&mut self, g: &WinGeo, x: Id) -> Access {
        let key = (
            x,
            [
                g.k[0],
                g.k[1],
                g.st[0],
                g.st[1],
                g.dl[0],
                g.dl[1],
                g.lo[0],
                g.lo[1],
                g.padded[0],
                g.padded[1],
            ],
        );
        if let Some(a) = self.patch_cache.get(&key) {
            return a.clone();
        }
        let a = self.gather_patches(g, x);
        self.patch_cache.insert(key, a.clone());
        a
    }

    fn gather_patches(&mut self, g: &WinGeo, x: Id) -> Access {
        let (buf, off, strides) = self.padded_source(g, x, 0.0);
        let view = self.access(buf, &off, &Self::window_strides(g, &strides));
        let wshape = g.window_shape();
        let pbuf = self.new_arena(&wshape);
        let out = self.contiguous(pbuf, &wshape);
        self.copy_loop(&wshape, view, out, vec![]);
        self.access(pbuf, &Dim::konst(0), &[Dim::konst(g.cols()), Dim::konst(1)])
    }

    /// Convolution and its gradients as loops and one matrix product (channels last;
    /// `P` is the patch matrix `[batch·oh·ow, kh·kw·c]`):
    /// - forward: pad `x` (a zero-filled copy, when there is padding), gather `P` with
    ///   a loop over a strided view of it, then `y = P · K`;
    /// - kernel gradient: the same `P`, then `dK = Pᵀ · dy`;
    /// - input gradient: `dP = dy · Kᵀ`, then a loop adds every patch element into a
    ///   zero-filled padded `dx`, whose interior is the result (a view).
    pub(super) fn conv(&mut self, id: Id) -> Val {
        let g = self.win_geo(id).expect("checked by the caller");
        let node = self.f.nodes[id].clone();
        if matches!(&node.op, Op::Conv(a) | Op::ConvInputGrad(a) | Op::ConvKernelGrad(a) if a.groups > 1)
        {
            return self.depthwise(&g, id);
        }
        let rows = g.rows();
        let (cols, fdim) = (Dim::konst(g.cols()), Dim::konst(g.f));
        match &node.op {
            Op::Conv(_) => {
                let p = self.patches(&g, node.args[0]);
                let kv = self.matrix(node.args[1], &fdim);
                let c = self.gemm2(id, p, kv, &rows, &cols, &fdim);
                Val::Mem(self.contiguous(c, &node.ty.shape))
            }
            Op::ConvKernelGrad(_) => {
                let p = self.patches(&g, node.args[0]).transposed();
                let dy = self.matrix(node.args[1], &fdim);
                let c = self.gemm2(id, p, dy, &cols, &rows, &fdim);
                Val::Mem(self.contiguous(c, &node.ty.shape))
            }
            _ => {
                let dy = self.matrix(node.args[0], &fdim);
                let kt = self.matrix(node.args[1], &fdim).transposed();
                let dp = self.gemm2(id, dy, kt, &rows, &fdim, &cols);
                let src = self.contiguous(dp, &g.window_shape());
                self.scatter(&g, id, vec![src], vec![Expr::Load(0)])
            }
        }
    }

    /// A depthwise convolution (one group per input channel, `m` filters each: output
    /// channel `c·m + j`) and its gradients as windowed loops over
    /// `[batch, oh, ow, kh, kw, c, j]`, without a patch matrix:
    /// - forward: `y[.., c·m + j] = Σ_{kh, kw} x_window[.., kh, kw, c] · K[kh, kw, c·m + j]`;
    /// - input gradient: `dy · K` summed into a zero-filled padded `dx` over the windows
    ///   and `j` (its interior, a view, is the result);
    /// - kernel gradient: `x_window · dy` summed over batch and output positions.
    fn depthwise(&mut self, g: &WinGeo, id: Id) -> Val {
        let node = self.f.nodes[id].clone();
        let k = Dim::konst;
        let m = g.f / g.ch;
        let mut space = g.window_shape();
        space.push(k(m));
        let scale = |d: &Dim| d.scale(m).unwrap_or_else(|_| k(i64::MAX));
        // A `[batch, oh, ow, c·m + j]` layout's strides over the space.
        let over_outputs = |s: &[Dim]| -> Vec<Dim> {
            let s4 = if g.rank == 3 {
                vec![s[0].clone(), k(0), s[1].clone(), s[2].clone()]
            } else {
                s.to_vec()
            };
            vec![
                s4[0].clone(),
                s4[1].clone(),
                s4[2].clone(),
                k(0),
                k(0),
                scale(&s4[3]),
                s4[3].clone(),
            ]
        };
        // A `[kh, (kw,) 1, c·m + j]` kernel layout's strides over the space.
        let over_kernel = |s: &[Dim]| -> Vec<Dim> {
            let r = s.len();
            let kh = if g.rank == 3 { k(0) } else { s[0].clone() };
            let last = s[r - 1].clone();
            vec![k(0), k(0), k(0), kh, s[r - 3].clone(), scale(&last), last]
        };
        let window = |this: &mut Self, x: Id| -> Access {
            let (buf, off, strides) = this.padded_source(g, x, 0.0);
            let mut w = Self::window_strides(g, &strides);
            w.push(k(0));
            this.access(buf, &off, &w)
        };
        let view = |this: &mut Self, x: Id, f: &dyn Fn(&[Dim]) -> Vec<Dim>| -> Access {
            let a = this.mem(x);
            let (off, s) = this.dims_of(&a);
            this.access(a.buf, &off, &f(&s))
        };
        let product = vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Binary(Binary::Mul, 0, 1),
        ];
        let (loads, out, sink, result): (Vec<Access>, BufId, Vec<Dim>, Option<Access>) =
            match &node.op {
                Op::Conv(_) => {
                    let x = window(self, node.args[0]);
                    let kv = view(self, node.args[1], &over_kernel);
                    let out = self.new_arena(&node.ty.shape);
                    (
                        vec![x, kv],
                        out,
                        over_outputs(&row_major(&node.ty.shape)),
                        None,
                    )
                }
                Op::ConvInputGrad(_) => {
                    let dy = view(self, node.args[0], &over_outputs);
                    let kv = view(self, node.args[1], &over_kernel);
                    let pshape = g.padded_shape();
                    let prm = row_major(&pshape);
                    let out = self.new_arena(&pshape);
                    let mut sink = Self::window_strides(g, &prm);
                    sink.push(k(0));
                    let mut s = prm;
                    if g.rank == 3 {
                        s.remove(1);
                    }
                    let interior = self.access(out, &g.interior_offset(), &s);
                    (vec![dy, kv], out, sink, Some(interior))
                }
                _ => {
                    let x = window(self, node.args[0]);
                    let dy = view(self, node.args[1], &over_outputs);
                    let out = self.new_arena(&node.ty.shape);
                    (
                        vec![x, dy],
                        out,
                        over_kernel(&row_major(&node.ty.shape)),
                        None,
                    )
                }
            };
        let sink = self.access(out, &k(0), &sink);
        self.push_loop(&space, |space| LoopKernel {
            space,
            loads,
            expr: product,
            sink: Sink::Reduce(ReduceOp::Sum, sink),
            nodes: vec![id],
            epilogue: None,
        });
        Val::Mem(result.unwrap_or_else(|| self.contiguous(out, &node.ty.shape)))
    }

    /// The number of in-bounds taps of the window at output `(Index(1), Index(2))` as
    /// an expression (average pooling divides by it), appended to `expr`.
    fn tap_count(g: &WinGeo, expr: &mut Vec<Expr>) -> usize {
        let mut per_axis = Vec::new();
        for a in 0..2 {
            // start = o·s − lo; in bounds: min(start + k, len) − max(start, 0).
            let o = push_expr(expr, Expr::Index(1 + a));
            let s = push_expr(expr, Expr::Const(g.st[a] as f64));
            let os = push_expr(expr, Expr::Binary(Binary::Mul, o, s));
            let lo = push_expr(expr, Expr::Const(-g.lo[a] as f64));
            let start = push_expr(expr, Expr::Binary(Binary::Add, os, lo));
            let k = push_expr(expr, Expr::Const(g.k[a] as f64));
            let end = push_expr(expr, Expr::Binary(Binary::Add, start, k));
            let len = push_expr(expr, Expr::Const(g.hw[a] as f64));
            let end = push_expr(expr, Expr::Binary(Binary::Min, end, len));
            let zero = push_expr(expr, Expr::Const(0.0));
            let start = push_expr(expr, Expr::Binary(Binary::Max, start, zero));
            per_axis.push(push_expr(expr, Expr::Binary(Binary::Sub, end, start)));
        }
        push_expr(expr, Expr::Binary(Binary::Mul, per_axis[0], per_axis[1]))
    }

    /// Pooling as generated loops: the window's maximum or sum (over a padded copy
    /// filled with −∞ or zeros), the average dividing by the number of in-bounds taps;
    /// the average's gradient scatters `dy / taps` over the windows. (The max's
    /// gradient, which must pick the first maximum of each window, is a routine.)
    pub(super) fn pool(&mut self, id: Id) -> Val {
        let g = self.win_geo(id).expect("checked by the caller");
        let node = self.f.nodes[id].clone();
        let k = Dim::konst;
        match &node.op {
            Op::Pool { kind, .. } => {
                let fill = if *kind == PoolKind::Max {
                    f64::NEG_INFINITY
                } else {
                    0.0
                };
                let (buf, off, strides) = self.padded_source(&g, node.args[0], fill);
                let view = self.access(buf, &off, &Self::window_strides(&g, &strides));
                let oshape = vec![g.batch.clone(), k(g.ohw[0]), k(g.ohw[1]), k(g.ch)];
                let orm = row_major(&oshape);
                let out = self.new_arena(&oshape);
                let sink = self.access(
                    out,
                    &k(0),
                    &[
                        orm[0].clone(),
                        orm[1].clone(),
                        orm[2].clone(),
                        k(0),
                        k(0),
                        k(1),
                    ],
                );
                let op = if *kind == PoolKind::Max {
                    ReduceOp::Max
                } else {
                    ReduceOp::Sum
                };
                self.push_loop(&g.window_shape(), |space| LoopKernel {
                    space,
                    loads: vec![view],
                    expr: vec![Expr::Load(0)],
                    sink: Sink::Reduce(op, sink),
                    nodes: vec![id],
                    epilogue: None,
                });
                if *kind == PoolKind::Avg {
                    let avg = self.new_arena(&oshape);
                    let store = self.contiguous(avg, &oshape);
                    let sum = self.contiguous(out, &oshape);
                    let mut expr = vec![Expr::Load(0)];
                    let count = Self::tap_count(&g, &mut expr);
                    push_expr(&mut expr, Expr::Binary(Binary::Div, 0, count));
                    self.push_loop(&oshape, |space| LoopKernel {
                        space,
                        loads: vec![sum],
                        expr,
                        sink: Sink::Store(store),
                        nodes: vec![],
                        epilogue: None,
                    });
                    return Val::Mem(self.contiguous(avg, &node.ty.shape));
                }
                Val::Mem(self.contiguous(out, &node.ty.shape))
            }
            _ => {
                // Average pooling's gradient: dy[b, oh, ow, c] / taps, read once per
                // tap of the window (strides 0 over kh, kw).
                let dy = self.matrix(node.args[1], &k(g.ch));
                let (off, _) = self.dims_of(&dy);
                let oshape = vec![g.batch.clone(), k(g.ohw[0]), k(g.ohw[1]), k(g.ch)];
                let orm = row_major(&oshape);
                let src = self.access(
                    dy.buf,
                    &off,
                    &[
                        orm[0].clone(),
                        orm[1].clone(),
                        orm[2].clone(),
                        k(0),
                        k(0),
                        k(1),
                    ],
                );
                let mut expr = vec![Expr::Load(0)];
                let count = Self::tap_count(&g, &mut expr);
                push_expr(&mut expr, Expr::Binary(Binary::Div, 0, count));
                self.scatter(&g, id, vec![src], expr)
            }
        }
    }
}
