//! Softmax followed by cross-entropy, fused: the training loss on logits.

use ndarray::{ArrayView2, ArrayViewMut2, Zip};

use crate::Float;
use crate::cross_entropy::check_targets;

/// `L = −(1/S) Σ_i log softmax(X_i)_{t_i}`, computed from logits without forming `log(0)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftmaxCrossEntropy;

impl SoftmaxCrossEntropy {
    /// Returns the mean loss and writes the probabilities to `probs` (kept for `backward`).
    /// Uses `log softmax(x)_t = x_t − m − log Σ_k exp(x_k − m)` with `m = max_k x_k`.
    pub fn forward<T: Float>(
        &self,
        logits: ArrayView2<'_, T>,
        targets: &[usize],
        mut probs: ArrayViewMut2<'_, T>,
    ) -> T {
        check_targets(logits.dim(), targets);
        let mut total = T::zero();
        Zip::from(probs.rows_mut())
            .and(logits.rows())
            .and(targets)
            .for_each(|mut p, x, &t| {
                let max = x.fold(T::neg_infinity(), |m, &v| m.max(v));
                let mut sum = T::zero();
                Zip::from(&mut p).and(&x).for_each(|p, &x| {
                    *p = (x - max).exp();
                    sum += *p;
                });
                p /= sum;
                total += x[t] - max - sum.ln();
            });
        -total / T::of(targets.len() as f64)
    }

    /// With `P = softmax(X)`: `∂L/∂X_ik = −(1/S)(δ_{k,t_i} − P_ik) = (P_ik − T_ik)/S`
    /// (softmax's Jacobian `P_ij(δ_jk − P_ik)` times cross-entropy's `−T_ij/(S·P_ij)`,
    /// summed over j, using `Σ_j T_ij = 1`).
    pub fn backward<T: Float>(&self, probs: ArrayView2<'_, T>, targets: &[usize], mut dlogits: ArrayViewMut2<'_, T>) {
        dlogits.assign(&probs);
        self.backward_in_place(dlogits, targets);
    }

    /// [`backward`](Self::backward) in place: turns the probabilities into `∂L/∂X`.
    pub fn backward_in_place<T: Float>(&self, mut probs: ArrayViewMut2<'_, T>, targets: &[usize]) {
        check_targets(probs.dim(), targets);
        let scale = T::one() / T::of(targets.len() as f64);
        Zip::from(probs.rows_mut()).and(targets).for_each(|mut p, &t| {
            p.map_inplace(|v| *v *= scale);
            p[t] -= scale;
        });
    }
}

/// Number of rows whose largest logit is at the target.
pub fn count_correct<T: Float>(logits: ArrayView2<'_, T>, targets: &[usize]) -> usize {
    logits
        .rows()
        .into_iter()
        .zip(targets)
        .filter(|(row, t)| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best == **t
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, random_array, relative_error};
    use ndarray::{Array2, array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn gradient_on_logits() {
        let mut rng = StdRng::seed_from_u64(6);
        for (rows, classes) in [(1, 2), (4, 10), (7, 3)] {
            let mut x = random_array(&mut rng, (rows, classes)) * 3.0;
            let targets: Vec<usize> = (0..rows).map(|i| (i * 7) % classes).collect();
            let mut p = Array2::zeros((rows, classes));
            SoftmaxCrossEntropy.forward(x.view(), &targets, p.view_mut());
            let mut dx = Array2::zeros((rows, classes));
            SoftmaxCrossEntropy.backward(p.view(), &targets, dx.view_mut());
            let numeric = numerical_gradient(x.len(), |i, h| {
                x.as_slice_mut().unwrap()[i] += h;
                let l = SoftmaxCrossEntropy.forward(x.view(), &targets, p.view_mut());
                x.as_slice_mut().unwrap()[i] -= h;
                l
            });
            assert!(relative_error(dx.as_slice().unwrap(), &numeric) < TOLERANCE);
        }
    }

    #[test]
    fn stable_for_huge_logits() {
        let mut p = Array2::zeros((2, 3));
        let l = SoftmaxCrossEntropy.forward(
            array![[1e4f32, 0.0, -1e4], [0.0, 0.0, 0.0]].view(),
            &[0, 1],
            p.view_mut(),
        );
        assert!((l - 3f32.ln() / 2.0).abs() < 1e-6, "{l}");
        assert_eq!(
            count_correct(array![[1e4f32, 0.0, -1e4], [0.0, 2.0, 1.0]].view(), &[0, 2]),
            1
        );
    }
}
