//! The node's relay of one job's network: loopback sockets in the job's
//! network namespace that the job's own sockets really talk to, and the
//! threads that move their traffic to and from the home over the job
//! session (see `docs/network.md`). The tracer's side (`super`) tells the
//! relay what the job asked for and points the job's sockets at it; the
//! relay keeps what both need to know: which job socket is which central
//! socket, and which relay address stands for which central address.
//!
//! Every relay socket is created by one thread that entered the job's
//! network namespace (`setns`), when the runner gives one: a socket stays in
//! the namespace it was made in, whichever thread uses it later.

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use dscp_dicp::msg::net::{Addr, Kind, Request, Response, SockId, StreamId};
use dscp_dicp::msg::Blob;
use dscp_dicp::Peer;

use crate::net::{ask, reply, Incoming, Net};
use crate::netrelay::addr::{self, Parsed};
use crate::netrelay::stream::{self, Opened, Streams};

/// How long the home may take for a connect on central (its own limit is
/// [`HOME_CONNECT_LIMIT`], then the session's slack).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(80);
/// The home gives up a connect on central after this long (`ETIMEDOUT`).
pub const HOME_CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// How long short requests (bind, listen, a datagram) may take.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay waits for the job's socket to reach a relay listener
/// once the tracer pointed it there.
const ACCEPT_WAIT: Duration = Duration::from_secs(30);
/// Largest datagram.
const DATAGRAM_MAX: usize = 65536;
/// Most datagram relays per job (one per job socket and central peer,
/// each a socket and a thread): a job's UDP server hearing from more
/// peers than this drops datagrams from the new ones.
pub const MAX_UDP_RELAYS: usize = 512;
/// Datagram sockets the job may bind between two looks at which of them
/// it has closed (`close` is not stopped: see
/// [`Relay::reap_datagram_sockets`]).
const UDP_REAP_EVERY: u32 = 64;
/// Sockets the relay knows before it looks for those the job closed (and
/// then again each time it knows twice as many as it kept): a long job's
/// connections would otherwise each leave an entry behind.
const SOCKS_SWEEP_AT: usize = 4096;

/// What the relay knows of one of the job's sockets (keyed by its inode,
/// which every descriptor of it shares across dup and fork).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSock {
    /// Its address family.
    pub family: i32,
    /// Stream or datagram.
    pub kind: Kind,
    /// The central socket standing for it (bound, listening, UDP).
    pub home: Option<SockId>,
    /// Its address as central shows it (`getsockname`).
    pub local: Option<Addr>,
    /// Its peer as central shows it (`getpeername`).
    pub peer: Option<Addr>,
    /// The node-side address its own socket is bound to (a datagram
    /// socket's, where relays send replies; a listener's, where relays
    /// connect), raw.
    pub node: Option<Vec<u8>>,
}

impl JobSock {
    /// A socket the relay has not seen bound or connected yet.
    pub fn new(family: i32, kind: Kind) -> JobSock {
        JobSock {
            family,
            kind,
            home: None,
            local: None,
            peer: None,
            node: None,
        }
    }
}

/// A job listening socket: where the relay connects for each connection
/// central accepted.
#[derive(Debug, Clone)]
struct Listening {
    family: i32,
    node: Vec<u8>,
    local: Addr,
}

struct UdpRelay {
    sock: Arc<UdpSocket>,
    addr: SocketAddr,
    /// Set when the job's socket is gone: tells its thread to stop.
    gone: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    socks: HashMap<u64, JobSock>,
    /// Relay-side node addresses and the central addresses they stand for
    /// (a datagram relay's address is its central peer; an accepted
    /// stream's connecting socket is the central client).
    names: HashMap<SocketAddr, Addr>,
    /// An accepted stream's connecting socket and the accepted central
    /// socket's own address.
    accepted_local: HashMap<SocketAddr, Addr>,
    /// Datagram relays by (central socket, central peer).
    udp: HashMap<(SockId, Addr), UdpRelay>,
    /// Where a central datagram socket's job socket is bound on the node.
    udp_owner: HashMap<SockId, (i32, SocketAddr)>,
    /// Datagram sockets bound since the last look for closed ones.
    udp_bound_since_reap: u32,
    /// How many sockets the relay may know before the next look for
    /// closed ones (0: [`SOCKS_SWEEP_AT`]).
    socks_sweep_at: usize,
    listeners: HashMap<SockId, Listening>,
}

/// What the socket-making thread is asked: a socket (family, type, where
/// to answer), or to move into the job's network namespace first.
enum MakeRequest {
    Socket(i32, i32, Sender<Result<OwnedFd, i32>>),
    EnterNetns(File),
}

/// One job's relay. Shared between the tracer thread and the session's
/// dispatch thread.
pub struct Relay {
    net: Net,
    home: Peer,
    label: String,
    maker: Sender<MakeRequest>,
    /// The socket maker's namespace and queue until its thread starts
    /// (see `start_maker`).
    idle_maker: Mutex<Option<(Option<File>, Receiver<MakeRequest>)>>,
    streams: Arc<Streams>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    /// A look for the job's closed datagram sockets is under way.
    reaping: AtomicBool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("home", &self.home)
            .field("label", &self.label)
            .finish()
    }
}

/// A connect under way: the home's answer, and where the job's socket
/// must connect on the node.
pub struct Connecting {
    /// Central's local and peer addresses, or central's errno.
    pub result: Receiver<Result<(Addr, Addr), i32>>,
    /// Where the tracer connects the job's socket (raw address).
    pub target: Vec<u8>,
    /// Tell the relay which node address the job's socket connects from
    /// (getsockname of it), or drop it when the job's connect failed.
    pub from: Sender<Vec<u8>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Relay {
    /// The relay of a job whose home is `home` on `net`. `netns`: the job's
    /// network namespace (an open `/proc/PID/ns/net`), where every relay
    /// socket is made; `None` uses the daemon's own. `label` makes the
    /// relay's abstract unix names unique on the node.
    pub fn new(
        net: Net,
        home: Peer,
        netns: Option<File>,
        label: String,
    ) -> std::io::Result<Arc<Relay>> {
        let (tx, rx) = crossbeam_channel::unbounded::<MakeRequest>();
        Ok(Arc::new(Relay {
            idle_maker: Mutex::new(Some((netns, rx))),
            net,
            home,
            label,
            maker: tx,
            streams: Streams::new(),
            next_id: AtomicU64::new(1),
            closed: Arc::new(AtomicBool::new(false)),
            reaping: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }))
    }

    fn socket(&self, family: i32, ty: i32) -> Result<OwnedFd, i32> {
        self.start_maker()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.maker
            .send(MakeRequest::Socket(family, ty, tx))
            .map_err(|_| libc::ENETDOWN)?;
        rx.recv().map_err(|_| libc::ENETDOWN)?
    }

    /// Starts the thread that makes the relay's sockets, at the first
    /// one: most jobs make none, and a thread less is a faster start.
    fn start_maker(&self) -> Result<(), i32> {
        let idle = self
            .idle_maker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((netns, rx)) = idle {
            std::thread::Builder::new()
                .name("net-maker".into())
                .spawn(move || make_sockets(netns, &rx))
                .map_err(|e| {
                    log::error!("cannot start the job's socket maker: {e}");
                    libc::ENETDOWN
                })?;
        }
        Ok(())
    }

    /// Makes every later relay socket in `netns` (the job's network
    /// namespace, which exists only once the job is spawned, after the
    /// relay). Call before the job can make a socket.
    pub fn enter_netns(&self, netns: File) {
        let _ = self.maker.send(MakeRequest::EnterNetns(netns));
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// What the relay knows of the job socket with inode `ino`.
    pub fn sock(&self, ino: u64) -> Option<JobSock> {
        lock(&self.state).socks.get(&ino).cloned()
    }

    /// Whether the relay knows so many sockets that it is time to forget
    /// those the job closed ([`Relay::forget_closed`]).
    pub fn sweep_due(&self) -> bool {
        let st = lock(&self.state);
        st.socks.len() >= st.socks_sweep_at.max(SOCKS_SWEEP_AT)
    }

    /// Forgets the job sockets not in `held` (the inodes the job's
    /// processes hold now).
    pub fn forget_closed(&self, held: &std::collections::HashSet<u64>) {
        let mut st = lock(&self.state);
        let before = st.socks.len();
        st.socks.retain(|ino, _| held.contains(ino));
        st.socks_sweep_at = (2 * st.socks.len()).max(SOCKS_SWEEP_AT);
        log::debug!(
            "job sockets: forgot {} closed, kept {}",
            before - st.socks.len(),
            st.socks.len()
        );
    }

    /// Records (or replaces) what is known of job socket `ino`.
    pub fn set_sock(&self, ino: u64, s: JobSock) {
        lock(&self.state).socks.insert(ino, s);
    }

    /// The central address a relay-side node address stands for.
    pub fn central_name(&self, node: &SocketAddr) -> Option<Addr> {
        lock(&self.state).names.get(node).cloned()
    }

    /// A loopback listener (or an abstract unix one) for a job socket of
    /// `family` to connect to, and its raw address.
    fn relay_listener(&self, family: i32) -> Result<(OwnedFd, Vec<u8>), i32> {
        let fd = self.socket(family, libc::SOCK_STREAM)?;
        let raw = if family == libc::AF_UNIX {
            let raw = addr::abstract_unix(format!("{}-l{}", self.label, self.id()).as_bytes());
            addr::bind_raw(fd.as_fd(), &raw)?;
            raw
        } else {
            addr::bind(fd.as_fd(), &Addr::Inet(addr::loopback(family)))?;
            match addr::local_of(fd.as_fd())? {
                Parsed::Addr(a) => addr::encode(&a),
                _ => return Err(libc::EAFNOSUPPORT),
            }
        };
        addr::listen(fd.as_fd(), 4)?;
        Ok((fd, raw))
    }

    /// Starts a stream connect to `to` on central for job socket `ino` of
    /// `family` (from central socket `from` when the job bound it): the
    /// home connects on a thread of the relay while the tracer waits
    /// (bounded) for the answer.
    pub fn connect(
        self: &Arc<Self>,
        ino: u64,
        family: i32,
        from: Option<SockId>,
        to: Addr,
    ) -> Result<Connecting, i32> {
        let (listener, target) = self.relay_listener(family)?;
        let id = self.id();
        let opened = self.streams.open(id).ok_or(libc::EAGAIN)?;
        let (res_tx, res_rx) = crossbeam_channel::bounded(1);
        let (from_tx, from_rx) = crossbeam_channel::bounded(1);
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("net-connect-{id}"))
            .spawn(move || {
                me.finish_connect(ino, family, (from, to), opened, listener, &res_tx, &from_rx);
            })
            .map_err(|_| libc::EAGAIN)?;
        Ok(Connecting {
            result: res_rx,
            target,
            from: from_tx,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_connect(
        &self,
        ino: u64,
        family: i32,
        (bound, to): (Option<SockId>, Addr),
        opened: Opened,
        listener: OwnedFd,
        result: &Sender<Result<(Addr, Addr), i32>>,
        from: &Receiver<Vec<u8>>,
    ) {
        let stream = opened.id();
        let msg = match bound {
            Some(sock) => Request::ConnectFrom {
                stream,
                sock,
                to: to.clone(),
            },
            None => Request::Connect {
                stream,
                to: to.clone(),
            },
        };
        let asked = ask::<Response>(&self.net, self.home, msg, CONNECT_TIMEOUT);
        let res = match asked {
            Ok(Response::Connected { local, peer }) => Ok((
                addr::for_family(&local, family),
                addr::for_family(&peer, family),
            )),
            Ok(Response::Errno(e)) => Err(e),
            Ok(_) => Err(libc::EPROTO),
            Err(e) => {
                log::info!("connect to {to:?} through the home: {e}");
                Err(libc::ENETUNREACH)
            }
        };
        if let Ok((local, _)) = &res {
            if let Some(s) = lock(&self.state).socks.get_mut(&ino) {
                s.local.get_or_insert_with(|| local.clone());
            }
        }
        let _ = result.send(res.clone());
        if res.is_err() {
            // A job socket that connected meanwhile (the tracer stopped
            // waiting) sees the listener close: a reset.
            return;
        }
        let Ok(expected) = from.recv_timeout(ACCEPT_WAIT) else {
            self.reset(stream);
            return;
        };
        match accept_expected(&listener, family, &expected) {
            Some(sock) => self.streams.run(opened, sock, &self.net, self.home),
            None => self.reset(stream),
        }
    }

    fn reset(&self, stream: StreamId) {
        let _ = ask::<Response>(
            &self.net,
            self.home,
            Request::Reset { stream },
            SHORT_TIMEOUT,
        );
    }

    /// Binds a central socket of `kind` at `at`; its id and central's
    /// address, or central's errno.
    pub fn bind_home(
        &self,
        kind: Kind,
        family: i32,
        at: Addr,
        reuse_addr: bool,
    ) -> Result<(SockId, Addr), i32> {
        let sock = self.id();
        let msg = Request::Bind {
            sock,
            kind,
            addr: at,
            reuse_addr,
        };
        match ask::<Response>(&self.net, self.home, msg, SHORT_TIMEOUT) {
            Ok(Response::Bound { local }) => Ok((sock, addr::for_family(&local, family))),
            Ok(Response::Errno(e)) => Err(e),
            Ok(_) => Err(libc::EPROTO),
            Err(e) => {
                log::info!("bind through the home: {e}");
                Err(libc::ENETDOWN)
            }
        }
    }

    /// The raw node address the job's socket of `family` binds to in place
    /// of its central address.
    pub fn node_bind_address(&self, family: i32) -> Vec<u8> {
        if family == libc::AF_UNIX {
            addr::abstract_unix(format!("{}-b{}", self.label, self.id()).as_bytes())
        } else {
            addr::encode(&Addr::Inet(addr::loopback(family)))
        }
    }

    /// Listens on central socket `sock`; connections accepted there are
    /// relayed to the job's socket bound at `node` (raw) on the node.
    pub fn listen_home(
        &self,
        sock: SockId,
        family: i32,
        node: Vec<u8>,
        local: Addr,
        backlog: i32,
    ) -> Result<(), i32> {
        lock(&self.state).listeners.insert(
            sock,
            Listening {
                family,
                node,
                local,
            },
        );
        let msg = Request::Listen { sock, backlog };
        let res = match ask::<Response>(&self.net, self.home, msg, SHORT_TIMEOUT) {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::Errno(e)) => Err(e),
            Ok(_) => Err(libc::EPROTO),
            Err(_) => Err(libc::ENETDOWN),
        };
        if res.is_err() {
            lock(&self.state).listeners.remove(&sock);
        }
        res
    }

    /// Records where the job's datagram socket for central socket `sock`
    /// is bound on the node (where relays send what central receives).
    /// Every [`UDP_REAP_EVERY`] of them, a thread looks for those the job
    /// has closed (a resolver makes a socket per lookup).
    pub fn set_udp_owner(self: &Arc<Self>, sock: SockId, family: i32, node: SocketAddr) {
        let due = {
            let mut st = lock(&self.state);
            st.udp_owner.insert(sock, (family, node));
            st.udp_bound_since_reap += 1;
            st.udp_bound_since_reap >= UDP_REAP_EVERY
        };
        if due && !self.reaping.swap(true, Ordering::SeqCst) {
            lock(&self.state).udp_bound_since_reap = 0;
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("net-reap".into())
                .spawn(move || {
                    me.reap_datagram_sockets();
                    me.reaping.store(false, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.reaping.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Releases what stands for the datagram sockets the job has closed
    /// (its socket's node address is free again): the central socket, the
    /// relays to its peers and their threads. How many were closed.
    pub fn reap_datagram_sockets(&self) -> usize {
        let owners: Vec<(SockId, i32, SocketAddr)> = lock(&self.state)
            .udp_owner
            .iter()
            .map(|(sock, (family, at))| (*sock, *family, *at))
            .collect();
        let mut reaped = 0;
        for (sock, family, at) in owners {
            let raw = addr::encode(&Addr::Inet(at));
            if !self.address_free(family, libc::SOCK_DGRAM, &raw, false) {
                continue;
            }
            let relays: Vec<UdpRelay> = {
                let mut st = lock(&self.state);
                st.udp_owner.remove(&sock);
                st.socks.retain(|_, s| s.home != Some(sock));
                let keys: Vec<(SockId, Addr)> =
                    st.udp.keys().filter(|k| k.0 == sock).cloned().collect();
                let relays: Vec<UdpRelay> = keys.iter().filter_map(|k| st.udp.remove(k)).collect();
                for r in &relays {
                    st.names.remove(&r.addr);
                }
                relays
            };
            for r in relays {
                r.gone.store(true, Ordering::SeqCst);
                stream::shutdown_raw(r.sock.as_raw_fd(), libc::SHUT_RDWR);
            }
            self.release(sock);
            reaped += 1;
        }
        reaped
    }

    /// The node address of the datagram relay for (`sock`, `peer`),
    /// made on first use: the job sends to it instead of `peer`, and
    /// datagrams from `peer` reach the job from it.
    pub fn udp_relay(self: &Arc<Self>, sock: SockId, peer: &Addr) -> Result<SocketAddr, i32> {
        let key = (sock, peer.clone());
        if let Some(r) = lock(&self.state).udp.get(&key) {
            return Ok(r.addr);
        }
        if lock(&self.state).udp.len() >= MAX_UDP_RELAYS
            && (self.reap_datagram_sockets() == 0 || lock(&self.state).udp.len() >= MAX_UDP_RELAYS)
        {
            return Err(libc::ENOBUFS);
        }
        let (family, owner) = lock(&self.state)
            .udp_owner
            .get(&sock)
            .copied()
            .ok_or(libc::EINVAL)?;
        let fd = self.socket(family, libc::SOCK_DGRAM)?;
        addr::bind(fd.as_fd(), &Addr::Inet(addr::loopback(family)))?;
        let udp = Arc::new(UdpSocket::from(fd));
        let at = udp
            .local_addr()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let gone = Arc::new(AtomicBool::new(false));
        {
            let mut st = lock(&self.state);
            if let Some(r) = st.udp.get(&key) {
                return Ok(r.addr); // made meanwhile by the other thread
            }
            st.names.insert(at, peer.clone());
            st.udp.insert(
                key,
                UdpRelay {
                    sock: udp.clone(),
                    addr: at,
                    gone: gone.clone(),
                },
            );
        }
        let me = self.clone();
        let peer = peer.clone();
        std::thread::Builder::new()
            .name(format!("net-udp-{sock}"))
            .spawn(move || me.pump_datagrams(&udp, sock, &peer, owner, &gone))
            .map_err(|_| libc::EAGAIN)?;
        Ok(at)
    }

    /// Job to central: what the job's socket (at `owner`) sends to this
    /// relay goes out from central socket `sock` to `peer`, until the job
    /// ends or its socket is `gone`.
    fn pump_datagrams(
        &self,
        udp: &UdpSocket,
        sock: SockId,
        peer: &Addr,
        owner: SocketAddr,
        gone: &AtomicBool,
    ) {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            let got = udp.recv_from(&mut buf);
            if self.closed.load(Ordering::Relaxed) || gone.load(Ordering::SeqCst) {
                return;
            }
            let (n, from) = match got {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("datagram relay: {e}");
                    return;
                }
            };
            if from != owner {
                log::debug!("datagram relay: dropped a datagram from {from}");
                continue;
            }
            let msg = Request::Datagram {
                sock,
                peer: peer.clone(),
                data: Blob(buf[..n].to_vec()),
            };
            if let Err(e) = ask::<Response>(&self.net, self.home, msg, SHORT_TIMEOUT) {
                log::debug!("datagram to the home: {e}");
            }
        }
    }

    /// Serves the home's socket requests (from the session's dispatch
    /// thread; nothing here blocks for long).
    pub fn handle(self: &Arc<Self>, req: Incoming, msg: Request) {
        match msg {
            Request::Data { .. } | Request::Reset { .. } => self.streams.deliver(req, msg),
            Request::Accepted {
                listener,
                stream,
                peer,
                local,
            } => {
                let me = self.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("net-accepted-{stream:x}"))
                    .spawn(move || {
                        let answer = match me.accepted(listener, stream, peer, local) {
                            Ok(()) => Response::Ok,
                            Err(e) => Response::Errno(e),
                        };
                        reply(req, answer);
                    });
                if let Err(e) = spawned {
                    log::warn!("no thread for an accepted connection: {e}");
                }
            }
            Request::Datagram { sock, peer, data } => {
                let answer = match self.deliver_datagram(sock, &peer, &data) {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::Errno(e),
                };
                reply(req, answer);
            }
            _ => reply(req, Response::Errno(libc::EINVAL)),
        }
    }

    /// Central accepted a connection on `listener`: connect to the job's
    /// listening socket and pump.
    fn accepted(
        &self,
        listener: SockId,
        stream: StreamId,
        peer: Addr,
        local: Addr,
    ) -> Result<(), i32> {
        let target = lock(&self.state)
            .listeners
            .get(&listener)
            .cloned()
            .ok_or(libc::ECONNREFUSED)?;
        let opened = self.streams.open(stream).ok_or(libc::EAGAIN)?;
        let fd = self.socket(target.family, libc::SOCK_STREAM)?;
        // The job may accept the moment the connect completes, and its
        // accept's exit looks up these names: so bind first and record
        // them before connecting.
        let from = if target.family == libc::AF_UNIX {
            None
        } else {
            addr::bind(fd.as_fd(), &Addr::Inet(addr::loopback(target.family)))?;
            match addr::local_of(fd.as_fd()) {
                Ok(Parsed::Addr(Addr::Inet(from))) => Some(from),
                _ => return Err(libc::EADDRNOTAVAIL),
            }
        };
        if let Some(from) = from {
            let mut st = lock(&self.state);
            st.names
                .insert(from, addr::for_family(&peer, target.family));
            st.accepted_local
                .insert(from, addr::for_family(&local, target.family));
        }
        if let Err(e) = addr::connect_raw(fd.as_fd(), &target.node) {
            if let Some(from) = from {
                let mut st = lock(&self.state);
                st.names.remove(&from);
                st.accepted_local.remove(&from);
            }
            if e == libc::ECONNREFUSED {
                // The job closed its listening socket: close central's.
                self.reap_listeners();
            }
            return Err(e);
        }
        self.streams.run(opened, fd, &self.net, self.home);
        Ok(())
    }

    /// Whether no socket of the job is bound at `node` any more: a probe
    /// bind to it succeeds. The tracer does not stop `close`, so this is
    /// how the relay learns that the job closed a socket. A listening
    /// socket's probe sets `SO_REUSEADDR` (so connections in TIME_WAIT do
    /// not count; a listening socket still refuses it); a datagram
    /// socket's does not (the job's socket refuses it even with the option
    /// set).
    fn address_free(&self, family: i32, ty: i32, node: &[u8], reuse_addr: bool) -> bool {
        let Ok(probe) = self.socket(family, ty) else {
            return false;
        };
        if reuse_addr {
            let _ = addr::set_int_option(probe.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        }
        addr::bind_raw(probe.as_fd(), node).is_ok()
    }

    /// Has the home close central socket `sock` (the job closed its own).
    fn release(&self, sock: SockId) {
        let _ = ask::<Response>(
            &self.net,
            self.home,
            Request::Release { sock },
            SHORT_TIMEOUT,
        );
    }

    /// Closes on central the listening sockets the job closed on the node
    /// (so that their ports are free again). Whether any was.
    pub fn reap_listeners(&self) -> bool {
        let all: Vec<(SockId, Listening)> = lock(&self.state)
            .listeners
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut reaped = false;
        for (sock, l) in all {
            if self.address_free(l.family, libc::SOCK_STREAM, &l.node, true) {
                lock(&self.state).listeners.remove(&sock);
                self.release(sock);
                reaped = true;
            }
        }
        reaped
    }

    /// Closes on central what stands for the job's stream sockets that it
    /// closed on the node while they were only bound (listening, or bound
    /// for a connect that failed), so their addresses are free again.
    /// Whether any was.
    pub fn reap_closed_binds(&self) -> bool {
        let listeners = self.reap_listeners();
        let bound: Vec<(u64, SockId, i32, Vec<u8>)> = {
            let st = lock(&self.state);
            st.socks
                .iter()
                .filter(|(_, s)| s.kind == Kind::Stream && s.peer.is_none())
                .filter_map(|(ino, s)| Some((*ino, s.home?, s.family, s.node.clone()?)))
                .filter(|(_, sock, _, _)| !st.listeners.contains_key(sock))
                .collect()
        };
        let mut reaped = false;
        for (ino, sock, family, node) in bound {
            // No SO_REUSEADDR: the job's bound socket refuses the probe
            // whatever its options.
            if self.address_free(family, libc::SOCK_STREAM, &node, false) {
                lock(&self.state).socks.remove(&ino);
                self.release(sock);
                reaped = true;
            }
        }
        listeners || reaped
    }

    /// The central local address of the connection a relay socket at
    /// `node` carries (else that of listener `sock`), for a socket the job
    /// accepted.
    pub fn accepted_local(&self, node: Option<&SocketAddr>, sock: Option<SockId>) -> Option<Addr> {
        let st = lock(&self.state);
        node.and_then(|n| st.accepted_local.get(n).cloned())
            .or_else(|| {
                sock.and_then(|s| st.listeners.get(&s))
                    .map(|l| l.local.clone())
            })
    }

    fn deliver_datagram(
        self: &Arc<Self>,
        sock: SockId,
        peer: &Addr,
        data: &[u8],
    ) -> Result<(), i32> {
        let at = self.udp_relay(sock, peer)?;
        let (relay, owner) = {
            let st = lock(&self.state);
            let relay = st.udp.get(&(sock, peer.clone())).map(|r| r.sock.clone());
            let owner = st.udp_owner.get(&sock).map(|o| o.1);
            (relay, owner)
        };
        let (Some(relay), Some(owner)) = (relay, owner) else {
            return Err(libc::EINVAL);
        };
        debug_assert_eq!(relay.local_addr().ok(), Some(at));
        relay
            .send_to(data, owner)
            .map(|_| ())
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The job's processes are gone: waits (at most `limit`) until what
    /// they wrote to their streams has reached central, so that the home,
    /// which exits when it hears of the job's end, does not cut it off.
    pub fn drain(&self, limit: Duration) {
        if !self.streams.drain(limit) {
            log::info!("job streams still sending after {limit:?}");
        }
    }

    /// The job is over: stop every relay thread.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let st = lock(&self.state);
        for r in st.udp.values() {
            stream::shutdown_raw(r.sock.as_raw_fd(), libc::SHUT_RDWR);
        }
        drop(st);
        self.streams.close_all();
    }
}

/// Accepts on `listener` the one connection from the job's socket (whose
/// node address is `expected`), refusing any other: without a network
/// namespace of its own, other programs on the node could reach the
/// relay's loopback listener.
fn accept_expected(listener: &OwnedFd, family: i32, expected: &[u8]) -> Option<OwnedFd> {
    let deadline = Instant::now() + ACCEPT_WAIT;
    let want = addr::parse(expected);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::info!("the job's socket never reached its relay");
            return None;
        }
        let mut pfd = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return None,
        }
        // SAFETY: accept4 on a listening socket we own; a non-negative
        // result is a new descriptor we own.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: just returned by accept4.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let ok = if family == libc::AF_UNIX {
            // The tracer made the job's socket connect: its pid is ours.
            addr::peer_pid(sock.as_fd()) == Ok(std::process::id() as i32)
        } else {
            addr::peer_of(sock.as_fd()).ok() == want
        };
        if ok {
            return Some(sock);
        }
        log::warn!("the job's relay refused a connection from another socket");
    }
}

/// The socket-making thread: enters `netns` once, then makes sockets.
fn make_sockets(netns: Option<File>, rx: &Receiver<MakeRequest>) {
    let mut failed = None;
    let enter =
        |ns: &File| match nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
            Ok(()) => None,
            Err(e) => {
                log::error!("cannot enter the job's network namespace: {e}");
                Some(libc::ENETDOWN)
            }
        };
    if let Some(ns) = netns {
        failed = enter(&ns);
    }
    for msg in rx {
        match msg {
            MakeRequest::EnterNetns(ns) => failed = failed.or(enter(&ns)),
            MakeRequest::Socket(family, ty, back) => {
                let made = match failed {
                    Some(e) => Err(e),
                    None => addr::socket(family, ty),
                };
                let _ = back.send(made);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_relay_listener_takes_only_the_expected_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let listener = OwnedFd::from(l);
        // A stranger connects first, then the job's socket.
        let stranger = TcpStream::connect(at).unwrap();
        let job = TcpStream::connect(at).unwrap();
        let expected = addr::encode(&Addr::Inet(job.local_addr().unwrap()));
        let got = accept_expected(&listener, libc::AF_INET, &expected).unwrap();
        assert_eq!(
            inet_peer(&got),
            Some(job.local_addr().unwrap()),
            "the accepted connection is the job's"
        );
        // The stranger's connection was closed by the relay.
        let mut b = [0u8; 1];
        let mut s = stranger;
        assert!(matches!(
            std::io::Read::read(&mut s, &mut b),
            Ok(0) | Err(_)
        ));
    }

    fn inet_peer(fd: &OwnedFd) -> Option<SocketAddr> {
        match addr::peer_of(fd.as_fd()) {
            Ok(Parsed::Addr(Addr::Inet(a))) => Some(a),
            _ => None,
        }
    }
}
