//! Numerical gradient checking by central differences, in `f64`.
//!
//! `∂L/∂θ_i ≈ (L(θ + h·e_i) − L(θ − h·e_i)) / 2h`, whose error is O(h²); with `h = 1e-5` in
//! `f64` the truncation and rounding errors are both around 1e-10 relative, far below the
//! 1e-6 the checks demand, while a wrong term in a derivation shows up at order one.
//!
//! To check a layer's backward pass the scalar loss is `L = Σ Y ⊙ R` for a fixed random `R`,
//! so that `∂L/∂Y = R` exercises every output element with a different weight.

use ndarray::{Array, Array2, ArrayView2, Dimension, ShapeBuilder};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::Parameters;

/// Step of the central differences.
pub const STEP: f64 = 1e-5;
/// Largest relative error a hand-written gradient may show against central differences.
pub const TOLERANCE: f64 = 1e-6;

/// Central-difference gradient of a scalar function of `len` values. `loss_with(i, h)` must
/// return the loss with value `i` shifted by `h` (and leave the value as it found it).
pub fn numerical_gradient(len: usize, mut loss_with: impl FnMut(usize, f64) -> f64) -> Vec<f64> {
    (0..len)
        .map(|i| (loss_with(i, STEP) - loss_with(i, -STEP)) / (2.0 * STEP))
        .collect()
}

/// `‖a − b‖ / max(‖a‖, ‖b‖)`: the relative error of two gradients as whole vectors, which
/// stays meaningful where single entries are near zero (0 when both are zero).
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "gradients of different sizes");
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let diff = norm(&mut a.iter().zip(b).map(|(x, y)| x - y));
    let scale = norm(&mut a.iter().copied()).max(norm(&mut b.iter().copied()));
    if scale == 0.0 { 0.0 } else { diff / scale }
}

/// An array of standard-normal values.
pub fn random_array<Sh: ShapeBuilder>(rng: &mut impl Rng, shape: Sh) -> Array<f64, Sh::Dim>
where
    Sh::Dim: Dimension,
{
    Array::from_shape_simple_fn(shape, || StandardNormal.sample(rng))
}

/// `Σ y ⊙ r`
fn weighted_sum(y: &Array2<f64>, r: &Array2<f64>) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Checks `backward`'s input gradient against central differences of `forward` at `x`;
/// panics with the error when it exceeds [`TOLERANCE`], returns it otherwise.
pub fn check_input_gradient<L>(
    layer: &mut L,
    x: &Array2<f64>,
    forward: impl Fn(&mut L, ArrayView2<'_, f64>) -> Array2<f64>,
    backward: impl Fn(&mut L, ArrayView2<'_, f64>, ArrayView2<'_, f64>) -> Array2<f64>,
    rng: &mut impl Rng,
) -> f64 {
    let y = forward(layer, x.view());
    let r = random_array(rng, y.raw_dim());
    let analytic = backward(layer, x.view(), r.view());
    let mut xp = x.clone();
    let numeric = numerical_gradient(x.len(), |i, h| {
        let v = xp.as_slice_mut().expect("contiguous")[i];
        xp.as_slice_mut().expect("contiguous")[i] = v + h;
        let loss = weighted_sum(&forward(layer, xp.view()), &r);
        xp.as_slice_mut().expect("contiguous")[i] = v;
        loss
    });
    let err = relative_error(analytic.as_slice().expect("contiguous"), &numeric);
    assert!(
        err < TOLERANCE,
        "input gradient: relative error {err:e} ≥ {TOLERANCE:e}"
    );
    err
}

/// Checks every parameter gradient that `backward` accumulates against central differences
/// of `forward` at `x`; panics naming the parameter whose error exceeds [`TOLERANCE`], and
/// returns the largest error otherwise.
pub fn check_parameter_gradients<L: Parameters<f64>, Out>(
    layer: &mut L,
    x: &Array2<f64>,
    forward: impl Fn(&mut L, ArrayView2<'_, f64>) -> Array2<f64>,
    backward: impl Fn(&mut L, ArrayView2<'_, f64>, ArrayView2<'_, f64>) -> Out,
    rng: &mut impl Rng,
) -> f64 {
    let y = forward(layer, x.view());
    let r = random_array(rng, y.raw_dim());
    layer.zero_grad();
    backward(layer, x.view(), r.view());
    let analytic: Vec<(String, Vec<f64>)> = layer
        .parameters()
        .into_iter()
        .map(|p| (p.name, p.grad.to_vec()))
        .collect();
    let mut worst: f64 = 0.0;
    for (index, (name, grad)) in analytic.iter().enumerate() {
        let numeric = numerical_gradient(grad.len(), |i, h| {
            layer.parameters()[index].value[i] += h;
            let loss = weighted_sum(&forward(layer, x.view()), &r);
            layer.parameters()[index].value[i] -= h;
            loss
        });
        let err = relative_error(grad, &numeric);
        assert!(
            err < TOLERANCE,
            "gradient of {name}: relative error {err:e} ≥ {TOLERANCE:e}"
        );
        worst = worst.max(err);
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_differences_of_a_known_function() {
        // f(x) = x0² · x1 + sin(x2): ∇f = (2·x0·x1, x0², cos(x2))
        let mut x = [1.5, -2.0, 0.3];
        let f = |x: &[f64]| x[0] * x[0] * x[1] + x[2].sin();
        let numeric = numerical_gradient(3, |i, h| {
            x[i] += h;
            let v = f(&x);
            x[i] -= h;
            v
        });
        let exact = [2.0 * 1.5 * -2.0, 1.5 * 1.5, 0.3f64.cos()];
        assert!(relative_error(&numeric, &exact) < 1e-9);
        // ... and a wrong gradient is caught.
        assert!(relative_error(&numeric, &[exact[0], exact[1], -exact[2]]) > 0.1);
    }

    #[test]
    fn relative_error_is_scale_free() {
        assert_eq!(relative_error(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        let a = [1e-9, 2e-9];
        let b = [1.1e-9, 2e-9];
        let e = relative_error(&a, &b);
        assert!((e - relative_error(&[1.0, 2.0], &[1.1, 2.0])).abs() < 1e-9);
    }
}
