//! Library-level checks on real programs (root or ptrace-capable user).

use tracer::decode::Printer;
use tracer::{Command, ExitStatus, SyscallSet};

fn trace(argv: &[&str]) -> (ExitStatus, String) {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    let printer = Printer::new(Vec::new(), SyscallSet::diatom_default());
    let mut t = cmd.spawn(printer).expect("spawn");
    let st = t.run_mut().expect("run");
    let out = std::mem::replace(t.handler_mut(), Printer::new(Vec::new(), SyscallSet::new()));
    (st, String::from_utf8_lossy(&out.into_inner()).into_owned())
}

#[test]
fn true_exits_zero_and_execve_is_seen() {
    let (st, out) = trace(&["/bin/true"]);
    eprintln!("{out}");
    assert_eq!(st, ExitStatus::Exited(0));
    assert!(
        out.contains("execve(\"/bin/true\", [\"/bin/true\"]"),
        "{out}"
    );
    assert!(out.contains("+++ exited with 0 +++"), "{out}");
}

#[test]
fn dropping_an_unrun_tracer_kills_the_child() {
    let t = Command::new("/bin/sleep")
        .arg("100")
        .spawn(tracer::PassThrough(SyscallSet::diatom_default()))
        .expect("spawn");
    let pid = t.pid();
    drop(t);
    // Reaped: the pid no longer exists (kill -0 fails with ESRCH).
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    );
}

/// The program runs as PID 2 of its own PID namespace (PID 1 only reaps),
/// its descendants are traced, a signal from outside reaches it, and
/// killing PID 1 ends everything in the namespace.
#[test]
fn a_pid_namespace_keeps_the_program_out_of_pid_1() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root for CLONE_NEWPID without a user namespace");
        return;
    }
    // A shell cannot trap a signal it started with ignored (as a test run
    // in the background of a script starts SIGINT): start it at default.
    // SAFETY: setting a standard signal's disposition to its default.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    let out = std::env::temp_dir().join(format!("tracer-pidns-{}", std::process::id()));
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        &format!(
            "echo $$ > {0}; sh -c 'echo $$ >> {0}'; trap 'exit 7' INT; echo ready >> {0}; while :; do sleep 0.05; done",
            out.display()
        ),
    ])
    .pid_namespace(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS);
    let printer = Printer::new(Vec::new(), SyscallSet::diatom_default());
    let mut t = cmd.spawn(printer).expect("spawn");
    let pid = t.pid();
    let init = t.init_pid().expect("an init");
    assert_ne!(pid, init);
    let waiter = std::thread::spawn(move || {
        // Send SIGINT once the shell says it set its trap.
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("ready") {
                nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let st = t.run_mut().expect("run");
    let text = waiter.join().unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("2"), "{text}");
    assert_eq!(lines.next(), Some("3"), "{text}");
    assert_eq!(st, ExitStatus::Exited(7));
    // PID 1 is gone with the program once reaped (`run` does not wait
    // for its teardown of the namespaces).
    t.reap_init();
    assert_eq!(
        nix::sys::signal::kill(init, None),
        Err(nix::errno::Errno::ESRCH)
    );
}

/// The namespace's PID 1 shares the tracer's memory rather than copying
/// it (`kcmp(KCMP_VM)` compares the address spaces), and runs none of the
/// tracer's signal handlers (a test binary has Rust's SIGSEGV/SIGBUS
/// handlers: PID 1 has them back at their default, and blocks nothing).
#[test]
fn pid_1_shares_the_tracer_memory_without_its_handlers() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root for CLONE_NEWPID without a user namespace");
        return;
    }
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("100").pid_namespace(libc::CLONE_NEWIPC);
    let mut t = cmd
        .spawn(tracer::PassThrough(SyscallSet::diatom_default()))
        .expect("spawn");
    let init = t.init_pid().expect("an init");
    const KCMP_VM: libc::c_int = 1;
    // SAFETY: kcmp on two pids we may trace; no pointers.
    let same = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            std::process::id() as libc::pid_t,
            init.as_raw(),
            KCMP_VM,
            0usize,
            0usize,
        )
    };
    assert_eq!(same, 0, "PID 1 has an address space of its own");
    // PID 1 set its handlers back before it made the program's process,
    // which `spawn` waited for.
    let field = |pid: &str, name: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    assert_ne!(field("self", "SigCgt:"), 0, "the test has handlers");
    let init_s = init.to_string();
    assert_eq!(field(&init_s, "SigCgt:"), 0, "PID 1 kept handlers");
    assert_eq!(field(&init_s, "SigBlk:"), 0, "PID 1 blocks signals");
    nix::sys::signal::kill(t.pid(), nix::sys::signal::SIGKILL).unwrap();
    let _ = t.run_mut();
    t.reap_init();
    assert_eq!(
        nix::sys::signal::kill(init, None),
        Err(nix::errno::Errno::ESRCH)
    );
}

/// A field of `/proc/PID/status`.
fn status_field(pid: nix::unistd::Pid, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// A filter to park with, when the test may make PID namespaces.
fn park_filter() -> Option<std::sync::Arc<tracer::Filter>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root for CLONE_NEWPID without a user namespace");
        return None;
    }
    let filter = tracer::Filter::new(&SyscallSet::diatom_default()).expect("filter");
    Some(std::sync::Arc::new(filter))
}

/// Waits until the parked process has its filter (it parks right after).
fn wait_filtered(pid: nix::unistd::Pid) {
    for _ in 0..1000 {
        if status_field(pid, "Seccomp:").as_deref() == Some("2") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("the parked process never installed its filter");
}

/// A parked process is traced by the thread that parked it, has its
/// filter before it knows its program, holds none of the caller's other
/// descriptors, and at its launch changes directory, runs the launch's
/// hook and execs the program it was given, traced.
#[test]
fn a_parked_process_runs_the_program_it_is_launched_with() {
    let Some(filter) = park_filter() else { return };
    // A descriptor the caller holds (not close-on-exec), not kept.
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let (kept_r, kept_w) = nix::unistd::pipe().expect("pipe");
    use std::os::fd::AsRawFd;
    let mut cmd = Command::new("/nonexistent");
    cmd.pid_namespace(libc::CLONE_NEWIPC);
    let kept = kept_w.as_raw_fd();
    // SAFETY: dup2 and close are raw, async-signal-safe calls.
    unsafe {
        cmd.pre_attach(move || {
            libc::dup2(kept, 1);
            Ok(())
        });
    }
    let parked = cmd.park(&filter, &[kept]).expect("park");
    let pid = parked.pid().expect("a pid");
    wait_filtered(pid);
    assert_eq!(
        status_field(pid, "TracerPid:").as_deref(),
        Some(nix::unistd::gettid().to_string().as_str())
    );
    let fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert!(!fds.contains(&r.as_raw_fd()), "{fds:?}");
    assert!(!fds.contains(&w.as_raw_fd()), "{fds:?}");
    assert!(fds.contains(&kept), "{fds:?}");
    let mut go = Command::new("/bin/sh");
    go.args(["-c", "pwd; umask; exit 3"]).current_dir("/proc");
    // SAFETY: umask is a raw, async-signal-safe call.
    unsafe {
        go.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    let printer = Printer::new(Vec::new(), SyscallSet::diatom_default());
    // SAFETY: the hook above only makes a raw call.
    let mut t = unsafe { parked.launch(printer, &mut go) }.expect("launch");
    drop(kept_w);
    let st = t.run_mut().expect("run");
    assert_eq!(st, ExitStatus::Exited(3));
    let out = std::mem::replace(t.handler_mut(), Printer::new(Vec::new(), SyscallSet::new()));
    let trace = String::from_utf8_lossy(&out.into_inner()).into_owned();
    assert!(trace.contains("execve(\"/bin/sh\""), "{trace}");
    // The launch's own chdir is not the program's: not in the trace.
    assert!(!trace.contains("chdir"), "{trace}");
    let mut text = String::new();
    use std::io::Read;
    std::fs::File::from(kept_r)
        .read_to_string(&mut text)
        .expect("read");
    assert_eq!(text, "/proc\n0027\n");
}

/// A parked process that is never launched is killed and reaped with its
/// PID 1 when dropped.
#[test]
fn dropping_a_parked_process_ends_it_and_its_pid_1() {
    let Some(filter) = park_filter() else { return };
    let mut cmd = Command::new("/nonexistent");
    cmd.pid_namespace(libc::CLONE_NEWIPC);
    let parked = cmd.park(&filter, &[]).expect("park");
    let pid = parked.pid().expect("a pid");
    let init = parked.init_pid().expect("an init");
    wait_filtered(pid);
    drop(parked);
    for p in [pid, init] {
        assert_eq!(
            nix::sys::signal::kill(p, None),
            Err(nix::errno::Errno::ESRCH)
        );
    }
    // A command without a PID namespace cannot be parked.
    let err = Command::new("/bin/true").park(&filter, &[]).unwrap_err();
    assert!(matches!(err, tracer::SpawnError::ParkWithoutNamespace));
}
