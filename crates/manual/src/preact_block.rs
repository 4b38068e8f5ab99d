//! The write-up's pre-activation residual block, `Y = X + conv3×3(ReLU(BatchNorm(X)))`,
//! on pixel-major feature maps (where BatchNorm2d is the 1-D BatchNorm over the rows).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;

use crate::conv2d::{MapShape, Window};
use crate::param::prefixed;
use crate::{BatchNorm, Conv2d, Float, Param, Parameters};

/// `X + conv3×3(c→c, no bias)(ReLU(BatchNorm(X)))`.
#[derive(Debug, Clone)]
pub struct PreActBlock<T> {
    pub norm: BatchNorm<T>,
    pub conv: Conv2d<T>,
    /// `A = ReLU(BatchNorm(X))`, `[pixels, c]`: the convolution's input, and (through
    /// `A > 0`) the ReLU's derivative.
    act: Array2<T>,
    /// `∂L/∂A`: BatchNorm's backward pass reads it while writing `∂L/∂X`, so it cannot share
    /// a buffer with either `A` (still needed for the ReLU mask) or `∂L/∂X`.
    d_act: Array2<T>,
}

impl<T: Float> PreActBlock<T> {
    /// A block over `channels` channels: BatchNorm `γ = 1, β = 0`; Kaiming-normal convolution.
    pub fn new(channels: usize, rng: &mut impl Rng) -> Self {
        let same = Window {
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        PreActBlock {
            norm: BatchNorm::new(channels),
            conv: Conv2d::new(channels, channels, same, false, rng),
            act: Array2::zeros((0, channels)),
            d_act: Array2::zeros((0, channels)),
        }
    }

    /// `y = x + conv(ReLU(BatchNorm(x)))`, BatchNorm with the batch's statistics when
    /// `training` and its running ones otherwise.
    pub fn forward(&mut self, x: ArrayView2<'_, T>, shape: MapShape, mut y: ArrayViewMut2<'_, T>, training: bool) {
        if self.act.dim() != shape.dim() {
            self.act = Array2::zeros(shape.dim());
            self.d_act = Array2::zeros(shape.dim());
        }
        self.norm.forward_relu(x, self.act.view_mut(), training);
        // The residual goes into y first; the convolution accumulates on top of it.
        y.assign(&x);
        self.conv.forward(self.act.view(), shape, y, true);
    }

    /// Backward pass of the last (training) forward pass on `x`, given `dy = ∂L/∂Y`.
    ///
    /// `Y = X + F(X)`, so `∂L/∂X = dY + (∂F/∂X)ᵀ·dY`: the identity path passes `dY` through
    /// unchanged, and the branch is the chain of its three layers' backward passes (the
    /// convolution's into `∂L/∂A`, ReLU's `·[A > 0]`, BatchNorm's into `∂L/∂X`); the last two
    /// and the sum run as one pass.
    pub fn backward(&mut self, x: ArrayView2<'_, T>, shape: MapShape, dy: ArrayView2<'_, T>, dx: ArrayViewMut2<'_, T>) {
        self.conv
            .backward(self.act.view(), shape, dy, Some(self.d_act.view_mut()));
        self.norm
            .backward_relu_residual(x, self.d_act.view(), self.act.view(), dx, dy);
    }
}

impl<T: Float> Parameters<T> for PreActBlock<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        prefixed("norm", self.norm.parameters())
            .chain(prefixed("conv", self.conv.parameters()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(94);
        for (images, side, channels) in [(2, 3, 2), (3, 2, 3)] {
            let shape = MapShape {
                images,
                height: side,
                width: side,
                channels,
            };
            let mut block = PreActBlock::<f64>::new(channels, &mut rng);
            block.norm.gamma = random_array(&mut rng, channels);
            block.norm.beta = random_array(&mut rng, channels);
            let x = random_array(&mut rng, shape.dim());
            let forward = move |b: &mut PreActBlock<f64>, x: ArrayView2<f64>| {
                let mut y = Array2::zeros(shape.dim());
                b.forward(x, shape, y.view_mut(), true);
                y
            };
            let backward = move |b: &mut PreActBlock<f64>, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                forward(b, x);
                let mut dx = Array2::from_elem(shape.dim(), f64::NAN);
                b.backward(x, shape, dy, dx.view_mut());
                dx
            };
            check_input_gradient(&mut block, &x, forward, backward, &mut rng);
            check_parameter_gradients(&mut block, &x, forward, backward, &mut rng);
        }
    }
}
