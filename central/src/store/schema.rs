//! The store's schema as an ordered list of migrations, and the code that
//! brings a database up to date. `PRAGMA user_version` records how many
//! steps a database has had; steps are only ever appended, never edited,
//! because databases in the field have already run the old ones.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` (1-based) is `MIGRATIONS[i - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: the node registry and the job table.
    "CREATE TABLE nodes (
        name          TEXT PRIMARY KEY NOT NULL,
        address       TEXT NOT NULL,
        cpus          INTEGER NOT NULL,
        slots         INTEGER NOT NULL,
        slots_used    INTEGER NOT NULL,
        load          REAL NOT NULL,
        state         TEXT NOT NULL,
        state_since   INTEGER NOT NULL,
        last_seen     INTEGER NOT NULL,
        registered_at INTEGER NOT NULL,
        kernel        TEXT NOT NULL,
        version       TEXT NOT NULL,
        dropped       TEXT NOT NULL,
        cache_bytes   INTEGER NOT NULL
    ) STRICT;
    -- AUTOINCREMENT, not a plain rowid: a plain rowid reuses the largest id
    -- after it is deleted, and a job id must never name two jobs.
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        uid         INTEGER NOT NULL,
        user        TEXT NOT NULL,
        node        TEXT NOT NULL,
        program     TEXT NOT NULL,
        argv        TEXT NOT NULL,
        cwd         TEXT NOT NULL,
        state       TEXT NOT NULL,
        start       INTEGER NOT NULL,
        end         INTEGER,
        exit_status INTEGER,
        signal      INTEGER,
        reason      TEXT,
        counters    TEXT
    ) STRICT;",
    // 2: the per-job event timeline, and indexes for `diatom ps` filters.
    // Index entries carry the rowid, so `WHERE state = ? AND id < ? ORDER BY
    // id DESC` walks the state index in id order without a sort.
    "CREATE TABLE job_events (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        job    INTEGER NOT NULL REFERENCES jobs(id),
        at     INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;
    CREATE INDEX job_events_job ON job_events(job, seq);
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_uid ON jobs(uid);
    CREATE INDEX jobs_node ON jobs(node);
    CREATE INDEX jobs_start ON jobs(start);",
];

/// The schema version this build writes.
pub(super) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings `conn` to `target` (at most [`CURRENT_VERSION`]), one transaction
/// per step so a crash mid-way leaves a database at a whole version.
pub(super) fn migrate(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two
        // processes opening a fresh database cannot both run step 1.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > CURRENT_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                supported: CURRENT_VERSION,
            });
        }
        if version >= target {
            return Ok(());
        }
        let step = usize::try_from(version).map_err(|_| StoreError::Corrupt {
            what: "PRAGMA user_version",
            detail: format!("negative version {version}"),
        })?;
        tx.execute_batch(MIGRATIONS[step])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}
