//! Batch normalisation over the batch, per feature (BatchNorm1d):
//! `Y_nj = γ_j X̂_nj + β_j` with `X̂_nj = (X_nj − μ_j) / √(σ²_j + ε)`, `μ_j = (1/N) Σ_n X_nj`
//! and `σ²_j = (1/N) Σ_n (X_nj − μ_j)²` during training; evaluation uses running averages
//! of `μ` and of the unbiased variance (PyTorch's convention, momentum 0.1).

use ndarray::{Array1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::param::prefixed;
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
    pub fn forward(&mut self, x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>, training: bool) {
        self.forward_then(x, y, training, false);
    }

    /// `y = max(0, γ ∘ x̂ + β)`: [`forward`](Self::forward) and a ReLU in one pass over the
    /// output (the pre-activation block's `ReLU(BatchNorm(x))`).
    pub fn forward_relu(&mut self, x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>, training: bool) {
        self.forward_then(x, y, training, true);
    }

    fn forward_then(&mut self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>, training: bool, relu: bool) {
        let m = self.features();
        assert_eq!(x.ncols(), m, "BatchNorm over {m} features got {}", x.ncols());
        assert_eq!(y.dim(), x.dim(), "BatchNorm output shape differs from its input");
        let n = x.nrows();
        let eps = T::of(self.eps);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let (mean, rstd): (Vec<T>, Vec<T>) = if training {
            assert!(n >= 2, "BatchNorm needs at least 2 rows to train, got {n}");
            let inv_n = T::one() / T::of(n as f64);
            let mean: Vec<T> = column_sums(xs, m, |s, row| {
                s.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            })
            .iter()
            .map(|&s| s * inv_n)
            .collect();
            let var: Vec<T> = column_sums(xs, m, |q, row| {
                q.iter_mut()
                    .zip(row)
                    .zip(&mean)
                    .for_each(|((q, &v), &mu)| *q += (v - mu) * (v - mu));
            })
            .iter()
            .map(|&q| q * inv_n)
            .collect();
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
        // y = x·a + c per feature, with a = γ·r and c = β − μ·a.
        let a: Vec<T> = (0..m).map(|j| self.gamma[j] * rstd[j]).collect();
        let c: Vec<T> = (0..m).map(|j| self.beta[j] - mean[j] * a[j]).collect();
        let ys = y.as_slice_mut().expect("the output is contiguous");
        for_each_chunk(ys, CHUNK_ROWS * m, |chunk, ys| {
            let xs = &xs[chunk * CHUNK_ROWS * m..][..ys.len()];
            for (out, row) in ys.chunks_exact_mut(m).zip(xs.chunks_exact(m)) {
                for j in 0..m {
                    let v = row[j] * a[j] + c[j];
                    out[j] = if relu { v.max(T::zero()) } else { v };
                }
            }
        });
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
    pub fn backward(&mut self, x: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, dx: ArrayViewMut2<'_, T>) {
        self.backward_fused(x, dy, None, dx, None);
    }

    /// The pre-activation block's backward pass through `ReLU(BatchNorm(x))` plus its
    /// residual path, in one sweep: `dx = BatchNorm'(dY·[relu_out > 0]) + residual`, where
    /// `relu_out` is [`forward_relu`](Self::forward_relu)'s output and `dy = ∂L/∂relu_out`
    /// (ReLU's derivative is `[out > 0]`, and `x + f(x)` passes the gradient through).
    pub fn backward_relu_residual(
        &mut self,
        x: ArrayView2<'_, T>,
        dy: ArrayView2<'_, T>,
        relu_out: ArrayView2<'_, T>,
        dx: ArrayViewMut2<'_, T>,
        residual: ArrayView2<'_, T>,
    ) {
        self.backward_fused(x, dy, Some(relu_out), dx, Some(residual));
    }

    /// The backward pass through `ReLU(BatchNorm(x))` in one sweep: `dx =
    /// BatchNorm'(dY·[relu_out > 0])` for [`forward_relu`](Self::forward_relu)'s output.
    pub fn backward_relu(
        &mut self,
        x: ArrayView2<'_, T>,
        dy: ArrayView2<'_, T>,
        relu_out: ArrayView2<'_, T>,
        dx: ArrayViewMut2<'_, T>,
    ) {
        self.backward_fused(x, dy, Some(relu_out), dx, None);
    }

    fn backward_fused(
        &mut self,
        x: ArrayView2<'_, T>,
        dy: ArrayView2<'_, T>,
        relu_out: Option<ArrayView2<'_, T>>,
        mut dx: ArrayViewMut2<'_, T>,
        residual: Option<ArrayView2<'_, T>>,
    ) {
        let (n, m) = x.dim();
        for (name, other) in [
            ("dy", Some(dy.dim())),
            ("dx", Some(dx.dim())),
            ("relu_out", relu_out.map(|r| r.dim())),
            ("residual", residual.map(|r| r.dim())),
        ] {
            if let Some(d) = other {
                assert_eq!(d, (n, m), "BatchNorm backward: {name} shape differs from x");
            }
        }
        let (x, dy) = (x.as_standard_layout(), dy.as_standard_layout());
        let (xs, dys) = (x.as_slice().expect("standard"), dy.as_slice().expect("standard"));
        let relu = relu_out.map(|r| r.to_slice().expect("relu_out in standard layout"));
        let residual = residual.map(|r| r.to_slice().expect("residual in standard layout"));
        let (mean, rstd) = (&self.mean, &self.rstd);
        // Row r of dY after ReLU's derivative, `[relu_out > 0]·dY` (written to `scratch`), or
        // of dY itself without a ReLU.
        fn gate<'a, T: Float>(dy: &'a [T], relu_out: Option<&[T]>, scratch: &'a mut [T]) -> &'a [T] {
            let Some(out) = relu_out else { return dy };
            for ((g, &d), &o) in scratch.iter_mut().zip(dy).zip(out) {
                *g = if o > T::zero() { d } else { T::zero() };
            }
            scratch
        }
        let row = |r: usize| r * m..(r + 1) * m;
        // Σ dY and Σ dY·X̂ per feature, in one pass (the third part of the accumulator row is
        // scratch for the gated dY).
        let sums = column_sums_indexed(n, 3 * m, |s, r| {
            let (sums, scratch) = s.split_at_mut(2 * m);
            let g = gate(&dys[row(r)], relu.map(|o| &o[row(r)]), scratch);
            let (sum_dy, sum_dy_xhat) = sums.split_at_mut(m);
            for ((((s, sx), &g), &x), (&mu, &r)) in sum_dy
                .iter_mut()
                .zip(sum_dy_xhat.iter_mut())
                .zip(g)
                .zip(&xs[row(r)])
                .zip(mean.iter().zip(rstd))
            {
                *s += g;
                *sx += g * ((x - mu) * r);
            }
        });
        let (sum_dy, sum_dy_xhat) = (&sums[..m], &sums[m..2 * m]);
        for j in 0..m {
            self.grad_beta[j] += sum_dy[j];
            self.grad_gamma[j] += sum_dy_xhat[j];
        }
        let inv_n = T::one() / T::of(n as f64);
        // γ·r·(dY − mean dY − X̂·mean(dY X̂)): dX̂ = γ·dY factors out per feature.
        let scale: Vec<T> = (0..m).map(|j| self.gamma[j] * rstd[j]).collect();
        let (mean_dy, mean_dy_xhat): (Vec<T>, Vec<T>) = (
            sum_dy.iter().map(|&s| s * inv_n).collect(),
            sum_dy_xhat.iter().map(|&s| s * inv_n).collect(),
        );
        let dxs = dx.as_slice_mut().expect("dx is contiguous");
        for_each_chunk(dxs, CHUNK_ROWS * m, |chunk, out| {
            let mut scratch = vec![T::zero(); if relu.is_some() { m } else { 0 }];
            for (k, out) in out.chunks_exact_mut(m).enumerate() {
                let r = chunk * CHUNK_ROWS + k;
                let g = gate(&dys[row(r)], relu.map(|o| &o[row(r)]), &mut scratch);
                for ((((o, &g), &x), (&mu, &r)), ((&sc, &md), &mdx)) in out
                    .iter_mut()
                    .zip(g)
                    .zip(&xs[row(r)])
                    .zip(mean.iter().zip(rstd))
                    .zip(scale.iter().zip(&mean_dy).zip(&mean_dy_xhat))
                {
                    *o = sc * (g - md - (x - mu) * r * mdx);
                }
                if let Some(res) = residual {
                    out.iter_mut().zip(&res[r * m..(r + 1) * m]).for_each(|(o, &v)| *o += v);
                }
            }
        });
    }
}

/// Rows per parallel task of BatchNorm's passes: fixed, so that the order of every sum —
/// and with it the result — does not depend on the number of threads.
const CHUNK_ROWS: usize = 512;

/// `f(i, chunk)` for the `chunk_len`-long chunks of `values`, in parallel when there is more
/// than one.
fn for_each_chunk<T: Float>(values: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if values.len() <= chunk_len {
        f(0, values);
    } else {
        values.par_chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Column sums over the rows of a row-major `[rows, m]` slice: `add(sums, row)` adds one
/// row; chunks of [`CHUNK_ROWS`] rows in parallel, their partial sums added in order.
fn column_sums<T: Float>(values: &[T], m: usize, add: impl Fn(&mut [T], &[T]) + Sync) -> Vec<T> {
    let rows = values.len() / m;
    column_sums_indexed(rows, m, |s, r| add(s, &values[r * m..(r + 1) * m]))
}

/// Sums of `width` accumulators over `rows` rows: `add(sums, r)` adds row `r`; chunks of
/// [`CHUNK_ROWS`] rows in parallel, their partial sums added in order.
fn column_sums_indexed<T: Float>(rows: usize, width: usize, add: impl Fn(&mut [T], usize) + Sync) -> Vec<T> {
    if rows <= CHUNK_ROWS {
        // One chunk: no task to hand to another thread (the MLP's batches of 200).
        let mut total = vec![T::zero(); width];
        (0..rows).for_each(|r| add(&mut total, r));
        return total;
    }
    let partials: Vec<Vec<T>> = (0..rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|chunk| {
            let mut s = vec![T::zero(); width];
            for r in chunk * CHUNK_ROWS..((chunk + 1) * CHUNK_ROWS).min(rows) {
                add(&mut s, r);
            }
            s
        })
        .collect();
    let mut total = vec![T::zero(); width];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

impl<T: Float> BatchNorm<T> {
    /// `γ` and `β` with their gradients, and the running mean and variance (with empty
    /// gradients): together, everything a checkpoint keeps.
    fn parameters_and_statistics(&mut self) -> (Vec<Param<'_, T>>, Vec<Param<'_, T>>) {
        let parameters = vec![
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
        ];
        let statistics = vec![
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
        ];
        (parameters, statistics)
    }

    /// Appends `γ` and `β` to `parameters` and the running statistics to `statistics`, named
    /// `<prefix>.…`: how a model lists what a checkpoint keeps, its parameters first (in
    /// [`Parameters::parameters`] order) and every BatchNorm's statistics after them.
    pub fn append_tensors<'a>(
        &'a mut self,
        prefix: impl std::fmt::Display + Clone,
        parameters: &mut Vec<Param<'a, T>>,
        statistics: &mut Vec<Param<'a, T>>,
    ) {
        let (p, s) = self.parameters_and_statistics();
        parameters.extend(prefixed(prefix.clone(), p));
        statistics.extend(prefixed(prefix, s));
    }
}

impl<T: Float> Parameters<T> for BatchNorm<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        self.parameters_and_statistics().0
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

    /// The fused passes: `y = ReLU(BatchNorm(x)) + x`, differentiated by
    /// `backward_relu_residual` (and without the `+ x` by `backward_relu`).
    #[test]
    fn fused_relu_and_residual_gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(83);
        for residual in [false, true] {
            for (rows, features) in [(5, 3), (1100, 2)] {
                let mut bn = BatchNorm::new(features);
                bn.gamma = random_array(&mut rng, features);
                bn.beta = random_array(&mut rng, features);
                let x = random_array(&mut rng, (rows, features));
                let forward = move |bn: &mut BatchNorm<f64>, x: ArrayView2<f64>| {
                    let mut y = Array2::zeros(x.raw_dim());
                    bn.forward_relu(x, y.view_mut(), true);
                    if residual {
                        y += &x;
                    }
                    y
                };
                let backward = move |bn: &mut BatchNorm<f64>, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                    let mut out = Array2::zeros(x.raw_dim());
                    bn.forward_relu(x, out.view_mut(), true);
                    let mut dx = Array2::from_elem(x.raw_dim(), f64::NAN);
                    if residual {
                        bn.backward_relu_residual(x, dy, out.view(), dx.view_mut(), dy);
                    } else {
                        bn.backward_relu(x, dy, out.view(), dx.view_mut());
                    }
                    dx
                };
                if rows < 100 {
                    check_input_gradient(&mut bn, &x, forward, backward, &mut rng);
                }
                check_parameter_gradients(&mut bn, &x, forward, backward, &mut rng);
            }
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(82);
        // 1100 rows: more than two of the parallel chunks, the last one partial.
        for (rows, features) in [(2, 3), (7, 4), (16, 9), (1100, 2)] {
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
