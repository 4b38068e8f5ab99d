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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::loss::CrossEntropyLossConfig;
    use manual::gradcheck::relative_error;
    use manual::{MlpInit, MlpNorm, Parameters};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// The manual engine's MLP, given the burn MLP's weights and batch, computes the same
    /// training loss and the same gradient for every parameter, with either norm.
    #[test]
    fn the_manual_engine_twin_gives_the_same_loss_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let (inputs, batch, classes) = (12, 9, 4);
        let x: Vec<f32> = (0..batch * inputs)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3)
            .collect();
        let targets: Vec<usize> = (0..batch).map(|i| (i * 3 + 1) % classes).collect();
        for (norm, manual_norm) in [(Norm::Batch, MlpNorm::Batch), (Norm::Layer, MlpNorm::Layer)] {
            let config = MlpConfig {
                inputs,
                hidden: vec![8, 6],
                classes,
                activation: Activation::Relu,
                norm,
            };
            let model = config.init(&device);
            let xt = crate::train::float_tensor(x.clone(), [batch, inputs], &device);
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(model.forward(xt), crate::train::targets_tensor(&targets, &device));
            let burn_loss = loss.clone().into_scalar::<f32>();
            let grads = loss.backward();

            let mut twin = manual::Mlp::<f32>::new(
                manual::MlpConfig {
                    inputs,
                    hidden: vec![8, 6],
                    classes,
                    activation: manual::Activation::Relu,
                    init: MlpInit::PyTorch,
                    norm: manual_norm,
                },
                &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0),
            );
            // Burn's (value, gradient) pairs in the manual engine's parameter order.
            let pair2 = |p: &Param<Tensor<2>>| (values(p.val()), values(p.grad(&grads).unwrap()));
            let pair1 = |p: &Param<Tensor<1>>| (values(p.val()), values(p.grad(&grads).unwrap()));
            let mut burn_params = Vec::new();
            for (i, linear) in model
                .hidden
                .iter()
                .map(|h| &h.linear)
                .chain([&model.output])
                .enumerate()
            {
                burn_params.push(pair2(&linear.weight));
                burn_params.push(pair1(linear.bias.as_ref().unwrap()));
                if let Some(h) = model.hidden.get(i) {
                    let (gamma, beta) = match (&h.batch_norm, &h.layer_norm) {
                        (Some(bn), _) => (&bn.gamma, &bn.beta),
                        (_, Some(ln)) => (&ln.gamma, &ln.beta),
                        _ => unreachable!("every hidden layer has a norm here"),
                    };
                    burn_params.push(pair1(gamma));
                    burn_params.push(pair1(beta));
                }
            }
            for (p, (v, _)) in twin.parameters().into_iter().zip(&burn_params) {
                assert_eq!(p.value.len(), v.len(), "{}", p.name);
                p.value.copy_from_slice(v);
            }
            let xa = ndarray::Array2::from_shape_vec((batch, inputs), x.clone()).unwrap();
            let manual_loss = twin.forward_backward(xa.view(), &targets);
            assert!(
                (manual_loss - burn_loss).abs() <= 1e-5 * burn_loss.abs(),
                "{norm:?}: loss {manual_loss} vs burn's {burn_loss}"
            );
            let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
            let params = twin.parameters();
            assert_eq!(params.len(), burn_params.len());
            for (p, (_, g)) in params.iter().zip(&burn_params) {
                let err = relative_error(&widen(p.grad), &widen(g));
                assert!(err < 1e-4, "{norm:?} {}: relative error {err:e} against burn", p.name);
            }
        }
    }
}
