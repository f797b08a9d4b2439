//! Delimited text tables (CSV/TSV/semicolon/whitespace), plain or gzip-compressed, as people
//! write them: with or without a header, with Excel's UTF-8 byte-order mark, with quoted fields
//! (`pandas.to_csv(quoting=QUOTE_ALL)`, Excel exports), and with pandas' unnamed row-index column.
//!
//! The reader streams the (possibly gzip-decoded) bytes in large chunks, cuts each chunk at its
//! last newline, splits it into line-aligned pieces and parses the pieces in parallel with rayon,
//! keeping only the selected columns; reading the next chunk overlaps with parsing the current
//! one. The text is never held in memory as a whole, so an 8 GB `HIGGS.csv` with 18 selected
//! columns needs about `11e6 * 18 * 4` bytes. Unselected columns are counted (for the ragged-row
//! check) but not parsed. Cells are parsed with `str::parse::<f32>` on the trimmed field, which
//! rounds correctly; `nan`/`inf` parse but are rejected.
//!
//! Dialect, as the `csv` crate (csv-core) reads it:
//! - A leading UTF-8 byte-order mark is dropped.
//! - A field in double quotes (RFC 4180, `""` for a quote inside) is read without its quotes, so
//!   `"0.125"` is the number 0.125 and `"a,b"` one field. Quoted fields cannot span lines.
//! - The delimiter (unless given) is sniffed from the first (up to 20) lines: the first of comma,
//!   semicolon and tab that splits every sampled line into the same number (> 1) of fields, all
//!   numeric below the first line, else the first that splits them consistently, else
//!   whitespace runs. In a semicolon-separated file a number may use a decimal comma (`1,5`),
//!   as Excel writes it in much of Europe.
//! - The first line is a header when any of its fields is not a number (else the file has no
//!   header and its columns are named `col0, col1, ...`; the first line is the first event).
//! - A first column whose header is empty or `Unnamed: 0` and whose values are non-negative,
//!   strictly increasing integers is the row index pandas' `to_csv()` writes: it is skipped
//!   (when no columns were selected explicitly), with a note for the user.
//!
//! The hot loop is a fused SWAR scanner for one-byte delimiters; a piece that holds a quoted field
//! it cannot take as is (a delimiter or quote inside the quotes) is re-parsed by the general
//! quote-aware line parser.
//!
//! Gzip is detected from the magic bytes `1f 8b` (not the extension) and decoded with
//! `flate2::read::MultiGzDecoder`, so concatenated members (as written by `bgzip`/`pigz`) work.
//!
//! The writer writes a header line and the shortest decimal text that parses back to the same
//! `f32` (Rust's `Display`, or `LowerExp` for magnitudes outside `[1e-5, 1e16)`): deterministic
//! bytes, exact round trip (see [`crate::io::writer`], which gzip-compresses when the path ends
//! in `.gz`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use rayon::prelude::*;

use super::{Delimiter, IoError, ReadOptions, Table};
use crate::engine::Matrix;

/// Bytes read per chunk.
const CHUNK: usize = 4 << 20;
/// Smallest piece handed to one rayon task.
const MIN_PIECE: usize = 128 << 10;
/// UTF-8 byte-order mark, which Excel writes at the start of "CSV UTF-8" files.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Lines sampled to sniff the delimiter.
const SNIFF_LINES: usize = 20;

type Source = Box<dyn Read + Send>;

/// Opens `path`, transparently gzip-decoding when the file starts with the gzip magic bytes.
fn open_source(path: &Path) -> Result<(Source, bool), IoError> {
    let f = super::open(path)?;
    let mut br = BufReader::with_capacity(1 << 20, f);
    let head = br
        .fill_buf()
        .map_err(|e| IoError::os(path, "cannot read", e))?;
    let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    if gz {
        Ok((Box::new(MultiGzDecoder::new(br)), true))
    } else {
        Ok((Box::new(br), false))
    }
}

/// Appends from `r` to `buf` until it holds at least `target` bytes or the input ends.
/// Returns `true` at end of input.
fn fill(r: &mut Source, buf: &mut Vec<u8>, target: usize) -> std::io::Result<bool> {
    let mut tmp = vec![0u8; 1 << 20];
    while buf.len() < target {
        match r.read(&mut tmp) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn read_error(path: &Path, gz: bool, e: std::io::Error) -> IoError {
    if gz {
        IoError::Corrupt {
            file: path.to_path_buf(),
            format: "gzip",
            reason: format!("{e} (the compressed stream is truncated or damaged)"),
        }
    } else {
        IoError::os(path, "cannot read", e)
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

#[inline]
fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Position of the first byte of `s` at or after `from` that satisfies `p` (else `s.len()`).
#[inline]
fn find_from(s: &[u8], from: usize, p: impl Fn(u8) -> bool) -> usize {
    s.get(from..)
        .and_then(|t| t.iter().position(|&b| p(b)))
        .map_or(s.len(), |i| from + i)
}

/// Calls `f(k, field)` for each field of `line` and returns the field count. Fields are
/// trimmed; a field in double quotes is passed without its quotes (a doubled `""` inside stays
/// doubled: no number contains one). A quote that is not closed on this line is
/// [`Bad::Unterminated`].
fn for_each_field<'a>(
    line: &'a [u8],
    delim: Delimiter,
    mut f: impl FnMut(usize, &'a [u8]) -> Result<(), Bad>,
) -> Result<usize, Bad> {
    let ws = delim == Delimiter::Whitespace;
    let c = delim_byte(delim);
    let is_sep = |b: u8| if ws { is_ws(b) } else { b == c };
    let n = line.len();
    let mut i = 0;
    let mut k = 0;
    if ws {
        i = find_from(line, 0, |b| !b.is_ascii_whitespace());
        if i == n {
            return Ok(0);
        }
    }
    loop {
        while i < n && line[i].is_ascii_whitespace() && (ws || line[i] != c) {
            i += 1;
        }
        let field;
        if line.get(i) == Some(&b'"') {
            let mut j = i + 1;
            let close = loop {
                let q = find_from(line, j, |b| b == b'"');
                if q == n {
                    return Err(Bad::Unterminated(k));
                }
                if line.get(q + 1) == Some(&b'"') {
                    j = q + 2;
                } else {
                    break q;
                }
            };
            let end = find_from(line, close + 1, is_sep);
            // Text after the closing quote makes the whole field plain (and not a number).
            field = if trim(&line[close + 1..end]).is_empty() {
                trim(&line[i + 1..close])
            } else {
                trim(&line[i..end])
            };
            i = end;
        } else {
            let end = find_from(line, i, is_sep);
            field = trim(&line[i..end]);
            i = end;
        }
        f(k, field)?;
        k += 1;
        if i >= n {
            break;
        }
        if ws {
            i = find_from(line, i, |b| !b.is_ascii_whitespace());
            if i >= n {
                break;
            }
        } else {
            i += 1;
        }
    }
    Ok(k)
}

/// The byte of a one-byte delimiter (`b' '` for whitespace runs, which the callers treat apart).
fn delim_byte(delim: Delimiter) -> u8 {
    match delim {
        Delimiter::Comma => b',',
        Delimiter::Tab => b'\t',
        Delimiter::Byte(c) => c,
        Delimiter::Whitespace => b' ',
    }
}

/// Why a cell or line was rejected (line numbers are resolved by the caller).
enum Bad {
    NonNumeric(usize, String),
    NonFinite(usize, String),
    Ragged(usize),
    /// A quote opened in field `k` is not closed on its line.
    Unterminated(usize),
    /// The fast scanner met a quoted field it cannot take as is (internal: re-parse the piece).
    Quoted,
}

/// Parses a number, with a decimal comma (`1,5`) allowed when `decimal_comma`.
#[inline]
fn parse_num(field: &[u8], decimal_comma: bool) -> Option<f32> {
    let v = std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse::<f32>().ok());
    if v.is_some() || !decimal_comma {
        return v;
    }
    // One comma and no point: a decimal comma.
    let mut tmp = [0u8; 64];
    let commas = field.iter().filter(|&&b| b == b',').count();
    if commas != 1 || field.contains(&b'.') || field.len() > tmp.len() {
        return None;
    }
    let t = tmp.get_mut(..field.len())?;
    for (d, &s) in t.iter_mut().zip(field) {
        *d = if s == b',' { b'.' } else { s };
    }
    std::str::from_utf8(t).ok()?.parse::<f32>().ok()
}

#[inline]
fn parse_cell(field: &[u8], k: usize, decimal_comma: bool) -> Result<f32, Bad> {
    let v = parse_num(field, decimal_comma)
        .ok_or_else(|| Bad::NonNumeric(k, String::from_utf8_lossy(field).into_owned()))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Bad::NonFinite(
            k,
            String::from_utf8_lossy(field).into_owned(),
        ))
    }
}

/// Parsing plan shared by all pieces.
struct Plan {
    delim: Delimiter,
    n_fields: usize,
    /// `need[k]`: field `k` is selected.
    need: Vec<bool>,
    /// Output column `j` is field `sel[j]`.
    sel: Vec<usize>,
    /// Numbers may use a decimal comma (semicolon-separated files).
    decimal_comma: bool,
}

/// Result of one piece: values, data rows, newline count.
struct Piece {
    values: Vec<f32>,
    rows: usize,
    newlines: u64,
}

/// High bit of each byte of `w` that equals `c` (exact, no false positives).
#[inline]
fn eq_mask(w: u64, c: u8) -> u64 {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = w ^ (0x0101_0101_0101_0101u64 * c as u64);
    !(((x & LO7) + LO7) | x | LO7)
}

/// Fused single-pass parser for a one-byte delimiter: finds delimiters and newlines eight bytes
/// at a time (SWAR) and parses each selected field as soon as it ends. Same results and errors
/// as [`parse_piece_lines`], except that it gives up with [`Bad::Quoted`] on a quoted field
/// other than a simple `"text"` (no quote or delimiter inside).
fn parse_piece_byte(text: &[u8], c: u8, plan: &Plan) -> Result<Piece, (u64, Bad)> {
    let mut values = Vec::with_capacity(text.len() / 16);
    let mut tmp = vec![0f32; plan.n_fields];
    let mut rows = 0;
    let mut line = 0u64; // newlines seen so far
    let mut k = 0usize; // field index within the line
    let mut start = 0usize; // start of the current field
    // Handles the separator at `i` (`i == text.len()` means end of text).
    let mut on_sep = |i: usize, newline: bool| -> Result<(), (u64, Bad)> {
        let mut field = trim(&text[start..i]);
        start = i + 1;
        if let [b'"', inner @ .., b'"'] = field
            && !inner.contains(&b'"')
        {
            field = trim(inner);
        } else if field.first() == Some(&b'"') {
            return Err((line, Bad::Quoted));
        }
        if newline && k == 0 && field.is_empty() {
            line += 1; // blank line
            return Ok(());
        }
        if k < plan.n_fields && plan.need[k] {
            tmp[k] = parse_cell(field, k, plan.decimal_comma).map_err(|b| (line, b))?;
        }
        k += 1;
        if newline {
            if k != plan.n_fields {
                return Err((line, Bad::Ragged(k)));
            }
            values.extend(plan.sel.iter().map(|&j| tmp[j]));
            rows += 1;
            k = 0;
            line += 1;
        }
        Ok(())
    };
    let n = text.len();
    let mut i = 0;
    while i + 8 <= n {
        let mut w = [0u8; 8];
        w.copy_from_slice(&text[i..i + 8]);
        let w = u64::from_le_bytes(w);
        let mut m = eq_mask(w, c) | eq_mask(w, b'\n');
        while m != 0 {
            let p = i + (m.trailing_zeros() / 8) as usize;
            on_sep(p, text[p] == b'\n')?;
            m &= m - 1;
        }
        i += 8;
    }
    for (p, &b) in text.iter().enumerate().skip(i) {
        if b == c || b == b'\n' {
            on_sep(p, b == b'\n')?;
        }
    }
    let has_tail = text.last().is_some_and(|&b| b != b'\n');
    if has_tail {
        on_sep(n, true)?;
    }
    Ok(Piece {
        values,
        rows,
        newlines: line - u64::from(has_tail),
    })
}

/// Parses complete lines of `text`. On error returns the 0-based line offset within `text`.
fn parse_piece(text: &[u8], plan: &Plan) -> Result<Piece, (u64, Bad)> {
    let fast = match plan.delim {
        Delimiter::Comma => parse_piece_byte(text, b',', plan),
        Delimiter::Tab => parse_piece_byte(text, b'\t', plan),
        Delimiter::Byte(c) if c != b'\n' && c != b'"' && c.is_ascii() => {
            parse_piece_byte(text, c, plan)
        }
        _ => return parse_piece_lines(text, plan),
    };
    match fast {
        Err((_, Bad::Quoted)) => parse_piece_lines(text, plan),
        r => r,
    }
}

/// Line-by-line parser (any delimiter, including whitespace runs, and quoted fields).
fn parse_piece_lines(text: &[u8], plan: &Plan) -> Result<Piece, (u64, Bad)> {
    let mut values = Vec::with_capacity(text.len() / 16);
    let mut tmp = vec![0f32; plan.n_fields];
    let mut rows = 0;
    let mut newlines = 0u64;
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let rel = newlines;
        if lines.peek().is_some() {
            newlines += 1;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let k = for_each_field(line, plan.delim, |k, field| {
            if k < plan.n_fields && plan.need[k] {
                tmp[k] = parse_cell(field, k, plan.decimal_comma)?;
            }
            Ok(())
        })
        .map_err(|b| (rel, b))?;
        if k != plan.n_fields {
            return Err((rel, Bad::Ragged(k)));
        }
        values.extend(plan.sel.iter().map(|&j| tmp[j]));
        rows += 1;
    }
    Ok(Piece {
        values,
        rows,
        newlines,
    })
}

/// Splits `text` into about `n` pieces that end at newlines.
fn pieces(text: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..n {
        let mut cut = (text.len() * i / n).max(start);
        match text[cut..].iter().position(|&b| b == b'\n') {
            Some(p) => cut += p + 1,
            None => break,
        }
        if cut > start {
            out.push(&text[start..cut]);
            start = cut;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Field counts of `lines` split by `delim` (`None` when a line has an unclosed quote).
fn field_counts(lines: &[&[u8]], delim: Delimiter) -> Option<Vec<usize>> {
    lines
        .iter()
        .map(|l| for_each_field(l, delim, |_, _| Ok(())).ok())
        .collect()
}

/// Whether every field of `lines` is a number.
fn all_numeric(lines: &[&[u8]], delim: Delimiter) -> bool {
    let dc = delim == Delimiter::Byte(b';');
    lines.iter().all(|l| {
        for_each_field(l, delim, |k, f| match parse_num(f, dc) {
            Some(_) => Ok(()),
            None => Err(Bad::Ragged(k)),
        })
        .is_ok()
    })
}

/// Sniffs the delimiter from the first non-blank lines (see the module docs).
fn sniff_delimiter(lines: &[&[u8]]) -> Delimiter {
    let candidates = [Delimiter::Comma, Delimiter::Byte(b';'), Delimiter::Tab];
    let data = if lines.len() > 1 { &lines[1..] } else { lines };
    let consistent: Vec<Delimiter> = candidates
        .into_iter()
        .filter(|&d| field_counts(lines, d).is_some_and(|c| c.iter().all(|&n| n > 1 && n == c[0])))
        .collect();
    if let Some(&d) = consistent.iter().find(|&&d| all_numeric(data, d)) {
        return d;
    }
    if let Some(&d) = consistent.first() {
        return d;
    }
    let first = lines.first().copied().unwrap_or_default();
    if first.contains(&b',') {
        Delimiter::Comma
    } else if first.contains(&b';') {
        Delimiter::Byte(b';')
    } else if first.contains(&b'\t') {
        Delimiter::Tab
    } else {
        Delimiter::Whitespace
    }
}

/// Up to `max` non-blank lines of `text` from its start (a last line without newline only when
/// `eof`).
fn sample_lines(text: &[u8], eof: bool, max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while out.len() < max {
        let (line, more) = match rest.iter().position(|&b| b == b'\n') {
            Some(p) => (&rest[..p], &rest[p + 1..]),
            None if eof && !rest.is_empty() => (rest, &rest[rest.len()..]),
            None => break,
        };
        if !line.iter().all(|b| b.is_ascii_whitespace()) {
            out.push(line);
        }
        rest = more;
    }
    out
}

/// The layout of a text table, from its first lines and the options.
struct Layout {
    delim: Delimiter,
    has_header: bool,
    names: Vec<String>,
    n_fields: usize,
}

/// Reads the layout from the first non-blank line `first_line` (line `line_no`) and a sample of
/// the following lines.
fn layout(
    path: &Path,
    first_line: &[u8],
    sample: &[&[u8]],
    line_no: u64,
    opts: &ReadOptions,
) -> Result<Layout, IoError> {
    let delim = opts.delimiter.unwrap_or_else(|| sniff_delimiter(sample));
    let dc = delim == Delimiter::Byte(b';');
    let mut raw_fields: Vec<&[u8]> = Vec::new();
    let mut numeric = true;
    for_each_field(first_line, delim, |_, f| {
        numeric &= parse_num(f, dc).is_some();
        raw_fields.push(f);
        Ok(())
    })
    .map_err(|_| IoError::UnterminatedQuote {
        file: path.to_path_buf(),
        line: line_no,
        column: format!("col{}", raw_fields.len()),
    })?;
    let has_header = opts.header.unwrap_or(!numeric);
    let n_fields = opts.expect_fields.unwrap_or(raw_fields.len());
    if raw_fields.len() != n_fields {
        return Err(IoError::Ragged {
            file: path.to_path_buf(),
            line: line_no,
            expected: n_fields,
            found: raw_fields.len(),
        });
    }
    let names: Vec<String> = if has_header {
        raw_fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).replace("\"\"", "\""))
            .collect()
    } else {
        Table::default_names(n_fields)
    };
    Ok(Layout {
        delim,
        has_header,
        names,
        n_fields,
    })
}

/// Reads a delimited text table (see the module docs and [`ReadOptions`]).
pub fn read_csv(path: &Path, opts: &ReadOptions) -> Result<Table, IoError> {
    read_csv_noted(path, opts).map(|(t, _)| t)
}

/// [`read_csv`], also returning notes for the user (e.g. a skipped pandas index column).
pub fn read_csv_noted(path: &Path, opts: &ReadOptions) -> Result<(Table, Vec<String>), IoError> {
    let file = path.to_path_buf();
    let (mut src, gz) = open_source(path)?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + (1 << 20));
    let mut eof = fill(&mut src, &mut buf, CHUNK).map_err(|e| read_error(path, gz, e))?;

    // Find the first non-blank line (reading more if a line is longer than a chunk).
    let mut pos = if buf.starts_with(BOM) { BOM.len() } else { 0 };
    let mut line_no = 1u64;
    let first = loop {
        match buf[pos..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                let line = &buf[pos..pos + p];
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    pos += p + 1;
                    line_no += 1;
                } else {
                    break Some((pos, pos + p + 1));
                }
            }
            None if eof => {
                let line = &buf[pos..];
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    break None;
                }
                break Some((pos, buf.len()));
            }
            None => {
                let target = buf.len() + CHUNK;
                eof = fill(&mut src, &mut buf, target).map_err(|e| read_error(path, gz, e))?;
            }
        }
    };
    let Some((l0, l1)) = first else {
        return Err(IoError::Empty { file });
    };
    let sample = sample_lines(&buf[l0..], eof, SNIFF_LINES);
    let Layout {
        delim,
        has_header,
        names,
        n_fields,
    } = layout(path, &buf[l0..l1], &sample, line_no, opts)?;
    let sel: Vec<usize> = match &opts.columns {
        Some(refs) => refs
            .iter()
            .map(|r| r.resolve(&names, path))
            .collect::<Result<_, _>>()?,
        None => (0..n_fields).collect(),
    };
    let mut need = vec![false; n_fields];
    for &j in &sel {
        need[j] = true;
    }
    let plan = Plan {
        delim,
        n_fields,
        need,
        sel,
        decimal_comma: delim == Delimiter::Byte(b';'),
    };
    if has_header {
        pos = l1;
        line_no += 1;
    } else {
        pos = l0;
    }

    let threads = rayon::current_num_threads().max(1);
    let mut values: Vec<f32> = Vec::new();
    let mut rows = 0usize;
    let mut spare: Vec<u8> = Vec::with_capacity(CHUNK + (1 << 20));
    loop {
        // The complete lines of the buffer (everything at end of input).
        let end = if eof {
            buf.len()
        } else {
            match buf[pos..].iter().rposition(|&b| b == b'\n') {
                Some(p) => pos + p + 1,
                None => {
                    let target = buf.len() + CHUNK;
                    eof = fill(&mut src, &mut buf, target).map_err(|e| read_error(path, gz, e))?;
                    continue;
                }
            }
        };
        spare.clear();
        spare.extend_from_slice(&buf[end..]);
        let text = &buf[pos..end];
        let n_pieces = (text.len() / MIN_PIECE).clamp(1, 4 * threads);
        let parts = pieces(text, n_pieces);
        let was_eof = eof;
        let (read_res, parsed) = rayon::join(
            || {
                if was_eof {
                    Ok(true)
                } else {
                    fill(&mut src, &mut spare, CHUNK)
                }
            },
            || {
                parts
                    .par_iter()
                    .map(|p| parse_piece(p, &plan))
                    .collect::<Vec<_>>()
            },
        );
        for r in parsed {
            match r {
                Ok(p) => {
                    values.extend_from_slice(&p.values);
                    rows += p.rows;
                    line_no += p.newlines;
                }
                Err((rel, bad)) => return Err(bad_to_error(path, line_no + rel, bad, &names)),
            }
        }
        if was_eof {
            break;
        }
        eof = read_res.map_err(|e| read_error(path, gz, e))?;
        std::mem::swap(&mut buf, &mut spare);
        pos = 0;
    }
    if rows == 0 {
        return Err(if has_header {
            IoError::HeaderOnly { file }
        } else {
            IoError::Empty { file }
        });
    }
    let cols = plan.sel.len();
    let columns = plan.sel.iter().map(|&j| names[j].clone()).collect();
    let data = Matrix::from_vec(rows, cols, values).ok_or_else(|| IoError::Corrupt {
        file: path.to_path_buf(),
        format: "CSV",
        reason: "internal row count mismatch".into(),
    })?;
    let table = Table { columns, data };
    let mut notes = Vec::new();
    if plan.decimal_comma && opts.delimiter.is_none() {
        notes.push(format!(
            "{}: read as semicolon-separated (numbers may use a decimal comma)",
            path.display()
        ));
    }
    if has_header
        && opts.columns.is_none()
        && let Some(t) = drop_index_column(&table)
    {
        notes.push(format!(
            "{}: skipped the first column {:?}: a row index as written by pandas' to_csv() \
             (pass index=False to to_csv, or select columns explicitly, to avoid this)",
            path.display(),
            table.columns[0]
        ));
        return Ok((t, notes));
    }
    Ok((table, notes))
}

/// The error for a rejected cell or line at 1-based `line`.
fn bad_to_error(path: &Path, line: u64, bad: Bad, names: &[String]) -> IoError {
    let file = path.to_path_buf();
    let col = |k: usize| names.get(k).cloned().unwrap_or_else(|| format!("col{k}"));
    match bad {
        Bad::NonNumeric(k, text) => IoError::NonNumeric {
            file,
            line,
            column: col(k),
            text,
        },
        Bad::NonFinite(k, text) => IoError::NonFiniteCell {
            file,
            line,
            column: col(k),
            text,
        },
        Bad::Ragged(found) => IoError::Ragged {
            file,
            line,
            expected: names.len(),
            found,
        },
        Bad::Unterminated(k) => IoError::UnterminatedQuote {
            file,
            line,
            column: col(k),
        },
        // Never escapes `parse_piece`, which re-parses such a piece.
        Bad::Quoted => IoError::UnterminatedQuote {
            file,
            line,
            column: String::new(),
        },
    }
}

/// `table` without its first column when that column is pandas' unnamed row index: header `""`
/// or `Unnamed: 0`, non-negative strictly increasing integers, and other columns besides it.
fn drop_index_column(table: &Table) -> Option<Table> {
    let name = table.columns.first()?;
    if !(name.is_empty() || name == "Unnamed: 0") || table.cols() < 2 {
        return None;
    }
    let c = table.cols();
    let mut prev = -1.0f32;
    for row in table.data.as_slice().chunks(c) {
        let v = *row.first()?;
        if v.fract() != 0.0 || v <= prev {
            return None;
        }
        prev = v;
    }
    let rows = table.rows();
    let mut values = Vec::with_capacity(rows * (c - 1));
    for row in table.data.as_slice().chunks(c) {
        values.extend_from_slice(row.get(1..)?);
    }
    Some(Table {
        columns: table.columns.get(1..)?.to_vec(),
        data: Matrix::from_vec(rows, c - 1, values)?,
    })
}

/// Appends the shortest text that parses back to exactly `v`.
pub fn format_f32(v: f32, out: &mut String) {
    use std::fmt::Write as _;
    let a = v.abs();
    let _ = if a == 0.0 || (1e-5..1e16).contains(&a) {
        write!(out, "{v}")
    } else {
        write!(out, "{v:e}")
    };
}

/// Checks that the column names survive a header line: non-empty, no delimiter, quote or line
/// break, and not a number (else the reader would take the header for data).
pub(crate) fn check_names(path: &Path, names: &[String]) -> Result<(), IoError> {
    let bad = |reason: String| IoError::InvalidTable {
        file: path.to_path_buf(),
        reason,
    };
    if names.is_empty() {
        return Err(bad("the table has no columns".into()));
    }
    for n in names {
        if n.trim().is_empty() || n.trim() != n {
            return Err(bad(format!(
                "column name {n:?} is empty or has surrounding spaces"
            )));
        }
        if n.contains([',', '"', '\n', '\r', '\t']) {
            return Err(bad(format!(
                "column name {n:?} contains a comma, quote, tab or line break"
            )));
        }
    }
    if names.iter().all(|n| n.parse::<f32>().is_ok()) {
        return Err(bad(
            "all column names are numbers, so the header would be read back as data".into(),
        ));
    }
    Ok(())
}

/// Writes the rows of `data` as comma-separated lines (formatted in parallel blocks).
pub(crate) fn write_values(w: &mut impl Write, data: &Matrix<f32>) -> std::io::Result<()> {
    let c = data.cols();
    if c == 0 {
        return Ok(());
    }
    const BLOCK: usize = 4096;
    for group in data.as_slice().chunks(BLOCK * c * 64) {
        let texts: Vec<String> = group
            .par_chunks(BLOCK * c)
            .map(|block| {
                let mut s = String::with_capacity(block.len() * 12);
                for row in block.chunks(c) {
                    for (j, &v) in row.iter().enumerate() {
                        if j > 0 {
                            s.push(',');
                        }
                        format_f32(v, &mut s);
                    }
                    s.push('\n');
                }
                s
            })
            .collect();
        for t in texts {
            w.write_all(t.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ColumnRef, Format, read_table, write_table};
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn read(p: &Path) -> Result<Table, IoError> {
        read_table(p, &ReadOptions::default())
    }

    fn err(p: &Path) -> String {
        read(p).unwrap_err().to_string()
    }

    #[test]
    fn header_delimiters_and_selection() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "a.csv", "x, y ,z\n1,2,3\n\n4 , 5e-1,-6\r\n");
        let t = read(&p).unwrap();
        assert_eq!(t.columns, vec!["x", "y", "z"]);
        assert_eq!(t.data.as_slice(), &[1.0, 2.0, 3.0, 4.0, 0.5, -6.0]);
        let p = write(d.path(), "b.tsv", "1\t2\n3\t4\n");
        let t = read(&p).unwrap();
        assert_eq!(t.columns, vec!["col0", "col1"]);
        assert_eq!(t.data.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
        let p = write(d.path(), "c.txt", "  a   b c\n1 \t 2 3\n4 5   6  \n");
        let opts = ReadOptions {
            columns: Some(vec!["c".into(), ColumnRef::Index(0)]),
            ..Default::default()
        };
        let t = read_table(&p, &opts).unwrap();
        assert_eq!(t.columns, vec!["c", "a"]);
        assert_eq!(t.data.as_slice(), &[3.0, 1.0, 6.0, 4.0]);
        // Forced header=false on a numeric file, and a forced delimiter.
        let p = write(d.path(), "d.csv", "1;2\n3;4\n");
        let opts = ReadOptions {
            delimiter: Some(Delimiter::Byte(b';')),
            header: Some(false),
            ..Default::default()
        };
        assert_eq!(read_table(&p, &opts).unwrap().rows(), 2);
    }

    #[test]
    fn unselected_bad_cells_are_not_parsed_but_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "a.csv", "a,b\n1,x\n2,y\n");
        let opts = ReadOptions {
            columns: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(read_table(&p, &opts).unwrap().data.as_slice(), &[1.0, 2.0]);
        let p = write(d.path(), "b.csv", "a,b\n1,x\n2\n");
        let e = read_table(&p, &opts).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("ragged"), "{e}");
    }

    #[test]
    fn empty_and_header_only() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "e.csv", "");
        assert!(matches!(read(&p), Err(IoError::Empty { .. })));
        assert!(err(&p).contains("e.csv"));
        let p = write(d.path(), "w.csv", "\n  \n");
        assert!(matches!(read(&p), Err(IoError::Empty { .. })));
        let p = write(d.path(), "h.csv", "a,b,c\n\n");
        assert!(matches!(read(&p), Err(IoError::HeaderOnly { .. })));
        assert!(err(&p).contains("h.csv"));
    }

    #[test]
    fn bad_cells_name_file_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "n.csv", "a,b\n1,2\n3,abc\n");
        let e = err(&p);
        assert!(
            e.contains("n.csv") && e.contains("line 3") && e.contains("column b"),
            "{e}"
        );
        assert!(e.contains("\"abc\""), "{e}");
        let p = write(d.path(), "nan.csv", "a,b\n1,2\n\n NaN,4\n");
        let e = err(&p);
        assert!(matches!(read(&p), Err(IoError::NonFiniteCell { .. })));
        assert!(e.contains("line 4") && e.contains("column a"), "{e}");
        let p = write(d.path(), "inf.csv", "1,2\n3,-inf\n");
        let e = err(&p);
        assert!(matches!(read(&p), Err(IoError::NonFiniteCell { .. })));
        assert!(e.contains("line 2") && e.contains("column col1"), "{e}");
        let p = write(d.path(), "r.csv", "a,b\n1,2\n3,4,5\n");
        let e = err(&p);
        assert!(
            e.contains("r.csv") && e.contains("line 3") && e.contains("expected 2 fields, found 3"),
            "{e}"
        );
        let p = write(d.path(), "u.csv", "a,b\n1,2\n");
        let opts = ReadOptions {
            columns: Some(vec!["zz".into()]),
            ..Default::default()
        };
        let e = read_table(&p, &opts).unwrap_err().to_string();
        assert!(e.contains("u.csv") && e.contains("\"zz\""), "{e}");
    }

    #[test]
    fn error_line_numbers_across_pieces_and_chunks() {
        // Big enough for several pieces (and a chunk boundary), error far down.
        let d = tempfile::tempdir().unwrap();
        let mut s = String::from("a,b,c\n");
        let n = 60_000;
        for i in 0..n {
            s.push_str(&format!("{i},{}.25,-3e-2\n", i * 2));
        }
        s.push_str("1,2,bad\n");
        let p = write(d.path(), "big.csv", &s);
        let e = err(&p);
        assert!(e.contains(&format!("line {}", n + 2)), "{e}");
        let p = write(d.path(), "ok.csv", &s[..s.len() - 8]);
        let t = read(&p).unwrap();
        assert_eq!(t.rows(), n);
        assert_eq!(
            t.data.row(n - 1),
            &[(n - 1) as f32, (2 * n - 2) as f32 + 0.25, -0.03]
        );
    }

    #[test]
    fn gzip_round_trip_and_truncated_gzip() {
        let d = tempfile::tempdir().unwrap();
        let data = Matrix::from_fn(5000, 3, |i, j| (i as f32 * 0.37 - j as f32).sin() * 1e3);
        let t = Table::new(vec!["p".into(), "q".into(), "r".into()], data).unwrap();
        let p = d.path().join("t.csv.gz");
        write_table(&p, &t, Format::Csv).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        assert_eq!(read(&p).unwrap(), t);
        let q = d.path().join("cut.csv.gz");
        std::fs::write(&q, &bytes[..bytes.len() / 2]).unwrap();
        let e = read(&q).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { format: "gzip", .. }), "{e}");
        assert!(e.to_string().contains("cut.csv.gz"), "{e}");
    }

    #[test]
    fn round_trip_exact_and_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let vals = [
            0.0f32,
            -0.0,
            1.0,
            -1.5,
            0.1,
            1e-30,
            3.4028235e38,
            f32::MIN_POSITIVE,
            1.0e-45,
            123456.79,
            8.692_932e-1,
            -2.5e7,
        ];
        let data = Matrix::from_vec(4, 3, vals.to_vec()).unwrap();
        let t = Table::new(vec!["a".into(), "b_2".into(), "m_jj".into()], data).unwrap();
        let p = d.path().join("rt.csv");
        write_table(&p, &t, Format::Csv).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.columns, t.columns);
        for (a, b) in back.data.as_slice().iter().zip(t.data.as_slice()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        let b1 = std::fs::read(&p).unwrap();
        write_table(&p, &t, Format::Csv).unwrap();
        assert_eq!(b1, std::fs::read(&p).unwrap());
        assert!(
            String::from_utf8(b1)
                .unwrap()
                .starts_with("a,b_2,m_jj\n0,-0,1\n")
        );
    }

    #[test]
    fn fused_parser_matches_line_parser() {
        let plan = |n: usize, sel: Vec<usize>| Plan {
            delim: Delimiter::Comma,
            n_fields: n,
            need: (0..n).map(|k| sel.contains(&k)).collect(),
            sel,
            decimal_comma: false,
        };
        let p3 = plan(3, vec![2, 0]);
        let texts = [
            "1,2,3\n4,5,6\n",
            "1,2,3\n\n  \r\n 4 ,5,\t6\r\n7,8,9",
            "1,2,3\n4,5,6\n   ",
            "1,x,3\n",
            "1,2,3\n1,2\n",
            "1,2,3\n1,2,3,4",
            "1,2,3\n,\n",
            "1,2,nan\n",
            "1.5e3,-2.25,0.000000000000000000e+00\n1,2,3\n9,9,9\n1,2,3\n",
        ];
        for t in texts {
            let a = parse_piece_byte(t.as_bytes(), b',', &p3);
            let b = parse_piece_lines(t.as_bytes(), &p3);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.values, b.values, "{t:?}");
                    assert_eq!((a.rows, a.newlines), (b.rows, b.newlines), "{t:?}");
                }
                (Err((la, _)), Err((lb, _))) => assert_eq!(la, lb, "{t:?}"),
                _ => panic!("parsers disagree on {t:?}"),
            }
        }
        let ok = parse_piece_byte(texts[1].as_bytes(), b',', &p3)
            .ok()
            .unwrap();
        assert_eq!(ok.values, vec![3.0, 1.0, 6.0, 4.0, 9.0, 7.0]);
        assert_eq!((ok.rows, ok.newlines), (3, 4));
        assert!(matches!(
            parse_piece_byte(texts[4].as_bytes(), b',', &p3),
            Err((1, Bad::Ragged(2)))
        ));
    }

    fn noted(p: &Path) -> (Table, Vec<String>) {
        read_csv_noted(p, &ReadOptions::default()).unwrap()
    }

    #[test]
    fn excel_byte_order_mark_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "bom.csv", "\u{feff}pt,eta\n1,2\n3,4\n");
        let t = read(&p).unwrap();
        assert_eq!(t.columns, vec!["pt", "eta"]);
        assert_eq!(t.data.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
        // Without a header the first line is the first event, BOM or not.
        let p = write(d.path(), "bomnum.csv", "\u{feff}1,2\n3,4\n");
        let t = read(&p).unwrap();
        assert_eq!(t.columns, vec!["col0", "col1"]);
        assert_eq!(t.data.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
        // Quoted numbers as the first line: still data.
        let p = write(d.path(), "qnum.csv", "\"1\",\"2\"\n\"3\",\"4\"\n");
        assert_eq!(read(&p).unwrap().rows(), 2);
    }

    #[test]
    fn quoted_fields_as_pandas_and_excel_write_them() {
        let d = tempfile::tempdir().unwrap();
        // pandas to_csv(quoting=QUOTE_ALL)
        let p = write(
            d.path(),
            "qa.csv",
            "\"a\",\"b\"\r\n\"0.1257\",\"-2\"\r\n\"3e2\", \"4\" \r\n",
        );
        let t = read(&p).unwrap();
        assert_eq!(t.columns, vec!["a", "b"]);
        assert_eq!(t.data.as_slice(), &[0.1257, -2.0, 300.0, 4.0]);
        // Delimiters and escaped quotes inside quotes (header and an unselected text column).
        let p = write(
            d.path(),
            "qc.csv",
            "\"x,y\",\"say \"\"hi\"\"\",z\n1,\"a,b\",2\n3,\"\",4\n",
        );
        let opts = ReadOptions {
            columns: Some(vec!["z".into(), "x,y".into()]),
            ..Default::default()
        };
        let t = read_table(&p, &opts).unwrap();
        assert_eq!(t.data.as_slice(), &[2.0, 1.0, 4.0, 3.0]);
        let t = read_table(
            &p,
            &ReadOptions {
                columns: Some(vec![ColumnRef::Index(1)]),
                ..Default::default()
            },
        );
        let e = t.unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("column say \"hi\"") && e.contains("\"a,b\""),
            "{e}"
        );
        // An unclosed quote names the line and column.
        let p = write(d.path(), "qu.csv", "a,b\n1,2\n3,\"4\n5,6\n");
        let e = err(&p);
        assert!(
            e.contains("qu.csv") && e.contains("line 3") && e.contains("column b"),
            "{e}"
        );
        assert!(e.contains("unterminated"), "{e}");
    }

    #[test]
    fn quoted_file_spanning_pieces_matches_unquoted() {
        let d = tempfile::tempdir().unwrap();
        let mut plain = String::from("a,b,c\n");
        let mut quoted = String::from("\"a\",\"b\",\"c\",\"note\"\n");
        for i in 0..40_000 {
            let row = [i as f32 * 0.5, (i as f32).sqrt(), -1e-3 * i as f32];
            let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
            plain.push_str(&cells.join(","));
            plain.push('\n');
            let q: Vec<String> = cells.iter().map(|c| format!("\" {c}\"")).collect();
            quoted.push_str(&q.join(","));
            // Some rows carry an unselected text field with a comma and quotes inside, which
            // sends their piece to the quote-aware parser.
            if i % 9_999 == 0 {
                quoted.push_str(",\"x, \"\"y\"\"\"\n");
            } else {
                quoted.push_str(",\"\"\n");
            }
        }
        let sel = ReadOptions {
            columns: Some(vec!["a".into(), "b".into(), "c".into()]),
            ..Default::default()
        };
        let p = write(d.path(), "p.csv", &plain);
        let q = write(d.path(), "q.csv", &quoted);
        assert_eq!(read(&p).unwrap(), read_table(&q, &sel).unwrap());
        // A quoted comma in a selected column: its line number survives the re-parse.
        quoted.push_str("\"1\",\"2,5\",\"3\",\"\"\n");
        let q = write(d.path(), "q2.csv", &quoted);
        let e = read_table(&q, &sel).unwrap_err().to_string();
        assert!(
            e.contains("line 40002") && e.contains("column b") && e.contains("\"2,5\""),
            "{e}"
        );
    }

    #[test]
    fn semicolons_and_decimal_commas() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "s.csv", "a;b;c\n1;2;3\n4;5;6\n");
        let (t, notes) = noted(&p);
        assert_eq!(t.columns, vec!["a", "b", "c"]);
        assert_eq!(t.data.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("s.csv") && notes[0].contains("semicolon"));
        // Excel in much of Europe: semicolons and decimal commas, with or without a header.
        let p = write(d.path(), "eu.csv", "pt;eta\n1,5;-0,25\n2;3,125\n");
        let t = read(&p).unwrap();
        assert_eq!(t.columns, vec!["pt", "eta"]);
        assert_eq!(t.data.as_slice(), &[1.5, -0.25, 2.0, 3.125]);
        let p = write(d.path(), "eu2.csv", "1,5;2,5\n3,5;4,5\n");
        let t = read(&p).unwrap();
        assert_eq!(t.data.as_slice(), &[1.5, 2.5, 3.5, 4.5]);
        // Comma files are not affected: "1,5" there is two fields, and comma wins ties.
        let p = write(d.path(), "c.csv", "x,y\n1,5\n");
        assert_eq!(read(&p).unwrap().data.as_slice(), &[1.0, 5.0]);
        let p = write(d.path(), "t.tsv", "x\ty\n1.5\t2\n");
        assert_eq!(read(&p).unwrap().data.as_slice(), &[1.5, 2.0]);
        // Whitespace-separated still works, and a one-column file too.
        let p = write(d.path(), "w.txt", "x y\n1 2\n");
        assert_eq!(read(&p).unwrap().columns, vec!["x", "y"]);
        let p = write(d.path(), "one.csv", "x\n1\n2\n");
        assert_eq!(read(&p).unwrap().data.as_slice(), &[1.0, 2.0]);
    }

    #[test]
    fn pandas_index_column_is_skipped_with_a_note() {
        let d = tempfile::tempdir().unwrap();
        for head in ["", "Unnamed: 0", "\"\""] {
            let p = write(
                d.path(),
                "ix.csv",
                &format!("{head},a,b\n0,1.5,2\n1,3,4\n2,5,6\n"),
            );
            let (t, notes) = noted(&p);
            assert_eq!(t.columns, vec!["a", "b"], "{head}");
            assert_eq!(t.data.as_slice(), &[1.5, 2.0, 3.0, 4.0, 5.0, 6.0]);
            assert_eq!(notes.len(), 1);
            assert!(notes[0].contains("ix.csv") && notes[0].contains("index"));
        }
        // A filtered frame keeps increasing, non-contiguous labels: still an index.
        let p = write(d.path(), "f.csv", ",a\n3,1\n7,2\n");
        assert_eq!(noted(&p).0.columns, vec!["a"]);
        // Not an index: values that are not increasing integers, or a named column.
        let p = write(d.path(), "n1.csv", ",a\n0,1\n0.5,2\n");
        let (t, notes) = noted(&p);
        assert_eq!((t.cols(), notes.len()), (2, 0));
        let p = write(d.path(), "n2.csv", ",a\n1,1\n0,2\n");
        assert_eq!(noted(&p).0.cols(), 2);
        let p = write(d.path(), "n3.csv", "i,a\n0,1\n1,2\n");
        assert_eq!(noted(&p).0.cols(), 2);
        // Explicit selection is respected.
        let p = write(d.path(), "ix.csv", ",a\n0,1\n1,2\n");
        let opts = ReadOptions {
            columns: Some(vec![ColumnRef::Index(0), "a".into()]),
            ..Default::default()
        };
        assert_eq!(
            read_table(&p, &opts).unwrap().data.as_slice(),
            &[0.0, 1.0, 1.0, 2.0]
        );
    }

    #[test]
    fn unwritable_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let t = Table::new(vec!["1".into()], Matrix::zeros(1, 1)).unwrap();
        let p = d.path().join("x.csv");
        assert!(write_table(&p, &t, Format::Csv).is_err());
        assert!(!p.exists());
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::io::bundled_higgs_path;

    /// Parse speed on the bundled HIGGS sample; run in release mode:
    /// `cargo test --release --lib io::csv::bench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn parse_speed_higgs_35k() {
        let gz = bundled_higgs_path();
        let mut text = Vec::new();
        MultiGzDecoder::new(std::fs::File::open(&gz).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("higgs.csv");
        std::fs::write(&p, &text).unwrap();
        let mb = text.len() as f64 / 1e6;
        for (what, path) in [("plain", &p), ("gzip", &gz)] {
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t0 = std::time::Instant::now();
                let t = read_csv(path, &ReadOptions::default()).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
                assert_eq!((t.rows(), t.cols()), (35_298, 29));
            }
            println!(
                "{what}: {mb:.1} MB of text in {:.1} ms = {:.0} MB/s ({} threads)",
                best * 1e3,
                mb / best,
                rayon::current_num_threads()
            );
        }
    }
}

#[cfg(test)]
mod external {
    use crate::engine::Matrix;
    use crate::io::{Format, Table, write_table};

    /// Writes a small table in every format into `$HEPFLOW_IO_OUT` for checking with
    /// pandas/pyarrow/uproot: `HEPFLOW_IO_OUT=/tmp/x cargo test --lib io::csv::external -- --ignored`.
    #[test]
    #[ignore]
    fn write_samples_for_external_readers() {
        let Ok(dir) = std::env::var("HEPFLOW_IO_OUT") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = Matrix::from_fn(1000, 3, |i, j| {
            (i as f32 * 0.1 + j as f32).sin() * 10f32.powi(j as i32)
        });
        let t = Table::new(
            vec!["lepton_pT".into(), "m_bb".into(), "jet1_eta".into()],
            data,
        )
        .unwrap();
        for (name, f) in [
            ("t.csv", Format::Csv),
            ("t.csv.gz", Format::Csv),
            ("t.npy", Format::Npy),
            ("t.parquet", Format::Parquet),
            ("t.root", Format::Root),
        ] {
            write_table(&dir.join(name), &t, f).unwrap();
        }
    }
}

#[cfg(test)]
mod external_read {
    use crate::io::{ReadOptions, read_table};

    /// Reads files written by numpy/pandas/uproot from `$HEPFLOW_IO_IN` and prints them.
    #[test]
    #[ignore]
    fn read_samples_from_external_writers() {
        let Ok(dir) = std::env::var("HEPFLOW_IO_IN") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        for (name, tree) in [
            ("p.parquet", None),
            ("a.npy", None),
            ("af.npy", None),
            ("u.root", None),
            ("u.root", Some("tree")),
        ] {
            let opts = ReadOptions {
                tree: tree.map(String::from),
                ..Default::default()
            };
            match read_table(&dir.join(name), &opts) {
                Ok(t) => println!("{name} {tree:?}: {:?} {:?}", t.columns, t.data.as_slice()),
                Err(e) => println!("{name} {tree:?}: ERROR {e}"),
            }
        }
    }
}
