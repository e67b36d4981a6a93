//! The [`Handler`] trait: what a tracer user implements to decide each
//! intercepted system call, plus the lifecycle callbacks; and the small
//! types those callbacks take ([`Action`], [`ExitStatus`], [`NewTask`]).

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::set::SyscallSet;
use crate::stop::{SyscallExit, SyscallStop};

/// What to do with an intercepted call once the handler has seen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the call run (with whatever arguments the handler rewrote).
    Continue,
    /// Let it run and call [`Handler::handle_exit`] with its result.
    ContinueWatchExit,
    /// Do not run it: the tracee sees this return value (a negative value
    /// `-errno` is an error; see [`Action::errno`]).
    Return(i64),
}

impl Action {
    /// Skip the call and fail it with `e`.
    pub fn errno(e: Errno) -> Action {
        Action::Return(-(e as i64))
    }
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by `signal`.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether a core was dumped.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Decodes a `waitpid` status that is an exit or a death by signal.
    pub fn from_wait(status: i32) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }

    /// The status a shell reports: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }
}

/// How a new task came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewTask {
    /// A new process (`fork`, or `clone`/`clone3` without `CLONE_THREAD`).
    Process,
    /// A new process from `vfork` or `CLONE_VFORK`.
    Vfork,
    /// A new thread in the parent's process.
    Thread,
}

/// Decides what each intercepted system call does. All callbacks run on the
/// tracer's thread, one at a time; the tracee thread concerned is stopped
/// while they run, the others keep running.
pub trait Handler {
    /// The calls this handler wants to see. Read once, at spawn. The tracer
    /// adds [`SyscallSet::internal`] for its own protection; those calls
    /// reach the handler only when it subscribed to them too, and only after
    /// the tracer's own checks.
    fn subscriptions(&self) -> SyscallSet;

    /// A subscribed call is about to run.
    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action;

    /// The result of a call for which [`Action::ContinueWatchExit`] was
    /// returned. The handler may change the result.
    fn handle_exit(&mut self, _exit: &mut SyscallExit<'_>) {}

    /// A new task (`tid`) appeared in process `tgid`, created by `parent`
    /// (a thread id). It has not run yet.
    fn on_new_task(&mut self, _tid: Pid, _tgid: Pid, _parent: Pid, _kind: NewTask) {}

    /// Process `pid` completed an `execve`; `former_tid` is the thread that
    /// called it (different from `pid` when a non-leader thread exec'd; that
    /// thread id no longer exists).
    fn on_exec(&mut self, _pid: Pid, _former_tid: Pid) {}

    /// Task `tid` of process `tgid` ended. For the last thread of a process
    /// (`tid == tgid`), `status` is the process's exit status.
    fn on_exit(&mut self, _tid: Pid, _tgid: Pid, _status: ExitStatus) {}
}

/// A handler that lets every subscribed call run: the tracer's overhead
/// alone, for benchmarks.
#[derive(Debug, Clone)]
pub struct PassThrough(pub SyscallSet);

impl Handler for PassThrough {
    fn subscriptions(&self) -> SyscallSet {
        self.0.clone()
    }

    fn handle_syscall(&mut self, _stop: &mut SyscallStop<'_>) -> Action {
        Action::Continue
    }
}
