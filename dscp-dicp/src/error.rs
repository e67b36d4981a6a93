//! Error types, one enum per domain. Datagram-level problems are not errors
//! here: a bad datagram is dropped and counted (see [`crate::stats`]), never
//! reported to a caller.

use std::io;
use std::path::PathBuf;

/// Why a key could not be parsed, loaded or written. Every message is one
/// line, because the daemons print it as their reason to refuse to start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file does not exist.
    #[error("key file {} does not exist (create one with `diatom keygen --out {}`)", .path.display(), .path.display())]
    Missing {
        /// The file asked for.
        path: PathBuf,
    },
    /// The key file exists but could not be read or inspected.
    #[error("cannot read key file {}: {source}", .path.display())]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Group or others may read or write the file: a key others can read is
    /// no secret, so it is refused rather than used.
    #[error("key file {} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`", .path.display(), .path.display())]
    Permissions {
        /// The file asked for.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's content is not 64 hexadecimal characters and an optional
    /// newline.
    #[error("key file {} is malformed: {reason}", .path.display())]
    Malformed {
        /// The file asked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A hexadecimal key string (not from a file) is malformed.
    #[error("malformed key: {0}")]
    BadHex(&'static str),
    /// `write_new` found the file already there and will not overwrite it.
    #[error("key file {} already exists; refusing to overwrite it", .path.display())]
    Exists {
        /// The file asked for.
        path: PathBuf,
    },
    /// `write_new` could not create or write the file.
    #[error("cannot write key file {}: {source}", .path.display())]
    Write {
        /// The file asked for.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

/// Encoding or decoding a typed message (bincode) failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded (should not happen for our types).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The bytes are not a valid message of the expected type, exceed the
    /// decode limit, or have trailing garbage.
    #[error("cannot decode message: {0}")]
    Decode(String),
}

/// A request to the sans-I/O endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The payload is larger than the configured maximum message size.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The configured `max_message`.
        limit: usize,
    },
    /// No key with this id is in the keyring.
    #[error("no key with id {0} in the keyring")]
    UnknownKey(u64),
    /// The endpoint already tracks `max_peers` peers.
    #[error("too many peers")]
    TooManyPeers,
    /// `respond` named a request that is not waiting for an answer (already
    /// answered, or its peer was lost or closed).
    #[error("no such request {id} from {peer}")]
    NoSuchRequest {
        /// The peer given to `respond`.
        peer: String,
        /// The request id given to `respond`.
        id: u64,
    },
    /// Too many requests are outstanding to this peer.
    #[error("too many outstanding requests to {0}")]
    TooManyRequests(String),
}

/// A call through the UDP driver failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Socket setup or the driver thread failed.
    #[error("udp driver i/o error: {0}")]
    Io(#[from] io::Error),
    /// The endpoint refused the request (size, key, limits).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The request or response could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// No response arrived before the caller's deadline.
    #[error("request timed out")]
    Timeout,
    /// The peer stopped answering (silent past the idle timeout).
    #[error("peer lost")]
    PeerLost,
    /// The peer restarted while the request was outstanding; it may or may
    /// not have been executed by the old instance, so it is not retried.
    #[error("peer restarted; request may or may not have run")]
    PeerRestarted,
    /// The peer was closed locally, or the driver shut down.
    #[error("driver closed")]
    Closed,
}
