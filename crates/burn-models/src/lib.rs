//! The burn engine: the write-up's PyTorch models on `burn` 0.22 (runtime devices: `flex` on
//! the CPU, `wgpu` behind the `gpu` feature).

pub mod cnn;
pub mod layer_norm;
pub mod mlp;
pub mod rnn;
pub mod train;

pub use cnn::Cnn;
pub use layer_norm::{LayerNorm, LayerNormOps, layer_norm, layer_norm_composed};
pub use mlp::{Activation, Mlp, MlpConfig, Norm};
pub use rnn::{CharLstm, CharLstmConfig, RnnKind, SequenceClassifier, SequenceClassifierConfig};
