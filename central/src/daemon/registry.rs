//! The live node table central schedules from: who is up, at which address,
//! how many slots each has and how many of them central has filled.
//!
//! Pure state, no I/O: time is passed in, so liveness and placement are unit
//! tested without sleeping. The persistent copy lives in the store; this
//! table is rebuilt from heartbeats after a restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a node tells central about itself in every heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// Node name (unique in the cluster).
    pub name: String,
    /// The UDP address its datagrams come from.
    pub addr: SocketAddr,
    /// CPUs.
    pub cpus: u32,
    /// Concurrent job slots.
    pub slots: u32,
    /// Jobs running there now, as the node counts them.
    pub running: u32,
    /// One-minute load average.
    pub load: f64,
}

/// A node as central sees it.
#[derive(Debug, Clone)]
pub struct LiveNode {
    /// The latest report.
    pub report: NodeReport,
    /// When central last heard from it.
    pub last_seen: Instant,
    /// Up (heard from within the timeout) or down.
    pub up: bool,
    /// Jobs central placed there that have not finished.
    pub placed: u32,
}

impl LiveNode {
    /// Slots in use: the larger of central's and the node's count, so a
    /// node restarted with jobs central forgot is not overfilled.
    pub fn slots_used(&self) -> u32 {
        self.placed.max(self.report.running)
    }

    fn free(&self) -> u32 {
        self.report.slots.saturating_sub(self.slots_used())
    }

    /// Lower is emptier: fraction of slots in use, then load per CPU.
    fn pressure(&self) -> (u64, u64) {
        let slots = u64::from(self.report.slots.max(1));
        let used = u64::from(self.slots_used()) * 1_000_000 / slots;
        let load = (self.report.load.max(0.0) * 1000.0) as u64 / u64::from(self.report.cpus.max(1));
        (used, load)
    }
}

/// Why no node could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No node is up at all.
    #[error("no node is up")]
    NoNodes,
    /// `--node NAME` named a node central has never heard of.
    #[error("no node named {0:?}")]
    Unknown(String),
    /// `--node NAME` named a node that is down.
    #[error("node {0} is down")]
    Down(String),
    /// Every eligible node's slots are full; the caller may wait.
    #[error("all slots are busy")]
    Busy,
}

/// The node table.
#[derive(Debug)]
pub struct Registry {
    nodes: BTreeMap<String, LiveNode>,
    timeout: Duration,
}

impl Registry {
    /// A table where a node silent for `timeout` is down.
    pub fn new(timeout: Duration) -> Self {
        Self {
            nodes: BTreeMap::new(),
            timeout,
        }
    }

    /// Records a heartbeat (or registration). Returns true when the node
    /// was unknown or down before, or comes from a new address (it
    /// restarted): central then records it afresh.
    pub fn heartbeat(&mut self, now: Instant, report: NodeReport) -> bool {
        match self.nodes.get_mut(&report.name) {
            Some(n) => {
                let fresh = !n.up || n.report.addr != report.addr;
                n.report = report;
                n.last_seen = now;
                n.up = true;
                fresh
            }
            None => {
                let name = report.name.clone();
                self.nodes.insert(
                    name,
                    LiveNode {
                        report,
                        last_seen: now,
                        up: true,
                        placed: 0,
                    },
                );
                true
            }
        }
    }

    /// Marks nodes silent past the timeout as down; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        for (name, n) in &mut self.nodes {
            if n.up && now.saturating_duration_since(n.last_seen) > self.timeout {
                n.up = false;
                n.placed = 0;
                gone.push(name.clone());
            }
        }
        gone
    }

    /// Marks one node down now (e.g. the protocol reported it lost).
    pub fn mark_down(&mut self, name: &str) -> bool {
        match self.nodes.get_mut(name) {
            Some(n) if n.up => {
                n.up = false;
                n.placed = 0;
                true
            }
            _ => false,
        }
    }

    /// Chooses a node for a new job: the named one, or the least loaded up
    /// node with a free slot. Does not reserve; see [`Registry::place`].
    pub fn pick(&self, want: Option<&str>) -> Result<&LiveNode, PickError> {
        if let Some(name) = want {
            let n = self
                .nodes
                .get(name)
                .ok_or_else(|| PickError::Unknown(name.to_string()))?;
            if !n.up {
                return Err(PickError::Down(name.to_string()));
            }
            return if n.free() > 0 {
                Ok(n)
            } else {
                Err(PickError::Busy)
            };
        }
        let mut up = self.nodes.values().filter(|n| n.up).peekable();
        if up.peek().is_none() {
            return Err(PickError::NoNodes);
        }
        up.filter(|n| n.free() > 0)
            .min_by_key(|n| n.pressure())
            .ok_or(PickError::Busy)
    }

    /// Picks a node as [`Registry::pick`] does and counts the job on it at
    /// once, so that placements racing for a node's last slot cannot both
    /// take it.
    pub fn reserve(&mut self, want: Option<&str>) -> Result<(String, SocketAddr), PickError> {
        let n = self.pick(want)?;
        let chosen = (n.report.name.clone(), n.report.addr);
        self.place(&chosen.0);
        Ok(chosen)
    }

    /// Counts a job placed on `name`.
    pub fn place(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.placed += 1;
        }
    }

    /// Counts a job on `name` finished.
    pub fn release(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.placed = n.placed.saturating_sub(1);
        }
    }

    /// One node.
    pub fn get(&self, name: &str) -> Option<&LiveNode> {
        self.nodes.get(name)
    }

    /// Every node, by name.
    pub fn iter(&self) -> impl Iterator<Item = &LiveNode> {
        self.nodes.values()
    }

    /// Nodes up now.
    pub fn up_count(&self) -> usize {
        self.nodes.values().filter(|n| n.up).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, slots: u32, load: f64) -> NodeReport {
        NodeReport {
            name: name.into(),
            addr: "10.0.0.2:12036".parse().unwrap(),
            cpus: 2,
            slots,
            running: 0,
            load,
        }
    }

    #[test]
    fn liveness_follows_heartbeats() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(3));
        assert!(r.heartbeat(t0, report("a", 1, 0.0)));
        assert!(!r.heartbeat(t0 + Duration::from_secs(1), report("a", 1, 0.0)));
        assert!(r.expire(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(r.expire(t0 + Duration::from_secs(5)), vec!["a".to_string()]);
        assert_eq!(r.pick(None).unwrap_err(), PickError::NoNodes);
        assert_eq!(r.pick(Some("a")).unwrap_err(), PickError::Down("a".into()));
        assert!(r.heartbeat(t0 + Duration::from_secs(6), report("a", 1, 0.0)));
        assert_eq!(r.pick(None).unwrap().report.name, "a");
        // A restart at another address is news too.
        let mut moved = report("a", 1, 0.0);
        moved.addr = "10.0.0.9:12036".parse().unwrap();
        assert!(r.heartbeat(t0 + Duration::from_secs(7), moved));
        assert_eq!(r.get("a").unwrap().report.addr.port(), 12036);
    }

    #[test]
    fn reserving_counts_the_job_at_once() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(3));
        r.heartbeat(t0, report("a", 2, 0.5));
        assert_eq!(r.reserve(None).unwrap().0, "a");
        assert_eq!(r.reserve(Some("a")).unwrap().0, "a");
        assert_eq!(r.reserve(None), Err(PickError::Busy));
        r.release("a");
        assert_eq!(r.reserve(None).unwrap().0, "a");
    }

    #[test]
    fn picks_the_emptiest_node_and_respects_slots() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(3));
        r.heartbeat(t0, report("a", 2, 0.5));
        r.heartbeat(t0, report("b", 2, 0.1));
        assert_eq!(r.pick(None).unwrap().report.name, "b");
        r.place("b");
        // a: 0/2 used, b: 1/2 used.
        assert_eq!(r.pick(None).unwrap().report.name, "a");
        r.place("a");
        r.place("a");
        r.place("b");
        assert_eq!(r.pick(None).unwrap_err(), PickError::Busy);
        assert_eq!(r.pick(Some("a")).unwrap_err(), PickError::Busy);
        r.release("a");
        assert_eq!(r.pick(None).unwrap().report.name, "a");
        assert_eq!(
            r.pick(Some("zz")).unwrap_err(),
            PickError::Unknown("zz".into())
        );
    }

    #[test]
    fn node_count_of_running_jobs_counts_too() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(3));
        let mut rep = report("a", 1, 0.0);
        rep.running = 1;
        r.heartbeat(t0, rep);
        assert_eq!(r.pick(None).unwrap_err(), PickError::Busy);
    }
}
