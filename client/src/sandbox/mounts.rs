//! The job's minimal root, built by the PID 1 of its namespaces before the
//! program starts: a read-only tmpfs holding only the job's own directory
//! (read-write) and the node cache (read-only) at their same absolute
//! paths (the tracer rewrites the job's paths to exactly those), `/proc`
//! of the job's PID namespace, `/sys` read-only, and a `/dev` with
//! `null zero full random urandom tty` (plus `pts`/`ptmx` for a `-t` job)
//! and a private `/dev/shm`; then `lo` is brought up in the job's empty
//! network namespace.
//!
//! [`MountPlan`] is computed in the daemon (paths, flags) and applied by
//! [`MountPlan::apply`] in the forked PID 1, which only makes raw system
//! calls on what the plan holds: the daemon is multi-threaded.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::SandboxError;

/// The device nodes a job gets (made with the node's numbers, or
/// bind-mounted from the node's `/dev` in a user namespace).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// One step of the plan.
#[derive(Debug)]
enum Op {
    Umask(libc::mode_t),
    Mount {
        src: Option<CString>,
        dst: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mkdir`, an existing directory is fine.
    Mkdir(CString),
    /// An empty file to bind a device node on.
    Touch(CString),
    /// A character device node (mode and number as the node's own).
    Mknod {
        path: CString,
        mode: libc::mode_t,
        dev: libc::dev_t,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    Chdir(CString),
    /// `pivot_root(".", ".")` then detach the old root stacked under it.
    PivotRoot,
    /// `lo` up in the job's network namespace.
    LoopbackUp,
    /// Enter a namespace made ahead for the job (`CLONE_NEW*` type): the
    /// network one (its `lo` is up), IPC, UTS, or the mount namespace
    /// prepared with its root (see [`MountPlan::prepare`]: root and cwd
    /// become its root).
    Join(std::os::fd::RawFd, libc::c_int),
    /// Close `peer` (the daemon's end of `sock`), then wait for a
    /// namespace's descriptor on `sock` (sent once that namespace is
    /// ready, see [`MountPlan::enter_sent`]) and enter it as `Join` does.
    JoinSent {
        sock: std::os::fd::RawFd,
        peer: std::os::fd::RawFd,
        ns: libc::c_int,
    },
    /// Attach the detached mount `tree` (an `open_tree` clone made in the
    /// daemon's mount namespace) at `dst` of the mount namespace this
    /// process is in: the job's directory into a spare root.
    MoveMount {
        tree: std::os::fd::RawFd,
        dst: CString,
    },
}

/// What the job's root holds.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// An empty directory of the node the tmpfs root is mounted on (in the
    /// job's mount namespace only).
    pub mount_point: PathBuf,
    /// Read-write directories, at the same path.
    pub writable: Vec<PathBuf>,
    /// Read-only directories, at the same path.
    pub read_only: Vec<PathBuf>,
    /// Give the job `/dev/pts` and `/dev/ptmx` (a `-t` job).
    pub tty: bool,
    /// Built inside a user namespace: bind mounts must be recursive and
    /// keep the node's locked flags (nosuid, nodev, noexec).
    pub user_namespace: bool,
    /// The job has its own network namespace: bring its `lo` up.
    pub own_netns: bool,
    /// Namespaces made ahead for the job (descriptor, `CLONE_NEW*` type;
    /// each stays open until PID 1 has applied the plan): PID 1 enters
    /// them instead of having the clone make them. A network namespace
    /// among them has its `lo` up already.
    pub join: Vec<(std::os::fd::RawFd, libc::c_int)>,
}

impl RootSpec {
    /// The job has its own network namespace and none was made ahead: the
    /// clone of PID 1 makes it, with `lo` down.
    fn clone_makes_netns(&self) -> bool {
        self.own_netns && !self.join.iter().any(|&(_, ns)| ns == libc::CLONE_NEWNET)
    }
}

/// The steps PID 1 takes (see the module documentation).
#[derive(Debug)]
pub struct MountPlan {
    ops: Vec<Op>,
}

fn cstr(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SandboxError::BadPath(p.to_path_buf()))
}

/// The flags a bind of `src` must keep on remount (a user namespace may
/// not clear them).
fn locked_flags(src: &Path) -> libc::c_ulong {
    let Ok(st) = nix::sys::statvfs::statvfs(src) else {
        return 0;
    };
    // The kernel's ST_* bits (statfs(2)); nix names ST_RELATIME only for
    // glibc, and the CLI (which embeds a node) can be built against musl.
    let f = st.flags().bits();
    let mut out = 0;
    for (s, m) in [
        (0x0002, libc::MS_NOSUID),
        (0x0004, libc::MS_NODEV),
        (0x0008, libc::MS_NOEXEC),
        (0x0400, libc::MS_NOATIME),
        (0x0800, libc::MS_NODIRATIME),
        (0x1000, libc::MS_RELATIME),
    ] {
        if f & s != 0 {
            out |= m;
        }
    }
    out
}

impl MountPlan {
    /// Computes the plan for `spec`, applied by the namespaces' PID 1.
    pub fn new(spec: &RootSpec) -> Result<Self, SandboxError> {
        Self::build(spec, true)
    }

    /// The part of the plan that does not need the job's PID namespace
    /// (everything but `/proc` and the network), for a thread that has
    /// unshared its mount namespace ahead of the job (a root node, before
    /// the launch arrives); PID 1 then only takes [`MountPlan::enter`].
    pub fn prepare(spec: &RootSpec) -> Result<Self, SandboxError> {
        Self::build(spec, false)
    }

    /// PID 1's steps into a root made by [`MountPlan::prepare`] for
    /// `spec`: the namespaces made ahead (if any), the prepared mount
    /// namespace, `/proc` of the job's PID namespace, and `lo` of a network
    /// namespace the clone made (no spare was ready).
    pub fn enter(spec: &RootSpec, mntns: std::os::fd::RawFd) -> Self {
        Self::entering(spec, Op::Join(mntns, libc::CLONE_NEWNS))
    }

    /// [`MountPlan::enter`] for a root still being made when PID 1
    /// starts: PID 1 enters the namespaces made ahead, then waits for the
    /// prepared mount namespace's descriptor on `sock` (the daemon sends
    /// it on `peer` once the root is built, see
    /// `NodeSandbox::job`), so making PID 1 and building the root overlap.
    pub fn enter_sent(spec: &RootSpec, sock: std::os::fd::RawFd, peer: std::os::fd::RawFd) -> Self {
        Self::entering(
            spec,
            Op::JoinSent {
                sock,
                peer,
                ns: libc::CLONE_NEWNS,
            },
        )
    }

    /// PID 1's steps into a spare root (made before any job, see
    /// [`SpareRoot`]) for `spec`: the namespaces made ahead, the spare's
    /// mount namespace `mntns`, the job's directory `tree` (a detached
    /// bind of it, see [`SpareRoot::claim`]) attached at `dst`, and then
    /// as [`MountPlan::enter`].
    pub fn enter_spare(spec: &RootSpec, root: &ClaimedRoot) -> Self {
        let mut plan = Self::enter(spec, root.mntns.as_raw_fd());
        // Right after the join of the mount namespace: the bind is made
        // there.
        let at = plan
            .ops
            .iter()
            .position(|o| matches!(o, Op::Join(_, libc::CLONE_NEWNS)))
            .map_or(0, |i| i + 1);
        plan.ops.insert(
            at,
            Op::MoveMount {
                tree: root.tree.as_raw_fd(),
                dst: root.dst.clone(),
            },
        );
        plan
    }

    fn entering(spec: &RootSpec, mount_namespace: Op) -> Self {
        let mut ops: Vec<Op> = spec.join.iter().map(|&(fd, ns)| Op::Join(fd, ns)).collect();
        ops.push(mount_namespace);
        ops.push(proc_mount(c"/proc".to_owned()));
        if spec.clone_makes_netns() {
            ops.push(Op::LoopbackUp);
        }
        MountPlan { ops }
    }

    fn build(spec: &RootSpec, whole: bool) -> Result<Self, SandboxError> {
        let root = &spec.mount_point;
        let inside = |p: &Path| -> PathBuf { root.join(p.strip_prefix("/").unwrap_or(p)) };
        let mut ops = vec![
            // Directories made here must be traversable by the job's user.
            Op::Umask(0),
            // Nothing done here may propagate back to the node.
            Op::Mount {
                src: None,
                dst: c"/".to_owned(),
                fstype: None,
                flags: libc::MS_REC | libc::MS_PRIVATE,
                data: None,
            },
            Op::Mount {
                src: Some(c"tmpfs".to_owned()),
                dst: cstr(root)?,
                fstype: Some(c"tmpfs".to_owned()),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: Some(c"mode=0755,size=4m".to_owned()),
            },
        ];
        let mkdirs = |ops: &mut Vec<Op>, p: &Path| -> Result<(), SandboxError> {
            let mut acc = PathBuf::from("/");
            for c in p.strip_prefix("/").unwrap_or(p).components() {
                acc.push(c);
                ops.push(Op::Mkdir(cstr(&inside(&acc))?));
            }
            Ok(())
        };
        let rec = if spec.user_namespace { libc::MS_REC } else { 0 };
        let bind =
            |ops: &mut Vec<Op>, src: &Path, extra: libc::c_ulong| -> Result<(), SandboxError> {
                let dst = cstr(&inside(src))?;
                ops.push(Op::Mount {
                    src: Some(cstr(src)?),
                    dst: dst.clone(),
                    fstype: None,
                    flags: libc::MS_BIND | rec,
                    data: None,
                });
                ops.push(Op::Mount {
                    src: None,
                    dst,
                    fstype: None,
                    flags: libc::MS_REMOUNT | libc::MS_BIND | extra | locked_flags(src),
                    data: None,
                });
                Ok(())
            };
        for (dirs, ro) in [(&spec.writable, 0), (&spec.read_only, libc::MS_RDONLY)] {
            for d in dirs {
                mkdirs(&mut ops, d)?;
                bind(&mut ops, d, ro | libc::MS_NOSUID | libc::MS_NODEV)?;
            }
        }
        // /sys as the node's, read-only.
        mkdirs(&mut ops, Path::new("/sys"))?;
        bind(
            &mut ops,
            Path::new("/sys"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        )?;
        // A minimal /dev.
        let dev = inside(Path::new("/dev"));
        mkdirs(&mut ops, Path::new("/dev"))?;
        ops.push(Op::Mount {
            src: Some(c"tmpfs".to_owned()),
            dst: cstr(&dev)?,
            fstype: Some(c"tmpfs".to_owned()),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(c"mode=0755,size=64k".to_owned()),
        });
        for d in DEVICES {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let node = Path::new("/dev").join(d);
            let Ok(meta) = std::fs::metadata(&node) else {
                continue;
            };
            // Outside a user namespace PID 1 may make the device nodes
            // themselves: one call each instead of a file and a bind
            // mount (the job's start waits for every mount).
            if !spec.user_namespace && meta.file_type().is_char_device() && may_mknod() {
                ops.push(Op::Mknod {
                    path: cstr(&dev.join(d))?,
                    mode: libc::S_IFCHR | (meta.mode() & 0o7777),
                    dev: meta.rdev(),
                });
                continue;
            }
            ops.push(Op::Touch(cstr(&dev.join(d))?));
            ops.push(Op::Mount {
                src: Some(cstr(&node)?),
                dst: cstr(&dev.join(d))?,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            });
        }
        for (target, link) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ] {
            ops.push(Op::Symlink {
                target: cstr(Path::new(target))?,
                link: cstr(&dev.join(link))?,
            });
        }
        if spec.tty && Path::new("/dev/pts").is_dir() {
            ops.push(Op::Mkdir(cstr(&dev.join("pts"))?));
            bind(
                &mut ops,
                Path::new("/dev/pts"),
                libc::MS_NOSUID | libc::MS_NOEXEC,
            )?;
            ops.push(Op::Symlink {
                target: c"pts/ptmx".to_owned(),
                link: cstr(&dev.join("ptmx"))?,
            });
        }
        ops.push(Op::Mkdir(cstr(&dev.join("shm"))?));
        ops.push(Op::Mount {
            src: Some(c"tmpfs".to_owned()),
            dst: cstr(&dev.join("shm"))?,
            fstype: Some(c"tmpfs".to_owned()),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(c"mode=1777".to_owned()),
        });
        // /proc of the job's PID namespace (PID 1 is in it). Mounted
        // before the old root goes: a user namespace may only mount proc
        // while a full proc is visible.
        mkdirs(&mut ops, Path::new("/proc"))?;
        if whole {
            ops.push(proc_mount(cstr(&inside(Path::new("/proc")))?));
        }
        ops.push(Op::Chdir(cstr(root)?));
        ops.push(Op::PivotRoot);
        ops.push(Op::Chdir(c"/".to_owned()));
        // The root itself is read-only: the job writes only where it may.
        ops.push(Op::Mount {
            src: None,
            dst: c"/".to_owned(),
            fstype: None,
            flags: libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV,
            data: None,
        });
        if whole {
            if spec.clone_makes_netns() {
                ops.push(Op::LoopbackUp);
            }
            // Entered before anything else (the mounts are made in the
            // mount namespace the clone made).
            ops.splice(0..0, spec.join.iter().map(|&(fd, ns)| Op::Join(fd, ns)));
        }
        Ok(MountPlan { ops })
    }

    /// Applies the plan. Runs in the namespace's PID 1 after the fork:
    /// raw system calls only, nothing allocates.
    pub fn apply(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let opt = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        for op in &self.ops {
            // SAFETY (every arm): raw system calls on NUL-terminated
            // strings and plain values owned by the plan.
            unsafe {
                match op {
                    Op::Umask(m) => {
                        libc::umask(*m);
                    }
                    Op::Mount {
                        src,
                        dst,
                        fstype,
                        flags,
                        data,
                    } => check(libc::mount(
                        opt(src),
                        dst.as_ptr(),
                        opt(fstype),
                        *flags,
                        opt(data).cast(),
                    ))?,
                    Op::Mkdir(p) => {
                        if libc::mkdir(p.as_ptr(), 0o755) < 0
                            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Op::Touch(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        check(fd)?;
                        libc::close(fd);
                    }
                    Op::Mknod { path, mode, dev } => {
                        check(libc::mknod(path.as_ptr(), *mode, *dev))?
                    }
                    Op::Symlink { target, link } => {
                        check(libc::symlink(target.as_ptr(), link.as_ptr()))?
                    }
                    Op::Chdir(p) => check(libc::chdir(p.as_ptr()))?,
                    Op::PivotRoot => {
                        let dot = c".".as_ptr();
                        check(libc::syscall(libc::SYS_pivot_root, dot, dot) as libc::c_int)?;
                        check(libc::umount2(dot, libc::MNT_DETACH))?;
                    }
                    Op::LoopbackUp => loopback_up()?,
                    Op::Join(fd, ns) => check(libc::setns(*fd, *ns))?,
                    Op::MoveMount { tree, dst } => check(libc::syscall(
                        libc::SYS_move_mount,
                        *tree,
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        dst.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    ) as libc::c_int)?,
                    Op::JoinSent { sock, peer, ns } => {
                        libc::close(*peer);
                        let fd = receive_fd(*sock)?;
                        let entered = libc::setns(fd, *ns);
                        libc::close(fd);
                        check(entered)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A job's root made before any job asks for it (see
/// `NodeSandbox::refill`): the mount namespace [`MountPlan::prepare`]
/// builds for a job without a terminal, minus the job's directory, which
/// [`SpareRoot::claim`] adds once the job is known. The root is read-only
/// for everyone in it; the spare keeps a writable mount of its tmpfs that
/// no namespace holds, through which the daemon makes the directory the
/// job's is mounted on. Dropped unused, it leaves nothing: the namespace
/// and its mounts end with the last descriptor.
#[derive(Debug)]
pub struct SpareRoot {
    /// The mount namespace holding the root.
    mntns: OwnedFd,
    /// The writable, detached mount of the root's tmpfs.
    tmpfs: OwnedFd,
    /// The directory jobs' directories are in (made in the root).
    jobs_dir: PathBuf,
    /// The read-only directories bound in the root.
    read_only: Vec<PathBuf>,
}

/// A spare root given to one job, with that job's directory ready to be
/// attached (see [`MountPlan::enter_spare`]). Kept until the job's PID 1
/// has entered it; the writable mount of its tmpfs goes with it (closing
/// that detached mount waits for an RCU grace period: not at the start).
#[derive(Debug)]
pub struct ClaimedRoot {
    mntns: OwnedFd,
    /// A detached bind mount of the job's directory.
    tree: OwnedFd,
    /// Where it goes (the job directory's own path).
    dst: CString,
    _tmpfs: OwnedFd,
}

impl SpareRoot {
    /// Builds a spare root for jobs whose directories are in `jobs_dir`
    /// and who read `read_only`. Runs on a thread that has unshared its
    /// mount namespace (`mntns` is that namespace): applies the plan of
    /// `spec` (which must hold no writable directory), then keeps a
    /// writable mount of the new root and makes `jobs_dir` in it.
    pub fn build(spec: &RootSpec, jobs_dir: &Path, mntns: OwnedFd) -> std::io::Result<SpareRoot> {
        MountPlan::prepare(spec)
            .map_err(std::io::Error::other)?
            .apply()?;
        // The plan's last step made the root read-only: a clone of it,
        // made writable, is a mount of the same tmpfs no one else sees.
        let tmpfs = open_tree(c"/", OPEN_TREE_CLONE)?;
        let attr = MountAttr {
            attr_set: 0,
            attr_clr: MOUNT_ATTR_RDONLY,
            propagation: 0,
            userns_fd: 0,
        };
        set_mount_attr(&tmpfs, &attr)?;
        let mut at = PathBuf::new();
        for c in relative(jobs_dir).components() {
            at.push(c);
            mkdir_at(&tmpfs, &at)?;
        }
        Ok(SpareRoot {
            mntns,
            tmpfs,
            jobs_dir: jobs_dir.to_path_buf(),
            read_only: spec.read_only.clone(),
        })
    }

    /// Whether this root fits a job with directory `job_dir` reading
    /// `read_only`.
    pub fn fits(&self, job_dir: &Path, read_only: &[PathBuf]) -> bool {
        job_dir.parent() == Some(self.jobs_dir.as_path()) && self.read_only == read_only
    }

    /// Gives the root to the job whose directory is `job_dir` (made here
    /// if needed): a detached bind of it (read-write, `nosuid`, `nodev`)
    /// and the directory it is attached on, made in the root. What is
    /// left is PID 1's ([`MountPlan::enter_spare`]).
    pub fn claim(self, job_dir: &Path) -> std::io::Result<ClaimedRoot> {
        // From the pool of spare directories where it has one: a rename,
        // where a mkdir on ext4 may first search for a free inode (see
        // job/fs/pool.rs).
        crate::job::fs::make_dir_all(job_dir, job_dir)?;
        let dst = cstr(job_dir).map_err(std::io::Error::other)?;
        let tree = open_tree(&dst, OPEN_TREE_CLONE)?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        set_mount_attr(&tree, &attr)?;
        mkdir_at(&self.tmpfs, relative(job_dir))?;
        Ok(ClaimedRoot {
            mntns: self.mntns,
            tree,
            dst,
            _tmpfs: self.tmpfs,
        })
    }
}

/// `p` without its leading `/`.
fn relative(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// `open_tree(2)` flags (linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `move_mount(2)` flag: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// `mount_setattr(2)` attributes (linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `open_tree(AT_FDCWD, path, flags | OPEN_TREE_CLOEXEC)`: with
/// `OPEN_TREE_CLONE` a detached copy of the mount at `path`.
fn open_tree(path: &std::ffi::CStr, flags: libc::c_uint) -> std::io::Result<OwnedFd> {
    // SAFETY: a raw system call on a NUL-terminated string; the
    // descriptor it returns is ours.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags | libc::O_CLOEXEC as libc::c_uint,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as std::os::fd::RawFd))
    }
}

/// `mount_setattr` on the mount `fd` is (not its submounts).
fn set_mount_attr(fd: &OwnedFd, attr: &MountAttr) -> std::io::Result<()> {
    // SAFETY: a raw system call on our descriptor and a local value of
    // the kernel's layout, passed with its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `mkdirat(dir, path, 0755)` (an existing directory is `AlreadyExists`).
fn mkdir_at(dir: &OwnedFd, path: &Path) -> std::io::Result<()> {
    let path = cstr(path).map_err(std::io::Error::other)?;
    // SAFETY: a raw system call on our descriptor and a NUL-terminated
    // string.
    let r = unsafe { libc::mkdirat(dir.as_raw_fd(), path.as_ptr(), 0o755) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(())
}

/// Receives one descriptor (`SCM_RIGHTS`) on `sock`; a message without
/// one (the sender had none to give) or the end of the socket is
/// `ECANCELED`. Raw calls on local buffers: no allocation (PID 1).
fn receive_fd(sock: std::os::fd::RawFd) -> std::io::Result<std::os::fd::RawFd> {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // CMSG_SPACE(sizeof(int)), aligned as a cmsghdr.
    let mut space = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; every pointer set below is to a
    // local that outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    let n = loop {
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the control buffer the kernel filled, read within the
    // lengths it reported.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if n == 0
            || c.is_null()
            || (*c).cmsg_level != libc::SOL_SOCKET
            || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(std::io::Error::from_raw_os_error(libc::ECANCELED));
        }
        Ok(std::ptr::read_unaligned(
            libc::CMSG_DATA(c).cast::<libc::c_int>(),
        ))
    }
}

/// Whether this process may make device nodes (`CAP_MKNOD` in its
/// effective set: a service unit may leave it out, and then the job's
/// devices are bind mounts as in a user namespace).
fn may_mknod() -> bool {
    has_capability(CAP_MKNOD)
}

/// `CAP_MKNOD` (linux/capability.h).
const CAP_MKNOD: u32 = 27;
/// `CAP_SYS_CHROOT` (linux/capability.h).
pub(super) const CAP_SYS_CHROOT: u32 = 18;

/// Whether capability number `cap` is in this process's effective set
/// (read once).
pub(super) fn has_capability(cap: u32) -> bool {
    static EFFECTIVE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let caps = *EFFECTIVE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| cap_eff(&s))
            .unwrap_or(0)
    });
    caps & (1 << cap) != 0
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The mount of `/proc` (of the mounting process's PID namespace) at `dst`.
fn proc_mount(dst: CString) -> Op {
    Op::Mount {
        src: Some(c"proc".to_owned()),
        dst,
        fstype: Some(c"proc".to_owned()),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    }
}

/// `ip link set lo up` with two ioctls.
pub(super) fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a zeroed ifreq is valid; the ioctls get a pointer to it and
    // the socket is closed on every path.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(s);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_capabilities_are_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(
            cap_eff("CapEff:\t00000000a80425fb\n").map(|c| c & (1 << CAP_MKNOD) != 0),
            Some(true)
        );
        assert_eq!(
            cap_eff("CapEff:\t0000000000000000\n").map(|c| c & (1 << CAP_MKNOD) != 0),
            Some(false)
        );
        assert_eq!(cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn lo_is_brought_up_only_in_a_network_namespace_the_clone_makes() {
        let spec = |own_netns, join: Vec<(i32, libc::c_int)>| RootSpec {
            mount_point: "/state/sandbox-root".into(),
            writable: vec![],
            read_only: vec![],
            tty: false,
            user_namespace: false,
            own_netns,
            join,
        };
        let brings_lo_up = |plan: MountPlan| plan.ops.iter().any(|o| matches!(o, Op::LoopbackUp));
        let spare = vec![(7, libc::CLONE_NEWNET), (8, libc::CLONE_NEWIPC)];
        for (own, join, want) in [
            (true, vec![], true),
            (true, vec![(8, libc::CLONE_NEWIPC)], true),
            (true, spare.clone(), false),
            (false, vec![], false),
        ] {
            let s = spec(own, join);
            // A whole plan, and PID 1's entry into a root built ahead (the
            // case a job that came before its spare namespaces was in).
            assert_eq!(brings_lo_up(MountPlan::new(&s).unwrap()), want, "{s:?}");
            assert_eq!(brings_lo_up(MountPlan::enter(&s, 9)), want, "{s:?}");
        }
    }

    #[test]
    fn a_spare_root_gets_the_job_directory_before_proc() {
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let root = ClaimedRoot {
            mntns: fd(),
            tree: fd(),
            dst: c"/state/jobs/7".to_owned(),
            _tmpfs: fd(),
        };
        let spec = RootSpec {
            mount_point: "/state/sandbox-root".into(),
            writable: vec!["/state/jobs/7".into()],
            read_only: vec![],
            tty: false,
            user_namespace: false,
            own_netns: true,
            join: vec![(7, libc::CLONE_NEWNET), (8, libc::CLONE_NEWIPC)],
        };
        let steps: Vec<String> = MountPlan::enter_spare(&spec, &root)
            .ops
            .iter()
            .map(|o| match o {
                Op::Join(_, ns) if *ns == libc::CLONE_NEWNS => "join mnt".to_owned(),
                Op::Join(..) => "join".to_owned(),
                Op::MoveMount { dst, .. } => format!("move {}", dst.to_string_lossy()),
                Op::Mount { dst, .. } => format!("mount {}", dst.to_string_lossy()),
                o => format!("{o:?}"),
            })
            .collect();
        assert_eq!(
            steps,
            [
                "join",
                "join",
                "join mnt",
                "move /state/jobs/7",
                "mount /proc"
            ]
        );
    }

    #[test]
    fn the_plan_binds_only_what_the_job_needs() {
        let spec = RootSpec {
            mount_point: "/state/sandbox-root".into(),
            writable: vec!["/state/jobs/7".into()],
            read_only: vec!["/state/cache".into()],
            tty: false,
            user_namespace: false,
            own_netns: true,
            join: vec![],
        };
        let plan = MountPlan::new(&spec).unwrap();
        let binds: Vec<String> = plan
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Mount {
                    src: Some(s),
                    dst,
                    flags,
                    ..
                } if flags & libc::MS_BIND != 0 => Some(format!(
                    "{} -> {}",
                    s.to_string_lossy(),
                    dst.to_string_lossy()
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds[0],
            "/state/jobs/7 -> /state/sandbox-root/state/jobs/7"
        );
        assert_eq!(binds[1], "/state/cache -> /state/sandbox-root/state/cache");
        assert_eq!(binds[2], "/sys -> /state/sandbox-root/sys");
        assert!(binds.iter().all(|b| !b.contains("/dev/pts")));
        // The cache is remounted read-only, the job directory is not.
        let ro: Vec<String> = plan
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Mount {
                    src: None,
                    dst,
                    flags,
                    ..
                } if flags & libc::MS_REMOUNT != 0 && flags & libc::MS_RDONLY != 0 => {
                    Some(dst.to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            ro,
            [
                "/state/sandbox-root/state/cache",
                "/state/sandbox-root/sys",
                "/"
            ]
        );
    }
}
