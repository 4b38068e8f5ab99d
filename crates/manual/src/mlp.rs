//! The multi-layer perceptron of the write-up: `Linear → h → (norm)` per hidden layer (the
//! NumPy part has no norm; the PyTorch part's best has BatchNorm), then a `Linear` to the
//! class logits, trained with the fused softmax–cross-entropy loss.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, Uniform};

use crate::param::{prefixed, trainable};
use crate::softmax_cross_entropy::count_correct;
use crate::{Activation, BatchNorm, Float, LayerNorm, LinearLayer, Param, Parameters, SoftmaxCrossEntropy};

/// How the weights start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MlpInit {
    /// Weights from N(0, std²), biases zero: the NumPy original's (std `1e-4`).
    Normal(f64),
    /// PyTorch's `nn.Linear`: weights and biases uniform in `±1/√fan_in`.
    PyTorch,
}

/// Normalisation after each hidden layer's activation (the write-up's PyTorch MLP puts
/// BatchNorm after the ReLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpNorm {
    None,
    Batch,
    Layer,
}

/// Shape of an MLP.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Input features (3072 for a flattened CIFAR-10 image).
    pub inputs: usize,
    /// Width of each hidden layer, input side first; may be empty (a linear classifier).
    pub hidden: Vec<usize>,
    /// Output classes.
    pub classes: usize,
    /// Activation after each hidden linear layer.
    pub activation: Activation,
    /// Initial weights.
    pub init: MlpInit,
    /// Normalisation after each hidden activation.
    pub norm: MlpNorm,
}

/// A hidden layer's normalisation.
#[derive(Debug, Clone)]
enum NormLayer<T> {
    Batch(BatchNorm<T>),
    Layer(LayerNorm<T>),
}

/// One linear layer, its optional activation and normalisation, and the buffers of the
/// current batch.
#[derive(Debug, Clone)]
struct Block<T> {
    linear: LinearLayer<T>,
    /// `None` for the output layer, whose `z` are the logits.
    activation: Option<Activation>,
    norm: Option<NormLayer<T>>,
    /// `z = x·W + b`, `[batch, out]`.
    z: Array2<T>,
    /// `a = h(z)`, `[batch, out]`: the norm's input (and `h'` is computed from it).
    a: Array2<T>,
    /// The norm's output, `[batch, out]` (hidden layers with a norm).
    n: Array2<T>,
    /// `∂L/∂z`, `[batch, out]`.
    dz: Array2<T>,
    /// `∂L/∂a`, `[batch, out]`.
    da: Array2<T>,
    /// `∂L/∂n`, `[batch, out]`.
    dn: Array2<T>,
}

impl<T: Float> Block<T> {
    /// Makes the buffers `[batch, out]`; allocates only when the batch size changes.
    fn reserve(&mut self, batch: usize) {
        let shape = (batch, self.linear.outputs());
        if self.z.dim() != shape {
            self.z = Array2::zeros(shape);
            self.dz = Array2::zeros(shape);
            if self.activation.is_some() {
                self.a = Array2::zeros(shape);
                self.da = Array2::zeros(shape);
            }
            if self.norm.is_some() {
                self.n = Array2::zeros(shape);
                self.dn = Array2::zeros(shape);
            }
        }
    }

    fn forward(&mut self, x: ArrayView2<'_, T>, training: bool) {
        self.reserve(x.nrows());
        self.linear.forward(x, self.z.view_mut());
        if let Some(h) = self.activation {
            h.forward(self.z.view(), self.a.view_mut());
        }
        match &mut self.norm {
            Some(NormLayer::Batch(bn)) => bn.forward(self.a.view(), self.n.view_mut(), training),
            Some(NormLayer::Layer(ln)) => ln.forward(self.a.view(), self.n.view_mut()),
            None => {}
        }
    }

    fn output(&self) -> ArrayView2<'_, T> {
        match (&self.norm, self.activation) {
            (Some(_), _) => self.n.view(),
            (None, Some(_)) => self.a.view(),
            (None, None) => self.z.view(),
        }
    }

    /// The output and the buffer for its gradient (written by the next layer's backward
    /// pass), borrowed together.
    fn output_and_grad(&mut self) -> (ArrayView2<'_, T>, ArrayViewMut2<'_, T>) {
        match (&self.norm, self.activation) {
            (Some(_), _) => (self.n.view(), self.dn.view_mut()),
            (None, Some(_)) => (self.a.view(), self.da.view_mut()),
            (None, None) => (self.z.view(), self.dz.view_mut()),
        }
    }

    /// From `∂L/∂output` to `∂L/∂z`: back through the norm and the activation.
    fn backward_to_z(&mut self) {
        match &mut self.norm {
            Some(NormLayer::Batch(bn)) => bn.backward(self.a.view(), self.dn.view(), self.da.view_mut()),
            Some(NormLayer::Layer(ln)) => ln.backward(self.a.view(), self.dn.view(), self.da.view_mut()),
            None => {}
        }
        if let Some(h) = self.activation {
            h.backward(self.a.view(), self.da.view(), self.dz.view_mut());
        }
    }
}

/// The parameters of a hidden layer's norm (none without one).
fn norm_parameters<T: Float>(norm: &mut Option<NormLayer<T>>) -> Vec<Param<'_, T>> {
    match norm {
        Some(NormLayer::Batch(bn)) => bn.parameters(),
        Some(NormLayer::Layer(ln)) => ln.parameters(),
        None => Vec::new(),
    }
}

/// A multi-layer perceptron with hand-written backward passes.
#[derive(Debug, Clone)]
pub struct Mlp<T> {
    config: MlpConfig,
    blocks: Vec<Block<T>>,
    /// Softmax of the logits, `[batch, classes]`: the loss's backward pass reads it.
    probs: Array2<T>,
}

impl<T: Float> Mlp<T> {
    /// A freshly initialised network.
    pub fn new(config: MlpConfig, rng: &mut impl Rng) -> Self {
        let widths: Vec<usize> = std::iter::once(config.inputs)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.classes))
            .collect();
        let last = widths.len() - 2;
        let blocks = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let linear = match config.init {
                    MlpInit::Normal(std) => LinearLayer::new(w[0], w[1], std, rng),
                    MlpInit::PyTorch => {
                        let bound = 1.0 / (w[0] as f64).sqrt();
                        let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
                        let weight = Array2::from_shape_simple_fn((w[0], w[1]), || T::of(uniform.sample(rng)));
                        let bias = Array1::from_shape_simple_fn(w[1], || T::of(uniform.sample(rng)));
                        LinearLayer::from_weights(weight, bias)
                    }
                };
                let hidden = i < last;
                let norm = match config.norm {
                    MlpNorm::Batch if hidden => Some(NormLayer::Batch(BatchNorm::new(w[1]))),
                    MlpNorm::Layer if hidden => Some(NormLayer::Layer(LayerNorm::new(w[1]))),
                    _ => None,
                };
                Block {
                    linear,
                    activation: hidden.then_some(config.activation),
                    norm,
                    z: Array2::zeros((0, w[1])),
                    a: Array2::zeros((0, w[1])),
                    n: Array2::zeros((0, w[1])),
                    dz: Array2::zeros((0, w[1])),
                    da: Array2::zeros((0, w[1])),
                    dn: Array2::zeros((0, w[1])),
                }
            })
            .collect();
        Mlp {
            config,
            blocks,
            probs: Array2::zeros((0, 0)),
        }
    }

    /// The network's shape.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The linear layers, input side first.
    pub fn linears(&self) -> impl Iterator<Item = &LinearLayer<T>> {
        self.blocks.iter().map(|b| &b.linear)
    }

    /// Mutable access to the linear layers (to load weights).
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut LinearLayer<T>> {
        self.blocks.iter_mut().map(|b| &mut b.linear)
    }

    /// Logits `[batch, classes]` for inputs `x: [batch, inputs]`, in evaluation mode
    /// (BatchNorm with its running statistics).
    pub fn forward(&mut self, x: ArrayView2<'_, T>) -> ArrayView2<'_, T> {
        self.forward_mode(x, false)
    }

    fn forward_mode(&mut self, x: ArrayView2<'_, T>, training: bool) -> ArrayView2<'_, T> {
        assert_eq!(
            x.ncols(),
            self.config.inputs,
            "MLP expects {} input features, got {}",
            self.config.inputs,
            x.ncols()
        );
        let mut input = x;
        for block in self.blocks.iter_mut() {
            block.forward(input, training);
            let block: &Block<T> = block;
            input = block.output();
        }
        self.logits()
    }

    /// The logits of the last forward pass.
    fn logits(&self) -> ArrayView2<'_, T> {
        self.blocks.last().expect("an MLP has an output layer").z.view()
    }

    /// Mean cross-entropy of a batch in evaluation mode (no gradients).
    pub fn loss(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.loss_mode(x, targets, false)
    }

    /// Mean cross-entropy of a batch in training mode (BatchNorm with the batch's statistics,
    /// which also moves its running statistics), no gradients: what
    /// [`forward_backward`](Self::forward_backward) differentiates.
    pub fn training_loss(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.loss_mode(x, targets, true)
    }

    fn loss_mode(&mut self, x: ArrayView2<'_, T>, targets: &[usize], training: bool) -> T {
        self.forward_mode(x, training);
        let logits = &self.blocks.last().expect("an MLP has an output layer").z;
        if self.probs.dim() != logits.dim() {
            self.probs = Array2::zeros(logits.dim());
        }
        SoftmaxCrossEntropy.forward(logits.view(), targets, self.probs.view_mut())
    }

    /// Number of rows of `x` whose prediction is the target (evaluation mode).
    pub fn count_correct(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> usize {
        let logits = self.forward(x);
        count_correct(logits, targets)
    }

    /// Forward and backward pass on one batch in training mode: returns the mean loss and
    /// accumulates the gradient of every parameter.
    pub fn forward_backward(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.forward_backward_with(x, targets, |linear, input, dz, dinput| {
            linear.backward(input, dz.view(), dinput)
        })
    }

    /// One plain-SGD training step (forward, backward, update) with each linear layer's
    /// update fused into its backward pass ([`LinearLayer::backward_sgd`]): the same maths as
    /// [`forward_backward`](Self::forward_backward) followed by [`Sgd::step`](crate::Sgd),
    /// without storing weight gradients. Returns the mean loss.
    pub fn sgd_step(&mut self, x: ArrayView2<'_, T>, targets: &[usize], lr: f64) -> T {
        let loss = self.forward_backward_with(x, targets, |linear, input, dz, dinput| {
            linear.backward_sgd(input, dz, dinput, lr)
        });
        // The norms' γ and β: a plain update of what their backward passes accumulated.
        let lr = T::of(lr);
        for block in self.blocks.iter_mut() {
            for p in norm_parameters(&mut block.norm) {
                for (w, g) in p.value.iter_mut().zip(p.grad.iter_mut()) {
                    *w -= lr * *g;
                    *g = T::zero();
                }
            }
        }
        loss
    }

    /// Forward pass (training mode), loss, and the backward pass through the blocks, output
    /// side first; `linear_backward(layer, input, ∂L/∂z, ∂L/∂input)` does each linear layer's
    /// part.
    fn forward_backward_with(
        &mut self,
        x: ArrayView2<'_, T>,
        targets: &[usize],
        mut linear_backward: impl FnMut(
            &mut LinearLayer<T>,
            ArrayView2<'_, T>,
            ArrayViewMut2<'_, T>,
            Option<ArrayViewMut2<'_, T>>,
        ),
    ) -> T {
        let loss = self.training_loss(x, targets);
        let n = self.blocks.len();
        {
            let out = &mut self.blocks[n - 1];
            SoftmaxCrossEntropy.backward(self.probs.view(), targets, out.dz.view_mut());
        }
        for i in (0..n).rev() {
            let (before, rest) = self.blocks.split_at_mut(i);
            let block = &mut rest[0];
            block.backward_to_z();
            match before.last_mut() {
                Some(prev) => {
                    let (input, dinput) = prev.output_and_grad();
                    linear_backward(&mut block.linear, input, block.dz.view_mut(), Some(dinput))
                }
                None => linear_backward(&mut block.linear, x, block.dz.view_mut(), None),
            }
        }
        loss
    }
}

impl<T: Float> Parameters<T> for Mlp<T> {
    /// Every parameter (as [`Parameters::parameters`] lists them) followed by the BatchNorm
    /// running statistics (`batchnorm<i>.running_mean`, `…running_var`, with empty
    /// gradients): what a checkpoint keeps.
    fn tensors(&mut self) -> Vec<Param<'_, T>> {
        let (mut params, mut statistics) = (Vec::new(), Vec::new());
        for (i, b) in self.blocks.iter_mut().enumerate() {
            params.extend(prefixed(format!("linear{i}"), b.linear.parameters()));
            match &mut b.norm {
                Some(NormLayer::Batch(bn)) => bn.append_tensors(format!("batchnorm{i}"), &mut params, &mut statistics),
                Some(NormLayer::Layer(ln)) => params.extend(prefixed(format!("layernorm{i}"), ln.parameters())),
                None => {}
            }
        }
        params.extend(statistics);
        params
    }

    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        trainable(self.tensors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, random_array, relative_error};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn whole_network_gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(9);
        for activation in [Activation::Elu, Activation::Relu] {
            let config = MlpConfig {
                inputs: 6,
                hidden: vec![5, 4],
                classes: 3,
                activation,
                init: MlpInit::Normal(0.7),
                norm: MlpNorm::None,
            };
            let mut mlp = Mlp::<f64>::new(config, &mut rng);
            let x = random_array(&mut rng, (7, 6));
            let targets = [0, 1, 2, 2, 1, 0, 1];
            mlp.zero_grad();
            mlp.forward_backward(x.view(), &targets);
            let analytic: Vec<Vec<f64>> = mlp.parameters().iter().map(|p| p.grad.to_vec()).collect();
            for (k, grad) in analytic.iter().enumerate() {
                let numeric = numerical_gradient(grad.len(), |i, h| {
                    mlp.parameters()[k].value[i] += h;
                    let l = mlp.loss(x.view(), &targets);
                    mlp.parameters()[k].value[i] -= h;
                    l
                });
                let err = relative_error(grad, &numeric);
                assert!(err < TOLERANCE, "{activation:?} parameter {k}: {err:e}");
            }
        }
    }

    /// The fused SGD step (weight updates inside the backward pass) takes the same steps as
    /// forward–backward followed by `Sgd::step`, without a norm and with BatchNorm (whose
    /// running statistics it moves like a training forward pass).
    #[test]
    fn fused_sgd_step_equals_forward_backward_then_sgd() {
        let mut rng = StdRng::seed_from_u64(13);
        for (activation, init, norm) in [
            (Activation::Elu, MlpInit::Normal(0.5), MlpNorm::None),
            (Activation::Relu, MlpInit::PyTorch, MlpNorm::Batch),
        ] {
            let config = MlpConfig {
                inputs: 8,
                hidden: vec![6, 5],
                classes: 4,
                activation,
                init,
                norm,
            };
            let mut a = Mlp::<f64>::new(config, &mut rng);
            let mut b = a.clone();
            let x = random_array(&mut rng, (9, 8));
            let targets = [0, 1, 2, 3, 0, 1, 2, 3, 0];
            for _ in 0..3 {
                let la = a.forward_backward(x.view(), &targets);
                crate::Sgd { lr: 0.05 }.step(&mut a);
                let lb = b.sgd_step(x.view(), &targets, 0.05);
                assert!((la - lb).abs() < 1e-12, "{norm:?}");
            }
            let wa: Vec<f64> = a.tensors().iter().flat_map(|p| p.value.to_vec()).collect();
            let wb: Vec<f64> = b.tensors().iter().flat_map(|p| p.value.to_vec()).collect();
            assert!(relative_error(&wa, &wb) < 1e-12, "{norm:?}");
            if norm == MlpNorm::Batch {
                // Evaluation uses the running statistics that training moved.
                let running: Vec<f64> = a
                    .tensors()
                    .iter()
                    .filter(|p| p.name.contains("running"))
                    .flat_map(|p| p.value.to_vec())
                    .collect();
                assert_eq!(running.len(), 2 * (6 + 5));
                assert!(running.iter().any(|&v| v != 0.0 && v != 1.0));
                assert!((a.loss(x.view(), &targets) - a.training_loss(x.view(), &targets)).abs() > 1e-6);
            }
        }
    }

    #[test]
    fn gradients_with_batch_and_layer_norm_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(11);
        for norm in [MlpNorm::Batch, MlpNorm::Layer] {
            let config = MlpConfig {
                inputs: 6,
                hidden: vec![5, 4],
                classes: 3,
                activation: Activation::Relu,
                init: MlpInit::PyTorch,
                norm,
            };
            let mut mlp = Mlp::<f64>::new(config, &mut rng);
            // Non-trivial γ and β.
            for p in mlp.parameters() {
                if p.name.contains("norm") {
                    p.value.iter_mut().for_each(|v| *v += 0.3 * (rng.random::<f64>() - 0.5));
                }
            }
            let x = random_array(&mut rng, (7, 6));
            let targets = [0, 1, 2, 2, 1, 0, 1];
            mlp.zero_grad();
            mlp.forward_backward(x.view(), &targets);
            let analytic: Vec<(String, Vec<f64>)> = mlp
                .parameters()
                .iter()
                .map(|p| (p.name.clone(), p.grad.to_vec()))
                .collect();
            assert_eq!(analytic.len(), 3 * 2 + 2 * 2, "3 linear layers, 2 norms");
            for (k, (name, grad)) in analytic.iter().enumerate() {
                let numeric = numerical_gradient(grad.len(), |i, h| {
                    mlp.parameters()[k].value[i] += h;
                    let l = mlp.training_loss(x.view(), &targets);
                    mlp.parameters()[k].value[i] -= h;
                    l
                });
                let err = relative_error(grad, &numeric);
                assert!(err < TOLERANCE, "{norm:?} {name}: {err:e}");
            }
        }
    }

    #[test]
    fn shapes_and_parameter_count() {
        let mut rng = StdRng::seed_from_u64(10);
        let config = MlpConfig {
            inputs: 3072,
            hidden: vec![100],
            classes: 10,
            activation: Activation::Elu,
            init: MlpInit::Normal(1e-4),
            norm: MlpNorm::None,
        };
        let mut mlp = Mlp::<f32>::new(config, &mut rng);
        assert_eq!(mlp.num_parameters(), 3072 * 100 + 100 + 100 * 10 + 10);
        let x = Array2::zeros((4, 3072));
        assert_eq!(mlp.forward(x.view()).dim(), (4, 10));
        let names: Vec<String> = mlp.parameters().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["linear0.weight", "linear0.bias", "linear1.weight", "linear1.bias"]
        );
    }
}
