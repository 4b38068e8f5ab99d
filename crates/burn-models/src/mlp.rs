//! The write-up's PyTorch MLP: `Linear → activation → (normalisation)` per hidden layer, then a
//! `Linear` to the class logits. Weights start as PyTorch's `nn.Linear` does (burn's default:
//! Kaiming-uniform with gain 1/√3, i.e. U(−1/√fan_in, 1/√fan_in)).

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{elu, relu};

use crate::layer_norm::LayerNorm;

/// The hidden layers' activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Elu,
}

/// Normalisation after each hidden layer's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    None,
    /// burn's BatchNorm: batch statistics in training, running statistics in evaluation.
    Batch,
    /// Our LayerNorm with the hand-written backward pass.
    Layer,
}

/// Shape of the MLP.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    pub inputs: usize,
    pub hidden: Vec<usize>,
    pub classes: usize,
    pub activation: Activation,
    pub norm: Norm,
}

/// One hidden layer: `Linear → activation → norm`.
#[derive(Module, Debug)]
pub struct HiddenLayer {
    linear: Linear,
    batch_norm: Option<BatchNorm>,
    layer_norm: Option<LayerNorm>,
    #[module(skip)]
    activation: Activation,
}

impl HiddenLayer {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.linear.forward(x); // [batch, out]
        let x = match self.activation {
            Activation::Relu => relu(x),
            Activation::Elu => elu(x, 1.0),
        };
        match (&self.batch_norm, &self.layer_norm) {
            (Some(bn), _) => bn.forward(x),
            (_, Some(ln)) => ln.forward(x),
            _ => x,
        }
    }
}

/// The MLP.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<HiddenLayer>,
    output: Linear,
}

impl MlpConfig {
    /// A freshly initialised MLP on `device`.
    pub fn init(&self, device: &Device) -> Mlp {
        let mut width = self.inputs;
        let hidden = self
            .hidden
            .iter()
            .map(|&out| {
                let layer = HiddenLayer {
                    linear: LinearConfig::new(width, out).init(device),
                    batch_norm: (self.norm == Norm::Batch).then(|| BatchNormConfig::new(out).init(device)),
                    layer_norm: (self.norm == Norm::Layer).then(|| LayerNorm::new(out, device)),
                    activation: self.activation,
                };
                width = out;
                layer
            })
            .collect();
        Mlp {
            hidden,
            output: LinearConfig::new(width, self.classes).init(device),
        }
    }
}

impl Mlp {
    /// Logits `[batch, classes]` for `x: [batch, inputs]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.hidden.iter().fold(x, |x, layer| layer.forward(x));
        self.output.forward(x)
    }
}
