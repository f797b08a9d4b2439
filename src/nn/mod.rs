//! Conditioner networks: the MLP used by coupling layers and the masked MADE used by MAF.

pub mod activation;
pub mod dropout;
pub mod made;
pub mod mlp;

pub use activation::Activation;
pub use made::{Made, MadeConfig};
pub use mlp::{Mlp, MlpConfig};
