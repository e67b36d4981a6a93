//! The home's network service: the job's sockets, for real, on central,
//! as the calling user (see `docs/network.md`). The node asks for
//! connects, binds, listens and datagrams ([`dscp_dicp::msg::net`]); the
//! home makes the calls, pumps stream bytes with the same code as the node
//! ([`diatom_client::netrelay::stream`]), announces connections central
//! accepts for the job, and sends the node what central's datagram sockets
//! receive.
//!
//! Nothing here blocks the home's serve loop: connects, accept loops and
//! datagram receivers run on their own threads and answer when done.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use diatom_client::job::net::relay::HOME_CONNECT_LIMIT;
use diatom_client::net::{ask, reply, Incoming, Net};
use diatom_client::netrelay::addr::{self, Parsed};
use diatom_client::netrelay::stream::{shutdown_raw, Streams};
use dscp_dicp::msg::net::{Addr, Kind, Request, Response, SockId, StreamId, HOME_STREAM};
use dscp_dicp::msg::Blob;
use dscp_dicp::Peer;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long the node may take to take a connection central accepted, or
/// a datagram.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest datagram.
const DATAGRAM_MAX: usize = 65536;
/// Most central sockets (bound, listening, UDP) one job may hold.
pub const MAX_SOCKETS: usize = 1024;

enum HomeSock {
    Stream(Arc<OwnedFd>),
    Datagram(Arc<UdpSocket>),
}

impl HomeSock {
    fn raw(&self) -> std::os::fd::RawFd {
        match self {
            HomeSock::Stream(f) => f.as_raw_fd(),
            HomeSock::Datagram(u) => u.as_raw_fd(),
        }
    }

    fn others(&self) -> usize {
        match self {
            HomeSock::Stream(f) => Arc::strong_count(f) - 1,
            HomeSock::Datagram(u) => Arc::strong_count(u) - 1,
        }
    }

    /// Shuts the socket, which wakes its accept or receive thread, and
    /// closes it once that thread let it go (at most [`CLOSE_WAIT`]), so
    /// its address is free when the node hears back.
    fn close(self) {
        shutdown_raw(self.raw(), libc::SHUT_RDWR);
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while self.others() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// How long a release waits for a socket's thread to let it go.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One job's sockets on central.
#[derive(Clone)]
pub struct NetService {
    net: Net,
    node: Peer,
    streams: Arc<Streams>,
    socks: Arc<Mutex<HashMap<SockId, HomeSock>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for NetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetService")
            .field("node", &self.node)
            .finish()
    }
}

fn io_errno(e: &std::io::Error) -> i32 {
    match e.raw_os_error() {
        Some(n) => n,
        None if e.kind() == std::io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        None => libc::EIO,
    }
}

fn unix_path(p: &Blob) -> &std::path::Path {
    std::path::Path::new(OsStr::from_bytes(p))
}

/// Connects socket `fd` to `to`, waiting at most `limit` (`ETIMEDOUT`
/// then), as `TcpStream::connect_timeout` does for a socket of its own. A
/// unix socket's connect does not wait for a peer: it runs as it is.
fn connect_within(fd: BorrowedFd<'_>, to: &Addr, limit: Duration) -> Result<(), i32> {
    if matches!(to, Addr::Unix(_)) {
        return addr::connect(fd, to);
    }
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| e as i32)?;
    let blocking = OFlag::from_bits_truncate(flags);
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(blocking | OFlag::O_NONBLOCK),
    )
    .map_err(|e| e as i32)?;
    let done = match addr::connect(fd, to) {
        Err(libc::EINPROGRESS) => wait_connected(fd, limit),
        other => other,
    };
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(blocking)).map_err(|e| e as i32)?;
    done
}

/// Waits for a non-blocking connect of `fd` to finish: its result.
fn wait_connected(fd: BorrowedFd<'_>, limit: Duration) -> Result<(), i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(libc::ETIMEDOUT);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [PollFd::new(fd, PollFlags::POLLOUT)];
        match poll(&mut pfd, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(e as i32),
        }
    }
    match addr::int_option(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(()),
        e => Err(e),
    }
}

impl NetService {
    /// The sockets of the job whose node is `node` on `net`.
    pub fn new(net: Net, node: Peer) -> NetService {
        NetService {
            net,
            node,
            streams: Streams::new(),
            socks: Arc::new(Mutex::new(HashMap::new())),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    fn socks(&self) -> MutexGuard<'_, HashMap<SockId, HomeSock>> {
        self.socks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one of the node's socket requests (answers now or from a
    /// thread).
    pub fn handle(&self, req: Incoming, msg: Request) {
        match msg {
            Request::Data { .. } | Request::Reset { .. } => self.streams.deliver(req, msg),
            Request::Connect { stream, to } => self.connect_on_thread(req, stream, None, to),
            Request::ConnectFrom { stream, sock, to } => {
                self.connect_on_thread(req, stream, Some(sock), to);
            }
            Request::Bind {
                sock,
                kind,
                addr,
                reuse_addr,
            } => {
                let answer = match self.bind(sock, kind, &addr, reuse_addr) {
                    Ok(local) => Response::Bound { local },
                    Err(e) => Response::Errno(e),
                };
                reply(req, answer);
            }
            Request::Listen { sock, backlog } => {
                let answer = match self.listen(sock, backlog) {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::Errno(e),
                };
                reply(req, answer);
            }
            Request::Datagram { sock, peer, data } => {
                let answer = match self.send_datagram(sock, &peer, &data) {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::Errno(e),
                };
                reply(req, answer);
            }
            Request::Release { sock } => {
                let gone = self.socks().remove(&sock);
                if let Some(s) = gone {
                    s.close();
                }
                reply(req, Response::Ok);
            }
            Request::Accepted { .. } => reply(req, Response::Errno(libc::EINVAL)),
        }
    }

    /// Connects on a thread of its own (a connect may take a minute) and
    /// answers from there.
    fn connect_on_thread(&self, req: Incoming, stream: StreamId, from: Option<SockId>, to: Addr) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("home-connect-{stream}"))
            .spawn(move || {
                let answer = match from {
                    Some(sock) => me.connect_from(stream, sock, &to),
                    None => me.connect(stream, &to),
                };
                reply(req, answer);
            });
        if let Err(e) = spawned {
            log::warn!("no thread for a connect: {e}");
        }
    }

    /// Connects the stream socket the job bound as `sock` and starts the
    /// stream on it; on failure the socket stays bound.
    fn connect_from(&self, stream: StreamId, sock: SockId, to: &Addr) -> Response {
        if stream & HOME_STREAM != 0 {
            return Response::Errno(libc::EINVAL);
        }
        let fd = {
            let mut socks = self.socks();
            match socks.remove(&sock) {
                // Only a socket no thread uses: not a listening one.
                Some(HomeSock::Stream(fd)) if Arc::strong_count(&fd) == 1 => fd,
                Some(other) => {
                    socks.insert(sock, other);
                    return Response::Errno(libc::EINVAL);
                }
                None => return Response::Errno(libc::EBADF),
            }
        };
        let Some(opened) = self.streams.open(stream) else {
            self.socks().insert(sock, HomeSock::Stream(fd));
            return Response::Errno(libc::EAGAIN);
        };
        if let Err(e) = connect_within(fd.as_fd(), to, HOME_CONNECT_LIMIT) {
            self.socks().insert(sock, HomeSock::Stream(fd));
            return Response::Errno(e);
        }
        let local = match addr::local_of(fd.as_fd()) {
            Ok(Parsed::Addr(a)) => a,
            _ => Addr::Unix(Blob::default()),
        };
        match Arc::try_unwrap(fd) {
            Ok(fd) => {
                self.streams.run(opened, fd, &self.net, self.node);
                Response::Connected {
                    local,
                    peer: to.clone(),
                }
            }
            Err(_) => Response::Errno(libc::EBADF),
        }
    }

    /// Connects on central and starts the stream.
    fn connect(&self, stream: StreamId, to: &Addr) -> Response {
        if stream & HOME_STREAM != 0 {
            return Response::Errno(libc::EINVAL);
        }
        let Some(opened) = self.streams.open(stream) else {
            return Response::Errno(libc::EAGAIN);
        };
        let made = match to {
            Addr::Inet(a) => TcpStream::connect_timeout(a, HOME_CONNECT_LIMIT).and_then(|s| {
                let local = Addr::Inet(s.local_addr()?);
                Ok((local, OwnedFd::from(s)))
            }),
            Addr::Unix(p) => UnixStream::connect(unix_path(p)).map(|s| {
                let local = Addr::Unix(Blob::default());
                (local, OwnedFd::from(s))
            }),
        };
        match made {
            Ok((local, fd)) => {
                self.streams.run(opened, fd, &self.net, self.node);
                Response::Connected {
                    local,
                    peer: to.clone(),
                }
            }
            Err(e) => Response::Errno(io_errno(&e)),
        }
    }

    fn bind(&self, sock: SockId, kind: Kind, at: &Addr, reuse: bool) -> Result<Addr, i32> {
        if self.socks().len() >= MAX_SOCKETS {
            return Err(libc::EMFILE);
        }
        if self.socks().contains_key(&sock) {
            return Err(libc::EEXIST);
        }
        let family = match at {
            Addr::Inet(SocketAddr::V4(_)) => libc::AF_INET,
            Addr::Inet(SocketAddr::V6(_)) => libc::AF_INET6,
            Addr::Unix(_) if kind == Kind::Stream => libc::AF_UNIX,
            Addr::Unix(_) => return Err(libc::EOPNOTSUPP),
        };
        let ty = match kind {
            Kind::Stream => libc::SOCK_STREAM,
            Kind::Datagram => libc::SOCK_DGRAM,
        };
        let fd = addr::socket(family, ty)?;
        if reuse {
            addr::set_int_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        }
        addr::bind(fd.as_fd(), at)?;
        let local = match (addr::local_of(fd.as_fd()), at) {
            (_, Addr::Unix(p)) => Addr::Unix(p.clone()),
            (Ok(Parsed::Addr(a)), _) => a,
            _ => at.clone(),
        };
        let entry = match kind {
            Kind::Stream => HomeSock::Stream(Arc::new(fd)),
            Kind::Datagram => {
                let udp = Arc::new(UdpSocket::from(fd));
                let (me, u) = (self.clone(), udp.clone());
                std::thread::Builder::new()
                    .name(format!("home-udp-{sock}"))
                    .spawn(move || me.receive_datagrams(sock, &u))
                    .map_err(|_| libc::EAGAIN)?;
                HomeSock::Datagram(udp)
            }
        };
        self.socks().insert(sock, entry);
        Ok(local)
    }

    fn listen(&self, sock: SockId, backlog: i32) -> Result<(), i32> {
        let fd = match self.socks().get(&sock) {
            Some(HomeSock::Stream(fd)) => fd.clone(),
            Some(HomeSock::Datagram(_)) => return Err(libc::EOPNOTSUPP),
            None => return Err(libc::EBADF),
        };
        addr::listen(fd.as_fd(), backlog)?;
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("home-accept-{sock}"))
            .spawn(move || me.accept_loop(sock, &fd))
            .map_err(|_| libc::EAGAIN)?;
        Ok(())
    }

    /// Accepts on central and hands each connection to the node.
    fn accept_loop(&self, listener: SockId, fd: &OwnedFd) {
        loop {
            // SAFETY: accept4 on our listening socket; a non-negative
            // result is a new descriptor we own.
            let c = unsafe {
                libc::accept4(
                    fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EMFILE | libc::ENFILE) => {
                        continue
                    }
                    _ => {
                        log::debug!("accept on central: {e}");
                        return;
                    }
                }
            }
            // SAFETY: just returned by accept4.
            let conn = unsafe { OwnedFd::from_raw_fd(c) };
            let name = |p: Result<Parsed, i32>| match p {
                Ok(Parsed::Addr(a)) => a,
                _ => Addr::Unix(Blob::default()),
            };
            let peer = name(addr::peer_of(conn.as_fd()));
            let local = name(addr::local_of(conn.as_fd()));
            let stream = HOME_STREAM | self.next.fetch_add(1, Ordering::Relaxed);
            let Some(opened) = self.streams.open(stream) else {
                continue;
            };
            let msg = Request::Accepted {
                listener,
                stream,
                peer,
                local,
            };
            match ask::<Response>(&self.net, self.node, msg, NODE_TIMEOUT) {
                Ok(Response::Ok) => self.streams.run(opened, conn, &self.net, self.node),
                Ok(other) => log::debug!("the node did not take a connection: {other:?}"),
                Err(e) => {
                    log::debug!("the node did not take a connection: {e}");
                    if !self.socks().contains_key(&listener) {
                        return;
                    }
                }
            }
        }
    }

    fn send_datagram(&self, sock: SockId, peer: &Addr, data: &[u8]) -> Result<(), i32> {
        let udp = match self.socks().get(&sock) {
            Some(HomeSock::Datagram(u)) => u.clone(),
            _ => return Err(libc::EBADF),
        };
        let Addr::Inet(to) = peer else {
            return Err(libc::EAFNOSUPPORT);
        };
        udp.send_to(data, to).map(|_| ()).map_err(|e| io_errno(&e))
    }

    /// Central to node: what a job's datagram socket receives on central.
    fn receive_datagrams(&self, sock: SockId, udp: &UdpSocket) {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            let got = udp.recv_from(&mut buf);
            if !self.socks().contains_key(&sock) {
                return;
            }
            let (n, from) = match got {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ICMP errors of earlier sends (ECONNREFUSED) surface here.
                Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EBADF) => continue,
                Err(_) => return,
            };
            let msg = Request::Datagram {
                sock,
                peer: Addr::Inet(from),
                data: Blob(buf[..n].to_vec()),
            };
            if let Err(e) = ask::<Response>(&self.net, self.node, msg, NODE_TIMEOUT) {
                log::debug!("datagram to the node: {e}");
            }
        }
    }
}
