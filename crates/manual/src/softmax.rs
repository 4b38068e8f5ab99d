//! Row-wise softmax, `Y_ij = exp(X_ij) / Σ_k exp(X_ik)`.

use ndarray::{ArrayView2, ArrayViewMut2, Zip};

use crate::Float;

/// Softmax over the last axis of `[batch, classes]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Softmax;

impl Softmax {
    /// `y_i = softmax(x_i)` row by row. The row maximum is subtracted first: softmax is
    /// invariant to shifts, and `exp` then never overflows.
    pub fn forward<T: Float>(&self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) {
        Zip::from(y.rows_mut()).and(x.rows()).for_each(|mut y, x| {
            let max = x.fold(T::neg_infinity(), |m, &v| m.max(v));
            let mut sum = T::zero();
            Zip::from(&mut y).and(&x).for_each(|y, &x| {
                *y = (x - max).exp();
                sum += *y;
            });
            y /= sum;
        });
    }

    /// Backward pass from the output `y` and `dy = ∂L/∂Y`.
    ///
    /// `∂Y_ij/∂X_ik = Y_ij (δ_jk − Y_ik)` (the write-up's two cases j = n and j ≠ n), so
    /// `∂L/∂X_ik = Σ_j dY_ij Y_ij (δ_jk − Y_ik) = Y_ik (dY_ik − Σ_j dY_ij Y_ij)`:
    /// one dot product per row instead of the full Jacobian.
    pub fn backward<T: Float>(&self, y: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, mut dx: ArrayViewMut2<'_, T>) {
        Zip::from(dx.rows_mut())
            .and(y.rows())
            .and(dy.rows())
            .for_each(|mut dx, y, dy| {
                let dot = y.dot(&dy);
                Zip::from(&mut dx)
                    .and(&y)
                    .and(&dy)
                    .for_each(|dx, &y, &dy| *dx = y * (dy - dot));
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, random_array};
    use ndarray::{Array2, Axis, array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn softmax(x: ArrayView2<f64>) -> Array2<f64> {
        let mut y = Array2::zeros(x.raw_dim());
        Softmax.forward(x, y.view_mut());
        y
    }

    #[test]
    fn rows_are_distributions_even_for_huge_logits() {
        let y = softmax(array![[1000.0, 1000.0], [0.0, 2.0f64.ln()], [-1e4, 0.0]].view());
        assert!((y.sum_axis(Axis(1)) - 1.0).iter().all(|e| e.abs() < 1e-12));
        assert!((y[[0, 0]] - 0.5).abs() < 1e-12);
        assert!((y[[1, 1]] - 2.0 / 3.0).abs() < 1e-12);
        assert!(y.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn gradient() {
        let mut rng = StdRng::seed_from_u64(3);
        for shape in [(1, 1), (2, 5), (6, 10)] {
            let x = random_array(&mut rng, shape);
            check_input_gradient(
                &mut Softmax,
                &x,
                |s, x| {
                    let mut y = Array2::zeros(x.raw_dim());
                    s.forward(x, y.view_mut());
                    y
                },
                |s, x, dy| {
                    let y = softmax(x);
                    let mut dx = Array2::zeros(x.raw_dim());
                    s.backward(y.view(), dy, dx.view_mut());
                    dx
                },
                &mut rng,
            );
        }
    }
}
