//! Synthetic sequence-classification tasks, as endless seeded generators of token sequences
//! with one label each: binary palindromes, Baum–Sweet sequences and random combinations.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// One example: input tokens and the class to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<usize>,
    pub label: usize,
}

/// A task: how long its inputs are, how many distinct tokens and classes it has, and how to
/// draw an example.
pub trait SequenceTask {
    /// Input length (every example has exactly this many tokens).
    fn input_len(&self) -> usize;
    /// Number of distinct input tokens (`0..vocab`).
    fn vocab(&self) -> usize;
    /// Number of classes of the output layer.
    fn classes(&self) -> usize;
    /// Draws one example.
    fn sample(&self, rng: &mut StdRng) -> Example;
    /// `tokens` for a person to read: the tokens, space-separated, unless the task knows better.
    fn describe(&self, tokens: &[usize]) -> String {
        tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
    }
}

/// Inputs of the bit tasks (tokens 0 = padding, 1 = bit 0, 2 = bit 1) as their bits, padding
/// left out.
fn describe_bits(tokens: &[usize]) -> String {
    tokens
        .iter()
        .skip_while(|&&t| t == 0)
        .map(|&t| if t == 2 { '1' } else { '0' })
        .collect()
}

/// Binary palindromes with parameter `L`, as the original: `ceil(L/2)` random digits 0–8,
/// each written in binary without leading zeros and concatenated, the string reversed with
/// probability ½, then mirrored into a palindrome (`s + reverse(s)` for even `L`,
/// `s + reverse(s without its last bit)` for odd `L`) and left-padded with −1 to `4L + 2`
/// symbols (more for odd `L` when the palindrome needs it). The inputs are all symbols but the
/// last, shifted by +1 (tokens 0 = padding, 1 = bit 0, 2 = bit 1); the label is the last
/// symbol, which the palindrome guarantees equals its first bit. The output layer has `L`
/// classes, as in the original (`num_classes = L`), of which only 0 and 1 occur.
#[derive(Debug, Clone, Copy)]
pub struct Palindrome {
    pub length: usize,
}

impl Palindrome {
    /// Symbols of a padded sequence (input and label).
    pub fn total_len(&self) -> usize {
        let digits = self.length.div_ceil(2);
        // Each digit 0–8 takes at most four bits.
        let longest = if self.length.is_multiple_of(2) {
            8 * digits
        } else {
            8 * digits - 1
        };
        (4 * self.length + 2).max(longest)
    }

    /// The unpadded palindrome of bits.
    pub fn palindrome(&self, rng: &mut StdRng) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        for _ in 0..self.length.div_ceil(2) {
            let digit: u32 = rng.random_range(0..9);
            let binary = format!("{digit:b}");
            bits.extend(binary.bytes().map(|b| b - b'0'));
        }
        if rng.random_bool(0.5) {
            bits.reverse();
        }
        let keep = if self.length.is_multiple_of(2) {
            bits.len()
        } else {
            bits.len() - 1
        };
        let mirror: Vec<u8> = bits[..keep].iter().rev().copied().collect();
        bits.extend(mirror);
        bits
    }
}

impl SequenceTask for Palindrome {
    fn input_len(&self) -> usize {
        self.total_len() - 1
    }
    fn vocab(&self) -> usize {
        3
    }
    fn classes(&self) -> usize {
        self.length.max(2)
    }
    fn sample(&self, rng: &mut StdRng) -> Example {
        let bits = self.palindrome(rng);
        let total = self.total_len();
        // Left padding (−1, token 0), then the bits shifted by +1.
        let mut symbols = vec![0usize; total - bits.len()];
        symbols.extend(bits.iter().map(|&b| b as usize + 1));
        let label = symbols.pop().expect("a palindrome is not empty") - 1;
        Example { tokens: symbols, label }
    }
    fn describe(&self, tokens: &[usize]) -> String {
        describe_bits(tokens)
    }
}

/// The Baum–Sweet sequence: `b(n) = 1` when the binary form of `n` has no block of
/// consecutive zeros of odd length (and `b(0) = 1`). Inputs are the binary digits of a random
/// number of at most `4L` bits, left-padded to `4L` tokens (0 = padding, 1 = bit 0,
/// 2 = bit 1); the label is `b(n)`.
///
/// Uniformly drawn numbers are almost never Baum–Sweet ones at these lengths, which would
/// make "always 0" a perfect classifier; so the label is drawn first, with probability ½ each,
/// and a number of that class is built block by block: runs of ones and even-length runs of
/// zeros for class 1, with one odd-length run of zeros placed at random for class 0.
#[derive(Debug, Clone, Copy)]
pub struct BaumSweet {
    pub length: usize,
}

/// `b(n)` from the binary digits of `n` (most significant first, no leading zeros).
pub fn baum_sweet(bits: &[u8]) -> usize {
    let mut run = 0;
    for &b in bits.iter().chain(std::iter::once(&1)) {
        if b == 0 {
            run += 1;
        } else {
            if run % 2 == 1 {
                return 0;
            }
            run = 0;
        }
    }
    1
}

impl BaumSweet {
    /// Binary digits (leading 1) of a number of class `label` with at most `max_bits` bits.
    fn number(&self, label: usize, rng: &mut StdRng) -> Vec<u8> {
        let max_bits = 4 * self.length;
        loop {
            let len = rng.random_range(2..=max_bits);
            let mut bits = vec![1u8];
            while bits.len() < len {
                if rng.random_bool(0.5) {
                    bits.push(1);
                } else {
                    // A block of zeros of even length, then a one to close it.
                    let room = len - bits.len();
                    let zeros = 2 * rng.random_range(1..=(room / 2).max(1));
                    bits.extend(std::iter::repeat_n(0, zeros.min(room)));
                    bits.push(1);
                }
            }
            bits.truncate(max_bits);
            if label == 0 {
                // Make one zero block odd: flip a one that follows a one into a zero, or
                // append a single zero.
                let spots: Vec<usize> = (1..bits.len()).filter(|&i| bits[i] == 1 && bits[i - 1] == 1).collect();
                match spots.as_slice() {
                    [] if bits.len() < max_bits => bits.push(0),
                    [] => continue,
                    _ => {
                        let i = spots[rng.random_range(0..spots.len())];
                        bits[i] = 0;
                    }
                }
            }
            if baum_sweet(&bits) == label {
                return bits;
            }
        }
    }
}

impl SequenceTask for BaumSweet {
    fn input_len(&self) -> usize {
        4 * self.length
    }
    fn vocab(&self) -> usize {
        3
    }
    fn classes(&self) -> usize {
        2
    }
    fn sample(&self, rng: &mut StdRng) -> Example {
        let label = rng.random_range(0..2);
        let bits = self.number(label, rng);
        let mut tokens = vec![0usize; self.input_len() - bits.len()];
        tokens.extend(bits.iter().map(|&b| b as usize + 1));
        Example { tokens, label }
    }
    fn describe(&self, tokens: &[usize]) -> String {
        describe_bits(tokens)
    }
}

/// Random combinations: a random permutation of `0..L`; the inputs are its first `L − 1`
/// values and the label is the missing last one.
#[derive(Debug, Clone, Copy)]
pub struct RandomCombination {
    pub length: usize,
}

impl SequenceTask for RandomCombination {
    fn input_len(&self) -> usize {
        self.length - 1
    }
    fn vocab(&self) -> usize {
        self.length
    }
    fn classes(&self) -> usize {
        self.length
    }
    fn sample(&self, rng: &mut StdRng) -> Example {
        let mut values: Vec<usize> = (0..self.length).collect();
        values.shuffle(rng);
        let label = values.pop().expect("length ≥ 2");
        Example { tokens: values, label }
    }
}

/// An endless, seeded stream of batches from a task.
pub struct SequenceBatches<'a> {
    task: &'a dyn SequenceTask,
    rng: StdRng,
}

impl<'a> SequenceBatches<'a> {
    /// A stream seeded with `seed`.
    pub fn new(task: &'a dyn SequenceTask, seed: u64) -> Self {
        SequenceBatches {
            task,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `batch` examples: tokens `[batch, input_len]` row-major, and labels.
    pub fn next_batch(&mut self, batch: usize) -> (Vec<usize>, Vec<usize>) {
        let mut tokens = Vec::with_capacity(batch * self.task.input_len());
        let mut labels = Vec::with_capacity(batch);
        for _ in 0..batch {
            let example = self.task.sample(&mut self.rng);
            debug_assert_eq!(example.tokens.len(), self.task.input_len());
            tokens.extend(example.tokens);
            labels.push(example.label);
        }
        (tokens, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palindromes_are_palindromes_and_labels_are_their_first_bit() {
        for length in [4, 10, 11, 20] {
            let task = Palindrome { length };
            let mut rng = StdRng::seed_from_u64(length as u64);
            let mut labels = [0; 2];
            for _ in 0..500 {
                let Example { tokens, label } = task.sample(&mut rng);
                assert_eq!(tokens.len(), task.input_len());
                assert!(task.input_len() > 4 * length);
                // Strip the padding, put the label back: a palindrome of bits.
                let mut bits: Vec<usize> = tokens.iter().skip_while(|&&t| t == 0).map(|&t| t - 1).collect();
                assert!(bits.iter().all(|&b| b <= 1), "only bits after the padding");
                bits.push(label);
                let reversed: Vec<usize> = bits.iter().rev().copied().collect();
                assert_eq!(bits, reversed, "L = {length}: {bits:?}");
                assert_eq!(label, bits[0]);
                labels[label] += 1;
            }
            assert!(labels[0] > 20 && labels[1] > 20, "both labels occur: {labels:?}");
            assert_eq!(task.classes(), length);
        }
    }

    #[test]
    fn baum_sweet_labels_match_the_definition() {
        // b(n) for n = 0..16, from the OEIS (A086747): 1 1 0 1 1 0 0 1 0 1 0 0 1 0 0 1
        let oeis = [1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1];
        for (n, &want) in oeis.iter().enumerate() {
            let bits: Vec<u8> = if n == 0 {
                vec![]
            } else {
                format!("{n:b}").bytes().map(|b| b - b'0').collect()
            };
            assert_eq!(baum_sweet(&bits), want, "b({n})");
        }
        let task = BaumSweet { length: 10 };
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0; 2];
        for _ in 0..500 {
            let Example { tokens, label } = task.sample(&mut rng);
            assert_eq!(tokens.len(), 40);
            let bits: Vec<u8> = tokens.iter().skip_while(|&&t| t == 0).map(|&t| (t - 1) as u8).collect();
            assert_eq!(bits[0], 1, "no leading zeros");
            assert_eq!(baum_sweet(&bits), label);
            counts[label] += 1;
        }
        assert!(counts[0] > 200 && counts[1] > 200, "balanced: {counts:?}");
    }

    #[test]
    fn random_combinations_miss_exactly_their_label() {
        let task = RandomCombination { length: 10 };
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..100 {
            let Example { tokens, label } = task.sample(&mut rng);
            let mut all = tokens.clone();
            all.push(label);
            all.sort();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn sequences_are_described_in_their_own_terms() {
        assert_eq!(Palindrome { length: 2 }.describe(&[0, 0, 2, 1, 1, 2]), "1001");
        assert_eq!(BaumSweet { length: 2 }.describe(&[0, 2, 1, 1, 2]), "1001");
        // Three values, tokens 0..3 like the bit tasks', but no padding and no bits.
        assert_eq!(RandomCombination { length: 3 }.describe(&[0, 2]), "0 2");
    }

    #[test]
    fn batches_repeat_for_a_seed() {
        let task = Palindrome { length: 6 };
        let a = SequenceBatches::new(&task, 5).next_batch(8);
        let b = SequenceBatches::new(&task, 5).next_batch(8);
        let c = SequenceBatches::new(&task, 6).next_batch(8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.0.len(), 8 * task.input_len());
    }
}
