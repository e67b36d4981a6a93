//! The central daemon: node registry, scheduling, job table and the control
//! socket. [`core::Central`] holds the logic; the UDP endpoint and the
//! control socket are thin drivers around it.

pub mod control_server;
pub mod core;
pub mod history;
pub mod registry;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diatom_client::net::{reply, Net, PendingCall};
use dscp_dicp::msg::Request;
use dscp_dicp::{Key, Keyring, Peer, CLUSTER_KEY_ID};

use self::core::{Caller, Central, InFlight};
use crate::store::Store;

impl Caller for Net {
    fn start(&self, peer: Peer, payload: Vec<u8>) -> Result<Box<dyn InFlight>, String> {
        Ok(Box::new(self.start_encoded(peer, payload)?))
    }

    fn dropped(&self) -> Vec<(String, u64)> {
        Net::dropped(self)
    }
}

impl InFlight for PendingCall {
    fn wait(self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, String> {
        PendingCall::wait(*self, timeout).map_err(|e| e.to_string())
    }
}

/// Binds central's endpoint at `bind` and starts the threads that serve
/// nodes and expire silent ones. The control socket is served separately.
pub fn start_central(bind: SocketAddr, key: &Key, store: Store) -> std::io::Result<Arc<Central>> {
    let sock = udp::bind_shared(bind)?;
    let local = sock.local_addr()?;
    let net = Net::open(sock, Keyring::with_cluster_key(key))?;
    let central = Arc::new(Central::new(store, Box::new(net.clone()), local));
    let c = Arc::clone(&central);
    std::thread::Builder::new()
        .name("central-udp".into())
        .spawn(move || serve_nodes(&net, &c))?;
    let c = Arc::clone(&central);
    std::thread::Builder::new()
        .name("central-tick".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            c.tick();
        })?;
    Ok(central)
}

/// Answers nodes' requests (cluster key only) until the endpoint closes.
pub fn serve_nodes(net: &Net, central: &Central) {
    while let Ok(req) = net.requests().recv() {
        if req.peer.key_id != CLUSTER_KEY_ID {
            continue;
        }
        match req.request() {
            Ok(Request::Dicp(msg)) => {
                let answer = central.handle_node(req.peer, msg);
                reply(req, answer);
            }
            Ok(other) => log::warn!("unexpected request from {}: {other:?}", req.peer.addr),
            Err(e) => log::warn!("bad request from {}: {e}", req.peer.addr),
        }
    }
}
