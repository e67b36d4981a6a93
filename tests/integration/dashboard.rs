//! The web dashboard (issue 10): `diatom-central --http` on a real cluster.
//! The JSON API against what `diatom nodes/ps/status --json` print, job
//! detail with the node's counters and timeline, paging and filters; the
//! token rules (refused at start off loopback without one, 401 from the
//! network without it); and a real browser, headless Chromium, rendering
//! the page of a running cluster, with a screenshot kept for review.
//! Requests are made with `curl` (and Chromium) run inside the cluster's
//! namespaces, where central's HTTP address lives.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diatom_tests::bin_path;
use diatom_tests::cluster::{
    describe, eventually, find_by, keygen, node_name, text, DiatomCluster, Feed, Spawned,
};
use diatom_tests::netns::Netns;
use diatom_tests::testdir::TestDir;
use diatom_tests::{in_ci, require_root};
use serde_json::Value;

/// The dashboard's port in the tests (each cluster has its own namespace).
const HTTP_PORT: u16 = 12080;

/// An HTTP answer as curl saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self, what: &str) -> Value {
        assert_eq!(self.status, 200, "{what}: {}", text(&self.body));
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", text(&self.body)))
    }
}

/// `GET url` with curl inside namespace `ns`, with an optional bearer token.
fn get(ns: &Netns, url: &str, token: Option<&str>) -> Answer {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.arg(url).output().expect("run curl");
    assert!(out.status.success(), "curl {url}: {}", describe(&out));
    let cut = out
        .stdout
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("curl printed the status line");
    let status = text(&out.stdout[cut + 1..]).trim().parse().expect("status");
    Answer {
        status,
        body: out.stdout[..cut].to_vec(),
    }
}

/// `GET path` from central's namespace on the loopback dashboard.
fn api(c: &DiatomCluster, path: &str) -> Answer {
    get(
        &c.net().central,
        &format!("http://127.0.0.1:{HTTP_PORT}{path}"),
        None,
    )
}

/// A cluster of two nodes with the dashboard on central's loopback, and
/// two finished jobs: one that reads a file and succeeds, one that fails.
fn cluster_with_jobs(name: &str) -> (DiatomCluster, Value, Value) {
    let c = DiatomCluster::builder(2)
        .name(name)
        .central_arg("--http")
        .central_arg(format!("127.0.0.1:{HTTP_PORT}"))
        .start();
    let (out, ok) = c.exec_job([
        "/bin/sh",
        "-c",
        "head -c 300 /etc/passwd >/dev/null && echo dashboard-ok",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text(&out.stdout).contains("dashboard-ok"));
    let (out, failed) = c.exec_job(["/bin/sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    (c, ok, failed)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn dashboard_api_matches_the_cli() {
    if !require_root("dashboard_api_matches_the_cli") {
        return;
    }
    let (c, ok, failed) = cluster_with_jobs("dash-api");

    // Nodes: the same records `diatom nodes --json` prints.
    let nodes = api(&c, "/api/nodes").json("/api/nodes");
    let cli_nodes = c.nodes_json();
    assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{nodes}");
    for i in 1..=2 {
        let name = node_name(i);
        let web = find_by(&nodes, "name", &name).unwrap_or_else(|| panic!("{name}: {nodes}"));
        let cli = find_by(&cli_nodes, "name", &name).unwrap();
        assert_eq!(
            keys(&web),
            keys(&cli),
            "same fields as `diatom nodes --json`"
        );
        for k in ["address", "state", "cpus", "slots", "kernel", "version"] {
            assert_eq!(web[k], cli[k], "{name}.{k}");
        }
    }

    // Status: the same shape as `diatom status --json`.
    let status = api(&c, "/api/status").json("/api/status");
    let cli_status = c.status_json();
    assert_eq!(keys(&status), keys(&cli_status), "{status} vs {cli_status}");
    assert_eq!(status["jobs"]["total"], 2, "{status}");
    assert_eq!(status["nodes"]["up"], 2, "{status}");

    // Jobs: finished jobs no longer change, so the page equals `ps --all --json`.
    let jobs = api(&c, "/api/jobs").json("/api/jobs");
    assert_eq!(
        jobs,
        c.ps_json(true),
        "/api/jobs vs `diatom ps --all --json`"
    );
    let ids: Vec<u64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [failed["id"].as_u64().unwrap(), ok["id"].as_u64().unwrap()],
        "newest first"
    );

    // Paging with `before`, and the filters.
    let first = api(&c, "/api/jobs?limit=1").json("page 1");
    assert_eq!(first.as_array().map(Vec::len), Some(1));
    assert_eq!(first[0]["id"], failed["id"]);
    let second = api(&c, &format!("/api/jobs?limit=1&before={}", failed["id"])).json("page 2");
    assert_eq!(second[0]["id"], ok["id"], "{second}");
    let third = api(&c, &format!("/api/jobs?limit=1&before={}", ok["id"])).json("page 3");
    assert_eq!(third, Value::Array(Vec::new()));
    let exited = api(&c, "/api/jobs?state=exited").json("state=exited");
    assert_eq!(exited.as_array().map(Vec::len), Some(2), "{exited}");
    let running = api(&c, "/api/jobs?state=running").json("state=running");
    assert_eq!(running, Value::Array(Vec::new()));
    let node = ok["node"].as_str().unwrap();
    let on_node = api(&c, &format!("/api/jobs?node={node}")).json("node filter");
    assert!(
        on_node
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["node"] == node)
            && find_by(&on_node, "node", node).is_some(),
        "{on_node}"
    );
    let user = ok["user"].as_str().unwrap();
    let mine = api(&c, &format!("/api/jobs?user={user}")).json("user filter");
    assert_eq!(mine.as_array().map(Vec::len), Some(2), "{mine}");
    let nobody = api(&c, "/api/jobs?user=65534").json("user by uid");
    assert_eq!(nobody, Value::Array(Vec::new()));

    // One job: its `ps` record plus the timeline, and the node's counters.
    let detail = api(&c, &format!("/api/jobs/{}", ok["id"])).json("job detail");
    for (k, v) in ok.as_object().unwrap() {
        if k != "counters" {
            assert_eq!(&detail[k], v, "job detail .{k}");
        }
    }
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for want in ["placed", "started", "exited"] {
        assert!(kinds.contains(&want), "timeline {kinds:?} lacks {want}");
    }
    let counters = &detail["counters"];
    let n = |k: &str| {
        counters[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {counters}"))
    };
    assert!(n("calls") > 0, "the job forwarded calls: {counters}");
    let by_kind: u64 = counters
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("calls."))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_kind, n("calls"), "calls by kind add up: {counters}");
    assert!(
        n("cache_hits") + n("cache_misses") > 0,
        "the program and libraries came from the cache or central: {counters}"
    );
    n("bytes_read");
    n("bytes_written");
    assert!(n("stops") > 0, "{counters}");

    // Errors: JSON, and the right codes.
    assert_eq!(api(&c, "/api/jobs/99999").status, 404);
    assert_eq!(api(&c, "/api/jobs/abc").status, 400);
    assert_eq!(api(&c, "/api/jobs/18446744073709551615").status, 404);
    let all = api(&c, "/api/jobs?before=18446744073709551615").json("huge before");
    assert_eq!(all, jobs, "a `before` past every id pages from the newest");
    assert_eq!(api(&c, "/api/jobs?limit=-1").status, 400);
    assert_eq!(api(&c, "/api/jobs?state=sleeping").status, 400);
    assert_eq!(api(&c, "/api/jobs?limit=0").status, 400);
    assert_eq!(api(&c, "/api/jobs?colour=red").status, 400);
    assert_eq!(api(&c, "/no/such/page").status, 404);

    // A job watched live: running while it waits for its input, then
    // exited once the input closes.
    let mut live = Spawned::spawn(c.diatom_cmd(["exec", "/bin/cat"]), Feed::Pipe);
    let mut running = Value::Null;
    let seen = eventually(Duration::from_secs(30), || {
        running = api(&c, "/api/jobs?state=running").json("running jobs");
        running.as_array().is_some_and(|a| a.len() == 1)
    });
    assert!(seen, "the job shows as running: {running}");
    let id = running[0]["id"].clone();
    assert_eq!(running[0]["end"], Value::Null, "{running}");
    let status = api(&c, "/api/status").json("status while running");
    assert_eq!(status["jobs"]["running"], 1, "{status}");
    live.close_stdin();
    let out = live.wait_or_panic(Duration::from_secs(30), "the live job");
    assert!(out.status.success(), "{}", describe(&out));
    let done = api(&c, &format!("/api/jobs/{id}")).json("the live job's end");
    assert_eq!(done["state"], "exited", "{done}");
    assert_eq!(done["exit_status"], 0, "{done}");

    // The chart's samples, and the page itself with its two assets.
    let hist = api(&c, "/api/history").json("/api/history");
    assert_eq!(hist["interval_s"], 15, "{hist}");
    assert!(
        hist["samples"].as_array().is_some_and(|s| !s.is_empty()),
        "the first sample is taken at start: {hist}"
    );
    let page = api(&c, "/");
    assert_eq!(page.status, 200);
    assert!(text(&page.body).contains("/dashboard.js"));
    assert_eq!(api(&c, "/dashboard.js").status, 200);
    assert_eq!(api(&c, "/dashboard.css").status, 200);
    c.assert_daemons_alive();
}

/// Runs `diatom-central ARGS` until it exits (it must: a config error).
fn central_refuses(dir: &Path, args: &[&str]) -> String {
    let ns = Netns::new("dash-refuse").expect("namespace");
    let key = dir.join("key");
    if !key.exists() {
        keygen(&key);
    }
    let out = ns
        .command(bin_path("diatom-central"))
        .arg("--bind")
        .arg("127.0.0.1:12036")
        .arg("--key")
        .arg(&key)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("c.sock"))
        .args(args)
        .output()
        .expect("run diatom-central");
    assert_eq!(
        out.status.code(),
        Some(1),
        "diatom-central {args:?} must refuse to start: {}",
        describe(&out)
    );
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

#[test]
fn dashboard_token_off_loopback() {
    if !require_root("dashboard_token_off_loopback") {
        return;
    }
    let dir = TestDir::new("dash-token").unwrap();
    let token = dir.join("http.token");
    std::fs::write(&token, "dashboard-secret-2f9c\n").unwrap();

    // Refused at start: no token off loopback, a token others can read.
    let http = format!("0.0.0.0:{HTTP_PORT}");
    let err = central_refuses(dir.path(), &["--http", &http]);
    assert!(err.contains("--http-token"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = central_refuses(
        dir.path(),
        &["--http", &http, "--http-token", token.to_str().unwrap()],
    );
    assert!(err.contains("mode 0640"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    // With the token: the network gets 401 and nothing else without it.
    let c = DiatomCluster::builder(1)
        .name("dash-tok")
        .central_arg("--http")
        .central_arg(&http)
        .central_arg("--http-token")
        .central_arg(&token)
        .start();
    let n1 = c.net().node(1).unwrap();
    let base = format!("http://{}:{HTTP_PORT}", n1.central_addr);
    for path in [
        "/api/nodes",
        "/api/status",
        "/api/jobs",
        "/api/jobs/1",
        "/nope",
    ] {
        let url = format!("{base}{path}");
        for bad in [None, Some("wrong"), Some("dashboard-secret-2f9")] {
            let a = get(&n1.ns, &url, bad);
            assert_eq!(a.status, 401, "{url} with {bad:?}: {}", text(&a.body));
            assert!(a.body.is_empty(), "401 carries nothing: {}", text(&a.body));
        }
    }
    let nodes = get(
        &n1.ns,
        &format!("{base}/api/nodes"),
        Some("dashboard-secret-2f9c"),
    )
    .json("with the token");
    assert_eq!(nodes[0]["name"], node_name(1), "{nodes}");
    // The page shell holds no cluster data: a browser loads it, then sends
    // the token with its API requests.
    let page = get(&n1.ns, &format!("{base}/"), None);
    assert_eq!(page.status, 200);
    assert!(!text(&page.body).contains(&node_name(1)));
    c.assert_daemons_alive();
}

/// Chromium from Debian's `chromium` package; `None` (a skip) outside CI
/// when it is not installed.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "chromium is not installed (.ci/run installs the `chromium` package)"
        );
        eprintln!("skipping the browser test: no chromium (apt-get install chromium)");
    }
    found
}

/// Where the browser test leaves its screenshot: beside the build, so it
/// outlives the test's scratch directory.
fn output_dir() -> PathBuf {
    let d = bin_path("test-output").join("dashboard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium_cmd(c: &DiatomCluster, bin: &Path, profile: &Path) -> Command {
    let mut cmd = c.net().central.command(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1440,1250",
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .env("HOME", profile);
    cmd
}

#[test]
fn dashboard_in_headless_chromium() {
    if !require_root("dashboard_in_headless_chromium") {
        return;
    }
    let Some(bin) = chromium() else {
        return;
    };
    let (c, ok, failed) = cluster_with_jobs("dash-web");
    let url = format!("http://127.0.0.1:{HTTP_PORT}/#job={}", ok["id"]);
    let profile = c.path("chromium");

    let out = chromium_cmd(&c, &bin, &profile)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", describe(&out));
    let dom = text(&out.stdout);
    for i in 1..=2 {
        let row = format!("data-node=\"{}\" data-state=\"up\"", node_name(i));
        assert!(dom.contains(&row), "the page lists {row}:\n{dom}");
    }
    for j in [&ok, &failed] {
        let row = format!("data-job=\"{}\" data-state=\"exited\"", j["id"]);
        assert!(dom.contains(&row), "the page lists {row}:\n{dom}");
    }
    let title = format!("<h2 id=\"detail-title\">Job {}</h2>", ok["id"]);
    assert!(dom.contains(&title), "the job's detail is open:\n{dom}");
    assert!(
        dom.contains("<b>placed</b>")
            && dom.contains("<b>started</b>")
            && dom.contains("<b>exited</b>"),
        "its timeline is shown:\n{dom}"
    );

    let shot = output_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium_cmd(&c, &bin, &profile)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium: {}", describe(&out));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", shot.display());
    println!("dashboard screenshot: {}", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());
    c.assert_daemons_alive();
}
