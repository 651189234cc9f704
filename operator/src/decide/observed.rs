//! What the controller observed about one server pod, as plain data.

use std::collections::BTreeSet;

/// Lifecycle state reported by `/admin/node/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Serving and taking new segments.
    Active,
    /// Rejecting new segments, draining.
    Decommissioning,
    /// Drained.
    Decommissioned,
    /// Anything else the server said.
    Other(String),
}

impl NodeState {
    /// Parse the admin API's `state` string.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => NodeState::Active,
            "decommissioning" => NodeState::Decommissioning,
            "decommissioned" => NodeState::Decommissioned,
            other => NodeState::Other(other.to_string()),
        }
    }
}

/// One entry of `/admin/memberlist` as seen by some node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Member name (the pod name).
    pub name: String,
    /// Whether the viewer considers it alive.
    pub alive: bool,
}

/// What a pod's admin API answered this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminView {
    /// `/admin/node/status` state.
    pub state: NodeState,
    /// `/admin/node/status` member_count.
    pub member_count: i32,
    /// `/admin/memberlist`.
    pub members: Vec<MemberView>,
    /// Advertised zone.
    pub zone: Option<String>,
    /// Advertised region.
    pub region: Option<String>,
    /// Advertised resource group.
    pub resource_group: Option<String>,
    /// `/admin/log-health` answered 200 (`Some(true)`), 503 (`Some(false)`), or was not asked.
    pub log_health_ok: Option<bool>,
    /// Past the hard disk watermark.
    pub disk_over_hard_watermark: bool,
}

impl AdminView {
    /// Names this node sees as alive members.
    pub fn alive_members(&self) -> BTreeSet<&str> {
        self.members.iter().filter(|m| m.alive).map(|m| m.name.as_str()).collect()
    }
}

/// One server pod, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    /// Pod name.
    pub name: String,
    /// Buffer pool (label).
    pub pool: String,
    /// Node group (label).
    pub group: String,
    /// Zone the group is pinned to.
    pub zone: Option<String>,
    /// Ordinal within its StatefulSet.
    pub ordinal: i32,
    /// Whether it is a gossip seed (seeds are rolled last).
    pub is_seed: bool,
    /// Pod Ready condition.
    pub ready: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// `controller-revision-hash` label.
    pub revision: Option<String>,
    /// Config-hash annotation.
    pub config_hash: Option<String>,
    /// Restart-token annotation (empty when absent).
    pub restart_token: String,
    /// Admin API answers, `None` when unreachable or not asked (pod not Ready).
    pub admin: Option<AdminView>,
}
