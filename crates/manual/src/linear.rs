//! The linear (fully connected) layer, `Y = X·Wᵀ + b`.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::matmul::matmul;
use crate::{Float, Param, Parameters};

/// A fully connected layer `Y = X·Wᵀ + b` with `W: [out, in]` (PyTorch's layout).
#[derive(Debug, Clone)]
pub struct LinearLayer<T> {
    /// `[out, in]`
    pub weight: Array2<T>,
    /// `[out]`
    pub bias: Array1<T>,
    /// `[out, in]`, accumulated by `backward`.
    pub grad_weight: Array2<T>,
    /// `[out]`, accumulated by `backward`.
    pub grad_bias: Array1<T>,
}

impl<T: Float> LinearLayer<T> {
    /// The write-up's initialisation: weights from N(0, `std`²) (it uses `std = 1e-4`),
    /// biases zero.
    pub fn new(inputs: usize, outputs: usize, std: f64, rng: &mut impl Rng) -> Self {
        let normal =
            Normal::new(0.0, std).expect("standard deviation must be finite and non-negative");
        let weight = Array2::from_shape_simple_fn((outputs, inputs), || T::of(normal.sample(rng)));
        Self::from_weights(weight, Array1::zeros(outputs))
    }

    /// A layer with the given weights `[out, in]` and biases `[out]`.
    pub fn from_weights(weight: Array2<T>, bias: Array1<T>) -> Self {
        assert_eq!(
            weight.nrows(),
            bias.len(),
            "weight rows and bias length differ"
        );
        LinearLayer {
            grad_weight: Array2::zeros(weight.raw_dim()),
            grad_bias: Array1::zeros(bias.raw_dim()),
            weight,
            bias,
        }
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.weight.ncols()
    }

    /// Number of output features.
    pub fn outputs(&self) -> usize {
        self.weight.nrows()
    }

    /// `y = x·Wᵀ + b` for `x: [batch, in]`, writing `y: [batch, out]`.
    pub fn forward(&self, x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) {
        // Broadcast the bias into y, then accumulate the product on top of it: one pass less
        // than adding the bias afterwards.
        let shape = y.raw_dim();
        y.assign(
            &self
                .bias
                .broadcast(shape)
                .expect("bias matches output width"),
        );
        matmul(x, self.weight.t(), &mut y, true);
    }

    /// Backward pass for `Y = X·Wᵀ + b`, given `dy = ∂L/∂Y` and the forward input `x`.
    ///
    /// With `Y_mn = Σ_p X_mp W_np + b_n`:
    /// - `∂Y_mn/∂W_ij = δ_ni X_mj`, so `∂L/∂W_ij = Σ_m (∂L/∂Y)_mi X_mj`, i.e. `∂L/∂W = dYᵀ·X`;
    /// - `∂Y_mn/∂b_i = δ_ni`, so `∂L/∂b_i = Σ_m (∂L/∂Y)_mi` (sum over the batch);
    /// - `∂Y_mn/∂X_ij = δ_mi W_nj`, so `∂L/∂X_ij = Σ_n (∂L/∂Y)_in W_nj`, i.e. `∂L/∂X = dY·W`.
    ///
    /// Parameter gradients are accumulated; `dx` (when wanted) is overwritten. The first
    /// layer of a network passes `None`: nobody needs the gradient of the data.
    pub fn backward(
        &mut self,
        x: ArrayView2<'_, T>,
        dy: ArrayView2<'_, T>,
        dx: Option<ArrayViewMut2<'_, T>>,
    ) {
        matmul(dy.t(), x, &mut self.grad_weight.view_mut(), true);
        self.grad_bias += &dy.sum_axis(Axis(0));
        if let Some(mut dx) = dx {
            matmul(dy, self.weight.view(), &mut dx, false);
        }
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
            ndarray::array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
            ndarray::array![0.5, -0.5, 1.0],
        );
        let x = ndarray::array![[1.0, -1.0]];
        let mut y = Array2::zeros((1, 3));
        layer.forward(x.view(), y.view_mut());
        assert_eq!(y, ndarray::array![[-0.5, -1.5, 0.0]]);
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
