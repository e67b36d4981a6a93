//! The embedded default: when no central daemon answers, `diatom exec`
//! runs a central and one node inside its own process, on the loopback
//! address with ephemeral ports and a fresh key that never touches disk,
//! over the real UDP protocol and the real tracer. Its state lives in a
//! private temporary directory removed when the job ends, so nothing of it
//! outlives the `diatom exec` process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diatom_client::config::{cpu_count, host_name, total_memory, ClientConfig};
use diatom_client::daemon::Node;
use dscp_dicp::Key;

use crate::daemon::core::Central;
use crate::store::Store;

/// A running in-process cluster.
#[derive(Debug)]
pub struct Embedded {
    central: Arc<Central>,
    dir: PathBuf,
}

impl Embedded {
    /// Starts central and one node, and waits until the node registered.
    pub fn start() -> Result<Self, String> {
        let dir = private_dir()?;
        match Self::start_in(&dir) {
            Ok(central) => Ok(Self { central, dir }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn start_in(dir: &Path) -> Result<Arc<Central>, String> {
        let key = Key::generate();
        let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
        let store = Store::open(&dir.join("central")).map_err(|e| e.to_string())?;
        let central =
            crate::daemon::start_central(loopback, &key, store).map_err(|e| e.to_string())?;
        let name = host_name();
        let cfg = ClientConfig {
            central: central.local_addr(),
            bind: loopback,
            key: PathBuf::new(),
            state_dir: dir.join("node"),
            name: name.clone(),
            slots: cpu_count(),
            job_memory: total_memory() / 2,
            job_pids: 4096,
            // The embedded node runs jobs as the caller: it is the caller.
            job_uids: None,
            // A one-off command leaves the host's cgroup options alone.
            favor_dynmods: false,
        };
        let node = Node::new(cfg, &key).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("embedded-node".into())
            .spawn(move || node.run())
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !central.node_up(&name) {
            if Instant::now() > deadline {
                return Err("the embedded node did not register".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(central)
    }

    /// The embedded central.
    pub fn central(&self) -> &Central {
        &self.central
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh 0700 directory under `$XDG_RUNTIME_DIR` or the temp dir.
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    for i in 0..100u32 {
        let d = base.join(format!("diatom-embedded-{}-{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
        }
    }
    Err(format!(
        "cannot create a private directory in {}",
        base.display()
    ))
}
