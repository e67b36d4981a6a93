//! Advisory locks on central files, node side (see `docs/files.md`,
//! "Locks"): `flock` and `fcntl`'s record locks (`F_SETLK`, `F_SETLKW`,
//! `F_GETLK` and the `F_OFD_*` forms) on a descriptor of a central file are
//! taken by the home on the real file, so jobs on other nodes and
//! processes on central see them.
//!
//! # Owners
//! The kernel gives a lock an owner: the open file description for `flock`
//! and OFD locks, the process for classic record locks. The node names
//! each owner to the home with a number ([`LockOwner`]); the home keeps
//! one open file description per owner and file, so the owners of one job
//! conflict with each other as they would locally. A description is
//! recognised in any job process (after `dup`, `fork`, `SCM_RIGHTS`) with
//! `kcmp(KCMP_FILE)` against the tracer's own descriptor of it, taken with
//! `pidfd_getfd` when it first locks.
//!
//! # Waiting
//! The home never waits. A conflict in `F_SETLKW`, `F_OFD_SETLKW` or a
//! `flock` without `LOCK_NB` turns the call into a native `poll` with no
//! descriptors and a short timeout ([`FIRST_WAIT`] doubling up to
//! [`LONGEST_WAIT`]); at its end the call runs again (and asks again), so
//! the tracer, the job's other threads and the home keep working. A signal
//! ends the `poll` early; the call then ends as the kernel ends an
//! interrupted lock wait (`ERESTARTSYS`: again after an `SA_RESTART`
//! handler, `EINTR` after another).
//!
//! # Release
//! The home's descriptors of an owner are closed ([`Request::Unlock`]),
//! releasing its locks, when the node sees the owner gone: a record-lock
//! owner when its process closes a descriptor of the file or exits, a
//! description when no job process has a descriptor of it any more. A
//! `close` stops only for descriptors at or above the write range
//! (`FsConfig::write_fd_min`); a lower one closed is noticed at the job's
//! next stopped call (at most every [`PRUNE_EVERY`]) or process exit. At
//! the latest the job's end releases everything (the home closes all).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use dscp_dicp::msg::fs::{LockOp, LockOwner, RangeLock, Request, Response};
use dscp_dicp::msg::Blob;
use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;
use tracer::{Action, SyscallExit, SyscallStop, TraceeMemory};

use super::stream::fdinfo_value;
use super::FsLayer;

/// The first wait between two tries of a lock that conflicts.
pub const FIRST_WAIT: Duration = Duration::from_millis(5);
/// The longest wait between two tries.
pub const LONGEST_WAIT: Duration = Duration::from_millis(50);

/// How often, at most, any stopped call of a job holding locks checks for
/// owners whose descriptors were closed without a stop.
pub const PRUNE_EVERY: Duration = Duration::from_millis(100);

/// `kcmp`'s "same open file description" comparison.
const KCMP_FILE: u64 = 0;

/// `fcntl` commands that lock (the filter stops `fcntl` for commands
/// in `LOCK_CMDS_MIN..LOCK_CMDS_END`, which covers them).
pub const LOCK_CMDS_MIN: u32 = libc::F_GETLK as u32;
/// See [`LOCK_CMDS_MIN`].
pub const LOCK_CMDS_END: u32 = libc::F_OFD_SETLKW as u32 + 1;

/// The layer's lock owners and waiting threads.
#[derive(Debug, Default)]
pub(crate) struct Locks {
    /// Owners that are open file descriptions of the job.
    files: Vec<FileOwner>,
    /// Record-lock owners: (process, central path).
    procs: HashMap<(Pid, Vec<u8>), LockOwner>,
    next: LockOwner,
    /// Threads in a lock wait: the call's own arguments, for its retry.
    waiting: HashMap<Pid, [u64; 6]>,
    /// How many tries the current wait of each thread has made.
    tries: HashMap<Pid, u32>,
    /// When owners were last checked for closed descriptors.
    pruned: Option<std::time::Instant>,
}

#[derive(Debug)]
struct FileOwner {
    id: LockOwner,
    /// The tracer's descriptor of the job's open file description.
    mine: OwnedFd,
    central: Vec<u8>,
}

impl Locks {
    fn new_owner(&mut self) -> LockOwner {
        self.next += 1;
        self.next
    }

    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.procs.is_empty()
    }
}

/// The tracer's own descriptor of descriptor `fd` of process `pid`.
pub(super) fn take_fd(pid: Pid, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let p = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if p < 0 {
        return Err(Errno::last());
    }
    // SAFETY: just returned by pidfd_open, owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(p as i32) };
    // SAFETY: pidfd_getfd returns a new descriptor (O_CLOEXEC) or -1.
    let d = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if d < 0 {
        return Err(Errno::last());
    }
    // SAFETY: just returned by pidfd_getfd, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(d as i32) })
}

/// Whether descriptor `fd` of `pid` is the open file description `mine`.
pub(super) fn same_description(mine: &OwnedFd, pid: Pid, fd: i32) -> bool {
    // SAFETY: kcmp takes plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            std::process::id(),
            pid.as_raw(),
            KCMP_FILE,
            mine.as_raw_fd(),
            fd,
        )
    };
    r == 0
}

/// Whether descriptor `fd` of thread `tid` may be read (`write == false`)
/// or written: the type of lock it may take (`EBADF` otherwise).
fn fd_allows(tid: Pid, fd: i32, write: bool) -> bool {
    let Some(flags) = fdinfo_value(tid, fd, "flags:", 8) else {
        return false;
    };
    let mode = flags as i32 & libc::O_ACCMODE;
    if write {
        mode == libc::O_WRONLY || mode == libc::O_RDWR
    } else {
        mode == libc::O_RDONLY || mode == libc::O_RDWR
    }
}

/// `struct flock` as the program passes it.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct KernelFlock {
    l_type: i16,
    l_whence: i16,
    _pad: i32,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
    _pad2: i32,
}

impl FsLayer {
    /// `flock(fd, how)`.
    pub(crate) fn flock_call(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let (fd, how) = (stop.arg(0) as i32, stop.arg(1) as i32);
        let Some(central) = self.fd_central(stop.tid(), fd) else {
            return Action::Continue; // not a central file: the node's lock
        };
        let op = how & !libc::LOCK_NB;
        if ![libc::LOCK_SH, libc::LOCK_EX, libc::LOCK_UN].contains(&op) {
            return Action::errno(Errno::EINVAL);
        }
        self.prune_locks(None);
        let owner = match self.file_owner(stop.pid(), fd, &central) {
            Ok(o) => o,
            Err(e) => return Action::errno(e),
        };
        let wait = how & libc::LOCK_NB == 0;
        match self.ask_lock(owner, central, LockOp::Flock(op)) {
            Ok(_) => self.lock_done(stop, Action::Return(0)),
            Err(Errno::EAGAIN) if wait => self.wait_for_lock(stop),
            Err(e) => self.lock_done(stop, Action::errno(e)),
        }
    }

    /// `fcntl(fd, cmd, &flock)` with a lock command (others go on to the
    /// file layer's other `fcntl` handling).
    pub(crate) fn fcntl_lock(&mut self, stop: &mut SyscallStop<'_>) -> Option<Action> {
        let (fd, cmd, ptr) = (stop.arg(0) as i32, stop.arg(1) as i32, stop.arg(2));
        let ofd = match cmd {
            libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW => false,
            libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => true,
            _ => return None,
        };
        let central = self.fd_central(stop.tid(), fd)?;
        Some(self.range_lock(stop, fd, cmd, ptr, ofd, central))
    }

    fn range_lock(
        &mut self,
        stop: &mut SyscallStop<'_>,
        fd: i32,
        cmd: i32,
        ptr: u64,
        ofd: bool,
        central: Vec<u8>,
    ) -> Action {
        let Ok(fl) = stop.memory().read_value::<KernelFlock>(ptr) else {
            return Action::errno(Errno::EFAULT);
        };
        let get = cmd == libc::F_GETLK || cmd == libc::F_OFD_GETLK;
        let kind = i32::from(fl.l_type);
        if ofd && fl.l_pid != 0 {
            return Action::errno(Errno::EINVAL);
        }
        let known = [libc::F_RDLCK, libc::F_WRLCK, libc::F_UNLCK].contains(&kind);
        if !known || (get && kind == libc::F_UNLCK) {
            return Action::errno(Errno::EINVAL);
        }
        let (start, len) = match self.absolute_range(stop.tid(), fd, &fl) {
            Ok(r) => r,
            Err(e) => return Action::errno(e),
        };
        if !get && kind != libc::F_UNLCK && !fd_allows(stop.tid(), fd, kind == libc::F_WRLCK) {
            return Action::errno(Errno::EBADF);
        }
        self.prune_locks(None);
        let owner = if ofd {
            match self.file_owner(stop.pid(), fd, &central) {
                Ok(o) => o,
                Err(e) => return Action::errno(e),
            }
        } else {
            self.record_owner(stop.pid(), &central)
        };
        let lock = RangeLock {
            kind: fl.l_type,
            start,
            len,
            pid: 0,
        };
        if get {
            return match self.ask_lock(owner, central, LockOp::Get(lock)) {
                Ok(Response::Lock(found)) => Self::answer_getlk(stop, ptr, fl, found),
                Ok(_) => Action::errno(Errno::EIO),
                Err(e) => Action::errno(e),
            };
        }
        let wait = cmd == libc::F_SETLKW || cmd == libc::F_OFD_SETLKW;
        match self.ask_lock(owner, central, LockOp::Set(lock)) {
            Ok(_) => self.lock_done(stop, Action::Return(0)),
            Err(Errno::EAGAIN) if wait => self.wait_for_lock(stop),
            Err(e) => self.lock_done(stop, Action::errno(e)),
        }
    }

    /// A lock's range from the start of the file, as the kernel computes
    /// it (`SEEK_CUR` from the descriptor's position, `SEEK_END` from the
    /// size the job sees; a negative length counts backwards).
    fn absolute_range(&self, tid: Pid, fd: i32, fl: &KernelFlock) -> Result<(i64, i64), Errno> {
        let base = match i32::from(fl.l_whence) {
            libc::SEEK_SET => 0,
            libc::SEEK_CUR => fdinfo_value(tid, fd, "pos:", 10).ok_or(Errno::EBADF)? as i64,
            libc::SEEK_END => std::fs::metadata(format!("/proc/{tid}/fd/{fd}"))
                .map(|m| m.len() as i64)
                .map_err(|_| Errno::EBADF)?,
            _ => return Err(Errno::EINVAL),
        };
        let mut start = base.checked_add(fl.l_start).ok_or(Errno::EOVERFLOW)?;
        let mut len = fl.l_len;
        if len < 0 {
            start = start.checked_add(len).ok_or(Errno::EINVAL)?;
            len = len.checked_neg().ok_or(Errno::EINVAL)?;
        }
        if start < 0 {
            return Err(Errno::EINVAL);
        }
        Ok((start, len))
    }

    /// Writes `F_GETLK`'s answer over the program's `struct flock`.
    fn answer_getlk(
        stop: &SyscallStop<'_>,
        ptr: u64,
        mut fl: KernelFlock,
        found: Option<RangeLock>,
    ) -> Action {
        match found {
            None => fl.l_type = libc::F_UNLCK as i16,
            Some(l) => {
                fl.l_type = l.kind;
                fl.l_whence = libc::SEEK_SET as i16;
                fl.l_start = l.start;
                fl.l_len = l.len;
                fl.l_pid = l.pid;
            }
        }
        match stop.memory().write_value(ptr, &fl) {
            Ok(()) => Action::Return(0),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }

    fn ask_lock(&self, owner: LockOwner, central: Vec<u8>, op: LockOp) -> Result<Response, Errno> {
        self.ask(Request::Lock {
            owner,
            path: Blob(central),
            op,
        })
    }

    /// The call is answered: its wait (if any) is over.
    fn lock_done(&mut self, stop: &SyscallStop<'_>, a: Action) -> Action {
        self.locks.tries.remove(&stop.tid());
        a
    }

    /// Turns the stopped lock call into a short native wait; its exit
    /// ([`FsLayer::lock_wait_exit`]) runs the call again.
    fn wait_for_lock(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let tries = self.locks.tries.entry(stop.tid()).or_insert(0);
        let wait = FIRST_WAIT
            .saturating_mul(1 << (*tries).min(16))
            .min(LONGEST_WAIT);
        *tries += 1;
        self.locks.waiting.insert(stop.tid(), stop.args());
        stop.set_nr(Sysno::poll);
        stop.set_arg(0, 0);
        stop.set_arg(1, 0);
        stop.set_arg(2, wait.as_millis() as u64);
        Action::ContinueWatchExit
    }

    /// The exit of a call this layer watched: a lock wait's `poll` ended.
    pub fn handle_exit(&mut self, exit: &mut SyscallExit<'_>) {
        let tid = exit.tid();
        let Some(args) = self.locks.waiting.remove(&tid) else {
            return;
        };
        if exit.ret() == 0 {
            exit.rerun(&args); // timed out: try again
        } else {
            // A signal: the kernel's restart rules decide, as for a real wait.
            self.locks.tries.remove(&tid);
            exit.interrupted(&args);
        }
    }

    /// The lock owner that is descriptor `fd` of `pid`'s open file description.
    fn file_owner(&mut self, pid: Pid, fd: i32, central: &[u8]) -> Result<LockOwner, Errno> {
        let known = self
            .locks
            .files
            .iter()
            .find(|o| o.central == central && same_description(&o.mine, pid, fd));
        if let Some(o) = known {
            return Ok(o.id);
        }
        let mine = take_fd(pid, fd)?;
        let id = self.locks.new_owner();
        self.locks.files.push(FileOwner {
            id,
            mine,
            central: central.to_vec(),
        });
        Ok(id)
    }

    /// The record-lock owner of process `pid` on central file `central`.
    fn record_owner(&mut self, pid: Pid, central: &[u8]) -> LockOwner {
        if let Some(o) = self.locks.procs.get(&(pid, central.to_vec())) {
            return *o;
        }
        let id = self.locks.new_owner();
        self.locks.procs.insert((pid, central.to_vec()), id);
        id
    }

    fn release_owner(&self, owner: LockOwner) {
        if let Err(e) = self.ask(Request::Unlock { owner }) {
            log::debug!("lock owner {owner}: release failed: {e}");
        }
    }

    /// Descriptor `fd` of `pid` is about to be closed (a stopped `close`):
    /// the process's record locks on that file go (POSIX: any close of
    /// the file releases them), and so does a description no other job
    /// descriptor refers to.
    pub(crate) fn locks_on_close(&mut self, pid: Pid, fd: i32) {
        if self.locks.is_empty() {
            return;
        }
        if let Some(c) = self.fd_central(pid, fd) {
            if let Some(owner) = self.locks.procs.remove(&(pid, c)) {
                self.release_owner(owner);
            }
        }
        self.prune_locks(Some((pid, fd)));
    }

    /// Process `pid` ended: its record locks go, and descriptions no other
    /// job process refers to.
    pub(crate) fn locks_on_exit(&mut self, tid: Pid, pid: Pid) {
        self.locks.waiting.remove(&tid);
        self.locks.tries.remove(&tid);
        if tid != pid || self.locks.is_empty() {
            return;
        }
        let gone: Vec<_> = self
            .locks
            .procs
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .map(|(k, o)| (k.clone(), *o))
            .collect();
        for (k, owner) in gone {
            self.locks.procs.remove(&k);
            self.release_owner(owner);
        }
        self.prune_locks(None);
    }

    /// At any stopped call: while the job holds locks, releases those
    /// whose descriptors were closed without a stop (below the write
    /// range), at most every [`PRUNE_EVERY`].
    pub(crate) fn prune_locks_now_and_then(&mut self) {
        if self.locks.is_empty() {
            return;
        }
        if self.locks.pruned.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.prune_locks(None);
    }

    /// Releases the owners no job descriptor refers to any more (leaving
    /// out `closing`, a descriptor about to be closed).
    fn prune_locks(&mut self, closing: Option<(Pid, i32)>) {
        if self.locks.is_empty() {
            return;
        }
        self.locks.pruned = Some(std::time::Instant::now());
        let fds = self.central_fds(closing);
        let files = std::mem::take(&mut self.locks.files);
        for o in files {
            let used = fds
                .iter()
                .any(|(pid, fd, c)| *c == o.central && same_description(&o.mine, *pid, *fd));
            if used {
                self.locks.files.push(o);
            } else {
                self.release_owner(o.id);
            }
        }
        let records: Vec<_> = self
            .locks
            .procs
            .iter()
            .filter(|((pid, c), _)| !fds.iter().any(|(p, _, fc)| p == pid && fc == c))
            .map(|(k, o)| (k.clone(), *o))
            .collect();
        for (k, owner) in records {
            self.locks.procs.remove(&k);
            self.release_owner(owner);
        }
    }

    /// Every descriptor of a central file in the job's processes
    /// (process, descriptor, central path), but `except`.
    fn central_fds(&self, except: Option<(Pid, i32)>) -> Vec<(Pid, i32, Vec<u8>)> {
        let mut out = Vec::new();
        for &pid in &self.procs {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for e in dir.flatten() {
                let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                if except == Some((pid, fd)) {
                    continue;
                }
                if let Some(c) = self.fd_central(pid, fd) {
                    out.push((pid, fd, c));
                }
            }
        }
        out
    }
}
