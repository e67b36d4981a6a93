//! File operations a job's node forwards to its home, which performs them
//! on central with the caller's own permissions.
//!
//! Paths are always absolute central paths: the node resolves the job's
//! relative paths, its cwd and its directory descriptors before asking
//! (see `docs/files.md`), so the home never guesses the job's state.
//! Errors are the `errno` central's kernel gave ([`Response::Errno`]), so
//! the program sees exactly what it would have seen on central.

use serde::{Deserialize, Serialize};

use super::job::{ExecImage, FileStamp};
use super::Blob;

/// A file the home holds open for writing on the node's behalf.
pub type Handle = u64;

/// Who holds advisory locks, as the node names it: one open file
/// description of the job (`flock`, OFD locks) or one job process and file
/// (`fcntl` record locks). The home holds one open file description on
/// central per owner and file, and the owner's locks on it.
pub type LockOwner = u64;

/// An advisory lock operation ([`Request::Lock`]); the home never waits:
/// a conflict answers `EAGAIN` and the node waits (see `docs/files.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// `flock` with `LOCK_SH`, `LOCK_EX` or `LOCK_UN` (`LOCK_NB` implied).
    Flock(i32),
    /// Set (`F_RDLCK`, `F_WRLCK`) or clear (`F_UNLCK`) a byte-range lock.
    Set(RangeLock),
    /// Test for a lock that would conflict with this one (`F_GETLK`).
    Get(RangeLock),
}

/// A byte range lock, `struct flock` with the start made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeLock {
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub kind: i16,
    /// First byte (from the start of the file, never negative).
    pub start: i64,
    /// Bytes (0: to the end of the file and beyond; never negative).
    pub len: i64,
    /// The holder's process id on central when `F_GETLK` found a lock of a
    /// process there; -1 for an open file description's lock (a job's).
    pub pid: i32,
}

/// File requests, node to home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// `stat` (follow) or `lstat`.
    Stat {
        /// Absolute central path.
        path: Blob,
        /// Follow a final symlink.
        follow: bool,
    },
    /// `faccessat2(AT_FDCWD, path, mode, flags)`.
    Access {
        /// Absolute central path.
        path: Blob,
        /// `R_OK | W_OK | X_OK` or `F_OK`.
        mode: u32,
        /// `AT_EACCESS`, `AT_SYMLINK_NOFOLLOW`.
        flags: u32,
    },
    /// `readlink`.
    Readlink {
        /// Absolute central path.
        path: Blob,
    },
    /// Open a path as the program asked (`O_*` flags; `mode` already has
    /// the job's umask applied). A read-only open of a regular file
    /// returns its stamp so the node serves reads from its cache; an open
    /// that may write returns a [`Handle`] for write-back.
    Open {
        /// Absolute central path.
        path: Blob,
        /// `O_*` flags as the program passed them.
        flags: i32,
        /// Creation mode, umask applied.
        mode: u32,
    },
    /// `openat2` with `RESOLVE_*` flags: [`Request::Open`] of `path`
    /// resolved from directory `dir` as the kernel resolves it under
    /// `resolve` (`RESOLVE_BENEATH`, `RESOLVE_IN_ROOT`,
    /// `RESOLVE_NO_SYMLINKS`, ...); answered as `Open` is.
    OpenAt2 {
        /// Absolute central path of the directory the resolution starts
        /// from (the program's `dirfd`, or its cwd).
        dir: Blob,
        /// The path as the program passed it (relative or absolute).
        path: Blob,
        /// `O_*` flags.
        flags: i32,
        /// Creation mode, umask applied.
        mode: u32,
        /// `RESOLVE_*` flags.
        resolve: u64,
    },
    /// Bytes of a regular file for the node cache: `len` bytes at `offset`
    /// of the file at `path`, refused with `ESTALE` when the file no
    /// longer has `stamp`.
    Read {
        /// Absolute central path (canonical, as [`Response::Opened`] gave it).
        path: Blob,
        /// The stamp the node expects.
        stamp: FileStamp,
        /// Start.
        offset: u64,
        /// Most bytes to return.
        len: u32,
    },
    /// A directory's entries, each with its metadata (`lstat`), so listing
    /// and walking a tree costs one round trip per directory.
    ReadDir {
        /// Absolute central path.
        path: Blob,
    },
    /// `mkdir` (mode with umask applied).
    Mkdir {
        /// Absolute central path.
        path: Blob,
        /// Mode.
        mode: u32,
    },
    /// `mknod` (mode with umask applied, type bits included): FIFOs,
    /// sockets and regular files for anyone, devices as central's kernel
    /// allows the caller.
    Mknod {
        /// Absolute central path.
        path: Blob,
        /// Type and permission bits.
        mode: u32,
        /// Device number, for device files.
        dev: u64,
    },
    /// `unlink`.
    Unlink {
        /// Absolute central path.
        path: Blob,
    },
    /// `rmdir`.
    Rmdir {
        /// Absolute central path.
        path: Blob,
    },
    /// `renameat2`.
    Rename {
        /// From.
        from: Blob,
        /// To.
        to: Blob,
        /// `RENAME_*` flags.
        flags: u32,
    },
    /// `linkat`.
    Link {
        /// Existing file.
        from: Blob,
        /// New name.
        to: Blob,
        /// Follow a symlink `from` (`AT_SYMLINK_FOLLOW`).
        follow: bool,
    },
    /// Gives the file open under `handle` (an `O_TMPFILE` file) the name
    /// `to`, as the program asked: `linkat` of `/proc/self/fd/N` with
    /// `AT_SYMLINK_FOLLOW`, or of the descriptor with `AT_EMPTY_PATH`
    /// (which central's kernel allows only with `CAP_DAC_READ_SEARCH`).
    LinkHandle {
        /// From [`Response::Opened`].
        handle: Handle,
        /// Absolute central path of the new name.
        to: Blob,
        /// `AT_EMPTY_PATH` rather than `/proc/self/fd/N`.
        empty_path: bool,
    },
    /// `symlink`.
    Symlink {
        /// The link's content.
        target: Blob,
        /// Absolute central path of the new link.
        path: Blob,
    },
    /// `chmod` / `fchmodat`.
    Chmod {
        /// Absolute central path.
        path: Blob,
        /// Mode.
        mode: u32,
    },
    /// `chown` family (`u32::MAX` leaves an id unchanged).
    Chown {
        /// Absolute central path.
        path: Blob,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Follow a final symlink.
        follow: bool,
    },
    /// `truncate`.
    Truncate {
        /// Absolute central path.
        path: Blob,
        /// New length.
        len: u64,
    },
    /// `utimensat` (times as `(sec, nsec)` with the kernel's `UTIME_NOW` /
    /// `UTIME_OMIT` nanosecond markers passed through).
    Utimens {
        /// Absolute central path.
        path: Blob,
        /// Access time.
        atime: (i64, i64),
        /// Modification time.
        mtime: (i64, i64),
        /// Follow a final symlink.
        follow: bool,
    },
    /// `statfs`.
    Statfs {
        /// Absolute central path.
        path: Blob,
    },
    /// Write-back: bytes written by the job to an open file.
    Write {
        /// From [`Response::Opened`].
        handle: Handle,
        /// Where.
        offset: u64,
        /// The bytes.
        data: Blob,
    },
    /// Write-back: the file's length after the job's writes (`ftruncate`,
    /// or a file that shrank).
    SetLen {
        /// From [`Response::Opened`].
        handle: Handle,
        /// Length.
        len: u64,
    },
    /// `fsync` / `fdatasync` of a written file.
    Sync {
        /// From [`Response::Opened`].
        handle: Handle,
    },
    /// The job closed its last descriptor of a written file; errors of
    /// deferred writes surface here, as `close` reports them on NFS.
    Close {
        /// From [`Response::Opened`].
        handle: Handle,
    },
    /// `getxattr` / `lgetxattr`: the whole value (at most 64 KiB, the
    /// kernel's limit); the node applies the caller's buffer size.
    GetXattr {
        /// Absolute central path.
        path: Blob,
        /// Attribute name (`user.x`, `security.y`, ...).
        name: Blob,
        /// Follow a final symlink.
        follow: bool,
    },
    /// `listxattr` / `llistxattr`: the NUL-separated names.
    ListXattr {
        /// Absolute central path.
        path: Blob,
        /// Follow a final symlink.
        follow: bool,
    },
    /// `setxattr` / `lsetxattr`.
    SetXattr {
        /// Absolute central path.
        path: Blob,
        /// Attribute name.
        name: Blob,
        /// The value.
        value: Blob,
        /// `XATTR_CREATE` / `XATTR_REPLACE`.
        flags: i32,
        /// Follow a final symlink.
        follow: bool,
    },
    /// `removexattr` / `lremovexattr`.
    RemoveXattr {
        /// Absolute central path.
        path: Blob,
        /// Attribute name.
        name: Blob,
        /// Follow a final symlink.
        follow: bool,
    },
    /// An advisory lock operation on central file `path` for `owner`.
    Lock {
        /// Who the lock belongs to.
        owner: LockOwner,
        /// Absolute central path of the locked file.
        path: Blob,
        /// What to do.
        op: LockOp,
    },
    /// `owner` is gone (its descriptor closed, its process ended): the home
    /// closes its descriptors for it, releasing every lock it held.
    Unlock {
        /// The owner.
        owner: LockOwner,
    },
    /// What it takes to exec `path` with `argv` and `envp`: `#!` and
    /// `PT_INTERP` resolved, libraries found, as the kernel and loader on
    /// central would (the node then fetches what its cache lacks).
    Exec {
        /// Absolute central path.
        path: Blob,
        /// argv as the program passed it.
        argv: Vec<Blob>,
        /// The environment as the program passed it.
        envp: Vec<Blob>,
    },
    /// A read-only [`Request::Open`] (no `O_PATH`) made while the job walks
    /// a tree: a directory is answered [`Response::OpenedDir`], with its
    /// listing and, within the home's bounds, the listings of directories
    /// the job is likely to open next (its subdirectories, those of `also`,
    /// then the next level), so walking a tree costs a round trip per many
    /// directories rather than one per directory; anything else is answered
    /// as `Open` is. A home that predates it answers
    /// [`super::ErrorKind::Unsupported`] and the node asks `Open` again.
    OpenDir {
        /// Absolute central path.
        path: Blob,
        /// `O_*` flags as the program passed them (read-only).
        flags: i32,
        /// More directories (absolute canonical central paths) to list
        /// after `path`'s subdirectories: the node's guess of what comes
        /// next, e.g. the siblings of `path` it has not listed yet.
        also: Vec<Blob>,
    },
}

/// File metadata, as `struct stat` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileStat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number, for device files.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Preferred I/O size.
    pub blksize: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// Last access, nanoseconds since the epoch.
    pub atime_ns: i64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Last status change, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl FileStat {
    /// The cache identity of a regular file with this metadata.
    pub fn stamp(&self) -> FileStamp {
        FileStamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            dev: self.dev,
        }
    }
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name (no `/`; `.` and `..` are not listed).
    pub name: Blob,
    /// `lstat` of the entry; None when it vanished while listing.
    pub stat: Option<FileStat>,
    /// The symlink's target, for symlinks.
    pub link: Option<Blob>,
    /// Central's `llistxattr` found no extended attribute the caller can
    /// see (so the node answers `getxattr` of it `ENODATA` while the
    /// listing is valid); false when it has some or could not say.
    pub no_xattrs: bool,
}

/// `struct statfs`, the fields programs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatFs {
    /// File system type magic.
    pub kind: i64,
    /// Block size.
    pub bsize: i64,
    /// Blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks free to unprivileged users.
    pub bavail: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Longest name.
    pub namelen: i64,
    /// Fragment size.
    pub frsize: i64,
    /// Mount flags (`ST_*`).
    pub flags: i64,
}

/// File replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Ok,
    /// Metadata.
    Stat(FileStat),
    /// A symlink's content.
    Link(Blob),
    /// Opened.
    Opened {
        /// The path with every symlink resolved (what `/proc/self/fd/N`
        /// shows), so `*at` calls on this descriptor resolve correctly.
        canonical: Blob,
        /// Metadata at open.
        stat: FileStat,
        /// For opens that may write: the home's handle for write-back.
        handle: Option<Handle>,
        /// A directory opened read-only: its listing, as
        /// [`Request::ReadDir`] would answer it (saving that round trip);
        /// None for anything else, or a listing too large for one reply.
        listing: Option<Vec<DirEntry>>,
    },
    /// File bytes (fewer than asked at end of file).
    Data(Blob),
    /// A directory's entries.
    Dir(Vec<DirEntry>),
    /// `statfs`.
    Statfs(StatFs),
    /// What to fetch and run for an exec.
    Exec(Box<ExecImage>),
    /// `F_GETLK`'s answer: the conflicting lock, or None (`F_UNLCK`).
    Lock(Option<RangeLock>),
    /// The call failed with this errno (central's).
    Errno(i32),
    /// [`Request::OpenDir`] of a directory: what [`Response::Opened`]
    /// would say, plus the listings the home read ahead.
    OpenedDir {
        /// The path with every symlink resolved.
        canonical: Blob,
        /// Metadata at open.
        stat: FileStat,
        /// The directory's listing.
        listing: Vec<DirEntry>,
        /// Listings of other directories, read as the caller just after
        /// `listing` (a directory the caller may not read is left out).
        ahead: Vec<Listing>,
    },
}

/// A directory listing read ahead ([`Response::OpenedDir`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Absolute canonical central path of the directory (its parent's
    /// canonical path and its name: never through a symlink).
    pub path: Blob,
    /// `fstat` of the directory as the home opened it.
    pub stat: FileStat,
    /// Its entries, as [`Request::ReadDir`] would answer them.
    pub entries: Vec<DirEntry>,
}

// A `Read` answer is the bulk of a fetch: [`data_header`] and [`data_span`]
// frame an encoded [`Response::Data`] reply (wrapped in
// [`super::Response::Fs`]) around its bytes, so they are neither copied
// into the message nor out of it (the home reads the file straight into
// the buffer after the header; the node uses the bytes where they lie).
// Both produce and accept exactly what [`super::Response::encode`] does.

/// The variant tags in front of a `Data` reply's length.
fn data_tags() -> Vec<u8> {
    // An empty `Data` encodes as the tags, then a 1-byte length 0.
    let mut t =
        super::encode(&super::Response::Fs(Response::Data(Blob::default()))).unwrap_or_default();
    t.pop();
    t
}

/// The bytes that precede `len` bytes of data in an encoded
/// [`Response::Data`] reply (see [`data_span`]).
pub fn data_header(len: usize) -> Vec<u8> {
    let mut h = data_tags();
    let n = bincode::encode_to_vec(len as u64, bincode::config::standard()).unwrap_or_default();
    h.extend_from_slice(&n);
    h
}

/// Where the bytes of the encoded [`Response::Data`] reply `msg` lie, or
/// `None` when `msg` is not one (decode it as any other reply then).
pub fn data_span(msg: &[u8]) -> Option<std::ops::Range<usize>> {
    let rest = msg.strip_prefix(data_tags().as_slice())?;
    let (len, used): (u64, usize) =
        bincode::decode_from_slice(rest, bincode::config::standard()).ok()?;
    let start = (msg.len() - rest.len()).checked_add(used)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end == msg.len()).then_some(start..end)
}
