//! The node's sandbox (issue 8), from inside real jobs on a real cluster:
//! the node's files, key and state directory cannot be read (also not by
//! io_uring, which no tracer sees), addresses only the node reaches cannot
//! be reached, a memory hog and a fork bomb are killed with the reason and
//! exit 137, `kill -9 -1` touches nothing outside the job, and the escape
//! attempts of tests/fixtures/escape.c (CLONE_UNTRACED, ptrace, the
//! daemon's /proc/PID/mem, a second thread rewriting a path after the
//! tracer read it) fail. After each, the node runs the next job normally.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use diatom_tests::cluster::{describe, set_mode, text, DiatomCluster, Feed, NOBODY};
use diatom_tests::require_root;

/// tests/fixtures/escape.c built with the system cc into `dir` (central's
/// files: the job's program comes from there).
fn escape_program(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/escape.c");
    let out = dir.join("escape");
    let st = std::process::Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("the system cc builds the escape program");
    assert!(st.success(), "cc failed on {}", src.display());
    set_mode(&out, 0o755);
    out
}

/// `diatom exec` of `argv` with a generous timeout.
fn exec(c: &DiatomCluster, argv: &[&str]) -> Output {
    let mut args = vec!["exec"];
    args.extend_from_slice(argv);
    c.diatom_timeout(args, Duration::from_secs(90))
}

/// The node still runs an ordinary job after `what`.
fn next_job_runs(c: &DiatomCluster, what: &str) {
    let out = exec(c, &["/bin/echo", "next"]);
    assert!(
        out.status.code() == Some(0) && out.stdout == b"next\n",
        "after {what}, the node did not run the next job normally: {}",
        describe(&out)
    );
    c.assert_daemons_alive();
}

/// The capabilities the systemd unit leaves the node daemon, in
/// `setpriv --bounding-set` syntax.
fn unit_capabilities() -> String {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/diatom-client.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit has a CapabilityBoundingSet");
    let mut caps = String::from("-all");
    for c in line.split_whitespace() {
        caps.push_str(",+");
        caps.push_str(&c.trim_start_matches("CAP_").to_lowercase());
    }
    caps
}

#[test]
fn sandbox_jobs_run_with_the_units_capabilities() {
    if !require_root("sandbox_jobs_run_with_the_units_capabilities") {
        return;
    }
    // The unit's set, and the same without the two a node can do without
    // (the job's device nodes become bind mounts, its PID 1 builds its
    // root): a node daemon run with either must run jobs.
    let full = unit_capabilities();
    let reduced = full.replace(",+mknod", "").replace(",+sys_chroot", "");
    assert_ne!(full, reduced, "the unit keeps CAP_MKNOD and CAP_SYS_CHROOT");
    for (name, caps) in [("sbcaps", &full), ("sbcapsless", &reduced)] {
        let c = DiatomCluster::builder(1)
            .name(name)
            .client_capabilities(caps)
            .start();
        // The node's first job, then one whose root was made ahead.
        for _ in 0..2 {
            let out = exec(
                &c,
                &[
                    "/bin/sh",
                    "-c",
                    "echo hi > /dev/null && head -c 3 /dev/zero | od -An -tx1 \
                     && test -c /dev/urandom && test -d /proc/1 && echo ok",
                ],
            );
            assert!(
                out.status.code() == Some(0) && text(&out.stdout) == " 00 00 00\nok\n",
                "with the bounding set {caps}: {}",
                describe(&out)
            );
        }
        c.assert_daemons_alive();
    }
}

#[test]
fn sandbox_hides_the_node() {
    if !require_root("sandbox_hides_the_node") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sbhide").start();
    set_mode(c.dir(), 0o755);
    let prog = escape_program(c.dir());
    let prog = prog.to_str().unwrap();
    let state = c.dir().join("node1");
    let key = c.key().to_str().unwrap().to_owned();
    let index = state.join("cache/index.log");
    let records = state.join("jobs.log");
    let node_only = [
        "/etc/shadow",
        "/etc/passwd",
        "/etc/hostname",
        key.as_str(),
        records.to_str().unwrap(),
        index.to_str().unwrap(),
    ];

    // io_uring opens files in the kernel without a system call the tracer
    // could stop: what the node's kernel shows the job is only its root.
    let mut argv = vec![prog, "native", "/dev/null"];
    argv.extend_from_slice(&node_only);
    let out = exec(&c, &argv);
    let got = text(&out.stdout);
    let no_uring = ["/dev/null errno 1\n", "/dev/null errno 38\n"];
    if no_uring.iter().any(|e| got.starts_with(e)) {
        // io_uring disabled on this kernel (sysctl kernel.io_uring_disabled):
        // nothing reaches the node's kernel unseen, nothing to check here.
        eprintln!("skipping the io_uring checks: io_uring is disabled here");
        argv.clear();
    }
    assert!(
        argv.is_empty() || out.status.code() == Some(0) && got.starts_with("/dev/null ok\n"),
        "io_uring open of /dev/null in the job (the check itself must work): {}",
        describe(&out)
    );
    for p in node_only.iter().filter(|_| !argv.is_empty()) {
        assert!(
            got.contains(&format!("{p} errno 2\n")),
            "the node's {p} is reachable natively from a job (want ENOENT): {}",
            describe(&out)
        );
    }
    next_job_runs(&c, "native opens");

    // Through the tracer the paths are central's, read as the caller: an
    // unprivileged caller reads neither central's shadow nor the key.
    for p in ["/etc/shadow", key.as_str()] {
        let out = c.run(
            c.diatom_cmd_as(NOBODY, NOBODY, ["exec", "/bin/cat", p]),
            Feed::Null,
            Duration::from_secs(60),
        );
        assert!(
            out.status.code() == Some(1) && out.stdout.is_empty(),
            "cat {p} as uid {NOBODY} through a job: {}",
            describe(&out)
        );
    }
    next_job_runs(&c, "reading the shadow file and the key");

    // Addresses only the node reaches: its loopback, and an address on its
    // `lo` that central has no route to. (A job's connect is made by
    // central, which does reach the node's link address: not a leak.)
    let node_ns = &c.net().node(1).unwrap().ns;
    node_ns.add_addr("lo", "192.0.2.77/32").unwrap();
    let listener = node_ns
        .run(|| std::net::TcpListener::bind("0.0.0.0:7777").unwrap())
        .unwrap();
    for ip in ["127.0.0.1", "192.0.2.77"] {
        let out = exec(&c, &[prog, "connect", ip, "7777"]);
        assert!(
            out.status.code() == Some(0) && text(&out.stdout).starts_with("errno "),
            "a job connected to {ip}:7777, which only the node can reach: {}",
            describe(&out)
        );
    }
    drop(listener);
    next_job_runs(&c, "connects");

    // The job's /proc is its own PID namespace: few processes, none of
    // them the daemon.
    let daemon = c.node_daemon(1).unwrap().pid().to_string();
    let out = exec(
        &c,
        &["/bin/sh", "-c", "ls /proc | grep -c '^[0-9]'; ls /proc"],
    );
    let listing = text(&out.stdout);
    let count: usize = listing.lines().next().unwrap_or("").parse().unwrap_or(999);
    assert!(
        out.status.code() == Some(0) && count <= 5 && !listing.lines().skip(1).any(|l| l == daemon),
        "the job's /proc shows more than the job: {}",
        describe(&out)
    );
    next_job_runs(&c, "listing /proc");

    // The job names itself by its own PID namespace's pid: /proc/PID/exe
    // still names the central program, as /proc/self/exe does.
    let py = "import os; print(os.readlink('/proc/%d/exe' % os.getpid()))";
    let local = std::process::Command::new("/usr/bin/python3")
        .args(["-c", py])
        .output()
        .unwrap();
    let out = exec(&c, &["/usr/bin/python3", "-c", py]);
    assert!(
        out.status.code() == Some(0) && out.stdout == local.stdout,
        "readlink /proc/<getpid()>/exe in a job (want {:?}): {}",
        text(&local.stdout),
        describe(&out)
    );
}

#[test]
fn sandbox_limits_kill_with_the_reason() {
    if !require_root("sandbox_limits_kill_with_the_reason") {
        return;
    }
    let c = DiatomCluster::builder(1)
        .name("sblimit")
        .slots(2)
        .client_arg("--job-pids")
        .client_arg("64")
        .start();
    set_mode(c.dir(), 0o755);
    let prog = escape_program(c.dir());
    let prog = prog.to_str().unwrap();

    // A memory hog: killed by the cgroup's limit, reported as such.
    let out = exec(&c, &["--memory", "64M", prog, "hog", "1024"]);
    assert!(
        out.status.code() == Some(137)
            && text(&out.stderr) == "diatom: job killed on node1: out of memory (limit 64 MiB)\n"
            && !text(&out.stdout).contains("survived"),
        "a 1 GiB hog with --memory 64M: {}",
        describe(&out)
    );
    // Within the limit the same program runs.
    let out = exec(&c, &["--memory", "64M", prog, "hog", "8"]);
    assert!(
        out.status.code() == Some(0) && out.stdout == b"survived\n",
        "an 8 MiB hog with --memory 64M: {}",
        describe(&out)
    );
    next_job_runs(&c, "a memory hog");

    // A fork bomb meets pids.max (the node's --job-pids) and the job ends.
    let out = exec(&c, &[prog, "forkbomb"]);
    assert!(
        out.status.code() == Some(137)
            && text(&out.stderr) == "diatom: job killed on node1: too many processes (limit 64)\n",
        "a fork bomb: {}",
        describe(&out)
    );
    // The job asks for fewer than the node allows: its own limit holds.
    let out = exec(&c, &["--pids", "10", prog, "forkbomb"]);
    assert!(
        out.status.code() == Some(137)
            && text(&out.stderr) == "diatom: job killed on node1: too many processes (limit 10)\n",
        "a fork bomb with --pids 10: {}",
        describe(&out)
    );
    next_job_runs(&c, "fork bombs");

    // Nothing of a killed job is left in its cgroups: the node's groups
    // are at most the spares it made for its next jobs (one per slot),
    // with no process in them but the next job's start made ahead.
    let pid = c.node_daemon(1).unwrap().pid().to_string();
    // The node finishes a job's teardown (its namespaces' PID 1, the
    // cgroup) just after reporting its end: give it a moment (the node
    // retries a group's removal for 10 s while its killed processes are
    // reaped).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (ours, leftovers) = loop {
        let ours: Vec<PathBuf> = ["memory", "pids"]
            .iter()
            .filter_map(|h| {
                std::fs::read_dir(Path::new("/sys/fs/cgroup").join(h).join("diatom")).ok()
            })
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pid}-")))
            })
            .collect();
        let leftovers: Vec<&PathBuf> = ours
            .iter()
            .filter(|p| {
                let spare = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pid}-spare")));
                // Empty, or holding the next job's start made ahead.
                let free = std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|t| {
                    t.split_whitespace()
                        .all(|p| p.parse().is_ok_and(diatom_tests::cluster::made_ahead))
                });
                !(spare && free)
            })
            .collect();
        let leftovers: Vec<PathBuf> = leftovers.into_iter().cloned().collect();
        if leftovers.is_empty() || std::time::Instant::now() > deadline {
            break (ours, leftovers);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(leftovers.is_empty(), "job cgroups left: {leftovers:?}");
    assert!(
        ours.len() <= 2 * (2 + 1),
        "more than one spare per slot (2), and the one the next job's start \
         made ahead holds, per hierarchy: {ours:?}"
    );
}

#[test]
fn sandbox_kill_minus_one_stays_inside() {
    if !require_root("sandbox_kill_minus_one_stays_inside") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sbkill").slots(2).start();
    // Another job on the same node, and a process of the node's.
    let mut other = diatom_tests::cluster::Spawned::spawn(
        c.diatom_cmd(["exec", "/bin/sh", "-c", "sleep 4; echo survived"]),
        Feed::Null,
    );
    let node_ns = &c.net().node(1).unwrap().ns;
    let mut bystander = node_ns.command("/bin/sleep");
    bystander.arg("60");
    let mut bystander = bystander.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = exec(&c, &["/bin/sh", "-c", "sleep 30 & kill -9 -1; echo after"]);
    assert!(
        out.status.code() == Some(0) && out.stdout == b"after\n",
        "kill -9 -1 in a job: {}",
        describe(&out)
    );
    let out = other.wait_or_panic(Duration::from_secs(60), "the other job");
    assert!(
        out.status.code() == Some(0) && out.stdout == b"survived\n",
        "another job on the node after kill -9 -1 in a job: {}",
        describe(&out)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "kill -9 -1 in a job killed a process of the node"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    next_job_runs(&c, "kill -9 -1");
}

#[test]
fn sandbox_escape_attempts_fail() {
    if !require_root("sandbox_escape_attempts_fail") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sbescape").start();
    set_mode(c.dir(), 0o755);
    let prog = escape_program(c.dir());
    let prog = prog.to_str().unwrap();
    let daemon = c.node_daemon(1).unwrap().pid().to_string();

    // CLONE_UNTRACED: the child is still traced (getuid answered by the
    // tracer with the caller's uid, not the job's node uid).
    let out = exec(&c, &[prog, "untraced"]);
    assert!(
        out.status.code() == Some(0) && out.stdout == b"0\n",
        "a CLONE_UNTRACED child's getuid (want the caller's 0): {}",
        describe(&out)
    );
    next_job_runs(&c, "CLONE_UNTRACED");

    // ptrace of the daemon's pid, of the job's PID 1, of its parent.
    for target in [daemon.as_str(), "1", "2"] {
        let out = exec(&c, &[prog, "ptrace", target]);
        assert!(
            out.status.code() == Some(0) && out.stdout == b"errno 1\n",
            "ptrace attach to {target} from a job (want EPERM): {}",
            describe(&out)
        );
    }
    next_job_runs(&c, "ptrace");

    // /proc/PID/mem of the daemon: not in the job's PID namespace; of the
    // job's PID 1: another uid.
    for (target, want) in [(daemon.as_str(), "errno 2\n"), ("1", "errno 13\n")] {
        let out = exec(&c, &[prog, "procmem", target]);
        assert!(
            out.status.code() == Some(0) && text(&out.stdout) == want,
            "open /proc/{target}/mem for writing from a job (want {want:?}): {}",
            describe(&out)
        );
    }
    next_job_runs(&c, "/proc/PID/mem");

    // A second thread rewrites the path between the tracer's check and the
    // kernel's read: the node's own /etc/passwd must never be opened.
    let node_passwd = std::fs::metadata(c.node_view(1, "/etc/passwd")).unwrap();
    let (dev, ino) = (node_passwd.dev().to_string(), node_passwd.ino().to_string());
    let out = exec(&c, &[prog, "race", "/etc/passwd", &dev, &ino]);
    eprintln!("path race: {}", text(&out.stdout).trim());
    assert!(
        out.status.code() == Some(0) && text(&out.stdout).starts_with("lost "),
        "a path rewritten by a second thread opened the node's /etc/passwd: {}",
        describe(&out)
    );
    next_job_runs(&c, "the path race");

    // rlimits: the caller's, with the soft open-files limit at least 4096.
    for (nofile, want_nofile) in [(1500u64, 4096u64), (5000, 5000)] {
        let mut cmd = c.diatom_cmd(["exec", "/bin/sh", "-c", "ulimit -s; ulimit -n; ulimit -c"]);
        // SAFETY: setrlimit only, in the forked child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                use nix::sys::resource::{getrlimit, setrlimit, Resource};
                let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
                setrlimit(Resource::RLIMIT_NOFILE, nofile, hard.max(nofile))?;
                let (_, hard) = getrlimit(Resource::RLIMIT_STACK)?;
                setrlimit(Resource::RLIMIT_STACK, 12 << 20, hard)?;
                setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
                Ok(())
            });
        }
        let out = c.run(cmd, Feed::Null, Duration::from_secs(60));
        assert!(
            out.status.code() == Some(0)
                && text(&out.stdout) == format!("12288\n{want_nofile}\n0\n"),
            "a job's rlimits for a caller with stack 12 MiB, {nofile} open files, no core \
             (want 12288, {want_nofile}, 0): {}",
            describe(&out)
        );
    }
}

/// The embedded default run by an unprivileged user: no uid switch, no
/// cgroup, but a user namespace with the job's own PID namespace, so
/// `kill -9 -1` (which may signal every process of the caller's uid) does
/// not reach `diatom exec` itself; `-v` says what the node could set up.
#[test]
fn sandbox_embedded_unprivileged_user_namespace() {
    if !require_root("sandbox_embedded_unprivileged_user_namespace") {
        return;
    }
    use diatom_tests::cluster::{as_user, chown, new_session, world_executable_bin, Spawned};
    let dir = diatom_tests::testdir::TestDir::new("sbembed").unwrap();
    set_mode(dir.path(), 0o755);
    let bin = world_executable_bin("diatom", dir.path());
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chown(&tmp, NOBODY, NOBODY);
    set_mode(&tmp, 0o700);
    let prog = escape_program(dir.path());
    // PID 1 of the job's namespaces is a copy of the embedded daemon (its
    // keys in memory) running as the same uid: its /proc/1/mem must stay
    // closed to the job (PID 1 keeps capabilities the job lacks).
    let script = format!(
        "sleep 30 & kill -9 -1; echo after; {} procmem 1",
        prog.display()
    );
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--socket")
        .arg(dir.join("absent.sock"))
        .args(["-v", "exec", "/bin/sh", "-c", &script])
        .current_dir(dir.path())
        .env_remove("DIATOM_SOCKET")
        .env_remove("DIATOM_LOG")
        .env("TMPDIR", &tmp)
        .env("HOME", &tmp);
    new_session(&mut cmd);
    as_user(&mut cmd, NOBODY, NOBODY);
    let out = Spawned::spawn(cmd, Feed::Null).wait_or_panic(Duration::from_secs(60), "embedded");
    let err = text(&out.stderr);
    let userns = err.contains("sandbox: unprivileged: jobs run as you in a user namespace");
    let plain = err.contains("sandbox: unprivileged and user namespaces are not allowed here");
    assert!(
        userns || plain,
        "embedded `diatom -v exec` as uid {NOBODY} does not say what sandbox it has: {}",
        describe(&out)
    );
    if !userns {
        eprintln!("skipping the kill -9 -1 check: no user namespaces for uid {NOBODY} here");
        return;
    }
    let got = text(&out.stdout);
    assert!(
        out.status.code() == Some(0) && (got == "after\nerrno 1\n" || got == "after\nerrno 13\n"),
        "kill -9 -1, then opening /proc/1/mem, in an embedded job as uid {NOBODY} \
         (want `after` and EPERM or EACCES): {}",
        describe(&out)
    );
}

/// A job whose launch never comes (its home gives up before sending it:
/// here the program's interpreter does not exist on central) leaves
/// nothing on the node: what was made ahead of the launch (PID 1 and the
/// parked program's process) is killed and reaped, the job's record ends,
/// and the node runs the next job normally.
#[test]
fn sandbox_a_start_without_launch_leaves_nothing() {
    if !require_root("sandbox_a_start_without_launch_leaves_nothing") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sbnolaunch").start();
    set_mode(c.dir(), 0o755);
    let script = c.path("no-interpreter");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    set_mode(&script, 0o755);
    let out = exec(&c, &[script.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    // The node tears the job down after it acknowledged the abandon (the
    // next job's start, made ahead, is not the job's).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = c.node_job_processes(1);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes of a job that was never launched are left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its end reaches central once the node has torn down the rest
    // (its namespaces and cgroup), after the processes are gone.
    loop {
        let jobs = c.ps_json(true);
        let jobs = jobs.as_array().unwrap();
        assert!(!jobs.is_empty(), "the job is not recorded: {jobs:?}");
        if jobs.iter().all(|j| j["state"] != "running") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a job that was never launched is still running: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    next_job_runs(&c, "a start without launch");
}

/// Every job's root holds exactly the same mounts with the same flags,
/// whether it was made before the job (a spare root, given the job's
/// directory at its start) or at its start (when no spare is ready, as
/// for jobs that start together): the read-only root, its own directory
/// read-write and no other job's, the cache read-only, `/sys` read-only,
/// `/dev`, `/dev/shm` and its own `/proc`. Read from the node's kernel:
/// `/proc` in a job is the node's.
#[test]
fn sandbox_every_job_root_is_the_same() {
    if !require_root("sandbox_every_job_root_is_the_same") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sbroots").start();
    let state = std::fs::canonicalize(c.dir().join("node1")).unwrap();
    let state = state.to_str().unwrap().to_owned();
    // (mount point, the flags that matter) of each mount, sorted; the
    // job's own directory named `jobs/N`.
    let mounts = |out: &Output| -> (Vec<String>, Vec<String>) {
        assert_eq!(out.status.code(), Some(0), "{}", describe(out));
        let mut job_dirs = Vec::new();
        let mut got: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let mut point = f[4].to_owned();
                if let Some(id) = point.strip_prefix(&format!("{state}/jobs/")) {
                    job_dirs.push(id.to_owned());
                    point = format!("{state}/jobs/N");
                }
                let opts: Vec<&str> = f[5]
                    .split(',')
                    .filter(|o| ["ro", "rw", "nosuid", "nodev", "noexec"].contains(o))
                    .collect();
                format!("{} {}", point, opts.join(","))
            })
            .collect();
        got.sort();
        (got, job_dirs)
    };
    let mut want: Vec<String> = [
        "/ ro,nosuid,nodev".to_owned(),
        format!("{state}/jobs/N rw,nosuid,nodev"),
        format!("{state}/cache/objects ro,nosuid,nodev"),
        format!("{state}/cache/tmp ro,nosuid,nodev"),
        format!("{state}/cache/libsets ro,nosuid,nodev"),
        "/sys ro,nosuid,nodev,noexec".to_owned(),
        "/dev rw,nosuid,noexec".to_owned(),
        "/dev/shm rw,nosuid,nodev".to_owned(),
        "/proc rw,nosuid,nodev,noexec".to_owned(),
    ]
    .into();
    want.sort();
    let mut seen = Vec::new();
    let mut check = |out: &Output| {
        let (got, dirs) = mounts(out);
        assert_eq!(got, want, "a job's mounts: {}", describe(out));
        assert_eq!(dirs.len(), 1, "{}", describe(out));
        assert!(!seen.contains(&dirs[0]), "two jobs with directory {dirs:?}");
        seen.push(dirs[0].clone());
    };
    // One after the other: each gets a spare root made after the last.
    for _ in 0..3 {
        check(&exec(&c, &["/bin/cat", "/proc/self/mountinfo"]));
    }
    // Together: more than the spares made ahead.
    let outs: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    exec(
                        &c,
                        &["/bin/sh", "-c", "sleep 0.2; cat /proc/self/mountinfo"],
                    )
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in &outs {
        check(out);
    }
    next_job_runs(&c, "jobs reading their mounts");
}

/// The mount namespaces linked from the descriptors and namespace links
/// of every process under `/proc` (`mnt:[inode]`), with who holds them.
fn mount_namespace_links() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let dir = p.path();
        let mut links: Vec<PathBuf> = vec![dir.join("ns/mnt")];
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        for l in links {
            if let Ok(t) = std::fs::read_link(&l) {
                let t = t.to_string_lossy().into_owned();
                if t.starts_with("mnt:[") {
                    out.push((t, l.display().to_string()));
                }
            }
        }
    }
    out
}

/// The spare roots a root node keeps (one per slot: mount namespaces that
/// no process is in, held by the daemon's descriptors) go with the daemon,
/// even one killed with SIGKILL: afterwards no process holds one, as a
/// descriptor or as its own namespace.
#[test]
fn sandbox_spare_roots_go_with_the_daemon() {
    if !require_root("sandbox_spare_roots_go_with_the_daemon") {
        return;
    }
    let mut c = DiatomCluster::builder(1).name("sbspares").slots(2).start();
    // A job takes a spare; the refill thread makes the next one.
    next_job_runs(&c, "the node's start");
    let daemon = c.node_daemon(1).unwrap().pid();
    let own = std::fs::read_link(format!("/proc/{daemon}/ns/mnt"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let fd_dir = format!("/proc/{daemon}/fd/");
    // Made at the lowest priority: wait until both are there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let spares: Vec<String> = loop {
        let mut s: Vec<String> = mount_namespace_links()
            .into_iter()
            .filter(|(ns, at)| at.starts_with(&fd_dir) && *ns != own)
            .map(|(ns, _)| ns)
            .collect();
        s.sort();
        s.dedup();
        if s.len() >= 2 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node keeps {} spare roots, want one per slot (2): {s:?}",
            s.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The next job's start, made ahead, is in one of them: its parked
    // process dies with its tracer (the daemon), and its PID 1 with it.
    // It is made again after each job: wait for it.
    let ready: Vec<i32> = loop {
        let r: Vec<i32> = c
            .node_processes(1)
            .iter()
            .map(|p| p.pid)
            .filter(|&p| diatom_tests::cluster::made_ahead(p))
            .collect();
        if !r.is_empty() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node has made no start ahead of its next job"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Who holds the spares now. Afterwards only these count: the kernel
    // gives a freed namespace's number to the next one made, and other
    // tests' nodes make spare roots all the time.
    let holder = |at: &str| at.split('/').nth(2).map(str::to_owned);
    let holders: Vec<String> = mount_namespace_links()
        .into_iter()
        .filter(|(ns, _)| spares.contains(ns))
        .filter_map(|(_, at)| holder(&at))
        .collect();
    c.kill_node(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let held: Vec<(String, String)> = mount_namespace_links()
            .into_iter()
            .filter(|(ns, at)| {
                spares.contains(ns) && holder(at).is_some_and(|p| holders.contains(&p))
            })
            .collect();
        let alive: Vec<&i32> = ready
            .iter()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if held.is_empty() && alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spare roots of a killed node are still held: {held:?}; \
             its start made ahead still runs: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
