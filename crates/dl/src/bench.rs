//! `dl bench …`: times the training step alone (forward, backward, update) on synthetic
//! batches of the configured shape, after a warm-up, and reports the median.

use std::time::Instant;

use anyhow::{Result, bail};
use burn_models::train::{Classifier, ClassifierTrainer, float_tensor, targets_tensor};
use clap::{Args, Subcommand};
use data::sequences::SequenceBatches;
use data::text::TextBatches;
use data::{IMAGE_BYTES, NUM_CLASSES};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;

use crate::cnn::{CnnModelArgs, nchw};
use crate::manual_trainer::ManualClassifier;
use crate::mlp::{Engine, MlpModelArgs};
use crate::rnn::{ModelArg, RnnModelArgs};
use crate::textgen::TextModelArgs;

/// What `dl bench` can time.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// The MLP training step.
    Mlp(BenchMlpArgs),
    /// The residual CNN's training step (Adam).
    Cnn(BenchCnnArgs),
    /// A recurrent classifier's training step on a sequence task (Adam).
    Rnn(BenchRnnArgs),
    /// The character model's training step (RMSprop).
    Textgen(BenchTextArgs),
}

/// Arguments of `dl bench rnn`.
#[derive(Debug, Clone, Args)]
pub struct BenchRnnArgs {
    #[command(flatten)]
    pub model: RnnModelArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Arguments of `dl bench textgen`.
#[derive(Debug, Clone, Args)]
pub struct BenchTextArgs {
    #[command(flatten)]
    pub model: TextModelArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Arguments of `dl bench mlp`.
#[derive(Debug, Clone, Args)]
pub struct BenchMlpArgs {
    #[command(flatten)]
    pub model: MlpModelArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Arguments of `dl bench cnn`.
#[derive(Debug, Clone, Args)]
pub struct BenchCnnArgs {
    #[command(flatten)]
    pub model: CnnModelArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// How many steps to time.
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// Timed steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Untimed steps first (caches, allocator, thread pool).
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Seed of the weights and the synthetic batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON line instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

impl TimingArgs {
    fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        Ok(())
    }
}

/// Step times in milliseconds: median and minimum.
struct Timings {
    median_ms: f64,
    min_ms: f64,
}

/// Runs `warmup` untimed then `steps` timed calls of `step`.
fn time_steps(timing: &TimingArgs, mut step: impl FnMut()) -> Timings {
    for _ in 0..timing.warmup {
        step();
    }
    let mut ms: Vec<f64> = (0..timing.steps)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Timings {
        median_ms: ms[ms.len() / 2],
        min_ms: ms[0],
    }
}

/// Prints the result: one JSON line, or a sentence.
fn report(
    name: &str,
    engine: &str,
    batch: usize,
    timing: &TimingArgs,
    t: &Timings,
    flops: f64,
    extra: serde_json::Value,
) {
    let examples_per_sec = batch as f64 / (t.median_ms / 1e3);
    let gflop_per_sec = flops / 1e9 / (t.median_ms / 1e3);
    let mut summary = json!({
        "bench": name,
        "engine": engine,
        "batch_size": batch,
        "steps": timing.steps,
        "warmup": timing.warmup,
        "step_ms_median": t.median_ms,
        "step_ms_min": t.min_ms,
        "examples_per_sec": examples_per_sec,
        "gflop_per_step": flops / 1e9,
        "gflop_per_sec": gflop_per_sec,
    });
    if let (Some(s), serde_json::Value::Object(extra)) = (summary.as_object_mut(), extra) {
        s.extend(extra);
    }
    if timing.json {
        println!("{summary}");
    } else {
        println!(
            "{name} ({engine} engine) step: median {:.3} ms (min {:.3} ms), {examples_per_sec:.0} examples/s, \
             {gflop_per_sec:.1} GFLOP/s",
            t.median_ms, t.min_ms
        );
    }
}

/// Synthetic mean-subtracted images (standard deviation about 60, like CIFAR-10's) and
/// uniformly drawn labels.
fn synthetic_batch(rng: &mut StdRng, batch: usize) -> (Vec<f32>, Vec<usize>) {
    let pixel = Normal::new(0.0f32, 60.0).expect("valid normal");
    let images = (0..batch * IMAGE_BYTES).map(|_| pixel.sample(rng)).collect();
    let labels = (0..batch).map(|_| rng.random_range(0..NUM_CLASSES)).collect();
    (images, labels)
}

/// Times a manual-engine classifier's training step on one synthetic batch of flattened
/// images.
fn time_manual(
    mut learner: impl ManualClassifier,
    images: Vec<f32>,
    labels: &[usize],
    lr: f64,
    timing: &TimingArgs,
) -> Result<Timings> {
    let inputs = Array2::from_shape_vec((labels.len(), IMAGE_BYTES), images)?;
    Ok(time_steps(timing, || {
        learner.step(inputs.view(), labels, lr);
    }))
}

/// Times a burn classifier's step on one synthetic batch.
fn time_burn<M: Classifier<Input = burn::prelude::Tensor<D>>, const D: usize>(
    mut trainer: ClassifierTrainer<M>,
    images: Vec<f32>,
    labels: &[usize],
    shape: [usize; D],
    lr: f64,
    timing: &TimingArgs,
) -> Timings {
    let device = trainer.device().clone();
    time_steps(timing, || {
        // Building the batch tensors is part of every training step.
        let x = float_tensor(images.clone(), shape, &device);
        let y = targets_tensor(labels, &device);
        trainer.step(x, y, lr);
    })
}

/// Matrix-product FLOPs of one MLP training step (PyTorch's count: forward products, weight
/// gradients, and input gradients of every layer but the first).
fn mlp_step_flops(widths: &[usize], batch: usize) -> f64 {
    widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let product = 2.0 * (batch * w[0] * w[1]) as f64;
            if i == 0 { 2.0 * product } else { 3.0 * product }
        })
        .sum()
}

/// FLOPs of one training step of the CNN per image: 3 × the forward pass's convolution and
/// linear products (forward, input gradient, weight gradient), minus the stem's input
/// gradient. 59.4 GFLOP at batch 32, PyTorch's count.
fn cnn_step_flops(batch: usize) -> f64 {
    // (in, out, kernel, side) of every convolution, then the linear layer.
    let mut convs = vec![(3, 64, 3, 32), (64, 64, 3, 32), (64, 128, 1, 32)];
    for (c, side) in [(128, 16), (256, 8), (512, 4), (512, 2)] {
        convs.extend([(c, c, 3, side), (c, c, 3, side)]);
        if c != 512 {
            convs.push((c, 2 * c, 1, side));
        }
    }
    let forward: Vec<f64> = convs
        .iter()
        .map(|&(cin, cout, k, side)| 2.0 * (cin * cout * k * k * side * side) as f64)
        .collect();
    let stem_input_grad = forward[0];
    let total: f64 = forward.iter().sum::<f64>() * 3.0 - stem_input_grad + 3.0 * 2.0 * (512 * 10) as f64;
    total * batch as f64
}

fn bench_mlp(args: &BenchMlpArgs) -> Result<()> {
    args.model.validate()?;
    args.timing.validate()?;
    let batch = args.model.batch_size;
    let mut rng = StdRng::seed_from_u64(args.timing.seed);
    let (images, labels) = synthetic_batch(&mut rng, batch);
    let widths: Vec<usize> = std::iter::once(IMAGE_BYTES)
        .chain(args.model.hidden.iter().copied())
        .chain(std::iter::once(NUM_CLASSES))
        .collect();
    let timings = match args.model.engine {
        // The step `dl mlp` runs: forward, backward and the update (SGD's fused into the
        // backward pass).
        Engine::Manual => time_manual(
            args.model.manual_learner(args.timing.seed),
            images,
            &labels,
            args.model.lr,
            &args.timing,
        )?,
        Engine::Burn => {
            let device = args.model.device.device()?.autodiff();
            let trainer = args.model.burn_trainer(device, args.timing.seed);
            time_burn(
                trainer,
                images,
                &labels,
                [batch, IMAGE_BYTES],
                args.model.lr,
                &args.timing,
            )
        }
    };
    let extra = json!({
        "hidden": args.model.hidden,
        "activation": args.model.activation,
        "norm": args.model.norm,
        "optimizer": args.model.optimizer,
    });
    report(
        "mlp",
        args.model.engine.name(),
        batch,
        &args.timing,
        &timings,
        mlp_step_flops(&widths, batch),
        extra,
    );
    Ok(())
}

fn bench_cnn(args: &BenchCnnArgs) -> Result<()> {
    args.model.validate()?;
    args.timing.validate()?;
    let batch = args.model.batch_size;
    let mut rng = StdRng::seed_from_u64(args.timing.seed);
    let (images, labels) = synthetic_batch(&mut rng, batch);
    let timings = match args.model.engine {
        Engine::Manual => time_manual(
            args.model.manual_learner(args.timing.seed),
            images,
            &labels,
            args.model.lr,
            &args.timing,
        )?,
        Engine::Burn => {
            let device = args.model.device.device()?.autodiff();
            let trainer = args.model.trainer(device, args.timing.seed);
            time_burn(trainer, images, &labels, nchw(batch), args.model.lr, &args.timing)
        }
    };
    let extra = json!({ "optimizer": "adam", "device": args.model.device });
    report(
        "cnn",
        args.model.engine.name(),
        batch,
        &args.timing,
        &timings,
        cnn_step_flops(batch),
        extra,
    );
    Ok(())
}

/// Matrix-product FLOPs of one training step of an LSTM layer over `steps` steps: per step
/// the input product `[B, D]·[D, G]` and the recurrent product `[B, H]·[H, R]`, forward and
/// both gradients (3×).
fn lstm_flops(batch: usize, steps: usize, inputs: usize, hidden: usize, gates_x: usize, gates_r: usize) -> f64 {
    3.0 * 2.0 * (batch * steps * (inputs * gates_x + hidden * gates_r)) as f64
}

fn bench_rnn(args: &BenchRnnArgs) -> Result<()> {
    args.model.validate()?;
    args.timing.validate()?;
    let task = args.model.task.task(args.model.length);
    let batch = args.model.batch_size;
    let (tokens, labels) = SequenceBatches::new(task.as_ref(), args.timing.seed).next_batch(batch);
    let mut learner = args.model.learner(task.as_ref(), args.timing.seed)?;
    let t = task.input_len();
    let timings = time_steps(&args.timing, || {
        learner.step(&tokens, &labels, args.model.lr);
    });
    let (d, h) = (args.model.input_dim, args.model.hidden);
    let flops = match args.model.model {
        ModelArg::Lstm => lstm_flops(batch, t, d, h, 4 * h, 4 * h),
        ModelArg::Peephole => lstm_flops(batch, t, d, h, 4 * h, 3 * h),
        ModelArg::Gru => lstm_flops(batch, t, d, h, 3 * h, 3 * h),
        ModelArg::Bilstm => 2.0 * lstm_flops(batch, t, d, h, 4 * h, 4 * h),
    };
    let extra = json!({
        "model": args.model.model,
        "task": args.model.task,
        "length": args.model.length,
        "sequence_length": t,
        "hidden": h,
        "input_dim": d,
    });
    report(
        "rnn",
        args.model.engine.name(),
        batch,
        &args.timing,
        &timings,
        flops,
        extra,
    );
    Ok(())
}

fn bench_textgen(args: &BenchTextArgs) -> Result<()> {
    args.model.validate()?;
    args.timing.validate()?;
    let corpus = args.model.corpus()?;
    let (b, t) = (args.model.batch_size, args.model.seq_length);
    let (inputs, targets) = TextBatches::new(t, args.timing.seed).next_batch(&corpus.train, b);
    let vocab = corpus.vocab.len();
    let mut learner = args.model.learner(vocab, args.timing.seed)?;
    let timings = time_steps(&args.timing, || {
        learner.step(1, &inputs, &targets, b, args.model.lr);
    });
    let (e, h) = (args.model.embedding, args.model.hidden);
    let layers: f64 = (0..args.model.layers)
        .map(|l| lstm_flops(b, t, if l == 0 { e } else { h }, h, 4 * h, 4 * h))
        .sum();
    let flops = layers + 3.0 * 2.0 * (b * t * h * vocab) as f64;
    let extra = json!({ "seq_length": t, "hidden": h, "layers": args.model.layers, "vocab": vocab });
    report(
        "textgen",
        args.model.engine.name(),
        b,
        &args.timing,
        &timings,
        flops,
        extra,
    );
    Ok(())
}

/// `dl bench`
pub fn run(command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Mlp(args) => bench_mlp(args),
        BenchCommand::Cnn(args) => bench_cnn(args),
        BenchCommand::Rnn(args) => bench_rnn(args),
        BenchCommand::Textgen(args) => bench_textgen(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_counts_match_the_issues() {
        // 3072-100-10 at batch 200: 0.25 GFLOP; BN-MLP 3072-200-200-10: 0.54 GFLOP.
        let f = mlp_step_flops(&[3072, 100, 10], 200);
        assert!((f / 1e9 - 0.2462).abs() < 1e-3, "{f}");
        let f = mlp_step_flops(&[3072, 200, 200, 10], 200);
        assert!((f / 1e9 - 0.54).abs() < 0.01, "{f}");
        // The CNN at batch 32: 59.4 GFLOP.
        let f = cnn_step_flops(32);
        assert!((f / 1e9 - 59.4).abs() < 0.6, "{}", f / 1e9);
        // The LSTM at L = 10 (41 steps), batch 256, hidden 256, input 64: 20.5 GFLOP.
        let f = lstm_flops(256, 41, 64, 256, 1024, 1024);
        assert!((f / 1e9 - 20.5).abs() < 0.2, "{}", f / 1e9);
    }
}
