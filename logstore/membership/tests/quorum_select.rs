//! Table and scenario tests of the `SelectNodes` decision against advertised topologies.

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::rngs::StdRng;
use woodpecker_membership::quorum_select::{LoadPolicy, SelectError, select_nodes};
use woodpecker_proto::logstore::{AffinityMode, NodeFilter, NodeMeta, SelectNodesRequest, StrategyType};

const NOW_MS: i64 = 1_700_000_000_000;
const SEEDS: u64 = 200;
const ZONES: [&str; 3] = ["az-1", "az-2", "az-3"];
const GROUPS: [&str; 3] = ["rg-a", "rg-b", "rg-c"];

fn node(id: &str, az: &str, rg: &str) -> NodeMeta {
    NodeMeta {
        node_id: id.to_owned(),
        az: az.to_owned(),
        resource_group: rg.to_owned(),
        endpoint: format!("{id}:18080"),
        ..Default::default()
    }
}

/// 3 zones × 3 resource groups, one node per cell: `az-1/rg-a`, `az-1/rg-b`, … named by cell.
fn nine_nodes() -> Vec<NodeMeta> {
    ZONES.iter().flat_map(|az| GROUPS.iter().map(move |rg| node(&format!("{az}/{rg}"), az, rg))).collect()
}

fn any(limit: i32) -> NodeFilter {
    NodeFilter { limit, ..Default::default() }
}

fn request(strategy: StrategyType, affinity: AffinityMode, filters: Vec<NodeFilter>) -> SelectNodesRequest {
    SelectNodesRequest { strategy: strategy as i32, affinity_mode: affinity as i32, filters }
}

fn select(members: &[NodeMeta], request: &SelectNodesRequest, seed: u64) -> Result<Vec<NodeMeta>, SelectError> {
    select_nodes(members, request, &LoadPolicy::default(), NOW_MS, &mut StdRng::seed_from_u64(seed))
}

fn ids(nodes: &[NodeMeta]) -> Vec<String> {
    nodes.iter().map(|n| n.node_id.clone()).collect()
}

fn zones(nodes: &[NodeMeta]) -> BTreeSet<&str> {
    nodes.iter().map(|n| n.az.as_str()).collect()
}

fn groups(nodes: &[NodeMeta]) -> BTreeSet<&str> {
    nodes.iter().map(|n| n.resource_group.as_str()).collect()
}

/// Fails unless the answer has exactly `limit` nodes, none twice.
fn assert_distinct(nodes: &[NodeMeta], limit: usize) {
    let unique: BTreeSet<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(nodes.len(), limit, "answer {:?}", ids(nodes));
    assert_eq!(unique.len(), limit, "duplicate in {:?}", ids(nodes));
}

/// Runs `request` under many seeds and hands each answer (checked distinct, of size `limit`) to `check`.
fn for_many_seeds(members: &[NodeMeta], request: &SelectNodesRequest, limit: usize, check: impl Fn(&[NodeMeta])) {
    for seed in 0..SEEDS {
        let answer = select(members, request, seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_distinct(&answer, limit);
        check(&answer);
    }
}

fn assert_not_enough(result: Result<Vec<NodeMeta>, SelectError>, expected_found: usize) {
    match result {
        Err(error @ SelectError::NotEnoughNodes { found, .. }) => {
            assert_eq!(found, expected_found, "{error}");
            assert_eq!(error.code(), 4002);
            assert!(error.retriable());
        }
        other => panic!("expected NotEnoughNodes, got {other:?}"),
    }
}

// ---- RANDOM and the strategies the server treats as random ----

#[test]
fn random_returns_exactly_limit_distinct_nodes_and_uses_them_all_over_seeds() {
    let members = nine_nodes();
    let mut seen = BTreeSet::new();
    for affinity in [AffinityMode::Soft, AffinityMode::Hard] {
        for_many_seeds(&members, &request(StrategyType::Random, affinity, vec![any(5)]), 5, |answer| {
            assert!(answer.iter().all(|n| members.contains(n)));
        });
    }
    for seed in 0..SEEDS {
        let answer = select(&members, &request(StrategyType::Random, AffinityMode::Soft, vec![any(3)]), seed);
        seen.extend(ids(&answer.unwrap_or_default()));
    }
    assert_eq!(seen.len(), 9, "random never picked some nodes: {seen:?}");
}

#[test]
fn random_fails_when_fewer_nodes_match_than_the_limit() {
    let members = nine_nodes();
    for affinity in [AffinityMode::Soft, AffinityMode::Hard] {
        assert_not_enough(select(&members, &request(StrategyType::Random, affinity, vec![any(10)]), 1), 9);
    }
}

#[test]
fn cross_region_is_random_on_the_server() {
    let members = nine_nodes();
    for_many_seeds(&members, &request(StrategyType::CrossRegion, AffinityMode::Hard, vec![any(9)]), 9, |_| {});
    assert_not_enough(select(&members, &request(StrategyType::CrossRegion, AffinityMode::Hard, vec![any(10)]), 1), 9);
}

#[test]
fn custom_picks_randomly_inside_the_filters_zone_and_group() {
    let members = nine_nodes();
    let in_az2 = NodeFilter { az: "az-2".into(), limit: 3, ..Default::default() };
    for_many_seeds(&members, &request(StrategyType::Custom, AffinityMode::Soft, vec![in_az2.clone()]), 3, |answer| {
        assert_eq!(zones(answer), BTreeSet::from(["az-2"]));
    });
    let cell = NodeFilter { az: "az-3".into(), resource_group: "rg-b".into(), limit: 1, ..Default::default() };
    let answer = select(&members, &request(StrategyType::Custom, AffinityMode::Hard, vec![cell]), 4);
    assert_eq!(ids(&answer.unwrap_or_default()), ["az-3/rg-b"]);
    let too_many = NodeFilter { limit: 4, ..in_az2 };
    assert_not_enough(select(&members, &request(StrategyType::Custom, AffinityMode::Soft, vec![too_many]), 1), 3);
}

// ---- SINGLE_AZ_SINGLE_RG ----

#[test]
fn single_az_single_rg_hard_fails_when_no_cell_holds_limit_nodes() {
    let request = request(StrategyType::SingleAzSingleRg, AffinityMode::Hard, vec![any(2)]);
    assert_not_enough(select(&nine_nodes(), &request, 1), 1);
}

#[test]
fn single_az_single_rg_hard_uses_the_only_cell_big_enough() {
    let mut members = nine_nodes();
    members.push(node("az-2/rg-b/2", "az-2", "rg-b"));
    members.push(node("az-2/rg-b/3", "az-2", "rg-b"));
    let request = request(StrategyType::SingleAzSingleRg, AffinityMode::Hard, vec![any(3)]);
    for_many_seeds(&members, &request, 3, |answer| {
        assert_eq!(zones(answer), BTreeSet::from(["az-2"]));
        assert_eq!(groups(answer), BTreeSet::from(["rg-b"]));
    });
}

#[test]
fn single_az_single_rg_hard_spreads_over_every_big_enough_cell() {
    let members: Vec<NodeMeta> = ZONES
        .iter()
        .flat_map(|az| GROUPS.iter().flat_map(move |rg| (0..2).map(move |i| node(&format!("{az}/{rg}/{i}"), az, rg))))
        .collect();
    let request = request(StrategyType::SingleAzSingleRg, AffinityMode::Hard, vec![any(2)]);
    let mut cells = BTreeSet::new();
    for seed in 0..SEEDS {
        let answer = select(&members, &request, seed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((zones(&answer).len(), groups(&answer).len()), (1, 1), "{:?}", ids(&answer));
        cells.insert((answer[0].az.clone(), answer[0].resource_group.clone()));
    }
    assert_eq!(cells.len(), 9, "some cells never chosen: {cells:?}");
}

#[test]
fn single_az_single_rg_soft_stays_in_one_zone_when_cells_are_too_small() {
    let request = request(StrategyType::SingleAzSingleRg, AffinityMode::Soft, vec![any(3)]);
    for_many_seeds(&nine_nodes(), &request, 3, |answer| {
        assert_eq!(zones(answer).len(), 1, "{:?}", ids(answer));
    });
}

// ---- SINGLE_AZ_MULTI_RG ----

#[test]
fn single_az_multi_rg_hard_uses_one_zone_and_distinct_groups() {
    let request = request(StrategyType::SingleAzMultiRg, AffinityMode::Hard, vec![any(3)]);
    for_many_seeds(&nine_nodes(), &request, 3, |answer| {
        assert_eq!(zones(answer).len(), 1, "{:?}", ids(answer));
        assert_eq!(groups(answer).len(), 3, "{:?}", ids(answer));
    });
}

#[test]
fn single_az_multi_rg_hard_fails_beyond_the_groups_of_one_zone() {
    let request = request(StrategyType::SingleAzMultiRg, AffinityMode::Hard, vec![any(4)]);
    assert_not_enough(select(&nine_nodes(), &request, 1), 3);
}

#[test]
fn single_az_multi_rg_hard_picks_the_zone_that_has_enough_groups() {
    // Only az-3 keeps all three groups.
    let members: Vec<NodeMeta> =
        nine_nodes().into_iter().filter(|n| n.az == "az-3" || n.resource_group != "rg-c").collect();
    let request = request(StrategyType::SingleAzMultiRg, AffinityMode::Hard, vec![any(3)]);
    for_many_seeds(&members, &request, 3, |answer| assert_eq!(zones(answer), BTreeSet::from(["az-3"])));
}

#[test]
fn single_az_multi_rg_soft_fills_one_zone_then_tops_up() {
    let request = request(StrategyType::SingleAzMultiRg, AffinityMode::Soft, vec![any(4)]);
    for_many_seeds(&nine_nodes(), &request, 4, |answer| {
        let first_three = &answer[..3];
        assert_eq!(zones(first_three).len(), 1, "{:?}", ids(answer));
        assert_eq!(groups(first_three).len(), 3, "{:?}", ids(answer));
        assert_eq!(zones(answer).len(), 2, "{:?}", ids(answer));
    });
}

// ---- MULTI_AZ_SINGLE_RG ----

#[test]
fn multi_az_single_rg_hard_uses_distinct_zones_in_one_group() {
    let request = request(StrategyType::MultiAzSingleRg, AffinityMode::Hard, vec![any(3)]);
    for_many_seeds(&nine_nodes(), &request, 3, |answer| {
        assert_eq!(groups(answer).len(), 1, "{:?}", ids(answer));
        assert_eq!(zones(answer).len(), 3, "{:?}", ids(answer));
    });
}

#[test]
fn multi_az_single_rg_hard_fails_when_one_zone_is_empty() {
    let members: Vec<NodeMeta> = nine_nodes().into_iter().filter(|n| n.az != "az-3").collect();
    let request = request(StrategyType::MultiAzSingleRg, AffinityMode::Hard, vec![any(3)]);
    assert_not_enough(select(&members, &request, 1), 2);
}

#[test]
fn multi_az_single_rg_hard_fails_with_limit_above_the_zone_count() {
    let request = request(StrategyType::MultiAzSingleRg, AffinityMode::Hard, vec![any(4)]);
    assert_not_enough(select(&nine_nodes(), &request, 1), 3);
}

#[test]
fn multi_az_single_rg_soft_tops_up_an_empty_zone_from_the_same_group() {
    let mut members: Vec<NodeMeta> = nine_nodes().into_iter().filter(|n| n.az != "az-3").collect();
    members.push(node("az-1/rg-a/2", "az-1", "rg-a"));
    let request = request(StrategyType::MultiAzSingleRg, AffinityMode::Soft, vec![any(3)]);
    for_many_seeds(&members, &request, 3, |answer| {
        assert_eq!(zones(answer).len(), 2, "{:?}", ids(answer));
        // rg-a is the only group with a third node, and the top-up prefers the group already used.
        assert_eq!(groups(answer), BTreeSet::from(["rg-a"]), "{:?}", ids(answer));
    });
}

// ---- MULTI_AZ_MULTI_RG ----

#[test]
fn multi_az_multi_rg_hard_uses_distinct_zones_and_distinct_groups() {
    let request = request(StrategyType::MultiAzMultiRg, AffinityMode::Hard, vec![any(3)]);
    for_many_seeds(&nine_nodes(), &request, 3, |answer| {
        assert_eq!(zones(answer).len(), 3, "{:?}", ids(answer));
        assert_eq!(groups(answer).len(), 3, "{:?}", ids(answer));
    });
}

#[test]
fn multi_az_multi_rg_hard_finds_the_only_placement_a_greedy_pick_would_miss() {
    // Taking az-1/rg-a first leaves nothing; the only answer is {az-1/rg-b, az-2/rg-a}.
    let members =
        vec![node("az-1/rg-a", "az-1", "rg-a"), node("az-1/rg-b", "az-1", "rg-b"), node("az-2/rg-a", "az-2", "rg-a")];
    let request = request(StrategyType::MultiAzMultiRg, AffinityMode::Hard, vec![any(2)]);
    for_many_seeds(&members, &request, 2, |answer| {
        let got: BTreeSet<String> = ids(answer).into_iter().collect();
        assert_eq!(got, BTreeSet::from(["az-1/rg-b".to_owned(), "az-2/rg-a".to_owned()]));
    });
}

#[test]
fn multi_az_multi_rg_counts_placements_by_matching_not_by_distinct_values() {
    // Three zones and three groups, but az-2 and az-3 only have rg-a: at most two nodes can have
    // distinct zones and distinct groups.
    let members = vec![
        node("az-1/rg-a", "az-1", "rg-a"),
        node("az-1/rg-b", "az-1", "rg-b"),
        node("az-1/rg-c", "az-1", "rg-c"),
        node("az-2/rg-a", "az-2", "rg-a"),
        node("az-3/rg-a", "az-3", "rg-a"),
    ];
    assert_not_enough(select(&members, &request(StrategyType::MultiAzMultiRg, AffinityMode::Hard, vec![any(3)]), 1), 2);
    let soft = request(StrategyType::MultiAzMultiRg, AffinityMode::Soft, vec![any(3)]);
    for_many_seeds(&members, &soft, 3, |answer| {
        assert_eq!(zones(&answer[..2]).len(), 2, "{:?}", ids(answer));
        assert_eq!(groups(&answer[..2]).len(), 2, "{:?}", ids(answer));
        // The top-up prefers the zone not used yet.
        assert_eq!(zones(answer).len(), 3, "{:?}", ids(answer));
    });
}

#[test]
fn multi_az_multi_rg_hard_fails_with_limit_above_the_zone_count() {
    let request = request(StrategyType::MultiAzMultiRg, AffinityMode::Hard, vec![any(4)]);
    assert_not_enough(select(&nine_nodes(), &request, 1), 3);
}

#[test]
fn multi_az_multi_rg_soft_covers_every_zone_and_group_before_topping_up() {
    let request = request(StrategyType::MultiAzMultiRg, AffinityMode::Soft, vec![any(4)]);
    for_many_seeds(&nine_nodes(), &request, 4, |answer| {
        assert_eq!(zones(&answer[..3]).len(), 3, "{:?}", ids(answer));
        assert_eq!(groups(&answer[..3]).len(), 3, "{:?}", ids(answer));
    });
}

#[test]
fn soft_fails_only_when_fewer_nodes_match_than_the_limit() {
    for strategy in [
        StrategyType::SingleAzSingleRg,
        StrategyType::SingleAzMultiRg,
        StrategyType::MultiAzSingleRg,
        StrategyType::MultiAzMultiRg,
        StrategyType::RandomGroup,
    ] {
        for_many_seeds(&nine_nodes(), &request(strategy, AffinityMode::Soft, vec![any(9)]), 9, |_| {});
        assert_not_enough(select(&nine_nodes(), &request(strategy, AffinityMode::Soft, vec![any(10)]), 1), 9);
    }
}

// ---- RANDOM_GROUP ----

#[test]
fn random_group_returns_consecutive_nodes_by_node_id() {
    let members: Vec<NodeMeta> = (0..9).rev().map(|i| node(&format!("n{i}"), ZONES[i % 3], "rg-a")).collect();
    let request = request(StrategyType::RandomGroup, AffinityMode::Hard, vec![any(3)]);
    let allowed = [["n0", "n1", "n2"], ["n3", "n4", "n5"], ["n6", "n7", "n8"]];
    let mut used = BTreeSet::new();
    for_many_seeds(&members, &request, 3, |answer| {
        let got = ids(answer);
        assert!(allowed.iter().any(|group| group.as_slice() == got.as_slice()), "not a group: {got:?}");
    });
    for seed in 0..SEEDS {
        used.insert(ids(&select(&members, &request, seed).unwrap_or_default()));
    }
    assert_eq!(used.len(), 3, "groups used: {used:?}");
}

#[test]
fn random_group_reaches_every_node_over_many_seeds() {
    // 10 nodes in groups of 3: upstream never picks n9.
    let members: Vec<NodeMeta> = (0..10).map(|i| node(&format!("n{i}"), "az-1", "rg-a")).collect();
    let request = request(StrategyType::RandomGroup, AffinityMode::Soft, vec![any(3)]);
    let mut seen = BTreeSet::new();
    for_many_seeds(&members, &request, 3, |_| {});
    for seed in 0..SEEDS {
        seen.extend(ids(&select(&members, &request, seed).unwrap_or_default()));
    }
    assert_eq!(
        seen.len(),
        10,
        "never chosen: {:?}",
        ids(&members).into_iter().filter(|id| !seen.contains(id)).collect::<Vec<_>>()
    );
}

// ---- candidates ----

#[test]
fn decommissioning_and_decommissioned_nodes_are_never_chosen() {
    let mut members = nine_nodes();
    members[0].tags.insert("status".into(), "decommissioning".into());
    members[4].tags.insert("status".into(), "decommissioned".into());
    members[8].tags.insert("status".into(), "active".into());
    let leaving = [members[0].node_id.clone(), members[4].node_id.clone()];
    for strategy in [StrategyType::Random, StrategyType::RandomGroup, StrategyType::MultiAzMultiRg] {
        for_many_seeds(&members, &request(strategy, AffinityMode::Soft, vec![any(7)]), 7, |answer| {
            assert!(ids(answer).iter().all(|id| !leaving.contains(id)), "{:?}", ids(answer));
        });
    }
    assert_not_enough(select(&members, &request(StrategyType::Random, AffinityMode::Soft, vec![any(8)]), 1), 7);
}

#[test]
fn a_member_listed_twice_is_returned_once_in_its_newest_version() {
    let mut old = node("n1", "az-1", "rg-a");
    old.version = 1;
    let mut new = node("n1", "az-2", "rg-a");
    new.version = 2;
    let members = vec![new.clone(), old.clone(), node("n2", "az-1", "rg-a")];
    let answer = select(&members, &request(StrategyType::Random, AffinityMode::Hard, vec![any(2)]), 3);
    let answer = answer.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.iter().filter(|n| n.node_id == "n1").collect::<Vec<_>>(), [&new]);
    assert_not_enough(select(&members, &request(StrategyType::Random, AffinityMode::Hard, vec![any(3)]), 1), 2);
}

// ---- filters: patterns and tags ----

fn filtered(az: &str, rg: &str, limit: i32) -> SelectNodesRequest {
    let filter = NodeFilter { az: az.into(), resource_group: rg.into(), limit, ..Default::default() };
    request(StrategyType::Random, AffinityMode::Hard, vec![filter])
}

#[test]
fn exact_names_match_whole_values_only() {
    let members = vec![node("a", "az-1", "rg-a"), node("b", "az-10", "rg-a"), node("c", "xaz-1", "rg-a")];
    assert_eq!(ids(&select(&members, &filtered("az-1", "", 1), 1).unwrap_or_default()), ["a"]);
    assert_not_enough(select(&members, &filtered("az-1", "", 2), 1), 1);
    // A dot is not a pattern character: `az.1` is a name, not "az, any char, 1".
    assert_not_enough(select(&members, &filtered("az.1", "", 1), 1), 0);
}

#[test]
fn regex_patterns_are_anchored_at_both_ends() {
    let members = vec![
        node("a", "az-1", "rg-a"),
        node("b", "az-2", "rg-b"),
        node("c", "az-10", "rg-a"),
        node("d", "xaz-1", "rg-b"),
    ];
    let got = |az: &str, rg: &str, limit| {
        let answer = select(&members, &filtered(az, rg, limit), 1).unwrap_or_else(|e| panic!("{az:?} {rg:?}: {e}"));
        ids(&answer).into_iter().collect::<BTreeSet<_>>()
    };
    assert_eq!(got("az-[12]", "", 2), BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    assert_not_enough(select(&members, &filtered("az-[12]", "", 3), 1), 2);
    assert_eq!(got("az-1.*", "", 2), BTreeSet::from(["a".to_owned(), "c".to_owned()]));
    assert_eq!(got("az-(1|10)", "rg-a", 2), BTreeSet::from(["a".to_owned(), "c".to_owned()]));
    assert_eq!(got("", "rg-b|rg-c", 2), BTreeSet::from(["b".to_owned(), "d".to_owned()]));
}

#[test]
fn an_invalid_pattern_is_rejected_naming_it() {
    let members = nine_nodes();
    let request = SelectNodesRequest {
        filters: vec![any(1), NodeFilter { resource_group: "rg-(a".into(), limit: 1, ..Default::default() }],
        ..Default::default()
    };
    match select(&members, &request, 1) {
        Err(error @ SelectError::InvalidPattern { index: 1, field: "resource_group", .. }) => {
            assert!(error.to_string().contains("rg-(a"), "{error}");
            assert!(!error.retriable());
        }
        other => panic!("expected InvalidPattern, got {other:?}"),
    }
}

#[test]
fn every_filter_tag_must_match_exactly() {
    let mut members = nine_nodes();
    for (i, member) in members.iter_mut().enumerate() {
        member.tags.insert("disk".into(), if i % 3 == 0 { "ssd" } else { "hdd" }.into());
        member.tags.insert("tier".into(), if i < 6 { "hot" } else { "cold" }.into());
    }
    let tags = BTreeMap::from([("disk".to_owned(), "ssd".to_owned()), ("tier".to_owned(), "hot".to_owned())]);
    let filter = NodeFilter { tags: tags.clone(), limit: 2, ..Default::default() };
    let answer = select(&members, &request(StrategyType::Random, AffinityMode::Hard, vec![filter]), 1);
    let got: BTreeSet<String> = ids(&answer.unwrap_or_default()).into_iter().collect();
    assert_eq!(got, BTreeSet::from(["az-1/rg-a".to_owned(), "az-2/rg-a".to_owned()]));
    let filter = NodeFilter { tags, limit: 3, ..Default::default() };
    assert_not_enough(select(&members, &request(StrategyType::Random, AffinityMode::Hard, vec![filter]), 1), 2);
    let missing = NodeFilter { tags: BTreeMap::from([("disk".into(), "SSD".into())]), limit: 1, ..Default::default() };
    assert_not_enough(select(&members, &request(StrategyType::Random, AffinityMode::Hard, vec![missing]), 1), 0);
}

// ---- several filters ----

#[test]
fn filters_never_share_a_node() {
    let members = nine_nodes();
    let in_az1 = NodeFilter { az: "az-1".into(), limit: 2, ..Default::default() };
    for affinity in [AffinityMode::Soft, AffinityMode::Hard] {
        for strategy in [StrategyType::Random, StrategyType::RandomGroup, StrategyType::SingleAzMultiRg] {
            // Filters 0 and 2 both want az-1; filter 1 keeps out of it.
            let others = NodeFilter { az: "az-[23]".into(), limit: 2, ..Default::default() };
            let last_of_az1 = NodeFilter { az: "az-1".into(), limit: 1, ..Default::default() };
            let request = request(strategy, affinity, vec![in_az1.clone(), others, last_of_az1]);
            for_many_seeds(&members, &request, 5, |answer| {
                assert_eq!(zones(&answer[..2]), BTreeSet::from(["az-1"]));
                assert!(!zones(&answer[2..4]).contains("az-1"));
                assert_eq!(answer[4].az, "az-1");
            });
        }
        for strategy in [StrategyType::Random, StrategyType::RandomGroup] {
            // The second filter overlaps the first entirely and still gets the other seven nodes.
            let request = request(strategy, affinity, vec![in_az1.clone(), any(7)]);
            for_many_seeds(&members, &request, 9, |answer| assert_eq!(zones(&answer[..2]), BTreeSet::from(["az-1"])));
        }
    }
}

#[test]
fn a_filter_short_of_nodes_fails_the_call_in_both_affinities() {
    let members = nine_nodes();
    for affinity in [AffinityMode::Soft, AffinityMode::Hard] {
        // The first filter takes all of az-1, so the second cannot get one.
        let filters = vec![
            NodeFilter { az: "az-1".into(), limit: 3, ..Default::default() },
            NodeFilter { az: "az-1".into(), limit: 1, ..Default::default() },
        ];
        match select(&members, &request(StrategyType::Random, affinity, filters), 1) {
            Err(SelectError::NotEnoughNodes { index: 1, matching: 0, .. }) => {}
            other => panic!("{affinity:?}: expected NotEnoughNodes for filter 1, got {other:?}"),
        }
    }
}

// ---- load-aware weighting ----

fn loaded(id: &str, load: f64, updated_at: i64) -> NodeMeta {
    NodeMeta { load_factor: load, load_updated_at: updated_at, ..node(id, "az-1", "rg-a") }
}

/// How often each node id is the single pick over 10k draws from one seeded RNG.
fn pick_counts(members: &[NodeMeta], policy: &LoadPolicy) -> BTreeMap<String, usize> {
    let mut rng = StdRng::seed_from_u64(42);
    let request = request(StrategyType::Random, AffinityMode::Soft, vec![any(1)]);
    let mut counts = BTreeMap::new();
    for _ in 0..10_000 {
        let answer = select_nodes(members, &request, policy, NOW_MS, &mut rng).unwrap_or_else(|e| panic!("{e}"));
        *counts.entry(answer[0].node_id.clone()).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &BTreeMap<String, usize>, id: &str) -> usize {
    counts.get(id).copied().unwrap_or(0)
}

#[test]
fn a_lightly_loaded_node_is_chosen_far_more_often_than_a_busy_one() {
    let fresh = NOW_MS - 1_000;
    let members = vec![loaded("busy", 0.9, fresh), loaded("idle", 0.1, fresh), loaded("half", 0.5, fresh)];
    let counts = pick_counts(&members, &LoadPolicy::default());
    // Weights 0.1 : 0.9 : 0.5, so about 667 : 6000 : 3333.
    assert!(count(&counts, "idle") > 5 * count(&counts, "busy"), "{counts:?}");
    assert!((5_600..6_400).contains(&count(&counts, "idle")), "{counts:?}");
    assert!((400..950).contains(&count(&counts, "busy")), "{counts:?}");
}

#[test]
fn stale_and_absent_loads_count_as_half() {
    let members = vec![
        loaded("fresh-idle", 0.0, NOW_MS - 1_000),
        loaded("stale-busy", 0.99, NOW_MS - 30_001),
        loaded("unknown", 0.99, 0),
    ];
    let counts = pick_counts(&members, &LoadPolicy::default());
    // Weights 1 : 0.5 : 0.5, so about 5000 : 2500 : 2500 (a fresh 0.99 would weigh 0.01).
    assert!((4_600..5_400).contains(&count(&counts, "fresh-idle")), "{counts:?}");
    assert!((2_200..2_800).contains(&count(&counts, "stale-busy")), "{counts:?}");
    assert!((2_200..2_800).contains(&count(&counts, "unknown")), "{counts:?}");
}

#[test]
fn without_any_fresh_load_or_with_the_policy_off_the_choice_is_uniform() {
    let stale = NOW_MS - 60_000;
    let all_stale = vec![loaded("a", 0.9, stale), loaded("b", 0.1, stale), loaded("c", 0.5, 0)];
    let fresh = NOW_MS;
    let all_fresh = vec![loaded("a", 0.9, fresh), loaded("b", 0.1, fresh), loaded("c", 0.5, fresh)];
    let off = LoadPolicy { enabled: false, ..LoadPolicy::default() };
    for (members, policy) in [(&all_stale, LoadPolicy::default()), (&all_fresh, off)] {
        let counts = pick_counts(members, &policy);
        for id in ["a", "b", "c"] {
            assert!((3_000..3_700).contains(&count(&counts, id)), "{counts:?}");
        }
    }
}

#[test]
fn load_weighting_also_steers_which_zone_a_strategy_uses() {
    let fresh = NOW_MS;
    let members: Vec<NodeMeta> = nine_nodes()
        .into_iter()
        .map(|n| NodeMeta { load_factor: if n.az == "az-1" { 0.95 } else { 0.05 }, load_updated_at: fresh, ..n })
        .collect();
    let request = request(StrategyType::SingleAzMultiRg, AffinityMode::Hard, vec![any(3)]);
    let in_az1 = (0..1_000).filter(|&seed| select(&members, &request, seed).is_ok_and(|a| a[0].az == "az-1")).count();
    // az-1 weighs 0.05 against 0.95 for each other zone: about 26 in 1000.
    assert!(in_az1 < 80, "busy zone chosen {in_az1} times in 1000");
}

// ---- determinism ----

#[test]
fn same_seed_gives_same_answer_whatever_the_member_order() {
    let members = nine_nodes();
    let mut reversed = members.clone();
    reversed.reverse();
    for strategy in
        [StrategyType::Random, StrategyType::MultiAzMultiRg, StrategyType::RandomGroup, StrategyType::SingleAzMultiRg]
    {
        let request = request(strategy, AffinityMode::Soft, vec![any(4)]);
        let mut answers = BTreeSet::new();
        for seed in 0..20 {
            let first = select(&members, &request, seed).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(first, select(&members, &request, seed).unwrap_or_default(), "{strategy:?} seed {seed}");
            assert_eq!(first, select(&reversed, &request, seed).unwrap_or_default(), "{strategy:?} seed {seed}");
            answers.insert(ids(&first));
        }
        assert!(answers.len() > 1, "{strategy:?} ignores the seed");
    }
}

// ---- request errors ----

#[test]
fn a_request_without_filters_is_code_4000_and_not_retriable() {
    let error = select(&nine_nodes(), &request(StrategyType::Random, AffinityMode::Soft, vec![]), 1);
    match error {
        Err(error @ SelectError::NoFilter) => assert_eq!((error.code(), error.retriable()), (4000, false)),
        other => panic!("expected NoFilter, got {other:?}"),
    }
}

#[test]
fn not_enough_nodes_is_code_4002_retriable_and_names_the_filter() {
    let filter = NodeFilter { az: "az-9".into(), limit: 3, ..Default::default() };
    match select(&nine_nodes(), &request(StrategyType::MultiAzSingleRg, AffinityMode::Hard, vec![filter]), 1) {
        Err(error @ SelectError::NotEnoughNodes { .. }) => {
            assert_eq!((error.code(), error.retriable()), (4002, true));
            let text = error.to_string();
            assert!(
                text.contains("MULTI_AZ_SINGLE_RG") && text.contains("\"az-9\"") && text.contains("HARD"),
                "{text}"
            );
        }
        other => panic!("expected NotEnoughNodes, got {other:?}"),
    }
}

#[test]
fn a_limit_below_one_is_an_invalid_filter() {
    for limit in [0, -3] {
        let request = request(StrategyType::Random, AffinityMode::Soft, vec![any(3), any(limit)]);
        match select(&nine_nodes(), &request, 1) {
            Err(error @ SelectError::InvalidFilter { index: 1, .. }) => assert!(!error.retriable()),
            other => panic!("limit {limit}: expected InvalidFilter, got {other:?}"),
        }
    }
}

#[test]
fn unknown_strategy_or_affinity_values_are_rejected() {
    let unknown_strategy = SelectNodesRequest { strategy: 42, filters: vec![any(1)], ..Default::default() };
    assert_eq!(select(&nine_nodes(), &unknown_strategy, 1), Err(SelectError::UnknownStrategy(42)));
    let unknown_affinity = SelectNodesRequest { affinity_mode: 7, filters: vec![any(1)], ..Default::default() };
    assert_eq!(select(&nine_nodes(), &unknown_affinity, 1), Err(SelectError::UnknownAffinityMode(7)));
}
