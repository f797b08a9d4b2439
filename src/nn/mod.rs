//! Conditioner networks: the MLP used by coupling layers.

pub mod mlp;

pub use mlp::{Mlp, MlpConfig};
