//! Spare empty directories for job mirrors.
//!
//! A mirror holds a real directory per directory entry the job lists (a
//! Python start makes ~140). On ext4, creating a directory inode after
//! many were freed scans for a free inode that was not recently deleted,
//! and freeing one discards its block: with a job's mirror made and
//! removed at every start, `mkdir` grew from ~30 µs to ~250 µs each here.
//! So when a job ends its mirror's directories are emptied and kept, and
//! the next mirror renames them into place instead of making new ones.
//!
//! The pool is `<jobs>/.spare-dirs` (mode 0700: no job can reach it), one
//! per jobs directory, in this process only (a restarted daemon starts a
//! new one and leaves the old spare directories for removal with the
//! state directory). A pooled directory is empty, mode 0755 and owned by
//! the node, exactly as [`Mirror`](super::mirror::Mirror) makes them.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Most spare directories kept per pool.
const MAX: usize = 50_000;

/// The spare directories of each pool.
static POOLS: Mutex<Option<HashMap<PathBuf, Vec<PathBuf>>>> = Mutex::new(None);
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Job directories this process recycled.
static RECYCLED: AtomicU64 = AtomicU64::new(0);

/// The pool of the jobs directory holding `job_dir`.
pub(crate) fn pool_of(job_dir: &Path) -> Option<PathBuf> {
    Some(job_dir.parent()?.join(".spare-dirs"))
}

fn with<T>(f: impl FnOnce(&mut HashMap<PathBuf, Vec<PathBuf>>) -> T) -> T {
    let mut g = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    f(g.get_or_insert_with(HashMap::new))
}

/// Makes the empty directory `p` (mode 0755) from a spare one of `pool`:
/// `None` when there is none (make it), `Err(AlreadyExists)` when `p`
/// exists.
pub(crate) fn take(pool: &Path, p: &Path) -> Option<io::Result<()>> {
    loop {
        let spare = with(|m| m.get_mut(pool).and_then(Vec::pop))?;
        match rename_noreplace(&spare, p) {
            Ok(()) => return Some(Ok(())),
            Err(nix::errno::Errno::EEXIST) => {
                with(|m| m.entry(pool.to_path_buf()).or_default().push(spare));
                return Some(Err(io::ErrorKind::AlreadyExists.into()));
            }
            // The spare is gone (try another), or `p` cannot be made
            // (mkdir reports why).
            Err(nix::errno::Errno::ENOENT) if std::fs::symlink_metadata(&spare).is_err() => {}
            Err(_) => {
                with(|m| m.entry(pool.to_path_buf()).or_default().push(spare));
                return None;
            }
        }
    }
}

/// `renameat2(from, to, RENAME_NOREPLACE)` as a raw system call: nix
/// offers it only for glibc, and the CLI (which embeds a node) can be
/// built against musl.
fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(from), Ok(to)) = (
        std::ffi::CString::new(from.as_os_str().as_bytes()),
        std::ffi::CString::new(to.as_os_str().as_bytes()),
    ) else {
        return Err(nix::errno::Errno::EINVAL);
    };
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// Makes directory `p` (mode 0755) and its missing ancestors, taking
/// spare directories of the pool of job directory `job_dir` when there
/// are some.
pub fn make_dir_all(job_dir: &Path, p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(parent) = p.parent() {
        make_dir_all(job_dir, parent)?;
    }
    let made = pool_of(job_dir)
        .and_then(|pool| take(&pool, p))
        .unwrap_or_else(|| std::fs::DirBuilder::new().mode(0o755).create(p));
    match made {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        r => r?,
    }
    // A spare may have been a 0700 directory; the node's umask must not
    // make a new one untraversable for the job.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
}

/// Removes the job directory `job_dir`, keeping its directories (its
/// mirror's, its own), emptied, as spares.
///
/// The first job of a process is removed as a whole: a process that runs
/// one job (the embedded `diatom exec`) removes its state directory as
/// soon as the job ends, and must not find spares appearing in it.
pub fn recycle(job_dir: &Path) {
    if RECYCLED.fetch_add(1, Ordering::Relaxed) == 0 {
        let _ = std::fs::remove_dir_all(job_dir);
        return;
    }
    if let Some(pool) = pool_of(job_dir) {
        if let Err(e) = recycle_below(&pool, job_dir) {
            log::debug!("recycling {}: {e}", job_dir.display());
        }
    }
    let _ = std::fs::remove_dir_all(job_dir);
}

fn recycle_below(pool: &Path, dir: &Path) -> io::Result<()> {
    if with(|m| m.get(pool).map_or(0, Vec::len)) >= MAX {
        return Ok(());
    }
    let first = with(|m| match m.entry(pool.to_path_buf()) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(Vec::new());
            true
        }
    });
    if first {
        // Spares of an earlier daemon are unknown to this one.
        let _ = std::fs::remove_dir_all(pool);
    }
    if std::fs::symlink_metadata(pool).is_err() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(pool)?;
    }
    let mut kept = Vec::new();
    let r = empty(pool, dir, &mut kept).and_then(|()| {
        let spare = pool.join(format!("d{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::rename(dir, &spare)?;
        kept.push(spare);
        Ok(())
    });
    with(|m| m.entry(pool.to_path_buf()).or_default().extend(kept));
    r
}

/// Empties `dir`, moving its subdirectories (emptied) into `pool`.
fn empty(pool: &Path, dir: &Path, kept: &mut Vec<PathBuf>) -> io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let path = ent.path();
        if ent.file_type()?.is_dir() {
            empty(pool, &path, kept)?;
            let spare = pool.join(format!("d{}", SEQ.fetch_add(1, Ordering::Relaxed)));
            std::fs::rename(&path, &spare)?;
            kept.push(spare);
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_job_directory_is_recycled_into_the_next() {
        let jobs = std::env::temp_dir().join(format!("diatom-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&jobs);
        let zero = jobs.join("0");
        make_dir_all(&zero, &zero.join("root")).unwrap();
        recycle(&zero);
        assert!(!zero.exists() && !pool_of(&zero).unwrap().exists());
        let one = jobs.join("1");
        make_dir_all(&one, &one.join("root/a/b")).unwrap();
        std::fs::write(one.join("root/a/f"), b"x").unwrap();
        std::fs::set_permissions(one.join("root/a"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let inodes: std::collections::HashSet<u64> = ["", "root", "root/a", "root/a/b"]
            .iter()
            .map(|p| std::fs::metadata(one.join(p)).unwrap().ino())
            .collect();
        recycle(&one);
        assert!(!one.exists());
        let pool = pool_of(&one).unwrap();
        assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 4);
        // The next job's directories are the spares, empty and 0755.
        let two = jobs.join("2");
        make_dir_all(&two, &two.join("root/x/y/z")).unwrap();
        for p in ["", "root", "root/x", "root/x/y"] {
            let m = std::fs::metadata(two.join(p)).unwrap();
            assert!(inodes.contains(&m.ino()), "{p} is a spare");
            assert_eq!(m.mode() & 0o7777, 0o755);
        }
        assert_eq!(std::fs::read_dir(two.join("root/x")).unwrap().count(), 1);
        // A spare never replaces an existing directory.
        let e = take(&pool, &two.join("root/x")).map(|r| r.unwrap_err().kind());
        assert!(matches!(e, None | Some(io::ErrorKind::AlreadyExists)));
        assert!(two.join("root/x/y").is_dir());
        std::fs::remove_dir_all(&jobs).unwrap();
    }
}
