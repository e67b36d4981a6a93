//! Protocol over real UDP sockets on loopback, through the driver.

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use diatom_tests::cluster::eventually;
use dscp_dicp::msg::control::{DscpRequest, DscpResponse};
use dscp_dicp::msg::{Blob, Request, Response};
use dscp_dicp::wire::{Header, PacketKind, VERSION};
use dscp_dicp::{Driver, DriverConfig, DriverError, Key, Keyring, Peer, CLUSTER_KEY_ID};

const T: Duration = Duration::from_secs(10);
/// How long a server thread that a loaded machine runs late may take to
/// count what it dropped.
const WAIT: Duration = Duration::from_secs(10);

/// A server that answers `Ping` with `Pong` (same payload) and any raw
/// payload with its reverse, until its driver is dropped.
fn server(key: &Key, cfg: DriverConfig) -> Driver {
    let d = Driver::bind("127.0.0.1:0", Keyring::with_cluster_key(key), cfg).expect("test setup");
    let rx = d.incoming().clone();
    thread::spawn(move || {
        for inc in rx {
            match inc.request() {
                Ok(Request::Dscp(DscpRequest::Ping { payload })) => {
                    inc.reply(&Response::Dscp(DscpResponse::Pong { payload }))
                        .expect("test setup");
                }
                _ => {
                    let mut p = inc.payload.clone();
                    p.reverse();
                    let _ = inc.respond(p);
                }
            }
        }
    });
    d
}

fn client(key: &Key) -> Driver {
    Driver::bind(
        "127.0.0.1:0",
        Keyring::with_cluster_key(key),
        DriverConfig::default(),
    )
    .expect("test setup")
}

fn peer(d: &Driver) -> Peer {
    Peer {
        addr: d.local_addr().expect("test setup"),
        key_id: CLUSTER_KEY_ID,
    }
}

#[test]
fn proto_request_response_over_udp() {
    let key = Key::generate();
    let s = server(&key, DriverConfig::default());
    let c = client(&key);
    for i in 0..50u32 {
        let payload = Blob(i.to_le_bytes().to_vec());
        let req = Request::Dscp(DscpRequest::Ping {
            payload: payload.clone(),
        });
        let resp = c.request(peer(&s), &req, T).unwrap();
        assert_eq!(resp, Response::Dscp(DscpResponse::Pong { payload }));
    }
    // Concurrent calls from several threads on one handle.
    let h = c.handle();
    let sp = peer(&s);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let h = h.clone();
            thread::spawn(move || {
                for i in 0..50u8 {
                    assert_eq!(h.call(sp, vec![t, i, 1], T).unwrap(), vec![1, i, t]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.dropped()["bad_auth"], 0);
}

#[test]
fn proto_several_mib_both_ways_over_udp() {
    let key = Key::generate();
    let s = server(&key, DriverConfig::default());
    let c = client(&key);
    let big: Vec<u8> = (0..(12u32 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let start = Instant::now();
    let answer = c.call(peer(&s), big.clone(), T).unwrap();
    let mut expect = big;
    expect.reverse();
    assert!(answer == expect, "12 MiB round trip corrupted");
    eprintln!("12 MiB each way in {:?}", start.elapsed());
}

#[test]
fn proto_wrong_key_gets_no_answer() {
    let key = Key::generate();
    let s = server(&key, DriverConfig::default());
    // A whole driver with another key: its calls time out, counted bad_auth.
    let c = client(&Key::generate());
    let before = s.dropped()["bad_auth"];
    let r = c.call(peer(&s), b"hello".to_vec(), Duration::from_millis(500));
    assert!(matches!(r, Err(DriverError::Timeout)), "{r:?}");
    assert!(
        eventually(WAIT, || s.dropped()["bad_auth"] > before),
        "the other key's datagrams were not counted bad_auth"
    );
    drop(c);
    // A single hand-made datagram sealed with another key: no datagram comes
    // back at all. (To a server of its own: the dropped client's last
    // probes may still reach the first one and count as bad_auth too.)
    let s = server(&key, DriverConfig::default());
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let h = Header {
        version: VERSION,
        kind: PacketKind::Data,
        key_id: 0,
        sender_id: 42,
        counter: 1,
    };
    let d = Keyring::with_cluster_key(&Key::generate())
        .seal(&h, &[0u8; 40])
        .unwrap();
    let before = s.dropped()["bad_auth"];
    raw.send_to(&d, s.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        raw.recv_from(&mut buf).is_err(),
        "a forged datagram was answered"
    );
    // Counted by the server's thread, which a loaded machine may run late.
    eventually(WAIT, || s.dropped()["bad_auth"] != before);
    assert_eq!(s.dropped()["bad_auth"], before + 1);
    // The same datagram sealed with the right key is answered (with the
    // first-contact challenge), so the silence above is meaningful.
    let d = Keyring::with_cluster_key(&key)
        .seal(&h, &[0u8; 40])
        .unwrap();
    // (The server's thread may run late: wait for it longer than above.)
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.send_to(&d, s.local_addr().unwrap()).unwrap();
    assert!(
        raw.recv_from(&mut buf).is_ok(),
        "an authentic datagram got no challenge"
    );
}

#[test]
fn proto_connected_socket_driver() {
    // The home's situation: a socket connected to its one peer.
    let key = Key::generate();
    let s = server(&key, DriverConfig::default());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(s.local_addr().unwrap()).unwrap();
    let c = Driver::from_socket(
        sock,
        Keyring::with_cluster_key(&key),
        DriverConfig::default(),
    )
    .unwrap();
    assert_eq!(c.call(peer(&s), vec![1, 2, 3], T).unwrap(), vec![3, 2, 1]);
}

#[test]
fn proto_lost_peer_reported() {
    let key = Key::generate();
    let mut cfg = DriverConfig::default();
    // An idle timeout a starved test thread cannot outlast by accident
    // (two tests share the CI machine's two CPUs).
    cfg.endpoint.idle_timeout = Duration::from_secs(3);
    cfg.endpoint.keepalive_interval = Duration::from_millis(300);
    let s = server(&key, cfg.clone());
    let c = Driver::bind("127.0.0.1:0", Keyring::with_cluster_key(&key), cfg).unwrap();
    let sp = peer(&s);
    assert_eq!(c.call(sp, vec![1], T).unwrap(), vec![1]);
    c.watch(sp).unwrap();
    // Alive and watched: not lost.
    assert!(c.lost().recv_timeout(Duration::from_secs(4)).is_err());
    let gone = Instant::now();
    drop(s);
    let lost = c
        .lost()
        .recv_timeout(Duration::from_secs(20))
        .expect("peer not reported lost");
    assert_eq!(lost, sp);
    // Reported by the idle timeout, not by some earlier mistake: no sooner
    // than it, and not much later (timing itself is BENCHMARKS.md's).
    let after = gone.elapsed();
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(10),
        "lost after {after:?}"
    );
}

/// LAN-sized datagrams (as between real machines; 1500 chunks each way)
/// to an IPv4 and an IPv6 peer: every byte arrives, both ways, and nothing
/// fails authentication.
#[test]
fn proto_small_datagrams_ipv4_and_ipv6() {
    let key = Key::generate();
    let mut cfg = DriverConfig::default();
    cfg.endpoint.loopback_max_datagram = 1400;
    let data: Vec<u8> = (0..(2u32 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2_246_822_519).to_le_bytes())
        .collect();
    let mut expect = data.clone();
    expect.reverse();
    for local in ["127.0.0.1:0", "[::1]:0"] {
        let bind = |cfg: DriverConfig| {
            Driver::bind(local, Keyring::with_cluster_key(&key), cfg).expect("test setup")
        };
        let s = bind(cfg.clone());
        let rx = s.incoming().clone();
        thread::spawn(move || {
            for inc in rx {
                let mut p = inc.payload.clone();
                p.reverse();
                let _ = inc.respond(p);
            }
        });
        let c = bind(cfg.clone());
        let answer = c.call(peer(&s), data.clone(), T).unwrap();
        assert!(answer == expect, "{local}: 2 MiB round trip corrupted");
        assert_eq!(s.dropped()["bad_auth"] + c.dropped()["bad_auth"], 0);
    }
}
