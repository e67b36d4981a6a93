//! The set of system calls a handler subscribes to ([`SyscallSet`]), with the
//! optional per-call argument test the seccomp filter can apply, and the
//! default set Diatom uses ([`SyscallSet::diatom_default`]).
//!
//! Membership is a 512-bit bitmap so that the tracer's hot loop answers
//! "is this call subscribed?" with one load.

use syscalls::Sysno;

/// Number of system call numbers the set can hold (x86_64 numbers are < 512).
pub const MAX_NR: usize = 512;

/// When a subscribed call stops the tracee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Every call stops.
    Always,
    /// The call runs natively when the low 32 bits of argument `arg` have any
    /// of `bits` set, and stops otherwise. Used for `newfstatat(fd, "",
    /// AT_EMPTY_PATH)`, which is `fstat` on a descriptor.
    UnlessArgHasBits {
        /// Argument index, 0..6.
        arg: u8,
        /// Bits tested with `BPF_JSET`.
        bits: u32,
    },
    /// The call runs natively when the low 32 bits of argument `arg`,
    /// unsigned, are below `min`, and stops otherwise. Used for `close` and
    /// `fsync` of descriptors a handler moved to a high range (a negative
    /// descriptor also stops; the handler lets it fail natively).
    UnlessArgBelow {
        /// Argument index, 0..6.
        arg: u8,
        /// Smallest value that stops, tested with `BPF_JGE`.
        min: u32,
    },
    /// The call stops only when argument `arg` (all 64 bits) is not zero,
    /// and runs natively otherwise. Used for `sendto` and `recvfrom`,
    /// which name an address only through a non-null pointer: a test of
    /// the low word alone would let a pointer at a multiple of 4 GiB pass.
    UnlessArgZero {
        /// Argument index, 0..6.
        arg: u8,
    },
    /// The call stops only when the low 32 bits of argument `arg`,
    /// unsigned, are in `min..max`, and runs natively otherwise. Used for
    /// `mmap` of descriptors a handler moved to a reserved range (an
    /// anonymous mapping passes -1 and must not stop).
    OnlyArgIn {
        /// Argument index, 0..6.
        arg: u8,
        /// Smallest value that stops.
        min: u32,
        /// First value above the range (runs natively).
        max: u32,
    },
}

/// A set of system calls, each with the [`Rule`] deciding when it stops.
#[derive(Clone, PartialEq, Eq)]
pub struct SyscallSet {
    bits: [u64; MAX_NR / 64],
    rules: Vec<(u32, Rule)>,
    /// Further conditions of conditional members: the call also stops when
    /// one of these says so (see [`SyscallSet::also_stop`]).
    also: Vec<(u32, Rule)>,
    /// Calls the filter answers with an error without a stop (see
    /// [`SyscallSet::refuse`]): raw number and errno.
    refused: Vec<(u32, u16)>,
}

impl Default for SyscallSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SyscallSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Sysno> for SyscallSet {
    fn from_iter<I: IntoIterator<Item = Sysno>>(iter: I) -> Self {
        let mut s = Self::new();
        for n in iter {
            s.insert(n);
        }
        s
    }
}

impl SyscallSet {
    /// The empty set.
    pub const fn new() -> Self {
        SyscallSet {
            bits: [0; MAX_NR / 64],
            rules: Vec::new(),
            also: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Adds `nr` so that every call stops (replacing a conditional rule).
    pub fn insert(&mut self, nr: Sysno) -> &mut Self {
        self.insert_rule(nr, Rule::Always)
    }

    /// Adds `nr` with a rule. A call already present with [`Rule::Always`]
    /// keeps it: a union never makes a subscriber see fewer calls.
    pub fn insert_rule(&mut self, nr: Sysno, rule: Rule) -> &mut Self {
        let n = nr.id() as u32;
        assert!((n as usize) < MAX_NR, "system call number {n} out of range");
        if self.refused.iter().any(|(m, _)| *m == n) {
            return self;
        }
        if self.contains(n as u64) {
            if self.rule(n) == Rule::Always {
                return self;
            }
            self.rules.retain(|(m, _)| *m != n);
        }
        self.bits[n as usize / 64] |= 1 << (n % 64);
        if rule != Rule::Always {
            self.rules.push((n, rule));
        }
        self
    }

    /// Makes `nr` also stop when `rule` says so: the call then stops when
    /// its own rule or any such further rule does (an `fcntl` that stops
    /// for some descriptors and for some commands). A call that is not a
    /// member yet is added with `rule`; one that always stops stays so.
    pub fn also_stop(&mut self, nr: Sysno, rule: Rule) -> &mut Self {
        let n = nr.id() as u32;
        if !self.contains(u64::from(n)) {
            return self.insert_rule(nr, rule);
        }
        if self.rule(n) != Rule::Always && rule != self.rule(n) && !self.also.contains(&(n, rule)) {
            self.also.push((n, rule));
        }
        self
    }

    /// Makes the filter fail the raw call number `nr` with `errno`, without
    /// a stop: for calls the tracer does not serve and that would act
    /// behind its back, answered as a kernel without them would (`ENOSYS`).
    /// A raw number, because such calls may be newer than [`Sysno`]. A
    /// refused call is never a member (a refusal wins over a subscription).
    pub fn refuse(&mut self, nr: u32, errno: i32) -> &mut Self {
        assert!(
            (nr as usize) < MAX_NR,
            "system call number {nr} out of range"
        );
        let errno = u16::try_from(errno).expect("errno fits 16 bits");
        self.bits[nr as usize / 64] &= !(1 << (nr % 64));
        self.rules.retain(|(m, _)| *m != nr);
        self.also.retain(|(m, _)| *m != nr);
        self.refused.retain(|(m, _)| *m != nr);
        self.refused.push((nr, errno));
        self.refused.sort_unstable();
        self
    }

    /// The refused calls and their errno, by number (see [`SyscallSet::refuse`]).
    pub fn refused(&self) -> &[(u32, u16)] {
        &self.refused
    }

    /// Every rule of member `nr`: its own, then those added with
    /// [`SyscallSet::also_stop`] (only `[Always]` for an unconditional one).
    pub fn rules(&self, nr: u32) -> Vec<Rule> {
        let first = self.rule(nr);
        let mut all = vec![first];
        if first != Rule::Always {
            all.extend(self.also.iter().filter(|(m, _)| *m == nr).map(|(_, r)| *r));
        }
        all
    }

    /// Adds every call of `other` (see [`SyscallSet::insert_rule`] for how
    /// rules combine; its further rules are added too).
    pub fn extend_from(&mut self, other: &SyscallSet) -> &mut Self {
        for (nr, rule) in other.iter() {
            self.insert_rule(nr, rule);
        }
        for &(nr, rule) in &other.also {
            if let Some(s) = Sysno::new(nr as usize) {
                self.also_stop(s, rule);
            }
        }
        for &(nr, errno) in &other.refused {
            self.refuse(nr, i32::from(errno));
        }
        self
    }

    /// Whether the raw call number `nr` is in the set.
    #[inline]
    pub fn contains(&self, nr: u64) -> bool {
        (nr as usize) < MAX_NR && self.bits[nr as usize / 64] & (1 << (nr % 64)) != 0
    }

    /// The rule of a member (Always for a non-member too).
    pub fn rule(&self, nr: u32) -> Rule {
        self.rules
            .iter()
            .find(|(m, _)| *m == nr)
            .map_or(Rule::Always, |(_, r)| *r)
    }

    /// Number of calls in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members in increasing number order, with their rules.
    pub fn iter(&self) -> impl Iterator<Item = (Sysno, Rule)> + '_ {
        (0..MAX_NR as u32)
            .filter(|n| self.contains(*n as u64))
            .filter_map(|n| Sysno::new(n as usize).map(|s| (s, self.rule(n))))
    }

    /// The names of the members, comma-separated (e.g. for `strace -e trace=`).
    pub fn names(&self) -> String {
        self.iter()
            .map(|(s, _)| s.name())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Calls the tracer always intercepts for the security of the trace,
    /// whatever the handler subscribes to: the tracee's own `ptrace` and
    /// `process_vm_readv`/`writev` (answered `EPERM`), `clone` and `clone3`
    /// (`CLONE_UNTRACED` is removed), and `seccomp` (a filter with a user
    /// notification listener is refused, since `SECCOMP_RET_USER_NOTIF`
    /// outranks our `SECCOMP_RET_TRACE`).
    pub fn internal() -> SyscallSet {
        [
            Sysno::ptrace,
            Sysno::process_vm_readv,
            Sysno::process_vm_writev,
            Sysno::clone,
            Sysno::clone3,
            Sysno::seccomp,
        ]
        .into_iter()
        .collect()
    }

    /// The set Diatom's node uses: calls that name files or act on the file
    /// system, sockets (creation, addressing, datagrams), processes, and
    /// identity. Calls on descriptors (`read`, `write`, `close`, `fstat`,
    /// `fcntl`, `getdents64`, `lseek`, `mmap`, ...) are not in it: they run
    /// natively on local descriptors (see design.md, performance budget).
    ///
    /// `newfstatat` and `statx` stop only without `AT_EMPTY_PATH`: with it and
    /// an empty path (what libc's `fstat` sends) they act on a descriptor.
    /// A program passing `AT_EMPTY_PATH` *with* a non-empty path gets a native
    /// lookup of that path; the node must not rely on these two for
    /// confinement (its mount namespace does that).
    pub fn diatom_default() -> SyscallSet {
        use Sysno::*;
        let mut s: SyscallSet = [
            // sockets
            socket,
            socketpair,
            connect,
            bind,
            listen,
            accept,
            accept4,
            sendto,
            recvfrom,
            sendmsg,
            recvmsg,
            getsockname,
            getpeername,
            // processes
            clone,
            clone3,
            fork,
            vfork,
            exit_group,
            wait4,
            waitid,
            kill,
            tgkill,
            tkill,
            ptrace,
            process_vm_readv,
            process_vm_writev,
            // identity and host
            getuid,
            geteuid,
            getgid,
            getegid,
            getresuid,
            getresgid,
            getgroups,
            uname,
        ]
        .into_iter()
        .collect();
        s.extend_from(&Self::diatom_files());
        s
    }

    /// The file calls of [`diatom_default`](Self::diatom_default): every
    /// call that names a file by path (and `fchdir`), with `newfstatat` and
    /// `statx` stopping only without `AT_EMPTY_PATH`.
    pub fn diatom_files() -> SyscallSet {
        use Sysno::*;
        let mut s: SyscallSet = [
            open,
            openat,
            openat2,
            creat,
            stat,
            lstat,
            access,
            faccessat,
            faccessat2,
            readlink,
            readlinkat,
            execve,
            execveat,
            chdir,
            fchdir,
            getcwd,
            mkdir,
            mkdirat,
            rmdir,
            unlink,
            unlinkat,
            rename,
            renameat,
            renameat2,
            link,
            linkat,
            symlink,
            symlinkat,
            chmod,
            fchmodat,
            fchmodat2,
            chown,
            lchown,
            fchownat,
            truncate,
            utime,
            utimes,
            utimensat,
            futimesat,
            statfs,
            mknod,
            mknodat,
            chroot,
            setxattr,
            lsetxattr,
            getxattr,
            lgetxattr,
            listxattr,
            llistxattr,
            removexattr,
            lremovexattr,
            inotify_add_watch,
            name_to_handle_at,
        ]
        .into_iter()
        .collect();
        s.insert_rule(
            newfstatat,
            Rule::UnlessArgHasBits {
                arg: 3,
                bits: libc::AT_EMPTY_PATH as u32,
            },
        );
        s.insert_rule(
            statx,
            Rule::UnlessArgHasBits {
                arg: 2,
                bits: libc::AT_EMPTY_PATH as u32,
            },
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_len() {
        let mut s = SyscallSet::new();
        assert!(s.is_empty());
        s.insert(Sysno::openat).insert(Sysno::clone3);
        assert!(s.contains(Sysno::openat.id() as u64));
        assert!(s.contains(435));
        assert!(!s.contains(Sysno::read.id() as u64));
        assert!(!s.contains(100_000));
        assert_eq!(s.len(), 2);
        assert_eq!(s.names(), "openat,clone3");
    }

    #[test]
    fn always_wins_over_conditional_in_a_union() {
        let cond = Rule::UnlessArgHasBits {
            arg: 3,
            bits: 0x1000,
        };
        let mut s = SyscallSet::new();
        s.insert_rule(Sysno::newfstatat, cond);
        assert_eq!(s.rule(Sysno::newfstatat.id() as u32), cond);
        let mut t = SyscallSet::new();
        t.insert(Sysno::newfstatat);
        s.extend_from(&t);
        assert_eq!(s.rule(Sysno::newfstatat.id() as u32), Rule::Always);
        s.insert_rule(Sysno::newfstatat, cond);
        assert_eq!(s.rule(Sysno::newfstatat.id() as u32), Rule::Always);
    }

    #[test]
    fn a_later_conditional_rule_replaces_an_earlier_one() {
        let mut s = SyscallSet::new();
        s.insert_rule(Sysno::close, Rule::UnlessArgBelow { arg: 0, min: 1000 });
        assert_eq!(
            s.rule(Sysno::close.id() as u32),
            Rule::UnlessArgBelow { arg: 0, min: 1000 }
        );
        s.insert_rule(Sysno::close, Rule::UnlessArgBelow { arg: 0, min: 7 });
        assert_eq!(
            s.rule(Sysno::close.id() as u32),
            Rule::UnlessArgBelow { arg: 0, min: 7 }
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn further_rules_add_to_a_conditional_one_only() {
        let below = Rule::UnlessArgBelow { arg: 0, min: 2000 };
        let cmds = Rule::OnlyArgIn {
            arg: 1,
            min: 5,
            max: 39,
        };
        let mut s = SyscallSet::new();
        s.also_stop(Sysno::fcntl, cmds);
        assert_eq!(s.rules(Sysno::fcntl.id() as u32), [cmds]);
        s.insert_rule(Sysno::fcntl, below)
            .also_stop(Sysno::fcntl, cmds);
        assert_eq!(s.rules(Sysno::fcntl.id() as u32), [below, cmds]);
        let mut t = SyscallSet::new();
        t.extend_from(&s);
        assert_eq!(t.rules(Sysno::fcntl.id() as u32), [below, cmds]);
        t.insert(Sysno::fcntl);
        assert_eq!(t.rules(Sysno::fcntl.id() as u32), [Rule::Always]);
    }

    #[test]
    fn a_refusal_wins_over_a_subscription_in_either_order() {
        let mut s = SyscallSet::new();
        s.insert(Sysno::io_uring_setup).refuse(464, libc::ENOSYS);
        s.refuse(Sysno::io_uring_setup.id() as u32, libc::ENOSYS);
        s.insert(Sysno::io_uring_setup);
        assert!(!s.contains(Sysno::io_uring_setup.id() as u64));
        assert_eq!(
            s.refused(),
            [(425, libc::ENOSYS as u16), (464, libc::ENOSYS as u16)]
        );
        let mut t = SyscallSet::new();
        t.insert(Sysno::openat).extend_from(&s);
        assert_eq!(t.refused(), s.refused());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn default_set_leaves_descriptor_calls_native() {
        let s = SyscallSet::diatom_default();
        for nr in [
            Sysno::read,
            Sysno::write,
            Sysno::close,
            Sysno::fstat,
            Sysno::fcntl,
            Sysno::getdents64,
            Sysno::mmap,
        ] {
            assert!(!s.contains(nr.id() as u64), "{nr} must run natively");
        }
        for nr in [
            Sysno::openat,
            Sysno::execve,
            Sysno::connect,
            Sysno::clone3,
            Sysno::getuid,
        ] {
            assert!(s.contains(nr.id() as u64), "{nr} must stop");
        }
    }
}
