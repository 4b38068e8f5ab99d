//! An AVX-512 `f32` matrix product for the engine's shapes, without packing.
//!
//! `C[m×n] (+)= A[m×k]·B[k×n]` where B and C are contiguous along their columns and A has
//! any strides. The micro-kernel keeps an `MR × 16·NV` tile of C in registers and, for each
//! `p`, loads one row of B (`NV` vectors) and broadcasts `MR` scalars of A's column `p`:
//! `MR·NV` fused multiply-adds per `NV + MR` loads. With `NV = 7`, `MR = 3` that is 21
//! accumulators + 7 B vectors + 1 broadcast = 29 of the 32 vector registers, and a whole
//! 100-wide layer (the write-up's hidden size) is one column tile.
//!
//! Why no packing: for the MLP's products (200×3072·3072×100 and 3072×200·200×100) the
//! operand B streams from L2 at about a third of its bandwidth and A's scalars come from
//! a few cache lines at a time, so the kernel runs at 94–98 % of this machine's FMA peak
//! (measured: 188 and 196 GFLOP/s on two cores), where a packing GEMM (`gemm` 0.19) reaches
//! 122–136 on the same shapes: its packing passes and one fork–join per k-block cost more
//! than they save at these sizes.
//!
//! Threads: the rows of C are split into one contiguous range per rayon thread, each
//! computed start to finish by one thread in a fixed order, so results are deterministic.

use std::arch::x86_64::*;

/// Operands of one product: `C[m×n] (+)= A[m×k]·B[k×n]`, strides in elements.
#[derive(Clone, Copy)]
pub struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub a_rs: isize,
    pub a_cs: isize,
    pub b: *const f32,
    /// Row stride of B; its column stride is 1.
    pub b_rs: isize,
    pub c: *mut f32,
    /// Row stride of C; its column stride is 1.
    pub c_rs: isize,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
}

// SAFETY: a `Product` only carries pointers; `run` hands each rayon worker a disjoint row
// range of C to write, and A and B are only read.
unsafe impl Send for Product {}
unsafe impl Sync for Product {}

/// True when this CPU can run the kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Lanes used in the last vector of a row tile of `cols` columns.
fn tail_mask(cols: usize) -> __mmask16 {
    match cols % 16 {
        0 => 0xffff,
        r => ((1u32 << r) - 1) as __mmask16,
    }
}

/// The micro-kernel: `C[MR × cols] (+)= Σ_p A[i, p]·B[p, 0..cols]` with `cols ≤ 16·NV`
/// (the last vector masked by `mask`).
///
/// # Safety
/// AVX-512F must be available; every address touched must be valid.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)] // a BLAS-style signature: pointers and strides
unsafe fn micro_kernel<const MR: usize, const NV: usize>(
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    c: *mut f32,
    c_rs: isize,
    mask: __mmask16,
    accumulate: bool,
) {
    // SAFETY: the caller guarantees the addresses; the masked loads and stores of the last
    // vector never touch lanes beyond `cols`.
    unsafe {
        let load = |p: *const f32, v: usize| {
            if v == NV - 1 {
                _mm512_maskz_loadu_ps(mask, p.add(16 * v))
            } else {
                _mm512_loadu_ps(p.add(16 * v))
            }
        };
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, r) in row.iter_mut().enumerate() {
                    *r = load(c.offset(i as isize * c_rs), v);
                }
            }
        }
        let (mut ap, mut bp) = (a, b);
        for _ in 0..k {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = load(bp, v);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.offset(i as isize * a_rs));
                for (r, &x) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, x, *r);
                }
            }
            ap = ap.offset(a_cs);
            bp = bp.offset(b_rs);
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &r) in row.iter().enumerate() {
                let dst = c.offset(i as isize * c_rs).add(16 * v);
                if v == NV - 1 {
                    _mm512_mask_storeu_ps(dst, mask, r)
                } else {
                    _mm512_storeu_ps(dst, r)
                }
            }
        }
    }
}

/// Rows `rows` of C, for one column tile `[col, col + 16·NV)` (narrower at the right edge):
/// `MR` rows at a time, then single rows.
///
/// # Safety
/// As [`run`].
#[target_feature(enable = "avx512f")]
unsafe fn row_range<const MR: usize, const NV: usize>(p: &Product, rows: std::ops::Range<usize>, col: usize) {
    let cols = (p.n - col).min(16 * NV);
    let mask = tail_mask(cols);
    // SAFETY: every (row, column) visited lies inside the m×n, m×k and k×n operands.
    unsafe {
        let b = p.b.add(col);
        let tile = |i: usize| {
            (
                p.a.offset(i as isize * p.a_rs),
                p.c.offset(i as isize * p.c_rs).add(col),
            )
        };
        let mut i = rows.start;
        while i + MR <= rows.end {
            let (a, c) = tile(i);
            micro_kernel::<MR, NV>(p.k, a, p.a_rs, p.a_cs, b, p.b_rs, c, p.c_rs, mask, p.accumulate);
            i += MR;
        }
        while i < rows.end {
            let (a, c) = tile(i);
            micro_kernel::<1, NV>(p.k, a, p.a_rs, p.a_cs, b, p.b_rs, c, p.c_rs, mask, p.accumulate);
            i += 1;
        }
    }
}

/// All column tiles of a row range. Full tiles are 112 columns wide (`NV = 7`, `MR = 3`);
/// the last tile uses the fewest vectors that cover it, with as many rows as keep its
/// accumulators within the register file.
///
/// # Safety
/// As [`run`].
#[target_feature(enable = "avx512f")]
unsafe fn rows_all_columns(p: &Product, rows: std::ops::Range<usize>) {
    let mut col = 0;
    // SAFETY: forwarded contract.
    unsafe {
        while col < p.n {
            let vectors = (p.n - col).div_ceil(16).min(7);
            match vectors {
                7 => row_range::<3, 7>(p, rows.clone(), col),
                6 => row_range::<4, 6>(p, rows.clone(), col),
                5 => row_range::<4, 5>(p, rows.clone(), col),
                4 => row_range::<6, 4>(p, rows.clone(), col),
                3 => row_range::<8, 3>(p, rows.clone(), col),
                2 => row_range::<12, 2>(p, rows.clone(), col),
                _ => row_range::<12, 1>(p, rows.clone(), col),
            }
            col += 16 * vectors;
        }
    }
}

/// Below this many multiply-adds one thread does the whole product.
const PARALLEL_THRESHOLD: usize = 1 << 18;

/// Computes the product, splitting C's rows across the rayon pool when it is large enough.
///
/// # Safety
/// [`available`] must be true; A, B and C must be valid for the given shapes and strides,
/// with B and C contiguous along columns, and C must not overlap A or B.
pub unsafe fn run(p: &Product) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads == 1 || p.m * p.n * p.k < PARALLEL_THRESHOLD || p.m < 2 * 3 {
        // SAFETY: forwarded contract.
        unsafe { rows_all_columns(p, 0..p.m) };
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { split(p, 0..p.m, threads) };
}

/// Splits `rows` into `parts` ranges of whole 3-row tiles with `rayon::join`, whose first
/// closure runs on the calling thread: the same thread then owns the same part of C as in
/// the element-wise passes that follow (which split with `join` too), and finds it in its
/// own cache.
///
/// # Safety
/// As [`run`].
unsafe fn split(p: &Product, rows: std::ops::Range<usize>, parts: usize) {
    if parts <= 1 || rows.len() < 2 * 3 {
        // SAFETY: forwarded contract.
        unsafe { rows_all_columns(p, rows) };
        return;
    }
    let left = parts / 2;
    let mid = rows.start + (rows.len() * left / parts).div_ceil(3) * 3;
    let (a, b) = (rows.start..mid.min(rows.end), mid.min(rows.end)..rows.end);
    rayon::join(
        // SAFETY: forwarded contract; the two row ranges are disjoint.
        || unsafe { split(p, a, left) },
        || unsafe { split(p, b, parts - left) },
    );
}
