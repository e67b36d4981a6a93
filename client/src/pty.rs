//! Pseudo-terminals for `diatom exec -t`: the node opens a pty pair, the
//! job's first process gets the slave as its controlling terminal and
//! stdio, and the node relays the master to the job's home.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::pty::{openpty, Winsize};

/// Window size as the home reports it (rows, columns, pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Width in pixels (often 0).
    pub xpixel: u16,
    /// Height in pixels (often 0).
    pub ypixel: u16,
}

impl From<WindowSize> for Winsize {
    fn from(w: WindowSize) -> Self {
        Winsize {
            ws_row: w.rows,
            ws_col: w.cols,
            ws_xpixel: w.xpixel,
            ws_ypixel: w.ypixel,
        }
    }
}

/// Both ends of a fresh pty.
#[derive(Debug)]
pub struct Pty {
    /// The node keeps this end and relays it.
    pub master: OwnedFd,
    /// The job gets this end as its terminal.
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pty with the given window size. The master is close-on-exec
    /// so the job never inherits it.
    pub fn open(size: WindowSize) -> nix::Result<Self> {
        let ws: Winsize = size.into();
        let p = openpty(Some(&ws), None)?;
        nix::fcntl::fcntl(
            p.master.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        Ok(Self {
            master: p.master,
            slave: p.slave,
        })
    }
}

/// Tells the job its window changed (the kernel sends it SIGWINCH).
pub fn set_window_size(master: RawFd, size: WindowSize) -> nix::Result<()> {
    let ws: Winsize = size.into();
    // SAFETY: TIOCSWINSZ reads one Winsize from the pointer, which is valid
    // for the duration of the call.
    let r = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws as *const Winsize) };
    nix::errno::Errno::result(r).map(drop)
}

/// In the job's first process, after fork and before exec: a new session
/// whose controlling terminal is `slave`, which also becomes stdin, stdout
/// and stderr. Only async-signal-safe calls.
///
/// # Safety
/// Must run in a freshly forked child, where no other thread exists.
pub unsafe fn attach_controlling_terminal(slave: RawFd) -> std::io::Result<()> {
    // SAFETY (whole block): plain system calls on descriptors this process owns.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in 0..3 {
            if libc::dup2(slave, fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if slave > 2 {
            libc::close(slave);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn window_size_reaches_the_slave() {
        let pty = Pty::open(WindowSize {
            rows: 24,
            cols: 80,
            ..Default::default()
        })
        .unwrap();
        set_window_size(
            pty.master.as_raw_fd(),
            WindowSize {
                rows: 50,
                cols: 132,
                ..Default::default()
            },
        )
        .unwrap();
        let mut ws: Winsize = WindowSize::default().into();
        // SAFETY: TIOCGWINSZ writes one Winsize into a valid pointer.
        let r = unsafe {
            libc::ioctl(
                pty.slave.as_raw_fd(),
                libc::TIOCGWINSZ,
                &mut ws as *mut Winsize,
            )
        };
        assert_eq!(r, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (50, 132));
    }

    #[test]
    fn bytes_cross_the_pty() {
        let pty = Pty::open(WindowSize::default()).unwrap();
        let mut slave = std::fs::File::from(pty.slave);
        let mut master = std::fs::File::from(pty.master);
        slave.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).unwrap();
        // The line discipline turns \n into \r\n on output.
        assert_eq!(&buf[..n], b"hi\r\n");
    }
}
