//! The dashboard's API on a big history: a central whose store holds 100
//! nodes and 10,000 finished jobs (each with counters and two events),
//! served with `--http` on loopback. Each route is fetched `--runs N` times
//! over one kept-alive connection by curl (its `time_total` per transfer),
//! side by side with the control-socket CLI that prints the same JSON
//! (`diatom ps --all --json`, `diatom status --json`, `diatom nodes --json`:
//! one process per call, so that column includes a process start).
//!
//!     cargo build --release --bins
//!     cargo run --release -p diatom-bench --bin dash_bench [-- --runs 200] [--serve]
//!
//! `--serve` keeps that central up afterwards, to look at the page.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diatom_bench::cluster::{bin, time};
use diatom_bench::{median, runs_arg};
use diatom_central::store::{Counters, JobEnd, JobState, NewJob, NodeRecord, NodeState, Store};

const NODES: usize = 100;
const JOBS: u64 = 10_000;
const UDP_PORT: u16 = 22_036;
const HTTP: &str = "127.0.0.1:22080";

/// A child killed when dropped, a panic included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn seed(state: &Path) {
    let s = Store::open(state).expect("open store");
    for i in 0..NODES {
        s.upsert_node(&NodeRecord {
            name: format!("node{i:03}"),
            address: format!("10.0.{}.2:12036", i + 1),
            state: NodeState::Up,
            state_since: 1_000,
            cpus: 8,
            slots: 8,
            slots_used: 0,
            load: 0.5,
            last_seen: 1_000,
            registered_at: 1_000,
            kernel: "Linux 6.1.0 x86_64".into(),
            version: "0.1.0".into(),
            dropped: Counters::new(),
            cache_bytes: 1 << 30,
        })
        .expect("node");
    }
    let counters: Counters = [
        ("calls", 61),
        ("calls.Open", 32),
        ("calls.Read", 16),
        ("calls.Stat", 13),
        ("bytes_read", 2 << 20),
        ("cache_hits", 18),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for i in 0..JOBS {
        let id = s
            .create_job(&NewJob {
                uid: (i % 5) as u32,
                user: format!("user{}", i % 5),
                node: format!("node{:03}", i % NODES as u64),
                program: "/usr/bin/make".into(),
                argv: vec!["make".into(), format!("-j{}", i % 8)],
                cwd: "/home/user/src".into(),
                start: 1_700_000_000_000 + i * 1000,
            })
            .expect("job");
        s.add_job_event(id, 1_700_000_000_000 + i * 1000, "placed", "node")
            .expect("event");
        s.finish_job(
            id,
            &JobEnd {
                state: JobState::Exited,
                exit_status: Some(0),
                signal: None,
                reason: None,
                at: 1_700_000_000_500 + i * 1000,
            },
        )
        .expect("finish");
        s.add_job_event(
            id,
            1_700_000_000_500 + i * 1000,
            "exited",
            "Exited { code: 0 }",
        )
        .expect("event");
        s.set_job_counters(id, &counters).expect("counters");
    }
}

/// `runs` fetches of `path` over one connection: each transfer's time.
fn fetch(path: &str, runs: usize) -> Vec<Duration> {
    let url = format!("http://{HTTP}{path}");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "%{http_code} %{time_total}\n"]);
    for _ in 0..runs {
        cmd.args(["-o", "/dev/null"]).arg(&url);
    }
    let out = cmd.output().expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (code, t) = l.split_once(' ').expect("curl line");
            assert_eq!(code, "200", "{path}");
            Duration::from_secs_f64(t.parse().expect("time"))
        })
        .collect()
}

fn cli(socket: &Path, args: &[&str], runs: usize) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            time(
                Command::new(bin("diatom"))
                    .arg("--socket")
                    .arg(socket)
                    .args(args),
            )
        })
        .collect()
}

fn main() {
    let runs = runs_arg(200);
    let dir = std::env::temp_dir().join(format!("diatom-dash-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("key");
    assert!(Command::new(bin("diatom"))
        .args(["keygen", "--out"])
        .arg(&key)
        .status()
        .expect("keygen")
        .success());
    let state = dir.join("state");
    let t = std::time::Instant::now();
    seed(&state);
    eprintln!(
        "seeded {NODES} nodes and {JOBS} jobs in {:.1?}",
        t.elapsed()
    );
    let socket = dir.join("central.sock");
    let central = Command::new(bin("diatom-central"))
        .arg("--bind")
        .arg(format!("127.0.0.1:{UDP_PORT}"))
        .arg("--key")
        .arg(&key)
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .args(["--http", HTTP, "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start central");
    let mut central = Killed(central);
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null"])
            .arg(format!("http://{HTTP}/api/status"))
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "central's dashboard did not come up");

    println!("{runs} fetches each, medians (p90), {NODES} nodes and {JOBS} jobs in the store\n");
    println!("| request | median | p90 | same data through the CLI (one process per call) |");
    println!("|---|---|---|---|");
    let cli_runs = (runs / 10).max(5);
    let rows: [(&str, Option<&[&str]>); 7] = [
        ("/api/status", Some(&["status", "--json"])),
        ("/api/nodes", Some(&["nodes", "--json"])),
        ("/api/jobs?limit=50", Some(&["ps", "--all", "--json"])),
        ("/api/jobs?limit=50&before=5000", None),
        ("/api/jobs?state=exited&node=node042&limit=50", None),
        ("/api/jobs/4242", None),
        ("/api/history", None),
    ];
    for (path, cli_args) in rows {
        let mut v = fetch(path, runs);
        let p90 = {
            let mut s = v.clone();
            s.sort();
            s[s.len() * 9 / 10]
        };
        let m = median(&mut v);
        let cli_col = match cli_args {
            Some(a) => {
                let mut c = cli(&socket, a, cli_runs);
                format!("`diatom {}`: {:.2?}", a.join(" "), median(&mut c))
            }
            None => String::new(),
        };
        println!("| `{path}` | {m:.2?} | {p90:.2?} | {cli_col} |");
    }
    if std::env::args().any(|a| a == "--serve") {
        // To look at the page over a big history: stays up until killed.
        eprintln!("serving http://{HTTP}/ until interrupted");
        let _ = central.0.wait();
    }
    drop(central);
    let _ = std::fs::remove_dir_all(&dir);
}
