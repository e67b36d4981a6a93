//! A thin UDP driver: owns a socket, a thread that feeds the [`Endpoint`]
//! with datagrams and a real clock, and hands out a cheap cloneable
//! [`Handle`] for blocking calls, concurrent (streaming) calls, incoming
//! requests and lost peers.
//!
//! Threads: callers lock the endpoint briefly to queue a request or a
//! response and send the resulting datagrams themselves, so a call costs no
//! thread hand-off on the way out; the driver thread blocks in `ppoll` on
//! the socket and an eventfd, receives, handles timers and routes events
//! (responses to the waiting caller, requests to the incoming channel). A
//! caller wakes the driver (eventfd) only when its request needs a timer
//! earlier than the one the driver sleeps on.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rand::RngCore;

use crate::endpoint::{Config, Endpoint, Event, FailReason, Peer, RequestId, Sink};
use crate::error::{CodecError, DriverError, EndpointError};
use crate::key::{Key, KeyId};
use crate::msg::{Request, Response};
use crate::stats::{DropStats, Stats};
use crate::Keyring;

/// Driver settings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The protocol core's settings.
    pub endpoint: Config,
    /// Socket receive buffer to ask for (SO_RCVBUFFORCE when privileged,
    /// else SO_RCVBUF, which the kernel caps at net.core.rmem_max). Bulk
    /// transfers need room for a congestion window's worth of datagrams.
    pub recv_buffer: usize,
    /// Socket send buffer to ask for.
    pub send_buffer: usize,
    /// Longest the driver sleeps without checking timers (a safety net; it
    /// is woken for anything earlier).
    pub max_sleep: Duration,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            endpoint: Config::default(),
            recv_buffer: 8 << 20,
            send_buffer: 4 << 20,
            max_sleep: Duration::from_millis(200),
        }
    }
}

type Reply = Result<Answer, DriverError>;

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The whole response.
    Whole(Vec<u8>),
    /// The head of a response whose other bytes went to the call's sink
    /// ([`Handle::start_into`]).
    Sunk(Vec<u8>),
}

impl Answer {
    /// The bytes delivered: the whole response, or a sunk one's head.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Answer::Whole(b) | Answer::Sunk(b) => b,
        }
    }
}

struct Waiter {
    tx: Sender<Reply>,
    /// The eventfd of a thread pumping the socket while it waits.
    wake: Option<RawFd>,
}

struct State {
    ep: Endpoint,
    waiters: HashMap<RequestId, Waiter>,
    /// Eventfds of threads pumping the socket while waiting for a request.
    incoming_wakers: Vec<RawFd>,
    rx_buf: Vec<u8>,
}

struct Shared {
    state: Mutex<State>,
    socket: UdpSocket,
    wake: OwnedFd,
    shutdown: AtomicBool,
    /// When the driver thread will wake on its own (ns since `base`).
    sleeping_until: AtomicU64,
    /// Threads currently receiving from the socket themselves while they
    /// wait; while there are any, the driver thread leaves the socket to
    /// them (two threads woken per datagram would fight over the lock).
    pumpers: AtomicUsize,
    base: Instant,
    stats: Stats,
    incoming: Sender<Incoming>,
    incoming_rx: Receiver<Incoming>,
    lost: Sender<Peer>,
}

/// Owns the driver thread; dropping it stops the thread (handles then fail
/// with [`DriverError::Closed`]). Dereferences to its [`Handle`].
pub struct Driver {
    handle: Handle,
    incoming: Receiver<Incoming>,
    lost: Receiver<Peer>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable handle to a driver.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// A request from a peer, to answer exactly once with [`Incoming::respond`]
/// (dropping it without answering leaves the peer waiting until its own
/// deadline).
pub struct Incoming {
    /// Who asked, under which key.
    pub peer: Peer,
    /// The peer's request id.
    pub id: u64,
    /// The request payload.
    pub payload: Vec<u8>,
    shared: Arc<Shared>,
}

/// A call in flight; [`PendingCall::wait`] for its answer. Dropping it
/// cancels the call (the peer may still execute it, at most once).
pub struct PendingCall {
    id: RequestId,
    rx: Receiver<Reply>,
    shared: Arc<Shared>,
    done: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}
impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}
impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.peer)
            .field("id", &self.id)
            .field("len", &self.payload.len())
            .finish()
    }
}
impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall").field("id", &self.id).finish()
    }
}

impl Driver {
    /// Binds a new UDP socket at `addr` and starts the driver.
    pub fn bind(addr: impl ToSocketAddrs, keys: Keyring, cfg: DriverConfig) -> io::Result<Driver> {
        Driver::from_socket(UdpSocket::bind(addr)?, keys, cfg)
    }

    /// Starts the driver on an existing socket (bound, possibly connected:
    /// central hands a job's home a socket on port 12036 connected to the
    /// node).
    pub fn from_socket(socket: UdpSocket, keys: Keyring, cfg: DriverConfig) -> io::Result<Driver> {
        socket.set_nonblocking(true)?;
        set_buffer(
            &socket,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            cfg.recv_buffer,
        );
        set_buffer(
            &socket,
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            cfg.send_buffer,
        );
        let wake = new_eventfd()?;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let ep = Endpoint::new(cfg.endpoint.clone(), keys, seed);
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        let (lost_tx, lost_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            stats: ep.stats(),
            state: Mutex::new(State {
                ep,
                waiters: HashMap::new(),
                incoming_wakers: Vec::new(),
                rx_buf: vec![0; 65_536],
            }),
            socket,
            wake,
            shutdown: AtomicBool::new(false),
            sleeping_until: AtomicU64::new(0),
            pumpers: AtomicUsize::new(0),
            base: Instant::now(),
            incoming: in_tx,
            incoming_rx: in_rx.clone(),
            lost: lost_tx,
        });
        let s = Arc::clone(&shared);
        let max_sleep = cfg.max_sleep;
        let thread = std::thread::Builder::new()
            .name("dscp-dicp-driver".into())
            .spawn(move || run(&s, max_sleep))?;
        Ok(Driver {
            handle: Handle { shared },
            incoming: in_rx,
            lost: lost_rx,
            thread: Some(thread),
        })
    }

    /// A cloneable handle.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Requests from peers, in arrival order.
    pub fn incoming(&self) -> &Receiver<Incoming> {
        &self.incoming
    }

    /// Peers that went silent past the idle timeout (watched ones, or ones
    /// we were waiting on) or restarted.
    pub fn lost(&self) -> &Receiver<Peer> {
        &self.lost
    }
}

impl std::ops::Deref for Driver {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.handle.shared.shutdown.store(true, Ordering::SeqCst);
        self.handle.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Unanswered requests hold the shared state alive (and with it the
        // socket): drop them.
        while self.handle.shared.incoming_rx.try_recv().is_ok() {}
        // Fail whoever still waits.
        let mut st = self.handle.shared.lock();
        for (_, w) in st.waiters.drain() {
            let _ = w.tx.send(Err(DriverError::Closed));
        }
    }
}

impl Handle {
    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// Starts a call; any number may be in flight at once.
    pub fn start(&self, peer: Peer, payload: Vec<u8>) -> Result<PendingCall, DriverError> {
        self.start_with(peer, payload, None)
    }

    /// Starts a call whose response goes to `sink` as it arrives when it
    /// has the sink's length (see [`Sink`]); collect it with
    /// [`PendingCall::wait_answer`].
    pub fn start_into(
        &self,
        peer: Peer,
        payload: Vec<u8>,
        sink: Sink,
    ) -> Result<PendingCall, DriverError> {
        self.start_with(peer, payload, Some(sink))
    }

    fn start_with(
        &self,
        peer: Peer,
        payload: Vec<u8>,
        sink: Option<Sink>,
    ) -> Result<PendingCall, DriverError> {
        if self.shared.shutdown.load(Ordering::SeqCst) {
            return Err(DriverError::Closed);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = self.shared.with_endpoint(|st, now| {
            let id = match sink {
                Some(sink) => st.ep.send_request_into(now, peer, payload, sink)?,
                None => st.ep.send_request(now, peer, payload)?,
            };
            st.waiters.insert(id, Waiter { tx, wake: None });
            Ok::<_, EndpointError>(id)
        })?;
        Ok(PendingCall {
            id,
            rx,
            shared: Arc::clone(&self.shared),
            done: false,
        })
    }

    /// A blocking call with raw payloads: the answer, or why there is none
    /// within `timeout`.
    pub fn call(
        &self,
        peer: Peer,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, DriverError> {
        self.start(peer, payload)?.wait(timeout)
    }

    /// A blocking typed call.
    pub fn request(
        &self,
        peer: Peer,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, DriverError> {
        let answer = self.call(peer, req.encode()?, timeout)?;
        Ok(Response::decode(&answer)?)
    }

    /// Whether the driver has shut down (its [`Driver`] was dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.shutdown.load(Ordering::SeqCst)
    }

    /// The next request from a peer, waiting up to `timeout`. Like
    /// [`Driver::incoming`], but the calling thread receives from the
    /// socket itself while it waits, which saves a thread hand-off per
    /// request on the serving side.
    pub fn next_incoming(&self, timeout: Duration) -> Option<Incoming> {
        let deadline = Instant::now() + timeout;
        let Some(efd) = thread_waker() else {
            return self.shared.incoming_rx.recv_timeout(timeout).ok();
        };
        self.shared.lock().incoming_wakers.push(efd);
        let pumping = Pumping::new(&self.shared);
        let got = loop {
            if let Ok(inc) = self.shared.incoming_rx.try_recv() {
                break Some(inc);
            }
            if Instant::now() >= deadline || self.shared.shutdown.load(Ordering::SeqCst) {
                break None;
            }
            let rx = &self.shared.incoming_rx;
            self.shared.pump(efd, None, deadline, &|| !rx.is_empty());
        };
        drop(pumping);
        self.shared.lock().incoming_wakers.retain(|fd| *fd != efd);
        got
    }

    /// Watches a peer: keep it alive with pings while idle and report it on
    /// [`Driver::lost`] when it goes silent.
    pub fn watch(&self, peer: Peer) -> Result<(), DriverError> {
        self.keepalive(peer, true)
    }

    /// Stops watching a peer.
    pub fn unwatch(&self, peer: Peer) -> Result<(), DriverError> {
        self.keepalive(peer, false)
    }

    fn keepalive(&self, peer: Peer, on: bool) -> Result<(), DriverError> {
        Ok(self
            .shared
            .with_endpoint(|st, now| st.ep.set_keepalive(now, peer, on))?)
    }

    /// Forgets a peer; its outstanding calls fail with [`DriverError::Closed`].
    pub fn close(&self, peer: Peer) {
        self.shared.with_endpoint(|st, _| st.ep.close(peer));
    }

    /// Adds or replaces a key (a job's session key).
    pub fn add_key(&self, id: KeyId, key: &Key) {
        self.shared.with_endpoint(|st, _| st.ep.add_key(id, key));
    }

    /// Removes a key and closes its connections.
    pub fn remove_key(&self, id: KeyId) {
        self.shared.with_endpoint(|st, _| st.ep.remove_key(id));
    }

    /// Hands back a received payload the caller is done with, so that a
    /// later big message is reassembled in it (see
    /// [`Config::recycle_limit`](crate::endpoint::Config::recycle_limit)).
    pub fn recycle(&self, payload: Vec<u8>) {
        if payload.len() >= crate::endpoint::RECYCLE_MIN {
            self.shared.lock().ep.recycle(payload);
        }
    }

    /// Dropped-datagram counters, by reason.
    pub fn dropped(&self) -> DropStats {
        self.shared.stats.snapshot()
    }

    /// The live counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.clone()
    }
}

impl PendingCall {
    /// Waits up to `timeout` for the answer; on timeout the call is
    /// cancelled. While waiting, the calling thread receives from the
    /// socket itself (alongside the driver thread), so an answer costs no
    /// thread hand-off.
    pub fn wait(self, timeout: Duration) -> Result<Vec<u8>, DriverError> {
        self.wait_answer(timeout).map(Answer::into_bytes)
    }

    /// [`PendingCall::wait`], telling a whole answer from a sunk one's
    /// head (calls started with [`Handle::start_into`]).
    pub fn wait_answer(mut self, timeout: Duration) -> Result<Answer, DriverError> {
        let res = self
            .wait_inner(timeout, None)
            .unwrap_or(Err(DriverError::Timeout));
        self.done = !matches!(res, Err(DriverError::Timeout));
        res
    }

    /// [`PendingCall::wait`] that also returns, with `None`, as soon as
    /// `other` is readable (a signalfd: a caller that must give up on a
    /// call when the user interrupts it). The call then stays in flight;
    /// wait for it again or drop it. `other` is watched in the same poll
    /// as the socket: no thread and no extra wake-up per answer. On
    /// timeout the call is cancelled, as with `wait`.
    pub fn wait_or_readable(
        &mut self,
        timeout: Duration,
        other: BorrowedFd<'_>,
    ) -> Option<Result<Vec<u8>, DriverError>> {
        let res = self.wait_inner(timeout, Some(other.as_raw_fd()))?;
        self.done = true;
        if matches!(res, Err(DriverError::Timeout)) {
            self.cancel();
        }
        Some(res.map(Answer::into_bytes))
    }

    /// The wait of [`PendingCall::wait_answer`]; `None` when `other`
    /// became readable first.
    fn wait_inner(&self, timeout: Duration, other: Option<RawFd>) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        let efd = thread_waker();
        if let Some(fd) = efd {
            if let Some(w) = self.shared.lock().waiters.get_mut(&self.id) {
                w.wake = Some(fd);
            }
        }
        let pumping = efd.map(|_| Pumping::new(&self.shared));
        let res = loop {
            match self.rx.try_recv() {
                Ok(r) => break r,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    break Err(DriverError::Closed)
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                break Err(DriverError::Timeout);
            }
            match efd {
                Some(fd) => {
                    if self
                        .shared
                        .pump(fd, other, deadline, &|| !self.rx.is_empty())
                    {
                        return None;
                    }
                }
                None => {
                    // No eventfd for this thread (descriptors exhausted):
                    // the channel alone, with `other` looked at between
                    // slices of the wait.
                    if other.is_some_and(|fd| {
                        poll_fds(&[(fd, libc::POLLIN)], Some(Duration::ZERO))[0] != 0
                    }) {
                        return None;
                    }
                    let mut left = deadline.saturating_duration_since(Instant::now());
                    if other.is_some() {
                        left = left.min(Duration::from_millis(50));
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(r) => break r,
                        Err(_) => continue,
                    }
                }
            }
        };
        drop(pumping);
        Some(res)
    }

    /// Forgets the call on the endpoint (its answer, if it comes, is dropped).
    fn cancel(&self) {
        let id = self.id;
        self.shared.with_endpoint(|st, _| {
            st.waiters.remove(&id);
            st.ep.cancel(id);
        });
    }

    /// The answer if it has arrived (does not block).
    pub fn try_wait(&mut self) -> Option<Result<Vec<u8>, DriverError>> {
        let r = self.rx.try_recv().ok()?;
        self.done = true;
        Some(r.map(Answer::into_bytes))
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.done {
            self.cancel();
        }
    }
}

impl Incoming {
    /// Decodes the payload as a typed request.
    pub fn request(&self) -> Result<Request, CodecError> {
        Request::decode(&self.payload)
    }

    /// Answers with raw bytes.
    pub fn respond(self, payload: Vec<u8>) -> Result<(), DriverError> {
        let (peer, id) = (self.peer, self.id);
        Ok(self
            .shared
            .with_endpoint(|st, now| st.ep.respond(now, peer, id, payload))?)
    }

    /// Answers with a typed response.
    pub fn reply(self, resp: &Response) -> Result<(), DriverError> {
        let bytes = resp.encode()?;
        self.respond(bytes)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for
        // shutting down; do not propagate poison.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the endpoint, then sends what it queued and routes
    /// events; wakes the driver thread if it now needs to wake earlier.
    fn with_endpoint<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut st = self.lock();
        let now = Instant::now();
        let r = f(&mut st, now);
        self.flush(&mut st, now);
        let next = st.ep.poll_timeout();
        drop(st);
        if let Some(t) = next {
            if self.nanos(t) < self.sleeping_until.load(Ordering::SeqCst) {
                self.wake();
            }
        }
        r
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base)
            .as_nanos()
            .min(u64::MAX as u128) as u64
    }

    fn wake(&self) {
        signal(self.wake.as_raw_fd());
    }

    /// Receives and handles the datagrams waiting on the socket (bounded,
    /// so timers and callers get a turn), sending and routing as it goes;
    /// stops early once `done` holds (a waiting thread got what it waits
    /// for: the rest is left to whoever polls next, saving a syscall).
    fn receive(self: &Arc<Self>, st: &mut State, done: &dyn Fn() -> bool) {
        let mut buf = std::mem::take(&mut st.rx_buf);
        for _ in 0..256 {
            if done() {
                break;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    st.ep.handle_datagram_mut(now, from, &mut buf[..n]);
                    self.flush(st, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors surface here on connected sockets; the
                    // protocol treats them as loss.
                    log::debug!("recv: {e}");
                    break;
                }
            }
        }
        st.rx_buf = buf;
    }

    /// One round of a waiting thread's receive loop: sleeps until the socket
    /// is readable, its eventfd is signalled (what it waits for was routed
    /// by another thread) or the deadline, then receives what is there.
    /// With `other`, that descriptor is watched too: true when it is
    /// readable (what was received meanwhile is handled all the same).
    fn pump(
        self: &Arc<Self>,
        efd: RawFd,
        other: Option<RawFd>,
        deadline: Instant,
        done: &dyn Fn() -> bool,
    ) -> bool {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        let socket = (self.socket.as_raw_fd(), libc::POLLIN);
        let rev = match other {
            Some(fd) => poll_fds(
                &[socket, (efd, libc::POLLIN), (fd, libc::POLLIN)],
                Some(wait),
            ),
            None => poll_fds(&[socket, (efd, libc::POLLIN)], Some(wait)),
        };
        if rev[1] != 0 {
            drain(efd);
        }
        if rev[0] != 0 {
            let mut st = self.lock();
            self.receive(&mut st, done);
        }
        rev[2] != 0
    }

    /// Sends every queued datagram and routes every event.
    fn flush(self: &Arc<Self>, st: &mut State, now: Instant) {
        while let Some(t) = st.ep.poll_transmit(now) {
            send(&self.socket, &t.bytes, t.dest);
            st.ep.sent(t);
        }
        while let Some(ev) = st.ep.poll_event() {
            match ev {
                Event::Request { peer, id, payload } => {
                    let inc = Incoming {
                        peer,
                        id,
                        payload,
                        shared: Arc::clone(self),
                    };
                    let _ = self.incoming.send(inc);
                    let me = thread_waker();
                    for fd in st.incoming_wakers.iter().filter(|fd| Some(**fd) != me) {
                        signal(*fd);
                    }
                }
                Event::Response { id, payload } => {
                    if let Some(w) = st.waiters.remove(&id) {
                        let _ = w.tx.send(Ok(Answer::Whole(payload)));
                        wake_other(w.wake);
                    }
                }
                Event::ResponseSunk { id, head } => {
                    if let Some(w) = st.waiters.remove(&id) {
                        let _ = w.tx.send(Ok(Answer::Sunk(head)));
                        wake_other(w.wake);
                    }
                }
                Event::RequestFailed { id, reason } => {
                    if let Some(w) = st.waiters.remove(&id) {
                        let _ = w.tx.send(Err(match reason {
                            FailReason::PeerLost => DriverError::PeerLost,
                            FailReason::PeerRestarted => DriverError::PeerRestarted,
                            FailReason::Closed => DriverError::Closed,
                        }));
                        wake_other(w.wake);
                    }
                }
                Event::PeerLost { peer } => {
                    let _ = self.lost.send(peer);
                }
            }
        }
    }
}

/// Counts a thread as receiving from the socket for its lifetime.
struct Pumping<'a>(&'a Shared);

impl<'a> Pumping<'a> {
    fn new(shared: &'a Shared) -> Pumping<'a> {
        shared.pumpers.fetch_add(1, Ordering::SeqCst);
        Pumping(shared)
    }
}

impl Drop for Pumping<'_> {
    fn drop(&mut self) {
        // The last receiving thread leaves: the driver thread, which only
        // watches its eventfd while others receive, must take the socket
        // back now, not at its next recheck (datagrams may already wait).
        if self.0.pumpers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.wake();
        }
    }
}

fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// This thread's eventfd, used to wake it while it pumps a socket. Lives as
/// long as the thread.
fn thread_waker() -> Option<RawFd> {
    thread_local! {
        static WAKER: Option<OwnedFd> = new_eventfd().ok();
    }
    WAKER.with(|w| w.as_ref().map(|fd| fd.as_raw_fd()))
}

/// Signals a waiting thread, unless it is the current one (a thread that
/// routes its own answer needs no wake-up).
fn wake_other(fd: Option<RawFd>) {
    if let Some(fd) = fd.filter(|fd| Some(*fd) != thread_waker()) {
        signal(fd);
    }
}

fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn drain(fd: RawFd) {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a valid u64 from a nonblocking eventfd.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Sends one datagram. A full send buffer is waited out briefly; other
/// errors (ICMP unreachable reported on connected sockets, ...) count as a
/// loss, which the protocol recovers from.
fn send(socket: &UdpSocket, bytes: &[u8], dest: SocketAddr) {
    for _ in 0..100 {
        match socket.send_to(bytes, dest) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll_fds(
                    &[(socket.as_raw_fd(), libc::POLLOUT)],
                    Some(Duration::from_millis(10)),
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("send to {dest}: {e}");
                return;
            }
        }
    }
}

/// `ppoll` on up to three descriptors; returns their `revents` (0 for
/// the slots not given).
fn poll_fds(fds: &[(RawFd, libc::c_short)], timeout: Option<Duration>) -> [libc::c_short; 3] {
    let mut p = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 3];
    for (slot, (fd, ev)) in p.iter_mut().zip(fds) {
        slot.fd = *fd;
        slot.events = *ev;
    }
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as _,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `p` holds `fds.len()` initialized pollfds; `tsp` is null or
    // points at a live timespec; no signal mask is passed.
    let n = unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            fds.len().min(p.len()) as libc::nfds_t,
            tsp,
            std::ptr::null(),
        )
    };
    if n <= 0 {
        return [0; 3];
    }
    [p[0].revents, p[1].revents, p[2].revents]
}

fn set_buffer(socket: &UdpSocket, force: libc::c_int, normal: libc::c_int, size: usize) {
    let v = size.min(i32::MAX as usize) as libc::c_int;
    for opt in [force, normal] {
        // SAFETY: passes a valid c_int and its size to setsockopt.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// How often the driver thread checks whether the threads receiving in its
/// place are still there.
const PUMPER_RECHECK: Duration = Duration::from_millis(2);

/// The driver thread.
fn run(shared: &Arc<Shared>, max_sleep: Duration) {
    let fd = shared.socket.as_raw_fd();
    let wake = shared.wake.as_raw_fd();
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let deadline = shared
            .lock()
            .ep
            .poll_timeout()
            .unwrap_or(now + max_sleep)
            .min(now + max_sleep);
        shared
            .sleeping_until
            .store(shared.nanos(deadline), Ordering::SeqCst);
        // Re-check after publishing: a caller may have queued an earlier
        // timer just before we stored our deadline.
        let deadline = shared
            .lock()
            .ep
            .poll_timeout()
            .unwrap_or(deadline)
            .min(deadline);
        let wait = deadline.saturating_duration_since(Instant::now());
        let rev = if shared.pumpers.load(Ordering::SeqCst) > 0 {
            // Waiting threads receive; look again soon in case they stop
            // (this bounds the delay of unsolicited datagrams then).
            let r = poll_fds(&[(wake, libc::POLLIN)], Some(wait.min(PUMPER_RECHECK)));
            [0, r[0], 0]
        } else {
            poll_fds(&[(fd, libc::POLLIN), (wake, libc::POLLIN)], Some(wait))
        };
        shared.sleeping_until.store(0, Ordering::SeqCst);
        if rev[1] != 0 {
            drain(wake);
        }
        let mut st = shared.lock();
        if rev[0] != 0 {
            shared.receive(&mut st, &|| false);
        }
        let now = Instant::now();
        if st.ep.poll_timeout().is_some_and(|t| t <= now) {
            st.ep.handle_timeout(now);
        }
        shared.flush(&mut st, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::CLUSTER_KEY_ID;
    use std::os::fd::AsFd;

    #[test]
    fn a_wait_ends_when_another_descriptor_is_readable_and_the_call_survives() {
        let key = Key::generate();
        let cfg = DriverConfig::default;
        let server = Driver::bind("127.0.0.1:0", Keyring::with_cluster_key(&key), cfg()).unwrap();
        let client = Driver::bind("127.0.0.1:0", Keyring::with_cluster_key(&key), cfg()).unwrap();
        let peer = Peer {
            addr: server.local_addr().unwrap(),
            key_id: CLUSTER_KEY_ID,
        };
        let mut call = client.start(peer, b"ping".to_vec()).unwrap();
        // The server holds the request: only the other descriptor can end
        // the wait.
        let held = server.incoming().recv().unwrap();
        let other = new_eventfd().unwrap();
        signal(other.as_raw_fd());
        let long = Duration::from_secs(60);
        assert!(call.wait_or_readable(long, other.as_fd()).is_none());
        // Still in flight: answered now, the same call gets its answer.
        drain(other.as_raw_fd());
        held.respond(b"pong".to_vec()).unwrap();
        match call.wait_or_readable(long, other.as_fd()) {
            Some(Ok(bytes)) => assert_eq!(bytes, b"pong"),
            other => panic!("expected the answer, got {other:?}"),
        }
    }
}
