//! The input side of a recurrent layer: the gate pre-activations of every step from its
//! input, `A_r = x_r·W_x + b` for all `T·B` rows at once — one matrix product for the whole
//! sequence instead of one per step, since no step's input depends on the recurrence.
//!
//! When the inputs are embedded tokens, `x_r = E_{id_r}`, the product folds into the table:
//! `A_r = (E·W_x + b)_{id_r}`. With the palindromes' 3 tokens that is a `[3, D]·[D, 4H]`
//! product and a row copy per step instead of a `[T·B, D]·[D, 4H]` product: the same numbers
//! for a fifth of the LSTM's work.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::matmul::matmul;
use crate::{Embedding, Float, Param, Parameters};

/// Rewrites `batch` sequences stored one after the other (batch-major, as the data layer
/// makes them) into `out` time-major: row `t·B + b` is step `t` of sequence `b`.
pub fn time_major(values: &[usize], batch: usize, out: &mut Vec<usize>) {
    let steps = values.len() / batch;
    out.clear();
    out.extend((0..steps).flat_map(|t| (0..batch).map(move |b| values[b * steps + t])));
}

/// What a recurrent layer reads: feature rows, or token ids looked up in an embedding.
/// Rows are time-major: row `t·B + b` is step `t` of sequence `b`.
#[derive(Debug, Clone, Copy)]
pub enum RecurrentInput<'a, T> {
    /// `x: [T·B, D]`
    Features(ArrayView2<'a, T>),
    /// `T·B` token ids and the embedding they index.
    Tokens(&'a [usize], &'a Embedding<T>),
}

impl<T> RecurrentInput<'_, T> {
    /// Number of rows `T·B`.
    pub fn rows(&self) -> usize {
        match self {
            RecurrentInput::Features(x) => x.nrows(),
            RecurrentInput::Tokens(ids, _) => ids.len(),
        }
    }
}

/// Where the backward pass sends the input's gradient.
#[derive(Debug)]
pub enum RecurrentInputGrad<'a, T> {
    /// `x` and, when wanted, `∂L/∂x: [T·B, D]` (overwritten).
    Features(ArrayView2<'a, T>, Option<ArrayViewMut2<'a, T>>),
    /// The ids and the embedding, whose gradient is accumulated.
    Tokens(&'a [usize], &'a mut Embedding<T>),
}

/// `A = x·W_x + b` with `W_x: [D, G]`, `b: [G]` (`G` = gates × hidden units).
#[derive(Debug, Clone)]
pub struct InputProjection<T> {
    /// `[D, G]`
    pub weight: Array2<T>,
    /// `[G]`
    pub bias: Array1<T>,
    /// `[D, G]`, accumulated by `backward`.
    pub grad_weight: Array2<T>,
    /// `[G]`, accumulated by `backward`.
    pub grad_bias: Array1<T>,
    /// `E·W_x + b: [V, G]` (token inputs).
    table: Array2<T>,
    /// `∂L/∂(E·W_x + b): [V, G]` (token inputs).
    dtable: Array2<T>,
}

impl<T: Float> InputProjection<T> {
    /// Weights from N(0, `std`²), bias zero.
    pub fn new(inputs: usize, outputs: usize, std: f64, rng: &mut impl Rng) -> Self {
        let normal = Normal::new(0.0, std).expect("finite standard deviation");
        let weight = Array2::from_shape_simple_fn((inputs, outputs), || T::of(normal.sample(rng)));
        Self::from_weights(weight, Array1::zeros(outputs))
    }

    /// A projection with the given `W_x: [D, G]` and `b: [G]`.
    pub fn from_weights(weight: Array2<T>, bias: Array1<T>) -> Self {
        assert_eq!(weight.ncols(), bias.len(), "weight columns and bias length differ");
        InputProjection {
            grad_weight: Array2::zeros(weight.raw_dim()),
            grad_bias: Array1::zeros(bias.raw_dim()),
            table: Array2::zeros((0, 0)),
            dtable: Array2::zeros((0, 0)),
            weight,
            bias,
        }
    }

    /// Writes `A = x·W_x + b` into `a: [T·B, G]`.
    pub fn forward(&mut self, input: RecurrentInput<'_, T>, mut a: ArrayViewMut2<'_, T>) {
        assert_eq!(a.nrows(), input.rows(), "InputProjection: one output row per input row");
        match input {
            RecurrentInput::Features(x) => {
                let shape = a.raw_dim();
                a.assign(&self.bias.broadcast(shape).expect("bias matches the gates"));
                matmul(x, self.weight.view(), &mut a, true);
            }
            RecurrentInput::Tokens(ids, embedding) => {
                let shape = (embedding.vocab(), self.weight.ncols());
                if self.table.dim() != shape {
                    self.table = Array2::zeros(shape);
                    self.dtable = Array2::zeros(shape);
                }
                self.table
                    .assign(&self.bias.broadcast(shape).expect("bias matches the gates"));
                matmul(
                    embedding.weight.view(),
                    self.weight.view(),
                    &mut self.table.view_mut(),
                    true,
                );
                for (mut row, &id) in a.rows_mut().into_iter().zip(ids) {
                    assert!(id < shape.0, "token {id} outside a vocabulary of {}", shape.0);
                    row.assign(&self.table.row(id));
                }
            }
        }
    }

    /// Backward pass of `A_rg = Σ_d x_rd W_dg + b_g` given `dA = ∂L/∂A`:
    /// `∂L/∂W = xᵀ·dA`, `∂L/∂b = Σ_r dA_r`, `∂L/∂x = dA·Wᵀ` (the linear layer's derivation).
    /// For tokens, `A_r = T_{id_r}` with the table `T = E·W + b`: first
    /// `∂L/∂T_v = Σ_r δ_{v,id_r} dA_r` (the embedding's scatter-add), then the linear layer's
    /// formulas with `E` as the input: `∂L/∂W = Eᵀ·dT`, `∂L/∂b = Σ_v dT_v`, `∂L/∂E += dT·Wᵀ`.
    pub fn backward(&mut self, input: RecurrentInputGrad<'_, T>, da: ArrayView2<'_, T>) {
        match input {
            RecurrentInputGrad::Features(x, dx) => {
                matmul(x.t(), da, &mut self.grad_weight.view_mut(), true);
                self.grad_bias += &da.sum_axis(Axis(0));
                if let Some(mut dx) = dx {
                    matmul(da, self.weight.t(), &mut dx, false);
                }
            }
            RecurrentInputGrad::Tokens(ids, embedding) => {
                assert_eq!(
                    self.dtable.nrows(),
                    embedding.vocab(),
                    "InputProjection: backward without a token forward pass"
                );
                self.dtable.fill(T::zero());
                for (row, &id) in da.rows().into_iter().zip(ids) {
                    let mut d = self.dtable.row_mut(id);
                    d += &row;
                }
                self.grad_bias += &self.dtable.sum_axis(Axis(0));
                matmul(
                    embedding.weight.t(),
                    self.dtable.view(),
                    &mut self.grad_weight.view_mut(),
                    true,
                );
                matmul(
                    self.dtable.view(),
                    self.weight.t(),
                    &mut embedding.grad_weight.view_mut(),
                    true,
                );
            }
        }
    }
}

impl<T: Float> Parameters<T> for InputProjection<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        vec![
            Param {
                name: "w_x".into(),
                shape: self.weight.shape().to_vec(),
                value: self.weight.as_slice_mut().expect("weight is contiguous"),
                grad: self.grad_weight.as_slice_mut().expect("grad is contiguous"),
            },
            Param {
                name: "bias".into(),
                shape: self.bias.shape().to_vec(),
                value: self.bias.as_slice_mut().expect("bias is contiguous"),
                grad: self.grad_bias.as_slice_mut().expect("grad is contiguous"),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_input_gradient, check_parameter_gradients, random_array};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn run_features(p: &mut InputProjection<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        let mut a = Array2::zeros((x.nrows(), p.weight.ncols()));
        p.forward(RecurrentInput::Features(x), a.view_mut());
        a
    }

    #[test]
    fn feature_gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(21);
        let mut p = InputProjection::from_weights(random_array(&mut rng, (5, 8)), random_array(&mut rng, 8));
        let x = random_array(&mut rng, (6, 5));
        let backward = |p: &mut InputProjection<f64>, x: ArrayView2<f64>, da: ArrayView2<f64>| {
            let mut dx = Array2::zeros(x.raw_dim());
            p.backward(RecurrentInputGrad::Features(x, Some(dx.view_mut())), da);
            dx
        };
        check_input_gradient(&mut p, &x, run_features, backward, &mut rng);
        check_parameter_gradients(&mut p, &x, run_features, backward, &mut rng);
    }

    #[test]
    fn tokens_give_the_embedding_then_projection() {
        let mut rng = StdRng::seed_from_u64(22);
        let ids = [1usize, 0, 1, 2, 1, 1];
        let mut emb = Embedding::from_weights(random_array(&mut rng, (3, 4)));
        let mut p = InputProjection::from_weights(random_array(&mut rng, (4, 6)), random_array(&mut rng, 6));
        // Forward: the same numbers as embedding then projection.
        let mut fused = Array2::zeros((ids.len(), 6));
        p.forward(RecurrentInput::Tokens(&ids, &emb), fused.view_mut());
        let mut x = Array2::zeros((ids.len(), 4));
        emb.forward(&ids, x.view_mut());
        let plain = run_features(&mut p, x.view());
        assert!(fused.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-12));
        // Backward: the same gradients as the projection's then the embedding's backward.
        let da = random_array(&mut rng, (ids.len(), 6));
        p.backward(RecurrentInputGrad::Tokens(&ids, &mut emb), da.view());
        let (gw, gb, ge) = (p.grad_weight.clone(), p.grad_bias.clone(), emb.grad_weight.clone());
        p.zero_grad();
        emb.zero_grad();
        let mut dx = Array2::zeros((ids.len(), 4));
        p.backward(RecurrentInputGrad::Features(x.view(), Some(dx.view_mut())), da.view());
        emb.backward(&ids, dx.view());
        for (a, b) in [(&gw, &p.grad_weight), (&ge, &emb.grad_weight)] {
            assert!(a.iter().zip(b.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
        }
        assert!(gb.iter().zip(&p.grad_bias).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}
