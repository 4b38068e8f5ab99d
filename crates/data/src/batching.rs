//! Seeded mini-batches that walk a reshuffled permutation, epoch after epoch.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Draws mini-batches of example indices like the original `DataSet.next_batch`: batches are
/// consecutive slices of a permutation; when a batch would run past the end, the permutation
/// is reshuffled and the batch starts again from its beginning (the tail is dropped).
/// Unlike the original, the first epoch is shuffled too. The same seed gives the same batches.
#[derive(Debug)]
pub struct EpochSampler {
    order: Vec<usize>,
    position: usize,
    epochs_completed: usize,
    rng: StdRng,
}

impl EpochSampler {
    /// A sampler over `0..len` seeded with `seed`.
    pub fn new(len: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(&mut rng);
        EpochSampler {
            order,
            position: 0,
            epochs_completed: 0,
            rng,
        }
    }

    /// The next `batch_size` indices. Panics if `batch_size` is 0 or exceeds the set size;
    /// callers check hyper-parameters against the data first.
    pub fn next_batch(&mut self, batch_size: usize) -> &[usize] {
        assert!(
            batch_size > 0 && batch_size <= self.order.len(),
            "batch size {batch_size} does not fit a set of {}",
            self.order.len()
        );
        if self.position + batch_size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.position = 0;
            self.epochs_completed += 1;
        }
        let batch = &self.order[self.position..self.position + batch_size];
        self.position += batch_size;
        batch
    }

    /// Number of full passes finished so far.
    pub fn epochs_completed(&self) -> usize {
        self.epochs_completed
    }

    /// Number of examples the sampler draws from.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when there is nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_seeds_repeat() {
        let mut a = EpochSampler::new(10, 7);
        let mut b = EpochSampler::new(10, 7);
        let mut first: Vec<usize> = Vec::new();
        for _ in 0..3 {
            let batch = a.next_batch(3).to_vec();
            assert_eq!(batch, b.next_batch(3));
            first.extend(batch);
        }
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 9, "one epoch never repeats an index");
        assert_eq!(a.epochs_completed(), 0);
        a.next_batch(3); // 9 + 3 > 10: reshuffle
        assert_eq!(a.epochs_completed(), 1);
        let mut c = EpochSampler::new(10, 8);
        let differs = (0..5).any(|_| c.next_batch(2) != b.next_batch(2));
        assert!(differs, "another seed gives other batches");
    }
}
