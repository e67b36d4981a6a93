//! The tracer on real binaries, through `diatom trace` and the library:
//! outputs and exit statuses equal untraced runs, every descendant's calls
//! are seen, handlers emulate / rewrite / inject, and the trace cannot be
//! escaped (own ptrace, process_vm_*, CLONE_UNTRACED, own seccomp filter).

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diatom_tests::{bin_path, require_root};
use tracer::decode::Printer;
use tracer::{Action, Command, ExitStatus, Handler, SyscallExit, SyscallSet, SyscallStop, Sysno};

/// A per-test directory under the temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("diatom-trace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// tests/fixtures/tracee.c, built once with the system cc.
fn fixture() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tracee.c");
        let dir = std::env::temp_dir().join(format!("diatom-trace-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tracee");
        let st = std::process::Command::new("cc")
            .args(["-O1", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("the system cc builds the test fixture");
        assert!(st.success(), "cc failed on {}", src.display());
        out
    })
}

fn native(argv: &[&str]) -> Output {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap()
}

/// Runs `diatom trace -o LOG -- argv`; returns its output and the log.
fn diatom_trace(argv: &[&str], log: &Path) -> (Output, String) {
    let out = std::process::Command::new(bin_path("diatom"))
        .arg("trace")
        .arg("-o")
        .arg(log)
        .arg("--")
        .args(argv)
        .output()
        .expect("run diatom trace (is the diatom binary built?)");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (out, text)
}

/// Runs the fixture in `mode` with a fresh directory under `diatom trace`;
/// returns the directory (kept alive), the output and the log.
fn trace_fixture(mode: &str) -> (Scratch, Output, String) {
    let dir = Scratch::new(mode);
    let d = dir.path().to_str().unwrap().to_string();
    let bin = fixture().to_str().unwrap();
    let (got, log) = diatom_trace(&[bin, mode, &d], &dir.join("log"));
    (dir, got, log)
}

/// Thread ids of the log lines containing `pat`.
fn pids(log: &str, pat: &str) -> BTreeSet<i32> {
    log.lines()
        .filter(|l| l.contains(pat))
        .filter_map(|l| l.strip_prefix("[pid ")?.split(']').next()?.parse().ok())
        .collect()
}

fn root_pid(log: &str) -> i32 {
    *pids(log, "execve(").iter().next().expect("an execve line")
}

fn assert_same_run(argv: &[&str], name: &str) -> String {
    let dir = Scratch::new(name);
    let want = native(argv);
    assert!(
        want.status.code().is_some(),
        "native run of {argv:?} ended by a signal"
    );
    let (got, log) = diatom_trace(argv, &dir.join("log"));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&want.stdout),
        "stdout of {argv:?}"
    );
    assert_eq!(got.status.code(), want.status.code(), "status of {argv:?}");
    assert!(log.contains("execve("), "{log}");
    log
}

#[test]
fn trace_true() {
    if !require_root("trace_true") {
        return;
    }
    let log = assert_same_run(&["/bin/true"], "true");
    assert!(
        log.contains("execve(\"/bin/true\", [\"/bin/true\"]"),
        "{log}"
    );
    assert!(log.contains("+++ exited with 0 +++"), "{log}");
}

#[test]
fn trace_ls_l_root() {
    if !require_root("trace_ls_l_root") {
        return;
    }
    let dir = Scratch::new("ls");
    let want = native(&["ls", "-l", "/"]);
    let (got, log) = diatom_trace(&["ls", "-l", "/"], &dir.join("log"));
    assert_eq!(got.status.code(), Some(0));
    // Compare permissions and names: mtimes of /tmp etc. move while tests run.
    let cols = |o: &[u8]| -> Vec<(String, String)> {
        String::from_utf8_lossy(o)
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[8..].join(" "))
            })
            .collect()
    };
    assert_eq!(cols(&got.stdout), cols(&want.stdout));
    assert!(
        log.contains("statx(") || log.contains("newfstatat(") || log.contains("lstat("),
        "{log}"
    );
    assert!(
        log.contains("openat(AT_FDCWD, \"/\", O_RDONLY|O_NONBLOCK|O_DIRECTORY|O_CLOEXEC) = 3"),
        "{log}"
    );
}

#[test]
fn trace_shell_pipeline() {
    if !require_root("trace_shell_pipeline") {
        return;
    }
    let log = assert_same_run(&["sh", "-c", "seq 1000 | sort -r | head -3"], "pipeline");
    let root = root_pid(&log);
    for prog in ["seq", "sort", "head"] {
        let p = pids(&log, &format!("execve(\"/usr/bin/{prog}\""));
        let p = if p.is_empty() {
            pids(&log, &format!("execve(\"/bin/{prog}\""))
        } else {
            p
        };
        assert_eq!(p.len(), 1, "{prog} exec'd once: {log}");
        assert!(!p.contains(&root), "{prog} runs in a child");
    }
}

#[test]
fn trace_python_threads() {
    if !require_root("trace_python_threads") {
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        assert!(!diatom_tests::in_ci(), "CI needs /usr/bin/python3");
        eprintln!("skipping trace_python_threads: no /usr/bin/python3");
        return;
    }
    let dir = Scratch::new("py");
    let script = format!(
        "import threading\n\
         def f(i):\n    for j in range(10): open('{d}/py-%d-%d' % (i, j), 'w').close()\n\
         ts = [threading.Thread(target=f, args=(i,)) for i in range(4)]\n\
         [t.start() for t in ts]; [t.join() for t in ts]\n\
         print(sum(1 for _ in range(100000)), len(ts))\n",
        d = dir.path().display()
    );
    let argv = ["/usr/bin/python3", "-c", script.as_str()];
    let log = assert_same_run(&argv, "py-run");
    let tids = pids(&log, &format!("{}/py-", dir.path().display()));
    assert!(tids.len() >= 2, "opens from several threads: {tids:?}");
    assert!(
        !tids.contains(&root_pid(&log)),
        "threads have their own ids"
    );
    assert_eq!(log.matches("/py-").count(), 40, "every open seen once");
}

#[test]
fn trace_c_family_fork_vfork_threads_exec_from_thread() {
    if !require_root("trace_c_family") {
        return;
    }
    let dir = Scratch::new("family");
    let d = dir.path().to_str().unwrap().to_string();
    let bin = fixture().to_str().unwrap();
    let want = native(&[bin, "family", &d]);
    assert_eq!(want.status.code(), Some(7));
    let (got, log) = diatom_trace(&[bin, "family", &d], &dir.join("log"));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&want.stdout)
    );
    assert_eq!(got.status.code(), Some(7));
    let root = root_pid(&log);
    let fork_child = pids(&log, "/fork-child\"");
    assert_eq!(fork_child.len(), 1);
    assert!(!fork_child.contains(&root), "{log}");
    assert!(log.contains(&format!(
        "[pid {}] +++ exited with 3 +++",
        fork_child.iter().next().unwrap()
    )));
    let vfork = pids(&log, "execve(\"/bin/echo\", [\"echo\", \"vfork-exec\"]");
    assert_eq!(vfork.len(), 1, "{log}");
    assert!(!vfork.contains(&root));
    let threads = pids(&log, "/thread-");
    assert_eq!(threads.len(), 4, "four threads each seen: {threads:?}");
    assert!(!threads.contains(&root));
    assert_eq!(
        log.matches("/thread-").count(),
        80,
        "every thread open seen once"
    );
    // The exec from a non-main thread: the process keeps its pid.
    assert!(
        log.contains(&format!(
            "[pid {root}] execve(\"/bin/sh\", [\"sh\", \"-c\", \"echo exec-from-thread; exit 7\"]"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("[pid {root}] +++ exited with 7 +++")),
        "{log}"
    );
}

#[test]
fn trace_stop_cont_and_handled_signals_pass_through() {
    if !require_root("trace_stop_cont") {
        return;
    }
    let dir = Scratch::new("stopcont-dir");
    let bin = fixture().to_str().unwrap();
    let log = assert_same_run(&[bin, "stopcont", dir.path().to_str().unwrap()], "stopcont");
    assert!(log.contains("/after-stop\""), "{log}");
}

#[test]
fn tracee_ptrace_and_process_vm_get_eperm() {
    if !require_root("tracee_ptrace_eperm") {
        return;
    }
    let t0 = Instant::now();
    let (_dir, got, log) = trace_fixture("security");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(got.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "traceme -1 Operation not permitted\nattach -1 Operation not permitted\n\
         vm_readv -1 Operation not permitted\nvm_writev -1 Operation not permitted\n"
    );
    assert!(log.contains("ptrace(0, 0, NULL, NULL) = -1 EPERM"), "{log}");
    assert!(log.contains("process_vm_readv("), "{log}");
}

#[test]
fn strace_inside_the_tracer_fails_promptly() {
    if !require_root("strace_inside") {
        return;
    }
    let Ok(strace) = which("strace") else {
        assert!(
            !diatom_tests::in_ci(),
            "CI installs strace (apt-get install -y strace)"
        );
        eprintln!("skipping strace_inside_the_tracer_fails_promptly: strace not installed");
        return;
    };
    let dir = Scratch::new("strace");
    let t0 = Instant::now();
    let (got, _log) = diatom_trace(
        &[strace.to_str().unwrap(), "-o", "/dev/null", "true"],
        &dir.join("log"),
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "no hang");
    assert_ne!(got.status.code(), Some(0));
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
}

fn which(p: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(p))
        .find(|c| c.is_file())
        .ok_or(())
}

#[test]
fn clone_untraced_children_are_still_traced() {
    if !require_root("clone_untraced") {
        return;
    }
    let (_dir, got, log) = trace_fixture("untraced");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "clone child exited 4\nclone3 child exited 5\n"
    );
    let root = root_pid(&log);
    for marker in ["/clone-untraced-child\"", "/clone3-untraced-child\""] {
        let p = pids(&log, marker);
        assert_eq!(p.len(), 1, "{marker} seen: {log}");
        assert!(!p.contains(&root));
    }
}

#[test]
fn tracee_seccomp_filter_does_not_hide_calls() {
    if !require_root("tracee_seccomp") {
        return;
    }
    let (_dir, got, log) = trace_fixture("seccomp");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "filter 0\nlistener Operation not permitted\n"
    );
    assert!(log.contains("/after-own-filter\""), "{log}");
}

#[test]
fn death_by_signal_gives_128_plus_n() {
    if !require_root("death_by_signal") {
        return;
    }
    let dir = Scratch::new("sig");
    for (sig, code) in [("SEGV", 139), ("TERM", 143), ("KILL", 137)] {
        let (got, log) = diatom_trace(&["sh", "-c", &format!("kill -{sig} $$")], &dir.join("log"));
        assert_eq!(got.status.code(), Some(code), "{sig}");
        assert!(log.contains(&format!("+++ killed by SIG{sig}")), "{log}");
    }
    let (got, _) = diatom_trace(&["sh", "-c", "exit 42"], &dir.join("log"));
    assert_eq!(got.status.code(), Some(42));
}

#[test]
fn diatom_trace_failures_are_one_line_and_255() {
    if !require_root("diatom_trace_failures") {
        return;
    }
    let dir = Scratch::new("fail");
    for argv in [
        &["/nonexistent/prog"][..],
        &["no-such-program-diatom"][..],
        &["/etc/passwd"][..],
    ] {
        let (got, _) = diatom_trace(argv, &dir.join("log"));
        assert_eq!(got.status.code(), Some(255), "{argv:?}");
        let err = String::from_utf8_lossy(&got.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("diatom: ")).collect();
        assert_eq!(lines.len(), 1, "{err}");
    }
    let (got, _) = diatom_trace(&["/etc/passwd"], &dir.join("log"));
    assert!(String::from_utf8_lossy(&got.stderr).contains("EACCES"));
}

// ---- through the library ----

/// Runs `argv` under `handler` with stdout into a file; returns the
/// status, the stdout text and the handler.
fn lib_run<H: Handler>(argv: &[&str], handler: H) -> (ExitStatus, String, H) {
    let out = tempfile("out");
    let f = std::fs::File::create(&out).unwrap();
    let fd = f.as_raw_fd();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut t = cmd.spawn(handler).expect("spawn");
    let st = t.run_mut().expect("run");
    drop(f);
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let h = t.into_handler();
    (st, text, h)
}

fn tempfile(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "diatom-trace-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

struct FakeGetpid;
impl Handler for FakeGetpid {
    fn subscriptions(&self) -> SyscallSet {
        [Sysno::getpid].into_iter().collect()
    }
    fn handle_syscall(&mut self, _stop: &mut SyscallStop<'_>) -> Action {
        Action::Return(42)
    }
}

#[test]
fn handler_emulates_getpid() {
    if !require_root("handler_emulates_getpid") {
        return;
    }
    let (st, out, _) = lib_run(&[fixture().to_str().unwrap(), "getpid", "/"], FakeGetpid);
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "pid 42\n");
}

struct Redirect {
    from: Vec<u8>,
    to: Vec<u8>,
    hits: u32,
}
impl Handler for Redirect {
    fn subscriptions(&self) -> SyscallSet {
        [Sysno::openat].into_iter().collect()
    }
    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        if stop.read_path_arg(1).is_ok_and(|p| p == self.from) {
            self.hits += 1;
            if let Err(e) = stop.set_path_arg(1, &self.to.clone()) {
                return Action::errno(e.errno_or(nix::errno::Errno::EIO));
            }
        }
        Action::Continue
    }
}

#[test]
fn handler_redirects_openat_to_another_file() {
    if !require_root("handler_redirects_openat") {
        return;
    }
    let dir = Scratch::new("redirect");
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::write(&a, "content of a\n").unwrap();
    std::fs::write(&b, "content of b\n").unwrap();
    let h = Redirect {
        from: a.to_str().unwrap().as_bytes().to_vec(),
        to: b.to_str().unwrap().as_bytes().to_vec(),
        hits: 0,
    };
    let (st, out, h) = lib_run(
        &[fixture().to_str().unwrap(), "cat", a.to_str().unwrap()],
        h,
    );
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "content of b\n");
    assert_eq!(h.hits, 1);
    // The tracee's own memory still holds its own path (we used scratch).
    let (_, out, _) = lib_run(
        &["/bin/cat", a.to_str().unwrap()],
        Redirect { hits: 0, ..h },
    );
    assert_eq!(out, "content of b\n");
}

/// Injects `getppid` at each `getpid` and answers with it, then watches
/// `getuid`/`geteuid` and changes their result at exit.
struct Inject {
    injected: Vec<i64>,
}
impl Handler for Inject {
    fn subscriptions(&self) -> SyscallSet {
        [Sysno::getpid, Sysno::getuid, Sysno::geteuid]
            .into_iter()
            .collect()
    }
    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        match stop.sysno() {
            Some(Sysno::getpid) => {
                let r = stop.inject(Sysno::getppid, &[]).expect("inject");
                self.injected.push(r);
                Action::Return(r)
            }
            _ => Action::ContinueWatchExit,
        }
    }
    fn handle_exit(&mut self, exit: &mut SyscallExit<'_>) {
        if matches!(exit.sysno(), Some(Sysno::getuid | Sysno::geteuid)) {
            exit.set_ret(4242);
        }
    }
}

#[test]
fn handler_injects_a_call_and_rewrites_a_result() {
    if !require_root("handler_injects") {
        return;
    }
    let (st, out, h) = lib_run(
        &[fixture().to_str().unwrap(), "getpid", "/"],
        Inject { injected: vec![] },
    );
    assert_eq!(st, ExitStatus::Exited(0));
    // The tracee's parent is this test process.
    assert_eq!(out, format!("pid {}\n", std::process::id()));
    assert_eq!(h.injected, vec![std::process::id() as i64]);
    let (_, out, _) = lib_run(&["/usr/bin/id", "-u"], Inject { injected: vec![] });
    assert_eq!(out, "4242\n");
}

#[test]
fn library_reports_exec_errors_and_signals() {
    if !require_root("library_errors") {
        return;
    }
    let printer = || Printer::new(Vec::new(), SyscallSet::diatom_default());
    let e = Command::new("/nonexistent")
        .spawn(printer())
        .unwrap()
        .run()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot execute /nonexistent: ENOENT"),
        "{e}"
    );
    let e = Command::new("/etc/passwd")
        .spawn(printer())
        .unwrap()
        .run()
        .unwrap_err();
    assert!(e.to_string().contains("EACCES"), "{e}");
    let e = Command::new("/bin/true")
        .current_dir("/nonexistent-dir")
        .spawn(printer())
        .unwrap()
        .run()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot change directory to /nonexistent-dir"),
        "{e}"
    );
    let st = Command::new("/bin/sh")
        .args(["-c", "kill -USR1 $$"])
        .spawn(printer())
        .unwrap()
        .run()
        .unwrap();
    assert_eq!(
        st,
        ExitStatus::Signaled {
            signal: libc::SIGUSR1,
            core_dumped: false
        }
    );
    assert_eq!(st.shell_code(), 138);
}

/// What a start that failed said, whether `spawn` or the trace saw it.
fn start_error(cmd: &mut Command) -> String {
    let printer = Printer::new(Vec::new(), SyscallSet::diatom_default());
    match cmd.spawn(printer) {
        Err(e) => e.to_string(),
        Ok(t) => t.run().unwrap_err().to_string(),
    }
}

#[test]
fn hooks_run_while_the_tracer_attaches_report_their_own_failure() {
    if !require_root("early_hooks") {
        return;
    }
    // The child's pre_attach hook runs before the attach: a child that
    // fails there may be gone when the tracer seizes it, and must still
    // be reported with its reason, not as a refused ptrace.
    for namespaced in [false, true] {
        let mut cmd = Command::new("/bin/true");
        if namespaced {
            cmd.pid_namespace(0);
        }
        // SAFETY: the hook only returns an error.
        unsafe {
            cmd.pre_attach(|| Err(std::io::Error::from_raw_os_error(libc::EACCES)));
        }
        let e = start_error(&mut cmd);
        assert!(
            e.contains("pre-exec setup failed") && e.contains("EACCES"),
            "namespaced {namespaced}: {e}"
        );
    }
    // Without a user namespace PID 1 runs its pre_init while the parent
    // runs on_init: its failure is the one reported.
    let mut cmd = Command::new("/bin/true");
    cmd.pid_namespace(0);
    cmd.on_init(|_| Ok(()));
    // SAFETY: the hook only returns an error.
    unsafe {
        cmd.pre_init(|| Err(std::io::Error::from_raw_os_error(libc::EPERM)));
    }
    let e = start_error(&mut cmd);
    assert!(
        e.contains("setting up the job's namespaces failed") && e.contains("EPERM"),
        "{e}"
    );
}

#[test]
fn descendants_are_killed_when_the_first_process_exits() {
    if !require_root("descendants_killed") {
        return;
    }
    let t0 = Instant::now();
    let st = Command::new("/bin/sh")
        .args(["-c", "sleep 100 & sleep 100 & exit 3"])
        .spawn(Printer::new(std::io::sink(), SyscallSet::diatom_default()))
        .unwrap()
        .run()
        .unwrap();
    assert_eq!(st, ExitStatus::Exited(3));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the sleeps were killed and reaped"
    );
}

#[test]
fn ptrace_unavailable_is_one_clear_line() {
    if !require_root("ptrace_unavailable") {
        return;
    }
    // `diatom trace` inside `diatom trace`: the inner one's PTRACE_SEIZE gets
    // EPERM from the outer tracer, as in a container that forbids ptrace.
    let dir = Scratch::new("nested");
    let diatom = bin_path("diatom");
    let (got, _) = diatom_trace(
        &[diatom.to_str().unwrap(), "trace", "/bin/true"],
        &dir.join("log"),
    );
    assert_eq!(got.status.code(), Some(255));
    let err = String::from_utf8_lossy(&got.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("diatom: tracer: ptrace is not permitted here (EPERM"),
        "{err}"
    );
}

#[test]
fn seccomp_unavailable_is_a_clear_error() {
    if !require_root("seccomp_unavailable") {
        return;
    }
    // A filter installed by pre_exec makes seccomp(2) fail with EINVAL, as on
    // a kernel without CONFIG_SECCOMP_FILTER.
    use tracer::bpf::{insn, JEQ, LD_W_ABS, RET, RET_ALLOW};
    static DENY: [libc::sock_filter; 4] = [
        insn(LD_W_ABS, 0, 0, 0),
        insn(JEQ, 0, 1, libc::SYS_seccomp as u32),
        insn(RET, 0, 0, 0x0005_0000 | libc::EINVAL as u32), // SECCOMP_RET_ERRNO
        insn(RET, 0, 0, RET_ALLOW),
    ];
    let mut cmd = Command::new("/bin/true");
    // SAFETY: only raw system calls on static data.
    unsafe {
        cmd.pre_exec(|| {
            let prog = libc::sock_fprog {
                len: DENY.len() as u16,
                filter: DENY.as_ptr() as *mut libc::sock_filter,
            };
            if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let printer = Printer::new(Vec::new(), SyscallSet::diatom_default());
    let e = cmd.spawn(printer).unwrap().run().unwrap_err();
    assert_eq!(
        e.to_string(),
        "seccomp is not available here (EINVAL: Invalid argument): installing the filter was refused"
    );
}

/// Answers every `getuid` by injecting a `getuid` first: two extra stops
/// per call, during which queued signals arrive.
struct ReInject {
    calls: u64,
}
impl Handler for ReInject {
    fn subscriptions(&self) -> SyscallSet {
        [Sysno::getuid].into_iter().collect()
    }
    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        self.calls += 1;
        match stop.inject(Sysno::getuid, &[]) {
            Ok(r) => Action::Return(r),
            Err(_) => Action::Continue,
        }
    }
}

#[test]
fn signals_during_injection_are_not_lost() {
    if !require_root("signals_during_injection") {
        return;
    }
    let (st, out, h) = lib_run(
        &[fixture().to_str().unwrap(), "sigstorm", "/"],
        ReInject { calls: 0 },
    );
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "bad 0 lost 0\n");
    assert!(h.calls >= 1000, "{}", h.calls);
}

struct SwapCall;
impl Handler for SwapCall {
    fn subscriptions(&self) -> SyscallSet {
        [Sysno::getpid].into_iter().collect()
    }
    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        stop.set_nr(Sysno::getppid);
        Action::Continue
    }
}

#[test]
fn handler_replaces_the_call() {
    if !require_root("handler_replaces_the_call") {
        return;
    }
    let (st, out, _) = lib_run(&[fixture().to_str().unwrap(), "getpid", "/"], SwapCall);
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, format!("pid {}\n", std::process::id()));
}
