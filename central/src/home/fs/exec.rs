//! `Exec`: what the node needs to run `execve(path, argv, envp)` of a
//! central program, as the kernel and the loader on central would run it,
//! or the errno `execve` would give.
//!
//! The kernel's own checks come first, with the kernel's errno: the path
//! lookup (`ENOENT`, `ENOTDIR`, `ELOOP`, `ENAMETOOLONG`, `EACCES` for a
//! directory that may not be searched), then a file that is not regular
//! (`EACCES`, also for a directory), then execute permission for the
//! caller (`EACCES`, including a `noexec` mount), then the magic: neither
//! `#!` nor ELF is `ENOEXEC` (the shell fallback of [`exec_closure`] is
//! what `execvp` and shells do *after* `execve` failed, so the program's
//! own libc does it on the node). Then [`exec_closure`] follows `#!`,
//! `PT_INTERP` and the libraries; its errors map to `ENOENT` (a missing
//! interpreter), `EACCES`, `ENOEXEC` (bad `#!` line, not an ELF of this
//! machine), `ELOOP` (too many nested scripts).
//!
//! Deviations, because the home must *read* what it ships and cannot run
//! the loader: a program the caller may execute but not read (mode
//! `--x`) is `EACCES` (the kernel would run an ELF); a library that is
//! missing is `ENOENT` and a malformed one `ELIBBAD` from `execve`, where
//! natively `execve` succeeds and the loader exits 127 with a message (the
//! shell's exit status is 127 either way; the reason is logged here). A
//! relative `#!` interpreter or `LD_LIBRARY_PATH` entry resolves against
//! the home's cwd (the caller's cwd at `diatom exec`), not the job's
//! current one, which the request does not carry.
//!
//! [`exec_closure`]: crate::home::closure::Resolver::exec_closure

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use dscp_dicp::msg::fs::Response;
use dscp_dicp::msg::job::ExecImage;
use dscp_dicp::msg::Blob;

use super::sys::{self, SysResult};
use crate::home::closure::{ClosureError, Resolver};
use crate::home::session::exec_image;

/// The image for `execve(path, argv, envp)`, or its errno.
pub fn exec(resolver: &Resolver, path: &[u8], argv: &[Blob], envp: &[Blob]) -> Response {
    match image(resolver, path, argv, envp) {
        Ok(img) => Response::Exec(Box::new(img)),
        Err(e) => Response::Errno(e),
    }
}

fn image(resolver: &Resolver, path: &[u8], argv: &[Blob], envp: &[Blob]) -> SysResult<ExecImage> {
    let cpath = sys::abs_path(path)?;
    kernel_checks(&cpath)?;
    let argv: Vec<OsString> = argv
        .iter()
        .map(|a| OsString::from_vec(a.0.clone()))
        .collect();
    let env: Vec<(OsString, OsString)> = envp.iter().map(|kv| split_env(kv)).collect();
    let program = Path::new(OsStr::from_bytes(path));
    let plan = resolver.exec_closure(program, &argv, &env).map_err(|e| {
        log::info!("exec {}: {e}", program.display());
        closure_errno(&e)
    })?;
    exec_image(&plan).map_err(|(p, e)| {
        log::info!("exec {}: {}: {e}", program.display(), p.display());
        e.raw_os_error().unwrap_or(libc::EIO)
    })
}

/// What `execve` checks before it looks at the content beyond the magic.
fn kernel_checks(path: &std::ffi::CStr) -> SysResult<()> {
    let st = sys::stat_at(libc::AT_FDCWD, path, 0)?;
    if st.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EACCES);
    }
    // The effective ids decide, as for execve; faccessat also refuses X_OK
    // on a noexec mount.
    // SAFETY: path is NUL-terminated.
    sys::check(|| unsafe {
        libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS)
    })?;
    // The magic. Unreadable: the closure answers (EACCES: central must read
    // what it ships).
    let Ok(fd) = sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY, 0) else {
        return Ok(());
    };
    let head = sys::pread_full(&fd, 0, 4)?;
    if head.starts_with(b"#!") || head.starts_with(b"\x7fELF") {
        Ok(())
    } else {
        Err(libc::ENOEXEC)
    }
}

/// `KEY=VALUE` (an entry without `=` is a key with an empty value).
fn split_env(kv: &[u8]) -> (OsString, OsString) {
    match kv.iter().position(|&c| c == b'=') {
        Some(eq) => (
            OsString::from_vec(kv[..eq].to_vec()),
            OsString::from_vec(kv[eq + 1..].to_vec()),
        ),
        None => (OsString::from_vec(kv.to_vec()), OsString::new()),
    }
}

/// The errno `execve` gives for a closure failure (see the module docs).
fn closure_errno(e: &ClosureError) -> i32 {
    match e {
        ClosureError::NotFound(_) => libc::ENOENT,
        ClosureError::PermissionDenied(_) | ClosureError::IsADirectory(_) => libc::EACCES,
        ClosureError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        ClosureError::BadShebang { .. } | ClosureError::BadExecutable { .. } => libc::ENOEXEC,
        ClosureError::TooManyInterpreters(_) => libc::ELOOP,
        ClosureError::LibraryNotFound { .. } => libc::ENOENT,
        ClosureError::BadLibrary { .. } => libc::ELIBBAD,
        ClosureError::BadLdCache { .. } => libc::EIO,
    }
}
