//! Matrix products on ndarray views of any strides: `c = a·b` or `c += a·b`.
//!
//! Transposes are free: pass `w.t()` and the strides say the rest. In `f32`, when B and C
//! are contiguous along their columns and the CPU has AVX-512, the product is our own
//! unpacked kernel ([`avx512`]), which runs the MLP's products at 94–98 % of the machine's
//! peak; every other case goes to the `gemm` crate (packed kernels, chosen by measurement
//! over `matrixmultiply`), which is also what the `f64` gradient checks use.

use std::any::TypeId;
use std::sync::OnceLock;

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::Float;

#[cfg(target_arch = "x86_64")]
pub mod avx512;

/// Whether the AVX-512 kernel may be used (checked once).
fn fast_f32() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            avx512::available() && std::env::var_os("DL_NO_AVX512").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Column-major B operands with at least this many values are copied to row-major first.
const TRANSPOSE_THRESHOLD: usize = 1 << 15;

thread_local! {
    /// Scratch for the row-major copy of a column-major B.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// L2 cache per core on the machines this engine is tuned for.
const L2_BYTES: usize = 2 << 20;

/// Below this many multiply-adds a product runs on one thread: the fork costs more.
const PARALLEL_THRESHOLD: usize = 1 << 16;

/// `dst = srcᵀ`, one band of 32 destination rows per rayon task, so that both sides are
/// read and written a cache line at a time: the transposed copy of a product's column-major
/// operand, and the convolutions' per-step `Wᵀ`. `src` may have any strides (rows that are
/// contiguous take the fast path); `dst` must be contiguous.
pub fn transpose_into<T: Float>(src: ArrayView2<'_, T>, mut dst: ArrayViewMut2<'_, T>) {
    const BAND: usize = 32;
    let (rows, cols) = src.dim();
    assert_eq!(dst.dim(), (cols, rows), "transpose: shapes differ");
    let dst = dst.as_slice_mut().expect("the destination is contiguous");
    if rows == 0 || cols == 0 {
        return;
    }
    dst.par_chunks_mut(BAND * rows).enumerate().for_each(|(band, dst)| {
        let c0 = band * BAND;
        let c1 = (c0 + BAND).min(cols);
        for (r, row) in src.rows().into_iter().enumerate() {
            match row.to_slice() {
                Some(row) => {
                    for (c, &v) in row[c0..c1].iter().enumerate() {
                        dst[c * rows + r] = v;
                    }
                }
                None => {
                    for c in c0..c1 {
                        dst[(c - c0) * rows + r] = row[c];
                    }
                }
            }
        }
    });
}

/// `c = a·b` (or `c += a·b` when `accumulate`), with `a: [m, k]`, `b: [k, n]`, `c: [m, n]`.
pub fn matmul<T: Float>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, c: &mut ArrayViewMut2<'_, T>, accumulate: bool) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}×{k} · {k2}×{n})");
    assert_eq!(c.dim(), (m, n), "matmul: output is {:?}, expected {m}×{n}", c.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    // A large B stored column by column (a transposed weight, `W.t()`) is copied once into
    // row-major scratch so that the fast kernel can take it: the copy reads k·n values, the
    // product does k·n·m multiply-adds.
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && b.strides()[1] != 1
        && c.strides()[1] == 1
        && k * n >= TRANSPOSE_THRESHOLD
        && m >= 16
        && fast_f32()
    {
        TRANSPOSED.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            scratch.resize(k * n, 0.0);
            // SAFETY: T is f32 (checked above), so the scratch's f32 values are T values.
            let mut copy = unsafe { ndarray::ArrayViewMut2::from_shape_ptr((k, n), scratch.as_mut_ptr() as *mut T) };
            transpose_into(b.t(), copy.view_mut());
            matmul(a, copy.view(), c, accumulate);
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && b.strides()[1] == 1 && c.strides()[1] == 1 && fast_f32() {
        // The kernel streams all of B once per tile of C's rows, which is fast while B stays
        // in the L2 cache (2 MB per core here). A B larger than that is cut into blocks of
        // about 1 MB along k, each accumulated in turn: the LSTM's weight gradient
        // hᵀ·dA (k = T·B = 10,496, n = 1024) runs at 140 GFLOP/s in blocks and 45 without.
        let block_k = if k * n * 4 > L2_BYTES {
            (L2_BYTES / 2 / (n * 4)).max(16)
        } else {
            k
        };
        for k0 in (0..k).step_by(block_k) {
            let kb = block_k.min(k - k0);
            let product = avx512::Product {
                m,
                n,
                k: kb,
                // SAFETY (offsets): k0 < k, so both pointers stay inside their views.
                a: unsafe { (a.as_ptr() as *const f32).offset(k0 as isize * a.strides()[1]) },
                a_rs: a.strides()[0],
                a_cs: a.strides()[1],
                b: unsafe { (b.as_ptr() as *const f32).offset(k0 as isize * b.strides()[0]) },
                b_rs: b.strides()[0],
                c: c.as_mut_ptr() as *mut f32,
                c_rs: c.strides()[0],
                accumulate: accumulate || k0 > 0,
            };
            // SAFETY: T is f32 (checked above), so the casts are identities; the views'
            // shapes were checked, the block lies inside them, B and C have unit column
            // strides, and `c` is a unique borrow, so it cannot overlap `a` or `b`.
            unsafe { avx512::run(&product) };
        }
        return;
    }
    let parallelism = if m * n * k >= PARALLEL_THRESHOLD {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointers and strides come from live ndarray views whose shapes were checked
    // above; `c` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum())
    }

    #[test]
    fn products_match_the_definition_for_every_layout() {
        let a = Array2::from_shape_fn((37, 53), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
        let b = Array2::from_shape_fn((53, 29), |(i, j)| ((i * 5 + j) % 13) as f64 * 0.5);
        let want = naive(&a, &b);
        let at = a.t().to_owned(); // [k, m] stored row-major; at.t() is a transposed view
        let bt = b.t().to_owned();
        for (av, bv) in [
            (a.view(), b.view()),
            (at.t(), b.view()),
            (a.view(), bt.t()),
            (at.t(), bt.t()),
        ] {
            let mut c = Array2::zeros((37, 29));
            matmul(av, bv, &mut c.view_mut(), false);
            assert_eq!(c, want);
            matmul(av, bv, &mut c.view_mut(), true);
            assert_eq!(c, &want * 2.0);
        }
        let mut ct = Array2::zeros((29, 37));
        matmul(a.view(), b.view(), &mut ct.view_mut().reversed_axes(), false);
        assert_eq!(ct.t(), want);
    }

    /// The f32 path (our AVX-512 kernel where the CPU has it) against an f64 reference, on
    /// shapes that hit every column-tile width, row remainders and the threaded split.
    #[test]
    fn f32_products_match_an_f64_reference() {
        let shapes = [
            (1, 1, 1),
            (2, 10, 5),
            (3, 16, 7),
            (7, 17, 33),
            (13, 100, 64),
            (5, 112, 9),
            (4, 113, 12),
            (11, 250, 3),
            (200, 100, 300),
            (301, 37, 200),
            (5, 300, 2000), // k blocked: B is over the L2 size
            (7, 1024, 600),
            (20, 300, 200), // column-major B copied to row-major (with bt.t())
        ];
        for (m, n, k) in shapes {
            let a64 = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 11) as f64 * 0.25 - 1.0);
            let b64 = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j) % 13) as f64 * 0.125 - 0.5);
            let c0 = Array2::from_shape_fn((m, n), |(i, j)| (i + 2 * j) as f64 * 0.01);
            let want = naive(&a64, &b64);
            let a = a64.mapv(|v| v as f32);
            let at = a.t().to_owned();
            let b = b64.mapv(|v| v as f32);
            let bt = b.t().to_owned(); // bt.t() is B stored column by column
            for (a_view, b_view) in [(a.view(), b.view()), (at.t(), b.view()), (a.view(), bt.t())] {
                for accumulate in [false, true] {
                    let mut c = c0.mapv(|v| v as f32);
                    matmul(a_view, b_view, &mut c.view_mut(), accumulate);
                    let expected = if accumulate { &want + &c0 } else { want.clone() };
                    for ((i, j), &v) in c.indexed_iter() {
                        let e = expected[[i, j]];
                        assert!(
                            (v as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                            "{m}×{n}×{k} at ({i},{j}): {v} vs {e}"
                        );
                    }
                }
            }
        }
    }
}
