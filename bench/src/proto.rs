//! The protocol pieces the benchmarks share: a loopback echo server on
//! the `dscp-dicp` driver and one bulk message through it, so that
//! `net_bench` can quote the protocol's bulk rate measured in the same run
//! as `proto_bench` does.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use dscp_dicp::{Driver, DriverConfig, Key, Keyring, Peer, CLUSTER_KEY_ID};

/// How long one benchmark call may take.
pub const T: Duration = Duration::from_secs(120);

/// Port 0 on 127.0.0.1.
pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A driver that answers every request with its payload, or with `[1]`
/// when `one_byte`; the serving thread receives from the socket itself
/// (`next_incoming`).
pub fn echo_server(key: &Key, cfg: DriverConfig, one_byte: bool) -> Driver {
    let d = Driver::bind(localhost(), Keyring::with_cluster_key(key), cfg).expect("bind");
    let h = d.handle();
    thread::spawn(move || loop {
        let Some(inc) = h.next_incoming(Duration::from_secs(1)) else {
            if h.is_closed() {
                return;
            }
            continue;
        };
        let payload = if one_byte {
            vec![1]
        } else {
            inc.payload.clone()
        };
        if inc.respond(payload).is_err() {
            return;
        }
    });
    d
}

/// User + system CPU time of this process.
pub fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data (all-zero is valid) and getrusage only
    // writes into the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A driver configuration for one `total`-byte message in `datagram`-byte
/// datagrams on loopback.
pub fn bulk_cfg(total: usize, datagram: usize) -> DriverConfig {
    let mut cfg = DriverConfig::default();
    cfg.endpoint.max_message = total + 1024;
    cfg.endpoint.reassembly_limit = total + 1024;
    cfg.endpoint.loopback_max_datagram = datagram;
    cfg
}

/// One `total`-byte request through the driver, answered with one byte;
/// time from the call to the answer.
pub fn driver_bulk(total: usize, datagram: usize) -> Duration {
    let key = Key::generate();
    let server = echo_server(&key, bulk_cfg(total, datagram), true);
    let client = Driver::bind(
        localhost(),
        Keyring::with_cluster_key(&key),
        bulk_cfg(total, datagram),
    )
    .expect("bind");
    let peer = Peer {
        addr: server.local_addr().expect("addr"),
        key_id: CLUSTER_KEY_ID,
    };
    client.call(peer, vec![0; 10], T).expect("warm-up"); // first contact
    let data = vec![5u8; total];
    let cpu0 = cpu_time();
    let t = Instant::now();
    let r = client.call(peer, data, T).expect("bulk call");
    let d = t.elapsed();
    let cpu = cpu_time() - cpu0;
    assert_eq!(r, vec![1]);
    let dropped: u64 =
        client.dropped().values().sum::<u64>() + server.dropped().values().sum::<u64>();
    eprintln!(
        "  ({} MiB in {datagram}-byte datagrams: {d:?}, CPU {cpu:?} = {:.2} cores, {dropped} datagrams dropped)",
        total >> 20,
        cpu.as_secs_f64() / d.as_secs_f64()
    );
    d
}
