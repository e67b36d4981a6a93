//! Extended attributes of central files, as the caller: `user.*` works
//! where central's file system has it; `security.*`, `trusted.*` and
//! `system.*` answer what central's kernel answers the caller.

use super::sys::{self, SysResult};

/// The kernel's largest attribute value and name list (`XATTR_SIZE_MAX`,
/// `XATTR_LIST_MAX`).
pub const XATTR_MAX: usize = 65536;

/// Reads a variable-sized answer: `call(buf)` returns the length or -1;
/// with an empty buffer, the size needed. Retries when the value grew
/// between the two calls (`ERANGE`).
fn sized(mut call: impl FnMut(&mut [u8]) -> isize) -> SysResult<Vec<u8>> {
    for _ in 0..4 {
        let need = call(&mut []);
        if need < 0 {
            return Err(sys::errno());
        }
        let mut buf = vec![0u8; (need as usize).min(XATTR_MAX)];
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        if sys::errno() != libc::ERANGE {
            return Err(sys::errno());
        }
    }
    Err(libc::ERANGE)
}

/// Whether entry `name` of directory `dir` (an absolute path) has no
/// extended attribute the caller can see (`llistxattr` answers 0); false
/// when it has some or the call fails (no support, gone, not searchable).
pub fn none_at(dir: &std::ffi::CStr, name: &[u8]) -> bool {
    let mut path = dir.to_bytes().to_vec();
    if path.last() != Some(&b'/') {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    let Ok(p) = sys::c_bytes(&path) else {
        return false;
    };
    // SAFETY: p is NUL-terminated; a null buffer of size 0 asks the size.
    unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) == 0 }
}

/// `getxattr` / `lgetxattr`: the whole value.
pub fn get(path: &[u8], name: &[u8], follow: bool) -> SysResult<Vec<u8>> {
    let (p, n) = (sys::abs_path(path)?, sys::c_bytes(name)?);
    let f = if follow {
        libc::getxattr
    } else {
        libc::lgetxattr
    };
    // SAFETY: both strings are NUL-terminated; buf is writable for its length.
    sized(|buf| unsafe { f(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `listxattr` / `llistxattr`: the NUL-separated names.
pub fn list(path: &[u8], follow: bool) -> SysResult<Vec<u8>> {
    let p = sys::abs_path(path)?;
    let f = if follow {
        libc::listxattr
    } else {
        libc::llistxattr
    };
    // SAFETY: p is NUL-terminated; buf is writable for its length.
    sized(|buf| unsafe { f(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `setxattr` / `lsetxattr`.
pub fn set(path: &[u8], name: &[u8], value: &[u8], flags: i32, follow: bool) -> SysResult<()> {
    let (p, n) = (sys::abs_path(path)?, sys::c_bytes(name)?);
    let f = if follow {
        libc::setxattr
    } else {
        libc::lsetxattr
    };
    // SAFETY: both strings are NUL-terminated; value is readable.
    sys::check(|| unsafe {
        f(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

/// `removexattr` / `lremovexattr`.
pub fn remove(path: &[u8], name: &[u8], follow: bool) -> SysResult<()> {
    let (p, n) = (sys::abs_path(path)?, sys::c_bytes(name)?);
    let f = if follow {
        libc::removexattr
    } else {
        libc::lremovexattr
    };
    // SAFETY: both strings are NUL-terminated.
    sys::check(|| unsafe { f(p.as_ptr(), n.as_ptr()) })
}
