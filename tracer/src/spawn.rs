//! Starting a program traced: [`Command`] (path, argv, envp, cwd, an optional
//! `pre_exec` hook) and the fork/seize/exec handshake.
//!
//! The child, after `fork`:
//! 1. resets its signal mask and `SIGPIPE` (Rust ignores `SIGPIPE`; a
//!    program must start with the default),
//! 2. waits on a pipe until the parent has attached with `PTRACE_SEIZE`
//!    (options `EXITKILL | TRACESECCOMP | TRACEFORK | TRACEVFORK |
//!    TRACECLONE | TRACEEXEC | TRACESYSGOOD`); seizing a process blocked in
//!    `read` needs no stop, so no stop has to be consumed,
//! 3. runs the `pre_exec` hook, `chdir`s, sets `no_new_privs`, installs the
//!    seccomp filter (after the attach: a `SECCOMP_RET_TRACE` call without a
//!    tracer fails with `ENOSYS`; with `SECCOMP_FILTER_FLAG_SPEC_ALLOW`, so
//!    the program keeps the speculation mitigations it would have untraced),
//! 4. calls `execve`, which is already a traced call.
//!
//! Any failure in the child is written (stage, errno) to a close-on-exec
//! pipe and the child exits 127; the tracer reads it when the first process
//! exits without having exec'd, and reports a [`SpawnError`] instead of 127.
//!
//! Between `fork` and `execve` the child only makes raw system calls on data
//! prepared before the fork (the parent may be multi-threaded).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use crate::bpf;
use crate::error::SpawnError;
use crate::handler::Handler;
use crate::set::SyscallSet;
use crate::tracer::Tracer;

/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW` (linux/seccomp.h).
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 1 << 2;

type PreExec = Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>;

/// A program to start under the tracer (like `std::process::Command`).
pub struct Command {
    path: OsString,
    argv: Vec<OsString>,
    envp: Option<Vec<OsString>>,
    cwd: Option<OsString>,
    pre_exec: Option<PreExec>,
    kill_descendants: bool,
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
            pre_exec: None,
            kill_descendants: true,
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
    /// seccomp yet.
    pub unsafe fn pre_exec<F>(&mut self, f: F) -> &mut Self
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        self.pre_exec = Some(Box::new(f));
        self
    }

    /// Starts the program traced by `handler`. Returns once the child is
    /// attached; it has not exec'd yet (that happens under [`Tracer::run`],
    /// which also reports exec failures).
    pub fn spawn<H: Handler>(&mut self, handler: H) -> Result<Tracer<H>, SpawnError> {
        let mut set = handler.subscriptions();
        set.extend_from(&SyscallSet::internal());
        let filter = bpf::compile(&set)?;
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };

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
        let cwd = self.cwd.as_ref().map(|c| cstring(c)).transpose()?;
        let argv_p = nul_terminated(&argv);
        let envp_p = nul_terminated(&envp);

        let (sync_r, sync_w) = pipe()?;
        let (err_r, err_w) = pipe()?;

        // SAFETY: the child only calls async-signal-safe functions on data
        // prepared above, then execs or _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SpawnError::Sys {
                what: "fork",
                errno: Errno::last(),
            });
        }
        if pid == 0 {
            // SAFETY: we are the child; see `child`.
            unsafe {
                child(
                    sync_r.as_raw_fd(),
                    err_w.as_raw_fd(),
                    self.pre_exec.as_mut(),
                    cwd.as_ref(),
                    &prog,
                    &path,
                    &argv_p,
                    &envp_p,
                )
            }
        }
        drop(sync_r);
        drop(err_w);
        let pid = Pid::from_raw(pid);
        let opts = ptrace::Options::PTRACE_O_EXITKILL
            | ptrace::Options::PTRACE_O_TRACESECCOMP
            | ptrace::Options::PTRACE_O_TRACEFORK
            | ptrace::Options::PTRACE_O_TRACEVFORK
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEEXEC
            | ptrace::Options::PTRACE_O_TRACESYSGOOD;
        if let Err(e) = ptrace::seize(pid, opts) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(SpawnError::PtraceDenied(e));
        }
        // Release the child. If this fails the child is gone; run() reports it.
        // SAFETY: writing one byte from a valid buffer to our pipe.
        unsafe { libc::write(sync_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        drop(sync_w);
        Ok(Tracer::new(
            handler,
            set,
            pid,
            err_r,
            self.path.to_string_lossy().into_owned(),
            self.cwd.as_ref().map(|c| c.to_string_lossy().into_owned()),
            self.kill_descendants,
        ))
    }
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
/// Must only be called in the child right after `fork`.
#[allow(clippy::too_many_arguments)]
unsafe fn child(
    sync_r: i32,
    err_w: i32,
    pre_exec: Option<&mut PreExec>,
    cwd: Option<&CString>,
    prog: &libc::sock_fprog,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
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

        let mut b = 0u8;
        if libc::read(sync_r, (&mut b as *mut u8).cast(), 1) != 1 {
            // The parent could not attach and dropped the pipe.
            libc::_exit(127);
        }
        if let Some(f) = pre_exec {
            if let Err(e) = f() {
                fail(stage::PRE_EXEC, e.raw_os_error().unwrap_or(libc::EINVAL));
            }
        }
        if let Some(d) = cwd {
            if libc::chdir(d.as_ptr()) != 0 {
                fail(stage::CHDIR, errno());
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(stage::NO_NEW_PRIVS, errno());
        }
        // SECCOMP_FILTER_FLAG_SPEC_ALLOW: a filter must not switch on the
        // speculative-store-bypass mitigation the program would not have had
        // untraced (it slows CPU-bound code). Kernels before 4.17 lack the flag.
        let install = |flags: libc::c_ulong| {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                prog as *const libc::sock_fprog,
            )
        };
        if install(SECCOMP_FILTER_FLAG_SPEC_ALLOW) != 0
            && (errno() != libc::EINVAL || install(0) != 0)
        {
            fail(stage::SECCOMP, errno());
        }
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(stage::EXEC, errno())
    }
}
