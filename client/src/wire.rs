//! The typed messages of a Diatom cluster, as the daemons and the job's home
//! exchange them through `dscp_dicp`'s reliable request/response layer.
//!
//! Three conversations, each a request enum and a reply enum:
//! - [`Dscp`]: central to a node (cluster key): start, signal, kill, status.
//! - [`Dicp`]: a node to central (cluster key): heartbeats (which register)
//!   and job events.
//! - [`ToNode`] / [`ToHome`]: a job's home and its node (the job's session
//!   key): launching, stdio, signals, files and the exit.
//!
//! Every byte string a program names (paths, argv, environment) is carried
//! as bytes, never as UTF-8 text: Linux paths are bytes.

use serde::{Deserialize, Serialize};

/// Bytes that name something on central (a path, an argument).
pub type Bytes = Vec<u8>;

/// The identity of a central file that decides whether a cached copy is
/// still valid (close-to-open consistency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Central to node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Dscp {
    /// Are you there? Answered with [`DscpReply::Pong`].
    Ping,
    /// Start a job: make a per-job endpoint with the session key and wait
    /// for the home's [`ToNode::Launch`].
    StartJob(StartJob),
    /// Send `signal` to the job's processes (its process group).
    Signal {
        /// Job id.
        job: u64,
        /// Signal number.
        signal: i32,
    },
}

/// What central tells a node about a new job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartJob {
    /// Job id (also the session key's id).
    pub job: u64,
    /// The job's session key.
    pub session_key: [u8; 32],
    /// The caller's uid on central.
    pub uid: u32,
    /// The caller's gid on central.
    pub gid: u32,
    /// Memory limit, bytes (already capped by the node's).
    pub memory: Option<u64>,
    /// Process/thread limit.
    pub pids: Option<u64>,
}

/// Node to central, answers to [`Dscp`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DscpReply {
    /// Answer to Ping.
    Pong,
    /// The job's endpoint listens on this UDP port of the node.
    Accepted {
        /// Port.
        port: u16,
    },
    /// The node will not run it (slots full, bad request); one line.
    Refused(String),
    /// Done (a signal was delivered).
    Done,
    /// No such job on this node.
    NoSuchJob,
}

/// Node to central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Dicp {
    /// Liveness and load; also registers a node central does not know.
    Heartbeat(NodeInfo),
    /// Something happened to a job.
    JobEvent {
        /// Job id.
        job: u64,
        /// What.
        event: JobEvent,
    },
}

/// A node's description and load, sent in every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// CPUs.
    pub cpus: u32,
    /// Slots.
    pub slots: u32,
    /// Jobs running now.
    pub running: u32,
    /// Ids of the jobs running now.
    pub jobs: Vec<u64>,
    /// One-minute load average.
    pub load: f64,
    /// `uname -sr` of the node.
    pub kernel: String,
    /// diatom-client version.
    pub version: String,
    /// Datagrams the node dropped, by reason.
    pub dropped: Vec<(String, u64)>,
    /// Bytes in the node's file cache.
    pub cache_bytes: u64,
}

/// How a job ended, or that it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The first process runs.
    Started,
    /// It exited with a code.
    Exited(i32),
    /// It died from a signal.
    Signaled(i32),
    /// The node killed it (limit, home lost, kill); one line.
    Killed(String),
    /// It could not start; one line.
    Failed(String),
}

/// Central's answer to [`Dicp`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DicpReply {
    /// Noted.
    Ok,
}

/// Home to node, on the job's session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToNode {
    /// Start the program. Answered once the node has the files it needs
    /// (it asks for missing ones with [`ToHome::Fetch`] meanwhile) and the
    /// first process runs, or failed to.
    Launch(Box<Launch>),
    /// Bytes for the program's stdin, in order (`seq` counts chunks).
    Stdin {
        /// Chunk number, from 0.
        seq: u64,
        /// The bytes; empty means EOF.
        data: Bytes,
    },
    /// The caller's terminal changed size (`-t`).
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// A signal for the job's process group.
    Signal(i32),
}

/// Everything the node needs to start a job's first process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// argv as the kernel builds it after `#!` processing.
    pub argv: Vec<Bytes>,
    /// The environment, `KEY=VALUE`.
    pub envp: Vec<Bytes>,
    /// The caller's cwd on central.
    pub cwd: Bytes,
    /// The caller's umask.
    pub umask: u32,
    /// The program the user asked for (what `/proc/self/exe` shows).
    pub exe: Bytes,
    /// The ELF finally executed (central path).
    pub program: Bytes,
    /// Its loader, None when static.
    pub interpreter: Option<Bytes>,
    /// Library names as requested, and the central path each resolved to.
    pub libraries: Vec<(Bytes, Bytes)>,
    /// Every file the start needs, with its stamp.
    pub files: Vec<(Bytes, FileStamp)>,
    /// The caller's supplementary groups.
    pub groups: Vec<u32>,
    /// `-t`: a pty of this size (rows, cols).
    pub tty: Option<(u16, u16)>,
}

/// Node to home, answers to [`ToNode`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeReply {
    /// Done.
    Ok,
    /// The first process runs.
    Started,
    /// It could not start; one line for the user.
    Failed(String),
}

/// Node to home, on the job's session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToHome {
    /// Send me these files' contents (paths and the stamps expected).
    Fetch(Vec<(Bytes, FileStamp)>),
    /// Output of the program, in order (`seq` counts chunks across both
    /// streams, so stdout and stderr interleave as they were read).
    Output {
        /// Chunk number, from 0.
        seq: u64,
        /// 1 for stdout, 2 for stderr.
        fd: u8,
        /// The bytes.
        data: Bytes,
    },
    /// The job ended; sent after the last Output.
    Exit(JobEvent),
}

/// Home to node, answers to [`ToHome`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HomeReply {
    /// Done.
    Ok,
    /// The files asked for, in order: contents, or an error line when the
    /// file changed or cannot be read.
    Files(Vec<Result<Bytes, String>>),
    /// The home can no longer write this output (its stdout is closed):
    /// the node closes the job's pipe so the program gets EPIPE.
    Closed,
}
