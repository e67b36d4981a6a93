//! The fixed datagram header. It travels in clear (the receiver needs the key
//! id and nonce before it can decrypt) and is the AEAD's associated data, so
//! any change to it fails authentication.
//!
//! ```text
//!  0      3   4    5         8          16           24          32
//!  +------+---+----+---------+----------+------------+-----------+------------------+-----+
//!  | DTM  | v |kind| 0 0 0   | key id   | sender id  | counter   | ciphertext ...   | tag |
//!  +------+---+----+---------+----------+------------+-----------+------------------+-----+
//! ```
//! All integers little endian. `sender id` is random per endpoint instance;
//! `counter` strictly increases per sender (across all its keys and peers).
//! The body is sealed with AES-256-GCM under the sender's own subkey
//! (BLAKE3 `derive_key` of key, key id and sender id; see [`crate::crypto`])
//! with the 96-bit nonce `counter ‖ 0^4`, so two endpoints sharing the
//! cluster key never reuse a (key, nonce) pair unless they draw the same
//! random sender id. The tag is GCM's 16 bytes.
//!
//! Version 1 sealed with XChaCha20-Poly1305 under the shared key itself
//! (nonce `sender id ‖ counter ‖ 0^8`); a version-1 datagram is dropped as
//! `version`. Version 3 seals as version 2 did, but its launch carries
//! `lookups`, which a version-2 peer would fail to decode: a version-2
//! datagram is dropped as `version` too, so a node and central of
//! different versions never talk (the node stays down and `diatom status`
//! counts the drops) rather than fail job by job. Version 4 adds the
//! file request `OpenDir` (answered `OpenedDir`), which a version-3 home
//! would drop unanswered (the node's open would wait out its timeout): a
//! version-3 datagram is dropped as `version` for the same reason.

use crate::stats::DropReason;

/// First bytes of every datagram.
pub const MAGIC: [u8; 3] = *b"DTM";
/// The protocol version this crate speaks. Messages are bincode enums that
/// may only grow by appending variants; anything incompatible bumps this.
pub const VERSION: u8 = 4;
/// Header length in bytes.
pub const HEADER_LEN: usize = 32;
/// Authentication tag length (GCM's full 128-bit tag).
pub const TAG_LEN: usize = 16;
/// Smallest datagram that can be valid.
pub const MIN_DATAGRAM: usize = HEADER_LEN + TAG_LEN;
/// Largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Default maximum datagram size: under a 1500-byte Ethernet MTU with room
/// for IPv6/UDP headers and tunnels, so no IP fragmentation on real networks.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;

/// What the (decrypted) body of a datagram holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketKind {
    /// Reliability frames for a connection: acks, message chunks, pings.
    Data = 1,
    /// The replay-window challenge and its answer (see [`crate::replay`]).
    Handshake = 2,
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version (always [`VERSION`] after a successful decode).
    pub version: u8,
    /// What the body holds.
    pub kind: PacketKind,
    /// Which key sealed the datagram.
    pub key_id: u64,
    /// The sending endpoint instance.
    pub sender_id: u64,
    /// The sender's packet counter (nonce and replay-window position).
    pub counter: u64,
}

impl Header {
    /// Writes the 32-byte header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..3].copy_from_slice(&MAGIC);
        b[3] = self.version;
        b[4] = self.kind as u8;
        b[8..16].copy_from_slice(&self.key_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.sender_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.counter.to_le_bytes());
        b
    }

    /// Decodes and checks the header of a whole datagram: length first (so
    /// nothing is read out of bounds), then magic, version and kind.
    pub fn decode(datagram: &[u8]) -> Result<Header, DropReason> {
        if datagram.len() < MIN_DATAGRAM {
            return Err(DropReason::Truncated);
        }
        if datagram[..3] != MAGIC {
            return Err(DropReason::Magic);
        }
        if datagram[3] != VERSION {
            return Err(DropReason::Version);
        }
        let kind = match datagram[4] {
            1 => PacketKind::Data,
            2 => PacketKind::Handshake,
            _ => return Err(DropReason::Kind),
        };
        if datagram[5..8] != [0, 0, 0] {
            return Err(DropReason::Kind);
        }
        Ok(Header {
            version: VERSION,
            kind,
            key_id: le_u64(&datagram[8..16]),
            sender_id: le_u64(&datagram[16..24]),
            counter: le_u64(&datagram[24..32]),
        })
    }
}

/// Reads a little-endian u64 from exactly 8 bytes (callers slice exactly).
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: VERSION,
            kind: PacketKind::Data,
            key_id: 0x0102_0304_0506_0708,
            sender_id: u64::MAX - 5,
            counter: 42,
        }
    }

    fn datagram(h: &Header) -> Vec<u8> {
        let mut d = h.encode().to_vec();
        d.extend_from_slice(&[0u8; TAG_LEN]);
        d
    }

    #[test]
    fn header_round_trip() {
        for kind in [PacketKind::Data, PacketKind::Handshake] {
            let h = Header { kind, ..sample() };
            assert_eq!(Header::decode(&datagram(&h)), Ok(h));
        }
        let enc = sample().encode();
        assert_eq!(&enc[..3], b"DTM");
        assert_eq!(enc[3], VERSION);
        assert_eq!(enc[24], 42);
    }

    #[test]
    fn header_rejections() {
        let d = datagram(&sample());
        for len in 0..MIN_DATAGRAM {
            assert_eq!(Header::decode(&d[..len]), Err(DropReason::Truncated));
        }
        let mut bad = d.clone();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(DropReason::Magic));
        // Version 1 (XChaCha20-Poly1305, before per-sender subkeys), 2
        // (launches without lookups), 3 (no `OpenDir`) and any later one
        // are refused before any key is looked up.
        for v in [0, 1, 2, 3, 5, 255] {
            let mut bad = d.clone();
            bad[3] = v;
            assert_eq!(Header::decode(&bad), Err(DropReason::Version));
        }
        let mut bad = d.clone();
        bad[4] = 9;
        assert_eq!(Header::decode(&bad), Err(DropReason::Kind));
        let mut bad = d;
        bad[6] = 1;
        assert_eq!(Header::decode(&bad), Err(DropReason::Kind));
    }
}
