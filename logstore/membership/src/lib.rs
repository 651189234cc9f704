//! Membership of a LogStore cluster: who is alive, what each node advertises, and which nodes a new
//! segment's quorum should use.
//!
//! - [`quorum_select`]: the pure decision. Given the live members and a `SelectNodesRequest`, pick the
//!   nodes (every placement strategy, soft and hard affinity, load-aware weighting); no I/O.

pub mod quorum_select;
