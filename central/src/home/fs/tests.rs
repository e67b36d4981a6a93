//! The file service against temporary directories: every request kind,
//! success and errno cases, write-back, exec images, and permissions as a
//! non-root caller (a forked child that drops to nobody).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use dscp_dicp::msg::fs::{Request as R, Response};
use dscp_dicp::msg::Blob;

use super::*;

/// A fresh directory (mode 0755, canonical path) removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "diatom-homefs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TempDir(std::fs::canonicalize(&p).expect("canonicalize"))
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn blob(&self, rel: &str) -> Blob {
        b(&self.path(rel))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn b(p: &Path) -> Blob {
    Blob(p.as_os_str().as_bytes().to_vec())
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[track_caller]
fn errno(r: Response) -> i32 {
    match r {
        Response::Errno(e) => e,
        other => panic!("expected an errno, got {other:?}"),
    }
}

#[track_caller]
fn ok(r: Response) {
    assert_eq!(r, Response::Ok);
}

#[track_caller]
fn stat_of(r: Response) -> FileStat {
    match r {
        Response::Stat(s) => s,
        other => panic!("expected a stat, got {other:?}"),
    }
}

#[track_caller]
fn opened(r: Response) -> (Vec<u8>, FileStat, Option<Handle>) {
    match r {
        Response::Opened {
            canonical,
            stat,
            handle,
            ..
        } => (canonical.0, stat, handle),
        other => panic!("expected Opened, got {other:?}"),
    }
}

/// Each request fails with its errno.
#[track_caller]
fn expect_errnos(s: &mut FileService, cases: impl IntoIterator<Item = (R, i32)>) {
    for (req, want) in cases {
        let what = format!("{req:?}");
        assert_eq!(s.handle(req), Response::Errno(want), "{what}");
    }
}

fn stat_req(path: Blob, follow: bool) -> R {
    R::Stat { path, follow }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Reimplements `diatom_tests::require_root` (central cannot depend on
/// that crate): true when root; otherwise a printed skip, or a failure in
/// CI, where a skip is not allowed.
fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: needs root, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs root (run as root or in CI)");
    false
}

#[test]
fn relative_and_nul_paths_are_einval() {
    let mut s = FileService::new();
    let rel = Blob::from("etc/passwd");
    for req in [
        R::Stat {
            path: rel.clone(),
            follow: true,
        },
        R::Access {
            path: rel.clone(),
            mode: 0,
            flags: 0,
        },
        R::Readlink { path: rel.clone() },
        R::Open {
            path: rel.clone(),
            flags: libc::O_RDONLY,
            mode: 0,
        },
        R::Read {
            path: rel.clone(),
            stamp: Default::default(),
            offset: 0,
            len: 1,
        },
        R::ReadDir {
            path: Blob::from(""),
        },
        R::Mkdir {
            path: rel.clone(),
            mode: 0o755,
        },
        R::Unlink { path: rel.clone() },
        R::Rmdir { path: rel.clone() },
        R::Rename {
            from: Blob::from("/nonexistent-diatom"),
            to: rel.clone(),
            flags: 0,
        },
        R::Link {
            from: rel.clone(),
            to: Blob::from("/nonexistent-diatom"),
            follow: false,
        },
        R::Symlink {
            target: Blob::from("x"),
            path: rel.clone(),
        },
        R::Chmod {
            path: rel.clone(),
            mode: 0o644,
        },
        R::Chown {
            path: rel.clone(),
            uid: u32::MAX,
            gid: u32::MAX,
            follow: true,
        },
        R::Truncate {
            path: rel.clone(),
            len: 0,
        },
        R::Utimens {
            path: rel.clone(),
            atime: (0, libc::UTIME_OMIT),
            mtime: (0, libc::UTIME_OMIT),
            follow: true,
        },
        R::Statfs { path: rel.clone() },
        R::Exec {
            path: Blob::from("bin/true"),
            argv: vec![],
            envp: vec![],
        },
        R::Stat {
            path: Blob(b"/etc\0/passwd".to_vec()),
            follow: true,
        },
    ] {
        let what = format!("{req:?}");
        assert_eq!(s.handle(req), Response::Errno(libc::EINVAL), "{what}");
    }
}

#[test]
fn stat_lstat_and_errors() {
    let t = TempDir::new();
    write(&t.path("f"), b"hello", 0o640);
    std::os::unix::fs::symlink("f", t.path("l")).expect("symlink");
    let mut s = FileService::new();
    let st = stat_of(s.handle(R::Stat {
        path: t.blob("l"),
        follow: true,
    }));
    let meta = std::fs::metadata(t.path("f")).expect("meta");
    assert_eq!(st.mode, libc::S_IFREG | 0o640);
    assert_eq!(st.size, 5);
    assert_eq!((st.ino, st.dev, st.nlink), (meta.ino(), meta.dev(), 1));
    assert_eq!((st.uid, st.gid), (meta.uid(), meta.gid()));
    assert_eq!(st.blksize, meta.blksize());
    assert_eq!(st.blocks, meta.blocks());
    assert_eq!(
        st.mtime_ns,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );
    assert_eq!(
        st.atime_ns,
        meta.atime() * 1_000_000_000 + meta.atime_nsec()
    );
    assert_eq!(
        st.ctime_ns,
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
    );
    // The same stamp as the launch and Fetch paths compute.
    assert_eq!(st.stamp(), crate::home::session::stamp(&meta));

    let lst = stat_of(s.handle(R::Stat {
        path: t.blob("l"),
        follow: false,
    }));
    assert_eq!(lst.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(lst.size, 1);

    std::os::unix::fs::symlink("nowhere", t.path("dangling")).expect("symlink");
    std::os::unix::fs::symlink("loop", t.path("loop")).expect("symlink");
    expect_errnos(
        &mut s,
        [
            (stat_req(t.blob("missing"), true), libc::ENOENT),
            (stat_req(t.blob("f/x"), true), libc::ENOTDIR),
            (stat_req(t.blob("dangling"), true), libc::ENOENT),
            (stat_req(t.blob("loop"), true), libc::ELOOP),
        ],
    );
    ok(s.handle(R::Access {
        path: t.blob("loop"),
        mode: 0,
        flags: libc::AT_SYMLINK_NOFOLLOW as u32,
    }));
}

#[test]
fn times_beyond_2262_do_not_panic() {
    let t = TempDir::new();
    write(&t.path("f"), b"x", 0o644);
    let mut s = FileService::new();
    // Year ~2603: its nanosecond count does not fit in an i64.
    let far = 20_000_000_000i64;
    let set = s.handle(R::Utimens {
        path: t.blob("f"),
        atime: (far, 0),
        mtime: (far, 0),
        follow: true,
    });
    if set != Response::Ok {
        eprintln!("file system refused a far time ({set:?}); nothing to check");
        return;
    }
    let st = stat_of(s.handle(R::Stat {
        path: t.blob("f"),
        follow: true,
    }));
    let meta = std::fs::metadata(t.path("f")).expect("meta");
    if meta.mtime() > i64::MAX / 1_000_000_000 {
        assert_eq!(st.mtime_ns, i64::MAX);
    }
    assert_eq!(st.stamp(), crate::home::session::stamp(&meta));
}

#[test]
fn access_follows_or_not() {
    let t = TempDir::new();
    write(&t.path("f"), b"", 0o644);
    std::os::unix::fs::symlink("nowhere", t.path("dangling")).expect("symlink");
    let mut s = FileService::new();
    let acc = |s: &mut FileService, p: &str, mode: i32, flags: i32| {
        s.handle(R::Access {
            path: t.blob(p),
            mode: mode as u32,
            flags: flags as u32,
        })
    };
    ok(acc(&mut s, "f", libc::F_OK, 0));
    ok(acc(&mut s, "f", libc::R_OK, libc::AT_EACCESS));
    // No execute bit at all: EACCES even for root.
    assert_eq!(errno(acc(&mut s, "f", libc::X_OK, 0)), libc::EACCES);
    assert_eq!(errno(acc(&mut s, "missing", libc::F_OK, 0)), libc::ENOENT);
    assert_eq!(errno(acc(&mut s, "dangling", libc::F_OK, 0)), libc::ENOENT);
    ok(acc(
        &mut s,
        "dangling",
        libc::F_OK,
        libc::AT_SYMLINK_NOFOLLOW,
    ));
    assert_eq!(errno(acc(&mut s, "f", 0o100, 0)), libc::EINVAL);
}

#[test]
fn readlink_and_statfs() {
    let t = TempDir::new();
    write(&t.path("f"), b"", 0o644);
    std::os::unix::fs::symlink("some/where/../f", t.path("l")).expect("symlink");
    let long = "x".repeat(3000);
    std::os::unix::fs::symlink(&long, t.path("long")).expect("symlink");
    let mut s = FileService::new();
    assert_eq!(
        s.handle(R::Readlink { path: t.blob("l") }),
        Response::Link(Blob::from("some/where/../f"))
    );
    assert_eq!(
        s.handle(R::Readlink {
            path: t.blob("long")
        }),
        Response::Link(Blob::from(long.as_str()))
    );
    expect_errnos(
        &mut s,
        [
            (R::Readlink { path: t.blob("f") }, libc::EINVAL),
            (
                R::Readlink {
                    path: t.blob("missing"),
                },
                libc::ENOENT,
            ),
            (
                R::Statfs {
                    path: t.blob("missing"),
                },
                libc::ENOENT,
            ),
        ],
    );

    let Response::Statfs(fs) = s.handle(R::Statfs { path: t.blob("f") }) else {
        panic!("statfs");
    };
    let v = nix::sys::statvfs::statvfs(&t.0).expect("statvfs");
    assert!(fs.bsize > 0 && fs.namelen >= 255 && fs.blocks > 0);
    assert_eq!(fs.blocks, v.blocks());
    assert_eq!(fs.files, v.files());
    assert_ne!(fs.kind, 0);
    assert_ne!(fs.flags & 0x20, 0, "ST_VALID");
    let Response::Statfs(proc) = s.handle(R::Statfs {
        path: Blob::from("/proc"),
    }) else {
        panic!("statfs /proc");
    };
    assert_eq!(proc.kind, 0x9fa0, "PROC_SUPER_MAGIC");
}

#[test]
fn read_only_open_answers_canonical_path_and_no_handle() {
    let t = TempDir::new();
    std::fs::create_dir_all(t.path("d/sub")).expect("mkdir");
    write(&t.path("d/f"), b"content", 0o644);
    std::os::unix::fs::symlink("d/f", t.path("l")).expect("symlink");
    let mut s = FileService::new();
    let open = |s: &mut FileService, p: &str, flags: i32| {
        s.handle(R::Open {
            path: t.blob(p),
            flags,
            mode: 0,
        })
    };
    // A symlink and `..`: the canonical path is the file's.
    let (canon, st, handle) = opened(open(&mut s, "d/sub/../../l", libc::O_RDONLY));
    assert_eq!(canon, t.blob("d/f").0);
    assert_eq!(handle, None);
    assert_eq!(st.size, 7);
    assert_eq!(s.open_handles(), 0);
    // Directories.
    let (canon, st, handle) = opened(open(&mut s, "d/sub/..", libc::O_RDONLY | libc::O_DIRECTORY));
    assert_eq!(canon, t.blob("d").0);
    assert_eq!(st.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(handle, None);
    // An O_PATH probe of a symlink itself.
    let (canon, st, handle) = opened(open(&mut s, "l", libc::O_PATH | libc::O_NOFOLLOW));
    assert_eq!(canon, t.blob("l").0);
    assert_eq!(st.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(handle, None);
    // O_PATH ignores O_CREAT: no file, no handle.
    assert_eq!(
        errno(open(&mut s, "new", libc::O_PATH | libc::O_CREAT)),
        libc::ENOENT
    );

    assert_eq!(errno(open(&mut s, "missing", libc::O_RDONLY)), libc::ENOENT);
    assert_eq!(
        errno(open(&mut s, "d/f", libc::O_RDONLY | libc::O_DIRECTORY)),
        libc::ENOTDIR
    );
    assert_eq!(errno(open(&mut s, "d/f/x", libc::O_RDONLY)), libc::ENOTDIR);
    assert_eq!(errno(open(&mut s, "d", libc::O_WRONLY)), libc::EISDIR);
    assert_eq!(
        errno(open(&mut s, "d", libc::O_RDWR | libc::O_CREAT)),
        libc::EISDIR
    );
    assert_eq!(
        errno(open(
            &mut s,
            "d/f",
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL
        )),
        libc::EEXIST
    );
    assert_eq!(
        errno(open(&mut s, "l", libc::O_RDONLY | libc::O_NOFOLLOW)),
        libc::ELOOP
    );
    assert_eq!(s.open_handles(), 0);
    // O_TMPFILE: an unnamed file kept as a handle, named by LinkHandle.
    let (canonical, stat, handle) = opened(open(&mut s, "d", libc::O_TMPFILE | libc::O_RDWR));
    let handle = handle.expect("a handle for the unnamed file");
    assert!(canonical.ends_with(b" (deleted)"), "{canonical:?}");
    assert_eq!(stat.nlink, 0);
    ok(s.handle(R::Write {
        handle,
        offset: 0,
        data: Blob(b"tmp".to_vec()),
    }));
    ok(s.handle(R::LinkHandle {
        handle,
        to: t.blob("d/named"),
        empty_path: false,
    }));
    ok(s.handle(R::Close { handle }));
    assert_eq!(std::fs::read(t.path("d/named")).unwrap(), b"tmp");
    assert_eq!(s.open_handles(), 0);
}

#[test]
fn read_checks_the_stamp() {
    let t = TempDir::new();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    write(&t.path("f"), &data, 0o644);
    let mut s = FileService::new();
    let (canon, st, _) = opened(s.handle(R::Open {
        path: t.blob("f"),
        flags: libc::O_RDONLY,
        mode: 0,
    }));
    // The reader threads' encoded answer is the serve loop's, encoded.
    let read = |s: &mut FileService, offset: u64, len: u32| {
        let path = Blob(canon.clone());
        let encoded = super::read_reply(&path, &st.stamp(), offset, len).expect("encode");
        let r = s.handle(R::Read {
            path,
            stamp: st.stamp(),
            offset,
            len,
        });
        assert_eq!(
            dscp_dicp::msg::Response::decode(&encoded).expect("decode"),
            dscp_dicp::msg::Response::Fs(r.clone())
        );
        r
    };
    assert_eq!(read(&mut s, 0, 1 << 20), Response::Data(Blob(data.clone())));
    assert_eq!(
        read(&mut s, 1000, 10),
        Response::Data(Blob(data[1000..1010].to_vec()))
    );
    assert_eq!(
        read(&mut s, 99_990, 100),
        Response::Data(Blob(data[99_990..].to_vec()))
    );
    assert_eq!(read(&mut s, 200_000, 100), Response::Data(Blob(vec![])));
    assert_eq!(read(&mut s, u64::MAX, 100), Response::Errno(libc::EINVAL));
    assert_eq!(read(&mut s, 0, 0), Response::Data(Blob(vec![])));

    // Changed on central between Open and Read (same size, new mtime and ctime).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut other = data.clone();
    other[0] ^= 1;
    std::fs::write(t.path("f"), &other).expect("rewrite");
    assert_eq!(errno(read(&mut s, 0, 10)), libc::ESTALE);
    // Replaced by rename: another inode.
    write(&t.path("g"), &data, 0o644);
    std::fs::rename(t.path("g"), t.path("f")).expect("rename");
    assert_eq!(errno(read(&mut s, 0, 10)), libc::ESTALE);
    // Gone.
    std::fs::remove_file(t.path("f")).expect("rm");
    assert_eq!(errno(read(&mut s, 0, 10)), libc::ENOENT);
}

#[test]
fn read_is_capped() {
    let t = TempDir::new();
    let f = std::fs::File::create(t.path("big")).expect("create");
    f.set_len(u64::from(MAX_READ) + 4096).expect("set_len");
    drop(f);
    let mut s = FileService::new();
    let st = stat_of(s.handle(R::Stat {
        path: t.blob("big"),
        follow: true,
    }));
    let Response::Data(d) = s.handle(R::Read {
        path: t.blob("big"),
        stamp: st.stamp(),
        offset: 0,
        len: u32::MAX,
    }) else {
        panic!("read");
    };
    assert_eq!(d.len(), MAX_READ as usize);
}

#[test]
fn write_back_round_trip() {
    let t = TempDir::new();
    let mut s = FileService::new();
    let (canon, st, handle) = opened(s.handle(R::Open {
        path: t.blob("out"),
        flags: libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
        mode: 0o666,
    }));
    let h = handle.expect("a write handle");
    assert_eq!(canon, t.blob("out").0);
    assert_eq!(st.size, 0);
    // The node applied the umask already: the mode is exactly as asked.
    let meta = std::fs::metadata(t.path("out")).expect("created");
    assert_eq!(meta.mode() & 0o7777, 0o666);
    assert_eq!(s.open_handles(), 1);

    ok(s.handle(R::Write {
        handle: h,
        offset: 0,
        data: Blob::from("hello world, more"),
    }));
    ok(s.handle(R::Write {
        handle: h,
        offset: 6,
        data: Blob::from("WORLD"),
    }));
    ok(s.handle(R::SetLen { handle: h, len: 11 }));
    ok(s.handle(R::Sync { handle: h }));
    // Visible on central after Sync, before Close.
    assert_eq!(std::fs::read(t.path("out")).expect("read"), b"hello WORLD");
    ok(s.handle(R::Write {
        handle: h,
        offset: 20,
        data: Blob::from("!"),
    }));
    ok(s.handle(R::Close { handle: h }));
    assert_eq!(
        std::fs::read(t.path("out")).expect("read"),
        b"hello WORLD\0\0\0\0\0\0\0\0\0!"
    );
    assert_eq!(s.open_handles(), 0);

    // The handle is gone.
    for req in [
        R::Write {
            handle: h,
            offset: 0,
            data: Blob::from("x"),
        },
        R::SetLen { handle: h, len: 0 },
        R::Sync { handle: h },
        R::Close { handle: h },
        R::Close { handle: 0 },
        R::Sync { handle: u64::MAX },
    ] {
        assert_eq!(errno(s.handle(req)), libc::EBADF);
    }
}

#[test]
fn write_handles_for_trunc_rdwr_and_append() {
    let t = TempDir::new();
    write(&t.path("a"), b"abcdef", 0o644);
    write(&t.path("t"), b"abcdef", 0o644);
    let mut s = FileService::new();
    // O_APPEND: the node sends absolute offsets of its copy; they are kept.
    let (_, _, h) = opened(s.handle(R::Open {
        path: t.blob("a"),
        flags: libc::O_WRONLY | libc::O_APPEND,
        mode: 0,
    }));
    let h = h.expect("handle");
    ok(s.handle(R::Write {
        handle: h,
        offset: 0,
        data: Blob::from("XY"),
    }));
    ok(s.handle(R::Close { handle: h }));
    assert_eq!(std::fs::read(t.path("a")).expect("read"), b"XYcdef");
    // O_TRUNC truncates at open, even when only reading.
    let (_, st, h) = opened(s.handle(R::Open {
        path: t.blob("t"),
        flags: libc::O_RDONLY | libc::O_TRUNC,
        mode: 0,
    }));
    assert_eq!(st.size, 0);
    assert_eq!(std::fs::metadata(t.path("t")).expect("meta").len(), 0);
    let h = h.expect("O_TRUNC may write");
    // ... but that descriptor cannot write.
    assert_eq!(
        errno(s.handle(R::Write {
            handle: h,
            offset: 0,
            data: Blob::from("x"),
        })),
        libc::EBADF
    );
    ok(s.handle(R::Close { handle: h }));
    // O_RDWR, with the odd flags the home drops or adds.
    let (_, _, h) = opened(s.handle(R::Open {
        path: t.blob("t"),
        flags: libc::O_RDWR | libc::O_DIRECT | libc::O_NONBLOCK | libc::O_SYNC,
        mode: 0,
    }));
    let h = h.expect("handle");
    ok(s.handle(R::Write {
        handle: h,
        offset: 1,
        data: Blob::from("odd-sized"),
    }));
    assert_eq!(
        errno(s.handle(R::Write {
            handle: h,
            offset: u64::MAX,
            data: Blob::from("x"),
        })),
        libc::EINVAL
    );
    assert_eq!(
        errno(s.handle(R::SetLen {
            handle: h,
            len: u64::MAX
        })),
        libc::EINVAL
    );
    ok(s.handle(R::Close { handle: h }));
    assert_eq!(std::fs::read(t.path("t")).expect("read"), b"\0odd-sized");
}

#[test]
fn handle_table_is_bounded_and_closed_on_drop() {
    let t = TempDir::new();
    let mut s = FileService::new();
    s.max_handles = 2;
    let open = |s: &mut FileService, p: &str| {
        s.handle(R::Open {
            path: t.blob(p),
            flags: libc::O_CREAT | libc::O_WRONLY,
            mode: 0o644,
        })
    };
    let (_, _, h1) = opened(open(&mut s, "1"));
    let (_, _, h2) = opened(open(&mut s, "2"));
    assert_ne!(h1, h2);
    assert_eq!(errno(open(&mut s, "3")), libc::EMFILE);
    assert!(!t.path("3").exists(), "refused before creating");
    // Read-only opens need no handle.
    opened(s.handle(R::Open {
        path: t.blob("1"),
        flags: libc::O_RDONLY,
        mode: 0,
    }));
    ok(s.handle(R::Close {
        handle: h1.expect("h1"),
    }));
    let (_, _, h3) = opened(open(&mut s, "3"));
    assert!(
        h3.is_some() && h3 != h1 && h3 != h2,
        "handles are not reused"
    );

    // Dropping the service closes what is still open.
    let held = |name: &str| {
        let want = t.path(name);
        std::fs::read_dir("/proc/self/fd")
            .expect("fds")
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == want))
            .count()
    };
    assert_eq!((held("2"), held("3")), (1, 1));
    drop(s);
    assert_eq!((held("2"), held("3")), (0, 0));
}

#[test]
fn read_dir_lists_entries_with_metadata() {
    let t = TempDir::new();
    std::fs::create_dir(t.path("d")).expect("mkdir");
    write(&t.path("d/file"), b"12345", 0o600);
    std::fs::create_dir(t.path("d/sub")).expect("mkdir");
    std::os::unix::fs::symlink("file", t.path("d/link")).expect("symlink");
    let mut s = FileService::new();
    let Response::Dir(mut entries) = s.handle(R::ReadDir { path: t.blob("d") }) else {
        panic!("readdir");
    };
    entries.sort_by(|a, b| a.name.0.cmp(&b.name.0));
    let names: Vec<&[u8]> = entries.iter().map(|e| &e.name.0[..]).collect();
    assert_eq!(names, [&b"file"[..], b"link", b"sub"]);
    let [file, link, sub] = &entries[..] else {
        panic!("three entries");
    };
    let fst = file.stat.expect("file stat");
    assert_eq!((fst.mode, fst.size), (libc::S_IFREG | 0o600, 5));
    assert_eq!(
        fst,
        stat_of(s.handle(R::Stat {
            path: t.blob("d/file"),
            follow: false
        }))
    );
    assert_eq!(file.link, None);
    let lst = link.stat.expect("link stat");
    assert_eq!(lst.mode & libc::S_IFMT, libc::S_IFLNK, "lstat, not stat");
    assert_eq!(link.link, Some(Blob::from("file")));
    assert_eq!(
        sub.stat.expect("sub stat").mode & libc::S_IFMT,
        libc::S_IFDIR
    );
    assert_eq!(sub.link, None);

    // A directory opened to read comes with the same listing; a file, a
    // directory opened O_PATH or for writing, without.
    let open = |p: &str, flags: i32| R::Open {
        path: t.blob(p),
        flags,
        mode: 0,
    };
    // (Without the times: reading a symlink for the listing updates its
    // access time.)
    type Seen = Vec<(Vec<u8>, Option<(u64, u32, u64)>, Option<Blob>)>;
    let seen = |l: &[DirEntry]| -> Seen {
        let mut v: Seen = l
            .iter()
            .map(|e| {
                let st = e.stat.map(|s| (s.ino, s.mode, s.size));
                (e.name.0.clone(), st, e.link.clone())
            })
            .collect();
        v.sort();
        v
    };
    let listing_of = |r: Response| match r {
        Response::Opened { listing, .. } => listing.map(|l| seen(&l)),
        other => panic!("expected Opened, got {other:?}"),
    };
    assert_eq!(
        listing_of(s.handle(open("d", libc::O_RDONLY | libc::O_DIRECTORY))),
        Some(seen(&entries))
    );
    assert_eq!(listing_of(s.handle(open("d/link", libc::O_RDONLY))), None);
    assert_eq!(listing_of(s.handle(open("d", libc::O_PATH))), None);

    std::fs::create_dir(t.path("empty")).expect("mkdir");
    assert_eq!(
        s.handle(R::ReadDir {
            path: t.blob("empty")
        }),
        Response::Dir(vec![])
    );
    let list = |p: &str| R::ReadDir { path: t.blob(p) };
    expect_errnos(
        &mut s,
        [
            (list("missing"), libc::ENOENT),
            (list("d/file"), libc::ENOTDIR),
        ],
    );
}

#[test]
fn oversized_listings_are_refused_not_truncated() {
    let t = TempDir::new();
    for n in ["a", "b", "c"] {
        write(&t.path(n), b"", 0o644);
    }
    let dir = t.blob("").0;
    assert_eq!(read_dir(&dir, 3, 1 << 20).map(|e| e.len()), Ok(3));
    assert_eq!(read_dir(&dir, 2, 1 << 20), Err(libc::EOVERFLOW));
    let fits = 3 * (1 + DIR_ENTRY_OVERHEAD);
    assert_eq!(read_dir(&dir, 10, fits).map(|e| e.len()), Ok(3));
    assert_eq!(read_dir(&dir, 10, fits - 1), Err(libc::EOVERFLOW));
}

#[test]
fn mutations_and_their_errnos() {
    let t = TempDir::new();
    let mut s = FileService::new();
    // mkdir: mode exactly as asked (umask 0).
    ok(s.handle(R::Mkdir {
        path: t.blob("d"),
        mode: 0o777,
    }));
    let mode = |p: &str| std::fs::metadata(t.path(p)).expect(p).mode() & 0o7777;
    assert_eq!(mode("d"), 0o777);
    write(&t.path("d/f"), b"data", 0o644);
    write(&t.path("g"), b"other", 0o644);
    let rename = |from: &str, to: &str, flags: u32| R::Rename {
        from: t.blob(from),
        to: t.blob(to),
        flags,
    };
    let link = |from: &str, to: &str, follow: bool| R::Link {
        from: t.blob(from),
        to: t.blob(to),
        follow,
    };
    // rename, with flags.
    ok(s.handle(rename("g", "d/f", libc::RENAME_EXCHANGE)));
    assert_eq!(std::fs::read(t.path("d/f")).expect("f"), b"other");
    assert_eq!(std::fs::read(t.path("g")).expect("g"), b"data");
    ok(s.handle(rename("g", "d/f", 0)));
    assert!(!t.path("g").exists());
    assert_eq!(std::fs::read(t.path("d/f")).expect("f"), b"data");
    // symlink and link (following or not).
    ok(s.handle(R::Symlink {
        target: Blob::from("d/f"),
        path: t.blob("sl"),
    }));
    assert_eq!(
        std::fs::read_link(t.path("sl")).expect("sl"),
        Path::new("d/f")
    );
    ok(s.handle(link("sl", "hard-follow", true)));
    ok(s.handle(link("sl", "hard-nofollow", false)));
    let ino = |p: &str| std::fs::symlink_metadata(t.path(p)).expect(p).ino();
    assert_eq!(ino("hard-follow"), ino("d/f"));
    assert_eq!(ino("hard-nofollow"), ino("sl"));
    // chmod follows the link.
    ok(s.handle(R::Chmod {
        path: t.blob("sl"),
        mode: 0o4711,
    }));
    assert_eq!(mode("d/f"), 0o4711);
    // truncate.
    ok(s.handle(R::Truncate {
        path: t.blob("d/f"),
        len: 2,
    }));
    assert_eq!(std::fs::read(t.path("d/f")).expect("f"), b"da");
    // unlink, rmdir.
    ok(s.handle(R::Unlink {
        path: t.blob("hard-nofollow"),
    }));
    assert!(t.path("sl").exists() && !t.path("hard-nofollow").exists());
    std::fs::create_dir(t.path("empty")).expect("mkdir");
    ok(s.handle(R::Rmdir {
        path: t.blob("empty"),
    }));
    assert!(!t.path("empty").exists());

    expect_errnos(
        &mut s,
        [
            (
                R::Mkdir {
                    path: t.blob("d"),
                    mode: 0o755,
                },
                libc::EEXIST,
            ),
            (
                R::Mkdir {
                    path: t.blob("no/d"),
                    mode: 0o755,
                },
                libc::ENOENT,
            ),
            (R::Rmdir { path: t.blob("d") }, libc::ENOTEMPTY),
            (
                R::Rmdir {
                    path: t.blob("d/f"),
                },
                libc::ENOTDIR,
            ),
            (R::Unlink { path: t.blob("d") }, libc::EISDIR),
            (
                R::Unlink {
                    path: t.blob("missing"),
                },
                libc::ENOENT,
            ),
            (rename("sl", "d/f", libc::RENAME_NOREPLACE), libc::EEXIST),
            (rename("d/f", "d/f/x", 0), libc::ENOTDIR),
            (rename("missing", "x", 0), libc::ENOENT),
            (rename("d", "d/sub", 0), libc::EINVAL),
            (
                R::Symlink {
                    target: Blob::from("x"),
                    path: t.blob("sl"),
                },
                libc::EEXIST,
            ),
            (
                R::Symlink {
                    target: Blob::from(""),
                    path: t.blob("empty-target"),
                },
                libc::ENOENT,
            ),
            (link("d/f", "sl", false), libc::EEXIST),
            (link("d", "dirlink", false), libc::EPERM),
            (
                R::Chmod {
                    path: t.blob("missing"),
                    mode: 0o600,
                },
                libc::ENOENT,
            ),
            (
                R::Truncate {
                    path: t.blob("d"),
                    len: 0,
                },
                libc::EISDIR,
            ),
            (
                R::Truncate {
                    path: t.blob("d/f"),
                    len: u64::MAX,
                },
                libc::EINVAL,
            ),
        ],
    );

    // chown: unchanged ids always work for the owner.
    ok(s.handle(R::Chown {
        path: t.blob("d/f"),
        uid: u32::MAX,
        gid: u32::MAX,
        follow: true,
    }));
    if is_root() {
        ok(s.handle(R::Chown {
            path: t.blob("sl"),
            uid: 1234,
            gid: 4321,
            follow: false,
        }));
        let l = std::fs::symlink_metadata(t.path("sl")).expect("sl");
        assert_eq!((l.uid(), l.gid()), (1234, 4321));
        let f = std::fs::metadata(t.path("d/f")).expect("f");
        assert_eq!((f.uid(), f.gid()), (0, 0), "the target is unchanged");
        ok(s.handle(R::Chown {
            path: t.blob("sl"),
            uid: 99,
            gid: u32::MAX,
            follow: true,
        }));
        let f = std::fs::metadata(t.path("d/f")).expect("f");
        assert_eq!((f.uid(), f.gid()), (99, 0));
    }
}

#[test]
fn utimens_passes_now_and_omit_through() {
    let t = TempDir::new();
    write(&t.path("f"), b"", 0o644);
    std::os::unix::fs::symlink("f", t.path("l")).expect("symlink");
    let mut s = FileService::new();
    ok(s.handle(R::Utimens {
        path: t.blob("f"),
        atime: (1_000_000_000, 5),
        mtime: (1_500_000_000, 7),
        follow: true,
    }));
    let m = std::fs::metadata(t.path("f")).expect("f");
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 7));
    // Omit atime, mtime now.
    ok(s.handle(R::Utimens {
        path: t.blob("l"),
        atime: (0, libc::UTIME_OMIT),
        mtime: (0, libc::UTIME_NOW),
        follow: true,
    }));
    let m = std::fs::metadata(t.path("f")).expect("f");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 5));
    assert!((m.mtime() - now).abs() < 60);
    // Not following: the link's own times.
    ok(s.handle(R::Utimens {
        path: t.blob("l"),
        atime: (2_000_000, 0),
        mtime: (3_000_000, 0),
        follow: false,
    }));
    let lm = std::fs::symlink_metadata(t.path("l")).expect("l");
    assert_eq!(lm.mtime(), 3_000_000);
    assert!(std::fs::metadata(t.path("f")).expect("f").mtime() > 3_000_000);
    assert_eq!(
        errno(s.handle(R::Utimens {
            path: t.blob("f"),
            atime: (0, 2_000_000_000),
            mtime: (0, 0),
            follow: true,
        })),
        libc::EINVAL
    );
}

fn exec_image_of(r: Response) -> Box<dscp_dicp::msg::job::ExecImage> {
    match r {
        Response::Exec(img) => img,
        other => panic!("expected an exec image, got {other:?}"),
    }
}

#[test]
fn exec_of_an_elf_program() {
    let mut s = FileService::new();
    let img = exec_image_of(s.handle(R::Exec {
        path: Blob::from("/bin/true"),
        argv: vec![Blob::from("true"), Blob::from("--version")],
        envp: vec![Blob::from("PATH=/bin"), Blob::from("NOEQUALS")],
    }));
    assert_eq!(img.argv, [Blob::from("true"), Blob::from("--version")]);
    assert_eq!(img.program, Blob::from("/bin/true"));
    let interp = img.interpreter.clone().expect("dynamic");
    assert!(
        img.libraries.iter().any(|(n, _)| n.0 == b"libc.so.6"),
        "{:?}",
        img.libraries
    );
    // Every file is listed with the stamp a fresh stat gives (what Read checks).
    let listed: Vec<&Blob> = img.files.iter().map(|(p, _)| p).collect();
    assert!(listed.contains(&&img.program) && listed.contains(&&interp));
    for (name, path) in &img.libraries {
        assert!(listed.contains(&path), "{name:?} at {path:?} not in files");
    }
    for (path, stamp) in &img.files {
        let st = stat_of(s.handle(R::Stat {
            path: path.clone(),
            follow: true,
        }));
        assert_eq!(st.stamp(), *stamp, "{path:?}");
    }
}

#[test]
fn exec_of_a_script() {
    let t = TempDir::new();
    write(&t.path("s"), b"#!/bin/sh -e\necho hi\n", 0o755);
    let mut s = FileService::new();
    let img = exec_image_of(s.handle(R::Exec {
        path: t.blob("s"),
        argv: vec![Blob::from("s"), Blob::from("a b")],
        envp: vec![],
    }));
    assert_eq!(
        img.argv,
        [
            Blob::from("/bin/sh"),
            Blob::from("-e"),
            t.blob("s"),
            Blob::from("a b")
        ]
    );
    assert_eq!(img.program, Blob::from("/bin/sh"));
    assert_eq!(img.files[0].0, t.blob("s"));
    let meta = std::fs::metadata(t.path("s")).expect("s");
    assert_eq!(img.files[0].1, crate::home::session::stamp(&meta));
}

#[test]
fn exec_errnos_are_execves() {
    let t = TempDir::new();
    write(&t.path("plain"), b"#!/bin/sh\n", 0o644);
    write(&t.path("garbage"), b"just text\n", 0o755);
    write(&t.path("empty"), b"", 0o755);
    write(&t.path("badinterp"), b"#!/nonexistent/interp\n", 0o755);
    write(&t.path("noname"), b"#!   \n", 0o755);
    write(&t.path("badelf"), b"\x7fELF this is no elf", 0o755);
    std::fs::create_dir(t.path("dir")).expect("mkdir");
    // A script whose interpreter is a script without `#!`.
    write(
        &t.path("textinterp"),
        &[b"#!", t.blob("garbage").0.as_slice(), b"\n"].concat(),
        0o755,
    );
    let mut s = FileService::new();
    let exec = |s: &mut FileService, p: &str| {
        s.handle(R::Exec {
            path: t.blob(p),
            argv: vec![Blob::from(p)],
            envp: vec![],
        })
    };
    for (p, want) in [
        ("plain", libc::EACCES),
        ("dir", libc::EACCES),
        ("missing", libc::ENOENT),
        ("plain/x", libc::ENOTDIR),
        ("garbage", libc::ENOEXEC),
        ("empty", libc::ENOEXEC),
        ("badinterp", libc::ENOENT),
        ("noname", libc::ENOEXEC),
        ("badelf", libc::ENOEXEC),
        ("textinterp", libc::ENOEXEC),
    ] {
        assert_eq!(errno(exec(&mut s, p)), want, "{p}");
    }
    assert_eq!(
        errno(s.handle(R::Exec {
            path: Blob::from("/dev/null"),
            argv: vec![],
            envp: vec![],
        })),
        libc::EACCES
    );
}

/// Runs `f` in a forked child that first becomes nobody (65534, no
/// supplementary groups) and returns what it sent back.
fn as_nobody(f: impl FnOnce() -> Vec<(String, Response)>) -> Vec<(String, Response)> {
    use std::io::Read;
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only calls what glibc makes fork-safe (malloc),
    // the system calls of the service, and _exit; it touches no lock that
    // another test thread could hold (no stdout, no logger).
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            // Whatever happens, the child leaves here: a panic unwinding
            // into the test harness would run a second copy of the suite.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let nobody = nix::unistd::Gid::from_raw(65534);
                nix::unistd::setgroups(&[]).ok()?;
                nix::unistd::setgid(nobody).ok()?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).ok()?;
                let out = dscp_dicp::msg::encode(&f()).ok()?;
                let mut w = std::fs::File::from(wr);
                std::io::Write::write_all(&mut w, &out).ok()?;
                Some(0)
            }))
            .ok()
            .flatten()
            .unwrap_or(1);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = Vec::new();
            std::fs::File::from(rd)
                .read_to_end(&mut buf)
                .expect("read pipe");
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "the child could not drop privileges or report"
            );
            dscp_dicp::msg::decode(&buf).expect("decode the child's report")
        }
    }
}

#[test]
fn permissions_are_the_callers_not_roots() {
    if !require_root("permissions_are_the_callers_not_roots") {
        return;
    }
    let t = TempDir::new();
    write(&t.path("secret"), b"root only", 0o600);
    write(&t.path("public"), b"everyone", 0o644);
    write(&t.path("script"), b"#!/bin/sh\n", 0o700);
    std::fs::create_dir(t.path("closed")).expect("mkdir");
    std::fs::set_permissions(t.path("closed"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let public = stat_of(FileService::new().handle(R::Stat {
        path: t.blob("public"),
        follow: true,
    }));
    let got = as_nobody(|| {
        let mut s = FileService::new();
        let mut run = |what: &str, req: R| (what.to_string(), s.handle(req));
        vec![
            run(
                "open 0600 root file",
                R::Open {
                    path: t.blob("secret"),
                    flags: libc::O_RDONLY,
                    mode: 0,
                },
            ),
            run(
                "create in 0755 root dir",
                R::Open {
                    path: t.blob("new"),
                    flags: libc::O_CREAT | libc::O_WRONLY,
                    mode: 0o644,
                },
            ),
            run(
                "write a 0644 root file",
                R::Open {
                    path: t.blob("public"),
                    flags: libc::O_WRONLY,
                    mode: 0,
                },
            ),
            run(
                "read a 0600 root file",
                R::Read {
                    path: t.blob("secret"),
                    stamp: Default::default(),
                    offset: 0,
                    len: 10,
                },
            ),
            run(
                "access R_OK",
                R::Access {
                    path: t.blob("secret"),
                    mode: libc::R_OK as u32,
                    flags: 0,
                },
            ),
            run(
                "mkdir in 0755 root dir",
                R::Mkdir {
                    path: t.blob("newdir"),
                    mode: 0o755,
                },
            ),
            run(
                "unlink in 0755 root dir",
                R::Unlink {
                    path: t.blob("public"),
                },
            ),
            run(
                "list 0700 root dir",
                R::ReadDir {
                    path: t.blob("closed"),
                },
            ),
            run(
                "stat inside 0700 root dir",
                R::Stat {
                    path: t.blob("closed/x"),
                    follow: true,
                },
            ),
            run(
                "chmod a root file",
                R::Chmod {
                    path: t.blob("public"),
                    mode: 0o777,
                },
            ),
            run(
                "exec 0700 root script",
                R::Exec {
                    path: t.blob("script"),
                    argv: vec![],
                    envp: vec![],
                },
            ),
            // What nobody may do still works.
            run(
                "stat a 0600 root file",
                R::Stat {
                    path: t.blob("secret"),
                    follow: true,
                },
            ),
            run(
                "read a 0644 root file",
                R::Read {
                    path: t.blob("public"),
                    stamp: public.stamp(),
                    offset: 0,
                    len: 100,
                },
            ),
        ]
    });
    let want = |e: i32| Response::Errno(e);
    let expected = [
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EACCES),
        want(libc::EPERM),
        want(libc::EACCES),
    ];
    assert_eq!(got.len(), expected.len() + 2);
    for ((what, got), want) in got.iter().zip(expected.iter()) {
        assert_eq!(got, want, "{what}");
    }
    assert!(
        matches!(got[expected.len()].1, Response::Stat(s) if s.mode == libc::S_IFREG | 0o600),
        "{:?}",
        got[expected.len()]
    );
    assert_eq!(
        got[expected.len() + 1].1,
        Response::Data(Blob::from("everyone"))
    );
    // Nothing was created or changed.
    assert!(!t.path("new").exists() && !t.path("newdir").exists());
    assert!(t.path("public").exists());
}

#[test]
fn odd_byte_paths_work() {
    let t = TempDir::new();
    let mut name = t.blob("").0;
    name.extend_from_slice(b"not-utf8-\xff\xfe");
    let mut s = FileService::new();
    ok(s.handle(R::Mkdir {
        path: Blob(name.clone()),
        mode: 0o755,
    }));
    assert!(Path::new(OsStr::from_bytes(&name)).is_dir());
    let Response::Dir(entries) = s.handle(R::ReadDir { path: t.blob("") }) else {
        panic!("readdir");
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name.0, b"not-utf8-\xff\xfe");
}

#[test]
fn lock_owners_exclude_each_other_until_released() {
    use dscp_dicp::msg::fs::{LockOp, RangeLock};
    let t = TempDir::new();
    write(&t.path("f"), b"0123456789", 0o644);
    let mut s = FileService::new();
    let lock = |owner, op| R::Lock {
        owner,
        path: t.blob("f"),
        op,
    };
    let range = |kind: i32, start, len| RangeLock {
        kind: kind as i16,
        start,
        len,
        pid: 0,
    };
    ok(s.handle(lock(1, LockOp::Flock(libc::LOCK_EX))));
    ok(s.handle(lock(1, LockOp::Flock(libc::LOCK_SH)))); // its own: converts
    assert_eq!(
        errno(s.handle(lock(2, LockOp::Flock(libc::LOCK_EX)))),
        libc::EAGAIN
    );
    assert_eq!(errno(s.handle(lock(2, LockOp::Flock(7)))), libc::EINVAL);
    ok(s.handle(lock(3, LockOp::Set(range(libc::F_WRLCK, 0, 5)))));
    assert_eq!(
        errno(s.handle(lock(4, LockOp::Set(range(libc::F_RDLCK, 4, 2))))),
        libc::EAGAIN
    );
    ok(s.handle(lock(4, LockOp::Set(range(libc::F_RDLCK, 5, 2)))));
    assert_eq!(
        s.handle(lock(4, LockOp::Get(range(libc::F_WRLCK, 0, 0)))),
        Response::Lock(Some(RangeLock {
            kind: libc::F_WRLCK as i16,
            start: 0,
            len: 5,
            pid: -1,
        }))
    );
    // An owner's own locks never conflict with it; one with none is free.
    assert_eq!(
        s.handle(lock(3, LockOp::Get(range(libc::F_WRLCK, 0, 5)))),
        Response::Lock(None)
    );
    assert_eq!(s.lock_files(), 3, "a failed first lock keeps nothing");
    ok(s.handle(R::Unlock { owner: 1 }));
    ok(s.handle(R::Unlock { owner: 3 }));
    assert_eq!(s.lock_files(), 1);
    ok(s.handle(lock(2, LockOp::Flock(libc::LOCK_EX))));
    ok(s.handle(lock(5, LockOp::Set(range(libc::F_WRLCK, 0, 4)))));
    // Unlocking what was never locked opens nothing.
    ok(s.handle(lock(9, LockOp::Flock(libc::LOCK_UN))));
    assert_eq!(s.lock_files(), 3);
    assert_eq!(
        errno(s.handle(R::Lock {
            owner: 6,
            path: t.blob("missing"),
            op: LockOp::Flock(libc::LOCK_SH),
        })),
        libc::ENOENT
    );
}

#[test]
fn openat2_applies_resolve_flags_from_its_directory() {
    let t = TempDir::new();
    std::fs::create_dir(t.path("d")).unwrap();
    write(&t.path("d/f"), b"in", 0o644);
    std::os::unix::fs::symlink("..", t.path("d/up")).unwrap();
    let mut s = FileService::new();
    let open2 = |path: &str, resolve| R::OpenAt2 {
        dir: t.blob("d"),
        path: path.into(),
        flags: libc::O_RDONLY,
        mode: 0,
        resolve,
    };
    const BENEATH: u64 = 0x08;
    const NO_SYMLINKS: u64 = 0x04;
    let (canonical, _, handle) = opened(s.handle(open2("f", BENEATH)));
    assert_eq!(canonical, t.path("d/f").as_os_str().as_bytes());
    assert_eq!(handle, None);
    assert_eq!(errno(s.handle(open2("up/d/f", BENEATH))), libc::EXDEV);
    assert_eq!(errno(s.handle(open2("up/d/f", NO_SYMLINKS))), libc::ELOOP);
    opened(s.handle(open2("up/d/f", 0)));
    assert_eq!(errno(s.handle(open2("f", 1 << 40))), libc::EINVAL);
}

/// The paths of an `OpenDir` answer's listings read ahead.
#[track_caller]
fn ahead_of(r: Response) -> Vec<Vec<u8>> {
    match r {
        Response::OpenedDir { ahead, .. } => ahead.into_iter().map(|l| l.path.0).collect(),
        other => panic!("expected OpenedDir, got {other:?}"),
    }
}

#[test]
fn open_dir_reads_ahead_breadth_first_within_its_bounds() {
    let t = TempDir::new();
    for d in ["d/a/a1/a2", "d/b", "o/o1"] {
        std::fs::create_dir_all(t.path(d)).expect("mkdir");
    }
    write(&t.path("d/f"), b"file", 0o644);
    write(&t.path("d/a/x"), b"x", 0o644);
    std::os::unix::fs::symlink("a", t.path("d/link")).expect("symlink");
    let mut s = FileService::new();
    let p = |rel: &str| t.blob(rel).0;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let also = vec![t.blob("o"), Blob::from("relative"), t.blob("d/link")];
    let big = AheadLimits {
        dirs: 100,
        bytes: 1 << 20,
        time: std::time::Duration::from_secs(60),
    };
    let r = s.open_dir(&p("d"), flags, &also, big).expect("open_dir");
    let Response::OpenedDir {
        canonical,
        stat,
        listing,
        ahead,
    } = r.clone()
    else {
        panic!("expected OpenedDir, got {r:?}");
    };
    // What `Open` answers, with the same listing.
    let (c, st, _) = opened(s.handle(R::Open {
        path: t.blob("d"),
        flags,
        mode: 0,
    }));
    assert_eq!((canonical.0, stat.ino), (c, st.ino));
    assert_eq!(listing.len(), 4);
    // The subdirectories, then `also` (a relative path and a symlink are
    // left out), then the next level, breadth first.
    let paths: Vec<Vec<u8>> = ahead.iter().map(|l| l.path.0.clone()).collect();
    let mut first: Vec<Vec<u8>> = paths[..2].to_vec();
    first.sort();
    assert_eq!(first, [p("d/a"), p("d/b")]);
    assert_eq!(paths[2..], [p("o"), p("d/a/a1"), p("o/o1"), p("d/a/a1/a2")]);
    for l in &ahead {
        let mut names: Vec<Vec<u8>> = l.entries.iter().map(|e| e.name.0.clone()).collect();
        names.sort();
        let mut want: Vec<Vec<u8>> = read_dir(&l.path, 100, 1 << 20)
            .expect("read_dir")
            .into_iter()
            .map(|e| e.name.0)
            .collect();
        want.sort();
        assert_eq!(names, want);
        let st = stat_of(s.handle(R::Stat {
            path: l.path.clone(),
            follow: false,
        }));
        assert_eq!((l.stat.ino, l.stat.mode), (st.ino, st.mode));
    }
    // The bounds: directories, bytes (a listing that does not fit is left
    // out, a smaller one after it still comes), time.
    let two = AheadLimits { dirs: 2, ..big };
    assert_eq!(
        ahead_of(s.open_dir(&p("d"), flags, &also, two).expect("two")).len(),
        2
    );
    let a_bytes = p("d/a").len() + 2 * DIR_ENTRY_OVERHEAD + 1 + 2;
    let small = AheadLimits {
        bytes: a_bytes,
        ..big
    };
    let got = ahead_of(s.open_dir(&p("d"), flags, &[], small).expect("small"));
    assert!(got.len() <= 1 && !got.contains(&p("d/a/a1")), "{got:?}");
    let none = AheadLimits {
        time: std::time::Duration::ZERO,
        ..big
    };
    assert!(ahead_of(s.open_dir(&p("d"), flags, &also, none).expect("none")).is_empty());
    // Through the request, with the reply's own bounds.
    let r = s.handle(R::OpenDir {
        path: t.blob("d"),
        flags,
        also: vec![],
    });
    assert_eq!(ahead_of(r).len(), 4);
    // A file is answered as `Open` answers it; a write or O_PATH is refused.
    assert!(matches!(
        s.handle(R::OpenDir {
            path: t.blob("d/f"),
            flags: libc::O_RDONLY,
            also: vec![],
        }),
        Response::Opened { listing: None, .. }
    ));
    for bad in [libc::O_WRONLY, libc::O_RDONLY | libc::O_CREAT, libc::O_PATH] {
        assert_eq!(
            s.handle(R::OpenDir {
                path: t.blob("d"),
                flags: bad,
                also: vec![],
            }),
            Response::Errno(libc::EINVAL)
        );
    }
}

#[test]
fn open_dir_reads_ahead_only_what_the_caller_may_read() {
    if !require_root("open_dir_reads_ahead_only_what_the_caller_may_read") {
        return;
    }
    let t = TempDir::new();
    for d in ["d/open/inner", "d/closed/inner", "d/search-only", "other"] {
        std::fs::create_dir_all(t.path(d)).expect("mkdir");
    }
    let mode = |rel: &str, m: u32| {
        std::fs::set_permissions(t.path(rel), std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    mode("d/closed", 0o700);
    mode("d/search-only", 0o711);
    mode("other", 0o700);
    let (d, other) = (t.blob("d"), t.blob("other"));
    let got = as_nobody(move || {
        let mut s = FileService::new();
        vec![(
            "d".into(),
            s.handle(R::OpenDir {
                path: d,
                flags: libc::O_RDONLY | libc::O_DIRECTORY,
                also: vec![other],
            }),
        )]
    });
    let mut paths = ahead_of(got[0].1.clone());
    paths.sort();
    assert_eq!(paths, [t.blob("d/open").0, t.blob("d/open/inner").0]);
}
