//! One cgroup per job: finding the node's hierarchy (cgroup v2 when its
//! memory and pids controllers are on cgroup2, else the v1 memory, pids and
//! cpu hierarchies), making `diatom/<daemon pid>-<job>` with the job's
//! limits, reading what the kernel counted (OOM kills, refused forks), and
//! killing and removing it when the job ends.
//!
//! Everything is plain file I/O under a root directory, so the tests run it
//! over a temporary directory laid out like cgroupfs as well as over the
//! real one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SandboxError;

/// Where the node's controllers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 mounted here, with the memory and pids controllers.
    V2(PathBuf),
    /// cgroup v1 hierarchies (a hierarchy may carry several controllers).
    V1 {
        /// The hierarchy with `memory`.
        memory: PathBuf,
        /// The hierarchy with `pids`.
        pids: PathBuf,
        /// The hierarchy with `cpu`, if mounted.
        cpu: Option<PathBuf>,
    },
}

impl Layout {
    /// Finds the node's hierarchy from `/proc/self/mountinfo`.
    pub fn detect() -> Option<Layout> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_mountinfo(&text)
    }

    /// Finds the hierarchy described by a mountinfo text: cgroup2 if its
    /// `cgroup.controllers` lists memory and pids, else v1.
    pub fn from_mountinfo(text: &str) -> Option<Layout> {
        let mut v1_memory = None;
        let mut v1_pids = None;
        let mut v1_cpu = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(point), Some(fstype), Some(opts)) =
                (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
            else {
                continue;
            };
            let point = PathBuf::from(unescape(point));
            match *fstype {
                "cgroup2" => {
                    let ctl =
                        fs::read_to_string(point.join("cgroup.controllers")).unwrap_or_default();
                    let has = |c: &str| ctl.split_whitespace().any(|w| w == c);
                    if has("memory") && has("pids") {
                        return Some(Layout::V2(point));
                    }
                }
                "cgroup" => {
                    for o in opts.split(',') {
                        match o {
                            "memory" => v1_memory = Some(point.clone()),
                            "pids" => v1_pids = Some(point.clone()),
                            "cpu" => v1_cpu = Some(point.clone()),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Layout::V1 {
            memory: v1_memory?,
            pids: v1_pids?,
            cpu: v1_cpu,
        })
    }

    /// `v2` or `v1`, for messages.
    pub fn version(&self) -> &'static str {
        match self {
            Layout::V2(_) => "v2",
            Layout::V1 { .. } => "v1",
        }
    }

    /// The `diatom` directories jobs go under, one per hierarchy.
    fn parents(&self) -> Vec<PathBuf> {
        let mut v = match self {
            Layout::V2(root) => vec![root.join("diatom")],
            Layout::V1 { memory, pids, cpu } => {
                let mut v = vec![memory.join("diatom"), pids.join("diatom")];
                v.extend(cpu.iter().map(|c| c.join("diatom")));
                v
            }
        };
        v.dedup();
        v
    }

    /// Makes the `diatom` parents (enabling the v2 controllers for their
    /// children) and removes the empty job groups daemons that are gone
    /// left (a group is named `<daemon pid>-<job>`).
    pub fn prepare(&self) -> Result<(), SandboxError> {
        if let Layout::V2(root) = self {
            // Children of root get the controllers from root's subtree_control.
            enable_controllers(root)?;
        }
        for p in self.parents() {
            make_dir(&p)?;
            if let Layout::V2(_) = self {
                enable_controllers(&p)?;
            }
            if let Ok(entries) = fs::read_dir(&p) {
                for e in entries.flatten() {
                    // Another live daemon's group may be empty for a moment
                    // (made, its job not yet in it): not ours to remove.
                    if e.file_type().is_ok_and(|t| t.is_dir()) && !owner_alive(&e.file_name()) {
                        // Fails (EBUSY) while processes are in it: kept.
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a job group's name (`<daemon pid>-<job>`) names a daemon other
/// than this one that still runs (several node daemons may share a host's
/// cgroups: the tests run many).
fn owner_alive(name: &std::ffi::OsStr) -> bool {
    let Some(pid) = name
        .to_str()
        .and_then(|n| n.split_once('-'))
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Octal escapes of mountinfo (`\040` for a space).
pub(super) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn enable_controllers(dir: &Path) -> Result<(), SandboxError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "pids", "cpu"]
        .iter()
        .filter(|c| available.split_whitespace().any(|w| w == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
}

fn make_dir(p: &Path) -> Result<(), SandboxError> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(SandboxError::Cgroup {
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn write(p: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(p, value).map_err(|source| SandboxError::Cgroup {
        path: p.to_path_buf(),
        source,
    })
}

/// The limits a job's cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory, bytes.
    pub memory: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// What the kernel counted in a job's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// Processes the OOM killer killed for the memory limit.
    pub oom_kills: u64,
    /// Forks and clones refused by `pids.max`.
    pub pids_max: u64,
}

/// A job's cgroup (one directory per hierarchy).
#[derive(Debug)]
pub struct JobCgroup {
    v2: bool,
    /// Every directory of the job (v1: one per hierarchy).
    dirs: Vec<PathBuf>,
    memory: PathBuf,
    pids: PathBuf,
    limits: CgroupLimits,
    /// `limits` and the CPU weight are written (a spare made with the
    /// node's usual limits, see `NodeSandbox::usual_limits`).
    written: bool,
    /// Each directory's `cgroup.procs`, opened when the group is made (a
    /// spare ahead of its job): joining the group is then one write per
    /// hierarchy.
    procs: Vec<fs::File>,
}

impl JobCgroup {
    /// Makes the job's group `name` under each `diatom` parent of `layout`
    /// (see [`Layout::prepare`]) and writes its limits and CPU weight
    /// (every job the same weight: with all slots busy each job gets an
    /// equal share of the node's CPUs).
    pub fn create(layout: &Layout, name: &str, limits: CgroupLimits) -> Result<Self, SandboxError> {
        let mut cg = Self::make(layout, name)?;
        cg.set_limits(layout, limits)?;
        Ok(cg)
    }

    /// Makes the group `name` without limits (a spare, see
    /// [`JobCgroup::set_limits`]).
    pub fn make(layout: &Layout, name: &str) -> Result<Self, SandboxError> {
        let dirs: Vec<PathBuf> = layout.parents().iter().map(|p| p.join(name)).collect();
        let under = |root: &Path| root.join("diatom").join(name);
        let (memory, pids) = match layout {
            Layout::V2(root) => (under(root), under(root)),
            Layout::V1 { memory, pids, .. } => (under(memory), under(pids)),
        };
        let mut cg = JobCgroup {
            v2: matches!(layout, Layout::V2(_)),
            dirs,
            memory,
            pids,
            limits: CgroupLimits { memory: 0, pids: 0 },
            written: false,
            procs: Vec::new(),
        };
        for d in &cg.dirs {
            make_dir(d)?;
            let path = d.join("cgroup.procs");
            // (create: as `fs::write` would; cgroupfs has the file.)
            match fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
            {
                Ok(f) => cg.procs.push(f),
                Err(source) => return Err(SandboxError::Cgroup { path, source }),
            }
        }
        Ok(cg)
    }

    /// Writes the job's limits and CPU weight (before any process joins).
    pub fn set_limits(
        &mut self,
        layout: &Layout,
        limits: CgroupLimits,
    ) -> Result<(), SandboxError> {
        if self.written && self.limits == limits {
            // Written when the group was made (no process has been in it).
            return Ok(());
        }
        let under = |root: &Path| root.join("diatom").join(self.name());
        let cg = &*self;
        if cg.v2 {
            write(&cg.memory.join("memory.max"), &limits.memory.to_string())?;
            // No swap beyond the limit, if the node swaps at all.
            let _ = fs::write(cg.memory.join("memory.swap.max"), "0");
            // An OOM kill takes the whole job, as on v1 (see the runner).
            let _ = fs::write(cg.memory.join("memory.oom.group"), "1");
            write(&cg.pids.join("pids.max"), &limits.pids.to_string())?;
            let _ = fs::write(cg.memory.join("cpu.weight"), "100");
        } else {
            write(
                &cg.memory.join("memory.limit_in_bytes"),
                &limits.memory.to_string(),
            )?;
            // memsw (memory + swap) exists only with swap accounting on.
            let memsw = cg.memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &limits.memory.to_string())?;
            }
            write(&cg.pids.join("pids.max"), &limits.pids.to_string())?;
            if let Layout::V1 { cpu: Some(c), .. } = layout {
                let _ = fs::write(under(c).join("cpu.shares"), "1024");
            }
        }
        self.limits = limits;
        self.written = true;
        Ok(())
    }

    /// The group's name (the same in every hierarchy).
    fn name(&self) -> std::ffi::OsString {
        self.memory.file_name().unwrap_or_default().to_os_string()
    }

    /// The limits it was made with.
    pub fn limits(&self) -> CgroupLimits {
        self.limits
    }

    /// The directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves process `pid` (and so its future children) into the group.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        use std::io::Write;
        let pid = pid.to_string();
        for mut f in &self.procs {
            // One write, one pid: cgroupfs ignores the offset.
            f.write_all(pid.as_bytes())?;
        }
        Ok(())
    }

    /// What the kernel counted so far.
    pub fn events(&self) -> Events {
        let oom_file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        Events {
            oom_kills: counter(&self.memory.join(oom_file), "oom_kill"),
            pids_max: counter(&self.pids.join("pids.events"), "max"),
        }
    }

    /// The processes in the group now.
    pub fn procs(&self) -> Vec<i32> {
        let mut v: Vec<i32> = Vec::new();
        for d in &self.dirs {
            if let Ok(t) = fs::read_to_string(d.join("cgroup.procs")) {
                v.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Kills every process in the group and waits (up to `wait`) until it
    /// is empty. Returns whether it is.
    pub fn kill_all(&self, wait: Duration) -> bool {
        if self.v2 && fs::write(self.pids.join("cgroup.kill"), "1").is_ok() {
            // cgroup.kill (Linux 5.14) kills the group atomically.
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                return true;
            }
            for p in procs {
                if p > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills what is left and removes the group's directories.
    pub fn remove(&self) -> Result<(), SandboxError> {
        self.kill_all(Duration::from_secs(5));
        let mut last = Ok(());
        for d in &self.dirs {
            // A killed process leaves the group only once reaped (on a
            // loaded machine, after a fork bomb, seconds later): retry.
            let mut tries = 0;
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(source) => {
                        last = Err(SandboxError::Cgroup {
                            path: d.clone(),
                            source,
                        });
                        break;
                    }
                }
            }
        }
        last
    }
}

/// The number after `key` in a `key value` lines file (0 if absent).
fn counter(file: &Path, key: &str) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key))
                    .then(|| it.next()?.parse().ok())
                    .flatten()
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("diatom-cg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn v2_is_chosen_when_cgroup2_has_the_controllers() {
        let d = temp("detect");
        let v2 = d.join("unified");
        fs::create_dir_all(&v2).unwrap();
        fs::write(v2.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let info = format!(
            "30 25 0:26 / {} rw,nosuid - cgroup2 cgroup2 rw\n\
             31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             32 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
            v2.display()
        );
        assert_eq!(Layout::from_mountinfo(&info), Some(Layout::V2(v2.clone())));
        // Without controllers on cgroup2 (this CI machine's hybrid layout): v1.
        fs::write(v2.join("cgroup.controllers"), "\n").unwrap();
        let info = info.replace(
            "rw,pids\n",
            "rw,pids\n33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(
            Layout::from_mountinfo(&info),
            Some(Layout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
            })
        );
        // Neither: no cgroups.
        assert_eq!(
            Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
        fs::remove_dir_all(&d).unwrap();
    }

    /// The v2 path over a directory laid out like cgroupfs: the files the
    /// kernel would read are written, the counters it writes are read.
    #[test]
    fn v2_limits_and_events_over_a_fake_cgroupfs() {
        let root = temp("v2");
        fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let layout = Layout::V2(root.clone());
        layout.prepare().unwrap();
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        // A real cgroupfs fills a new group's controller list itself.
        fs::write(root.join("diatom/cgroup.controllers"), "cpu memory pids\n").unwrap();
        layout.prepare().unwrap();
        let limits = CgroupLimits {
            memory: 512 << 20,
            pids: 64,
        };
        let cg = JobCgroup::create(&layout, "1-7", limits).unwrap();
        let dir = root.join("diatom/1-7");
        assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            "536870912"
        );
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "64");
        assert_eq!(
            fs::read_to_string(dir.join("memory.oom.group")).unwrap(),
            "1"
        );
        assert_eq!(cg.events(), Events::default());
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(dir.join("pids.events"), "max 3\n").unwrap();
        assert_eq!(
            cg.events(),
            Events {
                oom_kills: 1,
                pids_max: 3
            }
        );
        cg.add(4242).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
            "4242"
        );
        // A spare made with the usual limits: a job with those writes
        // nothing, one with others writes them.
        let mut spare = JobCgroup::create(&layout, "1-spare0", limits).unwrap();
        let spare_dir = root.join("diatom/1-spare0");
        fs::write(spare_dir.join("pids.max"), "unchanged").unwrap();
        spare.set_limits(&layout, limits).unwrap();
        assert_eq!(
            fs::read_to_string(spare_dir.join("pids.max")).unwrap(),
            "unchanged"
        );
        let lower = CgroupLimits { pids: 8, ..limits };
        spare.set_limits(&layout, lower).unwrap();
        assert_eq!(fs::read_to_string(spare_dir.join("pids.max")).unwrap(), "8");
        assert_eq!(spare.limits(), lower);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_limits_and_events_over_a_fake_cgroupfs() {
        let root = temp("v1");
        let layout = Layout::V1 {
            memory: root.join("memory"),
            pids: root.join("pids"),
            cpu: Some(root.join("cpu")),
        };
        for h in ["memory", "pids", "cpu"] {
            fs::create_dir_all(root.join(h)).unwrap();
        }
        layout.prepare().unwrap();
        let cg = JobCgroup::create(
            &layout,
            "1-8",
            CgroupLimits {
                memory: 1 << 30,
                pids: 100,
            },
        )
        .unwrap();
        assert_eq!(cg.dirs().len(), 3);
        let m = root.join("memory/diatom/1-8");
        assert_eq!(
            fs::read_to_string(m.join("memory.limit_in_bytes")).unwrap(),
            "1073741824"
        );
        assert_eq!(
            fs::read_to_string(root.join("pids/diatom/1-8/pids.max")).unwrap(),
            "100"
        );
        assert_eq!(
            fs::read_to_string(root.join("cpu/diatom/1-8/cpu.shares")).unwrap(),
            "1024"
        );
        fs::write(
            m.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.events().oom_kills, 2);
        // Restarting cleans up the empty groups of daemons that are gone
        // (no pid is that high), never a live daemon's (pid 1 always is).
        let dead = root.join("pids/diatom/999999999-3");
        let live = root.join("pids/diatom/1-4");
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&live).unwrap();
        layout.prepare().unwrap();
        assert!(!dead.exists() && live.exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
