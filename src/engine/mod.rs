//! The numeric core: batch matrices, GEMM, random numbers, training tapes and the Adam optimizer.
//!
//! Everything here is generic over [`Real`] so that the same transform code runs in `f32` for
//! training and sampling and in `f64` for the finite-difference checks in the tests. For `f32` on
//! CPUs with AVX-512, the products and elementwise maps of the conditioners run on our own kernels
//! ([`kernel`]: GEMM with fused bias/ReLU epilogues, used through [`dense`] and [`gemm`];
//! [`vmath`]: `exp` and `tanh`); everywhere else the same calls fall back to `matrixmultiply` and
//! plain loops, which the tests also cover (`HEPFLOW_NO_AVX512=1` forces that path).

pub mod adam;
pub mod dense;
pub mod gemm;
pub mod kernel;
pub mod matrix;
pub mod real;
pub mod rng;
pub mod tape;
pub mod vmath;

pub use adam::{Adam, AdamConfig};
pub use matrix::Matrix;
pub use real::Real;
pub use rng::Rng;
pub use tape::Tape;
