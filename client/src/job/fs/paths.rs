//! Lexical path helpers: joining a relative path to its base, telling the
//! node's own trees (`/proc`, `/sys`, `/dev`, the job's directory) from
//! central's, and splitting a clean path into parent and name. Nothing
//! here resolves `..` across a symlink: the home does that with central's
//! kernel; the lexical form is only used to classify and to key caches.

/// Whether `path` (absolute) is `prefix` or lies below it.
pub(crate) fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    if prefix == b"/" {
        return path.first() == Some(&b'/');
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// `path` below `prefix` as an absolute path (`/` for `prefix` itself);
/// None when it is not below it.
pub(crate) fn strip_under(path: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    if !is_under(path, prefix) {
        return None;
    }
    let rest = &path[prefix.len()..];
    Some(if rest.is_empty() {
        b"/".to_vec()
    } else {
        rest.to_vec()
    })
}

/// Joins `rel` (not absolute) to the absolute `base`.
pub(crate) fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + rel.len() + 1);
    out.extend_from_slice(base);
    if out.last() != Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

/// The lexically normalized form of the absolute `path`: no empty or `.`
/// components, `..` applied to the text (so `/proc/../etc` is `/etc`).
/// Used only to classify a path, never to forward it.
pub(crate) fn lexical(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Whether the absolute `path` has no empty, `.` or `..` component and no
/// trailing slash: a key the metadata cache may use as is.
pub(crate) fn is_clean(path: &[u8]) -> bool {
    if path == b"/" {
        return true;
    }
    if path.first() != Some(&b'/') || path.last() == Some(&b'/') {
        return false;
    }
    path[1..]
        .split(|b| *b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Removes `.` and empty components (keeping `..`, which only central can
/// resolve, and one trailing slash, which asks for a directory): a
/// canonical spelling for requests and cache keys. `/a/./b//c` becomes
/// `/a/b/c`.
pub(crate) fn tidy(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for c in path.split(|b| *b == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() || path.last() == Some(&b'/') || path.ends_with(b"/.") {
        out.push(b'/');
    }
    out
}

/// Parent and last component of a clean absolute path other than `/`.
pub(crate) fn split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = path.iter().rposition(|b| *b == b'/')?;
    let name = &path[i + 1..];
    if name.is_empty() {
        return None;
    }
    let parent = if i == 0 { &path[..1] } else { &path[..i] };
    Some((parent, name))
}

/// The node's own trees, which a job sees natively.
pub(crate) const NODE_TREES: [&[u8]; 3] = [b"/proc", b"/sys", b"/dev"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_and_strip() {
        assert!(is_under(b"/proc", b"/proc"));
        assert!(is_under(b"/proc/1", b"/proc"));
        assert!(!is_under(b"/process", b"/proc"));
        assert!(is_under(b"/x", b"/"));
        assert_eq!(strip_under(b"/m/root", b"/m/root").unwrap(), b"/");
        assert_eq!(strip_under(b"/m/root/a/b", b"/m/root").unwrap(), b"/a/b");
        assert_eq!(strip_under(b"/m/rootx", b"/m/root"), None);
    }

    #[test]
    fn join_lexical_tidy_split() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/x", b"a/b"), b"/x/a/b");
        assert_eq!(lexical(b"/proc/../etc//./p"), b"/etc/p");
        assert_eq!(lexical(b"/../.."), b"/");
        assert_eq!(tidy(b"/a/./b//c"), b"/a/b/c");
        assert_eq!(tidy(b"/a/./b//c//"), b"/a/b/c/");
        assert_eq!(tidy(b"/a/../b"), b"/a/../b");
        assert_eq!(tidy(b"//"), b"/");
        assert!(is_clean(b"/a/b"));
        assert!(is_clean(b"/"));
        assert!(!is_clean(b"/a/../b"));
        assert!(!is_clean(b"/a/"));
        assert!(!is_clean(b"/a//b"));
        assert_eq!(split(b"/a/b").unwrap(), (&b"/a"[..], &b"b"[..]));
        assert_eq!(split(b"/a").unwrap(), (&b"/"[..], &b"a"[..]));
        assert_eq!(split(b"/"), None);
    }
}
