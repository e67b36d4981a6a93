//! A job's stdio and terminal between its node and its home. Streams carry
//! sequence numbers (byte offsets) so the receiver can order and de-duplicate
//! chunks sent as concurrent requests; acks return a window for flow control.

use serde::{Deserialize, Serialize};

use super::control::{JobId, WinSize};
use super::Blob;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

/// Job stdio requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Node to home: program output; `offset` is the stream position of
    /// the first byte.
    Output {
        /// Which job.
        job: JobId,
        /// Which stream.
        stream: Stream,
        /// Stream offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Blob,
    },
    /// Node to home: the stream ended at `offset`.
    OutputEof {
        /// Which job.
        job: JobId,
        /// Which stream.
        stream: Stream,
        /// Total bytes written to the stream.
        offset: u64,
    },
    /// Home to node: input for the program.
    Stdin {
        /// Which job.
        job: JobId,
        /// Stream offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Blob,
    },
    /// Home to node: stdin ended at `offset`.
    StdinEof {
        /// Which job.
        job: JobId,
        /// Total bytes of stdin.
        offset: u64,
    },
    /// Home to node: the terminal was resized.
    Resize {
        /// Which job.
        job: JobId,
        /// The new size.
        size: WinSize,
    },
}

/// Job stdio replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Everything up to `offset` is consumed; the receiver accepts up to
    /// `window` more bytes beyond it.
    Ack {
        /// Stream position consumed.
        offset: u64,
        /// Bytes the receiver will accept beyond `offset`.
        window: u64,
    },
    /// The job is gone.
    NoSuchJob,
}
