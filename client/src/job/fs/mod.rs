//! Transparent file access, node side: the tracer layer that makes a job
//! see central's file system (see `docs/files.md`, the contract).
//!
//! [`FsLayer`] decides each intercepted file call of a job: path calls are
//! resolved to absolute central paths ([`paths`], the process's cwd and
//! directory descriptors read back from `/proc/TID/...`), forwarded to the
//! job's home through an [`FsClient`], and either answered (stat, access,
//! readlink, mutations) or rewritten to a local file the kernel then opens
//! natively: a hard link to a cache object, a mirror directory of
//! placeholders, a private writable copy ([`mirror`]).
//!
//! The runner builds one [`FsLayer`] per job ([`FsLayer::new`] with an
//! [`FsConfig`] and a [`HomeClient`]), puts the job's first process in the
//! mirror of its central cwd ([`FsLayer::enter_dir`]) and hands the layer
//! to the job's [`JobHandler`](super::handler::JobHandler).

mod calls;
pub mod exec;
mod fds;
mod fetch;
mod locks;
mod meta;
mod mirror;
mod paths;
mod pool;
mod stats;
mod stream;
mod write;
mod xattr;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dscp_dicp::msg::fs::{FileStat, Request, Response};
use dscp_dicp::Peer;
use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;
use tracer::{Rule, SyscallSet};

use crate::cache::{Cache, RangeSink};
use crate::net::{ask, Net};

pub use exec::plan as exec_plan;
pub use fetch::identity_of;
pub(crate) use fetch::object as fetch_object;
pub use pool::{make_dir_all, recycle};

/// How the layer talks to the job's home. The production implementation is
/// [`HomeClient`]; tests use a fake home.
pub trait FsClient {
    /// Sends one file request and waits for its answer. `Err`: no answer
    /// (home gone, timeout, refused): the tracee sees `EIO`.
    fn call(&self, req: Request) -> Result<Response, String>;

    /// Sends one request without waiting for its answer, so that several
    /// can be in flight; the answer is collected by calling the result.
    /// The default sends it when the answer is asked for (one at a time).
    fn start(&self, req: Request) -> PendingAnswer<'_> {
        Box::new(move || self.call(req))
    }

    /// A handle on the same home that another thread may use (a
    /// background fetch), if the client can be shared.
    fn share(&self) -> Option<std::sync::Arc<dyn FsClient + Send + Sync>> {
        None
    }

    /// [`FsClient::start`] for a `Read`, whose data the answer leaves where
    /// it arrived when the client can (a fetch moves whole files: copying
    /// each answer out of its message cost as much as writing it to the
    /// cache). The default decodes as `start` does.
    fn start_read(&self, req: Request) -> PendingRead<'_> {
        let pending = self.start(req);
        Box::new(move || pending().map(ReadAnswer::from))
    }

    /// [`FsClient::start_read`] for a `Read` of exactly `len` bytes whose
    /// data, when the answer has them all, goes to `sink` as it arrives
    /// (answered [`ReadAnswer::Sunk`]); any other answer comes as from
    /// `start_read`. The default does not use the sink.
    fn start_read_into(&self, req: Request, len: u32, sink: RangeSink) -> PendingRead<'_> {
        let _ = (len, sink);
        self.start_read(req)
    }

    /// Gives back a `Read` answer whose bytes were used, so its memory
    /// can receive a later one. The default frees it.
    fn recycle(&self, answer: ReadAnswer) {
        drop(answer);
    }
}

/// The answer to a request started with [`FsClient::start`].
pub type PendingAnswer<'a> = Box<dyn FnOnce() -> Result<Response, String> + 'a>;

/// The answer to a `Read` started with [`FsClient::start_read`].
pub type PendingRead<'a> = Box<dyn FnOnce() -> Result<ReadAnswer, String> + 'a>;

/// A `Read`'s answer.
#[derive(Debug)]
pub enum ReadAnswer {
    /// File bytes: `msg[at]` (`msg` the message they came in).
    Data {
        /// The received message, or the bytes alone.
        msg: Vec<u8>,
        /// Where the bytes lie in `msg`.
        at: std::ops::Range<usize>,
    },
    /// All the bytes asked for, already in the sink given with
    /// [`FsClient::start_read_into`].
    Sunk,
    /// Any other answer (an errno, or something unexpected).
    Other(Response),
}

impl ReadAnswer {
    /// The file bytes, if it carries some.
    pub fn data(&self) -> Option<&[u8]> {
        match self {
            ReadAnswer::Data { msg, at } => msg.get(at.clone()),
            ReadAnswer::Sunk | ReadAnswer::Other(_) => None,
        }
    }
}

impl From<Response> for ReadAnswer {
    fn from(r: Response) -> ReadAnswer {
        match r {
            Response::Data(dscp_dicp::msg::Blob(msg)) => ReadAnswer::Data {
                at: 0..msg.len(),
                msg,
            },
            other => ReadAnswer::Other(other),
        }
    }
}

/// The job's home over the job's session.
#[derive(Debug, Clone)]
pub struct HomeClient {
    net: Net,
    home: Peer,
    timeout: Duration,
}

impl HomeClient {
    /// Calls `home` over `net`, each request waiting at most `timeout`.
    pub fn new(net: Net, home: Peer, timeout: Duration) -> Self {
        Self { net, home, timeout }
    }
}

impl FsClient for HomeClient {
    fn call(&self, req: Request) -> Result<Response, String> {
        ask::<Response>(&self.net, self.home, req, self.timeout)
    }

    fn start(&self, req: Request) -> PendingAnswer<'_> {
        let pending = self.net.start(self.home, req);
        let timeout = self.timeout;
        Box::new(move || {
            let answer = pending?.wait(timeout).map_err(|e| e.to_string())?;
            Response::try_from(
                dscp_dicp::msg::Response::decode(&answer).map_err(|e| e.to_string())?,
            )
        })
    }

    fn share(&self) -> Option<std::sync::Arc<dyn FsClient + Send + Sync>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    fn start_read(&self, req: Request) -> PendingRead<'_> {
        let pending = self.net.start(self.home, req);
        let timeout = self.timeout;
        Box::new(move || read_answer(pending?.wait(timeout).map_err(|e| e.to_string())?))
    }

    fn start_read_into(&self, req: Request, len: u32, sink: RangeSink) -> PendingRead<'_> {
        let head = dscp_dicp::msg::fs::data_header(len as usize);
        let sink = dscp_dicp::Sink {
            total: head.len() as u64 + u64::from(len),
            skip: head.len(),
            target: Box::new(fetch::SinkTarget(sink)),
        };
        let pending = self.net.start_into(self.home, req, sink);
        let timeout = self.timeout;
        Box::new(move || {
            let msg = match pending?.wait_answer(timeout).map_err(|e| e.to_string())? {
                // The answer had the length of `len` bytes of data: it
                // must be exactly that `Data` reply's head.
                dscp_dicp::Answer::Sunk(got) if got == head => return Ok(ReadAnswer::Sunk),
                dscp_dicp::Answer::Sunk(_) => return Err("malformed Read answer".into()),
                dscp_dicp::Answer::Whole(msg) => msg,
            };
            read_answer(msg)
        })
    }

    fn recycle(&self, answer: ReadAnswer) {
        if let ReadAnswer::Data { msg, .. } = answer {
            self.net.recycle(msg);
        }
    }
}

/// A whole `Read` answer as received: its data left where it lies.
fn read_answer(msg: Vec<u8>) -> Result<ReadAnswer, String> {
    if let Some(at) = dscp_dicp::msg::fs::data_span(&msg) {
        return Ok(ReadAnswer::Data { msg, at });
    }
    let r = dscp_dicp::msg::Response::decode(&msg).map_err(|e| e.to_string())?;
    Response::try_from(r).map(ReadAnswer::from)
}

/// Where and how a job's file layer works.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// The job's directory on the node (the mirror is `job_dir/root`;
    /// `job_dir/tmp` is the layer's own).
    pub job_dir: PathBuf,
    /// The job's (uid, gid) on the node when it runs as another user than
    /// the node daemon: private copies are given to it.
    pub run_as: Option<(u32, u32)>,
    /// Node directories the job may reach by their node path (the cache's
    /// objects, the launch's library directory): opened natively. The
    /// job's directory is always among them.
    pub native: Vec<PathBuf>,
    /// The job's umask at launch.
    pub umask: u32,
    /// How long metadata from a directory listing answers `stat` without
    /// asking central (0: always ask).
    pub meta_ttl: Duration,
    /// Answer `fstat` of descriptors of central files with central's
    /// metadata (one stop per `fstat`); otherwise they report the local
    /// copy's (see docs/files.md).
    pub central_fstat: bool,
    /// Descriptors of files open for writing are moved to this number or
    /// above, so `close`/`fsync` stop only for them.
    pub write_fd_min: u32,
    /// Files at least this large that are not cached are read while they
    /// arrive (see `stream.rs`); smaller ones are fetched whole at open.
    pub stream_min: u64,
    /// Descriptors of files still arriving are moved to this number or
    /// above, so reads and maps stop only for them.
    pub stream_fd_min: u32,
}

impl FsConfig {
    /// Defaults for a job in `job_dir`.
    pub fn new(job_dir: PathBuf, run_as: Option<(u32, u32)>, umask: u32) -> Self {
        Self {
            job_dir,
            run_as,
            native: Vec::new(),
            umask,
            meta_ttl: Duration::from_secs(2),
            central_fstat: true,
            write_fd_min: 1000,
            stream_min: 8 << 20,
            stream_fd_min: 2000,
        }
    }
}

/// A path argument resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Where {
    /// The node's own (`/proc`, `/sys`, `/dev`, node directories): run
    /// natively on this absolute node path (the tracer's copy).
    Native(Vec<u8>),
    /// Native, relative to a node directory descriptor: leave it alone.
    NativeRelative,
    /// This absolute central path (tidy: no `.` or empty components).
    Central(Vec<u8>),
}

/// The job's file layer (see the module documentation).
pub struct FsLayer {
    client: Box<dyn FsClient>,
    cache: Cache,
    mirror: mirror::Mirror,
    meta: meta::MetaCache,
    cfg: FsConfig,
    native: Vec<Vec<u8>>,
    /// Per process umask.
    umask: HashMap<Pid, u32>,
    /// Live processes of the job.
    procs: HashSet<Pid>,
    /// Central stat of each canonical path at its last open, for `fstat`.
    opened: HashMap<Vec<u8>, FileStat>,
    writes: write::Writes,
    exec: exec::ExecState,
    /// Files still arriving.
    streams: Vec<stream::Live>,
    /// Advisory lock owners and lock waits.
    locks: locks::Locks,
    /// While an `openat2` with `RESOLVE_*` flags is served: its start
    /// directory (central), path as given, and flags, for the home.
    resolving: Option<(Vec<u8>, Vec<u8>, u64)>,
    /// Counters, logged and reported to central at the job's end.
    stats: std::sync::Arc<std::sync::Mutex<stats::Stats>>,
    /// Where this daemon reads the job's own `/proc` (its PID namespace's
    /// pids): `/proc`, or `/proc/INIT/root/proc` when the job has a PID
    /// namespace (see [`FsLayer::set_pid_namespace`]).
    proc_root: String,
}

impl std::fmt::Debug for FsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsLayer")
            .field("mirror", &self.mirror.root())
            .field("procs", &self.procs.len())
            .finish_non_exhaustive()
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// Calls that would reach the node's files behind the layer's back, so
/// the filter fails them with `ENOSYS`, as a kernel without them would
/// (programs fall back to the calls the layer serves): `open_tree` and
/// `open_tree_attr` (an `O_PATH` descriptor of a path),
/// and, newer than the `syscalls` crate, Linux 6.13's `setxattrat`,
/// `getxattrat`, `listxattrat`, `removexattrat` (463-466),
/// `open_tree_attr` (467) and 6.17's `file_getattr`, `file_setattr`
/// (468, 469). docs/files.md "Refused". io_uring is not refused: the
/// sandbox confines it, and its tests use it to check that
/// (docs/security.md).
const REFUSED: [u32; 8] = [Sysno::open_tree as u32, 463, 464, 465, 466, 467, 468, 469];

impl FsLayer {
    /// A layer for one job: creates its mirror under `cfg.job_dir`.
    pub fn new(cfg: FsConfig, client: Box<dyn FsClient>, cache: Cache) -> std::io::Result<Self> {
        let root = cfg.job_dir.join("root");
        let mirror = mirror::Mirror::create(&root, &cfg.job_dir.join("tmp"), cfg.run_as)?;
        let mut native: Vec<Vec<u8>> = cfg.native.iter().map(|p| bytes(p)).collect();
        native.push(bytes(&cfg.job_dir));
        let stats = std::sync::Arc::new(std::sync::Mutex::new(stats::Stats::default()));
        let client = Box::new(stats::Counting {
            inner: client,
            stats: stats.clone(),
        });
        Ok(Self {
            client,
            stats,
            cache,
            mirror,
            meta: meta::MetaCache::new(cfg.meta_ttl),
            native,
            umask: HashMap::new(),
            procs: HashSet::new(),
            opened: HashMap::new(),
            writes: write::Writes::default(),
            exec: exec::ExecState::new(),
            streams: Vec::new(),
            locks: locks::Locks::default(),
            resolving: None,
            cfg,
            proc_root: "/proc".into(),
        })
    }

    /// Starts the metadata cache with the launch's pre-answered lookups
    /// ([`dscp_dicp::msg::job::Launch::lookups`]).
    pub fn seed_lookups(
        &mut self,
        lookups: &[(dscp_dicp::msg::Blob, dscp_dicp::msg::job::Lookup)],
    ) {
        self.meta.seed(lookups);
    }

    /// The job runs in a PID namespace whose PID 1 is `init` (a host pid):
    /// a pid the job names (`/proc/2/cwd`) is read through that
    /// namespace's own `/proc`, not the node's.
    pub fn set_pid_namespace(&mut self, init: Pid) {
        self.proc_root = format!("/proc/{init}/root/proc");
    }

    /// The job's `/proc/WHO` as this daemon reads it.
    pub(crate) fn job_proc(&self, who: &[u8]) -> String {
        format!("{}/{}", self.proc_root, String::from_utf8_lossy(who))
    }

    /// Makes central directory `central` (absolute, canonical: the
    /// caller's cwd) a mirror directory and returns its node path: the
    /// job's first process starts there.
    pub fn enter_dir(&mut self, central: &[u8]) -> std::io::Result<PathBuf> {
        let c = paths::tidy(central);
        self.mirror.ensure_dir(&c)?;
        Ok(PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                self.mirror.node_path(&c),
            ),
        ))
    }

    /// Records the job's first process (after spawn).
    pub fn set_first_process(&mut self, pid: Pid) {
        self.procs.insert(pid);
        self.exec.first = Some(pid);
    }

    /// Records that `pid` runs the central program `program` (the job's
    /// first image, which the node exec'd itself).
    pub fn set_program_of(&mut self, pid: Pid, program: Vec<u8>) {
        self.exec.set_program_of(pid, program);
    }

    /// The calls the layer stops.
    pub fn subscriptions(&self) -> SyscallSet {
        Self::calls(&self.cfg)
    }

    /// The calls a layer with `cfg` stops (known before the job's layer
    /// is made: the node builds its filter once).
    pub fn calls(cfg: &FsConfig) -> SyscallSet {
        use Sysno::*;
        let mut s = SyscallSet::diatom_files();
        s.insert(umask);
        if cfg.central_fstat {
            // Every fstat too, not only the path forms.
            s.insert(fstat).insert(newfstatat).insert(statx);
        }
        let at_least = Rule::UnlessArgBelow {
            arg: 0,
            min: cfg.write_fd_min,
        };
        s.insert_rule(close, at_least);
        s.insert_rule(fsync, at_least);
        s.insert_rule(fdatasync, at_least);
        if cfg.stream_min < u64::MAX {
            for &(nr, arg) in stream::STOPPED {
                let rule = if nr == mmap {
                    // An anonymous mapping passes -1: only the range stops.
                    Rule::OnlyArgIn {
                        arg,
                        min: cfg.stream_fd_min,
                        max: stream::STREAM_FD_MAX,
                    }
                } else {
                    Rule::UnlessArgBelow {
                        arg,
                        min: cfg.stream_fd_min,
                    }
                };
                s.insert_rule(nr, rule);
            }
        }
        // mmap of a file open for writing: a shared mapping keeps its copy;
        // msync writes it back (rare).
        s.insert(msync);
        s.also_stop(
            mmap,
            Rule::OnlyArgIn {
                arg: 4,
                min: cfg.write_fd_min,
                max: cfg.stream_fd_min,
            },
        );
        // Locks: flock always (rare), fcntl also for its lock commands.
        // fstatfs is rare too (df, statvfs): central's for central files.
        s.insert(flock).insert(fstatfs);
        // The descriptor forms of the xattr calls (rare).
        for nr in [fgetxattr, fsetxattr, flistxattr, fremovexattr] {
            s.insert(nr);
        }
        s.also_stop(
            fcntl,
            Rule::OnlyArgIn {
                arg: 1,
                min: locks::LOCK_CMDS_MIN,
                max: locks::LOCK_CMDS_END,
            },
        );
        for nr in REFUSED {
            s.refuse(nr, libc::ENOSYS);
        }
        s
    }

    /// A new task appeared (see [`tracer::Handler::on_new_task`]).
    pub fn on_new_task(&mut self, _tid: Pid, tgid: Pid, parent_pid: Pid, kind: tracer::NewTask) {
        if kind == tracer::NewTask::Thread {
            return;
        }
        self.procs.insert(tgid);
        self.exec.on_fork(parent_pid, tgid);
        if let Some(m) = self.umask.get(&parent_pid).copied() {
            self.umask.insert(tgid, m);
        }
    }

    /// Process `pid` exec'd.
    pub fn on_exec(&mut self, pid: Pid) {
        self.exec.on_exec(pid);
    }

    /// Task `tid` of `tgid` ended.
    pub fn on_exit(&mut self, tid: Pid, tgid: Pid) {
        self.locks_on_exit(tid, tgid);
        if tid != tgid {
            return;
        }
        self.procs.remove(&tgid);
        self.umask.remove(&tgid);
        self.exec.on_exit(tgid);
        self.write_back_unreferenced();
    }

    /// Writes back every file still open for writing and closes it on the
    /// home: the job ended. Returns the errors (path: why).
    pub fn finish(&mut self) -> Vec<String> {
        self.procs.clear();
        let errors = self.write_back_unreferenced();
        if log::log_enabled!(log::Level::Debug) {
            let s = self.stats();
            log::debug!("file layer: stops {}", s.stops);
            log::debug!("file layer: requests {}", s.requests);
            log::debug!(
                "file layer: listings read ahead {}, opens served by them {}",
                s.listings_ahead,
                s.listings_ahead_used
            );
        }
        errors
    }

    /// The layer's counters as reported to central with the job's end
    /// (see [`stats::Stats::counters`]).
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        self.stats().counters()
    }

    /// The layer's counters, shared with the home client that counts
    /// requests (a poisoned lock still holds sound counters).
    fn stats(&self) -> std::sync::MutexGuard<'_, stats::Stats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts files whose content the node cache had (`hits`) or had to
    /// fetch (`misses`, `bytes` fetched outside the layer's own requests):
    /// the layer's opens, and the launch's files.
    pub fn note_cache(&self, hits: u64, misses: u64, bytes: u64) {
        let mut s = self.stats();
        s.cache_hits += hits;
        s.cache_misses += misses;
        s.bytes_read += bytes;
    }

    /// Counts listings read ahead (`received` kept) and opens they served
    /// (`used`).
    fn note_ahead(&self, received: u64, used: u64) {
        let mut s = self.stats();
        s.listings_ahead += received;
        s.listings_ahead_used += used;
    }

    /// The central program process `pid` runs when the layer exec'd it
    /// through the loader (for `/proc/PID/exe`).
    pub fn exe_of(&self, pid: Pid) -> Option<&[u8]> {
        self.exec.exe_of(pid)
    }

    fn umask_of(&self, pid: Pid) -> u32 {
        self.umask.get(&pid).copied().unwrap_or(self.cfg.umask)
    }

    /// Sends `req`; central's errno as `Err`, a lost home as `EIO`.
    fn ask(&self, req: Request) -> Result<Response, Errno> {
        match self.client.call(req) {
            Ok(Response::Errno(e)) => Err(Errno::from_raw(e)),
            Ok(r) => Ok(r),
            Err(why) => {
                log::warn!("file request failed: {why}");
                Err(Errno::EIO)
            }
        }
    }

    /// Classifies an absolute path.
    fn classify(&self, abs: &[u8]) -> Where {
        let lex = paths::lexical(abs);
        if let Some(w) = self.proc_magic(&lex) {
            return w;
        }
        let native = paths::NODE_TREES.iter().any(|t| paths::is_under(&lex, t))
            || self.native.iter().any(|p| paths::is_under(&lex, p))
            || paths::is_under(&lex, self.mirror.root());
        if native {
            Where::Native(abs.to_vec())
        } else {
            Where::Central(paths::tidy(abs))
        }
    }

    /// `/proc/PID/cwd/...`, `/proc/PID/fd/N/...` and `/proc/PID/root/...`
    /// with something below them lead into central's tree when the link
    /// leads into the mirror.
    fn proc_magic(&self, lex: &[u8]) -> Option<Where> {
        let rest = lex.strip_prefix(b"/proc/")?;
        let mut it = rest.splitn(3, |b| *b == b'/');
        let who = it.next()?;
        let what = it.next()?;
        let tail = it.next()?;
        let (link_len, below) = match what {
            b"root" => return Some(self.classify(&paths::join(b"/", tail))),
            b"cwd" => (b"/proc/".len() + who.len() + 4, tail),
            b"fd" => {
                let (n, below) = match tail.iter().position(|b| *b == b'/') {
                    Some(i) => (&tail[..i], &tail[i + 1..]),
                    None => return None,
                };
                (b"/proc/".len() + who.len() + 4 + n.len(), below)
            }
            _ => return None,
        };
        let link = format!(
            "{}{}",
            self.job_proc(who),
            String::from_utf8_lossy(&lex[b"/proc/".len() + who.len()..link_len])
        );
        let target = std::fs::read_link(link).ok()?;
        let central = self.mirror.central_of(target.as_os_str().as_bytes())?;
        Some(Where::Central(paths::tidy(&paths::join(&central, below))))
    }

    /// What a node path read from `/proc` (a cwd, a descriptor) is.
    fn classify_node(&self, mut node: Vec<u8>) -> Where {
        if node.ends_with(b" (deleted)") {
            node.truncate(node.len() - b" (deleted)".len());
        }
        if node.first() != Some(&b'/') {
            return Where::NativeRelative; // pipe:[..], socket:[..], anon_inode:..
        }
        if let Some(c) = self.mirror.central_of(&node) {
            return Where::Central(c);
        }
        match self.classify(&node) {
            Where::Central(c) => Where::Central(c),
            _ => Where::NativeRelative,
        }
    }

    /// Where `/proc/TID/cwd` (dirfd `AT_FDCWD`) or `/proc/TID/fd/N` leads.
    fn base_of(&self, tid: Pid, dirfd: i32) -> Result<Where, Errno> {
        let link = if dirfd == libc::AT_FDCWD {
            format!("/proc/{tid}/cwd")
        } else if dirfd < 0 {
            return Err(Errno::EBADF);
        } else {
            format!("/proc/{tid}/fd/{dirfd}")
        };
        match std::fs::read_link(&link) {
            Ok(t) => Ok(self.classify_node(t.into_os_string().into_encoded_bytes())),
            Err(_) if dirfd == libc::AT_FDCWD => Err(Errno::ENOENT),
            Err(_) => Err(Errno::EBADF),
        }
    }

    /// Resolves a path argument of thread `tid` relative to `dirfd`.
    fn resolve(&self, tid: Pid, dirfd: i32, path: &[u8]) -> Result<Where, Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path[0] == b'/' {
            return Ok(self.classify(path));
        }
        match self.base_of(tid, dirfd)? {
            Where::Central(base) => Ok(self.classify(&paths::join(&base, path))),
            _ => Ok(Where::NativeRelative),
        }
    }

    /// The central path a descriptor of `tid` refers to, if any.
    fn fd_central(&self, tid: Pid, fd: i32) -> Option<Vec<u8>> {
        if fd < 0 {
            return None;
        }
        let link = format!("/proc/{tid}/fd/{fd}");
        let t = std::fs::read_link(&link).ok()?;
        let mut node = t.into_os_string().into_encoded_bytes();
        if node.ends_with(b" (deleted)") {
            node.truncate(node.len() - b" (deleted)".len());
        }
        self.mirror.central_of(&node).or_else(|| {
            // An unnamed (O_TMPFILE) file: its copy is outside the mirror.
            if !self.writes.has_unnamed() {
                return None;
            }
            let m = std::fs::metadata(&link).ok()?;
            self.writes
                .unnamed_central((MetadataExt::dev(&m), MetadataExt::ino(&m)))
        })
    }
}

impl<T: FsClient + Send + Sync + 'static> FsClient for std::sync::Arc<T> {
    fn call(&self, req: Request) -> Result<Response, String> {
        (**self).call(req)
    }

    fn start(&self, req: Request) -> PendingAnswer<'_> {
        (**self).start(req)
    }

    fn share(&self) -> Option<std::sync::Arc<dyn FsClient + Send + Sync>> {
        Some(self.clone())
    }

    fn start_read(&self, req: Request) -> PendingRead<'_> {
        (**self).start_read(req)
    }

    fn start_read_into(&self, req: Request, len: u32, sink: RangeSink) -> PendingRead<'_> {
        (**self).start_read_into(req, len, sink)
    }

    fn recycle(&self, answer: ReadAnswer) {
        (**self).recycle(answer);
    }
}
