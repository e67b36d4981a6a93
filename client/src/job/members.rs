//! The processes of one job, as its tracer sees them. The handler adds
//! each process the job forks and removes each that exits; the job's
//! controls (`diatom kill`, signals sent to `diatom exec`, a kill for the
//! home's loss) signal every one of them, so a signal reaches the whole
//! job, a child in its own session included, not just a process group.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The live processes (thread-group ids) of a job; cheap to clone, shared.
#[derive(Debug, Clone, Default)]
pub struct Members(Arc<Mutex<BTreeSet<i32>>>);

impl Members {
    /// Records a new process of the job.
    pub fn add(&self, pid: Pid) {
        self.lock().insert(pid.as_raw());
    }

    /// Forgets a process that exited.
    pub fn remove(&self, pid: Pid) {
        self.lock().remove(&pid.as_raw());
    }

    /// The job's processes now.
    pub fn pids(&self) -> Vec<Pid> {
        self.lock().iter().map(|&p| Pid::from_raw(p)).collect()
    }

    /// Sends `signal` to every process of the job; returns how many got it.
    /// A process forked at this very moment, before the tracer saw its
    /// birth, has not run yet and may miss it; for `SIGKILL` the tracer
    /// kills every tracee anyway when the job's first process ends.
    pub fn signal(&self, signal: Signal) -> usize {
        self.pids()
            .into_iter()
            .filter(|&p| kill(p, signal).is_ok())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_every_member_and_forgets_the_dead() {
        let m = Members::default();
        let mut a = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut b = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        for c in [&a, &b] {
            m.add(Pid::from_raw(c.id() as i32));
        }
        assert_eq!(m.signal(Signal::SIGTERM), 2);
        for c in [&mut a, &mut b] {
            let st = c.wait().unwrap();
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(15));
            m.remove(Pid::from_raw(c.id() as i32));
        }
        assert!(m.pids().is_empty());
    }
}
