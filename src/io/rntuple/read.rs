//! Reading an RNTuple (see the format summary in [`crate::io::rntuple`]): flat numeric fields
//! and `std::vector`/`RVec` collections of numbers, every column encoding of specification 1.0.

use super::{ENVELOPE_FOOTER, ENVELOPE_HEADER, ENVELOPE_PAGE_LIST, xxh3};
use crate::io::root::file::{Bad, Cursor, Res, RootFile, bad, decompress};
use crate::io::root::{Col, FieldInfo, Shape};

/// Little-endian reader.
struct Le<'a> {
    buf: &'a [u8],
    pos: usize,
}

macro_rules! le_reader {
    ($name:ident, $t:ty) => {
        fn $name(&mut self) -> Res<$t> {
            let b = self.take(std::mem::size_of::<$t>())?;
            let mut a = [0u8; std::mem::size_of::<$t>()];
            a.copy_from_slice(b);
            Ok(<$t>::from_le_bytes(a))
        }
    };
}

impl<'a> Le<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(e) => {
                let s = &self.buf[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => bad(format!(
                "RNTuple metadata cut short (need {n} bytes at offset {} of {})",
                self.pos,
                self.buf.len()
            )),
        }
    }
    le_reader!(u16, u16);
    le_reader!(u32, u32);
    le_reader!(i32, i32);
    le_reader!(u64, u64);
    le_reader!(i64, i64);

    fn string(&mut self) -> Res<String> {
        let n = self.u32()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn flags(&mut self) -> Res<u64> {
        let mut all = 0;
        loop {
            let f = self.u64()?;
            all |= f & !(1 << 63);
            if f >> 63 == 0 {
                return Ok(all);
            }
        }
    }

    /// Starts a frame: `(end, items)` where `items` is `Some(n)` for a list frame.
    fn frame(&mut self) -> Res<(usize, Option<u32>)> {
        let start = self.pos;
        let size = self.i64()?;
        let (len, items) = if size < 0 {
            (size.unsigned_abs(), Some(self.u32()?))
        } else {
            (size as u64, None)
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= self.buf.len() && e >= self.pos)
            .ok_or_else(|| {
                Bad::Corrupt(format!(
                    "an RNTuple frame of {len} bytes runs past its envelope"
                ))
            })?;
        Ok((end, items))
    }

    fn list(&mut self) -> Res<(usize, u32)> {
        match self.frame()? {
            (end, Some(n)) => Ok((end, n)),
            _ => bad("expected an RNTuple list frame"),
        }
    }

    fn locator(&mut self) -> Res<(u64, usize)> {
        let size = self.i32()?;
        if size >= 0 {
            Ok((self.u64()?, size as usize))
        } else {
            let t = (size as u32 >> 24) & 0x7F;
            if t != 1 {
                return Err(Bad::Unsupported(format!("RNTuple locator type {t}")));
            }
            let n = self.u64()?;
            let off = self.u64()?;
            Ok((
                off,
                usize::try_from(n).map_err(|_| Bad::Corrupt("huge locator".into()))?,
            ))
        }
    }
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    type_name: String,
    parent: usize,
    role: u16,
    flags: u16,
}

#[derive(Clone, Debug)]
struct Column {
    kind: u16,
    field: usize,
    repr: u16,
    /// Bits per element on storage (Real32Trunc, Real32Quant).
    bits: u16,
    /// Value range of a Real32Quant column.
    range: (f64, f64),
    /// Elements before the first stored one (a deferred column, added during writing):
    /// they read as zeros.
    first: u64,
}

#[derive(Clone, Debug)]
struct Page {
    elements: usize,
    offset: u64,
    size: usize,
    checksum: bool,
}

/// A decoded RNTuple anchor, header and footer.
pub(crate) struct NTuple {
    pub entries: usize,
    fields: Vec<Field>,
    columns: Vec<Column>,
    /// Alias columns: (physical column, projected field).
    aliases: Vec<(usize, usize)>,
    /// Per cluster: entries, then per column its pages (`None` when suppressed).
    clusters: Vec<(usize, Vec<Option<Vec<Page>>>)>,
}

/// Reads, decompresses and checks an envelope; returns its payload (after the 8-byte preamble).
fn envelope(
    f: &RootFile,
    off: u64,
    stored: usize,
    len: usize,
    want: u16,
    what: &str,
) -> Res<Vec<u8>> {
    let raw = f.read_at(off, stored)?;
    let d = decompress(&raw, len).map_err(|e| match e {
        Bad::Corrupt(m) => Bad::Corrupt(format!("RNTuple {what}: {m}")),
        u => u,
    })?;
    if d.len() < 16 {
        return bad(format!("RNTuple {what} envelope is too short"));
    }
    let (body, sum) = d.split_at(d.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if xxh3(body) != u64::from_le_bytes(s) {
        return bad(format!(
            "RNTuple {what} envelope checksum mismatch (damaged data)"
        ));
    }
    let mut c = Le { buf: body, pos: 0 };
    let pre = c.u64()?;
    if (pre & 0xFFFF) as u16 != want || (pre >> 16) as usize != d.len() {
        return bad(format!(
            "RNTuple {what} envelope has type {} and length {} (expected type {want}, length {})",
            pre & 0xFFFF,
            pre >> 16,
            d.len()
        ));
    }
    Ok(body[8..].to_vec())
}

fn schema(
    c: &mut Le,
    fields: &mut Vec<Field>,
    columns: &mut Vec<Column>,
    aliases: &mut Vec<(usize, usize)>,
) -> Res<()> {
    let (end, n) = c.list()?;
    for _ in 0..n {
        let (fe, _) = c.frame()?;
        let _fv = c.u32()?;
        let _tv = c.u32()?;
        let parent = c.u32()? as usize;
        let role = c.u16()?;
        let flags = c.u16()?;
        let name = c.string()?;
        let type_name = c.string()?;
        fields.push(Field {
            name,
            type_name,
            parent,
            role,
            flags,
        });
        c.pos = fe;
    }
    c.pos = end;
    let (end, n) = c.list()?;
    for _ in 0..n {
        let (fe, _) = c.frame()?;
        let kind = c.u16()?;
        let bits = c.u16()?;
        let field = c.u32()? as usize;
        let flags = c.u16()?;
        let repr = c.u16()?;
        let first = if flags & 1 != 0 {
            c.i64()?.unsigned_abs()
        } else {
            0
        };
        let range = if flags & 2 != 0 {
            (f64::from_bits(c.u64()?), f64::from_bits(c.u64()?))
        } else {
            (0.0, 0.0)
        };
        columns.push(Column {
            kind,
            field,
            repr,
            bits,
            range,
            first,
        });
        c.pos = fe;
    }
    c.pos = end;
    let (end, n) = c.list()?;
    for _ in 0..n {
        let (fe, _) = c.frame()?;
        let physical = c.u32()? as usize;
        let field = c.u32()? as usize;
        aliases.push((physical, field));
        c.pos = fe;
    }
    c.pos = end;
    let (end, _) = c.list()?; // extra type information
    c.pos = end;
    Ok(())
}

/// Decodes the RNTuple whose anchor is the key at `seek`.
pub(crate) fn read_ntuple(f: &RootFile, seek: u64) -> Res<NTuple> {
    let (kh, data) = f.object(seek)?;
    let _ = kh;
    let mut c = Cursor::new(&data, 0);
    let bcnt = c.u32()?;
    if bcnt & 0x4000_0000 == 0 {
        return bad("RNTuple anchor without byte count");
    }
    let _class_version = c.i16()?;
    let start = c.pos;
    let epoch = c.u16()?;
    let (major, minor, patch) = (c.u16()?, c.u16()?, c.u16()?);
    if epoch != 1 {
        return Err(Bad::Unsupported(format!(
            "RNTuple format version {epoch}.{major}.{minor}.{patch} (only epoch 1, ROOT >= 6.34, \
             is supported; epoch 0 was a pre-release)"
        )));
    }
    let mut u = || -> Res<usize> {
        usize::try_from(c.i64()?)
            .map_err(|_| Bad::Corrupt("negative size in the RNTuple anchor".into()))
    };
    let (sh, nh, lh, sf, nf, lf) = (u()?, u()?, u()?, u()?, u()?, u()?);
    let _max_key = c.i64()?;
    let end = c.pos;
    let sum = c.i64()? as u64;
    if xxh3(&data[start..end]) != sum {
        return bad("RNTuple anchor checksum mismatch (damaged data)");
    }
    let header = envelope(f, sh as u64, nh, lh, ENVELOPE_HEADER, "header")?;
    let footer = envelope(f, sf as u64, nf, lf, ENVELOPE_FOOTER, "footer")?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut aliases = Vec::new();
    let mut h = Le {
        buf: &header,
        pos: 0,
    };
    let fl = h.flags()?;
    if fl != 0 {
        return Err(Bad::Unsupported(format!("RNTuple feature flags {fl:#x}")));
    }
    let _name = h.string()?;
    let _desc = h.string()?;
    let _writer = h.string()?;
    schema(&mut h, &mut fields, &mut columns, &mut aliases)?;
    let header_sum = xxh3(&{
        // The checksum the footer repeats is the one stored after the header payload.
        let raw = f.read_at(sh as u64, nh)?;
        let d = decompress(&raw, lh)?;
        d[..d.len() - 8].to_vec()
    });
    let mut c = Le {
        buf: &footer,
        pos: 0,
    };
    let fl = c.flags()?;
    if fl != 0 {
        return Err(Bad::Unsupported(format!("RNTuple feature flags {fl:#x}")));
    }
    if c.u64()? != header_sum {
        return bad("the RNTuple footer does not belong to its header (checksum differs)");
    }
    let (ext_end, _) = c.frame()?;
    if c.pos < ext_end {
        schema(&mut c, &mut fields, &mut columns, &mut aliases)?;
    }
    c.pos = ext_end;
    let (groups_end, ngroups) = c.list()?;
    let mut clusters = Vec::new();
    let mut entries = 0usize;
    for _ in 0..ngroups {
        let (ge, _) = c.frame()?;
        let _min = c.u64()?;
        let _span = c.u64()?;
        let _n = c.u32()?;
        let len = usize::try_from(c.u64()?).map_err(|_| Bad::Corrupt("huge page list".into()))?;
        let (off, size) = c.locator()?;
        c.pos = ge;
        let pl = envelope(f, off, size, len, ENVELOPE_PAGE_LIST, "page list")?;
        let mut p = Le { buf: &pl, pos: 0 };
        if p.u64()? != header_sum {
            return bad("an RNTuple page list does not belong to its header");
        }
        let (se, ns) = p.list()?;
        let mut sizes = Vec::new();
        for _ in 0..ns {
            let (fe, _) = p.frame()?;
            let _first = p.u64()?;
            let v = p.u64()?;
            if (v >> 56) & 1 != 0 {
                return Err(Bad::Unsupported("sharded RNTuple clusters".into()));
            }
            sizes.push(usize::try_from(v & ((1 << 56) - 1)).unwrap_or(usize::MAX));
            p.pos = fe;
        }
        p.pos = se;
        let (_, nc) = p.list()?;
        if nc as usize != sizes.len() {
            return bad("RNTuple page list: cluster counts differ");
        }
        for n in sizes {
            let (ce, ncol) = p.list()?;
            let mut cols = Vec::new();
            for _ in 0..ncol {
                let (pe, npages) = p.list()?;
                let mut pages = Vec::new();
                for _ in 0..npages {
                    let ne = p.i32()?;
                    let (offset, size) = p.locator()?;
                    pages.push(Page {
                        elements: ne.unsigned_abs() as usize,
                        offset,
                        size,
                        checksum: ne < 0,
                    });
                }
                let elem_offset = p.i64()?;
                cols.push((elem_offset >= 0).then_some(pages));
                p.pos = pe;
            }
            p.pos = ce;
            entries = entries
                .checked_add(n)
                .ok_or_else(|| Bad::Corrupt("RNTuple entry count overflows".into()))?;
            clusters.push((n, cols));
        }
    }
    let _ = groups_end;
    Ok(NTuple {
        entries,
        fields,
        columns,
        aliases,
        clusters,
    })
}

/// Column types we decode: (element size in bytes (0 = bit), split, zigzag, delta, type name).
fn column_layout(kind: u16) -> Option<(usize, bool, bool, bool)> {
    Some(match kind {
        0x00 => (0, false, false, false),
        0x01..=0x04 => (1, false, false, false),
        0x05 | 0x06 | 0x0B => (2, false, false, false),
        0x07 | 0x08 | 0x0C | 0x0E => (4, false, false, false),
        0x09 | 0x0A | 0x0D | 0x0F => (8, false, false, false),
        0x11 => (2, true, true, false),
        0x12 | 0x17 => (2, true, false, false),
        0x13 => (4, true, true, false),
        0x14 | 0x18 => (4, true, false, false),
        0x15 => (8, true, true, false),
        0x16 | 0x19 => (8, true, false, false),
        0x1A => (4, true, false, true),
        0x1B => (8, true, false, true),
        // Bit-packed: the width is the column's bits on storage.
        0x1C | 0x1D => (0, false, false, false),
        _ => return None,
    })
}

fn half(h: u16) -> f32 {
    let s = if h >> 15 != 0 { -1.0f32 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1F);
    let m = f32::from(h & 0x3FF);
    match e {
        0 => s * m * 2f32.powi(-24),
        31 if m == 0.0 => s * f32::INFINITY,
        31 => f32::NAN,
        _ => s * (1.0 + m / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Bytes of a page of `n` elements of `col`.
fn page_bytes(col: &Column, n: usize) -> usize {
    match col.kind {
        0x1C | 0x1D => (n * usize::from(col.bits)).div_ceil(8),
        k => match column_layout(k) {
            Some((0, ..)) | None => n.div_ceil(8),
            Some((w, ..)) => n * w,
        },
    }
}

/// Decodes one page of `n` elements of column `col` into `f64` values.
fn decode_page(col: &Column, b: &[u8], n: usize, out: &mut Vec<f64>) -> Res<()> {
    let kind = col.kind;
    let Some((w, split, zigzag, delta)) = column_layout(kind) else {
        return Err(Bad::Unsupported(format!("RNTuple column type {kind:#x}")));
    };
    if kind == 0x1C || kind == 0x1D {
        // Bit-packed, least significant bit first: truncated floats keep the top `bits` bits
        // of an IEEE single; quantized reals are `min + q (max - min) / (2^bits - 1)`.
        let nb = usize::from(col.bits);
        if !(1..=32).contains(&nb) || b.len() < (n * nb).div_ceil(8) {
            return bad(format!("an RNTuple packed page ({nb} bits) is malformed"));
        }
        for i in 0..n {
            let mut q = 0u64;
            for k in 0..nb {
                let bit = i * nb + k;
                q |= u64::from((b[bit / 8] >> (bit % 8)) & 1) << k;
            }
            out.push(if kind == 0x1C {
                f64::from(f32::from_bits((q as u32) << (32 - nb)))
            } else {
                let (lo, hi) = col.range;
                lo + q as f64 * (hi - lo) / ((1u64 << nb) - 1) as f64
            });
        }
        return Ok(());
    }
    if w == 0 {
        if b.len() < n.div_ceil(8) {
            return bad("an RNTuple bit page is too short");
        }
        out.extend((0..n).map(|i| f64::from((b[i / 8] >> (i % 8)) & 1)));
        return Ok(());
    }
    if b.len() != n * w {
        return bad(format!(
            "an RNTuple page has {} bytes for {n} elements of {w} bytes",
            b.len()
        ));
    }
    let mut e = [0u8; 8];
    let mut prev: i128 = 0;
    for i in 0..n {
        for (k, x) in e[..w].iter_mut().enumerate() {
            *x = if split { b[k * n + i] } else { b[i * w + k] };
        }
        let raw = u64::from_le_bytes(e);
        let raw = if w < 8 {
            raw & ((1u64 << (8 * w)) - 1)
        } else {
            raw
        };
        let v = match kind {
            0x0B | 0x17 => f64::from(half(raw as u16)),
            super::COLUMN_REAL32 | super::COLUMN_SPLIT_REAL32 => {
                f64::from(f32::from_bits(raw as u32))
            }
            0x0D | 0x19 => f64::from_bits(raw),
            _ if zigzag => ((raw >> 1) as i64 ^ -((raw & 1) as i64)) as f64,
            _ if delta => {
                prev += i128::from(raw);
                prev as f64
            }
            0x03 => f64::from(raw as u8 as i8),
            0x05 => f64::from(raw as u16 as i16),
            0x07 => f64::from(raw as u32 as i32),
            0x09 => raw as i64 as f64,
            _ => raw as f64,
        };
        out.push(v);
    }
    Ok(())
}

const NUMERIC: &[&str] = &[
    "bool",
    "float",
    "double",
    "std::int8_t",
    "std::uint8_t",
    "std::int16_t",
    "std::uint16_t",
    "std::int32_t",
    "std::uint32_t",
    "std::int64_t",
    "std::uint64_t",
    "char",
    "std::byte",
];

impl NTuple {
    /// Number of clusters.
    #[cfg(test)]
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    fn children(&self, id: usize) -> Vec<usize> {
        (0..self.fields.len())
            .filter(|&i| i != id && self.fields[i].parent == id)
            .collect()
    }

    fn primary_column(&self, field: usize) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.field == field && c.repr == 0)
    }

    /// Whether leaf field `id` holds numbers we can decode.
    fn numeric_leaf(&self, id: usize) -> bool {
        let f = &self.fields[id];
        f.role == 0
            && f.flags & 1 == 0
            && NUMERIC.contains(&f.type_name.as_str())
            && self
                .primary_column(id)
                .and_then(|c| column_layout(self.columns[c].kind))
                .is_some()
    }

    /// The index column behind an `RNTupleCardinality` field (the item count of a collection,
    /// e.g. NanoAOD's `nJet` as written by ROOT's RNTupleImporter).
    fn cardinality_column(&self, id: usize) -> Option<usize> {
        let f = &self.fields[id];
        if !f.type_name.starts_with("ROOT::RNTupleCardinality<") {
            return None;
        }
        let col = self
            .aliases
            .iter()
            .find(|a| a.1 == id)
            .map(|a| a.0)
            .or_else(|| self.primary_column(id))?;
        matches!(self.columns.get(col)?.kind, 0x0E | 0x0F | 0x1A | 0x1B).then_some(col)
    }

    /// `(shape, value field)` of top-level field `id`, or why it is not readable.
    fn shape(&self, id: usize) -> Result<(Shape, usize), String> {
        let f = &self.fields[id];
        if self.cardinality_column(id).is_some() {
            return Ok((Shape::Flat, id));
        }
        if self.numeric_leaf(id) {
            return Ok((Shape::Flat, id));
        }
        if f.role == 1 {
            if let [child] = self.children(id).as_slice()
                && self.numeric_leaf(*child)
                && self.primary_column(id).is_some()
            {
                return Ok((Shape::Jagged, *child));
            }
            return Err(format!("{} (a collection of non-numbers)", f.type_name));
        }
        Err(if f.role == 0 && NUMERIC.contains(&f.type_name.as_str()) {
            format!("{} with an unsupported column encoding", f.type_name)
        } else {
            f.type_name.clone()
        })
    }

    fn top_level(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.fields.len()).filter(|&i| self.fields[i].parent == i)
    }

    pub fn fields(&self) -> Vec<FieldInfo> {
        self.top_level()
            .map(|i| {
                let f = &self.fields[i];
                let (type_name, shape) = match self.shape(i) {
                    Ok((s, _)) => (f.type_name.clone(), Some(s)),
                    Err(why) => (why, None),
                };
                FieldInfo {
                    name: f.name.clone(),
                    type_name,
                    shape,
                    entries: self.entries,
                }
            })
            .collect()
    }

    /// All elements of `column`, cluster by cluster; also the element count per cluster.
    fn column_values(
        &self,
        f: &RootFile,
        column: usize,
        name: &str,
    ) -> Res<(Vec<f64>, Vec<usize>)> {
        // The same column in the field's other representations (one of them is primary in
        // each cluster; the others are suppressed there).
        let c0 = &self.columns[column];
        let rank = self.columns[..column]
            .iter()
            .filter(|c| c.field == c0.field && c.repr == c0.repr)
            .count();
        let alts: Vec<usize> = (0..self.columns.len())
            .filter(|&k| {
                let c = &self.columns[k];
                c.field == c0.field
                    && self.columns[..k]
                        .iter()
                        .filter(|d| d.field == c.field && d.repr == c.repr)
                        .count()
                        == rank
            })
            .collect();
        let first = usize::try_from(c0.first).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut per_cluster = Vec::new();
        let mut elements = 0usize;
        for (ci, (_, cols)) in self.clusters.iter().enumerate() {
            let before = out.len();
            let found = alts
                .iter()
                .find_map(|&k| cols.get(k).and_then(|p| p.as_ref()).map(|p| (k, p)));
            let Some((col, pages)) = found else {
                if elements < first {
                    // A deferred column before its first element: nothing stored here.
                    per_cluster.push(0);
                    continue;
                }
                return Err(Bad::Unsupported(format!(
                    "field {name}: its column is suppressed or missing in cluster {ci}"
                )));
            };
            elements += pages.iter().map(|p| p.elements).sum::<usize>();
            for (pi, p) in pages.iter().enumerate() {
                let len = page_bytes(&self.columns[col], p.elements);
                let raw = f.read_at(p.offset, p.size + if p.checksum { 8 } else { 0 })?;
                let (data, sum) = raw.split_at(p.size);
                if p.checksum {
                    let mut s = [0u8; 8];
                    s.copy_from_slice(sum);
                    if xxh3(data) != u64::from_le_bytes(s) {
                        return bad(format!(
                            "field {name}, cluster {ci}, page {pi}: checksum mismatch (damaged data)"
                        ));
                    }
                }
                let d = decompress(data, len).map_err(|e| match e {
                    Bad::Corrupt(m) => {
                        Bad::Corrupt(format!("field {name}, cluster {ci}, page {pi}: {m}"))
                    }
                    u => u,
                })?;
                decode_page(&self.columns[col], &d, p.elements, &mut out).map_err(|e| match e {
                    Bad::Corrupt(m) => {
                        Bad::Corrupt(format!("field {name}, cluster {ci}, page {pi}: {m}"))
                    }
                    u => u,
                })?;
            }
            per_cluster.push(out.len() - before);
        }
        if first > 0 && first != usize::MAX {
            let mut z = vec![0.0; first];
            z.append(&mut out);
            out = z;
            if let Some(c) = per_cluster.first_mut() {
                *c += first;
            }
        }
        Ok((out, per_cluster))
    }

    /// Item counts per entry from a collection's cluster-relative end offsets.
    fn counts(&self, ends: &[f64], name: &str) -> Res<Vec<f32>> {
        let mut out = Vec::with_capacity(ends.len());
        let mut k = 0usize;
        for (ci, (n, _)) in self.clusters.iter().enumerate() {
            let mut prev = 0.0;
            for _ in 0..*n {
                let Some(&e) = ends.get(k) else {
                    return bad(format!(
                        "field {name}: index column too short in cluster {ci}"
                    ));
                };
                k += 1;
                if e < prev {
                    return bad(format!(
                        "field {name}: bad collection index in cluster {ci}"
                    ));
                }
                out.push((e - prev) as f32);
                prev = e;
            }
        }
        Ok(out)
    }

    pub fn read(&self, f: &RootFile, name: &str) -> Res<Col> {
        let Some(id) = self.top_level().find(|&i| self.fields[i].name == name) else {
            return bad(format!("no field {name}"));
        };
        let (shape, value_field) = self.shape(id).map_err(Bad::Unsupported)?;
        if let Some(icol) = self.cardinality_column(id) {
            let (ends, _) = self.column_values(f, icol, name)?;
            return Ok(Col::Flat(self.counts(&ends, name)?));
        }
        let vcol = self
            .primary_column(value_field)
            .ok_or_else(|| Bad::Corrupt(format!("field {name} has no column")))?;
        let (values, vcounts) = self.column_values(f, vcol, name)?;
        let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
        match shape {
            Shape::Flat => Ok(Col::Flat(values)),
            _ => {
                let icol = self
                    .primary_column(id)
                    .ok_or_else(|| Bad::Corrupt(format!("field {name} has no index column")))?;
                let (ends, _) = self.column_values(f, icol, name)?;
                let mut offsets = Vec::with_capacity(ends.len() + 1);
                offsets.push(0usize);
                let mut k = 0usize;
                let mut base = 0usize;
                for (ci, (n, _)) in self.clusters.iter().enumerate() {
                    let mut prev = 0usize;
                    for _ in 0..*n {
                        let e = ends.get(k).copied().unwrap_or(-1.0);
                        k += 1;
                        let e = if e >= 0.0 { e as usize } else { usize::MAX };
                        if e < prev || e > vcounts.get(ci).copied().unwrap_or(0) {
                            return bad(format!(
                                "field {name}: bad collection index in cluster {ci}"
                            ));
                        }
                        prev = e;
                        offsets.push(base + e);
                    }
                    base += vcounts.get(ci).copied().unwrap_or(0);
                }
                if offsets.last() != Some(&values.len()) {
                    return bad(format!(
                        "field {name}: collection offsets do not match its items"
                    ));
                }
                Ok(Col::Jagged { offsets, values })
            }
        }
    }
}
