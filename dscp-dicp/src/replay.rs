//! Replay protection.
//!
//! **The window.** Each (sender id, key id) pair gets an RFC 6479 sliding
//! bitmap window of [`WINDOW`] (4032) packet counters: a counter above the
//! highest seen is accepted and slides the window; one inside the window is
//! accepted once; one below it is rejected. The number of tracked pairs is
//! bounded ([`ReplayGuard::new`]); the least recently used is evicted.
//!
//! **First contact (why a challenge).** A window only protects what it
//! remembers. After a receiver restarts, or after a pair's window has been
//! evicted, an attacker could replay a datagram captured earlier from a
//! still-live sender, and a window started at that datagram would accept it.
//! Timestamps would need synchronized clocks and still accept replays inside
//! their tolerance. So Diatom never starts a window from an unverified
//! datagram: an authentic `Data` datagram from a pair without a window is
//! dropped (counted `unverified`) and answered with a `Handshake` challenge
//! carrying a fresh random 64-bit nonce, sealed with the same key. The sender
//! answers with the nonce in a datagram of its own; that datagram's counter
//! `c` was necessarily assigned after the challenge was made, so the window
//! starts *at* `c` with everything up to `c` marked seen, and only later
//! (fresh) counters are accepted. The sender, seeing the challenge, declares
//! its in-flight packets lost and retransmits them with new counters.
//!
//! Handshake datagrams themselves bypass the window: a replayed challenge
//! only makes the sender emit one small answer (no amplification); a
//! replayed answer names a nonce that is no longer pending (nonces are
//! single-use) and is ignored.
//!
//! **Delayed first deliveries.** A datagram that was never accepted (lost,
//! or dropped as unverified because it overtook the challenge answer) is
//! accepted if it shows up later inside the window: that is a late
//! delivery, not a replay, and is processed once. What it carries must
//! still not run twice, so each window also keeps the *request floor* of
//! connections the endpoint has forgotten (idle, lost, closed): request ids
//! below it never run again. Once the window itself is evicted, the next
//! challenge starts a window that refuses everything sent before it.
//!
//! **Limits.** First contact costs one extra round trip per (sender, key) and
//! receiver, and again after an eviction. Pending challenges are bounded and
//! also LRU-evicted, so a flood of authentic new senders (only possible with
//! the key) can delay contact but never causes acceptance of a replay.
//! Sender ids are 64-bit random per instance: a collision between two live
//! senders sharing a key would break both nonce uniqueness and the window
//! (probability ~n²/2^65).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// 64-bit words in the bitmap.
const WORDS: usize = 64;
/// Counters covered by the window. One word is kept as slack so that sliding
/// (which clears whole words) never clears a bit still inside the window.
pub const WINDOW: u64 = ((WORDS - 1) * 64) as u64;

/// Why the window rejected a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Already seen.
    Duplicate,
    /// Below the window.
    TooOld,
}

/// An RFC 6479 sliding window over one sender's counters.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    top: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// A window that accepts only counters strictly greater than `floor`.
    pub fn starting_after(floor: u64) -> ReplayWindow {
        let mut bits = [u64::MAX; WORDS];
        // Counters above `floor` in its own word are not seen; later words
        // are cleared as the window slides onto them.
        let (word, bit) = Self::pos(floor);
        bits[word] = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        ReplayWindow { top: floor, bits }
    }

    /// Whether `counter` would be accepted (does not record it).
    pub fn check(&self, counter: u64) -> Result<(), Rejected> {
        if counter > self.top {
            return Ok(());
        }
        if self.top - counter >= WINDOW {
            return Err(Rejected::TooOld);
        }
        let (word, bit) = Self::pos(counter);
        if self.bits[word] & (1 << bit) != 0 {
            Err(Rejected::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Checks and, if accepted, records `counter`.
    pub fn check_and_update(&mut self, counter: u64) -> Result<(), Rejected> {
        self.check(counter)?;
        if counter > self.top {
            let cur = self.top / 64;
            let new = counter / 64;
            let clear = (new - cur).min(WORDS as u64);
            for i in 1..=clear {
                self.bits[((cur + i) % WORDS as u64) as usize] = 0;
            }
            self.top = counter;
        }
        let (word, bit) = Self::pos(counter);
        self.bits[word] |= 1 << bit;
        Ok(())
    }

    fn pos(counter: u64) -> (usize, u32) {
        (
            ((counter / 64) % WORDS as u64) as usize,
            (counter % 64) as u32,
        )
    }
}

/// What the guard says about an authentic data datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fresh: process it (already recorded in the window).
    Fresh,
    /// Seen before or too old: drop.
    Replay(Rejected),
    /// No window for this pair: drop and send this challenge nonce (if
    /// `Some`; `None` means a challenge went out very recently).
    Unverified(Option<u64>),
}

struct Tracked {
    window: ReplayWindow,
    used: u64,
    /// Request ids below this from the pair were executed or abandoned by a
    /// connection that has since been forgotten (see `endpoint`).
    request_floor: u64,
}

struct Pending {
    nonce: u64,
    sent: Instant,
    used: u64,
}

/// Windows and pending challenges for every (sender id, key id) pair.
pub struct ReplayGuard {
    windows: HashMap<(u64, u64), Tracked>,
    pending: HashMap<(u64, u64), Pending>,
    capacity: usize,
    tick: u64,
    resend_after: Duration,
    trust_first: bool,
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("windows", &self.windows.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl ReplayGuard {
    /// Tracks at most `capacity` windows and `capacity` pending challenges;
    /// repeats a pending challenge at most once per `resend_after`.
    pub fn new(capacity: usize, resend_after: Duration) -> ReplayGuard {
        ReplayGuard {
            windows: HashMap::new(),
            pending: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
            resend_after,
            trust_first: false,
        }
    }

    /// Starts a pair's window at its first authentic datagram instead of
    /// challenging it. Sound only for keys that did not exist before this
    /// guard (a job's fresh session key): no older datagram can carry them.
    pub fn trusting_first_contact(mut self, yes: bool) -> ReplayGuard {
        self.trust_first = yes;
        self
    }

    /// Number of pairs with a window.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }

    /// Judges an authentic data datagram. `new_nonce` is called only when a
    /// new challenge must be made.
    pub fn check(
        &mut self,
        now: Instant,
        sender: u64,
        key: u64,
        counter: u64,
        new_nonce: impl FnOnce() -> u64,
    ) -> Verdict {
        self.tick += 1;
        if let Some(t) = self.windows.get_mut(&(sender, key)) {
            t.used = self.tick;
            return match t.window.check_and_update(counter) {
                Ok(()) => Verdict::Fresh,
                Err(r) => Verdict::Replay(r),
            };
        }
        let tick = self.tick;
        if self.trust_first {
            if self.windows.len() >= self.capacity {
                evict_lru(&mut self.windows, |t| t.used);
            }
            self.windows.insert(
                (sender, key),
                Tracked {
                    window: ReplayWindow::starting_after(counter),
                    used: tick,
                    request_floor: 0,
                },
            );
            return Verdict::Fresh;
        }
        if let Some(p) = self.pending.get_mut(&(sender, key)) {
            p.used = tick;
            if now.saturating_duration_since(p.sent) < self.resend_after {
                return Verdict::Unverified(None);
            }
            p.sent = now;
            return Verdict::Unverified(Some(p.nonce));
        }
        if self.pending.len() >= self.capacity {
            evict_lru(&mut self.pending, |p| p.used);
        }
        let nonce = new_nonce();
        self.pending.insert(
            (sender, key),
            Pending {
                nonce,
                sent: now,
                used: tick,
            },
        );
        Verdict::Unverified(Some(nonce))
    }

    /// Handles a challenge answer: if `nonce` is the pending one for the
    /// pair, starts its window after `counter` and returns true.
    pub fn complete(&mut self, sender: u64, key: u64, nonce: u64, counter: u64) -> bool {
        match self.pending.get(&(sender, key)) {
            Some(p) if p.nonce == nonce => {}
            _ => return false,
        }
        self.pending.remove(&(sender, key));
        self.tick += 1;
        if self.windows.len() >= self.capacity {
            evict_lru(&mut self.windows, |t| t.used);
        }
        let window = ReplayWindow::starting_after(counter);
        self.windows.insert(
            (sender, key),
            Tracked {
                window,
                used: self.tick,
                request_floor: 0,
            },
        );
        true
    }

    /// The request floor remembered for a pair (0 if none).
    pub fn request_floor(&self, sender: u64, key: u64) -> u64 {
        self.windows
            .get(&(sender, key))
            .map_or(0, |t| t.request_floor)
    }

    /// Remembers, for as long as the pair's window lives, that request ids
    /// below `floor` must never run again. Once the window is evicted the
    /// pair must pass a new challenge, whose window refuses every datagram
    /// sent before it, so the memory is not needed beyond that.
    pub fn raise_request_floor(&mut self, sender: u64, key: u64, floor: u64) {
        if let Some(t) = self.windows.get_mut(&(sender, key)) {
            t.request_floor = t.request_floor.max(floor);
        }
    }

    /// Forgets every window and challenge under a key (when it is removed).
    pub fn forget_key(&mut self, key: u64) {
        self.windows.retain(|(_, k), _| *k != key);
        self.pending.retain(|(_, k), _| *k != key);
    }
}

/// Removes the least recently used entry. O(n), but it only runs when a new
/// authenticated sender arrives while the table is full.
fn evict_lru<V>(map: &mut HashMap<(u64, u64), V>, used: impl Fn(&V) -> u64) {
    if let Some(k) = map.iter().min_by_key(|(_, v)| used(v)).map(|(k, _)| *k) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusting_first_contact_starts_the_window_at_once() {
        let now = Instant::now();
        let mut g = ReplayGuard::new(8, Duration::from_millis(100)).trusting_first_contact(true);
        let fail = || -> u64 { panic!("no challenge in trusting mode") };
        assert_eq!(g.check(now, 1, 9, 5, fail), Verdict::Fresh);
        // The same datagram again is a replay; later ones are fresh once.
        assert_eq!(
            g.check(now, 1, 9, 5, fail),
            Verdict::Replay(Rejected::Duplicate)
        );
        assert_eq!(g.check(now, 1, 9, 6, fail), Verdict::Fresh);
        assert_eq!(
            g.check(now, 1, 9, 6, fail),
            Verdict::Replay(Rejected::Duplicate)
        );
        // Earlier counters than the first one seen count as seen (lost and
        // resent by the sender under new counters).
        assert!(matches!(g.check(now, 1, 9, 4, fail), Verdict::Replay(_)));
        // The default guard challenges.
        let mut c = ReplayGuard::new(8, Duration::from_millis(100));
        assert!(matches!(
            c.check(now, 1, 9, 5, || 77),
            Verdict::Unverified(Some(77))
        ));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::starting_after(0);
        assert_eq!(w.check_and_update(0), Err(Rejected::Duplicate));
        assert_eq!(w.check_and_update(1), Ok(()));
        assert_eq!(w.check_and_update(1), Err(Rejected::Duplicate));
        // Out of order inside the window: each once.
        assert_eq!(w.check_and_update(10), Ok(()));
        for c in 2..10 {
            assert_eq!(w.check_and_update(c), Ok(()), "{c}");
            assert_eq!(w.check_and_update(c), Err(Rejected::Duplicate), "{c}");
        }
        // Exactly at the window's lower edge and just below it.
        let top = 10_000;
        assert_eq!(w.check_and_update(top), Ok(()));
        assert_eq!(w.check(top - WINDOW + 1), Ok(()));
        assert_eq!(w.check_and_update(top - WINDOW + 1), Ok(()));
        assert_eq!(w.check(top - WINDOW + 1), Err(Rejected::Duplicate));
        assert_eq!(w.check(top - WINDOW), Err(Rejected::TooOld));
        assert_eq!(w.check(0), Err(Rejected::TooOld));
        const { assert!(WINDOW >= 2048) };
    }

    #[test]
    fn big_jump_forward_clears_old_bits() {
        let mut w = ReplayWindow::starting_after(0);
        for c in 1..=200 {
            w.check_and_update(c).unwrap();
        }
        let far = 1_000_000_007;
        w.check_and_update(far).unwrap();
        assert_eq!(w.check(far), Err(Rejected::Duplicate));
        // Everything inside the new window that was never seen is fresh even
        // where the ring position coincides with old, set bits.
        for c in (far - WINDOW + 1)..far {
            assert_eq!(w.check(c), Ok(()), "{c}");
        }
        assert_eq!(w.check(200), Err(Rejected::TooOld));
        assert_eq!(w.check(u64::MAX), Ok(()));
        w.check_and_update(u64::MAX).unwrap();
        assert_eq!(w.check(u64::MAX), Err(Rejected::Duplicate));
    }

    #[test]
    fn window_matches_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut w = ReplayWindow::starting_after(0);
        let mut seen = std::collections::HashSet::new();
        let mut top = 0u64;
        for _ in 0..100_000 {
            let c = if rng.gen_bool(0.5) {
                top + rng.gen_range(1..200)
            } else {
                top.saturating_sub(rng.gen_range(0..WINDOW + 100)).max(1)
            };
            let expect = if c > top {
                Ok(())
            } else if top - c >= WINDOW {
                Err(Rejected::TooOld)
            } else if seen.contains(&c) {
                Err(Rejected::Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(w.check_and_update(c), expect, "counter {c} top {top}");
            if expect.is_ok() {
                seen.insert(c);
                top = top.max(c);
            }
        }
    }

    #[test]
    fn guard_challenge_flow() {
        let now = Instant::now();
        let mut g = ReplayGuard::new(2, Duration::from_millis(5));
        assert_eq!(g.check(now, 1, 0, 5, || 77), Verdict::Unverified(Some(77)));
        // Repeated too soon: no second challenge; later: the same nonce.
        assert_eq!(g.check(now, 1, 0, 6, || 78), Verdict::Unverified(None));
        let later = now + Duration::from_millis(6);
        assert_eq!(
            g.check(later, 1, 0, 6, || 79),
            Verdict::Unverified(Some(77))
        );
        assert!(!g.complete(1, 0, 78, 10), "wrong nonce");
        assert!(!g.complete(1, 1, 77, 10), "wrong key");
        assert!(g.complete(1, 0, 77, 10));
        assert!(!g.complete(1, 0, 77, 11), "nonce is single-use");
        // Everything up to the answer's counter is refused, later accepted.
        assert_eq!(
            g.check(now, 1, 0, 6, || 0),
            Verdict::Replay(Rejected::Duplicate)
        );
        assert_eq!(
            g.check(now, 1, 0, 10, || 0),
            Verdict::Replay(Rejected::Duplicate)
        );
        assert_eq!(g.check(now, 1, 0, 11, || 0), Verdict::Fresh);
        assert_eq!(
            g.check(now, 1, 0, 11, || 0),
            Verdict::Replay(Rejected::Duplicate)
        );
        // LRU eviction: capacity 2.
        for s in [2u64, 3] {
            let Verdict::Unverified(Some(n)) = g.check(now, s, 0, 1, || s * 100) else {
                panic!()
            };
            assert!(g.complete(s, 0, n, 1));
        }
        assert_eq!(g.tracked(), 2);
        // Sender 1 was least recently used: evicted, must be challenged again.
        assert!(matches!(
            g.check(now, 1, 0, 12, || 5),
            Verdict::Unverified(Some(5))
        ));
        g.forget_key(0);
        assert_eq!(g.tracked(), 0);
    }
}
