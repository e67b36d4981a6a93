//! The node daemon: registers with central through heartbeats, answers
//! DSCP requests (start a job, signal it), and runs each job on a thread
//! of its own with its own endpoint and session key: the ready thread,
//! which made the job's start before the job was known, or a new one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dscp_dicp::{Key, Keyring, Peer, CLUSTER_KEY_ID};

use crate::cache::Cache;
use crate::config::ClientConfig;
use crate::job::runner::{self, JobControl, JobSetup};
use crate::records::JobLog;
use crate::sandbox::{JobUid, NodeSandbox};
use dscp_dicp::msg::control::{
    DicpRequest, DicpResponse, DscpRequest, DscpResponse, JobEvent, NodeInfo, StartJob,
};
use dscp_dicp::msg::Request;

use crate::net::{ask, reply, Incoming, Net, PendingCall};

/// How often a node tells central it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// How long a job's end is repeated in heartbeats: longer than central
/// takes to restart and hear from the node again.
const ENDED_KEPT: Duration = Duration::from_secs(60);
/// At most this many recent ends ride in one heartbeat (the oldest go
/// first), which bounds its size.
const ENDED_MAX: usize = 256;

/// The node daemon's shared state.
#[derive(Debug)]
pub struct Node {
    cfg: ClientConfig,
    net: Net,
    cache: Cache,
    records: JobLog,
    jobs: Mutex<HashMap<u64, Arc<JobControl>>>,
    /// Recent job ends, oldest first, repeated in heartbeats (see
    /// [`NodeInfo::ended`]).
    ended: Mutex<VecDeque<(Instant, u64, JobEvent)>>,
    kernel: String,
    sandbox: Arc<NodeSandbox>,
    /// The next job's start, made before central names the job (see
    /// [`ready_thread`]); None while it is being made or in use.
    ready: Mutex<Option<ReadyHandle>>,
}

/// A start made ahead of its job on the ready thread, waiting for the
/// job's setup.
#[derive(Debug)]
struct ReadyHandle {
    /// Takes the job's setup to the ready thread.
    tx: crossbeam_channel::Sender<JobSetup>,
    /// The job's controls (its PID 1 is in them already).
    control: Arc<JobControl>,
    /// The directory the start was made with: the job's.
    job_dir: PathBuf,
    /// The uid the start was made with: the job's.
    uid: Option<JobUid>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What can stop the node daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cluster key is unusable.
    #[error(transparent)]
    Key(#[from] dscp_dicp::KeyError),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory or cache could not be opened.
    #[error("state directory {path}: {reason}")]
    State {
        /// Directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The job sandbox could not be prepared.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
}

impl Node {
    /// Binds the endpoint, opens the cache. `key` is the cluster key.
    pub fn new(mut cfg: ClientConfig, key: &Key) -> Result<Arc<Self>, NodeError> {
        let sock = UdpSocket::bind(cfg.bind).map_err(|source| NodeError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let net =
            Net::open(sock, Keyring::with_cluster_key(key)).map_err(|source| NodeError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let state_err = |reason: String| NodeError::State {
            path: cfg.state_dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| state_err(e.to_string()))?;
        // Jobs start in other directories and are handed paths under the
        // state directory (cache objects, their lib directory): a relative
        // `--state-dir` would name nothing there.
        let absolute =
            std::fs::canonicalize(&cfg.state_dir).map_err(|e| state_err(e.to_string()))?;
        cfg.state_dir = absolute;
        let state_err = |reason: String| NodeError::State {
            path: cfg.state_dir.clone(),
            reason,
        };
        // Jobs run as an unprivileged user and must reach the cache objects
        // and their lib directory by name (but not list them).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| state_err(e.to_string()))?;
        let cache = Cache::open(&cfg.state_dir).map_err(|e| state_err(e.to_string()))?;
        let (records, lost) = JobLog::open(&cfg.state_dir).map_err(|e| state_err(e.to_string()))?;
        if !lost.is_empty() {
            log::warn!("jobs {lost:?} were running when this node stopped: recorded as lost");
        }
        if cfg.favor_dynmods && nix::unistd::geteuid().is_root() {
            use crate::sandbox::dynmods::{favor, Outcome};
            match favor() {
                Ok(Outcome::TurnedOn(at)) => log::info!(
                    "sandbox: cgroup option favordynmods turned on at {at} (jobs join their cgroups in ~0.1 ms instead of a grace period)"
                ),
                Ok(Outcome::AlreadyOn) => {}
                Ok(Outcome::NoCgroup2) => log::info!(
                    "sandbox: no cgroup2 mount for favordynmods: a job started on an idle node waits ~10 ms to join its cgroup"
                ),
                Err(e) => log::warn!(
                    "sandbox: cannot turn on the cgroup option favordynmods ({e}): a job started on an idle node waits ~10 ms to join its cgroup"
                ),
            }
        }
        let sandbox = NodeSandbox::new(&cfg.state_dir, cfg.job_uids)?;
        sandbox.usual_limits(crate::sandbox::cgroup::CgroupLimits {
            memory: cfg.job_memory,
            pids: cfg.job_pids,
        });
        sandbox.keep_spares(
            jobs_dir(&cfg.state_dir),
            cache.job_dirs(),
            cfg.slots as usize,
        );
        let uts = nix::sys::utsname::uname().ok();
        let kernel = uts
            .map(|u| {
                format!(
                    "{} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy()
                )
            })
            .unwrap_or_default();
        Ok(Arc::new(Self {
            cfg,
            net,
            cache,
            records,
            jobs: Mutex::new(HashMap::new()),
            ended: Mutex::new(VecDeque::new()),
            kernel,
            sandbox,
            ready: Mutex::new(None),
        }))
    }

    /// The endpoint's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.net.local_addr()
    }

    fn central(&self) -> Peer {
        Peer {
            addr: self.cfg.central,
            key_id: CLUSTER_KEY_ID,
        }
    }

    /// Runs the daemon: heartbeats on one thread, requests on this one.
    pub fn run(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let hb = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || me.heartbeat_loop());
        if let Err(e) = hb {
            log::error!("cannot start the heartbeat thread: {e}");
            return;
        }
        if self.sandbox.namespaced() {
            let me = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("job-ready".into())
                .spawn(move || ready_thread(&me));
            if let Err(e) = started {
                log::warn!("no job starts made ahead ({e}): each is made at its job");
            }
        }
        while let Ok(req) = self.net.requests().recv() {
            self.handle(req);
        }
    }

    fn info(&self) -> NodeInfo {
        let jobs: Vec<u64> = lock(&self.jobs).keys().copied().collect();
        let ended = {
            let mut ended = lock(&self.ended);
            while ended
                .front()
                .is_some_and(|(at, _, _)| at.elapsed() > ENDED_KEPT)
            {
                ended.pop_front();
            }
            ended.iter().map(|(_, job, e)| (*job, e.clone())).collect()
        };
        NodeInfo {
            name: self.cfg.name.clone(),
            cpus: crate::config::cpu_count(),
            slots: self.cfg.slots,
            running: jobs,
            load: load_average(),
            kernel: self.kernel.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            dropped: self.net.dropped().into_iter().collect(),
            cache_bytes: self.cache.stats().bytes,
            ended,
        }
    }

    fn heartbeat_loop(&self) {
        let mut was_ok = None;
        loop {
            let res = ask::<DicpResponse>(
                &self.net,
                self.central(),
                DicpRequest::Heartbeat(self.info()),
                Duration::from_secs(3),
            );
            match (&res, was_ok) {
                (Ok(_), Some(true)) | (Err(_), Some(false)) => {}
                (Ok(_), _) => log::info!("registered with central at {}", self.cfg.central),
                (Err(e), _) => log::warn!("central at {} does not answer: {e}", self.cfg.central),
            }
            was_ok = Some(res.is_ok());
            std::thread::sleep(HEARTBEAT);
        }
    }

    /// Tells central about a job event (best effort, retried by the protocol).
    pub fn report(&self, job: u64, event: JobEvent) {
        let pending = self.start_report(job, event, None);
        finish_report(job, pending);
    }

    /// Starts telling central about a job's start or end, and its counters when
    /// there are some (sent first, so central has them when it hears of
    /// the end), without waiting for the answers (see [`finish_report`]).
    pub fn start_report(
        &self,
        job: u64,
        event: JobEvent,
        counters: Option<BTreeMap<String, u64>>,
    ) -> PendingReport {
        if event != JobEvent::Started {
            // The node's log has one line per end: a start line would
            // read back as an end (see `records`).
            self.records.ended(job, &event);
            let mut ended = lock(&self.ended);
            if ended.len() >= ENDED_MAX {
                ended.pop_front();
            }
            ended.push_back((Instant::now(), job, event.clone()));
        }
        let start = |msg: DicpRequest| match self.net.start(self.central(), msg) {
            Ok(call) => Some(call),
            Err(e) => {
                log::warn!("job {job}: cannot report to central: {e}");
                None
            }
        };
        let counters =
            counters.and_then(|counters| start(DicpRequest::JobCounters { job, counters }));
        let end = start(DicpRequest::JobEvent { job, event });
        PendingReport { counters, end }
    }

    fn handle(self: &Arc<Self>, req: Incoming) {
        if req.peer.key_id != CLUSTER_KEY_ID {
            return;
        }
        let answer = match req.request() {
            Ok(Request::Dscp(r)) => self.dscp(r),
            Ok(other) => {
                log::warn!("unexpected request from {}: {other:?}", req.peer);
                DscpResponse::Refused {
                    reason: "not a DSCP request".into(),
                }
            }
            Err(e) => {
                log::warn!("bad request from {}: {e}", req.peer);
                DscpResponse::Refused {
                    reason: e.to_string(),
                }
            }
        };
        reply(req, answer);
    }

    fn dscp(self: &Arc<Self>, req: DscpRequest) -> DscpResponse {
        match req {
            DscpRequest::Ping { payload } => DscpResponse::Pong { payload },
            DscpRequest::Status => DscpResponse::Status(self.info()),
            DscpRequest::Signal { job, signal } => self.with_job(job, |c| c.signal(signal)),
            DscpRequest::Kill { job } => self.with_job(job, |c| c.kill("killed by central".into())),
            DscpRequest::StartJob(start) => self.start(start),
        }
    }

    fn with_job(&self, job: u64, f: impl FnOnce(&JobControl)) -> DscpResponse {
        match lock(&self.jobs).get(&job) {
            Some(c) => {
                f(c);
                DscpResponse::Done
            }
            None => DscpResponse::NoSuchJob,
        }
    }

    fn start(self: &Arc<Self>, start: StartJob) -> DscpResponse {
        let job = start.job;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job) {
            return DscpResponse::Refused {
                reason: format!("job {job} already runs here"),
            };
        }
        if jobs.len() >= self.cfg.slots as usize {
            return DscpResponse::Refused {
                reason: format!("all {} slots are busy", self.cfg.slots),
            };
        }
        let key = Key::from_bytes(start.session_key);
        let sock = match UdpSocket::bind(SocketAddr::new(self.cfg.bind.ip(), 0)) {
            Ok(s) => s,
            Err(e) => {
                return DscpResponse::Refused {
                    reason: format!("cannot bind the job's socket: {e}"),
                }
            }
        };
        let mut keys = Keyring::new();
        keys.insert(job, &key);
        let net = match Net::open_session(sock, keys) {
            Ok(n) => n,
            Err(e) => {
                return DscpResponse::Refused {
                    reason: format!("cannot open the job's endpoint: {e}"),
                }
            }
        };
        let port = net.local_addr().port();
        // The start made ahead, if one is ready, is this job's: its
        // directory, uid and controls.
        let ready = lock(&self.ready).take();
        let (job_dir, uid, control, ready) = match ready {
            Some(r) => (r.job_dir, r.uid, r.control, Some(r.tx)),
            None => match self.sandbox.take_uid() {
                Ok(u) => (
                    jobs_dir(&self.cfg.state_dir).join(job.to_string()),
                    u,
                    Arc::new(JobControl::default()),
                    None,
                ),
                Err(e) => {
                    return DscpResponse::Refused {
                        reason: e.to_string(),
                    }
                }
            },
        };
        jobs.insert(job, Arc::clone(&control));
        self.records.accepted(job, start.uid);
        drop(jobs);
        let setup = JobSetup {
            job,
            start,
            net,
            cache: self.cache.clone(),
            job_dir,
            run_as: uid.as_ref().map(|u| u.ids()),
            uid,
            sandbox: Arc::clone(&self.sandbox),
            memory_cap: self.cfg.job_memory,
            pids_cap: self.cfg.job_pids,
            node_name: self.cfg.name.clone(),
        };
        // To the ready thread; else (none ready, or it is gone) to a
        // thread of its own, which makes the start now.
        let setup = match ready {
            Some(tx) => match tx.send(setup) {
                Ok(()) => return DscpResponse::Accepted { port },
                Err(back) => back.into_inner(),
            },
            None => setup,
        };
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("job-{job}"))
            .spawn(move || {
                me.run_job(job, |report| runner::run(setup, &control, report));
            });
        match spawned {
            Ok(_) => DscpResponse::Accepted { port },
            Err(e) => {
                lock(&self.jobs).remove(&job);
                DscpResponse::Refused {
                    reason: format!("cannot start the job thread: {e}"),
                }
            }
        }
    }
}

impl Node {
    /// Runs job `job` on the calling thread with `run` (given how to
    /// report) and reports its end.
    fn run_job(&self, job: u64, run: impl FnOnce(runner::Report<'_>) -> JobEvent) {
        let reported = std::cell::Cell::new(false);
        let event = run(&|e, counters| {
            if *e != JobEvent::Started {
                reported.set(true);
                // Its slot is free from here, before central hears of the
                // end and may place the next job: what is left (reaping
                // the namespaces' PID 1, removing the cgroup) is no job's
                // work (a start refused for a full node waits 100 ms on
                // central).
                lock(&self.jobs).remove(&job);
            }
            self.start_report(job, e.clone(), counters)
        });
        lock(&self.jobs).remove(&job);
        if !reported.get() {
            self.report(job, event);
        }
    }
}

/// How long the ready thread waits before it tries again when a start
/// could not be made ahead (all uids in use, a failed clone or mount).
const READY_RETRY: Duration = Duration::from_secs(1);
/// Starts that could not be made ahead in a row after which the ready
/// thread gives up: this node cannot make them (its jobs' starts are
/// then all made at their StartJob, as they would be anyway).
const READY_TRIES: u32 = 5;

/// Makes the next job's start before central names the job, and runs
/// that job, again and again: its root and sandbox (see
/// `runner::prepare_ready`), with PID 1 and the program's process
/// parked, so that a job's start only waits for what its launch says.
/// Made at the job's StartJob, the parked process took ~0.5 ms, and the
/// launch came before it was done in most jobs started back to back.
/// One start is made ahead (the next job's); the thread holds the node
/// only while it makes a start or runs a job, and ends with the node (or
/// when starts cannot be made ahead here: every job is then started at
/// its StartJob).
fn ready_thread(node: &std::sync::Weak<Node>) {
    let mut seq = 0u64;
    let mut failed = 0u32;
    loop {
        let Some(me) = node.upgrade() else { return };
        let uid = match me.sandbox.take_uid() {
            Ok(u) => u,
            Err(e) => {
                log::debug!("no job start made ahead for now: {e}");
                drop(me);
                std::thread::sleep(READY_RETRY);
                continue;
            }
        };
        seq += 1;
        let name = format!("ready{seq}");
        // Not a job id: central's are numbers. A directory of that name
        // left by an earlier daemon is not this job's.
        let job_dir = jobs_dir(&me.cfg.state_dir).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&job_dir);
        let control = Arc::new(JobControl::default());
        let inputs = runner::ReadyInputs {
            name: &name,
            job_dir: &job_dir,
            run_as: uid.as_ref().map(|u| u.ids()),
            cache: &me.cache,
            sandbox: &me.sandbox,
            memory_cap: me.cfg.job_memory,
            pids_cap: me.cfg.job_pids,
        };
        let Some(ready) = runner::prepare_ready(&inputs, &control) else {
            let _ = std::fs::remove_dir_all(&job_dir);
            failed += 1;
            if failed == READY_TRIES {
                log::info!("job starts cannot be made ahead here: each is made at its job");
                return;
            }
            drop(me);
            std::thread::sleep(READY_RETRY);
            continue;
        };
        failed = 0;
        let (tx, rx) = crossbeam_channel::bounded::<JobSetup>(1);
        *lock(&me.ready) = Some(ReadyHandle {
            tx,
            control: Arc::clone(&control),
            job_dir,
            uid,
        });
        // Waiting, the node is not held: a node that goes drops the
        // handle, and the start made ahead goes with `ready`.
        drop(me);
        let Ok(setup) = rx.recv() else { return };
        let Some(me) = node.upgrade() else { return };
        let job = setup.job;
        set_thread_name(&format!("job-{job}"));
        me.run_job(job, |report| {
            runner::run_ready(setup, &control, report, ready)
        });
        set_thread_name("job-ready");
    }
}

/// Names the calling thread (what `ps -L` and `perf` show).
fn set_thread_name(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// The directory of the jobs' directories (each named by its job id).
fn jobs_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("jobs")
}

/// A job's end report on its way to central (see
/// [`Node::start_report`]).
#[derive(Debug)]
pub struct PendingReport {
    counters: Option<PendingCall>,
    end: Option<PendingCall>,
}

/// Waits for central's acknowledgement of a job report. A central that
/// does not know counters reports (an older build) refuses them: logged,
/// the end itself still counts.
pub fn finish_report(job: u64, pending: PendingReport) {
    if let Some(call) = pending.counters {
        if let Err(e) = call.wait(Duration::from_secs(10)) {
            log::info!("job {job}: central did not take its counters: {e}");
        }
    }
    if let Some(call) = pending.end {
        if let Err(e) = call.wait(Duration::from_secs(10)) {
            log::warn!("job {job}: central did not acknowledge its end: {e}");
        }
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
