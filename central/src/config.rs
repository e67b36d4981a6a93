//! Settings of `diatom-central`: raw flags (clap), the `[central]` table of
//! the configuration file, and the validated [`CentralConfig`] merged from
//! both (a flag wins). `--http` off loopback without `--http-token` is
//! refused here, like any other bad setting.

use std::net::{SocketAddr, ToSocketAddrs};
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
    /// Serve the read-only web dashboard and JSON API at ADDR (HOST:PORT,
    /// e.g. 127.0.0.1:12080) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Bearer token file for --http (mode 0600 or stricter); required when
    /// ADDR is not a loopback address.
    #[arg(long, value_name = "FILE")]
    pub http_token: Option<PathBuf>,
}

/// The `[central]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CentralFile {
    bind: Option<String>,
    key: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    http: Option<String>,
    http_token: Option<PathBuf>,
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
    /// Where the dashboard listens, when on.
    pub http: Option<SocketAddr>,
    /// The dashboard's bearer token file (required off loopback).
    pub http_token: Option<PathBuf>,
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
        let http = flags
            .http
            .clone()
            .or(file.http)
            .map(|a| http_addr(&a))
            .transpose()?;
        let http_token = flags.http_token.clone().or(file.http_token);
        if http.is_some_and(|a| !a.ip().is_loopback()) && http_token.is_none() {
            // Anyone on the network could read the cluster otherwise.
            return Err(ConfigError::Missing(
                "--http-token (required when --http is not a loopback address)",
            ));
        }
        Ok(Self {
            http,
            http_token,
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

/// Parses the dashboard's `HOST:PORT` (a name resolves to its first
/// address; the port is required: the dashboard has no default one).
fn http_addr(value: &str) -> Result<SocketAddr, ConfigError> {
    let err = |reason: String| ConfigError::Address {
        what: "--http",
        value: value.to_owned(),
        reason,
    };
    value
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        toml: &str,
        http: Option<&str>,
        token: Option<&str>,
    ) -> Result<CentralConfig, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("diatom-central-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::Read {
            path: dir.clone(),
            source: e,
        })?;
        let file = dir.join(format!("c{}.toml", toml.len()));
        std::fs::write(&file, toml).map_err(|e| ConfigError::Read {
            path: file.clone(),
            source: e,
        })?;
        let mut flags = CentralFlags::default();
        flags.common.config = Some(file.clone());
        flags.http = http.map(str::to_owned);
        flags.http_token = token.map(PathBuf::from);
        let r = CentralConfig::resolve(&flags);
        let _ = std::fs::remove_file(&file);
        r
    }

    #[test]
    fn http_needs_a_token_off_loopback() {
        let off = resolve("", None, None).unwrap();
        assert_eq!((off.http, off.http_token), (None, None));
        let lo = resolve("[central]\nhttp = \"127.0.0.1:12080\"\n", None, None).unwrap();
        assert_eq!(lo.http, Some("127.0.0.1:12080".parse().unwrap()));
        let v6 = resolve("", Some("[::1]:8080"), None).unwrap();
        assert_eq!(v6.http, Some("[::1]:8080".parse().unwrap()));
        for open in ["0.0.0.0:12080", "10.1.2.3:80"] {
            let e = resolve("", Some(open), None).unwrap_err();
            assert!(e.to_string().contains("--http-token"), "{open}: {e}");
            let ok = resolve("", Some(open), Some("/etc/diatom/http.token")).unwrap();
            assert_eq!(ok.http_token, Some(PathBuf::from("/etc/diatom/http.token")));
        }
        let file_token = resolve(
            "[central]\nhttp = \"0.0.0.0:1\"\nhttp_token = \"/t\"\n",
            None,
            None,
        )
        .unwrap();
        assert_eq!(file_token.http_token, Some(PathBuf::from("/t")));
        assert!(resolve("", Some("no port"), None).is_err());
    }
}
