//! The home's file service: performs each forwarded file request
//! ([`dscp_dicp::msg::fs`]) on central, as the caller, and answers with
//! central's result or errno (see `docs/files.md`, the contract).
//!
//! The home is the `diatom exec` process, so it already runs with the
//! caller's uid, gids and supplementary groups: the kernel applies the
//! caller's permissions to every call here, and nothing is checked by hand.
//! Every request names an absolute central path (the node resolves the
//! job's cwd and directory descriptors); a relative one is refused with
//! `EINVAL`. Calls are raw system calls on byte paths, so symlinks are
//! followed exactly where the program's own call would follow them.
//!
//! # Process-wide settings
//! [`FileService::new`] sets the home's umask to 0: the node applies the
//! job's umask to the modes it forwards (`Open`, `Mkdir`), and the job may
//! change its umask at any time, so the home must not apply a second one.
//! umask is per process (threads share it), and the home creates no other
//! files, so this is safe once the caller's umask has been read for the
//! launch ([`super::session::launch_from_plan`] does that before). It also
//! raises the soft `RLIMIT_NOFILE` towards the hard limit so that
//! [`MAX_HANDLES`] write handles can be open at once.
//!
//! # Opens
//! - An open that cannot write (`O_RDONLY` without `O_CREAT`/`O_TRUNC`,
//!   any `O_PATH` probe, directories) answers the canonical path and the
//!   `fstat` and closes the descriptor: the node serves reads from its
//!   cache, fetching data with `Read`, which checks the stamp again.
//! - An open that may write a regular file keeps the descriptor in a
//!   handle table (at most [`MAX_HANDLES`], then `EMFILE`) for write-back
//!   (`Write`, `SetLen`, `Sync`, `Close`). `O_APPEND` is cleared on the
//!   home's descriptor after the open (the node sends absolute offsets of
//!   its local copy, where appends already happened; `pwrite` on an
//!   `O_APPEND` file would ignore the offset); it stays set only on an
//!   append-only inode, which refuses clearing it, where every write
//!   appends anyway. A may-write open of anything else (a FIFO, a device)
//!   answers its stat and no handle: such files have no data to write back.
//!   Because the home opens non-blocking, a FIFO opened for writing with
//!   no reader on central answers `ENXIO` where the program would block.
//! - The home always adds `O_CLOEXEC`, `O_NOCTTY` and `O_NONBLOCK` (the
//!   last so a FIFO or device cannot block the home; it changes nothing
//!   for regular files and directories), and drops `O_DIRECT` (write-back
//!   buffers are not aligned; durability comes from `Sync`) and `O_ASYNC`.
//! - `O_TMPFILE` makes an unnamed file in the central directory, kept as
//!   a write handle like any file opened for writing; `LinkHandle` gives
//!   it a name (`linkat` of `/proc/self/fd/N`, which needs no privilege),
//!   and closing the handle without one makes it vanish, as locally.
//!
//! # Listings
//! `ReadDir` answers every entry with its `lstat` (and a symlink's
//! target) in one reply. A listing larger than [`MAX_DIR_ENTRIES`]
//! entries or about [`MAX_DIR_BYTES`] encoded is refused with `EOVERFLOW`
//! rather than truncated: the protocol has no continuation, and a
//! silently shortened listing would make `find`, `rm -r` or a build see a
//! different tree than central has.
//!
//! # Reading ahead while the job walks a tree
//! `OpenDir` (the node sends it instead of `Open` when the job is walking
//! a tree) opens as `Open` does; for a directory it also lists, as the
//! caller, the directories the job is likely to open next: the
//! directory's subdirectories, then the `also` directories the node
//! names, then the next level of each, breadth first. Each is opened
//! without following a final symlink (so its path is canonical) and left
//! out when the caller may not read it, or when it would not fit. A reply
//! holds at most [`AHEAD_DIRS`] such listings and about [`AHEAD_BYTES`]
//! encoded, and the home stops reading ahead after [`AHEAD_TIME`] (a slow
//! central file system must not hold the job's open for long): reading
//! ahead saves round trips, it never delays an open by more than that.
//!
//! # Locks
//! `Lock` and `Unlock` take and drop advisory locks on the real central
//! files, one open file description per lock owner ([`locks`]); they never
//! wait (a conflict answers `EAGAIN` and the node retries).
//!
//! # Limits
//! `Read` returns at most [`MAX_READ`] bytes per request (fewer means end
//! of file only when the reply is shorter than both `len` and this cap).
//! `Read`s are served beside the rest by a few reader threads
//! ([`read_reply`]: they need no per-job state, and a fetch keeps several
//! in flight); every other request is served one at a time by the caller
//! (the home's serve loop), so a long `ReadDir`, `Sync` or `Exec` delays
//! the job's other traffic (output included) for its duration.

mod exec;
pub mod locks;
pub mod sys;
#[cfg(test)]
mod tests;
pub mod xattr;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

use dscp_dicp::msg::fs::{DirEntry, FileStat, Handle, Listing, Request, Response};
use dscp_dicp::msg::job::FileStamp;
use dscp_dicp::msg::Blob;

use super::closure::Resolver;
use sys::SysResult;

/// Most write handles open at once per job.
pub const MAX_HANDLES: usize = 4096;
/// Most bytes one `Read` returns.
pub const MAX_READ: u32 = 16 << 20;
/// Most entries one `ReadDir` returns (else `EOVERFLOW`).
pub const MAX_DIR_ENTRIES: usize = 200_000;
/// Most estimated encoded bytes of one `ReadDir` reply (else `EOVERFLOW`);
/// well under the protocol's 64 MiB message limit.
pub const MAX_DIR_BYTES: usize = 40 << 20;
/// Encoded size of an entry beyond its name and link, at most.
const DIR_ENTRY_OVERHEAD: usize = 128;
/// Most listings one `OpenDir` reply reads ahead.
pub const AHEAD_DIRS: usize = 256;
/// Most estimated encoded bytes of the listings one `OpenDir` reply reads
/// ahead (a few hundred datagrams: one reply, fragmented, in one window).
pub const AHEAD_BYTES: usize = 512 << 10;
/// How long one `OpenDir` reads ahead at most.
pub const AHEAD_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// The bounds of one read-ahead ([`read_ahead`]).
#[derive(Debug, Clone, Copy)]
struct AheadLimits {
    dirs: usize,
    bytes: usize,
    time: std::time::Duration,
}

impl AheadLimits {
    const REPLY: AheadLimits = AheadLimits {
        dirs: AHEAD_DIRS,
        bytes: AHEAD_BYTES,
        time: AHEAD_TIME,
    };
}

/// Performs a job's file requests on central as the caller; one per job.
/// Dropping it closes every write handle still open (the job ended).
#[derive(Debug)]
pub struct FileService {
    handles: HashMap<Handle, OwnedFd>,
    next: Handle,
    max_handles: usize,
    resolver: &'static Resolver,
    locks: locks::Locks,
}

impl FileService {
    /// A service for one job. Sets the process's umask to 0 and raises its
    /// descriptor limit (see the module docs): create it after the caller's
    /// umask was read for the launch.
    pub fn new() -> FileService {
        nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        raise_nofile_limit();
        FileService {
            handles: HashMap::new(),
            next: 1,
            max_handles: MAX_HANDLES,
            resolver: Resolver::system(),
            locks: locks::Locks::default(),
        }
    }

    /// Write handles currently open.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Descriptors held for the job's lock owners.
    pub fn lock_files(&self) -> usize {
        self.locks.len()
    }

    /// Performs one request and answers it; never panics.
    pub fn handle(&mut self, req: Request) -> Response {
        let res = match req {
            Request::Stat { path, follow } => stat(&path, follow).map(Response::Stat),
            Request::Access { path, mode, flags } => access(&path, mode, flags),
            Request::Readlink { path } => sys::abs_path(&path)
                .and_then(|p| sys::readlink_at(libc::AT_FDCWD, &p))
                .map(|l| Response::Link(Blob(l))),
            Request::Open { path, flags, mode } => self.open(&path, flags, mode),
            Request::OpenAt2 {
                dir,
                path,
                flags,
                mode,
                resolve,
            } => self.open_at2(&dir, &path, flags, mode, resolve),
            Request::Read {
                path,
                stamp,
                offset,
                len,
            } => read(&path, &stamp, offset, len).map(|d| Response::Data(Blob(d))),
            Request::ReadDir { path } => {
                read_dir(&path, MAX_DIR_ENTRIES, MAX_DIR_BYTES).map(Response::Dir)
            }
            Request::Mkdir { path, mode } => on_path(&path, |p| {
                // SAFETY: p is NUL-terminated.
                sys::check(|| unsafe { libc::mkdir(p.as_ptr(), mode) })
            }),
            Request::Mknod { path, mode, dev } => on_path(&path, |p| {
                // SAFETY: p is NUL-terminated.
                sys::check(|| unsafe { libc::mknod(p.as_ptr(), mode, dev) })
            }),
            Request::Unlink { path } => on_path(&path, |p| {
                // SAFETY: p is NUL-terminated.
                sys::check(|| unsafe { libc::unlink(p.as_ptr()) })
            }),
            Request::Rmdir { path } => on_path(&path, |p| {
                // SAFETY: p is NUL-terminated.
                sys::check(|| unsafe { libc::rmdir(p.as_ptr()) })
            }),
            Request::Rename { from, to, flags } => rename(&from, &to, flags),
            Request::Link { from, to, follow } => link(&from, &to, follow),
            Request::LinkHandle {
                handle,
                to,
                empty_path,
            } => self
                .fd(handle)
                .and_then(|fd| link_fd(fd, &to, empty_path))
                .map(|()| Response::Ok),
            Request::Symlink { target, path } => symlink(&target, &path),
            Request::Chmod { path, mode } => on_path(&path, |p| {
                // SAFETY: p is NUL-terminated.
                sys::check(|| unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode, 0) })
            }),
            Request::Chown {
                path,
                uid,
                gid,
                follow,
            } => on_path(&path, |p| {
                let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
                // SAFETY: p is NUL-terminated; u32::MAX is (uid_t)-1, "unchanged".
                sys::check(|| unsafe {
                    libc::fchownat(libc::AT_FDCWD, p.as_ptr(), uid, gid, flags)
                })
            }),
            Request::Truncate { path, len } => on_path(&path, |p| {
                let len = sys::off(len)?;
                // SAFETY: p is NUL-terminated.
                sys::check(|| unsafe { libc::truncate(p.as_ptr(), len) })
            }),
            Request::Utimens {
                path,
                atime,
                mtime,
                follow,
            } => utimens(&path, atime, mtime, follow),
            Request::Statfs { path } => sys::abs_path(&path)
                .and_then(|p| sys::statfs(&p))
                .map(Response::Statfs),
            Request::Write {
                handle,
                offset,
                data,
            } => self
                .fd(handle)
                .and_then(|fd| sys::pwrite_all(fd, offset, &data))
                .map(|()| Response::Ok),
            Request::SetLen { handle, len } => self.fd(handle).and_then(|fd| {
                let len = sys::off(len)?;
                // SAFETY: fd is open (owned by the table).
                sys::check(|| unsafe { libc::ftruncate(fd, len) }).map(|()| Response::Ok)
            }),
            Request::Sync { handle } => self.fd(handle).and_then(|fd| {
                // SAFETY: fd is open (owned by the table).
                sys::check(|| unsafe { libc::fsync(fd) }).map(|()| Response::Ok)
            }),
            Request::Close { handle } => self.close(handle).map(|()| Response::Ok),
            Request::GetXattr { path, name, follow } => {
                xattr::get(&path, &name, follow).map(|v| Response::Data(Blob(v)))
            }
            Request::ListXattr { path, follow } => {
                xattr::list(&path, follow).map(|v| Response::Data(Blob(v)))
            }
            Request::SetXattr {
                path,
                name,
                value,
                flags,
                follow,
            } => xattr::set(&path, &name, &value, flags, follow).map(|()| Response::Ok),
            Request::RemoveXattr { path, name, follow } => {
                xattr::remove(&path, &name, follow).map(|()| Response::Ok)
            }
            Request::Lock { owner, path, op } => self.locks.lock(owner, &path, op),
            Request::Unlock { owner } => {
                self.locks.release(owner);
                Ok(Response::Ok)
            }
            Request::Exec { path, argv, envp } => {
                return exec::exec(self.resolver, &path, &argv, &envp)
            }
            Request::OpenDir { path, flags, also } => {
                self.open_dir(&path, flags, &also, AheadLimits::REPLY)
            }
        };
        res.unwrap_or_else(Response::Errno)
    }

    fn fd(&self, handle: Handle) -> SysResult<libc::c_int> {
        self.handles
            .get(&handle)
            .map(AsRawFd::as_raw_fd)
            .ok_or(libc::EBADF)
    }

    fn close(&mut self, handle: Handle) -> SysResult<()> {
        let fd = self.handles.remove(&handle).ok_or(libc::EBADF)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // Not retried on EINTR: Linux has closed the descriptor anyway.
        // SAFETY: raw was owned by the table and is closed exactly once.
        if unsafe { libc::close(raw) } == 0 {
            Ok(())
        } else {
            Err(sys::errno())
        }
    }

    fn open(&mut self, path: &[u8], flags: i32, mode: u32) -> SysResult<Response> {
        let p = sys::abs_path(path)?;
        self.open_with(path, flags, |oflags| sys::open(&p, oflags, mode))
    }

    /// `OpenDir`: a read-only open; a directory's answer also carries
    /// the listings [`read_ahead`] finds within `limits`.
    fn open_dir(
        &mut self,
        path: &[u8],
        flags: i32,
        also: &[Blob],
        limits: AheadLimits,
    ) -> SysResult<Response> {
        // (O_TMPFILE includes O_DIRECTORY's bit.)
        if flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_CREAT | libc::O_TRUNC | libc::O_PATH) != 0
            || flags & libc::O_TMPFILE == libc::O_TMPFILE
        {
            return Err(libc::EINVAL);
        }
        match self.open(path, flags, 0)? {
            Response::Opened {
                canonical,
                stat,
                handle: None,
                listing: Some(listing),
            } => {
                let ahead = read_ahead(&canonical, &listing, also, limits);
                Ok(Response::OpenedDir {
                    canonical,
                    stat,
                    listing,
                    ahead,
                })
            }
            other => Ok(other),
        }
    }

    /// `openat2(dir, path, flags, mode, resolve)`: the kernel applies the
    /// `RESOLVE_*` flags from `dir`, exactly as for the program's call.
    fn open_at2(
        &mut self,
        dir: &[u8],
        path: &[u8],
        flags: i32,
        mode: u32,
        resolve: u64,
    ) -> SysResult<Response> {
        let d = sys::abs_path(dir)?;
        let p = sys::c_bytes(path)?;
        let dfd = sys::open(&d, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
        self.open_with(path, flags, |oflags| {
            sys::openat2(&dfd, &p, oflags, mode, resolve)
        })
    }

    /// An open (see the module docs) whose descriptor `opener` makes from
    /// the flags the home uses.
    fn open_with(
        &mut self,
        path: &[u8],
        flags: i32,
        opener: impl FnOnce(i32) -> SysResult<OwnedFd>,
    ) -> SysResult<Response> {
        let probe = flags & libc::O_PATH != 0;
        let may_write = !probe
            && (flags & libc::O_ACCMODE != libc::O_RDONLY
                || flags & (libc::O_CREAT | libc::O_TRUNC) != 0);
        // Refuse before the open creates or truncates anything.
        if may_write && self.handles.len() >= self.max_handles {
            return Err(libc::EMFILE);
        }
        let oflags = (flags & !(libc::O_DIRECT | libc::O_ASYNC))
            | libc::O_CLOEXEC
            | libc::O_NOCTTY
            | libc::O_NONBLOCK;
        let fd = opener(oflags)?;
        let stat = sys::fstat(&fd)?;
        let canonical = sys::fd_path(&fd).unwrap_or_else(|_| path.to_vec());
        let regular = stat.mode & libc::S_IFMT == libc::S_IFREG;
        let handle = if may_write && regular {
            keep_writing(&fd, oflags);
            let h = self.next;
            // Handles are never reused (a stale one is EBADF, not another file).
            self.next = h.checked_add(1).ok_or(libc::EMFILE)?;
            self.handles.insert(h, fd);
            Some(h)
        } else {
            None
        };
        // Whoever opens a directory to read it lists it next (`ls`,
        // `find`, a compiler's include search): send the listing now.
        let listing = (stat.mode & libc::S_IFMT == libc::S_IFDIR && !probe && !may_write)
            .then(|| read_dir(&canonical, MAX_DIR_ENTRIES, MAX_DIR_BYTES).ok())
            .flatten();
        Ok(Response::Opened {
            canonical: Blob(canonical),
            stat,
            handle,
            listing,
        })
    }
}

impl Default for FileService {
    fn default() -> FileService {
        FileService::new()
    }
}

/// Prepares a write handle's descriptor for absolute-offset write-back:
/// clears `O_APPEND` (kept on an append-only inode, which refuses) and
/// `O_NONBLOCK`.
fn keep_writing(fd: &OwnedFd, oflags: i32) {
    let cleared = oflags & !(libc::O_APPEND | libc::O_NONBLOCK);
    // SAFETY: fd is open.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, cleared) } != 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, oflags & !libc::O_NONBLOCK) };
    }
}

fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = (MAX_HANDLES + 1024) as u64;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
        }
    }
}

/// Runs a call returning nothing on an absolute path.
fn on_path(path: &[u8], f: impl FnOnce(&std::ffi::CStr) -> SysResult<()>) -> SysResult<Response> {
    let p = sys::abs_path(path)?;
    f(&p).map(|()| Response::Ok)
}

fn stat(path: &[u8], follow: bool) -> SysResult<FileStat> {
    let p = sys::abs_path(path)?;
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    sys::stat_at(libc::AT_FDCWD, &p, flags)
}

/// `faccessat2`, or glibc's `faccessat` (which emulates the flags) where
/// the kernel lacks it.
fn access(path: &[u8], mode: u32, flags: u32) -> SysResult<Response> {
    let p = sys::abs_path(path)?;
    let mode = libc::c_int::try_from(mode).map_err(|_| libc::EINVAL)?;
    let flags = libc::c_int::try_from(flags).map_err(|_| libc::EINVAL)?;
    // SAFETY: p is NUL-terminated; the syscall takes (int, char*, int, int).
    let r = sys::check(|| unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            libc::AT_FDCWD,
            p.as_ptr(),
            mode,
            flags,
        ) as libc::c_int
    });
    match r {
        Err(libc::ENOSYS) => sys::check(|| unsafe {
            // SAFETY: as above.
            libc::faccessat(libc::AT_FDCWD, p.as_ptr(), mode, flags)
        }),
        r => r,
    }
    .map(|()| Response::Ok)
}

fn read(path: &[u8], stamp: &FileStamp, offset: u64, len: u32) -> SysResult<Vec<u8>> {
    read_after(path, stamp, offset, len, |_| Vec::new())
}

/// Reads up to `len` bytes (at most [`MAX_READ`]) of `path` at `offset`
/// onto the end of `start(n)`, `n` the bytes it will read unless the file
/// shrinks meanwhile. The file must have `stamp` when opened and after the
/// read (else `ESTALE`: the node fetches it again), so a write on central
/// during the read cannot pass for the old content.
fn read_after(
    path: &[u8],
    stamp: &FileStamp,
    offset: u64,
    len: u32,
    start: impl FnOnce(usize) -> Vec<u8>,
) -> SysResult<Vec<u8>> {
    let p = sys::abs_path(path)?;
    let fd = sys::open(
        &p,
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        0,
    )?;
    let st = sys::fstat(&fd)?;
    if st.stamp() != *stamp {
        return Err(libc::ESTALE);
    }
    if st.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EINVAL);
    }
    sys::off(offset)?;
    let left = st.size.saturating_sub(offset);
    let want = usize::try_from(u64::from(len.min(MAX_READ)).min(left)).map_err(|_| libc::EINVAL)?;
    let mut buf = start(want);
    sys::pread_append(&fd, offset, want, &mut buf)?;
    if sys::fstat(&fd)?.stamp() != *stamp {
        return Err(libc::ESTALE);
    }
    Ok(buf)
}

/// The encoded answer to `Read` (what [`FileService::handle`] answers,
/// encoded as a [`dscp_dicp::msg::Response`]), the file's bytes read
/// straight into the message after its header
/// ([`dscp_dicp::msg::fs::data_header`]): no copy, no zeroing.
pub fn read_reply(
    path: &[u8],
    stamp: &FileStamp,
    offset: u64,
    len: u32,
) -> Result<Vec<u8>, dscp_dicp::CodecError> {
    let mut head = 0;
    let read = read_after(path, stamp, offset, len, |n| {
        let h = dscp_dicp::msg::fs::data_header(n);
        head = h.len();
        h
    });
    let reply = match read {
        Ok(msg) if dscp_dicp::msg::fs::data_span(&msg).is_some() => return Ok(msg),
        // Shorter than the header says (the file shrank under a stamp
        // that did not change, as on file systems without ctime).
        Ok(msg) => Response::Data(Blob(msg[head..].to_vec())),
        Err(e) => Response::Errno(e),
    };
    dscp_dicp::msg::Response::Fs(reply).encode()
}

/// The entries of a directory, or `EOVERFLOW` past `max_entries` entries
/// or `max_bytes` estimated bytes.
fn read_dir(path: &[u8], max_entries: usize, max_bytes: usize) -> SysResult<Vec<DirEntry>> {
    list(path, 0, max_entries, max_bytes).map(|(_, entries, _)| entries)
}

/// The subdirectories (not symlinks to one) of directory `dir` by its
/// listing.
fn subdirs<'a>(dir: &'a [u8], entries: &'a [DirEntry]) -> impl Iterator<Item = Vec<u8>> + 'a {
    entries
        .iter()
        .filter(|e| {
            e.stat
                .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFDIR)
        })
        .map(move |e| {
            let mut p = dir.to_vec();
            if !p.ends_with(b"/") {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            p
        })
}

/// The listings an `OpenDir` of `dir` (listed as `listing`) reads ahead:
/// `dir`'s subdirectories, then `also` (absolute paths only), then the
/// next level of each, breadth first, as the caller; a directory that
/// cannot be opened without following a symlink, or read, or that would
/// overflow the byte budget, is left out. Stops at `limits`.
fn read_ahead(
    dir: &[u8],
    listing: &[DirEntry],
    also: &[Blob],
    limits: AheadLimits,
) -> Vec<Listing> {
    let start = std::time::Instant::now();
    let mut queue: std::collections::VecDeque<Vec<u8>> = subdirs(dir, listing).collect();
    queue.extend(
        also.iter()
            .filter(|p| p.first() == Some(&b'/') && p[..] != *dir)
            .take(limits.dirs)
            .map(|p| p.0.clone()),
    );
    let mut seen: std::collections::HashSet<Vec<u8>> = queue.iter().cloned().collect();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(d) = queue.pop_front() {
        if out.len() >= limits.dirs || start.elapsed() >= limits.time {
            break;
        }
        let Some(room) = limits
            .bytes
            .checked_sub(bytes + d.len() + DIR_ENTRY_OVERHEAD)
        else {
            break;
        };
        let Ok((stat, entries, used)) = list(&d, libc::O_NOFOLLOW, MAX_DIR_ENTRIES, room) else {
            continue;
        };
        bytes += d.len() + DIR_ENTRY_OVERHEAD + used;
        // The queue never holds more than can still be listed.
        for sub in subdirs(&d, &entries) {
            if queue.len() + out.len() < limits.dirs && !seen.contains(&sub) {
                seen.insert(sub.clone());
                queue.push_back(sub);
            }
        }
        out.push(Listing {
            path: Blob(d),
            stat,
            entries,
        });
    }
    out
}

/// `fstat` and entries of directory `path` (opened with `O_RDONLY |
/// O_DIRECTORY` and `extra` flags) and their estimated encoded bytes, or
/// `EOVERFLOW` past `max_entries` entries or `max_bytes` bytes.
fn list(
    path: &[u8],
    extra: i32,
    max_entries: usize,
    max_bytes: usize,
) -> SysResult<(FileStat, Vec<DirEntry>, usize)> {
    let p = sys::abs_path(path)?;
    let fd = sys::open(
        &p,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK | extra,
        0,
    )?;
    let stat = sys::fstat(&fd)?;
    let mut dir = sys::Dir::from_fd(fd)?;
    let dfd = dir.fd();
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    while let Some(name) = dir.next_name()? {
        let raw = name.as_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        // An entry that vanished meanwhile, or one in a directory the
        // caller may read but not search, has no stat.
        let stat = sys::stat_at(dfd, &name, libc::AT_SYMLINK_NOFOLLOW).ok();
        let link = match stat {
            Some(s) if s.mode & libc::S_IFMT == libc::S_IFLNK => {
                sys::readlink_at(dfd, &name).ok().map(Blob)
            }
            _ => None,
        };
        bytes += raw.len() + link.as_ref().map_or(0, |l| l.len()) + DIR_ENTRY_OVERHEAD;
        if entries.len() >= max_entries || bytes > max_bytes {
            return Err(libc::EOVERFLOW);
        }
        let no_xattrs = stat.is_some() && xattr::none_at(&p, raw);
        entries.push(DirEntry {
            name: Blob(raw.to_vec()),
            stat,
            link,
            no_xattrs,
        });
    }
    Ok((stat, entries, bytes))
}

fn rename(from: &[u8], to: &[u8], flags: u32) -> SysResult<Response> {
    let (f, t) = (sys::abs_path(from)?, sys::abs_path(to)?);
    // SAFETY: both paths are NUL-terminated.
    let r = sys::check(|| unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        ) as libc::c_int
    });
    match r {
        // Kernels before 3.15: plain rename does what flags 0 asks.
        // SAFETY: as above.
        Err(libc::ENOSYS) if flags == 0 => {
            sys::check(|| unsafe { libc::rename(f.as_ptr(), t.as_ptr()) })
        }
        r => r,
    }
    .map(|()| Response::Ok)
}

fn link(from: &[u8], to: &[u8], follow: bool) -> SysResult<Response> {
    let (f, t) = (sys::abs_path(from)?, sys::abs_path(to)?);
    let flags = if follow { libc::AT_SYMLINK_FOLLOW } else { 0 };
    // SAFETY: both paths are NUL-terminated.
    sys::check(|| unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
    .map(|()| Response::Ok)
}

/// Names the open file `fd` (an `O_TMPFILE` file) `to`: `linkat` of
/// `/proc/self/fd/N` (no privilege needed), or of the descriptor itself
/// with `AT_EMPTY_PATH` (the kernel checks the caller's privilege).
fn link_fd(fd: libc::c_int, to: &[u8], empty_path: bool) -> SysResult<()> {
    let t = sys::abs_path(to)?;
    let (dirfd, from, flags) = if empty_path {
        (fd, sys::c_bytes(b"")?, libc::AT_EMPTY_PATH)
    } else {
        let proc = format!("/proc/self/fd/{fd}");
        (
            libc::AT_FDCWD,
            sys::c_bytes(proc.as_bytes())?,
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    // SAFETY: both paths are NUL-terminated.
    sys::check(|| unsafe { libc::linkat(dirfd, from.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) })
}

fn symlink(target: &[u8], path: &[u8]) -> SysResult<Response> {
    // The target is content, not a path resolved here: relative is fine.
    let t = sys::c_bytes(target)?;
    let p = sys::abs_path(path)?;
    // SAFETY: both are NUL-terminated.
    sys::check(|| unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) }).map(|()| Response::Ok)
}

fn utimens(path: &[u8], atime: (i64, i64), mtime: (i64, i64), follow: bool) -> SysResult<Response> {
    let p = sys::abs_path(path)?;
    // UTIME_NOW / UTIME_OMIT arrive in tv_nsec and pass through as is; an
    // out-of-range nanosecond count is the kernel's EINVAL.
    let ts = |(sec, nsec): (i64, i64)| libc::timespec {
        tv_sec: sec as _,
        tv_nsec: nsec as _,
    };
    let times = [ts(atime), ts(mtime)];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: p is NUL-terminated; times holds two timespecs.
    sys::check(|| unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), flags) })
        .map(|()| Response::Ok)
}
