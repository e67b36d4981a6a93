//! Advisory locks a job takes on central files: the home holds them on the
//! real files, so jobs on different nodes and processes on central exclude
//! each other (see `docs/files.md`, "Locks").
//!
//! Every lock owner the node names ([`LockOwner`]: one open file
//! description of the job, or one job process and file) gets its own open
//! file description on central, and its locks are taken on that: `flock`
//! for `flock`, open file description locks (`F_OFD_SETLK`) for both kinds
//! of byte-range lock. OFD locks rather than the process-owned `F_SETLK`
//! because the home is one process: its record locks would all have one
//! owner (two job processes would never conflict), and any `close` of the
//! file by the home (every `Read` opens and closes it) would drop them all.
//! An OFD lock conflicts with a process-owned lock on central exactly as
//! another process's would. Nothing here waits: a conflict is `EAGAIN`
//! and the node retries (the home keeps serving the job meanwhile).
//!
//! An owner's descriptors are closed when the node says it is gone
//! ([`Locks::release`]) and when the service is dropped (the job ended),
//! which releases its locks; if the home itself ends, the kernel does.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

use dscp_dicp::msg::fs::{LockOp, LockOwner, RangeLock, Response};

use super::sys::{self, SysResult};

/// Most (owner, file) descriptors held at once per job (then `ENOLCK`).
pub const MAX_LOCK_FILES: usize = 1024;

/// The lock descriptors of one job's owners.
#[derive(Debug, Default)]
pub struct Locks {
    held: HashMap<(LockOwner, Vec<u8>), OwnedFd>,
}

impl Locks {
    /// Descriptors held for lock owners.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no owner holds a descriptor.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Performs `op` for `owner` on central file `path`.
    pub fn lock(&mut self, owner: LockOwner, path: &[u8], op: LockOp) -> SysResult<Response> {
        let key = (owner, path.to_vec());
        let unlocking = matches!(op, LockOp::Flock(libc::LOCK_UN))
            || matches!(op, LockOp::Set(r) if r.kind == libc::F_UNLCK as i16);
        if unlocking && !self.held.contains_key(&key) {
            return Ok(Response::Ok); // it holds nothing there
        }
        if let LockOp::Get(want) = op {
            // A test by an owner holding nothing needs no descriptor kept.
            return match self.held.get(&key) {
                Some(fd) => get(fd, want),
                None => get(&open_for_locks(path)?, want),
            };
        }
        let known = self.held.contains_key(&key);
        if !known {
            if self.held.len() >= MAX_LOCK_FILES {
                return Err(libc::ENOLCK);
            }
            let fd = open_for_locks(path)?;
            self.held.insert(key.clone(), fd);
        }
        let fd = &self.held[&key];
        let r = match op {
            LockOp::Flock(how) => flock(fd, how),
            LockOp::Set(r) => set(fd, r),
            LockOp::Get(_) => Err(libc::EINVAL), // answered above
        };
        if r.is_err() && !known {
            // Opened for a lock that failed: it holds nothing (and a long
            // wait, retried, does not keep a descriptor).
            self.held.remove(&key);
        }
        r.map(|()| Response::Ok)
    }

    /// Closes every descriptor of `owner`, releasing its locks.
    pub fn release(&mut self, owner: LockOwner) {
        self.held.retain(|(o, _), _| *o != owner);
    }
}

/// Opens central `path` for an owner's locks: for reading and writing when
/// central allows it, so both lock types can be taken on the one open file
/// description the owner's locks must share (the node has already checked
/// that the job's own descriptor allows the type it asks for).
fn open_for_locks(path: &[u8]) -> SysResult<OwnedFd> {
    let p = sys::abs_path(path)?;
    let base = libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    let mut last = libc::EACCES;
    for access in [libc::O_RDWR, libc::O_RDONLY, libc::O_WRONLY] {
        match sys::open(&p, access | base, 0) {
            Ok(fd) => return Ok(fd),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn flock(fd: &OwnedFd, how: i32) -> SysResult<()> {
    if ![libc::LOCK_SH, libc::LOCK_EX, libc::LOCK_UN].contains(&how) {
        return Err(libc::EINVAL);
    }
    // SAFETY: fd is open.
    sys::check(|| unsafe { libc::flock(fd.as_raw_fd(), how | libc::LOCK_NB) })
}

fn kernel_flock(r: RangeLock) -> libc::flock {
    // SAFETY: struct flock is plain integers; all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = r.kind;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = r.start;
    fl.l_len = r.len;
    fl.l_pid = 0; // OFD locks require it
    fl
}

fn set(fd: &OwnedFd, r: RangeLock) -> SysResult<()> {
    let fl = kernel_flock(r);
    // SAFETY: fd is open; fl is a valid struct flock.
    sys::check(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) })
}

fn get(fd: &OwnedFd, want: RangeLock) -> SysResult<Response> {
    if want.kind == libc::F_UNLCK as i16 {
        return Err(libc::EINVAL);
    }
    let mut fl = kernel_flock(want);
    // SAFETY: fd is open; fl is a valid struct flock the kernel fills.
    sys::check(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) })?;
    Ok(Response::Lock(
        (fl.l_type != libc::F_UNLCK as i16).then_some(RangeLock {
            kind: fl.l_type,
            start: fl.l_start,
            len: fl.l_len,
            pid: fl.l_pid,
        }),
    ))
}
