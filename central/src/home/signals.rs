//! Signals sent to `diatom exec` that belong to the job: they are blocked in
//! every thread and collected by one thread with `sigwait`, which hands them
//! to the home to forward to the job's process group on the node.

use nix::sys::signal::{SigSet, Signal};

/// The signals a home forwards. SIGQUIT and SIGWINCH only matter with a
/// terminal (`-t`); without one SIGWINCH is meaningless and SIGQUIT keeps
/// its default meaning for the home.
pub fn forwarded(tty: bool) -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    if tty {
        set.add(Signal::SIGQUIT);
        set.add(Signal::SIGWINCH);
    }
    set
}

/// Blocks `set` in the calling thread; threads spawned afterwards inherit
/// the mask, so call this first thing in `main`'s thread.
pub fn block(set: &SigSet) -> nix::Result<()> {
    set.thread_block()
}

/// Starts the thread that waits for `set` and calls `on_signal` for each.
pub fn spawn_waiter<F>(
    set: SigSet,
    mut on_signal: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnMut(Signal) + Send + 'static,
{
    std::thread::Builder::new()
        .name("home-signals".into())
        .spawn(move || loop {
            match set.wait() {
                Ok(sig) => on_signal(sig),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("sigwait failed: {e}");
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_reaches_the_waiter() {
        let mut set = SigSet::empty();
        set.add(Signal::SIGUSR2);
        // Block in this thread too, so the process-directed signal can only
        // be taken by the waiter's sigwait.
        block(&set).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        spawn_waiter(set, move |s| {
            let _ = tx.send(s);
        })
        .unwrap();
        // A process-directed signal could land in another test thread that
        // does not block it, so direct it at the waiter: the only thread in
        // sigwait for it. Find the waiter as the newest thread.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let waiter = newest_thread();
        // SAFETY: tgkill on our own process with a valid signal number.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), waiter, libc::SIGUSR2) };
        assert_eq!(r, 0);
        let got = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(got, Signal::SIGUSR2);
    }

    fn newest_thread() -> i32 {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .is_ok_and(|c| c.trim() == "home-signals")
            })
            .max()
            .unwrap()
    }
}
