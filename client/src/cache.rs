//! The node's content-addressed file cache: central's files (today the
//! program, its interpreter and libraries; later every file a job reads)
//! stored by BLAKE3 hash so the kernel can exec and mmap a local copy, and
//! so content shared by many paths or jobs is fetched once.
//!
//! Layout under `<state_dir>/cache/`:
//! - `objects/<2 hex>/<62 hex>`: complete, verified objects, mode 0555 so a
//!   job's unprivileged user can exec and mmap them. They are immutable: a
//!   changed file on central is a new object.
//! - `tmp/`: objects being written. Every object is written there, fsynced,
//!   checked against its hash and renamed into `objects/`, so a crash never
//!   leaves a torn object under an object name; `tmp/` is emptied at open.
//! - `index.log`: central path -> (identity, hash), see [`index`] for why a
//!   log.
//! - `lock`: an exclusive `flock`, because two daemons sharing one cache
//!   would delete each other's temporary files.
//!
//! Directories are 0711, not 0755: a job may open an object whose name it
//! was given (its own program, mapped libraries), but cannot list the cache
//! to read what other users' jobs fetched.
//!
//! A path's entry is valid only while central reports the very same
//! [`FileIdentity`] (size, mtime, ctime, inode, device): close-to-open
//! consistency as in NFS and AFS, checked at every open.
//!
//! Recency for eviction is kept in memory; at open it is seeded from the
//! order of the index log, an approximation that costs no write per hit.

mod index;
mod partial;

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

pub use blake3::Hash;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use index::{Entry, IndexLog, Record};
pub use partial::{PartialObject, RangeSink};

/// Mode of a finished object: readable and executable by the job's user,
/// writable by no one.
pub const OBJECT_MODE: u32 = 0o555;
/// Mode of the cache's directories: traversable, not listable, by others.
const DIR_MODE: u32 = 0o711;
/// Name prefix of a library set being made (see [`Cache::lib_set_dir`]).
const LIBSET_NEW: &str = ".new-";
/// Streaming copy buffer.
const CHUNK: usize = 256 * 1024;

/// Everything that can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Another process (a second diatom-client) holds the cache.
    #[error("cache {0} is in use by another process")]
    Locked(PathBuf),
    /// The content does not hash to what central said: corrupted in transit
    /// or changed on central mid-transfer. Nothing was stored.
    #[error("content hash {actual} does not match the expected {expected}")]
    HashMismatch {
        /// What central announced.
        expected: Hash,
        /// What arrived.
        actual: Hash,
    },
    /// The content's length is not the size in its identity.
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The size in the file identity.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// A partial write reaches past the object's end.
    #[error("write of {len} bytes at offset {offset} exceeds the object size {size}")]
    OutOfBounds {
        /// Where the write starts.
        offset: u64,
        /// How long it is.
        len: usize,
        /// The object's size.
        size: u64,
    },
    /// `finish` before every byte of a partial object arrived.
    #[error("object incomplete: {ready} of {size} bytes")]
    Incomplete {
        /// Bytes present from the start.
        ready: u64,
        /// The object's size.
        size: u64,
    },
    /// A partial object was used after it was finished or failed.
    #[error("partial object already finished or failed")]
    NotWriting,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What identifies one version of a file on central. A cache entry is used
/// only when all of it matches what central reports now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch: catches a rewrite
    /// whose mtime was set back (`touch -d`, `tar x`).
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}

impl FileIdentity {
    /// The identity of a file from its metadata (as central computes it).
    pub fn from_metadata(m: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// A complete object in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedObject {
    /// Its file, to open, exec or mmap. Open it promptly: an
    /// [`evict_to`](Cache::evict_to) may unlink it (an open descriptor or
    /// mapping stays valid).
    pub path: PathBuf,
    /// Its BLAKE3 hash.
    pub hash: Hash,
    /// Its size.
    pub size: u64,
}

/// Counters for `diatom nodes` and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CacheStats {
    /// Objects stored.
    pub objects: u64,
    /// Their total size.
    pub bytes: u64,
    /// Central paths indexed.
    pub entries: u64,
    /// Lookups (by path or hash) that found an object.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
}

/// The cache. Cheap to clone; all clones share one state, and every method
/// takes `&self` so the jobs of a node can share it across threads.
#[derive(Debug, Clone)]
pub struct Cache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    libsets_dir: PathBuf,
    /// Library-set directories known to exist (see [`Cache::lib_set_dir`]).
    libsets: Mutex<std::collections::HashSet<Hash>>,
    state: Mutex<State>,
    tmp_seq: AtomicU64,
    _lock: Flock<File>,
}

#[derive(Debug)]
struct State {
    entries: HashMap<Vec<u8>, Entry>,
    objects: HashMap<Hash, ObjInfo>,
    partials: HashMap<Vec<u8>, Weak<PartialObject>>,
    bytes: u64,
    clock: u64,
    hits: u64,
    misses: u64,
    log: IndexLog,
}

#[derive(Debug, Clone, Copy)]
struct ObjInfo {
    size: u64,
    last_used: u64,
}

impl State {
    fn touch(&mut self, hash: &Hash) -> Option<u64> {
        self.clock += 1;
        let clock = self.clock;
        let info = self.objects.get_mut(hash)?;
        info.last_used = clock;
        Some(info.size)
    }

    /// Points `key` at `hash` in memory and in the log. A failed append only
    /// costs a refetch after a restart, so it is logged, not returned.
    fn put_entry(&mut self, key: Vec<u8>, identity: FileIdentity, hash: Hash) {
        let entry = Entry { identity, hash };
        if self.entries.get(&key) == Some(&entry) {
            return;
        }
        let rec = Record::Put {
            path: key.clone(),
            identity,
            hash,
        };
        self.entries.insert(key, entry);
        if let Err(e) = self.log.append(&rec) {
            log::warn!("cache index not updated: {e}");
        }
        self.maybe_compact();
    }

    /// Drops objects `gone` (already off the disk) and every entry that
    /// names one of them.
    fn forget(&mut self, gone: &std::collections::HashSet<Hash>) {
        for hash in gone {
            if let Some(info) = self.objects.remove(hash) {
                self.bytes -= info.size;
            }
        }
        let dead: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, e)| gone.contains(&e.hash))
            .map(|(k, _)| k.clone())
            .collect();
        for path in dead {
            self.entries.remove(&path);
            if let Err(e) = self.log.append(&Record::Remove { path }) {
                log::warn!("cache index not updated: {e}");
            }
        }
        self.maybe_compact();
    }

    fn maybe_compact(&mut self) {
        if self.log.wants_compaction(self.entries.len()) {
            if let Err(e) = self.log.compact(self.entries.iter()) {
                log::warn!("cache index compaction failed: {e}");
            }
        }
    }
}

/// The central path's bytes: the index key.
fn key(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

impl Cache {
    /// Opens (creating if needed) the cache under `state_dir/cache`, takes
    /// its lock, empties `tmp/`, scans `objects/` and replays the index.
    pub fn open(state_dir: &Path) -> Result<Cache, CacheError> {
        let root = state_dir.join("cache");
        let objects_dir = root.join("objects");
        let tmp_dir = root.join("tmp");
        let libsets_dir = root.join("libsets");
        for d in [state_dir, &root, &objects_dir, &tmp_dir, &libsets_dir] {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(d)
                .map_err(io_err("create directory", d))?;
        }
        let lock_path = root.join("lock");
        let lock_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| CacheError::Locked(root.clone()))?;

        for e in std::fs::read_dir(&tmp_dir).map_err(io_err("read directory", &tmp_dir))? {
            let p = e.map_err(io_err("read directory", &tmp_dir))?.path();
            std::fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
        // A library set half made when the daemon stopped.
        for e in std::fs::read_dir(&libsets_dir).map_err(io_err("read directory", &libsets_dir))? {
            let e = e.map_err(io_err("read directory", &libsets_dir))?;
            if e.file_name().as_bytes().starts_with(LIBSET_NEW.as_bytes()) {
                let p = e.path();
                std::fs::remove_dir_all(&p).map_err(io_err("remove", &p))?;
            }
        }

        let mut objects = HashMap::new();
        let mut bytes = 0;
        for e in std::fs::read_dir(&objects_dir).map_err(io_err("read directory", &objects_dir))? {
            let dir = e.map_err(io_err("read directory", &objects_dir))?.path();
            let Some(prefix) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            for f in std::fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let f = f.map_err(io_err("read directory", &dir))?;
                let name = f.file_name();
                let hex = format!("{prefix}{}", name.to_string_lossy());
                let Ok(hash) = Hash::from_hex(hex.as_bytes()) else {
                    log::warn!("cache: ignoring stray file {}", f.path().display());
                    continue;
                };
                let size = f.metadata().map_err(io_err("stat", &f.path()))?.len();
                bytes += size;
                objects.insert(hash, ObjInfo { size, last_used: 0 });
            }
        }

        let (log, replayed) = IndexLog::open(&root.join("index.log"))?;
        let mut entries = HashMap::with_capacity(replayed.len());
        let mut clock = 0;
        for (path, entry) in replayed {
            // An entry whose object is gone (evicted, or lost in a crash
            // before its rename reached the disk) is dropped here.
            if let Some(info) = objects.get_mut(&entry.hash) {
                clock += 1;
                info.last_used = clock;
                entries.insert(path, entry);
            }
        }
        let mut state = State {
            entries,
            objects,
            partials: HashMap::new(),
            bytes,
            clock,
            hits: 0,
            misses: 0,
            log,
        };
        state.maybe_compact();
        Ok(Cache {
            shared: Arc::new(Shared {
                objects_dir,
                tmp_dir,
                libsets_dir,
                libsets: Mutex::new(std::collections::HashSet::new()),
                state: Mutex::new(state),
                tmp_seq: AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// The directories a job reads from (objects, and partial objects in
    /// `tmp/` while they stream in): all a job's root shows of the cache,
    /// read-only; never the index, which names other jobs' files.
    pub fn job_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.shared.objects_dir.clone(),
            self.shared.tmp_dir.clone(),
            self.shared.libsets_dir.clone(),
        ]
    }

    /// The node-wide directory of one set of library links, named by `key`
    /// (a hash of what the set holds), made once by `fill` and shared by
    /// every job and exec that loads the same libraries from the same
    /// objects. A new set is filled in a temporary directory and renamed
    /// into place, so a job never sees half of one; two jobs making the
    /// same set at once both succeed (the second rename loses and its copy
    /// goes). The links name content-addressed objects, so a set never
    /// goes stale; one whose object was evicted works again once the
    /// object is fetched back (the launch fetches every missing object
    /// before it uses the set).
    pub fn lib_set_dir(
        &self,
        key: &Hash,
        fill: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> std::io::Result<PathBuf> {
        let dir = self.shared.libsets_dir.join(key.to_hex().as_str());
        let known = || {
            self.shared
                .libsets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if known().contains(key) || dir.is_dir() {
            known().insert(*key);
            return Ok(dir);
        }
        let seq = self.shared.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .shared
            .libsets_dir
            .join(format!("{LIBSET_NEW}{}-{seq}", std::process::id()));
        let made = fill(&tmp).and_then(|()| std::fs::rename(&tmp, &dir));
        match made {
            Ok(()) => {}
            Err(_) if dir.is_dir() => {
                // Another job made the same set first.
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        known().insert(*key);
        Ok(dir)
    }

    /// Where the object with this hash lives (whether or not it exists).
    pub fn object_path(&self, hash: &Hash) -> PathBuf {
        self.shared.object_path(hash)
    }

    /// The object cached for central `path`, if central's current `identity`
    /// is exactly the one it was cached under.
    pub fn lookup(&self, path: &Path, identity: &FileIdentity) -> Option<CachedObject> {
        let mut st = self.state();
        let hash = match st.entries.get(path.as_os_str().as_bytes()) {
            Some(e) if e.identity == *identity => e.hash,
            _ => {
                st.misses += 1;
                return None;
            }
        };
        let Some(size) = self.live(&mut st, &hash) else {
            st.misses += 1;
            return None;
        };
        st.hits += 1;
        Some(CachedObject {
            path: self.object_path(&hash),
            hash,
            size,
        })
    }

    /// The size of object `hash` when it is cached and still on the disk
    /// whole. An object deleted or cut short behind the daemon's back (by
    /// hand, a full disk's cleanup) is forgotten, so it is fetched again
    /// instead of failing every job that needs it.
    fn live(&self, st: &mut State, hash: &Hash) -> Option<u64> {
        let size = st.touch(hash)?;
        let p = self.object_path(hash);
        match std::fs::metadata(&p) {
            Ok(m) if m.len() == size => Some(size),
            found => {
                log::warn!(
                    "cache object {} is {}: fetched again",
                    p.display(),
                    if found.is_ok() { "cut short" } else { "gone" }
                );
                st.forget(&std::collections::HashSet::from([*hash]));
                None
            }
        }
    }

    /// The object with this content, whatever path it came from.
    pub fn lookup_hash(&self, hash: &Hash) -> Option<PathBuf> {
        let mut st = self.state();
        if self.live(&mut st, hash).is_some() {
            st.hits += 1;
            Some(self.object_path(hash))
        } else {
            st.misses += 1;
            None
        }
    }

    /// Records that central `path` with `identity` has content `hash` when
    /// that object is already cached (central sent the hash; the content
    /// came earlier under another path). `None`: fetch it.
    pub fn link(&self, path: &Path, identity: &FileIdentity, hash: &Hash) -> Option<CachedObject> {
        let mut st = self.state();
        let Some(size) = self.live(&mut st, hash) else {
            st.misses += 1;
            return None;
        };
        if size != identity.size {
            st.misses += 1;
            return None;
        }
        st.hits += 1;
        st.put_entry(key(path), *identity, *hash);
        Some(CachedObject {
            path: self.object_path(hash),
            hash: *hash,
            size,
        })
    }

    /// Stores the content read from `data` as central `path` with `identity`,
    /// hashing while it writes. Rejects (storing nothing) content whose length
    /// is not `identity.size` or whose hash is not `expected_hash`. When
    /// `expected_hash` names an object already cached, `data` is not read.
    pub fn insert(
        &self,
        path: &Path,
        identity: &FileIdentity,
        expected_hash: Option<Hash>,
        mut data: impl Read,
    ) -> Result<CachedObject, CacheError> {
        if let Some(h) = expected_hash {
            if let Some(obj) = self.link(path, identity, &h) {
                return Ok(obj);
            }
        }
        let (tmp, mut file) = self.shared.create_tmp("i")?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read content for", &tmp)(e)),
            };
            total += n as u64;
            if total > identity.size {
                return Err(CacheError::SizeMismatch {
                    expected: identity.size,
                    actual: total,
                });
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io_err("write", &tmp))?;
        }
        if total != identity.size {
            return Err(CacheError::SizeMismatch {
                expected: identity.size,
                actual: total,
            });
        }
        let actual = hasher.finalize();
        if let Some(expected) = expected_hash {
            if expected != actual {
                return Err(CacheError::HashMismatch { expected, actual });
            }
        }
        let obj = self
            .shared
            .commit(&tmp, &file, actual, total, Some((key(path), *identity)))?;
        guard.disarm();
        Ok(obj)
    }

    /// Starts a streaming write of central `path` (`size` bytes) so readers
    /// can use the first bytes before the last arrive; see [`PartialObject`].
    /// A second caller for the same path and identity should use
    /// [`in_progress`](Self::in_progress) to share the transfer.
    pub fn begin(
        &self,
        path: &Path,
        identity: &FileIdentity,
        size: u64,
    ) -> Result<Arc<PartialObject>, CacheError> {
        if size != identity.size {
            return Err(CacheError::SizeMismatch {
                expected: identity.size,
                actual: size,
            });
        }
        let p = PartialObject::create(self.shared.clone(), key(path), *identity)?;
        let mut st = self.state();
        st.partials.retain(|_, w| w.strong_count() > 0);
        st.partials.insert(key(path), Arc::downgrade(&p));
        Ok(p)
    }

    /// The unfinished transfer of central `path` with exactly `identity`,
    /// if one is under way.
    pub fn in_progress(&self, path: &Path, identity: &FileIdentity) -> Option<Arc<PartialObject>> {
        // The cache state is released before the object's progress is
        // looked at: finishing an object locks its progress, then the state
        // (to commit it), so holding both the other way round deadlocks
        // two jobs opening the same file as it completes.
        let p = self
            .state()
            .partials
            .get(path.as_os_str().as_bytes())?
            .upgrade()?;
        (p.identity() == identity && p.is_writing()).then_some(p)
    }

    /// Deletes least recently used objects until at most `max_bytes` remain;
    /// returns the bytes freed. Index entries of deleted objects go too.
    pub fn evict_to(&self, max_bytes: u64) -> Result<u64, CacheError> {
        let mut st = self.state();
        if st.bytes <= max_bytes {
            return Ok(0);
        }
        let mut by_age: Vec<(u64, Hash, u64)> = st
            .objects
            .iter()
            .map(|(h, i)| (i.last_used, *h, i.size))
            .collect();
        by_age.sort_unstable_by_key(|(t, _, _)| *t);
        let mut freed = 0;
        let mut gone = std::collections::HashSet::new();
        for (_, hash, size) in by_age {
            if st.bytes - freed <= max_bytes {
                break;
            }
            let p = self.object_path(&hash);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    st.forget(&gone);
                    return Err(io_err("remove", &p)(e));
                }
            }
            freed += size;
            gone.insert(hash);
        }
        st.forget(&gone);
        Ok(freed)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let st = self.state();
        CacheStats {
            objects: st.objects.len() as u64,
            bytes: st.bytes,
            entries: st.entries.len() as u64,
            hits: st.hits,
            misses: st.misses,
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is only mutated in small steps that leave it consistent,
        // so a panic elsewhere while locked does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn object_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.objects_dir.join(&hex[..2]).join(&hex[2..])
    }

    /// A new, private file in `tmp/`.
    fn create_tmp(&self, kind: &str) -> Result<(PathBuf, File), CacheError> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp_dir
            .join(format!("{kind}-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok((path, file))
    }

    /// Makes the verified temporary file `tmp` the object `hash` (or drops it
    /// when that object already exists) and indexes it under `entry`.
    fn commit(
        &self,
        tmp: &Path,
        file: &File,
        hash: Hash,
        size: u64,
        entry: Option<(Vec<u8>, FileIdentity)>,
    ) -> Result<CachedObject, CacheError> {
        file.sync_all().map_err(io_err("sync", tmp))?;
        file.set_permissions(Permissions::from_mode(OBJECT_MODE))
            .map_err(io_err("chmod", tmp))?;
        let dest = self.object_path(&hash);
        let mut guard = self.state();
        let st = &mut *guard;
        match st.objects.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => {
                // Same content committed by someone else meanwhile. Keep
                // theirs: its inode may already be mapped by a job.
                std::fs::remove_file(tmp).map_err(io_err("remove", tmp))?;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                if let Some(dir) = dest.parent() {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(DIR_MODE)
                        .create(dir)
                        .map_err(io_err("create directory", dir))?;
                }
                std::fs::rename(tmp, &dest).map_err(io_err("rename into", &dest))?;
                slot.insert(ObjInfo { size, last_used: 0 });
                st.bytes += size;
            }
        }
        st.touch(&hash);
        if let Some((k, identity)) = entry {
            st.put_entry(k, identity, hash);
        }
        Ok(CachedObject {
            path: dest,
            hash,
            size,
        })
    }
}

/// Removes a temporary file when an insert fails part-way.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests;
