//! Checkpoints in the safetensors format: every parameter tensor by name, plus string
//! metadata (step, configuration). Written atomically.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use manual::Param;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::runner::write_atomic;

/// Saves `f32` parameters (values only) and `metadata` to `path`.
pub fn save_params(path: &Path, params: &[Param<'_, f32>], metadata: HashMap<String, String>) -> Result<()> {
    let bytes: Vec<Vec<u8>> = params
        .iter()
        .map(|p| p.value.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = params
        .iter()
        .zip(&bytes)
        .map(|(p, b)| Ok((p.name.clone(), TensorView::new(Dtype::F32, p.shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let encoded = safetensors::serialize(views, Some(metadata))?;
    write_atomic(path, &encoded)
}

/// A loaded checkpoint: tensors by name (shape and values) and the metadata.
pub struct Checkpoint {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

/// Reads a checkpoint written by [`save_params`].
pub fn load_params(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors checkpoint", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor {name} is {:?}, expected F32", path.display(), view.dtype());
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(Checkpoint {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Copies a checkpoint's tensors into `params`, checking names and shapes.
pub fn restore_params(path: &Path, checkpoint: &Checkpoint, params: Vec<Param<'_, f32>>) -> Result<()> {
    for p in params {
        let Some((shape, values)) = checkpoint.tensors.get(&p.name) else {
            bail!("{}: checkpoint has no tensor {}", path.display(), p.name);
        };
        if *shape != p.shape {
            bail!(
                "{}: tensor {} has shape {shape:?}, the model wants {:?}",
                path.display(),
                p.name,
                p.shape
            );
        }
        p.value.copy_from_slice(values);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use manual::{Activation, Mlp, MlpConfig, Parameters};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn round_trip() {
        let config = MlpConfig {
            inputs: 5,
            hidden: vec![4],
            classes: 3,
            activation: Activation::Relu,
            init_std: 0.1,
        };
        let mut a = Mlp::<f32>::new(config.clone(), &mut StdRng::seed_from_u64(1));
        let mut b = Mlp::<f32>::new(config, &mut StdRng::seed_from_u64(2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let meta = HashMap::from([("step".to_string(), "7".to_string())]);
        save_params(&path, &a.parameters(), meta).unwrap();
        let ck = load_params(&path).unwrap();
        assert_eq!(ck.metadata["step"], "7");
        restore_params(&path, &ck, b.parameters()).unwrap();
        let wa: Vec<Vec<f32>> = a.parameters().iter().map(|p| p.value.to_vec()).collect();
        let wb: Vec<Vec<f32>> = b.parameters().iter().map(|p| p.value.to_vec()).collect();
        assert_eq!(wa, wb);
    }
}
