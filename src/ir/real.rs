//! The float types the reference implementations run in. Every primitive file computes
//! in a generic `Real`, and the interpreter instantiates them at f32 or f64; keeping the
//! trait here lets the primitive files and the interpreter both depend on it without
//! depending on each other.

/// The float types the reference implementations and the interpreter run in.
pub trait Real:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::fmt::Debug
    + std::ops::AddAssign
    + Send
    + Sync
    + 'static
{
    fn erf(self) -> Self;
}

impl Real for f32 {
    fn erf(self) -> f32 {
        libm::erff(self)
    }
}

impl Real for f64 {
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}
