//! A dense row-major batch matrix: one event per row, one feature per column.

use super::Real;

/// Row-major `rows x cols` matrix. Row `i` is event `i` of a batch.
///
/// Storage allocated by [`Matrix::zeros`] and [`Matrix::resize`] starts on a 64-byte boundary
/// (a cache line, one AVX-512 vector): the GEMM kernel reads the activations of a
/// feature-major pass in place, and a row of 64 floats that starts mid-line makes every vector
/// load straddle two lines (measured: the kernel 7-10 % slower on such operands).
#[derive(Clone, Debug, Default)]
pub struct Matrix<T> {
    rows: usize,
    cols: usize,
    /// Index in `data` of the first value (the padding that aligns it).
    off: usize,
    /// The `rows * cols` values from `off` on are the matrix; anything after them is spare
    /// storage kept from a larger earlier shape, so that a reused buffer never needs re-zeroing.
    data: Vec<T>,
}

impl<T: PartialEq> PartialEq for Matrix<T> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
            && self.cols == other.cols
            && self.data[self.off..self.off + self.rows * self.cols]
                == other.data[other.off..other.off + other.rows * other.cols]
    }
}

/// Bytes of the alignment of [`Matrix`] storage.
const ALIGN: usize = 64;

/// Zeroed storage for `len` values whose value at the returned index starts on an [`ALIGN`]
/// boundary.
fn aligned_zeros<T: Real>(len: usize) -> (Vec<T>, usize) {
    let pad = ALIGN / std::mem::size_of::<T>().max(1);
    let data = vec![T::zero(); len + pad];
    let off = data.as_ptr().align_offset(ALIGN);
    // `align_offset` may decline (usize::MAX); the storage is then used unaligned.
    (data, if off < pad { off } else { 0 })
}

/// `rows * cols`, panicking with a message (never wrapping) when it overflows `usize`.
fn len_of(rows: usize, cols: usize) -> usize {
    rows.checked_mul(cols)
        .unwrap_or_else(|| panic!("matrix size {rows} x {cols} overflows usize"))
}

impl<T: Real> Matrix<T> {
    /// A `rows x cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let (data, off) = aligned_zeros(len_of(rows, cols));
        Self {
            rows,
            cols,
            off,
            data,
        }
    }

    /// Wraps a row-major vector; `None` when `data.len() != rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<T>) -> Option<Self> {
        (rows.checked_mul(cols) == Some(data.len())).then_some(Self {
            rows,
            cols,
            off: 0,
            data,
        })
    }

    /// Builds a matrix from `f(row, col)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut data = Vec::with_capacity(len_of(rows, cols));
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Self {
            rows,
            cols,
            off: 0,
            data,
        }
    }

    /// Number of rows (events).
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (features).
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major data.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        &self.data[self.off..self.off + self.rows * self.cols]
    }

    /// Mutable row-major data.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data[self.off..self.off + self.rows * self.cols]
    }

    /// Consumes the matrix into its row-major data.
    pub fn into_vec(mut self) -> Vec<T> {
        self.data.truncate(self.off + self.rows * self.cols);
        self.data.drain(..self.off);
        self.data
    }

    /// Row `i`; panics when `i >= rows` (the storage may hold spare rows beyond the shape,
    /// which must never be returned).
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        // In range: i < rows, so (i + 1) * cols <= rows * cols, which was computed checked.
        &self.as_slice()[i * self.cols..(i + 1) * self.cols]
    }

    /// Mutable row `i`; panics when `i >= rows`.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        let c = self.cols;
        &mut self.as_mut_slice()[i * c..(i + 1) * c]
    }

    /// Element `(i, j)`; panics when it lies outside the matrix.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> T {
        assert!(
            i < self.rows && j < self.cols,
            "element ({i}, {j}) of a {} x {} matrix",
            self.rows,
            self.cols
        );
        self.as_slice()[i * self.cols + j]
    }

    /// Sets element `(i, j)`; panics when it lies outside the matrix.
    #[inline]
    pub fn set(&mut self, i: usize, j: usize, v: T) {
        assert!(
            i < self.rows && j < self.cols,
            "element ({i}, {j}) of a {} x {} matrix",
            self.rows,
            self.cols
        );
        let c = self.cols;
        self.as_mut_slice()[i * c + j] = v;
    }

    /// Reshapes to `rows x cols`, reusing the storage; contents are unspecified afterwards
    /// (callers overwrite them). Storage only grows (to new aligned, zero-filled storage when
    /// it does), so a reused buffer stops allocating and writing zeros after its largest shape.
    pub fn resize(&mut self, rows: usize, cols: usize) {
        let len = len_of(rows, cols);
        self.rows = rows;
        self.cols = cols;
        if self.data.len() < self.off + len {
            (self.data, self.off) = aligned_zeros(len);
        }
    }

    /// Reshapes like [`Matrix::resize`] and fills with zeros.
    pub fn resize_zeroed(&mut self, rows: usize, cols: usize) {
        self.resize(rows, cols);
        self.as_mut_slice().fill(T::zero());
    }

    /// Copies `other` into `self`, reusing the storage.
    pub fn copy_from(&mut self, other: &Matrix<T>) {
        self.resize(other.rows, other.cols);
        self.as_mut_slice().copy_from_slice(other.as_slice());
    }

    /// Copies rows `start..end` of `src` into `self` (reusing the storage) and returns `self`;
    /// panics unless `start <= end <= src.rows()`.
    pub fn copy_rows_from(&mut self, src: &Matrix<T>, start: usize, end: usize) -> &Matrix<T> {
        let w = src.cols;
        self.resize(end - start, w);
        self.as_mut_slice()
            .copy_from_slice(&src.as_slice()[start * w..end * w]);
        self
    }

    /// The rows of `parts`, one matrix after the other; panics unless every part has the width
    /// of the first (an empty list gives a 0 x 0 matrix).
    pub fn stack_rows(parts: &[&Matrix<T>]) -> Matrix<T> {
        let cols = parts.first().map_or(0, |p| p.cols);
        assert!(
            parts.iter().all(|p| p.cols == cols),
            "parts of different widths"
        );
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut data = Vec::with_capacity(len_of(rows, cols));
        for p in parts {
            data.extend_from_slice(p.as_slice());
        }
        Matrix {
            rows,
            cols,
            off: 0,
            data,
        }
    }

    /// Rows `start..end` as a new matrix; panics unless `start <= end <= rows`.
    pub fn slice_rows(&self, start: usize, end: usize) -> Matrix<T> {
        assert!(
            start <= end && end <= self.rows,
            "rows {start}..{end} of a {}-row matrix",
            self.rows
        );
        Matrix {
            rows: end - start,
            cols: self.cols,
            off: 0,
            data: self.as_slice()[start * self.cols..end * self.cols].to_vec(),
        }
    }

    /// Writes the transpose (`cols x rows`) into `out`, reusing its storage.
    pub fn transpose_into(&self, out: &mut Matrix<T>) {
        out.resize(self.cols, self.rows);
        transpose(self.as_slice(), self.rows, self.cols, out.as_mut_slice());
    }

    /// Converts every element to another scalar type.
    pub fn cast<U: Real>(&self) -> Matrix<U> {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            off: 0,
            data: self
                .as_slice()
                .iter()
                .map(|v| U::c(v.to_f64().unwrap_or(f64::NAN)))
                .collect(),
        }
    }

    /// Largest absolute element-wise difference to `other` (same shape assumed).
    pub fn max_abs_diff(&self, other: &Matrix<T>) -> T {
        self.as_slice()
            .iter()
            .zip(other.as_slice())
            .map(|(a, b)| (*a - *b).abs())
            .fold(T::zero(), T::max)
    }

    /// True when every element is finite.
    pub fn all_finite(&self) -> bool {
        self.as_slice().iter().all(|v| v.is_finite())
    }
}

/// Writes the transpose of the row-major `rows x cols` matrix `src` into `dst` (`cols x rows`),
/// row by row of `dst`: contiguous writes, strided reads.
pub fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    let len = len_of(rows, cols);
    assert!(src.len() >= len && dst.len() >= len);
    for (j, row) in dst.chunks_exact_mut(rows.max(1)).take(cols).enumerate() {
        for (i, v) in row.iter_mut().enumerate() {
            *v = src[i * cols + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage from `zeros` and a growing `resize` starts on a 64-byte boundary; the padding
    /// is invisible to every accessor, to equality and to `into_vec`.
    #[test]
    fn allocated_storage_is_aligned_and_the_padding_invisible() {
        fn check<T: Real + std::fmt::Debug>() {
            let mut m = Matrix::<T>::zeros(3, 5);
            assert_eq!(m.as_slice().as_ptr() as usize % ALIGN, 0);
            for rows in [7, 64, 300] {
                m.resize(rows, 9);
                assert_eq!(m.as_slice().as_ptr() as usize % ALIGN, 0, "{rows} rows");
                assert_eq!(m.as_slice().len(), rows * 9);
            }
            m.resize(2, 3);
            for i in 0..2 {
                for j in 0..3 {
                    m.set(i, j, T::c((3 * i + j) as f64));
                }
            }
            let plain = Matrix::from_vec(2, 3, (0..6).map(|v| T::c(v as f64)).collect());
            assert_eq!(Some(&m), plain.as_ref());
            assert_eq!(m.row(1), &[T::c(3.0), T::c(4.0), T::c(5.0)]);
            assert_eq!(
                m.clone().into_vec(),
                plain.map(Matrix::into_vec).unwrap_or_default()
            );
        }
        check::<f32>();
        check::<f64>();
    }

    /// Accessors never reach the spare storage a shrunk matrix keeps.
    #[test]
    fn accessors_are_bounded_by_the_shape_not_the_storage() {
        let mut m = Matrix::<f32>::zeros(4, 3);
        m.resize(2, 3);
        assert_eq!(m.row(1).len(), 3);
        for bad in [
            std::panic::catch_unwind(|| m.row(2).len()).is_err(),
            std::panic::catch_unwind(|| m.get(2, 0)).is_err(),
            std::panic::catch_unwind(|| m.get(0, 3)).is_err(),
            std::panic::catch_unwind(|| m.slice_rows(1, 3)).is_err(),
            std::panic::catch_unwind(|| Matrix::<f32>::zeros(usize::MAX, 2)).is_err(),
        ] {
            assert!(bad);
        }
        assert!(Matrix::from_vec(usize::MAX, 2, vec![0.0f32; 2]).is_none());
    }

    /// Stacking copies each part's rows in order and never its spare storage.
    #[test]
    fn stack_rows_appends_the_parts_rows() {
        let a = Matrix::from_fn(2, 3, |i, j| (10 * i + j) as f64);
        let mut b = Matrix::from_fn(3, 3, |i, j| (100 + 10 * i + j) as f64);
        b.resize(1, 3);
        let s = Matrix::stack_rows(&[&a, &b, &a]);
        assert_eq!((s.rows(), s.cols()), (5, 3));
        assert_eq!(s.row(1), a.row(1));
        assert_eq!(s.row(2), &[100.0, 101.0, 102.0]);
        assert_eq!(s.row(4), a.row(1));
        assert_eq!(Matrix::<f64>::stack_rows(&[]).rows(), 0);
        assert!(
            std::panic::catch_unwind(|| Matrix::stack_rows(&[&a, &Matrix::zeros(1, 2)])).is_err()
        );
    }
}
