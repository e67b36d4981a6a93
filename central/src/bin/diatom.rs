//! `diatom`: the CLI a user runs on the central machine.

use std::process::ExitCode;

use clap::Parser;
use diatom_central::cli::{Cli, Command};
use diatom_central::cmd::{self, chain, fail};

fn main() -> ExitCode {
    let cli = Cli::parse();
    diatom_client::config::init_logging(cli.verbose, cli.quiet);
    match &cli.command {
        Command::Trace(args) => cmd::trace::run(args),
        Command::Keygen(args) => match cmd::keygen::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&chain(&e)),
        },
        _ => fail(&"this subcommand is not built yet"),
    }
}
