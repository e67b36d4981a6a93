//! `diatom exec` beside `ssh`, the tool it should feel like: a command's
//! start-up (`/bin/true`) and moving a 1 GiB file from one side to the
//! other (`ssh cat`, `scp`, against a cold and a warm `diatom exec cat`).
//! A private `sshd` (Debian `openssh-server`) on 127.0.0.1 with a fresh
//! host key and client key, and a real central and node on loopback
//! (release binaries), all in one run; medians of N runs.
//!
//! `apt-get install openssh-server` (for `/usr/sbin/sshd`), then
//! `cargo build --release --bins && cargo run --release -p diatom-bench --bin ssh_bench [-- --runs N]`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diatom_bench::cluster::{ms, time, Daemons};
use diatom_bench::{mbps, write_big_file};

const SSHD: &str = "/usr/sbin/sshd";
const PORT: u16 = 26022;

fn median(mut v: Vec<Duration>) -> Duration {
    diatom_bench::median(&mut v)
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private sshd on 127.0.0.1:PORT that lets the current user in with a
/// fresh key; killed on drop.
struct Sshd {
    child: Child,
    client_key: PathBuf,
    known_hosts: PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server to run this benchmark"
        );
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        for k in [&host_key, &client_key] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k),
                "ssh-keygen",
            );
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &auth).expect("authorized_keys");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {PORT}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUseDNS no\nPidFile {}\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n",
                host_key.display(),
                auth.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .expect("sshd_config");
        // Privilege separation wants this directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd");
        let known_hosts = dir.join("known_hosts");
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).expect("host pub");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{PORT} {host_pub}")).expect("known");
        let s = Sshd {
            child,
            client_key,
            known_hosts,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.ssh(&["true"]).status().is_ok_and(|st| st.success()) {
            assert!(Instant::now() < deadline, "sshd did not let us in");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn opts(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "GSSAPIAuthentication=no".into(),
        ]
    }

    /// `ssh 127.0.0.1 ARGS`.
    fn ssh(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.opts())
            .args(["-p", &PORT.to_string(), "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null());
        c
    }

    /// `scp 127.0.0.1:FROM TO`.
    fn scp(&self, from: &Path, to: &Path) -> Command {
        let mut c = Command::new("scp");
        c.args(self.opts())
            .args(["-q", "-P", &PORT.to_string()])
            .arg(format!("127.0.0.1:{}", from.display()))
            .arg(to);
        c
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let runs = diatom_bench::runs_arg(11);
    let dir = std::env::temp_dir().join(format!("diatom-ssh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sshd = Sshd::start(&dir);
    let mut d = Daemons::start(&dir, 26036);

    println!("| workload | local | ssh | diatom exec | diatom / ssh |");
    println!("|---|---|---|---|---|");

    // Start-up: one warm-up each, then interleaved.
    time(&mut sshd.ssh(&["/bin/true"]));
    time(&mut d.exec(&["/bin/true"]));
    let (mut local, mut ssh, mut diatom) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        local.push(time(&mut Command::new("/bin/true")));
        ssh.push(time(&mut sshd.ssh(&["/bin/true"])));
        diatom.push(time(&mut d.exec(&["/bin/true"])));
    }
    let (l, s, x) = (median(local), median(ssh), median(diatom));
    println!(
        "| `/bin/true` | {} | {} | {} (warm) | {:.2}x |",
        ms(l),
        ms(s),
        ms(x),
        x.as_secs_f64() / s.as_secs_f64()
    );

    // 1 GiB from central to where the work runs.
    let big = dir.join("big.bin");
    let size: u64 = 1 << 30;
    write_big_file(&big, size, 0x2545_f491_4f6c_dd1d);
    let big_s = big.display().to_string();
    let cat = format!("cat '{big_s}' > /dev/null");
    let copy = dir.join("copy.bin");
    let (mut local, mut ssh, mut scp, mut cold, mut warm) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs.min(3) {
        local.push(time(Command::new("sh").args(["-c", &cat])));
        ssh.push(time(&mut sshd.ssh(&["cat", &big_s])));
        scp.push(time(&mut sshd.scp(&big, &copy)));
        let _ = std::fs::remove_file(&copy);
        d.new_node();
        cold.push(time(&mut d.exec(&["sh", "-c", &cat])));
        warm.push(time(&mut d.exec(&["sh", "-c", &cat])));
    }
    let (l, s, p, c, w) = (
        median(local),
        median(ssh),
        median(scp),
        median(cold),
        median(warm),
    );
    println!(
        "| 1 GiB: `ssh cat` vs cold `diatom exec cat` | {} ({}) | {} ({}) | {} ({}) | {:.2}x |",
        ms(l),
        mbps(size, l),
        ms(s),
        mbps(size, s),
        ms(c),
        mbps(size, c),
        c.as_secs_f64() / s.as_secs_f64()
    );
    println!(
        "| 1 GiB: `scp` vs cold `diatom exec cat` | | {} ({}) | {} ({}) | {:.2}x |",
        ms(p),
        mbps(size, p),
        ms(c),
        mbps(size, c),
        c.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "| 1 GiB again: `ssh cat` vs warm `diatom exec cat` | | {} ({}) | {} ({}) | {:.2}x |",
        ms(s),
        mbps(size, s),
        ms(w),
        mbps(size, w),
        w.as_secs_f64() / s.as_secs_f64()
    );
    drop(d);
    drop(sshd);
    let _ = std::fs::remove_dir_all(&dir);
}
