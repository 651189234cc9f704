//! What the LogStore server asks of cluster membership, independent of the gossip library.
//!
//! The server holds an `Arc<dyn Membership>`; [`crate::gossip::Gossip`] is the implementation over
//! memberlist. Nothing here names a memberlist type, so the library can be swapped without touching
//! the server.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use woodpecker_proto::logstore::NodeMeta;

/// A change to the local node's metadata, applied by [`Membership::update_local`].
pub type MetaChange = Box<dyn FnOnce(&mut NodeMeta) + Send>;

/// One node as this node's gossip view knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Gossip node name (`--node-name`), unique in the cluster; equals `meta.node_id`.
    pub name: String,
    /// Address peers dial for gossip (the node's advertise address).
    pub gossip_addr: SocketAddr,
    /// What the node advertises: service endpoint, topology, tags, version, load.
    pub meta: NodeMeta,
    /// `true` while the node is alive or only suspected; `false` once it left or was declared dead.
    pub alive: bool,
}

/// Cluster membership of one LogStore node.
///
/// Invariants, whatever the implementation:
/// - Every node in [`Membership::live_nodes`] advertised the same cluster name as this node; nodes of
///   another cluster are never admitted.
/// - The local node is in its own [`Membership::live_nodes`] from start until [`Membership::leave`].
/// - A node name maps to at most one member: a node restarted under the same name (possibly on a new
///   address) replaces its previous incarnation, and news about the old incarnation never removes
///   the new one.
/// - The local metadata always fits the gossip library's limit: a change that would not fit is refused
///   with [`MembershipError::MetaTooLarge`] and the previous metadata stays in force.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// The metadata this node currently advertises.
    fn local(&self) -> NodeMeta;

    /// Every member this node knows, with its alive flag; members that left or died stay listed
    /// (alive = false) for a while so that operators can see them.
    fn members(&self) -> Vec<Member>;

    /// Metadata of the alive members, this node included: the candidates of `SelectNodes` (which
    /// then drops `decommissioning` / `decommissioned` nodes itself).
    fn live_nodes(&self) -> Vec<NodeMeta>;

    /// Changes the local metadata (e.g. `tags["status"]`), bumps `version`, sets `last_update` to now
    /// and re-advertises it. `node_id` and `cluster_name` cannot change. On error nothing changed.
    async fn update_local(&self, change: MetaChange) -> Result<(), MembershipError>;

    /// Records this node's load factor (0..=1) for load-aware selection. It travels with the periodic
    /// state exchange and does not bump `version` (load changes every few seconds).
    fn report_load(&self, load_factor: f64) -> Result<(), MembershipError>;

    /// Whether this node is part of a cluster: it joined at least one seed, another node joined it,
    /// it is itself one of the seeds, or it has no seeds by configuration. Feeds `/healthz`.
    fn joined(&self) -> bool;

    /// Leaves the cluster gracefully (peers drop this node at once instead of probing it to death),
    /// then stops gossiping. Idempotent; after it, [`Membership::live_nodes`] is empty.
    async fn leave(&self, timeout: Duration) -> Result<(), MembershipError>;
}

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A configuration value is unusable; fix the configuration (not retryable).
    #[error("invalid gossip configuration: {0}")]
    InvalidConfig(String),
    /// The encoded node metadata does not fit the gossip limit (not retryable with the same data).
    #[error(
        "node metadata needs up to {size} bytes encoded, more than the gossip limit of {limit} bytes; \
         shorten tags, endpoint or topology names"
    )]
    MetaTooLarge {
        /// Encoded size, counting the fields this crate updates at their largest.
        size: usize,
        /// The gossip library's limit.
        limit: usize,
    },
    /// A host name could not be resolved (retryable: DNS may not know a starting pod yet).
    #[error("cannot resolve {what} `{addr}`: {reason}")]
    Resolve {
        /// Which setting the address came from.
        what: &'static str,
        /// The address as configured.
        addr: String,
        /// What the resolver said.
        reason: String,
    },
    /// The gossip transport could not start, e.g. the port is taken (retryable once it is free).
    #[error("cannot start gossip on {addr}: {reason}")]
    Bind {
        /// The bind address.
        addr: SocketAddr,
        /// What the transport said.
        reason: String,
    },
    /// `update_local` tried to change a field that identifies the node (not retryable).
    #[error("the local node's `{0}` cannot change while it runs")]
    ImmutableField(&'static str),
    /// The membership was stopped (left or shut down); start a new one (not retryable).
    #[error("gossip membership has stopped")]
    Stopped,
    /// The graceful leave was not confirmed within the timeout; the node stopped anyway and peers
    /// will detect it by probing (not retryable: it already stopped).
    #[error("leave was not broadcast within {0:?}; peers will detect the stop by probing")]
    LeaveTimeout(Duration),
}

impl MembershipError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Resolve { .. } | Self::Bind { .. })
    }
}
