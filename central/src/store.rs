//! Central's persistent state: the node registry, the job table and each
//! job's event timeline, in one SQLite database (`central.db`) under the
//! state directory, so a restart of `diatom-central` loses no registry or
//! job history.
//!
//! The database runs in WAL mode so readers (`diatom ps`) never block the
//! daemon's writes, with `synchronous = NORMAL`: a crash of the daemon loses
//! nothing committed; only an OS crash or power loss may lose the last few
//! commits, a fair price for not paying an fsync on every heartbeat.
//! A [`Store`] is one connection behind a mutex, so it can be shared between
//! threads; several `Store`s (even in several processes) may open the same
//! directory, and SQLite's busy timeout serialises their writes.
//!
//! Times are unix milliseconds in the database and in the records, and are
//! serialised as RFC 3339 strings, the shape `diatom nodes --json` and
//! `diatom ps --json` promise (see `shared/interface.md`).

mod schema;
mod time;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Serialize, Serializer};

pub use time::{now_ms, rfc3339};

/// The database file's name inside the state directory.
pub const DB_FILE: &str = "central.db";

/// How long a writer waits for another connection's write lock before
/// failing with [`StoreError::Sqlite`] (`SQLITE_BUSY`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite reported an error (open, query, busy past the timeout, disk full...).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer diatom-central whose schema this
    /// build does not know; refusing beats silently misreading it.
    #[error(
        "database schema version {found} is newer than this diatom-central supports ({supported}); \
         run a newer diatom-central or point --state-dir elsewhere"
    )]
    TooNew {
        /// `PRAGMA user_version` of the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A value in the database does not parse (bad JSON, unknown state name,
    /// a negative count): someone edited the file, or a bug wrote it.
    #[error("corrupt {what} in database: {detail}")]
    Corrupt {
        /// Which column or setting.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("{0} is too large to store")]
    OutOfRange(&'static str),
    /// The named node is not registered.
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    /// No job has this id.
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// [`Store::finish_job`] was asked to end a job in state `running`.
    #[error("job {0} cannot finish in state running")]
    FinishRunning(JobId),
}

/// A job's id: assigned by the store, increasing, never reused, even across
/// restarts and after rows are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether central currently hears from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Registered and heartbeating.
    Up,
    /// Missed its heartbeats, or never re-registered after a central restart.
    Down,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Started on a node and not known to have ended.
    Running,
    /// Its first process exited by itself (status or signal).
    Exited,
    /// Killed by Diatom: `diatom kill`, a limit, or its home vanished.
    Killed,
    /// Its node went down while it ran; its fate is unknown.
    Lost,
}

macro_rules! string_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// The lowercase name used in the database and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),* }
            }
        }
        impl FromStr for $ty {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok($ty::$variant),)*
                    other => Err(StoreError::Corrupt { what: $what, detail: format!("{other:?}") }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(NodeState, "node state", { Up => "up", Down => "down" });
string_enum!(JobState, "job state", {
    Running => "running", Exited => "exited", Killed => "killed", Lost => "lost",
});

/// Counters keyed by name: datagrams dropped by reason, calls forwarded by
/// kind, bytes moved. A sorted map so JSON output is stable.
pub type Counters = BTreeMap<String, u64>;

/// One node of the registry, as stored and as `diatom nodes --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRecord {
    /// Unique node name (`--name`, default the host name).
    pub name: String,
    /// The socket address central reaches the node at, e.g. `10.0.1.2:12036`.
    pub address: String,
    /// Up or down.
    pub state: NodeState,
    /// When `state` last changed.
    #[serde(serialize_with = "ser_time")]
    pub state_since: u64,
    /// CPUs of the node.
    pub cpus: u32,
    /// Jobs the node runs at once (`--slots`).
    pub slots: u32,
    /// Slots currently in use.
    pub slots_used: u32,
    /// Load average (1 minute) from the last heartbeat.
    pub load: f64,
    /// Last time central heard from the node.
    #[serde(serialize_with = "ser_time")]
    pub last_seen: u64,
    /// Time of the latest registration: when the node daemon last (re)started
    /// or re-registered after a central restart.
    #[serde(serialize_with = "ser_time")]
    pub registered_at: u64,
    /// The node's kernel (`uname -srm`).
    pub kernel: String,
    /// The node daemon's version.
    pub version: String,
    /// Datagrams the node dropped, keyed by reason.
    pub dropped: Counters,
    /// Bytes in the node's file cache.
    pub cache_bytes: u64,
}

/// What a heartbeat updates; it also marks the node up.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// When central received it.
    pub at: u64,
    /// Load average.
    pub load: f64,
    /// Slots in use.
    pub slots_used: u32,
    /// Datagrams dropped, by reason (totals since the node started).
    pub dropped: Counters,
    /// Bytes in the node's file cache.
    pub cache_bytes: u64,
}

/// A job about to start, as central knows it when it picks a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewJob {
    /// The caller's uid (from the control socket's peer credentials).
    pub uid: u32,
    /// The caller's user name.
    pub user: String,
    /// The node it runs on.
    pub node: String,
    /// The program as resolved on central.
    pub program: String,
    /// Its arguments; non-UTF-8 bytes are the caller's to replace.
    pub argv: Vec<String>,
    /// Its working directory on central.
    pub cwd: String,
    /// When it started.
    #[serde(serialize_with = "ser_time")]
    pub start: u64,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    /// Exited, killed or lost (`Running` is refused by [`Store::finish_job`]).
    pub state: JobState,
    /// Exit status, when its first process exited by itself.
    pub exit_status: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Why Diatom ended it (a limit, the node lost, `diatom kill`).
    pub reason: Option<String>,
    /// When.
    pub at: u64,
}

/// One job, as stored and as `diatom ps --json` prints it (the fields of
/// its [`NewJob`] appear at the top level of the JSON object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// What central started.
    #[serde(flatten)]
    pub spec: NewJob,
    /// Running, exited, killed or lost.
    pub state: JobState,
    /// When it ended; `None` while running.
    #[serde(serialize_with = "ser_opt_time")]
    pub end: Option<u64>,
    /// Exit status; `None` while running and when a signal or Diatom ended it.
    pub exit_status: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Why Diatom ended it.
    pub reason: Option<String>,
    /// Its counters (forwarded calls by kind, bytes moved), once reported.
    pub counters: Option<Counters>,
}

/// Which jobs [`Store::list_jobs`] returns, newest (highest id) first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only jobs in this state (overrides `include_finished`).
    pub state: Option<JobState>,
    /// Only this user's jobs.
    pub uid: Option<u32>,
    /// Only jobs on this node.
    pub node: Option<String>,
    /// Without `state`: running jobs only when false, all jobs when true.
    pub include_finished: bool,
    /// At most this many.
    pub limit: Option<u32>,
    /// Only jobs with an id below this one: the next page after a page whose
    /// last id was `before`.
    pub before: Option<JobId>,
}

/// One entry of a job's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEvent {
    /// When it happened.
    #[serde(serialize_with = "ser_time")]
    pub at: u64,
    /// What kind of event (`started`, `signal`, `exited`, `lost`...).
    pub kind: String,
    /// Free text.
    pub detail: String,
}

fn ser_time<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

fn ser_opt_time<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// Central's database. See the module documentation.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `state_dir/central.db`, creating the
    /// directory with mode 0700, and migrates the schema to this build's
    /// version. A database from a newer build is refused with
    /// [`StoreError::TooNew`].
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Self::open_at_version(state_dir, schema::CURRENT_VERSION)
    }

    fn open_at_version(state_dir: &Path, version: i64) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::CreateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        let path = state_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Room for every statement a job's life runs plus the listings'
        // variants (rusqlite keeps 16): SQL is parsed once per daemon.
        conn.set_prepared_statement_cache_capacity(64);
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                what: "journal_mode",
                detail: format!("SQLite refused WAL mode and kept {mode:?}"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn, version)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: an
        // open transaction rolls back when dropped. So the data is still good.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts the node, or replaces everything known about a node of that
    /// name (a registration).
    pub fn upsert_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO nodes (name, address, cpus, slots, slots_used, load, state, state_since,
                                last_seen, registered_at, kernel, version, dropped, cache_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT(name) DO UPDATE SET
                address = excluded.address, cpus = excluded.cpus, slots = excluded.slots,
                slots_used = excluded.slots_used, load = excluded.load, state = excluded.state,
                state_since = excluded.state_since, last_seen = excluded.last_seen,
                registered_at = excluded.registered_at, kernel = excluded.kernel,
                version = excluded.version, dropped = excluded.dropped,
                cache_bytes = excluded.cache_bytes",
            params![
                node.name,
                node.address,
                node.cpus,
                node.slots,
                node.slots_used,
                node.load,
                node.state.as_str(),
                to_i64(node.state_since, "state_since")?,
                to_i64(node.last_seen, "last_seen")?,
                to_i64(node.registered_at, "registered_at")?,
                node.kernel,
                node.version,
                to_json(&node.dropped)?,
                to_i64(node.cache_bytes, "cache_bytes")?,
            ],
        )?;
        Ok(())
    }

    /// Records a heartbeat: load, slots, counters, last seen, and state up.
    pub fn update_heartbeat(&self, name: &str, hb: &Heartbeat) -> Result<(), StoreError> {
        let at = to_i64(hb.at, "heartbeat time")?;
        let n = self.conn().execute(
            "UPDATE nodes SET load = ?2, slots_used = ?3, dropped = ?4, cache_bytes = ?5,
                last_seen = ?6,
                state_since = CASE state WHEN 'up' THEN state_since ELSE ?6 END,
                state = 'up'
             WHERE name = ?1",
            params![
                name,
                hb.load,
                hb.slots_used,
                to_json(&hb.dropped)?,
                to_i64(hb.cache_bytes, "cache_bytes")?,
                at,
            ],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownNode(name.to_owned()));
        }
        Ok(())
    }

    /// Marks a node down at `at` (its `last_seen` stays the last time central
    /// heard from it). Already down: no change.
    pub fn mark_node_down(&self, name: &str, at: u64) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE nodes SET state = 'down', state_since = ?2 WHERE name = ?1 AND state != 'down'",
            params![name, to_i64(at, "time")?],
        )?;
        if n == 0 {
            let exists: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM nodes WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::UnknownNode(name.to_owned()));
            }
        }
        Ok(())
    }

    /// Every node, by name.
    pub fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{NODE_SELECT} ORDER BY name"))?;
        let rows = stmt.query_map([], raw_node)?;
        rows.map(|r| r?.parse()).collect()
    }

    /// The node of that name, if registered.
    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{NODE_SELECT} WHERE name = ?1"))?;
        stmt.query_row([name], raw_node)
            .optional()?
            .map(RawNode::parse)
            .transpose()
    }

    /// Records a new running job and returns its id.
    pub fn create_job(&self, job: &NewJob) -> Result<JobId, StoreError> {
        Self::insert_job(&self.conn(), job)
    }

    /// [`Store::create_job`] and its `placed` event (on `job.node`), in
    /// one transaction: the write a job's start waits for.
    pub fn create_placed_job(&self, job: &NewJob) -> Result<JobId, StoreError> {
        self.create_placed_job_with(job, |_| ()).map(|(id, ())| id)
    }

    /// [`Store::create_placed_job`], calling `placed` with the job's id as
    /// soon as it has one: inside the transaction, which holds SQLite's
    /// write lock, so the id is final, before the rest of the write (the
    /// event, the commit). Central sends the node its start from there, so
    /// the write goes on while the start is on its way. When the commit
    /// fails, `placed` has run for a job that has no record.
    pub fn create_placed_job_with<T>(
        &self,
        job: &NewJob,
        placed: impl FnOnce(JobId) -> T,
    ) -> Result<(JobId, T), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = Self::insert_job(&tx, job)?;
        let out = placed(id);
        tx.prepare_cached(
            "INSERT INTO job_events (job, at, kind, detail) VALUES (?1, ?2, 'placed', ?3)",
        )?
        .execute(params![job_key(id)?, to_i64(job.start, "time")?, job.node])?;
        tx.commit()?;
        Ok((id, out))
    }

    fn insert_job(conn: &Connection, job: &NewJob) -> Result<JobId, StoreError> {
        let id: i64 = conn
            .prepare_cached(
                "INSERT INTO jobs (uid, user, node, program, argv, cwd, state, start)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7) RETURNING id",
            )?
            .query_row(
                params![
                    job.uid,
                    job.user,
                    job.node,
                    job.program,
                    to_json(&job.argv)?,
                    job.cwd,
                    to_i64(job.start, "start")?,
                ],
                |r| r.get(0),
            )?;
        Ok(JobId(from_i64(id, "job id")?))
    }

    /// Removes a job that never ran (its node refused to start it: central
    /// retries with a new record), with its events. A job that ended is
    /// history and stays.
    pub fn discard_unstarted_job(&self, id: JobId) -> Result<(), StoreError> {
        let conn = self.conn();
        let key = job_key(id)?;
        conn.execute(
            "DELETE FROM job_events WHERE job = ?1
             AND EXISTS(SELECT 1 FROM jobs WHERE id = ?1 AND state = 'running')",
            [key],
        )?;
        conn.execute(
            "DELETE FROM jobs WHERE id = ?1 AND state = 'running'",
            [key],
        )?;
        Ok(())
    }

    /// Ends a running job. Returns `false`, changing nothing, when the job
    /// had already ended (a duplicate or late report: the first one wins).
    pub fn finish_job(&self, id: JobId, end: &JobEnd) -> Result<bool, StoreError> {
        Self::finish(&self.conn(), id, end)
    }

    /// The event that reports a job's end (`kind`, `detail`: see
    /// [`Store::add_job_event`]; added even when the job had already ended,
    /// as the timeline's record of the report) and [`Store::finish_job`],
    /// in one transaction: one commit per job's end.
    pub fn end_job(
        &self,
        id: JobId,
        end: &JobEnd,
        kind: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::insert_event(&tx, id, end.at, kind, detail)?;
        let ended = Self::finish(&tx, id, end)?;
        tx.commit()?;
        Ok(ended)
    }

    fn finish(conn: &Connection, id: JobId, end: &JobEnd) -> Result<bool, StoreError> {
        if end.state == JobState::Running {
            return Err(StoreError::FinishRunning(id));
        }
        let n = conn
            .prepare_cached(
                "UPDATE jobs SET state = ?2, exit_status = ?3, signal = ?4, reason = ?5, end = ?6
                 WHERE id = ?1 AND state = 'running'",
            )?
            .execute(params![
                job_key(id)?,
                end.state.as_str(),
                end.exit_status,
                end.signal,
                end.reason,
                to_i64(end.at, "end")?,
            ])?;
        if n == 1 {
            return Ok(true);
        }
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM jobs WHERE id = ?1)")?
            .query_row([job_key(id)?], |r| r.get(0))?;
        if exists {
            Ok(false)
        } else {
            Err(StoreError::UnknownJob(id))
        }
    }

    /// Replaces a job's counters.
    pub fn set_job_counters(&self, id: JobId, counters: &Counters) -> Result<(), StoreError> {
        let n = self
            .conn()
            .prepare_cached("UPDATE jobs SET counters = ?2 WHERE id = ?1")?
            .execute(params![job_key(id)?, to_json(counters)?])?;
        if n == 0 {
            return Err(StoreError::UnknownJob(id));
        }
        Ok(())
    }

    /// Marks every running job on `node` lost (its node went down), with a
    /// `lost` event for each, and returns their ids so their homes can be told.
    pub fn mark_running_jobs_lost_on(
        &self,
        node: &str,
        at: u64,
        reason: &str,
    ) -> Result<Vec<JobId>, StoreError> {
        let at = to_i64(at, "time")?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids = {
            let mut stmt = tx.prepare(
                "UPDATE jobs SET state = 'lost', end = ?2, reason = ?3
                 WHERE node = ?1 AND state = 'running' RETURNING id",
            )?;
            let ids = stmt
                .query_map(params![node, at, reason], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut ev = tx.prepare(
                "INSERT INTO job_events (job, at, kind, detail) VALUES (?1, ?2, 'lost', ?3)",
            )?;
            for id in &ids {
                ev.execute(params![id, at, reason])?;
            }
            ids
        };
        tx.commit()?;
        let mut ids = ids
            .into_iter()
            .map(|id| from_i64(id, "job id").map(JobId))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Jobs matching `filter`, newest first.
    pub fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let (sql, args) = jobs_query(filter)?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), raw_job)?;
        rows.map(|r| r?.parse()).collect()
    }

    /// How many jobs are in `state` (all jobs when `None`).
    pub fn count_jobs(&self, state: Option<JobState>) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = match state {
            Some(s) => conn.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = ?1",
                [s.as_str()],
                |r| r.get(0),
            )?,
            None => conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))?,
        };
        from_i64(n, "job count")
    }

    /// The job with this id.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{JOB_SELECT} WHERE id = ?1"))?;
        stmt.query_row([job_key(id)?], raw_job)
            .optional()?
            .map(RawJob::parse)
            .transpose()
    }

    /// Appends an event to a job's timeline.
    pub fn add_job_event(
        &self,
        id: JobId,
        at: u64,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        Self::insert_event(&self.conn(), id, at, kind, detail)
    }

    fn insert_event(
        conn: &Connection,
        id: JobId,
        at: u64,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (key, at) = (job_key(id)?, to_i64(at, "time")?);
        let res = conn
            .prepare_cached(
                "INSERT INTO job_events (job, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![key, at, kind, detail]));
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::UnknownJob(id))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A job's timeline in the order events were added.
    pub fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, kind, detail FROM job_events WHERE job = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([job_key(id)?], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.map(|r| {
            let (at, kind, detail) = r?;
            Ok(JobEvent {
                at: from_i64(at, "event time")?,
                kind,
                detail,
            })
        })
        .collect()
    }
}

/// Builds the `list_jobs` query. Every filter is an equality on an indexed
/// column plus a rowid range, so SQLite searches an index instead of
/// scanning the table (checked by a test with `EXPLAIN QUERY PLAN`).
fn jobs_query(filter: &JobFilter) -> Result<(String, Vec<rusqlite::types::Value>), StoreError> {
    use rusqlite::types::Value;
    let mut conds = Vec::new();
    let mut args = Vec::new();
    let state = match (filter.state, filter.include_finished) {
        (Some(s), _) => Some(s),
        (None, false) => Some(JobState::Running),
        (None, true) => None,
    };
    if let Some(s) = state {
        conds.push("state = ?");
        args.push(Value::Text(s.as_str().to_owned()));
    }
    if let Some(uid) = filter.uid {
        conds.push("uid = ?");
        args.push(Value::Integer(i64::from(uid)));
    }
    if let Some(node) = &filter.node {
        conds.push("node = ?");
        args.push(Value::Text(node.clone()));
    }
    if let Some(before) = filter.before {
        conds.push("id < ?");
        args.push(Value::Integer(job_key(before)?));
    }
    let mut sql = JOB_SELECT.to_owned();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(" LIMIT ?");
        args.push(Value::Integer(i64::from(limit)));
    }
    Ok((sql, args))
}

const NODE_SELECT: &str = "SELECT name, address, cpus, slots, slots_used, load, state, state_since,
    last_seen, registered_at, kernel, version, dropped, cache_bytes FROM nodes";

/// A node row before its text columns are parsed: rusqlite's row closures
/// can only return rusqlite errors, ours are richer.
struct RawNode {
    name: String,
    address: String,
    cpus: u32,
    slots: u32,
    slots_used: u32,
    load: f64,
    state: String,
    state_since: i64,
    last_seen: i64,
    registered_at: i64,
    kernel: String,
    version: String,
    dropped: String,
    cache_bytes: i64,
}

fn raw_node(r: &Row<'_>) -> rusqlite::Result<RawNode> {
    Ok(RawNode {
        name: r.get(0)?,
        address: r.get(1)?,
        cpus: r.get(2)?,
        slots: r.get(3)?,
        slots_used: r.get(4)?,
        load: r.get(5)?,
        state: r.get(6)?,
        state_since: r.get(7)?,
        last_seen: r.get(8)?,
        registered_at: r.get(9)?,
        kernel: r.get(10)?,
        version: r.get(11)?,
        dropped: r.get(12)?,
        cache_bytes: r.get(13)?,
    })
}

impl RawNode {
    fn parse(self) -> Result<NodeRecord, StoreError> {
        Ok(NodeRecord {
            state: self.state.parse()?,
            state_since: from_i64(self.state_since, "state_since")?,
            last_seen: from_i64(self.last_seen, "last_seen")?,
            registered_at: from_i64(self.registered_at, "registered_at")?,
            dropped: from_json(&self.dropped, "node dropped counters")?,
            cache_bytes: from_i64(self.cache_bytes, "cache_bytes")?,
            name: self.name,
            address: self.address,
            cpus: self.cpus,
            slots: self.slots,
            slots_used: self.slots_used,
            load: self.load,
            kernel: self.kernel,
            version: self.version,
        })
    }
}

const JOB_SELECT: &str = "SELECT id, uid, user, node, program, argv, cwd, state, start, end,
    exit_status, signal, reason, counters FROM jobs";

/// A job row before its text columns are parsed.
struct RawJob {
    id: i64,
    uid: u32,
    user: String,
    node: String,
    program: String,
    argv: String,
    cwd: String,
    state: String,
    start: i64,
    end: Option<i64>,
    exit_status: Option<i32>,
    signal: Option<i32>,
    reason: Option<String>,
    counters: Option<String>,
}

fn raw_job(r: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: r.get(0)?,
        uid: r.get(1)?,
        user: r.get(2)?,
        node: r.get(3)?,
        program: r.get(4)?,
        argv: r.get(5)?,
        cwd: r.get(6)?,
        state: r.get(7)?,
        start: r.get(8)?,
        end: r.get(9)?,
        exit_status: r.get(10)?,
        signal: r.get(11)?,
        reason: r.get(12)?,
        counters: r.get(13)?,
    })
}

impl RawJob {
    fn parse(self) -> Result<JobRecord, StoreError> {
        Ok(JobRecord {
            id: JobId(from_i64(self.id, "job id")?),
            spec: NewJob {
                uid: self.uid,
                user: self.user,
                node: self.node,
                program: self.program,
                argv: from_json(&self.argv, "job argv")?,
                cwd: self.cwd,
                start: from_i64(self.start, "job start")?,
            },
            state: self.state.parse()?,
            end: self.end.map(|e| from_i64(e, "job end")).transpose()?,
            exit_status: self.exit_status,
            signal: self.signal,
            reason: self.reason,
            counters: self
                .counters
                .as_deref()
                .map(|c| from_json(c, "job counters"))
                .transpose()?,
        })
    }
}

fn job_key(id: JobId) -> Result<i64, StoreError> {
    to_i64(id.0, "job id")
}

fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(what))
}

fn from_i64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("negative value {v}"),
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    // Maps with string keys, vectors of strings: serialising cannot fail,
    // but report rather than panic if a future type makes it.
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        what: "value to store",
        detail: e.to_string(),
    })
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
