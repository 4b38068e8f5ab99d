//! Embedding: a learnt vector per token, `Y_r = E_{id_r}` for `E: [V, D]`.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{Float, Param, Parameters};

/// A table of `V` vectors of width `D`.
#[derive(Debug, Clone)]
pub struct Embedding<T> {
    /// `E: [V, D]`, initialised from N(0, 1) (PyTorch's and burn's default).
    pub weight: Array2<T>,
    /// `[V, D]`, accumulated by `backward`.
    pub grad_weight: Array2<T>,
}

impl<T: Float> Embedding<T> {
    /// `vocab` vectors of width `width`, drawn from N(0, 1).
    pub fn new(vocab: usize, width: usize, rng: &mut impl Rng) -> Self {
        let weight = Array2::from_shape_simple_fn((vocab, width), || {
            T::of(<StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng))
        });
        Self::from_weights(weight)
    }

    /// A table with the given vectors `[V, D]`.
    pub fn from_weights(weight: Array2<T>) -> Self {
        Embedding {
            grad_weight: Array2::zeros(weight.raw_dim()),
            weight,
        }
    }

    /// Number of tokens `V`.
    pub fn vocab(&self) -> usize {
        self.weight.nrows()
    }

    /// Width `D` of each vector.
    pub fn width(&self) -> usize {
        self.weight.ncols()
    }

    /// `y[r] = E[ids[r]]`, `y: [ids.len(), D]`. Panics on an id outside the vocabulary
    /// (the data layer validates tokens before they get here).
    pub fn forward(&self, ids: &[usize], mut y: ArrayViewMut2<'_, T>) {
        assert_eq!(y.nrows(), ids.len(), "Embedding: one output row per id");
        for (mut row, &id) in y.rows_mut().into_iter().zip(ids) {
            assert!(id < self.vocab(), "token {id} outside a vocabulary of {}", self.vocab());
            row.assign(&self.weight.row(id));
        }
    }

    /// With `Y_rj = Σ_v δ_{v,id_r} E_vj`: `∂L/∂E_vj = Σ_r δ_{v,id_r} (∂L/∂Y)_rj`, i.e. each
    /// output row's gradient is added to the row of its token (a token used twice collects
    /// both). The ids are data, so there is no input gradient.
    pub fn backward(&mut self, ids: &[usize], dy: ArrayView2<'_, T>) {
        for (row, &id) in dy.rows().into_iter().zip(ids) {
            let mut g = self.grad_weight.row_mut(id);
            g += &row;
        }
    }
}

impl<T: Float> Parameters<T> for Embedding<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        vec![Param {
            name: "weight".into(),
            shape: self.weight.shape().to_vec(),
            value: self.weight.as_slice_mut().expect("weight is contiguous"),
            grad: self.grad_weight.as_slice_mut().expect("grad is contiguous"),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn rows_are_looked_up_and_gradients_collect_per_token() {
        let mut rng = StdRng::seed_from_u64(3);
        let ids = [2usize, 0, 2, 3, 2];
        let mut emb = Embedding::<f64>::from_weights(random_array(&mut rng, (4, 5)));
        // The "input" of the check is a dummy: the ids are fixed data.
        let dummy = Array2::zeros((1, 1));
        let forward = |e: &mut Embedding<f64>, _: ArrayView2<f64>| {
            let mut y = Array2::zeros((ids.len(), 5));
            e.forward(&ids, y.view_mut());
            y
        };
        let y = forward(&mut emb, dummy.view());
        assert_eq!(y.row(3), emb.weight.row(3));
        assert_eq!(y.row(0), y.row(2));
        let backward = |e: &mut Embedding<f64>, _: ArrayView2<f64>, dy: ArrayView2<f64>| e.backward(&ids, dy);
        check_parameter_gradients(&mut emb, &dummy, forward, backward, &mut rng);
        // Token 1 was never used: its gradient stays zero.
        emb.zero_grad();
        emb.backward(&ids, Array2::ones((5, 5)).view());
        assert!(emb.grad_weight.row(1).iter().all(|&g| g == 0.0));
        assert!(emb.grad_weight.row(2).iter().all(|&g| g == 3.0));
    }
}
