//! The manual engine's classifiers on CIFAR-10 behind the shared training loop (the burn
//! engine's counterpart is [`crate::burn_trainer`]).

use std::path::Path;

use anyhow::{Result, anyhow};
use data::IMAGE_BYTES;
use manual::{Adam, Param, Parameters};
use ndarray::ArrayView2;

use crate::checkpoint::{CHECKPOINT, Checkpoint, metadata, save_params};
use crate::cifar::CifarBatches;
use crate::runner::{Evaluation, StepMetrics, Trainer};

/// A manual-engine model with its optimiser, seen by the training loop.
pub trait ManualClassifier {
    /// The model's name in checkpoints (`mlp`, `cnn`).
    const NAME: &'static str;
    type Model: Parameters<f32>;

    /// One training step on flattened images (forward, backward, update); the mean loss.
    fn step(&mut self, x: ArrayView2<'_, f32>, labels: &[usize], lr: f64) -> f32;

    /// Number of correctly classified images (evaluation mode).
    fn count_correct(&mut self, x: ArrayView2<'_, f32>, labels: &[usize]) -> usize;

    /// The model and its Adam optimiser, when it trains with one.
    fn parts(&mut self) -> (&mut Self::Model, Option<&mut Adam<f32>>);

    /// Weights, BatchNorm statistics and Adam's moments (allocated if no step ran yet):
    /// everything a checkpoint keeps.
    fn tensors(&mut self) -> Vec<Param<'_, f32>> {
        let (model, adam) = self.parts();
        let names: Vec<String> = model.parameters().into_iter().map(|p| p.name).collect();
        match adam {
            Some(adam) => {
                adam.reserve(model);
                let mut tensors = model.tensors();
                tensors.extend(adam.state(&names));
                tensors
            }
            None => model.tensors(),
        }
    }
}

/// A manual-engine classifier with its data.
pub struct ManualCifarTrainer<L> {
    pub learner: L,
    pub lr: f64,
    pub batches: CifarBatches,
    /// Test images per evaluation batch.
    pub eval_batch: usize,
}

impl<L: ManualClassifier> Trainer for ManualCifarTrainer<L> {
    fn train_step(&mut self, _step: usize) -> Result<StepMetrics> {
        let (images, labels) = self.batches.next_train();
        let x = ArrayView2::from_shape((labels.len(), IMAGE_BYTES), images)?;
        Ok((self.learner.step(x, labels, self.lr) as f64).into())
    }

    fn evaluate(&mut self) -> Result<Evaluation> {
        let learner = &mut self.learner;
        let correct = self.batches.sum_over_test(self.eval_batch, |images, labels| {
            let x = ArrayView2::from_shape((labels.len(), IMAGE_BYTES), images)?;
            Ok(learner.count_correct(x, labels))
        })?;
        Ok(Evaluation::from([(
            "test_accuracy".to_owned(),
            correct as f64 / self.batches.test_len() as f64,
        )]))
    }

    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()> {
        let mut meta = metadata(step, L::NAME, "manual");
        if let (_, Some(adam)) = self.learner.parts() {
            meta.insert("adam_steps".to_owned(), adam.steps.to_string());
        }
        save_params(&dir.join(CHECKPOINT), &self.learner.tensors(), meta)
    }

    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize> {
        let checkpoint = Checkpoint::read(&dir.join(CHECKPOINT))?;
        checkpoint.expect(L::NAME, "manual")?;
        let step = checkpoint.step()?;
        checkpoint.restore_params(self.learner.tensors())?;
        if let (_, Some(adam)) = self.learner.parts() {
            adam.steps = checkpoint
                .meta("adam_steps")?
                .parse()
                .map_err(|e| anyhow!("{}: bad adam_steps: {e}", dir.display()))?;
        }
        // The batch order is replayed so the run continues exactly as an uninterrupted one
        // would.
        self.batches.skip(step);
        Ok(step)
    }
}
