//! Round-trip time estimation and the probe timeout, RFC 6298 / RFC 9002
//! style: SRTT and RTTVAR smoothed with gains 1/8 and 1/4, the peer's
//! reported ack delay subtracted, and exponential backoff with a cap.

use std::time::Duration;

/// Timer granularity: no timeout shorter than this beyond SRTT.
const GRANULARITY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub(crate) struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Duration,
    initial: Duration,
}

impl Rtt {
    pub fn new(initial: Duration) -> Rtt {
        Rtt {
            srtt: None,
            rttvar: initial / 2,
            latest: initial,
            initial,
        }
    }

    /// Feeds one sample (time from sending a packet to receiving its ack).
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        // Only subtract the peer's delay when it leaves a plausible sample.
        let adjusted = if sample > ack_delay {
            sample - ack_delay
        } else {
            sample
        };
        self.latest = adjusted;
        match self.srtt {
            None => {
                self.srtt = Some(adjusted);
                self.rttvar = adjusted / 2;
            }
            Some(srtt) => {
                let dev = srtt.abs_diff(adjusted);
                self.rttvar = (self.rttvar * 3 + dev) / 4;
                self.srtt = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    pub fn smoothed(&self) -> Duration {
        self.srtt.unwrap_or(self.initial)
    }

    /// Time after which an unacknowledged packet counts as lost when newer
    /// ones were acked: 9/8 of the larger of SRTT and the latest sample.
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed().max(self.latest) * 9 / 8).max(GRANULARITY)
    }

    /// The probe timeout with `backoff` doublings, capped at `cap`.
    pub fn pto(&self, max_ack_delay: Duration, backoff: u32, cap: Duration) -> Duration {
        let base = self.smoothed() + (self.rttvar * 4).max(GRANULARITY) + max_ack_delay;
        base.saturating_mul(1u32 << backoff.min(16)).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn estimator_and_backoff() {
        let mut r = Rtt::new(100 * MS);
        assert_eq!(r.pto(Duration::ZERO, 0, Duration::MAX), 100 * MS + 200 * MS);
        r.update(40 * MS, Duration::ZERO);
        assert_eq!(r.smoothed(), 40 * MS);
        assert_eq!(r.pto(Duration::ZERO, 0, Duration::MAX), 40 * MS + 80 * MS);
        // Ack delay is subtracted.
        r.update(45 * MS, 5 * MS);
        assert_eq!(r.smoothed(), 40 * MS);
        // Converges to a steady sample, variance shrinks.
        for _ in 0..200 {
            r.update(10 * MS, Duration::ZERO);
        }
        assert!(r.smoothed() < 11 * MS && r.smoothed() >= 10 * MS);
        let base = r.pto(Duration::ZERO, 0, Duration::MAX);
        assert!(base >= 11 * MS && base < 12 * MS, "{base:?}");
        assert_eq!(r.pto(Duration::ZERO, 3, Duration::MAX), base * 8);
        assert_eq!(r.pto(Duration::ZERO, 30, 2000 * MS), 2000 * MS);
    }
}
