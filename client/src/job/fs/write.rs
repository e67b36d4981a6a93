//! Files the job opens for writing: private copies in the mirror, written
//! back to the home's handle at `fsync`/`fdatasync`, at `close` of a
//! descriptor the program opened, and when no process of the job has the
//! file open any more (see docs/files.md, "Writes").
//!
//! The kernel writes the private copy natively; the node does not see the
//! writes, so a write-back compares the copy with what central has been
//! sent, chunk by chunk (BLAKE3 of each MiB), and sends the chunks that
//! differ, then the length.
//!
//! Descriptors the program gets for such files are moved to
//! [`FsConfig::write_fd_min`](super::FsConfig::write_fd_min) or above, so
//! that the seccomp filter stops `close`, `fsync` and `fdatasync` for
//! them only. Copies are found by inode (the private copy's), so `dup`,
//! `rename` and `fork` need no tracking.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};

use dscp_dicp::msg::fs::{FileStat, Handle, Request, Response};
use dscp_dicp::msg::Blob;
use nix::errno::Errno;
use syscalls::Sysno;
use tracer::{Action, SyscallStop};

use super::calls::OpenKind;
use super::fds::{open_in_range, Placed};
use super::meta::file_type;
use super::mirror::Content;
use super::{fetch, paths, FsLayer, PendingAnswer, Where};

/// Write-back granularity.
const CHUNK: usize = 1 << 20;
/// `Write`s a write-back keeps in flight (as a fetch keeps `Read`s).
const WRITE_WINDOW: usize = 8;

/// One file open for writing.
#[derive(Debug)]
struct Copy {
    central: Vec<u8>,
    handle: Handle,
    file: File,
    /// Length of the file on central as last written back.
    sent_len: u64,
    /// Hash of each chunk as last written back (or initially fetched).
    sent: Vec<blake3::Hash>,
    /// Local (size, mtime) at the last write-back.
    synced: (u64, i64),
    /// An `O_TMPFILE` file central has not named yet: where the node keeps
    /// the copy meanwhile (its tmp directory, outside the mirror).
    unnamed: Option<std::path::PathBuf>,
    /// A process mapped it shared: the mapping may outlive every
    /// descriptor, and writes through it must still reach central.
    mapped: bool,
}

/// The job's files open for writing, by the private copy's (dev, ino).
#[derive(Debug, Default)]
pub(crate) struct Writes {
    copies: HashMap<(u64, u64), Copy>,
    by_path: HashMap<Vec<u8>, (u64, u64)>,
}

/// The local facts a `stat` by path overlays on central's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local {
    pub size: u64,
    pub blocks: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

fn key_of(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Waits for the answer to the `Write` of chunk `i` (hash `h`) and, once
/// central has it, records it as sent.
fn settle_write(
    (i, h, pending): (usize, blake3::Hash, PendingAnswer<'_>),
    sent: &mut Vec<blake3::Hash>,
) -> Result<(), Errno> {
    match pending() {
        Ok(Response::Ok) => {
            if sent.len() <= i {
                sent.resize(i + 1, blake3::Hash::from_bytes([0; 32]));
            }
            sent[i] = h;
            Ok(())
        }
        Ok(Response::Errno(e)) => Err(Errno::from_raw(e)),
        _ => Err(Errno::EIO),
    }
}

/// Whether `/proc/PID/maps` text `maps` has a shared mapping of inode
/// `ino` (the device is left out: the file system's device number there
/// and in `stat` can differ; a match on another file system only keeps a
/// copy a little longer).
fn maps_share(maps: &str, ino: u64) -> bool {
    shared_mappings(maps).any(|(_, i)| i == ino)
}

/// The inode mapped shared at address `addr`, per `/proc/PID/maps` text.
fn shared_inode_at(maps: &str, addr: u64) -> Option<u64> {
    shared_mappings(maps)
        .find(|(range, _)| range.contains(&addr))
        .map(|(_, ino)| ino)
}

/// The shared file mappings of `/proc/PID/maps` text: address range and
/// inode.
fn shared_mappings(maps: &str) -> impl Iterator<Item = (std::ops::Range<u64>, u64)> + '_ {
    maps.lines().filter_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let range = u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?;
        let perms = f.next()?;
        let ino = f.nth(2)?.parse::<u64>().ok()?;
        (perms.as_bytes().get(3) == Some(&b's') && ino != 0).then_some((range, ino))
    })
}

fn chunk_hashes(file: &File, len: u64) -> std::io::Result<Vec<blake3::Hash>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], off)?;
        out.push(blake3::hash(&buf[..n]));
        off += n as u64;
    }
    Ok(out)
}

impl Writes {
    /// Local size and times of central `c` while the job writes it.
    pub(crate) fn local_stat(&self, c: &[u8]) -> Option<Local> {
        let copy = self.copies.get(self.by_path.get(c)?)?;
        let m = copy.file.metadata().ok()?;
        Some(Local {
            size: m.len(),
            blocks: m.blocks(),
            mtime_ns: mtime_ns(&m),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        })
    }

    /// Central `from` is now `to` (a file or a directory above files).
    pub(crate) fn renamed(&mut self, from: &[u8], to: &[u8]) {
        let moved: Vec<Vec<u8>> = self
            .by_path
            .keys()
            .filter(|k| paths::is_under(k, from))
            .cloned()
            .collect();
        for old in moved {
            if let Some(key) = self.by_path.remove(&old) {
                let mut new = to.to_vec();
                new.extend_from_slice(&old[from.len()..]);
                if let Some(c) = self.copies.get_mut(&key) {
                    c.central = new.clone();
                }
                self.by_path.insert(new, key);
            }
        }
    }

    /// Whether the job has an unnamed (`O_TMPFILE`) file open.
    pub(crate) fn has_unnamed(&self) -> bool {
        self.copies.values().any(|c| c.unnamed.is_some())
    }

    /// The central path the node gave an unnamed (`O_TMPFILE`) file whose
    /// copy is the local file `key`.
    pub(crate) fn unnamed_central(&self, key: (u64, u64)) -> Option<Vec<u8>> {
        let copy = self.copies.get(&key)?;
        copy.unnamed.as_ref().map(|_| copy.central.clone())
    }

    /// Central `c` no longer names the file the job writes (unlinked, or
    /// replaced by a rename): a new open of `c` is another file.
    pub(crate) fn unlinked(&mut self, c: &[u8]) {
        self.by_path.remove(c);
    }

    /// Central `c` was truncated to `len` by path: the local copy follows,
    /// and so does what the node believes central holds.
    pub(crate) fn truncated(&mut self, c: &[u8], len: u64) {
        let Some(copy) = self.by_path.get(c).and_then(|k| self.copies.get_mut(k)) else {
            return;
        };
        if copy.file.set_len(len).is_err() {
            return;
        }
        copy.sent_len = len;
        copy.sent.truncate((len / CHUNK as u64) as usize); // a partial last chunk is resent
        copy.synced = (u64::MAX, 0);
    }
}

impl FsLayer {
    /// An open that may write central `c`.
    pub(crate) fn open_write(
        &mut self,
        stop: &mut SyscallStop<'_>,
        c: &[u8],
        kind: OpenKind,
        flags: i32,
        mode: u32,
    ) -> Action {
        let mode = mode & 0o7777 & !self.umask_of(stop.pid());
        let reply = self.ask(self.open_request(c, flags, mode));
        self.meta.invalidate(c, false);
        let (canonical, stat, handle) = match reply {
            Ok(Response::Opened {
                canonical,
                stat,
                handle,
                ..
            }) => (canonical, stat, handle),
            Ok(_) => return Action::errno(Errno::EIO),
            Err(e) => return Action::errno(e),
        };
        let canon = match self.classify(&canonical) {
            Where::Central(x) => x,
            Where::Native(p) => {
                if let Some(h) = handle {
                    let _ = self.ask(Request::Close { handle: h });
                }
                return self.rewrite_open(stop, kind, &p, flags, mode);
            }
            Where::NativeRelative => return Action::errno(Errno::EIO),
        };
        self.meta.invalidate(&canon, false);
        self.opened.insert(canon.clone(), stat);
        let Some(handle) = handle else {
            // Not a regular file (a FIFO, a device on central): no data.
            return Action::errno(if file_type(stat.mode) == libc::S_IFDIR {
                Errno::EISDIR
            } else {
                Errno::ENXIO
            });
        };
        let node = self.mirror.node_path(&canon);
        let mut native_flags = flags & !(libc::O_CREAT | libc::O_EXCL);
        if let Some(key) = self.writes.by_path.get(&canon).copied() {
            // Another descriptor of a file the job already writes: the same
            // copy (O_TRUNC truncates it natively).
            let _ = self.ask(Request::Close { handle });
            if let Some(copy) = self.writes.copies.get_mut(&key) {
                if flags & libc::O_TRUNC != 0 {
                    copy.synced = (u64::MAX, 0);
                }
            }
        } else {
            native_flags &= !libc::O_TRUNC;
            if let Err(e) = self.new_copy(&canon, &stat, handle, flags & libc::O_TRUNC != 0) {
                let _ = self.ask(Request::Close { handle });
                return Action::errno(e);
            }
        }
        self.native_write_open(stop, &node, native_flags)
    }

    fn new_copy(
        &mut self,
        canon: &[u8],
        stat: &FileStat,
        handle: Handle,
        trunc: bool,
    ) -> Result<(), Errno> {
        let ioe = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let (tmp, file) = self.mirror.new_private().map_err(ioe)?;
        let mut sent = Vec::new();
        let mut sent_len = 0;
        if !trunc && stat.size > 0 {
            let obj = fetch::object(&*self.client, &self.cache, canon, &stat.stamp())?;
            let mut src = File::open(&obj).map_err(ioe)?;
            let mut dst = &file;
            std::io::copy(&mut (&mut src).take(stat.size), &mut dst).map_err(ioe)?;
            sent = chunk_hashes(&file, stat.size).map_err(ioe)?;
            sent_len = stat.size;
        }
        self.mirror
            .place_file(canon, &tmp, Content::Private)
            .map_err(ioe)?;
        let m = file.metadata().map_err(ioe)?;
        let key = key_of(&m);
        self.writes.by_path.insert(canon.to_vec(), key);
        self.writes.copies.insert(
            key,
            Copy {
                central: canon.to_vec(),
                handle,
                file,
                sent_len,
                sent,
                synced: (m.len(), mtime_ns(&m)),
                unnamed: None,
                mapped: false,
            },
        );
        Ok(())
    }

    /// An `O_TMPFILE` open in central directory `c`: the home makes the
    /// unnamed file (a write handle); the node makes an empty private
    /// copy, lets the program open it (at the file's `#INODE` name in the
    /// mirror, moved back to the node's tmp directory right after, so no
    /// listing shows it) and knows it by inode until `linkat` names it.
    pub(crate) fn open_tmpfile(
        &mut self,
        stop: &mut SyscallStop<'_>,
        c: &[u8],
        flags: i32,
        mode: u32,
    ) -> Action {
        let mode = mode & 0o7777 & !self.umask_of(stop.pid());
        let (canonical, stat, handle) = match self.ask(self.open_request(c, flags, mode)) {
            Ok(Response::Opened {
                canonical,
                stat,
                handle: Some(h),
                ..
            }) => (canonical, stat, h),
            Ok(_) => return Action::errno(Errno::EIO),
            Err(e) => return Action::errno(e),
        };
        let name = canonical.strip_suffix(b" (deleted)").unwrap_or(&canonical);
        let r = match self.classify(name) {
            Where::Central(x) => self.new_unnamed(&x, &stat, handle),
            _ => Err(Errno::EIO),
        };
        let (central, tmp) = match r {
            Ok(x) => x,
            Err(e) => {
                let _ = self.ask(Request::Close { handle });
                return Action::errno(e);
            }
        };
        let node = self.mirror.node_path(&central);
        // O_TMPFILE includes O_DIRECTORY: the copy is opened as a file.
        let native = flags & !(libc::O_TMPFILE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let action = self.native_write_open(stop, &node, native);
        if let Err(e) = self.mirror.take_back(&central, &tmp) {
            log::warn!("mirror: hiding an O_TMPFILE copy: {e}");
        }
        action
    }

    /// The copy of a new unnamed file, placed in the mirror at `central`
    /// for the program's open; returns the tmp path to move it back to.
    fn new_unnamed(
        &mut self,
        central: &[u8],
        stat: &FileStat,
        handle: Handle,
    ) -> Result<(Vec<u8>, std::path::PathBuf), Errno> {
        let ioe = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let (tmp, file) = self.mirror.new_private().map_err(ioe)?;
        self.mirror
            .place_file(central, &tmp, Content::Private)
            .map_err(ioe)?;
        let m = file.metadata().map_err(ioe)?;
        let key = key_of(&m);
        self.writes.by_path.insert(central.to_vec(), key);
        self.opened.insert(central.to_vec(), *stat);
        self.writes.copies.insert(
            key,
            Copy {
                central: central.to_vec(),
                handle,
                file,
                sent_len: 0,
                sent: Vec::new(),
                synced: (m.len(), mtime_ns(&m)),
                unnamed: Some(tmp.clone()),
                mapped: false,
            },
        );
        Ok((central.to_vec(), tmp))
    }

    /// `linkat` of the open file descriptor `fd` of `stop`'s process (by
    /// `AT_EMPTY_PATH` or `/proc/self/fd/N`) to `to`: an unnamed file gets
    /// its name on central (its data written back first) and its copy
    /// moves into the mirror there; a named central file is linked by its
    /// path (for `AT_EMPTY_PATH` without the `CAP_DAC_READ_SEARCH` check the
    /// kernel makes, which only the unnamed file's link gets, on central).
    pub(crate) fn link_fd(
        &mut self,
        stop: &mut SyscallStop<'_>,
        fd: i32,
        to: Option<Vec<u8>>,
        empty_path: bool,
    ) -> Action {
        let Ok(m) = std::fs::metadata(format!("/proc/{}/fd/{fd}", stop.tid())) else {
            return Action::errno(Errno::EBADF);
        };
        let key = key_of(&m);
        let (from, to) = match (self.fd_central(stop.tid(), fd), to) {
            (Some(a), Some(b)) => (a, b),
            (None, None) => return Action::Continue,
            _ => return Action::errno(Errno::EXDEV),
        };
        let Some(tmp) = self.writes.copies.get(&key).and_then(|c| c.unnamed.clone()) else {
            let r = self.ask(Request::Link {
                from: Blob(from.clone()),
                to: Blob(to.clone()),
                follow: false,
            });
            if r.is_ok() {
                self.meta.invalidate(&from, false);
                self.changed(&to, false);
            }
            return super::calls::done(r.map(drop));
        };
        if let Err(e) = self.write_back(key) {
            return Action::errno(e);
        }
        let handle = self.writes.copies[&key].handle;
        let r = self.ask(Request::LinkHandle {
            handle,
            to: Blob(to.clone()),
            empty_path,
        });
        if r.is_ok() {
            self.changed(&to, false);
            self.writes.by_path.remove(&from);
            self.opened.remove(&from);
            if let Err(e) = self.mirror.place_file(&to, &tmp, Content::Private) {
                log::warn!("mirror: naming an O_TMPFILE copy: {e}");
            } else {
                self.writes.by_path.insert(to.clone(), key);
            }
            if let Some(copy) = self.writes.copies.get_mut(&key) {
                copy.central = to;
                copy.unnamed = None;
            }
        }
        super::calls::done(r.map(drop))
    }

    /// Opens the private copy in the tracee and moves the descriptor to
    /// the write range (keeping `O_CLOEXEC`).
    fn native_write_open(&mut self, stop: &mut SyscallStop<'_>, node: &[u8], flags: i32) -> Action {
        // A low descriptor (stdio slot, or no room up there: RLIMIT_NOFILE)
        // is kept; its data is written back when no process has it open.
        match open_in_range(stop, node, flags, self.cfg.write_fd_min, i64::MAX, "write") {
            Err(action) => action,
            Ok(Placed::High(fd) | Placed::Low(fd)) => Action::Return(fd),
        }
    }

    /// `close`, `fsync`, `fdatasync` of a descriptor in the write range.
    pub(crate) fn write_fd_call(&mut self, stop: &mut SyscallStop<'_>, nr: Sysno) -> Action {
        let fd = stop.arg(0) as i32;
        let Ok(m) = std::fs::metadata(format!("/proc/{}/fd/{fd}", stop.tid())) else {
            return Action::Continue;
        };
        let key = key_of(&m);
        if !self.writes.copies.contains_key(&key) {
            return Action::Continue;
        }
        let mut r = self.write_back(key);
        if nr != Sysno::close {
            if r.is_ok() {
                let handle = self.writes.copies[&key].handle;
                r = self.ask(Request::Sync { handle }).map(drop);
            }
            return super::calls::done(r);
        }
        // Close it now, then see whether it was the job's last reference.
        let _ = stop.inject(Sysno::close, &[fd as u64]);
        if !self.referenced(key) {
            let r2 = self.close_copy(key);
            if r.is_ok() {
                r = r2;
            }
        }
        super::calls::done(r)
    }

    /// `mmap` of a descriptor in the write range: a shared mapping of a
    /// copy keeps it (and its handle on central) until no process maps
    /// it (see [`FsLayer::referenced`]). Runs natively.
    pub(crate) fn note_mapping(&mut self, stop: &SyscallStop<'_>) {
        let (flags, fd) = (stop.arg(3) as i32, stop.arg(4) as i32);
        if flags & libc::MAP_SHARED == 0 || fd < 0 {
            return;
        }
        let Ok(m) = std::fs::metadata(format!("/proc/{}/fd/{fd}", stop.tid())) else {
            return;
        };
        if let Some(copy) = self.writes.copies.get_mut(&key_of(&m)) {
            copy.mapped = true;
        }
    }

    /// `msync` of a range in a shared mapping of a copy: writes the copy
    /// back first (and, with `MS_SYNC`, has central sync it), then lets the
    /// call run natively (the kernel checks its arguments).
    pub(crate) fn msync_call(&mut self, stop: &SyscallStop<'_>) -> Action {
        let (addr, flags) = (stop.arg(0), stop.arg(2) as i32);
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{}/maps", stop.pid())) else {
            return Action::Continue;
        };
        let Some(ino) = shared_inode_at(&maps, addr) else {
            return Action::Continue;
        };
        let Some(key) = self
            .writes
            .copies
            .iter()
            .find(|(k, c)| k.1 == ino && c.mapped)
            .map(|(k, _)| *k)
        else {
            return Action::Continue;
        };
        let mut r = self.write_back(key);
        if r.is_ok() && flags & libc::MS_SYNC != 0 {
            let handle = self.writes.copies[&key].handle;
            r = self.ask(Request::Sync { handle }).map(drop);
        }
        match r {
            Ok(()) => Action::Continue,
            Err(e) => Action::errno(e),
        }
    }

    /// Whether a live process of the job has the copy `key` open, or
    /// (for a copy that was mapped shared) maps it shared.
    fn referenced(&self, key: (u64, u64)) -> bool {
        for pid in &self.procs {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for e in dir.flatten() {
                if std::fs::metadata(e.path()).is_ok_and(|m| key_of(&m) == key) {
                    return true;
                }
            }
        }
        let mapped = self.writes.copies.get(&key).is_some_and(|c| c.mapped);
        mapped
            && self.procs.iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .is_ok_and(|maps| maps_share(&maps, key.1))
            })
    }

    /// Sends what changed in copy `key` since its last write-back.
    fn write_back(&mut self, key: (u64, u64)) -> Result<(), Errno> {
        let Some(copy) = self.writes.copies.get_mut(&key) else {
            return Ok(());
        };
        let ioe = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let m = copy.file.metadata().map_err(ioe)?;
        let now = (m.len(), mtime_ns(&m));
        if now == copy.synced {
            return Ok(());
        }
        let len = m.len();
        let mut off = 0u64;
        let mut i = 0usize;
        let handle = copy.handle;
        // Up to WRITE_WINDOW `Write`s in flight; a chunk counts as sent
        // once central answered it (a failed write-back resends the rest).
        let mut inflight: VecDeque<(usize, blake3::Hash, PendingAnswer<'_>)> = VecDeque::new();
        let mut failed = None;
        while off < len && failed.is_none() {
            let n = (len - off).min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            if let Err(e) = copy.file.read_exact_at(&mut buf, off) {
                failed.get_or_insert(ioe(e));
                break;
            }
            let h = blake3::hash(&buf);
            if copy.sent.get(i) != Some(&h) {
                let req = Request::Write {
                    handle,
                    offset: off,
                    data: Blob(buf),
                };
                inflight.push_back((i, h, self.client.start(req)));
                if inflight.len() >= WRITE_WINDOW {
                    if let Some(w) = inflight.pop_front() {
                        if let Err(e) = settle_write(w, &mut copy.sent) {
                            failed.get_or_insert(e);
                        }
                    }
                }
            }
            off += n as u64;
            i += 1;
        }
        while let Some(w) = inflight.pop_front() {
            if let Err(e) = settle_write(w, &mut copy.sent) {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if len < copy.sent_len {
            match self.client.call(Request::SetLen { handle, len }) {
                Ok(Response::Ok) => {}
                Ok(Response::Errno(e)) => return Err(Errno::from_raw(e)),
                _ => return Err(Errno::EIO),
            }
        }
        copy.sent.truncate(i);
        copy.sent_len = len;
        copy.synced = now;
        Ok(())
    }

    /// Writes back copy `key` and closes it on the home; the mirror file
    /// stops being private.
    fn close_copy(&mut self, key: (u64, u64)) -> Result<(), Errno> {
        let r = self.write_back(key);
        let Some(copy) = self.writes.copies.remove(&key) else {
            return r;
        };
        if self.writes.by_path.get(&copy.central) == Some(&key) {
            self.writes.by_path.remove(&copy.central);
        }
        if let Some(tmp) = &copy.unnamed {
            // Never named: it vanishes, as on central when the handle closes.
            let _ = std::fs::remove_file(tmp);
        }
        self.mirror.release_private(&copy.central);
        self.meta.invalidate(&copy.central, false);
        self.opened.remove(&copy.central);
        let r2 = self
            .ask(Request::Close {
                handle: copy.handle,
            })
            .map(drop);
        r.and(r2)
    }

    /// Writes back central `c` if the job writes it (before a change that
    /// a later write-back would undo, such as `utimensat`).
    pub(crate) fn write_back_path(&mut self, c: &[u8]) -> Result<(), Errno> {
        match self.writes.by_path.get(c).copied() {
            Some(key) => self.write_back(key),
            None => Ok(()),
        }
    }

    /// Writes back and closes every copy no live process has open; the
    /// errors, one line each.
    pub(crate) fn write_back_unreferenced(&mut self) -> Vec<String> {
        let keys: Vec<(u64, u64)> = self.writes.copies.keys().copied().collect();
        let mut errors = Vec::new();
        for key in keys {
            if self.referenced(key) {
                continue;
            }
            let path = self.writes.copies[&key].central.clone();
            if let Err(e) = self.close_copy(key) {
                let line = format!("{}: {e}", String::from_utf8_lossy(&path));
                log::warn!("write-back of {line}");
                errors.push(line);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::{maps_share, shared_inode_at};

    #[test]
    fn a_shared_mapping_of_the_inode_is_found_and_nothing_else() {
        let maps = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234 /usr/bin/x
7f00aa000000-7f00aa002000 rw-p 00000000 fd:01 777 /state/jobs/1/root/a
7f00ab000000-7f00ab002000 rw-s 00000000 00:2d 777 /state/jobs/1/root/a
7f00ac000000-7f00ac001000 r--s 00001000 fd:01 888 /state/jobs/1/root/b
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert!(maps_share(maps, 777), "rw-s of 777");
        assert!(
            maps_share(maps, 888),
            "a read-only shared mapping may be made writable"
        );
        assert!(!maps_share(maps, 1234), "private");
        assert!(!maps_share(maps, 0), "anonymous");
        assert!(!maps_share("", 777));
        assert!(!maps_share("garbage\n7f-7f rw-s\n", 777));
        assert_eq!(shared_inode_at(maps, 0x7f00_ab00_1fff), Some(777));
        assert_eq!(
            shared_inode_at(maps, 0x7f00_ab00_2000),
            None,
            "end excluded"
        );
        assert_eq!(shared_inode_at(maps, 0x7f00_aa00_0000), None, "private");
        assert_eq!(shared_inode_at(maps, 0x7f00_ac00_0000), Some(888));
    }
}
