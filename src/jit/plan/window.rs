//! Windowed primitives in the plan, over any spatial rank (1-D, 2-D and 3-D windows
//! alike): convolutions (forward and both gradients) as loops that pad and gather
//! patches around one GEMM, with the input gradient a scatter loop into a padded
//! buffer; grouped convolutions (depthwise included) and pooling as windowed reduction
//! loops (their input gradients scatters). Applies when every size but the batch is
//! known; otherwise (and for max pooling's gradient, a team routine) the node stays a
//! runtime call.

use super::*;

/// A window's sizes over its `n` spatial axes: input `hw`, output `ohw`, kernel or
/// pool window `k`, strides, dilation, padding before (`lo`) and the padded extent the
/// windows reach; channels `ch`, output channels `f` and convolution `groups`.
struct WinGeo {
    batch: Dim,
    hw: Vec<i64>,
    ohw: Vec<i64>,
    k: Vec<i64>,
    st: Vec<i64>,
    dl: Vec<i64>,
    lo: Vec<i64>,
    padded: Vec<i64>,
    ch: i64,
    f: i64,
    groups: i64,
}

/// `d · m`, saturating (an overflowing size fails when the plan's sizes are evaluated).
fn scaled(d: &Dim, m: i64) -> Dim {
    d.scale(m).unwrap_or_else(|_| Dim::konst(i64::MAX))
}

impl WinGeo {
    /// The number of spatial axes.
    fn n(&self) -> usize {
        self.hw.len()
    }
    fn needs_pad(&self) -> bool {
        self.padded != self.hw || self.lo.iter().any(|&l| l != 0)
    }
    /// `[batch, sizes…, channels]`.
    fn shape(&self, sizes: &[i64], channels: i64) -> Vec<Dim> {
        let mut s = vec![self.batch.clone()];
        s.extend(sizes.iter().map(|&v| Dim::konst(v)));
        s.push(Dim::konst(channels));
        s
    }
    fn padded_shape(&self) -> Vec<Dim> {
        self.shape(&self.padded, self.ch)
    }
    /// `[batch, o…, k…, c]`.
    fn window_shape(&self) -> Vec<Dim> {
        let mut both = self.ohw.clone();
        both.extend(&self.k);
        self.shape(&both, self.ch)
    }
    /// Where the unpadded input starts in the padded layout.
    fn interior_offset(&self) -> Dim {
        let at = self
            .lo
            .iter()
            .zip(&self.padded)
            .fold(0, |acc, (&l, &p)| acc * p + l);
        Dim::konst(at * self.ch)
    }
    fn rows(&self) -> Dim {
        self.batch
            .mul(&Dim::konst(self.ohw.iter().product()))
            .unwrap_or_else(|_| Dim::konst(i64::MAX))
    }
    /// Columns of one group's patch matrix: `k…·cg`.
    fn cols(&self) -> i64 {
        self.k.iter().product::<i64>() * (self.ch / self.groups)
    }
    /// Whether the convolution runs as one product per group: one group, or groups
    /// with enough input channels each (8: fewer make the patch gather's inner runs
    /// too short; measured) and few enough groups that GEMM pays for the copies; else
    /// windowed loops (`grouped`), as for depthwise convolutions.
    fn products(&self) -> bool {
        self.groups == 1 || (self.ch / self.groups >= 8 && self.groups <= 16)
    }
    /// `[batch, o…, k…, c]` with the channels split into `[G, cg]` when grouped.
    fn group_window_shape(&self) -> Vec<Dim> {
        let cg = Dim::konst(self.ch / self.groups);
        self.group_axes(self.window_shape(), |_| {
            (Dim::konst(self.groups), cg.clone())
        })
    }
    /// Strides over `[batch, o…, k…, c]` with the channel axis (stride `s_c`) split
    /// into `[G, cg]` (strides `s_c·cg`, `s_c`) when grouped.
    fn group_strides(&self, w: Vec<Dim>) -> Vec<Dim> {
        let cg = self.ch / self.groups;
        self.group_axes(w, |c| (scaled(&c, cg), c))
    }
    fn group_axes(&self, mut w: Vec<Dim>, split: impl Fn(Dim) -> (Dim, Dim)) -> Vec<Dim> {
        if self.groups > 1 {
            let c = w.pop().expect("a channel axis");
            let (g, c) = split(c);
            w.extend([g, c]);
        }
        w
    }
    /// The elements of one group's patch matrix, `batch·o…·k…·cg`.
    fn group_len(&self) -> Dim {
        scaled(&self.rows(), self.cols())
    }
    /// Strides of the patch buffer `[G, batch·o…, k…·cg]` over
    /// `group_window_shape` (row-major `[batch, o…, k…, c]` for one group).
    fn patch_strides(&self) -> Vec<Dim> {
        let n = self.n();
        let cg = self.ch / self.groups;
        let after = |v: &[i64], a: usize| v[a + 1..].iter().product::<i64>();
        let (positions, taps) = (after(&self.ohw, 0) * self.ohw[0], self.cols());
        let k = Dim::konst;
        let mut s = vec![k(positions * taps)];
        s.extend((0..n).map(|a| k(after(&self.ohw, a) * taps)));
        s.extend((0..n).map(|a| k(after(&self.k, a) * cg)));
        if self.groups > 1 {
            s.push(self.group_len());
        }
        s.push(k(1));
        s
    }
    /// The window's view, as `[batch, o…, k…, c]`, of a `[batch, p…, c]` layout with
    /// strides `s`.
    fn window_strides(&self, s: &[Dim]) -> Vec<Dim> {
        let n = self.n();
        let mut w = vec![s[0].clone()];
        w.extend((0..n).map(|a| scaled(&s[1 + a], self.st[a])));
        w.extend((0..n).map(|a| scaled(&s[1 + a], self.dl[a])));
        w.push(s[n + 1].clone());
        w
    }
    /// Strides over `[batch, o…, k…, c]` of a `[batch, o…, c]` layout with strides `s`
    /// (0 over the window's taps).
    fn over_outputs(&self, s: &[Dim]) -> Vec<Dim> {
        let n = self.n();
        let mut w = s[..=n].to_vec();
        w.extend((0..n).map(|_| Dim::konst(0)));
        w.push(s[n + 1].clone());
        w
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

    /// The geometry of a windowed node when it can run as generated loops: 1 to 3
    /// spatial axes, groups that divide the channels, and every size but the batch
    /// known. Convolutions (forward or either gradient) and pooling (forward, and the
    /// average's gradient).
    fn win_geo(&self, id: Id) -> Option<WinGeo> {
        let n = &self.f.nodes[id];
        let shape = |i: usize| &self.f.nodes[n.args[i]].ty.shape;
        let c = |d: &Dim| d.as_const();
        let (xs, ys, k, st, dl, padding, f, groups): (_, _, Vec<i64>, _, _, _, _, _) = match &n.op {
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
                // `groups` groups of `kin` input channels each, and of `f / groups`
                // filters each (depthwise: one input channel per group).
                let (cin, kin, f) = (c(xs.last()?)?, c(&ks[r - 2])?, c(&ks[r - 1])?);
                let g = a.groups;
                if g < 1 || kin < 1 || cin != g * kin || f % g != 0 {
                    return None;
                }
                let k = ks[..r - 2].iter().map(c).collect::<Option<_>>()?;
                (xs, ys, k, &a.strides, a.dilation.clone(), a.padding, f, g)
            }
            Op::Pool { attrs, .. } | Op::PoolGrad { attrs, .. } => {
                let ys = match &n.op {
                    Op::Pool { .. } => &n.ty.shape,
                    _ => shape(1),
                };
                let ones = vec![1; attrs.window.len()];
                let ch = c(shape(0).last()?)?;
                let (w, st) = (attrs.window.clone(), &attrs.strides);
                (shape(0), ys, w, st, ones, attrs.padding, ch, 1)
            }
            _ => return None,
        };
        let rank = xs.len();
        let sp = rank.checked_sub(2)?;
        if !(1..=3).contains(&sp) || ys.len() != rank || k.len() != sp {
            return None;
        }
        if st.len() != sp || dl.len() != sp {
            return None;
        }
        let spatial = |v: &[Dim]| -> Option<Vec<i64>> { v[1..=sp].iter().map(c).collect() };
        let (hw, ohw) = (spatial(xs)?, spatial(ys)?);
        let ch = c(&xs[rank - 1])?;
        if c(&ys[rank - 1])? != f {
            return None;
        }
        let (mut lo, mut padded) = (vec![0; sp], vec![0; sp]);
        for a in 0..sp {
            let (l, h) = padding.amounts(hw[a], k[a], st[a], dl[a]);
            lo[a] = l;
            let reach = (ohw[a] - 1) * st[a] + (k[a] - 1) * dl[a] + 1;
            padded[a] = (hw[a] + l + h).max(reach);
        }
        Some(WinGeo {
            batch: xs[0].clone(),
            hw,
            ohw,
            k,
            st: st.clone(),
            dl,
            lo,
            padded,
            ch,
            f,
            groups,
        })
    }

    /// The node `x` (the window's input) as `(buffer, offset, [batch, p…, c]
    /// strides)` that every window reads in bounds: `x` itself without padding, else a
    /// copy into a buffer filled with `fill`.
    fn padded_source(&mut self, g: &WinGeo, x: Id, fill: f64) -> (BufId, Dim, Vec<Dim>) {
        let xa = self.mem(x);
        let (off, s) = self.dims_of(&xa);
        if !g.needs_pad() {
            return (xa.buf, off, s);
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
            also: Vec::new(),
        });
        let ishape = g.shape(&g.hw, g.ch);
        let interior = self.access(pb, &g.interior_offset(), &prm);
        let src = self.access(xa.buf, &off, &s);
        self.copy_loop(&ishape, src, interior, vec![]);
        (pb, Dim::konst(0), prm)
    }

    /// A new zero-filled padded buffer that `body` scatters into (a sum over every
    /// window tap: a reduction sink, so it starts from zeros; each batch entry writes
    /// only its own part, so the loop splits across cores by batch). Returns the view
    /// of its interior, which is the gradient with respect to the window's input.
    /// (Grouped, the loop runs over `group_window_shape`.)
    fn scatter(&mut self, g: &WinGeo, id: Id, loads: Vec<Access>, expr: Vec<Expr>) -> Val {
        let pshape = g.padded_shape();
        let prm = row_major(&pshape);
        let dxp = self.new_arena(&pshape);
        let sink = g.group_strides(g.window_strides(&prm));
        let sink = self.access(dxp, &Dim::konst(0), &sink);
        self.push_loop(&g.group_window_shape(), |space| LoopKernel {
            space,
            loads,
            expr,
            sink: Sink::Reduce(ReduceOp::Sum, sink),
            nodes: vec![id],
            epilogue: None,
            also: Vec::new(),
        });
        Val::Mem(self.access(dxp, &g.interior_offset(), &prm))
    }

    /// Gathers the patch matrices `[G, batch·o…, k…·cg]` of node `x`; returns the
    /// first group's `[batch·o…, k…·cg]` (the others follow, `group_len` apart).
    fn patches(&mut self, g: &WinGeo, x: Id) -> Access {
        let key: Vec<i64> = [&g.k, &g.st, &g.dl, &g.lo, &g.padded, &vec![g.groups]]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let key = (x, key);
        if let Some(a) = self.patch_cache.get(&key) {
            return a.clone();
        }
        let a = self.gather_patches(g, x);
        self.patch_cache.insert(key, a.clone());
        a
    }

    fn gather_patches(&mut self, g: &WinGeo, x: Id) -> Access {
        let (buf, off, strides) = self.padded_source(g, x, 0.0);
        let view = g.group_strides(g.window_strides(&strides));
        let view = self.access(buf, &off, &view);
        let wshape = g.group_window_shape();
        let pbuf = self.new_arena(&wshape);
        let out = self.access(pbuf, &Dim::konst(0), &g.patch_strides());
        self.copy_loop(&wshape, view, out, vec![]);
        self.access(pbuf, &Dim::konst(0), &[Dim::konst(g.cols()), Dim::konst(1)])
    }

    /// Convolution and its gradients as loops and one matrix product (channels last;
    /// `P` is the patch matrix `[batch·o…, k…·c]`):
    /// - forward: pad `x` (a zero-filled copy, when there is padding), gather `P` with
    ///   a loop over a strided view of it, then `y = P · K`;
    /// - kernel gradient: the same `P`, then `dK = Pᵀ · dy`;
    /// - input gradient: `dP = dy · Kᵀ`, then a loop adds every patch element into a
    ///   zero-filled padded `dx`, whose interior is the result (a view).
    ///
    /// Grouped convolutions are one product per group (`group_products`) or, with
    /// few channels per group, windowed loops (`grouped`).
    pub(super) fn conv(&mut self, id: Id) -> Val {
        let g = self.win_geo(id).expect("checked by the caller");
        if !g.products() {
            return self.grouped(&g, id);
        }
        if g.groups > 1 {
            return self.group_products(&g, id);
        }
        let node = self.f.nodes[id].clone();
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

    /// `a` moved on by `delta` elements.
    fn shifted(&mut self, a: &Access, delta: &Dim) -> Access {
        let (off, s) = self.dims_of(a);
        let off = off.add(delta).unwrap_or_else(|_| Dim::konst(i64::MAX));
        self.access(a.buf, &off, &s)
    }

    /// A grouped convolution as one product per group (`P_G` the group's patch
    /// matrix `[batch·o…, k…·cg]`, `K_G` and `dy_G` the group's `fg` columns of the
    /// kernel `[k…·cg, f]` and of `dy`), each product's `[·, fg]` result copied into
    /// its columns: `y_G = P_G · K_G`, `dK_G = P_Gᵀ · dy_G`; the input gradient's
    /// `dP_G = dy_G · K_Gᵀ` go into one `[G, batch·o…, k…·cg]` buffer that a single
    /// scatter loop adds into the padded `dx`.
    fn group_products(&mut self, g: &WinGeo, id: Id) -> Val {
        let node = self.f.nodes[id].clone();
        let k = Dim::konst;
        let (rows, cols, fdim) = (g.rows(), k(g.cols()), k(g.f));
        let fg = g.f / g.groups;
        let fgd = k(fg);
        let (x_or_dy, kernel_or_dy) = (node.args[0], node.args[1]);
        let out_shape = match &node.op {
            Op::ConvInputGrad(_) => vec![k(g.groups), rows.clone(), cols.clone()],
            _ => node.ty.shape.clone(),
        };
        let out = self.new_arena(&out_shape);
        let (p, kv, dy) = match &node.op {
            Op::Conv(_) => (
                Some(self.patches(g, x_or_dy)),
                Some(self.matrix(kernel_or_dy, &fdim)),
                None,
            ),
            Op::ConvKernelGrad(_) => (
                Some(self.patches(g, x_or_dy)),
                None,
                Some(self.matrix(kernel_or_dy, &fdim)),
            ),
            _ => (
                None,
                Some(self.matrix(kernel_or_dy, &fdim)),
                Some(self.matrix(x_or_dy, &fdim)),
            ),
        };
        for gi in 0..g.groups {
            let cols_at = k(gi * fg);
            let kv = kv.as_ref().map(|a| self.shifted(a, &cols_at));
            let dy = dy.as_ref().map(|a| self.shifted(a, &cols_at));
            let p = p
                .as_ref()
                .map(|a| self.shifted(a, &scaled(&g.group_len(), gi)));
            // The product `[m, n]` and where its rows go (`[m, n]` strides of `out`).
            let (c, m, n, dst) = match (&node.op, p, kv, dy) {
                (Op::Conv(_), Some(p), Some(kv), _) => {
                    let c = self.gemm2(id, p, kv, &rows, &cols, &fgd);
                    (c, rows.clone(), fgd.clone(), (cols_at, fdim.clone()))
                }
                (Op::ConvKernelGrad(_), Some(p), _, Some(dy)) => {
                    let c = self.gemm2(id, p.transposed(), dy, &cols, &rows, &fgd);
                    (c, cols.clone(), fgd.clone(), (cols_at, fdim.clone()))
                }
                (_, _, Some(kv), Some(dy)) => {
                    let c = self.gemm2(id, dy, kv.transposed(), &rows, &fgd, &cols);
                    let at = scaled(&g.group_len(), gi);
                    (c, rows.clone(), cols.clone(), (at, cols.clone()))
                }
                _ => unreachable!("operands chosen above for each op"),
            };
            let src = self.contiguous(c, &[m.clone(), n.clone()]);
            let dst = self.access(out, &dst.0, &[dst.1, k(1)]);
            self.copy_loop(&[m, n], src, dst, vec![id]);
        }
        if matches!(node.op, Op::ConvInputGrad(_)) {
            let src = self.access(out, &k(0), &g.patch_strides());
            return self.scatter(g, id, vec![src], vec![Expr::Load(0)]);
        }
        Val::Mem(self.contiguous(out, &node.ty.shape))
    }

    /// A grouped convolution (`G` groups of `cg` input channels and `fg` filters
    /// each: output channel `G·fg + j` reads input channels `G·cg + i`; depthwise is
    /// `cg = 1`) and its gradients as windowed loops over
    /// `[batch, o…, k…, G, cg, fg]`, without a patch matrix:
    /// - forward: `y[.., G·fg + j] = Σ_{k…, i} x_window[.., k…, G·cg + i] · K[k…, i, G·fg + j]`;
    /// - input gradient: `dy · K` summed into a zero-filled padded `dx` over the windows
    ///   and `j` (its interior, a view, is the result); both split across the team by
    ///   batch entry;
    /// - kernel gradient: `x_window · dy` summed over batch and output positions, with
    ///   the taps outermost (`[k…, batch, o…, G, cg, fg]`) so that it splits across
    ///   the team by tap; each element still sums over batch and positions in order.
    fn grouped(&mut self, g: &WinGeo, id: Id) -> Val {
        let node = self.f.nodes[id].clone();
        let k = Dim::konst;
        let n = g.n();
        let (groups, cg) = (g.groups, g.ch / g.groups);
        let fg = g.f / groups;
        let zeros = |m: usize| vec![k(0); m];
        // Strides over the canonical space `[batch, o…, k…, G, cg, fg]`.
        // A window of a `[batch, p…, c]` layout with strides `s`.
        let over_window = |s: &[Dim]| -> Vec<Dim> {
            let c = &s[n + 1];
            let mut w = g.window_strides(s);
            w.pop();
            w.extend([scaled(c, cg), c.clone(), k(0)]);
            w
        };
        // A `[batch, o…, G·fg + j]` layout.
        let over_outputs = |s: &[Dim]| -> Vec<Dim> {
            let c = &s[n + 1];
            let mut w = s[..=n].to_vec();
            w.extend(zeros(n));
            w.extend([scaled(c, fg), k(0), c.clone()]);
            w
        };
        // A `[k…, cg, G·fg + j]` kernel layout.
        let over_kernel = |s: &[Dim]| -> Vec<Dim> {
            let c = &s[n + 1];
            let mut w = zeros(n + 1);
            w.extend(s[..n].iter().cloned());
            w.extend([scaled(c, fg), s[n].clone(), c.clone()]);
            w
        };
        let mut space = g.window_shape();
        space.pop();
        space.extend([k(groups), k(cg), k(fg)]);
        let view = |this: &mut Self, x: Id, f: &dyn Fn(&[Dim]) -> Vec<Dim>| -> Access {
            let a = this.mem(x);
            let (off, s) = this.dims_of(&a);
            this.access(a.buf, &off, &f(&s))
        };
        let window = |this: &mut Self, x: Id| -> Access {
            let (buf, off, s) = this.padded_source(g, x, 0.0);
            this.access(buf, &off, &over_window(&s))
        };
        let product = vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Binary(Binary::Mul, 0, 1),
        ];
        let (mut loads, out, mut sink, result) = match &node.op {
            Op::Conv(_) => {
                let x = window(self, node.args[0]);
                let kv = view(self, node.args[1], &over_kernel);
                let out = self.new_arena(&node.ty.shape);
                let sink = over_outputs(&row_major(&node.ty.shape));
                (vec![x, kv], out, sink, None)
            }
            Op::ConvInputGrad(_) => {
                let dy = view(self, node.args[0], &over_outputs);
                let kv = view(self, node.args[1], &over_kernel);
                let pshape = g.padded_shape();
                let prm = row_major(&pshape);
                let out = self.new_arena(&pshape);
                let sink = over_window(&prm);
                let interior = self.access(out, &g.interior_offset(), &prm);
                (vec![dy, kv], out, sink, Some(interior))
            }
            _ => {
                let x = window(self, node.args[0]);
                let dy = view(self, node.args[1], &over_outputs);
                let out = self.new_arena(&node.ty.shape);
                let sink = over_kernel(&row_major(&node.ty.shape));
                (vec![x, dy], out, sink, None)
            }
        };
        if matches!(node.op, Op::ConvKernelGrad(_)) {
            // Taps outermost: `[k…, batch, o…, G, cg, fg]`.
            let taps = |v: &mut Vec<Dim>| v[..=2 * n].rotate_left(n + 1);
            taps(&mut space);
            taps(&mut sink);
            for l in &mut loads {
                let (off, mut s) = self.dims_of(l);
                taps(&mut s);
                *l = self.access(l.buf, &off, &s);
            }
        }
        let sink = self.access(out, &k(0), &sink);
        self.push_loop(&space, |space| LoopKernel {
            space,
            loads,
            expr: product,
            sink: Sink::Reduce(ReduceOp::Sum, sink),
            nodes: vec![id],
            epilogue: None,
            also: Vec::new(),
        });
        Val::Mem(result.unwrap_or_else(|| self.contiguous(out, &node.ty.shape)))
    }

    /// The number of in-bounds taps of the window at output `(Index(1), …, Index(n))`
    /// as an expression (average pooling divides by it), appended to `expr`.
    fn tap_count(g: &WinGeo, expr: &mut Vec<Expr>) -> usize {
        let mut count = None;
        for a in 0..g.n() {
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
            let taps = push_expr(expr, Expr::Binary(Binary::Sub, end, start));
            count = Some(match count {
                None => taps,
                Some(c) => push_expr(expr, Expr::Binary(Binary::Mul, c, taps)),
            });
        }
        count.expect("at least one spatial axis")
    }

    /// Pooling as generated loops: the window's maximum or sum (over a padded copy
    /// filled with −∞ or zeros), the average dividing by the number of in-bounds taps;
    /// the average's gradient scatters `dy / taps` over the windows. (The max's
    /// gradient, which must pick the first maximum of each window, is a team routine.)
    pub(super) fn pool(&mut self, id: Id) -> Val {
        let g = self.win_geo(id).expect("checked by the caller");
        let node = self.f.nodes[id].clone();
        let oshape = g.shape(&g.ohw, g.ch);
        let orm = row_major(&oshape);
        match &node.op {
            Op::Pool { kind, .. } => {
                let max = *kind == PoolKind::Max;
                let fill = if max { f64::NEG_INFINITY } else { 0.0 };
                let (buf, off, strides) = self.padded_source(&g, node.args[0], fill);
                let view = self.access(buf, &off, &g.window_strides(&strides));
                let out = self.new_arena(&oshape);
                let sink = self.access(out, &Dim::konst(0), &g.over_outputs(&orm));
                let op = if max { ReduceOp::Max } else { ReduceOp::Sum };
                self.push_loop(&g.window_shape(), |space| LoopKernel {
                    space,
                    loads: vec![view],
                    expr: vec![Expr::Load(0)],
                    sink: Sink::Reduce(op, sink),
                    nodes: vec![id],
                    epilogue: None,
                    also: Vec::new(),
                });
                if !max {
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
                        also: Vec::new(),
                    });
                    return Val::Mem(self.contiguous(avg, &node.ty.shape));
                }
                Val::Mem(self.contiguous(out, &node.ty.shape))
            }
            _ => {
                // Average pooling's gradient: dy[b, o…, c] / taps, read once per tap
                // of the window (strides 0 over k…).
                let dy = self.matrix(node.args[1], &Dim::konst(g.ch));
                let (off, _) = self.dims_of(&dy);
                let src = self.access(dy.buf, &off, &g.over_outputs(&orm));
                let mut expr = vec![Expr::Load(0)];
                let count = Self::tap_count(&g, &mut expr);
                push_expr(&mut expr, Expr::Binary(Binary::Div, 0, count));
                self.scatter(&g, id, vec![src], expr)
            }
        }
    }
}
