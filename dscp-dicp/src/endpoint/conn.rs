//! One connection: the state the endpoint keeps per (peer address, key id).
//!
//! Send side (QUIC-like, RFC 9002 simplified): every datagram gets the next
//! packet number; ack frames name received packet numbers in ranges; a
//! packet is lost when three later ones were acked or when it is 9/8 RTT
//! older than an acked one; a probe timeout (PTO) with exponential backoff
//! covers tail loss. Lost chunks are re-queued (never whole messages).
//! Congestion control is NewReno-like: slow start, then additive increase,
//! halving once per loss episode, never below [`Config::min_window`]
//! datagrams (not RFC 9002's two: see that field for why).
//!
//! Receive side: acks are delayed up to `max_ack_delay` or until
//! `ack_every` ack-eliciting packets arrived, and ride along on outgoing
//! data when possible (a request's ack travels in its response).
//!
//! At-most-once: the server side remembers, per request id at or above the
//! client's declared floor, whether it is running, being answered or done;
//! a duplicate of any of those is ignored (acked, never re-delivered). The
//! response is retransmitted until acked, so a client retrying a request
//! gets the one answer the single execution produced.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use super::message::{BufPool, ChunkRef, MsgKey, OutMsg, Reassembly};
use super::ranges::RangeSet;
use super::rtt::Rtt;
use super::sink::SinkFill;
use super::{Config, Event, Peer, RequestId};
use crate::frame::{self, Ack, Chunk, Frame, MsgKind};
use crate::stats::{DropReason, Stats};
use crate::wire::{HEADER_LEN, TAG_LEN};

/// How many received packet-number ranges are remembered for acks.
const KEEP_RX_RANGES: usize = 2 * frame::MAX_ACK_RANGES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// Delivered to the application, no response yet.
    Running,
    /// Response queued, not fully acked.
    Answering,
    /// Response fully acked.
    Done,
}

#[derive(Debug)]
struct Sent {
    time: Instant,
    size: usize,
    chunks: Vec<ChunkRef>,
}

/// What a timeout did to the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TimeoutOutcome {
    Alive,
    /// Watched and silent past the idle timeout.
    Lost,
    /// Nothing left to do and idle: forget it silently.
    Collect,
}

/// Borrowed endpoint state a connection needs while handling input.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a Config,
    pub events: &'a mut VecDeque<Event>,
    pub stats: &'a Stats,
    /// Request ids answered (the endpoint forgets their peer mapping).
    pub answered: &'a mut Vec<u64>,
    /// Spare buffers for big messages.
    pub pool: &'a mut BufPool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: Peer,
    pub mtu: usize,
    /// The peer instance's sender id (0 until its first datagram).
    pub remote: u64,
    pub keepalive: bool,
    /// Queued in the endpoint's ready list.
    pub queued: bool,
    pub last_rx: Instant,
    last_tx_eliciting: Instant,

    // Receive side.
    rx_pns: RangeSet,
    largest_rx_at: Instant,
    ack_pending: u32,
    ack_deadline: Option<Instant>,
    partial: HashMap<MsgKey, Reassembly>,
    partial_bytes: usize,
    floor: u64,
    served: BTreeMap<u64, Served>,

    // Client side: requests awaiting a response.
    pub outstanding: BTreeSet<u64>,
    /// Outstanding requests whose response goes to a sink.
    pub sinks: HashMap<u64, SinkFill>,

    // Send side.
    next_pn: u64,
    sent: VecDeque<Option<Sent>>,
    sent_base: u64,
    out: HashMap<MsgKey, OutMsg>,
    fresh: VecDeque<MsgKey>,
    retx: VecDeque<ChunkRef>,
    rtt: Rtt,
    cwnd: usize,
    ssthresh: usize,
    in_flight: usize,
    recovery_pn: u64,
    largest_acked: Option<u64>,
    loss_time: Option<Instant>,
    pto_count: u32,
    probes: u32,
    ping_pending: bool,
    scratch_ranges: Vec<(u64, u64)>,
}

impl Conn {
    pub fn new(now: Instant, peer: Peer, cfg: &Config) -> Conn {
        let mtu = cfg.datagram_size_for(peer.addr);
        Conn {
            peer,
            mtu,
            remote: 0,
            keepalive: cfg.keepalive,
            queued: false,
            last_rx: now,
            last_tx_eliciting: now,
            rx_pns: RangeSet::default(),
            largest_rx_at: now,
            ack_pending: 0,
            ack_deadline: None,
            partial: HashMap::new(),
            partial_bytes: 0,
            floor: 0,
            served: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            sinks: HashMap::new(),
            next_pn: 0,
            sent: VecDeque::new(),
            sent_base: 0,
            out: HashMap::new(),
            fresh: VecDeque::new(),
            retx: VecDeque::new(),
            rtt: Rtt::new(cfg.initial_rtt),
            cwnd: cfg.initial_window * mtu,
            ssthresh: usize::MAX,
            in_flight: 0,
            recovery_pn: 0,
            largest_acked: None,
            loss_time: None,
            pto_count: 0,
            probes: 0,
            ping_pending: false,
            scratch_ranges: Vec::new(),
        }
    }

    /// Largest chunk that fits one datagram of this connection.
    pub fn chunk_size(&self) -> usize {
        self.mtu - HEADER_LEN - TAG_LEN - frame::BODY_PREFIX - frame::CHUNK_HEADER
    }

    /// Whether silence from the peer matters: we wait for something from it
    /// or keep it alive on purpose.
    pub fn watched(&self) -> bool {
        self.keepalive || !self.outstanding.is_empty() || !self.out.is_empty() || self.in_flight > 0
    }

    fn collectable(&self) -> bool {
        !self.watched()
            && self.partial.is_empty()
            && !self.served.values().any(|s| *s != Served::Done)
    }

    pub fn queue_msg(&mut self, key: MsgKey, payload: Vec<u8>) {
        let m = OutMsg::new(payload, self.chunk_size());
        self.out.insert(key, m);
        self.fresh.push_back(key);
    }

    /// Stops sending a message (answered, cancelled, or pruned).
    pub fn drop_out(&mut self, key: MsgKey) {
        self.out.remove(&key);
    }

    pub fn forget_response(&mut self, id: u64) {
        self.sinks.remove(&id);
        if let Some(r) = self.partial.remove(&(MsgKind::Response, id)) {
            self.partial_bytes -= r.total() as usize;
        }
    }

    /// Queues a response to a running request. False if `id` is not running.
    pub fn respond(&mut self, id: u64, payload: Vec<u8>) -> bool {
        match self.served.get_mut(&id) {
            Some(s @ Served::Running) => *s = Served::Answering,
            _ => return false,
        }
        self.queue_msg((MsgKind::Response, id), payload);
        true
    }

    // ---------------------------------------------------------------- input

    /// Handles the frames of an accepted packet.
    pub fn on_packet(&mut self, now: Instant, pn: u64, frames: &[u8], ctx: &mut Ctx<'_>) {
        // Validate everything first, so a malformed packet changes nothing.
        // The last packet number cannot be acked as a range (found by the
        // `datagram` fuzz target); no sender ever gets that far.
        if pn == u64::MAX || frame::frames(frames).any(|f| f.is_err()) {
            ctx.stats.count(DropReason::Decode);
            return;
        }
        self.last_rx = now;
        let mut eliciting = false;
        let mut refused = None;
        for f in frame::frames(frames).flatten() {
            match f {
                Frame::Ack(a) => self.on_ack(now, &a, ctx.cfg),
                Frame::Ping => eliciting = true,
                Frame::Chunk(c) => {
                    eliciting = true;
                    if let Err(r) = self.on_chunk(&c, ctx) {
                        refused = Some(r);
                    }
                }
            }
        }
        if let Some(r) = refused {
            // Not acked: the sender will retransmit once we have room.
            ctx.stats.count(r);
            return;
        }
        self.rx_pns.insert(pn, pn + 1);
        self.rx_pns.truncate_oldest(KEEP_RX_RANGES);
        self.largest_rx_at = now;
        if eliciting {
            self.ack_pending += 1;
            if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + ctx.cfg.max_ack_delay);
            }
        }
    }

    fn on_chunk(&mut self, c: &Chunk<'_>, ctx: &mut Ctx<'_>) -> Result<(), DropReason> {
        if c.total > ctx.cfg.max_message as u64 {
            return Err(DropReason::MessageTooLarge);
        }
        match c.kind {
            MsgKind::Request => {
                if c.floor > self.floor {
                    self.raise_floor(c.floor);
                }
                if c.id < self.floor || self.served.contains_key(&c.id) {
                    return Ok(()); // duplicate: already executed or running
                }
                if self.served.len() >= ctx.cfg.max_requests_per_peer {
                    return Err(DropReason::ReassemblyLimit);
                }
                if let Some(payload) =
                    self.assemble((MsgKind::Request, c.id), c, ctx.cfg, ctx.pool)?
                {
                    self.served.insert(c.id, Served::Running);
                    ctx.events.push_back(Event::Request {
                        peer: self.peer,
                        id: c.id,
                        payload,
                    });
                }
            }
            MsgKind::Response => {
                if !self.outstanding.contains(&c.id) {
                    return Ok(()); // late duplicate of an answered request
                }
                // The peer evidently has the request: stop (re)sending it.
                self.drop_out((MsgKind::Request, c.id));
                if let Some(fill) = self.sinks.get_mut(&c.id) {
                    if fill.total() == c.total {
                        if fill.insert(c.offset, c.data) {
                            if let Some(fill) = self.sinks.remove(&c.id) {
                                self.forget_response(c.id);
                                self.outstanding.remove(&c.id);
                                ctx.answered.push(c.id);
                                ctx.events.push_back(Event::ResponseSunk {
                                    id: RequestId(c.id),
                                    head: fill.into_head(),
                                });
                            }
                        }
                        return Ok(());
                    }
                }
                if let Some(payload) =
                    self.assemble((MsgKind::Response, c.id), c, ctx.cfg, ctx.pool)?
                {
                    self.outstanding.remove(&c.id);
                    self.sinks.remove(&c.id);
                    ctx.answered.push(c.id);
                    ctx.events.push_back(Event::Response {
                        id: RequestId(c.id),
                        payload,
                    });
                }
            }
        }
        Ok(())
    }

    /// The floor to remember when this connection is forgotten: every
    /// request id below it has run (or was abandoned by the client).
    pub fn resume_floor(&self) -> u64 {
        let served = self
            .served
            .last_key_value()
            .map_or(0, |(id, _)| id.saturating_add(1));
        self.floor.max(served)
    }

    /// Never execute request ids below `floor` (client's promise, or a
    /// forgotten connection's memory).
    pub fn raise_floor(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        let keep = self.served.split_off(&floor);
        for (id, state) in std::mem::replace(&mut self.served, keep) {
            if state == Served::Answering {
                self.drop_out((MsgKind::Response, id));
            }
        }
        let stale: Vec<MsgKey> = self
            .partial
            .keys()
            .filter(|(k, id)| *k == MsgKind::Request && *id < floor)
            .copied()
            .collect();
        for k in stale {
            if let Some(r) = self.partial.remove(&k) {
                self.partial_bytes -= r.total() as usize;
            }
        }
    }

    fn assemble(
        &mut self,
        key: MsgKey,
        c: &Chunk<'_>,
        cfg: &Config,
        pool: &mut BufPool,
    ) -> Result<Option<Vec<u8>>, DropReason> {
        if let Some(r) = self.partial.get_mut(&key) {
            if r.total() != c.total {
                return Err(DropReason::Decode);
            }
            if !r.insert(c.offset, c.data) {
                return Ok(None);
            }
            let Some(r) = self.partial.remove(&key) else {
                return Ok(None);
            };
            self.partial_bytes -= r.total() as usize;
            return Ok(Some(r.into_data()));
        }
        if c.offset == 0 && c.data.len() as u64 == c.total {
            return Ok(Some(c.data.to_vec()));
        }
        let total = c.total as usize;
        if self.partial_bytes + total > cfg.reassembly_limit
            || self.partial.len() >= cfg.max_partial_messages
        {
            return Err(DropReason::ReassemblyLimit);
        }
        let mut r = Reassembly::new(total, pool);
        r.insert(c.offset, c.data);
        self.partial_bytes += total;
        self.partial.insert(key, r);
        Ok(None)
    }

    fn on_ack(&mut self, now: Instant, ack: &Ack, cfg: &Config) {
        let largest = ack.largest();
        if largest >= self.next_pn {
            return; // acks something never sent: ignore the frame
        }
        let mut largest_sent_at = None;
        let mut any = false;
        for &(hi, lo) in ack.ranges() {
            if hi < self.sent_base {
                break;
            }
            for pn in lo.max(self.sent_base)..=hi {
                let idx = (pn - self.sent_base) as usize;
                if let Some(p) = self.sent.get_mut(idx).and_then(Option::take) {
                    if pn == largest {
                        largest_sent_at = Some(p.time);
                    }
                    self.on_acked(pn, p, cfg);
                    any = true;
                }
            }
        }
        if !any {
            return;
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        if let Some(t) = largest_sent_at {
            let delay =
                std::time::Duration::from_micros(u64::from(ack.delay_us)).min(cfg.max_ack_delay);
            self.rtt.update(now.saturating_duration_since(t), delay);
        }
        self.pto_count = 0;
        self.detect_lost(now, cfg);
        self.trim_sent();
    }

    fn on_acked(&mut self, pn: u64, p: Sent, cfg: &Config) {
        self.in_flight -= p.size;
        for c in p.chunks {
            let Some(m) = self.out.get_mut(&c.key) else {
                continue;
            };
            if m.ack(c.index) {
                self.out.remove(&c.key);
                if c.key.0 == MsgKind::Response {
                    if let Some(s) = self.served.get_mut(&c.key.1) {
                        *s = Served::Done;
                    }
                }
            }
        }
        if pn >= self.recovery_pn {
            self.cwnd = if self.cwnd < self.ssthresh {
                self.cwnd + p.size
            } else {
                self.cwnd + self.mtu * p.size / self.cwnd
            };
            self.cwnd = self.cwnd.min(cfg.max_window.max(2 * self.mtu));
        }
    }

    fn detect_lost(&mut self, now: Instant, cfg: &Config) {
        let Some(la) = self.largest_acked else { return };
        let delay = self.rtt.loss_delay();
        self.loss_time = None;
        let mut newest_lost = None;
        for i in 0..self.sent.len() {
            let pn = self.sent_base + i as u64;
            if pn >= la {
                break;
            }
            let Some(p) = &self.sent[i] else { continue };
            if pn + 3 <= la || p.time + delay <= now {
                if let Some(p) = self.sent[i].take() {
                    self.on_lost(p);
                    newest_lost = Some(pn);
                }
            } else {
                let t = p.time + delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        if let Some(pn) = newest_lost {
            if pn >= self.recovery_pn {
                // One halving per loss episode (packets sent before it).
                self.recovery_pn = self.next_pn;
                self.cwnd = (self.cwnd / 2).max(cfg.min_window * self.mtu);
                self.ssthresh = self.cwnd;
            }
        }
    }

    fn on_lost(&mut self, p: Sent) {
        self.in_flight -= p.size;
        for c in p.chunks {
            if self.out.get(&c.key).is_some_and(|m| !m.is_acked(c.index)) {
                self.retx.push_back(c);
            }
        }
    }

    fn trim_sent(&mut self) {
        while let Some(None) = self.sent.front() {
            self.sent.pop_front();
            self.sent_base += 1;
        }
    }

    /// The peer challenged us (it has no replay window for us): it dropped
    /// what we sent, so everything in flight is lost, without implying
    /// congestion.
    pub fn on_challenged(&mut self) {
        for i in 0..self.sent.len() {
            if let Some(p) = self.sent[i].take() {
                self.on_lost(p);
            }
        }
        self.trim_sent();
        self.loss_time = None;
    }

    // --------------------------------------------------------------- timers

    fn pto_deadline(&self, cfg: &Config) -> Option<Instant> {
        (self.in_flight > 0).then(|| {
            self.last_tx_eliciting + self.rtt.pto(cfg.max_ack_delay, self.pto_count, cfg.max_pto)
        })
    }

    fn idle_deadline(&self) -> Option<Instant> {
        (self.watched() || self.collectable()).then_some(self.last_rx)
    }

    fn keepalive_deadline(&self, cfg: &Config) -> Option<Instant> {
        (self.watched() && self.in_flight == 0 && !self.ping_pending)
            .then(|| self.last_tx_eliciting + cfg.keepalive_interval)
    }

    pub fn next_timeout(&self, cfg: &Config) -> Option<Instant> {
        [
            self.ack_deadline.filter(|_| self.ack_pending > 0),
            self.loss_time,
            self.pto_deadline(cfg),
            self.idle_deadline().map(|t| t + cfg.idle_timeout),
            self.keepalive_deadline(cfg),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_timeout(&mut self, now: Instant, cfg: &Config) -> TimeoutOutcome {
        if self
            .idle_deadline()
            .is_some_and(|t| now >= t + cfg.idle_timeout)
        {
            return if self.watched() {
                TimeoutOutcome::Lost
            } else {
                TimeoutOutcome::Collect
            };
        }
        if self.loss_time.is_some_and(|t| now >= t) {
            self.detect_lost(now, cfg);
            self.trim_sent();
        }
        if self.pto_deadline(cfg).is_some_and(|t| now >= t) {
            self.pto_count += 1;
            self.probes = 2;
            // Resend the oldest unacked packet's chunks; keep the packet
            // itself in flight (a late ack for it still counts).
            let oldest = self.sent.iter().flatten().next().map(|p| p.chunks.clone());
            let mut requeued = false;
            for c in oldest.into_iter().flatten().rev() {
                if self.out.get(&c.key).is_some_and(|m| !m.is_acked(c.index)) {
                    self.retx.push_front(c);
                    requeued = true;
                }
            }
            if !requeued {
                self.ping_pending = true;
            }
            // Restart the timer from now (the probe will be sent now).
            self.last_tx_eliciting = now;
        }
        if self.keepalive_deadline(cfg).is_some_and(|t| now >= t) {
            self.ping_pending = true;
        }
        TimeoutOutcome::Alive
    }

    // --------------------------------------------------------------- output

    fn ack_due(&self, now: Instant, cfg: &Config) -> bool {
        self.ack_pending > 0
            && (self.ack_pending >= cfg.ack_every || self.ack_deadline.is_some_and(|d| d <= now))
    }

    /// Whether `build` would produce a datagram now.
    pub fn has_work(&self, now: Instant, cfg: &Config) -> bool {
        let data = !self.retx.is_empty() || !self.fresh.is_empty();
        (data && (self.in_flight + self.mtu <= self.cwnd || self.probes > 0))
            || self.ping_pending
            || self.ack_due(now, cfg)
    }

    /// Next chunk to send (retransmissions first), skipping stale entries.
    fn peek_chunk(&mut self) -> Option<(ChunkRef, bool)> {
        while let Some(c) = self.retx.front() {
            if self.out.get(&c.key).is_some_and(|m| !m.is_acked(c.index)) {
                return Some((*c, true));
            }
            self.retx.pop_front();
        }
        while let Some(key) = self.fresh.front() {
            match self.out.get(key) {
                Some(m) if m.next < m.n => {
                    return Some((
                        ChunkRef {
                            key: *key,
                            index: m.next,
                        },
                        false,
                    ))
                }
                _ => {
                    self.fresh.pop_front();
                }
            }
        }
        None
    }

    fn take_chunk(&mut self, c: ChunkRef, retx: bool) {
        if retx {
            self.retx.pop_front();
        } else if let Some(m) = self.out.get_mut(&c.key) {
            m.next += 1;
            if m.next >= m.n {
                self.fresh.pop_front();
            }
        }
    }

    fn put_ack(&mut self, now: Instant, buf: &mut Vec<u8>) {
        let delay = now
            .saturating_duration_since(self.largest_rx_at)
            .as_micros()
            .min(u32::MAX as u128) as u32;
        let mut ranges = std::mem::take(&mut self.scratch_ranges);
        self.rx_pns.newest(frame::MAX_ACK_RANGES, &mut ranges);
        frame::put_ack(buf, delay, &ranges);
        self.scratch_ranges = ranges;
        self.ack_pending = 0;
        self.ack_deadline = None;
    }

    /// Appends one packet's plaintext body to `buf` (which already holds the
    /// header's space). Returns false, leaving `buf` as it was, when there
    /// is nothing to send. `floor` is our lowest outstanding request id.
    pub fn build(&mut self, now: Instant, cfg: &Config, floor: u64, buf: &mut Vec<u8>) -> bool {
        let start = buf.len();
        frame::put_body_prefix(buf, self.next_pn, self.remote);
        let limit = self.mtu - TAG_LEN;
        let ack_due = self.ack_due(now, cfg);
        let mut acked = false;
        if ack_due && !self.rx_pns.is_empty() {
            self.put_ack(now, buf);
            acked = true;
        }
        let mut chunks = Vec::new();
        while self.in_flight + self.mtu <= self.cwnd || self.probes > 0 {
            let Some((c, retx)) = self.peek_chunk() else {
                break;
            };
            let Some(m) = self.out.get(&c.key) else { break };
            let (offset, data) = m.chunk(c.index);
            if buf.len() + frame::CHUNK_HEADER + data.len() > limit {
                break;
            }
            let chunk = Chunk {
                kind: c.key.0,
                id: c.key.1,
                floor: if c.key.0 == MsgKind::Request {
                    floor
                } else {
                    0
                },
                total: m.total(),
                offset,
                data,
            };
            frame::put_chunk(buf, &chunk);
            self.take_chunk(c, retx);
            chunks.push(c);
        }
        // A pending (not yet due) ack rides along on data if it fits (an ack
        // alone waits until it is due: that is what delaying it is for).
        if !acked && !chunks.is_empty() && self.ack_pending > 0 && !self.rx_pns.is_empty() {
            let n = frame::MAX_ACK_RANGES.min(KEEP_RX_RANGES);
            if buf.len() + frame::ack_len(n) <= limit {
                self.put_ack(now, buf);
                acked = true;
            }
        }
        let mut ping = false;
        if chunks.is_empty() && self.ping_pending {
            frame::put_ping(buf);
            ping = true;
        }
        self.ping_pending &= !ping;
        let eliciting = ping || !chunks.is_empty();
        if !eliciting && !acked {
            buf.truncate(start);
            return false;
        }
        let size = buf.len() + TAG_LEN;
        self.next_pn += 1;
        if eliciting {
            if self.in_flight + size > self.cwnd && self.probes > 0 {
                self.probes -= 1;
            }
            self.in_flight += size;
            self.last_tx_eliciting = now;
            self.sent.push_back(Some(Sent {
                time: now,
                size,
                chunks,
            }));
        } else {
            self.sent.push_back(None);
            self.trim_sent();
        }
        true
    }
}
