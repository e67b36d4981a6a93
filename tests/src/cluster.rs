//! A real Diatom cluster for end-to-end tests (root only): `diatom-central`
//! in a central network namespace and one `diatom-client` per node
//! namespace (see [`crate::netns::Cluster`] for the address plan), started
//! with a key made by `diatom keygen`, and the `diatom` CLI run as the user
//! on central. Everything is driven through the binaries' user-facing
//! contract (`/work/shared/interface.md`): flags, exit codes and `--json`.
//!
//! - [`DiatomCluster`]: start ([`DiatomCluster::start`] or
//!   [`DiatomCluster::builder`]), run `diatom` ([`DiatomCluster::diatom`],
//!   [`DiatomCluster::diatom_cmd`]), read `nodes`/`ps`/`status` as JSON,
//!   kill and restart daemons, find a job's processes on the nodes.
//! - [`Spawned`]: a running command with its output collected by threads
//!   (with arrival times), stdin fed from a thread, a timeout on waiting,
//!   killed on drop.
//! - [`as_user`], [`with_umask`], [`new_session`]: what a test sets on a
//!   command before it runs (another uid, a umask, its own session).
//! - [`processes_with_arg`], [`descendants`]: scans of `/proc`.
//!
//! Failures panic with the command, its output and where the daemons' logs
//! are; each [`Daemon`] prints the tail of its stderr when dropped during
//! the panic, so a failing test shows what the daemons said. Daemons log
//! at `DIATOM_LOG=info` unless `DIATOM_E2E_LOG` says otherwise;
//! `DIATOM_KEEP_TEST_DIRS=1` keeps the directory with the full logs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::bin_path;
use crate::netns::{Cluster, Daemon, MountView};
use crate::testdir::TestDir;

/// The one UDP port of both daemons.
pub const PORT: u16 = 12036;
/// uid and gid of `nobody`/`nogroup` on Debian: the unprivileged caller.
pub const NOBODY: u32 = 65534;
/// How long [`DiatomCluster::diatom`] lets one CLI command run.
pub const DIATOM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`DiatomCluster::start`] waits for every node to be up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(15);
/// Environment variable carrying a cluster's marker into every process it
/// starts (daemons, CLI, and through the CLI the jobs), so leftovers can be
/// found and killed.
pub const MARKER_VAR: &str = "DIATOM_E2E_MARKER";
/// Log level given to the daemons (`DIATOM_LOG`), unless the test run sets
/// `DIATOM_E2E_LOG`.
const DAEMON_LOG: &str = "info";

/// A process's id and command line, from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its argv.
    pub cmdline: Vec<String>,
}

/// What a node calls the PID 1 and parked process of a start it made
/// ahead of its next job (`diatom_client::job::runner::READY_NAME`).
pub const READY_NAME: &str = "diatom-ready";

/// Whether process `pid` is part of a start a node made ahead of its next
/// job (see [`READY_NAME`]).
pub fn made_ahead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == READY_NAME)
}

/// Options of a cluster before it starts. Made by [`DiatomCluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    name: String,
    nodes: u8,
    started: u8,
    client_args: Vec<OsString>,
    node_args: BTreeMap<u8, Vec<OsString>>,
    central_args: Vec<OsString>,
    node_mounts: Option<MountView>,
    bare_nodes: Option<PathBuf>,
    client_caps: Option<String>,
    up_timeout: Duration,
}

impl ClusterBuilder {
    /// A short name for the test directory and namespaces (default `e2e`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// `--slots N` for every node.
    pub fn slots(self, n: u32) -> Self {
        self.client_arg("--slots").client_arg(n.to_string())
    }

    /// An extra argument for every `diatom-client`.
    pub fn client_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.client_args.push(arg.into());
        self
    }

    /// An extra argument for node `i`'s `diatom-client` (1-based).
    pub fn node_arg(mut self, i: u8, arg: impl Into<OsString>) -> Self {
        self.node_args.entry(i).or_default().push(arg.into());
        self
    }

    /// An extra argument for `diatom-central`.
    pub fn central_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.central_args.push(arg.into());
        self
    }

    /// Runs every `diatom-client` in a private mount namespace arranged as
    /// `view` says (e.g. hiding central's files from the nodes).
    pub fn node_mounts(mut self, view: MountView) -> Self {
        self.node_mounts = Some(view);
        self
    }

    /// Runs every `diatom-client` with only these capabilities in its
    /// bounding set (`setpriv --bounding-set` syntax, e.g.
    /// `-all,+sys_admin`), as a service unit's `CapabilityBoundingSet`
    /// leaves it.
    pub fn client_capabilities(mut self, caps: &str) -> Self {
        self.client_caps = Some(caps.to_owned());
        self
    }

    /// Runs every `diatom-client` from `bin` (a static build) on a bare
    /// machine: a mount namespace holding only `bin`, the key, the node's
    /// state directory, `/proc`, `/sys` and `/dev` ([`MountView::bare`];
    /// the empty root is laid on `<test dir>/nodeN-root`). Takes the place
    /// of [`node_mounts`](Self::node_mounts).
    pub fn bare_nodes(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bare_nodes = Some(bin.into());
        self
    }

    /// Starts daemons on the first `k` nodes only (and waits for those);
    /// the others' namespaces exist and [`DiatomCluster::start_node`] or
    /// [`DiatomCluster::spawn_node_with_key`] start them later.
    pub fn start_only(mut self, k: u8) -> Self {
        self.started = k;
        self
    }

    /// How long to wait for the started nodes to be up (default
    /// [`UP_TIMEOUT`]).
    pub fn up_timeout(mut self, t: Duration) -> Self {
        self.up_timeout = t;
        self
    }

    /// Builds the namespaces, writes the key, starts the daemons and waits
    /// until every started node is `up` in `diatom nodes --json`. Panics
    /// (showing the daemons' logs) when that does not happen in time.
    pub fn start(self) -> DiatomCluster {
        DiatomCluster::start_with(self)
    }
}

/// A running Diatom cluster. Dropping it kills the daemons, every process
/// that still carries its marker (jobs included), the namespaces and the
/// directory (kept with `DIATOM_KEEP_TEST_DIRS=1`).
#[derive(Debug)]
pub struct DiatomCluster {
    // Fields drop in this order: daemons (and their log tails) first, then
    // the namespaces, then the directory with the logs.
    /// Daemons killed or restarted earlier: kept so their logs are shown
    /// when a test fails.
    retired: Vec<Daemon>,
    /// `clients[i-1]`: node i's daemon, if running.
    clients: Vec<Option<Daemon>>,
    central: Option<Daemon>,
    net: Cluster,
    dir: TestDir,
    opts: ClusterBuilder,
    key: PathBuf,
    socket: PathBuf,
    marker: String,
    diatom_bin: PathBuf,
    spawns: HashMap<String, u32>,
}

impl DiatomCluster {
    /// A cluster of `nodes` nodes with default options, all up.
    pub fn start(nodes: u8) -> DiatomCluster {
        DiatomCluster::builder(nodes).start()
    }

    /// Options for a cluster of `nodes` nodes.
    pub fn builder(nodes: u8) -> ClusterBuilder {
        crate::default_signals();
        ClusterBuilder {
            name: "e2e".to_owned(),
            nodes,
            started: nodes,
            client_args: Vec::new(),
            node_args: BTreeMap::new(),
            central_args: Vec::new(),
            node_mounts: None,
            bare_nodes: None,
            client_caps: None,
            up_timeout: UP_TIMEOUT,
        }
    }

    fn start_with(opts: ClusterBuilder) -> DiatomCluster {
        let dir = TestDir::new(&opts.name).expect("create test directory");
        // The unprivileged caller must reach the socket and the binaries.
        set_mode(dir.path(), 0o755);
        let net = Cluster::new(&opts.name, opts.nodes).expect("build the namespaces");
        let key = dir.join("cluster.key");
        keygen(&key);
        for sub in std::iter::once("central".to_owned())
            .chain((1..=opts.nodes).map(|i| format!("node{i}")))
        {
            let p = dir.join(&sub);
            std::fs::create_dir_all(&p).expect("create state dir");
            set_mode(&p, 0o700);
        }
        let socket = dir.join("central.sock");
        let marker = format!("{}", dir.path().display());
        let mut c = DiatomCluster {
            retired: Vec::new(),
            clients: (0..opts.nodes).map(|_| None).collect(),
            central: None,
            net,
            key,
            socket,
            marker,
            diatom_bin: bin_path("diatom"),
            spawns: HashMap::new(),
            dir,
            opts,
        };
        c.start_central();
        for i in 1..=c.opts.started.min(c.opts.nodes) {
            c.start_node(i);
        }
        let names: Vec<String> = (1..=c.opts.started.min(c.opts.nodes))
            .map(node_name)
            .collect();
        let timeout = c.opts.up_timeout;
        c.wait_nodes_up(&names, timeout);
        c
    }

    /// The test directory (logs `<name>.stderr`, state dirs, key, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the test directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// The cluster key file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Central's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The namespaces (central's, the nodes', their addresses).
    pub fn net(&self) -> &Cluster {
        &self.net
    }

    /// The value of [`MARKER_VAR`] in this cluster's processes.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Number of nodes (namespaces), started or not.
    pub fn node_count(&self) -> u8 {
        self.opts.nodes
    }

    /// `base` for a daemon's first start, `base.2`, `base.3`... after.
    fn next_name(&mut self, base: &str) -> String {
        let n = self.spawns.entry(base.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base.to_owned()
        } else {
            format!("{base}.{n}")
        }
    }

    fn daemon_env(&self, cmd: &mut Command) {
        let level = std::env::var("DIATOM_E2E_LOG").unwrap_or_else(|_| DAEMON_LOG.to_owned());
        cmd.env("DIATOM_LOG", level)
            .env(MARKER_VAR, &self.marker)
            .env_remove("DIATOM_SOCKET");
    }

    /// Starts `diatom-central` (again, after [`stop_central`](Self::stop_central))
    /// with the same key, state directory and socket. Does not wait.
    pub fn start_central(&mut self) {
        assert!(self.central.is_none(), "central is already running");
        let mut cmd = self.net.central.command(bin_path("diatom-central"));
        cmd.arg("--bind")
            .arg(format!("0.0.0.0:{PORT}"))
            .arg("--key")
            .arg(&self.key)
            .arg("--state-dir")
            .arg(self.dir.join("central"))
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.opts.central_args);
        self.daemon_env(&mut cmd);
        let name = self.next_name("central");
        let d = self
            .net
            .central
            .spawn_daemon(&name, cmd, self.dir.path())
            .unwrap_or_else(|e| panic!("cannot start diatom-central: {e}"));
        self.central = Some(d);
    }

    /// Stops central: `sig`, then SIGKILL if it has not exited in 10 s.
    pub fn stop_central(&mut self, sig: Signal) {
        let mut d = self.central.take().expect("central is not running");
        let _ = d.signal(sig);
        if !matches!(d.wait_timeout(Duration::from_secs(10)), Ok(Some(_))) {
            let _ = d.kill();
        }
        self.retired.push(d);
    }

    /// Restarts central gracefully (SIGTERM) with the same state directory
    /// and socket. Does not wait for the nodes: see
    /// [`wait_nodes_up`](Self::wait_nodes_up).
    pub fn restart_central(&mut self) {
        self.restart_central_with(Signal::SIGTERM);
    }

    /// Restarts central after ending it with `sig` (SIGKILL: a crash).
    pub fn restart_central_with(&mut self, sig: Signal) {
        self.stop_central(sig);
        self.start_central();
    }

    /// Starts node `i`'s `diatom-client` with the cluster key. Does not wait.
    pub fn start_node(&mut self, i: u8) {
        let key = self.key.clone();
        self.spawn_node_with_key(i, &key);
    }

    /// Starts node `i`'s `diatom-client` with `key` (which may differ from
    /// the cluster's). Does not wait.
    pub fn spawn_node_with_key(&mut self, i: u8, key: &Path) {
        let idx = usize::from(i) - 1;
        assert!(self.clients[idx].is_none(), "node{i} is already running");
        let name = self.next_name(&node_name(i));
        let node = self.net.node(i).expect("no such node");
        let state = self.dir.join(format!("node{i}"));
        let mut cmd = if let Some(bin) = &self.opts.bare_nodes {
            let root = self.dir.join(format!("node{i}-root"));
            std::fs::create_dir_all(&root)
                .unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
            let view = MountView::new().bare(&root, [bin.as_path(), key, &state]);
            node.ns.command_with_mounts(bin, &view)
        } else {
            let bin = bin_path("diatom-client");
            match (&self.opts.client_caps, &self.opts.node_mounts) {
                (Some(caps), None) => {
                    let mut c = node.ns.command(Path::new("/usr/bin/setpriv"));
                    c.arg("--bounding-set").arg(caps).arg(&bin);
                    c
                }
                (Some(_), Some(_)) => panic!("client_capabilities with node_mounts"),
                (None, Some(view)) => node.ns.command_with_mounts(&bin, view),
                (None, None) => node.ns.command(&bin),
            }
        };
        cmd.arg("--central")
            .arg(node.central_addr.to_string())
            .arg("--bind")
            .arg(format!("0.0.0.0:{PORT}"))
            .arg("--key")
            .arg(key)
            .arg("--state-dir")
            .arg(&state)
            .arg("--name")
            .arg(node_name(i))
            .args(&self.opts.client_args)
            .args(self.opts.node_args.get(&i).into_iter().flatten());
        self.daemon_env(&mut cmd);
        let d = node
            .ns
            .spawn_daemon(&name, cmd, self.dir.path())
            .unwrap_or_else(|e| panic!("cannot start diatom-client for node{i}: {e}"));
        self.clients[idx] = Some(d);
    }

    /// Kills node `i`'s daemon with SIGKILL (its jobs' processes, orphaned,
    /// are not touched).
    pub fn kill_node(&mut self, i: u8) {
        let mut d = self.clients[usize::from(i) - 1]
            .take()
            .unwrap_or_else(|| panic!("node{i} is not running"));
        d.kill()
            .unwrap_or_else(|e| panic!("cannot kill node{i}: {e}"));
        self.retired.push(d);
    }

    /// Node `i`'s daemon, when running.
    pub fn node_daemon(&self, i: u8) -> Option<&Daemon> {
        self.clients.get(usize::from(i).checked_sub(1)?)?.as_ref()
    }

    /// `path` as node `i`'s daemon sees it in its mount namespace
    /// (`/proc/PID/root/path`), to check what a node has on its own.
    /// Panics when node `i` does not run.
    pub fn node_view(&self, i: u8, path: impl AsRef<Path>) -> PathBuf {
        let d = self
            .node_daemon(i)
            .unwrap_or_else(|| panic!("node{i} is not running"));
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", d.pid())).join(rel)
    }

    /// Central's daemon, when running.
    pub fn central_daemon(&self) -> Option<&Daemon> {
        self.central.as_ref()
    }

    /// Panics when a daemon the test did not stop has exited: the usual
    /// reason for anything else going wrong afterwards. (Each daemon prints
    /// its stderr tail as the cluster drops during the panic.)
    pub fn assert_daemons_alive(&self) {
        let dead: Vec<String> = self
            .central
            .iter()
            .chain(self.clients.iter().flatten())
            .filter(|d| !pid_alive(d.pid()))
            .map(|d| format!("{} (pid {})", d.name(), d.pid()))
            .collect();
        assert!(
            dead.is_empty(),
            "daemons exited unexpectedly: {} (their stderr follows; logs in {})",
            dead.join(", "),
            self.dir().display()
        );
    }

    /// The tails of every daemon's stderr and stdout (current and retired).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for d in self
            .retired
            .iter()
            .chain(self.central.iter())
            .chain(self.clients.iter().flatten())
        {
            s.push_str(&format!(
                "--- {} stderr ---\n{}\n",
                d.name(),
                tail(&d.stderr(), 3000)
            ));
            let out = d.stdout();
            if !out.is_empty() {
                s.push_str(&format!(
                    "--- {} stdout ---\n{}\n",
                    d.name(),
                    tail(&out, 1000)
                ));
            }
        }
        s
    }

    // ----- the CLI --------------------------------------------------------

    /// `diatom --socket S ARGS...` run inside central's namespace as the
    /// test's user, stdin null, stdout and stderr piped, `DIATOM_SOCKET` and
    /// `DIATOM_LOG` removed from its environment. Add more with the
    /// returned command (stdin, env, cwd, [`as_user`], ...).
    pub fn diatom_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.diatom_cmd_with_bin(&self.diatom_bin, args)
    }

    fn diatom_cmd_with_bin<I, S>(&self, bin: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.diatom_args(self.net.central.command(bin), args)
    }

    /// Like [`diatom_cmd`](Self::diatom_cmd), in a private mount namespace
    /// arranged as `view` says: the home, and so the job, sees central's
    /// files through that view (e.g. a test's own `/etc/resolv.conf`).
    pub fn diatom_cmd_in_view<I, S>(&self, view: &MountView, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.net.central.command_with_mounts(&self.diatom_bin, view);
        self.diatom_args(cmd, args)
    }

    fn diatom_args<I, S>(&self, mut cmd: Command, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("DIATOM_SOCKET")
            .env_remove("DIATOM_LOG")
            .env(MARKER_VAR, &self.marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Like [`diatom_cmd`](Self::diatom_cmd), run as `uid`/`gid` with no
    /// supplementary groups, from the test directory, with that user's
    /// `HOME`, `USER` and `LOGNAME` (`nobody`: `/nonexistent`). The binary
    /// is one every user can execute.
    pub fn diatom_cmd_as<I, S>(&self, uid: u32, gid: u32, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = world_executable_bin("diatom", self.dir.path());
        let mut cmd = self.diatom_cmd_with_bin(&bin, args);
        let (name, home) = user_name_home(uid);
        cmd.current_dir(self.dir.path())
            .env("HOME", home)
            .env("USER", &name)
            .env("LOGNAME", &name);
        // Registered after the setns of `command`: it needs root.
        as_user(&mut cmd, uid, gid);
        cmd
    }

    /// Runs `diatom ARGS...` (see [`diatom_cmd`](Self::diatom_cmd)) to
    /// completion, at most [`DIATOM_TIMEOUT`].
    pub fn diatom<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.diatom_timeout(args, DIATOM_TIMEOUT)
    }

    /// Runs `diatom ARGS...` to completion; after `timeout` kills it and
    /// panics with what it printed so far and the daemons' logs.
    pub fn diatom_timeout<I, S>(&self, args: I, timeout: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.diatom_cmd(args);
        self.run(cmd, Feed::Null, timeout)
    }

    /// Runs `cmd` (a [`diatom_cmd`](Self::diatom_cmd)) with `stdin` to
    /// completion within `timeout` (else panics), then checks that the
    /// daemons are still alive.
    pub fn run(&self, cmd: Command, stdin: Feed, timeout: Duration) -> Output {
        let mut s = Spawned::spawn(cmd, stdin);
        let out = s.wait_or_panic(timeout, &format!("daemon logs in {}", self.dir().display()));
        self.assert_daemons_alive();
        out
    }

    /// Runs `diatom ARGS...`, asserts exit 0 and parses stdout as JSON.
    pub fn json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.diatom(&args);
        assert!(
            out.status.success(),
            "diatom {args:?} failed: {}",
            describe(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "diatom {args:?} printed no valid JSON ({e}): {}",
                describe(&out)
            )
        })
    }

    /// `diatom nodes --json`: an array of node objects.
    pub fn nodes_json(&self) -> Value {
        let v = self.json(["nodes", "--json"]);
        assert!(v.is_array(), "nodes --json is not an array: {v}");
        v
    }

    /// The object of node `name` in `diatom nodes --json`, if listed.
    pub fn node_json(&self, name: &str) -> Option<Value> {
        find_by(&self.nodes_json(), "name", name)
    }

    /// `diatom ps [--all] --json`: an array of job objects.
    pub fn ps_json(&self, all: bool) -> Value {
        let v = if all {
            self.json(["ps", "--all", "--json"])
        } else {
            self.json(["ps", "--json"])
        };
        assert!(v.is_array(), "ps --json is not an array: {v}");
        v
    }

    /// `diatom status --json`.
    pub fn status_json(&self) -> Value {
        self.json(["status", "--json"])
    }

    /// Runs `diatom exec ARGS...` and returns its output together with the
    /// one job it added to `diatom ps --all --json` (panics unless exactly
    /// one new job appeared).
    pub fn exec_job<I, S>(&self, args: I) -> (Output, Value)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let before = job_ids(&self.ps_json(true));
        let args: Vec<OsString> = std::iter::once(OsString::from("exec"))
            .chain(args.into_iter().map(|a| a.as_ref().to_owned()))
            .collect();
        let out = self.diatom(&args);
        let after = self.ps_json(true);
        let new: Vec<&Value> = after
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| {
                j.get("id")
                    .is_some_and(|id| !before.contains(&id.to_string()))
            })
            .collect();
        assert!(
            new.len() == 1,
            "diatom {args:?} should add exactly one job to `ps --all --json`, \
             added {}: {after}\nexec: {}",
            new.len(),
            describe(&out)
        );
        let job = new[0].clone();
        (out, job)
    }

    /// Polls `diatom nodes --json` until every node in `names` is `up`;
    /// panics with the last listing and the daemons' logs after `timeout`.
    pub fn wait_nodes_up(&self, names: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_daemons_alive();
            let mut cmd = self.diatom_cmd(["nodes", "--json"]);
            cmd.stdin(Stdio::null());
            let out = Spawned::spawn(cmd, Feed::Null).wait_timeout(Duration::from_secs(5));
            let last = if let Some(out) = out {
                if out.status.success() {
                    if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                        let all_up = names.iter().all(|n| {
                            find_by(&v, "name", n).is_some_and(|node| node["state"] == "up")
                        });
                        if all_up {
                            return;
                        }
                    }
                }
                describe(&out)
            } else {
                "`diatom nodes --json` did not finish within 5 s".to_owned()
            };
            assert!(
                Instant::now() < deadline,
                "nodes {names:?} not all \"up\" in `diatom nodes --json` after {timeout:?}; \
                 last: {last}\n(daemons' stderr follows; logs in {})",
                self.dir().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until node `name` has `"state": state`; returns how long it took.
    /// Panics after `timeout` with the last listing.
    pub fn wait_node_state(&self, name: &str, state: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let nodes = self.nodes_json();
            if find_by(&nodes, "name", name).is_some_and(|n| n["state"] == state) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{name} not {state:?} within {timeout:?}: {nodes}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ----- processes ------------------------------------------------------

    /// The processes descending from node `i`'s daemon (the jobs it runs),
    /// empty when it does not run.
    pub fn node_processes(&self, i: u8) -> Vec<Proc> {
        match self.node_daemon(i) {
            Some(d) => descendants(d.pid().as_raw()),
            None => Vec::new(),
        }
    }

    /// [`DiatomCluster::node_processes`] but the start a root node makes
    /// ahead of its next job (its PID 1 and parked process, called
    /// [`READY_NAME`] until a job takes them): the processes of jobs.
    pub fn node_job_processes(&self, i: u8) -> Vec<Proc> {
        self.node_processes(i)
            .into_iter()
            .filter(|p| !made_ahead(p.pid))
            .collect()
    }

    /// Polls until a process whose command line contains `arg` runs under
    /// some node's daemon; returns the node number and the process. Panics
    /// after `timeout`, after checking the daemons are alive.
    pub fn wait_job_process(&self, arg: &str, timeout: Duration) -> (u8, Proc) {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 1..=self.opts.nodes {
                if let Some(p) = self
                    .node_processes(i)
                    .into_iter()
                    .find(|p| p.cmdline.iter().any(|a| a.contains(arg)))
                {
                    return (i, p);
                }
            }
            self.assert_daemons_alive();
            assert!(
                Instant::now() < deadline,
                "no process with {arg:?} in its command line appeared under any node's \
                 diatom-client within {timeout:?}; processes with it anywhere: {:?}",
                processes_with_arg(arg)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DiatomCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Diatom cluster in {} (DIATOM_KEEP_TEST_DIRS=1 keeps it) ---",
                self.dir().display()
            );
        }
        // Daemons first (their Drop prints their log tails on failure), then
        // anything that carries the marker: jobs orphaned by a killed node,
        // CLI processes, embedded pieces.
        for d in self
            .clients
            .iter_mut()
            .flatten()
            .chain(self.central.iter_mut())
        {
            let _ = d.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_with_env(MARKER_VAR, &self.marker);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in left {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The name a node of the cluster registers under.
pub fn node_name(i: u8) -> String {
    format!("node{i}")
}

/// Writes a fresh key with `diatom keygen --out path`; panics unless it
/// succeeds with a mode 0600 file.
pub fn keygen(path: &Path) {
    let out = Command::new(bin_path("diatom"))
        .arg("keygen")
        .arg("--out")
        .arg(path)
        .env_remove("DIATOM_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin_path("diatom").display()));
    assert!(
        out.status.success(),
        "diatom keygen --out {} failed: {}",
        path.display(),
        describe(&out)
    );
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("keygen wrote no {}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode");
}

// ----- running commands ---------------------------------------------------

/// What a [`Spawned`] command reads on stdin.
#[derive(Debug)]
pub enum Feed {
    /// `/dev/null`.
    Null,
    /// These bytes, written by a thread, then EOF.
    Bytes(Vec<u8>),
    /// A pipe the test writes itself ([`Spawned::stdin`]).
    Pipe,
}

type Chunks = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A running command whose stdout and stderr are collected by threads, each
/// chunk with its arrival time. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Spawned {
    what: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: Chunks,
    err: Chunks,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    exited_at: Option<Instant>,
}

impl Spawned {
    /// Spawns `cmd` with stdout and stderr piped and stdin as `feed` says.
    pub fn spawn(mut cmd: Command, feed: Feed) -> Spawned {
        let what = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        match feed {
            Feed::Null => cmd.stdin(Stdio::null()),
            Feed::Bytes(_) | Feed::Pipe => cmd.stdin(Stdio::piped()),
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let out: Chunks = Arc::default();
        let err: Chunks = Arc::default();
        let mut readers = Vec::new();
        if let Some(s) = child.stdout.take() {
            readers.push(collect(s, out.clone()));
        }
        if let Some(s) = child.stderr.take() {
            readers.push(collect(s, err.clone()));
        }
        let mut stdin = child.stdin.take();
        if let Feed::Bytes(bytes) = feed {
            if let Some(mut w) = stdin.take() {
                // Errors (EPIPE when the program stops reading) are the
                // program's business; the test judges its output.
                std::thread::spawn(move || {
                    let _ = w.write_all(&bytes);
                });
            }
        }
        Spawned {
            what,
            child,
            stdin,
            out,
            err,
            readers,
            status: None,
            exited_at: None,
        }
    }

    /// The command's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// The write end of its stdin ([`Feed::Pipe`]); dropping it sends EOF.
    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.stdin.as_mut()
    }

    /// Closes its stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `sig` to it.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap_or_else(|e| panic!("kill {sig} {}: {e}", self.pid()));
    }

    /// Its exit status once it has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                self.exited_at = Some(Instant::now());
            }
        }
        self.status
    }

    /// When the test saw it exit (polled every 5 ms).
    pub fn exited_at(&self) -> Option<Instant> {
        self.exited_at
    }

    /// Stdout so far.
    pub fn stdout_so_far(&self) -> Vec<u8> {
        concat(&self.out)
    }

    /// Stderr so far.
    pub fn stderr_so_far(&self) -> Vec<u8> {
        concat(&self.err)
    }

    /// When stdout first contained `needle`.
    pub fn stdout_arrival(&self, needle: &[u8]) -> Option<Instant> {
        let chunks = self.out.lock().expect("output lock");
        let mut acc = Vec::new();
        for (t, c) in chunks.iter() {
            acc.extend_from_slice(c);
            if acc.windows(needle.len()).any(|w| w == needle) {
                return Some(*t);
            }
        }
        None
    }

    /// Waits up to `timeout` until its stdout contains `needle`; panics,
    /// saying `what` did not come and showing its output so far, if it
    /// does not (or the process exits first).
    pub fn wait_stdout(&mut self, needle: &[u8], timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        while self.stdout_arrival(needle).is_none() {
            assert!(
                Instant::now() < deadline && self.try_wait().is_none(),
                "{what}: stdout {} stderr {}",
                show(&self.stdout_so_far()),
                show(&self.stderr_so_far())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for it to exit; then waits up to 5 s more for
    /// its output pipes to close and returns the output. `None` if it is
    /// still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Output> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // A descendant that kept stdout open would block a join forever.
        let pipes_deadline = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < pipes_deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for r in std::mem::take(&mut self.readers) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
        Some(Output {
            status,
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
        })
    }

    /// Like [`wait_timeout`](Self::wait_timeout), but on timeout kills it
    /// and panics with what it printed so far and `context`.
    pub fn wait_or_panic(&mut self, timeout: Duration, context: &str) -> Output {
        if let Some(out) = self.wait_timeout(timeout) {
            return out;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{} did not finish within {timeout:?} (killed it)\nstdout so far: {}\n\
             stderr so far: {}\n{context}",
            self.what,
            show(&self.stdout_so_far()),
            show(&self.stderr_so_far()),
        );
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.status = Some(s);
                self.exited_at = Some(Instant::now());
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(mut r: impl Read + Send + 'static, into: Chunks) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .expect("output lock")
                    .push((Instant::now(), buf[..n].to_vec())),
            }
        }
    })
}

fn concat(c: &Chunks) -> Vec<u8> {
    c.lock()
        .expect("output lock")
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect()
}

/// Bytes as text for a message, long ones shortened in the middle.
pub fn show(b: &[u8]) -> String {
    const MAX: usize = 2000;
    let s = String::from_utf8_lossy(b);
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(MAX / 2).collect();
    let tail_part: String = {
        let v: Vec<char> = s.chars().collect();
        v[v.len().saturating_sub(MAX / 2)..].iter().collect()
    };
    format!("{head:?} ...[{} bytes]... {tail_part:?}", b.len())
}

/// Exit status, stdout and stderr of a finished command, for messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n  stdout: {}\n  stderr: {}",
        out.status,
        show(&out.stdout),
        show(&out.stderr)
    )
}

/// Asserts `out` is Diatom's own failure: exit 255, stdout empty, and
/// exactly one line on stderr, starting `diatom: `.
pub fn assert_diatom_failure(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        out.status.code() == Some(255)
            && lines.len() == 1
            && lines[0].starts_with("diatom: ")
            && out.stdout.is_empty(),
        "{what}: want exit 255, empty stdout and one stderr line `diatom: ...`, got {}",
        describe(out)
    );
}

/// The tail of a text, at most `max` bytes, cut at a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `program args` locally (the test's namespace and user), `stdin`
/// fed from a thread, at most 60 s: the reference a remote run is
/// compared with.
pub fn local(program: &str, args: &[&str], stdin: Feed) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    Spawned::spawn(cmd, stdin).wait_or_panic(DIATOM_TIMEOUT, "local reference run")
}

// ----- users, umask, sessions -----------------------------------------------

/// Makes `cmd` drop to `uid`/`gid` with no supplementary groups just
/// before exec. Register it after any `pre_exec` that needs root (the
/// namespace entry of [`Netns::command`](crate::netns::Netns::command)):
/// `pre_exec` closures run in order, after std's own uid/cwd handling.
pub fn as_user(cmd: &mut Command, uid: u32, gid: u32) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Makes `cmd` start with umask `mask`.
pub fn with_umask(cmd: &mut Command, mask: libc::mode_t) -> &mut Command {
    // SAFETY: umask is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    cmd
}

/// Makes `cmd` the leader of a new session (its pid is the session id), so
/// everything it leaves behind can be found by session.
pub fn new_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn user_name_home(uid: u32) -> (String, String) {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => (u.name, u.dir.display().to_string()),
        _ => (uid.to_string(), "/nonexistent".to_owned()),
    }
}

/// A path of workspace binary `name` that every user may execute: the
/// built one when its directory chain is world-searchable, else copies of
/// all three binaries (so a binary that starts a sibling finds it) in
/// `<scratch>/bin`.
pub fn world_executable_bin(name: &str, scratch: &Path) -> PathBuf {
    let built = bin_path(name);
    let reachable = built
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        && std::fs::metadata(&built).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if reachable {
        return built;
    }
    let dir = scratch.join("bin");
    std::fs::create_dir_all(&dir).expect("create bin dir");
    set_mode(scratch, 0o755);
    set_mode(&dir, 0o755);
    for b in ["diatom", "diatom-central", "diatom-client"] {
        let to = dir.join(b);
        if !to.exists() {
            let from = bin_path(b);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
            }
            set_mode(&to, 0o755);
        }
    }
    dir.join(name)
}

/// chmod, panicking on failure.
pub fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

/// chown, panicking on failure.
pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", p.display()));
}

// ----- /proc ---------------------------------------------------------------

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// `(state, ppid, session)` from `/proc/PID/stat`.
fn stat_of(pid: i32) -> Option<(char, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may contain anything: split at
    // the last ')'. Fields after it: state ppid pgrp session ...
    let (_, rest) = s.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let _pgrp = f.next()?;
    let session = f.next()?.parse().ok()?;
    Some((state, ppid, session))
}

fn live(pid: i32) -> bool {
    stat_of(pid).is_some_and(|(st, _, _)| st != 'Z' && st != 'X')
}

fn pid_alive(pid: Pid) -> bool {
    live(pid.as_raw())
}

fn cmdline_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes other than the test itself whose command
/// line has an argument containing `arg`.
pub fn processes_with_arg(arg: &str) -> Vec<Proc> {
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    all_pids()
        .into_iter()
        .filter(|&p| p != me && live(p))
        .filter_map(|pid| {
            let cmdline = cmdline_of(pid);
            cmdline
                .iter()
                .any(|a| a.contains(arg))
                .then_some(Proc { pid, cmdline })
        })
        .collect()
}

/// Polls until no live process has `arg` in its command line; panics with
/// the survivors after `timeout`. Returns how long it took.
pub fn wait_gone(arg: &str, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let left = processes_with_arg(arg);
        if left.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: processes with {arg:?} still run {timeout:?} later: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes whose environment has `var=value`.
pub fn processes_with_env(var: &str, value: &str) -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let want = format!("{var}={value}");
    all_pids()
        .into_iter()
        .filter(|&p| p != me && live(p))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.split(|&c| c == 0).any(|kv| kv == want.as_bytes()))
        })
        .collect()
}

/// Live processes whose session id is `sid`.
pub fn processes_in_session(sid: i32) -> Vec<Proc> {
    all_pids()
        .into_iter()
        .filter(|&p| stat_of(p).is_some_and(|(st, _, s)| s == sid && st != 'Z' && st != 'X'))
        .map(|pid| Proc {
            pid,
            cmdline: cmdline_of(pid),
        })
        .collect()
}

/// Live descendants of `root` (not `root` itself).
pub fn descendants(root: i32) -> Vec<Proc> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in all_pids() {
        if let Some((st, ppid, _)) = stat_of(pid) {
            if st != 'Z' && st != 'X' {
                children.entry(ppid).or_default().push(pid);
            }
        }
        // Threads of a process are not in /proc's top level: fine, a
        // process is what we look for.
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(Proc {
                pid: c,
                cmdline: cmdline_of(c),
            });
            stack.push(c);
        }
    }
    out
}

/// Entries of directory `dir` owned by `uid` (names).
pub fn entries_owned_by(dir: &Path, uid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.uid() == uid))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

// ----- JSON ------------------------------------------------------------------

/// The element of array `list` whose `key` is the string `value`.
pub fn find_by(list: &Value, key: &str, value: &str) -> Option<Value> {
    list.as_array()?
        .iter()
        .find(|o| o.get(key).and_then(Value::as_str) == Some(value))
        .cloned()
}

/// The ids of the jobs in a `ps --json` array, as JSON text (ids may be
/// numbers or strings).
pub fn job_ids(ps: &Value) -> Vec<String> {
    ps.as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j.get("id").map(Value::to_string))
        .collect()
}

/// A job id as the `diatom kill` argument: the JSON number or string.
pub fn job_id_arg(job: &Value) -> String {
    match &job["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// True when `s` is an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac]`
/// then `Z` or `±HH:MM` (`T` may be `t` or a space, `Z` may be `z`).
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    if !(1..=12).contains(&num(5..7))
        || !(1..=31).contains(&num(8..10))
        || num(11..13) > 23
        || num(14..16) > 59
        || num(17..19) > 60
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] => {
            let r = i + 1;
            b.len() == r + 5 && digits(r..r + 2) && b[r + 2] == b':' && digits(r + 3..r + 5)
        }
        _ => false,
    }
}

/// `n` bytes from a xorshift64* generator: incompressible, reproducible.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A string unique within this test run (for command-line markers).
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `sleep` argument that sleeps about `secs` seconds and is unique in this
/// run, so the job's process can be found on the node: `300.0<pid><n>1`.
pub fn unique_sleep(secs: u32) -> String {
    // The trailing 1 keeps the fraction free of a trailing zero that a
    // program could drop when printing it.
    format!("{secs}.{}1", unique("0"))
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes as text, lossily (for assertions and messages).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A status as a shell reports it: the exit code, or 128+N for signal N.
pub fn shell_status(out: &std::process::Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert!(is_rfc3339("2024-05-01T12:34:56Z"));
        assert!(is_rfc3339("2024-05-01T12:34:56.123456+02:00"));
        assert!(is_rfc3339("2024-05-01 12:34:56-00:00"));
        assert!(!is_rfc3339("2024-05-01T12:34:56"));
        assert!(!is_rfc3339("2024-13-01T12:34:56Z"));
        assert!(!is_rfc3339("1714566896"));
        assert!(!is_rfc3339("2024-05-01T12:34:56.Z"));
        assert!(!is_rfc3339("2024-05-01T12:34:56+0200"));
    }

    #[test]
    fn unique_sleep_is_a_number() {
        let s = unique_sleep(300);
        assert!(
            s.parse::<f64>().is_ok_and(|v| (300.0..301.0).contains(&v)),
            "{s}"
        );
        assert_ne!(unique_sleep(300), s);
    }

    #[test]
    fn descendants_and_args() {
        let arg = unique_sleep(30);
        let mut child = Command::new("sh")
            .args(["-c", &format!("sleep {arg}; true")])
            .spawn()
            .unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let want = ["sleep".to_owned(), arg.clone()];
        // Until sh's child has exec'd sleep: between its fork and its exec
        // it is a second `sh -c ...` with the same arguments.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !descendants(me).iter().any(|p| p.cmdline == want) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(descendants(me).iter().any(|p| p.cmdline == want));
        // sh -c '... <arg> ...' and sleep <arg>
        assert_eq!(processes_with_arg(&arg).len(), 2);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn spawned_records_arrival_times() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo a; sleep 1; echo b"]);
        let mut s = Spawned::spawn(cmd, Feed::Null);
        let out = s.wait_or_panic(Duration::from_secs(10), "");
        assert_eq!(out.stdout, b"a\nb\n");
        let lead = s.exited_at().unwrap() - s.stdout_arrival(b"a\n").unwrap();
        assert!(lead >= Duration::from_millis(800), "{lead:?}");
        assert!(s.stdout_arrival(b"b\n").unwrap() >= s.stdout_arrival(b"a\n").unwrap());
        // stdin bytes then EOF
        let mut s = Spawned::spawn(Command::new("cat"), Feed::Bytes(b"xyz".to_vec()));
        assert_eq!(s.wait_or_panic(Duration::from_secs(10), "").stdout, b"xyz");
    }

    #[test]
    fn session_scan_finds_leftovers() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"]);
        new_session(&mut cmd);
        let mut s = Spawned::spawn(cmd, Feed::Null);
        let sid = s.pid().as_raw();
        let out = s.wait_or_panic(Duration::from_secs(10), "");
        let left = processes_in_session(sid);
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(left.iter().any(|p| p.pid == pid), "{left:?}");
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    }

    #[test]
    fn user_and_umask_after_entering_a_namespace() {
        if !crate::require_root("user_and_umask_after_entering_a_namespace") {
            return;
        }
        let ns = crate::netns::Netns::new("asuser").unwrap();
        let mut cmd = ns.command("sh");
        cmd.args(["-c", "id -u; id -g; id -G; umask; ip -o link | wc -l"]);
        with_umask(&mut cmd, 0o027);
        as_user(&mut cmd, NOBODY, NOBODY);
        let out = Spawned::spawn(cmd, Feed::Null).wait_or_panic(Duration::from_secs(10), "");
        // Only `lo` in the namespace.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "65534\n65534\n65534\n0027\n1\n",
            "{}",
            describe(&out)
        );
    }

    #[test]
    fn env_scan_finds_marked_processes() {
        let marker = unique("envscan");
        let mut child = Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, &marker)
            .spawn()
            .unwrap();
        // Right after exec the new environment may not be readable yet.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut found = processes_with_env(MARKER_VAR, &marker);
        while found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            found = processes_with_env(MARKER_VAR, &marker);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, [i32::try_from(child.id()).unwrap()]);
    }
}
