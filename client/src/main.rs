//! `diatom-client`: the node daemon.

use std::process::ExitCode;

use clap::Parser;
use diatom_client::config::{init_logging, ClientConfig, ClientFlags};
use diatom_client::daemon::Node;
use dscp_dicp::Key;

fn run(flags: &ClientFlags) -> Result<(), String> {
    let cfg = ClientConfig::resolve(flags).map_err(|e| e.to_string())?;
    let key = Key::load(&cfg.key).map_err(|e| e.to_string())?;
    let node = Node::new(cfg.clone(), &key).map_err(|e| e.to_string())?;
    log::info!(
        "diatom-client {} node {} on {} (central {})",
        env!("CARGO_PKG_VERSION"),
        cfg.name,
        node.local_addr(),
        cfg.central
    );
    node.run();
    Err("the endpoint stopped".into())
}

fn main() -> ExitCode {
    // No `net::keep_message_buffers` here, unlike the home: every job's
    // PID 1 is forked from this daemon, and a heap kept at 100 MiB after a
    // cold read makes each fork copy its page tables and the daemon's
    // threads take copy-on-write faults for as long as the job runs (a
    // warm start's spawn went from ~1.5 ms to 10-20 ms).
    let flags = ClientFlags::parse();
    init_logging(flags.common.verbose, flags.common.quiet);
    match run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diatom-client: {e}");
            ExitCode::FAILURE
        }
    }
}
