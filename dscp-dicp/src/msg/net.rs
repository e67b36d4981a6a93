//! A job's network traffic between its node and its home (the job's
//! sockets live on central; see `docs/network.md`). Both sides send
//! requests of this one family: the node opens streams and sockets on
//! central and sends what the job writes; the home announces connections
//! accepted on central and sends what central's peers write.
//!
//! **Streams** (TCP, and unix-domain stream sockets named by a path) are
//! byte pipes identified by a [`StreamId`] chosen by the side that opens
//! one: the node for `Connect`, the home for `Accepted` (the home's ids have
//! [`HOME_STREAM`] set, so the two never collide). Each direction is a
//! sequence of [`Request::Data`] numbered from 0; an empty `Data` is the end
//! of that direction (half-close). A sender keeps a bounded number of
//! unacknowledged `Data` in flight and the receiver acknowledges each once
//! written, which is the flow control. [`Request::Reset`] aborts both
//! directions.
//!
//! **Sockets** (bound or listening sockets, UDP sockets) on central are
//! identified by a [`SockId`] the node chooses.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Blob;

/// A byte stream between a job socket and a central socket.
pub type StreamId = u64;

/// A socket the home holds on central for the job (bound, listening, UDP).
pub type SockId = u64;

/// Bit set in the ids of streams the home opens (accepted on central).
pub const HOME_STREAM: StreamId = 1 << 63;

/// A socket address as central sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Addr {
    /// IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A unix-domain socket named by a path on central (bytes of the path).
    Unix(Blob),
}

/// What kind of socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_DGRAM`.
    Datagram,
}

/// Socket requests (both directions, see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Node to home: open a stream to `to` on central. Answer:
    /// [`Response::Connected`] or [`Response::Errno`] (central's errno of
    /// the connect, e.g. `ECONNREFUSED`, `ETIMEDOUT`).
    Connect {
        /// The new stream's id (chosen by the node).
        stream: StreamId,
        /// Where to connect.
        to: Addr,
    },
    /// Either way: the next bytes of a stream direction (empty: the end of
    /// that direction). Answer: [`Response::Ok`] once written, or
    /// [`Response::Errno`] when the receiving socket is gone (the sender
    /// stops sending).
    Data {
        /// Which stream.
        stream: StreamId,
        /// Position in this direction, from 0.
        seq: u64,
        /// The bytes.
        data: Blob,
    },
    /// Either way: the stream is aborted (both directions). Answer `Ok`.
    Reset {
        /// Which stream.
        stream: StreamId,
    },
    /// Node to home: make a socket of `kind` bound to `addr` on central.
    /// Answer: [`Response::Bound`] with the address central chose, or the
    /// errno (`EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`...).
    Bind {
        /// The socket's id (chosen by the node).
        sock: SockId,
        /// Stream or datagram.
        kind: Kind,
        /// Where (port 0: any).
        addr: Addr,
        /// The job set `SO_REUSEADDR` on its socket.
        reuse_addr: bool,
    },
    /// Node to home: listen on a bound stream socket; connections accepted
    /// on central arrive as [`Request::Accepted`]. Answer `Ok` or errno.
    Listen {
        /// Which socket.
        sock: SockId,
        /// The job's backlog.
        backlog: i32,
    },
    /// Home to node: central accepted a connection on `listener`; it is
    /// stream `stream` from now on. Answer `Ok`, or an errno when the node
    /// could not reach the job's listening socket (the home closes it).
    Accepted {
        /// The listening socket.
        listener: SockId,
        /// The new stream's id (chosen by the home).
        stream: StreamId,
        /// The connecting peer, as central saw it.
        peer: Addr,
        /// The accepted socket's own address on central.
        local: Addr,
    },
    /// Either way: one datagram of a datagram socket. Node to home: send it
    /// from the socket to `peer`; home to node: it came from `peer`.
    /// Answer `Ok` or errno (delivery is not promised, as with UDP).
    Datagram {
        /// Which socket.
        sock: SockId,
        /// Destination (node to home) or source (home to node).
        peer: Addr,
        /// The payload.
        data: Blob,
    },
    /// Node to home: the job no longer uses this socket; close it.
    Release {
        /// Which socket.
        sock: SockId,
    },
    /// Node to home: as [`Request::Connect`], from the stream socket the
    /// job bound ([`Request::Bind`]), so the connection leaves from the
    /// address it chose. The socket becomes the stream's; on failure it
    /// stays bound, as the job's does.
    ConnectFrom {
        /// The new stream's id (chosen by the node).
        stream: StreamId,
        /// The bound central socket.
        sock: SockId,
        /// Where to connect.
        to: Addr,
    },
}

/// Socket replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A stream is connected on central: its local and peer addresses.
    Connected {
        /// The central socket's own address.
        local: Addr,
        /// The peer's address.
        peer: Addr,
    },
    /// A socket is bound on central at this address.
    Bound {
        /// The address central chose.
        local: Addr,
    },
    /// Done.
    Ok,
    /// The operation failed on the answering side with this errno.
    Errno(i32),
}
