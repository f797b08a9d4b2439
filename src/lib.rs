//! hepflow: normalizing flows for collider events, with a hand-written numeric core.

// Batched numeric kernels index rows and per-row log-dets side by side on purpose.
#![allow(clippy::needless_range_loop)]

pub mod config;
pub mod dataset;
pub mod distributions;
pub mod engine;
pub mod evaluate;
pub mod flow;
pub mod flow_matching;
pub mod fsutil;
pub mod interrupt;
pub mod io;
pub mod model;
pub mod nn;
pub mod pipeline;
pub mod preprocess;
pub mod presets;
pub mod train;
pub mod transforms;

/// The README's code examples, compiled and run as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
