//! Control messages. DSCP (central to node): ping, status, start a job,
//! signal it, kill it. DICP control (node to central): register, heartbeat,
//! job events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Blob;

/// A job's id, unique per central; also the key id of its session key.
pub type JobId = u64;

/// DSCP requests, central to node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DscpRequest {
    /// Liveness probe; the node echoes the payload.
    Ping {
        /// Echoed back.
        payload: Blob,
    },
    /// The node's current status.
    Status,
    /// Start a job.
    StartJob(Box<JobSpec>),
    /// Send a signal to the job's process group.
    Signal {
        /// Which job.
        job: JobId,
        /// Signal number.
        signal: i32,
    },
    /// Kill the job and all its processes.
    Kill {
        /// Which job.
        job: JobId,
    },
}

/// DSCP replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DscpResponse {
    /// Answer to `Ping`.
    Pong {
        /// The ping's payload.
        payload: Blob,
    },
    /// Answer to `Status`.
    Status(NodeStatus),
    /// The job was accepted and is starting.
    Started {
        /// Which job.
        job: JobId,
    },
    /// Done (signal, kill).
    Ok,
    /// Refused, with the reason (no such job, no free slot, ...).
    Refused {
        /// One line for the user.
        reason: String,
    },
}

/// Everything a node needs to start a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's id (and its session key's id).
    pub job_id: JobId,
    /// The fresh session key for the job's DICP traffic.
    pub session_key: [u8; 32],
    /// Where the job's home listens (its DICP peer).
    pub home: std::net::SocketAddr,
    /// The node's name, as central knows it.
    pub node: String,
    /// The user's name on central.
    pub user: String,
    /// Program path as resolved on central.
    pub program: Blob,
    /// Arguments, `argv[0]` included.
    pub argv: Vec<Blob>,
    /// Environment, `KEY=VALUE` each.
    pub envp: Vec<Blob>,
    /// Working directory on central.
    pub cwd: Blob,
    /// The caller's umask.
    pub umask: u32,
    /// The caller's real and effective user id.
    pub uid: u32,
    /// The caller's real and effective group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Resource limits.
    pub limits: Limits,
    /// A pseudo-terminal, if asked for (`-t`).
    pub tty: Option<WinSize>,
}

/// Per-job limits (`None`: the node's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Number of processes.
    pub pids: Option<u64>,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// A node's state as reported by `Status` and heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// CPUs on the node.
    pub cpus: u32,
    /// Job slots.
    pub slots: u32,
    /// Slots in use.
    pub slots_used: u32,
    /// One-minute load average.
    pub load: f32,
    /// Jobs running.
    pub running: Vec<JobId>,
    /// Dropped-datagram counters by reason.
    pub dropped: BTreeMap<String, u64>,
    /// diatom-client version.
    pub version: String,
}

/// DICP control requests, node to central.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DicpRequest {
    /// A node announces itself (at start and after central restarts).
    Register(Register),
    /// Periodic liveness and load.
    Heartbeat(Heartbeat),
    /// Something happened to a job.
    JobEvent {
        /// Which job.
        job: JobId,
        /// What happened.
        event: JobEvent,
    },
}

/// A node's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// Node name (unique in the cluster).
    pub name: String,
    /// CPUs.
    pub cpus: u32,
    /// Job slots offered.
    pub slots: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// diatom-client version.
    pub version: String,
    /// `uname -srm` of the node.
    pub kernel: String,
}

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// One-minute load average.
    pub load: f32,
    /// Slots in use.
    pub slots_used: u32,
    /// Jobs running.
    pub running: Vec<JobId>,
    /// Dropped-datagram counters by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// What happened to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The first process started.
    Started {
        /// Its pid on the node.
        pid: u32,
    },
    /// The first process exited.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The first process died from a signal.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// The node killed the job (limit, lost home, `diatom kill`).
    Killed {
        /// One line for the user.
        reason: String,
    },
    /// The job could not start.
    Failed {
        /// One line for the user.
        reason: String,
    },
}

/// DICP control replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DicpResponse {
    /// Registration accepted.
    Registered {
        /// How often to send heartbeats, in milliseconds.
        heartbeat_ms: u32,
    },
    /// Received.
    Ack,
    /// Refused, with the reason.
    Refused {
        /// One line.
        reason: String,
    },
}
