//! `diatom-central`: the central daemon.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use diatom_central::config::{CentralConfig, CentralFlags};
use diatom_central::daemon::{control_server, start_central};
use diatom_central::http;
use diatom_central::store::Store;
use dscp_dicp::Key;

fn run(flags: &CentralFlags) -> Result<(), String> {
    let cfg = CentralConfig::resolve(flags).map_err(|e| e.to_string())?;
    let key = Key::load(&cfg.key).map_err(|e| e.to_string())?;
    let store = Store::open(&cfg.state_dir).map_err(|e| e.to_string())?;
    let listener = control_server::bind(&cfg.socket)
        .map_err(|e| format!("control socket {}: {e}", cfg.socket.display()))?;
    // The dashboard's token and address are checked before anything
    // starts, so a bad one is a plain start failure.
    let token = cfg
        .http_token
        .as_deref()
        .map(http::load_token)
        .transpose()
        .map_err(|e| e.to_string())?;
    let http_listener = cfg
        .http
        .map(http::bind)
        .transpose()
        .map_err(|e| e.to_string())?;
    let central = start_central(cfg.bind, &key, store).map_err(|e| {
        // The control socket is ours: leave no socket nobody serves.
        let _ = std::fs::remove_file(&cfg.socket);
        match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "cannot bind UDP {}: address in use (is another diatom-central running there?)",
                cfg.bind
            ),
            _ => format!("cannot bind UDP {}: {e}", cfg.bind),
        }
    })?;
    if let Some(listener) = http_listener {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        http::spawn(listener, token, Arc::clone(&central)).map_err(|e| e.to_string())?;
        log::info!("dashboard on http://{addr}/");
    }
    log::info!(
        "diatom-central {} on {} (control socket {})",
        env!("CARGO_PKG_VERSION"),
        central.local_addr(),
        cfg.socket.display()
    );
    control_server::serve(listener, central);
    Err("the control socket stopped".into())
}

fn main() -> ExitCode {
    let flags = CentralFlags::parse();
    diatom_client::config::init_logging(flags.common.verbose, flags.common.quiet);
    match run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diatom-central: {e}");
            ExitCode::FAILURE
        }
    }
}
