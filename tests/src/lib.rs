//! Helpers shared by the integration tests: privilege checks, paths of the
//! built binaries, the network-namespace cluster harness (`netns`), a real
//! Diatom cluster on top of it (`cluster`), nodes as QEMU virtual machines
//! (`vm`), per-test scratch directories (`testdir`), hostile datagrams for
//! the fault tests (`hostile`), and the static node daemon a bare node or a
//! VM runs ([`static_client`]).

use std::io::Read;
use std::path::{Path, PathBuf};

/// True when running under CI (`CI=true`), where a skipped test is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `true` when the test may proceed with root privileges.
///
/// Outside CI a non-root run prints why the test is skipped and returns
/// `false`; in CI a missing privilege panics, because a skip there is a failure.
pub fn require_root(test: &str) -> bool {
    default_signals();
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs root (run as root or in CI)");
    false
}

/// Puts SIGINT, SIGQUIT and SIGHUP back at their defaults in the test
/// process, so every process a test starts does too: a test run started in
/// the background of a shell without job control (`cmd &` in a script)
/// inherits them ignored, and a program started ignoring SIGINT keeps
/// ignoring it (locally and under `diatom exec` alike), which the signal
/// tests would misread.
pub fn default_signals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
            // SAFETY: setting a standard signal's disposition to its default.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    });
}

/// Path of a binary built from this workspace (`diatom`, `diatom-central`,
/// `diatom-client`), next to the test executable's target directory (or
/// next to the running binary, for a benchmark in `target/<profile>`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/integration-xxxx -> target/<profile>/<name>
    let dir = exe.parent().expect("an executable lives in a directory");
    let dir = match dir.parent() {
        Some(profile) if dir.ends_with("deps") => profile,
        _ => dir,
    };
    dir.join(name)
}

/// The static `diatom-client` (`make static-client`), next to the
/// workspace's other builds. Outside CI a missing build skips the test;
/// in CI it fails it.
pub fn static_client(test: &str) -> Option<PathBuf> {
    static_build(
        test,
        "diatom-client",
        "x86_64-unknown-linux-gnu/release/diatom-client",
        "static-client",
    )
}

/// The static `diatom` CLI (`make static-cli`), as [`static_client`].
pub fn static_cli(test: &str) -> Option<PathBuf> {
    static_build(test, "diatom", "static/diatom", "static-cli")
}

/// The static build of binary `bin`, at `path` in the target directory,
/// made by `make TARGET`: see [`static_client`].
fn static_build(test: &str, bin: &str, path: &str, target: &str) -> Option<PathBuf> {
    let dir = bin_path(bin)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target directory");
    let p = dir.join(path);
    if p.is_file() {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if mtime(&p) < mtime(&bin_path(bin)) {
            eprintln!(
                "{test}: note: {} is older than the debug {bin}; `make {target}` rebuilds it",
                p.display()
            );
        }
        return Some(p);
    }
    let why = format!(
        "{test}: the static {bin} {} is missing; build it with `make {target}`",
        p.display()
    );
    assert!(!in_ci(), "{why}");
    eprintln!("skipping {why}");
    None
}

/// Whether `bin` is a 64-bit ELF executable without an interpreter
/// (PT_INTERP), i.e. one that starts where there is no `/lib`; `Err` says
/// why it is not.
pub fn static_elf(bin: &Path) -> Result<(), String> {
    let mut data = Vec::new();
    std::fs::File::open(bin)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut data))
        .map_err(|e| format!("cannot read {}: {e}", bin.display()))?;
    if !(data.len() > 64 && data.starts_with(b"\x7fELF") && data[4] == 2) {
        return Err(format!("{} is not a 64-bit ELF file", bin.display()));
    }
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([data[o], data[o + 1]]));
    let phoff = data[32..40]
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
        .and_then(|o| usize::try_from(o).ok())
        .unwrap_or(usize::MAX);
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let interp = (0..phnum).any(|i| {
        let o = phoff.saturating_add(i * phentsize);
        data.get(o..o.saturating_add(4)) == Some(&3u32.to_le_bytes()[..])
    });
    if interp {
        return Err(format!(
            "{} has an ELF interpreter (PT_INTERP): not a static build, it cannot start on a \
             bare node",
            bin.display()
        ));
    }
    Ok(())
}

/// Panics unless `bin` is a static executable ([`static_elf`]).
pub fn assert_static(bin: &Path) {
    if let Err(why) = static_elf(bin) {
        panic!("{why}");
    }
}

pub mod central_files;
pub mod cluster;
pub mod hostile;
pub mod netns;
pub mod testdir;
pub mod vm;
