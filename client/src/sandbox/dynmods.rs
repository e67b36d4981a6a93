//! The kernel's `favordynmods` cgroup option: moving a process into a
//! cgroup (every job's PID 1 joins its own) takes the global
//! `cgroup_threadgroup_rwsem` for writing, which by default waits for an
//! RCU grace period when no migration happened in the last few
//! milliseconds: 5–15 ms on an idle node, on every job's critical path
//! (back-to-back jobs keep it warm and hide it). With `favordynmods` on
//! any cgroup2 mount the semaphore stays in its slow-reader mode: the
//! migration takes ~0.1 ms, and forks and exits pay an atomic operation
//! instead of a per-CPU one (the trade the kernel documents for hosts that
//! move processes between cgroups often, as a node does).
//!
//! The option belongs to the cgroup2 superblock, and a remount applies the
//! whole option set it is given, so the current options are read from
//! mountinfo and passed back with `favordynmods` added. cgroup v1
//! hierarchies cannot change it on a remount; a node with no cgroup2
//! mount keeps the slow migrations (logged).

use std::ffi::CString;

/// What [`favor`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The option was already on.
    AlreadyOn,
    /// This call turned it on at the named mount point.
    TurnedOn(String),
    /// No cgroup2 file system is mounted here.
    NoCgroup2,
}

/// A cgroup2 mount as mountinfo describes it.
#[derive(Debug, PartialEq, Eq)]
struct Cgroup2Mount {
    point: String,
    /// Per-mount options (`rw,nosuid,nodev,noexec,relatime`).
    mount_opts: String,
    /// Superblock options (`rw,nsdelegate,memory_recursiveprot`).
    super_opts: String,
}

/// The first cgroup2 mount of a mountinfo text.
fn find_cgroup2(mountinfo: &str) -> Option<Cgroup2Mount> {
    mountinfo.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let dash = f.iter().position(|x| *x == "-")?;
        if *f.get(dash + 1)? != "cgroup2" {
            return None;
        }
        Some(Cgroup2Mount {
            point: super::cgroup::unescape(f.get(4)?),
            mount_opts: (*f.get(5)?).to_string(),
            super_opts: (*f.get(dash + 3)?).to_string(),
        })
    })
}

/// The remount's data: the superblock's own options (not `rw`/`ro`, which
/// are mount flags) plus `favordynmods`; None when it is already there.
fn remount_data(super_opts: &str) -> Option<String> {
    let opts: Vec<&str> = super_opts
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    if opts.contains(&"favordynmods") {
        return None;
    }
    let mut data = opts.join(",");
    if !data.is_empty() {
        data.push(',');
    }
    data.push_str("favordynmods");
    Some(data)
}

/// The `MS_*` flags that keep a mount's per-mount options as they are
/// (a remount sets them all).
fn mount_flags(mount_opts: &str) -> libc::c_ulong {
    mount_opts
        .split(',')
        .map(|o| match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "strictatime" => libc::MS_STRICTATIME,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// Turns `favordynmods` on for the host's cgroups (see the module
/// documentation). Needs CAP_SYS_ADMIN in the initial cgroup namespace.
pub fn favor() -> std::io::Result<Outcome> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let Some(m) = find_cgroup2(&text) else {
        return Ok(Outcome::NoCgroup2);
    };
    let Some(data) = remount_data(&m.super_opts) else {
        return Ok(Outcome::AlreadyOn);
    };
    let nul = |s: &str| CString::new(s).map_err(|_| std::io::ErrorKind::InvalidInput);
    let (point, data_c) = (nul(&m.point)?, nul(&data)?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            point.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | mount_flags(&m.mount_opts),
            data_c.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Outcome::TurnedOn(m.point))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:15 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn the_cgroup2_mount_and_its_two_option_sets_are_found() {
        assert_eq!(
            find_cgroup2(HYBRID),
            Some(Cgroup2Mount {
                point: "/sys/fs/cgroup/unified".into(),
                mount_opts: "rw,nosuid,nodev,noexec,relatime".into(),
                super_opts: "rw,nsdelegate,memory_recursiveprot".into(),
            })
        );
        assert_eq!(find_cgroup2(&HYBRID[..HYBRID.find("36 ").unwrap()]), None);
    }

    #[test]
    fn the_remount_keeps_every_superblock_option() {
        assert_eq!(
            remount_data("rw,nsdelegate,memory_recursiveprot").as_deref(),
            Some("nsdelegate,memory_recursiveprot,favordynmods")
        );
        assert_eq!(remount_data("rw").as_deref(), Some("favordynmods"));
        assert_eq!(remount_data("rw,favordynmods,nsdelegate"), None);
    }

    #[test]
    fn per_mount_options_become_their_flags() {
        assert_eq!(
            mount_flags("rw,nosuid,nodev,noexec,relatime"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME
        );
        assert_eq!(
            mount_flags("ro,noatime"),
            libc::MS_RDONLY | libc::MS_NOATIME
        );
    }
}
