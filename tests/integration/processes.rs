//! Whole process trees on a node (issue 7, "Process trees"): a job is every
//! process and thread its first process starts, all traced on the same node
//! and all seeing central's files.
//!
//! The tests run real programs over central-only files (the node's mount
//! view lacks them, see `diatom_tests::central_files`) and compare each
//! `diatom exec` run, byte for byte, with the same command run locally on
//! central: a shell pipeline; `make -j2` of a small C project, then the
//! program it built; Python `multiprocessing` (4 workers) and `threading`
//! (8 threads) reading and writing files; a C program whose threads open,
//! read and close files at once; signals and `wait` between a job's
//! processes. Then what only the node can show: after a job whose
//! descendants outlive it (background, double-forked and `setsid` ones)
//! exits, none of them remain; `diatom kill` and a signal to `diatom exec`
//! reach every process of the job, even one in its own session; and the
//! tracee's own `ptrace`/`process_vm_*` fail with `EPERM` in a child, a
//! thread and an exec'd grandchild.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diatom_tests::central_files::{
    assert_like_local, local_in, put, remote, same_as_local, snapshot, Files, RUN,
};
use diatom_tests::cluster::{
    describe, processes_with_arg, show, text, unique_sleep, DiatomCluster, Feed, Spawned,
};
use diatom_tests::require_root;
use nix::sys::signal::Signal;

/// The C programs, Python scripts and the make project of these tests.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/procs");

/// Copies the fixture file or directory `name` to `to` on central
/// (readable by everyone, like the rest of a test's tree).
fn copy_fixture(name: &str, to: &Path) {
    let from = Path::new(FIXTURES).join(name);
    let out = Command::new("cp")
        .arg("-R")
        .arg(&from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp {}: {}",
        from.display(),
        describe(&out)
    );
    let out = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chmod {}: {}",
        to.display(),
        describe(&out)
    );
}

/// Compiles a fixture C file into `dir/name` on central with gcc.
fn compile(src: &str, dir: &Path, name: &str) {
    let out_path = dir.join(name);
    let out = Command::new("gcc")
        .args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&out_path)
        .arg(Path::new(FIXTURES).join(src))
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc {src}: {}", describe(&out));
    std::fs::set_permissions(&out_path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Words with repeats, so `uniq -c` has something to count.
fn word_lines(n: usize, seed: usize) -> Vec<u8> {
    const WORDS: [&str; 7] = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"];
    (0..n)
        .map(|i| format!("{}\n", WORDS[(i * 31 + seed * 17 + i / 3) % WORDS.len()]))
        .collect::<String>()
        .into_bytes()
}

/// The id of the only running job whose program is `program`.
fn running_job(c: &DiatomCluster, program: &str) -> String {
    let ps = c.ps_json(false);
    let jobs: Vec<_> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["program"].as_str().is_some_and(|p| p.contains(program)))
        .collect();
    assert_eq!(jobs.len(), 1, "one running job of {program}: {ps}");
    match &jobs[0]["id"] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Waits until `job` has printed `needle` `count` times.
fn wait_output(job: &Spawned, needle: &str, count: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = text(&job.stdout_so_far());
        if out.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {count} x {needle:?} not printed within 60 s; stdout {out:?}, stderr {}",
            show(&job.stderr_so_far())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ----- the tests ---------------------------------------------------------------

#[test]
fn procs_pipeline_and_shell_jobs_match_local() {
    if !require_root("procs_pipeline_and_shell_jobs_match_local") {
        return;
    }
    let f = Files::new("ppipe");
    put(&f.only("a.txt"), &word_lines(5000, 1), 0o644);
    put(&f.only("b.txt"), &word_lines(3000, 2), 0o644);
    let c = f.cluster("ppipe");
    same_as_local(
        &c,
        &f.only,
        &[
            "sh",
            "-c",
            "cat a.txt b.txt | sort | uniq -c | sort -nr | head",
        ],
        RUN,
    );
    // Signals and wait between the job's own processes; a pipe whose
    // reader exits first (SIGPIPE in the writer).
    same_as_local(
        &c,
        &f.only,
        &[
            "sh",
            "-c",
            "sleep 100 & kill -TERM $!; wait $!; echo killed child: $?; \
             yes | head -3; (exit 7) & wait $!; echo subshell: $?; \
             for i in 1 2 3; do (echo job $i; cat a.txt | wc -l) > out.$i & done; wait; \
             cat out.1 out.2 out.3; rm out.*; echo done",
        ],
        RUN,
    );
}

#[test]
fn procs_make_j2_builds_and_runs() {
    if !require_root("procs_make_j2_builds_and_runs") {
        return;
    }
    let f = Files::new("pmake");
    let remote_dir = f.only("remote");
    let local_dir = f.only("local");
    copy_fixture("project", &remote_dir);
    copy_fixture("project", &local_dir);
    let c = f.cluster("pmake");
    let r = remote(&c, &remote_dir, &["make", "-j2", "-s"], RUN);
    let l = local_in(&local_dir, &["make", "-j2", "-s"], None, RUN);
    assert!(l.status.success(), "local make: {}", describe(&l));
    assert_like_local(&r, &l, "make -j2 -s");
    // The same objects and program on central as a local build made.
    assert_eq!(
        snapshot(&remote_dir),
        snapshot(&local_dir),
        "the tree `make -j2` left on central differs from a local build's"
    );
    let r = remote(&c, &remote_dir, &["./tool", "Makefile", "main.c"], RUN);
    let l = local_in(&local_dir, &["./tool", "Makefile", "main.c"], None, RUN);
    assert!(
        l.status.success() && !l.stdout.is_empty(),
        "{}",
        describe(&l)
    );
    assert_like_local(&r, &l, "the program make built");
}

#[test]
fn procs_python_multiprocessing_and_threads() {
    if !require_root("procs_python_multiprocessing_and_threads") {
        return;
    }
    let f = Files::new("ppool");
    for side in ["remote", "local"] {
        for i in 0..6 {
            put(
                &f.only(&format!("{side}/in-{i}.txt")),
                &word_lines(2000 + i * 500, i),
                0o644,
            );
        }
    }
    copy_fixture("pool.py", &f.only("pool.py"));
    let c = f.cluster("ppool");
    let r = remote(&c, &f.only, &["/usr/bin/python3", "pool.py", "remote"], RUN);
    let l = local_in(
        &f.only,
        &["/usr/bin/python3", "pool.py", "local"],
        None,
        RUN,
    );
    assert!(
        l.status.success() && !l.stdout.is_empty(),
        "{}",
        describe(&l)
    );
    assert_like_local(&r, &l, "python3 pool.py");
    assert!(
        text(&r.stdout).contains("worker"),
        "the pool's work ran in worker processes: {}",
        show(&r.stdout)
    );
    assert_eq!(
        snapshot(&f.only("remote")),
        snapshot(&f.only("local")),
        "the files the workers and threads wrote on central differ from a local run's"
    );
}

#[test]
fn procs_threads_open_read_close_concurrently() {
    if !require_root("procs_threads_open_read_close_concurrently") {
        return;
    }
    let f = Files::new("pthreads");
    compile("threads.c", &f.only, "threads");
    let mut args = vec!["./threads".to_owned(), "8".into(), "25".into()];
    for i in 0..8 {
        let name = format!("data-{i}.txt");
        put(&f.only(&name), &word_lines(1000 + 700 * i, i), 0o644);
        args.push(name);
    }
    let c = f.cluster("pthreads");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = same_as_local(&c, &f.only, &argv, RUN);
    assert!(
        text(&out.stdout).contains("reads 1600 mismatches 0"),
        "{}",
        show(&out.stdout)
    );
}

#[test]
fn procs_no_descendant_outlives_the_job() {
    if !require_root("procs_no_descendant_outlives_the_job") {
        return;
    }
    let c = DiatomCluster::builder(1).name("pleft").start();
    // A background child, a double-forked grandchild (orphaned at once)
    // and a child in its own session; the first process exits at once.
    let args: Vec<String> = (0..3).map(|_| unique_sleep(600)).collect();
    let script = format!(
        "sleep {} & (sleep {} &) ; setsid sleep {} & echo started",
        args[0], args[1], args[2]
    );
    let start = Instant::now();
    let out = c.diatom_timeout(["exec", "sh", "-c", &script], RUN);
    assert!(
        out.status.success() && text(&out.stdout) == "started\n",
        "{}",
        describe(&out)
    );
    // The node reports the end only after it killed and reaped the rest:
    // nothing is left by the time `diatom exec` returns.
    let left: Vec<_> = args.iter().flat_map(|a| processes_with_arg(a)).collect();
    assert!(
        left.is_empty(),
        "processes of the job still run after it ended ({:?} after start): {left:?}",
        start.elapsed()
    );
}

#[test]
fn procs_kill_and_signals_reach_the_whole_job() {
    if !require_root("procs_kill_and_signals_reach_the_whole_job") {
        return;
    }
    let f = Files::new("psig");
    copy_fixture("signals.py", &f.only("signals.py"));
    let c = f.cluster("psig");
    let script = f.only("signals.py").display().to_string();
    // `diatom kill --signal USR1 JOB`, and SIGHUP sent to `diatom exec`.
    for sig in ["SIGUSR1", "SIGHUP"] {
        let mut cmd = c.diatom_cmd(["exec", "/usr/bin/python3", &script, sig]);
        cmd.current_dir(&f.only);
        let mut job = Spawned::spawn(cmd, Feed::Null);
        wait_output(&job, "ready", 3, sig);
        if sig == "SIGUSR1" {
            let id = running_job(&c, "python3");
            let out = c.diatom(["kill", "--signal", "USR1", &id]);
            assert!(out.status.success(), "diatom kill: {}", describe(&out));
        } else {
            job.signal(Signal::SIGHUP);
        }
        let out = job.wait_or_panic(Duration::from_secs(30), sig);
        let got = text(&out.stdout);
        for role in ["parent", "child", "daemon"] {
            assert!(
                got.contains(&format!("{role} got {sig}")),
                "{sig} did not reach the job's {role}: {}",
                describe(&out)
            );
        }
        assert!(got.contains("all done"), "{}", describe(&out));
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
}

#[test]
fn procs_ptrace_denied_in_every_descendant() {
    if !require_root("procs_ptrace_denied_in_every_descendant") {
        return;
    }
    let f = Files::new("pptrace");
    compile("ptrace_kids.c", &f.only, "ptrace_kids");
    let c = f.cluster("pptrace");
    let out = remote(&c, &f.only, &["./ptrace_kids"], RUN);
    assert!(out.status.success(), "{}", describe(&out));
    let got = text(&out.stdout);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 9, "three attempts by each of three: {got}");
    for who in ["child", "thread", "exec'd grandchild"] {
        for call in ["ptrace(ATTACH)", "process_vm_readv", "process_vm_writev"] {
            let want = format!("{who} {call} = -1 Operation not permitted");
            assert!(
                lines.contains(&want.as_str()),
                "missing {want:?} in:\n{got}"
            );
        }
    }
}
