//! The character model of the write-up's generative part: `embedding(V → E) → LSTM layers
//! (dropout between them) → linear(H → V)`, next-character logits at every step, trained
//! with the softmax cross-entropy over every position (teacher forcing).

use ndarray::{Array1, Array2, ArrayView2, s};
use rand::Rng;
use rand_distr::{Distribution, Uniform};

use crate::input_projection::{RecurrentInput, RecurrentInputGrad, time_major};
use crate::param::prefixed;
use crate::softmax_cross_entropy::count_correct;
use crate::{Dropout, Embedding, Float, LinearLayer, Lstm, Param, Parameters, SoftmaxCrossEntropy};

/// Shape of a character model.
#[derive(Debug, Clone, PartialEq)]
pub struct CharLstmConfig {
    /// Characters in the vocabulary.
    pub vocab: usize,
    /// Embedding width.
    pub embedding: usize,
    /// Units per LSTM layer.
    pub hidden: usize,
    /// LSTM layers (at least 1).
    pub layers: usize,
    /// Keep probability of the dropout between layers.
    pub keep_prob: f64,
}

/// The state to continue generating from: `(h, c)` per layer, `[1, H]` each.
pub type CharState<T> = Vec<(Array2<T>, Array2<T>)>;

/// The character model and the buffers of one batch.
#[derive(Debug, Clone)]
pub struct CharLstm<T> {
    pub embedding: Embedding<T>,
    pub layers: Vec<Lstm<T>>,
    /// `[H, V]`
    pub head: LinearLayer<T>,
    /// Before layer `l ≥ 1` (index `l − 1`).
    dropouts: Vec<Dropout<T>>,
    /// The batch's tokens and targets, time-major (row `t·B + b`).
    ids: Vec<usize>,
    targets: Vec<usize>,
    /// Layer `l ≥ 1`'s input after dropout, `[T·B, H]` (index `l − 1`).
    dropped: Vec<Array2<T>>,
    /// `[T·B, V]`
    logits: Array2<T>,
    /// Softmax of the logits, then `∂L/∂logits`.
    probs: Array2<T>,
    /// `∂L/∂(output of layer l)`, `[T·B, H]`.
    doutputs: Vec<Array2<T>>,
    /// `∂L/∂(dropout output)`, `[T·B, H]`.
    ddropped: Array2<T>,
}

impl<T: Float> CharLstm<T> {
    /// A model initialised as PyTorch's modules: embedding N(0, 1), `nn.LSTM`'s and
    /// `nn.Linear`'s uniform `±1/√fan_in` (weights and biases).
    pub fn new(config: &CharLstmConfig, rng: &mut impl Rng) -> Self {
        assert!(config.layers >= 1, "a character model needs at least one LSTM layer");
        let embedding = Embedding::new(config.vocab, config.embedding, rng);
        let layers = (0..config.layers)
            .map(|l| {
                let inputs = if l == 0 { config.embedding } else { config.hidden };
                Lstm::uniform(inputs, config.hidden, rng)
            })
            .collect();
        let bound = 1.0 / (config.hidden as f64).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
        let weight = Array2::from_shape_simple_fn((config.hidden, config.vocab), || T::of(uniform.sample(rng)));
        let bias = Array1::from_shape_simple_fn(config.vocab, || T::of(uniform.sample(rng)));
        Self::from_parts(
            embedding,
            layers,
            LinearLayer::from_weights(weight, bias),
            config.keep_prob,
        )
    }

    /// A model made of the given layers.
    pub fn from_parts(embedding: Embedding<T>, layers: Vec<Lstm<T>>, head: LinearLayer<T>, keep_prob: f64) -> Self {
        let between = layers.len().saturating_sub(1);
        CharLstm {
            embedding,
            dropouts: (0..between).map(|_| Dropout::new(keep_prob)).collect(),
            dropped: vec![Array2::zeros((0, 0)); between],
            doutputs: vec![Array2::zeros((0, 0)); layers.len()],
            layers,
            head,
            ids: Vec::new(),
            targets: Vec::new(),
            logits: Array2::zeros((0, 0)),
            probs: Array2::zeros((0, 0)),
            ddropped: Array2::zeros((0, 0)),
        }
    }

    /// Characters in the vocabulary.
    pub fn vocab(&self) -> usize {
        self.head.outputs()
    }

    /// Logits `[T·B, V]` (time-major) for `batch` windows of `tokens` stored one after the
    /// other, from `state` (zeros when `None`). With `rng` dropout is on (training),
    /// without it off.
    pub fn forward<R: Rng>(
        &mut self,
        tokens: &[usize],
        batch: usize,
        state: Option<&CharState<T>>,
        mut rng: Option<&mut R>,
    ) -> ArrayView2<'_, T> {
        assert!(
            batch > 0 && !tokens.is_empty() && tokens.len().is_multiple_of(batch),
            "{} tokens are not {batch} windows of equal length",
            tokens.len()
        );
        time_major(tokens, batch, &mut self.ids);
        let initial = |l: usize| state.map(|s| (s[l].0.view(), s[l].1.view()));
        self.layers[0].forward_from(RecurrentInput::Tokens(&self.ids, &self.embedding), batch, initial(0));
        for l in 1..self.layers.len() {
            let (before, after) = self.layers.split_at_mut(l);
            let x = before[l - 1].outputs();
            let dropped = &mut self.dropped[l - 1];
            if dropped.dim() != x.dim() {
                *dropped = Array2::zeros(x.raw_dim());
            }
            self.dropouts[l - 1].forward(x, dropped.view_mut(), rng.as_deref_mut());
            after[0].forward_from(RecurrentInput::Features(dropped.view()), batch, initial(l));
        }
        let last = self.layers.last().expect("at least one layer").outputs();
        let shape = (last.nrows(), self.head.outputs());
        if self.logits.dim() != shape {
            self.logits = Array2::zeros(shape);
            self.probs = Array2::zeros(shape);
        }
        self.head.forward(last, self.logits.view_mut());
        self.logits.view()
    }

    /// Each layer's final `(h, c)`, after a forward pass of one window.
    pub fn final_state(&self) -> CharState<T> {
        self.layers
            .iter()
            .map(|l| (l.final_state().0.to_owned(), l.final_state().1.to_owned()))
            .collect()
    }

    /// Forward and backward pass (dropout on) on `batch` windows and their next-character
    /// `targets` (both window after window): accumulates every gradient; returns the mean
    /// loss and how many next characters the forward pass got right.
    pub fn forward_backward(
        &mut self,
        tokens: &[usize],
        targets: &[usize],
        batch: usize,
        rng: &mut impl Rng,
    ) -> (T, usize) {
        assert_eq!(tokens.len(), targets.len(), "one target per token");
        self.forward(tokens, batch, None, Some(rng));
        time_major(targets, batch, &mut self.targets);
        let correct = count_correct(self.logits.view(), &self.targets);
        let loss = SoftmaxCrossEntropy.forward(self.logits.view(), &self.targets, self.probs.view_mut());
        SoftmaxCrossEntropy.backward_in_place(self.probs.view_mut(), &self.targets);

        let rows = tokens.len();
        let hidden = self.head.inputs();
        for d in self.doutputs.iter_mut().chain(std::iter::once(&mut self.ddropped)) {
            if d.dim() != (rows, hidden) {
                *d = Array2::zeros((rows, hidden));
            }
        }
        let top = self.layers.len() - 1;
        self.head.backward(
            self.layers[top].outputs(),
            self.probs.view(),
            Some(self.doutputs[top].view_mut()),
        );
        for l in (0..self.layers.len()).rev() {
            if l == 0 {
                self.layers[0].backward(
                    self.doutputs[0].view(),
                    RecurrentInputGrad::Tokens(&self.ids, &mut self.embedding),
                );
            } else {
                let (below, this) = self.doutputs.split_at_mut(l);
                self.layers[l].backward(
                    this[0].view(),
                    RecurrentInputGrad::Features(self.dropped[l - 1].view(), Some(self.ddropped.view_mut())),
                );
                self.dropouts[l - 1].backward(self.ddropped.view(), below[l - 1].view_mut());
            }
        }
        (loss, correct)
    }

    /// Summed negative log-likelihood (nats) and correct next characters of `batch` windows
    /// (dropout off, zero state).
    pub fn evaluate(&mut self, tokens: &[usize], targets: &[usize], batch: usize) -> (f64, usize) {
        self.forward(tokens, batch, None, None::<&mut rand::rngs::StdRng>);
        let steps = tokens.len() / batch;
        let mut nll = 0.0;
        let mut correct = 0;
        for (r, row) in self.logits.rows().into_iter().enumerate() {
            let (t, b) = (r / batch, r % batch);
            let target = targets[b * steps + t];
            let max = row.fold(T::neg_infinity(), |m, &v| m.max(v)).to_f64_lossy();
            let sum: f64 = row.iter().map(|&v| (v.to_f64_lossy() - max).exp()).sum();
            nll -= row[target].to_f64_lossy() - max - sum.ln();
            if row[target].to_f64_lossy() == max {
                correct += 1;
            }
        }
        (nll, correct)
    }

    /// The logits `[V]` after reading `tokens` (one sequence) from `state`, which is updated
    /// to the state after them: the step of generation.
    pub fn next_logits(&mut self, tokens: &[usize], state: &mut Option<CharState<T>>) -> Vec<f64> {
        let logits = self.forward(tokens, 1, state.as_ref(), None::<&mut rand::rngs::StdRng>);
        let last: Vec<f64> = logits.slice(s![-1, ..]).iter().map(|v| v.to_f64_lossy()).collect();
        *state = Some(self.final_state());
        last
    }
}

impl<T: Float> Parameters<T> for CharLstm<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        let mut params: Vec<Param<'_, T>> = prefixed("embedding", self.embedding.parameters()).collect();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            params.extend(prefixed(format!("lstm{l}"), layer.parameters()));
        }
        params.extend(prefixed("head", self.head.parameters()));
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, relative_error};
    use crate::{RmsProp, clip_grad_norm};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn config(keep_prob: f64) -> CharLstmConfig {
        CharLstmConfig {
            vocab: 5,
            embedding: 4,
            hidden: 6,
            layers: 2,
            keep_prob,
        }
    }

    #[test]
    fn whole_model_gradients_match_central_differences() {
        // Dropout on: the same mask for every evaluation comes from re-seeding its generator.
        let mut rng = StdRng::seed_from_u64(71);
        let mut model = CharLstm::<f64>::new(&config(0.7), &mut rng);
        let (batch, steps) = (3, 4);
        let tokens: Vec<usize> = (0..batch * steps).map(|i| (i * 3 + 1) % 5).collect();
        let targets: Vec<usize> = (0..batch * steps).map(|i| (i * 2) % 5).collect();
        let tt: Vec<usize> = (0..steps * batch)
            .map(|r| targets[(r % batch) * steps + r / batch])
            .collect();
        model.zero_grad();
        model.forward_backward(&tokens, &targets, batch, &mut StdRng::seed_from_u64(5));
        let analytic: Vec<Vec<f64>> = model.parameters().iter().map(|p| p.grad.to_vec()).collect();
        for (index, grad) in analytic.iter().enumerate() {
            let numeric = numerical_gradient(grad.len(), |i, h| {
                model.parameters()[index].value[i] += h;
                let logits = model
                    .forward(&tokens, batch, None, Some(&mut StdRng::seed_from_u64(5)))
                    .to_owned();
                let mut probs = Array2::zeros(logits.raw_dim());
                let loss = SoftmaxCrossEntropy.forward(logits.view(), &tt, probs.view_mut());
                model.parameters()[index].value[i] -= h;
                loss
            });
            let err = relative_error(grad, &numeric);
            let name = model.parameters()[index].name.clone();
            assert!(err < TOLERANCE, "{name}: relative error {err:e}");
        }
    }

    #[test]
    fn learns_a_repeating_text_and_generates_it() {
        // "abcde" repeated: the next character is always determined.
        let mut rng = StdRng::seed_from_u64(72);
        let mut model = CharLstm::<f32>::new(&config(1.0), &mut rng);
        let mut opt = RmsProp::default();
        let text: Vec<usize> = (0..200).map(|i| i % 5).collect();
        let (batch, steps) = (8, 10);
        for _ in 0..150 {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for _ in 0..batch {
                let start = rng.random_range(0..text.len() - steps - 1);
                x.extend_from_slice(&text[start..start + steps]);
                y.extend_from_slice(&text[start + 1..start + steps + 1]);
            }
            model.forward_backward(&x, &y, batch, &mut rng);
            clip_grad_norm(&mut model, 5.0);
            opt.step(&mut model, 1e-2);
        }
        let (x, y) = (&text[..50], &text[1..51]);
        let (_, correct) = model.evaluate(x, y, 1);
        assert!(correct >= 48, "{correct}/50 next characters right");
        // Generation step by step from a state gives what one long pass gives.
        let mut state = None;
        let first = model.next_logits(&x[..20], &mut state);
        let second = model.next_logits(&x[20..21], &mut state);
        let whole: Vec<f64> = model
            .forward(&x[..21], 1, None, None::<&mut StdRng>)
            .row(20)
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert!(second.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-4));
        assert_eq!(first.len(), 5);
    }
}
