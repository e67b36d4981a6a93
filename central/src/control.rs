//! The local control protocol between `diatom` and `diatom-central` over a
//! Unix stream socket.
//!
//! Frames are a 4-byte big-endian length and a JSON document: a handful of
//! messages per job, so readability beats compactness, and `socat` can talk
//! to the daemon when debugging. A frame may carry file descriptors
//! (SCM_RIGHTS): central hands the job's home the UDP socket it will talk to
//! the node with. The daemon learns who is calling from the socket's peer
//! credentials (SO_PEERCRED), never from anything the caller says.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 4 << 20;
/// Most descriptors one frame may carry.
const MAX_FDS: usize = 4;

/// What can go wrong on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("control socket closed by the other side")]
    Closed,
    /// A frame was larger than [`MAX_FRAME`].
    #[error("control frame of {0} bytes is too large")]
    TooLarge(usize),
    /// A frame did not decode.
    #[error("bad control frame: {0}")]
    Decode(#[from] serde_json::Error),
    /// A frame carried more descriptors than expected or they were truncated.
    #[error("control frame carried unexpected file descriptors")]
    Descriptors,
}

/// Who is on the other end of a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Reads the kernel's record of who connected.
pub fn peer_cred(stream: &UnixStream) -> Result<PeerCred, ControlError> {
    let c = socket::getsockopt(stream, socket::sockopt::PeerCredentials)
        .map_err(|e| ControlError::Io(e.into()))?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Sends one frame, with optional descriptors attached to its first byte.
pub fn send<T: Serialize>(stream: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<(), ControlError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(ControlError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ControlError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    let mut sent = 0;
    if !fds.is_empty() {
        let cmsg = [ControlMessage::ScmRights(fds)];
        sent = socket::sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| ControlError::Io(e.into()))?;
    }
    (&*stream).write_all(&frame[sent..])?;
    Ok(())
}

/// Receives one frame and any descriptors that came with it.
pub fn recv<T: DeserializeOwned>(stream: &UnixStream) -> Result<(T, Vec<OwnedFd>), ControlError> {
    let mut head = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    // The descriptors ride on the first bytes of a frame, so read the
    // length with recvmsg and the rest with plain reads.
    while got < head.len() {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut head[got..])];
        let msg = socket::recvmsg::<()>(
            stream.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| ControlError::Io(e.into()))?;
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(ControlError::Descriptors);
        }
        for c in msg.cmsgs().map_err(|e| ControlError::Io(e.into()))? {
            if let ControlMessageOwned::ScmRights(list) = c {
                for fd in list {
                    // SAFETY: the kernel just installed this descriptor for us
                    // and nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.bytes == 0 {
            return Err(ControlError::Closed);
        }
        got += msg.bytes;
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(ControlError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    (&*stream).read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ControlError::Closed
        } else {
            ControlError::Io(e)
        }
    })?;
    Ok((serde_json::from_slice(&body)?, fds))
}

/// What `diatom` asks of central.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", content = "body", rename_all = "snake_case")]
pub enum Request {
    /// Place a job: central picks a node, registers the job, issues its
    /// session key and answers [`Response::Granted`] with the UDP socket.
    Exec(ExecRequest),
    /// Every node.
    Nodes,
    /// Jobs; finished ones too with `all`.
    Jobs {
        /// Include finished jobs.
        all: bool,
    },
    /// Central's own state.
    Status,
    /// Signal every process of a job.
    Kill {
        /// Job id.
        job: u64,
        /// Signal number.
        signal: i32,
    },
    /// Answer [`Response::Done`] once central has recorded the job's end
    /// (or after a short bound). `diatom exec` asks it before exiting, so
    /// that `diatom ps` run right after shows the job finished: the node's
    /// report to central and its word to the home travel separately.
    AwaitEnd {
        /// Job id.
        job: u64,
    },
}

/// A job placement request; the program's environment and file data never
/// pass through central, they go from the home straight to the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program as resolved on central (absolute).
    pub program: PathBuf,
    /// argv, lossily decoded, for the job table.
    pub argv: Vec<String>,
    /// The caller's cwd, for the job table.
    pub cwd: PathBuf,
    /// `--node`.
    pub node: Option<String>,
    /// `--memory`, bytes.
    pub memory: Option<u64>,
    /// `--pids`.
    pub pids: Option<u64>,
}

/// Central's answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// The job is placed. One descriptor accompanies this frame: a UDP socket
    /// bound to central's port and connected to the node's per-job address.
    Granted(Grant),
    /// A JSON value to print (`nodes`, `jobs`, `status`).
    Listing(serde_json::Value),
    /// The signal was delivered to the node.
    Done,
    /// The request failed; the text is one line for the user.
    Error(String),
}

/// Everything a home needs to talk to its node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    /// Job id.
    pub job: u64,
    /// Node name.
    pub node: String,
    /// The node's per-job UDP address.
    pub node_addr: std::net::SocketAddr,
    /// The job's session key, hex.
    pub session_key: String,
    /// Effective memory limit, bytes.
    pub memory: u64,
    /// Effective pids limit.
    pub pids: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(&a, &Request::Jobs { all: true }, &[file.as_raw_fd()]).unwrap();
        send(&a, &Request::Status, &[]).unwrap();
        let (r, fds): (Request, _) = recv(&b).unwrap();
        assert!(matches!(r, Request::Jobs { all: true }));
        assert_eq!(fds.len(), 1);
        let (r, fds): (Request, _) = recv(&b).unwrap();
        assert!(matches!(r, Request::Status));
        assert!(fds.is_empty());
        assert_eq!(peer_cred(&b).unwrap().pid, std::process::id() as i32);
        drop(a);
        assert!(matches!(recv::<Request>(&b), Err(ControlError::Closed)));
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(
            recv::<Request>(&b),
            Err(ControlError::TooLarge(_))
        ));
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&3u32.to_be_bytes()).unwrap();
        (&a).write_all(b"{x}").unwrap();
        assert!(matches!(recv::<Request>(&b), Err(ControlError::Decode(_))));
    }
}
