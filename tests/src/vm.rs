//! Diatom nodes as real virtual machines (root only): QEMU with TCG
//! emulation (`-accel tcg`; KVM is never used, it is not usable on these
//! machines), Debian's cloud kernel, and an initramfs holding nothing but
//! the static `diatom-client`, the cluster key, the kernel modules the
//! network card needs and `busybox` for a minimal `/init`. A VM shares
//! neither kernel nor file system with central, so a job that works there
//! needs nothing on its node but `diatom-client`.
//!
//! This module owns:
//! - [`VmCluster`]: a [`DiatomCluster`] whose nodes are VMs named `vm<i>`.
//!   Node `i`'s namespace of the cluster's address plan becomes a wire: its
//!   veth to central and a tap device are joined by a bridge there, and the
//!   VM on the tap takes the node's address (`10.K.i.2/24`, central being
//!   `10.K.i.1`). Each VM's serial console goes to `<test dir>/vm<i>.stdout`
//!   and is printed when a test fails. Dropping it kills the VMs, then the
//!   cluster (daemons, namespaces with their bridges and taps, directory).
//! - [`VmHost`]: what the host must have to boot one (QEMU, a kernel with
//!   its modules, a static busybox, the static `diatom-client`).
//! - [`Initramfs`]: a newc cpio archive written here, no `cpio` needed.
//!
//! Parameters that differ per VM (address, central, name, log level) go on
//! the kernel command line (`diatom.addr=...`), so one initramfs serves all
//! VMs of a cluster.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{show, tail, DiatomCluster, MARKER_VAR};
use crate::netns::{Daemon, NetnsError, NODE_IFACE};
use crate::{in_ci, static_client, static_elf};

/// The kernel modules a VM's network card needs, loaded with their
/// dependencies (from `modules.dep`) in this order.
pub const NET_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];
/// Memory of each VM: the job's cache lives in its RAM (tmpfs).
pub const VM_MEMORY_MIB: u32 = 1024;
/// How long [`VmCluster::start`] waits for a VM to boot and register.
/// TCG emulation on a loaded 2-core machine is slow: be generous.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Where the VM keeps the cluster key.
const VM_KEY: &str = "/etc/diatom/cluster.key";
/// The VM's node state directory (a tmpfs).
const VM_STATE: &str = "/var/lib/diatom/client";
/// The bridge and tap device in a node's namespace.
const BRIDGE: &str = "vmbr";
const TAP: &str = "vmtap";
/// How much of a console a failing test prints.
const CONSOLE_TAIL: usize = 6000;

/// Everything that can stop a VM from being built or booted.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Something the host must have is not there (a package to install).
    #[error("{what} not found ({hint})")]
    Missing {
        /// What is missing.
        what: String,
        /// Which package or build provides it.
        hint: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A module (or a module it depends on) is not in `modules.dep`.
    #[error("kernel module {module} is not listed in {dep_file}")]
    NoModule {
        /// The module's name or path.
        module: String,
        /// The `modules.dep` searched.
        dep_file: PathBuf,
    },
    /// A compressed module could not be decompressed.
    #[error("cannot decompress {path} with {tool}: {why}")]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// The decompressor run.
        tool: &'static str,
        /// What went wrong.
        why: String,
    },
    /// Building the VM's network (bridge, tap) failed.
    #[error(transparent)]
    Net(#[from] NetnsError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// What the host needs to boot a Diatom node as a VM.
#[derive(Debug, Clone)]
pub struct VmHost {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The kernel image (`/boot/vmlinuz-<release>`).
    pub kernel: PathBuf,
    /// Its release (`uname -r` inside the VM).
    pub release: String,
    /// `/lib/modules/<release>`.
    pub modules: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// The static `diatom-client`.
    pub client: PathBuf,
}

impl VmHost {
    /// Finds QEMU, a kernel whose modules include [`NET_MODULES`] (Debian's
    /// cloud kernel first), a static busybox and the static client. `None`
    /// (after saying why) when something is missing outside CI; in CI a
    /// missing piece panics, since a skipped test there is a failure.
    pub fn find(test: &str) -> Option<VmHost> {
        let client = static_client(test)?;
        match VmHost::find_with(client) {
            Ok(h) => Some(h),
            Err(e) => {
                let why = format!(
                    "{test}: cannot boot a VM: {e}; install qemu-system-x86, \
                     linux-image-cloud-amd64 and busybox-static"
                );
                assert!(!in_ci(), "{why}");
                eprintln!("skipping {why}");
                None
            }
        }
    }

    fn find_with(client: PathBuf) -> Result<VmHost, VmError> {
        static_elf(&client).map_err(|why| VmError::Missing {
            what: "a static diatom-client".into(),
            hint: why,
        })?;
        let qemu = find_in_path("qemu-system-x86_64").ok_or_else(|| VmError::Missing {
            what: "qemu-system-x86_64".into(),
            hint: "package qemu-system-x86".into(),
        })?;
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| static_elf(p).is_ok())
            .ok_or_else(|| VmError::Missing {
                what: "a static busybox".into(),
                hint: "package busybox-static".into(),
            })?;
        let (kernel, release) = find_kernel()?;
        Ok(VmHost {
            qemu,
            kernel,
            modules: Path::new("/lib/modules").join(&release),
            release,
            busybox,
            client,
        })
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The newest `/boot/vmlinuz-*` whose `/lib/modules/<release>/modules.dep`
/// lists the network modules; a cloud kernel wins over others (it boots
/// faster and is what the tests were measured with).
fn find_kernel() -> Result<(PathBuf, String), VmError> {
    let entries = std::fs::read_dir("/boot").map_err(io_err("read /boot"))?;
    let mut found: Vec<(bool, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .filter(|release| {
            let dep = Path::new("/lib/modules").join(release).join("modules.dep");
            std::fs::read_to_string(dep).is_ok_and(|d| {
                NET_MODULES
                    .iter()
                    .all(|m| d.lines().any(|l| module_path_name(l) == Some(m)))
            })
        })
        .map(|release| (release.contains("cloud"), release))
        .collect();
    found.sort();
    let (_, release) = found.pop().ok_or_else(|| VmError::Missing {
        what: "a kernel in /boot with virtio_net and virtio_pci modules".into(),
        hint: "package linux-image-cloud-amd64".into(),
    })?;
    Ok((
        Path::new("/boot").join(format!("vmlinuz-{release}")),
        release,
    ))
}

/// The module name of a `modules.dep` line or path (`kernel/x/virtio_net.ko.xz:
/// ...` gives `virtio_net`).
fn module_path_name(line: &str) -> Option<&str> {
    let path = line.split(':').next()?;
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (stem.len() < file.len()).then_some(stem)
}

/// The module files to load for `wanted`, dependencies first, each once,
/// as paths relative to `modules` (from its `modules.dep`, which lists a
/// module's dependencies so that the last one must be loaded first).
pub fn module_load_order(modules: &Path, wanted: &[&str]) -> Result<Vec<String>, VmError> {
    let dep_file = modules.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file)
        .map_err(io_err(format!("read {}", dep_file.display())))?;
    let deps_of = |path: &str| -> Option<Vec<String>> {
        text.lines().find_map(|l| {
            let (p, deps) = l.split_once(':')?;
            (p == path).then(|| deps.split_whitespace().map(str::to_owned).collect())
        })
    };
    let mut order: Vec<String> = Vec::new();
    for name in wanted {
        let path = text
            .lines()
            .find(|l| module_path_name(l) == Some(name))
            .and_then(|l| l.split(':').next())
            .ok_or_else(|| VmError::NoModule {
                module: (*name).to_owned(),
                dep_file: dep_file.clone(),
            })?
            .to_owned();
        let deps = deps_of(&path).unwrap_or_default();
        for p in deps.into_iter().rev().chain(std::iter::once(path)) {
            // modules.dep lists every indirect dependency too, so the
            // reversed list alone is a valid order.
            if deps_of(&p).is_none() {
                return Err(VmError::NoModule {
                    module: p,
                    dep_file: dep_file.clone(),
                });
            }
            if !order.contains(&p) {
                order.push(p);
            }
        }
    }
    Ok(order)
}

/// A module's bytes, decompressed when the distribution compresses modules
/// (busybox `insmod` loads plain ELF objects only).
fn module_bytes(path: &Path) -> Result<Vec<u8>, VmError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return std::fs::read(path).map_err(io_err(format!("read {}", path.display())));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Decompress {
            path: path.to_owned(),
            tool,
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Decompress {
            path: path.to_owned(),
            tool,
            why: format!("{}: {}", out.status, show(&out.stderr)),
        });
    }
    Ok(out.stdout)
}

/// A newc ("070701") cpio archive, the format the kernel unpacks as its
/// initramfs. Entries are written in order: a directory before what it
/// holds. Owner root, mtime 0.
#[derive(Debug, Default)]
pub struct Initramfs {
    buf: Vec<u8>,
    ino: u32,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let ino = self.ino;
        self.header_and_data(ino, name, mode, rdev, data);
    }

    fn header_and_data(&mut self, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let name = name.trim_start_matches('/');
        let namesize = name.len() + 1;
        let _ = write!(
            StrBuf(&mut self.buf),
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// A directory (`mode` like 0o755).
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, 0o040000 | (mode & 0o7777), (0, 0), &[]);
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(name, 0o100000 | (mode & 0o7777), (0, 0), data);
        self
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(name, 0o020000 | (mode & 0o7777), (major, minor), &[]);
        self
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.header_and_data(0, "TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// `fmt::Write` into a byte vector (the cpio header is ASCII).
struct StrBuf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for StrBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The VM's `/init`: busybox sh as PID 1. First it moves the system onto
/// a tmpfs and `switch_root`s there, as a real machine's initramfs hands
/// over to its root file system: the initramfs itself (rootfs) can never
/// be `pivot_root`ed away from, which the node's job sandbox does. Then it
/// mounts the kernel's file systems and a tmpfs for the node's state,
/// loads the network modules,
/// gives eth0 the address from the kernel command line, sets the host
/// name to the node's name (so a job that reported the node's host name
/// instead of central's would show it), then runs `diatom-client` and
/// powers off when it exits. Busybox applets are called by path: the VM
/// has no `/bin/sh` or other programs a job could pick up by mistake.
fn init_script(modules: &[String]) -> String {
    let mut insmods = String::new();
    for m in modules {
        let _ = writeln!(
            insmods,
            "$bb insmod /lib/modules/{m} || echo \"diatom-vm: insmod {m} failed\""
        );
    }
    format!(
        r#"#!/bin/busybox sh
bb=/bin/busybox
if [ ! -e /.on-tmpfs ]; then
  $bb mount -t tmpfs -o mode=0755 tmpfs /newroot
  $bb cp -a /bin /etc /lib /var /init /newroot/
  $bb mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/tmp
  $bb touch /newroot/.on-tmpfs
  exec $bb switch_root /newroot /init
fi
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs tmpfs /dev/shm
$bb mount -t tmpfs tmpfs /tmp
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb mount -t tmpfs -o mode=0700 tmpfs {VM_STATE}
{insmods}for a in $($bb cat /proc/cmdline); do
  case "$a" in
    diatom.addr=*) addr="${{a#*=}}" ;;
    diatom.central=*) central="${{a#*=}}" ;;
    diatom.name=*) name="${{a#*=}}" ;;
    diatom.log=*) log="${{a#*=}}" ;;
  esac
done
$bb hostname "$name"
$bb ip link set lo up
$bb ip addr add "$addr" dev eth0
$bb ip link set eth0 up
echo "diatom-vm: $name at $addr, kernel $($bb uname -r), starting diatom-client at $($bb cut -d' ' -f1 /proc/uptime) s"
DIATOM_LOG="$log" RUST_LOG_STYLE=never /bin/diatom-client --central "$central" --key {VM_KEY} --state-dir {VM_STATE} --name "$name"
echo "diatom-vm: diatom-client exited with status $?"
$bb poweroff -f
"#
    )
}

/// The static client without its debug information when binutils' `strip`
/// is at hand (a fifth of the size: less for the VM's kernel to unpack and
/// keep in RAM), as built otherwise. `scratch` holds the stripped copy.
fn client_bytes(client: &Path, scratch: &Path) -> Result<Vec<u8>, VmError> {
    let stripped = scratch.join("diatom-client.stripped");
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(client)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let from = if ok { stripped.as_path() } else { client };
    std::fs::read(from).map_err(io_err(format!("read {}", from.display())))
}

/// Builds the initramfs of a VM node: `/init`, busybox, the static
/// client, the key (mode 0600) and the modules, plus the mount points.
/// `scratch` is a directory for intermediate files.
pub fn build_initramfs(host: &VmHost, key: &Path, scratch: &Path) -> Result<Vec<u8>, VmError> {
    let order = module_load_order(&host.modules, &NET_MODULES)?;
    let read = |p: &Path| std::fs::read(p).map_err(io_err(format!("read {}", p.display())));
    let mut cpio = Initramfs::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "newroot",
        "etc",
        "etc/diatom",
        "var",
        "var/lib",
        "var/lib/diatom",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(d, 0o755);
    }
    cpio.dir(VM_STATE, 0o700)
        .char_dev("dev/console", 0o600, 5, 1)
        .file("bin/busybox", 0o755, &read(&host.busybox)?)
        .file(
            "bin/diatom-client",
            0o755,
            &client_bytes(&host.client, scratch)?,
        )
        .file(VM_KEY, 0o600, &read(key)?);
    let mut loaded = Vec::new();
    for rel in &order {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let plain = format!("{}.ko", name.split(".ko").next().unwrap_or(name));
        cpio.file(
            &format!("lib/modules/{plain}"),
            0o644,
            &module_bytes(&host.modules.join(rel))?,
        );
        loaded.push(plain);
    }
    cpio.file("init", 0o755, init_script(&loaded).as_bytes());
    Ok(cpio.finish())
}

/// One running VM: its QEMU process (a [`Daemon`] whose stdout is the
/// serial console).
#[derive(Debug)]
struct Vm {
    qemu: Daemon,
    booted: Option<Duration>,
}

/// A Diatom cluster whose nodes are QEMU VMs `vm1`, `vm2`, ... See the
/// module docs.
#[derive(Debug)]
pub struct VmCluster {
    // Fields drop in order: the VMs before the cluster (whose namespaces
    // hold their taps).
    vms: Vec<Option<Vm>>,
    host: VmHost,
    cluster: DiatomCluster,
}

/// A C program whose output is computed (the sum of the primes below
/// 200 000, CPU-bound, almost no system calls), compiled with gcc on
/// central by the VM tests and `vm_bench`. Given an argument it prints it
/// and exits 3, so a run that returned early could not pass for a good
/// one; without, it exits 0.
pub const PRIMES_C: &str = "#include <stdio.h>\n\
int main(int argc, char **argv)\n{\n\
    long sum = 0;\n\
    for (long n = 2; n < 200000; n++) {\n\
        int prime = 1;\n\
        for (long d = 2; d * d <= n; d++)\n\
            if (n % d == 0) { prime = 0; break; }\n\
        if (prime) sum += n;\n\
    }\n\
    printf(\"%s: sum of primes below 200000 = %ld\\n\", argc > 1 ? argv[1] : \"-\", sum);\n\
    return argc > 1 ? 3 : 0;\n}\n";

/// The name VM `i` registers under.
pub fn vm_name(i: u8) -> String {
    format!("vm{i}")
}

impl VmCluster {
    /// Starts central and `n` VMs booting at once, and waits until all
    /// are `up` in `diatom nodes --json`. `None` (skipped) when the host
    /// lacks QEMU, the kernel, busybox or the static client outside CI.
    pub fn start(test: &str, name: &str, n: u8) -> Option<VmCluster> {
        let host = VmHost::find(test)?;
        let cluster = DiatomCluster::builder(n).name(name).start_only(0).start();
        let initrd = cluster.path("initramfs.cpio");
        let image = build_initramfs(&host, cluster.key(), cluster.dir())
            .unwrap_or_else(|e| panic!("cannot build the VM initramfs: {e}"));
        std::fs::write(&initrd, image)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", initrd.display()));
        let mut c = VmCluster {
            vms: (0..n).map(|_| None).collect(),
            host,
            cluster,
        };
        let started = Instant::now();
        for i in 1..=n {
            c.boot(i, &initrd)
                .unwrap_or_else(|e| panic!("cannot boot vm{i}: {e}"));
        }
        c.wait_up(started);
        Some(c)
    }

    /// Turns node `i`'s namespace into a wire (bridge of its veth and a
    /// tap) and starts QEMU on the tap.
    fn boot(&mut self, i: u8, initrd: &Path) -> Result<(), VmError> {
        let node = self.cluster.net().node(i).ok_or_else(|| VmError::Missing {
            what: format!("node {i} of the cluster"),
            hint: "a bug in the test".into(),
        })?;
        let ns = &node.ns;
        // The VM takes the node's address: the namespace itself keeps none.
        ns.ip(&["addr", "flush", "dev", NODE_IFACE])?;
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ns.ip(&["link", "set", NODE_IFACE, "master", BRIDGE])?;
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ns.ip(&["link", "set", TAP, "master", BRIDGE])?;
        for dev in [BRIDGE, TAP] {
            ns.link_up(dev)?;
        }
        let level = std::env::var("DIATOM_E2E_LOG").unwrap_or_else(|_| "info".to_owned());
        let append = format!(
            "console=ttyS0 quiet panic=-1 diatom.addr={}/24 diatom.central={} diatom.name={} \
             diatom.log={level}",
            node.addr,
            node.central_addr,
            vm_name(i)
        );
        let mut cmd = ns.command(&self.host.qemu);
        cmd.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
        ])
        .args(["-display", "none", "-serial", "stdio"])
        .args(["-m", &VM_MEMORY_MIB.to_string(), "-smp", "1"])
        .arg("-kernel")
        .arg(&self.host.kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .args([
            "-netdev",
            &format!("tap,id=net0,ifname={TAP},script=no,downscript=no"),
        ])
        // No option ROM: the kernel is given directly, nothing boots
        // from the network, and loading the ROM costs TCG time.
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:00:00:{i:02x}"),
        ])
        .env(MARKER_VAR, self.cluster.marker());
        let qemu = ns.spawn_daemon(&vm_name(i), cmd, self.cluster.dir())?;
        self.vms[usize::from(i) - 1] = Some(Vm { qemu, booted: None });
        Ok(())
    }

    /// Polls until every running VM's node is up, recording how long each
    /// took since `since`; panics (with the consoles) when a QEMU exits or
    /// [`BOOT_TIMEOUT`] passes.
    fn wait_up(&mut self, since: Instant) {
        loop {
            let nodes = self.cluster.nodes_json();
            let mut waiting = Vec::new();
            for (idx, vm) in self.vms.iter_mut().enumerate() {
                let Some(vm) = vm else { continue };
                let name = vm_name(u8::try_from(idx + 1).unwrap_or(u8::MAX));
                if let Ok(Some(status)) = vm.qemu.try_wait() {
                    panic!("{name}'s QEMU exited ({status}) before its node came up");
                }
                let up = nodes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["name"].as_str() == Some(name.as_str()) && n["state"] == "up");
                if up {
                    vm.booted.get_or_insert_with(|| since.elapsed());
                } else {
                    waiting.push(name);
                }
            }
            if waiting.is_empty() {
                return;
            }
            assert!(
                since.elapsed() < BOOT_TIMEOUT,
                "{waiting:?} not up {BOOT_TIMEOUT:?} after QEMU started: {nodes}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Diatom cluster (central, CLI, address plan).
    pub fn cluster(&self) -> &DiatomCluster {
        &self.cluster
    }

    /// What the VMs boot (kernel release included).
    pub fn host(&self) -> &VmHost {
        &self.host
    }

    /// How long VM `i` took from QEMU's start to its node being `up`.
    pub fn boot_time(&self, i: u8) -> Option<Duration> {
        self.vm(i).and_then(|vm| vm.booted)
    }

    fn vm(&self, i: u8) -> Option<&Vm> {
        self.vms.get(usize::from(i).checked_sub(1)?)?.as_ref()
    }

    /// VM `i`'s serial console so far.
    pub fn console(&self, i: u8) -> String {
        self.vm(i).map(|vm| vm.qemu.stdout()).unwrap_or_default()
    }

    /// Kills VM `i`'s QEMU (SIGKILL): the machine vanishes at once, with
    /// its jobs, as when it loses power.
    pub fn kill_vm(&mut self, i: u8) {
        let vm = self
            .vms
            .get_mut(usize::from(i) - 1)
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("vm{i} is not running"));
        vm.qemu
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill vm{i}'s QEMU: {e}"));
    }
}

impl Drop for VmCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for (idx, vm) in self.vms.iter_mut().enumerate() {
            let Some(vm) = vm else { continue };
            let _ = vm.qemu.kill();
            if panicking {
                eprintln!(
                    "--- vm{} serial console (last {CONSOLE_TAIL} bytes of {}) ---\n{}",
                    idx + 1,
                    vm.qemu.stdout_path().display(),
                    tail(&vm.qemu.stdout(), CONSOLE_TAIL)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_of_dep_lines() {
        assert_eq!(
            module_path_name("kernel/drivers/net/virtio_net.ko: a.ko"),
            Some("virtio_net")
        );
        assert_eq!(
            module_path_name("kernel/drivers/net/virtio_net.ko.xz:"),
            Some("virtio_net")
        );
        assert_eq!(module_path_name("kernel/drivers/net/readme:"), None);
    }

    #[test]
    fn newc_entries_are_aligned_and_trailed() {
        let mut c = Initramfs::new();
        c.dir("bin", 0o755).file("bin/x", 0o644, b"hello");
        let a = c.finish();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        // The first header: inode 1, a directory, name "bin".
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000041ED");
        assert_eq!(&a[110..114], b"bin\0");
        let trailer = a
            .windows(10)
            .rposition(|w| w == b"TRAILER!!!")
            .expect("trailer");
        assert!(trailer > 110);
        let x = a.windows(5).position(|w| w == b"hello").expect("data");
        assert_eq!(x % 4, 0, "file data starts 4-byte aligned");
    }
}
