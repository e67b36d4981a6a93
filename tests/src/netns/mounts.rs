//! Private mount namespaces for processes a test starts: a node that must
//! not see central's files gets an empty tmpfs over them, and later a bare
//! node gets only what is bind-mounted in. Done in the forked child
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
}

/// A step with its paths as C strings, built before fork.
enum RawStep {
    Hide(CString),
    Bind(CString, CString),
}

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

    /// Makes `cmd` set up this view in its child before exec.
    pub(super) fn apply_to(&self, cmd: &mut Command) {
        // Everything the child needs is built here, before fork: the child
        // may only make system calls.
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        let steps: Option<Vec<RawStep>> = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Hide(p) => Some(RawStep::Hide(c(p)?)),
                Step::Bind(src, dst) => Some(RawStep::Bind(c(src)?, c(dst)?)),
            })
            .collect();
        let Some(steps) = steps else {
            // A path with a NUL byte cannot be mounted; fail in the child so
            // the error surfaces from spawn like any other.
            // SAFETY: the closure only builds an error value.
            unsafe {
                cmd.pre_exec(|| Err(io::Error::from_raw_os_error(libc::EINVAL)));
            }
            return;
        };
        // SAFETY: the closure runs between fork and exec and only makes
        // unshare, mkdir and mount system calls on strings allocated before
        // the fork.
        unsafe {
            cmd.pre_exec(move || setup(&steps));
        }
    }
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
            }
        }
    }
    Ok(())
}
