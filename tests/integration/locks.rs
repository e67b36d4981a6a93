//! Advisory locks on central files (issue 6: "the whole file system-call
//! surface ... Errors are central's"): `flock` and `fcntl` locks a job
//! takes on a central file are central's locks, so jobs on two nodes and a
//! process on central exclude each other (`docs/files.md`, "Locks").
//!
//! The tests, on a two-node cluster whose nodes cannot see the files:
//! - two jobs (one per node) and a local process on central each increment
//!   a counter file ten times under the lock, with a pause between reading
//!   and writing it, and log entering and leaving: the log must show every
//!   holder leaving before the next enters and the count must be exact
//!   (with `flock`, then with `lockf`, i.e. `fcntl(F_SETLKW)`);
//! - who owns a lock (descriptions, processes), inheritance, `dup`, release
//!   at `close`, `F_GETLK`, OFD locks and errors, byte for byte as a local
//!   run on central;
//! - a job waiting for a lock a central process holds is interrupted by a
//!   signal as locally, and a job's locks are released when it closes a
//!   descriptor whose `close` does not stop (at its next stopped call),
//!   when it ends, and when its node is lost.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diatom_tests::central_files::*;
use diatom_tests::cluster::{describe, DiatomCluster, Feed, Spawned};
use diatom_tests::require_root;

/// Rounds each participant makes in the contention test.
const ROUNDS: usize = 10;

/// A two-node cluster that cannot see `f`'s files, and the test directory
/// (central-only) holding the script and the lock.
fn setup(test: &str) -> (Files, DiatomCluster, PathBuf) {
    let f = Files::new(test);
    let dir = f.only("x");
    fixture("locks.py", &dir.join("locks.py"));
    put(&dir.join("lock"), b"", 0o644);
    let c = DiatomCluster::builder(2)
        .name(test)
        .node_mounts(f.node_view())
        .start();
    assert_node_lacks(&c, &f.only);
    (f, c, dir)
}

/// `diatom exec --node NODE -- python3 locks.py ARGS` from `dir`.
fn job(c: &DiatomCluster, node: &str, dir: &Path, args: &[&str]) -> Spawned {
    let mut argv = vec!["exec", "--node", node, "--", "python3", "locks.py"];
    argv.extend_from_slice(args);
    let mut cmd = c.diatom_cmd(argv);
    cmd.current_dir(dir);
    Spawned::spawn(cmd, Feed::Null)
}

/// `python3 locks.py ARGS` on central from `dir`.
fn local(dir: &Path, args: &[&str]) -> Spawned {
    let mut cmd = Command::new("python3");
    cmd.arg("locks.py").args(args).current_dir(dir);
    Spawned::spawn(cmd, Feed::Null)
}

/// Waits (at most a minute) until `path` exists on central.
fn wait_for_file(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{what}: {} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process on central can take an exclusive lock of `kind` on
/// `dir/lock` without waiting.
fn central_can_lock(dir: &Path, kind: &str) -> bool {
    let code = format!(
        "import fcntl\nf = open('lock', 'a')\n\
         try:\n    fcntl.{kind}(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n\
         except OSError:\n    print('busy')"
    );
    let out = local_in(dir, &["python3", "-c", &code], None, RUN);
    assert!(out.status.success(), "lock probe: {}", describe(&out));
    match String::from_utf8_lossy(&out.stdout).trim() {
        "free" => true,
        "busy" => false,
        other => panic!("lock probe printed {other:?}"),
    }
}

/// Two jobs on two nodes and a central process contend for the lock.
fn contend(c: &DiatomCluster, dir: &Path, kind: &str) {
    put(&dir.join("count"), b"0", 0o644);
    put(&dir.join("log"), b"", 0o644);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("ready-") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let rounds = ROUNDS.to_string();
    let mut runs = vec![
        (
            "node1",
            job(c, "node1", dir, &["count", "node1", kind, &rounds, "3"]),
        ),
        (
            "node2",
            job(c, "node2", dir, &["count", "node2", kind, &rounds, "3"]),
        ),
        (
            "central",
            local(dir, &["count", "central", kind, &rounds, "3"]),
        ),
    ];
    for (who, s) in &mut runs {
        let out = s.wait_or_panic(RUN, &format!("{kind}: {who}'s run"));
        assert!(
            out.status.success(),
            "{kind}: {who}'s run failed: {}",
            describe(&out)
        );
    }
    let log = String::from_utf8(std::fs::read(dir.join("log")).unwrap()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 6 * ROUNDS, "{kind}: the log:\n{log}");
    let mut switches = 0;
    for (i, pair) in lines.chunks(2).enumerate() {
        let who = pair[0].strip_suffix(" in");
        assert!(
            who.is_some() && pair[1].strip_suffix(" out") == who,
            "{kind}: holder {i} did not leave before the next entered:\n{log}"
        );
        if i > 0 && lines[2 * i - 2] != pair[0] {
            switches += 1;
        }
    }
    for who in ["node1", "node2", "central"] {
        let n = lines.iter().filter(|l| **l == format!("{who} in")).count();
        assert_eq!(n, ROUNDS, "{kind}: {who} entered {n} times:\n{log}");
    }
    let count = std::fs::read_to_string(dir.join("count")).unwrap();
    assert_eq!(count, (3 * ROUNDS).to_string(), "{kind}: lost updates");
    eprintln!(
        "{kind}: {} rounds, the holder changed {switches} times",
        3 * ROUNDS
    );
}

#[test]
fn locks_exclude_jobs_on_two_nodes_and_central() {
    if !require_root("locks_exclude_jobs_on_two_nodes_and_central") {
        return;
    }
    let (_f, c, dir) = setup("lockx");
    contend(&c, &dir, "flock");
    contend(&c, &dir, "lockf");
}

#[test]
fn lock_owners_and_release_match_local() {
    if !require_root("lock_owners_and_release_match_local") {
        return;
    }
    let (_f, c, dir) = setup("lockown");
    same_as_local(&c, &dir, &["python3", "locks.py", "semantics"], RUN);
}

#[test]
fn lock_waits_take_signals_and_locks_go_with_the_job() {
    if !require_root("lock_waits_take_signals_and_locks_go_with_the_job") {
        return;
    }
    let (_f, mut c, dir) = setup("lockend");
    // Held on central: a job's wait is interrupted by its SIGALRM handler
    // (which raises), exactly as a local waiter's.
    for kind in ["flock", "lockf"] {
        let mut holder = local(&dir, &["hold", kind]);
        wait_for_file(&dir.join("held"), "the central holder");
        let out = same_as_local(&c, &dir, &["python3", "locks.py", "signal", kind], RUN);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "interrupted\nthen: Resource temporarily unavailable\n",
            "{kind}"
        );
        holder.kill();
        std::fs::remove_file(dir.join("held")).unwrap();
        assert!(central_can_lock(&dir, kind), "{kind}: the holder is gone");
    }

    // A lock taken through a descriptor whose close does not stop (below
    // the write range) goes at the job's next stopped call.
    let mut job1 = job(&c, "node1", &dir, &["closed"]);
    wait_for_file(&dir.join("held"), "the job's lock");
    wait_for_file(&dir.join("closed"), "the job's close");
    assert!(
        central_can_lock(&dir, "flock"),
        "flock after the job closed it"
    );
    job1.kill();
    std::fs::remove_file(dir.join("held")).unwrap();

    // A job that ends holding locks releases them.
    let code = "import fcntl\nf = open('lock', 'a')\nfcntl.lockf(f, fcntl.LOCK_EX)\n\
                g = open('lock')\nfcntl.flock(g, fcntl.LOCK_EX)\nprint('held')";
    let out = remote(&c, &dir, &["python3", "-c", code], RUN);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(central_can_lock(&dir, "lockf"), "lockf after the job's end");
    assert!(central_can_lock(&dir, "flock"), "flock after the job's end");

    // So does a job whose node is lost.
    let mut held = job(&c, "node1", &dir, &["hold", "flock"]);
    wait_for_file(&dir.join("held"), "the job");
    assert!(!central_can_lock(&dir, "flock"), "the job holds the lock");
    c.kill_node(1);
    let out = held.wait_or_panic(RUN, "diatom exec after its node was lost");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        central_can_lock(&dir, "flock"),
        "flock after the node was lost"
    );
}
