//! Faults, hostile input and load on a real cluster (issue 9): packet loss
//! on a node's link (nftables), a node daemon killed or its link cut
//! mid-job, central restarted under a running job, hostile datagrams and a
//! flood sent to both daemons from inside the cluster, and 200 concurrent
//! jobs on two nodes. Each checks what a user sees (`diatom exec`'s output
//! and exit status, `nodes`/`ps`/`status --json`), never internals.
//!
//! How long detection takes is printed (`eprintln!`) and recorded in
//! `BENCHMARKS.md`; the assertions use the contract's bounds (a lost node
//! or home noticed within 5 s) with nothing tighter.
// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers
// #[test] functions themselves.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diatom_tests::central_files::{
    assert_like_local, assert_node_lacks, local_in, remote, same_as_local_timed, write_big, Files,
};
use diatom_tests::cluster::{
    assert_diatom_failure, describe, node_name, set_mode, show, text, unique, unique_sleep,
    wait_gone, DiatomCluster, Feed, Spawned, PORT,
};
use diatom_tests::hostile::{snmp_counter, vm_kib, Capture, Hostile, Kind};
use diatom_tests::require_root;
use dscp_dicp::Key;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Size of the file the loss tests read and write: 64 MiB.
const LOSS_FILE: usize = 64 << 20;
/// How long one job over the lossy link may take before the test gives up.
const LOSS_RUN: Duration = Duration::from_secs(300);

/// Central-only files (see [`Files`]) and a cluster of `nodes` nodes that
/// cannot see them; checked on node 1.
fn central_only_cluster(name: &str, nodes: u8) -> (Files, DiatomCluster) {
    let files = Files::new(name);
    let c = DiatomCluster::builder(nodes)
        .name(name)
        .node_mounts(files.node_view())
        .start();
    assert_node_lacks(&c, &files.only);
    (files, c)
}

/// `sh -c SCRIPT` through `diatom exec` from `cwd` and locally, asserted
/// identical; returns how long the remote run took.
fn remote_like_local(c: &DiatomCluster, cwd: &Path, script: &str, timeout: Duration) -> Duration {
    same_as_local_timed(c, cwd, &["sh", "-c", script], timeout).1
}

/// `runs` jobs on node 1 while nftables drops `percent` % of the packets
/// in both directions on its link: each reads a fresh 64 MiB central-only
/// file (so the node's cache cannot answer), writes a copy of it back to
/// central and prints both checksums, which must match the local run.
fn loss_runs(name: &str, percent: u8, runs: u32) {
    let (files, c) = central_only_cluster(name, 1);
    let dir = files.only.as_path();
    let node = c.net().node(1).unwrap();
    node.ns.nft_drop_percent(&node.link.b_if, percent).unwrap();
    let script = "cat in.bin > out.bin && sha256sum in.bin out.bin";
    let mut times = Vec::new();
    let argv = ["sh", "-c", script];
    for run in 0..runs {
        write_big(&dir.join("in.bin"), LOSS_FILE, 0x1055 + u64::from(run));
        let _ = std::fs::remove_file(dir.join("out.bin"));
        let start = Instant::now();
        let r = remote(&c, dir, &argv, LOSS_RUN);
        let took = start.elapsed();
        // The copy the job wrote reached central whole (checked before the
        // local reference run writes it again).
        let (a, b) = (
            std::fs::read(dir.join("in.bin")).unwrap(),
            std::fs::read(dir.join("out.bin")).unwrap_or_default(),
        );
        assert!(
            a == b,
            "run {run}: out.bin on central ({} bytes) differs from in.bin: {}",
            b.len(),
            describe(&r)
        );
        let l = local_in(dir, &argv, None, LOSS_RUN);
        assert!(l.status.success(), "local reference run: {}", describe(&l));
        assert_like_local(&r, &l, &format!("run {run} with {percent}% loss"));
        eprintln!("{percent}% loss, run {run}: 64 MiB in and out in {took:?}");
        times.push(took);
    }
    node.ns.nft_clear().unwrap();
    times.sort();
    eprintln!(
        "{percent}% loss: {runs} of {runs} runs identical to the local run; \
         median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn faults_loss_10_percent_64mib() {
    if !require_root("faults_loss_10_percent_64mib") {
        return;
    }
    loss_runs("loss10", 10, 20);
}

#[test]
fn faults_loss_1_percent_64mib() {
    if !require_root("faults_loss_1_percent_64mib") {
        return;
    }
    loss_runs("loss1", 1, 10);
}

// ----- lost nodes and homes ---------------------------------------------------

/// How a node is lost in [`node_lost_mid_job`].
#[derive(Debug, Clone, Copy)]
enum NodeLoss {
    /// Its daemon is SIGKILLed (the kernel answers the job's datagrams
    /// with ICMP port unreachable from then on).
    DaemonKilled,
    /// Its link goes down (nothing answers at all).
    LinkCut,
}

/// A 2-node cluster runs a long job; its node is lost as `how` says.
/// `diatom exec` must exit 255 with one `diatom:` line within 5 s, the node
/// must show as down, and the next jobs must go to the other node.
fn node_lost_mid_job(name: &str, how: NodeLoss) {
    let mut c = DiatomCluster::builder(2).name(name).start();
    let arg = unique_sleep(300);
    let mut s = Spawned::spawn(c.diatom_cmd(["exec", "sleep", &arg]), Feed::Null);
    let (node, _) = c.wait_job_process(&arg, Duration::from_secs(30));
    let other = 3 - node;
    let lost = Instant::now();
    match how {
        NodeLoss::DaemonKilled => c.kill_node(node),
        NodeLoss::LinkCut => {
            let n = c.net().node(node).unwrap();
            n.ns.link_down(&n.link.b_if).unwrap();
        }
    }
    let Some(out) = s.wait_timeout(Duration::from_secs(30)) else {
        panic!(
            "{how:?}: diatom exec still runs 30 s after node{node} was lost; stderr {}",
            show(&s.stderr_so_far())
        );
    };
    let took = s.exited_at().unwrap().saturating_duration_since(lost);
    assert_diatom_failure(
        &out,
        &format!("{how:?}: diatom exec after node{node} was lost"),
    );
    eprintln!(
        "{how:?}: diatom exec failed {took:?} after node{node} was lost: {}",
        text(&out.stderr).trim()
    );
    assert!(
        took < Duration::from_secs(5),
        "{how:?}: diatom exec noticed the lost node only after {took:?} (want < 5 s)"
    );
    let name = node_name(node);
    c.wait_node_state(&name, "down", Duration::from_secs(30));
    // An upper bound: polling starts once `diatom exec` has exited.
    eprintln!(
        "{how:?}: {name} shown down at most {:?} after it was lost",
        lost.elapsed()
    );
    for _ in 0..2 {
        let (out, job) = c.exec_job(["/bin/echo", "elsewhere"]);
        assert!(
            out.status.success() && out.stdout == b"elsewhere\n",
            "{how:?}: a job after {name} was lost: {}",
            describe(&out)
        );
        assert_eq!(
            job["node"],
            node_name(other),
            "{how:?}: a new job must go to the node that is up: {job}"
        );
    }
    if let NodeLoss::LinkCut = how {
        // The node's daemon lives on, cut off from the job's home: it must
        // end the job itself.
        wait_gone(
            &arg,
            Duration::from_secs(30),
            "the job on a node cut off from its home",
        );
        eprintln!(
            "{how:?}: the job's processes on {name} gone at most {:?} after the cut",
            lost.elapsed()
        );
        // The link back: the node is up again and takes jobs.
        let n = c.net().node(node).unwrap();
        n.ns.link_up(&n.link.b_if).unwrap();
        c.wait_nodes_up(std::slice::from_ref(&name), Duration::from_secs(30));
        let (out, job) = c.exec_job(["--node", &name, "/bin/echo", "back"]);
        assert!(
            out.status.success() && out.stdout == b"back\n",
            "{}",
            describe(&out)
        );
        assert_eq!(job["node"], name);
    }
}

#[test]
fn faults_node_daemon_killed_mid_job() {
    if !require_root("faults_node_daemon_killed_mid_job") {
        return;
    }
    node_lost_mid_job("nodekill", NodeLoss::DaemonKilled);
}

#[test]
fn faults_node_link_cut_mid_job() {
    if !require_root("faults_node_link_cut_mid_job") {
        return;
    }
    node_lost_mid_job("nodecut", NodeLoss::LinkCut);
}

#[test]
fn faults_killed_home_kills_job() {
    if !require_root("faults_killed_home_kills_job") {
        return;
    }
    let c = DiatomCluster::builder(1).name("home").start();
    let arg = unique_sleep(300);
    let mut s = Spawned::spawn(c.diatom_cmd(["exec", "sleep", &arg]), Feed::Null);
    let (node, p) = c.wait_job_process(&arg, Duration::from_secs(30));
    eprintln!("job runs on node{node} as {p:?}");
    s.kill();
    let took = wait_gone(
        &arg,
        Duration::from_secs(5),
        "the job's processes after `diatom exec` was SIGKILLed",
    );
    eprintln!("job gone {took:?} after its home died");
    // Central no longer lists it as running.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = c.ps_json(false);
        if ps.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`diatom ps --json` still lists a running job 10 s after its home died: {ps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ----- central restart ----------------------------------------------------------

/// Central crashes (SIGKILL) and restarts while a job runs: the nodes
/// re-register by themselves, `ps --all` still lists the jobs from before,
/// new jobs run, and the job that ran through the restart completes: its
/// home (`diatom exec`) talks to the node directly, so central is not on
/// its path; the node reports the job's end to the new central.
#[test]
fn faults_central_restart_under_a_running_job() {
    if !require_root("faults_central_restart_under_a_running_job") {
        return;
    }
    let (files, mut c) = central_only_cluster("restart", 2);
    let dir = files.only.as_path();
    std::fs::write(dir.join("data.txt"), "written on central\n").unwrap();
    set_mode(&dir.join("data.txt"), 0o644);
    let (out, before) = c.exec_job(["/bin/echo", "before"]);
    assert!(out.status.success(), "{}", describe(&out));

    // The job sleeps through the restart, then reads a central-only file
    // and exits 3.
    let arg = unique_sleep(4);
    let script = format!("sleep {arg}; cat data.txt; echo done; exit 3");
    let mut cmd = c.diatom_cmd(["exec", "--", "sh", "-c", &script]);
    cmd.current_dir(dir);
    let mut s = Spawned::spawn(cmd, Feed::Null);
    c.wait_job_process(&arg, Duration::from_secs(30));
    let restarted = Instant::now();
    c.restart_central_with(Signal::SIGKILL);
    let names = [node_name(1), node_name(2)];
    c.wait_nodes_up(&names, Duration::from_secs(30));
    eprintln!(
        "both nodes up again {:?} after the restart",
        restarted.elapsed()
    );

    let out = s.wait_or_panic(
        Duration::from_secs(60),
        "the job running through the restart",
    );
    assert!(
        out.status.code() == Some(3)
            && out.stdout == b"written on central\ndone\n"
            && out.stderr.is_empty(),
        "the job that ran through central's restart should complete normally: {}",
        describe(&out)
    );
    let all = c.ps_json(true);
    let old = all
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == before["id"])
        .unwrap_or_else(|| panic!("job {} lost in the restart: {all}", before["id"]));
    assert_eq!(old["state"], "exited", "{old}");
    // The job that ran through the restart is in the history with its
    // real end, once the node has told the new central.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = c.ps_json(true);
        let through = all
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["program"].as_str().is_some_and(|p| p.contains("sh")))
            .cloned();
        if through
            .as_ref()
            .is_some_and(|j| j["state"] == "exited" && j["exit_status"] == 3)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job that ran through the restart should show exited with 3: {all}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in &names {
        let (out, job) = c.exec_job(["--node", node, "/bin/echo", "after"]);
        assert!(
            out.status.success() && out.stdout == b"after\n",
            "a job on {node} after the restart: {}",
            describe(&out)
        );
        assert_eq!(&job["node"], node);
    }
}

// ----- hostile datagrams -------------------------------------------------------

/// Datagrams of each kind sent one by one before the flood.
const EACH_KIND: usize = 300;
/// The flood, to each daemon.
const FLOOD: usize = 100_000;
/// How much a daemon's peak resident memory may exceed its resident memory
/// before the hostile traffic.
const MEMORY_BOUND_KIB: u64 = 32 << 10;

/// Sum of a `dropped` object's counters.
fn dropped_total(dropped: &Value) -> u64 {
    dropped
        .as_object()
        .map(|o| o.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// One daemon under attack: where it listens, its pid, and what it showed
/// before.
struct Target {
    name: &'static str,
    pid: i32,
    rss_before: u64,
    kernel_drops_before: u64,
    counted_before: u64,
}

impl Target {
    fn new(name: &'static str, pid: i32, counted: u64) -> Target {
        Target {
            name,
            pid,
            rss_before: vm_kib(pid).unwrap().0,
            kernel_drops_before: kernel_drops(pid),
            counted_before: counted,
        }
    }
}

/// Datagrams the kernel dropped in `pid`'s network namespace before a
/// socket saw them: full receive buffers, and IP fragments never
/// reassembled (oversized datagrams arrive as fragments).
fn kernel_drops(pid: i32) -> u64 {
    // InErrors: every datagram UDP dropped on receive (a full socket
    // buffer, RcvbufErrors, but also the host's UDP memory limit,
    // MemErrors, and bad checksums).
    snmp_counter(pid, "Udp", "InErrors").unwrap_or(0)
        + snmp_counter(pid, "Ip", "ReasmFails").unwrap_or(0)
}

/// Sends `n` hostile datagrams (cycling through every kind) from `sock` to
/// `to`, paced so a debug-built daemon mostly keeps up; returns how many of
/// each kind were sent.
fn send_hostile(sock: &UdpSocket, to: SocketAddr, h: &mut Hostile, n: usize) -> [usize; 6] {
    let mut sent = [0usize; 6];
    for i in 0..n {
        let (kind, d) = h.next_datagram();
        sock.send_to(&d, to).unwrap();
        sent[Kind::ALL.iter().position(|k| *k == kind).unwrap()] += 1;
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent
}

/// Every datagram `sock` has received (waiting `quiet` for the last one).
fn answers(sock: &UdpSocket, quiet: Duration) -> Vec<(usize, SocketAddr)> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut got = Vec::new();
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        got.push((n, from));
    }
    got
}

#[test]
fn faults_hostile_datagrams_and_flood() {
    if !require_root("faults_hostile_datagrams_and_flood") {
        return;
    }
    let (files, c) = central_only_cluster("hostile", 1);
    let dir = files.only.as_path();
    write_big(&dir.join("in.bin"), 8 << 20, 0x4057);
    let n1 = c.net().node(1).unwrap();
    let key = Key::load(c.key()).unwrap();

    // Capture real traffic on node1's link while a job runs: heartbeats
    // (cluster key) and the job's session (its own key).
    let cap = Capture::open(&n1.ns).unwrap();
    let mut cmd = c.diatom_cmd(["exec", "--", "sha256sum", "in.bin"]);
    cmd.current_dir(dir);
    let mut job = Spawned::spawn(cmd, Feed::Null);
    let captured: Vec<Vec<u8>> = cap
        .udp(PORT, 300, Duration::from_secs(30))
        .into_iter()
        .map(|d| d.payload)
        .collect();
    let out = job.wait_or_panic(Duration::from_secs(60), "the job during the capture");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        captured.len() >= 10,
        "test setup: only {} datagrams captured on node1's link",
        captured.len()
    );
    eprintln!("captured {} datagrams on node1's link", captured.len());

    let central_pid = c.central_daemon().unwrap().pid().as_raw();
    let node_pid = c.node_daemon(1).unwrap().pid().as_raw();
    let targets = [
        Target::new(
            "central",
            central_pid,
            dropped_total(&c.status_json()["dropped"]),
        ),
        Target::new(
            "node1",
            node_pid,
            dropped_total(&c.node_json("node1").unwrap()["dropped"]),
        ),
    ];
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    // To central from the node's network, to the node from central's.
    let senders = [
        (
            n1.ns.udp_bind(any).unwrap(),
            SocketAddr::V4(SocketAddrV4::new(n1.central_addr, PORT)),
        ),
        (
            c.net().central.udp_bind(any).unwrap(),
            SocketAddr::V4(SocketAddrV4::new(n1.addr, PORT)),
        ),
    ];

    // Real jobs on the attacked node meanwhile, each checked against the
    // local run.
    let script = "sha256sum in.bin && seq 1 20000 | md5sum";
    let stop = AtomicBool::new(false);
    let (jobs_ok, sent) = std::thread::scope(|s| {
        let jobs = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 3 {
                remote_like_local(&c, dir, script, Duration::from_secs(120));
                n += 1;
            }
            n
        });
        let floods: Vec<_> = senders
            .iter()
            .enumerate()
            .map(|(i, (sock, to))| {
                let captured = captured.clone();
                let key = &key;
                s.spawn(move || {
                    let mut h = Hostile::new(key, captured, 0x5eed + i as u64);
                    // Each kind on its own, then the flood.
                    let mut sent = 0;
                    for kind in Kind::ALL {
                        for _ in 0..EACH_KIND {
                            sock.send_to(&h.make(kind), *to).unwrap();
                            sent += 1;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let mut h = h.oversized_up_to(4000);
                    let start = Instant::now();
                    let per_kind = send_hostile(sock, *to, &mut h, FLOOD);
                    eprintln!(
                        "flood to {to}: {FLOOD} datagrams in {:?}, by kind {:?}: {per_kind:?}",
                        start.elapsed(),
                        Kind::ALL
                    );
                    sent + FLOOD
                })
            })
            .collect();
        let sent: Vec<usize> = floods.into_iter().map(|f| f.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        (jobs.join().unwrap(), sent)
    });
    eprintln!("{jobs_ok} real jobs finished correctly during the attack");
    c.assert_daemons_alive();

    // Nothing was answered.
    for ((sock, to), n) in senders.iter().zip(&sent) {
        let got = answers(sock, Duration::from_secs(2));
        assert!(
            got.is_empty(),
            "{to} answered {} of the {n} hostile datagrams sent to it: {:?}",
            got.len(),
            &got[..got.len().min(10)]
        );
        eprintln!("{to}: {n} hostile datagrams sent, 0 answered");
    }

    // Every datagram is accounted for: counted by the daemon, or dropped
    // by the kernel before the daemon could read it.
    for (t, n) in targets.iter().zip(&sent) {
        let n = *n as u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (counted, kernel) = loop {
            let counted = match t.name {
                "central" => dropped_total(&c.status_json()["dropped"]),
                _ => dropped_total(&c.node_json("node1").unwrap()["dropped"]),
            };
            let counted = counted - t.counted_before;
            let kernel = kernel_drops(t.pid) - t.kernel_drops_before;
            if counted + kernel >= n || Instant::now() > deadline {
                break (counted, kernel);
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!(
            "{}: {n} hostile datagrams: {counted} counted as dropped by the daemon, \
             {kernel} dropped by the kernel before it read them",
            t.name
        );
        assert!(
            counted + kernel >= n,
            "{}: only {counted} of {n} hostile datagrams counted as dropped \
             ({kernel} more dropped by the kernel)",
            t.name
        );
        let (rss, peak) = vm_kib(t.pid).unwrap();
        eprintln!(
            "{}: resident {} KiB before, {rss} KiB after, peak {peak} KiB",
            t.name, t.rss_before
        );
        assert!(
            peak <= t.rss_before + MEMORY_BOUND_KIB,
            "{}: peak resident memory {peak} KiB, more than {} KiB over the {} KiB before",
            t.name,
            MEMORY_BOUND_KIB,
            t.rss_before
        );
    }
    // Still serving.
    remote_like_local(&c, dir, script, Duration::from_secs(120));
}

// ----- load -----------------------------------------------------------------------

/// Jobs submitted at once in the load test.
const LOAD_JOBS: usize = 200;
/// `--slots` of each node in the load test.
const LOAD_SLOTS: u32 = 3;
/// How long the load test's jobs may take, all together.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// 200 short jobs submitted at once to a 2-node cluster with 3 slots each:
/// every one finishes with its own output, central queues the rest while
/// the slots are full (it neither fails them nor overfills a node), and the
/// history holds exactly those 200 jobs, all exited 0.
#[test]
fn faults_load_200_concurrent_jobs() {
    if !require_root("faults_load_200_concurrent_jobs") {
        return;
    }
    let c = DiatomCluster::builder(2)
        .name("load")
        .slots(LOAD_SLOTS)
        .start();
    let before = c.ps_json(true).as_array().unwrap().len();
    let mark = unique("load");
    let start = Instant::now();
    let mut jobs: Vec<Spawned> = (0..LOAD_JOBS)
        .map(|i| {
            let cmd = c.diatom_cmd([
                "exec",
                "--",
                "sh",
                "-c",
                "sleep 0.2; echo \"job $1\"",
                &mark,
                &i.to_string(),
            ]);
            Spawned::spawn(cmd, Feed::Null)
        })
        .collect();

    // Watch the nodes while the jobs run: never more jobs on a node than
    // its slots, by its own process table and by `nodes --json`.
    let mut most = [0usize; 2];
    let mut most_listed = [0u64; 2];
    while jobs.iter_mut().any(|j| j.try_wait().is_none()) {
        for i in 1..=2u8 {
            // Distinct jobs (the last argument), not processes: `sh` forks
            // before it execs `sleep`, and the child has the same arguments
            // for a moment.
            let running = c
                .node_processes(i)
                .iter()
                .filter(|p| p.cmdline.iter().any(|a| a == &mark))
                .filter_map(|p| p.cmdline.last().cloned())
                .collect::<std::collections::BTreeSet<String>>()
                .len();
            most[usize::from(i - 1)] = most[usize::from(i - 1)].max(running);
        }
        for n in c.nodes_json().as_array().unwrap() {
            let i = usize::from(n["name"] != "node1");
            most_listed[i] = most_listed[i].max(n["slots_used"].as_u64().unwrap_or(0));
        }
        if start.elapsed() > LOAD_TIMEOUT {
            let left: Vec<String> = jobs
                .iter_mut()
                .enumerate()
                .filter_map(|(i, j)| j.try_wait().is_none().then_some((i, j)))
                .map(|(i, j)| format!("job {i}: stderr {}", show(&j.stderr_so_far())))
                .collect();
            panic!(
                "{} of {LOAD_JOBS} short jobs still run after {LOAD_TIMEOUT:?}: {}\n\
                 nodes: {}\nrunning: {}",
                left.len(),
                left[..left.len().min(5)].join("; "),
                c.nodes_json(),
                c.ps_json(false)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    let mut bad = Vec::new();
    for (i, j) in jobs.iter_mut().enumerate() {
        let out = j.wait_or_panic(Duration::from_secs(10), "a load job");
        if !(out.status.success()
            && out.stdout == format!("job {i}\n").as_bytes()
            && out.stderr.is_empty())
        {
            bad.push(format!("job {i}: {}", describe(&out)));
        }
    }
    eprintln!(
        "{LOAD_JOBS} jobs on 2 nodes x {LOAD_SLOTS} slots in {took:?}; most at once: \
         {most:?} by process table, {most_listed:?} by `nodes --json`"
    );
    assert!(
        bad.is_empty(),
        "{} of {LOAD_JOBS} jobs went wrong:\n{}",
        bad.len(),
        bad[..bad.len().min(10)].join("\n")
    );
    for (i, (m, l)) in most.iter().zip(&most_listed).enumerate() {
        assert!(
            *m <= LOAD_SLOTS as usize && *l <= u64::from(LOAD_SLOTS),
            "node{} ran {m} jobs at once (listed {l}), over its {LOAD_SLOTS} slots",
            i + 1
        );
    }
    // Each `diatom exec` waits up to 2 s for its node's end report to
    // reach central; with 200 of them on two CPUs one may come later.
    let settled = |all: &Value| {
        all.as_array()
            .is_some_and(|a| a.iter().all(|j| j["state"] != "running"))
    };
    let mut all = c.ps_json(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !settled(&all) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        all = c.ps_json(true);
    }
    let new: Vec<&Value> = all.as_array().unwrap()[..].iter().collect();
    let added = new.len() - before;
    let not_exited: Vec<&&Value> = new
        .iter()
        .filter(|j| !(j["state"] == "exited" && j["exit_status"] == 0))
        .collect();
    assert!(
        added == LOAD_JOBS && not_exited.is_empty(),
        "`ps --all` should add exactly {LOAD_JOBS} jobs, all exited 0; it added {added}, \
         and these did not exit 0: {:?}",
        &not_exited[..not_exited.len().min(10)]
    );
}

/// Polls `diatom ps --json` (running jobs) until `pred` holds for whether
/// a job with `arg` in it is listed; panics after 30 s.
fn wait_listed(c: &DiatomCluster, arg: &str, listed: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = c.ps_json(false).to_string();
        if ps.contains(arg) == listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a job with {arg:?} listed: {}, wanted {listed}: {ps}",
            !listed
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn faults_interrupted_while_the_node_fetches() {
    if !require_root("faults_interrupted_while_the_node_fetches") {
        return;
    }
    let (files, c) = central_only_cluster("sigfetch", 1);
    // A program the node must fetch whole before it can start it, slowly:
    // `sleep` padded to 256 MiB (the kernel never reads the padding), over
    // a link that loses a fifth of its packets.
    let prog = files.only.join("bigsleep");
    let sleep = Path::new("/usr/bin/sleep");
    let sleep = if sleep.exists() {
        sleep
    } else {
        Path::new("/bin/sleep")
    };
    std::fs::copy(sleep, &prog).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&prog)
            .unwrap();
        let chunk = diatom_tests::cluster::pseudo_random(1 << 20, 0x5157);
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    set_mode(&prog, 0o755);
    let node = c.net().node(1).unwrap();
    node.ns.nft_drop_percent(&node.link.b_if, 20).unwrap();
    let arg = unique_sleep(60);
    let prog_s = prog.to_str().unwrap();
    let mut s = Spawned::spawn(c.diatom_cmd(["exec", prog_s, &arg]), Feed::Null);
    crate::exec::wait_sigint_blocked(s.pid());
    // Placed: the node has the job and fetches its program.
    wait_listed(&c, &arg, true);
    s.signal(Signal::SIGINT);
    let sent = Instant::now();
    let Some(out) = s.wait_timeout(Duration::from_secs(10)) else {
        panic!("diatom exec of a starting job still runs 10 s after SIGINT");
    };
    eprintln!("diatom exec ended {:?} after SIGINT", sent.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    // Central's record ends (killed: the node dropped the job), and the
    // program never runs on the node.
    wait_listed(&c, &arg, false);
    let all = c.ps_json(true);
    let job = all
        .as_array()
        .and_then(|a| a.iter().find(|j| j.to_string().contains(&arg)))
        .cloned()
        .unwrap_or_else(|| panic!("no record of the job: {all}"));
    assert!(
        job["state"] == "killed" || job["state"] == "exited",
        "the interrupted job's record: {job}"
    );
    wait_gone(&arg, Duration::from_secs(10), "the interrupted job");
    node.ns.nft_clear().unwrap();
    // The node is free for the next job.
    let out = c.diatom(["exec", "true"]);
    assert!(out.status.success(), "{}", describe(&out));
}
