//! The tracer: run an unmodified Linux program under ptrace, with a
//! seccomp-bpf filter that stops only the system calls a [`Handler`]
//! subscribes to, and let the handler decide each of them: let it run,
//! emulate it, rewrite its arguments, watch its result, or inject calls.
//!
//! ```no_run
//! use tracer::{Action, Command, Handler, SyscallSet, SyscallStop};
//! use syscalls::Sysno;
//!
//! struct FakePid;
//! impl Handler for FakePid {
//!     fn subscriptions(&self) -> SyscallSet {
//!         [Sysno::getpid].into_iter().collect()
//!     }
//!     fn handle_syscall(&mut self, _stop: &mut SyscallStop<'_>) -> Action {
//!         Action::Return(42)
//!     }
//! }
//! let status = Command::new("/bin/sh").args(["-c", "echo $$"]).spawn(FakePid)?.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security of the trace (always on, whatever the handler does)
//! - The tracee's own `ptrace`, `process_vm_readv` and `process_vm_writev`
//!   fail with `EPERM` (skipped, never run): it cannot debug or read other
//!   processes, and cannot hang on attaching to a sibling.
//! - `CLONE_UNTRACED` is cleared in `clone`'s flags register before the call
//!   runs. `clone3` keeps its flags in memory, which seccomp cannot check and
//!   another thread could change after a check: the tracer copies
//!   `struct clone_args` into the thread's read-only scratch area, clears the
//!   flag there and points the call at the copy (if the copy cannot be made,
//!   the call fails with `ENOSYS` and libc falls back to `clone`). Handlers
//!   see these calls after the rewrite.
//! - Seccomp filters stack and the most restrictive action wins: a filter of
//!   the tracee's that returns `ALLOW` (or `LOG`) cannot pre-empt our `TRACE`;
//!   one returning `ERRNO`, `TRAP` or `KILL` stops the call from running at all,
//!   which hides nothing. The one action that outranks `TRACE` and can still
//!   run the call is `USER_NOTIF` (its listener may answer "continue"), so
//!   `seccomp(SECCOMP_SET_MODE_FILTER)` with `SECCOMP_FILTER_FLAG_NEW_LISTENER`
//!   fails with `EPERM`; without a listener such a filter only makes calls fail
//!   with `ENOSYS`. A tracee filter returning `TRACE` for calls we do not
//!   subscribe to only produces stops the tracer lets run.
//! - The filter kills the process on a non-native architecture (`int 0x80`
//!   32-bit calls) and on x32 call numbers, which the tracer would misread.
//! - `no_new_privs` is set before the filter: set-uid programs do not gain
//!   privileges under the trace.
//! - [`Command::pid_namespace`] runs the program as PID 2 of its own PID
//!   namespace (and mount, network, ... namespaces) under an untraced PID 1
//!   that only reaps: `kill -1` and `/proc` then reach only the job.
//!
//! Modules: `arch` (registers), `set` (subscriptions), `bpf` (the filter),
//! `spawn` (starting a traced program), `tracer` (the loop), `stop` (stopped
//! threads and what a handler can do with them), `memory` (tracee memory),
//! `handler` (the trait), `decode` (strace-style printing).

pub mod arch;
pub mod bpf;
pub mod decode;
pub mod error;
pub mod handler;
mod init;
pub mod memory;
pub mod set;
pub mod spawn;
pub mod stop;
pub mod tracer;

pub use error::{SpawnError, TraceError};
pub use handler::{Action, ExitStatus, Handler, NewTask, PassThrough};
pub use memory::{MemoryError, ProcMemory, TraceeMemory};
pub use set::{Rule, SyscallSet};
pub use spawn::{Command, Filter, Parked};
pub use stop::{Call, SyscallExit, SyscallStop, SCRATCH_SIZE};
pub use syscalls::Sysno;
pub use tracer::Tracer;
