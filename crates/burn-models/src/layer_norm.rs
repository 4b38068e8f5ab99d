//! Layer normalisation three ways, as in the original practical:
//!
//! 1. [`layer_norm_composed`]: burn tensor operations, differentiated by burn's autodiff;
//! 2. [`layer_norm`]: one backend operation ([`LayerNormOps`]) whose backward pass is written by
//!    hand and registered with burn's autodiff (a backend extension with its own
//!    `Autodiff` implementation, the pattern of burn's `burn-signal` crate);
//! 3. [`LayerNorm`]: a module wrapping (2), with `γ = 1`, `β = 0` and a checked input width.
//!
//! For `x: [N, M]`: `μ_n = (1/M) Σ_j x_nj`, `σ²_n = (1/M) Σ_j (x_nj − μ_n)²`,
//! `x̂ = (x − μ)/√(σ² + ε)` and `y = γ ∘ x̂ + β`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::module::Param;
use burn::prelude::*;

/// ε added to the variance, as PyTorch's default.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// (1) Layer normalisation composed of tensor operations; burn's autodiff derives its backward.
pub fn layer_norm_composed(x: Tensor<2>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<2> {
    let mean = x.clone().mean_dim(1); // [N, 1]
    let centred = x - mean; // [N, M]
    let var = centred.clone().square().mean_dim(1); // [N, 1]
    let xhat = centred / (var + eps).sqrt(); // [N, M]
    xhat * gamma.unsqueeze::<2>() + beta.unsqueeze::<2>()
}

/// Layer normalisation as one backend operation. The default body is the forward pass in
/// backend operations; under autodiff, [`Autodiff`]'s implementation below records the
/// hand-written backward pass instead of letting autodiff trace the forward's pieces.
#[backend_extension(Flex, Cube: cfg(feature = "gpu"), Autodiff)]
pub trait LayerNormOps: Backend {
    /// `y = γ ∘ (x − μ)/√(σ² + ε) + β` for `x: [N, M]`, `gamma`, `beta: [M]`.
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        forward_parts::<Self>(x, gamma, beta, eps).output
    }
}

impl LayerNormOps for Flex {}

#[cfg(feature = "gpu")]
impl LayerNormOps for burn::backend::Cube {}

/// The forward pass and what the backward pass keeps of it.
struct ForwardParts<B: Backend> {
    /// `y`, `[N, M]`
    output: FloatTensor<B>,
    /// `x̂`, `[N, M]`
    xhat: FloatTensor<B>,
    /// `1/√(σ² + ε)`, `[N, 1]`
    rstd: FloatTensor<B>,
}

/// The forward pass in backend operations.
fn forward_parts<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> ForwardParts<B> {
    let [n, m] = dims2::<B>(&x);
    let mean = B::float_mean_dim(x.clone(), 1); // [N, 1]
    let centred = B::float_sub(x, mean); // [N, M]
    // Two passes (mean, then centred squares): stable where E[x²] − E[x]² is not.
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), 1); // [N, 1]
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, eps.into()))); // [N, 1]
    let xhat = B::float_mul(centred, rstd.clone()); // [N, M]
    let gamma = B::float_reshape(gamma, Shape::new([1, m]));
    let beta = B::float_reshape(beta, Shape::new([1, m]));
    let output = B::float_add(B::float_mul(xhat.clone(), gamma), beta);
    debug_assert_eq!(dims2::<B>(&output), [n, m]);
    ForwardParts { output, xhat, rstd }
}

fn dims2<B: Backend>(t: &FloatTensor<B>) -> [usize; 2] {
    use burn::backend::TensorMetadata;
    let shape = t.shape();
    assert_eq!(shape.num_dims(), 2, "layer norm expects [N, M] inputs, got {shape:?}");
    [shape[0], shape[1]]
}

/// The hand-written backward pass (the write-up's derivation), registered with autodiff.
#[derive(Debug)]
struct LayerNormBackward;

impl<B: Backend> Backward<B, 3> for LayerNormBackward {
    /// Only what the backward pass needs: `x̂ [N, M]`, `1/√(σ² + ε) [N, 1]` and `γ [M]`.
    /// (`x`, `μ` and `β` are not kept.)
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    /// With `g = ∂L/∂Y ∘ γ` (the gradient with respect to `x̂`):
    /// - `∂L/∂β_i = Σ_n ∂L/∂Y_ni`, `∂L/∂γ_i = Σ_n ∂L/∂Y_ni x̂_ni`;
    /// - `∂L/∂X_ni = 1/(M√(σ²_n + ε)) [M g_ni − Σ_j g_nj − x̂_ni Σ_j g_nj x̂_nj]`.
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node); // [N, M]
        let (xhat, rstd, gamma) = ops.state;
        let [_, m] = dims2::<B>(&dy);
        let flat = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([m]));

        if let Some(node) = node_beta {
            grads.register::<B>(node.id, flat(B::float_sum_dim(dy.clone(), 0)));
        }
        if let Some(node) = node_gamma {
            let dgamma = B::float_sum_dim(B::float_mul(dy.clone(), xhat.clone()), 0);
            grads.register::<B>(node.id, flat(dgamma));
        }
        if let Some(node) = node_x {
            let g = B::float_mul(dy, B::float_reshape(gamma, Shape::new([1, m]))); // [N, M]
            let sum_g = B::float_sum_dim(g.clone(), 1); // [N, 1]
            let sum_g_xhat = B::float_sum_dim(B::float_mul(g.clone(), xhat.clone()), 1); // [N, 1]
            // M g − Σ g − x̂ Σ g x̂
            let inner = B::float_sub(
                B::float_sub(B::float_mul_scalar(g, (m as f64).into()), sum_g),
                B::float_mul(xhat, sum_g_xhat),
            );
            let dx = B::float_mul(inner, B::float_div_scalar(rstd, (m as f64).into()));
            grads.register::<B>(node.id, dx);
        }
    }
}

impl<B: Backend + LayerNormOps, C: CheckpointStrategy> LayerNormOps for Autodiff<B, C> {
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let parents = [x.node(), gamma.node(), beta.node()];
        let gamma = gamma.into_primitive();
        let parts = forward_parts::<B>(x.into_primitive(), gamma.clone(), beta.into_primitive(), eps);
        match LayerNormBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((parts.xhat, parts.rstd, gamma), parts.output),
            OpsKind::UnTracked(prep) => prep.finish(parts.output),
        }
    }
}

/// (2) Layer normalisation as one operation with a hand-written backward pass.
pub fn layer_norm(x: Tensor<2>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<2> {
    let out =
        <Dispatch as LayerNormOps>::layer_norm(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), eps);
    Tensor::from_dispatch(out)
}

/// An input whose width is not the one the module was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidthMismatch {
    pub expected: usize,
    pub got: usize,
}

impl std::fmt::Display for WidthMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LayerNorm over {} features got an input {} wide",
            self.expected, self.got
        )
    }
}

impl std::error::Error for WidthMismatch {}

/// (3) The LayerNorm module: learnt `γ` (initially 1) and `β` (initially 0) over `features`
/// features, applied with the hand-written operation (2).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    /// A LayerNorm over `features` features on `device`.
    pub fn new(features: usize, device: &Device) -> Self {
        LayerNorm {
            gamma: Param::from_tensor(Tensor::ones([features], device)),
            beta: Param::from_tensor(Tensor::zeros([features], device)),
            eps: LAYER_NORM_EPS,
        }
    }

    /// Number of features normalised.
    pub fn features(&self) -> usize {
        self.gamma.dims()[0]
    }

    /// Normalises `x: [N, M]`, or says why it cannot.
    pub fn try_forward(&self, x: Tensor<2>) -> Result<Tensor<2>, WidthMismatch> {
        let got = x.dims()[1];
        if got != self.features() {
            return Err(WidthMismatch {
                expected: self.features(),
                got,
            });
        }
        Ok(layer_norm(x, self.gamma.val(), self.beta.val(), self.eps))
    }

    /// Normalises `x: [N, M]`; panics with [`WidthMismatch`]'s message on the wrong width.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.try_forward(x).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;
    use manual::gradcheck::{numerical_gradient, relative_error};
    use ndarray::Array2;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn randn(rng: &mut StdRng, n: usize) -> Vec<f64> {
        // Sum of uniforms: roughly normal, enough for test inputs.
        (0..n)
            .map(|_| (0..4).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * 1.7)
            .collect()
    }

    fn tensor<const D: usize>(values: &[f64], shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), (device, DType::F64))
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
    }

    /// Loss `Σ y ∘ r` through either implementation, and the gradients of x, γ and β.
    fn gradients(
        op: fn(Tensor<2>, Tensor<1>, Tensor<1>, f64) -> Tensor<2>,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        r: &[f64],
        [n, m]: [usize; 2],
    ) -> [Vec<f64>; 3] {
        let device = Device::flex().autodiff();
        let xt = tensor(x, [n, m], &device).require_grad();
        let gt = tensor(gamma, [m], &device).require_grad();
        let bt = tensor(beta, [m], &device).require_grad();
        let loss = (op(xt.clone(), gt.clone(), bt.clone(), LAYER_NORM_EPS) * tensor(r, [n, m], &device)).sum();
        let grads = loss.backward();
        [
            values(xt.grad(&grads).unwrap()),
            values(gt.grad(&grads).unwrap()),
            values(bt.grad(&grads).unwrap()),
        ]
    }

    fn forward_value(x: &[f64], gamma: &[f64], beta: &[f64], r: &[f64], [n, m]: [usize; 2]) -> f64 {
        let device = Device::flex();
        let y = layer_norm(
            tensor(x, [n, m], &device),
            tensor(gamma, [m], &device),
            tensor(beta, [m], &device),
            LAYER_NORM_EPS,
        );
        values(y).iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn rows_are_normalised_and_beta_shifts_them() {
        let device = Device::flex();
        let mut rng = StdRng::seed_from_u64(1);
        let (n, m) = (6, 40);
        let x: Vec<f64> = randn(&mut rng, n * m).iter().map(|v| v * 4.0 + 2.0).collect();
        let module = LayerNorm::new(m, &device);
        let y = module.forward(Tensor::from_data(
            TensorData::new(x.iter().map(|&v| v as f32).collect(), [n, m]),
            &device,
        ));
        let y = Array2::from_shape_vec((n, m), values(y)).unwrap();
        let (mean, var) = manual::layer_norm::row_moments(y.view());
        assert!(mean.iter().all(|v| v.abs() < 1e-5), "{mean}");
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var}");

        let beta: Vec<f64> = randn(&mut rng, m);
        let y = layer_norm(
            tensor(&x, [n, m], &device),
            Tensor::ones([m], (&device, DType::F64)),
            tensor(&beta, [m], &device),
            LAYER_NORM_EPS,
        );
        let y = Array2::from_shape_vec((n, m), values(y)).unwrap();
        let (mean, _) = manual::layer_norm::row_moments(y.view());
        let beta_mean = beta.iter().sum::<f64>() / m as f64;
        assert!(
            mean.iter().all(|v| (v - beta_mean).abs() < 1e-12),
            "{mean} vs {beta_mean}"
        );
    }

    #[test]
    fn hand_written_backward_matches_central_differences_and_autodiff() {
        let mut rng = StdRng::seed_from_u64(2);
        // Not M = 2: there x̂ = ±1 whatever x is, ∂L/∂x is O(ε) and a relative error of it
        // measures only the central differences' rounding.
        for [n, m] in [[1, 3], [3, 7], [8, 16]] {
            let x = randn(&mut rng, n * m);
            let gamma = randn(&mut rng, m);
            let beta = randn(&mut rng, m);
            let r = randn(&mut rng, n * m);
            let custom = gradients(layer_norm, &x, &gamma, &beta, &r, [n, m]);
            let composed = gradients(layer_norm_composed, &x, &gamma, &beta, &r, [n, m]);

            let (mut xp, mut gp, mut bp) = (x.clone(), gamma.clone(), beta.clone());
            let numeric_x = numerical_gradient(x.len(), |i, h| {
                xp[i] += h;
                let v = forward_value(&xp, &gamma, &beta, &r, [n, m]);
                xp[i] -= h;
                v
            });
            let numeric_g = numerical_gradient(m, |i, h| {
                gp[i] += h;
                let v = forward_value(&x, &gp, &beta, &r, [n, m]);
                gp[i] -= h;
                v
            });
            let numeric_b = numerical_gradient(m, |i, h| {
                bp[i] += h;
                let v = forward_value(&x, &gamma, &bp, &r, [n, m]);
                bp[i] -= h;
                v
            });
            for (k, numeric) in [numeric_x, numeric_g, numeric_b].iter().enumerate() {
                let err = relative_error(&custom[k], numeric);
                assert!(err < 1e-6, "{n}×{m}, input {k}: custom vs central differences {err:e}");
                let err = relative_error(&custom[k], &composed[k]);
                assert!(err < 1e-5, "{n}×{m}, input {k}: custom vs burn's autodiff {err:e}");
            }
        }
    }

    #[test]
    fn agrees_with_the_manual_engine() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, m) = (5, 12);
        let (x, gamma, beta, r) = (
            randn(&mut rng, n * m),
            randn(&mut rng, m),
            randn(&mut rng, m),
            randn(&mut rng, n * m),
        );
        let burn_grads = gradients(layer_norm, &x, &gamma, &beta, &r, [n, m]);

        let mut ln = manual::LayerNorm::<f64>::new(m);
        ln.gamma = ndarray::Array1::from_vec(gamma.clone());
        ln.beta = ndarray::Array1::from_vec(beta.clone());
        let xa = Array2::from_shape_vec((n, m), x.clone()).unwrap();
        let mut y = Array2::zeros((n, m));
        ln.forward(xa.view(), y.view_mut());
        let device = Device::flex();
        let burn_y = values(layer_norm(
            tensor(&x, [n, m], &device),
            tensor(&gamma, [m], &device),
            tensor(&beta, [m], &device),
            LAYER_NORM_EPS,
        ));
        assert!(relative_error(y.as_slice().unwrap(), &burn_y) < 1e-12);
        let mut dx = Array2::zeros((n, m));
        let ra = Array2::from_shape_vec((n, m), r).unwrap();
        ln.backward(xa.view(), ra.view(), dx.view_mut());
        assert!(relative_error(dx.as_slice().unwrap(), &burn_grads[0]) < 1e-10);
        assert!(relative_error(ln.grad_gamma.as_slice().unwrap(), &burn_grads[1]) < 1e-10);
        assert!(relative_error(ln.grad_beta.as_slice().unwrap(), &burn_grads[2]) < 1e-10);
    }

    #[test]
    fn the_module_checks_the_input_width() {
        let device = Device::flex();
        let module = LayerNorm::new(8, &device);
        let err = module.try_forward(Tensor::zeros([2, 5], &device)).unwrap_err();
        assert_eq!(err.to_string(), "LayerNorm over 8 features got an input 5 wide");
        assert_eq!(
            module.try_forward(Tensor::zeros([2, 8], &device)).unwrap().dims(),
            [2, 8]
        );
    }
}
