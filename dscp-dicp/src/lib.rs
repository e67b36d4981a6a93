//! Diatom's wire protocols: DSCP (central to node: start, signal, kill,
//! status, ping) and DICP (node to central and to a job's home: register,
//! heartbeat, job events, and the job's file, socket and process requests).
//!
//! Layers, bottom up:
//! - [`key`]: the 256-bit keys and their files.
//! - [`wire`]: the fixed datagram header (authenticated, not encrypted).
//! - [`crypto`]: sealing and opening datagrams with AES-256-GCM under
//!   per-sender subkeys, and a keyring (key id 0 is the cluster key, other
//!   ids are per-job session keys).
//! - [`replay`]: the per-sender sliding window and the first-contact challenge.
//! - [`frame`]: the frames inside an opened datagram (acks, chunks, pings).
//! - [`stats`]: counters of dropped datagrams, per reason.
//! - [`endpoint`]: the sans-I/O reliability core (request ids, retransmission,
//!   at-most-once execution, fragmentation, congestion window, liveness).
//! - [`msg`]: the typed messages (serde + bincode) that travel as payloads.
//! - [`driver`]: a thin UDP driver with a real clock and blocking calls.
//! - [`error`]: the error enums of every layer.

pub mod crypto;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod key;
pub mod msg;
pub mod replay;
pub mod stats;
pub mod wire;

#[cfg(test)]
mod tests;

pub use crypto::Keyring;
pub use driver::{Answer, Driver, DriverConfig, Handle, Incoming, PendingCall};
pub use endpoint::{
    Config, Endpoint, Event, FailReason, Peer, RequestId, Sink, SinkTarget, Transmit,
};
pub use error::{CodecError, DriverError, EndpointError, KeyError};
pub use key::{Key, KeyId, CLUSTER_KEY_ID};
pub use stats::{DropReason, DropStats, Stats};

/// The UDP port both daemons listen on (the seed's promise).
pub const DEFAULT_PORT: u16 = 12036;
