//! The job's mirror of central's tree on the node (`<job_dir>/root`): the
//! local files the kernel really opens. A central path `P` is `root/P`.
//!
//! - Directories the job opens or enters are real directories (mode 0755,
//!   so the job's unprivileged user can traverse them) holding one
//!   placeholder per entry of central's listing, of the entry's type, so
//!   `getdents64` runs natively.
//! - Regular files the job reads are hard links to cache objects (a copy
//!   when the cache is on another file system); regular files it has only
//!   listed are hard links to one shared empty file, symlinks to one
//!   shared symlink (no inode each).
//! - Files the job writes are private copies owned by the job's user.
//!
//! New names appear through a sibling `tmp` directory and `rename`, so a
//! job listing a mirror directory never sees a half-made entry.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dscp_dicp::msg::fs::DirEntry;
use dscp_dicp::msg::job::FileStamp;

use super::meta::file_type;
use super::paths;

/// What a regular mirror file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// A cache object's content for this stamp.
    Object(FileStamp),
    /// The job's private writable copy.
    Private,
}

/// The mirror root and what the node put there.
#[derive(Debug)]
pub(crate) struct Mirror {
    root: Vec<u8>,
    tmp: PathBuf,
    owner: Option<(u32, u32)>,
    /// Where spare directories come from (see `pool.rs`).
    pool: Option<PathBuf>,
    /// Central directories that exist as real mirror directories.
    dirs: HashSet<Vec<u8>>,
    /// Regular mirror files with content (not placeholders).
    files: HashMap<Vec<u8>, Content>,
    seq: u64,
    /// The shared empty file and symlink placeholders link to, and their
    /// link counts.
    placeholder: [Option<(PathBuf, u32)>; 2],
}

/// Links to one shared placeholder before a new one is made (ext4 allows
/// 65000).
const PLACEHOLDER_LINKS: u32 = 60_000;

fn os(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes whatever is at `p` (a tree for a directory).
fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => ignore_missing(std::fs::remove_dir_all(p)),
        Ok(_) => ignore_missing(std::fs::remove_file(p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Mirror {
    /// A mirror at `root` (created, mode 0755) with `tmp` beside it on the
    /// same file system. `owner`: the job's (uid, gid) for private copies,
    /// when the node runs it as another user.
    pub(crate) fn create(root: &Path, tmp: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        let job_dir = root.parent().unwrap_or(root);
        for d in [root, tmp] {
            super::pool::make_dir_all(job_dir, d)?;
        }
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o700))?;
        let mut dirs = HashSet::new();
        dirs.insert(b"/".to_vec());
        Ok(Self {
            root: root.as_os_str().as_bytes().to_vec(),
            tmp: tmp.to_path_buf(),
            owner,
            pool: root.parent().and_then(super::pool::pool_of),
            dirs,
            files: HashMap::new(),
            seq: 0,
            placeholder: [None, None],
        })
    }

    /// The mirror root, as bytes.
    pub(crate) fn root(&self) -> &[u8] {
        &self.root
    }

    /// The node path of central `path` (absolute).
    pub(crate) fn node_path(&self, central: &[u8]) -> Vec<u8> {
        let mut p = self.root.clone();
        if central != b"/" {
            p.extend_from_slice(central);
        }
        p
    }

    /// The central path of a node path inside the mirror.
    pub(crate) fn central_of(&self, node: &[u8]) -> Option<Vec<u8>> {
        paths::strip_under(node, &self.root)
    }

    /// What the regular mirror file for `central` holds, if anything.
    pub(crate) fn content(&self, central: &[u8]) -> Option<Content> {
        self.files.get(central).copied()
    }

    fn tmp_name(&mut self) -> PathBuf {
        self.seq += 1;
        self.tmp.join(format!("t{}", self.seq))
    }

    /// Makes `central` (tidy, absolute, no `..`) and its ancestors real
    /// mirror directories.
    pub(crate) fn ensure_dir(&mut self, central: &[u8]) -> io::Result<()> {
        if self.dirs.contains(central) {
            return Ok(());
        }
        if let Some((parent, _)) = paths::split(central) {
            let parent = parent.to_vec();
            self.ensure_dir(&parent)?;
        }
        let node = self.node_path(central);
        let p = os(&node);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(p)?;
                self.files.remove(central);
                self.mkdir(p)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.mkdir(p)?,
            Err(e) => return Err(e),
        }
        self.dirs.insert(central.to_vec());
        Ok(())
    }

    fn mkdir(&self, p: &Path) -> io::Result<()> {
        let made = match self
            .pool
            .as_deref()
            .and_then(|pool| super::pool::take(pool, p))
        {
            Some(r) => r,
            None => std::fs::DirBuilder::new().mode(0o755).create(p),
        };
        match made {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }?;
        // The node's umask must not make it untraversable for the job.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
    }

    /// Fills the mirror directory `dir` with one placeholder per entry,
    /// keeping entries that already match and removing names central no
    /// longer has.
    pub(crate) fn populate(&mut self, dir: &[u8], entries: &[DirEntry]) -> io::Result<()> {
        self.ensure_dir(dir)?;
        let node_dir = self.node_path(dir);
        let mut wanted: HashMap<&[u8], &DirEntry> = HashMap::with_capacity(entries.len());
        for e in entries {
            let n: &[u8] = &e.name;
            if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
                continue;
            }
            wanted.insert(n, e);
        }
        // What is there now.
        for ent in std::fs::read_dir(os(&node_dir))? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.as_bytes();
            let central = paths::join(dir, name);
            let ft = ent.file_type()?;
            let keep = match wanted.get(name) {
                None => false,
                Some(e) => self.matches(&central, ft, e),
            };
            if keep {
                wanted.remove(name);
            } else {
                self.forget(&central)?;
            }
        }
        for (name, e) in wanted {
            let central = paths::join(dir, name);
            self.place_placeholder(&central, e)?;
        }
        Ok(())
    }

    fn matches(&self, central: &[u8], ft: std::fs::FileType, e: &DirEntry) -> bool {
        let Some(st) = &e.stat else {
            return true; // vanished while listing: leave what we have
        };
        match file_type(st.mode) {
            libc::S_IFDIR => ft.is_dir(),
            libc::S_IFLNK => ft.is_symlink(),
            libc::S_IFREG => {
                ft.is_file()
                    && match self.files.get(central) {
                        None => true, // a placeholder
                        Some(Content::Private) => true,
                        Some(Content::Object(s)) => *s == st.stamp(),
                    }
            }
            libc::S_IFIFO => ft.is_fifo(),
            _ => ft.is_file(),
        }
    }

    fn place_placeholder(&mut self, central: &[u8], e: &DirEntry) -> io::Result<()> {
        let Some(st) = &e.stat else { return Ok(()) };
        let node = self.node_path(central);
        let p = os(&node);
        let r = match file_type(st.mode) {
            libc::S_IFDIR => {
                let r = self.mkdir(p);
                if r.is_ok() {
                    self.dirs.insert(central.to_vec());
                }
                r
            }
            libc::S_IFLNK => self.link_placeholder(p, true),
            libc::S_IFIFO => {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(io::Error::from)
            }
            _ => self.link_placeholder(p, false),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    /// Makes sure a regular file (a placeholder unless content was placed)
    /// exists at `central`.
    pub(crate) fn placeholder(&mut self, central: &[u8]) -> io::Result<()> {
        if let Some((parent, _)) = paths::split(central) {
            let parent = parent.to_vec();
            self.ensure_dir(&parent)?;
        }
        let node = self.node_path(central);
        match std::fs::symlink_metadata(os(&node)) {
            Ok(m) if m.is_file() => return Ok(()),
            Ok(_) => self.forget(central)?,
            Err(_) => {}
        }
        match self.link_placeholder(os(&node), false) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    /// A placeholder at `p`: a hard link to a shared empty file, or to a
    /// shared symlink for a `symlink` (a name costs no inode, which matters
    /// for trees of 100k entries; a new shared one every
    /// [`PLACEHOLDER_LINKS`] links stays under the file system's link
    /// limit). The kernel never follows a mirror symlink for the job (the
    /// node rewrites paths to canonical, symlink-free mirror paths and
    /// answers `readlink` from central), so all of them share one target
    /// that leads nowhere.
    fn link_placeholder(&mut self, p: &Path, symlink: bool) -> io::Result<()> {
        let i = usize::from(symlink);
        if self.placeholder[i]
            .as_ref()
            .is_none_or(|(_, n)| *n >= PLACEHOLDER_LINKS)
        {
            let t = self.tmp_name();
            if symlink {
                std::os::unix::fs::symlink(".diatom-placeholder", &t)?;
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o444)
                    .open(&t)?;
                // The node's umask must not hide it from the job's user.
                std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o444))?;
            }
            self.placeholder[i] = Some((t, 0));
        }
        let Some((shared, n)) = &mut self.placeholder[i] else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        std::fs::hard_link(&*shared, p)?;
        *n += 1;
        Ok(())
    }

    /// Removes the mirror entry of `central` (a whole tree for a
    /// directory) and what the mirror knew about it.
    pub(crate) fn forget(&mut self, central: &[u8]) -> io::Result<()> {
        let central = paths::tidy(central);
        if central == b"/" {
            return Ok(());
        }
        let node = self.node_path(&central);
        self.dirs.retain(|d| !paths::is_under(d, &central));
        self.files.retain(|f, _| !paths::is_under(f, &central));
        remove_any(os(&node))
    }

    /// Puts `file` (a finished node file: a cache object, or a new private
    /// copy in tmp) at `central` as `content`: by hard link for an object
    /// (a copy when that fails), by rename for a private copy.
    pub(crate) fn place_file(
        &mut self,
        central: &[u8],
        file: &Path,
        content: Content,
    ) -> io::Result<()> {
        if let Some((parent, _)) = paths::split(central) {
            let parent = parent.to_vec();
            self.ensure_dir(&parent)?;
        }
        let node = self.node_path(central);
        let staged = match content {
            Content::Object(_) => {
                let t = self.tmp_name();
                if std::fs::hard_link(file, &t).is_err() {
                    std::fs::copy(file, &t)?;
                    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o555))?;
                }
                t
            }
            Content::Private => file.to_path_buf(),
        };
        if let Ok(m) = std::fs::symlink_metadata(os(&node)) {
            if m.is_dir() {
                self.forget(central)?;
            }
        }
        let r = std::fs::rename(&staged, os(&node));
        if r.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        r?;
        self.files.insert(central.to_vec(), content);
        Ok(())
    }

    /// Moves the regular mirror file of `from` to `to` (after central
    /// renamed it), with what it holds.
    pub(crate) fn rename_file(&mut self, from: &[u8], to: &[u8]) -> io::Result<()> {
        if let Some((parent, _)) = paths::split(to) {
            let parent = parent.to_vec();
            self.ensure_dir(&parent)?;
        }
        self.forget(to)?;
        std::fs::rename(os(&self.node_path(from)), os(&self.node_path(to)))?;
        if let Some(c) = self.files.remove(from) {
            self.files.insert(to.to_vec(), c);
        }
        Ok(())
    }

    /// A new empty private file in tmp, owned by the job's user, to fill
    /// and then [`place_file`](Self::place_file) as [`Content::Private`].
    pub(crate) fn new_private(&mut self) -> io::Result<(PathBuf, std::fs::File)> {
        let t = self.tmp_name();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&t)?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        Ok((t, f))
    }

    /// Moves the private copy placed at `central` back to `tmp` (an
    /// `O_TMPFILE` copy, once the program has it open): the mirror no
    /// longer has the name.
    pub(crate) fn take_back(&mut self, central: &[u8], tmp: &Path) -> io::Result<()> {
        self.files.remove(central);
        std::fs::rename(os(&self.node_path(central)), tmp)
    }

    /// Marks the private copy of `central` as no longer private (after its
    /// last write-back): the next open replaces it with central's content.
    pub(crate) fn release_private(&mut self, central: &[u8]) {
        if self.files.get(central) == Some(&Content::Private) {
            self.files.remove(central);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dscp_dicp::msg::fs::FileStat;

    fn entry(name: &str, mode: u32, link: Option<&str>) -> DirEntry {
        DirEntry {
            name: name.into(),
            stat: Some(FileStat {
                mode,
                ..Default::default()
            }),
            link: link.map(Into::into),
            no_xattrs: false,
        }
    }

    #[test]
    fn populate_makes_placeholders_and_follows_changes() {
        let base = std::env::temp_dir().join(format!("diatom-mirror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut m = Mirror::create(&base.join("root"), &base.join("tmp"), None).unwrap();
        let d = b"/c/d";
        m.populate(
            d,
            &[
                entry("f", libc::S_IFREG | 0o644, None),
                entry("g", libc::S_IFREG | 0o600, None),
                entry("sub", libc::S_IFDIR | 0o755, None),
                entry("l", libc::S_IFLNK | 0o777, Some("../x")),
                entry("p", libc::S_IFIFO | 0o644, None),
                entry("../evil", libc::S_IFREG, None),
            ],
        )
        .unwrap();
        let nd = base.join("root/c/d");
        let mut names: Vec<_> = std::fs::read_dir(&nd)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["f", "g", "l", "p", "sub"]);
        assert!(nd.join("sub").is_dir());
        assert!(std::fs::symlink_metadata(nd.join("l"))
            .unwrap()
            .file_type()
            .is_symlink());
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::symlink_metadata(nd.join(p)).unwrap().ino();
        assert_eq!(ino("f"), ino("g"), "placeholders share one inode");
        assert!(std::fs::symlink_metadata(nd.join("p"))
            .unwrap()
            .file_type()
            .is_fifo());
        // A real file placed, then a listing with another type for it.
        let obj = base.join("obj");
        std::fs::write(&obj, b"data").unwrap();
        let stamp = FileStamp {
            size: 4,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            dev: 1,
        };
        m.place_file(b"/c/d/f", &obj, Content::Object(stamp))
            .unwrap();
        assert_eq!(std::fs::read(nd.join("f")).unwrap(), b"data");
        m.populate(
            d,
            &[
                entry("f", libc::S_IFDIR | 0o755, None),
                entry("l", libc::S_IFLNK | 0o777, Some("y")),
            ],
        )
        .unwrap();
        assert!(nd.join("f").is_dir());
        assert_eq!(m.content(b"/c/d/f"), None);
        assert!(nd.join("l").symlink_metadata().unwrap().is_symlink());
        assert!(!nd.join("sub").exists());
        assert_eq!(
            m.central_of(nd.join("f").as_os_str().as_bytes()).unwrap(),
            b"/c/d/f"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
