//! Central's state machine around the store and the node registry: what it
//! does for a node's heartbeat or job event, for a `diatom` request, and
//! on its periodic tick. The UDP endpoint and the control socket are thin
//! drivers around [`Central`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dscp_dicp::msg::control::{
    DicpRequest, DicpResponse, DscpRequest, DscpResponse, JobEvent, Limits, NodeInfo, StartJob,
};
use dscp_dicp::msg::{Request, Response};
use dscp_dicp::{Key, Peer, CLUSTER_KEY_ID};
use serde_json::{json, Value};

use super::history::{History, Sample};
use super::registry::{NodeReport, PickError, Registry};
use super::udp::home_socket;
use crate::control::{ExecRequest, Grant, PeerCred};
use crate::store::{
    self, Heartbeat, JobEnd, JobFilter, JobId, JobState, NewJob, NodeRecord, NodeState, Store,
    StoreError,
};

/// A node silent this long is down.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long `diatom exec` waits for a free slot before giving up.
pub const SLOT_WAIT: Duration = Duration::from_secs(600);
/// How often a placement waiting for a slot checks that its caller still
/// waits (a freed slot wakes it sooner).
pub const SLOT_RECHECK: Duration = Duration::from_millis(500);
/// How long a node has to accept a job.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends requests to peers; their answers are awaited when needed. The
/// daemon gives central its UDP endpoint through this.
pub trait Caller: Send + Sync {
    /// Sends a request without waiting: its answer is awaited later.
    fn start(&self, peer: Peer, payload: Vec<u8>) -> Result<Box<dyn InFlight>, String>;
    /// Datagrams dropped so far, by reason.
    fn dropped(&self) -> Vec<(String, u64)>;
}

/// A request sent with [`Caller::start`].
pub trait InFlight: Send {
    /// Its answer, or an error line (none within `timeout`).
    fn wait(self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, String>;
}

/// The central daemon's shared state.
pub struct Central {
    store: Mutex<Store>,
    registry: Mutex<Registry>,
    history: Mutex<History>,
    slot_freed: Condvar,
    /// Jobs that ended lately, as soon as central hears of it (before
    /// the store's write, which holds the store's lock: a `diatom ps`
    /// right after waits for it).
    ends: Mutex<RecentEnds>,
    /// Notified (with `ends`' lock) whenever jobs end.
    job_ended: Condvar,
    net: Box<dyn Caller>,
    local: SocketAddr,
    started: Instant,
    started_ms: u64,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The ids of the jobs that ended last (as many as [`RecentEnds::KEPT`]):
/// what [`Central::await_end`] looks at before the store.
#[derive(Debug, Default)]
struct RecentEnds(std::collections::VecDeque<u64>);

impl RecentEnds {
    /// More than jobs could end while one `diatom exec` hears of its end
    /// and asks.
    const KEPT: usize = 4096;

    fn add(&mut self, job: JobId) {
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(job.0);
    }

    fn has(&self, job: u64) -> bool {
        self.0.iter().rev().any(|&j| j == job)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Central {
    /// Central over an open store and a bound endpoint at `local`.
    pub fn new(store: Store, net: Box<dyn Caller>, local: SocketAddr) -> Self {
        Self {
            store: Mutex::new(store),
            registry: Mutex::new(Registry::new(NODE_TIMEOUT)),
            history: Mutex::new(History::default()),
            slot_freed: Condvar::new(),
            ends: Mutex::new(RecentEnds::default()),
            job_ended: Condvar::new(),
            net,
            local,
            started: Instant::now(),
            started_ms: store::now_ms(),
        }
    }

    /// The endpoint's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Notes that `jobs` ended and wakes whoever awaits their end.
    fn ended(&self, jobs: impl IntoIterator<Item = JobId>) {
        let mut ends = lock(&self.ends);
        for job in jobs {
            ends.add(job);
        }
        self.job_ended.notify_all();
    }

    /// Handles a DICP request from a node (cluster key).
    pub fn handle_node(&self, peer: Peer, msg: DicpRequest) -> DicpResponse {
        match msg {
            DicpRequest::Heartbeat(info) => self.heartbeat(peer.addr, info),
            DicpRequest::JobEvent { job, event } => self.job_event(JobId(job), &event),
            DicpRequest::JobCounters { job, counters } => self.job_counters(JobId(job), &counters),
        }
        DicpResponse::Ack
    }

    /// One DSCP request to the node at `addr` and its answer.
    fn dscp(
        &self,
        addr: SocketAddr,
        req: DscpRequest,
        timeout: Duration,
    ) -> Result<DscpResponse, String> {
        dscp_answer(self.start_dscp(addr, req)?.wait(timeout))
    }

    /// Sends a DSCP request to the node at `addr`; its answer is awaited
    /// with [`dscp_answer`].
    fn start_dscp(&self, addr: SocketAddr, req: DscpRequest) -> Result<Box<dyn InFlight>, String> {
        let payload = Request::from(req).encode().map_err(|e| e.to_string())?;
        let peer = Peer {
            addr,
            key_id: CLUSTER_KEY_ID,
        };
        self.net.start(peer, payload)
    }

    fn heartbeat(&self, from: SocketAddr, info: NodeInfo) {
        let now_ms = store::now_ms();
        let report = NodeReport {
            name: info.name.clone(),
            addr: from,
            cpus: info.cpus,
            slots: info.slots,
            running: info.running.len() as u32,
            load: info.load,
        };
        let newly_up = lock(&self.registry).heartbeat(Instant::now(), report);
        let store = lock(&self.store);
        let dropped = info.dropped.clone();
        let res = if newly_up || store.node(&info.name).ok().flatten().is_none() {
            log::info!("node {} up at {from}", info.name);
            store.upsert_node(&NodeRecord {
                name: info.name.clone(),
                address: from.to_string(),
                state: NodeState::Up,
                state_since: now_ms,
                cpus: info.cpus,
                slots: info.slots,
                slots_used: info.running.len() as u32,
                load: info.load,
                last_seen: now_ms,
                registered_at: now_ms,
                kernel: info.kernel.clone(),
                version: info.version.clone(),
                dropped,
                cache_bytes: info.cache_bytes,
            })
        } else {
            store.update_heartbeat(
                &info.name,
                &Heartbeat {
                    at: now_ms,
                    load: info.load,
                    slots_used: info.running.len() as u32,
                    dropped,
                    cache_bytes: info.cache_bytes,
                },
            )
        };
        if let Err(e) = res {
            log::error!("store: {e}");
        }
        // Jobs central thinks run there but the node does not: ended (their
        // own report was lost, e.g. while central restarted: the node
        // repeats recent ends), or gone (the node restarted, or the end is
        // older than the node remembers).
        let mut ends = Vec::new();
        if let Ok(running) = store.list_jobs(&JobFilter {
            state: Some(JobState::Running),
            node: Some(info.name.clone()),
            ..Default::default()
        }) {
            for j in running {
                let age = now_ms.saturating_sub(j.spec.start);
                if info.running.contains(&j.id.0) {
                    continue;
                }
                if let Some((_, event)) = info.ended.iter().find(|(id, _)| *id == j.id.0) {
                    ends.push((j.id, event.clone()));
                } else if age > 10_000 {
                    let end = JobEnd {
                        state: JobState::Lost,
                        exit_status: None,
                        signal: None,
                        reason: Some(format!("node {} no longer runs it", info.name)),
                        at: now_ms,
                    };
                    if store.finish_job(j.id, &end).unwrap_or(false) {
                        lock(&self.history).finished(1);
                        lock(&self.registry).release(&info.name);
                        self.slot_freed.notify_all();
                        self.ended([j.id]);
                    }
                }
            }
        }
        drop(store);
        for (job, event) in ends {
            log::info!(
                "job {job}: its end came with a heartbeat from {}",
                info.name
            );
            self.job_event(job, &event);
        }
    }

    fn job_event(&self, job: JobId, event: &JobEvent) {
        let now = store::now_ms();
        let store = lock(&self.store);
        let (kind, end) = match event {
            JobEvent::Started => ("started", None),
            JobEvent::Exited { code } => (
                "exited",
                Some(JobEnd {
                    state: JobState::Exited,
                    exit_status: Some(*code),
                    signal: None,
                    reason: None,
                    at: now,
                }),
            ),
            JobEvent::Signaled { signal: sig } => (
                "signaled",
                Some(JobEnd {
                    state: JobState::Killed,
                    exit_status: Some(128 + sig),
                    signal: Some(*sig),
                    reason: None,
                    at: now,
                }),
            ),
            JobEvent::Killed { reason: why } => (
                "killed",
                Some(JobEnd {
                    state: JobState::Killed,
                    exit_status: Some(137),
                    signal: Some(9),
                    reason: Some(why.clone()),
                    at: now,
                }),
            ),
            JobEvent::Failed { reason: why } => (
                "failed",
                Some(JobEnd {
                    state: JobState::Exited,
                    exit_status: Some(255),
                    signal: None,
                    reason: Some(why.clone()),
                    at: now,
                }),
            ),
        };
        let Some(end) = end else {
            let _ = store.add_job_event(job, now, kind, &event.to_string());
            return;
        };
        // Whoever awaits the end may go on now: the store's lock stays held
        // until the end is written, so what they ask next sees it.
        self.ended([job]);
        match store.end_job(job, &end, kind, &event.to_string()) {
            Ok(true) => {
                lock(&self.history).finished(1);
                if let Ok(Some(j)) = store.job(job) {
                    lock(&self.registry).release(&j.spec.node);
                    self.slot_freed.notify_all();
                }
            }
            Ok(false) => {}
            Err(e) => log::warn!("job {job}: {e}"),
        }
    }

    /// Stores a job's counters from its node (forwarded calls by kind,
    /// bytes moved, cache hits). Counters beyond a sane number are a
    /// misbehaving node: dropped, not stored.
    fn job_counters(&self, job: JobId, counters: &store::Counters) {
        const MAX_COUNTERS: usize = 256;
        if counters.len() > MAX_COUNTERS || counters.keys().any(|k| k.len() > 64) {
            log::warn!("job {job}: ignoring {} oversized counters", counters.len());
            return;
        }
        if let Err(e) = lock(&self.store).set_job_counters(job, counters) {
            log::warn!("job {job}: counters: {e}");
        }
    }

    /// Places a job for `cred`: picks a node (waiting for a free slot),
    /// records the job, asks the node to start it and returns the grant and
    /// the home's socket. `wanted` says whether the caller still waits
    /// (its `diatom exec` may be interrupted): asked at least every
    /// [`SLOT_RECHECK`] while there is no free slot, and the wait is given
    /// up when it says no.
    pub fn exec(
        &self,
        cred: PeerCred,
        req: &ExecRequest,
        wanted: &dyn Fn() -> bool,
    ) -> Result<(Grant, UdpSocket), String> {
        let deadline = Instant::now() + SLOT_WAIT;
        let gone = || {
            let why = "the caller went away while its job waited for a slot";
            log::info!("a job for uid {} is given up: {why}", cred.uid);
            why.to_string()
        };
        let mut waiting = false;
        loop {
            let (name, addr) = {
                let mut reg = lock(&self.registry);
                loop {
                    match reg.reserve(req.node.as_deref()) {
                        Ok(chosen) => break chosen,
                        Err(PickError::Busy) if !wanted() => return Err(gone()),
                        Err(PickError::Busy) if Instant::now() < deadline => {
                            if !waiting {
                                waiting = true;
                                log::info!("a job for uid {} waits for a free slot", cred.uid);
                            }
                            reg = self
                                .slot_freed
                                .wait_timeout(reg, SLOT_RECHECK)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            };
            match self.start_on(cred, req, &name, addr) {
                Ok(v) => return Ok(v),
                Err(StartError::Refused(why)) => {
                    // The node is full by its own count: wait for a slot.
                    log::info!("node {name} refused a job: {why}");
                    lock(&self.registry).release(&name);
                    if Instant::now() >= deadline {
                        return Err(format!("node {name} refused the job: {why}"));
                    }
                    if !wanted() {
                        return Err(gone());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(StartError::Fatal(why)) => {
                    lock(&self.registry).release(&name);
                    return Err(why);
                }
            }
        }
    }

    fn start_on(
        &self,
        cred: PeerCred,
        req: &ExecRequest,
        node: &str,
        addr: SocketAddr,
    ) -> Result<(Grant, UdpSocket), StartError> {
        let new = NewJob {
            uid: cred.uid,
            user: user_name(cred.uid),
            node: node.to_string(),
            program: req.program.to_string_lossy().into_owned(),
            argv: req.argv.clone(),
            cwd: req.cwd.to_string_lossy().into_owned(),
            start: store::now_ms(),
        };
        let key = Key::generate();
        // The node is asked as soon as the job has its id, and the record is
        // written while the start is on its way; the answer is awaited (and
        // the caller answered) only once the record is committed.
        let mut asked = None;
        let recorded = lock(&self.store).create_placed_job_with(&new, |job| {
            let start = DscpRequest::StartJob(StartJob {
                job: job.0,
                session_key: *key.as_bytes(),
                uid: cred.uid,
                gid: cred.gid,
                limits: Limits {
                    memory: req.memory,
                    pids: req.pids,
                },
            });
            asked = Some((job, self.start_dscp(addr, start)));
        });
        let (job, ()) = match recorded {
            Ok(r) => r,
            Err(e) => {
                if let Some((job, Ok(call))) = asked {
                    self.take_back(addr, job, call);
                }
                return Err(StartError::Fatal(format!("cannot record the job: {e}")));
            }
        };
        lock(&self.history).started(1);
        let fail = |state: JobState, why: String| {
            self.end_unstarted(
                job,
                &JobEnd {
                    state,
                    exit_status: None,
                    signal: None,
                    reason: Some(why.clone()),
                    at: store::now_ms(),
                },
            );
            why
        };
        let reply = match asked {
            Some((_, Ok(call))) => dscp_answer(call.wait(START_TIMEOUT)),
            Some((_, Err(e))) => Err(e),
            None => Err("no start was sent".to_string()),
        };
        let port = match reply {
            Ok(DscpResponse::Accepted { port }) => port,
            Ok(DscpResponse::Refused { reason: why }) => {
                // Nothing ran: no record of it (a user would see a "lost"
                // job for every retry while the slots are full), and not
                // counted as started.
                match lock(&self.store).discard_unstarted_job(job) {
                    Ok(()) => lock(&self.history).discarded(1),
                    Err(e) => log::warn!("job {job}: {e}"),
                }
                return Err(StartError::Refused(why));
            }
            Ok(other) => {
                return Err(StartError::Fatal(fail(
                    JobState::Lost,
                    format!("node {node} answered the start with {other:?}"),
                )))
            }
            Err(e) => {
                return Err(StartError::Fatal(fail(
                    JobState::Lost,
                    format!("node {node} did not accept the job: {e}"),
                )))
            }
        };
        let node_addr = SocketAddr::new(addr.ip(), port);
        let sock = home_socket(self.local, node_addr).map_err(|e| {
            StartError::Fatal(fail(
                JobState::Lost,
                format!("cannot make the job's socket: {e}"),
            ))
        })?;
        Ok((
            Grant {
                job: job.0,
                node: node.to_string(),
                node_addr,
                session_key: key.to_hex(),
                memory: req.memory.unwrap_or(0),
                pids: req.pids.unwrap_or(0),
            },
            sock,
        ))
    }

    /// A job the node was asked to start but that has no record (the
    /// write failed): once the node has answered the start, it is asked
    /// to kill the job (best effort; it would otherwise wait for a launch
    /// until its own timeout).
    fn take_back(&self, addr: SocketAddr, job: JobId, call: Box<dyn InFlight>) {
        if let Ok(DscpResponse::Accepted { .. }) = dscp_answer(call.wait(START_TIMEOUT)) {
            log::warn!("job {job} started on {addr} without a record: killing it");
            let _ = self.dscp(addr, DscpRequest::Kill { job: job.0 }, START_TIMEOUT);
        }
    }

    /// Ends a job that never ran on its node (refused, no answer).
    fn end_unstarted(&self, job: JobId, end: &JobEnd) {
        if lock(&self.store).finish_job(job, end).unwrap_or(false) {
            self.ended([job]);
            lock(&self.history).finished(1);
        }
    }

    /// Kills a placed job whose caller went away before it got its grant
    /// (best effort): the node would otherwise wait for a launch until
    /// its own timeout, holding the slot.
    pub fn cancel(&self, job: u64) {
        let node = lock(&self.store).job(JobId(job)).ok().flatten();
        let addr = node.and_then(|r| {
            lock(&self.registry)
                .get(&r.spec.node)
                .map(|n| n.report.addr)
        });
        if let Some(addr) = addr {
            log::info!("job {job}: its caller went away before the grant: killing it");
            let _ = self.dscp(addr, DscpRequest::Kill { job }, START_TIMEOUT);
        }
    }

    /// Sends a signal to a job's processes on its node.
    pub fn kill(&self, cred: PeerCred, job: u64, signal: i32) -> Result<(), String> {
        let rec = lock(&self.store)
            .job(JobId(job))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no job {job}"))?;
        if cred.uid != 0 && cred.uid != rec.spec.uid {
            return Err(format!("job {job} belongs to another user"));
        }
        if rec.state != JobState::Running {
            return Err(format!("job {job} is not running ({})", rec.state));
        }
        let addr = lock(&self.registry)
            .get(&rec.spec.node)
            .filter(|n| n.up)
            .map(|n| n.report.addr)
            .ok_or_else(|| format!("node {} is down", rec.spec.node))?;
        match self.dscp(addr, DscpRequest::Signal { job, signal }, START_TIMEOUT)? {
            DscpResponse::Done => Ok(()),
            DscpResponse::NoSuchJob => {
                Err(format!("job {job} is not running on {}", rec.spec.node))
            }
            other => Err(format!("node answered {other:?}")),
        }
    }

    /// Returns once `job` is no longer running, or after `limit`: at once
    /// when central heard of its end (usually already in: the node reports
    /// it as it tells the home), else when the store says it is not
    /// running (ended before a restart, or unknown), else when it ends.
    pub fn await_end(&self, job: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        if lock(&self.ends).has(job) {
            return;
        }
        let running = lock(&self.store)
            .job(JobId(job))
            .ok()
            .flatten()
            .is_some_and(|r| r.state == JobState::Running);
        if !running {
            return;
        }
        let mut ends = lock(&self.ends);
        while !ends.has(job) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            ends = self
                .job_ended
                .wait_timeout(ends, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Periodic work: nodes silent past the timeout go down, with their
    /// running jobs marked lost.
    pub fn tick(&self) {
        let now_i = Instant::now();
        let gone = lock(&self.registry).expire(now_i);
        if !gone.is_empty() {
            let store = lock(&self.store);
            let now = store::now_ms();
            let mut lost = Vec::new();
            for name in gone {
                log::warn!("node {name} is down (silent for {NODE_TIMEOUT:?})");
                let _ = store.mark_node_down(&name, now);
                lost.extend(
                    store
                        .mark_running_jobs_lost_on(&name, now, &format!("node {name} went down"))
                        .unwrap_or_default(),
                );
            }
            drop(store);
            lock(&self.history).finished(lost.len() as u64);
            self.slot_freed.notify_all();
            self.ended(lost);
        }
        if lock(&self.history).due(now_i) {
            let sample = self.sample();
            lock(&self.history).record(now_i, sample);
        }
    }

    /// The cluster now, for the dashboard's charts (the job counts are
    /// filled in by [`History::record`]).
    fn sample(&self) -> Sample {
        let reg = lock(&self.registry);
        let mut s = Sample {
            at: store::now_ms(),
            nodes_up: 0,
            cpus: 0,
            load: 0.0,
            slots_used: 0,
            slots: 0,
            started: 0,
            finished: 0,
        };
        for n in reg.iter().filter(|n| n.up) {
            s.nodes_up += 1;
            s.cpus += n.report.cpus;
            s.load += n.report.load;
            s.slots_used += n.slots_used();
            s.slots += n.report.slots;
        }
        s
    }

    /// The last hour's samples (see [`super::history`]), oldest first.
    pub fn history_json(&self) -> Value {
        let h = lock(&self.history);
        json!({
            "interval_s": super::history::SAMPLE_EVERY.as_secs(),
            "samples": h.samples().collect::<Vec<_>>(),
        })
    }

    /// Is node `name` up now?
    pub fn node_up(&self, name: &str) -> bool {
        lock(&self.registry).get(name).is_some_and(|n| n.up)
    }

    /// `diatom nodes --json`: the store's records, with live slot counts.
    pub fn nodes_json(&self) -> Value {
        let nodes = lock(&self.store).list_nodes().unwrap_or_default();
        let reg = lock(&self.registry);
        let list: Vec<Value> = nodes
            .into_iter()
            .map(|mut n| {
                if let Some(live) = reg.get(&n.name) {
                    n.slots_used = live.slots_used();
                    if !live.up {
                        n.state = NodeState::Down;
                    }
                } else if n.state == NodeState::Up {
                    // Known from before a restart, not heard from since.
                    n.state = NodeState::Down;
                }
                serde_json::to_value(n).unwrap_or(Value::Null)
            })
            .collect();
        Value::Array(list)
    }

    /// `diatom ps --json`.
    pub fn jobs_json(&self, all: bool) -> Value {
        self.jobs_page(&JobFilter {
            include_finished: all,
            limit: Some(10_000),
            ..Default::default()
        })
        .unwrap_or(Value::Array(Vec::new()))
    }

    /// The jobs `filter` selects, newest first, in the shape of
    /// `diatom ps --json` (the dashboard's `/api/jobs` pages through it).
    pub fn jobs_page(&self, filter: &JobFilter) -> Result<Value, StoreError> {
        let jobs = lock(&self.store).list_jobs(filter)?;
        Ok(serde_json::to_value(jobs).unwrap_or(Value::Null))
    }

    /// One job as `diatom ps --json` shows it, with its timeline under
    /// `events`; `None` when no job has that id.
    pub fn job_json(&self, id: JobId) -> Result<Option<Value>, StoreError> {
        let store = lock(&self.store);
        let Some(job) = store.job(id)? else {
            return Ok(None);
        };
        let events = store.job_events(id)?;
        drop(store);
        let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert(
                "events".into(),
                serde_json::to_value(events).unwrap_or(Value::Null),
            );
        }
        Ok(Some(v))
    }

    /// `diatom status --json`.
    pub fn status_json(&self) -> Value {
        let store = lock(&self.store);
        let running = store.count_jobs(Some(JobState::Running)).unwrap_or(0);
        let total = store.count_jobs(None).unwrap_or(0);
        drop(store);
        let reg = lock(&self.registry);
        let nodes_total = reg.iter().count();
        let up = reg.up_count();
        drop(reg);
        let dropped: serde_json::Map<String, Value> = self
            .net
            .dropped()
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        json!({
            "address": self.local.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "started": store::rfc3339(self.started_ms),
            "uptime_s": self.started.elapsed().as_secs(),
            "nodes": { "total": nodes_total, "up": up },
            "jobs": { "running": running, "total": total },
            "dropped": dropped,
        })
    }
}

/// A node's answer to a DSCP request, decoded.
fn dscp_answer(answer: Result<Vec<u8>, String>) -> Result<DscpResponse, String> {
    DscpResponse::try_from(Response::decode(&answer?).map_err(|e| e.to_string())?)
}

enum StartError {
    /// The node said no (full): try again later.
    Refused(String),
    /// Anything else: tell the user.
    Fatal(String),
}

/// The user name of `uid` on central, or the number.
pub fn user_name(uid: u32) -> String {
    // A statically linked program must not ask NSS: glibc would load the
    // modules nsswitch.conf names (libnss_systemd, libnss_sss...), which
    // bring the shared libc into the process, and crash it. The static
    // `diatom` (`make static-cli`) runs this in its embedded central, whose
    // records nobody else reads: /etc/passwd alone is enough there.
    if cfg!(target_feature = "crt-static") {
        return std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| passwd_name(&p, uid))
            .unwrap_or_else(|| uid.to_string());
    }
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The name of `uid` in a passwd(5) file's text (the first entry for it).
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (!name.is_empty() && id.parse() == Ok(uid)).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwd_names_are_found_by_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      \n\
                      :x:7:7::/:/bin/sh\n\
                      alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
                      alias:x:1000:1000::/:/bin/sh\n";
        assert_eq!(super::passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::passwd_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(super::passwd_name(passwd, 7), None);
        assert_eq!(super::passwd_name(passwd, 12345), None);
        // This machine's own file agrees with NSS for root.
        assert_eq!(super::user_name(0), "root");
    }
}
