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
    /// `eˣ`, as fast as the type's accuracy allows; written without branches so that loops
    /// over slices vectorise.
    fn fast_exp(self) -> Self;
}

impl Float for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn to_f64_lossy(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn fast_exp(self) -> Self {
        exp_f32(self)
    }
}

impl Float for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn to_f64_lossy(self) -> f64 {
        self
    }
    /// The gradient checks run in `f64`: use the exact library function.
    fn fast_exp(self) -> Self {
        self.exp()
    }
}

/// `eˣ` in `f32` within 2 ulp, branch-free (Cephes' `expf`): write `x = n·ln2 + r` with
/// `|r| ≤ ln2/2`, approximate `eʳ` by its degree-6 minimax polynomial, and scale by `2ⁿ`
/// through the exponent bits. Inputs are clamped to the range where `eˣ` is a normal
/// `f32` (below it the result flushes to about 1e-38, above it saturates near 1.7e38).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds x·log₂e to the nearest integer n and leaves n in the low
    // mantissa bits: integer work only, which vectorises (an `as i32` cast does not: Rust's
    // saturating conversion goes lane by lane).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = p * r2 + r + 1.0;
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    er * scale
}

/// The logistic function `σ(x) = 1/(1 + e⁻ˣ)`, branch-free.
#[inline(always)]
pub fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

/// `tanh x = 2σ(2x) − 1`, branch-free (absolute error of a few `f32` ulps of 1, which is
/// what the gates need; `f64` checks use the exact exponential).
#[inline(always)]
pub fn tanh<T: Float>(x: T) -> T {
    let two = T::one() + T::one();
    two * sigmoid(two * x) - T::one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in -86_999..=87_999 {
            let x = i as f32 * 1e-3;
            let exact = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let ulp = (exact as f32).to_bits().abs_diff((got as f32).to_bits()) as f64;
            worst = worst.max(ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(1000.0) > 1e38);
    }

    #[test]
    fn sigmoid_and_tanh_match_the_library() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            assert!(
                (sigmoid(x) as f64 - 1.0 / (1.0 + (-(x as f64)).exp())).abs() < 1e-6,
                "σ({x})"
            );
            assert!((tanh(x) as f64 - (x as f64).tanh()).abs() < 1e-6, "tanh({x})");
            assert!((tanh(x as f64) - (x as f64).tanh()).abs() < 1e-15);
        }
        assert!((0.0..1e-30).contains(&sigmoid(-200.0f32)));
        assert!(sigmoid(200.0f32) == 1.0 && tanh(50.0f32) == 1.0 && tanh(-50.0f32) == -1.0);
    }
}
