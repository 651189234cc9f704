//! Membership of a LogStore cluster: who is alive, what each node advertises, and which nodes a new
//! segment's quorum should use.
//!
//! - [`quorum_select`]: the pure decision. Given the live members and a `SelectNodesRequest`, pick the
//!   nodes (every placement strategy, soft and hard affinity, load-aware weighting); no I/O.
//! - [`membership`]: the [`Membership`] trait the server uses (live nodes, local metadata updates,
//!   graceful leave), free of gossip-library types.
//! - [`gossip`]: [`Gossip`], the implementation over al8n `memberlist` 0.8 (SWIM): cluster-name
//!   isolation, metadata size checks, seed re-joining, crash detection timings.

pub mod quorum_select;

pub mod gossip;
pub mod membership;

pub use gossip::{Gossip, GossipConfig, GossipTimings};
pub use membership::{Member, Membership, MembershipError, MetaChange};
