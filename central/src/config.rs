//! Settings of `diatom-central`: raw flags (clap), the `[central]` table of
//! the configuration file, and the validated [`CentralConfig`] merged from
//! both (a flag wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use diatom_client::config::{load_table, resolve_addr, ConfigError, DEFAULT_KEY, DIATOM_PORT};
use serde::Deserialize;

use crate::cli::DEFAULT_SOCKET;

/// Raw flags of `diatom-central`.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "diatom-central",
    version,
    about = "Diatom central daemon: node registry, scheduling, job table, persistent state"
)]
pub struct CentralFlags {
    /// Configuration file (TOML, table [central]).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:12036].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Cluster key file [default: /etc/diatom/cluster.key].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// State directory holding the SQLite database [default: /var/lib/diatom/central].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Control socket for `diatom` [default: /run/diatom/central.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// More logging on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging: errors only.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The `[central]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CentralFile {
    bind: Option<String>,
    key: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
}

/// The validated settings central runs with.
#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// UDP address.
    pub bind: SocketAddr,
    /// Cluster key file.
    pub key: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
}

impl CentralConfig {
    /// Merges flags over the file's `[central]` table and validates.
    pub fn resolve(flags: &CentralFlags) -> Result<Self, ConfigError> {
        let file: CentralFile = load_table(flags.config.as_deref(), "central")?;
        let bind = flags
            .bind
            .clone()
            .or(file.bind)
            .unwrap_or_else(|| format!("0.0.0.0:{DIATOM_PORT}"));
        Ok(Self {
            bind: resolve_addr("--bind", &bind)?,
            key: flags
                .key
                .clone()
                .or(file.key)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY)),
            state_dir: flags
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/diatom/central")),
            socket: flags
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        })
    }
}
