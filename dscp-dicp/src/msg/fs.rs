//! File operations a job's node asks its home for. The first few; more
//! variants get appended here as the tracer forwards more calls.

use serde::{Deserialize, Serialize};

use super::Blob;

/// A handle to a file opened on central, chosen by the home.
pub type Handle = u64;

/// File requests, node to home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// `stat`/`lstat` of a path.
    Stat {
        /// The path, as the program named it, resolved on central.
        path: Blob,
        /// Follow a final symlink (`stat`) or not (`lstat`).
        follow: bool,
    },
    /// `openat`-like: open a path.
    Open {
        /// The path.
        path: Blob,
        /// `O_*` flags.
        flags: i32,
        /// Mode for `O_CREAT`.
        mode: u32,
    },
    /// Read from an open file.
    Read {
        /// Which file.
        handle: Handle,
        /// Where.
        offset: u64,
        /// At most this many bytes.
        len: u32,
    },
    /// Write to an open file.
    Write {
        /// Which file.
        handle: Handle,
        /// Where.
        offset: u64,
        /// The bytes.
        data: Blob,
    },
    /// Close an open file.
    Close {
        /// Which file.
        handle: Handle,
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
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// Last access, nanoseconds since the epoch.
    pub atime_ns: i64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Last status change, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

/// File replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Metadata.
    Stat(FileStat),
    /// Opened, with the file's metadata at open.
    Opened {
        /// The handle for later calls.
        handle: Handle,
        /// Metadata at open time.
        stat: FileStat,
    },
    /// Bytes read (fewer than asked at end of file).
    Data(Blob),
    /// Bytes written.
    Written(u64),
    /// Closed.
    Closed,
    /// The call failed with this errno.
    Errno(i32),
}
