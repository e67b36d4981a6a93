//! The network-namespace harness itself, and the design's one-port claim:
//! real UDP between namespaces, routing limits, fault injection, mount
//! views, cleanup.
// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers
// #[test] functions themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use diatom_tests::netns::{Cluster, MountView, Netns};
use diatom_tests::require_root;
use diatom_tests::testdir::TestDir;

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// Receives datagrams until `quiet` passes with none, returning payloads
/// with their sources.
fn drain(sock: &UdpSocket, quiet: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        got.push((buf[..n].to_vec(), from));
    }
    got
}

#[test]
fn udp_between_namespaces_over_veth() {
    if !require_root("udp_between_namespaces_over_veth") {
        return;
    }
    let c = Cluster::new("udp", 1).unwrap();
    let n1 = c.node(1).unwrap();
    let server = c.central.udp_bind(v4(n1.central_addr, 12036)).unwrap();
    let client = n1.ns.udp_bind(v4(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    // The sockets were made in the namespaces; this thread uses them as is.
    client
        .send_to(b"hello central", v4(n1.central_addr, 12036))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello central");
    assert_eq!(from.ip(), n1.addr);
    server.send_to(b"hello node", from).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello node");
    assert_eq!(from, v4(n1.central_addr, 12036));

    // A process started in the namespace sees the namespace's addresses.
    let addrs = n1.ns.exec("ip", &["-o", "-4", "addr", "show"]).unwrap();
    assert!(addrs.contains(&format!("{}/24", n1.addr)), "{addrs}");
    assert!(!addrs.contains(&n1.central_addr.to_string()), "{addrs}");
    // The test's own namespace has none of it.
    let host = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains(&n1.addr.to_string()));
}

#[test]
fn central_only_address_is_unreachable_from_nodes() {
    if !require_root("central_only_address_is_unreachable_from_nodes") {
        return;
    }
    let c = Cluster::new("conly", 2).unwrap();
    let only = c.central_only_addr();
    let server = c.central.udp_bind(v4(only, 9000)).unwrap();
    let tcp = c
        .central
        .run(|| std::net::TcpListener::bind(v4(only, 9001)))
        .unwrap()
        .unwrap();

    // Central itself reaches it.
    let local = c.central.udp_bind(v4(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    local.send_to(b"from central", v4(only, 9000)).unwrap();
    let got = drain(&server, Duration::from_millis(300));
    assert_eq!(got.len(), 1);
    assert!(c
        .central
        .run(|| std::net::TcpStream::connect(v4(only, 9001)))
        .unwrap()
        .is_ok());
    drop(tcp.accept().unwrap());

    for node in &c.nodes {
        let s = node.ns.udp_bind(v4(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let err = s.send_to(b"from node", v4(only, 9000)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
        let tcp_err = node
            .ns
            .run(|| std::net::TcpStream::connect_timeout(&v4(only, 9001), Duration::from_secs(1)))
            .unwrap()
            .unwrap_err();
        assert_eq!(tcp_err.raw_os_error(), Some(libc::ENETUNREACH), "{tcp_err}");
    }
    // Nodes cannot reach each other either.
    let (n1, n2) = (c.node(1).unwrap(), c.node(2).unwrap());
    let s = n1.ns.udp_bind(v4(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    assert!(s.send_to(b"x", v4(n2.addr, 9000)).is_err());
    assert!(drain(&server, Duration::from_millis(200)).is_empty());
}

/// Sends `count` numbered datagrams from `tx` to `to`, paced so socket
/// buffers never overflow, and counts how many `rx` receives.
fn delivered(tx: &UdpSocket, rx: &UdpSocket, to: SocketAddr, count: u32) -> u32 {
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut received = 0;
    let mut buf = [0u8; 64];
    for batch in 0..count / 50 {
        for i in 0..50 {
            // A lost datagram must not be an error for the sender.
            tx.send_to(&(batch * 50 + i).to_be_bytes(), to).unwrap();
        }
        // Reading between batches keeps at most 50 datagrams queued.
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while rx.recv_from(&mut buf).is_ok() {
            received += 1;
        }
    }
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while rx.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    received
}

#[test]
fn nft_drop_rule_drops_about_the_asked_share_and_link_down_all() {
    if !require_root("nft_drop_rule_drops_about_the_asked_share_and_link_down_all") {
        return;
    }
    let c = Cluster::new("nft", 1).unwrap();
    let n1 = c.node(1).unwrap();
    let to = v4(n1.central_addr, 12036);
    let rx = c.central.udp_bind(to).unwrap();
    let tx = n1.ns.udp_bind(v4(Ipv4Addr::UNSPECIFIED, 0)).unwrap();

    // Control: without a rule nothing is lost, so losses below are the rule's.
    assert_eq!(delivered(&tx, &rx, to, 2000), 2000);

    // 30% dropped on central's side of the link. Binomial(2000, 0.7) has a
    // standard deviation of 20.5: 1250..=1550 is over 7 of them either side.
    c.central.nft_drop_percent(&n1.link.a_if, 30).unwrap();
    let got = delivered(&tx, &rx, to, 2000);
    assert!(
        (1250..=1550).contains(&got),
        "30% drop delivered {got}/2000"
    );

    // Applied on the node's side, outgoing only.
    c.central.nft_clear().unwrap();
    n1.ns
        .nft_drop_percent_dir(&n1.link.b_if, diatom_tests::netns::Direction::Out, 80)
        .unwrap();
    let got = delivered(&tx, &rx, to, 2000);
    assert!((250..=550).contains(&got), "80% drop delivered {got}/2000");
    n1.ns.nft_clear().unwrap();
    assert_eq!(delivered(&tx, &rx, to, 500), 500);

    assert!(c.central.nft_drop_percent("n1", 101).is_err());
    assert!(c.central.nft_drop_percent("n1; flush ruleset", 1).is_err());
    // A second rule on the same interface replaces the first.
    c.central.nft_drop_percent(&n1.link.a_if, 100).unwrap();
    assert_eq!(delivered(&tx, &rx, to, 100), 0);
    c.central.nft_drop_percent(&n1.link.a_if, 0).unwrap();
    assert_eq!(delivered(&tx, &rx, to, 500), 500);
    c.central.nft_clear().unwrap();

    // Link down: nothing passes; up again: everything does.
    c.central.link_down(&n1.link.a_if).unwrap();
    for _ in 0..20 {
        // Sending may fail or be silently dropped; either way nothing arrives.
        let _ = tx.send_to(b"lost", to);
    }
    assert!(drain(&rx, Duration::from_millis(300)).is_empty());
    c.central.link_up(&n1.link.a_if).unwrap();
    // The veth carrier and the neighbour entry take a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 16];
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        let _ = tx.send_to(b"back", to);
        // Datagrams sent while the link was down may have waited in the
        // node's stack (its side saw no carrier) and arrive now.
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            if &buf[..n] == b"back" {
                break;
            }
            assert_eq!(&buf[..n], b"lost");
        }
        assert!(Instant::now() < deadline, "link did not come back");
    }
}

/// The design's one-port claim: sockets sharing port 12036 through
/// SO_REUSEADDR, some connected, split incoming datagrams by peer.
/// `unconnected_first` is the order in a running central (daemon socket
/// first, per-job sockets later); the other order is a central restarted
/// while job homes keep their connected sockets.
fn one_port_claim(unconnected_first: bool) {
    let central = Netns::new("oneport-c").unwrap();
    let peers = Netns::new("oneport-p").unwrap();
    let link =
        diatom_tests::netns::Link::veth(&central, &peers, "10.77.0.1/24", "10.77.0.2/24").unwrap();
    assert_ne!(link.a_if, link.b_if);
    let central_ip = Ipv4Addr::new(10, 77, 0, 1);
    let peer_ip = Ipv4Addr::new(10, 77, 0, 2);
    let port = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 12036);

    // Three peers: 1 and 2 get their own connected socket on central, 3 talks
    // to the unconnected one. 1 and 2 share an IP (per-job ports on one node).
    let p: Vec<UdpSocket> = (1..=3)
        .map(|i| peers.udp_bind(v4(peer_ip, 5000 + i)).unwrap())
        .collect();
    let bind_connected = |i: usize| {
        let s = central.udp_bind_reuseaddr(port).unwrap();
        s.connect(p[i].local_addr().unwrap()).unwrap();
        s
    };
    let (unconnected, c1, c2) = if unconnected_first {
        let u = central.udp_bind_reuseaddr(port).unwrap();
        (u, bind_connected(0), bind_connected(1))
    } else {
        let c1 = bind_connected(0);
        let c2 = bind_connected(1);
        (central.udp_bind_reuseaddr(port).unwrap(), c1, c2)
    };

    // Interleaved sends, 20 from each peer.
    let to = v4(central_ip, 12036);
    for round in 0u8..20 {
        for (i, s) in p.iter().enumerate() {
            s.send_to(&[i as u8 + 1, round], to).unwrap();
        }
    }
    let quiet = Duration::from_millis(300);
    let by_peer = |got: Vec<(Vec<u8>, SocketAddr)>| {
        let mut m: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for (d, from) in got {
            assert_eq!(
                from.port(),
                5000 + u16::from(d[0]),
                "source matches payload"
            );
            m.entry(d[0]).or_default().push(d[1]);
        }
        m
    };
    let all: Vec<u8> = (0..20).collect();
    assert_eq!(
        by_peer(drain(&c1, quiet)),
        BTreeMap::from([(1, all.clone())])
    );
    assert_eq!(
        by_peer(drain(&c2, quiet)),
        BTreeMap::from([(2, all.clone())])
    );
    assert_eq!(
        by_peer(drain(&unconnected, quiet)),
        BTreeMap::from([(3, all)])
    );

    // And replies from the connected sockets leave from port 12036.
    c1.send(b"to peer 1").unwrap();
    let got = drain(&p[0], quiet);
    assert_eq!(got, vec![(b"to peer 1".to_vec(), to)]);
    assert!(drain(&p[1], Duration::from_millis(50)).is_empty());
}

#[test]
fn one_port_claim_unconnected_bound_first() {
    if !require_root("one_port_claim_unconnected_bound_first") {
        return;
    }
    one_port_claim(true);
}

#[test]
fn one_port_claim_unconnected_bound_last() {
    if !require_root("one_port_claim_unconnected_bound_last") {
        return;
    }
    one_port_claim(false);
}

#[test]
fn mount_view_hides_a_directory_from_one_process_only() {
    if !require_root("mount_view_hides_a_directory_from_one_process_only") {
        return;
    }
    let dir = TestDir::new("mountview").unwrap();
    let secret = dir.join("central-only");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("data.txt"), b"central data").unwrap();
    let shown = dir.join("shown");
    std::fs::create_dir(&shown).unwrap();
    std::fs::write(shown.join("node.txt"), b"node data").unwrap();

    let ns = Netns::new("mnt").unwrap();
    let ls = |view: Option<&MountView>, path: &std::path::Path| {
        let mut cmd = match view {
            Some(v) => ns.command_with_mounts("ls", v),
            None => ns.command("ls"),
        };
        let out = cmd.arg("-A").arg(path).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(ls(None, &secret), "data.txt\n");
    let view = MountView::new().hide(&secret);
    assert_eq!(ls(Some(&view), &secret), "");
    // A bind puts something inside a hidden tree (its mount point is made
    // in the tmpfs, not on the real directory).
    let view = MountView::new()
        .hide(&secret)
        .bind(&shown, secret.join("sub"));
    assert_eq!(ls(Some(&view), &secret), "sub\n");
    assert_eq!(ls(Some(&view), &secret.join("sub")), "node.txt\n");
    // Nothing leaked into the test's own view.
    assert_eq!(
        std::fs::read(secret.join("data.txt")).unwrap(),
        b"central data"
    );
    assert!(!secret.join("sub").exists());
}

#[test]
fn dropping_a_namespace_kills_its_processes_and_deletes_it() {
    if !require_root("dropping_a_namespace_kills_its_processes_and_deletes_it") {
        return;
    }
    let dir = TestDir::new("nsdrop").unwrap();
    let ns = Netns::new("drop").unwrap();
    let handle = ns.handle_path();
    assert!(handle.exists());
    let mut sh = ns.command("sh");
    sh.args(["-c", "echo starting >&2; echo out; exec sleep 1000"]);
    let mut daemon = ns.spawn_daemon("sleeper", sh, dir.path()).unwrap();
    assert!(daemon.wait_for_stderr("starting", Duration::from_secs(5)));
    // A process the harness does not track, with a grandchild.
    let mut untracked = ns
        .command("sh")
        .args(["-c", "sleep 1000 & exec sleep 1000"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns.pids().len() < 3 {
        assert!(Instant::now() < deadline, "pids: {:?}", ns.pids());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ns.pids().contains(&daemon.pid()));
    assert_eq!(daemon.stdout(), "out\n");

    // Killing one daemon through the namespace.
    ns.kill(&mut daemon).unwrap();
    assert!(daemon.try_wait().unwrap().is_some());
    let pids = ns.pids();
    drop(ns);
    assert!(!handle.exists(), "namespace handle removed");
    let status = untracked.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next());
        assert!(
            matches!(state, None | Some(Some('Z' | 'X'))),
            "pid {p} still alive: {stat}"
        );
    }
}
