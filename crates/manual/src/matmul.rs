//! Matrix products on ndarray views of any strides: `c = a·b` or `c += a·b`.
//!
//! Transposes are free: pass `w.t()` and the strides say the rest. The product itself is the
//! `gemm` crate's (packed AVX-512 kernels, both cores through rayon), chosen by measurement
//! against `matrixmultiply` on the engine's shapes.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::Float;

/// Below this many multiply-adds a product runs on one thread: the fork costs more.
const PARALLEL_THRESHOLD: usize = 1 << 16;

/// `c = a·b` (or `c += a·b` when `accumulate`), with `a: [m, k]`, `b: [k, n]`, `c: [m, n]`.
pub fn matmul<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    c: &mut ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(
        k, k2,
        "matmul: inner dimensions differ ({m}×{k} · {k2}×{n})"
    );
    assert_eq!(
        c.dim(),
        (m, n),
        "matmul: output is {:?}, expected {m}×{n}",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
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
        matmul(
            a.view(),
            b.view(),
            &mut ct.view_mut().reversed_axes(),
            false,
        );
        assert_eq!(ct.t(), want);
    }
}
