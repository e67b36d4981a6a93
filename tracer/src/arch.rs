//! Architecture-specific register access: system call number, arguments,
//! return value, instruction and stack pointers, and the constants the seccomp
//! filter needs (audit architecture, x32 bit).
//!
//! Everything that depends on the CPU lives here; the rest of the crate only
//! uses [`Regs`] and the constants. Only x86_64 is implemented. An aarch64 port
//! would read the registers with `PTRACE_GETREGSET(NT_PRSTATUS)`, change the
//! system call number with `PTRACE_SETREGSET(NT_ARM_SYSTEM_CALL)`, and use
//! `AUDIT_ARCH_AARCH64` and a 4-byte `svc #0`.

use nix::unistd::Pid;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("tracer: only x86_64 is implemented (see arch.rs for what a port needs)");

/// `AUDIT_ARCH_X86_64`: the value of `seccomp_data.arch` for native calls.
pub const AUDIT_ARCH: u32 = 0xc000_003e;

/// System call numbers at or above this bit come from the x32 ABI, which the
/// filter refuses (the tracer does not decode x32 arguments).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Length in bytes of the `syscall` instruction; rewinding the instruction
/// pointer by this much re-executes the call.
pub const SYSCALL_INSN_LEN: u64 = 2;

/// A tracee's general-purpose registers as the kernel reports them at a
/// ptrace stop.
#[derive(Clone, Copy)]
pub struct Regs(pub(crate) libc::user_regs_struct);

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regs")
            .field("nr", &self.syscall_nr())
            .field("args", &self.args())
            .field("ret", &self.ret())
            .field("ip", &format_args!("{:#x}", self.ip()))
            .field("sp", &format_args!("{:#x}", self.sp()))
            .finish()
    }
}

impl Regs {
    /// Reads the registers of a stopped tracee (`PTRACE_GETREGS`).
    pub fn get(tid: Pid) -> nix::Result<Self> {
        nix::sys::ptrace::getregs(tid).map(Regs)
    }

    /// Writes the registers back (`PTRACE_SETREGS`).
    pub fn set(&self, tid: Pid) -> nix::Result<()> {
        nix::sys::ptrace::setregs(tid, self.0)
    }

    /// The system call number at a syscall stop (`orig_rax`); -1 means "skip".
    pub fn syscall_nr(&self) -> i64 {
        self.0.orig_rax as i64
    }

    /// Changes the system call about to run; -1 skips it (the return value
    /// register is then what the caller sees).
    pub fn set_syscall_nr(&mut self, nr: i64) {
        self.0.orig_rax = nr as u64;
    }

    /// The six system call arguments in order.
    pub fn args(&self) -> [u64; 6] {
        let r = &self.0;
        [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
    }

    /// Argument `i` (0..6). Panics on a larger index: that is a bug.
    pub fn arg(&self, i: usize) -> u64 {
        self.args()[i]
    }

    /// Sets argument `i` (0..6).
    pub fn set_arg(&mut self, i: usize, v: u64) {
        let r = &mut self.0;
        match i {
            0 => r.rdi = v,
            1 => r.rsi = v,
            2 => r.rdx = v,
            3 => r.r10 = v,
            4 => r.r8 = v,
            5 => r.r9 = v,
            _ => panic!("system call argument index {i} out of range"),
        }
    }

    /// The return value register (meaningful at syscall exit).
    pub fn ret(&self) -> i64 {
        self.0.rax as i64
    }

    /// Sets the return value register.
    pub fn set_ret(&mut self, v: i64) {
        self.0.rax = v as u64;
    }

    /// Instruction pointer (just after the `syscall` instruction at a stop).
    pub fn ip(&self) -> u64 {
        self.0.rip
    }

    /// Sets the instruction pointer.
    pub fn set_ip(&mut self, v: u64) {
        self.0.rip = v;
    }

    /// Stack pointer.
    pub fn sp(&self) -> u64 {
        self.0.rsp
    }

    /// Prepares these registers to re-execute the system call `nr` that was
    /// interrupted at a syscall-exit stop: rewinds the instruction pointer over
    /// the `syscall` instruction and puts the number back where the
    /// instruction reads it.
    pub fn rewind_syscall(&mut self, nr: i64) {
        self.0.rip -= SYSCALL_INSN_LEN;
        self.0.rax = nr as u64;
        self.0.orig_rax = nr as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Regs {
        // SAFETY: user_regs_struct is plain integers; all-zero is valid.
        Regs(unsafe { std::mem::zeroed() })
    }

    #[test]
    fn args_round_trip_in_abi_order() {
        let mut r = zero();
        for i in 0..6 {
            r.set_arg(i, 10 + i as u64);
        }
        assert_eq!(r.args(), [10, 11, 12, 13, 14, 15]);
        assert_eq!(r.0.r10, 13, "the fourth argument is r10, not rcx");
    }

    #[test]
    fn rewind_moves_back_over_syscall_instruction() {
        let mut r = zero();
        r.set_ip(0x1002);
        r.set_ret(-38);
        r.rewind_syscall(39);
        assert_eq!(r.ip(), 0x1000);
        assert_eq!(r.ret(), 39);
        assert_eq!(r.syscall_nr(), 39);
    }
}
