//! Inverted dropout: during training each value is kept with probability `p` and scaled by
//! `1/p` (so that evaluation, which keeps everything, needs no rescaling), else zeroed.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use rand::{Rng, RngExt};

use crate::Float;

/// Dropout with keep probability `p`, and the mask of the last training pass.
#[derive(Debug, Clone)]
pub struct Dropout<T> {
    /// Keep probability `p ∈ (0, 1]`.
    pub keep_prob: f64,
    /// `m_ij ∈ {0, 1/p}` of the last training pass: the backward pass needs it.
    mask: Array2<T>,
}

impl<T: Float> Dropout<T> {
    /// Dropout keeping each value with probability `keep_prob`.
    pub fn new(keep_prob: f64) -> Self {
        assert!(
            keep_prob > 0.0 && keep_prob <= 1.0,
            "keep probability {keep_prob} outside (0, 1]"
        );
        Dropout {
            keep_prob,
            mask: Array2::zeros((0, 0)),
        }
    }

    /// `y = x ⊙ m` with a fresh mask `m_ij = 1/p` with probability `p`, else 0 (training);
    /// `y = x` when `rng` is `None` (evaluation).
    pub fn forward(&mut self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>, rng: Option<&mut impl Rng>) {
        if self.mask.dim() != x.dim() {
            self.mask = Array2::zeros(x.raw_dim());
        }
        let Some(rng) = rng.filter(|_| self.keep_prob < 1.0) else {
            y.assign(&x);
            self.mask.fill(T::one());
            return;
        };
        let (p, scale) = (self.keep_prob, T::of(1.0 / self.keep_prob));
        self.mask
            .iter_mut()
            .for_each(|m| *m = if rng.random::<f64>() < p { scale } else { T::zero() });
        Zip::from(&mut y)
            .and(&x)
            .and(&self.mask)
            .for_each(|y, &x, &m| *y = x * m);
    }

    /// `Y = X ⊙ M` is linear in `X` with a diagonal Jacobian: `∂L/∂X = ∂L/∂Y ⊙ M`.
    pub fn backward(&self, dy: ArrayView2<'_, T>, mut dx: ArrayViewMut2<'_, T>) {
        assert_eq!(
            dy.dim(),
            self.mask.dim(),
            "Dropout backward: shape differs from the forward pass"
        );
        Zip::from(&mut dx)
            .and(&dy)
            .and(&self.mask)
            .for_each(|dx, &dy, &m| *dx = dy * m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn keeps_the_expected_share_scaled_and_evaluation_is_the_identity() {
        let mut rng = StdRng::seed_from_u64(61);
        let x = Array2::<f64>::ones((200, 50));
        let mut y = Array2::zeros((200, 50));
        let mut d = Dropout::new(0.8);
        d.forward(x.view(), y.view_mut(), Some(&mut rng));
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.8).abs() < 0.02, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-12));
        d.forward(x.view(), y.view_mut(), None::<&mut StdRng>);
        assert_eq!(y, x);
    }

    #[test]
    fn gradient_matches_central_differences_for_a_fixed_mask() {
        let mut rng = StdRng::seed_from_u64(62);
        let x = random_array(&mut rng, (4, 6));
        let mut d = Dropout::new(0.5);
        let mut y = Array2::zeros((4, 6));
        d.forward(x.view(), y.view_mut(), Some(&mut rng));
        // The mask stays fixed: replay it as a product.
        let mask = d.mask.clone();
        let forward = |_: &mut Dropout<f64>, x: ArrayView2<f64>| &x * &mask;
        let backward = |d: &mut Dropout<f64>, _: ArrayView2<f64>, dy: ArrayView2<f64>| {
            let mut dx = Array2::zeros(dy.raw_dim());
            d.backward(dy, dx.view_mut());
            dx
        };
        check_input_gradient(&mut d, &x, forward, backward, &mut rng);
    }
}
