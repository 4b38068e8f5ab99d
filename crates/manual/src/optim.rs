//! Optimisers. Each reads the accumulated gradients, updates the values, and clears the
//! gradients in the same pass (one sweep over memory instead of two).

use rayon::prelude::*;

use crate::{Float, Parameters};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, Mlp, MlpConfig};
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
            init_std: 0.5,
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
}
