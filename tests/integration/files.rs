//! Transparent remote file access end to end (issue 6), written against the
//! issue and `/work/shared/interface.md`: a job run with `diatom exec` sees
//! central's file system at the same paths, with the caller's permissions,
//! and none of the node's own files (except `/proc`, `/sys`, `/dev`).
//!
//! Each test builds its files on central first, then a cluster whose nodes
//! run in a private mount view ([`node_view`]):
//! - a **central-only directory** (`<files>/only`): the whole `<files>`
//!   directory is covered by an empty tmpfs on the nodes, so the path does
//!   not exist there;
//! - a **shared directory** (`<files>/shared`): on the nodes, a node copy
//!   with other contents is bound over it; the job must see central's.
//!
//! The tests: reads of small and 256 MiB files (`sha256sum`, `wc -c`);
//! the first bytes of a large file before all of it; listings of a tree
//! (`ls -la`, `find`, `tar | sha256sum`); a Python script that reads,
//! writes, renames, deletes and lists; `gcc -O2 -c`, link and run; errno as
//! `nobody`; a change on central seen by the next run and the next open;
//! the shared directory; central-only scripts and ELF programs exec'd;
//! `/proc/self` links; a program started through central-only symlinks
//! reading them (the launch carries their `lstat`); writes reaching central at `fsync` and `close`; and a
//! bare node (static `diatom-client`, no `/usr`, `/lib` or `/etc`) running
//! `python3` and `gcc`.
//!
//! Every `diatom exec` run is compared, byte for byte (exit status, stdout,
//! stderr), with the same command run locally on central from the same
//! directory and as the same user. Before trusting a test, each checks that
//! the node really lacks the files ([`assert_node_lacks`]), so a job that
//! read the node's own file system could not pass. A failing test shows
//! both runs and, as the cluster drops, the tails of the daemons' logs
//! (`DIATOM_KEEP_TEST_DIRS=1` keeps them whole).
// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers
// #[test] functions themselves.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diatom_tests::central_files::*;
use diatom_tests::cluster::{
    chown, describe, job_ids, pseudo_random, set_mode, text, DiatomCluster, Feed, Spawned, NOBODY,
};
use diatom_tests::testdir::TestDir;
use diatom_tests::{assert_static, require_root, static_client};

// ----- the tests ---------------------------------------------------------------

#[test]
fn files_read_small_and_large() {
    if !require_root("files_read_small_and_large") {
        return;
    }
    let f = Files::new("fread");
    put(&f.only("small.txt"), &lines(300, "small"), 0o644);
    put(&f.only("empty"), b"", 0o644);
    put(&f.only("odd.bin"), &pseudo_random(1_234_567, 7), 0o644);
    let start = Instant::now();
    write_big(&f.only("big.bin"), BIG, 0x6b16_f11e);
    eprintln!("wrote 256 MiB in {:?}", start.elapsed());
    let c = f.cluster("fread");
    let only = &f.only;
    let abs_small = f.only("small.txt").display().to_string();

    same_as_local(
        &c,
        only,
        &["sha256sum", "small.txt", "empty", "odd.bin"],
        RUN,
    );
    same_as_local(
        &c,
        only,
        &["wc", "-c", "small.txt", "empty", "odd.bin"],
        RUN,
    );
    // Absolute paths, from a directory of central that the node lacks too.
    same_as_local(&c, f.root.path(), &["sha256sum", &abs_small], RUN);
    same_as_local(&c, only, &["cat", "small.txt"], RUN);

    // The large file: one run each.
    let start = Instant::now();
    same_as_local(&c, only, &["sha256sum", "big.bin"], RUN_BIG);
    eprintln!(
        "sha256sum of 256 MiB (remote + local): {:?}",
        start.elapsed()
    );
    same_as_local(&c, only, &["wc", "-c", "big.bin"], RUN_BIG);
}

#[test]
fn files_large_file_first_bytes_before_whole_file() {
    if !require_root("files_large_file_first_bytes_before_whole_file") {
        return;
    }
    // Issue 6: "Large files do not have to arrive whole before the first
    // read." Inside one job, from before the open: the time to the first 16
    // bytes of an uncached 256 MiB file against the time to read the rest.
    // Streamed, the first bytes come after the first chunk and the rest
    // waits for the transfer; fetched whole at open, it is the other way
    // round. A causal check, not a speed target (those are benchmarks).
    let f = Files::new("fhead");
    write_big(&f.only("head.bin"), BIG, 0x89ab_cdef);
    let c = f.cluster("fhead");
    let script = "import time\n\
                  t0 = time.monotonic()\n\
                  f = open('head.bin', 'rb')\n\
                  first = f.read(16)\n\
                  t1 = time.monotonic()\n\
                  n = len(first)\n\
                  while True:\n\
                  \x20   b = f.read(1 << 20)\n\
                  \x20   if not b: break\n\
                  \x20   n += len(b)\n\
                  t2 = time.monotonic()\n\
                  print(n, t1 - t0, t2 - t1)\n";
    let out = remote(&c, &f.only, &["/usr/bin/python3", "-c", script], RUN_BIG);
    assert!(
        out.status.success(),
        "the timing job failed: {}",
        describe(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "unexpected output {text:?}");
    let n: u64 = fields[0].parse().unwrap();
    let first: f64 = fields[1].parse().unwrap();
    let rest: f64 = fields[2].parse().unwrap();
    eprintln!(
        "uncached 256 MiB in one job: first 16 bytes after {first:.3} s, the rest {rest:.3} s"
    );
    assert_eq!(n, BIG as u64, "the job read the whole file");
    assert!(
        first < rest,
        "the first 16 bytes of an uncached 256 MiB central file took {first:.3} s from the open, \
         the remaining bytes only {rest:.3} s more: the job waited for the whole file before \
         its first read"
    );
}

#[test]
fn files_tree_listings_match_local() {
    if !require_root("files_tree_listings_match_local") {
        return;
    }
    let f = Files::new("ftree");
    let t = f.only("tree");
    put(&t.join("README"), &lines(20, "readme"), 0o644);
    put(&t.join("empty"), b"", 0o644);
    put(&t.join("with space.txt"), b"spaces\n", 0o644);
    put(&t.join("private.txt"), b"root only\n", 0o600);
    put(&t.join("nobody.txt"), b"owned by nobody\n", 0o664);
    chown(&t.join("nobody.txt"), NOBODY, NOBODY);
    put(&t.join("a/one.bin"), &pseudo_random(100_000, 11), 0o644);
    put(&t.join("a/page"), &pseudo_random(4096, 12), 0o644);
    put(&t.join("a/b/c/deep.txt"), b"deep\n", 0o444);
    put(
        &t.join("bin/run.sh"),
        b"#!/bin/sh\necho run from the tree\n",
        0o755,
    );
    std::fs::hard_link(t.join("README"), t.join("a/hardlink")).unwrap();
    std::os::unix::fs::symlink("a/one.bin", t.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", t.join("a/dangling")).unwrap();
    for i in 0..300 {
        put(
            &t.join(format!("many/f{i:03}")),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    std::fs::create_dir_all(t.join("closed")).unwrap();
    put(&t.join("closed/inside"), b"x\n", 0o644);
    set_mode(&t.join("closed"), 0o700);
    // Fixed times on everything, directories last (deepest first), so
    // listings do not depend on when the test ran.
    let mut all: Vec<PathBuf> = Vec::new();
    let mut stack = vec![t.clone()];
    while let Some(d) = stack.pop() {
        all.push(d.clone());
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            } else {
                all.push(p);
            }
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        if !std::fs::symlink_metadata(p).unwrap().is_dir() {
            set_times(p, i64::try_from(i).unwrap());
        }
    }
    for (i, p) in all.iter().enumerate() {
        if std::fs::symlink_metadata(p).unwrap().is_dir() {
            set_times(p, 10_000 + i64::try_from(i).unwrap());
        }
    }
    let c = f.cluster("ftree");
    let only = &f.only;
    let abs = t.display().to_string();

    same_as_local(&c, only, &["ls", "-la", "tree"], RUN);
    same_as_local(&c, only, &["ls", "-la", &abs], RUN);
    same_as_local(
        &c,
        only,
        &["ls", "-laRn", "--time-style=full-iso", "tree"],
        RUN,
    );
    same_as_local(&c, only, &["find", "tree"], RUN);
    same_as_local(&c, f.root.path(), &["find", &abs], RUN);
    same_as_local(
        &c,
        only,
        &[
            "find",
            "tree",
            "-printf",
            "%y %m %n %u %g %s %T@ %p -> %l\\n",
        ],
        RUN,
    );
    same_as_local(&c, only, &["sh", "-c", "tar cf - tree | sha256sum"], RUN);
    // Absolute: tar's "Removing leading `/'" note on stderr too.
    same_as_local(
        &c,
        only,
        &["sh", "-c", "tar cf - \"$0\" | sha256sum", &abs],
        RUN,
    );
    // Listings name central's files, and a listed file reads as central's.
    same_as_local(&c, only, &["cat", "tree/link", "tree/a/hardlink"], RUN);
    same_as_local(&c, only, &["tree/bin/run.sh"], RUN);
}

#[test]
fn files_python_script_mutates_central() {
    if !require_root("files_python_script_mutates_central") {
        return;
    }
    let f = Files::new("fpy");
    fixture("mutate.py", &f.only("mutate.py"));
    let input = lines(200, "input");
    let seed = |dir: &Path| {
        put(&dir.join("input.txt"), &input, 0o644);
        put(&dir.join("log.txt"), b"first line\n", 0o644);
        put(&dir.join("truncate-me.txt"), b"truncate me please\n", 0o644);
        put(&dir.join("old-name.txt"), b"old\n", 0o644);
        put(&dir.join("replacement.txt"), b"replacement\n", 0o644);
        put(&dir.join("replaced.txt"), b"to be replaced\n", 0o644);
        put(&dir.join("delete-me.txt"), b"delete me\n", 0o644);
        std::fs::create_dir_all(dir.join("remove-dir")).unwrap();
    };
    let work = f.only("work");
    let reference = f.only("reference");
    seed(&work);
    seed(&reference);
    let c = f.cluster("fpy");
    let script = f.only("mutate.py").display().to_string();

    let r = remote(
        &c,
        &f.only,
        &["/usr/bin/python3", &script, &work.display().to_string()],
        RUN,
    );
    let l = local_in(
        &f.only,
        &[
            "/usr/bin/python3",
            &script,
            &reference.display().to_string(),
        ],
        None,
        RUN,
    );
    assert!(
        l.status.success() && l.stderr.is_empty(),
        "test setup: the local run of mutate.py: {}",
        describe(&l)
    );
    assert_like_local(
        &r,
        &l,
        "python3 mutate.py (reads, writes, renames, deletes, lists)",
    );

    // The job's changes are on central after it exited, exactly as the
    // local run left its copy...
    let (got, want) = (snapshot(&work), snapshot(&reference));
    assert!(
        got == want,
        "after the job, central's {} differs from the local run's copy\n\
         job:   {got:#?}\nlocal: {want:#?}",
        work.display()
    );
    // ...and as the script says, checked one by one.
    let mut output = b"HEAD".to_vec();
    output.extend_from_slice(&input.to_ascii_uppercase()[4..]);
    output.extend_from_slice(b"tail\n");
    let what = "mutate.py";
    assert!(
        read_central(&work.join("output.txt"), what) == output,
        "output.txt on central is not what the job wrote"
    );
    let mode = std::fs::metadata(work.join("output.txt")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o640, "chmod of output.txt by the job");
    let big = read_central(&work.join("big-out.bin"), what);
    let block: Vec<u8> = (0..=255u8).cycle().take(65536).collect();
    let want_big: Vec<u8> = (0..48)
        .flat_map(|i| block[i..].iter().chain(&block[..i]).copied())
        .collect();
    assert!(
        big == want_big,
        "big-out.bin on central: {} bytes, differs from the 3 MiB the job wrote",
        big.len()
    );
    assert_eq!(
        text(&read_central(&work.join("log.txt"), what)),
        "first line\nappended by the job\n"
    );
    assert_eq!(
        read_central(&work.join("truncate-me.txt"), what),
        b"tru",
        "truncate"
    );
    assert_eq!(read_central(&work.join("new-name.txt"), what), b"old\n");
    assert_eq!(
        read_central(&work.join("replaced.txt"), what),
        b"replacement\n"
    );
    assert_eq!(
        read_central(&work.join("made-renamed/inner.txt"), what),
        b"inner\n"
    );
    assert_eq!(
        std::fs::read_link(work.join("link-to-new")).ok(),
        Some(PathBuf::from("new-name.txt")),
        "symlink made by the job"
    );
    for gone in [
        "old-name.txt",
        "replacement.txt",
        "delete-me.txt",
        "remove-dir",
        "made",
    ] {
        assert!(
            std::fs::symlink_metadata(work.join(gone)).is_err(),
            "{gone} should be gone from central after the job"
        );
    }
}

#[test]
fn files_gcc_compile_link_run() {
    if !require_root("files_gcc_compile_link_run") {
        return;
    }
    let f = Files::new("fgcc");
    let proj = f.only("proj");
    for src in ["src/main.c", "src/util.c", "src/util.h"] {
        fixture(src, &proj.join(src));
    }
    put(&proj.join("data.txt"), &lines(5000, "data"), 0o644);
    for d in ["out", "ref"] {
        std::fs::create_dir_all(proj.join(d)).unwrap();
    }
    let c = f.cluster("fgcc");

    // Each step through diatom exec into out/, and locally into ref/.
    let steps: [(&[&str], &[&str]); 4] = [
        (
            &["gcc", "-O2", "-c", "src/main.c", "-o", "out/main.o"],
            &["gcc", "-O2", "-c", "src/main.c", "-o", "ref/main.o"],
        ),
        (
            &["gcc", "-O2", "-c", "src/util.c", "-o", "out/util.o"],
            &["gcc", "-O2", "-c", "src/util.c", "-o", "ref/util.o"],
        ),
        (
            &["gcc", "-o", "out/prog", "out/main.o", "out/util.o", "-lm"],
            &["gcc", "-o", "ref/prog", "ref/main.o", "ref/util.o", "-lm"],
        ),
        (
            &["./out/prog", "data.txt", "out/result.txt"],
            &["./ref/prog", "data.txt", "ref/result.txt"],
        ),
    ];
    for (i, (on_node, here)) in steps.iter().enumerate() {
        let start = Instant::now();
        let r = remote(&c, &proj, on_node, RUN);
        let took = start.elapsed();
        let l = local_in(&proj, here, None, RUN);
        let last = i == steps.len() - 1;
        // The program exits 7 on purpose; the compiler steps must succeed.
        let want = if last { Some(7) } else { Some(0) };
        assert_eq!(
            l.status.code(),
            want,
            "test setup: local `{}`: {}",
            here.join(" "),
            describe(&l)
        );
        assert_like_local(
            &r,
            &l,
            &format!("`{}` in {}", on_node.join(" "), proj.display()),
        );
        eprintln!("`{}` through diatom exec: {took:?}", on_node.join(" "));
    }
    // What the node's compiler and linker wrote is on central and is what
    // the local ones wrote (gcc -O2 -c without -g is deterministic).
    for (out, reference) in [
        ("out/main.o", "ref/main.o"),
        ("out/util.o", "ref/util.o"),
        ("out/prog", "ref/prog"),
        ("out/result.txt", "ref/result.txt"),
    ] {
        let got = read_central(&proj.join(out), "gcc on the node");
        let want = std::fs::read(proj.join(reference)).unwrap();
        assert!(
            got == want,
            "{out} written through diatom exec ({} bytes) differs from the local {reference} \
             ({} bytes)",
            got.len(),
            want.len()
        );
    }
    let mode = std::fs::metadata(proj.join("out/prog")).unwrap().mode();
    assert!(mode & 0o111 != 0, "out/prog is not executable: {mode:o}");
}

#[test]
fn files_errors_as_nobody() {
    if !require_root("files_errors_as_nobody") {
        return;
    }
    let f = Files::new("ferr");
    put(&f.only("readable.txt"), b"anyone may read this\n", 0o644);
    put(&f.only("secret"), b"root only\n", 0o600);
    put(&f.only("dir/inside.txt"), b"inside\n", 0o644);
    put(&f.only("private-dir/inside.txt"), b"hidden\n", 0o644);
    set_mode(&f.only("private-dir"), 0o700);
    std::fs::create_dir_all(f.only("root-dir")).unwrap();
    set_mode(&f.only("root-dir"), 0o755);
    let c = f.cluster("ferr");
    // The caller's cwd: the cluster's directory, readable by nobody.
    let cwd = c.dir().to_path_buf();
    let p = |rel: &str| f.only(rel).display().to_string();

    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["cat".into(), p("readable.txt")], 0, ""),
        (
            vec!["cat".into(), p("nope")],
            1,
            "No such file or directory",
        ),
        (vec!["cat".into(), p("secret")], 1, "Permission denied"),
        (vec!["cat".into(), p("dir")], 1, "Is a directory"),
        (
            vec!["ls".into(), format!("{}/x", p("readable.txt"))],
            2,
            "Not a directory",
        ),
        (
            vec!["cat".into(), format!("{}/x", p("readable.txt"))],
            1,
            "Not a directory",
        ),
        (vec!["ls".into(), p("private-dir")], 2, "Permission denied"),
        (
            vec!["cat".into(), p("private-dir/inside.txt")],
            1,
            "Permission denied",
        ),
        (
            vec!["touch".into(), p("root-dir/new")],
            1,
            "Permission denied",
        ),
        (vec!["mkdir".into(), p("dir")], 1, "File exists"),
        (
            vec!["sh".into(), "-c".into(), format!("echo x > {}", p("dir"))],
            2,
            "Is a directory",
        ),
        (
            vec![
                "sh".into(),
                "-c".into(),
                format!("echo x >> {}", p("secret")),
            ],
            2,
            "Permission denied",
        ),
    ];
    for (argv, code, message) in &cases {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let what = format!("`{}` as nobody", argv.join(" "));
        let l = local_in(&cwd, &argv, Some(NOBODY), RUN);
        assert!(
            l.status.code() == Some(*code) && text(&l.stderr).contains(message),
            "test setup: local {what} should exit {code} with {message:?}: {}",
            describe(&l)
        );
        let r = remote_as(&c, NOBODY, &cwd, &argv);
        assert_like_local(&r, &l, &what);
    }
    // Nothing was created or changed by the failed calls.
    assert!(!f.only("root-dir/new").exists());
    assert_eq!(std::fs::read(f.only("secret")).unwrap(), b"root only\n");
    assert!(f.only("dir").is_dir());
}

/// A tree walk (`find`) reads most directories from listings the home
/// read ahead (one `OpenDir` lists many directories), and still prints
/// what `find` prints on central, as root and as `nobody` (who meets a
/// directory it may not read, and one it may search but not read).
#[test]
fn files_tree_walk_read_ahead_matches_local() {
    if !require_root("files_tree_walk_read_ahead_matches_local") {
        return;
    }
    let f = Files::new("fwalk");
    let t = f.only("walk");
    for i in 0..40 {
        for j in 0..3 {
            put(
                &t.join(format!("w/s{i:02}/t{j}/u/f")),
                format!("{i} {j}\n").as_bytes(),
                0o644,
            );
        }
    }
    put(&t.join("deep/a/b/c/d/e/f/g/h"), b"deep\n", 0o644);
    put(&t.join("closed/sub/x"), b"x\n", 0o644);
    set_mode(&t.join("closed"), 0o700);
    put(&t.join("search-only/sub/y"), b"y\n", 0o644);
    set_mode(&t.join("search-only"), 0o711);
    std::os::unix::fs::symlink("w/s00", t.join("to-s00")).unwrap();
    let c = f.cluster("fwalk");
    let abs = t.display().to_string();
    let walk = ["sh", "-c", "find \"$0\" -ls | sort -k11", &abs];
    let (out, job) = c.exec_job(exec_args(&walk).into_iter().skip(1));
    let local = local_in(c.dir(), &walk, None, RUN);
    assert!(local.status.success(), "local: {}", describe(&local));
    assert_like_local(&out, &local, "find -ls as root");
    let counters = &job["counters"];
    let used = counters["listings_ahead_used"].as_u64().unwrap_or(0);
    let asked = counters["calls.Open"].as_u64().unwrap_or(0)
        + counters["calls.OpenDir"].as_u64().unwrap_or(0);
    // 176 directories: most opened without asking the home.
    assert!(
        used >= 100 && asked < used,
        "directories opened from listings read ahead: {counters}"
    );
    // As nobody: `closed` and `search-only` cannot be listed (EACCES at
    // their open), on central as through the job.
    let cwd = c.dir().to_path_buf();
    let out = remote_as(&c, NOBODY, &cwd, &walk);
    let local = local_in(&cwd, &walk, Some(NOBODY), RUN);
    assert!(
        text(&local.stderr).contains("Permission denied"),
        "test setup: {}",
        describe(&local)
    );
    assert_like_local(&out, &local, "find -ls as nobody");
    // A directory the job changes after listing its parent is still there
    // (its parent's listing must not call it absent), with the change.
    same_as_local(
        &c,
        &f.only,
        &[
            "sh",
            "-c",
            "ls walk/deep >/dev/null; ls walk/deep/a; touch walk/deep/a/new; \
             ls walk/deep/a; rm walk/deep/a/new; ls walk/deep/a",
        ],
        RUN,
    );
}

/// A listing read ahead is valid for `FsConfig::meta_ttl` (2 s) from the
/// question that brought it: a directory changed on central after its
/// listing was read ahead, and opened more than 2 s later, is seen changed.
#[test]
fn files_listing_read_ahead_expires() {
    if !require_root("files_listing_read_ahead_expires") {
        return;
    }
    let f = Files::new("fahead");
    let t = f.only("t");
    put(&t.join("a/b/c/old"), b"old\n", 0o644);
    let c = f.cluster("fahead");
    let before = job_ids(&c.ps_json(true));
    // `ls t/a/b` is a walk's step (t and t/a were listed): its open reads
    // ahead the listing of t/a/b/c.
    let mut cmd = c.diatom_cmd(exec_args(&[
        "sh",
        "-c",
        "ls t >/dev/null; ls t/a >/dev/null; ls t/a/b; read go; sleep 3; ls t/a/b/c",
    ]));
    cmd.current_dir(&f.only);
    let mut job = Spawned::spawn(cmd, Feed::Pipe);
    job.wait_stdout(b"c\n", RUN, "the job did not list t/a/b");
    std::fs::remove_file(t.join("a/b/c/old")).unwrap();
    put(&t.join("a/b/c/new"), b"new\n", 0o644);
    job.stdin().unwrap().write_all(b"go\n").unwrap();
    job.close_stdin();
    let out = job.wait_or_panic(RUN, &format!("daemon logs in {}", c.dir().display()));
    assert!(
        out.status.success() && out.stdout == b"c\nnew\n" && out.stderr.is_empty(),
        "a directory changed on central more than meta_ttl after its listing \
         was read ahead should be seen changed: {}",
        describe(&out)
    );
    // And the listing really had been read ahead.
    let after = c.ps_json(true);
    let job = after
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| {
            j.get("id")
                .is_some_and(|id| !before.contains(&id.to_string()))
        })
        .expect("the job in `ps --all --json`");
    assert!(
        job["counters"]["listings_ahead"].as_u64().unwrap_or(0) >= 1,
        "no listing was read ahead: {}",
        job["counters"]
    );
}

#[test]
fn files_change_on_central_seen_next_run() {
    if !require_root("files_change_on_central_seen_next_run") {
        return;
    }
    let f = Files::new("fchg");
    let file = f.only("changing.txt");
    let dir = f.only("listed");
    put(&file, b"version one\n", 0o644);
    put(&dir.join("a"), b"a\n", 0o644);
    let c = f.cluster("fchg");
    let only = &f.only;
    let check = |want: &str, what: &str| {
        let out = same_as_local(
            &c,
            only,
            &[
                "sh",
                "-c",
                "cat changing.txt; wc -c changing.txt; ls listed",
            ],
            RUN,
        );
        assert!(
            text(&out.stdout).starts_with(want),
            "{what}: the job should see {want:?} in changing.txt: {}",
            describe(&out)
        );
    };
    check("version one\n", "first run");

    // Rewritten in place (same inode), longer.
    let rewrite = |data: &[u8]| {
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .unwrap();
        w.write_all(data).unwrap();
        w.sync_all().unwrap();
    };
    rewrite(b"the second version, longer\n");
    put(&dir.join("b"), b"b\n", 0o644);
    check("the second version, longer\n", "after a rewrite in place");

    // Same size, same inode, different content; the mtime moves on (by
    // 2 s, so a coarse clock cannot hide the change).
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    rewrite(b"THE SECOND VERSION, LONGER\n");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before + Duration::from_secs(2))
        .unwrap();
    std::fs::remove_file(dir.join("a")).unwrap();
    check("THE SECOND VERSION, LONGER\n", "after a same-size rewrite");

    // Replaced by rename: a new inode with the same size and mtime.
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let tmp = f.only("changing.tmp");
    let third = b"third version, renamed in.\n";
    assert_eq!(
        third.len(),
        std::fs::metadata(&file).unwrap().len() as usize
    );
    put(&tmp, third, 0o644);
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    check("third version, renamed in.\n", "after a replace by rename");

    // Within one job: a file changed on central between two opens is seen
    // at the second open (close-to-open).
    let mut cmd = c.diatom_cmd(exec_args(&[
        "sh",
        "-c",
        "cat changing.txt; read go; cat changing.txt",
    ]));
    cmd.current_dir(only);
    let mut job = Spawned::spawn(cmd, Feed::Pipe);
    job.wait_stdout(
        b"renamed in.\n",
        RUN,
        "the job did not print the file's third version",
    );
    put(&file, b"fourth version, while the job runs\n", 0o644);
    job.stdin().unwrap().write_all(b"go\n").unwrap();
    job.close_stdin();
    let out = job.wait_or_panic(RUN, &format!("daemon logs in {}", c.dir().display()));
    assert!(
        out.status.success()
            && out.stdout == b"third version, renamed in.\nfourth version, while the job runs\n"
            && out.stderr.is_empty(),
        "a job should see a change made on central between its two opens: {}",
        describe(&out)
    );
}

#[test]
fn files_shared_dir_shows_centrals_copy() {
    if !require_root("files_shared_dir_shows_centrals_copy") {
        return;
    }
    let f = Files::new("fshare");
    put(&f.shared.join("file.txt"), b"central's copy\n", 0o644);
    put(&f.shared.join("only-on-central.txt"), b"central\n", 0o644);
    put(
        &f.node_shared.join("file.txt"),
        b"the node's own copy, longer\n",
        0o644,
    );
    put(&f.node_shared.join("only-on-node.txt"), b"node\n", 0o644);
    let c = f.cluster("fshare");
    // Premise: the node has its own, different shared/file.txt.
    let on_node = std::fs::read(c.node_view(1, f.shared.join("file.txt"))).unwrap_or_default();
    assert_eq!(
        on_node,
        b"the node's own copy, longer\n",
        "test setup: node1 should see its own copy of {}",
        f.shared.display()
    );
    let root = f.root.path();
    let out = same_as_local(&c, root, &["cat", "shared/file.txt"], RUN);
    assert_eq!(
        text(&out.stdout),
        "central's copy\n",
        "the job must read central's shared/file.txt, not the node's"
    );
    same_as_local(&c, root, &["wc", "-c", "shared/file.txt"], RUN);
    same_as_local(&c, root, &["ls", "shared"], RUN);
    same_as_local(&c, root, &["ls", "-la", "shared"], RUN);
    same_as_local(&c, root, &["sh", "-c", "sha256sum shared/*"], RUN);
    let abs = f.shared.join("only-on-node.txt").display().to_string();
    let r = remote(&c, root, &["cat", &abs], RUN);
    let l = local_in(root, &["cat", &abs], None, RUN);
    assert!(
        l.status.code() == Some(1),
        "test setup: {abs} must not exist on central: {}",
        describe(&l)
    );
    assert_like_local(&r, &l, "cat of a file only the node has");
}

#[test]
fn files_exec_central_only_programs() {
    if !require_root("files_exec_central_only_programs") {
        return;
    }
    let f = Files::new("fexec");
    put(
        &f.only("hello.sh"),
        b"#!/bin/sh\necho \"sh script $0 $*\"\ncat \"$(dirname \"$0\")/data.txt\"\n",
        0o755,
    );
    put(
        &f.only("hello.py"),
        b"#!/usr/bin/python3\nimport sys\nprint('python script', sys.argv[1:])\n\
          print(open(__file__.replace('hello.py', 'data.txt')).read(), end='')\n",
        0o755,
    );
    put(&f.only("data.txt"), b"central-only data\n", 0o644);
    // An ELF program that exists only on central.
    let echo = std::fs::read("/bin/echo").unwrap();
    put(&f.only("bin/my-echo"), &echo, 0o755);
    let c = f.cluster("fexec");
    let only = &f.only;
    let abs = f.only("hello.sh").display().to_string();

    let root = f.root.path();
    // PROGRAM itself, and the same programs exec'd by a process of the job.
    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (only, vec!["./hello.sh", "a", "b"]),
        (only, vec!["sh", "-c", "./hello.sh from the job"]),
        (root, vec![&abs, "abs"]),
        (root, vec!["sh", "-c", "\"$0\" from the job", &abs]),
        (only, vec!["./hello.py", "x"]),
        (only, vec!["sh", "-c", "./hello.py from the job"]),
        (only, vec!["bin/my-echo", "central", "elf"]),
        (only, vec!["sh", "-c", "bin/my-echo from the job"]),
    ];
    let mut bad: Vec<String> = cases
        .iter()
        .filter_map(|(cwd, argv)| differs(&c, cwd, argv))
        .collect();
    // Through the caller's PATH, as a shell would find it.
    let path = format!(
        "{}:{}",
        f.only("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = c.diatom_cmd(exec_args(&["my-echo", "via", "PATH"]));
    cmd.current_dir(only).env("PATH", &path);
    let r = c.run(cmd, Feed::Null, RUN);
    if !(r.status.success() && r.stdout == b"via PATH\n" && r.stderr.is_empty()) {
        bad.push(format!(
            "`my-echo via PATH` with the central-only bin directory first in PATH: {}",
            describe(&r)
        ));
    }
    assert!(
        bad.is_empty(),
        "{} of {} runs of central-only programs differ from the local runs:\n{}\n\
         (daemon logs follow)",
        bad.len(),
        cases.len() + 1,
        bad.join("\n")
    );
}

#[test]
fn files_proc_self_links_answer_as_central() {
    if !require_root("files_proc_self_links_answer_as_central") {
        return;
    }
    let f = Files::new("fproc");
    put(&f.only("data.txt"), b"data\n", 0o644);
    std::fs::create_dir_all(f.only("sub")).unwrap();
    let c = f.cluster("fproc");
    let only = &f.only;
    // The program, its cwd and an open central file, as /proc/self names
    // them; then as a child process sees them through its parent's pid.
    let py = "import os\n\
              f = open('data.txt')\n\
              print(os.readlink('/proc/self/exe'))\n\
              print(os.readlink('/proc/self/cwd'))\n\
              print(os.readlink('/proc/self/fd/%d' % f.fileno()))\n\
              os.chdir('sub')\n\
              print(os.readlink('/proc/%d/cwd' % os.getpid()))\n\
              print(os.getcwd())\n";
    same_as_local(&c, only, &["/usr/bin/python3", "-c", py], RUN);
    same_as_local(
        &c,
        only,
        &["readlink", "/proc/self/exe", "/proc/self/cwd"],
        RUN,
    );
    same_as_local(
        &c,
        only,
        &[
            "sh",
            "-c",
            "exec 3<data.txt; readlink /proc/self/fd/3; pwd; cd sub; pwd -P",
        ],
        RUN,
    );
}

#[test]
fn files_program_symlinks_read_as_central() {
    if !require_root("files_program_symlinks_read_as_central") {
        return;
    }
    // The launch carries the home's lstat of the program's symlink chain
    // (central-only links here, relative then absolute); the job reads
    // them as central has them, and sees its own change of one at once.
    let f = Files::new("fplinks");
    std::fs::create_dir_all(f.only("bin")).unwrap();
    std::os::unix::fs::symlink("py3", f.only("bin/py")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", f.only("bin/py3")).unwrap();
    let c = f.cluster("fplinks");
    let py = "import os, sys\n\
              print(os.readlink('bin/py'), os.readlink('bin/py3'))\n\
              print(os.path.realpath('bin/py'), sys.executable, sys.prefix)\n\
              print(os.path.islink('bin/py'), os.lstat('bin/py3').st_size)\n\
              os.remove('bin/py3')\n\
              os.symlink(os.path.realpath('/usr/bin/python3'), 'bin/py3')\n\
              print(os.readlink('bin/py3'), os.path.exists('/etc/ld.so.preload'))\n\
              os.remove('bin/py3')\n\
              os.symlink('/usr/bin/python3', 'bin/py3')\n";
    same_as_local(&c, &f.only, &["bin/py", "-c", py], RUN);
}

#[test]
fn files_writes_reach_central_at_fsync_and_close() {
    if !require_root("files_writes_reach_central_at_fsync_and_close") {
        return;
    }
    // docs/files.md: a reader on central sees a job's writes once the job
    // fsyncs or closes, and a change made on central is seen at the job's
    // next open.
    let f = Files::new("fsync");
    let file = f.only("log.txt");
    put(&file, b"", 0o644);
    let c = f.cluster("fsync");
    let py = "import os, sys\n\
              f = open('log.txt', 'wb')\n\
              f.write(b'synced part\\n'); f.flush(); os.fsync(f.fileno())\n\
              print('fsynced', flush=True)\n\
              sys.stdin.readline()\n\
              f.write(b'closed part\\n'); f.close()\n\
              print('closed', flush=True)\n\
              sys.stdin.readline()\n";
    let mut cmd = c.diatom_cmd(exec_args(&["/usr/bin/python3", "-c", py]));
    cmd.current_dir(&f.only);
    let mut job = Spawned::spawn(cmd, Feed::Pipe);
    job.wait_stdout(b"fsynced\n", RUN, "the job did not print fsynced");
    assert_eq!(
        text(&std::fs::read(&file).unwrap()),
        "synced part\n",
        "after the job's fsync, central's {} should hold what it wrote",
        file.display()
    );
    job.stdin().unwrap().write_all(b"go\n").unwrap();
    job.wait_stdout(b"closed\n", RUN, "the job did not print closed");
    assert_eq!(
        text(&std::fs::read(&file).unwrap()),
        "synced part\nclosed part\n",
        "after the job's close (the job still runs), central's {} should hold all it wrote",
        file.display()
    );
    job.stdin().unwrap().write_all(b"go\n").unwrap();
    job.close_stdin();
    let out = job.wait_or_panic(RUN, &format!("daemon logs in {}", c.dir().display()));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "the writing job: {}",
        describe(&out)
    );
}

#[test]
fn files_writes_through_a_mapping_outliving_its_descriptor_reach_central() {
    if !require_root("files_writes_through_a_mapping_outliving_its_descriptor_reach_central") {
        return;
    }
    // open, mmap(MAP_SHARED), close, then write through the mapping: the
    // writes reach central at msync, and when the last process mapping it
    // is gone.
    let f = Files::new("mapped");
    let c = f.cluster("mapped");
    let py = "import ctypes, os, sys\n\
              libc = ctypes.CDLL(None, use_errno=True)\n\
              libc.mmap.restype = ctypes.c_void_p\n\
              libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,\n\
              \x20                     ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
              libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]\n\
              fd = os.open('mapped.bin', os.O_RDWR | os.O_CREAT, 0o644)\n\
              os.ftruncate(fd, 8192)\n\
              p = libc.mmap(None, 8192, 3, 1, fd, 0)\n\
              assert p and p != ctypes.c_void_p(-1).value, ctypes.get_errno()\n\
              os.close(fd)\n\
              ctypes.memmove(p, b'written through a mapping', 25)\n\
              assert libc.msync(p, 8192, 4) == 0, ctypes.get_errno()\n\
              print('synced', flush=True)\n\
              sys.stdin.readline()\n\
              ctypes.memmove(p + 4096, b'second page', 11)\n\
              if os.fork() == 0:\n\
              \x20   ctypes.memmove(p + 8000, b'from a child', 12)\n\
              \x20   os._exit(0)\n\
              os.wait()\n\
              print('mapped', flush=True)\n";
    let mut cmd = c.diatom_cmd(exec_args(&["/usr/bin/python3", "-c", py]));
    cmd.current_dir(&f.only);
    let mut job = Spawned::spawn(cmd, Feed::Pipe);
    job.wait_stdout(b"synced\n", RUN, "the job did not print synced");
    let central = f.only.join("mapped.bin");
    let mut want = vec![0u8; 8192];
    want[..25].copy_from_slice(b"written through a mapping");
    let described = |got: &[u8]| {
        format!(
            "{} bytes, starts {:?}, page 2 {:?}, at 8000 {:?}",
            got.len(),
            text(&got[..got.len().min(25)]),
            text(got.get(4096..4107).unwrap_or_default()),
            text(got.get(8000..8012).unwrap_or_default())
        )
    };
    let got = std::fs::read(&central).unwrap();
    assert!(
        got == want,
        "after msync, central's mapped.bin: {}",
        described(&got)
    );
    job.stdin().unwrap().write_all(b"go\n").unwrap();
    job.close_stdin();
    let out = job.wait_or_panic(RUN, "the mapping job");
    assert!(
        out.status.success() && out.stdout == b"synced\nmapped\n",
        "the mapping job: {}",
        describe(&out)
    );
    want[4096..4107].copy_from_slice(b"second page");
    want[8000..8012].copy_from_slice(b"from a child");
    let got = std::fs::read(&central).unwrap();
    assert!(
        got == want,
        "after the job, central's mapped.bin: {}",
        described(&got)
    );
}

// ----- a bare node -------------------------------------------------------------

#[test]
fn files_bare_node_runs_python_and_gcc() {
    if !require_root("files_bare_node_runs_python_and_gcc") {
        return;
    }
    let Some(bin) = static_client("files_bare_node_runs_python_and_gcc") else {
        return;
    };
    assert_static(&bin);
    let work = TestDir::new("fbare-work").unwrap();
    set_mode(work.path(), 0o755);
    put(
        &work.join("hello.c"),
        b"#include <stdio.h>\n\nint main(int argc, char **argv)\n{\n    \
          printf(\"hello from a bare node, %d args, %s\\n\", argc, argc > 1 ? argv[1] : \"-\");\n    \
          return 3;\n}\n",
        0o644,
    );
    let c = DiatomCluster::builder(1)
        .name("fbare")
        .bare_nodes(&bin)
        .start();
    // Premise: the node has nothing but the daemon, its key and state.
    for p in [
        "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/var", "/home",
    ] {
        let seen = c.node_view(1, p);
        assert!(
            std::fs::symlink_metadata(&seen).is_err(),
            "test setup: the bare node should have no {p}, but {} exists",
            seen.display()
        );
    }
    assert_node_lacks(&c, work.path());
    assert!(c.node_view(1, "/proc/self").exists());

    let out = remote(
        &c,
        work.path(),
        &["/usr/bin/python3", "-c", "print(6*7)"],
        RUN,
    );
    assert!(
        out.status.success() && out.stdout == b"42\n" && out.stderr.is_empty(),
        "python3 on a bare node: {}\n(daemon logs follow)",
        describe(&out)
    );
    // The standard library's modules and C extensions come from central too.
    same_as_local(
        &c,
        work.path(),
        &[
            "/usr/bin/python3",
            "-c",
            "import hashlib, json, zlib; print(json.dumps([hashlib.sha256(b'x').hexdigest(), \
             zlib.crc32(b'diatom')]))",
        ],
        RUN,
    );

    // gcc: the driver, cc1, as, ld, headers, crt files and libc, all from
    // central; the result, written on central, runs on the bare node too.
    let out = remote(
        &c,
        work.path(),
        &["gcc", "-O2", "-o", "hello", "hello.c"],
        RUN,
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "gcc -O2 -o hello hello.c on a bare node: {}\n(daemon logs follow)",
        describe(&out)
    );
    assert!(
        work.join("hello").is_file(),
        "gcc on the bare node left no {} on central",
        work.join("hello").display()
    );
    let r = remote(&c, work.path(), &["./hello", "bare"], RUN);
    let l = local_in(work.path(), &["./hello", "bare"], None, RUN);
    assert_eq!(l.status.code(), Some(3), "local ./hello: {}", describe(&l));
    assert_like_local(&r, &l, "./hello built on the bare node");
}
