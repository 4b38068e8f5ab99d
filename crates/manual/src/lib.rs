//! The manual engine: every layer's backward pass derived and written by hand.
//!
//! Each layer is one file holding its `forward` and `backward` side by side, with the
//! derivation in a comment above `backward` (the write-up's index notation). Layers never
//! allocate in the steady state: callers pass the input, output and gradient buffers, and a
//! layer keeps only what its backward pass needs (named, with the reason, in its struct).
//! Backward passes *accumulate* parameter gradients (`+=`), so a parameter used twice just
//! works; the optimiser clears them after each update.
//!
//! Everything is generic over [`Float`]: training runs in `f32`, gradient checks in `f64`.

pub mod activation;
pub mod batch_norm;
pub mod char_lstm;
pub mod cnn;
pub mod conv2d;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod float;
pub mod gradcheck;
pub mod input_projection;
pub mod layer_norm;
pub mod linear;
pub mod lstm;
pub mod matmul;
pub mod max_pool;
pub mod mlp;
pub mod optim;
pub mod param;
pub mod peephole_lstm;
pub mod preact_block;
pub mod sequence_classifier;
pub mod softmax;
pub mod softmax_cross_entropy;
pub mod winograd;

pub use activation::{Activation, Elu, Relu};
pub use batch_norm::BatchNorm;
pub use char_lstm::{CharLstm, CharLstmConfig, CharState};
pub use cnn::{Cnn, CnnConfig};
pub use conv2d::{Conv2d, ConvPath, MapShape, Window};
pub use cross_entropy::CrossEntropy;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use float::Float;
pub use input_projection::{InputProjection, RecurrentInput, RecurrentInputGrad};
pub use layer_norm::LayerNorm;
pub use linear::LinearLayer;
pub use lstm::Lstm;
pub use max_pool::MaxPool2d;
pub use mlp::{Mlp, MlpConfig, MlpInit, MlpNorm};
pub use optim::{Adam, RmsProp, Sgd, clip_grad_norm};
pub use param::{Param, Parameters};
pub use peephole_lstm::PeepholeLstm;
pub use preact_block::PreActBlock;
pub use sequence_classifier::{RecurrentKind, RecurrentLayer, SequenceClassifier};
pub use softmax::Softmax;
pub use softmax_cross_entropy::SoftmaxCrossEntropy;
