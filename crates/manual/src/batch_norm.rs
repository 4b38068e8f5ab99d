//! Batch normalisation over the batch, per feature (BatchNorm1d):
//! `Y_nj = γ_j X̂_nj + β_j` with `X̂_nj = (X_nj − μ_j) / √(σ²_j + ε)`, `μ_j = (1/N) Σ_n X_nj`
//! and `σ²_j = (1/N) Σ_n (X_nj − μ_j)²` during training; evaluation uses running averages
//! of `μ` and of the unbiased variance (PyTorch's convention, momentum 0.1).

use ndarray::{Array1, ArrayView2, ArrayViewMut2};

use crate::{Float, Param, Parameters};

/// Batch normalisation with a learnt gain `γ` and shift `β` per feature.
#[derive(Debug, Clone)]
pub struct BatchNorm<T> {
    /// `γ: [M]`, initialised to 1.
    pub gamma: Array1<T>,
    /// `β: [M]`, initialised to 0.
    pub beta: Array1<T>,
    /// `[M]`, accumulated by `backward`.
    pub grad_gamma: Array1<T>,
    /// `[M]`, accumulated by `backward`.
    pub grad_beta: Array1<T>,
    /// Running mean `[M]` for evaluation, initialised to 0.
    pub running_mean: Array1<T>,
    /// Running (unbiased) variance `[M]` for evaluation, initialised to 1.
    pub running_var: Array1<T>,
    /// Weight of the new batch in the running averages.
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// `μ_j` of the last training pass: the backward pass recomputes `X̂` from `X`, `μ` and
    /// `1/σ` instead of storing another `[N, M]`.
    mean: Vec<T>,
    /// `1/√(σ²_j + ε)` of the last training pass.
    rstd: Vec<T>,
}

impl<T: Float> BatchNorm<T> {
    /// A layer over `features` features: `γ = 1`, `β = 0`, `ε = 1e-5`, momentum 0.1.
    pub fn new(features: usize) -> Self {
        BatchNorm {
            gamma: Array1::ones(features),
            beta: Array1::zeros(features),
            grad_gamma: Array1::zeros(features),
            grad_beta: Array1::zeros(features),
            running_mean: Array1::zeros(features),
            running_var: Array1::ones(features),
            momentum: 0.1,
            eps: 1e-5,
            mean: vec![T::zero(); features],
            rstd: vec![T::zero(); features],
        }
    }

    /// Number of features normalised.
    pub fn features(&self) -> usize {
        self.gamma.len()
    }

    /// `y = γ ∘ x̂ + β` for `x: [N, M]`: with the batch's statistics (and an update of the
    /// running ones) when `training`, with the running statistics otherwise.
    pub fn forward(&mut self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>, training: bool) {
        let m = self.features();
        assert_eq!(x.ncols(), m, "BatchNorm over {m} features got {}", x.ncols());
        let n = x.nrows();
        let eps = T::of(self.eps);
        let (mean, rstd): (Vec<T>, Vec<T>) = if training {
            assert!(n >= 2, "BatchNorm needs at least 2 rows to train, got {n}");
            // Column sums row by row: the inner loops run along contiguous rows.
            let mut sum = vec![T::zero(); m];
            for row in x.rows() {
                sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
            let inv_n = T::one() / T::of(n as f64);
            let mean: Vec<T> = sum.iter().map(|&s| s * inv_n).collect();
            let mut sq = vec![T::zero(); m];
            for row in x.rows() {
                sq.iter_mut()
                    .zip(row)
                    .zip(&mean)
                    .for_each(|((q, &v), &mu)| *q += (v - mu) * (v - mu));
            }
            let var: Vec<T> = sq.iter().map(|&q| q * inv_n).collect();
            let (keep, new) = (T::of(1.0 - self.momentum), T::of(self.momentum));
            let unbias = T::of(n as f64 / (n as f64 - 1.0));
            for j in 0..m {
                self.running_mean[j] = keep * self.running_mean[j] + new * mean[j];
                self.running_var[j] = keep * self.running_var[j] + new * var[j] * unbias;
            }
            let rstd = var.iter().map(|&v| T::one() / (v + eps).sqrt()).collect();
            (mean, rstd)
        } else {
            (
                self.running_mean.to_vec(),
                self.running_var.iter().map(|&v| T::one() / (v + eps).sqrt()).collect(),
            )
        };
        for (mut out, row) in y.rows_mut().into_iter().zip(x.rows()) {
            for j in 0..m {
                out[j] = self.gamma[j] * (row[j] - mean[j]) * rstd[j] + self.beta[j];
            }
        }
        if training {
            (self.mean, self.rstd) = (mean, rstd);
        }
    }

    /// Backward pass of a training forward pass on `x`, given `dy = ∂L/∂Y`.
    ///
    /// Per feature `j` (dropped below), over the batch `n = 1..N`:
    /// - `∂L/∂β = Σ_n dY_n` and `∂L/∂γ = Σ_n dY_n X̂_n` (as in LayerNorm, summed over rows);
    /// - `X̂_n = (X_n − μ)·r` with `r = (σ² + ε)^{−1/2}`, `∂μ/∂X_k = 1/N`,
    ///   `∂σ²/∂X_k = 2(X_k − μ)/N`, so `∂r/∂X_k = −r³(X_k − μ)/N = −r²X̂_k/N` and
    ///   `∂X̂_n/∂X_k = r(δ_nk − 1/N) − X̂_n X̂_k r/N`;
    /// - with `dX̂ = γ·dY`: `∂L/∂X_k = Σ_n dX̂_n ∂X̂_n/∂X_k
    ///   = r·(dX̂_k − (1/N)Σ_n dX̂_n − X̂_k (1/N)Σ_n dX̂_n X̂_n)`.
    pub fn backward(&mut self, x: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, mut dx: ArrayViewMut2<'_, T>) {
        let (n, m) = x.dim();
        assert_eq!(dy.dim(), (n, m), "BatchNorm backward: dy shape differs from x");
        let (mut sum_dy, mut sum_dy_xhat) = (vec![T::zero(); m], vec![T::zero(); m]);
        for (row, drow) in x.rows().into_iter().zip(dy.rows()) {
            for j in 0..m {
                let xhat = (row[j] - self.mean[j]) * self.rstd[j];
                sum_dy[j] += drow[j];
                sum_dy_xhat[j] += drow[j] * xhat;
            }
        }
        for j in 0..m {
            self.grad_beta[j] += sum_dy[j];
            self.grad_gamma[j] += sum_dy_xhat[j];
        }
        let inv_n = T::one() / T::of(n as f64);
        for ((mut out, row), drow) in dx.rows_mut().into_iter().zip(x.rows()).zip(dy.rows()) {
            for j in 0..m {
                let xhat = (row[j] - self.mean[j]) * self.rstd[j];
                // γ·(dY − mean dY − X̂·mean(dY X̂)): dX̂ = γ·dY factors out per feature.
                out[j] = self.gamma[j] * self.rstd[j] * (drow[j] - sum_dy[j] * inv_n - xhat * sum_dy_xhat[j] * inv_n);
            }
        }
    }
}

impl<T: Float> BatchNorm<T> {
    /// `γ` and `β` with their gradients, then the running mean and variance (with empty
    /// gradients): everything a checkpoint keeps.
    pub fn parameters_and_statistics(&mut self) -> Vec<Param<'_, T>> {
        vec![
            Param {
                name: "gamma".into(),
                shape: self.gamma.shape().to_vec(),
                value: self.gamma.as_slice_mut().expect("contiguous"),
                grad: self.grad_gamma.as_slice_mut().expect("contiguous"),
            },
            Param {
                name: "beta".into(),
                shape: self.beta.shape().to_vec(),
                value: self.beta.as_slice_mut().expect("contiguous"),
                grad: self.grad_beta.as_slice_mut().expect("contiguous"),
            },
            Param {
                name: "running_mean".into(),
                shape: self.running_mean.shape().to_vec(),
                value: self.running_mean.as_slice_mut().expect("contiguous"),
                grad: &mut [],
            },
            Param {
                name: "running_var".into(),
                shape: self.running_var.shape().to_vec(),
                value: self.running_var.as_slice_mut().expect("contiguous"),
                grad: &mut [],
            },
        ]
    }
}

impl<T: Float> Parameters<T> for BatchNorm<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        let mut all = self.parameters_and_statistics();
        all.truncate(2);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn train(bn: &mut BatchNorm<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        let mut y = Array2::zeros(x.raw_dim());
        bn.forward(x, y.view_mut(), true);
        y
    }

    #[test]
    fn columns_are_normalised_and_evaluation_uses_running_statistics() {
        let mut rng = StdRng::seed_from_u64(81);
        let x = random_array(&mut rng, (64, 5)) * 3.0 + 2.0;
        let mut bn = BatchNorm::new(5);
        let y = train(&mut bn, x.view());
        for col in y.columns() {
            let mean = col.mean().unwrap();
            let var = col.mapv(|v| (v - mean) * (v - mean)).mean().unwrap();
            assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-4, "{mean} {var}");
        }
        // One update with momentum 0.1 from (0, 1).
        let mean0 = x.column(0).mean().unwrap();
        let var0 = x.column(0).var(1.0);
        assert!((bn.running_mean[0] - 0.1 * mean0).abs() < 1e-12);
        assert!((bn.running_var[0] - (0.9 + 0.1 * var0)).abs() < 1e-12);
        // Evaluation normalises with the running statistics, not the batch's.
        let mut y = Array2::zeros(x.raw_dim());
        bn.forward(x.view(), y.view_mut(), false);
        let expected = (x[[3, 0]] - bn.running_mean[0]) / (bn.running_var[0] + 1e-5).sqrt();
        assert!((y[[3, 0]] - expected).abs() < 1e-12);
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(82);
        for (rows, features) in [(2, 3), (7, 4), (16, 9)] {
            let mut bn = BatchNorm::new(features);
            bn.gamma = random_array(&mut rng, features);
            bn.beta = random_array(&mut rng, features);
            let x = random_array(&mut rng, (rows, features));
            let backward = |bn: &mut BatchNorm<f64>, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                train(bn, x);
                let mut dx = Array2::zeros(x.raw_dim());
                bn.backward(x, dy, dx.view_mut());
                dx
            };
            check_input_gradient(&mut bn, &x, train, backward, &mut rng);
            check_parameter_gradients(&mut bn, &x, train, backward, &mut rng);
        }
    }
}
