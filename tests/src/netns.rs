//! Network namespaces for integration tests (root only): each daemon of a
//! test cluster gets its own network stack, joined to the others by veth
//! pairs, so addresses, routes, firewall rules and faults exist only inside
//! namespaces the test made and vanish with it.
//!
//! - [`Netns`]: one uniquely named namespace (`ip netns add`), `lo` up; its
//!   drop kills every process still inside and deletes it.
//! - [`Link`]: a veth pair between two namespaces.
//! - [`Cluster`]: central plus N nodes, each node on its own /24 link to
//!   central, and an address only central can reach.
//! - [`Daemon`]: a process started in a namespace with its output in files,
//!   killed on drop.
//! - [`MountView`]: a private mount namespace that hides paths (for nodes
//!   that must not see central's files).
//!
//! Processes enter a namespace by `setns` in the forked child before exec,
//! not through `ip netns exec`, so a [`Daemon`]'s pid is the program itself
//! and signals reach it directly. Threads enter by `setns` too, in a thread
//! of their own ([`Netns::run`]): `setns` changes only the calling thread,
//! and a socket stays in the namespace it was created in, so a socket made
//! by `run` can be used from any thread afterwards.

mod cluster;
mod daemon;
mod mounts;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use cluster::{Cluster, ClusterNode, NODE_IFACE};
pub use daemon::Daemon;
pub use mounts::MountView;

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// nftables table that holds the fault rules of a namespace.
const FAULT_TABLE: &str = "diatom_faults";

/// Everything that can go wrong while building or driving test namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A helper program (`ip`, `nft`, ...) could not be started: is it
    /// installed (packages iproute2, nftables)?
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// A helper command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file operation on a namespace handle or log file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// `setns` into the namespace failed.
    #[error("setns into {ns}: {source}")]
    Setns {
        /// The namespace.
        ns: String,
        /// Why.
        source: nix::Error,
    },
    /// The closure given to [`Netns::run`] panicked.
    #[error("thread in namespace {0} panicked")]
    Panicked(String),
    /// An argument the harness cannot use (a percentage above 100, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Io { what, source }
}

/// Runs `cmd` to completion and returns its stdout, or an error carrying its
/// stderr when it fails.
pub fn run_checked(cmd: &mut Command) -> Result<String, NetnsError> {
    let line = format!("{cmd:?}");
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            program: format!("{:?}", cmd.get_program()),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run_checked(Command::new("ip").args(args))
}

/// One network namespace made by a test. See the module docs.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// An open handle: what `setns` takes, and what keeps the inode number
    /// stable for [`pids`](Netns::pids).
    handle: Arc<OwnedFd>,
    ino: u64,
}

impl Netns {
    /// Creates a namespace named `diatom-<prefix>-<pid>-<n>` with `lo` up.
    pub fn new(prefix: &str) -> Result<Netns, NetnsError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "diatom-{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // A leftover of a crashed run with a reused pid would make `add` fail.
        if Path::new(NETNS_RUN_DIR).join(&name).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
        ip(&["netns", "add", &name])?;
        let path = Path::new(NETNS_RUN_DIR).join(&name);
        let opened = File::open(&path)
            .and_then(|f| Ok((f.metadata()?.ino(), f)))
            .map_err(io_err(format!("open {}", path.display())));
        let (ino, file) = match opened {
            Ok(v) => v,
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(e);
            }
        };
        let ns = Netns {
            name,
            handle: Arc::new(OwnedFd::from(file)),
            ino,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Adds `cidr` (e.g. `10.1.2.1/24`) to `iface`.
    pub fn add_addr(&self, iface: &str, cidr: &str) -> Result<(), NetnsError> {
        self.ip(&["addr", "add", cidr, "dev", iface]).map(drop)
    }

    /// A command that runs `program` inside this namespace. Everything else
    /// (mounts, user, environment) is the test process's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let handle = self.handle.clone();
        // SAFETY: the closure runs between fork and exec and only makes the
        // setns system call on a descriptor opened before the fork.
        unsafe {
            cmd.pre_exec(move || enter_netns_raw(&handle));
        }
        cmd
    }

    /// A command that runs `program` inside this namespace and in a private
    /// mount namespace arranged as `view` says.
    pub fn command_with_mounts(&self, program: impl AsRef<OsStr>, view: &MountView) -> Command {
        let mut cmd = self.command(program);
        view.apply_to(&mut cmd);
        cmd
    }

    /// Runs a command inside the namespace to completion, returning stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, NetnsError> {
        run_checked(self.command(program).args(args))
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its result. Sockets `f` creates belong to this namespace.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, NetnsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&*self.handle, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetnsError::Setns {
                        ns: self.name.clone(),
                        source,
                    }
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked(self.name.clone()))?
        })
    }

    /// A UDP socket of this namespace bound to `addr`.
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket, NetnsError> {
        self.run(|| UdpSocket::bind(addr))?
            .map_err(io_err(format!("bind {addr} in {}", self.name)))
    }

    /// A UDP socket of this namespace bound to `addr` with SO_REUSEADDR,
    /// so several may share a port (the design's one-port layout).
    pub fn udp_bind_reuseaddr(&self, addr: SocketAddrV4) -> Result<UdpSocket, NetnsError> {
        self.run(|| udp_reuseaddr(addr))?.map_err(io_err(format!(
            "bind {addr} (SO_REUSEADDR) in {}",
            self.name
        )))
    }

    /// Starts `cmd` (made by [`command`](Self::command)) as a daemon named
    /// `name` whose stdout and stderr go to `<log_dir>/<name>.stdout` and
    /// `.stderr`. It is killed when the [`Daemon`] drops.
    pub fn spawn_daemon(
        &self,
        name: &str,
        cmd: Command,
        log_dir: &Path,
    ) -> Result<Daemon, NetnsError> {
        Daemon::spawn(name, cmd, log_dir)
    }

    /// Kills a daemon (SIGKILL) and reaps it.
    pub fn kill(&self, daemon: &mut Daemon) -> Result<(), NetnsError> {
        daemon.kill()
    }

    /// Sets `iface` down: the link stops carrying packets both ways.
    pub fn link_down(&self, iface: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", iface, "down"]).map(drop)
    }

    /// Sets `iface` up again.
    pub fn link_up(&self, iface: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", iface, "up"]).map(drop)
    }

    /// Drops `percent`% of the packets entering and leaving this namespace
    /// through `iface`, at random, each direction independently. Replaces
    /// an earlier rule on the same interface and direction.
    ///
    /// The rules sit on the device's netdev ingress and egress hooks, not
    /// the inet input/output hooks: a packet dropped on output makes the
    /// sender's `sendto` fail with EPERM, while one dropped at egress is lost
    /// silently, like on a real wire.
    pub fn nft_drop_percent(&self, iface: &str, percent: u8) -> Result<(), NetnsError> {
        self.nft_drop_percent_dir(iface, Direction::Both, percent)
    }

    /// Like [`nft_drop_percent`](Self::nft_drop_percent), for one direction.
    pub fn nft_drop_percent_dir(
        &self,
        iface: &str,
        dir: Direction,
        percent: u8,
    ) -> Result<(), NetnsError> {
        if percent > 100 {
            return Err(NetnsError::Invalid(format!("drop {percent}%")));
        }
        // The name goes into nft identifiers unquoted.
        if iface.is_empty() || !iface.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(NetnsError::Invalid(format!("interface name {iface:?}")));
        }
        // nft refuses `< 100` on a mod-100 value, and 0% needs no rule.
        let verdict = match percent {
            0 => None,
            100 => Some("drop".to_owned()),
            p => Some(format!("numgen random mod 100 < {p} drop")),
        };
        let mut script = format!("add table netdev {FAULT_TABLE}\n");
        let mut chain = |name: &str, hook: &str| {
            let chain = format!("netdev {FAULT_TABLE} {name}_{iface}");
            script.push_str(&format!(
                "add chain {chain} {{ type filter hook {hook} device \"{iface}\" priority 0; policy accept; }}\n\
                 flush chain {chain}\n"
            ));
            if let Some(v) = &verdict {
                script.push_str(&format!("add rule {chain} {v}\n"));
            }
        };
        if matches!(dir, Direction::In | Direction::Both) {
            chain("in", "ingress");
        }
        if matches!(dir, Direction::Out | Direction::Both) {
            chain("out", "egress");
        }
        self.nft_script(&script)
    }

    /// Removes every fault rule this harness added in the namespace.
    pub fn nft_clear(&self) -> Result<(), NetnsError> {
        // Adding first makes the delete succeed whether or not rules exist.
        self.nft_script(&format!(
            "add table netdev {FAULT_TABLE}\ndelete table netdev {FAULT_TABLE}\n"
        ))
    }

    /// Feeds `script` to `nft -f -` inside the namespace.
    fn nft_script(&self, script: &str) -> Result<(), NetnsError> {
        use std::io::Write;
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                program: "nft".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(io_err("write nft script"))?;
        }
        let out = child.wait_with_output().map_err(io_err("wait for nft"))?;
        if !out.status.success() {
            return Err(NetnsError::Command {
                command: format!("nft -f - <<'EOF'\n{script}EOF"),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// Processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<Pid> {
        let me = std::process::id();
        let want = format!("net:[{}]", self.ino);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|l| l.as_os_str() == want.as_str())
            })
            .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
            .collect()
    }

    /// The path of the namespace handle under `/run/netns`.
    pub fn handle_path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes not reaped by their parent stay as zombies, which hold no
        // namespace, so "no live pid left" is reached even then.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live: Vec<Pid> = self.pids().into_iter().filter(|p| !is_zombie(*p)).collect();
            if live.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in live {
                let _ = kill(p, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete network namespace {}: {e}", self.name);
        }
    }
}

fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        // The state follows the parenthesised command name, which may
        // itself contain parentheses: split at the last one.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X")
    })
}

/// Enters the namespace from a forked child. Async-signal-safe: one system
/// call, no allocation.
fn enter_netns_raw(handle: &OwnedFd) -> io::Result<()> {
    // SAFETY: a plain system call on a valid descriptor.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which packets a fault rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Entering the namespace through the interface.
    In,
    /// Leaving through it.
    Out,
    /// Both.
    Both,
}

/// A UDP socket bound to `addr` with SO_REUSEADDR, in the calling thread's
/// namespace.
pub fn udp_reuseaddr(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // nix's address types need its `net` feature, which the workspace does
    // not enable; the raw sockaddr_in is simple enough.
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(fd))
}

/// A veth pair: `a_if` in one namespace, `b_if` in the other, both up.
/// Deleted with either namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name on the first side.
    pub a_if: String,
    /// Interface name on the second side.
    pub b_if: String,
}

impl Link {
    /// Joins `a` and `b` with a veth pair, addresses `addr_a` and `addr_b`
    /// (CIDR, e.g. `10.3.1.1/24`), interfaces named `veth<n>`.
    pub fn veth(a: &Netns, b: &Netns, addr_a: &str, addr_b: &str) -> Result<Link, NetnsError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Link::veth_named(
            a,
            &format!("veth{n}a"),
            b,
            &format!("veth{n}b"),
            addr_a,
            addr_b,
        )
    }

    /// Like [`veth`](Self::veth) with chosen interface names (at most 15
    /// bytes; they need only be unique inside each namespace).
    pub fn veth_named(
        a: &Netns,
        a_if: &str,
        b: &Netns,
        b_if: &str,
        addr_a: &str,
        addr_b: &str,
    ) -> Result<Link, NetnsError> {
        // Created directly inside the two namespaces, so the names never
        // exist in the root namespace where parallel tests could clash.
        ip(&[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ])?;
        a.add_addr(a_if, addr_a)?;
        b.add_addr(b_if, addr_b)?;
        a.link_up(a_if)?;
        b.link_up(b_if)?;
        Ok(Link {
            a_if: a_if.to_owned(),
            b_if: b_if.to_owned(),
        })
    }
}
