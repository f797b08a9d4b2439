//! CERN ROOT files: TTrees and RNTuples of numeric columns are tables.
//!
//! Reading takes the TTree or RNTuple named in [`crate::io::ReadOptions::tree`] (a path such as
//! `dir/sub/events` for one inside subdirectories, as uproot names it), else the first one of
//! the top directory, else the only one in any subdirectory (several are an error that lists
//! them). Without a column selection every flat numeric column (`float`,
//! `double`, integers, `bool`, converted to `f32`) is kept and other columns are skipped with a
//! note; with one, only the selected columns are read and decoded. `name[k]` selects element
//! `k` of an array column (a NanoAOD `Jet_pt[nJet]` branch, an RNTuple `std::vector<float>`
//! field): events with fewer elements are dropped (counted in [`RootRead::dropped`]) unless
//! [`crate::io::ReadOptions::fill`] gives a value for them.
//!
//! The container ([`file`]), the TTree decoder ([`ttree`]) and the RNTuple decoder
//! ([`crate::io::rntuple`]) are our own: they read every compression ROOT writes (zlib, LZ4,
//! LZMA, ZSTD, none). Writing creates a TTree named `events` with one `float` branch per column
//! through `oxyroot`, or an RNTuple named `events` with our own writer
//! ([`crate::io::rntuple::write`], in the container written by [`sink`]).
//!
//! The decoders check every length against the data they have, so damaged input is an
//! [`IoError::Corrupt`]; as a last line of defence a panic inside them (or inside `oxyroot`
//! while writing) is caught, reported as an error and not printed.

pub(in crate::io) mod file;
pub(in crate::io) mod sink;
mod ttree;

use std::path::Path;

use oxyroot::{RootFile as OxyFile, WriterTree};

use super::columnar;
use super::describe::ColumnInfo;
use super::rntuple;
use super::{IoError, ReadOptions, Table};
use file::{Bad, RootFile};

/// Name of the TTree written by [`write_root`] and of the RNTuple written by
/// [`crate::io::TableWriter`].
pub const TREE_NAME: &str = "events";

/// The shape of a numeric column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value per event.
    Flat,
    /// `n` values per event.
    Fixed(usize),
    /// A variable number of values per event.
    Jagged,
}

/// A column as a container reports it; `shape` is `None` when it cannot be read as numbers
/// (then `type_name` says what it is).
#[derive(Clone, Debug)]
pub(crate) struct FieldInfo {
    pub name: String,
    pub type_name: String,
    pub shape: Option<Shape>,
    pub entries: usize,
}

/// Decoded values of one column.
#[derive(Clone, Debug)]
pub(crate) enum Col {
    /// One value per event.
    Flat(Vec<f32>),
    /// Event `i` has `values[offsets[i]..offsets[i + 1]]`.
    Jagged {
        offsets: Vec<usize>,
        values: Vec<f32>,
    },
}

/// A table read from a ROOT or Parquet file, with what the reader left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RootRead {
    /// The selected columns.
    pub table: Table,
    /// Events dropped because an array column had no element `k` for a `name[k]` selection.
    pub dropped: usize,
    /// Columns skipped (not numeric, or arrays without an element selection), one line each.
    pub notes: Vec<String>,
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> IoError {
    IoError::Corrupt {
        file: path.to_path_buf(),
        format: "ROOT",
        reason: reason.to_string(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Unsupported {
        file: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn from_bad(path: &Path, e: Bad) -> IoError {
    match e {
        Bad::Corrupt(m) => corrupt(path, m),
        Bad::Unsupported(m) => unsupported(path, m),
    }
}

/// A TTree or an RNTuple.
enum Source {
    Tree(ttree::Tree),
    NTuple(rntuple::NTuple),
}

impl Source {
    fn fields(&self) -> Vec<FieldInfo> {
        match self {
            Source::Tree(t) => t.fields(),
            Source::NTuple(n) => n.fields(),
        }
    }

    fn entries(&self) -> usize {
        match self {
            Source::Tree(t) => t.entries,
            Source::NTuple(n) => n.entries,
        }
    }

    fn read(&self, f: &RootFile, name: &str) -> Result<Col, Bad> {
        match self {
            Source::Tree(t) => t.read(f, name),
            Source::NTuple(n) => n.read(f, name),
        }
    }
}

/// Whether a key's class is one we read as a table.
fn usable(class: &str) -> bool {
    class == "TTree" || class == rntuple::ANCHOR_CLASS
}

/// The objects of the file at `path` (directories included), as `(path, class)`, depth first
/// (a directory is followed by its contents), e.g. `("dir/sub/events", "TTree")`.
pub fn root_objects(path: &Path) -> Result<Vec<(String, String)>, IoError> {
    let fh = super::open(path)?;
    super::guard(path, "ROOT", || {
        let f = RootFile::open(fh).map_err(|e| from_bad(path, e))?;
        Ok(f.keys.into_iter().map(|k| (k.path, k.class)).collect())
    })
}

/// `dir;1/events;2` as uproot and ROOT name keys: the path without cycles (`dir/events`) and
/// the cycle each segment asks for (`None` where it gives none, or where `;` is not followed by
/// a number, which then stays part of the name).
fn split_cycles(name: &str) -> (String, Vec<Option<i16>>) {
    let mut path = Vec::new();
    let mut cycles = Vec::new();
    for seg in name.split('/') {
        match seg.rsplit_once(';').map(|(b, c)| (b, c.parse::<i16>())) {
            Some((base, Ok(c))) => {
                path.push(base);
                cycles.push(Some(c));
            }
            _ => {
                path.push(seg);
                cycles.push(None);
            }
        }
    }
    (path.join("/"), cycles)
}

/// Checks each cycle asked for against the key of that path prefix. hepflow keeps the newest
/// cycle of each name (ROOT's default), so an older cycle is an error naming the newest.
fn check_cycles(f: &RootFile, path: &str, cycles: &[Option<i16>]) -> Result<(), String> {
    let segs: Vec<&str> = path.split('/').collect();
    for (i, c) in cycles.iter().enumerate() {
        let Some(c) = *c else { continue };
        let prefix = segs[..=i].join("/");
        match f.keys.iter().find(|k| k.path == prefix) {
            Some(k) if k.cycle != c => {
                return Err(format!(
                    "hepflow reads only the newest cycle of each name, and cycle {c} of \
                     {prefix:?} is not it: use {prefix};{} or the bare name",
                    k.cycle
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The key of the TTree or RNTuple at `name` (`dir/sub/tree`, a leading `/` allowed, cycles
/// `tree;1` as uproot lists them allowed when they name the newest cycle), else
/// the first one of the top directory, else the only one in any subdirectory.
fn choose_key(f: &RootFile, path: &Path, name: Option<&str>) -> Result<file::Key, IoError> {
    let list = |keys: &mut dyn Iterator<Item = &file::Key>| {
        keys.map(|k| format!("{} ({})", k.path, k.class))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let objects = || list(&mut f.keys.iter().filter(|k| !k.is_directory()));
    if let Some(n) = name {
        let (want, cycles) = split_cycles(n.trim_start_matches('/'));
        check_cycles(f, &want, &cycles).map_err(|e| unsupported(path, format!("{n:?}: {e}")))?;
        return match f.keys.iter().find(|k| k.path == want) {
            Some(k) if usable(&k.class) => Ok(k.clone()),
            Some(k) => Err(unsupported(
                path,
                format!("object {n:?} is a {}, not a TTree or RNTuple", k.class),
            )),
            None => Err(unsupported(
                path,
                format!(
                    "no TTree or RNTuple named {n:?}; objects in the file: {}",
                    objects()
                ),
            )),
        };
    }
    if let Some(k) = f.keys.iter().find(|k| usable(&k.class) && k.path == k.name) {
        return Ok(k.clone());
    }
    let nested: Vec<&file::Key> = f.keys.iter().filter(|k| usable(&k.class)).collect();
    match nested.as_slice() {
        [k] => Ok((*k).clone()),
        [] => Err(unsupported(
            path,
            format!(
                "the file contains no TTree or RNTuple (objects: {})",
                objects()
            ),
        )),
        _ => Err(unsupported(
            path,
            format!(
                "the file has several TTrees or RNTuples in subdirectories; choose one as \
                 FILE:PATH: {}",
                list(&mut nested.into_iter())
            ),
        )),
    }
}

fn open_source(path: &Path, name: Option<&str>) -> Result<(RootFile, Source, String), IoError> {
    let fh = super::open(path)?;
    let f = RootFile::open(fh).map_err(|e| from_bad(path, e))?;
    let key = choose_key(&f, path, name)?;
    let src = if key.class == "TTree" {
        Source::Tree(ttree::read_tree(&f, key.seek).map_err(|e| from_bad(path, e))?)
    } else {
        Source::NTuple(rntuple::read_ntuple(&f, key.seek).map_err(|e| from_bad(path, e))?)
    };
    Ok((f, src, key.path))
}

fn read_inner(path: &Path, opts: &ReadOptions) -> Result<RootRead, IoError> {
    let (f, src, obj) = open_source(path, opts.tree.as_deref())?;
    let read = |names: &[&str]| -> Result<Vec<Col>, IoError> {
        names
            .iter()
            .map(|n| src.read(&f, n).map_err(|e| from_bad(path, e)))
            .collect()
    };
    columnar::select(
        path,
        "ROOT",
        &format!("{obj:?}"),
        &src.fields(),
        src.entries(),
        opts,
        read,
    )
}

/// Reads the selected columns of a TTree or RNTuple (values not yet checked for finiteness;
/// [`crate::io::read_table`] does that).
pub fn read_root(path: &Path, opts: &ReadOptions) -> Result<RootRead, IoError> {
    super::open(path)?; // clear NotFound / permission errors first
    super::guard(path, "ROOT", || read_inner(path, opts))
}

/// The columns of the TTree or RNTuple `tree` (else the first one): name, type, shape, entries.
pub fn describe_root(path: &Path, tree: Option<&str>) -> Result<Vec<ColumnInfo>, IoError> {
    super::open(path)?;
    let fields = super::guard(path, "ROOT", || {
        open_source(path, tree).map(|(_, s, _)| s.fields())
    })?;
    Ok(fields.into_iter().map(ColumnInfo::from).collect())
}

/// Writes `table` as a TTree named [`TREE_NAME`] with one `float` branch per column.
pub fn write_root(path: &Path, table: &Table) -> Result<(), IoError> {
    super::write_atomic(path, |_, tmp| {
        let werr = |e: String| IoError::os(path, "cannot write", std::io::Error::other(e));
        if tmp.to_str().is_none() {
            return Err(werr("the ROOT writer needs a UTF-8 path".into()));
        }
        let cols: Vec<Vec<f32>> = (0..table.cols())
            .map(|j| (0..table.rows()).map(|i| table.data.get(i, j)).collect())
            .collect();
        super::guard(path, "ROOT", || {
            let mut f = OxyFile::create(tmp).map_err(|e| werr(e.to_string()))?;
            let mut tree = WriterTree::new(TREE_NAME);
            for (name, col) in table.columns.iter().zip(cols) {
                tree.new_branch(name, col.into_iter());
            }
            tree.write(&mut f).map_err(|e| werr(e.to_string()))?;
            f.close().map_err(|e| werr(e.to_string()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Matrix;
    use crate::io::{ColumnRef, Format, read_table, write_table};
    use std::path::PathBuf;

    const N: usize = 200;
    const CODECS: [&str; 5] = ["zlib", "lz4", "lzma", "zstd", "none"];

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn opts(tree: &str, cols: Option<&str>) -> ReadOptions {
        ReadOptions {
            tree: Some(tree.into()),
            columns: cols.map(|c| c.split(',').map(ColumnRef::parse).collect()),
            ..Default::default()
        }
    }

    /// The values tests/fixtures/make_root_fixtures.py wrote, as f32.
    fn expected_flat() -> Table {
        let cols = ["pt", "eta", "n", "u16", "i64", "flag"];
        let data = Matrix::from_fn(N, cols.len(), |i, j| match j {
            0 => 10.0 + 0.5 * i as f32,
            1 => (-2.5 + 0.01 * i as f64) as f32,
            2 => (i % 7) as f32 - 3.0,
            3 => (1000 + i) as f32,
            4 => (i as i64 * 1000 - 7) as f32,
            _ => f32::from(u8::from(i % 3 == 0)),
        });
        Table::new(cols.iter().map(|c| c.to_string()).collect(), data).unwrap()
    }

    #[test]
    fn every_compression_reads_the_written_values() {
        let want = expected_flat();
        for file in ["trees.root", "ntuples.root"] {
            for codec in CODECS {
                let t = read_table(&fixture(file), &opts(&format!("events_{codec}"), None))
                    .unwrap_or_else(|e| panic!("{file} {codec}: {e}"));
                // uproot stores RNTuple fields sorted by name.
                let refs: Vec<ColumnRef> = want.columns.iter().map(|c| c.as_str().into()).collect();
                assert_eq!(t.select(&refs).unwrap(), want, "{file} {codec}");
            }
        }
    }

    #[test]
    fn only_the_selected_columns_are_read() {
        // HTXS_Higgs_y is NaN in every event: selecting other columns must not see it.
        for file in ["trees.root", "ntuples.root"] {
            let p = fixture(file);
            let t = read_table(&p, &opts("Events", Some("MET_pt"))).unwrap();
            assert_eq!(t.columns, vec!["MET_pt"]);
            assert_eq!(t.data.get(7, 0), 5.0 + 0.5 * 7.0);
            let e = read_table(&p, &opts("Events", Some("MET_pt,HTXS_Higgs_y")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("HTXS_Higgs_y") && e.contains("NaN"), "{e}");
            // Order and repetition follow the selection; indices count flat columns.
            let t = read_table(&fixture(file), &opts("events_zstd", Some("flag,pt,0"))).unwrap();
            let first = describe_root(&fixture(file), Some("events_zstd")).unwrap()[0]
                .name
                .clone();
            assert_eq!(t.columns, vec!["flag", "pt", first.as_str()]);
            let e = read_table(&p, &opts("Events", Some("nope"))).unwrap_err();
            assert!(matches!(e, IoError::UnknownColumn { .. }), "{e}");
            assert!(e.to_string().contains("Jet_pt[k]"), "{e}");
        }
    }

    #[test]
    fn jagged_elements_drop_or_fill_events() {
        // nJet = i % 4; Jet_pt[j] = 20 + i + 0.25 j; Jet_eta[j] = 0.1 j - 0.05 (i % 5).
        for file in ["trees.root", "ntuples.root"] {
            let p = fixture(file);
            let r = read_root(&p, &opts("Events", Some("Jet_pt[1],Jet_eta[0],MET_pt"))).unwrap();
            let kept: Vec<usize> = (0..N).filter(|i| i % 4 >= 2).collect();
            assert_eq!(r.dropped, N - kept.len(), "{file}");
            assert_eq!(r.table.columns, vec!["Jet_pt[1]", "Jet_eta[0]", "MET_pt"]);
            for (row, &i) in kept.iter().enumerate() {
                assert_eq!(r.table.data.get(row, 0), 20.0 + i as f32 + 0.25, "{file}");
                assert_eq!(r.table.data.get(row, 1), (-0.05 * (i % 5) as f64) as f32);
                assert_eq!(r.table.data.get(row, 2), 5.0 + 0.5 * i as f32);
            }
            let mut o = opts("Events", Some("Jet_pt[2]"));
            o.fill = Some(-1.0);
            let t = read_table(&p, &o).unwrap();
            assert_eq!(t.rows(), N);
            assert_eq!(t.data.get(3, 0), 23.5);
            assert_eq!(t.data.get(2, 0), -1.0);
            // Beyond every event, or an array without an element: clear errors.
            let e = read_table(&p, &opts("Events", Some("Jet_pt[3]")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(file) && e.contains("Jet_pt[3]") && e.contains("3 elements"),
                "{e}"
            );
            let e = read_table(&p, &opts("Events", Some("Jet_pt")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("Jet_pt[0]"), "{e}");
            let e = read_table(&p, &opts("Events", Some("MET_pt[0]")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not an array"), "{e}");
        }
    }

    #[test]
    fn describe_lists_columns_with_shapes() {
        use crate::io::describe::ColumnKind;
        for file in ["trees.root", "ntuples.root"] {
            let d = describe_root(&fixture(file), Some("Events")).unwrap();
            let get = |n: &str| d.iter().find(|c| c.name == n).unwrap().clone();
            assert_eq!(get("Jet_pt").kind, ColumnKind::Jagged, "{file}");
            assert_eq!(get("MET_pt").kind, ColumnKind::Flat);
            assert_eq!(get("MET_pt").entries, N);
        }
        let d = describe_root(&fixture("trees.root"), Some("events_lz4")).unwrap();
        let names: Vec<_> = d
            .iter()
            .map(|c| (c.name.as_str(), c.type_name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("pt", "float32"),
                ("eta", "float64"),
                ("n", "int32"),
                ("u16", "uint16"),
                ("i64", "int64"),
                ("flag", "bool")
            ]
        );
    }

    #[test]
    fn damaged_rntuple_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture("ntuples.root")).unwrap();
        // Flip one bit in every 97th byte after the file header: never a panic.
        let p = d.path().join("flip.root");
        for k in (100..bytes.len()).step_by(97) {
            let mut b = bytes.clone();
            b[k] ^= 0x10;
            std::fs::write(&p, &b).unwrap();
            for t in ["events_zstd", "Events"] {
                if let Err(e) = read_table(&p, &opts(t, None)) {
                    assert!(e.to_string().contains("flip.root"), "{e}");
                }
            }
        }
        // Truncated: pages past the end of the file.
        let p = d.path().join("cut.root");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = read_table(&p, &opts("events_zstd", None)).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("cut.root"), "{e}");
    }

    /// `std::vector` branches written by ROOT itself (tests/fixtures/make_vector_reference.py
    /// has what uproot reads from them).
    #[test]
    fn std_vector_branches_match_uproot() {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("root_vectors.json")).unwrap()).unwrap();
        let mut checked = 0;
        for (file, spec) in doc.as_object().unwrap() {
            let p = fixture(file);
            let tree = spec["tree"].as_str().unwrap();
            let (f, src, _) = open_source(&p, Some(tree)).unwrap();
            for (name, want) in spec["branches"].as_object().unwrap() {
                let Col::Jagged { offsets, values } = src.read(&f, name).unwrap() else {
                    panic!("{file}:{name} is not jagged");
                };
                let lengths: Vec<u64> = offsets.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
                let want_len: Vec<u64> = want["lengths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect();
                assert_eq!(lengths, want_len, "{file}:{name}");
                // NaN (null in the JSON) compares as NaN.
                let v: Vec<Option<f64>> = values
                    .iter()
                    .map(|&x| (!x.is_nan()).then_some(f64::from(x)))
                    .collect();
                let list = |k: &str| -> Vec<Option<f64>> {
                    want[k]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64())
                        .collect()
                };
                assert_eq!(v[..5], list("first")[..], "{file}:{name}");
                assert_eq!(v[v.len() - 5..], list("last")[..], "{file}:{name}");
                let nan = v.iter().filter(|x| x.is_none()).count() as u64;
                assert_eq!(nan, want["nan"].as_u64().unwrap(), "{file}:{name}");
                let sum: f64 = v.iter().flatten().sum();
                assert!(
                    (sum - want["sum"].as_f64().unwrap()).abs() < 1e-9,
                    "{file}:{name}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 11);
        // The NanoAOD selection works the same: element 40 exists in 3 of the 10 events.
        let p = fixture("uproot-issue-172.root");
        let r = read_root(&p, &opts("events", Some("rec_part_px[40],rec_part_py[0]"))).unwrap();
        assert_eq!((r.table.rows(), r.dropped), (3, 7));
        let d = describe_root(&p, None).unwrap();
        assert!(
            d.iter()
                .all(|c| c.kind == crate::io::describe::ColumnKind::Jagged)
        );
        // Containers of non-numbers are named and skipped.
        let p = fixture("uproot-stl_containers.root");
        let d = describe_root(&p, None).unwrap();
        let get = |n: &str| d.iter().find(|c| c.name == n).unwrap().type_name.clone();
        assert_eq!(get("vector_int32"), "int32");
        assert!(get("vector_string").contains("vector<string>"));
        let e = read_table(&p, &opts("tree", Some("vector_string[0]")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vector<string>") && e.contains("uproot-stl_containers.root"),
            "{e}"
        );
        let t = read_table(&p, &opts("tree", Some("vector_int32[2]"))).unwrap();
        assert_eq!(t.data.as_slice(), [3.0, 3.0, 3.0]);
        // Damaged: a named error or a table, never a panic.
        let d = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture("uproot-issue-172.root")).unwrap();
        let q = d.path().join("flip.root");
        for k in (100..bytes.len()).step_by(61) {
            let mut b = bytes.clone();
            b[k] ^= 0x41;
            std::fs::write(&q, &b).unwrap();
            let mut o = opts("events", Some("rec_part_px[3],rec_part_mass[0]"));
            o.fill = Some(0.0);
            if let Err(e) = read_table(&q, &o) {
                assert!(e.to_string().contains("flip.root"), "{e}");
            }
        }
    }

    #[test]
    fn unsupported_codec_is_named() {
        assert!(matches!(
            file::decompress(b"CS\x08\x01\x00\x00\x05\x00\x00x", 5),
            Err(Bad::Unsupported(m)) if m.contains("CS")
        ));
    }

    #[test]
    fn round_trip_keeps_names_and_values() {
        let d = tempfile::tempdir().unwrap();
        let data = Matrix::from_fn(3000, 3, |i, j| (i as f32 * 0.01 + j as f32).cos() * 50.0);
        let t = Table::new(
            vec!["jet1_pt".into(), "jet1_eta".into(), "m_jj".into()],
            data,
        )
        .unwrap();
        let p = d.path().join("t.root");
        write_table(&p, &t, Format::Root).unwrap();
        let back = read_table(&p, &ReadOptions::default()).unwrap();
        assert_eq!(back, t);
        let opts = ReadOptions {
            tree: Some("events".into()),
            ..Default::default()
        };
        assert_eq!(read_table(&p, &opts).unwrap(), t);
        let opts = ReadOptions {
            tree: Some("nope".into()),
            ..Default::default()
        };
        let e = read_table(&p, &opts).unwrap_err().to_string();
        assert!(e.contains("t.root") && e.contains("nope"), "{e}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.root");
        std::fs::write(&p, b"root\0\0\0\0 not really a ROOT file").unwrap();
        let e = read_table(&p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("c.root"), "{e}");
        // A real file cut short.
        let t = Table::new(vec!["a".into()], Matrix::from_fn(500, 1, |i, _| i as f32)).unwrap();
        let q = d.path().join("full.root");
        write_table(&q, &t, Format::Root).unwrap();
        let bytes = std::fs::read(&q).unwrap();
        // Every cut gives a named error, or the full table when only records the reader
        // does not need (streamer information) were lost; never a panic or wrong values.
        let mut errors = 0;
        for k in (0..bytes.len()).step_by(53) {
            std::fs::write(&p, &bytes[..k]).unwrap();
            match read_table(&p, &ReadOptions::default()) {
                Ok(back) => assert_eq!(back, t, "cut at {k}"),
                Err(e) => {
                    errors += 1;
                    assert!(e.to_string().contains("c.root"), "{e}");
                }
            }
        }
        assert!(errors > 0);
    }

    /// Cross-check against uproot on files written by ROOT itself (e.g. scikit-hep-testdata);
    /// see tests/fixtures/dump_root_reference.py.
    #[test]
    #[ignore = "needs HEPFLOW_ROOT_REFERENCE (a JSON written by dump_root_reference.py)"]
    fn agrees_with_uproot() {
        let Ok(refp) = std::env::var("HEPFLOW_ROOT_REFERENCE") else {
            return;
        };
        let refp = PathBuf::from(refp);
        let dir = refp.parent().unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&refp).unwrap()).unwrap();
        let (mut ok, mut bad) = (0, Vec::new());
        for (file, objs) in doc.as_object().unwrap() {
            let path = dir.join(file);
            for (obj, cols) in objs.as_object().unwrap() {
                let Some(cols) = cols.as_object() else {
                    continue;
                };
                for (col, want) in cols {
                    let o = ReadOptions {
                        tree: Some(obj.clone()),
                        columns: Some(vec![ColumnRef::Name(col.clone())]),
                        ..Default::default()
                    };
                    match read_root(&path, &o) {
                        Err(e) => bad.push(format!("{file}:{obj}:{col}: {e}")),
                        Ok(r) => {
                            let v = r.table.column(col).unwrap();
                            let first: Vec<f64> = want["first"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                                .collect();
                            let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
                            let ws = want["sum"].as_f64().unwrap_or(f64::NAN);
                            let got: Vec<f64> = v.iter().take(5).map(|&x| f64::from(x)).collect();
                            let same_sum = (sum - ws).abs() <= 1e-6 * ws.abs().max(1.0)
                                || (sum.is_nan() && ws.is_nan());
                            let same_first = got
                                .iter()
                                .zip(&first)
                                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                            if v.len() as u64 == want["n"].as_u64().unwrap()
                                && same_first
                                && same_sum
                            {
                                ok += 1;
                            } else {
                                bad.push(format!(
                                    "{file}:{obj}:{col}: got {got:?} sum {sum}, uproot {first:?} sum {ws}"
                                ));
                            }
                        }
                    }
                }
            }
        }
        eprintln!("{ok} columns agree with uproot");
        assert!(
            bad.is_empty(),
            "{} disagree:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    #[test]
    fn objects_in_subdirectories_are_read_by_path() {
        let xs: Vec<f32> = (0..5).map(|i| i as f32).collect();
        let p = fixture("subdirs.root");
        let objs = root_objects(&p).unwrap();
        let paths: Vec<&str> = objs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["dir", "dir/sub", "dir/sub/events", "other", "other/nt"]
        );
        assert_eq!(objs[2].1, rntuple::ANCHOR_CLASS);
        for name in ["dir/sub/events", "/dir/sub/events"] {
            let t = read_table(&p, &opts(name, None)).unwrap();
            assert_eq!(t.columns, ["x", "y"]);
            assert_eq!(t.column("x").unwrap(), xs);
            let ys: Vec<f32> = xs.iter().map(|x| 2.0 * x).collect();
            assert_eq!(t.column("y").unwrap(), ys);
        }
        let t = read_table(&p, &opts("other/nt", None)).unwrap();
        assert_eq!(t.columns, ["x"]);
        assert_eq!(t.column("x").unwrap(), xs);
        // A bare name is not a path; a directory is not a table; both errors list the paths.
        for (name, says) in [
            ("events", "no TTree or RNTuple named"),
            ("dir", "TDirectory"),
        ] {
            let e = read_table(&p, &opts(name, None)).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("subdirs.root"), "{e}");
        }
        let e = read_table(&p, &opts("events", None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dir/sub/events") && e.contains("other/nt"),
            "{e}"
        );
    }

    #[test]
    fn names_with_cycles_as_uproot_lists_them() {
        let p = fixture("subdirs.root");
        for name in ["dir;1/sub;1/events;1", "dir/sub/events;1", "/other;1/nt"] {
            let t = read_table(&p, &opts(name, None)).unwrap();
            assert_eq!(t.rows(), 5, "{name}");
        }
        let e = read_table(&p, &opts("dir/sub/events;7", None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cycle 7") && e.contains("dir/sub/events;1") && e.contains("subdirs.root"),
            "{e}"
        );
        let e = read_table(&p, &opts("dir/sub/events;x", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no TTree or RNTuple named"), "{e}");
    }

    #[test]
    fn tree_in_a_root_written_subdirectory() {
        // uproot-issue38b.root (scikit-hep-testdata, written by ROOT): `ntupler/tree`, 3 events
        // of std::vector branches; uproot reads v_int32 = [1, 2, 3], v_float = [999, -999].
        let p = fixture("uproot-issue38b.root");
        let objs = root_objects(&p).unwrap();
        assert_eq!(objs[1], ("ntupler/tree".to_string(), "TTree".to_string()));
        for o in [ReadOptions::default(), opts("ntupler/tree", None)] {
            let o = ReadOptions {
                columns: Some(["v_int32[2]", "v_float[1]"].map(ColumnRef::parse).to_vec()),
                ..o
            };
            let t = read_table(&p, &o).unwrap();
            assert_eq!(t.column("v_int32[2]").unwrap(), [3.0; 3]);
            assert_eq!(t.column("v_float[1]").unwrap(), [-999.0; 3]);
        }
    }

    #[test]
    fn automatic_choice_looks_into_subdirectories() {
        // Exactly one anywhere: taken.
        let t = read_table(&fixture("subdir_one.root"), &ReadOptions::default()).unwrap();
        assert_eq!(t.columns, ["x", "y"]);
        assert_eq!(t.rows(), 5);
        // Several: an error naming each by its path.
        let e = read_table(&fixture("subdirs.root"), &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("several") && e.contains("dir/sub/events") && e.contains("other/nt"),
            "{e}"
        );
        // A tree at the top level still wins over those in subdirectories (unchanged).
        let cols = describe_root(&fixture("trees.root"), None).unwrap();
        assert_eq!(cols[0].name, "pt");
    }

    /// Offset of `fSeekKeys` inside a TDirectory record, and its width.
    fn seek_keys_field(rec: &[u8]) -> (usize, usize) {
        if i16::from_be_bytes([rec[0], rec[1]]) > 1000 {
            (34, 8)
        } else {
            (26, 4)
        }
    }

    #[test]
    fn damaged_directories_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture("subdirs.root")).unwrap();
        let f = RootFile::open(std::fs::File::open(fixture("subdirs.root")).unwrap()).unwrap();
        // Where the subdirectory records lie: the payloads of the directory keys.
        let rec = |path: &str| {
            let k = f.keys.iter().find(|k| k.path == path).unwrap();
            let kh = f.key_header(k.seek).unwrap();
            (k.seek as usize + kh.keylen, k.seek as usize + kh.nbytes)
        };
        let (dir, sub) = (rec("dir"), rec("dir/sub"));
        // A cycle: `dir/sub` lists the keys of `dir` again (so `dir/sub/sub/...` forever).
        let (off, w) = seek_keys_field(&bytes[sub.0..]);
        let mut b = bytes.clone();
        let (src, dst) = (dir.0 + off, sub.0 + off);
        b.copy_within(src..src + w, dst);
        let p = d.path().join("cycle.root");
        std::fs::write(&p, &b).unwrap();
        let e = root_objects(&p).unwrap_err();
        assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("cycle.root") && e.contains("again"), "{e}");
        let e = read_table(&p, &opts("other/nt", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle.root"), "{e}");
        // One bit flipped in every other byte of the file (the directory records and key lists
        // included): never a panic (RootFile::open is called unguarded), never slow, and an
        // error names the file.
        let p = d.path().join("flip.root");
        let mut errors = 0;
        let start = std::time::Instant::now();
        for k in (0..bytes.len()).step_by(2) {
            let mut b = bytes.clone();
            b[k] ^= 1 << (k % 8);
            std::fs::write(&p, &b).unwrap();
            if RootFile::open(std::fs::File::open(&p).unwrap()).is_err() {
                errors += 1;
                let e = root_objects(&p).unwrap_err();
                assert!(e.to_string().contains("flip.root"), "{e}");
            }
        }
        assert!(errors > 25, "{errors} errors");
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
        // Flips inside the subdirectory records give errors or a readable file, never a panic.
        for k in (dir.0..dir.1).chain(sub.0..sub.1) {
            for bit in [0, 3, 6] {
                let mut b = bytes.clone();
                b[k] ^= 1 << bit;
                std::fs::write(&p, &b).unwrap();
                if let Err(e) = read_table(&p, &opts("other/nt", None)) {
                    assert!(e.to_string().contains("flip.root"), "{e}");
                }
            }
        }
    }
}
