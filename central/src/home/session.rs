//! The home's side of one job: launch it on the node, serve its requests
//! (file fetches, files, sockets, output, the exit), feed it stdin, forward signals, and
//! notice when the node is gone.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{select, Sender};
use diatom_client::net::{ask, reply as respond, Incoming, Net, PendingCall};
use dscp_dicp::msg::control::JobEvent;
use dscp_dicp::msg::fs;
use dscp_dicp::msg::job::{
    ExecImage, FileStamp, Launch, Request as Job, Response as JobReply, WinSize,
};
use dscp_dicp::msg::{Blob, Request};
use dscp_dicp::Peer;
use nix::sys::signal::Signal;

use super::closure::ExecPlan;
use super::fs::sys::time_ns;
use super::fs::FileService;
use super::net::NetService;
use super::{signals, terminal};

/// Everything the home knows when it launches a job.
#[derive(Debug)]
pub struct HomeJob {
    /// The job's endpoint (session key).
    pub net: Net,
    /// The node's per-job endpoint.
    pub node: Peer,
    /// The node's name, for messages.
    pub node_name: String,
    /// What to start.
    pub launch: Launch,
    /// `-t`.
    pub tty: bool,
    /// Listening for the forwarded signals (since before the placement:
    /// one that came meanwhile is pending in it); `None` when it could not
    /// be made: signals then do not reach the job.
    pub signals: Option<(signals::Listener, signals::Waker)>,
}

/// How a job ended, from the home's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node reported the end.
    Ended(JobEvent),
    /// Contact with the node was lost; one line.
    Lost(String),
    /// `diatom exec` got this signal before the job started: the node was
    /// told to drop the job (it never runs the program).
    Interrupted(Signal),
}

/// The reason an interrupted start gives the node (and central's record).
pub fn interrupted_reason(sig: Signal) -> String {
    format!("diatom exec got {sig} before the job started")
}

/// A file's stamp as the node cache checks it.
pub fn stamp(meta: &std::fs::Metadata) -> FileStamp {
    FileStamp {
        size: meta.size(),
        mtime_ns: time_ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: time_ns(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

fn blob(p: &Path) -> Blob {
    Blob(p.as_os_str().as_bytes().to_vec())
}

/// The image of an exec closure: argv, program, loader, libraries and
/// every file with its stamp, taken from a fresh `stat` of each file
/// (following symlinks, as the kernel and loader open them). One function
/// for the launch and for the job's later execs (`home::fs`), so both stamp
/// files alike; the error names the file that could not be stat'ed.
pub fn exec_image(plan: &ExecPlan) -> Result<ExecImage, (PathBuf, std::io::Error)> {
    let mut files = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let meta = std::fs::metadata(&f.path).map_err(|e| (f.path.clone(), e))?;
        files.push((blob(&f.path), stamp(&meta)));
    }
    let bytes = |p: &Path| blob(p);
    Ok(ExecImage {
        argv: plan
            .argv
            .iter()
            .map(|a| Blob(a.as_bytes().to_vec()))
            .collect(),
        program: bytes(&plan.program),
        interpreter: plan.interpreter.as_deref().map(bytes),
        libraries: plan
            .libraries
            .iter()
            .map(|(n, p)| (Blob(n.as_bytes().to_vec()), bytes(p)))
            .collect(),
        preload: plan.preload.iter().map(|p| bytes(p)).collect(),
        files,
    })
}

/// Builds the launch request from the closure and the caller's world.
pub fn launch_from_plan(
    plan: &ExecPlan,
    exe: &Path,
    envp: Vec<Vec<u8>>,
    cwd: &Path,
    tty: Option<WinSize>,
) -> Result<Launch, String> {
    let image = exec_image(plan).map_err(|(p, e)| format!("{}: {e}", p.display()))?;
    let bytes = |p: &Path| blob(p);
    // The kernel shows the resolved file as /proc/self/exe.
    let exe = std::fs::canonicalize(exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    // SAFETY: umask is process-wide and has no getter; set and restore it
    // at once, before other threads exist.
    let umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    let groups = nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    Ok(Launch {
        image,
        envp: envp.into_iter().map(Blob).collect(),
        cwd: bytes(cwd),
        umask: umask as u32,
        hostname: Blob(
            nix::unistd::gethostname()
                .map(|h| h.into_vec())
                .unwrap_or_default(),
        ),
        exe: bytes(&exe),
        groups,
        tty,
        rlimits: own_rlimits(),
        ignored_signals: ignored_signals(),
        // Looked up when the launch goes out (`run`): placement may take
        // long, and the node holds these answers from their arrival.
        lookups: Vec::new(),
    })
}

/// The signals this process ignores, as the caller left them (SIGPIPE
/// excepted: the Rust runtime ignores it in every program, so whether the
/// caller did is unknown, and programs start with it at its default).
fn ignored_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&sig| sig != libc::SIGPIPE)
        .filter(|&sig| {
            // SAFETY: sigaction with a null new action only reads the
            // current one into a zeroed struct we own.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            }
        })
        .collect()
}

/// This process's limits, which the job keeps on the node (capped there).
fn own_rlimits() -> dscp_dicp::msg::job::Rlimits {
    use nix::sys::resource::{getrlimit, Resource};
    let mut r = dscp_dicp::msg::job::Rlimits::default();
    for (res, slot) in [
        (Resource::RLIMIT_CORE, &mut r.core),
        (Resource::RLIMIT_NOFILE, &mut r.nofile),
        (Resource::RLIMIT_STACK, &mut r.stack),
    ] {
        if let Ok((soft, hard)) = getrlimit(res) {
            *slot = (soft, hard);
        }
    }
    r
}

/// Reads the files a node asked for, checking each still has the stamp the
/// launch promised (a file replaced meanwhile must not be cached under the
/// old identity).
fn read_files(list: &[(Blob, FileStamp)]) -> Vec<Result<Blob, String>> {
    list.iter()
        .map(|(path, want)| {
            let p = Path::new(std::ffi::OsStr::from_bytes(path));
            let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let meta = f.metadata().map_err(|e| format!("{}: {e}", p.display()))?;
            if stamp(&meta) != *want {
                return Err(format!("{} changed while the job started", p.display()));
            }
            let mut data = Vec::with_capacity(meta.size() as usize);
            f.read_to_end(&mut data)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(Blob(data))
        })
        .collect()
}

/// Threads serving the job's `Read`s: a fetch keeps several in flight, and
/// each is a file read plus sealing 8 MiB, which the serve loop would
/// otherwise do one after the other while the job's other requests wait.
const READERS: usize = 3;

/// Starts the threads that answer `Read` requests sent to the returned
/// channel; they end when it is dropped. Started at a job's first `Read`:
/// most short jobs send none (their files come whole with `Fetch`), and
/// three threads would cost them more than the rest of their home's
/// serving.
fn start_readers() -> Sender<(Incoming, fs::Request)> {
    let (tx, rx) = crossbeam_channel::bounded::<(Incoming, fs::Request)>(64);
    for i in 0..READERS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("home-read-{i}"))
            .spawn(move || {
                for (req, r) in rx {
                    let fs::Request::Read {
                        path,
                        stamp,
                        offset,
                        len,
                    } = r
                    else {
                        continue;
                    };
                    match super::fs::read_reply(&path, &stamp, offset, len) {
                        Ok(bytes) => {
                            let peer = req.peer;
                            if let Err(e) = req.respond(bytes) {
                                log::debug!("reply to {peer}: {e}");
                            }
                        }
                        Err(e) => log::warn!("cannot encode a Read answer: {e}"),
                    }
                }
            });
        if let Err(e) = spawned {
            // The serve loop reads itself when no reader takes the request.
            log::warn!("cannot start a reader thread: {e}");
        }
    }
    tx
}

/// Serves the node's requests until the exit arrives or the node is lost.
fn serve(
    net: &Net,
    node: Peer,
    node_name: &str,
    done: &Done,
    files: &mut FileService,
    sockets: &NetService,
) {
    let mut readers = None;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut closed = [false; 3];
    loop {
        select! {
            recv(net.lost()) -> peer => {
                if peer.is_ok_and(|p| p == node) {
                    done.send(Outcome::Lost(format!("lost contact with node {node_name}")));
                    return;
                }
            }
            recv(net.requests()) -> req => {
                let Ok(req) = req else { return };
                if req.peer != node {
                    continue;
                }
                match req.request() {
                    Ok(Request::Job(Job::Fetch(list))) => respond(req, JobReply::Files(read_files(&list))),
                    Ok(Request::Fs(r @ fs::Request::Read { .. })) => {
                        if let Err(crossbeam_channel::TrySendError::Full((req, r))
                        | crossbeam_channel::TrySendError::Disconnected((req, r))) =
                            readers.get_or_insert_with(start_readers).try_send((req, r))
                        {
                            respond(req, files.handle(r));
                        }
                    }
                    Ok(Request::Fs(r)) => respond(req, files.handle(r)),
                    Ok(Request::Net(r)) => sockets.handle(req, r),
                    Ok(Request::Job(Job::Output { fd, data, .. })) => {
                        let idx = usize::from(fd.min(2));
                        let res = if closed[idx] {
                            Err(std::io::ErrorKind::BrokenPipe.into())
                        } else if fd == 2 {
                            stderr.write_all(&data).and_then(|()| stderr.flush())
                        } else {
                            stdout.write_all(&data).and_then(|()| stdout.flush())
                        };
                        match res {
                            Ok(()) => respond(req, JobReply::Ok),
                            Err(_) => {
                                closed[idx] = true;
                                respond(req, JobReply::Closed);
                            }
                        }
                    }
                    Ok(Request::Job(Job::Exit(event))) => {
                        respond(req, JobReply::Ok);
                        done.send(Outcome::Ended(event));
                        return;
                    }
                    Ok(other) => respond(req, JobReply::Failed { reason: format!("unexpected request {other:?}") }),
                    Err(e) => log::warn!("bad request from the node: {e}"),
                }
            }
        }
    }
}

/// Sends stdin to the node in order, then EOF; `first` is a chunk read
/// already (sent as number 0).
fn pump_stdin(net: &Net, node: Peer, first: Option<Vec<u8>>) {
    let mut seq = 0u64;
    if let Some(data) = first {
        let msg = Job::Stdin {
            seq,
            data: Blob(data),
        };
        seq += 1;
        if ask::<JobReply>(net, node, msg, Duration::from_secs(3600)).is_err() {
            return;
        }
    }
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let msg = Job::Stdin {
            seq,
            data: Blob(buf[..n].to_vec()),
        };
        seq += 1;
        let sent = ask::<JobReply>(net, node, msg, Duration::from_secs(3600));
        if sent.is_err() || n == 0 {
            return;
        }
    }
}

/// Starts sending stdin. Stdin already at its end (`/dev/null`, a closed
/// descriptor, a pipe whose writer is gone: what scripts and benchmarks
/// give) needs no thread: its EOF goes out as one call, returned to be
/// collected with the others. Anything else gets a thread that blocks in
/// `read`.
fn start_stdin(net: &Net, node: Peer) -> Option<Pending> {
    let mut fds = [libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll on an array we own, without waiting.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) } == 1;
    let mut first = None;
    if ready {
        // Ready: this read does not block. Its data, if any, goes first.
        // A small buffer on the stack: most often there is none (64 KiB
        // from the heap would cost a dozen page faults to read nothing).
        let mut buf = [0u8; 4096];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(0) => {
                let eof = Job::Stdin {
                    seq: 0,
                    data: Blob(Vec::new()),
                };
                return start_call(net, node, eof);
            }
            Ok(n) => first = Some(buf[..n].to_vec()),
            // The thread reads again and decides (as it always did).
            Err(_) => {}
        }
    }
    let stdin_net = net.clone();
    let _ = std::thread::Builder::new()
        .name("home-stdin".into())
        .spawn(move || pump_stdin(&stdin_net, node, first));
    None
}

/// How the serve thread reports the job's end: the outcome, and a wake-up
/// for the thread waiting for it among the signals.
struct Done {
    tx: Sender<Outcome>,
    waker: Option<signals::Waker>,
}

impl Done {
    fn send(&self, outcome: Outcome) {
        let _ = self.tx.send(outcome);
        if let Some(w) = &self.waker {
            w.wake();
        }
    }
}

/// A message to the node in flight (a signal, a resize, stdin's EOF),
/// collected later so that the thread sending it goes on waiting for the
/// job's end meanwhile.
struct Pending {
    what: String,
    call: PendingCall,
}

/// The node's answer to a call, as `ask` would return it.
fn job_reply(answer: Result<Vec<u8>, dscp_dicp::DriverError>) -> Result<JobReply, String> {
    let bytes = answer.map_err(|e| e.to_string())?;
    JobReply::try_from(dscp_dicp::msg::Response::decode(&bytes).map_err(|e| e.to_string())?)
}

impl Pending {
    /// Whether the answer came (a failure is logged).
    fn finished(&mut self) -> bool {
        let Some(answer) = self.call.try_wait() else {
            return false;
        };
        if let Err(e) = job_reply(answer) {
            log::info!("could not send {} to the node: {e}", self.what);
        }
        true
    }
}

fn start_call(net: &Net, node: Peer, msg: Job) -> Option<Pending> {
    let what = format!("{msg:?}");
    match net.start(node, msg) {
        Ok(call) => Some(Pending { what, call }),
        Err(e) => {
            log::info!("could not send {what} to the node: {e}");
            None
        }
    }
}

/// The caller's terminal's size now.
fn window_now() -> Option<WinSize> {
    let (rows, cols, _, _) = terminal::window_size(0).or_else(|| terminal::window_size(1))?;
    Some(WinSize { rows, cols })
}

/// What a forwarded signal becomes on the node.
fn signal_message(sig: Signal) -> Option<Job> {
    if sig == Signal::SIGWINCH {
        return window_now().map(Job::Resize);
    }
    Some(Job::Signal(sig as i32))
}

/// Waits for the job's end, forwarding the signals that arrive meanwhile.
fn await_outcome(
    listener: &mut signals::Listener,
    done: &crossbeam_channel::Receiver<Outcome>,
    net: &Net,
    node: Peer,
    mut calls: Vec<Pending>,
) -> Option<Outcome> {
    loop {
        match done.try_recv() {
            Ok(o) => return Some(o),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        match listener.wait() {
            Ok(signals::Wakeup::Woken) => {}
            Ok(signals::Wakeup::Signal(sig)) => {
                calls.extend(signal_message(sig).and_then(|m| start_call(net, node, m)));
            }
            Err(e) => {
                log::error!("waiting for signals failed: {e}");
                return done.recv().ok();
            }
        }
        calls.retain_mut(|c| !c.finished());
    }
}

/// How long the node may take to start a job (fetching its files, cold,
/// over a slow link).
const START_WAIT: Duration = Duration::from_secs(300);

/// What ended the wait for the node's answer to the launch.
enum Started {
    /// The answer (or why none came).
    Answer(Result<Vec<u8>, dscp_dicp::DriverError>),
    /// A forwarded signal other than SIGWINCH came first.
    Interrupted(Signal),
}

/// Waits for the node's answer to the launch, or for a signal: the job
/// has not started, so there is nothing to forward it to, and the user
/// wants `diatom exec` to end now (as a program that has not started
/// yet would). The signalfd is watched in the same poll as the socket.
/// A SIGWINCH is left to the check after the start (see `run`).
fn await_start(mut call: PendingCall, listener: Option<&mut signals::Listener>) -> Started {
    let Some(listener) = listener else {
        return Started::Answer(call.wait(START_WAIT));
    };
    let deadline = std::time::Instant::now() + START_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Some(answer) = call.wait_or_readable(left, listener.signal_fd()) {
            return Started::Answer(answer);
        }
        match listener.pending() {
            Ok(Some(Signal::SIGWINCH)) | Ok(None) => {}
            Ok(Some(sig)) => return Started::Interrupted(sig),
            Err(e) => {
                log::error!("waiting for signals failed: {e}");
                return Started::Answer(call.wait(left));
            }
        }
    }
}

/// How long the node has to acknowledge an abandon: it answers at once,
/// whatever step of the start it is in; an interrupted `diatom exec`
/// does not wait longer for a node that may be gone.
const ABANDON_WAIT: Duration = Duration::from_secs(2);

/// Tells the node that the launched job must not run (best effort: a
/// node that does not hear it kills the job when this home is gone).
fn abandon_launched(net: &Net, node: Peer, sig: Signal) {
    let why = interrupted_reason(sig);
    if let Err(e) = ask::<JobReply>(net, node, Job::Abandon(why), ABANDON_WAIT) {
        log::info!("the node did not take the abandon: {e}");
    }
}

/// Runs the job to its end. The forwarded signals must already be blocked
/// in the calling thread (before any other thread started).
///
/// Threads: the driver's, `home-serve` (the node's requests), and this one,
/// which launches the job and then waits for its end while forwarding
/// signals. `home-stdin` only when stdin may still bring data, readers only
/// at the first `Read`.
pub fn run(job: HomeJob) -> Outcome {
    let HomeJob {
        net,
        node,
        node_name,
        mut launch,
        tty,
        signals,
    } = job;
    let t0 = std::time::Instant::now();
    net.watch(node);
    // The launch goes first: the node takes a millisecond or more to start
    // the job, time in which the rest of the home is set up (the serve
    // thread among it). Requests the node sends meanwhile wait in the
    // endpoint's queue.
    launch.lookups = super::lookups::gather(&launch);
    let launched_size = launch.tty;
    let launching = net.start(node, Job::Launch(Box::new(launch)));
    let (mut listener, waker) = signals.unzip();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Outcome>(2);
    let done = Done { tx: done_tx, waker };
    let serve_net = net.clone();
    let serve_name = node_name.clone();
    // After the launch read the caller's umask (FileService::new sets it to 0).
    let mut files = FileService::new();
    let sockets = NetService::new(net.clone(), node);
    let spawned = std::thread::Builder::new()
        .name("home-serve".into())
        .spawn(move || serve(&serve_net, node, &serve_name, &done, &mut files, &sockets));
    if let Err(e) = spawned {
        // The launch is out: the node kills the job when this process,
        // its home, is gone (SESSION_IDLE).
        return Outcome::Ended(JobEvent::Failed {
            reason: format!("cannot start a thread: {e}"),
        });
    }
    let started = match launching {
        Ok(call) => match await_start(call, listener.as_mut()) {
            Started::Answer(a) => job_reply(a),
            Started::Interrupted(sig) => {
                abandon_launched(&net, node, sig);
                return Outcome::Interrupted(sig);
            }
        },
        Err(e) => Err(e),
    };
    match started {
        Ok(JobReply::Started) => log::debug!("job started on {node_name} after {:?}", t0.elapsed()),
        Ok(JobReply::Failed { reason }) => return Outcome::Ended(JobEvent::Failed { reason }),
        Ok(other) => {
            return Outcome::Ended(JobEvent::Failed {
                reason: format!("the node answered the launch with {other:?}"),
            })
        }
        Err(e) => {
            // The serve thread may know better (node lost).
            if let Ok(o) = done_rx.recv_timeout(Duration::from_millis(100)) {
                return o;
            }
            return Outcome::Lost(format!("node {node_name} did not start the job: {e}"));
        }
    }
    let raw = if tty {
        terminal::RawMode::enter(0)
    } else {
        None
    };
    let mut calls: Vec<Pending> = start_stdin(&net, node).into_iter().collect();
    // The window may have changed while the job was placed and started
    // (those waits take SIGWINCH without acting on it): the launch has
    // the size from before.
    if let Some(size) = launched_size.filter(|s| window_now().is_some_and(|now| now != *s)) {
        log::debug!("the window changed from {size:?} while the job started");
        calls.extend(signal_message(Signal::SIGWINCH).and_then(|m| start_call(&net, node, m)));
    }
    let outcome = match &mut listener {
        Some(l) => await_outcome(l, &done_rx, &net, node, calls),
        None => done_rx.recv().ok(),
    }
    .unwrap_or_else(|| Outcome::Lost(format!("lost contact with node {node_name}")));
    log::debug!("outcome after {:?}", t0.elapsed());
    drop(raw);
    outcome
}

/// The environment of the job: the caller's, plus `-e KEY=VALUE` overrides.
pub fn job_environment(overrides: &[OsString]) -> Result<Vec<Vec<u8>>, String> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for kv in overrides {
        let b = kv.as_bytes();
        let Some(eq) = b.iter().position(|&c| c == b'=') else {
            return Err(format!("-e {}: expected KEY=VALUE", kv.to_string_lossy()));
        };
        if eq == 0 {
            return Err(format!("-e {}: empty variable name", kv.to_string_lossy()));
        }
        let key = OsString::from_vec(b[..eq].to_vec());
        let val = OsString::from_vec(b[eq + 1..].to_vec());
        env.retain(|(k, _)| *k != key);
        env.push((key, val));
    }
    Ok(env
        .into_iter()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        })
        .collect())
}
