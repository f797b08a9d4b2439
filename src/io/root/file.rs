//! The ROOT file container: the file header, the keys of its directories, object payloads
//! and ROOT's compression blocks.
//!
//! Layout (all integers big-endian): `"root"`, version (`>= 1000000` means 64-bit seeks),
//! `fBEGIN`, `fEND`, ..., then at `fBEGIN` the key of the file itself followed by the top
//! `TDirectory` record, whose `fSeekKeys` points to the list of keys. A key header is
//! `nbytes i32, version i16, objlen i32, datime u32, keylen i16, cycle i16, seekkey, seekpdir`
//! (`i64` when the key version is `> 1000`, else `i32`), then the class name, name and title
//! strings. A subdirectory is a key of class `TDirectory` (or `TDirectoryFile`, as uproot
//! accepts) whose payload is its own `TDirectory` record; its keys are listed under `dir/name`. The
//! payload (`nbytes - keylen` bytes at `seekkey + keylen`) is stored as is when it is `objlen`
//! bytes long, else as a series of compression blocks, each with a 9-byte
//! header: a 2-byte algorithm tag (`ZL` zlib, `XZ` LZMA, `L4` LZ4 with an 8-byte checksum
//! before the data, `ZS` Zstandard, `CS` the pre-zlib ROOT algorithm), a method byte, then the
//! compressed and uncompressed sizes as 3-byte little-endian integers.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

/// Why a ROOT structure could not be read: the file is damaged, or it uses a feature this
/// reader does not implement (reported differently to the user).
#[derive(Debug)]
pub(crate) enum Bad {
    /// Structurally invalid content.
    Corrupt(String),
    /// Valid content that is not supported (e.g. a compression algorithm).
    Unsupported(String),
}

pub(crate) type Res<T> = Result<T, Bad>;

/// Shorthand for a [`Bad::Corrupt`] error.
pub(crate) fn bad<T>(msg: impl Into<String>) -> Res<T> {
    Err(Bad::Corrupt(msg.into()))
}

/// A bounds-checked big-endian reader over a byte slice. `origin` is added to positions when
/// computing ROOT's object-reference offsets (the key length for an object payload).
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    pub origin: usize,
}

macro_rules! be_reader {
    ($name:ident, $t:ty) => {
        pub fn $name(&mut self) -> Res<$t> {
            let b = self.take(std::mem::size_of::<$t>())?;
            let mut a = [0u8; std::mem::size_of::<$t>()];
            a.copy_from_slice(b);
            Ok(<$t>::from_be_bytes(a))
        }
    };
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], origin: usize) -> Self {
        Cursor {
            buf,
            pos: 0,
            origin,
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(e) => {
                let s = &self.buf[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => bad(format!(
                "unexpected end of data (need {n} bytes at offset {} of {})",
                self.pos,
                self.buf.len()
            )),
        }
    }

    /// Moves to `pos` (must be inside the buffer).
    pub fn seek(&mut self, pos: usize) -> Res<()> {
        if pos > self.buf.len() {
            return bad(format!(
                "offset {pos} is past the end of a {}-byte record",
                self.buf.len()
            ));
        }
        self.pos = pos;
        Ok(())
    }

    be_reader!(u8, u8);
    be_reader!(i16, i16);
    be_reader!(u16, u16);
    be_reader!(i32, i32);
    be_reader!(u32, u32);
    be_reader!(i64, i64);
    be_reader!(f64, f64);

    /// A ROOT `TString`: one length byte (255 = a 4-byte length follows), then the bytes.
    pub fn tstring(&mut self) -> Res<String> {
        let mut n = usize::from(self.u8()?);
        if n == 255 {
            n = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        }
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// A NUL-terminated string (class names in object headers).
    pub fn cstring(&mut self) -> Res<String> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        match rest.iter().position(|&b| b == 0) {
            Some(k) => {
                let s = String::from_utf8_lossy(&rest[..k]).into_owned();
                self.pos += k + 1;
                Ok(s)
            }
            None => bad("unterminated class name"),
        }
    }

    /// Position as ROOT counts it for object references.
    pub fn displacement(&self) -> usize {
        self.pos + self.origin
    }
}

/// One entry of a directory.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub class: String,
    pub name: String,
    /// `name` prefixed with the directories that hold it (`dir/sub/name`; `name` at the top).
    pub path: String,
    pub cycle: i16,
    pub seek: u64,
}

impl Key {
    /// Whether the key is a subdirectory (ROOT and uproot write `TDirectory`; uproot also
    /// accepts `TDirectoryFile`).
    pub fn is_directory(&self) -> bool {
        self.class == "TDirectory" || self.class == "TDirectoryFile"
    }
}

/// The header fields of a key record read from the file.
pub(crate) struct KeyHeader {
    pub nbytes: usize,
    pub objlen: usize,
    pub keylen: usize,
    /// Everything of the record, header included (the TBasket fields follow the strings).
    pub raw: Vec<u8>,
}

/// An open ROOT file: random access to its bytes plus the keys of every directory, depth
/// first (a directory's key is followed by the keys inside it).
pub(crate) struct RootFile {
    file: Mutex<File>,
    len: u64,
    pub keys: Vec<Key>,
}

/// Maximum size of one object we are willing to allocate (bounds damaged length fields).
const MAX_OBJECT: usize = 1 << 31;

/// Deepest directory nesting followed (bounds damaged or hostile files; real files nest a few).
const MAX_DEPTH: usize = 32;

/// Most keys read from all directories together.
const MAX_KEYS: usize = 1 << 20;

impl RootFile {
    /// Opens `file` and reads its header and the keys of its directories.
    pub fn open(file: File) -> Res<RootFile> {
        let len = file
            .metadata()
            .map_err(|e| Bad::Corrupt(e.to_string()))?
            .len();
        let mut rf = RootFile {
            file: Mutex::new(file),
            len,
            keys: Vec::new(),
        };
        let head = rf.read_at(0, 64.min(len as usize))?;
        let mut c = Cursor::new(&head, 0);
        if c.take(4).ok() != Some(b"root".as_slice()) {
            return bad("not a ROOT file (the file does not start with \"root\")");
        }
        let version = c.i32()?;
        let begin = u64::try_from(c.i32()?).map_err(|_| Bad::Corrupt("negative fBEGIN".into()))?;
        let big = version >= 1_000_000;
        let _end = if big { c.i64()? } else { i64::from(c.i32()?) };
        let _seek_free = if big { c.i64()? } else { i64::from(c.i32()?) };
        let _nbytes_free = c.i32()?;
        let _nfree = c.i32()?;
        let nbytes_name =
            u64::try_from(c.i32()?).map_err(|_| Bad::Corrupt("bad fNbytesName".into()))?;
        // The top TDirectory record follows the file's own key.
        let dir = rf.read_at(begin + nbytes_name, 42)?;
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        rf.walk_directory(&dir, "", 0, &mut seen, &mut keys)?;
        rf.keys = keys;
        Ok(rf)
    }

    /// Appends the keys of the directory whose `TDirectory` record is `record` (prefixing
    /// names with `prefix`), each subdirectory's key followed by its own keys. `seen` holds the
    /// `fSeekKeys` of the directories already read, so that a damaged file whose directories
    /// point back at each other is refused instead of walked forever.
    fn walk_directory(
        &self,
        record: &[u8],
        prefix: &str,
        depth: usize,
        seen: &mut HashSet<u64>,
        out: &mut Vec<Key>,
    ) -> Res<()> {
        if depth > MAX_DEPTH {
            return bad(format!(
                "directories nested more than {MAX_DEPTH} deep at {prefix:?} (damaged file?)"
            ));
        }
        let mut c = Cursor::new(record, 0);
        let dversion = c.i16()?;
        let _ctime = c.u32()?;
        let _mtime = c.u32()?;
        let _nbytes_keys = c.i32()?;
        let _nbytes_name = c.i32()?;
        let (_seek_dir, _seek_parent, seek_keys) = if dversion > 1000 {
            (c.i64()?, c.i64()?, c.i64()?)
        } else {
            (
                i64::from(c.i32()?),
                i64::from(c.i32()?),
                i64::from(c.i32()?),
            )
        };
        let seek_keys =
            u64::try_from(seek_keys).map_err(|_| Bad::Corrupt("negative fSeekKeys".into()))?;
        if seek_keys == 0 {
            return Ok(());
        }
        if !seen.insert(seek_keys) {
            return bad(format!(
                "directory {prefix:?} lists the keys of another directory again (offset \
                 {seek_keys}): the directory records are damaged"
            ));
        }
        let kh = self.key_header(seek_keys)?;
        let body = self.read_at(seek_keys + kh.keylen as u64, kh.nbytes - kh.keylen)?;
        let mut c = Cursor::new(&body, 0);
        let n = c.i32()?;
        let mut keys: Vec<Key> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for _ in 0..n.max(0) {
            let _nbytes = c.i32()?;
            let kv = c.i16()?;
            let _objlen = c.i32()?;
            let _datime = c.u32()?;
            let _keylen = c.i16()?;
            let cycle = c.i16()?;
            let seek = if kv > 1000 {
                c.i64()?
            } else {
                i64::from(c.i32()?)
            };
            let _pdir = if kv > 1000 {
                c.i64()?
            } else {
                i64::from(c.i32()?)
            };
            let class = c.tstring()?;
            let name = c.tstring()?;
            let _title = c.tstring()?;
            let seek = u64::try_from(seek).map_err(|_| Bad::Corrupt("negative key seek".into()))?;
            if out.len() + keys.len() >= MAX_KEYS {
                return bad(format!("more than {MAX_KEYS} keys (damaged file?)"));
            }
            let k = Key {
                path: format!("{prefix}{name}"),
                class,
                name,
                cycle,
                seek,
            };
            // Keep only the highest cycle of each name (ROOT's default).
            match index.get(&k.name).and_then(|&i| keys.get_mut(i)) {
                Some(o) if o.cycle < k.cycle => *o = k,
                Some(_) => {}
                None => {
                    index.insert(k.name.clone(), keys.len());
                    keys.push(k);
                }
            }
        }
        for k in keys {
            let sub = k.is_directory().then(|| (k.seek, format!("{}/", k.path)));
            out.push(k);
            if let Some((seek, prefix)) = sub {
                // A subdirectory's key holds its TDirectory record.
                let (_, record) = self.object(seek)?;
                self.walk_directory(&record, &prefix, depth + 1, seen, out)?;
            }
        }
        Ok(())
    }

    /// `n` bytes at `offset`; an error if the file is shorter.
    pub fn read_at(&self, offset: u64, n: usize) -> Res<Vec<u8>> {
        if n > MAX_OBJECT || offset.saturating_add(n as u64) > self.len {
            return bad(format!(
                "the file is truncated or damaged: {n} bytes at offset {offset} are past its \
                 end ({} bytes)",
                self.len
            ));
        }
        let mut f = self
            .file
            .lock()
            .map_err(|_| Bad::Corrupt("file lock poisoned".into()))?;
        let mut out = vec![0u8; n];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut out))
            .map_err(|e| Bad::Corrupt(format!("cannot read {n} bytes at offset {offset}: {e}")))?;
        Ok(out)
    }

    /// The key record at `seek` (header and strings; for a TBasket also its fields).
    pub fn key_header(&self, seek: u64) -> Res<KeyHeader> {
        let first = self.read_at(seek, 18.min((self.len.saturating_sub(seek)) as usize))?;
        let mut c = Cursor::new(&first, 0);
        let nbytes = c.i32()?;
        let _version = c.i16()?;
        let objlen = c.i32()?;
        let _datime = c.u32()?;
        let keylen = c.i16()?;
        if nbytes <= 0 || objlen < 0 || keylen <= 0 || keylen as i32 > nbytes {
            return bad(format!(
                "bad key at offset {seek} (nbytes {nbytes}, keylen {keylen}, objlen {objlen})"
            ));
        }
        let raw = self.read_at(seek, keylen as usize)?;
        Ok(KeyHeader {
            nbytes: nbytes as usize,
            objlen: objlen as usize,
            keylen: keylen as usize,
            raw,
        })
    }

    /// The uncompressed payload of the key at `seek`, with its header.
    pub fn object(&self, seek: u64) -> Res<(KeyHeader, Vec<u8>)> {
        let kh = self.key_header(seek)?;
        let stored = self.read_at(seek + kh.keylen as u64, kh.nbytes - kh.keylen)?;
        let data = decompress(&stored, kh.objlen)?;
        Ok((kh, data))
    }
}

/// Decompresses a ROOT payload of `len` uncompressed bytes (stored as is when the sizes agree).
pub(crate) fn decompress(src: &[u8], len: usize) -> Res<Vec<u8>> {
    if src.len() == len {
        return Ok(src.to_vec());
    }
    if len > MAX_OBJECT {
        return bad(format!("uncompressed size {len} is too large"));
    }
    let mut out = Vec::with_capacity(len);
    let mut rest = src;
    while out.len() < len {
        if rest.len() < 9 {
            return bad("a compressed block is cut short");
        }
        let (h, tail) = rest.split_at(9);
        let csize = usize::from(h[3]) | usize::from(h[4]) << 8 | usize::from(h[5]) << 16;
        let usize_ = usize::from(h[6]) | usize::from(h[7]) << 8 | usize::from(h[8]) << 16;
        if csize > tail.len() {
            return bad(format!(
                "a compressed block claims {csize} bytes but only {} remain",
                tail.len()
            ));
        }
        let (block, next) = tail.split_at(csize);
        rest = next;
        let before = out.len();
        let fail = |algo: &str, e: String| Bad::Corrupt(format!("{algo} block: {e}"));
        match &h[..2] {
            b"ZL" => {
                let mut d = flate2::read::ZlibDecoder::new(block);
                d.by_ref()
                    .take(usize_ as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| fail("zlib", e.to_string()))?;
            }
            b"XZ" => {
                let mut d = xz2::read::XzDecoder::new(block);
                d.by_ref()
                    .take(usize_ as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| fail("LZMA", e.to_string()))?;
            }
            b"L4" => {
                // 8-byte xxhash64 checksum of the compressed data, then an LZ4 block.
                let data = block
                    .get(8..)
                    .ok_or_else(|| fail("LZ4", "shorter than its checksum".into()))?;
                let size = i32::try_from(usize_).map_err(|e| fail("LZ4", e.to_string()))?;
                let v = lz4::block::decompress(data, Some(size))
                    .map_err(|e| fail("LZ4", e.to_string()))?;
                out.extend_from_slice(&v);
            }
            b"ZS" => {
                let mut d = ruzstd::decoding::StreamingDecoder::new(block)
                    .map_err(|e| fail("ZSTD", e.to_string()))?;
                d.by_ref()
                    .take(usize_ as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| fail("ZSTD", e.to_string()))?;
            }
            b"CS" => {
                return Err(Bad::Unsupported(
                    "data compressed with ROOT's old \"CS\" algorithm (ROOT < 5) is not \
                     supported"
                        .into(),
                ));
            }
            tag => {
                return Err(Bad::Unsupported(format!(
                    "unknown compression algorithm {:?}",
                    String::from_utf8_lossy(tag)
                )));
            }
        }
        if out.len() - before != usize_ {
            return bad(format!(
                "a compressed block gave {} bytes instead of {usize_}",
                out.len() - before
            ));
        }
    }
    if out.len() != len {
        return bad(format!("decompressed {} bytes instead of {len}", out.len()));
    }
    Ok(out)
}
