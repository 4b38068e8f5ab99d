//! Cross-entropy on probabilities, `L = −(1/S) Σ_ik T_ik log X_ik`, as the write-up derives
//! it (T one-hot, S the batch size). Training uses the fused, stable
//! [`SoftmaxCrossEntropy`](crate::SoftmaxCrossEntropy) instead; this one is kept to check
//! the derivation and the composition softmax → cross-entropy.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::Float;

/// Mean negative log-probability of the target classes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossEntropy;

impl CrossEntropy {
    /// `L = −(1/S) Σ_i log X_{i,t_i}` for probabilities `x: [S, classes]` and targets `t`.
    pub fn forward<T: Float>(&self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        check_targets(x.dim(), targets);
        let total: T = targets.iter().enumerate().map(|(i, &t)| x[[i, t]].ln()).sum();
        -total / T::of(targets.len() as f64)
    }

    /// `∂L/∂X_mn = −(1/S) Σ_ik T_ik (1/X_ik) δ_im δ_kn = −(1/S) T_mn / X_mn`:
    /// zero except at each row's target.
    pub fn backward<T: Float>(&self, x: ArrayView2<'_, T>, targets: &[usize], mut dx: ArrayViewMut2<'_, T>) {
        check_targets(x.dim(), targets);
        let scale = -T::one() / T::of(targets.len() as f64);
        dx.fill(T::zero());
        for (i, &t) in targets.iter().enumerate() {
            dx[[i, t]] = scale / x[[i, t]];
        }
    }
}

/// Panics unless there is one target per row and every target names a column.
pub(crate) fn check_targets((rows, classes): (usize, usize), targets: &[usize]) {
    assert_eq!(rows, targets.len(), "{rows} rows but {} targets", targets.len());
    if let Some(&t) = targets.iter().find(|&&t| t >= classes) {
        panic!("target {t} is not one of the {classes} classes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, random_array, relative_error};
    use crate::{Softmax, SoftmaxCrossEntropy};
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn gradient_on_probabilities() {
        let mut rng = StdRng::seed_from_u64(4);
        let logits = random_array(&mut rng, (5, 4));
        let mut x = Array2::zeros((5, 4));
        Softmax.forward(logits.view(), x.view_mut());
        let targets = [0, 3, 1, 1, 2];
        let mut dx = Array2::zeros((5, 4));
        CrossEntropy.backward(x.view(), &targets, dx.view_mut());
        let numeric = numerical_gradient(x.len(), |i, h| {
            x.as_slice_mut().unwrap()[i] += h;
            let l = CrossEntropy.forward(x.view(), &targets);
            x.as_slice_mut().unwrap()[i] -= h;
            l
        });
        assert!(relative_error(dx.as_slice().unwrap(), &numeric) < TOLERANCE);
    }

    #[test]
    fn softmax_then_cross_entropy_equals_the_fused_layer() {
        let mut rng = StdRng::seed_from_u64(5);
        let logits = random_array(&mut rng, (6, 3));
        let targets = [2, 0, 1, 1, 0, 2];
        let mut p = Array2::zeros((6, 3));
        Softmax.forward(logits.view(), p.view_mut());
        let composed = CrossEntropy.forward(p.view(), &targets);
        // Chain the two hand-written backward passes...
        let mut dp = Array2::zeros((6, 3));
        CrossEntropy.backward(p.view(), &targets, dp.view_mut());
        let mut dlogits = Array2::zeros((6, 3));
        Softmax.backward(p.view(), dp.view(), dlogits.view_mut());
        // ... and compare with the fused layer, whose gradient is (P − T)/S.
        let mut fused_p = Array2::zeros((6, 3));
        let fused = SoftmaxCrossEntropy.forward(logits.view(), &targets, fused_p.view_mut());
        let mut fused_d = Array2::zeros((6, 3));
        SoftmaxCrossEntropy.backward(fused_p.view(), &targets, fused_d.view_mut());
        assert!((composed - fused).abs() < 1e-12);
        assert!(relative_error(dlogits.as_slice().unwrap(), fused_d.as_slice().unwrap()) < 1e-12);
    }

    #[test]
    #[should_panic(expected = "target 4 is not one of the 4 classes")]
    fn rejects_out_of_range_targets() {
        CrossEntropy.forward(Array2::<f64>::ones((1, 4)).view(), &[4]);
    }
}
