//! Element-wise activations, `Y_ij = h(X_ij)`: ReLU and ELU.
//!
//! For any element-wise `h`, `∂Y_mn/∂X_ij = h'(X_ij) δ_mi δ_nj`, so the chain rule collapses
//! to `∂L/∂X = ∂L/∂Y ∘ h'(X)` (the write-up's "Activation module"). Both activations here
//! can write `h'` in terms of the output `Y`, so their backward passes read `Y` and the
//! forward pass need not keep `X`.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::elementwise::{map1, map2};

use crate::Float;

/// `h(x) = max(0, x)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relu;

impl Relu {
    /// `y = max(0, x)`
    pub fn forward<T: Float>(&self, x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>) {
        map1(x, y, |x| x.max(T::zero()));
    }

    /// `h'(x) = 1 if x > 0 else 0`, and `x > 0 ⇔ y > 0`, so `dx = dy · [y > 0]`.
    pub fn backward<T: Float>(&self, y: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, dx: ArrayViewMut2<'_, T>) {
        map2(y, dy, dx, |y, dy| if y > T::zero() { dy } else { T::zero() });
    }
}

/// `h(x) = x if x > 0 else α(eˣ − 1)`, with `α = 1` as in the original.
#[derive(Debug, Clone, Copy)]
pub struct Elu {
    pub alpha: f64,
}

impl Default for Elu {
    fn default() -> Self {
        Elu { alpha: 1.0 }
    }
}

impl Elu {
    /// `y = x if x > 0 else α(eˣ − 1)`
    pub fn forward<T: Float>(&self, x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>) {
        let alpha = T::of(self.alpha);
        // Branch-free so the loop vectorises: eˣ − 1 of min(x, 0) is computed everywhere and
        // selected where x ≤ 0 (eˣ − 1 rather than expm1: absolute error ~1e-7 in f32; f64
        // uses the exact exp).
        map1(x, y, |x| {
            let negative = alpha * (x.min(T::zero()).fast_exp() - T::one());
            if x > T::zero() { x } else { negative }
        });
    }

    /// `h'(x) = 1 if x > 0 else αeˣ = y + α`, so `dx = dy if y > 0 else dy·(y + α)`
    /// (for α > 0 the sign of `y` is the sign of `x`).
    pub fn backward<T: Float>(&self, y: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, dx: ArrayViewMut2<'_, T>) {
        let alpha = T::of(self.alpha);
        map2(y, dy, dx, |y, dy| if y > T::zero() { dy } else { dy * (y + alpha) });
    }
}

/// The activation between an MLP's hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Elu,
}

impl Activation {
    /// `y = h(x)`
    pub fn forward<T: Float>(&self, x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>) {
        match self {
            Activation::Relu => Relu.forward(x, y),
            Activation::Elu => Elu::default().forward(x, y),
        }
    }

    /// `dx = dy ∘ h'(x)`, computed from the output `y`.
    pub fn backward<T: Float>(&self, y: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, dx: ArrayViewMut2<'_, T>) {
        match self {
            Activation::Relu => Relu.backward(y, dy, dx),
            Activation::Elu => Elu::default().backward(y, dy, dx),
        }
    }

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Elu => "elu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, random_array};
    use ndarray::{Array2, array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn check(activation: Activation) {
        let mut rng = StdRng::seed_from_u64(2);
        for shape in [(1, 1), (3, 5), (8, 13)] {
            // Keep inputs away from the kink at 0, where the derivative jumps.
            let x = random_array(&mut rng, shape).mapv(|v: f64| if v.abs() < 1e-2 { v + 0.1 } else { v });
            check_input_gradient(
                &mut activation.clone(),
                &x,
                |a, x| {
                    let mut y = Array2::zeros(x.raw_dim());
                    a.forward(x, y.view_mut());
                    y
                },
                |a, x, dy| {
                    let mut y = Array2::zeros(x.raw_dim());
                    a.forward(x, y.view_mut());
                    let mut dx = Array2::zeros(x.raw_dim());
                    a.backward(y.view(), dy, dx.view_mut());
                    dx
                },
                &mut rng,
            );
        }
    }

    #[test]
    fn relu_gradient() {
        check(Activation::Relu);
    }

    #[test]
    fn elu_gradient() {
        check(Activation::Elu);
    }

    #[test]
    fn values() {
        let x = array![[-1.0f64, 0.0, 2.0]];
        let mut y = Array2::zeros((1, 3));
        Relu.forward(x.view(), y.view_mut());
        assert_eq!(y, array![[0.0, 0.0, 2.0]]);
        Elu::default().forward(x.view(), y.view_mut());
        assert!((y[[0, 0]] - ((-1.0f64).exp() - 1.0)).abs() < 1e-15);
        assert_eq!(y[[0, 2]], 2.0);
    }
}
