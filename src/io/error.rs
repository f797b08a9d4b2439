//! The one error type of the data layer. Every message names the file, and the line (text
//! formats, 1-based) or row (binary formats, 0-based event index) and the column where there is
//! one, so that a user can find the bad cell without a debugger.

use std::path::PathBuf;

/// Placeholder "file" used by [`crate::io::Table`] methods that act on an in-memory table.
pub const IN_MEMORY: &str = "<in-memory table>";

/// Errors of reading, writing and selecting event tables.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file does not exist.
    #[error("{}: file not found", file.display())]
    NotFound {
        /// The file.
        file: PathBuf,
    },
    /// An operating-system error while opening, reading or writing the file.
    #[error("{}: {action}: {source}", file.display())]
    Os {
        /// The file.
        file: PathBuf,
        /// What was being done ("cannot open", "cannot write", ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The format could not be inferred from the file name.
    #[error(
        "{}: cannot infer the format from the extension; use .csv, .tsv, .txt (optionally \
         .gz), .npy, .parquet, .pq or .root, or set the format explicitly",
        file.display()
    )]
    UnknownFormat {
        /// The file.
        file: PathBuf,
    },
    /// The file holds no data at all.
    #[error("{}: the file is empty (no data rows)", file.display())]
    Empty {
        /// The file.
        file: PathBuf,
    },
    /// The file has a header line but no data rows.
    #[error("{}: the file has a header line but no data rows", file.display())]
    HeaderOnly {
        /// The file.
        file: PathBuf,
    },
    /// A text cell that is not a number.
    #[error(
        "{}, line {line}, column {column}: cannot parse {text:?} as a number",
        file.display()
    )]
    NonNumeric {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name (or `colK`).
        column: String,
        /// The offending text.
        text: String,
    },
    /// A text cell that parses to NaN or infinity.
    #[error(
        "{}, line {line}, column {column}: non-finite value {text:?} (NaN and infinity are \
         not allowed in event data)",
        file.display()
    )]
    NonFiniteCell {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name (or `colK`).
        column: String,
        /// The offending text.
        text: String,
    },
    /// A NaN or infinite value in a table (binary formats, or [`crate::io::Table::validate_finite`]).
    #[error(
        "{}, row {row}, column {column}: non-finite value {value} (NaN and infinity are not \
         allowed in event data)",
        file.display()
    )]
    NonFiniteValue {
        /// The file.
        file: PathBuf,
        /// 0-based row (event) index.
        row: usize,
        /// Column name.
        column: String,
        /// The value.
        value: f32,
    },
    /// A text line with a different number of fields than the first line.
    #[error(
        "{}, line {line}: expected {expected} fields, found {found} (ragged row)",
        file.display()
    )]
    Ragged {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Field count of the first line (or the required count).
        expected: usize,
        /// Field count of this line.
        found: usize,
    },
    /// A quoted text field whose closing quote is not on the same line.
    #[error(
        "{}, line {line}, column {column}: unterminated quoted field (a quote opened here is not \
         closed on this line; quoted fields cannot span lines)",
        file.display()
    )]
    UnterminatedQuote {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name (or `colK`).
        column: String,
    },
    /// The file does not have the UCI HIGGS layout.
    #[error(
        "expected 29 columns (label + 28 features) in the UCI HIGGS layout, found {found} on \
         line {line} of {}",
        file.display()
    )]
    HiggsLayout {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Field count found.
        found: usize,
    },
    /// A HIGGS label that is not 0 or 1.
    #[error("{}, row {row}, column label: label {value} is not 0 or 1", file.display())]
    BadLabel {
        /// The file.
        file: PathBuf,
        /// 0-based row index.
        row: usize,
        /// The value.
        value: f32,
    },
    /// A column name that is not in the table.
    #[error("{}: unknown column {name:?}; available columns: {available}", file.display())]
    UnknownColumn {
        /// The file (or [`IN_MEMORY`]).
        file: PathBuf,
        /// The requested name.
        name: String,
        /// Comma-separated available names.
        available: String,
    },
    /// A column index past the last column.
    #[error(
        "{}: column index {index} is out of range (the table has {count} columns, indices \
         0..{count})",
        file.display()
    )]
    ColumnIndex {
        /// The file (or [`IN_MEMORY`]).
        file: PathBuf,
        /// The requested 0-based index.
        index: usize,
        /// Number of columns.
        count: usize,
    },
    /// A glob pattern that is invalid or matches no file.
    #[error("{pattern}: {reason}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// What was wrong ("no file matches it", a syntax error).
        reason: String,
    },
    /// A file whose columns differ from those of the first file of a multi-file read.
    #[error(
        "{}: its columns differ from those of {}: {detail} (all files must have the same columns)",
        file.display(),
        first.display()
    )]
    ColumnMismatch {
        /// The file that differs.
        file: PathBuf,
        /// The first file (in sorted order).
        first: PathBuf,
        /// Which column differs.
        detail: String,
    },
    /// A structurally invalid file (bad magic, truncated, wrong metadata, ...).
    #[error("{}: invalid or corrupt {format} file: {reason}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Format name ("npy", "parquet", "ROOT", "gzip").
        format: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A valid file whose contents hepflow cannot use (wrong dtype, nested columns, ...).
    #[error("{}: unsupported content: {reason}", file.display())]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// A table that cannot be written in the requested format (e.g. a column name containing the
    /// CSV delimiter).
    #[error("{}: cannot write: {reason}", file.display())]
    InvalidTable {
        /// The file.
        file: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl IoError {
    /// Wraps an OS error, turning "not found" into [`IoError::NotFound`].
    pub(crate) fn os(file: impl Into<PathBuf>, action: &'static str, e: std::io::Error) -> Self {
        let file = file.into();
        if e.kind() == std::io::ErrorKind::NotFound {
            IoError::NotFound { file }
        } else {
            IoError::Os {
                file,
                action,
                source: e,
            }
        }
    }

    /// Replaces the file of a file-less (in-memory) error by `file`.
    pub fn with_file(mut self, path: &std::path::Path) -> Self {
        match &mut self {
            IoError::UnknownColumn { file, .. }
            | IoError::ColumnIndex { file, .. }
            | IoError::NonFiniteValue { file, .. } => *file = path.to_path_buf(),
            _ => {}
        }
        self
    }
}
