//! The numeric core: batch matrices, GEMM, random numbers, training tapes and the Adam optimizer.
//!
//! Everything here is generic over [`Real`] so that the same transform code runs in `f32` for
//! training and sampling and in `f64` for the finite-difference checks in the tests. For `f32`,
//! the products and elementwise maps of the conditioners run on our own kernels ([`kernel`]: GEMM
//! with fused bias/ReLU epilogues, used through [`dense`] and [`gemm`]; [`vmath`]: `exp` and
//! `tanh`), in an AVX-512, AVX2 + FMA or portable variant chosen at run time ([`simd`];
//! `HEPFLOW_SIMD=avx512|avx2|portable` forces one), all three giving bit-identical results.
//! `f64` (the gradient checks) uses `matrixmultiply` and plain loops.

pub mod adam;
pub mod box_muller;
pub mod dense;
pub mod gemm;
pub mod kernel;
pub mod matrix;
pub mod real;
pub mod rng;
pub mod simd;
pub mod tape;
pub mod vmath;

pub use adam::{Adam, AdamConfig};
pub use matrix::Matrix;
pub use real::Real;
pub use rng::Rng;
pub use tape::Tape;
