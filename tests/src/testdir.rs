//! Per-test scratch directories: unique under the system temp dir so tests
//! can run in parallel, removed on drop unless `DIATOM_KEEP_TEST_DIRS` is set
//! (then kept and named on stderr, to read daemon logs after a failure).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable that keeps test directories for post-mortems.
pub const KEEP_VAR: &str = "DIATOM_KEEP_TEST_DIRS";

/// A fresh, empty directory owned by one test.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `<tmp>/diatom-<name>-<pid>-<n>`; `name` should say which test.
    pub fn new(name: &str) -> std::io::Result<TestDir> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "diatom-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory of the same name is a leftover of an earlier run whose
        // pid was reused: stale, never another live test's.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&path)?;
        Ok(TestDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_VAR).is_some() {
            eprintln!("keeping test directory {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
