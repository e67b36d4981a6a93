//! A small classic-BPF compiler for seccomp filters, and (in tests) an
//! interpreter to check what the programs return.
//!
//! It compiles a [`SyscallSet`] into a program that
//! 1. kills the process when `seccomp_data.arch` is not the native
//!    architecture (a 32-bit `int 0x80` call would otherwise be matched
//!    against 64-bit numbers),
//! 2. kills it for x32 call numbers,
//! 3. returns `SECCOMP_RET_ERRNO` for refused calls (a `jeq` each: they
//!    are few),
//! 4. returns `SECCOMP_RET_TRACE` for subscribed calls (after the argument
//!    test of a [`Rule::UnlessArgHasBits`], [`Rule::UnlessArgBelow`],
//!    [`Rule::UnlessArgZero`] or [`Rule::OnlyArgIn`] member), and
//! 5. `SECCOMP_RET_ALLOW` for the rest.
//!
//! Step 4 is a balanced binary search over the sorted call numbers
//! (`jge` pivots, leaves of at most [`LEAF`] `jeq` tests), so a call that is
//! not subscribed costs about log2(n) + 4 instructions. Jumps that do not fit
//! the 8-bit conditional offsets go through a `ja`.

use crate::arch::{AUDIT_ARCH, X32_SYSCALL_BIT};
use crate::set::{Rule, SyscallSet};

/// One BPF instruction, as the kernel takes it (`struct sock_filter`).
pub type Insn = libc::sock_filter;

/// Errors compiling a filter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BpfError {
    /// The program exceeds the kernel's limit (`BPF_MAXINSNS`).
    #[error("seccomp filter too long: {0} instructions (the kernel takes at most 4096)")]
    TooLong(usize),
}

/// Most instructions a classic BPF program may have.
pub const MAX_INSNS: usize = 4096;
/// Most call numbers tested linearly in one leaf of the search tree.
pub const LEAF: usize = 4;

/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
pub const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`: unconditional jump by `k`.
pub const JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub const JEQ: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
pub const JGE: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`.
pub const JSET: u16 = 0x45;
/// `BPF_RET | BPF_K`.
pub const RET: u16 = 0x06;

/// Offset of `seccomp_data.nr`.
pub const OFF_NR: u32 = 0;
/// Offset of `seccomp_data.arch`.
pub const OFF_ARCH: u32 = 4;
/// Offset of the low 32 bits of `seccomp_data.args[i]` (little endian).
pub const fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}

/// Offset of the high 32 bits of `seccomp_data.args[i]`.
pub const fn off_arg_hi(i: u8) -> u32 {
    off_arg_lo(i) + 4
}

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_TRACE`.
pub const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO`; the errno goes in the low 16 bits.
pub const RET_ERRNO: u32 = 0x0005_0000;

/// Builds one instruction.
pub const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret(k: u32) -> Insn {
    insn(RET, 0, 0, k)
}

/// Compiles the filter for `set` (see the module documentation).
pub fn compile(set: &SyscallSet) -> Result<Vec<Insn>, BpfError> {
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ, 1, 0, AUDIT_ARCH),
        ret(RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, OFF_NR),
        insn(JGE, 0, 1, X32_SYSCALL_BIT),
        ret(RET_KILL_PROCESS),
    ];
    for &(nr, errno) in set.refused() {
        prog.push(insn(JEQ, 0, 1, nr));
        prog.push(ret(RET_ERRNO | u32::from(errno)));
    }
    let entries: Vec<(u32, Vec<Rule>)> = set
        .iter()
        .map(|(s, _)| (s.id() as u32, set.rules(s.id() as u32)))
        .collect();
    prog.extend(tree(&entries));
    if prog.len() > MAX_INSNS {
        return Err(BpfError::TooLong(prog.len()));
    }
    Ok(prog)
}

/// A block that tests the accumulator (the call number) against `entries`
/// (sorted) and returns on every path.
fn tree(entries: &[(u32, Vec<Rule>)]) -> Vec<Insn> {
    if entries.len() <= LEAF {
        return leaf(entries);
    }
    let mid = entries.len() / 2;
    let left = tree(&entries[..mid]);
    let right = tree(&entries[mid..]);
    let pivot = entries[mid].0;
    let mut out = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        Ok(skip) => out.push(insn(JGE, skip, 0, pivot)),
        Err(_) => {
            out.push(insn(JGE, 0, 1, pivot));
            out.push(insn(JA, 0, 0, left.len() as u32));
        }
    }
    out.extend(left);
    out.extend(right);
    out
}

/// Linear tests for at most [`LEAF`] entries:
/// `jeq` per entry, `ret ALLOW`, `ret TRACE`, then one argument-test block
/// (`ld arg; jset` or `jge; ret ALLOW; ret TRACE`) per conditional entry,
/// or for an entry with several rules a chain of them ([`chain`]).
fn leaf(entries: &[(u32, Vec<Rule>)]) -> Vec<Insn> {
    let n = entries.len();
    let mut out = Vec::new();
    let trace_at = n + 1; // index of `ret TRACE`
    let mut cond_at = n + 2; // index of the next argument-test block
    let blocks: Vec<Vec<Insn>> = entries
        .iter()
        .map(|(_, rules)| match rules.as_slice() {
            [] | [Rule::Always] => Vec::new(),
            [one] => single(one),
            many => chain(many),
        })
        .collect();
    for (i, ((nr, _), block)) in entries.iter().zip(&blocks).enumerate() {
        let target = if block.is_empty() {
            trace_at
        } else {
            let t = cond_at;
            cond_at += block.len();
            t
        };
        // Offsets are relative to the next instruction; all are < 40.
        out.push(insn(JEQ, (target - i - 1) as u8, 0, *nr));
    }
    out.push(ret(RET_ALLOW));
    out.push(ret(RET_TRACE));
    for block in blocks {
        out.extend(block);
    }
    out
}

/// The block of one conditional rule: `ld arg`, the test, and both returns.
fn single(rule: &Rule) -> Vec<Insn> {
    match *rule {
        Rule::Always => vec![ret(RET_TRACE)],
        Rule::UnlessArgHasBits { arg, bits } => vec![
            insn(LD_W_ABS, 0, 0, off_arg_lo(arg)),
            insn(JSET, 0, 1, bits),
            ret(RET_ALLOW),
            ret(RET_TRACE),
        ],
        Rule::UnlessArgBelow { arg, min } => vec![
            insn(LD_W_ABS, 0, 0, off_arg_lo(arg)),
            insn(JGE, 1, 0, min),
            ret(RET_ALLOW),
            ret(RET_TRACE),
        ],
        Rule::UnlessArgZero { arg } => vec![
            insn(LD_W_ABS, 0, 0, off_arg_lo(arg)),
            insn(JEQ, 0, 3, 0), // low word set -> ret TRACE
            insn(LD_W_ABS, 0, 0, off_arg_hi(arg)),
            insn(JEQ, 0, 1, 0), // high word set -> ret TRACE
            ret(RET_ALLOW),
            ret(RET_TRACE),
        ],
        Rule::OnlyArgIn { arg, min, max } => vec![
            insn(LD_W_ABS, 0, 0, off_arg_lo(arg)),
            insn(JGE, 1, 0, max), // >= max -> ret ALLOW
            insn(JGE, 1, 0, min), // >= min -> ret TRACE
            ret(RET_ALLOW),
            ret(RET_TRACE),
        ],
    }
}

/// Several rules of one call, any of which stops it: each rule's test
/// returns TRACE when it stops the call and falls through to the next
/// rule's test otherwise; after the last, `ret ALLOW`.
fn chain(rules: &[Rule]) -> Vec<Insn> {
    let mut out = Vec::new();
    for rule in rules {
        match *rule {
            Rule::Always => out.push(ret(RET_TRACE)),
            Rule::UnlessArgHasBits { arg, bits } => {
                out.push(insn(LD_W_ABS, 0, 0, off_arg_lo(arg)));
                out.push(insn(JSET, 1, 0, bits)); // set -> next rule
                out.push(ret(RET_TRACE));
            }
            Rule::UnlessArgBelow { arg, min } => {
                out.push(insn(LD_W_ABS, 0, 0, off_arg_lo(arg)));
                out.push(insn(JGE, 0, 1, min)); // below -> next rule
                out.push(ret(RET_TRACE));
            }
            Rule::UnlessArgZero { arg } => {
                out.push(insn(LD_W_ABS, 0, 0, off_arg_lo(arg)));
                out.push(insn(JEQ, 0, 2, 0)); // low word set -> ret TRACE
                out.push(insn(LD_W_ABS, 0, 0, off_arg_hi(arg)));
                out.push(insn(JEQ, 1, 0, 0)); // both zero -> next rule
                out.push(ret(RET_TRACE));
            }
            Rule::OnlyArgIn { arg, min, max } => {
                out.push(insn(LD_W_ABS, 0, 0, off_arg_lo(arg)));
                out.push(insn(JGE, 2, 0, max)); // >= max -> next rule
                out.push(insn(JGE, 0, 1, min)); // below min -> next rule
                out.push(ret(RET_TRACE));
            }
        }
    }
    out.push(ret(RET_ALLOW));
    out
}

/// A classic-BPF interpreter for the instructions [`compile`] emits, over a
/// `seccomp_data` given as (nr, arch, args). Test-only.
#[cfg(test)]
pub(crate) fn run(prog: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&nr.to_le_bytes());
    data.extend_from_slice(&arch.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    for a in args {
        data.extend_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_le_bytes(data[k..k + 4].try_into().expect("4 bytes"));
            }
            JA => pc += i.k as usize,
            JEQ | JGE | JSET => {
                let taken = match i.code {
                    JEQ => acc == i.k,
                    JGE => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
            RET => return i.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::MAX_NR;
    use syscalls::Sysno;

    #[test]
    fn empty_set_is_header_then_allow() {
        let p = compile(&SyscallSet::new()).unwrap();
        let want = [
            insn(LD_W_ABS, 0, 0, 4),
            insn(JEQ, 1, 0, 0xc000_003e),
            insn(RET, 0, 0, 0x8000_0000),
            insn(LD_W_ABS, 0, 0, 0),
            insn(JGE, 0, 1, 0x4000_0000),
            insn(RET, 0, 0, 0x8000_0000),
            insn(RET, 0, 0, 0x7ff0_0000 + 0x0f_0000), // ALLOW
            insn(RET, 0, 0, 0x7ff0_0000),
        ];
        assert_eq!(p.len(), want.len());
        for (i, (a, b)) in p.iter().zip(want.iter()).enumerate() {
            assert_eq!(
                (a.code, a.jt, a.jf, a.k),
                (b.code, b.jt, b.jf, b.k),
                "insn {i}"
            );
        }
    }

    #[test]
    fn leaf_instruction_by_instruction() {
        let mut s = SyscallSet::new();
        s.insert(Sysno::open); // 2
        s.insert_rule(
            Sysno::newfstatat,
            Rule::UnlessArgHasBits {
                arg: 3,
                bits: 0x1000,
            },
        ); // 262
        s.insert(Sysno::openat); // 257
        let p = compile(&s).unwrap();
        let body: Vec<_> = p[6..].iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            body,
            vec![
                (JEQ, 3, 0, 2),            // open -> ret TRACE at 4
                (JEQ, 2, 0, 257),          // openat -> ret TRACE
                (JEQ, 2, 0, 262),          // newfstatat -> arg block at 5
                (RET, 0, 0, RET_ALLOW),    // 3
                (RET, 0, 0, RET_TRACE),    // 4
                (LD_W_ABS, 0, 0, 16 + 24), // 5: args[3] low word
                (JSET, 0, 1, 0x1000),
                (RET, 0, 0, RET_ALLOW),
                (RET, 0, 0, RET_TRACE),
            ]
        );
    }

    #[test]
    fn refused_calls_come_first_and_return_their_errno() {
        let mut s = SyscallSet::new();
        s.insert(Sysno::openat); // 257
        s.refuse(464, libc::ENOSYS).refuse(425, libc::EPERM);
        let p = compile(&s).unwrap();
        let body: Vec<_> = p[6..].iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            body,
            vec![
                (JEQ, 0, 1, 425),
                (RET, 0, 0, RET_ERRNO | libc::EPERM as u32),
                (JEQ, 0, 1, 464),
                (RET, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
                (JEQ, 1, 0, 257), // openat -> ret TRACE
                (RET, 0, 0, RET_ALLOW),
                (RET, 0, 0, RET_TRACE),
            ]
        );
        let arch = crate::arch::AUDIT_ARCH;
        assert_eq!(run(&p, 464, arch, [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(run(&p, 257, arch, [0; 6]), RET_TRACE);
        assert_eq!(run(&p, 463, arch, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn arg_below_block_instruction_by_instruction() {
        let mut s = SyscallSet::new();
        s.insert(Sysno::read); // 0
        s.insert_rule(Sysno::close, Rule::UnlessArgBelow { arg: 0, min: 1000 }); // 3
        let p = compile(&s).unwrap();
        let body: Vec<_> = p[6..].iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            body,
            vec![
                (JEQ, 2, 0, 0),         // read -> ret TRACE at 3
                (JEQ, 2, 0, 3),         // close -> arg block at 4
                (RET, 0, 0, RET_ALLOW), // 2
                (RET, 0, 0, RET_TRACE), // 3
                (LD_W_ABS, 0, 0, 16),   // 4: args[0] low word
                (JGE, 1, 0, 1000),      // >= 1000 -> ret TRACE
                (RET, 0, 0, RET_ALLOW),
                (RET, 0, 0, RET_TRACE),
            ]
        );
        for (fd, want) in [
            (0u64, RET_ALLOW),
            (999, RET_ALLOW),
            (1000, RET_TRACE),
            (5000, RET_TRACE),
            (u64::MAX, RET_TRACE), // -1
            (1 << 32, RET_ALLOW),  // only the low word counts
        ] {
            assert_eq!(run(&p, 3, AUDIT_ARCH, [fd, 0, 0, 0, 0, 0]), want, "fd {fd}");
        }
    }

    #[test]
    fn arg_in_block_instruction_by_instruction() {
        let mut s = SyscallSet::new();
        s.insert(Sysno::read); // 0
        s.insert_rule(
            Sysno::mmap,
            Rule::OnlyArgIn {
                arg: 4,
                min: 2000,
                max: 0x8000_0000,
            },
        ); // 9
        s.insert_rule(Sysno::close, Rule::UnlessArgBelow { arg: 0, min: 1000 }); // 3
        let p = compile(&s).unwrap();
        let body: Vec<_> = p[6..].iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            body,
            vec![
                (JEQ, 3, 0, 0),            // read -> ret TRACE at 4
                (JEQ, 3, 0, 3),            // close -> below block at 5
                (JEQ, 6, 0, 9),            // mmap -> in block at 9
                (RET, 0, 0, RET_ALLOW),    // 3
                (RET, 0, 0, RET_TRACE),    // 4
                (LD_W_ABS, 0, 0, 16),      // 5: args[0] low word
                (JGE, 1, 0, 1000),         // >= 1000 -> ret TRACE
                (RET, 0, 0, RET_ALLOW),    // 7
                (RET, 0, 0, RET_TRACE),    // 8
                (LD_W_ABS, 0, 0, 16 + 32), // 9: args[4] low word
                (JGE, 1, 0, 0x8000_0000),  // >= max -> ret ALLOW
                (JGE, 1, 0, 2000),         // >= min -> ret TRACE
                (RET, 0, 0, RET_ALLOW),    // 12
                (RET, 0, 0, RET_TRACE),    // 13
            ]
        );
        for (fd, want) in [
            (0u64, RET_ALLOW),
            (1999, RET_ALLOW),
            (2000, RET_TRACE),
            (5000, RET_TRACE),
            (0x7fff_ffff, RET_TRACE),
            (u64::MAX, RET_ALLOW),         // -1: an anonymous mapping
            ((1 << 32) | 2000, RET_TRACE), // only the low word counts
        ] {
            assert_eq!(run(&p, 9, AUDIT_ARCH, [0, 0, 0, 0, fd, 0]), want, "fd {fd}");
        }
        assert_eq!(run(&p, 3, AUDIT_ARCH, [999, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, 3, AUDIT_ARCH, [1000, 0, 0, 0, 0, 0]), RET_TRACE);
    }

    #[test]
    fn arg_zero_block_instruction_by_instruction() {
        let mut s = SyscallSet::new();
        s.insert_rule(Sysno::sendto, Rule::UnlessArgZero { arg: 4 }); // 44
        let p = compile(&s).unwrap();
        let body: Vec<_> = p[6..].iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            body,
            vec![
                (JEQ, 2, 0, 44),           // sendto -> block at 3
                (RET, 0, 0, RET_ALLOW),    // 1
                (RET, 0, 0, RET_TRACE),    // 2
                (LD_W_ABS, 0, 0, 16 + 32), // 3: args[4] low word
                (JEQ, 0, 3, 0),            // set -> ret TRACE at 8
                (LD_W_ABS, 0, 0, 20 + 32), // 5: args[4] high word
                (JEQ, 0, 1, 0),            // set -> ret TRACE at 8
                (RET, 0, 0, RET_ALLOW),    // 7
                (RET, 0, 0, RET_TRACE),    // 8
            ]
        );
        for (addr, want) in [
            (0u64, RET_ALLOW),
            (8, RET_TRACE),
            (1 << 32, RET_TRACE), // a pointer at 4 GiB
            (0x7fff_0000_0000, RET_TRACE),
            (u64::MAX, RET_TRACE),
            (0xffff_ffff, RET_TRACE),
        ] {
            let got = run(&p, 44, AUDIT_ARCH, [3, 0, 0, 0, addr, 0]);
            assert_eq!(got, want, "address {addr:#x}");
        }
        // In a chain: after a rule that lets the call run, before one
        // that stops it.
        let mut s = SyscallSet::new();
        s.insert_rule(Sysno::recvfrom, Rule::UnlessArgBelow { arg: 0, min: 1000 })
            .also_stop(Sysno::recvfrom, Rule::UnlessArgZero { arg: 4 })
            .also_stop(
                Sysno::recvfrom,
                Rule::OnlyArgIn {
                    arg: 2,
                    min: 7,
                    max: 8,
                },
            );
        let p = compile(&s).unwrap();
        let nr = Sysno::recvfrom.id() as u32;
        for (args, want) in [
            ([3, 0, 0, 0, 0, 0], RET_ALLOW),
            ([3, 0, 0, 0, 1 << 40, 0], RET_TRACE),
            ([3, 0, 0, 0, 16, 0], RET_TRACE),
            ([3, 0, 7, 0, 0, 0], RET_TRACE),
            ([1000, 0, 0, 0, 0, 0], RET_TRACE),
        ] {
            assert_eq!(run(&p, nr, AUDIT_ARCH, args), want, "{args:x?}");
        }
        check_exhaustively(&s);
    }

    #[test]
    fn sets_mixing_all_argument_rules_match() {
        let mut s = SyscallSet::diatom_default();
        s.extend_from(&SyscallSet::internal());
        for nr in [Sysno::mmap, Sysno::pread64, Sysno::sendfile] {
            s.insert_rule(
                nr,
                Rule::OnlyArgIn {
                    arg: 2,
                    min: 0x100,
                    max: 0x1000,
                },
            );
        }
        check_exhaustively(&s);
    }

    #[test]
    fn sets_mixing_both_argument_rules_match() {
        let mut s = SyscallSet::diatom_default();
        s.extend_from(&SyscallSet::internal());
        for nr in [Sysno::close, Sysno::fsync, Sysno::fdatasync] {
            s.insert_rule(
                nr,
                Rule::UnlessArgBelow {
                    arg: 0,
                    min: 0x1000,
                },
            );
        }
        check_exhaustively(&s);
    }

    #[test]
    fn calls_with_several_rules_stop_when_any_does() {
        let mut s = SyscallSet::diatom_default();
        s.extend_from(&SyscallSet::internal());
        s.insert_rule(Sysno::fcntl, Rule::UnlessArgBelow { arg: 0, min: 0x100 })
            .also_stop(
                Sysno::fcntl,
                Rule::OnlyArgIn {
                    arg: 1,
                    min: 0x1000,
                    max: 0x1001,
                },
            );
        s.insert_rule(
            Sysno::read,
            Rule::UnlessArgHasBits {
                arg: 2,
                bits: 0x100,
            },
        )
        .also_stop(
            Sysno::read,
            Rule::UnlessArgBelow {
                arg: 3,
                min: 0x1000,
            },
        )
        .also_stop(
            Sysno::read,
            Rule::OnlyArgIn {
                arg: 0,
                min: 0,
                max: 0x100,
            },
        );
        check_exhaustively(&s);
        let p = compile(&s).unwrap();
        let nr = Sysno::fcntl.id() as u32;
        assert_eq!(run(&p, nr, AUDIT_ARCH, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, nr, AUDIT_ARCH, [3, 0x1000, 0, 0, 0, 0]), RET_TRACE);
        assert_eq!(run(&p, nr, AUDIT_ARCH, [0x100, 1, 0, 0, 0, 0]), RET_TRACE);
    }

    #[test]
    fn internal_node_uses_jge_pivot() {
        let s: SyscallSet = [
            Sysno::read,
            Sysno::write,
            Sysno::open,
            Sysno::close,
            Sysno::stat,
        ]
        .into_iter()
        .collect();
        let p = compile(&s).unwrap();
        // 5 entries: left = [0,1] (leaf: 2 jeq + 2 ret = 4 insns), right = [2,3,4].
        let i = p[6];
        assert_eq!((i.code, i.jt, i.jf, i.k), (JGE, 4, 0, 2));
        assert_eq!(p[7].k, 0);
        assert_eq!(p[11].k, 2, "right subtree starts after the left one");
    }

    fn check_exhaustively(s: &SyscallSet) {
        let p = compile(s).unwrap();
        for nr in 0..(MAX_NR as u32 + 10) {
            for flags in [0u64, 0x1000, 0x100, 1 << 32, 0x1000 << 32] {
                let args = [flags, 0, flags, flags, flags, 0];
                let got = run(&p, nr, AUDIT_ARCH, args);
                let stops = |rule: Rule| match rule {
                    Rule::Always => true,
                    Rule::UnlessArgHasBits { arg, bits } => args[arg as usize] as u32 & bits == 0,
                    Rule::UnlessArgBelow { arg, min } => args[arg as usize] as u32 >= min,
                    Rule::UnlessArgZero { arg } => args[arg as usize] != 0,
                    Rule::OnlyArgIn { arg, min, max } => {
                        (min..max).contains(&(args[arg as usize] as u32))
                    }
                };
                let want = if s.contains(nr as u64) && s.rules(nr).into_iter().any(stops) {
                    RET_TRACE
                } else {
                    RET_ALLOW
                };
                assert_eq!(got, want, "nr {nr} flags {flags:#x}");
            }
            assert_eq!(
                run(&p, nr, 0x4000_0003, [0; 6]),
                RET_KILL_PROCESS,
                "i386 arch"
            );
        }
        assert_eq!(
            run(&p, X32_SYSCALL_BIT | 2, AUDIT_ARCH, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn default_set_matches_membership_for_every_number() {
        let mut s = SyscallSet::diatom_default();
        s.extend_from(&SyscallSet::internal());
        check_exhaustively(&s);
    }

    #[test]
    fn full_set_needs_long_jumps_and_still_matches() {
        let all: SyscallSet = (0..MAX_NR).filter_map(Sysno::new).collect();
        let p = compile(&all).unwrap();
        assert!(p.iter().any(|i| i.code == JA), "a 300+ entry tree needs ja");
        check_exhaustively(&all);
    }

    #[test]
    fn sparse_sets_match() {
        for step in [1usize, 3, 7, 50] {
            let s: SyscallSet = (0..MAX_NR).step_by(step).filter_map(Sysno::new).collect();
            check_exhaustively(&s);
        }
    }
}
