//! The UCI HIGGS layout (Baldi, Sadowski & Whiteson 2014; UCI DOI 10.24432/C5V312):
//! no header, 29 columns per line: the label (1 = signal, 0 = background), 21 low-level features
//! and 7 high-level features. Column names are applied by position, so any file in that layout
//! works (the full `HIGGS.csv`, its `.gz`, the bundled 35k sample, tab-separated copies).
//!
//! Presets: [`Preset::Higgs28`] is all 28 features; [`Preset::Higgs18`] drops the 6 azimuthal
//! angles (`lepton_phi`, `missing_energy_phi`, `jet1..4_phi`, physically uniform and
//! uninformative) and the 4 discrete b-tags (`jet1..4_btag`): 28 - 6 - 4 = 18 continuous features.

use std::path::{Path, PathBuf};

use super::{ColumnRef, IoError, ReadOptions, Table, read_table};

/// The 29 column names of the UCI HIGGS layout, in file order.
pub const HIGGS_COLUMNS: [&str; 29] = [
    "label",
    "lepton_pT",
    "lepton_eta",
    "lepton_phi",
    "missing_energy_magnitude",
    "missing_energy_phi",
    "jet1_pt",
    "jet1_eta",
    "jet1_phi",
    "jet1_btag",
    "jet2_pt",
    "jet2_eta",
    "jet2_phi",
    "jet2_btag",
    "jet3_pt",
    "jet3_eta",
    "jet3_phi",
    "jet3_btag",
    "jet4_pt",
    "jet4_eta",
    "jet4_phi",
    "jet4_btag",
    "m_jj",
    "m_jjj",
    "m_lv",
    "m_jlv",
    "m_bb",
    "m_wbb",
    "m_wwbb",
];

/// A feature set of the HIGGS layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// 18 continuous features: all 28 without the 6 phi angles and the 4 b-tags.
    Higgs18,
    /// All 28 features.
    Higgs28,
}

impl Preset {
    /// Parses `higgs18` / `higgs28` (case-insensitive).
    pub fn parse(s: &str) -> Option<Preset> {
        match s.trim().to_ascii_lowercase().as_str() {
            "higgs18" => Some(Preset::Higgs18),
            "higgs28" => Some(Preset::Higgs28),
            _ => None,
        }
    }

    /// File positions (0 = label) of the preset's features, in file order.
    pub fn indices(self) -> Vec<usize> {
        (1..29)
            .filter(|&j| match self {
                Preset::Higgs28 => true,
                Preset::Higgs18 => {
                    let n = HIGGS_COLUMNS[j];
                    !n.ends_with("_phi") && !n.ends_with("_btag")
                }
            })
            .collect()
    }

    /// The preset's feature names, in file order.
    pub fn features(self) -> Vec<&'static str> {
        self.indices()
            .into_iter()
            .map(|j| HIGGS_COLUMNS[j])
            .collect()
    }
}

/// The bundled sample `data/higgs_35k.csv.gz` (35,298 exact HIGGS rows, see `data/README.md`),
/// compiled into the library so that `hepflow demo` works after `cargo install` without the
/// source checkout.
pub static BUNDLED_HIGGS_GZ: &[u8] = include_bytes!("../../data/higgs_35k.csv.gz");

/// Path of the bundled sample: the file in the source checkout when it is still there and
/// unchanged, else a copy of the compiled-in bytes written (once, atomically) to the system's
/// temporary directory.
pub fn bundled_higgs_path() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/higgs_35k.csv.gz");
    if std::fs::metadata(&source).is_ok_and(|m| m.len() == BUNDLED_HIGGS_GZ.len() as u64) {
        return source;
    }
    let copy = std::env::temp_dir().join(format!(
        "hepflow-higgs_35k-{}.csv.gz",
        env!("CARGO_PKG_VERSION")
    ));
    if !std::fs::metadata(&copy).is_ok_and(|m| m.len() == BUNDLED_HIGGS_GZ.len() as u64) {
        // A failed write leaves no file; reading the path then reports the error.
        let _ = crate::fsutil::atomic_write(&copy, BUNDLED_HIGGS_GZ);
    }
    copy
}

/// Reads a file in the UCI HIGGS layout: the preset's features (named) and the labels (0/1).
/// A header line, if present, is skipped; names always come from the position.
pub fn read_higgs_labeled(path: &Path, preset: Preset) -> Result<(Table, Vec<u8>), IoError> {
    let mut refs = vec![ColumnRef::Index(0)];
    refs.extend(preset.indices().into_iter().map(ColumnRef::Index));
    let opts = ReadOptions {
        columns: Some(refs),
        expect_fields: Some(29),
        ..Default::default()
    };
    let t = read_table(path, &opts).map_err(|e| match e {
        IoError::Ragged {
            file, line, found, ..
        } => IoError::HiggsLayout { file, line, found },
        e => e,
    })?;
    let mut labels = Vec::with_capacity(t.rows());
    for i in 0..t.rows() {
        let v = t.data.get(i, 0);
        labels.push(match v {
            0.0 => 0u8,
            1.0 => 1u8,
            _ => {
                return Err(IoError::BadLabel {
                    file: path.to_path_buf(),
                    row: i,
                    value: v,
                });
            }
        });
    }
    let n = preset.indices().len();
    let mut features = t.select_indices(&(1..=n).collect::<Vec<_>>());
    features.columns = preset.features().iter().map(|s| s.to_string()).collect();
    Ok((features, labels))
}

/// Reads the preset's features of a UCI-HIGGS-layout file, keeping only events with the given
/// label when `label` is `Some` (0 = background, 1 = signal).
pub fn read_higgs(path: &Path, preset: Preset, label: Option<u8>) -> Result<Table, IoError> {
    let (t, labels) = read_higgs_labeled(path, preset)?;
    Ok(match label {
        None => t,
        Some(l) => {
            let keep: Vec<usize> = (0..t.rows()).filter(|&i| labels[i] == l).collect();
            t.take_rows(&keep)
        }
    })
}

/// True when `table` looks like a headerless UCI HIGGS file: 29 columns with the default names
/// `col0..col28` and a first column of only 0s and 1s.
pub fn is_higgs_layout(table: &Table) -> bool {
    table.cols() == 29
        && table.columns == Table::default_names(29)
        && (0..table.rows()).all(|i| matches!(table.data.get(i, 0), 0.0 | 1.0))
}

/// Renames the columns of a table for which [`is_higgs_layout`] holds to [`HIGGS_COLUMNS`];
/// returns whether it did.
pub fn apply_higgs_names(table: &mut Table) -> bool {
    let ok = is_higgs_layout(table);
    if ok {
        table.columns = HIGGS_COLUMNS.iter().map(|s| s.to_string()).collect();
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_right_features() {
        let f18 = Preset::Higgs18.features();
        assert_eq!(f18.len(), 18);
        assert!(
            f18.iter()
                .all(|n| !n.contains("phi") && !n.contains("btag"))
        );
        assert_eq!(f18[0], "lepton_pT");
        assert_eq!(f18[17], "m_wwbb");
        assert_eq!(Preset::Higgs28.features().len(), 28);
        assert_eq!(Preset::parse("HIGGS18"), Some(Preset::Higgs18));
        assert_eq!(Preset::parse("higgs"), None);
    }

    fn line(label: u8, k: usize) -> String {
        let mut s = format!("{label}");
        for j in 1..=28 {
            s.push_str(&format!(",{}", (k * 100 + j) as f32 * 0.5));
        }
        s.push('\n');
        s
    }

    #[test]
    fn small_file_labels_presets_and_layout_detection() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h.csv");
        let text: String = (0..6).map(|k| line((k % 2) as u8, k)).collect();
        std::fs::write(&p, &text).unwrap();
        let (t, labels) = read_higgs_labeled(&p, Preset::Higgs28).unwrap();
        assert_eq!(labels, vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(t.columns[0], "lepton_pT");
        assert_eq!(t.data.row(2)[27], (200 + 28) as f32 * 0.5);
        let sig = read_higgs(&p, Preset::Higgs18, Some(1)).unwrap();
        assert_eq!((sig.rows(), sig.cols()), (3, 18));
        // lepton_eta is file column 2; m_jj file column 22.
        assert_eq!(sig.column("lepton_eta").unwrap()[0], 102.0 * 0.5);
        assert_eq!(sig.column("m_jj").unwrap()[2], 522.0 * 0.5);
        let mut raw = read_table(&p, &ReadOptions::default()).unwrap();
        assert!(apply_higgs_names(&mut raw));
        assert_eq!(raw.columns[28], "m_wwbb");
        assert!(!apply_higgs_names(&mut raw)); // names are no longer col0..
    }

    #[test]
    fn wrong_column_count_and_bad_label() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.csv");
        std::fs::write(&p, "1,2,3\n0,4,5\n").unwrap();
        let e = read_higgs(&p, Preset::Higgs18, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected 29 columns (label + 28 features) in the UCI HIGGS layout, found 3 on line 1 of")
                && e.contains("w.csv"),
            "{e}"
        );
        let mut text = line(1, 0) + &line(0, 1);
        text.push_str("1,2\n");
        std::fs::write(&p, &text).unwrap();
        let e = read_higgs(&p, Preset::Higgs18, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("found 2 on line 3"), "{e}");
        std::fs::write(&p, line(2, 0)).unwrap();
        let e = read_higgs(&p, Preset::Higgs18, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.csv") && e.contains("label 2"), "{e}");
    }

    #[test]
    fn bundled_sample() {
        let p = bundled_higgs_path();
        let (t, labels) = read_higgs_labeled(&p, Preset::Higgs18).unwrap();
        assert_eq!(t.rows(), 35_298);
        assert_eq!(t.cols(), 18);
        let sig = labels.iter().filter(|&&l| l == 1).count();
        assert_eq!((sig, labels.len() - sig), (18_657, 16_641));
        // First line of the file: lepton_pT = 9.075421094894409180e-01 exactly.
        assert_eq!(t.data.get(0, 0), 9.075_421e-1_f32);
        // Last line's m_wwbb (file column 28) is the last value of the file.
        let last: f32 = "8.889652490615844727e-01".parse().unwrap_or(f32::NAN);
        assert_eq!(t.data.get(35_297, 17), last);
    }
}
