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
