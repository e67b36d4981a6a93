//! Descriptors the layer opens in the tracee itself and moves into a
//! reserved number range, so the seccomp filter can stop calls on exactly
//! those descriptors (write copies ≥ 1000, streaming files ≥ 2000).

use nix::errno::Errno;
use syscalls::Sysno;
use tracer::{Action, SyscallStop};

/// `AT_FDCWD` as a system call argument.
pub(crate) const AT_FDCWD_U64: u64 = libc::AT_FDCWD as i64 as u64;

/// Where an opened descriptor ended up.
pub(crate) enum Placed {
    /// In the reserved range.
    High(i64),
    /// Where the kernel put it: a stdio slot the program closed on purpose
    /// (`close(1); open(...)` keeps its number), or no room in the range.
    Low(i64),
}

/// Opens the node path `node` in the tracee with `flags` and moves the
/// descriptor into `min..max`, keeping `O_CLOEXEC`. `Err` is the action to
/// return to the program (the open's error, or EIO/ENOMEM when the tracer
/// could not do it).
pub(crate) fn open_in_range(
    stop: &mut SyscallStop<'_>,
    node: &[u8],
    flags: i32,
    min: u32,
    max: i64,
    what: &str,
) -> Result<Placed, Action> {
    let mut path = node.to_vec();
    path.push(0);
    let addr = stop
        .scratch_write(&path)
        .map_err(|_| Action::errno(Errno::ENOMEM))?;
    let fd = stop
        .inject(Sysno::openat, &[AT_FDCWD_U64, addr, flags as u32 as u64, 0])
        .map_err(|e| {
            log::warn!("{what} open: {e}");
            Action::errno(Errno::EIO)
        })?;
    if fd < 0 {
        return Err(Action::Return(fd));
    }
    if fd < 3 {
        return Ok(Placed::Low(fd));
    }
    let cmd = if flags & libc::O_CLOEXEC != 0 {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    match stop.inject(Sysno::fcntl, &[fd as u64, cmd as u64, u64::from(min)]) {
        Ok(high) if (0..max).contains(&high) => {
            let _ = stop.inject(Sysno::close, &[fd as u64]);
            Ok(Placed::High(high))
        }
        Ok(high) if high >= 0 => {
            let _ = stop.inject(Sysno::close, &[high as u64]);
            Ok(Placed::Low(fd))
        }
        _ => Ok(Placed::Low(fd)),
    }
}
