//! CIFAR-10 for the experiments: where to find it, and batches as `f32` (mean image
//! subtracted) for any engine.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use data::{Cifar10, EpochSampler, IMAGE_BYTES};
use serde::{Deserialize, Serialize};

use crate::download::{DEFAULT_CIFAR10_DIR, SourceArgs, fetch};

/// Data options shared by the CIFAR-10 experiments.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CifarArgs {
    /// CIFAR-10 folder: cifar-10-batches-bin or the folder holding it.
    #[arg(long = "data", value_name = "DIR", env = "DL_CIFAR10", default_value = DEFAULT_CIFAR10_DIR)]
    pub data: PathBuf,
    /// Fetch CIFAR-10 into --data first if it is not there.
    #[arg(long)]
    pub download: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

impl CifarArgs {
    /// On resume: a data folder given on the command line replaces the saved one (the data
    /// may have moved).
    pub fn adopt(&mut self, cli: &CifarArgs) {
        if cli.data != std::path::Path::new(DEFAULT_CIFAR10_DIR) {
            *self = cli.clone();
        }
    }
}

/// Loads CIFAR-10 as `args` say, fetching it first on `--download`; a missing dataset
/// names the command that fetches it.
pub fn load_cifar10(args: &CifarArgs) -> Result<Cifar10> {
    if Cifar10::locate(&args.data).is_none() {
        if args.download {
            fetch(&args.data, &args.source)?;
        } else {
            bail!(
                "CIFAR-10 not found in {dir}: run `dl download cifar10 --dir {dir}` (or add --download, \
                 or point --data at a cifar-10-batches-bin folder)",
                dir = args.data.display()
            );
        }
    }
    Ok(Cifar10::load(&args.data)?)
}

/// Training batches (seeded, reshuffled every epoch) and test batches, as mean-subtracted
/// `f32` images in channel-major order (flat for MLPs, NCHW for CNNs).
pub struct CifarBatches {
    data: Cifar10,
    /// Per-pixel mean of the training images.
    mean: Vec<f32>,
    sampler: EpochSampler,
    batch_size: usize,
    /// `[batch, 3072]`, reused every step.
    inputs: Vec<f32>,
    labels: Vec<usize>,
}

impl CifarBatches {
    /// Batches of `batch_size` training images in an order drawn from `seed`; fails when the
    /// batch is larger than the training set.
    pub fn new(data: Cifar10, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size > data.train.len() {
            bail!(
                "--batch-size {batch_size} is larger than the training set ({} images)",
                data.train.len()
            );
        }
        Ok(CifarBatches {
            mean: data.train.mean_image(),
            sampler: EpochSampler::new(data.train.len(), seed),
            batch_size,
            inputs: vec![0.0; batch_size * IMAGE_BYTES],
            labels: vec![0; batch_size],
            data,
        })
    }

    /// The next training batch: `batch_size × 3072` values and their labels.
    pub fn next_train(&mut self) -> (&[f32], &[usize]) {
        let indices = self.sampler.next_batch(self.batch_size);
        self.data
            .train
            .fill_batch(indices, &self.mean, &mut self.inputs, &mut self.labels);
        (&self.inputs, &self.labels)
    }

    /// Skips `batches` training batches (to resume a run where it stopped).
    pub fn skip(&mut self, batches: usize) {
        for _ in 0..batches {
            self.sampler.next_batch(self.batch_size);
        }
    }

    /// Number of test images.
    pub fn test_len(&self) -> usize {
        self.data.test.len()
    }

    /// Calls `f(images, labels)` on the test set in order, `size` images at a time (the last
    /// batch may be smaller); returns the sum of what `f` returns.
    pub fn sum_over_test(&self, size: usize, mut f: impl FnMut(&[f32], &[usize]) -> Result<usize>) -> Result<usize> {
        let test = &self.data.test;
        let mut inputs = vec![0.0; size * IMAGE_BYTES];
        let mut labels = vec![0; size];
        let all: Vec<usize> = (0..test.len()).collect();
        let mut total = 0;
        for chunk in all.chunks(size) {
            let n = chunk.len();
            test.fill_batch(chunk, &self.mean, &mut inputs[..n * IMAGE_BYTES], &mut labels[..n]);
            total += f(&inputs[..n * IMAGE_BYTES], &labels[..n])?;
        }
        Ok(total)
    }
}
