//! CIFAR-10 in its official binary layout (`cifar-10-batches-bin/`).
//!
//! Each record is 3073 bytes: one label byte (0–9), then 1024 red, 1024 green and 1024 blue
//! bytes, each plane 32 rows of 32 pixels. Record counts are derived from file sizes, never
//! assumed (the development copy holds 8,000 records per training file, not 10,000).
//! Pixels stay `u8` in memory (50,000 images are 150 MB) and are converted to `f32` one
//! batch at a time by [`ImageSet::fill_batch`].

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::DataError;

/// Side of a CIFAR-10 image in pixels.
pub const IMAGE_SIDE: usize = 32;
/// Colour channels of a CIFAR-10 image.
pub const IMAGE_CHANNELS: usize = 3;
/// Bytes of pixels in one image (channel-major: R plane, G plane, B plane).
pub const IMAGE_BYTES: usize = IMAGE_CHANNELS * IMAGE_SIDE * IMAGE_SIDE;
/// Bytes of one record: the label byte and the pixels.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// The class names in label order, as in `batches.meta.txt`.
pub const CIFAR10_CLASSES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Name of the folder the official archive unpacks to.
pub const FOLDER_NAME: &str = "cifar-10-batches-bin";
/// The training files of the official layout, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file of the official layout.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class-name file of the official layout.
pub const META_FILE: &str = "batches.meta.txt";

/// A set of labelled images, pixels kept as bytes in channel-major (CHW) order.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// `len() × IMAGE_BYTES` bytes, image after image.
    pixels: Vec<u8>,
    /// One label (0–9) per image.
    labels: Vec<u8>,
}

impl ImageSet {
    /// Builds a set from raw pixels (`IMAGE_BYTES` per image) and labels, checking both.
    pub fn new(pixels: Vec<u8>, labels: Vec<u8>) -> Result<Self, String> {
        if pixels.len() != labels.len() * IMAGE_BYTES {
            return Err(format!(
                "{} pixel bytes do not make {} images of {IMAGE_BYTES} bytes",
                pixels.len(),
                labels.len()
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= NUM_CLASSES) {
            return Err(format!("label {l} of image {i} is not a class (0–9)"));
        }
        Ok(ImageSet { pixels, labels })
    }

    /// Parses records in the official binary layout; `path` only names the source in errors.
    pub fn from_records(path: &Path, bytes: &[u8]) -> Result<Self, DataError> {
        let count = record_count(path, bytes.len())?;
        let mut set = ImageSet::with_capacity(count);
        set.read_records(path, bytes, count)?;
        Ok(set)
    }

    /// Reads `.bin` files of the official layout, in order, into one set. The sizes are
    /// checked first and the records are streamed into a buffer of exactly the right size,
    /// so loading never holds more than the images themselves.
    pub fn read(paths: &[PathBuf]) -> Result<Self, DataError> {
        let mut counts = Vec::with_capacity(paths.len());
        for path in paths {
            let len = fs::metadata(path).map_err(|e| DataError::io(path, e))?.len();
            counts.push(record_count(path, len as usize)?);
        }
        let mut set = ImageSet::with_capacity(counts.iter().sum());
        for (path, &count) in paths.iter().zip(&counts) {
            let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
            set.read_records(path, BufReader::with_capacity(1 << 20, file), count)?;
        }
        Ok(set)
    }

    fn with_capacity(images: usize) -> Self {
        ImageSet {
            pixels: Vec::with_capacity(images * IMAGE_BYTES),
            labels: Vec::with_capacity(images),
        }
    }

    /// Appends `count` records read from `reader`, checking each label.
    fn read_records(&mut self, path: &Path, mut reader: impl Read, count: usize) -> Result<(), DataError> {
        let mut record = [0u8; RECORD_BYTES];
        for i in 0..count {
            reader.read_exact(&mut record).map_err(|e| DataError::io(path, e))?;
            let label = record[0];
            if label as usize >= NUM_CLASSES {
                return Err(DataError::malformed(
                    path,
                    format!("record {i} has label byte {label}, expected 0–9"),
                ));
            }
            self.labels.push(label);
            self.pixels.extend_from_slice(&record[1..]);
        }
        Ok(())
    }

    /// Encodes the set in the official binary layout (used to write fixtures).
    pub fn to_records(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * RECORD_BYTES);
        for i in 0..self.len() {
            out.push(self.labels[i]);
            out.extend_from_slice(self.image(i));
        }
        out
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`, channel-major.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The per-pixel mean image (`IMAGE_BYTES` values), the write-up's preprocessing.
    pub fn mean_image(&self) -> Vec<f32> {
        // Sum in u64 per pixel: exact, and the order of images does not matter.
        let mut sums = vec![0u64; IMAGE_BYTES];
        for image in self.pixels.chunks_exact(IMAGE_BYTES) {
            for (s, &p) in sums.iter_mut().zip(image) {
                *s += p as u64;
            }
        }
        let n = self.len().max(1) as f64;
        sums.iter().map(|&s| (s as f64 / n) as f32).collect()
    }

    /// Writes images `indices` minus `mean` into `out` (`indices.len() × IMAGE_BYTES`
    /// values), and their labels into `labels`. The layout is channel-major per image, which
    /// is both the flattened MLP input and NCHW for convolutions.
    pub fn fill_batch(&self, indices: &[usize], mean: &[f32], out: &mut [f32], labels: &mut [usize]) {
        assert_eq!(mean.len(), IMAGE_BYTES, "mean image has the wrong size");
        assert_eq!(
            out.len(),
            indices.len() * IMAGE_BYTES,
            "batch buffer has the wrong size"
        );
        assert_eq!(labels.len(), indices.len(), "label buffer has the wrong size");
        for ((dst, label), &i) in out.chunks_exact_mut(IMAGE_BYTES).zip(labels.iter_mut()).zip(indices) {
            for ((d, &p), &m) in dst.iter_mut().zip(self.image(i)).zip(mean) {
                *d = p as f32 - m;
            }
            *label = self.labels[i] as usize;
        }
    }
}

/// The CIFAR-10 training and test sets with their class names.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    /// The folder the files were read from.
    pub dir: PathBuf,
    /// `data_batch_1.bin` … `data_batch_5.bin`, in order.
    pub train: ImageSet,
    /// `test_batch.bin`.
    pub test: ImageSet,
    /// Class names from `batches.meta.txt`, in label order.
    pub classes: Vec<String>,
}

impl Cifar10 {
    /// Finds the folder holding the binary files: `dir` itself or `dir/cifar-10-batches-bin`.
    pub fn locate(dir: &Path) -> Option<PathBuf> {
        [dir.join(FOLDER_NAME), dir.to_path_buf()]
            .into_iter()
            .find(|d| d.join(META_FILE).is_file() || d.join(TEST_FILE).is_file())
    }

    /// Loads the training set, the test set and the class names from `dir` (the
    /// `cifar-10-batches-bin` folder or the folder holding it).
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        if !dir.is_dir() {
            return Err(DataError::Missing(format!(
                "CIFAR-10 folder {} does not exist",
                dir.display()
            )));
        }
        let root = Self::locate(dir).ok_or_else(|| {
            DataError::Missing(format!(
                "{} holds no CIFAR-10 binary files ({FOLDER_NAME}/{META_FILE}, {TEST_FILE}, …)",
                dir.display()
            ))
        })?;
        let classes = read_meta(&root.join(META_FILE))?;
        let train_paths: Vec<PathBuf> = TRAIN_FILES.iter().map(|name| root.join(name)).collect();
        if let Some(path) = train_paths.iter().find(|p| !p.is_file()) {
            return Err(DataError::Missing(format!("{} is missing", path.display())));
        }
        let train = ImageSet::read(&train_paths)?;
        let test_path = root.join(TEST_FILE);
        if !test_path.is_file() {
            return Err(DataError::Missing(format!("{} is missing", test_path.display())));
        }
        let test = ImageSet::read(&[test_path])?;
        Ok(Cifar10 {
            dir: root,
            train,
            test,
            classes,
        })
    }
}

/// Records in a file of `len` bytes: it must be a non-empty whole number of records.
fn record_count(path: &Path, len: usize) -> Result<usize, DataError> {
    if len == 0 {
        return Err(DataError::malformed(path, "file is empty"));
    }
    if !len.is_multiple_of(RECORD_BYTES) {
        return Err(DataError::malformed(
            path,
            format!("{len} bytes is not a multiple of {RECORD_BYTES} (truncated or not a CIFAR-10 binary file)"),
        ));
    }
    Ok(len / RECORD_BYTES)
}

/// Reads the class names: ten non-empty lines (trailing blank lines are allowed, as in the
/// official file).
fn read_meta(path: &Path) -> Result<Vec<String>, DataError> {
    if !path.is_file() {
        return Err(DataError::Missing(format!("{} is missing", path.display())));
    }
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| DataError::malformed(path, "class names are not UTF-8 text"))?;
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if classes.len() != NUM_CLASSES {
        return Err(DataError::malformed(
            path,
            format!("expected {NUM_CLASSES} class names, found {}", classes.len()),
        ));
    }
    Ok(classes)
}

/// Writes a small CIFAR-10 folder in the official layout: `per_file` training records in
/// each of the five training files and `test` test records, with images produced by
/// `make(index) -> (pixels, label)`. Tests and examples use it to build fixtures.
pub fn write_fixture(
    dir: &Path,
    per_file: usize,
    test: usize,
    mut make: impl FnMut(usize) -> (Vec<u8>, u8),
) -> std::io::Result<PathBuf> {
    let root = dir.join(FOLDER_NAME);
    fs::create_dir_all(&root)?;
    let mut next = 0usize;
    let mut records = |count: usize| {
        let mut out = Vec::with_capacity(count * RECORD_BYTES);
        for _ in 0..count {
            let (pixels, label) = make(next);
            assert_eq!(pixels.len(), IMAGE_BYTES, "fixture image has the wrong size");
            out.push(label);
            out.extend_from_slice(&pixels);
            next += 1;
        }
        out
    };
    for name in TRAIN_FILES {
        fs::write(root.join(name), records(per_file))?;
    }
    fs::write(root.join(TEST_FILE), records(test))?;
    fs::write(root.join(META_FILE), CIFAR10_CLASSES.join("\n") + "\n\n")?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: usize) -> (Vec<u8>, u8) {
        let pixels = (0..IMAGE_BYTES).map(|p| ((p * 7 + seed * 13) % 256) as u8).collect();
        (pixels, (seed % NUM_CLASSES) as u8)
    }

    #[test]
    fn reads_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path(), 3, 4, image).unwrap();
        let data = Cifar10::load(dir.path()).unwrap();
        assert_eq!(data.train.len(), 15);
        assert_eq!(data.test.len(), 4);
        assert_eq!(data.classes, CIFAR10_CLASSES);
        assert_eq!(data.train.image(7), image(7).0.as_slice());
        assert_eq!(data.train.labels()[7], 7);
        assert_eq!(data.test.labels()[0], 5); // test images come after the 15 training images
        // The folder holding cifar-10-batches-bin and the folder itself both work.
        let inner = Cifar10::load(&dir.path().join(FOLDER_NAME)).unwrap();
        assert_eq!(inner.train.len(), 15);
    }

    #[test]
    fn records_round_trip() {
        let (pixels, label) = image(3);
        let set = ImageSet::new(pixels, vec![label]).unwrap();
        let again = ImageSet::from_records(Path::new("x"), &set.to_records()).unwrap();
        assert_eq!(again.image(0), set.image(0));
        assert_eq!(again.labels(), set.labels());
    }

    #[test]
    fn mean_image_and_batches() {
        let set = ImageSet::new([vec![10u8; IMAGE_BYTES], vec![20u8; IMAGE_BYTES]].concat(), vec![1, 2]).unwrap();
        let mean = set.mean_image();
        assert!(mean.iter().all(|&m| m == 15.0));
        let mut out = vec![0.0; 2 * IMAGE_BYTES];
        let mut labels = vec![0; 2];
        set.fill_batch(&[1, 0], &mean, &mut out, &mut labels);
        assert_eq!(labels, [2, 1]);
        assert!(out[..IMAGE_BYTES].iter().all(|&v| v == 5.0));
        assert!(out[IMAGE_BYTES..].iter().all(|&v| v == -5.0));
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("data_batch_1.bin");
        let err = ImageSet::from_records(p, &vec![0u8; RECORD_BYTES * 2 + 5]).unwrap_err();
        assert!(err.to_string().contains("is not a multiple of 3073"), "{err}");
        let mut bad = vec![0u8; RECORD_BYTES * 2];
        bad[RECORD_BYTES] = 10;
        let err = ImageSet::from_records(p, &bad).unwrap_err();
        assert!(err.to_string().contains("record 1 has label byte 10"), "{err}");
        let err = ImageSet::from_records(p, &[]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn rejects_bad_folders() {
        let dir = tempfile::tempdir().unwrap();
        let err = Cifar10::load(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = Cifar10::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("holds no CIFAR-10"), "{err}");

        let root = write_fixture(dir.path(), 1, 1, image).unwrap();
        fs::remove_file(root.join("data_batch_4.bin")).unwrap();
        let err = Cifar10::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("data_batch_4.bin is missing"), "{err}");

        let root = write_fixture(dir.path(), 1, 1, image).unwrap();
        fs::write(root.join(META_FILE), "cat\ndog\n").unwrap();
        let err = Cifar10::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("expected 10 class names, found 2"), "{err}");
        fs::write(root.join(META_FILE), [0xffu8, 0xfe, 0x00]).unwrap();
        let err = Cifar10::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}
