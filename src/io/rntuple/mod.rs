//! RNTuple, ROOT's columnar event format (binary format specification 1.0, ROOT >= 6.34):
//! reading flat numeric fields and `std::vector`/`RVec` collections of numbers ([`read`]),
//! writing flat `float` fields ([`write`]).
//!
//! In a ROOT file the `ROOT::RNTuple` key is the *anchor*: format version (epoch must be 1),
//! then the locations, stored and uncompressed sizes of the header and footer envelopes
//! (big-endian, followed by an XXH3-64 checksum). Everything else is little-endian. An
//! envelope is `u64 (length << 16 | type)`, a payload and an XXH3-64 checksum of both; it is
//! compressed with ROOT's block format (see [`crate::io::root`]). The header lists the fields
//! (name, type, parent, structural role) and columns (type, bits, field); the footer lists
//! cluster groups, each pointing to a page-list envelope that gives, per cluster and column,
//! the pages (element count and locator). Records and lists are framed (`i64` size, negative
//! for lists followed by a `u32` item count) so that unknown trailing members are skipped.
//! Pages and envelopes live in "invisible" `RBlob` keys of the ROOT file; only their offsets
//! matter.
//!
//! Column encodings: plain little-endian; *split* (byte `b` of every element stored together:
//! all first bytes, then all second bytes, ...), plus *zigzag* (`x -> 2x` for `x >= 0`,
//! `-(2x + 1)` otherwise) for split signed integers and *delta* (each element stores the
//! difference to the previous one, within a page) for split index columns; bits are packed
//! LSB first, as are `Real32Trunc` (the top `bits` bits of an IEEE single) and `Real32Quant`
//! (`min + q (max - min) / (2^bits - 1)`). A field may have several column representations,
//! one primary per cluster; a deferred column (added during writing) reads as zeros before its
//! first element. `RNTupleCardinality` fields (NanoAOD's `nJet` from ROOT's importer) give the
//! item count of a collection. A collection field has an index column whose element `i` is the end of entry
//! `i`'s items, counted from the start of the cluster; its one child field holds the items.

pub(crate) mod read;
pub(crate) mod write;

pub(crate) use read::{NTuple, read_ntuple};

/// Class name of the anchor key.
pub(crate) const ANCHOR_CLASS: &str = "ROOT::RNTuple";
/// Envelope type of the header.
pub(crate) const ENVELOPE_HEADER: u16 = 0x01;
/// Envelope type of the footer.
pub(crate) const ENVELOPE_FOOTER: u16 = 0x02;
/// Envelope type of a page list.
pub(crate) const ENVELOPE_PAGE_LIST: u16 = 0x03;
/// Column type: little-endian IEEE single.
pub(crate) const COLUMN_REAL32: u16 = 0x0C;
/// Column type: IEEE single, split encoding.
pub(crate) const COLUMN_SPLIT_REAL32: u16 = 0x18;

/// The XXH3-64 checksum RNTuple uses everywhere (anchor, envelopes, pages).
pub(crate) fn xxh3(b: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(b)
}
