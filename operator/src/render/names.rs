//! Object names and labels. Every generated name is a DNS label of at most 63 characters; a name
//! that would be longer is cut and suffixed with a hash of the full name, so it stays unique and
//! deterministic.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Longest DNS label (Service, pod host name, label value).
pub const MAX_NAME: usize = 63;
/// Longest StatefulSet name: its pods' `controller-revision-hash` label is `<sts>-<10 chars>`.
pub const MAX_STATEFULSET_NAME: usize = 52;

/// `app.kubernetes.io/name` value.
pub const APP_NAME: &str = "woodpecker";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "woodpecker-operator";
/// Key of a pool's gossip seeds in the [`Names::gossip_seeds`] ConfigMap.
pub fn gossip_seeds_key(pool: &str) -> String {
    format!("seeds.{}", label_value(pool))
}

/// Label key: the WoodpeckerCluster name.
pub const LABEL_CLUSTER: &str = "woodpecker.zilliz.io/cluster";
/// Label key: the buffer pool.
pub const LABEL_POOL: &str = "woodpecker.zilliz.io/pool";
/// Label key: the node group.
pub const LABEL_NODE_GROUP: &str = "woodpecker.zilliz.io/node-group";
/// Label key: the zone the server advertises.
pub const LABEL_ZONE: &str = "woodpecker.zilliz.io/zone";
/// Label key: the region the server advertises.
pub const LABEL_REGION: &str = "woodpecker.zilliz.io/region";
/// Label key: the resource group the server advertises.
pub const LABEL_RESOURCE_GROUP: &str = "woodpecker.zilliz.io/resource-group";
/// Well-known zone label, set on pods and used for node affinity.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// Pod annotation: hash of the server config, the credentials overlay and the mounted Secrets.
pub const ANNOTATION_CONFIG_HASH: &str = "woodpecker.zilliz.io/config-hash";
/// Pod annotation: the spec's `rolloutPolicy.restartToken` the pod was created with.
pub const ANNOTATION_RESTART_TOKEN: &str = "woodpecker.zilliz.io/restart-token";
/// Label on every hashed server ConfigMap / overlay Secret, for garbage collection of old ones.
pub const LABEL_CONFIG_KIND: &str = "woodpecker.zilliz.io/config";

/// Hex SHA-256 of `data`, cut to `len` characters.
pub fn short_hash(data: &[u8], len: usize) -> String {
    let digest = hex::encode(Sha256::digest(data));
    digest[..len.min(digest.len())].to_string()
}

/// Hex SHA-256 of `key`, a separator and `data`, cut to `len` characters: a digest only the holder
/// of `key` can compute, so publishing it reveals nothing testable about `data`.
pub fn keyed_hash(key: &[u8], data: &[u8], len: usize) -> String {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(data);
    let digest = hex::encode(h.finalize());
    digest[..len.min(digest.len())].to_string()
}

/// `base` if it fits in `max` characters, else a prefix of it plus `-<hash8 of base>`.
pub fn fit_name(base: &str, max: usize) -> String {
    if base.len() <= max {
        return base.to_string();
    }
    let hash = short_hash(base.as_bytes(), 8);
    let keep = max.saturating_sub(hash.len() + 1);
    let prefix: String = base.chars().take(keep).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.']))
}

/// Names of everything rendered for one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    cluster: String,
}

impl Names {
    /// Names for the cluster called `cluster`.
    pub fn new(cluster: &str) -> Self {
        Self { cluster: cluster.to_string() }
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// ServiceAccount the pods run as when none is named.
    pub fn service_account(&self) -> String {
        fit_name(&self.cluster, MAX_NAME)
    }

    /// Headless Service of a pool: it gives pods their stable FQDNs.
    pub fn headless_service(&self, pool: &str) -> String {
        fit_name(&format!("{}-{pool}-hs", self.cluster), MAX_NAME)
    }

    /// Seed Service of a pool: the buffer-pool seed clients dial; independent of replicas.
    pub fn seed_service(&self, pool: &str) -> String {
        fit_name(&format!("{}-{pool}", self.cluster), MAX_NAME)
    }

    /// Admin/metrics Service over every pod.
    pub fn admin_service(&self) -> String {
        fit_name(&format!("{}-admin", self.cluster), MAX_NAME)
    }

    /// StatefulSet of a node group.
    pub fn stateful_set(&self, pool: &str, group: &str) -> String {
        fit_name(&format!("{}-{pool}-{group}", self.cluster), MAX_STATEFULSET_NAME)
    }

    /// Pod `ordinal` of a StatefulSet.
    pub fn pod(stateful_set: &str, ordinal: i32) -> String {
        format!("{stateful_set}-{ordinal}")
    }

    /// Immutable server ConfigMap for the config with hash `hash8`.
    pub fn server_config(&self, hash8: &str) -> String {
        fit_name(&format!("{}-server-{hash8}", self.cluster), MAX_NAME)
    }

    /// Immutable credentials overlay Secret with hash `hash8`.
    pub fn credentials_overlay(&self, hash8: &str) -> String {
        fit_name(&format!("{}-server-user-{hash8}", self.cluster), MAX_NAME)
    }

    /// Client bundle ConfigMap.
    pub fn client_bundle(&self) -> String {
        fit_name(&format!("{}-client", self.cluster), MAX_NAME)
    }

    /// Secret holding the key of the digests that stamp referenced objects' contents.
    pub fn stamp_key(&self) -> String {
        fit_name(&format!("{}-stamp-key", self.cluster), MAX_NAME)
    }

    /// ConfigMap of every pool's gossip seeds, read by the server pods through an env var.
    pub fn gossip_seeds(&self) -> String {
        fit_name(&format!("{}-gossip-seeds", self.cluster), MAX_NAME)
    }

    /// PodDisruptionBudget.
    pub fn pdb(&self) -> String {
        fit_name(&self.cluster, MAX_NAME)
    }

    /// PodMonitor.
    pub fn pod_monitor(&self) -> String {
        fit_name(&self.cluster, MAX_NAME)
    }
}

/// A label value made valid: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(raw: &str) -> String {
    let cleaned: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let cut = if cleaned.len() > MAX_NAME { fit_name(&cleaned, MAX_NAME) } else { cleaned };
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// The version part of an image reference (`repo:tag` → `tag`, digest → first 12 hex), for labels.
pub fn image_version(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        let hex = digest.rsplit(':').next().unwrap_or(digest);
        return label_value(&hex.chars().take(12).collect::<String>());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => label_value(tag),
        None => "latest".to_string(),
    }
}

/// Labels on every object of a cluster (`component` says which part).
pub fn common_labels(cluster: &str, component: &str, version: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("app.kubernetes.io/name".to_string(), APP_NAME.to_string());
    l.insert("app.kubernetes.io/instance".to_string(), label_value(cluster));
    l.insert("app.kubernetes.io/component".to_string(), component.to_string());
    l.insert("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string());
    l.insert("app.kubernetes.io/version".to_string(), version.to_string());
    l.insert(LABEL_CLUSTER.to_string(), label_value(cluster));
    l
}

/// Selector over every server pod of a cluster.
pub fn cluster_selector(cluster: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("app.kubernetes.io/name".to_string(), APP_NAME.to_string());
    l.insert("app.kubernetes.io/instance".to_string(), label_value(cluster));
    l.insert(LABEL_CLUSTER.to_string(), label_value(cluster));
    l
}

/// Selector over the server pods of one pool.
pub fn pool_selector(cluster: &str, pool: &str) -> BTreeMap<String, String> {
    let mut l = cluster_selector(cluster);
    l.insert(LABEL_POOL.to_string(), label_value(pool));
    l
}

/// Selector over the pods of one node group (the StatefulSet selector).
pub fn group_selector(cluster: &str, pool: &str, group: &str) -> BTreeMap<String, String> {
    let mut l = pool_selector(cluster, pool);
    l.insert(LABEL_NODE_GROUP.to_string(), label_value(group));
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_names_are_cut_with_a_stable_hash() {
        assert_eq!(fit_name("wal-pool-az-a", 52), "wal-pool-az-a");
        let long = format!("{}-pool-group", "x".repeat(60));
        let a = fit_name(&long, 52);
        assert_eq!(a.len(), 52);
        assert_eq!(a, fit_name(&long, 52));
        assert_ne!(a, fit_name(&format!("{long}2"), 52));
    }

    #[test]
    fn label_values_are_sanitized() {
        assert_eq!(label_value("us-east-1a"), "us-east-1a");
        assert_eq!(label_value("a/b"), "a-b");
        assert_eq!(label_value("-x-"), "x");
        assert!(label_value(&"y".repeat(100)).len() <= 63);
    }

    #[test]
    fn image_versions_come_from_tag_or_digest() {
        assert_eq!(image_version("zilliztech/woodpecker:v0.1.26"), "v0.1.26");
        assert_eq!(image_version("localhost:5000/woodpecker"), "latest");
        assert_eq!(image_version("repo/wp@sha256:0123456789abcdef0123"), "0123456789ab");
    }
}
