//! A real central and one node on loopback, started from this workspace's
//! release binaries, for benchmarks that run `diatom exec` side by side with
//! a local run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the running benchmark.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().expect("bin dir").join(name)
}

/// The `diatom` CLI users get: the static build `make install` installs
/// (`make static-cli`, in `target/static`) when it has been built, else
/// the workspace's dynamically linked one.
pub fn cli() -> PathBuf {
    let dynamic = bin("diatom");
    let static_cli = dynamic
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("static/diatom"));
    match static_cli {
        Some(s) if s.is_file() => s,
        _ => dynamic,
    }
}

/// Runs `cmd` (stdout discarded) and returns how long it took; panics if it fails.
pub fn time(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run");
    let d = t.elapsed();
    assert!(st.success(), "{cmd:?} failed: {st}");
    d
}

/// A central and one node, killed on drop.
pub struct Daemons {
    dir: PathBuf,
    central: Child,
    node: Option<Child>,
    port: u16,
    node_seq: u32,
}

impl Daemons {
    /// Starts central on 127.0.0.1:`port` and a node, state under `dir`.
    pub fn start(dir: &Path, port: u16) -> Daemons {
        let key = dir.join("key");
        let ok = Command::new(bin("diatom"))
            .args(["keygen", "--out"])
            .arg(&key)
            .status()
            .expect("keygen");
        assert!(ok.success());
        let central = Command::new(bin("diatom-central"))
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--key")
            .arg(&key)
            .arg("--state-dir")
            .arg(dir.join("central"))
            .arg("--socket")
            .arg(dir.join("sock"))
            .arg("-q")
            .spawn()
            .expect("central");
        let mut d = Daemons {
            dir: dir.to_path_buf(),
            central,
            node: None,
            port,
            node_seq: 0,
        };
        d.new_node();
        d
    }

    /// Removes the state directories of the nodes before the current one
    /// (their cache objects): the memory their page cache held goes back
    /// to the kernel for the next run to reuse.
    pub fn forget_old_nodes(&self) {
        for seq in 1..self.node_seq {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("node{seq}")));
        }
    }

    /// (Re)starts the node with an empty state directory.
    pub fn new_node(&mut self) {
        if let Some(mut n) = self.node.take() {
            let _ = n.kill();
            let _ = n.wait();
        }
        self.node_seq += 1;
        let state = self.dir.join(format!("node{}", self.node_seq));
        let node = Command::new(bin("diatom-client"))
            .arg("--central")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--bind")
            .arg(format!(
                "127.0.0.2:{}",
                self.port + 1000 + self.node_seq as u16
            ))
            .args(["--name", "bench"])
            .arg("--key")
            .arg(self.dir.join("key"))
            .arg("--state-dir")
            .arg(&state)
            .arg("-q")
            .spawn()
            .expect("node");
        self.node = Some(node);
        // Wait until central lists it as up.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new(bin("diatom"))
                .arg("--socket")
                .arg(self.dir.join("sock"))
                .args(["nodes", "--json"])
                .output()
                .expect("nodes");
            let text = String::from_utf8_lossy(&out.stdout);
            // The restarted node must be the one up: its port is new.
            let addr = format!("127.0.0.2:{}", self.port + 1000 + self.node_seq as u16);
            if text.contains("\"state\":\"up\"") && text.contains(&addr) {
                break;
            }
            assert!(Instant::now() < deadline, "node did not come up: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// ARGS run locally and through `diatom exec`, interleaved `runs` times
    /// after one `diatom exec` run that warms the node's cache: the medians
    /// (local, remote).
    pub fn warm_side_by_side(&self, args: &[&str], runs: usize) -> (Duration, Duration) {
        time(&mut self.exec(args));
        let (mut local, mut remote) = (vec![], vec![]);
        for _ in 0..runs {
            local.push(time(Command::new(args[0]).args(&args[1..])));
            remote.push(time(&mut self.exec(args)));
        }
        (crate::median(&mut local), crate::median(&mut remote))
    }

    /// `diatom exec ARGS` against this cluster.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cli());
        c.arg("--socket")
            .arg(self.dir.join("sock"))
            .arg("exec")
            .args(args);
        c
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        if let Some(n) = &mut self.node {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = self.central.kill();
        let _ = self.central.wait();
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
