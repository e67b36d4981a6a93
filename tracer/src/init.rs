//! The PID 1 of a program's namespaces (see
//! [`Command::pid_namespace`](crate::Command::pid_namespace)): the thread
//! that makes it, the memory it runs in, and its code.
//!
//! PID 1 shares the daemon's memory (`CLONE_VM`): a copy would cost the
//! page tables of the whole multi-threaded daemon at the clone, and a
//! copy-on-write fault on every page a daemon thread writes for as long as
//! PID 1 lives (the whole job). Sharing is sound under these rules:
//!
//! - **Ownership.** Everything PID 1 and its program's process (which
//!   shares PID 1's memory until it execs) read or run is in one
//!   [`InitWork`]: their stacks (each with a guard page below it), the
//!   descriptors' numbers, the `pre_init` hook, the program's strings,
//!   filter and hooks. A dedicated *init thread* owns it, makes PID 1, and
//!   frees it only once it has reaped PID 1, so nothing PID 1 touches can
//!   go away or change while it lives, whatever the tracer does meanwhile.
//! - **Thread state.** Without `CLONE_SETTLS` a `CLONE_VM` child keeps the
//!   thread pointer of the thread that cloned it, so glibc's per-thread
//!   state (`errno`, the cancellation word, malloc's thread cache) is that
//!   thread's. That thread is the init thread, which has nothing else to
//!   do: after the clone it only makes raw `syscall` instructions (see
//!   `raw`), which never write `errno`. So at any time exactly one of PID 1,
//!   the program's process (PID 1 sleeps in its vfork until it execs) uses
//!   that state, and the hooks' `errno` reads see their own calls' values.
//!   Still nothing in PID 1 or before the exec may allocate or take a lock
//!   (the daemon's other threads share the heap and its locks).
//! - **Signals.** A `CLONE_VM` child without `CLONE_SIGHAND` gets a copy of
//!   the daemon's signal handlers, which would run daemon code on shared
//!   memory (a program may signal PID 1 when it has handlers). The init
//!   thread blocks every signal (glibc's own 32 and 33 only around the
//!   clone: its `setuid` broadcast needs them), so PID 1 starts with them
//!   blocked; PID 1 sets every handler back to the default with raw
//!   `rt_sigaction` (the glibc wrapper refuses glibc's own signals 32 and
//!   33) and only then unblocks them: signals at their default are dropped
//!   by the kernel for a namespace's PID 1 (but `SIGKILL` from outside).
//!   The program's process inherits the defaults. The kernel clears the
//!   alternate signal stack of a `CLONE_VM` child, so none is shared.
//!
//! `CLONE_VM` with `CLONE_NEWPID` (and the other `CLONE_NEW*` flags) is
//! allowed (clone(2): `CLONE_NEWPID` only excludes `CLONE_THREAD` and
//! `CLONE_PARENT`, `CLONE_NEWUSER` excludes `CLONE_FS`, neither is used).

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::error::SpawnError;
use crate::spawn::{child, stage, PreExec, Program};

/// Stack of PID 1 (its `pre_init` hook and the reaping loop).
const INIT_STACK: usize = 128 * 1024;
/// Stack of the program's process before its exec: it only runs the
/// hooks and the handshake.
const PROGRAM_STACK: usize = 256 * 1024;
/// Stack of the init thread, which only clones and waits.
const THREAD_STACK: usize = 64 * 1024;

/// Everything PID 1 and the program's process use (see the module
/// documentation), owned by the init thread until PID 1 is reaped.
pub(crate) struct InitWork {
    /// Run `pre_init` before waiting for the parent's go.
    pub early_pre_init: bool,
    pub go_r: i32,
    pub go_w: i32,
    pub cred: i32,
    pub err: i32,
    pub pre_init: Option<PreExec>,
    /// `None`: PID 1 exits after its `pre_init` (a probe).
    pub program: Option<Program>,
    stack: Stack,
    program_stack: Stack,
}

// SAFETY: the raw pointers inside (`Program`'s argv/envp/filter, the
// stacks) point into memory the same value owns; the init thread is its
// only user until PID 1 (which shares it) is gone.
unsafe impl Send for InitWork {}

impl InitWork {
    /// Allocates the two stacks around the given parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        early_pre_init: bool,
        go_r: i32,
        go_w: i32,
        cred: i32,
        err: i32,
        pre_init: Option<PreExec>,
        program: Option<Program>,
    ) -> Result<Box<Self>, SpawnError> {
        Ok(Box::new(InitWork {
            early_pre_init,
            go_r,
            go_w,
            cred,
            err,
            pre_init,
            program,
            stack: Stack::new(INIT_STACK)?,
            program_stack: Stack::new(PROGRAM_STACK)?,
        }))
    }
}

/// A running PID 1 and the init thread that will reap it.
pub(crate) struct Init {
    pid: Pid,
    thread: JoinHandle<(i32, Box<InitWork>)>,
}

impl std::fmt::Debug for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Init").field("pid", &self.pid).finish()
    }
}

impl Init {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits until PID 1 has exited and been reaped; returns its exit code
    /// (`128 + signal` when killed) and what it used, now free to reuse.
    /// A dropped `Init` leaves the thread to do this alone.
    pub fn wait(self) -> (i32, Option<Box<InitWork>>) {
        match self.thread.join() {
            Ok((code, work)) => (code, Some(work)),
            Err(_) => (-1, None),
        }
    }

    /// Kills PID 1 (and with it its namespace) and [`Init::wait`]s.
    pub fn kill_and_wait(self) -> (i32, Option<Box<InitWork>>) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::SIGKILL);
        self.wait()
    }
}

/// Starts the init thread (named `name`, which PID 1 and the program's
/// process inherit until it execs), which makes PID 1 with `flags`
/// (`CLONE_NEW*` besides `CLONE_NEWPID`) to run `work`. Returns once
/// PID 1 exists.
pub(crate) fn start(
    work: Box<InitWork>,
    flags: libc::c_int,
    name: &str,
) -> Result<Init, (SpawnError, Option<Box<InitWork>>)> {
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| {
            (
                SpawnError::Sys {
                    what: "pipe2",
                    errno,
                },
                None,
            )
        })?;
    let flags = libc::CLONE_VM | libc::CLONE_NEWPID | flags | libc::SIGCHLD;
    let thread = std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
        .spawn(move || init_thread(work, flags, report_w))
        .map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
            (
                SpawnError::Sys {
                    what: "init thread",
                    errno,
                },
                None,
            )
        })?;
    let mut msg = [0u8; 4];
    let got = loop {
        match nix::unistd::read(report_r.as_raw_fd(), &mut msg) {
            Err(Errno::EINTR) => continue,
            r => break r,
        }
    };
    let v = i32::from_ne_bytes(msg);
    match got {
        Ok(4) if v > 0 => Ok(Init {
            pid: Pid::from_raw(v),
            thread,
        }),
        _ => {
            // The clone failed (its errno negated), or the thread died.
            let work = thread.join().ok().map(|(_, w)| w);
            let errno = if v < 0 { -v } else { libc::EAGAIN };
            Err((SpawnError::Namespaces(Errno::from_raw(errno)), work))
        }
    }
}

/// The init thread: makes PID 1, tells the parent its pid on `report`,
/// reaps it, and gives back what it ran on.
fn init_thread(work: Box<InitWork>, flags: libc::c_int, report: OwnedFd) -> (i32, Box<InitWork>) {
    // Blocked here, so PID 1 starts with them blocked (see the module
    // documentation); glibc keeps its own signals 32 and 33 unblockable,
    // which its handlers for them need.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    let top = work.stack.top();
    let arg = Box::into_raw(work);
    // Those two as well, for the clone only (raw: glibc refuses): PID 1
    // starts with nothing deliverable until it has reset its handlers.
    let kept = raw::sigprocmask(libc::SIG_BLOCK, u64::MAX);
    // SAFETY: `init_entry` runs on its own stack (with a guard page) and
    // only uses `*arg`, which this thread leaves alone and keeps alive
    // until PID 1 is reaped below.
    let pid = unsafe { libc::clone(init_entry, top, flags, arg.cast()) };
    let msg = if pid < 0 { -Errno::last_raw() } else { pid };
    // Raw, as PID 1 may be using glibc's state already.
    raw::sigprocmask(libc::SIG_SETMASK, kept);
    let report = report.into_raw_fd();
    // From here on PID 1 may use this thread's glibc state: raw calls
    // only (see the module documentation).
    // SAFETY: raw calls on our own descriptor and a local buffer.
    unsafe {
        raw::call(
            libc::SYS_write,
            [report as usize, msg.to_ne_bytes().as_ptr() as usize, 4, 0],
        );
        raw::call(libc::SYS_close, [report as usize, 0, 0, 0]);
    }
    let mut code = -1;
    if pid > 0 {
        let mut status = 0i32;
        loop {
            // SAFETY: raw wait4 on our child with a valid status pointer.
            let r = unsafe {
                raw::call(
                    libc::SYS_wait4,
                    [
                        pid as usize,
                        &mut status as *mut i32 as usize,
                        libc::__WALL as usize,
                        0,
                    ],
                )
            };
            if r == pid as isize {
                code = exit_code(status);
                break;
            }
            if r != -(libc::EINTR as isize) {
                // ECHILD: gone (reaped by a wait for any child elsewhere).
                break;
            }
        }
    }
    // SAFETY: PID 1 is dead (or never existed): `arg` is ours again.
    (code, unsafe { Box::from_raw(arg) })
}

/// A wait status as an exit code (`128 + signal` when killed, as a shell).
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

extern "C" fn init_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `InitWork` the init thread keeps for us.
    unsafe { init_main(&mut *arg.cast::<InitWork>()) }
}

/// The namespace's PID 1. Never returns.
///
/// # Safety
/// Only in PID 1 right after its clone (see the module documentation).
unsafe fn init_main(work: &mut InitWork) -> ! {
    let err = work.err;
    let fail = |errno: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&stage::INIT.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: raw write and _exit, async-signal-safe.
        unsafe {
            libc::write(err, msg.as_ptr().cast(), 8);
            libc::_exit(127)
        }
    };
    // SAFETY (whole block): system calls on values prepared before the
    // clone, on this thread pointer's glibc state, which only we use now.
    unsafe {
        default_signals();
        libc::close(work.go_w);
        let mut pre_init = work.pre_init.as_mut();
        let mut run_pre_init = || {
            if let Some(f) = pre_init.take() {
                if let Err(e) = f() {
                    fail(e.raw_os_error().unwrap_or(libc::EINVAL));
                }
            }
        };
        if work.early_pre_init {
            run_pre_init();
        }
        let mut b = 0u8;
        if libc::read(work.go_r, (&mut b as *mut u8).cast(), 1) != 1 {
            // The parent gave up on us.
            libc::_exit(127);
        }
        run_pre_init();
        let Some(program) = work.program.as_mut() else {
            libc::_exit(0)
        };
        if let Some(keep) = &program.keep {
            // A parked program (see `Command::park`) must not hold the
            // daemon's descriptors while it waits; nor must we, in its
            // vfork.
            close_except(keep);
        }
        // The program's process shares our memory until it execs, and we
        // sleep meanwhile (CLONE_VM | CLONE_VFORK, as posix_spawn), so
        // nothing it could race with runs on our glibc state. It runs on
        // its own stack, prepared before our clone.
        let mut start = ProgramStart {
            cred: work.cred,
            program,
        };
        let pid = libc::clone(
            program_main,
            work.program_stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut start as *mut ProgramStart<'_>).cast(),
        );
        if pid < 0 {
            fail(Errno::last_raw());
        }
        // PID 1 holds copies of every descriptor the (multi-threaded)
        // parent had at the clone, such as the write end of the program's
        // stdin pipe: keeping any would keep the program from seeing EOF.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..65536 {
                libc::close(fd);
            }
        }
        // Reap everything; the namespace ends with the program's process.
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, libc::__WALL);
            if r == pid as libc::pid_t {
                let code = exit_code(status);
                // Our exit tears the namespaces down (kills what is
                // left, unmounts the root): work nobody waits for, which
                // should not preempt the tracer reporting the job's end.
                // Lowering one's own priority needs no privilege, and
                // nothing is forked from here any more.
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                libc::_exit(code);
            }
            if r < 0 && Errno::last_raw() == libc::ECHILD {
                libc::_exit(0);
            }
        }
    }
}

/// Closes every descriptor but those in `keep` (sorted, no duplicates).
///
/// # Safety
/// Only in PID 1 (raw system calls).
unsafe fn close_except(keep: &[i32]) {
    let close_range = |first: u32, last: u32| {
        // SAFETY: closing descriptors of our own table.
        let r = unsafe { raw::call(libc::SYS_close_range, [first as usize, last as usize, 0, 0]) };
        if r != 0 {
            // Kernels before 5.9: one by one, up to a bound.
            for fd in first..=last.min(65535) {
                // SAFETY: as above.
                unsafe { raw::call(libc::SYS_close, [fd as usize, 0, 0, 0]) };
            }
        }
    };
    let mut next = 0u32;
    for &k in keep {
        let Ok(k) = u32::try_from(k) else { continue };
        if k > next {
            close_range(next, k - 1);
        }
        next = next.max(k + 1);
    }
    close_range(next, u32::MAX);
}

/// The kernel's `struct sigaction` on x86_64 (what `rt_sigaction` takes).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Sets every signal with a handler (the daemon's, copied at the clone)
/// back to its default, then unblocks every signal. Ignored signals stay
/// ignored, as across a fork.
///
/// # Safety
/// Only in PID 1 (raw system calls on local values).
unsafe fn default_signals() {
    let size = std::mem::size_of::<u64>();
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: a valid out-pointer of the kernel's layout.
        let r = unsafe {
            raw::call(
                libc::SYS_rt_sigaction,
                [sig, 0, &mut old as *mut KernelSigaction as usize, size],
            )
        };
        if r == 0 && old.handler != libc::SIG_DFL && old.handler != libc::SIG_IGN {
            let dfl = KernelSigaction {
                handler: libc::SIG_DFL,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            // SAFETY: as above.
            unsafe {
                raw::call(
                    libc::SYS_rt_sigaction,
                    [sig, &dfl as *const KernelSigaction as usize, 0, size],
                )
            };
        }
    }
    raw::sigprocmask(libc::SIG_SETMASK, 0);
}

/// What the program's process gets from PID 1 (see `init_main`).
struct ProgramStart<'a> {
    cred: i32,
    program: &'a mut Program,
}

/// The program's process, on its own stack in PID 1's (the daemon's)
/// memory. Never returns (execs or exits).
extern "C" fn program_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ProgramStart` PID 1 keeps alive while it
    // sleeps in the vfork; system calls on prepared values only.
    unsafe {
        let start = &mut *arg.cast::<ProgramStart<'_>>();
        // The kernel attaches our pid, as the parent sees it, to this
        // byte (the reader has SO_PASSCRED).
        libc::write(start.cred, b"p".as_ptr().cast(), 1);
        libc::close(start.cred);
        child(start.program)
    }
}

/// A stack mapped for a clone, with an inaccessible page below it: an
/// overflow faults instead of writing over the daemon's memory.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new(size: usize) -> Result<Self, SpawnError> {
        let guard = 4096;
        let len = size + guard;
        // SAFETY: a fresh anonymous mapping, then a protection change
        // inside it.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(SpawnError::Sys {
                    what: "mmap",
                    errno: Errno::last(),
                });
            }
            let stack = Stack { base, len };
            if libc::mprotect(base, guard, libc::PROT_NONE) != 0 {
                return Err(SpawnError::Sys {
                    what: "mprotect",
                    errno: Errno::last(),
                });
            }
            Ok(stack)
        }
    }

    /// The initial stack pointer (the end; page-aligned, so 16-aligned).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, never dereferenced as
        // such (the stack grows down from it).
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unused by now (see `InitWork`).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// System calls by the `syscall` instruction itself: they return the
/// kernel's value (`-errno` on failure) and never touch glibc's state.
mod raw {
    /// `rt_sigprocmask(how, &set, &old)` as a raw call (no `errno`);
    /// returns the old mask.
    pub(super) fn sigprocmask(how: libc::c_int, set: u64) -> u64 {
        let mut old = 0u64;
        // SAFETY: both sets are locals of the kernel's size.
        unsafe {
            call(
                libc::SYS_rt_sigprocmask,
                [
                    how as usize,
                    &set as *const u64 as usize,
                    &mut old as *mut u64 as usize,
                    std::mem::size_of::<u64>(),
                ],
            )
        };
        old
    }

    /// # Safety
    /// As the system call `n` with these arguments.
    pub(super) unsafe fn call(n: libc::c_long, [a, b, c, d]: [usize; 4]) -> isize {
        let ret: isize;
        // SAFETY: the caller's; `syscall` clobbers rcx and r11 only.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
}
