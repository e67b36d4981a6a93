//! Starting a program traced: [`Command`] (path, argv, envp, cwd, an optional
//! `pre_exec` hook) and the fork/seize/exec handshake.
//!
//! The child, after `fork`:
//! 1. resets its signal mask and `SIGPIPE` (Rust ignores `SIGPIPE`; a
//!    program must start with the default),
//! 2. runs the `pre_attach` hook (work that need not be traced, done while
//!    the parent attaches),
//! 3. waits on a pipe until the parent has attached with `PTRACE_SEIZE`
//!    (options `EXITKILL | TRACESECCOMP | TRACEFORK | TRACEVFORK |
//!    TRACECLONE | TRACEEXEC | TRACESYSGOOD`); seizing a process blocked in
//!    `read` needs no stop, so no stop has to be consumed,
//! 4. runs the `pre_exec` hook, `chdir`s, sets `no_new_privs`, installs the
//!    seccomp filter (after the attach: a `SECCOMP_RET_TRACE` call without a
//!    tracer fails with `ENOSYS`; with `SECCOMP_FILTER_FLAG_SPEC_ALLOW`, so
//!    the program keeps the speculation mitigations it would have untraced),
//! 5. calls `execve`, which is already a traced call.
//!
//! Any failure in the child is written (stage, errno) to a close-on-exec
//! pipe and the child exits 127; the tracer reads it when the first process
//! exits without having exec'd, and reports a [`SpawnError`] instead of 127.
//!
//! Between `fork` and `execve` the child only makes raw system calls on data
//! prepared before the fork (the parent may be multi-threaded).
//!
//! With [`Command::pid_namespace`] the program instead runs as PID 2 of a
//! new PID namespace (plus the other namespaces asked for):
//! 1. the parent `clone`s the namespace's PID 1 (untraced), writes its
//!    uid/gid maps when a user namespace is made, runs the `on_init` hook
//!    (join a cgroup) and releases it;
//! 2. PID 1 runs the `pre_init` hook (mounts, network; without a user
//!    namespace while the parent runs `on_init`, as nothing in it depends
//!    on the cgroup, else after the id maps are written) and forks the
//!    program's process, then only reaps: the kernel drops signals PID 1
//!    has no handler for, so the program must not be PID 1 or Ctrl-C and
//!    `kill` would not reach it; PID 1 exits when the program's process
//!    has been reaped (at the lowest priority: nobody waits for the
//!    teardown), which kills whatever is left in the namespace;
//! 3. the program's process sends one byte on a unix socket whose reader
//!    has `SO_PASSCRED`, so the kernel hands the parent its pid as the
//!    parent sees it; the parent seizes that process, and from there the
//!    handshake is the one above.
//!
//! [`Command::park`] makes all of that (with a PID namespace) before the
//! program is known: the program's process, seized and with its filter,
//! waits on a futex in the memory it shares with the daemon (`futex` is
//! never a traced call) until [`Parked::launch`] writes its path, argv,
//! envp, cwd and a last hook there and wakes it. The tracer lets that
//! hook's and the `chdir`'s traced calls run untouched (the program has
//! not exec'd: they are the start's own), and the `execve` is the
//! program's first traced call, as in a spawn. Before it makes a parked
//! process, PID 1 closes every descriptor it was not told to keep, so a
//! waiting process holds none of the daemon's (another job's pipes).
//!
//! PID 1 and the program's process (until it execs) share the daemon's
//! memory: what they use is owned by an init thread until PID 1 is
//! reaped, and they run on that thread's glibc state (see `init.rs` for
//! the rules). So a `Command` with a PID namespace hands its hooks to the
//! program it starts, and starts only one.

use std::cell::UnsafeCell;
use std::ffi::{CString, OsStr, OsString};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use crate::bpf;
use crate::error::SpawnError;
use crate::handler::Handler;
use crate::init::{self, Init, InitWork};
use crate::set::SyscallSet;
use crate::tracer::Tracer;

/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW` (linux/seccomp.h).
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 1 << 2;

pub(crate) type PreExec = Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>;
type OnInit = Box<dyn FnMut(Pid) -> std::io::Result<()> + Send + Sync>;

/// The namespaces asked for with [`Command::pid_namespace`].
struct Namespaces {
    /// `CLONE_NEW*` flags besides `CLONE_NEWPID`.
    flags: libc::c_int,
    pre_init: Option<PreExec>,
    on_init: Option<OnInit>,
    /// The name of PID 1 (see [`Command::init_name`]).
    init_name: String,
}

/// PID 1's name unless [`Command::init_name`] says otherwise.
pub const INIT_NAME: &str = "diatom-init";

/// A program to start under the tracer (like `std::process::Command`).
pub struct Command {
    path: OsString,
    argv: Vec<OsString>,
    envp: Option<Vec<OsString>>,
    cwd: Option<OsString>,
    pre_attach: Option<PreExec>,
    pre_exec: Option<PreExec>,
    kill_descendants: bool,
    ns: Option<Namespaces>,
    /// The hooks went to a namespaced program's PID 1.
    hooks_given: bool,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("path", &self.path)
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

/// Stages the child reports failures for (first word of its error message).
pub(crate) mod stage {
    pub const PRE_EXEC: u32 = 1;
    pub const CHDIR: u32 = 2;
    pub const NO_NEW_PRIVS: u32 = 3;
    pub const SECCOMP: u32 = 4;
    pub const EXEC: u32 = 5;
    pub const INIT: u32 = 6;
}

impl Command {
    /// Runs the executable at `path` (no PATH search: resolve it first).
    /// `argv[0]` defaults to `path`.
    pub fn new(path: impl AsRef<OsStr>) -> Self {
        let path = path.as_ref().to_os_string();
        Command {
            argv: vec![path.clone()],
            path,
            envp: None,
            cwd: None,
            pre_attach: None,
            pre_exec: None,
            kill_descendants: true,
            ns: None,
            hooks_given: false,
        }
    }

    /// Sets `argv[0]`.
    pub fn arg0(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.argv[0] = a.as_ref().to_os_string();
        self
    }

    /// Appends an argument.
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.argv.push(a.as_ref().to_os_string());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets the whole environment (`KEY=VALUE` entries). By default the
    /// tracer's own environment is passed on.
    pub fn envp<I, S>(&mut self, entries: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.envp = Some(
            entries
                .into_iter()
                .map(|e| e.as_ref().to_os_string())
                .collect(),
        );
        self
    }

    /// Sets the working directory of the child (default: the tracer's).
    pub fn current_dir(&mut self, dir: impl AsRef<OsStr>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_os_string());
        self
    }

    /// When the first process exits, kill and reap every remaining traced
    /// descendant (default `true`: a job ends with its first process). With
    /// `false`, [`Tracer::run`] returns once every tracee has exited.
    pub fn kill_descendants_on_exit(&mut self, yes: bool) -> &mut Self {
        self.kill_descendants = yes;
        self
    }

    /// A hook run in the child after the tracer attached and before `chdir`,
    /// `no_new_privs`, the filter and `execve`: switch uid, enter namespaces,
    /// join a cgroup, set rlimits, `dup2` descriptors. An `Err` aborts the
    /// start with [`SpawnError::PreExec`].
    ///
    /// # Safety
    /// Runs in a forked child of a possibly multi-threaded process: it must
    /// only do what is async-signal-safe (no allocation, no locks, no
    /// panics; raw system calls are fine). Nothing it does is traced by
    /// seccomp yet. With [`Command::pid_namespace`] the child comes from a
    /// raw `clone`, so libc still believes the parent's threads exist:
    /// libc calls that act on every thread (`setuid`, `setgid`,
    /// `setgroups`) wait for them forever; make those system calls raw.
    pub unsafe fn pre_exec<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        self.pre_exec = Some(Box::new(f));
        self
    }

    /// A hook run in the child before it waits for the tracer to attach
    /// (and so before the `pre_exec` hook): work that does not need the
    /// trace, done while the parent attaches, such as `dup2` of the
    /// descriptors and resetting signal dispositions. An `Err` aborts the
    /// start with [`SpawnError::PreExec`].
    ///
    /// # Safety
    /// As for [`Command::pre_exec`].
    pub unsafe fn pre_attach<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        self.pre_attach = Some(Box::new(f));
        self
    }

    /// Runs the program as PID 2 of a new PID namespace, under a PID 1 that
    /// only reaps (see the module documentation), with the other
    /// namespaces of `flags` (`CLONE_NEWNS | CLONE_NEWNET | ...`) made at
    /// the same time. With `CLONE_NEWUSER` the caller's uid and gid are
    /// mapped to themselves. Killing [`Tracer::init_pid`] ends everything
    /// in the namespace.
    pub fn pid_namespace(&mut self, flags: libc::c_int) -> &mut Self {
        let ns = self.ns.get_or_insert(Namespaces {
            flags: 0,
            pre_init: None,
            on_init: None,
            init_name: INIT_NAME.to_string(),
        });
        ns.flags = flags & !libc::CLONE_NEWPID;
        self
    }

    /// What PID 1 is called (its `comm`, and the parked program's
    /// process's until it execs; `diatom-init` by default). Only with
    /// [`Command::pid_namespace`].
    pub fn init_name(&mut self, name: &str) -> &mut Self {
        if let Some(ns) = self.ns.as_mut() {
            ns.init_name = name.to_string();
        }
        self
    }

    /// A hook run in the parent once the namespace's PID 1 exists and
    /// before it runs anything (e.g. put it in a cgroup). Only with
    /// [`Command::pid_namespace`]. An `Err` aborts the start with
    /// [`SpawnError::InitStarted`].
    pub fn on_init<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut(Pid) -> std::io::Result<()> + Send + Sync + 'static,
    {
        if let Some(ns) = &mut self.ns {
            ns.on_init = Some(Box::new(f));
        }
        self
    }

    /// A hook run by the namespace's PID 1 before it forks the program:
    /// mounts, bringing up `lo`. Only with [`Command::pid_namespace`]. An
    /// `Err` aborts the start with [`SpawnError::Init`].
    ///
    /// # Safety
    /// As for [`Command::pre_exec`]: raw system calls on data prepared
    /// before, nothing that allocates or locks.
    pub unsafe fn pre_init<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        if let Some(ns) = &mut self.ns {
            ns.pre_init = Some(Box::new(f));
        }
        self
    }

    /// Makes the namespaces and runs the `on_init` and `pre_init` hooks
    /// without starting the program: whether [`Command::spawn`] can work
    /// here (an unprivileged user may be refused user namespaces or mounts
    /// in them). `Ok` without [`Command::pid_namespace`].
    pub fn probe_namespaces(&mut self) -> Result<(), SpawnError> {
        let Some(ns) = self.ns.as_mut() else {
            return Ok(());
        };
        let (err_r, err_w) = pipe()?;
        // PID 1 borrows the hook while it lives (see `init.rs`); it comes
        // back once PID 1 is reaped.
        let pre_init = ns.pre_init.take();
        let (ended, work) = match start_init(ns, err_w, pre_init, None) {
            Ok((init, _)) => {
                // Not reached: without a program nothing reports a pid.
                let (_, work) = init.kill_and_wait();
                (Ok(()), work)
            }
            Err((InitEnd::Exited(0), work)) => (Ok(()), work),
            Err((InitEnd::Exited(code), work)) => (
                Err(read_child_error(&err_r, "", None).unwrap_or(SpawnError::ChildDied(code))),
                work,
            ),
            Err((InitEnd::Error(e), work)) => (Err(e), work),
        };
        if let Some(mut work) = work {
            ns.pre_init = work.pre_init.take();
        }
        ended
    }

    /// The path, argv and envp to exec.
    fn image(&self) -> Result<Image, SpawnError> {
        let path = cstring(&self.path)?;
        let argv = self
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = match &self.envp {
            Some(e) => e
                .iter()
                .map(|a| cstring(a))
                .collect::<Result<Vec<_>, _>>()?,
            None => std::env::vars_os()
                .map(|(k, v)| {
                    let mut kv = k;
                    kv.push("=");
                    kv.push(v);
                    cstring(&kv)
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Image {
            path,
            argv_p: nul_terminated(&argv),
            envp_p: nul_terminated(&envp),
            _owned: (argv, envp),
        })
    }

    /// Takes what the program's process needs up to its `execve` (`go`:
    /// it parks before it, and gets its image there).
    fn program(
        &mut self,
        filter: Arc<Filter>,
        sync_r: i32,
        err: i32,
        go: Option<Arc<GoSlot>>,
    ) -> Result<Program, SpawnError> {
        let image = match go {
            Some(_) => None,
            None => Some(self.image()?),
        };
        let cwd = self.cwd.as_ref().map(|c| cstring(c)).transpose()?;
        Ok(Program {
            sync_r,
            err,
            hooks: [self.pre_attach.take(), self.pre_exec.take()],
            cwd,
            filter,
            image,
            go,
            keep: None,
        })
    }

    /// Starts the program traced by `handler`. Returns once the child is
    /// attached; it has not exec'd yet (that happens under [`Tracer::run`],
    /// which also reports exec failures). With [`Command::pid_namespace`]
    /// the hooks go with the program: spawning again fails with
    /// [`SpawnError::HooksGiven`].
    pub fn spawn<H: Handler>(&mut self, handler: H) -> Result<Tracer<H>, SpawnError> {
        if self.hooks_given {
            return Err(SpawnError::HooksGiven);
        }
        let filter = Arc::new(Filter::new(&handler.subscriptions())?);
        let started = self.start(filter, None)?;
        let path = self.path.to_string_lossy().into_owned();
        let cwd = self.cwd.as_ref().map(|c| c.to_string_lossy().into_owned());
        Ok(started.into_tracer(handler, path, cwd))
    }

    /// Makes the program's process as [`Command::spawn`] does (PID 1 and
    /// its `pre_init`, the process, its `pre_attach`, the seize by the
    /// calling thread, its `pre_exec`, `no_new_privs`, `filter`) but parks
    /// it just before its `execve`: [`Parked::launch`] gives it what to
    /// exec. So all of a start that does not depend on the program can be
    /// done before the program is known. This command's path, argv, envp
    /// and cwd are not used.
    ///
    /// Only with [`Command::pid_namespace`] (the parked process shares the
    /// caller's memory, where it finds its launch). PID 1 closes every
    /// descriptor but 0, 1, 2, `keep` and the start's own before it makes
    /// the program's process: a parked process must not hold the
    /// caller's other descriptors (such as another program's pipes) for
    /// as long as it waits. The hooks go with the program, as for a
    /// spawn with a PID namespace.
    pub fn park(&mut self, filter: &Arc<Filter>, keep: &[RawFd]) -> Result<Parked, SpawnError> {
        if self.hooks_given {
            return Err(SpawnError::HooksGiven);
        }
        if self.ns.is_none() {
            return Err(SpawnError::ParkWithoutNamespace);
        }
        let go = Arc::new(GoSlot {
            word: AtomicU32::new(0),
            data: UnsafeCell::new(None),
        });
        let started = self.start(Arc::clone(filter), Some((Arc::clone(&go), keep)))?;
        Ok(Parked {
            started: Some(started),
            filter: Arc::clone(filter),
            go,
            _not_send: PhantomData,
        })
    }

    /// Makes the program's process and seizes it (see the module
    /// documentation); with `go`, it parks before its exec.
    fn start(
        &mut self,
        filter: Arc<Filter>,
        go: Option<(Arc<GoSlot>, &[RawFd])>,
    ) -> Result<Started, SpawnError> {
        let (sync_r, sync_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (go, keep) = match go {
            Some((g, k)) => (Some(g), Some(k)),
            None => (None, None),
        };
        let mut program = self.program(
            Arc::clone(&filter),
            sync_r.as_raw_fd(),
            err_w.as_raw_fd(),
            go,
        )?;
        program.keep = keep.map(|k| {
            let mut v: Vec<i32> = k.to_vec();
            v.extend([0, 1, 2, sync_r.as_raw_fd(), err_w.as_raw_fd()]);
            v
        });
        let path_s = self.path.to_string_lossy().into_owned();
        let cwd_s = self.cwd.as_ref().map(|c| c.to_string_lossy().into_owned());

        let mut init = None;
        let pid = if let Some(ns) = self.ns.as_mut() {
            let err_dup = err_w.try_clone().map_err(|e| SpawnError::Sys {
                what: "dup",
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
            })?;
            let pre_init = ns.pre_init.take();
            match start_init(ns, err_dup, pre_init, Some(program)) {
                Ok((i, pid)) => {
                    init = Some(i);
                    self.hooks_given = true;
                    pid
                }
                Err((end, work)) => {
                    if let Some(mut work) = work {
                        // PID 1 is reaped: the hooks are ours again.
                        ns.pre_init = work.pre_init.take();
                        if let Some(p) = work.program.as_mut() {
                            p.give_back([&mut self.pre_attach, &mut self.pre_exec]);
                        }
                    }
                    drop(err_w);
                    // PID 1 (reaped by now) may have failed first, in its
                    // `pre_init`: its reason is the one.
                    let why = read_child_error(&err_r, &path_s, cwd_s.as_deref());
                    return Err(why.unwrap_or(match end {
                        InitEnd::Error(e) => e,
                        InitEnd::Exited(code) => SpawnError::ChildDied(code),
                    }));
                }
            }
        } else {
            // SAFETY: the child only calls async-signal-safe functions on data
            // prepared above, then execs or _exits.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                program.give_back([&mut self.pre_attach, &mut self.pre_exec]);
                return Err(SpawnError::Sys {
                    what: "fork",
                    errno: Errno::last(),
                });
            }
            if pid == 0 {
                // SAFETY: we are the child; see `child`.
                unsafe { child(&mut program) }
            }
            // The child has its own copy of them.
            program.give_back([&mut self.pre_attach, &mut self.pre_exec]);
            Pid::from_raw(pid)
        };
        drop(sync_r);
        drop(err_w);
        let opts = ptrace::Options::PTRACE_O_EXITKILL
            | ptrace::Options::PTRACE_O_TRACESECCOMP
            | ptrace::Options::PTRACE_O_TRACEFORK
            | ptrace::Options::PTRACE_O_TRACEVFORK
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEEXEC
            | ptrace::Options::PTRACE_O_TRACESYSGOOD;
        if let Err(e) = ptrace::seize(pid, opts) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            if let Some(i) = init {
                // The program's hooks go with what PID 1 used: this
                // command cannot be started again.
                let _ = i.kill_and_wait();
            } else {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            // A child whose `pre_attach` failed has exited before it could
            // be attached to: its reason is the one (every writer of the
            // error pipe is gone now).
            return Err(read_child_error(&err_r, &path_s, cwd_s.as_deref())
                .unwrap_or(SpawnError::PtraceDenied(e)));
        }
        // Release the child. If this fails the child is gone; run() reports it.
        // SAFETY: writing one byte from a valid buffer to our pipe.
        unsafe { libc::write(sync_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        drop(sync_w);
        Ok(Started {
            pid,
            init,
            err_r,
            filter,
            kill_descendants: self.kill_descendants,
        })
    }
}

/// A program's process, seized, not yet traced by a [`Tracer`].
struct Started {
    pid: Pid,
    init: Option<Init>,
    err_r: OwnedFd,
    filter: Arc<Filter>,
    kill_descendants: bool,
}

impl Started {
    fn into_tracer<H: Handler>(self, handler: H, path: String, cwd: Option<String>) -> Tracer<H> {
        Tracer::new(
            handler,
            self.filter.set.clone(),
            (self.pid, self.init),
            self.err_r,
            path,
            cwd,
            self.kill_descendants,
        )
    }

    /// Kills the process and its PID 1 and reaps them (the process as
    /// its tracer: its PID 1 can only reap it, and end, after that).
    fn kill(self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        if let Some(init) = &self.init {
            let _ = nix::sys::signal::kill(init.pid(), nix::sys::signal::Signal::SIGKILL);
        }
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if let Some(init) = self.init {
            let _ = init.wait();
        }
    }
}

/// A program's process made, seized and parked just before its `execve`
/// by [`Command::park`]. [`Parked::launch`] lets it exec; dropped, it is
/// killed and reaped with its PID 1 (and so its namespaces). Like a
/// [`Tracer`] it stays on the thread that made it: that thread is the
/// process's tracer.
pub struct Parked {
    /// `None` once launched.
    started: Option<Started>,
    filter: Arc<Filter>,
    go: Arc<GoSlot>,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("pid", &self.started.as_ref().map(|s| s.pid))
            .finish_non_exhaustive()
    }
}

impl Parked {
    /// The program's process (as the caller sees it).
    pub fn pid(&self) -> Option<Pid> {
        self.started.as_ref().map(|s| s.pid)
    }

    /// PID 1 of its namespaces: killing it ends the parked process too.
    pub fn init_pid(&self) -> Option<Pid> {
        self.started
            .as_ref()
            .and_then(|s| s.init.as_ref())
            .map(Init::pid)
    }

    /// Lets the parked process exec `cmd`'s path with its argv and envp,
    /// after running `cmd`'s `pre_exec` hook and changing to its cwd
    /// (both now under the filter: the tracer lets the calls they make
    /// run untouched, as the program has not started). The trace is
    /// `handler`'s, whose subscriptions must be the filter's
    /// ([`SpawnError::Subscriptions`] otherwise; the process is then
    /// killed). Failures of the hook, the `chdir` or the `execve` are
    /// reported by [`Tracer::run`], as for a spawn.
    ///
    /// # Safety
    /// `cmd`'s `pre_exec` hook runs in the parked process: the rules of
    /// [`Command::pre_exec`] apply.
    pub unsafe fn launch<H: Handler>(
        mut self,
        handler: H,
        cmd: &mut Command,
    ) -> Result<Tracer<H>, SpawnError> {
        if handler.subscriptions() != self.filter.handler_set {
            return Err(SpawnError::Subscriptions);
        }
        let data = GoData {
            image: cmd.image()?,
            cwd: cmd.cwd.as_ref().map(|c| cstring(c)).transpose()?,
            hook: cmd.pre_exec.take(),
        };
        let Some(started) = self.started.take() else {
            return Err(SpawnError::Subscriptions);
        };
        // SAFETY: the process reads `data` only once it sees `word` set,
        // which happens after this write (release/acquire).
        unsafe { *self.go.data.get() = Some(data) };
        self.go.word.store(1, Ordering::Release);
        // SAFETY: a futex wake on a word of ours; the process waits on
        // the same address (shared memory, so a private futex).
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.go.word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            )
        };
        let path = cmd.path.to_string_lossy().into_owned();
        let cwd = cmd.cwd.as_ref().map(|c| c.to_string_lossy().into_owned());
        Ok(started.into_tracer(handler, path, cwd))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(started) = self.started.take() {
            started.kill();
        }
    }
}

/// How a namespaced start ended when no program process was seized.
enum InitEnd {
    /// The parent failed a step (and killed PID 1).
    Error(SpawnError),
    /// PID 1 exited with this code before a program process reported; the
    /// error pipe says why.
    Exited(i32),
}

/// Makes the namespaces' PID 1 (see the module documentation) and returns
/// it with the pid of the program's process, which runs `program` (`None`:
/// PID 1 exits after its `pre_init`, for a probe). A failed start gives
/// back what PID 1 used once it is reaped.
#[allow(clippy::type_complexity)]
fn start_init(
    ns: &mut Namespaces,
    err_w: OwnedFd,
    pre_init: Option<PreExec>,
    program: Option<Program>,
) -> Result<(Init, Pid), (InitEnd, Option<Box<InitWork>>)> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType};
    let (go_r, go_w) = pipe().map_err(|e| (InitEnd::Error(e), None))?;
    let sys = |what: &'static str| {
        move |errno: Errno| (InitEnd::Error(SpawnError::Sys { what, errno }), None)
    };
    let (cred_parent, cred_child) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(sys("socketpair"))?;
    socket::setsockopt(&cred_parent, sockopt::PassCred, &true).map_err(sys("SO_PASSCRED"))?;
    let mut program = program;
    if let Some(keep) = program.as_mut().and_then(|p| p.keep.as_mut()) {
        keep.extend([cred_child.as_raw_fd(), err_w.as_raw_fd()]);
        keep.sort_unstable();
        keep.dedup();
    }
    let work = InitWork::new(
        // Without a user namespace nothing of `pre_init` waits for the
        // parent (mounting needs the id maps in one).
        ns.flags & libc::CLONE_NEWUSER == 0,
        go_r.as_raw_fd(),
        go_w.as_raw_fd(),
        cred_child.as_raw_fd(),
        err_w.as_raw_fd(),
        pre_init,
        program,
    )
    .map_err(|e| (InitEnd::Error(e), None))?;
    let init =
        init::start(work, ns.flags, &ns.init_name).map_err(|(e, w)| (InitEnd::Error(e), w))?;
    // PID 1 has its own copies now.
    drop(go_r);
    drop(cred_child);
    drop(err_w);
    let pid = init.pid();
    let abort = |init: Init, e: SpawnError| {
        let (_, work) = init.kill_and_wait();
        (InitEnd::Error(e), work)
    };
    if ns.flags & libc::CLONE_NEWUSER != 0 {
        if let Err(e) = write_id_maps(pid) {
            return Err(abort(init, SpawnError::IdMap(e)));
        }
    }
    if let Some(f) = ns.on_init.as_mut() {
        if let Err(e) = f(pid) {
            return Err(abort(init, SpawnError::InitStarted(e)));
        }
    }
    // SAFETY: writing one byte from a valid buffer to our pipe.
    unsafe { libc::write(go_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    drop(go_w);
    match recv_pid(&cred_parent) {
        Some(program) => Ok((init, program)),
        None => {
            let (code, work) = init.wait();
            Err((InitEnd::Exited(code), work))
        }
    }
}

/// What the program's process needs up to its `execve`, prepared before
/// the fork (see `child`). With a PID namespace it is in the daemon's
/// memory, owned with the rest of PID 1's `InitWork` (see `init.rs`).
pub(crate) struct Program {
    sync_r: i32,
    err: i32,
    /// `pre_attach`, `pre_exec`.
    hooks: [Option<PreExec>; 2],
    cwd: Option<CString>,
    filter: Arc<Filter>,
    /// What to exec; `None` for a parked process, which gets it from `go`.
    image: Option<Image>,
    /// A parked process's launch (see [`Parked`]).
    go: Option<Arc<GoSlot>>,
    /// Descriptors the program's process keeps (every other one is closed
    /// before it is made); `None`: it inherits every one.
    pub(crate) keep: Option<Vec<i32>>,
}

/// The program's path, argv and envp as `execve` takes them.
struct Image {
    path: CString,
    argv_p: Vec<*const c_char>,
    envp_p: Vec<*const c_char>,
    /// What `argv_p` and `envp_p` point into.
    _owned: (Vec<CString>, Vec<CString>),
}

impl Program {
    /// Puts the hooks back into a command's `pre_attach` and `pre_exec`
    /// (a forked child has its own copy; a reaped PID 1 is done with them).
    fn give_back(&mut self, to: [&mut Option<PreExec>; 2]) {
        for (hook, slot) in self.hooks.iter_mut().zip(to) {
            *slot = hook.take();
        }
    }
}

/// A seccomp filter compiled once for a handler's subscriptions (plus the
/// tracer's own calls), for every program started with it: compiling is
/// work a start need not repeat when the subscriptions do not change.
#[derive(Debug)]
pub struct Filter {
    /// The handler's subscriptions.
    handler_set: SyscallSet,
    /// What the filter stops: those and the tracer's own.
    set: SyscallSet,
    insns: Vec<libc::sock_filter>,
}

impl Filter {
    /// Compiles the filter for a handler subscribing to `subscriptions`.
    pub fn new(subscriptions: &SyscallSet) -> Result<Filter, SpawnError> {
        let mut set = subscriptions.clone();
        set.extend_from(&SyscallSet::internal());
        let insns = bpf::compile(&set)?;
        Ok(Filter {
            handler_set: subscriptions.clone(),
            set,
            insns,
        })
    }

    /// The subscriptions it was made for.
    pub fn subscriptions(&self) -> &SyscallSet {
        &self.handler_set
    }
}

/// Where a parked process finds its launch: the daemon fills `data` and
/// then sets `word` and wakes the futex on it (the process shares the
/// daemon's memory until it execs, see `init.rs`).
pub(crate) struct GoSlot {
    /// 0 while parked, 1 once `data` is written.
    word: AtomicU32,
    data: UnsafeCell<Option<GoData>>,
}

// SAFETY: `data` is written once by the launching thread before `word`
// is set (release) and read by the parked process only after it saw
// `word` set (acquire).
unsafe impl Sync for GoSlot {}
// SAFETY: as above; the raw pointers in `GoData` point into its own
// strings.
unsafe impl Send for GoSlot {}

/// A parked process's launch.
struct GoData {
    image: Image,
    cwd: Option<CString>,
    hook: Option<PreExec>,
}

/// Maps the caller's uid and gid to themselves in `init`'s new user
/// namespace (`setgroups` denied first, as an unprivileged writer must).
fn write_id_maps(init: Pid) -> std::io::Result<()> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    match std::fs::write(format!("/proc/{init}/setgroups"), "deny") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::write(format!("/proc/{init}/uid_map"), format!("{uid} {uid} 1\n"))?;
    std::fs::write(format!("/proc/{init}/gid_map"), format!("{gid} {gid} 1\n"))
}

/// The pid the program's process reported itself with (`None` if every
/// writer closed the socket first).
fn recv_pid(sock: &OwnedFd) -> Option<Pid> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1];
    let mut space = nix::cmsg_space!(libc::ucred);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        ) {
            Ok(msg) if msg.bytes > 0 => {
                for c in msg.cmsgs().ok()? {
                    if let ControlMessageOwned::ScmCredentials(cred) = c {
                        return Some(Pid::from_raw(cred.pid()));
                    }
                }
                return None;
            }
            Ok(_) => return None,
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Reads a child's error message (stage, errno) from the error pipe, once
/// every writer is gone.
pub(crate) fn read_child_error(fd: &OwnedFd, path: &str, cwd: Option<&str>) -> Option<SpawnError> {
    let mut msg = [0u8; 8];
    // SAFETY: reading into a local buffer from our pipe.
    let n = unsafe { libc::read(fd.as_raw_fd(), msg.as_mut_ptr().cast(), 8) };
    if n != 8 {
        return None;
    }
    let stage_no = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let errno = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
    Some(child_error(stage_no, errno, path, cwd))
}

/// Decodes the child's error message (stage, errno).
pub(crate) fn child_error(stage_no: u32, errno: i32, path: &str, cwd: Option<&str>) -> SpawnError {
    let errno = Errno::from_raw(errno);
    match stage_no {
        stage::PRE_EXEC => SpawnError::PreExec(errno),
        stage::CHDIR => SpawnError::Chdir {
            path: cwd.unwrap_or("?").to_string(),
            errno,
        },
        stage::NO_NEW_PRIVS => SpawnError::NoNewPrivs(errno),
        stage::SECCOMP => SpawnError::SeccompUnavailable(errno),
        stage::INIT => SpawnError::Init(errno),
        _ => SpawnError::Exec {
            path: path.to_string(),
            errno,
        },
    }
}

fn cstring(s: &OsStr) -> Result<CString, SpawnError> {
    CString::new(s.as_bytes()).map_err(|_| SpawnError::Nul(s.to_string_lossy().into_owned()))
}

fn nul_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| SpawnError::Sys {
        what: "pipe2",
        errno,
    })
}

/// The child side of the handshake. Never returns.
///
/// # Safety
/// Must only be called in the child right after `fork`, or in the
/// program's process PID 1 made (see `init.rs`).
pub(crate) unsafe fn child(p: &mut Program) -> ! {
    let err_w = p.err;
    let fail = |st: u32, errno: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&st.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: raw write and _exit, async-signal-safe.
        unsafe {
            libc::write(err_w, msg.as_ptr().cast(), 8);
            libc::_exit(127)
        }
    };
    let errno = || Errno::last_raw();
    // SAFETY (whole block): raw, async-signal-safe system calls on valid
    // pointers prepared before the fork.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        let [pre_attach, pre_exec] = &mut p.hooks;
        if let Some(f) = pre_attach {
            if let Err(e) = f() {
                fail(stage::PRE_EXEC, e.raw_os_error().unwrap_or(libc::EINVAL));
            }
        }
        let mut b = 0u8;
        if libc::read(p.sync_r, (&mut b as *mut u8).cast(), 1) != 1 {
            // The parent could not attach and dropped the pipe.
            libc::_exit(127);
        }
        if let Some(f) = pre_exec {
            if let Err(e) = f() {
                fail(stage::PRE_EXEC, e.raw_os_error().unwrap_or(libc::EINVAL));
            }
        }
        let chdir = |cwd: &Option<CString>| {
            if let Some(d) = cwd {
                if libc::chdir(d.as_ptr()) != 0 {
                    fail(stage::CHDIR, errno());
                }
            }
        };
        if p.go.is_none() {
            chdir(&p.cwd);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(stage::NO_NEW_PRIVS, errno());
        }
        // SECCOMP_FILTER_FLAG_SPEC_ALLOW: a filter must not switch on the
        // speculative-store-bypass mitigation the program would not have had
        // untraced (it slows CPU-bound code). Kernels before 4.17 lack the flag.
        let prog = libc::sock_fprog {
            len: p.filter.insns.len() as u16,
            filter: p.filter.insns.as_ptr() as *mut libc::sock_filter,
        };
        let install = |flags: libc::c_ulong| {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if install(SECCOMP_FILTER_FLAG_SPEC_ALLOW) != 0
            && (errno() != libc::EINVAL || install(0) != 0)
        {
            fail(stage::SECCOMP, errno());
        }
        let image = match &p.go {
            None => p.image.as_ref(),
            Some(go) => {
                // Parked: wait for the launch (futex is not a traced call).
                while go.word.load(Ordering::Acquire) == 0 {
                    libc::syscall(
                        libc::SYS_futex,
                        go.word.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0u32,
                        std::ptr::null::<libc::timespec>(),
                    );
                }
                match (*go.data.get()).as_mut() {
                    Some(d) => {
                        if let Some(f) = d.hook.as_mut() {
                            if let Err(e) = f() {
                                fail(stage::PRE_EXEC, e.raw_os_error().unwrap_or(libc::EINVAL));
                            }
                        }
                        chdir(&d.cwd);
                        Some(&d.image)
                    }
                    None => None,
                }
            }
        };
        let Some(image) = image else { libc::_exit(127) };
        libc::execve(
            image.path.as_ptr(),
            image.argv_p.as_ptr(),
            image.envp_p.as_ptr(),
        );
        fail(stage::EXEC, errno())
    }
}
