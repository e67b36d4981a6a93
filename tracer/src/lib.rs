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
//! Modules: `arch` (registers), `set` (subscriptions), `bpf` (the filter),
//! `spawn` (starting a traced program), `tracer` (the loop), `stop` (stopped
//! threads and what a handler can do with them), `memory` (tracee memory),
//! `handler` (the trait), `decode` (strace-style printing).

pub mod arch;
pub mod bpf;
pub mod decode;
pub mod error;
pub mod handler;
pub mod memory;
pub mod set;
pub mod spawn;
pub mod stop;
pub mod tracer;

pub use error::{SpawnError, TraceError};
pub use handler::{Action, ExitStatus, Handler, NewTask, PassThrough};
pub use memory::{MemoryError, ProcMemory, TraceeMemory};
pub use set::{Rule, SyscallSet};
pub use spawn::Command;
pub use stop::{Call, SyscallExit, SyscallStop, SCRATCH_SIZE};
pub use syscalls::Sysno;
pub use tracer::Tracer;
