//! The tracer handler a job runs under: what the node answers itself so the
//! program sees central's world rather than the node's.
//!
//! - Identity: `getuid` and friends report the caller's ids on central,
//!   while the job really runs as an unprivileged user on the node. The
//!   `set*id` family and `setgroups` succeed, doing nothing, when they ask
//!   for ids the job already has (what `posix_spawn`'s `RESETIDS` and
//!   privilege-dropping code do), and fail with `EPERM` otherwise: a job
//!   cannot change its identity, since the home serves it as the caller.
//! - `/proc/self/exe` (and `/proc/PID/exe` of a job process) names the
//!   program the user asked for, not the cached loader the node exec'd.
//! - Host name: `uname` reports central's host name as the nodename
//!   ([`JobHandler::with_hostname`]); the kernel (`uname -srvm`) stays the
//!   node's, as `docs/interface.md` says.
//!
//! - Files: with a [`FsLayer`] ([`JobHandler::with_fs`]), every file call
//!   is served from central (see `fs/`).
//!
//! - Network: with a [`NetLayer`] ([`JobHandler::with_net`]), the socket
//!   calls that name addresses go through central (see `net/`).

use std::collections::{HashMap, HashSet};

use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;
use tracer::{Action, Handler, NewTask, SyscallExit, SyscallSet, SyscallStop, TraceeMemory};

use super::fs::{FsConfig, FsLayer};
use super::members::Members;
use super::net::NetLayer;

/// The caller's identity on central, as getuid and friends must report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Per-job handler state.
#[derive(Debug)]
pub struct JobHandler {
    identity: Identity,
    /// The program the user asked for, as central names it.
    program: Vec<u8>,
    /// Processes still running the image the node started (the loader
    /// running the cached program), whose `/proc/self/exe` must be faked.
    launched: HashSet<Pid>,
    /// Thread id -> process id, for threads that fork.
    threads: HashMap<Pid, Pid>,
    /// The node's own exec of the loader has not been seen yet.
    first_exec_pending: bool,
    /// Transparent file access, when the job has it.
    fs: Option<FsLayer>,
    /// The network through central, when the job has it.
    net: Option<NetLayer>,
    /// Central's host name, reported as `uname`'s nodename when set.
    hostname: Option<Vec<u8>>,
    /// The job's processes, for the job's controls to signal.
    members: Members,
}

impl JobHandler {
    /// A handler for a job whose first process is `first`.
    pub fn new(identity: Identity, program: Vec<u8>) -> Self {
        Self {
            identity,
            program,
            launched: HashSet::new(),
            threads: HashMap::new(),
            first_exec_pending: true,
            fs: None,
            net: None,
            hostname: None,
            members: Members::default(),
        }
    }

    /// The subscriptions of a handler with a host name, a file layer
    /// configured by `fs` and a network layer (what the node's runner
    /// makes), known before the job's handler is: the node compiles its
    /// filter once and starts jobs' processes ahead of their launch.
    pub fn job_calls(fs: &FsConfig) -> SyscallSet {
        let mut s = Self::identity_calls();
        s.insert(Sysno::uname);
        s.extend_from(&FsLayer::calls(fs));
        s.extend_from(&NetLayer::calls());
        s
    }

    /// The identity calls every job's handler serves.
    fn identity_calls() -> SyscallSet {
        [
            Sysno::getuid,
            Sysno::geteuid,
            Sysno::getgid,
            Sysno::getegid,
            Sysno::getresuid,
            Sysno::getresgid,
            Sysno::getgroups,
            Sysno::setuid,
            Sysno::setgid,
            Sysno::setreuid,
            Sysno::setregid,
            Sysno::setresuid,
            Sysno::setresgid,
            Sysno::setfsuid,
            Sysno::setfsgid,
            Sysno::setgroups,
            Sysno::readlink,
            Sysno::readlinkat,
        ]
        .into_iter()
        .collect()
    }

    /// Serves the job's socket calls with `net`.
    pub fn with_net(mut self, net: NetLayer) -> Self {
        self.net = Some(net);
        self
    }

    /// Makes `uname` report `hostname` (central's) as the nodename. On a
    /// node that is its own machine (a VM, another host) the node's name
    /// would otherwise show through `hostname` and `gethostname`.
    pub fn with_hostname(mut self, hostname: Vec<u8>) -> Self {
        self.hostname = Some(hostname);
        self
    }

    /// Serves the job's file calls with `fs`.
    pub fn with_fs(mut self, fs: FsLayer) -> Self {
        self.fs = Some(fs);
        self
    }

    /// Keeps `members` up to date with the job's processes.
    pub fn with_members(mut self, members: Members) -> Self {
        self.members = members;
        self
    }

    /// The file layer, if any.
    pub fn fs_mut(&mut self) -> Option<&mut FsLayer> {
        self.fs.as_mut()
    }

    /// Records the job's first process once it is spawned.
    pub fn set_first_process(&mut self, pid: Pid) {
        self.launched.insert(pid);
        self.members.add(pid);
        if let Some(fs) = &mut self.fs {
            fs.set_first_process(pid);
        }
    }

    fn readlink(&mut self, stop: &mut SyscallStop<'_>, path_arg: usize) -> Action {
        let Ok(path) = stop.read_path_arg(path_arg) else {
            return self.delegate(stop);
        };
        let Some(program) = self.exe_for(stop.pid(), &path) else {
            return self.delegate(stop);
        };
        let buf = stop.arg(path_arg + 1);
        let size = stop.arg(path_arg + 2) as usize;
        if (size as i64) <= 0 {
            return Action::errno(Errno::EINVAL);
        }
        let n = program.len().min(size);
        match stop.memory().write_all(buf, &program[..n]) {
            Ok(()) => Action::Return(n as i64),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }

    fn delegate(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        match &mut self.fs {
            Some(fs) => fs.handle_syscall(stop),
            None => Action::Continue,
        }
    }

    /// The central program `/proc/PID/exe` (`path`) must name for `caller`.
    fn exe_for(&self, caller: Pid, path: &[u8]) -> Option<Vec<u8>> {
        let rest = path.strip_prefix(b"/proc/")?;
        let who = rest.strip_suffix(b"/exe")?;
        let pid = if who == b"self" || who == b"thread-self" {
            caller
        } else {
            // The job names its processes by the pids of its own PID
            // namespace; the tracer knows them by the node's.
            let n = std::str::from_utf8(who).ok()?.parse::<i32>().ok()?;
            crate::sandbox::host_pid(caller, n, &self.members.pids())
        };
        if let Some(exe) = self.fs.as_ref().and_then(|f| f.exe_of(pid)) {
            return Some(exe.to_vec());
        }
        self.launched.contains(&pid).then(|| self.program.clone())
    }

    /// `uname`: the node's answer with central's host name as nodename
    /// (cut to the 64 bytes the field holds before its NUL).
    fn uname(stop: &SyscallStop<'_>, hostname: &[u8]) -> Action {
        // SAFETY: utsname is plain bytes, valid zeroed; uname fills it.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: a valid, writable utsname.
        if unsafe { libc::uname(&mut u) } != 0 {
            return Action::errno(Errno::last());
        }
        u.nodename = [0; 65];
        for (d, s) in u.nodename.iter_mut().zip(hostname.iter().take(64)) {
            *d = *s as libc::c_char;
        }
        match stop.memory().write_value(stop.arg(0), &u) {
            Ok(()) => Action::Return(0),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }

    fn write_ids(stop: &SyscallStop<'_>, id: u32) -> Action {
        let mem = stop.memory();
        for i in 0..3 {
            if mem.write_value(stop.arg(i), &id).is_err() {
                return Action::errno(Errno::EFAULT);
            }
        }
        Action::Return(0)
    }

    /// `setuid`/`setgid` family: success for the ids the job has (`-1`
    /// keeps one), `EPERM` for any other. `nargs` ids are in the arguments.
    fn set_ids(stop: &SyscallStop<'_>, nargs: usize, id: u32) -> Action {
        let keeps = |a: u64| a as u32 == u32::MAX || a as u32 == id;
        if (0..nargs).all(|i| keeps(stop.arg(i))) {
            Action::Return(0)
        } else {
            Action::errno(Errno::EPERM)
        }
    }

    /// `setgroups`: success when asked for the groups the job has.
    fn setgroups(&self, stop: &SyscallStop<'_>) -> Action {
        let n = stop.arg(0) as usize;
        if n > 65536 {
            return Action::errno(Errno::EINVAL);
        }
        let Ok(bytes) = stop.memory().read_bytes(stop.arg(1), 4 * n) else {
            return Action::errno(Errno::EFAULT);
        };
        let mut asked: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut have = self.identity.groups.clone();
        asked.sort_unstable();
        asked.dedup();
        have.sort_unstable();
        have.dedup();
        if asked == have {
            Action::Return(0)
        } else {
            Action::errno(Errno::EPERM)
        }
    }

    fn getgroups(&self, stop: &SyscallStop<'_>) -> Action {
        let size = stop.arg(0) as i32;
        let n = self.identity.groups.len();
        if size == 0 {
            return Action::Return(n as i64);
        }
        if size < 0 || (size as usize) < n {
            return Action::errno(Errno::EINVAL);
        }
        let bytes: Vec<u8> = self
            .identity
            .groups
            .iter()
            .flat_map(|g| g.to_ne_bytes())
            .collect();
        match stop.memory().write_all(stop.arg(1), &bytes) {
            Ok(()) => Action::Return(n as i64),
            Err(_) => Action::errno(Errno::EFAULT),
        }
    }
}

impl Handler for JobHandler {
    fn subscriptions(&self) -> SyscallSet {
        let mut s = Self::identity_calls();
        if self.hostname.is_some() {
            s.insert(Sysno::uname);
        }
        if let Some(fs) = &self.fs {
            s.extend_from(&fs.subscriptions());
        }
        if let Some(net) = &self.net {
            s.extend_from(&net.subscriptions());
        }
        s
    }

    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        match stop.sysno() {
            Some(Sysno::getuid | Sysno::geteuid) => Action::Return(i64::from(self.identity.uid)),
            Some(Sysno::getgid | Sysno::getegid) => Action::Return(i64::from(self.identity.gid)),
            Some(Sysno::getresuid) => Self::write_ids(stop, self.identity.uid),
            Some(Sysno::getresgid) => Self::write_ids(stop, self.identity.gid),
            Some(Sysno::getgroups) => self.getgroups(stop),
            Some(Sysno::setuid) => Self::set_ids(stop, 1, self.identity.uid),
            Some(Sysno::setgid) => Self::set_ids(stop, 1, self.identity.gid),
            Some(Sysno::setreuid) => Self::set_ids(stop, 2, self.identity.uid),
            Some(Sysno::setregid) => Self::set_ids(stop, 2, self.identity.gid),
            Some(Sysno::setresuid) => Self::set_ids(stop, 3, self.identity.uid),
            Some(Sysno::setresgid) => Self::set_ids(stop, 3, self.identity.gid),
            // They return the previous id and never fail; nothing changes.
            Some(Sysno::setfsuid) => Action::Return(i64::from(self.identity.uid)),
            Some(Sysno::setfsgid) => Action::Return(i64::from(self.identity.gid)),
            Some(Sysno::setgroups) => self.setgroups(stop),
            Some(Sysno::readlink) => self.readlink(stop, 0),
            Some(Sysno::readlinkat) => self.readlink(stop, 1),
            Some(Sysno::uname) => match &self.hostname {
                Some(h) => Self::uname(stop, h),
                None => Action::Continue,
            },
            Some(nr) if NetLayer::serves(nr) && self.net.is_some() => match &mut self.net {
                Some(net) => net.handle_syscall(stop),
                None => Action::Continue,
            },
            _ => self.delegate(stop),
        }
    }

    fn handle_exit(&mut self, exit: &mut SyscallExit<'_>) {
        if let Some(net) = &mut self.net {
            net.handle_exit(exit);
        }
        if let Some(fs) = &mut self.fs {
            fs.handle_exit(exit);
        }
    }

    fn on_new_task(&mut self, tid: Pid, tgid: Pid, parent: Pid, kind: NewTask) {
        let parent_process = self.threads.get(&parent).copied().unwrap_or(parent);
        if let Some(fs) = &mut self.fs {
            fs.on_new_task(tid, tgid, parent_process, kind);
        }
        if kind == NewTask::Thread {
            self.threads.insert(tid, tgid);
            return;
        }
        self.members.add(tgid);
        // A forked child runs its parent's image until it execs.
        if self.launched.contains(&parent_process) {
            self.launched.insert(tgid);
        }
    }

    fn on_exec(&mut self, pid: Pid, _former_tid: Pid) {
        if let Some(fs) = &mut self.fs {
            fs.on_exec(pid);
        }
        // The first exec is the node starting the cached program itself.
        if self.first_exec_pending && self.launched.contains(&pid) {
            self.first_exec_pending = false;
            // So that an exec of /proc/self/exe (by it or a forked child)
            // runs the program again, not the node's loader.
            if let Some(fs) = &mut self.fs {
                fs.set_program_of(pid, self.program.clone());
            }
            return;
        }
        self.launched.remove(&pid);
        self.threads.retain(|_, p| *p != pid);
    }

    fn on_exit(&mut self, tid: Pid, tgid: Pid, _status: tracer::ExitStatus) {
        self.threads.remove(&tid);
        if let Some(net) = &mut self.net {
            net.on_exit(tid, tgid);
        }
        if let Some(fs) = &mut self.fs {
            fs.on_exit(tid, tgid);
        }
        if tid == tgid {
            self.launched.remove(&tgid);
            self.members.remove(tgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_traced(handler: JobHandler, prog: &str, args: &[&str]) -> (tracer::ExitStatus, String) {
        let dir = std::env::temp_dir().join(format!(
            "diatom-handler-{}-{}",
            std::process::id(),
            args.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let mut cmd = tracer::Command::new("/bin/sh");
        let script = format!("{prog} {} > {}", args.join(" "), out.display());
        cmd.args(["-c", &script]);
        let mut t = cmd.spawn(handler).unwrap();
        let pid = t.pid();
        t.handler_mut().set_first_process(pid);
        let status = t.run().unwrap();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        (status, text)
    }

    #[test]
    fn ids_are_the_callers() {
        let h = JobHandler::new(
            Identity {
                uid: 4242,
                gid: 4343,
                groups: vec![4343, 7],
            },
            b"/usr/bin/id".to_vec(),
        );
        let (status, out) = run_traced(h, "id", &[]);
        assert_eq!(status, tracer::ExitStatus::Exited(0));
        assert!(out.starts_with("uid=4242 gid=4343 groups=4343,7"), "{out}");
    }

    #[test]
    fn uname_reports_centrals_host_name_and_the_nodes_kernel() {
        let h = JobHandler::new(
            Identity {
                uid: 0,
                gid: 0,
                groups: vec![],
            },
            b"/usr/bin/uname".to_vec(),
        )
        .with_hostname(b"central-host".to_vec());
        let (status, out) = run_traced(h, "uname", &["-n", "-r"]);
        assert_eq!(status, tracer::ExitStatus::Exited(0));
        let release = nix::sys::utsname::uname().unwrap();
        assert_eq!(
            out,
            format!("central-host {}\n", release.release().to_string_lossy())
        );
    }

    #[test]
    fn setting_the_ids_the_job_has_succeeds_and_others_fail() {
        let h = JobHandler::new(
            Identity {
                uid: 4242,
                gid: 4343,
                groups: vec![7, 4343],
            },
            b"/usr/bin/python3".to_vec(),
        );
        // Each call prints "ok" or its errno name; the last line shows the
        // ids did not move.
        let script = "'import os\n\
            def t(f, *a):\n\
            \x20   try: f(*a); print(\"ok\")\n\
            \x20   except OSError as e: print(os.strerror(e.errno))\n\
            t(os.setuid, 4242); t(os.seteuid, 4242); t(os.setresuid, -1, 4242, -1)\n\
            t(os.setgid, 4343); t(os.setregid, 4343, -1); t(os.setgroups, [4343, 7])\n\
            t(os.setuid, 0); t(os.setresgid, 1, 1, 1); t(os.setgroups, [0])\n\
            print(os.getresuid(), os.getresgid())'";
        let (status, out) = run_traced(h, "python3 -c", &[script]);
        assert_eq!(status, tracer::ExitStatus::Exited(0), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..6], ["ok"; 6], "{out}");
        assert_eq!(lines[6..9], ["Operation not permitted"; 3], "{out}");
        assert_eq!(lines[9], "(4242, 4242, 4242) (4343, 4343, 4343)", "{out}");
    }

    #[test]
    fn proc_self_exe_names_the_program_until_exec() {
        // python3 is the launched image: its readlink of /proc/self/exe and
        // that of a forked child are answered; a program it execs sees its own.
        let dir = std::env::temp_dir().join(format!("diatom-exe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let code = format!(
            "import os,subprocess\n\
             f=open('{o}','w')\n\
             f.write(os.readlink('/proc/self/exe')+'\\n')\n\
             f.write(os.readlink('/proc/%d/exe' % os.getpid())+'\\n')\n\
             r,w=os.pipe()\n\
             pid=os.fork()\n\
             if pid==0:\n    os.write(w,os.readlink('/proc/self/exe').encode()); os._exit(0)\n\
             os.waitpid(pid,0); f.write(os.read(r,4096).decode()+'\\n')\n\
             f.write(subprocess.run(['readlink','/proc/self/exe'],capture_output=True,text=True).stdout)\n",
            o = out.display()
        );
        let h = JobHandler::new(
            Identity {
                uid: 0,
                gid: 0,
                groups: vec![],
            },
            b"/central/bin/prog".to_vec(),
        );
        let mut cmd = tracer::Command::new("/usr/bin/python3");
        cmd.args(["-c", &code]);
        let mut t = cmd.spawn(h).unwrap();
        let pid = t.pid();
        t.handler_mut().set_first_process(pid);
        assert_eq!(t.run().unwrap(), tracer::ExitStatus::Exited(0));
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let real = std::fs::canonicalize("/usr/bin/readlink").unwrap();
        assert_eq!(
            lines,
            [
                "/central/bin/prog",
                "/central/bin/prog",
                "/central/bin/prog",
                real.to_str().unwrap()
            ],
            "{text}"
        );
    }
}
