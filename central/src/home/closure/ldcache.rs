//! Reader for glibc's `/etc/ld.so.cache` in the new format
//! (`glibc-ld.so.cache1.1`, written by ldconfig since glibc 2.32, possibly
//! behind an old-format `ld.so-1.7.0` prefix), and the lookup rule of
//! glibc's `search_cache` (elf/dl-cache.c, 2.36).
//!
//! The file is untrusted: every offset and count is checked against the file
//! length before use; strings must end inside the file.

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_ENTRY: usize = 12;
const EXTENSION_MAGIC: u32 = (-358342284i32) as u32;
const EXT_TAG_GLIBC_HWCAPS: u32 = 1;
/// `DL_CACHE_HWCAP_EXTENSION`: the low 32 bits index the glibc-hwcaps names.
const HWCAP_EXTENSION: u64 = 1 << 62;
/// `FLAG_ELF_LIBC6`: a generic ELF libc6 entry, accepted on any machine.
const FLAG_ELF_LIBC6: i32 = 0x0003;
/// ldconfig caps entries far below this; it bounds the work on a hostile file.
const MAX_ENTRIES: usize = 1 << 20;

/// `_DL_CACHE_DEFAULT_ID` for the host: `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`.
#[cfg(not(target_arch = "aarch64"))]
pub const HOST_CACHE_ID: i32 = 0x0303;
/// `_DL_CACHE_DEFAULT_ID` for the host: `FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64`.
#[cfg(target_arch = "aarch64")]
pub const HOST_CACHE_ID: i32 = 0x0a03;

/// Why a cache file was rejected (glibc then ignores the cache entirely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// Neither the new nor the old magic.
    BadMagic,
    /// A count, offset or string runs past the end of the file.
    Truncated(&'static str),
    /// Written for the other byte order.
    WrongEndian,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::BadMagic => f.write_str("not a glibc-ld.so.cache1.1 file"),
            CacheError::Truncated(what) => write!(f, "truncated or inconsistent ({what})"),
            CacheError::WrongEndian => f.write_str("written for the other byte order"),
        }
    }
}

/// One entry of the table, as read (the strings stay in the file bytes).
#[derive(Debug, Clone, Copy)]
struct Entry {
    flags: i32,
    /// Offset of the NUL-terminated path in the new-format data.
    path: usize,
    hwcap: u64,
}

/// A checked cache: the file's bytes, read once, with every entry's
/// strings known to end inside them. Nothing is copied out at parse time: a
/// job's home looks up a handful of names, and building a map of the whole
/// file (~1,400 entries) cost more than all its lookups together. A lookup
/// walks the entry table (24-byte records, names compared in place).
#[derive(Debug, Clone, Default)]
pub struct LdCache {
    /// The file; the new-format cache starts at `base` (string offsets are
    /// relative to it).
    bytes: Vec<u8>,
    base: usize,
    hwcaps: Vec<Vec<u8>>,
    entries: usize,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let lo = u32_at(b, off)? as u64;
    let hi = u32_at(b, off.checked_add(4)?)? as u64;
    Some(lo | (hi << 32))
}

fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let s = b.get(off..)?;
    let end = s.iter().position(|&c| c == 0)?;
    Some(&s[..end])
}

/// Whether the NUL-terminated string at `off` is exactly `name` (the
/// string is known to end inside `b`).
fn cstr_is(b: &[u8], off: usize, name: &[u8]) -> bool {
    off.checked_add(name.len())
        .and_then(|end| Some((b.get(off..end)?, *b.get(end)?)))
        .is_some_and(|(s, nul)| s == name && nul == 0)
}

impl LdCache {
    /// Parse the bytes of an `ld.so.cache` file.
    pub fn parse(file: &[u8]) -> Result<LdCache, CacheError> {
        LdCache::from_bytes(file.to_vec())
    }

    /// [`LdCache::parse`], keeping `file` (no copy).
    pub fn from_bytes(file: Vec<u8>) -> Result<LdCache, CacheError> {
        let (base, entries, hwcaps) = LdCache::check(&file)?;
        Ok(LdCache {
            bytes: file,
            base,
            hwcaps,
            entries,
        })
    }

    /// The new-format cache's offset in `file`, its entry count and its
    /// glibc-hwcaps names, once every offset has been checked.
    fn check(file: &[u8]) -> Result<(usize, usize, Vec<Vec<u8>>), CacheError> {
        let mut base = 0usize;
        if file.starts_with(OLD_MAGIC) {
            // Old header: magic[11], pad, u32 nlibs, then 12-byte entries; the
            // new cache follows, aligned like `struct cache_file_new` (8).
            let n = u32_at(file, 12).ok_or(CacheError::Truncated("old header"))? as usize;
            let end = n
                .checked_mul(OLD_ENTRY)
                .and_then(|x| x.checked_add(16))
                .ok_or(CacheError::Truncated("old entries"))?;
            base = end
                .checked_add(7)
                .ok_or(CacheError::Truncated("old entries"))?
                & !7;
        }
        // String offsets in the new format are relative to the new header.
        let data = file
            .get(base..)
            .ok_or(CacheError::Truncated("old entries"))?;
        if !data.starts_with(NEW_MAGIC) {
            return Err(CacheError::BadMagic);
        }
        if data.len() < NEW_HEADER {
            return Err(CacheError::Truncated("header"));
        }
        let nlibs = u32_at(data, 20).ok_or(CacheError::Truncated("header"))? as usize;
        let endian = data[28] & 3;
        // cache_file_new_flags_endian_*: 0 unset (old ldconfig), 1 invalid,
        // 2 little, 3 big.
        let endian_ok = match endian {
            0 => true,
            2 => cfg!(target_endian = "little"),
            3 => cfg!(target_endian = "big"),
            _ => false,
        };
        if !endian_ok {
            return Err(CacheError::WrongEndian);
        }
        let ext_offset = u32_at(data, 32).ok_or(CacheError::Truncated("header"))? as usize;
        if nlibs > MAX_ENTRIES {
            return Err(CacheError::Truncated("entry count"));
        }
        let table_end = nlibs
            .checked_mul(NEW_ENTRY)
            .and_then(|x| x.checked_add(NEW_HEADER))
            .ok_or(CacheError::Truncated("entries"))?;
        if table_end > data.len() {
            return Err(CacheError::Truncated("entries"));
        }
        // A string at `off` ends inside the file exactly when some NUL lies
        // at or after `off`: one backward scan checks every entry's strings.
        let last_nul = data.iter().rposition(|&c| c == 0);
        let ends_inside = |off: usize| last_nul.is_some_and(|l| off <= l);
        for i in 0..nlibs {
            let e = NEW_HEADER + i * NEW_ENTRY;
            let key = u32_at(data, e + 4).ok_or(CacheError::Truncated("entry"))? as usize;
            let value = u32_at(data, e + 8).ok_or(CacheError::Truncated("entry"))? as usize;
            if !ends_inside(key) {
                return Err(CacheError::Truncated("entry name"));
            }
            if !ends_inside(value) {
                return Err(CacheError::Truncated("entry path"));
            }
        }
        // The extension directory is optional; a broken one makes glibc
        // ignore only the extensions, so do the same.
        let hwcaps = if ext_offset != 0 && u32_at(data, ext_offset) == Some(EXTENSION_MAGIC) {
            parse_hwcaps(data, ext_offset).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok((base, nlibs, hwcaps))
    }

    /// The new-format cache (in bounds: `check` found its magic there).
    fn data(&self) -> &[u8] {
        self.bytes.get(self.base..).unwrap_or_default()
    }

    /// The entries named `name`, in file order.
    fn entries_named<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = Entry> + 'a {
        let data = self.data();
        (0..self.entries).filter_map(move |i| {
            // In bounds: parse checked the table and every string.
            let e = NEW_HEADER + i * NEW_ENTRY;
            let key = u32_at(data, e + 4)? as usize;
            if !cstr_is(data, key, name) {
                return None;
            }
            Some(Entry {
                flags: u32_at(data, e)? as i32,
                path: u32_at(data, e + 8)? as usize,
                hwcap: u64_at(data, e + 16)?,
            })
        })
    }

    /// Number of entries in the file.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the cache has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The path glibc's `_dl_load_cache_lookup` returns for `name`, given the
    /// glibc-hwcaps subdirectories this CPU supports in priority order.
    ///
    /// Rule (search_cache): walk the entries for the name in file order,
    /// keeping those whose flags are the host's id or generic libc6. Named
    /// glibc-hwcaps entries (listed first by ldconfig) compete by priority;
    /// the first plain entry ends the walk if something was found already.
    /// Legacy hwcap entries (nonzero hwcap without the extension bit) are
    /// skipped: glibc 2.37 dropped them and ldconfig only writes them for
    /// libraries in `tls/`, `haswell/`... subdirectories.
    pub fn lookup(&self, name: &[u8], hwcaps_supported: &[Vec<u8>]) -> Option<&[u8]> {
        self.lookup_with(name, || hwcaps_supported)
    }

    /// [`LdCache::lookup`] with the hwcaps list asked for only when an
    /// entry for `name` is a glibc-hwcaps one (working it out may cost a
    /// loader run), in one walk of the table.
    pub fn lookup_with<'h>(
        &self,
        name: &[u8],
        hwcaps_supported: impl FnOnce() -> &'h [Vec<u8>],
    ) -> Option<&[u8]> {
        let mut supported = Some(hwcaps_supported);
        let mut hwcaps: &[Vec<u8>] = &[];
        let mut best: Option<Entry> = None;
        let mut best_priority = u32::MAX;
        for e in self.entries_named(name) {
            if !(e.flags == FLAG_ELF_LIBC6 || e.flags == HOST_CACHE_ID) {
                continue;
            }
            if best.is_some() && e.flags != HOST_CACHE_ID {
                continue;
            }
            let named = e.hwcap & HWCAP_EXTENSION != 0;
            if !named && best.is_some() {
                break;
            }
            if named {
                let idx = (e.hwcap & 0xffff_ffff) as usize;
                let Some(sub) = self.hwcaps.get(idx) else {
                    continue;
                };
                if let Some(f) = supported.take() {
                    hwcaps = f();
                }
                let Some(pos) = hwcaps.iter().position(|s| s == sub) else {
                    continue;
                };
                let priority = pos as u32 + 1;
                if best.is_some() && priority >= best_priority {
                    continue;
                }
                best_priority = priority;
            } else if e.hwcap != 0 {
                continue;
            }
            best = Some(e);
            if !named && e.flags == HOST_CACHE_ID {
                break;
            }
        }
        best.and_then(|e| cstr(self.data(), e.path))
    }
}

fn parse_hwcaps(data: &[u8], ext: usize) -> Option<Vec<Vec<u8>>> {
    let count = u32_at(data, ext + 4)? as usize;
    let mut names = Vec::new();
    for i in 0..count.min(64) {
        let s = ext.checked_add(8)?.checked_add(i.checked_mul(16)?)?;
        if u32_at(data, s)? != EXT_TAG_GLIBC_HWCAPS {
            continue;
        }
        let off = u32_at(data, s + 8)? as usize;
        let size = u32_at(data, s + 12)? as usize;
        let arr = data.get(off..off.checked_add(size)?)?;
        for idx in arr.chunks_exact(4).take(4096) {
            let str_off = u32::from_le_bytes([idx[0], idx[1], idx[2], idx[3]]) as usize;
            names.push(cstr(data, str_off)?.to_vec());
        }
    }
    Some(names)
}
