//! The node's own record of the jobs it ran: an append-only log of JSON
//! lines under the state directory (`jobs.log`), one line when a job is
//! accepted and one when it ends. At start the daemon reads it back, and a
//! job with no end line was running when the daemon stopped: its processes
//! died with the daemon (they are traced with exit-kill), so it is recorded
//! as lost.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Name of the log in the state directory.
pub const LOG: &str = "jobs.log";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Job id.
    pub job: u64,
    /// `accepted`, or how it ended: `exited`, `signaled`, `killed`, `failed`, `lost`.
    pub event: String,
    /// Exit code or signal, when there is one.
    pub status: Option<i32>,
    /// The caller's uid on central.
    pub uid: Option<u32>,
    /// A reason, when there is one.
    pub detail: Option<String>,
    /// Unix time, ms.
    pub at: u64,
}

/// The open log.
#[derive(Debug)]
pub struct JobLog {
    path: PathBuf,
    file: Mutex<File>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl JobLog {
    /// Opens (creating) the log and returns it with the ids of jobs that
    /// were accepted but never ended, which it records as lost.
    pub fn open(state_dir: &Path) -> std::io::Result<(JobLog, Vec<u64>)> {
        let path = state_dir.join(LOG);
        let mut open = std::collections::BTreeSet::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                // A torn last line (crash mid-write) is skipped, not fatal.
                let Ok(r) = serde_json::from_str::<Record>(&line?) else {
                    continue;
                };
                if r.event == "accepted" {
                    open.insert(r.job);
                } else {
                    open.remove(&r.job);
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        // End a torn last line so the next record starts on its own line.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            let f = File::open(&path)?;
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        let log = JobLog {
            path,
            file: Mutex::new(file),
        };
        let lost: Vec<u64> = open.into_iter().collect();
        for &job in &lost {
            log.append(&Record {
                job,
                event: "lost".into(),
                status: None,
                uid: None,
                detail: Some("the node daemon stopped while it ran".into()),
                at: now_ms(),
            });
        }
        Ok((log, lost))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (errors are logged: records are history, a full
    /// disk must not stop jobs).
    pub fn append(&self, r: &Record) {
        let mut line = match serde_json::to_string(r) {
            Ok(l) => l,
            Err(e) => return log::warn!("job log: {e}"),
        };
        line.push('\n');
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = f.write_all(line.as_bytes()) {
            log::warn!("job log {}: {e}", self.path.display());
        }
    }

    /// Records a job the node accepted.
    pub fn accepted(&self, job: u64, uid: u32) {
        self.append(&Record {
            job,
            event: "accepted".into(),
            status: None,
            uid: Some(uid),
            detail: None,
            at: now_ms(),
        });
    }

    /// Records how a job ended.
    pub fn ended(&self, job: u64, event: &dscp_dicp::msg::control::JobEvent) {
        use dscp_dicp::msg::control::JobEvent as E;
        let (name, status, detail) = match event {
            E::Started => ("started", None, None),
            E::Exited { code } => ("exited", Some(*code), None),
            E::Signaled { signal } => ("signaled", Some(*signal), None),
            E::Killed { reason } => ("killed", None, Some(reason.clone())),
            E::Failed { reason } => ("failed", None, Some(reason.clone())),
        };
        self.append(&Record {
            job,
            event: name.into(),
            status,
            uid: None,
            detail,
            at: now_ms(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dscp_dicp::msg::control::JobEvent;

    #[test]
    fn unfinished_jobs_are_lost_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("diatom-joblog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (log, lost) = JobLog::open(&dir).unwrap();
        assert!(lost.is_empty());
        log.accepted(1, 1000);
        log.accepted(2, 1000);
        log.ended(1, &JobEvent::Exited { code: 3 });
        drop(log);
        // A torn line at the end does not stop the daemon.
        let mut f = OpenOptions::new().append(true).open(dir.join(LOG)).unwrap();
        f.write_all(b"{\"job\":9,\"ev").unwrap();
        drop(f);
        let (log, lost) = JobLog::open(&dir).unwrap();
        assert_eq!(lost, vec![2]);
        drop(log);
        let (_, lost) = JobLog::open(&dir).unwrap();
        assert!(lost.is_empty(), "lost jobs are recorded once");
        let text = std::fs::read_to_string(dir.join(LOG)).unwrap();
        assert!(text.contains("\"event\":\"exited\",\"status\":3"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
