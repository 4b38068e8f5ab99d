//! `dl mlp`: the write-up's MLP on CIFAR-10 (flattened, mean-subtracted images).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use data::{Cifar10, EpochSampler, IMAGE_BYTES, NUM_CLASSES};
use manual::{Activation, Mlp, MlpConfig, Parameters, Sgd};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{load_params, restore_params, save_params};
use crate::download::{CifarArgs, load_cifar10};
use crate::runner::{History, RunArgs, RunFolder, Schedule, Stopwatch, Trainer, peak_rss_mb, report, run_training};

/// Which implementation trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Hand-written forward and backward passes on ndarray.
    Manual,
}

/// Hidden-layer activation, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationArg {
    Relu,
    Elu,
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
    /// Learning rate (SGD).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Examples per training step.
    #[arg(long, default_value_t = 200)]
    pub batch_size: usize,
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
        Ok(())
    }

    /// The network these flags describe, for CIFAR-10 images.
    pub fn config(&self) -> MlpConfig {
        MlpConfig {
            inputs: IMAGE_BYTES,
            hidden: self.hidden.clone(),
            classes: NUM_CLASSES,
            activation: self.activation.into(),
            init_std: 1e-4,
        }
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
    pub resume: Option<std::path::PathBuf>,
}

impl MlpArgs {
    /// The write-up's step budget.
    const DEFAULT_STEPS: usize = 1400;

    /// Total steps to train.
    pub fn steps(&self) -> usize {
        self.steps.unwrap_or(Self::DEFAULT_STEPS)
    }
}

/// The checkpoint file in a run folder.
const CHECKPOINT: &str = "checkpoint.safetensors";

/// Test images per evaluation batch: large enough for fast products, small enough that the
/// activations stay a few megabytes.
const EVAL_BATCH: usize = 1000;

/// The manual engine's MLP with its data pipeline.
struct ManualMlpTrainer {
    model: Mlp<f32>,
    sgd: Sgd,
    data: Cifar10,
    /// Per-pixel mean of the training images, subtracted from every batch.
    mean: Vec<f32>,
    sampler: EpochSampler,
    batch_size: usize,
    /// `[batch, 3072]` input buffer, reused every step.
    inputs: Array2<f32>,
    labels: Vec<usize>,
    /// `[EVAL_BATCH, 3072]` buffer for evaluation, allocated once.
    eval_inputs: Array2<f32>,
    eval_labels: Vec<usize>,
}

impl ManualMlpTrainer {
    fn new(args: &MlpArgs, data: Cifar10) -> Self {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let model = Mlp::new(args.model.config(), &mut rng);
        let mean = data.train.mean_image();
        let sampler = EpochSampler::new(data.train.len(), args.seed.wrapping_add(1));
        ManualMlpTrainer {
            model,
            sgd: Sgd { lr: args.model.lr },
            mean,
            sampler,
            batch_size: args.model.batch_size,
            inputs: Array2::zeros((args.model.batch_size, IMAGE_BYTES)),
            labels: vec![0; args.model.batch_size],
            eval_inputs: Array2::zeros((EVAL_BATCH, IMAGE_BYTES)),
            eval_labels: vec![0; EVAL_BATCH],
            data,
        }
    }
}

impl Trainer for ManualMlpTrainer {
    fn train_step(&mut self, _step: usize) -> Result<f64> {
        let indices = self.sampler.next_batch(self.batch_size);
        let inputs = self.inputs.as_slice_mut().expect("contiguous");
        self.data
            .train
            .fill_batch(indices, &self.mean, inputs, &mut self.labels);
        let loss = self.model.sgd_step(self.inputs.view(), &self.labels, self.sgd.lr);
        Ok(loss as f64)
    }

    fn evaluate(&mut self) -> Result<f64> {
        let test = &self.data.test;
        let all: Vec<usize> = (0..test.len()).collect();
        let mut correct = 0;
        for chunk in all.chunks(EVAL_BATCH) {
            let n = chunk.len();
            let inputs = &mut self.eval_inputs.as_slice_mut().expect("contiguous")[..n * IMAGE_BYTES];
            let labels = &mut self.eval_labels[..n];
            test.fill_batch(chunk, &self.mean, inputs, labels);
            correct += self
                .model
                .count_correct(self.eval_inputs.slice(ndarray::s![..n, ..]), labels);
        }
        Ok(correct as f64 / test.len() as f64)
    }

    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()> {
        let meta = HashMap::from([
            ("step".to_owned(), step.to_string()),
            ("model".to_owned(), "mlp".to_owned()),
            ("engine".to_owned(), "manual".to_owned()),
        ]);
        save_params(&dir.join(CHECKPOINT), &self.model.parameters(), meta)
    }

    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize> {
        let path = dir.join(CHECKPOINT);
        let checkpoint = load_params(&path)?;
        let step: usize = checkpoint
            .metadata
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{}: no step in the checkpoint's metadata", path.display()))?;
        restore_params(&path, &checkpoint, self.model.parameters())?;
        // SGD keeps no state; the batch order is replayed so the run continues exactly as
        // an uninterrupted one would.
        for _ in 0..step {
            self.sampler.next_batch(self.batch_size);
        }
        Ok(step)
    }
}

/// `dl mlp`
pub fn run(args: &MlpArgs) -> Result<()> {
    let clock = Stopwatch::start();
    let args = &match &args.resume {
        Some(dir) => resumed_args(args, dir)?,
        None => args.clone(),
    };
    args.model.validate()?;
    let steps = args.steps();
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.eval_every == 0 {
        bail!("--eval-every must be at least 1");
    }
    let data = load_cifar10(&args.data)?;
    if args.model.batch_size > data.train.len() {
        bail!(
            "--batch-size {} is larger than the training set ({} images)",
            args.model.batch_size,
            data.train.len()
        );
    }
    let mut trainer = match args.model.engine {
        Engine::Manual => ManualMlpTrainer::new(args, data),
    };
    let (mut run, history) = match &args.resume {
        Some(dir) => {
            let step = trainer.restore_checkpoint(dir)?;
            if step >= steps {
                bail!(
                    "{} already trained {step} steps; ask for more with --steps",
                    dir.display()
                );
            }
            RunFolder::reopen(dir, step)?
        }
        None => (RunFolder::create(args.run.out.as_deref(), "mlp")?, History::default()),
    };
    run.write_config(&MlpArgs {
        steps: Some(steps),
        ..args.clone()
    })?;
    let schedule = Schedule {
        steps,
        eval_every: args.eval_every,
    };
    let history = run_training(&mut trainer, schedule, &mut run, "mlp", history)?;
    let (best_step, best) = history.best_accuracy();
    let wall_s = clock.seconds();
    let summary = json!({
        "experiment": "mlp",
        "engine": args.model.engine,
        "hidden": args.model.hidden,
        "activation": args.model.activation,
        "lr": args.model.lr,
        "batch_size": args.model.batch_size,
        "seed": args.seed,
        "steps": steps,
        "test_accuracy": history.final_accuracy(),
        "best_test_accuracy": best,
        "best_step": best_step,
        "final_train_loss": history.losses.last().map(|l| l.1),
        "wall_s": wall_s,
        "peak_rss_mb": peak_rss_mb(),
        "run_dir": run.dir(),
    });
    let human = format!(
        "mlp ({:?} engine): test accuracy {:.4} after {steps} steps (best {:.4} at step {best_step}), {wall_s:.1} s; run folder {}",
        args.model.engine,
        history.final_accuracy(),
        best,
        run.dir().display()
    );
    report(&human, &summary, args.run.json);
    Ok(())
}

/// The configuration saved in the run folder `dir`, with what may change on resume taken
/// from the command line.
fn resumed_args(cli: &MlpArgs, dir: &Path) -> Result<MlpArgs> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot resume from {}: {e}", path.display()))?;
    let mut saved: MlpArgs = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not an mlp run's configuration: {e}", path.display()))?;
    saved.resume = Some(dir.to_path_buf());
    saved.run.json = cli.run.json;
    saved.run.out = Some(dir.to_path_buf());
    if cli.steps.is_some() {
        saved.steps = cli.steps;
    }
    if cli.data.data != std::path::Path::new(crate::download::DEFAULT_CIFAR10_DIR) {
        saved.data = cli.data.clone();
    }
    Ok(saved)
}
