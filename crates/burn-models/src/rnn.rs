//! Recurrent networks: the original's LSTM and peephole LSTM with their four gate products
//! fused into one matrix product per step, burn's GRU and bidirectional LSTM, the sequence
//! classifier built on them, and the two-layer character LSTM that writes text.
//!
//! Fusing: the original keeps for each gate `g, i, f, o` its own `W_x`, `W_h` and `b`. Stacking
//! them side by side, `W_x = [W_ix W_fx W_ox W_gx]: [D, 4H]`, gives all four gate
//! pre-activations as `x·W_x + h·W_h + b: [B, 4H]` — the same maths with two products per step
//! instead of eight, and one sigmoid over the first `3H` columns.
//!
//! Sequences are lists of per-step tensors `[B, D]`, not one `[B, T, D]` tensor sliced step
//! by step: under burn's autodiff the backward pass of each slice allocates a zero tensor of
//! the whole sequence's shape, which made a step of the palindrome LSTM take 1.8 s.

use burn::module::{Module, Param};
use burn::nn::{BiLstm, BiLstmConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig, Gru, GruConfig, Initializer};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};

/// How an LSTM's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LstmInit {
    /// The original practical's classifier: Kaiming-normal with linear gain, std `1/√fan_in`
    /// with the true fan-in (the inputs of each unit), zero biases. (PyTorch's
    /// `kaiming_normal_` applied to matrices stored `[in, out]`, as the original's are, reads
    /// the fan-in from the second dimension instead; that variant was measured and not
    /// adopted: see the README's figures.)
    KaimingNormal,
    /// PyTorch's `nn.LSTM`: every weight and bias uniform in `±1/√H`.
    Uniform,
}

fn init_weight(shape: [usize; 2], fan_in: usize, hidden: usize, init: LstmInit, device: &Device) -> Param<Tensor<2>> {
    match init {
        LstmInit::KaimingNormal => Initializer::KaimingNormal {
            gain: 1.0,
            fan_out_only: false,
        }
        .init_with(shape, Some(fan_in), None, device),
        LstmInit::Uniform => {
            let bound = 1.0 / (hidden as f64).sqrt();
            Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init(shape, device)
        }
    }
}

fn init_bias(len: usize, hidden: usize, init: LstmInit, device: &Device) -> Param<Tensor<1>> {
    match init {
        LstmInit::KaimingNormal => Param::from_tensor(Tensor::zeros([len], device)),
        LstmInit::Uniform => {
            let bound = 1.0 / (hidden as f64).sqrt();
            Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init([len], device)
        }
    }
}

/// Hidden and cell state, `[B, H]` each.
#[derive(Debug, Clone)]
pub struct LstmState {
    pub h: Tensor<2>,
    pub c: Tensor<2>,
}

impl LstmState {
    /// All zeros, as the original starts every sequence.
    pub fn zeros(batch: usize, hidden: usize, device: &Device) -> Self {
        LstmState {
            h: Tensor::zeros([batch, hidden], device),
            c: Tensor::zeros([batch, hidden], device),
        }
    }
}

/// The original LSTM, gates fused: `i, f, o = σ(·)`, `g = tanh(·)`, `c = g⊙i + c⊙f`,
/// `h = tanh(c)⊙o`.
#[derive(Module, Debug)]
pub struct Lstm {
    /// `[D, 4H]`, gate blocks in the order `i, f, o, g` (the sigmoids first, so one sigmoid
    /// covers `[.., 0..3H]`).
    pub w_x: Param<Tensor<2>>,
    /// `[H, 4H]`, same order.
    pub w_h: Param<Tensor<2>>,
    /// `[4H]`
    pub bias: Param<Tensor<1>>,
}

impl Lstm {
    /// An LSTM from `inputs` features to `hidden` units.
    pub fn new(inputs: usize, hidden: usize, init: LstmInit, device: &Device) -> Self {
        Lstm {
            w_x: init_weight([inputs, 4 * hidden], inputs, hidden, init, device),
            w_h: init_weight([hidden, 4 * hidden], hidden, hidden, init, device),
            bias: init_bias(4 * hidden, hidden, init, device),
        }
    }

    /// Hidden units.
    pub fn hidden(&self) -> usize {
        self.w_h.dims()[0]
    }

    /// Runs over the steps `xs` (`[B, D]` each) from `state` (zeros when `None`); returns every
    /// step's `h` and the final state.
    pub fn forward(&self, xs: Vec<Tensor<2>>, state: Option<LstmState>) -> (Vec<Tensor<2>>, LstmState) {
        let b = xs.first().map_or(0, |x| x.dims()[0]);
        let hidden = self.hidden();
        let device = xs.first().map(|x| x.device()).unwrap_or_default();
        let mut state = state.unwrap_or_else(|| LstmState::zeros(b, hidden, &device));
        let (w_x, w_h, bias) = (self.w_x.val(), self.w_h.val(), self.bias.val().unsqueeze::<2>());
        let mut outputs = Vec::with_capacity(xs.len());
        for x in xs {
            let gates = x.matmul(w_x.clone()) + state.h.clone().matmul(w_h.clone()) + bias.clone(); // [B, 4H]
            let ifo = sigmoid(gates.clone().slice([0..b, 0..3 * hidden]));
            let g = tanh(gates.slice([0..b, 3 * hidden..4 * hidden]));
            let i = ifo.clone().slice([0..b, 0..hidden]);
            let f = ifo.clone().slice([0..b, hidden..2 * hidden]);
            let o = ifo.slice([0..b, 2 * hidden..3 * hidden]);
            let c = g * i + state.c * f;
            let h = tanh(c.clone()) * o;
            outputs.push(h.clone());
            state = LstmState { h, c };
        }
        (outputs, state)
    }
}

/// The original peephole LSTM, gates fused: the gates `i, f, o` read the previous cell state
/// instead of the previous output, `i, f, o = σ(x·W_x + c_{t−1}·W_c + b)`; the candidate is
/// `σ(x·W_cx + b_c)`; `c = candidate⊙i + c⊙f`, `h = tanh(c)⊙o`.
#[derive(Module, Debug)]
pub struct PeepholeLstm {
    /// `[D, 4H]`: `i, f, o, candidate`.
    pub w_x: Param<Tensor<2>>,
    /// `[H, 3H]`: `i, f, o` from `c_{t−1}`.
    pub w_c: Param<Tensor<2>>,
    /// `[4H]`
    pub bias: Param<Tensor<1>>,
}

impl PeepholeLstm {
    /// A peephole LSTM from `inputs` features to `hidden` units.
    pub fn new(inputs: usize, hidden: usize, init: LstmInit, device: &Device) -> Self {
        PeepholeLstm {
            w_x: init_weight([inputs, 4 * hidden], inputs, hidden, init, device),
            w_c: init_weight([hidden, 3 * hidden], hidden, hidden, init, device),
            bias: init_bias(4 * hidden, hidden, init, device),
        }
    }

    /// Runs over the steps `xs` (`[B, D]` each) from zero state; returns every step's `h` and
    /// the final state.
    pub fn forward(&self, xs: Vec<Tensor<2>>) -> (Vec<Tensor<2>>, LstmState) {
        let b = xs.first().map_or(0, |x| x.dims()[0]);
        let hidden = self.w_c.dims()[0];
        let device = xs.first().map(|x| x.device()).unwrap_or_default();
        let mut state = LstmState::zeros(b, hidden, &device);
        let (w_x, w_c, bias) = (self.w_x.val(), self.w_c.val(), self.bias.val().unsqueeze::<2>());
        let mut outputs = Vec::with_capacity(xs.len());
        for x in xs {
            let xs = x.matmul(w_x.clone()) + bias.clone(); // [B, 4H]
            let ifo = sigmoid(xs.clone().slice([0..b, 0..3 * hidden]) + state.c.clone().matmul(w_c.clone()));
            let candidate = sigmoid(xs.slice([0..b, 3 * hidden..4 * hidden]));
            let i = ifo.clone().slice([0..b, 0..hidden]);
            let f = ifo.clone().slice([0..b, hidden..2 * hidden]);
            let o = ifo.slice([0..b, 2 * hidden..3 * hidden]);
            let c = candidate * i + state.c * f;
            let h = tanh(c.clone()) * o;
            outputs.push(h.clone());
            state = LstmState { h, c };
        }
        (outputs, state)
    }
}

/// Which recurrent network a classifier uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RnnKind {
    Lstm,
    Peephole,
    Gru,
    BiLstm,
}

/// The recurrent part of a [`SequenceClassifier`].
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per model, built once
pub enum Recurrent {
    Lstm(Lstm),
    Peephole(PeepholeLstm),
    Gru(Gru),
    BiLstm(BiLstm),
}

/// Shape of a sequence classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceClassifierConfig {
    pub kind: RnnKind,
    /// Distinct input tokens.
    pub vocab: usize,
    /// Embedding width (`--input-dim`).
    pub input_dim: usize,
    pub hidden: usize,
    pub classes: usize,
}

/// `embedding → recurrent network → last step → linear → logits`; the loss is the negative
/// log-likelihood of their log-softmax, as the original.
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    embedding: Embedding,
    rnn: Recurrent,
    head: Linear,
}

impl SequenceClassifierConfig {
    /// A freshly initialised classifier on `device`.
    pub fn init(&self, device: &Device) -> SequenceClassifier {
        let (d, h) = (self.input_dim, self.hidden);
        let rnn = match self.kind {
            RnnKind::Lstm => Recurrent::Lstm(Lstm::new(d, h, LstmInit::KaimingNormal, device)),
            RnnKind::Peephole => Recurrent::Peephole(PeepholeLstm::new(d, h, LstmInit::KaimingNormal, device)),
            RnnKind::Gru => Recurrent::Gru(GruConfig::new(d, h, true).init(device)),
            RnnKind::BiLstm => Recurrent::BiLstm(BiLstmConfig::new(d, h, true).init(device)),
        };
        let features = if self.kind == RnnKind::BiLstm { 2 * h } else { h };
        let mut head = LinearConfig::new(features, self.classes)
            .with_initializer(Initializer::KaimingNormal {
                gain: 1.0,
                fan_out_only: false,
            })
            .init(device);
        head.bias = Some(Param::from_tensor(Tensor::zeros([self.classes], device)));
        SequenceClassifier {
            embedding: EmbeddingConfig::new(self.vocab, d).init(device),
            rnn,
            head,
        }
    }
}

/// The embeddings of every step of `tokens: [B, T]`, as `T` tensors `[B, D]` (one lookup per
/// step: slicing one `[B, T, D]` lookup would cost a whole-sequence zero tensor per step in
/// the backward pass).
fn embed_steps(embedding: &Embedding, tokens: Tensor<2, Int>) -> Vec<Tensor<2>> {
    let [b, t] = tokens.dims();
    (0..t)
        .map(|step| {
            let x = embedding.forward(tokens.clone().slice([0..b, step..step + 1])); // [B, 1, D]
            let d = x.dims()[2];
            x.reshape([b, d])
        })
        .collect()
}

impl SequenceClassifier {
    /// Logits `[B, classes]` for tokens `[B, T]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        let last = match &self.rnn {
            Recurrent::Lstm(lstm) => lstm.forward(embed_steps(&self.embedding, tokens), None).1.h,
            Recurrent::Peephole(lstm) => lstm.forward(embed_steps(&self.embedding, tokens)).1.h,
            Recurrent::Gru(gru) => {
                let x = self.embedding.forward(tokens); // [B, T, D]
                let [b, t, _] = x.dims();
                let out = gru.forward(x, None); // [B, T, H]
                let h = out.dims()[2];
                out.slice([0..b, t - 1..t, 0..h]).reshape([b, h])
            }
            Recurrent::BiLstm(lstm) => {
                // The forward direction's last step and the backward direction's (which has
                // read the whole sequence) first.
                let x = self.embedding.forward(tokens);
                let [b, t, _] = x.dims();
                let out = lstm.forward(x, None).0; // [B, T, 2H]
                let h = out.dims()[2] / 2;
                let forward = out.clone().slice([0..b, t - 1..t, 0..h]).reshape([b, h]);
                let backward = out.slice([0..b, 0..1, h..2 * h]).reshape([b, h]);
                Tensor::cat(vec![forward, backward], 1)
            }
        };
        self.head.forward(last)
    }
}

/// Shape of the character model.
#[derive(Debug, Clone, PartialEq)]
pub struct CharLstmConfig {
    /// Characters in the vocabulary.
    pub vocab: usize,
    /// Embedding width.
    pub embedding: usize,
    /// Units of each LSTM layer.
    pub hidden: usize,
    /// LSTM layers.
    pub layers: usize,
    /// Dropout probability between layers (1 − the original's keep probability).
    pub dropout: f64,
}

/// `embedding(V → E) → LSTM layers (dropout between them) → linear(V)`: next-character logits
/// at every step.
#[derive(Module, Debug)]
pub struct CharLstm {
    embedding: Embedding,
    layers: Vec<Lstm>,
    dropout: Dropout,
    head: Linear,
}

impl CharLstmConfig {
    /// A freshly initialised model on `device` (PyTorch's initialisations: embedding N(0, 1),
    /// `nn.LSTM`'s uniform, `nn.Linear`'s).
    pub fn init(&self, device: &Device) -> CharLstm {
        let layers = (0..self.layers)
            .map(|l| {
                let inputs = if l == 0 { self.embedding } else { self.hidden };
                Lstm::new(inputs, self.hidden, LstmInit::Uniform, device)
            })
            .collect();
        CharLstm {
            embedding: EmbeddingConfig::new(self.vocab, self.embedding).init(device),
            layers,
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(self.hidden, self.vocab).init(device),
        }
    }
}

impl CharLstm {
    /// Logits `[B, T, V]` for tokens `[B, T]`, and each layer's final state (to continue
    /// generating from).
    pub fn forward(&self, tokens: Tensor<2, Int>, state: Option<Vec<LstmState>>) -> (Tensor<3>, Vec<LstmState>) {
        let mut xs = embed_steps(&self.embedding, tokens); // T × [B, E]
        let mut states = state
            .map(|s| s.into_iter().map(Some).collect())
            .unwrap_or_else(|| vec![None; self.layers.len()]);
        let mut finals = Vec::with_capacity(self.layers.len());
        for (l, (layer, state)) in self.layers.iter().zip(states.iter_mut()).enumerate() {
            if l > 0 {
                xs = xs.into_iter().map(|x| self.dropout.forward(x)).collect();
            }
            let (out, last) = layer.forward(xs, state.take());
            finals.push(last);
            xs = out; // T × [B, H]
        }
        let x = Tensor::stack::<3>(xs, 1); // [B, T, H]
        let [b, t, h] = x.dims();
        let logits = self.head.forward(x.reshape([b * t, h]));
        let vocab = logits.dims()[1];
        (logits.reshape([b, t, vocab]), finals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused LSTM step against the original's per-gate formulas, written out.
    #[test]
    fn fused_gates_compute_the_per_gate_lstm() {
        let device = Device::flex();
        device.seed(3);
        let (b, t, d, h) = (2, 3, 4, 5);
        let lstm = Lstm::new(d, h, LstmInit::Uniform, &device);
        let x = Tensor::<3>::random([b, t, d], burn::tensor::Distribution::Default, &device);
        let steps = (0..t)
            .map(|s| x.clone().slice([0..b, s..s + 1, 0..d]).reshape([b, d]))
            .collect();
        let (out, last) = lstm.forward(steps, None);
        let (w_x, w_h, bias) = (lstm.w_x.val(), lstm.w_h.val(), lstm.bias.val());
        let gate = |k: usize, xt: Tensor<2>, hp: Tensor<2>| {
            xt.matmul(w_x.clone().slice([0..d, k * h..(k + 1) * h]))
                + hp.matmul(w_h.clone().slice([0..h, k * h..(k + 1) * h]))
                + bias.clone().slice(k * h..(k + 1) * h).unsqueeze::<2>()
        };
        let (mut hp, mut cp) = (Tensor::<2>::zeros([b, h], &device), Tensor::<2>::zeros([b, h], &device));
        for (step, fused) in out.iter().enumerate() {
            let xt = x.clone().slice([0..b, step..step + 1, 0..d]).reshape([b, d]);
            let i = sigmoid(gate(0, xt.clone(), hp.clone()));
            let f = sigmoid(gate(1, xt.clone(), hp.clone()));
            let o = sigmoid(gate(2, xt.clone(), hp.clone()));
            let g = tanh(gate(3, xt, hp.clone()));
            cp = g * i + cp * f;
            hp = tanh(cp.clone()) * o;
            let diff = (fused.clone() - hp.clone()).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-6, "step {step}: {diff}");
        }
        assert!((last.c - cp).abs().max().into_scalar::<f32>() < 1e-6);
    }

    #[test]
    fn classifiers_and_the_text_model_have_the_right_shapes() {
        let device = Device::flex();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1, 0, 2, 2, 1], [2, 4]), &device);
        for kind in [RnnKind::Lstm, RnnKind::Peephole, RnnKind::Gru, RnnKind::BiLstm] {
            let config = SequenceClassifierConfig {
                kind,
                vocab: 3,
                input_dim: 6,
                hidden: 5,
                classes: 7,
            };
            assert_eq!(config.init(&device).forward(tokens.clone()).dims(), [2, 7], "{kind:?}");
        }
        let model = CharLstmConfig {
            vocab: 3,
            embedding: 4,
            hidden: 6,
            layers: 2,
            dropout: 0.2,
        }
        .init(&device);
        let (logits, state) = model.forward(tokens, None);
        assert_eq!(logits.dims(), [2, 4, 3]);
        assert_eq!(state.len(), 2);
        assert_eq!(state[1].h.dims(), [2, 6]);
    }

    /// The manual engine's classifier, given the same weights and batch as its burn twin,
    /// computes the same loss and the same gradient for every parameter.
    #[test]
    fn the_manual_engine_twin_gives_the_same_loss_and_gradients() {
        use burn::nn::loss::CrossEntropyLossConfig;
        use manual::gradcheck::relative_error;
        use manual::{Embedding, InputProjection, LinearLayer, Parameters, RecurrentLayer};
        use ndarray::{Array1, Array2};

        fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
            t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
        }
        fn matrix(t: Tensor<2>) -> Array2<f32> {
            let [r, c] = t.dims();
            Array2::from_shape_vec((r, c), values(t)).unwrap()
        }
        fn widen(v: &[f32]) -> Vec<f64> {
            v.iter().map(|&x| x as f64).collect()
        }

        let device = Device::flex().autodiff();
        device.seed(7);
        let (vocab, d, h, classes, batch, steps) = (3, 8, 16, 4, 6, 9);
        let tokens: Vec<usize> = (0..batch * steps).map(|i| (i * 7 + i / 5) % vocab).collect();
        let targets: Vec<usize> = (0..batch).map(|i| (i * 3 + 1) % classes).collect();
        for kind in [RnnKind::Lstm, RnnKind::Peephole] {
            let model = SequenceClassifierConfig {
                kind,
                vocab,
                input_dim: d,
                hidden: h,
                classes,
            }
            .init(&device);
            let x = crate::train::tokens_tensor(&tokens, [batch, steps], &device);
            let y = crate::train::targets_tensor(&targets, &device);
            let loss = CrossEntropyLossConfig::new().init(&device).forward(model.forward(x), y);
            let burn_loss = loss.clone().into_scalar::<f32>();
            let grads = loss.backward();

            // The same weights in the manual engine, and burn's gradients in the manual
            // engine's parameter order.
            let embedding = Embedding::from_weights(matrix(model.embedding.weight.val()));
            let head_weight = model.head.weight.val();
            let head_bias = model.head.bias.as_ref().unwrap().val();
            let grad2 = |p: &Param<Tensor<2>>| values(p.grad(&grads).unwrap());
            let grad1 = |p: &Param<Tensor<1>>| values(p.grad(&grads).unwrap());
            let (rnn, rnn_grads) = match &model.rnn {
                Recurrent::Lstm(l) => {
                    let input =
                        InputProjection::from_weights(matrix(l.w_x.val()), Array1::from_vec(values(l.bias.val())));
                    (
                        RecurrentLayer::Lstm(manual::Lstm::from_weights(input, matrix(l.w_h.val()))),
                        vec![grad2(&l.w_x), grad2(&l.w_h), grad1(&l.bias)],
                    )
                }
                Recurrent::Peephole(l) => {
                    let input =
                        InputProjection::from_weights(matrix(l.w_x.val()), Array1::from_vec(values(l.bias.val())));
                    (
                        RecurrentLayer::Peephole(manual::PeepholeLstm::from_weights(input, matrix(l.w_c.val()))),
                        vec![grad2(&l.w_x), grad2(&l.w_c), grad1(&l.bias)],
                    )
                }
                _ => unreachable!(),
            };
            let mut burn_grads = vec![grad2(&model.embedding.weight)];
            burn_grads.extend(rnn_grads);
            burn_grads.push(grad2(&model.head.weight));
            burn_grads.push(grad1(model.head.bias.as_ref().unwrap()));
            let head = LinearLayer::from_weights(matrix(head_weight), Array1::from_vec(values(head_bias)));
            let mut twin = manual::SequenceClassifier::from_parts(embedding, rnn, head);

            let (manual_loss, _) = twin.forward_backward(&tokens, &targets);
            assert!(
                (manual_loss - burn_loss).abs() <= 1e-5 * burn_loss.abs(),
                "{kind:?}: loss {manual_loss} vs burn's {burn_loss}"
            );
            let params = twin.parameters();
            assert_eq!(params.len(), burn_grads.len());
            for (p, burn_grad) in params.iter().zip(&burn_grads) {
                let err = relative_error(&widen(p.grad), &widen(burn_grad));
                assert!(err < 1e-4, "{kind:?} {}: relative error {err:e} against burn", p.name);
            }
        }
    }
}
