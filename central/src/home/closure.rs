//! The exec closure of a program, computed on central: every file the node
//! needs so that the kernel and the dynamic loader can start the program
//! without any file of the node's own.
//!
//! This module owns:
//! - [`resolve_program`]: finding PROGRAM the way a shell does (PATH search,
//!   `eaccess(X_OK)`, "not found" vs "permission denied" vs "is a directory").
//! - [`exec_closure`]: following `#!` lines as the kernel does (256-byte
//!   buffer, one optional argument, at most 5 nested scripts on this kernel;
//!   a file with neither `#!` nor ELF magic runs with `/bin/sh`, as `execvp`
//!   and shells do), reading the final ELF's `PT_INTERP` and dynamic section, and resolving
//!   every `DT_NEEDED` (plus `LD_PRELOAD` and `/etc/ld.so.preload`) in
//!   breadth-first load order with glibc 2.36's rules: name match against
//!   already loaded objects and their SONAMEs, `DT_RPATH` of the loader chain
//!   (ignored for an object with `DT_RUNPATH`), `LD_LIBRARY_PATH` from the
//!   job's environment, the loader's `DT_RUNPATH`, `/etc/ld.so.cache`, then
//!   the system directories (the last two skipped under `DF_1_NODEFLIB`),
//!   each directory tried with its glibc-hwcaps and legacy hwcap
//!   subdirectories, `$ORIGIN`/`$LIB`/`$PLATFORM` expanded; a candidate of
//!   the wrong class or machine is skipped, any other bad file is fatal, and
//!   a file already loaded under another path (same dev/inode) is reused.
//!
//! # How the node uses the plan
//! The node may have no `/lib`, `/usr` or `/etc`. It fetches every
//! [`ClosureFile`] into its content-addressed cache in one bulk transfer,
//! then builds a per-job directory of symlinks named by
//! [`ExecPlan::libraries`]' requested names (`libc.so.6` → cache object) and
//! runs
//! `CACHED_INTERP --library-path JOBDIR [--preload "..."] --argv0 ARGV0 CACHED_PROGRAM ARGV[1..]`.
//! Because ld.so matches a `DT_NEEDED` against the names it already loaded,
//! and every name was resolved here, the loader finds exactly the objects
//! central's loader would. `--library-path` replaces `LD_LIBRARY_PATH`
//! (whose effect is already in the resolution) and comes before RUNPATH,
//! `ld.so.cache` and the default directories, which do not exist on a bare
//! node. Caveats the node must know: `DT_RPATH` directories are searched
//! *before* `--library-path`, so on a node that does have files at those
//! paths they could win (the tracer's path redirection of issue 6 closes
//! this); `$ORIGIN` on the node expands to the cache directory, so the
//! symlink directory must hold every name. The cruder alternative, mapping
//! each of [`ExecPlan::library_dirs`] to a cache directory for
//! `--library-path`, is only exact when no name appears in two of them.
//!
//! # Cost
//! Only headers are read (a few 4 KiB `pread`s per object); `ld.so.cache`
//! is read and checked once per [`Resolver`] (re-read only when the file
//! changes) and searched in place, without building a map of it;
//! `ld.so --help` is run only when a directory search, a glibc-hwcaps
//! cache entry or `$LIB`/`$PLATFORM` needs it. Measured for python3 (6
//! files): about 0.25 ms in a fresh process, 0.05 ms warm.
//!
//! For `#!/usr/bin/env python3` the closure is `env` and its libraries, not
//! python3: which python3 runs is decided by `env` at run time (PATH
//! lookup), so it is fetched then, through transparent file access. Libraries
//! opened with `dlopen` are likewise out of scope here.
//!
//! Not modelled: musl or other non-glibc loaders (glibc rules are applied),
//! secure-mode (setuid) restrictions, `_dl_cache_libcmp`'s numeric name
//! comparison (names are compared as bytes), legacy hwcap entries inside
//! `ld.so.cache`, binfmt_misc handlers, and the node's CPU choosing other
//! hwcaps subdirectories than central's.

mod elf;
mod ldcache;
mod ldso;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use elf::{ElfError, ElfInfo};
pub use ldcache::{CacheError, LdCache};
pub use ldso::LoaderConfig;

/// The kernel's `BINPRM_BUF_SIZE` (256 since Linux 5.1): the most of a `#!`
/// line it looks at.
pub const BINPRM_BUF_SIZE: usize = 256;
/// Scripts the kernel follows before `ELOOP`: `exec_binprm` allows
/// `depth <= 5` handler rounds, i.e. five scripts and the final ELF
/// (measured on this kernel: a chain of 5 runs, 6 fails).
pub const MAX_SCRIPT_DEPTH: usize = 5;
/// What `execvp` runs a file with no `#!` and no ELF magic with.
const FALLBACK_SHELL: &str = "/bin/sh";
/// PATH used when the caller has none (glibc `execvp`'s default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";
/// The file naming libraries to preload for every program.
const PRELOAD_FILE: &str = "/etc/ld.so.preload";
/// The loader cache.
const LD_CACHE_FILE: &str = "/etc/ld.so.cache";
/// ld.so.cache files are well under 1 MiB; refuse to slurp anything huge.
const MAX_CACHE_BYTES: u64 = 64 << 20;

/// Failures of [`resolve_program`] and [`exec_closure`].
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// The program (as named, or searched for in PATH), a `#!` interpreter,
    /// or `PT_INTERP` does not exist (ENOENT / ENOTDIR). The shell says
    /// "command not found" (exit 127).
    #[error("{}: not found", .0.display())]
    NotFound(PathBuf),
    /// The file exists but the caller may not execute (or, on central, read)
    /// it, or it is not a regular file (EACCES; the shell exits 126).
    #[error("{}: permission denied", .0.display())]
    PermissionDenied(PathBuf),
    /// The name is a directory (the shell says "Is a directory", exit 126).
    #[error("{}: is a directory", .0.display())]
    IsADirectory(PathBuf),
    /// Any other I/O error on a file of the closure.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file starts with `#!` but the kernel would refuse it (ENOEXEC): no
    /// interpreter name, or the name does not end inside the 256-byte buffer.
    #[error("{}: bad #! line: {reason}", path.display())]
    BadShebang {
        /// The script.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// More nested `#!` scripts than the kernel follows (ELOOP).
    #[error("{}: too many levels of #! interpreters", .0.display())]
    TooManyInterpreters(PathBuf),
    /// The program or its `PT_INTERP` cannot be executed by this kernel:
    /// not ELF (after `#!` processing), wrong class or machine, malformed.
    #[error("{}: cannot execute: {reason}", path.display())]
    BadExecutable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: ElfError,
    },
    /// The loader would pick this file for a library and then fail on it
    /// (glibc treats a malformed candidate as a fatal error, not a miss).
    #[error("{}: cannot load library needed by {}: {reason}", path.display(), needed_by.display())]
    BadLibrary {
        /// The library file.
        path: PathBuf,
        /// The object whose `DT_NEEDED` led to it.
        needed_by: PathBuf,
        /// Why.
        reason: ElfError,
    },
    /// A `DT_NEEDED` library is found nowhere (ldd's "not found").
    #[error("{}: not found (needed by {})", library.to_string_lossy(), needed_by.display())]
    LibraryNotFound {
        /// The name as written in `DT_NEEDED`.
        library: OsString,
        /// The object that needs it.
        needed_by: PathBuf,
    },
    /// An `ld.so.cache` file is unusable. Only [`parse_ld_cache_file`] returns
    /// this; [`exec_closure`] then ignores the cache, as glibc does.
    #[error("{}: bad ld.so.cache: {reason}", path.display())]
    BadLdCache {
        /// The cache file.
        path: PathBuf,
        /// Why.
        reason: CacheError,
    },
}

/// Why a file is in the closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A `#!` script (or a file run with `/bin/sh` because it had no magic).
    Script,
    /// The ELF program finally executed.
    Program,
    /// Its `PT_INTERP` (the dynamic loader).
    Interpreter,
    /// A shared library (`DT_NEEDED` or preloaded).
    Library,
}

/// One file the node needs, with the identity the node cache validates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosureFile {
    /// The path as the kernel or loader opens it on central (its resolved
    /// form and link target are [`ClosureFile::realpath`] and
    /// [`ClosureFile::symlink`], asked for only when needed: a launch
    /// needs neither).
    pub path: PathBuf,
    /// Size in bytes (of the file, following symlinks).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Why it is needed.
    pub role: Role,
}

/// Everything the node needs to start the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    /// argv as the kernel passes it to the final program after `#!`
    /// processing (`interp [arg] script args[1..]`).
    pub argv: Vec<OsString>,
    /// The ELF finally executed.
    pub program: PathBuf,
    /// Its `PT_INTERP`; `None` for static and static-pie programs.
    pub interpreter: Option<PathBuf>,
    /// Scripts, program, interpreter, preloads and libraries: unique by
    /// path, in load order (scripts outermost first).
    pub files: Vec<ClosureFile>,
    /// Directories the libraries were found in, in order of first use.
    pub library_dirs: Vec<PathBuf>,
    /// Each library name as requested (`DT_NEEDED`, preload entry) and the
    /// central path it resolved to; names are unique. Names resolved to an
    /// object already loaded (e.g. `ld-linux-x86-64.so.2` → the interpreter)
    /// are included.
    pub libraries: Vec<(OsString, PathBuf)>,
    /// Preloaded libraries (`LD_PRELOAD`, `/etc/ld.so.preload`), central
    /// paths in load order; the node passes their cache paths to `--preload`.
    pub preload: Vec<PathBuf>,
}

/// Find PROGRAM as a shell would: a name containing `/` is taken relative
/// to `cwd`; otherwise each PATH entry is tried in order (an empty entry
/// means `cwd`; no PATH at all means `/bin:/usr/bin`, as `execvp`),
/// skipping directories and files that are not executable. If only a
/// non-executable file was found the error is `PermissionDenied`, as bash
/// reports. Executability is `eaccess(X_OK)` for the calling user. The
/// result is absolute when `cwd` is.
pub fn resolve_program(
    name: &str,
    path_env: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, ClosureError> {
    if name.is_empty() {
        return Err(ClosureError::NotFound(PathBuf::new()));
    }
    if name.contains('/') {
        let path = cwd.join(name);
        return match check_executable(&path) {
            Ok(()) => Ok(path),
            Err(e) => Err(e),
        };
    }
    let path_env = path_env.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = None;
    for dir in path_env.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(ClosureError::PermissionDenied(p)) => {
                denied.get_or_insert(p);
            }
            Err(_) => {}
        }
    }
    Err(match denied {
        Some(p) => ClosureError::PermissionDenied(p),
        None => ClosureError::NotFound(PathBuf::from(name)),
    })
}

fn check_executable(path: &Path) -> Result<(), ClosureError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(ClosureError::IsADirectory(path.to_path_buf()));
    }
    if !meta.is_file() {
        // execve refuses anything but a regular file with EACCES.
        return Err(ClosureError::PermissionDenied(path.to_path_buf()));
    }
    nix::unistd::eaccess(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|_| ClosureError::PermissionDenied(path.to_path_buf()))
}

fn io_error(path: &Path, e: io::Error) -> ClosureError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) | Some(libc::ELOOP) => {
            ClosureError::NotFound(path)
        }
        Some(libc::EACCES) | Some(libc::EPERM) => ClosureError::PermissionDenied(path),
        Some(libc::EISDIR) => ClosureError::IsADirectory(path),
        _ => ClosureError::Io { path, source: e },
    }
}

/// The exec closure of `program` run with `argv` and the job's `env`, using
/// central's loader configuration and `/etc/ld.so.cache` (both cached for
/// the process lifetime; the cache is re-read when its file changes).
///
/// `program` is the file name given to `execve`; a relative one (and a
/// relative `#!` interpreter) is resolved against this process's cwd, as
/// the kernel would. It also becomes the script path in argv.
pub fn exec_closure(
    program: &Path,
    argv: &[OsString],
    env: &[(OsString, OsString)],
) -> Result<ExecPlan, ClosureError> {
    Resolver::system().exec_closure(program, argv, env)
}

/// Parse an `ld.so.cache` file (for diagnostics and tests; [`exec_closure`]
/// uses its own cached copy).
pub fn parse_ld_cache_file(path: &Path) -> Result<LdCache, ClosureError> {
    let bytes = read_capped(path)?;
    LdCache::from_bytes(bytes).map_err(|reason| ClosureError::BadLdCache {
        path: path.to_path_buf(),
        reason,
    })
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ClosureError> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    // Sized up front: the file is read whole, in one go.
    let size = file.metadata().map_or(0, |m| m.len().min(MAX_CACHE_BYTES));
    let mut bytes = Vec::with_capacity(size as usize + 1);
    file.take(MAX_CACHE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    Ok(bytes)
}

/// Identity of the parsed ld.so.cache, to notice ldconfig rewriting it.
type CacheKey = (u64, u64, u64, i64, i64);

/// A loader configuration plus the files it reads, with the parsed cache
/// kept between calls. [`exec_closure`] uses [`Resolver::system`].
///
/// The configuration of [`Resolver::system`] is probed lazily: a closure
/// that finds every library through `ld.so.cache` (the common case) needs
/// neither hwcaps subdirectories nor system directories, so a fresh
/// process (the job's home) does not pay the ~1 ms `ld.so --help` exec.
#[derive(Debug)]
pub struct Resolver {
    config: OnceLock<LoaderConfig>,
    /// The loader to ask when `config` is first needed.
    probe: PathBuf,
    cache_path: PathBuf,
    preload_path: Option<PathBuf>,
    cache: Mutex<Option<(CacheKey, Option<Arc<LdCache>>)>>,
}

impl Resolver {
    /// A resolver with an explicit configuration, cache file and preload
    /// file (`None`: no `/etc/ld.so.preload`).
    pub fn new(
        config: LoaderConfig,
        cache_path: PathBuf,
        preload_path: Option<PathBuf>,
    ) -> Resolver {
        Resolver {
            config: OnceLock::from(config),
            probe: PathBuf::new(),
            cache_path,
            preload_path,
            cache: Mutex::new(None),
        }
    }

    /// A resolver whose configuration is asked of `loader --help` when
    /// first needed.
    pub fn probing(
        loader: PathBuf,
        cache_path: PathBuf,
        preload_path: Option<PathBuf>,
    ) -> Resolver {
        Resolver {
            config: OnceLock::new(),
            probe: loader,
            cache_path,
            preload_path,
            cache: Mutex::new(None),
        }
    }

    /// The process-wide resolver for this host: configuration probed (once,
    /// when first needed) from the host's `ld.so --help`;
    /// `/etc/ld.so.cache`, `/etc/ld.so.preload`.
    pub fn system() -> &'static Resolver {
        static SYSTEM: OnceLock<Resolver> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            Resolver::probing(
                PathBuf::from(ldso::HOST_LOADER),
                PathBuf::from(LD_CACHE_FILE),
                Some(PathBuf::from(PRELOAD_FILE)),
            )
        })
    }

    /// The loader configuration in use (probing it now if not done yet).
    pub fn config(&self) -> &LoaderConfig {
        self.config.get_or_init(|| LoaderConfig::probe(&self.probe))
    }

    /// Whether the configuration has been probed or given (for tests and
    /// diagnostics).
    pub fn config_loaded(&self) -> bool {
        self.config.get().is_some()
    }

    /// The parsed cache, re-read only when the file's identity changed. A
    /// missing or malformed cache is `None`: glibc then skips the cache.
    fn ld_cache(&self) -> Option<Arc<LdCache>> {
        let meta = std::fs::metadata(&self.cache_path).ok();
        let key = meta
            .as_ref()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            .unwrap_or_default();
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = guard.as_ref() {
            if *k == key {
                return c.clone();
            }
        }
        let parsed = match meta {
            None => None,
            Some(_) => match read_capped(&self.cache_path).and_then(|b| {
                LdCache::from_bytes(b).map_err(|reason| ClosureError::BadLdCache {
                    path: self.cache_path.clone(),
                    reason,
                })
            }) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    log::warn!("closure: ignoring ld.so.cache: {e}");
                    None
                }
            },
        };
        *guard = Some((key, parsed.clone()));
        parsed
    }

    /// [`exec_closure`] with this resolver.
    pub fn exec_closure(
        &self,
        program: &Path,
        argv: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<ExecPlan, ClosureError> {
        let mut files = Vec::new();
        let (argv, prog_path, prog_file, prog_meta, prog_info) =
            follow_scripts(program, argv, &mut files)?;

        let mut plan = ExecPlan {
            argv,
            program: prog_path.clone(),
            interpreter: None,
            files,
            library_dirs: Vec::new(),
            libraries: Vec::new(),
            preload: Vec::new(),
        };
        plan.files
            .push(closure_file(&prog_path, &prog_meta, Role::Program));
        drop(prog_file);

        // No PT_INTERP: static or static-pie; the kernel maps nothing else.
        let Some(interp) = prog_info.interp.clone() else {
            return Ok(plan);
        };
        let interp_path = PathBuf::from(OsString::from_vec(interp));
        let (_f, interp_meta, interp_info) = open_elf(&interp_path)?;
        plan.files
            .push(closure_file(&interp_path, &interp_meta, Role::Interpreter));
        plan.interpreter = Some(interp_path.clone());

        let mut linker = Linker::new(self, &prog_path, env);
        // The main map's $ORIGIN comes from /proc/self/exe: symlinks resolved.
        let main_origin = std::fs::canonicalize(&prog_path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        linker.add_object(Obj::new(
            self,
            PathBuf::new(),
            main_origin,
            None,
            &prog_info,
            &prog_meta,
        ));
        let mut rtld = Obj::new(
            self,
            interp_path.clone(),
            interp_path.parent().map(Path::to_path_buf),
            None,
            &interp_info,
            &interp_meta,
        );
        rtld.names.push(interp_path.as_os_str().as_bytes().to_vec());
        linker.add_object(rtld);
        linker.run(self.preload_names(env))?;

        for obj in linker.objs.iter().filter(|o| o.is_library) {
            plan.files
                .push(closure_file(&obj.path, &obj.meta, Role::Library));
        }
        plan.library_dirs = linker.library_dirs;
        plan.libraries = linker.libraries;
        plan.preload = linker.preload;
        // Unique by path (a script could also be a library only in contrived
        // cases; keep the first role).
        let mut seen = std::collections::HashSet::new();
        plan.files.retain(|f| seen.insert(f.path.clone()));
        Ok(plan)
    }

    /// `LD_PRELOAD` (separators space and colon) then `/etc/ld.so.preload`
    /// (any whitespace or colon), as rtld reads them.
    fn preload_names(&self, env: &[(OsString, OsString)]) -> Vec<Vec<u8>> {
        let mut names = Vec::new();
        if let Some((_, v)) = env.iter().rev().find(|(k, _)| k == "LD_PRELOAD") {
            names.extend(
                v.as_bytes()
                    .split(|&b| b == b' ' || b == b':')
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec),
            );
        }
        if let Some(p) = &self.preload_path {
            if let Ok(bytes) = std::fs::read(p) {
                names.extend(
                    bytes
                        .split(|&b| b" \t\n:".contains(&b))
                        .filter(|s| !s.is_empty())
                        .take(1024)
                        .map(<[u8]>::to_vec),
                );
            }
        }
        names
    }
}

/// Open a file the kernel is asked to execute and check what `execve`
/// checks: exists, regular, executable by us (and readable, since central
/// must ship it).
fn open_exec(path: &Path) -> Result<(File, Metadata), ClosureError> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO (or a device) named as the program or its
    // interpreter must be refused as execve refuses it, not wait forever
    // for a writer; no-op for the regular files that pass.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(ClosureError::IsADirectory(path.to_path_buf()));
    }
    if !meta.is_file() {
        return Err(ClosureError::PermissionDenied(path.to_path_buf()));
    }
    nix::unistd::eaccess(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|_| ClosureError::PermissionDenied(path.to_path_buf()))?;
    Ok((file, meta))
}

/// Open an executable ELF (the program or `PT_INTERP`) and parse it.
fn open_elf(path: &Path) -> Result<(File, Metadata, ElfInfo), ClosureError> {
    let (file, meta) = open_exec(path)?;
    let info =
        elf::parse_file(&file, meta.len()).map_err(|reason| ClosureError::BadExecutable {
            path: path.to_path_buf(),
            reason,
        })?;
    Ok((file, meta, info))
}

type Followed = (Vec<OsString>, PathBuf, File, Metadata, ElfInfo);

/// Follow `#!` lines from `program` to the ELF the kernel finally maps,
/// building argv as `load_script` does, and record each script.
fn follow_scripts(
    program: &Path,
    argv: &[OsString],
    files: &mut Vec<ClosureFile>,
) -> Result<Followed, ClosureError> {
    let mut argv = argv.to_vec();
    let mut path = program.to_path_buf();
    let mut depth = 0;
    loop {
        let (file, meta) = open_exec(&path)?;
        let mut buf = [0u8; BINPRM_BUF_SIZE];
        let n = read_prefix(&file, &mut buf).map_err(|e| io_error(&path, e))?;
        if buf.starts_with(b"#!") {
            if depth >= MAX_SCRIPT_DEPTH {
                return Err(ClosureError::TooManyInterpreters(path));
            }
            let (interp, arg) = parse_shebang(&buf).map_err(|reason| ClosureError::BadShebang {
                path: path.clone(),
                reason,
            })?;
            files.push(closure_file(&path, &meta, Role::Script));
            // remove_arg_zero, then push the script name, the optional
            // argument and the interpreter in front.
            let mut next = Vec::with_capacity(argv.len() + 2);
            next.push(OsString::from_vec(interp.clone()));
            if let Some(a) = arg {
                next.push(OsString::from_vec(a));
            }
            next.push(path.clone().into_os_string());
            next.extend(argv.iter().skip(1).cloned());
            argv = next;
            path = PathBuf::from(OsString::from_vec(interp));
            depth += 1;
            continue;
        }
        match elf::parse_file(&file, meta.len()) {
            Ok(info) => return Ok((argv, path, file, meta, info)),
            // execve fails with ENOEXEC; execvp and shells then run the file
            // with /bin/sh. Only for the file the user named.
            Err(elf::ElfError::NotElf) | Err(elf::ElfError::Truncated(_))
                if depth == 0 && !buf[..n].starts_with(b"\x7fELF") =>
            {
                files.push(closure_file(&path, &meta, Role::Script));
                let mut next = vec![
                    OsString::from(FALLBACK_SHELL),
                    path.clone().into_os_string(),
                ];
                next.extend(argv.iter().skip(1).cloned());
                argv = next;
                path = PathBuf::from(FALLBACK_SHELL);
                // The shell must be an ELF itself: no `#!`, no second fallback.
                let (file, meta, info) = open_elf(&path)?;
                return Ok((argv, path, file, meta, info));
            }
            Err(reason) => return Err(ClosureError::BadExecutable { path, reason }),
        }
    }
}

fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Parse a `#!` line exactly as Linux's `load_script` (fs/binfmt_script.c)
/// does with its zero-padded `BINPRM_BUF_SIZE` buffer: the line ends at the
/// first newline, or at the end of the buffer if the interpreter name is
/// followed by a space, tab or NUL inside it (a truncated argument is fine,
/// a truncated interpreter name is ENOEXEC); trailing blanks are trimmed;
/// the interpreter name ends at a blank or NUL; everything after the
/// following blanks is one argument (up to a NUL, as C strings).
pub fn parse_shebang(
    buf: &[u8; BINPRM_BUF_SIZE],
) -> Result<(Vec<u8>, Option<Vec<u8>>), &'static str> {
    let spacetab = |c: u8| c == b' ' || c == b'\t';
    let last = BINPRM_BUF_SIZE - 1;
    let mut end = match buf.iter().position(|&c| c == b'\n') {
        Some(nl) => nl,
        None => {
            let Some(start) = (2..=last).find(|&i| !spacetab(buf[i])) else {
                return Err("only blanks");
            };
            if !(start..=last).any(|i| spacetab(buf[i]) || buf[i] == 0) {
                return Err("interpreter path does not fit in the first 256 bytes");
            }
            last
        }
    };
    while end > 2 && spacetab(buf[end - 1]) {
        end -= 1;
    }
    let line = &buf[..end];
    let Some(name_start) = (2..end).find(|&i| !spacetab(line[i])) else {
        return Err("no interpreter name");
    };
    let name_end = (name_start..end)
        .find(|&i| spacetab(line[i]) || line[i] == 0)
        .unwrap_or(end);
    let cstr = |s: &[u8]| s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())].to_vec();
    let name = cstr(&line[name_start..name_end]);
    let mut arg = None;
    if name_end < end && line[name_end] != 0 {
        if let Some(a) = (name_end..end).find(|&i| !spacetab(line[i])) {
            arg = Some(cstr(&line[a..end]));
        }
    }
    Ok((name, arg))
}

fn closure_file(path: &Path, meta: &Metadata, role: Role) -> ClosureFile {
    ClosureFile {
        path: path.to_path_buf(),
        size: meta.size(),
        mtime_sec: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        ino: meta.ino(),
        dev: meta.dev(),
        mode: meta.mode(),
        role,
    }
}

impl ClosureFile {
    /// The path with all symlinks resolved (now: the file system may have
    /// changed since the plan was made).
    pub fn realpath(&self) -> PathBuf {
        std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }

    /// If `path` itself is a symlink, its target as read by `readlink`
    /// (e.g. `libc.so.6` → `libc-2.36.so`).
    pub fn symlink(&self) -> Option<PathBuf> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&self.path).ok(),
            _ => None,
        }
    }
}

/// One loaded object, as glibc's `struct link_map` sees it for searching.
struct Obj {
    /// `l_name`: the path it was opened as (empty for the main program).
    path: PathBuf,
    /// Names it answers to: requested names, `l_name`, SONAME.
    names: Vec<Vec<u8>>,
    /// `l_origin`: what `$ORIGIN` expands to for this object.
    origin: Option<PathBuf>,
    /// Effective `DT_RPATH` (none when `DT_RUNPATH` exists), expanded.
    rpath: Vec<PathBuf>,
    /// `DT_RUNPATH`, expanded, if present.
    runpath: Option<Vec<PathBuf>>,
    nodeflib: bool,
    /// `l_loader`: the object whose dependency caused this one to load.
    loader: Option<usize>,
    needed: Vec<Vec<u8>>,
    meta: Metadata,
    id: (u64, u64),
    is_library: bool,
}

impl Obj {
    fn new(
        config: &dyn ConfigSource,
        path: PathBuf,
        origin: Option<PathBuf>,
        loader: Option<usize>,
        info: &ElfInfo,
        meta: &Metadata,
    ) -> Obj {
        let mut names = Vec::new();
        if let Some(s) = &info.soname {
            names.push(s.clone());
        }
        let expand = |list: &[u8]| split_path_list(list, b":", config, origin.as_deref());
        let runpath = info.runpath.as_deref().map(expand);
        let rpath = match (&runpath, &info.rpath) {
            (None, Some(r)) => expand(r),
            _ => Vec::new(),
        };
        Obj {
            path,
            origin,
            names,
            rpath,
            runpath,
            nodeflib: info.flags_1 & elf::DF_1_NODEFLIB != 0,
            loader,
            needed: info.needed.clone(),
            meta: meta.clone(),
            id: (meta.dev(), meta.ino()),
            is_library: false,
        }
    }
}

/// Split a search list and expand dynamic string tokens; elements whose
/// `$ORIGIN` is unknown are dropped, empty elements mean the cwd (as glibc's
/// `fillin_rpath`).
fn split_path_list(
    list: &[u8],
    seps: &[u8],
    config: &dyn ConfigSource,
    origin: Option<&Path>,
) -> Vec<PathBuf> {
    // An empty list names no directory (glibc ignores an empty
    // LD_LIBRARY_PATH); only empty elements of a non-empty list mean the cwd.
    if list.is_empty() {
        return Vec::new();
    }
    list.split(|b| seps.contains(b))
        .filter_map(|el| {
            if el.is_empty() {
                return Some(PathBuf::new());
            }
            let expanded = expand_dst(el, config, origin)?;
            if expanded.is_empty() {
                return None;
            }
            Some(PathBuf::from(OsString::from_vec(expanded)))
        })
        .collect()
}

/// glibc's `_dl_dst_substitute`: `$ORIGIN`, `$PLATFORM`, `$LIB`, with or
/// without braces; a name must not continue with an identifier character.
/// Unknown tokens are kept literally. `None` if `$ORIGIN` is needed but
/// unknown.
fn expand_dst(s: &[u8], config: &dyn ConfigSource, origin: Option<&Path>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'$' {
            let rest = &s[i + 1..];
            if let Some(len) = dst_len(rest, b"ORIGIN") {
                out.extend_from_slice(origin?.as_os_str().as_bytes());
                i += 1 + len;
                continue;
            }
            if let Some(len) = dst_len(rest, b"PLATFORM") {
                out.extend_from_slice(&config.config().platform);
                i += 1 + len;
                continue;
            }
            if let Some(len) = dst_len(rest, b"LIB") {
                out.extend_from_slice(&config.config().lib);
                i += 1 + len;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Some(out)
}

fn dst_len(input: &[u8], name: &[u8]) -> Option<usize> {
    if let Some(inner) = input.strip_prefix(b"{") {
        let after = inner.strip_prefix(name)?;
        return after.starts_with(b"}").then_some(name.len() + 2);
    }
    let after = input.strip_prefix(name)?;
    match after.first() {
        Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => None,
        _ => Some(name.len()),
    }
}

/// A candidate file that passed `open_verify`.
struct Found {
    path: PathBuf,
    meta: Metadata,
    info: ElfInfo,
}

/// Where the loader configuration comes from: given, or probed on first use
/// (only `$LIB`/`$PLATFORM`, directory searches and hwcaps cache entries
/// need it).
trait ConfigSource {
    fn config(&self) -> &LoaderConfig;
}

impl ConfigSource for LoaderConfig {
    fn config(&self) -> &LoaderConfig {
        self
    }
}

impl ConfigSource for Resolver {
    fn config(&self) -> &LoaderConfig {
        Resolver::config(self)
    }
}

/// The state of one simulated `_dl_map_object_deps` run.
struct Linker<'a> {
    resolver: &'a Resolver,
    ld_cache: Option<Arc<LdCache>>,
    ld_library_path: Option<Vec<u8>>,
    /// The program's path, for messages.
    program: PathBuf,
    objs: Vec<Obj>,
    /// Whether a search directory exists (glibc's per-directory status).
    dir_exists: HashMap<PathBuf, bool>,
    library_dirs: Vec<PathBuf>,
    libraries: Vec<(OsString, PathBuf)>,
    preload: Vec<PathBuf>,
}

impl<'a> Linker<'a> {
    fn new(resolver: &'a Resolver, program: &Path, env: &[(OsString, OsString)]) -> Linker<'a> {
        // The last definition wins, as getenv of a duplicated name would not
        // guarantee anything better.
        let ld_library_path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "LD_LIBRARY_PATH")
            .map(|(_, v)| v.as_bytes().to_vec());
        Linker {
            resolver,
            ld_cache: resolver.ld_cache(),
            ld_library_path,
            program: program.to_path_buf(),
            objs: Vec::new(),
            dir_exists: HashMap::new(),
            library_dirs: Vec::new(),
            libraries: Vec::new(),
            preload: Vec::new(),
        }
    }

    fn add_object(&mut self, obj: Obj) -> usize {
        self.objs.push(obj);
        self.objs.len() - 1
    }

    /// Preloads, then breadth-first over `[main, preloads..., new objects]`.
    fn run(&mut self, preloads: Vec<Vec<u8>>) -> Result<(), ClosureError> {
        let mut queue = VecDeque::from([0usize]);
        for name in preloads {
            // rtld ignores (with a message) a preload it cannot load.
            match self.map_object(&name, 0) {
                Ok((idx, new)) => {
                    if new {
                        queue.push_back(idx);
                    }
                    let p = self.objs[idx].path.clone();
                    if !self.preload.contains(&p) {
                        self.preload.push(p);
                    }
                }
                Err(e) => log::warn!(
                    "closure: preload {} ignored: {e}",
                    String::from_utf8_lossy(&name)
                ),
            }
        }
        while let Some(idx) = queue.pop_front() {
            let needed = self.objs[idx].needed.clone();
            for name in needed {
                let (dep, new) = self.map_object(&name, idx)?;
                if new {
                    queue.push_back(dep);
                }
            }
        }
        Ok(())
    }

    fn needed_by(&self, loader: usize) -> PathBuf {
        if loader == 0 {
            // The main map's l_name is empty; name the program for errors.
            self.program.clone()
        } else {
            self.objs[loader].path.clone()
        }
    }

    /// `_dl_map_object`: returns the object index and whether it is new.
    fn map_object(&mut self, name: &[u8], loader: usize) -> Result<(usize, bool), ClosureError> {
        if let Some(i) = self.objs.iter().position(|o| {
            o.names.iter().any(|n| n == name)
                || (!o.path.as_os_str().is_empty() && o.path.as_os_str().as_bytes() == name)
        }) {
            self.note_name(name, i);
            return Ok((i, false));
        }
        let found = if name.contains(&b'/') {
            let origin = self.origin_of(loader);
            let expanded = expand_dst(name, self.resolver, origin.as_deref());
            match expanded {
                Some(p) => self.try_file(PathBuf::from(OsString::from_vec(p)), loader)?,
                None => None,
            }
        } else {
            self.search(name, loader)?
        };
        let Some(found) = found else {
            return Err(ClosureError::LibraryNotFound {
                library: OsString::from_vec(name.to_vec()),
                needed_by: self.needed_by(loader),
            });
        };
        // Same file under another name: glibc's _dl_file_id_match_p.
        let id = (found.meta.dev(), found.meta.ino());
        if let Some(i) = self.objs.iter().position(|o| o.id == id) {
            self.objs[i].names.push(name.to_vec());
            self.note_name(name, i);
            return Ok((i, false));
        }
        if let Some(dir) = found.path.parent() {
            if !self.library_dirs.iter().any(|d| d == dir) {
                self.library_dirs.push(dir.to_path_buf());
            }
        }
        let origin = found.path.parent().map(Path::to_path_buf);
        let mut obj = Obj::new(
            self.resolver,
            found.path.clone(),
            origin,
            Some(loader),
            &found.info,
            &found.meta,
        );
        obj.names.push(name.to_vec());
        obj.is_library = true;
        let idx = self.add_object(obj);
        self.note_name(name, idx);
        Ok((idx, true))
    }

    fn note_name(&mut self, name: &[u8], idx: usize) {
        let name = OsStr::from_bytes(name);
        let path = &self.objs[idx].path;
        if path.as_os_str().is_empty() || self.libraries.iter().any(|(n, _)| n == name) {
            return;
        }
        self.libraries.push((name.to_os_string(), path.clone()));
    }

    fn origin_of(&self, idx: usize) -> Option<PathBuf> {
        self.objs[idx].origin.clone()
    }

    /// The search order of `_dl_map_object` for a name without a slash.
    fn search(&mut self, name: &[u8], loader: usize) -> Result<Option<Found>, ClosureError> {
        // RPATH of the loader and its loaders, then of the main program,
        // unless the loader has RUNPATH.
        if self.objs[loader].runpath.is_none() {
            let mut did_main = false;
            let mut l = Some(loader);
            while let Some(i) = l {
                let dirs = self.objs[i].rpath.clone();
                if !dirs.is_empty() {
                    if let Some(f) = self.search_dirs(&dirs, name, loader)? {
                        return Ok(Some(f));
                    }
                    did_main |= i == 0;
                }
                l = self.objs[i].loader;
            }
            if !did_main && !self.objs[0].rpath.is_empty() {
                let dirs = self.objs[0].rpath.clone();
                if let Some(f) = self.search_dirs(&dirs, name, loader)? {
                    return Ok(Some(f));
                }
            }
        }
        if let Some(list) = self.ld_library_path.clone() {
            // DSTs in LD_LIBRARY_PATH refer to the main program.
            let origin = self.objs[0].origin.clone();
            let dirs = split_path_list(&list, b":;", self.resolver, origin.as_deref());
            if let Some(f) = self.search_dirs(&dirs, name, loader)? {
                return Ok(Some(f));
            }
        }
        if let Some(dirs) = self.objs[loader].runpath.clone() {
            if let Some(f) = self.search_dirs(&dirs, name, loader)? {
                return Ok(Some(f));
            }
        }
        if self.objs[loader].nodeflib {
            return Ok(None);
        }
        if let Some(cache) = self.ld_cache.clone() {
            // Only names with glibc-hwcaps entries need the CPU's list.
            let resolver = self.resolver;
            if let Some(p) = cache.lookup_with(name, || &resolver.config().hwcaps) {
                let p = PathBuf::from(OsStr::from_bytes(p));
                if let Some(f) = self.try_file(p, loader)? {
                    return Ok(Some(f));
                }
            }
        }
        let dirs = self.resolver.config().system_dirs.clone();
        self.search_dirs(&dirs, name, loader)
    }

    /// `open_path`: each directory, each hwcaps subdirectory in it.
    fn search_dirs(
        &mut self,
        dirs: &[PathBuf],
        name: &[u8],
        loader: usize,
    ) -> Result<Option<Found>, ClosureError> {
        let name = OsStr::from_bytes(name);
        if dirs.is_empty() {
            return Ok(None);
        }
        let resolver = self.resolver;
        let subdirs = &resolver.config().subdirs;
        for dir in dirs {
            for sub in subdirs {
                let d = dir.join(sub);
                if self.dir_exists.get(&d) == Some(&false) {
                    continue;
                }
                let candidate = d.join(name);
                match self.try_file(candidate, loader)? {
                    Some(f) => return Ok(Some(f)),
                    None => {
                        // Like glibc, stat the directory once after a miss so a
                        // missing one is not tried for later names.
                        if let Entry::Vacant(v) = self.dir_exists.entry(d) {
                            let exists = v.key().as_os_str().is_empty() || v.key().is_dir();
                            v.insert(exists);
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// `open_verify`: `None` if the file cannot be opened or is of another
    /// class or machine; an error if it is unusable in any other way.
    fn try_file(&mut self, path: PathBuf, loader: usize) -> Result<Option<Found>, ClosureError> {
        let Ok(file) = File::open(&path) else {
            return Ok(None);
        };
        let meta = file.metadata().map_err(|e| io_error(&path, e))?;
        let info = if meta.is_dir() {
            Err(ElfError::Read("Is a directory".into()))
        } else {
            elf::parse_file(&file, meta.len())
        };
        match info {
            Ok(info) => Ok(Some(Found { path, meta, info })),
            Err(e) if e.is_skippable() => Ok(None),
            Err(reason) => Err(ClosureError::BadLibrary {
                path,
                needed_by: self.needed_by(loader),
                reason,
            }),
        }
    }
}
