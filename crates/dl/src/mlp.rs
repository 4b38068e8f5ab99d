//! `dl mlp`: the write-up's MLP on CIFAR-10 (flattened, mean-subtracted images), on the
//! manual engine (the NumPy part) or the burn engine (the PyTorch part).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, SgdConfig};
use burn_models::train::ClassifierTrainer;
use clap::{Args, ValueEnum};
use data::{IMAGE_BYTES, NUM_CLASSES};
use manual::{Activation, Adam, Mlp, MlpConfig, MlpInit, MlpNorm};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::burn_trainer::BurnCifarTrainer;
use crate::cifar::{CifarArgs, CifarBatches, load_cifar10};
use crate::manual_trainer::{ManualCifarTrainer, ManualClassifier};
use crate::runner::{
    Experiment, ResumableArgs, RunArgs, Schedule, Stopwatch, Trainer, adopt_run_flags, resolve_args, run_experiment,
};

/// Which implementation trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Hand-written forward and backward passes on ndarray.
    Manual,
    /// burn 0.22 modules and autodiff.
    Burn,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Manual => "manual",
            Engine::Burn => "burn",
        }
    }
}

/// Hidden-layer activation, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationArg {
    Relu,
    Elu,
}

/// Normalisation after each hidden layer's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormArg {
    None,
    Batch,
    Layer,
}

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerArg {
    Sgd,
    Adam,
}

/// Where the burn engine computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceArg {
    /// burn's flex backend on the CPU.
    Cpu,
    /// burn's wgpu backend (builds with `--features gpu`).
    Wgpu,
}

impl DeviceArg {
    /// The burn device, or a one-line reason it is not available in this build or machine.
    pub fn device(self) -> Result<burn::tensor::Device> {
        let name = match self {
            DeviceArg::Cpu => "cpu",
            DeviceArg::Wgpu => "wgpu",
        };
        burn_models::train::device(name).map_err(anyhow::Error::msg)
    }

    /// The autodiff device `engine` trains on: this device for the burn engine, none for the
    /// manual one. Training commands resolve it before reading any data, so that a build or
    /// machine without the device is the first thing they report.
    pub fn training_device(self, engine: Engine) -> Result<Option<burn::tensor::Device>> {
        Ok(match engine {
            Engine::Burn => Some(self.device()?.autodiff()),
            Engine::Manual => None,
        })
    }
}

impl From<ActivationArg> for Activation {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Relu => Activation::Relu,
            ActivationArg::Elu => Activation::Elu,
        }
    }
}

/// The model and optimiser flags, shared by `dl mlp` and `dl bench mlp`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct MlpModelArgs {
    /// Engine that runs the model.
    #[arg(long, value_enum, default_value = "manual")]
    pub engine: Engine,
    /// Hidden layer widths, comma-separated (e.g. 200,200).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub hidden: Vec<usize>,
    /// Activation after each hidden layer.
    #[arg(long, value_enum, default_value = "elu")]
    pub activation: ActivationArg,
    /// Normalisation after each hidden activation.
    #[arg(long, value_enum, default_value = "none")]
    pub norm: NormArg,
    /// Optimiser.
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerArg,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Examples per training step.
    #[arg(long, default_value_t = 200)]
    pub batch_size: usize,
    /// Device of the burn engine.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

impl MlpModelArgs {
    /// Checks the flags that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.contains(&0) {
            bail!("--hidden widths must be positive, got {:?}", self.hidden);
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.engine == Engine::Manual && self.device != DeviceArg::Cpu {
            bail!("the manual engine runs on the CPU; --device is for --engine burn");
        }
        if self.norm == NormArg::Batch && self.batch_size < 2 {
            bail!("--norm batch needs --batch-size of at least 2");
        }
        Ok(())
    }

    /// The manual engine's network for CIFAR-10 images. Without a norm it is the NumPy
    /// original's (weights N(0, 1e-4)); with one, the PyTorch part's, initialised as
    /// PyTorch's `nn.Linear` like the burn engine's.
    pub fn manual_config(&self) -> MlpConfig {
        let (init, norm) = match self.norm {
            NormArg::None => (MlpInit::Normal(1e-4), MlpNorm::None),
            NormArg::Batch => (MlpInit::PyTorch, MlpNorm::Batch),
            NormArg::Layer => (MlpInit::PyTorch, MlpNorm::Layer),
        };
        MlpConfig {
            inputs: IMAGE_BYTES,
            hidden: self.hidden.clone(),
            classes: NUM_CLASSES,
            activation: self.activation.into(),
            init,
            norm,
        }
    }

    /// The manual engine's network and optimiser, seeded.
    pub fn manual_learner(&self, seed: u64) -> ManualMlp {
        ManualMlp {
            model: Mlp::new(self.manual_config(), &mut StdRng::seed_from_u64(seed)),
            adam: (self.optimizer == OptimizerArg::Adam).then(Adam::default),
        }
    }

    /// The burn engine's network for CIFAR-10 images (PyTorch's default initialisation).
    pub fn burn_config(&self) -> burn_models::MlpConfig {
        burn_models::MlpConfig {
            inputs: IMAGE_BYTES,
            hidden: self.hidden.clone(),
            classes: NUM_CLASSES,
            activation: match self.activation {
                ActivationArg::Relu => burn_models::Activation::Relu,
                ActivationArg::Elu => burn_models::Activation::Elu,
            },
            norm: match self.norm {
                NormArg::None => burn_models::Norm::None,
                NormArg::Batch => burn_models::Norm::Batch,
                NormArg::Layer => burn_models::Norm::Layer,
            },
        }
    }

    /// The burn model and its optimiser on an autodiff `device`, seeded.
    pub fn burn_trainer(&self, device: burn::tensor::Device, seed: u64) -> ClassifierTrainer<burn_models::Mlp> {
        device.seed(seed);
        let model = self.burn_config().init(&device);
        ClassifierTrainer::new(model, optimizer(self.optimizer), device)
    }
}

/// The optimiser as the original configured it (PyTorch's defaults: Adam ε = 1e-8).
pub fn optimizer(kind: OptimizerArg) -> burn::optim::ModuleOptimizer {
    match kind {
        OptimizerArg::Sgd => SgdConfig::new().init(),
        OptimizerArg::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
    }
}

/// Arguments of `dl mlp`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct MlpArgs {
    #[command(flatten)]
    pub model: MlpModelArgs,
    /// Training steps [default: 1400; with --resume, the resumed run's].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Evaluate on the whole test set every this many steps (and after the last).
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Seed of the initial weights and the batch order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub data: CifarArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Continue the run in this folder from its last checkpoint, with its configuration
    /// (only --steps, --json and --data may change).
    #[arg(long, value_name = "RUN")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
}

impl MlpArgs {
    /// The write-up's step budget.
    const DEFAULT_STEPS: usize = 1400;

    /// Total steps to train.
    pub fn steps(&self) -> usize {
        self.steps.unwrap_or(Self::DEFAULT_STEPS)
    }
}

/// Test images per evaluation batch: large enough for fast products, small enough that the
/// activations stay a few megabytes.
const EVAL_BATCH: usize = 1000;

/// The manual engine's MLP and its optimiser.
pub struct ManualMlp {
    pub model: Mlp<f32>,
    /// `None`: plain SGD, its update fused into the backward pass.
    adam: Option<Adam<f32>>,
}

impl ManualClassifier for ManualMlp {
    const NAME: &'static str = "mlp";
    type Model = Mlp<f32>;

    fn step(&mut self, x: ArrayView2<'_, f32>, labels: &[usize], lr: f64) -> f32 {
        match &mut self.adam {
            None => self.model.sgd_step(x, labels, lr),
            Some(adam) => {
                let loss = self.model.forward_backward(x, labels);
                adam.step(&mut self.model, lr);
                loss
            }
        }
    }

    fn count_correct(&mut self, x: ArrayView2<'_, f32>, labels: &[usize]) -> usize {
        self.model.count_correct(x, labels)
    }

    fn parts(&mut self) -> (&mut Mlp<f32>, Option<&mut Adam<f32>>) {
        (&mut self.model, self.adam.as_mut())
    }
}

/// `dl mlp`
pub fn run(args: &MlpArgs) -> Result<()> {
    let clock = Stopwatch::start();
    let args = &resolve_args(args)?;
    args.model.validate()?;
    let schedule = Schedule::new(args.steps(), args.eval_every);
    schedule.validate()?;
    let device = args.model.device.training_device(args.model.engine)?;
    let data = load_cifar10(&args.data)?;
    // The data order has its own seed, derived from --seed, so that it does not depend on how
    // many random numbers the initialisation drew.
    let batches = CifarBatches::new(data, args.model.batch_size, args.seed.wrapping_add(1))?;
    let mut trainer: Box<dyn Trainer> = match args.model.engine {
        Engine::Manual => Box::new(ManualCifarTrainer {
            learner: args.model.manual_learner(args.seed),
            lr: args.model.lr,
            batches,
            eval_batch: EVAL_BATCH,
        }),
        Engine::Burn => Box::new(BurnCifarTrainer::new(
            args.model
                .burn_trainer(device.expect("resolved for the burn engine"), args.seed),
            batches,
            args.model.lr,
            EVAL_BATCH,
            "mlp",
            |n| [n, IMAGE_BYTES],
        )),
    };
    let steps = schedule.steps;
    let experiment = Experiment {
        name: "mlp",
        engine: args.model.engine.name(),
        schedule,
        resume: args.resume.as_deref(),
        out: args.run.out.as_deref(),
    };
    let config = MlpArgs {
        steps: Some(steps),
        ..args.clone()
    };
    let extra = json!({
        "hidden": args.model.hidden,
        "activation": args.model.activation,
        "norm": args.model.norm,
        "optimizer": args.model.optimizer,
        "lr": args.model.lr,
        "batch_size": args.model.batch_size,
        "seed": args.seed,
    });
    run_experiment(&experiment, &config, trainer.as_mut(), extra, &clock, args.run.json)?;
    Ok(())
}

impl ResumableArgs for MlpArgs {
    const EXPERIMENT: &'static str = "mlp";
    fn resume_dir(&self) -> Option<&Path> {
        self.resume.as_deref()
    }
    fn adopt(&mut self, cli: &Self, dir: &Path) {
        adopt_run_flags(
            (&mut self.steps, &mut self.run, &mut self.resume),
            (cli.steps, &cli.run),
            dir,
        );
        self.data.adopt(&cli.data);
    }
}
