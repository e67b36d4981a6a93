//! File system calls beyond reading and writing files (issue 6):
//! `statfs`/`fstatfs` answer central's file system, not the node's; the
//! xattr calls (plain, `l*` and `f*`) run on central as the caller;
//! `openat2`'s `RESOLVE_*` flags are applied by central's kernel; `mknod`
//! makes FIFOs, sockets and files on central.
//! Each run through `diatom exec` is compared byte for byte with the same
//! program run locally on central (`docs/files.md`).
#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use diatom_tests::central_files::*;
use diatom_tests::cluster::{chown, describe, NOBODY};
use diatom_tests::require_root;

/// A small read-only tmpfs mounted on central for the test (the nodes'
/// mirror lives on another file system), unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    /// Mounts it at `at` holding `file` (a few bytes), then makes it
    /// read-only.
    fn mount(at: &Path, file: &str) -> SmallFs {
        std::fs::create_dir_all(at).unwrap();
        let mount = |opts: &str, flags: libc::c_ulong| {
            let (src, dst, kind) = (
                CString::new("diatom-test").unwrap(),
                CString::new(at.as_os_str().as_encoded_bytes()).unwrap(),
                CString::new("tmpfs").unwrap(),
            );
            let o = CString::new(opts).unwrap();
            // SAFETY: NUL-terminated strings; data is the option string.
            let r = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    kind.as_ptr(),
                    flags,
                    o.as_ptr().cast(),
                )
            };
            assert_eq!(
                r,
                0,
                "mount tmpfs at {}: {}",
                at.display(),
                std::io::Error::last_os_error()
            );
        };
        mount("size=4m,mode=0755", 0);
        let fs = SmallFs(at.to_path_buf());
        put(&at.join(file), b"small\n", 0o644);
        mount("size=4m,mode=0755", libc::MS_REMOUNT | libc::MS_RDONLY);
        fs
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let p = CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Prints what `statvfs`/`fstatvfs` say of a path and a descriptor, and
/// what a write there gets.
const STATFS: &str = r#"
import os, sys
for p in sys.argv[1:]:
    s = os.statvfs(p)
    fd = os.open(p, os.O_RDONLY)
    f = os.fstatvfs(fd)
    os.close(fd)
    for name, v in (("path", s), ("fd", f)):
        print(p, name, v.f_bsize, v.f_blocks, v.f_files, v.f_namemax,
              "ro" if v.f_flag & os.ST_RDONLY else "rw")
try:
    open(os.path.join(sys.argv[1], "new"), "w")
except OSError as e:
    print("create:", os.strerror(e.errno))
"#;

#[test]
fn statfs_and_fstatfs_answer_centrals_file_system() {
    if !require_root("statfs_and_fstatfs_answer_centrals_file_system") {
        return;
    }
    let f = Files::new("fstatfs");
    let small = f.only("small");
    let _fs = SmallFs::mount(&small, "file");
    put(&f.only("plain"), b"x", 0o644);
    let c = f.cluster("fstatfs");
    let out = same_as_local(
        &c,
        &f.only,
        &["python3", "-c", STATFS, "small", "small/file"],
        RUN,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // 4 MiB in 4 KiB blocks, read-only: central's tmpfs, by path and fd.
    assert!(
        text.lines()
            .take(4)
            .all(|l| l.contains(" 4096 1024 ") && l.ends_with(" ro")),
        "central's read-only tmpfs: {text}"
    );
    assert!(text.contains("create: Read-only file system"), "{text}");
    // `stat -f` (statfs by path, and the type name) of central's tmpfs and
    // of the directory the job starts in.
    same_as_local(
        &c,
        &f.only,
        &[
            "stat",
            "-f",
            "-c",
            "%T %s %b %c %l",
            "small",
            "small/file",
            ".",
        ],
        RUN,
    );
}

/// Sets, reads, lists and removes attributes of `f` (a file), `l` (a
/// symlink to it) and a descriptor, as the caller; prints each result.
/// The directory is listed first, so the node knows `f` has none
/// (answered without asking) until the job sets one.
const XATTRS: &str = r#"
import os
def t(what, call, *a, **k):
    try:
        r = call(*a, **k)
        if isinstance(r, list):
            r = sorted(r)
        print(what, "->", r)
    except OSError as e:
        print(what, "->", os.strerror(e.errno))
for n in os.listxattr("f"):
    os.removexattr("f", n)
print(sorted(os.listdir(".")))
t("get before any", os.getxattr, "f", "user.a")
t("list before any", os.listxattr, "f")
t("get an ACL before any", os.getxattr, "f", "system.posix_acl_access")
t("get a bad name", os.getxattr, "f", "nonamespace")
t("set user.a", os.setxattr, "f", "user.a", b"alpha")
t("set user.b", os.setxattr, "f", "user.b", b"\x00\x01" * 300)
t("create user.a again", os.setxattr, "f", "user.a", b"x", os.XATTR_CREATE)
t("replace user.z", os.setxattr, "f", "user.z", b"x", os.XATTR_REPLACE)
t("get user.a", os.getxattr, "f", "user.a")
t("get user.b length", lambda: len(os.getxattr("f", "user.b")))
t("get via the link", os.getxattr, "l", "user.a")
t("get the link itself", os.getxattr, "l", "user.a", follow_symlinks=False)
t("list", os.listxattr, "f")
t("list the link itself", os.listxattr, "l", follow_symlinks=False)
t("get missing", os.getxattr, "f", "user.nope")
t("set trusted", os.setxattr, "f", "trusted.x", b"1")
t("set security", os.setxattr, "f", "security.x", b"1")
t("get on a missing file", os.getxattr, "nofile", "user.a")
fd = os.open("f", os.O_RDONLY)
t("fd get", os.getxattr, fd, "user.a")
t("fd set", os.setxattr, fd, "user.c", b"gamma")
t("fd list", os.listxattr, fd)
t("fd remove", os.removexattr, fd, "user.c")
os.close(fd)
t("remove user.a", os.removexattr, "f", "user.a")
t("remove again", os.removexattr, "f", "user.a")
t("list at the end", os.listxattr, "f")
t("set on a file of root", os.setxattr, "rootfile", "user.a", b"1")
"#;

#[test]
fn extended_attributes_are_centrals_as_the_caller() {
    if !require_root("extended_attributes_are_centrals_as_the_caller") {
        return;
    }
    let f = Files::new("fxattr");
    put(&f.only("f"), b"data", 0o644);
    put(&f.only("rootfile"), b"data", 0o644);
    std::os::unix::fs::symlink("f", f.only("l")).unwrap();
    chown(&f.only, NOBODY, NOBODY);
    chown(&f.only("f"), NOBODY, NOBODY);
    let c = f.cluster("fxattr");
    let argv = ["python3", "-c", XATTRS];
    let r = remote_as(&c, NOBODY, &f.only, &argv);
    let l = local_in(&f.only, &argv, Some(NOBODY), RUN);
    assert!(l.status.success(), "local run: {}", describe(&l));
    assert_like_local(&r, &l, "xattrs as nobody");
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("get user.a -> b'alpha'"), "{text}");
    assert!(
        text.contains("fd list -> ['user.a', 'user.b', 'user.c']"),
        "{text}"
    );
}

/// `openat2` with each `RESOLVE_*` flag, from a directory descriptor and
/// from the cwd, over symlinks inside and out of the directory, `..` and a
/// mount point; prints what each open gets (the first bytes, or the error).
const OPENAT2: &str = r#"
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
R = {"none": 0, "no_xdev": 1, "no_magiclinks": 2, "no_symlinks": 4, "beneath": 8, "in_root": 16}
def o2(dirfd, path, resolve, flags=os.O_RDONLY, mode=0):
    how = ctypes.create_string_buffer(struct.pack("QQQ", flags, mode, resolve), 24)
    fd = libc.syscall(437, dirfd, path.encode(), how, 24)
    if fd < 0:
        return os.strerror(ctypes.get_errno())
    try:
        return os.read(fd, 5)
    except OSError as e:
        return "opened, read: " + os.strerror(e.errno)
    finally:
        os.close(fd)
d = os.open("tree", os.O_PATH | os.O_DIRECTORY)
cases = ["sub/file", "in", "up/tree/sub/file", "abs", "/sub/file", "sub/../sub/file",
         "../tree/sub/file", "small/file", "dangling"]
for name, r in R.items():
    for p in cases:
        print(name, p, o2(d, p, r))
print("cwd beneath", o2(-100, "tree/sub/file", R["beneath"]))
print("cwd beneath absolute", o2(-100, "/etc/hostname", R["beneath"]))
print("create beneath", o2(d, "sub/new", R["beneath"], os.O_CREAT | os.O_WRONLY, 0o600))
print("create escaping", o2(d, "up/new", R["beneath"], os.O_CREAT | os.O_WRONLY, 0o600))
print("mode without O_CREAT", o2(d, "sub/file", R["beneath"], os.O_RDONLY, 0o600))
print("unknown resolve flag", o2(d, "sub/file", 1 << 40))
os.unlink("tree/sub/new")
"#;

#[test]
fn openat2_resolve_flags_apply_on_central() {
    if !require_root("openat2_resolve_flags_apply_on_central") {
        return;
    }
    let f = Files::new("fopenat2");
    let tree = f.only("tree");
    put(&tree.join("sub/file"), b"inside\n", 0o644);
    put(&f.only("outside"), b"outside\n", 0o644);
    std::os::unix::fs::symlink("..", tree.join("up")).unwrap();
    std::os::unix::fs::symlink("sub/file", tree.join("in")).unwrap();
    std::os::unix::fs::symlink(f.only("outside"), tree.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", tree.join("dangling")).unwrap();
    let _fs = SmallFs::mount(&tree.join("small"), "file");
    let c = f.cluster("fopenat2");
    let out = same_as_local(&c, &f.only, &["python3", "-c", OPENAT2], RUN);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "beneath up/tree/sub/file Invalid cross-device link",
        "no_symlinks in Too many levels of symbolic links",
        "in_root /sub/file b'insid'",
        "no_xdev small/file Invalid cross-device link",
        "create beneath opened, read: Bad file descriptor",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

/// FIFOs, sockets and regular files made with `mknod`, and a device the
/// caller may not make.
const MKNOD: &str = r#"
import os, stat
def t(what, f, *a):
    try:
        f(*a)
        print(what, "ok")
    except OSError as e:
        print(what, os.strerror(e.errno))
for n in ("fifo", "reg", "sock", "chr"):
    if os.path.lexists(n):
        os.unlink(n)
os.umask(0o022)
t("mkfifo", os.mkfifo, "fifo", 0o666)
t("mkfifo again", os.mkfifo, "fifo", 0o666)
t("mknod regular", os.mknod, "reg", stat.S_IFREG | 0o640)
t("mknod socket", os.mknod, "sock", stat.S_IFSOCK | 0o600)
t("mknod device", os.mknod, "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
t("mkfifo in a missing directory", os.mkfifo, "nodir/fifo")
for n in ("fifo", "reg", "sock"):
    st = os.lstat(n)
    print(n, stat.filemode(st.st_mode), st.st_size)
print(sorted(os.listdir(".")))
"#;

#[test]
fn mknod_makes_fifos_sockets_and_files_on_central() {
    if !require_root("mknod_makes_fifos_sockets_and_files_on_central") {
        return;
    }
    let f = Files::new("fmknod");
    chown(&f.only, NOBODY, NOBODY);
    let c = f.cluster("fmknod");
    let argv = ["python3", "-c", MKNOD];
    let r = remote_as(&c, NOBODY, &f.only, &argv);
    let kinds: Vec<_> = ["fifo", "reg", "sock"]
        .iter()
        .map(|n| std::fs::symlink_metadata(f.only(n)).unwrap().mode() & libc::S_IFMT)
        .collect();
    assert_eq!(kinds, [libc::S_IFIFO, libc::S_IFREG, libc::S_IFSOCK]);
    let l = local_in(&f.only, &argv, Some(NOBODY), RUN);
    assert!(l.status.success(), "local run: {}", describe(&l));
    assert_like_local(&r, &l, "mknod as nobody");
}

/// Unnamed files (`O_TMPFILE`) in a central directory: written, named
/// with `linkat` of `/proc/self/fd/N`, written again; one never named
/// vanishes; `O_EXCL` forbids naming.
const TMPFILE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def linkat(fd, name):
    # What os.link cannot ask: linkat(AT_FDCWD, /proc/self/fd/N, ..., AT_SYMLINK_FOLLOW).
    if libc.linkat(-100, b"/proc/self/fd/%d" % fd, -100, name.encode(), 0x400) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def t(what, f, *a, **k):
    try:
        r = f(*a, **k)
        print(what, "->", r)
    except OSError as e:
        print(what, "->", os.strerror(e.errno))
for n in ("named", "named2", "named3", "excl"):
    if os.path.lexists(n):
        os.unlink(n)
before = sorted(os.listdir("."))
fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o640)
os.write(fd, b"first part\n")
st = os.fstat(fd)
print("unnamed: links", st.st_nlink, "size", st.st_size, "mode", oct(st.st_mode))
print("listing unchanged:", sorted(os.listdir(".")) == before)
link = os.readlink("/proc/self/fd/%d" % fd)
print("its /proc link:", link.startswith(os.getcwd() + "/#") and link.endswith(" (deleted)"))
t("link (no follow)", os.link, "/proc/self/fd/%d" % fd, "named")
t("link", linkat, fd, "named")
os.write(fd, b"second part\n")
t("link again", linkat, fd, "named2")
t("link by AT_EMPTY_PATH (unprivileged)", lambda: libc.linkat(fd, b"", -100, b"named3", 0x1000) == 0 or os.strerror(ctypes.get_errno()))
os.close(fd)
print("named:", open("named").read().splitlines(), oct(os.stat("named").st_mode & 0o777))
print("named2 is the same file:", os.stat("named").st_ino == os.stat("named2").st_ino)
e2 = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
t("unnamed by AT_EMPTY_PATH (unprivileged)", lambda: libc.linkat(e2, b"", -100, b"named3", 0x1000) == 0 or os.strerror(ctypes.get_errno()))
os.close(e2)
gone = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
os.write(gone, b"never named")
os.close(gone)
print("listing:", sorted(os.listdir(".")))
ex = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
t("link an O_EXCL one", linkat, ex, "excl")
os.close(ex)
t("read-only O_TMPFILE", os.open, ".", os.O_TMPFILE | os.O_RDONLY)
t("O_TMPFILE of a file", os.open, "named", os.O_TMPFILE | os.O_RDWR, 0o600)
"#;

#[test]
fn tmpfile_makes_an_unnamed_central_file_that_linkat_names() {
    if !require_root("tmpfile_makes_an_unnamed_central_file_that_linkat_names") {
        return;
    }
    let f = Files::new("ftmpfile");
    chown(&f.only, NOBODY, NOBODY);
    let c = f.cluster("ftmpfile");
    let argv = ["python3", "-c", TMPFILE];
    let r = remote_as(&c, NOBODY, &f.only, &argv);
    let named = std::fs::read(f.only("named")).unwrap_or_default();
    assert_eq!(named, b"first part\nsecond part\n", "{}", describe(&r));
    let l = local_in(&f.only, &argv, Some(NOBODY), RUN);
    assert!(l.status.success(), "local run: {}", describe(&l));
    assert_like_local(&r, &l, "O_TMPFILE as nobody");
}

/// Calls the node cannot serve faithfully, each with a central-only path:
/// what each returns (the errno's name, or "ok").
const REFUSED: &str = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
path = b"f"
buf = ctypes.create_string_buffer(256)
calls = {
    "open_tree": (428, -100, path, 0),
    "setxattrat": (463, -100, path, 0, b"user.a", buf, 32),
    "getxattrat": (464, -100, path, 0, b"user.a", buf, 32),
    "listxattrat": (465, -100, path, 0, buf, 256),
    "removexattrat": (466, -100, path, 0, b"user.a"),
    "open_tree_attr": (467, -100, path, 0, None, 0),
    "file_getattr": (468, -100, path, buf, 32, 0),
    "file_setattr": (469, -100, path, buf, 32, 0),
}
for name, args in calls.items():
    r = libc.syscall(*args)
    print(name, "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()])
print("getxattr", os.getxattr("f", "user.a"))
"#;

#[test]
fn calls_that_would_bypass_the_node_are_refused_with_enosys() {
    if !require_root("calls_that_would_bypass_the_node_are_refused_with_enosys") {
        return;
    }
    let f = Files::new("frefused");
    put(&f.only("f"), b"data", 0o644);
    let (p, name) = (
        CString::new(f.only("f").as_os_str().as_encoded_bytes()).unwrap(),
        CString::new("user.a").unwrap(),
    );
    // SAFETY: NUL-terminated strings, a 5-byte value.
    let r = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), b"alpha".as_ptr().cast(), 5, 0) };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    let c = f.cluster("frefused");
    let r = remote(&c, &f.only, &["python3", "-c", REFUSED], RUN);
    assert!(r.status.success(), "{}", describe(&r));
    let text = String::from_utf8_lossy(&r.stdout);
    for name in [
        "open_tree",
        "setxattrat",
        "getxattrat",
        "listxattrat",
        "removexattrat",
        "open_tree_attr",
        "file_getattr",
        "file_setattr",
    ] {
        assert!(
            text.contains(&format!("{name} ENOSYS\n")),
            "{name}:\n{text}"
        );
    }
    // The older call the program falls back to is served.
    assert!(text.contains("getxattr b'alpha'"), "{text}");
}
