//! One job's life on the node, on its own thread: wait for the home's
//! launch, fill the cache with what the start needs, start the program
//! under the tracer with its stdio relayed to the home, forward stdin and
//! signals, and report how it ended.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{select, Receiver};
use dscp_dicp::Peer;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::fs::{self, FsConfig, FsLayer};
use super::handler::{Identity, JobHandler};
use super::launch::{self, LocalExec};
use super::members::Members;
use super::net::{NetLayer, Relay};
use crate::cache::Cache;
use crate::daemon::PendingReport;
use crate::net::{ask, reply as respond, Incoming, Net};
use crate::pty::{self, Pty, WindowSize};
use crate::sandbox::cgroup::{CgroupLimits, JobCgroup};
use crate::sandbox::{self, JobRequest, JobUid, NodeSandbox};
use dscp_dicp::msg::control::{JobEvent, Limits, StartJob};
use dscp_dicp::msg::job::{
    FileStamp, Launch, Request as Job, Response as JobReply, WinSize as WireWinSize,
};
use dscp_dicp::msg::{Blob, Request};

/// How long a node waits for the home's launch after accepting a job.
const LAUNCH_WAIT: Duration = Duration::from_secs(20);
/// Most bytes per output message.
const OUTPUT_CHUNK: usize = 256 * 1024;
/// How long one output message may take to be acknowledged.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the node daemon hands a job thread.
#[derive(Debug)]
pub struct JobSetup {
    /// Job id.
    pub job: u64,
    /// Central's start request.
    pub start: StartJob,
    /// The job's own endpoint (session key only).
    pub net: Net,
    /// The node's file cache.
    pub cache: Cache,
    /// A directory for this job's node-side files.
    pub job_dir: PathBuf,
    /// Run as this (uid, gid) when the daemon is root.
    pub run_as: Option<(u32, u32)>,
    /// The node's memory cap per job.
    pub memory_cap: u64,
    /// The node's pids cap per job.
    pub pids_cap: u64,
    /// This node's name, for messages.
    pub node_name: String,
    /// The uid taken from the node's pool for this job (given back when
    /// the setup is dropped, after the job's cgroup is gone).
    pub uid: Option<JobUid>,
    /// The node's sandbox.
    pub sandbox: Arc<NodeSandbox>,
}

impl JobSetup {
    /// What the job's sandbox is made from.
    fn sandbox_inputs(&self) -> SandboxInputs<'_> {
        SandboxInputs {
            name: self.job.to_string(),
            job_dir: &self.job_dir,
            run_as: self.run_as,
            limits: self.limits(),
            read_only: self.cache.job_dirs(),
            sandbox: &self.sandbox,
            ahead_of_job: false,
        }
    }

    /// The job's limits: what it asked for within the node's caps.
    fn limits(&self) -> CgroupLimits {
        limits_within(self.start.limits, self.memory_cap, self.pids_cap)
    }
}

/// `asked` within the node's caps (nothing asked: the caps).
fn limits_within(asked: Limits, memory_cap: u64, pids_cap: u64) -> CgroupLimits {
    CgroupLimits {
        memory: sandbox::effective_limit(asked.memory, memory_cap),
        pids: sandbox::effective_limit(asked.pids, pids_cap),
    }
}

/// What a job's sandbox is made from: the job's (see
/// [`JobSetup::sandbox_inputs`]) or, for a start made before the job is
/// known, the node's (see [`prepare_ready`]).
struct SandboxInputs<'a> {
    /// The job's id, or what names a start made ahead.
    name: String,
    job_dir: &'a Path,
    run_as: Option<(u32, u32)>,
    limits: CgroupLimits,
    read_only: Vec<PathBuf>,
    sandbox: &'a NodeSandbox,
    /// Made before its job is known: its PID 1 is called [`READY_NAME`]
    /// until a job takes it.
    ahead_of_job: bool,
}

/// The name of the PID 1 (and parked process) of a start made before its
/// job is known, until a job takes it: what tells it from a job's (a
/// job's PID 1 is `diatom-init`).
pub const READY_NAME: &str = "diatom-ready";

/// What other threads may do to a running job.
#[derive(Debug, Default)]
pub struct JobControl {
    /// The job's processes (kept by the job's tracer handler).
    members: Members,
    /// PID 1 of the job's PID namespace (0: none).
    init: AtomicI32,
    killed: Mutex<Option<String>>,
    /// Fires at the first kill: the wait for the launch ends on it.
    notice: KillNotice,
}

/// A one-shot notice of a job's kill, for a thread that waits on a
/// channel meanwhile.
#[derive(Debug)]
struct KillNotice {
    tx: crossbeam_channel::Sender<()>,
    rx: Receiver<()>,
}

impl Default for KillNotice {
    fn default() -> KillNotice {
        let (tx, rx) = crossbeam_channel::bounded(1);
        KillNotice { tx, rx }
    }
}

impl JobControl {
    /// Sends `signal` to every process of the job (nothing before it runs).
    pub fn signal(&self, signal: i32) {
        if let Ok(sig) = Signal::try_from(signal) {
            self.members.signal(sig);
        }
    }

    /// Kills the job for `reason` (reported as the job's end): every
    /// process of it and, when it has one, its whole PID namespace.
    pub fn kill(&self, reason: String) {
        self.killed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        let _ = self.notice.tx.try_send(());
        self.signal(libc::SIGKILL);
        let init = self.init.load(Ordering::SeqCst);
        if init > 0 {
            let _ = nix::sys::signal::kill(Pid::from_raw(init), Signal::SIGKILL);
        }
    }

    fn kill_reason(&self) -> Option<String> {
        self.killed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How the job thread tells central of the job's end, with the file
/// layer's counters when the job got that far.
pub type Report<'a> = &'a dyn Fn(&JobEvent, Option<BTreeMap<String, u64>>) -> PendingReport;

/// Runs the job to its end and returns how it ended. `report` tells
/// central that the program started, and its end before the home hears
/// of it, so that `diatom ps` run after `diatom exec` returned already
/// shows the job finished.
pub fn run(setup: JobSetup, control: &JobControl, report: Report<'_>) -> JobEvent {
    finish(&setup, control, |setup| run_inner(setup, control, report))
}

/// Runs the job with `job_run` and makes its result the job's end (a
/// start given up after a kill ends as killed); then gives the job's
/// directory back.
fn finish(
    setup: &JobSetup,
    control: &JobControl,
    job_run: impl FnOnce(&JobSetup) -> Result<JobEvent, String>,
) -> JobEvent {
    let job = setup.job;
    let event = match job_run(setup) {
        Ok(e) => e,
        // A start given up because the job was killed meanwhile (its
        // home abandoned it) ends as killed, for that reason.
        Err(why) => match control.kill_reason() {
            Some(reason) => JobEvent::Killed { reason },
            None => JobEvent::Failed { reason: why },
        },
    };
    log::info!("job {job} ended: {event:?}");
    // The mirror's directories are kept for the next job (see fs/pool.rs).
    fs::recycle(&setup.job_dir);
    event
}

fn run_inner(
    setup: &JobSetup,
    control: &JobControl,
    report: Report<'_>,
) -> Result<JobEvent, String> {
    let mut phases = Phases::new(std::time::Instant::now());
    // The job's root is built while the launch is on its way.
    let prepared = setup
        .sandbox
        .prepare_root(&setup.job_dir, &setup.cache.job_dirs());
    phases.mark("ahead: root");
    // So are the threads that serve the job beside its tracer; they are
    // joined when it is over (or when it fails to start: their work never
    // comes, and they return).
    std::thread::scope(|s| {
        let helpers = Helpers::start(s, setup.job, &setup.net, control)?;
        phases.mark("ahead: helpers");
        // Everything of the start the launch's contents do not change is
        // done while the launch is on its way (see `park_ahead`).
        let ahead = park_ahead(&setup.sandbox_inputs(), control, prepared, &mut phases);
        run_job(setup, control, report, ahead, helpers, phases)
    })
}

/// A job's start made before central names the job, on the thread that
/// will run it (see `daemon::ready_thread`): its root, sandbox and parked
/// process, as [`park_ahead`] makes them for a job, with the node's
/// usual limits. Its [`JobControl`] becomes the job's.
pub struct Ready<'a> {
    ahead: Ahead<'a>,
    limits: CgroupLimits,
    phases: Phases,
}

/// What a start made ahead of its job is made for: a directory, a uid
/// and the node's caps as limits.
pub struct ReadyInputs<'a> {
    /// Names the start (its cgroup when none is ready, log lines).
    pub name: &'a str,
    /// The directory the job will have (see [`JobSetup::job_dir`]).
    pub job_dir: &'a Path,
    /// The uid and gid the job will run as (see [`JobSetup::run_as`]).
    pub run_as: Option<(u32, u32)>,
    /// The node's cache (its directories are read-only in the root).
    pub cache: &'a Cache,
    /// The node's sandbox.
    pub sandbox: &'a NodeSandbox,
    /// The node's memory cap per job.
    pub memory_cap: u64,
    /// The node's pids cap per job.
    pub pids_cap: u64,
}

/// Makes a start ahead of its job (None, logged, where the node cannot).
pub fn prepare_ready<'a>(inputs: &ReadyInputs<'_>, control: &'a JobControl) -> Option<Ready<'a>> {
    let mut phases = Phases::new(std::time::Instant::now());
    let prepared = inputs
        .sandbox
        .prepare_root(inputs.job_dir, &inputs.cache.job_dirs());
    let limits = limits_within(Limits::default(), inputs.memory_cap, inputs.pids_cap);
    let sb = SandboxInputs {
        name: inputs.name.to_string(),
        job_dir: inputs.job_dir,
        run_as: inputs.run_as,
        limits,
        read_only: inputs.cache.job_dirs(),
        sandbox: inputs.sandbox,
        ahead_of_job: true,
    };
    let ahead = park_ahead(&sb, control, prepared, &mut phases)?;
    // The job's timeline starts at its StartJob: what was made before is
    // one phase.
    let made = phases.marks.iter().map(|(_, d)| *d).sum();
    phases.marks = vec![("made ahead of the job", made)];
    Some(Ready {
        ahead,
        limits,
        phases,
    })
}

/// Runs a job whose start was made ahead (see [`prepare_ready`]) on the
/// thread that made it; as [`run`] otherwise. A job that asks for other
/// limits than the start was made with starts as without it.
pub fn run_ready(
    setup: JobSetup,
    control: &JobControl,
    report: Report<'_>,
    ready: Ready<'_>,
) -> JobEvent {
    if ready.limits != setup.limits() {
        drop(ready);
        return run(setup, control, report);
    }
    let Ready {
        ahead, mut phases, ..
    } = ready;
    phases.last = std::time::Instant::now();
    // The job's now: its processes are called as any job's.
    for pid in [ahead.parked.init_pid(), ahead.parked.pid()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::write(format!("/proc/{pid}/comm"), tracer::spawn::INIT_NAME);
    }
    finish(&setup, control, |setup| {
        std::thread::scope(|s| {
            let helpers = Helpers::start(s, setup.job, &setup.net, control)?;
            phases.mark("helpers");
            run_job(setup, control, report, Some(ahead), helpers, phases)
        })
    })
}

/// The threads that serve a running job beside its tracer: the output
/// relay and the dispatch of the home's requests. They are started while
/// the launch is on its way and wait for their work: started after the
/// spawn, they ran beside the program's pre-exec on the same two CPUs,
/// and the program then waited in its first trace stop for the tracer
/// thread to get a CPU back.
struct Helpers {
    /// Tells the dispatch that the launch is in: from then on it answers
    /// the home's requests (an abandon while the job starts).
    launched: crossbeam_channel::Sender<()>,
    /// The output relay's work: the home and the node's ends of the
    /// program's stdout and stderr.
    output: crossbeam_channel::Sender<(Peer, OutputEnds)>,
    /// Fires when the relay has drained the output (or given up).
    output_done: Receiver<()>,
    /// The dispatch's work.
    dispatch: crossbeam_channel::Sender<DispatchWork>,
    /// Tells the dispatch that the program has ended (no limit checks).
    run_ended: crossbeam_channel::Sender<()>,
    /// Tells the dispatch that the end is reported (no more requests).
    stop: crossbeam_channel::Sender<()>,
}

/// What the dispatch thread needs once the program runs.
struct DispatchWork {
    home: Peer,
    relay: Arc<Relay>,
    input: InputEnd,
    limits: Option<Arc<JobCgroup>>,
}

impl Helpers {
    fn start<'scope, 'env>(
        s: &'scope std::thread::Scope<'scope, 'env>,
        job: u64,
        net: &'env Net,
        control: &'env JobControl,
    ) -> Result<Helpers, String> {
        let (output, output_rx) = crossbeam_channel::bounded::<(Peer, OutputEnds)>(1);
        let (done_tx, output_done) = crossbeam_channel::bounded::<()>(1);
        std::thread::Builder::new()
            .name(format!("job-{job}-out"))
            .spawn_scoped(s, move || {
                if let Ok((home, ends)) = output_rx.recv() {
                    relay_output(net, home, ends);
                    let _ = done_tx.send(());
                }
            })
            .map_err(|e| format!("cannot start the job's output relay: {e}"))?;
        let (work_tx, work_rx) = crossbeam_channel::bounded::<DispatchWork>(1);
        let (launched, launched_rx) = crossbeam_channel::bounded::<()>(1);
        let (run_ended, run_ended_rx) = crossbeam_channel::bounded::<()>(1);
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(1);
        std::thread::Builder::new()
            .name(format!("job-{job}-req"))
            .spawn_scoped(s, move || {
                if let Some(work) = before_start(net, control, &launched_rx, &work_rx) {
                    let ends = Ends {
                        limits: work.limits.as_deref(),
                        run_ended: &run_ended_rx,
                        stop: &stop_rx,
                    };
                    dispatch(net, work.home, control, &work.relay, work.input, ends);
                }
            })
            .map_err(|e| format!("cannot start the job's request dispatch: {e}"))?;
        Ok(Helpers {
            launched,
            output,
            output_done,
            dispatch: work_tx,
            run_ended,
            stop,
        })
    }
}

fn run_job(
    setup: &JobSetup,
    control: &JobControl,
    report: Report<'_>,
    ahead: Option<Ahead<'_>>,
    helpers: Helpers,
    mut phases: Phases,
) -> Result<JobEvent, String> {
    let net = &setup.net;
    let (req, launch) = wait_launch(net, control)?;
    let t0 = std::time::Instant::now();
    // Near 0: the launch came before the work ahead was done.
    phases.mark("launch wait");
    // The job's timeline is logged once, after the home heard its end
    // (`phases`): a debug line on the way is a formatted write the
    // program or the home waits for.
    let home = req.peer;
    net.watch(home);
    let _ = helpers.launched.send(());
    let (exec, launch_fetch) = match fetch_and_plan(setup, home, &launch) {
        Ok(e) => e,
        Err(why) => {
            respond(req, failed(why.clone()));
            return Err(why);
        }
    };
    phases.mark("fetch");
    if let Some(why) = control.kill_reason() {
        respond(req, failed(why.clone()));
        return Err(why);
    }
    // A `-t` job needs a pty and a root with the node's /dev/pts: not
    // what was made ahead, which goes (its processes killed and reaped,
    // its cgroup removed) before the job's own are made.
    let ahead = match ahead {
        Some(a) if launch.tty.is_none() => Some(a),
        Some(a) => {
            drop(a);
            None
        }
        None => None,
    };
    let stdio = match ahead.as_ref() {
        Some(_) => None,
        None => match Stdio::new(launch.tty) {
            Ok(s) => Some(s),
            Err(e) => {
                let why = format!("cannot make the job's stdio: {e}");
                respond(req, failed(why.clone()));
                return Err(why);
            }
        },
    };
    let line = launch::prepare(&exec, &setup.cache)
        .map_err(|e| format!("cannot prepare the program's libraries: {e}"))?;
    phases.mark("prepare");
    let identity = Identity {
        uid: setup.start.uid,
        gid: setup.start.gid,
        groups: launch.groups.clone(),
    };
    let (files, cwd) = match file_layer(setup, home, &launch) {
        Ok(x) => x,
        Err(why) => {
            respond(req, failed(why.clone()));
            return Err(why);
        }
    };
    phases.mark("file layer");
    files.note_cache(launch_fetch.hits, launch_fetch.misses, launch_fetch.bytes);
    // The job's network namespace exists once it is spawned: the relay is
    // told then (Relay::enter_netns), before the job can make a socket.
    let net_relay = Relay::new(
        net.clone(),
        home,
        None,
        format!("diatom-{}-job{}", std::process::id(), setup.job),
    )
    .map_err(|e| format!("cannot start the job's network relay: {e}"))?;
    let handler = JobHandler::new(identity, launch.exe.0.clone())
        .with_hostname(launch.hostname.0.clone())
        .with_fs(files)
        .with_net(NetLayer::new(net_relay.clone(), control.members.clone()))
        .with_members(control.members.clone());
    let mut cmd = tracer::Command::new(&line.path);
    cmd.args(line.argv.iter().skip(1))
        .arg0(line.argv.first().cloned().unwrap_or_default())
        .envp(launch.envp.iter().map(|e| OsString::from_vec(e.0.clone())))
        .kill_descendants_on_exit(true);
    let at_launch = Arc::new(ChildLaunch::new(&launch, &cwd));
    phases.mark("relay");
    // The last moment a kill (the home abandoned the job) spares the
    // spawn; one that comes later finds the process below.
    if let Some(why) = control.kill_reason() {
        respond(req, failed(why.clone()));
        return Err(why);
    }
    let started = match (ahead, stdio) {
        (Some(ahead), _) if ahead.fits(&handler) => {
            ahead.launch(handler, &mut cmd, at_launch, &launch.exe)
        }
        (Some(ahead), _) => {
            // Not reached while the subscriptions are the daemon's
            // (job_filter); should they ever depend on the job, it starts
            // as without a process made ahead rather than failing.
            log::warn!(
                "job {}: its handler's subscriptions are not the filter made ahead: started at its launch",
                setup.job
            );
            drop(ahead);
            Stdio::new(None)
                .map_err(|e| format!("cannot make the job's stdio: {e}"))
                .and_then(|stdio| {
                    spawn_now(setup, false, handler, cmd, stdio, at_launch, &launch.exe)
                })
        }
        (None, Some(stdio)) => spawn_now(
            setup,
            launch.tty.is_some(),
            handler,
            cmd,
            stdio,
            at_launch,
            &launch.exe,
        ),
        (None, None) => Err("the job's stdio is missing".to_string()),
    };
    let Started {
        mut tracer,
        jail,
        cgroup,
        stdio,
    } = match started {
        Ok(s) => s,
        Err(why) => {
            respond(req, failed(why.clone()));
            return Err(why);
        }
    };
    phases.mark("spawn");
    let pid = tracer.pid();
    tracer.handler_mut().set_first_process(pid);
    if let (None, Some(cg)) = (jail.namespaces, &cgroup) {
        // No PID 1 joined the cgroup: the first process does, before it
        // can fork (its execve waits for the trace to run).
        if let Err(e) = cg.0.add(pid.as_raw()) {
            let why = format!("cannot put the job in its cgroup: {e}");
            respond(req, failed(why.clone()));
            return Err(why);
        }
    }
    if let Some(init) = tracer.init_pid() {
        control.init.store(init.as_raw(), Ordering::SeqCst);
        if let Some(files) = tracer.handler_mut().fs_mut() {
            files.set_pid_namespace(init);
        }
    }
    // A kill that came while the process was spawned may have found no
    // process to signal (it was not a member yet): kill it now. The
    // program has not run (its execve waits for the trace).
    if let Some(why) = control.kill_reason() {
        control.kill(why);
    }
    // The relay makes its loopback sockets in the job's own network
    // namespace (a root node's jobs have one; see NodeSandbox::job).
    if jail.own_netns {
        let made_ahead = jail
            .namespaces_ahead
            .as_ref()
            .and_then(|ns| ns.net.try_clone().ok());
        match made_ahead
            .map(std::fs::File::from)
            .or_else(|| sandbox::job_netns(pid))
        {
            Some(ns) => net_relay.enter_netns(ns),
            None => log::warn!("job {}: cannot open its network namespace", setup.job),
        }
    }
    let (parent_ends, input) = stdio.into_parent();
    // Output relay and request dispatch run beside the tracer.
    let _ = helpers.output.send((home, parent_ends));
    let _ = helpers.dispatch.send(DispatchWork {
        home,
        relay: Arc::clone(&net_relay),
        input,
        limits: cgroup.as_ref().map(|c| Arc::clone(&c.0)),
    });
    respond(req, JobReply::Started);
    // For the job's timeline on central; its answer is awaited at the end.
    let started = report(&JobEvent::Started, None);

    let status = tracer.run_mut();
    phases.mark("run");
    let _ = helpers.run_ended.send(());
    // A job that met its memory or pids limit was killed for it (the
    // watcher may not have seen it before the job ended).
    let limit_hit = cgroup.as_ref().and_then(|cg| limit_reason(&cg.0));
    // Nothing of the job survives it (its cgroup goes after the end is
    // reported). A trace that ended well saw every job process die and
    // reaped it: only the namespaces' PID 1 (not traced, tearing them
    // down, and taking whatever else is in them) may be left, and the end
    // need not wait for it: it is killed and reaped after the report.
    // Without a PID namespace nothing should be left, which is made sure
    // of here.
    let empty_now = status.is_err() || jail.namespaces.is_none();
    if let (Some(cg), true) = (&cgroup, empty_now) {
        let wait = if status.is_ok() {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        cg.0.kill_all(wait);
    }
    phases.mark("cgroup emptied");
    // Every job process is gone: what they wrote reaches central
    // before the home hears of the end.
    let counters = tracer.handler_mut().fs_mut().map(|files| {
        for e in files.finish() {
            log::warn!("job {}: write-back failed: {e}", setup.job);
        }
        files.counters()
    });
    phases.mark("write-back");
    // Output first, then the exit: wait for the relay to drain the pipes
    // (every job process is dead, so they reach EOF).
    if helpers
        .output_done
        .recv_timeout(Duration::from_secs(10))
        .is_err()
    {
        log::warn!("job {}: output relay did not finish", setup.job);
    }
    // Likewise what the job wrote to its sockets reaches central.
    net_relay.drain(Duration::from_secs(10));
    phases.mark("output drained");
    let event = match status {
        Ok(_) if limit_hit.is_some() => JobEvent::Killed {
            reason: limit_hit.unwrap_or_default(),
        },
        Ok(tracer::ExitStatus::Exited(code)) => JobEvent::Exited { code },
        Ok(tracer::ExitStatus::Signaled { signal, .. }) => match control.kill_reason() {
            Some(reason) => JobEvent::Killed { reason },
            None => JobEvent::Signaled { signal },
        },
        Err(e) => JobEvent::Failed {
            reason: e.to_string(),
        },
    };
    // Central first (on the wire before the exit), so `diatom ps` after
    // `diatom exec` returns shows the end; its answer is awaited after.
    let reported = report(&event, counters);
    phases.mark("end sent to central");
    if let Err(e) = ask::<JobReply>(net, home, Job::Exit(event.clone()), Duration::from_secs(5)) {
        log::info!("job {}: home did not take the exit: {e}", setup.job);
    }
    phases.mark("exit acknowledged");
    log::debug!(
        "job {}: exit acknowledged after {:?}",
        setup.job,
        t0.elapsed()
    );
    if let (Some(cg), false) = (&cgroup, empty_now) {
        cg.0.kill_all(Duration::ZERO);
    }
    // No one signals PID 1's pid once it may be reaped (and reused).
    control.init.store(0, Ordering::SeqCst);
    tracer.reap_init();
    drop(cgroup);
    setup.sandbox.refill();
    phases.mark("cgroup removed, spare asked for");
    log::debug!("job {}: {phases}", setup.job);
    crate::daemon::finish_report(setup.job, reported);
    crate::daemon::finish_report(setup.job, started);
    let _ = helpers.stop.send(());
    net_relay.close();
    Ok(event)
}

/// A job's processes, started: the tracer and what goes with them.
struct Started {
    tracer: tracer::Tracer<JobHandler>,
    jail: sandbox::JobSandbox,
    /// Whatever happens from here, the cgroup goes with the job.
    cgroup: Option<CgroupGuard>,
    stdio: Stdio,
}

/// The seccomp filter of every job of this daemon: the job handler's
/// subscriptions do not depend on the job (None, logged, if it cannot
/// be compiled: jobs are then started at their launch).
fn job_filter(job_dir: &Path, run_as: Option<(u32, u32)>) -> Option<Arc<tracer::Filter>> {
    static FILTER: std::sync::OnceLock<Option<Arc<tracer::Filter>>> = std::sync::OnceLock::new();
    FILTER
        .get_or_init(|| {
            let cfg = FsConfig::new(job_dir.to_path_buf(), run_as, 0);
            match tracer::Filter::new(&JobHandler::job_calls(&cfg)) {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    log::warn!(
                        "cannot compile the jobs' filter ahead ({e}): each job compiles its own"
                    );
                    None
                }
            }
        })
        .clone()
}

/// A job's processes made before its launch: PID 1 in the job's
/// namespaces and cgroup, the program's process seized by the job thread
/// and parked before its `execve` with its stdio, ids and filter in
/// place (see `tracer::Parked`). Dropped, it is all torn down.
struct Ahead<'a> {
    /// Forgets PID 1 for the job's controls before it is killed and
    /// reaped (declared first: dropped first).
    init: ForgetInit<'a>,
    parked: tracer::Parked,
    /// The filter the process has.
    filter: Arc<tracer::Filter>,
    jail: sandbox::JobSandbox,
    cgroup: Option<CgroupGuard>,
    stdio: Stdio,
}

/// Clears the job's PID 1 for its controls when dropped: no one signals a
/// reaped (reusable) pid.
struct ForgetInit<'a>(&'a JobControl);

impl Drop for ForgetInit<'_> {
    fn drop(&mut self) {
        self.0.init.store(0, Ordering::SeqCst);
    }
}

/// Makes a job's processes ahead of its launch (see [`Ahead`]), when the
/// node gives jobs namespaces (a parked process finds its launch in the
/// daemon's memory, which only a namespaced start shares). None (logged
/// when it failed) starts the job at its launch as before; a failure
/// made ahead is met again there and reported to the home.
fn park_ahead<'a>(
    inputs: &SandboxInputs<'_>,
    control: &'a JobControl,
    prepared: Option<sandbox::PreparedRoot>,
    phases: &mut Phases,
) -> Option<Ahead<'a>> {
    if !inputs.sandbox.namespaced() {
        return None;
    }
    let filter = job_filter(inputs.job_dir, inputs.run_as)?;
    let fail = |what: String| {
        log::debug!("job {}: not started ahead: {what}", inputs.name);
        None
    };
    let stdio = match Stdio::new(None) {
        Ok(s) => s,
        Err(e) => return fail(format!("stdio: {e}")),
    };
    // The path is the launch's (see `tracer::Parked::launch`).
    let mut cmd = tracer::Command::new("/");
    let (jail, cgroup, base) = match sandboxed(inputs, false, &stdio, prepared, &mut cmd, None) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    phases.mark("ahead: sandbox");
    if inputs.ahead_of_job {
        cmd.init_name(READY_NAME);
    }
    let parked = match cmd.park(&filter, &base.fds()) {
        Ok(p) => p,
        Err(e) => return fail(format!("park: {e}")),
    };
    phases.mark("ahead: parked");
    let init = ForgetInit(control);
    if let Some(pid) = parked.init_pid() {
        // A kill (the home abandoned the job) ends it from now on.
        control.init.store(pid.as_raw(), Ordering::SeqCst);
    }
    Some(Ahead {
        init,
        parked,
        filter,
        jail,
        cgroup,
        stdio,
    })
}

impl Ahead<'_> {
    /// Whether `handler` subscribes to what the parked process's filter
    /// stops.
    fn fits(&self, handler: &JobHandler) -> bool {
        tracer::Handler::subscriptions(handler) == *self.filter.subscriptions()
    }

    /// Launches the parked process with `cmd`'s program; `at_launch`
    /// does what depends on the launch (umask, signals, cwd, rlimits).
    fn launch(
        self,
        handler: JobHandler,
        cmd: &mut tracer::Command,
        at_launch: Arc<ChildLaunch>,
        exe: &[u8],
    ) -> Result<Started, String> {
        let Ahead {
            init,
            parked,
            filter: _,
            jail,
            cgroup,
            stdio,
        } = self;
        // SAFETY: the hook only makes raw system calls on values prepared
        // before (ChildLaunch::apply); the Arc is only read.
        unsafe {
            cmd.pre_exec(move || at_launch.apply());
        }
        // SAFETY: as above.
        let tracer = unsafe { parked.launch(handler, cmd) }.map_err(|e| start_failed(exe, e))?;
        // PID 1 lives on with the tracer (the job's end forgets it).
        std::mem::forget(init);
        Ok(Started {
            tracer,
            jail,
            cgroup,
            stdio,
        })
    }
}

/// The job's sandbox (cgroup, namespaces, root) and the command that
/// starts its process in it with `stdio`, the job's ids and everything
/// of its setup that does not depend on the launch.
fn sandboxed(
    inputs: &SandboxInputs<'_>,
    tty: bool,
    stdio: &Stdio,
    prepared: Option<sandbox::PreparedRoot>,
    cmd: &mut tracer::Command,
    at_launch: Option<Arc<ChildLaunch>>,
) -> Result<(sandbox::JobSandbox, Option<CgroupGuard>, Arc<ChildBase>), String> {
    let mut jail = inputs
        .sandbox
        .job(&mut JobRequest {
            name: &inputs.name,
            job_dir: inputs.job_dir,
            read_only: &inputs.read_only,
            tty,
            prepared,
            limits: inputs.limits,
        })
        .map_err(|e| format!("cannot make the job's sandbox: {e}"))?;
    let cgroup = jail.cgroup.take().map(CgroupGuard);
    if let Some(flags) = jail.namespaces {
        cmd.pid_namespace(flags);
        let cg = cgroup.as_ref().map(|cg| Arc::clone(&cg.0));
        let mut root = jail.root_ahead.take();
        if cg.is_some() || root.is_some() {
            // PID 1 joins the cgroup, then gets the root built meanwhile.
            cmd.on_init(move |pid| {
                if let Some(cg) = &cg {
                    cg.add(pid.as_raw())?;
                }
                match root.as_mut() {
                    Some(r) => r.send(),
                    None => Ok(()),
                }
            });
        }
        if let Some(plan) = jail.plan.take() {
            // SAFETY: the plan only makes raw system calls on paths it
            // prepared (MountPlan::apply).
            unsafe {
                cmd.pre_init(move || plan.apply());
            }
        }
    }
    let base = Arc::new(ChildBase::new(stdio, inputs.run_as));
    let (before, after) = (Arc::clone(&base), Arc::clone(&base));
    // SAFETY: the hooks only make raw system calls on values prepared
    // before the fork (see ChildBase); the Arcs are only read.
    unsafe {
        // Everything but the uid switch is done while the tracer attaches
        // (at a start at the launch, what depends on it as well).
        cmd.pre_attach(move || {
            before.apply()?;
            match &at_launch {
                Some(l) => l.apply(),
                None => Ok(()),
            }
        });
        cmd.pre_exec(move || after.switch_user());
    }
    Ok((jail, cgroup, base))
}

/// Starts the job's processes at its launch, when none were made ahead
/// (a `-t` job, a node without namespaces, a start ahead that failed).
fn spawn_now(
    setup: &JobSetup,
    tty: bool,
    handler: JobHandler,
    mut cmd: tracer::Command,
    stdio: Stdio,
    at_launch: Arc<ChildLaunch>,
    exe: &[u8],
) -> Result<Started, String> {
    let (jail, cgroup, _) = sandboxed(
        &setup.sandbox_inputs(),
        tty,
        &stdio,
        None,
        &mut cmd,
        Some(at_launch),
    )?;
    let tracer = cmd.spawn(handler).map_err(|e| start_failed(exe, e))?;
    Ok(Started {
        tracer,
        jail,
        cgroup,
        stdio,
    })
}

/// Why a start failed, as the home is told.
fn start_failed(exe: &[u8], e: tracer::SpawnError) -> String {
    format!("cannot start {}: {e}", String::from_utf8_lossy(exe))
}

/// Where a job's start and end spent their time, for the debug log.
struct Phases {
    last: std::time::Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new(t0: std::time::Instant) -> Phases {
        Phases {
            last: t0,
            marks: Vec::new(),
        }
    }

    /// Ends the phase called `name`.
    fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.marks.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("phases")?;
        for (name, d) in &self.marks {
            write!(f, ", {name} {:.0} µs", d.as_secs_f64() * 1e6)?;
        }
        Ok(())
    }
}

/// Removes the job's cgroup (killing what is left in it) when dropped.
struct CgroupGuard(Arc<JobCgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove() {
            log::warn!("cannot remove the job's cgroup: {e}");
        }
    }
}

/// How often the cgroup's counters are read while a job runs.
const WATCH_PERIOD: Duration = Duration::from_millis(100);

/// Why the job must end, if the kernel counted a limit hit.
fn limit_reason(cg: &JobCgroup) -> Option<String> {
    let ev = cg.events();
    let limits = cg.limits();
    if ev.oom_kills > 0 {
        Some(format!(
            "out of memory (limit {})",
            crate::config::format_size(limits.memory)
        ))
    } else if ev.pids_max > 0 {
        Some(format!("too many processes (limit {})", limits.pids))
    } else {
        None
    }
}

fn failed(reason: String) -> JobReply {
    JobReply::Failed { reason }
}

/// Waits for the home's launch; ends early when the home abandons the
/// job or central kills it (the home went away before the launch).
fn wait_launch(net: &Net, control: &JobControl) -> Result<(Incoming, Launch), String> {
    let timeout = crossbeam_channel::after(LAUNCH_WAIT);
    loop {
        let req = select! {
            recv(net.requests()) -> req => req.map_err(|_| "the job's endpoint closed".to_string())?,
            recv(control.notice.rx) -> _ => {
                return Err(control.kill_reason().unwrap_or_else(|| "killed".into()))
            }
            recv(timeout) -> _ => return Err("the job's home never launched it".into()),
        };
        match req.request() {
            Ok(Request::Job(Job::Launch(l))) => return Ok((req, *l)),
            Ok(Request::Job(Job::Abandon(why))) => {
                respond(req, JobReply::Ok);
                return Err(why);
            }
            Ok(other) => {
                log::debug!("request before launch: {other:?}");
                respond(req, failed("not launched yet".into()));
            }
            Err(e) => respond(req, failed(e.to_string())),
        }
    }
}

/// How long one file request to the home may take (a `Read` moves up to
/// 4 MiB; an `Exec` may make the home resolve many libraries).
const FILE_TIMEOUT: Duration = Duration::from_secs(60);

/// The job's file layer (its mirror under the job directory, requests to
/// the home over the job's session) and the node directory the first
/// process starts in: the mirror of the caller's cwd.
fn file_layer(setup: &JobSetup, home: Peer, launch: &Launch) -> Result<(FsLayer, PathBuf), String> {
    let mut cfg = FsConfig::new(setup.job_dir.clone(), setup.run_as, launch.umask);
    // The loader, program and libraries of an exec are opened by their
    // cache paths (`objects/<2 hex>/<62 hex>`, the library set's
    // directory): the node's own, never central's.
    cfg.native.extend(setup.cache.job_dirs());
    let client = fs::HomeClient::new(setup.net.clone(), home, FILE_TIMEOUT);
    let mut files = FsLayer::new(cfg, Box::new(client), setup.cache.clone())
        .map_err(|e| format!("cannot make the job's file mirror: {e}"))?;
    files.seed_lookups(&launch.lookups);
    let cwd = files
        .enter_dir(&launch.cwd)
        .map_err(|e| format!("cannot make the job's cwd: {e}"))?;
    Ok((files, cwd))
}

/// How the launch's files were found: counted with the file layer's.
#[derive(Debug, Clone, Copy, Default)]
struct LaunchFetch {
    hits: u64,
    misses: u64,
    bytes: u64,
}

/// Makes sure every file of the launch is cached (fetching the missing
/// ones from the home in one request) and maps them to cache objects.
fn fetch_and_plan(
    setup: &JobSetup,
    home: Peer,
    launch: &Launch,
) -> Result<(LocalExec, LaunchFetch), String> {
    let mut objects: HashMap<Blob, PathBuf> = HashMap::new();
    let mut missing = Vec::new();
    for (path, stamp) in &launch.image.files {
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        match setup.cache.lookup(p, &fs::identity_of(stamp)) {
            Some(obj) => {
                objects.insert(path.clone(), obj.path);
            }
            None => missing.push((path.clone(), *stamp)),
        }
    }
    let mut counted = LaunchFetch {
        hits: objects.len() as u64,
        misses: missing.len() as u64,
        bytes: 0,
    };
    // A file too big to come in one `Fetch` answer comes with `Read`s,
    // as a file the job opens does; the others in as few answers as fit.
    let (large, small): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|(_, stamp)| stamp.size > FETCH_BATCH_BYTES);
    if !large.is_empty() {
        let client = fs::HomeClient::new(setup.net.clone(), home, FILE_TIMEOUT);
        for (path, stamp) in large {
            let obj = fs::fetch_object(&client, &setup.cache, &path, &stamp)
                .map_err(|e| format!("cannot fetch {}: {e}", String::from_utf8_lossy(&path)))?;
            counted.bytes += stamp.size;
            objects.insert(path, obj);
        }
    }
    for batch in fetch_batches(small, FETCH_BATCH_BYTES) {
        let reply = ask::<JobReply>(
            &setup.net,
            home,
            Job::Fetch(batch.clone()),
            Duration::from_secs(120),
        )
        .map_err(|e| format!("cannot fetch the program's files: {e}"))?;
        let JobReply::Files(files) = reply else {
            return Err("the home answered a fetch with something else".into());
        };
        if files.len() != batch.len() {
            return Err("the home sent the wrong number of files".into());
        }
        for ((path, stamp), data) in batch.into_iter().zip(files) {
            let data = data?.0;
            counted.bytes += data.len() as u64;
            let p = Path::new(std::ffi::OsStr::from_bytes(&path));
            let obj = setup
                .cache
                .insert(p, &fs::identity_of(&stamp), None, &data[..])
                .map_err(|e| format!("cache: {e}"))?;
            objects.insert(path, obj.path);
        }
    }
    Ok((fs::exec_plan(&launch.image, &objects)?, counted))
}

/// The most file bytes asked for in one `Fetch`: its answer is one
/// message, and a message may not exceed 64 MiB (larger answers were
/// never sent, and the job waited for them until the fetch timed out).
const FETCH_BATCH_BYTES: u64 = 32 << 20;

/// `files` in order, cut into batches of at most `budget` bytes each (by
/// their stamps' sizes; a file larger than `budget` is a batch of its own).
fn fetch_batches(files: Vec<(Blob, FileStamp)>, budget: u64) -> Vec<Vec<(Blob, FileStamp)>> {
    let mut batches: Vec<Vec<(Blob, FileStamp)>> = Vec::new();
    let mut used = 0u64;
    for f in files {
        let size = f.1.size;
        let fits = !batches.is_empty() && used.saturating_add(size) <= budget;
        if fits {
            used += size;
        } else {
            used = size;
            batches.push(Vec::new());
        }
        if let Some(b) = batches.last_mut() {
            b.push(f);
        }
    }
    batches
}

/// The job's stdio on the node: three pipes, or one pty.
enum Stdio {
    Pipes {
        child: [OwnedFd; 3],
        stdin_w: OwnedFd,
        stdout_r: OwnedFd,
        stderr_r: OwnedFd,
    },
    Tty(Pty),
}

/// The node's ends, read by the output relay.
enum OutputEnds {
    Pipes(OwnedFd, OwnedFd),
    Tty(OwnedFd),
}

/// Where stdin from the home goes.
enum InputEnd {
    Pipe(OwnedFd),
    Tty(OwnedFd),
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

impl Stdio {
    fn new(tty: Option<WireWinSize>) -> std::io::Result<Self> {
        if let Some(WireWinSize { rows, cols }) = tty {
            let pty = Pty::open(WindowSize {
                rows,
                cols,
                ..Default::default()
            })?;
            return Ok(Stdio::Tty(pty));
        }
        let (in_r, in_w) = cloexec_pipe()?;
        let (out_r, out_w) = cloexec_pipe()?;
        let (err_r, err_w) = cloexec_pipe()?;
        Ok(Stdio::Pipes {
            child: [in_r, out_w, err_w],
            stdin_w: in_w,
            stdout_r: out_r,
            stderr_r: err_r,
        })
    }

    /// After the spawn: drop the child's ends, keep ours.
    fn into_parent(self) -> (OutputEnds, InputEnd) {
        match self {
            Stdio::Pipes {
                child,
                stdin_w,
                stdout_r,
                stderr_r,
            } => {
                drop(child);
                (
                    OutputEnds::Pipes(stdout_r, stderr_r),
                    InputEnd::Pipe(stdin_w),
                )
            }
            Stdio::Tty(pty) => {
                drop(pty.slave);
                let out = pty.master.try_clone().map(OutputEnds::Tty);
                match out {
                    Ok(o) => (o, InputEnd::Tty(pty.master)),
                    Err(e) => {
                        log::error!("cannot share the pty: {e}");
                        (OutputEnds::Tty(pty.master), InputEnd::Pipe(dev_null()))
                    }
                }
            }
        }
    }
}

fn dev_null() -> OwnedFd {
    match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => f.into(),
        Err(_) => std::io::stdout().as_raw_fd_owned(),
    }
}

trait AsRawFdOwned {
    fn as_raw_fd_owned(&self) -> OwnedFd;
}

impl AsRawFdOwned for std::io::Stdout {
    fn as_raw_fd_owned(&self) -> OwnedFd {
        // Only reached when /dev/null cannot be opened; a dup of our stdout
        // is a harmless sink.
        std::os::fd::AsFd::as_fd(self)
            .try_clone_to_owned()
            .unwrap_or_else(|_| std::process::abort())
    }
}

/// What the child does between fork and exec that does not depend on
/// the launch (done ahead of it when the job is started ahead), prepared
/// in advance so the hooks themselves allocate nothing.
struct ChildBase {
    stdio: [RawFd; 3],
    tty_slave: Option<RawFd>,
    run_as: Option<(u32, u32)>,
    /// The highest capability the kernel knows (what the bounding set
    /// can hold).
    cap_last: libc::c_int,
}

/// The umask a job's process gets before its launch says which (most
/// callers' own): at the launch only another one is set.
const USUAL_UMASK: libc::mode_t = 0o022;

/// What the child does at the launch, before its exec: what the launch
/// says (prepared in advance as well).
struct ChildLaunch {
    umask: libc::mode_t,
    cwd: CString,
    /// `(resource, soft, hard)`, at most the node's hard limits (so they
    /// can be set after the uid switch too).
    rlimits: [(libc::c_int, u64, u64); 3],
    /// Bit `n` set: signal `n` starts ignored (the caller's); every other
    /// signal starts at its default (see `ChildBase::apply`).
    ignored: u64,
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`,
/// read once), or 63 where it cannot be read: dropping a capability the
/// kernel does not know fails harmlessly, but each try is a system call
/// in the program's pre-exec.
fn cap_last_cap() -> libc::c_int {
    static LAST: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| (0..64).contains(n))
            .unwrap_or(63)
    })
}

impl ChildLaunch {
    fn new(launch: &Launch, cwd: &Path) -> Self {
        // The mirror of the caller's cwd on central (see FsLayer::enter_dir).
        let cwd = CString::new(cwd.as_os_str().as_bytes()).unwrap_or_else(|_| c"/".to_owned());
        Self {
            umask: launch.umask as libc::mode_t,
            cwd,
            ignored: launch
                .ignored_signals
                .iter()
                .filter(|&&s| (1..=64).contains(&s))
                .fold(0u64, |m, &s| m | 1 << (s - 1)),
            rlimits: sandbox::capped_rlimits(&launch.rlimits),
        }
    }

    fn apply(&self) -> std::io::Result<()> {
        // SAFETY (whole block): raw system calls on strings prepared
        // before; nothing allocates.
        unsafe {
            if self.umask != USUAL_UMASK {
                // The usual one was set ahead (ChildBase::apply): one
                // traced stop fewer for a parked process.
                libc::umask(self.umask);
            }
            for sig in 1..=64 {
                if self.ignored & (1 << (sig - 1)) != 0 {
                    libc::signal(sig, libc::SIG_IGN);
                }
            }
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                check(libc::chdir(c"/".as_ptr()))?;
            }
            for (res, soft, hard) in self.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                // A limit the node cannot give stays as the node's.
                libc::setrlimit(res as _, &lim);
            }
        }
        Ok(())
    }
}

impl ChildBase {
    fn new(stdio: &Stdio, run_as: Option<(u32, u32)>) -> Self {
        let (stdio, tty_slave) = match stdio {
            Stdio::Pipes { child, .. } => (
                [
                    child[0].as_raw_fd(),
                    child[1].as_raw_fd(),
                    child[2].as_raw_fd(),
                ],
                None,
            ),
            Stdio::Tty(p) => ([-1; 3], Some(p.slave.as_raw_fd())),
        };
        Self {
            stdio,
            tty_slave,
            run_as,
            cap_last: cap_last_cap(),
        }
    }

    /// The descriptors the child uses.
    fn fds(&self) -> Vec<RawFd> {
        self.stdio
            .iter()
            .copied()
            .chain(self.tty_slave)
            .filter(|&fd| fd >= 0)
            .collect()
    }

    fn apply(&self) -> std::io::Result<()> {
        // SAFETY (whole block): raw system calls on descriptors prepared
        // before the fork; nothing allocates.
        unsafe {
            match self.tty_slave {
                Some(slave) => pty::attach_controlling_terminal(slave)?,
                None => {
                    check(libc::setpgid(0, 0))?;
                    for (i, fd) in self.stdio.iter().enumerate() {
                        check(libc::dup2(*fd, i as libc::c_int))?;
                    }
                }
            }
            libc::umask(USUAL_UMASK);
            for sig in 1..=64 {
                if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                // glibc refuses its own internal signals (32, 33): they
                // are at their default in any new program anyway.
                libc::signal(sig, libc::SIG_DFL);
            }
            if self.run_as.is_some() {
                // No capability can come back: empty the bounding set
                // (the uid switch, see `switch_user`, clears the others).
                for cap in 0..=self.cap_last {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                }
            }
        }
        Ok(())
    }

    /// Switches to the job's ids (a root daemon's jobs), once the tracer
    /// is attached: seizing a process of another uid would need
    /// `CAP_SYS_PTRACE` as well.
    fn switch_user(&self) -> std::io::Result<()> {
        // SAFETY (whole block): raw system calls on values prepared
        // before the fork; nothing allocates.
        unsafe {
            if let Some((uid, gid)) = self.run_as {
                // Raw system calls: glibc's setuid family signals every
                // thread it believes the process has, and a child made by a
                // raw clone (a PID namespace's) still has the daemon's list:
                // it would wait for threads that are not there.
                let raw = |r: libc::c_long| check(r as libc::c_int);
                raw(libc::syscall(
                    libc::SYS_setgroups,
                    0usize,
                    std::ptr::null::<libc::gid_t>(),
                ))?;
                raw(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
                raw(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            }
        }
        Ok(())
    }
}

/// A raw system call's result as a `Result` (errno on a negative one);
/// async-signal-safe.
fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads the job's output and sends it to the home in order.
fn relay_output(net: &Net, home: Peer, ends: OutputEnds) {
    let mut seq = 0u64;
    let mut open: Vec<(u8, Option<std::fs::File>)> = match ends {
        OutputEnds::Pipes(o, e) => vec![(1, Some(o.into())), (2, Some(e.into()))],
        OutputEnds::Tty(m) => vec![(1, Some(m.into()))],
    };
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    while open.iter().any(|(_, f)| f.is_some()) {
        let mut fds: Vec<nix::poll::PollFd<'_>> = Vec::new();
        let mut which = Vec::new();
        for (i, (_, f)) in open.iter().enumerate() {
            if let Some(f) = f {
                fds.push(nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(f),
                    nix::poll::PollFlags::POLLIN,
                ));
                which.push(i);
            }
        }
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("poll on job output: {e}");
                return;
            }
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, i)| *i)
            .collect();
        drop(fds);
        for i in ready {
            let (fd, slot) = &mut open[i];
            let Some(f) = slot else { continue };
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // EOF (or EIO on a pty whose slave side is gone).
                    *slot = None;
                    continue;
                }
                Ok(n) => n,
            };
            let msg = Job::Output {
                seq,
                fd: *fd,
                data: Blob(buf[..n].to_vec()),
            };
            seq += 1;
            match ask::<JobReply>(net, home, msg, OUTPUT_TIMEOUT) {
                Ok(JobReply::Closed) => *slot = None,
                Ok(_) => {}
                Err(e) => {
                    log::info!("output relay stops: {e}");
                    return;
                }
            }
        }
    }
}

/// The dispatch thread until the program runs: waits for its work, and
/// once the launch is in (the home's requests are this thread's from
/// then on) answers the requests the home may send while the job starts:
/// an abandon (its `diatom exec` was interrupted) kills the job whatever
/// step of its start it is in, and ends the calls to the home at once (a
/// fetch of a big program from it stops). `None` when the start failed.
fn before_start(
    net: &Net,
    control: &JobControl,
    launched: &Receiver<()>,
    work: &Receiver<DispatchWork>,
) -> Option<DispatchWork> {
    use crossbeam_channel::TryRecvError;
    let none = crossbeam_channel::never();
    let mut launched = launched.clone();
    let mut launch_in = false;
    loop {
        let requests = if launch_in { net.requests() } else { &none };
        let mut sel = crossbeam_channel::Select::new();
        sel.recv(work);
        sel.recv(&launched);
        sel.recv(requests);
        sel.ready();
        // The work first: a request that came with it (stdin, sent once
        // the start was answered, after the work was handed over) is the
        // dispatch's.
        match work.try_recv() {
            Ok(w) => return Some(w),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        match launched.try_recv() {
            Ok(_) => launch_in = true,
            Err(TryRecvError::Disconnected) => launched = crossbeam_channel::never(),
            Err(TryRecvError::Empty) => {}
        }
        let req = match requests.try_recv() {
            Ok(req) => req,
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => continue,
        };
        match req.request() {
            Ok(Request::Job(Job::Abandon(why))) => {
                let from = req.peer;
                log::info!("job abandoned by its home before it started: {why}");
                control.kill(why);
                respond(req, JobReply::Ok);
                net.close(from);
            }
            Ok(_) => respond(req, failed("not started yet".into())),
            Err(e) => respond(req, failed(e.to_string())),
        }
    }
}

/// Serves the home's requests while the job runs: stdin, resize, signals;
/// and kills the job when the home is lost.
fn dispatch(
    net: &Net,
    home: Peer,
    control: &JobControl,
    relay: &Arc<Relay>,
    input: InputEnd,
    ends: Ends<'_>,
) {
    let Ends {
        limits,
        run_ended,
        stop,
    } = ends;
    let (fd, is_tty) = match input {
        InputEnd::Pipe(fd) => (fd, false),
        InputEnd::Tty(fd) => (fd, true),
    };
    let tty_fd = fd.as_raw_fd();
    let mut stdin = StdinWriter::new(fd, is_tty);
    // The cgroup's counters are read on a tick while the job runs, until a
    // limit kills it.
    let mut limits = limits;
    let ticks = crossbeam_channel::tick(WATCH_PERIOD);
    let mut run_ended = run_ended.clone();
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(run_ended) -> _ => {
                limits = None;
                run_ended = crossbeam_channel::never();
            }
            recv(ticks) -> _ => {
                if let Some(reason) = limits.and_then(limit_reason) {
                    log::info!("killing a job: {reason}");
                    control.kill(reason);
                    limits = None;
                }
            }
            recv(net.lost()) -> peer => {
                if peer.is_ok_and(|p| p == home) {
                    log::warn!("job's home {} is lost: killing the job", home.addr);
                    control.kill("the job's home (diatom exec) went away".into());
                }
            }
            recv(net.requests()) -> req => {
                let Ok(req) = req else { break };
                match req.request() {
                    Ok(Request::Job(Job::Stdin { data, .. })) => {
                        if !stdin.send(req, data.0) {
                            break;
                        }
                    }
                    Ok(Request::Job(Job::Resize(WireWinSize { rows, cols }))) => {
                        if is_tty {
                            let _ = pty::set_window_size(tty_fd, WindowSize { rows, cols, ..Default::default() });
                        }
                        respond(req, JobReply::Ok);
                    }
                    Ok(Request::Job(Job::Signal(sig))) => {
                        control.signal(sig);
                        respond(req, JobReply::Ok);
                    }
                    // The home was interrupted as the start's answer was
                    // on its way.
                    Ok(Request::Job(Job::Abandon(why))) => {
                        control.kill(why);
                        respond(req, JobReply::Ok);
                    }
                    Ok(Request::Net(msg)) => relay.handle(req, msg),
                    Ok(Request::Job(Job::Launch(_))) => respond(req, failed("already launched".into())),
                    Ok(other) => respond(req, failed(format!("unexpected request {other:?}"))),
                    Err(e) => respond(req, failed(e.to_string())),
                }
            }
        }
    }
    stdin.finish();
}

/// What ends the dispatch of a job's requests, and its limit checks.
struct Ends<'a> {
    /// The job's cgroup, whose counters say when a limit killed it.
    limits: Option<&'a JobCgroup>,
    /// Fires when the program has ended: no more limit checks.
    run_ended: &'a Receiver<()>,
    /// Fires when the job's end is reported: no more requests.
    stop: &'a Receiver<()>,
}

/// Messages for the stdin writer thread, each answered once written.
type StdinQueue = crossbeam_channel::Sender<(Incoming, Vec<u8>)>;

/// The program's stdin, fed from the home's `Stdin` messages. A blocked
/// write (the program does not read its stdin) must not hold up signals,
/// so data is written by a thread of its own, started with the first
/// data: most jobs get nothing but the end of their input, which is a
/// close done here.
struct StdinWriter {
    /// The pipe or terminal until a writer thread takes it (None once
    /// closed).
    fd: Option<OwnedFd>,
    is_tty: bool,
    writer: Option<(StdinQueue, std::thread::JoinHandle<()>)>,
}

impl StdinWriter {
    fn new(fd: OwnedFd, is_tty: bool) -> Self {
        StdinWriter {
            fd: Some(fd),
            is_tty,
            writer: None,
        }
    }

    /// Hands one `Stdin` message on (empty data: the end of the input).
    /// False when the writer is gone.
    fn send(&mut self, req: Incoming, data: Vec<u8>) -> bool {
        if self.writer.is_none() {
            if data.is_empty() {
                if !self.is_tty {
                    self.fd = None; // EOF: close the pipe.
                }
                respond(req, JobReply::Ok);
                return true;
            }
            let Some(fd) = self.fd.take() else {
                respond(req, JobReply::Ok); // Closed: nothing reads it.
                return true;
            };
            let (tx, rx) = crossbeam_channel::bounded::<(Incoming, Vec<u8>)>(4);
            let is_tty = self.is_tty;
            let spawned = std::thread::Builder::new()
                .name("job-stdin".into())
                .spawn(move || write_stdin(fd, is_tty, &rx));
            match spawned {
                Ok(h) => self.writer = Some((tx, h)),
                Err(e) => {
                    log::warn!("cannot start the job's stdin writer: {e}");
                    respond(req, JobReply::Ok);
                    return true;
                }
            }
        }
        match &self.writer {
            Some((tx, _)) => tx.send((req, data)).is_ok(),
            None => true,
        }
    }

    fn finish(self) {
        if let Some((tx, h)) = self.writer {
            drop(tx);
            let _ = h.join();
        }
    }
}

/// The stdin writer thread: writes each message's data and answers it.
fn write_stdin(fd: OwnedFd, is_tty: bool, rx: &Receiver<(Incoming, Vec<u8>)>) {
    let mut sink = Some(std::fs::File::from(fd));
    for (req, data) in rx {
        if data.is_empty() {
            if !is_tty {
                sink = None; // EOF: close the pipe.
            }
        } else if let Some(f) = &mut sink {
            if f.write_all(&data).is_err() {
                sink = None; // The program closed its stdin.
            }
        }
        respond(req, JobReply::Ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_are_cut_into_batches_that_fit_one_answer() {
        let f = |name: &str, size: u64| {
            (
                Blob::from(name),
                FileStamp {
                    size,
                    ..Default::default()
                },
            )
        };
        let names = |b: &[Vec<(Blob, FileStamp)>]| -> Vec<Vec<String>> {
            b.iter()
                .map(|v| {
                    v.iter()
                        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
                        .collect()
                })
                .collect()
        };
        assert!(fetch_batches(Vec::new(), 10).is_empty());
        let b = fetch_batches(
            vec![
                f("a", 4),
                f("b", 6),
                f("c", 1),
                f("d", 25),
                f("e", 0),
                f("f", 10),
            ],
            10,
        );
        assert_eq!(
            names(&b),
            [vec!["a", "b"], vec!["c"], vec!["d"], vec!["e", "f"]]
        );
    }
}
