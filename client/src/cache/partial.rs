//! Streaming writes of large objects: bytes land in a file in `tmp/` as they
//! arrive, in any order (datagrams are reordered), and readers may use the
//! contiguous prefix that has arrived before the rest does.
//!
//! The hash is computed as the contiguous prefix grows, reading back from
//! the file what arrived out of order, so `finish` costs no second pass over
//! a large file; a large write in order is hashed on a second thread while
//! it is written. Bytes already hashed are never rewritten: a duplicate
//! datagram carrying different data cannot make the file differ from what
//! was hashed.
//!
//! While writing, the file is mode 0644 so the job's user can read the
//! prefix; it is not meant for exec or mmap until finished (a mapping past
//! the prefix would see zeros, not wait).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{io_err, CacheError, CachedObject, FileIdentity, Hash, Shared};

/// In-order writes at least this large are hashed on a second thread while
/// they are written.
const HASH_BESIDE_MIN: usize = 1 << 20;

/// A streaming write of one object; share it in an `Arc` between the writer
/// and readers. Dropped unfinished, its temporary file is removed.
#[derive(Debug)]
pub struct PartialObject {
    shared: Arc<Shared>,
    key: Vec<u8>,
    identity: FileIdentity,
    tmp: PathBuf,
    file: File,
    progress: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Debug)]
struct Progress {
    /// Bytes `0..prefix` are present and hashed.
    prefix: u64,
    /// Ranges `start..end` present beyond the prefix, disjoint, not adjacent.
    pending: BTreeMap<u64, u64>,
    hasher: blake3::Hasher,
    state: WriteState,
}

#[derive(Debug, Clone)]
enum WriteState {
    Writing,
    Finished(CachedObject),
    Failed,
}

impl PartialObject {
    pub(super) fn create(
        shared: Arc<Shared>,
        key: Vec<u8>,
        identity: FileIdentity,
    ) -> Result<Arc<PartialObject>, CacheError> {
        let (tmp, file) = shared.create_tmp("p")?;
        let setup = file
            .set_len(identity.size)
            .map_err(io_err("size", &tmp))
            .and_then(|()| {
                file.set_permissions(std::fs::Permissions::from_mode(0o644))
                    .map_err(io_err("chmod", &tmp))
            });
        if let Err(e) = setup {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Arc::new(PartialObject {
            shared,
            key,
            identity,
            tmp,
            file,
            progress: Mutex::new(Progress {
                prefix: 0,
                pending: BTreeMap::new(),
                hasher: blake3::Hasher::new(),
                state: WriteState::Writing,
            }),
            changed: Condvar::new(),
        }))
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The identity of the central file being written.
    pub fn identity(&self) -> &FileIdentity {
        &self.identity
    }

    /// Gives bytes `offset..offset + len` of the file their page cache now,
    /// before they arrive (a mapping populated for writing), so that a
    /// thread ahead of the writer pays for the new pages, not the writer.
    /// Best effort: an error (older kernels lack `MADV_POPULATE_WRITE`)
    /// only leaves the work to the write. The bytes read as zeros until
    /// written, which no reader sees (readers wait for the written prefix).
    pub fn populate(&self, offset: u64, len: usize) {
        use std::os::fd::AsRawFd;
        let Ok(off) = libc::off_t::try_from(offset) else {
            return;
        };
        if len == 0
            || !offset.is_multiple_of(4096)
            || offset.saturating_add(len as u64) > self.size()
        {
            return;
        }
        // SAFETY: a fresh shared mapping of our own descriptor, unmapped
        // below; nothing reads or writes through it (the kernel populates).
        unsafe {
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                off,
            );
            if m == libc::MAP_FAILED {
                return;
            }
            libc::madvise(m, len, libc::MADV_POPULATE_WRITE);
            libc::munmap(m, len);
        }
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// Still accepting writes (not finished, not failed).
    pub fn is_writing(&self) -> bool {
        matches!(self.progress().state, WriteState::Writing)
    }

    /// The file to read: the temporary file while writing, the object once
    /// finished. A descriptor opened on the temporary file stays valid after
    /// `finish` (the rename keeps the inode).
    pub fn path(&self) -> PathBuf {
        match &self.progress().state {
            WriteState::Finished(obj) => obj.path.clone(),
            _ => self.tmp.clone(),
        }
    }

    /// Opens the object's file for reading.
    pub fn open_read(&self) -> Result<File, CacheError> {
        let p = self.path();
        File::open(&p).map_err(io_err("open", &p))
    }

    /// Bytes `0..ready_up_to()` have arrived and may be read.
    pub fn ready_up_to(&self) -> u64 {
        self.progress().prefix
    }

    /// Waits until bytes `0..end` have arrived (true), or the write failed
    /// or `timeout` passed (false).
    pub fn wait_ready(&self, end: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut p = self.progress();
        loop {
            if p.prefix >= end.min(self.identity.size) {
                return true;
            }
            if matches!(p.state, WriteState::Failed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            p = self
                .changed
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Writes `data` at `offset`. Writes may come in any order and may
    /// repeat; bytes already in the contiguous prefix are ignored.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        let size = self.identity.size;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= size)
            .ok_or(CacheError::OutOfBounds {
                offset,
                len: data.len(),
                size,
            })?;
        let mut p = self.progress();
        if !matches!(p.state, WriteState::Writing) {
            return Err(CacheError::NotWriting);
        }
        let start = offset.max(p.prefix);
        if start >= end {
            return Ok(());
        }
        // `start - offset` < data.len() because start < end.
        let skip = (start - offset) as usize;
        let data = &data[skip..];
        let before = p.prefix;
        if start == p.prefix && data.len() >= HASH_BESIDE_MIN {
            // In order and large: hash straight from the buffer on another
            // thread while this one writes (on a fetch the write and the
            // hash are the two costs of the thread that receives answers).
            let hasher = &mut p.hasher;
            let (written, hashed) = std::thread::scope(|s| {
                let hashing = std::thread::Builder::new()
                    .name("diatom-hash".into())
                    .spawn_scoped(s, || {
                        hasher.update(data);
                    });
                let written = self.file.write_all_at(data, start);
                // None: no thread (hash here); Some(false): it panicked.
                let hashed = hashing.ok().map(|h| h.join().is_ok());
                (written, hashed)
            });
            if hashed.is_none() {
                p.hasher.update(data);
            }
            if let Err(e) = written.map_err(io_err("write", &self.tmp)) {
                // The hash has seen bytes the file may lack: the object
                // can only fail now.
                self.fail_locked(&mut p);
                return Err(e);
            }
            if hashed == Some(false) {
                self.fail_locked(&mut p);
                return Err(CacheError::NotWriting);
            }
            p.prefix = end;
        } else {
            self.file
                .write_all_at(data, start)
                .map_err(io_err("write", &self.tmp))?;
            if start == p.prefix {
                // In order: hash straight from the buffer.
                p.hasher.update(data);
                p.prefix = end;
            } else {
                insert_range(&mut p.pending, start, end);
            }
        }
        self.absorb_pending(&mut p)?;
        if p.prefix != before {
            self.changed.notify_all();
        }
        Ok(())
    }

    /// Moves pending ranges that now touch the prefix into it, hashing them
    /// from the file.
    fn absorb_pending(&self, p: &mut Progress) -> Result<(), CacheError> {
        let mut buf = Vec::new();
        while let Some((&s, &e)) = p.pending.first_key_value() {
            if s > p.prefix {
                break;
            }
            p.pending.remove(&s);
            let mut at = p.prefix;
            while at < e {
                let n = (e - at).min(super::CHUNK as u64) as usize;
                buf.resize(n, 0);
                self.file
                    .read_exact_at(&mut buf, at)
                    .map_err(io_err("read back", &self.tmp))?;
                p.hasher.update(&buf);
                at += n as u64;
            }
            p.prefix = p.prefix.max(e);
        }
        Ok(())
    }

    /// Completes the object: every byte must have arrived and hash to
    /// `expected`. On a mismatch the file is deleted and nothing is stored.
    pub fn finish(&self, expected: Hash) -> Result<CachedObject, CacheError> {
        let mut p = self.progress();
        match &p.state {
            WriteState::Finished(obj) if obj.hash == expected => return Ok(obj.clone()),
            WriteState::Writing => {}
            _ => return Err(CacheError::NotWriting),
        }
        if p.prefix < self.identity.size {
            return Err(CacheError::Incomplete {
                ready: p.prefix,
                size: self.identity.size,
            });
        }
        let actual = p.hasher.finalize();
        if actual != expected {
            p.state = WriteState::Failed;
            let _ = std::fs::remove_file(&self.tmp);
            self.changed.notify_all();
            return Err(CacheError::HashMismatch { expected, actual });
        }
        let res = self.shared.commit(
            &self.tmp,
            &self.file,
            actual,
            self.identity.size,
            Some((self.key.clone(), self.identity)),
        );
        p.state = match &res {
            Ok(obj) => WriteState::Finished(obj.clone()),
            Err(_) => WriteState::Failed,
        };
        self.changed.notify_all();
        res
    }

    /// Completes the object with the hash of what arrived (the source is
    /// trusted, as for [`Cache::insert`](super::Cache::insert) without an
    /// expected hash): every byte must have arrived.
    pub fn complete(&self) -> Result<CachedObject, CacheError> {
        let hash = {
            let p = self.progress();
            if let WriteState::Finished(obj) = &p.state {
                return Ok(obj.clone());
            }
            p.hasher.finalize()
        };
        self.finish(hash)
    }

    /// Gives up: waiters are told the bytes will not come, the temporary
    /// file is removed (a descriptor already open on it keeps its inode).
    pub fn fail(&self) {
        let mut p = self.progress();
        self.fail_locked(&mut p);
    }

    fn fail_locked(&self, p: &mut Progress) {
        if matches!(p.state, WriteState::Writing) {
            p.state = WriteState::Failed;
            let _ = std::fs::remove_file(&self.tmp);
            self.changed.notify_all();
        }
    }

    /// Waits until the object is finished (its path in the cache) or
    /// failed or `timeout` passed (`None`).
    pub fn wait_finished(&self, timeout: Duration) -> Option<PathBuf> {
        let deadline = Instant::now() + timeout;
        let mut p = self.progress();
        loop {
            match &p.state {
                WriteState::Finished(obj) => return Some(obj.path.clone()),
                WriteState::Failed => return None,
                WriteState::Writing => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            p = self
                .changed
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Finished and stored in the cache.
    pub fn is_finished(&self) -> bool {
        matches!(self.progress().state, WriteState::Finished(_))
    }

    #[cfg(test)]
    pub(super) fn tmp_path(&self) -> &std::path::Path {
        &self.tmp
    }
}

impl Drop for PartialObject {
    fn drop(&mut self) {
        let finished = matches!(self.progress().state, WriteState::Finished(_));
        if !finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Adds `start..end` to a set of disjoint, non-adjacent ranges, merging.
fn insert_range(ranges: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    // A range starting at or before `start` may overlap or touch it.
    if let Some((&s, &e)) = ranges.range(..=start).next_back() {
        if e >= start {
            start = s;
            end = end.max(e);
            ranges.remove(&s);
        }
    }
    // Ranges starting inside or right after it are swallowed.
    while let Some((&s, &e)) = ranges.range(start..).next() {
        if s > end {
            break;
        }
        end = end.max(e);
        ranges.remove(&s);
    }
    ranges.insert(start, end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let mut r = BTreeMap::new();
        insert_range(&mut r, 10, 20);
        insert_range(&mut r, 30, 40);
        assert_eq!(r.len(), 2);
        insert_range(&mut r, 20, 30);
        assert_eq!(r, BTreeMap::from([(10, 40)]));
        insert_range(&mut r, 5, 12);
        insert_range(&mut r, 38, 50);
        assert_eq!(r, BTreeMap::from([(5, 50)]));
        insert_range(&mut r, 60, 70);
        insert_range(&mut r, 0, 100);
        assert_eq!(r, BTreeMap::from([(0, 100)]));
    }
}
