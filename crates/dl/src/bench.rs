//! `dl bench …`: times the training step alone (forward, backward, update) on synthetic
//! batches of the configured shape, after a warm-up, and reports the median.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use manual::{Mlp, Sgd};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;

use crate::mlp::{Engine, MlpModelArgs};

/// What `dl bench` can time.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// The MLP training step.
    Mlp(BenchMlpArgs),
}

/// Arguments of `dl bench mlp`.
#[derive(Debug, Clone, Args)]
pub struct BenchMlpArgs {
    #[command(flatten)]
    pub model: MlpModelArgs,
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

fn bench_mlp(args: &BenchMlpArgs) -> Result<()> {
    args.model.validate()?;
    args.timing.validate()?;
    let config = args.model.config();
    let batch = args.model.batch_size;
    let mut rng = StdRng::seed_from_u64(args.timing.seed);
    // Mean-subtracted CIFAR-10 pixels have a standard deviation of about 60.
    let pixel = Normal::new(0.0f32, 60.0).expect("valid normal");
    let inputs = Array2::from_shape_simple_fn((batch, config.inputs), || pixel.sample(&mut rng));
    let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..config.classes)).collect();
    let widths: Vec<usize> = std::iter::once(config.inputs)
        .chain(config.hidden.iter().copied())
        .chain(std::iter::once(config.classes))
        .collect();
    let timings = match args.model.engine {
        Engine::Manual => {
            let mut model = Mlp::<f32>::new(config, &mut rng);
            let sgd = Sgd { lr: args.model.lr };
            // The step `dl mlp` runs: forward, backward and the SGD update fused into it.
            time_steps(&args.timing, || {
                model.sgd_step(inputs.view(), &labels, sgd.lr);
            })
        }
    };
    let flops = mlp_step_flops(&widths, batch);
    let summary = json!({
        "bench": "mlp",
        "engine": args.model.engine,
        "hidden": args.model.hidden,
        "activation": args.model.activation,
        "batch_size": batch,
        "steps": args.timing.steps,
        "warmup": args.timing.warmup,
        "step_ms_median": timings.median_ms,
        "step_ms_min": timings.min_ms,
        "examples_per_sec": batch as f64 / (timings.median_ms / 1e3),
        "gflop_per_step": flops / 1e9,
        "gflop_per_sec": flops / 1e9 / (timings.median_ms / 1e3),
    });
    if args.timing.json {
        println!("{summary}");
    } else {
        println!(
            "mlp {:?} step: median {:.3} ms (min {:.3} ms), {:.0} examples/s, {:.1} GFLOP/s",
            args.model.engine,
            timings.median_ms,
            timings.min_ms,
            batch as f64 / (timings.median_ms / 1e3),
            flops / 1e9 / (timings.median_ms / 1e3)
        );
    }
    Ok(())
}

/// `dl bench`
pub fn run(command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Mlp(args) => bench_mlp(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_count_of_the_write_ups_mlp() {
        // 3072-100-10 at batch 200: 0.25 GFLOP, as the issue states.
        let f = mlp_step_flops(&[3072, 100, 10], 200);
        assert!((f / 1e9 - 0.2462).abs() < 1e-3, "{f}");
    }
}
