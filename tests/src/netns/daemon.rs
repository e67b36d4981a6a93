//! A long-running process of a test (a daemon in a namespace), its stdout
//! and stderr in files, killed and reaped when dropped. When the test is
//! failing (panicking) the drop prints the tail of its stderr, which is
//! usually why.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{io_err, NetnsError};

/// How much of stderr a failing test prints per daemon.
const TAIL_BYTES: usize = 4096;

/// A process started by [`Netns::spawn_daemon`](super::Netns::spawn_daemon).
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    pub(super) fn spawn(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
    ) -> Result<Daemon, NetnsError> {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let out = File::create(&stdout).map_err(io_err(format!("create {}", stdout.display())))?;
        let err = File::create(&stderr).map_err(io_err(format!("create {}", stderr.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                program: format!("{:?}", cmd.get_program()),
                source,
            })?;
        Ok(Daemon {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// The file holding its stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The file holding its stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Its stderr so far (lossily decoded).
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Its stdout so far (lossily decoded).
    pub fn stdout(&self) -> String {
        std::fs::read(&self.stdout)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `sig` (if it still runs).
    pub fn signal(&mut self, sig: Signal) -> Result<(), NetnsError> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        kill(self.pid(), sig).map_err(|e| NetnsError::Io {
            what: format!("kill {} ({})", self.name, self.pid()),
            source: e.into(),
        })
    }

    /// Its exit status if it has exited (reaping it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, NetnsError> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(io_err(format!("wait for {}", self.name)))?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, NetnsError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` until its stderr contains `needle` (a daemon's
    /// "ready" line); false on timeout or when it exited first.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
                return self.stderr().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<(), NetnsError> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // Already gone between the check and now is fine: wait reaps it.
        let _ = self.child.kill();
        self.status = Some(
            self.child
                .wait()
                .map_err(io_err(format!("wait for {}", self.name)))?,
        );
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill();
        if std::thread::panicking() {
            // Bytes, not a String slice: a cut inside a UTF-8 sequence must
            // not panic again, which would abort the test binary.
            let err = std::fs::read(&self.stderr).unwrap_or_default();
            let tail = String::from_utf8_lossy(&err[err.len().saturating_sub(TAIL_BYTES)..]);
            eprintln!(
                "--- {} stderr (last {TAIL_BYTES} bytes) ---\n{tail}",
                self.name
            );
        }
    }
}
