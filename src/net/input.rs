//! Typed inputs for prediction: f32 or i32 arrays of any dimension, checked against
//! the spec's dtype (floats for f32 inputs, integers for integer inputs).

use ndarray::{ArrayD, ArrayView, ArrayViewD, Dimension};

use super::Net;
use crate::data::{Dtype, Kind};
use crate::error::Error;

/// One input array for [`Net::predict_typed`]: floats or integers, of any dimension.
/// Built with `.into()` from an `ArrayView` (`x.view().into()`), no `into_dyn` needed.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// Floats, for an f32 input.
    F32(ArrayViewD<'a, f32>),
    /// Integers (token ids, class indices), for an integer input.
    I32(ArrayViewD<'a, i32>),
}

impl<'a, D: Dimension> From<ArrayView<'a, f32, D>> for Input<'a> {
    fn from(a: ArrayView<'a, f32, D>) -> Self {
        Input::F32(a.into_dyn())
    }
}

impl<'a, D: Dimension> From<ArrayView<'a, i32, D>> for Input<'a> {
    fn from(a: ArrayView<'a, i32, D>) -> Self {
        Input::I32(a.into_dyn())
    }
}

/// The largest integer every f32 holds exactly (2^24).
const EXACT: i32 = 16_777_216;

impl Input<'_> {
    /// The array as kiln computes with it (integers as exact f32 values), and its dtype.
    fn to_f32(&self, name: &str) -> Result<(ArrayD<f32>, Dtype), Error> {
        let dtype = |kind| Dtype {
            kind,
            size: 4,
            signed: true,
            big_endian: false,
        };
        match self {
            Input::F32(a) => Ok((a.to_owned(), dtype(Kind::Float))),
            Input::I32(a) => {
                if let Some(v) = a.iter().find(|v| !(-EXACT..=EXACT).contains(*v)) {
                    return Err(Error::Invalid(format!(
                        "the input `{name}` holds {v}, beyond ±16,777,216, which kiln cannot use exactly"
                    )));
                }
                Ok((a.mapv(|v| v as f32), dtype(Kind::Int)))
            }
        }
    }
}

impl Net {
    /// [`Net::predict`] on typed inputs: f32 or i32 arrays of any dimension, each
    /// checked against the spec's dtype (an i32 array for an f32 input, or an f32
    /// array for an integer input, is refused), shapes and embedding ranges.
    ///
    /// ```
    /// # fn main() -> Result<(), kiln::Error> {
    /// let spec = "inputs:\n  tokens: {shape: [batch, seq], dtype: i32}\nlayers:\n  - embedding: {input_dim: 100, output_dim: 4}\n  - global_average_pooling1d: {}\n";
    /// let net = kiln::Model::from_source(spec, "m", "m.yaml")?.compile(&kiln::Options::default())?;
    /// let ids = kiln::ndarray::Array2::<i32>::zeros((1, 8)); // token ids, no conversion
    /// let out = net.predict_typed(&[("tokens", ids.view().into())])?;
    /// assert_eq!(out.shape(), &[1, 4]);
    /// # Ok(()) }
    /// ```
    pub fn predict_typed(&self, inputs: &[(&str, Input)]) -> Result<ArrayD<f32>, Error> {
        let mut outs = self.predict_all_typed(inputs)?;
        if outs.len() != 1 {
            return Err(Error::Invalid(format!(
                "the model has {} outputs; use `predict_all_typed`",
                outs.len()
            )));
        }
        Ok(outs.remove(0).1)
    }

    /// [`Net::predict_all`] on typed inputs (see [`Net::predict_typed`]).
    pub fn predict_all_typed(
        &self,
        inputs: &[(&str, Input)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, Error> {
        let mut owned = Vec::with_capacity(inputs.len());
        for (n, a) in inputs {
            let (data, dtype) = a.to_f32(n)?;
            owned.push((*n, data, dtype));
        }
        let with_types: Vec<(&str, ArrayViewD<f32>, Option<Dtype>)> = owned
            .iter()
            .map(|(n, a, d)| (*n, a.view(), Some(*d)))
            .collect();
        crate::data::check_predict_inputs(&self.graph, &with_types, &|_| None)?;
        let views: Vec<(&str, ArrayViewD<f32>)> =
            owned.iter().map(|(n, a, _)| (*n, a.view())).collect();
        self.predict_checked(&views)
    }
}
