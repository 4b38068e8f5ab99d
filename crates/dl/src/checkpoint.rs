//! Checkpoints: one safetensors file per run folder, written atomically, holding the model's
//! tensors (manual engine: every parameter by name, `f32`; burn engine: burn's own records of
//! weights and optimiser state as byte blobs) and string metadata (step, model, engine).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use manual::Param;
use safetensors::{Dtype, SafeTensors, View};

use crate::runner::write_atomic_with;

/// The checkpoint file in a run folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Something to store: a name, a dtype, a shape and its little-endian bytes.
struct Entry<'a> {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

impl View for &Entry<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Streams the entries into the file (no second copy of the tensors in memory: a CNN
/// checkpoint with its Adam moments is 134 MB).
fn write(path: &Path, entries: Vec<Entry<'_>>, metadata: HashMap<String, String>) -> Result<()> {
    let views = entries.iter().map(|e| (e.name.as_str(), e));
    write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(std::io::Error::other)
    })
}

/// The little-endian bytes of `values`: borrowed where the machine is little-endian.
fn le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Saves `f32` parameters (values only) and `metadata` to `path`.
pub fn save_params(path: &Path, params: &[Param<'_, f32>], metadata: HashMap<String, String>) -> Result<()> {
    let entries = params
        .iter()
        .map(|p| Entry {
            name: p.name.clone(),
            dtype: Dtype::F32,
            shape: p.shape.clone(),
            bytes: le_bytes(p.value),
        })
        .collect();
    write(path, entries, metadata)
}

/// Saves named byte strings (burn's records) and `metadata` to `path`.
pub fn save_blobs(path: &Path, blobs: &[(&str, &[u8])], metadata: HashMap<String, String>) -> Result<()> {
    let entries = blobs
        .iter()
        .map(|(name, bytes)| Entry {
            name: (*name).to_owned(),
            dtype: Dtype::U8,
            shape: vec![bytes.len()],
            bytes: (*bytes).into(),
        })
        .collect();
    write(path, entries, metadata)
}

/// A loaded checkpoint.
pub struct Checkpoint {
    path: std::path::PathBuf,
    tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors checkpoint", path.display()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, (view.dtype(), view.shape().to_vec(), view.data().to_vec())))
            .collect();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// A metadata entry, or an error naming the file.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{}: no {key} in the checkpoint's metadata", self.path.display()))
    }

    /// The step the checkpoint was taken after.
    pub fn step(&self) -> Result<usize> {
        let step = self.meta("step")?;
        step.parse()
            .map_err(|_| anyhow!("{}: step {step:?} is not a number", self.path.display()))
    }

    /// Checks that the checkpoint holds the `model` of the `engine`.
    pub fn expect(&self, model: &str, engine: &str) -> Result<()> {
        let (m, e) = (self.meta("model")?, self.meta("engine")?);
        if (m, e) != (model, engine) {
            bail!(
                "{} holds a {m} model of the {e} engine, not a {model} of the {engine} engine",
                self.path.display()
            );
        }
        Ok(())
    }

    /// A byte string saved with [`save_blobs`].
    pub fn blob(&self, name: &str) -> Result<Vec<u8>> {
        match self.tensors.get(name) {
            Some((Dtype::U8, _, bytes)) => Ok(bytes.clone()),
            _ => bail!("{}: no {name} in the checkpoint", self.path.display()),
        }
    }

    /// Copies the checkpoint's `f32` tensors into `params`, checking names and shapes.
    pub fn restore_params(&self, params: Vec<Param<'_, f32>>) -> Result<()> {
        let path = self.path.display();
        for p in params {
            let Some((dtype, shape, bytes)) = self.tensors.get(&p.name) else {
                bail!("{path}: checkpoint has no tensor {}", p.name);
            };
            if *dtype != Dtype::F32 || *shape != p.shape {
                bail!(
                    "{path}: tensor {} is {dtype:?} {shape:?}, the model wants F32 {:?}",
                    p.name,
                    p.shape
                );
            }
            for (v, c) in p.value.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Ok(())
    }
}

/// Metadata every checkpoint carries.
pub fn metadata(step: usize, model: &str, engine: &str) -> HashMap<String, String> {
    HashMap::from([
        ("step".to_owned(), step.to_string()),
        ("model".to_owned(), model.to_owned()),
        ("engine".to_owned(), engine.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use manual::{Activation, Mlp, MlpConfig, MlpInit, MlpNorm, Parameters};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn parameters_round_trip() {
        let config = MlpConfig {
            inputs: 5,
            hidden: vec![4],
            classes: 3,
            activation: Activation::Relu,
            init: MlpInit::Normal(0.1),
            norm: MlpNorm::None,
        };
        let mut a = Mlp::<f32>::new(config.clone(), &mut StdRng::seed_from_u64(1));
        let mut b = Mlp::<f32>::new(config, &mut StdRng::seed_from_u64(2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        save_params(&path, &a.parameters(), metadata(7, "mlp", "manual")).unwrap();
        let ck = Checkpoint::read(&path).unwrap();
        assert_eq!(ck.step().unwrap(), 7);
        ck.expect("mlp", "manual").unwrap();
        assert!(ck.expect("cnn", "manual").is_err());
        ck.restore_params(b.parameters()).unwrap();
        let wa: Vec<Vec<f32>> = a.parameters().iter().map(|p| p.value.to_vec()).collect();
        let wb: Vec<Vec<f32>> = b.parameters().iter().map(|p| p.value.to_vec()).collect();
        assert_eq!(wa, wb);
    }

    #[test]
    fn blobs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        save_blobs(
            &path,
            &[("weights", b"abc"), ("optimizer", b"")],
            metadata(3, "cnn", "burn"),
        )
        .unwrap();
        let ck = Checkpoint::read(&path).unwrap();
        assert_eq!(ck.blob("weights").unwrap(), b"abc");
        assert_eq!(ck.blob("optimizer").unwrap(), b"");
        assert!(ck.blob("nothing").is_err());
    }
}
