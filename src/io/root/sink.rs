//! Writing the ROOT file container (the layout [`super::file`] reads), for RNTuples: the
//! file header, the top directory, invisible `RBlob` keys holding pages and envelopes, and the
//! records ROOT expects at the end of a file (streamer information, key list, free segments).
//!
//! The file is written front to back in one pass: [`RootSink::new`] reserves the file header
//! (100 bytes) and the top directory record, which [`RootSink::finish`] fills in once their
//! contents (the end of the file, where the key list is) are known. Every key after the top
//! directory's own is written in its 64-bit form (key version 1004), so no position ever needs
//! to be rewritten; the file header and directory record use 64-bit seeks only when the file
//! reaches 2 GB (ROOT's `kStartBigFile`), as ROOT does. Compressed payloads use ROOT's block
//! format ([`compress`]): 9-byte headers (`"ZS" 1` for Zstandard), 3-byte little-endian sizes,
//! at most 16 MiB - 1 per block, stored as is when compression does not make them smaller.
//!
//! The streamer-information record (a `TList` of `TStreamerInfo`) is given by the caller: the
//! RNTuple writer passes the one ROOT writes for its anchor class.

use std::io::{Seek, SeekFrom, Write};

/// Position from which seeks need 64 bits (ROOT's `kStartBigFile`).
const BIG: u64 = 2_000_000_000;
/// `fBEGIN`: where the top directory's key starts.
const BEGIN: u64 = 100;
/// The ROOT version declared in the file header (6.34, the first with RNTuple 1.0).
const ROOT_VERSION: i32 = 63400;
/// TKey class version (+1000 for 64-bit seeks).
const KEY_VERSION: i16 = 4;
/// TDirectory class version (+1000 for 64-bit seeks).
const DIR_VERSION: i16 = 5;
/// Size of the TDirectory record (both forms: the 32-bit one is padded).
const DIR_LEN: u64 = 60;
/// Largest block of ROOT's compression format.
const MAX_BLOCK: usize = (1 << 24) - 1;

/// Compression of a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Stored as is.
    None,
    /// Zstandard at this level (1..=22).
    Zstd(i32),
}

impl Codec {
    /// ROOT's compression setting: `algorithm * 100 + level` (0 for none).
    pub fn setting(self) -> u32 {
        match self {
            Codec::None => 0,
            Codec::Zstd(l) => 500 + l.clamp(1, 99) as u32,
        }
    }
}

/// `data` in ROOT's compressed block format, or `data` itself when compression does not make it
/// smaller (readers tell the two apart by comparing the stored and uncompressed sizes).
pub(crate) fn compress(data: &[u8], codec: Codec) -> std::io::Result<Vec<u8>> {
    let Codec::Zstd(level) = codec else {
        return Ok(data.to_vec());
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    for block in data.chunks(MAX_BLOCK) {
        let z = zstd::bulk::compress(block, level)?;
        if z.len() >= block.len() || z.len() > MAX_BLOCK {
            return Ok(data.to_vec());
        }
        out.extend_from_slice(b"ZS\x01");
        out.extend_from_slice(&(z.len() as u32).to_le_bytes()[..3]);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes()[..3]);
        out.extend_from_slice(&z);
    }
    if out.len() >= data.len() {
        return Ok(data.to_vec());
    }
    Ok(out)
}

/// A ROOT `TString`: one length byte (255, then a 4-byte length, for long strings), the bytes.
fn tstring(out: &mut Vec<u8>, s: &str) {
    if s.len() < 255 {
        out.push(s.len() as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn tstring_len(s: &str) -> usize {
    s.len() + if s.len() < 255 { 1 } else { 5 }
}

/// A key header (the record before an object's payload).
#[derive(Clone, Debug)]
struct Key {
    /// Stored payload bytes.
    stored: usize,
    /// Uncompressed payload bytes.
    objlen: usize,
    datime: u32,
    seek: u64,
    pdir: u64,
    class: &'static str,
    name: String,
    title: &'static str,
    /// 64-bit seeks.
    big: bool,
}

impl Key {
    fn keylen(&self) -> usize {
        let fixed = if self.big { 34 } else { 26 };
        fixed + tstring_len(self.class) + tstring_len(&self.name) + tstring_len(self.title)
    }

    fn bytes(&self) -> std::io::Result<Vec<u8>> {
        let keylen = self.keylen();
        let too_big = || std::io::Error::other("a ROOT key of 2 GiB or more");
        let nbytes = i32::try_from(keylen + self.stored).map_err(|_| too_big())?;
        let objlen = i32::try_from(self.objlen).map_err(|_| too_big())?;
        let mut b = Vec::with_capacity(keylen);
        b.extend_from_slice(&nbytes.to_be_bytes());
        let version = if self.big {
            KEY_VERSION + 1000
        } else {
            KEY_VERSION
        };
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&objlen.to_be_bytes());
        b.extend_from_slice(&self.datime.to_be_bytes());
        b.extend_from_slice(&(keylen as i16).to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes()); // cycle
        if self.big {
            b.extend_from_slice(&self.seek.to_be_bytes());
            b.extend_from_slice(&self.pdir.to_be_bytes());
        } else {
            b.extend_from_slice(&(self.seek as u32).to_be_bytes());
            b.extend_from_slice(&(self.pdir as u32).to_be_bytes());
        }
        tstring(&mut b, self.class);
        tstring(&mut b, &self.name);
        tstring(&mut b, self.title);
        Ok(b)
    }
}

/// ROOT's `TDatime` encoding of the current time (UTC).
fn datime_now() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(1995, 1995 + 63) as u32;
    (year - 1995) << 26
        | month << 22
        | day << 17
        | ((rem / 3600) as u32) << 12
        | ((rem % 3600 / 60) as u32) << 6
        | (rem % 60) as u32
}

/// A random-enough (version 4) UUID for the file: the time, the process and a counter hashed.
fn uuid() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = Vec::with_capacity(32);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&u64::from(std::process::id()).to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let a = twox_hash::XxHash3_64::oneshot_with_seed(1, &seed);
    let b = twox_hash::XxHash3_64::oneshot_with_seed(2, &seed);
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&a.to_be_bytes());
    u[8..].copy_from_slice(&b.to_be_bytes());
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

/// A ROOT file being written (see the module docs).
pub(crate) struct RootSink<W: Write + Seek> {
    w: W,
    /// Bytes written so far (the position of the next record).
    pos: u64,
    /// The name of the file (the top directory's name).
    name: String,
    datime: u32,
    uuid: [u8; 16],
    /// ROOT compression setting recorded in the file header.
    setting: u32,
    /// Keys of the top directory.
    keys: Vec<Key>,
}

/// The top directory's key at [`BEGIN`] (32-bit: it points to itself).
fn top_key(name: &str, datime: u32) -> Key {
    let named = (tstring_len(name) + tstring_len("")) as u64;
    Key {
        stored: (named + DIR_LEN) as usize,
        objlen: (named + DIR_LEN) as usize,
        datime,
        seek: BEGIN,
        pdir: 0,
        class: "TFile",
        name: name.to_string(),
        title: "",
        big: false,
    }
}

/// `fNbytesName`: the top directory's key and its `TNamed` part.
fn nbytes_name(k: &Key) -> u64 {
    (k.keylen() + tstring_len(&k.name) + tstring_len(k.title)) as u64
}

impl<W: Write + Seek> RootSink<W> {
    /// Starts a file whose top directory is named `name` (ROOT records the file name there) and
    /// whose header records the compression setting `setting`.
    pub fn new(mut w: W, name: &str, setting: u32) -> std::io::Result<Self> {
        let datime = datime_now();
        let reserved = BEGIN + nbytes_name(&top_key(name, datime)) + DIR_LEN;
        w.write_all(&vec![0u8; reserved as usize])?;
        Ok(RootSink {
            w,
            pos: reserved,
            name: name.to_string(),
            datime,
            uuid: uuid(),
            setting,
            keys: Vec::new(),
        })
    }

    /// Writes a key and its stored payload; returns the key.
    fn put(
        &mut self,
        class: &'static str,
        name: &str,
        title: &'static str,
        stored: &[u8],
        objlen: usize,
    ) -> std::io::Result<Key> {
        let key = Key {
            stored: stored.len(),
            objlen,
            datime: self.datime,
            seek: self.pos,
            pdir: BEGIN,
            class,
            name: name.to_string(),
            title,
            big: true,
        };
        let head = key.bytes()?;
        self.w.write_all(&head)?;
        self.w.write_all(stored)?;
        self.pos += (head.len() + stored.len()) as u64;
        Ok(key)
    }

    /// Writes `stored` (`len` bytes once decompressed) in an invisible `RBlob` key; returns the
    /// file offset of `stored`.
    pub fn blob(&mut self, stored: &[u8], len: usize) -> std::io::Result<u64> {
        let k = self.put("RBlob", "", "", stored, len)?;
        Ok(k.seek + k.keylen() as u64)
    }

    /// Writes an object of class `class` named `name` (an uncompressed payload) as a key of the
    /// top directory; returns the file offset of the key.
    pub fn object(
        &mut self,
        class: &'static str,
        name: &str,
        payload: &[u8],
    ) -> std::io::Result<u64> {
        let k = self.put(class, name, "", payload, payload.len())?;
        let seek = k.seek;
        self.keys.push(k);
        Ok(seek)
    }

    /// Writes the streamer information (`streamers(keylen)` gives the streamed `TList`; object
    /// references in it count from the key start, `keylen` bytes before the payload), the key
    /// list and the free-segment record, then the file header and the top directory; returns
    /// the writer (flushed).
    pub fn finish(mut self, streamers: impl FnOnce(usize) -> Vec<u8>) -> std::io::Result<W> {
        let keylen = Key {
            stored: 0,
            objlen: 0,
            datime: 0,
            seek: self.pos,
            pdir: BEGIN,
            class: "TList",
            name: "StreamerInfo".into(),
            title: "Doubly linked list",
            big: true,
        }
        .keylen();
        let list = streamers(keylen);
        let info = self.put(
            "TList",
            "StreamerInfo",
            "Doubly linked list",
            &list,
            list.len(),
        )?;
        // The key list: the count, then every key header again.
        let mut kl = (self.keys.len() as i32).to_be_bytes().to_vec();
        for k in &self.keys {
            kl.extend_from_slice(&k.bytes()?);
        }
        let name = self.name.clone();
        let keys = self.put("TFile", &name, "", &kl, kl.len())?;
        // The free segments: one, from the end of the file to "infinity".
        let free_key = Key {
            stored: 0,
            objlen: 0,
            datime: self.datime,
            seek: self.pos,
            pdir: BEGIN,
            class: "TFile",
            name: name.clone(),
            title: "",
            big: true,
        };
        let small_end = self.pos + (free_key.keylen() + 10) as u64;
        let mut free = Vec::new();
        if small_end < BIG {
            free.extend_from_slice(&1u16.to_be_bytes());
            free.extend_from_slice(&(small_end as u32).to_be_bytes());
            free.extend_from_slice(&(BIG as u32).to_be_bytes());
        } else {
            let end = self.pos + (free_key.keylen() + 18) as u64;
            let mut inf = BIG;
            while inf <= end {
                inf *= 2;
            }
            free.extend_from_slice(&1001u16.to_be_bytes());
            free.extend_from_slice(&end.to_be_bytes());
            free.extend_from_slice(&inf.to_be_bytes());
        }
        let free_k = self.put("TFile", &name, "", &free, free.len())?;
        let end = self.pos;
        let nbytes = |k: &Key| (k.keylen() + k.stored) as u64;
        let big = end >= BIG;
        // File header.
        let mut h = Vec::with_capacity(BEGIN as usize);
        h.extend_from_slice(b"root");
        let version = if big {
            ROOT_VERSION + 1_000_000
        } else {
            ROOT_VERSION
        };
        h.extend_from_slice(&version.to_be_bytes());
        h.extend_from_slice(&(BEGIN as i32).to_be_bytes());
        let top = top_key(&name, self.datime);
        let seek_or = |h: &mut Vec<u8>, v: u64| {
            if big {
                h.extend_from_slice(&v.to_be_bytes());
            } else {
                h.extend_from_slice(&(v as u32).to_be_bytes());
            }
        };
        seek_or(&mut h, end);
        seek_or(&mut h, free_k.seek);
        h.extend_from_slice(&(nbytes(&free_k) as i32).to_be_bytes());
        h.extend_from_slice(&1i32.to_be_bytes()); // nfree
        h.extend_from_slice(&(nbytes_name(&top) as i32).to_be_bytes());
        h.push(if big { 8 } else { 4 }); // fUnits
        h.extend_from_slice(&(self.setting as i32).to_be_bytes());
        seek_or(&mut h, info.seek);
        h.extend_from_slice(&(nbytes(&info) as i32).to_be_bytes());
        h.extend_from_slice(&1u16.to_be_bytes()); // TUUID version
        h.extend_from_slice(&self.uuid);
        h.resize(BEGIN as usize, 0);
        // The top directory: its key, TNamed (name, title), then the TDirectory record.
        h.extend_from_slice(&top.bytes()?);
        tstring(&mut h, &name);
        tstring(&mut h, "");
        let dir_big = keys.seek >= BIG;
        let dv = if dir_big {
            DIR_VERSION + 1000
        } else {
            DIR_VERSION
        };
        h.extend_from_slice(&dv.to_be_bytes());
        h.extend_from_slice(&self.datime.to_be_bytes());
        h.extend_from_slice(&self.datime.to_be_bytes());
        h.extend_from_slice(&(nbytes(&keys) as i32).to_be_bytes());
        h.extend_from_slice(&(nbytes_name(&top) as i32).to_be_bytes());
        if dir_big {
            h.extend_from_slice(&BEGIN.to_be_bytes());
            h.extend_from_slice(&0u64.to_be_bytes());
            h.extend_from_slice(&keys.seek.to_be_bytes());
        } else {
            h.extend_from_slice(&(BEGIN as u32).to_be_bytes());
            h.extend_from_slice(&0u32.to_be_bytes());
            h.extend_from_slice(&(keys.seek as u32).to_be_bytes());
        }
        h.extend_from_slice(&1u16.to_be_bytes());
        h.extend_from_slice(&self.uuid);
        h.resize((BEGIN + nbytes_name(&top) + DIR_LEN) as usize, 0);
        self.w.flush()?;
        self.w.seek(SeekFrom::Start(0))?;
        self.w.write_all(&h)?;
        self.w.seek(SeekFrom::Start(end))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datime_is_the_civil_date() {
        let d = datime_now();
        let year = 1995 + (d >> 26);
        let (month, day) = ((d >> 22) & 0xF, (d >> 17) & 0x1F);
        assert!((2024..2100).contains(&year), "{year}");
        assert!((1..=12).contains(&month) && (1..=31).contains(&day));
        assert!((d >> 12) & 0x1F < 24 && (d >> 6) & 0x3F < 60 && d & 0x3F < 60);
    }

    #[test]
    fn compression_round_trips_and_falls_back_to_stored() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let z = compress(&data, Codec::Zstd(5)).unwrap();
        assert!(z.len() < data.len() && z.starts_with(b"ZS\x01"));
        assert_eq!(
            super::super::file::decompress(&z, data.len()).unwrap(),
            data
        );
        // Incompressible (or tiny) data is stored as is.
        let tiny = [1u8, 2, 3];
        assert_eq!(compress(&tiny, Codec::Zstd(5)).unwrap(), tiny);
        assert_eq!(compress(&data, Codec::None).unwrap(), data);
        assert_eq!(Codec::Zstd(5).setting(), 505);
    }
}
