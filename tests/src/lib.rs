//! Helpers shared by the integration tests: privilege checks, paths of the
//! built binaries, the network-namespace cluster harness (`netns`), a real
//! Diatom cluster on top of it (`cluster`) and per-test scratch directories
//! (`testdir`).

use std::path::PathBuf;

/// True when running under CI (`CI=true`), where a skipped test is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `true` when the test may proceed with root privileges.
///
/// Outside CI a non-root run prints why the test is skipped and returns
/// `false`; in CI a missing privilege panics, because a skip there is a failure.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs root (run as root or in CI)");
    false
}

/// Path of a binary built from this workspace (`diatom`, `diatom-central`,
/// `diatom-client`), next to the test executable's target directory.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/integration-xxxx -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    dir.join(name)
}

pub mod cluster;
pub mod netns;
pub mod testdir;
