//! Central-only files and "same as local" runs: the ground work of every
//! test that runs a job over central's files (files, process trees,
//! faults). A test builds its files on central in a [`Files`] tree, starts
//! a cluster whose nodes cannot see that tree ([`Files::cluster`]), runs a
//! command through `diatom exec` ([`remote`]) and locally on central
//! ([`local_in`]), and compares the two byte for byte ([`same_as_local`]).
// Test-support code: panics are its way of failing a test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::cluster::{
    as_user, describe, pseudo_random, set_mode, shell_status, DiatomCluster, Feed, Spawned,
};
use crate::netns::MountView;
use crate::testdir::TestDir;

/// The test's C sources and Python scripts.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/files");
/// Size of the large file: 256 MiB.
pub const BIG: usize = 256 << 20;
/// How long one ordinary remote command may take.
pub const RUN: Duration = Duration::from_secs(120);
/// How long a command over the large file may take.
pub const RUN_BIG: Duration = Duration::from_secs(300);
/// A fixed modification time (2021-03-04 05:06:07 UTC) for trees listed
/// with dates, so listings do not depend on when the test ran.
pub const EPOCH: i64 = 1_614_834_367;

// ----- central's files and the nodes' view of them ---------------------------

/// The files of one test on central. `only` is central-only; `shared`
/// exists on the nodes too, with the contents of `node_shared`.
pub struct Files {
    /// `<files>`: hidden from the nodes as a whole.
    pub root: TestDir,
    /// `<files>/only`.
    pub only: PathBuf,
    /// `<files>/shared`: central's copy.
    pub shared: PathBuf,
    /// The node's copy of `shared` (outside `<files>`, bound over
    /// `<files>/shared` on the nodes).
    pub node_shared: TestDir,
}

impl Files {
    pub fn new(test: &str) -> Files {
        let root = TestDir::new(&format!("{test}-files")).expect("create test files dir");
        let node_shared = TestDir::new(&format!("{test}-nodecopy")).expect("create node copy");
        let only = root.join("only");
        let shared = root.join("shared");
        for d in [root.path(), &only, &shared, node_shared.path()] {
            std::fs::create_dir_all(d).unwrap();
            // Readable by the unprivileged caller.
            set_mode(d, 0o755);
        }
        Files {
            root,
            only,
            shared,
            node_shared,
        }
    }

    /// A path in the central-only directory.
    pub fn only(&self, rel: &str) -> PathBuf {
        self.only.join(rel)
    }

    /// The nodes' mount view: `<files>` is an empty tmpfs holding only
    /// `shared`, the node's copy.
    pub fn node_view(&self) -> MountView {
        MountView::new()
            .hide(self.root.path())
            .bind(self.node_shared.path(), &self.shared)
    }

    /// A one-node cluster whose node sees [`node_view`](Self::node_view);
    /// checked to lack the central-only directory.
    pub fn cluster(&self, name: &str) -> DiatomCluster {
        let c = DiatomCluster::builder(1)
            .name(name)
            .node_mounts(self.node_view())
            .start();
        assert_node_lacks(&c, &self.only);
        c
    }
}

/// Panics unless `path` is missing from node 1's view of the file system:
/// the premise that makes a test of central-only files meaningful.
pub fn assert_node_lacks(c: &DiatomCluster, path: &Path) {
    let seen = c.node_view(1, path);
    assert!(
        std::fs::symlink_metadata(&seen).is_err(),
        "test setup: {} should not exist in node1's mount namespace, but {} does",
        path.display(),
        seen.display()
    );
}

/// Writes `data` to `path` (creating parents), mode `mode`.
pub fn put(path: &Path, data: &[u8], mode: u32) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Copies a fixture file to `to`.
pub fn fixture(name: &str, to: &Path) {
    let from = Path::new(FIXTURES).join(name);
    let data = std::fs::read(&from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    put(to, &data, 0o644);
}

/// `size` bytes (a multiple of 1 MiB) of pseudo-random data, written in
/// 1 MiB blocks: one xorshift block, each copy stamped with its index, so
/// no two blocks are equal and a misplaced block changes every digest.
pub fn write_big(path: &Path, size: usize, seed: u64) {
    let base = pseudo_random(1 << 20, seed);
    let mut f = std::fs::File::create(path).unwrap();
    for i in 0..(size >> 20) as u64 {
        f.write_all(&i.to_le_bytes()).unwrap();
        f.write_all(&base[8..]).unwrap();
    }
    f.sync_all().unwrap();
    set_mode(path, 0o644);
}

/// Lines of text, `n` of them, for small data files.
pub fn lines(n: usize, tag: &str) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{tag} line {i:05}: the quick brown fox {}\n",
                i * 7919 % 1000
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// Sets the access and modification times of `path` (not following a
/// symlink) to [`EPOCH`] + `offset` seconds and some nanoseconds.
pub fn set_times(path: &Path, offset: i64) {
    let t = TimeSpec::new(EPOCH + offset, 123_456_789);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

// ----- running the same command on a node and locally ------------------------

pub fn exec_args(argv: &[&str]) -> Vec<OsString> {
    ["exec", "--"]
        .iter()
        .chain(argv)
        .map(OsString::from)
        .collect()
}

/// `diatom exec -- ARGV` as the test's user (root) from `cwd` on central.
pub fn remote(c: &DiatomCluster, cwd: &Path, argv: &[&str], timeout: Duration) -> Output {
    let mut cmd = c.diatom_cmd(exec_args(argv));
    cmd.current_dir(cwd);
    c.run(cmd, Feed::Null, timeout)
}

/// `diatom exec -- ARGV` as `uid:uid` (no supplementary groups) from `cwd`.
pub fn remote_as(c: &DiatomCluster, uid: u32, cwd: &Path, argv: &[&str]) -> Output {
    let mut cmd = c.diatom_cmd_as(uid, uid, exec_args(argv));
    cmd.current_dir(cwd);
    c.run(cmd, Feed::Null, RUN)
}

/// ARGV run locally on central (the test's namespace) from `cwd`, as
/// `uid:uid` when given: the reference.
pub fn local_in(cwd: &Path, argv: &[&str], uid: Option<u32>, timeout: Duration) -> Output {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).current_dir(cwd);
    if let Some(uid) = uid {
        as_user(&mut cmd, uid, uid);
    }
    Spawned::spawn(cmd, Feed::Null).wait_or_panic(timeout, "local reference run")
}

/// Asserts a remote run exited and printed exactly like the local one.
pub fn assert_like_local(remote: &Output, local: &Output, what: &str) {
    assert!(
        remote.status.code() == shell_status(local)
            && remote.stdout == local.stdout
            && remote.stderr == local.stderr,
        "{what}: the `diatom exec` run differs from the local run on central\n\
         diatom exec: {}\nlocal:       {}\n(daemon logs follow)",
        describe(remote),
        describe(local)
    );
}

/// Runs ARGV through `diatom exec` and locally, both from `cwd` as root,
/// asserts the local run succeeded and the two are identical; returns the
/// remote output.
pub fn same_as_local(c: &DiatomCluster, cwd: &Path, argv: &[&str], timeout: Duration) -> Output {
    same_as_local_timed(c, cwd, argv, timeout).0
}

/// [`same_as_local`], also returning how long the `diatom exec` run took.
pub fn same_as_local_timed(
    c: &DiatomCluster,
    cwd: &Path,
    argv: &[&str],
    timeout: Duration,
) -> (Output, Duration) {
    let what = format!("`{}` in {}", argv.join(" "), cwd.display());
    let start = Instant::now();
    let r = remote(c, cwd, argv, timeout);
    let took = start.elapsed();
    let l = local_in(cwd, argv, None, timeout);
    assert!(
        l.status.success() && !l.stdout.is_empty(),
        "test setup: local {what} should succeed and print something: {}",
        describe(&l)
    );
    assert_like_local(&r, &l, &what);
    if took > Duration::from_secs(2) {
        eprintln!("{what} through diatom exec took {took:?}");
    }
    (r, took)
}

/// Runs ARGV through `diatom exec` and locally, both from `cwd` as root;
/// `None` when they exit and print the same (and the local run succeeds),
/// else what differs. For tests that report every case at once.
pub fn differs(c: &DiatomCluster, cwd: &Path, argv: &[&str]) -> Option<String> {
    let r = remote(c, cwd, argv, RUN);
    let l = local_in(cwd, argv, None, RUN);
    assert!(
        l.status.success(),
        "test setup: local `{}` should succeed: {}",
        argv.join(" "),
        describe(&l)
    );
    (r.status.code() != shell_status(&l) || r.stdout != l.stdout || r.stderr != l.stderr).then(
        || {
            format!(
                "`{}` in {}:\n  diatom exec: {}\n  local:       {}",
                argv.join(" "),
                cwd.display(),
                describe(&r),
                describe(&l)
            )
        },
    )
}

/// What a tree holds, entry by entry (relative path -> kind, mode, size
/// and content digest or link target), for comparing two trees.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    pub fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mode = m.permissions().mode() & 0o7777;
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(base, &p, out);
                format!("dir {mode:o}")
            } else {
                let data = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                data.hash(&mut h);
                format!("file {mode:o} {} bytes {:016x}", data.len(), h.finish())
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Reads a file on central, panicking with a message that says what the
/// job should have left there.
pub fn read_central(path: &Path, what: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{what}: cannot read {} on central after the job exited: {e}",
            path.display()
        )
    })
}
