//! Max-pooling over square windows of pixel-major feature maps (MaxPool2d), padding
//! ignored as PyTorch does (a padded position never wins).

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::Float;
use crate::conv2d::{MapShape, Window};

/// Max-pooling; the write-up's network uses a 3×3 window, stride 2, padding 1.
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    pub window: Window,
    /// For each output value, the pixel (within its image) that won: the backward pass
    /// routes the gradient there. `[output pixels · channels]`.
    argmax: Vec<u32>,
}

impl MaxPool2d {
    pub fn new(window: Window) -> Self {
        MaxPool2d {
            window,
            argmax: Vec::new(),
        }
    }

    /// The output shape for an input of shape `input`.
    pub fn output_shape(&self, input: MapShape) -> MapShape {
        self.window.output_shape(input, input.channels)
    }

    /// `Y[oy, ox, i, c] = max` of `X[y, x, i, c]` over the in-bounds window positions; the
    /// first position holding the maximum wins (PyTorch's rule for ties). One output pixel
    /// position (all images, all channels: contiguous rows) per task.
    pub fn forward<T: Float>(&mut self, x: ArrayView2<'_, T>, shape: MapShape, mut y: ArrayViewMut2<'_, T>) {
        let out = self.output_shape(shape);
        assert_eq!(
            x.dim(),
            shape.dim(),
            "MaxPool2d input is {:?}, its shape says {shape:?}",
            x.dim()
        );
        assert_eq!(
            y.dim(),
            out.dim(),
            "MaxPool2d output is {:?}, expected {:?}",
            y.dim(),
            out.dim()
        );
        assert!(shape.height * shape.width <= u32::MAX as usize, "feature map too large");
        self.argmax.resize(out.pixels() * out.channels, 0);
        let x = x.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let y = y.as_slice_mut().expect("the output is contiguous");
        let len = shape.pixel_len();
        let window = self.window;
        y.par_chunks_mut(len)
            .zip(self.argmax.par_chunks_mut(len))
            .enumerate()
            .for_each(|(o, (best, arg))| {
                let (oy, ox) = (o / out.width, o % out.width);
                let (ky0, ky1, iy0) = window.valid_taps(oy, shape.height);
                let (kx0, kx1, ix0) = window.valid_taps(ox, shape.width);
                assert!(ky0 < ky1 && kx0 < kx1, "a pooling window lies wholly in the padding");
                let first = iy0 * shape.width + ix0;
                best.copy_from_slice(&x[first * len..][..len]);
                arg.fill(first as u32);
                for iy in iy0..iy0 + (ky1 - ky0) {
                    for ix in ix0..ix0 + (kx1 - kx0) {
                        let pixel = iy * shape.width + ix;
                        let src = &x[pixel * len..][..len];
                        for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(src) {
                            if v > *b {
                                *b = v;
                                *a = pixel as u32;
                            }
                        }
                    }
                }
            });
    }

    /// Backward pass of the last forward pass: `∂Y_o/∂X_r = 1` when `r` won window `o`, else
    /// 0, so `∂L/∂X_r = Σ_{o won by r} dY_o` (windows overlap: one input may win several).
    /// Written as a gather — each input pixel position looks at the windows that cover it —
    /// so that tasks write disjoint rows.
    pub fn backward<T: Float>(&self, dy: ArrayView2<'_, T>, shape: MapShape, mut dx: ArrayViewMut2<'_, T>) {
        let out = self.output_shape(shape);
        assert_eq!(
            dy.dim(),
            out.dim(),
            "MaxPool2d backward: dy is {:?}, expected {:?}",
            dy.dim(),
            out.dim()
        );
        assert_eq!(
            dx.dim(),
            shape.dim(),
            "MaxPool2d backward: dx is {:?}, expected {:?}",
            dx.dim(),
            shape.dim()
        );
        assert_eq!(
            self.argmax.len(),
            out.pixels() * out.channels,
            "MaxPool2d backward without its forward pass"
        );
        let dy = dy.as_standard_layout();
        let dy = dy.as_slice().expect("standard layout");
        let dx = dx.as_slice_mut().expect("dx is contiguous");
        let len = shape.pixel_len();
        let window = self.window;
        dx.par_chunks_mut(len).enumerate().for_each(|(pixel, dx)| {
            let (iy, ix) = (pixel / shape.width, pixel % shape.width);
            dx.fill(T::zero());
            for (_, o) in window.covering(iy, ix, out) {
                let o = o * len;
                for ((d, &g), &winner) in dx.iter_mut().zip(&dy[o..o + len]).zip(&self.argmax[o..o + len]) {
                    if winner as usize == pixel {
                        *d += g;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, random_array};
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const POOL: Window = Window {
        kernel: 3,
        stride: 2,
        padding: 1,
    };

    #[test]
    fn forward_takes_the_window_maximum() {
        // One image, 4×4, one channel, values 0..16 row by row (with one image, rows are
        // pixels): each window's maximum is its bottom-right in-bounds value.
        let shape = MapShape {
            images: 1,
            height: 4,
            width: 4,
            channels: 1,
        };
        let x = Array2::from_shape_fn((16, 1), |(i, _)| i as f64);
        let mut pool = MaxPool2d::new(POOL);
        let mut y = Array2::zeros((4, 1));
        pool.forward(x.view(), shape, y.view_mut());
        assert_eq!(y.column(0).to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
        // The gradient goes to the winners; pixel 5 won one window.
        let mut dx = Array2::zeros((16, 1));
        pool.backward(Array2::from_elem((4, 1), 1.0).view(), shape, dx.view_mut());
        assert_eq!(dx.sum(), 4.0);
        assert_eq!(dx[[5, 0]], 1.0);
        assert_eq!(dx[[0, 0]], 0.0);
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(93);
        for (images, side, channels) in [(2, 5, 3), (1, 4, 2), (3, 2, 4), (1, 1, 2)] {
            let shape = MapShape {
                images,
                height: side,
                width: side + 1,
                channels,
            };
            let mut pool = MaxPool2d::new(POOL);
            // Spread-out random values: a tie (where the maximum is not differentiable) or two
            // values within the difference step of each other would need ~1e-6 luck.
            let x = random_array(&mut rng, shape.dim()) * 10.0;
            let forward = move |pool: &mut MaxPool2d, x: ArrayView2<f64>| {
                let mut y = Array2::zeros(pool.output_shape(shape).dim());
                pool.forward(x, shape, y.view_mut());
                y
            };
            let backward = move |pool: &mut MaxPool2d, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                forward(pool, x);
                let mut dx = Array2::from_elem(x.raw_dim(), f64::NAN);
                pool.backward(dy, shape, dx.view_mut());
                dx
            };
            check_input_gradient(&mut pool, &x, forward, backward, &mut rng);
        }
    }
}
