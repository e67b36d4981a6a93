//! `execve`/`execveat` of central programs: the home says what the start
//! needs ([`ExecImage`]), the node makes sure every file is cached, and the
//! call is rewritten to exec the cached loader with the cached program, as
//! the job's first start does (`launch.rs`). [`plan`] is shared with the
//! runner's launch.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use dscp_dicp::msg::fs::{Request, Response};
use dscp_dicp::msg::job::ExecImage;
use dscp_dicp::msg::Blob;
use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;
use tracer::{Action, SyscallStop, TraceeMemory, SCRATCH_SIZE};

use super::super::launch::{self, LibraryLink, LocalExec};
use super::{fetch, FsLayer, Where};

/// Most argv or envp entries read from a tracee.
const MAX_ARGS: usize = 1 << 17;
/// Longest argument (the kernel's `MAX_ARG_STRLEN`).
const MAX_ARG_LEN: usize = 32 * 4096;

/// Maps an image's files (central paths) to the cache objects holding
/// them and builds the node's exec plan.
pub fn plan(image: &ExecImage, objects: &HashMap<Blob, PathBuf>) -> Result<LocalExec, String> {
    let object = |p: &Blob| {
        objects.get(p).cloned().ok_or_else(|| {
            format!(
                "{} is not among the shipped files",
                String::from_utf8_lossy(p)
            )
        })
    };
    let mut libraries = Vec::new();
    for (name, path) in &image.libraries {
        libraries.push(LibraryLink {
            name: OsString::from_vec(name.0.clone()),
            object: object(path)?,
        });
    }
    let preload = image.preload.iter().map(object).collect::<Result<_, _>>()?;
    Ok(LocalExec {
        preload,
        program: object(&image.program)?,
        loader: image.interpreter.as_ref().map(object).transpose()?,
        libraries,
        argv: image
            .argv
            .iter()
            .map(|a| OsString::from_vec(a.0.clone()))
            .collect(),
    })
}

/// Which central program each process runs (for `/proc/PID/exe`).
#[derive(Debug)]
pub(crate) struct ExecState {
    /// The job's first process, whose first exec is the node's own.
    pub first: Option<Pid>,
    first_done: bool,
    exe: HashMap<Pid, Vec<u8>>,
    pending: HashMap<Pid, Vec<u8>>,
}

impl ExecState {
    pub(crate) fn new() -> Self {
        Self {
            first: None,
            first_done: false,
            exe: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    pub(crate) fn exe_of(&self, pid: Pid) -> Option<&[u8]> {
        self.exe.get(&pid).map(|v| &v[..])
    }

    pub(crate) fn set_program_of(&mut self, pid: Pid, program: Vec<u8>) {
        self.exe.insert(pid, program);
    }

    pub(crate) fn on_exec(&mut self, pid: Pid) {
        match self.pending.remove(&pid) {
            Some(p) => {
                self.exe.insert(pid, p);
            }
            None => {
                self.exe.remove(&pid);
            }
        }
    }

    pub(crate) fn on_fork(&mut self, parent: Pid, child: Pid) {
        if let Some(p) = self.exe.get(&parent).cloned() {
            self.exe.insert(child, p);
        }
    }

    pub(crate) fn on_exit(&mut self, pid: Pid) {
        self.exe.remove(&pid);
        self.pending.remove(&pid);
    }
}

fn read_vec(mem: &dyn TraceeMemory, addr: u64) -> Result<Vec<Blob>, Errno> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    for i in 0..MAX_ARGS {
        let mut p = [0u8; 8];
        mem.read_exact(addr + 8 * i as u64, &mut p)
            .map_err(|e| e.errno())?;
        let p = u64::from_ne_bytes(p);
        if p == 0 {
            return Ok(out);
        }
        let s = mem.read_cstr(p, MAX_ARG_LEN).map_err(|e| match e.errno() {
            Errno::ENAMETOOLONG => Errno::E2BIG,
            e => e,
        })?;
        out.push(Blob(s));
    }
    Err(Errno::E2BIG)
}

impl FsLayer {
    /// `execve(path, argv, envp)` / `execveat(dirfd, path, argv, envp, flags)`.
    pub(crate) fn exec_call(
        &mut self,
        stop: &mut SyscallStop<'_>,
        dirfd: i32,
        path_arg: usize,
        argv_arg: usize,
        envp_arg: usize,
        flags: u64,
    ) -> Action {
        let pid = stop.pid();
        if !self.exec.first_done && !matches!(self.exec.first, Some(f) if f != pid) {
            // The node's own start of the job (the launch line).
            self.exec.first_done = true;
            return Action::Continue;
        }
        let path = match stop.read_path_arg(path_arg) {
            Ok(p) => p,
            Err(e) => return Action::errno(e.errno()),
        };
        let target = if path.is_empty() && flags & libc::AT_EMPTY_PATH as u64 != 0 {
            match self.fd_central(stop.tid(), dirfd) {
                Some(c) => Where::Central(c),
                None => return Action::Continue,
            }
        } else if let Some(exe) = self.self_exe(pid, &path) {
            Where::Central(exe)
        } else {
            match self.resolve(stop.tid(), dirfd, &path) {
                Ok(w) => w,
                Err(e) => return Action::errno(e),
            }
        };
        let c = match target {
            Where::Central(c) => c,
            Where::Native(p) => {
                let _ = stop.set_path_arg(path_arg, &p);
                return Action::Continue;
            }
            Where::NativeRelative => return Action::Continue,
        };
        let mem = stop.memory();
        let argv = match read_vec(mem, stop.arg(argv_arg)) {
            Ok(v) => v,
            Err(e) => return Action::errno(e),
        };
        let envp = match read_vec(mem, stop.arg(envp_arg)) {
            Ok(v) => v,
            Err(e) => return Action::errno(e),
        };
        let line = match self.prepare_exec(&c, &path, argv, envp) {
            Ok(x) => x,
            Err(e) => return Action::errno(e),
        };
        match Self::rewrite_exec(stop, &line, envp_arg) {
            Ok(()) => {
                self.exec.pending.insert(pid, line.1);
                Action::Continue
            }
            Err(e) => Action::errno(e),
        }
    }

    /// `/proc/self/exe` (or `/proc/PID/exe` of this process) of a process
    /// running a central program: that program.
    fn self_exe(&self, pid: Pid, path: &[u8]) -> Option<Vec<u8>> {
        let rest = path.strip_prefix(b"/proc/")?.strip_suffix(b"/exe")?;
        let ok = rest == b"self" || rest == pid.to_string().as_bytes();
        ok.then(|| self.exec.exe_of(pid).map(<[u8]>::to_vec))
            .flatten()
    }

    /// Asks the home for the image, caches its files, builds the line.
    /// Returns the line and the program's central path.
    fn prepare_exec(
        &mut self,
        c: &[u8],
        spelled: &[u8],
        argv: Vec<Blob>,
        envp: Vec<Blob>,
    ) -> Result<(launch::ExecLine, Vec<u8>), Errno> {
        for _ in 0..3 {
            let req = Request::Exec {
                path: Blob(c.to_vec()),
                argv: argv.clone(),
                envp: envp.clone(),
            };
            let Response::Exec(mut image) = self.ask(req)? else {
                return Err(Errno::EIO);
            };
            respell_script(&mut image, c, spelled);
            let mut objects = HashMap::new();
            let mut stale = false;
            for (path, stamp) in &image.files {
                match fetch::object(&*self.client, &self.cache, path, stamp) {
                    Ok(o) => {
                        objects.insert(path.clone(), o);
                    }
                    Err(Errno::ESTALE) => {
                        stale = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if stale {
                continue;
            }
            let local = plan(&image, &objects).map_err(|why| {
                log::warn!("exec plan: {why}");
                Errno::EIO
            })?;
            let line = launch::prepare(&local, &self.cache).map_err(|e| {
                log::warn!("exec of {}: {e}", String::from_utf8_lossy(c));
                Errno::EIO
            })?;
            return Ok((line, image.program.0.clone()));
        }
        Err(Errno::ESTALE)
    }

    /// Points the stopped exec at `line` (strings and pointer array in
    /// scratch memory, or below the stack when they do not fit).
    fn rewrite_exec(
        stop: &mut SyscallStop<'_>,
        line: &(launch::ExecLine, Vec<u8>),
        envp_arg: usize,
    ) -> Result<(), Errno> {
        let (line, _) = line;
        let mut strings = Vec::new();
        let mut offsets = Vec::new();
        let path_off = 0;
        strings.extend_from_slice(line.path.as_os_str().as_bytes());
        strings.push(0);
        for a in &line.argv {
            offsets.push(strings.len() as u64);
            strings.extend_from_slice(a.as_bytes());
            strings.push(0);
        }
        let envp = stop.arg(envp_arg);
        let ptr_bytes = 8 * (offsets.len() + 1);
        let (base, argv_at) = if strings.len() + ptr_bytes + 16 <= SCRATCH_SIZE / 2 {
            let base = stop.scratch_write(&strings).map_err(|_| Errno::ENOMEM)?;
            let ptrs = pointer_array(base, &offsets);
            let at = stop.scratch_write(&ptrs).map_err(|_| Errno::ENOMEM)?;
            (base, at)
        } else {
            // Below the stack's red zone (128 bytes): the exec replaces the
            // address space. posix_spawn's child runs on a small stack of
            // its own, so stay close to the stack pointer.
            let sp = stop.regs().sp();
            let total = (strings.len() + ptr_bytes + 15) as u64 & !15;
            let base = (sp - 256 - total) & !15;
            let at = base + ((strings.len() as u64 + 7) & !7);
            let ptrs = pointer_array(base, &offsets);
            stop.memory()
                .write_vectored(&[(base, &strings), (at, &ptrs)])
                .map_err(|_| Errno::E2BIG)?;
            (base, at)
        };
        stop.set_nr(Sysno::execve);
        stop.set_arg(0, base + path_off);
        stop.set_arg(1, argv_at);
        stop.set_arg(2, envp);
        Ok(())
    }
}

/// For a `#!` script the kernel passes the interpreter the file name as
/// the program spelled it (`./x.sh`, not the absolute path the home was
/// asked about): put that spelling back where the home put `c`.
fn respell_script(image: &mut ExecImage, c: &[u8], spelled: &[u8]) {
    if spelled.is_empty() || spelled == c || image.program.0 == c {
        return; // not a script (or fexecve)
    }
    if let Some(a) = image.argv.iter_mut().take(3).skip(1).find(|a| a.0 == c) {
        a.0 = spelled.to_vec();
    }
}

fn pointer_array(base: u64, offsets: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 * (offsets.len() + 1));
    for o in offsets {
        v.extend_from_slice(&(base + o).to_ne_bytes());
    }
    v.extend_from_slice(&0u64.to_ne_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_get_the_name_as_spelled() {
        let mut image = ExecImage {
            argv: vec!["/bin/sh".into(), "/c/x.sh".into(), "a".into()],
            program: "/bin/sh".into(),
            interpreter: None,
            libraries: vec![],
            preload: vec![],
            files: vec![],
        };
        respell_script(&mut image, b"/c/x.sh", b"./x.sh");
        assert_eq!(image.argv, ["/bin/sh".into(), "./x.sh".into(), "a".into()]);
        // An ELF keeps its argv (argv[0] is the program's own business).
        let mut elf = ExecImage {
            argv: vec!["/c/x".into(), "/c/x".into()],
            program: "/c/x".into(),
            ..image
        };
        respell_script(&mut elf, b"/c/x", b"x");
        assert_eq!(elf.argv, ["/c/x".into(), "/c/x".into()]);
    }
}
