//! Settings of `diatom-central`: raw flags (clap), the `[central]` table of
//! the configuration file, and the validated [`CentralConfig`] merged from
//! both (a flag wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use diatom_client::config::{load_table, ConfigError, DaemonFlags};
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
    /// Flags both daemons take.
    #[command(flatten)]
    pub common: DaemonFlags,
    /// Control socket for `diatom` [default: /run/diatom/central.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
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
        let file: CentralFile = load_table(flags.common.config.as_deref(), "central")?;
        let common = flags.common.merge(
            file.bind,
            file.key,
            file.state_dir,
            "/var/lib/diatom/central",
        )?;
        Ok(Self {
            bind: common.bind,
            key: common.key,
            state_dir: common.state_dir,
            socket: flags
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        })
    }
}
