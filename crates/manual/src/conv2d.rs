//! 2-D convolution on channels-last feature maps, as one matrix product over the batch.
//!
//! Layout: a batch of feature maps is a `[images·height·width, channels]` matrix whose row
//! `(i·H + y)·W + x` is pixel `(y, x)` of image `i` ([`MapShape`]). In this layout a 1×1
//! convolution *is* a matrix product, BatchNorm2d is the 1-D BatchNorm over the rows, and
//! the `k` pixels under a kernel row are `k·C` contiguous values, so the im2col copy moves
//! whole runs of memory. The weight is `W: [C_out, k·k·C_in]` with columns in `(ky, kx, c)`
//! order (PyTorch's `[C_out, C_in, k, k]` with the channel index moved last).
//!
//! With `X̃ = im2col(X)` (row `p` = the `k·k·C_in` input values under output pixel `p`,
//! zeros where the kernel hangs over the padding) the layer is `Y = X̃·Wᵀ + b`. The
//! products run on our AVX-512 kernel ([`crate::matmul`]); the im2col matrix of a training
//! pass is kept for the weight gradient and then reused as scratch for `∂L/∂X̃`.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::matmul::matmul;
use crate::{Float, Param, Parameters};

/// The shape of a batch of channels-last feature maps stored as `[pixels, channels]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub images: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl MapShape {
    /// Rows of the matrix: `images·height·width`.
    pub fn pixels(&self) -> usize {
        self.images * self.height * self.width
    }

    /// Values per image: `height·width·channels`.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The matrix dimensions `(pixels, channels)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.pixels(), self.channels)
    }
}

/// Where a square window of side `kernel`, moved by `stride` over an input padded by
/// `padding` on every side, lands: shared by convolution and pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Window {
    /// Output side for an input side, `(side + 2p − k)/s + 1`.
    pub fn output_side(&self, side: usize) -> usize {
        assert!(
            side + 2 * self.padding >= self.kernel,
            "a {0}×{0} window does not fit a side of {side} padded by {1}",
            self.kernel,
            self.padding
        );
        (side + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output shape of a map with `channels` output channels.
    pub fn output_shape(&self, input: MapShape, channels: usize) -> MapShape {
        MapShape {
            images: input.images,
            height: self.output_side(input.height),
            width: self.output_side(input.width),
            channels,
        }
    }

    /// The kernel offsets `k0..k1` that land inside `0..side` for output coordinate `o`,
    /// and the input coordinate of offset `k0`.
    pub fn valid_taps(&self, o: usize, side: usize) -> (usize, usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize; // input of offset 0
        let k0 = (-start).max(0) as usize;
        let k1 = ((side as isize - start).max(0) as usize).min(self.kernel);
        (k0.min(k1), k1, (start + k0 as isize).max(0) as usize)
    }
}

/// A 2-D convolution layer (square kernel, equal stride and padding on both axes).
#[derive(Debug, Clone)]
pub struct Conv2d<T> {
    pub in_channels: usize,
    pub out_channels: usize,
    pub window: Window,
    /// `W: [C_out, k·k·C_in]`, columns in `(ky, kx, c)` order.
    pub weight: Array2<T>,
    /// `b: [C_out]`, when the layer has a bias.
    pub bias: Option<Array1<T>>,
    /// `∂L/∂W`, accumulated by `backward`.
    pub grad_weight: Array2<T>,
    /// `∂L/∂b`, accumulated by `backward`.
    pub grad_bias: Option<Array1<T>>,
    /// `X̃ = im2col(X)` of the last forward pass, `[output pixels, k·k·C_in]` (unused by a
    /// 1×1 convolution, whose `X̃` is `X`); `backward` reads it for `∂L/∂W` and then
    /// overwrites it with `∂L/∂X̃`.
    cols: Array2<T>,
}

impl<T: Float> Conv2d<T> {
    /// A layer with Kaiming-normal weights (fan-out, ReLU gain: `std = √(2 / (C_out·k²))`,
    /// PyTorch's `kaiming_normal_(mode="fan_out", nonlinearity="relu")`) and zero bias.
    pub fn new(in_channels: usize, out_channels: usize, window: Window, bias: bool, rng: &mut impl Rng) -> Self {
        let k2 = window.kernel * window.kernel;
        let std = (2.0 / (out_channels * k2) as f64).sqrt();
        let normal = Normal::new(0.0, std).expect("finite standard deviation");
        let weight = Array2::from_shape_simple_fn((out_channels, k2 * in_channels), || T::of(normal.sample(rng)));
        Self::from_weights(weight, bias.then(|| Array1::zeros(out_channels)), in_channels, window)
    }

    /// A layer with the given weight `[C_out, k·k·C_in]` and optional bias.
    pub fn from_weights(weight: Array2<T>, bias: Option<Array1<T>>, in_channels: usize, window: Window) -> Self {
        let out_channels = weight.nrows();
        assert_eq!(
            weight.ncols(),
            window.kernel * window.kernel * in_channels,
            "Conv2d weight is {:?}, expected [{out_channels}, {}]",
            weight.dim(),
            window.kernel * window.kernel * in_channels
        );
        if let Some(b) = &bias {
            assert_eq!(
                b.len(),
                out_channels,
                "Conv2d bias length differs from its output channels"
            );
        }
        Conv2d {
            in_channels,
            out_channels,
            window,
            grad_weight: Array2::zeros(weight.raw_dim()),
            grad_bias: bias.as_ref().map(|b| Array1::zeros(b.len())),
            weight,
            bias,
            cols: Array2::zeros((0, 0)),
        }
    }

    /// Whether the layer is a plain product per pixel (1×1, stride 1, no padding).
    fn pointwise(&self) -> bool {
        self.window
            == Window {
                kernel: 1,
                stride: 1,
                padding: 0,
            }
    }

    /// The output shape for an input of shape `input`.
    pub fn output_shape(&self, input: MapShape) -> MapShape {
        assert_eq!(
            input.channels, self.in_channels,
            "Conv2d expects {} input channels, got {}",
            self.in_channels, input.channels
        );
        self.window.output_shape(input, self.out_channels)
    }

    /// `Y = X̃·Wᵀ + b` (or `Y += X̃·Wᵀ + b` when `accumulate`, which is how a residual block
    /// adds its branch) for `x: [pixels, C_in]` of shape `shape`.
    pub fn forward(&mut self, x: ArrayView2<'_, T>, shape: MapShape, mut y: ArrayViewMut2<'_, T>, accumulate: bool) {
        let out = self.output_shape(shape);
        assert_eq!(
            x.dim(),
            shape.dim(),
            "Conv2d input is {:?}, its shape says {shape:?}",
            x.dim()
        );
        assert_eq!(
            y.dim(),
            out.dim(),
            "Conv2d output is {:?}, expected {:?}",
            y.dim(),
            out.dim()
        );
        if self.pointwise() {
            matmul(x, self.weight.t(), &mut y, accumulate);
        } else {
            let cols_dim = (out.pixels(), self.weight.ncols());
            if self.cols.dim() != cols_dim {
                self.cols = Array2::zeros(cols_dim);
            }
            im2col(x, shape, self.window, out, &mut self.cols);
            matmul(self.cols.view(), self.weight.t(), &mut y, accumulate);
        }
        if let Some(b) = &self.bias {
            for mut row in y.rows_mut() {
                row += b;
            }
        }
    }

    /// Backward pass of the last forward pass, on input `x`, given `dy = ∂L/∂Y`; writes
    /// `∂L/∂X` into `dx` when given (the first layer of a network needs none).
    ///
    /// `Y_pj = Σ_q X̃_pq W_jq + b_j`, so
    /// - `∂L/∂b_j = Σ_p dY_pj` and `∂L/∂W_jq = Σ_p dY_pj X̃_pq`, i.e. `∂L/∂W = dYᵀ·X̃`;
    /// - `∂L/∂X̃ = dY·W`; and since `X̃_pq` is a copy of one input value `X_{π(p,q)}` (or a
    ///   padding zero), `∂L/∂X_r = Σ_{(p,q): π(p,q) = r} ∂L/∂X̃_pq`: col2im sums, for each
    ///   input value, the entries of every window position that copied it.
    pub fn backward(
        &mut self,
        x: ArrayView2<'_, T>,
        shape: MapShape,
        dy: ArrayView2<'_, T>,
        dx: Option<ArrayViewMut2<'_, T>>,
    ) {
        let out = self.output_shape(shape);
        assert_eq!(
            dy.dim(),
            out.dim(),
            "Conv2d backward: dy is {:?}, expected {:?}",
            dy.dim(),
            out.dim()
        );
        if let Some(gb) = &mut self.grad_bias {
            for row in dy.rows() {
                *gb += &row;
            }
        }
        if self.pointwise() {
            matmul(dy.t(), x, &mut self.grad_weight.view_mut(), true);
            if let Some(mut dx) = dx {
                matmul(dy, self.weight.view(), &mut dx, false);
            }
            return;
        }
        assert_eq!(
            self.cols.nrows(),
            out.pixels(),
            "Conv2d backward without a matching forward pass"
        );
        matmul(dy.t(), self.cols.view(), &mut self.grad_weight.view_mut(), true);
        if let Some(dx) = dx {
            assert_eq!(
                dx.dim(),
                shape.dim(),
                "Conv2d backward: dx is {:?}, expected {:?}",
                dx.dim(),
                shape.dim()
            );
            // X̃ is no longer needed: its buffer takes ∂L/∂X̃.
            matmul(dy, self.weight.view(), &mut self.cols.view_mut(), false);
            col2im(self.cols.view(), out, self.window, shape, dx);
        }
    }
}

/// `cols[p, (ky, kx, c)] = X[image, y·s − pad + ky, x·s − pad + kx, c]`, or 0 outside the
/// image. One image per task; under each kernel row the in-bounds pixels are contiguous
/// in `x`, so each kernel row is one copy and (at the border) one fill.
fn im2col<T: Float>(x: ArrayView2<'_, T>, shape: MapShape, window: Window, out: MapShape, cols: &mut Array2<T>) {
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let c = shape.channels;
    let k = window.kernel;
    let row_len = k * k * c;
    let cols = cols.as_slice_mut().expect("cols are contiguous");
    cols.par_chunks_mut(out.height * out.width * row_len)
        .zip(x.par_chunks(shape.image_len()))
        .for_each(|(cols, image)| {
            for oy in 0..out.height {
                let (ky0, ky1, iy0) = window.valid_taps(oy, shape.height);
                for ox in 0..out.width {
                    let (kx0, kx1, ix0) = window.valid_taps(ox, shape.width);
                    let row = &mut cols[(oy * out.width + ox) * row_len..][..row_len];
                    for ky in 0..k {
                        let kernel_row = &mut row[ky * k * c..][..k * c];
                        if ky < ky0 || ky >= ky1 || kx0 == kx1 {
                            kernel_row.fill(T::zero());
                            continue;
                        }
                        let iy = iy0 + (ky - ky0);
                        kernel_row[..kx0 * c].fill(T::zero());
                        kernel_row[kx1 * c..].fill(T::zero());
                        let src = (iy * shape.width + ix0) * c;
                        kernel_row[kx0 * c..kx1 * c].copy_from_slice(&image[src..src + (kx1 - kx0) * c]);
                    }
                }
            }
        });
}

/// The adjoint of [`im2col`]: `dx[r] = Σ` of the `dcols` entries that copied input value
/// `r`. Written as a gather (each input pixel sums the window positions that cover it), so
/// that images — and the pixels within one — never write to the same place: the sum is
/// deterministic and needs no zeroing pass.
fn col2im<T: Float>(
    dcols: ArrayView2<'_, T>,
    out: MapShape,
    window: Window,
    shape: MapShape,
    mut dx: ArrayViewMut2<'_, T>,
) {
    let dcols = dcols.as_slice().expect("cols are contiguous");
    let dx = dx.as_slice_mut().expect("dx is contiguous");
    let c = shape.channels;
    let k = window.kernel;
    let row_len = k * k * c;
    // The output coordinates whose window covers input coordinate `i` at kernel offset `t`.
    let source = |i: usize, t: usize, out_side: usize| -> Option<usize> {
        let o = i as isize + window.padding as isize - t as isize;
        (o >= 0 && o % window.stride as isize == 0 && ((o as usize) / window.stride) < out_side)
            .then(|| o as usize / window.stride)
    };
    dx.par_chunks_mut(shape.image_len())
        .zip(dcols.par_chunks(out.height * out.width * row_len))
        .for_each(|(image, dcols)| {
            for iy in 0..shape.height {
                for ix in 0..shape.width {
                    let dst = &mut image[(iy * shape.width + ix) * c..][..c];
                    dst.fill(T::zero());
                    for ky in 0..k {
                        let Some(oy) = source(iy, ky, out.height) else { continue };
                        for kx in 0..k {
                            let Some(ox) = source(ix, kx, out.width) else { continue };
                            let src = &dcols[(oy * out.width + ox) * row_len + (ky * k + kx) * c..][..c];
                            for (d, &s) in dst.iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        });
}

impl<T: Float> Parameters<T> for Conv2d<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        let mut params = vec![Param {
            name: "weight".into(),
            shape: self.weight.shape().to_vec(),
            value: self.weight.as_slice_mut().expect("contiguous"),
            grad: self.grad_weight.as_slice_mut().expect("contiguous"),
        }];
        if let (Some(b), Some(g)) = (&mut self.bias, &mut self.grad_bias) {
            params.push(Param {
                name: "bias".into(),
                shape: b.shape().to_vec(),
                value: b.as_slice_mut().expect("contiguous"),
                grad: g.as_slice_mut().expect("contiguous"),
            });
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// The definition, one output value at a time, on `[images, height, width, channels]`.
    fn naive(conv: &Conv2d<f64>, x: &Array2<f64>, shape: MapShape) -> Array2<f64> {
        let out = conv.output_shape(shape);
        let (k, s, p) = (conv.window.kernel, conv.window.stride, conv.window.padding as isize);
        let mut y = Array2::zeros(out.dim());
        for i in 0..out.images {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    for j in 0..out.channels {
                        let mut sum = conv.bias.as_ref().map_or(0.0, |b| b[j]);
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p;
                                let ix = (ox * s + kx) as isize - p;
                                if iy < 0 || ix < 0 || iy >= shape.height as isize || ix >= shape.width as isize {
                                    continue;
                                }
                                let row = (i * shape.height + iy as usize) * shape.width + ix as usize;
                                for c in 0..shape.channels {
                                    sum += x[[row, c]] * conv.weight[[j, (ky * k + kx) * shape.channels + c]];
                                }
                            }
                        }
                        y[[(i * out.height + oy) * out.width + ox, j]] = sum;
                    }
                }
            }
        }
        y
    }

    fn cases() -> Vec<(Window, MapShape, usize, bool)> {
        let shape = |images, height, width, channels| MapShape {
            images,
            height,
            width,
            channels,
        };
        let window = |kernel, stride, padding| Window {
            kernel,
            stride,
            padding,
        };
        vec![
            (window(3, 1, 1), shape(2, 5, 4, 3), 4, true),
            (window(3, 1, 1), shape(1, 2, 2, 2), 3, false), // every window hangs over the border
            (window(1, 1, 0), shape(2, 3, 3, 4), 5, true),
            (window(3, 2, 1), shape(2, 5, 6, 2), 3, true),
            (window(2, 2, 0), shape(1, 4, 4, 3), 2, false),
            (window(3, 1, 0), shape(1, 5, 5, 2), 2, true),
        ]
    }

    #[test]
    fn forward_matches_the_definition() {
        let mut rng = StdRng::seed_from_u64(91);
        for (window, shape, out_channels, bias) in cases() {
            let mut conv = Conv2d::<f64>::new(shape.channels, out_channels, window, bias, &mut rng);
            if let Some(b) = &mut conv.bias {
                *b = random_array(&mut rng, out_channels);
            }
            let x = random_array(&mut rng, shape.dim());
            let out = conv.output_shape(shape);
            let mut y = Array2::from_elem(out.dim(), 0.5);
            conv.forward(x.view(), shape, y.view_mut(), false);
            let want = naive(&conv, &x, shape);
            assert!((&y - &want).iter().all(|d| d.abs() < 1e-12), "{window:?} {shape:?}");
            conv.forward(x.view(), shape, y.view_mut(), true);
            assert!(
                (&y - &want * 2.0).iter().all(|d| d.abs() < 1e-12),
                "accumulate {window:?}"
            );
        }
    }

    /// The f32 path (our AVX-512 products where the CPU has them, the transposed-weight copy)
    /// against f64 on the network's shapes.
    #[test]
    fn f32_matches_f64_on_network_shapes() {
        let mut rng = StdRng::seed_from_u64(96);
        let same = Window {
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        for (channels, side) in [(64, 8), (128, 4), (96, 2)] {
            let shape = MapShape {
                images: 3,
                height: side,
                width: side,
                channels,
            };
            let mut conv64 = Conv2d::<f64>::new(channels, channels, same, false, &mut rng);
            let mut conv32 = Conv2d::<f32>::from_weights(conv64.weight.mapv(|v| v as f32), None, channels, same);
            let x = random_array(&mut rng, shape.dim());
            let dy = random_array(&mut rng, shape.dim());
            let (x32, dy32) = (x.mapv(|v| v as f32), dy.mapv(|v| v as f32));
            let (mut y64, mut dx64) = (Array2::zeros(shape.dim()), Array2::zeros(shape.dim()));
            let (mut y32, mut dx32) = (Array2::zeros(shape.dim()), Array2::zeros(shape.dim()));
            conv64.forward(x.view(), shape, y64.view_mut(), false);
            conv32.forward(x32.view(), shape, y32.view_mut(), false);
            conv64.backward(x.view(), shape, dy.view(), Some(dx64.view_mut()));
            conv32.backward(x32.view(), shape, dy32.view(), Some(dx32.view_mut()));
            let widen = |a: &Array2<f32>| a.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let flat = |a: &Array2<f64>| a.iter().copied().collect::<Vec<f64>>();
            for (name, a, b) in [
                ("y", widen(&y32), flat(&y64)),
                ("dx", widen(&dx32), flat(&dx64)),
                ("dW", widen(&conv32.grad_weight), flat(&conv64.grad_weight)),
            ] {
                let err = crate::gradcheck::relative_error(&a, &b);
                assert!(
                    err < 1e-5,
                    "{channels} channels, side {side}: {name} relative error {err:e}"
                );
            }
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(92);
        for (window, shape, out_channels, bias) in cases() {
            let mut conv = Conv2d::<f64>::new(shape.channels, out_channels, window, bias, &mut rng);
            let x = random_array(&mut rng, shape.dim());
            let forward = move |conv: &mut Conv2d<f64>, x: ArrayView2<f64>| {
                let mut y = Array2::zeros(conv.output_shape(shape).dim());
                conv.forward(x, shape, y.view_mut(), false);
                y
            };
            let backward = move |conv: &mut Conv2d<f64>, x: ArrayView2<f64>, dy: ArrayView2<f64>| {
                forward(conv, x);
                let mut dx = Array2::from_elem(x.raw_dim(), f64::NAN); // every entry must be written
                conv.backward(x, shape, dy, Some(dx.view_mut()));
                dx
            };
            check_input_gradient(&mut conv, &x, forward, backward, &mut rng);
            check_parameter_gradients(&mut conv, &x, forward, backward, &mut rng);
        }
    }
}
