//! The original practical's sequence classifier: `embedding → LSTM (or peephole LSTM) →
//! last step → linear → log-softmax`, trained with the negative log-likelihood (the fused
//! softmax–cross-entropy: the same loss on the same logits).

use ndarray::{Array2, ArrayView2, s};
use rand::Rng;

use crate::input_projection::{RecurrentInput, RecurrentInputGrad, time_major};
use crate::param::prefixed;
use crate::softmax_cross_entropy::count_correct;
use crate::{Embedding, Float, LinearLayer, Lstm, Param, Parameters, PeepholeLstm, SoftmaxCrossEntropy};

/// The recurrent layer of a [`SequenceClassifier`].
#[derive(Debug, Clone)]
pub enum RecurrentLayer<T> {
    Lstm(Lstm<T>),
    Peephole(PeepholeLstm<T>),
}

impl<T: Float> RecurrentLayer<T> {
    fn forward(&mut self, input: RecurrentInput<'_, T>, batch: usize) {
        match self {
            RecurrentLayer::Lstm(l) => l.forward(input, batch),
            RecurrentLayer::Peephole(l) => l.forward(input, batch),
        }
    }

    fn last_output(&self) -> ArrayView2<'_, T> {
        match self {
            RecurrentLayer::Lstm(l) => l.last_output(),
            RecurrentLayer::Peephole(l) => l.last_output(),
        }
    }

    fn backward(&mut self, dh: ArrayView2<'_, T>, input: RecurrentInputGrad<'_, T>) {
        match self {
            RecurrentLayer::Lstm(l) => l.backward(dh, input),
            RecurrentLayer::Peephole(l) => l.backward(dh, input),
        }
    }

    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        match self {
            RecurrentLayer::Lstm(l) => l.parameters(),
            RecurrentLayer::Peephole(l) => l.parameters(),
        }
    }
}

/// Which recurrent layer a classifier uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentKind {
    Lstm,
    Peephole,
}

/// Embedding, recurrent layer and output layer, with the buffers of one batch.
#[derive(Debug, Clone)]
pub struct SequenceClassifier<T> {
    /// `[V, D]`
    pub embedding: Embedding<T>,
    pub rnn: RecurrentLayer<T>,
    /// `[H, classes]`
    pub head: LinearLayer<T>,
    /// The batch's tokens, time-major (row `t·B + b`), as the recurrent layer reads them.
    ids: Vec<usize>,
    /// `[B, classes]`
    logits: Array2<T>,
    /// Softmax of the logits, then `∂L/∂logits` (the loss's backward pass overwrites it).
    probs: Array2<T>,
    /// `∂L/∂h_T: [B, H]`
    dlast: Array2<T>,
}

impl<T: Float> SequenceClassifier<T> {
    /// A classifier initialised as the original: embedding N(0, 1), Kaiming-normal weights
    /// with linear gain (std `1/√fan_in`), zero biases; the same distributions as the burn
    /// engine's.
    pub fn new(
        kind: RecurrentKind,
        vocab: usize,
        inputs: usize,
        hidden: usize,
        classes: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let embedding = Embedding::new(vocab, inputs, rng);
        let rnn = match kind {
            RecurrentKind::Lstm => RecurrentLayer::Lstm(Lstm::new(inputs, hidden, rng)),
            RecurrentKind::Peephole => RecurrentLayer::Peephole(PeepholeLstm::new(inputs, hidden, rng)),
        };
        let head = LinearLayer::new(hidden, classes, 1.0 / (hidden as f64).sqrt(), rng);
        Self::from_parts(embedding, rnn, head)
    }

    /// A classifier made of the given layers.
    pub fn from_parts(embedding: Embedding<T>, rnn: RecurrentLayer<T>, head: LinearLayer<T>) -> Self {
        SequenceClassifier {
            embedding,
            rnn,
            head,
            ids: Vec::new(),
            logits: Array2::zeros((0, 0)),
            probs: Array2::zeros((0, 0)),
            dlast: Array2::zeros((0, 0)),
        }
    }

    /// Logits `[B, classes]` for `tokens`, `B` sequences of equal length stored one after
    /// the other (batch-major, as the data layer makes them).
    pub fn forward(&mut self, tokens: &[usize], batch: usize) -> ArrayView2<'_, T> {
        assert!(
            batch > 0 && !tokens.is_empty() && tokens.len().is_multiple_of(batch),
            "{} tokens are not {batch} sequences of equal length",
            tokens.len()
        );
        time_major(tokens, batch, &mut self.ids);
        self.rnn
            .forward(RecurrentInput::Tokens(&self.ids, &self.embedding), batch);
        let shape = (batch, self.head.outputs());
        if self.logits.dim() != shape {
            self.logits = Array2::zeros(shape);
            self.probs = Array2::zeros(shape);
        }
        self.head.forward(self.rnn.last_output(), self.logits.view_mut());
        self.logits.view()
    }

    /// The predicted class of each sequence.
    pub fn predict(&mut self, tokens: &[usize], batch: usize) -> Vec<usize> {
        self.forward(tokens, batch)
            .rows()
            .into_iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, T::neg_infinity()),
                        |best, (k, &v)| if v > best.1 { (k, v) } else { best },
                    )
                    .0
            })
            .collect()
    }

    /// Forward and backward pass on one batch: accumulates every parameter's gradient and
    /// returns the mean loss and how many sequences the forward pass classified correctly.
    pub fn forward_backward(&mut self, tokens: &[usize], targets: &[usize]) -> (T, usize) {
        let batch = targets.len();
        self.forward(tokens, batch);
        let correct = count_correct(self.logits.view(), targets);
        let loss = SoftmaxCrossEntropy.forward(self.logits.view(), targets, self.probs.view_mut());
        // The loss's gradient overwrites the probabilities.
        SoftmaxCrossEntropy.backward_in_place(self.probs.view_mut(), targets);
        let hidden = self.head.inputs();
        if self.dlast.dim() != (batch, hidden) {
            self.dlast = Array2::zeros((batch, hidden));
        }
        self.head
            .backward(self.rnn.last_output(), self.probs.view(), Some(self.dlast.view_mut()));
        self.rnn.backward(
            self.dlast.view(),
            RecurrentInputGrad::Tokens(&self.ids, &mut self.embedding),
        );
        (loss, correct)
    }

    /// The input tokens' vocabulary size.
    pub fn vocab(&self) -> usize {
        self.embedding.vocab()
    }

    /// The last forward pass's logits.
    pub fn logits(&self) -> ArrayView2<'_, T> {
        self.logits.slice(s![.., ..])
    }
}

impl<T: Float> Parameters<T> for SequenceClassifier<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        let mut params: Vec<Param<'_, T>> = prefixed("embedding", self.embedding.parameters()).collect();
        params.extend(prefixed("rnn", self.rnn.parameters()));
        params.extend(prefixed("head", self.head.parameters()));
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, relative_error};
    use crate::{Adam, optim::clip_grad_norm};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn whole_model_gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(51);
        for kind in [RecurrentKind::Lstm, RecurrentKind::Peephole] {
            let (batch, steps) = (4, 5);
            let mut model = SequenceClassifier::<f64>::new(kind, 3, 4, 5, 3, &mut rng);
            let tokens: Vec<usize> = (0..batch * steps).map(|_| rng.random_range(0..3)).collect();
            let targets: Vec<usize> = (0..batch).map(|_| rng.random_range(0..3)).collect();
            model.zero_grad();
            model.forward_backward(&tokens, &targets);
            let analytic: Vec<Vec<f64>> = model.parameters().iter().map(|p| p.grad.to_vec()).collect();
            for (index, grad) in analytic.iter().enumerate() {
                let numeric = numerical_gradient(grad.len(), |i, h| {
                    model.parameters()[index].value[i] += h;
                    let mut probs = Array2::zeros((batch, 3));
                    let logits = model.forward(&tokens, batch).to_owned();
                    let loss = SoftmaxCrossEntropy.forward(logits.view(), &targets, probs.view_mut());
                    model.parameters()[index].value[i] -= h;
                    loss
                });
                let err = relative_error(grad, &numeric);
                let name = model.parameters()[index].name.clone();
                assert!(err < TOLERANCE, "{kind:?} {name}: relative error {err:e}");
            }
        }
    }

    #[test]
    fn learns_to_recall_the_first_token() {
        // The label is the first of 6 tokens: the recurrence must carry it to the end.
        let mut rng = StdRng::seed_from_u64(52);
        for kind in [RecurrentKind::Lstm, RecurrentKind::Peephole] {
            let mut model = SequenceClassifier::<f32>::new(kind, 3, 8, 16, 3, &mut rng);
            let mut adam = Adam::default();
            let batch = 32;
            let mut last = 0;
            for _ in 0..300 {
                let tokens: Vec<usize> = (0..batch * 6).map(|_| rng.random_range(0..3)).collect();
                let targets: Vec<usize> = (0..batch).map(|b| tokens[b * 6]).collect();
                let (_, correct) = model.forward_backward(&tokens, &targets);
                clip_grad_norm(&mut model, 10.0);
                adam.step(&mut model, 1e-2);
                last = correct;
            }
            assert!(last >= 30, "{kind:?}: {last}/32 correct after training");
        }
    }
}
