//! The cluster seen by its operator (issue 5): `diatom nodes`, `ps`,
//! `status` and `kill` on a real cluster, nodes going down and coming back,
//! central restarting without losing history, key files the daemons must
//! refuse, a daemon with another key that must never be answered, and the
//! embedded default for a user on a machine with no daemons. Written
//! against `/work/shared/interface.md`.
// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers
// #[test] functions themselves.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use diatom_tests::bin_path;
use diatom_tests::cluster::{
    as_user, assert_diatom_failure, chown, describe, entries_owned_by, find_by, is_rfc3339,
    job_id_arg, keygen, new_session, node_name, processes_in_session, processes_with_arg,
    processes_with_env, pseudo_random, set_mode, show, unique, unique_sleep, world_executable_bin,
    DiatomCluster, Feed, Spawned, NOBODY, PORT,
};
use diatom_tests::cluster::{eventually, text};
use diatom_tests::netns::{run_checked, Netns};
use diatom_tests::require_root;
use diatom_tests::testdir::TestDir;
use nix::sys::signal::Signal;
use serde_json::Value;

/// The drop reasons interface.md names for `diatom status`.
const REASONS: [&str; 5] = ["bad_auth", "replay", "truncated", "oversized", "version"];

/// Sum of a `dropped` object's counters; panics unless it is an object of
/// non-negative integers.
fn dropped_total(dropped: &Value, what: &str) -> u64 {
    let obj = dropped
        .as_object()
        .unwrap_or_else(|| panic!("{what}: `dropped` is not an object: {dropped}"));
    obj.iter()
        .map(|(k, v)| {
            v.as_u64()
                .unwrap_or_else(|| panic!("{what}: dropped.{k} is not a counter: {v}"))
        })
        .sum()
}

fn bad_auth(c: &DiatomCluster) -> u64 {
    c.status_json()["dropped"]["bad_auth"].as_u64().unwrap_or(0)
}

fn wait_gone(arg: &str, timeout: Duration) {
    assert!(
        eventually(timeout, || processes_with_arg(arg).is_empty()),
        "processes with {arg:?} still run {timeout:?} later: {:?}",
        processes_with_arg(arg)
    );
}

/// The object with the same `id` as `job` in a `ps` array.
fn same_job(ps: &Value, job: &Value) -> Option<Value> {
    ps.as_array()?
        .iter()
        .find(|j| j["id"] == job["id"])
        .cloned()
}

#[test]
fn nodes_json_fields_and_table() {
    if !require_root("nodes_json_fields_and_table") {
        return;
    }
    let c = DiatomCluster::builder(2)
        .name("nodes")
        .node_arg(2, "--slots")
        .node_arg(2, "3")
        .start();
    let nodes = c.nodes_json();
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(2),
        "two nodes: {nodes}"
    );
    for i in 1..=2u8 {
        let name = node_name(i);
        let n = find_by(&nodes, "name", &name).unwrap_or_else(|| panic!("{name} in {nodes}"));
        assert_eq!(n["state"], "up", "{n}");
        let addr = c.net().node(i).unwrap().addr.to_string();
        assert!(
            n["address"].as_str().is_some_and(|a| a.contains(&addr)),
            "{name}'s address should be {addr} (as central sees it): {n}"
        );
        let cpus = n["cpus"].as_u64().unwrap_or(0);
        assert!(cpus >= 1, "cpus: {n}");
        let want_slots = if i == 1 { cpus } else { 3 };
        assert_eq!(
            n["slots"].as_u64(),
            Some(want_slots),
            "slots (default: the CPUs; node2 has --slots 3): {n}"
        );
        assert_eq!(n["slots_used"].as_u64(), Some(0), "idle: {n}");
        assert!(
            n["last_seen"].as_str().is_some_and(is_rfc3339),
            "last_seen must be RFC 3339: {n}"
        );
        dropped_total(&n["dropped"], &name);
    }

    let out = c.diatom(["nodes"]);
    let table = text(&out.stdout);
    assert!(
        out.status.success() && table.contains("node1") && table.contains("node2"),
        "`diatom nodes` table: {}",
        describe(&out)
    );

    // A running job occupies a slot.
    let arg = unique_sleep(300);
    let mut s = Spawned::spawn(
        c.diatom_cmd(["exec", "--node", "node2", "sleep", &arg]),
        Feed::Null,
    );
    c.wait_job_process(&arg, Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(5), || {
            c.node_json("node2").is_some_and(|n| n["slots_used"] == 1)
        }),
        "node2's slots_used should be 1 while a job runs: {}",
        c.nodes_json()
    );
    s.signal(Signal::SIGINT);
    let out = s.wait_or_panic(Duration::from_secs(10), "diatom exec sleep after SIGINT");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
}

#[test]
fn node_down_detected_and_jobs_go_elsewhere() {
    if !require_root("node_down_detected_and_jobs_go_elsewhere") {
        return;
    }
    let mut c = DiatomCluster::builder(2).name("down").start();
    c.kill_node(1);
    let took = c.wait_node_state("node1", "down", Duration::from_secs(10));
    eprintln!("node1 shown down {took:?} after its daemon died");
    let n2 = c.node_json("node2").unwrap();
    assert_eq!(n2["state"], "up", "node2 stays up: {n2}");
    for _ in 0..3 {
        let (out, job) = c.exec_job(["/bin/echo", "elsewhere"]);
        assert!(
            out.status.success() && out.stdout == b"elsewhere\n",
            "{}",
            describe(&out)
        );
        assert_eq!(
            job["node"], "node2",
            "a new job must go to the node that is up: {job}"
        );
    }
    let out = c.diatom(["exec", "--node", "node1", "/bin/true"]);
    assert_diatom_failure(&out, "diatom exec --node node1 while node1 is down");

    // The node comes back by itself when its daemon restarts.
    c.start_node(1);
    c.wait_nodes_up(&["node1".to_owned()], Duration::from_secs(15));
    let (out, job) = c.exec_job(["--node", "node1", "/bin/echo", "back"]);
    assert!(
        out.status.success() && out.stdout == b"back\n",
        "{}",
        describe(&out)
    );
    assert_eq!(job["node"], "node1");
}

#[test]
fn ps_history_survives_central_restart() {
    if !require_root("ps_history_survives_central_restart") {
        return;
    }
    let mut c = DiatomCluster::builder(2).name("history").start();
    let mut jobs = Vec::new();
    for (args, status, program) in [
        (&["--node", "node1", "/bin/echo", "one"][..], 0, "echo"),
        (&["--node", "node2", "sh", "-c", "exit 7"][..], 7, "sh"),
        (&["/bin/true"][..], 0, "true"),
    ] {
        let (out, job) = c.exec_job(args);
        assert_eq!(
            out.status.code(),
            Some(status),
            "{args:?}: {}",
            describe(&out)
        );
        assert_eq!(job["exit_status"], status, "{args:?}: {job}");
        assert_eq!(job["state"], "exited", "{args:?}: {job}");
        assert!(
            job["start"].as_str().is_some_and(is_rfc3339),
            "start must be RFC 3339: {job}"
        );
        assert!(
            matches!(&job["user"], Value::String(u) if u == "root" || u == "0") || job["user"] == 0,
            "the caller is root: {job}"
        );
        assert!(
            job["program"].as_str().is_some_and(|p| p.contains(program)),
            "program should name {program}: {job}"
        );
        if let Some(node) = args
            .iter()
            .position(|a| *a == "--node")
            .map(|i| args[i + 1])
        {
            assert_eq!(job["node"], node, "{job}");
        }
        jobs.push(job);
    }
    let running = c.ps_json(false);
    for j in &jobs {
        assert!(
            same_job(&running, j).is_none(),
            "a finished job in `ps --json` (without --all): {running}"
        );
    }
    let table = c.diatom(["ps", "--all"]);
    for j in &jobs {
        assert!(
            table.status.success() && text(&table.stdout).contains(&job_id_arg(j)),
            "`diatom ps --all` table should list job {}: {}",
            job_id_arg(j),
            describe(&table)
        );
    }

    // A crash, then a restart on the same state directory and socket.
    c.restart_central_with(Signal::SIGKILL);
    let names = ["node1".to_owned(), "node2".to_owned()];
    c.wait_nodes_up(&names, Duration::from_secs(20));
    let after = c.ps_json(true);
    for j in &jobs {
        let k = same_job(&after, j).unwrap_or_else(|| {
            panic!("job {} lost in the central restart: {after}", job_id_arg(j))
        });
        for field in ["node", "program", "state", "exit_status", "start", "user"] {
            assert_eq!(
                k[field], j[field],
                "{field} of job {} after restart",
                j["id"]
            );
        }
    }
    // Both nodes re-registered by themselves: jobs run on each, with new ids
    // (exec_job checks the id is new).
    for node in ["node1", "node2"] {
        let (out, job) = c.exec_job(["--node", node, "/bin/echo", "after"]);
        assert!(
            out.status.success() && out.stdout == b"after\n",
            "a job on {node} after the restart: {}",
            describe(&out)
        );
        assert_eq!(job["node"], node);
    }
}

#[test]
fn status_and_nodes_count_dropped_datagrams() {
    if !require_root("status_and_nodes_count_dropped_datagrams") {
        return;
    }
    let c = DiatomCluster::builder(1).name("status").start();
    let st = c.status_json();
    for r in REASONS {
        assert!(
            st["dropped"][r].is_u64(),
            "`status --json` dropped.{r} should be a counter: {st}"
        );
    }
    let before = dropped_total(&st["dropped"], "status");
    let out = c.diatom(["status"]);
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "`diatom status`: {}",
        describe(&out)
    );

    // Garbage to central from the node's network: counted, never answered.
    let n1 = c.net().node(1).unwrap();
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let sock = n1.ns.udp_bind(any).unwrap();
    let central = SocketAddr::V4(SocketAddrV4::new(n1.central_addr, PORT));
    let garbage = [
        vec![0u8],
        vec![0xff; 7],
        pseudo_random(200, 1),
        pseudo_random(1200, 2),
    ];
    for g in &garbage {
        sock.send_to(g, central).unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, from)) = sock.recv_from(&mut buf) {
        panic!("central answered garbage: {n} bytes from {from}");
    }
    let want = before + garbage.len() as u64;
    assert!(
        eventually(Duration::from_secs(5), || {
            dropped_total(&c.status_json()["dropped"], "status") >= want
        }),
        "central's dropped counters should grow by {} (from {before}): {}",
        garbage.len(),
        c.status_json()
    );

    // Garbage to the node: its counters appear in `nodes --json`.
    let node_before = dropped_total(&c.node_json("node1").unwrap()["dropped"], "node1");
    let csock = c.net().central.udp_bind(any).unwrap();
    let node = SocketAddr::V4(SocketAddrV4::new(n1.addr, PORT));
    for g in &garbage {
        csock.send_to(g, node).unwrap();
    }
    csock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    if let Ok((n, from)) = csock.recv_from(&mut buf) {
        panic!("the node answered garbage: {n} bytes from {from}");
    }
    assert!(
        eventually(Duration::from_secs(15), || {
            c.node_json("node1").is_some_and(|n| {
                dropped_total(&n["dropped"], "node1") >= node_before + garbage.len() as u64
            })
        }),
        "node1's dropped counters in `nodes --json` should grow by {}: {}",
        garbage.len(),
        c.nodes_json()
    );
}

#[test]
fn kill_ends_a_running_job() {
    if !require_root("kill_ends_a_running_job") {
        return;
    }
    let c = DiatomCluster::builder(1).name("kill").start();
    for (extra, want) in [(&[][..], 143), (&["--signal", "KILL"][..], 137)] {
        let arg = unique_sleep(300);
        let mut s = Spawned::spawn(c.diatom_cmd(["exec", "sleep", &arg]), Feed::Null);
        c.wait_job_process(&arg, Duration::from_secs(30));
        let ps = c.ps_json(false);
        let list = ps.as_array().unwrap();
        assert_eq!(list.len(), 1, "one running job: {ps}");
        let job = &list[0];
        assert!(
            job["state"] == "running" && job["exit_status"].is_null() && job["node"] == "node1",
            "the running job: {job}"
        );
        let id = job_id_arg(job);
        let mut args = vec!["kill"];
        args.extend_from_slice(extra);
        args.push(&id);
        let out = c.diatom(&args);
        assert!(out.status.success(), "diatom {args:?}: {}", describe(&out));
        // (Normally milliseconds: the limit only says "it ends".)
        let Some(out) = s.wait_timeout(Duration::from_secs(30)) else {
            panic!(
                "diatom exec still runs 30 s after `diatom {args:?}`; stderr {}",
                show(&s.stderr_so_far())
            );
        };
        assert_eq!(
            out.status.code(),
            Some(want),
            "diatom exec after `diatom {args:?}`: {}",
            describe(&out)
        );
        wait_gone(&arg, Duration::from_secs(30));
        let all = c.ps_json(true);
        let k = same_job(&all, job).unwrap_or_else(|| panic!("job {id} in {all}"));
        assert!(
            k["state"] != "running" && !k["exit_status"].is_null(),
            "job {id} after diatom kill: {k}"
        );
    }
    let out = c.diatom(["kill", "987654321"]);
    assert!(
        !out.status.success() && text(&out.stderr).starts_with("diatom: "),
        "diatom kill of an unknown job: {}",
        describe(&out)
    );
}

/// Runs a daemon that should refuse to start; returns its output, or panics
/// when it is still running after 10 s.
fn refused(ns: &Netns, dir: &Path, name: &str, mut cmd: Command) -> Output {
    // Default log level: the refusal alone must be one line.
    cmd.env_remove("DIATOM_SOCKET").env_remove("DIATOM_LOG");
    let mut d = ns.spawn_daemon(name, cmd, dir).unwrap();
    match d.wait_timeout(Duration::from_secs(10)).unwrap() {
        Some(status) => Output {
            status,
            stdout: d.stdout().into_bytes(),
            stderr: d.stderr().into_bytes(),
        },
        None => {
            d.kill().unwrap();
            panic!(
                "{name}: still running 10 s after start, despite its key file; stderr {}",
                show(d.stderr().as_bytes())
            );
        }
    }
}

#[test]
fn daemons_refuse_bad_key_files() {
    if !require_root("daemons_refuse_bad_key_files") {
        return;
    }
    let dir = TestDir::new("keys").unwrap();
    let ns = Netns::new("keys").unwrap();
    let good = dir.join("good.key");
    keygen(&good);
    let content = std::fs::read_to_string(&good).unwrap();
    assert!(
        content.len() == 65
            && content.ends_with('\n')
            && content[..64].bytes().all(|b| b.is_ascii_hexdigit()),
        "keygen output: {content:?}"
    );
    let make = |name: &str, body: &str, mode: u32| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        set_mode(&p, mode);
        p
    };
    let cases = [
        ("mode 0644", make("world.key", &content, 0o644)),
        ("mode 0640", make("group.key", &content, 0o640)),
        ("too short", make("short.key", &content[1..], 0o600)),
        (
            "not hex",
            make("nothex.key", &format!("{}\n", "zq".repeat(32)), 0o600),
        ),
        ("missing", dir.join("missing.key")),
    ];
    let central = |key: &Path, tag: &str, port: u16| {
        std::fs::create_dir_all(dir.join(format!("central-{tag}"))).unwrap();
        let mut cmd = ns.command(bin_path("diatom-central"));
        cmd.arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--key")
            .arg(key)
            .arg("--state-dir")
            .arg(dir.join(format!("central-{tag}")))
            .arg("--socket")
            .arg(dir.join(format!("central-{tag}.sock")));
        cmd
    };
    let client = |key: &Path, tag: &str, port: u16| {
        std::fs::create_dir_all(dir.join(format!("client-{tag}"))).unwrap();
        let mut cmd = ns.command(bin_path("diatom-client"));
        cmd.arg("--central")
            .arg(format!("127.0.0.1:{PORT}"))
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--key")
            .arg(key)
            .arg("--state-dir")
            .arg(dir.join(format!("client-{tag}")))
            .arg("--name")
            .arg(format!("client-{tag}"));
        cmd
    };
    for (n, (what, key)) in (0u16..).zip(&cases) {
        for (daemon, cmd) in [
            (
                "diatom-central",
                central(key, &n.to_string(), PORT + 10 + n),
            ),
            ("diatom-client", client(key, &n.to_string(), PORT + 30 + n)),
        ] {
            let out = refused(&ns, dir.path(), &format!("{daemon}-{n}"), cmd);
            let err = text(&out.stderr);
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(
                !out.status.success()
                    && lines.len() == 1
                    && lines[0].to_ascii_lowercase().contains("key"),
                "{daemon} with a key file {what} ({}): want a non-zero exit and one stderr \
                 line about the key, got {}",
                key.display(),
                describe(&out)
            );
        }
    }

    // Control: with the good key both daemons keep running.
    let mut ctl = Vec::new();
    for (name, cmd) in [
        ("central-good", central(&good, "good", PORT)),
        ("client-good", client(&good, "good", PORT + 1)),
    ] {
        let mut cmd = cmd;
        cmd.env_remove("DIATOM_SOCKET");
        ctl.push(ns.spawn_daemon(name, cmd, dir.path()).unwrap());
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for d in &mut ctl {
        assert!(
            d.try_wait().unwrap().is_none(),
            "{} with a good key exited: {}",
            d.name(),
            d.stderr()
        );
    }
}

/// Adds an nft counter of UDP datagrams from port 12036 arriving on the
/// node's link to central (the script goes through a file in `dir`).
fn count_from_central(ns: &Netns, dir: &Path) {
    let script = dir.join(format!("count-{}.nft", ns.name()));
    std::fs::write(
        &script,
        "add table netdev diatom_e2e_count\n\
         add chain netdev diatom_e2e_count in_central { type filter hook ingress \
         device \"central\" priority 0; policy accept; }\n\
         add rule netdev diatom_e2e_count in_central udp sport 12036 counter\n",
    )
    .unwrap();
    run_checked(ns.command("nft").arg("-f").arg(&script)).unwrap();
}

fn counted_from_central(ns: &Netns) -> u64 {
    let out = run_checked(ns.command("nft").args([
        "list",
        "chain",
        "netdev",
        "diatom_e2e_count",
        "in_central",
    ]))
    .unwrap();
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {out}"))
}

#[test]
fn node_with_wrong_key_never_joins() {
    if !require_root("node_with_wrong_key_never_joins") {
        return;
    }
    let mut c = DiatomCluster::builder(2)
        .name("wrongkey")
        .start_only(1)
        .start();
    let n1 = &c.net().node(1).unwrap().ns;
    let n2 = &c.net().node(2).unwrap().ns;
    count_from_central(n1, c.dir());
    count_from_central(n2, c.dir());
    let other = c.path("other.key");
    keygen(&other);
    let bad_before = bad_auth(&c);
    c.spawn_node_with_key(2, &other);

    let start = Instant::now();
    let mut grew = false;
    while start.elapsed() < Duration::from_secs(8) {
        let nodes = c.nodes_json();
        assert!(
            find_by(&nodes, "name", "node2").is_none(),
            "a node with another key appeared in `diatom nodes`: {nodes}"
        );
        grew = grew || bad_auth(&c) > bad_before;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        grew,
        "central's dropped.bad_auth should grow while node2 (another key) knocks: \
         before {bad_before}, now {}",
        c.status_json()
    );
    let n1 = &c.net().node(1).unwrap().ns;
    let n2 = &c.net().node(2).unwrap().ns;
    assert_eq!(
        counted_from_central(n2),
        0,
        "central sent datagrams to the node with the wrong key"
    );
    // Control: the counter does see central's traffic to a good node.
    assert!(
        counted_from_central(n1) > 0,
        "no datagram from central counted on node1: the counter is broken"
    );
    let out = c.diatom(["exec", "--node", "node2", "/bin/true"]);
    assert_diatom_failure(&out, "diatom exec --node node2 (a node with another key)");
    let (out, job) = c.exec_job(["/bin/echo", "ok"]);
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}",
        describe(&out)
    );
    assert_eq!(job["node"], "node1");
}

/// The static `diatom` (`make static-cli`, what `make install` installs)
/// runs the embedded default as root and as a user that only NSS modules
/// could name (uid 12345, in no /etc/passwd): a static glibc program that
/// asked NSS there would load `libnss_systemd` and crash.
#[test]
fn embedded_default_static_cli() {
    if !require_root("embedded_default_static_cli") {
        return;
    }
    let Some(built) = diatom_tests::static_cli("embedded_default_static_cli") else {
        return;
    };
    diatom_tests::assert_static(&built);
    let dir = TestDir::new("static-cli").unwrap();
    set_mode(dir.path(), 0o755);
    let bin = dir.join("diatom");
    std::fs::copy(&built, &bin).unwrap();
    set_mode(&bin, 0o755);
    const STRANGER: u32 = 12345;
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .any(|l| l.split(':').nth(2) == Some("12345")),
        "test setup: uid {STRANGER} must not be in /etc/passwd"
    );
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chown(&tmp, STRANGER, STRANGER);
    for uid in [0, STRANGER] {
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket")
            .arg(dir.join("absent.sock"))
            .args(["exec", "/bin/echo", "static"])
            .current_dir(dir.path())
            .env_remove("DIATOM_SOCKET")
            .env_remove("DIATOM_LOG")
            .env("TMPDIR", &tmp);
        if uid != 0 {
            as_user(&mut cmd, uid, uid);
        }
        new_session(&mut cmd);
        let out = Spawned::spawn(cmd, Feed::Null)
            .wait_or_panic(Duration::from_secs(60), "static diatom, embedded");
        assert!(
            out.status.code() == Some(0) && out.stdout == b"static\n" && out.stderr.is_empty(),
            "static `diatom exec /bin/echo static` (embedded) as uid {uid}: {}",
            describe(&out)
        );
    }
}

#[test]
fn embedded_default_for_unprivileged_user() {
    if !require_root("embedded_default_for_unprivileged_user") {
        return;
    }
    // Plain host: no namespaces, no daemons, a socket nobody listens on.
    let dir = TestDir::new("embedded").unwrap();
    set_mode(dir.path(), 0o755);
    let bin = world_executable_bin("diatom", dir.path());
    let tmp = dir.join("tmp");
    let home = dir.join("home");
    for d in [&tmp, &home] {
        std::fs::create_dir(d).unwrap();
        chown(d, NOBODY, NOBODY);
        set_mode(d, 0o700);
    }
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    set_mode(&stale, 0o777);
    let shared_tmp = [std::env::temp_dir(), PathBuf::from("/dev/shm")];

    let runs: [(PathBuf, &[&str]); 3] = [
        (dir.join("absent.sock"), &["/bin/echo", "hi"]),
        (stale, &["/bin/echo", "hi"]),
        // Under the real tracer, not a plain local run: the tracer answers
        // /proc/self/exe with the central program (natively it would be
        // the node's cache object). TracerPid cannot tell: the job's own
        // PID namespace does not hold the tracer, so the kernel shows 0.
        (
            dir.join("absent.sock"),
            &["/bin/readlink", "/proc/self/exe"],
        ),
    ];
    for (socket, program) in runs {
        let marker = unique("embedded");
        let before: Vec<Vec<PathBuf>> = shared_tmp
            .iter()
            .map(|d| entries_owned_by(d, NOBODY))
            .collect();
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket")
            .arg(&socket)
            .arg("exec")
            .args(program)
            .current_dir(dir.path())
            .env_remove("DIATOM_SOCKET")
            .env_remove("DIATOM_LOG")
            .env("TMPDIR", &tmp)
            .env("HOME", &home)
            .env("USER", "nobody")
            .env("LOGNAME", "nobody")
            .env("DIATOM_E2E_EMBEDDED", &marker);
        new_session(&mut cmd);
        as_user(&mut cmd, NOBODY, NOBODY);
        let mut s = Spawned::spawn(cmd, Feed::Null);
        let sid = s.pid().as_raw();
        let out = s.wait_or_panic(Duration::from_secs(60), "embedded default");
        let ok = if program[0] == "/bin/echo" {
            out.stdout == b"hi\n"
        } else {
            let exe = text(&out.stdout);
            exe.trim_end().ends_with("/readlink") && !exe.contains("objects/")
        };
        assert!(
            out.status.code() == Some(0) && ok && out.stderr.is_empty(),
            "embedded default `diatom exec {}` (socket {}) as uid 65534: want its output \
             (for /proc/self/exe: the central program), exit 0, nothing else; got {}",
            program.join(" "),
            socket.display(),
            describe(&out)
        );
        // Nothing of it outlives it (a moment's grace for the kernel).
        let gone = || {
            processes_with_env("DIATOM_E2E_EMBEDDED", &marker).is_empty()
                && processes_in_session(sid).is_empty()
        };
        eventually(Duration::from_secs(10), gone);
        let left_env = processes_with_env("DIATOM_E2E_EMBEDDED", &marker);
        let left_sid = processes_in_session(sid);
        assert!(
            left_env.is_empty() && left_sid.is_empty(),
            "processes of the embedded default outlive `diatom exec`: by environment \
             {left_env:?}, in its session {left_sid:?}"
        );
        let left_tmp: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left_tmp.is_empty(), "left in TMPDIR: {left_tmp:?}");
        for (d, before) in shared_tmp.iter().zip(before) {
            let new: Vec<PathBuf> = entries_owned_by(d, NOBODY)
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            assert!(new.is_empty(), "left in {}: {new:?}", d.display());
        }
    }
}
