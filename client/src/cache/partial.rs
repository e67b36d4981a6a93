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
//! A large object can also be written in place: [`PartialObject::map_for_sinks`]
//! maps the whole file shared and writable, [`PartialObject::populate`]
//! gives ranges their page cache through that mapping, and a
//! [`RangeSink`] for a populated range (handed out once per range, in
//! increasing order) copies arriving bytes straight into it (a fetch's
//! answers, as each datagram is opened: no reassembly buffer, no `pwrite`);
//! [`PartialObject::commit_sunk`] then hashes the range from the mapping
//! and publishes it. Only populated ranges are written through the mapping:
//! populating reserves the file's blocks, so a full disk fails the populate
//! (and the range is written with `pwrite`, which reports it) instead of
//! raising SIGBUS on a store.
//!
//! While writing, the file is mode 0644 so the job's user can read the
//! prefix; it is not meant for exec or mmap until finished (a mapping past
//! the prefix would see zeros, not wait).
//!
//! Two locks: the writer's (hasher, out-of-order ranges) is held across
//! the file writes, the hashing and the final fsync; readers never take it
//! (the prefix is an atomic, the state has a lock of its own held only to
//! look at or change it). A reader of a large transfer (a job reading a
//! file as it arrives) otherwise waited for every 8 MiB write and for the
//! fsync of the whole object before it could read what had long arrived.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Held by whoever writes, hashes or completes (lock order: `writer`,
    /// then `state`).
    writer: Mutex<Writer>,
    /// Bytes `0..prefix` are present and hashed; only raised, by a holder
    /// of `writer`, after the bytes are in the file.
    prefix: AtomicU64,
    /// Held only to read or change the state, and by waiters.
    state: Mutex<WriteState>,
    /// Signalled (under `state`) when the prefix grows or the state changes.
    changed: Condvar,
    /// The whole file mapped for [`RangeSink`]s (large objects, on demand).
    map: std::sync::OnceLock<Option<Arc<Mapping>>>,
    /// Bytes `0..populated` have page cache through `map` (raised by
    /// [`PartialObject::populate`], in order only).
    populated: Mutex<u64>,
    /// Sinks are handed out for ranges at or beyond this, so no two
    /// overlap and none covers bytes already published.
    next_sink: Mutex<u64>,
}

/// A shared, writable mapping of a whole cache object, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    addr: usize,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr + len` is a mapping made by `map_for_sinks`
        // and owned by this value only; every user holds an `Arc` to it.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Where the bytes of one range of a large object go as they arrive (see
/// the module documentation): a populated range of the object's mapping,
/// written only through this value until [`PartialObject::commit_sunk`].
#[derive(Debug)]
pub struct RangeSink {
    map: Arc<Mapping>,
    base: u64,
    len: u64,
}

impl RangeSink {
    /// Copies `data` to `at` bytes into the range; anything beyond the
    /// range is ignored (callers never send it).
    pub fn write(&mut self, at: u64, data: &[u8]) {
        let Some(end) = at.checked_add(data.len() as u64) else {
            return;
        };
        if end > self.len {
            return;
        }
        // `base + end <= size <= map.len` (checked when the sink was made).
        let dst = self.map.addr + (self.base + at) as usize;
        // SAFETY: the destination lies inside the live mapping (the `Arc`
        // keeps it), in pages populated for writing, and only this sink
        // writes these bytes until the owner commits them (sinks never
        // overlap); the source is a separate buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
    }
}

#[derive(Debug)]
struct Writer {
    /// Ranges `start..end` present beyond the prefix, disjoint, not adjacent.
    pending: BTreeMap<u64, u64>,
    hasher: blake3::Hasher,
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
            writer: Mutex::new(Writer {
                pending: BTreeMap::new(),
                hasher: blake3::Hasher::new(),
            }),
            prefix: AtomicU64::new(0),
            state: Mutex::new(WriteState::Writing),
            changed: Condvar::new(),
            map: std::sync::OnceLock::new(),
            populated: Mutex::new(0),
            next_sink: Mutex::new(0),
        }))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes the waiters.
    fn set_state(&self, state: WriteState) {
        *self.state() = state;
        self.changed.notify_all();
    }

    /// Publishes a longer prefix (the caller holds `writer`) and wakes the
    /// waiters. Taking `state` to notify orders this with a waiter that
    /// checked the old prefix and is about to sleep.
    fn raise_prefix(&self, end: u64) {
        self.prefix.store(end, Ordering::Release);
        let _state = self.state();
        self.changed.notify_all();
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
    ///
    /// With [`PartialObject::map_for_sinks`] done, the pages are populated
    /// in that mapping (so stores through it do not fault) and, for a
    /// range starting where the populated part ends, the part grows.
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
        if let Some(map) = self.map.get().and_then(Option::as_ref) {
            // SAFETY: the range lies inside the live mapping (checked
            // above against the size it covers); populating leaves the
            // contents of present pages alone.
            let r = unsafe {
                libc::madvise(
                    (map.addr + offset as usize) as *mut libc::c_void,
                    len,
                    libc::MADV_POPULATE_WRITE,
                )
            };
            let mut p = self
                .populated
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A failure (a full disk, no MADV_POPULATE_WRITE) leaves the
            // populated part where it is: no sinks beyond it.
            if r == 0 && *p == offset {
                *p = offset + len as u64;
            }
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

    /// Maps the whole object shared and writable for [`RangeSink`]s
    /// (once; later calls say whether it exists). False when it cannot be
    /// mapped: the object is then written with `pwrite` only.
    pub fn map_for_sinks(&self) -> bool {
        use std::os::fd::AsRawFd;
        self.map
            .get_or_init(|| {
                let len = usize::try_from(self.size()).ok().filter(|&l| l > 0)?;
                // SAFETY: a fresh shared mapping of our own descriptor,
                // owned by the returned `Mapping` (unmapped on its drop).
                let m = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        self.file.as_raw_fd(),
                        0,
                    )
                };
                (m != libc::MAP_FAILED).then(|| {
                    Arc::new(Mapping {
                        addr: m as usize,
                        len,
                    })
                })
            })
            .is_some()
    }

    /// Whether bytes `0..end` are populated in the mapping.
    pub fn is_populated(&self, end: u64) -> bool {
        *self
            .populated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            >= end
    }

    /// A sink for bytes `offset..offset + len`, if they are populated in
    /// the mapping, not yet published and beyond every earlier sink's
    /// range. Commit its bytes with [`PartialObject::commit_sunk`] once
    /// they have all been written.
    pub fn sink(&self, offset: u64, len: u64) -> Option<RangeSink> {
        let map = self.map.get().and_then(Option::as_ref)?;
        let end = offset.checked_add(len).filter(|&e| e <= self.size())?;
        let mut next = self
            .next_sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if offset < *next || offset < self.ready_up_to() || !self.is_populated(end) {
            return None;
        }
        *next = end;
        Some(RangeSink {
            map: Arc::clone(map),
            base: offset,
            len,
        })
    }

    /// Publishes bytes `offset..offset + len` written through a
    /// [`RangeSink`] (which must be done writing): hashes them from the
    /// mapping when they continue the prefix, as `write_at` does for
    /// written bytes.
    pub fn commit_sunk(&self, offset: u64, len: u64) -> Result<(), CacheError> {
        let size = self.identity.size;
        let bad = CacheError::OutOfBounds {
            offset,
            len: len as usize,
            size,
        };
        let end = offset.checked_add(len).filter(|&e| e <= size).ok_or(bad)?;
        let Some(map) = self.map.get().and_then(Option::as_ref) else {
            return Err(CacheError::NotWriting);
        };
        let mut w = self.writer();
        if !self.is_writing() {
            return Err(CacheError::NotWriting);
        }
        let prefix = self.ready_up_to();
        if offset < prefix {
            // Sinks are only made beyond the prefix: never rehash.
            return Err(CacheError::NotWriting);
        }
        let mut new_prefix = prefix;
        if offset == prefix {
            // SAFETY: inside the live mapping (`end <= size`); the sink
            // that wrote these bytes is done and no other covers them.
            let bytes = unsafe {
                std::slice::from_raw_parts((map.addr + offset as usize) as *const u8, len as usize)
            };
            w.hasher.update(bytes);
            new_prefix = end;
        } else {
            insert_range(&mut w.pending, offset, end);
        }
        self.publish(&mut w, prefix, new_prefix)
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// Still accepting writes (not finished, not failed).
    pub fn is_writing(&self) -> bool {
        matches!(*self.state(), WriteState::Writing)
    }

    /// The file to read: the temporary file while writing, the object once
    /// finished. A descriptor opened on the temporary file stays valid after
    /// `finish` (the rename keeps the inode).
    pub fn path(&self) -> PathBuf {
        match &*self.state() {
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
        self.prefix.load(Ordering::Acquire)
    }

    /// Waits until bytes `0..end` have arrived (true), or the write failed
    /// or `timeout` passed (false).
    pub fn wait_ready(&self, end: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let end = end.min(self.identity.size);
        if self.ready_up_to() >= end {
            return true;
        }
        let mut st = self.state();
        loop {
            if self.ready_up_to() >= end {
                return true;
            }
            if matches!(*st, WriteState::Failed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
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
        let mut w = self.writer();
        if !self.is_writing() {
            return Err(CacheError::NotWriting);
        }
        // Only holders of `writer` raise the prefix.
        let prefix = self.ready_up_to();
        let start = offset.max(prefix);
        if start >= end {
            return Ok(());
        }
        // `start - offset` < data.len() because start < end.
        let skip = (start - offset) as usize;
        let data = &data[skip..];
        let mut new_prefix = prefix;
        if start == prefix && data.len() >= HASH_BESIDE_MIN {
            // In order and large: hash straight from the buffer on another
            // thread while this one writes (on a fetch the write and the
            // hash are the two costs of the thread that receives answers).
            let hasher = &mut w.hasher;
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
                w.hasher.update(data);
            }
            if let Err(e) = written.map_err(io_err("write", &self.tmp)) {
                // The hash has seen bytes the file may lack: the object
                // can only fail now.
                self.fail_writing();
                return Err(e);
            }
            if hashed == Some(false) {
                self.fail_writing();
                return Err(CacheError::NotWriting);
            }
            new_prefix = end;
        } else {
            self.file
                .write_all_at(data, start)
                .map_err(io_err("write", &self.tmp))?;
            if start == prefix {
                // In order: hash straight from the buffer.
                w.hasher.update(data);
                new_prefix = end;
            } else {
                insert_range(&mut w.pending, start, end);
            }
        }
        self.publish(&mut w, prefix, new_prefix)
    }

    /// Absorbs the pending ranges that now touch `new_prefix` and
    /// publishes the result if it grew past `prefix` (the caller holds
    /// the writer's lock, passed as `w`).
    fn publish(&self, w: &mut Writer, prefix: u64, new_prefix: u64) -> Result<(), CacheError> {
        let new_prefix = match self.absorb_pending(w, new_prefix) {
            Ok(p) => p,
            Err(e) => {
                // The hash may have seen part of a range the prefix does
                // not cover: the object can only fail.
                self.fail_writing();
                return Err(e);
            }
        };
        if new_prefix != prefix {
            self.raise_prefix(new_prefix);
        }
        Ok(())
    }

    /// Moves pending ranges that now touch the prefix (`prefix`, not yet
    /// published) into it, hashing them from the file; the new prefix.
    fn absorb_pending(&self, w: &mut Writer, mut prefix: u64) -> Result<u64, CacheError> {
        let mut buf = Vec::new();
        while let Some((&s, &e)) = w.pending.first_key_value() {
            if s > prefix {
                break;
            }
            w.pending.remove(&s);
            let mut at = prefix;
            while at < e {
                let n = (e - at).min(super::CHUNK as u64) as usize;
                buf.resize(n, 0);
                self.file
                    .read_exact_at(&mut buf, at)
                    .map_err(io_err("read back", &self.tmp))?;
                w.hasher.update(&buf);
                at += n as u64;
            }
            prefix = prefix.max(e);
        }
        Ok(prefix)
    }

    /// Completes the object: every byte must have arrived and hash to
    /// `expected`. On a mismatch the file is deleted and nothing is stored.
    pub fn finish(&self, expected: Hash) -> Result<CachedObject, CacheError> {
        let w = self.writer();
        self.finish_locked(&w, Some(expected))
    }

    /// [`PartialObject::finish`] with the writer's lock held; `None`: the
    /// hash of what arrived.
    fn finish_locked(
        &self,
        w: &Writer,
        expected: Option<Hash>,
    ) -> Result<CachedObject, CacheError> {
        match &*self.state() {
            WriteState::Finished(obj) if expected.is_none_or(|h| h == obj.hash) => {
                return Ok(obj.clone())
            }
            WriteState::Writing => {}
            _ => return Err(CacheError::NotWriting),
        }
        let ready = self.ready_up_to();
        if ready < self.identity.size {
            return Err(CacheError::Incomplete {
                ready,
                size: self.identity.size,
            });
        }
        let actual = w.hasher.finalize();
        let expected = expected.unwrap_or(actual);
        if actual != expected {
            self.set_state(WriteState::Failed);
            let _ = std::fs::remove_file(&self.tmp);
            return Err(CacheError::HashMismatch { expected, actual });
        }
        // Readers go on reading the prefix (all of it) meanwhile: the
        // commit's fsync of a large object takes a while.
        let res = self.shared.commit(
            &self.tmp,
            &self.file,
            actual,
            self.identity.size,
            Some((self.key.clone(), self.identity)),
        );
        self.set_state(match &res {
            Ok(obj) => WriteState::Finished(obj.clone()),
            Err(_) => WriteState::Failed,
        });
        res
    }

    /// Completes the object with the hash of what arrived (the source is
    /// trusted, as for [`Cache::insert`](super::Cache::insert) without an
    /// expected hash): every byte must have arrived.
    pub fn complete(&self) -> Result<CachedObject, CacheError> {
        let w = self.writer();
        self.finish_locked(&w, None)
    }

    /// Gives up: waiters are told the bytes will not come, the temporary
    /// file is removed (a descriptor already open on it keeps its inode).
    pub fn fail(&self) {
        let _w = self.writer();
        self.fail_writing();
    }

    /// [`PartialObject::fail`] with the writer's lock held.
    fn fail_writing(&self) {
        let mut st = self.state();
        if matches!(*st, WriteState::Writing) {
            *st = WriteState::Failed;
            let _ = std::fs::remove_file(&self.tmp);
            self.changed.notify_all();
        }
    }

    /// Waits until the object is finished (its path in the cache) or
    /// failed or `timeout` passed (`None`).
    pub fn wait_finished(&self, timeout: Duration) -> Option<PathBuf> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            match &*st {
                WriteState::Finished(obj) => return Some(obj.path.clone()),
                WriteState::Failed => return None,
                WriteState::Writing => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Finished and stored in the cache.
    pub fn is_finished(&self) -> bool {
        matches!(*self.state(), WriteState::Finished(_))
    }

    #[cfg(test)]
    pub(super) fn tmp_path(&self) -> &std::path::Path {
        &self.tmp
    }
}

impl Drop for PartialObject {
    fn drop(&mut self) {
        if !self.is_finished() {
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
    fn readers_do_not_wait_for_the_writer() {
        // A writer busy with a long write (or a large object's fsync) holds
        // the writer's lock: what arrived before stays readable, and the
        // state can be asked, without waiting for it.
        let dir = std::env::temp_dir().join(format!("diatom-partial-test-{}", std::process::id()));
        let cache = super::super::Cache::open(&dir).unwrap();
        let id = FileIdentity {
            size: 8192,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            dev: 1,
        };
        let part = cache.begin(std::path::Path::new("/f"), &id, 8192).unwrap();
        part.write_at(0, &[7u8; 4096]).unwrap();
        let busy = part.writer();
        assert!(part.wait_ready(4096, Duration::ZERO));
        assert_eq!(part.ready_up_to(), 4096);
        assert!(part.is_writing() && !part.is_finished());
        assert!(part.path().exists());
        drop(busy);
        part.write_at(4096, &[8u8; 4096]).unwrap();
        assert!(part.complete().is_ok() && part.is_finished());
        drop((part, cache));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sinks_write_populated_ranges_in_place() {
        // Three ranges of an object (the last one short): the first two
        // through sinks (out of order), the last one with `pwrite`. Sinks
        // exist only for populated ranges beyond the prefix and every
        // earlier sink; the object hashes as its bytes.
        let dir = std::env::temp_dir().join(format!("diatom-sink-test-{}", std::process::id()));
        let cache = super::super::Cache::open(&dir).unwrap();
        let (step, size) = (64 * 1024u64, 64 * 1024 * 2 + 1000);
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let id = FileIdentity {
            size,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            dev: 1,
        };
        let part = cache.begin(std::path::Path::new("/f"), &id, size).unwrap();
        assert!(part.sink(0, step).is_none(), "not mapped");
        assert!(part.map_for_sinks());
        assert!(part.sink(0, step).is_none(), "not populated");
        assert!(!part.is_populated(step));
        part.populate(step, step as usize); // out of order: not counted
        assert!(!part.is_populated(2 * step));
        part.populate(0, step as usize);
        part.populate(step, step as usize);
        assert!(part.is_populated(2 * step));
        assert!(part.sink(0, 2 * step + 1).is_none(), "beyond populated");
        let mut first = part.sink(0, step).unwrap();
        let mut second = part.sink(step, step).unwrap();
        assert!(part.sink(0, step).is_none(), "overlaps an earlier sink");
        // Written in pieces, beyond its range ignored.
        second.write(0, &data[step as usize..step as usize + 100]);
        second.write(100, &data[step as usize + 100..2 * step as usize]);
        second.write(step - 1, &[1, 2]);
        part.commit_sunk(step, step).unwrap();
        assert_eq!(part.ready_up_to(), 0, "out of order: pending");
        first.write(0, &data[..step as usize]);
        part.commit_sunk(0, step).unwrap();
        assert_eq!(part.ready_up_to(), 2 * step);
        assert!(part.commit_sunk(0, step).is_err(), "never rehashed");
        part.write_at(2 * step, &data[2 * step as usize..]).unwrap();
        let obj = part.complete().unwrap();
        assert_eq!(obj.hash, blake3::hash(&data));
        assert_eq!(std::fs::read(&obj.path).unwrap(), data);
        drop((first, second, part, cache));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
