//! SelectNodes as clients see it: a 9-node cluster of real `woodpecker server` processes (3 zones x 3
//! resource groups) gossiping on loopback; every strategy's answer checked against the topology the
//! nodes advertise, soft and hard, "not enough nodes", and a crashed node leaving the answers.

mod cluster;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cluster::{Cluster, ClusterOptions};
use woodpecker_proto::logstore::{AffinityMode, NodeFilter, NodeMeta, SelectNodesRequest, StrategyType};

fn request(strategy: StrategyType, affinity: AffinityMode, limit: i32) -> SelectNodesRequest {
    SelectNodesRequest {
        strategy: strategy as i32,
        affinity_mode: affinity as i32,
        filters: vec![NodeFilter { limit, ..NodeFilter::default() }],
    }
}

async fn select(cl: &Cluster, seed: usize, req: SelectNodesRequest) -> Result<Vec<NodeMeta>, i32> {
    let r = cl.nodes[seed].client().await.select_nodes(req).await.expect("SelectNodes").into_inner();
    match r.status.map_or(0, |s| s.code) {
        0 => Ok(r.nodes),
        code => Err(code),
    }
}

/// Waits until node `seed` selects from exactly `n` live nodes.
async fn wait_members(cl: &Cluster, seed: usize, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let all = select(cl, seed, request(StrategyType::Random, AffinityMode::Hard, n as i32)).await;
        let over = select(cl, seed, request(StrategyType::Random, AffinityMode::Hard, n as i32 + 1)).await;
        if all.is_ok() && over.is_err() {
            return;
        }
        assert!(Instant::now() < deadline, "node {seed} does not see exactly {n} live nodes within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_strategy_answers_from_the_advertised_topology_of_a_9_node_cluster() {
    let mut cl = Cluster::start(9, &ClusterOptions::default());
    // Every node below answers from its own gossip view: each must have seen all nine before its answer
    // can be checked against the whole topology (a node that has seen seven tops up a soft answer).
    for seed in 0..9 {
        wait_members(&cl, seed, 9, Duration::from_secs(20)).await;
    }
    let topology: HashMap<String, (String, String)> =
        cl.nodes.iter().map(|n| (n.endpoint(), (n.zone.clone(), n.resource_group.clone()))).collect();
    let check = |nodes: &[NodeMeta], limit: usize| {
        assert_eq!(nodes.len(), limit, "exactly limit nodes");
        let endpoints: BTreeSet<_> = nodes.iter().map(|n| n.endpoint.clone()).collect();
        assert_eq!(endpoints.len(), limit, "distinct nodes");
        for n in nodes {
            let (z, rg) = &topology[&n.endpoint];
            assert_eq!((&n.az, &n.resource_group), (z, rg), "advertised topology of {}", n.endpoint);
        }
        let zones: BTreeSet<_> = nodes.iter().map(|n| n.az.clone()).collect();
        let groups: BTreeSet<_> = nodes.iter().map(|n| n.resource_group.clone()).collect();
        (zones.len(), groups.len())
    };
    for affinity in [AffinityMode::Soft, AffinityMode::Hard] {
        let nodes = select(&cl, 0, request(StrategyType::Random, affinity, 3)).await.unwrap();
        check(&nodes, 3);
        let nodes = select(&cl, 1, request(StrategyType::SingleAzSingleRg, affinity, 1)).await.unwrap();
        check(&nodes, 1);
        let nodes = select(&cl, 2, request(StrategyType::SingleAzMultiRg, affinity, 3)).await.unwrap();
        assert_eq!(check(&nodes, 3), (1, 3), "one zone, three groups ({affinity:?})");
        let nodes = select(&cl, 3, request(StrategyType::MultiAzSingleRg, affinity, 3)).await.unwrap();
        assert_eq!(check(&nodes, 3), (3, 1), "three zones, one group ({affinity:?})");
        let nodes = select(&cl, 4, request(StrategyType::MultiAzMultiRg, affinity, 3)).await.unwrap();
        assert_eq!(check(&nodes, 3), (3, 3), "three zones, three groups ({affinity:?})");
        let nodes = select(&cl, 5, request(StrategyType::RandomGroup, affinity, 3)).await.unwrap();
        check(&nodes, 3);
        let nodes = select(&cl, 6, request(StrategyType::CrossRegion, affinity, 5)).await.unwrap();
        check(&nodes, 5);
        let custom = SelectNodesRequest {
            strategy: StrategyType::Custom as i32,
            affinity_mode: affinity as i32,
            filters: vec![NodeFilter {
                az: "z1".into(),
                resource_group: "rg2".into(),
                limit: 1,
                ..NodeFilter::default()
            }],
        };
        let nodes = select(&cl, 7, custom).await.unwrap();
        assert_eq!((nodes[0].az.as_str(), nodes[0].resource_group.as_str()), ("z1", "rg2"));
    }
    // Not enough nodes: a fourth zone does not exist; hard refuses, soft tops up from other zones.
    assert_eq!(select(&cl, 0, request(StrategyType::MultiAzSingleRg, AffinityMode::Hard, 4)).await.unwrap_err(), 4002);
    let soft = select(&cl, 0, request(StrategyType::MultiAzSingleRg, AffinityMode::Soft, 4)).await.unwrap();
    check(&soft, 4);
    assert_eq!(select(&cl, 0, request(StrategyType::Random, AffinityMode::Soft, 10)).await.unwrap_err(), 4002);
    let no_filter = SelectNodesRequest::default();
    assert_eq!(select(&cl, 0, no_filter).await.unwrap_err(), 4000);

    // A crashed node leaves every answer within 5 s.
    let victim = cl.nodes[8].endpoint();
    cl.nodes[8].kill();
    let killed = Instant::now();
    for seed in 0..8 {
        let left = Duration::from_secs(5).saturating_sub(killed.elapsed());
        wait_members(&cl, seed, 8, left).await;
    }
    let took = killed.elapsed();
    for seed in 0..8 {
        let nodes = select(&cl, seed, request(StrategyType::Random, AffinityMode::Hard, 8)).await.unwrap();
        assert!(nodes.iter().all(|n| n.endpoint != victim), "the dead node is never chosen by node {seed}");
    }
    eprintln!("crashed node out of SelectNodes after {took:?}");
}
