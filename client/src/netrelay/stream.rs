//! Byte streams pumped between a local socket and the job session's peer,
//! the same code on both ends: on the node the local socket is the relay's
//! end of a loopback connection with the job, on the home it is the real
//! socket on central.
//!
//! Each stream has two threads. The *reader* reads the local socket and
//! sends [`Request::Data`] numbered from 0, keeping at most [`WINDOW`]
//! unacknowledged (flow control: a peer that cannot write holds its acks
//! back); end of file becomes an empty `Data` (half-close), a read error a
//! [`Request::Reset`]. The *writer* takes the peer's `Data`, puts them back
//! in order (the session may deliver requests out of order), writes them
//! and acknowledges each after its write; an empty one shuts the local
//! socket's sending side (`shutdown(SHUT_WR)`: a FIN), a `Reset` shuts it
//! both ways. The local socket closes when both threads are done.
//!
//! A stream is *opened* ([`Streams::open`]) before the handshake that
//! announces it, so data the peer sends right after the handshake waits in
//! its queue, and *run* ([`Streams::run`]) once the local socket exists.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dscp_dicp::msg::net::{Request, Response, StreamId};
use dscp_dicp::msg::{Blob, Response as AnyResponse};
use dscp_dicp::Peer;

use crate::net::{reply, Incoming, Net, PendingCall};

/// Most bytes per `Data` message.
pub const CHUNK: usize = 256 * 1024;
/// Most unacknowledged `Data` per stream direction.
pub const WINDOW: usize = 8;
/// Most streams open at once per session side: each costs two threads and
/// a socket, and connections central accepts for a job are not bounded by
/// the job's own descriptors.
pub const MAX_STREAMS: usize = 1024;
/// How long one `Data` may wait for its acknowledgement: as long as a
/// peer may reasonably not read (the session notices a lost peer sooner).
const DATA_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the writer of a stream receives.
enum Inbound {
    Data { req: Incoming, seq: u64, data: Blob },
    Reset(Incoming),
}

/// A stream opened but not yet running (see the module documentation);
/// dropping it forgets the stream.
pub struct Opened {
    streams: Arc<Streams>,
    id: StreamId,
    rx: Option<Receiver<Inbound>>,
}

impl Opened {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.streams.forget(self.id);
        }
    }
}

struct Entry {
    tx: Sender<Inbound>,
    sock: Option<Arc<OwnedFd>>,
}

/// The streams of one job session (one side).
#[derive(Default)]
pub struct Streams {
    map: Mutex<HashMap<StreamId, Entry>>,
    /// Reader threads still sending the local socket's bytes.
    readers: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("open", &self.lock().len())
            .finish()
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Streams {
    /// No streams yet.
    pub fn new() -> Arc<Streams> {
        Arc::new(Streams::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, id: StreamId) {
        self.lock().remove(&id);
    }

    /// Number of streams open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers stream `id` so the peer's data for it is queued from now
    /// on. `None` when the id is in use (a confused or hostile peer) or
    /// [`MAX_STREAMS`] are open.
    pub fn open(self: &Arc<Self>, id: StreamId) -> Option<Opened> {
        let mut map = self.lock();
        if map.contains_key(&id) || map.len() >= MAX_STREAMS {
            return None;
        }
        // The peer keeps at most WINDOW in flight; twice that is a peer
        // that ignores the protocol, answered with ENOBUFS.
        let (tx, rx) = crossbeam_channel::bounded(2 * WINDOW);
        map.insert(id, Entry { tx, sock: None });
        Some(Opened {
            streams: self.clone(),
            id,
            rx: Some(rx),
        })
    }

    /// Starts pumping `opened` between `sock` and `peer` over `net`.
    pub fn run(&self, mut opened: Opened, sock: OwnedFd, net: &Net, peer: Peer) {
        let Some(rx) = opened.rx.take() else { return };
        let id = opened.id;
        let sock = Arc::new(sock);
        if let Some(e) = self.lock().get_mut(&id) {
            e.sock = Some(sock.clone());
        }
        let streams = opened.streams.clone();
        let wsock = sock.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("stream-{id:x}-in"))
            .spawn(move || {
                write_side(&wsock, rx);
                streams.forget(id);
            });
        if let Err(e) = spawned {
            log::warn!("stream {id:x}: no writer thread: {e}");
            self.forget(id);
            return;
        }
        let (rnet, rsock) = (net.clone(), sock.clone());
        let readers = self.readers.clone();
        readers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("stream-{id:x}-out"))
            .spawn(move || {
                read_side(&rsock, &rnet, peer, id);
                readers.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.readers
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            log::warn!("stream {id:x}: no reader thread: {e}");
            shutdown(&sock, libc::SHUT_RDWR);
        }
    }

    /// Routes the peer's `Data` or `Reset` to its stream; other requests
    /// are not for this type and get `EINVAL`.
    pub fn deliver(&self, req: Incoming, msg: Request) {
        let (id, inbound) = match msg {
            Request::Data { stream, seq, data } => (stream, Inbound::Data { req, seq, data }),
            Request::Reset { stream } => (stream, Inbound::Reset(req)),
            _ => return reply(req, Response::Errno(libc::EINVAL)),
        };
        let tx = self.lock().get(&id).map(|e| e.tx.clone());
        let Some(tx) = tx else {
            return refuse(inbound, libc::ECONNRESET);
        };
        match tx.try_send(inbound) {
            Ok(()) => {}
            Err(TrySendError::Full(i)) => refuse(i, libc::ENOBUFS),
            Err(TrySendError::Disconnected(i)) => refuse(i, libc::ECONNRESET),
        }
    }

    /// Waits until every local socket's bytes have been taken by the peer
    /// (each reader reached the end of its socket and its last `Data` was
    /// acknowledged), at most `limit`. Whether they all did.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.readers.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Shuts every stream's socket (the job is over): their threads end.
    pub fn close_all(&self) {
        for e in self.lock().values() {
            if let Some(s) = &e.sock {
                shutdown(s, libc::SHUT_RDWR);
            }
        }
    }
}

fn refuse(inbound: Inbound, code: i32) {
    match inbound {
        Inbound::Data { req, .. } => reply(req, Response::Errno(code)),
        Inbound::Reset(req) => reply(req, Response::Ok),
    }
}

/// `shutdown(2)`, errors ignored (the socket may be gone already).
pub fn shutdown(sock: &OwnedFd, how: i32) {
    shutdown_raw(sock.as_raw_fd(), how);
}

/// [`shutdown`] of a descriptor the caller keeps open.
pub fn shutdown_raw(fd: std::os::fd::RawFd, how: i32) {
    // SAFETY: plain call on a descriptor; a stale one only fails.
    unsafe { libc::shutdown(fd, how) };
}

fn recv(sock: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all of `data`; `MSG_NOSIGNAL` so a closed peer is an `EPIPE`
/// here rather than a SIGPIPE for the whole daemon.
fn send_all(sock: &OwnedFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: the kernel reads at most `data.len()` bytes of `data`.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// The peer's answer to one of our `Data`: `Ok(())` or the errno.
fn answer(call: PendingCall) -> Result<(), i32> {
    let bytes = call.wait(DATA_TIMEOUT).map_err(|_| libc::ECONNRESET)?;
    let resp = AnyResponse::decode(&bytes).map_err(|_| libc::EPROTO)?;
    match Response::try_from(resp) {
        Ok(Response::Ok) => Ok(()),
        Ok(Response::Errno(e)) => Err(e),
        _ => Err(libc::EPROTO),
    }
}

/// Local socket to peer, until end of file, an error, or the peer refusing.
fn read_side(sock: &OwnedFd, net: &Net, peer: Peer, stream: StreamId) {
    let mut seq = 0u64;
    let mut inflight: VecDeque<PendingCall> = VecDeque::new();
    let mut buf = vec![0u8; CHUNK];
    let mut refused = false;
    loop {
        let (msg, last) = match recv(sock, &mut buf) {
            Ok(0) => (data(stream, seq, Vec::new()), true),
            Ok(n) => (data(stream, seq, buf[..n].to_vec()), false),
            Err(e) => {
                log::debug!("stream {stream:x}: local read: {e}");
                (Request::Reset { stream }, true)
            }
        };
        seq += 1;
        match net.start(peer, msg) {
            Ok(call) => inflight.push_back(call),
            Err(e) => {
                log::debug!("stream {stream:x}: session: {e}");
                break;
            }
        }
        if last {
            break;
        }
        while inflight.len() >= WINDOW {
            if let Some(call) = inflight.pop_front() {
                if let Err(code) = answer(call) {
                    log::debug!("stream {stream:x}: peer refused data: errno {code}");
                    refused = true;
                }
            }
        }
        if refused {
            break;
        }
    }
    for call in inflight {
        let _ = answer(call);
    }
    if refused {
        // The peer's socket is gone: make the local end see it.
        shutdown(sock, libc::SHUT_RDWR);
    }
}

fn data(stream: StreamId, seq: u64, data: Vec<u8>) -> Request {
    Request::Data {
        stream,
        seq,
        data: Blob(data),
    }
}

/// Peer to local socket, in order, until the peer's end or reset.
fn write_side(sock: &OwnedFd, rx: Receiver<Inbound>) {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, (Incoming, Blob)> = BTreeMap::new();
    let mut broken: Option<i32> = None;
    for inbound in rx {
        let (req, seq, bytes) = match inbound {
            Inbound::Reset(req) => {
                shutdown(sock, libc::SHUT_RDWR);
                reply(req, Response::Ok);
                break;
            }
            Inbound::Data { req, seq, data } => (req, seq, data),
        };
        if seq < next || waiting.contains_key(&seq) {
            // A duplicate: already written (or queued).
            reply(req, Response::Ok);
            continue;
        }
        waiting.insert(seq, (req, bytes));
        let mut ended = false;
        while let Some((req, bytes)) = waiting.remove(&next) {
            next += 1;
            if let Some(code) = broken {
                reply(req, Response::Errno(code));
                continue;
            }
            if bytes.is_empty() {
                shutdown(sock, libc::SHUT_WR);
                reply(req, Response::Ok);
                ended = true;
                break;
            }
            match send_all(sock, &bytes) {
                Ok(()) => reply(req, Response::Ok),
                Err(e) => {
                    let code = errno(&e);
                    broken = Some(code);
                    reply(req, Response::Errno(code));
                }
            }
        }
        if ended {
            break;
        }
    }
    for (_, (req, _)) in waiting {
        reply(req, Response::Errno(libc::ECONNRESET));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dscp_dicp::msg::Request as AnyRequest;
    use dscp_dicp::{Key, Keyring};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// One end of a job session on loopback, with its streams served.
    fn end(key: &Key) -> (Net, Arc<Streams>) {
        let mut keys = Keyring::new();
        keys.insert(9, key);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let net = Net::open_session(sock, keys).unwrap();
        let streams = Streams::new();
        let (n, s) = (net.clone(), streams.clone());
        std::thread::spawn(move || {
            for req in n.requests().iter() {
                match req.request() {
                    Ok(AnyRequest::Net(m)) => s.deliver(req, m),
                    _ => reply(req, Response::Errno(libc::EINVAL)),
                }
            }
        });
        (net, streams)
    }

    fn peer(net: &Net) -> Peer {
        Peer {
            addr: net.local_addr(),
            key_id: 9,
        }
    }

    #[test]
    fn bytes_flow_in_order_with_half_close_both_ways() {
        let key = Key::generate();
        let (na, sa) = end(&key);
        let (nb, sb) = end(&key);
        let (a_app, a_relay) = UnixStream::pair().unwrap();
        let (b_app, b_relay) = UnixStream::pair().unwrap();
        let (oa, ob) = (sa.open(1).unwrap(), sb.open(1).unwrap());
        sa.run(oa, a_relay.into(), &na, peer(&nb));
        sb.run(ob, b_relay.into(), &nb, peer(&na));
        // More than a window of chunks, in odd-sized writes.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = a_app.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            for c in sent.chunks(100_003) {
                w.write_all(c).unwrap();
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        let mut b = b_app;
        b.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert!(
            got == data,
            "{} bytes of {} arrived in order",
            got.len(),
            data.len()
        );
        // The other direction still works after the first one ended.
        b.write_all(b"reply").unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        let mut a = a_app;
        a.read_to_string(&mut back).unwrap();
        assert_eq!(back, "reply");
    }

    #[test]
    fn data_for_an_unknown_stream_is_a_reset() {
        let key = Key::generate();
        let (na, _sa) = end(&key);
        let (nb, _sb) = end(&key);
        let call = na.start(peer(&nb), data(77, 0, b"x".to_vec())).unwrap();
        assert_eq!(answer(call), Err(libc::ECONNRESET));
    }

    #[test]
    fn ids_are_unique_until_forgotten() {
        let s = Streams::new();
        let a = s.open(5).unwrap();
        assert!(s.open(5).is_none(), "an id in use");
        assert_eq!(s.len(), 1);
        drop(a);
        assert!(s.is_empty(), "an unused opened stream is forgotten");
        let _five = s.open(5).unwrap();
        let held: Vec<Opened> = (0..MAX_STREAMS as u64 - 1)
            .map(|i| s.open(100 + i).unwrap())
            .collect();
        assert_eq!(s.len(), MAX_STREAMS);
        assert!(s.open(1).is_none(), "no more than MAX_STREAMS at once");
        drop(held);
        assert!(s.open(1).is_some());
    }
}
