//! `dl rnn`: recurrent classifiers on synthetic sequence tasks (binary palindromes,
//! Baum–Sweet, random combinations), trained once per seed on fresh batches until their
//! training accuracy has been perfect for a window of steps, then tested on fresh batches;
//! reports mean ± standard deviation over the seeds, as the write-up does.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use burn::optim::AdamConfig;
use burn_models::train::{ClassifierTrainer, predicted_classes, targets_tensor, tokens_tensor};
use burn_models::{RnnKind, SequenceClassifier, SequenceClassifierConfig};
use clap::{Args, ValueEnum};
use data::sequences::{BaumSweet, Palindrome, RandomCombination, SequenceBatches, SequenceTask};
use manual::{Adam, Parameters, RecurrentKind, clip_grad_norm};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{CHECKPOINT, Checkpoint, metadata, save_blobs, save_params};
use crate::mlp::{DeviceArg, Engine};
use crate::plot::draw_curves;
use crate::runner::{
    Evaluation, Experiment, RunArgs, RunFolder, Schedule, StepMetrics, Stopwatch, Trainer, extend, report, summary,
    train_experiment,
};

/// The sequence tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskArg {
    Palindrome,
    BaumSweet,
    RandomComb,
}

impl TaskArg {
    /// The task with parameter `length`.
    pub fn task(self, length: usize) -> Box<dyn SequenceTask> {
        match self {
            TaskArg::Palindrome => Box::new(Palindrome { length }),
            TaskArg::BaumSweet => Box::new(BaumSweet { length }),
            TaskArg::RandomComb => Box::new(RandomCombination { length }),
        }
    }
}

/// The recurrent networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelArg {
    /// The original LSTM (gate products fused).
    Lstm,
    /// The original peephole LSTM.
    Peephole,
    /// burn's GRU.
    Gru,
    /// burn's bidirectional LSTM.
    Bilstm,
}

impl ModelArg {
    fn kind(self) -> RnnKind {
        match self {
            ModelArg::Lstm => RnnKind::Lstm,
            ModelArg::Peephole => RnnKind::Peephole,
            ModelArg::Gru => RnnKind::Gru,
            ModelArg::Bilstm => RnnKind::BiLstm,
        }
    }
}

/// The model, task and optimiser flags, shared by `dl rnn` and `dl bench rnn`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RnnModelArgs {
    /// Sequence task.
    #[arg(long, value_enum, default_value = "palindrome")]
    pub task: TaskArg,
    /// Recurrent network.
    #[arg(long, value_enum, default_value = "lstm")]
    pub model: ModelArg,
    /// The task's parameter L (palindromes: 4L+1 input symbols).
    #[arg(long, default_value_t = 10)]
    pub length: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 64)]
    pub input_dim: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Learning rate (Adam).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Clip the gradients to this global L2 norm.
    #[arg(long, default_value_t = 10.0)]
    pub max_norm: f64,
    /// Device of the burn engine.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Implementation: burn modules and autodiff, or the manual engine's hand-written
    /// backward passes (LSTM and peephole LSTM).
    #[arg(long, value_enum, default_value = "burn")]
    pub engine: Engine,
}

impl RnnModelArgs {
    pub fn validate(&self) -> Result<()> {
        if self.engine == Engine::Manual && !matches!(self.model, ModelArg::Lstm | ModelArg::Peephole) {
            bail!("--engine manual runs --model lstm and --model peephole; use --engine burn for gru and bilstm");
        }
        if self.engine == Engine::Manual && self.device != DeviceArg::Cpu {
            bail!("the manual engine runs on the CPU; --device is for --engine burn");
        }
        if self.length < 2 {
            bail!("--length must be at least 2");
        }
        if self.task == TaskArg::BaumSweet && self.length > 30 {
            bail!("--length must be at most 30 for baum-sweet (numbers of 4L bits)");
        }
        for (name, value) in [
            ("--input-dim", self.input_dim),
            ("--hidden", self.hidden),
            ("--batch-size", self.batch_size),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(self.max_norm.is_finite() && self.max_norm > 0.0) {
            bail!("--max-norm must be a positive number, got {}", self.max_norm);
        }
        Ok(())
    }

    /// The classifier for `task` and Adam with global-norm clipping, on an autodiff
    /// `device`, seeded.
    pub fn trainer(
        &self,
        task: &dyn SequenceTask,
        device: burn::tensor::Device,
        seed: u64,
    ) -> ClassifierTrainer<SequenceClassifier> {
        device.seed(seed);
        let model = SequenceClassifierConfig {
            kind: self.model.kind(),
            vocab: task.vocab(),
            input_dim: self.input_dim,
            hidden: self.hidden,
            classes: task.classes(),
        }
        .init(&device);
        let adam = AdamConfig::new().with_epsilon(1e-8).init();
        ClassifierTrainer::new(model, adam, device).with_max_norm(Some(self.max_norm))
    }

    /// The classifier on the engine `--engine` asks for, seeded.
    pub fn learner(&self, task: &dyn SequenceTask, seed: u64) -> Result<Box<dyn SequenceLearner>> {
        Ok(match self.engine {
            Engine::Burn => Box::new(BurnLearner {
                trainer: self.trainer(task, self.device.device()?.autodiff(), seed),
                steps: task.input_len(),
            }),
            Engine::Manual => {
                let kind = match self.model {
                    ModelArg::Lstm => RecurrentKind::Lstm,
                    ModelArg::Peephole => RecurrentKind::Peephole,
                    other => bail!("the manual engine has no {other:?} model"),
                };
                let mut rng = StdRng::seed_from_u64(seed);
                let model = manual::SequenceClassifier::new(
                    kind,
                    task.vocab(),
                    self.input_dim,
                    self.hidden,
                    task.classes(),
                    &mut rng,
                );
                Box::new(ManualLearner {
                    model,
                    adam: Adam::default(),
                    max_norm: self.max_norm,
                })
            }
        })
    }
}

/// A sequence classifier on either engine, as training and testing need it.
pub trait SequenceLearner {
    /// One step of Adam (with gradient clipping) on `tokens` (`labels.len()` sequences,
    /// one after the other).
    fn step(&mut self, tokens: &[usize], labels: &[usize], lr: f64) -> StepMetrics;
    /// The predicted class of each of `batch` sequences.
    fn predict(&mut self, tokens: &[usize], batch: usize) -> Vec<usize>;
    /// Writes weights and optimiser state to `path` (atomically).
    fn save(&mut self, path: &Path, step: usize) -> Result<()>;
    /// Loads what [`SequenceLearner::save`] wrote; returns its step.
    fn restore(&mut self, path: &Path) -> Result<usize>;
}

/// The burn engine's classifier.
struct BurnLearner {
    trainer: ClassifierTrainer<SequenceClassifier>,
    /// Sequence length.
    steps: usize,
}

impl SequenceLearner for BurnLearner {
    fn step(&mut self, tokens: &[usize], labels: &[usize], lr: f64) -> StepMetrics {
        let device = self.trainer.device().clone();
        let x = tokens_tensor(tokens, [labels.len(), self.steps], &device);
        self.trainer.step(x, targets_tensor(labels, &device), lr).into()
    }

    fn predict(&mut self, tokens: &[usize], batch: usize) -> Vec<usize> {
        let x = tokens_tensor(tokens, [batch, self.steps], &self.trainer.eval_device());
        predicted_classes(self.trainer.eval_model().forward(x))
    }

    fn save(&mut self, path: &Path, step: usize) -> Result<()> {
        let (weights, optimizer) = self.trainer.save().map_err(|e| anyhow!("cannot save the model: {e}"))?;
        save_blobs(
            path,
            &[("weights", &weights), ("optimizer", &optimizer)],
            metadata(step, "rnn", "burn"),
        )
    }

    fn restore(&mut self, path: &Path) -> Result<usize> {
        let checkpoint = Checkpoint::read(path)?;
        checkpoint.expect("rnn", "burn")?;
        self.trainer
            .load(checkpoint.blob("weights")?, checkpoint.blob("optimizer")?)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        checkpoint.step()
    }
}

/// The manual engine's classifier with Adam.
struct ManualLearner {
    model: manual::SequenceClassifier<f32>,
    adam: Adam<f32>,
    max_norm: f64,
}

impl ManualLearner {
    /// The weights and Adam's moments, as checkpoint tensors.
    fn tensors(&mut self) -> Vec<manual::Param<'_, f32>> {
        self.adam.reserve(&mut self.model);
        let names: Vec<String> = self.model.parameters().into_iter().map(|p| p.name).collect();
        let mut tensors = self.model.parameters();
        tensors.extend(self.adam.state(&names));
        tensors
    }
}

impl SequenceLearner for ManualLearner {
    fn step(&mut self, tokens: &[usize], labels: &[usize], lr: f64) -> StepMetrics {
        let (loss, correct) = self.model.forward_backward(tokens, labels);
        clip_grad_norm(&mut self.model, self.max_norm);
        self.adam.step(&mut self.model, lr);
        StepMetrics {
            loss: loss as f64,
            accuracy: Some(correct as f64 / labels.len() as f64),
        }
    }

    fn predict(&mut self, tokens: &[usize], batch: usize) -> Vec<usize> {
        self.model.predict(tokens, batch)
    }

    fn save(&mut self, path: &Path, step: usize) -> Result<()> {
        let mut meta = metadata(step, "rnn", "manual");
        meta.insert("adam_steps".to_owned(), self.adam.steps.to_string());
        save_params(path, &self.tensors(), meta)
    }

    fn restore(&mut self, path: &Path) -> Result<usize> {
        let checkpoint = Checkpoint::read(path)?;
        checkpoint.expect("rnn", "manual")?;
        checkpoint.restore_params(self.tensors())?;
        self.adam.steps = checkpoint
            .meta("adam_steps")?
            .parse()
            .map_err(|e| anyhow!("{}: bad adam_steps: {e}", path.display()))?;
        checkpoint.step()
    }
}

/// Arguments of `dl rnn`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RnnArgs {
    #[command(flatten)]
    pub model: RnnModelArgs,
    /// Training steps at most.
    #[arg(long, default_value_t = 800)]
    pub steps: usize,
    /// Stop once the training accuracy has been 1.0 for this many consecutive steps
    /// (0: never stop early). 200 steps = 51,200 fresh sequences without a mistake: with a
    /// window of 50 or 100, a peephole seed stopped while one test sequence in 2,560 was
    /// still wrong.
    #[arg(long, default_value_t = 200)]
    pub early_stop: usize,
    /// Independent runs, with seeds --seed, --seed + 1, …
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fresh batches the test accuracy is measured on after training.
    #[arg(long, default_value_t = 10)]
    pub test_batches: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

/// One seed's classifier and its streams of training and test batches.
struct RnnTrainer<'a> {
    learner: Box<dyn SequenceLearner>,
    task: &'a dyn SequenceTask,
    train: SequenceBatches<'a>,
    /// Seed of the test batches: fresh sequences, never trained on (with overwhelming
    /// probability; they are drawn from the same distribution).
    test_seed: u64,
    test_batches: usize,
    batch_size: usize,
    lr: f64,
    /// The first test sequences the last evaluation got wrong, described for the report:
    /// an accuracy of 0.9996 says little until one sees which sequence it missed.
    mistakes: Vec<String>,
}

/// How many wrong test sequences a seed's report lists.
const MISTAKES_LISTED: usize = 10;

impl Trainer for RnnTrainer<'_> {
    fn train_step(&mut self, _step: usize) -> Result<StepMetrics> {
        let (tokens, labels) = self.train.next_batch(self.batch_size);
        Ok(self.learner.step(&tokens, &labels, self.lr))
    }

    fn evaluate(&mut self) -> Result<Evaluation> {
        let mut test = SequenceBatches::new(self.task, self.test_seed);
        let mut correct = 0;
        let width = self.task.input_len();
        self.mistakes.clear();
        for _ in 0..self.test_batches {
            let (tokens, labels) = test.next_batch(self.batch_size);
            let predictions = self.learner.predict(&tokens, labels.len());
            for (row, (&predicted, &label)) in predictions.iter().zip(&labels).enumerate() {
                if predicted == label {
                    correct += 1;
                } else if self.mistakes.len() < MISTAKES_LISTED {
                    let sequence = self.task.describe(&tokens[row * width..(row + 1) * width]);
                    self.mistakes
                        .push(format!("{sequence} (label {label}, predicted {predicted})"));
                }
            }
        }
        let accuracy = correct as f64 / (self.test_batches * self.batch_size) as f64;
        Ok(Evaluation::from([("test_accuracy".to_owned(), accuracy)]))
    }

    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()> {
        self.learner.save(&dir.join(CHECKPOINT), step)
    }

    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize> {
        let step = self.learner.restore(&dir.join(CHECKPOINT))?;
        for _ in 0..step {
            self.train.next_batch(self.batch_size);
        }
        Ok(step)
    }
}

/// Mean and (population) standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `dl rnn`
pub fn run(args: &RnnArgs) -> Result<()> {
    let clock = Stopwatch::start();
    args.model.validate()?;
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.test_batches == 0 {
        bail!("--test-batches must be at least 1");
    }
    let schedule = Schedule {
        early_stop: (args.early_stop > 0).then_some(args.early_stop),
        // Evaluate once, after the last step (or when training stops early).
        ..Schedule::new(args.steps, args.steps)
    };
    schedule.validate()?;
    let task = args.model.task.task(args.model.length);
    let top = RunFolder::create(args.run.out.as_deref(), "rnn")?;
    top.write_config(args)?;
    let name = format!(
        "rnn-{}",
        serde_json::to_value(args.model.model)?.as_str().unwrap_or("rnn")
    );
    let mut results = Vec::new();
    let mut mistakes = Vec::new();
    for k in 0..args.seeds {
        let seed = args.seed + k as u64;
        let mut trainer = RnnTrainer {
            learner: args.model.learner(task.as_ref(), seed)?,
            task: task.as_ref(),
            train: SequenceBatches::new(task.as_ref(), seed.wrapping_mul(2).wrapping_add(1)),
            test_seed: seed.wrapping_mul(2).wrapping_add(2) ^ 0x5eed_7e57,
            test_batches: args.test_batches,
            batch_size: args.model.batch_size,
            lr: args.model.lr,
            mistakes: Vec::new(),
        };
        let seed_dir = top.path(&format!("seed-{seed}"));
        let experiment = Experiment {
            name: &name,
            engine: args.model.engine.name(),
            schedule,
            resume: None,
            out: Some(&seed_dir),
        };
        let seed_clock = Stopwatch::start();
        let (_, history) = train_experiment(&experiment, &json!({ "seed": seed }), &mut trainer)?;
        eprintln!(
            "seed {seed}: test accuracy {:.4} after {} steps ({:.1} s)",
            history.final_accuracy(),
            history.steps(),
            seed_clock.seconds()
        );
        for mistake in &trainer.mistakes {
            eprintln!("seed {seed}: wrong on {mistake}");
        }
        mistakes.push(trainer.mistakes);
        results.push((seed, history));
    }

    let accuracies: Vec<f64> = results.iter().map(|(_, h)| h.final_accuracy()).collect();
    let (mean, std) = mean_std(&accuracies);
    let series: Vec<_> = results
        .iter()
        .map(|(seed, h)| h.series(&format!("seed {seed}")).0)
        .collect();
    let title = format!(
        "{} on {} (L = {})",
        name,
        serde_json::to_value(args.model.task)?.as_str().unwrap_or(""),
        args.model.length
    );
    if let Err(e) = draw_curves(&top.path("curves.png"), &title, "training accuracy", &series) {
        eprintln!("warning: could not draw curves.png: {e:#}");
    }
    let experiment = Experiment {
        name: "rnn",
        engine: args.model.engine.name(),
        schedule,
        resume: None,
        out: None,
    };
    let last = &results.last().expect("at least one seed").1;
    let mut summary = summary(&experiment, &top, last, &clock);
    extend(
        &mut summary,
        json!({
            "task": args.model.task,
            "model": args.model.model,
            "length": args.model.length,
            "seeds": results.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "test_accuracy_mean": mean,
            "test_accuracy_std": std,
            "test_accuracies": accuracies,
            "test_mistakes": mistakes,
            "steps_per_seed": results.iter().map(|(_, h)| h.steps()).collect::<Vec<_>>(),
            "lr": args.model.lr,
            "batch_size": args.model.batch_size,
        }),
    );
    if let Some(obj) = summary.as_object_mut() {
        obj.remove("steps");
        obj.remove("final_train_loss");
    }
    let human = format!(
        "{name} on {:?} (L = {}): test accuracy {mean:.4} ± {std:.4} over {} seeds, steps {:?}, {:.1} s; run folder {}",
        args.model.task,
        args.model.length,
        results.len(),
        results.iter().map(|(_, h)| h.steps()).collect::<Vec<_>>(),
        clock.seconds(),
        top.dir().display()
    );
    report(&human, &summary, args.run.json);
    Ok(())
}
