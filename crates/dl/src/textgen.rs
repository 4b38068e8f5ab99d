//! `dl textgen` trains the character-level LSTM on a text (by default Grimms' Fairy Tales,
//! embedded), writing samples as it goes; `dl generate` continues a prompt with a trained run.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::optim::RmsPropConfig;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn_models::rnn::LstmState;
use burn_models::train::{ClassifierTrainer, load_weights, targets_tensor, tokens_tensor};
use burn_models::{CharLstm, CharLstmConfig};
use clap::Args;
use data::text::{self, Corpus, TextBatches};
use manual::{Parameters, RmsProp, clip_grad_norm};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{CHECKPOINT, Checkpoint, metadata, save_blobs, save_params};
use crate::mlp::{DeviceArg, Engine};
use crate::runner::{
    Evaluation, Experiment, ResumableArgs, RunArgs, Schedule, StepMetrics, Stopwatch, Trainer, adopt_run_flags, extend,
    report, resolve_args, saved_config, summary, train_experiment,
};

/// The model, data and optimiser flags, shared by `dl textgen` and `dl bench textgen`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TextModelArgs {
    /// UTF-8 text to learn [default: Grimms' Fairy Tales, embedded].
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Characters per training window.
    #[arg(long, default_value_t = 30)]
    pub seq_length: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 64)]
    pub embedding: usize,
    /// Units per LSTM layer.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// LSTM layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Keep probability of the dropout between layers.
    #[arg(long, default_value_t = 0.8)]
    pub keep_prob: f64,
    /// Learning rate (RMSprop).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Multiply the learning rate by this every --lr-step steps.
    #[arg(long, default_value_t = 0.96)]
    pub lr_decay: f64,
    /// Steps between learning-rate decays.
    #[arg(long, default_value_t = 5000)]
    pub lr_step: usize,
    /// Clip the gradients to this global L2 norm.
    #[arg(long, default_value_t = 5.0)]
    pub max_norm: f64,
    /// Device of the burn engine.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Implementation: burn modules and autodiff, or the manual engine's hand-written
    /// backward passes.
    #[arg(long, value_enum, default_value = "burn")]
    pub engine: Engine,
}

impl TextModelArgs {
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("--seq-length", self.seq_length),
            ("--batch-size", self.batch_size),
            ("--embedding", self.embedding),
            ("--hidden", self.hidden),
            ("--layers", self.layers),
            ("--lr-step", self.lr_step),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if self.engine == Engine::Manual && self.device != DeviceArg::Cpu {
            bail!("the manual engine runs on the CPU; --device is for --engine burn");
        }
        if !(self.keep_prob > 0.0 && self.keep_prob <= 1.0) {
            bail!("--keep-prob must be in (0, 1], got {}", self.keep_prob);
        }
        for (name, value) in [
            ("--lr", self.lr),
            ("--lr-decay", self.lr_decay),
            ("--max-norm", self.max_norm),
        ] {
            if !(value.is_finite() && value > 0.0) {
                bail!("{name} must be a positive number, got {value}");
            }
        }
        Ok(())
    }

    /// The corpus: `--text`, or the embedded one.
    pub fn corpus(&self) -> Result<Corpus> {
        Ok(match &self.text {
            Some(path) => Corpus::read(path, self.seq_length)?,
            None => Corpus::grimm(self.seq_length)?,
        })
    }

    /// The model for a vocabulary of `vocab` characters.
    pub fn model_config(&self, vocab: usize) -> CharLstmConfig {
        CharLstmConfig {
            vocab,
            embedding: self.embedding,
            hidden: self.hidden,
            layers: self.layers,
            dropout: 1.0 - self.keep_prob,
        }
    }

    /// The model and RMSprop (PyTorch's defaults: no momentum, ε = 1e-8) with global-norm
    /// clipping, on an autodiff `device`, seeded.
    pub fn trainer(&self, vocab: usize, device: Device, seed: u64) -> ClassifierTrainer<CharLstm> {
        device.seed(seed);
        let model = self.model_config(vocab).init(&device);
        let rmsprop = RmsPropConfig::new().with_momentum(0.0).with_epsilon(1e-8).init();
        ClassifierTrainer::new(model, rmsprop, device).with_max_norm(Some(self.max_norm))
    }

    /// The learning rate at `step` (1-based): decayed by `lr_decay` every `lr_step` steps.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.lr * self.lr_decay.powi(((step - 1) / self.lr_step) as i32)
    }

    /// The manual engine's model for a vocabulary of `vocab` characters, seeded.
    fn manual_model(&self, vocab: usize, seed: u64) -> manual::CharLstm<f32> {
        let config = manual::CharLstmConfig {
            vocab,
            embedding: self.embedding,
            hidden: self.hidden,
            layers: self.layers,
            keep_prob: self.keep_prob,
        };
        manual::CharLstm::new(&config, &mut StdRng::seed_from_u64(seed))
    }

    /// The model on the engine `--engine` asks for, with RMSprop and clipping, seeded.
    pub fn learner(&self, vocab: usize, seed: u64) -> Result<Box<dyn TextLearner>> {
        Ok(match self.engine {
            Engine::Burn => Box::new(BurnTextLearner {
                trainer: self.trainer(vocab, self.device.device()?.autodiff(), seed),
            }),
            Engine::Manual => Box::new(ManualTextLearner {
                model: self.manual_model(vocab, seed),
                optimizer: RmsProp::default(),
                max_norm: self.max_norm,
                dropout_seed: seed.wrapping_add(3),
            }),
        })
    }
}

/// The character model on either engine, as training, evaluation and sampling need it.
/// Tokens come window after window (`batch` windows of equal length).
pub trait TextLearner {
    /// Training step `step` (1-based): one RMSprop update (with clipping) at learning rate
    /// `lr`.
    fn step(&mut self, step: usize, inputs: &[usize], targets: &[usize], batch: usize, lr: f64) -> StepMetrics;
    /// Summed negative log-likelihood (nats) and correct next characters, dropout off.
    fn evaluate(&mut self, inputs: &[usize], targets: &[usize], batch: usize) -> (f64, usize);
    /// `length` characters after `prompt` (see [`generate`]).
    fn generate(&mut self, prompt: &[usize], length: usize, temperature: f64, rng: &mut StdRng) -> Vec<usize>;
    /// Writes weights and optimiser state to `path` (atomically), with the vocabulary.
    fn save(&mut self, path: &Path, step: usize, vocab: &[char]) -> Result<()>;
    /// Loads what [`TextLearner::save`] wrote (its vocabulary checked by the caller).
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()>;
}

/// The burn engine's character model.
struct BurnTextLearner {
    trainer: ClassifierTrainer<CharLstm>,
}

impl TextLearner for BurnTextLearner {
    fn step(&mut self, _step: usize, inputs: &[usize], targets: &[usize], batch: usize, lr: f64) -> StepMetrics {
        let device = self.trainer.device().clone();
        let x = tokens_tensor(inputs, [batch, inputs.len() / batch], &device);
        self.trainer.step(x, targets_tensor(targets, &device), lr).into()
    }

    fn evaluate(&mut self, inputs: &[usize], targets: &[usize], batch: usize) -> (f64, usize) {
        let (model, device) = (self.trainer.eval_model(), self.trainer.eval_device());
        let t = inputs.len() / batch;
        let logits = model.forward(tokens_tensor(inputs, [batch, t], &device), None).0;
        let vocab = logits.dims()[2];
        let logp = log_softmax(logits.reshape([batch * t, vocab]), 1);
        let picked = logp
            .clone()
            .gather(1, targets_tensor(targets, &device).reshape([batch * t, 1]));
        let nll = -picked.sum().into_scalar::<f64>();
        (nll, burn_models::train::count_correct(logp, targets))
    }

    fn generate(&mut self, prompt: &[usize], length: usize, temperature: f64, rng: &mut StdRng) -> Vec<usize> {
        generate(
            &self.trainer.eval_model(),
            prompt,
            length,
            temperature,
            rng,
            &self.trainer.eval_device(),
        )
    }

    fn save(&mut self, path: &Path, step: usize, vocab: &[char]) -> Result<()> {
        let (weights, optimizer) = self.trainer.save().map_err(|e| anyhow!("cannot save the model: {e}"))?;
        let mut meta = metadata(step, "textgen", "burn");
        meta.insert("vocab".to_owned(), vocab.iter().collect());
        save_blobs(path, &[("weights", &weights), ("optimizer", &optimizer)], meta)
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        checkpoint.expect("textgen", "burn")?;
        self.trainer
            .load(checkpoint.blob("weights")?, checkpoint.blob("optimizer")?)
            .map_err(|e| anyhow!("{e}"))
    }
}

/// The manual engine's character model with RMSprop.
struct ManualTextLearner {
    model: manual::CharLstm<f32>,
    optimizer: RmsProp<f32>,
    max_norm: f64,
    /// Seed of the dropout masks.
    dropout_seed: u64,
}

impl ManualTextLearner {
    /// The weights and the optimiser's averages, as checkpoint tensors.
    fn tensors(&mut self) -> Vec<manual::Param<'_, f32>> {
        self.optimizer.reserve(&mut self.model);
        let names: Vec<String> = self.model.parameters().into_iter().map(|p| p.name).collect();
        let mut tensors = self.model.parameters();
        tensors.extend(self.optimizer.state(&names));
        tensors
    }
}

impl TextLearner for ManualTextLearner {
    fn step(&mut self, step: usize, inputs: &[usize], targets: &[usize], batch: usize, lr: f64) -> StepMetrics {
        // Each step's dropout masks come from a generator seeded by the run's seed and the
        // step: a resumed run draws the masks an uninterrupted one would have drawn.
        let mut rng = StdRng::seed_from_u64(self.dropout_seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (loss, correct) = self.model.forward_backward(inputs, targets, batch, &mut rng);
        clip_grad_norm(&mut self.model, self.max_norm);
        self.optimizer.step(&mut self.model, lr);
        StepMetrics {
            loss: loss as f64,
            accuracy: Some(correct as f64 / targets.len() as f64),
        }
    }

    fn evaluate(&mut self, inputs: &[usize], targets: &[usize], batch: usize) -> (f64, usize) {
        self.model.evaluate(inputs, targets, batch)
    }

    fn generate(&mut self, prompt: &[usize], length: usize, temperature: f64, rng: &mut StdRng) -> Vec<usize> {
        generate_manual(&mut self.model, prompt, length, temperature, rng)
    }

    fn save(&mut self, path: &Path, step: usize, vocab: &[char]) -> Result<()> {
        let mut meta = metadata(step, "textgen", "manual");
        meta.insert("vocab".to_owned(), vocab.iter().collect());
        save_params(path, &self.tensors(), meta)
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        checkpoint.expect("textgen", "manual")?;
        checkpoint.restore_params(self.tensors())
    }
}

/// [`generate`] on the manual engine.
pub fn generate_manual(
    model: &mut manual::CharLstm<f32>,
    prompt: &[usize],
    length: usize,
    temperature: f64,
    rng: &mut StdRng,
) -> Vec<usize> {
    assert!(!prompt.is_empty(), "generation starts from at least one character");
    let mut state = None;
    let mut last = model.next_logits(prompt, &mut state);
    let mut out = Vec::with_capacity(length);
    for _ in 0..length {
        let next = pick(&last, temperature, rng);
        out.push(next);
        last = model.next_logits(&[next], &mut state);
    }
    out
}

/// Arguments of `dl textgen`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TextgenArgs {
    #[command(flatten)]
    pub model: TextModelArgs,
    /// Training steps [default: 33600, the write-up's; with --resume, the resumed run's].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Measure the validation loss (bits per character) every this many steps.
    #[arg(long, default_value_t = 1000)]
    pub eval_every: usize,
    /// Write samples to samples.txt every this many steps (and after the last).
    #[arg(long, default_value_t = 1000)]
    pub sample_every: usize,
    /// Seed of the weights, the windows and the samples.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub run: RunArgs,
    /// Continue the run in this folder from its last checkpoint (only --steps and --json may
    /// change).
    #[arg(long, value_name = "RUN")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
}

/// The temperatures and lengths of the samples written during training, as the original.
const SAMPLE_TEMPERATURES: [f64; 4] = [0.0, 0.5, 1.0, 2.0];
const SAMPLE_LENGTHS: [usize; 3] = [30, 40, 60];

/// Windows per validation batch.
const EVAL_BATCH: usize = 256;

/// Samples `length` characters after `prompt` (token ids) with `model` on `device`:
/// greedy at temperature 0, else from `softmax(logits / temperature)`.
pub fn generate(
    model: &CharLstm,
    prompt: &[usize],
    length: usize,
    temperature: f64,
    rng: &mut StdRng,
    device: &Device,
) -> Vec<usize> {
    assert!(!prompt.is_empty(), "generation starts from at least one character");
    let (logits, mut state): (Tensor<3>, Vec<LstmState>) =
        model.forward(tokens_tensor(prompt, [1, prompt.len()], device), None);
    let vocab = logits.dims()[2];
    let mut last = logits
        .slice([0..1, prompt.len() - 1..prompt.len(), 0..vocab])
        .reshape([vocab]);
    let mut out = Vec::with_capacity(length);
    for _ in 0..length {
        let next = pick(&values(last), temperature, rng);
        out.push(next);
        let (logits, next_state) = model.forward(tokens_tensor(&[next], [1, 1], device), Some(state));
        state = next_state;
        last = logits.reshape([vocab]);
    }
    out
}

fn values(logits: Tensor<1>) -> Vec<f64> {
    logits
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 logits")
}

/// One token from `values` (logits `[V]`) at `temperature`.
fn pick(values: &[f64], temperature: f64, rng: &mut StdRng) -> usize {
    if temperature <= 0.0 {
        return values
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > values[best] { i } else { best });
    }
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = values.iter().map(|v| ((v - max) / temperature).exp()).collect();
    let mut r = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return i;
        }
    }
    weights.len() - 1
}

/// The character model with its corpus, windows and sampler.
struct TextTrainer {
    learner: Box<dyn TextLearner>,
    args: TextModelArgs,
    corpus: Corpus,
    batches: TextBatches,
    /// Draws the samples' first characters and their characters.
    sampler: StdRng,
    sample_every: usize,
    steps: usize,
}

impl TextTrainer {
    /// Samples at every temperature and length, as text.
    fn samples(&mut self, step: usize) -> String {
        let mut text = format!("== step {step}\n");
        for temperature in SAMPLE_TEMPERATURES {
            for length in SAMPLE_LENGTHS {
                let first = self.sampler.random_range(0..self.corpus.vocab.len());
                let rest = self
                    .learner
                    .generate(&[first], length - 1, temperature, &mut self.sampler);
                let sample = self.corpus.decode(&[vec![first], rest].concat());
                text += &format!("T={temperature} len={length}: {sample:?}\n");
            }
        }
        text
    }
}

impl Trainer for TextTrainer {
    fn train_step(&mut self, step: usize) -> Result<StepMetrics> {
        let b = self.args.batch_size;
        let (inputs, targets) = self.batches.next_batch(&self.corpus.train, b);
        Ok(self.learner.step(step, &inputs, &targets, b, self.args.lr_at(step)))
    }

    /// Bits per character and accuracy on the held-out text, read in consecutive windows.
    fn evaluate(&mut self) -> Result<Evaluation> {
        let windows = text::windows(&self.corpus.valid, self.args.seq_length);
        let (mut nll, mut correct, mut count) = (0.0f64, 0usize, 0usize);
        // Windows of equal length go together; only the last one may be shorter.
        type Window<'a> = &'a (&'a [usize], &'a [usize]);
        let (full, rest): (Vec<Window<'_>>, Vec<Window<'_>>) =
            windows.iter().partition(|w| w.0.len() == windows[0].0.len());
        for group in full.chunks(EVAL_BATCH).chain(rest.chunks(1)) {
            let inputs: Vec<usize> = group.iter().flat_map(|w| w.0.iter().copied()).collect();
            let targets: Vec<usize> = group.iter().flat_map(|w| w.1.iter().copied()).collect();
            let (group_nll, group_correct) = self.learner.evaluate(&inputs, &targets, group.len());
            nll += group_nll;
            correct += group_correct;
            count += inputs.len();
        }
        Ok(Evaluation::from([
            (
                "valid_bits_per_char".to_owned(),
                nll / count as f64 / std::f64::consts::LN_2,
            ),
            ("valid_accuracy".to_owned(), correct as f64 / count as f64),
        ]))
    }

    fn after_step(&mut self, step: usize, dir: &Path) -> Result<()> {
        if step.is_multiple_of(self.sample_every) || step == self.steps {
            let text = self.samples(step);
            let path = dir.join("samples.txt");
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.write_all(text.as_bytes())?;
        }
        Ok(())
    }

    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()> {
        self.learner.save(&dir.join(CHECKPOINT), step, &self.corpus.vocab)
    }

    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize> {
        let checkpoint = Checkpoint::read(&dir.join(CHECKPOINT))?;
        let step = checkpoint.step()?;
        let vocab: Vec<char> = checkpoint.meta("vocab")?.chars().collect();
        if vocab != self.corpus.vocab {
            bail!("{}: the checkpoint's vocabulary is not the text's", dir.display());
        }
        self.learner
            .restore(&checkpoint)
            .map_err(|e| anyhow!("{}: {e:#}", dir.display()))?;
        for _ in 0..step {
            self.batches.next_batch(&self.corpus.train, self.args.batch_size);
        }
        Ok(step)
    }
}

impl ResumableArgs for TextgenArgs {
    const EXPERIMENT: &'static str = "textgen";
    fn resume_dir(&self) -> Option<&Path> {
        self.resume.as_deref()
    }
    fn adopt(&mut self, cli: &Self, dir: &Path) {
        adopt_run_flags(
            (&mut self.steps, &mut self.run, &mut self.resume),
            (cli.steps, &cli.run),
            dir,
        );
    }
}

/// `dl textgen`
pub fn run(args: &TextgenArgs) -> Result<()> {
    let clock = Stopwatch::start();
    let args = &resolve_args(args)?;
    args.model.validate()?;
    if args.sample_every == 0 {
        bail!("--sample-every must be at least 1");
    }
    let schedule = Schedule::new(args.steps.unwrap_or(33_600), args.eval_every);
    schedule.validate()?;
    let corpus = args.model.corpus()?;
    let vocab = corpus.vocab.len();
    let mut trainer = TextTrainer {
        learner: args.model.learner(vocab, args.seed)?,
        args: args.model.clone(),
        batches: TextBatches::new(args.model.seq_length, args.seed.wrapping_add(1)),
        sampler: StdRng::seed_from_u64(args.seed.wrapping_add(2)),
        corpus,
        sample_every: args.sample_every,
        steps: schedule.steps,
    };
    let experiment = Experiment {
        name: "textgen",
        engine: args.model.engine.name(),
        schedule,
        resume: args.resume.as_deref(),
        out: args.run.out.as_deref(),
    };
    let config = TextgenArgs {
        steps: Some(schedule.steps),
        ..args.clone()
    };
    let (run, history) = train_experiment(&experiment, &config, &mut trainer)?;
    // A closing sample at temperature 0.5, also printed.
    let first = trainer.sampler.random_range(0..vocab);
    let rest = trainer.learner.generate(&[first], 199, 0.5, &mut trainer.sampler);
    let sample = trainer.corpus.decode(&[vec![first], rest].concat());
    let train_accuracy = history.train_accuracies.last().map(|a| a.1);
    // The mean of the last 100 steps' accuracies: a single batch's is noisy.
    let tail: Vec<f64> = history.train_accuracies.iter().rev().take(100).map(|a| a.1).collect();
    let train_accuracy_mean = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    let mut summary = summary(&experiment, &run, &history, &clock);
    extend(
        &mut summary,
        json!({
            "train_accuracy": train_accuracy,
            "train_accuracy_last100": train_accuracy_mean,
            "valid_bits_per_char": history.final_eval("valid_bits_per_char"),
            "valid_accuracy": history.final_eval("valid_accuracy"),
            "vocab": vocab,
            "sample": sample,
        }),
    );
    let human = format!(
        "textgen: training accuracy {train_accuracy_mean:.4} (mean of the last {} steps), validation {:.3} bits/char after {} steps, {:.1} s; run folder {}\n\nsample (temperature 0.5):\n{sample}",
        tail.len(),
        history.final_eval("valid_bits_per_char").unwrap_or(f64::NAN),
        history.steps(),
        clock.seconds(),
        run.dir().display()
    );
    report(&human, &summary, args.run.json);
    Ok(())
}

/// Arguments of `dl generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// A `dl textgen` run folder.
    pub run: PathBuf,
    /// Text to continue (every character must be in the model's vocabulary).
    #[arg(long, default_value = "Once upon a time")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    pub length: usize,
    /// Sampling temperature (0: always the most likely character).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device of the burn engine.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

/// Generates from a trained run: the prompt and its continuation, as one string.
pub fn generate_from_run(args: &GenerateArgs) -> Result<String> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature must be a number ≥ 0, got {}", args.temperature);
    }
    if args.prompt.is_empty() {
        bail!("--prompt must not be empty");
    }
    let config: TextgenArgs = saved_config(&args.run, "textgen")?;
    let checkpoint = Checkpoint::read(&args.run.join(CHECKPOINT))?;
    let vocab: Vec<char> = checkpoint.meta("vocab")?.chars().collect();
    let prompt = text::encode(&vocab, &args.prompt)
        .map_err(|c| anyhow!("the prompt's character {c:?} is not in the model's vocabulary"))?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let continuation = match config.model.engine {
        Engine::Burn => {
            checkpoint.expect("textgen", "burn")?;
            let device = args.device.device()?;
            let model = config.model.model_config(vocab.len()).init(&device);
            let model =
                load_weights(model, checkpoint.blob("weights")?).map_err(|e| anyhow!("{}: {e}", args.run.display()))?;
            generate(&model, &prompt, args.length, args.temperature, &mut rng, &device)
        }
        Engine::Manual => {
            checkpoint.expect("textgen", "manual")?;
            let mut model = config.model.manual_model(vocab.len(), 0);
            checkpoint.restore_params(model.parameters())?;
            generate_manual(&mut model, &prompt, args.length, args.temperature, &mut rng)
        }
    };
    Ok(format!("{}{}", args.prompt, text::decode(&vocab, &continuation)))
}

/// `dl generate`
pub fn run_generate(args: &GenerateArgs) -> Result<()> {
    println!("{}", generate_from_run(args)?);
    Ok(())
}
