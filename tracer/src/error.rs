//! Error types of spawning ([`SpawnError`]) and of running the trace
//! ([`TraceError`]). Memory and BPF errors live with their modules.

use nix::errno::Errno;
use nix::unistd::Pid;

/// Why a traced program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `PTRACE_SEIZE` was refused: a container's seccomp profile, Yama
    /// `ptrace_scope`, or a missing `CAP_SYS_PTRACE`.
    #[error("ptrace is not permitted here ({0}): attaching to the new process was refused")]
    PtraceDenied(Errno),
    /// Installing the seccomp filter failed in the child (kernel without
    /// `CONFIG_SECCOMP_FILTER`, or a container that forbids `seccomp(2)`).
    #[error("seccomp is not available here ({0}): installing the filter was refused")]
    SeccompUnavailable(Errno),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed in the child.
    #[error("cannot set no_new_privs ({0})")]
    NoNewPrivs(Errno),
    /// `execve` failed in the child (e.g. ENOENT, EACCES, ENOEXEC).
    #[error("cannot execute {path}: {errno}")]
    Exec {
        /// The program path as given.
        path: String,
        /// The error `execve` returned.
        errno: Errno,
    },
    /// The `pre_exec` hook returned an error in the child.
    #[error("pre-exec setup failed in the child: {0}")]
    PreExec(Errno),
    /// `chdir` to the requested directory failed in the child.
    #[error("cannot change directory to {path}: {errno}")]
    Chdir {
        /// The directory.
        path: String,
        /// The error.
        errno: Errno,
    },
    /// The filter could not be compiled.
    #[error(transparent)]
    Filter(#[from] crate::bpf::BpfError),
    /// An argument, environment entry or path contained a NUL byte.
    #[error("argument contains a NUL byte: {0:?}")]
    Nul(String),
    /// A system call in the parent failed (`pipe2`, `fork`, ...).
    #[error("{what} failed: {errno}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        errno: Errno,
    },
    /// Making the new namespaces (`clone` with `CLONE_NEW*`) was refused:
    /// no privilege, or user namespaces are disabled.
    #[error("cannot make the job's namespaces ({0})")]
    Namespaces(Errno),
    /// Writing the new user namespace's uid/gid maps failed.
    #[error("cannot map ids into the job's user namespace: {0}")]
    IdMap(std::io::Error),
    /// The parent-side hook run when the namespace's first process exists
    /// (e.g. joining a cgroup) failed.
    #[error("setting up the job's first process failed: {0}")]
    InitStarted(std::io::Error),
    /// The `pre_init` hook (mounts, network) failed in the namespace's
    /// first process.
    #[error("setting up the job's namespaces failed: {0}")]
    Init(Errno),
    /// The child died before reporting success or failure of its setup.
    #[error("the new process died during setup (status {0:#x})")]
    ChildDied(i32),
    /// A [`Command`](crate::Command) with a PID namespace was spawned
    /// again: its hooks went to the first program's PID 1, which owns them
    /// until it is reaped.
    #[error("this command's hooks were given to an earlier program")]
    HooksGiven,
    /// [`Command::park`](crate::Command::park) without a PID namespace:
    /// a parked process finds its launch in the caller's memory, which
    /// only a namespaced start shares.
    #[error("only a program with a PID namespace can be parked")]
    ParkWithoutNamespace,
    /// A parked process was launched with a handler whose subscriptions
    /// are not the ones its filter was made for.
    #[error("the handler's subscriptions are not the parked filter's")]
    Subscriptions,
}

/// Errors while running a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The first process failed before or at `execve` (reported by the child
    /// through its error pipe).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// `waitpid` failed unexpectedly.
    #[error("waitpid failed: {0}")]
    Wait(Errno),
    /// A ptrace request failed on a tracee that is still alive.
    #[error("ptrace {op} on {tid} failed: {errno}")]
    Ptrace {
        /// The request.
        op: &'static str,
        /// The thread.
        tid: Pid,
        /// The error.
        errno: Errno,
    },
    /// The tracee died while the tracer was working on it (e.g. during an
    /// injected call). Its exit is still reported to the handler.
    #[error("tracee {0} is gone")]
    Gone(Pid),
    /// An injected system call did not come back as expected.
    #[error("injection into {tid} failed: {why}")]
    Inject {
        /// The thread.
        tid: Pid,
        /// What went wrong.
        why: &'static str,
    },
    /// Tracee memory could not be accessed.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}

impl TraceError {
    /// The errno a system call should report for this failure, when it is
    /// about the tracee's memory; `default` otherwise.
    pub fn errno_or(&self, default: Errno) -> Errno {
        match self {
            TraceError::Memory(m) => m.errno(),
            _ => default,
        }
    }
}
