//! The node's sandbox for jobs: what isolation this node can give (decided
//! once when the daemon starts), the pool of per-job user ids, and for each
//! job its cgroup, its namespaces and minimal root, and its rlimits. The
//! runner (`job/runner.rs`) asks for a [`JobSandbox`] and hands its pieces
//! to the tracer's spawn.
//!
//! - A root daemon ([`Mode::Full`]): each job runs as its own uid from the
//!   pool, in new PID, mount, IPC, UTS and (empty) network namespaces, in a
//!   cgroup with the job's memory and pids limits.
//! - An unprivileged daemon (the embedded default of `diatom exec`) cannot
//!   switch uids or make cgroups: it puts the job in a user namespace with
//!   the same other namespaces and root when the kernel allows it
//!   ([`Mode::UserNamespace`]), else runs it as the caller without any
//!   ([`Mode::Off`]), and says which at `-v`.
//!
//! See docs/security.md for what this protects against and what it does not.

pub mod cgroup;
pub mod dynmods;
pub mod mounts;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use dscp_dicp::msg::job::Rlimits;
use nix::unistd::Pid;

use cgroup::{CgroupLimits, JobCgroup, Layout};
use mounts::{ClaimedRoot, MountPlan, RootSpec, SpareRoot};

/// What can go wrong setting up a job's sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A cgroup file or directory could not be made or written.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A path the job's root needs holds a NUL byte.
    #[error("path with a NUL byte: {0:?}")]
    BadPath(PathBuf),
    /// Every uid of the pool is in use (more jobs than the range holds).
    #[error("no free job uid in {first}-{last}")]
    NoUid {
        /// First uid of the range.
        first: u32,
        /// Last uid of the range.
        last: u32,
    },
    /// The directory the job's root is mounted on could not be made.
    #[error("cannot make {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How much isolation this node gives its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Root daemon: per-job uid, namespaces, cgroups.
    Full,
    /// Unprivileged daemon in a user namespace: namespaces and root, no
    /// uid switch, no cgroup.
    UserNamespace,
    /// No namespaces: an unprivileged daemon without user namespaces
    /// (nothing but the trace), or a root daemon that may not make them
    /// (per-job uid and cgroup only).
    Off,
}

/// The namespaces a job gets besides its PID namespace.
const NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;

/// The node's side of the sandbox, made when the daemon starts.
#[derive(Debug)]
pub struct NodeSandbox {
    mode: Mode,
    cgroups: Option<Layout>,
    root_mount: PathBuf,
    uids: Option<UidPool>,
    /// Cgroups made ahead for the next jobs (see [`NodeSandbox::refill`]).
    spare: std::sync::Mutex<Vec<JobCgroup>>,
    spare_seq: std::sync::atomic::AtomicU64,
    /// The network, IPC and UTS namespaces made ahead for the next jobs
    /// (see [`NodeSandbox::refill`]).
    spare_ns: std::sync::Mutex<Vec<SpareNamespaces>>,
    /// How many of each spare to keep (see [`NodeSandbox::keep_spares`]).
    spare_count: std::sync::OnceLock<usize>,
    /// Roots made ahead for the next jobs (see
    /// [`NodeSandbox::keep_spares`]).
    spare_roots: Mutex<Vec<SpareRoot>>,
    /// What they are made for, once the daemon has said.
    root_template: std::sync::OnceLock<RootTemplate>,
    /// The limits spare cgroups are made with (see
    /// [`NodeSandbox::usual_limits`]).
    usual_limits: std::sync::OnceLock<CgroupLimits>,
    /// Wakes the refill thread (see [`NodeSandbox::refill`]); None until
    /// it runs, or when it could not be started.
    refiller: Option<crossbeam_channel::Sender<()>>,
}

impl NodeSandbox {
    /// Decides what this node can do: `uids` is the per-job uid range of a
    /// root daemon (None when unprivileged), `state_dir` the daemon's.
    pub fn new(state_dir: &Path, uids: Option<(u32, u32)>) -> Result<Arc<Self>, SandboxError> {
        let root_mount = state_dir.join("sandbox-root");
        match std::fs::create_dir(&root_mount) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(SandboxError::Dir {
                    path: root_mount,
                    source,
                })
            }
        }
        let root = nix::unistd::geteuid().is_root();
        let mut sb = NodeSandbox {
            mode: Mode::Off,
            cgroups: None,
            root_mount,
            uids: uids.map(|(first, last)| UidPool::new(first, last)),
            spare: std::sync::Mutex::new(Vec::new()),
            spare_seq: std::sync::atomic::AtomicU64::new(0),
            spare_ns: std::sync::Mutex::new(Vec::new()),
            spare_count: std::sync::OnceLock::new(),
            spare_roots: Mutex::new(Vec::new()),
            root_template: std::sync::OnceLock::new(),
            usual_limits: std::sync::OnceLock::new(),
            refiller: None,
        };
        if root {
            sb.mode = Mode::Full;
            match Layout::detect() {
                Some(layout) => match layout.prepare() {
                    Ok(()) => {
                        log::info!("sandbox: cgroup {} for job limits", layout.version());
                        sb.cgroups = Some(layout);
                    }
                    Err(e) => log::warn!("sandbox: no cgroups for jobs ({e}): memory and pids limits are not enforced"),
                },
                None => log::warn!("sandbox: no memory/pids cgroup controllers: memory and pids limits are not enforced"),
            }
            match sb.probe(state_dir, false) {
                Ok(()) => log::info!("sandbox: jobs run as their own uid in pid, mount, ipc, uts and empty network namespaces"),
                Err(e) => {
                    log::warn!("sandbox: cannot make a job's namespaces here ({e}): jobs run as their own uid without namespaces");
                    sb.mode = Mode::Off;
                }
            }
        } else {
            sb.mode = if let Err(e) = sb.probe(state_dir, true) {
                log::debug!("sandbox: user namespace probe: {e}");
                log::info!(
                    "sandbox: unprivileged and user namespaces are not allowed here: jobs run as you, only under the tracer (no namespaces, no cgroup limits)"
                );
                Mode::Off
            } else {
                log::info!(
                    "sandbox: unprivileged: jobs run as you in a user namespace with pid, mount, ipc and uts namespaces (the daemon's network); no cgroup limits, no uid switch"
                );
                Mode::UserNamespace
            };
        }
        sb.refill_now();
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        sb.refiller = Some(tx);
        let sb = Arc::new(sb);
        let weak = Arc::downgrade(&sb);
        let started = std::thread::Builder::new()
            .name("refill".into())
            .spawn(move || refill_thread(&weak, &rx));
        if let Err(e) = started {
            log::warn!(
                "sandbox: no refill thread ({e}): every job makes its own namespaces and cgroup"
            );
        }
        Ok(sb)
    }

    /// Builds a job's namespaces and root once, without a program: whether
    /// this node can (an unprivileged user may be refused user namespaces
    /// or mounts in them; a root daemon in a container may lack the
    /// capabilities).
    fn probe(&self, state_dir: &Path, user_namespace: bool) -> Result<(), String> {
        let spec = RootSpec {
            mount_point: self.root_mount.clone(),
            writable: vec![state_dir.to_path_buf()],
            read_only: vec![],
            tty: false,
            user_namespace,
            own_netns: !user_namespace,
            join: vec![],
        };
        let plan = MountPlan::new(&spec).map_err(|e| e.to_string())?;
        let mut cmd = tracer::Command::new("/");
        cmd.pid_namespace(if user_namespace {
            (NAMESPACES & !libc::CLONE_NEWNET) | libc::CLONE_NEWUSER
        } else {
            NAMESPACES
        });
        // SAFETY: the plan only makes raw system calls (MountPlan::apply).
        unsafe {
            cmd.pre_init(move || plan.apply());
        }
        cmd.probe_namespaces().map_err(|e| e.to_string())
    }

    /// Asks for the next job's spares (see [`NodeSandbox::refill_now`])
    /// to be made on the node's refill thread, which runs at the lowest
    /// priority: right after a job ends, the CPUs are wanted by whoever
    /// waits for that end (on a small machine, `diatom exec` and central
    /// themselves). Returns at once.
    pub fn refill(&self) {
        match &self.refiller {
            // Full: a refill is already asked for.
            Some(tx) => {
                let _ = tx.try_send(());
            }
            None => self.refill_now(),
        }
    }

    /// Makes the cgroup the next job will get, unless one is ready: three
    /// `mkdir`s (v1) taken off the job's start. Spares are named `<daemon
    /// pid>-spare<n>`, so a daemon that stops leaves nothing the next one
    /// keeps (see [`Layout::prepare`]).
    ///
    /// Likewise the next job's network namespace (a root daemon's jobs
    /// each get an empty one): making one costs ~0.3 ms, which a clone
    /// with `CLONE_NEWNET` would put on the job's start; and its IPC and
    /// UTS namespaces (~0.05 ms more in that clone, and their teardown
    /// in PID 1's exit).
    ///
    /// And the spare roots (see [`NodeSandbox::keep_spares`]): a root
    /// costs the copy of the daemon's mounts at `unshare(CLONE_NEWNS)`,
    /// and the `pivot_root` and detach of the old root wait for an RCU
    /// grace period, ~0.5-1 ms the job's start would otherwise wait for.
    ///
    /// Up to one of each per slot, a set for the next job first: jobs
    /// started back to back leave the low-priority refill thread little
    /// time between them, and with a single spare of each a fifth to a
    /// third of such jobs found none ready and made their own.
    ///
    /// No lock is held while a spare is made: a job that starts before
    /// its spare is ready makes its own (see [`NodeSandbox::job`]) rather
    /// than wait for the low-priority refill thread.
    fn refill_now(&self) {
        let count = self.spare_count.get().copied().unwrap_or(1).max(1);
        // What failed is not tried again in this refill.
        let (mut ns_ok, mut cg_ok, mut root_ok) = (self.mode == Mode::Full, true, true);
        for want in 1..=count {
            if ns_ok && locked(&self.spare_ns).len() < want {
                match make_spare_namespaces() {
                    Ok(ns) => keep_spare(&self.spare_ns, ns, want, drop),
                    Err(e) => {
                        log::debug!("no spare namespaces: {e}");
                        ns_ok = false;
                    }
                }
            }
            cg_ok = cg_ok && self.refill_cgroup(want);
            if let (Some(t), true) = (self.root_template.get(), root_ok) {
                if locked(&self.spare_roots).len() < want {
                    match self.make_spare_root(t) {
                        Ok(root) => keep_spare(&self.spare_roots, root, want, drop),
                        Err(e) => {
                            log::debug!("no spare root: {e}");
                            root_ok = false;
                        }
                    }
                }
            }
        }
    }

    /// Makes a spare cgroup for [`NodeSandbox::refill_now`] unless there
    /// are `want` already; false when one could not be made (or the node
    /// has no cgroups).
    fn refill_cgroup(&self, want: usize) -> bool {
        let Some(layout) = &self.cgroups else {
            return false;
        };
        if locked(&self.spare).len() >= want {
            return true;
        }
        let n = self
            .spare_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-spare{n}", std::process::id());
        let made = match self.usual_limits.get() {
            Some(limits) => JobCgroup::create(layout, &name, *limits),
            None => JobCgroup::make(layout, &name),
        };
        match made {
            Ok(cg) => {
                keep_spare(&self.spare, cg, want, |cg| {
                    let _ = cg.remove();
                });
                true
            }
            Err(e) => {
                log::debug!("no spare cgroup: {e}");
                false
            }
        }
    }

    /// The node's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether jobs get namespaces (a PID 1 of their own).
    pub fn namespaced(&self) -> bool {
        self.mode != Mode::Off
    }

    /// The cgroup hierarchy jobs go in, if any.
    pub fn cgroups(&self) -> Option<&Layout> {
        self.cgroups.as_ref()
    }

    /// Takes a uid for a job (None when jobs run as the daemon's user).
    pub fn take_uid(&self) -> Result<Option<JobUid>, SandboxError> {
        match &self.uids {
            None => Ok(None),
            Some(pool) => pool.take().map(Some),
        }
    }

    /// Builds one job's sandbox: its cgroup (made now) and the plan of its
    /// root (applied by the tracer's spawn).
    pub fn job(&self, req: &mut JobRequest<'_>) -> Result<JobSandbox, SandboxError> {
        let cgroup = match &self.cgroups {
            Some(layout) => {
                let spare = self
                    .spare
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .pop();
                let cg = match spare {
                    Some(mut cg) => {
                        cg.set_limits(layout, req.limits)?;
                        cg
                    }
                    None => {
                        log::debug!("job {}: no cgroup made ahead", req.name);
                        let name = format!("{}-{}", std::process::id(), req.name);
                        JobCgroup::create(layout, &name, req.limits)?
                    }
                };
                Some(Arc::new(cg))
            }
            None => None,
        };
        let spare_ns = match self.mode {
            Mode::Full => locked(&self.spare_ns).pop(),
            _ => None,
        };
        if self.mode == Mode::Full && spare_ns.is_none() {
            log::debug!("job {}: no namespaces made ahead", req.name);
        }
        let join: Vec<(RawFd, libc::c_int)> = spare_ns
            .as_ref()
            .map(SpareNamespaces::joins)
            .unwrap_or_default();
        // A root built ahead fits a job without a terminal (a `-t` job's
        // root has the node's /dev/pts).
        let prepared = match req.prepared.take() {
            Some(p) if self.mode == Mode::Full && !req.tty => Some(p),
            _ => None,
        };
        let mut mntns = None;
        let mut root_ahead = None;
        let mut spare_root = None;
        let (flags, plan) = match self.mode {
            Mode::Off => (None, None),
            Mode::Full | Mode::UserNamespace => {
                let userns = self.mode == Mode::UserNamespace;
                let spec = RootSpec {
                    mount_point: self.root_mount.clone(),
                    writable: vec![req.job_dir.to_path_buf()],
                    read_only: req.read_only.to_vec(),
                    tty: req.tty,
                    user_namespace: userns,
                    own_netns: !userns,
                    join,
                };
                // An unprivileged daemon could not enter a network
                // namespace of the job's user namespace (setns needs
                // CAP_SYS_ADMIN in its own), so the job's network relay
                // could not reach it: such jobs share the daemon's.
                let mut flags = if userns {
                    (NAMESPACES & !libc::CLONE_NEWNET) | libc::CLONE_NEWUSER
                } else {
                    // The namespaces made ahead are entered, not made.
                    spec.join.iter().fold(NAMESPACES, |f, &(_, ns)| f & !ns)
                };
                // PID 1 enters the root built ahead: no copy of the
                // node's mounts to make and undo. It may start before the
                // root is done, and then waits for it (RootAhead::send).
                let plan = match prepared.map(|p| p.0) {
                    Some(Prepared::Spare(root)) => {
                        flags &= !libc::CLONE_NEWNS;
                        let plan = MountPlan::enter_spare(&spec, &root);
                        spare_root = Some(root);
                        plan
                    }
                    Some(Prepared::Building(b)) => match RootAhead::new(b) {
                        Ok(root) => {
                            flags &= !libc::CLONE_NEWNS;
                            let plan = MountPlan::enter_sent(
                                &spec,
                                root.theirs.as_raw_fd(),
                                root.ours.as_raw_fd(),
                            );
                            root_ahead = Some(root);
                            plan
                        }
                        Err(prepared) => match prepared.take() {
                            Some(ns) => {
                                flags &= !libc::CLONE_NEWNS;
                                let plan = MountPlan::enter(&spec, ns.as_raw_fd());
                                mntns = Some(ns);
                                plan
                            }
                            None => MountPlan::new(&spec)?,
                        },
                    },
                    None => MountPlan::new(&spec)?,
                };
                (Some(flags), Some(plan))
            }
        };
        Ok(JobSandbox {
            cgroup,
            own_netns: spare_ns.is_some() || flags.is_some_and(|f| f & libc::CLONE_NEWNET != 0),
            namespaces_ahead: spare_ns,
            mntns,
            spare_root,
            root_ahead,
            namespaces: flags,
            plan,
            limits: req.limits,
        })
    }
}

impl Drop for NodeSandbox {
    fn drop(&mut self) {
        let spare = self
            .spare
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for cg in spare.drain(..) {
            let _ = cg.remove();
        }
    }
}

/// What a job asks of the sandbox.
#[derive(Debug)]
pub struct JobRequest<'a> {
    /// The job's id, or what names a start made before its job is known
    /// (its cgroup's name when none was made ahead, log lines).
    pub name: &'a str,
    /// Its directory (mirror, library links): read-write in its root.
    pub job_dir: &'a Path,
    /// Node directories it reads (the cache).
    pub read_only: &'a [PathBuf],
    /// A `-t` job.
    pub tty: bool,
    /// Its root, if one was started ahead ([`NodeSandbox::prepare_root`]).
    pub prepared: Option<PreparedRoot>,
    /// Its effective limits.
    pub limits: CgroupLimits,
}

/// One job's sandbox.
#[derive(Debug)]
pub struct JobSandbox {
    /// Its cgroup (None where the node has none).
    pub cgroup: Option<Arc<JobCgroup>>,
    /// `CLONE_NEW*` flags for the tracer's spawn, None for no namespaces.
    pub namespaces: Option<libc::c_int>,
    /// The job gets its own (empty) network namespace.
    pub own_netns: bool,
    /// That namespace, and the job's IPC and UTS ones, when made ahead
    /// (else the clone makes them); kept open until PID 1 has entered
    /// them.
    pub namespaces_ahead: Option<SpareNamespaces>,
    /// The mount namespace with the job's root, when built ahead (kept
    /// open until PID 1 has entered it).
    pub mntns: Option<OwnedFd>,
    /// The spare root with the job's directory, when one was ready (kept
    /// until PID 1 has entered it).
    pub spare_root: Option<ClaimedRoot>,
    /// The root still being built ahead, for PID 1 once it is done: the
    /// caller must [`RootAhead::send`] it once PID 1 exists (its
    /// `pre_init` waits for it).
    pub root_ahead: Option<RootAhead>,
    /// Its root, built by the namespaces' PID 1.
    pub plan: Option<MountPlan>,
    /// Its limits.
    pub limits: CgroupLimits,
}

/// A job's limit: what it asked for (0 or None: nothing), capped by the
/// node's.
pub fn effective_limit(asked: Option<u64>, node_cap: u64) -> u64 {
    match asked {
        Some(a) if a > 0 => a.min(node_cap),
        _ => node_cap,
    }
}

/// The least soft `RLIMIT_NOFILE` a job gets (where its hard limit allows):
/// the file layer places the descriptors it opens in the job at 1000 and
/// 2000 and up (job/fs/fds.rs), which a soft limit of 1024, a common login
/// default, would not let it do.
pub const NOFILE_FLOOR: u64 = 4096;

/// A job's rlimits: the caller's, each capped by the node's own hard limit
/// (the daemon's `getrlimit`, its policy), with the soft open-files limit
/// raised to [`NOFILE_FLOOR`] where the hard allows. `(resource, soft, hard)`.
pub fn capped_rlimits(asked: &Rlimits) -> [(libc::c_int, u64, u64); 3] {
    use nix::sys::resource::{getrlimit, Resource};
    let cap = |res: Resource, (soft, hard): (u64, u64)| {
        let node_hard = getrlimit(res).map(|(_, h)| h).unwrap_or(u64::MAX);
        let hard = hard.min(node_hard);
        (soft.min(hard), hard)
    };
    let core = cap(Resource::RLIMIT_CORE, asked.core);
    let mut nofile = cap(Resource::RLIMIT_NOFILE, asked.nofile);
    nofile.0 = nofile.0.max(NOFILE_FLOOR.min(nofile.1));
    let stack = cap(Resource::RLIMIT_STACK, asked.stack);
    [
        (libc::RLIMIT_CORE as libc::c_int, core.0, core.1),
        (libc::RLIMIT_NOFILE as libc::c_int, nofile.0, nofile.1),
        (libc::RLIMIT_STACK as libc::c_int, stack.0, stack.1),
    ]
}

/// A job's root made ahead of its launch (see
/// [`NodeSandbox::prepare_root`]).
#[derive(Debug)]
pub struct PreparedRoot(Prepared);

#[derive(Debug)]
enum Prepared {
    /// A spare root, given to this job.
    Spare(ClaimedRoot),
    /// Being built for this job.
    Building(Building),
}

/// A job's root being built on a thread of its own: the thread's result
/// is the mount namespace.
#[derive(Debug)]
struct Building(std::thread::JoinHandle<std::io::Result<Vec<OwnedFd>>>);

/// A root being built ahead (a [`Building`]) and the socket on which
/// the job's PID 1 waits for it (see [`MountPlan::enter_sent`]).
#[derive(Debug)]
pub struct RootAhead {
    prepared: Option<Building>,
    /// The daemon's end.
    ours: OwnedFd,
    /// PID 1's end (it gets a copy at its clone).
    theirs: OwnedFd,
}

impl RootAhead {
    /// The socket pair for `prepared` (it comes back when none can be
    /// made: the caller then waits for the root before PID 1 starts).
    fn new(prepared: Building) -> Result<Self, Building> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        match socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) {
            Ok((ours, theirs)) => Ok(RootAhead {
                prepared: Some(prepared),
                ours,
                theirs,
            }),
            Err(e) => {
                log::debug!("sandbox: no socket for the root made ahead ({e})");
                Err(prepared)
            }
        }
    }

    /// Waits until the root is built and sends its mount namespace to the
    /// job's PID 1. A root that could not be built is an error (and PID 1
    /// is told: its `pre_init` fails).
    pub fn send(&mut self) -> std::io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let ns = self.prepared.take().and_then(Building::take);
        let fds: Vec<RawFd> = ns.iter().map(AsRawFd::as_raw_fd).collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        let iov = [std::io::IoSlice::new(b"r")];
        sendmsg::<()>(self.ours.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
            .map_err(std::io::Error::from)?;
        if ns.is_none() {
            return Err(std::io::Error::other("the job's root made ahead failed"));
        }
        Ok(())
    }
}

impl Building {
    /// The mount namespace holding the root, once built (None, logged,
    /// when it could not be: the job's PID 1 builds it as usual).
    fn take(self) -> Option<OwnedFd> {
        match self.0.join() {
            Ok(Ok(fds)) => fds.into_iter().next(),
            Ok(Err(e)) => {
                log::warn!("sandbox: the job's root made ahead failed ({e}): made at its start");
                None
            }
            Err(_) => None,
        }
    }
}

/// What the node's spare roots are made for (see
/// [`NodeSandbox::keep_spares`]).
#[derive(Debug)]
struct RootTemplate {
    jobs_dir: PathBuf,
    read_only: Vec<PathBuf>,
}

impl NodeSandbox {
    /// Keeps `count` spares (one per job slot) of what a job's sandbox is
    /// made of: network, IPC and UTS namespaces, cgroups, and roots for
    /// jobs whose directories are in `jobs_dir` and who read `read_only`
    /// (where [`NodeSandbox::prepare_root`] builds roots ahead). Made now
    /// and after each job on the refill thread (see
    /// [`NodeSandbox::refill_now`]), so that a job's start only binds its
    /// own directory into a root and enters what is ready. A second call
    /// changes nothing.
    pub fn keep_spares(&self, jobs_dir: PathBuf, read_only: Vec<PathBuf>, count: usize) {
        let _ = self.spare_count.set(count);
        if self.roots_ahead() {
            let _ = self.root_template.set(RootTemplate {
                jobs_dir,
                read_only,
            });
        }
        self.refill();
    }

    /// The limits most jobs get (the node's caps: a job that asks for
    /// none, or for more): spare cgroups are made with them written, so
    /// such a job's start writes none (four cgroup files on v1). A
    /// second call changes nothing.
    pub fn usual_limits(&self, limits: CgroupLimits) {
        let _ = self.usual_limits.set(limits);
    }

    /// Whether jobs' roots are made ahead of their launch: a root node
    /// whose jobs get namespaces. Entering a mount namespace takes
    /// `CAP_SYS_CHROOT` as well (a service unit may leave it out: PID 1
    /// then builds the root).
    fn roots_ahead(&self) -> bool {
        self.mode == Mode::Full && mounts::has_capability(mounts::CAP_SYS_CHROOT)
    }

    /// Builds a spare root (see [`SpareRoot`]) on a thread that unshares
    /// its mount namespace.
    fn make_spare_root(&self, t: &RootTemplate) -> std::io::Result<SpareRoot> {
        let spec = RootSpec {
            mount_point: self.root_mount.clone(),
            writable: vec![],
            read_only: t.read_only.clone(),
            tty: false,
            user_namespace: false,
            own_netns: true,
            join: vec![],
        };
        let jobs_dir = t.jobs_dir.clone();
        use nix::sched::CloneFlags;
        in_new_namespace(
            "root-maker",
            CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS,
            &["mnt"],
            move |fds| {
                let mnt = fds
                    .into_iter()
                    .next()
                    .ok_or_else(|| std::io::Error::other("no mount namespace"))?;
                SpareRoot::build(&spec, &jobs_dir, mnt)
            },
        )?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the root thread panicked")))
    }

    /// A spare root that fits the job, taken from the pool.
    fn take_spare_root(&self, job_dir: &Path, read_only: &[PathBuf]) -> Option<SpareRoot> {
        let mut roots = locked(&self.spare_roots);
        let i = roots.iter().position(|r| r.fits(job_dir, read_only))?;
        Some(roots.swap_remove(i))
    }

    /// Starts making a job's root while the node waits for its launch (a
    /// root node): a spare root ([`NodeSandbox::keep_spares`]) gets
    /// the job's directory, else a thread unshares its mount namespace
    /// and applies [`MountPlan::prepare`]. Either way the job's PID 1
    /// only enters it and mounts `/proc`. `job_dir` is made here (the
    /// bind mount needs it). None where the node builds roots otherwise.
    pub fn prepare_root(&self, job_dir: &Path, read_only: &[PathBuf]) -> Option<PreparedRoot> {
        if !self.roots_ahead() {
            return None;
        }
        if let Some(spare) = self.take_spare_root(job_dir, read_only) {
            match spare.claim(job_dir) {
                Ok(root) => return Some(PreparedRoot(Prepared::Spare(root))),
                // Not kept: it may hold this job's mountpoint by now.
                Err(e) => log::debug!("spare root not used: {e}"),
            }
        } else if self.root_template.get().is_some() {
            log::debug!("no spare root ready: built at the job's start");
        }
        let spec = RootSpec {
            mount_point: self.root_mount.clone(),
            writable: vec![job_dir.to_path_buf()],
            read_only: read_only.to_vec(),
            tty: false,
            user_namespace: false,
            own_netns: true,
            join: vec![],
        };
        use nix::sched::CloneFlags;
        // Everything is done on the thread, even the directory and the
        // plan (a few mkdir, statfs, statx): the job's start waits for
        // the root, and the job thread has its own work meanwhile.
        // CLONE_FS: the thread's own root, cwd and umask for the plan.
        let built = in_new_namespace(
            "root-maker",
            CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS,
            &["mnt"],
            move |fds| {
                crate::job::fs::make_dir_all(&spec.writable[0], &spec.writable[0])?;
                MountPlan::prepare(&spec)
                    .map_err(std::io::Error::other)?
                    .apply()?;
                Ok(fds)
            },
        );
        match built {
            Ok(h) => Some(PreparedRoot(Prepared::Building(Building(h)))),
            Err(e) => {
                log::debug!("no root ahead: {e}");
                None
            }
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a spare made without the lock held to `pool`, unless the pool
/// has `want` already (a refill asked for again meanwhile): then the
/// spare goes to `discard`.
fn keep_spare<T>(pool: &Mutex<Vec<T>>, spare: T, want: usize, discard: impl FnOnce(T)) {
    let mut p = locked(pool);
    if p.len() < want {
        p.push(spare);
    } else {
        drop(p);
        discard(spare);
    }
}

/// The refill thread: makes spares when asked, at the lowest priority,
/// until the node's sandbox is gone.
fn refill_thread(sandbox: &std::sync::Weak<NodeSandbox>, asked: &crossbeam_channel::Receiver<()>) {
    // On Linux a thread's nice value is its own (and inherited by the
    // threads it starts, such as the network namespace's maker).
    // SAFETY: a plain system call on the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        log::debug!(
            "refill thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
    while asked.recv().is_ok() {
        match sandbox.upgrade() {
            Some(sb) => sb.refill_now(),
            None => return,
        }
    }
}

/// A job's network (empty, `lo` up), IPC and UTS namespaces, made ahead
/// (see [`NodeSandbox::refill`]).
#[derive(Debug)]
pub struct SpareNamespaces {
    /// The network namespace (the job's network relay makes its sockets
    /// there).
    pub net: OwnedFd,
    ipc: OwnedFd,
    uts: OwnedFd,
}

impl SpareNamespaces {
    /// What PID 1 enters: (descriptor, `CLONE_NEW*` type).
    fn joins(&self) -> Vec<(RawFd, libc::c_int)> {
        vec![
            (self.net.as_raw_fd(), libc::CLONE_NEWNET),
            (self.ipc.as_raw_fd(), libc::CLONE_NEWIPC),
            (self.uts.as_raw_fd(), libc::CLONE_NEWUTS),
        ]
    }
}

/// Makes a job's network (empty, `lo` up), IPC and UTS namespaces and
/// returns descriptors that keep them.
fn make_spare_namespaces() -> std::io::Result<SpareNamespaces> {
    use nix::sched::CloneFlags;
    let made = in_new_namespace(
        "netns-maker",
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
        &["net", "ipc", "uts"],
        |fds| {
            mounts::loopback_up()?;
            Ok(fds)
        },
    )?
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))?;
    let mut fds = made.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(net), Some(ipc), Some(uts)) => Ok(SpareNamespaces { net, ipc, uts }),
        _ => Err(std::io::Error::other("a namespace descriptor is missing")),
    }
}

/// Runs `setup` on a thread of its own that first unshares the namespaces
/// of `flags` (a namespace is a thread's: the daemon's other threads stay
/// where they are). `setup` gets a descriptor of each of the thread's new
/// namespaces named in `ns` (`net`, `mnt`, ...), opened before it runs (a
/// mount plan's pivot_root hides `/proc`), which keep them once the
/// thread is gone; the thread's result is `setup`'s.
fn in_new_namespace<T: Send + 'static>(
    name: &str,
    flags: nix::sched::CloneFlags,
    ns: &'static [&'static str],
    setup: impl FnOnce(Vec<OwnedFd>) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<T>>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || -> std::io::Result<T> {
            nix::sched::unshare(flags)?;
            let fds = ns
                .iter()
                .map(|n| {
                    std::fs::File::open(format!("/proc/thread-self/ns/{n}")).map(OwnedFd::from)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            setup(fds)
        })
}

/// The job's network namespace (for the job's network relay, which puts
/// its loopback listeners there), from its first process.
pub fn job_netns(pid: Pid) -> Option<std::fs::File> {
    std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()
}

/// The node's pid of the job's process `ns_pid`, as a process of the job
/// (`caller`, a node pid) names it: in a PID namespace, the member of the
/// job whose innermost pid is `ns_pid`; without one, `ns_pid` itself.
pub fn host_pid(caller: Pid, ns_pid: i32, members: &[Pid]) -> Pid {
    let nspid = |p: Pid| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|t| innermost_pid(&t))
    };
    if nspid(caller).is_none_or(|inner| inner == caller.as_raw()) {
        return Pid::from_raw(ns_pid);
    }
    members
        .iter()
        .copied()
        .find(|&m| nspid(m) == Some(ns_pid))
        .unwrap_or(Pid::from_raw(ns_pid))
}

/// The last pid of the `NSpid:` line of a `/proc/PID/status` text: the
/// process's pid in its own (innermost) PID namespace.
fn innermost_pid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The pool of per-job uids: `first..=last`, none of which may own anything
/// on the node (see docs/interface.md, `--job-uids`).
#[derive(Debug)]
pub struct UidPool {
    first: u32,
    last: u32,
    used: Arc<Mutex<Vec<u32>>>,
}

/// A uid taken from the pool, given back when dropped. Its gid is the same
/// number.
#[derive(Debug)]
pub struct JobUid {
    uid: u32,
    used: Arc<Mutex<Vec<u32>>>,
}

impl JobUid {
    /// `(uid, gid)`.
    pub fn ids(&self) -> (u32, u32) {
        (self.uid, self.uid)
    }
}

impl Drop for JobUid {
    fn drop(&mut self) {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|u| *u != self.uid);
    }
}

impl UidPool {
    /// The pool `first..=last`.
    pub fn new(first: u32, last: u32) -> Self {
        UidPool {
            first,
            last,
            used: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The lowest free uid.
    pub fn take(&self) -> Result<JobUid, SandboxError> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let uid =
            (self.first..=self.last)
                .find(|u| !used.contains(u))
                .ok_or(SandboxError::NoUid {
                    first: self.first,
                    last: self.last,
                })?;
        used.push(uid);
        Ok(JobUid {
            uid,
            used: Arc::clone(&self.used),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_goes_to_its_pool_until_the_pool_has_what_is_wanted() {
        let pool = Mutex::new(vec![1]);
        let mut discarded = Vec::new();
        // A second spare is wanted: kept.
        keep_spare(&pool, 2, 2, |s| discarded.push(s));
        // Another thread filled the pool meanwhile: this one goes.
        keep_spare(&pool, 3, 2, |s| discarded.push(s));
        // A lower level asked for than the pool holds: goes too.
        keep_spare(&pool, 4, 1, |s| discarded.push(s));
        assert_eq!(*locked(&pool), vec![1, 2]);
        assert_eq!(discarded, vec![3, 4]);
    }

    #[test]
    fn uids_are_pooled_and_given_back() {
        let pool = UidPool::new(100, 101);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_eq!((a.ids(), b.ids()), ((100, 100), (101, 101)));
        assert!(matches!(pool.take(), Err(SandboxError::NoUid { .. })));
        drop(a);
        assert_eq!(pool.take().unwrap().ids(), (100, 100));
    }

    #[test]
    fn pids_of_a_pid_namespace() {
        assert_eq!(innermost_pid("Name:\tsh\nNSpid:\t4242\t2\nX: 1\n"), Some(2));
        assert_eq!(innermost_pid("NSpid:\t77\n"), Some(77));
        assert_eq!(innermost_pid("Name: x\n"), None);
        // Outside a PID namespace a pid is itself.
        let me = nix::unistd::getpid();
        assert_eq!(host_pid(me, 1234, &[]), Pid::from_raw(1234));
    }

    #[test]
    fn limits_are_capped_by_the_node() {
        assert_eq!(effective_limit(Some(512), 1024), 512);
        assert_eq!(effective_limit(Some(4096), 1024), 1024);
        assert_eq!(effective_limit(None, 1024), 1024);
        assert_eq!(effective_limit(Some(0), 1024), 1024);
        let asked = Rlimits {
            core: (0, 0),
            nofile: (u64::MAX, u64::MAX),
            stack: (8 << 20, u64::MAX),
        };
        let node_nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .unwrap()
                .1;
        let r = capped_rlimits(&asked);
        assert_eq!(r[0].1, 0);
        assert_eq!(r[1].2, node_nofile);
        assert!(r[1].1 <= r[1].2);
        // A login's 1024 soft open files is raised for the file layer.
        let r = capped_rlimits(&Rlimits {
            nofile: (1024, 1 << 20),
            ..asked
        });
        assert_eq!(r[1].1, NOFILE_FLOOR.min(node_nofile));
    }
}
