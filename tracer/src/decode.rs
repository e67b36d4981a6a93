//! strace-style decoding and printing: arguments of the file, socket and
//! process calls in [`SyscallSet::diatom_default`] (paths as quoted strings,
//! flags symbolically, buffers truncated), results as strace shows them
//! (`= 3`, `= -1 ENOENT (No such file or directory)`), and [`Printer`], a
//! handler that writes one line per call: `[pid N] name(args) = result`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use nix::errno::Errno;
use nix::unistd::Pid;
use syscalls::Sysno;

use crate::handler::{Action, ExitStatus, Handler};
use crate::memory::TraceeMemory;
use crate::set::SyscallSet;
use crate::stop::{SyscallExit, SyscallStop};

/// Longest string or buffer shown before `...` (strace's default `-s 32`).
pub const STRING_LIMIT: usize = 32;

/// How one argument is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Signed decimal.
    Int,
    /// Unsigned decimal.
    UInt,
    /// Hexadecimal.
    Hex,
    /// A pointer (hex, `NULL` for 0).
    Ptr,
    /// A descriptor (decimal, 32-bit).
    Fd,
    /// A directory descriptor (`AT_FDCWD` for -100).
    DirFd,
    /// A path: quoted, complete.
    Path,
    /// A short string (quoted, truncated).
    Str,
    /// `O_*` flags.
    OpenFlags,
    /// A mode in octal.
    Mode,
    /// `AT_*` flags.
    AtFlags,
    /// `access` mode (`R_OK|W_OK`...).
    AccessMode,
    /// A NULL-terminated string array (argv).
    StrArray,
    /// A NULL-terminated string array shown by count (envp).
    Envp,
    /// An input buffer whose length is argument `n`.
    InBuf(u8),
    /// A socket address whose length is argument `n`.
    SockAddr(u8),
    /// `AF_*`.
    SockDomain,
    /// `SOCK_*` type and flags.
    SockType,
    /// A signal number.
    Signal,
    /// `CLONE_*` flags with the exit signal in the low byte.
    CloneFlags,
}

/// The arguments of `nr` as this module shows them; `None` for a call it
/// does not know (shown with six hex arguments).
pub fn signature(nr: Sysno) -> Option<&'static [Arg]> {
    use Arg::*;
    use Sysno::*;
    Some(match nr {
        open => &[Path, OpenFlags, Mode],
        openat => &[DirFd, Path, OpenFlags, Mode],
        openat2 => &[DirFd, Path, Ptr, UInt],
        creat => &[Path, Mode],
        stat | lstat | statfs | utime | utimes => &[Path, Ptr],
        newfstatat => &[DirFd, Path, Ptr, AtFlags],
        statx => &[DirFd, Path, AtFlags, Hex, Ptr],
        access => &[Path, AccessMode],
        faccessat => &[DirFd, Path, AccessMode],
        faccessat2 => &[DirFd, Path, AccessMode, AtFlags],
        readlink => &[Path, Ptr, UInt],
        readlinkat => &[DirFd, Path, Ptr, UInt],
        execve => &[Path, StrArray, Envp],
        execveat => &[DirFd, Path, StrArray, Envp, AtFlags],
        chdir | rmdir | unlink | chroot => &[Path],
        fchdir => &[Fd],
        getcwd => &[Ptr, UInt],
        mkdir | chmod => &[Path, Mode],
        mkdirat | fchmodat => &[DirFd, Path, Mode],
        fchmodat2 => &[DirFd, Path, Mode, AtFlags],
        unlinkat => &[DirFd, Path, AtFlags],
        rename | link | symlink => &[Path, Path],
        renameat => &[DirFd, Path, DirFd, Path],
        renameat2 => &[DirFd, Path, DirFd, Path, Hex],
        linkat => &[DirFd, Path, DirFd, Path, AtFlags],
        symlinkat => &[Path, DirFd, Path],
        chown | lchown => &[Path, Int, Int],
        fchownat => &[DirFd, Path, Int, Int, AtFlags],
        truncate => &[Path, Int],
        utimensat => &[DirFd, Path, Ptr, AtFlags],
        futimesat => &[DirFd, Path, Ptr],
        mknod => &[Path, Mode, Hex],
        mknodat => &[DirFd, Path, Mode, Hex],
        setxattr | lsetxattr => &[Path, Str, Ptr, UInt, Int],
        getxattr | lgetxattr => &[Path, Str, Ptr, UInt],
        listxattr | llistxattr => &[Path, Ptr, UInt],
        removexattr | lremovexattr => &[Path, Str],
        inotify_add_watch => &[Fd, Path, Hex],
        name_to_handle_at => &[DirFd, Path, Ptr, Ptr, AtFlags],
        socket => &[SockDomain, SockType, Int],
        socketpair => &[SockDomain, SockType, Int, Ptr],
        connect | bind => &[Fd, SockAddr(2), UInt],
        listen => &[Fd, Int],
        accept | getsockname | getpeername => &[Fd, Ptr, Ptr],
        accept4 => &[Fd, Ptr, Ptr, SockType],
        sendto => &[Fd, InBuf(2), UInt, Hex, SockAddr(5), UInt],
        recvfrom => &[Fd, Ptr, UInt, Hex, Ptr, Ptr],
        sendmsg | recvmsg => &[Fd, Ptr, Hex],
        clone => &[CloneFlags, Ptr, Ptr, Ptr, Hex],
        clone3 => &[Ptr, UInt],
        fork | vfork | getuid | geteuid | getgid | getegid | getpid | getppid | gettid => &[],
        exit_group | exit => &[Int],
        wait4 => &[Int, Ptr, Hex, Ptr],
        waitid => &[Int, Int, Ptr, Hex, Ptr],
        kill | tkill => &[Int, Signal],
        tgkill => &[Int, Int, Signal],
        ptrace => &[Int, Int, Ptr, Ptr],
        process_vm_readv | process_vm_writev => &[Int, Ptr, UInt, Ptr, UInt, UInt],
        getresuid | getresgid => &[Ptr, Ptr, Ptr],
        getgroups => &[Int, Ptr],
        uname => &[Ptr],
        seccomp => &[Int, Hex, Ptr],
        _ => return None,
    })
}

/// Formats `name(args` (no closing parenthesis: the caller adds `)` and the
/// result) for call `nr` with `args`, reading strings from `mem`.
pub fn format_call(nr: i64, args: &[u64; 6], mem: &impl TraceeMemory) -> String {
    let mut s = String::with_capacity(96);
    let sysno = usize::try_from(nr).ok().and_then(Sysno::new);
    match sysno {
        Some(n) => s.push_str(n.name()),
        None => {
            let _ = write!(s, "syscall_{nr}");
        }
    }
    s.push('(');
    let sig = sysno.and_then(signature);
    let mut kinds: &[Arg] = sig.unwrap_or(&[Arg::Hex; 6]);
    // Like strace: the mode of open/openat only when a file may be created.
    let creates = |f: u64| {
        let (creat, tmpfile) = (libc::O_CREAT as u64, libc::O_TMPFILE as u64);
        f & creat != 0 || f & tmpfile == tmpfile
    };
    match sysno {
        Some(Sysno::open) if !creates(args[1]) => kinds = &kinds[..2],
        Some(Sysno::openat) if !creates(args[2]) => kinds = &kinds[..3],
        _ => {}
    }
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        format_arg(&mut s, *k, args[i], args, mem);
    }
    s
}

fn format_arg(s: &mut String, kind: Arg, v: u64, args: &[u64; 6], mem: &impl TraceeMemory) {
    match kind {
        Arg::Int => {
            let _ = write!(s, "{}", v as i64);
        }
        Arg::UInt => {
            let _ = write!(s, "{v}");
        }
        Arg::Hex => {
            let _ = write!(s, "{v:#x}");
        }
        Arg::Ptr => ptr(s, v),
        Arg::Fd => {
            let _ = write!(s, "{}", v as i32);
        }
        Arg::DirFd => {
            if v as i32 == libc::AT_FDCWD {
                s.push_str("AT_FDCWD");
            } else {
                let _ = write!(s, "{}", v as i32);
            }
        }
        Arg::Path | Arg::Str => match mem.read_path(v) {
            Ok(p) if kind == Arg::Path => quote(s, &p, usize::MAX),
            Ok(p) => quote(s, &p, STRING_LIMIT),
            Err(_) => ptr(s, v),
        },
        Arg::OpenFlags => open_flags(s, v as u32),
        Arg::Mode => {
            if v as u32 == 0 {
                s.push('0');
            } else {
                let _ = write!(s, "0{:o}", v as u32);
            }
        }
        Arg::AtFlags => flags(s, v as u32, AT_FLAGS),
        Arg::AccessMode => {
            if v == 0 {
                s.push_str("F_OK");
            } else {
                flags(s, v as u32, ACCESS_FLAGS);
            }
        }
        Arg::StrArray => str_array(s, v, mem),
        Arg::Envp => {
            let n = (0..4096u64)
                .take_while(|i| mem.read_value::<u64>(v + 8 * i).is_ok_and(|p| p != 0))
                .count();
            ptr(s, v);
            let _ = write!(s, " /* {n} vars */");
        }
        Arg::InBuf(len_arg) => {
            let len = args[len_arg as usize] as usize;
            match mem.read_bytes(v, len.min(STRING_LIMIT)) {
                Ok(b) => {
                    quote(s, &b, STRING_LIMIT);
                    if len > STRING_LIMIT {
                        s.push_str("...");
                    }
                }
                Err(_) => ptr(s, v),
            }
        }
        Arg::SockAddr(len_arg) => sockaddr(s, v, args[len_arg as usize] as usize, mem),
        Arg::SockDomain => match v as i32 {
            libc::AF_UNIX => s.push_str("AF_UNIX"),
            libc::AF_INET => s.push_str("AF_INET"),
            libc::AF_INET6 => s.push_str("AF_INET6"),
            libc::AF_NETLINK => s.push_str("AF_NETLINK"),
            libc::AF_PACKET => s.push_str("AF_PACKET"),
            d => {
                let _ = write!(s, "{d}");
            }
        },
        Arg::SockType => {
            let t = v as u32;
            let base = t & 0xf;
            let name = match base as i32 {
                0 => None,
                libc::SOCK_STREAM => Some("SOCK_STREAM"),
                libc::SOCK_DGRAM => Some("SOCK_DGRAM"),
                libc::SOCK_RAW => Some("SOCK_RAW"),
                libc::SOCK_SEQPACKET => Some("SOCK_SEQPACKET"),
                _ => None,
            };
            let rest = t & !0xf;
            match name {
                Some(n) => {
                    s.push_str(n);
                    if rest != 0 {
                        s.push('|');
                        flags(s, rest, SOCK_FLAGS);
                    }
                }
                None if base == 0 => flags(s, rest, SOCK_FLAGS),
                None => {
                    let _ = write!(s, "{t:#x}");
                }
            }
        }
        Arg::Signal => signal(s, v as i32),
        Arg::CloneFlags => {
            let hi = v as u32 & !0xff;
            let sig = (v & 0xff) as i32;
            if hi != 0 {
                flags(s, hi, CLONE_FLAGS);
            }
            if sig != 0 {
                if hi != 0 {
                    s.push('|');
                }
                signal(s, sig);
            }
            if v == 0 {
                s.push('0');
            }
        }
    }
}

fn ptr(s: &mut String, v: u64) {
    if v == 0 {
        s.push_str("NULL");
    } else {
        let _ = write!(s, "{v:#x}");
    }
}

fn signal(s: &mut String, n: i32) {
    match nix::sys::signal::Signal::try_from(n) {
        Ok(sig) => s.push_str(sig.as_str()),
        Err(_) => {
            let _ = write!(s, "{n}");
        }
    }
}

/// Appends `b` as a C string literal, strace style, cut at `limit` bytes
/// with `...` after the closing quote.
pub fn quote(s: &mut String, b: &[u8], limit: usize) {
    s.push('"');
    for &c in b.iter().take(limit) {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push('"');
    if b.len() > limit {
        s.push_str("...");
    }
}

fn str_array(s: &mut String, v: u64, mem: &impl TraceeMemory) {
    if v == 0 {
        s.push_str("NULL");
        return;
    }
    s.push('[');
    for i in 0..33u64 {
        let p = match mem.read_value::<u64>(v + 8 * i) {
            Ok(p) => p,
            Err(_) => {
                s.push_str("...");
                break;
            }
        };
        if p == 0 {
            break;
        }
        if i > 0 {
            s.push_str(", ");
        }
        if i == 32 {
            s.push_str("...");
            break;
        }
        match mem.read_cstr(p, 4096) {
            Ok(a) => quote(s, &a, STRING_LIMIT),
            Err(_) => ptr(s, p),
        }
    }
    s.push(']');
}

fn sockaddr(s: &mut String, v: u64, len: usize, mem: &impl TraceeMemory) {
    let len = len.min(128);
    let b = match mem.read_bytes(v, len) {
        Ok(b) if len >= 2 => b,
        _ => return ptr(s, v),
    };
    let family = u16::from_ne_bytes([b[0], b[1]]) as i32;
    match family {
        libc::AF_UNIX => {
            let path = &b[2..];
            s.push_str("{sa_family=AF_UNIX, sun_path=");
            if path.first() == Some(&0) && path.len() > 1 {
                s.push('@');
                quote(s, &path[1..], usize::MAX);
            } else {
                let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                quote(s, &path[..end], usize::MAX);
            }
            s.push('}');
        }
        libc::AF_INET if len >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let _ = write!(
                s,
                "{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr(\"{}.{}.{}.{}\")}}",
                b[4], b[5], b[6], b[7]
            );
        }
        libc::AF_INET6 if len >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            let _ = write!(
                s,
                "{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_addr=inet_pton(\"{}\")}}",
                std::net::Ipv6Addr::from(a)
            );
        }
        f => {
            let _ = write!(s, "{{sa_family={f}, ...}}");
        }
    }
}

const OPEN_FLAGS: &[(u32, &str)] = &[
    (0o20200000, "O_TMPFILE"),
    (0o4010000, "O_SYNC"),
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
];

const AT_FLAGS: &[(u32, &str)] = &[
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x200, "AT_REMOVEDIR"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"),
    (0x2000, "AT_STATX_FORCE_SYNC"),
    (0x4000, "AT_STATX_DONT_SYNC"),
    (0x8000, "AT_RECURSIVE"),
];

const ACCESS_FLAGS: &[(u32, &str)] = &[(4, "R_OK"), (2, "W_OK"), (1, "X_OK")];

const SOCK_FLAGS: &[(u32, &str)] = &[(0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")];

const CLONE_FLAGS: &[(u32, &str)] = &[
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x400000, "CLONE_DETACHED"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
];

/// Appends `v` as `A|B|0x..` using `table` (composite entries first); `0`
/// when empty.
pub fn flags(s: &mut String, v: u32, table: &[(u32, &str)]) {
    let mut rest = v;
    let mut first = true;
    for &(bits, name) in table {
        if rest & bits == bits {
            if !first {
                s.push('|');
            }
            s.push_str(name);
            first = false;
            rest &= !bits;
        }
    }
    if rest != 0 || first {
        if !first {
            s.push('|');
        }
        let _ = write!(s, "{rest:#x}");
        if rest == 0 {
            s.truncate(s.len() - 3);
            s.push('0');
        }
    }
}

/// Appends `open` flags: the access mode, then the other flags.
pub fn open_flags(s: &mut String, v: u32) {
    s.push_str(match v & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    });
    let rest = v & !3;
    if rest != 0 {
        s.push('|');
        flags(s, rest, OPEN_FLAGS);
    }
}

/// Formats a raw result strace style: `3`, `-1 ENOENT (No such file or
/// directory)`, `? ERESTARTSYS (...)` for the kernel-internal restart codes.
pub fn format_result(ret: i64) -> String {
    if (-4095..0).contains(&ret) {
        let e = -ret as i32;
        let restart = match e {
            512 => Some(("ERESTARTSYS", "To be restarted if SA_RESTART is set")),
            513 => Some(("ERESTARTNOINTR", "To be restarted")),
            514 => Some(("ERESTARTNOHAND", "To be restarted if no handler")),
            516 => Some(("ERESTART_RESTARTBLOCK", "Interrupted by signal")),
            _ => None,
        };
        if let Some((name, desc)) = restart {
            return format!("? {name} ({desc})");
        }
        let errno = Errno::from_raw(e);
        if errno == Errno::UnknownErrno {
            return format!("-1 E{e} (Unknown error {e})");
        }
        // The C library's message, as strace prints it.
        let msg = std::io::Error::from_raw_os_error(e).to_string();
        let msg = msg.split(" (os error").next().unwrap_or(&msg);
        format!("-1 {errno:?} ({msg})")
    } else {
        format!("{ret}")
    }
}

/// A handler that prints every call of its set, one line each, strace
/// style, and lets it run. Lines are written at the call's exit, so lines
/// of concurrent threads never interleave; a call still pending when its
/// thread ends is printed with `= ?`. Process ends are printed as
/// `[pid N] +++ exited with C +++` / `+++ killed by SIGNAME +++`.
pub struct Printer<W: Write> {
    out: W,
    set: SyscallSet,
    pending: HashMap<i32, String>,
}

impl<W: Write> std::fmt::Debug for Printer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer")
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Printer<W> {
    /// Prints the calls of `set` to `out`.
    pub fn new(out: W, set: SyscallSet) -> Self {
        Printer {
            out,
            set,
            pending: HashMap::new(),
        }
    }

    /// Flushes the output.
    pub fn flush_output(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// The output (e.g. to inspect it).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn line(&mut self, tid: Pid, text: &str) {
        // A failing output (closed pipe) must not stop the traced program.
        let _ = writeln!(self.out, "[pid {tid}] {text}");
    }
}

impl<W: Write> Handler for Printer<W> {
    fn subscriptions(&self) -> SyscallSet {
        self.set.clone()
    }

    fn handle_syscall(&mut self, stop: &mut SyscallStop<'_>) -> Action {
        let call = format_call(stop.nr(), &stop.args(), stop.memory());
        if matches!(stop.sysno(), Some(Sysno::exit_group | Sysno::exit)) {
            self.line(stop.tid(), &format!("{call}) = ?"));
            return Action::Continue;
        }
        self.pending.insert(stop.tid().as_raw(), call);
        Action::ContinueWatchExit
    }

    fn handle_exit(&mut self, exit: &mut SyscallExit<'_>) {
        // After an exec by another thread the call is pending under the
        // former thread id; SyscallExit reports the new one.
        let call = self.pending.remove(&exit.tid().as_raw());
        let call = call.unwrap_or_else(|| format_call(exit.nr(), &exit.args(), exit.memory()));
        let text = format!("{call}) = {}", format_result(exit.ret()));
        self.line(exit.tid(), &text);
    }

    fn on_exec(&mut self, pid: Pid, former_tid: Pid) {
        if pid != former_tid {
            if let Some(c) = self.pending.remove(&former_tid.as_raw()) {
                self.pending.insert(pid.as_raw(), c);
            }
        }
    }

    fn on_exit(&mut self, tid: Pid, tgid: Pid, status: ExitStatus) {
        if let Some(c) = self.pending.remove(&tid.as_raw()) {
            self.line(tid, &format!("{c}) = ?"));
        }
        if tid == tgid {
            let text = match status {
                ExitStatus::Exited(c) => format!("+++ exited with {c} +++"),
                ExitStatus::Signaled {
                    signal: n,
                    core_dumped,
                } => {
                    let mut s = String::from("+++ killed by ");
                    signal(&mut s, n);
                    if core_dumped {
                        s.push_str(" (core dumped)");
                    }
                    s.push_str(" +++");
                    s
                }
            };
            self.line(tid, &text);
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ProcMemory;

    fn me() -> ProcMemory {
        ProcMemory::new(nix::unistd::getpid())
    }

    fn call(nr: Sysno, args: [u64; 6]) -> String {
        format_call(nr.id() as i64, &args, &me())
    }

    #[test]
    fn openat_path_and_flags() {
        let p = b"/etc/passwd\0";
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        let s = call(
            Sysno::openat,
            [libc::AT_FDCWD as u64, p.as_ptr() as u64, flags, 0, 0, 0],
        );
        assert_eq!(s, "openat(AT_FDCWD, \"/etc/passwd\", O_RDONLY|O_CLOEXEC");
        let flags = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64;
        let s = call(Sysno::openat, [3, p.as_ptr() as u64, flags, 0o644, 0, 0]);
        assert_eq!(
            s,
            "openat(3, \"/etc/passwd\", O_WRONLY|O_CREAT|O_TRUNC, 0644"
        );
        let s = call(
            Sysno::openat,
            [3, 0, libc::O_TMPFILE as u64 | 2, 0o600, 0, 0],
        );
        assert_eq!(s, "openat(3, NULL, O_RDWR|O_TMPFILE, 0600");
    }

    #[test]
    fn results_like_strace() {
        assert_eq!(format_result(3), "3");
        assert_eq!(format_result(0), "0");
        assert_eq!(format_result(-2), "-1 ENOENT (No such file or directory)");
        assert_eq!(format_result(-1), "-1 EPERM (Operation not permitted)");
        assert_eq!(
            format_result(-512),
            "? ERESTARTSYS (To be restarted if SA_RESTART is set)"
        );
        assert_eq!(format_result(-4000), "-1 E4000 (Unknown error 4000)");
        assert_eq!(
            format_result(-95),
            "-1 EOPNOTSUPP (Operation not supported)"
        );
    }

    #[test]
    fn flags_and_signals() {
        let mut s = String::new();
        flags(&mut s, 0, AT_FLAGS);
        assert_eq!(s, "0");
        s.clear();
        flags(&mut s, 0x1100 | 0x10_0000, AT_FLAGS);
        assert_eq!(s, "AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH|0x100000");
        let v = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
        assert_eq!(
            call(Sysno::clone, [v, 0, 0, 0, 0, 0]),
            "clone(CLONE_VM|CLONE_VFORK|SIGCHLD, NULL, NULL, NULL, 0x0"
        );
        assert_eq!(call(Sysno::kill, [12, 9, 0, 0, 0, 0]), "kill(12, SIGKILL");
        assert_eq!(
            call(Sysno::access, [0, 5, 0, 0, 0, 0]),
            "access(NULL, R_OK|X_OK"
        );
        let st = (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64;
        assert_eq!(
            call(Sysno::socket, [2, st, 0, 0, 0, 0]),
            "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0"
        );
    }

    #[test]
    fn strings_quoted_and_truncated() {
        let mut s = String::new();
        quote(&mut s, b"a\"b\\c\n\x01", usize::MAX);
        assert_eq!(s, r#""a\"b\\c\n\x01""#);
        let data = [b'x'; 100];
        let s = call(Sysno::sendto, [4, data.as_ptr() as u64, 100, 0, 0, 0]);
        assert_eq!(
            s,
            format!("sendto(4, \"{}\"..., 100, 0x0, NULL, 0", "x".repeat(32))
        );
    }

    #[test]
    fn argv_and_sockaddr() {
        let a = b"ls\0";
        let b = b"-l\0";
        let argv = [a.as_ptr() as u64, b.as_ptr() as u64, 0];
        let env = [a.as_ptr() as u64, 0];
        let path = b"/bin/ls\0";
        let s = call(
            Sysno::execve,
            [
                path.as_ptr() as u64,
                argv.as_ptr() as u64,
                env.as_ptr() as u64,
                0,
                0,
                0,
            ],
        );
        assert_eq!(
            s,
            format!(
                "execve(\"/bin/ls\", [\"ls\", \"-l\"], {:#x} /* 1 vars */",
                env.as_ptr() as u64
            )
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 80u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let s = call(Sysno::connect, [3, &sin as *const _ as u64, 16, 0, 0, 0]);
        assert_eq!(s, "connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr(\"127.0.0.1\")}, 16");
        let mut un = [0u8; 12];
        un[0] = libc::AF_UNIX as u8;
        un[2..9].copy_from_slice(b"/tmp/s\0");
        let s = call(Sysno::bind, [3, un.as_ptr() as u64, 12, 0, 0, 0]);
        assert_eq!(s, "bind(3, {sa_family=AF_UNIX, sun_path=\"/tmp/s\"}, 12");
    }

    #[test]
    fn unknown_call_shows_hex_and_bad_pointer_shows_address() {
        assert!(call(Sysno::read, [1, 2, 3, 4, 5, 6]).starts_with("read(0x1, 0x2, 0x3"));
        assert_eq!(call(Sysno::chdir, [8, 0, 0, 0, 0, 0]), "chdir(0x8");
    }
}
