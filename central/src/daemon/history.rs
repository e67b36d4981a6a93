//! The last hour of the cluster's load and job throughput, sampled in
//! memory for the dashboard's charts: one sample every [`SAMPLE_EVERY`],
//! at most [`KEEP`] of them, lost when central restarts (the job table in
//! the store keeps the history that matters; this is only for the eye).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::rfc3339;

/// How often the tick takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// Samples kept: one hour's worth.
pub const KEEP: usize = 240;

/// The cluster at one moment, and what happened since the sample before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When (RFC 3339).
    #[serde(serialize_with = "ser_ms")]
    pub at: u64,
    /// Nodes up.
    pub nodes_up: u32,
    /// Their CPUs, added up.
    pub cpus: u32,
    /// Their one-minute load averages, added up.
    pub load: f64,
    /// Slots in use across the up nodes.
    pub slots_used: u32,
    /// Their slots, added up.
    pub slots: u32,
    /// Jobs started since the previous sample.
    pub started: u64,
    /// Jobs that ended (any way) since the previous sample.
    pub finished: u64,
}

fn ser_ms<S: serde::Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// The ring of samples and the event counts since the last one.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    started: u64,
    finished: u64,
    last: Option<Instant>,
}

impl History {
    /// Counts `n` jobs started.
    pub fn started(&mut self, n: u64) {
        self.started += n;
    }

    /// Takes back `n` jobs counted as started that never ran (a node
    /// refused them; central retries them as new jobs).
    pub fn discarded(&mut self, n: u64) {
        self.started = self.started.saturating_sub(n);
    }

    /// Counts `n` jobs ended.
    pub fn finished(&mut self, n: u64) {
        self.finished += n;
    }

    /// Is a sample due at `now`? (The first one is due at once.)
    pub fn due(&self, now: Instant) -> bool {
        match self.last {
            None => true,
            Some(t) => now.saturating_duration_since(t) >= SAMPLE_EVERY,
        }
    }

    /// Records `sample` (its `started`/`finished` are filled in here from
    /// the counts since the previous one), dropping the oldest past
    /// [`KEEP`].
    pub fn record(&mut self, now: Instant, mut sample: Sample) {
        sample.started = std::mem::take(&mut self.started);
        sample.finished = std::mem::take(&mut self.finished);
        if self.samples.len() >= KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.last = Some(now);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64) -> Sample {
        Sample {
            at,
            nodes_up: 1,
            cpus: 2,
            load: 0.5,
            slots_used: 0,
            slots: 2,
            started: 0,
            finished: 0,
        }
    }

    #[test]
    fn ring_keeps_an_hour_and_counts_per_interval() {
        let mut h = History::default();
        let t0 = Instant::now();
        assert!(h.due(t0));
        h.started(3);
        h.finished(2);
        h.record(t0, sample(0));
        assert!(!h.due(t0 + Duration::from_secs(1)));
        assert!(h.due(t0 + SAMPLE_EVERY));
        h.finished(1);
        h.record(t0 + SAMPLE_EVERY, sample(1));
        let got: Vec<(u64, u64)> = h.samples().map(|s| (s.started, s.finished)).collect();
        assert_eq!(got, [(3, 2), (0, 1)]);
        for i in 0..(KEEP as u64 + 10) {
            h.record(t0, sample(100 + i));
        }
        assert_eq!(h.samples().count(), KEEP);
        assert_eq!(h.samples().next().map(|s| s.at), Some(110));
    }
}
