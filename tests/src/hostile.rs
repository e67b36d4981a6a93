//! Hostile input for the daemons, made the way an attacker inside the
//! cluster would: datagrams captured off a node's link (an `AF_PACKET`
//! socket in its namespace, [`Capture`]) and replayed, and garbage built
//! from them and from the protocol's own header and AEAD ([`Hostile`]):
//! random bytes, truncated and oversized datagrams, authentic ones with a
//! bit flipped, ones sealed with another key. Never an authentic, unseen
//! datagram: the daemons rightly answer those (a first-contact challenge).
//!
//! Also what a test reads to account for them: a process's memory
//! ([`vm_kib`]) and the kernel's counters in a process's network namespace
//! ([`snmp_counter`]: datagrams dropped before any socket read them).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dscp_dicp::wire::{Header, PacketKind, DEFAULT_MAX_DATAGRAM, HEADER_LEN, MAX_UDP_PAYLOAD};
use dscp_dicp::{Key, Keyring};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::netns::{Netns, NetnsError};

/// One UDP datagram seen on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// A packet socket in one namespace that sees every IPv4 packet sent or
/// received there (what `tcpdump` would see).
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Opens the capture socket inside `ns`.
    pub fn open(ns: &Netns) -> Result<Capture, NetnsError> {
        let fd = ns
            .run(|| {
                socket(
                    AddressFamily::Packet,
                    SockType::Datagram,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::EthAll,
                )
            })?
            .map_err(|e| NetnsError::Invalid(format!("AF_PACKET socket: {e}")))?;
        Ok(Capture { fd })
    }

    /// UDP datagrams to or from `port` seen within `timeout`, at most `max`.
    pub fn udp(&self, port: u16, max: usize, timeout: Duration) -> Vec<Captured> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while out.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&self.fd),
                PollFlags::POLLIN,
            )];
            if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
                continue;
            }
            let Ok(n) = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) else {
                continue;
            };
            if let Some(c) =
                parse_udp(&buf[..n]).filter(|c| c.src.port() == port || c.dst.port() == port)
            {
                out.push(c);
            }
        }
        out
    }
}

/// The UDP datagram in an IPv4 packet (unfragmented), if it is one.
fn parse_udp(p: &[u8]) -> Option<Captured> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    // A fragment (more-fragments flag or an offset) is not a whole datagram.
    if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let udp = p.get(ihl..total)?;
    if udp.len() < 8 {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let port = |o: usize| u16::from_be_bytes([udp[o], udp[o + 1]]);
    Some(Captured {
        src: SocketAddrV4::new(ip(12), port(0)),
        dst: SocketAddrV4::new(ip(16), port(2)),
        payload: udp[8..].to_vec(),
    })
}

/// The kinds of hostile datagram [`Hostile`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Random bytes, 0 to 1500 of them.
    Random,
    /// An authentic datagram cut short.
    Truncated,
    /// A well-formed header followed by more bytes than the daemons accept
    /// (up to the largest UDP payload).
    Oversized,
    /// An authentic datagram with one bit flipped.
    BitFlipped,
    /// A captured datagram sent again, unchanged.
    Replayed,
    /// A datagram sealed with a key that is not the cluster's.
    OtherKey,
}

impl Kind {
    /// Every kind, in the order [`Hostile::next`] cycles through them.
    pub const ALL: [Kind; 6] = [
        Kind::Random,
        Kind::Truncated,
        Kind::Oversized,
        Kind::BitFlipped,
        Kind::Replayed,
        Kind::OtherKey,
    ];
}

/// A seeded source of hostile datagrams for one cluster.
#[derive(Debug)]
pub struct Hostile {
    rng: StdRng,
    cluster: Keyring,
    other: Keyring,
    captured: Vec<Vec<u8>>,
    sender: u64,
    counter: u64,
    turn: usize,
    max_oversized: usize,
}

impl Hostile {
    /// Hostile datagrams against a cluster whose key is `cluster_key`;
    /// `captured` are authentic datagrams seen on its links (replayed as
    /// they are, and the basis of the truncated and bit-flipped ones).
    pub fn new(cluster_key: &Key, captured: Vec<Vec<u8>>, seed: u64) -> Hostile {
        Hostile {
            rng: StdRng::seed_from_u64(seed),
            cluster: Keyring::with_cluster_key(cluster_key),
            other: Keyring::with_cluster_key(&Key::generate()),
            captured,
            sender: seed | 1,
            counter: 0,
            turn: 0,
            max_oversized: MAX_UDP_PAYLOAD,
        }
    }

    /// Caps the size of oversized datagrams (default: the largest UDP
    /// payload). A flood of 64 KiB datagrams is mostly IP fragments, which
    /// the kernel may drop before any socket sees them.
    pub fn oversized_up_to(mut self, max: usize) -> Hostile {
        self.max_oversized = max.clamp(DEFAULT_MAX_DATAGRAM + 1, MAX_UDP_PAYLOAD);
        self
    }

    /// A datagram sealed with the cluster key by a sender nobody knows:
    /// authentic, so only ever sent damaged.
    fn sealed(&mut self, ring_is_cluster: bool) -> Vec<u8> {
        self.counter += 1;
        let h = Header {
            version: dscp_dicp::wire::VERSION,
            kind: PacketKind::Data,
            key_id: 0,
            sender_id: self.sender,
            counter: self.counter,
        };
        let mut body = vec![0u8; self.rng.gen_range(8..1200)];
        self.rng.fill_bytes(&mut body);
        let ring = if ring_is_cluster {
            &mut self.cluster
        } else {
            &mut self.other
        };
        ring.seal(&h, &body).unwrap_or_default()
    }

    /// An authentic datagram: a captured one, or one sealed here.
    fn authentic(&mut self) -> Vec<u8> {
        if !self.captured.is_empty() && self.rng.gen_bool(0.5) {
            let i = self.rng.gen_range(0..self.captured.len());
            self.captured[i].clone()
        } else {
            self.sealed(true)
        }
    }

    /// One datagram of `kind`.
    pub fn make(&mut self, kind: Kind) -> Vec<u8> {
        match kind {
            Kind::Random => {
                let mut b = vec![0u8; self.rng.gen_range(0..=1500)];
                self.rng.fill_bytes(&mut b);
                b
            }
            Kind::Truncated => {
                let mut b = self.authentic();
                let keep = self.rng.gen_range(0..b.len().max(1));
                b.truncate(keep);
                b
            }
            Kind::Oversized => {
                let mut b = self.sealed(true);
                b.truncate(HEADER_LEN);
                let len = self
                    .rng
                    .gen_range(DEFAULT_MAX_DATAGRAM + 1..=self.max_oversized);
                let mut tail = vec![0u8; len - HEADER_LEN];
                self.rng.fill_bytes(&mut tail);
                b.extend_from_slice(&tail);
                b
            }
            Kind::BitFlipped => {
                let mut b = self.authentic();
                if !b.is_empty() {
                    let bit = self.rng.gen_range(0..b.len() * 8);
                    b[bit / 8] ^= 1 << (bit % 8);
                }
                b
            }
            Kind::Replayed => match self.captured.len() {
                0 => self.sealed(false),
                n => {
                    let i = self.rng.gen_range(0..n);
                    self.captured[i].clone()
                }
            },
            Kind::OtherKey => self.sealed(false),
        }
    }

    /// The next datagram, cycling through every [`Kind`].
    pub fn next_datagram(&mut self) -> (Kind, Vec<u8>) {
        let kind = Kind::ALL[self.turn % Kind::ALL.len()];
        self.turn += 1;
        (kind, self.make(kind))
    }
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in KiB.
pub fn vm_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A counter of `/proc/PID/net/snmp` (the network namespace of process
/// `pid`), e.g. (`Udp`, `RcvbufErrors`): datagrams the kernel dropped for a
/// full socket receive buffer, before any program saw them.
pub fn snmp_counter(pid: i32, proto: &str, name: &str) -> Option<u64> {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).ok()?;
    let prefix = format!("{proto}:");
    let mut rows = snmp.lines().filter(|l| l.starts_with(&prefix));
    let names: Vec<&str> = rows.next()?.split_whitespace().collect();
    let values: Vec<&str> = rows.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == name)?;
    values.get(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_udp_packet() {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x2f, 0x04, 0x30, 0x39, 0, 11, 0, 0, b'a', b'b', b'c']);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let c = parse_udp(&p).unwrap();
        assert_eq!(c.src, "10.0.0.1:12036".parse().unwrap());
        assert_eq!(c.dst, "10.0.0.2:12345".parse().unwrap());
        assert_eq!(c.payload, b"abc");
        // A fragment is not a datagram.
        p[6] = 0x20;
        assert!(parse_udp(&p).is_none());
    }

    #[test]
    fn hostile_datagrams_never_open_with_the_cluster_key() {
        let key = Key::generate();
        let mut ring = Keyring::with_cluster_key(&key);
        let mut h = Hostile::new(&key, Vec::new(), 7);
        for _ in 0..600 {
            let (kind, d) = h.next_datagram();
            assert!(ring.open(&d).is_err(), "{kind:?} datagram opens");
        }
    }
}
