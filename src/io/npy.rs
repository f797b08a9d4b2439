//! NumPy `.npy` tables.
//!
//! Reads a 2-D array (C or Fortran order; Fortran is transposed to row-major) or a 1-D array
//! (one column) of `f4`/`f8`, signed/unsigned integers or `b1`, converting to `f32`. A `.npy`
//! file has no column names, so the columns are called `col0, col1, ...`; the writer writes a
//! C-order `<f4` array and **drops the table's column names** (use CSV, Parquet or ROOT to keep
//! them).

use std::io::BufReader;
use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar};

use super::{IoError, Table};
use crate::engine::Matrix;

fn corrupt(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Corrupt {
        file: path.to_path_buf(),
        format: "npy",
        reason: reason.into(),
    }
}

/// Reads a `.npy` file into a table named `col0..` (values are not yet checked for finiteness).
pub fn read_npy(path: &Path) -> Result<Table, IoError> {
    let f = super::open(path)?;
    let file_len = f
        .metadata()
        .map_err(|e| IoError::os(path, "cannot read", e))?
        .len();
    let npy = NpyFile::new(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| corrupt(path, format!("bad header: {e}")))?;
    let shape = npy.shape().to_vec();
    let (rows, cols) = match shape.as_slice() {
        [n] => (*n, 1),
        [n, m] => (*n, *m),
        _ => {
            return Err(IoError::Unsupported {
                file: path.to_path_buf(),
                reason: format!("array of shape {shape:?}; expected 1-D or 2-D"),
            });
        }
    };
    let ts = match npy.dtype() {
        DType::Plain(ts) => ts,
        other => {
            return Err(IoError::Unsupported {
                file: path.to_path_buf(),
                reason: format!(
                    "structured dtype {}; expected a plain numeric array",
                    other.descr()
                ),
            });
        }
    };
    let item = ts.num_bytes().unwrap_or(0) as u64;
    let need = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(item))
        .ok_or_else(|| corrupt(path, format!("impossible shape {shape:?}")))?;
    if need > file_len {
        return Err(corrupt(
            path,
            format!(
                "shape {shape:?} of {ts} needs {need} data bytes but the file has only {file_len} \
                 bytes (truncated?)"
            ),
        ));
    }
    let (rows, cols) = (rows as usize, cols as usize);
    let order = npy.order();
    let trunc = |e: std::io::Error| corrupt(path, format!("cannot read the data: {e}"));
    macro_rules! conv {
        ($t:ty) => {
            npy.into_vec::<$t>()
                .map_err(trunc)?
                .into_iter()
                .map(|v| v as f32)
                .collect::<Vec<f32>>()
        };
    }
    let values: Vec<f32> = match (ts.type_char(), item) {
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(trunc)?,
        (TypeChar::Float, 8) => conv!(f64),
        (TypeChar::Int, 1) => conv!(i8),
        (TypeChar::Int, 2) => conv!(i16),
        (TypeChar::Int, 4) => conv!(i32),
        (TypeChar::Int, 8) => conv!(i64),
        (TypeChar::Uint, 1) => conv!(u8),
        (TypeChar::Uint, 2) => conv!(u16),
        (TypeChar::Uint, 4) => conv!(u32),
        (TypeChar::Uint, 8) => conv!(u64),
        (TypeChar::Bool, 1) => npy
            .into_vec::<bool>()
            .map_err(trunc)?
            .into_iter()
            .map(|b| if b { 1.0 } else { 0.0 })
            .collect(),
        _ => {
            return Err(IoError::Unsupported {
                file: path.to_path_buf(),
                reason: format!("dtype {ts}; expected float, integer or bool"),
            });
        }
    };
    if values.len() != rows * cols {
        return Err(corrupt(path, "data length does not match the shape"));
    }
    let data = if order == Order::Fortran && cols > 1 {
        Matrix::from_fn(rows, cols, |i, j| values[j * rows + i])
    } else {
        Matrix::from_vec(rows, cols, values).unwrap_or_default()
    };
    Ok(Table {
        columns: Table::default_names(cols),
        data,
    })
}

/// The header of a C-order `<f4` array of shape `[rows, cols]`, as numpy (and `npyz`) write it:
/// format version 1.0, the dictionary padded with spaces and a newline to a multiple of 64 bytes.
pub(crate) fn header(rows: u64, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = dict.into_bytes();
    let total = 10 + h.len() + 1;
    let pad = (64 - total % 64) % 64;
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Format, ReadOptions, read_table, write_table};

    #[test]
    fn round_trip_f32() {
        let d = tempfile::tempdir().unwrap();
        let data = Matrix::from_fn(7, 3, |i, j| i as f32 * 0.1 - j as f32 * 1e-7);
        let t = Table::new(Table::default_names(3), data).unwrap();
        let p = d.path().join("t.npy");
        write_table(&p, &t, Format::Npy).unwrap();
        let back = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(back, t);
    }

    fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_f64_fortran_1d_and_ints() {
        let d = tempfile::tempdir().unwrap();
        let vals = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Fortran order, shape (3, 2): column 0 = 1,2,3; column 1 = 4,5,6.
        let p = d.path().join("f.npy");
        std::fs::write(&p, npy_bytes("<f8", true, "(3, 2)", &bytes)).unwrap();
        let t = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(t.data.as_slice(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let p = d.path().join("one.npy");
        std::fs::write(&p, npy_bytes("<f8", false, "(6,)", &bytes)).unwrap();
        let t = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!((t.rows(), t.cols()), (6, 1));
        let ints: Vec<u8> = [7i64, -8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = d.path().join("i.npy");
        std::fs::write(&p, npy_bytes("<i8", false, "(1, 2)", &ints)).unwrap();
        let t = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(t.data.as_slice(), &[7.0, -8.0]);
    }

    #[test]
    fn corrupt_truncated_and_nan_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.npy");
        std::fs::write(&p, b"this is not a numpy file at all").unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("c.npy"), "{e}");
        // Valid header claiming 1000x1000 f4 with 8 data bytes.
        let p = d.path().join("t.npy");
        std::fs::write(&p, npy_bytes("<f4", false, "(1000, 1000)", &[0; 8])).unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("t.npy") && e.to_string().contains("truncated"),
            "{e}"
        );
        let bytes: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let p = d.path().join("n.npy");
        std::fs::write(&p, npy_bytes("<f4", false, "(1, 2)", &bytes)).unwrap();
        let e = read_table(&p, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("n.npy") && e.contains("row 0") && e.contains("col1"),
            "{e}"
        );
        let p = d.path().join("z.npy");
        std::fs::write(&p, npy_bytes("<f4", false, "(0, 2)", &[])).unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Empty { .. }), "{e}");
    }
}
