//! A job's session between its home (on central) and its node, sealed with
//! the job's session key: the launch, the files the start needs, stdio,
//! terminal size, signals and the exit. Variants say which way they go.

use serde::{Deserialize, Serialize};

use super::control::JobEvent;
use super::fs::FileStat;
use super::Blob;

/// The identity of a central file that decides whether a node's cached
/// copy is still valid (close-to-open consistency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What it takes to start a program from central's files: the argv the
/// kernel builds after `#!` processing, the ELF, its loader and libraries,
/// and every file with the stamp the node cache checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecImage {
    /// argv as the kernel builds it after `#!` processing.
    pub argv: Vec<Blob>,
    /// The ELF finally executed (central path).
    pub program: Blob,
    /// Its loader; None when static.
    pub interpreter: Option<Blob>,
    /// Library names as requested, and the central path each resolved to.
    pub libraries: Vec<(Blob, Blob)>,
    /// Libraries to preload (`LD_PRELOAD`, `/etc/ld.so.preload`), central paths.
    pub preload: Vec<Blob>,
    /// Every file the start needs, with its stamp.
    pub files: Vec<(Blob, FileStamp)>,
}

/// Everything a node needs to start a job's first process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// The program's files.
    pub image: ExecImage,
    /// The environment, `KEY=VALUE`.
    pub envp: Vec<Blob>,
    /// The caller's cwd on central.
    pub cwd: Blob,
    /// The caller's umask.
    pub umask: u32,
    /// The program the user asked for, resolved (what `/proc/self/exe` shows).
    pub exe: Blob,
    /// Central's host name: what the job's `uname` reports as nodename
    /// (`hostname`, `gethostname`), while the kernel is the node's.
    pub hostname: Blob,
    /// The caller's supplementary groups.
    pub groups: Vec<u32>,
    /// `-t`: a pty of this size.
    pub tty: Option<WinSize>,
    /// The caller's resource limits on central (the node caps them).
    pub rlimits: Rlimits,
    /// Signals the caller ignores (as `nohup` leaves SIGHUP ignored): the
    /// program starts with these ignored and every other signal at its
    /// default, as a local exec would, whatever the node daemon ignores.
    pub ignored_signals: Vec<i32>,
    /// Paths the home looked up (`lstat`, as the caller) just before
    /// sending the launch, which the program is known to ask about first
    /// (the loader's `/etc/ld.so.preload`, the program's own symlinks): the
    /// node's metadata cache starts with these answers, so the job's first
    /// `access`/`stat`/`readlink` of them need no round trip. A node takes
    /// at most [`MAX_LOOKUPS`] and ignores paths that are not clean.
    pub lookups: Vec<(Blob, Lookup)>,
}

/// The most pre-answered lookups a node takes from one launch.
pub const MAX_LOOKUPS: usize = 32;

/// What the home's `lstat` of a path found (see [`Launch::lookups`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Lookup {
    /// It exists: its `lstat`, and its target when it is a symlink.
    Found {
        /// `lstat` of the path.
        stat: FileStat,
        /// The symlink's content.
        link: Option<Blob>,
    },
    /// `ENOENT`: neither it nor (so) anything it would name exists.
    Missing,
}

/// Resource limits as `getrlimit` gives them, `(soft, hard)`;
/// `u64::MAX` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimits {
    /// `RLIMIT_CORE`, bytes.
    pub core: (u64, u64),
    /// `RLIMIT_NOFILE`, descriptors.
    pub nofile: (u64, u64),
    /// `RLIMIT_STACK`, bytes.
    pub stack: (u64, u64),
}

impl Default for Rlimits {
    /// Linux's defaults for a login: no core files, 1024/4096 descriptors,
    /// 8 MiB of stack.
    fn default() -> Self {
        Rlimits {
            core: (0, u64::MAX),
            nofile: (1024, 4096),
            stack: (8 << 20, u64::MAX),
        }
    }
}

/// Session requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Home to node: start the program. Answered once the node has the
    /// files it needs (asking for missing ones with [`Request::Fetch`]
    /// meanwhile) and the first process runs, or failed to.
    Launch(Box<Launch>),
    /// Home to node: bytes for stdin, in order; empty means EOF.
    Stdin {
        /// Chunk number, from 0.
        seq: u64,
        /// The bytes.
        data: Blob,
    },
    /// Home to node: the caller's terminal changed size (`-t`).
    Resize(WinSize),
    /// Home to node: a signal for the job's process group.
    Signal(i32),
    /// Node to home: send these files' contents (paths and the stamps the
    /// node expects).
    Fetch(Vec<(Blob, FileStamp)>),
    /// Node to home: output, in order (`seq` counts chunks across both
    /// streams, so stdout and stderr interleave as they were read).
    Output {
        /// Chunk number, from 0.
        seq: u64,
        /// 1 for stdout, 2 for stderr.
        fd: u8,
        /// The bytes.
        data: Blob,
    },
    /// Node to home: the job ended (sent after the last output).
    Exit(JobEvent),
    /// Home to node, instead of [`Request::Launch`]: the home failed
    /// before it could launch (one line why); the job ends as failed.
    Abandon(String),
}

/// Session responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Ok,
    /// Node to home: the first process runs.
    Started,
    /// Node to home: it could not start, or the request was refused; one line.
    Failed {
        /// Why.
        reason: String,
    },
    /// Home to node: the files asked for, in order: contents, or one line
    /// when a file changed or cannot be read.
    Files(Vec<Result<Blob, String>>),
    /// Home to node: this output can no longer be written (the caller's
    /// stdout is closed); the node closes the job's pipe so it gets EPIPE.
    Closed,
}
