//! hepflow: normalizing flows for collider events, with a hand-written numeric core.

pub mod engine;
pub mod evaluate;
pub mod nn;
pub mod preprocess;
pub mod transforms;
pub mod flow;
pub mod train;
pub mod fsutil;
pub mod model;
pub mod presets;
