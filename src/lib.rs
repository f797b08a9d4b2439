//! hepflow: normalizing flows for collider events, with a hand-written numeric core.

pub mod engine;
pub mod io;
pub mod nn;
pub mod transforms;
