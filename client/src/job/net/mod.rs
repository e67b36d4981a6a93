//! The job's network through central, the tracer's side (see
//! `docs/network.md`): the socket calls that name addresses stop, are
//! served through the home, and leave the job's socket talking natively to
//! a loopback relay ([`relay`]) that carries its traffic to central. Reads,
//! writes, `poll` and friends on the job's sockets never stop.
//!
//! The tracer gets its own descriptor of a job's socket with
//! `pidfd_getfd` (same open socket, so what it does, the job's socket
//! does): it learns the socket's family and type, binds and connects it
//! itself, and identifies it by inode (shared by every descriptor of it
//! across `dup` and `fork`). Calls that may wait indefinitely (`accept`,
//! `recvfrom`, `recvmsg`) run natively and are only translated at their
//! exit; a connect waits for central at most [`CONNECT_WAIT`].

pub mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use dscp_dicp::msg::net::{Addr, Kind};
use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;
use tracer::{Action, Rule, SyscallExit, SyscallSet, SyscallStop, TraceeMemory};

use crate::job::members::Members;
use crate::netrelay::addr::{self, Parsed, SOCKADDR_MAX};
pub use relay::{JobSock, Relay};

/// How long a connect stop waits for central's answer before it lets the
/// job's socket connect anyway: a blocked stop stalls the whole job, so a
/// destination that does not answer (a filtered port) must not hold it.
/// After that, central's failure shows as a reset of the connection.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Size of `struct msghdr` on x86_64, and where its name fields are.
const MSGHDR_SIZE: usize = 56;

/// The socket calls of a job.
#[derive(Debug)]
pub struct NetLayer {
    relay: Arc<Relay>,
    pidfds: HashMap<Pid, OwnedFd>,
    /// The job's processes: whose descriptors say which sockets are open.
    members: Members,
}

type Served = Result<Action, Errno>;

fn errno(e: i32) -> Errno {
    Errno::from_raw(e)
}

fn result(r: Result<(), i32>) -> Action {
    match r {
        Ok(()) => Action::Return(0),
        Err(e) => Action::errno(errno(e)),
    }
}

/// The inode of socket `fd` of process `pid` (`None`: not a socket).
fn inode(pid: Pid, fd: u64) -> Option<u64> {
    let fd = i32::try_from(fd).ok()?;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    socket_inode(&link)
}

/// The inode of a `/proc/PID/fd` link's socket (`socket:[N]`).
fn socket_inode(link: &std::path::Path) -> Option<u64> {
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The sockets the processes `pids` hold now (their inodes); `None` when
/// a live process's descriptors could not be read.
fn held_sockets(pids: &[Pid]) -> Option<std::collections::HashSet<u64>> {
    let mut held = std::collections::HashSet::new();
    for pid in pids {
        let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for fd in fds.flatten() {
            if let Some(ino) = std::fs::read_link(fd.path())
                .ok()
                .as_deref()
                .and_then(socket_inode)
            {
                held.insert(ino);
            }
        }
    }
    Some(held)
}

/// Reads a socket address argument (`len` capped at [`SOCKADDR_MAX`]).
fn read_sockaddr(mem: &impl TraceeMemory, ptr: u64, len: u64) -> Option<Vec<u8>> {
    if ptr == 0 {
        return None;
    }
    let len = usize::try_from(len).ok()?.min(SOCKADDR_MAX);
    mem.read_bytes(ptr, len).ok()
}

/// Writes `a` as a call's result address: at most `*lenp` bytes of it at
/// `ptr`, and its full length to `*lenp` (what the kernel does).
fn write_sockaddr(mem: &impl TraceeMemory, ptr: u64, lenp: u64, a: &Addr, family: i32) -> bool {
    if ptr == 0 || lenp == 0 {
        return true;
    }
    let raw = addr::encode(&addr::for_family(a, family));
    let Ok(room) = mem.read_value::<u32>(lenp) else {
        return false;
    };
    let n = raw.len().min(room as usize);
    mem.write_all(ptr, &raw[..n]).is_ok() && mem.write_value(lenp, &(raw.len() as u32)).is_ok()
}

fn inet_of(p: Result<Parsed, i32>) -> Option<SocketAddr> {
    match p {
        Ok(Parsed::Addr(Addr::Inet(a))) => Some(a),
        _ => None,
    }
}

fn is_inet(family: i32) -> bool {
    family == libc::AF_INET || family == libc::AF_INET6
}

impl NetLayer {
    /// The socket calls of a job relayed by `relay`.
    pub fn new(relay: Arc<Relay>, members: Members) -> NetLayer {
        NetLayer {
            relay,
            pidfds: HashMap::new(),
            members,
        }
    }

    /// The relay (the session dispatch hands it the home's requests).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// The calls the layer stops. `sendto` and `recvfrom` stop only with
    /// an address argument: without one (`send`, `recv` on a connected
    /// socket) they run natively (the filter tests all 64 bits of the
    /// address pointer).
    pub fn subscriptions(&self) -> SyscallSet {
        Self::calls()
    }

    /// The calls every network layer stops (see
    /// [`NetLayer::subscriptions`]).
    pub fn calls() -> SyscallSet {
        use Sysno::*;
        let mut s: SyscallSet = [
            connect,
            bind,
            listen,
            accept,
            accept4,
            getsockname,
            getpeername,
            sendmsg,
            recvmsg,
        ]
        .into_iter()
        .collect();
        let with_addr = Rule::UnlessArgZero { arg: 4 };
        s.insert_rule(sendto, with_addr);
        s.insert_rule(recvfrom, with_addr);
        s
    }

    /// Whether this layer serves `nr`.
    pub fn serves(nr: Sysno) -> bool {
        use Sysno::*;
        matches!(
            nr,
            connect
                | bind
                | listen
                | accept
                | accept4
                | getsockname
                | getpeername
                | sendto
                | sendmsg
                | recvfrom
                | recvmsg
        )
    }

    /// A process ended: drop its pidfd.
    pub fn on_exit(&mut self, tid: Pid, tgid: Pid) {
        if tid == tgid {
            self.pidfds.remove(&tgid);
        }
    }

    /// The tracer's own descriptor of the job's socket `fd`.
    fn dup(&mut self, pid: Pid, fd: u64) -> Result<OwnedFd, Errno> {
        let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
        let pidfd = match self.pidfds.entry(pid) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                // SAFETY: pidfd_open returns a new descriptor or -1.
                let p = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
                if p < 0 {
                    return Err(Errno::last());
                }
                // SAFETY: just returned by pidfd_open.
                v.insert(unsafe { OwnedFd::from_raw_fd(p as i32) })
            }
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(pidfd);
        // SAFETY: pidfd_getfd returns a new descriptor (with O_CLOEXEC) or -1.
        let d = unsafe { libc::syscall(libc::SYS_pidfd_getfd, raw, fd, 0) };
        if d < 0 {
            return Err(Errno::last());
        }
        // SAFETY: just returned by pidfd_getfd.
        Ok(unsafe { OwnedFd::from_raw_fd(d as i32) })
    }

    /// Serves a socket call; `Continue` for what stays native.
    pub fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        if self.relay.sweep_due() {
            // `close` is not stopped: what the job's processes hold says
            // which sockets are still open.
            if let Some(held) = held_sockets(&self.members.pids()) {
                self.relay.forget_closed(&held);
            }
        }
        let served = match stop.sysno() {
            Some(Sysno::connect) => self.connect(stop),
            Some(Sysno::bind) => self.bind(stop),
            Some(Sysno::listen) => self.listen(stop),
            Some(Sysno::accept | Sysno::accept4) => {
                Ok(self.watch_if(stop, |s| s.kind == Kind::Stream && s.home.is_some()))
            }
            Some(Sysno::getsockname) => Ok(self.name(stop, |s| s.local.clone())),
            Some(Sysno::getpeername) => Ok(self.name(stop, |s| s.peer.clone())),
            Some(Sysno::sendto) => {
                let (ptr, len) = (stop.arg(4), stop.arg(5));
                self.send_to(stop, ptr, len).map(|rewrite| match rewrite {
                    Some(raw) => match stop.scratch_write(&raw) {
                        Ok(p) => {
                            stop.set_arg(4, p);
                            stop.set_arg(5, raw.len() as u64);
                            Action::Continue
                        }
                        Err(_) => Action::errno(Errno::ENOMEM),
                    },
                    None => Action::Continue,
                })
            }
            Some(Sysno::sendmsg) => self.sendmsg(stop),
            Some(Sysno::recvfrom | Sysno::recvmsg) => {
                Ok(self.watch_if(stop, |s| s.kind == Kind::Datagram && s.home.is_some()))
            }
            _ => Ok(Action::Continue),
        };
        served.unwrap_or_else(Action::errno)
    }

    fn watch_if(&self, stop: &SyscallStop<'_>, f: impl Fn(&JobSock) -> bool) -> Action {
        let ours = inode(stop.pid(), stop.arg(0))
            .and_then(|ino| self.relay.sock(ino))
            .is_some_and(|s| f(&s));
        if ours {
            Action::ContinueWatchExit
        } else {
            Action::Continue
        }
    }

    /// `getsockname`/`getpeername` of a relayed socket: central's view.
    fn name(&self, stop: &SyscallStop<'_>, pick: impl Fn(&JobSock) -> Option<Addr>) -> Action {
        let Some(s) = inode(stop.pid(), stop.arg(0)).and_then(|ino| self.relay.sock(ino)) else {
            return Action::Continue;
        };
        let Some(a) = pick(&s) else {
            return Action::Continue;
        };
        if write_sockaddr(stop.memory(), stop.arg(1), stop.arg(2), &a, s.family) {
            Action::Return(0)
        } else {
            Action::errno(Errno::EFAULT)
        }
    }

    /// The address argument at (`ptr`, `len`) and the job socket `fd` it
    /// applies to, when the relay handles the pair: (inode, descriptor,
    /// family, type, address).
    fn target(
        &mut self,
        stop: &SyscallStop<'_>,
        ptr: u64,
        len: u64,
    ) -> Option<(u64, OwnedFd, i32, i32, Addr)> {
        let raw = read_sockaddr(stop.memory(), ptr, len)?;
        let Some(Parsed::Addr(a)) = addr::parse(&raw) else {
            return None;
        };
        let ino = inode(stop.pid(), stop.arg(0))?;
        let dup = match self.dup(stop.pid(), stop.arg(0)) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("cannot reach a job socket (pidfd_getfd: {e}): left native");
                return None;
            }
        };
        let (family, ty) = addr::domain_and_type(dup.as_fd()).ok()?;
        let fits = match &a {
            Addr::Inet(_) => is_inet(family),
            // Unix paths: streams only (see docs/network.md).
            Addr::Unix(_) => family == libc::AF_UNIX && ty == libc::SOCK_STREAM,
        };
        let known = ty == libc::SOCK_STREAM || ty == libc::SOCK_DGRAM;
        (fits && known).then_some((ino, dup, family, ty, a))
    }

    fn connect(&mut self, stop: &mut SyscallStop<'_>) -> Served {
        let raw = read_sockaddr(stop.memory(), stop.arg(1), stop.arg(2));
        if raw.and_then(|r| addr::parse(&r)) == Some(Parsed::Unspec) {
            // A datagram socket's disconnect (native): it has no peer now.
            if let Some(ino) = inode(stop.pid(), stop.arg(0)) {
                if let Some(mut s) = self.relay.sock(ino).filter(|s| s.kind == Kind::Datagram) {
                    s.peer = None;
                    self.relay.set_sock(ino, s);
                }
            }
            return Ok(Action::Continue);
        }
        let Some((ino, dup, family, ty, to)) = self.target(stop, stop.arg(1), stop.arg(2)) else {
            return Ok(Action::Continue);
        };
        if ty == libc::SOCK_DGRAM {
            let sock = self.ensure_datagram(ino, family, &dup)?;
            let at = self.relay.udp_relay(sock, &to).map_err(errno)?;
            let r = addr::connect(dup.as_fd(), &Addr::Inet(at));
            if r.is_ok() {
                if let Some(mut s) = self.relay.sock(ino) {
                    s.peer = Some(to);
                    self.relay.set_sock(ino, s);
                }
            }
            return Ok(result(r));
        }
        let mut entry = self
            .relay
            .sock(ino)
            .unwrap_or_else(|| JobSock::new(family, Kind::Stream));
        if entry.peer.is_some() {
            // Connected or connecting: the kernel answers EISCONN/EALREADY.
            return Ok(Action::Continue);
        }
        self.relay.set_sock(ino, entry.clone());
        // A socket the job bound connects from its central twin.
        let c = self
            .relay
            .connect(ino, family, entry.home, to.clone())
            .map_err(errno)?;
        match c.result.recv_timeout(CONNECT_WAIT) {
            Ok(Err(e)) => return Err(errno(e)),
            Ok(Ok((local, peer))) => {
                entry.local = Some(local);
                entry.peer = Some(peer);
            }
            Err(_) => {
                log::info!("connect to {to:?}: central is slow to answer; connecting anyway");
                entry.peer = Some(addr::for_family(&to, family));
            }
        }
        let r = addr::connect_raw(dup.as_fd(), &c.target);
        if matches!(r, Ok(()) | Err(libc::EINPROGRESS)) {
            let from = match addr::local_of(dup.as_fd()) {
                Ok(Parsed::Addr(a)) => addr::encode(&a),
                _ => Vec::new(),
            };
            let _ = c.from.send(from);
            // The relay may have learnt the local address meanwhile.
            if let Some(now) = self.relay.sock(ino) {
                entry.local = entry.local.or(now.local);
            }
            self.relay.set_sock(ino, entry);
        }
        Ok(result(r))
    }

    /// The central datagram socket of job socket `ino`, bound on central
    /// (to any address) and on the node (to loopback) on first use.
    fn ensure_datagram(&mut self, ino: u64, family: i32, dup: &OwnedFd) -> Result<u64, Errno> {
        if let Some(sock) = self.relay.sock(ino).and_then(|s| s.home) {
            return Ok(sock);
        }
        let at = Addr::Inet(addr::unspecified(family));
        self.bind_central(ino, family, Kind::Datagram, dup, at)
            .map(|s| s.home.unwrap_or_default())
    }

    /// Binds the central socket standing for job socket `ino` at `at`, and
    /// the job's socket on the node where the relay reaches it.
    fn bind_central(
        &mut self,
        ino: u64,
        family: i32,
        kind: Kind,
        dup: &OwnedFd,
        at: Addr,
    ) -> Result<JobSock, Errno> {
        let reuse = addr::int_option(dup.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR)
            .is_ok_and(|v| v != 0);
        let (sock, local) = match self.relay.bind_home(kind, family, at.clone(), reuse) {
            // A port the job closed on the node may still be held on
            // central (close is not stopped): free those, then retry.
            Err(libc::EADDRINUSE) if self.relay.reap_closed_binds() => {
                self.relay.bind_home(kind, family, at, reuse)
            }
            other => other,
        }
        .map_err(errno)?;
        let node = self.relay.node_bind_address(family);
        addr::bind_raw(dup.as_fd(), &node).map_err(errno)?;
        let node = match addr::local_of(dup.as_fd()) {
            Ok(Parsed::Addr(a)) => addr::encode(&a),
            _ => node,
        };
        if kind == Kind::Datagram {
            if let Some(at) = addr::parse(&node).and_then(|p| inet_of(Ok(p))) {
                self.relay.set_udp_owner(sock, family, at);
            }
        }
        let mut s = self
            .relay
            .sock(ino)
            .unwrap_or_else(|| JobSock::new(family, kind));
        s.home = Some(sock);
        s.local = Some(local);
        s.node = Some(node);
        self.relay.set_sock(ino, s.clone());
        Ok(s)
    }

    fn bind(&mut self, stop: &mut SyscallStop<'_>) -> Served {
        let Some((ino, dup, family, ty, at)) = self.target(stop, stop.arg(1), stop.arg(2)) else {
            return Ok(Action::Continue);
        };
        if self.relay.sock(ino).is_some_and(|s| s.home.is_some()) {
            return Err(Errno::EINVAL);
        }
        let kind = if ty == libc::SOCK_STREAM {
            Kind::Stream
        } else {
            Kind::Datagram
        };
        self.bind_central(ino, family, kind, &dup, at)?;
        Ok(Action::Return(0))
    }

    fn listen(&mut self, stop: &mut SyscallStop<'_>) -> Served {
        let pid = stop.pid();
        let Some(ino) = inode(pid, stop.arg(0)) else {
            return Ok(Action::Continue);
        };
        let known = self.relay.sock(ino);
        if known.as_ref().is_some_and(|s| s.kind != Kind::Stream) {
            return Ok(Action::Continue);
        }
        let Ok(dup) = self.dup(pid, stop.arg(0)) else {
            return Ok(Action::Continue);
        };
        let Ok((family, libc::SOCK_STREAM)) = addr::domain_and_type(dup.as_fd()) else {
            return Ok(Action::Continue);
        };
        let s = match known {
            Some(s) if s.home.is_some() => s,
            // listen() without bind(): an ephemeral port, on central.
            _ if is_inet(family) => {
                let at = Addr::Inet(addr::unspecified(family));
                self.bind_central(ino, family, Kind::Stream, &dup, at)?
            }
            _ => return Ok(Action::Continue),
        };
        let (Some(sock), Some(node), Some(local)) = (s.home, s.node, s.local) else {
            return Ok(Action::Continue);
        };
        let backlog = stop.arg(1) as i32;
        // Listening on the node first: central's connections may arrive
        // as soon as central listens.
        addr::listen(dup.as_fd(), backlog).map_err(errno)?;
        self.relay
            .listen_home(sock, family, node, local, backlog)
            .map_err(errno)?;
        Ok(Action::Return(0))
    }

    /// `sendto`/`sendmsg` with a destination on a relayed datagram
    /// socket: the raw address of the relay to send to instead.
    fn send_to(
        &mut self,
        stop: &SyscallStop<'_>,
        ptr: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, Errno> {
        let Some((ino, dup, family, ty, to)) = self.target(stop, ptr, len) else {
            return Ok(None);
        };
        if ty != libc::SOCK_DGRAM || !is_inet(family) {
            return Ok(None);
        }
        let sock = self.ensure_datagram(ino, family, &dup)?;
        let at = self.relay.udp_relay(sock, &to).map_err(errno)?;
        Ok(Some(addr::encode(&Addr::Inet(at))))
    }

    fn sendmsg(&mut self, stop: &mut SyscallStop<'_>) -> Served {
        let Ok(hdr) = stop.memory().read_bytes(stop.arg(1), MSGHDR_SIZE) else {
            return Ok(Action::Continue);
        };
        let name = u64::from_ne_bytes(hdr[0..8].try_into().unwrap_or_default());
        let namelen = u32::from_ne_bytes(hdr[8..12].try_into().unwrap_or_default());
        let Some(raw) = self.send_to(stop, name, u64::from(namelen))? else {
            return Ok(Action::Continue);
        };
        // A copy of the header naming the relay, in scratch memory the job
        // cannot change.
        let Ok(at) = stop.scratch_write(&raw) else {
            return Err(Errno::ENOMEM);
        };
        let mut copy = hdr;
        copy[0..8].copy_from_slice(&at.to_ne_bytes());
        copy[8..12].copy_from_slice(&(raw.len() as u32).to_ne_bytes());
        let Ok(h) = stop.scratch_write(&copy) else {
            return Err(Errno::ENOMEM);
        };
        stop.set_arg(1, h);
        Ok(Action::Continue)
    }

    /// At the exit of a watched call: central's addresses in place of the
    /// relay's.
    pub fn handle_exit(&mut self, exit: &mut SyscallExit<'_>) {
        let ret = exit.ret();
        if ret < 0 {
            return;
        }
        match exit.sysno() {
            Some(Sysno::accept | Sysno::accept4) => self.accepted(exit, ret as u64),
            Some(Sysno::recvfrom) => {
                let (ptr, lenp) = (exit.arg(4), exit.arg(5));
                self.translate_source(exit, ptr, lenp);
            }
            Some(Sysno::recvmsg) => {
                let hdr = exit.arg(1);
                if let Ok(name) = exit.memory().read_value::<u64>(hdr) {
                    self.translate_source(exit, name, hdr + 8);
                }
            }
            _ => {}
        }
    }

    fn accepted(&mut self, exit: &SyscallExit<'_>, fd: u64) {
        let pid = exit.pid();
        let Some(listener) = inode(pid, exit.arg(0)).and_then(|i| self.relay.sock(i)) else {
            return;
        };
        let (Some(ino), Ok(dup)) = (inode(pid, fd), self.dup(pid, fd)) else {
            return;
        };
        let from = inet_of(addr::peer_of(dup.as_fd()));
        let peer = from.and_then(|a| self.relay.central_name(&a));
        let mut s = JobSock::new(listener.family, Kind::Stream);
        s.local = self.relay.accepted_local(from.as_ref(), listener.home);
        s.peer = peer.clone();
        self.relay.set_sock(ino, s);
        if let Some(p) = peer {
            let _ = write_sockaddr(exit.memory(), exit.arg(1), exit.arg(2), &p, listener.family);
        }
    }

    fn translate_source(&self, exit: &SyscallExit<'_>, ptr: u64, lenp: u64) {
        if ptr == 0 || lenp == 0 {
            return;
        }
        let mem = exit.memory();
        let Ok(len) = mem.read_value::<u32>(lenp) else {
            return;
        };
        let Some(raw) = read_sockaddr(mem, ptr, u64::from(len)) else {
            return;
        };
        let Some(Parsed::Addr(Addr::Inet(node))) = addr::parse(&raw) else {
            return;
        };
        let Some(central) = self.relay.central_name(&node) else {
            return;
        };
        let family = if node.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        // Same family as the relay's address, so the same length.
        let _ = write_sockaddr(mem, ptr, lenp, &central, family);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer::ProcMemory;

    /// This process's own memory, through the same calls as a tracee's.
    fn own() -> ProcMemory {
        ProcMemory::new(Pid::this())
    }

    #[test]
    fn held_sockets_are_those_a_process_has_open() {
        use std::os::fd::AsRawFd;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = inode(Pid::this(), sock.as_raw_fd() as u64).unwrap();
        let held = held_sockets(&[Pid::this()]).unwrap();
        assert!(held.contains(&ino));
        drop(sock);
        assert!(!held_sockets(&[Pid::this()]).unwrap().contains(&ino));
        // A process that is gone holds nothing, and is no error.
        assert_eq!(
            held_sockets(&[Pid::from_raw(i32::MAX)]),
            Some(Default::default())
        );
    }

    #[test]
    fn result_addresses_are_cut_to_the_callers_room_and_report_their_length() {
        let a = Addr::Inet("10.1.2.3:8080".parse().unwrap());
        let mut buf = [0xffu8; 128];
        let mut len: u32 = 8;
        let ok = write_sockaddr(
            &own(),
            buf.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            &a,
            libc::AF_INET,
        );
        assert!(ok);
        let full = addr::encode(&a);
        assert_eq!(
            len as usize,
            full.len(),
            "the full length, as the kernel reports it"
        );
        assert_eq!(&buf[..8], &full[..8]);
        assert_eq!(buf[8], 0xff, "nothing written past the caller's room");
        // An IPv6 socket sees an IPv4 peer v4-mapped.
        let mut len6: u32 = 128;
        assert!(write_sockaddr(
            &own(),
            buf.as_mut_ptr() as u64,
            &mut len6 as *mut u32 as u64,
            &a,
            libc::AF_INET6,
        ));
        assert_eq!(len6, 28);
        assert_eq!(
            addr::parse(&buf[..28]),
            Some(Parsed::Addr(Addr::Inet(
                "[::ffff:10.1.2.3]:8080".parse().unwrap()
            )))
        );
    }

    #[test]
    fn sockets_are_named_by_inode() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s) as u64;
        let ino = inode(Pid::this(), fd).unwrap();
        let dup = s.try_clone().unwrap();
        let dfd = std::os::fd::AsRawFd::as_raw_fd(&dup) as u64;
        assert_eq!(
            inode(Pid::this(), dfd),
            Some(ino),
            "a dup is the same socket"
        );
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let ffd = std::os::fd::AsRawFd::as_raw_fd(&f) as u64;
        assert_eq!(inode(Pid::this(), ffd), None, "a file is not a socket");
    }
}
