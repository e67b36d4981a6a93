//! The daemons' view of a protocol endpoint: a `dscp_dicp` driver shared
//! between threads, with errors flattened to one line for callers that only
//! report them.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use dscp_dicp::driver::{Driver, DriverConfig};
use dscp_dicp::msg::{Request, Response};
use dscp_dicp::{Keyring, Peer};

pub use dscp_dicp::driver::{Incoming, PendingCall};

/// A job session's peer silent this long is lost.
pub const SESSION_IDLE: Duration = Duration::from_millis(3000);
/// Keepalive interval on a job session.
pub const SESSION_KEEPALIVE: Duration = Duration::from_millis(400);
/// Bytes of received big messages a job session keeps for reuse once
/// handed back ([`Net::recycle`]): a fetch has a few 8 MiB answers
/// arriving while it writes one, so a few spare buffers are all it uses.
pub const SESSION_RECYCLE: usize = 32 << 20;

/// A shared endpoint: one socket, one driver thread, any number of callers.
#[derive(Debug, Clone)]
pub struct Net {
    driver: Arc<Driver>,
}

impl Net {
    /// Runs a daemon's endpoint on `socket` with `keys` (the protocol's
    /// default liveness: a peer silent for 6 s is lost).
    pub fn open(socket: UdpSocket, keys: Keyring) -> std::io::Result<Net> {
        Self::open_with(socket, keys, DriverConfig::default())
    }

    /// Runs a job's endpoint (home or node side): a peer silent for
    /// [`SESSION_IDLE`] is lost, so a vanished node or home is noticed
    /// within the 5 s the interface promises even with a few keepalives lost.
    pub fn open_session(socket: UdpSocket, keys: Keyring) -> std::io::Result<Net> {
        let mut cfg = DriverConfig::default();
        cfg.endpoint.idle_timeout = SESSION_IDLE;
        cfg.endpoint.keepalive_interval = SESSION_KEEPALIVE;
        // A session key is made for one job and never used before, so no
        // older datagram can carry it: skip the first-contact challenge.
        cfg.endpoint.challenge_first_contact = false;
        cfg.endpoint.recycle_limit = SESSION_RECYCLE;
        Self::open_with(socket, keys, cfg)
    }

    fn open_with(socket: UdpSocket, keys: Keyring, cfg: DriverConfig) -> std::io::Result<Net> {
        let driver = Driver::from_socket(socket, keys, cfg)?;
        Ok(Net {
            driver: Arc::new(driver),
        })
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.driver
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// One request and its response, or an error line.
    pub fn call(&self, peer: Peer, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        self.driver
            .call(peer, payload, timeout)
            .map_err(|e| e.to_string())
    }

    /// Sends a request without waiting: the answer is collected later from
    /// the returned call (so one thread can have several in flight).
    pub fn start(&self, peer: Peer, msg: impl Into<Request>) -> Result<PendingCall, String> {
        let payload = msg.into().encode().map_err(|e| e.to_string())?;
        self.start_encoded(peer, payload)
    }

    /// [`Net::start`] of a request encoded already.
    pub fn start_encoded(&self, peer: Peer, payload: Vec<u8>) -> Result<PendingCall, String> {
        self.driver.start(peer, payload).map_err(|e| e.to_string())
    }

    /// [`Net::start`] with the response's bytes beyond its head going to
    /// `sink` as they arrive, when it has the sink's length (see
    /// [`dscp_dicp::Sink`]).
    pub fn start_into(
        &self,
        peer: Peer,
        msg: impl Into<Request>,
        sink: dscp_dicp::Sink,
    ) -> Result<PendingCall, String> {
        let payload = msg.into().encode().map_err(|e| e.to_string())?;
        self.driver
            .start_into(peer, payload, sink)
            .map_err(|e| e.to_string())
    }

    /// Hands back a received message the caller is done with (a fetched
    /// `Read` answer once written to the cache), so the next big one is
    /// reassembled in its memory instead of in newly faulted pages.
    pub fn recycle(&self, msg: Vec<u8>) {
        self.driver.recycle(msg);
    }

    /// Requests from peers, each delivered once.
    pub fn requests(&self) -> &Receiver<Incoming> {
        self.driver.incoming()
    }

    /// Watched peers that went silent (or restarted).
    pub fn lost(&self) -> &Receiver<Peer> {
        self.driver.lost()
    }

    /// Keeps `peer` alive with keepalives and reports it on [`Net::lost`]
    /// when it goes silent.
    pub fn watch(&self, peer: Peer) {
        if let Err(e) = self.driver.watch(peer) {
            log::warn!("cannot watch {peer}: {e}");
        }
    }

    /// Forgets `peer`: its outstanding calls fail at once (a job whose
    /// home abandoned it stops fetching from that home).
    pub fn close(&self, peer: Peer) {
        self.driver.close(peer);
    }

    /// Datagrams dropped so far, by reason.
    pub fn dropped(&self) -> Vec<(String, u64)> {
        self.driver.dropped().into_iter().collect()
    }
}

/// Answers a request with a family message; a reply that cannot be sent
/// (peer gone, endpoint closed) is only logged: the peer retries or is lost.
pub fn reply(req: Incoming, msg: impl Into<Response>) {
    let peer = req.peer;
    if let Err(e) = req.reply(&msg.into()) {
        log::debug!("reply to {peer}: {e}");
    }
}

/// A typed call: sends a family request, waits for the answer and expects
/// the same family's response.
pub fn ask<R>(
    net: &Net,
    peer: Peer,
    msg: impl Into<Request>,
    timeout: Duration,
) -> Result<R, String>
where
    R: TryFrom<Response, Error = String>,
{
    let payload = msg.into().encode().map_err(|e| e.to_string())?;
    let answer = net.call(peer, payload, timeout)?;
    R::try_from(Response::decode(&answer).map_err(|e| e.to_string())?)
}

/// Keeps freed message buffers in the process instead of returning them to
/// the kernel at once (glibc's malloc; elsewhere nothing changes). A bulk
/// transfer allocates and frees an 8 MiB buffer per message on each side:
/// by default glibc maps many of them fresh and unmaps or trims them when
/// freed, so every page faults in again (tens of thousands of faults per
/// GiB, each costly in a VM whose free memory goes back to the host).
/// Buffers up to 32 MiB then come from the heap, and up to 128 MiB of free
/// heap is kept. Call once at start-up, before threads exist, and only in a
/// process that does not fork big children (the home: not the node daemon,
/// whose forks would copy the kept heap's page tables).
pub fn keep_message_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; no thread
    // allocates concurrently this early.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
