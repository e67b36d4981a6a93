//! The system calls the layer stops, one method each.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use dscp_dicp::msg::fs::{DirEntry, FileStat, Request, Response};
use dscp_dicp::msg::Blob;
use nix::errno::Errno;
use syscalls::Sysno;
use tracer::{Action, SyscallStop, TraceeMemory};

use super::meta::{self, file_type, Known};
use super::mirror::Content;
use super::stream::StreamStart;
use super::xattr::On;
use super::{fetch, paths, FsLayer, Where};

const AT_FDCWD: i32 = libc::AT_FDCWD;

/// Two central paths (from, to).
type PathPair = (Vec<u8>, Vec<u8>);
const NOFOLLOW: u64 = libc::AT_SYMLINK_NOFOLLOW as u64;
const EMPTY_PATH: u64 = libc::AT_EMPTY_PATH as u64;

/// How an open was spelled (how to rewrite it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenKind {
    /// `open(path, ...)` or `openat(dirfd, path, ...)`: path argument index.
    Path(usize),
    /// `openat2`: rewritten to `openat`.
    Openat2,
    /// `creat(path, mode)`: rewritten to `open`.
    Creat,
}

/// Open flags under which a listing read ahead answers a directory's
/// open, or `OpenDir` is asked: read-only, and nothing the home's open
/// could refuse where the read-ahead's did not (`O_NOATIME`, say).
/// `0o100000` is the kernel's `O_LARGEFILE` (libc's is 0 on x86_64).
const AHEAD_FLAGS: i32 = libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_CLOEXEC
    | libc::O_NONBLOCK
    | libc::O_NOCTTY
    | 0o100000;
/// Most sibling directories an `OpenDir` asks the home to list too.
const AHEAD_ALSO: usize = 128;

/// The home's answer to a read-only open ([`FsLayer::ask_open_read`]).
struct ReadOpen {
    canonical: Vec<u8>,
    stat: FileStat,
    handle: Option<u64>,
    listing: Option<Vec<DirEntry>>,
    /// When the answer was asked for (or the listing read ahead arrived):
    /// the listing's validity runs from here.
    at: std::time::Instant,
}

/// Where a stat-like call wants its answer.
#[derive(Debug, Clone, Copy)]
enum Out {
    Stat(u64),
    Statx(u64),
}

/// Resolves path argument `$arg` (relative to `$dirfd`) to a central
/// path, or finishes the call: natively (path rewritten to the tracer's
/// copy) or with the errno.
macro_rules! central {
    ($self:ident, $stop:ident, $dirfd:expr, $arg:expr) => {
        resolved!($self.central_arg($stop, $dirfd, $arg))
    };
}

/// A resolution's value (`Some` central path, `None` the node's own), or
/// finish the call with the errno.
macro_rules! resolved_or_native {
    ($e:expr) => {
        match $e {
            Ok(c) => c,
            Err(e) => return Action::errno(e),
        }
    };
}

/// The value of a resolution (`Ok(Some)`), or finish the call: natively
/// (`Ok(None)`) or with the errno.
macro_rules! resolved {
    ($e:expr) => {
        match $e {
            Ok(Some(c)) => c,
            Ok(None) => return Action::Continue,
            Err(e) => return Action::errno(e),
        }
    };
}

pub(crate) fn done(r: Result<(), Errno>) -> Action {
    match r {
        Ok(()) => Action::Return(0),
        Err(e) => Action::errno(e),
    }
}

/// The (atime, mtime) a `utime`-family call passes at `ptr` (four words,
/// converted by `conv`); both "now" for a null pointer.
fn read_times(
    stop: &SyscallStop<'_>,
    ptr: u64,
    conv: impl Fn([i64; 4]) -> [(i64, i64); 2],
) -> Result<[(i64, i64); 2], Errno> {
    if ptr == 0 {
        return Ok([(0, libc::UTIME_NOW), (0, libc::UTIME_NOW)]);
    }
    stop.memory()
        .read_value::<[i64; 4]>(ptr)
        .map(conv)
        .map_err(|_| Errno::EFAULT)
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl FsLayer {
    /// Decides one stopped call (see the module documentation).
    pub fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let Some(nr) = stop.sysno() else {
            return Action::Continue;
        };
        let t = std::time::Instant::now();
        self.prune_locks_now_and_then();
        let action = self.decide(stop, nr);
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stops
            .add(nr.name(), t.elapsed());
        action
    }

    fn decide(&mut self, stop: &mut SyscallStop<'_>, nr: Sysno) -> Action {
        let a = stop.args();
        let fd = |i: usize| a[i] as i32;
        match nr {
            Sysno::open => self.open(stop, AT_FDCWD, OpenKind::Path(0), a[1] as i32, a[2] as u32),
            Sysno::openat => self.open(stop, fd(0), OpenKind::Path(1), a[2] as i32, a[3] as u32),
            Sysno::creat => self.open(
                stop,
                AT_FDCWD,
                OpenKind::Creat,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                a[1] as u32,
            ),
            Sysno::openat2 => self.openat2(stop),
            Sysno::stat => self.stat_call(stop, AT_FDCWD, 0, 0, Out::Stat(a[1])),
            Sysno::lstat => self.stat_call(stop, AT_FDCWD, 0, NOFOLLOW, Out::Stat(a[1])),
            Sysno::newfstatat => self.stat_call(stop, fd(0), 1, a[3], Out::Stat(a[2])),
            Sysno::statx => self.stat_call(stop, fd(0), 1, a[2], Out::Statx(a[4])),
            Sysno::fstat => self.fstat_call(stop, fd(0), Out::Stat(a[1])),
            Sysno::access => self.access(stop, AT_FDCWD, 0, a[1] as u32, 0),
            Sysno::faccessat => self.access(stop, fd(0), 1, a[2] as u32, 0),
            Sysno::faccessat2 => self.access(stop, fd(0), 1, a[2] as u32, a[3] as u32),
            Sysno::readlink => self.readlink(stop, AT_FDCWD, 0),
            Sysno::readlinkat => self.readlink(stop, fd(0), 1),
            Sysno::getcwd => self.getcwd(stop),
            Sysno::chdir => self.chdir(stop),
            Sysno::mkdir => self.mkdir(stop, AT_FDCWD, 0, a[1] as u32),
            Sysno::mkdirat => self.mkdir(stop, fd(0), 1, a[2] as u32),
            Sysno::rmdir => self.remove(stop, AT_FDCWD, 0, true),
            Sysno::unlink => self.remove(stop, AT_FDCWD, 0, false),
            Sysno::unlinkat => self.remove(stop, fd(0), 1, a[2] & libc::AT_REMOVEDIR as u64 != 0),
            Sysno::rename => self.rename(stop, (AT_FDCWD, 0), (AT_FDCWD, 1), 0),
            Sysno::renameat => self.rename(stop, (fd(0), 1), (fd(2), 3), 0),
            Sysno::renameat2 => self.rename(stop, (fd(0), 1), (fd(2), 3), a[4] as u32),
            Sysno::link => self.link(stop, (AT_FDCWD, 0), (AT_FDCWD, 1), 0),
            Sysno::linkat => self.link(stop, (fd(0), 1), (fd(2), 3), a[4]),
            Sysno::symlink => self.symlink(stop, 0, AT_FDCWD, 1),
            Sysno::symlinkat => self.symlink(stop, 0, fd(1), 2),
            Sysno::chmod => self.chmod(stop, AT_FDCWD, 0, a[1] as u32, 0),
            Sysno::fchmodat => self.chmod(stop, fd(0), 1, a[2] as u32, 0),
            Sysno::fchmodat2 => self.chmod(stop, fd(0), 1, a[2] as u32, a[3]),
            Sysno::chown => self.chown(stop, AT_FDCWD, 0, (a[1], a[2]), 0),
            Sysno::lchown => self.chown(stop, AT_FDCWD, 0, (a[1], a[2]), NOFOLLOW),
            Sysno::fchownat => self.chown(stop, fd(0), 1, (a[2], a[3]), a[4]),
            Sysno::truncate => self.truncate(stop, a[1]),
            Sysno::utimensat => self.utimensat(stop),
            Sysno::utime => self.utime_old(stop, AT_FDCWD, 0, a[1], false),
            Sysno::utimes => self.utime_old(stop, AT_FDCWD, 0, a[1], true),
            Sysno::futimesat => self.utime_old(stop, fd(0), 1, a[2], true),
            Sysno::statfs => self.statfs(stop, a[1]),
            Sysno::fstatfs => self.fstatfs(stop, a[1]),
            Sysno::mknod => self.mknod(stop, AT_FDCWD, 0, a[1] as u32, a[2]),
            Sysno::mknodat => self.mknod(stop, fd(0), 1, a[2] as u32, a[3]),
            Sysno::chroot => self.refuse(stop, AT_FDCWD, 0, Errno::EPERM),
            Sysno::getxattr => self.getxattr(stop, On::Path),
            Sysno::lgetxattr => self.getxattr(stop, On::Link),
            Sysno::fgetxattr => self.getxattr(stop, On::Fd),
            Sysno::setxattr => self.setxattr(stop, On::Path),
            Sysno::lsetxattr => self.setxattr(stop, On::Link),
            Sysno::fsetxattr => self.setxattr(stop, On::Fd),
            Sysno::listxattr => self.listxattr(stop, On::Path),
            Sysno::llistxattr => self.listxattr(stop, On::Link),
            Sysno::flistxattr => self.listxattr(stop, On::Fd),
            Sysno::removexattr => self.removexattr(stop, On::Path),
            Sysno::lremovexattr => self.removexattr(stop, On::Link),
            Sysno::fremovexattr => self.removexattr(stop, On::Fd),
            Sysno::inotify_add_watch => self.refuse(stop, AT_FDCWD, 1, Errno::ENOSPC),
            Sysno::name_to_handle_at => self.refuse(stop, fd(0), 1, Errno::EOPNOTSUPP),
            Sysno::umask => {
                let old = self.umask_of(stop.pid());
                self.umask.insert(stop.pid(), a[0] as u32 & 0o777);
                Action::Return(i64::from(old))
            }
            Sysno::close | Sysno::fsync | Sysno::fdatasync => {
                if nr == Sysno::close {
                    self.locks_on_close(stop.pid(), fd(0));
                }
                self.write_fd_call(stop, nr)
            }
            Sysno::flock => self.flock_call(stop),
            Sysno::fcntl => match self.fcntl_lock(stop) {
                Some(a) => a,
                None => self.stream_call(stop, nr),
            },
            Sysno::read
            | Sysno::pread64
            | Sysno::readv
            | Sysno::preadv
            | Sysno::preadv2
            | Sysno::lseek
            | Sysno::sendfile
            | Sysno::copy_file_range
            | Sysno::splice
            | Sysno::dup
            | Sysno::dup2
            | Sysno::dup3 => self.stream_call(stop, nr),
            Sysno::mmap => {
                self.note_mapping(stop);
                self.stream_call(stop, nr)
            }
            Sysno::msync => self.msync_call(stop),
            Sysno::execve => self.exec_call(stop, AT_FDCWD, 0, 1, 2, 0),
            Sysno::execveat => self.exec_call(stop, fd(0), 1, 2, 3, a[4]),
            _ => Action::Continue,
        }
    }

    /// Reads path argument `arg` and resolves it against `dirfd`. Native
    /// paths are rewritten to the tracer's copy (`Ok(None)`: let it run).
    pub(crate) fn central_arg(
        &self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
    ) -> Result<Option<Vec<u8>>, Errno> {
        let path = stop.read_path_arg(arg).map_err(|e| e.errno())?;
        match self.resolve(stop.tid(), dirfd, &path)? {
            Where::Central(c) => Ok(Some(c)),
            Where::Native(p) => {
                // The kernel reads our copy, not memory another thread may change.
                let _ = stop.set_path_arg(arg, &p);
                Ok(None)
            }
            Where::NativeRelative => {
                let _ = stop.set_path_arg(arg, &path);
                Ok(None)
            }
        }
    }

    /// Like [`central_arg`](Self::central_arg), with `AT_EMPTY_PATH` and an
    /// empty path meaning the descriptor `dirfd` itself.
    fn central_arg_or_fd(
        &self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        flags: u64,
    ) -> Result<Option<Vec<u8>>, Errno> {
        if flags & EMPTY_PATH != 0 {
            let path = stop.read_path_arg(arg).map_err(|e| e.errno())?;
            if path.is_empty() {
                return Ok(self.fd_central(stop.tid(), dirfd));
            }
        }
        self.central_arg(stop, dirfd, arg)
    }

    fn refuse(&self, stop: &mut SyscallStop<'_>, dirfd: i32, arg: usize, e: Errno) -> Action {
        let _c = central!(self, stop, dirfd, arg);
        Action::errno(e)
    }

    // ---- opens -------------------------------------------------------

    fn open(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        kind: OpenKind,
        flags: i32,
        mode: u32,
    ) -> Action {
        let arg = match kind {
            OpenKind::Path(i) => i,
            OpenKind::Openat2 => 1,
            OpenKind::Creat => 0,
        };
        let c = central!(self, stop, dirfd, arg);
        self.open_central(stop, c, kind, flags, mode)
    }

    /// An open of central path `c` (resolved already).
    fn open_central(
        &mut self,
        stop: &mut SyscallStop<'_>,
        c: Vec<u8>,
        kind: OpenKind,
        flags: i32,
        mode: u32,
    ) -> Action {
        if flags & libc::O_TMPFILE == libc::O_TMPFILE {
            return self.open_tmpfile(stop, &c, flags, mode);
        }
        let may_write = flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_CREAT | libc::O_TRUNC) != 0;
        if may_write && flags & libc::O_PATH == 0 {
            return self.open_write(stop, &c, kind, flags, mode);
        }
        match self.open_read(&c, flags) {
            Ok((node, Some(canon))) => self.stream_open(stop, &canon, &node, flags),
            Ok((node, None)) => self.rewrite_open(stop, kind, &node, flags, mode),
            Err(Errno::ENOENT) => {
                // What a later stat of the path may answer (opens always ask).
                self.meta
                    .put_lookup(&c, flags & libc::O_NOFOLLOW == 0, None);
                Action::errno(Errno::ENOENT)
            }
            Err(e) => Action::errno(e),
        }
    }

    fn openat2(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let (how_addr, size) = (stop.arg(2), stop.arg(3));
        if size < 24 {
            return Action::errno(Errno::EINVAL);
        }
        let mut how = [0u64; 3];
        for (i, v) in how.iter_mut().enumerate() {
            match stop.memory().read_value::<u64>(how_addr + 8 * i as u64) {
                Ok(x) => *v = x,
                Err(e) => return Action::errno(e.errno()),
            }
        }
        let (flags, mode, resolve) = (how[0], how[1], how[2]);
        // What the kernel refuses before resolving anything.
        let creates = flags as i32 & (libc::O_CREAT | libc::O_TMPFILE) != 0;
        if flags >> 32 != 0 || (mode != 0 && !creates) || mode & !0o7777 != 0 {
            return Action::errno(Errno::EINVAL);
        }
        let (flags, mode) = (flags as i32, mode as u32);
        if resolve == 0 {
            return self.open(stop, stop.arg(0) as i32, OpenKind::Openat2, flags, mode);
        }
        match self.resolve_beneath(stop, resolve) {
            Ok(Some(c)) => {
                let a = self.open_central(stop, c, OpenKind::Openat2, flags, mode);
                self.resolving = None;
                a
            }
            Ok(None) => Action::Continue,
            Err(e) => Action::errno(e),
        }
    }

    /// The central path an `openat2` with `RESOLVE_*` flags names, with
    /// [`FsLayer::resolving`] set so the home applies the flags from the
    /// start directory itself (`Ok(None)`: the node's own, run natively on
    /// the tracer's copy of the path; the kernel applies them then).
    fn resolve_beneath(
        &mut self,
        stop: &mut SyscallStop<'_>,
        resolve: u64,
    ) -> Result<Option<Vec<u8>>, Errno> {
        const RESOLVE_IN_ROOT: u64 = 0x10;
        let path = stop.read_path_arg(1).map_err(|e| e.errno())?;
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let native = |stop: &mut SyscallStop<'_>, p: &[u8]| {
            stop.set_path_arg(1, p)
                .map(|()| None)
                .map_err(|_| Errno::ENOMEM)
        };
        let base = match self.base_of(stop.tid(), stop.arg(0) as i32)? {
            Where::Central(b) => b,
            _ if path[0] == b'/' && resolve & RESOLVE_IN_ROOT == 0 => b"/".to_vec(),
            _ => return native(stop, &path),
        };
        let c = if path[0] != b'/' || resolve & RESOLVE_IN_ROOT != 0 {
            // Within the start directory: central, whatever the name.
            paths::tidy(&paths::join(&base, &path))
        } else {
            match self.classify(&path) {
                Where::Central(c) => c,
                _ => return native(stop, &path),
            }
        };
        self.resolving = Some((base, path, resolve));
        Ok(Some(c))
    }

    /// The request that opens central `c`: an `openat2` the home resolves
    /// itself while [`FsLayer::resolving`] is set, else a plain `Open`.
    pub(crate) fn open_request(&self, c: &[u8], flags: i32, mode: u32) -> Request {
        match &self.resolving {
            Some((dir, path, resolve)) => Request::OpenAt2 {
                dir: Blob(dir.clone()),
                path: Blob(path.clone()),
                flags,
                mode,
                resolve: *resolve,
            },
            None => Request::Open {
                path: Blob(c.to_vec()),
                flags,
                mode,
            },
        }
    }

    /// Points the open at the node file `node` and lets the kernel run it.
    pub(crate) fn rewrite_open(
        &mut self,
        stop: &mut SyscallStop<'_>,
        kind: OpenKind,
        node: &[u8],
        flags: i32,
        mode: u32,
    ) -> Action {
        let r = match kind {
            OpenKind::Path(i) => stop.set_path_arg(i, node),
            OpenKind::Openat2 | OpenKind::Creat => {
                stop.set_nr(Sysno::openat);
                stop.set_arg(0, AT_FDCWD as u64);
                stop.set_arg(2, flags as u32 as u64);
                stop.set_arg(3, u64::from(mode));
                stop.set_path_arg(1, node)
            }
        };
        match r {
            Ok(()) => Action::Continue,
            Err(e) => {
                log::warn!("cannot rewrite an open: {e}");
                Action::errno(Errno::ENOMEM)
            }
        }
    }

    /// Opens central `c` for reading on central and makes its mirror entry;
    /// returns the node path the kernel should open, and the canonical
    /// central path when that file is still arriving.
    fn open_read(&mut self, c: &[u8], flags: i32) -> Result<(Vec<u8>, Option<Vec<u8>>), Errno> {
        for _ in 0..3 {
            let ReadOpen {
                canonical,
                stat,
                handle,
                listing,
                at,
            } = self.ask_open_read(c, flags)?;
            if let Some(h) = handle {
                let _ = self.ask(Request::Close { handle: h });
            }
            let canon = match self.classify(&canonical) {
                Where::Central(c) => c,
                Where::Native(p) => return Ok((p, None)),
                Where::NativeRelative => return Err(Errno::EIO),
            };
            let node = self.mirror.node_path(&canon);
            self.opened.insert(canon.clone(), stat);
            match file_type(stat.mode) {
                libc::S_IFDIR => {
                    self.meta.put_at(&canon, stat, None, at);
                    match listing {
                        Some(entries) => self.apply_listing(&canon, &entries, at)?,
                        None => self.list_dir(&canon)?,
                    }
                    return Ok((node, None));
                }
                libc::S_IFREG => {
                    self.meta.put(&canon, stat, None);
                    let live = self.live_stream(&canon);
                    match self.mirror.content(&canon) {
                        Some(Content::Private) => return Ok((node, None)),
                        Some(Content::Object(s)) if s == stat.stamp() => {
                            return Ok((node, live.then_some(canon)));
                        }
                        _ => {}
                    }
                    if flags & libc::O_PATH != 0 && stat.size > 0 {
                        // A handle on the name, no content needed.
                        self.mirror.placeholder(&canon).map_err(|e| io_errno(&e))?;
                        return Ok((node, None));
                    }
                    let id = fetch::identity_of(&stat.stamp());
                    let cached = self
                        .cache
                        .lookup(
                            std::path::Path::new(std::ffi::OsStr::from_bytes(&canon)),
                            &id,
                        )
                        .is_some();
                    self.note_cache(u64::from(cached), u64::from(!cached), 0);
                    if !cached && stat.size >= self.cfg.stream_min {
                        match self.start_stream(&canon, &stat.stamp()) {
                            Ok(StreamStart::Streaming) => return Ok((node, Some(canon))),
                            Ok(StreamStart::Arrived) => return Ok((node, None)),
                            Ok(StreamStart::Unsupported) => {}
                            Err(Errno::ESTALE) => continue, // changed meanwhile: open again
                            Err(e) => return Err(e),
                        }
                    }
                    match fetch::object(&*self.client, &self.cache, &canon, &stat.stamp()) {
                        Ok(obj) => {
                            self.mirror
                                .place_file(&canon, &obj, Content::Object(stat.stamp()))
                                .map_err(|e| {
                                    log::warn!("mirror: {e}");
                                    io_errno(&e)
                                })?;
                            return Ok((node, None));
                        }
                        Err(Errno::ESTALE) => continue, // changed meanwhile: open again
                        Err(e) => return Err(e),
                    }
                }
                _ => return Err(Errno::ENXIO),
            }
        }
        Err(Errno::ESTALE)
    }

    /// The home's answer to a read-only open of central `c`: a listing
    /// read ahead when one is valid (no round trip), else `OpenDir` while
    /// the job walks a tree through a directory the node knows, else
    /// `Open` (see `meta`'s module docs).
    fn ask_open_read(&mut self, c: &[u8], flags: i32) -> Result<ReadOpen, Errno> {
        let plain = self.resolving.is_none() && flags & !AHEAD_FLAGS == 0;
        if plain {
            if let Some(a) = self.meta.take_ahead(c) {
                self.note_ahead(0, 1);
                return Ok(ReadOpen {
                    canonical: c.to_vec(),
                    stat: a.stat,
                    handle: None,
                    listing: Some(a.entries),
                    at: a.at,
                });
            }
        }
        let dir = matches!(self.meta.known(c), Known::Entry(m) if file_type(m.stat.mode) == libc::S_IFDIR);
        let req = if plain && dir && self.meta.walking(c) {
            Request::OpenDir {
                path: Blob(c.to_vec()),
                flags,
                also: self
                    .meta
                    .siblings_to_list(c, AHEAD_ALSO)
                    .into_iter()
                    .map(Blob)
                    .collect(),
            }
        } else {
            self.open_request(c, flags, 0)
        };
        // Validity runs from the question: the home listed after it.
        let at = std::time::Instant::now();
        match self.ask(req)? {
            Response::Opened {
                canonical,
                stat,
                handle,
                listing,
            } => Ok(ReadOpen {
                canonical: canonical.0,
                stat,
                handle,
                listing,
                at,
            }),
            Response::OpenedDir {
                canonical,
                stat,
                listing,
                ahead,
            } => {
                let kept = self.meta.put_ahead(ahead, at);
                self.note_ahead(kept as u64, 0);
                Ok(ReadOpen {
                    canonical: canonical.0,
                    stat,
                    handle: None,
                    listing: Some(listing),
                    at,
                })
            }
            _ => Err(Errno::EIO),
        }
    }

    /// Lists central directory `c` into the mirror and the metadata cache.
    pub(crate) fn list_dir(&mut self, c: &[u8]) -> Result<(), Errno> {
        let at = std::time::Instant::now();
        let Response::Dir(entries) = self.ask(Request::ReadDir {
            path: Blob(c.to_vec()),
        })?
        else {
            return Err(Errno::EIO);
        };
        self.apply_listing(c, &entries, at)
    }

    /// Puts a listing of central directory `c` (from `ReadDir`, with its
    /// open, or read ahead), made after `at`, in the mirror and the
    /// metadata cache.
    fn apply_listing(
        &mut self,
        c: &[u8],
        entries: &[DirEntry],
        at: std::time::Instant,
    ) -> Result<(), Errno> {
        self.mirror.populate(c, entries).map_err(|e| {
            log::warn!("mirror of {}: {e}", String::from_utf8_lossy(c));
            io_errno(&e)
        })?;
        self.meta.put_listing_at(
            c,
            entries.iter().filter_map(|e| {
                let link = e.link.clone().map(|l| l.0);
                Some((&e.name[..], e.stat?, link, e.no_xattrs))
            }),
            at,
        );
        Ok(())
    }

    // ---- metadata ----------------------------------------------------

    fn stat_call(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        flags: u64,
        out: Out,
    ) -> Action {
        if flags & EMPTY_PATH != 0 {
            match stop.read_path_arg(arg) {
                Ok(p) if p.is_empty() => return self.fstat_call(stop, dirfd, out),
                Ok(_) => {}
                Err(e) => return Action::errno(e.errno()),
            }
        }
        let c = central!(self, stop, dirfd, arg);
        match self.stat_central(&c, flags & NOFOLLOW == 0) {
            Ok(st) => Self::write_out(stop, out, &st),
            Err(e) => Action::errno(e),
        }
    }

    fn fstat_call(&mut self, stop: &mut SyscallStop<'_>, fd: i32, out: Out) -> Action {
        let Some(c) = self.fd_central(stop.tid(), fd) else {
            return Action::Continue;
        };
        let st = match self.opened.get(&c) {
            Some(s) => Ok(*s),
            None => self.stat_central(&c, false),
        };
        match st {
            Ok(s) => Self::write_out(stop, out, &self.overlay(&c, s)),
            Err(_) => Action::Continue, // report the local file rather than fail
        }
    }

    /// Central's `stat` (or `lstat`) of `c`, from the metadata cache when fresh.
    pub(crate) fn stat_central(&mut self, c: &[u8], follow: bool) -> Result<FileStat, Errno> {
        if paths::is_clean(c) {
            match self.meta.known(c) {
                Known::Entry(m) if !follow || file_type(m.stat.mode) != libc::S_IFLNK => {
                    let s = m.stat;
                    return Ok(self.overlay(c, s));
                }
                Known::Absent => return Err(Errno::ENOENT),
                _ => {}
            }
            if follow {
                match self.meta.followed(c) {
                    Some(Ok(s)) => return Ok(self.overlay(c, s)),
                    Some(Err(())) => return Err(Errno::ENOENT),
                    None => {}
                }
            } else if self.meta.missing(c, false) {
                return Err(Errno::ENOENT);
            }
        }
        let s = match self.ask(Request::Stat {
            path: Blob(c.to_vec()),
            follow,
        }) {
            Ok(Response::Stat(s)) => s,
            Ok(_) => return Err(Errno::EIO),
            Err(Errno::ENOENT) => {
                self.meta.put_lookup(c, follow, None);
                return Err(Errno::ENOENT);
            }
            Err(e) => return Err(e),
        };
        if !follow && file_type(s.mode) != libc::S_IFLNK {
            self.meta.put(c, s, None);
        }
        self.meta.put_lookup(c, follow, Some(&s));
        Ok(self.overlay(c, s))
    }

    fn write_out(stop: &SyscallStop<'_>, out: Out, st: &FileStat) -> Action {
        let r = match out {
            Out::Stat(addr) => stop
                .memory()
                .write_all(addr, meta::bytes_of(&meta::kernel_stat(st))),
            Out::Statx(addr) => stop
                .memory()
                .write_all(addr, meta::bytes_of(&meta::kernel_statx(st))),
        };
        match r {
            Ok(()) => Action::Return(0),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }

    fn access(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        mode: u32,
        flags: u32,
    ) -> Action {
        let c = central!(self, stop, dirfd, arg);
        if mode == libc::F_OK as u32 && paths::is_clean(&c) {
            match self.meta.known(&c) {
                Known::Entry(m) if file_type(m.stat.mode) != libc::S_IFLNK => {
                    return Action::Return(0)
                }
                Known::Absent => return Action::errno(Errno::ENOENT),
                _ => {}
            }
        }
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW as u32 == 0;
        if paths::is_clean(&c) && self.meta.missing(&c, follow) {
            return Action::errno(Errno::ENOENT);
        }
        let r = self.ask(Request::Access {
            path: Blob(c.clone()),
            mode,
            flags,
        });
        if matches!(r, Err(Errno::ENOENT)) {
            self.meta.put_lookup(&c, follow, None);
        }
        done(r.map(drop))
    }

    fn readlink(&mut self, stop: &mut SyscallStop<'_>, dirfd: i32, arg: usize) -> Action {
        let (buf, size) = (stop.arg(arg + 1), stop.arg(arg + 2) as i64);
        if let Some(answer) = self.proc_readlink(stop, dirfd, arg) {
            return Self::answer_link(stop, buf, size, &answer);
        }
        let c = central!(self, stop, dirfd, arg);
        if paths::is_clean(&c) {
            match self.meta.known(&c) {
                Known::Entry(m) => match &m.link {
                    Some(l) => {
                        let l = l.clone();
                        return Self::answer_link(stop, buf, size, &l);
                    }
                    None if file_type(m.stat.mode) != libc::S_IFLNK => {
                        return Action::errno(Errno::EINVAL)
                    }
                    None => {}
                },
                Known::Absent => return Action::errno(Errno::ENOENT),
                Known::Unknown => {}
            }
        }
        match self.ask(Request::Readlink { path: Blob(c) }) {
            Ok(Response::Link(l)) => Self::answer_link(stop, buf, size, &l),
            Ok(_) => Action::errno(Errno::EIO),
            Err(e) => Action::errno(e),
        }
    }

    /// A readlink of `/proc/.../cwd`, `/proc/.../fd/N` (or anything in
    /// `/proc` whose target is in the mirror): the central path.
    fn proc_readlink(&self, stop: &SyscallStop<'_>, dirfd: i32, arg: usize) -> Option<Vec<u8>> {
        let path = stop.read_path_arg(arg).ok()?;
        let abs = match self.resolve(stop.tid(), dirfd, &path).ok()? {
            Where::Native(p) => paths::lexical(&p),
            _ => return None,
        };
        let rest = abs.strip_prefix(b"/proc/")?;
        let (who, tail) = match rest.iter().position(|b| *b == b'/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return None,
        };
        let base = match who {
            b"self" => format!("/proc/{}", stop.pid()),
            b"thread-self" => format!("/proc/{}/task/{}", stop.pid(), stop.tid()),
            w => self.job_proc(w),
        };
        let mut native = base.into_bytes();
        native.extend_from_slice(tail);
        let target = std::fs::read_link(std::ffi::OsStr::from_bytes(&native)).ok()?;
        let mut t = target.into_os_string().into_encoded_bytes();
        let deleted = t.ends_with(b" (deleted)");
        if deleted {
            t.truncate(t.len() - b" (deleted)".len());
        }
        let mut central = match self.mirror.central_of(&t) {
            Some(c) => c,
            None => {
                // An unnamed (O_TMPFILE) file: central's `#INODE (deleted)`.
                if !self.writes.has_unnamed() {
                    return None;
                }
                let m = std::fs::metadata(std::ffi::OsStr::from_bytes(&native)).ok()?;
                let mut c = self.writes.unnamed_central((m.dev(), m.ino()))?;
                c.extend_from_slice(b" (deleted)");
                return Some(c);
            }
        };
        if deleted {
            central.extend_from_slice(b" (deleted)");
        }
        Some(central)
    }

    fn answer_link(stop: &SyscallStop<'_>, buf: u64, size: i64, link: &[u8]) -> Action {
        if size <= 0 {
            return Action::errno(Errno::EINVAL);
        }
        let n = link.len().min(size as usize);
        match stop.memory().write_all(buf, &link[..n]) {
            Ok(()) => Action::Return(n as i64),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }

    fn statfs(&mut self, stop: &mut SyscallStop<'_>, buf: u64) -> Action {
        let c = central!(self, stop, AT_FDCWD, 0);
        self.answer_statfs(stop, c, buf)
    }

    /// `fstatfs` of a descriptor of a central file (or directory) answers
    /// central's file system; any other descriptor the node's.
    fn fstatfs(&mut self, stop: &mut SyscallStop<'_>, buf: u64) -> Action {
        match self.fd_central(stop.tid(), stop.arg(0) as i32) {
            Some(c) => self.answer_statfs(stop, c, buf),
            None => Action::Continue,
        }
    }

    fn answer_statfs(&mut self, stop: &mut SyscallStop<'_>, c: Vec<u8>, buf: u64) -> Action {
        match self.ask(Request::Statfs { path: Blob(c) }) {
            Ok(Response::Statfs(s)) => {
                match stop
                    .memory()
                    .write_all(buf, meta::bytes_of(&meta::kernel_statfs(&s)))
                {
                    Ok(()) => Action::Return(0),
                    Err(_) => Action::errno(Errno::EFAULT),
                }
            }
            Ok(_) => Action::errno(Errno::EIO),
            Err(e) => Action::errno(e),
        }
    }

    // ---- cwd ---------------------------------------------------------

    fn getcwd(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let (buf, size) = (stop.arg(0), stop.arg(1) as usize);
        let raw = match std::fs::read_link(format!("/proc/{}/cwd", stop.tid())) {
            Ok(t) => t.into_os_string().into_encoded_bytes(),
            Err(_) => return Action::Continue,
        };
        if raw.ends_with(b" (deleted)") {
            return Action::errno(Errno::ENOENT);
        }
        let Some(c) = self.mirror.central_of(&raw) else {
            return Action::Continue;
        };
        if c.len() + 1 > size {
            return Action::errno(Errno::ERANGE);
        }
        let mut v = c;
        v.push(0);
        match stop.memory().write_all(buf, &v) {
            Ok(()) => Action::Return(v.len() as i64),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }

    fn chdir(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let c = central!(self, stop, AT_FDCWD, 0);
        match self.enter(&c) {
            Ok(node) => match stop.set_path_arg(0, &node) {
                Ok(()) => Action::Continue,
                Err(_) => Action::errno(Errno::ENOMEM),
            },
            Err(e) => Action::errno(e),
        }
    }

    /// Checks that central `c` is a directory the caller may enter and
    /// makes its mirror directory; returns its node path.
    fn enter(&mut self, c: &[u8]) -> Result<Vec<u8>, Errno> {
        let Response::Opened {
            canonical, stat, ..
        } = self.ask(Request::Open {
            path: Blob(c.to_vec()),
            flags: libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            mode: 0,
        })?
        else {
            return Err(Errno::EIO);
        };
        if file_type(stat.mode) != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        let canon = match self.classify(&canonical) {
            Where::Central(c) => c,
            Where::Native(p) => return Ok(p),
            Where::NativeRelative => return Err(Errno::EIO),
        };
        self.ask(Request::Access {
            path: Blob(canon.clone()),
            mode: libc::X_OK as u32,
            flags: 0,
        })?;
        self.opened.insert(canon.clone(), stat);
        self.mirror.ensure_dir(&canon).map_err(|e| io_errno(&e))?;
        Ok(self.mirror.node_path(&canon))
    }

    // ---- changes -----------------------------------------------------

    /// Forgets what the node knew about `c` after central changed it.
    pub(crate) fn changed(&mut self, c: &[u8], tree: bool) {
        self.meta.invalidate(c, tree);
        if let Err(e) = self.mirror.forget(c) {
            log::debug!("mirror: forget {}: {e}", String::from_utf8_lossy(c));
        }
        if tree {
            self.opened.retain(|k, _| !paths::is_under(k, c));
        } else {
            self.opened.remove(c);
        }
    }

    fn mkdir(&mut self, stop: &mut SyscallStop<'_>, dirfd: i32, arg: usize, mode: u32) -> Action {
        let c = central!(self, stop, dirfd, arg);
        let mode = mode & 0o7777 & !self.umask_of(stop.pid());
        let r = self.ask(Request::Mkdir {
            path: Blob(c.clone()),
            mode,
        });
        self.meta.invalidate(&c, false);
        done(r.map(drop))
    }

    fn remove(&mut self, stop: &mut SyscallStop<'_>, dirfd: i32, arg: usize, dir: bool) -> Action {
        let c = central!(self, stop, dirfd, arg);
        let path = Blob(c.clone());
        let r = self.ask(if dir {
            Request::Rmdir { path }
        } else {
            Request::Unlink { path }
        });
        if r.is_ok() {
            // A copy still open keeps writing back to the unlinked file.
            self.writes.unlinked(&c);
            self.changed(&c, dir);
        }
        done(r.map(drop))
    }

    /// Both path arguments of a two-path call: both central, or both
    /// native (rewritten, `None`); one of each is `EXDEV`.
    fn two_paths(
        &self,
        stop: &mut SyscallStop<'_>,
        from: (i32, usize),
        to: (i32, usize),
    ) -> Result<Option<PathPair>, Errno> {
        let a = self.central_arg(stop, from.0, from.1)?;
        let b = self.central_arg(stop, to.0, to.1)?;
        match (a, b) {
            (Some(a), Some(b)) => Ok(Some((a, b))),
            (None, None) => Ok(None),
            _ => Err(Errno::EXDEV),
        }
    }

    fn rename(
        &mut self,
        stop: &mut SyscallStop<'_>,
        from: (i32, usize),
        to: (i32, usize),
        flags: u32,
    ) -> Action {
        let (a, b) = resolved!(self.two_paths(stop, from, to));
        let r = self.ask(Request::Rename {
            from: Blob(a.clone()),
            to: Blob(b.clone()),
            flags,
        });
        if r.is_ok() {
            let moving = self.mirror.content(&a) == Some(Content::Private);
            self.writes.unlinked(&b);
            self.writes.renamed(&a, &b);
            self.changed(&b, true);
            if moving {
                // The job's own unwritten data moves with the name.
                self.meta.invalidate(&a, false);
                if let Err(e) = self.mirror.rename_file(&a, &b) {
                    log::debug!("mirror: rename: {e}");
                    self.changed(&a, true);
                }
            } else {
                self.changed(&a, true);
            }
        }
        done(r.map(drop))
    }

    fn link(
        &mut self,
        stop: &mut SyscallStop<'_>,
        from: (i32, usize),
        to: (i32, usize),
        flags: u64,
    ) -> Action {
        match self.link_source_fd(stop, from, flags) {
            Ok(Some(fd)) => {
                let target = resolved_or_native!(self.central_arg(stop, to.0, to.1));
                return self.link_fd(stop, fd, target, flags & EMPTY_PATH != 0);
            }
            Ok(None) => {}
            Err(e) => return Action::errno(e),
        }
        let (a, b) = resolved!(self.two_paths(stop, from, to));
        let r = self.ask(Request::Link {
            from: Blob(a.clone()),
            to: Blob(b.clone()),
            follow: flags & libc::AT_SYMLINK_FOLLOW as u64 != 0,
        });
        if r.is_ok() {
            self.meta.invalidate(&a, false);
            self.changed(&b, false);
        }
        done(r.map(drop))
    }

    /// The open descriptor a `linkat` links: its `dirfd` with
    /// `AT_EMPTY_PATH` and an empty path, or `N` of `/proc/self/fd/N` (or
    /// `thread-self`) with `AT_SYMLINK_FOLLOW`.
    fn link_source_fd(
        &self,
        stop: &SyscallStop<'_>,
        from: (i32, usize),
        flags: u64,
    ) -> Result<Option<i32>, Errno> {
        let path = stop.read_path_arg(from.1).map_err(|e| e.errno())?;
        if flags & EMPTY_PATH != 0 && path.is_empty() {
            return Ok(Some(from.0));
        }
        if flags & libc::AT_SYMLINK_FOLLOW as u64 == 0 || path.first() != Some(&b'/') {
            return Ok(None);
        }
        let lex = paths::lexical(&path);
        let n = lex
            .strip_prefix(b"/proc/self/fd/")
            .or_else(|| lex.strip_prefix(b"/proc/thread-self/fd/"));
        Ok(n.and_then(|n| std::str::from_utf8(n).ok()?.parse().ok()))
    }

    fn symlink(
        &mut self,
        stop: &mut SyscallStop<'_>,
        target_arg: usize,
        dirfd: i32,
        arg: usize,
    ) -> Action {
        let target = match stop.read_path_arg(target_arg) {
            Ok(t) => t,
            Err(e) => return Action::errno(e.errno()),
        };
        let c = central!(self, stop, dirfd, arg);
        let r = self.ask(Request::Symlink {
            target: Blob(target),
            path: Blob(c.clone()),
        });
        if r.is_ok() {
            self.changed(&c, false);
        }
        done(r.map(drop))
    }

    fn chmod(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        mode: u32,
        flags: u64,
    ) -> Action {
        let c = resolved!(self.central_arg_or_fd(stop, dirfd, arg, flags));
        let r = self.ask(Request::Chmod {
            path: Blob(c.clone()),
            mode: mode & 0o7777,
        });
        self.meta.invalidate(&c, false);
        self.opened.remove(&c);
        done(r.map(drop))
    }

    fn chown(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        ids: (u64, u64),
        flags: u64,
    ) -> Action {
        let c = resolved!(self.central_arg_or_fd(stop, dirfd, arg, flags));
        let r = self.ask(Request::Chown {
            path: Blob(c.clone()),
            uid: ids.0 as u32,
            gid: ids.1 as u32,
            follow: flags & NOFOLLOW == 0,
        });
        self.meta.invalidate(&c, false);
        self.opened.remove(&c);
        done(r.map(drop))
    }

    fn truncate(&mut self, stop: &mut SyscallStop<'_>, len: u64) -> Action {
        let c = central!(self, stop, AT_FDCWD, 0);
        if (len as i64) < 0 {
            return Action::errno(Errno::EINVAL);
        }
        let r = self.ask(Request::Truncate {
            path: Blob(c.clone()),
            len,
        });
        if r.is_ok() {
            self.writes.truncated(&c, len);
            self.changed(&c, false);
        }
        done(r.map(drop))
    }

    fn set_times(&mut self, c: Vec<u8>, times: [(i64, i64); 2], follow: bool) -> Action {
        // Data written back later would move mtime again: write it back now.
        let _ = self.write_back_path(&c);
        let r = self.ask(Request::Utimens {
            path: Blob(c.clone()),
            atime: times[0],
            mtime: times[1],
            follow,
        });
        self.meta.invalidate(&c, false);
        self.opened.remove(&c);
        done(r.map(drop))
    }

    fn utimensat(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let (dirfd, path_ptr, times_ptr, flags) =
            (stop.arg(0) as i32, stop.arg(1), stop.arg(2), stop.arg(3));
        let c = if path_ptr == 0 {
            match self.fd_central(stop.tid(), dirfd) {
                Some(c) => c,
                None => return Action::Continue,
            }
        } else {
            resolved!(self.central_arg_or_fd(stop, dirfd, 1, flags))
        };
        match read_times(stop, times_ptr, |t| [(t[0], t[1]), (t[2], t[3])]) {
            Ok(times) => self.set_times(c, times, flags & NOFOLLOW == 0),
            Err(e) => Action::errno(e),
        }
    }

    /// `utime` (`struct utimbuf`) and `utimes`/`futimesat` (`timeval[2]`).
    fn utime_old(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        times_ptr: u64,
        timeval: bool,
    ) -> Action {
        let c = central!(self, stop, dirfd, arg);
        let r = if timeval {
            read_times(stop, times_ptr, |t| {
                [(t[0], t[1] * 1000), (t[2], t[3] * 1000)]
            })
        } else {
            read_times(stop, times_ptr, |t| [(t[0], 0), (t[1], 0)])
        };
        match r {
            Ok(times) => self.set_times(c, times, true),
            Err(e) => Action::errno(e),
        }
    }

    /// `mknod`/`mknodat` on central: FIFOs, sockets and regular files (a
    /// type of 0 is a regular file, as for the kernel); devices as
    /// central's kernel allows the caller (`EPERM` unless privileged).
    fn mknod(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        arg: usize,
        mode: u32,
        dev: u64,
    ) -> Action {
        let c = central!(self, stop, dirfd, arg);
        let perm = mode & 0o7777 & !self.umask_of(stop.pid());
        let r = self.ask(Request::Mknod {
            path: Blob(c.clone()),
            mode: (mode & libc::S_IFMT) | perm,
            dev: dev & 0xffff_ffff, // dev_t is 32 bits in the kernel's call
        });
        self.changed(&c, false);
        done(r.map(drop))
    }

    /// Central's stat of `c` with what the job wrote locally and has not
    /// written back yet (size, times).
    pub(crate) fn overlay(&self, c: &[u8], mut s: FileStat) -> FileStat {
        if let Some(local) = self.writes.local_stat(c) {
            s.size = local.size;
            s.blocks = local.blocks;
            s.mtime_ns = local.mtime_ns;
            s.ctime_ns = local.ctime_ns;
        }
        s
    }
}
