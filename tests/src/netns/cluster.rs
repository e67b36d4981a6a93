//! A test cluster's network: a central namespace and N node namespaces,
//! node `i` (1-based) joined to central by its own veth pair:
//!
//! ```text
//!   central: "n<i>" 10.K.i.1/24  <── veth ──>  node i: "central" 10.K.i.2/24
//!   central: lo     10.K.255.1/32   (central-only: no node has a route to it)
//! ```
//!
//! K is a per-process counter, so the clusters of one test binary have
//! distinct address plans in logs; addresses cannot collide anyway, since
//! each namespace has its own stack. Nodes get no default route and central
//! does not forward, so a node reaches central's address on its own link and
//! nothing else: not the other nodes, not the central-only address. That
//! address stands for "a server only central can route to" (bind a server
//! to it inside the central namespace).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{Link, Netns, NetnsError};

/// Name of a node's interface towards central.
pub const NODE_IFACE: &str = "central";

/// One node of a [`Cluster`].
#[derive(Debug)]
pub struct ClusterNode {
    /// The node's namespace.
    pub ns: Netns,
    /// Its link to central (`a_if` on central, `b_if` = [`NODE_IFACE`] here).
    pub link: Link,
    /// The node's address.
    pub addr: Ipv4Addr,
    /// Central's address on this node's link: what the node calls central.
    pub central_addr: Ipv4Addr,
}

/// Central and its nodes. Dropping it kills everything inside and deletes
/// the namespaces.
#[derive(Debug)]
pub struct Cluster {
    /// The plan number K of the addresses.
    pub plan: u8,
    /// Nodes, `nodes[0]` being node 1. Declared before `central` so they
    /// drop first.
    pub nodes: Vec<ClusterNode>,
    /// Central's namespace.
    pub central: Netns,
    central_only: Ipv4Addr,
}

impl Cluster {
    /// Builds central and `nodes` nodes (at most 254), names prefixed `prefix`.
    pub fn new(prefix: &str, nodes: u8) -> Result<Cluster, NetnsError> {
        static PLAN: AtomicU8 = AtomicU8::new(0);
        if nodes == 0 || nodes == 255 {
            return Err(NetnsError::Invalid(format!("{nodes} nodes")));
        }
        let plan = PLAN.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let central = Netns::new(&format!("{prefix}-c"))?;
        let central_only = Ipv4Addr::new(10, plan, 255, 1);
        central.add_addr("lo", &format!("{central_only}/32"))?;
        let mut list = Vec::with_capacity(usize::from(nodes));
        for i in 1..=nodes {
            let ns = Netns::new(&format!("{prefix}-n{i}"))?;
            let central_addr = Ipv4Addr::new(10, plan, i, 1);
            let addr = Ipv4Addr::new(10, plan, i, 2);
            let link = Link::veth_named(
                &central,
                &format!("n{i}"),
                &ns,
                NODE_IFACE,
                &format!("{central_addr}/24"),
                &format!("{addr}/24"),
            )?;
            list.push(ClusterNode {
                ns,
                link,
                addr,
                central_addr,
            });
        }
        Ok(Cluster {
            plan,
            nodes: list,
            central,
            central_only,
        })
    }

    /// Node `i`, 1-based as in the address plan.
    pub fn node(&self, i: u8) -> Option<&ClusterNode> {
        self.nodes.get(usize::from(i).checked_sub(1)?)
    }

    /// An address that exists only in central's namespace and that no node
    /// can route to.
    pub fn central_only_addr(&self) -> Ipv4Addr {
        self.central_only
    }
}
