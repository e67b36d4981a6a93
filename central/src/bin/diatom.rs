//! `diatom`: the CLI a user runs on the central machine.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use diatom_central::cli::{parse_signal, Cli, Command};
use diatom_central::cmd::{self, admin, chain, fail};

/// musl's allocator maps and unmaps every large buffer (page faults and
/// TLB shootdowns on each file read the home serves); the static CLI is
/// built against musl for its ~0.15 ms start (glibc's start probes the CPU
/// with dozens of CPUID instructions, each a VM exit here).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc gives freed memory back to the kernel 10 ms after its last use;
/// the home's file reads allocate a fresh buffer per Read (up to 16 MiB,
/// freed by another thread once sent), so they kept faulting in (and
/// zeroing) new pages: cold reads ~20 % slower than with glibc's malloc.
/// `diatom` lives as long as one job; its memory returns at its exit.
#[cfg(target_env = "musl")]
fn tune_allocator() {
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    /// `mi_option_purge_delay` in mimalloc.h (v3, the version the pinned
    /// `mimalloc` crate builds).
    const PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: sets one of mimalloc's options, valid at any time.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}

fn print(out: Result<String, String>) -> ExitCode {
    match out {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(cmd::EXIT_FAILURE);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    tune_allocator();
    let cli = Cli::parse();
    diatom_client::config::init_logging(cli.verbose, cli.quiet);
    match &cli.command {
        Command::Exec(args) => cmd::exec::run(&cli, args),
        Command::Nodes(a) => print(admin::nodes(&cli.socket, a.json)),
        Command::Ps(a) => print(admin::ps(&cli.socket, a.all, a.json)),
        Command::Status(a) => print(admin::status(&cli.socket, a.json)),
        Command::Kill(a) => match parse_signal(&a.signal) {
            None => fail(&format!("unknown signal {:?}", a.signal)),
            Some(sig) => match admin::kill(&cli.socket, a.job, sig) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
        },
        Command::Trace(args) => cmd::trace::run(args),
        Command::Keygen(args) => match cmd::keygen::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&chain(&e)),
        },
    }
}
