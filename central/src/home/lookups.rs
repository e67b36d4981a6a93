//! The lookups the home answers before the job asks them: a few paths a
//! program is known to look up first, `lstat`ed as the caller right before
//! the launch goes out and carried in it (`Launch::lookups`), so that the
//! node's metadata cache answers the job's first `access`, `stat` and
//! `readlink` of them without a round trip (docs/files.md, "Consistency").
//!
//! The set: `/etc/ld.so.preload`, which the loader of every dynamically
//! linked program `access`es before anything else, and the symlink chain of
//! the program as it was named and of the ELF finally run (interpreters
//! such as python `readlink` their own path to find their prefix).

use dscp_dicp::msg::job::{Launch, Lookup, MAX_LOOKUPS};
use dscp_dicp::msg::Blob;

use super::fs::sys;

/// The loader's first question.
const PRELOAD: &[u8] = b"/etc/ld.so.preload";

/// Links followed per chain (the kernel allows 40; real programs have one
/// or two).
const MAX_HOPS: usize = 8;

/// The lookups for `launch` (its own `lookups` are ignored).
pub fn gather(launch: &Launch) -> Vec<(Blob, Lookup)> {
    let mut out: Vec<(Blob, Lookup)> = Vec::new();
    let image = &launch.image;
    if image.interpreter.is_some() {
        if let Some(l) = lookup(PRELOAD) {
            out.push((Blob::from(PRELOAD), l));
        }
    }
    let named = image.files.first().map(|(p, _)| absolute(p, &launch.cwd));
    for start in named.into_iter().chain([image.program.0.clone()]) {
        chain(&start, &mut out);
    }
    out.truncate(MAX_LOOKUPS);
    out
}

/// `path` made absolute against `cwd` (as the kernel resolved the name
/// given to `execve`).
fn absolute(path: &[u8], cwd: &[u8]) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    let mut p = cwd.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(path);
    p
}

/// Whether `path` is absolute with no empty, `.` or `..` component: the
/// only form the node's cache keeps (a `..` is central's to resolve).
fn clean(path: &[u8]) -> bool {
    path.len() > 1
        && path[0] == b'/'
        && path[1..]
            .split(|b| *b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Looks up `start` and each symlink it leads to, appending what is not
/// there yet; stops at a path that is not clean or cannot be looked up.
fn chain(start: &[u8], out: &mut Vec<(Blob, Lookup)>) {
    let mut path = start.to_vec();
    for _ in 0..MAX_HOPS {
        if !clean(&path) || out.iter().any(|(p, _)| p.0 == path) {
            return;
        }
        let Some(found) = lookup(&path) else { return };
        let next = match &found {
            Lookup::Found { link: Some(t), .. } if t.first() == Some(&b'/') => t.0.clone(),
            Lookup::Found { link: Some(t), .. } => {
                let parent = path
                    .iter()
                    .rposition(|b| *b == b'/')
                    .map_or(&path[..0], |i| &path[..i]);
                let mut n = parent.to_vec();
                n.push(b'/');
                n.extend_from_slice(t);
                n
            }
            _ => Vec::new(),
        };
        out.push((Blob(path), found));
        if next.is_empty() {
            return;
        }
        path = next;
    }
}

/// `lstat` of `path` as the node's cache holds it: found (with the link's
/// target), missing, or `None` for any other answer (left for the job to
/// ask).
fn lookup(path: &[u8]) -> Option<Lookup> {
    let c = sys::abs_path(path).ok()?;
    match sys::stat_at(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => {
            let link = if stat.mode & libc::S_IFMT == libc::S_IFLNK {
                Some(Blob(sys::readlink_at(libc::AT_FDCWD, &c).ok()?))
            } else {
                None
            };
            Some(Lookup::Found { stat, link })
        }
        Err(libc::ENOENT) => Some(Lookup::Missing),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    fn found(out: &[(Blob, Lookup)], p: &std::path::Path) -> Option<Lookup> {
        out.iter()
            .find(|(q, _)| q.0 == p.as_os_str().as_bytes())
            .map(|(_, l)| l.clone())
    }

    #[test]
    fn chains_are_followed_and_answers_are_lstats() {
        let dir = std::env::temp_dir().join(format!("diatom-lookups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let real = dir.join("bin/prog3.11");
        std::fs::write(&real, b"x").unwrap();
        symlink("prog3.11", dir.join("bin/prog3")).unwrap();
        symlink(dir.join("bin/prog3"), dir.join("prog")).unwrap();
        let mut out = Vec::new();
        chain(dir.join("prog").as_os_str().as_bytes(), &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        match found(&out, &dir.join("prog")) {
            Some(Lookup::Found { link: Some(t), .. }) => {
                assert_eq!(t.0, dir.join("bin/prog3").as_os_str().as_bytes())
            }
            other => panic!("{other:?}"),
        }
        match found(&out, &dir.join("bin/prog3")) {
            Some(Lookup::Found {
                stat,
                link: Some(t),
            }) => {
                assert_eq!(&t.0[..], b"prog3.11");
                assert_eq!(stat.mode & libc::S_IFMT, libc::S_IFLNK);
            }
            other => panic!("{other:?}"),
        }
        match found(&out, &real) {
            Some(Lookup::Found { stat, link: None }) => assert_eq!(stat.size, 1),
            other => panic!("{other:?}"),
        }
        // Missing, a loop, and a path the node could not key.
        let mut out = Vec::new();
        chain(dir.join("none").as_os_str().as_bytes(), &mut out);
        assert!(matches!(&out[..], [(_, Lookup::Missing)]));
        symlink("b", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        let mut out = Vec::new();
        chain(dir.join("a").as_os_str().as_bytes(), &mut out);
        assert_eq!(out.len(), 2);
        symlink("../bin/prog3", dir.join("bin/up")).unwrap();
        let mut out = Vec::new();
        chain(dir.join("bin/up").as_os_str().as_bytes(), &mut out);
        assert_eq!(out.len(), 1);
        let mut out = Vec::new();
        chain(b"/usr/./bin", &mut out);
        assert!(out.is_empty());
        assert_eq!(absolute(b"x/y", b"/home/a"), b"/home/a/x/y");
        assert_eq!(absolute(b"x", b"/"), b"/x");
        assert_eq!(absolute(b"/x", b"/home"), b"/x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
