//! What both ends of a job's network relay share (see `docs/network.md`):
//! socket addresses in the kernel's layout and the protocol's, and the
//! stream pump that moves bytes between a local socket and the job
//! session's peer. The node's side (the tracer's socket calls and the
//! loopback relay) is `job::net`; the home's is `diatom-central`'s
//! `home::net`.

pub mod addr;
pub mod stream;
