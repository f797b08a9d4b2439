//! A TTree reader for numeric leaf branches: flat (`x/F`), fixed-size arrays (`x[3]/F`) and
//! variable-length arrays with a counter branch (`Jet_pt[nJet]/F`, the NanoAOD layout), and
//! `std::vector` of numbers as ROOT writes `tree->Branch("Jet_pt", &vec)` (a `TBranchElement`
//! of class `vector<float>`, `vector<int>`, ...: each entry is streamed as a 4-byte byte count,
//! a 2-byte version, an `i32` element count and the values, the same `Jet_pt[k]` selection as
//! the NanoAOD arrays).
//!
//! The TTree object is decoded from its streamed form (ROOT 6: `TTree` class versions 19-20,
//! `TBranch` 12-13, `TLeaf` 2), following the byte counts that prefix every versioned object so
//! that unknown members are skipped. Each branch lists its baskets (`fBasketSeek`,
//! `fBasketEntry`); a basket is a key whose extra header fields give `fNevBuf` (entries) and
//! `fLast` (end of the values); values are big-endian. A variable-length branch stores after
//! its values the byte offset of every entry (`fNevBuf` `i32`s, counted from the key start).
//! Only the baskets of the branches asked for are read.

use std::collections::HashMap;

use super::file::{Bad, Cursor, Res, RootFile, bad};
use super::{Col, FieldInfo, Shape};

const BYTE_COUNT_MASK: u32 = 0x4000_0000;
const NEW_CLASS_TAG: u32 = 0xFFFF_FFFF;
const CLASS_MASK: u32 = 0x8000_0000;
const MAP_OFFSET: usize = 2;

/// Numeric element type of a leaf.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    Bool,
}

impl Num {
    fn width(self) -> usize {
        match self {
            Num::I8 | Num::U8 | Num::Bool => 1,
            Num::I16 | Num::U16 => 2,
            Num::I32 | Num::U32 | Num::F32 => 4,
            Num::I64 | Num::U64 | Num::F64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Num::I8 => "int8",
            Num::U8 => "uint8",
            Num::I16 => "int16",
            Num::U16 => "uint16",
            Num::I32 => "int32",
            Num::U32 => "uint32",
            Num::I64 => "int64",
            Num::U64 => "uint64",
            Num::F32 => "float32",
            Num::F64 => "float64",
            Num::Bool => "bool",
        }
    }

    /// Decodes big-endian values, appending them to `out` as `f32`.
    fn decode(self, b: &[u8], out: &mut Vec<f32>) {
        let w = self.width();
        out.extend(b.chunks_exact(w).map(|c| {
            let mut a = [0u8; 8];
            a[..w].copy_from_slice(c);
            match self {
                Num::I8 => c[0] as i8 as f32,
                Num::U8 => c[0] as f32,
                Num::Bool => f32::from(u8::from(c[0] != 0)),
                Num::I16 => i16::from_be_bytes([a[0], a[1]]) as f32,
                Num::U16 => u16::from_be_bytes([a[0], a[1]]) as f32,
                Num::I32 => i32::from_be_bytes([a[0], a[1], a[2], a[3]]) as f32,
                Num::U32 => u32::from_be_bytes([a[0], a[1], a[2], a[3]]) as f32,
                Num::F32 => f32::from_be_bytes([a[0], a[1], a[2], a[3]]),
                Num::I64 => i64::from_be_bytes(a) as f32,
                Num::U64 => u64::from_be_bytes(a) as f32,
                Num::F64 => f64::from_be_bytes(a) as f32,
            }
        }));
    }
}

#[derive(Debug)]
struct Leaf {
    class: String,
    title: String,
    len: i32,
    unsigned: bool,
}

/// What a `TBranchElement` holds (ROOT 6, class version 10).
#[derive(Debug)]
struct Element {
    /// The C++ class, e.g. `vector<float>`.
    class: String,
    /// `fType`: 0 for a top-level object that is not split.
    btype: i32,
    /// `fStreamerType`: -1 for an STL container streamed as a whole.
    streamer_type: i32,
}

/// Bytes before the values of a streamed `std::vector` entry: byte count, version, size.
const VECTOR_HEADER: usize = 10;

#[derive(Debug)]
struct Branch {
    name: String,
    /// For a `TBranchElement`: its class and streaming.
    element: Option<Element>,
    leaves: Vec<Leaf>,
    sub: usize,
    entries: i64,
    basket_entry: Vec<i64>,
    basket_seek: Vec<i64>,
    write_basket: usize,
    embedded: Vec<Embedded>,
}

enum Obj {
    Branch(Branch),
    Leaf(Leaf),
    Basket(Embedded),
}

/// A decoded TTree.
pub(crate) struct Tree {
    pub entries: usize,
    branches: Vec<Branch>,
}

/// Reads a version header; `(version, end)` where `end` is the byte after the object when
/// it carries a byte count.
fn version(c: &mut Cursor) -> Res<(i16, Option<usize>)> {
    let start = c.pos;
    let bcnt = c.u32()?;
    if bcnt & BYTE_COUNT_MASK != 0 {
        let v = c.i16()?;
        let end = start + 4 + (bcnt & !BYTE_COUNT_MASK) as usize;
        if end > c.buf.len() {
            return bad(format!(
                "an object's byte count {bcnt:#x} runs past its record"
            ));
        }
        Ok((v, Some(end)))
    } else {
        c.seek(start)?;
        Ok((c.i16()?, None))
    }
}

fn skip_versioned(c: &mut Cursor) -> Res<()> {
    match version(c)? {
        (_, Some(end)) => c.seek(end),
        (v, None) => bad(format!("an object (version {v}) without byte count")),
    }
}

fn tobject(c: &mut Cursor) -> Res<()> {
    let v = c.i16()?;
    if (v as u16) & 0x4000 != 0 {
        c.take(4)?;
    }
    let _id = c.u32()?;
    let bits = c.u32()?;
    if bits & (1 << 4) != 0 {
        c.take(2)?;
    }
    Ok(())
}

fn tnamed(c: &mut Cursor) -> Res<(String, String)> {
    let (_, end) = version(c)?;
    tobject(c)?;
    let name = c.tstring()?;
    let title = c.tstring()?;
    if let Some(e) = end {
        c.seek(e)?;
    }
    Ok((name, title))
}

fn obj_array(c: &mut Cursor, refs: &mut HashMap<usize, String>) -> Res<Vec<Obj>> {
    let (_, end) = version(c)?;
    tobject(c)?;
    let _name = c.tstring()?;
    let n = c.i32()?;
    let _low = c.i32()?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        if let Some(o) = object_any(c, refs)? {
            out.push(o);
        }
    }
    if let Some(e) = end {
        c.seek(e)?;
    }
    Ok(out)
}

fn object_any(c: &mut Cursor, refs: &mut HashMap<usize, String>) -> Res<Option<Obj>> {
    let p0 = c.pos;
    let bcnt = c.u32()?;
    let (start, tag, end) = if bcnt & BYTE_COUNT_MASK == 0 || bcnt == NEW_CLASS_TAG {
        (None, bcnt, None)
    } else {
        let start = c.displacement();
        let end = p0 + 4 + (bcnt & !BYTE_COUNT_MASK) as usize;
        (Some(start), c.u32()?, Some(end))
    };
    if tag & CLASS_MASK == 0 {
        // A null pointer or a reference to an object read before: nothing new.
        if let Some(e) = end {
            c.seek(e)?;
        }
        return Ok(None);
    }
    let class = if tag == NEW_CLASS_TAG {
        let name = c.cstring()?;
        let key = match start {
            Some(s) => s + MAP_OFFSET,
            None => refs.len() + 1,
        };
        refs.insert(key, name.clone());
        name
    } else {
        let r = (tag & !CLASS_MASK) as usize;
        match refs.get(&r) {
            Some(n) => n.clone(),
            None => return bad(format!("a reference to an unknown class (tag {tag:#x})")),
        }
    };
    let obj = match class.as_str() {
        "TBranch" => Some(Obj::Branch(branch(c, refs)?)),
        "TBranchElement" => {
            // A TBranch base, then fClassName, fParentName, fClonesName, fCheckSum,
            // fClassVersion, fID, fType, fStreamerType, ... (the rest is skipped).
            let (v, _) = version(c)?;
            let mut b = branch(c, refs)?;
            b.leaves
                .iter_mut()
                .for_each(|l| l.class = "TLeafElement".into());
            if v == 10 {
                let class = c.tstring()?;
                let _parent = c.tstring()?;
                let _clones = c.tstring()?;
                let _checksum = c.u32()?;
                let _class_version = c.i16()?;
                let _id = c.i32()?;
                let btype = c.i32()?;
                let streamer_type = c.i32()?;
                b.element = Some(Element {
                    class,
                    btype,
                    streamer_type,
                });
            }
            Some(Obj::Branch(b))
        }
        c_ if c_.starts_with("TLeaf") => Some(Obj::Leaf(leaf(c, refs, &class)?)),
        "TBasket" => Some(Obj::Basket(embedded_basket(c)?)),
        _ if end.is_some() => None,
        other => return bad(format!("an object of class {other} without byte count")),
    };
    if let Some(e) = end {
        c.seek(e)?;
    }
    Ok(obj)
}

fn leaf(c: &mut Cursor, refs: &mut HashMap<usize, String>, class: &str) -> Res<Leaf> {
    let (_, end) = version(c)?;
    let (_, base_end) = version(c)?;
    let (_name, title) = tnamed(c)?;
    let len = c.i32()?;
    let _len_type = c.i32()?;
    let _offset = c.i32()?;
    let _is_range = c.u8()?;
    let unsigned = c.u8()? != 0;
    let _count = object_any(c, refs)?;
    if let Some(e) = base_end {
        c.seek(e)?;
    }
    if let Some(e) = end {
        c.seek(e)?;
    }
    Ok(Leaf {
        class: class.to_string(),
        title,
        len,
        unsigned,
    })
}

fn array_i64(c: &mut Cursor, n: usize, wide: bool) -> Res<Vec<i64>> {
    let _flag = c.u8()?;
    (0..n)
        .map(|_| {
            if wide {
                c.i64()
            } else {
                c.i32().map(i64::from)
            }
        })
        .collect()
}

fn branch(c: &mut Cursor, refs: &mut HashMap<usize, String>) -> Res<Branch> {
    let (v, end) = version(c)?;
    if !(12..=13).contains(&v) {
        return Err(Bad::Unsupported(format!(
            "TBranch class version {v} (written by an old ROOT) is not supported"
        )));
    }
    let (name, _title) = tnamed(c)?;
    skip_versioned(c)?; // TAttFill
    let _compress = c.i32()?;
    let _basket_size = c.i32()?;
    let _entry_offset_len = c.i32()?;
    let write_basket = c.i32()?;
    let _entry_number = c.i64()?;
    if v >= 13 {
        skip_versioned(c)?; // TIOFeatures
    }
    let _offset = c.i32()?;
    let max_baskets =
        usize::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fMaxBaskets".into()))?;
    let _split = c.i32()?;
    let entries = c.i64()?;
    let _first = c.i64()?;
    let _tot = c.i64()?;
    let _zip = c.i64()?;
    let subs = obj_array(c, refs)?;
    let leaves = obj_array(c, refs)?
        .into_iter()
        .filter_map(|o| match o {
            Obj::Leaf(l) => Some(l),
            _ => None,
        })
        .collect();
    let embedded = obj_array(c, refs)?
        .into_iter()
        .filter_map(|o| match o {
            Obj::Basket(b) => Some(b),
            _ => None,
        })
        .collect();
    if max_baskets > c.buf.len() {
        return bad(format!(
            "branch {name}: fMaxBaskets {max_baskets} is implausible"
        ));
    }
    let _bytes = array_i64(c, max_baskets, false)?;
    let basket_entry = array_i64(c, max_baskets, true)?;
    let basket_seek = array_i64(c, max_baskets, true)?;
    if let Some(e) = end {
        c.seek(e)?;
    }
    let write_basket = usize::try_from(write_basket)
        .ok()
        .filter(|&w| w <= max_baskets)
        .ok_or_else(|| Bad::Corrupt(format!("branch {name}: bad fWriteBasket {write_basket}")))?;
    Ok(Branch {
        name,
        element: None,
        leaves,
        sub: subs.len(),
        entries,
        basket_entry,
        basket_seek,
        write_basket,
        embedded,
    })
}

/// The start of each of the `nev` entries in a basket's `content` (`border` bytes), from the
/// entry-offset table `offs` that follows it (a count, then one `i32` per entry, counted from
/// the key start, i.e. including `keylen`).
fn entry_starts(
    (name, i): (&str, usize),
    nev: usize,
    keylen: usize,
    border: usize,
    offs: &[u8],
) -> Res<Vec<usize>> {
    let mut oc = Cursor::new(offs, 0);
    let _n = oc.i32()?;
    let mut prev = 0usize;
    let mut starts = Vec::with_capacity(nev);
    for _ in 0..nev {
        let o = oc.i32()?;
        let o = usize::try_from(o)
            .ok()
            .and_then(|o| o.checked_sub(keylen))
            .filter(|&o| o >= prev && o <= border)
            .ok_or_else(|| {
                Bad::Corrupt(format!("branch {name}, basket {i}: bad entry offset {o}"))
            })?;
        starts.push(o);
        prev = o;
    }
    Ok(starts)
}

/// Appends the values of one basket: `content` is the values (`nev` entries), `offs` (jagged
/// branches) the entry-offset table that follows them (see [`entry_starts`]); `header` is the
/// bytes before each entry's values ([`VECTOR_HEADER`] for a `std::vector`, else 0).
fn decode_basket(
    (name, i, shape, num, header): (&str, usize, Shape, Num, usize),
    nev: usize,
    keylen: usize,
    content: &[u8],
    offs: &[u8],
    (values, offsets): (&mut Vec<f32>, &mut Vec<usize>),
) -> Res<()> {
    let w = num.width();
    let border = content.len();
    match shape {
        Shape::Flat | Shape::Fixed(_) => {
            let per = match shape {
                Shape::Fixed(n) => n,
                _ => 1,
            };
            if content.len() != nev * per * w {
                return bad(format!(
                    "branch {name}, basket {i}: {} bytes for {nev} entries of {per} x {w} bytes",
                    content.len()
                ));
            }
        }
        Shape::Jagged if header > 0 => {
            // Each entry: byte count, version, element count, then the values.
            let starts = entry_starts((name, i), nev, keylen, border, offs)?;
            for (k, &s) in starts.iter().enumerate() {
                let e = starts.get(k + 1).copied().unwrap_or(border);
                let entry = &content[s..e];
                let count = entry
                    .get(6..header)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let body = entry.get(header..).unwrap_or_default();
                match count.and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n.checked_mul(w) == Some(body.len()) => {
                        num.decode(body, values);
                        offsets.push(offsets.last().copied().unwrap_or(0) + n);
                    }
                    _ => {
                        return bad(format!(
                            "branch {name}, basket {i}: entry {k} is not a vector of {} ({} bytes)",
                            num.name(),
                            entry.len()
                        ));
                    }
                }
            }
            return Ok(());
        }
        Shape::Jagged => {
            let starts = entry_starts((name, i), nev, keylen, border, offs)?;
            for (k, &s) in starts.iter().enumerate() {
                let e = starts.get(k + 1).copied().unwrap_or(border);
                offsets.push(offsets.last().copied().unwrap_or(0) + (e - s) / w);
            }
        }
    }
    num.decode(content, values);
    Ok(())
}

/// A basket stored inside the TTree object (the last, unflushed basket of a branch).
#[derive(Debug)]
struct Embedded {
    nev: usize,
    keylen: usize,
    content: Vec<u8>,
    offsets: Vec<u8>,
}

/// Reads a TBasket streamed inside the TTree: its key header, the TBasket fields, the entry
/// offsets when the entries have different sizes, a second copy of the key, then the values.
fn embedded_basket(c: &mut Cursor) -> Res<Embedded> {
    let start = c.pos;
    let _nbytes = c.i32()?;
    let _v = c.i16()?;
    let _objlen = c.i32()?;
    let _datime = c.u32()?;
    let keylen = usize::try_from(c.i16()?).map_err(|_| Bad::Corrupt("negative fKeylen".into()))?;
    c.seek(start + keylen.saturating_sub(19))?;
    let _bv = c.u16()?;
    let _buf = c.i32()?;
    let nev_size = usize::try_from(c.i32()?).unwrap_or(0);
    let nev = usize::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fNevBuf".into()))?;
    let last = usize::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fLast".into()))?;
    c.u8()?;
    let border = last
        .checked_sub(keylen)
        .ok_or_else(|| Bad::Corrupt("fLast before the key end".into()))?;
    let offsets = if nev_size
        .checked_mul(nev)
        .and_then(|x| x.checked_add(keylen))
        != Some(last)
    {
        c.take(4 + 4 * nev)?.to_vec()
    } else {
        Vec::new()
    };
    c.take(keylen)?;
    let content = c.take(border)?.to_vec();
    Ok(Embedded {
        nev,
        keylen,
        content,
        offsets,
    })
}

/// Decodes the TTree stored in the key at `seek`.
pub(crate) fn read_tree(f: &RootFile, seek: u64) -> Res<Tree> {
    let (kh, data) = f.object(seek)?;
    let mut c = Cursor::new(&data, kh.keylen);
    let mut refs = HashMap::new();
    let (v, _) = version(&mut c)?;
    if !(19..=20).contains(&v) {
        return Err(Bad::Unsupported(format!(
            "TTree class version {v} is not supported (ROOT 6 writes 19 or 20)"
        )));
    }
    tnamed(&mut c)?;
    for _ in 0..3 {
        skip_versioned(&mut c)?; // TAttLine, TAttFill, TAttMarker
    }
    let entries = c.i64()?;
    for _ in 0..4 {
        c.i64()?; // fTotBytes, fZipBytes, fSavedBytes, fFlushedBytes
    }
    let _weight = c.f64()?;
    for _ in 0..4 {
        c.i32()?; // fTimerInterval, fScanField, fUpdate, fDefaultEntryOffsetLen
    }
    let n_cluster =
        usize::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fNClusterRange".into()))?;
    for _ in 0..6 {
        c.i64()?; // fMaxEntries .. fEstimate
    }
    if n_cluster > data.len() {
        return bad("implausible fNClusterRange");
    }
    array_i64(&mut c, n_cluster, true)?;
    array_i64(&mut c, n_cluster, true)?;
    if v >= 20 {
        skip_versioned(&mut c)?; // TIOFeatures
    }
    let branches = obj_array(&mut c, &mut refs)?
        .into_iter()
        .filter_map(|o| match o {
            Obj::Branch(b) => Some(b),
            _ => None,
        })
        .collect();
    let entries = usize::try_from(entries)
        .map_err(|_| Bad::Corrupt(format!("negative entry count {entries}")))?;
    Ok(Tree { entries, branches })
}

/// Parses a leaf title `name[dim]` into the dimension text.
fn leaf_dim(title: &str) -> Option<&str> {
    let open = title.find('[')?;
    let close = title[open..].find(']')? + open;
    Some(&title[open + 1..close])
}

/// The element type of a `vector<T>` (or `vector<T, Allocator>`) class name of numbers.
fn vector_of(class: &str) -> Option<Num> {
    let inner = class
        .trim()
        .strip_prefix("std::")
        .unwrap_or(class.trim())
        .strip_prefix("vector<")?
        .strip_suffix('>')?;
    // RDataFrame snapshots of RVecs name an allocator: `vector<float,ROOT::...<float> >`.
    let inner = inner.split(',').next().unwrap_or(inner).trim();
    Some(match inner {
        "float" | "Float_t" => Num::F32,
        "double" | "Double_t" => Num::F64,
        "char" | "Char_t" | "signed char" | "int8_t" | "std::int8_t" => Num::I8,
        "unsigned char" | "UChar_t" | "uint8_t" | "std::uint8_t" => Num::U8,
        "short" | "Short_t" | "int16_t" | "std::int16_t" => Num::I16,
        "unsigned short" | "UShort_t" | "uint16_t" | "std::uint16_t" => Num::U16,
        "int" | "Int_t" | "int32_t" | "std::int32_t" => Num::I32,
        "unsigned int" | "UInt_t" | "uint32_t" | "std::uint32_t" => Num::U32,
        "long" | "long long" | "Long64_t" | "Long_t" | "int64_t" | "std::int64_t" => Num::I64,
        "unsigned long" | "unsigned long long" | "ULong64_t" | "ULong_t" | "uint64_t"
        | "std::uint64_t" => Num::U64,
        "bool" | "Bool_t" => Num::Bool,
        _ => return None,
    })
}

impl Tree {
    /// Element type, shape and per-entry header bytes of a readable branch, else why not.
    fn num(b: &Branch) -> Result<(Num, Shape, usize), String> {
        if b.sub > 0 {
            return Err("a split object with sub-branches".into());
        }
        let [l] = b.leaves.as_slice() else {
            return Err(format!("{} leaves (a leaf list)", b.leaves.len()));
        };
        let num = match (l.class.as_str(), l.unsigned) {
            ("TLeafB", false) => Num::I8,
            ("TLeafB", true) => Num::U8,
            ("TLeafS", false) => Num::I16,
            ("TLeafS", true) => Num::U16,
            ("TLeafI", false) => Num::I32,
            ("TLeafI", true) => Num::U32,
            ("TLeafL" | "TLeafG", false) => Num::I64,
            ("TLeafL" | "TLeafG", true) => Num::U64,
            ("TLeafF", _) => Num::F32,
            ("TLeafD", _) => Num::F64,
            ("TLeafO", _) => Num::Bool,
            ("TLeafElement", _) => {
                return match &b.element {
                    Some(e) if e.btype == 0 && e.streamer_type == -1 => match vector_of(&e.class) {
                        Some(n) => Ok((n, Shape::Jagged, VECTOR_HEADER)),
                        None => Err(format!("{} (not a vector of numbers)", e.class)),
                    },
                    Some(e) => Err(format!("{} (a C++ object)", e.class)),
                    None => Err("a C++ object or std::vector".into()),
                };
            }
            ("TLeafC", _) => return Err("a string".into()),
            (other, _) => return Err(format!("leaf type {other}")),
        };
        let shape = match leaf_dim(&l.title) {
            None if l.len == 1 => Shape::Flat,
            Some(d) if d.parse::<usize>().is_ok() && l.title.matches('[').count() == 1 => {
                Shape::Fixed(usize::try_from(l.len).unwrap_or(0))
            }
            Some(_) if l.title.matches('[').count() == 1 => Shape::Jagged,
            _ => return Err(format!("a multi-dimensional array ({})", l.title)),
        };
        Ok((num, shape, 0))
    }

    /// Every top-level branch: readable ones with their shape, others with why not.
    pub fn fields(&self) -> Vec<FieldInfo> {
        self.branches
            .iter()
            .map(|b| match Tree::num(b) {
                Ok((n, shape, _)) => FieldInfo {
                    name: b.name.clone(),
                    type_name: n.name().to_string(),
                    shape: Some(shape),
                    entries: self.entries,
                },
                Err(why) => FieldInfo {
                    name: b.name.clone(),
                    type_name: why,
                    shape: None,
                    entries: self.entries,
                },
            })
            .collect()
    }

    /// Reads branch `name` (which [`Tree::fields`] reported as readable).
    pub fn read(&self, f: &RootFile, name: &str) -> Res<Col> {
        let Some(b) = self.branches.iter().find(|b| b.name == name) else {
            return bad(format!("no branch {name}"));
        };
        let (num, shape, header) = Tree::num(b).map_err(Bad::Unsupported)?;
        let mut values = Vec::new();
        let mut offsets = vec![0usize];
        let mut seen = 0usize;
        for i in 0..b.write_basket {
            let seek = u64::try_from(b.basket_seek[i])
                .map_err(|_| Bad::Corrupt(format!("branch {name}: negative basket position")))?;
            let (kh, data) = f.object(seek).map_err(|e| match e {
                Bad::Corrupt(m) => Bad::Corrupt(format!("branch {name}, basket {i}: {m}")),
                Bad::Unsupported(m) => Bad::Unsupported(format!("branch {name}: {m}")),
            })?;
            // TBasket fields after the key strings.
            let mut c = Cursor::new(&kh.raw, 0);
            c.take(4)?;
            let kv = c.i16()?;
            c.take(4 + 4 + 2 + 2)?;
            c.take(if kv > 1000 { 16 } else { 8 })?;
            for _ in 0..3 {
                c.tstring()?;
            }
            let _bv = c.i16()?;
            let _buf_size = c.i32()?;
            let _nev_size = c.i32()?;
            let nev =
                usize::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fNevBuf".into()))?;
            let last =
                usize::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fLast".into()))?;
            let border = last
                .checked_sub(kh.keylen)
                .filter(|&b| b <= data.len())
                .ok_or_else(|| {
                    Bad::Corrupt(format!("branch {name}, basket {i}: bad fLast {last}"))
                })?;
            let expect =
                b.basket_entry.get(i + 1).copied().unwrap_or(b.entries) - b.basket_entry[i];
            if i + 1 < b.write_basket && expect != nev as i64 {
                return bad(format!(
                    "branch {name}, basket {i}: {nev} entries where the branch says {expect}"
                ));
            }
            decode_basket(
                (name, i, shape, num, header),
                nev,
                kh.keylen,
                &data[..border],
                &data[border..],
                (&mut values, &mut offsets),
            )?;
            seen += nev;
        }
        for (j, e) in b.embedded.iter().enumerate() {
            decode_basket(
                (name, b.write_basket + j, shape, num, header),
                e.nev,
                e.keylen,
                &e.content,
                &e.offsets,
                (&mut values, &mut offsets),
            )?;
            seen += e.nev;
        }
        if seen != self.entries {
            return Err(Bad::Unsupported(format!(
                "branch {name} has {seen} entries in its baskets for {} in the tree (a basket \
                 kept inside the TTree object, as left by a file not closed properly, is not \
                 supported)",
                self.entries
            )));
        }
        Ok(match shape {
            Shape::Flat => Col::Flat(values),
            Shape::Fixed(n) => Col::Jagged {
                offsets: (0..=seen).map(|i| i * n).collect(),
                values,
            },
            Shape::Jagged => {
                if offsets.last().copied() != Some(values.len()) {
                    return bad(format!(
                        "branch {name}: entry offsets do not match its values"
                    ));
                }
                Col::Jagged { offsets, values }
            }
        })
    }
}
