//! Writing an RNTuple of flat `float` fields, streamed: rows are buffered one cluster at a time,
//! each full cluster is written as pages straight away, and the page list, footer and anchor
//! follow at [`Writer::finish`].
//!
//! What is written (specification 1.0, as ROOT 6.34 writes it by default): one top-level leaf
//! field of type `float` per table column, with one column of type `SplitReal32` (byte-split
//! IEEE singles; plain `Real32` when uncompressed, as ROOT does); clusters of
//! [`Layout::cluster_rows`] rows, pages of at most [`Layout::page_elements`] elements, each
//! page compressed on its own and followed by its XXH3-64 checksum; the header, page list and
//! footer envelopes compressed the same way; all pages and envelopes in `RBlob` keys (see
//! [`crate::io::root::sink`]); one cluster group. The anchor declares format version 1.0.0.0
//! and a maximum key size of 1 GiB; the file's streamer information describes the anchor class
//! `ROOT::RNTuple` (version 2) exactly as ROOT writes it (uproot writes none).

use std::io::{Seek, Write};

use super::{
    ANCHOR_CLASS, COLUMN_REAL32, COLUMN_SPLIT_REAL32, ENVELOPE_FOOTER, ENVELOPE_HEADER,
    ENVELOPE_PAGE_LIST, xxh3,
};
use crate::io::root::sink::{Codec, RootSink, compress};

/// Uncompressed bytes of a cluster (all columns), which sets [`Layout::cluster_rows`].
const CLUSTER_BYTES: usize = 32 << 20;
/// Uncompressed bytes of a page.
const PAGE_BYTES: usize = 256 << 10;
/// `Max Key Size` of the anchor (ROOT's default, 1 GiB); our keys are far smaller.
const MAX_KEY_SIZE: u64 = 1 << 30;

/// How rows are cut into clusters and pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Rows per cluster (the last cluster may be shorter).
    pub cluster_rows: usize,
    /// Elements per page (the last page of a cluster may be shorter).
    pub page_elements: usize,
}

impl Layout {
    /// The default for `columns` float columns: about 32 MiB of values per cluster,
    /// 256 KiB pages.
    pub fn for_columns(columns: usize) -> Layout {
        Layout {
            cluster_rows: (CLUSTER_BYTES / (4 * columns.max(1))).max(1),
            page_elements: PAGE_BYTES / 4,
        }
    }
}

/// Why `name` cannot be an RNTuple field name (the specification's naming rules: not empty,
/// no `.`, space, `/`, `\` or control characters; ROOT refuses such fields), else `None`.
pub(crate) fn bad_field_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an RNTuple field name cannot be empty".into());
    }
    let c = name
        .chars()
        .find(|&c| matches!(c, '.' | ' ' | '/' | '\\') || c.is_control())?;
    Some(format!(
        "column {name:?}: an RNTuple field name cannot contain {c:?} (no '.', space, '/', '\\' \
         or control characters); rename the column or write a TTree"
    ))
}

/// One page: elements, offset and stored size (without its checksum).
#[derive(Clone, Copy, Debug)]
struct PageLoc {
    elements: u32,
    offset: u64,
    size: u32,
}

/// A written cluster: first entry, entries, per column its pages.
struct Cluster {
    first: u64,
    entries: u64,
    pages: Vec<Vec<PageLoc>>,
}

/// An RNTuple being written (see the module docs).
pub(crate) struct Writer<W: Write + Seek> {
    sink: RootSink<W>,
    name: String,
    codec: Codec,
    layout: Layout,
    /// The open cluster's values, one vector per column.
    pending: Vec<Vec<f32>>,
    /// Header envelope: offset, stored and uncompressed size, checksum.
    header: (u64, usize, usize, u64),
    clusters: Vec<Cluster>,
    entries: u64,
}

/// Appends a little-endian RNTuple string.
fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A record frame around `payload`.
fn record(payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 8) as i64).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A list frame of `n` items whose bytes are `items`.
fn list(n: usize, items: &[u8]) -> Vec<u8> {
    let mut out = (-((items.len() + 12) as i64)).to_le_bytes().to_vec();
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(items);
    out
}

/// An envelope of `kind` around `payload`: preamble, payload, checksum.
fn envelope(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + 16) as u64;
    let mut out = (len << 16 | u64::from(kind)).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    let sum = xxh3(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A standard locator: `i32` size, `u64` offset.
fn locator(out: &mut Vec<u8>, size: usize, offset: u64) -> std::io::Result<()> {
    let size = i32::try_from(size)
        .map_err(|_| std::io::Error::other("an RNTuple page or envelope of 2 GiB or more"))?;
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    Ok(())
}

impl<W: Write + Seek> Writer<W> {
    /// Starts the file `file_name` (the name ROOT records inside it) holding the RNTuple `name`
    /// with one `float` field per entry of `columns`.
    pub fn new(
        w: W,
        file_name: &str,
        name: &str,
        columns: &[String],
        codec: Codec,
        layout: Layout,
    ) -> std::io::Result<Self> {
        let mut sink = RootSink::new(w, file_name, codec.setting())?;
        let column_type = match codec {
            Codec::None => COLUMN_REAL32,
            _ => COLUMN_SPLIT_REAL32,
        };
        let mut fields = Vec::new();
        let mut cols = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let mut f = Vec::new();
            f.extend_from_slice(&0u32.to_le_bytes()); // field version
            f.extend_from_slice(&0u32.to_le_bytes()); // type version
            f.extend_from_slice(&(i as u32).to_le_bytes()); // parent: itself (top level)
            f.extend_from_slice(&0u16.to_le_bytes()); // structural role: leaf
            f.extend_from_slice(&0u16.to_le_bytes()); // flags
            string(&mut f, c);
            string(&mut f, "float");
            string(&mut f, ""); // type alias
            string(&mut f, ""); // description
            fields.extend_from_slice(&record(&f));
            let mut k = Vec::new();
            k.extend_from_slice(&column_type.to_le_bytes());
            k.extend_from_slice(&32u16.to_le_bytes()); // bits on storage
            k.extend_from_slice(&(i as u32).to_le_bytes()); // field
            k.extend_from_slice(&0u16.to_le_bytes()); // flags
            k.extend_from_slice(&0u16.to_le_bytes()); // representation index
            cols.extend_from_slice(&record(&k));
        }
        let mut h = 0u64.to_le_bytes().to_vec(); // feature flags
        string(&mut h, name);
        string(&mut h, ""); // description
        string(&mut h, concat!("hepflow ", env!("CARGO_PKG_VERSION")));
        h.extend_from_slice(&list(columns.len(), &fields));
        h.extend_from_slice(&list(columns.len(), &cols));
        h.extend_from_slice(&list(0, &[])); // alias columns
        h.extend_from_slice(&list(0, &[])); // extra type information
        let env = envelope(ENVELOPE_HEADER, &h);
        let sum = xxh3(&env[..env.len() - 8]);
        let stored = compress(&env, codec)?;
        let off = sink.blob(&stored, env.len())?;
        Ok(Writer {
            sink,
            name: name.to_string(),
            codec,
            layout: Layout {
                cluster_rows: layout.cluster_rows.max(1),
                page_elements: layout.page_elements.max(1),
            },
            pending: vec![Vec::new(); columns.len()],
            header: (off, stored.len(), env.len(), sum),
            clusters: Vec::new(),
            entries: 0,
        })
    }

    /// Appends rows (row-major, one value per column); full clusters are written at once.
    pub fn write(&mut self, rows: &[f32]) -> std::io::Result<()> {
        let c = self.pending.len();
        if c == 0 || !rows.len().is_multiple_of(c) {
            return Err(std::io::Error::other("a batch that is not whole rows"));
        }
        for row in rows.chunks_exact(c) {
            for (col, &v) in self.pending.iter_mut().zip(row) {
                col.push(v);
            }
            if self.pending[0].len() == self.layout.cluster_rows {
                self.flush_cluster()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered rows as a cluster.
    fn flush_cluster(&mut self) -> std::io::Result<()> {
        let n = self.pending.first().map_or(0, Vec::len);
        if n == 0 {
            return Ok(());
        }
        let split = self.codec != Codec::None;
        let mut pages = Vec::with_capacity(self.pending.len());
        let mut bytes = Vec::new();
        for j in 0..self.pending.len() {
            let mut locs = Vec::new();
            for chunk in self.pending[j].chunks(self.layout.page_elements) {
                bytes.clear();
                if split {
                    for b in 0..4 {
                        bytes.extend(chunk.iter().map(|v| v.to_le_bytes()[b]));
                    }
                } else {
                    bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                }
                let mut stored = compress(&bytes, self.codec)?;
                let size = stored.len();
                let sum = xxh3(&stored);
                stored.extend_from_slice(&sum.to_le_bytes());
                let offset = self.sink.blob(&stored, bytes.len() + 8)?;
                locs.push(PageLoc {
                    elements: chunk.len() as u32,
                    offset,
                    size: u32::try_from(size)
                        .map_err(|_| std::io::Error::other("an RNTuple page of 4 GiB"))?,
                });
            }
            pages.push(locs);
            self.pending[j].clear();
        }
        self.clusters.push(Cluster {
            first: self.entries,
            entries: n as u64,
            pages,
        });
        self.entries += n as u64;
        Ok(())
    }

    /// Writes the last cluster, the page list, the footer, the anchor and the file's closing
    /// records; returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.flush_cluster()?;
        let header_sum = self.header.3;
        let mut groups = Vec::new();
        if !self.clusters.is_empty() {
            // Page list: header checksum, cluster summaries, then per cluster, per column,
            // its pages followed by the column's first element and compression setting.
            let mut summaries = Vec::new();
            let mut per_cluster = Vec::new();
            for c in &self.clusters {
                let mut s = c.first.to_le_bytes().to_vec();
                s.extend_from_slice(&c.entries.to_le_bytes());
                summaries.extend_from_slice(&record(&s));
                let mut cols = Vec::new();
                for pages in &c.pages {
                    let mut items = Vec::new();
                    for p in pages {
                        // Negative element count: the page is followed by its checksum.
                        items.extend_from_slice(&(-(p.elements as i32)).to_le_bytes());
                        locator(&mut items, p.size as usize, p.offset)?;
                    }
                    // The frame covers the pages, the element offset and the setting.
                    let mut col = (-((items.len() + 12 + 12) as i64)).to_le_bytes().to_vec();
                    col.extend_from_slice(&(pages.len() as u32).to_le_bytes());
                    col.extend_from_slice(&items);
                    col.extend_from_slice(&(c.first as i64).to_le_bytes());
                    col.extend_from_slice(&self.codec.setting().to_le_bytes());
                    cols.extend_from_slice(&col);
                }
                per_cluster.extend_from_slice(&list(c.pages.len(), &cols));
            }
            let mut pl = header_sum.to_le_bytes().to_vec();
            pl.extend_from_slice(&list(self.clusters.len(), &summaries));
            pl.extend_from_slice(&list(self.clusters.len(), &per_cluster));
            let env = envelope(ENVELOPE_PAGE_LIST, &pl);
            let stored = compress(&env, self.codec)?;
            let off = self.sink.blob(&stored, env.len())?;
            let mut g = 0u64.to_le_bytes().to_vec(); // minimum entry
            g.extend_from_slice(&self.entries.to_le_bytes()); // entry span
            g.extend_from_slice(&(self.clusters.len() as u32).to_le_bytes());
            g.extend_from_slice(&(env.len() as u64).to_le_bytes());
            locator(&mut g, stored.len(), off)?;
            groups.extend_from_slice(&record(&g));
        }
        let mut f = 0u64.to_le_bytes().to_vec(); // feature flags
        f.extend_from_slice(&header_sum.to_le_bytes());
        let empty = [list(0, &[]), list(0, &[]), list(0, &[]), list(0, &[])].concat();
        f.extend_from_slice(&record(&empty)); // schema extension
        f.extend_from_slice(&list(usize::from(!self.clusters.is_empty()), &groups));
        let env = envelope(ENVELOPE_FOOTER, &f);
        let stored = compress(&env, self.codec)?;
        let footer_off = self.sink.blob(&stored, env.len())?;
        // The anchor (class version 2): big-endian fields, then their XXH3-64.
        let (ho, hs, hl, _) = self.header;
        let mut a = Vec::new();
        for v in [1u16, 0, 0, 0] {
            a.extend_from_slice(&v.to_be_bytes());
        }
        for v in [
            ho,
            hs as u64,
            hl as u64,
            footer_off,
            stored.len() as u64,
            env.len() as u64,
            MAX_KEY_SIZE,
        ] {
            a.extend_from_slice(&v.to_be_bytes());
        }
        let sum = xxh3(&a);
        // The byte count covers the class version and the fields, not the checksum (as ROOT's
        // RTFNTuple and uproot write it).
        let mut anchor = (0x4000_0000u32 | (a.len() + 2) as u32)
            .to_be_bytes()
            .to_vec();
        anchor.extend_from_slice(&2u16.to_be_bytes());
        anchor.extend_from_slice(&a);
        anchor.extend_from_slice(&sum.to_be_bytes());
        let name = self.name.clone();
        self.sink.object(ANCHOR_CLASS, &name, &anchor)?;
        self.sink.finish(anchor_streamer_info)
    }
}

/// Members of the anchor class `ROOT::RNTuple` (version 2): name, ROOT basic type code, size,
/// type name.
const ANCHOR_MEMBERS: [(&str, u32, u32, &str); 11] = [
    ("fVersionEpoch", 12, 2, "unsigned short"),
    ("fVersionMajor", 12, 2, "unsigned short"),
    ("fVersionMinor", 12, 2, "unsigned short"),
    ("fVersionPatch", 12, 2, "unsigned short"),
    ("fSeekHeader", 17, 8, "ULong64_t"),
    ("fNBytesHeader", 17, 8, "ULong64_t"),
    ("fLenHeader", 17, 8, "ULong64_t"),
    ("fSeekFooter", 17, 8, "ULong64_t"),
    ("fNBytesFooter", 17, 8, "ULong64_t"),
    ("fLenFooter", 17, 8, "ULong64_t"),
    ("fMaxKeySize", 17, 8, "ULong64_t"),
];

/// Class checksum of `ROOT::RNTuple` version 2, as ROOT records it.
const ANCHOR_CLASS_CHECKSUM: u32 = 0x4BA2_1BF5;

/// ROOT's streamed-object buffer: big-endian values, byte counts patched on close.
struct Buf(Vec<u8>);

impl Buf {
    /// Starts an object with a byte count; returns where to patch it.
    fn open(&mut self) -> usize {
        self.0.extend_from_slice(&[0; 4]);
        self.0.len() - 4
    }
    fn close(&mut self, at: usize) {
        let n = (self.0.len() - at - 4) as u32 | 0x4000_0000;
        self.0[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A `TString` (the names here are short).
    fn tstring(&mut self, s: &str) {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// A new class tag (`kNewClassTag`) and the NUL-terminated class name.
    fn new_class(&mut self, name: &str) {
        self.u32(0xFFFF_FFFF);
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(0);
    }
    /// A `TObject` header: version 1, id 0, `bits`.
    fn tobject(&mut self, bits: u32) {
        self.u16(1);
        self.u32(0);
        self.u32(bits);
    }
    /// A `TNamed` (version 1) with an empty title.
    fn tnamed(&mut self, name: &str, bits: u32) {
        let at = self.open();
        self.u16(1);
        self.tobject(bits);
        self.tstring(name);
        self.tstring("");
        self.close(at);
    }
}

/// The streamer information ROOT 6.34 writes in an RNTuple file: a `TList` holding the
/// `TStreamerInfo` of `ROOT::RNTuple` version 2 (11 `TStreamerBasicType` members). `keylen`
/// places the class reference that the second and later members use.
fn anchor_streamer_info(keylen: usize) -> Vec<u8> {
    let mut b = Buf(Vec::with_capacity(1300));
    let list = b.open();
    b.u16(5); // TList version
    b.tobject(0);
    b.tstring(""); // name
    b.u32(1); // one object
    let obj = b.open();
    b.new_class("TStreamerInfo");
    let info = b.open();
    b.u16(9);
    b.tnamed(ANCHOR_CLASS, 0x0001_0000);
    b.u32(ANCHOR_CLASS_CHECKSUM);
    b.u32(2); // class version
    let arr_obj = b.open();
    b.new_class("TObjArray");
    let arr = b.open();
    b.u16(3);
    b.tobject(0);
    b.tstring("");
    b.u32(ANCHOR_MEMBERS.len() as u32);
    b.u32(0); // lower bound
    let mut class_ref = None;
    for (name, kind, size, type_name) in ANCHOR_MEMBERS {
        let el = b.open();
        match class_ref {
            None => {
                // Later members refer to this class tag: its offset from the key start, + 2.
                class_ref = Some((b.0.len() + keylen + 2) as u32 | 0x8000_0000);
                b.new_class("TStreamerBasicType");
            }
            Some(r) => b.u32(r),
        }
        let basic = b.open();
        b.u16(2);
        let element = b.open();
        b.u16(4);
        b.tnamed(name, 0);
        b.u32(kind);
        b.u32(size);
        b.u32(0); // array length
        b.u32(0); // array dimensions
        for _ in 0..5 {
            b.u32(0); // maximum indices
        }
        b.tstring(type_name);
        b.close(element);
        b.close(basic);
        b.close(el);
    }
    b.close(arr);
    b.close(arr_obj);
    b.close(info);
    b.close(obj);
    b.0.push(0); // the object's option string
    b.close(list);
    b.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Matrix;
    use crate::io::root::file::RootFile;
    use crate::io::{
        Format, IoError, ReadOptions, RootFormat, Table, TableWriter, read_table, root::read_root,
    };
    use std::path::Path;

    /// Finite values of every kind: signs, tiny, huge, subnormal, zeros.
    fn table(rows: usize) -> Table {
        let data = Matrix::from_fn(rows, 3, |i, j| match j {
            0 => (i as f32 * 0.37).sin() * 1e3,
            1 => {
                f32::from_bits(0x0000_0001 + (i as u32).wrapping_mul(2_654_435_761) % 0x7F7F_FFFF)
                    * if i % 2 == 0 { 1.0 } else { -1.0 }
            }
            _ => [0.0, -0.0, f32::MAX, f32::MIN_POSITIVE, 1e-42][i % 5],
        });
        Table::new(vec!["pt".into(), "eta".into(), "m_jj".into()], data).unwrap()
    }

    fn write(p: &Path, t: &Table, layout: Layout, batches: &[usize]) -> Result<u64, IoError> {
        let mut w = TableWriter::create_layout(
            p,
            Format::Root,
            RootFormat::RNTuple,
            &t.columns,
            Some(t.rows() as u64),
            layout,
        )?;
        let mut i = 0;
        for &b in batches {
            w.write(&t.data.slice_rows(i, i + b))?;
            i += b;
        }
        w.finish()
    }

    fn bits(t: &Table) -> Vec<u32> {
        t.data.as_slice().iter().map(|v| v.to_bits()).collect()
    }

    fn clusters(p: &Path) -> usize {
        let f = RootFile::open(std::fs::File::open(p).unwrap()).unwrap();
        let key = f.keys.iter().find(|k| k.class == ANCHOR_CLASS).unwrap();
        super::super::read_ntuple(&f, key.seek)
            .unwrap()
            .cluster_count()
    }

    #[test]
    fn streamed_clusters_read_back_bit_for_bit() {
        let d = tempfile::tempdir().unwrap();
        let t = table(1000);
        let p = d.path().join("n.root");
        for (cluster_rows, page_elements, want_clusters) in
            [(1000, 65_536, 1), (256, 100, 4), (7, 3, 143), (5000, 1, 1)]
        {
            for batches in [&[1000][..], &[1, 999], &[333, 0, 333, 334]] {
                let layout = Layout {
                    cluster_rows,
                    page_elements,
                };
                assert_eq!(write(&p, &t, layout, batches).unwrap(), 1000);
                let back = read_table(&p, &ReadOptions::default()).unwrap();
                assert_eq!(back.columns, t.columns);
                assert_eq!(bits(&back), bits(&t), "{layout:?} {batches:?}");
                assert_eq!(clusters(&p), want_clusters, "{layout:?}");
            }
        }
        // Uncompressed: plain Real32 columns, the same values.
        let f = std::fs::File::create(&p).unwrap();
        let layout = Layout {
            cluster_rows: 300,
            page_elements: 128,
        };
        let mut w = Writer::new(f, "n.root", "events", &t.columns, Codec::None, layout).unwrap();
        w.write(t.data.as_slice()).unwrap();
        w.finish().unwrap();
        let back = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(bits(&back), bits(&t));
        assert_eq!(clusters(&p), 4);
    }

    #[test]
    fn anchor_streamer_info_has_roots_layout() {
        // ROOT 6.34 writes this TList in 1226 bytes (in a key of 64 bytes); the members after
        // the first refer to the first one's class tag.
        let b = anchor_streamer_info(64);
        assert_eq!(b.len(), 1226);
        assert_eq!(&b[..4], &(0x4000_0000u32 | 1222).to_be_bytes());
        let tag = b
            .windows(18)
            .position(|w| w == b"TStreamerBasicType")
            .unwrap()
            - 4;
        let r = (0x8000_0000u32 | (tag + 64 + 2) as u32).to_be_bytes();
        assert_eq!(b.windows(4).filter(|w| *w == r).count(), 10);
    }

    #[test]
    fn invalid_field_names_are_refused_before_writing() {
        let d = tempfile::tempdir().unwrap();
        let mut t = table(3);
        for bad in ["jet.pt", "m jj", "a/b", "a\\b", "tab\there", ""] {
            t.columns[1] = bad.into();
            let e = write(&d.path().join("x.root"), &t, Layout::for_columns(3), &[3])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("x.root") && e.contains("RNTuple field name"),
                "{e}"
            );
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        assert_eq!(bad_field_name("Jet_pt[0]"), None);
        assert_eq!(bad_field_name("m_jj"), None);
    }

    #[test]
    fn one_row_and_no_rows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("one.root");
        let t = table(1);
        write(&p, &t, Layout::for_columns(3), &[1]).unwrap();
        let back = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(bits(&back), bits(&t));
        // No rows: a valid RNTuple without clusters (reading it as a table is then refused).
        let p = d.path().join("none.root");
        write(&p, &table(0), Layout::for_columns(3), &[]).unwrap();
        assert_eq!(clusters(&p), 0);
        let r = read_root(&p, &ReadOptions::default()).unwrap();
        assert_eq!((r.table.rows(), r.table.columns.len()), (0, 3));
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Empty { .. }), "{e}");
    }

    #[test]
    fn failed_or_dropped_writes_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = table(100);
        let p = d.path().join("x.root");
        let layout = Layout {
            cluster_rows: 10,
            page_elements: 4,
        };
        // A NaN in a later batch: named, and no file (clusters were already written).
        let mut bad = t.clone();
        bad.data.set(57, 2, f32::NAN);
        let e = write(&p, &bad, layout, &[50, 50]).unwrap_err().to_string();
        assert!(e.contains("row 57") && e.contains("m_jj"), "{e}");
        // Fewer rows than announced.
        let e = write(&p, &t, layout, &[40]).unwrap_err().to_string();
        assert!(e.contains("40 rows written where 100"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn damaged_files_give_named_errors_or_the_right_values() {
        let d = tempfile::tempdir().unwrap();
        let t = table(300);
        let p = d.path().join("ok.root");
        let layout = Layout {
            cluster_rows: 100,
            page_elements: 64,
        };
        write(&p, &t, layout, &[300]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let q = d.path().join("bad.root");
        let (mut errors, mut same) = (0, 0);
        for k in (0..bytes.len()).step_by(13) {
            let mut b = bytes.clone();
            b[k] ^= 0x24;
            std::fs::write(&q, &b).unwrap();
            match read_table(&q, &ReadOptions::default()) {
                // Bytes the reader does not use (times, key headers of pages) may change.
                Ok(back) => {
                    assert_eq!(bits(&back), bits(&t), "flip at {k}");
                    same += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("bad.root"), "{e}");
                    errors += 1;
                }
            }
        }
        assert!(
            errors > 100 && same > 0,
            "{errors} errors, {same} unchanged"
        );
        // Cut short anywhere: a named error, or the full values when only the free-segment
        // record at the very end (which readers do not need) was lost.
        for cut in (0..bytes.len()).step_by(29) {
            std::fs::write(&q, &bytes[..cut]).unwrap();
            match read_table(&q, &ReadOptions::default()) {
                Ok(back) => {
                    assert!(cut > bytes.len() - 80, "cut at {cut} read");
                    assert_eq!(bits(&back), bits(&t), "cut at {cut}");
                }
                Err(e) => assert!(e.to_string().contains("bad.root"), "cut {cut}: {e}"),
            }
        }
    }
}
