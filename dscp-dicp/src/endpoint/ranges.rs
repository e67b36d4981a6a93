//! A set of disjoint half-open `u64` ranges, merged on insert. Used for the
//! packet numbers a connection has received (the source of ack frames) and
//! for the bytes of a message under reassembly.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    /// start -> end (exclusive)
    map: BTreeMap<u64, u64>,
    covered: u64,
}

impl RangeSet {
    /// Adds `[lo, hi)`; returns how many values were not covered before.
    pub fn insert(&mut self, mut lo: u64, mut hi: u64) -> u64 {
        if lo >= hi {
            return 0;
        }
        let mut removed = 0;
        if let Some((&s, &e)) = self.map.range(..=lo).next_back() {
            if e >= hi {
                return 0;
            }
            if e >= lo {
                self.map.remove(&s);
                removed += e - s;
                lo = s;
            }
        }
        while let Some((&s, &e)) = self.map.range(lo..=hi).next() {
            self.map.remove(&s);
            removed += e - s;
            hi = hi.max(e);
        }
        self.map.insert(lo, hi);
        let added = (hi - lo) - removed;
        self.covered += added;
        added
    }

    /// How many values are covered.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Whether `[lo, hi)` is entirely covered.
    pub fn contains_range(&self, lo: u64, hi: u64) -> bool {
        if lo >= hi {
            return true;
        }
        matches!(self.map.range(..=lo).next_back(), Some((_, &e)) if e >= hi)
    }

    /// The newest `n` ranges as inclusive `(high, low)`, descending.
    pub fn newest(&self, n: usize, out: &mut Vec<(u64, u64)>) {
        out.clear();
        out.extend(self.map.iter().rev().take(n).map(|(&s, &e)| (e - 1, s)));
    }

    /// Drops the oldest ranges beyond `keep` (acks only ever report the
    /// newest ones, so older history is useless).
    pub fn truncate_oldest(&mut self, keep: usize) {
        while self.map.len() > keep {
            if let Some((s, e)) = self.map.pop_first() {
                self.covered -= e - s;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_like_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let mut set = RangeSet::default();
            let mut model = [false; 300];
            for _ in 0..60 {
                let lo = rng.gen_range(0..290u64);
                let hi = lo + rng.gen_range(0..10u64);
                let before = model.iter().filter(|b| **b).count() as u64;
                let added = set.insert(lo, hi);
                for b in &mut model[lo as usize..hi as usize] {
                    *b = true;
                }
                let after = model.iter().filter(|b| **b).count() as u64;
                assert_eq!(added, after - before);
                assert_eq!(set.covered(), after);
                let (a, b) = (rng.gen_range(0..300u64), rng.gen_range(0..300u64));
                let (a, b) = (a.min(b), a.max(b));
                assert_eq!(
                    set.contains_range(a, b),
                    model[a as usize..b as usize].iter().all(|x| *x)
                );
            }
            let mut out = Vec::new();
            set.newest(100, &mut out);
            for w in out.windows(2) {
                assert!(w[1].0 + 1 < w[0].1, "disjoint, non-adjacent, descending");
            }
        }
    }
}
