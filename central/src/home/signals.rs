//! Signals sent to `diatom exec` that belong to the job: they are blocked in
//! every thread and read from a signalfd by the thread that waits for the
//! job's end (the home's main thread), which forwards them to the job's
//! process group on the node. The same wait also wakes when another thread
//! says so ([`Waker`]): one thread serves both, where a thread parked in
//! `sigwait` would cost a thread per job.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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

/// What ended a [`Listener::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// One of the listened-to signals arrived.
    Signal(Signal),
    /// A [`Waker`] was used (or dropped).
    Woken,
}

/// Waits for the signals of a set (which must be blocked in every thread)
/// or for a [`Waker`].
#[derive(Debug)]
pub struct Listener {
    signals: SignalFd,
    wake: Arc<OwnedFd>,
}

/// Wakes the [`Listener`] it was made with; dropping the last clone wakes
/// it too, so a thread that ends without a word (a panic) is noticed.
#[derive(Debug, Clone)]
pub struct Waker(Arc<WakeOnDrop>);

#[derive(Debug)]
struct WakeOnDrop(Arc<OwnedFd>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        signal_eventfd(&self.0);
    }
}

impl Waker {
    /// Ends the listener's current or next wait with [`Wakeup::Woken`].
    pub fn wake(&self) {
        signal_eventfd(&self.0 .0);
    }
}

fn signal_eventfd(fd: &OwnedFd) {
    // Only fails when the counter would overflow: it is then readable anyway.
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

impl Listener {
    /// Listens for `set`, with a waker to interrupt the wait.
    pub fn new(set: &SigSet) -> io::Result<(Listener, Waker)> {
        let signals = SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // SAFETY: eventfd has no memory preconditions; the result is
        // checked before it is owned.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let waker = Waker(Arc::new(WakeOnDrop(Arc::clone(&wake))));
        Ok((Listener { signals, wake }, waker))
    }

    /// The signalfd, readable while a listened-to signal is pending: for
    /// a caller that waits for something else and must not miss a signal
    /// meanwhile (`diatom exec` while its job is placed and launched).
    pub fn signal_fd(&self) -> BorrowedFd<'_> {
        self.signals.as_fd()
    }

    /// A pending signal, without waiting.
    pub fn pending(&mut self) -> io::Result<Option<Signal>> {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        return Ok(Some(sig));
                    }
                }
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Blocks until a signal arrives or the waker is used. Signals come
    /// first: a pending one is returned even when the waker was used too.
    pub fn wait(&mut self) -> io::Result<Wakeup> {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(sig) => return Ok(Wakeup::Signal(sig)),
                    Err(_) => continue,
                },
                Ok(None) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let mut count = [0u8; 8];
            if nix::unistd::read(self.wake.as_raw_fd(), &mut count).is_ok() {
                return Ok(Wakeup::Woken);
            }
            let mut fds = [
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_reaches_the_listener_and_the_waker_wakes_it() {
        let mut set = SigSet::empty();
        set.add(Signal::SIGUSR2);
        // Block in this thread: the listener reads it from its signalfd,
        // and a thread-directed signal stays pending for this thread.
        block(&set).unwrap();
        let (mut listener, waker) = Listener::new(&set).unwrap();
        // SAFETY: tgkill on our own thread with a valid signal number.
        let r = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGUSR2,
            )
        };
        assert_eq!(r, 0);
        // Both pending: the signal first, then the wake-up.
        waker.wake();
        assert_eq!(listener.wait().unwrap(), Wakeup::Signal(Signal::SIGUSR2));
        // Read already: nothing pending, and `pending` does not wait.
        assert_eq!(listener.pending().unwrap(), None);
        assert_eq!(listener.wait().unwrap(), Wakeup::Woken);
        // A waker used from another thread while the listener blocks, and
        // one dropped without a word, both end a wait.
        let w = waker.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            w.wake();
        });
        assert_eq!(listener.wait().unwrap(), Wakeup::Woken);
        t.join().unwrap();
        let t = std::thread::spawn(move || drop(waker));
        assert_eq!(listener.wait().unwrap(), Wakeup::Woken);
        t.join().unwrap();
    }
}
