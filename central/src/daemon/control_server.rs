//! The control socket server: accepts `diatom` connections, learns the
//! caller from the peer credentials and answers one request per
//! connection through [`Central`].

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::core::Central;
use crate::control::{self, peer_cred, PeerCred, Request, Response};

/// Binds the control socket at `path`, replacing a stale socket file left
/// by a daemon that died, but refusing to steal one a live daemon serves.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match UnixStream::connect(path) {
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is served by another running diatom-central",
                    path.display()
                ),
            ))
        }
        Err(_) if path.exists() => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    // Every local user may ask; the daemon decides per caller (peer creds).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Serves connections until the listener fails. A connection goes to a
/// control thread waiting for one, else to a new thread; a thread that
/// finished its connection waits for the next one (up to [`IDLE_MAX`] of
/// them, for [`IDLE_KEEP`]), so a `diatom exec` does not wait for a thread
/// to be made and set up before its request is read.
pub fn serve(listener: UnixListener, central: Arc<Central>) {
    let pool = Arc::new(Pool::new());
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let Some(stream) = pool.hand_over(stream) else {
                    continue;
                };
                let c = Arc::clone(&central);
                let p = Arc::clone(&pool);
                let spawned = std::thread::Builder::new()
                    .name("control".into())
                    .spawn(move || {
                        handle(&stream, &c);
                        drop(stream);
                        p.work(&c);
                    });
                if let Err(e) = spawned {
                    log::error!("cannot start a control thread: {e}");
                }
            }
            Err(e) => {
                log::error!("control socket accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// How long an idle control thread waits for a connection before it ends.
const IDLE_KEEP: Duration = Duration::from_secs(30);
/// The most control threads kept waiting for connections.
const IDLE_MAX: usize = 4;

/// Control threads waiting for connections. `idle` counts the waiting
/// threads no connection has been promised to: the acceptor takes one
/// (decrements it) before it sends a connection, and a thread whose wait
/// timed out leaves only by taking itself the same way, so every
/// connection sent has a thread that will receive it.
struct Pool {
    tx: crossbeam_channel::Sender<UnixStream>,
    rx: crossbeam_channel::Receiver<UnixStream>,
    idle: AtomicUsize,
}

impl Pool {
    fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Self {
            tx,
            rx,
            idle: AtomicUsize::new(0),
        }
    }

    /// Takes one waiting thread off the idle count.
    fn take_one(&self) -> bool {
        self.idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives `stream` to a waiting thread; returns it when none waits.
    fn hand_over(&self, stream: UnixStream) -> Option<UnixStream> {
        if !self.take_one() {
            return Some(stream);
        }
        // The channel lives as long as the pool (it holds both ends).
        self.tx.send(stream).err().map(|e| e.into_inner())
    }

    /// Serves connections handed over until none comes for [`IDLE_KEEP`]
    /// (or enough other threads wait already).
    fn work(&self, central: &Central) {
        loop {
            if self.idle.load(Ordering::SeqCst) >= IDLE_MAX {
                return;
            }
            self.idle.fetch_add(1, Ordering::SeqCst);
            let stream = match self.rx.recv_timeout(IDLE_KEEP) {
                Ok(s) => s,
                Err(_) if self.take_one() => return,
                // A connection was promised to a waiting thread meanwhile,
                // and this one counts among them: it comes.
                Err(_) => match self.rx.recv() {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            handle(&stream, central);
        }
    }
}

/// How long `AwaitEnd` waits for a node's report of a job's end: the
/// report is normally already there, or a round trip away.
const AWAIT_END_LIMIT: Duration = Duration::from_secs(2);

/// Answers one connection's requests, in order, until the caller closes
/// it (`diatom exec` asks for its job's end on the connection that placed
/// it).
pub fn handle(stream: &UnixStream, central: &Central) {
    let cred = match peer_cred(stream) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("control: {e}");
            return;
        }
    };
    loop {
        let req: Request = match control::recv(stream) {
            Ok((r, _fds)) => r,
            Err(e) => {
                log::debug!("control: {e}");
                return;
            }
        };
        if !answer(stream, central, cred, req) {
            return;
        }
    }
}

/// Whether the client closed its end of `stream` (a `diatom exec`
/// interrupted while its job waits for a slot sends nothing more before
/// the answer: its connection can only end).
fn hung_up(stream: &UnixStream) -> bool {
    let gone = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & gone != 0
}

/// Answers one request; false when the reply could not be sent.
fn answer(stream: &UnixStream, central: &Central, cred: PeerCred, req: Request) -> bool {
    let sent = match req {
        Request::Exec(ex) => match central.exec(cred, &ex, &|| !hung_up(stream)) {
            Ok((grant, sock)) => {
                let job = grant.job;
                log::info!("job {job} for uid {} on {}", cred.uid, grant.node);
                let sent = control::send(stream, &Response::Granted(grant), &[sock.as_raw_fd()]);
                if sent.is_err() {
                    central.cancel(job);
                }
                sent
            }
            Err(why) => control::send(stream, &Response::Error(why), &[]),
        },
        Request::Nodes => control::send(stream, &Response::Listing(central.nodes_json()), &[]),
        Request::Jobs { all } => {
            control::send(stream, &Response::Listing(central.jobs_json(all)), &[])
        }
        Request::Status => control::send(stream, &Response::Listing(central.status_json()), &[]),
        Request::Kill { job, signal } => match central.kill(cred, job, signal) {
            Ok(()) => control::send(stream, &Response::Done, &[]),
            Err(why) => control::send(stream, &Response::Error(why), &[]),
        },
        Request::AwaitEnd { job } => {
            central.await_end(job, AWAIT_END_LIMIT);
            control::send(stream, &Response::Done, &[])
        }
    };
    match sent {
        Ok(()) => true,
        Err(e) => {
            log::debug!("control reply: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_client_is_seen_as_hung_up_and_an_open_one_is_not() {
        let (server, client) = UnixStream::pair().unwrap();
        assert!(!hung_up(&server));
        // Data from a client that is still there is not a hang-up.
        std::io::Write::write_all(&mut &client, b"x").unwrap();
        assert!(!hung_up(&server));
        drop(client);
        assert!(hung_up(&server));
    }
}
