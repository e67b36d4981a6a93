//! The per-job metadata cache and the kernel structures stat-like calls
//! fill in tracee memory.
//!
//! A directory listing (`ReadDir`) brings every entry's `lstat`; those
//! entries answer `stat`/`lstat`/`readlink` by path, and a name missing
//! from a fresh listing answers `ENOENT`, until the directory is listed
//! again, the job changes something there, or [`MetaCache::ttl`] passes
//! (central may change behind the job's back; see docs/files.md).
//!
//! Within the same validity, central's answer to a `stat` by path (the
//! stat after following symlinks, or `ENOENT`) answers the next `stat` of
//! that path, and `ENOENT` of a `stat`, `access` or read-only `open` answers
//! later `stat`s and `access`es of it (opens always ask central). Any
//! change the job makes forgets all such answers (a change may move what
//! a path resolves to).
//!
//! The launch brings a few such answers too ([`MetaCache::seed`]): the
//! home's `lstat` of paths the program is known to ask about first, made
//! just before it sent the launch, held under the same validity from the
//! launch's arrival.
//!
//! Listings read ahead ([`MetaCache::put_ahead`]: the home's answer to an
//! `OpenDir` carries the listings of directories the job is likely to open
//! next) wait here, by canonical central path, for the job's open of that
//! directory ([`MetaCache::take_ahead`]), which then needs no round trip.
//! They are valid for [`MetaCache::ttl`] from their arrival, and forgotten
//! when the directory is listed again, when a newer listing of its parent
//! shows it changed (another inode or times), and at any change the job
//! makes in it or to it. A job is taken to walk a tree
//! ([`MetaCache::walking`]) when it opens a directory whose parent and
//! grandparent it listed: only then is reading ahead worth its cost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dscp_dicp::msg::fs::{DirEntry, FileStat, Listing, StatFs};
use dscp_dicp::msg::job::{Lookup, MAX_LOOKUPS};
use dscp_dicp::msg::Blob;

use super::paths;

/// One cached entry.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// `lstat` of the path.
    pub stat: FileStat,
    /// Its target when it is a symlink.
    pub link: Option<Vec<u8>>,
    /// The listing found no extended attributes on it.
    pub no_xattrs: bool,
    at: Instant,
}

/// What the cache knows about a path.
#[derive(Debug)]
pub(crate) enum Known<'a> {
    /// Its `lstat` (and link target).
    Entry(&'a Meta),
    /// A fresh listing of its parent does not have it: `ENOENT`.
    Absent,
    /// Ask central.
    Unknown,
}

/// A directory's listing read ahead by the home, waiting for its open.
#[derive(Debug, Clone)]
pub(crate) struct Ahead {
    /// `fstat` of the directory as the home opened it.
    pub stat: FileStat,
    /// Its entries.
    pub entries: Vec<DirEntry>,
    /// When it was asked for: the listing's validity starts here.
    pub at: Instant,
}

/// Most listings read ahead kept at once; past it, expired ones are
/// dropped, and then new ones are refused (a job walking faster than the
/// validity allows never holds more).
const AHEAD_KEEP: usize = 4096;

/// Entries by clean central path, and when each directory was listed.
#[derive(Debug)]
pub(crate) struct MetaCache {
    entries: HashMap<Vec<u8>, Meta>,
    listed: HashMap<Vec<u8>, Instant>,
    /// The subdirectories (names) of each listed directory.
    subdirs: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Listings read ahead, by canonical central path.
    ahead: HashMap<Vec<u8>, Ahead>,
    /// `stat` (following symlinks) answers by path.
    followed: HashMap<Vec<u8>, (FileStat, Instant)>,
    /// Paths central answered `ENOENT` for, and whether symlinks were
    /// followed (`lstat` `ENOENT` also answers `stat`).
    missing: HashMap<Vec<u8>, (bool, Instant)>,
    /// How long an entry stays valid without a new listing.
    pub ttl: Duration,
}

impl MetaCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            listed: HashMap::new(),
            subdirs: HashMap::new(),
            ahead: HashMap::new(),
            followed: HashMap::new(),
            missing: HashMap::new(),
            ttl,
        }
    }

    /// Central's `stat` (following symlinks) of the clean path `path` from
    /// an earlier `stat` of it: `Some(Ok)`, `Some(Err)` for `ENOENT`,
    /// `None`: unknown.
    pub(crate) fn followed(&self, path: &[u8]) -> Option<Result<FileStat, ()>> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = Instant::now();
        if let Some((s, at)) = self.followed.get(path) {
            if now.duration_since(*at) < self.ttl {
                return Some(Ok(*s));
            }
        }
        match self.missing.get(path) {
            Some((_, at)) if now.duration_since(*at) < self.ttl => Some(Err(())),
            _ => None,
        }
    }

    /// Whether an earlier `lstat` of the clean path `path` (or `stat`,
    /// with `follow`) answered `ENOENT` within the validity.
    pub(crate) fn missing(&self, path: &[u8], follow: bool) -> bool {
        match self.missing.get(path) {
            Some((followed, at)) => {
                (follow || !*followed) && Instant::now().duration_since(*at) < self.ttl
            }
            None => false,
        }
    }

    /// Records central's answer to a `stat` (`follow`) or `lstat` of the
    /// clean path `path`: a stat after following, or `ENOENT`.
    pub(crate) fn put_lookup(&mut self, path: &[u8], follow: bool, answer: Option<&FileStat>) {
        if self.ttl.is_zero() || !paths::is_clean(path) {
            return;
        }
        let now = Instant::now();
        match answer {
            Some(s) if follow => {
                self.followed.insert(path.to_vec(), (*s, now));
            }
            Some(_) => {}
            None => {
                self.missing.insert(path.to_vec(), (follow, now));
            }
        }
    }

    /// What is known about the clean path `path` now.
    pub(crate) fn known(&self, path: &[u8]) -> Known<'_> {
        if self.ttl.is_zero() {
            return Known::Unknown;
        }
        let now = Instant::now();
        if let Some(m) = self.entries.get(path) {
            if now.duration_since(m.at) < self.ttl {
                return Known::Entry(m);
            }
            return Known::Unknown;
        }
        if let Some((parent, _)) = paths::split(path) {
            if let Some(at) = self.listed.get(parent) {
                if now.duration_since(*at) < self.ttl {
                    return Known::Absent;
                }
            }
        }
        Known::Unknown
    }

    /// Records the listing of directory `dir` (clean), made now: its
    /// entries replace whatever was known below it, one level deep.
    #[cfg(test)]
    pub(crate) fn put_listing<'a>(
        &mut self,
        dir: &[u8],
        entries: impl Iterator<Item = (&'a [u8], FileStat, Option<Vec<u8>>, bool)>,
    ) {
        self.put_listing_at(dir, entries, Instant::now());
    }

    /// Records the listing of directory `dir` (clean) that arrived `at`
    /// (now, or when a listing read ahead arrived): valid until `at` plus
    /// the validity. A listing read ahead of `dir`, or of a subdirectory
    /// whose inode or times differ from this listing's, is forgotten.
    pub(crate) fn put_listing_at<'a>(
        &mut self,
        dir: &[u8],
        entries: impl Iterator<Item = (&'a [u8], FileStat, Option<Vec<u8>>, bool)>,
        at: Instant,
    ) {
        self.ahead.remove(dir);
        if self.ttl.is_zero() {
            return;
        }
        let mut subdirs = Vec::new();
        for (name, stat, link, no_xattrs) in entries {
            let path = paths::join(dir, name);
            if file_type(stat.mode) == libc::S_IFDIR {
                subdirs.push(name.to_vec());
                let same = |a: &Ahead| {
                    (a.stat.ino, a.stat.dev, a.stat.mtime_ns, a.stat.ctime_ns)
                        == (stat.ino, stat.dev, stat.mtime_ns, stat.ctime_ns)
                };
                if self.ahead.get(&path).is_some_and(|a| !same(a)) {
                    self.ahead.remove(&path);
                }
            }
            self.entries.insert(
                path,
                Meta {
                    stat,
                    link,
                    no_xattrs,
                    at,
                },
            );
        }
        self.listed.insert(dir.to_vec(), at);
        self.subdirs.insert(dir.to_vec(), subdirs);
    }

    /// Whether directory `dir` was listed within the validity.
    fn listed_fresh(&self, dir: &[u8], now: Instant) -> bool {
        self.listed
            .get(dir)
            .is_some_and(|at| now.duration_since(*at) < self.ttl)
    }

    /// Whether an open of the clean directory path `dir` looks like a step
    /// of a tree walk: the job listed its parent and grandparent (at any
    /// time: a walk longer than the validity is still a walk; this only
    /// decides whether to ask for more, never what is believed) and
    /// nothing changed them since.
    pub(crate) fn walking(&self, dir: &[u8]) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let Some((parent, _)) = paths::split(dir) else {
            return false;
        };
        let Some((grand, _)) = paths::split(parent) else {
            return false;
        };
        self.listed.contains_key(parent) && self.listed.contains_key(grand)
    }

    /// Up to `max` subdirectories of the clean path `dir`'s parent (by
    /// its listing within the validity), other than `dir`, neither listed
    /// nor read ahead within the validity: what a walk opens after `dir`.
    pub(crate) fn siblings_to_list(&self, dir: &[u8], max: usize) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let Some((parent, _)) = paths::split(dir) else {
            return Vec::new();
        };
        if !self.listed_fresh(parent, now) {
            return Vec::new();
        }
        let Some(names) = self.subdirs.get(parent) else {
            return Vec::new();
        };
        names
            .iter()
            .map(|n| paths::join(parent, n))
            .filter(|p| {
                p != dir
                    && !self.listed_fresh(p, now)
                    && self
                        .ahead
                        .get(p)
                        .is_none_or(|a| now.duration_since(a.at) >= self.ttl)
            })
            .take(max)
            .collect()
    }

    /// Keeps the listings the home read ahead after `at` (clean paths
    /// only; see the module docs); returns how many were kept.
    pub(crate) fn put_ahead(&mut self, listings: Vec<Listing>, at: Instant) -> usize {
        if self.ttl.is_zero() {
            return 0;
        }
        let now = Instant::now();
        if self.ahead.len() + listings.len() > AHEAD_KEEP {
            let ttl = self.ttl;
            self.ahead.retain(|_, a| now.duration_since(a.at) < ttl);
        }
        let mut kept = 0;
        for l in listings {
            if !paths::is_clean(&l.path) || self.ahead.len() >= AHEAD_KEEP {
                continue;
            }
            self.ahead.insert(
                l.path.0,
                Ahead {
                    stat: l.stat,
                    entries: l.entries,
                    at,
                },
            );
            kept += 1;
        }
        kept
    }

    /// The listing read ahead of the clean directory path `dir`, if one
    /// is valid; it is used once (the open lists `dir` with it).
    pub(crate) fn take_ahead(&mut self, dir: &[u8]) -> Option<Ahead> {
        let a = self.ahead.remove(dir)?;
        (Instant::now().duration_since(a.at) < self.ttl).then_some(a)
    }

    /// Records one entry's `lstat` (from a forwarded call or an open).
    pub(crate) fn put(&mut self, path: &[u8], stat: FileStat, link: Option<Vec<u8>>) {
        self.put_at(path, stat, link, Instant::now());
    }

    /// Records one entry's `lstat` learnt `at`.
    pub(crate) fn put_at(
        &mut self,
        path: &[u8],
        stat: FileStat,
        link: Option<Vec<u8>>,
        at: Instant,
    ) {
        if self.ttl.is_zero() || !paths::is_clean(path) {
            return;
        }
        self.entries.insert(
            path.to_vec(),
            Meta {
                stat,
                link,
                no_xattrs: false,
                at,
            },
        );
    }

    /// Takes the launch's pre-answered lookups (at most [`MAX_LOOKUPS`])
    /// as if the job had asked them: a found path as its `lstat` entry (a
    /// link target only with a symlink's mode), a missing one as an
    /// `lstat` `ENOENT`. Paths that are not clean are ignored.
    pub(crate) fn seed(&mut self, lookups: &[(Blob, Lookup)]) {
        for (path, answer) in lookups.iter().take(MAX_LOOKUPS) {
            match answer {
                Lookup::Found { stat, link } => {
                    let link = link
                        .as_ref()
                        .filter(|_| file_type(stat.mode) == libc::S_IFLNK)
                        .map(|l| l.0.clone());
                    self.put(path, *stat, link);
                }
                Lookup::Missing => self.put_lookup(path, false, None),
            }
        }
    }

    /// Forgets `path` and, when `tree`, everything below it, and the
    /// listing of its parent (a name appeared, vanished or changed there).
    pub(crate) fn invalidate(&mut self, path: &[u8], tree: bool) {
        let path = paths::tidy(path);
        // A change may move what any path resolves to (through symlinks)
        // or create a name: forget every lookup answer.
        self.followed.clear();
        self.missing.clear();
        self.entries.remove(&path);
        self.listed.remove(&path);
        self.ahead.remove(&path);
        if tree {
            self.entries.retain(|k, _| !paths::is_under(k, &path));
            self.listed.retain(|k, _| !paths::is_under(k, &path));
            self.ahead.retain(|k, _| !paths::is_under(k, &path));
        }
        if let Some((parent, _)) = paths::split(&path) {
            self.entries.remove(parent);
            self.listed.remove(parent);
            self.ahead.remove(parent);
            // The parent's own entry is gone (its times changed): its
            // parent's listing must not answer `ENOENT` for it now.
            if let Some((grand, _)) = paths::split(parent) {
                self.listed.remove(grand);
            }
        }
    }
}

/// `S_IFMT` of a mode.
pub(crate) fn file_type(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

fn split_ns(ns: i64) -> (i64, i64) {
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// `struct stat` (x86_64 layout) for `s`.
pub(crate) fn kernel_stat(s: &FileStat) -> libc::stat {
    // SAFETY: libc::stat is plain integers; all-zero is a valid value.
    let mut k: libc::stat = unsafe { std::mem::zeroed() };
    k.st_dev = s.dev;
    k.st_ino = s.ino;
    k.st_nlink = s.nlink as _;
    k.st_mode = s.mode;
    k.st_uid = s.uid;
    k.st_gid = s.gid;
    k.st_rdev = s.rdev;
    k.st_size = s.size as i64;
    k.st_blksize = s.blksize as _;
    k.st_blocks = s.blocks as i64;
    (k.st_atime, k.st_atime_nsec) = split_ns(s.atime_ns);
    (k.st_mtime, k.st_mtime_nsec) = split_ns(s.mtime_ns);
    (k.st_ctime, k.st_ctime_nsec) = split_ns(s.ctime_ns);
    k
}

/// `struct statx` for `s`: the basic fields, no birth time.
pub(crate) fn kernel_statx(s: &FileStat) -> libc::statx {
    // SAFETY: libc::statx is plain integers; all-zero is a valid value.
    let mut k: libc::statx = unsafe { std::mem::zeroed() };
    k.stx_mask = libc::STATX_BASIC_STATS;
    k.stx_blksize = s.blksize as u32;
    k.stx_nlink = s.nlink as u32;
    k.stx_uid = s.uid;
    k.stx_gid = s.gid;
    k.stx_mode = s.mode as u16;
    k.stx_ino = s.ino;
    k.stx_size = s.size;
    k.stx_blocks = s.blocks;
    let ts = |ns: i64| {
        let (sec, nsec) = split_ns(ns);
        // SAFETY: plain integers; all-zero is a valid value.
        let mut t: libc::statx_timestamp = unsafe { std::mem::zeroed() };
        t.tv_sec = sec;
        t.tv_nsec = nsec as u32;
        t
    };
    k.stx_atime = ts(s.atime_ns);
    k.stx_mtime = ts(s.mtime_ns);
    k.stx_ctime = ts(s.ctime_ns);
    k.stx_rdev_major = libc::major(s.rdev);
    k.stx_rdev_minor = libc::minor(s.rdev);
    k.stx_dev_major = libc::major(s.dev);
    k.stx_dev_minor = libc::minor(s.dev);
    k
}

/// `struct statfs` as the x86_64 kernel writes it (libc's hides `f_flags`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KernelStatfs {
    f_type: i64,
    f_bsize: i64,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    f_files: u64,
    f_ffree: u64,
    f_fsid: [i32; 2],
    f_namelen: i64,
    f_frsize: i64,
    f_flags: i64,
    f_spare: [i64; 4],
}

/// `struct statfs` for `s`.
pub(crate) fn kernel_statfs(s: &StatFs) -> KernelStatfs {
    KernelStatfs {
        f_type: s.kind,
        f_bsize: s.bsize,
        f_blocks: s.blocks,
        f_bfree: s.bfree,
        f_bavail: s.bavail,
        f_files: s.files,
        f_ffree: s.ffree,
        f_namelen: s.namelen,
        f_frsize: s.frsize,
        f_flags: s.flags,
        ..Default::default()
    }
}

/// The bytes of a plain kernel structure.
pub(crate) fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: reading the bytes of a Copy value of plain integers.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structs_match_the_kernels_own() {
        let m = std::fs::metadata("/usr/bin").unwrap();
        let s = super::super::tests::fake_home::stat_of(&m);
        // SAFETY: plain stat calls on zeroed buffers.
        let (real, realx) = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::stat(c"/usr/bin".as_ptr(), &mut st), 0);
            let mut stx: libc::statx = std::mem::zeroed();
            assert_eq!(
                libc::statx(
                    libc::AT_FDCWD,
                    c"/usr/bin".as_ptr(),
                    0,
                    libc::STATX_BASIC_STATS,
                    &mut stx
                ),
                0
            );
            (st, stx)
        };
        assert_eq!(bytes_of(&kernel_stat(&s)), bytes_of(&real));
        let mine = kernel_statx(&s);
        assert_eq!(mine.stx_ino, realx.stx_ino);
        assert_eq!(mine.stx_mode, realx.stx_mode);
        assert_eq!(mine.stx_dev_major, realx.stx_dev_major);
        assert_eq!(mine.stx_dev_minor, realx.stx_dev_minor);
        assert_eq!(mine.stx_mtime.tv_sec, realx.stx_mtime.tv_sec);
        assert_eq!(mine.stx_mtime.tv_nsec, realx.stx_mtime.tv_nsec);
        assert_eq!(mine.stx_size, realx.stx_size);
        assert_eq!(mine.stx_nlink, realx.stx_nlink);
        assert_eq!(std::mem::size_of::<KernelStatfs>(), 120);
        assert_eq!(
            std::mem::size_of::<KernelStatfs>(),
            std::mem::size_of::<libc::statfs>()
        );
    }

    fn dir_stat(ino: u64) -> FileStat {
        FileStat {
            ino,
            mode: libc::S_IFDIR | 0o755,
            ..Default::default()
        }
    }

    fn listing(path: &str, ino: u64, names: &[&str]) -> Listing {
        Listing {
            path: Blob::from(path),
            stat: dir_stat(ino),
            entries: names
                .iter()
                .map(|n| dscp_dicp::msg::fs::DirEntry {
                    name: Blob::from(*n),
                    stat: Some(dir_stat(7)),
                    link: None,
                    no_xattrs: false,
                })
                .collect(),
        }
    }

    #[test]
    fn listings_read_ahead_are_used_once_until_they_expire_or_change() {
        let ttl = Duration::from_secs(60);
        let mut c = MetaCache::new(ttl);
        let now = Instant::now();
        let kept = c.put_ahead(
            vec![
                listing("/t/a", 1, &["x"]),
                listing("/t/b", 2, &[]),
                listing("/t/c", 3, &[]),
                listing("/t/d", 4, &[]),
                listing("/t/../e", 5, &[]),
            ],
            now,
        );
        assert_eq!(kept, 4, "a path that is not clean is not kept");
        let a = c.take_ahead(b"/t/a").unwrap();
        assert_eq!((a.stat.ino, a.entries.len(), a.at), (1, 1, now));
        assert!(c.take_ahead(b"/t/a").is_none(), "used once");
        // A newer listing of the directory itself, or of its parent
        // showing it changed, replaces it; the same stat keeps it.
        c.put_listing(b"/t/b", std::iter::empty());
        assert!(c.take_ahead(b"/t/b").is_none());
        c.put_listing(
            b"/t",
            [
                (&b"c"[..], dir_stat(3), None, false),
                (&b"d"[..], dir_stat(40), None, false),
            ]
            .into_iter(),
        );
        assert!(c.take_ahead(b"/t/d").is_none(), "another inode");
        assert!(c.take_ahead(b"/t/c").is_some(), "the same directory");
        // Any change the job makes in it, to it or above it forgets it.
        c.put_ahead(vec![listing("/u/a", 1, &[]), listing("/u/b", 2, &[])], now);
        c.put_ahead(vec![listing("/v/a", 1, &[])], now);
        c.invalidate(b"/u/a/new", false);
        assert!(c.take_ahead(b"/u/a").is_none());
        c.invalidate(b"/u/b", false);
        assert!(c.take_ahead(b"/u/b").is_none());
        c.invalidate(b"/v", true);
        assert!(c.take_ahead(b"/v/a").is_none());
        // Older than the validity: not used.
        let old = now.checked_sub(ttl + Duration::from_millis(1)).unwrap();
        c.put_ahead(vec![listing("/w/a", 1, &[])], old);
        assert!(c.take_ahead(b"/w/a").is_none());
        // No validity, nothing kept.
        let mut z = MetaCache::new(Duration::ZERO);
        assert_eq!(z.put_ahead(vec![listing("/t/a", 1, &[])], now), 0);
        assert!(z.take_ahead(b"/t/a").is_none());
    }

    #[test]
    fn a_walk_is_an_open_below_two_listed_levels_and_names_unlisted_siblings() {
        let mut c = MetaCache::new(Duration::from_secs(60));
        let d = |n: &'static str| (n.as_bytes(), dir_stat(1), None, false);
        c.put_listing(b"/r", [d("t")].into_iter());
        assert!(!c.walking(b"/r/t/a"), "the parent is not listed");
        c.put_listing(b"/r/t", [d("a"), d("b"), d("c"), d("d")].into_iter());
        assert!(c.walking(b"/r/t/a"));
        assert!(!c.walking(b"/r/t") && !c.walking(b"/"));
        c.put_listing(b"/r/t/b", std::iter::empty());
        c.put_ahead(vec![listing("/r/t/c", 1, &[])], Instant::now());
        assert_eq!(c.siblings_to_list(b"/r/t/a", 10), vec![b"/r/t/d".to_vec()]);
        assert_eq!(
            c.siblings_to_list(b"/r/t/x", 1),
            vec![b"/r/t/a".to_vec()],
            "at most as many as asked"
        );
        c.invalidate(b"/r/t/y", false);
        assert!(!c.walking(b"/r/t/a") && c.siblings_to_list(b"/r/t/a", 10).is_empty());
        // A walk longer than the validity is still a walk, but expired
        // listings name no siblings.
        let old = Instant::now().checked_sub(Duration::from_secs(61)).unwrap();
        c.put_listing_at(b"/q", [d("r")].into_iter(), old);
        c.put_listing_at(b"/q/r", [d("s"), d("t")].into_iter(), old);
        assert!(c.walking(b"/q/r/s"));
        assert!(c.siblings_to_list(b"/q/r/s", 10).is_empty());
    }

    #[test]
    fn listing_answers_entries_and_absence_until_invalidated() {
        let mut c = MetaCache::new(Duration::from_secs(60));
        let st = FileStat {
            size: 3,
            ..Default::default()
        };
        c.put_listing(b"/d", [(&b"a"[..], st, None, false)].into_iter());
        assert!(matches!(c.known(b"/d/a"), Known::Entry(m) if m.stat.size == 3));
        assert!(matches!(c.known(b"/d/b"), Known::Absent));
        assert!(matches!(c.known(b"/e/b"), Known::Unknown));
        c.invalidate(b"/d/b", false);
        assert!(matches!(c.known(b"/d/b"), Known::Unknown));
        assert!(matches!(c.known(b"/d/a"), Known::Entry(_)));
        // A change inside a listed subdirectory forgets that directory's
        // entry, and its parent's listing no longer says it is absent.
        c.put_listing(b"/p", [(&b"q"[..], st, None, false)].into_iter());
        c.put_listing(b"/p/q", [(&b"r"[..], st, None, false)].into_iter());
        c.invalidate(b"/p/q/new", false);
        assert!(matches!(c.known(b"/p/q"), Known::Unknown));
        c.invalidate(b"/d", true);
        assert!(matches!(c.known(b"/d/a"), Known::Unknown));
        // Lookup answers: `stat` results and ENOENT, until any change.
        c.put_lookup(b"/e/s", true, Some(&st));
        c.put_lookup(b"/e/gone", true, None);
        c.put_lookup(b"/e/lgone", false, None);
        assert!(matches!(c.followed(b"/e/s"), Some(Ok(s)) if s.size == 3));
        assert!(matches!(c.followed(b"/e/gone"), Some(Err(()))));
        assert!(c.missing(b"/e/gone", true) && !c.missing(b"/e/gone", false));
        assert!(c.missing(b"/e/lgone", true) && c.missing(b"/e/lgone", false));
        assert!(c.followed(b"/e/other").is_none());
        c.invalidate(b"/x/y", false);
        assert!(c.followed(b"/e/s").is_none());
        assert!(!c.missing(b"/e/gone", true));
        // The launch's lookups: the same answers, the same invalidation.
        let mut c = MetaCache::new(Duration::from_secs(60));
        let link = FileStat {
            mode: libc::S_IFLNK | 0o777,
            ..st
        };
        let bogus_link = Some(Blob::from("x"));
        c.seed(&[
            (Blob::from("/etc/ld.so.preload"), Lookup::Missing),
            (
                Blob::from("/usr/bin/py"),
                Lookup::Found {
                    stat: link,
                    link: Some(Blob::from("py3")),
                },
            ),
            (
                Blob::from("/usr/bin/py3"),
                Lookup::Found {
                    stat: st,
                    link: bogus_link,
                },
            ),
            (Blob::from("/usr/../etc/x"), Lookup::Missing),
            (Blob::from("relative"), Lookup::Missing),
        ]);
        assert!(c.missing(b"/etc/ld.so.preload", true));
        assert!(matches!(c.followed(b"/etc/ld.so.preload"), Some(Err(()))));
        assert!(
            matches!(c.known(b"/usr/bin/py"), Known::Entry(m) if m.link.as_deref() == Some(&b"py3"[..]))
        );
        assert!(
            matches!(c.known(b"/usr/bin/py3"), Known::Entry(m) if m.link.is_none() && m.stat.size == 3)
        );
        assert!(!c.missing(b"/usr/../etc/x", true) && !c.missing(b"relative", true));
        // No listing came with them: a sibling is unknown, not absent.
        assert!(matches!(c.known(b"/usr/bin/other"), Known::Unknown));
        c.invalidate(b"/usr/bin/py3", false);
        assert!(!c.missing(b"/etc/ld.so.preload", true));
        assert!(matches!(c.known(b"/usr/bin/py3"), Known::Unknown));
        let many: Vec<(Blob, Lookup)> = (0..MAX_LOOKUPS + 5)
            .map(|i| (Blob::from(format!("/m/{i}").as_str()), Lookup::Missing))
            .collect();
        c.seed(&many);
        assert!(c.missing(format!("/m/{}", MAX_LOOKUPS - 1).as_bytes(), true));
        assert!(!c.missing(format!("/m/{MAX_LOOKUPS}").as_bytes(), true));
        let mut z = MetaCache::new(Duration::ZERO);
        z.put_listing(b"/d", [(&b"a"[..], st, None, false)].into_iter());
        assert!(matches!(z.known(b"/d/a"), Known::Unknown));
        z.put_lookup(b"/e/gone", true, None);
        assert!(z.followed(b"/e/gone").is_none() && !z.missing(b"/e/gone", true));
    }
}
