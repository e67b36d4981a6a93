//! The control families: DSCP (central to node: ping, status, start a job,
//! signal or kill it) and DICP control (node to central: heartbeats, which
//! also register a node central does not know, job events and counters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Blob;

/// A job's number, unique in the cluster for ever (central assigns it).
pub type JobId = u64;

/// Central to node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DscpRequest {
    /// Liveness and round-trip probe; echoed in [`DscpResponse::Pong`].
    Ping {
        /// Echoed back.
        payload: Blob,
    },
    /// The node's state ([`DscpResponse::Status`]).
    Status,
    /// Start a job: open a per-job endpoint keyed with the session key and
    /// wait for the home's launch ([`super::job::Request::Launch`]).
    StartJob(StartJob),
    /// Send a signal to every process of a job.
    Signal {
        /// Which job.
        job: JobId,
        /// Signal number.
        signal: i32,
    },
    /// Kill a job (SIGKILL to all of it).
    Kill {
        /// Which job.
        job: JobId,
    },
}

/// What central tells a node about a new job. The program, its
/// environment and files never pass through central: the home sends them
/// to the node directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartJob {
    /// Job id, also the session key's id.
    pub job: JobId,
    /// The job's session key.
    pub session_key: [u8; 32],
    /// The caller's uid on central.
    pub uid: u32,
    /// The caller's gid on central.
    pub gid: u32,
    /// Resource limits asked for (the node caps them).
    pub limits: Limits,
}

/// Per-job resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Memory, bytes.
    pub memory: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
}

/// Node to central, answers to [`DscpRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DscpResponse {
    /// Answer to Ping.
    Pong {
        /// The ping's payload.
        payload: Blob,
    },
    /// The node's state.
    Status(NodeInfo),
    /// The job's endpoint listens on this UDP port of the node.
    Accepted {
        /// Port.
        port: u16,
    },
    /// The node will not do it (slots full, unknown job state); one line.
    Refused {
        /// Why.
        reason: String,
    },
    /// Done.
    Done,
    /// No such job runs on this node.
    NoSuchJob,
}

/// Node to central.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DicpRequest {
    /// Liveness and load; registers a node central does not know (so a
    /// restarted central learns its nodes again without asking).
    Heartbeat(NodeInfo),
    /// Something happened to a job.
    JobEvent {
        /// Which job.
        job: JobId,
        /// What happened.
        event: JobEvent,
    },
    /// A job's file-layer counters (forwarded calls by kind, bytes moved,
    /// cache hits), sent just before the [`JobEvent`] of its end. A
    /// variant of its own, appended, so a central that does not know it
    /// answers `Unsupported` and still gets the end event.
    JobCounters {
        /// Which job.
        job: JobId,
        /// Counter name to value.
        counters: BTreeMap<String, u64>,
    },
}

/// A node's description and load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// CPUs.
    pub cpus: u32,
    /// Job slots.
    pub slots: u32,
    /// Jobs running now.
    pub running: Vec<JobId>,
    /// One-minute load average.
    pub load: f64,
    /// `uname -sr` of the node.
    pub kernel: String,
    /// `diatom-client` version.
    pub version: String,
    /// Datagrams the node dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Bytes in the node's file cache.
    pub cache_bytes: u64,
    /// Jobs that ended recently and how: the node repeats them in its
    /// heartbeats for a while, so an end whose own report was lost (central
    /// was restarting, say) still reaches central instead of the job being
    /// declared lost.
    pub ended: Vec<(JobId, JobEvent)>,
}

/// A job's start or end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The first process runs.
    Started,
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
    /// The node killed the job (limit, home lost); one line.
    Killed {
        /// Why.
        reason: String,
    },
    /// The job could not start; one line.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One line for people (logs, the dashboard's job timeline).
impl std::fmt::Display for JobEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobEvent::Started => write!(f, "the program started"),
            JobEvent::Exited { code } => write!(f, "exited with status {code}"),
            JobEvent::Signaled { signal } => write!(f, "died from signal {signal}"),
            JobEvent::Killed { reason } => write!(f, "killed by the node: {reason}"),
            JobEvent::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// Central's answer to [`DicpRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DicpResponse {
    /// Noted.
    Ack,
}
