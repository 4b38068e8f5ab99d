//! Element-wise loops over equal-shaped arrays. When every array is contiguous in standard
//! order the loop runs over plain slices, which the compiler vectorises (ndarray's `Zip`
//! over 2-D views does not always); otherwise it falls back to `Zip`.

use ndarray::{ArrayView, ArrayViewMut, Dimension, Zip};

/// `out[i] = f(a[i])`
#[inline]
pub fn map1<T: Copy, D: Dimension>(a: ArrayView<'_, T, D>, mut out: ArrayViewMut<'_, T, D>, f: impl Fn(T) -> T) {
    match (a.as_slice(), out.as_slice_mut()) {
        (Some(a), Some(o)) => {
            for (o, &a) in o.iter_mut().zip(a) {
                *o = f(a);
            }
        }
        _ => Zip::from(out).and(a).for_each(|o, &a| *o = f(a)),
    }
}

/// `out[i] = f(a[i], b[i])`
#[inline]
pub fn map2<T: Copy, D: Dimension>(
    a: ArrayView<'_, T, D>,
    b: ArrayView<'_, T, D>,
    mut out: ArrayViewMut<'_, T, D>,
    f: impl Fn(T, T) -> T,
) {
    match (a.as_slice(), b.as_slice(), out.as_slice_mut()) {
        (Some(a), Some(b), Some(o)) => {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        }
        _ => Zip::from(out).and(a).and(b).for_each(|o, &a, &b| *o = f(a, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn slices_and_strided_views_agree() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]];
        let mut fast = Array2::zeros((2, 3));
        map2(a.view(), b.view(), fast.view_mut(), |x, y| x * y);
        // Transposed views are not contiguous in standard order: the Zip path.
        let mut slow = Array2::zeros((3, 2));
        map2(a.t(), b.t(), slow.view_mut(), |x, y| x * y);
        assert_eq!(fast.t(), slow);
        let mut neg = Array2::zeros((3, 2));
        map1(a.t(), neg.view_mut(), |x: f64| -x);
        assert_eq!(neg, -&a.t());
    }
}
