//! Data for the `dl` experiments: the CIFAR-10 binary layout (reader and downloader),
//! seeded mini-batching, synthetic sequence tasks and character corpora.
//!
//! Nothing here knows about models: images leave this crate as `u8` records or as
//! mean-subtracted `f32` batches written into a caller's buffer.

pub mod batching;
pub mod cifar10;
pub mod download;
mod error;
pub mod sequences;
pub mod text;

pub use batching::EpochSampler;
pub use cifar10::{
    CIFAR10_CLASSES, Cifar10, IMAGE_BYTES, IMAGE_CHANNELS, IMAGE_SIDE, ImageSet, NUM_CLASSES, RECORD_BYTES,
    write_fixture,
};
pub use error::DataError;
