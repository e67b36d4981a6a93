//! Socket operations a job's node asks its home for (the job's traffic
//! leaves from central). The first few; more get appended here.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Blob;

/// A socket opened on central, chosen by the home.
pub type SocketId = u64;

/// Socket requests, node to home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Open a socket (`socket(2)` arguments).
    Socket {
        /// Address family.
        domain: i32,
        /// Type (`SOCK_STREAM`, `SOCK_DGRAM`, flags).
        kind: i32,
        /// Protocol.
        protocol: i32,
    },
    /// Connect it.
    Connect {
        /// Which socket.
        sock: SocketId,
        /// To where.
        addr: SocketAddr,
    },
    /// Bind and listen.
    Listen {
        /// Which socket.
        sock: SocketId,
        /// Local address on central.
        addr: SocketAddr,
        /// Backlog.
        backlog: i32,
    },
    /// Send bytes (to `to` for unconnected datagram sockets).
    Send {
        /// Which socket.
        sock: SocketId,
        /// The bytes.
        data: Blob,
        /// Destination for `sendto`.
        to: Option<SocketAddr>,
    },
    /// Receive at most `max` bytes.
    Recv {
        /// Which socket.
        sock: SocketId,
        /// At most this many bytes.
        max: u32,
    },
    /// Close it.
    Close {
        /// Which socket.
        sock: SocketId,
    },
}

/// Socket replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A new socket.
    Opened(SocketId),
    /// Connected, listening or closed.
    Ok,
    /// Bytes sent.
    Sent(u64),
    /// Bytes received, and from where (datagram sockets).
    Data {
        /// The bytes (empty at end of stream).
        data: Blob,
        /// The sender, for datagram sockets.
        from: Option<SocketAddr>,
    },
    /// The call failed with this errno.
    Errno(i32),
}
