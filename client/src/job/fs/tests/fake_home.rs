//! A fake home for tests: performs each request with the real system calls
//! on this machine, under a path map (central `/central/x` is really
//! `<tmp>/x`), optionally with another user's file-system ids (so a root
//! test run still meets `EACCES`). Not a production path.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use dscp_dicp::msg::fs::{DirEntry, FileStat, Listing, Request, Response, StatFs};
use dscp_dicp::msg::job::ExecImage;
use dscp_dicp::msg::Blob;

use super::super::FsClient;

pub struct FakeHome {
    /// (central prefix, real prefix), longest first.
    maps: Vec<(Vec<u8>, Vec<u8>)>,
    handles: Mutex<HashMap<u64, OwnedFd>>,
    next: AtomicU64,
    /// File-system (uid, gid) to act as.
    user: Option<(u32, u32)>,
    /// Request kinds seen, for assertions.
    pub seen: Mutex<Vec<&'static str>>,
    /// Milliseconds each `Read` of a `/central` file takes (a slow link).
    pub read_delay_ms: AtomicU64,
    /// `Read`s of a `/central` file from this offset on wait until
    /// [`FakeHome::release_reads`] (at most [`HELD_AT_MOST`]).
    pub hold_reads_from: AtomicU64,
    /// Whether the held reads were released, and whether one of them gave
    /// up waiting (nobody released it in time).
    held: (Mutex<(bool, bool)>, std::sync::Condvar),
}

/// How long a held `Read` waits for [`FakeHome::release_reads`].
pub const HELD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);

type Res = Result<Response, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn cstr(p: &[u8]) -> Result<CString, i32> {
    CString::new(p.to_vec()).map_err(|_| libc::EINVAL)
}

pub fn stat_of(m: &std::fs::Metadata) -> FileStat {
    FileStat {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev(),
        size: m.size(),
        blksize: m.blksize(),
        blocks: m.blocks(),
        atime_ns: m.atime() * 1_000_000_000 + m.atime_nsec(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    }
}

fn ioe(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn kind(r: &Request) -> &'static str {
    match r {
        Request::Stat { .. } => "Stat",
        Request::Access { .. } => "Access",
        Request::Readlink { .. } => "Readlink",
        Request::Open { .. } => "Open",
        Request::Read { .. } => "Read",
        Request::ReadDir { .. } => "ReadDir",
        Request::Write { .. } => "Write",
        Request::Close { .. } => "Close",
        Request::Exec { .. } => "Exec",
        Request::OpenDir { .. } => "OpenDir",
        _ => "other",
    }
}

impl FakeHome {
    /// Central `central` is really `real`; everything else is itself.
    pub fn new(maps: &[(&str, &std::path::Path)], user: Option<(u32, u32)>) -> Self {
        let mut maps: Vec<(Vec<u8>, Vec<u8>)> = maps
            .iter()
            .map(|(c, r)| (c.as_bytes().to_vec(), r.as_os_str().as_bytes().to_vec()))
            .collect();
        maps.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        Self {
            maps,
            handles: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            user,
            seen: Mutex::new(Vec::new()),
            read_delay_ms: AtomicU64::new(0),
            hold_reads_from: AtomicU64::new(u64::MAX),
            held: Default::default(),
        }
    }

    /// Lets the held `Read`s go; true if none of them had given up
    /// waiting first.
    pub fn release_reads(&self) -> bool {
        let mut h = self.held.0.lock().unwrap();
        h.0 = true;
        self.held.1.notify_all();
        !h.1
    }

    /// Waits while a `Read` at `offset` is held.
    fn hold(&self, offset: u64) {
        if offset < self.hold_reads_from.load(Ordering::Relaxed) {
            return;
        }
        let h = self.held.0.lock().unwrap();
        let (mut h, waited) = self
            .held
            .1
            .wait_timeout_while(h, HELD_AT_MOST, |h| !h.0)
            .unwrap();
        if waited.timed_out() {
            h.1 = true;
        }
    }

    fn real(&self, c: &[u8]) -> Result<Vec<u8>, i32> {
        if c.first() != Some(&b'/') {
            return Err(libc::EINVAL);
        }
        for (cp, rp) in &self.maps {
            if c.starts_with(cp) && (c.len() == cp.len() || c[cp.len()] == b'/') {
                let mut r = rp.clone();
                r.extend_from_slice(&c[cp.len()..]);
                return Ok(r);
            }
        }
        Ok(c.to_vec())
    }

    fn central(&self, r: &[u8]) -> Vec<u8> {
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (cp, rp) in &self.maps {
            if r.starts_with(rp)
                && (r.len() == rp.len() || r[rp.len()] == b'/')
                && best.as_ref().is_none_or(|(l, _)| rp.len() > *l)
            {
                let mut c = cp.clone();
                c.extend_from_slice(&r[rp.len()..]);
                best = Some((rp.len(), c));
            }
        }
        best.map(|(_, c)| c).unwrap_or_else(|| r.to_vec())
    }

    fn as_user<T>(&self, f: impl FnOnce() -> T) -> T {
        // The node applied the job's umask; the real home runs with umask
        // 0 (process-wide: other tests meanwhile create files 0666, which
        // is harmless).
        // SAFETY: umask cannot fail.
        let old = unsafe { libc::umask(0) };
        let r = self.as_user_ids(f);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        r
    }

    fn as_user_ids<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some((uid, gid)) = self.user else {
            return f();
        };
        // SAFETY: per-thread file-system ids, restored below.
        unsafe {
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
        }
        let r = f();
        // SAFETY: as above.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, libc::geteuid());
            libc::syscall(libc::SYS_setfsgid, libc::getegid());
        }
        r
    }

    fn serve(&self, req: Request) -> Res {
        match req {
            Request::Stat { path, follow } => {
                let p = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&self.real(&path)?));
                let m = if follow {
                    std::fs::metadata(p)
                } else {
                    std::fs::symlink_metadata(p)
                };
                Ok(Response::Stat(stat_of(&m.map_err(ioe)?)))
            }
            Request::Access { path, mode, flags } => {
                let p = cstr(&self.real(&path)?)?;
                let flags = flags as i32
                    | if self.user.is_some() {
                        libc::AT_EACCESS
                    } else {
                        0
                    };
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::faccessat(libc::AT_FDCWD, p.as_ptr(), mode as i32, flags) })?;
                Ok(Response::Ok)
            }
            Request::Readlink { path } => {
                let l = std::fs::read_link(std::ffi::OsStr::from_bytes(&self.real(&path)?))
                    .map_err(ioe)?;
                Ok(Response::Link(Blob(l.as_os_str().as_bytes().to_vec())))
            }
            Request::Open { path, flags, mode } => {
                let p = cstr(&self.real(&path)?)?;
                let fl = flags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
                // SAFETY: NUL-terminated path.
                let fd = unsafe { libc::open(p.as_ptr(), fl, mode) };
                check(fd)?;
                // SAFETY: a descriptor we own.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let m = std::fs::File::from(fd.try_clone().map_err(ioe)?)
                    .metadata()
                    .map_err(ioe)?;
                let link =
                    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(ioe)?;
                let canonical = Blob(self.central(link.as_os_str().as_bytes()));
                let writes = flags & libc::O_ACCMODE != libc::O_RDONLY
                    || flags & (libc::O_CREAT | libc::O_TRUNC) != 0;
                let handle = if writes && flags & libc::O_PATH == 0 && m.is_file() {
                    let h = self.next.fetch_add(1, Ordering::Relaxed);
                    self.handles.lock().unwrap().insert(h, fd);
                    Some(h)
                } else {
                    None
                };
                // Like a real home that could not fit the listing: the
                // layer then asks with ReadDir.
                Ok(Response::Opened {
                    canonical,
                    stat: stat_of(&m),
                    handle,
                    listing: None,
                })
            }
            Request::OpenDir { path, flags, also } => {
                // Open, then one level of listings read ahead (the home's
                // bounds and breadth are central's unit tests' business).
                let opened = self.serve(Request::Open {
                    path,
                    flags,
                    mode: 0,
                })?;
                let Response::Opened {
                    canonical, stat, ..
                } = &opened
                else {
                    return Ok(opened);
                };
                if stat.mode & libc::S_IFMT != libc::S_IFDIR {
                    return Ok(opened);
                }
                let list = |p: &[u8]| match self.serve(Request::ReadDir {
                    path: Blob(p.to_vec()),
                }) {
                    Ok(Response::Dir(d)) => Ok(d),
                    Ok(_) => Err(libc::EIO),
                    Err(e) => Err(e),
                };
                let listing = list(canonical)?;
                let subdirs = listing
                    .iter()
                    .filter(|e| {
                        e.stat
                            .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFDIR)
                    })
                    .map(|e| [&canonical[..], b"/", &e.name[..]].concat());
                let mut ahead = Vec::new();
                for d in subdirs.chain(also.into_iter().map(|b| b.0)) {
                    let (Ok(entries), Ok(m)) = (
                        list(&d),
                        std::fs::metadata(std::ffi::OsStr::from_bytes(&self.real(&d)?)),
                    ) else {
                        continue;
                    };
                    ahead.push(Listing {
                        path: Blob(d),
                        stat: stat_of(&m),
                        entries,
                    });
                }
                Ok(Response::OpenedDir {
                    canonical: canonical.clone(),
                    stat: *stat,
                    listing,
                    ahead,
                })
            }
            Request::Read {
                path,
                stamp,
                offset,
                len,
            } => {
                let f = std::fs::File::open(std::ffi::OsStr::from_bytes(&self.real(&path)?))
                    .map_err(ioe)?;
                if stat_of(&f.metadata().map_err(ioe)?).stamp() != stamp {
                    return Err(libc::ESTALE);
                }
                let mut buf = vec![0u8; len as usize];
                let mut got = 0;
                while got < buf.len() {
                    let n = f
                        .read_at(&mut buf[got..], offset + got as u64)
                        .map_err(ioe)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                buf.truncate(got);
                Ok(Response::Data(Blob(buf)))
            }
            Request::ReadDir { path } => {
                let real = self.real(&path)?;
                let mut out = Vec::new();
                for e in std::fs::read_dir(std::ffi::OsStr::from_bytes(&real)).map_err(ioe)? {
                    let e = e.map_err(ioe)?;
                    let m = std::fs::symlink_metadata(e.path()).ok();
                    let link = m
                        .as_ref()
                        .filter(|m| m.file_type().is_symlink())
                        .and_then(|_| std::fs::read_link(e.path()).ok())
                        .map(|l| Blob(l.as_os_str().as_bytes().to_vec()));
                    out.push(DirEntry {
                        name: Blob(e.file_name().as_bytes().to_vec()),
                        stat: m.as_ref().map(stat_of),
                        link,
                        no_xattrs: false,
                    });
                }
                Ok(Response::Dir(out))
            }
            Request::Mkdir { path, mode } => {
                let p = cstr(&self.real(&path)?)?;
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::mkdir(p.as_ptr(), mode) }).map(|()| Response::Ok)
            }
            Request::Unlink { path } => {
                let p = cstr(&self.real(&path)?)?;
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::unlink(p.as_ptr()) }).map(|()| Response::Ok)
            }
            Request::Rmdir { path } => {
                let p = cstr(&self.real(&path)?)?;
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::rmdir(p.as_ptr()) }).map(|()| Response::Ok)
            }
            Request::Rename { from, to, flags } => {
                let (a, b) = (cstr(&self.real(&from)?)?, cstr(&self.real(&to)?)?);
                // SAFETY: NUL-terminated paths.
                check(unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        flags,
                    )
                })
                .map(|()| Response::Ok)
            }
            Request::Link { from, to, follow } => {
                let (a, b) = (cstr(&self.real(&from)?)?, cstr(&self.real(&to)?)?);
                let fl = if follow { libc::AT_SYMLINK_FOLLOW } else { 0 };
                // SAFETY: NUL-terminated paths.
                check(unsafe {
                    libc::linkat(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), fl)
                })
                .map(|()| Response::Ok)
            }
            Request::Symlink { target, path } => {
                let (t, p) = (cstr(&target)?, cstr(&self.real(&path)?)?);
                // SAFETY: NUL-terminated paths.
                check(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) }).map(|()| Response::Ok)
            }
            Request::Chmod { path, mode } => {
                let p = cstr(&self.real(&path)?)?;
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::chmod(p.as_ptr(), mode) }).map(|()| Response::Ok)
            }
            Request::Chown {
                path,
                uid,
                gid,
                follow,
            } => {
                let p = cstr(&self.real(&path)?)?;
                let fl = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::fchownat(libc::AT_FDCWD, p.as_ptr(), uid, gid, fl) })
                    .map(|()| Response::Ok)
            }
            Request::Truncate { path, len } => {
                let p = cstr(&self.real(&path)?)?;
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::truncate(p.as_ptr(), len as i64) }).map(|()| Response::Ok)
            }
            Request::Utimens {
                path,
                atime,
                mtime,
                follow,
            } => {
                let p = cstr(&self.real(&path)?)?;
                let ts = [
                    libc::timespec {
                        tv_sec: atime.0,
                        tv_nsec: atime.1,
                    },
                    libc::timespec {
                        tv_sec: mtime.0,
                        tv_nsec: mtime.1,
                    },
                ];
                let fl = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
                // SAFETY: NUL-terminated path, two timespecs.
                check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), fl) })
                    .map(|()| Response::Ok)
            }
            Request::Statfs { path } => {
                let p = cstr(&self.real(&path)?)?;
                // SAFETY: NUL-terminated path, zeroed out-struct.
                let mut s: libc::statfs = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                check(unsafe { libc::statfs(p.as_ptr(), &mut s) })?;
                Ok(Response::Statfs(StatFs {
                    kind: s.f_type,
                    bsize: s.f_bsize,
                    blocks: s.f_blocks,
                    bfree: s.f_bfree,
                    bavail: s.f_bavail,
                    files: s.f_files,
                    ffree: s.f_ffree,
                    namelen: s.f_namelen,
                    frsize: s.f_frsize,
                    flags: 0,
                }))
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                let h = self.handles.lock().unwrap();
                let fd = h.get(&handle).ok_or(libc::EBADF)?;
                // SAFETY: borrowed descriptor, not closed by the File (forgotten).
                let f = std::mem::ManuallyDrop::new(unsafe {
                    std::fs::File::from_raw_fd(fd.as_raw_fd())
                });
                f.write_all_at(&data, offset).map_err(ioe)?;
                Ok(Response::Ok)
            }
            Request::SetLen { handle, len } => {
                let h = self.handles.lock().unwrap();
                let fd = h.get(&handle).ok_or(libc::EBADF)?;
                // SAFETY: an open descriptor.
                check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }).map(|()| Response::Ok)
            }
            Request::Sync { handle } => {
                let h = self.handles.lock().unwrap();
                let fd = h.get(&handle).ok_or(libc::EBADF)?;
                // SAFETY: an open descriptor.
                check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(|()| Response::Ok)
            }
            Request::Close { handle } => {
                self.handles
                    .lock()
                    .unwrap()
                    .remove(&handle)
                    .ok_or(libc::EBADF)?;
                Ok(Response::Ok)
            }
            Request::Exec {
                path,
                argv,
                envp: _,
            } => self.exec(&path, argv),
            // Locks are tested against the real home (integration tests).
            Request::Lock { .. } | Request::Unlock { .. } => Err(libc::ENOLCK),
            // And mknod.
            Request::Mknod { .. } | Request::LinkHandle { .. } => Err(libc::EPERM),
            // And openat2's resolve flags.
            Request::OpenAt2 { .. } => Err(libc::EOPNOTSUPP),
            // Extended attributes too.
            Request::GetXattr { .. }
            | Request::ListXattr { .. }
            | Request::SetXattr { .. }
            | Request::RemoveXattr { .. } => Err(libc::ENOTSUP),
        }
    }

    /// `#!` and `PT_INTERP` resolved the simple way; libraries from the
    /// loader's own `--list`.
    fn exec(&self, path: &[u8], argv: Vec<Blob>) -> Res {
        let real = self.real(path)?;
        let head = {
            let f = std::fs::File::open(std::ffi::OsStr::from_bytes(&real)).map_err(ioe)?;
            let mut b = vec![0u8; 4096];
            let n = f.read_at(&mut b, 0).map_err(ioe)?;
            b.truncate(n);
            b
        };
        let (program, argv) = if let Some(rest) = head.strip_prefix(b"#!") {
            let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line).trim().to_string();
            let mut parts = line.splitn(2, char::is_whitespace);
            let interp = parts.next().unwrap_or_default().to_string();
            let mut v = vec![Blob::from(interp.as_str())];
            if let Some(a) = parts.next() {
                v.push(Blob::from(a.trim()));
            }
            v.push(Blob(path.to_vec()));
            v.extend(argv.into_iter().skip(1));
            (interp.into_bytes(), v)
        } else {
            (path.to_vec(), argv)
        };
        let real_prog = self.real(&program)?;
        let data = std::fs::read(std::ffi::OsStr::from_bytes(&real_prog)).map_err(ioe)?;
        let interp = elf_interp(&data).ok_or(libc::ENOEXEC)?;
        let mut libraries = Vec::new();
        let out = std::process::Command::new(&interp)
            .arg("--list")
            .arg(std::ffi::OsStr::from_bytes(&real_prog))
            .output()
            .map_err(ioe)?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let l = l.trim();
            if let Some((name, rest)) = l.split_once(" => ") {
                let p = rest.split(" (").next().unwrap_or_default();
                if p.starts_with('/') {
                    libraries.push((Blob::from(name), Blob::from(p)));
                }
            }
        }
        let mut files = Vec::new();
        let mut add = |p: &[u8]| -> Result<(), i32> {
            let r = self.real(p)?;
            let m = std::fs::metadata(std::ffi::OsStr::from_bytes(&r)).map_err(ioe)?;
            files.push((Blob(p.to_vec()), stat_of(&m).stamp()));
            Ok(())
        };
        add(&program)?;
        add(interp.as_bytes())?;
        for (_, p) in &libraries {
            add(p)?;
        }
        Ok(Response::Exec(Box::new(ExecImage {
            argv,
            program: Blob(program),
            interpreter: Some(Blob::from(interp.as_str())),
            libraries,
            preload: vec![],
            files,
        })))
    }
}

/// `PT_INTERP` of an ELF64 little-endian image.
fn elf_interp(d: &[u8]) -> Option<String> {
    if d.len() < 64 || &d[..4] != b"\x7fELF" {
        return None;
    }
    let u16at = |o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let u64at = |o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64at(32), u16at(54), u16at(56));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(d[ph..ph + 4].try_into().unwrap()) == 3 {
            let (off, size) = (u64at(ph + 8), u64at(ph + 32));
            let s = &d[off..off + size];
            let s = s.split(|b| *b == 0).next()?;
            return Some(String::from_utf8_lossy(s).into_owned());
        }
    }
    None
}

impl FsClient for FakeHome {
    fn call(&self, req: Request) -> Result<Response, String> {
        self.seen.lock().unwrap().push(kind(&req));
        if let Request::Read { path, offset, .. } = &req {
            if path.0.starts_with(b"/central/") {
                let ms = self.read_delay_ms.load(Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                self.hold(*offset);
            }
        }
        let r = self.as_user(|| self.serve(req));
        Ok(r.unwrap_or_else(Response::Errno))
    }
}
