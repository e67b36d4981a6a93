//! Messages in flight: the sender's copy cut into fixed chunks with an acked
//! bitmap, and the receiver's reassembly buffer (for a big message, with a
//! short-lived thread committing its pages ahead of the data: the one place
//! the sans-I/O core starts a thread; at most one per partial message, so
//! bounded by `Config::reassembly_limit` / 4 MiB, and each ends once its
//! buffer is committed).
//!
//! Big reassembly buffers can be reused: the owner hands a delivered
//! message back ([`crate::endpoint::Endpoint::recycle`]) and the next big
//! message of about the same size is reassembled in it ([`BufPool`]).
//!
//! The chunk size is fixed per message when it is queued (so a chunk always
//! fits one datagram of its connection, retransmissions included); the
//! receiver tracks byte ranges and so does not need to know it.

use super::ranges::RangeSet;

/// Identifies a chunk of a message: (kind, id) and the chunk index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub key: MsgKey,
    pub index: u64,
}

/// A message is named by its kind and request id.
pub(crate) type MsgKey = (crate::frame::MsgKind, u64);

/// The sender's copy of a message.
#[derive(Debug)]
pub(crate) struct OutMsg {
    data: Vec<u8>,
    chunk: usize,
    /// Number of chunks (a 0-byte message has one empty chunk).
    pub n: u64,
    /// Next chunk never sent yet.
    pub next: u64,
    acked: Vec<u64>,
    acked_n: u64,
}

impl OutMsg {
    pub fn new(data: Vec<u8>, chunk: usize) -> OutMsg {
        let chunk = chunk.max(1);
        let n = (data.len().div_ceil(chunk)).max(1) as u64;
        OutMsg {
            data,
            chunk,
            n,
            next: 0,
            acked: vec![0; n.div_ceil(64) as usize],
            acked_n: 0,
        }
    }

    pub fn total(&self) -> u64 {
        self.data.len() as u64
    }

    /// Offset and bytes of chunk `i`.
    pub fn chunk(&self, i: u64) -> (u64, &[u8]) {
        let start = (i as usize).saturating_mul(self.chunk).min(self.data.len());
        let end = start.saturating_add(self.chunk).min(self.data.len());
        (start as u64, &self.data[start..end])
    }

    pub fn is_acked(&self, i: u64) -> bool {
        self.acked
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Marks chunk `i` acked; returns true when the whole message is.
    pub fn ack(&mut self, i: u64) -> bool {
        if i < self.n && !self.is_acked(i) {
            self.acked[(i / 64) as usize] |= 1 << (i % 64);
            self.acked_n += 1;
        }
        self.acked_n == self.n
    }
}

/// Messages at least this big have their buffer populated ahead of the
/// data: filled in fragment by fragment, a 256 MiB message otherwise takes
/// 65536 separate page faults (costly in a VM). Memory for the whole message
/// is already charged to the peer's reassembly limit, so committing it early
/// changes no bound.
const POPULATE: usize = 4 << 20;

/// How much a populating thread commits per call, so that it can be
/// stopped (and joined) quickly.
const POPULATE_STEP: usize = 2 << 20;

/// Populates the page-aligned part of `start..start + len`
/// (MADV_POPULATE_WRITE, Linux 5.14+; on older kernels the hint fails and
/// pages fault in as the data arrives).
///
/// # Safety
/// The range must lie inside a live allocation for the whole call.
unsafe fn populate(start: usize, len: usize) {
    const PAGE: usize = 4096;
    let end = (start + len) / PAGE * PAGE;
    let start = start.next_multiple_of(PAGE);
    if end > start {
        // SAFETY: the caller keeps the range allocated; populating maps
        // zero pages where none are mapped yet and leaves the contents of
        // mapped ones alone, so a concurrent writer sees no change.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

/// A thread committing the pages of a big reassembly buffer while the
/// receiving thread fills it. Committing 256 MiB costs ~60 ms of kernel
/// time (page faults, zeroing); done inline it stalled the receiving thread,
/// the bottleneck of a bulk transfer, and with it the sender, whose window
/// filled up meanwhile.
#[derive(Debug)]
struct Populator {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Populator {
    /// Starts committing `buf` in steps; inline if no thread can be made.
    fn start(buf: &[u8]) -> Option<Populator> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (addr, len) = (buf.as_ptr() as usize, buf.len());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("dscp-dicp-populate".into())
            .spawn(move || {
                let mut off = 0;
                while off < len && !flag.load(Ordering::Relaxed) {
                    let step = POPULATE_STEP.min(len - off);
                    // SAFETY: `Reassembly` owns the buffer and stops and
                    // joins this thread before the buffer can be freed
                    // (drop) or handed out (`into_data`).
                    unsafe { populate(addr + off, step) };
                    off += step;
                }
            });
        match spawned {
            Ok(thread) => Some(Populator {
                stop,
                thread: Some(thread),
            }),
            Err(_) => {
                // SAFETY: `buf` is borrowed for the whole call.
                unsafe { populate(addr, len) };
                None
            }
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Populator {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Messages at least this big are reassembled in a recycled buffer when
/// one fits, and only buffers this big are kept.
pub(crate) const RECYCLE_MIN: usize = 1 << 20;

/// Spare reassembly buffers handed back by the endpoint's owner, at most
/// `limit` bytes of them. A fresh buffer costs a page fault per 4 KiB (and
/// zeroing) each time: a fetch on a node receives 8 MiB `Read` answers one
/// after another, and glibc maps and unmaps (or trims) such buffers, so
/// without reuse each answer touched new memory. A reused buffer keeps its
/// old bytes: nothing reads them, since a message is delivered only once
/// every byte of it has been overwritten by arriving data.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    spare: Vec<Vec<u8>>,
    /// Capacity held in `spare`.
    held: usize,
    limit: usize,
}

impl BufPool {
    pub fn new(limit: usize) -> BufPool {
        BufPool {
            limit,
            ..BufPool::default()
        }
    }

    /// A spare buffer resized to `total` bytes: the smallest whose
    /// capacity holds `total` without wasting more than half of it.
    fn take(&mut self, total: usize) -> Option<Vec<u8>> {
        if total < RECYCLE_MIN {
            return None;
        }
        let (i, _) = self
            .spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= total && b.capacity() / 2 <= total)
            .min_by_key(|(_, b)| b.capacity())?;
        let mut buf = self.spare.swap_remove(i);
        self.held -= buf.capacity();
        // Zeroes only what grows (recycled answers mostly have one size).
        buf.resize(total, 0);
        Some(buf)
    }

    /// Keeps `buf` for a later message if it is big enough and there is
    /// room; otherwise it is freed.
    pub fn give(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if buf.len() >= RECYCLE_MIN && self.held + cap <= self.limit {
            self.held += cap;
            self.spare.push(buf);
        }
    }
}

/// The receiver's partial copy of a message.
#[derive(Debug)]
pub(crate) struct Reassembly {
    // Declared before `buf` so that it is dropped (joined) first.
    populator: Option<Populator>,
    buf: Vec<u8>,
    have: RangeSet,
}

impl Reassembly {
    /// `total` has been checked against the limits by the caller. A spare
    /// buffer from `pool` is used when one fits; otherwise a zeroed
    /// allocation, lazily backed by the kernel for large sizes (and then
    /// committed ahead of the data).
    pub fn new(total: usize, pool: &mut BufPool) -> Reassembly {
        let (buf, populator) = match pool.take(total) {
            Some(buf) => (buf, None),
            None => {
                let buf = vec![0; total];
                let populator = if total >= POPULATE {
                    Populator::start(&buf)
                } else {
                    None
                };
                (buf, populator)
            }
        };
        Reassembly {
            populator,
            buf,
            have: RangeSet::default(),
        }
    }

    pub fn total(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Copies a piece in (the caller checked `offset + data.len() <=
    /// total`); returns true once every byte has arrived.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> bool {
        let end = offset + data.len() as u64;
        if !self.have.contains_range(offset, end) {
            self.buf[offset as usize..end as usize].copy_from_slice(data);
            self.have.insert(offset, end);
        }
        self.have.covered() == self.total()
    }

    pub fn into_data(mut self) -> Vec<u8> {
        if let Some(mut p) = self.populator.take() {
            p.finish();
        }
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_boundaries() {
        for (len, chunk, n) in [
            (0, 10, 1),
            (1, 10, 1),
            (10, 10, 1),
            (11, 10, 2),
            (30, 10, 3),
            (31, 10, 4),
        ] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut m = OutMsg::new(data.clone(), chunk);
            assert_eq!(m.n, n, "len {len}");
            let mut joined = Vec::new();
            for i in 0..m.n {
                let (off, piece) = m.chunk(i);
                assert_eq!(off as usize, joined.len());
                assert!(piece.len() <= chunk);
                joined.extend_from_slice(piece);
            }
            assert_eq!(joined, data);
            for i in (0..m.n).rev() {
                assert_eq!(m.ack(i), i == 0);
                assert_eq!(m.ack(i), i == 0, "idempotent");
            }
        }
    }

    #[test]
    fn reassembly_any_order_and_duplicates() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let m = OutMsg::new(data.clone(), 64);
        let mut r = Reassembly::new(data.len(), &mut BufPool::default());
        let mut order: Vec<u64> = (0..m.n).rev().collect();
        order.insert(3, 5);
        let mut done = false;
        for (k, i) in order.iter().enumerate() {
            let (off, piece) = m.chunk(*i);
            done = r.insert(off, piece);
            assert_eq!(done, k == order.len() - 1);
        }
        assert!(done);
        assert_eq!(r.into_data(), data);
        let mut empty = Reassembly::new(0, &mut BufPool::default());
        assert!(empty.insert(0, &[]));
    }

    #[test]
    fn big_reassembly_populated_in_the_background() {
        // Big enough for the populating thread; filled from both ends while
        // it runs, then dropped half-done (the thread is stopped and joined).
        let total = POPULATE * 2 + 12_345;
        let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let mut r = Reassembly::new(total, &mut BufPool::default());
        assert!(r.populator.is_some());
        let m = OutMsg::new(data.clone(), 65_000);
        let mut done = false;
        for i in 0..m.n {
            let j = if i % 2 == 0 { i / 2 } else { m.n - 1 - i / 2 };
            let (off, piece) = m.chunk(j);
            done = r.insert(off, piece);
        }
        assert!(done);
        assert_eq!(r.into_data(), data);
        let mut half = Reassembly::new(total, &mut BufPool::default());
        half.insert(0, &data[..1000]);
        drop(half);
    }

    #[test]
    fn recycled_buffers_are_bounded_and_fully_overwritten() {
        let mut pool = BufPool::new(3 * RECYCLE_MIN);
        // Small buffers are not kept; big ones up to the limit.
        pool.give(vec![1; RECYCLE_MIN - 1]);
        assert!(pool.spare.is_empty());
        pool.give(vec![1; RECYCLE_MIN]);
        pool.give(vec![2; 2 * RECYCLE_MIN]);
        pool.give(vec![3; RECYCLE_MIN]);
        assert_eq!(pool.spare.len(), 2);
        assert!(pool.held <= 3 * RECYCLE_MIN);
        // No spare for a small message, nor one less than half used.
        assert!(pool.take(RECYCLE_MIN - 1).is_none());
        assert!(pool.take(5 * RECYCLE_MIN).is_none());
        // A message reassembled in a spare buffer arrives whole and equal
        // to what was sent, whatever the buffer held before.
        let total = RECYCLE_MIN + 4321;
        let data: Vec<u8> = (0..total).map(|i| (i * 13 % 251) as u8).collect();
        let mut r = Reassembly::new(total, &mut pool);
        assert!(r.populator.is_none(), "a spare buffer was used");
        assert_eq!(pool.spare.len(), 1);
        let m = OutMsg::new(data.clone(), 65_000);
        let mut done = false;
        for i in (0..m.n).rev() {
            let (off, piece) = m.chunk(i);
            done = r.insert(off, piece);
        }
        assert!(done);
        let out = r.into_data();
        assert_eq!(out, data);
        pool.give(out);
        assert_eq!(pool.spare.len(), 2);
    }
}
