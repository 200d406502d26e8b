//! Recurrent layers as one primitive each (simple RNN, LSTM with gates i, f, c, o, GRU
//! with gates z, r, h), run over the time axis of any (symbolic) length. The VJP is a
//! second primitive that recomputes the forward pass and back-propagates through time.

use std::fmt;

use std::ops::Range;

use ndarray::{Array2, Array3, ArrayD, ArrayView2, ArrayViewMut2, Axis, IxDyn, s};

use super::real::Real;
use super::{Func, Id, Op, Result, Type, err};
use crate::dim::Dim;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cell {
    Simple,
    Lstm,
    Gru,
}

impl Cell {
    /// Every cell, for readers of the textual form.
    pub const ALL: [Cell; 3] = [Cell::Simple, Cell::Lstm, Cell::Gru];
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RnnAttrs {
    pub cell: Cell,
    pub units: i64,
    pub activation: String,
    pub recurrent_activation: String,
    pub return_sequences: bool,
    pub go_backwards: bool,
    pub reset_after: bool,
    pub use_bias: bool,
    /// A Keras mask `[batch, steps]` follows the weights: masked steps keep the state.
    pub masked: bool,
    /// With a mask, a masked step outputs zeros (Keras's `zero_output_for_mask`, which
    /// `Bidirectional` sets) instead of the carried output.
    pub zero_output: bool,
    /// Keras's recurrent dropout (training, `recurrent_dropout` > 0): two keep masks
    /// follow the mask, `[batch, gates, features]` on the input and `[batch, gates,
    /// units]` on the previous output, one per gate, drawn once per sequence, their
    /// kept entries already scaled by 1/(1-rate).
    pub dropout: bool,
}

impl RnnAttrs {
    /// The position of the mask among the arguments (after the bias, if any).
    pub fn mask_index(&self) -> Option<usize> {
        self.masked.then_some(3 + usize::from(self.use_bias))
    }

    /// The position of the input's keep masks (the previous output's is next).
    pub fn dropout_index(&self) -> Option<usize> {
        self.dropout
            .then_some(3 + usize::from(self.use_bias) + usize::from(self.masked))
    }

    /// Whether argument `i` is a constant of the step (mask, keep masks): no gradient.
    pub fn is_constant(&self, i: usize) -> bool {
        Some(i) == self.mask_index() || self.dropout_index().is_some_and(|d| i == d || i == d + 1)
    }

    /// The number of gates (column blocks of the kernels).
    pub fn gates(&self) -> usize {
        match self.cell {
            Cell::Simple => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

impl fmt::Display for RnnAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}, units={}, activation={}",
            self.cell, self.units, self.activation
        )?;
        if self.cell != Cell::Simple {
            write!(f, ", recurrent_activation={}", self.recurrent_activation)?;
        }
        if self.cell == Cell::Gru {
            write!(f, ", reset_after={}", self.reset_after)?;
        }
        write!(
            f,
            ", return_sequences={}, go_backwards={}",
            self.return_sequences, self.go_backwards
        )?;
        if self.masked {
            write!(f, ", masked=true, zero_output={}", self.zero_output)?;
        }
        if self.dropout {
            write!(f, ", dropout=true")?;
        }
        Ok(())
    }
}

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    match op {
        Op::Rnn(a) => {
            let x = tys[0];
            if x.rank() != 3 {
                return err("rnn needs [batch, steps, features]");
            }
            if let Some(d) = a.dropout_index()
                && tys
                    .get(d..d + 2)
                    .is_none_or(|k| k.iter().any(|t| t.rank() != 3))
            {
                return err("rnn keep masks must be [batch, gates, features or units]");
            }
            Ok(Type::f32(if a.return_sequences {
                vec![x.shape[0].clone(), x.shape[1].clone(), Dim::konst(a.units)]
            } else {
                vec![x.shape[0].clone(), Dim::konst(a.units)]
            }))
        }
        // The last argument is dy; `wrt` names one of the others.
        Op::RnnGrad { wrt, .. } => match tys.get(*wrt) {
            Some(t) if *wrt + 1 < tys.len() => Ok((*t).clone()),
            _ => err(format!("rnn gradient with respect to argument {wrt}")),
        },
        _ => err("not an rnn op"),
    }
}

/// A scalar activation and its derivative (with respect to the pre-activation).
pub fn act<T: Real>(name: &str, x: T) -> (T, T) {
    let one = T::one();
    let zero = T::zero();
    let c = |v: f64| T::from_f64(v).unwrap_or_else(T::nan);
    let sig = |v: T| super::elementwise::unary(super::Unary::Sigmoid, v);
    match name {
        "linear" => (x, one),
        "relu" => (
            if x > zero { x } else { zero },
            if x > zero { one } else { zero },
        ),
        "tanh" => {
            let t = x.tanh();
            (t, one - t * t)
        }
        "sigmoid" => {
            let s = sig(x);
            (s, s * (one - s))
        }
        "hard_sigmoid" => {
            let v = (x + c(3.0)) / c(6.0);
            if v <= zero {
                (zero, zero)
            } else if v >= one {
                (one, zero)
            } else {
                (v, c(1.0 / 6.0))
            }
        }
        "softsign" => (
            x / (one + x.abs()),
            one / ((one + x.abs()) * (one + x.abs())),
        ),
        "softplus" => (x.max(zero) + (-x.abs()).exp().ln_1p(), sig(x)),
        "silu" | "swish" => {
            let s = sig(x);
            (x * s, s * (one + x * (one - s)))
        }
        "exponential" => (x.exp(), x.exp()),
        "elu" | "selu" => {
            let (scale, alpha) = if name == "selu" {
                (c(1.050_700_987_355_480_5), c(1.673_263_242_354_377_3))
            } else {
                (one, one)
            };
            if x > zero {
                (scale * x, scale)
            } else {
                (scale * alpha * (x.exp() - one), scale * alpha * x.exp())
            }
        }
        _ => (T::nan(), T::nan()),
    }
}

/// Activations a recurrent cell can use (scalar functions).
pub const CELL_ACTIVATIONS: &[&str] = &[
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "softsign",
    "softplus",
    "silu",
    "swish",
    "exponential",
    "elu",
    "selu",
];

pub(super) struct Weights<T> {
    pub w: Array2<T>,
    pub u: Array2<T>,
    /// Input bias (and, for GRU with reset_after, the recurrent bias).
    pub bi: Vec<T>,
    pub br: Vec<T>,
    /// Recurrent dropout's keep masks: the input's `[B, gates, F]` and the previous
    /// output's `[B, gates, u]`.
    pub keep: Option<(Array3<T>, Array3<T>)>,
}

impl<T: Real> Weights<T> {
    pub fn xkeep(&self) -> Option<&Array3<T>> {
        self.keep.as_ref().map(|k| &k.0)
    }
    pub fn hkeep(&self) -> Option<&Array3<T>> {
        self.keep.as_ref().map(|k| &k.1)
    }
}

/// `v · m` where the columns of gate `g` (`w` wide; `m` holds exactly the columns
/// of the gates `gs`) see `v * keep[:, g, :]`, as Keras's cells multiply each gate's
/// input by its own dropout mask; without masks, plain `v · m`.
pub(super) fn proj<T: Real>(
    v: &Array2<T>,
    keep: Option<&Array3<T>>,
    m: ArrayView2<T>,
    gs: Range<usize>,
    w: usize,
) -> Array2<T> {
    let Some(k) = keep else { return v.dot(&m) };
    let mut out = Array2::<T>::zeros((v.nrows(), gs.len() * w));
    for (j, g) in gs.enumerate() {
        let vg = v * &k.index_axis(Axis(1), g);
        let cols = j * w..(j + 1) * w;
        out.slice_mut(s![.., cols.clone()])
            .assign(&vg.dot(&m.slice(s![.., cols])));
    }
    out
}

/// The transpose of [`proj`] for its output gradient `dz`: adds the gradient of `m`
/// to `dm` and returns the gradient of `v`.
pub(super) fn proj_back<T: Real>(
    dz: &Array2<T>,
    v: &Array2<T>,
    keep: Option<&Array3<T>>,
    (m, mut dm): (ArrayView2<T>, ArrayViewMut2<T>),
    gs: Range<usize>,
    w: usize,
) -> Array2<T> {
    let Some(k) = keep else {
        dm += &v.t().dot(dz);
        return dz.dot(&m.t());
    };
    let mut dv = Array2::<T>::zeros(v.raw_dim());
    for (j, g) in gs.enumerate() {
        let kg = k.index_axis(Axis(1), g);
        let vg = v * &kg;
        let cols = j * w..(j + 1) * w;
        let dzg = dz.slice(s![.., cols.clone()]);
        let mut dmg = dm.slice_mut(s![.., cols.clone()]);
        dmg += &vg.t().dot(&dzg);
        dv += &(dzg.dot(&m.slice(s![.., cols]).t()) * kg);
    }
    dv
}

fn to2<T: Real>(a: &ArrayD<T>) -> Result<Array2<T>> {
    a.clone()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| super::IrError(e.to_string()))
}

pub(super) fn weights<T: Real>(a: &RnnAttrs, args: &[&ArrayD<T>]) -> Result<Weights<T>> {
    let w = to2(args[1])?;
    let u = to2(args[2])?;
    let g = w.ncols();
    let (bi, br) = if !a.use_bias {
        (vec![T::zero(); g], vec![T::zero(); g])
    } else if a.cell == Cell::Gru && a.reset_after {
        let b = args[3];
        (
            b.index_axis(Axis(0), 0).iter().copied().collect(),
            b.index_axis(Axis(0), 1).iter().copied().collect(),
        )
    } else {
        (args[3].iter().copied().collect(), vec![T::zero(); g])
    };
    let keep = match a.dropout_index() {
        None => None,
        Some(i) => {
            let (b, f, gates) = (args[0].shape()[0], w.nrows(), a.gates());
            let units = a.units as usize;
            let pick = |k: usize, n: usize| match args.get(k) {
                Some(m) if m.shape() == [b, gates, n] => (*m)
                    .clone()
                    .into_dimensionality::<ndarray::Ix3>()
                    .map_err(|e| super::IrError(e.to_string())),
                _ => err(format!("rnn keep mask {k} must be [{b}, {gates}, {n}]")),
            };
            Some((pick(i, f)?, pick(i + 1, units)?))
        }
    };
    Ok(Weights { w, u, bi, br, keep })
}

fn add_row<T: Real>(m: &mut Array2<T>, b: &[T]) {
    for mut row in m.rows_mut() {
        for (v, &bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

/// Everything the backward pass needs from one step.
pub(super) struct Step<T> {
    pub h_prev: Array2<T>,
    pub c_prev: Array2<T>,
    /// Pre-activations: simple [B,u]; LSTM z [B,4u]; GRU (xz [B,3u], hz [B,3u]).
    pub z: Array2<T>,
    pub hz: Array2<T>,
    pub c: Array2<T>,
}

pub(super) fn map2<T: Real>(m: &Array2<T>, f: impl Fn(T) -> T) -> Array2<T> {
    m.mapv(f)
}

/// One GRU step forward (gates z, r, h) from the previous output `h` and the input
/// projection `xz` [B,3u]: the new output and the recurrent pre-activations [B,3u]
/// (with reset_after false, the candidate's part is (r*h) U_h).
fn gru_forward<T: Real>(
    a: &RnnAttrs,
    wt: &Weights<T>,
    h: &Array2<T>,
    xz: &Array2<T>,
) -> (Array2<T>, Array2<T>) {
    let (b, u) = (h.nrows(), a.units as usize);
    let (act_n, ract_n) = (a.activation.as_str(), a.recurrent_activation.as_str());
    let (zi, ri, hi) = (0..u, u..2 * u, 2 * u..3 * u);
    let hz = if a.reset_after {
        let mut hz = proj(h, wt.hkeep(), wt.u.view(), 0..3, u);
        add_row(&mut hz, &wt.br);
        hz
    } else {
        // z and r see h U; the candidate sees (r*h) U_h, computed below.
        let mut hz = Array2::zeros((b, 3 * u));
        hz.slice_mut(s![.., 0..2 * u]).assign(&proj(
            h,
            wt.hkeep(),
            wt.u.slice(s![.., 0..2 * u]),
            0..2,
            u,
        ));
        hz
    };
    let zg = map2(
        &(&xz.slice(s![.., zi.clone()]) + &hz.slice(s![.., zi])),
        |v| act(ract_n, v).0,
    );
    let rg = map2(
        &(&xz.slice(s![.., ri.clone()]) + &hz.slice(s![.., ri])),
        |v| act(ract_n, v).0,
    );
    let mut hz = hz;
    let pre_h = if a.reset_after {
        &xz.slice(s![.., hi.clone()]) + &(&rg * &hz.slice(s![.., hi.clone()]))
    } else {
        let rh = &rg * &gate_input(h, wt.hkeep(), 2);
        let cand = rh.dot(&wt.u.slice(s![.., hi.clone()]));
        hz.slice_mut(s![.., hi.clone()]).assign(&cand);
        &xz.slice(s![.., hi.clone()]) + &cand
    };
    let hh = map2(&pre_h, |v| act(act_n, v).0);
    let one_minus = map2(&zg, |v| T::one() - v);
    (&zg * h + &one_minus * &hh, hz)
}

/// `v` as gate `g` sees it: times its keep mask, if any.
pub(super) fn gate_input<T: Real>(v: &Array2<T>, keep: Option<&Array3<T>>, g: usize) -> Array2<T> {
    match keep {
        Some(k) => v * &k.index_axis(Axis(1), g),
        None => v.clone(),
    }
}

/// Per-step outputs [T][B,u] and the saved steps.
type Trace<T> = (Vec<Array2<T>>, Vec<Step<T>>);

/// Step `t`'s mask as a column `[B, 1]` of 1 (valid) and 0 (masked).
pub(super) fn mask_col<T: Real>(mask: &ArrayD<T>, t: usize) -> Array2<T> {
    let col: Vec<T> = (0..mask.shape()[0])
        .map(|b| {
            if mask[[b, t]] != T::zero() {
                T::one()
            } else {
                T::zero()
            }
        })
        .collect();
    Array2::from_shape_vec((col.len(), 1), col).unwrap_or_else(|_| Array2::zeros((0, 1)))
}

/// The mask argument, if the layer has one.
pub(super) fn mask_arg<'a, T>(
    a: &RnnAttrs,
    args: &[&'a ArrayD<T>],
) -> Result<Option<&'a ArrayD<T>>> {
    match a.mask_index() {
        None => Ok(None),
        Some(i) => match args.get(i) {
            Some(m) if m.ndim() == 2 => Ok(Some(*m)),
            _ => err("rnn mask must be [batch, steps]"),
        },
    }
}

/// Keras's masked step: where the mask is 0 the state keeps its previous value, and
/// the output is the previous output (or zeros with `zero_output`).
fn masked_step<T: Real>(
    a: &RnnAttrs,
    m: &Array2<T>,
    h: &mut Array2<T>,
    c: &mut Array2<T>,
    h_prev: &Array2<T>,
    c_prev: &Array2<T>,
) -> Array2<T> {
    let keep = m.mapv(|v| T::one() - v);
    let fresh = &*h * m;
    *h = &fresh + &(h_prev * &keep);
    if a.cell == Cell::Lstm {
        *c = &(&*c * m) + &(c_prev * &keep);
    }
    if a.zero_output { fresh } else { h.clone() }
}

/// Runs the cell forward; returns the per-step outputs [T][B,u] and the saved steps.
pub(super) fn forward<T: Real>(
    a: &RnnAttrs,
    x: &ArrayD<T>,
    wt: &Weights<T>,
    mask: Option<&ArrayD<T>>,
) -> Result<Trace<T>> {
    let (b, steps) = (x.shape()[0], x.shape()[1]);
    let u = a.units as usize;
    let mut h = Array2::<T>::zeros((b, u));
    let mut c = Array2::<T>::zeros((b, u));
    let mut outs = Vec::with_capacity(steps);
    let mut saved = Vec::with_capacity(steps);
    let (act_n, ract_n) = (a.activation.as_str(), a.recurrent_activation.as_str());
    for k in 0..steps {
        let t = if a.go_backwards { steps - 1 - k } else { k };
        let xt = x.slice(s![.., t, ..]).to_owned();
        let xt = xt
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| super::IrError(e.to_string()))?;
        let gates = a.gates();
        let mut xz = proj(&xt, wt.xkeep(), wt.w.view(), 0..gates, u);
        add_row(&mut xz, &wt.bi);
        let h_prev = h.clone();
        let c_prev = c.clone();
        match a.cell {
            Cell::Simple => {
                let z = &xz + &proj(&h, wt.hkeep(), wt.u.view(), 0..gates, u);
                h = map2(&z, |v| act(act_n, v).0);
                saved.push(Step {
                    h_prev,
                    c_prev,
                    z,
                    hz: Array2::zeros((0, 0)),
                    c: Array2::zeros((0, 0)),
                });
            }
            Cell::Lstm => {
                let z = &xz + &proj(&h, wt.hkeep(), wt.u.view(), 0..gates, u);
                let i = map2(&z.slice(s![.., 0..u]).to_owned(), |v| act(ract_n, v).0);
                let f = map2(&z.slice(s![.., u..2 * u]).to_owned(), |v| act(ract_n, v).0);
                let g = map2(&z.slice(s![.., 2 * u..3 * u]).to_owned(), |v| {
                    act(act_n, v).0
                });
                let o = map2(&z.slice(s![.., 3 * u..4 * u]).to_owned(), |v| {
                    act(ract_n, v).0
                });
                c = &f * &c + &i * &g;
                h = &o * &map2(&c, |v| act(act_n, v).0);
                saved.push(Step {
                    h_prev,
                    c_prev,
                    z,
                    hz: Array2::zeros((0, 0)),
                    c: c.clone(),
                });
            }
            Cell::Gru => {
                let (h_new, hz) = gru_forward(a, wt, &h, &xz);
                h = h_new;
                saved.push(Step {
                    h_prev,
                    c_prev,
                    z: xz,
                    hz,
                    c: Array2::zeros((0, 0)),
                });
            }
        }
        match mask {
            Some(mask) => {
                let m = mask_col(mask, t);
                let st = saved
                    .last()
                    .ok_or_else(|| super::IrError("no step".into()))?;
                let (hp, cp) = (st.h_prev.clone(), st.c_prev.clone());
                outs.push(masked_step(a, &m, &mut h, &mut c, &hp, &cp));
            }
            None => outs.push(h.clone()),
        }
    }
    Ok((outs, saved))
}

fn assemble<T: Real>(a: &RnnAttrs, outs: &[Array2<T>], shape: &[usize]) -> Result<ArrayD<T>> {
    let mut out = ArrayD::<T>::zeros(IxDyn(shape));
    if a.return_sequences {
        for (k, h) in outs.iter().enumerate() {
            out.slice_mut(s![.., k, ..]).assign(h);
        }
    } else if let Some(h) = outs.last() {
        out.assign(&h.clone().into_dyn());
    }
    Ok(out)
}

pub fn eval<T: Real>(op: &Op, shape: &[usize], args: &[&ArrayD<T>]) -> Result<ArrayD<T>> {
    match op {
        Op::Rnn(a) => {
            check_acts(a)?;
            let wt = weights(a, args)?;
            let (outs, _) = forward(a, args[0], &wt, mask_arg(a, args)?)?;
            assemble(a, &outs, shape)
        }
        Op::RnnGrad { attrs, wrt } => {
            check_acts(attrs)?;
            let grads = super::rnn_bptt::backward(attrs, args)?;
            let g = grads
                .into_iter()
                .nth(*wrt)
                .ok_or_else(|| super::IrError("rnn grad index".into()))?;
            g.into_shape_with_order(IxDyn(shape))
                .map_err(|e| super::IrError(e.to_string()))
        }
        _ => err("not an rnn op"),
    }
}

/// All four gradients of a recurrent layer at once, (x, kernel, recurrent, bias), each
/// in its natural shape: `RnnGrad` selects one, so a caller that needs all four can
/// run back-propagation through time once instead of four times.
pub fn grads<T: Real>(a: &RnnAttrs, args: &[&ArrayD<T>]) -> Result<Vec<ArrayD<T>>> {
    check_acts(a)?;
    super::rnn_bptt::backward(a, args)
}

fn check_acts(a: &RnnAttrs) -> Result<()> {
    for n in [&a.activation, &a.recurrent_activation] {
        if !CELL_ACTIVATIONS.contains(&n.as_str()) {
            return err(format!(
                "activation `{n}` is not supported inside a recurrent cell"
            ));
        }
    }
    Ok(())
}

pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    let Op::Rnn(attrs) = &n.op else {
        return err("rnn_grad has no vjp");
    };
    let mut args = n.args.clone();
    args.push(g);
    let mut out = Vec::new();
    for (i, &a) in n.args.iter().enumerate() {
        if attrs.is_constant(i) {
            out.push(None);
            continue;
        }
        let ty = f.ty(a).clone();
        out.push(Some(f.push_typed(
            Op::RnnGrad {
                attrs: attrs.clone(),
                wrt: i,
            },
            &args,
            ty,
        )));
    }
    Ok(out)
}
