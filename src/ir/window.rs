//! Windowed primitives, channels last: convolution and its two gradients, max and
//! average pooling and their gradient, over 1 to 3 spatial axes (1-D and 2-D windows
//! run as 3-D ones whose leading axes have length 1).
//! Padding follows Keras/TF: `same` pads `total // 2` before and the rest after;
//! average pooling divides by the number of in-bounds elements.

use std::fmt;

use ndarray::{Array2, ArrayD, IxDyn};

use super::real::Real;
use super::{Func, Id, Op, Result, Type, err};
use crate::dim::Dim;
use crate::types::window_out;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    Valid,
    Same,
    Causal,
}

impl Padding {
    /// Every padding, for readers of the textual form.
    pub const ALL: [Padding; 3] = [Padding::Valid, Padding::Same, Padding::Causal];

    pub fn parse(s: &str) -> Padding {
        match s {
            "same" => Padding::Same,
            "causal" => Padding::Causal,
            _ => Padding::Valid,
        }
    }
    /// The name in specs and in the textual IR.
    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
            Padding::Causal => "causal",
        }
    }
    /// (pad before, pad after) for one axis of length `len`.
    pub fn amounts(self, len: i64, k: i64, stride: i64, dilation: i64) -> (i64, i64) {
        let eff = (k - 1) * dilation + 1;
        match self {
            Padding::Valid => (0, 0),
            Padding::Causal => (eff - 1, 0),
            Padding::Same => {
                let out = (len + stride - 1) / stride;
                let total = ((out - 1) * stride + eff - len).max(0);
                (total / 2, total - total / 2)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub strides: Vec<i64>,
    pub dilation: Vec<i64>,
    pub padding: Padding,
    pub groups: i64,
}

impl fmt::Display for ConvAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "strides={:?}, dilation={:?}, padding={}, groups={}",
            self.strides,
            self.dilation,
            self.padding.name(),
            self.groups
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    /// Every pooling kind, for readers of the textual form.
    pub const ALL: [PoolKind; 2] = [PoolKind::Max, PoolKind::Avg];
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WindowAttrs {
    pub window: Vec<i64>,
    pub strides: Vec<i64>,
    pub padding: Padding,
}

impl fmt::Display for WindowAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "window={:?}, strides={:?}, padding={}",
            self.window,
            self.strides,
            self.padding.name()
        )
    }
}

fn spatial_out(x: &Type, k: &[i64], s: &[i64], d: &[i64], p: Padding) -> Result<Vec<Dim>> {
    let n = k.len();
    if !(1..=AXES).contains(&n) || x.rank() != n + 2 || s.len() != n || d.len() != n {
        return err(format!(
            "window op on rank {} with {n} spatial axes",
            x.rank()
        ));
    }
    if k.iter().chain(s).chain(d).any(|&v| v < 1) {
        return err(format!(
            "window {k:?}, strides {s:?} and dilation {d:?} must be positive"
        ));
    }
    let pad = if p == Padding::Valid { "valid" } else { "same" };
    (0..n)
        .map(|i| {
            window_out(&x.shape[1 + i], k[i], s[i], d[i], pad)
                .map_err(|_| super::IrError("overflow".into()))
        })
        .collect()
}

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    match op {
        Op::Conv(a) => {
            let (x, k) = (tys[0], tys[1]);
            if k.rank() < 3 {
                return err(format!("conv kernel of rank {}", k.rank()));
            }
            let n = k.rank() - 2;
            let ks: Option<Vec<i64>> = k.shape[..n].iter().map(Dim::as_const).collect();
            let ks = ks.ok_or_else(|| super::IrError("symbolic kernel".into()))?;
            let spatial = spatial_out(x, &ks, &a.strides, &a.dilation, a.padding)?;
            let mut s = vec![x.shape[0].clone()];
            s.extend(spatial);
            s.push(k.last().clone());
            Ok(Type::f32(s))
        }
        Op::Pool { attrs, .. } => {
            let x = tys[0];
            let ones = vec![1; attrs.window.len()];
            let spatial = spatial_out(x, &attrs.window, &attrs.strides, &ones, attrs.padding)?;
            let mut s = vec![x.shape[0].clone()];
            s.extend(spatial);
            s.push(x.last().clone());
            Ok(Type::f32(s))
        }
        Op::PoolGrad { .. } => Ok(tys[0].clone()),
        Op::ConvInputGrad(_) | Op::ConvKernelGrad(_) => {
            err("conv gradients take their type from the builder")
        }
        _ => err(format!("{op:?} is not a window op")),
    }
}

/// Spatial axes a window primitive handles: 1-D, 2-D and 3-D windows all run as 3-D
/// ones, the missing leading axes of length 1.
const AXES: usize = 3;

/// A 3-D view of a channels-last tensor: `[batch, d, h, w, c]` (fewer spatial axes get
/// leading lengths of 1).
struct Geo {
    b: usize,
    sp: [usize; AXES],
    c: usize,
}

impl Geo {
    /// Positions (batch entries × spatial positions).
    fn positions(&self) -> usize {
        self.b * self.sp.iter().product::<usize>()
    }
}

fn geo(shape: &[usize]) -> Geo {
    let n = shape.len() - 2;
    let mut sp = [1; AXES];
    sp[AXES - n..].copy_from_slice(&shape[1..=n]);
    Geo {
        b: shape[0],
        sp,
        c: shape[n + 1],
    }
}

/// Per-axis parameters lifted to 3-D: window, stride, dilation and padding before.
struct Win {
    k: [usize; AXES],
    s: [usize; AXES],
    d: [usize; AXES],
    lo: [i64; AXES],
}

impl Win {
    fn taps(&self) -> usize {
        self.k.iter().product()
    }
}

fn win(in_geo: &Geo, k: &[i64], s: &[i64], d: &[i64], p: Padding) -> Win {
    let n = k.len();
    let lift = |v: &[i64]| {
        let mut out = [1usize; AXES];
        for (o, &x) in out[AXES - n..].iter_mut().zip(v) {
            *o = x as usize;
        }
        out
    };
    let (k3, s3, d3) = (lift(k), lift(s), lift(d));
    let mut lo = [0i64; AXES];
    for i in AXES - n..AXES {
        let len = in_geo.sp[i] as i64;
        lo[i] = p.amounts(len, k3[i] as i64, s3[i] as i64, d3[i] as i64).0;
    }
    Win {
        k: k3,
        s: s3,
        d: d3,
        lo,
    }
}

/// Calls `f(out, tap, input)` for every in-bounds tap of the window: `out` is the flat
/// index of the output position (batch and spatial axes, row-major), `tap` the flat
/// index of the tap in the window, `input` the flat index of the input position.
/// Taps come in row-major order, so "the first" tap is Keras's.
fn for_taps(x: &Geo, o: &Geo, w: &Win, mut f: impl FnMut(usize, usize, usize)) {
    let taps = w.taps();
    for out in 0..o.positions() {
        let mut rest = out;
        let mut opos = [0usize; AXES];
        for a in (0..AXES).rev() {
            opos[a] = rest % o.sp[a];
            rest /= o.sp[a];
        }
        let b = rest;
        'tap: for tap in 0..taps {
            let mut t = tap;
            let mut kpos = [0usize; AXES];
            for a in (0..AXES).rev() {
                kpos[a] = t % w.k[a];
                t /= w.k[a];
            }
            let mut input = b;
            for a in 0..AXES {
                let i = (opos[a] * w.s[a] + kpos[a] * w.d[a]) as i64 - w.lo[a];
                if i < 0 || i >= x.sp[a] as i64 {
                    continue 'tap;
                }
                input = input * x.sp[a] + i as usize;
            }
            f(out, tap, input);
        }
    }
}

fn dense<T: Real>(a: &ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().copied().collect(),
    }
}

fn shaped<T: Real>(shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| super::IrError(e.to_string()))
}

/// Max pooling's gradient straight on contiguous channels-last buffers (`x` of shape
/// `xs`, `dy` of shape `ys`, `dx` like `x`): each window's gradient goes to its first
/// maximum, as in `eval`. Works on any run of batch entries (the shapes' first axis),
/// so the JIT splits it across cores by batch.
pub fn max_pool_grad(
    xs: &[usize],
    ys: &[usize],
    attrs: &WindowAttrs,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let (xg, yg) = (geo(xs), geo(ys));
    let ones = vec![1; attrs.window.len()];
    let w = win(&xg, &attrs.window, &attrs.strides, &ones, attrs.padding);
    let c = xg.c;
    dx.fill(0.0);
    let mut best = vec![0f32; c];
    let mut arg = vec![usize::MAX; c];
    let mut at = usize::MAX;
    let flush = |at: usize, arg: &mut [usize], dx: &mut [f32]| {
        if at != usize::MAX {
            for ch in 0..c {
                if arg[ch] != usize::MAX {
                    dx[arg[ch]] += dy[at + ch];
                }
                arg[ch] = usize::MAX;
            }
        }
    };
    for_taps(&xg, &yg, &w, |out, _, input| {
        let yo = out * c;
        if yo != at {
            flush(at, &mut arg, dx);
            at = yo;
        }
        let xo = input * c;
        for ch in 0..c {
            let v = x[xo + ch];
            if arg[ch] == usize::MAX || v > best[ch] {
                best[ch] = v;
                arg[ch] = xo + ch;
            }
        }
    });
    flush(at, &mut arg, dx);
}

/// A convolution lowered to one GEMM per group over im2col patches: the geometry
/// shared by the forward pass and both gradients.
struct ConvPlan {
    /// Input channels per group.
    cg: usize,
    /// Filters in total and per group.
    f_total: usize,
    fg: usize,
    groups: usize,
    /// Window taps, output positions and patch columns (`taps * cg`).
    taps: usize,
    rows: usize,
    cols: usize,
    /// im2col: for each output position and tap, the input element index (or
    /// `usize::MAX` where the tap falls in the padding).
    src: Vec<usize>,
}

impl ConvPlan {
    /// The plan for shapes `xs` (input), `ks` (kernel) and `ys` (output).
    fn new(a: &ConvAttrs, xs: &[usize], ks: &[usize], ys: &[usize]) -> ConvPlan {
        let n = ks.len() - 2;
        let kdims: Vec<i64> = ks[..n].iter().map(|&v| v as i64).collect();
        let (xg, yg) = (geo(xs), geo(ys));
        let w = win(&xg, &kdims, &a.strides, &a.dilation, a.padding);
        let cg = ks[n];
        let f_total = ks[n + 1];
        let groups = a.groups as usize;
        let fg = f_total / groups;
        let taps = w.taps();
        let rows = yg.positions();
        let cols = taps * cg;
        let mut src = vec![usize::MAX; rows * taps];
        for_taps(&xg, &yg, &w, |r, tap, input| {
            src[r * taps + tap] = input * xg.c;
        });
        ConvPlan {
            cg,
            f_total,
            fg,
            groups,
            taps,
            rows,
            cols,
            src,
        }
    }

    /// Group `g`'s patches of `x`: [rows, taps*cg].
    fn patches<T: Real>(&self, x: &[T], g: usize) -> Array2<T> {
        let (cg, taps) = (self.cg, self.taps);
        let mut v = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for t in 0..taps {
                let at = self.src[r * taps + t];
                if at == usize::MAX {
                    v.extend(std::iter::repeat_n(T::zero(), cg));
                } else {
                    v.extend_from_slice(&x[at + g * cg..at + g * cg + cg]);
                }
            }
        }
        Array2::from_shape_vec((self.rows, self.cols), v).expect("rows × cols elements")
    }

    /// Group `g`'s slice of kernel `k`: [taps*cg, fg].
    fn kmat<T: Real>(&self, k: &[T], g: usize) -> Array2<T> {
        let (f_total, fg) = (self.f_total, self.fg);
        let mut v = Vec::with_capacity(self.cols * fg);
        for row in 0..self.cols {
            v.extend_from_slice(&k[row * f_total + g * fg..row * f_total + g * fg + fg]);
        }
        Array2::from_shape_vec((self.cols, fg), v).expect("cols × fg elements")
    }

    /// Group `g`'s slice of output-shaped `y`: [rows, fg].
    fn ymat<T: Real>(&self, y: &[T], g: usize) -> Array2<T> {
        let (f_total, fg) = (self.f_total, self.fg);
        let mut v = Vec::with_capacity(self.rows * fg);
        for r in 0..self.rows {
            v.extend_from_slice(&y[r * f_total + g * fg..r * f_total + g * fg + fg]);
        }
        Array2::from_shape_vec((self.rows, fg), v).expect("rows × fg elements")
    }

    /// y = patches(x) · kernel, per group.
    fn forward<T: Real>(&self, x: &[T], k: &[T], shape: &[usize]) -> Result<ArrayD<T>> {
        let mut y = vec![T::zero(); shape.iter().product()];
        for g in 0..self.groups {
            let out = self.patches(x, g).dot(&self.kmat(k, g));
            for ((r, f), v) in out.indexed_iter() {
                y[r * self.f_total + g * self.fg + f] = *v;
            }
        }
        shaped(shape, y)
    }

    /// dx: dpatches = dy · kᵀ per group, then col2im (scatter-add).
    fn input_grad<T: Real>(&self, dy: &[T], k: &[T], shape: &[usize]) -> Result<ArrayD<T>> {
        let cg = self.cg;
        let mut dx = vec![T::zero(); shape.iter().product()];
        for g in 0..self.groups {
            let dp = self.ymat(dy, g).dot(&self.kmat(k, g).t());
            for ((r, col), v) in dp.indexed_iter() {
                let (t, c) = (col / cg, col % cg);
                let at = self.src[r * self.taps + t];
                if at != usize::MAX {
                    dx[at + g * cg + c] += *v;
                }
            }
        }
        shaped(shape, dx)
    }

    /// dk = patches(x)ᵀ · dy, per group.
    fn kernel_grad<T: Real>(&self, x: &[T], dy: &[T], shape: &[usize]) -> Result<ArrayD<T>> {
        let mut dk = vec![T::zero(); shape.iter().product()];
        for g in 0..self.groups {
            let m = self.patches(x, g).t().dot(&self.ymat(dy, g));
            for ((row, f), v) in m.indexed_iter() {
                dk[row * self.f_total + g * self.fg + f] = *v;
            }
        }
        shaped(shape, dk)
    }
}

/// One pass of a pooling window over `x`: per output element, the running max (and
/// its input index, the first maximum) and the sum, and per output position the
/// number of in-bounds taps.
struct PoolScan<T> {
    xg: Geo,
    yg: Geo,
    w: Win,
    best: Vec<T>,
    arg: Vec<usize>,
    sum: Vec<T>,
    count: Vec<usize>,
}

impl<T: Real> PoolScan<T> {
    /// Scans `x` (shape `xs`) into an output of shape `ys`.
    fn new(attrs: &WindowAttrs, xs: &[usize], ys: &[usize], x: &[T]) -> PoolScan<T> {
        let (xg, yg) = (geo(xs), geo(ys));
        let ones = vec![1; attrs.window.len()];
        let w = win(&xg, &attrs.window, &attrs.strides, &ones, attrs.padding);
        let c = xg.c;
        let ny = yg.positions() * c;
        let mut scan = PoolScan {
            best: vec![T::neg_infinity(); ny],
            arg: vec![usize::MAX; ny],
            sum: vec![T::zero(); ny],
            count: vec![0usize; yg.positions()],
            xg,
            yg,
            w,
        };
        let PoolScan {
            xg,
            yg,
            w,
            best,
            arg,
            sum,
            count,
        } = &mut scan;
        for_taps(xg, yg, w, |out, _, input| {
            let (yo, xo) = (out * c, input * c);
            count[out] += 1;
            for ch in 0..c {
                let v = x[xo + ch];
                if v > best[yo + ch] || arg[yo + ch] == usize::MAX {
                    best[yo + ch] = v;
                    arg[yo + ch] = xo + ch;
                }
                sum[yo + ch] += v;
            }
        });
        scan
    }

    /// The in-bounds tap count behind output element `i` (at least 1).
    fn cnt(&self, i: usize) -> T {
        T::from_usize(self.count[i / self.xg.c].max(1)).unwrap_or_else(T::one)
    }

    /// The pooled output: the maxima or the in-bounds means.
    fn forward(self, kind: PoolKind, shape: &[usize]) -> Result<ArrayD<T>> {
        let y = match kind {
            PoolKind::Max => self.best,
            PoolKind::Avg => (0..self.sum.len())
                .map(|i| self.sum[i] / self.cnt(i))
                .collect(),
        };
        shaped(shape, y)
    }

    /// dx from `dy`: max sends each gradient to its first maximum, average spreads it
    /// evenly over the in-bounds taps.
    fn grad(&self, kind: PoolKind, dy: &[T], nx: usize, shape: &[usize]) -> Result<ArrayD<T>> {
        let mut dx = vec![T::zero(); nx];
        match kind {
            PoolKind::Max => {
                for (i, &at) in self.arg.iter().enumerate() {
                    if at != usize::MAX {
                        dx[at] += dy[i];
                    }
                }
            }
            PoolKind::Avg => {
                let c = self.xg.c;
                for_taps(&self.xg, &self.yg, &self.w, |out, _, input| {
                    let (yo, xo) = (out * c, input * c);
                    for ch in 0..c {
                        dx[xo + ch] += dy[yo + ch] / self.cnt(yo + ch);
                    }
                });
            }
        }
        shaped(shape, dx)
    }
}

pub fn eval<T: Real>(op: &Op, shape: &[usize], args: &[&ArrayD<T>]) -> Result<ArrayD<T>> {
    match op {
        Op::Conv(a) => {
            let plan = ConvPlan::new(a, args[0].shape(), args[1].shape(), shape);
            plan.forward(&dense(args[0]), &dense(args[1]), shape)
        }
        Op::ConvInputGrad(a) => {
            let plan = ConvPlan::new(a, shape, args[1].shape(), args[0].shape());
            plan.input_grad(&dense(args[0]), &dense(args[1]), shape)
        }
        Op::ConvKernelGrad(a) => {
            let plan = ConvPlan::new(a, args[0].shape(), shape, args[1].shape());
            plan.kernel_grad(&dense(args[0]), &dense(args[1]), shape)
        }
        Op::Pool { kind, attrs } => {
            let x = dense(args[0]);
            PoolScan::new(attrs, args[0].shape(), shape, &x).forward(*kind, shape)
        }
        Op::PoolGrad { kind, attrs } => {
            let x = dense(args[0]);
            let scan = PoolScan::new(attrs, args[0].shape(), args[1].shape(), &x);
            scan.grad(*kind, &dense(args[1]), x.len(), shape)
        }
        _ => err(format!("{op:?} is not a window op")),
    }
}

pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    match &n.op {
        Op::Conv(a) => {
            let (x, k) = (n.args[0], n.args[1]);
            let (xt, kt) = (f.ty(x).clone(), f.ty(k).clone());
            let dx = f.push_typed(Op::ConvInputGrad(a.clone()), &[g, k], xt);
            let dk = f.push_typed(Op::ConvKernelGrad(a.clone()), &[x, g], kt);
            Ok(vec![Some(dx), Some(dk)])
        }
        // The input gradient is linear in both operands: it is the transpose of the
        // convolution (a transposed convolution's forward pass), so its own gradients
        // are the convolution of `g` and the kernel gradient of `g` against `dy`.
        Op::ConvInputGrad(a) => {
            let (dy, k) = (n.args[0], n.args[1]);
            let (dyt, kt) = (f.ty(dy).clone(), f.ty(k).clone());
            let ddy = f.push_typed(Op::Conv(a.clone()), &[g, k], dyt);
            let dk = f.push_typed(Op::ConvKernelGrad(a.clone()), &[g, dy], kt);
            Ok(vec![Some(ddy), Some(dk)])
        }
        Op::Pool { kind, attrs } => {
            let x = n.args[0];
            let dx = f.push(
                Op::PoolGrad {
                    kind: *kind,
                    attrs: attrs.clone(),
                },
                &[x, g],
            )?;
            Ok(vec![Some(dx)])
        }
        _ => err(format!(
            "{:?} has no vjp (second derivatives of windows are not needed)",
            n.op
        )),
    }
}
