//! 2-D convolution on pixel-major feature maps: im2col products, or one product per
//! kernel tap on small maps.
//!
//! Layout: a batch of feature maps is a `[height·width·images, channels]` matrix whose row
//! `(y·W + x)·N + i` is pixel `(y, x)` of image `i` ([`MapShape`]): pixel-major, the images
//! of one pixel side by side. In this layout a 1×1 convolution *is* a matrix product,
//! BatchNorm2d is the 1-D BatchNorm over the rows, and — the reason for putting the images
//! inside — the pixels `(y, x0..x1)` of every image form one contiguous block of rows.
//! The weight is `W: [C_out, k·k·C_in]` with columns in `(ky, kx, c)` order (PyTorch's
//! `[C_out, C_in, k, k]` with the channel index moved last); `W_t` is its tap `(ky, kx)`,
//! the `[C_out, C_in]` block of columns `t·C_in..(t+1)·C_in`.
//!
//! Three ways to the same sums ([`ConvPath`]):
//! - **Winograd F(2×2, 3×3)** ([`crate::winograd`]) for the 3×3 same-padding convolutions on
//!   maps of at least 8×8: 4/9 of the multiply-adds (on the write-up's network it took the
//!   training step from 318 to 220 ms);
//! - **im2col**: `X̃ = im2col(X)` (row `p` = the `k·k·C_in` input values under output
//!   pixel `p`, zeros where the kernel hangs over the padding), `Y = X̃·Wᵀ + b`;
//! - **tap by tap** (stride 1, maps of at most [`TAP_PRODUCT_PIXELS`] pixels):
//!   `Y[rows] += X[rows shifted by the tap]·W_tᵀ` over the output rows for which tap `t`
//!   lands inside the input. Where the padding is a large part of the map — on a 2×2 map
//!   5 of the 9 taps of every pixel fall on it — this skips the products with zeros that
//!   im2col computes, and it needs no im2col copy.
//!
//! The products run on our AVX-512 kernel ([`crate::matmul`]); the im2col matrix of a training
//! pass is kept for the weight gradient and then reused as scratch for `∂L/∂X̃`.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, s};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::matmul::{matmul, transpose_into};
use crate::winograd::{self, WinogradBuffers};
use crate::{Float, Param, Parameters};

/// The shape of a batch of feature maps stored pixel-major as `[pixels·images, channels]`
/// (row `(y·W + x)·N + i` is pixel `(y, x)` of image `i`).
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

    /// The row of pixel `(y, x)` of image `i`.
    pub fn row(&self, y: usize, x: usize, i: usize) -> usize {
        (y * self.width + x) * self.images + i
    }

    /// Values per pixel position across the batch: `images·channels`, the rows of one
    /// `(y, x)` as a flat slice.
    pub fn pixel_len(&self) -> usize {
        self.images * self.channels
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

    /// For kernel offset `t` (stride 1): the output coordinates `o0..o1` (of `out_side`)
    /// whose input coordinate `o + t − p` lies inside `0..side`, and the input coordinate
    /// of `o0`.
    pub fn valid_taps_of(&self, t: usize, side: usize, out_side: usize) -> (usize, usize, usize) {
        assert_eq!(self.stride, 1, "tap ranges are for stride 1");
        let shift = t as isize - self.padding as isize; // input = output + shift
        let o0 = (-shift).max(0) as usize;
        let o1 = ((side as isize - shift).max(0) as usize).min(out_side);
        (o0.min(o1), o1, (o0 as isize + shift).max(0) as usize)
    }

    /// The output coordinate whose window covers input coordinate `i` at kernel offset `t`,
    /// if any.
    pub fn source(&self, i: usize, t: usize, out_side: usize) -> Option<usize> {
        let o = i as isize + self.padding as isize - t as isize;
        (o >= 0 && o % self.stride as isize == 0 && ((o as usize) / self.stride) < out_side)
            .then(|| o as usize / self.stride)
    }

    /// The window positions that cover input pixel `(iy, ix)`: for each, the kernel tap
    /// `ky·k + kx` that lands on it and the output pixel `oy·W_out + ox`. The backward passes
    /// of im2col and max-pooling gather over these.
    pub fn covering(self, iy: usize, ix: usize, out: MapShape) -> impl Iterator<Item = (usize, usize)> {
        let k = self.kernel;
        (0..k)
            .filter_map(move |ky| self.source(iy, ky, out.height).map(|oy| (ky, oy)))
            .flat_map(move |(ky, oy)| {
                (0..k).filter_map(move |kx| {
                    self.source(ix, kx, out.width)
                        .map(|ox| (ky * k + kx, oy * out.width + ox))
                })
            })
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

/// Maps of at most this many output pixels that Winograd does not take are convolved tap
/// by tap (stride 1 only): there the padding is a large share of every window (of the
/// im2col products with a 3×3 kernel, 16 % are with padding zeros on 8×8 maps, 31 % on 4×4,
/// 56 % on 2×2) and the per-tap products are still large (`N·pixels ≥ 128` rows at batch
/// 32). Larger maps lose little to the padding (8 % at 16×16) and gain from im2col's single
/// long product: measured on the write-up's network before Winograd, 8×8 maps tap by tap
/// saved ~4 % of the step, 16×16 ones cost ~10 %.
pub const TAP_PRODUCT_PIXELS: usize = 64;

/// How a layer computes its products for one input shape (chosen by [`Conv2d::path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPath {
    /// 1×1, stride 1, no padding: one product.
    Pointwise,
    /// Winograd F(2×2, 3×3), where [`winograd::applies`].
    Winograd,
    /// One product per kernel tap, on maps of at most [`TAP_PRODUCT_PIXELS`] output pixels.
    TapByTap,
    /// im2col and one product.
    Im2col,
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
    /// 1×1 convolution, whose `X̃` is `X`, and by tap-by-tap products); `backward` reads it
    /// for `∂L/∂W` and then overwrites it with `∂L/∂X̃`.
    cols: Array2<T>,
    /// `Wᵀ: [k·k·C_in, C_out]`, copied by each tap-by-tap and Winograd forward pass: the
    /// product kernel wants its right operand stored row by row.
    weight_t: Array2<T>,
    /// The Winograd path's transformed maps and kernels.
    winograd: WinogradBuffers<T>,
}

/// The rows of one product of the tap-by-tap path: output rows `out` take input rows `input`
/// (the same number of rows).
struct Band {
    out: std::ops::Range<usize>,
    input: std::ops::Range<usize>,
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
            weight_t: Array2::zeros((0, 0)),
            winograd: WinogradBuffers::default(),
        }
    }

    /// The products an input of shape `shape` goes through: a 1×1 layer is one product;
    /// Winograd where it applies; tap by tap on small maps (see [`TAP_PRODUCT_PIXELS`]);
    /// im2col otherwise.
    pub fn path(&self, shape: MapShape) -> ConvPath {
        let out = self.window.output_shape(shape, self.out_channels);
        let pointwise = Window {
            kernel: 1,
            stride: 1,
            padding: 0,
        };
        if self.window == pointwise {
            ConvPath::Pointwise
        } else if winograd::applies(self.window, shape) {
            ConvPath::Winograd
        } else if self.window.stride == 1 && out.height * out.width <= TAP_PRODUCT_PIXELS {
            ConvPath::TapByTap
        } else {
            ConvPath::Im2col
        }
    }

    /// Copies `Wᵀ` into `weight_t` (for the paths whose products take it row by row).
    fn transpose_weight(&mut self) {
        if self.weight_t.dim() != (self.weight.ncols(), self.weight.nrows()) {
            self.weight_t = Array2::zeros((self.weight.ncols(), self.weight.nrows()));
        }
        transpose_into(self.weight.view(), self.weight_t.view_mut());
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

    /// The row bands of tap `(ky, kx)` (stride 1): for each output row `oy` whose input row
    /// `oy + ky − p` exists, the output pixels `(oy, ox)` whose input pixel `ox + kx − p`
    /// exists, with the rows of those input pixels. Consecutive bands that are also
    /// consecutive in both matrices (full-width rows) are merged into one.
    fn bands(&self, shape: MapShape, out: MapShape, ky: usize, kx: usize) -> Vec<Band> {
        let (oy0, oy1, iy0) = self.window.valid_taps_of(ky, shape.height, out.height);
        let (ox0, ox1, ix0) = self.window.valid_taps_of(kx, shape.width, out.width);
        let n = shape.images;
        let mut bands: Vec<Band> = Vec::new();
        if ox0 == ox1 {
            return bands;
        }
        for oy in oy0..oy1 {
            let iy = iy0 + (oy - oy0);
            let band = Band {
                out: out.row(oy, ox0, 0)..out.row(oy, ox1 - 1, 0) + n,
                input: shape.row(iy, ix0, 0)..shape.row(iy, ix0 + (ox1 - ox0) - 1, 0) + n,
            };
            match bands.last_mut() {
                Some(last) if last.out.end == band.out.start && last.input.end == band.input.start => {
                    last.out.end = band.out.end;
                    last.input.end = band.input.end;
                }
                _ => bands.push(band),
            }
        }
        bands
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
        match self.path(shape) {
            ConvPath::Pointwise => matmul(x, self.weight.t(), &mut y, accumulate),
            ConvPath::Winograd => {
                self.transpose_weight();
                self.winograd
                    .forward(self.weight_t.view(), x, shape, y.view_mut(), accumulate);
            }
            ConvPath::TapByTap => self.forward_taps(x, shape, out, y.view_mut(), accumulate),
            ConvPath::Im2col => {
                let cols_dim = (out.pixels(), self.weight.ncols());
                if self.cols.dim() != cols_dim {
                    self.cols = Array2::zeros(cols_dim);
                }
                im2col(x, shape, self.window, out, &mut self.cols);
                matmul(self.cols.view(), self.weight.t(), &mut y, accumulate);
            }
        }
        if let Some(b) = &self.bias {
            y += b;
        }
    }

    /// The tap-by-tap forward pass: `Y[band.out] += X[band.input]·W_tᵀ` for every tap.
    fn forward_taps(
        &mut self,
        x: ArrayView2<'_, T>,
        shape: MapShape,
        out: MapShape,
        mut y: ArrayViewMut2<'_, T>,
        accumulate: bool,
    ) {
        self.transpose_weight();
        if !accumulate {
            y.fill(T::zero());
        }
        let (k, c) = (self.window.kernel, self.in_channels);
        for ky in 0..k {
            for kx in 0..k {
                let t = ky * k + kx;
                let w_t = self.weight_t.slice(s![t * c..(t + 1) * c, ..]);
                for band in self.bands(shape, out, ky, kx) {
                    let mut y_band = y.slice_mut(s![band.out, ..]);
                    matmul(x.slice(s![band.input, ..]), w_t, &mut y_band, true);
                }
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
    ///
    /// Tap by tap the same sums split by tap: `∂L/∂W_t = Σ_bands dY[out]ᵀ·X[input]` and
    /// `∂L/∂X[input] += dY[out]·W_t`.
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
        if let Some(dx) = &dx {
            assert_eq!(
                dx.dim(),
                shape.dim(),
                "Conv2d backward: dx is {:?}, expected {:?}",
                dx.dim(),
                shape.dim()
            );
        }
        if let Some(gb) = &mut self.grad_bias {
            for row in dy.rows() {
                *gb += &row;
            }
        }
        match self.path(shape) {
            ConvPath::Pointwise => {
                matmul(dy.t(), x, &mut self.grad_weight.view_mut(), true);
                if let Some(mut dx) = dx {
                    matmul(dy, self.weight.view(), &mut dx, false);
                }
            }
            ConvPath::Winograd => {
                self.winograd
                    .backward(self.weight.view(), shape, dy, self.grad_weight.view_mut(), dx);
            }
            ConvPath::TapByTap => self.backward_taps(x, shape, out, dy, dx),
            ConvPath::Im2col => {
                assert_eq!(
                    self.cols.nrows(),
                    out.pixels(),
                    "Conv2d backward without a matching forward pass"
                );
                matmul(dy.t(), self.cols.view(), &mut self.grad_weight.view_mut(), true);
                if let Some(dx) = dx {
                    // X̃ is no longer needed: its buffer takes ∂L/∂X̃.
                    matmul(dy, self.weight.view(), &mut self.cols.view_mut(), false);
                    col2im(self.cols.view(), out, self.window, shape, dx);
                }
            }
        }
    }

    /// The tap-by-tap backward pass: `∂L/∂W_t += dY[band.out]ᵀ·X[band.input]` and
    /// `∂L/∂X[band.input] += dY[band.out]·W_t` for every tap.
    fn backward_taps(
        &mut self,
        x: ArrayView2<'_, T>,
        shape: MapShape,
        out: MapShape,
        dy: ArrayView2<'_, T>,
        mut dx: Option<ArrayViewMut2<'_, T>>,
    ) {
        if let Some(dx) = &mut dx {
            dx.fill(T::zero());
        }
        let (k, c) = (self.window.kernel, self.in_channels);
        for ky in 0..k {
            for kx in 0..k {
                let t = ky * k + kx;
                for band in self.bands(shape, out, ky, kx) {
                    let dy_band = dy.slice(s![band.out, ..]);
                    let mut grad_t = self.grad_weight.slice_mut(s![.., t * c..(t + 1) * c]);
                    matmul(dy_band.t(), x.slice(s![band.input.clone(), ..]), &mut grad_t, true);
                    if let Some(dx) = &mut dx {
                        let mut dx_band = dx.slice_mut(s![band.input, ..]);
                        matmul(
                            dy_band,
                            self.weight.slice(s![.., t * c..(t + 1) * c]),
                            &mut dx_band,
                            true,
                        );
                    }
                }
            }
        }
    }
}

/// `cols[p, (ky, kx, c)] = X[y·s − pad + ky, x·s − pad + kx, image, c]`, or 0 outside the
/// image. One output pixel position (all images) per task.
fn im2col<T: Float>(x: ArrayView2<'_, T>, shape: MapShape, window: Window, out: MapShape, cols: &mut Array2<T>) {
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let (c, k, n) = (shape.channels, window.kernel, shape.images);
    let row_len = k * k * c;
    let cols = cols.as_slice_mut().expect("cols are contiguous");
    cols.par_chunks_mut(n * row_len).enumerate().for_each(|(o, cols)| {
        let (oy, ox) = (o / out.width, o % out.width);
        let (ky0, ky1, iy0) = window.valid_taps(oy, shape.height);
        let (kx0, kx1, ix0) = window.valid_taps(ox, shape.width);
        for ky in 0..k {
            for kx in 0..k {
                let t = ky * k + kx;
                if ky < ky0 || ky >= ky1 || kx < kx0 || kx >= kx1 {
                    for image in 0..n {
                        cols[image * row_len + t * c..][..c].fill(T::zero());
                    }
                    continue;
                }
                let src = shape.row(iy0 + (ky - ky0), ix0 + (kx - kx0), 0) * c;
                for image in 0..n {
                    cols[image * row_len + t * c..][..c].copy_from_slice(&x[src + image * c..][..c]);
                }
            }
        }
    });
}

/// The adjoint of [`im2col`]: `dx[r] = Σ` of the `dcols` entries that copied input value
/// `r`. Written as a gather (each input pixel sums the window positions that cover it), so
/// that tasks never write to the same place: the sum is deterministic and needs no zeroing
/// pass.
fn col2im<T: Float>(
    dcols: ArrayView2<'_, T>,
    out: MapShape,
    window: Window,
    shape: MapShape,
    mut dx: ArrayViewMut2<'_, T>,
) {
    let dcols = dcols.as_slice().expect("cols are contiguous");
    let dx = dx.as_slice_mut().expect("dx is contiguous");
    let (c, k, n) = (shape.channels, window.kernel, shape.images);
    let row_len = k * k * c;
    dx.par_chunks_mut(n * c).enumerate().for_each(|(i, dx)| {
        let (iy, ix) = (i / shape.width, i % shape.width);
        dx.fill(T::zero());
        for (t, o) in window.covering(iy, ix, out) {
            let first = o * n * row_len + t * c;
            for image in 0..n {
                let src = &dcols[first + image * row_len..][..c];
                for (d, &s) in dx[image * c..][..c].iter_mut().zip(src) {
                    *d += s;
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
                                let row = shape.row(iy as usize, ix as usize, i);
                                for c in 0..shape.channels {
                                    sum += x[[row, c]] * conv.weight[[j, (ky * k + kx) * shape.channels + c]];
                                }
                            }
                        }
                        y[[out.row(oy, ox, i), j]] = sum;
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
            // Tap by tap (at most 16 output pixels), with full-width and partial rows.
            (window(3, 1, 1), shape(3, 4, 4, 2), 3, false),
            (window(3, 1, 1), shape(2, 3, 5, 3), 2, true),
            (window(5, 1, 2), shape(2, 4, 3, 2), 3, true),
            // Winograd (3×3 same padding, even sides of at least 8, 16 input channels).
            (window(3, 1, 1), shape(1, 8, 10, 16), 3, true),
        ]
    }

    #[test]
    fn forward_matches_the_definition() {
        let mut rng = StdRng::seed_from_u64(91);
        let mut paths = Vec::new();
        for (window, shape, out_channels, bias) in cases() {
            let mut conv = Conv2d::<f64>::new(shape.channels, out_channels, window, bias, &mut rng);
            paths.push(conv.path(shape));
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
        for path in [
            ConvPath::Pointwise,
            ConvPath::Winograd,
            ConvPath::TapByTap,
            ConvPath::Im2col,
        ] {
            assert!(paths.contains(&path), "no case takes {path:?}");
        }
    }

    /// The f32 paths (our AVX-512 products where the CPU has them, the transposed-weight
    /// copy, Winograd's transforms) against f64 on the network's shapes.
    #[test]
    fn f32_matches_f64_on_network_shapes() {
        let mut rng = StdRng::seed_from_u64(96);
        let same = Window {
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        for (channels, side) in [(32, 16), (64, 8), (128, 4), (96, 2)] {
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
