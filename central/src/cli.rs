//! The `diatom` command line as clap parses it: raw flags only. Each
//! subcommand's module in [`crate::cmd`] turns its raw arguments into a
//! validated plan before doing anything (the ripgrep two-step).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Default path of central's control socket.
pub const DEFAULT_SOCKET: &str = "/run/diatom/central.sock";

/// `diatom`: run programs on the cluster's nodes, and look at the cluster.
#[derive(Debug, Parser)]
#[command(name = "diatom", version, about, propagate_version = true)]
pub struct Cli {
    /// Central's control socket.
    #[arg(long, global = true, env = "DIATOM_SOCKET", value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// More logging on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run PROGRAM on a node, in this machine's world (files, network, user).
    Exec(ExecArgs),
    /// List the nodes.
    Nodes(ListArgs),
    /// List jobs (running ones; --all adds finished ones).
    Ps(PsArgs),
    /// Central's own state.
    Status(ListArgs),
    /// Send a signal to every process of a job.
    Kill(KillArgs),
    /// Write a new 256-bit cluster key (mode 0600).
    Keygen(KeygenArgs),
    /// Run PROGRAM locally under the tracer, printing intercepted calls.
    Trace(crate::cmd::trace::TraceArgs),
}

/// `diatom exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run on this node instead of the least loaded one.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Give the program a pseudo-terminal on the node.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Add or override an environment variable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<OsString>,
    /// Memory limit for this job, e.g. 512M (capped by the node's).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Process/thread limit for this job (capped by the node's).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub command: Vec<OsString>,
}

/// `--json` for commands that list things.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print one JSON value instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `diatom ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Include finished jobs.
    #[arg(short, long)]
    pub all: bool,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `diatom kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name (TERM, SIGKILL, ...) or number.
    #[arg(short, long, default_value = "TERM")]
    pub signal: String,
    /// The job id.
    pub job: u64,
}

/// `diatom keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key; an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Parses a signal given as a name (`TERM`, `SIGTERM`, `term`) or a number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("BOGUS"), None);
    }

    #[test]
    fn exec_stops_at_the_program() {
        let cli = Cli::try_parse_from(["diatom", "exec", "-e", "A=1", "ls", "-l", "--node", "x"])
            .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(e.command, ["ls", "-l", "--node", "x"]);
        assert_eq!(e.env, ["A=1"]);
        assert_eq!(e.node, None);
        let cli =
            Cli::try_parse_from(["diatom", "exec", "--node", "n1", "-t", "--", "-weird"]).unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(e.command, ["-weird"]);
        assert!(e.tty);
    }

    #[test]
    fn globals_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["diatom", "nodes", "--json", "--socket", "/x", "-v"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/x"));
        assert_eq!(cli.verbose, 1);
    }
}
