//! Picks the nodes of a new segment's quorum from the live members (`SelectNodes`, server side).
//!
//! [`select_nodes`] is a pure decision: the caller passes the live members of its gossip view
//! (this node included), the request, the [`LoadPolicy`], the current time and a random source;
//! nothing is read from a clock, a global RNG or the network. The same inputs and seed give the
//! same answer, whatever the order of `members`.
//!
//! # Rules
//!
//! 1. **Candidates.** Members are deduplicated by `node_id` (the copy with the highest `version`,
//!    then `last_update`, wins; on a tie the first), nodes whose `tags["status"]` is
//!    `decommissioning` or `decommissioned` are dropped, and the rest are sorted by node id.
//! 2. **Filters.** At least one ([`SelectError::NoFilter`]); each needs `limit >= 1`
//!    ([`SelectError::InvalidFilter`]). `az` and `resource_group`: empty matches anything; a value
//!    containing any of `* + ? [ ] ( ) { } ^ $ | \` is a regex anchored at both ends (an invalid
//!    one is [`SelectError::InvalidPattern`]); anything else is an exact name. Every `tags` entry
//!    must be present with the same value. All filters are checked before any node is picked.
//! 3. **Exactly `limit` per filter.** The Go client turns every returned node into a replica and
//!    needs at least write-quorum of them, so each filter contributes exactly `limit` distinct
//!    nodes or the call fails with [`SelectError::NotEnoughNodes`] (code 4002, retriable).
//!    Filters are served in order, each from the candidates earlier filters did not take, so the
//!    answer never holds a node twice.
//! 4. **Strategies** (placement rule; "group" = resource group):
//!
//!    | Strategy | Rule |
//!    |---|---|
//!    | `RANDOM`, `CROSS_REGION`, `CUSTOM` | any `limit` matching nodes (cross-region is orchestrated by the client; custom is random within the filter's az/rg) |
//!    | `SINGLE_AZ_SINGLE_RG` | all in one (zone, group) cell |
//!    | `SINGLE_AZ_MULTI_RG` | all in one zone, each in a different group |
//!    | `MULTI_AZ_SINGLE_RG` | all in one group, each in a different zone |
//!    | `MULTI_AZ_MULTI_RG` | every zone different and every group different |
//!    | `RANDOM_GROUP` | one of the fixed consecutive groups of `limit` nodes by node id (see `random_group.rs`) |
//!
//!    Which cell, zone or group is used is decided by the load-weighted draw of the nodes, so a
//!    lightly loaded cell is preferred in proportion to its nodes' weights.
//! 5. **Affinity.** HARD: the rule holds for the whole answer, or `NotEnoughNodes`. SOFT: the
//!    largest set obeying the rule (for a single-zone or single-group rule, in the zone/group with
//!    the most room to top up), topped up from the other matching nodes, each chosen to break the
//!    rule least: a single-zone/group dimension prefers the value already used (stay in one zone or
//!    group), a multi one prefers a value not used yet (spread); `NotEnoughNodes` only when
//!    fewer than `limit` matching nodes exist at all. `RANDOM_GROUP` and the random strategies do
//!    not depend on affinity. With several filters, SOFT fails the whole call too when one filter
//!    cannot be answered.
//! 6. **Load-aware weighting** (when [`LoadPolicy::enabled`]): a node's weight is
//!    `1 - load_factor`, kept within [0.01, 1]; a load that is absent (`load_updated_at == 0`),
//!    older than `ttl_ms` (`now_ms - load_updated_at > ttl_ms`) or not a number weighs 0.5; when no
//!    candidate of the filter has a fresh load, all weigh the same. Nodes are drawn one by one
//!    without replacement, each with probability proportional to its weight.
//!    `load_updated_at` and `now_ms` are milliseconds on the same (Unix) clock.
//!
//! # Deliberate differences from upstream
//!
//! - Upstream's multi-zone/multi-group strategies return one node per distinct zone or group even
//!   when that is fewer than `limit`, and a SOFT filter with no candidate yields an empty list; the
//!   Go client then retries forever. Here the answer has exactly `limit` nodes per filter or a
//!   retriable error that says what was missing.
//! - Upstream skips a failing filter under SOFT, returning fewer nodes than the filters asked
//!   for; here the call fails, because a shorter answer would still become the quorum.
//! - Upstream does not keep filters apart, so two filters could return the same node; here a node
//!   is returned at most once.
//! - `MULTI_AZ_MULTI_RG` requires distinct groups as well as distinct zones; upstream draws a
//!   group per zone independently, so two replicas could share a group.
//! - `RANDOM_GROUP` wraps its last group around instead of never using the remainder nodes.
//! - `limit <= 0` and unknown strategy/affinity values are rejected instead of being ignored.

mod filter;
mod placement;
mod random_group;
mod weight;

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use woodpecker_proto::logstore::{AffinityMode, NodeMeta, SelectNodesRequest, StrategyType};

use filter::CompiledFilter;
use placement::{Rule, Spread};

/// Default of [`LoadPolicy::ttl_ms`]: upstream's `logstore.nodeSelectionPolicy.loadTTL` (30 s).
pub const DEFAULT_LOAD_TTL_MS: i64 = 30_000;

/// `tags["status"]` values of nodes that are leaving and must never get a new segment.
const LEAVING_STATUSES: [&str; 2] = ["decommissioning", "decommissioned"];

/// Whether and how the advertised load of nodes steers selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPolicy {
    /// Weight nodes by `1 - load_factor` (`loadAwareEnabled`); off means uniform.
    pub enabled: bool,
    /// Age in milliseconds beyond which a node's load counts as unknown (`loadTTL`).
    pub ttl_ms: i64,
}

impl Default for LoadPolicy {
    fn default() -> Self {
        LoadPolicy { enabled: true, ttl_ms: DEFAULT_LOAD_TTL_MS }
    }
}

/// Why `SelectNodes` could not be answered; [`SelectError::code`] and [`SelectError::retriable`]
/// go into the response `Status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    /// The request has no filter (`ErrServiceNoFilterFound`, 4000).
    #[error("SelectNodes needs at least one node filter")]
    NoFilter,
    /// A filter asks for no nodes or a negative number of them.
    #[error("node filter {index}: limit must be at least 1, got {limit}")]
    InvalidFilter {
        /// Position of the filter in the request.
        index: usize,
        /// The limit it asked for.
        limit: i32,
    },
    /// A filter's az or resource-group pattern is not a valid regex.
    #[error("node filter {index}: {field} pattern {pattern:?} is not a valid regex: {reason}")]
    InvalidPattern {
        /// Position of the filter in the request.
        index: usize,
        /// `az` or `resource_group`.
        field: &'static str,
        /// The pattern as sent.
        pattern: String,
        /// What the regex parser said.
        reason: String,
    },
    /// The request's strategy is not a known `StrategyType`.
    #[error("unknown node selection strategy {0}")]
    UnknownStrategy(i32),
    /// The request's affinity mode is not a known `AffinityMode`.
    #[error("unknown affinity mode {0}")]
    UnknownAffinityMode(i32),
    /// Too few live nodes match a filter under its strategy (`ErrServiceInsufficientQuorum`, 4002).
    #[error(
        "{strategy_name} ({affinity_name} affinity) needs {wanted} nodes for node filter {index} ({filter}) \
         but can place only {found}; {matching} live nodes match the filter",
        strategy_name = .strategy.as_str_name(),
        affinity_name = .affinity.as_str_name()
    )]
    NotEnoughNodes {
        /// Strategy of the request.
        strategy: StrategyType,
        /// Affinity mode of the request.
        affinity: AffinityMode,
        /// Position of the filter in the request.
        index: usize,
        /// The filter as text.
        filter: String,
        /// Nodes the filter asked for.
        wanted: usize,
        /// Nodes that could be placed (HARD: obeying the rule; SOFT: matching).
        found: usize,
        /// Live, non-leaving nodes matching the filter and not taken by an earlier filter.
        matching: usize,
    },
}

impl SelectError {
    /// The werr code for the response `Status`: 4000 no filter, 4002 not enough nodes, and 8001
    /// (`ErrConfigError`) for a request that can never succeed as sent.
    pub fn code(&self) -> i32 {
        match self {
            SelectError::NoFilter => 4000,
            SelectError::NotEnoughNodes { .. } => 4002,
            SelectError::InvalidFilter { .. }
            | SelectError::InvalidPattern { .. }
            | SelectError::UnknownStrategy(_)
            | SelectError::UnknownAffinityMode(_) => 8001,
        }
    }

    /// Whether asking again can succeed: only when nodes may join or recover (not enough nodes).
    pub fn retriable(&self) -> bool {
        matches!(self, SelectError::NotEnoughNodes { .. })
    }
}

/// Answers a `SelectNodes` request from `members` (the live members of the local view): for each
/// filter in order, exactly `limit` distinct nodes, concatenated; see the module docs for the rules.
pub fn select_nodes<R: Rng + ?Sized>(
    members: &[NodeMeta],
    request: &SelectNodesRequest,
    policy: &LoadPolicy,
    now_ms: i64,
    rng: &mut R,
) -> Result<Vec<NodeMeta>, SelectError> {
    if request.filters.is_empty() {
        return Err(SelectError::NoFilter);
    }
    let strategy =
        StrategyType::try_from(request.strategy).map_err(|_| SelectError::UnknownStrategy(request.strategy))?;
    let affinity = AffinityMode::try_from(request.affinity_mode)
        .map_err(|_| SelectError::UnknownAffinityMode(request.affinity_mode))?;
    let filters = request
        .filters
        .iter()
        .enumerate()
        .map(|(index, filter)| CompiledFilter::compile(index, filter))
        .collect::<Result<Vec<_>, _>>()?;

    let candidates = live_candidates(members);
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut answer = Vec::new();
    for (index, filter) in filters.iter().enumerate() {
        let nodes: Vec<&NodeMeta> =
            candidates.iter().copied().filter(|n| !taken.contains(n.node_id.as_str()) && filter.matches(n)).collect();
        let weights = weight::weights(&nodes, policy, now_ms);
        let picked = match rule_of(strategy) {
            None => random_group::pick(&weights, filter.limit, rng).ok_or(nodes.len()),
            Some(rule) => placement::select(rule, affinity, &nodes, &weights, filter.limit, rng).map_err(|s| s.found),
        };
        let picked = picked.map_err(|found| SelectError::NotEnoughNodes {
            strategy,
            affinity,
            index,
            filter: filter.description.clone(),
            wanted: filter.limit,
            found,
            matching: nodes.len(),
        })?;
        for i in picked {
            taken.insert(&nodes[i].node_id);
            answer.push(nodes[i].clone());
        }
    }
    Ok(answer)
}

/// The placement rule of `strategy`; `None` for `RANDOM_GROUP`, which partitions instead.
fn rule_of(strategy: StrategyType) -> Option<Rule> {
    let rule = |az, rg| Some(Rule { az, rg });
    match strategy {
        StrategyType::Random | StrategyType::CrossRegion | StrategyType::Custom => rule(Spread::Any, Spread::Any),
        StrategyType::SingleAzSingleRg => rule(Spread::Same, Spread::Same),
        StrategyType::SingleAzMultiRg => rule(Spread::Same, Spread::Distinct),
        StrategyType::MultiAzSingleRg => rule(Spread::Distinct, Spread::Same),
        StrategyType::MultiAzMultiRg => rule(Spread::Distinct, Spread::Distinct),
        StrategyType::RandomGroup => None,
    }
}

/// Members deduplicated by node id (newest `version`, then `last_update`), without leaving
/// nodes, sorted by node id.
fn live_candidates(members: &[NodeMeta]) -> Vec<&NodeMeta> {
    let mut by_id: BTreeMap<&str, &NodeMeta> = BTreeMap::new();
    for member in members {
        let newest = by_id.entry(&member.node_id).or_insert(member);
        if (member.version, member.last_update) > (newest.version, newest.last_update) {
            *newest = member;
        }
    }
    by_id
        .into_values()
        .filter(|node| !node.tags.get("status").is_some_and(|status| LEAVING_STATUSES.contains(&status.as_str())))
        .collect()
}
