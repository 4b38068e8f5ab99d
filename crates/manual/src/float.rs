//! The scalar type of the manual engine.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};

/// A floating-point scalar the engine computes in: `f32` for training, `f64` for checks.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Converts an `f64` constant (rounding for `f32`).
    fn of(v: f64) -> Self;
    /// Widens to `f64` for reporting.
    fn to_f64_lossy(self) -> f64;
}

impl Float for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn to_f64_lossy(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn to_f64_lossy(self) -> f64 {
        self
    }
}
