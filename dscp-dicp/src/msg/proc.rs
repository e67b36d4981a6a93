//! Process and identity queries a job's node asks its home for, so the job
//! sees central's world (its ids, host name). The first few; more get
//! appended here.

use serde::{Deserialize, Serialize};

/// Process requests, node to home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The caller's user and group ids.
    Ids,
    /// Central's host name (`uname -n`, `gethostname`).
    Hostname,
}

/// Process replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// User and group ids.
    Ids {
        /// Real user id.
        uid: u32,
        /// Effective user id.
        euid: u32,
        /// Real group id.
        gid: u32,
        /// Effective group id.
        egid: u32,
        /// Supplementary groups.
        groups: Vec<u32>,
    },
    /// The host name.
    Hostname(String),
    /// The call failed with this errno.
    Errno(i32),
}
