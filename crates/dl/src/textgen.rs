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
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{CHECKPOINT, Checkpoint, metadata, save_blobs};
use crate::mlp::DeviceArg;
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
        let next = pick(last, temperature, rng);
        out.push(next);
        let (logits, next_state) = model.forward(tokens_tensor(&[next], [1, 1], device), Some(state));
        state = next_state;
        last = logits.reshape([vocab]);
    }
    out
}

/// One token from `logits: [V]` at `temperature`.
fn pick(logits: Tensor<1>, temperature: f64, rng: &mut StdRng) -> usize {
    let values = logits
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 logits");
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
    trainer: ClassifierTrainer<CharLstm>,
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
        let model = self.trainer.eval_model();
        let device = self.trainer.eval_device();
        let mut text = format!("== step {step}\n");
        for temperature in SAMPLE_TEMPERATURES {
            for length in SAMPLE_LENGTHS {
                let first = self.sampler.random_range(0..self.corpus.vocab.len());
                let rest = generate(&model, &[first], length - 1, temperature, &mut self.sampler, &device);
                let sample = self.corpus.decode(&[vec![first], rest].concat());
                text += &format!("T={temperature} len={length}: {sample:?}\n");
            }
        }
        text
    }
}

impl Trainer for TextTrainer {
    fn train_step(&mut self, step: usize) -> Result<StepMetrics> {
        let (b, t) = (self.args.batch_size, self.args.seq_length);
        let (inputs, targets) = self.batches.next_batch(&self.corpus.train, b);
        let device = self.trainer.device().clone();
        let x = tokens_tensor(&inputs, [b, t], &device);
        let y = targets_tensor(&targets, &device);
        Ok(self.trainer.step(x, y, self.args.lr_at(step)).into())
    }

    /// Bits per character and accuracy on the held-out text, read in consecutive windows.
    fn evaluate(&mut self) -> Result<Evaluation> {
        let model = self.trainer.eval_model();
        let device = self.trainer.eval_device();
        let windows = text::windows(&self.corpus.valid, self.args.seq_length);
        let (mut nll, mut correct, mut count) = (0.0f64, 0usize, 0usize);
        // Windows of equal length go together; only the last one may be shorter.
        type Window<'a> = &'a (&'a [usize], &'a [usize]);
        let (full, rest): (Vec<Window<'_>>, Vec<Window<'_>>) =
            windows.iter().partition(|w| w.0.len() == windows[0].0.len());
        for group in full.chunks(EVAL_BATCH).chain(rest.chunks(1)) {
            let (b, t) = (group.len(), group[0].0.len());
            let inputs: Vec<usize> = group.iter().flat_map(|w| w.0.iter().copied()).collect();
            let targets: Vec<usize> = group.iter().flat_map(|w| w.1.iter().copied()).collect();
            let logits = model.forward(tokens_tensor(&inputs, [b, t], &device), None).0;
            let vocab = logits.dims()[2];
            let logp = log_softmax(logits.reshape([b * t, vocab]), 1);
            let picked = logp
                .clone()
                .gather(1, targets_tensor(&targets, &device).reshape([b * t, 1]));
            nll -= picked.sum().into_scalar::<f64>();
            correct += burn_models::train::count_correct(logp, &targets);
            count += b * t;
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
        let (weights, optimizer) = self.trainer.save().map_err(|e| anyhow!("cannot save the model: {e}"))?;
        let mut meta = metadata(step, "textgen", "burn");
        meta.insert("vocab".to_owned(), self.corpus.vocab.iter().collect());
        save_blobs(
            &dir.join(CHECKPOINT),
            &[("weights", &weights), ("optimizer", &optimizer)],
            meta,
        )
    }

    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize> {
        let checkpoint = Checkpoint::read(&dir.join(CHECKPOINT))?;
        checkpoint.expect("textgen", "burn")?;
        let step = checkpoint.step()?;
        let vocab: Vec<char> = checkpoint.meta("vocab")?.chars().collect();
        if vocab != self.corpus.vocab {
            bail!("{}: the checkpoint's vocabulary is not the text's", dir.display());
        }
        self.trainer
            .load(checkpoint.blob("weights")?, checkpoint.blob("optimizer")?)
            .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
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
    let device = args.model.device.device()?.autodiff();
    let corpus = args.model.corpus()?;
    let vocab = corpus.vocab.len();
    let mut trainer = TextTrainer {
        trainer: args.model.trainer(vocab, device, args.seed),
        args: args.model.clone(),
        batches: TextBatches::new(args.model.seq_length, args.seed.wrapping_add(1)),
        sampler: StdRng::seed_from_u64(args.seed.wrapping_add(2)),
        corpus,
        sample_every: args.sample_every,
        steps: schedule.steps,
    };
    let experiment = Experiment {
        name: "textgen",
        engine: "burn",
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
    let model = trainer.trainer.eval_model();
    let device = trainer.trainer.eval_device();
    let first = trainer.sampler.random_range(0..vocab);
    let rest = generate(&model, &[first], 199, 0.5, &mut trainer.sampler, &device);
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
    checkpoint.expect("textgen", "burn")?;
    let vocab: Vec<char> = checkpoint.meta("vocab")?.chars().collect();
    let prompt = text::encode(&vocab, &args.prompt)
        .map_err(|c| anyhow!("the prompt's character {c:?} is not in the model's vocabulary"))?;
    let device = args.device.device()?;
    let model = config.model.model_config(vocab.len()).init(&device);
    let model = load_weights(model, checkpoint.blob("weights")?).map_err(|e| anyhow!("{}: {e}", args.run.display()))?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let continuation = generate(&model, &prompt, args.length, args.temperature, &mut rng, &device);
    Ok(format!("{}{}", args.prompt, text::decode(&vocab, &continuation)))
}

/// `dl generate`
pub fn run_generate(args: &GenerateArgs) -> Result<()> {
    println!("{}", generate_from_run(args)?);
    Ok(())
}
