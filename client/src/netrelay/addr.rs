//! Socket addresses as the kernel lays them out in a tracee's memory
//! (`sockaddr_in`, `sockaddr_in6`, `sockaddr_un`) and as the protocol
//! carries them ([`Addr`]), plus the few raw socket calls the relays make
//! on descriptors (bind, connect, getsockname, getsockopt) that std does
//! not offer for a descriptor it did not create.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use dscp_dicp::msg::net::Addr;
use dscp_dicp::msg::Blob;

/// Largest socket address the relays read from a tracee
/// (`sizeof(struct sockaddr_storage)`).
pub const SOCKADDR_MAX: usize = 128;

const SUN_PATH_MAX: usize = 108;

/// What a raw socket address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An address the relays handle.
    Addr(Addr),
    /// `AF_UNSPEC` (a datagram socket's disconnect).
    Unspec,
    /// An abstract unix address or a family the relays leave alone.
    Other,
}

fn family_of(b: &[u8]) -> Option<i32> {
    let f = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    Some(i32::from(f))
}

/// Decodes a raw socket address of `b.len()` bytes (the `addrlen` the
/// program passed, already capped at [`SOCKADDR_MAX`]). `None`: too short
/// for its family (the kernel would say `EINVAL`).
pub fn parse(b: &[u8]) -> Option<Parsed> {
    match family_of(b)? {
        libc::AF_UNSPEC => Some(Parsed::Unspec),
        libc::AF_INET => {
            let b: &[u8; 16] = b.get(..16)?.try_into().ok()?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(Parsed::Addr(Addr::Inet(SocketAddr::V4(SocketAddrV4::new(
                ip, port,
            )))))
        }
        libc::AF_INET6 => {
            let b: &[u8; 28] = b.get(..28)?.try_into().ok()?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let ip: [u8; 16] = b[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Some(Parsed::Addr(Addr::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))))
        }
        libc::AF_UNIX => {
            let path = b.get(2..).unwrap_or_default();
            match path.first() {
                // Unnamed (autobind) or abstract: node-local by design.
                None | Some(0) => Some(Parsed::Other),
                Some(_) => {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    Some(Parsed::Addr(Addr::Unix(Blob(path[..end].to_vec()))))
                }
            }
        }
        _ => Some(Parsed::Other),
    }
}

/// Encodes an address as the kernel would write it. A unix path too long
/// for `sun_path` is cut (the kernel's own `getsockname` cannot return
/// more either).
pub fn encode(a: &Addr) -> Vec<u8> {
    match a {
        Addr::Inet(SocketAddr::V4(v4)) => {
            let mut b = vec![0u8; 16];
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            b
        }
        Addr::Inet(SocketAddr::V6(v6)) => {
            let mut b = vec![0u8; 28];
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            b[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            b
        }
        Addr::Unix(path) => {
            let n = path.len().min(SUN_PATH_MAX - 1);
            let mut b = Vec::with_capacity(2 + n + 1);
            b.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
            b.extend_from_slice(&path[..n]);
            b.push(0);
            b
        }
    }
}

/// `addr` of the same family as a socket of `family`: an IPv6 socket sees
/// IPv4 peers as v4-mapped addresses, as the kernel reports them.
pub fn for_family(addr: &Addr, family: i32) -> Addr {
    match addr {
        Addr::Inet(SocketAddr::V4(v4)) if family == libc::AF_INET6 => Addr::Inet(SocketAddr::V6(
            SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        )),
        Addr::Inet(SocketAddr::V6(v6)) if family == libc::AF_INET => {
            match v6.ip().to_ipv4_mapped() {
                Some(ip) => Addr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, v6.port()))),
                None => addr.clone(),
            }
        }
        _ => addr.clone(),
    }
}

/// The loopback address (port 0) for a relay socket of `family`.
pub fn loopback(family: i32) -> SocketAddr {
    if family == libc::AF_INET6 {
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }
}

/// The wildcard address (port 0) of `family`, for a central socket the job
/// did not bind itself.
pub fn unspecified(family: i32) -> SocketAddr {
    if family == libc::AF_INET6 {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    }
}

fn errno_of(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// An abstract unix-domain address (`sun_path` starting with NUL): the
/// node-local names of the relay's unix sockets, which exist only in the
/// job's network namespace and leave no file behind.
pub fn abstract_unix(name: &[u8]) -> Vec<u8> {
    let n = name.len().min(SUN_PATH_MAX - 1);
    let mut b = Vec::with_capacity(3 + n);
    b.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    b.push(0);
    b.extend_from_slice(&name[..n]);
    b
}

/// `bind(fd, raw)` with a raw socket address; `Err` is the errno.
pub fn bind_raw(fd: BorrowedFd<'_>, raw: &[u8]) -> Result<(), i32> {
    // SAFETY: `raw` is a socket address of `raw.len()` bytes.
    errno_of(unsafe { libc::bind(fd.as_raw_fd(), raw.as_ptr().cast(), raw.len() as u32) })
}

/// `connect(fd, raw)`; `Err` is the errno (`EINPROGRESS` for a
/// non-blocking socket whose connection is under way).
pub fn connect_raw(fd: BorrowedFd<'_>, raw: &[u8]) -> Result<(), i32> {
    // SAFETY: as in `bind_raw`.
    errno_of(unsafe { libc::connect(fd.as_raw_fd(), raw.as_ptr().cast(), raw.len() as u32) })
}

/// `bind(fd, addr)`.
pub fn bind(fd: BorrowedFd<'_>, addr: &Addr) -> Result<(), i32> {
    bind_raw(fd, &encode(addr))
}

/// `connect(fd, addr)`.
pub fn connect(fd: BorrowedFd<'_>, addr: &Addr) -> Result<(), i32> {
    connect_raw(fd, &encode(addr))
}

/// The pid of the process that connected a unix-domain socket
/// (`SO_PEERCRED`).
pub fn peer_pid(fd: BorrowedFd<'_>) -> Result<i32, i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes one `ucred`.
    errno_of(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.pid)
}

/// A new socket of `family` and `ty` (`SOCK_STREAM`, `SOCK_DGRAM`), with
/// `SOCK_CLOEXEC`, in the calling thread's network namespace.
pub fn socket(family: i32, ty: i32) -> Result<OwnedFd, i32> {
    // SAFETY: plain call; a non-negative result is a descriptor we own.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    errno_of(fd)?;
    // SAFETY: `fd` was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `listen(fd, backlog)`.
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<(), i32> {
    // SAFETY: plain call on a descriptor.
    errno_of(unsafe { libc::listen(fd.as_raw_fd(), backlog) })
}

fn name_of(
    fd: BorrowedFd<'_>,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> Result<Parsed, i32> {
    let mut buf = [0u8; SOCKADDR_MAX];
    let mut len = SOCKADDR_MAX as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf`.
    errno_of(unsafe { f(fd.as_raw_fd(), buf.as_mut_ptr().cast(), &mut len) })?;
    let len = (len as usize).min(SOCKADDR_MAX);
    parse(&buf[..len]).ok_or(libc::EINVAL)
}

/// `getsockname(fd)`.
pub fn local_of(fd: BorrowedFd<'_>) -> Result<Parsed, i32> {
    name_of(fd, libc::getsockname)
}

/// `getpeername(fd)`.
pub fn peer_of(fd: BorrowedFd<'_>) -> Result<Parsed, i32> {
    name_of(fd, libc::getpeername)
}

/// An `int` socket option.
pub fn int_option(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32, i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes one int.
    errno_of(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// Sets an `int` socket option.
pub fn set_int_option(fd: BorrowedFd<'_>, level: i32, name: i32, v: i32) -> Result<(), i32> {
    // SAFETY: setsockopt reads one int.
    errno_of(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// `SO_DOMAIN` and `SO_TYPE` (without flags) of a socket.
pub fn domain_and_type(fd: BorrowedFd<'_>) -> Result<(i32, i32), i32> {
    Ok((
        int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> Addr {
        Addr::Inet(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn inet_round_trips() {
        for s in ["10.1.2.3:80", "0.0.0.0:0", "[::1]:5353", "[fe80::1%3]:22"] {
            let a = inet(s);
            assert_eq!(parse(&encode(&a)), Some(Parsed::Addr(a)), "{s}");
        }
    }

    #[test]
    fn unix_paths_and_abstract() {
        let a = Addr::Unix(Blob(b"/run/x.sock".to_vec()));
        let raw = encode(&a);
        assert_eq!(raw.len(), 2 + 11 + 1);
        assert_eq!(parse(&raw), Some(Parsed::Addr(a.clone())));
        // The kernel accepts a path without its NUL and a longer addrlen.
        let mut padded = raw[..raw.len() - 1].to_vec();
        assert_eq!(parse(&padded), Some(Parsed::Addr(a.clone())));
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(parse(&padded), Some(Parsed::Addr(a)));
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0hidden");
        assert_eq!(parse(&abs), Some(Parsed::Other));
    }

    #[test]
    fn short_and_foreign_addresses() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&encode(&inet("1.2.3.4:5"))[..15]), None);
        assert_eq!(parse(&encode(&inet("[::2]:5"))[..27]), None);
        let unspec = (libc::AF_UNSPEC as u16).to_ne_bytes();
        assert_eq!(parse(&unspec), Some(Parsed::Unspec));
        let netlink = (libc::AF_NETLINK as u16).to_ne_bytes();
        assert_eq!(parse(&netlink), Some(Parsed::Other));
    }

    #[test]
    fn v4_peers_of_v6_sockets_are_mapped() {
        let a = inet("10.0.0.7:53");
        assert_eq!(for_family(&a, libc::AF_INET6), inet("[::ffff:10.0.0.7]:53"));
        assert_eq!(for_family(&inet("[::ffff:10.0.0.7]:53"), libc::AF_INET), a);
        assert_eq!(for_family(&a, libc::AF_INET), a);
        assert_eq!(for_family(&inet("[::1]:1"), libc::AF_INET), inet("[::1]:1"));
    }

    #[test]
    fn calls_on_real_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&l);
        let local = local_of(fd).unwrap();
        assert_eq!(
            local,
            Parsed::Addr(Addr::Inet(l.local_addr().unwrap())),
            "getsockname"
        );
        assert_eq!(
            domain_and_type(fd).unwrap(),
            (libc::AF_INET, libc::SOCK_STREAM)
        );
        assert_eq!(peer_of(fd), Err(libc::ENOTCONN));
        assert_eq!(bind(fd, &inet("127.0.0.1:0")), Err(libc::EINVAL));
    }
}
