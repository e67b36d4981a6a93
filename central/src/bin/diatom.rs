//! `diatom`: the CLI a user runs on the central machine.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use diatom_central::cli::{parse_signal, Cli, Command};
use diatom_central::cmd::{self, admin, chain, fail};

/// musl's malloc gives freed memory back to the system at once, and the
/// home allocates and frees all the time: see `diatom_central::alloc` for
/// what the CLI's musl build (the default) uses instead.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: diatom_central::alloc::CachingAlloc = diatom_central::alloc::CachingAlloc;

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
