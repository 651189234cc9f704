//! `validate` catches what CEL cannot (or what must hold even without the API server's rules);
//! `check_topology` reports shortfalls without rejecting the cluster.

#[path = "render_support.rs"]
mod support;

use woodpecker_crds::{AffinityMode, QuorumStrategy, ServerConfigSpec};
use woodpecker_operator::render::{check_topology, validate, validate_cluster};

fn three_zones() -> woodpecker_crds::WoodpeckerCluster {
    let text = std::fs::read_to_string(support::samples_dir().join("three-zones-multi-az.yaml")).expect("sample");
    support::parse_cluster(&text)
}

fn fields(spec: &woodpecker_crds::WoodpeckerClusterSpec) -> Vec<String> {
    validate(spec).err().unwrap_or_default().into_iter().map(|e| e.field).collect()
}

#[test]
fn every_sample_is_valid_and_topologically_sound() {
    for (stem, cluster) in support::samples() {
        assert_eq!(validate_cluster(&cluster), Ok(()), "{stem}");
        assert_eq!(check_topology(&cluster.spec), vec![], "{stem}");
    }
}

#[test]
fn colliding_ports_and_bad_ensemble_sizes_are_rejected() {
    let mut c = three_zones();
    c.spec.metrics_port = c.spec.service_port;
    c.spec.quorum.ensemble_size = 4;
    let f = fields(&c.spec);
    assert!(f.contains(&"metricsPort".to_string()), "{f:?}");
    assert!(f.contains(&"quorum.ensembleSize".to_string()), "{f:?}");
}

#[test]
fn max_unavailable_above_the_quorum_budget_is_rejected() {
    let mut c = three_zones();
    c.spec.rollout_policy.max_unavailable = 2;
    assert_eq!(fields(&c.spec), vec!["rolloutPolicy.maxUnavailable".to_string()]);
    c.spec.quorum.ensemble_size = 5;
    assert_eq!(validate(&c.spec), Ok(()));
}

#[test]
fn credentials_in_raw_overrides_are_rejected() {
    let mut c = three_zones();
    c.spec.config =
        Some(ServerConfigSpec { log_level: None, raw_overrides: "minio:\n  secretAccessKey: oops\n".to_string() });
    let errors = validate(&c.spec).expect_err("credential in rawOverrides");
    assert!(errors[0].message.contains("minio.secretAccessKey"), "{errors:?}");

    c.spec.config = Some(ServerConfigSpec { log_level: None, raw_overrides: "[not a map".to_string() });
    assert_eq!(fields(&c.spec), vec!["config.rawOverrides".to_string()]);
}

#[test]
fn custom_placements_must_name_known_pools_and_match_the_ensemble() {
    let mut c = three_zones();
    c.spec.quorum.strategy = QuorumStrategy::Custom;
    let f = fields(&c.spec);
    assert_eq!(f, vec!["quorum.customPlacement".to_string()]);
    c.spec.quorum.custom_placement = (0..3)
        .map(|i| woodpecker_crds::CustomPlacement {
            name: format!("r{i}"),
            region: if i == 2 { "nope".to_string() } else { "default-region-pool".to_string() },
            az: String::new(),
            resource_group: String::new(),
        })
        .collect();
    assert_eq!(fields(&c.spec), vec!["quorum.customPlacement[2].region".to_string()]);
}

#[test]
fn cluster_names_must_start_with_a_letter_for_services() {
    let mut c = three_zones();
    c.metadata.name = Some("1wal".to_string());
    let errors = validate_cluster(&c).expect_err("digit first");
    assert_eq!(errors[0].field, "metadata.name");
}

#[test]
fn hard_multi_az_without_enough_zones_is_a_topology_issue_not_an_error() {
    let mut c = three_zones();
    c.spec.buffer_pools[0].node_groups[2].replicas = 0;
    assert_eq!(validate(&c.spec), Ok(()));
    let issues = check_topology(&c.spec);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.contains("at least 3 zones"), "{issues:?}");

    c.spec.quorum.affinity_mode = AffinityMode::Soft;
    assert_eq!(check_topology(&c.spec), vec![]);
}

#[test]
fn pools_smaller_than_the_ensemble_and_unpinned_multi_az_groups_are_reported() {
    let mut c = three_zones();
    for g in &mut c.spec.buffer_pools[0].node_groups {
        g.replicas = 0;
    }
    c.spec.buffer_pools[0].node_groups[0].replicas = 2;
    c.spec.buffer_pools[0].node_groups[0].zone = None;
    let messages: Vec<String> = check_topology(&c.spec).into_iter().map(|i| i.message).collect();
    assert!(messages.iter().any(|m| m.contains("fewer than ensembleSize")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("pinned to a zone")), "{messages:?}");
}

#[test]
fn validation_errors_name_the_full_field_path() {
    let mut c = three_zones();
    c.metadata.name = Some("9".repeat(41));
    c.spec.gossip_port = c.spec.service_port;
    let text: Vec<String> = validate_cluster(&c).expect_err("invalid").iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.starts_with("spec.gossipPort: ")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("metadata.name: ") && t.contains("40 characters")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("metadata.name: ") && t.contains("start with a letter")), "{text:?}");
}

#[test]
fn pools_whose_service_names_collide_are_rejected() {
    // A pool named admin: its seed Service would be the admin Service.
    let mut c = three_zones();
    c.spec.buffer_pools[0].name = "admin".to_string();
    let errors = validate_cluster(&c).expect_err("admin pool");
    assert!(errors.iter().any(|e| e.field == "bufferPools[0].name" && e.message.contains("admin")), "{errors:?}");
    // Pool x-hs next to pool x: x-hs's seed Service is x's headless Service.
    let mut c = three_zones();
    let mut other = c.spec.buffer_pools[0].clone();
    other.name = format!("{}-hs", c.spec.buffer_pools[0].name);
    c.spec.buffer_pools.push(other);
    let errors = validate_cluster(&c).expect_err("x and x-hs");
    assert!(errors.iter().any(|e| e.field == "bufferPools[1].name"), "{errors:?}");
}
