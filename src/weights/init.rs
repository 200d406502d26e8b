//! Keras's initializers: the catalog's (see [`crate::catalog::initializers`]), which
//! weights are drawn with.

pub use crate::catalog::initializers::{
    Distribution, FanMode, Initializer, TRUNCATED_STDDEV, compute_fans, householder_q,
};
