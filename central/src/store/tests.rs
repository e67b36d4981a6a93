use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "diatom-store-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    /// The state dir: a child that does not exist yet, so `open` creates it.
    fn state(&self) -> PathBuf {
        self.0.join("state")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        address: "10.0.1.2:12036".into(),
        state: NodeState::Up,
        state_since: 1_000,
        cpus: 8,
        slots: 4,
        slots_used: 0,
        load: 0.25,
        last_seen: 1_000,
        registered_at: 1_000,
        kernel: "Linux 6.1.0 x86_64".into(),
        version: "0.1.0".into(),
        dropped: Counters::from([("bad_auth".into(), 3), ("replay".into(), 1)]),
        cache_bytes: 4096,
    }
}

fn new_job(node: &str, uid: u32, start: u64) -> NewJob {
    NewJob {
        uid,
        user: format!("user{uid}"),
        node: node.into(),
        program: "/bin/echo".into(),
        argv: vec!["echo".into(), "hé llo".into()],
        cwd: "/home/u".into(),
        start,
    }
}

fn exited(status: i32, at: u64) -> JobEnd {
    JobEnd {
        state: JobState::Exited,
        exit_status: Some(status),
        signal: None,
        reason: None,
        at,
    }
}

#[test]
fn open_creates_private_dir_in_wal_mode() {
    let t = TempDir::new();
    let store = Store::open(&t.state()).unwrap();
    let mode = std::fs::metadata(t.state()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(store.path().exists());
    let jm: String = store
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    let v: i64 = store
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::CURRENT_VERSION);
}

#[test]
fn node_round_trip_heartbeat_and_down() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let mut a = node("a");
    s.upsert_node(&a).unwrap();
    s.upsert_node(&node("b")).unwrap();
    assert_eq!(s.node("a").unwrap(), Some(a.clone()));
    assert_eq!(s.node("zz").unwrap(), None);

    // Re-registration replaces the record.
    a.address = "10.0.9.2:12036".into();
    a.registered_at = 2_000;
    s.upsert_node(&a).unwrap();
    let names: Vec<_> = s
        .list_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(s.node("a").unwrap().unwrap().address, "10.0.9.2:12036");

    s.mark_node_down("a", 5_000).unwrap();
    let down = s.node("a").unwrap().unwrap();
    assert_eq!(down.state, NodeState::Down);
    assert_eq!(down.state_since, 5_000);
    assert_eq!(down.last_seen, 1_000, "down keeps last_seen");
    // Down twice keeps the first time.
    s.mark_node_down("a", 6_000).unwrap();
    assert_eq!(s.node("a").unwrap().unwrap().state_since, 5_000);

    let hb = Heartbeat {
        at: 7_000,
        load: 1.5,
        slots_used: 2,
        dropped: Counters::from([("truncated".into(), 9)]),
        cache_bytes: 1 << 40,
    };
    s.update_heartbeat("a", &hb).unwrap();
    let up = s.node("a").unwrap().unwrap();
    assert_eq!(up.state, NodeState::Up);
    assert_eq!(up.state_since, 7_000);
    assert_eq!(up.last_seen, 7_000);
    assert_eq!(up.load, 1.5);
    assert_eq!(up.slots_used, 2);
    assert_eq!(up.dropped, hb.dropped);
    assert_eq!(up.cache_bytes, 1 << 40);
    // A second heartbeat while up keeps state_since.
    s.update_heartbeat("a", &Heartbeat { at: 8_000, ..hb })
        .unwrap();
    assert_eq!(s.node("a").unwrap().unwrap().state_since, 7_000);

    assert!(matches!(
        s.update_heartbeat("ghost", &Heartbeat { at: 1, load: 0.0, slots_used: 0, dropped: Counters::new(), cache_bytes: 0 }),
        Err(StoreError::UnknownNode(n)) if n == "ghost"
    ));
    assert!(matches!(
        s.mark_node_down("ghost", 1),
        Err(StoreError::UnknownNode(_))
    ));
}

#[test]
fn job_round_trip_finish_and_events() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let id = s.create_job(&new_job("a", 1000, 10_000)).unwrap();
    let j = s.job(id).unwrap().unwrap();
    assert_eq!(j.id, id);
    assert_eq!(j.state, JobState::Running);
    assert_eq!(j.spec, new_job("a", 1000, 10_000));
    assert_eq!(
        (j.end, j.exit_status, j.counters.clone()),
        (None, None, None)
    );

    s.add_job_event(id, 10_001, "started", "pid 42").unwrap();
    let counters = Counters::from([("openat".into(), 12), ("bytes_in".into(), 1 << 20)]);
    s.set_job_counters(id, &counters).unwrap();
    assert!(s.finish_job(id, &exited(42, 11_000)).unwrap());
    // A late duplicate report does not overwrite the first.
    assert!(!s.finish_job(id, &exited(7, 12_000)).unwrap());
    s.add_job_event(id, 11_000, "exited", "status 42").unwrap();

    let j = s.job(id).unwrap().unwrap();
    assert_eq!(j.state, JobState::Exited);
    assert_eq!(j.exit_status, Some(42));
    assert_eq!(j.end, Some(11_000));
    assert_eq!(j.counters, Some(counters));
    let kinds: Vec<_> = s
        .job_events(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["started", "exited"]);

    let ghost = JobId(999);
    assert!(matches!(s.job(ghost), Ok(None)));
    assert!(matches!(
        s.finish_job(ghost, &exited(0, 1)),
        Err(StoreError::UnknownJob(_))
    ));
    assert!(matches!(
        s.add_job_event(ghost, 1, "x", ""),
        Err(StoreError::UnknownJob(_))
    ));
    assert!(matches!(
        s.set_job_counters(ghost, &Counters::new()),
        Err(StoreError::UnknownJob(_))
    ));
    let running = JobEnd {
        state: JobState::Running,
        ..exited(0, 1)
    };
    assert!(matches!(
        s.finish_job(id, &running),
        Err(StoreError::FinishRunning(_))
    ));
}

#[test]
fn ending_a_job_records_its_end_and_the_report_together() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let id = s.create_job(&new_job("a", 1000, 10_000)).unwrap();
    assert!(s
        .end_job(id, &exited(3, 11_000), "exited", "status 3")
        .unwrap());
    // A second report changes nothing but stays in the timeline.
    assert!(!s
        .end_job(id, &exited(9, 12_000), "exited", "status 9")
        .unwrap());
    let j = s.job(id).unwrap().unwrap();
    assert_eq!(
        (j.state, j.exit_status, j.end),
        (JobState::Exited, Some(3), Some(11_000))
    );
    let events: Vec<_> = s
        .job_events(id)
        .unwrap()
        .into_iter()
        .map(|e| (e.at, e.detail))
        .collect();
    assert_eq!(
        events,
        [
            (11_000, "status 3".to_string()),
            (12_000, "status 9".to_string())
        ]
    );
    // An unknown job: an error, and nothing written.
    assert!(matches!(
        s.end_job(JobId(999), &exited(0, 1), "exited", ""),
        Err(StoreError::UnknownJob(_))
    ));
    let running = JobEnd {
        state: JobState::Running,
        ..exited(0, 1)
    };
    let other = s.create_job(&new_job("a", 1000, 10_000)).unwrap();
    assert!(matches!(
        s.end_job(other, &running, "x", ""),
        Err(StoreError::FinishRunning(_))
    ));
    assert!(s.job_events(other).unwrap().is_empty());
}

#[test]
fn a_placed_job_is_recorded_with_its_placement_and_discarded_with_it() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let id = s.create_placed_job(&new_job("a", 1000, 10_000)).unwrap();
    let events = s.job_events(id).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].at,
            events[0].kind.as_str(),
            events[0].detail.as_str()
        ),
        (10_000, "placed", "a")
    );
    // The node refused it: nothing of it stays.
    s.discard_unstarted_job(id).unwrap();
    assert!(matches!(s.job(id), Ok(None)));
    assert!(s.job_events(id).unwrap().is_empty());
}

#[test]
fn a_placed_job_has_its_id_before_its_record_is_committed() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    // Another connection (a reader such as `diatom ps` in another
    // process) sees nothing of the job while the id is handed out, and the
    // whole record once the write returns.
    let other = Store::open(&t.state()).unwrap();
    let (id, seen) = s
        .create_placed_job_with(&new_job("a", 1000, 10_000), |id| {
            (id, other.job(id).unwrap().is_none())
        })
        .unwrap();
    assert_eq!(seen, (id, true));
    let rec = other.job(id).unwrap().unwrap();
    assert_eq!(rec.spec.node, "a");
    assert_eq!(other.job_events(id).unwrap()[0].kind, "placed");
    let next = s.create_placed_job(&new_job("a", 1000, 10_001)).unwrap();
    assert!(next.0 > id.0);
}

#[test]
fn json_shapes_match_the_interface() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let mut n = node("a");
    n.last_seen = 1_795_678_315_123;
    s.upsert_node(&n).unwrap();
    let v = serde_json::to_value(s.list_nodes().unwrap()).unwrap();
    let o = &v[0];
    assert_eq!(o["name"], "a");
    assert_eq!(o["address"], "10.0.1.2:12036");
    assert_eq!(o["state"], "up");
    assert_eq!(o["cpus"], 8);
    assert_eq!(o["slots"], 4);
    assert_eq!(o["slots_used"], 0);
    assert_eq!(o["last_seen"], "2026-11-26T07:31:55.123Z");
    assert_eq!(o["dropped"]["bad_auth"], 3);

    let id = s.create_job(&new_job("a", 1000, 0)).unwrap();
    let v = serde_json::to_value(s.job(id).unwrap().unwrap()).unwrap();
    assert_eq!(v["id"], id.0);
    assert_eq!(v["user"], "user1000");
    assert_eq!(v["node"], "a");
    assert_eq!(v["program"], "/bin/echo");
    assert_eq!(v["state"], "running");
    assert_eq!(v["start"], "1970-01-01T00:00:00.000Z");
    assert!(v["exit_status"].is_null());
    assert!(v.as_object().unwrap().contains_key("exit_status"));
}

#[test]
fn survives_restart_and_never_reuses_ids() {
    let t = TempDir::new();
    let (a, b);
    {
        let s = Store::open(&t.state()).unwrap();
        s.upsert_node(&node("a")).unwrap();
        a = s.create_job(&new_job("a", 1, 1)).unwrap();
        b = s.create_job(&new_job("a", 1, 2)).unwrap();
        s.finish_job(b, &exited(3, 4)).unwrap();
        // Even the largest id, deleted behind the store's back, stays used.
        s.conn()
            .execute("DELETE FROM jobs WHERE id = ?1", [b.0 as i64])
            .unwrap();
    }
    let s = Store::open(&t.state()).unwrap();
    assert_eq!(s.node("a").unwrap(), Some(node("a")));
    assert_eq!(s.job(a).unwrap().unwrap().state, JobState::Running);
    let c = s.create_job(&new_job("a", 1, 5)).unwrap();
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[test]
fn lost_node_marks_only_its_running_jobs() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let a1 = s.create_job(&new_job("a", 1, 1)).unwrap();
    let a2 = s.create_job(&new_job("a", 1, 2)).unwrap();
    let a3 = s.create_job(&new_job("a", 1, 3)).unwrap();
    let b1 = s.create_job(&new_job("b", 1, 4)).unwrap();
    s.finish_job(a2, &exited(0, 5)).unwrap();
    let lost = s.mark_running_jobs_lost_on("a", 9, "node a down").unwrap();
    assert_eq!(lost, [a1, a3]);
    for id in [a1, a3] {
        let j = s.job(id).unwrap().unwrap();
        assert_eq!(j.state, JobState::Lost);
        assert_eq!(j.end, Some(9));
        assert_eq!(j.reason.as_deref(), Some("node a down"));
        assert_eq!(s.job_events(id).unwrap()[0].kind, "lost");
    }
    assert_eq!(s.job(a2).unwrap().unwrap().state, JobState::Exited);
    assert_eq!(s.job(b1).unwrap().unwrap().state, JobState::Running);
    assert!(s
        .mark_running_jobs_lost_on("a", 10, "again")
        .unwrap()
        .is_empty());
}

/// Opens a database at schema version 1 with a node and a finished job.
fn make_v1_db(state: &Path) -> (JobId, NodeRecord) {
    let s = Store::open_at_version(state, 1).unwrap();
    let v: i64 = s
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1);
    let exists: bool = s
        .conn()
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE name = 'job_events')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!exists, "version 1 has no event table");
    let n = node("old");
    s.upsert_node(&n).unwrap();
    let id = s.create_job(&new_job("old", 7, 1)).unwrap();
    s.finish_job(id, &exited(1, 2)).unwrap();
    (id, n)
}

#[test]
fn older_database_is_migrated_keeping_its_data() {
    let t = TempDir::new();
    let (id, n) = make_v1_db(&t.state());
    let s = Store::open(&t.state()).unwrap();
    let v: i64 = s
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::CURRENT_VERSION);
    assert_eq!(s.node("old").unwrap(), Some(n));
    assert_eq!(s.job(id).unwrap().unwrap().exit_status, Some(1));
    // Migration 2's table works on the old job.
    s.add_job_event(id, 3, "note", "after migration").unwrap();
    assert_eq!(s.job_events(id).unwrap().len(), 1);
}

#[test]
fn newer_database_is_refused() {
    let t = TempDir::new();
    drop(Store::open(&t.state()).unwrap());
    {
        let c = Connection::open(t.state().join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", schema::CURRENT_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(&t.state()).unwrap_err();
    match &err {
        StoreError::TooNew { found, supported } => {
            assert_eq!(*found, schema::CURRENT_VERSION + 1);
            assert_eq!(*supported, schema::CURRENT_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains("newer than this diatom-central supports"));
}

#[test]
fn listing_ten_thousand_jobs_pages_and_filters() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    {
        // One transaction: 10,000 autocommits would each sync the WAL.
        let mut conn = s.conn();
        let tx = conn.transaction().unwrap();
        for i in 0..10_000u32 {
            let node = if i % 2 == 0 { "even" } else { "odd" };
            tx.execute(
                "INSERT INTO jobs (uid, user, node, program, argv, cwd, state, start)
                 VALUES (?1, 'u', ?2, '/bin/true', '[]', '/', ?3, ?4)",
                params![
                    i % 10,
                    node,
                    if i % 100 == 0 { "running" } else { "exited" },
                    i
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    // Default filter: running jobs only.
    let running = s.list_jobs(&JobFilter::default()).unwrap();
    assert_eq!(running.len(), 100);
    assert!(running.iter().all(|j| j.state == JobState::Running));
    assert!(
        running.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );

    // Page through everything 1000 at a time.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_jobs(&JobFilter {
                include_finished: true,
                limit: Some(1000),
                before,
                ..JobFilter::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 1000);
        before = page.last().map(|j| j.id);
        seen.extend(page.into_iter().map(|j| j.id.0));
    }
    let expected: Vec<u64> = (1..=10_000).rev().collect();
    assert_eq!(seen, expected);

    // Combined filters.
    let f = JobFilter {
        state: Some(JobState::Exited),
        uid: Some(3),
        node: Some("odd".into()),
        limit: Some(5),
        before: Some(JobId(5000)),
        ..JobFilter::default()
    };
    let page = s.list_jobs(&f).unwrap();
    // uid 3 means i % 10 == 3 (odd, exited): ids i + 1 = 4994, 4984, ...
    let ids: Vec<_> = page.iter().map(|j| j.id.0).collect();
    assert_eq!(ids, [4994, 4984, 4974, 4964, 4954]);
    assert_eq!(s.count_jobs(None).unwrap(), 10_000);
    assert_eq!(s.count_jobs(Some(JobState::Running)).unwrap(), 100);
}

/// SQLite's plan for `sql` with `args`, its steps joined by ` | `.
fn query_plan(conn: &Connection, sql: &str, args: &[rusqlite::types::Value]) -> String {
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    plan.join(" | ")
}

#[test]
fn list_queries_search_an_index() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    let filters = [
        JobFilter::default(),
        JobFilter {
            include_finished: true,
            before: Some(JobId(10)),
            limit: Some(5),
            ..JobFilter::default()
        },
        JobFilter {
            include_finished: true,
            uid: Some(1),
            ..JobFilter::default()
        },
        JobFilter {
            include_finished: true,
            node: Some("n".into()),
            ..JobFilter::default()
        },
        JobFilter {
            state: Some(JobState::Lost),
            node: Some("n".into()),
            uid: Some(1),
            ..JobFilter::default()
        },
    ];
    for f in filters {
        let (sql, args) = jobs_query(&f).unwrap();
        let plan = query_plan(&s.conn(), &sql, &args);
        assert!(plan.contains("SEARCH jobs"), "{f:?}: {plan}");
        assert!(!plan.contains("SCAN jobs"), "{f:?}: {plan}");
    }
}

#[test]
fn two_handles_write_concurrently() {
    let t = TempDir::new();
    let s1 = Store::open(&t.state()).unwrap();
    let s2 = Store::open(&t.state()).unwrap();
    let ids = std::thread::scope(|sc| {
        let h: Vec<_> = [&s1, &s2, &s1, &s2]
            .into_iter()
            .enumerate()
            .map(|(k, s)| {
                sc.spawn(move || {
                    (0..100)
                        .map(|i| {
                            let id = s.create_job(&new_job("n", k as u32, i)).unwrap();
                            s.add_job_event(id, i, "started", "").unwrap();
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        h.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 400, "every id distinct");
    // Each handle sees the other's writes.
    assert_eq!(s1.count_jobs(None).unwrap(), 400);
    assert_eq!(
        s2.list_jobs(&JobFilter {
            limit: Some(1000),
            ..JobFilter::default()
        })
        .unwrap()
        .len(),
        400
    );
}

#[test]
fn corrupt_values_are_errors_not_panics() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    s.upsert_node(&node("a")).unwrap();
    s.conn()
        .execute("UPDATE nodes SET state = 'sideways'", [])
        .unwrap();
    assert!(matches!(
        s.list_nodes(),
        Err(StoreError::Corrupt {
            what: "node state",
            ..
        })
    ));
    let id = s.create_job(&new_job("a", 1, 1)).unwrap();
    s.conn()
        .execute("UPDATE jobs SET argv = '{not json'", [])
        .unwrap();
    assert!(matches!(
        s.job(id),
        Err(StoreError::Corrupt {
            what: "job argv",
            ..
        })
    ));
}

/// What the dashboard asks on every refresh, on a store of 100 nodes and
/// 10,000 jobs: each job page searches an index (or walks the rowid
/// backwards for the unfiltered newest page) and visits no more rows than
/// it returns plus what its filter skips along one index.
#[test]
fn dashboard_refresh_queries_stay_small_on_a_big_store() {
    let t = TempDir::new();
    let s = Store::open(&t.state()).unwrap();
    for i in 0..100 {
        s.upsert_node(&node(&format!("node{i:03}"))).unwrap();
    }
    {
        let mut conn = s.conn();
        let tx = conn.transaction().unwrap();
        for i in 0..10_000u64 {
            let state = if i >= 9_900 { "running" } else { "exited" };
            tx.execute(
                "INSERT INTO jobs (uid, user, node, program, argv, cwd, state, start, counters)
                 VALUES (?1, ?2, ?3, '/bin/true', '[]', '/', ?4, ?5, '{\"calls\":1}')",
                params![
                    (i % 7) as i64,
                    format!("user{}", i % 7),
                    format!("node{:03}", i % 100),
                    state,
                    i as i64
                ],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO job_events (job, at, kind, detail) VALUES (?1, ?2, 'placed', '')",
                params![(i + 1) as i64, i as i64],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    assert_eq!(s.list_nodes().unwrap().len(), 100);
    let page = |f: JobFilter| {
        let (sql, args) = jobs_query(&f).unwrap();
        let conn = s.conn();
        let plan = query_plan(&conn, &sql, &args);
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
            .count();
        let full_scan_steps = stmt.get_status(rusqlite::StatementStatus::FullscanStep);
        (plan, rows, full_scan_steps)
    };
    // The newest page of everything: a backwards walk that stops at LIMIT.
    let (plan, rows, scan) = page(JobFilter {
        include_finished: true,
        limit: Some(50),
        ..JobFilter::default()
    });
    assert_eq!(rows, 50);
    assert!(scan <= 50, "{plan}: {scan} steps for 50 rows");
    assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    // Every filtered or later page searches an index, without sorting.
    for f in [
        JobFilter {
            include_finished: true,
            limit: Some(50),
            before: Some(JobId(5_000)),
            ..JobFilter::default()
        },
        JobFilter {
            state: Some(JobState::Running),
            limit: Some(50),
            ..JobFilter::default()
        },
        JobFilter {
            state: Some(JobState::Exited),
            limit: Some(50),
            before: Some(JobId(9_000)),
            ..JobFilter::default()
        },
        JobFilter {
            include_finished: true,
            node: Some("node042".into()),
            limit: Some(50),
            ..JobFilter::default()
        },
        JobFilter {
            include_finished: true,
            uid: Some(3),
            limit: Some(50),
            before: Some(JobId(7_000)),
            ..JobFilter::default()
        },
    ] {
        let (plan, rows, scan) = page(f.clone());
        assert_eq!(rows, 50, "{f:?}");
        assert!(plan.contains("SEARCH jobs"), "{f:?}: {plan}");
        assert!(!plan.contains("SCAN jobs"), "{f:?}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{f:?}: {plan}");
        assert_eq!(scan, 0, "{f:?}: {plan}");
    }
    // One job's detail: its row by id and its events by the job index.
    let conn = s.conn();
    for sql in [
        format!("{JOB_SELECT} WHERE id = 4242"),
        "SELECT at, kind, detail FROM job_events WHERE job = 4242 ORDER BY seq".to_owned(),
    ] {
        let plan = query_plan(&conn, &sql, &[]);
        assert!(plan.contains("SEARCH"), "{sql}: {plan}");
        assert!(!plan.contains("SCAN"), "{sql}: {plan}");
    }
    drop(conn);
    assert_eq!(s.job_events(JobId(4242)).unwrap().len(), 1);
    assert_eq!(s.count_jobs(Some(JobState::Running)).unwrap(), 100);
}

#[test]
fn discarding_removes_only_jobs_that_never_ended() {
    let d = TempDir::new();
    let s = Store::open(&d.state()).unwrap();
    let refused = s.create_job(&new_job("a", 1, 1)).unwrap();
    s.add_job_event(refused, 1, "placed", "a").unwrap();
    let ran = s.create_job(&new_job("a", 1, 2)).unwrap();
    assert!(s.finish_job(ran, &exited(0, 3)).unwrap());
    s.discard_unstarted_job(refused).unwrap();
    s.discard_unstarted_job(ran).unwrap();
    assert!(s.job(refused).unwrap().is_none());
    assert!(s.job_events(refused).unwrap().is_empty());
    assert_eq!(s.job(ran).unwrap().unwrap().state, JobState::Exited);
}
