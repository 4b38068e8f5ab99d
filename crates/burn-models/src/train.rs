//! What training a burn classifier takes, whatever the model: devices, batches as tensors,
//! the optimisation step, evaluation on the inner (non-autodiff) device, and checkpoints of
//! weights and optimiser state.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use burn::module::{ModuleVisitor, Param};

use crate::rnn::{CharLstm, SequenceClassifier};
use crate::{Cnn, Mlp};

/// The devices a build can train on, by command-line name.
pub fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::flex()),
        "wgpu" => gpu_device(),
        other => Err(format!("unknown device {other:?}: expected cpu or wgpu")),
    }
}

#[cfg(feature = "gpu")]
fn gpu_device() -> Result<Device, String> {
    use burn::tensor::{DeviceKind, DeviceType};
    let adapters = Device::enumerate(DeviceType::Wgpu).into_vec();
    if adapters.is_empty() {
        return Err("no GPU adapter found for wgpu (is a Vulkan driver installed?)".into());
    }
    // A software renderer (Mesa's llvmpipe or lavapipe, found through EGL or Vulkan where no
    // GPU driver is) enumerates as wgpu's `Cpu` kind, and the default device falls back to it.
    // There `dl cnn --steps 2` had not finished after ten minutes (on the CPU a step takes
    // under a second), so it is refused rather than taken silently.
    let software = Device::wgpu(DeviceKind::Cpu);
    if adapters.iter().all(|adapter| *adapter == software) {
        return Err("wgpu finds only a software renderer, no GPU: use --device cpu".into());
    }
    Ok(Device::wgpu(DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "gpu"))]
fn gpu_device() -> Result<Device, String> {
    Err("this build has no GPU support: rebuild with `--features gpu` (burn's wgpu backend)".into())
}

/// A model that maps a batch of inputs to class logits `[N, classes]` (for sequence models,
/// one row per position).
pub trait Classifier: Module + Sized {
    /// A batch of inputs.
    type Input;
    /// Logits `[N, classes]`.
    fn logits(&self, x: Self::Input) -> Tensor<2>;
}

impl Classifier for Mlp {
    type Input = Tensor<2>;
    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward(x)
    }
}

impl Classifier for Cnn {
    type Input = Tensor<4>;
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

impl Classifier for SequenceClassifier {
    type Input = Tensor<2, Int>;
    fn logits(&self, x: Tensor<2, Int>) -> Tensor<2> {
        self.forward(x)
    }
}

/// Every position's next-character logits, `[B·T, V]`.
impl Classifier for CharLstm {
    type Input = Tensor<2, Int>;
    fn logits(&self, x: Tensor<2, Int>) -> Tensor<2> {
        let logits = self.forward(x, None).0;
        let [b, t, v] = logits.dims();
        logits.reshape([b * t, v])
    }
}

/// A float tensor of `shape` from `values` on `device`.
pub fn float_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Tokens `[rows, cols]` as an integer tensor.
pub fn tokens_tensor(tokens: &[usize], [rows, cols]: [usize; 2], device: &Device) -> Tensor<2, Int> {
    let values: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Class targets as an integer tensor.
pub fn targets_tensor(targets: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(values, [targets.len()]), device)
}

/// A classifier, its optimiser, and the device it trains on (an autodiff device).
pub struct ClassifierTrainer<M> {
    /// `None` only while the optimiser's step owns the model.
    model: Option<M>,
    optimizer: ModuleOptimizer,
    device: Device,
    /// Scale the gradients down to this global L2 norm when they exceed it.
    max_norm: Option<f64>,
}

/// What a training step measured.
#[derive(Debug, Clone, Copy)]
pub struct StepOutput {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Rows whose largest logit is the target.
    pub correct: usize,
    /// Rows.
    pub count: usize,
}

impl<M> ClassifierTrainer<M> {
    /// Trains `model` (built on `device`, an autodiff device) with `optimizer`.
    pub fn new(model: M, optimizer: ModuleOptimizer, device: Device) -> Self {
        ClassifierTrainer {
            model: Some(model),
            optimizer,
            device,
            max_norm: None,
        }
    }

    /// Clips the gradients to a global L2 norm of `max_norm` before each update, like
    /// PyTorch's `clip_grad_norm_` (burn's own clipping works tensor by tensor).
    pub fn with_max_norm(mut self, max_norm: Option<f64>) -> Self {
        self.max_norm = max_norm;
        self
    }

    /// The training device (with autodiff).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The device evaluation runs on: the training device without autodiff.
    pub fn eval_device(&self) -> Device {
        self.device.clone().inner()
    }

    /// The model.
    pub fn model(&self) -> &M {
        self.model.as_ref().expect("model present between steps")
    }
}

impl<M: Module> ClassifierTrainer<M> {
    /// One step: forward, mean cross-entropy, backward, gradient clipping, optimiser update
    /// at learning rate `lr`.
    pub fn step(&mut self, x: M::Input, targets: Tensor<1, Int>, lr: f64) -> StepOutput
    where
        M: Classifier,
    {
        let model = self.model.take().expect("model present between steps");
        let logits = model.logits(x);
        let count = logits.dims()[0];
        let predicted = logits.clone().detach().argmax(1).reshape([count]);
        let correct = predicted.equal(targets.clone()).int().sum();
        let loss = CrossEntropyLossConfig::new()
            .init(&self.device)
            .forward(logits, targets);
        let value = loss.clone().into_scalar::<f32>();
        let correct = correct.into_scalar::<i64>() as usize;
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        if let Some(max_norm) = self.max_norm {
            clip_global_norm(&model, &mut grads, max_norm);
        }
        self.model = Some(self.optimizer.step(lr, model, grads));
        StepOutput {
            loss: value,
            correct,
            count,
        }
    }

    /// The model for evaluation: on the inner device, with BatchNorm on running statistics.
    pub fn eval_model(&self) -> M {
        self.model().valid()
    }

    /// Weights and optimiser state as bytes, for a checkpoint.
    pub fn save(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let weights = self
            .model()
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| e.to_string())?;
        let optimizer = self.optimizer.to_record().into_bytes().map_err(|e| e.to_string())?;
        Ok((weights.to_vec(), optimizer.to_vec()))
    }

    /// Restores weights and optimiser state saved by [`save`](Self::save).
    pub fn load(&mut self, weights: Vec<u8>, optimizer: Vec<u8>) -> Result<(), String> {
        let model = self.model.take().expect("model present between steps");
        self.model = Some(load_weights(model, weights)?);
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(optimizer)).map_err(|e| e.to_string())?;
        let optimizer = std::mem::replace(&mut self.optimizer, burn::optim::SgdConfig::new().init());
        self.optimizer = optimizer.load_record(record);
        Ok(())
    }
}

/// `model` with the weights of a record saved by [`ClassifierTrainer::save`].
pub fn load_weights<M: Module>(model: M, weights: Vec<u8>) -> Result<M, String> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights)).map_err(|e| e.to_string())?;
    model.try_load_record(record).map_err(|e| e.to_string())
}

/// The class each row of `logits: [B, C]` puts first.
pub fn predicted_classes(logits: Tensor<2>) -> Vec<usize> {
    let predicted = logits.argmax(1).into_data().convert::<i64>();
    let predicted = predicted.as_slice::<i64>().expect("i64 predictions");
    predicted.iter().map(|&p| p as usize).collect()
}

/// Number of rows of `logits` whose largest entry is at the target.
pub fn count_correct(logits: Tensor<2>, targets: &[usize]) -> usize {
    predicted_classes(logits)
        .iter()
        .zip(targets)
        .filter(|(p, t)| p == t)
        .count()
}

/// Scales every gradient of `model` by `max_norm / ‖g‖` when the global norm `‖g‖` (over all
/// parameters together) exceeds `max_norm`.
fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) {
    struct SquaredNorm<'a>(&'a GradientsParams, f64);
    impl ModuleVisitor for SquaredNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1 += g.square().sum().into_scalar::<f64>();
            }
        }
    }
    struct Scale<'a>(&'a mut GradientsParams, f64);
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.remove::<D>(param.id) {
                self.0.register(param.id, g * self.1);
            }
        }
    }
    let mut norm = SquaredNorm(grads, 0.0);
    model.visit(&mut norm);
    let norm = norm.1.sqrt();
    if norm > max_norm {
        model.visit(&mut Scale(grads, max_norm / (norm + 1e-6)));
    }
}
