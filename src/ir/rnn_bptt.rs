//! Back-propagation through time for the recurrent primitive: recomputes the forward
//! pass, then walks the steps backwards accumulating the input, kernel, recurrent
//! kernel and bias gradients (with Keras's masked steps and recurrent dropout).

use ndarray::{Array2, ArrayD, IxDyn, s};

use super::Result;
use super::real::Real;
use super::rnn::{
    Cell, RnnAttrs, Step, Weights, act, forward, gate_input, map2, mask_arg, mask_col, proj_back,
    weights,
};

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
        let (gates, u) = (wt.w.ncols() / self.dh.ncols(), self.dh.ncols());
        let dxt = proj_back(
            dz,
            xt,
            wt.xkeep(),
            (wt.w.view(), self.dw.view_mut()),
            0..gates,
            u,
        );
        self.dx.slice_mut(s![.., t, ..]).assign(&dxt);
        self.dh = proj_back(
            dz,
            &st.h_prev,
            wt.hkeep(),
            (wt.u.view(), self.du.view_mut()),
            0..gates,
            u,
        );
        colsum(dz, &mut self.dbi);
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
        // (h_prev as the candidate's gate sees it, with recurrent dropout)
        let uh = wt.u.slice(s![.., 2 * u..3 * u]);
        let drh = da_h.dot(&uh.t());
        let hp_h = gate_input(hp, wt.hkeep(), 2);
        let rh = &rg * &hp_h;
        let mut duh = acc.du.slice_mut(s![.., 2 * u..3 * u]);
        duh += &rh.t().dot(&da_h);
        dhp = &dhp + &gate_input(&(&drh * &rg), wt.hkeep(), 2);
        &drh * &hp_h
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
    let ng = if a.reset_after { 3 } else { 2 };
    let dcols = dhz.slice(s![.., 0..ng * u]).to_owned();
    let uu = wt.u.slice(s![.., 0..ng * u]);
    let duc = acc.du.slice_mut(s![.., 0..ng * u]);
    dhp += &proj_back(&dcols, hp, wt.hkeep(), (uu, duc), 0..ng, u);
    colsum(&dxz, &mut acc.dbi);
    if a.reset_after {
        colsum(&dhz, &mut acc.dbr);
    }
    let dxt = proj_back(
        &dxz,
        xt,
        wt.xkeep(),
        (wt.w.view(), acc.dw.view_mut()),
        0..3,
        u,
    );
    acc.dx.slice_mut(s![.., t, ..]).assign(&dxt);
    acc.dh = dhp;
}

/// Back-propagation through time; returns gradients for (x, kernel, recurrent, bias).
pub(super) fn backward<T: Real>(a: &RnnAttrs, args: &[&ArrayD<T>]) -> Result<Vec<ArrayD<T>>> {
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
