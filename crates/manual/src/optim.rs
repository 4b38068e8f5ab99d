//! Optimisers. Each reads the accumulated gradients, updates the values, and clears the
//! gradients in the same pass (one sweep over memory instead of two).

use rayon::prelude::*;

use crate::{Float, Param, Parameters};

/// Below this many values an update runs on one thread: forking costs more.
const PARALLEL_THRESHOLD: usize = 1 << 15;

/// Runs `update` over matching chunks of values and gradients, one chunk per rayon thread
/// for large tensors (the update is memory-bound; each core then streams half the tensor).
fn for_each_chunk<T: Float>(values: &mut [T], grads: &mut [T], update: impl Fn(&mut [T], &mut [T]) + Sync) {
    if values.len() < PARALLEL_THRESHOLD {
        update(values, grads);
        return;
    }
    let chunk = values.len().div_ceil(rayon::current_num_threads());
    values
        .par_chunks_mut(chunk)
        .zip(grads.par_chunks_mut(chunk))
        .for_each(|(w, g)| update(w, g));
}

/// Plain stochastic gradient descent, `θ ← θ − η·∂L/∂θ`, as the original.
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    /// Learning rate η.
    pub lr: f64,
}

impl Sgd {
    /// Applies one update to every parameter of `model` and zeroes its gradients.
    pub fn step<T: Float>(&self, model: &mut impl Parameters<T>) {
        let lr = T::of(self.lr);
        for p in model.parameters() {
            for_each_chunk(p.value, p.grad, |w, g| {
                for (w, g) in w.iter_mut().zip(g.iter_mut()) {
                    *w -= lr * *g;
                    *g = T::zero();
                }
            });
        }
    }
}

/// Adam (Kingma & Ba), as PyTorch's: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − η·m̂/(√v̂ + ε)` with the bias corrections `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`.
/// The moments are kept per parameter, in the order [`Parameters::parameters`] lists them.
#[derive(Debug, Clone)]
pub struct Adam<T> {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Updates taken so far (`t`).
    pub steps: u64,
    /// `(m, v)` per parameter; allocated on the first update (or by [`Adam::reserve`]).
    moments: Vec<(Vec<T>, Vec<T>)>,
}

impl<T: Float> Default for Adam<T> {
    /// PyTorch's defaults: `β = (0.9, 0.999)`, `ε = 1e-8`.
    fn default() -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            steps: 0,
            moments: Vec::new(),
        }
    }
}

impl<T: Float> Adam<T> {
    /// Allocates zero moments shaped like `model`'s parameters (once).
    pub fn reserve(&mut self, model: &mut impl Parameters<T>) {
        if self.moments.is_empty() {
            self.moments = model
                .parameters()
                .iter()
                .map(|p| (vec![T::zero(); p.value.len()], vec![T::zero(); p.value.len()]))
                .collect();
        }
    }

    /// Applies one update at learning rate `lr` to every parameter of `model` and zeroes its
    /// gradients, in one sweep over memory.
    pub fn step(&mut self, model: &mut impl Parameters<T>, lr: f64) {
        self.reserve(model);
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (T::of(self.beta1), T::of(self.beta2));
        let (one_b1, one_b2) = (T::of(1.0 - self.beta1), T::of(1.0 - self.beta2));
        // Fold the bias corrections into the step and ε: η·m̂/(√v̂ + ε) =
        // (η/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + ε).
        let step_size = T::of(lr / (1.0 - self.beta1.powi(t)));
        let inv_sqrt_c2 = T::of(1.0 / (1.0 - self.beta2.powi(t)).sqrt());
        let eps = T::of(self.epsilon);
        let params = model.parameters();
        assert_eq!(params.len(), self.moments.len(), "Adam: the model's parameters changed");
        for (p, (m, v)) in params.into_iter().zip(self.moments.iter_mut()) {
            assert_eq!(p.value.len(), m.len(), "Adam: parameter {} changed size", p.name);
            let update = |w: &mut [T], g: &mut [T], m: &mut [T], v: &mut [T]| {
                for (((w, g), m), v) in w.iter_mut().zip(g.iter_mut()).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = b1 * *m + one_b1 * *g;
                    *v = b2 * *v + one_b2 * *g * *g;
                    *w -= step_size * *m / (v.sqrt() * inv_sqrt_c2 + eps);
                    *g = T::zero();
                }
            };
            if p.value.len() < PARALLEL_THRESHOLD {
                update(p.value, p.grad, m, v);
            } else {
                let chunk = p.value.len().div_ceil(rayon::current_num_threads());
                p.value
                    .par_chunks_mut(chunk)
                    .zip(p.grad.par_chunks_mut(chunk))
                    .zip(m.par_chunks_mut(chunk))
                    .zip(v.par_chunks_mut(chunk))
                    .for_each(|(((w, g), m), v)| update(w, g, m, v));
            }
        }
    }

    /// The moments as named tensors (`adam.m.<parameter>`, `adam.v.<parameter>`) for
    /// checkpoints; call [`Adam::reserve`] first when restoring into a fresh optimiser. The
    /// `grad` of each is empty.
    pub fn state<'a>(&'a mut self, names: &[String]) -> Vec<Param<'a, T>> {
        assert_eq!(names.len(), self.moments.len(), "Adam: one name per parameter");
        let mut out = Vec::with_capacity(2 * names.len());
        for (name, (m, v)) in names.iter().zip(self.moments.iter_mut()) {
            for (kind, values) in [("m", m), ("v", v)] {
                out.push(Param {
                    name: format!("adam.{kind}.{name}"),
                    shape: vec![values.len()],
                    value: values.as_mut_slice(),
                    grad: &mut [],
                });
            }
        }
        out
    }
}

/// RMSprop as PyTorch's (no momentum, not centred): `v ← αv + (1−α)g²`,
/// `θ ← θ − η·g/(√v + ε)`.
#[derive(Debug, Clone)]
pub struct RmsProp<T> {
    pub alpha: f64,
    pub epsilon: f64,
    /// `v` per parameter; allocated on the first update (or by [`RmsProp::reserve`]).
    square_avg: Vec<Vec<T>>,
}

impl<T: Float> Default for RmsProp<T> {
    /// PyTorch's defaults: `α = 0.99`, `ε = 1e-8`.
    fn default() -> Self {
        RmsProp {
            alpha: 0.99,
            epsilon: 1e-8,
            square_avg: Vec::new(),
        }
    }
}

impl<T: Float> RmsProp<T> {
    /// Allocates zero averages shaped like `model`'s parameters (once).
    pub fn reserve(&mut self, model: &mut impl Parameters<T>) {
        if self.square_avg.is_empty() {
            self.square_avg = model
                .parameters()
                .iter()
                .map(|p| vec![T::zero(); p.value.len()])
                .collect();
        }
    }

    /// Applies one update at learning rate `lr` to every parameter of `model` and zeroes its
    /// gradients.
    pub fn step(&mut self, model: &mut impl Parameters<T>, lr: f64) {
        self.reserve(model);
        let (alpha, one_alpha, lr, eps) = (
            T::of(self.alpha),
            T::of(1.0 - self.alpha),
            T::of(lr),
            T::of(self.epsilon),
        );
        let params = model.parameters();
        assert_eq!(
            params.len(),
            self.square_avg.len(),
            "RMSprop: the model's parameters changed"
        );
        for (p, v) in params.into_iter().zip(self.square_avg.iter_mut()) {
            assert_eq!(p.value.len(), v.len(), "RMSprop: parameter {} changed size", p.name);
            for ((w, g), v) in p.value.iter_mut().zip(p.grad.iter_mut()).zip(v.iter_mut()) {
                *v = alpha * *v + one_alpha * *g * *g;
                *w -= lr * *g / (v.sqrt() + eps);
                *g = T::zero();
            }
        }
    }

    /// The averages as named tensors (`rmsprop.v.<parameter>`) for checkpoints; call
    /// [`RmsProp::reserve`] first when restoring into a fresh optimiser.
    pub fn state<'a>(&'a mut self, names: &[String]) -> Vec<Param<'a, T>> {
        assert_eq!(names.len(), self.square_avg.len(), "RMSprop: one name per parameter");
        names
            .iter()
            .zip(self.square_avg.iter_mut())
            .map(|(name, v)| Param {
                name: format!("rmsprop.v.{name}"),
                shape: vec![v.len()],
                value: v.as_mut_slice(),
                grad: &mut [],
            })
            .collect()
    }
}

/// Scales every gradient of `model` by `max_norm / (‖g‖ + 1e-6)` when the global L2 norm
/// `‖g‖` over all parameters together exceeds `max_norm` (PyTorch's `clip_grad_norm_`).
/// Returns `‖g‖` before clipping.
pub fn clip_grad_norm<T: Float>(model: &mut impl Parameters<T>, max_norm: f64) -> f64 {
    let mut params = model.parameters();
    let squared: f64 = params
        .iter()
        .map(|p| p.grad.iter().map(|&g| g.to_f64_lossy() * g.to_f64_lossy()).sum::<f64>())
        .sum();
    let norm = squared.sqrt();
    if norm > max_norm {
        let scale = T::of(max_norm / (norm + 1e-6));
        for p in params.iter_mut() {
            p.grad.iter_mut().for_each(|g| *g *= scale);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, Mlp, MlpConfig, MlpInit, MlpNorm};
    use ndarray::Array2;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn sgd_moves_against_the_gradient_and_clears_it() {
        let mut layer = crate::LinearLayer::from_weights(ndarray::array![[1.0f64], [2.0]], ndarray::array![0.5]);
        layer.grad_weight = ndarray::array![[10.0], [-10.0]];
        layer.grad_bias = ndarray::array![1.0];
        Sgd { lr: 0.1 }.step(&mut layer);
        assert_eq!(layer.weight, ndarray::array![[0.0], [3.0]]);
        assert_eq!(layer.bias, ndarray::array![0.4]);
        assert!(layer.grad_weight.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn an_mlp_learns_a_toy_problem() {
        // Two Gaussian blobs per class in 8 dimensions; a linear model cannot fit the XOR-like
        // layout, an MLP with a hidden layer can.
        let mut rng = StdRng::seed_from_u64(11);
        let n = 256;
        let mut x = Array2::<f32>::zeros((n, 8));
        let mut y = vec![0usize; n];
        for i in 0..n {
            let (a, b) = (rng.random_bool(0.5), rng.random_bool(0.5));
            y[i] = (a ^ b) as usize;
            for j in 0..8 {
                let centre = if j % 2 == 0 { a } else { b };
                x[[i, j]] = if centre { 1.0 } else { -1.0 } + 0.3 * (rng.random::<f32>() - 0.5);
            }
        }
        let config = MlpConfig {
            inputs: 8,
            hidden: vec![16],
            classes: 2,
            activation: Activation::Elu,
            init: MlpInit::Normal(0.5),
            norm: MlpNorm::None,
        };
        let mut mlp = Mlp::<f32>::new(config, &mut rng);
        let sgd = Sgd { lr: 0.2 };
        let first = mlp.loss(x.view(), &y);
        for _ in 0..300 {
            mlp.forward_backward(x.view(), &y);
            sgd.step(&mut mlp);
        }
        let last = mlp.loss(x.view(), &y);
        assert!(last < first * 0.2, "loss {first} → {last}");
        assert_eq!(mlp.count_correct(x.view(), &y), n);
    }

    #[test]
    fn adam_matches_its_definition() {
        // One scalar, gradient 2 then −1: compute the two updates by hand.
        let mut layer = crate::LinearLayer::from_weights(ndarray::array![[1.0f64]], ndarray::array![0.0]);
        let mut adam = Adam::default();
        let (lr, b1, b2, eps) = (0.1, 0.9, 0.999, 1e-8);
        let (mut w, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for (t, g) in [(1, 2.0), (2, -1.0)] {
            layer.grad_weight[[0, 0]] = g;
            adam.step(&mut layer, lr);
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let (mh, vh) = (m / (1.0 - b1.powi(t)), v / (1.0 - b2.powi(t)));
            w -= lr * mh / (vh.sqrt() + eps);
            assert!(
                (layer.weight[[0, 0]] - w).abs() < 1e-12,
                "step {t}: {} vs {w}",
                layer.weight[[0, 0]]
            );
            assert_eq!(layer.grad_weight[[0, 0]], 0.0);
        }
        // The bias had zero gradient both times: it has not moved.
        assert_eq!(layer.bias[0], 0.0);
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let mut layer = crate::LinearLayer::from_weights(ndarray::array![[0.0f64, 0.0]], ndarray::array![0.0, 0.0]);
        layer.grad_weight = ndarray::array![[3.0, 0.0]];
        layer.grad_bias = ndarray::array![0.0, 4.0];
        assert_eq!(clip_grad_norm(&mut layer, 10.0), 5.0);
        assert_eq!(layer.grad_bias[1], 4.0, "below the bound nothing changes");
        assert_eq!(clip_grad_norm(&mut layer, 1.0), 5.0);
        let scale = 1.0 / (5.0 + 1e-6);
        assert!((layer.grad_weight[[0, 0]] - 3.0 * scale).abs() < 1e-15);
        assert!((layer.grad_bias[1] - 4.0 * scale).abs() < 1e-15);
    }

    #[test]
    fn rmsprop_matches_its_definition() {
        let mut layer = crate::LinearLayer::from_weights(ndarray::array![[1.0f64]], ndarray::array![0.0]);
        let mut opt = RmsProp::default();
        let (lr, alpha, eps) = (0.01, 0.99, 1e-8);
        let (mut w, mut v) = (1.0f64, 0.0);
        for g in [2.0, -1.0, 0.5] {
            layer.grad_weight[[0, 0]] = g;
            opt.step(&mut layer, lr);
            v = alpha * v + (1.0 - alpha) * g * g;
            w -= lr * g / (v.sqrt() + eps);
            assert!((layer.weight[[0, 0]] - w).abs() < 1e-12);
            assert_eq!(layer.grad_weight[[0, 0]], 0.0);
        }
    }
}
