//! `dl cnn`: the write-up's pre-activation residual CNN on CIFAR-10 (mean-subtracted images)
//! with Adam, on the burn engine (NCHW) or the manual engine (channels-last).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn_models::Cnn;
use burn_models::train::ClassifierTrainer;
use clap::Args;
use data::{IMAGE_CHANNELS, IMAGE_SIDE, NUM_CLASSES};
use manual::{Adam, CnnConfig};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::burn_trainer::BurnCifarTrainer;
use crate::cifar::{CifarArgs, CifarBatches, load_cifar10};
use crate::manual_trainer::{ManualCifarTrainer, ManualClassifier};
use crate::mlp::{DeviceArg, Engine, OptimizerArg, optimizer};
use crate::runner::{
    Experiment, ResumableArgs, RunArgs, Schedule, Stopwatch, Trainer, adopt_run_flags, resolve_args, run_experiment,
};

/// The model and optimiser flags, shared by `dl cnn` and `dl bench cnn`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CnnModelArgs {
    /// Engine that runs the model.
    #[arg(long, value_enum, default_value = "burn")]
    pub engine: Engine,
    /// Learning rate (Adam).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Images per training step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Device of the burn engine.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

impl CnnModelArgs {
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if self.batch_size < 2 {
            bail!("--batch-size must be at least 2 (BatchNorm needs batch statistics)");
        }
        if self.engine == Engine::Manual && self.device != DeviceArg::Cpu {
            bail!("the manual engine runs on the CPU; --device is for --engine burn");
        }
        Ok(())
    }

    /// The manual engine's network and Adam, seeded.
    pub fn manual_learner(&self, seed: u64) -> ManualCnn {
        ManualCnn {
            model: manual::Cnn::new(CnnConfig::cifar10(), &mut StdRng::seed_from_u64(seed)),
            adam: Adam::default(),
        }
    }

    /// The network and Adam on an autodiff `device`, seeded.
    pub fn trainer(&self, device: burn::tensor::Device, seed: u64) -> ClassifierTrainer<Cnn> {
        device.seed(seed);
        let model = Cnn::new(NUM_CLASSES, &device);
        ClassifierTrainer::new(model, optimizer(OptimizerArg::Adam), device)
    }
}

/// The input shape of a batch of `n` images.
pub fn nchw(n: usize) -> [usize; 4] {
    [n, IMAGE_CHANNELS, IMAGE_SIDE, IMAGE_SIDE]
}

/// Arguments of `dl cnn`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CnnArgs {
    #[command(flatten)]
    pub model: CnnModelArgs,
    /// Training steps [default: 5000; with --resume, the resumed run's].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Evaluate on the whole test set every this many steps (and after the last).
    #[arg(long, default_value_t = 500)]
    pub eval_every: usize,
    /// Seed of the initial weights and the batch order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub data: CifarArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Continue the run in this folder from its last checkpoint (weights and Adam state),
    /// with its configuration (only --steps, --json and --data may change).
    #[arg(long, value_name = "RUN")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
}

/// Test images per evaluation batch of the burn engine.
const EVAL_BATCH: usize = 250;

/// The manual engine's network and its Adam.
pub struct ManualCnn {
    pub model: manual::Cnn<f32>,
    adam: Adam<f32>,
}

impl ManualClassifier for ManualCnn {
    const NAME: &'static str = "cnn";
    type Model = manual::Cnn<f32>;

    fn step(&mut self, x: ArrayView2<'_, f32>, labels: &[usize], lr: f64) -> f32 {
        let loss = self.model.forward_backward(x, labels);
        self.adam.step(&mut self.model, lr);
        loss
    }

    fn count_correct(&mut self, x: ArrayView2<'_, f32>, labels: &[usize]) -> usize {
        self.model.count_correct(x, labels)
    }

    fn parts(&mut self) -> (&mut manual::Cnn<f32>, Option<&mut Adam<f32>>) {
        (&mut self.model, Some(&mut self.adam))
    }
}

/// `dl cnn`
pub fn run(args: &CnnArgs) -> Result<()> {
    let clock = Stopwatch::start();
    let args = &resolve_args(args)?;
    args.model.validate()?;
    let schedule = Schedule::new(args.steps.unwrap_or(5000), args.eval_every);
    schedule.validate()?;
    let device = args.model.device.training_device(args.model.engine)?;
    let data = load_cifar10(&args.data)?;
    let batches = CifarBatches::new(data, args.model.batch_size, args.seed.wrapping_add(1))?;
    let mut trainer: Box<dyn Trainer> = match args.model.engine {
        // Evaluation batches the size of the training batch reuse its buffers (the manual
        // engine keeps every layer's activations for the backward pass).
        Engine::Manual => Box::new(ManualCifarTrainer {
            learner: args.model.manual_learner(args.seed),
            lr: args.model.lr,
            batches,
            eval_batch: args.model.batch_size,
        }),
        Engine::Burn => Box::new(BurnCifarTrainer::new(
            args.model
                .trainer(device.expect("resolved for the burn engine"), args.seed),
            batches,
            args.model.lr,
            EVAL_BATCH,
            "cnn",
            nchw,
        )),
    };
    let steps = schedule.steps;
    let experiment = Experiment {
        name: "cnn",
        engine: args.model.engine.name(),
        schedule,
        resume: args.resume.as_deref(),
        out: args.run.out.as_deref(),
    };
    let config = CnnArgs {
        steps: Some(steps),
        ..args.clone()
    };
    let extra = json!({
        "lr": args.model.lr,
        "batch_size": args.model.batch_size,
        "device": args.model.device,
        "seed": args.seed,
    });
    run_experiment(&experiment, &config, trainer.as_mut(), extra, &clock, args.run.json)?;
    Ok(())
}

impl ResumableArgs for CnnArgs {
    const EXPERIMENT: &'static str = "cnn";
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
