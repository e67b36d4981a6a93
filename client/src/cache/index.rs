//! The cache index on disk: an append-only log of "central path P with
//! identity I has content H" and "forget P" records, replayed at open.
//!
//! Why a log and not one file per entry or SQLite: an insert costs one
//! `write` of a few hundred bytes with no fsync, and open costs one
//! sequential read, where a file per entry costs a create, a write and a
//! rename per insert and a directory walk at open. Durability is not needed:
//! the objects directory is the truth about content, the index only saves
//! refetches. A record lost in a crash costs one refetch; a torn tail is
//! detected by each record's checksum and cut off at open. The log is
//! rewritten from the live entries (compacted) when dead records outnumber
//! them, so its size stays proportional to the cache.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{io_err, CacheError, FileIdentity, Hash};

const PUT: u8 = 1;
const REMOVE: u8 = 2;
/// Bytes of BLAKE3 kept as a record's checksum: enough to catch a torn
/// write, which is all it guards against.
const CHECK_LEN: usize = 8;
/// A record longer than this is garbage (central paths are at most 4 KiB).
const MAX_RECORD: usize = 64 * 1024;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    /// `path` now maps to `hash`, valid while central reports `identity`.
    Put {
        path: Vec<u8>,
        identity: FileIdentity,
        hash: Hash,
    },
    /// `path` no longer maps to anything.
    Remove { path: Vec<u8> },
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Record::Put {
                path,
                identity,
                hash,
            } => {
                out.push(PUT);
                put_bytes(out, path);
                out.extend_from_slice(&identity.size.to_le_bytes());
                out.extend_from_slice(&identity.mtime_ns.to_le_bytes());
                out.extend_from_slice(&identity.ctime_ns.to_le_bytes());
                out.extend_from_slice(&identity.ino.to_le_bytes());
                out.extend_from_slice(&identity.dev.to_le_bytes());
                out.extend_from_slice(hash.as_bytes());
            }
            Record::Remove { path } => {
                out.push(REMOVE);
                put_bytes(out, path);
            }
        }
        let payload_len = out.len() - start - 4;
        // Paths are bounded by the caller's PATH_MAX, far below u32::MAX.
        let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let check = blake3::hash(&out[start + 4..]);
        out.extend_from_slice(&check.as_bytes()[..CHECK_LEN]);
    }

    /// Decodes the record at the start of `buf`, returning it and its length
    /// on disk, or `None` when `buf` does not start with a whole valid record.
    fn decode(buf: &[u8]) -> Option<(Record, usize)> {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        if len > MAX_RECORD {
            return None;
        }
        let payload = buf.get(4..4 + len)?;
        let check = buf.get(4 + len..4 + len + CHECK_LEN)?;
        if blake3::hash(payload).as_bytes()[..CHECK_LEN] != *check {
            return None;
        }
        let mut r = Reader(payload);
        let rec = match r.u8()? {
            PUT => Record::Put {
                path: r.bytes()?,
                identity: FileIdentity {
                    size: r.u64()?,
                    mtime_ns: r.i64()?,
                    ctime_ns: r.i64()?,
                    ino: r.u64()?,
                    dev: r.u64()?,
                },
                hash: Hash::from_bytes(r.take(32)?.try_into().ok()?),
            },
            REMOVE => Record::Remove { path: r.bytes()? },
            _ => return None,
        };
        if !r.0.is_empty() {
            return None;
        }
        Some((rec, 4 + len + CHECK_LEN))
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        Some(self.take(len)?.to_vec())
    }
}

/// What the log says a path maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub identity: FileIdentity,
    pub hash: Hash,
}

/// Live entries after a replay, least recently written first.
pub(super) type Replayed = Vec<(Vec<u8>, Entry)>;

/// The open log and the number of records in it (live or dead).
#[derive(Debug)]
pub(super) struct IndexLog {
    path: PathBuf,
    file: File,
    records: u64,
}

impl IndexLog {
    /// Replays the log at `path` (creating it if missing) and returns the
    /// resulting entries in the order they were last written, so the caller
    /// can seed recency. A torn or corrupt tail is cut off.
    pub fn open(path: &Path) -> Result<(IndexLog, Replayed), CacheError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err("open index", path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(io_err("read index", path))?;
        let mut entries: HashMap<Vec<u8>, (u64, Entry)> = HashMap::new();
        let mut pos = 0;
        let mut records = 0u64;
        while let Some((rec, n)) = Record::decode(&buf[pos..]) {
            pos += n;
            records += 1;
            match rec {
                Record::Put {
                    path,
                    identity,
                    hash,
                } => {
                    entries.insert(path, (records, Entry { identity, hash }));
                }
                Record::Remove { path } => {
                    entries.remove(&path);
                }
            }
        }
        if pos < buf.len() {
            log::warn!(
                "cache index {}: dropping {} bytes of torn or corrupt records",
                path.display(),
                buf.len() - pos
            );
            file.set_len(pos as u64)
                .map_err(io_err("truncate index", path))?;
        }
        let mut ordered: Vec<_> = entries.into_iter().collect();
        ordered.sort_by_key(|(_, (seq, _))| *seq);
        let ordered = ordered.into_iter().map(|(p, (_, e))| (p, e)).collect();
        Ok((
            IndexLog {
                path: path.to_path_buf(),
                file,
                records,
            },
            ordered,
        ))
    }

    /// Appends one record. One `write` call, no fsync (see module docs).
    pub fn append(&mut self, rec: &Record) -> Result<(), CacheError> {
        let mut buf = Vec::with_capacity(128);
        rec.encode(&mut buf);
        self.file
            .write_all(&buf)
            .map_err(io_err("append to index", &self.path))?;
        self.records += 1;
        Ok(())
    }

    /// True when the log holds many more records than `live` entries.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.records > 4 * live as u64 + 1024
    }

    /// Rewrites the log to hold exactly `live`, atomically (write a new file,
    /// fsync, rename over the old one).
    pub fn compact<'a>(
        &mut self,
        live: impl Iterator<Item = (&'a Vec<u8>, &'a Entry)>,
    ) -> Result<(), CacheError> {
        let tmp = self.path.with_extension("compact");
        let mut buf = Vec::new();
        let mut records = 0;
        for (path, e) in live {
            Record::Put {
                path: path.clone(),
                identity: e.identity,
                hash: e.hash,
            }
            .encode(&mut buf);
            records += 1;
        }
        let mut f = File::create(&tmp).map_err(io_err("create index", &tmp))?;
        f.write_all(&buf).map_err(io_err("write index", &tmp))?;
        f.sync_all().map_err(io_err("sync index", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_err("rename index", &self.path))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err("open index", &self.path))?;
        self.records = records;
        Ok(())
    }

    /// Records in the log, live or dead.
    #[cfg(test)]
    pub fn records(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &str, n: u8) -> Record {
        Record::Put {
            path: p.as_bytes().to_vec(),
            identity: FileIdentity {
                size: 1,
                mtime_ns: -2,
                ctime_ns: 3,
                ino: 4,
                dev: 5,
            },
            hash: Hash::from_bytes([n; 32]),
        }
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        for rec in [
            put("/a", 1),
            Record::Remove {
                path: b"/\xff".to_vec(),
            },
        ] {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            assert_eq!(Record::decode(&buf), Some((rec.clone(), buf.len())));
            for cut in 0..buf.len() {
                assert_eq!(Record::decode(&buf[..cut]), None, "cut at {cut}");
            }
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0x40;
                assert_eq!(Record::decode(&bad), None, "flip at {i}");
            }
        }
    }

    #[test]
    fn replay_applies_removes_and_cuts_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("diatom-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("index.log");
        let _ = std::fs::remove_file(&p);
        {
            let (mut log, e) = IndexLog::open(&p).unwrap();
            assert!(e.is_empty());
            log.append(&put("/a", 1)).unwrap();
            log.append(&put("/b", 2)).unwrap();
            log.append(&Record::Remove {
                path: b"/a".to_vec(),
            })
            .unwrap();
            log.append(&put("/c", 3)).unwrap();
        }
        // A crash mid-append: half a record at the end.
        let mut half = Vec::new();
        put("/d", 4).encode(&mut half);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let good_len = std::fs::metadata(&p).unwrap().len() - (half.len() / 2) as u64;

        let (mut log, e) = IndexLog::open(&p).unwrap();
        let paths: Vec<_> = e.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(paths, [b"/b".as_slice(), b"/c"]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good_len);
        // Appending after the cut yields a readable log.
        log.append(&put("/e", 5)).unwrap();
        log.compact(e.iter().map(|(p, e)| (p, e))).unwrap();
        assert_eq!(log.records(), 2);
        drop(log);
        let (_, e) = IndexLog::open(&p).unwrap();
        assert_eq!(e.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
