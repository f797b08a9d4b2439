//! Per-worker scratch memory that a transform fills in its training forward pass and reads back in
//! its backward pass. Buffers are reused from step to step, so a training step stops allocating
//! after the first one.

use super::{Matrix, Real};

/// Intermediate results of one transform's training forward pass on one sub-batch.
///
/// Slot `i` of `mats` and child tape `i` have a meaning private to the transform that uses them.
#[derive(Clone, Debug, Default)]
pub struct Tape<T> {
    /// Matrices saved for the backward pass.
    pub mats: Vec<Matrix<T>>,
    /// Nested tapes (e.g. for a conditioner network inside a coupling layer).
    pub children: Vec<Tape<T>>,
    /// Seed of the step's random choices (dropout masks), set by the training engine so that
    /// training stays reproducible and resumable.
    pub seed: u64,
    /// Column indices an evaluation pass builds per call (reused, so warm passes allocate
    /// nothing).
    pub cols: Vec<usize>,
}

impl<T: Real> Tape<T> {
    /// Matrix slot `i`, reshaped to `rows x cols` (contents unspecified), created on first use.
    pub fn mat(&mut self, i: usize, rows: usize, cols: usize) -> &mut Matrix<T> {
        while self.mats.len() <= i {
            self.mats.push(Matrix::zeros(0, 0));
        }
        let m = &mut self.mats[i];
        m.resize(rows, cols);
        m
    }

    /// Child tape `i`, created on first use.
    pub fn child(&mut self, i: usize) -> &mut Tape<T> {
        while self.children.len() <= i {
            self.children.push(Tape::default());
        }
        &mut self.children[i]
    }
}
