//! Winograd's F(2×2, 3×3): a 3×3 convolution (stride 1, padding 1) computed with 16
//! multiplications per 2×2 block of outputs instead of 36 (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016).
//!
//! The output map is cut into 2×2 tiles; tile `(ty, tx)` reads the 4×4 input window `d`
//! whose top-left pixel is `(2ty − 1, 2tx − 1)` (padding zeros outside the map). For one
//! input and one output channel, with `g` the 3×3 kernel,
//!
//! ```text
//! Y_tile = Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A        Bᵀ = ⎡1  0 −1  0⎤   G = ⎡1   0   0⎤   Aᵀ = ⎡1 1  1  0⎤
//!                                                  ⎢0  1  1  0⎥       ⎢½   ½   ½⎥        ⎣0 1 −1 −1⎦
//!                                                  ⎢0 −1  1  0⎥       ⎢½  −½   ½⎥
//!                                                  ⎣0  1  0 −1⎦       ⎣0   0   1⎦
//! ```
//!
//! is the correlation `Y[i, j] = Σ_ab g[a, b]·d[i + a, j + b]` (expand the products to
//! check). Over channels the element-wise product becomes 16 matrix products, one per
//! position `k = (ξ, ν)` of the 4×4 transformed tile: `M_k = V_k·U_k` with
//! `V_k: [tiles·N, C_in]` (row `tile·N + image`), `U_k = (G·g·Gᵀ)_k: [C_in, C_out]`.
//! A 3×3 convolution then costs `16/36 = 4/9` of its multiply-adds, plus three passes over
//! memory (transform in, transform out, kernel) that are linear in the map and weight sizes.
//!
//! In the pixel-major layout ([`MapShape`]) all images' channels of one pixel are one
//! contiguous slice of `N·C` values, and so is one tile's row block of each `V_k`: every
//! transform is the same few additions over long contiguous slices, which vectorise.
//!
//! The transforms' values are sums of at most 16 inputs with coefficients 1 and ½, so `f32`
//! rounding stays within a few ulps of direct convolution's (tested against `f64`).

use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};
use rayon::prelude::*;

use crate::Float;
use crate::conv2d::{MapShape, Window};
use crate::matmul::matmul;

/// Values processed at a time per slice: chunks of this many lanes keep a tile's
/// intermediate rows in L1.
const LANES: usize = 64;

/// Positions of the transformed 4×4 tile.
const POSITIONS: usize = 16;

/// `G`, the kernel transform (4×3).
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// Maps with fewer input channels stay on the other paths: the 16 products would have
/// inner dimension `C_in`, too short to run near peak (the network's first layer, 3 → 64).
pub const MIN_CHANNELS: usize = 16;

/// Smallest map side that goes this way. On the write-up's 4×4 maps (512 channels) the
/// kernel's transforms — `16·C_in·C_out` values each way per pass, 16 MB — cost what the
/// products save over the tap-by-tap path, which already skips the padding (measured,
/// forward and backward at batch 32: 27.1 and 31.7 ms against 27.9 and 30.9), so those and
/// the 2×2 maps (one tile, 12 of whose 16 window pixels are padding) stay tap by tap.
pub const MIN_SIDE: usize = 8;

/// Whether a convolution with `window` over maps of `shape` goes this way: 3×3, stride 1,
/// padding 1 (the write-up's residual convolutions), even sides of at least [`MIN_SIDE`],
/// at least [`MIN_CHANNELS`] input channels.
pub fn applies(window: Window, shape: MapShape) -> bool {
    window
        == Window {
            kernel: 3,
            stride: 1,
            padding: 1,
        }
        && shape.height >= MIN_SIDE
        && shape.width >= MIN_SIDE
        && shape.height.is_multiple_of(2)
        && shape.width.is_multiple_of(2)
        && shape.channels >= MIN_CHANNELS
}

/// The buffers of one layer's Winograd passes, kept between calls (no allocation in the
/// steady state).
#[derive(Debug, Clone)]
pub struct WinogradBuffers<T> {
    /// `V = Bᵀ·d·B` of the last forward pass's input, `[16·tiles·N, C_in]` (block `k` is
    /// `V_k`): the weight gradient's left operand. In the backward pass it then takes the
    /// products `M'_k` of the input gradient.
    v: Array2<T>,
    /// `M_k = V_k·U_k`, `[16·tiles·N, C_out]`; in the backward pass `A·dY·Aᵀ` and then
    /// `Bᵀ·dY·B`.
    m: Array2<T>,
    /// `U_k = (G·g·Gᵀ)_k`, `[16·C_in, C_out]`.
    u: Array2<T>,
    /// `[16·C_out, C_in]`: the transposed kernel gradients `∂L/∂U_kᵀ`, then the transformed
    /// flipped kernel `U'_k` of the input gradient.
    u_back: Array2<T>,
}

impl<T: Float> Default for WinogradBuffers<T> {
    fn default() -> Self {
        let empty = || Array2::zeros((0, 0));
        WinogradBuffers {
            v: empty(),
            m: empty(),
            u: empty(),
            u_back: empty(),
        }
    }
}

/// Resizes `a` to `dim` when it differs (its contents are then overwritten by the caller).
fn fit<T: Float>(a: &mut Array2<T>, dim: (usize, usize)) {
    if a.dim() != dim {
        *a = Array2::zeros(dim);
    }
}

/// Block `k` (rows `k·rows..(k+1)·rows`) of a stack of 16 matrices.
fn block<T: Float>(a: &Array2<T>, k: usize, rows: usize) -> ArrayView2<'_, T> {
    a.slice(s![k * rows..(k + 1) * rows, ..])
}

impl<T: Float> WinogradBuffers<T> {
    /// `Y = conv3×3(X)` (or `Y +=` when `accumulate`) for `x` of shape `shape`, with the
    /// layer's weight given transposed, `Wᵀ: [9·C_in, C_out]` (rows in `(ky, kx, c)` order).
    pub fn forward(
        &mut self,
        weight_t: ArrayView2<'_, T>,
        x: ArrayView2<'_, T>,
        shape: MapShape,
        mut y: ArrayViewMut2<'_, T>,
        accumulate: bool,
    ) {
        let (c_in, c_out) = (shape.channels, weight_t.ncols());
        let rows = tiles(shape) * shape.images;
        fit(&mut self.v, (POSITIONS * rows, c_in));
        fit(&mut self.m, (POSITIONS * rows, c_out));
        fit(&mut self.u, (POSITIONS * c_in, c_out));
        kernel_transform(weight_t, &mut self.u);
        let x = x.as_standard_layout();
        input_transform(
            x.as_slice().expect("standard layout"),
            shape,
            self.v.as_slice_mut().expect("contiguous"),
        );
        for k in 0..POSITIONS {
            let mut m_k = self.m.slice_mut(s![k * rows..(k + 1) * rows, ..]);
            matmul(block(&self.v, k, rows), block(&self.u, k, c_in), &mut m_k, false);
        }
        let out = MapShape {
            channels: c_out,
            ..shape
        };
        output_transform(
            self.m.as_slice().expect("contiguous"),
            out,
            y.as_slice_mut().expect("the convolution's output is contiguous"),
            accumulate,
        );
    }

    /// The backward pass of the last forward pass (input of shape `shape`), given
    /// `dy = ∂L/∂Y`: adds `∂L/∂W` to `grad_weight: [C_out, 9·C_in]` and writes `∂L/∂X` into
    /// `dx` when given.
    ///
    /// Per tile and channel pair `Y = Aᵀ·M·A` with `M = U ⊙ V`, `U = G·g·Gᵀ`, so
    /// - `∂L/∂M = A·dY·Aᵀ` (the adjoint of a two-sided product), and over channels
    ///   `∂L/∂U_k = Σ_tiles,images V_kᵀ·(∂L/∂M)_k` — 16 products with the `V_k` kept from
    ///   the forward pass — and `∂L/∂g = Gᵀ·(∂L/∂U)·G`;
    /// - `∂L/∂X`: a stride-1, padding-1 3×3 correlation has as its adjoint the correlation of
    ///   `dY` with the kernel rotated by 180° and its channel axes swapped
    ///   (`∂L/∂X[p, c] = Σ_ab,j g[j, c, 2 − a, 2 − b]·dY[p + (a, b) − 1, j]`), which is again
    ///   a 3×3 same-padding correlation: the forward algorithm on `dY` with that kernel.
    pub fn backward(
        &mut self,
        weight: ArrayView2<'_, T>,
        shape: MapShape,
        dy: ArrayView2<'_, T>,
        grad_weight: ArrayViewMut2<'_, T>,
        dx: Option<ArrayViewMut2<'_, T>>,
    ) {
        let (c_in, c_out) = (shape.channels, weight.nrows());
        let rows = tiles(shape) * shape.images;
        assert_eq!(
            self.v.dim(),
            (POSITIONS * rows, c_in),
            "Winograd backward without a matching forward pass"
        );
        let out = MapShape {
            channels: c_out,
            ..shape
        };
        let dy = dy.as_standard_layout();
        let dy = dy.as_slice().expect("standard layout");
        fit(&mut self.u_back, (POSITIONS * c_out, c_in));

        // ∂L/∂U_kᵀ = (A·dY·Aᵀ)_kᵀ·V_k, then ∂L/∂g = Gᵀ·∂L/∂U·G.
        gradient_transform(dy, out, self.m.as_slice_mut().expect("contiguous"));
        for k in 0..POSITIONS {
            let mut du_k = self.u_back.slice_mut(s![k * c_out..(k + 1) * c_out, ..]);
            matmul(block(&self.m, k, rows).t(), block(&self.v, k, rows), &mut du_k, false);
        }
        kernel_gradient(&self.u_back, grad_weight);

        // ∂L/∂X: the forward algorithm on dY with the rotated, channel-swapped kernel.
        if let Some(mut dx) = dx {
            flipped_kernel_transform(weight, &mut self.u_back);
            input_transform(dy, out, self.m.as_slice_mut().expect("contiguous"));
            for k in 0..POSITIONS {
                let mut m_k = self.v.slice_mut(s![k * rows..(k + 1) * rows, ..]);
                matmul(block(&self.m, k, rows), block(&self.u_back, k, c_out), &mut m_k, false);
            }
            output_transform(
                self.v.as_slice().expect("contiguous"),
                shape,
                dx.as_slice_mut().expect("the input gradient is contiguous"),
                false,
            );
        }
    }
}

/// Tiles of a map: `(H/2)·(W/2)`.
fn tiles(shape: MapShape) -> usize {
    (shape.height / 2) * (shape.width / 2)
}

/// `U_k = Σ_ab G[ξ, a]·G[ν, b]·W_ab` for `k = 4ξ + ν`, where `W_ab` is tap `(a, b)`'s
/// `[C_in, C_out]` block of `Wᵀ`: 16 weighted sums of contiguous blocks, one task per `k`.
fn kernel_transform<T: Float>(weight_t: ArrayView2<'_, T>, u: &mut Array2<T>) {
    let weight_t = weight_t.as_standard_layout();
    let w = weight_t.as_slice().expect("standard layout");
    let size = w.len() / 9;
    u.as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(size)
        .enumerate()
        .for_each(|(k, u_k)| {
            u_k.fill(T::zero());
            for (a, b, c) in coefficients(k) {
                axpy(c, &w[(3 * a + b) * size..][..size], u_k);
            }
        });
}

/// `U'_k = Σ_ab G[ξ, a]·G[ν, b]·g'_ab` for the rotated, channel-swapped kernel
/// `g'_ab = W_{(2−a, 2−b)}: [C_out, C_in]` (a strided block of columns of `W`), into
/// `u_back: [16·C_out, C_in]`.
fn flipped_kernel_transform<T: Float>(weight: ArrayView2<'_, T>, u_back: &mut Array2<T>) {
    let (c_out, c_in) = (weight.nrows(), weight.ncols() / 9);
    u_back
        .as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(c_out * c_in)
        .enumerate()
        .for_each(|(k, u_k)| {
            for (row, u_row) in u_k.chunks_exact_mut(c_in).enumerate() {
                u_row.fill(T::zero());
                let w_row = weight.row(row);
                let w_row = w_row.as_slice().expect("weight rows are contiguous");
                for (a, b, c) in coefficients(k) {
                    let tap = 3 * (2 - a) + (2 - b);
                    axpy(c, &w_row[tap * c_in..][..c_in], u_row);
                }
            }
        });
}

/// `∂L/∂g_ab += Σ_k G[ξ, a]·G[ν, b]·∂L/∂U_k` (`= Gᵀ·∂L/∂U·G`), from the transposed
/// `∂L/∂U_kᵀ: [C_out, C_in]` blocks of `du_t` into the rows of `grad_weight: [C_out, 9·C_in]`.
fn kernel_gradient<T: Float>(du_t: &Array2<T>, mut grad_weight: ArrayViewMut2<'_, T>) {
    let c_out = grad_weight.nrows();
    let c_in = du_t.ncols();
    let du_t = du_t.as_slice().expect("contiguous");
    grad_weight
        .as_slice_mut()
        .expect("the weight gradient is contiguous")
        .par_chunks_mut(9 * c_in)
        .enumerate()
        .for_each(|(row, grad_row)| {
            for k in 0..POSITIONS {
                let du_row = &du_t[(k * c_out + row) * c_in..][..c_in];
                for (a, b, c) in coefficients(k) {
                    axpy(c, du_row, &mut grad_row[(3 * a + b) * c_in..][..c_in]);
                }
            }
        });
}

/// The non-zero terms `(a, b, G[ξ, a]·G[ν, b])` of transformed position `k = 4ξ + ν`.
fn coefficients<T: Float>(k: usize) -> impl Iterator<Item = (usize, usize, T)> {
    let (xi, nu) = (k / 4, k % 4);
    (0..3)
        .flat_map(move |a| (0..3).map(move |b| (a, b, G[xi][a] * G[nu][b])))
        .filter(|&(_, _, c)| c != 0.0)
        .map(|(a, b, c)| (a, b, T::of(c)))
}

/// `y += c·x`.
fn axpy<T: Float>(c: T, x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += c * x;
    }
}

/// Bᵀ applied along one axis: `(d0 − d2, d1 + d2, d2 − d1, d1 − d3)`, lane by lane.
#[allow(clippy::too_many_arguments)] // separate `&mut` parameters let the loop vectorise
fn b_transpose<T: Float>(
    d0: &[T],
    d1: &[T],
    d2: &[T],
    d3: &[T],
    o0: &mut [T],
    o1: &mut [T],
    o2: &mut [T],
    o3: &mut [T],
) {
    let n = o0.len();
    let (d0, d1, d2, d3) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n]);
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for i in 0..n {
        o0[i] = d0[i] - d2[i];
        o1[i] = d1[i] + d2[i];
        o2[i] = d2[i] - d1[i];
        o3[i] = d1[i] - d3[i];
    }
}

/// Aᵀ applied along one axis: `(m0 + m1 + m2, m1 − m2 − m3)`, written or added.
fn a_transpose<T: Float>(m0: &[T], m1: &[T], m2: &[T], m3: &[T], o0: &mut [T], o1: &mut [T], accumulate: bool) {
    let n = o0.len();
    let (m0, m1, m2, m3) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n]);
    let o1 = &mut o1[..n];
    if accumulate {
        for i in 0..n {
            o0[i] += m0[i] + m1[i] + m2[i];
            o1[i] += m1[i] - m2[i] - m3[i];
        }
    } else {
        for i in 0..n {
            o0[i] = m0[i] + m1[i] + m2[i];
            o1[i] = m1[i] - m2[i] - m3[i];
        }
    }
}

/// A applied along one axis: `(g0, g0 + g1, g0 − g1, −g1)`.
fn a_forward<T: Float>(g0: &[T], g1: &[T], o0: &mut [T], o1: &mut [T], o2: &mut [T], o3: &mut [T]) {
    let n = o0.len();
    let (g0, g1) = (&g0[..n], &g1[..n]);
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for i in 0..n {
        o0[i] = g0[i];
        o1[i] = g0[i] + g1[i];
        o2[i] = g0[i] - g1[i];
        o3[i] = -g1[i];
    }
}

/// The 16 blocks of a transformed batch, `[16][tiles][N·C]`, written one tile per task:
/// tile `t` owns the slices `block k, rows of t` for every `k`, which no other tile touches.
struct TileWriter<T> {
    ptr: *mut T,
    block_len: usize,
    tile_len: usize,
}

// SAFETY: tasks write through the pointer only to the slices of their own tile (see
// `slices`), so no two threads touch the same element.
unsafe impl<T: Send> Sync for TileWriter<T> {}

impl<T> TileWriter<T> {
    fn new(buffer: &mut [T], tiles: usize, tile_len: usize) -> Self {
        assert_eq!(buffer.len(), POSITIONS * tiles * tile_len, "transformed buffer size");
        TileWriter {
            ptr: buffer.as_mut_ptr(),
            block_len: tiles * tile_len,
            tile_len,
        }
    }

    /// Lanes `lanes` of tile `tile`'s slice of every block `k`, as `slices[k]`.
    ///
    /// # Safety
    /// Only the task that owns `tile` may call this, and it must not hold slices of the
    /// same lanes from an earlier call.
    #[allow(clippy::mut_from_ref)] // disjoint by the ownership rule above
    unsafe fn slices(&self, tile: usize, lanes: std::ops::Range<usize>) -> [&mut [T]; POSITIONS] {
        assert!(lanes.end <= self.tile_len);
        std::array::from_fn(|k| {
            // SAFETY: inside the buffer by the assertion and the constructor's size check;
            // the 16 slices lie in different blocks, and the caller's contract keeps them
            // from every other task's and call's.
            unsafe {
                std::slice::from_raw_parts_mut(
                    self.ptr.add(k * self.block_len + tile * self.tile_len + lanes.start),
                    lanes.len(),
                )
            }
        })
    }
}

/// The loop shared by the transforms into the Winograd domain: for every 2×2 tile `(ty, tx)`
/// of a map of shape `shape` (one task per tile) and every chunk of [`LANES`] of its pixels'
/// `N·C` values starting at lane `l0`, `transform(ty, tx, l0, scratch, out)` writes `out[k]`,
/// those lanes of the tile's slice of block `k` of `out: [16][tiles][N·C]`, using `scratch`
/// for its first 1-D pass.
fn transform_tiles<T: Float>(
    out: &mut [T],
    shape: MapShape,
    transform: impl Fn(usize, usize, usize, &mut [[T; LANES]; POSITIONS], [&mut [T]; POSITIONS]) + Sync,
) {
    let (len, tiles_x) = (shape.pixel_len(), shape.width / 2);
    let writer = TileWriter::new(out, tiles(shape), len);
    (0..tiles(shape)).into_par_iter().for_each(|tile| {
        let mut scratch = [[T::zero(); LANES]; POSITIONS];
        for l0 in (0..len).step_by(LANES) {
            // SAFETY: this task owns `tile`, and each chunk of lanes is taken once.
            let out = unsafe { writer.slices(tile, l0..(l0 + LANES).min(len)) };
            transform(tile / tiles_x, tile % tiles_x, l0, &mut scratch, out);
        }
    });
}

/// `V = Bᵀ·d·B` for every tile of `x` (shape `shape`) into `v: [16][tiles][N·C]`.
fn input_transform<T: Float>(x: &[T], shape: MapShape, v: &mut [T]) {
    let (height, width, len) = (shape.height, shape.width, shape.pixel_len());
    let zeros = [T::zero(); LANES];
    transform_tiles(v, shape, |ty, tx, l0, rows, mut out| {
        // rows[4ξ + b] = (Bᵀ·d)[ξ, b]
        let w = out[0].len();
        let pixel = |a: usize, b: usize| -> &[T] {
            let (y, x_) = ((2 * ty + a).wrapping_sub(1), (2 * tx + b).wrapping_sub(1));
            if y < height && x_ < width {
                &x[(y * width + x_) * len + l0..][..w]
            } else {
                &zeros[..w]
            }
        };
        for b in 0..4 {
            let [r0, r1, r2, r3] = rows.get_disjoint_mut([b, 4 + b, 8 + b, 12 + b]).expect("distinct");
            b_transpose(
                pixel(0, b),
                pixel(1, b),
                pixel(2, b),
                pixel(3, b),
                &mut r0[..w],
                &mut r1[..w],
                &mut r2[..w],
                &mut r3[..w],
            );
        }
        for (r, out) in rows.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
            let [o0, o1, o2, o3] = out else {
                unreachable!("chunks of 4")
            };
            b_transpose(&r[0][..w], &r[1][..w], &r[2][..w], &r[3][..w], o0, o1, o2, o3);
        }
    });
}

/// `∂L/∂M = A·dY·Aᵀ` for every 2×2 tile of `dy` (shape `shape`) into `[16][tiles][N·C]`.
fn gradient_transform<T: Float>(dy: &[T], shape: MapShape, out: &mut [T]) {
    let (width, len) = (shape.width, shape.pixel_len());
    transform_tiles(out, shape, |ty, tx, l0, cols, mut out| {
        // cols[2ξ + j] = (A·dY)[ξ, j] (the first 8 of the scratch rows)
        let w = out[0].len();
        let pixel = |i: usize, j: usize| &dy[((2 * ty + i) * width + 2 * tx + j) * len + l0..][..w];
        for j in 0..2 {
            let [q0, q1, q2, q3] = cols.get_disjoint_mut([j, 2 + j, 4 + j, 6 + j]).expect("distinct");
            a_forward(
                pixel(0, j),
                pixel(1, j),
                &mut q0[..w],
                &mut q1[..w],
                &mut q2[..w],
                &mut q3[..w],
            );
        }
        for (q, out) in cols.chunks_exact(2).zip(out.chunks_exact_mut(4)) {
            let [o0, o1, o2, o3] = out else {
                unreachable!("chunks of 4")
            };
            a_forward(&q[0][..w], &q[1][..w], o0, o1, o2, o3);
        }
    });
}

/// `Y_tile = Aᵀ·M·A` (written, or added when `accumulate`) from `m: [16][tiles][N·C]` into
/// the map `y` of shape `shape`; one task per row of tiles (two rows of pixels, contiguous).
fn output_transform<T: Float>(m: &[T], shape: MapShape, y: &mut [T], accumulate: bool) {
    let (width, len) = (shape.width, shape.pixel_len());
    let tiles_x = width / 2;
    let block_len = tiles(shape) * len;
    assert_eq!(m.len(), POSITIONS * block_len, "transformed buffer size");
    assert_eq!(y.len(), shape.height * width * len, "output size");
    y.par_chunks_mut(2 * width * len).enumerate().for_each(|(ty, y)| {
        let mut rows = [[T::zero(); LANES]; 8]; // Aᵀ·M: rows[4i + ν]
        for tx in 0..tiles_x {
            let tile = ty * tiles_x + tx;
            for l0 in (0..len).step_by(LANES) {
                let w = LANES.min(len - l0);
                let m_k = |k: usize| &m[k * block_len + tile * len + l0..][..w];
                for nu in 0..4 {
                    let [r0, r1] = rows.get_disjoint_mut([nu, 4 + nu]).expect("distinct");
                    a_transpose(
                        m_k(nu),
                        m_k(4 + nu),
                        m_k(8 + nu),
                        m_k(12 + nu),
                        &mut r0[..w],
                        &mut r1[..w],
                        false,
                    );
                }
                let at = |i: usize, j: usize| (i * width + 2 * tx + j) * len + l0;
                for i in 0..2 {
                    let [y0, y1] = y
                        .get_disjoint_mut([at(i, 0)..at(i, 0) + w, at(i, 1)..at(i, 1) + w])
                        .expect("distinct pixels");
                    let r = &rows[4 * i..4 * i + 4];
                    a_transpose(&r[0][..w], &r[1][..w], &r[2][..w], &r[3][..w], y0, y1, accumulate);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conv2d;
    use crate::gradcheck::{random_array, relative_error};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const SAME: Window = Window {
        kernel: 3,
        stride: 1,
        padding: 1,
    };

    /// The Winograd path against the im2col/tap products of the same layer (which the
    /// convolution tests check against the definition), in f64: output, accumulation,
    /// input gradient and weight gradient, on non-square maps and channel counts that are
    /// not multiples of the lane chunk.
    #[test]
    fn winograd_matches_direct_convolution() {
        let mut rng = StdRng::seed_from_u64(5);
        for (images, height, width, c_in, c_out) in [(2, 8, 10, 16, 5), (3, 10, 8, 17, 20), (1, 8, 8, 24, 16)] {
            let shape = MapShape {
                images,
                height,
                width,
                channels: c_in,
            };
            assert!(applies(SAME, shape));
            let conv = Conv2d::<f64>::new(c_in, c_out, SAME, false, &mut rng);
            let x = random_array(&mut rng, shape.dim());
            let out = conv.output_shape(shape);
            let dy = random_array(&mut rng, out.dim());
            let (want_y, want_dx, want_dw) = direct(&conv, &x, &dy, shape);

            let mut buffers = WinogradBuffers::default();
            let weight_t = conv.weight.t().as_standard_layout().to_owned();
            let mut y = Array2::from_elem(out.dim(), f64::NAN);
            buffers.forward(weight_t.view(), x.view(), shape, y.view_mut(), false);
            let mut dx = Array2::from_elem(shape.dim(), f64::NAN);
            let mut dw = Array2::ones(conv.weight.raw_dim());
            buffers.backward(conv.weight.view(), shape, dy.view(), dw.view_mut(), Some(dx.view_mut()));
            let flat = |a: &Array2<f64>| a.iter().copied().collect::<Vec<_>>();
            for (name, got, want) in [
                ("y", flat(&y), flat(&want_y)),
                ("dx", flat(&dx), flat(&want_dx)),
                ("dW (added to ones)", flat(&dw), flat(&(want_dw + 1.0))),
            ] {
                let err = relative_error(&got, &want);
                assert!(err < 1e-12, "{shape:?} → {c_out}: {name} relative error {err:e}");
            }
            buffers.forward(weight_t.view(), x.view(), shape, y.view_mut(), true);
            let err = relative_error(&flat(&y), &flat(&(&want_y * 2.0)));
            assert!(err < 1e-12, "accumulated output: {err:e}");
        }
    }

    /// `Y`, `∂L/∂X` and `∂L/∂W` of the layer through its other paths: on a copy of the maps
    /// widened by one column of zeros (an odd width, which this path does not take), whose
    /// extra column is the padding the original map had there; its outputs are dropped.
    fn direct(
        conv: &Conv2d<f64>,
        x: &Array2<f64>,
        dy: &Array2<f64>,
        shape: MapShape,
    ) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
        let wide = MapShape {
            width: shape.width + 1,
            ..shape
        };
        let widen = |a: &Array2<f64>, channels: usize| {
            let mut w = Array2::zeros((wide.pixels(), channels));
            for y in 0..shape.height {
                for x_ in 0..shape.width {
                    for i in 0..shape.images {
                        w.row_mut(wide.row(y, x_, i)).assign(&a.row(shape.row(y, x_, i)));
                    }
                }
            }
            w
        };
        let narrow = |w: &Array2<f64>| {
            let mut a = Array2::zeros((shape.pixels(), w.ncols()));
            for y in 0..shape.height {
                for x_ in 0..shape.width {
                    for i in 0..shape.images {
                        a.row_mut(shape.row(y, x_, i)).assign(&w.row(wide.row(y, x_, i)));
                    }
                }
            }
            a
        };
        let mut conv = conv.clone();
        assert!(!applies(conv.window, wide));
        let (xw, dyw) = (widen(x, shape.channels), widen(dy, conv.out_channels));
        let mut y = Array2::zeros((wide.pixels(), conv.out_channels));
        conv.forward(xw.view(), wide, y.view_mut(), false);
        let mut dx = Array2::zeros(wide.dim());
        conv.grad_weight.fill(0.0);
        conv.backward(xw.view(), wide, dyw.view(), Some(dx.view_mut()));
        (narrow(&y), narrow(&dx), conv.grad_weight.clone())
    }
}
