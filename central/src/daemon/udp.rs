//! UDP sockets that share central's port.
//!
//! Central's endpoint and every job home's socket are bound to the same
//! address and port with SO_REUSEADDR; each home socket is connected to its
//! node's per-job address, and the kernel delivers a datagram to the socket
//! connected to its sender before the unconnected one (the harness's
//! `one_port` tests check this on the real kernel). So one port is all a
//! firewall has to open, and homes still talk to their nodes directly.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

fn reuse_socket(local: SocketAddr) -> io::Result<UdpSocket> {
    let family = if local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true)?;
    let addr = SockaddrStorage::from(local);
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    // SAFETY: `fd` is a fresh, owned UDP socket descriptor.
    Ok(unsafe { UdpSocket::from_raw_fd(fd.into_raw_fd()) })
}

/// Central's own endpoint socket, bound with SO_REUSEADDR so home sockets
/// may share its port. SO_REUSEADDR would as well let a second central
/// bind the same address and take the first one's datagrams, so central
/// also claims the address ([`claim`]): a second central's claim fails with
/// `AddrInUse`. (A plain bind cannot tell: the home sockets of jobs that
/// outlive a central restart hold the address too.)
pub fn bind_shared(local: SocketAddr) -> io::Result<UdpSocket> {
    let sock = reuse_socket(local)?;
    claim(sock.local_addr()?)?;
    Ok(sock)
}

/// Claims `addr` for this process until it exits: binds the abstract Unix
/// socket `diatom-central/ADDR` (abstract names are per network
/// namespace, as UDP ports are; the kernel frees the name when the
/// process dies, even killed).
fn claim(addr: SocketAddr) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    static HELD: std::sync::Mutex<Vec<std::os::unix::net::UnixDatagram>> =
        std::sync::Mutex::new(Vec::new());
    let name =
        std::os::unix::net::SocketAddr::from_abstract_name(format!("diatom-central/{addr}"))?;
    let held = std::os::unix::net::UnixDatagram::bind_addr(&name)?;
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(held);
    Ok(())
}

/// A home's socket: the same local address as central's endpoint,
/// connected to the node's per-job address.
pub fn home_socket(central: SocketAddr, node: SocketAddr) -> io::Result<UdpSocket> {
    let s = reuse_socket(central)?;
    s.connect(node)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_central_on_the_same_address_is_refused() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = first.local_addr().unwrap();
        assert_ne!(at.port(), 0);
        let second = bind_shared(at).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        // Its homes still share the port, and a home socket alone (a job
        // running across a restart of central) does not stop a central.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _home = home_socket(at, peer.local_addr().unwrap()).unwrap();
        let alone = reuse_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let free = alone.local_addr().unwrap();
        let _home = home_socket(free, peer.local_addr().unwrap()).unwrap();
        drop(alone);
        bind_shared(free).unwrap();
    }

    #[test]
    fn a_connected_socket_gets_its_peers_datagrams() {
        let main = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = main.local_addr().unwrap();
        let peer_a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let home = home_socket(local, peer_a.local_addr().unwrap()).unwrap();
        peer_a.send_to(b"a", local).unwrap();
        peer_b.send_to(b"b", local).unwrap();
        let mut buf = [0u8; 8];
        home.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        main.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        assert_eq!(home.recv(&mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"a");
        let (n, from) = main.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"b"[..], peer_b.local_addr().unwrap()));
    }
}
