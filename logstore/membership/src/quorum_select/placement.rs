//! Placement rules of the zone and resource-group strategies, and how a set obeying one is drawn.
//!
//! A rule says, per dimension (availability zone, resource group), whether the chosen nodes must
//! share one value ([`Spread::Same`]), must all differ ([`Spread::Distinct`]) or are unconstrained
//! ([`Spread::Any`]). Nodes are drawn one at a time, load-weighted, among those that still fit the
//! rule; a draw that would leave too few fitting nodes for the rest is undone and its (az, rg) cell
//! is skipped for that step, so the draw never paints itself into a corner (for distinct zones
//! *and* groups that takes a bipartite matching, see [`capacity`]).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use woodpecker_proto::logstore::{AffinityMode, NodeMeta};

use super::weight::draw;

/// What a rule demands of one dimension (zone or resource group) across the chosen nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Spread {
    /// No constraint.
    Any,
    /// Every chosen node has the same value.
    Same,
    /// No two chosen nodes have the same value.
    Distinct,
}

/// The placement rule of a strategy: one [`Spread`] for zones, one for resource groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rule {
    /// Constraint on `NodeMeta::az`.
    pub(super) az: Spread,
    /// Constraint on `NodeMeta::resource_group`.
    pub(super) rg: Spread,
}

/// Why a filter could not be answered: how many nodes the rule could place.
pub(super) struct Shortfall {
    /// Largest set the rule (HARD) or the candidate count (SOFT) allows.
    pub(super) found: usize,
}

/// Picks exactly `limit` of `nodes` (indices) under `rule`. HARD: the rule holds or [`Shortfall`].
/// SOFT: the largest set obeying the rule inside one anchor ([`soft_scope`]), topped up by
/// [`top_up`]; a shortfall only when fewer than `limit` nodes exist.
pub(super) fn select<R: Rng + ?Sized>(
    rule: Rule,
    affinity: AffinityMode,
    nodes: &[&NodeMeta],
    weights: &[f64],
    limit: usize,
    rng: &mut R,
) -> Result<Vec<usize>, Shortfall> {
    let placeable = capacity(rule, nodes, &[]).min(limit);
    let chosen = if placeable == limit {
        place(rule, nodes, weights, limit, rng)
    } else {
        match affinity {
            AffinityMode::Hard => return Err(Shortfall { found: placeable }),
            AffinityMode::Soft if nodes.len() < limit => return Err(Shortfall { found: nodes.len() }),
            AffinityMode::Soft => {
                let scope = soft_scope(rule, nodes, weights, limit, rng);
                let in_scope: Vec<&NodeMeta> = scope.iter().map(|&i| nodes[i]).collect();
                let scope_weights: Vec<f64> = scope.iter().map(|&i| weights[i]).collect();
                let mut chosen: Vec<usize> =
                    place(rule, &in_scope, &scope_weights, placeable, rng).into_iter().map(|i| scope[i]).collect();
                top_up(rule, nodes, weights, &mut chosen, limit, rng);
                chosen
            }
        }
    };
    // `place` and `top_up` reach their target whenever the checks above passed; this guards the
    // client, which turns every returned node into a replica, against a bug here.
    if chosen.len() == limit { Ok(chosen) } else { Err(Shortfall { found: chosen.len() }) }
}

/// Draws `target` nodes obeying `rule`, load-weighted; `target` must be at most
/// `capacity(rule, nodes, &[])`, else the result is short.
fn place<R: Rng + ?Sized>(rule: Rule, nodes: &[&NodeMeta], weights: &[f64], target: usize, rng: &mut R) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(target);
    while chosen.len() < target {
        let still_needed = target - chosen.len() - 1;
        let mut options: Vec<usize> =
            (0..nodes.len()).filter(|&i| !chosen.contains(&i) && fits(rule, nodes, &chosen, i)).collect();
        loop {
            let Some(pick) = draw(&options, weights, rng) else { return chosen };
            chosen.push(pick);
            if still_needed == 0 || capacity(rule, nodes, &chosen) >= still_needed {
                break;
            }
            chosen.pop();
            // Every node of the same (az, rg) cell leaves the same room, so skip them all.
            let cell = (&nodes[pick].az, &nodes[pick].resource_group);
            options.retain(|&i| (&nodes[i].az, &nodes[i].resource_group) != cell);
        }
    }
    chosen
}

/// SOFT affinity, rule not fully placeable: the nodes (indices) the rule-obeying part is drawn
/// from. For a rule with a `Same` dimension, one anchor (its zone and/or group) among those that
/// place the most nodes under the rule and, as a tie-break, whose outer anchor (the zone if zones
/// are `Same`, else the group) holds the most nodes up to `limit`, so the top-up can stay in it;
/// drawn by the anchors' summed weights. Other rules: every node.
fn soft_scope<R: Rng + ?Sized>(
    rule: Rule,
    nodes: &[&NodeMeta],
    weights: &[f64],
    limit: usize,
    rng: &mut R,
) -> Vec<usize> {
    if rule.az != Spread::Same && rule.rg != Spread::Same {
        return (0..nodes.len()).collect();
    }
    let outer: fn(&NodeMeta) -> &str = if rule.az == Spread::Same { |n| &n.az } else { |n| &n.resource_group };
    let mut anchors: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    let mut outer_sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let az = if rule.az == Spread::Same { node.az.as_str() } else { "" };
        let rg = if rule.rg == Spread::Same { node.resource_group.as_str() } else { "" };
        anchors.entry((az, rg)).or_default().push(i);
        *outer_sizes.entry(outer(node)).or_default() += 1;
    }
    let keyed: Vec<((usize, usize), Vec<usize>)> = anchors
        .into_values()
        .map(|members| {
            let group: Vec<&NodeMeta> = members.iter().map(|&i| nodes[i]).collect();
            let outer_size = group.first().and_then(|n| outer_sizes.get(outer(n))).copied().unwrap_or(0);
            ((capacity_of(rule, &group), outer_size.min(limit)), members)
        })
        .collect();
    let Some(best) = keyed.iter().map(|(key, _)| *key).max() else { return Vec::new() };
    let best: Vec<Vec<usize>> = keyed.into_iter().filter(|(key, _)| *key == best).map(|(_, members)| members).collect();
    let anchor_weights: Vec<f64> = best.iter().map(|members| members.iter().map(|&i| weights[i]).sum()).collect();
    let options: Vec<usize> = (0..best.len()).collect();
    draw(&options, &anchor_weights, rng).and_then(|a| best.into_iter().nth(a)).unwrap_or_default()
}

/// SOFT affinity: adds nodes to `chosen` until it holds `target`, each drawn (load-weighted) among
/// the remaining nodes that break the rule least. Per dimension, zone first: for [`Spread::Same`]
/// a node sharing the first chosen node's value is preferred (stay as close to one zone/group as
/// possible); otherwise a value not chosen yet is preferred (spread).
fn top_up<R: Rng + ?Sized>(
    rule: Rule,
    nodes: &[&NodeMeta],
    weights: &[f64],
    chosen: &mut Vec<usize>,
    target: usize,
    rng: &mut R,
) {
    let score = |chosen: &[usize], i: usize| {
        let dim = |spread: Spread, value: fn(&NodeMeta) -> &str| {
            let candidate = value(nodes[i]);
            match (spread, chosen.first()) {
                (Spread::Same, Some(&first)) => value(nodes[first]) == candidate,
                _ => chosen.iter().all(|&c| value(nodes[c]) != candidate),
            }
        };
        (dim(rule.az, |n| &n.az), dim(rule.rg, |n| &n.resource_group))
    };
    while chosen.len() < target {
        let remaining: Vec<usize> = (0..nodes.len()).filter(|i| !chosen.contains(i)).collect();
        let Some(best) = remaining.iter().map(|&i| score(chosen, i)).max() else { return };
        let options: Vec<usize> = remaining.into_iter().filter(|&i| score(chosen, i) == best).collect();
        let Some(pick) = draw(&options, weights, rng) else { return };
        chosen.push(pick);
    }
}

/// Whether node `i` can join `chosen` without breaking `rule`.
fn fits(rule: Rule, nodes: &[&NodeMeta], chosen: &[usize], i: usize) -> bool {
    let dim = |spread: Spread, value: fn(&NodeMeta) -> &str| {
        let candidate = value(nodes[i]);
        match spread {
            Spread::Any => true,
            Spread::Same => chosen.first().is_none_or(|&first| value(nodes[first]) == candidate),
            Spread::Distinct => chosen.iter().all(|&c| value(nodes[c]) != candidate),
        }
    };
    dim(rule.az, |n| &n.az) && dim(rule.rg, |n| &n.resource_group)
}

/// How many more nodes can join `chosen` under `rule` (with `chosen` empty: the largest set obeying
/// the rule). Distinct zones and groups together is a maximum bipartite matching between zones and
/// groups over the non-empty cells, because a greedy count would overestimate.
pub(super) fn capacity(rule: Rule, nodes: &[&NodeMeta], chosen: &[usize]) -> usize {
    let eligible: Vec<&NodeMeta> =
        (0..nodes.len()).filter(|&i| !chosen.contains(&i) && fits(rule, nodes, chosen, i)).map(|i| nodes[i]).collect();
    if !chosen.is_empty() || (rule.az != Spread::Same && rule.rg != Spread::Same) {
        return capacity_of(rule, &eligible);
    }
    // No anchor yet: the best over every value of the `Same` dimensions.
    let mut groups: BTreeMap<(&str, &str), Vec<&NodeMeta>> = BTreeMap::new();
    for node in eligible {
        let az = if rule.az == Spread::Same { node.az.as_str() } else { "" };
        let rg = if rule.rg == Spread::Same { node.resource_group.as_str() } else { "" };
        groups.entry((az, rg)).or_default().push(node);
    }
    groups.values().map(|group| capacity_of(rule, group)).max().unwrap_or(0)
}

/// Largest subset of `eligible` (all already sharing the `Same` values) with the `Distinct` values
/// pairwise different.
fn capacity_of(rule: Rule, eligible: &[&NodeMeta]) -> usize {
    let count = |value: fn(&NodeMeta) -> &str| eligible.iter().map(|n| value(n)).collect::<BTreeSet<_>>().len();
    match (rule.az == Spread::Distinct, rule.rg == Spread::Distinct) {
        (false, false) => eligible.len(),
        (true, false) => count(|n| &n.az),
        (false, true) => count(|n| &n.resource_group),
        (true, true) => max_matching(eligible),
    }
}

/// Size of a maximum matching between zones and resource groups, an edge per non-empty cell
/// (Kuhn's augmenting paths; clusters are small).
fn max_matching(eligible: &[&NodeMeta]) -> usize {
    let mut zones: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for node in eligible {
        zones.entry(&node.az).or_default().insert(&node.resource_group);
    }
    let groups: Vec<&str> = zones.values().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let adjacency: Vec<Vec<usize>> =
        zones.values().map(|rgs| rgs.iter().filter_map(|rg| groups.binary_search(rg).ok()).collect()).collect();
    let mut zone_of_group: Vec<Option<usize>> = vec![None; groups.len()];
    let mut matched = 0;
    for zone in 0..adjacency.len() {
        let mut seen = vec![false; groups.len()];
        if augment(zone, &adjacency, &mut seen, &mut zone_of_group) {
            matched += 1;
        }
    }
    matched
}

fn augment(zone: usize, adjacency: &[Vec<usize>], seen: &mut [bool], zone_of_group: &mut [Option<usize>]) -> bool {
    for &group in &adjacency[zone] {
        if seen[group] {
            continue;
        }
        seen[group] = true;
        let free = match zone_of_group[group] {
            None => true,
            Some(other) => augment(other, adjacency, seen, zone_of_group),
        };
        if free {
            zone_of_group[group] = Some(zone);
            return true;
        }
    }
    false
}
