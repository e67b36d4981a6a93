//! The sans-I/O reliability core, after the quinn-proto model: an
//! [`Endpoint`] is fed datagrams ([`Endpoint::handle_datagram`]) and timer
//! expiries ([`Endpoint::handle_timeout`]) and drained of datagrams to send
//! ([`Endpoint::poll_transmit`]), events ([`Endpoint::poll_event`]) and its
//! next deadline ([`Endpoint::poll_timeout`]). It never reads a clock, a
//! socket or the OS RNG (the caller passes `now` and a seed), so the
//! simulation tests drive it in virtual time, deterministically.
//!
//! It owns the keyring, the replay guard and one connection per
//! (peer address, key id) (see [`conn`] for retransmission, congestion
//! control and at-most-once execution). Payloads are opaque bytes here; the
//! [`crate::msg`] layer encodes them.

mod conn;
mod message;
mod ranges;
mod rtt;
mod sink;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use self::conn::{Conn, Ctx, TimeoutOutcome};
use self::message::BufPool;
pub(crate) use self::message::RECYCLE_MIN;
use self::sink::SinkFill;
pub use self::sink::{Sink, SinkTarget};
use crate::crypto::Keyring;
use crate::error::EndpointError;
use crate::frame::{self, Handshake, MsgKind};
use crate::replay::{ReplayGuard, Verdict};
use crate::stats::{DropReason, Stats};
use crate::wire::{Header, PacketKind, DEFAULT_MAX_DATAGRAM, HEADER_LEN, MAX_UDP_PAYLOAD, VERSION};

/// Tunables. The defaults suit a LAN; every field is public so daemons can
/// expose them as settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest datagram sent to, or accepted from, a non-loopback address.
    /// 1400 keeps clear of IP fragmentation on Ethernet (and tunnels).
    pub max_datagram: usize,
    /// The same for loopback peers (127.0.0.0/8, ::1): the loopback device's
    /// MTU is 64 KiB, so big datagrams are safe there and cut the per-packet
    /// cost of local traffic (the embedded `diatom exec` mode) ~40x.
    pub loopback_max_datagram: usize,
    /// Largest message (request or response payload).
    pub max_message: usize,
    /// Bytes of partially received messages allowed per peer.
    pub reassembly_limit: usize,
    /// Partially received messages allowed per peer.
    pub max_partial_messages: usize,
    /// Requests outstanding to, or remembered from, one peer.
    pub max_requests_per_peer: usize,
    /// Connections (peer address, key) tracked at once.
    pub max_peers: usize,
    /// (sender, key) replay windows tracked at once (LRU beyond that).
    pub replay_capacity: usize,
    /// Challenge a sender on first contact before accepting its data (see
    /// [`crate::replay`]). Only an endpoint whose keys are all fresh — a
    /// job session's, made for it and never used before — may turn this off:
    /// nothing sealed with such a key can predate the endpoint, so a window
    /// may start at the first authentic datagram, saving a round trip.
    pub challenge_first_contact: bool,
    /// A watched peer silent this long is lost.
    pub idle_timeout: Duration,
    /// How often an otherwise quiet, watched connection pings its peer.
    pub keepalive_interval: Duration,
    /// Watch every connection (ping it while idle and report its loss), not
    /// only those with outstanding work. Per connection: [`Endpoint::set_keepalive`].
    pub keepalive: bool,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Cap of the backed-off probe timeout.
    pub max_pto: Duration,
    /// How long a receiver may hold back an ack.
    pub max_ack_delay: Duration,
    /// Ack immediately after this many ack-eliciting packets.
    pub ack_every: u32,
    /// Initial congestion window, in datagrams.
    pub initial_window: usize,
    /// Smallest congestion window, in datagrams, that loss can shrink it
    /// to. Loss on a cluster's LAN is mostly not congestion (a flaky link,
    /// a full socket buffer for an instant), and with RFC 9002's floor of
    /// two, persistent random loss keeps NewReno's window near
    /// 1.2/sqrt(loss) datagrams: measured on the netns cluster with 10 %
    /// loss each way, 64 MiB read and written back by a job took 41 s with
    /// a floor of 2 and 4.5 s with 32 (2.9 s without loss). 32 datagrams
    /// is ~45 KB in flight per connection: below a gigabit LAN's
    /// bandwidth-delay product, so it cannot flood a healthy network.
    pub min_window: usize,
    /// Largest congestion window, in bytes.
    pub max_window: usize,
    /// Bytes of big delivered messages kept for reassembling later ones,
    /// once the owner hands them back with [`Endpoint::recycle`] (0: none
    /// kept). For an owner that receives big answers one after another (a
    /// node fetching a file): reused buffers cost no page faults.
    pub recycle_limit: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_datagram: DEFAULT_MAX_DATAGRAM,
            loopback_max_datagram: 65_000,
            max_message: 64 << 20,
            reassembly_limit: 160 << 20,
            max_partial_messages: 256,
            max_requests_per_peer: 4096,
            max_peers: 4096,
            replay_capacity: 8192,
            challenge_first_contact: true,
            idle_timeout: Duration::from_secs(6),
            keepalive_interval: Duration::from_secs(1),
            keepalive: false,
            initial_rtt: Duration::from_millis(30),
            max_pto: Duration::from_secs(1),
            max_ack_delay: Duration::from_millis(5),
            ack_every: 2,
            initial_window: 10,
            min_window: 32,
            max_window: 16 << 20,
            recycle_limit: 0,
        }
    }
}

impl Config {
    /// The datagram size used with (and accepted from) `addr`.
    pub fn datagram_size_for(&self, addr: SocketAddr) -> usize {
        let size = if addr.ip().is_loopback() {
            self.loopback_max_datagram
        } else {
            self.max_datagram
        };
        // Room for at least a few bytes of chunk data; no more than UDP carries.
        size.clamp(
            HEADER_LEN + crate::wire::TAG_LEN + frame::BODY_PREFIX + frame::CHUNK_HEADER + 64,
            MAX_UDP_PAYLOAD,
        )
    }
}

/// A connection's identity: the peer's address and the key it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The peer's UDP address.
    pub addr: SocketAddr,
    /// The key both sides seal with.
    pub key_id: u64,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (key {})", self.addr, self.key_id)
    }
}

/// Names an outgoing request (unique per endpoint instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Why an outgoing request will never be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The peer was silent past the idle timeout.
    PeerLost,
    /// The peer's instance changed (it restarted); the old one may or may
    /// not have executed the request.
    PeerRestarted,
    /// [`Endpoint::close`] was called for the peer.
    Closed,
}

/// What the endpoint has to tell its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request to execute and answer with [`Endpoint::respond`]. Delivered
    /// at most once per request, however often the peer retransmits it.
    Request {
        /// Who asked, and under which key.
        peer: Peer,
        /// The peer's request id, to pass back to `respond`.
        id: u64,
        /// The request payload.
        payload: Vec<u8>,
    },
    /// The answer to one of our requests (exactly once per request, unless
    /// it failed instead).
    Response {
        /// Which request.
        id: RequestId,
        /// The response payload.
        payload: Vec<u8>,
    },
    /// The answer to one of our requests sent with a [`Sink`], whose
    /// bytes beyond the head went to the sink (exactly once per request,
    /// instead of [`Event::Response`]; a response of another length than
    /// the sink's comes as `Response`).
    ResponseSunk {
        /// Which request.
        id: RequestId,
        /// The response's first [`Sink::skip`] bytes.
        head: Vec<u8>,
    },
    /// One of our requests will never be answered.
    RequestFailed {
        /// Which request.
        id: RequestId,
        /// Why.
        reason: FailReason,
    },
    /// A watched peer went silent past the idle timeout (or restarted);
    /// its connection state is gone.
    PeerLost {
        /// The peer.
        peer: Peer,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: SocketAddr,
    /// The sealed datagram.
    pub bytes: Vec<u8>,
}

/// The protocol state machine. See the module documentation.
pub struct Endpoint {
    cfg: Config,
    keys: Keyring,
    sender_id: u64,
    counter: u64,
    rng: StdRng,
    replay: ReplayGuard,
    conns: HashMap<Peer, Conn>,
    ready: VecDeque<Peer>,
    handshakes: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Outgoing request id -> its connection.
    requests: HashMap<u64, Peer>,
    next_request_id: u64,
    stats: Stats,
    scratch: Vec<u8>,
    answered: Vec<u64>,
    pool: BufPool,
    /// Sent datagrams' buffers handed back ([`Endpoint::sent`]), for the
    /// next ones: at most [`SPARE_DATAGRAMS`].
    spare_datagrams: Vec<Vec<u8>>,
}

/// Most sent datagrams' buffers an endpoint keeps for reuse. A bulk
/// transfer seals one ~64 KiB datagram after another; with a fresh
/// allocation each, an allocator that gives such blocks back to the system
/// at once (musl's) page-faults and zeroes every byte sent again.
pub const SPARE_DATAGRAMS: usize = 8;

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("sender_id", &format_args!("{:016x}", self.sender_id))
            .field("conns", &self.conns.len())
            .field("requests", &self.requests.len())
            .finish()
    }
}

/// The connection for `peer`, created if there is room.
fn conn_for<'a>(
    conns: &'a mut HashMap<Peer, Conn>,
    cfg: &Config,
    now: Instant,
    peer: Peer,
) -> Option<&'a mut Conn> {
    if !conns.contains_key(&peer) && conns.len() >= cfg.max_peers {
        return None;
    }
    Some(
        conns
            .entry(peer)
            .or_insert_with(|| Conn::new(now, peer, cfg)),
    )
}

impl Endpoint {
    /// A new endpoint. `seed` feeds its CSPRNG (sender id and challenge
    /// nonces): pass OS randomness in production, a fixed seed in tests.
    pub fn new(cfg: Config, keys: Keyring, seed: [u8; 32]) -> Endpoint {
        let mut rng = StdRng::from_seed(seed);
        let sender_id = rng.next_u64() | 1; // never 0: 0 means "unknown"
        let resend = cfg.initial_rtt.min(Duration::from_millis(10));
        Endpoint {
            replay: ReplayGuard::new(cfg.replay_capacity, resend)
                .trusting_first_contact(!cfg.challenge_first_contact),
            pool: BufPool::new(cfg.recycle_limit),
            spare_datagrams: Vec::new(),
            cfg,
            keys,
            sender_id,
            counter: 0,
            rng,
            conns: HashMap::new(),
            ready: VecDeque::new(),
            handshakes: VecDeque::new(),
            events: VecDeque::new(),
            requests: HashMap::new(),
            next_request_id: 1,
            stats: Stats::new(),
            scratch: Vec::new(),
            answered: Vec::new(),
        }
    }

    /// This instance's random sender id.
    pub fn sender_id(&self) -> u64 {
        self.sender_id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The drop counters (shared: clones see later counts).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// The keyring, to read.
    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// Adds or replaces a key (a job's session key arriving).
    pub fn add_key(&mut self, id: u64, key: &crate::Key) {
        self.keys.insert(id, key);
    }

    /// Removes a key, its replay windows and its connections (failing their
    /// outstanding requests with [`FailReason::Closed`]).
    pub fn remove_key(&mut self, id: u64) {
        self.keys.remove(id);
        self.replay.forget_key(id);
        let peers: Vec<Peer> = self
            .conns
            .keys()
            .filter(|p| p.key_id == id)
            .copied()
            .collect();
        for p in peers {
            self.close(p);
        }
    }

    /// Number of connections.
    pub fn peer_count(&self) -> usize {
        self.conns.len()
    }

    /// Sends a request; its answer arrives as [`Event::Response`] (or
    /// [`Event::RequestFailed`]).
    pub fn send_request(
        &mut self,
        now: Instant,
        peer: Peer,
        payload: Vec<u8>,
    ) -> Result<RequestId, EndpointError> {
        if payload.len() > self.cfg.max_message {
            return Err(EndpointError::TooLarge {
                size: payload.len(),
                limit: self.cfg.max_message,
            });
        }
        if !self.keys.contains(peer.key_id) {
            return Err(EndpointError::UnknownKey(peer.key_id));
        }
        let conn =
            conn_for(&mut self.conns, &self.cfg, now, peer).ok_or(EndpointError::TooManyPeers)?;
        if conn.outstanding.len() >= self.cfg.max_requests_per_peer {
            return Err(EndpointError::TooManyRequests(peer.to_string()));
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        conn.outstanding.insert(id);
        conn.queue_msg((MsgKind::Request, id), payload);
        self.requests.insert(id, peer);
        self.mark_ready(peer);
        Ok(RequestId(id))
    }

    /// Sends a request whose response, if it is `sink.total` bytes long,
    /// goes to `sink` as it arrives (see [`Sink`]) and is announced by
    /// [`Event::ResponseSunk`]; otherwise it arrives as
    /// [`Event::Response`] as for [`Endpoint::send_request`].
    pub fn send_request_into(
        &mut self,
        now: Instant,
        peer: Peer,
        payload: Vec<u8>,
        sink: Sink,
    ) -> Result<RequestId, EndpointError> {
        let id = self.send_request(now, peer, payload)?;
        if let (Some(fill), Some(conn)) = (SinkFill::new(sink), self.conns.get_mut(&peer)) {
            conn.sinks.insert(id.0, fill);
        }
        Ok(id)
    }

    /// Answers a request delivered by [`Event::Request`].
    pub fn respond(
        &mut self,
        now: Instant,
        peer: Peer,
        id: u64,
        payload: Vec<u8>,
    ) -> Result<(), EndpointError> {
        let _ = now;
        if payload.len() > self.cfg.max_message {
            return Err(EndpointError::TooLarge {
                size: payload.len(),
                limit: self.cfg.max_message,
            });
        }
        let no_such = || EndpointError::NoSuchRequest {
            peer: peer.to_string(),
            id,
        };
        let conn = self.conns.get_mut(&peer).ok_or_else(no_such)?;
        if !conn.respond(id, payload) {
            return Err(no_such());
        }
        self.mark_ready(peer);
        Ok(())
    }

    /// Gives up on a request: no event will follow for it. The peer may
    /// still execute it (at most once).
    pub fn cancel(&mut self, id: RequestId) {
        let Some(peer) = self.requests.remove(&id.0) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&peer) {
            c.outstanding.remove(&id.0);
            c.drop_out((MsgKind::Request, id.0));
            c.forget_response(id.0);
        }
    }

    /// Watch (ping while idle, report loss) one connection or stop watching
    /// it; creates the connection if needed.
    pub fn set_keepalive(
        &mut self,
        now: Instant,
        peer: Peer,
        on: bool,
    ) -> Result<(), EndpointError> {
        if !self.keys.contains(peer.key_id) {
            return Err(EndpointError::UnknownKey(peer.key_id));
        }
        let conn =
            conn_for(&mut self.conns, &self.cfg, now, peer).ok_or(EndpointError::TooManyPeers)?;
        conn.keepalive = on;
        Ok(())
    }

    /// Forgets a peer, failing its outstanding requests with
    /// [`FailReason::Closed`]. No event other than those failures.
    pub fn close(&mut self, peer: Peer) {
        if let Some(c) = self.conns.remove(&peer) {
            self.retire(&c);
            self.fail_requests(&c, FailReason::Closed);
        }
    }

    /// Takes back a delivered message (a request's or a response's
    /// payload) that its owner is done with, to reassemble a later big
    /// message in (see [`Config::recycle_limit`]); others are freed.
    pub fn recycle(&mut self, payload: Vec<u8>) {
        self.pool.give(payload);
    }

    /// Takes back a datagram from [`Endpoint::poll_transmit`] once it has
    /// been sent, so that its buffer carries a later one.
    pub fn sent(&mut self, t: Transmit) {
        if self.spare_datagrams.len() < SPARE_DATAGRAMS && t.bytes.capacity() <= MAX_UDP_PAYLOAD {
            self.spare_datagrams.push(t.bytes);
        }
    }

    /// Feeds one received datagram. Anything bad is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if bytes.len() > self.cfg.datagram_size_for(from) {
            self.stats.count(DropReason::Oversized);
            return;
        }
        let mut copy = std::mem::take(&mut self.scratch);
        copy.clear();
        copy.extend_from_slice(bytes);
        self.handle_datagram_mut(now, from, &mut copy);
        self.scratch = copy;
    }

    /// Like [`Endpoint::handle_datagram`], but decrypts in the caller's
    /// buffer (which it overwrites) instead of copying it first.
    pub fn handle_datagram_mut(&mut self, now: Instant, from: SocketAddr, bytes: &mut [u8]) {
        if bytes.len() > self.cfg.datagram_size_for(from) {
            self.stats.count(DropReason::Oversized);
            return;
        }
        match self.keys.open_in_place(bytes) {
            Ok((h, len)) => self.on_authentic(now, from, h, &bytes[HEADER_LEN..HEADER_LEN + len]),
            Err(reason) => self.stats.count(reason),
        }
    }

    fn on_authentic(&mut self, now: Instant, from: SocketAddr, h: Header, body: &[u8]) {
        if h.sender_id == self.sender_id {
            self.stats.count(DropReason::Reflected);
            return;
        }
        let peer = Peer {
            addr: from,
            key_id: h.key_id,
        };
        if h.kind == PacketKind::Handshake {
            match frame::decode_handshake(body) {
                Err(_) => self.stats.count(DropReason::Decode),
                Ok(Handshake::Challenge(nonce)) => {
                    self.queue_handshake(from, h.key_id, Handshake::Answer(nonce));
                    // A peer accepts our data only after challenging us, so
                    // this is where we learn which instance we talk to: from
                    // now on our datagrams name it, and a later instance at
                    // the same address refuses them (see `Stale`) rather than
                    // executing a request the earlier one may have run. A
                    // challenge from another instance is answered, but our
                    // traffic stays addressed to the one we know.
                    if let Some(c) = self.conns.get_mut(&peer) {
                        if c.remote == 0 {
                            c.remote = h.sender_id;
                            c.raise_floor(self.replay.request_floor(h.sender_id, h.key_id));
                        }
                        if c.remote == h.sender_id {
                            c.on_challenged();
                            self.mark_ready(peer);
                        }
                    }
                }
                Ok(Handshake::Answer(nonce)) => {
                    if !self
                        .replay
                        .complete(h.sender_id, h.key_id, nonce, h.counter)
                    {
                        self.stats.count(DropReason::Replay);
                    }
                }
            }
            return;
        }
        let rng = &mut self.rng;
        match self
            .replay
            .check(now, h.sender_id, h.key_id, h.counter, || rng.next_u64())
        {
            Verdict::Fresh => {}
            Verdict::Replay(_) => return self.stats.count(DropReason::Replay),
            Verdict::Unverified(nonce) => {
                self.stats.count(DropReason::Unverified);
                if let Some(n) = nonce {
                    self.queue_handshake(from, h.key_id, Handshake::Challenge(n));
                }
                return;
            }
        }
        let Ok((pn, dest, frames)) = frame::split_body(body) else {
            return self.stats.count(DropReason::Decode);
        };
        if dest != 0 && dest != self.sender_id {
            return self.stats.count(DropReason::Stale);
        }
        if let Some(c) = self.conns.get(&peer) {
            if c.remote != 0 && c.remote != h.sender_id {
                // A new instance at the same address and key: the old one is
                // gone with whatever it was doing.
                if let Some(old) = self.conns.remove(&peer) {
                    self.retire(&old);
                    self.fail_requests(&old, FailReason::PeerRestarted);
                    self.events.push_back(Event::PeerLost { peer });
                }
            }
        }
        let Some(conn) = conn_for(&mut self.conns, &self.cfg, now, peer) else {
            return self.stats.count(DropReason::PeerLimit);
        };
        if conn.remote != h.sender_id {
            conn.remote = h.sender_id;
            // A connection to this instance may have been forgotten; what it
            // executed must not run again (a datagram first dropped as
            // unverified could otherwise be delivered much later).
            conn.raise_floor(self.replay.request_floor(h.sender_id, h.key_id));
        }
        let mut ctx = Ctx {
            cfg: &self.cfg,
            events: &mut self.events,
            stats: &self.stats,
            answered: &mut self.answered,
            pool: &mut self.pool,
        };
        conn.on_packet(now, pn, frames, &mut ctx);
        for id in self.answered.drain(..) {
            self.requests.remove(&id);
        }
        self.mark_ready(peer);
    }

    /// Handles expired timers: loss detection, probes, keepalives, delayed
    /// acks, lost peers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut lost = Vec::new();
        let mut collect = Vec::new();
        let mut ready = Vec::new();
        for (peer, c) in &mut self.conns {
            if c.next_timeout(&self.cfg).is_some_and(|t| t <= now) {
                match c.on_timeout(now, &self.cfg) {
                    TimeoutOutcome::Alive => ready.push(*peer),
                    TimeoutOutcome::Lost => lost.push(*peer),
                    TimeoutOutcome::Collect => collect.push(*peer),
                }
            }
        }
        for p in ready {
            self.mark_ready(p);
        }
        for p in collect {
            if let Some(c) = self.conns.remove(&p) {
                self.retire(&c);
            }
        }
        for p in lost {
            if let Some(c) = self.conns.remove(&p) {
                self.retire(&c);
                self.fail_requests(&c, FailReason::PeerLost);
                self.events.push_back(Event::PeerLost { peer: p });
            }
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.handshakes.pop_front() {
            return Some(t);
        }
        while let Some(peer) = self.ready.pop_front() {
            let Some(conn) = self.conns.get_mut(&peer) else {
                continue;
            };
            conn.queued = false;
            let floor = conn
                .outstanding
                .first()
                .copied()
                .unwrap_or(self.next_request_id);
            let mut buf = self.spare_datagrams.pop().unwrap_or_default();
            buf.clear();
            buf.reserve(conn.mtu);
            buf.resize(HEADER_LEN, 0);
            if !conn.build(now, &self.cfg, floor, &mut buf) {
                continue;
            }
            if conn.has_work(now, &self.cfg) {
                conn.queued = true;
                self.ready.push_back(peer);
            }
            self.counter += 1;
            let header = Header {
                version: VERSION,
                kind: PacketKind::Data,
                key_id: peer.key_id,
                sender_id: self.sender_id,
                counter: self.counter,
            };
            if self.keys.seal_in_place(&header, &mut buf).is_err() {
                // The key was removed under a live connection: drop it.
                self.close(peer);
                continue;
            }
            return Some(Transmit {
                dest: peer.addr,
                bytes: buf,
            });
        }
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| c.next_timeout(&self.cfg))
            .min()
    }

    fn mark_ready(&mut self, peer: Peer) {
        if let Some(c) = self.conns.get_mut(&peer) {
            if !c.queued {
                c.queued = true;
                self.ready.push_back(peer);
            }
        }
    }

    /// Keeps what a forgotten connection must not forget: which of its
    /// peer's requests ran.
    fn retire(&mut self, c: &Conn) {
        if c.remote != 0 {
            self.replay
                .raise_request_floor(c.remote, c.peer.key_id, c.resume_floor());
        }
    }

    fn fail_requests(&mut self, c: &Conn, reason: FailReason) {
        for id in &c.outstanding {
            self.requests.remove(id);
            self.events.push_back(Event::RequestFailed {
                id: RequestId(*id),
                reason,
            });
        }
    }

    fn queue_handshake(&mut self, to: SocketAddr, key_id: u64, h: Handshake) {
        self.counter += 1;
        let header = Header {
            version: VERSION,
            kind: PacketKind::Handshake,
            key_id,
            sender_id: self.sender_id,
            counter: self.counter,
        };
        let mut buf = vec![0u8; HEADER_LEN];
        frame::put_handshake(&mut buf, h);
        if self.keys.seal_in_place(&header, &mut buf).is_ok() {
            self.handshakes.push_back(Transmit {
                dest: to,
                bytes: buf,
            });
        }
    }
}
