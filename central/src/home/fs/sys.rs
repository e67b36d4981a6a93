//! Thin wrappers over the system calls the file service makes: byte paths
//! in, `errno` out. Every call goes to the kernel directly (no `std::fs`),
//! so symlinks are followed exactly where the program's call would follow
//! them, and the errno is the kernel's.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use dscp_dicp::msg::fs::{FileStat, StatFs};

/// A call's result: the value or central's errno.
pub type SysResult<T> = Result<T, i32>;

/// The errno of the last failed call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An absolute central path as a C string. Relative (or empty) paths are
/// refused with `EINVAL`: the node resolves them against the job's cwd and
/// directory descriptors before asking, so one arriving here is a node bug
/// that must not be resolved against the home's own cwd. A NUL byte cannot
/// come from a real system call either (`EINVAL`).
pub fn abs_path(p: &[u8]) -> SysResult<CString> {
    if p.first() != Some(&b'/') {
        return Err(libc::EINVAL);
    }
    CString::new(p).map_err(|_| libc::EINVAL)
}

/// Any byte string as a C string (`EINVAL` on an embedded NUL).
pub fn c_bytes(p: &[u8]) -> SysResult<CString> {
    CString::new(p).map_err(|_| libc::EINVAL)
}

/// Runs a call returning `-1` on failure, again on `EINTR`.
fn retry<T: Copy + PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> SysResult<T> {
    loop {
        let r = f();
        if r != T::from(-1) {
            return Ok(r);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Runs a call returning 0 or -1.
pub fn check(f: impl FnMut() -> libc::c_int) -> SysResult<()> {
    retry(f).map(|_| ())
}

/// `sec * 10^9 + nsec`, saturating for times the nanosecond count cannot
/// hold (past the year 2262), so a file with such a time cannot panic the
/// home. Every stamp is built with this, so stamps made from `libc::stat`
/// and from `std::fs::Metadata` agree.
pub fn time_ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// `struct stat` as the protocol carries it.
pub fn file_stat(st: &libc::stat) -> FileStat {
    // Field widths differ between architectures (nlink, blksize); these
    // conversions are lossless where the field is wider or equal.
    #[allow(clippy::useless_conversion)]
    FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: u64::from(st.st_nlink),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: u64::try_from(st.st_size).unwrap_or(0),
        blksize: u64::try_from(i64::from(st.st_blksize)).unwrap_or(0),
        blocks: u64::try_from(i64::from(st.st_blocks)).unwrap_or(0),
        atime_ns: time_ns(st.st_atime, st.st_atime_nsec),
        mtime_ns: time_ns(st.st_mtime, st.st_mtime_nsec),
        ctime_ns: time_ns(st.st_ctime, st.st_ctime_nsec),
    }
}

/// `fstatat(dirfd, name, flags)`.
pub fn stat_at(dirfd: RawFd, name: &CStr, flags: libc::c_int) -> SysResult<FileStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: name is NUL-terminated; st is a valid out pointer.
    check(|| unsafe { libc::fstatat(dirfd, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded and filled it (and it was zeroed anyway).
    Ok(file_stat(unsafe { &st.assume_init() }))
}

/// `fstat(fd)`.
pub fn fstat(fd: &OwnedFd) -> SysResult<FileStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fd is open; st is a valid out pointer.
    check(|| unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: as above.
    Ok(file_stat(unsafe { &st.assume_init() }))
}

/// `readlinkat(dirfd, name)`, the whole content however long.
pub fn readlink_at(dirfd: RawFd, name: &CStr) -> SysResult<Vec<u8>> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        // SAFETY: buf has cap writable bytes; name is NUL-terminated.
        let n = retry(|| unsafe {
            libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        let n = usize::try_from(n).map_err(|_| libc::EIO)?;
        if n < cap {
            buf.truncate(n);
            return Ok(buf);
        }
        // Possibly truncated: a link's content is at most PATH_MAX on
        // Linux, but do not trust that blindly and do not loop forever.
        if cap >= 1 << 20 {
            return Err(libc::ENAMETOOLONG);
        }
        cap *= 4;
    }
}

/// `openat(AT_FDCWD, path, flags, mode)`.
pub fn open(path: &CStr, flags: libc::c_int, mode: u32) -> SysResult<OwnedFd> {
    // SAFETY: path is NUL-terminated; the mode is passed as the variadic
    // argument open(2) reads when O_CREAT or O_TMPFILE is given.
    let fd = retry(|| unsafe {
        libc::openat(libc::AT_FDCWD, path.as_ptr(), flags, mode as libc::c_uint)
    })?;
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How often [`openat2`] retries a lookup the kernel saw race with a
/// rename or mount.
const OPENAT2_RACE_RETRIES: u32 = 64;

/// `openat2(dir, path, {flags, mode, resolve})`.
pub fn openat2(
    dir: &OwnedFd,
    path: &CStr,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> SysResult<OwnedFd> {
    /// `struct open_how`.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: u64::from(flags as u32),
        mode: u64::from(mode),
        resolve,
    };
    // With RESOLVE_BENEATH or RESOLVE_IN_ROOT the kernel answers EAGAIN
    // when a rename or a mount anywhere on the machine ran during a `..`
    // step, asking the caller to try again (openat2(2)). The home's
    // machine is not the job's, and its other activity (other jobs'
    // homes, a node's sandbox on the same machine) must not turn into
    // errors the program would not have seen: retry a bounded number of
    // times, then let the program see EAGAIN as it would.
    let mut races = 0;
    let fd = loop {
        // SAFETY: dir is open, path NUL-terminated, how a valid open_how
        // of the size passed.
        let r = retry(|| unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        });
        match r {
            Err(libc::EAGAIN) if races < OPENAT2_RACE_RETRIES => races += 1,
            r => break r?,
        }
    };
    let fd = RawFd::try_from(fd).map_err(|_| libc::EIO)?;
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path of an open descriptor as the kernel names it
/// (`/proc/self/fd/N`): every symlink and `..` resolved.
pub fn fd_path(fd: &OwnedFd) -> SysResult<Vec<u8>> {
    let link = c_bytes(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    readlink_at(libc::AT_FDCWD, &link)
}

/// An offset as `off_t` (`EINVAL` when it does not fit, as the kernel
/// answers a negative one).
pub fn off(v: u64) -> SysResult<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| libc::EINVAL)
}

/// `pread` until `len` bytes or end of file.
pub fn pread_full(fd: &OwnedFd, offset: u64, len: usize) -> SysResult<Vec<u8>> {
    let mut buf = Vec::new();
    pread_append(fd, offset, len, &mut buf)?;
    Ok(buf)
}

/// `pread`s up to `len` bytes at `offset` onto the end of `buf` (fewer
/// only at end of file), without zeroing the room first (a `Read` answer
/// is 8 MiB: zeroing it cost as much as reading it); returns how many.
pub fn pread_append(fd: &OwnedFd, offset: u64, len: usize, buf: &mut Vec<u8>) -> SysResult<usize> {
    buf.try_reserve_exact(len).map_err(|_| libc::ENOMEM)?;
    let mut got = 0usize;
    while got < len {
        let at = off(offset.saturating_add(got as u64))?;
        let rest = &mut buf.spare_capacity_mut()[..len - got];
        // SAFETY: rest is writable room of rest.len() bytes inside buf's
        // allocation; pread only writes into it.
        let n = retry(|| unsafe {
            libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at)
        })?;
        match usize::try_from(n) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // SAFETY: pread initialised these n bytes (n <= rest.len()).
                unsafe { buf.set_len(buf.len() + n) };
                got += n;
            }
        }
    }
    Ok(got)
}

/// `pwrite` all of `data` at `offset`.
pub fn pwrite_all(fd: RawFd, offset: u64, data: &[u8]) -> SysResult<()> {
    let mut done = 0usize;
    while done < data.len() {
        let at = off(offset.checked_add(done as u64).ok_or(libc::EFBIG)?)?;
        let rest = &data[done..];
        // SAFETY: rest is a valid readable slice of rest.len() bytes.
        let n = retry(|| unsafe { libc::pwrite(fd, rest.as_ptr().cast(), rest.len(), at) })?;
        match usize::try_from(n) {
            // A regular file never accepts zero bytes of a non-empty write
            // unless something is badly wrong; do not spin.
            Ok(0) | Err(_) => return Err(libc::EIO),
            Ok(n) => done += n,
        }
    }
    Ok(())
}

/// `statfs(path)`. libc's `struct statfs` hides the kernel's `f_flags`,
/// so the mount flags come from `statvfs`, which glibc fills from the same
/// kernel call (`f_flag` is `f_flags` without `ST_VALID`, added back here:
/// the kernel always sets it).
pub fn statfs(path: &CStr) -> SysResult<StatFs> {
    let mut s = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: path is NUL-terminated; s is a valid out pointer.
    check(|| unsafe { libc::statfs(path.as_ptr(), s.as_mut_ptr()) })?;
    // SAFETY: statfs succeeded (and it was zeroed anyway).
    let s = unsafe { s.assume_init() };
    let mut v = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: as above.
    check(|| unsafe { libc::statvfs(path.as_ptr(), v.as_mut_ptr()) })?;
    // SAFETY: as above.
    let v = unsafe { v.assume_init() };
    const ST_VALID: i64 = 0x0020;
    // The field types differ between architectures and libcs (__fsword_t,
    // fsblkcnt_t); widen each to the protocol's type.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    Ok(StatFs {
        kind: s.f_type as i64,
        bsize: s.f_bsize as i64,
        blocks: s.f_blocks as u64,
        bfree: s.f_bfree as u64,
        bavail: s.f_bavail as u64,
        files: s.f_files as u64,
        ffree: s.f_ffree as u64,
        namelen: s.f_namelen as i64,
        frsize: s.f_frsize as i64,
        flags: v.f_flag as i64 | ST_VALID,
    })
}

/// A directory stream over an open directory descriptor; closed on drop.
pub struct Dir(std::ptr::NonNull<libc::DIR>);

impl Dir {
    /// Takes over `fd` (closed on drop, also when this fails).
    pub fn from_fd(fd: OwnedFd) -> SysResult<Dir> {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        // SAFETY: raw is an open directory descriptor we own; on success
        // the stream owns it.
        let d = unsafe { libc::fdopendir(raw) };
        match std::ptr::NonNull::new(d) {
            Some(d) => Ok(Dir(d)),
            None => {
                let e = errno();
                // SAFETY: fdopendir failed, so the descriptor is still ours.
                unsafe { libc::close(raw) };
                Err(e)
            }
        }
    }

    /// The stream's descriptor, for `*at` calls on its entries.
    pub fn fd(&self) -> RawFd {
        // SAFETY: the stream is open.
        unsafe { libc::dirfd(self.0.as_ptr()) }
    }

    /// The next entry's name (`.` and `..` included), None at the end.
    pub fn next_name(&mut self) -> SysResult<Option<CString>> {
        nix::errno::Errno::clear();
        // SAFETY: the stream is open and used by this thread only (&mut).
        let ent = unsafe { libc::readdir(self.0.as_ptr()) };
        if ent.is_null() {
            return match errno() {
                0 => Ok(None),
                e => Err(e),
            };
        }
        // SAFETY: readdir returned a valid entry whose d_name is
        // NUL-terminated; it is copied before the next readdir.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        Ok(Some(name.to_owned()))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the stream is open and dropped once.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

// SAFETY: a DIR stream may move between threads; it is only used through
// &mut self.
unsafe impl Send for Dir {}
