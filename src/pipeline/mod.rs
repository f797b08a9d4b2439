//! End-to-end jobs built from the library's parts: train a model from a table (with
//! preprocessing, validation split, checkpoints and history) and stream samples to a file.
//! The CLI and the demo are thin shells over these functions.

pub mod sample;
pub mod train;

pub use sample::{SampleJob, SampleSummary, Shard, sample_to_file};
pub use train::{TrainJob, TrainSummary, train_model};

/// 64-bit FNV-1a checksum of a byte stream (data checksums in model metadata).
pub fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}
