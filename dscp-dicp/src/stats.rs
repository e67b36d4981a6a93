//! Counters of dropped datagrams, one per reason. They are shared (atomics
//! behind an `Arc`) so the driver can hand a snapshot to `diatom status
//! --json` and heartbeats without locking the endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a datagram (or a frame inside an authenticated one) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a header and an authentication tag.
    Truncated,
    /// Longer than the configured maximum datagram size.
    Oversized,
    /// Does not start with the protocol magic.
    Magic,
    /// An unknown protocol version.
    Version,
    /// An unknown packet kind or nonzero reserved header bits.
    Kind,
    /// The key id names no key in the keyring.
    UnknownKey,
    /// The authentication tag does not verify (forged, corrupted, or sealed
    /// with another key).
    BadAuth,
    /// Counter already seen or older than the replay window.
    Replay,
    /// Authentic, but from a sender without a replay window yet: dropped and
    /// answered with a challenge (see [`crate::replay`]).
    Unverified,
    /// Addressed to a previous instance of this endpoint (restarted).
    Stale,
    /// Carries our own sender id (a reflection).
    Reflected,
    /// Authenticated body that does not parse (a bug or a version skew).
    Decode,
    /// A message that would exceed the per-peer reassembly memory.
    ReassemblyLimit,
    /// A message larger than the configured maximum message size.
    MessageTooLarge,
    /// A new peer while the endpoint already tracks the maximum number.
    PeerLimit,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 15] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::Magic,
        DropReason::Version,
        DropReason::Kind,
        DropReason::UnknownKey,
        DropReason::BadAuth,
        DropReason::Replay,
        DropReason::Unverified,
        DropReason::Stale,
        DropReason::Reflected,
        DropReason::Decode,
        DropReason::ReassemblyLimit,
        DropReason::MessageTooLarge,
        DropReason::PeerLimit,
    ];

    /// The stable snake_case name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::Magic => "magic",
            DropReason::Version => "version",
            DropReason::Kind => "kind",
            DropReason::UnknownKey => "unknown_key",
            DropReason::BadAuth => "bad_auth",
            DropReason::Replay => "replay",
            DropReason::Unverified => "unverified",
            DropReason::Stale => "stale",
            DropReason::Reflected => "reflected",
            DropReason::Decode => "decode",
            DropReason::ReassemblyLimit => "reassembly_limit",
            DropReason::MessageTooLarge => "message_too_large",
            DropReason::PeerLimit => "peer_limit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Shared drop counters of one endpoint. Cloning shares the counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    counters: Arc<[AtomicU64; DropReason::ALL.len()]>,
}

/// A snapshot: reason name -> count, every reason present (zeros included)
/// so JSON consumers see a stable set of keys.
pub type DropStats = BTreeMap<String, u64>;

impl Stats {
    /// Fresh counters, all zero.
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Counts one drop.
    pub fn count(&self, reason: DropReason) {
        self.counters[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The current count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counters[reason.index()].load(Ordering::Relaxed)
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// A serde-serializable snapshot of every counter.
    pub fn snapshot(&self) -> DropStats {
        DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.get(*r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_match() {
        let s = Stats::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            s.count(*r);
        }
        let snap = s.snapshot();
        assert_eq!(snap.len(), DropReason::ALL.len());
        assert!(snap.values().all(|v| *v == 1));
        assert_eq!(s.total(), DropReason::ALL.len() as u64);
        assert_eq!(snap["bad_auth"], 1);
    }
}
