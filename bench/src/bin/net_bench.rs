//! The job's network through central: a real central and node on loopback
//! (release binaries from this workspace) and a TCP server in this
//! process standing for a server on central. The same Python client runs
//! locally and under `diatom exec`, and times itself (so the job's start-up
//! is not counted): bulk download (server to client), bulk upload (client
//! to server, until the server has read everything), and connect latency
//! (connect + close, sequentially). Medians of N runs, local and remote
//! interleaved so drift hits both alike.
//!
//! `cargo build --release --bins && cargo run --release -p diatom-bench --bin net_bench [-- --runs N] [-- --mib M]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use diatom_bench::cluster::Daemons;
use diatom_bench::proto::driver_bulk;

const CLIENT: &str = r#"
import socket, statistics, sys, time
port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if mode == "connect":
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port))
        times.append(time.perf_counter() - t)
        s.sendall(b"C")
        s.close()
    print(statistics.median(times) * 1e6)
    sys.exit(0)
s = socket.create_connection(("127.0.0.1", port))
t = time.perf_counter()
if mode == "down":
    s.sendall(b"D")
    got = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        got += len(b)
    assert got == n << 20, got
else:
    s.sendall(b"U")
    buf = b"x" * (1 << 20)
    for _ in range(n):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1) == b"k"
print((n << 20) / (time.perf_counter() - t) / 1e6)
"#;

/// The server: `D` sends `mib` MiB then closes; `U` reads to the end and
/// answers one byte; `C` is a connect probe.
fn serve(l: TcpListener, mib: usize) {
    let chunk = vec![7u8; 1 << 20];
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let chunk = chunk.clone();
        std::thread::spawn(move || {
            let mut first = [0u8; 1];
            if c.read_exact(&mut first).is_err() {
                return;
            }
            match first[0] {
                b'D' => {
                    for _ in 0..mib {
                        if c.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                }
                b'U' => {
                    let mut buf = vec![0u8; 1 << 20];
                    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    let _ = c.write_all(b"k");
                }
                _ => {}
            }
        });
    }
}

/// Runs `cmd` and parses the one number it prints.
fn figure(cmd: &mut Command) -> f64 {
    let out = cmd.stderr(Stdio::inherit()).output().expect("run");
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{cmd:?} printed {text:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let runs = diatom_bench::runs_arg(7);
    let mib = diatom_bench::usize_arg("--mib", 256);
    let connects = 200;
    let dir = std::env::temp_dir().join(format!("diatom-net-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT).expect("script");
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || serve(l, mib));
    // The server answers before the cluster starts.
    drop(TcpStream::connect((
        "127.0.0.1",
        port.parse::<u16>().unwrap_or(0),
    )));
    let d = Daemons::start(&dir, 23036);
    let script = script.to_str().expect("utf-8 path").to_owned();
    let py = "/usr/bin/python3";
    println!("| {runs} runs, medians | local | diatom exec | ratio |");
    println!("|---|---|---|---|");
    let cases = [
        ("download", mib.to_string(), "MB/s"),
        ("upload", mib.to_string(), "MB/s"),
        ("connect", connects.to_string(), "µs"),
    ];
    let mut relayed = vec![];
    for (mode, n, unit) in cases {
        let m = if mode == "download" { "down" } else { mode };
        let (mut local, mut remote) = (vec![], vec![]);
        for _ in 0..runs {
            local.push(figure(Command::new(py).args([&script, &port, m, &n])));
            remote.push(figure(&mut d.exec(&[py, &script, &port, m, &n])));
        }
        let (l, r) = (median(local), median(remote));
        relayed.push(r);
        let what = if mode == "connect" {
            format!("connect + close ({n} sequential)")
        } else {
            format!("TCP {mode}, {n} MiB")
        };
        println!("| {what} | {l:.0} {unit} | {r:.0} {unit} | {:.2}x |", r / l);
    }
    // The protocol's own bulk rate now, for the target (relayed TCP at
    // least half of it): one message through the driver on loopback.
    let bytes = mib << 20;
    let mut bulk = vec![];
    for _ in 0..runs.min(3) {
        let t = driver_bulk(bytes, 65_000);
        bulk.push(bytes as f64 / t.as_secs_f64() / 1e6);
    }
    let b = median(bulk);
    println!(
        "| dscp-dicp bulk, one {mib} MiB message (proto_bench's figure) | | {b:.0} MB/s | relayed download {:.2}x, upload {:.2}x of it |",
        relayed[0] / b,
        relayed[1] / b
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
