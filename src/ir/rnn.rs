//! Recurrent layers as one primitive each (simple RNN, LSTM with gates i, f, c, o, GRU
//! with gates z, r, h), run over the time axis of any (symbolic) length. The VJP is a
//! second primitive that recomputes the forward pass and back-propagates through time.

use std::fmt;

use ndarray::{Array2, ArrayD, Axis, IxDyn, s};

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
}

impl RnnAttrs {
    /// The position of the mask among the arguments (after the bias, if any).
    pub fn mask_index(&self) -> Option<usize> {
        self.masked.then_some(3 + usize::from(self.use_bias))
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

struct Weights<T> {
    w: Array2<T>,
    u: Array2<T>,
    /// Input bias (and, for GRU with reset_after, the recurrent bias).
    bi: Vec<T>,
    br: Vec<T>,
}

fn to2<T: Real>(a: &ArrayD<T>) -> Result<Array2<T>> {
    a.clone()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| super::IrError(e.to_string()))
}

fn weights<T: Real>(a: &RnnAttrs, args: &[&ArrayD<T>]) -> Result<Weights<T>> {
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
    Ok(Weights { w, u, bi, br })
}

fn add_row<T: Real>(m: &mut Array2<T>, b: &[T]) {
    for mut row in m.rows_mut() {
        for (v, &bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

/// Everything the backward pass needs from one step.
struct Step<T> {
    h_prev: Array2<T>,
    c_prev: Array2<T>,
    /// Pre-activations: simple [B,u]; LSTM z [B,4u]; GRU (xz [B,3u], hz [B,3u]).
    z: Array2<T>,
    hz: Array2<T>,
    c: Array2<T>,
}

fn map2<T: Real>(m: &Array2<T>, f: impl Fn(T) -> T) -> Array2<T> {
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
        let mut hz = h.dot(&wt.u);
        add_row(&mut hz, &wt.br);
        hz
    } else {
        // z and r see h U; the candidate sees (r*h) U_h, computed below.
        let mut hz = Array2::zeros((b, 3 * u));
        hz.slice_mut(s![.., 0..2 * u])
            .assign(&h.dot(&wt.u.slice(s![.., 0..2 * u])));
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
        let rh = &rg * h;
        let cand = rh.dot(&wt.u.slice(s![.., hi.clone()]));
        hz.slice_mut(s![.., hi.clone()]).assign(&cand);
        &xz.slice(s![.., hi.clone()]) + &cand
    };
    let hh = map2(&pre_h, |v| act(act_n, v).0);
    let one_minus = map2(&zg, |v| T::one() - v);
    (&zg * h + &one_minus * &hh, hz)
}

/// Per-step outputs [T][B,u] and the saved steps.
type Trace<T> = (Vec<Array2<T>>, Vec<Step<T>>);

/// Step `t`'s mask as a column `[B, 1]` of 1 (valid) and 0 (masked).
fn mask_col<T: Real>(mask: &ArrayD<T>, t: usize) -> Array2<T> {
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
fn mask_arg<'a, T>(a: &RnnAttrs, args: &[&'a ArrayD<T>]) -> Result<Option<&'a ArrayD<T>>> {
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
fn forward<T: Real>(
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
        let mut xz = xt.dot(&wt.w);
        add_row(&mut xz, &wt.bi);
        let h_prev = h.clone();
        let c_prev = c.clone();
        match a.cell {
            Cell::Simple => {
                let z = &xz + &h.dot(&wt.u);
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
                let z = &xz + &h.dot(&wt.u);
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
            let grads = backward(attrs, args)?;
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
    backward(a, args)
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

/// Adds each column's sum over the rows of `m` to `acc`.
fn colsum<T: Real>(m: &Array2<T>, acc: &mut [T]) {
    for row in m.rows() {
        for (s, &v) in acc.iter_mut().zip(row) {
            *s += v;
        }
    }
}

/// The running state of back-propagation through time: the parameter and input
/// gradients accumulated so far, and the gradients flowing into the previous step's
/// hidden (and, for LSTM, cell) state.
struct Bptt<T> {
    dx: ArrayD<T>,
    dw: Array2<T>,
    du: Array2<T>,
    /// Input bias (and, for GRU with reset_after, recurrent bias) gradients.
    dbi: Vec<T>,
    dbr: Vec<T>,
    dh: Array2<T>,
    dc: Array2<T>,
}

impl<T: Real> Bptt<T> {
    fn new(x: &ArrayD<T>, wt: &Weights<T>, u: usize) -> Bptt<T> {
        let (b, steps, nin) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let gcols = wt.w.ncols();
        Bptt {
            dx: ArrayD::<T>::zeros(IxDyn(&[b, steps, nin])),
            dw: Array2::<T>::zeros(wt.w.raw_dim()),
            du: Array2::<T>::zeros(wt.u.raw_dim()),
            dbi: vec![T::zero(); gcols],
            dbr: vec![T::zero(); gcols],
            dh: Array2::<T>::zeros((b, u)),
            dc: Array2::<T>::zeros((b, u)),
        }
    }

    /// Adds step `k`'s share of the output gradient `dy` to `dh`; with `zero_output`,
    /// a masked step's output was zeros, so its share is dropped (`m` is the step's
    /// mask column).
    fn add_output_grad(
        &mut self,
        a: &RnnAttrs,
        dy: &ArrayD<T>,
        (k, steps): (usize, usize),
        m: Option<&Array2<T>>,
    ) -> Result<()> {
        let share = if a.return_sequences {
            dy.slice(s![.., k, ..]).to_owned()
        } else if k == steps - 1 {
            dy.view()
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| super::IrError(e.to_string()))?
                .to_owned()
        } else {
            return Ok(());
        };
        self.dh = match m {
            Some(m) if a.zero_output => &self.dh + &(&share * m),
            _ => &self.dh + &share,
        };
        Ok(())
    }

    /// Before a masked step: the gradients of masked rows skip the cell (they are
    /// returned, to be added back after it); the valid rows go through it.
    fn split_masked(&mut self, m: &Array2<T>) -> (Array2<T>, Array2<T>) {
        let keep = m.mapv(|v| T::one() - v);
        let skip = (&self.dh * &keep, &self.dc * &keep);
        self.dh = &self.dh * m;
        self.dc = &self.dc * m;
        skip
    }

    /// Accumulates one step of a simple or LSTM cell, whose input and recurrent
    /// projections share the pre-activation gradient `dz`.
    fn accumulate(
        &mut self,
        wt: &Weights<T>,
        st: &Step<T>,
        xt: &Array2<T>,
        t: usize,
        dz: &Array2<T>,
    ) {
        self.dw = &self.dw + &xt.t().dot(dz);
        self.du = &self.du + &st.h_prev.t().dot(dz);
        colsum(dz, &mut self.dbi);
        self.dx.slice_mut(s![.., t, ..]).assign(&dz.dot(&wt.w.t()));
        self.dh = dz.dot(&wt.u.t());
    }

    /// The gradients for (x, kernel, recurrent, bias) in their natural shapes.
    fn finish(self, a: &RnnAttrs) -> Result<Vec<ArrayD<T>>> {
        let gcols = self.dbi.len();
        let db = if a.cell == Cell::Gru && a.reset_after {
            let mut v = self.dbi;
            v.extend(self.dbr);
            ArrayD::from_shape_vec(IxDyn(&[2, gcols]), v)
        } else {
            ArrayD::from_shape_vec(IxDyn(&[gcols]), self.dbi)
        }
        .map_err(|e| super::IrError(e.to_string()))?;
        Ok(vec![self.dx, self.dw.into_dyn(), self.du.into_dyn(), db])
    }
}

/// LSTM gate gradients for one step: the pre-activation gradient [B,4u] (gates i, f,
/// c, o); carries the cell-state gradient `dc` back one step.
fn lstm_step<T: Real>(a: &RnnAttrs, st: &Step<T>, dh: &Array2<T>, dc: &mut Array2<T>) -> Array2<T> {
    let u = a.units as usize;
    let (act_n, ract_n) = (a.activation.as_str(), a.recurrent_activation.as_str());
    let z = &st.z;
    let pick = |r: std::ops::Range<usize>| z.slice(s![.., r]).to_owned();
    let (zi, zf, zg, zo) = (
        pick(0..u),
        pick(u..2 * u),
        pick(2 * u..3 * u),
        pick(3 * u..4 * u),
    );
    let i = map2(&zi, |v| act(ract_n, v).0);
    let f = map2(&zf, |v| act(ract_n, v).0);
    let g = map2(&zg, |v| act(act_n, v).0);
    let o = map2(&zo, |v| act(ract_n, v).0);
    let ac = map2(&st.c, |v| act(act_n, v).0);
    let dac = map2(&st.c, |v| act(act_n, v).1);
    let d_o = dh * &ac;
    *dc = &*dc + &(&(dh * &o) * &dac);
    let di = &*dc * &g;
    let dg = &*dc * &i;
    let df = &*dc * &st.c_prev;
    let dz_i = &di * &map2(&zi, |v| act(ract_n, v).1);
    let dz_f = &df * &map2(&zf, |v| act(ract_n, v).1);
    let dz_g = &dg * &map2(&zg, |v| act(act_n, v).1);
    let dz_o = &d_o * &map2(&zo, |v| act(ract_n, v).1);
    *dc = &*dc * &f;
    let mut dz = Array2::<T>::zeros((dh.nrows(), 4 * u));
    dz.slice_mut(s![.., 0..u]).assign(&dz_i);
    dz.slice_mut(s![.., u..2 * u]).assign(&dz_f);
    dz.slice_mut(s![.., 2 * u..3 * u]).assign(&dz_g);
    dz.slice_mut(s![.., 3 * u..4 * u]).assign(&dz_o);
    dz
}

/// One GRU step (gates z, r, h): gate gradients and their accumulation, including
/// the candidate's own recurrent path when reset_after is false.
fn gru_step<T: Real>(
    a: &RnnAttrs,
    wt: &Weights<T>,
    st: &Step<T>,
    xt: &Array2<T>,
    t: usize,
    acc: &mut Bptt<T>,
) {
    let u = a.units as usize;
    let (act_n, ract_n) = (a.activation.as_str(), a.recurrent_activation.as_str());
    let (xz, hz, hp, dh) = (&st.z, &st.hz, &st.h_prev, &acc.dh);
    let pre_z = &xz.slice(s![.., 0..u]) + &hz.slice(s![.., 0..u]);
    let pre_r = &xz.slice(s![.., u..2 * u]) + &hz.slice(s![.., u..2 * u]);
    let zg = map2(&pre_z, |v| act(ract_n, v).0);
    let rg = map2(&pre_r, |v| act(ract_n, v).0);
    let hzh = hz.slice(s![.., 2 * u..3 * u]).to_owned();
    let pre_h = if a.reset_after {
        &xz.slice(s![.., 2 * u..3 * u]) + &(&rg * &hzh)
    } else {
        &xz.slice(s![.., 2 * u..3 * u]) + &hzh
    };
    let hh = map2(&pre_h, |v| act(act_n, v).0);
    let dzg = dh * &(hp - &hh);
    let dhh = dh * &map2(&zg, |v| T::one() - v);
    let mut dhp = dh * &zg;
    let da_h = &dhh * &map2(&pre_h, |v| act(act_n, v).1);
    let b = dh.nrows();
    let mut dxz = Array2::<T>::zeros((b, 3 * u));
    let mut dhz = Array2::<T>::zeros((b, 3 * u));
    let dr = if a.reset_after {
        dhz.slice_mut(s![.., 2 * u..3 * u]).assign(&(&da_h * &rg));
        &da_h * &hzh
    } else {
        // cand = (r*h) U_h
        let uh = wt.u.slice(s![.., 2 * u..3 * u]);
        let drh = da_h.dot(&uh.t());
        let rh = &rg * hp;
        let mut duh = acc.du.slice_mut(s![.., 2 * u..3 * u]);
        duh += &rh.t().dot(&da_h);
        dhp = &dhp + &(&drh * &rg);
        &drh * hp
    };
    let dpz = &dzg * &map2(&pre_z, |v| act(ract_n, v).1);
    let dpr = &dr * &map2(&pre_r, |v| act(ract_n, v).1);
    dxz.slice_mut(s![.., 0..u]).assign(&dpz);
    dxz.slice_mut(s![.., u..2 * u]).assign(&dpr);
    dxz.slice_mut(s![.., 2 * u..3 * u]).assign(&da_h);
    dhz.slice_mut(s![.., 0..u]).assign(&dpz);
    dhz.slice_mut(s![.., u..2 * u]).assign(&dpr);
    // Recurrent path into h_prev (the candidate part was handled above when
    // reset_after is false).
    let (ucols, dcols) = if a.reset_after {
        (0..3 * u, dhz.clone())
    } else {
        (0..2 * u, dhz.slice(s![.., 0..2 * u]).to_owned())
    };
    let uu = wt.u.slice(s![.., ucols.clone()]);
    dhp = &dhp + &dcols.dot(&uu.t());
    let mut duc = acc.du.slice_mut(s![.., ucols]);
    duc += &hp.t().dot(&dcols);
    colsum(&dxz, &mut acc.dbi);
    if a.reset_after {
        colsum(&dhz, &mut acc.dbr);
    }
    acc.dw = &acc.dw + &xt.t().dot(&dxz);
    acc.dx.slice_mut(s![.., t, ..]).assign(&dxz.dot(&wt.w.t()));
    acc.dh = dhp;
}

/// Back-propagation through time; returns gradients for (x, kernel, recurrent, bias).
fn backward<T: Real>(a: &RnnAttrs, args: &[&ArrayD<T>]) -> Result<Vec<ArrayD<T>>> {
    let x = args[0];
    let dy = args[args.len() - 1];
    let wt = weights(a, args)?;
    let mask = mask_arg(a, args)?;
    let (_, saved) = forward(a, x, &wt, mask)?;
    let steps = x.shape()[1];
    let mut acc = Bptt::new(x, &wt, a.units as usize);
    for k in (0..steps).rev() {
        let t = if a.go_backwards { steps - 1 - k } else { k };
        let m = mask.map(|mask| mask_col(mask, t));
        acc.add_output_grad(a, dy, (k, steps), m.as_ref())?;
        let skip = m.as_ref().map(|m| acc.split_masked(m));
        back_step(a, &wt, &saved[k], x, t, &mut acc)?;
        if let Some((dh, dc)) = skip {
            acc.dh = &acc.dh + &dh;
            if a.cell == Cell::Lstm {
                acc.dc = &acc.dc + &dc;
            }
        }
    }
    acc.finish(a)
}

/// One step of back-propagation through time (time index `t`).
fn back_step<T: Real>(
    a: &RnnAttrs,
    wt: &Weights<T>,
    st: &Step<T>,
    x: &ArrayD<T>,
    t: usize,
    acc: &mut Bptt<T>,
) -> Result<()> {
    let act_n = a.activation.as_str();
    let xt = x
        .slice(s![.., t, ..])
        .to_owned()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| super::IrError(e.to_string()))?;
    // The gradient of the step's pre-activation, shared by the input projection and
    // h_prev's.
    let dz = match a.cell {
        Cell::Simple => &acc.dh * &map2(&st.z, |v| act(act_n, v).1),
        Cell::Lstm => lstm_step(a, st, &acc.dh, &mut acc.dc),
        Cell::Gru => {
            gru_step(a, wt, st, &xt, t, acc);
            return Ok(());
        }
    };
    acc.accumulate(wt, st, &xt, t, &dz);
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
        if Some(i) == attrs.mask_index() {
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
