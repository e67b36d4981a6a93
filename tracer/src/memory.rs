//! Tracee memory: the [`TraceeMemory`] trait (vectored read and write, C
//! strings, plain values) and its implementation [`ProcMemory`] for a traced
//! process.
//!
//! Reads and writes use `process_vm_readv`/`process_vm_writev` (one system
//! call, no ptrace stop needed), and fall back to `/proc/PID/mem` when those
//! fail: for pages the tracee mapped without the needed permission (the
//! tracer's read-only scratch pages, see `stop.rs`), or where the calls are
//! not available. `/proc/PID/mem` writes go through page protections
//! (`FOLL_FORCE`), like a debugger setting a breakpoint.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

/// Longest C string (path) read from a tracee, terminating NUL included.
pub const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Errors accessing tracee memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The address range is not mapped in the tracee (or not accessible even
    /// through `/proc/PID/mem`). The caller usually answers `EFAULT`.
    #[error("bad tracee address {addr:#x} (+{len} bytes)")]
    Fault {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: usize,
    },
    /// A C string had no NUL within the limit (the caller usually answers
    /// `ENAMETOOLONG`).
    #[error("string at {addr:#x} is longer than {limit} bytes")]
    TooLong {
        /// Start of the string.
        addr: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// The tracee is gone, or its memory could not be opened at all.
    #[error("tracee memory of {pid} is not accessible: {errno}")]
    Unavailable {
        /// The process.
        pid: Pid,
        /// Why.
        errno: Errno,
    },
}

impl MemoryError {
    /// The errno a system call would report for this failure.
    pub fn errno(&self) -> Errno {
        match self {
            MemoryError::Fault { .. } => Errno::EFAULT,
            MemoryError::TooLong { .. } => Errno::ENAMETOOLONG,
            MemoryError::Unavailable { errno, .. } => *errno,
        }
    }
}

/// Access to a stopped tracee's memory.
pub trait TraceeMemory {
    /// Reads the remote ranges `(addr, len)` into `bufs` (one buffer per
    /// range, same lengths). All or nothing.
    fn read_vectored(&self, ranges: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError>;

    /// Writes `(addr, data)` pairs. All or nothing as far as the kernel
    /// allows (a fault part-way leaves earlier ranges written).
    fn write_vectored(&self, ranges: &[(u64, &[u8])]) -> Result<(), MemoryError>;

    /// Reads exactly `buf.len()` bytes at `addr`.
    fn read_exact(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read_vectored(&mut [(addr, buf)])
    }

    /// Reads `len` bytes at `addr` into a new vector.
    fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
        let mut v = vec![0; len];
        self.read_exact(addr, &mut v)?;
        Ok(v)
    }

    /// Writes `data` at `addr`.
    fn write_all(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.write_vectored(&[(addr, data)])
    }

    /// Reads a plain value (`#[repr(C)]`, no pointers followed) at `addr`.
    ///
    /// `T` must be valid for any bit pattern (integers and structs of them).
    fn read_value<T: Copy + Default>(&self, addr: u64) -> Result<T, MemoryError>
    where
        Self: Sized,
    {
        let mut v = T::default();
        // SAFETY: T is Copy plain data valid for any bit pattern (documented
        // requirement); the slice covers exactly its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(&mut v as *mut T as *mut u8, std::mem::size_of::<T>())
        };
        self.read_exact(addr, bytes)?;
        Ok(v)
    }

    /// Writes a plain value at `addr`.
    fn write_value<T: Copy>(&self, addr: u64, v: &T) -> Result<(), MemoryError>
    where
        Self: Sized,
    {
        // SAFETY: reading the bytes of a Copy value.
        let bytes = unsafe {
            std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>())
        };
        self.write_all(addr, bytes)
    }

    /// Reads a NUL-terminated string of at most `limit` bytes (NUL included)
    /// and returns it without the NUL. Reads page by page, so a string that
    /// ends just before an unmapped page is read correctly.
    fn read_cstr(&self, addr: u64, limit: usize) -> Result<Vec<u8>, MemoryError> {
        let mut out = Vec::new();
        let mut at = addr;
        let mut chunk = [0u8; 4096];
        while out.len() < limit {
            let to_page_end = 4096 - (at % 4096) as usize;
            let n = to_page_end.min(limit - out.len());
            self.read_exact(at, &mut chunk[..n])?;
            if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..z]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            at += n as u64;
        }
        Err(MemoryError::TooLong { addr, limit })
    }

    /// Reads a path argument (a C string of at most `PATH_MAX` bytes).
    fn read_path(&self, addr: u64) -> Result<Vec<u8>, MemoryError> {
        self.read_cstr(addr, PATH_MAX)
    }
}

/// Memory of one traced process (an address space, shared by its threads).
/// Keeps `/proc/PID/mem` open once it was needed; must be replaced after the
/// process execs (the old file then refers to the old address space).
#[derive(Debug)]
pub struct ProcMemory {
    pid: Pid,
    mem: std::cell::OnceCell<File>,
}

impl ProcMemory {
    /// Memory of process (or thread) `pid`.
    pub fn new(pid: Pid) -> Self {
        ProcMemory {
            pid,
            mem: std::cell::OnceCell::new(),
        }
    }

    /// The process this memory belongs to.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn mem_file(&self) -> Result<&File, MemoryError> {
        if let Some(f) = self.mem.get() {
            return Ok(f);
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", self.pid))
            .map_err(|e| MemoryError::Unavailable {
                pid: self.pid,
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        Ok(self.mem.get_or_init(|| f))
    }

    fn fault(addr: u64, len: usize) -> MemoryError {
        MemoryError::Fault { addr, len }
    }

    /// Reads through `/proc/PID/mem`.
    pub fn read_via_proc(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let f = self.mem_file()?;
        f.read_exact_at(buf, addr)
            .map_err(|_| Self::fault(addr, buf.len()))
    }

    /// Writes through `/proc/PID/mem` (ignores page protection).
    pub fn write_via_proc(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let f = self.mem_file()?;
        f.write_all_at(data, addr)
            .map_err(|_| Self::fault(addr, data.len()))
    }
}

/// The remote side of a vectored transfer, and its total length.
fn remote_iovecs(ranges: impl Iterator<Item = (u64, usize)>) -> (Vec<RemoteIoVec>, usize) {
    let remote: Vec<RemoteIoVec> = ranges
        .map(|(base, len)| RemoteIoVec {
            base: base as usize,
            len,
        })
        .collect();
    let total = remote.iter().map(|r| r.len).sum();
    (remote, total)
}

impl TraceeMemory for ProcMemory {
    fn read_vectored(&self, ranges: &mut [(u64, &mut [u8])]) -> Result<(), MemoryError> {
        let (remote, total) = remote_iovecs(ranges.iter().map(|(a, b)| (*a, b.len())));
        if total == 0 {
            return Ok(());
        }
        let done = {
            let mut local: Vec<IoSliceMut<'_>> =
                ranges.iter_mut().map(|(_, b)| IoSliceMut::new(b)).collect();
            process_vm_readv(self.pid, &mut local, &remote)
        };
        if done == Ok(total) {
            return Ok(());
        }
        for (addr, buf) in ranges.iter_mut() {
            self.read_via_proc(*addr, buf)?;
        }
        Ok(())
    }

    fn write_vectored(&self, ranges: &[(u64, &[u8])]) -> Result<(), MemoryError> {
        let (remote, total) = remote_iovecs(ranges.iter().map(|(a, b)| (*a, b.len())));
        if total == 0 {
            return Ok(());
        }
        let local: Vec<IoSlice<'_>> = ranges.iter().map(|(_, b)| IoSlice::new(b)).collect();
        if process_vm_writev(self.pid, &local, &remote) == Ok(total) {
            return Ok(());
        }
        for (addr, data) in ranges {
            self.write_via_proc(*addr, data)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process stands in for a tracee: process_vm_* on oneself works.
    fn me() -> ProcMemory {
        ProcMemory::new(nix::unistd::getpid())
    }

    #[test]
    fn read_write_values_and_vectors() {
        let m = me();
        let src: u64 = 0x1122_3344_5566_7788;
        assert_eq!(m.read_value::<u64>(&src as *const u64 as u64).unwrap(), src);
        let mut dst = [0u8; 4];
        m.write_all(dst.as_mut_ptr() as u64, b"abcd").unwrap();
        assert_eq!(&dst, b"abcd");
        let (a, b) = (*b"hello", *b"world!");
        let (mut x, mut y) = ([0u8; 5], [0u8; 6]);
        m.read_vectored(&mut [(a.as_ptr() as u64, &mut x), (b.as_ptr() as u64, &mut y)])
            .unwrap();
        assert_eq!((&x, &y), (b"hello", b"world!"));
    }

    #[test]
    fn cstr_bounded_and_fault() {
        let m = me();
        let s = b"/etc/passwd\0junk";
        assert_eq!(m.read_cstr(s.as_ptr() as u64, 100).unwrap(), b"/etc/passwd");
        let long = vec![b'a'; 10000];
        assert!(matches!(
            m.read_cstr(long.as_ptr() as u64, 5000),
            Err(MemoryError::TooLong { limit: 5000, .. })
        ));
        let e = m.read_bytes(8, 8).unwrap_err();
        assert_eq!(e.errno(), Errno::EFAULT);
    }

    #[test]
    fn cstr_ending_at_page_end_before_unmapped_page() {
        // Map two pages, unmap the second, put a string ending at the first's end.
        // SAFETY: plain anonymous mappings managed locally.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
            libc::munmap(p.add(4096) as *mut libc::c_void, 4096);
            let s = p.add(4096 - 4);
            std::ptr::copy_nonoverlapping(c"abc".as_ptr().cast::<u8>(), s, 4);
            assert_eq!(me().read_cstr(s as u64, 4096).unwrap(), b"abc");
            libc::munmap(p as *mut libc::c_void, 4096);
        }
    }

    #[test]
    fn write_to_read_only_page_falls_back_to_proc_mem() {
        // SAFETY: local anonymous mapping.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
            me().write_all(p as u64, b"xyz").unwrap();
            assert_eq!(std::slice::from_raw_parts(p, 3), b"xyz");
            libc::munmap(p as *mut libc::c_void, 4096);
        }
    }
}
