//! Protocol benchmark over real UDP on loopback, side by side in one run:
//! request/response latency of the driver against a raw UDP ping-pong, and
//! one 256 MiB message through the driver (encrypted, reliable) against a
//! raw UDP blast and a TCP loopback copy.
//!
//! `cargo run --release -p diatom-bench --bin proto_bench [-- ROUND_TRIPS MIB]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use diatom_bench::proto::{driver_bulk, echo_server, localhost, T};
use dscp_dicp::{Driver, DriverConfig, Key, Keyring, Peer, CLUSTER_KEY_ID};

const SMALL: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Raw UDP ping-pong: each side blocks in recv and answers at once.
fn raw_pingpong(n: usize) -> Vec<Duration> {
    let a = UdpSocket::bind(localhost()).expect("bind");
    let b = UdpSocket::bind(localhost()).expect("bind");
    let a_addr = a.local_addr().expect("addr");
    let b_addr = b.local_addr().expect("addr");
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let (len, from) = b.recv_from(&mut buf).expect("recv");
            b.send_to(&buf[..len], from).expect("send");
        }
    });
    let _ = a_addr;
    let msg = [7u8; SMALL];
    let mut buf = [0u8; 2048];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.send_to(&msg, b_addr).expect("send");
        a.recv_from(&mut buf).expect("recv");
        rtts.push(t.elapsed());
    }
    echo.join().expect("echo thread");
    rtts
}

fn driver_pingpong(n: usize) -> Vec<Duration> {
    let key = Key::generate();
    let server = echo_server(&key, DriverConfig::default(), false);
    let client = Driver::bind(
        localhost(),
        Keyring::with_cluster_key(&key),
        DriverConfig::default(),
    )
    .expect("bind");
    let peer = Peer {
        addr: server.local_addr().expect("addr"),
        key_id: CLUSTER_KEY_ID,
    };
    let msg = vec![7u8; SMALL];
    for _ in 0..200 {
        client.call(peer, msg.clone(), T).expect("warm-up call");
    }
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.call(peer, msg.clone(), T).expect("call");
        rtts.push(t.elapsed());
    }
    rtts
}

/// Raw UDP blast of `total` bytes in 64000-byte datagrams; returns bytes
/// received and the receiver's time from first to last datagram.
fn raw_udp_blast(total: usize) -> (usize, Duration) {
    const DGRAM: usize = 64_000;
    let rx = UdpSocket::bind(localhost()).expect("bind");
    let addr = rx.local_addr().expect("addr");
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let recv = thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut got = 0usize;
        let mut first = None;
        let mut last = Instant::now();
        while let Ok(n) = rx.recv(&mut buf) {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            got += n;
            if got >= total {
                break;
            }
        }
        (got, last - first.unwrap_or(last))
    });
    let tx = UdpSocket::bind(localhost()).expect("bind");
    let data = vec![1u8; DGRAM];
    let mut sent = 0;
    while sent < total {
        tx.send_to(&data, addr).expect("send");
        sent += DGRAM;
    }
    recv.join().expect("receiver")
}

/// TCP loopback copy of `total` bytes; receiver-side time.
fn tcp_copy(total: usize) -> Duration {
    let l = TcpListener::bind(localhost()).expect("bind");
    let addr = l.local_addr().expect("addr");
    let recv = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        let t = Instant::now();
        while got < total {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got += n;
        }
        t.elapsed()
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![1u8; 1 << 20];
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    recv.join().expect("receiver")
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The AEAD alone: seal then open `total` bytes in 65000-byte datagrams on
/// one core, reusing buffers (the ceiling for one sending and one receiving
/// thread). Timed in the thread's CPU time, so a busy machine (other
/// processes taking turns on the core) does not lower the figure.
fn crypto_only(total: usize) -> (Duration, Duration) {
    use dscp_dicp::wire::{Header, PacketKind, HEADER_LEN, VERSION};
    let mut ring = Keyring::with_cluster_key(&Key::generate());
    let body = vec![3u8; 65_000 - 48];
    let n = total / body.len();
    let mut buf = Vec::with_capacity(65_536);
    let t = thread_cpu();
    for i in 0..n {
        let h = Header {
            version: VERSION,
            kind: PacketKind::Data,
            key_id: 0,
            sender_id: 1,
            counter: i as u64,
        };
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        buf.extend_from_slice(&body);
        ring.seal_in_place(&h, &mut buf).expect("seal");
    }
    let seal = thread_cpu() - t;
    let mut scratch = Vec::with_capacity(65_536);
    let t = thread_cpu();
    for _ in 0..n {
        ring.open_into(&buf, &mut scratch).expect("open");
    }
    (seal, thread_cpu() - t)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mib: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let total = mib << 20;

    eprintln!("round trips ({n} x {SMALL} bytes)...");
    let mut raw = raw_pingpong(n);
    raw.sort();
    let mut drv = driver_pingpong(n);
    drv.sort();
    eprintln!("bulk ({mib} MiB)...");
    let (udp_bytes, udp_time) = raw_udp_blast(total);
    let tcp_time = tcp_copy(total);
    let (seal, open) = crypto_only(total);
    let big = driver_bulk(total, 65_000);
    let small = driver_bulk(total.min(64 << 20), 1400);

    let (raw_med, raw_p99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (drv_med, drv_p99) = (percentile(&drv, 0.5), percentile(&drv, 0.99));
    println!("## Request/response round trip, {SMALL}-byte payload, {n} round trips, loopback");
    println!();
    println!("| | median | p99 | median vs raw UDP |");
    println!("|---|---|---|---|");
    println!(
        "| raw UDP ping-pong (blocking recv/send) | {:.1} µs | {:.1} µs | 1.00x |",
        us(raw_med),
        us(raw_p99)
    );
    println!(
        "| dscp-dicp driver `call` (AEAD, acks, ids) | {:.1} µs | {:.1} µs | {:.2}x |",
        us(drv_med),
        us(drv_p99),
        us(drv_med) / us(raw_med)
    );
    println!();
    let tcp = mbps(total, tcp_time);
    println!("## Bulk: one {mib} MiB message, loopback, receiver side");
    println!();
    println!("| | throughput | vs TCP |");
    println!("|---|---|---|");
    println!("| TCP loopback copy (1 MiB writes) | {tcp:.0} MB/s | 1.00x |");
    println!(
        "| raw UDP blast, 64000-byte datagrams ({:.1}% lost) | {:.0} MB/s | {:.2}x |",
        100.0 * (1.0 - udp_bytes as f64 / total as f64),
        mbps(udp_bytes, udp_time),
        mbps(udp_bytes, udp_time) / tcp
    );
    println!(
        "| dscp-dicp, encrypted + reliable, 65000-byte datagrams (loopback default) | {:.0} MB/s | {:.2}x |",
        mbps(total, big),
        mbps(total, big) / tcp
    );
    println!(
        "| (ceiling) AES-256-GCM alone, per CPU-second of one thread: seal / open | {:.0} / {:.0} MB/s | |",
        mbps(total, seal),
        mbps(total, open)
    );
    let small_total = total.min(64 << 20);
    println!(
        "| dscp-dicp, 1400-byte datagrams (LAN default), {} MiB | {:.0} MB/s | {:.2}x |",
        small_total >> 20,
        mbps(small_total, small),
        mbps(small_total, small) / tcp
    );
}
