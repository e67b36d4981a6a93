//! Turning a job's exec plan into the command the node really runs.
//!
//! The node may have no `/lib` and no loader of its own, so it never lets
//! the kernel load `PT_INTERP` from its own disk: it execs the cached
//! loader directly, `ld.so --argv0 ARGV0 --library-path DIR PROGRAM ARGS`,
//! where DIR is a per-job directory of symlinks named as the program asks
//! for its libraries (`libc.so.6`) pointing at cache objects. A static
//! program is exec'd directly. The tracer handler then answers
//! `/proc/self/exe` with the program's central path.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// Builds `lib_dir` (mode 0755) with one symlink per library, and returns
/// the exec line.
pub fn prepare(exec: &LocalExec, lib_dir: &Path) -> io::Result<ExecLine> {
    let Some(loader) = &exec.loader else {
        return Ok(ExecLine {
            path: exec.program.clone(),
            argv: exec.argv.clone(),
        });
    };
    super::fs::make_dir_all(lib_dir.parent().unwrap_or(lib_dir), lib_dir)?;
    for lib in &exec.libraries {
        let name = Path::new(&lib.name);
        // A name is one path component; anything else came from a hostile
        // or broken plan and must not escape the directory.
        if name.components().count() != 1 || name.as_os_str().as_bytes().contains(&b'/') {
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
    Ok(ExecLine {
        path: loader.clone(),
        argv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_programs_run_directly() {
        let e = LocalExec {
            program: "/c/obj/ab".into(),
            loader: None,
            libraries: vec![],
            preload: vec![],
            argv: vec!["prog".into(), "x".into()],
        };
        let l = prepare(&e, Path::new("/nonexistent")).unwrap();
        assert_eq!(l.path, PathBuf::from("/c/obj/ab"));
        assert_eq!(l.argv, ["prog", "x"]);
    }

    #[test]
    fn dynamic_programs_run_through_the_cached_loader() {
        let dir = std::env::temp_dir().join(format!("diatom-launch-{}", std::process::id()));
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
        let l = prepare(&e, &dir).unwrap();
        assert_eq!(l.path, PathBuf::from("/c/obj/ld"));
        let lib_dir = dir.as_os_str().to_str().unwrap();
        assert_eq!(
            l.argv,
            [
                "/c/obj/ld",
                "--argv0",
                "ls",
                "--library-path",
                lib_dir,
                "/c/obj/prog",
                "-l"
            ]
        );
        assert_eq!(
            std::fs::read_link(dir.join("libc.so.6")).unwrap(),
            PathBuf::from("/c/obj/libc")
        );
        // Preparing again replaces the links.
        prepare(&e, &dir).unwrap();
        let bad = LocalExec {
            libraries: vec![LibraryLink {
                name: "../x".into(),
                object: "/c".into(),
            }],
            ..e
        };
        assert!(prepare(&bad, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
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
        let dir = std::env::temp_dir().join(format!("diatom-launch-real-{}", std::process::id()));
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
        let l = prepare(&e, &dir).unwrap();
        let out = std::process::Command::new(&l.path)
            .args(&l.argv[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"hello\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
