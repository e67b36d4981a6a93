//! Stopped tracees: the `Stopped` token (crate-private, consumed by every way of resuming,
//! so a thread cannot be touched after it runs again), and the handles a
//! [`Handler`](crate::Handler) gets: [`SyscallStop`] at a call's entry and
//! [`SyscallExit`] at its exit.
//!
//! # Scratch memory
//! Rewritten arguments that need memory (a new path, a copied `clone3`
//! struct) go to a per-thread scratch area of [`SCRATCH_SIZE`] bytes that
//! the tracer maps in the tracee by injecting `mmap(PROT_READ)` the first
//! time the thread needs one. The tracer writes it through `/proc/PID/mem`;
//! the tracee's own code cannot write it, so another thread cannot change a
//! checked argument between the tracer's write and the kernel's read (the
//! hostile-tracee rule of design.md). Not below the stack: a signal frame or
//! another thread could overwrite that, and a restarted call would re-read
//! garbage. One area per thread, because a thread may block in a call
//! whose argument lives there while another thread of the process stops.
//! Areas of exited threads are reused by the process's new threads; an exec
//! drops them (new address space). Limitation: a tracee can still
//! `munmap`/`mprotect` the area (those calls are not intercepted); it then
//! only hurts its own calls, which the kernel reads from the area it owns.

use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;

use crate::arch::Regs;
use crate::error::TraceError;
use crate::memory::{MemoryError, ProcMemory, TraceeMemory};
use crate::tracer::Core;

/// Bytes of scratch memory per tracee thread: room for two paths and a
/// struct or two.
pub const SCRATCH_SIZE: usize = 3 * 4096;

/// ptrace's request argument: unsigned in glibc, `int` in musl (the CLI,
/// which embeds a node, can be built against musl: Makefile `static-cli`).
#[cfg(target_env = "gnu")]
type PtraceRequest = libc::c_uint;
#[cfg(not(target_env = "gnu"))]
type PtraceRequest = libc::c_int;

const PTRACE_LISTEN: PtraceRequest = 0x4208;

/// A thread in a ptrace-stop. Every way of resuming it consumes the token.
#[must_use = "a stopped thread must be resumed"]
#[derive(Debug)]
pub(crate) struct Stopped {
    tid: Pid,
}

impl Stopped {
    /// The token for `tid`, which the caller knows to be in a ptrace-stop.
    pub(crate) fn new(tid: Pid) -> Self {
        Stopped { tid }
    }

    pub(crate) fn tid(&self) -> Pid {
        self.tid
    }

    fn request(self, req: PtraceRequest, sig: i32) -> Result<(), TraceError> {
        // SAFETY: a ptrace resume request on a thread we trace; `data` is the
        // signal number, `addr` unused.
        let r = unsafe { libc::ptrace(req, self.tid.as_raw(), 0usize, sig as usize) };
        match Errno::result(r) {
            Ok(_) | Err(Errno::ESRCH) => Ok(()), // ESRCH: killed meanwhile; its exit follows
            Err(errno) => Err(TraceError::Ptrace {
                op: "resume",
                tid: self.tid,
                errno,
            }),
        }
    }

    /// `PTRACE_CONT`, delivering `sig` (0 for none).
    pub(crate) fn cont(self, sig: i32) -> Result<(), TraceError> {
        self.request(libc::PTRACE_CONT, sig)
    }

    /// `PTRACE_SYSCALL`: run until the next syscall stop.
    pub(crate) fn syscall(self, sig: i32) -> Result<(), TraceError> {
        self.request(libc::PTRACE_SYSCALL, sig)
    }

    /// `PTRACE_LISTEN`: leave a group-stopped thread stopped but let the
    /// tracer hear of `SIGCONT`.
    pub(crate) fn listen(self) -> Result<(), TraceError> {
        self.request(PTRACE_LISTEN, 0)
    }

    /// Continue, or run to the syscall exit when `watch`.
    pub(crate) fn resume(self, watch: bool, sig: i32) -> Result<(), TraceError> {
        if watch {
            self.syscall(sig)
        } else {
            self.cont(sig)
        }
    }
}

/// What both a call's entry and its exit know: the thread, its process,
/// the call number and the registers. [`SyscallStop`] and [`SyscallExit`]
/// dereference to it.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub(crate) tid: Pid,
    pub(crate) tgid: Pid,
    pub(crate) nr: i64,
    pub(crate) regs: Regs,
}

impl Call {
    /// The thread making the call.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Its process.
    pub fn pid(&self) -> Pid {
        self.tgid
    }

    /// The raw call number (as it was at entry).
    pub fn nr(&self) -> i64 {
        self.nr
    }

    /// The call, if the number is known.
    pub fn sysno(&self) -> Option<Sysno> {
        usize::try_from(self.nr).ok().and_then(Sysno::new)
    }

    /// The arguments (as rewritten so far; x86_64 preserves them at exit).
    pub fn args(&self) -> [u64; 6] {
        self.regs.args()
    }

    /// Argument `i` (0..6).
    pub fn arg(&self, i: usize) -> u64 {
        self.regs.arg(i)
    }

    /// All registers.
    pub fn regs(&self) -> &Regs {
        &self.regs
    }
}

/// A thread stopped at the entry of an intercepted system call (seccomp
/// stop). Register changes are written back when the tracer resumes it.
#[derive(Debug)]
pub struct SyscallStop<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) stopped: Stopped,
    pub(crate) call: Call,
    pub(crate) dirty: bool,
    scratch_used: usize,
    pub(crate) requeue: Vec<i32>,
}

impl<'a> SyscallStop<'a> {
    pub(crate) fn new(core: &'a mut Core, stopped: Stopped, tgid: Pid, regs: Regs) -> Self {
        let call = Call {
            tid: stopped.tid(),
            tgid,
            nr: regs.syscall_nr(),
            regs,
        };
        SyscallStop {
            core,
            stopped,
            call,
            dirty: false,
            scratch_used: 0,
            requeue: Vec::new(),
        }
    }

    /// Replaces the call by `nr` (same arguments unless rewritten); the
    /// kernel checks the new number against the filter again and lets it run.
    /// [`Call::nr`] keeps reporting the original number.
    pub fn set_nr(&mut self, nr: Sysno) {
        self.call.regs.set_syscall_nr(nr.id() as i64);
        self.dirty = true;
    }

    /// Rewrites argument `i`; takes effect when the call runs.
    pub fn set_arg(&mut self, i: usize, v: u64) {
        self.call.regs.set_arg(i, v);
        self.dirty = true;
    }

    /// The process's memory.
    pub fn memory(&self) -> &ProcMemory {
        self.core.memory(self.call.tgid)
    }

    /// Reads the path argument `i` (a C string of at most `PATH_MAX`).
    pub fn read_path_arg(&self, i: usize) -> Result<Vec<u8>, MemoryError> {
        self.memory().read_path(self.call.regs.arg(i))
    }

    /// Copies `data` into this thread's scratch area (mapping it on first
    /// use, which injects an `mmap`) and returns its tracee address, 8-byte
    /// aligned. Space is reused at the next stop of this thread.
    pub fn scratch_write(&mut self, data: &[u8]) -> Result<u64, TraceError> {
        let base = self.scratch_base()?;
        let off = self.scratch_used.next_multiple_of(8);
        if off + data.len() > SCRATCH_SIZE {
            return Err(TraceError::Memory(MemoryError::TooLong {
                addr: base,
                limit: SCRATCH_SIZE,
            }));
        }
        let addr = base + off as u64;
        self.memory().write_via_proc(addr, data)?;
        self.scratch_used = off + data.len();
        Ok(addr)
    }

    /// Copies `path` and a NUL into scratch and points argument `i` at it.
    pub fn set_path_arg(&mut self, i: usize, path: &[u8]) -> Result<(), TraceError> {
        let mut buf = Vec::with_capacity(path.len() + 1);
        buf.extend_from_slice(path);
        buf.push(0);
        let addr = self.scratch_write(&buf)?;
        self.set_arg(i, addr);
        Ok(())
    }

    fn scratch_base(&mut self) -> Result<u64, TraceError> {
        let tid = self.tid();
        if let Some(a) = self.core.scratch_of(tid, self.call.tgid) {
            return Ok(a);
        }
        let prot = libc::PROT_READ as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let r = self.inject(
            Sysno::mmap,
            &[0, SCRATCH_SIZE as u64, prot, flags, u64::MAX, 0],
        )?;
        if (-4095..0).contains(&r) {
            return Err(TraceError::Inject {
                tid,
                why: "mmap of the scratch area failed in the tracee",
            });
        }
        self.core.set_scratch(tid, self.call.tgid, r as u64);
        Ok(r as u64)
    }

    /// Runs system call `nr` with `args` in the tracee now, before the
    /// intercepted call, and returns its raw result (`-errno` on error).
    /// The intercepted call is then still pending, with its arguments as
    /// they were (including rewrites made before).
    ///
    /// How: the call number and arguments are replaced and the thread runs
    /// to the syscall exit; then the registers are restored with the
    /// instruction pointer moved back over the `syscall` instruction, and
    /// the thread runs into the original call's seccomp stop again. A signal
    /// arriving in between is held back and re-sent (`tgkill`) once the
    /// thread resumes (its `siginfo` details are lost). Do not inject calls
    /// that do not return (`execve`, `exit`) or that create tasks.
    pub fn inject(&mut self, nr: Sysno, args: &[u64]) -> Result<i64, TraceError> {
        let tid = self.tid();
        let saved = self.call.regs;
        let mut r = saved;
        r.set_syscall_nr(nr.id() as i64);
        for i in 0..6 {
            r.set_arg(i, args.get(i).copied().unwrap_or(0));
        }
        let ptrace_err = |op, errno| TraceError::Ptrace { op, tid, errno };
        r.set(tid).map_err(|e| ptrace_err("SETREGS", e))?;
        Stopped::new(tid).syscall(0)?;
        let st = self.core.wait_tid(tid)?;
        if !(libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP | 0x80) {
            return Err(self.core.unexpected(tid, st));
        }
        let ret = Regs::get(tid).map_err(|e| ptrace_err("GETREGS", e))?.ret();
        let mut back = saved;
        back.rewind_syscall(self.call.nr);
        back.set(tid).map_err(|e| ptrace_err("SETREGS", e))?;
        Stopped::new(tid).cont(0)?;
        loop {
            let st = self.core.wait_tid(tid)?;
            if !libc::WIFSTOPPED(st) {
                return Err(self.core.unexpected(tid, st));
            }
            let event = st >> 16;
            if event == libc::PTRACE_EVENT_SECCOMP {
                break;
            }
            let sig = libc::WSTOPSIG(st);
            if event == 0 && sig != libc::SIGTRAP | 0x80 {
                self.requeue.push(sig);
            }
            Stopped::new(tid).cont(0)?;
        }
        self.call.regs = saved;
        self.dirty = true;
        Ok(ret)
    }
}

/// A thread stopped at the exit of a call the handler watched.
#[derive(Debug)]
pub struct SyscallExit<'a> {
    pub(crate) core: &'a Core,
    pub(crate) call: Call,
    pub(crate) dirty: bool,
}

impl std::ops::Deref for SyscallStop<'_> {
    type Target = Call;
    fn deref(&self) -> &Call {
        &self.call
    }
}

impl std::ops::Deref for SyscallExit<'_> {
    type Target = Call;
    fn deref(&self) -> &Call {
        &self.call
    }
}

impl SyscallExit<'_> {
    /// The raw result (`-errno` on error).
    pub fn ret(&self) -> i64 {
        self.call.regs.ret()
    }

    /// Changes the result the tracee sees.
    pub fn set_ret(&mut self, v: i64) {
        self.call.regs.set_ret(v);
        self.dirty = true;
    }

    /// The process's memory (after an `execve`, the new program's).
    pub fn memory(&self) -> &ProcMemory {
        self.core.memory(self.call.tgid)
    }

    /// Makes the thread enter its original call ([`Call::nr`]) again, with
    /// `args`, as soon as it resumes: the instruction pointer goes back over
    /// the `syscall` instruction, so the call reaches its entry stop again.
    /// A handler that turned a call into a short wait retries it this way.
    pub fn rerun(&mut self, args: &[u64; 6]) {
        self.call.regs.rewind_syscall(self.call.nr);
        for (i, v) in args.iter().enumerate() {
            self.call.regs.set_arg(i, *v);
        }
        self.dirty = true;
    }

    /// Ends the call the way the kernel ends a blocking call a signal
    /// interrupted (`ERESTARTSYS`): the pending signal is delivered, then the
    /// original call ([`Call::nr`], with `args`) runs again when no handler
    /// ran or the handler has `SA_RESTART`, and fails with `EINTR`
    /// otherwise. Only for a call whose result shows a signal interrupted it
    /// (`EINTR` or the kernel's restart codes): without a pending signal the
    /// kernel would hand the internal code to the program.
    pub fn interrupted(&mut self, args: &[u64; 6]) {
        const ERESTARTSYS: i64 = 512;
        self.call.regs.set_syscall_nr(self.call.nr);
        for (i, v) in args.iter().enumerate() {
            self.call.regs.set_arg(i, *v);
        }
        self.call.regs.set_ret(-ERESTARTSYS);
        self.dirty = true;
    }
}
