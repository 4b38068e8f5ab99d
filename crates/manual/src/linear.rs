//! The linear (fully connected) layer, `Y = X·W + b`.
//!
//! The write-up writes `Y = X·Wᵀ + b` with `W: [out, in]` (PyTorch's layout). Here `W` is
//! stored transposed, `[in, out]` (burn's layout), so that the forward product `X·W` and the
//! weight gradient `Xᵀ·dY` both read and write matrices contiguous along `out`, which is what
//! the fast matrix kernel wants. The maths is the write-up's with `W ↦ Wᵀ`.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::matmul::matmul;
use crate::{Float, Param, Parameters};

/// A fully connected layer `Y = X·W + b` with `W: [in, out]`.
#[derive(Debug, Clone)]
pub struct LinearLayer<T> {
    /// `[in, out]`
    pub weight: Array2<T>,
    /// `[out]`
    pub bias: Array1<T>,
    /// `[in, out]`, accumulated by `backward`.
    pub grad_weight: Array2<T>,
    /// `[out]`, accumulated by `backward`.
    pub grad_bias: Array1<T>,
}

impl<T: Float> LinearLayer<T> {
    /// The write-up's initialisation: weights from N(0, `std`²) (it uses `std = 1e-4`),
    /// biases zero.
    pub fn new(inputs: usize, outputs: usize, std: f64, rng: &mut impl Rng) -> Self {
        let normal = Normal::new(0.0, std).expect("standard deviation must be finite and non-negative");
        let weight = Array2::from_shape_simple_fn((inputs, outputs), || T::of(normal.sample(rng)));
        Self::from_weights(weight, Array1::zeros(outputs))
    }

    /// A layer with the given weights `[in, out]` and biases `[out]`.
    pub fn from_weights(weight: Array2<T>, bias: Array1<T>) -> Self {
        assert_eq!(weight.ncols(), bias.len(), "weight columns and bias length differ");
        LinearLayer {
            grad_weight: Array2::zeros(weight.raw_dim()),
            grad_bias: Array1::zeros(bias.raw_dim()),
            weight,
            bias,
        }
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.weight.nrows()
    }

    /// Number of output features.
    pub fn outputs(&self) -> usize {
        self.weight.ncols()
    }

    /// `y = x·W + b` for `x: [batch, in]`, writing `y: [batch, out]`.
    pub fn forward(&self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) {
        // Broadcast the bias into y, then accumulate the product on top of it: one pass less
        // than adding the bias afterwards.
        let shape = y.raw_dim();
        y.assign(&self.bias.broadcast(shape).expect("bias matches output width"));
        matmul(x, self.weight.view(), &mut y, true);
    }

    /// Backward pass for `Y = X·W + b`, given `dy = ∂L/∂Y` and the forward input `x`.
    ///
    /// With `Y_mn = Σ_p X_mp W_pn + b_n`:
    /// - `∂Y_mn/∂W_ij = X_mi δ_nj`, so `∂L/∂W_ij = Σ_m X_mi (∂L/∂Y)_mj`, i.e. `∂L/∂W = Xᵀ·dY`
    ///   (the write-up's `dYᵀ·X` for its transposed `W`);
    /// - `∂Y_mn/∂b_i = δ_ni`, so `∂L/∂b_i = Σ_m (∂L/∂Y)_mi` (sum over the batch);
    /// - `∂Y_mn/∂X_ij = δ_mi W_jn`, so `∂L/∂X_ij = Σ_n (∂L/∂Y)_in W_jn`, i.e. `∂L/∂X = dY·Wᵀ`.
    ///
    /// Parameter gradients are accumulated; `dx` (when wanted) is overwritten. The first
    /// layer of a network passes `None`: nobody needs the gradient of the data.
    pub fn backward(&mut self, x: ArrayView2<'_, T>, dy: ArrayView2<'_, T>, dx: Option<ArrayViewMut2<'_, T>>) {
        matmul(x.t(), dy, &mut self.grad_weight.view_mut(), true);
        for row in dy.rows() {
            self.grad_bias += &row;
        }
        if let Some(mut dx) = dx {
            matmul(dy, self.weight.t(), &mut dx, false);
        }
    }

    /// The backward pass fused with a plain SGD step of learning rate `lr`:
    /// `∂L/∂X = dY·Wᵀ` as in [`backward`](Self::backward), then `b ← b − η·Σ_m dY_m` and
    /// `W ← W + Xᵀ·(−η·dY)`, the weight update done as one accumulating matrix product into
    /// `W`. The weight gradient is never stored: for the MLP's first layer that saves writing,
    /// re-reading and clearing a 1.2 MB buffer every step. `dy` is scaled by `−η` in place.
    pub fn backward_sgd(
        &mut self,
        x: ArrayView2<'_, T>,
        mut dy: ArrayViewMut2<'_, T>,
        dx: Option<ArrayViewMut2<'_, T>>,
        lr: f64,
    ) {
        // dX needs the weights before the update.
        if let Some(mut dx) = dx {
            matmul(dy.view(), self.weight.t(), &mut dx, false);
        }
        dy *= T::of(-lr);
        for row in dy.rows() {
            self.bias += &row;
        }
        matmul(x.t(), dy.view(), &mut self.weight.view_mut(), true);
    }
}

impl<T: Float> Parameters<T> for LinearLayer<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        vec![
            Param {
                name: "weight".into(),
                shape: self.weight.shape().to_vec(),
                value: self.weight.as_slice_mut().expect("weight is contiguous"),
                grad: self.grad_weight.as_slice_mut().expect("grad is contiguous"),
            },
            Param {
                name: "bias".into(),
                shape: self.bias.shape().to_vec(),
                value: self.bias.as_slice_mut().expect("bias is contiguous"),
                grad: self.grad_bias.as_slice_mut().expect("grad is contiguous"),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn forward_is_x_wt_plus_b() {
        let layer = LinearLayer::from_weights(
            ndarray::array![[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]],
            ndarray::array![0.5, -0.5, 1.0],
        );
        let x = ndarray::array![[1.0, -1.0]];
        let mut y = Array2::zeros((1, 3));
        layer.forward(x.view(), y.view_mut());
        assert_eq!(y, ndarray::array![[-0.5, -1.5, 0.0]]);
    }

    #[test]
    fn fused_sgd_equals_backward_then_sgd() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut a = LinearLayer::<f64>::new(6, 4, 1.0, &mut rng);
        a.bias = random_array(&mut rng, 4);
        let mut b = a.clone();
        let x = random_array(&mut rng, (5, 6));
        let dy = random_array(&mut rng, (5, 4));
        let (mut dxa, mut dxb) = (Array2::zeros((5, 6)), Array2::zeros((5, 6)));
        a.backward(x.view(), dy.view(), Some(dxa.view_mut()));
        crate::Sgd { lr: 0.1 }.step(&mut a);
        b.backward_sgd(x.view(), dy.clone().view_mut(), Some(dxb.view_mut()), 0.1);
        assert!((&a.weight - &b.weight).iter().all(|d| d.abs() < 1e-12));
        assert!((&a.bias - &b.bias).iter().all(|d| d.abs() < 1e-12));
        assert_eq!(dxa, dxb);
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(1);
        for &(batch, inputs, outputs) in &[(1, 1, 1), (4, 7, 3), (9, 12, 17)] {
            let mut layer = LinearLayer::<f64>::new(inputs, outputs, 1.0, &mut rng);
            layer.bias = random_array(&mut rng, outputs);
            let x = random_array(&mut rng, (batch, inputs));
            let forward = |l: &mut LinearLayer<f64>, x: ArrayView2<f64>| {
                let mut y = Array2::zeros((x.nrows(), l.outputs()));
                l.forward(x, y.view_mut());
                y
            };
            let backward = |l: &mut LinearLayer<f64>, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                let mut dx = Array2::zeros(x.raw_dim());
                l.backward(x, dy, Some(dx.view_mut()));
                dx
            };
            check_input_gradient(&mut layer, &x, forward, backward, &mut rng);
            check_parameter_gradients(&mut layer, &x, forward, backward, &mut rng);
        }
    }
}
