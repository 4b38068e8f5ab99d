//! The multi-layer perceptron of the write-up's NumPy part: `Linear → h` per hidden layer,
//! then a `Linear` to the class logits, trained with the fused softmax–cross-entropy loss.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;

use crate::softmax_cross_entropy::count_correct;
use crate::{Activation, Float, LinearLayer, Param, Parameters, SoftmaxCrossEntropy};

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
    /// Standard deviation of the initial weights (the original's `1e-4`).
    pub init_std: f64,
}

/// One linear layer, its optional activation, and the buffers of the current batch.
#[derive(Debug, Clone)]
struct Block<T> {
    linear: LinearLayer<T>,
    /// `None` for the output layer, whose `z` are the logits.
    activation: Option<Activation>,
    /// `z = x·Wᵀ + b`, `[batch, out]`.
    z: Array2<T>,
    /// `a = h(z)`, `[batch, out]`: the next layer's input, and `h'` is computed from it.
    a: Array2<T>,
    /// `∂L/∂z`, `[batch, out]`.
    dz: Array2<T>,
    /// `∂L/∂a`, `[batch, out]`, written by the next layer's backward pass.
    da: Array2<T>,
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
        }
    }

    fn forward(&mut self, x: ArrayView2<'_, T>) {
        self.reserve(x.nrows());
        self.linear.forward(x, self.z.view_mut());
        if let Some(h) = self.activation {
            h.forward(self.z.view(), self.a.view_mut());
        }
    }

    fn output(&self) -> ArrayView2<'_, T> {
        match self.activation {
            Some(_) => self.a.view(),
            None => self.z.view(),
        }
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
    /// A freshly initialised network (weights N(0, `init_std`²), biases 0).
    pub fn new(config: MlpConfig, rng: &mut impl Rng) -> Self {
        let widths: Vec<usize> = std::iter::once(config.inputs)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.classes))
            .collect();
        let last = widths.len() - 2;
        let blocks = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Block {
                linear: LinearLayer::new(w[0], w[1], config.init_std, rng),
                activation: (i < last).then_some(config.activation),
                z: Array2::zeros((0, w[1])),
                a: Array2::zeros((0, w[1])),
                dz: Array2::zeros((0, w[1])),
                da: Array2::zeros((0, w[1])),
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

    /// Logits `[batch, classes]` for inputs `x: [batch, inputs]`.
    pub fn forward(&mut self, x: ArrayView2<'_, T>) -> ArrayView2<'_, T> {
        assert_eq!(
            x.ncols(),
            self.config.inputs,
            "MLP expects {} input features, got {}",
            self.config.inputs,
            x.ncols()
        );
        let mut input = x;
        for block in self.blocks.iter_mut() {
            block.forward(input);
            let block: &Block<T> = block;
            input = block.output();
        }
        self.logits()
    }

    /// The logits of the last forward pass.
    fn logits(&self) -> ArrayView2<'_, T> {
        self.blocks.last().expect("an MLP has an output layer").z.view()
    }

    /// Mean cross-entropy of a batch (no gradients).
    pub fn loss(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.forward(x);
        let logits = &self.blocks.last().expect("an MLP has an output layer").z;
        if self.probs.dim() != logits.dim() {
            self.probs = Array2::zeros(logits.dim());
        }
        SoftmaxCrossEntropy.forward(logits.view(), targets, self.probs.view_mut())
    }

    /// Number of rows of `x` whose prediction is the target.
    pub fn count_correct(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> usize {
        let logits = self.forward(x);
        count_correct(logits, targets)
    }

    /// Forward and backward pass on one batch: returns the mean loss and accumulates the
    /// gradient of every parameter.
    pub fn forward_backward(&mut self, x: ArrayView2<'_, T>, targets: &[usize]) -> T {
        self.forward_backward_with(x, targets, |linear, input, dz, dinput| {
            linear.backward(input, dz.view(), dinput)
        })
    }

    /// One plain-SGD training step (forward, backward, update) with each layer's update fused
    /// into its backward pass ([`LinearLayer::backward_sgd`]): the same maths as
    /// [`forward_backward`](Self::forward_backward) followed by [`Sgd::step`](crate::Sgd),
    /// without storing weight gradients. Returns the mean loss.
    pub fn sgd_step(&mut self, x: ArrayView2<'_, T>, targets: &[usize], lr: f64) -> T {
        self.forward_backward_with(x, targets, |linear, input, dz, dinput| {
            linear.backward_sgd(input, dz, dinput, lr)
        })
    }

    /// Forward pass, loss, and the backward pass through the blocks, output side first;
    /// `linear_backward(layer, input, ∂L/∂z, ∂L/∂input)` does each linear layer's part.
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
        let loss = self.loss(x, targets);
        let n = self.blocks.len();
        {
            let out = &mut self.blocks[n - 1];
            SoftmaxCrossEntropy.backward(self.probs.view(), targets, out.dz.view_mut());
        }
        for i in (0..n).rev() {
            let (before, rest) = self.blocks.split_at_mut(i);
            let block = &mut rest[0];
            if let Some(h) = block.activation {
                h.backward(block.a.view(), block.da.view(), block.dz.view_mut());
            }
            match before.last_mut() {
                Some(prev) => linear_backward(
                    &mut block.linear,
                    prev.a.view(),
                    block.dz.view_mut(),
                    Some(prev.da.view_mut()),
                ),
                None => linear_backward(&mut block.linear, x, block.dz.view_mut(), None),
            }
        }
        loss
    }
}

impl<T: Float> Parameters<T> for Mlp<T> {
    fn parameters(&mut self) -> Vec<Param<'_, T>> {
        self.blocks
            .iter_mut()
            .enumerate()
            .flat_map(|(i, b)| {
                b.linear.parameters().into_iter().map(move |mut p| {
                    p.name = format!("linear{i}.{}", p.name);
                    p
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{TOLERANCE, numerical_gradient, random_array, relative_error};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn whole_network_gradients_match_central_differences() {
        let mut rng = StdRng::seed_from_u64(9);
        for activation in [Activation::Elu, Activation::Relu] {
            let config = MlpConfig {
                inputs: 6,
                hidden: vec![5, 4],
                classes: 3,
                activation,
                init_std: 0.7,
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

    #[test]
    fn fused_sgd_step_equals_forward_backward_then_sgd() {
        let mut rng = StdRng::seed_from_u64(13);
        let config = MlpConfig {
            inputs: 8,
            hidden: vec![6, 5],
            classes: 4,
            activation: Activation::Elu,
            init_std: 0.5,
        };
        let mut a = Mlp::<f64>::new(config, &mut rng);
        let mut b = a.clone();
        let x = random_array(&mut rng, (9, 8));
        let targets = [0, 1, 2, 3, 0, 1, 2, 3, 0];
        for _ in 0..3 {
            let la = a.forward_backward(x.view(), &targets);
            crate::Sgd { lr: 0.05 }.step(&mut a);
            let lb = b.sgd_step(x.view(), &targets, 0.05);
            assert!((la - lb).abs() < 1e-12);
        }
        let wa: Vec<f64> = a.parameters().iter().flat_map(|p| p.value.to_vec()).collect();
        let wb: Vec<f64> = b.parameters().iter().flat_map(|p| p.value.to_vec()).collect();
        assert!(relative_error(&wa, &wb) < 1e-12);
    }

    #[test]
    fn shapes_and_parameter_count() {
        let mut rng = StdRng::seed_from_u64(10);
        let config = MlpConfig {
            inputs: 3072,
            hidden: vec![100],
            classes: 10,
            activation: Activation::Elu,
            init_std: 1e-4,
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
