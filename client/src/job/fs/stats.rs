//! Per-job counters of the file layer, logged at the job's end (debug
//! level) and reported to central with it ([`Stats::counters`]): calls
//! stopped by kind and the time spent deciding them, requests forwarded
//! to the home by kind and the time spent waiting for their answers,
//! bytes moved each way, and opens served from the node cache.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dscp_dicp::msg::fs::{Request, Response};

use super::{FsClient, PendingAnswer, PendingRead, ReadAnswer};
use crate::cache::RangeSink;

/// Count and total time per kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally(BTreeMap<&'static str, (u32, Duration)>);

impl Tally {
    pub(crate) fn add(&mut self, kind: &'static str, took: Duration) {
        let e = self.0.entry(kind).or_default();
        e.0 += 1;
        e.1 += took;
    }

    fn total(&self) -> (u32, Duration) {
        self.0
            .values()
            .fold((0, Duration::ZERO), |(n, t), (m, u)| (n + m, t + *u))
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, t) = self.total();
        write!(f, "{n} in {t:.2?}")?;
        for (k, (n, t)) in &self.0 {
            write!(f, ", {k} {n} ({t:.2?})")?;
        }
        Ok(())
    }
}

/// The layer's counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Calls the layer decided, by system call.
    pub stops: Tally,
    /// Requests to the home, by kind (time: waiting for the answer).
    pub requests: Tally,
    /// File bytes received from the home (`Read` answers, background
    /// fetches included).
    pub bytes_read: u64,
    /// File bytes sent to the home (`Write` requests).
    pub bytes_written: u64,
    /// Files whose content was found in the node cache (opens and the
    /// launch's program and libraries).
    pub cache_hits: u64,
    /// Files whose content had to be fetched from the home.
    pub cache_misses: u64,
    /// Directory listings the home read ahead (`OpenDir` answers).
    pub listings_ahead: u64,
    /// Opens of a directory answered by a listing read ahead, without
    /// asking the home.
    pub listings_ahead_used: u64,
}

impl Stats {
    /// The counters central stores with the job's end: `calls.KIND` per
    /// forwarded request kind, `calls` and `stops` in total, bytes moved
    /// and cache hits and misses.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut c: BTreeMap<String, u64> = self
            .requests
            .0
            .iter()
            .map(|(k, (n, _))| (format!("calls.{k}"), u64::from(*n)))
            .collect();
        c.insert("calls".into(), u64::from(self.requests.total().0));
        c.insert("stops".into(), u64::from(self.stops.total().0));
        c.insert("bytes_read".into(), self.bytes_read);
        c.insert("bytes_written".into(), self.bytes_written);
        c.insert("cache_hits".into(), self.cache_hits);
        c.insert("cache_misses".into(), self.cache_misses);
        c.insert("listings_ahead".into(), self.listings_ahead);
        c.insert("listings_ahead_used".into(), self.listings_ahead_used);
        c
    }

    /// Counts the file bytes a request sends or its answer brings.
    fn add_bytes(&mut self, req_bytes: u64, answer: &Result<Response, String>) {
        let read = match answer {
            Ok(Response::Data(d)) => d.0.len(),
            _ => 0,
        };
        self.add_moved(req_bytes, read);
    }

    fn add_moved(&mut self, sent: u64, read: usize) {
        self.bytes_written += sent;
        self.bytes_read += read as u64;
    }
}

/// File bytes a request carries to the home.
fn sent_bytes(r: &Request) -> u64 {
    match r {
        Request::Write { data, .. } => data.0.len() as u64,
        _ => 0,
    }
}

/// The kind of a request, for the counters.
fn kind(r: &Request) -> &'static str {
    match r {
        Request::Stat { .. } => "Stat",
        Request::Access { .. } => "Access",
        Request::Readlink { .. } => "Readlink",
        Request::Open { .. } => "Open",
        Request::OpenAt2 { .. } => "OpenAt2",
        Request::Read { .. } => "Read",
        Request::ReadDir { .. } => "ReadDir",
        Request::Mkdir { .. } => "Mkdir",
        Request::Mknod { .. } => "Mknod",
        Request::Unlink { .. } => "Unlink",
        Request::Rmdir { .. } => "Rmdir",
        Request::Rename { .. } => "Rename",
        Request::Link { .. } => "Link",
        Request::Symlink { .. } => "Symlink",
        Request::LinkHandle { .. } => "LinkHandle",
        Request::Chmod { .. } => "Chmod",
        Request::Chown { .. } => "Chown",
        Request::Truncate { .. } => "Truncate",
        Request::Utimens { .. } => "Utimens",
        Request::Statfs { .. } => "Statfs",
        Request::Write { .. } => "Write",
        Request::SetLen { .. } => "SetLen",
        Request::Sync { .. } => "Sync",
        Request::Close { .. } => "Close",
        Request::Exec { .. } => "Exec",
        Request::GetXattr { .. } => "GetXattr",
        Request::ListXattr { .. } => "ListXattr",
        Request::SetXattr { .. } => "SetXattr",
        Request::RemoveXattr { .. } => "RemoveXattr",
        Request::Lock { .. } => "Lock",
        Request::Unlock { .. } => "Unlock",
        Request::OpenDir { .. } => "OpenDir",
    }
}

/// A client that counts what it forwards into shared [`Stats`].
pub(crate) struct Counting {
    pub inner: Box<dyn FsClient>,
    pub stats: Arc<Mutex<Stats>>,
}

impl Counting {
    fn note(&self, kind: &'static str, took: Duration, sent: u64, r: &Result<Response, String>) {
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.requests.add(kind, took);
        s.add_bytes(sent, r);
    }
}

impl FsClient for Counting {
    fn call(&self, req: Request) -> Result<Response, String> {
        let k = kind(&req);
        if k != "Write" && k != "Read" {
            log::trace!("forward {req:?}");
        }
        let sent = sent_bytes(&req);
        let t = Instant::now();
        let r = self.inner.call(req);
        self.note(k, t.elapsed(), sent, &r);
        r
    }

    fn start(&self, req: Request) -> PendingAnswer<'_> {
        let k = kind(&req);
        let sent = sent_bytes(&req);
        let t = Instant::now();
        let pending = self.inner.start(req);
        Box::new(move || {
            let r = pending();
            self.note(k, t.elapsed(), sent, &r);
            r
        })
    }

    fn share(&self) -> Option<Arc<dyn FsClient + Send + Sync>> {
        // Background fetches run beside the job: their waits are not the
        // job's, so only the bytes they move are counted.
        let inner = self.inner.share()?;
        Some(Arc::new(CountingBytes {
            inner,
            stats: Arc::clone(&self.stats),
        }))
    }
}

/// A shared client (background fetches) that counts only bytes moved.
struct CountingBytes {
    inner: Arc<dyn FsClient + Send + Sync>,
    stats: Arc<Mutex<Stats>>,
}

impl CountingBytes {
    fn note(&self, sent: u64, r: &Result<Response, String>) {
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.add_bytes(sent, r);
    }
}

impl FsClient for CountingBytes {
    fn call(&self, req: Request) -> Result<Response, String> {
        let sent = sent_bytes(&req);
        let r = self.inner.call(req);
        self.note(sent, &r);
        r
    }

    fn start(&self, req: Request) -> PendingAnswer<'_> {
        let sent = sent_bytes(&req);
        let pending = self.inner.start(req);
        Box::new(move || {
            let r = pending();
            self.note(sent, &r);
            r
        })
    }

    fn start_read(&self, req: Request) -> PendingRead<'_> {
        let sent = sent_bytes(&req);
        let pending = self.inner.start_read(req);
        Box::new(move || {
            let r = pending();
            let read = r
                .as_ref()
                .ok()
                .and_then(|a| a.data())
                .map_or(0, <[u8]>::len);
            let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.add_moved(sent, read);
            r
        })
    }

    fn start_read_into(&self, req: Request, len: u32, sink: RangeSink) -> PendingRead<'_> {
        let sent = sent_bytes(&req);
        let pending = self.inner.start_read_into(req, len, sink);
        Box::new(move || {
            let r = pending();
            let read = match &r {
                Ok(ReadAnswer::Sunk) => len as usize,
                Ok(a) => a.data().map_or(0, <[u8]>::len),
                Err(_) => 0,
            };
            let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.add_moved(sent, read);
            r
        })
    }

    fn recycle(&self, answer: ReadAnswer) {
        self.inner.recycle(answer);
    }

    fn share(&self) -> Option<Arc<dyn FsClient + Send + Sync>> {
        Some(Arc::new(CountingBytes {
            inner: Arc::clone(&self.inner),
            stats: Arc::clone(&self.stats),
        }))
    }
}
