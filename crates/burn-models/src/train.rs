//! What training a burn classifier takes, whatever the model: devices, batches as tensors,
//! the optimisation step, evaluation on the inner (non-autodiff) device, and checkpoints of
//! weights and optimiser state.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

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
    if Device::enumerate(DeviceType::Wgpu).into_vec().is_empty() {
        return Err("no GPU adapter found for wgpu (is a Vulkan driver installed?)".into());
    }
    Ok(Device::wgpu(DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "gpu"))]
fn gpu_device() -> Result<Device, String> {
    Err("this build has no GPU support: rebuild with `--features gpu` (burn's wgpu backend)".into())
}

/// A model that maps a batch of `D`-dimensional inputs to class logits.
pub trait Classifier<const D: usize>: Module + Sized {
    /// Logits `[batch, classes]`.
    fn logits(&self, x: Tensor<D>) -> Tensor<2>;
}

impl Classifier<2> for Mlp {
    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward(x)
    }
}

impl Classifier<4> for Cnn {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

/// A float tensor of `shape` from `values` on `device`.
pub fn float_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
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
}

impl<M> ClassifierTrainer<M> {
    /// Trains `model` (built on `device`, an autodiff device) with `optimizer`.
    pub fn new(model: M, optimizer: ModuleOptimizer, device: Device) -> Self {
        ClassifierTrainer {
            model: Some(model),
            optimizer,
            device,
        }
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
    /// One step: forward, mean cross-entropy, backward, optimiser update at learning rate
    /// `lr`. Returns the loss.
    pub fn step<const D: usize>(&mut self, x: Tensor<D>, targets: Tensor<1, Int>, lr: f64) -> f32
    where
        M: Classifier<D>,
    {
        let model = self.model.take().expect("model present between steps");
        let logits = model.logits(x);
        let loss = CrossEntropyLossConfig::new()
            .init(&self.device)
            .forward(logits, targets);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optimizer.step(lr, model, grads));
        value
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
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights)).map_err(|e| e.to_string())?;
        let model = self.model.take().expect("model present between steps");
        let model = model.try_load_record(record).map_err(|e| e.to_string())?;
        self.model = Some(model);
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(optimizer)).map_err(|e| e.to_string())?;
        let optimizer = std::mem::replace(&mut self.optimizer, burn::optim::SgdConfig::new().init());
        self.optimizer = optimizer.load_record(record);
        Ok(())
    }
}

/// Number of rows of `logits` whose largest entry is at the target.
pub fn count_correct(logits: Tensor<2>, targets: &[usize]) -> usize {
    let predicted = logits.argmax(1).into_data().convert::<i64>();
    let predicted = predicted.as_slice::<i64>().expect("i64 predictions");
    predicted
        .iter()
        .zip(targets)
        .filter(|(p, t)| **p as usize == **t)
        .count()
}
