//! `diatom exec` end to end (issue 5): a real cluster (central and nodes in
//! their own network namespaces, see `diatom_tests::cluster`), the CLI run
//! as the user on central, and each result compared with what the same
//! command does locally where that makes sense. Written against
//! `/work/shared/interface.md`: exit statuses, the one-line `diatom: ...`
//! failures, streams, environment, cwd, umask, ids, signals.
// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers
// #[test] functions themselves.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use diatom_tests::cluster::{
    assert_diatom_failure, describe, local, pseudo_random, set_mode, show, unique_sleep,
    with_umask, DiatomCluster, Feed, Spawned, MARKER_VAR, NOBODY,
};
use diatom_tests::cluster::{shell_status, text, wait_gone};
use diatom_tests::require_root;
use nix::sys::signal::Signal;

/// Asserts a remote run printed and exited exactly like the local one.
fn assert_like_local(remote: &Output, local: &Output, what: &str) {
    assert!(
        remote.status.code() == shell_status(local)
            && remote.stdout == local.stdout
            && remote.stderr == local.stderr,
        "{what}: the remote run differs from the local one\nremote: {}\nlocal: {}",
        describe(remote),
        describe(local)
    );
}

#[test]
fn exec_echo_matches_local() {
    if !require_root("exec_echo_matches_local") {
        return;
    }
    let c = DiatomCluster::builder(2).name("echo").start();
    let (out, job) = c.exec_job(["/bin/echo", "hello", "world"]);
    assert!(
        out.status.code() == Some(0) && out.stdout == b"hello world\n" && out.stderr.is_empty(),
        "diatom exec /bin/echo hello world: {}",
        describe(&out)
    );
    assert_like_local(
        &out,
        &local("/bin/echo", &["hello", "world"], Feed::Null),
        "/bin/echo",
    );
    // It really ran as a job of this cluster (not, say, the embedded
    // default): central recorded it, on one of the nodes, with its status.
    assert_eq!(job["exit_status"], 0, "job record: {job}");
    let node = job["node"].as_str().unwrap_or_default();
    assert!(node == "node1" || node == "node2", "job record: {job}");

    // PROGRAM found through the caller's PATH, as a shell would.
    let out = c.diatom(["exec", "echo", "from", "PATH"]);
    assert_like_local(&out, &local("echo", &["from", "PATH"], Feed::Null), "echo");
}

/// A warm start forwards nothing to the home: the program, loader and
/// libraries are opened by their node paths (cache objects, the node's
/// library-set directory), never asked of central, and the loader's check
/// of `/etc/ld.so.preload` (absent here) is answered by the lookups the
/// launch carries. (Central sees the node's paths in this test cluster, so
/// a node path mistaken for a central one would still run and only these
/// counters show it.)
#[test]
fn exec_warm_start_forwards_no_call() {
    if !require_root("exec_warm_start_forwards_no_call") {
        return;
    }
    let c = DiatomCluster::builder(1).name("warm").start();
    let (first, _) = c.exec_job(["/bin/true"]);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let (out, job) = c.exec_job(["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let counters = &job["counters"];
    let calls = counters["calls"].as_u64().unwrap_or(u64::MAX);
    // The preload check is only answered ahead when the file is absent.
    let allowed = u64::from(std::path::Path::new("/etc/ld.so.preload").exists());
    assert!(
        calls <= allowed && counters["calls.Open"].as_u64().unwrap_or(0) == 0,
        "a warm /bin/true forwarded calls: {counters}"
    );
    assert_eq!(counters["cache_misses"].as_u64(), Some(0), "{counters}");
}

/// A program larger than one message (64 MiB: `/bin/echo` with 70 MiB of
/// padding, which the kernel never maps) starts: the node fetches it with
/// `Read`s instead of one `Fetch` answer that could not be sent.
#[test]
fn exec_program_larger_than_a_message() {
    if !require_root("exec_program_larger_than_a_message") {
        return;
    }
    let dir = diatom_tests::testdir::TestDir::new("bigprog").unwrap();
    let big = dir.join("bigecho");
    std::fs::copy("/bin/echo", &big).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(70 << 20)
        .unwrap();
    set_mode(&big, 0o755);
    let c = DiatomCluster::builder(1).name("bigprog").start();
    let out = c.diatom([
        std::ffi::OsStr::new("exec"),
        big.as_os_str(),
        std::ffi::OsStr::new("padded"),
    ]);
    assert!(
        out.status.success() && out.stdout == b"padded\n",
        "a 70 MiB program: {}",
        describe(&out)
    );
}

#[test]
fn exec_large_stdin_sha256() {
    if !require_root("exec_large_stdin_sha256") {
        return;
    }
    let data = pseudo_random(64 << 20, 0x5eed_d1a7_0aa5);
    let reference = local("sha256sum", &[], Feed::Bytes(data.clone()));
    assert!(reference.status.success(), "{}", describe(&reference));
    let c = DiatomCluster::builder(1).name("sha").start();
    let start = Instant::now();
    let out = c.run(
        c.diatom_cmd(["exec", "sha256sum"]),
        Feed::Bytes(data),
        Duration::from_secs(120),
    );
    eprintln!("64 MiB through sha256sum on a node: {:?}", start.elapsed());
    assert_like_local(&out, &reference, "sha256sum of 64 MiB of stdin");
}

#[test]
fn exec_exit_statuses() {
    if !require_root("exec_exit_statuses") {
        return;
    }
    let c = DiatomCluster::builder(1).name("status").start();
    for (script, want) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
    ] {
        let reference = local("sh", &["-c", script], Feed::Null);
        assert_eq!(
            shell_status(&reference),
            Some(want),
            "local sh -c {script:?}"
        );
        let out = c.diatom(["exec", "sh", "-c", script]);
        assert!(
            out.status.code() == Some(want) && out.stderr.is_empty(),
            "diatom exec sh -c {script:?}: want exit {want} and nothing on stderr, got {}",
            describe(&out)
        );
    }

    // A program that needs its interpreter (PT_INTERP) and shared libraries.
    let py = "import hashlib,sys; print(hashlib.sha256(b\"x\").hexdigest()); sys.exit(3)";
    let reference = local("/usr/bin/python3", &["-c", py], Feed::Null);
    assert_eq!(reference.status.code(), Some(3), "{}", describe(&reference));
    let out = c.diatom(["exec", "/usr/bin/python3", "-c", py]);
    assert_like_local(&out, &reference, "python3 with hashlib");
}

#[test]
fn exec_node_selection() {
    if !require_root("exec_node_selection") {
        return;
    }
    let c = DiatomCluster::builder(2).name("select").start();
    for n in ["node2", "node1", "node2"] {
        let (out, job) = c.exec_job(["--node", n, "/bin/echo", "on", n]);
        assert!(
            out.status.code() == Some(0) && text(&out.stdout) == format!("on {n}\n"),
            "diatom exec --node {n}: {}",
            describe(&out)
        );
        assert_eq!(
            job["node"], n,
            "`ps --all --json` record of the --node {n} job"
        );
    }
    let out = c.diatom(["exec", "--node", "nosuch", "/bin/echo", "x"]);
    assert_diatom_failure(&out, "diatom exec --node nosuch");
}

#[test]
fn exec_environment_cwd_umask() {
    if !require_root("exec_environment_cwd_umask") {
        return;
    }
    let c = DiatomCluster::builder(1).name("env").start();

    let out = c.diatom(["exec", "-e", "FOO=bar", "sh", "-c", "echo $FOO"]);
    assert!(
        out.status.success() && out.stdout == b"bar\n",
        "-e FOO=bar: {}",
        describe(&out)
    );

    // The caller's own variables pass, and -e overrides one of them.
    let mut cmd = c.diatom_cmd([
        "exec",
        "-e",
        "BAR=override",
        "sh",
        "-c",
        "echo \"$DIATOM_E2E_CALLER|$BAR\"",
    ]);
    cmd.env("DIATOM_E2E_CALLER", "from the caller")
        .env("BAR", "orig");
    let out = c.run(cmd, Feed::Null, Duration::from_secs(60));
    assert!(
        out.status.success() && out.stdout == b"from the caller|override\n",
        "caller environment and -e override: {}",
        describe(&out)
    );

    // The whole environment, exactly: the caller's plus -e, nothing else.
    let mut cmd = c.diatom_cmd(["exec", "-e", "ADDED=by -e", "env"]);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/root")
        .env("DIATOM_E2E_CALLER", "x y=z")
        .env(MARKER_VAR, c.marker());
    let out = c.run(cmd, Feed::Null, Duration::from_secs(60));
    let mut got: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    got.sort();
    let mut want = vec![
        "ADDED=by -e".to_owned(),
        "DIATOM_E2E_CALLER=x y=z".to_owned(),
        "HOME=/root".to_owned(),
        format!("{MARKER_VAR}={}", c.marker()),
        "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
    ];
    want.sort();
    assert!(
        out.status.success() && got == want,
        "`env` on the node should print exactly the caller's environment plus -e\n\
         want {want:#?}\n{}",
        describe(&out)
    );

    // cwd and umask: a directory the test made (with a space in its name)
    // and umask 027 in the caller.
    let dir = c.path("work dir");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    let dir = dir.canonicalize().unwrap();
    let script = "pwd -P; umask";
    let mut cmd = c.diatom_cmd(["exec", "sh", "-c", script]);
    cmd.current_dir(&dir).env("PWD", &dir);
    with_umask(&mut cmd, 0o027);
    let out = c.run(cmd, Feed::Null, Duration::from_secs(60));
    let mut lcmd = Command::new("sh");
    lcmd.args(["-c", script]).current_dir(&dir).env("PWD", &dir);
    with_umask(&mut lcmd, 0o027);
    let reference = Spawned::spawn(lcmd, Feed::Null).wait_or_panic(Duration::from_secs(10), "");
    assert_eq!(
        text(&reference.stdout),
        format!("{}\n0027\n", dir.display()),
        "local reference"
    );
    assert_like_local(&out, &reference, "cwd and umask");
}

#[test]
fn exec_tty() {
    if !require_root("exec_tty") {
        return;
    }
    let c = DiatomCluster::builder(1).name("tty").start();
    let script = "test -t 0 && test -t 1 && echo tty; stty size";
    // stdin is /dev/null and stdout a pipe: -t must still give a pty.
    let out = c.diatom(["exec", "-t", "sh", "-c", script]);
    let norm = text(&out.stdout).replace("\r\n", "\n");
    let lines: Vec<&str> = norm.lines().map(str::trim).collect();
    let size = |l: &&str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 2 && f.iter().all(|n| n.parse::<u32>().is_ok())
    };
    assert!(
        out.status.code() == Some(0) && lines.contains(&"tty") && lines.iter().any(size),
        "diatom exec -t: want a line `tty` and a line `ROWS COLS`, exit 0; got {}",
        describe(&out)
    );
    // Without -t there is no terminal, as locally.
    let out = c.diatom(["exec", "sh", "-c", script]);
    let reference = local("sh", &["-c", script], Feed::Null);
    assert!(
        !text(&out.stdout).contains("tty") && out.status.code() == shell_status(&reference),
        "diatom exec without -t should have no terminal, like the local run\n\
         remote: {}\nlocal: {}",
        describe(&out),
        describe(&reference)
    );
}

#[test]
fn exec_streams_in_order_with_eof() {
    if !require_root("exec_streams_in_order_with_eof") {
        return;
    }
    let c = DiatomCluster::builder(1).name("stream").start();

    // Output arrives as written, not at exit.
    let mut s = Spawned::spawn(
        c.diatom_cmd(["exec", "sh", "-c", "echo a; sleep 1; echo b"]),
        Feed::Null,
    );
    let out = s.wait_or_panic(Duration::from_secs(60), "streaming run");
    assert!(
        out.status.success() && out.stdout == b"a\nb\n",
        "{}",
        describe(&out)
    );
    let a_at = s.stdout_arrival(b"a\n").unwrap();
    let exit_at = s.exited_at().unwrap();
    let lead = exit_at.saturating_duration_since(a_at);
    assert!(
        lead >= Duration::from_millis(500),
        "`a` arrived only {lead:?} before diatom exec exited: output is not streamed"
    );

    // Both streams byte for byte and in order.
    let script = "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; \
                  printf 'no newline \\001\\377'";
    let out = c.diatom(["exec", "sh", "-c", script]);
    assert_like_local(
        &out,
        &local("sh", &["-c", script], Feed::Null),
        "interleaved stdout/stderr",
    );

    // EOF on stdin reaches the program.
    let cmd = c.diatom_cmd(["exec", "cat"]);
    let out = c.run(cmd, Feed::Bytes(b"abc".to_vec()), Duration::from_secs(30));
    assert!(
        out.status.code() == Some(0) && out.stdout == b"abc" && out.stderr.is_empty(),
        "diatom exec cat <<< abc (then EOF): {}",
        describe(&out)
    );

    // stdin is streamed too: a line comes back before stdin closes.
    let mut s = Spawned::spawn(c.diatom_cmd(["exec", "cat"]), Feed::Pipe);
    s.stdin().unwrap().write_all(b"first line\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.stdout_so_far() != b"first line\n" {
        assert!(
            Instant::now() < deadline && s.try_wait().is_none(),
            "cat on the node did not echo a line while stdin stayed open; stdout {} stderr {}",
            show(&s.stdout_so_far()),
            show(&s.stderr_so_far())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.stdin().unwrap().write_all(b"second\n").unwrap();
    s.close_stdin();
    let out = s.wait_or_panic(Duration::from_secs(20), "cat after EOF");
    assert!(
        out.status.success() && out.stdout == b"first line\nsecond\n",
        "{}",
        describe(&out)
    );
}

#[test]
fn exec_program_errors() {
    if !require_root("exec_program_errors") {
        return;
    }
    let c = DiatomCluster::builder(1).name("progerr").start();
    let script = "#!/bin/sh\necho script \"$@\"\n";
    let good = c.path("good.sh");
    std::fs::write(&good, script).unwrap();
    set_mode(&good, 0o755);
    let bad = c.path("notexec.sh");
    std::fs::write(&bad, script).unwrap();
    set_mode(&bad, 0o644);

    // Control: a `#!` script named relative to the caller's cwd runs.
    let mut cmd = c.diatom_cmd(["exec", "./good.sh", "a", "b"]);
    cmd.current_dir(c.dir());
    let out = c.run(cmd, Feed::Null, Duration::from_secs(60));
    assert!(
        out.status.success() && out.stdout == b"script a b\n",
        "./good.sh a b: {}",
        describe(&out)
    );

    let out = c.diatom(["exec", bad.to_str().unwrap()]);
    assert_diatom_failure(&out, "a program without execute permission");
    let out = c.diatom(["exec", "/nonexistent/diatom-e2e-program"]);
    assert_diatom_failure(&out, "a program path that does not exist");
    let out = c.diatom(["exec", "diatom-e2e-no-such-program"]);
    assert_diatom_failure(&out, "a program not in PATH");
}

#[test]
fn exec_as_unprivileged_caller() {
    if !require_root("exec_as_unprivileged_caller") {
        return;
    }
    let c = DiatomCluster::builder(1).name("nobody").start();
    let out = c.run(
        c.diatom_cmd_as(NOBODY, NOBODY, ["exec", "id", "-u"]),
        Feed::Null,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && out.stdout == b"65534\n",
        "diatom exec id -u as uid 65534: {}",
        describe(&out)
    );
    let out = c.run(
        c.diatom_cmd_as(NOBODY, NOBODY, ["exec", "sh", "-c", "id -g; id -G"]),
        Feed::Null,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && out.stdout == b"65534\n65534\n",
        "group ids as uid/gid 65534: {}",
        describe(&out)
    );
    // Control: root's job reports root.
    let out = c.diatom(["exec", "id", "-u"]);
    assert!(
        out.status.success() && out.stdout == b"0\n",
        "diatom exec id -u as root: {}",
        describe(&out)
    );
}

/// The program starts with the signals the caller ignores ignored (as
/// under `nohup`) and every other one at its default, whatever the node
/// daemon ignores: its `SigIgn` mask is the local run's.
#[test]
fn exec_signal_dispositions_are_the_callers() {
    if !require_root("exec_signal_dispositions_are_the_callers") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sigign").start();
    let ignore_hup = |cmd: &mut Command| {
        // SAFETY: only sets a signal disposition between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, || {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
    };
    let script = "grep SigIgn /proc/self/status";
    let mut remote = c.diatom_cmd(["exec", "/bin/sh", "-c", script]);
    ignore_hup(&mut remote);
    let remote =
        Spawned::spawn(remote, Feed::Null).wait_or_panic(Duration::from_secs(60), "remote");
    let mut local = Command::new("/bin/sh");
    local.args(["-c", script]);
    ignore_hup(&mut local);
    let local = Spawned::spawn(local, Feed::Null).wait_or_panic(Duration::from_secs(60), "local");
    assert_like_local(&remote, &local, "SigIgn with SIGHUP ignored by the caller");
    let mask = text(&local.stdout)
        .trim()
        .strip_prefix("SigIgn:")
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
    assert!(
        mask.is_some_and(|m| m & 1 == 1 && m & 2 == 0),
        "the local reference ignores SIGHUP, not SIGINT: {}",
        describe(&local)
    );
}

#[test]
fn exec_forwards_signals() {
    if !require_root("exec_forwards_signals") {
        return;
    }
    let c = DiatomCluster::builder(1).name("signals").start();
    for (sig, want) in [
        (Signal::SIGINT, 130),
        (Signal::SIGTERM, 143),
        (Signal::SIGHUP, 129),
    ] {
        let arg = unique_sleep(30);
        let mut s = Spawned::spawn(c.diatom_cmd(["exec", "sleep", &arg]), Feed::Null);
        c.wait_job_process(&arg, Duration::from_secs(30));
        s.signal(sig);
        let sent = Instant::now();
        // (Normally milliseconds: the limit only says "it ends".)
        let Some(out) = s.wait_timeout(Duration::from_secs(30)) else {
            panic!(
                "diatom exec sleep {arg} still runs 30 s after {sig}; stderr {}",
                show(&s.stderr_so_far())
            );
        };
        assert_eq!(
            out.status.code(),
            Some(want),
            "diatom exec sleep after {sig} ({:?} later): {}",
            sent.elapsed(),
            describe(&out)
        );
        wait_gone(&arg, Duration::from_secs(30), &format!("after {sig}"));
    }
}

// Losing the home or the node mid-job: tests/integration/faults.rs.

/// Polls until process `pid` blocks SIGINT (`diatom exec` does so first
/// thing: a signal sent earlier would end it with the default action, not
/// through the code under test).
pub(crate) fn wait_sigint_blocked(pid: nix::unistd::Pid) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGINT - 1)) != 0);
        if blocked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "diatom exec ({pid}) never blocked SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until central's log has `needle` more than `before` times.
fn wait_central_log(c: &DiatomCluster, needle: &str, before: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = c
            .central_daemon()
            .map_or(0, |d| d.stderr().matches(needle).count());
        if n > before {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "central never logged {needle:?} (seen {n} times, {before} before)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_interrupted_while_waiting_for_a_slot() {
    if !require_root("exec_interrupted_while_waiting_for_a_slot") {
        return;
    }
    let c = DiatomCluster::builder(1).name("sigslot").slots(1).start();
    // The node's one slot is taken: the next job waits for it on central.
    let busy = unique_sleep(120);
    let mut holder = Spawned::spawn(c.diatom_cmd(["exec", "sleep", &busy]), Feed::Null);
    c.wait_job_process(&busy, Duration::from_secs(30));
    let (mut waits, mut given_up) = (0, 0);
    for (sig, want) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let arg = unique_sleep(30);
        let mut s = Spawned::spawn(c.diatom_cmd(["exec", "sleep", &arg]), Feed::Null);
        wait_sigint_blocked(s.pid());
        waits = wait_central_log(&c, "waits for a free slot", waits);
        s.signal(sig);
        let Some(out) = s.wait_timeout(Duration::from_secs(5)) else {
            panic!("diatom exec waiting for a slot still runs 5 s after {sig}");
        };
        assert_eq!(
            out.status.code(),
            Some(want),
            "after {sig}: {}",
            describe(&out)
        );
        assert!(out.stderr.is_empty(), "after {sig}: {}", describe(&out));
        // Central left the wait: the job is never placed.
        given_up = wait_central_log(&c, "went away while its job waited", given_up);
        let all = c.ps_json(true).to_string();
        assert!(
            !all.contains(&arg),
            "the interrupted job was recorded: {all}"
        );
    }
    // The holder ends as a Ctrl-C'd job does, and its slot goes to the next
    // job (no interrupted one took it).
    holder.signal(Signal::SIGINT);
    let out = holder.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let out = c.diatom(["exec", "true"]);
    assert!(out.status.success(), "{}", describe(&out));
    let all = c.ps_json(true).as_array().map_or(0, Vec::len);
    assert_eq!(all, 2, "{}", c.ps_json(true));
    wait_gone(&busy, Duration::from_secs(30), "the holder");
}
