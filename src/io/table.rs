//! [`Table`]: named columns over a row-major `f32` matrix (one row per event).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::error::{IN_MEMORY, IoError};
use crate::engine::{Matrix, Rng};

/// A reference to a column: by name, or by 0-based position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ColumnRef {
    /// Column with this exact name.
    Name(String),
    /// Column at this 0-based position.
    Index(usize),
    /// Element `index` (0-based) of the variable-length or fixed-size array column `name`,
    /// written `name[index]` (e.g. `Jet_pt[0]`, the leading jet's pt in NanoAOD). In a table
    /// already read it names the column `name[index]`.
    Element {
        /// The array column.
        name: String,
        /// 0-based element index.
        index: usize,
    },
}

impl ColumnRef {
    /// Parses user text: a string of ASCII digits is an index (`"3"` is the fourth column),
    /// `name[k]` with a non-empty name and digits `k` is an array element, anything else is a
    /// name.
    pub fn parse(s: &str) -> ColumnRef {
        let t = s.trim();
        if !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_digit())
            && let Ok(i) = t.parse::<usize>()
        {
            return ColumnRef::Index(i);
        }
        if let Some(body) = t.strip_suffix(']')
            && let Some((name, k)) = body.rsplit_once('[')
            && !name.is_empty()
            && !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_digit())
            && let Ok(index) = k.parse::<usize>()
        {
            return ColumnRef::Element {
                name: name.to_string(),
                index,
            };
        }
        ColumnRef::Name(t.to_string())
    }

    /// Resolves this reference against `columns`, reporting errors against `file`.
    pub fn resolve(&self, columns: &[String], file: &Path) -> Result<usize, IoError> {
        match self {
            ColumnRef::Index(i) if *i < columns.len() => Ok(*i),
            ColumnRef::Index(i) => Err(IoError::ColumnIndex {
                file: file.to_path_buf(),
                index: *i,
                count: columns.len(),
            }),
            ColumnRef::Element { .. } => {
                let n = self.to_string();
                columns
                    .iter()
                    .position(|c| *c == n)
                    .ok_or_else(|| IoError::UnknownColumn {
                        file: file.to_path_buf(),
                        name: n,
                        available: columns.join(", "),
                    })
            }
            ColumnRef::Name(n) => {
                columns
                    .iter()
                    .position(|c| c == n)
                    .ok_or_else(|| IoError::UnknownColumn {
                        file: file.to_path_buf(),
                        name: n.clone(),
                        available: columns.join(", "),
                    })
            }
        }
    }
}

impl FromStr for ColumnRef {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ColumnRef::parse(s))
    }
}

impl From<&str> for ColumnRef {
    fn from(s: &str) -> Self {
        ColumnRef::parse(s)
    }
}

impl From<usize> for ColumnRef {
    fn from(i: usize) -> Self {
        ColumnRef::Index(i)
    }
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Name(n) => write!(f, "{n}"),
            ColumnRef::Index(i) => write!(f, "{i}"),
            ColumnRef::Element { name, index } => write!(f, "{name}[{index}]"),
        }
    }
}

/// An event table: `data` is `rows x columns.len()`, row-major, row `i` = event `i`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Table {
    /// Column names, one per matrix column.
    pub columns: Vec<String>,
    /// The values, one event per row.
    pub data: Matrix<f32>,
}

fn mem() -> PathBuf {
    PathBuf::from(IN_MEMORY)
}

impl Table {
    /// A table from names and data; `None` when `columns.len() != data.cols()`.
    pub fn new(columns: Vec<String>, data: Matrix<f32>) -> Option<Table> {
        (columns.len() == data.cols()).then_some(Table { columns, data })
    }

    /// Default names `col0, col1, ...` for `n` columns.
    pub fn default_names(n: usize) -> Vec<String> {
        (0..n).map(|j| format!("col{j}")).collect()
    }

    /// Number of rows (events).
    pub fn rows(&self) -> usize {
        self.data.rows()
    }

    /// Number of columns (features).
    pub fn cols(&self) -> usize {
        self.data.cols()
    }

    /// Resolves column references to 0-based positions.
    pub fn resolve(&self, refs: &[ColumnRef]) -> Result<Vec<usize>, IoError> {
        refs.iter()
            .map(|r| r.resolve(&self.columns, &mem()))
            .collect()
    }

    /// The columns `refs`, in that order (a column may be repeated).
    pub fn select(&self, refs: &[ColumnRef]) -> Result<Table, IoError> {
        let idx = self.resolve(refs)?;
        Ok(self.select_indices(&idx))
    }

    /// The columns at positions `idx` (all must be `< self.cols()`).
    pub(crate) fn select_indices(&self, idx: &[usize]) -> Table {
        let n = self.rows();
        let mut out = Vec::with_capacity(n * idx.len());
        for i in 0..n {
            let row = self.data.row(i);
            out.extend(idx.iter().map(|&j| row[j]));
        }
        Table {
            columns: idx.iter().map(|&j| self.columns[j].clone()).collect(),
            data: Matrix::from_vec(n, idx.len(), out).unwrap_or_default(),
        }
    }

    /// The rows whose `column` (a name, or an index as text) equals `value` exactly
    /// (e.g. `filter_eq("label", 0.0)` for `--select label=0`). All columns are kept.
    pub fn filter_eq(&self, column: &str, value: f32) -> Result<Table, IoError> {
        let j = ColumnRef::parse(column).resolve(&self.columns, &mem())?;
        let keep: Vec<usize> = (0..self.rows())
            .filter(|&i| self.data.get(i, j) == value)
            .collect();
        Ok(self.take_rows(&keep))
    }

    /// The rows at positions `idx`, in that order (all must be `< self.rows()`).
    pub fn take_rows(&self, idx: &[usize]) -> Table {
        let c = self.cols();
        let mut out = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            out.extend_from_slice(self.data.row(i));
        }
        Table {
            columns: self.columns.clone(),
            data: Matrix::from_vec(idx.len(), c, out).unwrap_or_default(),
        }
    }

    /// A copy of the column called `name`, or `None`.
    pub fn column(&self, name: &str) -> Option<Vec<f32>> {
        let j = self.columns.iter().position(|c| c == name)?;
        Some((0..self.rows()).map(|i| self.data.get(i, j)).collect())
    }

    /// Deterministic train/validation/test split. The rows are shuffled by a Fisher-Yates
    /// permutation from `Rng::new(seed)`; the first `round(f_train * n)` shuffled rows are the
    /// training set, the next `round(f_val * n)` the validation set (both clamped so that they fit)
    /// and the rest the test set. Each part keeps the shuffled order.
    pub fn split(&self, fractions: (f64, f64), seed: u64) -> (Table, Table, Table) {
        let n = self.rows();
        let count = |f: f64, left: usize| -> usize {
            let k = (f.max(0.0) * n as f64).round();
            if k >= left as f64 { left } else { k as usize }
        };
        let n_train = count(fractions.0, n);
        let n_val = count(fractions.1, n - n_train);
        let perm = Rng::new(seed).permutation(n);
        (
            self.take_rows(&perm[..n_train]),
            self.take_rows(&perm[n_train..n_train + n_val]),
            self.take_rows(&perm[n_train + n_val..]),
        )
    }

    /// Errors on the first NaN or infinite value, naming `file`, the 0-based row and the column.
    pub fn validate_finite(&self, file: &Path) -> Result<(), IoError> {
        let c = self.cols().max(1);
        match self.data.as_slice().iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(k) => Err(IoError::NonFiniteValue {
                file: file.to_path_buf(),
                row: k / c,
                column: self.columns.get(k % c).cloned().unwrap_or_default(),
                value: self.data.as_slice()[k],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Table {
        let data = Matrix::from_fn(10, 3, |i, j| (i * 10 + j) as f32);
        Table::new(vec!["a".into(), "b".into(), "c".into()], data).unwrap()
    }

    #[test]
    fn column_ref_parses_digits_as_index() {
        assert_eq!(ColumnRef::parse("3"), ColumnRef::Index(3));
        assert_eq!(ColumnRef::parse(" 12 "), ColumnRef::Index(12));
        assert_eq!(ColumnRef::parse("m_bb"), ColumnRef::Name("m_bb".into()));
        assert_eq!(ColumnRef::parse("-1"), ColumnRef::Name("-1".into()));
        let e = ColumnRef::parse("Jet_pt[2]");
        assert_eq!(
            e,
            ColumnRef::Element {
                name: "Jet_pt".into(),
                index: 2
            }
        );
        assert_eq!(e.to_string(), "Jet_pt[2]");
        for s in ["[2]", "a[]", "a[x]", "a[2", "a[-1]"] {
            assert_eq!(ColumnRef::parse(s), ColumnRef::Name(s.into()), "{s}");
        }
        let cols = vec!["a".to_string(), "Jet_pt[2]".to_string()];
        assert_eq!(e.resolve(&cols, Path::new("f")).unwrap(), 1);
    }

    #[test]
    fn select_by_name_and_index_and_errors() {
        let t = t();
        let s = t.select(&["c".into(), 0usize.into()]).unwrap();
        assert_eq!(s.columns, vec!["c", "a"]);
        assert_eq!(s.data.row(4), &[42.0, 40.0]);
        let e = t.select(&["zz".into()]).unwrap_err().to_string();
        assert!(
            e.contains("unknown column \"zz\"") && e.contains("a, b, c"),
            "{e}"
        );
        let e = t.select(&[ColumnRef::Index(3)]).unwrap_err().to_string();
        assert!(e.contains("column index 3"), "{e}");
    }

    #[test]
    fn filter_column_and_take() {
        let mut t = t();
        for i in 0..10 {
            t.data.set(i, 1, (i % 2) as f32);
        }
        let f = t.filter_eq("b", 0.0).unwrap();
        assert_eq!(f.rows(), 5);
        assert!(f.column("b").unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(f.column("a").unwrap(), vec![0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(t.filter_eq("1", 1.0).unwrap().rows(), 5);
        assert!(t.filter_eq("nope", 1.0).is_err());
        assert!(t.column("nope").is_none());
    }

    #[test]
    fn split_is_a_deterministic_partition() {
        let t = t();
        let (a, b, c) = t.split((0.6, 0.2), 5);
        assert_eq!((a.rows(), b.rows(), c.rows()), (6, 2, 2));
        let mut all: Vec<f32> = [&a, &b, &c]
            .iter()
            .flat_map(|x| x.column("a").unwrap())
            .collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, t.column("a").unwrap());
        let (a2, _, _) = t.split((0.6, 0.2), 5);
        assert_eq!(a, a2);
        let (a3, _, _) = t.split((0.6, 0.2), 6);
        assert_ne!(a, a3);
        let (x, y, z) = t.split((0.9, 0.9), 1);
        assert_eq!((x.rows(), y.rows(), z.rows()), (9, 1, 0));
    }

    #[test]
    fn validate_finite_names_row_and_column() {
        let mut t = t();
        assert!(t.validate_finite(Path::new("f.npy")).is_ok());
        t.data.set(7, 2, f32::NAN);
        let e = t
            .validate_finite(Path::new("f.npy"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.npy") && e.contains("row 7") && e.contains("column c"),
            "{e}"
        );
    }
}
