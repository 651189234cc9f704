//! Checks the CRD's CEL rules cannot express. `validate` failures mean ConfigValid=False (the
//! controller must not touch workloads); `check_topology` findings mean TopologyValid=False (the
//! cluster still runs, it can be grown into a valid shape).

use std::collections::{BTreeMap, BTreeSet};

use woodpecker_crds::{AffinityMode, DEFAULT_POOL_NAME, WoodpeckerCluster, WoodpeckerClusterSpec};

use super::server_config::{credential_paths_in, parse_user_yaml};

/// One failed check, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted path of the offending field, relative to `spec` (or `metadata.name`).
    pub field: String,
    /// What is wrong, for humans.
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.starts_with("metadata.") {
            write!(f, "{}: {}", self.field, self.message)
        } else {
            write!(f, "spec.{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ValidationError {}

impl ValidationError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// One topology shortfall (reported as TopologyValid=False; not fatal).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pool {pool}: {message}")]
pub struct TopologyIssue {
    /// Pool concerned.
    pub pool: String,
    /// What is missing.
    pub message: String,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// Validate a whole cluster object: its name plus [`validate`] on the spec.
pub fn validate_cluster(cluster: &WoodpeckerCluster) -> Result<(), Vec<ValidationError>> {
    let mut errors = match validate(&cluster.spec) {
        Ok(()) => Vec::new(),
        Err(e) => e,
    };
    if let Some(name) = &cluster.metadata.name
        && name.len() > 40
    {
        errors.push(ValidationError::new(
            "metadata.name",
            "the cluster name must be at most 40 characters so generated names stay readable",
        ));
    }
    if let Some(name) = &cluster.metadata.name
        && !(is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()))
    {
        errors.push(ValidationError::new(
            "metadata.name",
            "the cluster name must be a DNS-1035 label (start with a letter) because Services are named after it",
        ));
    }
    if let Some(name) = &cluster.metadata.name {
        errors.extend(service_name_collisions(name, &cluster.spec));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Two rendered Services with one name (a pool named `admin`, or `x-hs` next to `x`) would be
/// applied over each other on every pass.
fn service_name_collisions(cluster: &str, spec: &WoodpeckerClusterSpec) -> Vec<ValidationError> {
    let names = super::names::Names::new(cluster);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    seen.insert(names.admin_service(), "the admin Service".to_string());
    let mut errors = Vec::new();
    for (i, pool) in spec.buffer_pools.iter().enumerate().filter(|(_, p)| !p.node_groups.is_empty()) {
        for (svc, what) in [
            (names.headless_service(&pool.name), format!("the headless Service of pool {}", pool.name)),
            (names.seed_service(&pool.name), format!("the seed Service of pool {}", pool.name)),
        ] {
            if let Some(other) = seen.get(&svc) {
                errors.push(ValidationError::new(
                    format!("bufferPools[{i}].name"),
                    format!("{what} would be named {svc}, like {other}; rename the pool"),
                ));
            } else {
                seen.insert(svc, what);
            }
        }
    }
    errors
}

/// Checks CEL cannot express (or that must also hold when the API server did not run the CEL rules).
pub fn validate(spec: &WoodpeckerClusterSpec) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    let ports =
        [("servicePort", spec.service_port), ("gossipPort", spec.gossip_port), ("metricsPort", spec.metrics_port)];
    for (i, (a, pa)) in ports.iter().enumerate() {
        if !(1..=65535).contains(pa) {
            errors.push(ValidationError::new(*a, format!("port {pa} is outside 1-65535")));
        }
        for (b, pb) in &ports[i + 1..] {
            if pa == pb {
                errors.push(ValidationError::new(*b, format!("port {pb} is also used as {a}")));
            }
        }
    }
    let es = spec.quorum.ensemble_size;
    if es != 3 && es != 5 {
        errors.push(ValidationError::new("quorum.ensembleSize", format!("{es} is not 3 or 5")));
    }
    let budget = es - (es / 2 + 1);
    if spec.rollout_policy.max_unavailable < 1 || spec.rollout_policy.max_unavailable > budget.max(1) {
        errors.push(ValidationError::new(
            "rolloutPolicy.maxUnavailable",
            format!(
                "{} is outside 1..={} (ensembleSize - ackQuorum)",
                spec.rollout_policy.max_unavailable,
                budget.max(1)
            ),
        ));
    }

    let mut pool_names = BTreeSet::new();
    let mut local_groups = 0;
    for (pi, pool) in spec.buffer_pools.iter().enumerate() {
        if !is_dns_label(&pool.name) {
            errors.push(ValidationError::new(format!("bufferPools[{pi}].name"), "must be a DNS-1123 label"));
        }
        if !pool_names.insert(pool.name.as_str()) {
            errors
                .push(ValidationError::new(format!("bufferPools[{pi}].name"), format!("duplicate pool {}", pool.name)));
        }
        if pool.node_groups.is_empty() && pool.external_seeds.is_empty() {
            errors.push(ValidationError::new(format!("bufferPools[{pi}]"), "needs nodeGroups or externalSeeds"));
        }
        let mut group_names = BTreeSet::new();
        for (gi, g) in pool.node_groups.iter().enumerate() {
            local_groups += 1;
            let at = format!("bufferPools[{pi}].nodeGroups[{gi}]");
            if !is_dns_label(&g.name) {
                errors.push(ValidationError::new(format!("{at}.name"), "must be a DNS-1123 label"));
            }
            if !group_names.insert(g.name.as_str()) {
                errors.push(ValidationError::new(format!("{at}.name"), format!("duplicate node group {}", g.name)));
            }
            if g.replicas < 0 {
                errors.push(ValidationError::new(format!("{at}.replicas"), "must not be negative"));
            }
            for (field, value) in [
                ("zone", g.zone.as_deref()),
                ("region", g.region.as_deref()),
                ("resourceGroup", g.resource_group.as_deref()),
            ] {
                if let Some(v) = value
                    && !is_label_value(v)
                {
                    errors.push(ValidationError::new(
                        format!("{at}.{field}"),
                        format!("{v:?} cannot be used as a label value (63 chars of [A-Za-z0-9._-])"),
                    ));
                }
            }
        }
    }
    if spec.buffer_pools.is_empty() {
        pool_names.insert(DEFAULT_POOL_NAME);
    }
    if !spec.buffer_pools.is_empty() && local_groups == 0 {
        errors.push(ValidationError::new("bufferPools", "at least one pool needs local nodeGroups"));
    }
    if let Some(region) = &spec.region
        && !is_label_value(region)
    {
        errors.push(ValidationError::new("region", format!("{region:?} cannot be used as a label value")));
    }
    if matches!(spec.quorum.strategy, woodpecker_crds::QuorumStrategy::Custom) {
        if spec.quorum.custom_placement.len() != es as usize {
            errors.push(ValidationError::new(
                "quorum.customPlacement",
                format!("strategy custom needs exactly {es} placements, found {}", spec.quorum.custom_placement.len()),
            ));
        }
        for (i, p) in spec.quorum.custom_placement.iter().enumerate() {
            if !pool_names.contains(p.region.as_str()) {
                errors.push(ValidationError::new(
                    format!("quorum.customPlacement[{i}].region"),
                    format!("names unknown buffer pool {}", p.region),
                ));
            }
        }
    }
    if matches!(spec.quorum.strategy, woodpecker_crds::QuorumStrategy::CrossRegion) && spec.buffer_pools.len() < 2 {
        errors.push(ValidationError::new("quorum.strategy", "cross-region needs at least 2 buffer pools"));
    }
    if let Some(etcd) = &spec.etcd
        && etcd.endpoints.is_empty()
    {
        errors.push(ValidationError::new("etcd.endpoints", "must list at least one endpoint"));
    }
    if let Some(creds) = spec.object_storage.as_ref().and_then(|o| o.credentials.as_ref()) {
        let set = [creds.secret_ref.is_some(), creds.iam.is_some(), creds.gcp_credentials_secret_ref.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            errors.push(ValidationError::new(
                "objectStorage.credentials",
                "set exactly one of secretRef, iam, gcpCredentialsSecretRef",
            ));
        }
    }
    if let Some(raw) = spec.config.as_ref().map(|c| c.raw_overrides.as_str()) {
        match parse_user_yaml("config.rawOverrides", raw) {
            Ok(tree) => {
                for path in credential_paths_in(&tree) {
                    errors.push(ValidationError::new(
                        "config.rawOverrides",
                        format!("{path} is a credential; put it in a Secret (objectStorage.credentials.secretRef)"),
                    ));
                }
            }
            Err(e) => errors.push(ValidationError::new("config.rawOverrides", e.to_string())),
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Topology shortfalls: pools smaller than the ensemble, and multi-az strategies without enough
/// distinct pinned zones (hard affinity) or with unpinned groups.
pub fn check_topology(spec: &WoodpeckerClusterSpec) -> Vec<TopologyIssue> {
    let es = spec.quorum.ensemble_size;
    let mut issues = Vec::new();
    let implicit;
    let pools = if spec.buffer_pools.is_empty() {
        implicit = vec![(
            DEFAULT_POOL_NAME.to_string(),
            vec![(None::<String>, spec.replicas.unwrap_or(woodpecker_crds::DEFAULT_REPLICAS))],
        )];
        implicit
    } else {
        spec.buffer_pools
            .iter()
            .filter(|p| !p.node_groups.is_empty())
            .map(|p| (p.name.clone(), p.node_groups.iter().map(|g| (g.zone.clone(), g.replicas)).collect()))
            .collect()
    };
    for (pool, groups) in pools {
        let total: i32 = groups.iter().map(|(_, r)| *r).sum();
        if total < es {
            issues.push(TopologyIssue {
                pool: pool.clone(),
                message: format!("{total} replicas is fewer than ensembleSize {es}; new segments cannot be placed"),
            });
        }
        if spec.quorum.strategy.is_multi_az() {
            let mut zones: BTreeMap<&str, i32> = BTreeMap::new();
            let mut unpinned = 0;
            for (zone, replicas) in &groups {
                match zone {
                    Some(z) => *zones.entry(z.as_str()).or_default() += replicas,
                    None => unpinned += 1,
                }
            }
            let populated = zones.values().filter(|r| **r > 0).count();
            if unpinned > 0 {
                issues.push(TopologyIssue {
                    pool: pool.clone(),
                    message: format!(
                        "strategy {} needs every node group pinned to a zone; {unpinned} group(s) have none",
                        spec.quorum.strategy.as_str()
                    ),
                });
            }
            if spec.quorum.affinity_mode == AffinityMode::Hard && (populated as i32) < es {
                issues.push(TopologyIssue {
                    pool: pool.clone(),
                    message: format!(
                        "strategy {} with hard affinity needs at least {es} zones with replicas, found {populated}",
                        spec.quorum.strategy.as_str()
                    ),
                });
            }
        }
    }
    issues
}
