//! Extended attributes of central files (`getxattr`, `setxattr`,
//! `listxattr`, `removexattr`, their `l*` and `f*` forms): forwarded to the
//! home, which runs them on central as the caller, so `user.*` attributes
//! are central's and `security.*`/`trusted.*` answer central's errors.
//! A path or descriptor that is the node's own runs natively.

use dscp_dicp::msg::fs::{Request, Response};
use dscp_dicp::msg::Blob;
use nix::errno::Errno;
use tracer::{Action, SyscallStop, TraceeMemory};

use super::calls::done;
use super::meta::{file_type, Known};
use super::FsLayer;

/// The kernel's largest value (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: u64 = 65536;

/// Whether `name` is one the kernel looks up (a known namespace, a
/// non-empty rest, at most 255 bytes): for others central answers
/// `EOPNOTSUPP` or `ERANGE`, so they are always asked.
fn valid_name(name: &[u8]) -> bool {
    name.len() <= 255
        && ["user.", "trusted.", "security.", "system."]
            .iter()
            .any(|ns| name.len() > ns.len() && name.starts_with(ns.as_bytes()))
}

/// What an xattr call names: a path (following a final symlink or not),
/// or a descriptor (argument 0 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    /// `*xattr`: a path, followed.
    Path,
    /// `l*xattr`: a path, not followed.
    Link,
    /// `f*xattr`: a descriptor.
    Fd,
}

impl FsLayer {
    /// The central path argument 0 names, or how the call ends
    /// (natively, or with an errno).
    fn xattr_target(&self, stop: &mut SyscallStop<'_>, on: On) -> Result<Vec<u8>, Action> {
        if on == On::Fd {
            return self
                .fd_central(stop.tid(), stop.arg(0) as i32)
                .ok_or(Action::Continue);
        }
        match self.central_arg(stop, libc::AT_FDCWD, 0) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(Action::Continue),
            Err(e) => Err(Action::errno(e)),
        }
    }

    /// The attribute name (argument 1).
    fn xattr_name(stop: &SyscallStop<'_>) -> Result<Blob, Action> {
        stop.read_path_arg(1)
            .map(Blob)
            .map_err(|_| Action::errno(Errno::EFAULT))
    }

    /// Whether a fresh directory listing says central `path` has no
    /// extended attributes (for a symlink followed: unknown).
    fn known_bare(&self, path: &[u8], on: On) -> bool {
        match self.meta.known(path) {
            Known::Entry(m) => {
                m.no_xattrs && (on != On::Path || file_type(m.stat.mode) != libc::S_IFLNK)
            }
            _ => false,
        }
    }

    /// `getxattr(target, name, value, size)`. What `ls -l` asks of every
    /// file (ACLs, security labels) is answered `ENODATA` from a fresh
    /// listing that found no attributes on it, without a round trip.
    pub(crate) fn getxattr(&mut self, stop: &mut SyscallStop<'_>, on: On) -> Action {
        let (path, name) = match (self.xattr_target(stop, on), Self::xattr_name(stop)) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(a), _) | (_, Err(a)) => return a,
        };
        if valid_name(&name) && self.known_bare(&path, on) {
            return Action::errno(Errno::ENODATA);
        }
        let r = self.ask(Request::GetXattr {
            path: Blob(path),
            name,
            follow: on != On::Link,
        });
        Self::answer_bytes(stop, r, stop.arg(2), stop.arg(3))
    }

    /// `listxattr(target, list, size)`.
    pub(crate) fn listxattr(&mut self, stop: &mut SyscallStop<'_>, on: On) -> Action {
        let path = match self.xattr_target(stop, on) {
            Ok(p) => p,
            Err(a) => return a,
        };
        if self.known_bare(&path, on) {
            return Action::Return(0); // an empty list
        }
        let r = self.ask(Request::ListXattr {
            path: Blob(path),
            follow: on != On::Link,
        });
        Self::answer_bytes(stop, r, stop.arg(1), stop.arg(2))
    }

    /// `setxattr(target, name, value, size, flags)`.
    pub(crate) fn setxattr(&mut self, stop: &mut SyscallStop<'_>, on: On) -> Action {
        let (path, name) = match (self.xattr_target(stop, on), Self::xattr_name(stop)) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(a), _) | (_, Err(a)) => return a,
        };
        let size = stop.arg(3);
        if size > XATTR_SIZE_MAX {
            return Action::errno(Errno::E2BIG);
        }
        let value = if size == 0 {
            Vec::new()
        } else {
            match stop.memory().read_bytes(stop.arg(2), size as usize) {
                Ok(v) => v,
                Err(_) => return Action::errno(Errno::EFAULT),
            }
        };
        let r = self.ask(Request::SetXattr {
            path: Blob(path.clone()),
            name,
            value: Blob(value),
            flags: stop.arg(4) as i32,
            follow: on != On::Link,
        });
        self.meta.invalidate(&path, false); // its ctime moved
        done(r.map(drop))
    }

    /// `removexattr(target, name)`.
    pub(crate) fn removexattr(&mut self, stop: &mut SyscallStop<'_>, on: On) -> Action {
        let (path, name) = match (self.xattr_target(stop, on), Self::xattr_name(stop)) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(a), _) | (_, Err(a)) => return a,
        };
        let r = self.ask(Request::RemoveXattr {
            path: Blob(path.clone()),
            name,
            follow: on != On::Link,
        });
        self.meta.invalidate(&path, false);
        done(r.map(drop))
    }

    /// A value or name list into the caller's buffer of `size` bytes at
    /// `buf`, as the kernel answers: its length for a size of 0, `ERANGE`
    /// when it does not fit.
    fn answer_bytes(
        stop: &SyscallStop<'_>,
        r: Result<Response, Errno>,
        buf: u64,
        size: u64,
    ) -> Action {
        let v = match r {
            Ok(Response::Data(v)) => v.0,
            Ok(_) => return Action::errno(Errno::EIO),
            Err(e) => return Action::errno(e),
        };
        if size == 0 {
            return Action::Return(v.len() as i64);
        }
        if (v.len() as u64) > size {
            return Action::errno(Errno::ERANGE);
        }
        match stop.memory().write_all(buf, &v) {
            Ok(()) => Action::Return(v.len() as i64),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }
}
