//! Turning a job's exec plan into the command the node really runs.
//!
//! The node may have no `/lib` and no loader of its own, so it never lets
//! the kernel load `PT_INTERP` from its own disk: it execs the cached
//! loader directly, `ld.so --argv0 ARGV0 --library-path DIR PROGRAM ARGS`,
//! where DIR is a directory of symlinks named as the program asks for its
//! libraries (`libc.so.6`) pointing at cache objects, made once per node
//! for each distinct set of libraries ([`Cache::lib_set_dir`]). A static
//! program is exec'd directly. The tracer handler then answers
//! `/proc/self/exe` with the program's central path.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cache::Cache;

/// A library the loader will look up by `name`, found in the cache at `object`.
#[derive(Debug, Clone)]
pub struct LibraryLink {
    /// The name as the program or a library asks for it (`libc.so.6`).
    pub name: OsString,
    /// The cache object holding it.
    pub object: PathBuf,
}

/// Where the pieces of a job's first exec are on the node.
#[derive(Debug, Clone)]
pub struct LocalExec {
    /// Cache object of the ELF program.
    pub program: PathBuf,
    /// Cache object of its loader (`PT_INTERP`), None for static programs.
    pub loader: Option<PathBuf>,
    /// Libraries to expose to the loader.
    pub libraries: Vec<LibraryLink>,
    /// Cache objects to preload (`LD_PRELOAD`, `/etc/ld.so.preload` on central).
    pub preload: Vec<PathBuf>,
    /// argv as the kernel would build it on central (after `#!` processing).
    pub argv: Vec<OsString>,
}

/// The path to execve and its argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLine {
    /// What to execve.
    pub path: PathBuf,
    /// Its argv.
    pub argv: Vec<OsString>,
}

/// The exec line of `exec`, with its library directory made if it is new
/// to this node.
pub fn prepare(exec: &LocalExec, cache: &Cache) -> io::Result<ExecLine> {
    if exec.loader.is_none() {
        return Ok(exec_line(exec, Path::new("/")));
    }
    let dir = cache.lib_set_dir(&lib_set_key(exec), |dir| link_libraries(exec, dir))?;
    Ok(exec_line(exec, &dir))
}

/// What names a set of library links: each (name, cache object) in order.
/// The objects are content-addressed, so equal keys mean equal files.
fn lib_set_key(exec: &LocalExec) -> crate::cache::Hash {
    let mut key = blake3::Hasher::new();
    for lib in &exec.libraries {
        key.update(lib.name.as_bytes());
        key.update(b"\0");
        key.update(lib.object.as_os_str().as_bytes());
        key.update(b"\0");
    }
    key.finalize()
}

/// The names of the subdirectories the loader probes in each library
/// directory before the directory itself: glibc's `glibc-hwcaps/x86-64-vN`
/// and the legacy hardware-capability names (AT_PLATFORM and others) of
/// glibc before 2.37. See [`alias_probe_dirs`].
const LEGACY_PROBE_DIRS: [&str; 5] = ["tls", "haswell", "xeon_phi", "avx512_1", "x86_64"];
const HWCAPS_LEVELS: [&str; 3] = ["x86-64-v2", "x86-64-v3", "x86-64-v4"];

/// Makes every subdirectory the loader probes lead back to `lib_dir`, so
/// that its first probe for a library finds it. Without them the loader
/// tries some twenty missing subdirectories (an `openat` and a `stat`
/// each, every one a trace stop) before it looks in the directory itself:
/// 36 of the 41 stops of a warm `/bin/true`. The library found is the same
/// file either way (the link in `lib_dir`).
fn alias_probe_dirs(lib_dir: &Path) -> io::Result<()> {
    let link = |target: &str, at: &Path| match std::os::unix::fs::symlink(target, at) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    };
    for name in LEGACY_PROBE_DIRS {
        link(".", &lib_dir.join(name))?;
    }
    let hwcaps = lib_dir.join("glibc-hwcaps");
    match std::fs::create_dir(&hwcaps) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    for level in HWCAPS_LEVELS {
        link("..", &hwcaps.join(level))?;
    }
    Ok(())
}

/// Fills `lib_dir` (made mode 0755 if missing) with one symlink per
/// library, named as the program asks for it, and the loader's probe
/// aliases.
pub fn link_libraries(exec: &LocalExec, lib_dir: &Path) -> io::Result<()> {
    super::fs::make_dir_all(lib_dir.parent().unwrap_or(lib_dir), lib_dir)?;
    for lib in &exec.libraries {
        let name = Path::new(&lib.name);
        // A name is one path component; anything else came from a hostile
        // or broken plan and must not escape the directory.
        if name.components().count() != 1
            || name.as_os_str().as_bytes().contains(&b'/')
            || LEGACY_PROBE_DIRS.contains(&&*lib.name.to_string_lossy())
            || lib.name == "glibc-hwcaps"
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad library name {:?}", lib.name),
            ));
        }
        let link = lib_dir.join(name);
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&lib.object, &link)?;
    }
    alias_probe_dirs(lib_dir)
}

/// The exec line for `exec` with its libraries in `lib_dir` (see
/// [`link_libraries`]); a static program runs directly.
pub fn exec_line(exec: &LocalExec, lib_dir: &Path) -> ExecLine {
    let Some(loader) = &exec.loader else {
        return ExecLine {
            path: exec.program.clone(),
            argv: exec.argv.clone(),
        };
    };
    let argv0 = exec.argv.first().cloned().unwrap_or_default();
    let mut argv: Vec<OsString> = vec![
        loader.as_os_str().to_os_string(),
        OsStr::new("--argv0").to_os_string(),
        argv0,
        OsStr::new("--library-path").to_os_string(),
        lib_dir.as_os_str().to_os_string(),
    ];
    if !exec.preload.is_empty() {
        // ld.so splits --preload at spaces and colons; cache paths have neither.
        let list: Vec<&OsStr> = exec.preload.iter().map(|p| p.as_os_str()).collect();
        argv.push(OsStr::new("--preload").to_os_string());
        argv.push(list.join(OsStr::new(" ")));
    }
    argv.push(exec.program.as_os_str().to_os_string());
    argv.extend(exec.argv.iter().skip(1).cloned());
    ExecLine {
        path: loader.clone(),
        argv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache in a fresh temporary state directory (removed by the test).
    fn temp_cache(name: &str) -> (PathBuf, Cache) {
        let state =
            std::env::temp_dir().join(format!("diatom-launch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let cache = Cache::open(&state).unwrap();
        (state, cache)
    }

    #[test]
    fn static_programs_run_directly() {
        let (state, cache) = temp_cache("static");
        let e = LocalExec {
            program: "/c/obj/ab".into(),
            loader: None,
            libraries: vec![],
            preload: vec![],
            argv: vec!["prog".into(), "x".into()],
        };
        let l = prepare(&e, &cache).unwrap();
        assert_eq!(l.path, PathBuf::from("/c/obj/ab"));
        assert_eq!(l.argv, ["prog", "x"]);
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn dynamic_programs_run_through_the_cached_loader() {
        let (state, cache) = temp_cache("dynamic");
        let e = LocalExec {
            program: "/c/obj/prog".into(),
            loader: Some("/c/obj/ld".into()),
            libraries: vec![LibraryLink {
                name: "libc.so.6".into(),
                object: "/c/obj/libc".into(),
            }],
            preload: vec![],
            argv: vec!["ls".into(), "-l".into()],
        };
        let l = prepare(&e, &cache).unwrap();
        assert_eq!(l.path, PathBuf::from("/c/obj/ld"));
        let dir = PathBuf::from(&l.argv[4]);
        assert!(dir.starts_with(state.join("cache/libsets")), "{dir:?}");
        assert_eq!(
            l.argv,
            [
                "/c/obj/ld".as_ref(),
                "--argv0".as_ref(),
                "ls".as_ref(),
                "--library-path".as_ref(),
                dir.as_os_str(),
                "/c/obj/prog".as_ref(),
                "-l".as_ref()
            ]
        );
        assert_eq!(
            std::fs::read_link(dir.join("libc.so.6")).unwrap(),
            PathBuf::from("/c/obj/libc")
        );
        // The same set is made once and shared; another set is another
        // directory.
        assert_eq!(prepare(&e, &cache).unwrap(), l);
        let other = LocalExec {
            libraries: vec![LibraryLink {
                name: "libc.so.6".into(),
                object: "/c/obj/libc2".into(),
            }],
            ..e.clone()
        };
        let l2 = prepare(&other, &cache).unwrap();
        assert_ne!(l2.argv[4], l.argv[4]);
        // A set made by a daemon before is found again after a restart.
        drop(cache);
        let cache = Cache::open(&state).unwrap();
        assert_eq!(prepare(&e, &cache).unwrap(), l);
        let bad = LocalExec {
            libraries: vec![LibraryLink {
                name: "../x".into(),
                object: "/c".into(),
            }],
            ..e
        };
        assert!(prepare(&bad, &cache).is_err());
        // Nothing half made is left behind.
        let names: Vec<_> = std::fs::read_dir(state.join("cache/libsets"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn the_real_loader_runs_a_real_program_this_way() {
        // /bin/true through /lib64/ld-linux-x86-64.so.2 with its libc
        // exposed by name, as the node does with cache objects.
        let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !loader.exists() || !libc.exists() {
            eprintln!("skipping: no glibc loader at the usual x86_64 paths");
            return;
        }
        let (state, cache) = temp_cache("real");
        let e = LocalExec {
            program: "/bin/echo".into(),
            loader: Some(loader.into()),
            libraries: vec![LibraryLink {
                name: "libc.so.6".into(),
                object: std::fs::canonicalize(libc).unwrap(),
            }],
            preload: vec![],
            argv: vec!["myecho".into(), "hello".into()],
        };
        let l = prepare(&e, &cache).unwrap();
        let dir = PathBuf::from(&l.argv[4]);
        let out = std::process::Command::new(&l.path)
            .args(&l.argv[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"hello\n");
        // The loader's first probe finds libc: not one lookup in the
        // directory fails (each would be a trace stop on the node).
        let log = state.join("strace.log");
        let traced = std::process::Command::new("strace")
            .args(["-f", "-e", "trace=openat,open,stat,newfstatat,access", "-o"])
            .arg(&log)
            .arg(&l.path)
            .args(&l.argv[1..])
            .output();
        match traced {
            Ok(out) if out.status.success() => {
                let calls = std::fs::read_to_string(&log).unwrap();
                let dir_s = dir.to_str().unwrap();
                let misses: Vec<&str> = calls
                    .lines()
                    .filter(|l| l.contains(dir_s) && l.contains("ENOENT"))
                    .collect();
                assert!(
                    misses.is_empty(),
                    "failed probes in the lib dir: {misses:#?}"
                );
                assert!(
                    calls.contains(dir_s),
                    "the loader looked in {dir_s}: {calls}"
                );
            }
            other => eprintln!("strace unavailable ({other:?}): probe count not checked"),
        }
        std::fs::remove_dir_all(&state).unwrap();
    }
}
