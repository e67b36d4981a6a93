//! Filling the node cache from the home with `Read` requests.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dscp_dicp::msg::fs::{Request, Response};
use dscp_dicp::msg::job::FileStamp;
use dscp_dicp::msg::Blob;
use nix::errno::Errno;

use super::FsClient;
use crate::cache::{Cache, CacheError, FileIdentity};

/// Bytes asked per `Read` (the home caps replies at 16 MiB).
pub(crate) const READ_CHUNK: u32 = 4 << 20;

/// The cache identity of a central stamp.
pub fn identity_of(s: &FileStamp) -> FileIdentity {
    FileIdentity {
        size: s.size,
        mtime_ns: s.mtime_ns,
        ctime_ns: s.ctime_ns,
        ino: s.ino,
        dev: s.dev,
    }
}

/// A file's content pulled from the home chunk by chunk.
struct HomeReader<'a> {
    client: &'a dyn FsClient,
    path: &'a [u8],
    stamp: FileStamp,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for HomeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.offset >= self.stamp.size {
                return Ok(0);
            }
            let want = (self.stamp.size - self.offset).min(u64::from(READ_CHUNK)) as u32;
            let req = Request::Read {
                path: Blob(self.path.to_vec()),
                stamp: self.stamp,
                offset: self.offset,
                len: want,
            };
            match self.client.call(req) {
                Ok(Response::Data(d)) => {
                    if d.is_empty() {
                        // Shorter than its stamp: changed under us.
                        return Err(std::io::Error::from_raw_os_error(libc::ESTALE));
                    }
                    self.offset += d.len() as u64;
                    self.buf = d.0;
                    self.pos = 0;
                }
                Ok(Response::Errno(e)) => return Err(std::io::Error::from_raw_os_error(e)),
                Ok(other) => {
                    log::warn!("Read answered with {other:?}");
                    return Err(std::io::Error::from_raw_os_error(libc::EIO));
                }
                Err(why) => {
                    log::warn!("Read failed: {why}");
                    return Err(std::io::Error::from_raw_os_error(libc::EIO));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The cache object holding central `path` at `stamp`, fetched with
/// `Read` requests when missing. `ESTALE`: the file changed meanwhile.
pub(crate) fn object(
    client: &dyn FsClient,
    cache: &Cache,
    path: &[u8],
    stamp: &FileStamp,
) -> Result<PathBuf, Errno> {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    let id = identity_of(stamp);
    if let Some(obj) = cache.lookup(p, &id) {
        return Ok(obj.path);
    }
    let reader = HomeReader {
        client,
        path,
        stamp: *stamp,
        offset: 0,
        buf: Vec::new(),
        pos: 0,
    };
    match cache.insert(p, &id, None, reader) {
        Ok(obj) => Ok(obj.path),
        Err(CacheError::Io { source, op, path }) => {
            let e = source.raw_os_error().unwrap_or(libc::EIO);
            if op != "read content for" {
                log::warn!("cache: {op} {}: {source}", path.display());
            }
            Err(Errno::from_raw(e))
        }
        Err(CacheError::SizeMismatch { .. }) => Err(Errno::ESTALE),
        Err(e) => {
            log::warn!("cache: {e}");
            Err(Errno::EIO)
        }
    }
}
