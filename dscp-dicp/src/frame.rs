//! The plaintext inside an opened datagram.
//!
//! A `Data` body is `packet number (u64) ‖ destination sender id (u64) ‖
//! frames...`. The packet number counts per connection (dense, so acks are
//! compact ranges); the header counter counts per sender across all peers
//! and serves only as nonce and replay position. The destination id is the
//! receiver instance the sender believes it talks to (0 = not known yet), so
//! a restarted receiver refuses traffic meant for its previous life.
//!
//! Frames (all integers little endian):
//! - `0x01 ACK`: ack delay in µs (u32), range count (u8, 1..=[`MAX_ACK_RANGES`]),
//!   then `(high, low)` u64 pairs, inclusive, strictly descending, disjoint.
//! - `0x02 PING`: asks for an ack (liveness).
//! - `0x03 CHUNK`: kind (u8: 1 request, 2 response), message id, floor,
//!   total length, offset (u64 each), length (u32), data. `floor` (requests
//!   only) is the sender's lowest request id still outstanding: the receiver
//!   may forget every request id below it.
//!
//! A `Handshake` body is `0x01 CHALLENGE nonce` or `0x02 ANSWER nonce`.
//!
//! Decoding checks every length before reading and never allocates.

use crate::wire::le_u64;

/// Bytes before the first frame of a data body.
pub const BODY_PREFIX: usize = 16;
/// Bytes of a chunk frame before its data.
pub const CHUNK_HEADER: usize = 1 + 1 + 8 + 8 + 8 + 8 + 4;
/// Most ranges in one ack frame.
pub const MAX_ACK_RANGES: usize = 32;
/// Size of an ack frame with `n` ranges.
pub const fn ack_len(n: usize) -> usize {
    1 + 4 + 1 + 16 * n
}
/// Size of a ping frame.
pub const PING_LEN: usize = 1;

const T_ACK: u8 = 1;
const T_PING: u8 = 2;
const T_CHUNK: u8 = 3;
const H_CHALLENGE: u8 = 1;
const H_ANSWER: u8 = 2;

/// Which half of an exchange a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgKind {
    /// A request (id chosen by the requester).
    Request = 1,
    /// The response to the request with the same id.
    Response = 2,
}

/// One piece of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Request or response.
    pub kind: MsgKind,
    /// The request id (for a response: the id of the request it answers).
    pub id: u64,
    /// Requests: the sender's lowest outstanding request id.
    pub floor: u64,
    /// Length of the whole message.
    pub total: u64,
    /// Where this piece goes.
    pub offset: u64,
    /// The piece.
    pub data: &'a [u8],
}

/// A decoded frame.
// The ack's fixed array makes it big, but frames only live briefly on the
// stack and decoding must not allocate, so no Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Acknowledges packet numbers.
    Ack(Ack),
    /// Asks for an ack.
    Ping,
    /// A piece of a message.
    Chunk(Chunk<'a>),
}

/// Acknowledged packet numbers: inclusive `(high, low)` ranges, descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// How long the receiver held the ack back, in µs.
    pub delay_us: u32,
    /// Number of valid entries in `ranges`.
    pub len: usize,
    /// The ranges (fixed array: decoding never allocates).
    pub ranges: [(u64, u64); MAX_ACK_RANGES],
}

impl Ack {
    /// The valid ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len]
    }
    /// Highest acknowledged packet number.
    pub fn largest(&self) -> u64 {
        self.ranges[0].0
    }
}

/// A handshake body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// "Prove you are live: echo this nonce."
    Challenge(u64),
    /// The echo.
    Answer(u64),
}

/// The body was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(le_u64(self.take(8)?))
    }
}

/// Splits a data body into (packet number, destination id, frame bytes).
pub fn split_body(body: &[u8]) -> Result<(u64, u64, &[u8]), Malformed> {
    if body.len() < BODY_PREFIX {
        return Err(Malformed);
    }
    Ok((
        le_u64(&body[..8]),
        le_u64(&body[8..16]),
        &body[BODY_PREFIX..],
    ))
}

/// Iterates over the frames of a body; yields `Err` once and stops on
/// malformed input.
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

/// Frames in `bytes` (the part after [`split_body`]'s prefix).
pub fn frames(bytes: &[u8]) -> Frames<'_> {
    Frames {
        r: Reader { b: bytes },
        failed: false,
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, Malformed>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.b.is_empty() {
            return None;
        }
        let f = decode_frame(&mut self.r);
        self.failed = f.is_err();
        Some(f)
    }
}

fn decode_frame<'a>(r: &mut Reader<'a>) -> Result<Frame<'a>, Malformed> {
    match r.u8()? {
        T_ACK => {
            let delay_us = r.u32()?;
            let n = usize::from(r.u8()?);
            if n == 0 || n > MAX_ACK_RANGES {
                return Err(Malformed);
            }
            let mut ranges = [(0u64, 0u64); MAX_ACK_RANGES];
            for i in 0..n {
                let (hi, lo) = (r.u64()?, r.u64()?);
                // Ranges must be well formed, descending and disjoint.
                if lo > hi || (i > 0 && hi >= ranges[i - 1].1) {
                    return Err(Malformed);
                }
                ranges[i] = (hi, lo);
            }
            Ok(Frame::Ack(Ack {
                delay_us,
                len: n,
                ranges,
            }))
        }
        T_PING => Ok(Frame::Ping),
        T_CHUNK => {
            let kind = match r.u8()? {
                1 => MsgKind::Request,
                2 => MsgKind::Response,
                _ => return Err(Malformed),
            };
            let (id, floor, total, offset) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let len = r.u32()? as usize;
            let data = r.take(len)?;
            let end = offset.checked_add(len as u64).ok_or(Malformed)?;
            if end > total {
                return Err(Malformed);
            }
            Ok(Frame::Chunk(Chunk {
                kind,
                id,
                floor,
                total,
                offset,
                data,
            }))
        }
        _ => Err(Malformed),
    }
}

/// Writes the data body prefix.
pub fn put_body_prefix(buf: &mut Vec<u8>, pn: u64, dest: u64) {
    buf.extend_from_slice(&pn.to_le_bytes());
    buf.extend_from_slice(&dest.to_le_bytes());
}

/// Writes an ack frame (at most [`MAX_ACK_RANGES`] ranges, descending).
pub fn put_ack(buf: &mut Vec<u8>, delay_us: u32, ranges: &[(u64, u64)]) {
    let n = ranges.len().min(MAX_ACK_RANGES);
    buf.push(T_ACK);
    buf.extend_from_slice(&delay_us.to_le_bytes());
    buf.push(n as u8);
    for (hi, lo) in &ranges[..n] {
        buf.extend_from_slice(&hi.to_le_bytes());
        buf.extend_from_slice(&lo.to_le_bytes());
    }
}

/// Writes a ping frame.
pub fn put_ping(buf: &mut Vec<u8>) {
    buf.push(T_PING);
}

/// Writes a chunk frame.
pub fn put_chunk(buf: &mut Vec<u8>, c: &Chunk<'_>) {
    buf.push(T_CHUNK);
    buf.push(c.kind as u8);
    for v in [c.id, c.floor, c.total, c.offset] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
    buf.extend_from_slice(c.data);
}

/// Encodes a handshake body.
pub fn put_handshake(buf: &mut Vec<u8>, h: Handshake) {
    let (t, n) = match h {
        Handshake::Challenge(n) => (H_CHALLENGE, n),
        Handshake::Answer(n) => (H_ANSWER, n),
    };
    buf.push(t);
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Decodes a handshake body (exactly 9 bytes).
pub fn decode_handshake(body: &[u8]) -> Result<Handshake, Malformed> {
    if body.len() != 9 {
        return Err(Malformed);
    }
    let n = le_u64(&body[1..9]);
    match body[0] {
        H_CHALLENGE => Ok(Handshake::Challenge(n)),
        H_ANSWER => Ok(Handshake::Answer(n)),
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut b = Vec::new();
        put_body_prefix(&mut b, 12, 34);
        put_ack(&mut b, 250, &[(100, 90), (80, 80), (5, 1)]);
        put_ping(&mut b);
        let chunk = Chunk {
            kind: MsgKind::Response,
            id: 9,
            floor: 3,
            total: 10,
            offset: 7,
            data: b"abc",
        };
        put_chunk(&mut b, &chunk);
        let (pn, dest, rest) = split_body(&b).unwrap();
        assert_eq!((pn, dest), (12, 34));
        let fs: Vec<_> = frames(rest).collect::<Result<_, _>>().unwrap();
        assert_eq!(fs.len(), 3);
        let Frame::Ack(a) = &fs[0] else { panic!() };
        assert_eq!(a.ranges(), &[(100, 90), (80, 80), (5, 1)]);
        assert_eq!(a.delay_us, 250);
        assert_eq!(fs[1], Frame::Ping);
        assert_eq!(fs[2], Frame::Chunk(chunk));
        assert_eq!(ack_len(3), 6 + 48);
    }

    #[test]
    fn malformed_frames() {
        let bad_acks: [&[(u64, u64)]; 2] = [&[(5, 6)], &[(10, 8), (8, 1)]];
        for ranges in bad_acks {
            let mut b = Vec::new();
            put_ack(&mut b, 0, ranges);
            assert!(frames(&b).any(|f| f.is_err()), "{ranges:?}");
        }
        // Chunk past its total, truncated chunk, unknown frame type.
        let mut b = Vec::new();
        let c = Chunk {
            kind: MsgKind::Request,
            id: 1,
            floor: 0,
            total: 2,
            offset: 0,
            data: b"abc",
        };
        put_chunk(&mut b, &c);
        assert!(frames(&b).any(|f| f.is_err()));
        let mut b = Vec::new();
        put_chunk(&mut b, &Chunk { total: 3, ..c });
        for cut in 0..b.len() {
            assert!(frames(&b[..cut]).any(|f| f.is_err()) || cut == 0);
        }
        assert!(frames(&[0x77]).any(|f| f.is_err()));
        assert!(split_body(&[0; 15]).is_err());
        assert_eq!(
            decode_handshake(&[1, 1, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Handshake::Challenge(1))
        );
        assert!(decode_handshake(&[3; 9]).is_err());
        assert!(decode_handshake(&[1; 10]).is_err());
    }
}
