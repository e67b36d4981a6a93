//! Large files read while they arrive.
//!
//! An open for reading of a central file of at least
//! [`FsConfig::stream_min`](super::FsConfig::stream_min) bytes that is not
//! cached starts its fetch in a background thread into a streaming cache
//! object ([`PartialObject`](crate::cache::PartialObject): a file of the
//! final size, filled in place), links that file into the mirror, and
//! lets the open run once the first chunk has arrived. The descriptor is
//! moved to [`FsConfig::stream_fd_min`](super::FsConfig::stream_fd_min)
//! or above, where the seccomp filter stops the calls that can touch its
//! bytes (`read`, `pread64`, `readv`, `preadv(2)`, `lseek`, `mmap`,
//! `sendfile`, `copy_file_range`, `splice`) and those that could copy the
//! descriptor below the range (`dup`, `dup2`, `dup3`, `fcntl`). Each such
//! stop waits until the bytes the call can reach have arrived, then lets
//! it run natively; once the file is complete they return at once.
//!
//! A stop costs the job a context switch and the tracer its work, and
//! `cat` makes 8192 of them per GiB: so the tracer keeps its own
//! descriptor of each open file description it has seen stopping (taken
//! with `pidfd_getfd`), recognises it at the next stop with one
//! `kcmp(KCMP_FILE)` and reads the shared file position with `lseek` on
//! it, instead of resolving `/proc/TID/fd/N` and parsing
//! `/proc/TID/fdinfo/N` at every call.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;
use tracer::{Action, SyscallStop, TraceeMemory};

use super::fds::{open_in_range, Placed};
use super::fetch::{self, STREAM_WAIT};
use super::locks::{same_description, take_fd};
use super::FsLayer;

/// One file still arriving.
#[derive(Debug)]
pub(crate) struct Live {
    pub central: Vec<u8>,
    /// (dev, ino) of the partial file (the mirror entry and descriptors).
    pub key: (u64, u64),
    pub stream: fetch::Stream,
    /// Descriptors of the job seen reading it: (thread, descriptor, the
    /// tracer's own descriptor of the same open file description), at most
    /// [`SEEN_MAX`], most recent last.
    pub seen: Vec<(Pid, i32, OwnedFd)>,
}

/// How many of the job's descriptors each file still arriving remembers
/// (a `cat` needs one; more only cost a `kcmp` each per stop).
const SEEN_MAX: usize = 8;

/// The calls stopped for descriptors in the streaming range, and the
/// argument holding the descriptor.
pub(crate) const STOPPED: &[(Sysno, u8)] = &[
    (Sysno::read, 0),
    (Sysno::pread64, 0),
    (Sysno::readv, 0),
    (Sysno::preadv, 0),
    (Sysno::preadv2, 0),
    (Sysno::lseek, 0),
    (Sysno::sendfile, 1),
    (Sysno::copy_file_range, 0),
    (Sysno::splice, 0),
    (Sysno::dup, 0),
    (Sysno::dup2, 0),
    (Sysno::dup3, 0),
    (Sysno::fcntl, 0),
    (Sysno::mmap, 4),
];

fn file_pos(tid: Pid, fd: i32) -> Option<u64> {
    fdinfo_value(tid, fd, "pos:", 10)
}

/// A number from `/proc/TID/fdinfo/FD` (`pos:` in decimal, `flags:` in
/// octal).
pub(crate) fn fdinfo_value(tid: nix::unistd::Pid, fd: i32, key: &str, radix: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), radix).ok())
}

/// How [`FsLayer::start_stream`] placed a file in the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamStart {
    /// Still arriving: reads of its descriptors wait for their bytes.
    Streaming,
    /// Every byte is there (a transfer that is only finishing): read it
    /// natively.
    Arrived,
    /// This client cannot stream: fetch the file whole.
    Unsupported,
}

impl FsLayer {
    /// Whether central `c` is still arriving (finished transfers are
    /// forgotten here; a failed one leaves the mirror, so the next open
    /// fetches again, while its descriptors keep failing with `EIO`).
    pub(crate) fn live_stream(&mut self, c: &[u8]) -> bool {
        self.streams.retain(|l| !l.stream.part.is_finished());
        let Some(l) = self.streams.iter_mut().find(|l| l.central == c) else {
            return false;
        };
        if l.stream.part.is_writing() {
            return true;
        }
        l.central.clear();
        let _ = self.mirror.forget(c);
        false
    }

    /// Starts streaming central `c` (`stamp`) into the mirror.
    pub(crate) fn start_stream(
        &mut self,
        c: &[u8],
        stamp: &dscp_dicp::msg::job::FileStamp,
    ) -> Result<StreamStart, Errno> {
        let Some(client) = self.client.share() else {
            return Ok(StreamStart::Unsupported);
        };
        let first = u64::from(fetch::READ_CHUNK);
        let stream = fetch::stream(client, &self.cache, c, stamp, first)?;
        let content = super::mirror::Content::Object(*stamp);
        // The partial file becomes the object when the transfer ends:
        // if that happened meanwhile, link the object.
        let mut placed = Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        for _ in 0..3 {
            placed = self.mirror.place_file(c, &stream.part.path(), content);
            if placed.is_ok() {
                break;
            }
        }
        if let Err(e) = placed {
            log::warn!("mirror: {e}");
            return Err(Errno::EIO);
        }
        self.streams.retain(|l| l.central != c);
        // Every byte has arrived and been hashed (another job's transfer
        // that is only finishing, e.g. the fsync of a large object): the
        // job reads it natively, as a finished object, instead of
        // stopping at every read until the transfer is done.
        if stream.part.ready_up_to() >= stream.part.size() {
            return Ok(StreamStart::Arrived);
        }
        let node = self.mirror.node_path(c);
        let m = std::fs::metadata(std::ffi::OsStr::from_bytes(&node)).map_err(|_| Errno::EIO)?;
        self.streams.push(Live {
            central: c.to_vec(),
            key: (m.dev(), m.ino()),
            stream,
            seen: Vec::new(),
        });
        Ok(StreamStart::Streaming)
    }

    /// Opens mirror file `node` (streaming) in the tracee and moves the
    /// descriptor into the streaming range. Without room there the open
    /// waits for the whole file and keeps its low descriptor.
    pub(crate) fn stream_open(
        &mut self,
        stop: &mut SyscallStop<'_>,
        c: &[u8],
        node: &[u8],
        flags: i32,
    ) -> Action {
        let min = self.cfg.stream_fd_min;
        let fd = match open_in_range(stop, node, flags, min, i64::from(STREAM_FD_MAX), "stream") {
            Err(action) => return action,
            Ok(Placed::High(high)) => return Action::Return(high),
            Ok(Placed::Low(fd)) => fd,
        };
        // A stdio slot, or no room up there: this descriptor is not
        // checked, so all of the file must be there.
        if !self.wait_whole(c) {
            let _ = stop.inject(Sysno::close, &[fd as u64]);
            return Action::errno(Errno::EIO);
        }
        Action::Return(fd)
    }

    fn wait_whole(&self, c: &[u8]) -> bool {
        match self.streams.iter().find(|l| l.central == c) {
            Some(l) => l.stream.part.wait_ready(u64::MAX, STREAM_WAIT),
            None => true,
        }
    }

    /// A call stopped on a descriptor in the streaming range: waits until
    /// the bytes it can touch have arrived.
    pub(crate) fn stream_call(&mut self, stop: &mut SyscallStop<'_>, nr: Sysno) -> Action {
        self.streams.retain(|l| !l.stream.part.is_finished());
        // Nothing left to wait for (every byte of every live transfer has
        // arrived and been hashed; only their fsync may be running): every
        // call runs natively as it would once they are finished.
        if self
            .streams
            .iter()
            .all(|l| l.stream.part.ready_up_to() >= l.stream.part.size())
        {
            return Action::Continue;
        }
        let arg = STOPPED
            .iter()
            .find(|(n, _)| *n == nr)
            .map_or(0, |(_, a)| *a);
        let fd = stop.arg(arg as usize) as i32;
        if fd < 0 {
            return Action::Continue;
        }
        let tid = stop.tid();
        let Some((index, mine)) = self.stream_of(stop.pid(), tid, fd) else {
            return Action::Continue; // EBADF, natively, or not arriving
        };
        let live = &self.streams[index];
        // The open file description's position: through the tracer's own
        // descriptor of it when it has one.
        let pos = || match mine {
            Some(raw) => {
                // SAFETY: lseek on a descriptor the tracer owns.
                let p = unsafe { libc::lseek(raw, 0, libc::SEEK_CUR) };
                u64::try_from(p).ok()
            }
            None => file_pos(tid, fd),
        };
        let a = stop.args();
        let end = match nr {
            Sysno::read => pos().map(|p| p.saturating_add(a[2])),
            Sysno::pread64 => Some(a[3].saturating_add(a[2])),
            Sysno::readv | Sysno::preadv | Sysno::preadv2 => {
                // readv, and preadv2 with offset -1: the file position.
                let at = if nr == Sysno::readv || a[3] as i64 == -1 {
                    pos()
                } else {
                    Some(a[3])
                };
                iov_total(stop, a[1], a[2]).and_then(|n| at.map(|p| p.saturating_add(n)))
            }
            Sysno::lseek => match a[2] as i32 {
                libc::SEEK_DATA | libc::SEEK_HOLE => None,
                _ => return Action::Continue, // the size is final already
            },
            Sysno::fcntl => match a[1] as i32 {
                libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => None,
                _ => return Action::Continue,
            },
            _ => None, // mmap, sendfile, copy_file_range, splice, dup*: all of it
        };
        let end = end.unwrap_or(u64::MAX);
        if live.stream.part.wait_ready(end, STREAM_WAIT) {
            Action::Continue
        } else {
            let e = live.stream.error.load(std::sync::atomic::Ordering::SeqCst);
            log::warn!(
                "{}: transfer failed ({})",
                String::from_utf8_lossy(&live.central),
                Errno::from_raw(e)
            );
            Action::errno(Errno::EIO)
        }
    }

    /// The live transfer descriptor `fd` of thread `tid` (of process
    /// `pid`) reads, and the tracer's own descriptor of its open file
    /// description if it could take one (`None`: not a descriptor of a
    /// file still arriving, or no such descriptor).
    fn stream_of(&mut self, pid: Pid, tid: Pid, fd: i32) -> Option<(usize, Option<i32>)> {
        for (i, l) in self.streams.iter().enumerate() {
            let hit = l
                .seen
                .iter()
                .find(|(t, f, mine)| *t == tid && *f == fd && same_description(mine, tid, fd));
            if let Some((_, _, mine)) = hit {
                return Some((i, Some(mine.as_raw_fd())));
            }
        }
        // First stop of this descriptor (or it now names another
        // description): take the tracer's own copy and find its file.
        // `pidfd_getfd` reads the process's descriptor table, which a
        // thread made without `CLONE_FILES` does not share: then the
        // position comes from `/proc` at every stop.
        let mine = take_fd(pid, fd)
            .ok()
            .filter(|mine| same_description(mine, tid, fd));
        let Some(mine) = mine else {
            let m = std::fs::metadata(format!("/proc/{tid}/fd/{fd}")).ok()?;
            let i = self
                .streams
                .iter()
                .position(|l| l.key == (m.dev(), m.ino()))?;
            return Some((i, None));
        };
        let m = nix::sys::stat::fstat(mine.as_raw_fd()).ok()?;
        let i = self
            .streams
            .iter()
            .position(|l| l.key == (m.st_dev, m.st_ino))?;
        let seen = &mut self.streams[i].seen;
        seen.retain(|(t, f, _)| (*t, *f) != (tid, fd));
        if seen.len() >= SEEN_MAX {
            seen.remove(0);
        }
        let raw = mine.as_raw_fd();
        seen.push((tid, fd, mine));
        Some((i, Some(raw)))
    }
}

/// First descriptor above the streaming range.
pub(crate) const STREAM_FD_MAX: u32 = 0x8000_0000;

/// The bytes an iovec array asks for (`None`: unreadable, wait for all).
fn iov_total(stop: &SyscallStop<'_>, addr: u64, n: u64) -> Option<u64> {
    if n > 1024 {
        return None;
    }
    let mut total = 0u64;
    for i in 0..n {
        let len = stop.memory().read_value::<u64>(addr + 16 * i + 8).ok()?;
        total = total.saturating_add(len);
    }
    Some(total)
}
