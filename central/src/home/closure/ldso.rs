//! What central's glibc dynamic loader searches besides RPATH, RUNPATH and
//! `LD_LIBRARY_PATH`: its system directories, the glibc-hwcaps and legacy
//! hwcap subdirectories it tries inside every search directory, and the
//! values of `$PLATFORM` and `$LIB`.
//!
//! These depend on how glibc was built and on the CPU, so rather than
//! re-deriving glibc's CPU feature logic we ask the loader itself once per
//! process: `ld.so --help` (glibc >= 2.33) prints all of them. The probe runs
//! only the host's standard loader path (a root-owned system file), never an
//! interpreter named by a user's program.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The standard glibc loader of the host architecture.
#[cfg(not(target_arch = "aarch64"))]
pub const HOST_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// The standard glibc loader of the host architecture.
#[cfg(target_arch = "aarch64")]
pub const HOST_LOADER: &str = "/lib/ld-linux-aarch64.so.1";

#[cfg(not(target_arch = "aarch64"))]
const MULTIARCH: &str = "x86_64-linux-gnu";
#[cfg(target_arch = "aarch64")]
const MULTIARCH: &str = "aarch64-linux-gnu";

/// The loader's search configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Default ("system search path") directories, searched last.
    pub system_dirs: Vec<PathBuf>,
    /// glibc-hwcaps subdirectory names (`x86-64-v3`...), best first.
    pub hwcaps: Vec<Vec<u8>>,
    /// Legacy hwcap components (`tls`, the platform, hwcap names), in the
    /// order whose subsets glibc 2.36 tries (`tls/haswell/x86_64`...).
    pub legacy: Vec<Vec<u8>>,
    /// `$PLATFORM`.
    pub platform: Vec<u8>,
    /// `$LIB`.
    pub lib: Vec<u8>,
    /// Every subdirectory to try inside a search directory, in order; the
    /// last one is the directory itself (empty path).
    pub subdirs: Vec<PathBuf>,
}

impl LoaderConfig {
    /// Used when the loader cannot be asked (no glibc >= 2.33 at the usual
    /// path): the usual directories of Debian and Fedora layouts, no hwcap
    /// subdirectories.
    pub fn fallback() -> LoaderConfig {
        let dirs = [
            format!("/lib/{MULTIARCH}"),
            format!("/usr/lib/{MULTIARCH}"),
            "/lib64".to_string(),
            "/usr/lib64".to_string(),
            "/lib".to_string(),
            "/usr/lib".to_string(),
        ];
        LoaderConfig::build(
            dirs.iter().map(PathBuf::from).collect(),
            Vec::new(),
            Vec::new(),
            std::env::consts::ARCH.as_bytes().to_vec(),
            format!("lib/{MULTIARCH}").into_bytes(),
        )
    }

    /// Ask `loader --help`, falling back to [`LoaderConfig::fallback`].
    pub fn probe(loader: &Path) -> LoaderConfig {
        let out = Command::new(loader)
            .arg("--help")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .env_clear()
            .output();
        match out {
            Ok(o) if o.status.success() => Self::parse_help(&o.stdout).unwrap_or_else(|| {
                log::warn!(
                    "closure: cannot parse {} --help; using defaults",
                    loader.display()
                );
                Self::fallback()
            }),
            _ => {
                log::debug!(
                    "closure: cannot run {} --help; using defaults",
                    loader.display()
                );
                Self::fallback()
            }
        }
    }

    /// Parse the output of glibc's `ld.so --help`.
    pub fn parse_help(text: &[u8]) -> Option<LoaderConfig> {
        #[derive(PartialEq)]
        enum Sec {
            None,
            Dirs,
            Hwcaps,
            Legacy,
        }
        let mut sec = Sec::None;
        let mut dirs = Vec::new();
        let mut hwcaps = Vec::new();
        let mut legacy = Vec::new();
        let mut platform = None;
        for line in text.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            if !line.starts_with(' ') {
                sec = if line.starts_with("Shared library search path") {
                    Sec::Dirs
                } else if line.starts_with("Subdirectories of glibc-hwcaps") {
                    Sec::Hwcaps
                } else if line.starts_with("Legacy HWCAP subdirectories") {
                    Sec::Legacy
                } else {
                    Sec::None
                };
                continue;
            }
            let item = line.trim();
            let Some((word, note)) = item.split_once(" (") else {
                continue;
            };
            match sec {
                Sec::Dirs if note.starts_with("system search path") => {
                    dirs.push(PathBuf::from(word))
                }
                Sec::Hwcaps if note.contains("searched") => hwcaps.push(word.as_bytes().to_vec()),
                Sec::Legacy if note.contains("searched") => {
                    if note.contains("AT_PLATFORM") {
                        platform = Some(word.as_bytes().to_vec());
                    }
                    legacy.push(word.as_bytes().to_vec());
                }
                _ => {}
            }
        }
        let first = dirs.first()?;
        // glibc's $LIB is its configured slibdir, which is the first system
        // directory ("/lib/x86_64-linux-gnu" on Debian, "/lib64" on Fedora).
        let lib = first.as_os_str().as_bytes().strip_prefix(b"/")?.to_vec();
        // Legacy subsets are tried with "tls" outermost, then the platform,
        // then the hwcap names (checked against LD_DEBUG in the tests).
        let mut ordered = Vec::new();
        if let Some(pos) = legacy.iter().position(|w| w == b"tls") {
            ordered.push(legacy.remove(pos));
        }
        if let Some(p) = &platform {
            if let Some(pos) = legacy.iter().position(|w| w == p) {
                ordered.push(legacy.remove(pos));
            }
        }
        ordered.append(&mut legacy);
        let platform = platform.unwrap_or_else(|| std::env::consts::ARCH.as_bytes().to_vec());
        Some(LoaderConfig::build(dirs, hwcaps, ordered, platform, lib))
    }

    fn build(
        system_dirs: Vec<PathBuf>,
        hwcaps: Vec<Vec<u8>>,
        legacy: Vec<Vec<u8>>,
        platform: Vec<u8>,
        lib: Vec<u8>,
    ) -> LoaderConfig {
        let mut subdirs: Vec<PathBuf> = hwcaps
            .iter()
            .map(|h| Path::new("glibc-hwcaps").join(OsStr::from_bytes(h)))
            .collect();
        // All subsets of the legacy components, largest mask first, the
        // first component being the most significant bit; the empty subset
        // (the directory itself) comes last. Capped: glibc has at most a
        // handful of components.
        let n = legacy.len().min(8);
        for mask in (0..(1u32 << n)).rev() {
            let mut p = PathBuf::new();
            for (i, comp) in legacy.iter().take(n).enumerate() {
                if mask & (1 << (n - 1 - i)) != 0 {
                    p.push(OsStr::from_bytes(comp));
                }
            }
            subdirs.push(p);
        }
        LoaderConfig {
            system_dirs,
            hwcaps,
            legacy,
            platform,
            lib,
            subdirs,
        }
    }
}
