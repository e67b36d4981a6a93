//! Filling the node cache from the home with `Read` requests, several in
//! flight, each answer written into a streaming cache object
//! ([`PartialObject`]) at its offset.

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dscp_dicp::msg::fs::{Request, Response};
use dscp_dicp::msg::job::FileStamp;
use dscp_dicp::msg::Blob;
use nix::errno::Errno;

use super::{FsClient, PendingRead, ReadAnswer};
use crate::cache::{Cache, CacheError, FileIdentity, PartialObject, RangeSink};

/// Bytes asked per `Read` (the home caps replies at 16 MiB).
pub(crate) const READ_CHUNK: u32 = 8 << 20;

/// `Read`s in flight at once.
pub(crate) const WINDOW: usize = 6;

/// How long a reader waits for bytes of a transfer that is still going
/// (a transfer that fails says so at once).
pub(crate) const STREAM_WAIT: Duration = Duration::from_secs(600);

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

fn cache_errno(e: CacheError) -> Errno {
    match e {
        CacheError::Io { source, op, path } => {
            log::warn!("cache: {op} {}: {source}", path.display());
            Errno::from_raw(source.raw_os_error().unwrap_or(libc::EIO))
        }
        CacheError::SizeMismatch { .. } => Errno::ESTALE,
        e => {
            log::warn!("cache: {e}");
            Errno::EIO
        }
    }
}

fn read_req(path: &[u8], stamp: &FileStamp, offset: u64, len: u32) -> Request {
    Request::Read {
        path: Blob(path.to_vec()),
        stamp: *stamp,
        offset,
        len,
    }
}

/// Fetches all of central `path` at `stamp` into `part`, with up to
/// [`WINDOW`] `Read`s in flight, each answer written from the message it
/// arrived in or, for a large object, copied into the object as each
/// datagram is opened (a sink, see [`PartialObject::sink`]); how many
/// `Read`s were answered into sinks. `ESTALE`: the file changed meanwhile.
pub(crate) fn fill(
    client: &dyn FsClient,
    part: &PartialObject,
    path: &[u8],
    stamp: &FileStamp,
) -> Result<u32, Errno> {
    if stamp.size < POPULATE_MIN {
        return fill_from(client, part, path, stamp, None);
    }
    // The new page cache of a large object is most of a fetch's cost on
    // the node (BENCHMARKS.md, "Files"): a second thread populates each
    // range ahead of the `Read` asking for it, so the bytes arriving are
    // copied into present pages (and, mapped, may be copied there as
    // they arrive).
    let sinks = part.map_for_sinks();
    let (tx, rx) = crossbeam_channel::unbounded::<(u64, u32)>();
    std::thread::scope(|s| {
        let populating = std::thread::Builder::new()
            .name("diatom-populate".into())
            .spawn_scoped(s, move || {
                for (off, len) in rx {
                    part.populate(off, len as usize);
                }
            });
        let ahead = populating.is_ok().then_some(Ahead { tx, sinks, next: 0 });
        fill_from(client, part, path, stamp, ahead)
    })
}

/// Objects at least this large have their page cache populated ahead.
const POPULATE_MIN: u64 = 64 << 20;

/// `Read`s' ranges populated ahead of the one being asked for.
const POPULATE_AHEAD: u64 = 12;

/// The populating thread's queue and how far it was fed.
struct Ahead {
    tx: crossbeam_channel::Sender<(u64, u32)>,
    /// The object is mapped for sinks.
    sinks: bool,
    /// Bytes `0..next` were handed to the populating thread.
    next: u64,
}

impl Ahead {
    /// Hands the populating thread the ranges up to `end`, in
    /// [`READ_CHUNK`] steps.
    fn feed(&mut self, end: u64) {
        while self.next < end {
            let len = (end - self.next).min(u64::from(READ_CHUNK)) as u32;
            let _ = self.tx.send((self.next, len));
            self.next += u64::from(len);
        }
    }
}

/// A cache object's range as a protocol sink.
pub(crate) struct SinkTarget(pub RangeSink);

impl dscp_dicp::SinkTarget for SinkTarget {
    fn write(&mut self, at: u64, data: &[u8]) {
        self.0.write(at, data);
    }
}

fn fill_from(
    client: &dyn FsClient,
    part: &PartialObject,
    path: &[u8],
    stamp: &FileStamp,
    mut ahead: Option<Ahead>,
) -> Result<u32, Errno> {
    let size = stamp.size;
    let mut next = 0u64;
    let mut queue: VecDeque<(u64, u32, PendingRead<'_>)> = VecDeque::new();
    // `Read`s answered into a sink, and all of them (for the log).
    let (mut sunk, mut reads) = (0u32, 0u32);
    loop {
        while queue.len() < WINDOW && next < size {
            let len = (size - next).min(u64::from(READ_CHUNK)) as u32;
            let req = read_req(path, stamp, next, len);
            let mut sink = None;
            if let Some(a) = &mut ahead {
                let end = next + u64::from(len);
                a.feed(size.min(end + POPULATE_AHEAD * u64::from(READ_CHUNK)));
                // A range not populated yet goes without a sink, as
                // before sinks: its first touch of the new page cache is
                // then made by the `pwrite` beside the populating thread
                // (waiting for that thread instead made it the only one
                // paying for new pages, slower when they cost most).
                if a.sinks {
                    sink = part.sink(next, u64::from(len));
                }
            }
            reads += 1;
            let read = match sink {
                Some(sink) => client.start_read_into(req, len, sink),
                None => client.start_read(req),
            };
            queue.push_back((next, len, read));
            next += u64::from(len);
        }
        let Some((mut off, mut len, pending)) = queue.pop_front() else {
            if ahead.is_some() {
                log::debug!("fetched {size} bytes: {sunk} of {reads} Reads into sinks");
            }
            return Ok(sunk);
        };
        let mut answer = pending();
        loop {
            let data = match &answer {
                Ok(ReadAnswer::Sunk) => {
                    part.commit_sunk(off, u64::from(len)).map_err(cache_errno)?;
                    sunk += 1;
                    break;
                }
                Ok(a @ ReadAnswer::Data { .. }) => a.data().unwrap_or_default(),
                Ok(ReadAnswer::Other(Response::Errno(e))) => return Err(Errno::from_raw(*e)),
                Ok(ReadAnswer::Other(other)) => {
                    log::warn!("Read answered with {other:?}");
                    return Err(Errno::EIO);
                }
                Err(why) => {
                    log::warn!("Read failed: {why}");
                    return Err(Errno::EIO);
                }
            };
            if data.is_empty() {
                // Shorter than its stamp: changed under us.
                return Err(Errno::ESTALE);
            }
            let n = data.len().min(len as usize);
            part.write_at(off, &data[..n]).map_err(cache_errno)?;
            if let Ok(a) = answer {
                client.recycle(a);
            }
            if n == len as usize {
                break;
            }
            // A short answer: ask for the rest of this range.
            off += n as u64;
            len -= n as u32;
            answer = client.start_read(read_req(path, stamp, off, len))();
        }
    }
}

/// The cache object holding central `path` at `stamp`, fetched with
/// `Read` requests when missing (or waited for when another open is
/// fetching it). `ESTALE`: the file changed meanwhile.
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
    if let Some(part) = cache.in_progress(p, &id) {
        if let Some(obj) = part.wait_finished(STREAM_WAIT) {
            return Ok(obj);
        }
    }
    let part = cache.begin(p, &id, id.size).map_err(cache_errno)?;
    let r = fill(client, &part, path, stamp)
        .and_then(|_| part.complete().map(|obj| obj.path).map_err(cache_errno));
    if r.is_err() {
        part.fail();
    }
    r
}

/// A transfer going on in the background.
#[derive(Debug)]
pub(crate) struct Stream {
    pub part: Arc<PartialObject>,
    /// The errno it failed with (0: none so far).
    pub error: Arc<AtomicI32>,
}

/// Starts fetching central `path` at `stamp` in a background thread into
/// a streaming cache object, and returns once its first `first` bytes
/// have arrived (or with the errno that stopped it: `ESTALE` when the
/// file changed). Another transfer of the same file is shared.
pub(crate) fn stream(
    client: Arc<dyn FsClient + Send + Sync>,
    cache: &Cache,
    path: &[u8],
    stamp: &FileStamp,
    first: u64,
) -> Result<Stream, Errno> {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    let id = identity_of(stamp);
    let error = Arc::new(AtomicI32::new(0));
    let part = match cache.in_progress(p, &id) {
        Some(part) => part,
        None => {
            let part = cache.begin(p, &id, id.size).map_err(cache_errno)?;
            let (bg, err, path, stamp) = (part.clone(), error.clone(), path.to_vec(), *stamp);
            let spawned = std::thread::Builder::new()
                .name("diatom-fetch".into())
                .spawn(move || {
                    let r = fill(&*client, &bg, &path, &stamp)
                        .and_then(|_| bg.complete().map(drop).map_err(cache_errno));
                    if let Err(e) = r {
                        err.store(e as i32, Ordering::SeqCst);
                        bg.fail();
                    }
                });
            if let Err(e) = spawned {
                log::warn!("cannot start a fetch thread: {e}");
                return Err(Errno::EAGAIN);
            }
            part
        }
    };
    if !part.wait_ready(first, STREAM_WAIT) {
        let e = error.load(Ordering::SeqCst);
        return Err(if e == 0 {
            Errno::EIO
        } else {
            Errno::from_raw(e)
        });
    }
    Ok(Stream { part, error })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use dscp_dicp::msg::fs::{data_header, Request, Response};
    use dscp_dicp::msg::job::FileStamp;
    use dscp_dicp::msg::Request as AnyRequest;
    use dscp_dicp::{Key, Keyring, Peer};

    use super::{fill, identity_of, READ_CHUNK};
    use crate::cache::Cache;
    use crate::job::fs::HomeClient;
    use crate::net::{reply, Net};

    fn session(key: &Key) -> Net {
        let mut keys = Keyring::new();
        keys.insert(9, key);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        Net::open_session(sock, keys).unwrap()
    }

    #[test]
    fn a_large_fetch_lands_through_sinks_and_hashes_as_its_bytes() {
        // A home on a real loopback session answering `Read`s framed as
        // the real one frames them; one range answered short (the node
        // asks for the rest, without a sink). The object is populated
        // before the fetch, so every other `Read` has a sink and must be
        // answered into it; the object must hash as the bytes.
        let key = Key::generate();
        let (home, node) = (session(&key), session(&key));
        let size = 80 * (1 << 20) + 12_345u64;
        let data: Arc<Vec<u8>> = Arc::new((0..size).map(|i| (i * 13 % 251) as u8).collect());
        let (h, d) = (home.clone(), Arc::clone(&data));
        std::thread::spawn(move || {
            for req in h.requests().iter() {
                let Ok(AnyRequest::Fs(Request::Read { offset, len, .. })) = req.request() else {
                    reply(req, Response::Errno(libc::EINVAL));
                    continue;
                };
                let short = u64::from(READ_CHUNK) * 3;
                let len = if offset == short { len / 2 } else { len };
                let end = (offset + u64::from(len)).min(d.len() as u64);
                let mut msg = data_header((end - offset) as usize);
                msg.extend_from_slice(&d[offset as usize..end as usize]);
                let _ = req.respond(msg);
            }
        });
        let home_peer = Peer {
            addr: home.local_addr(),
            key_id: 9,
        };
        let client = HomeClient::new(node, home_peer, Duration::from_secs(30));
        let dir = std::env::temp_dir().join(format!("diatom-fetch-sink-{}", std::process::id()));
        let cache = Cache::open(&dir).unwrap();
        let stamp = FileStamp {
            size,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            dev: 1,
        };
        let part = cache
            .begin(std::path::Path::new("/big"), &identity_of(&stamp), size)
            .unwrap();
        assert!(part.map_for_sinks());
        part.populate(0, size as usize);
        let sunk = fill(&client, &part, b"/big", &stamp).unwrap();
        let reads = size.div_ceil(u64::from(READ_CHUNK));
        assert_eq!(u64::from(sunk), reads - 1, "all but the short one");
        let obj = part.complete().unwrap();
        assert_eq!(obj.hash, blake3::hash(&data));
        assert!(std::fs::read(&obj.path).unwrap() == *data);
        drop((part, cache));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
