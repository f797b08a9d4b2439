//! hepflow: normalizing flows for collider events, with a hand-written numeric core.

pub mod engine;
pub mod evaluate;
pub mod nn;
pub mod transforms;
