//! Settings of the node daemon, and the configuration-file loader both
//! daemons share.
//!
//! Every setting is a flag; the TOML file (`--config`, env `DIATOM_CONFIG`,
//! default `/etc/diatom/diatom.toml`) may hold the same settings in its
//! `[client]` and `[central]` tables, and a flag wins. Parsing happens in two
//! steps, as ripgrep does: clap gives raw flags, then [`ClientConfig::resolve`]
//! merges the file and validates everything into a config the daemon can
//! trust.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The one UDP port both protocols use.
pub const DIATOM_PORT: u16 = 12036;
/// Where the configuration file is looked for when neither flag nor env names one.
pub const DEFAULT_CONFIG: &str = "/etc/diatom/diatom.toml";
/// Default cluster key file.
pub const DEFAULT_KEY: &str = "/etc/diatom/cluster.key";

/// What can be wrong with the settings; each is reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown keys.
    #[error("bad config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, on one line.
        message: String,
    },
    /// A host name or address did not resolve.
    #[error("cannot resolve {what} address {value:?}: {reason}")]
    Address {
        /// Which setting.
        what: &'static str,
        /// What was given.
        value: String,
        /// Why it failed.
        reason: String,
    },
    /// A size such as `512M` could not be parsed.
    #[error("bad size {0:?}: expected a number with an optional K, M, G or T suffix")]
    Size(String),
    /// A required setting is absent from both flags and file.
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// A numeric setting is out of range.
    #[error("{what} must be {rule}")]
    Range {
        /// Which setting.
        what: &'static str,
        /// The rule it broke.
        rule: &'static str,
    },
}

/// Chooses the configuration file: the flag, then `DIATOM_CONFIG`, then the
/// default path. Only an explicitly named file must exist.
pub fn config_path(flag: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = flag {
        return (p.to_path_buf(), true);
    }
    match std::env::var_os("DIATOM_CONFIG") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

/// Loads one table (`[client]` or `[central]`) of the configuration file.
/// A missing default file yields `T::default()`.
pub fn load_table<T: DeserializeOwned + Default>(
    flag: Option<&Path>,
    table: &str,
) -> Result<T, ConfigError> {
    let (path, required) = config_path(flag);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(T::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse_table(&text, table).map_err(|message| ConfigError::Parse { path, message })
}

fn parse_table<T: DeserializeOwned + Default>(text: &str, table: &str) -> Result<T, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    for key in doc.keys() {
        if key != "client" && key != "central" {
            return Err(format!("unknown table [{key}]"));
        }
    }
    match doc.remove(table) {
        None => Ok(T::default()),
        Some(v) => v
            .try_into()
            .map_err(|e: toml::de::Error| format!("[{table}]: {}", one_line(&e.to_string()))),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses `HOST[:PORT]` (or `[v6]:PORT`), defaulting the port to 12036.
pub fn resolve_addr(what: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let err = |reason: String| ConfigError::Address {
        what,
        value: value.to_string(),
        reason,
    };
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(a);
    }
    let with_port = if value.parse::<std::net::IpAddr>().is_ok() || !value.contains(':') {
        if value.contains(':') {
            format!("[{value}]:{DIATOM_PORT}")
        } else {
            format!("{value}:{DIATOM_PORT}")
        }
    } else {
        value.to_string()
    };
    let mut addrs = with_port
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| err("no address found".to_string()))
}

/// Parses a size: bytes, or a number with a K/M/G/T suffix (powers of 1024),
/// optionally followed by `B` or `iB`.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::Size(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// Formats a byte count the way error messages show limits: `512 MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// Flags both daemons take.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct DaemonFlags {
    /// Configuration file (TOML; a flag wins over it) [default: $DIATOM_CONFIG or /etc/diatom/diatom.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:12036].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Cluster key file [default: /etc/diatom/cluster.key].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// State directory [default: /var/lib/diatom/central or /var/lib/diatom/client].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More logging on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging: errors only.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The settings both daemons share, after merging flags over a file table.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// UDP address.
    pub bind: SocketAddr,
    /// Cluster key file.
    pub key: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
}

impl DaemonFlags {
    /// Merges these flags over a file table's `bind`, `key` and `state_dir`.
    pub fn merge(
        &self,
        bind: Option<String>,
        key: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        default_state_dir: &str,
    ) -> Result<DaemonSettings, ConfigError> {
        let bind = self
            .bind
            .clone()
            .or(bind)
            .unwrap_or_else(|| format!("0.0.0.0:{DIATOM_PORT}"));
        Ok(DaemonSettings {
            bind: resolve_addr("--bind", &bind)?,
            key: self
                .key
                .clone()
                .or(key)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY)),
            state_dir: self
                .state_dir
                .clone()
                .or(state_dir)
                .unwrap_or_else(|| PathBuf::from(default_state_dir)),
        })
    }
}

/// Raw flags of `diatom-client`, as clap parses them.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "diatom-client",
    version,
    about = "Diatom node daemon: runs jobs from central in a sandbox under the tracer"
)]
pub struct ClientFlags {
    /// Flags both daemons take.
    #[command(flatten)]
    pub common: DaemonFlags,
    /// Central daemon, HOST[:PORT] (port defaults to 12036).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub central: Option<String>,
    /// Node name [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Jobs run at once [default: the number of CPUs].
    #[arg(long)]
    pub slots: Option<u32>,
    /// Most memory any one job may use, e.g. 4G [default: half the node's memory].
    #[arg(long, value_name = "SIZE")]
    pub job_memory: Option<String>,
    /// Most processes and threads any one job may have [default: 4096].
    #[arg(long, value_name = "N")]
    pub job_pids: Option<u64>,
    /// Uids jobs run as when the daemon is root, one per running job; none
    /// of them may own anything on the node [default: 1900000000-1900065535].
    #[arg(long, value_name = "FIRST-LAST")]
    pub job_uids: Option<String>,
    /// Turn on the kernel's `favordynmods` cgroup option when root (jobs
    /// join their cgroups in ~0.1 ms instead of up to ~15 ms on an idle
    /// node) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub cgroup_favor_dynmods: Option<bool>,
}

/// The `[client]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    central: Option<String>,
    bind: Option<String>,
    key: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    name: Option<String>,
    slots: Option<u32>,
    job_memory: Option<String>,
    job_pids: Option<u64>,
    job_uids: Option<String>,
    cgroup_favor_dynmods: Option<bool>,
}

/// The validated settings the node daemon runs with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Central's UDP address.
    pub central: SocketAddr,
    /// Local UDP address.
    pub bind: SocketAddr,
    /// Cluster key file.
    pub key: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// This node's name.
    pub name: String,
    /// Concurrent jobs.
    pub slots: u32,
    /// Memory cap per job, bytes.
    pub job_memory: u64,
    /// Process/thread cap per job.
    pub job_pids: u64,
    /// The range of unprivileged uids jobs run as (uid = gid), one per
    /// running job; None runs them as the daemon's own user (an
    /// unprivileged or embedded node).
    pub job_uids: Option<(u32, u32)>,
    /// Whether a root daemon turns on the kernel's `favordynmods` cgroup
    /// option (fast moves of jobs into their cgroups; see
    /// `sandbox::dynmods`).
    pub favor_dynmods: bool,
}

impl ClientConfig {
    /// Merges flags over the file's `[client]` table and validates.
    pub fn resolve(flags: &ClientFlags) -> Result<Self, ConfigError> {
        let file: ClientFile = load_table(flags.common.config.as_deref(), "client")?;
        let common = flags.common.merge(
            file.bind,
            file.key,
            file.state_dir,
            "/var/lib/diatom/client",
        )?;
        let central = flags
            .central
            .clone()
            .or(file.central)
            .ok_or(ConfigError::Missing("--central HOST[:PORT]"))?;
        let slots = flags.slots.or(file.slots).unwrap_or_else(cpu_count);
        if slots == 0 {
            return Err(ConfigError::Range {
                what: "--slots",
                rule: "at least 1",
            });
        }
        let job_memory = match flags.job_memory.clone().or(file.job_memory) {
            Some(s) => parse_size(&s)?,
            None => total_memory() / 2,
        };
        let job_pids = flags.job_pids.or(file.job_pids).unwrap_or(4096);
        if job_pids == 0 {
            return Err(ConfigError::Range {
                what: "--job-pids",
                rule: "at least 1",
            });
        }
        let job_uids = match flags.job_uids.clone().or(file.job_uids) {
            Some(r) => Some(parse_uid_range(&r)?),
            None => default_job_uids(),
        };
        if let Some((first, last)) = job_uids {
            if u64::from(last - first) + 1 < u64::from(slots) {
                return Err(ConfigError::Range {
                    what: "--job-uids",
                    rule: "a range with at least one uid per slot",
                });
            }
        }
        Ok(Self {
            central: resolve_addr("--central", &central)?,
            bind: common.bind,
            key: common.key,
            state_dir: common.state_dir,
            name: flags.name.clone().or(file.name).unwrap_or_else(host_name),
            slots,
            job_memory,
            job_pids,
            job_uids: if nix::unistd::geteuid().is_root() {
                job_uids
            } else {
                None
            },
            favor_dynmods: flags
                .cgroup_favor_dynmods
                .or(file.cgroup_favor_dynmods)
                .unwrap_or(true),
        })
    }
}

/// The default per-job uid range of a root daemon: high ids no
/// distribution allocates (subordinate uid ranges start at 100000 and
/// grow by 65536 per user); None when the daemon is unprivileged.
pub fn default_job_uids() -> Option<(u32, u32)> {
    nix::unistd::geteuid()
        .is_root()
        .then_some((1_900_000_000, 1_900_065_535))
}

/// Parses `FIRST-LAST` (a range of uids, neither of them 0).
pub fn parse_uid_range(s: &str) -> Result<(u32, u32), ConfigError> {
    let bad = ConfigError::Range {
        what: "--job-uids",
        rule: "FIRST-LAST with 0 < FIRST <= LAST < 4294967295",
    };
    let (a, b) = s.trim().split_once('-').ok_or(ConfigError::Range {
        what: "--job-uids",
        rule: "FIRST-LAST with 0 < FIRST <= LAST < 4294967295",
    })?;
    let (Ok(first), Ok(last)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) else {
        return Err(bad);
    };
    if first == 0 || first > last || last == u32::MAX {
        return Err(bad);
    }
    Ok((first, last))
}

/// The number of CPUs this process may run on.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Total physical memory in bytes (from sysinfo), or 1 GiB if unknown.
pub fn total_memory() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(1 << 30)
}

/// The host name, or `localhost` if it cannot be read.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h: OsString| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Starts logging on stderr at the level the -v/-q flags ask for.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, 2) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .parse_env("DIATOM_LOG")
        .format_timestamp_millis()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4KB").unwrap(), 4096);
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(512 << 20), "512 MiB");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
        assert_eq!(format_size(12), "12 B");
    }

    #[test]
    fn uid_ranges() {
        assert_eq!(parse_uid_range("200-299").unwrap(), (200, 299));
        assert!(parse_uid_range("0-5").is_err());
        assert!(parse_uid_range("9-5").is_err());
        assert!(parse_uid_range("5").is_err());
        assert!(parse_uid_range("1-4294967295").is_err());
    }

    #[test]
    fn addresses_default_the_port() {
        assert_eq!(
            resolve_addr("x", "10.0.0.1").unwrap(),
            "10.0.0.1:12036".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("x", "10.0.0.1:99").unwrap(),
            "10.0.0.1:99".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("x", "::1").unwrap(),
            "[::1]:12036".parse().unwrap()
        );
        assert_eq!(resolve_addr("x", "localhost").unwrap().port(), 12036);
        assert!(resolve_addr("x", "no such host.invalid").is_err());
    }

    #[test]
    fn tables_and_unknown_keys() {
        let t: ClientFile =
            parse_table("[client]\nslots = 3\n[central]\nbind = \"x\"\n", "client").unwrap();
        assert_eq!(t.slots, Some(3));
        assert!(parse_table::<ClientFile>("[client]\nslotz = 3\n", "client").is_err());
        assert!(parse_table::<ClientFile>("[other]\n", "client").is_err());
        assert!(parse_table::<ClientFile>("[client\n", "client").is_err());
    }

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("diatom-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("d.toml");
        std::fs::write(
            &file,
            "[client]\ncentral = \"127.0.0.1:5\"\nslots = 7\nname = \"f\"\njob_memory = \"1G\"\n",
        )
        .unwrap();
        let flags = ClientFlags {
            common: DaemonFlags {
                config: Some(file.clone()),
                ..Default::default()
            },
            name: Some("flag".into()),
            ..Default::default()
        };
        let c = ClientConfig::resolve(&flags).unwrap();
        assert_eq!(c.name, "flag");
        assert_eq!(c.slots, 7);
        assert_eq!(c.job_memory, 1 << 30);
        assert_eq!(c.central, "127.0.0.1:5".parse().unwrap());
        let missing = ClientFlags {
            common: DaemonFlags {
                config: Some(dir.join("nope.toml")),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(
            ClientConfig::resolve(&missing),
            Err(ConfigError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
