//! Per-job counters of the file layer, logged at the job's end (debug
//! level): calls stopped by kind and the time spent deciding them,
//! requests forwarded to the home by kind and the time spent waiting for
//! their answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dscp_dicp::msg::fs::{Request, Response};

use super::{FsClient, PendingAnswer};

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
}

/// The kind of a request, for the counters.
fn kind(r: &Request) -> &'static str {
    match r {
        Request::Stat { .. } => "Stat",
        Request::Access { .. } => "Access",
        Request::Readlink { .. } => "Readlink",
        Request::Open { .. } => "Open",
        Request::Read { .. } => "Read",
        Request::ReadDir { .. } => "ReadDir",
        Request::Mkdir { .. } => "Mkdir",
        Request::Unlink { .. } => "Unlink",
        Request::Rmdir { .. } => "Rmdir",
        Request::Rename { .. } => "Rename",
        Request::Link { .. } => "Link",
        Request::Symlink { .. } => "Symlink",
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
    }
}

/// A client that counts what it forwards into shared [`Stats`].
pub(crate) struct Counting {
    pub inner: Box<dyn FsClient>,
    pub stats: Arc<Mutex<Stats>>,
}

impl Counting {
    fn note(&self, kind: &'static str, took: Duration) {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requests
            .add(kind, took);
    }
}

impl FsClient for Counting {
    fn call(&self, req: Request) -> Result<Response, String> {
        let k = kind(&req);
        if k != "Write" && k != "Read" {
            log::trace!("forward {req:?}");
        }
        let t = Instant::now();
        let r = self.inner.call(req);
        self.note(k, t.elapsed());
        r
    }

    fn start(&self, req: Request) -> PendingAnswer<'_> {
        let k = kind(&req);
        let t = Instant::now();
        let pending = self.inner.start(req);
        Box::new(move || {
            let r = pending();
            self.note(k, t.elapsed());
            r
        })
    }

    fn share(&self) -> Option<Arc<dyn FsClient + Send + Sync>> {
        // Background fetches are not counted.
        self.inner.share()
    }
}
