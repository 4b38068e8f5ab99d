//! Layer normalisation over the features of each example:
//! `Y_sj = γ_j X̂_sj + β_j` with `X̂_sj = (X_sj − μ_s) / √(σ²_s + ε)`,
//! `μ_s = (1/M) Σ_j X_sj` and `σ²_s = (1/M) Σ_j (X_sj − μ_s)²` (biased, as PyTorch).

use ndarray::{Array1, ArrayView2, ArrayViewMut2, Axis, Zip};

use crate::{Float, Param, Parameters};

/// Layer normalisation with a learnt gain `γ` and shift `β` per feature.
#[derive(Debug, Clone)]
pub struct LayerNorm<T> {
    /// `γ: [M]`, initialised to 1.
    pub gamma: Array1<T>,
    /// `β: [M]`, initialised to 0.
    pub beta: Array1<T>,
    /// `[M]`, accumulated by `backward`.
    pub grad_gamma: Array1<T>,
    /// `[M]`, accumulated by `backward`.
    pub grad_beta: Array1<T>,
    /// Added to the variance so that constant rows do not divide by zero.
    pub eps: f64,
    /// `μ_s` of the last forward pass, one per row: the backward pass needs `X̂`, and with
    /// `μ` and `1/σ` kept it recomputes `X̂` from `X` instead of storing a second `[S, M]`.
    mean: Vec<T>,
    /// `1/√(σ²_s + ε)` of the last forward pass, one per row (see `mean`).
    rstd: Vec<T>,
}

impl<T: Float> LayerNorm<T> {
    /// A layer over `features` features with `γ = 1`, `β = 0`, `ε = 1e-5`.
    pub fn new(features: usize) -> Self {
        LayerNorm {
            gamma: Array1::ones(features),
            beta: Array1::zeros(features),
            grad_gamma: Array1::zeros(features),
            grad_beta: Array1::zeros(features),
            eps: 1e-5,
            mean: Vec::new(),
            rstd: Vec::new(),
        }
    }

    /// Number of features normalised.
    pub fn features(&self) -> usize {
        self.gamma.len()
    }

    /// `y = γ ∘ x̂ + β` for `x: [S, M]`; keeps each row's mean and reciprocal deviation.
    pub fn forward(&mut self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) {
        assert_eq!(
            x.ncols(),
            self.features(),
            "LayerNorm over {} features got {}",
            self.features(),
            x.ncols()
        );
        let m = T::of(x.ncols() as f64);
        let eps = T::of(self.eps);
        self.mean.resize(x.nrows(), T::zero());
        self.rstd.resize(x.nrows(), T::zero());
        Zip::from(y.rows_mut())
            .and(x.rows())
            .and(&mut self.mean)
            .and(&mut self.rstd)
            .for_each(|mut y, x, mean, rstd| {
                // Two passes (mean, then centred squares): stable where E[x²] − E[x]² is not.
                *mean = x.sum() / m;
                let var = x.fold(T::zero(), |acc, &v| acc + (v - *mean) * (v - *mean)) / m;
                *rstd = T::one() / (var + eps).sqrt();
                Zip::from(&mut y)
                    .and(&x)
                    .and(&self.gamma)
                    .and(&self.beta)
                    .for_each(|y, &x, &g, &b| *y = g * (x - *mean) * *rstd + b);
            });
    }

    /// Backward pass from the forward input `x` and `dy = ∂L/∂Y`, after the write-up:
    /// - `∂L/∂γ_i = Σ_s dY_si X̂_si` and `∂L/∂β_i = Σ_s dY_si`;
    /// - with `g_sj = dY_sj γ_j` (the gradient with respect to `X̂`) and
    ///   `∂X̂_sj/∂X_ri = δ_sr (δ_ij − 1/M − X̂_sj X̂_si / M) / √(σ²_s + ε)`,
    ///   `∂L/∂X_ri = 1/(M√(σ²_r + ε)) [M g_ri − Σ_j g_rj − X̂_ri Σ_j g_rj X̂_rj]`.
    ///   (The write-up's last factor `X̂_ri − (1/M) Σ_p X̂_rp` is `X̂_ri`: `X̂` has zero mean.)
    pub fn backward(&mut self, x: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, mut dx: ArrayViewMut2<'_, T>) {
        assert_eq!(x.nrows(), self.mean.len(), "backward without a matching forward pass");
        let m = T::of(x.ncols() as f64);
        let gamma = &self.gamma;
        // Parameter gradients: two reductions over the batch.
        Zip::from(x.rows())
            .and(dy.rows())
            .and(&self.mean)
            .and(&self.rstd)
            .for_each(|x, dy, &mean, &rstd| {
                Zip::from(&mut self.grad_gamma)
                    .and(&mut self.grad_beta)
                    .and(&x)
                    .and(&dy)
                    .for_each(|gg, gb, &x, &dy| {
                        *gg += dy * (x - mean) * rstd;
                        *gb += dy;
                    });
            });
        // Input gradient, row by row: first the two sums, then every element.
        Zip::from(dx.rows_mut())
            .and(x.rows())
            .and(dy.rows())
            .and(&self.mean)
            .and(&self.rstd)
            .for_each(|mut dx, x, dy, &mean, &rstd| {
                let mut sum_g = T::zero();
                let mut sum_g_xhat = T::zero();
                Zip::from(&x).and(&dy).and(gamma).for_each(|&x, &dy, &g| {
                    let gj = dy * g;
                    sum_g += gj;
                    sum_g_xhat += gj * (x - mean) * rstd;
                });
                Zip::from(&mut dx)
                    .and(&x)
                    .and(&dy)
                    .and(gamma)
                    .for_each(|dx, &x, &dy, &g| {
                        let xhat = (x - mean) * rstd;
                        *dx = rstd / m * (m * dy * g - sum_g - xhat * sum_g_xhat);
                    });
            });
    }

    /// Per-row mean of the last forward input.
    pub fn last_mean(&self) -> &[T] {
        &self.mean
    }
}

impl<T: Float> Parameters<T> for LayerNorm<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        vec![
            Param {
                name: "gamma".into(),
                shape: vec![self.gamma.len()],
                value: self.gamma.as_slice_mut().expect("contiguous"),
                grad: self.grad_gamma.as_slice_mut().expect("contiguous"),
            },
            Param {
                name: "beta".into(),
                shape: vec![self.beta.len()],
                value: self.beta.as_slice_mut().expect("contiguous"),
                grad: self.grad_beta.as_slice_mut().expect("contiguous"),
            },
        ]
    }
}

/// Mean and (biased) variance of each row, for tests and diagnostics.
pub fn row_moments<T: Float>(y: ArrayView2<'_, T>) -> (Array1<T>, Array1<T>) {
    let mean = y.mean_axis(Axis(1)).expect("rows are not empty");
    let var = y.var_axis(Axis(1), T::zero());
    (mean, var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn run(ln: &mut LayerNorm<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        let mut y = Array2::zeros(x.raw_dim());
        ln.forward(x, y.view_mut());
        y
    }

    #[test]
    fn rows_are_normalised_and_beta_shifts_them() {
        let mut rng = StdRng::seed_from_u64(7);
        let x = random_array(&mut rng, (8, 32)) * 5.0 + 3.0;
        let mut ln = LayerNorm::new(32);
        let (mean, var) = row_moments(run(&mut ln, x.view()).view());
        assert!(mean.iter().all(|m| m.abs() < 1e-12), "{mean}");
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-5), "{var}"); // ε = 1e-5 lowers it a hair
        ln.beta.fill(2.5);
        let (mean, _) = row_moments(run(&mut ln, x.view()).view());
        assert!(mean.iter().all(|m| (m - 2.5).abs() < 1e-12), "{mean}");
        // With a non-uniform β, each row's mean is β's mean (x̂ sums to zero in each row).
        ln.beta = random_array(&mut rng, 32);
        let (mean, _) = row_moments(run(&mut ln, x.view()).view());
        let beta_mean = ln.beta.mean().unwrap();
        assert!(mean.iter().all(|m| (m - beta_mean).abs() < 1e-12));
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(8);
        for (rows, features) in [(1, 2), (3, 7), (10, 16)] {
            let mut ln = LayerNorm::new(features);
            ln.gamma = random_array(&mut rng, features);
            ln.beta = random_array(&mut rng, features);
            let x = random_array(&mut rng, (rows, features));
            let backward = |ln: &mut LayerNorm<f64>, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                run(ln, x);
                let mut dx = Array2::zeros(x.raw_dim());
                ln.backward(x, dy, dx.view_mut());
                dx
            };
            check_input_gradient(&mut ln, &x, run, backward, &mut rng);
            check_parameter_gradients(&mut ln, &x, run, backward, &mut rng);
        }
    }
}
