//! `diatom exec` start-up cost: a real central and node on loopback
//! (release binaries from this workspace), compared side by side with a
//! local run of the same command. Warm: the node's cache already holds the
//! program and its libraries. Cold: a node with an empty cache for every
//! run. Embedded: no daemon, `diatom exec` starts its own (always cold).
//! Medians of N runs, interleaved so drift hits every column alike.
//!
//! `cargo build --release --bins && cargo run --release -p diatom-bench --bin exec_bench [-- --runs N]`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().expect("bin dir").join(name)
}

fn median(mut v: Vec<Duration>) -> Duration {
    diatom_bench::median(&mut v)
}

fn time(cmd: &mut Command) -> Duration {
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

struct Daemons {
    dir: PathBuf,
    central: Child,
    node: Option<Child>,
    port: u16,
    node_seq: u32,
}

impl Daemons {
    fn start(dir: &Path, port: u16) -> Daemons {
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

    /// (Re)starts the node with an empty state directory.
    fn new_node(&mut self) {
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

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("diatom"));
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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs = diatom_bench::runs_arg(21);
    let dir = std::env::temp_dir().join(format!("diatom-exec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut d = Daemons::start(&dir, 22036);
    let cases: [(&str, &[&str]); 2] = [
        ("/bin/true", &["/bin/true"]),
        ("python3 -c pass", &["/usr/bin/python3", "-c", "pass"]),
    ];
    println!("| command | local | diatom exec warm | ratio | diatom exec cold | embedded (cold) |");
    println!("|---|---|---|---|---|---|");
    for (name, argv) in cases {
        let (mut local, mut warm, mut cold, mut embedded) = (vec![], vec![], vec![], vec![]);
        // Fill the cache once before the warm runs.
        time(&mut d.exec(argv));
        for _ in 0..runs {
            local.push(time(Command::new(argv[0]).args(&argv[1..])));
            warm.push(time(&mut d.exec(argv)));
            let mut e = Command::new(bin("diatom"));
            e.arg("--socket")
                .arg(dir.join("no-daemon.sock"))
                .arg("exec")
                .args(argv);
            embedded.push(time(&mut e));
        }
        for _ in 0..runs.min(7) {
            d.new_node();
            cold.push(time(&mut d.exec(argv)));
        }
        let (l, w) = (median(local), median(warm));
        println!(
            "| `{name}` | {} | {} | {:.1}x | {} | {} |",
            ms(l),
            ms(w),
            w.as_secs_f64() / l.as_secs_f64(),
            ms(median(cold)),
            ms(median(embedded))
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
