//! Sinks: where the bulk of one expected response goes instead of a
//! reassembly buffer. The owner of a request that expects a big answer of a
//! known shape (a node fetching 8 MiB of a file: a few bytes of reply
//! header, then the file's bytes) names the answer's exact length and how
//! many leading bytes it wants back as the payload; every other byte is
//! handed to the sink at its place as the datagram carrying it is opened,
//! so the answer is copied once (into the cache object) instead of into a
//! reassembly buffer first and out of it later.
//!
//! A sink only ever receives authenticated bytes (datagrams are opened,
//! i.e. their tag checked, before any frame is looked at), only for the
//! request it was given with, only while that request is outstanding, only
//! when the response's length is the one the owner named, and never after
//! the response was delivered or the request cancelled. A response of another length (an error, a short
//! read) is reassembled and delivered as usual.

use super::ranges::RangeSet;

/// Receives the bytes of one response beyond its first
/// [`Sink::skip`] (see the module documentation).
pub trait SinkTarget: Send {
    /// Stores `data`, which belongs at `at` counted from the first byte
    /// after the skipped head; `at + data.len()` never exceeds the sink's
    /// `total - skip`. Every call comes before the response is delivered;
    /// a piece overlapping bytes already written (a retransmission cut
    /// differently, which senders do not do) may write them again.
    fn write(&mut self, at: u64, data: &[u8]);
}

/// What a request's sink expects, and where the bytes go.
pub struct Sink {
    /// The response's exact length. A response of another length does not
    /// use the sink.
    pub total: u64,
    /// Leading bytes delivered as the payload of
    /// [`Event::ResponseSunk`](super::Event::ResponseSunk) (at most
    /// `total`; a reply header is a few bytes).
    pub skip: usize,
    /// Where bytes `skip..total` go.
    pub target: Box<dyn SinkTarget>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("total", &self.total)
            .field("skip", &self.skip)
            .finish()
    }
}

/// A sink being filled.
#[derive(Debug)]
pub(crate) struct SinkFill {
    sink: Sink,
    head: Vec<u8>,
    have: RangeSet,
}

impl SinkFill {
    /// `None` when `skip` exceeds `total` (nothing to sink).
    pub fn new(sink: Sink) -> Option<SinkFill> {
        let skip = u64::try_from(sink.skip).ok()?;
        (skip <= sink.total).then(|| SinkFill {
            head: vec![0; sink.skip],
            sink,
            have: RangeSet::default(),
        })
    }

    /// The length a response must have to use this sink.
    pub fn total(&self) -> u64 {
        self.sink.total
    }

    /// Takes a piece at `offset` of the response (the caller checked
    /// `offset + data.len() <= total`); returns true once every byte has
    /// arrived. Pieces already received are ignored.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> bool {
        let end = offset + data.len() as u64;
        if !self.have.contains_range(offset, end) {
            let skip = self.sink.skip as u64;
            if offset < skip {
                // The part inside the head (`skip` fits a usize).
                let head_end = end.min(skip);
                self.head[offset as usize..head_end as usize]
                    .copy_from_slice(&data[..(head_end - offset) as usize]);
            }
            if end > skip {
                let from = offset.max(skip);
                self.sink
                    .target
                    .write(from - skip, &data[(from - offset) as usize..]);
            }
            self.have.insert(offset, end);
        }
        self.have.covered() == self.sink.total
    }

    /// The head, once complete.
    pub fn into_head(self) -> Vec<u8> {
        self.head
    }
}
