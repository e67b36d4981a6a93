//! The trace loop: [`Tracer`] owns the table of traced threads and
//! processes, waits for ptrace stops and dispatches them (seccomp stops to
//! the handler, new tasks, execs, group-stops, signals, exits).
//!
//! Rules it follows (man ptrace, "PTRACE_SEIZE" semantics):
//! - A new task's first stop (`PTRACE_EVENT_STOP`) can arrive before its
//!   parent's `PTRACE_EVENT_FORK/VFORK/CLONE`; it is held, not resumed,
//!   until the parent's event registers it, so the handler hears of every
//!   task before it runs.
//! - A group-stop (`PTRACE_EVENT_STOP` with a stop signal) is left stopped
//!   with `PTRACE_LISTEN`, so `SIGSTOP`/`SIGCONT` behave as without a
//!   tracer; a signal-delivery-stop is resumed with that same signal, so the
//!   tracee's signals are never swallowed.
//! - On `PTRACE_EVENT_EXEC` from a non-leader thread, the former thread id
//!   (`PTRACE_GETEVENTMSG`) is dropped and its state moves to the leader's id.
//! - Only the tracer's own thread's children and tracees are waited for
//!   (`__WALL | __WNOTHREAD`): a [`Tracer`] must run on the thread that
//!   spawned it (it is `!Send`), and that thread should have no other
//!   children (they would be reaped here).
//! - The job ends when its first process exits; by default every remaining
//!   descendant is then killed with `SIGKILL` and reaped before
//!   [`Tracer::run`] returns (see [`Command::kill_descendants_on_exit`]).
//!   So another thread ends a whole job by sending `SIGKILL` to the first
//!   process ([`Tracer::pid`]). A dropped tracer kills what is left.
//!
//! [`Command::kill_descendants_on_exit`]: crate::Command::kill_descendants_on_exit

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;

use crate::arch::Regs;
use crate::error::TraceError;
use crate::handler::{Action, ExitStatus, Handler, NewTask};
use crate::init::Init;
use crate::memory::{ProcMemory, TraceeMemory};
use crate::set::SyscallSet;
use crate::spawn::read_child_error;
use crate::stop::{Call, Stopped, SyscallExit, SyscallStop};

const CLONE_UNTRACED: u64 = libc::CLONE_UNTRACED as u64;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
/// `CLONE_ARGS_SIZE_VER0`: the smallest `struct clone_args`.
const CLONE_ARGS_MIN: u64 = 64;

#[derive(Debug)]
struct Task {
    tgid: i32,
    /// Resumed with `PTRACE_SYSCALL`; its syscall-exit stop goes to the handler.
    watching: Option<i64>,
    /// Flags of the last `clone`/`clone3` it entered (thread or process?).
    clone_flags: u64,
    /// Its scratch area and the address-space generation it belongs to.
    scratch: Option<(u64, u32)>,
}

impl Task {
    fn new(tgid: i32) -> Self {
        Task {
            tgid,
            watching: None,
            clone_flags: 0,
            scratch: None,
        }
    }
}

#[derive(Debug)]
struct Proc {
    mem: ProcMemory,
    /// Incremented at each exec (a new address space).
    generation: u32,
    scratch_free: Vec<u64>,
}

impl Proc {
    fn new(pid: i32, generation: u32) -> Self {
        Proc {
            mem: ProcMemory::new(Pid::from_raw(pid)),
            generation,
            scratch_free: Vec::new(),
        }
    }
}

/// Everything but the handler (so that the handler can borrow it mutably
/// through a [`SyscallStop`]).
#[derive(Debug)]
pub(crate) struct Core {
    set: SyscallSet,
    handler_set: SyscallSet,
    root: i32,
    /// PID 1 of the job's PID namespace (a reaper the tracer does not
    /// trace), when the program runs in one. It shares our memory: what
    /// it uses is freed only once it is reaped (see `init.rs`), by its
    /// own thread (so `wait_any` never sees it).
    init: Option<Init>,
    tasks: HashMap<i32, Task>,
    procs: HashMap<i32, Proc>,
    /// New tasks whose first stop came before their parent's event.
    held: HashMap<i32, i32>,
    /// Statuses collected by a targeted wait, to dispatch next.
    deferred: VecDeque<(i32, i32)>,
    err_pipe: Option<OwnedFd>,
    path: String,
    cwd: Option<String>,
    kill_descendants: bool,
    root_execd: bool,
    root_status: Option<ExitStatus>,
    killed_all: bool,
}

/// A running trace (see the module documentation).
pub struct Tracer<H> {
    handler: H,
    core: Core,
    _not_send: PhantomData<*const ()>,
}

impl<H> std::fmt::Debug for Tracer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Tracer<H> {
    pub(crate) fn new(
        handler: H,
        set: SyscallSet,
        (root, init): (Pid, Option<Init>),
        err_pipe: OwnedFd,
        path: String,
        cwd: Option<String>,
        kill_descendants: bool,
    ) -> Self {
        let root = root.as_raw();
        let handler_set = handler.subscriptions();
        let mut core = Core {
            set,
            handler_set,
            root,
            init,
            tasks: HashMap::new(),
            procs: HashMap::new(),
            held: HashMap::new(),
            deferred: VecDeque::new(),
            err_pipe: Some(err_pipe),
            path,
            cwd,
            kill_descendants,
            root_execd: false,
            root_status: None,
            killed_all: false,
        };
        core.tasks.insert(root, Task::new(root));
        core.procs.insert(root, Proc::new(root, 0));
        Tracer {
            handler,
            core,
            _not_send: PhantomData,
        }
    }

    /// The first process.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.core.root)
    }

    /// PID 1 of the program's PID namespace (see
    /// [`Command::pid_namespace`](crate::Command::pid_namespace)): killing
    /// it kills every process of the namespace at once.
    pub fn init_pid(&self) -> Option<Pid> {
        self.core.init.as_ref().map(Init::pid)
    }

    /// Ends PID 1 of the program's namespaces (it exits by itself once
    /// the program's process is gone; this makes sure) and reaps it.
    /// [`Tracer::run`] returns without waiting for it; dropping the
    /// tracer does this too.
    pub fn reap_init(&mut self) {
        self.core.reap_init();
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Gives up the tracer for its handler (after [`Tracer::run_mut`]).
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// The full filter set (the handler's plus the tracer's own calls).
    pub fn filter_set(&self) -> &SyscallSet {
        &self.core.set
    }

    /// Runs the trace until the first process has exited (and, by default,
    /// every other tracee has been killed and reaped), and returns its exit
    /// status. An `execve` failure of the first process (or any failure of
    /// the child before it) is returned as [`TraceError::Spawn`].
    pub fn run(mut self) -> Result<ExitStatus, TraceError> {
        self.run_mut()
    }

    /// [`Tracer::run`] without giving up the tracer (the handler stays
    /// reachable afterwards).
    pub fn run_mut(&mut self) -> Result<ExitStatus, TraceError> {
        loop {
            let (tid, status) = match self.core.deferred.pop_front() {
                Some(x) => x,
                None => match wait_any()? {
                    Some(x) => x,
                    None => break,
                },
            };
            self.dispatch(tid, status)?;
            if self.core.root_status.is_some()
                && self.core.kill_descendants
                && !self.core.killed_all
            {
                // PID 1 is left to reap the first process and exit by
                // itself (at its lowest priority, see spawn.rs): killed
                // now, its teardown would compete with the caller's
                // report of the end. `reap_init` kills it in any case.
                self.core.kill_tracees();
            }
            // Every tracee is gone: the job is over. PID 1 of its
            // namespaces (not traced) is not waited for here: its exit
            // tears the namespaces down (an RCU grace period for the
            // mounts), which the job's end need not wait for; see
            // `reap_init`.
            if self.core.root_status.is_some()
                && self.core.tasks.is_empty()
                && self.core.held.is_empty()
                && self.core.deferred.is_empty()
            {
                break;
            }
        }
        self.core
            .root_status
            .ok_or(TraceError::Gone(Pid::from_raw(self.core.root)))
    }

    fn dispatch(&mut self, tid: i32, status: i32) -> Result<(), TraceError> {
        if !libc::WIFSTOPPED(status) {
            return self.on_exit(tid, status);
        }
        if !self.core.tasks.contains_key(&tid) {
            // A new task that stopped before its parent's fork event, or (after
            // kill_all) a stray: hold it until its parent registers it.
            if self.core.killed_all {
                let _ = nix::sys::signal::kill(Pid::from_raw(tid), nix::sys::signal::SIGKILL);
                return Stopped::new(Pid::from_raw(tid)).cont(0);
            }
            self.core.held.insert(tid, status);
            return Ok(());
        }
        let stopped = Stopped::new(Pid::from_raw(tid));
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        let watching = self
            .core
            .tasks
            .get(&tid)
            .is_some_and(|t| t.watching.is_some());
        match event {
            0 if sig == libc::SIGTRAP | 0x80 => self.on_syscall_exit(stopped),
            0 => stopped.resume(watching, sig),
            libc::PTRACE_EVENT_SECCOMP => self.on_seccomp(stopped),
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                self.on_new_child(stopped, event, watching)
            }
            libc::PTRACE_EVENT_EXEC => self.on_exec(stopped),
            libc::PTRACE_EVENT_STOP => match sig {
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => stopped.listen(),
                _ => stopped.resume(watching, 0),
            },
            _ => stopped.resume(watching, 0),
        }
    }

    fn on_exit(&mut self, tid: i32, status: i32) -> Result<(), TraceError> {
        let Some(es) = ExitStatus::from_wait(status) else {
            return Ok(());
        };
        self.core.held.remove(&tid);
        if let Some(task) = self.core.tasks.remove(&tid) {
            let tgid = task.tgid;
            if let (Some((addr, gen)), Some(p)) = (task.scratch, self.core.procs.get_mut(&tgid)) {
                if p.generation == gen {
                    p.scratch_free.push(addr);
                }
            }
            if tid == tgid {
                self.core.procs.remove(&tgid);
            }
            self.handler
                .on_exit(Pid::from_raw(tid), Pid::from_raw(tgid), es);
        }
        if tid == self.core.root {
            self.core.root_status = Some(es);
            if !self.core.root_execd {
                if let Some(e) = self.core.child_setup_error() {
                    // Still reap whatever else exists before returning.
                    self.core.kill_all();
                    while wait_any()?.is_some() {}
                    return Err(TraceError::Spawn(e));
                }
            }
        }
        Ok(())
    }

    fn on_syscall_exit(&mut self, stopped: Stopped) -> Result<(), TraceError> {
        let tid = stopped.tid();
        let Some(task) = self.core.tasks.get_mut(&tid.as_raw()) else {
            return stopped.cont(0);
        };
        let Some(nr) = task.watching.take() else {
            return stopped.cont(0);
        };
        let tgid = Pid::from_raw(task.tgid);
        let regs = match Regs::get(tid) {
            Ok(r) => r,
            Err(_) => return stopped.cont(0),
        };
        self.core.ensure_proc(tgid.as_raw());
        let mut exit = SyscallExit {
            core: &self.core,
            call: Call {
                tid,
                tgid,
                nr,
                regs,
            },
            dirty: false,
        };
        self.handler.handle_exit(&mut exit);
        if exit.dirty {
            exit.call
                .regs
                .set(tid)
                .map_err(|errno| TraceError::Ptrace {
                    op: "SETREGS",
                    tid,
                    errno,
                })?;
        }
        stopped.cont(0)
    }

    fn on_seccomp(&mut self, stopped: Stopped) -> Result<(), TraceError> {
        let tid = stopped.tid();
        let regs = match Regs::get(tid) {
            Ok(r) => r,
            Err(Errno::ESRCH) => return Ok(()),
            Err(errno) => {
                return Err(TraceError::Ptrace {
                    op: "GETREGS",
                    tid,
                    errno,
                })
            }
        };
        let tgid = self
            .core
            .tasks
            .get(&tid.as_raw())
            .map_or(tid.as_raw(), |t| t.tgid);
        self.core.ensure_proc(tgid);
        let nr = regs.syscall_nr();
        if !self.core.root_execd
            && tid.as_raw() == self.core.root
            && nr != Sysno::execve as i64
            && nr != Sysno::execveat as i64
        {
            // A parked process's own setup after its launch (see
            // `Parked::launch`): the program has not started yet, so
            // these calls are the spawn's, not the program's.
            return stopped.cont(0);
        }
        let mut stop = SyscallStop::new(&mut self.core, stopped, Pid::from_raw(tgid), regs);
        let forced = guard(&mut stop);
        let mut action = if stop.core.handler_set.contains(nr as u64) {
            self.handler.handle_syscall(&mut stop)
        } else {
            Action::Continue
        };
        if let Some(f) = forced {
            if action == Action::ContinueWatchExit {
                // Show the handler the result it will get, without a stop.
                let mut call = stop.call;
                call.regs.set_ret(f);
                let mut exit = SyscallExit {
                    core: stop.core,
                    call,
                    dirty: false,
                };
                self.handler.handle_exit(&mut exit);
            }
            action = Action::Return(f);
        }
        finish(stop, action)
    }

    fn on_new_child(
        &mut self,
        stopped: Stopped,
        event: i32,
        watching: bool,
    ) -> Result<(), TraceError> {
        let parent = stopped.tid();
        let child = match nix::sys::ptrace::getevent(parent) {
            Ok(c) => c as i32,
            Err(_) => return stopped.resume(watching, 0),
        };
        let (ptgid, flags) = self
            .core
            .tasks
            .get(&parent.as_raw())
            .map_or((parent.as_raw(), 0), |t| (t.tgid, t.clone_flags));
        let kind = match event {
            libc::PTRACE_EVENT_FORK => NewTask::Process,
            libc::PTRACE_EVENT_VFORK => NewTask::Vfork,
            _ if flags & libc::CLONE_THREAD as u64 != 0 => NewTask::Thread,
            _ if flags & libc::CLONE_VFORK as u64 != 0 => NewTask::Vfork,
            _ => NewTask::Process,
        };
        let tgid = if kind == NewTask::Thread {
            ptgid
        } else {
            child
        };
        self.core.tasks.insert(child, Task::new(tgid));
        if kind != NewTask::Thread {
            self.core.procs.insert(child, Proc::new(child, 0));
        }
        self.handler
            .on_new_task(Pid::from_raw(child), Pid::from_raw(tgid), parent, kind);
        if let Some(st) = self.core.held.remove(&child) {
            self.dispatch(child, st)?;
        }
        stopped.resume(watching, 0)
    }

    fn on_exec(&mut self, stopped: Stopped) -> Result<(), TraceError> {
        let tid = stopped.tid().as_raw();
        let former = nix::sys::ptrace::getevent(stopped.tid()).map_or(tid, |f| f as i32);
        if former != tid {
            if let Some(t) = self.core.tasks.remove(&former) {
                self.core.tasks.insert(tid, t);
            }
        }
        let generation = self.core.procs.get(&tid).map_or(0, |p| p.generation + 1);
        self.core.procs.insert(tid, Proc::new(tid, generation));
        let watching = match self.core.tasks.get_mut(&tid) {
            Some(t) => {
                t.tgid = tid;
                t.scratch = None;
                t.watching.is_some()
            }
            None => false,
        };
        if tid == self.core.root {
            self.core.root_execd = true;
            self.core.err_pipe = None;
        }
        self.handler
            .on_exec(Pid::from_raw(tid), Pid::from_raw(former));
        stopped.resume(watching, 0)
    }
}

impl Drop for Core {
    /// A tracer dropped before its job ended (never run, or `run` failed)
    /// kills and reaps every tracee, so nothing is left stopped forever.
    fn drop(&mut self) {
        let unfinished = self.root_status.is_none() || (!self.killed_all && !self.tasks.is_empty());
        if unfinished {
            self.kill_all();
            while let Ok(Some(_)) = wait_any() {}
        }
        self.reap_init();
    }
}

/// The tracer's own checks, before the handler: returns a forced result
/// for calls that must fail, and rewrites `clone`/`clone3` so that
/// `CLONE_UNTRACED` cannot escape.
fn guard(stop: &mut SyscallStop<'_>) -> Option<i64> {
    let eperm = -(Errno::EPERM as i64);
    match stop.sysno()? {
        Sysno::ptrace | Sysno::process_vm_readv | Sysno::process_vm_writev => Some(eperm),
        Sysno::seccomp
            if stop.arg(0) == libc::SECCOMP_SET_MODE_FILTER as u64
                && stop.arg(1) & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 =>
        {
            // SECCOMP_RET_USER_NOTIF outranks SECCOMP_RET_TRACE: a listener
            // of the tracee's could run calls we never see.
            Some(eperm)
        }
        Sysno::clone => {
            let flags = stop.arg(0);
            stop.core.set_clone_flags(stop.tid(), flags);
            if flags & CLONE_UNTRACED != 0 {
                stop.set_arg(0, flags & !CLONE_UNTRACED);
            }
            None
        }
        Sysno::clone3 => guard_clone3(stop),
        _ => None,
    }
}

/// Copies `struct clone_args` into the thread's read-only scratch area
/// (so no other thread can change it after the check), clears
/// `CLONE_UNTRACED` there, and points the call at the copy. Sizes the
/// kernel rejects anyway (< 64 or > 4096) are left alone. If the copy
/// cannot be made the call fails with `ENOSYS`, and libc falls back to
/// `clone`, which is checked in registers.
fn guard_clone3(stop: &mut SyscallStop<'_>) -> Option<i64> {
    let (addr, size) = (stop.arg(0), stop.arg(1));
    if !(CLONE_ARGS_MIN..=4096).contains(&size) {
        return None;
    }
    let mut args = match stop.memory().read_bytes(addr, size as usize) {
        Ok(a) => a,
        Err(_) => return Some(-(Errno::EFAULT as i64)),
    };
    let mut flags = u64::from_ne_bytes(args[..8].try_into().unwrap_or([0; 8]));
    stop.core.set_clone_flags(stop.tid(), flags);
    flags &= !CLONE_UNTRACED;
    args[..8].copy_from_slice(&flags.to_ne_bytes());
    match stop.scratch_write(&args) {
        Ok(copy) => {
            stop.set_arg(0, copy);
            None
        }
        Err(e) => {
            log::warn!(
                "clone3 of {}: cannot copy its arguments ({e}); answering ENOSYS",
                stop.tid()
            );
            Some(-(Errno::ENOSYS as i64))
        }
    }
}

/// Applies the handler's decision and resumes the thread.
fn finish(mut stop: SyscallStop<'_>, action: Action) -> Result<(), TraceError> {
    let tid = stop.stopped.tid();
    let watch = match action {
        Action::Continue => false,
        Action::ContinueWatchExit => true,
        Action::Return(v) => {
            stop.call.regs.set_syscall_nr(-1);
            stop.call.regs.set_ret(v);
            stop.dirty = true;
            false
        }
    };
    if stop.dirty {
        if let Err(errno) = stop.call.regs.set(tid) {
            if errno == Errno::ESRCH {
                return Ok(());
            }
            return Err(TraceError::Ptrace {
                op: "SETREGS",
                tid,
                errno,
            });
        }
    }
    if watch {
        if let Some(t) = stop.core.tasks.get_mut(&tid.as_raw()) {
            t.watching = Some(stop.call.nr);
        }
    }
    let requeue = std::mem::take(&mut stop.requeue);
    let tgid = stop.call.tgid;
    stop.stopped.resume(watch, 0)?;
    for sig in requeue {
        // SAFETY: tgkill with plain integers.
        unsafe { libc::syscall(libc::SYS_tgkill, tgid.as_raw(), tid.as_raw(), sig) };
    }
    Ok(())
}

/// `waitpid(-1, __WALL | __WNOTHREAD)`; `None` when there is nothing left.
fn wait_any() -> Result<Option<(i32, i32)>, TraceError> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD) };
        if r >= 0 {
            return Ok(Some((r, status)));
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::ECHILD => return Ok(None),
            e => return Err(TraceError::Wait(e)),
        }
    }
}

impl Core {
    pub(crate) fn memory(&self, tgid: Pid) -> &ProcMemory {
        &self
            .procs
            .get(&tgid.as_raw())
            .expect("a stop's process is registered before the stop is handed out")
            .mem
    }

    fn ensure_proc(&mut self, tgid: i32) {
        self.procs.entry(tgid).or_insert_with(|| Proc::new(tgid, 0));
    }

    fn set_clone_flags(&mut self, tid: Pid, flags: u64) {
        if let Some(t) = self.tasks.get_mut(&tid.as_raw()) {
            t.clone_flags = flags;
        }
    }

    pub(crate) fn scratch_of(&mut self, tid: Pid, tgid: Pid) -> Option<u64> {
        let p = self.procs.get_mut(&tgid.as_raw())?;
        let t = self.tasks.get_mut(&tid.as_raw())?;
        match t.scratch {
            Some((a, g)) if g == p.generation => Some(a),
            _ => {
                let a = p.scratch_free.pop()?;
                t.scratch = Some((a, p.generation));
                Some(a)
            }
        }
    }

    pub(crate) fn set_scratch(&mut self, tid: Pid, tgid: Pid, addr: u64) {
        let generation = self.procs.get(&tgid.as_raw()).map_or(0, |p| p.generation);
        if let Some(t) = self.tasks.get_mut(&tid.as_raw()) {
            t.scratch = Some((addr, generation));
        }
    }

    /// Waits for one status of `tid`.
    pub(crate) fn wait_tid(&mut self, tid: Pid) -> Result<i32, TraceError> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(tid.as_raw(), &mut status, libc::__WALL) };
            if r >= 0 {
                return Ok(status);
            }
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => return Err(TraceError::Gone(tid)),
                e => return Err(TraceError::Wait(e)),
            }
        }
    }

    /// A status that an injection did not expect: keep it for the main loop.
    pub(crate) fn unexpected(&mut self, tid: Pid, status: i32) -> TraceError {
        self.deferred.push_back((tid.as_raw(), status));
        if libc::WIFSTOPPED(status) {
            TraceError::Inject {
                tid,
                why: "unexpected stop during the injected call",
            }
        } else {
            TraceError::Gone(tid)
        }
    }

    /// Reads the child's setup error, if it reported one.
    fn child_setup_error(&mut self) -> Option<crate::error::SpawnError> {
        let fd = self.err_pipe.take()?;
        read_child_error(&fd, &self.path, self.cwd.as_deref())
    }

    /// Kills and reaps PID 1 of the program's namespaces, if any (see
    /// [`Tracer::reap_init`]).
    fn reap_init(&mut self) {
        if let Some(init) = self.init.take() {
            init.kill_and_wait();
        }
    }

    /// Kills every remaining tracee and PID 1 of the namespaces (the job
    /// is over).
    fn kill_all(&mut self) {
        self.kill_tracees();
        if let Some(init) = &self.init {
            let _ = nix::sys::signal::kill(init.pid(), nix::sys::signal::SIGKILL);
        }
    }

    /// Kills every remaining tracee (the job is over).
    fn kill_tracees(&mut self) {
        self.killed_all = true;
        let sigkill = nix::sys::signal::SIGKILL;
        let targets: Vec<i32> = self
            .procs
            .keys()
            .chain(self.tasks.keys())
            .chain(self.held.keys())
            .copied()
            .collect();
        for t in targets {
            let _ = nix::sys::signal::kill(Pid::from_raw(t), sigkill);
        }
    }
}
