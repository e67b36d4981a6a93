//! Private mount namespaces for processes a test starts: a node that must
//! not see central's files gets an empty tmpfs over them, and a bare node
//! gets an empty root with only what is bind-mounted in
//! ([`MountView::bare`]). Done in the forked child
//! (`unshare(CLONE_NEWNS)`, then mounts) rather than by wrapping the
//! command in `unshare -m sh -c ...`, so no shell quoting is involved and
//! the child's pid is the program's.
//!
//! Mounts are made private first, so nothing done inside leaks back to the
//! test's own mount namespace.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a process's view of the file system differs from the test's: steps
/// applied in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountView {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Hide(PathBuf),
    Bind(PathBuf, PathBuf),
    Bare { root: PathBuf, keep: Vec<PathBuf> },
}

/// A step with its paths as C strings, built before fork.
enum RawStep {
    Hide(CString),
    Bind(CString, CString),
    Bare(RawBare),
}

/// A [`MountView::bare`] step, everything computed before fork.
struct RawBare {
    /// Where the new root's tmpfs is mounted before `pivot_root`.
    root: CString,
    /// Directories to make under `root`, parents first.
    dirs: Vec<CString>,
    /// Empty files to make under `root` (mount points of kept files).
    files: Vec<CString>,
    /// `(source, target under root)` recursive binds, in order.
    binds: Vec<(CString, CString)>,
}

/// The special file systems a bare view keeps from the current one.
const KEEP_SPECIAL: [&str; 3] = ["/proc", "/sys", "/dev"];

impl MountView {
    /// A view identical to the test's (in a private mount namespace).
    pub fn new() -> MountView {
        MountView::default()
    }

    /// Covers the existing directory `path` with an empty tmpfs.
    pub fn hide(mut self, path: impl AsRef<Path>) -> MountView {
        self.steps.push(Step::Hide(path.as_ref().to_path_buf()));
        self
    }

    /// Bind-mounts `src` onto `dst`, creating `dst` (one level) when missing,
    /// e.g. inside a tmpfs laid by an earlier [`hide`](Self::hide). `src` is
    /// resolved when the step runs: it must not be under an earlier hide.
    pub fn bind(mut self, src: impl AsRef<Path>, dst: impl AsRef<Path>) -> MountView {
        self.steps.push(Step::Bind(
            src.as_ref().to_path_buf(),
            dst.as_ref().to_path_buf(),
        ));
        self
    }

    /// Replaces the whole file system by an empty tmpfs holding only
    /// `/proc`, `/sys`, `/dev` (bound from the current view) and the
    /// `keep` paths (absolute; files or directories, bound at their own
    /// paths, parents made as empty directories): a bare machine with
    /// nothing installed. The tmpfs is first mounted on `root`, an existing
    /// directory, which then becomes `/` (`pivot_root`); the old root is
    /// detached. Steps after this one see only the bare root. The process
    /// starts in `/`. The `keep` paths must exist when the command is
    /// built.
    pub fn bare<I, P>(mut self, root: impl AsRef<Path>, keep: I) -> MountView
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        self.steps.push(Step::Bare {
            root: root.as_ref().to_path_buf(),
            keep: keep.into_iter().map(|p| p.as_ref().to_path_buf()).collect(),
        });
        self
    }

    /// Makes `cmd` set up this view in its child before exec.
    pub(super) fn apply_to(&self, cmd: &mut Command) {
        // Everything the child needs is built here, before fork: the child
        // may only make system calls.
        let steps: Result<Vec<RawStep>, i32> = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Hide(p) => Ok(RawStep::Hide(cstr(p)?)),
                Step::Bind(src, dst) => Ok(RawStep::Bind(cstr(src)?, cstr(dst)?)),
                Step::Bare { root, keep } => Ok(RawStep::Bare(raw_bare(root, keep)?)),
            })
            .collect();
        let steps = match steps {
            Ok(s) => s,
            Err(errno) => {
                // A path with a NUL byte cannot be mounted, a kept path
                // that does not exist cannot be bound; fail in the child so
                // the error surfaces from spawn like any other.
                // SAFETY: the closure only builds an error value.
                unsafe {
                    cmd.pre_exec(move || Err(io::Error::from_raw_os_error(errno)));
                }
                return;
            }
        };
        // SAFETY: the closure runs between fork and exec and only makes
        // unshare, mkdir and mount system calls on strings allocated before
        // the fork.
        unsafe {
            cmd.pre_exec(move || setup(&steps));
        }
    }
}

fn cstr(p: &Path) -> Result<CString, i32> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
}

/// Plans a [`MountView::bare`] step: which directories and files to make
/// under `root` and what to bind there.
fn raw_bare(root: &Path, keep: &[PathBuf]) -> Result<RawBare, i32> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut files = Vec::new();
    let mut binds = Vec::new();
    let add_dirs = |target: &Path, dirs: &mut Vec<PathBuf>| {
        // Every ancestor below root, parents first.
        let mut chain: Vec<PathBuf> = target
            .ancestors()
            .take_while(|a| *a != root)
            .map(Path::to_path_buf)
            .collect();
        chain.reverse();
        for d in chain {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    };
    let sources = KEEP_SPECIAL
        .iter()
        .map(PathBuf::from)
        .chain(keep.iter().cloned());
    for src in sources {
        let rel = src.strip_prefix("/").map_err(|_| libc::EINVAL)?;
        if rel.as_os_str().is_empty() {
            return Err(libc::EINVAL);
        }
        let target = root.join(rel);
        let meta = std::fs::metadata(&src).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if meta.is_dir() {
            add_dirs(&target, &mut dirs);
        } else {
            if let Some(parent) = target.parent() {
                add_dirs(parent, &mut dirs);
            }
            files.push(cstr(&target)?);
        }
        binds.push((cstr(&src)?, cstr(&target)?));
    }
    Ok(RawBare {
        root: cstr(root)?,
        dirs: dirs.iter().map(|d| cstr(d)).collect::<Result<_, _>>()?,
        files,
        binds,
    })
}

/// Runs in the forked child: builds the bare root and pivots into it.
///
/// # Safety
/// System calls only, on strings allocated before the fork.
unsafe fn setup_bare(b: &RawBare) -> io::Result<()> {
    let tmpfs = c"tmpfs";
    let opts = c"mode=0755";
    let dot = c".";
    let slash = c"/";
    // SAFETY: system calls with valid NUL-terminated strings or null.
    unsafe {
        check(libc::mount(
            tmpfs.as_ptr(),
            b.root.as_ptr(),
            tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        ))?;
        for d in &b.dirs {
            if libc::mkdir(d.as_ptr(), 0o755) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
            {
                return Err(io::Error::last_os_error());
            }
        }
        for f in &b.files {
            let fd = libc::open(
                f.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::close(fd);
        }
        for (src, dst) in &b.binds {
            check(libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
        // pivot_root(".", "."): the old root ends up stacked on the new
        // one and is detached right away.
        check(libc::chdir(b.root.as_ptr()))?;
        let rc = libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr());
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(slash.as_ptr()))?;
    }
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs in the forked child: async-signal-safe system calls only.
fn setup(steps: &[RawStep]) -> io::Result<()> {
    let tmpfs = c"tmpfs";
    let opts = c"mode=0755";
    let root = c"/";
    // SAFETY: system calls with valid NUL-terminated strings or null.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for step in steps {
            match step {
                RawStep::Hide(p) => check(libc::mount(
                    tmpfs.as_ptr(),
                    p.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    opts.as_ptr().cast(),
                ))?,
                RawStep::Bind(src, dst) => {
                    if libc::mkdir(dst.as_ptr(), 0o755) != 0
                        && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                    {
                        return Err(io::Error::last_os_error());
                    }
                    check(libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                }
                RawStep::Bare(b) => setup_bare(b)?,
            }
        }
    }
    Ok(())
}
