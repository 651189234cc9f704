//! Choosing a new segment's replica set: the client side of upstream's eight strategies over `SelectNodes`.
//!
//! Each buffer pool is one gossip cluster reached through its seeds; a seed answers from its own view of
//! the cluster. Single-pool strategies ask one pool (seeds shuffled, the next seed on any failure, the next
//! pool when all fail); `cross-region` splits the ensemble over the pools; `custom` asks the pool of each
//! rule for one node matching it. Unlike upstream, which retries forever, selection gives up after
//! `selectTimeout` with an error that names the shortfall and what every seed said.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use woodpecker_core::config::{AffinityMode, QuorumConfig, QuorumStrategy};
use woodpecker_proto::logstore::{NodeFilter, NodeMeta, SelectNodesRequest, StrategyType};
use woodpecker_proto::meta::{QuorumInfo, QuorumNode};
use woodpecker_storage::segment::{SegmentError, SegmentRef};

use super::nodes::{self, Nodes, SUSPECT_PROBE_TIMEOUT};

/// Ensemble size, write quorum and ack quorum for `replicas` (1, 3 or 5; validated at load).
pub(crate) fn sizes(replicas: u32) -> (i32, i32, i32) {
    let es = replicas.max(1) as i32;
    (es, es, es / 2 + 1)
}

/// What one selection attempt learnt when it fell short.
struct Shortfall {
    found: usize,
    answers: Vec<String>,
}

/// Chooses `es` distinct nodes for `segment`, retrying with backoff until `deadline` passes.
pub(crate) async fn choose(
    nodes: &Nodes,
    cfg: &QuorumConfig,
    rpc_timeout: Duration,
    select_timeout: Duration,
    segment: SegmentRef,
) -> Result<QuorumInfo, SegmentError> {
    let (es, wq, aq) = sizes(cfg.quorum_select_strategy.replicas);
    let started = Instant::now();
    let mut backoff = cfg.select_retry_min_backoff.max(Duration::from_millis(10));
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let short = match attempt(nodes, cfg, es as usize, rpc_timeout).await {
            Ok(chosen) => {
                let endpoints = chosen.iter().map(|n| n.endpoint.clone()).collect();
                let replicas = chosen.into_iter().map(to_quorum_node).collect();
                return Ok(QuorumInfo { id: 1, es, wq, aq, nodes: endpoints, replicas });
            }
            Err(s) => s,
        };
        if started.elapsed() + backoff >= select_timeout {
            return Err(SegmentError::Placement {
                segment,
                reason: format!(
                    "{es} nodes are needed (strategy {}), at most {} could be chosen after {attempts} attempts \
                     over {:?}; seeds said: {}",
                    cfg.quorum_select_strategy.strategy.as_str(),
                    short.found,
                    started.elapsed(),
                    short.answers.join("; ")
                ),
            });
        }
        tracing::debug!(%segment, found = short.found, needed = es, "quorum selection fell short; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.select_retry_max_backoff.max(backoff));
    }
}

fn to_quorum_node(n: NodeMeta) -> QuorumNode {
    QuorumNode {
        endpoint: n.endpoint,
        node_id: n.node_id,
        cluster_name: n.cluster_name,
        region: n.region,
        az: n.az,
        resource_group: n.resource_group,
        tags: n.tags,
    }
}

fn strategy_type(s: QuorumStrategy) -> StrategyType {
    match s {
        QuorumStrategy::Random => StrategyType::Random,
        QuorumStrategy::SingleAzSingleRg => StrategyType::SingleAzSingleRg,
        QuorumStrategy::SingleAzMultiRg => StrategyType::SingleAzMultiRg,
        QuorumStrategy::MultiAzSingleRg => StrategyType::MultiAzSingleRg,
        QuorumStrategy::MultiAzMultiRg => StrategyType::MultiAzMultiRg,
        QuorumStrategy::CrossRegion => StrategyType::CrossRegion,
        QuorumStrategy::Custom => StrategyType::Custom,
        QuorumStrategy::RandomGroup => StrategyType::RandomGroup,
    }
}

/// One selection over every pool the strategy uses.
async fn attempt(
    nodes: &Nodes,
    cfg: &QuorumConfig,
    es: usize,
    rpc_timeout: Duration,
) -> Result<Vec<NodeMeta>, Shortfall> {
    let strategy = &cfg.quorum_select_strategy;
    let affinity = match strategy.affinity_mode {
        AffinityMode::Hard => woodpecker_proto::logstore::AffinityMode::Hard,
        AffinityMode::Soft => woodpecker_proto::logstore::AffinityMode::Soft,
    };
    let mut answers = Vec::new();
    let pools = &cfg.quorum_buffer_pools;
    // Nodes that just failed as replicas are left out (unless they answer again: a restarted node is taken
    // back at once); ask for up to that many more so they can be replaced.
    nodes.recheck_suspects(rpc_timeout.min(SUSPECT_PROBE_TIMEOUT)).await;
    let avoid = &|e: &str| nodes.is_suspect(e);
    let spare = nodes.suspect_count();
    // From the most spares down to none: a seed whose gossip still counts some suspects alive can place
    // more nodes than one that already dropped them.
    let limits = |n: usize| (n..=n + spare).rev().collect::<Vec<_>>();
    match strategy.strategy {
        QuorumStrategy::CrossRegion if pools.len() > 1 => {
            let mut chosen: Vec<NodeMeta> = Vec::new();
            let mut seen = HashSet::new();
            let share = es / pools.len();
            let extra = es % pools.len();
            for (i, pool) in pools.iter().enumerate() {
                let want = share + usize::from(i < extra);
                if want == 0 {
                    continue;
                }
                let mut got = None;
                for limit in limits(want) {
                    let req = request(StrategyType::CrossRegion, affinity, vec![filter("", "", limit)]);
                    got = ask_pool(nodes, &pool.seeds, req, rpc_timeout, &mut answers).await;
                    if got.is_some() {
                        break;
                    }
                }
                match got {
                    Some(got) => take_new(&mut chosen, &mut seen, got, want, avoid),
                    None if strategy.affinity_mode == AffinityMode::Hard => {
                        return Err(Shortfall { found: chosen.len(), answers });
                    }
                    None => {}
                }
            }
            if chosen.len() < es && strategy.affinity_mode == AffinityMode::Soft {
                // Soft: top up from any pool.
                for pool in pools {
                    let req = request(StrategyType::Random, affinity, vec![filter("", "", es + spare)]);
                    if let Some(got) = ask_pool(nodes, &pool.seeds, req, rpc_timeout, &mut answers).await {
                        let missing = es - chosen.len();
                        take_new(&mut chosen, &mut seen, got, missing, avoid);
                    }
                    if chosen.len() >= es {
                        break;
                    }
                }
            }
            if chosen.len() < es {
                return Err(Shortfall { found: chosen.len(), answers });
            }
            Ok(chosen)
        }
        QuorumStrategy::Custom => {
            let mut chosen: Vec<NodeMeta> = Vec::new();
            let mut seen = HashSet::new();
            for rule in &strategy.custom_placement {
                let seeds: Vec<String> = pools
                    .iter()
                    .filter(|p| rule.region.is_empty() || p.name == rule.region)
                    .flat_map(|p| p.seeds.iter().cloned())
                    .collect();
                let req = request(StrategyType::Custom, affinity, vec![filter(&rule.az, &rule.resource_group, es)]);
                let before = chosen.len();
                if let Some(got) = ask_pool(nodes, &seeds, req, rpc_timeout, &mut answers).await {
                    take_new(&mut chosen, &mut seen, got, 1, avoid);
                }
                if chosen.len() == before {
                    answers.push(format!(
                        "rule {:?} (pool {:?}, az {:?}, resource group {:?}): no node not already chosen",
                        rule.name, rule.region, rule.az, rule.resource_group
                    ));
                    return Err(Shortfall { found: chosen.len(), answers });
                }
            }
            Ok(chosen)
        }
        other => {
            let mut order: Vec<usize> = (0..pools.len()).collect();
            order.shuffle(&mut rand::rng());
            let mut best = 0;
            for i in order {
                for limit in limits(es) {
                    let req = request(strategy_type(other), affinity, vec![filter("", "", limit)]);
                    let Some(got) = ask_pool(nodes, &pools[i].seeds, req, rpc_timeout, &mut answers).await else {
                        continue;
                    };
                    let mut chosen = Vec::new();
                    take_new(&mut chosen, &mut HashSet::new(), got, es, avoid);
                    if chosen.len() >= es {
                        return Ok(chosen);
                    }
                    answers.push(format!("pool {:?}: {} distinct nodes, {es} needed", pools[i].name, chosen.len()));
                    best = best.max(chosen.len());
                }
            }
            Err(Shortfall { found: best, answers })
        }
    }
}

fn request(
    strategy: StrategyType,
    affinity: woodpecker_proto::logstore::AffinityMode,
    filters: Vec<NodeFilter>,
) -> SelectNodesRequest {
    SelectNodesRequest { strategy: strategy as i32, affinity_mode: affinity as i32, filters }
}

fn filter(az: &str, resource_group: &str, limit: usize) -> NodeFilter {
    NodeFilter {
        az: az.to_owned(),
        resource_group: resource_group.to_owned(),
        limit: limit as i32,
        ..Default::default()
    }
}

/// Adds up to `want` nodes of `got` not chosen yet (distinct by endpoint), leaving out `avoid`ed ones.
fn take_new(
    chosen: &mut Vec<NodeMeta>,
    seen: &mut HashSet<String>,
    got: Vec<NodeMeta>,
    want: usize,
    avoid: &dyn Fn(&str) -> bool,
) {
    let mut taken = 0;
    for n in got {
        if taken == want {
            break;
        }
        if !n.endpoint.is_empty() && !avoid(&n.endpoint) && seen.insert(n.endpoint.clone()) {
            chosen.push(n);
            taken += 1;
        }
    }
}

/// Asks the seeds of one pool in random order until one answers successfully; records every failure.
async fn ask_pool(
    nodes: &Nodes,
    seeds: &[String],
    req: SelectNodesRequest,
    rpc_timeout: Duration,
    answers: &mut Vec<String>,
) -> Option<Vec<NodeMeta>> {
    let mut seeds: Vec<&String> = seeds.iter().collect();
    seeds.shuffle(&mut rand::rng());
    for seed in seeds {
        let mut client = match nodes.client(seed) {
            Ok(c) => c,
            Err(e) => {
                answers.push(format!("{seed}: {e}"));
                continue;
            }
        };
        match nodes::bounded(nodes, seed, rpc_timeout, client.select_nodes(req.clone())).await {
            Ok(resp) => match nodes::check(resp.status.as_ref()) {
                Ok(()) => return Some(resp.nodes),
                Err(f) => answers.push(format!("{seed}: {f}")),
            },
            Err(f) => answers.push(format!("{seed}: {f}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes_follow_upstream() {
        assert_eq!(sizes(3), (3, 3, 2));
        assert_eq!(sizes(5), (5, 5, 3));
        assert_eq!(sizes(1), (1, 1, 1));
    }

    fn node(endpoint: &str) -> NodeMeta {
        NodeMeta { endpoint: endpoint.into(), ..Default::default() }
    }

    #[test]
    fn duplicates_and_nodes_without_an_address_are_never_chosen_twice() {
        let mut chosen = Vec::new();
        let mut seen = HashSet::new();
        let none = &|_: &str| false;
        take_new(&mut chosen, &mut seen, vec![node("a:1"), node("a:1"), node(""), node("b:1")], 3, none);
        assert_eq!(chosen.iter().map(|n| n.endpoint.as_str()).collect::<Vec<_>>(), ["a:1", "b:1"]);
        take_new(&mut chosen, &mut seen, vec![node("b:1"), node("c:1"), node("d:1")], 1, none);
        assert_eq!(chosen.len(), 3, "only `want` new ones are added");
        let avoid = &|e: &str| e == "e:1";
        take_new(&mut chosen, &mut seen, vec![node("e:1"), node("f:1")], 1, avoid);
        assert_eq!(chosen.last().map(|n| n.endpoint.as_str()), Some("f:1"), "a suspect is skipped");
    }
}
