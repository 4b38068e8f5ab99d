//! The burn engine's classifiers on CIFAR-10 behind the shared training loop.

use std::path::Path;

use anyhow::{Result, anyhow};
use burn::prelude::Tensor;
use burn_models::train::{Classifier, ClassifierTrainer, count_correct, float_tensor, targets_tensor};

use crate::checkpoint::{CHECKPOINT, Checkpoint, metadata, save_blobs};
use crate::cifar::CifarBatches;
use crate::runner::{Evaluation, StepMetrics, Trainer};

/// A burn classifier, its optimiser and its data.
pub struct BurnCifarTrainer<M, const D: usize> {
    trainer: ClassifierTrainer<M>,
    batches: CifarBatches,
    lr: f64,
    /// Test images per evaluation batch.
    eval_batch: usize,
    /// The model's name in checkpoints (`mlp`, `cnn`).
    name: &'static str,
    /// The input tensor's shape for a batch of `n` images.
    shape: fn(usize) -> [usize; D],
}

impl<M, const D: usize> BurnCifarTrainer<M, D> {
    pub fn new(
        trainer: ClassifierTrainer<M>,
        batches: CifarBatches,
        lr: f64,
        eval_batch: usize,
        name: &'static str,
        shape: fn(usize) -> [usize; D],
    ) -> Self {
        BurnCifarTrainer {
            trainer,
            batches,
            lr,
            eval_batch,
            name,
            shape,
        }
    }
}

impl<M: Classifier<Input = Tensor<D>>, const D: usize> Trainer for BurnCifarTrainer<M, D> {
    fn train_step(&mut self, _step: usize) -> Result<StepMetrics> {
        let device = self.trainer.device().clone();
        let (images, labels) = self.batches.next_train();
        let x = float_tensor(images.to_vec(), (self.shape)(labels.len()), &device);
        let y = targets_tensor(labels, &device);
        Ok((self.trainer.step(x, y, self.lr).loss as f64).into())
    }

    fn evaluate(&mut self) -> Result<Evaluation> {
        let model = self.trainer.eval_model();
        let device = self.trainer.eval_device();
        let correct = self.batches.sum_over_test(self.eval_batch, |images, labels| {
            let x = float_tensor(images.to_vec(), (self.shape)(labels.len()), &device);
            Ok(count_correct(model.logits(x), labels))
        })?;
        Ok(Evaluation::from([(
            "test_accuracy".to_owned(),
            correct as f64 / self.batches.test_len() as f64,
        )]))
    }

    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()> {
        let (weights, optimizer) = self
            .trainer
            .save()
            .map_err(|e| anyhow!("cannot save the {} model: {e}", self.name))?;
        save_blobs(
            &dir.join(CHECKPOINT),
            &[("weights", &weights), ("optimizer", &optimizer)],
            metadata(step, self.name, "burn"),
        )
    }

    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize> {
        let path = dir.join(CHECKPOINT);
        let checkpoint = Checkpoint::read(&path)?;
        checkpoint.expect(self.name, "burn")?;
        let step = checkpoint.step()?;
        self.trainer
            .load(checkpoint.blob("weights")?, checkpoint.blob("optimizer")?)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        self.batches.skip(step);
        Ok(step)
    }
}
