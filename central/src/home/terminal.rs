//! The caller's terminal during `diatom exec -t`: raw mode for the life of
//! the job (restored on every exit path) and the window size to report.

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Window size of the terminal on `fd`, or None when it is not a terminal.
pub fn window_size(fd: RawFd) -> Option<(u16, u16, u16, u16)> {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into a valid pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws as *mut nix::pty::Winsize) };
    (r == 0).then_some((ws.ws_row, ws.ws_col, ws.ws_xpixel, ws.ws_ypixel))
}

/// Puts a terminal in raw mode and restores it when dropped.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal; None otherwise (like `ssh -tt`
    /// with a pipe for stdin: the job still gets a pty on the node).
    pub fn enter(fd: RawFd) -> Option<Self> {
        // SAFETY: the caller keeps `fd` open for the guard's lifetime
        // (it is one of the process's stdio descriptors).
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let saved = termios::tcgetattr(bfd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(bfd, SetArg::TCSADRAIN, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        let bfd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(bfd, SetArg::TCSADRAIN, &self.saved);
    }
}
