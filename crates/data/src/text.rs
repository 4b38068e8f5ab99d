//! Character corpora for language models: any UTF-8 text, its sorted characters as the
//! vocabulary, the last 5 % held out for validation, and random training windows with
//! next-character targets (teacher forcing).

use std::io::Read;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::DataError;

/// Grimms' Fairy Tales (Project Gutenberg, public domain), the original experiment's corpus,
/// compressed into the binary so that `dl textgen` runs with no download.
const GRIMM_GZ: &[u8] = include_bytes!("../assets/grimms_fairy_tales.txt.gz");

/// Name of the embedded corpus.
pub const GRIMM_NAME: &str = "Grimms' Fairy Tales (embedded)";

/// Share of the text, at its end, held out for validation.
pub const VALIDATION_SHARE: f64 = 0.05;

/// A text split into training and validation characters, encoded by its vocabulary.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The distinct characters, sorted; a character's index is its token.
    pub vocab: Vec<char>,
    /// The first 95 % of the text, as tokens.
    pub train: Vec<usize>,
    /// The last 5 % (at least two characters), as tokens.
    pub valid: Vec<usize>,
}

impl Corpus {
    /// The embedded default corpus.
    pub fn grimm(seq_length: usize) -> Result<Self, DataError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(GRIMM_GZ)
            .read_to_string(&mut text)
            .map_err(|e| DataError::io(GRIMM_NAME, e))?;
        Self::from_text(Path::new(GRIMM_NAME), &text, seq_length)
    }

    /// Reads a UTF-8 text file.
    pub fn read(path: &Path, seq_length: usize) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            DataError::malformed(
                path,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        Self::from_text(path, &text, seq_length)
    }

    /// Builds a corpus from `text` (a leading byte-order mark is dropped); `source` names it in
    /// errors. The training part must hold at least one window of `seq_length` inputs and
    /// their targets.
    pub fn from_text(source: &Path, text: &str, seq_length: usize) -> Result<Self, DataError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let chars: Vec<char> = text.chars().collect();
        if chars.is_empty() {
            return Err(DataError::malformed(source, "the text is empty"));
        }
        if chars.len() < seq_length + 2 {
            return Err(DataError::malformed(
                source,
                format!(
                    "the text has {} characters, shorter than --seq-length {seq_length} + 2",
                    chars.len()
                ),
            ));
        }
        let valid_len = ((chars.len() as f64 * VALIDATION_SHARE).ceil() as usize).max(2);
        if chars.len() - valid_len < seq_length + 1 {
            return Err(DataError::malformed(
                source,
                format!(
                    "the text has {} characters: after holding out the last 5 % ({valid_len}) for validation, \
                     fewer than --seq-length {seq_length} + 1 remain to train on",
                    chars.len()
                ),
            ));
        }
        let mut vocab = chars.clone();
        vocab.sort_unstable();
        vocab.dedup();
        let tokens: Vec<usize> = chars
            .iter()
            .map(|c| vocab.binary_search(c).expect("in vocabulary"))
            .collect();
        let split = tokens.len() - valid_len;
        Ok(Corpus {
            vocab,
            valid: tokens[split..].to_vec(),
            train: tokens[..split].to_vec(),
        })
    }

    /// Tokens of `text`, or the first character outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, char> {
        encode(&self.vocab, text)
    }

    /// The text of `tokens`.
    pub fn decode(&self, tokens: &[usize]) -> String {
        decode(&self.vocab, tokens)
    }
}

/// Tokens of `text` in `vocab` (sorted), or the first character outside it.
pub fn encode(vocab: &[char], text: &str) -> Result<Vec<usize>, char> {
    text.chars().map(|c| vocab.binary_search(&c).map_err(|_| c)).collect()
}

/// The text of `tokens` in `vocab`.
pub fn decode(vocab: &[char], tokens: &[usize]) -> String {
    tokens.iter().map(|&t| vocab[t]).collect()
}

/// Random training windows: `seq_length` input tokens and the `seq_length` tokens that follow
/// each (the input shifted by one), from uniformly drawn starting points.
pub struct TextBatches {
    seq_length: usize,
    rng: StdRng,
}

impl TextBatches {
    /// Windows of `seq_length` drawn with `seed`.
    pub fn new(seq_length: usize, seed: u64) -> Self {
        TextBatches {
            seq_length,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `batch` windows from `tokens`: inputs and targets, each `[batch, seq_length]` row-major.
    pub fn next_batch(&mut self, tokens: &[usize], batch: usize) -> (Vec<usize>, Vec<usize>) {
        let t = self.seq_length;
        assert!(tokens.len() > t, "text shorter than one window");
        let mut inputs = Vec::with_capacity(batch * t);
        let mut targets = Vec::with_capacity(batch * t);
        for _ in 0..batch {
            let start = self.rng.random_range(0..tokens.len() - t);
            inputs.extend_from_slice(&tokens[start..start + t]);
            targets.extend_from_slice(&tokens[start + 1..start + t + 1]);
        }
        (inputs, targets)
    }
}

/// Consecutive windows covering `tokens` for evaluation: `(inputs, targets)` of up to
/// `seq_length` tokens each (the last may be shorter; none is empty).
pub fn windows(tokens: &[usize], seq_length: usize) -> Vec<(&[usize], &[usize])> {
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < tokens.len() {
        let len = seq_length.min(tokens.len() - 1 - start);
        out.push((&tokens[start..start + len], &tokens[start + 1..start + len + 1]));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_split_and_round_trip() {
        let text = "\u{feff}abracadabra, the quick brown fox jumps over the lazy dog";
        let c = Corpus::from_text(Path::new("t"), text, 5).unwrap();
        assert!(!c.vocab.contains(&'\u{feff}'), "the byte-order mark is dropped");
        let mut sorted = c.vocab.clone();
        sorted.sort();
        assert_eq!(c.vocab, sorted);
        let body = &text[3..];
        let n = body.chars().count();
        assert_eq!(c.train.len() + c.valid.len(), n);
        assert_eq!(c.valid.len(), (n as f64 * 0.05).ceil().max(2.0) as usize);
        assert_eq!(c.decode(&[c.train.clone(), c.valid.clone()].concat()), body);
        assert_eq!(c.encode("fox").unwrap().len(), 3);
        assert_eq!(c.encode("foX"), Err('X'));
    }

    #[test]
    fn bad_texts_are_refused() {
        let p = Path::new("t.txt");
        assert!(Corpus::from_text(p, "", 5).unwrap_err().to_string().contains("empty"));
        assert!(
            Corpus::from_text(p, "\u{feff}", 5)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let err = Corpus::from_text(p, "abcdef", 5).unwrap_err().to_string();
        assert!(err.contains("shorter than --seq-length 5 + 2"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.txt");
        std::fs::write(&path, b"caf\xe9 au lait, and more text than a window").unwrap();
        let err = Corpus::read(&path, 5).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        assert!(Corpus::read(&dir.path().join("missing.txt"), 5).is_err());
    }

    #[test]
    fn windows_are_shifted_by_one() {
        let c = Corpus::from_text(Path::new("t"), &"0123456789".repeat(10), 4).unwrap();
        let mut batches = TextBatches::new(4, 3);
        let (x, y) = batches.next_batch(&c.train, 6);
        assert_eq!((x.len(), y.len()), (24, 24));
        for (xw, yw) in x.chunks(4).zip(y.chunks(4)) {
            assert_eq!(&xw[1..], &yw[..3]);
            assert_eq!((xw[3] + 1) % 10, yw[3], "digits follow each other");
        }
        let w = windows(&[1, 2, 3, 4, 5, 6, 7], 3);
        assert_eq!(
            w,
            vec![(&[1, 2, 3][..], &[2, 3, 4][..]), (&[4, 5, 6][..], &[5, 6, 7][..])]
        );
        assert_eq!(windows(&[1, 2], 5), vec![(&[1][..], &[2][..])]);
    }

    #[test]
    fn the_embedded_corpus_is_grimm() {
        let c = Corpus::grimm(30).unwrap();
        assert_eq!(c.vocab.len(), 86);
        assert!(c.train.len() > 500_000);
        assert!(
            c.decode(&c.train[..40])
                .starts_with("The Project Gutenberg EBook of Grimms")
        );
    }
}
